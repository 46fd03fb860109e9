// FactsCache: bounded LRU of parse results keyed by exact SQL text.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { initParser } from '../../src/sql/parser.ts';

before(async () => {
  await initParser();
});

test('a miss parses, a hit returns the same result without parsing', () => {
  const cache = new FactsCache(10);
  const first = cache.get('SELECT * FROM t');
  assert.equal(first.ok, true);
  assert.deepEqual([cache.hits, cache.misses, cache.size], [0, 1, 1]);
  const second = cache.get('SELECT * FROM t');
  assert.equal(second, first);
  assert.deepEqual([cache.hits, cache.misses, cache.size], [1, 1, 1]);
});

test('the key is the exact text: case and whitespace differences are different entries', () => {
  const cache = new FactsCache(10);
  cache.get('SELECT 1');
  cache.get('select 1');
  cache.get('SELECT 1 ');
  assert.deepEqual([cache.hits, cache.misses, cache.size], [0, 3, 3]);
});

test('parse errors are cached too', () => {
  const cache = new FactsCache(10);
  const bad = cache.get('SELEC 1');
  assert.equal(bad.ok, false);
  assert.equal(cache.get('SELEC 1'), bad);
  assert.deepEqual([cache.hits, cache.misses], [1, 1]);
});

test('bounded: the least recently used entry is evicted', () => {
  // Texts without literals: no shape stands in for them.
  const cache = new FactsCache(2);
  cache.get('SELECT a'); // miss
  cache.get('SELECT b'); // miss
  cache.get('SELECT a'); // hit: now most recent
  cache.get('SELECT c'); // miss: evicts SELECT b
  assert.equal(cache.size, 2);
  cache.get('SELECT a'); // hit
  cache.get('SELECT b'); // miss again: it was evicted
  assert.deepEqual([cache.hits, cache.misses, cache.size], [2, 4, 2]);
  for (let i = 0; i < 100; i++) cache.get(`SELECT c${i}`);
  assert.equal(cache.size, 2);
  assert.equal(cache.shapeHits, 0);
});

test('maxEntries 0 disables caching; every get parses', () => {
  const cache = new FactsCache(0);
  cache.get('SELECT 1');
  cache.get('SELECT 1');
  assert.deepEqual([cache.hits, cache.misses, cache.size], [0, 2, 0]);
});

test('texts longer than maxSqlChars are parsed but not kept', () => {
  const cache = new FactsCache(10, 20);
  const long = 'SELECT 1 AS aaaaaaaaaaaaaaaaaaaa';
  assert.equal(cache.get(long).ok, true);
  cache.get(long);
  assert.deepEqual([cache.hits, cache.misses, cache.size], [0, 2, 0]);
});

test('cached results are frozen: a stray write throws instead of changing later decisions', () => {
  const cache = new FactsCache(10);
  const parsed = cache.get('DELETE FROM t');
  assert.ok(parsed.ok);
  const facts = parsed.statements[0]?.facts;
  assert.ok(facts !== undefined);
  assert.throws(() => facts.tables.push({ schema: null, name: 'x', access: ['read'] }), TypeError);
  assert.throws(() => {
    (facts as { command: string }).command = 'SELECT';
  }, TypeError);
  const again = cache.get('DELETE FROM t');
  assert.ok(again.ok);
  assert.equal(again.statements[0]?.facts.command, 'DELETE');
  // spreading (how a caller adds `protocol`) still works
  assert.equal({ ...facts, protocol: 'simple' }.command, 'DELETE');
});
