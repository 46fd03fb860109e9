// An authenticated client does not set the proxy's log volume: thousands of
// denied statements (and a run of denied logins) through the real proxy
// (shipped policy, one worker, real PostgreSQL) give a bounded number of log
// lines plus "log lines suppressed" counts, while the metrics count every one.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type pg from 'pg';
import { CLIENT_LINE_WINDOW_MS, CLIENT_LINES_PER_WINDOW } from '../../src/session/client-log-lines.ts';
import { connect, demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';

async function adminPort(proxy: RunningProxy): Promise<number> {
  const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
  return Number(line['port']);
}

/** The value of one series in Prometheus text exposition, 0 when absent. */
function series(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function metric(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return series(await res.text(), name, labels);
}

/** Lines written with message `msg`, and the sum of the suppressed counts reported for it. */
function tally(proxy: RunningProxy, msg: string): { written: number; suppressed: number; reports: number } {
  const written = proxy.logs.filter((l) => l['msg'] === msg).length;
  const reports = proxy.logs.filter((l) => l['lines'] === msg);
  return { written, suppressed: reports.reduce((n, l) => n + Number(l['suppressed']), 0), reports: reports.length };
}

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    assert.ok(Date.now() < deadline, `${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** At most this many lines of one kind from one worker in `elapsedMs`: a budget per window begun. */
function bound(elapsedMs: number): number {
  return CLIENT_LINES_PER_WINDOW * (Math.floor(elapsedMs / CLIENT_LINE_WINDOW_MS) + 1);
}

describe('log volume under a flood of denials', { timeout: 120_000 }, () => {
  test('2 000 denied statements and 30 denied logins: at most the budget in lines, the rest counted; the metrics count all', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 1, extra: 'admin: { host: 127.0.0.1, port: 0 }\nmetrics: { snapshot_interval_ms: 100 }\n' }));
    try {
      const admin = await adminPort(proxy);

      // Denied statements, as fast as one connection goes (rule read-only-role).
      const flood = 2000;
      const client = await connect(proxy.port, 'reporting-svc');
      const t0 = Date.now();
      try {
        for (let i = 0; i < flood; i++) {
          await assert.rejects(client.query(`DELETE FROM orders WHERE id = ${i}`), (err: pg.DatabaseError) => err.code === '42501');
        }
      } finally {
        await client.end();
      }
      const statementsMs = Date.now() - t0;

      // Denied logins: reporting-svc may not use app_admin (28000).
      const attempts = CLIENT_LINES_PER_WINDOW + 10;
      const t1 = Date.now();
      for (let i = 0; i < attempts; i++) {
        await assert.rejects(connect(proxy.port, 'reporting-svc', { options: '-c rolegate.role=app_admin' }), (err: pg.DatabaseError) => err.code === '28000');
      }
      const loginsMs = Date.now() - t1;

      // The metrics count every one.
      await until('rolegate_statement_denials_total reaches the flood', async () => (await metric(admin, 'rolegate_statement_denials_total', { rule: 'read-only-role' })) >= flood, 10_000);
      assert.equal(await metric(admin, 'rolegate_statement_denials_total', { rule: 'read-only-role' }), flood);
      await until('every refused login is counted', async () => (await metric(admin, 'rolegate_client_connections_refused_total', { reason: 'policy_denied' })) >= attempts, 10_000);
      assert.equal(await metric(admin, 'rolegate_client_connections_refused_total', { reason: 'policy_denied' }), attempts);

      // The log: a bounded number of lines of each kind, every other one counted in a
      // "suppressed" line (written when its window ends, so wait for the last window).
      await until(
        'written + suppressed accounts for every denial',
        () => {
          const s = tally(proxy, 'statement denied');
          const c = tally(proxy, 'connection denied');
          return s.written + s.suppressed >= flood && c.written + c.suppressed >= attempts;
        },
        CLIENT_LINE_WINDOW_MS + 5000,
      );
      const s = tally(proxy, 'statement denied');
      assert.ok(s.written <= bound(statementsMs), `${s.written} "statement denied" lines in ${statementsMs} ms`);
      assert.ok(s.written >= CLIENT_LINES_PER_WINDOW, 'the first lines of a flood are written');
      assert.ok(s.reports >= 1 && s.suppressed > 0, 'a suppressed count was reported');
      assert.equal(s.written + s.suppressed, flood, 'written + suppressed = every denied statement');
      const report = proxy.logs.find((l) => l['lines'] === 'statement denied');
      assert.equal(report?.['msg'], `log lines suppressed: ${String(report?.['suppressed'])} more "statement denied" lines in ${CLIENT_LINE_WINDOW_MS / 1000} s`);
      assert.equal(report?.['level'], 40, 'warn');

      const c = tally(proxy, 'connection denied');
      assert.equal(c.written + c.suppressed, attempts, 'written + suppressed = every denied login');
      assert.ok(loginsMs < CLIENT_LINE_WINDOW_MS, `the logins took ${loginsMs} ms: too slow to overrun one window`);
      assert.equal(c.written, CLIENT_LINES_PER_WINDOW, 'one window: its budget of lines, the rest counted');
    } finally {
      await proxy.stop();
    }
  });
});
