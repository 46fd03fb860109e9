// Replay (src/cli/replay.ts, replay-worker.ts) over synthetic logs written by
// the real record builder: the unchanged policy changes nothing, whichever way
// records were rebuilt; a draft flips exactly the records the generator knows
// it must, both ways; the piscina pool and the inline path agree; lines that
// are not records, rolegate's own refusals and records that cannot be rebuilt
// are counted, not decided; a kept revision serves as the baseline.

import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { auditFiles, readLineChunks } from '../../src/audit/log-reader.ts';
import { formatRecord, newRecord } from '../../src/audit/record.ts';
import { policyFromDir, policyFromRevision, replayFiles, replayJson, replayText, type ReplayReport } from '../../src/cli/replay.ts';
import type { ReplayOptions, ReplayPolicy, ReplayTally } from '../../src/cli/replay-worker.ts';
import { SHIPPED_POLICY_DIR, buildPolicy } from '../../src/policy/build.ts';
import { PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import { keepRevision } from '../../src/policy/revisions.ts';
import { initParser } from '../../src/sql/parser.ts';
import { syntheticAuditLog, type SyntheticRecord } from '../helpers/audit-log.ts';

let opaPath = '';
let shipped: ReplayPolicy;
let draft: ReplayPolicy;
let engine: PolicyEngine;
const work = mkdtempSync(path.join(tmpdir(), 'rolegate-replay-unit-'));

/** orders-svc may no longer update pgbench_tellers (allow → deny); app_reader becomes a writer (its denied UPDATEs: deny → allow). */
function makeDraft(): string {
  const dir = path.join(work, 'draft');
  cpSync(SHIPPED_POLICY_DIR, dir, { recursive: true });
  writeFileSync(
    path.join(dir, 'draft.rego'),
    `package rolegate.commands

denials contains {"priority": 75, "rule": "draft-no-tellers", "reason": "orders-svc may not update tellers"} if {
	input.identity.name == "orders-svc"
	some table in input.statement.tables
	table.name == "pgbench_tellers"
	"write" in table.access
}
`,
  );
  const data = JSON.parse(readFileSync(path.join(dir, 'data.json'), 'utf8'));
  data.roles.app_reader.kind = 'writer';
  writeFileSync(path.join(dir, 'data.json'), JSON.stringify(data, null, 2));
  return dir;
}

const flipsToDeny = (log: readonly SyntheticRecord[]): string[] => log.filter((r) => r.audit === 'statement' && r.decision === 'allow' && r.identity === 'orders-svc' && r.command === 'UPDATE' && r.tables.includes('pgbench_tellers')).map((r) => `${r.session}#${r.seq}`).sort();
const flipsToAllow = (log: readonly SyntheticRecord[]): string[] => log.filter((r) => r.audit === 'statement' && r.decision === 'deny' && r.role === 'app_reader' && r.rule === 'read-only-role').map((r) => `${r.session}#${r.seq}`).sort();

function options(draftPolicy: ReplayPolicy, baseline: ReplayPolicy | null = null): ReplayOptions {
  return { draft: draftPolicy, baseline, zone: 'UTC', bucketMs: 60_000, proxy: { env: 'prod', instance: 'rolegate-bench' }, maxChanges: 100_000, examplesPerGroup: 3, cacheEntries: 100_000 };
}

function writeLog(name: string, lines: readonly string[]): string {
  const file = path.join(work, name);
  writeFileSync(file, lines.join(''));
  return file;
}

const keys = (t: ReplayTally, direction: string): string[] => t.changes.filter((c) => c.direction === direction).map((c) => `${c.session}#${c.seq}`).sort();

after(() => rmSync(work, { recursive: true, force: true }));

before(async () => {
  await initParser();
  opaPath = await ensureOpa();
  shipped = await policyFromDir(SHIPPED_POLICY_DIR, undefined, opaPath);
  draft = await policyFromDir(makeDraft(), undefined, opaPath);
  engine = await PolicyEngine.create(shipped);
});

describe('replay', () => {
  for (const mode of ['facts', 'full', 'off'] as const) {
    test(`input ${mode}: the unchanged policy changes no decision; a draft flips exactly the known records, both ways`, async () => {
      const log = syntheticAuditLog({ statements: 3000, engine, input: mode, sessionLength: 150 });
      const file = writeLog(`log-${mode}.jsonl`, log.map((r) => r.line));
      const statements = log.filter((r) => r.audit === 'statement').length;
      const connects = log.length - statements;

      const same = (await replayFiles({ files: [file], options: options(shipped), workers: 0 })).tally;
      assert.equal(same.allowToDeny, 0);
      assert.equal(same.denyToAllow, 0);
      assert.deepEqual(same.ruleChanges.filter((c) => c.audit === 'statement'), []);
      assert.equal(same.decided.statement, statements);
      assert.equal(same.decided.connect, connects);
      if (mode === 'off') assert.deepEqual(same.rebuilt, { full: 0, facts: 0, reparsed: statements, record: connects });
      else assert.deepEqual(same.rebuilt, { full: 0, facts: 0, reparsed: 0, record: 0, [mode]: statements + connects });

      const toDeny = flipsToDeny(log);
      const toAllow = flipsToAllow(log);
      assert.ok(toDeny.length > 50 && toAllow.length > 5);
      for (const workers of [0, 2]) {
        const t = (await replayFiles({ files: [file], options: options(draft), workers, chunkBytes: 16 * 1024 })).tally;
        assert.deepEqual(keys(t, 'allow-to-deny'), toDeny, `workers ${workers}`);
        assert.deepEqual(keys(t, 'deny-to-allow'), toAllow, `workers ${workers}`);
        assert.equal(t.allowToDeny, toDeny.length);
        assert.equal(t.denyToAllow, toAllow.length);
        assert.equal(t.lines, log.length);
        const group = t.groups.find((g) => g.direction === 'allow-to-deny');
        assert.deepEqual({ service: group?.service, rule: group?.rule, command: group?.command, count: group?.count }, { service: 'orders-svc', rule: 'draft-no-tellers', command: 'UPDATE', count: toDeny.length });
        assert.equal(group?.examples.length, 3);
        const back = t.groups.find((g) => g.direction === 'deny-to-allow');
        assert.deepEqual({ service: back?.service, rule: back?.rule, command: back?.command }, { service: 'reporting-svc', rule: 'read-only-role', command: 'UPDATE' });
      }
    });
  }

  test('lines that are not records, rolegate\'s own refusals and records that cannot be rebuilt are counted, not decided; rotated files are read first', async () => {
    const base = (seq: number, extra: { sql: string; decision?: 'allow' | 'deny'; rule?: string | null; protocol?: 'simple' | 'extended'; name?: string; revision?: string }) =>
      newRecord('statement', Date.parse('2026-11-25T10:00:00Z'), seq, 'abcdef01-1', 0, { name: 'reporting-svc', method: 'scram-sha-256' }, { addr: '127.0.0.1', port: 5 }, 'app', 'app_reader', extra.decision ?? 'allow', extra.rule === undefined ? 'allow-read' : extra.rule, 'r', extra.revision ?? 'r1', 1, extra.protocol ?? 'simple', extra.name, extra.sql, null, [], undefined);
    const truncated = base(4, { sql: 'SELECT abalance FROM pgbench_accounts WHERE aid = 1' });
    truncated.sql_truncated = true;
    truncated.sql_bytes = 5000;
    const lines = [
      '{"level":30,"msg":"a pino line on the same stdout"}\n',
      '{"audit":"statement", damaged\n',
      formatRecord(base(2, { sql: 'SELECT 1', decision: 'deny', rule: 'audit-unavailable' })),
      formatRecord(base(3, { sql: 'SELEC 1', decision: 'deny', rule: 'parse-error' })),
      formatRecord(truncated),
      formatRecord(base(5, { sql: '', protocol: 'extended' })),
      // Recorded without a policy (static): the draft's parser refuses this text.
      formatRecord(base(6, { sql: 'SELEC oops', rule: null, revision: 'static' })).replace('\n', '\r\n'),
    ];
    const file = writeLog('odd.jsonl', lines.slice(4));
    writeFileSync(`${file}.1`, lines.slice(0, 4).join(''));
    const t = (await replayFiles({ files: [`${file}.1`, file], options: options(shipped), workers: 0 })).tally;
    assert.equal(t.lines, 7);
    assert.equal(t.notRecords, 2);
    assert.deepEqual(t.skipped, { 'audit-unavailable': 1, 'parse-error': 1 });
    assert.equal(Object.values(t.refused).reduce((a, b) => a + b, 0), 2);
    assert.equal(t.decided.statement, 1);
    assert.equal(t.allowToDeny, 1);
    assert.equal(t.changes[0]?.after.rule, 'parse-error');
    assert.deepEqual(await auditFiles([file]), [`${file}.1`, file]);
  });

  test('a member after the input (a later field) changes nothing; braces and quotes inside strings do not end the input', async () => {
    const log = syntheticAuditLog({ statements: 400, engine, input: 'facts', seed: 5 });
    const later = log.map((r) => `${r.line.slice(0, -2)},"later":{"x":"}\\"{"}}\n`);
    const a = (await replayFiles({ files: [writeLog('plain.jsonl', log.map((r) => r.line))], options: options(draft), workers: 0 })).tally;
    const b = (await replayFiles({ files: [writeLog('later.jsonl', later)], options: options(draft), workers: 0 })).tally;
    assert.equal(b.notRecords, 0);
    assert.equal(b.rebuilt.facts, log.length);
    assert.deepEqual(keys(b, 'allow-to-deny'), keys(a, 'allow-to-deny'));
    assert.deepEqual(keys(b, 'deny-to-allow'), keys(a, 'deny-to-allow'));
  });

  test('a kept revision is a baseline: the same flips as against the recorded decisions', async () => {
    const revisions = path.join(work, 'revisions');
    const built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    await keepRevision(revisions, 10, { revision: built.revision, wasm: built.wasm, data: built.data, readsStatementText: shipped.readsStatementText, sourceDir: SHIPPED_POLICY_DIR, dataFile: null, sources: null });
    const baseline = await policyFromRevision(revisions, built.revision);
    assert.equal(baseline.revision, shipped.revision);
    const log = syntheticAuditLog({ statements: 1000, engine, input: 'off', seed: 7 });
    const file = writeLog('log-baseline.jsonl', log.map((r) => r.line));
    const t = (await replayFiles({ files: [file], options: options(draft, baseline), workers: 1 })).tally;
    assert.deepEqual(keys(t, 'allow-to-deny'), flipsToDeny(log));
    assert.deepEqual(keys(t, 'deny-to-allow'), flipsToAllow(log));
    // Both sides decide the same rebuilt connect input: no connect changes at all.
    assert.equal(t.ruleChanges.filter((c) => c.audit === 'connect').length, 0);
  });

  test('the report: text names the groups with examples; JSON carries every change and the exit status', async () => {
    const log = syntheticAuditLog({ statements: 500, engine, input: 'facts', seed: 3 });
    const file = writeLog('log-report.jsonl', log.map((r) => r.line));
    const { tally, elapsedMs } = await replayFiles({ files: [file], options: options(draft), workers: 0 });
    const report: ReplayReport = { draft: { source: 'draft', revision: draft.revision, reads_statement_text: false }, baseline: 'recorded', files: [file], tally, elapsedMs, workers: 0, proxy: { env: 'prod', instance: 'rolegate-bench' } };
    const text = replayText(report, true);
    assert.match(text, /allow → deny: \d+\n {2}by service: orders-svc \d+/);
    assert.match(text, /orders-svc · draft-no-tellers · UPDATE: \d+\n {4}5eed0000-\w+ #\d+ {2}UPDATE pgbench_tellers/);
    assert.match(text, /deny → allow: \d+/);
    assert.match(text, /exit 1: \d+ allowed decision\(s\) would be denied/);
    const json = replayJson(report, 1) as any;
    assert.equal(json.exit, 1);
    assert.equal(json.changes.length, tally.allowToDeny + tally.denyToAllow);
    assert.deepEqual(Object.keys(json.allow_to_deny.by_rule), ['draft-no-tellers']);
    assert.equal(json.rebuilt.facts, log.length);
  });
});

describe('reading audit logs', () => {
  test('property: chunks are whole lines, in order, each line once, whatever the block and chunk sizes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.string({ unit: 'grapheme-ascii', maxLength: 40 }).map((s) => s.replace(/\n/g, ' ')), { maxLength: 60 }), fc.boolean(), fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 100 }), async (lines, trailing, chunkBytes, blockBytes) => {
        const text = lines.join('\n') + (trailing && lines.length > 0 ? '\n' : '');
        const file = path.join(work, 'chunks.jsonl');
        writeFileSync(file, text);
        const chunks: string[] = [];
        await readLineChunks([file], chunkBytes, (chunk) => void chunks.push(Buffer.from(chunk).toString('utf8')), blockBytes);
        assert.equal(chunks.join(''), text);
        for (const c of chunks.slice(0, -1)) assert.ok(c.endsWith('\n'), 'every chunk but the last ends a line');
      }),
      { numRuns: 300 },
    );
  });
});
