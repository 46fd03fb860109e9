// Rate limits for log lines that a client causes by what it sends: each kind
// of line gets at most `limit` lines per window; the rest are counted and the
// count is written as one "log lines suppressed" line, so an authenticated
// client cannot set the log's volume. Metrics keep the exact numbers.

/** The logger, as far as a budget needs it: the count is reported at warn. */
export interface BudgetLog {
  warn(obj: object, msg: string): void;
}

/**
 * At most `limit` lines per window of `windowMs` (a window starts at the first
 * line after the previous one ended). What is over is counted and reported in
 * one line: when the window ends (a timer, so the count comes out even if no
 * line follows), or at the next line after it, whichever comes first.
 */
export class LineBudget {
  private readonly log: BudgetLog;
  private readonly what: string;
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private used = 0;
  private suppressed = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(log: BudgetLog, what: string, limit: number, now: () => number = Date.now, windowMs = 1000) {
    this.log = log;
    this.what = what;
    this.limit = limit;
    this.now = now;
    this.windowMs = windowMs;
  }

  /** True: write the line. False: it is counted as suppressed. */
  take(): boolean {
    const t = this.now();
    if (t - this.windowStartMs >= this.windowMs) {
      this.report();
      this.windowStartMs = t;
      this.used = 0;
    }
    if (this.used < this.limit) {
      this.used++;
      return true;
    }
    if (this.suppressed++ === 0) {
      // The count is reported when the window ends, even if no line follows.
      this.timer = setTimeout(() => this.report(), Math.max(0, this.windowStartMs + this.windowMs - t));
      this.timer.unref();
    }
    return false;
  }

  /** Writes the count of suppressed lines, if any. */
  report(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.suppressed === 0) return;
    const window = this.windowMs === 1000 ? 'one second' : `${this.windowMs / 1000} s`;
    this.log.warn({ lines: this.what, suppressed: this.suppressed, limit: this.limit, windowMs: this.windowMs }, `log lines suppressed: ${this.suppressed} more "${this.what}" lines in ${window}`);
    this.suppressed = 0;
  }
}
