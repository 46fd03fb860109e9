// The library's extension point, compiled by the real opa and evaluated through
// PolicyEngine (opa-wasm) with facts from the real SQL parser: per-service table
// lists and write windows as data only, an author's rolegate.hooks file, the
// JSON Schema of the data document and the lint of unknown keys.

import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RolegateError } from '../../src/errors.ts';
import { buildPolicy, SHIPPED_POLICY_DIR, SHIPPED_SCHEMA_DIR } from '../../src/policy/build.ts';
import type { ConnectInput, StatementInput } from '../../src/policy/contract.ts';
import { compilePolicy, PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa, REPO_ROOT, runOpa } from '../../src/policy/opa-cli.ts';
import { initParser, parseStatements } from '../../src/sql/parser.ts';

type Json = Record<string, unknown>;
type Weekday = 'Monday' | 'Tuesday' | 'Wednesday' | 'Thursday' | 'Friday' | 'Saturday' | 'Sunday';

const SCHEMA_FILE = join(SHIPPED_SCHEMA_DIR, 'data.json');

let opaPath: string;
let work: string;
let schema: Json;
let shipped: { services: Record<string, Json>; roles: Json };

before(async () => {
  opaPath = await ensureOpa();
  await initParser();
  work = await mkdtemp(join(tmpdir(), 'rolegate-extension-test-'));
  schema = JSON.parse(await readFile(SCHEMA_FILE, 'utf8')) as Json;
  shipped = JSON.parse(await readFile(join(SHIPPED_POLICY_DIR, 'data.json'), 'utf8')) as typeof shipped;
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

const time = (weekday: Weekday, hour: number, minute: number): StatementInput['time'] => ({
  unix_ns: 1_795_820_100_000_000_000,
  rfc3339: '2026-11-27T22:55:00Z',
  weekday,
  hour,
  minute,
  tz: 'UTC',
});

function connectInput(name: string, database = 'app'): ConnectInput {
  return {
    identity: { name, method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '127.0.0.1', port: 50000, tls: false },
    request: { database, role: null, application_name: null },
    time: time('Tuesday', 10, 0),
    proxy: { env: 'prod', instance: 'extension-test' },
  };
}

/** The statement input rolegate builds for `sql`: facts from the real parser. */
function statementInput(name: string, role: string, sql: string, when: StatementInput['time'] = time('Tuesday', 10, 0)): StatementInput {
  const parsed = parseStatements(sql);
  if (!parsed.ok) assert.fail(`${sql}: ${parsed.message}`);
  const only = parsed.statements[0];
  assert.ok(only !== undefined && parsed.statements.length === 1, sql);
  return {
    identity: { name, method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '127.0.0.1', port: 50000, tls: false },
    time: when,
    proxy: { env: 'prod', instance: 'extension-test' },
    session: { role, database: 'app', in_transaction: false },
    statement: { ...only.facts, protocol: 'simple' },
  };
}

async function engineFor(dir: string, data?: Json): Promise<PolicyEngine> {
  const options: Parameters<typeof buildPolicy>[0] = { dir, opaPath };
  if (data !== undefined) {
    const file = join(await mkdtemp(join(work, 'data-')), 'data.json');
    await writeFile(file, JSON.stringify(data));
    options.dataFile = file;
  }
  return PolicyEngine.create(await compilePolicy(await buildPolicy(options)));
}

/** The shipped data with orders-svc restricted, as data only. */
function restrictedData(): Json {
  const data = structuredClone(shipped);
  const orders = data.services['orders-svc'];
  assert.ok(orders !== undefined);
  orders['tables'] = { allow: ['public.orders', 'customers'], write: ['public.orders'] };
  orders['write_windows'] = [{ name: 'office-hours', weekdays: ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday'], start: '08:00', end: '18:00' }];
  return data;
}

/** opa's json.match_schema: [] when the document matches, else the error descriptions. */
async function matchSchema(document: unknown): Promise<string[]> {
  const result = await runOpa(opaPath, ['eval', '--format', 'json', '--stdin-input', 'json.match_schema(input.document, input.schema)'], {
    input: JSON.stringify({ document, schema }),
  });
  assert.equal(result.code, 0, result.stderr);
  const parsed = JSON.parse(result.stdout) as { result: Array<{ expressions: Array<{ value: [boolean, Array<{ error: string }>] }> }> };
  const value = parsed.result[0]?.expressions[0]?.value;
  assert.ok(value !== undefined);
  return value[0] ? [] : value[1].map((e) => e.error).sort();
}

describe('per-service table lists and write windows (data only, through wasm)', () => {
  let engine: PolicyEngine;
  before(async () => {
    engine = await engineFor(SHIPPED_POLICY_DIR, restrictedData());
  });

  test('listed tables, qualified or not, are allowed', () => {
    for (const sql of ['SELECT * FROM orders', 'SELECT * FROM public.orders o JOIN customers c ON c.id = o.id', 'SELECT * FROM crm.customers']) {
      assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', sql)).rule, 'allow-read', sql);
    }
    assert.equal(engine.statement(statementInput('orders-svc', 'app_writer', "UPDATE orders SET customer = 'x' WHERE id = 1")).rule, 'allow-write');
  });

  test('an unlisted table is denied, naming it', () => {
    assert.deepEqual(engine.statement(statementInput('orders-svc', 'app_reader', 'SELECT * FROM orders JOIN payments USING (id)')), {
      allow: false,
      rule: 'service-table-not-allowed',
      reason: 'orders-svc may not use table payments (not in its tables.allow)',
    });
    // A qualified reference outside public does not match public.orders; a CTE is not a table.
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'SELECT * FROM archive.orders')).rule, 'service-table-not-allowed');
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'WITH payments AS (SELECT 1) SELECT * FROM payments')).rule, 'allow-read');
  });

  test('a write outside tables.write is denied, also when hidden in a CTE', () => {
    const decision = engine.statement(statementInput('orders-svc', 'app_writer', "WITH d AS (DELETE FROM customers RETURNING id) SELECT * FROM orders WHERE id IN (SELECT id FROM d)"));
    assert.deepEqual(decision, { allow: false, rule: 'service-table-not-writable', reason: 'orders-svc may not write table customers (not in its tables.write)' });
  });

  test('writes only inside the write windows; reads at any time', () => {
    const update = "UPDATE orders SET customer = 'x' WHERE id = 1";
    assert.equal(engine.statement(statementInput('orders-svc', 'app_writer', update, time('Friday', 17, 59))).rule, 'allow-write');
    assert.deepEqual(engine.statement(statementInput('orders-svc', 'app_writer', update, time('Saturday', 9, 0))), {
      allow: false,
      rule: 'service-write-window',
      reason: 'orders-svc writes only inside its write windows (office-hours: Monday/Tuesday/Wednesday/Thursday/Friday 08:00-18:00); now is Saturday 09:00 UTC',
    });
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'SELECT * FROM orders', time('Saturday', 9, 0))).rule, 'allow-read');
  });

  test('search_path is pinned for a service whose lists name public tables', () => {
    for (const sql of ['SET search_path = archive', 'SET LOCAL search_path TO archive, public', "SELECT set_config('search_path', 'archive', false)"]) {
      assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', sql)).rule, 'service-search-path', sql);
    }
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'SHOW search_path')).rule, 'allow-read');
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'RESET search_path')).rule, 'allow-session');
    // Services without lists are unaffected.
    assert.equal(engine.statement(statementInput('reporting-svc', 'app_reader', 'SET search_path = archive')).rule, 'allow-session');
    assert.equal(engine.statement(statementInput('reporting-svc', 'app_reader', 'SELECT * FROM payments')).rule, 'allow-read');
  });
});

/** The hook file docs/policy.md shows, so the documented example is the tested one. */
async function documentedHook(): Promise<string> {
  const doc = await readFile(join(REPO_ROOT, 'docs', 'policy.md'), 'utf8');
  const match = /<!-- example: hook -->\s*```rego\n([\s\S]*?)\n```/.exec(doc);
  assert.ok(match?.[1] !== undefined, 'docs/policy.md has no hook example');
  return `${match[1]}\n`;
}

const HOOK_CONNECT = `package rolegate.hooks

deny_connect contains "analytics is closed for maintenance" if input.request.database == "analytics"
`;

describe('an author’s rolegate.hooks package (new files only, through wasm)', () => {
  test('hook files deny at connect and statement with their own rule ids; nothing else changes', async () => {
    const dir = await mkdtemp(join(work, 'hooks-'));
    await cp(SHIPPED_POLICY_DIR, dir, { recursive: true });
    await writeFile(join(dir, 'hooks_pii.rego'), await documentedHook());
    await writeFile(join(dir, 'hooks_maintenance.rego'), HOOK_CONNECT);
    // The example's annotation holds: opa check --strict with the input schemas.
    const check = await runOpa(opaPath, ['check', '--strict', '--schema', SHIPPED_SCHEMA_DIR, join(dir, 'hooks_pii.rego'), join(dir, 'hooks_maintenance.rego')]);
    assert.equal(check.code, 0, check.stderr + check.stdout);
    const engine = await engineFor(dir, { ...structuredClone(shipped), custom: { pii_readers: ['reporting-svc'] } });
    assert.deepEqual(engine.statement(statementInput('orders-svc', 'app_reader', 'SELECT c.email FROM customers c')), {
      allow: false,
      rule: 'no-pii',
      reason: 'orders-svc may not read customers.email',
    });
    // Priority 15 ranks the hook before the role kind (80).
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', "UPDATE customers SET email = 'x'")).rule, 'no-pii');
    assert.equal(engine.statement(statementInput('orders-svc', 'app_reader', 'SELECT c.name FROM customers c')).rule, 'allow-read');
    assert.equal(engine.statement(statementInput('reporting-svc', 'app_reader', 'SELECT c.email FROM customers c')).rule, 'allow-read');
    assert.deepEqual(engine.connect(connectInput('reporting-svc', 'analytics')), {
      allow: false,
      role: null,
      database: null,
      rule: 'hook-denied',
      reason: 'analytics is closed for maintenance',
    });
    assert.equal(engine.connect(connectInput('reporting-svc', 'app')).rule, 'service-default-role');
  });

  test('a hook that cannot be read denies (hook-malformed), a boolean hook denies (hook-denied)', async () => {
    const dir = await mkdtemp(join(work, 'hooks-odd-'));
    await cp(SHIPPED_POLICY_DIR, dir, { recursive: true });
    await writeFile(join(dir, 'hooks.rego'), 'package rolegate.hooks\n\ndeny_statement contains 7 if input.statement.command == "DELETE"\n\ndeny_connect if input.identity.name == "migrator"\n');
    const engine = await engineFor(dir);
    const decision = engine.statement(statementInput('orders-svc', 'app_writer', 'DELETE FROM orders'));
    assert.equal(decision.rule, 'hook-malformed');
    assert.match(decision.reason, /deny_statement holds 7/);
    assert.equal(engine.statement(statementInput('orders-svc', 'app_writer', 'SELECT 1')).rule, 'allow-read');
    assert.deepEqual(engine.connect(connectInput('migrator')), {
      allow: false,
      role: null,
      database: null,
      rule: 'hook-denied',
      reason: 'data.rolegate.hooks.deny_connect is true',
    });
  });

  test('the shipped library has no hooks package: the entry points stand without one', async () => {
    const { stdout } = await runOpa(opaPath, ['eval', '--format', 'json', '--data', SHIPPED_POLICY_DIR, 'data.rolegate.hooks']);
    assert.deepEqual((JSON.parse(stdout) as { result?: unknown }).result, undefined);
  });
});

describe('docs/policy-schema/data.json', () => {
  test('the shipped data (data.json and the catalog, as the bundle merges them) matches it', async () => {
    const built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.deepEqual(await matchSchema(built.data), []);
    assert.deepEqual(await matchSchema(restrictedData()), []);
  });

  test('a misspelt key fails it, at any depth', async () => {
    const data = restrictedData() as { services: Record<string, Json> } & Json;
    const orders = data.services['orders-svc'] as Json & { tables: Json; write_windows: Json[] };
    orders['require_tl'] = true;
    orders.tables['wirte'] = [];
    (orders.write_windows[0] as Json)['from'] = '08:00';
    data['maintenance_window'] = [];
    assert.deepEqual(await matchSchema(data), [
      '(Root): Additional property maintenance_window is not allowed',
      'services.orders-svc.tables: Additional property wirte is not allowed',
      'services.orders-svc.write_windows.0: Additional property from is not allowed',
      'services.orders-svc: Additional property require_tl is not allowed',
    ]);
  });

  test('its keys are the keys data.rolegate.lint accepts', async () => {
    const definitions = schema['definitions'] as Record<string, { properties: Json }>;
    const catalog = definitions['catalog']?.properties as Record<string, { additionalProperties: { properties?: Json; $ref?: string } }>;
    const keysOf = (properties: Json | undefined): string[] => Object.keys(properties ?? {}).sort();
    const expected: Record<string, string[]> = {
      service_keys: keysOf(definitions['service']?.properties),
      tables_keys: keysOf(definitions['tables']?.properties),
      role_keys: keysOf(definitions['role']?.properties),
      maintenance_window_keys: keysOf(definitions['maintenance_window']?.properties),
      write_window_keys: keysOf(definitions['write_window']?.properties),
      catalog_keys: keysOf(catalog),
      class_keys: keysOf(catalog['classes']?.additionalProperties.properties),
      kind_keys: keysOf(catalog['kinds']?.additionalProperties.properties),
      denial_keys: keysOf(definitions['denial']?.properties),
    };
    assert.equal(catalog['forbidden_commands']?.additionalProperties.$ref, '#/definitions/denial');
    const { stdout, code, stderr } = await runOpa(opaPath, ['eval', '--format', 'json', '--data', SHIPPED_POLICY_DIR, 'data.rolegate.lint']);
    assert.equal(code, 0, stderr);
    const lint = (JSON.parse(stdout) as { result: Array<{ expressions: Array<{ value: Record<string, unknown> }> }> }).result[0]?.expressions[0]?.value;
    assert.ok(lint !== undefined);
    for (const [name, keys] of Object.entries(expected)) {
      assert.ok(keys.length > 0, name);
      assert.deepEqual([...(lint[name] as string[])].sort(), keys, name);
    }
  });

  test('the documented data layout example matches it', async () => {
    const doc = await readFile(join(REPO_ROOT, 'docs', 'policy.md'), 'utf8');
    const match = /<!-- example: data -->\s*```json\n([\s\S]*?)\n```/.exec(doc);
    assert.ok(match?.[1] !== undefined, 'docs/policy.md has no data example');
    assert.deepEqual(await matchSchema(JSON.parse(match[1])), []);
  });
});

describe('lint of unknown keys refuses the build', () => {
  test('"require_tl" in a service names the key and the key it probably meant', async () => {
    const data = structuredClone(shipped);
    const dba = data.services['dba'];
    assert.ok(dba !== undefined);
    delete dba['require_tls'];
    dba['require_tl'] = true;
    const file = join(work, 'typo.json');
    await writeFile(file, JSON.stringify(data));
    await assert.rejects(buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath, dataFile: file }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /unknown-key: services\["dba"\]\.require_tl is not a key the library reads \(did you mean require_tls\?\)/);
      return true;
    });
  });

  test('malformed table lists and write windows are refused with their path', async () => {
    const data = restrictedData() as { services: Record<string, Json> };
    const orders = data.services['orders-svc'] as Json;
    orders['tables'] = { allow: ['public.orders'], write: ['public.payments'] };
    orders['write_windows'] = [{ weekdays: ['Mon'], start: '8:00', end: '18:00' }];
    const file = join(work, 'malformed.json');
    await writeFile(file, JSON.stringify(data));
    await assert.rejects(buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath, dataFile: file }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /services\["orders-svc"\]\.tables\.write names "public\.payments", which tables\.allow does not admit/);
      assert.match(error.message, /services\["orders-svc"\]\.write_windows\[0\]\.start must be "HH:MM"/);
      assert.match(error.message, /services\["orders-svc"\]\.write_windows\[0\]\.weekdays: Mon is not a day name/);
      return true;
    });
  });
});

describe('docs/policy.md', () => {
  test('documents every service key, the hook rules and the schema', async () => {
    const doc = await readFile(join(REPO_ROOT, 'docs', 'policy.md'), 'utf8');
    const service = (schema['definitions'] as Record<string, { properties: Json }>)['service']?.properties ?? {};
    for (const key of Object.keys(service)) assert.ok(doc.includes(`\`.${key}\``), `service key .${key} is not in the data keys table`);
    for (const name of ['deny_statement', 'deny_connect', 'package rolegate.hooks', 'docs/policy-schema/data.json', 'unknown-key']) {
      assert.ok(doc.includes(name), `${name} is not documented`);
    }
  });
});
