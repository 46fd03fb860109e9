// Audit records and Prometheus metrics for a scripted workload through the
// real proxy (2 workers, shipped policy) against the real PostgreSQL; audit
// sink failures in fail-closed and best-effort mode.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { connect, demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { bind, execute, message, parse, query, RawClient, sync } from '../helpers/raw-client.ts';

interface Audit {
  audit: 'connect' | 'statement';
  decision: 'allow' | 'deny';
  rule: string | null;
  sql?: string;
  command?: string | null;
  sqlstate?: string;
  protocol?: string;
  tables?: string[];
  rows?: number | null;
  outcome?: string;
  decision_us: number;
  seq: number;
  session: string;
  worker: number;
  identity: { name: string; method: string };
  role: string | null;
  policy_revision: string;
  parameters?: unknown[];
  parameters_omitted?: number;
  statement_name?: string;
}

function readAudit(file: string): Audit[] {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n').filter((l) => l.length > 0);
  // Every record is exactly one line of valid JSON.
  return lines.map((l) => JSON.parse(l) as Audit);
}

async function adminPort(proxy: RunningProxy): Promise<number> {
  const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
  return Number(line['port']);
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/** The value of one series in Prometheus text exposition, 0 when absent. */
function series(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (!ok) continue;
    found = true;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return found ? total : 0;
}

async function waitFor<T>(probe: () => Promise<T | null> | T | null, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('audit and metrics for a scripted workload', () => {
  test('exactly the expected audit records and metric counts', async () => {
    await ensureDemoDatabase();
    await adminQuery('CREATE TABLE IF NOT EXISTS audited (id int PRIMARY KEY, note text); GRANT SELECT ON audited TO app_reader; GRANT SELECT, INSERT, UPDATE, DELETE ON audited TO app_writer; TRUNCATE audited; INSERT INTO audited VALUES (1, \'a\'), (2, \'b\'), (3, \'c\');', 'app');
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    const proxy = await startProxy(
      demoConfig({ withPolicy: true, workers: 2, extra: `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, parameters: full, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n` }),
    );
    try {
      const port = await adminPort(proxy);
      const reader = await connect(proxy.port, 'reporting-svc');
      const writer = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
      // Simple protocol: 2 allowed statements in one Query, 1 denied.
      await reader.query('SELECT count(*) FROM audited; SELECT 1');
      await assert.rejects(reader.query('DELETE FROM audited'));
      // Extended protocol: an allowed UPDATE with a parameter, a denied DROP.
      const upd = await writer.query('UPDATE audited SET note = $1 WHERE id <= 2', ['x']);
      assert.equal(upd.rowCount, 2);
      await assert.rejects(writer.query({ text: 'DROP TABLE audited', queryMode: 'extended' } as unknown as string));
      // Hostile SQL text: newlines, quotes, control characters, U+2028.
      const hostile = "SELECT '\n{\"audit\":\"forged\"}\r\n\\\" \u2028 \u0001' AS x";
      await reader.query(hostile);
      await reader.end();
      await writer.end();

      const records = await waitFor(() => {
        try {
          const r = readAudit(auditFile);
          return r.filter((x) => x.audit === 'statement').length >= 6 && r.filter((x) => x.audit === 'connect').length >= 2 ? r : null;
        } catch {
          return null;
        }
      });
      const connects = records.filter((r) => r.audit === 'connect');
      assert.deepEqual(connects.map((r) => [r.identity.name, r.decision, r.role]).sort(), [
        ['orders-svc', 'allow', 'app_writer'],
        ['reporting-svc', 'allow', 'app_reader'],
      ]);
      // Records of one session keep their order; the two sessions ran on
      // different workers, whose batches may interleave in the file.
      const stmts = records.filter((r) => r.audit === 'statement');
      const of = (name: string): Audit[] => stmts.filter((r) => r.identity.name === name);
      const brief = (list: Audit[]): unknown[] => list.map((r) => [r.protocol, r.command, r.decision, r.rule, r.rows ?? null]);
      assert.deepEqual(brief(of('reporting-svc')), [
        ['simple', 'SELECT', 'allow', 'allow-read', 1],
        ['simple', 'SELECT', 'allow', 'allow-read', 1],
        ['simple', 'DELETE', 'deny', 'read-only-role', null],
        ['simple', 'SELECT', 'allow', 'allow-read', 1],
      ]);
      assert.deepEqual(brief(of('orders-svc')), [
        ['extended', 'UPDATE', 'allow', 'allow-write', 2],
        ['extended', 'DROP TABLE', 'deny', 'no-ddl-outside-admin', null],
      ]);
      const [count, , , hostileRecord] = of('reporting-svc');
      const [update] = of('orders-svc');
      assert.deepEqual(count?.tables, ['audited']);
      assert.equal(update?.outcome, 'complete');
      assert.deepEqual(update?.parameters, [{ bytes: 1, text: 'x' }]);
      assert.equal(hostileRecord?.sql, hostile, 'the hostile text survives intact inside one JSON line');
      for (const r of records) assert.match(r.policy_revision, /^[0-9a-f]{16}$/);
      // Each session numbers its records 1, 2, 3 … in the order it made them (connect first).
      for (const name of ['reporting-svc', 'orders-svc']) {
        const mine = records.filter((r) => r.identity.name === name);
        assert.equal(mine[0]?.audit, 'connect');
        assert.deepEqual(
          mine.map((r) => r.seq),
          mine.map((_, i) => i + 1),
        );
      }
      const raw = readFileSync(auditFile, 'utf8');
      assert.equal(raw.split('\n').filter((l) => l.length > 0).length, records.length, 'one record per line, no line broken');
      assert.ok(!raw.includes('\u2028'), 'U+2028 is escaped');

      // Metrics: counted in both workers, merged in the main thread.
      const text = await waitFor(async () => {
        const t = await scrape(port);
        return series(t, 'rolegate_statements_total', { decision: 'deny' }) >= 2 && series(t, 'rolegate_statements_total', { decision: 'allow' }) >= 4 ? t : null;
      });
      assert.equal(series(text, 'rolegate_statements_total', { command: 'SELECT', decision: 'allow', protocol: 'simple' }), 3);
      assert.equal(series(text, 'rolegate_statements_total', { command: 'UPDATE', decision: 'allow', protocol: 'extended' }), 1);
      assert.equal(series(text, 'rolegate_statements_total', { command: 'DELETE', decision: 'deny', protocol: 'simple' }), 1);
      assert.equal(series(text, 'rolegate_statement_denials_total', { rule: 'read-only-role' }), 1);
      assert.equal(series(text, 'rolegate_statement_denials_total', { rule: 'no-ddl-outside-admin' }), 1);
      // One decision per Query or Parse message (the two-statement Query is one).
      assert.equal(series(text, 'rolegate_decision_duration_seconds_count', { kind: 'statement' }), 5);
      assert.equal(series(text, 'rolegate_decision_duration_seconds_count', { kind: 'connect' }), 2);
      assert.ok(series(text, 'rolegate_query_duration_seconds_count') >= 4);
      assert.ok(series(text, 'rolegate_client_connections_accepted_total') >= 2);
      assert.ok(series(text, 'rolegate_audit_records_written_total') >= 8);
      assert.equal(series(text, 'rolegate_audit_records_dropped_total'), 0);
      assert.equal(series(text, 'rolegate_audit_sink_healthy'), 1);
      assert.match(text, /rolegate_policy_revision_info\{revision="[0-9a-f]{16}"\} 1/);
      // Readiness: policy loaded and upstream reachable.
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200);
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);

      // A failed login is counted by method.
      await assert.rejects(connect(proxy.port, 'reporting-svc', { password: 'wrong' }));
      const after = await waitFor(async () => {
        const t = await scrape(port);
        return series(t, 'rolegate_auth_failures_total', { method: 'scram-sha-256' }) >= 1 ? t : null;
      });
      assert.equal(series(after, 'rolegate_client_connections_refused_total', { reason: 'auth_failed' }), 1);
    } finally {
      await proxy.stop();
    }
  });
  test('extended protocol: each Execute record names the statement its portal was bound to (unnamed and named portals, pipelined groups, transactions, Close)', async () => {
    await ensureDemoDatabase();
    await adminQuery('CREATE TABLE IF NOT EXISTS audited (id int PRIMARY KEY, note text); GRANT SELECT ON audited TO app_reader;', 'app');
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: `audit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\n` }));
    try {
      const c = await RawClient.connect(proxy.port);
      await c.login('reporting-svc', DEMO_USERS['reporting-svc']);
      const one = 'SELECT 1 AS one';
      const count = 'SELECT count(*) FROM audited';
      c.write(Buffer.concat([parse('s1', one), parse('s2', count), sync()]));
      await c.readUntil('Z');
      // The Bind of the next group travels with this Sync and reaches the
      // proxy before this group's ReadyForQuery; its Execute comes after it.
      c.write(Buffer.concat([bind('', 's1'), execute(''), sync(), bind('', 's2')]));
      await c.readUntil('Z');
      c.write(Buffer.concat([execute(''), sync()]));
      await c.readUntil('Z');
      // Named portals, executed in the other order.
      c.write(Buffer.concat([bind('p1', 's1'), bind('p2', 's2'), execute('p2'), execute('p1'), sync()]));
      await c.readUntil('Z');
      // Inside a transaction a portal outlives a Sync.
      c.write(query('BEGIN'));
      await c.readUntil('Z');
      c.write(Buffer.concat([bind('', 's2'), sync()]));
      await c.readUntil('Z');
      c.write(Buffer.concat([execute(''), sync()]));
      await c.readUntil('Z');
      // A closed portal is gone: the server refuses its Execute (34000, invalid_cursor_name), and the record names no statement.
      c.write(Buffer.concat([bind('p3', 's1'), message('C', 'Pp3\0'), execute('p3'), sync()]));
      await c.readUntil('Z');
      c.write(query('COMMIT'));
      await c.readUntil('Z');
      c.end();

      const expected = [
        ['extended', 's1', one, 'complete', null],
        ['extended', 's2', count, 'complete', null],
        ['extended', 's2', count, 'complete', null],
        ['extended', 's1', one, 'complete', null],
        ['simple', null, 'BEGIN', 'complete', null],
        ['extended', 's2', count, 'complete', null],
        ['extended', null, '', 'error', '34000'],
        ['simple', null, 'COMMIT', 'complete', null],
      ];
      const stmts = await waitFor(() => {
        try {
          const r = readAudit(auditFile).filter((x) => x.audit === 'statement');
          return r.length >= expected.length ? r : null;
        } catch {
          return null;
        }
      });
      assert.deepEqual(
        stmts.map((r) => [r.protocol, r.statement_name ?? null, r.sql, r.outcome, r.sqlstate ?? null]),
        expected,
      );
    } finally {
      await proxy.stop();
    }
  });
});

describe('audit records of refusals and sessions', () => {
  test('a refusal made before the policy was asked names only what the client sent (never the facts of another session\'s statement) and is counted', async () => {
    await ensureDemoDatabase();
    await adminQuery('CREATE TABLE IF NOT EXISTS audited (id int PRIMARY KEY, note text); GRANT SELECT ON audited TO app_reader;', 'app');
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    // One worker: both sessions share its authorizer, whose last decision is another session's.
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n` }));
    try {
      const port = await adminPort(proxy);
      const other = await connect(proxy.port, 'reporting-svc');
      const c = await RawClient.connect(proxy.port);
      await c.login('reporting-svc', DEMO_USERS['reporting-svc']);
      await other.query('SELECT note FROM audited');
      // Bind of a statement never prepared through rolegate.
      c.write(Buffer.concat([bind('', 'never_prepared'), execute(''), sync()]));
      await c.readUntil('Z');
      await other.query('SELECT note FROM audited');
      // A FunctionCall message (OID 1, no arguments).
      c.write(message('F', Buffer.from([0, 0, 0, 1, 0, 0, 0, 0, 0, 0])));
      await c.readUntil('Z');
      c.end();
      await other.end();
      const text = await waitFor(async () => {
        const t = await scrape(port);
        return series(t, 'rolegate_statement_denials_total', { rule: 'function-call-message' }) >= 1 ? t : null;
      });
      assert.equal(series(text, 'rolegate_statement_denials_total', { rule: 'unknown-prepared-statement' }), 1);
      assert.equal(series(text, 'rolegate_statements_total', { command: 'FUNCTION CALL', decision: 'deny' }), 1);
      const denials = await waitFor(() => {
        try {
          const r = readAudit(auditFile).filter((x) => x.decision === 'deny');
          return r.length >= 2 ? r : null;
        } catch {
          return null;
        }
      });
      assert.deepEqual(
        denials.map((r) => [r.protocol, r.statement_name ?? null, r.sql, r.command, r.tables, r.rule, r.outcome, r.decision_us]),
        [
          ['extended', 'never_prepared', '', null, [], 'unknown-prepared-statement', 'not-run', 0],
          ['simple', null, '', 'FUNCTION CALL', [], 'function-call-message', 'not-run', 0],
        ],
      );
    } finally {
      await proxy.stop();
    }
  });

  test('audit settings need a restart: a config reload keeps the running sink and record settings, and says so', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const first = path.join(dir, 'first.log');
    const second = path.join(dir, 'second.log');
    const config = demoConfig({ withPolicy: true, workers: 1, extra: `audit: { sink: file, file: { path: ${JSON.stringify(first)} } }\n` });
    const long = `SELECT ${'1 + '.repeat(40)}1 AS sum`;
    const proxy = await startProxy(config);
    try {
      const warned = proxy.waitForLog((l) => l['msg'] === 'config reload: these settings need a restart and keep their running values');
      writeFileSync(proxy.configFile, config.replace(JSON.stringify(first), JSON.stringify(second)).replace('sink: file,', 'sink: file, max_sql_bytes: 64,'));
      proxy.child.kill('SIGHUP');
      assert.deepEqual((await warned)['keys'], ['audit']);
      const c = await connect(proxy.port, 'reporting-svc');
      await c.query(long);
      await c.end();
    } finally {
      await proxy.stop();
    }
    const records = readAudit(first);
    assert.deepEqual(
      records.filter((r) => r.audit === 'statement').map((r) => r.sql),
      [long],
      'the statement is recorded in the running sink, its text not cut by the reloaded max_sql_bytes',
    );
    assert.ok(!existsSync(second), 'the reloaded sink path is not opened');
  });

  test('fail-closed with the smallest queues: a Bind of 30 000 parameters still gets its record (the list is cut and counted), not dropped', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    const proxy = await startProxy(
      demoConfig({ withPolicy: true, workers: 1, extra: `audit: { sink: file, parameters: redacted, worker: { buffer_bytes: 65536 }, file: { path: ${JSON.stringify(auditFile)}, max_queued_bytes: 65536 } }\n` }),
    );
    try {
      const c = await RawClient.connect(proxy.port);
      await c.login('reporting-svc', DEMO_USERS['reporting-svc']);
      const n = 30_000;
      const values = Buffer.alloc(2 + 4 * n + 2);
      values.writeInt16BE(n, 0);
      for (let i = 0; i < n; i++) values.writeInt32BE(-1, 2 + 4 * i); // NULL
      c.write(Buffer.concat([parse('big', 'SELECT 1 AS one'), message('B', Buffer.concat([Buffer.from('\0big\0'), Buffer.from([0, 0]), values])), execute(''), sync()]));
      await c.readUntil('Z');
      c.end();
    } finally {
      await proxy.stop();
    }
    const [record] = readAudit(auditFile).filter((r) => r.statement_name === 'big');
    assert.ok(record, 'the statement has its record');
    const kept = record.parameters?.length ?? 0;
    assert.ok(kept > 0 && kept < 30_000, `${kept} parameters kept`);
    assert.equal(kept + (record.parameters_omitted ?? 0), 30_000);
    // The server refused the Bind (the statement takes no parameters): the record says so.
    assert.equal(record.outcome, 'error');
  });

  test('session ids are unique across workers', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: `audit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\n` }));
    try {
      // Connections are spread over the workers by the kernel (SO_REUSEPORT): 16 land on both but for a 2^-15 chance.
      const clients = await Promise.all(Array.from({ length: 16 }, () => connect(proxy.port, 'reporting-svc')));
      await Promise.all(clients.map((c) => c.end()));
    } finally {
      await proxy.stop();
    }
    const connects = readAudit(auditFile).filter((r) => r.audit === 'connect');
    assert.equal(connects.length, 16);
    assert.equal(new Set(connects.map((r) => r.worker)).size, 2, 'both workers took connections');
    assert.equal(new Set(connects.map((r) => r.session)).size, 16, 'every session has its own id');
  });
});

describe('admin status', () => {
  test('GET /status shows the revision, each worker\'s sessions, the audit sink and the latest denials (connect and statement); /status.html renders it', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const proxy = await startProxy(
      demoConfig({ withPolicy: true, workers: 2, extra: `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, file: { path: ${JSON.stringify(path.join(dir, 'audit.log'))} } }\nmetrics: { snapshot_interval_ms: 100 }\n` }),
    );
    try {
      const port = await adminPort(proxy);
      const c = await connect(proxy.port, 'reporting-svc');
      await assert.rejects(c.query('DELETE FROM audited'));
      await assert.rejects(connect(proxy.port, 'reporting-svc', { options: '-c rolegate.role=app_admin' }));
      interface StatusBody {
        revision: string | null;
        uptime_s: number;
        workers: Array<{ worker: number; connections: Record<string, number>; upstreamConnections: number; auditQueue: number }>;
        audit: { healthy: boolean; mode: string; written: number } | null;
        recent_denials: Array<{ kind: string; identity: string; client: string; rule: string | null; command: string | null; session: string }>;
      }
      const body = await waitFor(async () => {
        const res = await fetch(`http://127.0.0.1:${port}/status`);
        assert.equal(res.status, 200);
        const b = (await res.json()) as StatusBody;
        const relay = b.workers.reduce((n, w) => n + (w.connections['relay'] ?? 0), 0);
        return b.recent_denials.length >= 2 && relay >= 1 ? b : null;
      });
      assert.match(body.revision ?? '', /^[0-9a-f]{16}$/);
      assert.deepEqual(body.workers.map((w) => w.worker), [0, 1]);
      assert.equal(body.audit?.healthy, true);
      assert.equal(body.audit?.mode, 'fail-closed');
      const [newest, older] = body.recent_denials;
      assert.deepEqual([newest?.kind, newest?.identity, newest?.rule, newest?.command], ['connect', 'reporting-svc', 'role-not-allowed', null]);
      assert.deepEqual([older?.kind, older?.identity, older?.rule, older?.command, older?.client], ['statement', 'reporting-svc', 'read-only-role', 'DELETE', '127.0.0.1']);
      await c.end();
      const page = await fetch(`http://127.0.0.1:${port}/status.html`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
      assert.match(await page.text(), /<title>rolegate status<\/title>[\s\S]*fetch\('\/status'/);
    } finally {
      await proxy.stop();
    }
  });
});

describe('audit sink failure', () => {
  // The audit file's directory is removed while the proxy runs: the next
  // rotation (max_bytes is small) cannot reopen the path, like a lost volume.
  function failingSinkConfig(mode: string, dir: string): string {
    return `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, mode: ${mode}, file: { path: ${JSON.stringify(path.join(dir, 'audit.log'))}, max_bytes: 4096, keep: 1, retry_ms: 100, max_queued_records: 100 } }\nmetrics: { snapshot_interval_ms: 100 }\n`;
  }

  test('fail-closed (the file sink default): statements are refused with 58030 while audit cannot be written, and allowed again once it can', async () => {
    await ensureDemoDatabase();
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'rolegate-audit-fail-')), 'logs');
    mkdirSync(dir);
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: failingSinkConfig('fail-closed', dir) }));
    try {
      const c = await connect(proxy.port, 'reporting-svc');
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
      rmSync(dir, { recursive: true });
      let refused: (Error & { code?: string }) | null = null;
      for (let i = 0; i < 300 && refused === null; i++) {
        refused = await c.query('SELECT $1::int AS i', [i]).then(
          () => null,
          (e: Error & { code?: string }) => e,
        );
      }
      assert.ok(refused, 'statements are refused once the audit log cannot be written');
      assert.equal(refused.code, '58030');
      const port = await adminPort(proxy);
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 503, 'fail-closed with a failing sink is not ready');
      // The volume comes back: the queued records are written and statements run again.
      mkdirSync(dir);
      const ok = await waitFor(async () =>
        c.query('SELECT 2 AS two').then(
          (r) => r.rows[0] as { two: number },
          () => null,
        ),
      );
      assert.equal(ok.two, 2);
      await c.end();
    } finally {
      await proxy.stop();
    }
  });

  test('best-effort: statements go on and the drops are counted', async () => {
    await ensureDemoDatabase();
    const dir = path.join(mkdtempSync(path.join(tmpdir(), 'rolegate-audit-fail-')), 'logs');
    mkdirSync(dir);
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: failingSinkConfig('best-effort', dir) }));
    try {
      const port = await adminPort(proxy);
      const c = await connect(proxy.port, 'reporting-svc');
      rmSync(dir, { recursive: true });
      for (let i = 0; i < 600; i++) assert.equal((await c.query('SELECT $1::int AS i', [i])).rows[0].i, i);
      await c.end();
      const text = await waitFor(async () => {
        const t = await scrape(port);
        return series(t, 'rolegate_audit_records_dropped_total') > 0 ? t : null;
      });
      assert.equal(series(text, 'rolegate_audit_sink_healthy'), 0);
      assert.ok(series(text, 'rolegate_audit_sink_failures_total') > 0);
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200, 'best-effort: a failing sink does not make the proxy unready');
    } finally {
      await proxy.stop();
    }
  });
});
