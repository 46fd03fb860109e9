// Supervisor behaviour with the real CLI: drain on SIGTERM, 57P01 after the
// drain timeout, restart of a crashed worker.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { connect, demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy } from '../helpers/proxy.ts';

describe('proxy lifecycle', () => {
  test('SIGTERM: stop accepting, close idle sessions, let open transactions finish, exit 0 when they are gone', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 2, extra: 'shutdown: { drain_timeout_ms: 20000 }\n' }));
    const session = await connect(proxy.port, 'orders-svc');
    const sessionEnd = new Promise<pg.DatabaseError>((resolve) => session.on('error', (e) => resolve(e as pg.DatabaseError)));
    const idle = await connect(proxy.port, 'orders-svc');
    const idleEnd = new Promise<pg.DatabaseError>((resolve) => idle.on('error', (e) => resolve(e as pg.DatabaseError)));
    await session.query('BEGIN');
    const exit = new Promise<number | null>((resolve) => proxy.child.on('exit', (code) => resolve(code)));
    proxy.child.kill('SIGTERM');
    await proxy.waitForLog((l) => l['msg'] === 'draining');
    await new Promise((r) => setTimeout(r, 200));
    // New connections are refused…
    const late = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'orders-svc', password: 'x', database: 'app', connectionTimeoutMillis: 2000 });
    await assert.rejects(late.connect());
    // …an idle session is closed at once (57P01)…
    assert.equal((await idleEnd).code, '57P01');
    // …while the open transaction keeps working.
    const r = await session.query('SELECT 40 + 2 AS n');
    assert.equal(r.rows[0].n, 42);
    const exitedEarly = await Promise.race([exit.then(() => true), new Promise((r2) => setTimeout(() => r2(false), 300))]);
    assert.equal(exitedEarly, false, 'the proxy waits for the open transaction');
    await session.query('COMMIT');
    // At its end the session is closed too (57P01), and the proxy exits.
    assert.equal((await sessionEnd).code, '57P01');
    assert.equal(await exit, 0);
  });

  test('after the drain timeout remaining sessions get 57P01 and the proxy exits 0', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 2, extra: 'shutdown: { drain_timeout_ms: 500 }\n' }));
    const session = await connect(proxy.port, 'orders-svc');
    const gotError = new Promise<pg.DatabaseError>((resolve) => session.on('error', (e) => resolve(e as pg.DatabaseError)));
    const code = await proxy.stop('SIGTERM');
    assert.equal(code, 0);
    const err = await gotError;
    assert.equal(err.code, '57P01');
  });

  // The records a crashed worker still held: test/integration/audit-crash.test.ts (written from its journal, not dropped).

  test('a crashed worker is restarted and the proxy keeps serving', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 2 }), { env: { ROLEGATE_FAULT_INJECTION: '1' } });
    try {
      proxy.child.kill('SIGUSR2');
      await proxy.waitForLog((l) => l['msg'] === 'worker exited; restarting');
      await proxy.waitForLog((l) => l['msg'] === 'worker restarted');
      // Both workers serve again: many connections all succeed.
      const clients = await Promise.all(Array.from({ length: 20 }, () => connect(proxy.port, 'reporting-svc')));
      for (const c of clients) assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
      await Promise.all(clients.map((c) => c.end()));
    } finally {
      await proxy.stop();
    }
  });
});
