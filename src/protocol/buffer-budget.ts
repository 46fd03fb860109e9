// One budget for the client messages all sessions of a process hold while
// waiting for the rest of them (config limits.max_buffered_bytes). A message
// that arrives in pieces is assembled in memory; without a bound, ten clients
// each sending half of a 60 MiB message hold 600 MiB. The budget lives in a
// SharedArrayBuffer the supervisor creates, so every worker thread draws on
// the same total; counted in KiB (an Int32 counter then covers 2 TiB).

/** Messages smaller than this are not counted: a session holds at most one, and counting them would put an atomic operation on every split read. */
export const COUNTED_MESSAGE_BYTES = 64 * 1024;

export class BufferBudget {
  private readonly used: Int32Array;
  private readonly limitKib: number;
  /** Bytes this thread gave back since takeReleased() (their buffers are garbage now). */
  private released = 0;

  /** `shared`: 4 bytes from BufferBudget.shared(); null: a budget of this thread alone (tests, tools). */
  constructor(shared: SharedArrayBuffer | null, limitBytes: number) {
    this.used = new Int32Array(shared ?? new SharedArrayBuffer(4));
    this.limitKib = Math.floor(limitBytes / 1024);
  }

  /** The memory one process's budget counter lives in (hand it to every worker). */
  static shared(): SharedArrayBuffer {
    return new SharedArrayBuffer(4);
  }

  /** Take `bytes` from the budget; false (nothing taken) when it would go over the limit. */
  reserve(bytes: number): boolean {
    const kib = Math.ceil(bytes / 1024);
    for (;;) {
      const current = Atomics.load(this.used, 0);
      if (current + kib > this.limitKib) return false;
      if (Atomics.compareExchange(this.used, 0, current, current + kib) === current) return true;
    }
  }

  /** Give back what reserve(bytes) took. */
  release(bytes: number): void {
    Atomics.sub(this.used, 0, Math.ceil(bytes / 1024));
    this.released += bytes;
  }

  /**
   * What this thread released since the last call. Large message buffers live
   * outside the JavaScript heap and go back to the system only when the
   * garbage collector finds them unreferenced; an idle worker collects
   * nothing, so its owner asks for a collection when much was released.
   */
  takeReleased(): number {
    const n = this.released;
    this.released = 0;
    return n;
  }

  /** Bytes held now, across all threads sharing the budget. */
  get usedBytes(): number {
    return Atomics.load(this.used, 0) * 1024;
  }

  get limitBytes(): number {
    return this.limitKib * 1024;
  }
}
