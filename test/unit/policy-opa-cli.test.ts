// Locating and installing opa, with fake `opa` and `go` executables on a private PATH.

import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RolegateError } from '../../src/errors.ts';
import { ensureOpa, locateOpa, OPA_VERSION, opaVersion, toolsOpaPath } from '../../src/policy/opa-cli.ts';

let work: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'rolegate-opa-cli-test-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function script(path: string, body: string): Promise<string> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

const fakeOpa = (path: string, version: string) => script(path, `[ "$1" = version ] && echo "Version: ${version}" && exit 0\nexit 3`);

/** An isolated environment: a fresh repo root and a PATH holding only `dirs` (plus /bin for sh). */
async function sandbox(name: string, dirs: string[] = []): Promise<{ repoRoot: string; env: NodeJS.ProcessEnv }> {
  const repoRoot = join(work, name, 'repo');
  await mkdir(repoRoot, { recursive: true });
  return { repoRoot, env: { PATH: [...dirs, '/usr/bin', '/bin'].join(':'), HOME: work } };
}

describe('locateOpa', () => {
  test('ROLEGATE_OPA wins, whatever its version', async () => {
    const explicit = await fakeOpa(join(work, 'explicit', 'opa'), '0.60.0');
    const { repoRoot, env } = await sandbox('explicit');
    assert.equal(await locateOpa({ repoRoot, env: { ...env, ROLEGATE_OPA: explicit } }), explicit);
  });

  test('a ROLEGATE_OPA that does not run is an error, not a silent fallback', async () => {
    const { repoRoot, env } = await sandbox('explicit-missing');
    await assert.rejects(
      locateOpa({ repoRoot, env: { ...env, ROLEGATE_OPA: join(work, 'missing-opa') } }),
      (error: RolegateError) => error.code === 'RG_POLICY_BUILD' && /ROLEGATE_OPA/.test(error.message),
    );
  });

  test('<repo>/.tools/bin/opa comes before PATH', async () => {
    const pathDir = join(work, 'tools-first', 'path');
    await fakeOpa(join(pathDir, 'opa'), OPA_VERSION);
    const { repoRoot, env } = await sandbox('tools-first', [pathDir]);
    const tools = await fakeOpa(toolsOpaPath(repoRoot), OPA_VERSION);
    assert.equal(await locateOpa({ repoRoot, env }), tools);
  });

  test('a stale .tools binary is skipped', async () => {
    const { repoRoot, env } = await sandbox('stale-tools');
    await fakeOpa(toolsOpaPath(repoRoot), '0.1.0');
    assert.equal(await locateOpa({ repoRoot, env }), null);
  });

  test('opa on PATH only with the pinned version', async () => {
    const right = join(work, 'path-right');
    const wrong = join(work, 'path-wrong');
    await fakeOpa(join(right, 'opa'), OPA_VERSION);
    await fakeOpa(join(wrong, 'opa'), '0.70.0');
    const a = await sandbox('path-a', [right]);
    assert.equal(await locateOpa(a), join(right, 'opa'));
    const b = await sandbox('path-b', [wrong]);
    assert.equal(await locateOpa(b), null);
  });

  test('opaVersion parses `opa version`', async () => {
    assert.equal(await opaVersion(await fakeOpa(join(work, 'v', 'opa'), '1.22.3')), '1.22.3');
    assert.equal(await opaVersion(await script(join(work, 'v', 'broken'), 'exit 1')), null);
    assert.equal(await opaVersion(join(work, 'v', 'absent')), null);
  });
});

describe('ensureOpa', () => {
  test('installs with go install into <repo>/.tools/bin and says so in one line', async () => {
    const goDir = join(work, 'go-ok');
    // A fake go: checks its arguments and GOBIN, then "installs" a fake opa.
    await script(
      join(goDir, 'go'),
      [
        `[ "$1" = install ] && [ "$2" = "github.com/open-policy-agent/opa@v${OPA_VERSION}" ] || { echo "bad args: $*" >&2; exit 2; }`,
        `printf '#!/bin/sh\\necho "Version: ${OPA_VERSION}"\\n' > "$GOBIN/opa" && chmod +x "$GOBIN/opa"`,
      ].join('\n'),
    );
    const { repoRoot, env } = await sandbox('install', [goDir]);
    const lines: string[] = [];
    const path = await ensureOpa({ repoRoot, env, log: (line) => lines.push(line) });
    assert.equal(path, toolsOpaPath(repoRoot));
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? '', /installing opa 1\.22\.3 .*go install/);
    // found, not reinstalled, the next time
    assert.equal(await ensureOpa({ repoRoot, env, log: (line) => lines.push(line) }), path);
    assert.equal(lines.length, 1);
  });

  test('no go on PATH: a clear RG_POLICY_BUILD', async () => {
    const { repoRoot } = await sandbox('no-go');
    await assert.rejects(ensureOpa({ repoRoot, env: { PATH: join(work, 'empty-path') }, log: () => {} }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /`go` is not on PATH/);
      assert.match(error.message, /ROLEGATE_OPA/);
      return true;
    });
  });

  test('a failing go install carries go’s output', async () => {
    const goDir = join(work, 'go-fail');
    await script(join(goDir, 'go'), 'echo "go: module lookup disabled by GOPROXY=off" >&2; exit 1');
    const { repoRoot, env } = await sandbox('install-fail', [goDir]);
    await assert.rejects(ensureOpa({ repoRoot, env, log: () => {} }), (error: RolegateError) => {
      assert.equal(error.code, 'RG_POLICY_BUILD');
      assert.match(error.message, /GOPROXY=off/);
      return true;
    });
  });

  test('go install that yields no working opa is an error', async () => {
    const goDir = join(work, 'go-noop');
    await script(join(goDir, 'go'), 'exit 0');
    const { repoRoot, env } = await sandbox('install-noop', [goDir]);
    await assert.rejects(ensureOpa({ repoRoot, env, log: () => {} }), (error: RolegateError) => error.code === 'RG_POLICY_BUILD' && /reports nothing/.test(error.message));
  });
});
