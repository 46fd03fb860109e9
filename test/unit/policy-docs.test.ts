// Keeps docs/policy.md, the JSON Schemas and the Rego library true to each
// other, and runs the Rego CI gates (fmt, tests, coverage) with the real opa.

import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { SHIPPED_POLICY_DIR, SHIPPED_SCHEMA_DIR } from '../../src/policy/build.ts';
import { ENGINE_RULES } from '../../src/policy/engine.ts';
import { ensureOpa, REPO_ROOT, runOpa } from '../../src/policy/opa-cli.ts';

const DOC = join(REPO_ROOT, 'docs', 'policy.md');
const MIN_COVERAGE_PERCENT = 90;

let opaPath: string;
let doc: string;

before(async () => {
  opaPath = await ensureOpa();
  doc = await readFile(DOC, 'utf8');
});

async function regoFiles(): Promise<string[]> {
  const entries = await readdir(SHIPPED_POLICY_DIR, { recursive: true });
  return entries.filter((name) => name.endsWith('.rego')).sort();
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
}

/** Every rule id the shipped policy can answer with. */
async function policyRuleIds(): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const name of await regoFiles()) {
    if (name.endsWith('_test.rego')) continue;
    const text = await readFile(join(SHIPPED_POLICY_DIR, name), 'utf8');
    for (const match of text.matchAll(/"rule": "([a-z0-9-]+)"/g)) ids.add(match[1] ?? '');
    for (const match of text.matchAll(/text\.field\([^)]*"(?:rule|deny_rule)", "([a-z0-9-]+)"\)/g)) ids.add(match[1] ?? '');
  }
  const catalog = (await readJson(join(SHIPPED_POLICY_DIR, 'catalog', 'data.json'))) as {
    classes: Record<string, { deny_rule: string }>;
    forbidden_commands: Record<string, { rule: string }>;
    parameters: Record<string, { rule: string }>;
    protected_tables: Record<string, { rule: string }>;
  };
  for (const [name, entry] of Object.entries(catalog.classes)) {
    ids.add(entry.deny_rule);
    ids.add(`allow-${name}`);
  }
  for (const table of [catalog.forbidden_commands, catalog.parameters, catalog.protected_tables]) {
    for (const entry of Object.values(table)) ids.add(entry.rule);
  }
  ids.delete('');
  return ids;
}

describe('docs/policy.md', () => {
  test('documents every rule id the policy and the engine can answer with', async () => {
    const ids = await policyRuleIds();
    for (const id of Object.values(ENGINE_RULES)) ids.add(id);
    ids.add('unnamed-rule');
    assert.ok(ids.size > 30, `found only ${ids.size} rule ids`);
    const missing = [...ids].filter((id) => !doc.includes(`\`${id}\``)).sort();
    assert.deepEqual(missing, [], 'rule ids missing from docs/policy.md');
  });

  test('names every shipped .rego file', async () => {
    for (const name of await regoFiles()) {
      if (name.endsWith('_test.rego')) continue;
      assert.ok(doc.includes(`\`${name}\``), `${name} is not described in docs/policy.md`);
    }
  });

  test('its example inputs validate against the JSON Schemas', async () => {
    for (const name of ['connect_input', 'statement_input']) {
      const match = new RegExp(`<!-- example: ${name} -->\\s*\`\`\`json\\n([\\s\\S]*?)\\n\`\`\``).exec(doc);
      assert.ok(match?.[1] !== undefined, `docs/policy.md has no example ${name}`);
      const example: unknown = JSON.parse(match[1]);
      const schema = await readJson(join(SHIPPED_SCHEMA_DIR, `${name}.json`));
      assert.deepEqual(await matchSchema(example, schema), [], `${name} example`);
      // additionalProperties: false is enforced: a misspelt field fails
      const misspelt = { ...(example as Record<string, unknown>), identiy: {} };
      assert.notDeepEqual(await matchSchema(misspelt, schema), []);
    }
  });
});

/** opa's json.match_schema: [] when the document matches, else the error descriptions. */
async function matchSchema(document: unknown, schema: unknown): Promise<string[]> {
  const result = await runOpa(opaPath, ['eval', '--format', 'json', '--stdin-input', 'json.match_schema(input.document, input.schema)'], {
    input: JSON.stringify({ document, schema }),
  });
  assert.equal(result.code, 0, result.stderr);
  const parsed = JSON.parse(result.stdout) as { result: Array<{ expressions: Array<{ value: [boolean, Array<{ desc: string; field: string }>] }> }> };
  const value = parsed.result[0]?.expressions[0]?.value;
  assert.ok(value !== undefined);
  return value[0] ? [] : value[1].map((error) => `${error.field}: ${error.desc}`);
}

describe('JSON Schemas', () => {
  test('connect and statement inputs share identical definitions', async () => {
    const connect = await readJson(join(SHIPPED_SCHEMA_DIR, 'connect_input.json'));
    const statement = await readJson(join(SHIPPED_SCHEMA_DIR, 'statement_input.json'));
    assert.deepEqual(connect.definitions, statement.definitions);
    assert.ok('request' in (connect.properties as object) && !('request' in (statement.properties as object)));
    assert.ok('statement' in (statement.properties as object) && !('statement' in (connect.properties as object)));
  });
});

describe('Rego CI gates (policies/)', () => {
  test('every .rego has a _test.rego beside it', async () => {
    const files = new Set(await regoFiles());
    for (const name of files) {
      if (name.endsWith('_test.rego')) continue;
      assert.ok(files.has(name.replace(/\.rego$/, '_test.rego')), `${name} has no _test.rego`);
    }
  });

  test('opa fmt --list prints nothing', async () => {
    const result = await runOpa(opaPath, ['fmt', '--list', SHIPPED_POLICY_DIR]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), '', `unformatted: ${result.stdout}`);
  });

  test(`opa test passes with coverage ≥ ${MIN_COVERAGE_PERCENT} %`, async () => {
    const result = await runOpa(opaPath, ['test', '--coverage', '--format=json', SHIPPED_POLICY_DIR]);
    assert.equal(result.code, 0, `opa test failed:\n${result.stdout.slice(0, 4000)}${result.stderr}`);
    const report = JSON.parse(result.stdout) as { coverage: number; files: Record<string, { coverage?: number }> };
    assert.ok(report.coverage >= MIN_COVERAGE_PERCENT, `coverage ${report.coverage} %`);
    for (const [file, entry] of Object.entries(report.files)) {
      assert.ok((entry.coverage ?? 0) >= MIN_COVERAGE_PERCENT, `${file}: coverage ${entry.coverage} %`);
    }
  });
});
