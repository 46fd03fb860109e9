// Runs a script on Node.js >= 24 (rolegate's sources are TypeScript that Node
// runs by stripping the types, which needs 24), whichever Node started this file:
//
//   node scripts/node24.mjs <script> [args...]
//
// This file is plain JavaScript that any Node from 14 on can load, so an old
// `node` ends here with a message saying what is needed instead of a syntax
// error in a .ts file. bin/rolegate uses the same function (runOnNode24).
//
// Which Node runs <script>, first that applies:
//   1. this process, if it is >= 24: the script is imported in-process (no
//      second process). npm scripts land here when the bundled runtime is
//      installed, since npm puts node_modules/.bin (its `node`) first on PATH.
//   2. the bundled runtime: the optional dependency node-<os>-<cpu> in
//      package.json, which npm installs only on its own platform.
//   3. the first `node` on PATH, if it is >= 24.
//   4. none: exit 1 at once, naming what is needed and what was found.
// A child (2, 3) gets the same arguments and stdio; SIGINT, SIGTERM and SIGHUP
// (rolegate reloads on it) sent to this process are passed on to it, and its
// exit code, or the signal that ended it, becomes this process's.

import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REQUIRED_MAJOR = 24;
const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const EXE = process.platform === 'win32' ? 'node.exe' : 'node';

function majorOf(version) {
  const match = /^v?(\d+)\./.exec(version);
  return match === null ? 0 : Number(match[1]);
}

function sameFile(a, b) {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

// The platform package's binary, resolved the way Node resolves a dependency
// (so a hoisted install is found too); null when npm did not install one.
function bundledRuntime() {
  const name = `node-${process.platform === 'win32' ? 'win' : process.platform}-${process.arch}`;
  try {
    const manifestPath = createRequire(import.meta.url).resolve(`${name}/package.json`);
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
    const bin = typeof manifest.bin === 'object' && manifest.bin !== null ? manifest.bin.node : undefined;
    const path = join(dirname(manifestPath), typeof bin === 'string' ? bin : join('bin', EXE));
    statSync(path);
    return { name, path };
  } catch {
    return { name, path: null };
  }
}

function nodeOnPath() {
  for (const dir of (process.env.PATH || '').split(delimiter)) {
    if (dir === '') continue;
    const path = join(dir, EXE);
    try {
      if (!statSync(path).isFile()) continue;
      accessSync(path, fsConstants.X_OK);
    } catch {
      continue;
    }
    if (sameFile(path, process.execPath)) return { path, version: process.version };
    const probe = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 10000 });
    return { path, version: probe.status === 0 ? probe.stdout.trim() : 'unknown (`node --version` failed)' };
  }
  return null;
}

function fail(lines) {
  process.stderr.write(`${lines.join('\n')}\n`);
  process.exit(1);
}

function runChild(runtime, script, args) {
  const child = spawn(runtime, [script, ...args], { stdio: 'inherit' });
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
  child.once('error', (error) => {
    fail([`could not start ${runtime}: ${error.message}`, `Install Node.js ${REQUIRED_MAJOR} or later and put it first on PATH (then \`npm ci --omit=optional\` skips the bundled runtime).`]);
  });
  child.once('exit', (code, signal) => {
    for (const name of FORWARDED_SIGNALS) process.off(name, forward);
    if (signal !== null) {
      // End the same way; the exit code stands if the signal does not end us.
      process.exitCode = 128 + (osConstants.signals[signal] || 0);
      process.kill(process.pid, signal);
      return;
    }
    process.exitCode = code === null ? 1 : code;
  });
}

/** Runs `script` (a path) with `args` on Node.js >= 24; see the top of this file. */
export function runOnNode24(script, args) {
  const target = resolve(script);
  if (majorOf(process.version) >= REQUIRED_MAJOR) {
    // The script sees the argv it would have seen run directly: [node, script, ...args].
    process.argv.splice(1, process.argv.length - 1, target, ...args);
    return import(pathToFileURL(target).href);
  }
  const bundled = bundledRuntime();
  if (bundled.path !== null) return runChild(bundled.path, target, args);
  const onPath = nodeOnPath();
  if (onPath !== null && majorOf(onPath.version) >= REQUIRED_MAJOR) return runChild(onPath.path, target, args);
  fail([
    `rolegate needs Node.js >= ${REQUIRED_MAJOR}; found:`,
    `  this process: Node.js ${process.version} (${process.execPath})`,
    onPath === null ? '  `node` on PATH: none' : `  \`node\` on PATH: ${onPath.version} (${onPath.path})`,
    `  bundled runtime: none (${bundled.name} is not installed)`,
    `Install Node.js ${REQUIRED_MAJOR} or later and put it first on PATH, or run \`npm ci\``,
    '(without --omit=optional) on a platform with a bundled runtime (optionalDependencies in package.json).',
  ]);
}

function invokedDirectly() {
  return process.argv[1] !== undefined && sameFile(process.argv[1], fileURLToPath(import.meta.url));
}

if (invokedDirectly()) {
  const [script, ...args] = process.argv.slice(2);
  if (script === undefined) fail(['usage: node scripts/node24.mjs <script> [args...]']);
  else void runOnNode24(script, args);
}
