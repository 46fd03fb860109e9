// The policy revision store (policy.revisions): a kept revision reads back to
// the same wasm and data; keeping it again adds nothing; past max_count the
// least recently kept go; a changed file is refused; ids are checked before
// they name a path; the loader keeps every revision it builds to make active
// (not check-config's), with the sources it was built from.

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { loadPolicyBundle } from '../../src/cli/policy-loader.ts';
import { parseConfig } from '../../src/config/config.ts';
import { buildPolicy, SHIPPED_POLICY_DIR, type BuiltPolicy } from '../../src/policy/build.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import { keepRevision, listRevisions, loadRevision, readPolicySources, type RevisionToKeep } from '../../src/policy/revisions.ts';
import type { RolegateError } from '../../src/errors.ts';

let built: BuiltPolicy;
const temporary: string[] = [];

function temp(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-rev-'));
  temporary.push(dir);
  return dir;
}

after(() => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});
let opaPath = '';

function fake(revision: string, data: unknown = { n: revision }): RevisionToKeep {
  return { revision, wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]), data, readsStatementText: false, sourceDir: '/nowhere', dataFile: null, sources: new Map([['a.rego', new TextEncoder().encode('package a\n')]]) };
}

before(async () => {
  opaPath = await ensureOpa();
  built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
});

describe('revision store', () => {
  test('a kept revision reads back: wasm, data, sources, how its decisions are keyed', async () => {
    const dir = temp();
    const sources = await readPolicySources(SHIPPED_POLICY_DIR, null);
    assert.ok(sources.has('rolegate.rego') && sources.has('catalog/data.json') && ![...sources.keys()].some((k) => k.endsWith('_test.rego')));
    const kept = await keepRevision(dir, 10, { revision: built.revision, wasm: built.wasm, data: built.data, readsStatementText: true, sourceDir: SHIPPED_POLICY_DIR, dataFile: null, sources });
    assert.equal(kept.added, true);
    const back = await loadRevision(dir, built.revision);
    assert.deepEqual(Buffer.from(back.wasm), Buffer.from(built.wasm));
    assert.deepEqual(back.data, built.data);
    assert.equal(back.readsStatementText, true);
    assert.equal(readFileSync(path.join(dir, built.revision, 'src', 'rolegate.rego'), 'utf8'), readFileSync(path.join(SHIPPED_POLICY_DIR, 'rolegate.rego'), 'utf8'));
    assert.deepEqual((await listRevisions(dir)).map((m) => m.revision), [built.revision]);
    const again = await keepRevision(dir, 10, { revision: built.revision, wasm: built.wasm, data: built.data, readsStatementText: true, sourceDir: SHIPPED_POLICY_DIR, dataFile: null, sources: null });
    assert.equal(again.added, false);
    assert.deepEqual(readdirSync(dir), [built.revision], 'no temporary directory left behind');
  });

  test('past max_count the least recently kept revisions go; keeping one again makes it recent', async () => {
    const dir = temp();
    const ids = ['aaaaaaaa00000001', 'aaaaaaaa00000002', 'aaaaaaaa00000003'];
    let t = Date.now() / 1000 - 100;
    for (const id of ids) {
      await keepRevision(dir, 3, fake(id));
      utimesSync(path.join(dir, id, 'meta.json'), t, t);
      t += 10;
    }
    // The oldest is kept again: now the most recent.
    await keepRevision(dir, 3, fake(ids[0]!));
    const out = await keepRevision(dir, 3, fake('aaaaaaaa00000004'));
    assert.deepEqual(out.evicted, ['aaaaaaaa00000002']);
    assert.deepEqual(readdirSync(dir).sort(), ['aaaaaaaa00000001', 'aaaaaaaa00000003', 'aaaaaaaa00000004']);
  });

  test('a changed file, a missing revision and a revision id that is not one are refused', async () => {
    const dir = temp();
    await keepRevision(dir, 3, fake('bbbbbbbb00000001'));
    writeFileSync(path.join(dir, 'bbbbbbbb00000001', 'data.json'), '{"n":"changed"}');
    await assert.rejects(loadRevision(dir, 'bbbbbbbb00000001'), (e: RolegateError) => e.code === 'RG_POLICY_LOAD' && /checksums/.test(e.message));
    await assert.rejects(loadRevision(dir, 'cccccccc00000001'), (e: RolegateError) => e.code === 'RG_POLICY_LOAD' && /not kept/.test(e.message));
    await assert.rejects(loadRevision(dir, '../../etc'), (e: RolegateError) => /not a policy revision id/.test(e.message));
    await assert.rejects(keepRevision(dir, 3, fake('../x')), /not a revision id/);
  });

  test('the loader keeps what it builds to make active, not what check-config builds; a store that cannot be written is no reason to refuse', async () => {
    const dir = temp();
    const config = parseConfig(`policy: { dir: ${JSON.stringify(SHIPPED_POLICY_DIR)}, opa_path: ${JSON.stringify(opaPath)}, revisions: { dir: ${JSON.stringify(dir)}, max_count: 2 } }\n`, null);
    assert.deepEqual(config.policy?.revisions, { dir, maxCount: 2 });
    const log = pino({ level: 'silent' });
    await loadPolicyBundle(config, log, { keepRevision: false });
    assert.deepEqual(readdirSync(dir), []);
    const bundle = await loadPolicyBundle(config, log);
    assert.deepEqual(readdirSync(dir), [bundle.revision]);
    const meta = JSON.parse(readFileSync(path.join(dir, bundle.revision, 'meta.json'), 'utf8'));
    assert.equal(meta.source_dir, SHIPPED_POLICY_DIR);
    assert.ok(meta.sources.includes('rolegate.rego'));
    // A file where the directory should be: logged, the policy still loads.
    const blocked = path.join(temp(), 'file');
    writeFileSync(blocked, 'x');
    const warnings: string[] = [];
    const spy = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
    const other = parseConfig(`policy: { dir: ${JSON.stringify(SHIPPED_POLICY_DIR)}, opa_path: ${JSON.stringify(opaPath)}, revisions: { dir: ${JSON.stringify(blocked)} } }\n`, null);
    assert.equal((await loadPolicyBundle(other, spy)).revision, bundle.revision);
    assert.ok(warnings.some((w) => w.includes('policy revision not kept')));
  });

  test('config: revisions is optional, max_count bounded, dir required', () => {
    assert.equal(parseConfig('policy: { dir: /p }\n', null).policy?.revisions, undefined);
    assert.equal(parseConfig('policy: { dir: /p, revisions: { dir: /r } }\n', null).policy?.revisions?.maxCount, 100);
    assert.throws(() => parseConfig('policy: { dir: /p, revisions: { dir: /r, max_count: 0 } }\n', null), /policy\.revisions\.max_count/);
    assert.throws(() => parseConfig('policy: { dir: /p, revisions: { max_count: 3 } }\n', null), /policy\.revisions\.dir: is required/);
    assert.throws(() => parseConfig('policy: { dir: /p, revisions: { dir: /r, keep: 3 } }\n', null), /policy\.revisions\.keep/);
    assert.equal(parseConfig('audit: { sink: stdout, input: facts }\n', null).audit?.input, 'facts');
    assert.equal(parseConfig('audit: { sink: stdout }\n', null).audit?.input, 'off');
    assert.throws(() => parseConfig('audit: { sink: stdout, input: all }\n', null), /audit\.input: must be one of off, facts, full/);
  });
});
