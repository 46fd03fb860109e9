// rolegate review over a synthetic log: what the shipped policy grants set
// against what the log shows was used. Table access comes from the recorded
// input, or from the text parsed again when a record has none: both give the
// same findings.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { forEachLine } from '../../src/audit/log-reader.ts';
import { findings, reviewedPolicyFromDir, reviewJson, reviewText, ruleIdsOf, UsageCollector, type ReviewedPolicy } from '../../src/cli/review.ts';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { compilePolicy, PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import { initParser } from '../../src/sql/parser.ts';
import { syntheticAuditLog } from '../helpers/audit-log.ts';

let engine: PolicyEngine;
let policy: ReviewedPolicy;

before(async () => {
  await initParser();
  engine = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath: await ensureOpa() })));
  policy = await reviewedPolicyFromDir(SHIPPED_POLICY_DIR, undefined);
});

describe('review', () => {
  test('rule ids: literal ones, text.field fallbacks, data deny_rule values; built ones by prefix', () => {
    const { rules, prefixes } = ruleIdsOf(
      ['package x\n# "rule": "commented-out"\nd contains {"rule": "a-rule"} if true\ne := {"rule": text.field(c, "deny_rule", "fallback-rule")}\ng := {"rule": concat("", ["allow-", k])}\n'],
      { classes: { w: { deny_rule: 'from-data' } } },
    );
    assert.deepEqual([...rules].sort(), ['a-rule', 'fallback-rule', 'from-data']);
    assert.deepEqual([...prefixes], ['allow-']);
    assert.ok(policy.rules.has('read-only-role') && policy.rules.has('tls-required') && policy.rulePrefixes.has('allow-'));
  });

  for (const input of ['facts', 'off'] as const) {
    test(`findings from a log with input ${input}`, () => {
      const log = syntheticAuditLog({ statements: 2000, engine, input });
      const collector = new UsageCollector();
      forEachLine(Buffer.from(log.map((r) => r.line).join('')), (line) => collector.line(line));
      const usage = collector.usage;
      assert.equal(usage.records, log.length);
      const f = findings(usage, policy);
      assert.deepEqual(f.services_never_seen, ['dba', 'orders-svc-dev']);
      assert.deepEqual(f.roles_never_chosen, { 'orders-svc': ['app_reader'] });
      assert.deepEqual(f.databases_never_used, { 'reporting-svc': ['analytics'], migrator: ['analytics'] });
      // orders-svc (a writer) reads pgbench_accounts and writes it too; migrator (admin) only reads.
      assert.equal(f.write_capable_only_read['orders-svc'], undefined);
      assert.deepEqual(f.write_capable_only_read['migrator'], ['pgbench_accounts']);
      assert.deepEqual(f.write_capable_never_wrote, ['migrator']);
      // A tables.write list already keeps the tables it does not name read-only: those are not candidates.
      const services = policy.data['services'] as Record<string, Record<string, unknown>>;
      const narrowed = { ...policy, data: { ...policy.data, services: { ...services, migrator: { ...services['migrator'], tables: { write: ['other_table'] } } } } };
      assert.equal(findings(usage, narrowed).write_capable_only_read['migrator'], undefined);
      const listed = { ...policy, data: { ...policy.data, services: { ...services, migrator: { ...services['migrator'], tables: { write: ['public.pgbench_accounts'] } } } } };
      assert.deepEqual(findings(usage, listed).write_capable_only_read['migrator'], ['pgbench_accounts']);
      assert.ok(f.rules_never_matched.includes('copy-program'));
      assert.ok(!f.rules_never_matched.includes('read-only-role'), 'reporting-svc was refused writes');
      assert.ok(!f.rules_not_in_sources.includes('allow-write'), 'allow-* is built from a prefix');
      const orders = usage.services.get('orders-svc');
      assert.ok((orders?.tables['pgbench_tellers']?.write ?? 0) > 0);
      const text = reviewText(usage, policy, f, ['x']);
      assert.match(text, /services never seen: dba, orders-svc-dev/);
      assert.match(text, /migrator: pgbench_accounts/);
      const json = reviewJson(usage, policy, f, ['x']) as any;
      assert.equal(json.services['reporting-svc'].roles.app_reader > 0, true);
    });
  }

  test('without a policy only usage is shown; --since leaves earlier records out', () => {
    const log = syntheticAuditLog({ statements: 300, engine, input: 'facts' });
    const cutoff = JSON.parse(log[100]!.line).unix_ms as number;
    const collector = new UsageCollector(cutoff);
    for (const r of log) collector.line(r.line.trimEnd());
    assert.equal(collector.usage.beforeSince, 100);
    assert.equal(collector.usage.records, log.length - 100);
    const f = findings(collector.usage, null);
    assert.deepEqual(f.services_never_seen, []);
    assert.match(f.notes[0] ?? '', /only usage/);
  });
});
