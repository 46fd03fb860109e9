// Audit sinks: where finished audit lines go. They live in the main thread only
// (one writer per file: rotation and ordering stay sane); workers send their
// lines over as UTF-8 chunks (worker-side.ts → main-side.ts).
//
// One contract (AuditSink) for all three: writeChunk() takes a run of whole
// lines as bytes (write() one line as text), never blocks, never throws; a
// record that is not accepted (buffer full, or the sink is closed) is counted
// as dropped. Every sink buffers in a bounded queue, so a slow or failed
// destination costs memory up to the bound and then records, never the
// caller's time. Chunks stay the unit from the worker to the write call: no
// per-line strings, joins or re-encoding in the main thread.
//
// `healthy` is what audit.mode: fail-closed acts on. A sink is unhealthy while
// its destination fails (file error, HTTP 5xx / connection refused) and while
// its queue is saturated (≥ 90 % of a bound, until it drains below 50 %), so
// fail-closed also refuses statements while records would be dropped for lack of
// room. Health changes are reported to onHealthChange listeners at once.
//
// A chunk may come with a ChunkLease: its bytes live in a buffer its owner (a
// worker) wants back. The sink releases the lease once no part of the chunk is
// queued or being written any more — written, or dropped — and the buffer then
// goes back to the worker for its next lines: a steady audit stream allocates
// nothing, so neither thread's heap sees new external memory (which V8 answers
// with full garbage collections) and the process does not grow.

import { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { Client } from 'undici';
import type { AuditFileConfig, AuditHttpConfig, AuditStdoutConfig } from '../config/config.ts';
import { RolegateError } from '../errors.ts';

export interface AuditSinkStats {
  /** Records handed to the destination successfully. */
  written: number;
  /** Records lost: refused by write()/writeChunk() or discarded after acceptance (HTTP 4xx, close with a failed destination). */
  dropped: number;
  /** Records accepted and not yet written (including an in-flight batch). */
  queued: number;
  /** Failed attempts (write errors, failed HTTP requests). */
  failures: number;
}

export interface AuditSink {
  /**
   * Take `records` whole lines as UTF-8 bytes, each ending in '\n' (a worker's
   * batch). The sink keeps a reference to `data`: the caller must not reuse it.
   * What does not fit the queue is refused from the first line that does not
   * fit on and counted as dropped; false = not every record was accepted.
   * The sink releases `lease` (when given) once it no longer needs `data`,
   * whatever became of the records. Never throws, never blocks.
   */
  writeChunk(data: Uint8Array, records: number, lease?: ChunkLease | null): boolean;
  /** One line (ending in '\n'): writeChunk of its UTF-8 bytes. */
  write(line: string): boolean;
  readonly healthy: boolean;
  /** The last failure, for logs and /readyz detail; null while healthy. */
  readonly lastError: string | null;
  /** Called with the new value each time `healthy` changes. */
  onHealthChange(listener: (healthy: boolean) => void): void;
  /** Resolves when everything accepted so far is written, or the destination is failing (never hangs on a dead destination). */
  flush(): Promise<void>;
  /** Flush (bounded by the sink's close timeout), stop timers, release the destination. Later writes return false. */
  close(): Promise<void>;
  stats(): AuditSinkStats;
}

// ------------------------------------------------------------ shared parts

const NEWLINE = 0x0a; // '\n'

/**
 * A claim on a chunk's buffer, counted: every queued part of the chunk holds
 * one reference; when the last is released the owner gets its buffer back
 * (onFree). The buffer must not be read after that.
 */
export class ChunkLease {
  private refs = 1;
  private readonly onFree: () => void;

  constructor(onFree: () => void) {
    this.onFree = onFree;
  }

  /** One more part of the chunk holds the buffer (a split). */
  retain(): void {
    this.refs++;
  }

  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) this.onFree();
  }

  get released(): boolean {
    return this.refs === 0;
  }
}

/** Whole lines as UTF-8 bytes and how many they are; `lease`: the claim this part holds on its buffer (null: nobody wants it back). */
export interface LineChunk {
  readonly data: Uint8Array;
  readonly records: number;
  readonly lease: ChunkLease | null;
}

/** Release the buffer claims of chunks the sink is done with (written or dropped). */
export function releaseChunks(chunks: readonly LineChunk[]): void {
  for (const c of chunks) c.lease?.release();
}

/**
 * The longest prefix of `data` made of at most maxRecords whole lines and at
 * most maxBytes bytes ({0, 0}: not even the first line fits). Splitting at a
 * '\n' byte is safe: 0x0A never occurs inside a UTF-8 multi-byte sequence, and
 * a formatted record holds no raw newline (record.ts). Only the rare paths
 * (a full queue, rotation, a batch bound) scan like this.
 */
function linePrefix(data: Uint8Array, maxRecords: number, maxBytes: number): { bytes: number; records: number } {
  let bytes = 0;
  let records = 0;
  while (records < maxRecords) {
    const nl = data.indexOf(NEWLINE, bytes);
    if (nl < 0 || nl + 1 > maxBytes) break;
    bytes = nl + 1;
    records++;
  }
  return { bytes, records };
}

/** FIFO of line chunks bounded by records and bytes; chunks are split at line boundaries only. */
export class ChunkQueue {
  private chunks: LineChunk[] = [];
  private head = 0;
  private records = 0;
  private bytes = 0;
  readonly maxRecords: number;
  readonly maxBytes: number;

  constructor(maxRecords: number, maxBytes: number) {
    this.maxRecords = maxRecords;
    this.maxBytes = maxBytes;
  }

  /** Records queued. */
  get length(): number {
    return this.records;
  }

  /** Bytes queued. */
  get size(): number {
    return this.bytes;
  }

  /**
   * Queue a chunk; when it does not fit whole, its longest prefix of lines that
   * does (as a line-by-line queue would). `extraRecords`/`extraBytes` count
   * against the bounds too (an HTTP batch in flight). Returns the records taken.
   * The lease passes to the queue (released at once when nothing was taken).
   */
  push(data: Uint8Array, records: number, extraRecords = 0, extraBytes = 0, lease: ChunkLease | null = null): number {
    const roomRecords = this.maxRecords - this.records - extraRecords;
    const roomBytes = this.maxBytes - this.bytes - extraBytes;
    if (records <= roomRecords && data.length <= roomBytes) {
      this.append(data, records, lease);
      return records;
    }
    const fit = roomRecords <= 0 || roomBytes <= 0 ? { bytes: 0, records: 0 } : linePrefix(data, roomRecords, roomBytes);
    if (fit.records > 0) this.append(data.subarray(0, fit.bytes), fit.records, lease);
    else lease?.release();
    return fit.records;
  }

  private append(data: Uint8Array, records: number, lease: ChunkLease | null): void {
    this.chunks.push({ data, records, lease });
    this.records += records;
    this.bytes += data.length;
  }

  /** Bytes of the first queued line (its '\n' included); 0 when empty. */
  firstLineBytes(): number {
    if (this.head >= this.chunks.length) return 0;
    const data = (this.chunks[this.head] as LineChunk).data;
    const nl = data.indexOf(NEWLINE);
    return nl < 0 ? data.length : nl + 1;
  }

  /**
   * Remove up to maxRecords records totalling at most maxBytes, whole chunks
   * where they fit, else split at a line boundary (the rest stays at the
   * front). Always at least one line if any, even one longer than maxBytes.
   */
  take(maxRecords: number, maxBytes: number): LineChunk[] {
    const out: LineChunk[] = [];
    let records = 0;
    let bytes = 0;
    while (this.head < this.chunks.length && records < maxRecords) {
      const chunk = this.chunks[this.head] as LineChunk;
      if (records + chunk.records <= maxRecords && bytes + chunk.data.length <= maxBytes) {
        out.push(chunk);
        records += chunk.records;
        bytes += chunk.data.length;
        this.head++;
        continue;
      }
      let cut = linePrefix(chunk.data, maxRecords - records, maxBytes - bytes);
      if (cut.records === 0) {
        if (out.length > 0) break;
        cut = linePrefix(chunk.data, 1, Number.MAX_SAFE_INTEGER);
      }
      if (cut.records === 0 || cut.bytes === chunk.data.length) {
        // No '\n' found (not whole lines: take it as it is) or the cut is the whole chunk.
        out.push(chunk);
        records += chunk.records;
        bytes += chunk.data.length;
        this.head++;
        break;
      }
      // Both parts hold the buffer now.
      chunk.lease?.retain();
      out.push({ data: chunk.data.subarray(0, cut.bytes), records: cut.records, lease: chunk.lease });
      this.chunks[this.head] = { data: chunk.data.subarray(cut.bytes), records: chunk.records - cut.records, lease: chunk.lease };
      records += cut.records;
      bytes += cut.bytes;
      break;
    }
    this.records -= records;
    this.bytes -= bytes;
    // Compact once the consumed prefix dominates (amortised O(1) per chunk; Array#shift is O(n)).
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  /** Put chunks back at the front (a failed write is retried first, in order). */
  unshift(chunks: readonly LineChunk[]): void {
    if (chunks.length === 0) return;
    this.chunks = [...chunks, ...this.chunks.slice(this.head)];
    this.head = 0;
    for (const c of chunks) {
      this.records += c.records;
      this.bytes += c.data.length;
    }
  }

  /** Empty the queue (releasing its chunks); returns the records it held. */
  clear(): number {
    const n = this.records;
    releaseChunks(this.chunks.slice(this.head));
    this.chunks = [];
    this.head = 0;
    this.records = 0;
    this.bytes = 0;
    return n;
  }
}

/** Health, counters and waiters every sink shares. */
abstract class SinkBase {
  protected written = 0;
  protected dropped = 0;
  protected failures = 0;
  protected closed = false;
  private failed = false;
  private saturated = false;
  private error: string | null = null;
  private readonly listeners: Array<(healthy: boolean) => void> = [];
  private idleWaiters: Array<() => void> = [];

  get healthy(): boolean {
    return !this.failed && !this.saturated;
  }

  get lastError(): string | null {
    return this.failed ? this.error : null;
  }

  onHealthChange(listener: (healthy: boolean) => void): void {
    this.listeners.push(listener);
  }

  protected setFailed(failed: boolean, error?: string): void {
    if (failed) this.error = error ?? 'unknown error';
    if (failed === this.failed) return;
    const before = this.healthy;
    this.failed = failed;
    this.notify(before);
    if (failed) this.wakeIdle();
  }

  /** Saturated at ≥ 90 % of either bound, clear below 50 % of both (hysteresis: no flapping). */
  protected updateSaturation(queue: ChunkQueue, extraRecords = 0, extraBytes = 0): void {
    const ratio = Math.max((queue.length + extraRecords) / queue.maxRecords, (queue.size + extraBytes) / queue.maxBytes);
    const next = this.saturated ? ratio >= 0.5 : ratio >= 0.9;
    if (next === this.saturated) return;
    const before = this.healthy;
    this.saturated = next;
    this.notify(before);
  }

  private notify(before: boolean): void {
    const now = this.healthy;
    if (now === before) return;
    for (const l of this.listeners) {
      try {
        l(now);
      } catch {
        // A listener's bug must not break the sink.
      }
    }
  }

  abstract writeChunk(data: Uint8Array, records: number, lease?: ChunkLease | null): boolean;

  /** The main thread's own records (and tests) take the chunk path too: one mechanism. */
  write(line: string): boolean {
    return this.writeChunk(Buffer.from(line, 'utf8'), 1);
  }

  protected abstract isIdle(): boolean;

  /** flush(): resolves once idle, or at once while the destination is failing. */
  flush(): Promise<void> {
    if (this.isIdle() || this.failed || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  protected wakeIdle(): void {
    if (this.idleWaiters.length === 0) return;
    if (!this.isIdle() && !this.failed && !this.closed) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Queue a chunk (`extra…`: what is in flight beside the queue counts
   * against its bounds). What does not fit — all of it once closed — is
   * dropped (counted); a chunk the queue does not take has its lease released.
   * Returns the records taken.
   */
  protected enqueue(queue: ChunkQueue, data: Uint8Array, records: number, lease: ChunkLease | null, extraRecords = 0, extraBytes = 0): number {
    let taken = 0;
    if (this.closed) lease?.release();
    else taken = queue.push(data, records, extraRecords, extraBytes, lease);
    if (taken < records) this.drop(records - taken);
    return taken;
  }

  protected drop(n: number): void {
    this.dropped += n;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${err.message}` : err.message;
  return String(err);
}

// ------------------------------------------------------------------ stdout

export interface StdoutSinkOptions extends AuditStdoutConfig {
  /** Defaults to process.stdout. */
  stream?: Writable;
}

/**
 * Lines to a Writable (process.stdout by default), honouring its backpressure:
 * while write() has returned false, lines wait in the bounded queue until
 * 'drain'. Note: on Linux, Node writes process.stdout synchronously when it is
 * a file or a pipe (TTYs and pipes in the Node docs' "A note on process I/O"),
 * exactly like pino's own log lines from the main thread; a stalled reader then
 * stalls the main thread (never a worker: their buffers are bounded). Use the
 * file or http sink where that matters. A stream error (EPIPE) is final: the
 * sink stays unhealthy and drops.
 */
export class StdoutSink extends SinkBase implements AuditSink {
  private readonly stream: Writable;
  private readonly queue: ChunkQueue;
  private blocked = false;
  private readonly onError = (err: Error): void => {
    this.failures++;
    this.drop(this.queue.clear());
    this.setFailed(true, errorText(err));
  };

  constructor(options: StdoutSinkOptions) {
    super();
    this.stream = options.stream ?? process.stdout;
    this.queue = new ChunkQueue(options.maxQueuedRecords, options.maxQueuedBytes);
    this.stream.on('error', this.onError);
  }

  writeChunk(data: Uint8Array, records: number, lease: ChunkLease | null = null): boolean {
    if (this.closed || this.lastError !== null) {
      this.drop(records);
      lease?.release();
      return false;
    }
    if (this.blocked) {
      const taken = this.enqueue(this.queue, data, records, lease);
      this.updateSaturation(this.queue);
      return taken === records;
    }
    this.written += records;
    if (!this.writeOut(data, lease)) this.waitDrain();
    return true;
  }

  /** stream.write; the lease is released once the stream is done with the bytes (its callback, error or not). */
  private writeOut(data: Uint8Array, lease: ChunkLease | null): boolean {
    return lease === null ? this.stream.write(data) : this.stream.write(data, () => lease.release());
  }

  private waitDrain(): void {
    this.blocked = true;
    this.stream.once('drain', () => {
      this.blocked = false;
      if (this.lastError !== null) return;
      if (this.queue.length > 0) {
        const chunks = this.queue.take(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
        // Corked: a stream with _writev (a socket) takes the backlog in one call.
        let ok = true;
        this.stream.cork();
        for (const c of chunks) {
          this.written += c.records;
          ok = this.writeOut(c.data, c.lease) && ok;
        }
        this.stream.uncork();
        if (!ok) this.waitDrain();
      }
      this.updateSaturation(this.queue);
      this.wakeIdle();
    });
  }

  protected isIdle(): boolean {
    return !this.blocked && this.queue.length === 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    this.wakeIdle();
    // Never end process.stdout (pino writes there too); a caller's stream is the caller's.
    this.stream.off('error', this.onError);
  }

  stats(): AuditSinkStats {
    return { written: this.written, dropped: this.dropped, queued: this.queue.length, failures: this.failures };
  }
}

// -------------------------------------------------------------------- file

export interface FileSinkOptions extends AuditFileConfig {
  /** File mode for new files (audit text can hold sensitive SQL). */
  mode?: number;
}

/** Upper bound of one write call (a batch of whole lines). */
const FILE_CHUNK_BYTES = 1024 * 1024;

const NEWLINE_BYTES = new Uint8Array([NEWLINE]);

/** What is left of `parts` once the first `written` bytes are out. */
function unwritten(parts: readonly Uint8Array[], written: number): Uint8Array[] {
  let i = 0;
  let skip = written;
  while (i < parts.length && skip >= (parts[i] as Uint8Array).length) skip -= (parts[i++] as Uint8Array).length;
  const rest = parts.slice(i);
  if (rest.length > 0 && skip > 0) rest[0] = (rest[0] as Uint8Array).subarray(skip);
  return rest;
}

/**
 * Append lines to a file with size-based rotation (path → path.1 → … →
 * path.<keep>). The writer is asynchronous (libuv's thread pool): writeChunk()
 * only queues. One writev at a time, of everything queued meanwhile (up to
 * FILE_CHUNK_BYTES and the room left before max_bytes), cut at line
 * boundaries only, so rotation never splits a line. On an error (ENOSPC,
 * EACCES, EISDIR, the directory removed) the sink turns unhealthy, keeps what
 * it could not write at the head of the queue, retries every retryMs
 * (reopening the path, so a recreated directory heals it) and turns healthy
 * after the next successful write. A partly written chunk is truncated away so
 * a retry cannot leave half a line behind.
 * Rotation is rolegate's own: do not point a move-based logrotate at the file.
 */
export class FileSink extends SinkBase implements AuditSink {
  readonly path: string;
  private readonly options: FileSinkOptions;
  private readonly queue: ChunkQueue;
  private handle: fsp.FileHandle | null = null;
  private size = 0;
  private pumping = false;
  private inflight = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** A failed chunk could not be truncated away: start the next write on a fresh line. */
  private needNewline = false;

  private constructor(options: FileSinkOptions) {
    super();
    this.path = options.path;
    this.options = options;
    this.queue = new ChunkQueue(options.maxQueuedRecords, options.maxQueuedBytes);
  }

  /** Open (or create) the file now: start-up fails with RG_AUDIT_SINK if it cannot be written. */
  static async open(options: FileSinkOptions): Promise<FileSink> {
    const sink = new FileSink(options);
    try {
      await sink.openFile();
    } catch (err) {
      throw new RolegateError('RG_AUDIT_SINK', `audit file ${options.path} cannot be opened for writing: ${errorText(err)}`, { cause: err });
    }
    return sink;
  }

  /** A sink that starts without opening (tests; a destination that may appear later): the first write opens it. */
  static lazy(options: FileSinkOptions): FileSink {
    return new FileSink(options);
  }

  private async openFile(): Promise<void> {
    const handle = await fsp.open(this.path, 'a', this.options.mode ?? 0o600);
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw Object.assign(new Error(`${this.path} is not a regular file`), { code: 'EINVAL' });
      this.size = st.size;
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
    this.handle = handle;
  }

  writeChunk(data: Uint8Array, records: number, lease: ChunkLease | null = null): boolean {
    const taken = this.enqueue(this.queue, data, records, lease);
    this.updateSaturation(this.queue);
    if (taken > 0 && !this.pumping && this.retryTimer === null) void this.pump();
    return taken === records;
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        if (this.handle === null) await this.openFile();
        const remaining = this.options.maxBytes - this.size;
        // Rotate before the next line would cross max_bytes (a line longer than
        // max_bytes still goes, alone, into a fresh file).
        if (this.size > 0 && this.queue.firstLineBytes() > remaining) {
          await this.rotate();
          continue;
        }
        // Everything queued since the last write, up to the room left (split at a line), in one writev.
        const chunks = this.queue.take(Number.MAX_SAFE_INTEGER, Math.max(1, Math.min(FILE_CHUNK_BYTES, remaining)));
        const parts: Uint8Array[] = this.needNewline ? [NEWLINE_BYTES] : [];
        let records = 0;
        for (const c of chunks) {
          parts.push(c.data);
          records += c.records;
        }
        this.inflight = records;
        try {
          await this.writeAll(parts);
        } catch (err) {
          this.queue.unshift(chunks);
          throw err;
        } finally {
          this.inflight = 0;
        }
        releaseChunks(chunks);
        this.needNewline = false;
        this.written += records;
        this.updateSaturation(this.queue);
        this.setFailed(false);
      }
    } catch (err) {
      this.failures++;
      await this.closeHandle();
      this.setFailed(true, errorText(err));
      this.updateSaturation(this.queue);
      if (!this.closed) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          if (!this.pumping) void this.pump();
        }, this.options.retryMs);
        this.retryTimer.unref();
      }
    } finally {
      this.pumping = false;
      this.wakeIdle();
    }
  }

  private async writeAll(parts: Uint8Array[]): Promise<void> {
    const handle = this.handle as fsp.FileHandle;
    const before = this.size;
    let total = 0;
    for (const p of parts) total += p.length;
    let offset = 0;
    try {
      // libuv writes every buffer unless an error stops it; a short count (the error
      // after some bytes) makes the next call report it.
      let pending = parts;
      for (;;) {
        const { bytesWritten } = await handle.writev(pending);
        offset += bytesWritten;
        if (offset >= total) break;
        pending = unwritten(pending, bytesWritten);
      }
    } catch (err) {
      if (offset > 0) {
        // Take the partial chunk back out so the retry does not leave half a line.
        try {
          await handle.truncate(before);
        } catch {
          this.needNewline = true;
        }
      }
      throw err;
    }
    this.size += total;
  }

  private async rotate(): Promise<void> {
    await this.closeHandle();
    const { keep } = this.options;
    if (keep === 0) {
      await fsp.rm(this.path, { force: true });
    } else {
      for (let i = keep - 1; i >= 1; i--) {
        try {
          await fsp.rename(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      await fsp.rename(this.path, `${this.path}.1`);
    }
    await this.openFile();
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    if (h !== null) await h.close().catch(() => {});
  }

  protected isIdle(): boolean {
    return this.queue.length === 0 && this.inflight === 0 && !this.pumping;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    // A write in flight finishes first (its records written, or put back on failure).
    while (this.pumping) await new Promise((r) => setTimeout(r, 5));
    // What a failing destination still holds is lost now: count it.
    this.drop(this.queue.clear());
    await this.closeHandle();
    this.wakeIdle();
  }

  stats(): AuditSinkStats {
    return { written: this.written, dropped: this.dropped, queued: this.queue.length + this.inflight, failures: this.failures };
  }
}

// -------------------------------------------------------------------- http

export interface HttpSinkOptions extends Omit<AuditHttpConfig, 'headers'> {
  /** Extra request headers (e.g. authorization). */
  headers?: Readonly<Record<string, string>>;
  /** How long close() keeps trying to deliver what is queued. */
  closeTimeoutMs?: number;
  /**
   * Retry a rejected batch (4xx) like a failed one instead of dropping it:
   * fail-closed mode, where statements wait for their records rather than
   * lose them — and a sink that dropped its last batch would have nothing
   * left to prove the collector takes records again (a new token, say).
   */
  keepRejected?: boolean;
  /** Jitter source (tests). */
  random?: () => number;
}

/** Retry-After (RFC 9110 §10.2.3) in ms: delay-seconds or an HTTP-date; 0 when absent or unreadable. */
function retryAfter(value: string | string[] | undefined): number {
  if (typeof value !== 'string') return 0;
  const seconds = Number(value);
  if (value.trim() !== '' && Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0;
}

/**
 * Batches lines and POSTs them as NDJSON (content-type application/x-ndjson)
 * with undici, one batch in flight (order is kept). A batch is sent when it
 * is full (records or bytes) or every flushIntervalMs. A connection error, a
 * timeout, 5xx, 408 or 429 retries the same batch after an exponential,
 * jittered backoff (Retry-After, seconds or an HTTP-date, is honoured up to retryMaxMs); other answers
 * (4xx, 3xx) mean the collector will not take that batch: it is dropped
 * (counted) — unless keepRejected (fail-closed), when it is retried the same
 * way until taken. Any failure makes the sink unhealthy until a batch succeeds.
 * Each batch is the sink's own copy (retries resend it): chunk buffers go
 * back to their workers when the batch is taken, not when it is answered.
 */
export class HttpSink extends SinkBase implements AuditSink {
  private readonly options: HttpSinkOptions;
  private readonly queue: ChunkQueue;
  private readonly client: Client;
  private readonly path: string;
  private readonly headers: Record<string, string>;
  /** The batch being delivered (its own copy of the lines: retries resend it as it is). */
  private inflight: Buffer | null = null;
  /** A request for `inflight` is under way (else a retry is pending, or nothing is in flight). */
  private sending = false;
  private inflightRecords = 0;
  private inflightBytes = 0;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly flushTimer: NodeJS.Timeout;
  /** close(): deliver until this instant, then give up. */
  private deadline = 0;
  private gaveUp = false;
  private destroyed = false;

  constructor(options: HttpSinkOptions) {
    super();
    this.options = options;
    const url = new URL(options.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RolegateError('RG_AUDIT_SINK', `audit http url must be http: or https:, got ${url.protocol}`);
    this.path = `${url.pathname}${url.search}`;
    this.headers = { ...options.headers, 'content-type': 'application/x-ndjson' };
    this.queue = new ChunkQueue(options.maxQueuedRecords, options.maxQueuedBytes);
    this.client = new Client(url.origin, {
      connectTimeout: options.timeoutMs,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      pipelining: 1,
    });
    this.flushTimer = setInterval(() => this.kick(), options.flushIntervalMs);
    this.flushTimer.unref();
  }

  writeChunk(data: Uint8Array, records: number, lease: ChunkLease | null = null): boolean {
    // The batch in flight counts against the bounds until it is delivered.
    const taken = this.enqueue(this.queue, data, records, lease, this.inflightRecords, this.inflightBytes);
    this.updateSaturation(this.queue, this.inflightRecords, this.inflightBytes);
    if (this.queue.length >= this.options.batchMaxRecords || this.queue.size >= this.options.batchMaxBytes) this.kick();
    return taken === records;
  }

  /** Send the next batch (or resend the one in flight after its backoff) unless a request is under way or a retry is pending. */
  private kick(): void {
    if (this.sending || this.retryTimer !== null) return;
    if (this.inflight === null) {
      if (this.queue.length === 0) return;
      const chunks = this.queue.take(this.options.batchMaxRecords, this.options.batchMaxBytes);
      // The batch's own copy, and the chunks' buffers go back at once: undici does not
      // say when the socket is done with a body (a collector may answer before reading
      // it all), so a worker's buffer must never be the body.
      this.inflight = Buffer.concat(chunks.map((c) => c.data));
      this.inflightRecords = 0;
      for (const c of chunks) this.inflightRecords += c.records;
      this.inflightBytes = this.inflight.length;
      releaseChunks(chunks);
    }
    this.sending = true;
    void this.send();
  }

  private async send(): Promise<void> {
    const body = this.inflight as Buffer;
    const records = this.inflightRecords;
    let retryAfterMs = 0;
    let outcome: 'ok' | 'retry' | 'reject';
    let error = '';
    try {
      const res = await this.client.request({ path: this.path, method: 'POST', headers: this.headers, body });
      await res.body.dump();
      const status = res.statusCode;
      if (status >= 200 && status < 300) outcome = 'ok';
      else {
        outcome = status >= 500 || status === 408 || status === 429 || this.options.keepRejected === true ? 'retry' : 'reject';
        error = `HTTP ${status}`;
        retryAfterMs = retryAfter(res.headers['retry-after']);
      }
    } catch (err) {
      outcome = 'retry';
      error = errorText(err);
    }
    // close() gave up on this batch (and counted it) while it was in flight.
    if (this.destroyed) return;
    this.sending = false;
    if (outcome !== 'retry') {
      this.inflight = null;
      this.inflightRecords = 0;
      this.inflightBytes = 0;
    }
    if (outcome === 'ok') {
      this.written += records;
      this.attempt = 0;
      this.setFailed(false);
      this.updateSaturation(this.queue);
      // A backlog (after an outage) goes out batch after batch, not one per interval.
      if (this.queue.length >= this.options.batchMaxRecords || this.queue.size >= this.options.batchMaxBytes || this.closed) this.kick();
      this.wakeIdle();
      return;
    }
    this.failures++;
    if (outcome === 'reject') this.drop(records);
    this.setFailed(true, `${this.options.url}: ${error}`);
    this.updateSaturation(this.queue, this.inflightRecords, this.inflightBytes);
    this.attempt++;
    const base = Math.min(this.options.retryMaxMs, this.options.retryInitialMs * 2 ** Math.min(this.attempt - 1, 30));
    const jittered = base / 2 + (this.options.random ?? Math.random)() * (base / 2);
    const delayMs = Math.min(this.options.retryMaxMs, Math.max(jittered, retryAfterMs));
    if (this.closed && Date.now() + delayMs > this.deadline) {
      this.gaveUp = true;
      this.wakeIdle();
      return;
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.kick();
    }, delayMs);
    this.retryTimer.unref();
  }

  protected isIdle(): boolean {
    return this.queue.length === 0 && this.inflight === null;
  }

  /** Resolves once idle or failing; a partial batch goes out now instead of at the next interval. */
  override flush(): Promise<void> {
    this.kick();
    return super.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deadline = Date.now() + (this.options.closeTimeoutMs ?? 5000);
    clearInterval(this.flushTimer);
    // Keep delivering (with retries) until the queue is empty or the deadline passes.
    while (!this.isIdle() && !this.gaveUp && Date.now() < this.deadline) {
      this.kick();
      await new Promise((r) => setTimeout(r, 10));
    }
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop(this.queue.clear());
    if (this.inflight !== null) {
      this.drop(this.inflightRecords);
      this.inflight = null;
      this.inflightRecords = 0;
      this.inflightBytes = 0;
    }
    this.destroyed = true;
    await this.client.destroy().catch(() => {});
    this.wakeIdle();
  }

  stats(): AuditSinkStats {
    return { written: this.written, dropped: this.dropped, queued: this.queue.length + this.inflightRecords, failures: this.failures };
  }
}
