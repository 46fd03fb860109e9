// scripts/node24.mjs picks the Node that runs rolegate's .ts sources, and
// bin/rolegate goes through it. "No bundled runtime" is a copy of the launcher
// in a temporary directory: no node_modules above it, so it finds no
// node-<os>-<cpu> package. Which `node` is on PATH is a directory holding one
// symlink named node. The old-Node cases need a real Node < 24 on PATH (the
// machine's /usr/bin/node here and on CI) and are skipped, saying so, without one.

import assert from 'node:assert/strict';
import { type ChildProcess, type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const BUNDLED_NAME = `node-${process.platform === 'win32' ? 'win' : process.platform}-${process.arch}`;

/** Every file named `name` in the PATH directories, in PATH order. */
function allOnPath(name: string): string[] {
  const found: string[] = [];
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      if (statSync(candidate).isFile()) found.push(candidate);
    } catch {
      // not there
    }
  }
  return found;
}

/** The first `node` on PATH older than 24, or null. */
function findOldNode(): { path: string; version: string } | null {
  for (const candidate of allOnPath('node')) {
    const probe = spawnSync(candidate, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    const major = Number(/^v(\d+)\./.exec(probe.stdout ?? '')?.[1] ?? 'NaN');
    if (probe.status === 0 && major < 24) return { path: candidate, version: probe.stdout.trim() };
  }
  return null;
}

const OLD_NODE = findOldNode();
const NO_OLD_NODE = OLD_NODE === null ? 'no Node.js < 24 on PATH to start the launcher with' : false;

// Prints what the launcher must preserve: which Node ran it, in which process, with which argv.
const TARGET = `
const report = { version: process.version, pid: process.pid, argv1: process.argv[1], args: process.argv.slice(2) };
process.stdout.write(JSON.stringify(report) + '\\n');
process.exitCode = 7;
`;
// Waits to be signalled; with "handle" it exits 3 on SIGTERM, without it SIGTERM
// ends it. Gives up after 30 s, so a launcher that fails to pass SIGTERM on
// leaves no process behind.
const WAITER = `
if (process.argv[2] === 'handle') process.on('SIGTERM', () => { process.stdout.write('got SIGTERM\\n'); process.exit(3); });
setTimeout(() => process.exit(9), 30000);
process.stdout.write('ready\\n');
`;

type Report = { version: string; pid: number; argv1: string; args: string[] };

let root = '';
let launcher = '';
let target = '';
let waiter = '';

/** A PATH whose only `node` is `node` (plus the directory holding it, nothing else). */
function pathWithOnly(node: string): string {
  const dir = mkdtempSync(path.join(root, 'path-'));
  symlinkSync(node, path.join(dir, 'node'));
  return dir;
}

function envWith(pathValue: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: pathValue };
  delete env['NODE_PATH']; // would let the copy resolve a bundled runtime elsewhere
  delete env['NODE_OPTIONS'];
  return env;
}

function parseReport(stdout: string): Report {
  return JSON.parse(stdout.trim()) as Report;
}

function lineOn(child: ChildProcess, wanted: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      if (seen.includes(`${wanted}\n`)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`exited (${code ?? signal}) before printing "${wanted}"; stdout: ${seen}`)));
  });
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

before(() => {
  root = mkdtempSync(path.join(tmpdir(), 'rolegate-launcher-'));
  mkdirSync(path.join(root, 'scripts'));
  launcher = path.join(root, 'scripts', 'node24.mjs');
  copyFileSync(path.join(REPO, 'scripts', 'node24.mjs'), launcher);
  target = path.join(root, 'target.mjs');
  writeFileSync(target, TARGET);
  waiter = path.join(root, 'waiter.mjs');
  writeFileSync(waiter, WAITER);
});

after(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('no bundled runtime', () => {
  test('only a Node < 24 on PATH: exits 1 at once, saying what is needed and what it found', { skip: NO_OLD_NODE }, () => {
    const old = OLD_NODE!;
    const started = Date.now();
    const r = spawnSync(old.path, [launcher, target, 'a'], { cwd: root, env: envWith(pathWithOnly(old.path)), encoding: 'utf8', timeout: 30_000 });
    const elapsedMs = Date.now() - started;
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, '', 'the target must not run');
    assert.match(r.stderr, /rolegate needs Node\.js >= 24/);
    assert.ok(r.stderr.includes(`this process: Node.js ${old.version}`), r.stderr);
    assert.ok(r.stderr.includes(`\`node\` on PATH: ${old.version}`), r.stderr);
    assert.ok(r.stderr.includes(`bundled runtime: none (${BUNDLED_NAME} is not installed)`), r.stderr);
    assert.match(r.stderr, /Install Node\.js 24 or later/);
    assert.match(r.stderr, /npm ci`\n\(without --omit=optional\)/);
    assert.ok(elapsedMs < 5_000, `took ${elapsedMs} ms`);
  });

  test('started by a Node < 24 with a Node >= 24 on PATH: runs the target on that one, argv and exit code passed through', { skip: NO_OLD_NODE }, () => {
    const r = spawnSync(OLD_NODE!.path, [launcher, target, 'a', '--b'], { cwd: root, env: envWith(pathWithOnly(process.execPath)), encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 7, r.stderr);
    const report = parseReport(r.stdout);
    assert.equal(report.version, process.version);
    assert.notEqual(report.pid, r.pid, 'a child process');
    assert.equal(report.argv1, target);
    assert.deepEqual(report.args, ['a', '--b']);
  });

  test('started by a Node >= 24: runs the target in-process, with the argv it would see run directly', () => {
    const r = spawnSync(process.execPath, [launcher, target, 'a', '--b'], { cwd: root, env: envWith(pathWithOnly(process.execPath)), encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 7, r.stderr);
    const report = parseReport(r.stdout);
    assert.equal(report.version, process.version);
    assert.equal(report.pid, r.pid, 'the same process');
    assert.equal(report.argv1, target);
    assert.deepEqual(report.args, ['a', '--b']);
  });

  test('SIGTERM to the launcher reaches the child, and the child’s exit code comes back', { skip: NO_OLD_NODE }, async () => {
    const child = spawn(OLD_NODE!.path, [launcher, waiter, 'handle'], { cwd: root, env: envWith(pathWithOnly(process.execPath)), stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = exitOf(child);
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    await lineOn(child, 'ready');
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 3, signal: null });
    assert.match(stdout, /got SIGTERM/);
  });

  test('a child ended by a signal ends the launcher by the same signal', { skip: NO_OLD_NODE }, async () => {
    const child = spawn(OLD_NODE!.path, [launcher, waiter], { cwd: root, env: envWith(pathWithOnly(process.execPath)), stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = exitOf(child);
    await lineOn(child, 'ready');
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
  });
});

describe('bin/rolegate', () => {
  const bin = path.join(REPO, 'bin', 'rolegate');

  function assertHelp(r: SpawnSyncReturns<string>): void {
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.startsWith(`rolegate ${VERSION} — `), r.stdout);
    assert.match(r.stdout, /^Usage: rolegate <command> \[flags\]$/m);
  }

  test('--help on this Node (>= 24)', () => {
    assertHelp(spawnSync(process.execPath, [bin, '--help'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 }));
  });

  test('--help started by a Node < 24 (runs main.ts on the bundled runtime or the Node >= 24 on PATH)', { skip: NO_OLD_NODE }, () => {
    assertHelp(spawnSync(OLD_NODE!.path, [bin, '--help'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 }));
  });

  // npm exec runs the root package's own bin when the command names it; --offline:
  // were that to stop working, npm must fail rather than fetch a package of that name.
  test('`npx rolegate --help` in the repository', { skip: allOnPath('npm').length === 0 ? 'no npm on PATH' : false }, () => {
    const cache = mkdtempSync(path.join(root, 'npm-cache-'));
    const r = spawnSync(allOnPath('npm')[0]!, ['exec', '--offline', '--cache', cache, '--', 'rolegate', '--help'], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
    assertHelp(r);
  });

  test('is executable', { skip: process.platform === 'win32' ? 'no execute bit on Windows' : false }, () => {
    assert.notEqual(statSync(bin).mode & 0o111, 0);
  });
});
