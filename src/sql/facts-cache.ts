// Parse cache: exact SQL text → ParsedText, bounded LRU, asked for every
// statement of a Query or Parse before the SQL parser runs.
// Facts depend on the text alone, so the text is the whole key; parse errors are
// cached too (a client retrying a bad statement costs one lookup).
// Measured (bench/micro-parse.ts): a hit costs well under 1 µs against 15–80 µs for
// an OLTP parse + walk. Recency uses Map insertion order: a hit re-inserts the key.
//
// Behind it, a shape cache (shape.ts) for texts that differ only in inlined
// literals — what the simple protocol sends for every new value: when the
// parser proved the facts of one text of a shape independent of its literals,
// every later text of that shape gets those facts (with its own `sql`) without
// parsing. Shape results are not put in the exact cache: re-deriving one costs
// a scan, and a stream of one-off texts would evict texts that needed a parse.

import type { StatementFacts } from './statement-facts.ts';
import { parseShaped, parseStatements, soleStatementText, type ParsedStatement, type ParsedText } from './parser.ts';
import { sqlShape } from './shape.ts';

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

/** Facts derived from a shape → the facts of the shape's first text (factsTemplate). */
const templates = new WeakMap<StatementFacts, StatementFacts>();

/**
 * The facts a shape-derived facts object was copied from (itself otherwise):
 * everything but `sql` is the same, so a cache keyed on facts without the text
 * can key on this one object for every text of the shape.
 */
export function factsTemplate(facts: StatementFacts): StatementFacts {
  return templates.get(facts) ?? facts;
}

/** A shape whose facts depend on its literals (or that cannot stand for its texts). */
const NOT_SHAPEABLE = null;

export class FactsCache {
  readonly maxEntries: number;
  readonly maxSqlChars: number;
  /** Exact-text hits plus shape hits (both skip the parser). */
  hits = 0;
  misses = 0;
  /** Of the hits: texts answered by their shape. */
  shapeHits = 0;
  private readonly entries = new Map<string, ParsedText>();
  private readonly shapes = new Map<string, ParsedStatement | typeof NOT_SHAPEABLE>();

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
    if (this.maxEntries === 0 || sql.length > this.maxSqlChars) {
      this.misses++;
      return parseStatements(sql);
    }
    const shape = sqlShape(sql);
    const known = shape === null ? NOT_SHAPEABLE : this.shapes.get(shape.key);
    let parsed: ParsedText;
    if (shape === null || known === NOT_SHAPEABLE) parsed = parseStatements(sql);
    else if (known !== undefined) {
      this.hits++;
      this.shapeHits++;
      this.shapes.delete(shape.key);
      this.shapes.set(shape.key, known);
      return derive(known, sql);
    } else {
      // The first text of this shape: parse it watching the literals, and remember what the shape may stand for.
      const result = parseShaped(sql, shape);
      parsed = result.parsed;
      this.rememberShape(shape.key, result.literalFree && parsed.ok ? (parsed.statements[0] as ParsedStatement) : NOT_SHAPEABLE, sql);
    }
    this.misses++;
    deepFreeze(parsed);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(sql, parsed);
    return parsed;
  }

  private rememberShape(key: string, stmt: ParsedStatement | typeof NOT_SHAPEABLE, sql: string): void {
    if (this.shapes.size >= this.maxEntries) {
      const oldest = this.shapes.keys().next();
      if (oldest.done !== true) this.shapes.delete(oldest.value);
    }
    // The text slice must be one the shape can reproduce for its other texts.
    this.shapes.set(key, stmt !== NOT_SHAPEABLE && soleStatementText(sql) === stmt.facts.sql ? stmt : NOT_SHAPEABLE);
  }

  get shapeCount(): number {
    return this.shapes.size;
  }

  clear(): void {
    this.entries.clear();
    this.shapes.clear();
  }
}

/** The parse of a text of a known shape: the shape's statement with this text as `sql`. */
function derive(template: ParsedStatement, sql: string): ParsedText {
  const facts: StatementFacts = Object.freeze({ ...template.facts, sql: soleStatementText(sql) });
  templates.set(facts, template.facts);
  return Object.freeze({ ok: true, statements: Object.freeze([Object.freeze({ facts, meta: template.meta })]) }) as ParsedText;
}
