// Parse cache (DESIGN §2 step 3): exact SQL text → ParsedText, bounded LRU.
// Facts depend on the text alone, so the text is the whole key; parse errors are
// cached too (a client retrying a bad statement costs one lookup).
// Measured (bench/micro-parse.ts): a hit costs well under 1 µs against 15–80 µs for
// an OLTP parse + walk. Recency uses Map insertion order: a hit re-inserts the key.

import { parseStatements, type ParsedText } from './parser.ts';

/** Texts longer than this are parsed every time rather than pinned in memory. */
export const DEFAULT_MAX_CACHED_SQL_CHARS = 64 * 1024;

/**
 * Cached results are shared by every session of the worker: a stray write must throw,
 * not change later decisions. Measured ~2 µs per miss for an OLTP statement (~20
 * objects), paid only on a miss (itself 7–35 µs); hits are untouched.
 */
function deepFreeze(value: object): void {
  Object.freeze(value);
  const record = value as Record<string, unknown>;
  for (const k in record) {
    const v = record[k];
    if (typeof v === 'object' && v !== null) deepFreeze(v);
  }
}

export class FactsCache {
  readonly maxEntries: number;
  readonly maxSqlChars: number;
  hits = 0;
  misses = 0;
  private readonly entries = new Map<string, ParsedText>();

  /**
   * @param maxEntries bound on cached texts; 0 disables caching (every get parses).
   * @param maxSqlChars texts longer than this are not cached (memory bound: entries × length).
   */
  constructor(maxEntries: number, maxSqlChars: number = DEFAULT_MAX_CACHED_SQL_CHARS) {
    this.maxEntries = Number.isInteger(maxEntries) && maxEntries > 0 ? maxEntries : 0;
    this.maxSqlChars = maxSqlChars;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Parsed statements of `sql`. The result is shared between callers and frozen:
   * copy before changing (e.g. `{ ...facts, protocol }`).
   */
  get(sql: string): ParsedText {
    const cached = this.entries.get(sql);
    if (cached !== undefined) {
      this.hits++;
      this.entries.delete(sql);
      this.entries.set(sql, cached);
      return cached;
    }
    this.misses++;
    const parsed = parseStatements(sql);
    if (this.maxEntries === 0 || sql.length > this.maxSqlChars) return parsed;
    deepFreeze(parsed);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(sql, parsed);
    return parsed;
  }

  clear(): void {
    this.entries.clear();
  }
}
