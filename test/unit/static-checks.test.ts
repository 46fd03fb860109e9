// The type checker and the linter are part of the test suite, so CI (which
// runs `npm test`) refuses code that does not type-check or lint.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function run(bin: string, args: string[]): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [path.join(REPO, 'node_modules', bin), ...args], { cwd: REPO, encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('tsc --noEmit (strict) passes', () => {
  const r = run('typescript/bin/tsc', ['-p', 'tsconfig.json']);
  assert.equal(r.status, 0, r.output);
});

test('eslint passes with no warnings', () => {
  const r = run('eslint/bin/eslint.js', ['.', '--max-warnings', '0']);
  assert.equal(r.status, 0, r.output);
});
