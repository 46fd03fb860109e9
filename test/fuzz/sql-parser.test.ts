// Fuzz (docs/security.md, "Fuzzing"): SQL text → facts. parseStatements must
// never throw, whatever the text, and a write must be reported exactly when the
// text holds one in code position: a generator wraps `DELETE FROM fuzz_t` in
// comments (nested too), standard, escape, Unicode and dollar-quoted strings,
// quoted identifiers — where it is inert — or puts it after a `;` or inside a
// CTE, EXPLAIN ANALYZE, PREPARE or COPY, where it is live. The model says
// which; the facts must agree. (The whole-session fuzz checks the same against
// the server itself.)

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import fc from 'fast-check';
import { MAX_IDENTIFIER_BYTES } from '../../src/sql/identifiers.ts';
import { initParser, parseStatements } from '../../src/sql/parser.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { sqlShape } from '../../src/sql/shape.ts';
import { fuzzBudget } from '../helpers/security.ts';

const budget = fuzzBudget({ runs: 1500, seconds: 3 });
const params = { numRuns: budget.numRuns, interruptAfterTimeLimit: budget.timeLimitMs, ...(budget.seed === undefined ? {} : { seed: budget.seed }) };
const TARGET = 'fuzz_t';

before(async () => {
  await initParser();
});

/** Characters that matter to the lexer, and some that do not. */
const noise = fc
  .array(fc.constantFrom("'", '"', '$', '$$', '$a$', '\\', '/*', '*/', '--', '\n', '\r', ';', ' ', 'x', 'é', '🐘', "E'", "U&'", 'UESCAPE', '(', ')', 'DELETE FROM fuzz_t', "''", '\t'), { maxLength: 12 })
  .map((parts) => parts.join(''));

type Inert = (payload: string) => string;

const inert: Record<string, Inert> = {
  blockComment: (p) => `/* ${p.replaceAll('/*', '/ *').replaceAll('*/', '* /')} */`,
  nestedComment: (p) => `/* outer /* ${p.replaceAll('/*', '/ *').replaceAll('*/', '* /')} */ still outer */`,
  lineComment: (p) => `-- ${p.replace(/[\n\r]/g, ' ')}\n`,
  string: (p) => `'${p.replaceAll("'", "''")}'`,
  escapeString: (p) => `E'${p.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`,
  unicodeString: (p) => `U&'${p.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`,
  unicodeStringUescape: (p) => `U&'${p.replaceAll('!', '!!').replaceAll("'", "''")}' UESCAPE '!'`,
  // A space before the closing tag: content ending in '$' would otherwise fuse with it.
  dollar: (p) => `$q$${p.replaceAll('$', '$ ')} $q$`,
  emptyDollar: (p) => `$$${p.replaceAll('$', '$ ')} $$`,
  quotedAlias: (p) => `AS "${(Array.from(p).slice(0, 20).join('') || 'x').replaceAll('"', '""')}"`,
};

const payload = fc.tuple(noise, noise).map(([a, b]) => `${a}; DELETE FROM ${TARGET}; ${b}`);

/** A SELECT whose text holds the payload only in inert places. */
const inertStatement = fc.tuple(fc.array(fc.tuple(fc.constantFrom(...Object.keys(inert)), payload), { minLength: 1, maxLength: 4 })).map(([parts]) => {
  const pieces = parts.map(([kind, p]) => {
    const wrap = inert[kind]!(p);
    if (kind === 'quotedAlias') return `SELECT 1 ${wrap}`;
    if (kind.endsWith('Comment')) return `SELECT 1 ${wrap}`;
    return `SELECT ${wrap}`;
  });
  return pieces.join(';\n');
});

const live: Array<(inertPart: string) => string> = [
  (i) => `${i}; DELETE FROM ${TARGET}`,
  (i) => `DELETE FROM ${TARGET} WHERE true; ${i}`,
  (i) => `WITH d AS (DELETE FROM ${TARGET} RETURNING 1) SELECT * FROM d, (${i.replace(/^SELECT/, 'SELECT')}) s`,
  (i) => `${i}; EXPLAIN ANALYZE DELETE FROM ${TARGET}`,
  (i) => `${i}; PREPARE p AS DELETE FROM ${TARGET}`,
  (i) => `${i}; COPY (DELETE FROM ${TARGET} RETURNING 1) TO STDOUT`,
  (i) => `${i}; SELECT * FROM (WITH d AS (UPDATE ${TARGET} SET a = 1 RETURNING 1) SELECT * FROM d) s`,
  (i) => `${i} /* a */ ; /* b */ DELETE /* c */ FROM /* d */ ${TARGET}`,
];

function writesTarget(sql: string): boolean | 'error' {
  const parsed = parseStatements(sql);
  if (!parsed.ok) return 'error';
  return parsed.statements.some((s) => s.facts.tables.some((t) => t.name === TARGET && t.access.includes('write')) || s.facts.flags.data_modifying_cte);
}

describe('SQL facts under fuzzing', () => {
  test('parseStatements never throws, on any text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 100 }), noise), (text) => {
        const parsed = parseStatements(text);
        if (!parsed.ok) {
          assert.ok(['RG_PARSE_ERROR', 'RG_NUL_IN_TEXT', 'RG_INVALID_UTF8', 'RG_INTERNAL'].includes(parsed.code));
          return;
        }
        for (const s of parsed.statements) {
          assert.ok(text.includes(s.facts.sql), 'a statement’s text is a slice of the input');
          for (const t of s.facts.tables) assert.ok(Buffer.byteLength(t.name) <= MAX_IDENTIFIER_BYTES);
        }
      }),
      params,
    );
  });

  test('a DELETE in inert positions (comments, strings, quoted names) is no write', () => {
    fc.assert(
      fc.property(inertStatement, (sql) => {
        const verdict = writesTarget(sql);
        assert.notEqual(verdict, 'error', `${JSON.stringify(sql)} should parse`);
        assert.equal(verdict, false, `${JSON.stringify(sql)} holds no live write`);
      }),
      params,
    );
  });

  test('a DELETE in code position is a write, whatever inert text surrounds it', () => {
    fc.assert(
      fc.property(inertStatement, fc.constantFrom(...live.keys()), (inertSql, which) => {
        const sql = live[which]!(inertSql);
        const verdict = writesTarget(sql);
        // A parse error is a denial too (fail closed); otherwise the write must show.
        if (verdict !== 'error') assert.equal(verdict, true, JSON.stringify(sql));
      }),
      params,
    );
  });

  test('byte-level mutations of a hidden-write statement: parse error or facts, never a throw', () => {
    fc.assert(
      fc.property(inertStatement, fc.array(fc.tuple(fc.nat(), fc.string({ unit: 'binary', maxLength: 3 })), { maxLength: 5 }), (sql, edits) => {
        let text = sql;
        for (const [at, s] of edits) {
          const i = at % (text.length + 1);
          text = text.slice(0, i) + s + text.slice(i + 1);
        }
        writesTarget(text);
      }),
      params,
    );
  });

  // The shape cache (facts-cache.ts) answers a text from another text of its
  // shape. Whatever the text, that answer must be what the parser says.
  const literal = fc.oneof(
    fc.integer({ min: 0, max: 999_999_999 }).map(String),
    noise.map((t) => `'${t.replaceAll("'", "''")}'`),
  );
  const piece = fc.oneof(
    { weight: 3, arbitrary: literal },
    {
      weight: 6,
      arbitrary: fc.constantFrom('SELECT', 'FROM', 'fuzz_t', 'WHERE', 'a', '=', '-', '+', ',', '(', ')', '::text', 'AND', 'IN', 'LIMIT', 'OFFSET', 'FETCH', 'COPY fuzz_t TO', 'set_config(', 'nextval(', 'current_setting(', 'SET', 'TO', 'UPDATE fuzz_t SET a =', 'INSERT INTO fuzz_t VALUES (', 'DELETE FROM fuzz_t', 'PREPARE p AS', 'EXECUTE p(', 'DECLARE c CURSOR FOR', 'role', 'search_path', ';', 'interval', 'float(', 'CASE WHEN', 'THEN', 'END', 'NOTIFY x,', 'DO', 'VALUES'),
    },
  );
  const spacing = fc.constantFrom(' ', ' ', '\n', '\t', '');
  const soup = fc.array(fc.tuple(piece, spacing), { minLength: 2, maxLength: 14 }).map((parts) => parts.map(([p, sp]) => p + sp).join(''));
  // Mostly valid statements too, so that many texts really have a shared shape.
  const integer = fc.integer({ min: 0, max: 999_999_999 }).map(String);
  const expr = fc.oneof(
    literal,
    integer.map((i) => `-${i}`),
    literal.map((l) => `${l}::text`),
    fc.tuple(literal, literal).map(([a, b]) => `set_config(${a}, ${b}, false)`),
    literal.map((l) => `nextval(${l})`),
    literal.map((l) => `current_setting(${l})`),
    fc.tuple(literal, literal).map(([a, b]) => `CASE WHEN a = ${a} THEN ${b} END`),
    fc.tuple(literal, spacing, literal).map(([a, sp, b]) => `${a}${sp === '' ? ' ' : sp}${b}`),
    fc.constantFrom('a', 'now()', 'NULL'),
  );
  const exprs = fc.array(expr, { minLength: 1, maxLength: 4 }).map((xs) => xs.join(', '));
  const statement = fc.oneof(
    fc.tuple(exprs, expr).map(([xs, w]) => `SELECT ${xs} FROM fuzz_t WHERE a = ${w}`),
    fc.tuple(exprs, integer, integer).map(([xs, l, o]) => `SELECT ${xs} LIMIT ${l} OFFSET ${o}`),
    fc.tuple(expr, expr).map(([v, w]) => `UPDATE fuzz_t SET a = a + ${v} WHERE a = ${w}`),
    exprs.map((xs) => `INSERT INTO fuzz_t VALUES (${xs})`),
    expr.map((w) => `DELETE FROM fuzz_t WHERE a = ${w}`),
    fc.tuple(fc.constantFrom('search_path', 'role', 'application_name', 'work_mem'), literal).map(([k, v]) => `SET ${k} = ${v}`),
    literal.map((l) => `COPY fuzz_t TO ${l}`),
    integer.map((i) => `FETCH ${i} FROM c`),
    exprs.map((xs) => `PREPARE p AS SELECT ${xs}`),
    exprs.map((xs) => `EXECUTE p(${xs})`),
    fc.tuple(exprs, exprs).map(([a, b]) => `SELECT ${a}; SELECT ${b}`),
  );
  const shapedText = fc.oneof(soup, fc.tuple(statement, fc.constantFrom('', ';', ' ;\n'))).map((x) => (typeof x === 'string' ? x : x[0] + x[1]));

  test('a text answered by its shape has exactly the facts a fresh parse gives', () => {
    let answeredByShape = 0;
    fc.assert(
      fc.property(shapedText, fc.array(literal, { minLength: 1, maxLength: 20 }), (first, refills) => {
        const shape = sqlShape(first);
        if (shape === null) return;
        const cache = new FactsCache(16);
        assert.deepEqual(cache.get(first), parseStatements(first), JSON.stringify(first));
        // Another text of the same shape: each slot refilled with a literal of its class.
        let k = 0;
        const second = shape.key.replace(/\0([is])/g, (_m, kind: string) => {
          for (let j = 0; j < refills.length; j++) {
            const candidate = refills[(k + j) % refills.length] as string;
            if ((kind === 's') === candidate.startsWith("'")) {
              k++;
              return candidate;
            }
          }
          k++;
          return kind === 's' ? "''" : '0';
        });
        assert.equal(sqlShape(second)?.key, shape.key, 'refilled text keeps the shape');
        assert.deepEqual(cache.get(second), parseStatements(second), JSON.stringify([first, second]));
        answeredByShape += cache.shapeHits;
      }),
      params,
    );
    // Not vacuous: some generated texts really were answered by their shape.
    assert.ok(answeredByShape > 0, 'no text was answered by its shape');
  });
});
