// `rolegate facts` and `rolegate explain` (src/cli/explain.ts) on the shipped
// policy, really compiled by opa: the in-process Explainer for what the
// documents hold, the command itself for its flags, output and exit statuses.
// That explain agrees with the live proxy is test/integration/explain-differential.test.ts.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { Explainer, type ExplainRequest } from '../../src/cli/explain.ts';
import { parseConfig } from '../../src/config/config.ts';
import { SessionSqlState } from '../../src/decision/authorizer.ts';
import { SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { initParser } from '../../src/sql/parser.ts';
import { CLI } from '../helpers/proxy.ts';

const WEDNESDAY_NOON = '2026-11-25T12:00:00Z';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function rolegate(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(stdin ?? '');
  });
}

function json(run: Run): any {
  try {
    return JSON.parse(run.stdout);
  } catch {
    assert.fail(`not one JSON document (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
}

const READER = ['--identity', 'reporting-svc', '--database', 'app', '--env', 'prod', '--time', WEDNESDAY_NOON];

describe('Explainer (in process)', () => {
  let explainer: Explainer;
  const request = (sql: string | Buffer | null, extra: Partial<ExplainRequest> = {}): ExplainRequest => ({
    identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '10.1.2.3', port: 51544, tls: true },
    request: { database: 'app', role: 'app_writer', application_name: 'orders-api' },
    timeMs: Date.parse(WEDNESDAY_NOON),
    sql,
    protocol: 'extended',
    inTransaction: true,
    ...extra,
  });

  before(async () => {
    await initParser();
    const config = parseConfig(`proxy: { env: prod, instance: explain-test }\npolicy: { dir: ${JSON.stringify(SHIPPED_POLICY_DIR)} }\n`, null);
    explainer = await Explainer.create(config);
  });

  test('the connect input and the statement inputs are the documents of docs/policy.md, built from the request', () => {
    const e = explainer.explain(request('UPDATE orders SET total = 1 WHERE id = 7'));
    assert.deepEqual(e.connect.input, {
      identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
      client: { addr: '10.1.2.3', port: 51544, tls: true },
      request: { database: 'app', role: 'app_writer', application_name: 'orders-api' },
      time: { unix_ns: Date.parse(WEDNESDAY_NOON) * 1e6, rfc3339: e.connect.input.time.rfc3339, weekday: 'Wednesday', hour: 12, minute: 0, tz: 'UTC' },
      proxy: { env: 'prod', instance: 'explain-test' },
    });
    assert.equal(Date.parse(e.connect.input.time.rfc3339), Date.parse(WEDNESDAY_NOON));
    assert.deepEqual(e.connect.decision, { allow: true, role: 'app_writer', database: 'app', rule: 'service-requested-role', reason: e.connect.decision.reason });
    assert.deepEqual(e.connect.session, { role: 'app_writer', database: 'app' });
    assert.equal(e.statements.length, 1);
    const s = e.statements[0]!;
    assert.deepEqual(s.input?.session, { role: 'app_writer', database: 'app', in_transaction: true });
    assert.equal(s.input?.statement.protocol, 'extended');
    assert.equal(s.input?.statement.command, 'UPDATE');
    assert.deepEqual(s.input?.statement.tables, [{ schema: null, name: 'orders', access: ['write'] }]);
    assert.deepEqual(s.input?.identity, e.connect.input.identity);
    assert.deepEqual(s.input?.time, e.connect.input.time);
    assert.deepEqual(s.decision, { allow: true, rule: 'allow-write', reason: s.decision?.reason });
    assert.equal(e.allowed, true);
    assert.equal(e.client_error, null);
    assert.deepEqual(e.verdict, { allow: true, rule: null, reason: null, source: null, statement: null });
  });

  test('a text is decided statement by statement up to the first denial; the client error is the relay’s', () => {
    const e = explainer.explain(request('SELECT 1; CREATE TABLE x (a int); DELETE FROM orders'));
    assert.deepEqual(
      e.statements.map((s) => [s.facts.command, s.decision?.rule ?? null, s.input === null]),
      [
        ['SELECT', 'allow-read', false],
        ['CREATE TABLE', 'no-ddl-outside-admin', false],
        ['DELETE', null, true],
      ],
    );
    assert.equal(e.allowed, false);
    assert.deepEqual(e.verdict, { allow: false, rule: 'no-ddl-outside-admin', reason: e.statements[1]!.decision!.reason, source: 'policy', statement: 2 });
    assert.deepEqual(e.client_error, {
      severity: 'ERROR',
      sqlstate: '42501',
      message: `permission denied by rolegate rule "no-ddl-outside-admin": ${e.statements[1]!.decision!.reason}`,
      detail: `rule: no-ddl-outside-admin; policy revision: ${explainer.revision}`,
    });
  });

  test("rolegate's own rules: parse errors (with the position), text that is not UTF-8, an unknown prepared statement", () => {
    const parseError = explainer.explain(request('SELECT FROM WHERE'));
    assert.equal(parseError.statements.length, 0);
    assert.equal(parseError.verdict?.rule, 'parse-error');
    assert.equal(parseError.verdict?.source, 'rolegate');
    assert.equal(parseError.client_error?.sqlstate, '42601');
    assert.equal(parseError.client_error?.position, 13);

    const bytes = explainer.explain(request(Buffer.from([0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0xff, 0x27])));
    assert.equal(bytes.verdict?.rule, 'invalid-text');
    assert.equal(bytes.client_error?.sqlstate, '22021');

    const unknown = explainer.explain(request('EXECUTE nowhere'));
    assert.deepEqual([unknown.verdict?.rule, unknown.verdict?.source, unknown.verdict?.statement], ['unknown-prepared-statement', 'rolegate', 1]);
  });

  test('a session state carries PREPARE to a later EXECUTE, as a connection does', () => {
    const state = new SessionSqlState();
    assert.equal(explainer.explain(request('PREPARE w AS DELETE FROM orders'), state).allowed, true);
    const asWriter = explainer.explain(request('EXECUTE w'), state);
    assert.equal(asWriter.allowed, true);
    // Without that PREPARE the name is unknown.
    assert.equal(explainer.explain(request('EXECUTE w')).verdict?.rule, 'unknown-prepared-statement');
  });

  test('a refused connection: FATAL 28000 with the rule in the detail, no statement decided', () => {
    const e = explainer.explain(request('SELECT 1', { client: { addr: '192.0.2.1', port: 1, tls: false } }));
    assert.equal(e.connect.decision.rule, 'client-address-not-allowed');
    assert.equal(e.connect.session, null);
    assert.deepEqual(e.statements, []);
    assert.deepEqual(e.client_error, { severity: 'FATAL', sqlstate: '28000', message: `connection refused by policy: ${e.connect.decision.reason}`, detail: 'rule: client-address-not-allowed' });
  });
});

describe('rolegate facts', () => {
  test('--json: per statement command, tables with access, functions, columns, flags, parameter and session effects; exit 0', async () => {
    const run = await rolegate(['facts', '--json', '--sql', "SELECT o.id, pg_read_file('x') FROM orders o FOR UPDATE; PREPARE p AS DELETE FROM t; SET search_path = x"]);
    assert.equal(run.code, 0, run.stderr);
    const doc = json(run);
    assert.equal(doc.ok, true);
    assert.deepEqual(
      doc.statements.map((s: any) => [s.command, s.tables, s.functions, s.flags.locking, s.parameter, s.effects.prepares]),
      [
        ['SELECT', [{ schema: null, name: 'orders', access: ['read', 'write'] }], [{ schema: null, name: 'pg_read_file' }], true, null, null],
        ['PREPARE', [{ schema: null, name: 't', access: ['write'] }], [], false, null, 'p'],
        ['SET', [], [], false, 'search_path', null],
      ],
    );
    assert.deepEqual(doc.statements[0].columns, [{ table: 'orders', name: 'id', access: 'read' }]);
  });

  test('a text PostgreSQL cannot parse: exit 1 with the position; the SQL may come on stdin', async () => {
    const run = await rolegate(['facts'], 'SELECT * FROM');
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^not parsed \(RG_PARSE_ERROR\) at character 14: syntax error at end of input/);
  });
});

describe('rolegate explain', () => {
  test('a denial: exit 1; --json holds facts, both inputs, the decisions and what the client gets', async () => {
    const run = await rolegate(['explain', ...READER, '--json', '--sql', 'DELETE FROM orders WHERE id = 1']);
    assert.equal(run.code, 1, run.stderr);
    const doc = json(run);
    assert.equal(doc.connect.decision.rule, 'service-default-role');
    assert.equal(doc.connect.input.request.database, 'app');
    assert.equal(doc.statements[0].facts.command, 'DELETE');
    assert.equal(doc.statements[0].input.statement.protocol, 'simple');
    assert.equal(doc.statements[0].input.session.role, 'app_reader');
    assert.equal(doc.statements[0].decision.rule, 'read-only-role');
    assert.equal(doc.verdict.rule, 'read-only-role');
    assert.equal(doc.client_error.sqlstate, '42501');
    assert.equal(doc.client_error.detail, `rule: read-only-role; policy revision: ${doc.policy.revision}`);
    assert.equal(doc.policy.dir, SHIPPED_POLICY_DIR.replace(/\/$/, ''));
  });

  test('readable text by default, naming the rule', async () => {
    const run = await rolegate(['explain', ...READER, '--sql', 'DELETE FROM orders']);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /^CONNECT {4}reporting-svc \(scram-sha-256\) from 127\.0\.0\.1:0, no TLS, database app, no role requested$/m);
    assert.match(run.stdout, /^ {2}decision deny {2}rule read-only-role$/m);
    assert.match(run.stdout, /^VERDICT {4}denied by rule "read-only-role" \(statement 1\)/m);
    assert.match(run.stdout, /client gets {2}ERROR 42501 {2}permission denied by rolegate rule "read-only-role"/);
  });

  test('an allow: exit 0; --config gives env and zone, flags give address (normalised), TLS, protocol and transaction state', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-explain-'));
    const config = path.join(dir, 'rolegate.yaml');
    writeFileSync(config, `proxy: { env: prod, instance: from-config }\ntime: { zone: Europe/Berlin }\npolicy: { dir: ${JSON.stringify(SHIPPED_POLICY_DIR)} }\n`);
    const run = await rolegate([
      'explain',
      '--config',
      config,
      '--identity',
      'reporting-svc',
      '--database',
      'app',
      '--addr',
      '::ffff:10.20.0.9',
      '--port',
      '50117',
      '--tls',
      '--protocol',
      'extended',
      '--in-transaction',
      '--time',
      WEDNESDAY_NOON,
      '--json',
      '--sql',
      'SELECT count(*) FROM orders',
    ]);
    assert.equal(run.code, 0, run.stderr);
    const doc = json(run);
    assert.deepEqual(doc.connect.input.client, { addr: '10.20.0.9', port: 50117, tls: true });
    assert.deepEqual(doc.connect.input.proxy, { env: 'prod', instance: 'from-config' });
    assert.deepEqual([doc.connect.input.time.tz, doc.connect.input.time.hour], ['Europe/Berlin', 13]);
    assert.deepEqual(doc.statements[0].input.session, { role: 'app_reader', database: 'app', in_transaction: true });
    assert.equal(doc.statements[0].input.statement.protocol, 'extended');
    assert.equal(doc.allowed, true);
    assert.equal(doc.client_error, null);
    // The config names no upstream credentials for the role.
    assert.ok(doc.notes.some((n: string) => n.includes('no upstream credentials for role app_reader')), doc.notes.join('\n'));
  });

  test('--audit-record FILE:LINE takes identity, client, database, role, SQL, protocol and time from the record; its input adds TLS and transaction state', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-explain-'));
    const file = path.join(dir, 'audit.log');
    const common = { time: '2026-11-25T12:00:00.000Z', unix_ms: Date.parse(WEDNESDAY_NOON), session: 's-1', worker: 0, identity: { name: 'orders-svc', method: 'scram-sha-256' }, client: { addr: '10.1.0.7', port: 40000 }, database: 'app' };
    const connect = { audit: 'connect', ...common, seq: 1, role: 'app_writer', decision: 'allow', rule: 'service-requested-role', reason: 'r', policy_revision: 'old', decision_us: 1 };
    const statement = {
      audit: 'statement',
      ...common,
      seq: 2,
      role: 'app_writer',
      decision: 'allow',
      rule: 'allow-write',
      reason: 'r',
      policy_revision: 'old',
      decision_us: 1,
      protocol: 'extended',
      sql: 'TRUNCATE orders',
      command: 'TRUNCATE',
      tables: ['orders'],
      outcome: 'complete',
      input: { identity: { claims: {}, cert: null }, client: { tls: true }, time: { unix_ns: Date.parse('2026-11-29T03:10:00Z') * 1e6, tz: 'UTC' }, proxy: { env: 'prod', instance: 'rolegate-1' }, session: { in_transaction: true }, statement: {} },
    };
    writeFileSync(file, `${JSON.stringify(connect)}\n${JSON.stringify(statement)}\n`);
    const run = await rolegate(['explain', '--audit-record', `${file}:2`, '--json']);
    const doc = json(run);
    const input = doc.statements[0].input;
    assert.deepEqual(input.identity, { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null });
    assert.deepEqual(input.client, { addr: '10.1.0.7', port: 40000, tls: true });
    assert.deepEqual(input.session, { role: 'app_writer', database: 'app', in_transaction: true });
    assert.deepEqual(input.proxy, { env: 'prod', instance: 'rolegate-1' });
    assert.equal(input.statement.sql, 'TRUNCATE orders');
    assert.equal(input.statement.protocol, 'extended');
    // The input's time, not the record's: Sunday 03:10, inside the shipped maintenance window.
    assert.equal(input.time.weekday, 'Sunday');
    assert.equal(doc.verdict.rule, 'maintenance-window');
    assert.equal(run.code, 1);
    assert.deepEqual(doc.recorded, { decision: 'allow', rule: 'allow-write', reason: 'r', policy_revision: 'old' });
    assert.ok(!doc.notes.some((n: string) => n.includes('client.tls')), doc.notes.join('\n'));

    // A record without input: what it lacks is assumed and said so; flags override the record.
    writeFileSync(file, `${JSON.stringify({ ...statement, input: undefined })}\n`);
    const bare = await rolegate(['explain', '--audit-record', file, '--json', '--env', 'prod', '--sql', 'SELECT 1']);
    assert.equal(bare.code, 0, bare.stderr);
    const bareDoc = json(bare);
    assert.equal(bareDoc.statements[0].input.statement.sql, 'SELECT 1');
    assert.equal(bareDoc.statements[0].input.client.tls, false);
    assert.equal(bareDoc.statements[0].input.session.in_transaction, false);
    assert.equal(bareDoc.connect.input.time.unix_ns, Date.parse(WEDNESDAY_NOON) * 1e6);
    assert.ok(bareDoc.notes.some((n: string) => n.includes('client.tls')), bareDoc.notes.join('\n'));
  });

  test('--trace: opa eval --explain over the same sources, data and input', async () => {
    const run = await rolegate(['explain', ...READER, '--json', '--trace', 'fails', '--sql', 'DELETE FROM orders']);
    assert.equal(run.code, 1, run.stderr);
    const doc = json(run);
    assert.equal(doc.trace.length, 1);
    assert.equal(doc.trace[0].of, 1);
    assert.equal(doc.trace[0].entrypoint, 'data.rolegate.statement');
    assert.match(doc.trace[0].command, /--explain=fails/);
    assert.match(doc.trace[0].output, /Enter data\.rolegate\.statement/);
    // OPA's own answer, evaluated from the Rego sources, is the wasm's.
    assert.match(doc.trace[0].output, /"rule": "read-only-role"/);
  });

  test('--policy DIR explains a draft: a changed data.json changes the decision and the revision', async () => {
    const draft = mkdtempSync(path.join(tmpdir(), 'rolegate-draft-'));
    cpSync(SHIPPED_POLICY_DIR, draft, { recursive: true });
    const dataFile = path.join(draft, 'data.json');
    const data = JSON.parse(readFileSync(dataFile, 'utf8'));
    data.services['reporting-svc'].roles.push('app_writer');
    writeFileSync(dataFile, JSON.stringify(data));
    const [shipped, drafted] = await Promise.all([
      rolegate(['explain', ...READER, '--role', 'app_writer', '--json', '--sql', 'DELETE FROM orders']),
      rolegate(['explain', ...READER, '--role', 'app_writer', '--json', '--policy', draft, '--sql', 'DELETE FROM orders']),
    ]);
    assert.equal(shipped.code, 1);
    assert.equal(json(shipped).connect.decision.rule, 'role-not-allowed');
    assert.equal(drafted.code, 0, drafted.stderr);
    assert.equal(json(drafted).statements[0].decision.rule, 'allow-write');
    assert.notEqual(json(drafted).policy.revision, json(shipped).policy.revision);
  });

  test('exit 2 for usage errors, 3 for a policy that does not build', async () => {
    const usage = await Promise.all([
      rolegate(['explain', '--sql', 'SELECT 1']),
      rolegate(['explain', ...READER.slice(0, 6), '--time', 'tomorrow', '--sql', 'SELECT 1']),
      rolegate(['explain', ...READER, '--method', 'password', '--sql', 'SELECT 1']),
      rolegate(['explain', ...READER, '--claims', '[1]', '--sql', 'SELECT 1']),
      rolegate(['explain', ...READER, '--trace', 'everything', '--sql', 'SELECT 1']),
      rolegate(['explain', ...READER, '--bogus']),
      // Nothing on stdin is no SQL, not an empty text to allow.
      rolegate(['explain', ...READER]),
      rolegate(['facts']),
    ]);
    for (const run of usage) {
      assert.equal(run.code, 2, run.stdout + run.stderr);
      assert.match(run.stderr, /^rolegate: /);
    }
    const broken = mkdtempSync(path.join(tmpdir(), 'rolegate-broken-'));
    writeFileSync(path.join(broken, 'rolegate.rego'), 'package rolegate\n\nconnect := {"allow": true\n');
    const invalid = await rolegate(['explain', ...READER, '--policy', broken, '--sql', 'SELECT 1']);
    assert.equal(invalid.code, 3, invalid.stdout + invalid.stderr);
    assert.match(invalid.stderr, /rego_parse_error/);
  });
});
