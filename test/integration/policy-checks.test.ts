// A running proxy refuses a reload whose policy fails a build-time check — a
// misspelt input field, a builtin the wasm target lacks, a decision without
// `allow`, a Rego syntax error — says why (the reload command's output and exit
// status, the log, /status), and keeps deciding with the policy it had.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { connect, demoConfig, deniedWith, ensureDemoDatabase } from '../helpers/fixture.ts';
import { CLI, startProxy, type RunningProxy } from '../helpers/proxy.ts';

/** A small policy of the test's own: the shipped library changes, this does not. */
const POLICY = `package rolegate

default connect := {"allow": false, "role": null, "database": null, "rule": "default-deny", "reason": "unknown service"}

connect := {"allow": true, "role": "app_reader", "database": null, "rule": "reader-login", "reason": "known service"} if {
\tinput.identity.name in {"orders-svc", "reporting-svc"}
}

default statement := {"allow": false, "rule": "only-select", "reason": "only SELECT is allowed"}

statement := {"allow": true, "rule": "select-ok", "reason": "SELECT is allowed"} if {
\tinput.statement.command == "SELECT"
}
`;

interface StatusBody {
  revision: string | null;
  policy: { revision: string | null; last_reload: { at: string; ok: boolean; reason: string; revision: string | null; code: string | null; error: string | null } | null };
}

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

describe('reload refuses a policy that fails the build checks', () => {
  let dir: string;
  let proxy: RunningProxy;
  let admin: string;
  let client: pg.Client;

  const statusNow = async (): Promise<StatusBody> => {
    const res = await fetch(`${admin}/status`);
    assert.equal(res.status, 200);
    return (await res.json()) as StatusBody;
  };

  /** The running policy still decides: for the open session and for a new connection. */
  const oldPolicyDecides = async (label: string): Promise<void> => {
    assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1, label);
    await deniedWith(client.query('CREATE TABLE rg_checks_never (id int)'), 'only-select');
    const fresh = await connect(proxy.port, 'reporting-svc');
    try {
      assert.equal((await fresh.query('SELECT 2 AS two')).rows[0].two, 2, label);
      await deniedWith(fresh.query('DELETE FROM orders'), 'only-select');
    } finally {
      await fresh.end();
    }
  };

  before(async () => {
    await ensureDemoDatabase();
    dir = mkdtempSync(path.join(tmpdir(), 'rolegate-checks-policy-'));
    writeFileSync(path.join(dir, 'rolegate.rego'), POLICY);
    const base = demoConfig({ withPolicy: true, workers: 1, extra: 'admin: { host: 127.0.0.1, port: 0 }\n' });
    // No file watch: each reload in this test is the one it asks for.
    const config = base.replace(/^policy: .*$/m, `policy: { dir: ${JSON.stringify(dir)}, watch: false }`);
    assert.notEqual(config, base);
    proxy = await startProxy(config);
    const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
    admin = `http://127.0.0.1:${Number(line['port'])}`;
    client = await connect(proxy.port, 'orders-svc');
  });

  after(async () => {
    await client?.end().catch(() => {});
    await proxy?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: Array<{ name: string; files: Record<string, string>; expect: RegExp[] }> = [
    {
      name: 'a misspelt input field (input.statement.comand)',
      files: { 'rolegate.rego': POLICY.replace('input.statement.command', 'input.statement.comand') },
      expect: [/rolegate\.rego:12: rego_type_error: undefined ref: input\.statement\.comand/, /have: "comand"/],
    },
    {
      name: 'time.now_ns()',
      files: { 'clock.rego': 'package rolegate.clock\n\nlate if time.now_ns() > 0\n' },
      expect: [/clock\.rego:3: time\.now_ns is not available in the wasm target: use input\.time \(rolegate supplies the time\)/],
    },
    {
      name: 'a decision without allow',
      files: { 'rolegate.rego': POLICY.replace('default statement := {"allow": false, ', 'default statement := {') },
      expect: [/rolegate\/statement: the answer has no allow \(keys: reason, rule\)/, /it answered \{"reason":"only SELECT is allowed","rule":"only-select"\}/],
    },
    {
      name: 'a Rego syntax error',
      files: { 'broken.rego': 'package rolegate\n\nthis is not rego {\n' },
      expect: [/broken\.rego:\d+: rego_parse_error/],
    },
  ];

  test('each refused with a message naming the problem; the old policy keeps deciding, its revision unchanged', async () => {
    await oldPolicyDecides('before any reload');
    const revision = (await statusNow()).policy.revision;
    assert.match(revision ?? '', /^[0-9a-f]{16}$/);

    for (const [index, { name, files, expect }] of cases.entries()) {
      for (const [file, text] of Object.entries(files)) writeFileSync(path.join(dir, file), text);
      // The last case goes through SIGHUP (the CLI can then only say the signal went out); the others through POST /reload.
      const viaSignal = index === cases.length - 1;
      const logged = proxy.waitForLog((l) => l['msg'] === 'policy reload failed' && expect.every((re) => re.test(String(l['err']))), 60_000);
      if (viaSignal) {
        const sent = await runCli(['reload', '--pid', String(proxy.child.pid)]);
        assert.equal(sent.code, 0, sent.stderr);
        assert.match(sent.stdout, /sent SIGHUP/);
      } else {
        const reload = await runCli(['reload', '--admin', admin]);
        assert.equal(reload.code, 3, `${name}: ${reload.stdout}${reload.stderr}`);
        assert.match(reload.stderr, new RegExp(`^reload refused: policy refused; revision ${revision} stays active: `), name);
        for (const re of expect) assert.match(reload.stderr, re, name);
      }
      const line = await logged;
      assert.equal(line['revision'], revision, name);

      const now = await statusNow();
      assert.equal(now.policy.revision, revision, `${name}: revision unchanged`);
      assert.equal(now.revision, revision);
      const last = now.policy.last_reload;
      assert.ok(last !== null, name);
      assert.equal(last.ok, false, name);
      assert.equal(last.reason, viaSignal ? 'SIGHUP' : 'admin POST /reload');
      assert.ok(last.code === 'RG_POLICY_CHECK' || last.code === 'RG_POLICY_BUILD', `${name}: ${last.code}`);
      for (const re of expect) assert.match(last.error ?? '', re, name);

      await oldPolicyDecides(name);
      for (const file of Object.keys(files)) {
        if (file === 'rolegate.rego') writeFileSync(path.join(dir, file), POLICY);
        else rmSync(path.join(dir, file));
      }
    }

    // The same directory, repaired and changed, is accepted: the refusals above were the checks, not the setup.
    writeFileSync(path.join(dir, 'rolegate.rego'), POLICY.replace('"only SELECT is allowed"', '"only SELECT, since the reload"'));
    const reload = await runCli(['reload', '--admin', admin]);
    assert.equal(reload.code, 0, reload.stdout + reload.stderr);
    const accepted = await statusNow();
    assert.notEqual(accepted.policy.revision, revision);
    assert.match(reload.stdout, new RegExp(`^reloaded: policy ${accepted.policy.revision} active in 1 workers\\n$`));
    assert.equal(accepted.policy.last_reload?.ok, true);
    assert.equal(accepted.policy.last_reload?.error, null);
    const err = await deniedWith(client.query('CREATE TABLE rg_checks_never (id int)'), 'only-select');
    assert.match(`${err.message} ${err.detail ?? ''}`, /only SELECT, since the reload/);

    // --json prints the proxy's answer as it is.
    const json = await runCli(['reload', '--admin', admin, '--json']);
    assert.equal(json.code, 0);
    const body = JSON.parse(json.stdout) as { ok: boolean; changed: boolean; revision: string };
    assert.deepEqual([body.ok, body.changed, body.revision], [true, false, accepted.policy.revision]);
    assert.equal(readFileSync(path.join(dir, 'rolegate.rego'), 'utf8').includes('since the reload'), true);
  });
});
