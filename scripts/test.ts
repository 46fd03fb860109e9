// THE test command (`npm test`): starts one throwaway PostgreSQL cluster,
// runs node's test runner over the test files with the cluster's coordinates
// in the environment (see test/helpers/pg.ts), stops the cluster, and exits
// with the test runner's exit code.
//
//   node scripts/test.ts                       unit + integration + fuzz
//   node scripts/test.ts test/unit/x.test.ts   a subset (files or directories)
//   node scripts/test.ts --unit                test/unit only, no PostgreSQL
//   node scripts/test.ts --test-name-pattern=framer   other --flags go to `node --test`
//
// Environment: ROLEGATE_TEST_TIMEOUT_MS (per test, default 300000),
// ROLEGATE_PG_BINDIR (PostgreSQL server binaries, see src/cli/local-postgres.ts).

import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLocalPostgres } from '../src/cli/local-postgres.ts';
import type { LocalPostgres } from '../src/cli/local-postgres.ts';
import { ensureOpa } from '../src/policy/opa-cli.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const DEFAULT_DIRS = ['test/unit', 'test/integration', 'test/fuzz'];
const TEST_FILE = /\.test\.ts$/;
const DEFAULT_TIMEOUT_MS = 300_000;
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

function say(line: string): void {
  process.stderr.write(`[rolegate test] ${line}\n`);
}

function walk(dir: string, into: string[]): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path, into);
    else if (entry.isFile() && TEST_FILE.test(entry.name)) into.push(path);
  }
}

function collect(targets: string[]): string[] {
  const files: string[] = [];
  for (const target of targets) {
    const path = resolve(ROOT, target);
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch {
      if (DEFAULT_DIRS.includes(target)) continue; // an empty suite folder may not exist yet
      throw new Error(`no such test file or directory: ${target}`);
    }
    if (isDir) walk(path, files);
    else files.push(path);
  }
  return [...new Set(files)].sort().map((file) => relative(ROOT, file));
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const unitOnly = args.includes('--unit');
  const runnerFlags = args.filter((arg) => arg.startsWith('--') && arg !== '--unit');
  const targets = args.filter((arg) => !arg.startsWith('--'));
  const files = collect(targets.length > 0 ? targets : unitOnly ? ['test/unit'] : DEFAULT_DIRS);
  if (files.length === 0) {
    say(`no test files (*.test.ts) found in ${(targets.length > 0 ? targets : DEFAULT_DIRS).join(', ')}`);
    return 1;
  }

  const timeoutMs = Number.parseInt(process.env['ROLEGATE_TEST_TIMEOUT_MS'] ?? '', 10) || DEFAULT_TIMEOUT_MS;
  let postgres: LocalPostgres | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let child: ReturnType<typeof spawn> | null = null;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted ??= signal;
    say(`${signal}: stopping the tests`);
    if (child !== null && child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    // The policy tests compile Rego with the pinned OPA: install it first if this machine lacks it.
    const opaPath = await ensureOpa({ log: say });
    env['ROLEGATE_OPA'] ??= opaPath;
    if (unitOnly) {
      say('--unit: PostgreSQL not started');
    } else {
      const started = Date.now();
      // 1000 idle clients through the proxy hold 1000 upstream sessions (session mode).
      postgres = await startLocalPostgres({ log: process.env['ROLEGATE_TEST_VERBOSE'] === '1' ? say : undefined, settings: { max_connections: '1200', shared_buffers: '64MB' } });
      const version = await postgres.psql('SHOW server_version');
      say(`PostgreSQL ${version} on ${postgres.host}:${postgres.port} (socket ${postgres.socketDir}), up in ${Date.now() - started} ms`);
      Object.assign(env, {
        ROLEGATE_TEST_PGHOST: postgres.host,
        ROLEGATE_TEST_PGPORT: String(postgres.port),
        ROLEGATE_TEST_PGUSER: postgres.superuser,
        ROLEGATE_TEST_PGPASSWORD: postgres.superuserPassword,
        ROLEGATE_TEST_PGSOCKET: postgres.socketDir,
      });
    }
    if (interrupted !== null) return SIGNAL_EXIT[interrupted] ?? 1;

    // process.execPath: the Node that runs this script (24, .ts-capable), whatever `node` is on PATH.
    const argv = ['--test', '--test-concurrency=1', `--test-timeout=${timeoutMs}`, ...runnerFlags, ...files];
    say(`${files.length} file(s): node ${argv.slice(0, 3 + runnerFlags.length).join(' ')} …`);
    const spawned = spawn(process.execPath, argv, { cwd: ROOT, env, stdio: 'inherit' });
    child = spawned;
    const code = await new Promise<number>((resolveExit) => {
      spawned.once('error', (error) => {
        say(`could not start the test runner: ${error.message}`);
        resolveExit(1);
      });
      spawned.once('exit', (exitCode, signal) => {
        resolveExit(exitCode ?? (signal !== null ? (SIGNAL_EXIT[signal] ?? 1) : 1));
      });
    });
    if (interrupted !== null) return SIGNAL_EXIT[interrupted] ?? 1;
    return code;
  } finally {
    if (postgres !== null) {
      try {
        await postgres.stop();
      } catch (error) {
        say(`stopping PostgreSQL failed: ${error instanceof Error ? error.message : String(error)}`);
        process.exitCode = 1;
      }
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().then(
  (code) => {
    process.exitCode = process.exitCode === 1 && code === 0 ? 1 : code;
  },
  (error: unknown) => {
    say(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  },
);
