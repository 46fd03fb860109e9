// What a policy author reads in the log: Rego print() output and evaluation
// failures, each naming the entry point, the session and the statement, and
// both rate-limited per worker. Policies are compiled by the real opa and
// evaluated by opa-wasm, as in a worker.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { parseConfig, type Config } from '../../src/config/config.ts';
import { SessionSqlState, type SessionContext } from '../../src/decision/authorizer.ts';
import { createAuthorizer } from '../../src/decision/authorizer-factory.ts';
import { TimeSource } from '../../src/decision/clock.ts';
import { LOG_SQL_CHARS, PolicyLog } from '../../src/decision/policy-log.ts';
import { LineBudget } from '../../src/log-budget.ts';
import { buildPolicy, ENTRYPOINTS, opaWasmCapabilities, policyRevision } from '../../src/policy/build.ts';
import type { ConnectInput } from '../../src/policy/contract.ts';
import { compilePolicy, PolicyEngine, printLines, type EvaluationCall, type PolicyBundle } from '../../src/policy/engine.ts';
import { ensureOpa, runOpa } from '../../src/policy/opa-cli.ts';
import { readTarFiles } from '../../src/policy/tar.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { initParser } from '../../src/sql/parser.ts';

interface Line {
  level: 'info' | 'warn';
  obj: Record<string, unknown>;
  msg: string;
}

function captureLog(): { lines: Line[]; info(obj: object, msg: string): void; warn(obj: object, msg: string): void } {
  const lines: Line[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  };
}

// Prints in both entry points; a table named boom_table makes two complete
// definitions of `statement` disagree, which the wasm reports as an error.
const PRINTING_POLICY = [
  'package rolegate',
  '',
  'connect := {"allow": true, "role": "app_reader", "rule": "any"} if {',
  '\tprint("connect from", input.client.addr, "as", input.identity.name)',
  '}',
  '',
  'statement := {"allow": true, "rule": "all"} if {',
  '\tprint("deciding", input.statement.command, "no such field:", input.statement.nope)',
  '}',
  '',
  'statement := {"allow": false, "rule": "boom"} if {',
  '\tsome t in input.statement.tables',
  '\tt.name == "boom_table"',
  '}',
  '',
].join('\n');

const connectInput: ConnectInput = {
  identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
  client: { addr: '10.1.2.3', port: 5000, tls: false },
  request: { database: 'app', role: null, application_name: null },
  time: { unix_ns: 0, rfc3339: '2026-11-27T12:00:00Z', weekday: 'Friday', hour: 12, minute: 0, tz: 'UTC' },
  proxy: { env: 'prod', instance: 'test' },
};

/** A session context that carries its log id, as the proxy's sessions do. */
function session(sessionId: string): SessionContext {
  const context: SessionContext & { sessionId: string } = {
    identity: connectInput.identity,
    client: connectInput.client,
    proxy: connectInput.proxy,
    role: 'app_reader',
    database: 'app',
    cacheKey: `orders-svc|${sessionId}`,
    keyMemo: { bucket: -1, keys: [] },
    sessionId,
  };
  return context;
}

let opaPath: string;
const scratch: string[] = [];

async function policyDir(rego: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rolegate-policy-log-test-'));
  scratch.push(dir);
  await writeFile(join(dir, 'p.rego'), rego);
  return dir;
}

/**
 * `opa build -t wasm --wasm-include-print` with opa-wasm's capabilities plus
 * internal.print (what print() compiles to): the wasm keeps its print calls.
 */
async function buildWithPrint(dir: string): Promise<PolicyBundle> {
  const capabilities = await opaWasmCapabilities();
  const builtins = capabilities['builtins'] as Array<{ name?: unknown }>;
  if (!builtins.some((b) => b.name === 'internal.print')) {
    builtins.push({ name: 'internal.print', decl: { type: 'function', args: [{ type: 'array', dynamic: { type: 'set', of: { type: 'any' } } }] } } as { name: string });
  }
  const capsFile = join(dir, 'caps.json');
  await writeFile(capsFile, JSON.stringify(capabilities));
  const bundle = join(dir, 'bundle.tar.gz');
  const args = ['build', '-t', 'wasm', '--wasm-include-print', '--capabilities', capsFile, '-o', bundle];
  for (const e of ENTRYPOINTS) args.push('-e', e);
  const result = await runOpa(opaPath, [...args, join(dir, 'p.rego')]);
  assert.equal(result.code, 0, result.stderr);
  const files = readTarFiles(gunzipSync(await readFile(bundle)));
  const wasm = files.get('policy.wasm');
  assert.ok(wasm);
  const artifact = await compilePolicy({ wasm, data: {}, revision: policyRevision(wasm, new Uint8Array()) });
  return { ...artifact, readsStatementText: false };
}

function config(): Config {
  return parseConfig('listen: { port: 0 }\nupstream: { host: 127.0.0.1, port: 5432 }\nusers: {}\nroles: {}\npolicy: { dir: /nonexistent }\n', null);
}

before(async () => {
  opaPath = await ensureOpa();
  await initParser();
});

after(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

describe('print() formatting', () => {
  test('operands joined by spaces, strings bare, other values as JSON, undefined as <undefined>', () => {
    assert.deepEqual(printLines([['deciding'], ['SELECT'], [{ a: 1 }], [3], []]), ['deciding SELECT {"a":1} 3 <undefined>']);
    assert.deepEqual(printLines([]), []);
    assert.deepEqual(printLines('not an array'), []);
  });

  test('an operand with several values: one line per combination, bounded', () => {
    assert.deepEqual(printLines([['t'], ['a', 'b'], [1, 2]]), ['t a 1', 't a 2', 't b 1', 't b 2']);
    assert.equal(printLines([['x', 'y', 'z', 'w'], [1, 2, 3, 4], [5, 6]], 10).length, 10);
  });
});

describe('print() in the wasm target', () => {
  test('opa drops print() from wasm built without --wasm-include-print', async () => {
    // buildPolicy() must pass --wasm-include-print and internal.print in the
    // capabilities, or every print() of a policy vanishes without a word.
    const dir = await policyDir(PRINTING_POLICY);
    const plain = join(dir, 'plain.tar.gz');
    const args = ['build', '-t', 'wasm', '-o', plain, '-e', 'rolegate/connect', '-e', 'rolegate/statement', join(dir, 'p.rego')];
    assert.equal((await runOpa(opaPath, args)).code, 0);
    const wasm = readTarFiles(gunzipSync(await readFile(plain))).get('policy.wasm');
    assert.ok(wasm);
    const printed: string[] = [];
    const engine = await PolicyEngine.create(await compilePolicy({ wasm, data: {}, revision: 'x' }), { onPrint: (line) => printed.push(line) });
    assert.equal(engine.connect(connectInput).allow, true);
    assert.deepEqual(printed, []);
  });

  test('built with --wasm-include-print: each line reaches onPrint with the entry point, input and session', async () => {
    const bundle = await buildWithPrint(await policyDir(PRINTING_POLICY));
    const printed: Array<{ line: string; call: EvaluationCall }> = [];
    const errors: EvaluationCall[] = [];
    const engine = await PolicyEngine.create(bundle, { onPrint: (line, call) => printed.push({ line, call }), onError: (_e, _ep, call) => errors.push(call) });
    const decision = engine.connect(connectInput, 's-connect');
    assert.equal(decision.allow, true, 'print() does not change the decision');
    assert.deepEqual(
      printed.map((p) => [p.line, p.call.entrypoint, p.call.sessionId]),
      [['connect from 10.1.2.3 as orders-svc', 'rolegate/connect', 's-connect']],
    );
    assert.equal(printed[0]?.call.input, connectInput);
    assert.deepEqual(errors, []);
  });

  test('through the worker path: print lines and evaluation failures name the session and the SQL', async () => {
    const bundle = await buildWithPrint(await policyDir(PRINTING_POLICY));
    const log = captureLog();
    const authorizer = await createAuthorizer(config(), bundle, new PolicyLog(log), new TimeSource('UTC'), new FactsCache(100));
    const state = new SessionSqlState();

    const allowed = authorizer.statements({ session: session('s-print'), state, sql: 'SELECT * FROM orders WHERE id = 1', protocol: 'simple', inTransaction: false });
    assert.equal(allowed.allow, true);
    const printLine = log.lines.find((l) => l.msg === 'policy print');
    assert.ok(printLine, JSON.stringify(log.lines));
    assert.equal(printLine.level, 'info');
    assert.equal(printLine.obj['print'], 'deciding SELECT no such field: <undefined>');
    assert.equal(printLine.obj['entrypoint'], 'rolegate/statement');
    assert.equal(printLine.obj['session'], 's-print');
    assert.equal(printLine.obj['sql'], 'SELECT * FROM orders WHERE id = 1');
    assert.equal(printLine.obj['identity'], 'orders-svc');
    assert.equal(printLine.obj['revision'], bundle.revision);

    const longSql = `SELECT * FROM boom_table WHERE note = '${'x'.repeat(500)}'`;
    const failed = authorizer.statements({ session: session('s-boom'), state, sql: longSql, protocol: 'simple', inTransaction: false });
    assert.equal(failed.allow, false);
    assert.equal(failed.allow ? '' : failed.rule, 'policy-error');
    const errorLine = log.lines.find((l) => l.msg === 'policy evaluation failed');
    assert.ok(errorLine, JSON.stringify(log.lines));
    assert.equal(errorLine.level, 'warn');
    assert.equal(errorLine.obj['session'], 's-boom');
    assert.equal(errorLine.obj['entrypoint'], 'rolegate/statement');
    assert.equal(errorLine.obj['code'], 'RG_POLICY_EVAL');
    assert.match(String(errorLine.obj['err']), /conflict/);
    const sql = String(errorLine.obj['sql']);
    assert.ok(sql.startsWith(longSql.slice(0, LOG_SQL_CHARS)), sql);
    assert.ok(sql.length < LOG_SQL_CHARS + 30, `bounded: ${sql.length} chars`);
    assert.match(sql, new RegExp(`\\(${longSql.length} chars\\)$`));
  });

  test('a throwing print hook neither fails the evaluation nor escapes', async () => {
    const engine = await PolicyEngine.create(await buildWithPrint(await policyDir(PRINTING_POLICY)), {
      onPrint: () => {
        throw new Error('hook failed');
      },
    });
    assert.equal(engine.connect(connectInput).allow, true);
  });
});

describe('rate limit', () => {
  test('at most N lines a second; the rest are counted and reported once', () => {
    const log = captureLog();
    let now = 1_000_000;
    const budget = new LineBudget(log, 'policy evaluation failed', 3, () => now);
    const taken = Array.from({ length: 10 }, () => budget.take());
    assert.deepEqual(taken, [true, true, true, false, false, false, false, false, false, false]);
    assert.equal(log.lines.length, 0, 'nothing reported inside the window');
    now += 1000;
    assert.equal(budget.take(), true, 'a new window');
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]?.level, 'warn');
    assert.equal(log.lines[0]?.obj['suppressed'], 7);
    assert.equal(log.lines[0]?.obj['lines'], 'policy evaluation failed');
    assert.match(log.lines[0]?.msg ?? '', /7 more "policy evaluation failed" lines/);
    now += 5000;
    budget.take();
    assert.equal(log.lines.length, 1, 'no report when nothing was suppressed');
  });

  test('the count is reported when the window ends, even if no line follows', async () => {
    const log = captureLog();
    const budget = new LineBudget(log, 'policy print', 1);
    budget.take();
    budget.take();
    budget.take();
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]?.obj['suppressed'], 2);
  });

  test('a client flooding evaluation failures gets N lines a second through PolicyLog', async () => {
    const bundle = await buildWithPrint(await policyDir(PRINTING_POLICY));
    const log = captureLog();
    let now = 5_000_000;
    const policyLog = new PolicyLog(log, { perSecond: 5, now: () => now });
    const authorizer = await createAuthorizer(config(), bundle, policyLog, new TimeSource('UTC'), new FactsCache(100));
    const state = new SessionSqlState();
    for (let i = 0; i < 200; i++) {
      // Distinct texts: no decision-cache hit, every one is evaluated and fails.
      authorizer.statements({ session: session(`s-${i}`), state, sql: `SELECT ${i} FROM boom_table`, protocol: 'simple', inTransaction: false });
    }
    assert.equal(log.lines.filter((l) => l.msg === 'policy evaluation failed').length, 5);
    now += 1000;
    authorizer.statements({ session: session('s-last'), state, sql: 'SELECT -1 FROM boom_table', protocol: 'simple', inTransaction: false });
    const report = log.lines.find((l) => l.obj['lines'] === 'policy evaluation failed' && l.obj['suppressed'] !== undefined);
    assert.equal(report?.obj['suppressed'], 195);
    // print() lines have their own budget: the failures did not use it up.
    assert.ok(log.lines.some((l) => l.msg === 'policy print'));
  });
});

describe('buildPolicy', () => {
  test('keeps print() calls: a policy that prints is heard in the log', async () => {
    const dir = await policyDir(PRINTING_POLICY);
    const built = await buildPolicy({ dir, opaPath });
    const printed: string[] = [];
    const engine = await PolicyEngine.create(await compilePolicy(built), { onPrint: (line) => printed.push(line) });
    assert.equal(engine.connect(connectInput).allow, true);
    assert.deepEqual(printed, ['connect from 10.1.2.3 as orders-svc']);
  });
});
