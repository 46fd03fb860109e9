// Cuts typed v3 messages ("Message Formats": 1 type byte, int32 length that
// counts itself, body) out of a byte stream, with no I/O.
//
// Zero-copy: a message that lies inside one chunk is reported as a subarray of
// that chunk, so the caller can forward runs of consecutive messages with one
// write. Only a message split across chunks is assembled, from exactly its own
// bytes (one concat when it is complete); the rest of the chunk that completes
// it is framed in place again. A split message of COUNTED_MESSAGE_BYTES or
// more is assembled in one buffer of its declared size, allocated when its
// header arrives (no second copy, and no read-sized pieces kept alive), and
// counted against the process's BufferBudget while it waits. Bulk types (DataRow, CopyData) may be
// "streamed": when such a message is incomplete its bytes are reported as they
// arrive (Raw) instead of being buffered, so a 100 MB COPY row never sits in
// memory whole.

import { COUNTED_MESSAGE_BYTES, type BufferBudget } from './buffer-budget.ts';

export const FrameEvent = {
  /** Nothing more in the buffered bytes; push the next chunk. */
  NeedMore: 0,
  /** A whole message: buf[start, end), header included. */
  Frame: 1,
  /** Part of a streamed message: buf[start, end); `first` marks the part holding its header. */
  Raw: 2,
  /** The length field is invalid; `errorCode` says how. The stream cannot be resynchronised. */
  Error: 3,
} as const;
export type FrameEventKind = (typeof FrameEvent)[keyof typeof FrameEvent];

export type FramerErrorCode = 'RG_BAD_MESSAGE_LENGTH' | 'RG_MESSAGE_TOO_LARGE' | 'RG_BUFFER_BUDGET';

const EMPTY = Buffer.alloc(0);

/** One shared 256-entry table per set of streamed types (every session has two framers). */
const STREAMED_TABLES = new Map<string, Uint8Array>();
function streamedTable(types: readonly number[]): Uint8Array {
  const key = types.join(',');
  let table = STREAMED_TABLES.get(key);
  if (table === undefined) {
    table = new Uint8Array(256);
    for (const t of types) table[t] = 1;
    STREAMED_TABLES.set(key, table);
  }
  return table;
}

export class Framer {
  // ---- the last reported event (read after next()) ----
  /** Message type (valid after Frame and Raw). */
  type = 0;
  /** Buffer holding the reported bytes: the pushed chunk, or an assembled message. */
  buf: Buffer = EMPTY;
  start = 0;
  end = 0;
  /** Raw: this part holds the message header. */
  first = false;
  errorCode: FramerErrorCode | null = null;

  private readonly maxMessageBytes: number;
  /** 256-entry table: types whose incomplete messages are streamed. */
  private readonly streamed: Uint8Array;
  /** The chunk being framed and the read position in it. */
  private chunk: Buffer = EMPTY;
  private pos = 0;
  /** Bytes of a streamed message still to pass through as Raw. */
  private rawRemaining = 0;
  /** Parts of a message split across chunks, and how many bytes it needs in all. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private pendingNeeded = 0;
  /** pendingNeeded is 5: only the header is known to be needed so far. */
  private pendingHeader = false;
  /** A completed split message (or streamed header part) to report before the chunk. */
  private ready: Buffer | null = null;
  private readyIsRaw = false;
  private failed = false;
  /** A large split message's buffer of its full size (pending unused meanwhile), and what it took from the budget. */
  private assembly: Buffer | null = null;
  private reserved = 0;
  private readonly budget: BufferBudget | null;

  constructor(maxMessageBytes: number, streamedTypes: readonly number[] = [], budget: BufferBudget | null = null) {
    this.maxMessageBytes = maxMessageBytes;
    this.streamed = streamedTable(streamedTypes);
    this.budget = budget;
  }

  /** The stream ends here (session closed): give back what a half-received message holds. */
  dispose(): void {
    this.releaseBudget();
    this.clearPending();
    this.ready = null;
    this.chunk = EMPTY;
    this.pos = 0;
  }

  /** Bytes held back waiting for the rest of a message (bounded by maxMessageBytes). */
  get bufferedBytes(): number {
    return this.pendingBytes + (this.ready?.length ?? 0) + (this.chunk.length - this.pos);
  }

  /** The bytes pushed but not yet reported (for handing the stream to another framer). */
  takeRest(): Buffer {
    const parts: Buffer[] = this.assembly !== null ? [this.assembly.subarray(0, this.pendingBytes)] : [...this.pending];
    this.releaseBudget();
    this.assembly = null;
    if (this.chunk.length > this.pos) parts.push(this.chunk.subarray(this.pos));
    this.pending = [];
    this.pendingBytes = 0;
    this.chunk = EMPTY;
    this.pos = 0;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }

  /** Call only after next() returned NeedMore (or before the first next()). */
  push(chunk: Buffer): void {
    if (this.failed) return;
    this.chunk = chunk;
    this.pos = 0;
    if (this.pendingBytes === 0) return;
    // Complete the split message from the head of this chunk only.
    while (this.pos < chunk.length) {
      const take = Math.min(this.pendingNeeded - this.pendingBytes, chunk.length - this.pos);
      if (this.assembly !== null) chunk.copy(this.assembly, this.pendingBytes, this.pos, this.pos + take);
      else this.pending.push(chunk.subarray(this.pos, this.pos + take));
      this.pendingBytes += take;
      this.pos += take;
      if (this.pendingBytes < this.pendingNeeded) return;
      if (!this.pendingHeader) {
        this.ready = this.assembly ?? Buffer.concat(this.pending, this.pendingBytes);
        this.readyIsRaw = false;
        this.clearPending();
        return;
      }
      // The header is complete: now the whole length is known.
      const head = Buffer.concat(this.pending, this.pendingBytes);
      const type = head[0] as number;
      const total = this.checkedTotal(head.readInt32BE(1));
      if (total < 0) return;
      if (total === 5) {
        this.ready = head;
        this.readyIsRaw = false;
        this.clearPending();
        return;
      }
      if (this.streamed[type] === 1 && total - 5 > chunk.length - this.pos) {
        // Streamed: report the header now, the body as it arrives.
        this.ready = head;
        this.readyIsRaw = true;
        this.rawRemaining = total - 5;
        this.clearPending();
        return;
      }
      if (!this.beginPending(head, total)) return;
    }
  }

  next(): FrameEventKind {
    if (this.failed) return FrameEvent.Error;
    const ready = this.ready;
    if (ready !== null) {
      this.ready = null;
      // The caller handles the message before it asks again; it no longer waits for its rest.
      this.releaseBudget();
      this.type = ready[0] as number;
      this.buf = ready;
      this.start = 0;
      this.end = ready.length;
      this.first = true;
      return this.readyIsRaw ? FrameEvent.Raw : FrameEvent.Frame;
    }
    if (this.pendingBytes > 0) return FrameEvent.NeedMore;
    const buf = this.chunk;
    const pos = this.pos;
    const avail = buf.length - pos;
    if (this.rawRemaining > 0) {
      if (avail === 0) return FrameEvent.NeedMore;
      const n = avail < this.rawRemaining ? avail : this.rawRemaining;
      this.buf = buf;
      this.start = pos;
      this.end = pos + n;
      this.first = false;
      this.rawRemaining -= n;
      this.pos = pos + n;
      return FrameEvent.Raw;
    }
    if (avail < 5) {
      if (avail > 0) this.stash(5, true);
      return FrameEvent.NeedMore;
    }
    const type = buf[pos] as number;
    const total = this.checkedTotal(buf.readInt32BE(pos + 1));
    if (total < 0) return FrameEvent.Error;
    this.type = type;
    this.buf = buf;
    if (avail >= total) {
      this.start = pos;
      this.end = pos + total;
      this.pos = pos + total;
      return FrameEvent.Frame;
    }
    if (this.streamed[type] === 1) {
      this.start = pos;
      this.end = buf.length;
      this.first = true;
      this.rawRemaining = total - avail;
      this.pos = buf.length;
      return FrameEvent.Raw;
    }
    const rest = buf.subarray(pos);
    this.chunk = EMPTY;
    this.pos = 0;
    if (!this.beginPending(rest, total)) return FrameEvent.Error;
    return FrameEvent.NeedMore;
  }

  /** Message length field → total bytes with the type byte, or -1 (and failed) when invalid. */
  private checkedTotal(len: number): number {
    if (len < 4) return this.fail('RG_BAD_MESSAGE_LENGTH');
    if (len > this.maxMessageBytes) return this.fail('RG_MESSAGE_TOO_LARGE');
    return len + 1;
  }

  private stash(needed: number, headerOnly: boolean): void {
    const rest = this.chunk.subarray(this.pos);
    this.pending = [rest];
    this.pendingBytes = rest.length;
    this.pendingNeeded = needed;
    this.pendingHeader = headerOnly;
    this.chunk = EMPTY;
    this.pos = 0;
  }

  /**
   * A message of `total` bytes of which `first` has arrived: kept as pieces,
   * or (COUNTED_MESSAGE_BYTES and more) copied into a buffer of its full size
   * taken from the budget. false: the budget is exhausted (the framer failed).
   */
  private beginPending(first: Buffer, total: number): boolean {
    this.pendingNeeded = total;
    this.pendingHeader = false;
    this.pendingBytes = first.length;
    if (total < COUNTED_MESSAGE_BYTES) {
      this.pending = [first];
      return true;
    }
    if (this.budget !== null) {
      if (!this.budget.reserve(total)) {
        this.fail('RG_BUFFER_BUDGET');
        return false;
      }
      this.reserved = total;
    }
    this.pending = [];
    this.assembly = Buffer.allocUnsafeSlow(total);
    first.copy(this.assembly, 0);
    return true;
  }

  private releaseBudget(): void {
    if (this.reserved === 0) return;
    this.budget?.release(this.reserved);
    this.reserved = 0;
  }

  private clearPending(): void {
    this.assembly = null;
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingNeeded = 0;
    this.pendingHeader = false;
  }

  private fail(code: FramerErrorCode): number {
    this.failed = true;
    this.errorCode = code;
    this.releaseBudget();
    this.clearPending();
    this.ready = null;
    this.chunk = EMPTY;
    this.buf = EMPTY;
    this.pos = 0;
    return -1;
  }
}
