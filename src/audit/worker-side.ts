// The worker thread's half of audit. Sessions call WorkerAuditor.record(): the
// record is prepared and formatted here (the CPU cost stays spread over the
// workers) and the finished line goes into a bounded AuditBuffer. Lines leave
// in batches by postMessage — when a batch is full or every flushIntervalMs —
// to the main thread's AuditHub (main-side.ts), the one writer of the sink.
// A batch is one string, encoded to UTF-8 once here and posted with its
// ArrayBuffer in the transfer list: the main thread gets the bytes without a
// copy and writes them as they are. (Posting string arrays cost the main
// thread a structured clone per line, then a join and an encode per write.)
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
  /** `records` whole lines as UTF-8, each ending in '\n'; its ArrayBuffer is transferred (owned whole). null: drops only. */
  chunk: Uint8Array | null;
  records: number;
  /** Records this worker dropped since its previous batch (buffer full). */
  dropped: number;
}

/** Posts a batch; `transfer` holds the chunk's ArrayBuffer (empty with no chunk). */
export type AuditPost = (msg: AuditBatchMessage, transfer: ArrayBuffer[]) => void;

const encoder = new TextEncoder();

/**
 * The batch as UTF-8 in an ArrayBuffer of its own, so it can be transferred
 * (Buffer.from may hand out a slice of Node's shared pool, which must not be).
 * TextEncoder.encode always returns a fresh buffer of the exact size; measured
 * no slower than Buffer.allocUnsafeSlow + write or Buffer.from for 256-record
 * batches (~95 µs each, the concatenated string's flattening included).
 */
export function encodeBatch(text: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(text);
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

/** One string holds the buffer: stay well under V8's string length limit (2^29 − 24 UTF-16 units), which += would throw at. */
export const MAX_BUFFER_CHARS = 2 ** 28;

/**
 * Bounded lines, kept as one string (concatenation: V8 builds a rope, no copy
 * per line), swapped out whole by drain(). The byte bound counts UTF-16 units
 * (cheap, within 3× of UTF-8), capped at MAX_BUFFER_CHARS. Pure: no timers, no threads.
 */
export class AuditBuffer {
  private text = '';
  private records = 0;
  private chars = 0;
  private dropped = 0;
  private totalDropped = 0;
  private state: AuditHealth = 'unknown';
  private readonly options: AuditBufferOptions;

  constructor(options: AuditBufferOptions) {
    this.options = { ...options, maxBytes: Math.min(options.maxBytes, MAX_BUFFER_CHARS) };
  }

  get health(): AuditHealth {
    return this.state;
  }

  setHealth(health: AuditHealth | boolean): void {
    this.state = typeof health === 'boolean' ? (health ? 'healthy' : 'unhealthy') : health;
  }

  get queued(): number {
    return this.records;
  }

  /** Enough for a batch. */
  get ready(): boolean {
    return this.records >= this.options.batchRecords;
  }

  get droppedTotal(): number {
    return this.totalDropped;
  }

  /** Queue a line; false (and counted) when the buffer is full. */
  push(line: string): boolean {
    if (this.records >= this.options.maxRecords || this.chars + line.length > this.options.maxBytes) {
      this.dropped++;
      this.totalDropped++;
      return false;
    }
    this.text += line;
    this.records++;
    this.chars += line.length;
    return true;
  }

  /** Count a record lost before it reached the buffer. */
  noteDropped(): void {
    this.dropped++;
    this.totalDropped++;
  }

  /** Everything queued, as one string of `queued` lines (null when empty); the buffer starts over. */
  drain(): string | null {
    if (this.records === 0) return null;
    const out = this.text;
    this.text = '';
    this.records = 0;
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
    return this.state === 'healthy' && this.records < this.options.maxRecords * 0.9 && this.chars < this.options.maxBytes * 0.9;
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
  private readonly post: AuditPost;
  private readonly prepare: { maxSqlBytes: number };
  private readonly maxInFlight: number;
  private inFlight = 0;
  private posted = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: WorkerAuditorOptions, post: AuditPost, initialHealth: AuditHealth = 'unknown') {
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
        if (dropped > 0) this.post({ type: 'audit', workerId: this.options.workerId, chunk: null, records: 0, dropped }, []);
      }
      return;
    }
    this.send(this.buffer.drain() as string, queued);
  }

  private send(text: string, records: number): void {
    const chunk = encodeBatch(text);
    this.inFlight += records;
    this.posted += records;
    this.post({ type: 'audit', workerId: this.options.workerId, chunk, records, dropped: this.buffer.takeDropped() }, [chunk.buffer]);
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
    const records = this.buffer.queued;
    const text = this.buffer.drain();
    if (text !== null) this.send(text, records);
    else {
      const dropped = this.buffer.takeDropped();
      if (dropped > 0) this.post({ type: 'audit', workerId: this.options.workerId, chunk: null, records: 0, dropped }, []);
    }
  }

  stats(): { queued: number; inFlight: number; posted: number; dropped: number } {
    return { queued: this.buffer.queued, inFlight: this.inFlight, posted: this.posted, dropped: this.buffer.droppedTotal };
  }
}
