// Keeps docs/policy-authoring.md runnable: every `npx rolegate …` line in its
// sh blocks names a command and flags the CLI's help lists, and its worked
// example (the data it adds, the _test.rego it shows) passes opa test with
// the shipped library, and fails without the change it tests.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { ensureOpa, REPO_ROOT, runOpa } from '../../src/policy/opa-cli.ts';

const DOC = join(REPO_ROOT, 'docs', 'policy-authoring.md');
const CLI = join(REPO_ROOT, 'src', 'cli', 'main.ts');

let doc: string;
let work: string;

before(async () => {
  doc = await readFile(DOC, 'utf8');
  work = await mkdtemp(join(tmpdir(), 'rolegate-authoring-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

function help(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 }, (error, stdout) => {
      if (error === null) resolve(stdout);
      else reject(new Error(`rolegate ${args.join(' ')} failed: ${error.message}`));
    });
  });
}

/** The bodies of the doc's fenced blocks in one language, in order. */
function blocks(language: string): string[] {
  return [...doc.matchAll(new RegExp(`\`\`\`${language}\\n([\\s\\S]*?)\\n\`\`\``, 'g'))].map((m) => m[1] ?? '');
}

/** Each `npx rolegate …` command of the sh blocks, without its trailing comment, continuation lines joined. */
function rolegateCommands(): string[] {
  const commands: string[] = [];
  for (const body of blocks('sh')) {
    for (const line of body.replaceAll('\\\n', ' ').split('\n')) {
      const at = line.indexOf('npx rolegate ');
      if (at === -1) continue;
      commands.push(line.slice(at + 'npx rolegate '.length).replace(/\s#.*$/, '').split(';')[0] ?? '');
    }
  }
  return commands;
}

describe('docs/policy-authoring.md', () => {
  test('every rolegate command and flag in its sh blocks is one the CLI lists', async () => {
    const text = (await help(['--help'])) + (await help(['replay', '--help']));
    const commands = rolegateCommands();
    assert.ok(commands.length >= 10, `found only ${commands.length} commands`);
    for (const command of commands) {
      const words = command.trim().split(/\s+/);
      const name = words[0] === 'policy' ? `policy ${words[1] ?? ''}` : (words[0] ?? '');
      assert.match(text, new RegExp(`^  ${name} `, 'm'), `"${name}" is not a command in rolegate --help`);
      for (const flag of command.match(/(?<=\s)--[a-z][a-z-]*/g) ?? []) {
        assert.ok(new RegExp(`${flag}(?![a-z-])`).test(text), `${flag} (in "rolegate ${command.trim()}") is not in rolegate --help`);
      }
    }
  });

  test('the worked example passes opa test with the shipped library, and fails without the change', async () => {
    const opaPath = await ensureOpa();
    const json = blocks('json');
    const entry = json.find((b) => b.startsWith('"invoices-svc": {'));
    const change = json.find((b) => b.startsWith('"tables": {'));
    const rego = blocks('rego').find((b) => b.startsWith('package rolegate.invoices_svc_test'));
    assert.ok(entry !== undefined && change !== undefined && rego !== undefined, 'the example data or test is missing');
    const service = (JSON.parse(`{${entry}}`) as Record<string, Record<string, unknown>>)['invoices-svc'] ?? {};
    const data = JSON.parse(await readFile(join(SHIPPED_POLICY_DIR, 'data.json'), 'utf8')) as { services: Record<string, unknown> };

    const run = async (name: string, serviceEntry: Record<string, unknown>) => {
      const dir = join(work, name);
      await cp(SHIPPED_POLICY_DIR, dir, { recursive: true });
      await writeFile(join(dir, 'data.json'), JSON.stringify({ ...data, services: { ...data.services, 'invoices-svc': serviceEntry } }));
      await writeFile(join(dir, 'invoices_svc_test.rego'), `${rego}\n`);
      return runOpa(opaPath, ['test', '--run', 'invoices_svc_test', dir]);
    };

    const draft = await run('draft', { ...service, ...(JSON.parse(`{${change}}`) as Record<string, unknown>) });
    assert.equal(draft.code, 0, draft.stdout + draft.stderr);
    assert.match(draft.stdout, /PASS: 3\/3/);
    const live = await run('live', service);
    assert.notEqual(live.code, 0);
    assert.match(live.stdout, /FAIL: 2\/3/);
  });
});
