// Security class 5 (docs/security.md) — the extended protocol. A statement is
// decided at Parse and that decision is enforced at Bind/Execute. A denied
// Parse in a pipeline yields exactly one ErrorResponse and one ReadyForQuery,
// and nothing after it runs; statement and portal names reused after Close, an
// unnamed statement replaced between Parse and Execute, a Bind to a statement
// that was never allowed and a Describe of a denied statement run nothing
// either. The probe grants every role everything: only rolegate stands in
// between.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { adminQuery } from '../helpers/pg.ts';
import type { RunningProxy } from '../helpers/proxy.ts';
import { bind, describePortal, execute, flush, message, parse, query, sync, type RawClient } from '../helpers/raw-client.ts';
import {
  assertDenied,
  assertNeverReachedServer,
  assertOk,
  assertUsable,
  backendPid,
  Probe,
  proxyWithProbe,
  reply,
  roundTrip,
  session,
  simple,
  values,
  type Reply,
} from '../helpers/security.ts';

const P = 'sec_ext_probe';
const probe = new Probe(P);
let proxy: RunningProxy;
proxyWithProbe(probe, (p) => (proxy = p));

const closeStatement = (name: string): Buffer => message('C', `S${name}\0`);
const closePortal = (name: string): Buffer => message('C', `P${name}\0`);
const describeStatement = (name: string): Buffer => message('D', `S${name}\0`);

/**
 * The named statement is not there to run: the server says so (26000), or
 * rolegate refuses the Bind because it allowed nothing under that name
 * (42501 unknown-prepared-statement). Either way one ErrorResponse, one
 * ReadyForQuery, nothing executed.
 */
function assertNoStatement(r: Reply): void {
  assert.equal(r.types, 'EZ', `got ${r.types}`);
  const e = r.errors[0]!;
  if (e.get('C') === '42501') assert.match(e.get('M') ?? '', /rolegate rule "unknown-prepared-statement"/);
  else assert.equal(e.get('C'), '26000', e.get('M'));
}

function sqlstates(r: Reply): string[] {
  return r.errors.map((e) => e.get('C') ?? '');
}

async function withSession(kind: 'reader' | 'writer', fn: (c: RawClient) => Promise<void>): Promise<void> {
  const c = await session(proxy.port, kind);
  try {
    const before = await probe.state();
    await fn(c);
    await probe.assertUnchanged(before);
    await assertUsable(c);
  } finally {
    c.end();
  }
}

describe('a denied Parse in a pipeline', () => {
  test('in the middle: the statements before it are rolled back, none after it runs; one E, one Z', () =>
    withSession('writer', async (c) => {
      const r = await roundTrip(
        c,
        Buffer.concat([
          parse('', `UPDATE ${P} SET v = 'first' WHERE id = 1`),
          bind('', ''),
          execute(),
          parse('', `DROP TABLE ${P}`),
          bind('', ''),
          describePortal(''),
          execute(),
          parse('', `UPDATE ${P} SET v = 'third' WHERE id = 2`),
          bind('', ''),
          execute(),
          sync(),
        ]),
      );
      assert.equal(r.types, '12CEZ');
      assertDenied(reply(r.messages.slice(3)), 'no-ddl-outside-admin');
    }));

  test('first in the pipeline', () =>
    withSession('reader', async (c) => {
      const pid = await backendPid(c);
      const r = await roundTrip(c, Buffer.concat([parse('', `DELETE FROM ${P}`), bind('', ''), execute(), parse('', 'SELECT 1'), bind('', ''), execute(), sync()]));
      assertDenied(r, 'read-only-role');
      await assertNeverReachedServer(pid);
    }));

  test('last before Sync', () =>
    withSession('reader', async (c) => {
      const r = await roundTrip(c, Buffer.concat([parse('', 'SELECT 1'), bind('', ''), execute(), parse('', `DELETE FROM ${P}`), bind('', ''), execute(), sync()]));
      assert.equal(r.types, '12DCEZ');
      assert.equal(r.errors[0]?.get('C'), '42501');
    }));

  test('two denied Parses in one pipeline: still exactly one ErrorResponse', () =>
    withSession('reader', async (c) => {
      const r = await roundTrip(c, Buffer.concat([parse('a', `DELETE FROM ${P}`), parse('b', `UPDATE ${P} SET v = 'x'`), bind('', 'b'), execute(), sync()]));
      assertDenied(r, 'read-only-role');
    }));

  test('a denied named Parse: Describe, Bind and Execute of it in the same pipeline are skipped; later they find no statement', () =>
    withSession('reader', async (c) => {
      const r = await roundTrip(c, Buffer.concat([parse('s', `DELETE FROM ${P}`), describeStatement('s'), bind('p', 's'), execute('p'), sync()]));
      assertDenied(r, 'read-only-role');
      assertNoStatement(await roundTrip(c, Buffer.concat([describeStatement('s'), sync()])));
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('p', 's'), execute('p'), sync()])));
    }));

  test('after a denied Parse, Bind/Execute of an earlier allowed unnamed statement in the same pipeline do not run', () =>
    withSession('writer', async (c) => {
      // The unnamed statement is parsed (allowed) but not executed yet.
      const parsed = await roundTrip(c, Buffer.concat([parse('', `UPDATE ${P} SET v = 'earlier' WHERE id = 1`), sync()]));
      assert.equal(parsed.types, '1Z');
      const r = await roundTrip(c, Buffer.concat([parse('s2', `DROP TABLE ${P}`), bind('', ''), execute(), sync()]));
      assertDenied(r, 'no-ddl-outside-admin');
    }));

  test('a denied Parse of the unnamed statement drops the previous unnamed statement, as a failed Parse does', () =>
    withSession('writer', async (c) => {
      assert.equal((await roundTrip(c, Buffer.concat([parse('', `UPDATE ${P} SET v = 'replaced' WHERE id = 1`), sync()]))).types, '1Z');
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `DROP TABLE ${P}`), sync()])), 'no-ddl-outside-admin');
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', ''), execute(), sync()])));
    }));

  test('Flush instead of Sync: the denial arrives at once, the pipeline is skipped up to the Sync that follows', () =>
    withSession('reader', async (c) => {
      c.write(Buffer.concat([parse('', `DELETE FROM ${P}`), flush()]));
      const e = await c.read(5000);
      assert.equal(e?.type, 'E');
      c.write(Buffer.concat([bind('', ''), execute(), flush()]));
      // Nothing for the skipped messages: the next thing is Sync's ReadyForQuery.
      const r = await roundTrip(c, sync());
      assert.equal(r.types, 'Z');
      assert.equal(r.status, 'I');
    }));

  test('legitimate: Flush returns results of allowed messages before Sync', () =>
    withSession('reader', async (c) => {
      c.write(Buffer.concat([parse('', 'SELECT 7'), bind('', ''), execute(), flush()]));
      const got: string[] = [];
      for (let i = 0; i < 4; i++) got.push((await c.read(5000))?.type ?? '-');
      assert.deepEqual(got, ['1', '2', 'D', 'C']);
      assert.equal((await roundTrip(c, sync())).types, 'Z');
    }));

  test('inside an explicit transaction: the transaction is aborted and COMMIT rolls back', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assert.equal((await roundTrip(c, Buffer.concat([parse('', `UPDATE ${P} SET v = 'in-tx' WHERE id = 1`), bind('', ''), execute(), sync()]))).status, 'T');
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `DROP TABLE ${P}`), bind('', ''), execute(), sync()])), 'no-ddl-outside-admin', 'E');
      const r = await roundTrip(c, Buffer.concat([parse('', 'COMMIT'), bind('', ''), execute(), sync()]));
      assert.equal(r.messages.find((m) => m.type === 'C')?.body.toString('utf8').replace(/\0$/, ''), 'ROLLBACK');
    } finally {
      c.end();
    }
    const rows = await adminQuery<{ v: string }>(`SELECT v FROM ${P} WHERE id = 1`, 'app');
    assert.equal(rows[0]?.v, 'one');
  });

  test('Parse of EXECUTE, of several statements, or of a write hidden in a CTE is denied', () =>
    withSession('reader', async (c) => {
      assertDenied(await roundTrip(c, Buffer.concat([parse('', 'EXECUTE never_prepared'), bind('', ''), execute(), sync()])), 'unknown-prepared-statement');
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `SELECT 1; DELETE FROM ${P}`), sync()])), 'read-only-role');
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT * FROM d`), bind('', ''), execute(), sync()])), 'read-only-role');
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `SELECT setval('${P}_seq', $1)`), sync()])), 'read-only-role');
    }));
});

describe('names reused after Close', () => {
  test('a statement name closed and re-parsed as a denied statement runs nothing when bound', () =>
    withSession('reader', async (c) => {
      assert.equal((await roundTrip(c, Buffer.concat([parse('s', 'SELECT 1'), sync()]))).types, '1Z');
      assert.equal((await roundTrip(c, Buffer.concat([closeStatement('s'), sync()]))).types, '3Z');
      assertDenied(await roundTrip(c, Buffer.concat([parse('s', `DELETE FROM ${P}`), sync()])), 'read-only-role');
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', 's'), execute(), sync()])));
    }));

  test('legitimate: a statement name closed and re-parsed with another allowed statement runs the new one', () =>
    withSession('reader', async (c) => {
      await roundTrip(c, Buffer.concat([parse('s', "SELECT 'old'"), sync()]));
      const r = await roundTrip(c, Buffer.concat([closeStatement('s'), parse('s', "SELECT 'new'"), bind('', 's'), execute(), sync()]));
      assert.equal(r.types, '312DCZ');
      assert.deepEqual(values(r), ['new']);
    }));

  test('Parse of a name that still exists is refused by the server (42P05) and the old statement stays', () =>
    withSession('reader', async (c) => {
      await roundTrip(c, Buffer.concat([parse('dup', "SELECT 'first'"), sync()]));
      const again = await roundTrip(c, Buffer.concat([parse('dup', "SELECT 'second'"), sync()]));
      assert.deepEqual(sqlstates(again), ['42P05']);
      const r = await roundTrip(c, Buffer.concat([bind('', 'dup'), execute(), sync()]));
      assert.deepEqual(values(r), ['first']);
    }));

  test('a portal closed and then executed runs nothing', () =>
    withSession('writer', async (c) => {
      assertOk(await simple(c, 'BEGIN'), 'T');
      const r1 = await roundTrip(c, Buffer.concat([parse('w', `UPDATE ${P} SET v = 'portal' WHERE id = 1`), bind('p', 'w'), closePortal('p'), execute('p'), sync()]));
      assert.equal(r1.types, '123EZ');
      assert.deepEqual(sqlstates(r1), ['34000'], 'portal "p" does not exist');
      assertOk(await simple(c, 'ROLLBACK'));
    }));

  test('legitimate: a named portal executed in steps inside a transaction', () =>
    withSession('reader', async (c) => {
      assertOk(await simple(c, 'BEGIN'), 'T');
      const r = await roundTrip(c, Buffer.concat([parse('q', `SELECT id FROM ${P} ORDER BY id`), bind('p', 'q'), execute('p', 2), execute('p', 2), sync()]));
      assert.equal(r.types, '12DDsDCZ');
      assert.deepEqual(values(r), ['1', '2', '3']);
      assertOk(await simple(c, 'COMMIT'));
    }));
});

describe('the unnamed statement replaced between Parse and Execute', () => {
  test('within one pipeline: the portal of the old statement is not executed after the denied replacement', () =>
    withSession('reader', async (c) => {
      const r = await roundTrip(c, Buffer.concat([parse('', 'SELECT 1'), bind('', ''), parse('', `DELETE FROM ${P}`), execute(), sync()]));
      assert.equal(r.types, '12EZ');
      assert.equal(r.errors[0]?.get('C'), '42501');
    }));

  test('across pipelines: Bind after the denied replacement finds no unnamed statement', () =>
    withSession('writer', async (c) => {
      await roundTrip(c, Buffer.concat([parse('', `UPDATE ${P} SET v = 'x' WHERE id = 1`), sync()]));
      assertDenied(await roundTrip(c, Buffer.concat([parse('', `TRUNCATE ${P}; DROP TABLE ${P}`), sync()])), 'no-ddl-outside-admin');
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', ''), execute(), sync()])));
    }));

  test('a simple Query destroys the unnamed statement (in the server and in rolegate)', () =>
    withSession('reader', async (c) => {
      await roundTrip(c, Buffer.concat([parse('', 'SELECT 1'), sync()]));
      assertOk(await simple(c, 'SELECT 2'));
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', ''), execute(), sync()])));
    }));
});

describe('Bind and Describe of statements that were never allowed', () => {
  test('Bind or Describe of a name never parsed: refused, nothing runs', () =>
    withSession('reader', async (c) => {
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', 'never'), execute(), sync()])));
      assertNoStatement(await roundTrip(c, Buffer.concat([describeStatement('never'), sync()])));
      assert.deepEqual(sqlstates(await roundTrip(c, Buffer.concat([execute('no_portal'), sync()]))), ['34000']);
    }));

  test('Bind to a statement whose Parse was denied in an earlier pipeline', () =>
    withSession('reader', async (c) => {
      assertDenied(await roundTrip(c, Buffer.concat([parse('bad', `DELETE FROM ${P}`), sync()])), 'read-only-role');
      assertNoStatement(await roundTrip(c, Buffer.concat([bind('', 'bad'), execute(), sync()])));
      assertNoStatement(await roundTrip(c, Buffer.concat([describeStatement('bad'), sync()])));
    }));

  test('legitimate: SQL PREPARE and the extended protocol share one namespace', () =>
    withSession('reader', async (c) => {
      assertOk(await simple(c, `PREPARE shared AS SELECT count(*) FROM ${P}`));
      const r = await roundTrip(c, Buffer.concat([bind('', 'shared'), execute(), sync()]));
      assert.deepEqual(values(r), ['3']);
      await roundTrip(c, Buffer.concat([parse('from_parse', 'SELECT 5'), sync()]));
      assert.deepEqual(values(await simple(c, 'EXECUTE from_parse')), ['5']);
    }));

  test(
    'Bind to a statement rolegate never saw prepared (made by a function) is refused',
    async () => {
      await adminQuery(`CREATE OR REPLACE FUNCTION ${P}_prepare() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'PREPARE sneaky AS DELETE FROM ${P}'; END $$; GRANT EXECUTE ON FUNCTION ${P}_prepare() TO PUBLIC;`, 'app');
      const c = await session(proxy.port, 'reader');
      try {
        const before = await probe.state();
        assertOk(await simple(c, `SELECT ${P}_prepare()`)); // opaque: a plain SELECT to the policy
        assertDenied(await simple(c, 'EXECUTE sneaky'), 'unknown-prepared-statement');
        const r = await roundTrip(c, Buffer.concat([bind('', 'sneaky'), execute(), sync()]));
        assertDenied(r, 'unknown-prepared-statement');
        await probe.assertUnchanged(before);
      } finally {
        c.end();
        await probe.reset();
      }
    },
  );
});

describe('response accounting after an error inside a pipeline', () => {
  // The server skips everything up to Sync after an error, a Query or a
  // FunctionCall included; rolegate counts a ReadyForQuery for each Query it
  // forwarded. Once off by one, later denials are no longer matched to their
  // stand-in's error: the client gets 42601 "syntax error at or near
  // rolegate_denied_<nonce>" instead of 42501.
  for (const [label, middle] of [
    ['an allowed Query', query('SELECT 1')],
    ['a denied Query', query(`DELETE FROM ${P}`)],
    ['a FunctionCall', message('F', Buffer.from([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]))],
  ] as const) {
    test(
      `${label} after an error in a pipeline: later denials are still 42501 and the session is idle`,
      () =>
        withSession('reader', async (c) => {
          const r = await roundTrip(c, Buffer.concat([parse('', 'SELECT 1/0'), bind('', ''), execute(), middle, sync()]));
          assert.deepEqual(sqlstates(r), ['22012']);
          assertDenied(await simple(c, `DELETE FROM ${P}`), 'read-only-role');
        }),
    );
  }
});
