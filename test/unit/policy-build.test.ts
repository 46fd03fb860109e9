// buildPolicy / checkPolicy against the real opa binary.

import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RolegateError } from '../../src/errors.ts';
import { buildPolicy, checkPolicy, opaWasmCapabilities, policyRevision, SHIPPED_POLICY_DIR, SHIPPED_SCHEMA_DIR } from '../../src/policy/build.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';

const MINIMAL = 'package rolegate\n\nconnect := {"allow": false}\n\nstatement := {"allow": false}\n';

let opaPath: string;
let work: string;

before(async () => {
  opaPath = await ensureOpa();
  work = await mkdtemp(join(tmpdir(), 'rolegate-build-test-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function dirWith(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(work, name);
  for (const [path, text] of Object.entries(files)) {
    const full = join(dir, path);
    await mkdir(join(full, '..'), { recursive: true });
    await writeFile(full, text);
  }
  return dir;
}

const isBuildError = (pattern: RegExp) => (error: RolegateError) => {
  assert.equal(error.code, 'RG_POLICY_BUILD');
  assert.match(error.message, pattern);
  return true;
};

describe('buildPolicy', () => {
  test('the revision depends on the policy, not on the name of the directory it is built from', async () => {
    const a = join(work, 'draft-copy');
    const b = join(work, 'live-copy');
    await cp(SHIPPED_POLICY_DIR, a, { recursive: true });
    await cp(SHIPPED_POLICY_DIR, b, { recursive: true });
    const [fromA, fromB, shipped] = await Promise.all([buildPolicy({ dir: a, opaPath }), buildPolicy({ dir: b, opaPath }), buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath })]);
    assert.equal(fromA.revision, fromB.revision);
    assert.equal(fromA.revision, shipped.revision);
    const data = await readFile(join(b, 'data.json'), 'utf8');
    await writeFile(join(b, 'data.json'), data.replace('reporting jobs: read-only', 'reporting jobs: read only'));
    assert.notEqual((await buildPolicy({ dir: b, opaPath })).revision, fromA.revision, 'different content, different revision');
  });

  test('builds the shipped policy: wasm, merged data, revision', async () => {
    const built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.deepEqual([...built.wasm.subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d]); // "\0asm"
    const data = built.data as Record<string, unknown>;
    assert.deepEqual(Object.keys(data).sort(), ['catalog', 'env_exceptions', 'maintenance_windows', 'roles', 'services']);
    assert.match(built.revision, /^[0-9a-f]{16}$/);
    const again = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.equal(again.revision, built.revision, 'same inputs, same revision');
  });

  test('a broken .rego is RG_POLICY_BUILD carrying opa’s file:line message', async () => {
    const dir = await dirWith('broken', { 'rolegate.rego': 'package rolegate\n\nconnect := {"allow": true\n\nstatement := 1\n' });
    await assert.rejects(buildPolicy({ dir, opaPath }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /rego_parse_error/);
      // the staged copy's path is rewritten to the caller's directory
      assert.ok(error.message.includes(`${dir}/rolegate.rego:5`), error.message);
      assert.ok(error.detail?.includes('rego_parse_error'));
      return true;
    });
  });

  test('a builtin the wasm runtime lacks fails at build time (opa-wasm capabilities)', async () => {
    const dir = await dirWith('clock', { 'p.rego': 'package rolegate\n\nconnect := {"allow": time.now_ns() > 0}\n\nstatement := {"allow": false}\n' });
    await assert.rejects(buildPolicy({ dir, opaPath }), isBuildError(/time\.now_ns/));
  });

  test('_test.rego files and non-data JSON are not part of the bundle', async () => {
    const dir = await dirWith('extras', {
      'p.rego': MINIMAL,
      'p_test.rego': 'package rolegate_test\n\ntest_clock if time.now_ns() > 0\n',
      'schema.json': '{"type": "object"}',
      'data.json': '{"services": {}}',
      'sub/data.json': '{"x": 1}',
      '.hidden/data.json': '{"hidden": true}',
    });
    const built = await buildPolicy({ dir, opaPath });
    assert.deepEqual(built.data, { services: {}, sub: { x: 1 } });
  });

  test('dataFile replaces the root data.json; the revision follows the data', async () => {
    const dir = await dirWith('data', { 'p.rego': MINIMAL, 'data.json': '{"services": {"a": {}}}', 'catalog/data.json': '{"version": 1}' });
    const json = join(work, 'deploy.json');
    const yaml = join(work, 'deploy.yaml');
    await writeFile(json, '{"services": {"b": {}}}');
    await writeFile(yaml, 'services:\n  c: {}\n');
    const plain = await buildPolicy({ dir, opaPath });
    const fromJson = await buildPolicy({ dir, opaPath, dataFile: json });
    const fromYaml = await buildPolicy({ dir, opaPath, dataFile: yaml });
    assert.deepEqual(plain.data, { services: { a: {} }, catalog: { version: 1 } });
    assert.deepEqual(fromJson.data, { services: { b: {} }, catalog: { version: 1 } });
    assert.deepEqual(fromYaml.data, { services: { c: {} }, catalog: { version: 1 } });
    assert.notEqual(fromJson.revision, plain.revision);
    assert.notEqual(fromYaml.revision, fromJson.revision);
    assert.deepEqual(plain.wasm, fromJson.wasm, 'only the data differs');
  });

  test('policyRevision covers both wasm and data', () => {
    const wasm = new Uint8Array([1, 2, 3]);
    const a = policyRevision(wasm, new TextEncoder().encode('{"a":1}'));
    assert.notEqual(a, policyRevision(wasm, new TextEncoder().encode('{"a":2}')));
    assert.notEqual(a, policyRevision(new Uint8Array([1, 2, 4]), new TextEncoder().encode('{"a":1}')));
  });

  test('data that data.rolegate.lint rejects is RG_POLICY_BUILD listing every problem', async () => {
    const shipped = JSON.parse(await readFile(join(SHIPPED_POLICY_DIR, 'data.json'), 'utf8')) as {
      services: Record<string, Record<string, unknown>>;
    };
    const svc = shipped.services['orders-svc'];
    assert.ok(svc !== undefined);
    svc.cidrs = ['10.0.0.1'];
    svc.default_role = 'app_admin';
    const bad = join(work, 'bad-data.json');
    await writeFile(bad, JSON.stringify(shipped));
    await assert.rejects(buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath, dataFile: bad }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /cidrs: 10\.0\.0\.1 is not a CIDR range/);
      assert.match(error.message, /default_role app_admin is not among its roles/);
      return true;
    });
    const unlinted = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath, dataFile: bad, lint: false });
    assert.ok(unlinted.wasm.byteLength > 0);
  });

  test('missing inputs', async () => {
    await assert.rejects(buildPolicy({ dir: join(work, 'nope'), opaPath }), isBuildError(/does not exist/));
    const empty = await dirWith('empty', { 'README.md': 'no policy here' });
    await assert.rejects(buildPolicy({ dir: empty, opaPath }), isBuildError(/no \.rego files/));
    const dir = await dirWith('ok', { 'p.rego': MINIMAL });
    await assert.rejects(buildPolicy({ dir, opaPath, dataFile: join(work, 'missing.json') }), isBuildError(/does not exist/));
    await assert.rejects(buildPolicy({ dir, opaPath, dataFile: join(work, 'data.txt') }), isBuildError(/\.json or \.yaml/));
    await assert.rejects(buildPolicy({ dir, opaPath: join(work, 'no-opa') }), isBuildError(/could not run/));
  });

  test('the opa-wasm capabilities gain the rego_v1 feature', async () => {
    const capabilities = await opaWasmCapabilities();
    assert.ok(Array.isArray(capabilities.features) && capabilities.features.includes('rego_v1'));
    const names = (capabilities.builtins as Array<{ name: string }>).map((b) => b.name);
    assert.ok(names.includes('net.cidr_contains'));
    assert.ok(!names.includes('time.now_ns'));
  });
});

describe('checkPolicy', () => {
  test('the shipped policies pass opa check --strict against the input schemas', async () => {
    await checkPolicy({ dir: SHIPPED_POLICY_DIR, opaPath, schemaDir: SHIPPED_SCHEMA_DIR });
  });

  test('a misspelt input field fails the schema check with opa’s type error', async () => {
    const dir = join(work, 'typo');
    await cp(SHIPPED_POLICY_DIR, dir, { recursive: true });
    const file = join(dir, 'network.rego');
    await writeFile(file, (await readFile(file, 'utf8')).replace('input.client.addr)', 'input.client.adress)'));
    await checkPolicy({ dir, opaPath }); // without schemas, a typo is just an undefined ref
    await assert.rejects(checkPolicy({ dir, opaPath, schemaDir: SHIPPED_SCHEMA_DIR }), isBuildError(/rego_type_error: undefined ref: input\.client\.adress/));
  });

  test('--strict catches unused variables', async () => {
    const dir = await dirWith('strict', { 'p.rego': 'package rolegate\n\nconnect := {"allow": false} if {\n\tx := 1\n}\n\nstatement := {"allow": false}\n' });
    await assert.rejects(checkPolicy({ dir, opaPath }), isBuildError(/p\.rego:4: rego_compile_error: assigned var x unused/));
  });
});
