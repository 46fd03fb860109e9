// The worker thread's half of audit. Sessions call WorkerAuditor.record(): the
// record is prepared and formatted here (the CPU cost stays spread over the
// workers) and the finished line goes into a bounded AuditBuffer. Lines leave
// in batches by postMessage — when a batch is full or every flushIntervalMs —
// to the main thread's AuditHub (main-side.ts), the one writer of the sink.
//
// Bounded end to end: the buffer has a record and byte bound, and the worker
// keeps at most maxInFlightRecords posted but not yet acknowledged by the main
// thread (a stuck main thread would otherwise grow its message queue without
// limit). What does not fit is dropped and counted; nothing here waits.
//
// Fail-closed needs the sink's health, which only the main thread knows: it
// broadcasts every change (AuditHealthMessage). Until the first one arrives
// the health is 'unknown', which counts as healthy only in best-effort mode.

import { formatRecord, prepareRecord, type AuditRecord, type ParameterMode } from './record.ts';
import type { AuditMode, AuditorOptions, AuditRecorder } from './auditor.ts';

export type AuditHealth = 'healthy' | 'unhealthy' | 'unknown';

/** Worker → main: a batch of finished lines. */
export interface AuditBatchMessage {
  type: 'audit';
  workerId: number;
  lines: string[];
  /** Records this worker dropped since its previous batch (buffer full). */
  dropped: number;
}

/** Main → worker. */
export type AuditControlMessage =
  /** The sink's health changed (also sent once to every new worker). */
  | { type: 'audit-health'; healthy: boolean }
  /** The main thread has handed this many of the worker's records to the sink. */
  | { type: 'audit-ack'; records: number };

export interface AuditBufferOptions {
  mode: AuditMode;
  maxRecords: number;
  maxBytes: number;
  /** ready turns true at this many queued records. */
  batchRecords: number;
}

/** A bounded list of lines, swapped out whole by drain(). Pure: no timers, no threads. */
export class AuditBuffer {
  private lines: string[] = [];
  private chars = 0;
  private dropped = 0;
  private totalDropped = 0;
  private state: AuditHealth = 'unknown';
  private readonly options: AuditBufferOptions;

  constructor(options: AuditBufferOptions) {
    this.options = options;
  }

  get health(): AuditHealth {
    return this.state;
  }

  setHealth(health: AuditHealth | boolean): void {
    this.state = typeof health === 'boolean' ? (health ? 'healthy' : 'unhealthy') : health;
  }

  get queued(): number {
    return this.lines.length;
  }

  /** Enough for a batch. */
  get ready(): boolean {
    return this.lines.length >= this.options.batchRecords;
  }

  get droppedTotal(): number {
    return this.totalDropped;
  }

  /** Queue a line; false (and counted) when the buffer is full. */
  push(line: string): boolean {
    if (this.lines.length >= this.options.maxRecords || this.chars + line.length > this.options.maxBytes) {
      this.dropped++;
      this.totalDropped++;
      return false;
    }
    this.lines.push(line);
    this.chars += line.length;
    return true;
  }

  /** Count a record lost before it reached the buffer. */
  noteDropped(): void {
    this.dropped++;
    this.totalDropped++;
  }

  /** Everything queued (null when empty); the buffer starts over. */
  drain(): string[] | null {
    if (this.lines.length === 0) return null;
    const out = this.lines;
    this.lines = [];
    this.chars = 0;
    return out;
  }

  /** Drops since the previous call. */
  takeDropped(): number {
    const n = this.dropped;
    this.dropped = 0;
    return n;
  }

  /**
   * best-effort: always. fail-closed: only with a healthy sink and room left
   * (below 90 % of the bounds, so the refused statement's own record and those
   * already in flight still fit).
   */
  canProceed(): boolean {
    if (this.options.mode === 'best-effort') return true;
    return this.state === 'healthy' && this.lines.length < this.options.maxRecords * 0.9 && this.chars < this.options.maxBytes * 0.9;
  }
}

export interface WorkerAuditorOptions extends AuditorOptions {
  workerId: number;
  bufferRecords: number;
  bufferBytes: number;
  batchRecords: number;
  flushIntervalMs: number;
  /** Posted and not yet acknowledged; defaults to bufferRecords. */
  maxInFlightRecords?: number;
}

export class WorkerAuditor implements AuditRecorder {
  readonly enabled = true;
  readonly parameters: ParameterMode;
  readonly maxParameterBytes: number;
  readonly buffer: AuditBuffer;
  private readonly options: WorkerAuditorOptions;
  private readonly post: (msg: AuditBatchMessage) => void;
  private readonly prepare: { maxSqlBytes: number };
  private readonly maxInFlight: number;
  private inFlight = 0;
  private posted = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: WorkerAuditorOptions, post: (msg: AuditBatchMessage) => void, initialHealth: AuditHealth = 'unknown') {
    this.options = options;
    this.post = post;
    this.parameters = options.parameters;
    this.maxParameterBytes = options.maxParameterBytes ?? 256;
    this.prepare = { maxSqlBytes: options.maxSqlBytes };
    this.maxInFlight = options.maxInFlightRecords ?? options.bufferRecords;
    this.buffer = new AuditBuffer({ mode: options.mode, maxRecords: options.bufferRecords, maxBytes: options.bufferBytes, batchRecords: options.batchRecords });
    this.buffer.setHealth(initialHealth);
  }

  canProceed(): boolean {
    return this.buffer.canProceed();
  }

  record(record: AuditRecord): void {
    let line: string;
    try {
      line = formatRecord(prepareRecord(record, this.prepare));
    } catch {
      // A record that cannot be serialised (a bug upstream of here) is a drop, not a crash.
      this.buffer.noteDropped();
      return;
    }
    if (this.buffer.push(line) && this.buffer.ready) this.flush();
  }

  /** Post what is queued if the in-flight bound allows (called on a full batch and by the timer). */
  flush(): void {
    const queued = this.buffer.queued;
    if (queued === 0 || this.inFlight + queued > this.maxInFlight) {
      // Nothing to send, or the main thread is behind: report drops alone so the count is not held back.
      if (queued === 0) {
        const dropped = this.buffer.takeDropped();
        if (dropped > 0) this.post({ type: 'audit', workerId: this.options.workerId, lines: [], dropped });
      }
      return;
    }
    const lines = this.buffer.drain() as string[];
    this.inFlight += lines.length;
    this.posted += lines.length;
    this.post({ type: 'audit', workerId: this.options.workerId, lines, dropped: this.buffer.takeDropped() });
  }

  onMessage(msg: AuditControlMessage): void {
    switch (msg.type) {
      case 'audit-health':
        this.buffer.setHealth(msg.healthy);
        return;
      case 'audit-ack':
        this.inFlight = Math.max(0, this.inFlight - msg.records);
        return;
      default: {
        const unreachable: never = msg;
        void unreachable;
      }
    }
  }

  /** Flush every flushIntervalMs (the timer does not keep the thread alive). */
  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.flush(), this.options.flushIntervalMs);
    this.timer.unref();
  }

  /** Stop the timer and post what is left, ignoring the in-flight bound (the worker is going away). */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const lines = this.buffer.drain() ?? [];
    const dropped = this.buffer.takeDropped();
    if (lines.length > 0 || dropped > 0) {
      this.inFlight += lines.length;
      this.posted += lines.length;
      this.post({ type: 'audit', workerId: this.options.workerId, lines, dropped });
    }
  }

  stats(): { queued: number; inFlight: number; posted: number; dropped: number } {
    return { queued: this.buffer.queued, inFlight: this.inFlight, posted: this.posted, dropped: this.buffer.droppedTotal };
  }
}
