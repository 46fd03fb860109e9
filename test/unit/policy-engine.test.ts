// The shipped policy library, compiled with the real opa and evaluated through
// PolicyEngine exactly as a worker does (opa-wasm, ArrayBuffer input).

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { gunzipSync } from 'node:zlib';
import type { RolegateError } from '../../src/errors.ts';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import type { BuiltPolicy, PolicyEntrypoint } from '../../src/policy/build.ts';
import type { ConnectInput, StatementInput } from '../../src/policy/contract.ts';
import type { StatementFacts } from '../../src/sql/statement-facts.ts';
import { compilePolicy, PolicyEngine, toConnectDecision, toStatementDecision } from '../../src/policy/engine.ts';
import type { PolicyArtifact } from '../../src/policy/engine.ts';
import { ensureOpa, runOpa } from '../../src/policy/opa-cli.ts';
import { readTarFiles } from '../../src/policy/tar.ts';

type Weekday = 'Monday' | 'Tuesday' | 'Wednesday' | 'Thursday' | 'Friday' | 'Saturday' | 'Sunday';

const base = {
  identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
  client: { addr: '10.1.2.3', port: 51544, tls: true },
  time: { unix_ns: 1_795_820_100_000_000_000, rfc3339: '2026-11-27T22:55:00Z', weekday: 'Friday', hour: 22, minute: 55, tz: 'UTC' },
  proxy: { env: 'prod', instance: 'rolegate-test' },
} as const satisfies Omit<ConnectInput, 'request'>;

function connectInput(changes: {
  name?: string;
  method?: ConnectInput['identity']['method'];
  addr?: string;
  tls?: boolean;
  database?: string;
  role?: string | null;
  env?: string;
} = {}): ConnectInput {
  return {
    identity: { ...base.identity, name: changes.name ?? base.identity.name, method: changes.method ?? base.identity.method },
    client: { ...base.client, addr: changes.addr ?? base.client.addr, tls: changes.tls ?? base.client.tls },
    request: { database: changes.database ?? 'app', role: changes.role ?? null, application_name: 'policy-engine.test' },
    time: { ...base.time },
    proxy: { ...base.proxy, env: changes.env ?? base.proxy.env },
  };
}

function statementInput(
  role: string,
  command: string,
  facts: Partial<Omit<StatementFacts, 'flags'>> & { flags?: Partial<StatementFacts['flags']> } = {},
  context: { name?: string; weekday?: Weekday; hour?: number; minute?: number } = {},
): StatementInput {
  return {
    identity: { ...base.identity, name: context.name ?? base.identity.name },
    client: { ...base.client },
    time: { ...base.time, weekday: context.weekday ?? base.time.weekday, hour: context.hour ?? base.time.hour, minute: context.minute ?? base.time.minute },
    proxy: { ...base.proxy },
    session: { role, database: 'app', in_transaction: false },
    statement: {
      sql: facts.sql ?? `-- ${command}`,
      command,
      protocol: 'simple',
      tables: facts.tables ?? [],
      functions: facts.functions ?? [],
      columns: facts.columns ?? [],
      flags: { data_modifying_cte: false, into: false, locking: false, copy_program: false, copy_file: false, ...facts.flags },
      parameter: facts.parameter ?? null,
    },
  };
}

const orders = (access: 'read' | 'write') => [{ schema: null, name: 'orders', access: [access] }];

/** The built data with some top-level documents replaced (the catalog stays). */
function withData(built: BuiltPolicy, changes: Record<string, unknown>): Record<string, unknown> {
  return { ...(built.data as Record<string, unknown>), ...changes };
}

async function policyDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rolegate-policy-test-'));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

let opaPath: string;
let built: BuiltPolicy;
let artifact: PolicyArtifact;
let engine: PolicyEngine;
const scratch: string[] = [];

before(async () => {
  opaPath = await ensureOpa();
  built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
  artifact = await compilePolicy(built);
  engine = await PolicyEngine.create(artifact);
});

after(async () => {
  await Promise.all(scratch.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('connect (shipped policy)', () => {
  test('a known service gets its default role', () => {
    assert.deepEqual(engine.connect(connectInput()), {
      allow: true,
      role: 'app_reader',
      database: 'app',
      rule: 'service-default-role',
      reason: 'orders-svc connects to app as its default role app_reader',
    });
  });

  test('an unknown service is denied', () => {
    const decision = engine.connect(connectInput({ name: 'intruder' }));
    assert.equal(decision.allow, false);
    assert.equal(decision.rule, 'unknown-service');
    assert.equal(decision.role, null);
    assert.equal(decision.database, null);
  });

  test('a requested role is honoured when the service lists it', () => {
    const decision = engine.connect(connectInput({ role: 'app_writer' }));
    assert.equal(decision.allow, true);
    assert.equal(decision.role, 'app_writer');
    assert.equal(decision.rule, 'service-requested-role');
  });

  test('a requested role the service does not list is refused, not replaced by the default', () => {
    const decision = engine.connect(connectInput({ role: 'app_admin' }));
    assert.equal(decision.allow, false);
    assert.equal(decision.rule, 'role-not-allowed');
    assert.equal(decision.role, null);
  });

  test('a database the service does not list is refused', () => {
    assert.equal(engine.connect(connectInput({ database: 'postgres' })).rule, 'database-not-allowed');
  });

  test('CIDR allow-list: IPv4 and IPv6, inside and outside', async () => {
    const local = await PolicyEngine.create(artifact);
    const services = (built.data as { services: Record<string, Record<string, unknown>> }).services;
    local.setData(withData(built, { services: { ...services, 'orders-svc': { ...services['orders-svc'], cidrs: ['10.1.0.0/16', 'fd00:1::/32'] } } }));
    const cases: Array<[string, boolean]> = [
      ['10.1.0.1', true],
      ['10.1.255.254', true],
      ['10.2.0.1', false],
      ['192.0.2.10', false],
      ['fd00:1::1', true],
      ['fd00:1:ffff:ffff::1', true],
      ['fd00:2::1', false],
      ['2001:db8::1', false],
      ['::ffff:10.1.0.1', false], // not normalised: rolegate sends dotted IPv4 (contract)
      ['not-an-address', false],
    ];
    for (const [addr, allowed] of cases) {
      const decision = local.connect(connectInput({ addr }));
      assert.equal(decision.allow, allowed, `${addr}: ${decision.rule} ${decision.reason}`);
      if (!allowed) assert.equal(decision.rule, 'client-address-not-allowed', addr);
    }
  });

  test('a dev service cannot connect through a prod proxy', () => {
    const decision = engine.connect(connectInput({ name: 'orders-svc-dev', addr: '192.0.2.7' }));
    assert.equal(decision.allow, false);
    assert.equal(decision.rule, 'environment-mismatch');
    assert.equal(engine.connect(connectInput({ name: 'orders-svc-dev', addr: '192.0.2.7', env: 'staging' })).allow, true);
  });

  test('method and TLS requirements of a service', () => {
    const dba = { name: 'dba', addr: '10.99.0.7' };
    assert.equal(engine.connect(connectInput({ ...dba, method: 'jwt' })).rule, 'auth-method-not-allowed');
    assert.equal(engine.connect(connectInput({ ...dba, tls: false })).rule, 'tls-required');
    const admin = engine.connect(connectInput({ ...dba, method: 'cert', role: 'app_admin' }));
    assert.equal(admin.allow, true);
    assert.equal(admin.role, 'app_admin');
  });
});

describe('statement (shipped policy)', () => {
  test('a reader may SELECT', () => {
    assert.deepEqual(engine.statement(statementInput('app_reader', 'SELECT', { tables: orders('read') })), {
      allow: true,
      rule: 'allow-read',
      reason: 'app_reader (reader) may run SELECT',
    });
  });

  test('a reader may not DELETE', () => {
    assert.deepEqual(engine.statement(statementInput('app_reader', 'DELETE', { tables: orders('write') })), {
      allow: false,
      rule: 'read-only-role',
      reason: 'app_reader is a reader role and DELETE here is a write',
    });
  });

  test('a write hidden below a read is a write', () => {
    const cte = engine.statement(statementInput('app_reader', 'SELECT', { tables: orders('write'), flags: { data_modifying_cte: true } }));
    assert.equal(cte.rule, 'read-only-role');
    const explain = engine.statement(statementInput('app_reader', 'EXPLAIN', { tables: orders('write') }));
    assert.equal(explain.rule, 'read-only-role');
    const into = engine.statement(statementInput('app_writer', 'SELECT', { tables: orders('read'), flags: { into: true } }));
    assert.equal(into.rule, 'no-ddl-outside-admin');
  });

  test('a writer writes but runs no DDL', () => {
    assert.equal(engine.statement(statementInput('app_writer', 'INSERT', { tables: orders('write') })).rule, 'allow-write');
    assert.equal(engine.statement(statementInput('app_writer', 'CREATE TABLE')).rule, 'no-ddl-outside-admin');
    assert.equal(engine.statement(statementInput('app_writer', 'GRANT')).rule, 'no-dcl-outside-admin');
    assert.equal(engine.statement(statementInput('app_writer', 'DO')).rule, 'no-code-outside-admin');
  });

  test('an admin runs DDL', () => {
    const decision = engine.statement(statementInput('app_admin', 'CREATE TABLE', { tables: [{ schema: 'public', name: 'audit', access: ['write'] }] }, { name: 'dba' }));
    assert.deepEqual(decision, { allow: true, rule: 'allow-ddl', reason: 'app_admin (admin) may run CREATE TABLE' });
  });

  test("set_config('role', …) is denied, for admins too", () => {
    for (const [role, name] of [
      ['app_writer', 'orders-svc'],
      ['app_admin', 'dba'],
    ] as const) {
      const decision = engine.statement(
        statementInput(role, 'SELECT', { functions: [{ schema: null, name: 'set_config' }], parameter: 'role' }, { name }),
      );
      assert.equal(decision.allow, false);
      assert.equal(decision.rule, 'role-switch');
    }
  });

  test('dangerous functions are denied for every role', () => {
    for (const fn of ['pg_read_file', 'lo_import', 'dblink_exec', 'pg_ls_dir']) {
      const decision = engine.statement(statementInput('app_admin', 'SELECT', { functions: [{ schema: null, name: fn }] }, { name: 'dba' }));
      assert.equal(decision.rule, 'denied-function', fn);
    }
    const program = engine.statement(statementInput('app_admin', 'COPY', { tables: orders('write'), flags: { copy_program: true } }, { name: 'dba' }));
    assert.equal(program.rule, 'copy-program');
    assert.equal(engine.statement(statementInput('app_reader', 'SET', { parameter: 'client_encoding' })).rule, 'parser-differential');
  });

  test('maintenance window: writes denied from the first minute, allowed again at the end minute', async () => {
    const local = await PolicyEngine.create(artifact);
    local.setData(withData(built, { maintenance_windows: [{ name: 'drill', weekdays: ['Sunday'], start: '03:00', end: '03:30' }] }));
    const write = (hour: number, minute: number, weekday: Weekday = 'Sunday') =>
      local.statement(statementInput('app_writer', 'UPDATE', { tables: orders('write') }, { weekday, hour, minute }));
    assert.equal(write(2, 59).allow, true);
    assert.deepEqual(write(3, 0), {
      allow: false,
      rule: 'maintenance-window',
      reason: 'writes are paused during the maintenance window drill (03:00-03:30 UTC)',
    });
    assert.equal(write(3, 29).rule, 'maintenance-window');
    assert.equal(write(3, 30).allow, true);
    assert.equal(write(3, 15, 'Saturday').allow, true);
    const read = local.statement(statementInput('app_writer', 'SELECT', { tables: orders('read') }, { weekday: 'Sunday', hour: 3, minute: 15 }));
    assert.equal(read.allow, true);
  });

  test('the session is re-checked against reloaded data', async () => {
    const local = await PolicyEngine.create(artifact);
    const input = statementInput('app_writer', 'SELECT');
    assert.equal(local.statement(input).allow, true);
    const services = (built.data as { services: Record<string, Record<string, unknown>> }).services;
    local.setData(withData(built, { services: { ...services, 'orders-svc': { ...services['orders-svc'], roles: ['app_reader'] } } }));
    assert.equal(local.statement(input).rule, 'role-not-allowed');
  });
});

describe('engine: anything but {allow: true} is a deny', () => {
  test('a policy whose output is not an object', async () => {
    const dir = await policyDir({ 'p.rego': 'package rolegate\n\nconnect := "yes"\n\nstatement := true\n' });
    scratch.push(dir);
    const local = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir, opaPath })));
    assert.deepEqual(local.statement(statementInput('app_reader', 'SELECT')), {
      allow: false,
      rule: 'default-deny',
      reason: 'statement policy returned a boolean',
    });
    const connect = local.connect(connectInput());
    assert.equal(connect.allow, false);
    assert.equal(connect.rule, 'default-deny');
  });

  test('undefined, allow not exactly true, and an allow without a role', async () => {
    const dir = await policyDir({
      'p.rego': [
        'package rolegate',
        '',
        'connect := {"allow": true, "rule": "r"} if input.request.database == "norole"',
        '',
        'connect := {"allow": true, "role": "app_reader"} if input.request.database == "bare"',
        '',
        'statement := {"allow": "true", "rule": "stringly"} if input.statement.command == "SELECT"',
        '',
        'statement := {"allow": false} if input.statement.command == "DELETE"',
        '',
      ].join('\n'),
    });
    scratch.push(dir);
    const local = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir, opaPath })));
    const undefinedDecision = local.statement(statementInput('app_reader', 'UPDATE'));
    assert.deepEqual(undefinedDecision, { allow: false, rule: 'default-deny', reason: 'statement policy returned undefined (no rule produced a decision)' });
    assert.deepEqual(local.statement(statementInput('app_reader', 'SELECT')), {
      allow: false,
      rule: 'stringly',
      reason: 'statement decision has no allow: true',
    });
    assert.deepEqual(local.statement(statementInput('app_reader', 'DELETE')), { allow: false, rule: 'default-deny', reason: 'statement denied by policy' });
    const noRole = local.connect(connectInput({ database: 'norole' }));
    assert.equal(noRole.allow, false);
    assert.equal(noRole.rule, 'default-deny');
    assert.match(noRole.reason, /names no role/);
    // database omitted on allow: the requested one; rule omitted: 'unnamed-rule'
    assert.deepEqual(local.connect(connectInput({ database: 'bare' })), {
      allow: true,
      role: 'app_reader',
      database: 'bare',
      rule: 'unnamed-rule',
      reason: 'allowed by policy',
    });
  });

  test('opa-wasm throwing a string is a deny with RG_POLICY_EVAL, never a crash', async () => {
    // Two complete rules with different values: the wasm aborts with
    // "<file>:<row>:<col>: var assignment conflict" (a thrown string).
    const dir = await policyDir({
      'p.rego': [
        'package rolegate',
        '',
        'connect := {"allow": false}',
        '',
        'statement := {"allow": true, "rule": "a"} if input.session.role != ""',
        '',
        'statement := {"allow": true, "rule": "b"} if input.statement.command == "SELECT"',
        '',
        '# allocates without bound: exhausts a small memory maximum',
        'statement := {"allow": count(numbers.range(1, 10000000)) > 0} if input.statement.command == "HUGE"',
        '',
      ].join('\n'),
    });
    scratch.push(dir);
    const errors: Array<{ error: RolegateError; entrypoint: PolicyEntrypoint }> = [];
    const local = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir, opaPath })), {
      maximumMemoryPages: 64,
      onError: (error, entrypoint) => errors.push({ error, entrypoint }),
    });
    const conflict = local.statement(statementInput('app_reader', 'SELECT'));
    assert.equal(conflict.allow, false);
    assert.equal(conflict.rule, 'policy-error');
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.error.code, 'RG_POLICY_EVAL');
    assert.equal(errors[0]?.entrypoint, 'rolegate/statement');
    assert.match(errors[0]?.error.message ?? '', /var assignment conflict/);
    assert.equal(typeof errors[0]?.error.cause, 'string', 'opa-wasm threw a string');

    const huge = local.statement(statementInput('', 'HUGE'));
    assert.equal(huge.allow, false);
    assert.equal(huge.rule, 'policy-error');
    assert.equal(errors[1]?.error.code, 'RG_POLICY_EVAL');
    assert.match(errors[1]?.error.message ?? '', /opa_malloc|memory/i);

    // The instance survives both: the next evaluation works.
    assert.equal(local.statement(statementInput('', 'UPDATE')).rule, 'default-deny');
    assert.equal(local.connect(connectInput()).allow, false);
  });

  test('a throwing onError hook does not escape', async () => {
    const dir = await policyDir({
      'p.rego': 'package rolegate\n\nconnect := {"allow": false}\n\nstatement := 1 if input.x\n\nstatement := 2 if input.statement\n',
    });
    scratch.push(dir);
    const local = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir, opaPath })), {
      onError: () => {
        throw new Error('hook failed');
      },
    });
    const input = { ...statementInput('app_reader', 'SELECT'), x: true } as StatementInput;
    assert.equal(local.statement(input).rule, 'policy-error');
  });

  test('setData failure makes every decision a deny until data loads again', async () => {
    const local = await PolicyEngine.create(artifact, { maximumMemoryPages: 32 });
    const big = withData(built, { padding: 'x'.repeat(4 * 1024 * 1024) });
    assert.throws(() => local.setData(big), (error: RolegateError) => error.code === 'RG_POLICY_LOAD');
    const denied = local.statement(statementInput('app_reader', 'SELECT'));
    assert.equal(denied.allow, false);
    assert.equal(denied.rule, 'policy-error');
    assert.throws(() => local.setData([]), (error: RolegateError) => error.code === 'RG_POLICY_LOAD');
    local.setData(built.data);
    assert.equal(local.statement(statementInput('app_reader', 'SELECT')).allow, true);
  });

  test('create refuses a module without the rolegate entry points', async () => {
    const dir = await policyDir({ 'p.rego': 'package other\n\nx := 1\n' });
    scratch.push(dir);
    // buildPolicy insists on both entry points (opa: "does not refer to a rule")…
    await assert.rejects(buildPolicy({ dir, opaPath }), (error: RolegateError) => error.code === 'RG_POLICY_BUILD' && /rolegate\/connect/.test(error.message));
    // …and so does the engine, for wasm built some other way.
    const bundle = join(dir, 'other.tar.gz');
    const result = await runOpa(opaPath, ['build', '-t', 'wasm', '-e', 'other/x', '-o', bundle, join(dir, 'p.rego')]);
    assert.equal(result.code, 0, result.stderr);
    const wasm = readTarFiles(gunzipSync(await readFile(bundle))).get('policy.wasm');
    assert.ok(wasm !== undefined);
    const other = await compilePolicy({ wasm, data: {}, revision: 'other' });
    await assert.rejects(PolicyEngine.create(other), (error: RolegateError) => error.code === 'RG_POLICY_LOAD' && /other\/x/.test(error.message));
    await assert.rejects(compilePolicy({ wasm: new Uint8Array([0, 1, 2]), data: {}, revision: 'junk' }), (error: RolegateError) => error.code === 'RG_POLICY_LOAD');
    await assert.rejects(PolicyEngine.create(artifact, { maximumMemoryPages: 0 }), (error: RolegateError) => error.code === 'RG_POLICY_LOAD');
  });

  test('decision shaping without wasm', () => {
    assert.equal(toStatementDecision(null).rule, 'default-deny');
    assert.equal(toStatementDecision([{ allow: true }]).allow, false);
    assert.equal(toConnectDecision({ allow: true, role: 'r', database: 5 }, connectInput()).allow, false);
    assert.equal(toConnectDecision({ allow: true, role: '' }, connectInput()).allow, false);
    assert.deepEqual(toConnectDecision({ allow: false, rule: 'x', reason: 'y', role: 'r' }, connectInput()), {
      allow: false,
      role: null,
      database: null,
      rule: 'x',
      reason: 'y',
    });
  });
});

describe('worker threads', () => {
  test('the compiled module is posted to a worker, which instantiates and evaluates it', async () => {
    const workerUrl = new URL('../../src/policy/engine.ts', import.meta.url).href;
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(${JSON.stringify(workerUrl)}).then(async ({ PolicyEngine }) => {
        const engine = await PolicyEngine.create(workerData.artifact);
        parentPort.postMessage(engine.statement(workerData.input));
      }).catch((error) => parentPort.postMessage({ error: String(error) }));
    `;
    const worker = new Worker(source, { eval: true, workerData: { artifact, input: statementInput('app_reader', 'DELETE', { tables: orders('write') }) } });
    const reply = await new Promise<unknown>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    assert.deepEqual(reply, { allow: false, rule: 'read-only-role', reason: 'app_reader is a reader role and DELETE here is a write' });
  });
});
