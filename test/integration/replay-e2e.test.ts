// Replay end to end: a real proxy (2 workers, the shipped policy, audit to a
// file with audit.input: facts, revisions kept) records a scripted workload
// of several services — allowed and denied, simple and extended protocol.
// `rolegate replay` against a draft that adds exactly two rules must name
// exactly the records those rules flip (the workload knows which, without
// reading the log) and exit 1; with --allow-new-denials, 0. Replayed against
// the unchanged policy nothing changes; against the kept revision as the
// baseline, the same records flip. `rolegate review` reads the same log.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { CLI, startProxy } from '../helpers/proxy.ts';
import { DRAFT_RULES, flipKeys, makeDraftPolicy, runWorkload, sessionsByPort, type WorkloadRun } from '../helpers/replay-workload.ts';
import { SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';

interface Line {
  audit: 'connect' | 'statement';
  session: string;
  seq: number;
  decision: 'allow' | 'deny';
  rule: string | null;
  client: { addr: string; port: number };
  identity: { name: string };
  policy_revision: string;
  input?: Record<string, any>;
}

/**
 * The demo config's proxy.env / proxy.instance: what a connect record rebuilt
 * from its own fields (one recorded without input) is decided with.
 */
const PROXY_FLAGS = ['--env', 'prod', '--instance', 'rolegate-demo'];

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args, ...(args[0] === 'replay' ? PROXY_FLAGS : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

function json(out: { code: number | null; stdout: string; stderr: string }): any {
  try {
    return JSON.parse(out.stdout);
  } catch {
    assert.fail(`not JSON (exit ${out.code}):\n${out.stdout}\n${out.stderr}`);
  }
}

describe('replay of a recorded workload against a draft', () => {
  let auditFile = '';
  let revisionsDir = '';
  let workload: WorkloadRun;
  let lines: Line[] = [];
  let draft = '';
  let expected: string[] = [];
  const temporary: string[] = [];

  before(async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-replay-e2e-'));
    temporary.push(dir);
    auditFile = path.join(dir, 'audit.log');
    revisionsDir = path.join(dir, 'revisions');
    const config = demoConfig({ withPolicy: true, workers: 2, extra: `audit: { sink: file, input: facts, file: { path: ${JSON.stringify(auditFile)} } }\n` }).replace(
      /^policy: \{ dir: (.*) \}$/m,
      (_all, d: string) => `policy: { dir: ${d}, revisions: { dir: ${JSON.stringify(revisionsDir)}, max_count: 5 } }`,
    );
    assert.match(config, /revisions: \{ dir:/);
    const proxy = await startProxy(config);
    try {
      workload = await runWorkload(proxy.port);
    } finally {
      assert.equal(await proxy.stop('SIGTERM'), 0);
    }
    lines = readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Line);
    expected = flipKeys(workload, sessionsByPort(lines));
    draft = makeDraftPolicy();
    temporary.push(path.dirname(draft));
  });

  after(() => {
    for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
  });

  test('the workload was recorded with its input, and the knowledge of the script matches the log', () => {
    const statements = lines.filter((l) => l.audit === 'statement');
    assert.equal(statements.length, workload.records.length);
    const sessions = sessionsByPort(lines);
    for (const r of workload.records) {
      const line = statements.find((l) => l.session === sessions.get(r.port) && l.seq === r.seq);
      assert.ok(line !== undefined, `a record for ${r.user} seq ${r.seq}: ${r.sql}`);
      assert.equal(line.decision, r.allowed ? 'allow' : 'deny', r.sql);
      assert.ok(line.input?.statement?.command, `facts recorded for ${r.sql}`);
      assert.equal(typeof line.input?.session?.in_transaction, 'boolean');
      assert.equal(typeof line.input?.time?.unix_ns, 'number');
    }
    assert.ok(workload.records.some((r) => r.protocol === 'simple' && !r.allowed) && workload.records.some((r) => r.protocol === 'extended' && !r.allowed));
    assert.ok(lines.some((l) => l.audit === 'connect' && l.decision === 'deny'));
    // Both draft rules are exercised, by both protocols.
    const flips = workload.expectedFlips();
    assert.ok(flips.some((r) => r.user === 'reporting-svc' && r.protocol === 'simple') && flips.some((r) => r.user === 'reporting-svc' && r.protocol === 'extended'));
    assert.ok(flips.some((r) => r.user === 'migrator' && r.protocol === 'simple') && flips.some((r) => r.user === 'migrator' && r.protocol === 'extended'));
    assert.ok(expected.length >= 6);
  });

  test('the revision that decided is kept', () => {
    const revision = lines[0]!.policy_revision;
    assert.ok(readdirSync(revisionsDir).includes(revision));
    assert.ok(readdirSync(path.join(revisionsDir, revision)).includes('policy.wasm'));
  });

  test('replay against the draft names exactly the flipped records and exits 1; --allow-new-denials exits 0', async () => {
    for (const workers of ['2', '0']) {
      const out = await run(['replay', '--audit', auditFile, '--policy', draft, '--json', '--workers', workers]);
      assert.equal(out.code, 1, out.stderr);
      const report = json(out);
      const got = (report.changes as any[]).map((c) => `${c.session}#${c.seq}`).sort();
      assert.deepEqual(got, expected);
      assert.equal(report.allow_to_deny.total, expected.length);
      assert.equal(report.deny_to_allow.total, 0);
      assert.equal(report.changes_omitted, 0);
      assert.deepEqual(Object.keys(report.allow_to_deny.by_rule).sort(), [DRAFT_RULES.migratorCreateTable, DRAFT_RULES.reportingCustomers].sort());
      assert.deepEqual(Object.keys(report.allow_to_deny.by_service).sort(), ['migrator', 'reporting-svc']);
      assert.equal(report.allow_to_deny.by_command['CREATE TABLE'], workload.expectedFlips().filter((r) => r.user === 'migrator').length);
      const connects = lines.filter((l) => l.audit === 'connect').length;
      assert.equal(report.decided.statement, workload.records.length);
      assert.equal(report.decided.connect, connects);
      // Connect records carry their input too (audit.input: facts): every decision is rebuilt from it.
      assert.equal(report.rebuilt.facts, workload.records.length + connects);
      assert.deepEqual(report.refused, {});
      for (const c of report.changes) assert.equal(c.after.decision, 'deny');
    }
    const accepted = await run(['replay', '--audit', auditFile, '--policy', draft, '--allow-new-denials']);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, /allow → deny: \d+/);
    assert.match(accepted.stdout, new RegExp(`reporting-svc · ${DRAFT_RULES.reportingCustomers} · SELECT: \\d+`));
  });

  test('replay against the unchanged policy changes nothing a statement decided', async () => {
    const out = await run(['replay', '--audit', auditFile, '--policy', SHIPPED_POLICY_DIR, '--json', '--workers', '1']);
    assert.equal(out.code, 0, out.stderr);
    const report = json(out);
    assert.equal(report.allow_to_deny.total, 0);
    assert.equal(report.deny_to_allow.total, 0);
    assert.ok(report.rule_changed <= 20);
    assert.deepEqual(
      (report.rule_changes as any[]).filter((c) => c.audit === 'statement'),
      [],
    );
  });

  test('with the kept revision as the baseline, the same records flip', async () => {
    const revision = lines[0]!.policy_revision;
    const out = await run(['replay', '--audit', auditFile, '--policy', draft, '--baseline', revision, '--revisions', revisionsDir, '--json']);
    assert.equal(out.code, 1, out.stderr);
    const report = json(out);
    assert.deepEqual(report.baseline, { revision });
    assert.deepEqual((report.changes as any[]).map((c) => `${c.session}#${c.seq}`).sort(), expected);
    // Both sides decide the same rebuilt input: connect records agree too (rebuilt or not).
    assert.ok(report.rule_changed <= 20);
    assert.deepEqual((report.rule_changes as any[]).filter((c) => c.audit === 'connect'), []);
    const fromRevision = await run(['replay', '--audit', auditFile, '--policy-revision', revision, '--revisions', revisionsDir, '--json']);
    assert.equal(fromRevision.code, 0, fromRevision.stderr);
    assert.equal(json(fromRevision).allow_to_deny.total, 0);
  });

  test('usage errors exit 2, a draft that does not build exits 3', async () => {
    assert.equal((await run(['replay', '--policy', draft])).code, 2);
    assert.equal((await run(['replay', '--audit', auditFile])).code, 2);
    const broken = makeDraftPolicy();
    temporary.push(path.dirname(broken));
    writeFileSync(path.join(broken, 'broken.rego'), 'package rolegate.commands\n\ndenials contains x if {\n');
    const out = await run(['replay', '--audit', auditFile, '--policy', broken]);
    assert.equal(out.code, 3, out.stderr);
  });

  test('review: services never seen, roles never chosen, tables only read by a service that may write', async () => {
    const out = await run(['review', '--audit', auditFile, '--policy', SHIPPED_POLICY_DIR, '--json']);
    assert.equal(out.code, 0, out.stderr);
    const report = json(out);
    const f = report.findings;
    assert.ok(f.services_never_seen.includes('dba'));
    assert.ok(!f.services_never_seen.includes('reporting-svc'));
    assert.deepEqual(f.roles_never_chosen['orders-svc'], undefined, 'orders-svc used both its roles');
    assert.deepEqual(f.databases_never_used['reporting-svc'], ['analytics']);
    assert.ok(f.write_capable_only_read['orders-svc'].includes('customers'));
    assert.ok(!f.write_capable_only_read['orders-svc'].includes('orders'), 'orders-svc wrote orders');
    assert.ok(f.write_capable_only_read['migrator'].includes('customers'));
    assert.equal(f.write_capable_only_read['reporting-svc'], undefined, 'a reader role cannot write');
    assert.ok(f.rules_never_matched.includes('copy-program'));
    assert.ok(!f.rules_never_matched.includes('read-only-role'));
    const text = await run(['review', '--audit', auditFile, '--policy', SHIPPED_POLICY_DIR, '--since', '2999-01-01T00:00:00Z']);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /0 records/);
  });
});
