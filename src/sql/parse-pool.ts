// Parses long SQL texts away from the worker's event loop. PostgreSQL's parser
// and the facts walk take about 50 ms per MiB of text (measured on a 2-vCPU
// EPYC VM: 64 KiB 2.5 ms, 1 MiB 48–59 ms), and every other session of the
// worker waits while its thread parses. Texts the facts cache would keep
// (DEFAULT_MAX_CACHED_SQL_CHARS and shorter: their parse is paid once and
// takes a few ms at most) stay on the thread; longer ones, which are never
// cached and are parsed again each time, go to one pool thread per worker
// (piscina), started on first use and stopped when idle. The session that
// sent the text waits for its answer; the decision is still made before a
// byte of the text is forwarded.

import { Piscina } from 'piscina';
import { DEFAULT_MAX_CACHED_SQL_CHARS } from './facts-cache.ts';
import type { ParsedText } from './parser.ts';

/** A pool thread that stays idle this long is stopped (its parser's memory goes with it). */
const IDLE_TIMEOUT_MS = 30_000;

export class OffThreadParser {
  /** Texts longer than this (in characters) are parsed off the thread. */
  readonly thresholdChars: number;
  private pool: Piscina | null = null;
  /** Texts parsed by the pool so far (a metric). */
  parsed = 0;

  constructor(thresholdChars: number = DEFAULT_MAX_CACHED_SQL_CHARS) {
    this.thresholdChars = thresholdChars;
  }

  /** Parse `sql` on the pool thread; never rejects (a failed pool thread is a failed parse: fail closed). */
  async parse(sql: string): Promise<ParsedText> {
    this.pool ??= new Piscina({ filename: new URL('./parse-task.ts', import.meta.url).href, minThreads: 0, maxThreads: 1, idleTimeout: IDLE_TIMEOUT_MS });
    try {
      const parsed = (await this.pool.run(sql)) as ParsedText;
      this.parsed++;
      return parsed;
    } catch (thrown) {
      return { ok: false, code: 'RG_INTERNAL', message: `SQL parser failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, cursorPosition: null };
    }
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    await pool?.destroy();
  }
}
