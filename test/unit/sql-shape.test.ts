// Shapes (src/sql/shape.ts) and the shape cache behind FactsCache: texts that
// differ only in inlined literals share facts without a parse — but only when
// the parser proved the facts never read those literals. The oracle everywhere
// is a fresh parseStatements() of the same text.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { FactsCache, factsTemplate } from '../../src/sql/facts-cache.ts';
import { initParser, parseStatements } from '../../src/sql/parser.ts';
import { sqlShape } from '../../src/sql/shape.ts';

before(async () => {
  await initParser();
});

describe('sqlShape', () => {
  test('masks integers and standard strings, keeps everything else verbatim', () => {
    const shape = sqlShape("SELECT a FROM t WHERE id = 42 AND name = 'it''s' ;\n");
    assert.ok(shape !== null);
    assert.equal(shape.key, 'SELECT a FROM t WHERE id = \0i AND name = \0s ;\n');
    assert.deepEqual(shape.literalBytes, [27, 41]);
    assert.deepEqual(shape.minusBytes, [-1, -1]);
  });

  test('byte offsets count UTF-8 inside strings and quoted names; a minus before a literal is noted', () => {
    const shape = sqlShape('SELECT "é" , \'ü\', - 5, x-6');
    assert.ok(shape !== null);
    // "é" is 4 bytes, 'ü' 4 bytes.
    assert.deepEqual(shape.literalBytes, [14, 22, 27]);
    assert.deepEqual(shape.minusBytes, [-1, 20, 26]);
  });

  test('gives up on everything it does not lex with certainty', () => {
    const refused = [
      'SELECT 1 -- c',
      'SELECT 1 /* c */',
      'SELECT $1',
      'SELECT $$x$$',
      "SELECT E'\\n'",
      "SELECT U&'d\\0061t'",
      "SELECT B'101'",
      "SELECT X'1F'",
      "SELECT N'x'",
      'SELECT 1.5',
      'SELECT .5',
      'SELECT 1e5',
      'SELECT 0x1F',
      'SELECT 1_000',
      'SELECT 123abc',
      'SELECT 1234567890',
      'SELECT a$b, 1',
      'SELECT 1 FROM tbl\u00e9',
      "SELECT 'unterminated",
      'SELECT "unterminated, 1',
      'SELECT 1\u0000',
      "SELECT '\ud800'",
      "SELECT '\udc00\ud800'",
      'SELECT 1 \\g',
      "SELECT 'a'b",
      'SELECT a', // no literal: nothing to share
    ];
    for (const sql of refused) assert.equal(sqlShape(sql), null, JSON.stringify(sql));
  });
});

/** Fill every literal slot of a template: ?i an integer, ?s a string literal. */
function fill(template: string, ints: readonly number[], strings: readonly string[]): string {
  let i = 0;
  let s = 0;
  return template.replace(/\?([is])/g, (_m, kind: string) => (kind === 'i' ? String(ints[i++ % ints.length]) : `'${(strings[s++ % strings.length] as string).replaceAll("'", "''")}'`));
}

const VALUES_A = { ints: [1, 42, 7], strings: ['a', 'bob', 'x y'] };
const VALUES_B = { ints: [999999999, 0, 31337], strings: ["it's", 'DELETE FROM t; --', '/* $$ */ é🐘\n;'] };

describe('the shape cache', () => {
  // Facts that cannot depend on the literals, and facts that do or might.
  const shared = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = ?i;',
    'UPDATE pgbench_accounts SET abalance = abalance + -?i WHERE aid = ?i;',
    'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (?i, ?i, ?i, ?i, CURRENT_TIMESTAMP);',
    'SELECT * FROM t WHERE a IN (?i, ?i) AND b LIKE ?s LIMIT ?i OFFSET ?i',
    'SELECT ?s::text, - ?i, ?i-?i',
    'BEGIN ISOLATION LEVEL SERIALIZABLE; ',
  ];
  const dependent = [
    'SELECT set_config(?s, ?s, false)', // the parameter name is a literal
    "SELECT set_config('role', ?s, false)",
    'COPY t TO ?s', // the file name is no constant node
    'FETCH ?i FROM c', // nor is a FETCH count
    "SELECT ?s\n?s", // adjacent strings are concatenated into one constant
    'CREATE TABLE f (a float(?i))', // the precision picks the type
    'PREPARE p AS SELECT ?i', // session bookkeeping holds the inner text
    'EXECUTE p(?i)',
    'DECLARE c CURSOR FOR SELECT ?i',
    'SELECT ?i; DELETE FROM t WHERE id = ?i', // two statements
  ];

  test('texts of a shared shape get the same facts as a fresh parse, without parsing', () => {
    for (const template of shared.filter((t) => t.includes('?'))) {
      const cache = new FactsCache(100);
      const first = fill(template, VALUES_A.ints, VALUES_A.strings);
      const second = fill(template, VALUES_B.ints, VALUES_B.strings);
      assert.deepEqual(cache.get(first), parseStatements(first), first);
      const got = cache.get(second);
      assert.equal(cache.shapeHits, 1, `${second} is answered by its shape`);
      assert.deepEqual(got, parseStatements(second), second);
      assert.ok(Object.isFrozen(got));
      assert.ok(got.ok);
      const facts = got.statements[0]!.facts;
      assert.ok(Object.isFrozen(facts));
      // One template per shape: caches keyed on facts without the text share an entry.
      const firstParsed = cache.get(first);
      assert.ok(firstParsed.ok);
      assert.equal(factsTemplate(facts), firstParsed.statements[0]!.facts);
    }
  });

  test('texts whose facts depend (or might) on a literal are parsed every time', () => {
    for (const template of dependent) {
      const cache = new FactsCache(100);
      const first = fill(template, VALUES_A.ints, VALUES_A.strings);
      const second = fill(template, VALUES_B.ints, VALUES_B.strings);
      assert.deepEqual(cache.get(first), parseStatements(first), first);
      assert.deepEqual(cache.get(second), parseStatements(second), second);
      assert.equal(cache.shapeHits, 0, template);
      assert.equal(cache.misses, 2, template);
    }
  });

  test('the set_config parameter literal changes the facts: the shape never stands for it', () => {
    const cache = new FactsCache(100);
    const a = cache.get("SELECT set_config('application_name', 'x', false)");
    const b = cache.get("SELECT set_config('role', 'x', false)");
    assert.ok(a.ok && b.ok);
    assert.equal(a.statements[0]!.facts.parameter, 'application_name');
    assert.equal(b.statements[0]!.facts.parameter, 'role');
  });

  test('a derived statement text is the statement without its terminator, as the parser slices it', () => {
    const cache = new FactsCache(100);
    cache.get('  SELECT 1 FROM t WHERE a = 2 ;  ');
    const got = cache.get('  SELECT 10 FROM t WHERE a = 20 ;  ');
    assert.equal(cache.shapeHits, 1);
    assert.ok(got.ok);
    assert.equal(got.statements[0]!.facts.sql, 'SELECT 10 FROM t WHERE a = 20');
  });

  test('bounded, like the exact-text cache', () => {
    const cache = new FactsCache(3);
    for (let i = 0; i < 20; i++) cache.get(`SELECT c${i} FROM t WHERE a = 1`);
    assert.ok(cache.shapeCount <= 3);
    cache.clear();
    assert.equal(cache.shapeCount, 0);
  });
});
