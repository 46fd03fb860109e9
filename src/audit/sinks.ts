// Audit sinks: where finished audit lines go. They live in the main thread only
// (one writer per file: rotation and ordering stay sane); workers send their
// lines over (worker-side.ts → main-side.ts).
//
// One contract (AuditSink) for all three: write() takes one line, never
// blocks, never throws; false means the line was not accepted (buffer full, or
// the sink is closed) and is counted as dropped. Every sink buffers in a
// bounded queue, so a slow or failed destination costs memory up to the bound
// and then records, never the caller's time.
//
// `healthy` is what audit.mode: fail-closed acts on. A sink is unhealthy while
// its destination fails (file error, HTTP 5xx / connection refused) and while
// its queue is saturated (≥ 90 % of a bound, until it drains below 50 %), so
// fail-closed also refuses statements while records would be dropped for lack of
// room. Health changes are reported to onHealthChange listeners at once.

import { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { Client } from 'undici';
import { RolegateError } from '../errors.ts';

export interface AuditSinkStats {
  /** Lines handed to the destination successfully. */
  written: number;
  /** Lines lost: refused by write() or discarded after acceptance (HTTP 4xx, close with a failed destination). */
  dropped: number;
  /** Lines accepted and not yet written (including an in-flight batch). */
  queued: number;
  /** Failed attempts (write errors, failed HTTP requests). */
  failures: number;
}

export interface AuditSink {
  /** Take one line (ending in '\n'); false = could not accept (buffer full or closed): counted as dropped. Never throws, never blocks. */
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

export type AuditSinkKind = 'stdout' | 'file' | 'http';

// ------------------------------------------------------------ shared parts

/** FIFO of lines bounded by count and bytes (UTF-16 length as the byte estimate: cheap and within 3×). */
export class LineQueue {
  private lines: string[] = [];
  private head = 0;
  private chars = 0;
  readonly maxRecords: number;
  readonly maxChars: number;

  constructor(maxRecords: number, maxBytes: number) {
    this.maxRecords = maxRecords;
    this.maxChars = maxBytes;
  }

  get length(): number {
    return this.lines.length - this.head;
  }

  get size(): number {
    return this.chars;
  }

  push(line: string): boolean {
    if (this.length >= this.maxRecords || this.chars + line.length > this.maxChars) return false;
    this.lines.push(line);
    this.chars += line.length;
    return true;
  }

  /** The first line (without removing it), or undefined. */
  peek(): string | undefined {
    return this.head < this.lines.length ? this.lines[this.head] : undefined;
  }

  /** Remove up to maxRecords lines totalling at most maxChars (always at least one line if any). */
  take(maxRecords: number, maxChars: number): string[] {
    const out: string[] = [];
    let chars = 0;
    while (this.head < this.lines.length && out.length < maxRecords) {
      const line = this.lines[this.head] as string;
      if (out.length > 0 && chars + line.length > maxChars) break;
      out.push(line);
      chars += line.length;
      this.head++;
    }
    this.chars -= chars;
    // Compact once the consumed prefix dominates (amortised O(1) per line; Array#shift is O(n)).
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  /** Put lines back at the front (a failed write is retried first, in order). */
  unshift(lines: readonly string[]): void {
    if (lines.length === 0) return;
    this.lines = [...lines, ...this.lines.slice(this.head)];
    this.head = 0;
    for (const l of lines) this.chars += l.length;
  }

  clear(): number {
    const n = this.length;
    this.lines = [];
    this.head = 0;
    this.chars = 0;
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
  protected updateSaturation(queue: LineQueue, extraRecords = 0, extraChars = 0): void {
    const ratio = Math.max((queue.length + extraRecords) / queue.maxRecords, (queue.size + extraChars) / queue.maxChars);
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

  protected drop(n: number): void {
    this.dropped += n;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${err.message}` : err.message;
  return String(err);
}

// ------------------------------------------------------------------ stdout

export interface StdoutSinkOptions {
  /** Defaults to process.stdout. */
  stream?: Writable;
  maxQueuedRecords: number;
  maxQueuedBytes: number;
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
  private readonly queue: LineQueue;
  private blocked = false;
  private readonly onError = (err: Error): void => {
    this.failures++;
    this.drop(this.queue.clear());
    this.setFailed(true, errorText(err));
  };

  constructor(options: StdoutSinkOptions) {
    super();
    this.stream = options.stream ?? process.stdout;
    this.queue = new LineQueue(options.maxQueuedRecords, options.maxQueuedBytes);
    this.stream.on('error', this.onError);
  }

  write(line: string): boolean {
    if (this.closed || this.lastError !== null) {
      this.drop(1);
      return false;
    }
    if (this.blocked) {
      if (!this.queue.push(line)) {
        this.drop(1);
        this.updateSaturation(this.queue);
        return false;
      }
      this.updateSaturation(this.queue);
      return true;
    }
    this.written++;
    if (!this.stream.write(line)) this.waitDrain();
    return true;
  }

  private waitDrain(): void {
    this.blocked = true;
    this.stream.once('drain', () => {
      this.blocked = false;
      if (this.lastError !== null) return;
      const n = this.queue.length;
      if (n > 0) {
        const lines = this.queue.take(n, Number.MAX_SAFE_INTEGER);
        this.written += lines.length;
        if (!this.stream.write(lines.join(''))) this.waitDrain();
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

export interface FileSinkOptions {
  path: string;
  /** Rotate before a write would take the file past this size. */
  maxBytes: number;
  /** Rotated files kept: path.1 (newest) … path.<keep>; 0 = just start the file over. */
  keep: number;
  maxQueuedRecords: number;
  maxQueuedBytes: number;
  /** After a failure, try to reopen and write again every retryMs. */
  retryMs: number;
  /** File mode for new files (audit text can hold sensitive SQL). */
  mode?: number;
}

/** Upper bound of one write call (a batch of whole lines). */
const FILE_CHUNK_BYTES = 1024 * 1024;

/**
 * Append lines to a file with size-based rotation (path → path.1 → … →
 * path.<keep>). The writer is asynchronous (libuv's thread pool): write() only
 * queues. One write at a time, of whole lines only, so rotation never splits a
 * line. On an error (ENOSPC, EACCES, EISDIR, the directory removed) the sink
 * turns unhealthy, keeps what it could not write at the head of the queue,
 * retries every retryMs (reopening the path, so a recreated directory heals
 * it) and turns healthy after the next successful write. A partly written
 * chunk is truncated away so a retry cannot leave half a line behind.
 * Rotation is rolegate's own: do not point a move-based logrotate at the file.
 */
export class FileSink extends SinkBase implements AuditSink {
  readonly path: string;
  private readonly options: FileSinkOptions;
  private readonly queue: LineQueue;
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
    this.queue = new LineQueue(options.maxQueuedRecords, options.maxQueuedBytes);
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

  write(line: string): boolean {
    if (this.closed || !this.queue.push(line)) {
      this.drop(1);
      this.updateSaturation(this.queue);
      return false;
    }
    this.updateSaturation(this.queue);
    if (!this.pumping && this.retryTimer === null) void this.pump();
    return true;
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0) {
        if (this.handle === null) await this.openFile();
        const remaining = this.options.maxBytes - this.size;
        const first = this.queue.peek() as string;
        // Rotate before the next line would cross max_bytes (a line longer than
        // max_bytes still goes, alone, into a fresh file).
        if (this.size > 0 && Buffer.byteLength(first) > remaining) {
          await this.rotate();
          continue;
        }
        const lines = this.queue.take(this.queue.maxRecords, Math.max(1, Math.min(FILE_CHUNK_BYTES, remaining)));
        let data = Buffer.from(lines.join(''), 'utf8');
        // UTF-16 length underestimates UTF-8 bytes: trim whole lines back until the chunk fits.
        while (this.size > 0 && data.length > remaining && lines.length > 1) {
          this.queue.unshift([lines.pop() as string]);
          data = Buffer.from(lines.join(''), 'utf8');
        }
        if (this.needNewline) data = Buffer.concat([Buffer.from('\n'), data]);
        this.inflight = lines.length;
        try {
          await this.writeAll(data);
        } catch (err) {
          this.queue.unshift(lines);
          throw err;
        } finally {
          this.inflight = 0;
        }
        this.needNewline = false;
        this.written += lines.length;
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

  private async writeAll(data: Buffer): Promise<void> {
    const handle = this.handle as fsp.FileHandle;
    const before = this.size;
    let offset = 0;
    try {
      while (offset < data.length) {
        const { bytesWritten } = await handle.write(data, offset, data.length - offset);
        offset += bytesWritten;
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
    this.size += data.length;
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
    // What a failing destination still holds is lost now: count it.
    this.drop(this.queue.clear());
    while (this.pumping) await new Promise((r) => setTimeout(r, 5));
    await this.closeHandle();
    this.wakeIdle();
  }

  stats(): AuditSinkStats {
    return { written: this.written, dropped: this.dropped, queued: this.queue.length + this.inflight, failures: this.failures };
  }
}

// -------------------------------------------------------------------- http

export interface HttpSinkOptions {
  /** http: or https: URL the NDJSON batches are POSTed to. */
  url: string;
  /** Extra request headers (e.g. authorization). */
  headers?: Record<string, string>;
  batchMaxRecords: number;
  batchMaxBytes: number;
  /** Send a partial batch at least this often. */
  flushIntervalMs: number;
  /** Connect, headers and body timeout of one request. */
  timeoutMs: number;
  maxQueuedRecords: number;
  maxQueuedBytes: number;
  /** Backoff after a failed batch: retryInitialMs × 2^(attempt-1), capped at retryMaxMs, with jitter (½ to 1 ×). */
  retryInitialMs: number;
  retryMaxMs: number;
  /** How long close() keeps trying to deliver what is queued. */
  closeTimeoutMs?: number;
  /** Jitter source (tests). */
  random?: () => number;
}

/**
 * Batches lines and POSTs them as NDJSON (content-type application/x-ndjson)
 * with undici, one batch in flight (order is kept). A batch is sent when it
 * is full (records or bytes) or every flushIntervalMs. A connection error, a
 * timeout, 5xx, 408 or 429 retries the same batch after an exponential,
 * jittered backoff (Retry-After is honoured up to retryMaxMs); other 4xx
 * answers mean the collector will never take that batch: it is dropped
 * (counted). Any failure makes the sink unhealthy until a batch succeeds.
 */
export class HttpSink extends SinkBase implements AuditSink {
  private readonly options: HttpSinkOptions;
  private readonly queue: LineQueue;
  private readonly client: Client;
  private readonly path: string;
  private readonly headers: Record<string, string>;
  private inflight: string[] | null = null;
  private inflightChars = 0;
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
    this.queue = new LineQueue(options.maxQueuedRecords, options.maxQueuedBytes);
    this.client = new Client(url.origin, {
      connectTimeout: options.timeoutMs,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      pipelining: 1,
    });
    this.flushTimer = setInterval(() => this.kick(), options.flushIntervalMs);
    this.flushTimer.unref();
  }

  write(line: string): boolean {
    // The batch in flight counts against the bounds until it is delivered.
    const inflight = this.inflight?.length ?? 0;
    if (this.closed || this.queue.length + inflight >= this.queue.maxRecords || this.queue.size + this.inflightChars + line.length > this.queue.maxChars || !this.queue.push(line)) {
      this.drop(1);
      this.updateSaturation(this.queue, inflight, this.inflightChars);
      return false;
    }
    this.updateSaturation(this.queue, inflight, this.inflightChars);
    if (this.queue.length >= this.options.batchMaxRecords || this.queue.size >= this.options.batchMaxBytes) this.kick();
    return true;
  }

  /** Start sending unless a batch is in flight or a retry is pending. */
  private kick(): void {
    if (this.inflight !== null || this.retryTimer !== null || this.queue.length === 0) return;
    this.inflight = this.queue.take(this.options.batchMaxRecords, this.options.batchMaxBytes);
    this.inflightChars = 0;
    for (const l of this.inflight) this.inflightChars += l.length;
    void this.send();
  }

  private async send(): Promise<void> {
    const batch = this.inflight as string[];
    let retryAfterMs = 0;
    let outcome: 'ok' | 'retry' | 'reject';
    let error = '';
    try {
      const res = await this.client.request({ path: this.path, method: 'POST', headers: this.headers, body: batch.join('') });
      await res.body.dump();
      const status = res.statusCode;
      if (status >= 200 && status < 300) outcome = 'ok';
      else {
        outcome = status >= 500 || status === 408 || status === 429 ? 'retry' : 'reject';
        error = `HTTP ${status}`;
        const ra = res.headers['retry-after'];
        const seconds = typeof ra === 'string' ? Number(ra) : Number.NaN;
        if (Number.isFinite(seconds) && seconds > 0) retryAfterMs = seconds * 1000;
      }
    } catch (err) {
      outcome = 'retry';
      error = errorText(err);
    }
    // close() gave up on this batch (and counted it) while it was in flight.
    if (this.destroyed) return;
    this.inflight = null;
    this.inflightChars = 0;
    if (outcome === 'ok') {
      this.written += batch.length;
      this.attempt = 0;
      this.setFailed(false);
      this.updateSaturation(this.queue);
      // A backlog (after an outage) goes out batch after batch, not one per interval.
      if (this.queue.length >= this.options.batchMaxRecords || this.queue.size >= this.options.batchMaxBytes || this.closed) this.kick();
      this.wakeIdle();
      return;
    }
    this.failures++;
    if (outcome === 'reject') this.drop(batch.length);
    else this.queue.unshift(batch);
    this.setFailed(true, `${this.options.url}: ${error}`);
    this.updateSaturation(this.queue);
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
      this.drop(this.inflight.length);
      this.inflight = null;
    }
    this.destroyed = true;
    await this.client.destroy().catch(() => {});
    this.wakeIdle();
  }

  stats(): AuditSinkStats {
    return { written: this.written, dropped: this.dropped, queued: this.queue.length + (this.inflight?.length ?? 0), failures: this.failures };
  }
}
