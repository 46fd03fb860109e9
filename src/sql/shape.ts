// The shape of a SQL text: the text with the contents of its plain literals
// (integers, standard strings) masked. Texts of one shape parse to trees that
// differ only in those constants, so when the facts of one of them were derived
// without reading a constant (watchLiterals proves it on the real tree), every
// text of that shape has the same facts but for `sql`. That lets the simple
// protocol — where clients inline values, and every value is a new text — skip
// the parser for all texts of a shape after the first (facts-cache.ts).
//
// The scanner is deliberately narrow: anything it is not certain to lex exactly
// as PostgreSQL does (comments, dollar quotes, parameters, E''/U&''/B''/X''
// strings, non-integer numbers, non-ASCII outside quotes, control characters)
// makes it give up (null), and the text is parsed as before. Everything outside
// the literals stays in the key verbatim, whitespace included.

export interface SqlShape {
  /** The text with each literal replaced by \0 + its class ('i' integer, 's' string). */
  key: string;
  /** UTF-8 byte offset of each literal token, in order (libpg-query locations are byte offsets). */
  literalBytes: number[];
  /**
   * Byte offset of a '-' directly before the literal (whitespace between is
   * allowed), or -1: PostgreSQL folds `-5` into one constant located at the '-'.
   */
  minusBytes: number[];
}

/** Digits of the longest integer literal masked: 9 always lexes as an int4 constant, never a numeric. */
const MAX_INTEGER_DIGITS = 9;

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isIdentStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
}

function isIdentChar(c: number): boolean {
  return isIdentStart(c) || isDigit(c);
}

/** PostgreSQL's scanner whitespace (scan.l `space`). */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** UTF-8 length of a code unit outside a surrogate pair. */
function utf8Units(c: number): number {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
}

/**
 * End (exclusive) of a quoted run starting at `start` (the opening quote),
 * with doubled quotes as escapes, and its UTF-8 length; null when it is
 * unterminated or holds NUL, a lone surrogate or a control character other
 * than whitespace.
 */
function quoted(sql: string, start: number, quote: number): { end: number; bytes: number } | null {
  let bytes = 1;
  for (let j = start + 1; j < sql.length; j++) {
    const c = sql.charCodeAt(j);
    if (c === quote) {
      if (sql.charCodeAt(j + 1) === quote) {
        j++;
        bytes += 2;
        continue;
      }
      return { end: j + 1, bytes: bytes + 1 };
    }
    if (c < 0x20 && !isSpace(c)) return null;
    if (c >= 0xd800 && c <= 0xdfff) {
      const low = sql.charCodeAt(j + 1);
      if (c > 0xdbff || !(low >= 0xdc00 && low <= 0xdfff)) return null;
      j++;
      bytes += 4;
      continue;
    }
    bytes += utf8Units(c);
  }
  return null;
}

/** The shape of `sql`, or null when the text holds anything the scanner does not lex with certainty. */
export function sqlShape(sql: string): SqlShape | null {
  const n = sql.length;
  const literalBytes: number[] = [];
  const minusBytes: number[] = [];
  let key = '';
  let copied = 0; // sql[copied, i) is still to be appended to key verbatim
  let bytes = 0; // UTF-8 offset of sql[i]
  let lastMinus = -1; // byte offset of the last significant character if it was '-'
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      bytes++;
      continue;
    }
    if (c === 0x27 /* ' */) {
      // A prefix glued to the quote makes another kind of string (E'', U&'', B'', X'', N'').
      const prev = i > 0 ? sql.charCodeAt(i - 1) : 0x20;
      if (isIdentChar(prev) || prev === 0x26 /* & */ || prev === 0x27) return null;
      const q = quoted(sql, i, 0x27);
      if (q === null) return null;
      if (q.end < n && isIdentChar(sql.charCodeAt(q.end))) return null;
      key += `${sql.slice(copied, i)}\0s`;
      literalBytes.push(bytes);
      minusBytes.push(lastMinus);
      bytes += q.bytes;
      i = q.end;
      copied = i;
      lastMinus = -1;
      continue;
    }
    if (isDigit(c)) {
      // `.5` is a numeric constant starting at the dot.
      if (i > 0 && sql.charCodeAt(i - 1) === 0x2e /* . */) return null;
      let j = i + 1;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      if (j - i > MAX_INTEGER_DIGITS) return null;
      // 1.5, 1e5, 0x1F, 1_000, 123abc: not a plain integer (or lexed differently by versions).
      if (j < n) {
        const next = sql.charCodeAt(j);
        if (isIdentChar(next) || next === 0x2e || next === 0x24 /* $ */ || next >= 0x80) return null;
      }
      key += `${sql.slice(copied, i)}\0i`;
      literalBytes.push(bytes);
      minusBytes.push(lastMinus);
      bytes += j - i;
      i = j;
      copied = i;
      lastMinus = -1;
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentChar(sql.charCodeAt(j))) j++;
      // $ inside an identifier, or high-bit identifier characters: leave to the parser.
      if (j < n && (sql.charCodeAt(j) === 0x24 || sql.charCodeAt(j) >= 0x80)) return null;
      bytes += j - i;
      i = j;
      lastMinus = -1;
      continue;
    }
    if (c === 0x22 /* " */) {
      const q = quoted(sql, i, 0x22);
      if (q === null) return null;
      bytes += q.bytes;
      i = q.end;
      lastMinus = -1;
      continue;
    }
    const next = i + 1 < n ? sql.charCodeAt(i + 1) : 0;
    // Comments, dollar quotes and parameters, backslashes, controls, anything non-ASCII.
    if ((c === 0x2d && next === 0x2d) || (c === 0x2f && next === 0x2a) || c === 0x24 || c === 0x5c || c < 0x20 || c >= 0x7f) return null;
    lastMinus = c === 0x2d /* - */ ? bytes : -1;
    i++;
    bytes++;
  }
  if (literalBytes.length === 0) return null;
  key += sql.slice(copied);
  return { key, literalBytes, minusBytes };
}

type Obj = Record<string, unknown>;

/** What watchLiterals found: `read` turns true when anything reads a watched constant's value. */
export interface LiteralWatch {
  read: boolean;
}

/**
 * Find the A_Const node of every literal of `shape` in a statement's raw tree
 * and make reading its value observable. Null when a literal is not an
 * A_Const at its location (the grammar put its value somewhere else — a
 * FETCH count, a COPY file name, string concatenation): facts might depend
 * on it, so the shape must not stand for the text.
 */
export function watchLiterals(tree: unknown, shape: SqlShape): LiteralWatch | null {
  const consts = new Map<number, Obj | null>();
  try {
    collectConsts(tree, consts);
  } catch {
    return null; // a tree too deep to walk here: no shortcut for it
  }
  const watch: LiteralWatch = { read: false };
  const used = new Set<Obj>();
  for (let k = 0; k < shape.literalBytes.length; k++) {
    const minus = shape.minusBytes[k] as number;
    const at = consts.get(shape.literalBytes[k] as number);
    const node = at !== undefined ? at : minus >= 0 ? consts.get(minus) : undefined;
    if (node === undefined || node === null || used.has(node)) return null;
    used.add(node);
    for (const field of Object.keys(node)) {
      if (field === 'location') continue;
      const value = node[field];
      Object.defineProperty(node, field, {
        enumerable: true,
        configurable: true,
        get(): unknown {
          watch.read = true;
          return value;
        },
      });
    }
  }
  return watch;
}

/** A_Const nodes by location; null where two share one (a copied node: which one is read is unknowable here). */
function collectConsts(value: unknown, out: Map<number, Obj | null>): void {
  if (typeof value !== 'object' || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) collectConsts(item, out);
    return;
  }
  const obj = value as Obj;
  for (const k in obj) {
    const v = obj[k];
    if (k === 'A_Const' && typeof v === 'object' && v !== null) {
      const location = (v as Obj)['location'];
      if (typeof location === 'number') out.set(location, out.has(location) ? null : (v as Obj));
      continue;
    }
    collectConsts(v, out);
  }
}
