// SIGTERM drains each session at its transaction boundary: idle sessions get
// FATAL 57P01 at once, a transaction under way runs to its end (the client
// sees it complete, then the FATAL), and only what is still inside a
// transaction at shutdown.drain_timeout_ms is cut off. Real PostgreSQL, the
// real CLI, real pgbench and a byte-level client.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { DRAIN_MESSAGE } from '../../src/session/relay.ts';
import { adminQuery } from '../helpers/pg.ts';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { errorFields, query, RawClient, type Message } from '../helpers/raw-client.ts';

const run = promisify(execFile);
const BENCH_DB = 'drain_bench';

/** The messages up to the connection's end (or `timeoutMs`). */
async function readToEnd(c: RawClient, timeoutMs = 5000): Promise<Message[]> {
  const out: Message[] = [];
  for (;;) {
    const m = await c.read(timeoutMs);
    if (m === null) return out;
    out.push(m);
  }
}

function describeAll(ms: Message[]): string {
  return ms.map((m) => (m.type === 'E' ? `E ${JSON.stringify(Object.fromEntries(errorFields(m)))}` : m.type === 'Z' ? `Z ${m.body.toString('latin1')}` : m.type)).join(', ');
}

/** Asserts `ms` ends with exactly one FATAL 57P01 carrying `message`. */
function assertFatal57P01(ms: Message[], message: string): void {
  const last = ms.at(-1);
  assert.ok(last !== undefined && last.type === 'E', `a FATAL last; got ${describeAll(ms)}`);
  const f = errorFields(last);
  assert.equal(f.get('V'), 'FATAL');
  assert.equal(f.get('C'), '57P01');
  assert.equal(f.get('M'), message);
}

async function rawLogin(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.login('orders-svc', DEMO_USERS['orders-svc']);
  return c;
}

/** Sends one simple Query and reads through its ReadyForQuery; returns the messages. */
async function simple(c: RawClient, sql: string): Promise<Message[]> {
  c.write(query(sql));
  return c.readUntil('Z');
}

function exitOf(proxy: RunningProxy): Promise<number | null> {
  return new Promise((resolve) => {
    if (proxy.child.exitCode !== null) resolve(proxy.child.exitCode);
    else proxy.child.on('exit', (code) => resolve(code));
  });
}

async function probeValue(): Promise<string | undefined> {
  const rows = await adminQuery<{ v: string }>('SELECT v FROM drain_probe WHERE id = 1', 'app');
  return rows[0]?.v;
}

describe('drain at transaction boundaries', () => {
  before(async () => {
    await ensureDemoDatabase();
    await adminQuery(
      `DROP TABLE IF EXISTS drain_probe;
CREATE TABLE drain_probe (id int PRIMARY KEY, v text NOT NULL);
ALTER TABLE drain_probe OWNER TO app_admin;
GRANT SELECT, UPDATE ON drain_probe TO app_writer;`,
      'app',
    );
  });
  after(async () => {
    await adminQuery('DROP TABLE IF EXISTS drain_probe', 'app');
    await adminQuery(`DROP DATABASE IF EXISTS ${BENCH_DB}`);
  });

  test('pgbench -c 8 -M prepared, SIGTERM mid-run: every client ends between transactions, none inside one; the proxy exits 0', async (t) => {
    await adminQuery(`DROP DATABASE IF EXISTS ${BENCH_DB}`);
    await adminQuery(`CREATE DATABASE ${BENCH_DB} OWNER app_admin`);
    // migrator may use any database here, not only app.
    const config = demoConfig({ workers: 2, extra: 'shutdown: { drain_timeout_ms: 10000 }\n' }).replace(/(migrator: \{ scram_verifier: "[^"]+", role: app_admin), database: app \}/, '$1 }');
    const proxy = await startProxy(config);
    const env = { ...process.env, PGPASSWORD: DEMO_USERS['migrator'] };
    const args = ['-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'migrator'];
    try {
      await run('pgbench', ['-i', '-s', '1', ...args, BENCH_DB], { env });
      const rollbacksBefore = await xactRollbacks();
      const historyBefore = await historyRows();
      const exit = exitOf(proxy);
      const bench = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile('pgbench', ['-M', 'prepared', '-c', '8', '-j', '2', '-T', '30', '-n', ...args, BENCH_DB], { env, timeout: 60_000 }, (err, stdout, stderr) =>
          resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
        );
      });
      await new Promise((r) => setTimeout(r, 3000));
      const sigtermAt = Date.now();
      proxy.child.kill('SIGTERM');
      const { code, stdout, stderr } = await bench;
      const benchEndedMs = Date.now() - sigtermAt;
      assert.equal(await exit, 0, 'the proxy exits 0');
      const report = `pgbench exit ${code} after SIGTERM + ${benchEndedMs} ms\n${stdout}\n${stderr}`;
      // Every client was closed at a boundary well before the drain timeout: none was left for the timeout to kill.
      assert.ok(benchEndedMs < 8000, report);
      assert.equal(proxy.logs.filter((l) => l['msg'] === 'drain timeout: terminating remaining sessions').length, 0);
      // pgbench counts a client whose server closes the connection as aborted (exit
      // status 2) even between transactions; where it aborted tells which. In the
      // TPC-B script, commands 0–3 are \set and command 4 is BEGIN: aborted in
      // command 4 means the connection ended after the previous END's answer and
      // before the next transaction ran anything.
      const aborts = [...stderr.matchAll(/client (\d+) (?:script \d+ )?aborted in command (\d+)/g)];
      assert.deepEqual(aborts.map((m) => m[1]).sort(), ['0', '1', '2', '3', '4', '5', '6', '7'], report);
      assert.deepEqual([...new Set(aborts.map((m) => m[2]))], ['4'], report);
      assert.equal(code, 2, report);
      assert.match(stderr, new RegExp(`FATAL: {2}${DRAIN_MESSAGE}`), report);
      const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1]);
      const processed = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1]);
      assert.equal(failed, 0, report);
      assert.ok(processed > 0, report);
      // Every transaction pgbench counted committed (one history row each), and none committed unseen.
      // (These two also hold when clients are killed mid-transaction — pgbench does not count the
      // aborted transaction as failed and its history row is rolled back — so they alone prove
      // nothing about the drain: the abort command above and the rollback count below do.)
      assert.equal((await historyRows()) - historyBefore, processed, report);
      // None was cut off inside a transaction: the server rolled nothing back.
      await backendsGone();
      const rolledBack = (await xactRollbacks()) - rollbacksBefore;
      t.diagnostic(`pgbench: ${processed} transactions, ${failed} failed, ${aborts.length} clients aborted in command 4, ended ${benchEndedMs} ms after SIGTERM; rollbacks ${rolledBack}`);
      assert.equal(rolledBack, 0, report);
    } finally {
      await proxy.stop();
    }
  });

  test('a session inside BEGIN commits after SIGTERM, sees its COMMIT complete, then gets 57P01; idle sessions are closed at once; the proxy exits 0 when the last one ends', async () => {
    await adminQuery("DELETE FROM drain_probe; INSERT INTO drain_probe VALUES (1, 'before')", 'app');
    // One worker: the first login leaves its greeting cached, so the third client is parked (no upstream session).
    const proxy = await startProxy(demoConfig({ workers: 1, extra: 'shutdown: { drain_timeout_ms: 10000 }\n' }));
    const exit = exitOf(proxy);
    try {
      const inTx = await rawLogin(proxy.port);
      // Idle with an upstream session (it ran a statement), and idle without one (parked: nothing run yet).
      const idle = await rawLogin(proxy.port);
      assert.equal((await simple(idle, 'SELECT 1')).at(-1)?.body.toString('latin1'), 'I');
      const parked = await rawLogin(proxy.port);
      assert.equal((await simple(inTx, 'BEGIN')).at(-1)?.body.toString('latin1'), 'T');
      assert.equal((await simple(inTx, "UPDATE drain_probe SET v = 'first' WHERE id = 1")).at(-1)?.body.toString('latin1'), 'T');
      const upstreams = await adminQuery<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'app_writer' AND datname = 'app'");
      assert.equal(upstreams[0]?.n, '2', 'two upstream sessions: the third client is parked');

      const sigtermAt = Date.now();
      proxy.child.kill('SIGTERM');
      await proxy.waitForLog((l) => l['msg'] === 'draining');
      for (const c of [idle, parked]) {
        const got = await readToEnd(c, 3000);
        assert.equal(got.length, 1, describeAll(got));
        assertFatal57P01(got, DRAIN_MESSAGE);
        assert.equal(c.closed, true);
      }
      assert.ok(Date.now() - sigtermAt < 3000, 'idle sessions are closed at once, not at the drain timeout');

      // The transaction goes on: more work, then COMMIT.
      await new Promise((r) => setTimeout(r, 300));
      const update = await simple(inTx, "UPDATE drain_probe SET v = 'committed' WHERE id = 1");
      assert.deepEqual(
        update.map((m) => m.type),
        ['C', 'Z'],
        describeAll(update),
      );
      assert.equal(update[1]?.body.toString('latin1'), 'T');
      inTx.write(query('COMMIT'));
      const end = await readToEnd(inTx);
      assert.deepEqual(
        end.map((m) => m.type),
        ['C', 'Z', 'E'],
        describeAll(end),
      );
      assert.equal(end[0]?.body.toString('latin1'), 'COMMIT\0');
      assert.equal(end[1]?.body.toString('latin1'), 'I', 'the client sees its transaction complete');
      assertFatal57P01(end, DRAIN_MESSAGE);
      assert.equal(inTx.closed, true);
      assert.equal(await probeValue(), 'committed');
      assert.equal(await exit, 0);
      assert.ok(Date.now() - sigtermAt < 8000, 'the proxy exits when the last session ends, before the drain timeout');
    } finally {
      await proxy.stop();
    }
  });

  test('a session still inside its transaction at drain_timeout_ms gets 57P01 and its transaction is rolled back; the proxy exits 0', async () => {
    await adminQuery("DELETE FROM drain_probe; INSERT INTO drain_probe VALUES (1, 'before')", 'app');
    const proxy = await startProxy(demoConfig({ workers: 2, extra: 'shutdown: { drain_timeout_ms: 1500 }\n' }));
    const exit = exitOf(proxy);
    try {
      const inTx = await rawLogin(proxy.port);
      await simple(inTx, 'BEGIN');
      assert.equal((await simple(inTx, "UPDATE drain_probe SET v = 'never committed' WHERE id = 1")).at(-1)?.body.toString('latin1'), 'T');
      const sigtermAt = Date.now();
      proxy.child.kill('SIGTERM');
      const got = await readToEnd(inTx, 10_000);
      const waitedMs = Date.now() - sigtermAt;
      assert.equal(got.length, 1, describeAll(got));
      // The timeout's own message (as PostgreSQL's administrator shutdown words it), not the boundary's.
      assertFatal57P01(got, 'terminating connection due to administrator command');
      assert.ok(waitedMs >= 1400, `cut off at the drain timeout, not at once (${waitedMs} ms)`);
      assert.equal(await exit, 0);
      await proxy.waitForLog((l) => l['msg'] === 'drain timeout: terminating remaining sessions');
      // The upstream session ended without COMMIT: the server rolled the UPDATE back.
      assert.equal(await probeValue(), 'before');
    } finally {
      await proxy.stop();
    }
  });
});

async function historyRows(): Promise<number> {
  const rows = await adminQuery<{ c: string }>('SELECT count(*) AS c FROM pgbench_history', BENCH_DB);
  return Number(rows[0]?.c);
}

/** Waits until no server backend serves the bench database (their statistics are written as they exit). */
async function backendsGone(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '${BENCH_DB}' AND pid <> pg_backend_pid()`);
    if (rows[0]?.n === '0') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail('backends of the bench database are still running');
}

/** Transactions rolled back in the bench database, as the server's statistics count them. */
async function xactRollbacks(): Promise<number> {
  const rows = await adminQuery<{ n: string }>(`SELECT xact_rollback AS n FROM pg_stat_database WHERE datname = '${BENCH_DB}'`);
  return Number(rows[0]?.n);
}
