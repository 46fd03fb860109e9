// Real clients (psql, node-postgres) through rolegate (2 workers) against the
// real PostgreSQL that `npm test` starts.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { cancelRequest } from '../../src/upstream/connect.ts';
import { adminQuery } from '../helpers/pg.ts';
import { connect, demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';

const run = promisify(execFile);

/** CancelRequest on a new connection, as libpq's PQcancel sends it. */
function sendCancel(port: number, processId: number, secretKey: number): Promise<void> {
  const packet = cancelRequest(processId, secretKey);
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => s.end(packet));
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

function psqlEnv(user: keyof typeof DEMO_USERS): NodeJS.ProcessEnv {
  return { ...process.env, PGPASSWORD: DEMO_USERS[user], PGCONNECT_TIMEOUT: '10' };
}

describe('real clients through rolegate', () => {
  let proxy: RunningProxy;
  before(async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(demoConfig({ workers: 2 }));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('psql connects as the mapped role and sees upstream ParameterStatus', async () => {
    const { stdout } = await run('psql', ['-X', '-At', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'reporting-svc', '-d', 'app', '-c', 'SELECT current_user, session_user, current_setting(\'server_version_num\')::int >= 150000', '-c', 'SHOW standard_conforming_strings'], { env: psqlEnv('reporting-svc') });
    assert.equal(stdout, 'app_reader|app_reader|t\non\n');
  });

  test('wrong password and unknown user get the same 28P01 message', async () => {
    const errors: string[] = [];
    for (const [user, password] of [['orders-svc', 'not-the-password'], ['no-such-svc', 'whatever']] as const) {
      const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user, password, database: 'app' });
      const err = await client.connect().then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err, `${user} must be refused`);
      assert.equal(err.code, '28P01');
      errors.push(err.message.replace(user, '<user>'));
      await client.end().catch(() => {});
    }
    assert.equal(errors[0], errors[1]);
    assert.equal(errors[0], 'password authentication failed for user "<user>"');
  });

  test('node-postgres: parameterized queries, types and errors pass through', async () => {
    const client = await connect(proxy.port, 'orders-svc');
    try {
      const r = await client.query<{ n: number; t: string; j: unknown; b: Buffer }>('SELECT $1::int + 1 AS n, $2::text AS t, $3::jsonb AS j, $4::bytea AS b', [41, 'héllo wörld', JSON.stringify({ a: [1, 2] }), Buffer.from([0, 1, 2, 255])]);
      assert.deepEqual(r.rows[0], { n: 42, t: 'héllo wörld', j: { a: [1, 2] }, b: Buffer.from([0, 1, 2, 255]) });
      const named = await client.query({ name: 'by-customer', text: 'SELECT count(*)::int AS c FROM orders WHERE customer = $1', values: ['customer 1'] });
      const again = await client.query({ name: 'by-customer', text: 'SELECT count(*)::int AS c FROM orders WHERE customer = $1', values: ['customer 2'] });
      assert.equal(typeof named.rows[0].c, 'number');
      assert.equal(typeof again.rows[0].c, 'number');
      await assert.rejects(client.query('SELECT 1/0'), (e: pg.DatabaseError) => e.code === '22012');
      // The session is still usable after an error.
      const ok = await client.query('SELECT current_user AS u');
      assert.equal(ok.rows[0].u, 'app_writer');
      await client.query('BEGIN');
      await client.query("INSERT INTO orders (customer, total) VALUES ('tx-test', 1)");
      await client.query('ROLLBACK');
      const count = await adminQuery<{ c: string }>("SELECT count(*) AS c FROM orders WHERE customer = 'tx-test'", 'app');
      assert.equal(count[0]?.c, '0');
    } finally {
      await client.end();
    }
  });

  test('LISTEN/NOTIFY round trip between two sessions', async () => {
    const listener = await connect(proxy.port, 'orders-svc');
    const notifier = await connect(proxy.port, 'orders-svc');
    try {
      await listener.query('LISTEN rolegate_test');
      const got = new Promise<pg.Notification>((resolve) => listener.once('notification', resolve));
      await notifier.query("SELECT pg_notify('rolegate_test', 'payload ✓')");
      const n = await Promise.race([got, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no notification in 5 s')), 5000))]);
      assert.equal(n.channel, 'rolegate_test');
      assert.equal(n.payload, 'payload ✓');
    } finally {
      await listener.end();
      await notifier.end();
    }
  });

  test('NoticeResponse reaches the client', async () => {
    const client = await connect(proxy.port, 'migrator');
    try {
      const notice = new Promise<{ message: string }>((resolve) => client.once('notice', (n: { message: string }) => resolve(n)));
      await client.query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$");
      assert.equal((await notice).message, 'hello from plpgsql');
    } finally {
      await client.end();
    }
  });

  test('CancelRequest stops pg_sleep(10) in under a second, also when it lands on another worker', async () => {
    // The kernel picks the worker for each cancel connection: repeat until a
    // cancel has been routed across workers at least once (the log says so).
    const routedBefore = proxy.logs.filter((l) => l['msg'] === 'cancel routed to owning worker').length;
    let rounds = 0;
    while (rounds < 4 || proxy.logs.filter((l) => l['msg'] === 'cancel routed to owning worker').length === routedBefore) {
      assert.ok(rounds < 30, 'no cancel was routed across workers in 30 rounds');
      rounds++;
      const client = await connect(proxy.port, 'orders-svc');
      try {
        const started = Date.now();
        const sleeping = client.query('SELECT pg_sleep(10)').then(
          () => null,
          (e: unknown) => e as pg.DatabaseError,
        );
        await new Promise((r) => setTimeout(r, 150));
        const keys = client as unknown as { processID: number; secretKey: number };
        await sendCancel(proxy.port, keys.processID, keys.secretKey);
        const err = await sleeping;
        const elapsed = Date.now() - started;
        assert.ok(err, 'query must be cancelled');
        assert.equal(err.code, '57014');
        assert.ok(elapsed < 1000, `query ended ${elapsed} ms after it started (cancel sent at 150 ms)`);
        const again = await client.query('SELECT 1 AS one');
        assert.equal(again.rows[0].one, 1);
      } finally {
        await client.end();
      }
    }
  });

  test('a cancel with a wrong secret key does nothing', async () => {
    const client = await connect(proxy.port, 'orders-svc');
    try {
      const keys = client as unknown as { processID: number; secretKey: number };
      const started = Date.now();
      const q = client.query('SELECT pg_sleep(0.6) AS s');
      await new Promise((r) => setTimeout(r, 100));
      await sendCancel(proxy.port, keys.processID, (keys.secretKey ^ 0x5a5a5a5a) | 1);
      await q;
      assert.ok(Date.now() - started >= 550, 'query ran to completion');
    } finally {
      await client.end();
    }
  });

  test('psql \\copy of a 100 000-row table out and back in is byte-identical', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-copy-'));
    const out1 = path.join(dir, 'out1.tsv');
    const out2 = path.join(dir, 'out2.tsv');
    await adminQuery(
      `DROP TABLE IF EXISTS copy_src, copy_dst;
       CREATE TABLE copy_src AS SELECT g AS id, md5(g::text) || E'\\tcol\\\\n' || repeat('é', g % 7) AS t, (g * 1.5)::numeric AS n, NULL::text AS nothing FROM generate_series(1, 100000) g;
       CREATE TABLE copy_dst (LIKE copy_src);
       GRANT SELECT, INSERT ON copy_src, copy_dst TO app_writer;`,
      'app',
    );
    const args = ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'orders-svc', '-d', 'app'];
    const env = psqlEnv('orders-svc');
    await run('psql', [...args, '-c', `\\copy copy_src TO '${out1}'`], { env });
    const loaded = await run('psql', [...args, '-c', `\\copy copy_dst FROM '${out1}'`], { env });
    assert.match(loaded.stdout, /COPY 100000/);
    await run('psql', [...args, '-c', `\\copy (SELECT * FROM copy_dst ORDER BY id) TO '${out2}'`], { env });
    const a = readFileSync(out1);
    const b = readFileSync(out2);
    assert.equal(a.length > 3_000_000, true, `export is ${a.length} bytes`);
    assert.ok(a.equals(b), 'COPY out → in → out must be byte-identical');
    const diff = await adminQuery<{ c: string }>('SELECT count(*) AS c FROM (SELECT * FROM copy_src EXCEPT SELECT * FROM copy_dst) d', 'app');
    assert.equal(diff[0]?.c, '0');
  });

  test('COPY FROM STDIN error mid-stream leaves the session usable', async () => {
    const args = ['-X', '-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'orders-svc', '-d', 'app'];
    const child = spawn('psql', [...args, '-c', 'COPY copy_dst (id, t) FROM STDIN', '-c', 'SELECT 7 AS seven'], { env: psqlEnv('orders-svc') });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end('1\tok\nnot-a-number\tbad\n');
    await new Promise((resolve) => child.on('exit', resolve));
    assert.match(err, /invalid input syntax for type integer/);
    assert.match(out, /\b7\b/);
  });
});
