// docs/metrics.md documents every metric of src/metrics/definitions.ts and no other.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { METRICS } from '../../src/metrics/definitions.ts';
import { BEGIN_MARKER, DOC_PATH, END_MARKER, renderMetricsTable, spliceTable } from '../../src/metrics/docs.ts';

const doc = readFileSync(DOC_PATH, 'utf8');

test('every metric in definitions.ts has a row in docs/metrics.md, and every documented rolegate_ metric exists', () => {
  const documented = new Set([...doc.matchAll(/^\| `(rolegate_[a-z0-9_]+)` \|/gm)].map((m) => m[1]));
  const defined = new Set(METRICS.map((m) => m.name));
  assert.deepEqual([...defined].filter((n) => !documented.has(n)), [], 'defined but not documented');
  assert.deepEqual([...documented].filter((n) => !defined.has(n as (typeof METRICS)[number]['name'])), [], 'documented but not defined');
});

test('the generated table is current (regenerate with `node src/metrics/docs.ts`)', () => {
  const begin = doc.indexOf(BEGIN_MARKER);
  const end = doc.indexOf(END_MARKER);
  assert.ok(begin >= 0 && end > begin, 'markers present');
  assert.equal(doc.slice(begin, end + END_MARKER.length), renderMetricsTable());
  assert.equal(spliceTable(doc, renderMetricsTable()), doc);
});

test('definitions follow Prometheus naming conventions', () => {
  const names = new Set<string>();
  for (const m of METRICS) {
    assert.ok(!names.has(m.name), `unique: ${m.name}`);
    names.add(m.name);
    assert.match(m.name, /^rolegate_[a-z][a-z0-9_]*[a-z0-9]$/);
    if (m.type === 'counter') assert.match(m.name, /_total$/, `${m.name}: counters end in _total`);
    else assert.doesNotMatch(m.name, /_total$/, `${m.name}: only counters end in _total`);
    if (m.type === 'histogram') {
      assert.match(m.name, /_seconds$/, `${m.name}: base unit`);
      const b = (m as { buckets?: readonly number[] }).buckets ?? [];
      assert.ok(b.length > 0 && b.every((x, i) => i === 0 || x > b[i - 1]!), `${m.name}: ascending buckets`);
    }
    assert.doesNotMatch(m.name, /_(ms|milliseconds|us|microseconds|kb|mb)(_|$)/, `${m.name}: base units only`);
    assert.ok(m.help.length > 10, `${m.name}: help text`);
    for (const l of m.labels) {
      assert.match(l.name, /^[a-z_][a-z0-9_]*$/);
      assert.notEqual(l.name, 'le');
    }
  }
  const decision = METRICS.find((m) => m.name === 'rolegate_decision_duration_seconds') as { buckets: readonly number[] };
  assert.equal(decision.buckets[0], 1e-6);
  assert.equal(decision.buckets.at(-1), 0.01);
  const query = METRICS.find((m) => m.name === 'rolegate_query_duration_seconds') as { buckets: readonly number[] };
  assert.equal(query.buckets[0], 1e-4);
  assert.equal(query.buckets.at(-1), 30);
});
