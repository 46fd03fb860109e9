// What a policy author sees in the log of the real proxy (2 workers, real
// PostgreSQL): Rego print() lines and evaluation failures, each naming the
// session and the statement, rate-limited per worker; and time.* settings
// that a reload applies to the next decisions.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type pg from 'pg';
import { connect, demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { policyCopy, withPolicyDir } from '../helpers/security.ts';

const scratch: string[] = [];
after(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

const STATEMENT_RULE = 'statement := {"allow": false, "rule": d.rule, "reason": d.reason} if {';

/** The shipped policy, its statement rule printing, plus a rule that conflicts with it for one table. */
function printingPolicy(): string {
  const dir = policyCopy();
  scratch.push(dir);
  const file = path.join(dir, 'rolegate.rego');
  const rego = readFileSync(file, 'utf8');
  assert.ok(rego.includes(STATEMENT_RULE), 'the shipped entry point has the statement rule this test edits');
  writeFileSync(file, rego.replace(STATEMENT_RULE, `${STATEMENT_RULE}\n\tprint("deciding", input.statement.command, "on", [t.name | some t in input.statement.tables], "as", input.session.role)`));
  // Two complete definitions of `statement` with different values for one
  // table: the wasm aborts the evaluation ("var assignment conflict").
  writeFileSync(
    path.join(dir, 'conflict.rego'),
    [
      'package rolegate',
      '',
      'statement := {"allow": true, "rule": "conflict", "reason": "disagrees with the entry point"} if {',
      '\tsome t in input.statement.tables',
      '\tt.name == "boom_table"',
      '}',
      '',
    ].join('\n'),
  );
  return dir;
}

describe('policy print() and evaluation failures in the proxy log', { timeout: 120_000 }, () => {
  let proxy: RunningProxy | null = null;
  after(async () => {
    await proxy?.stop();
  });

  test('print() output and failures name the session and the SQL; failures are rate-limited', async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 2 }), printingPolicy()));
    const running = proxy;
    const client = await connect(running.port, 'reporting-svc');
    try {
      const ready = await running.waitForLog((l) => l['msg'] === 'session ready');
      const session = ready['session'];
      assert.equal(typeof session, 'string');

      // print() in the statement rule: one info line per evaluation.
      const sql = 'SELECT id, total FROM orders WHERE id = 7';
      assert.equal((await client.query(sql)).rows.length, 1, 'print() does not change the decision');
      const printed = await running.waitForLog((l) => l['msg'] === 'policy print');
      assert.equal(printed['level'], 30, 'info');
      assert.equal(printed['print'], 'deciding SELECT on ["orders"] as app_reader');
      assert.equal(printed['entrypoint'], 'rolegate/statement');
      assert.equal(printed['sql'], sql);
      assert.equal(printed['identity'], 'reporting-svc');
      assert.equal(printed['session'], session, 'the print line names the session');

      // An evaluation failure: the client gets 42501, the log names session and SQL (bounded).
      const boom = `SELECT * FROM boom_table WHERE note = '${'x'.repeat(400)}'`;
      await assert.rejects(client.query(boom), (err: pg.DatabaseError) => err.code === '42501' && /policy evaluation failed \(RG_POLICY_EVAL\)/.test(err.message));
      const failed = await running.waitForLog((l) => l['msg'] === 'policy evaluation failed');
      assert.equal(failed['level'], 40, 'warn');
      assert.equal(failed['session'], session, 'the failure names the session');
      assert.equal(failed['entrypoint'], 'rolegate/statement');
      assert.equal(failed['identity'], 'reporting-svc');
      assert.equal(failed['code'], 'RG_POLICY_EVAL');
      assert.match(String(failed['err']), /conflict/);
      assert.ok(String(failed['sql']).startsWith(boom.slice(0, 200)));
      assert.ok(String(failed['sql']).length < 240, 'the SQL is cut short');

      // A flood of failing statements (distinct tables, so distinct facts: no cached decision):
      // at most 20 lines per second per worker, the rest counted.
      const before = running.logs.filter((l) => l['msg'] === 'policy evaluation failed').length;
      const flood = 300;
      const t0 = Date.now();
      for (let i = 0; i < flood; i++) await assert.rejects(client.query(`SELECT 1 FROM boom_table, flood_${i}`));
      const seconds = Math.ceil((Date.now() - t0) / 1000) + 1;
      // Every failure is either written or counted in a "suppressed" line (reported when its second ends).
      const counted = (): number =>
        running.logs.filter((l) => l['msg'] === 'policy evaluation failed').length -
        before +
        running.logs.filter((l) => l['lines'] === 'policy evaluation failed').reduce((n, l) => n + Number(l['suppressed']), 0);
      for (let i = 0; i < 30 && counted() < flood; i++) await new Promise((resolve) => setTimeout(resolve, 100));
      const written = running.logs.filter((l) => l['msg'] === 'policy evaluation failed').length - before;
      assert.ok(written <= 20 * seconds, `${written} lines in ~${seconds} s from one worker`);
      assert.ok(written < flood, 'lines were suppressed');
      assert.equal(counted(), flood, 'written + suppressed = every failure of the flood');
    } finally {
      await client.end();
    }
  });
});

describe('time settings on reload', { timeout: 120_000 }, () => {
  let proxy: RunningProxy | null = null;
  after(async () => {
    await proxy?.stop();
  });

  test('time.zone, time.fixed and time.bucket_ms apply to the next decisions after SIGHUP', async () => {
    await ensureDemoDatabase();
    // Denies every statement, saying what time it saw: the client reads input.time in the message.
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-clock-policy-'));
    scratch.push(dir);
    writeFileSync(
      path.join(dir, 'clock.rego'),
      [
        'package rolegate',
        '',
        'connect := {"allow": true, "role": "app_reader", "database": "app", "rule": "any", "reason": "test"}',
        '',
        'statement := {"allow": false, "rule": "clock", "reason": sprintf("%v %v %v:%v at %v", [input.time.tz, input.time.weekday, input.time.hour, input.time.minute, input.time.rfc3339])}',
        '',
      ].join('\n'),
    );
    const base = withPolicyDir(demoConfig({ withPolicy: true, workers: 2 }), dir);
    proxy = await startProxy(`${base}time: { zone: UTC, fixed: "2026-11-23T10:00:00Z", bucket_ms: 60000 }\n`);
    const running = proxy;
    const client = await connect(running.port, 'reporting-svc');
    const seen = async (): Promise<string> => {
      const err = await client.query('SELECT 1').then(
        () => null,
        (e: Error) => e,
      );
      assert.ok(err !== null);
      const m = /rule "clock": (.*)$/.exec(err.message);
      assert.ok(m?.[1], err.message);
      return m[1];
    };
    try {
      const first = await seen();
      assert.match(first, /^UTC Monday 10:0 at 2026-11-23T10:00:\d\d\.\d{3}(Z|\+00:00)$/);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.equal(await seen(), first, 'one decision per 60 s bucket: the cached one');

      // Tokyo, a Saturday 23:30 UTC (Sunday 08:30 there), and 1 s buckets.
      writeFileSync(running.configFile, `${base}time: { zone: Asia/Tokyo, fixed: "2026-11-28T23:30:00Z", bucket_ms: 1000 }\n`, { mode: 0o600 });
      const mark = running.logs.length;
      running.child.kill('SIGHUP');
      await running.waitForLog((l) => l['msg'] === 'config reload: new time settings apply to the next decisions' && running.logs.indexOf(l) >= mark);
      let now = await seen();
      for (let i = 0; i < 100 && now === first; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        now = await seen();
      }
      assert.match(now, /^Asia\/Tokyo Sunday 8:30 at 2026-11-29T08:30:\d\d\.\d{3}\+09:00$/, 'zone and fixed time applied to the open session');
      const applied = running.logs.filter((l) => l['msg'] === 'time settings applied' && running.logs.indexOf(l) >= mark);
      assert.ok(applied.length >= 1 && applied.every((l) => l['zone'] === 'Asia/Tokyo' && l['bucketMs'] === 1000));
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const later = await seen();
      assert.notEqual(later, now, 'a new decision after 1 s: bucket_ms applied');
      assert.match(later, /^Asia\/Tokyo Sunday 8:30 /, 'the fixed clock runs on from its new start');

      // A reload that leaves time.* alone keeps the running clock (no jump back to the fixed start).
      const mark2 = running.logs.length;
      running.child.kill('SIGHUP');
      await running.waitForLog((l) => l['msg'] === 'config reload' && running.logs.indexOf(l) >= mark2);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const at = (text: string): number => Date.parse(/ at (\S+)$/.exec(text)?.[1] ?? '');
      assert.ok(at(await seen()) > at(later), 'time keeps advancing');
      assert.equal(running.logs.filter((l) => l['msg'] === 'time settings applied' && running.logs.indexOf(l) >= mark2).length, 0);
    } finally {
      await client.end();
    }
  });
});
