// The build-time policy checks (src/policy/checks.ts) against the real opa:
// the strict/schema check (annotated packages and the combined input schema
// for the rest), the wasm builtin messages, the smoke test's decision
// validator, and `rolegate policy check|test` as users run them.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { status } from '../../src/admin/status.ts';
import { demoConfigYaml } from '../../src/cli/demo.ts';
import { renderCoverage, rowRanges, uncoveredRows } from '../../src/cli/policy-commands.ts';
import type { RolegateError } from '../../src/errors.ts';
import { buildPolicy, opaWasmCapabilities, SHIPPED_POLICY_DIR, SHIPPED_SCHEMA_DIR } from '../../src/policy/build.ts';
import {
  buildCheckedPolicy,
  dataKeyProblems,
  combinedInputSchema,
  runPolicyChecks,
  sampleInputs,
  schemaCheck,
  smokeTest,
  splitOpaErrors,
} from '../../src/policy/checks.ts';
import { compilePolicy, decisionProblems, toConnectDecision, toStatementDecision } from '../../src/policy/engine.ts';
import { ensureOpa, REPO_ROOT, runOpa } from '../../src/policy/opa-cli.ts';
import { builtinNames, explainUndefinedFunctions, unsupportedBuiltinMessage, WASM_BUILTIN_ALTERNATIVES } from '../../src/policy/wasm-builtins.ts';

const CLI = join(REPO_ROOT, 'src', 'cli', 'main.ts');

/** A complete, well-formed policy of its own (independent of the shipped library). */
const GOOD = `package rolegate

default connect := {"allow": false, "role": null, "database": null, "rule": "default-deny", "reason": "unknown service"}

connect := {"allow": true, "role": "app_reader", "database": null, "rule": "reader-login", "reason": "known service"} if {
\tinput.identity.name in {"orders-svc", "reporting-svc"}
}

default statement := {"allow": false, "rule": "only-select", "reason": "only SELECT is allowed"}

statement := {"allow": true, "rule": "select-ok", "reason": "SELECT is allowed"} if {
\tinput.statement.command == "SELECT"
}
`;

const GOOD_TEST = `package rolegate_test

import data.rolegate

test_select_allowed if {
\trolegate.statement.allow with input as {"statement": {"command": "SELECT"}}
}
`;

let opaPath: string;
let work: string;

before(async () => {
  opaPath = await ensureOpa();
  work = await mkdtemp(join(tmpdir(), 'rolegate-checks-test-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

let dirs = 0;
async function dirWith(files: Record<string, string>): Promise<string> {
  const dir = join(work, `p${++dirs}`);
  for (const [path, text] of Object.entries(files)) {
    const full = join(dir, path);
    await mkdir(join(full, '..'), { recursive: true });
    await writeFile(full, text);
  }
  return dir;
}

async function shippedCopy(): Promise<string> {
  const dir = join(work, `shipped${++dirs}`);
  await cp(SHIPPED_POLICY_DIR, dir, { recursive: true });
  return dir;
}

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 120_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('wasm builtins: the message names the builtin and the alternative', () => {
  test('the table lists only OPA builtins the wasm capabilities lack', async () => {
    const opa = await runOpa(opaPath, ['capabilities', '--current']);
    assert.equal(opa.code, 0, opa.stderr);
    const all = builtinNames(JSON.parse(opa.stdout));
    const wasm = builtinNames(await opaWasmCapabilities());
    assert.ok(all.size > 150 && wasm.size > 50, `${all.size} / ${wasm.size} builtins`);
    for (const name of Object.keys(WASM_BUILTIN_ALTERNATIVES)) {
      assert.ok(all.has(name), `${name} is not an OPA builtin`);
      assert.ok(!wasm.has(name), `${name} is available in wasm: it needs no alternative`);
    }
    for (const name of ['time.now_ns', 'time.weekday', 'time.clock', 'time.date', 'http.send', 'net.lookup_ip_addr', 'opa.runtime']) {
      assert.ok(name in WASM_BUILTIN_ALTERNATIVES, `${name} has no alternative`);
    }
    // rand.intn and time.diff are served by the wasm runtime: not refused, so not in the table.
    assert.ok(wasm.has('rand.intn') && wasm.has('time.diff'));
  });

  test('the message for time.now_ns, another with an alternative, and one without', () => {
    assert.equal(unsupportedBuiltinMessage('time.now_ns'), 'time.now_ns is not available in the wasm target: use input.time (rolegate supplies the time)');
    assert.match(unsupportedBuiltinMessage('io.jwt.verify_rs256'), /^io\.jwt\.verify_rs256 is not available in the wasm target: .*input\.identity\.claims/);
    assert.equal(
      unsupportedBuiltinMessage('semver.compare'),
      "semver.compare is not available in the wasm target (it is not in @open-policy-agent/opa-wasm's capabilities.json)",
    );
  });

  test('only builtins are rewritten; an undefined function of the policy keeps opa’s words', () => {
    const output = [
      '3 errors occurred:',
      'p/x.rego:3: rego_type_error: undefined function time.now_ns',
      'p/x.rego:5: rego_type_error: undefined function data.rolegate.text.off',
      'p/x.rego:7: rego_type_error: undefined function http.send',
    ].join('\n');
    assert.equal(
      explainUndefinedFunctions(output, new Set(['time.now_ns', 'http.send'])),
      [
        '3 errors occurred:',
        'p/x.rego:3: time.now_ns is not available in the wasm target: use input.time (rolegate supplies the time)',
        'p/x.rego:5: rego_type_error: undefined function data.rolegate.text.off',
        `p/x.rego:7: ${unsupportedBuiltinMessage('http.send')}`,
      ].join('\n'),
    );
  });

  test('buildPolicy reports time.now_ns with its file:line, the builtin and the alternative', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD, 'clock.rego': 'package rolegate.clock\n\nlate if time.now_ns() > 0\n' });
    await assert.rejects(buildPolicy({ dir, opaPath }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.ok(error.message.includes(`${dir}/clock.rego:3: time.now_ns is not available in the wasm target: use input.time (rolegate supplies the time)`), error.message);
      assert.doesNotMatch(error.message, /undefined function time\.now_ns/);
      return true;
    });
  });
});

describe('decisionProblems (the smoke test’s validator)', () => {
  const statement = 'rolegate/statement' as const;
  const connect = 'rolegate/connect' as const;

  test('well-formed answers and undefined pass', () => {
    assert.deepEqual(decisionProblems(statement, undefined), []);
    assert.deepEqual(decisionProblems(statement, { allow: true, rule: 'r', reason: '' }), []);
    assert.deepEqual(decisionProblems(statement, { allow: false, rule: 'r', reason: 'why', max_rows: 10 }), [], 'other keys are left alone');
    assert.deepEqual(decisionProblems(connect, { allow: true, role: 'app_reader', database: 'app', rule: 'r', reason: 'x' }), []);
    assert.deepEqual(decisionProblems(connect, { allow: true, role: 'app_reader', rule: 'r', reason: 'x' }), [], 'database may be omitted');
    assert.deepEqual(decisionProblems(connect, { allow: false, role: null, database: null, rule: 'r', reason: 'x' }), []);
  });

  test('each malformed answer says what is wrong', () => {
    const cases: Array<[typeof statement | typeof connect, unknown, RegExp]> = [
      [statement, { rule: 'r', reason: 'x' }, /^the answer has no allow \(keys: reason, rule\)/],
      [statement, { allow: 'true', rule: 'r', reason: 'x' }, /^allow is the string "true", not a boolean$/],
      [statement, { allow: 1, rule: 'r', reason: 'x' }, /^allow is the number 1, not a boolean$/],
      [statement, { allow: true, reason: 'x' }, /^the answer has no rule/],
      [statement, { allow: true, rule: '', reason: 'x' }, /^rule is the string "", not a non-empty string$/],
      [statement, { allow: true, rule: 'r' }, /^the answer has no reason/],
      [statement, { allow: true, rule: 'r', reason: ['x'] }, /^reason is an array, not a string$/],
      [statement, true, /^the answer is the boolean true, not an object/],
      [statement, [{ allow: true }], /^the answer is an array/],
      [connect, { allow: true, rule: 'r', reason: 'x' }, /^an allowing connect answer needs role \(a non-empty string\), got none$/],
      [connect, { allow: true, role: '', rule: 'r', reason: 'x' }, /needs role .* got the string ""/],
      [connect, { allow: false, role: 5, rule: 'r', reason: 'x' }, /^role is the number 5, not a string or null$/],
      [connect, { allow: true, role: 'r', database: 7, rule: 'r', reason: 'x' }, /^database is the number 7, not a non-empty string or null$/],
    ];
    for (const [entrypoint, value, pattern] of cases) {
      const problems = decisionProblems(entrypoint, value);
      assert.equal(problems.length, 1, `${JSON.stringify(value)}: ${JSON.stringify(problems)}`);
      assert.match(problems[0] ?? '', pattern);
    }
    assert.deepEqual(decisionProblems(statement, {}), [
      'the answer has no allow (keys: none): every answer needs allow: true or allow: false',
      'the answer has no rule (a non-empty string naming the rule that decided)',
      'the answer has no reason (a string)',
    ]);
  });

  test('at run time the same answers are denies (the engine stays safe)', () => {
    assert.deepEqual(toStatementDecision({ rule: 'r', reason: 'x' }), { allow: false, rule: 'r', reason: 'x' });
    assert.equal(toStatementDecision({ allow: 'true', rule: 'r', reason: 'x' }).allow, false);
    const input = { request: { database: 'app', role: null, application_name: null } } as Parameters<typeof toConnectDecision>[1];
    assert.equal(toConnectDecision({ rule: 'r', reason: 'x', role: 'app_reader' }, input).allow, false);
  });
});

describe('schema check', () => {
  test('the shipped policies pass, and the combined schema merges both inputs', async () => {
    assert.deepEqual(await schemaCheck({ dir: SHIPPED_POLICY_DIR, opaPath, schemaDir: SHIPPED_SCHEMA_DIR }), []);
    const combined = combinedInputSchema({
      a: { $schema: 'x', definitions: { t: { type: 'string' } }, properties: { x: { $ref: '#/definitions/t' } } },
      b: { definitions: { t: { type: 'number' } }, properties: { y: { $ref: '#/definitions/t' } } },
    });
    assert.deepEqual(combined.definitions, { 'a.t': { type: 'string' }, 'b.t': { type: 'number' } });
    assert.deepEqual(combined.anyOf, [{ properties: { x: { $ref: '#/definitions/a.t' } } }, { properties: { y: { $ref: '#/definitions/b.t' } } }]);
  });

  test('a typo in a package annotated with the statement schema: opa’s message with file:line and the unknown key, once', async () => {
    const dir = await dirWith({
      'rolegate.rego': GOOD,
      'typo.rego': '# METADATA\n# schemas:\n#   - input: schema.statement_input\npackage rolegate.typo\n\nddl if input.statement.comand == "DROP TABLE"\n',
    });
    const problems = await schemaCheck({ dir, opaPath, schemaDir: SHIPPED_SCHEMA_DIR });
    assert.equal(problems.length, 1, JSON.stringify(problems));
    const message = problems[0]?.message ?? '';
    assert.ok(message.startsWith(`${dir}/typo.rego:6: rego_type_error: undefined ref: input.statement.comand`), message);
    assert.match(message, /have: "comand"/);
    assert.match(message, /want \(one of\): \[.*"command".*\]/);
  });

  test('a typo in a package that names no schema is caught against both inputs at once', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD.replace('input.statement.command', 'input.statement.comand') });
    const problems = await schemaCheck({ dir, opaPath, schemaDir: SHIPPED_SCHEMA_DIR });
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.ok(problems[0]?.message.startsWith(`${dir}/rolegate.rego:12: rego_type_error: undefined ref: input.statement.comand`), problems[0]?.message);
    assert.match(problems[0]?.message ?? '', /have: "comand"/);
    // Reading the connect input and the statement input in one unannotated package is fine.
    const mixed = await dirWith({ 'rolegate.rego': GOOD, 'both.rego': 'package rolegate.both\n\nx if input.request.role == input.session.role\n' });
    assert.deepEqual(await schemaCheck({ dir: mixed, opaPath, schemaDir: SHIPPED_SCHEMA_DIR }), []);
  });

  test('a statement-only package reading the connect input, strict-mode errors, a copy of the library with a typo', async () => {
    const dir = await dirWith({
      'rolegate.rego': GOOD,
      'wrong.rego': '# METADATA\n# schemas:\n#   - input: schema.statement_input\npackage rolegate.wrong\n\nasked if input.request.role == "x"\n',
      'strict.rego': 'package rolegate.strict\n\nf if {\n\tx := 1\n}\n',
    });
    const messages = (await schemaCheck({ dir, opaPath, schemaDir: SHIPPED_SCHEMA_DIR })).map((p) => p.message.split('\n')[0]);
    assert.deepEqual(messages.sort(), [
      `${dir}/strict.rego:4: rego_compile_error: assigned var x unused`,
      `${dir}/wrong.rego:6: rego_type_error: undefined ref: input.request.role`,
    ]);
    const library = await shippedCopy();
    const file = join(library, 'commands.rego');
    const text = await readFile(file, 'utf8');
    assert.ok(text.includes('input.statement.command'));
    await writeFile(file, text.replace('input.statement.command', 'input.statement.comand'));
    const problems = await schemaCheck({ dir: library, opaPath, schemaDir: SHIPPED_SCHEMA_DIR });
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.match(problems[0]?.message ?? '', /commands\.rego:\d+: rego_type_error: undefined ref: input\.statement\.comand/);
  });

  test('opa’s pretty output splits into one problem per error', () => {
    assert.deepEqual(splitOpaErrors('1 error occurred: a.rego:3: rego_parse_error: x\n\tline\n\t^'), ['a.rego:3: rego_parse_error: x\n\tline\n\t^']);
    assert.deepEqual(splitOpaErrors('2 errors occurred during loading:\na.rego:3: rego_parse_error: x\n\tctx\nb.rego:4: rego_parse_error: y\n'), [
      'a.rego:3: rego_parse_error: x\n\tctx',
      'b.rego:4: rego_parse_error: y',
    ]);
  });
});

describe('smoke test', () => {
  test('the sample inputs are the schemas’ examples, and each one validates against its schema', async () => {
    const samples = await sampleInputs();
    for (const [entrypoint, name] of [
      ['rolegate/connect', 'connect_input'],
      ['rolegate/statement', 'statement_input'],
    ] as const) {
      assert.ok(samples[entrypoint].length >= 4, `${entrypoint}: ${samples[entrypoint].length} samples`);
      const schema = JSON.parse(await readFile(join(SHIPPED_SCHEMA_DIR, `${name}.json`), 'utf8')) as Record<string, unknown>;
      const result = await runOpa(opaPath, ['eval', '--format', 'json', '--stdin-input', '[i | some i, d in input.samples; not json.match_schema(d, input.schema)[0]]'], {
        input: JSON.stringify({ samples: samples[entrypoint], schema }),
      });
      assert.equal(result.code, 0, result.stderr);
      const invalid = (JSON.parse(result.stdout) as { result: Array<{ expressions: Array<{ value: unknown }> }> }).result[0]?.expressions[0]?.value;
      assert.deepEqual(invalid, [], `${name}: examples that do not match the schema`);
    }
  });

  test('the shipped library answers every sample with a well-formed decision, allows and denies both', async () => {
    const artifact = await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath }));
    assert.deepEqual(await smokeTest(artifact, await sampleInputs()), []);
  });

  test('an answer without allow names the entry point, the problem, a sample and the answer', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD.replace('default statement := {"allow": false, ', 'default statement := {') });
    const artifact = await compilePolicy(await buildPolicy({ dir, opaPath }));
    const problems = await smokeTest(artifact, await sampleInputs());
    assert.equal(problems.length, 1, JSON.stringify(problems));
    const message = problems[0]?.message ?? '';
    assert.match(message, /^rolegate\/statement: the answer has no allow \(keys: reason, rule\): every answer needs allow: true or allow: false — sample input "[^"]+" \(and \d+ more of \d+ samples\); it answered \{"reason":"only SELECT is allowed","rule":"only-select"\}$/);
  });

  test('undefined answers are denies, not problems; a failing evaluation is one', async () => {
    const undefinedOnly = await dirWith({ 'rolegate.rego': 'package rolegate\n\nconnect := {"allow": false, "rule": "x", "reason": "y"} if false\n\nstatement := {"allow": false, "rule": "x", "reason": "y"} if false\n' });
    assert.deepEqual(await smokeTest(await compilePolicy(await buildPolicy({ dir: undefinedOnly, opaPath })), await sampleInputs()), []);
    const conflict = await dirWith({
      'rolegate.rego': `${GOOD}\nconnect := {"allow": false, "role": null, "database": null, "rule": "other", "reason": "conflict"} if input.client.tls\n`,
    });
    const problems = await smokeTest(await compilePolicy(await buildPolicy({ dir: conflict, opaPath })), await sampleInputs());
    assert.ok(problems.length >= 1, JSON.stringify(problems));
    assert.match(problems[0]?.message ?? '', /^rolegate\/connect: evaluation failed: .*conflict/);
  });
});

describe('runPolicyChecks / buildCheckedPolicy', () => {
  test('the shipped library passes every stage', async () => {
    const report = await runPolicyChecks({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.deepEqual(report.problems, []);
    assert.ok(report.samples['rolegate/connect'] > 0 && report.samples['rolegate/statement'] > 0);
    const { built } = await buildCheckedPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.equal(built.revision, report.built?.revision);
  });

  test('every problem at once: a schema typo and an unsupported builtin; RG_POLICY_CHECK', async () => {
    const dir = await dirWith({
      'rolegate.rego': GOOD.replace('input.statement.command', 'input.statement.comand'),
      'clock.rego': 'package rolegate.clock\n\nlate if time.now_ns() > 0\n',
    });
    const report = await runPolicyChecks({ dir, opaPath });
    assert.deepEqual(
      report.problems.map((p) => [p.stage, p.message.split('\n')[0]]),
      [
        ['schema', `${dir}/rolegate.rego:12: rego_type_error: undefined ref: input.statement.comand`],
        ['build', `${dir}/clock.rego:3: time.now_ns is not available in the wasm target: use input.time (rolegate supplies the time)`],
      ],
    );
    await assert.rejects(buildCheckedPolicy({ dir, opaPath }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_CHECK');
      assert.match(error.message, new RegExp(`^policy ${dir} failed the build checks \\(2 problems\\):\\n- `));
      assert.match(error.message, /input\.statement\.comand/);
      assert.match(error.message, /time\.now_ns is not available in the wasm target/);
      return true;
    });
  });

  test('a syntax error is reported once, not by the check and again by the build', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD, 'broken.rego': 'package rolegate\n\nthis is not rego {\n' });
    const report = await runPolicyChecks({ dir, opaPath });
    const parse = report.problems.filter((p) => p.message.includes('rego_parse_error'));
    assert.ok(parse.length >= 1, JSON.stringify(report.problems));
    const firstLines = parse.map((p) => p.message.split('\n')[0]);
    assert.equal(new Set(firstLines).size, firstLines.length, `duplicates: ${JSON.stringify(firstLines)}`);
    assert.ok(firstLines.every((line) => line?.startsWith(`${dir}/broken.rego:`)));
  });

  test('a build-only failure keeps its code; a missing directory too', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD, 'clock.rego': 'package rolegate.clock\n\nlate if time.now_ns() > 0\n' });
    await assert.rejects(buildCheckedPolicy({ dir, opaPath }), (error: RolegateError) => error.code === 'RG_POLICY_BUILD' && /time\.now_ns is not available/.test(error.message));
    await assert.rejects(buildCheckedPolicy({ dir: join(work, 'nope'), opaPath }), (error: RolegateError) => error.code === 'RG_POLICY_BUILD' && /does not exist/.test(error.message));
  });
});

describe('policy test coverage summary', () => {
  test('uncovered rows as ranges', () => {
    const rows = uncoveredRows([{ start: { row: 7 }, end: { row: 9 } }, { start: { row: 12 }, end: { row: 12 } }, { start: { row: 8 } }]);
    assert.deepEqual(rows, [7, 8, 9, 12]);
    assert.equal(rowRanges(rows), '7-9, 12');
    assert.equal(rowRanges([]), '');
  });

  test('per-file percentages and lines not covered', async () => {
    const text = await renderCoverage(
      {
        coverage: 66.66666,
        covered_lines: 6,
        not_covered_lines: 3,
        files: { 'b.rego': { coverage: 100 }, 'a.rego': { coverage: 40, not_covered: [{ start: { row: 7 }, end: { row: 9 } }] } },
      },
      false,
    );
    assert.equal(text, 'coverage 66.7 % (6 of 9 lines)\n  a.rego   40.0 %  not covered: 7-9\n  b.rego  100.0 %\n');
  });
});

describe('/status shows the last reload', () => {
  test('a refused reload: ok false, the error, the revision that stays', () => {
    const base = { startedAt: 0, workers: () => [], recentDenials: () => [], audit: () => null, revision: () => 'aaaa' };
    assert.deepEqual(status({ ...base, lastReload: () => null }, 1000).policy, { revision: 'aaaa', last_reload: null, shadow: null });
    const refused = { at: '2026-11-27T22:55:00.000Z', ok: false, reason: 'SIGHUP', revision: 'aaaa', message: 'policy refused; …: time.now_ns is not available', code: 'RG_POLICY_BUILD' };
    assert.deepEqual(status({ ...base, lastReload: () => refused }, 1000).policy.last_reload, {
      at: refused.at,
      ok: false,
      reason: 'SIGHUP',
      revision: 'aaaa',
      code: 'RG_POLICY_BUILD',
      error: refused.message,
    });
    assert.equal(status({ ...base, lastReload: () => ({ ...refused, ok: true, code: null }) }, 1000).policy.last_reload?.error, null);
  });
});

describe('rolegate policy check | test (CLI)', () => {
  test('check: the shipped library is OK (exit 0); a broken one lists every problem (exit 3); --json', async () => {
    const ok = await runCli(['policy', 'check', '--policy', SHIPPED_POLICY_DIR]);
    assert.equal(ok.code, 0, ok.stderr + ok.stdout);
    assert.match(ok.stdout, /: OK, revision [0-9a-f]{16}\n/);
    assert.match(ok.stdout, /smoke test of rolegate\/connect \(\d+ samples\) and rolegate\/statement \(\d+ samples\)/);

    const dir = await dirWith({
      'rolegate.rego': GOOD.replace('default statement := {"allow": false, ', 'default statement := {').replace('input.identity.name', 'input.identity.nmae'),
      'clock.rego': 'package rolegate.clock\n\nlate if time.now_ns() > 0\n',
    });
    const bad = await runCli(['policy', 'check', '--policy', dir]);
    assert.equal(bad.code, 3, bad.stderr + bad.stdout);
    assert.match(bad.stdout, /^.*: 2 problems\n/);
    assert.match(bad.stdout, /\[schema\] .*rolegate\.rego:6: rego_type_error: undefined ref: input\.identity\.nmae/);
    assert.match(bad.stdout, /\[build\] .*clock\.rego:3: time\.now_ns is not available in the wasm target: use input\.time \(rolegate supplies the time\)/);

    const noAllow = await dirWith({ 'rolegate.rego': GOOD.replace('default statement := {"allow": false, ', 'default statement := {') });
    const json = await runCli(['policy', 'check', '--policy', noAllow, '--json']);
    assert.equal(json.code, 3);
    const report = JSON.parse(json.stdout) as { ok: boolean; problems: Array<{ stage: string; message: string }> };
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.problems.map((p) => p.stage),
      ['smoke'],
    );
    assert.match(report.problems[0]?.message ?? '', /^rolegate\/statement: the answer has no allow/);
  });

  test('check-config refuses the same policy with every problem (exit 3)', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD.replace('input.statement.command', 'input.statement.comand') });
    const config = join(dir, '..', `config-${dirs}.yaml`);
    const yaml = demoConfigYaml({ port: 0, upstreamPort: 5432, rolePasswords: { app_reader: 'x', app_writer: 'y', app_admin: 'z' }, withPolicy: true });
    const pointed = yaml.replace(/^policy: .*$/m, `policy: { dir: ${JSON.stringify(dir)} }`);
    assert.notEqual(pointed, yaml);
    await writeFile(config, pointed, { mode: 0o600 });
    const result = await runCli(['check-config', '--config', config]);
    assert.equal(result.code, 3, result.stderr + result.stdout);
    assert.match(result.stderr, /failed the build checks \(1 problem\):\n- .*rolegate\.rego:12: rego_type_error: undefined ref: input\.statement\.comand/);
  });

  test('test: pass (exit 0), coverage per file and lines not covered, threshold, failure (exit 3), usage (exit 2)', async () => {
    const dir = await dirWith({ 'rolegate.rego': GOOD, 'rolegate_test.rego': GOOD_TEST });
    const plain = await runCli(['policy', 'test', '--policy', dir]);
    assert.equal(plain.code, 0, plain.stderr + plain.stdout);
    assert.match(plain.stdout, /PASS: 1\/1/);

    const coverage = await runCli(['policy', 'test', '--policy', dir, '--coverage']);
    assert.equal(coverage.code, 0, coverage.stderr + coverage.stdout);
    assert.match(coverage.stdout, /^coverage \d+\.\d % \(\d+ of \d+ lines\)$/m);
    assert.match(coverage.stdout, new RegExp(`^  ${dir}/rolegate\\.rego +\\d+\\.\\d %  not covered: [0-9, -]+$`, 'm'));
    assert.match(coverage.stdout, new RegExp(`^  ${dir}/rolegate_test\\.rego +100\\.0 %$`, 'm'));

    const verbose = await runCli(['policy', 'test', '--policy', dir, '--coverage', '-v', '--threshold', '99']);
    assert.equal(verbose.code, 3, 'under the threshold');
    assert.match(verbose.stdout, /data\.rolegate_test\.test_select_allowed: PASS/);
    assert.match(verbose.stdout, new RegExp(`${dir}/rolegate\\.rego:\\d+: connect := \\{"allow": true`));
    assert.match(verbose.stdout, /is under the threshold of 99 %/);

    const failing = await dirWith({ 'rolegate.rego': GOOD, 'rolegate_test.rego': `${GOOD_TEST}\ntest_delete_allowed if {\n\trolegate.statement.allow with input as {"statement": {"command": "DELETE"}}\n}\n` });
    const failed = await runCli(['policy', 'test', '--policy', failing]);
    assert.equal(failed.code, 3);
    assert.match(failed.stdout, /test_delete_allowed: FAIL/);

    const usage = await runCli(['policy', 'test', '--policy', dir, '--threshold', '50']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--threshold needs --coverage/);
    assert.equal((await runCli(['policy', 'frobnicate'])).code, 2);
  });
});

describe('top-level data keys', () => {
  test('a near miss of a key the library reads is refused with the key it meant; an author\'s own data is not', async () => {
    const problems = await dataKeyProblems({ services: {}, maintenance_window: [], rolse: {}, pii: { columns: [] }, custom: {} }, SHIPPED_SCHEMA_DIR);
    assert.deepEqual(problems, [
      { stage: 'data', message: 'unknown-key: data.maintenance_window is not a key the library reads (did you mean maintenance_windows?)' },
      { stage: 'data', message: 'unknown-key: data.rolse is not a key the library reads (did you mean roles?)' },
    ]);
  });

  test('the shipped data has none', async () => {
    const built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
    assert.deepEqual(await dataKeyProblems(built.data, SHIPPED_SCHEMA_DIR), []);
  });
});

