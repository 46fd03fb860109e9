// Cuts typed v3 messages ("Message Formats": 1 type byte, int32 length that
// counts itself, body) out of a byte stream, with no I/O.
//
// Zero-copy: a message that lies inside one chunk is reported as a subarray of
// that chunk, so the caller can forward runs of consecutive messages with one
// write. Only a message split across chunks is assembled (one concat when it is
// complete). Bulk types (DataRow, CopyData) may be "streamed": when such a
// message is incomplete its bytes are reported as they arrive (RAW) instead of
// being buffered, so a 100 MB COPY row never sits in memory whole.

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

const EMPTY = Buffer.alloc(0);

export class Framer {
  /** Current message type (valid after Frame and Raw). */
  type = 0;
  buf: Buffer = EMPTY;
  start = 0;
  end = 0;
  /** Raw: this part holds the message header. */
  first = false;
  errorCode: 'RG_BAD_MESSAGE_LENGTH' | 'RG_MESSAGE_TOO_LARGE' | null = null;

  private readonly maxMessageBytes: number;
  /** 256-entry table: types whose incomplete messages are streamed. */
  private readonly streamed: Uint8Array;
  private pos = 0;
  private rawRemaining = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private pendingNeeded = 0;
  private failed = false;

  constructor(maxMessageBytes: number, streamedTypes: readonly number[] = []) {
    this.maxMessageBytes = maxMessageBytes;
    this.streamed = new Uint8Array(256);
    for (const t of streamedTypes) this.streamed[t] = 1;
  }

  /** Bytes held back waiting for the rest of a message (bounded by maxMessageBytes). */
  get bufferedBytes(): number {
    return this.pendingBytes + (this.buf.length - this.pos);
  }

  push(chunk: Buffer): void {
    if (this.failed) return;
    if (this.pendingBytes > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes < this.pendingNeeded) {
        this.buf = EMPTY;
        this.pos = 0;
        return;
      }
      this.buf = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.pendingNeeded = 0;
    } else {
      this.buf = chunk;
    }
    this.pos = 0;
  }

  next(): FrameEventKind {
    if (this.failed) return FrameEvent.Error;
    const buf = this.buf;
    const pos = this.pos;
    const avail = buf.length - pos;
    if (this.rawRemaining > 0) {
      if (avail === 0) return FrameEvent.NeedMore;
      const n = avail < this.rawRemaining ? avail : this.rawRemaining;
      this.start = pos;
      this.end = pos + n;
      this.first = false;
      this.rawRemaining -= n;
      this.pos = pos + n;
      return FrameEvent.Raw;
    }
    if (avail < 5) {
      if (avail > 0) this.stash(5);
      return FrameEvent.NeedMore;
    }
    const type = buf[pos] as number;
    const len = buf.readInt32BE(pos + 1);
    if (len < 4) return this.fail('RG_BAD_MESSAGE_LENGTH');
    if (len > this.maxMessageBytes) return this.fail('RG_MESSAGE_TOO_LARGE');
    const total = len + 1;
    this.type = type;
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
    this.stash(total);
    return FrameEvent.NeedMore;
  }

  private stash(needed: number): void {
    const rest = this.buf.subarray(this.pos);
    this.pending = [rest];
    this.pendingBytes = rest.length;
    this.pendingNeeded = needed;
    this.buf = EMPTY;
    this.pos = 0;
  }

  private fail(code: 'RG_BAD_MESSAGE_LENGTH' | 'RG_MESSAGE_TOO_LARGE'): FrameEventKind {
    this.failed = true;
    this.errorCode = code;
    this.pending = [];
    this.pendingBytes = 0;
    this.buf = EMPTY;
    this.pos = 0;
    return FrameEvent.Error;
  }
}
