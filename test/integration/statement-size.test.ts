// limits.max_statement_bytes through the real proxy and PostgreSQL: a longer
// Query or Parse text is refused (54000, rule statement-too-large) before it
// is parsed or decided — also when a shorter text of the same shape was
// decided first (the answer does not depend on what the caches hold) — and the
// session goes on; a text at the limit runs.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { connect, demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';

const LIMIT = 4096;
let proxy: RunningProxy;

before(async () => {
  await ensureDemoDatabase();
  proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: `limits: { max_statement_bytes: ${LIMIT} }\n` }));
});
after(async () => {
  await proxy?.stop();
});

/** `SELECT length('aaa…')` of exactly `bytes` bytes. */
function statementOf(bytes: number): string {
  const head = "SELECT length('";
  const tail = "')";
  return head + 'a'.repeat(bytes - head.length - tail.length) + tail;
}

async function refusedAsTooLarge(p: Promise<unknown>, bytes: number): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as pg.DatabaseError,
  );
  assert.ok(err, `${bytes} bytes: expected a refusal`);
  assert.equal(err.code, '54000');
  assert.equal(err.message, `statement too large for rolegate: the statement is ${bytes} bytes; limits.max_statement_bytes is ${LIMIT}`);
  assert.match(err.detail ?? '', /^rule: statement-too-large; /);
}

describe('limits.max_statement_bytes', () => {
  test('simple protocol: at the limit it runs; one byte more is refused, after the same shape was decided and run; the session goes on', async () => {
    const c = await connect(proxy.port, 'reporting-svc');
    try {
      const small = await c.query(statementOf(100));
      assert.equal(small.rows[0]?.length, 100 - 17);
      const atLimit = await c.query(statementOf(LIMIT));
      assert.equal(atLimit.rows[0]?.length, LIMIT - 17);
      for (let i = 0; i < 3; i++) await refusedAsTooLarge(c.query(statementOf(LIMIT + 1)), LIMIT + 1);
      await refusedAsTooLarge(c.query(statementOf(10 * LIMIT)), 10 * LIMIT);
      assert.equal((await c.query('SELECT 1 AS one')).rows[0]?.one, 1);
    } finally {
      await c.end();
    }
  });

  test('extended protocol (Parse): refused the same way, and the connection stays usable', async () => {
    const c = await connect(proxy.port, 'reporting-svc');
    try {
      const text = `${statementOf(LIMIT)} + $1::int`;
      const bytes = Buffer.byteLength(text);
      await refusedAsTooLarge(c.query({ text, values: [1] }), bytes);
      const ok = await c.query({ text: "SELECT length('abc') + $1::int AS n", values: [1] });
      assert.equal(ok.rows[0]?.n, 4);
    } finally {
      await c.end();
    }
  });
});

describe('texts too long to cache are parsed off the worker thread', () => {
  let big: RunningProxy;
  before(async () => {
    big = await startProxy(demoConfig({ withPolicy: true, workers: 1 }));
  });
  after(async () => {
    await big?.stop();
  });

  test('allowed, denied and guarded long texts get the same answers as short ones, in order, on one connection and beside another', async () => {
    const c = await connect(big.port, 'reporting-svc');
    const neighbour = await connect(big.port, 'reporting-svc');
    try {
      const long = statementOf(512 * 1024);
      const [r, n] = await Promise.all([c.query(long), neighbour.query('SELECT 42 AS n')]);
      assert.equal(r.rows[0]?.length, 512 * 1024 - 17);
      assert.equal(n.rows[0]?.n, 42);
      // Denied by the policy (a reader's DELETE), by a guard, and extended protocol: decided on the parsed text.
      const padding = `/* ${'p'.repeat(200 * 1024)} */`;
      const denied = await c.query(`DELETE FROM orders WHERE id = -1 ${padding}`).then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.equal(denied?.code, '42501');
      assert.match(denied?.message ?? '', /rule "read-only-role"/);
      const guarded = await c.query(`SELECT set_config('role', 'app_admin', false) ${padding}`).then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.match(guarded?.message ?? '', /rule "guard:role-change"/);
      const ext = await c.query({ text: `SELECT length($1::text) AS n ${padding}`, values: ['abc'] });
      assert.equal(ext.rows[0]?.n, 3);
      // A pipeline of a long text and short ones keeps its order.
      const results = await Promise.all([c.query(statementOf(300 * 1024)), c.query('SELECT 1 AS one'), c.query(statementOf(200 * 1024))]);
      assert.deepEqual(
        results.map((x) => x.rows[0]),
        [{ length: 300 * 1024 - 17 }, { one: 1 }, { length: 200 * 1024 - 17 }],
      );
    } finally {
      await c.end();
      await neighbour.end();
    }
  });
});
