// The shipped policy, really compiled by opa, enforced by rolegate in front of
// a real PostgreSQL, with real clients. Each denial is checked on the database
// side too: nothing of a denied message may have run.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { adminQuery } from '../helpers/pg.ts';
import { connect, DEMO_USERS, demoConfig, deniedWith, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { policyCopy, withPolicyDir } from '../helpers/security.ts';
import { bind, errorFields, execute, parse, query, RawClient, sqlstate, sync } from '../helpers/raw-client.ts';

async function count(sql: string): Promise<number> {
  const rows = await adminQuery<{ c: string }>(sql, 'app');
  return Number(rows[0]?.c);
}

describe('shipped policy through rolegate', () => {
  let proxy: RunningProxy;
  before(async () => {
    await ensureDemoDatabase();
    await adminQuery('CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, v text); GRANT SELECT ON probe TO app_reader; GRANT SELECT, INSERT, UPDATE, DELETE ON probe TO app_writer;', 'app');
    await adminQuery("TRUNCATE probe; INSERT INTO probe VALUES (1, 'one'), (2, 'two');", 'app');
    proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2 }));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('a reader can SELECT and is refused INSERT, UPDATE, DELETE and DDL', async () => {
    const c = await connect(proxy.port, 'reporting-svc');
    try {
      const r = await c.query('SELECT count(*)::int AS n FROM probe');
      assert.equal(r.rows[0].n, 2);
      await deniedWith(c.query("INSERT INTO probe VALUES (3, 'three')"), 'read-only-role');
      await deniedWith(c.query("UPDATE probe SET v = 'x'"), 'read-only-role');
      await deniedWith(c.query('DELETE FROM probe'), 'read-only-role');
      await deniedWith(c.query('CREATE TABLE evil (id int)'), 'no-ddl-outside-admin');
      await deniedWith(c.query('DROP TABLE probe'), 'no-ddl-outside-admin');
      // The session goes on after every denial.
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    } finally {
      await c.end();
    }
    assert.equal(await count('SELECT count(*) AS c FROM probe'), 2);
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v = 'x'"), 0);
    assert.equal(await count("SELECT count(*) AS c FROM pg_tables WHERE tablename = 'evil'"), 0);
  });

  test('writes hidden in CTEs, EXPLAIN ANALYZE, SELECT INTO and PREPARE are refused for a reader', async () => {
    const c = await connect(proxy.port, 'reporting-svc');
    try {
      await deniedWith(c.query('WITH d AS (DELETE FROM probe RETURNING *) SELECT * FROM d'), 'read-only-role');
      await deniedWith(c.query('EXPLAIN ANALYZE DELETE FROM probe'), 'read-only-role');
      // SELECT INTO creates a table: DDL.
      await deniedWith(c.query('SELECT * INTO probe_copy FROM probe'), 'no-ddl-outside-admin');
      await deniedWith(c.query('PREPARE p AS DELETE FROM probe'), 'read-only-role');
    } finally {
      await c.end();
    }
    assert.equal(await count('SELECT count(*) AS c FROM probe'), 2);
  });

  test('SELECT 1; DELETE FROM probe is refused as a whole and probe is untouched', async () => {
    const c = await RawClient.connect(proxy.port);
    await c.login('reporting-svc', DEMO_USERS['reporting-svc']);
    c.write(query('SELECT 1; DELETE FROM probe'));
    const res = await c.readUntil('Z');
    assert.deepEqual(res.map((m) => m.type), ['E', 'Z'], 'no row of SELECT 1 either: nothing was forwarded');
    assert.equal(sqlstate(res[0]), '42501');
    assert.match(errorFields(res[0]!).get('M') ?? '', /rule "read-only-role"/);
    c.end();
    assert.equal(await count('SELECT count(*) AS c FROM probe'), 2);
  });

  test('a pipelined batch whose second Parse is denied: one 42501, nothing after it executes, the connection continues', async () => {
    await adminQuery('TRUNCATE probe; INSERT INTO probe VALUES (1, \'one\'), (2, \'two\');', 'app');
    const c = await RawClient.connect(proxy.port);
    await c.login('orders-svc', DEMO_USERS['orders-svc'], 'app', { options: '-c rolegate.role=app_writer' });
    c.write(
      Buffer.concat([
        parse('', "UPDATE probe SET v = 'first' WHERE id = 1"),
        bind('', ''),
        execute(),
        parse('', 'DROP TABLE probe'), // DDL: denied for a writer
        bind('', ''),
        execute(),
        parse('', "UPDATE probe SET v = 'third' WHERE id = 2"),
        bind('', ''),
        execute(),
        sync(),
      ]),
    );
    const res = await c.readUntil('Z');
    assert.deepEqual(res.map((m) => m.type), ['1', '2', 'C', 'E', 'Z']);
    assert.equal(sqlstate(res[3]), '42501');
    assert.match(errorFields(res[3]!).get('M') ?? '', /no-ddl-outside-admin/);
    assert.equal(res[4]?.body.toString('latin1'), 'I');
    // The implicit transaction of the pipeline was aborted: the first UPDATE is rolled back too.
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v IN ('first', 'third')"), 0);
    assert.equal(await count("SELECT count(*) AS c FROM pg_tables WHERE tablename = 'probe'"), 1);
    // The connection continues.
    c.write(Buffer.concat([parse('', 'SELECT count(*) FROM probe'), bind('', ''), execute(), sync()]));
    const next = await c.readUntil('Z');
    assert.deepEqual(next.map((m) => m.type), ['1', '2', 'D', 'C', 'Z']);
    c.end();
  });

  test('a deny inside an explicit transaction makes COMMIT roll back', async () => {
    const c = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
    try {
      await c.query('BEGIN');
      await c.query("UPDATE probe SET v = 'in-tx' WHERE id = 1");
      await deniedWith(c.query('CREATE TABLE tx_evil (id int)'), 'no-ddl-outside-admin');
      const commit = await c.query('COMMIT');
      assert.equal(commit.command, 'ROLLBACK');
    } finally {
      await c.end();
    }
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v = 'in-tx'"), 0);
  });

  test('orders-svc reads by default and writes only as the requested app_writer', async () => {
    const reader = await connect(proxy.port, 'orders-svc');
    const writer = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
    try {
      assert.equal((await reader.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
      assert.equal((await writer.query('SELECT current_user AS u')).rows[0].u, 'app_writer');
      await deniedWith(reader.query("UPDATE probe SET v = 'r' WHERE id = 2"), 'read-only-role');
      const upd = await writer.query("UPDATE probe SET v = 'w' WHERE id = 2");
      assert.equal(upd.rowCount, 1);
    } finally {
      await reader.end();
      await writer.end();
    }
  });

  test('a role the service may not use is refused at connect with 28000', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: 'app', options: '-c rolegate.role=app_admin' });
    const err = await c.connect().then(
      () => null,
      (e: unknown) => e as pg.DatabaseError,
    );
    assert.ok(err);
    assert.equal(err.code, '28000');
    assert.match(err.message, /connection refused by policy/);
    assert.match(err.detail ?? '', /role-not-allowed/);
    await c.end().catch(() => {});
  });

  test('dangerous functions and commands are denied even for the admin service (rolegate\'s guards first, then the policy)', async () => {
    const c = await connect(proxy.port, 'migrator');
    try {
      await deniedWith(c.query("SELECT pg_read_file('/etc/passwd')"), 'guard:server-files');
      await deniedWith(c.query("SELECT set_config('role', 'postgres', false)"), 'guard:role-change');
      await deniedWith(c.query('SET ROLE postgres'), 'guard:role-change');
      await deniedWith(c.query("COPY probe TO PROGRAM 'id'"), 'guard:copy-program');
      await deniedWith(c.query("SET client_encoding = 'SJIS'"), 'guard:pinned-parameter');
      // Not guarded by rolegate: the shipped policy's own rules.
      await deniedWith(c.query("SELECT query_to_xml('SELECT 1', true, false, '')"), 'denied-function');
      await deniedWith(c.query("ALTER SYSTEM SET work_mem = '1GB'"), 'forbidden-command');
      // …while DDL is fine for it.
      await c.query('CREATE TABLE IF NOT EXISTS migrator_made (id int)');
      await c.query('DROP TABLE migrator_made');
    } finally {
      await c.end();
    }
  });

  test('a parse error is refused by the proxy with the parser’s message and position', async () => {
    const c = await connect(proxy.port, 'reporting-svc');
    try {
      const err = await c.query('SELECT * FORM probe').then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err);
      assert.equal(err.code, '42601');
      assert.match(err.message, /syntax error at or near "FORM"/);
      assert.equal(err.position, '10');
    } finally {
      await c.end();
    }
  });

  test('EXECUTE is decided as the statement it runs', async () => {
    const c = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
    try {
      await c.query('PREPARE upd AS UPDATE probe SET v = $1 WHERE id = 1');
      await c.query("EXECUTE upd('via-execute')");
      await deniedWith(c.query('EXECUTE never_prepared'), 'unknown-prepared-statement');
    } finally {
      await c.end();
    }
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v = 'via-execute'"), 1);
  });
});

describe('time windows and client addresses', () => {
  test('a write is refused inside the maintenance window and allowed outside it', async () => {
    await ensureDemoDatabase();
    // The shipped data has a Sunday 03:00–03:30 read-only window (UTC).
    const inside = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: 'time: { fixed: "2026-11-29T03:10:00Z" }\n' }));
    const outside = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: 'time: { fixed: "2026-11-29T03:31:00Z" }\n' }));
    try {
      const a = await connect(inside.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
      const b = await connect(outside.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
      try {
        await deniedWith(a.query("UPDATE probe SET v = 'window' WHERE id = 1"), 'maintenance-window');
        assert.equal((await a.query('SELECT 1 AS one')).rows[0].one, 1, 'reads go on in the window');
        const ok = await b.query("UPDATE probe SET v = 'after' WHERE id = 1");
        assert.equal(ok.rowCount, 1);
      } finally {
        await a.end();
        await b.end();
      }
    } finally {
      await inside.stop();
      await outside.stop();
    }
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v = 'window'"), 0);
  });

  test('a client address outside the service’s CIDRs is refused at connect', async () => {
    await ensureDemoDatabase();
    const dir = policyCopy();
    const data = JSON.parse(readFileSync(path.join(dir, 'data.json'), 'utf8')) as { services: Record<string, { cidrs: string[] }> };
    const svc = data.services['reporting-svc'];
    assert.ok(svc);
    svc.cidrs = ['10.20.0.0/16', 'fd00:20::/32'];
    writeFileSync(path.join(dir, 'data.json'), JSON.stringify(data));
    const proxy = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 1 }), dir));
    try {
      const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: 'app' });
      const err = await c.connect().then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err);
      assert.equal(err.code, '28000');
      assert.match(err.detail ?? '', /client-address-not-allowed/);
      await c.end().catch(() => {});
      // Another service with loopback in its CIDRs still connects.
      const ok = await connect(proxy.port, 'orders-svc');
      await ok.end();
    } finally {
      await proxy.stop();
    }
  });
});

describe('policy reload', () => {
  test('a reload changes decisions for an already-open session; a broken policy is refused and the old one keeps deciding', async () => {
    await ensureDemoDatabase();
    const dir = policyCopy();
    const auditFile = path.join(mkdtempSync(path.join(tmpdir(), 'rolegate-audit-')), 'audit.log');
    const proxy = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 2, extra: `audit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\n` }), dir));
    const c = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
    const select = { name: 'sel-probe', text: 'SELECT v FROM probe WHERE id = 2' };
    try {
      assert.equal((await c.query("UPDATE probe SET v = 'before-reload' WHERE id = 2")).rowCount, 1);
      // Also extended-protocol statements parsed before the reload.
      const named = { name: 'upd-probe', text: 'UPDATE probe SET v = $1 WHERE id = 2' };
      assert.equal((await c.query({ ...named, values: ['named-before'] })).rowCount, 1);
      assert.equal((await c.query(select)).rowCount, 1);

      // Turn app_writer into a reader in the data, then reload with SIGHUP.
      const dataPath = path.join(dir, 'data.json');
      const data = JSON.parse(readFileSync(dataPath, 'utf8')) as { roles: Record<string, { kind: string }> };
      data.roles['app_writer'] = { kind: 'reader' };
      writeFileSync(dataPath, JSON.stringify(data, null, 2));
      const reloaded = proxy.waitForLog((l) => l['msg'] === 'policy reload' && l['changed'] === true, 60_000);
      proxy.child.kill('SIGHUP');
      await reloaded;
      await deniedWith(c.query("UPDATE probe SET v = 'post-reload' WHERE id = 2"), 'read-only-role');
      // The statements prepared before the reload are re-decided at their next Bind.
      await deniedWith(c.query({ ...named, values: ['named-post'] }), 'read-only-role');
      assert.equal((await c.query(select)).rowCount, 1);
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);

      // A broken policy is refused; the running revision keeps deciding.
      writeFileSync(path.join(dir, 'broken.rego'), 'package rolegate\n\nthis is not rego {\n');
      const failed = proxy.waitForLog((l) => l['msg'] === 'policy reload failed', 60_000);
      proxy.child.kill('SIGHUP');
      const line = await failed;
      assert.match(String(line['err']), /broken\.rego/);
      await deniedWith(c.query("UPDATE probe SET v = 'post-broken' WHERE id = 2"), 'read-only-role');
      assert.equal((await c.query('SELECT 2 AS two')).rows[0].two, 2);
    } finally {
      await c.end();
      await proxy.stop();
    }
    assert.equal(await count("SELECT count(*) AS c FROM probe WHERE v IN ('post-reload', 'post-broken', 'named-post')"), 0);

    // Audit: a re-decided statement's records carry the new revision's decision, under the client's statement name.
    const records = readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as { statement_name?: string; decision: string; rule: string; reason: string; command: string | null; tables: string[]; outcome: string; policy_revision: string });
    const brief = (name: string): unknown[] => records.filter((r) => r.statement_name === name).map((r) => [r.decision, r.rule, r.reason, r.command, r.tables, r.outcome]);
    assert.deepEqual(brief('sel-probe'), [
      ['allow', 'allow-read', 'app_writer (writer) may run SELECT', 'SELECT', ['probe'], 'complete'],
      ['allow', 'allow-read', 'app_writer (reader) may run SELECT', 'SELECT', ['probe'], 'complete'],
    ]);
    assert.deepEqual(
      brief('upd-probe').map((r) => (r as unknown[]).slice(0, 2).concat((r as unknown[]).slice(3))),
      [
        ['allow', 'allow-write', 'UPDATE', ['probe'], 'complete'],
        ['deny', 'read-only-role', 'UPDATE', ['probe'], 'not-run'],
      ],
    );
    const revisions = new Set(records.filter((r) => r.statement_name === 'sel-probe').map((r) => r.policy_revision));
    assert.equal(revisions.size, 2, 'the two Executes ran under two policy revisions');
  });
});
