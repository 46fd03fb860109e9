// The worker thread's half of audit. Sessions call WorkerAuditor.record(): the
// record is prepared and formatted here (the CPU cost stays spread over the
// workers) and the finished line goes into a bounded AuditBuffer. Lines leave
// in batches by postMessage — when a batch is full or every flushIntervalMs —
// to the main thread's AuditHub (main-side.ts), the one writer of the sink.
// Each line is written as UTF-8 into a chunk as it is made, and a chunk is
// posted with its ArrayBuffer in the transfer list: the main thread gets the
// bytes without a copy and writes them as they are. (Posting string arrays cost
// the main thread a structured clone per line, then a join and an encode per
// write; keeping a batch as one string kept every line alive until the batch
// left, so lines survived scavenges — measured as GC on both threads.) The
// main thread gives each chunk buffer back once its sink has written it
// ('audit-buffer'), and the next lines go into it: a steady stream allocates
// no new buffers (each new 256 KiB counted as external memory and drove full
// garbage collections in both threads, and the process grew ~250 MiB).
//
// Bounded end to end: the buffer has a record and byte bound, and the worker
// keeps at most maxInFlightRecords posted but not yet acknowledged by the main
// thread (a stuck main thread would otherwise grow its message queue without
// limit). What does not fit is dropped and counted; nothing here waits.
//
// With a crash journal (crash-journal.ts) each line is also copied into
// shared memory the main thread reads if this worker dies, so lines not yet
// posted are not lost with it.
//
// Fail-closed needs the sink's health, which only the main thread knows: it
// broadcasts every change (AuditHealthMessage). Until the first one arrives
// the health is 'unknown', which counts as healthy only in best-effort mode.

import { formatRecord, prepareRecord, type AuditRecord, type PrepareOptions } from './record.ts';
import type { AuditorOptions, AuditRecorder } from './auditor.ts';
import type { AuditInputMode, AuditMode, ParameterMode } from '../config/config.ts';
import { CrashJournal } from './crash-journal.ts';

export type AuditHealth = 'healthy' | 'unhealthy' | 'unknown';

/** Worker → main: a batch of finished lines. */
export interface AuditBatchMessage {
  type: 'audit';
  workerId: number;
  /** `records` whole lines as UTF-8, each ending in '\n'; its ArrayBuffer is transferred (this view may cover only its start). null: drops only. */
  chunk: Uint8Array | null;
  records: number;
  /** Records this worker dropped since its previous batch (buffer full). */
  dropped: number;
}

/** Posts a batch; `transfer` holds the chunk's ArrayBuffer (empty with no chunk). */
export type AuditPost = (msg: AuditBatchMessage, transfer: ArrayBuffer[]) => void;

/** Main → worker. */
export type AuditControlMessage =
  /** The sink's health changed (also sent once to every new worker). */
  | { type: 'audit-health'; healthy: boolean }
  /** The main thread has handed this many of the worker's records to the sink. */
  | { type: 'audit-ack'; records: number }
  /** A chunk buffer the sink is done with, moved back (transferred) for reuse. */
  | { type: 'audit-buffer'; buffer: ArrayBuffer };

export interface AuditBufferOptions {
  mode: AuditMode;
  maxRecords: number;
  maxBytes: number;
  /** ready turns true at this many queued records. */
  batchRecords: number;
  /** Where a copy of each line goes for recovery after a crash (crash-journal.ts); none by default. */
  journal?: CrashJournal | null;
}

/** Bytes of one chunk the worker writes lines into (a line longer than this gets a chunk of its own). */
export const CHUNK_BYTES = 256 * 1024;

/** Returned chunk buffers a worker keeps for reuse; more are let go. */
const MAX_SPARE_BUFFERS = 8;

/** A batch part: whole lines as UTF-8 in an ArrayBuffer of its own (transferable), and how many. */
export interface AuditChunk {
  data: Uint8Array<ArrayBuffer>;
  records: number;
}

interface OpenChunk {
  buf: Buffer;
  used: number;
  records: number;
}

/**
 * Bounded lines, written as UTF-8 into chunks of CHUNK_BYTES as they come
 * (each line's string dies young: nothing holds it until the batch leaves),
 * swapped out whole by drain(). The bounds count records and real bytes.
 * Pure: no timers, no threads.
 */
export class AuditBuffer {
  private chunks: OpenChunk[] = [];
  private records = 0;
  private bytes = 0;
  private dropped = 0;
  private totalDropped = 0;
  private state: AuditHealth = 'unknown';
  private readonly options: AuditBufferOptions;
  /** Chunk buffers to write the next lines into: returned by the main thread, or kept by drain() (a mostly empty chunk's lines left in an exact copy). */
  private readonly spares: Buffer[] = [];
  private allocated = 0;
  private readonly journal: CrashJournal | null;

  constructor(options: AuditBufferOptions) {
    this.options = options;
    this.journal = options.journal ?? null;
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
    if (this.records >= this.options.maxRecords) return this.drop();
    let open = this.chunks[this.chunks.length - 1];
    // UTF-8 is at most 3 bytes per UTF-16 unit (formatRecord leaves no lone surrogate): count exactly only when that bound does not fit.
    let size = line.length * 3;
    if (open === undefined || open.used + size > open.buf.length || this.bytes + size > this.options.maxBytes) size = Buffer.byteLength(line, 'utf8');
    if (this.bytes + size > this.options.maxBytes) return this.drop();
    if (open === undefined || open.used + size > open.buf.length) {
      open = { buf: this.newChunk(size), used: 0, records: 0 };
      this.chunks.push(open);
    }
    const written = open.buf.write(line, open.used, 'utf8');
    this.journal?.appendLine(open.buf, open.used, open.used + written);
    open.used += written;
    open.records++;
    this.records++;
    this.bytes += written;
    return true;
  }

  private newChunk(minBytes: number): Buffer {
    if (minBytes <= CHUNK_BYTES) {
      const spare = this.spares.pop();
      if (spare !== undefined) return spare;
    }
    // allocUnsafeSlow: never a slice of Node's shared pool, so the ArrayBuffer can be transferred.
    this.allocated++;
    return Buffer.allocUnsafeSlow(Math.max(CHUNK_BYTES, minBytes));
  }

  /** A chunk buffer back from the main thread: kept for the next lines (up to MAX_SPARE_BUFFERS). */
  adopt(buffer: ArrayBuffer): void {
    if (buffer.byteLength === CHUNK_BYTES && this.spares.length < MAX_SPARE_BUFFERS) this.spares.push(Buffer.from(buffer));
  }

  /** Chunk buffers allocated so far (not reused ones). */
  get buffersAllocated(): number {
    return this.allocated;
  }

  private drop(): false {
    this.noteDropped();
    return false;
  }

  /** Count a record lost before it reached the buffer. */
  noteDropped(): void {
    this.dropped++;
    this.totalDropped++;
    this.journal?.setDropped(this.totalDropped);
  }

  /**
   * Everything queued (null when empty); the buffer starts over. A chunk
   * filled to less than a quarter (a timer flush at low traffic) leaves as an
   * exact copy and its buffer stays here for the next lines.
   */
  drain(): AuditChunk[] | null {
    if (this.records === 0) return null;
    const out: AuditChunk[] = [];
    for (const c of this.chunks) {
      if (c.records === 0) continue;
      if (c.used * 4 < c.buf.length && c.buf.length === CHUNK_BYTES) {
        const copy = new Uint8Array(c.used);
        copy.set(c.buf.subarray(0, c.used));
        out.push({ data: copy, records: c.records });
        if (this.spares.length < MAX_SPARE_BUFFERS) this.spares.push(c.buf);
      } else {
        out.push({ data: new Uint8Array(c.buf.buffer as ArrayBuffer, c.buf.byteOffset, c.used), records: c.records });
      }
    }
    this.chunks = [];
    this.records = 0;
    this.bytes = 0;
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
    return this.state === 'healthy' && this.records < this.options.maxRecords * 0.9 && this.bytes < this.options.maxBytes * 0.9;
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
  /** The journal the main thread allocated for this worker (crash-journal.ts); null: none. */
  journal?: SharedArrayBuffer | null;
}

export class WorkerAuditor implements AuditRecorder {
  readonly enabled = true;
  readonly parameters: ParameterMode;
  readonly maxParameterBytes: number;
  readonly input: AuditInputMode;
  readonly maxSqlBytes: number;
  readonly buffer: AuditBuffer;
  private readonly options: WorkerAuditorOptions;
  private readonly post: AuditPost;
  private readonly prepare: PrepareOptions;
  private readonly maxInFlight: number;
  private inFlight = 0;
  private posted = 0;
  private timer: NodeJS.Timeout | null = null;
  /** This worker's crash journal (null: none); its sessions' trackers report to it once setup makes it the active one. */
  readonly journal: CrashJournal | null;

  constructor(options: WorkerAuditorOptions, post: AuditPost, initialHealth: AuditHealth = 'unknown') {
    this.options = options;
    this.post = post;
    this.parameters = options.parameters;
    this.maxParameterBytes = options.maxParameterBytes ?? 256;
    this.input = options.input ?? 'off';
    this.maxSqlBytes = options.maxSqlBytes;
    this.prepare = { maxSqlBytes: options.maxSqlBytes, maxListBytes: options.maxListBytes };
    this.maxInFlight = options.maxInFlightRecords ?? options.bufferRecords;
    this.journal = options.journal === undefined || options.journal === null ? null : new CrashJournal(options.journal);
    this.buffer = new AuditBuffer({ mode: options.mode, maxRecords: options.bufferRecords, maxBytes: options.bufferBytes, batchRecords: options.batchRecords, journal: this.journal });
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
    this.send(this.buffer.drain() as AuditChunk[]);
  }

  /** One message per chunk; drops since the last report ride on the first. */
  private send(chunks: AuditChunk[]): void {
    let dropped = this.buffer.takeDropped();
    for (const { data, records } of chunks) {
      this.inFlight += records;
      this.posted += records;
      this.post({ type: 'audit', workerId: this.options.workerId, chunk: data, records, dropped }, [data.buffer]);
      dropped = 0;
    }
  }

  onMessage(msg: AuditControlMessage): void {
    switch (msg.type) {
      case 'audit-health':
        this.buffer.setHealth(msg.healthy);
        return;
      case 'audit-ack':
        this.inFlight = Math.max(0, this.inFlight - msg.records);
        return;
      case 'audit-buffer':
        this.buffer.adopt(msg.buffer);
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
    const chunks = this.buffer.drain();
    if (chunks !== null) this.send(chunks);
    else {
      const dropped = this.buffer.takeDropped();
      if (dropped > 0) this.post({ type: 'audit', workerId: this.options.workerId, chunk: null, records: 0, dropped }, []);
    }
  }

  stats(): { queued: number; inFlight: number; posted: number; dropped: number; buffersAllocated: number } {
    return { queued: this.buffer.queued, inFlight: this.inFlight, posted: this.posted, dropped: this.buffer.droppedTotal, buffersAllocated: this.buffer.buffersAllocated };
  }
}
