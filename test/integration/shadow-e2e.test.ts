// Shadow mode end to end: a real proxy (2 workers, the shipped policy active,
// audit to a file) with policy.shadow naming the draft the replay test uses
// (exactly two rules added). The scripted workload runs unchanged — the
// candidate never decides what a client gets — and the records the shadow
// marks are exactly the records replay flips; /status and the metrics count
// the candidate's decisions and disagreements. A reload that turns the
// candidate off, and one whose candidate does not build, behave as documented.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { DRAFT_RULES, flipKeys, makeDraftPolicy, runWorkload, sessionsByPort, type WorkloadRun } from '../helpers/replay-workload.ts';

interface Line {
  audit: 'connect' | 'statement';
  session: string;
  seq: number;
  decision: 'allow' | 'deny';
  client: { addr: string; port: number };
  shadow?: { change: string; rule: string | null; reason: string | null; revision: string };
}

async function adminPort(proxy: RunningProxy): Promise<number> {
  const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
  return Number(line['port']);
}

async function getStatus(port: number): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${port}/status`);
  assert.equal(res.status, 200);
  return res.json();
}

async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/** Wait until the workers' metrics snapshots (every 100 ms here) show `want`. */
async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('shadow mode: a draft decided beside the active policy', () => {
  const temporary: string[] = [];
  let proxy: RunningProxy;
  let port = 0;
  let auditFile = '';
  let configFile = '';
  let config = '';
  let workload: WorkloadRun;
  let lines: Line[] = [];

  before(async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-shadow-e2e-'));
    temporary.push(dir);
    auditFile = path.join(dir, 'audit.log');
    const draft = makeDraftPolicy();
    temporary.push(path.dirname(draft));
    config = demoConfig({ withPolicy: true, workers: 2, extra: `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n` }).replace(
      /^policy: \{ dir: (.*) \}$/m,
      (_all, d: string) => `policy: { dir: ${d}, watch: false, shadow: { dir: ${JSON.stringify(draft)} } }`,
    );
    assert.match(config, /shadow: \{ dir:/);
    proxy = await startProxy(config);
    port = await adminPort(proxy);
    configFile = proxy.configFile;
    workload = await runWorkload(proxy.port);
  });

  after(async () => {
    await proxy?.stop('SIGTERM');
    for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
  });

  test('the workload ran as under the active policy alone: the candidate enforced nothing', () => {
    // runWorkload throws on anything but the active policy's answers (a 42501 the script does not expect included).
    assert.ok(workload.records.some((r) => r.allowed && r.draft === 'flips'), 'statements the draft denies were allowed and ran');
  });

  test('the records marked by the shadow are exactly the ones replay flips, with the draft\'s rules', async () => {
    await eventually(
      () => Promise.resolve(readFileSync(auditFile, 'utf8').split('\n').filter((l) => l !== '').length),
      (n) => n >= workload.records.length + 5,
      'audit records written',
    );
    lines = readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Line);
    const expected = flipKeys(workload, sessionsByPort(lines));
    const marked = lines.filter((l) => l.audit === 'statement' && l.shadow !== undefined);
    assert.deepEqual(marked.map((l) => `${l.session}#${l.seq}`).sort(), expected);
    for (const l of marked) {
      assert.equal(l.decision, 'allow');
      assert.equal(l.shadow?.change, 'allow_to_deny');
      assert.ok(l.shadow?.rule === DRAFT_RULES.reportingCustomers || l.shadow?.rule === DRAFT_RULES.migratorCreateTable, String(l.shadow?.rule));
      assert.match(l.shadow?.reason ?? '', /\(draft\)$/);
    }
    assert.equal(lines.filter((l) => l.audit === 'connect' && l.shadow !== undefined).length, 0, 'the draft changes no connect decision');
  });

  test('/status and the metrics count the candidate\'s decisions and disagreements', async () => {
    const sessions = new Set(workload.records.map((r) => r.port)).size;
    const connects = sessions + workload.deniedConnects.length;
    // The workers report every 100 ms: wait until /status and /metrics show the same, complete counts.
    const { status, statements } = await eventually(
      async () => ({ status: await getStatus(port), statements: await metric(port, 'rolegate_shadow_decisions_total', { kind: 'statement' }), connectDecisions: await metric(port, 'rolegate_shadow_decisions_total', { kind: 'connect' }) }),
      (v) => v.connectDecisions === connects && v.status.policy.shadow !== null && v.status.policy.shadow.decisions === connects + v.statements && v.statements >= new Set(workload.records.map((r) => `${r.port}|${r.sql}`)).size,
      '/status and /metrics shadow counts',
    );
    const shadow = status.policy.shadow;
    assert.notEqual(shadow.revision, status.policy.revision, 'the candidate is its own revision');
    assert.equal(shadow.disagreements.deny_to_allow, 0);
    // One disagreement per decision: a named statement's Parse is decided once however often it runs.
    const distinct = new Set(workload.expectedFlips().map((r) => `${r.port}|${r.sql}`)).size;
    assert.equal(shadow.disagreements.allow_to_deny, distinct);
    assert.equal(await metric(port, 'rolegate_shadow_disagreements_total', { kind: 'statement', change: 'allow_to_deny' }), distinct);
    // Every login (the workload's sessions and its refused one) and every Query or Parse was decided by the candidate too.
    assert.equal(shadow.decisions, connects + statements);
    assert.ok(statements >= new Set(workload.records.map((r) => `${r.port}|${r.sql}`)).size, `${statements} statement decisions`);
  });

  test('a reload whose candidate does not build keeps the previous candidate and says why; one without policy.shadow turns it off', async () => {
    const before = (await getStatus(port)).policy.shadow.revision as string;
    const broken = makeDraftPolicy();
    temporary.push(path.dirname(broken));
    writeFileSync(path.join(broken, 'broken.rego'), 'package rolegate.commands\n\ndenials contains x if {\n');
    writeFileSync(configFile, config.replace(/shadow: \{ dir: [^}]*\}/, `shadow: { dir: ${JSON.stringify(broken)} }`));
    const refused = await (await fetch(`http://127.0.0.1:${port}/reload`, { method: 'POST' })).json();
    assert.match(JSON.stringify(refused), /shadow policy refused/);
    assert.equal((await getStatus(port)).policy.shadow.revision, before);

    writeFileSync(configFile, config.replace(/, shadow: \{ dir: [^}]*\}/, ''));
    const off = (await (await fetch(`http://127.0.0.1:${port}/reload`, { method: 'POST' })).json()) as { ok: boolean };
    assert.equal(off.ok, true, JSON.stringify(off));
    assert.equal((await getStatus(port)).policy.shadow, null);
  });
});
