// Security class 7 (docs/security.md) — transactions and reloads. A denial
// inside a transaction leaves it unable to commit; a policy reload or a
// maintenance-window edge in the middle of a session applies to the very next
// statement, including the next execution of a statement prepared (SQL PREPARE
// or Parse) before it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { bind, execute, message, parse, query, sync, type RawClient } from '../helpers/raw-client.ts';
import {
  assertDenied,
  assertOk,
  assertUsable,
  editJson,
  policyCopy,
  Probe,
  reload,
  reply,
  roundTrip,
  session,
  simple,
  sleep,
  values,
  withPolicyDir,
  type Reply,
} from '../helpers/security.ts';

const P = 'sec_tx_probe';
const probe = new Probe(P);

before(async () => {
  await ensureDemoDatabase();
  await probe.create();
});

function commandTag(r: Reply): string | undefined {
  return r.messages.find((m) => m.type === 'C')?.body.toString('utf8').replace(/\0$/, '');
}

async function v1(): Promise<string | undefined> {
  const rows = await adminQuery<{ v: string }>(`SELECT v FROM ${P} WHERE id = 1`, 'app');
  return rows[0]?.v;
}

describe('a denial inside a transaction', () => {
  let proxy: RunningProxy;
  before(async () => {
    proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2 }));
  });
  after(async () => {
    await proxy?.stop();
    await probe.reset();
  });

  for (const end of ['COMMIT', 'END', 'COMMIT WORK', 'COMMIT AND NO CHAIN']) {
    test(`simple Query: the transaction is aborted; ${end} rolls back the earlier write`, async () => {
      const c = await session(proxy.port, 'writer');
      try {
        assertOk(await simple(c, 'BEGIN'), 'T');
        assertOk(await simple(c, `UPDATE ${P} SET v = 'in-tx' WHERE id = 1`), 'T');
        assertDenied(await simple(c, `DROP TABLE ${P}`), 'no-ddl-outside-admin', 'E');
        // Anything but ROLLBACK is refused by the server now.
        assert.deepEqual((await simple(c, `UPDATE ${P} SET v = 'after' WHERE id = 2`)).errors.map((e) => e.get('C')), ['25P02']);
        const r = await simple(c, end);
        assertOk(r);
        assert.equal(commandTag(r), 'ROLLBACK');
        await assertUsable(c);
      } finally {
        c.end();
      }
      assert.equal(await v1(), 'one');
    });
  }

  test('COMMIT AND CHAIN after a denial rolls back too', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `UPDATE ${P} SET v = 'chained' WHERE id = 1`), 'T');
      assertDenied(await simple(c, `GRANT ALL ON ${P} TO PUBLIC`), 'no-dcl-outside-admin', 'E');
      const r = await simple(c, 'COMMIT AND CHAIN');
      assert.notEqual(commandTag(r), 'COMMIT');
      await simple(c, 'ROLLBACK');
    } finally {
      c.end();
    }
    assert.equal(await v1(), 'one');
  });

  test('the whole transaction in one Query with a denied statement: nothing is forwarded, no transaction is left open', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertDenied(await simple(c, `BEGIN; UPDATE ${P} SET v = 'one-query' WHERE id = 1; DROP TABLE ${P}; COMMIT`), 'no-ddl-outside-admin', 'I');
      await assertUsable(c);
    } finally {
      c.end();
    }
    assert.equal(await v1(), 'one');
  });

  test('BEGIN, a write, a denial and COMMIT pipelined as four Queries in one write', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      c.write(Buffer.concat([query('BEGIN'), query(`UPDATE ${P} SET v = 'pipelined' WHERE id = 1`), query(`CREATE TABLE ${P}_evil (i int)`), query('COMMIT')]));
      const replies: Reply[] = [];
      for (let i = 0; i < 4; i++) replies.push(reply(await c.readUntil('Z')));
      assert.deepEqual(replies.map((r) => r.status), ['T', 'T', 'E', 'I']);
      assertDenied(replies[2]!, 'no-ddl-outside-admin', 'E');
      assert.equal(commandTag(replies[3]!), 'ROLLBACK');
    } finally {
      c.end();
    }
    assert.equal(await v1(), 'one');
  });

  test('extended protocol: BEGIN … COMMIT in one pipeline with a denied Parse: the COMMIT is skipped, the transaction is aborted', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      const r = await roundTrip(
        c,
        Buffer.concat([
          parse('', 'BEGIN'), bind('', ''), execute(),
          parse('', `UPDATE ${P} SET v = 'ext' WHERE id = 1`), bind('', ''), execute(),
          parse('', `DROP TABLE ${P}`), bind('', ''), execute(),
          parse('', 'COMMIT'), bind('', ''), execute(),
          sync(),
        ]),
      );
      assert.equal(r.types, '12C12CEZ');
      assert.equal(r.status, 'E');
      assert.equal(commandTag(await simple(c, 'COMMIT')), 'ROLLBACK');
    } finally {
      c.end();
    }
    assert.equal(await v1(), 'one');
  });

  test('a FunctionCall, a parse error and invalid UTF-8 inside a transaction abort it too', async () => {
    const refusals: Array<[string, Buffer]> = [
      ['FunctionCall', message('F', Buffer.from([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]))],
      ['parse error', query('SELEKT 1')],
      ['invalid UTF-8', message('Q', Buffer.from([0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0xc0, 0xaf, 0x27, 0]))],
    ];
    for (const [label, bytes] of refusals) {
      const c = await session(proxy.port, 'writer');
      try {
        assertOk(await simple(c, 'BEGIN'), 'T');
        assertOk(await simple(c, `UPDATE ${P} SET v = 'tx-${label}' WHERE id = 1`), 'T');
        const r = await roundTrip(c, bytes);
        assert.equal(r.types, 'EZ', label);
        assert.equal(r.status, 'E', `${label}: the transaction is aborted`);
        assert.equal(commandTag(await simple(c, 'COMMIT')), 'ROLLBACK', label);
      } finally {
        c.end();
      }
      assert.equal(await v1(), 'one', label);
    }
  });

  test('legitimate: ROLLBACK TO SAVEPOINT recovers from a denial as from any error (the denied statement never ran)', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `UPDATE ${P} SET v = 'kept' WHERE id = 1`), 'T');
      assertOk(await simple(c, 'SAVEPOINT s'), 'T');
      assertDenied(await simple(c, `DROP TABLE ${P}`), 'no-ddl-outside-admin', 'E');
      assertOk(await simple(c, 'ROLLBACK TO SAVEPOINT s'), 'T');
      const r = await simple(c, 'COMMIT');
      assert.equal(commandTag(r), 'COMMIT');
    } finally {
      c.end();
    }
    assert.equal(await v1(), 'kept');
    const tables = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_class WHERE relname = '${P}'`, 'app');
    assert.equal(tables[0]?.n, '1');
    await probe.reset();
  });
});

describe('a policy reload in the middle of a session', () => {
  let proxy: RunningProxy;
  let dir: string;

  async function demoteWriter(): Promise<void> {
    editJson(`${dir}/data.json`, (data: { roles: Record<string, { kind: string }> }) => {
      data.roles['app_writer'] = { kind: 'reader' };
    });
    await reload(proxy);
  }
  async function restoreWriter(): Promise<void> {
    editJson(`${dir}/data.json`, (data: { roles: Record<string, { kind: string }> }) => {
      data.roles['app_writer'] = { kind: 'writer' };
    });
    await reload(proxy);
  }

  before(async () => {
    dir = policyCopy();
    proxy = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 2 }), dir));
  });
  after(async () => {
    await proxy?.stop();
    await probe.reset();
  });

  test('inside an open transaction: the very next statement is decided by the new policy, and COMMIT rolls back', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `UPDATE ${P} SET v = 'before-reload' WHERE id = 1`), 'T');
      await demoteWriter();
      assertDenied(await simple(c, `UPDATE ${P} SET v = 'after-reload' WHERE id = 2`), 'read-only-role', 'E');
      assert.equal(commandTag(await simple(c, 'COMMIT')), 'ROLLBACK');
      // Reads go on under the new policy.
      assert.deepEqual(values(await simple(c, `SELECT v FROM ${P} WHERE id = 1`)), ['one']);
    } finally {
      c.end();
      await restoreWriter();
    }
  });

  test('statements prepared before the reload are decided again at their next execution (EXECUTE and Bind)', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, `PREPARE upd AS UPDATE ${P} SET v = 'prepared' WHERE id = 1`));
      assert.equal((await roundTrip(c, Buffer.concat([parse('upd2', `UPDATE ${P} SET v = 'parsed' WHERE id = 1`), sync()]))).types, '1Z');
      await demoteWriter();
      assertDenied(await simple(c, 'EXECUTE upd'), 'read-only-role');
      assertDenied(await simple(c, 'EXPLAIN ANALYZE EXECUTE upd'), 'read-only-role');
      assertDenied(await roundTrip(c, Buffer.concat([bind('', 'upd'), execute(), sync()])), 'read-only-role');
      assertDenied(await roundTrip(c, Buffer.concat([bind('', 'upd2'), execute(), sync()])), 'read-only-role');
      await assertUsable(c);
    } finally {
      c.end();
      await restoreWriter();
    }
    assert.equal(await v1(), 'one');
  });

  test('a reload that removes the service: the next statement of its open session is refused', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, 'SELECT 1'));
      editJson(`${dir}/data.json`, (data: { services: Record<string, unknown> }) => {
        delete data.services['reporting-svc'];
      });
      await reload(proxy);
      assertDenied(await simple(c, 'SELECT 1'), 'unknown-service');
    } finally {
      c.end();
      editJson(`${dir}/data.json`, (data: { services: Record<string, unknown> }) => {
        data.services['reporting-svc'] = { env: 'prod', roles: ['app_reader'], default_role: 'app_reader', databases: ['app', 'analytics'], cidrs: ['127.0.0.0/8', '::1/128'] };
      });
      await reload(proxy);
    }
  });

  // A statement name whose earlier Parse or PREPARE the server rejected (or
  // skipped) keeps rolegate's record of that earlier text; a later, different
  // statement under the same name is then re-decided as the old text after a
  // reload. Likewise a Close the server skipped after an error makes rolegate
  // forget a statement the server still has, and a Bind to it is forwarded
  // without any decision.
  const staleCases: Array<[string, (c: RawClient) => Promise<void>]> = [
    [
      'SQL PREPARE after a PREPARE of the same name that the server rejected',
      async (c) => {
        assert.deepEqual((await simple(c, 'PREPARE stale AS SELECT * FROM no_such_table')).errors.map((e) => e.get('C')), ['42P01']);
        assertOk(await simple(c, `PREPARE stale AS UPDATE ${P} SET v = 'stale' WHERE id = 1`));
      },
    ],
    [
      'Parse after a Parse of the same name that the server rejected',
      async (c) => {
        assert.deepEqual((await roundTrip(c, Buffer.concat([parse('stale', 'SELECT * FROM no_such_table'), sync()]))).errors.map((e) => e.get('C')), ['42P01']);
        assert.equal((await roundTrip(c, Buffer.concat([parse('stale', `UPDATE ${P} SET v = 'stale' WHERE id = 1`), sync()]))).types, '1Z');
      },
    ],
    [
      'a Close the server skipped because of an earlier error in the pipeline',
      async (c) => {
        assert.equal((await roundTrip(c, Buffer.concat([parse('stale', `UPDATE ${P} SET v = 'stale' WHERE id = 1`), sync()]))).types, '1Z');
        const r = await roundTrip(c, Buffer.concat([parse('', 'SELECT 1/0'), bind('', ''), execute(), message('C', 'Sstale\0'), sync()]));
        assert.deepEqual(r.errors.map((e) => e.get('C')), ['22012']);
      },
    ],
  ];
  for (const [label, setUp] of staleCases) {
    test(
      `after a reload, no stale record lets a write through: ${label}`,
      async () => {
        const c = await session(proxy.port, 'writer');
        try {
          await setUp(c);
          await demoteWriter();
          if (label.startsWith('SQL')) assertDenied(await simple(c, 'EXECUTE stale'), 'read-only-role');
          assertDenied(await roundTrip(c, Buffer.concat([bind('', 'stale'), execute(), sync()])), /rolegate rule "(read-only-role|unknown-prepared-statement)"/);
        } finally {
          c.end();
          await restoreWriter();
          const changed = (await v1()) !== 'one';
          await probe.reset();
          assert.equal(changed, false, 'the stale statement ran its UPDATE after the reload');
        }
      },
    );
  }
});

describe('a maintenance-window edge in the middle of a session', () => {
  // The shipped data has a Sunday 03:00–03:30 UTC read-only window for writes.
  // time.fixed starts the proxy's clock at that instant; it then advances in
  // real time. The same write is sent again and again (a cached decision would
  // keep allowing it) until it flips.
  const poll = async (c: RawClient, sql: string, wantDenied: boolean, deadlineMs: number): Promise<number> => {
    let n = 0;
    for (;;) {
      const r = await simple(c, sql);
      n++;
      const isDenied = r.errors.some((e) => e.get('C') === '42501');
      if (isDenied === wantDenied) return n;
      assert.ok(Date.now() < deadlineMs, `the edge did not come in time (${n} tries)`);
      await sleep(100);
    }
  };

  test('entering the window: the first write after 03:00 is refused, also for statements prepared before, and an open transaction cannot commit', async () => {
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: 'time: { fixed: "2026-11-29T02:59:52Z" }\n' }));
    const c = await session(proxy.port, 'writer');
    const tx = await session(proxy.port, 'writer');
    try {
      const noop = `UPDATE ${P} SET v = v WHERE id = 0`;
      assertOk(await simple(c, noop), 'I', 'before the window a write is allowed');
      assertOk(await simple(c, `PREPARE w AS UPDATE ${P} SET v = 'window' WHERE id = 1`));
      assert.equal((await roundTrip(c, Buffer.concat([parse('w2', `UPDATE ${P} SET v = 'window2' WHERE id = 1`), sync()]))).types, '1Z');
      assertOk(await simple(tx, 'BEGIN'), 'T');
      assertOk(await simple(tx, `UPDATE ${P} SET v = 'tx-before-edge' WHERE id = 2`), 'T');
      const tries = await poll(c, noop, true, Date.now() + 20_000);
      assert.ok(tries > 1, 'the write was allowed at least once before the edge');
      assertDenied(await simple(c, noop), 'maintenance-window');
      assertDenied(await simple(c, 'EXECUTE w'), 'maintenance-window');
      assertDenied(await roundTrip(c, Buffer.concat([bind('', 'w2'), execute(), sync()])), 'maintenance-window');
      assertOk(await simple(c, `SELECT count(*) FROM ${P}`), 'I', 'reads go on in the window');
      assertDenied(await simple(tx, `UPDATE ${P} SET v = 'tx-after-edge' WHERE id = 3`), 'maintenance-window', 'E');
      assert.equal(commandTag(await simple(tx, 'COMMIT')), 'ROLLBACK');
    } finally {
      c.end();
      tx.end();
      await proxy.stop();
    }
    const rows = await adminQuery<{ s: string }>(`SELECT string_agg(v, ',' ORDER BY id) AS s FROM ${P}`, 'app');
    assert.equal(rows[0]?.s, 'one,two,three');
  });

  test(
    'a decision-cache bucket never outlives a window edge: a bucket_ms that does not divide a minute is refused, or the edge still applies',
    async () => {
      const dir = policyCopy();
      editJson(`${dir}/data.json`, (data: { maintenance_windows: unknown[] }) => {
        data.maintenance_windows = [{ name: 'odd-edge', weekdays: ['Sunday'], start: '03:02', end: '03:30' }];
      });
      const config = withPolicyDir(demoConfig({ withPolicy: true, workers: 1, extra: 'time: { fixed: "2026-11-29T03:01:56Z", bucket_ms: 300000 }\n' }), dir);
      const started = await startProxy(config).then(
        (p) => ({ proxy: p, refusal: null }),
        (e: unknown) => ({ proxy: null, refusal: e instanceof Error ? e.message : String(e) }),
      );
      if (started.proxy === null) {
        assert.match(started.refusal ?? '', /bucket_ms/, 'refused because of the bucket');
        return;
      }
      const proxy = started.proxy;
      const c = await session(proxy.port, 'writer');
      try {
        const noop = `UPDATE ${P} SET v = v WHERE id = 0`;
        assertOk(await simple(c, noop), 'I', 'before the window');
        await poll(c, noop, true, Date.now() + 9000);
      } finally {
        c.end();
        await proxy.stop();
      }
    },
  );

  test('leaving the window: the first write after 03:30 is allowed again', async () => {
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: 'time: { fixed: "2026-11-29T03:29:52Z" }\n' }));
    const c = await session(proxy.port, 'writer');
    try {
      const noop = `UPDATE ${P} SET v = v WHERE id = 0`;
      assertDenied(await simple(c, noop), 'maintenance-window');
      const tries = await poll(c, noop, false, Date.now() + 20_000);
      assert.ok(tries > 1);
      assertOk(await simple(c, `UPDATE ${P} SET v = 'after-window' WHERE id = 1`));
    } finally {
      c.end();
      await proxy.stop();
      await probe.reset();
    }
  });
});
