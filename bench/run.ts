// The benchmark harness: pgbench through four targets on one
// machine, interleaved, plus fixed-rate latency, a connect storm and idle
// client memory. See bench/README.md for what each column means.
//
//   node bench/run.ts [--quick] [--seconds N] [--rounds R] [--cells a,b,…]
//                     [--scale S] [--idle 1000,10000] [--rolegate-dir DIR]
//                     [--workers W] [--out DIR] [--cpu-prof DIR]
//
// One throwaway PostgreSQL (src/cli/local-postgres.ts) with the demo roles and
// database (src/cli/demo.ts); in front of it, all on loopback:
//   direct     pgbench → PostgreSQL
//   pgbouncer  pgbench → PgBouncer (session mode, SCRAM) → PostgreSQL
//   rolegate   pgbench → rolegate (shipped policy, every statement decided) → PostgreSQL
//   relay      pgbench → bench/tcp-relay.ts (Node, bytes only) → PostgreSQL
// Every child is stopped at the end, on failure and on Ctrl-C.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEMO_ROLES, DEMO_USERS, demoConfigYaml, prepareDemoDatabase } from '../src/cli/demo.ts';
import { findPostgresBinDir, startLocalPostgres, type LocalPostgres } from '../src/cli/local-postgres.ts';
import { measureIdle, type IdleLogin, type IdleMode } from './lib/idle.ts';
import { startPgBouncer, type PgBouncer } from './lib/pgbouncer.ts';
import { pgbenchEnv, runCommand, runPgbench, type PgbenchTarget } from './lib/pgbench.ts';
import {
  cpuMicros,
  freeLoopbackPort,
  killTracked,
  openFileLimits,
  removeOnExit,
  rssBytes,
  sleep,
  spawnTracked,
  waitForListeners,
  type Spawned,
} from './lib/procs.ts';
import {
  chartSvg,
  idleTable,
  loadTable,
  rateTable,
  summarize,
  TARGETS,
  type CellResult,
  type CellSpec,
  type IdleSummary,
  type Sample,
  type TargetName,
} from './lib/report.ts';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(BENCH_DIR, '..');
const DATABASE = 'app';
const PGBENCH_THREADS = 2;
const PGBENCH_TABLES = 'pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history';
/** File descriptors a proxy process needs besides two per session (listeners, epoll, stdio, libraries). */
const FD_RESERVE = 100;

// ---- options -----------------------------------------------------------------------------------

const HELP = `node bench/run.ts [options]

  --quick               a few seconds per cell and a subset of cells (< 3 minutes)
  --seconds N           seconds per pgbench run (default 5; quick 3)
  --rounds R            rounds; each round runs every cell through every target (default 3; quick 1)
  --cells a,b,…         cell ids or id prefixes: select, tpcb, select-prepared, tpcb-simple-c32,
                        rate, storm, idle (default: all; quick: a subset)
  --scale S             pgbench -i scale (default 10; quick 5)
  --idle N,M            idle client counts (default 1000,10000; quick 1000); capped by RLIMIT_NOFILE
  --idle-modes a,b      logged-in (authenticated, no query yet: neither proxy holds a server
                        connection) and/or after-query (one SELECT 1 each: both hold one);
                        default both
  --rolegate-dir DIR    run rolegate (src/cli/main.ts, policies/) from another checkout (default: this one)
  --workers W           rolegate and relay worker threads (default 2)
  --out DIR             results directory (default bench/results)
  --cpu-prof DIR        run rolegate under node --cpu-prof, profiles into DIR
  --idle-uncapped       try the requested idle counts even past the open-file limit (to see how each proxy fails)
`;

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    cells: { type: 'string' },
    scale: { type: 'string' },
    idle: { type: 'string' },
    'idle-modes': { type: 'string' },
    'rolegate-dir': { type: 'string' },
    workers: { type: 'string', default: '2' },
    out: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'idle-uncapped': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opts.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function positiveInt(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`--${name} must be a positive integer\n`);
    process.exit(2);
  }
  return n;
}

const quick = opts.quick;
const seconds = positiveInt(opts.seconds, quick ? 3 : 5, 'seconds');
const rounds = positiveInt(opts.rounds, quick ? 1 : 3, 'rounds');
const scale = positiveInt(opts.scale, quick ? 5 : 10, 'scale');
const workers = positiveInt(opts.workers, 2, 'workers');
const rolegateDir = path.resolve(opts['rolegate-dir'] ?? REPO);
const outDir = path.resolve(opts.out ?? path.join(BENCH_DIR, 'results'));
const cpuProfDir = opts['cpu-prof'] === undefined ? null : path.resolve(opts['cpu-prof']);

function allCells(): CellSpec[] {
  const cells: CellSpec[] = [];
  for (const script of ['select-only', 'tpcb'] as const) {
    for (const mode of ['simple', 'extended', 'prepared'] as const) {
      for (const clients of [8, 32]) {
        cells.push({ id: `${script === 'select-only' ? 'select' : 'tpcb'}-${mode}-c${clients}`, kind: 'load', script, mode, clients });
      }
    }
  }
  cells.push({ id: 'rate-r1000-select-simple-c8', kind: 'rate', script: 'select-only', mode: 'simple', clients: 8, rate: 1000 });
  cells.push({ id: 'storm-select-simple-c8', kind: 'storm', script: 'select-only', mode: 'simple', clients: 8 });
  return cells;
}

const QUICK_CELLS = ['select-simple-c8', 'select-prepared-c8', 'tpcb-extended-c8', 'rate', 'storm', 'idle'];

function selected(id: string, tokens: string[]): boolean {
  return tokens.some((t) => id === t || id.startsWith(`${t}-`));
}

const cellTokens = opts.cells !== undefined ? opts.cells.split(',').map((s) => s.trim()).filter((s) => s !== '') : quick ? QUICK_CELLS : null;
const cells = allCells().filter((c) => cellTokens === null || selected(c.id, cellTokens));
const runIdle = cellTokens === null || cellTokens.includes('idle');
if (cellTokens !== null) {
  const unknown = cellTokens.filter((t) => t !== 'idle' && !allCells().some((c) => selected(c.id, [t])));
  if (unknown.length > 0) {
    process.stderr.write(`unknown cells: ${unknown.join(', ')}; ids are ${allCells().map((c) => c.id).join(', ')}, idle\n`);
    process.exit(2);
  }
}

// A session-mode proxy holds one socket per logged-in client and two (client + upstream) once the
// client ran a query: RLIMIT_NOFILE caps the idle count. The proxies inherit this process's limit (Node
// raises its soft limit to the hard one at start-up; the PgBouncer wrapper does the same), so the hard
// limit is what they get.
const fdLimit = openFileLimits().hard;
const IDLE_MODES = ['logged-in', 'after-query'] as const;
const idleModes = (opts['idle-modes'] ?? IDLE_MODES.join(',')).split(',').map((m) => m.trim());
for (const m of idleModes) {
  if (!(IDLE_MODES as readonly string[]).includes(m)) {
    process.stderr.write(`unknown idle mode ${m}; modes are ${IDLE_MODES.join(', ')}\n`);
    process.exit(2);
  }
}
const idleFeasible = (mode: IdleMode): number => Math.floor((fdLimit - FD_RESERVE) / (mode === 'after-query' ? 2 : 1) / 100) * 100;
const idleRequested = runIdle ? (opts.idle ?? (quick ? '1000' : '1000,10000')).split(',').map((s) => positiveInt(s.trim(), 1000, 'idle')) : [];
/** Every (count, mode) measured: requested counts, capped per mode unless --idle-uncapped. */
const idlePlan = idleRequested.flatMap((requested) =>
  (idleModes as IdleMode[]).map((mode) => ({ requested, mode, count: opts['idle-uncapped'] ? requested : Math.min(requested, idleFeasible(mode)) })),
);
// After the idle period every client runs a query (usability check): each then holds a server connection.
const maxIdle = Math.max(0, ...idlePlan.map((p) => p.count));

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

// ---- processes ---------------------------------------------------------------------------------

interface RunningRolegate {
  port: number;
  pid: number;
  spawned: Spawned;
}

let pg: LocalPostgres | null = null;
let rolegate: RunningRolegate | null = null;
let relay: { port: number; pid: number; spawned: Spawned } | null = null;
let pgbouncer: PgBouncer | null = null;
const rolePasswords: Record<string, string> = Object.fromEntries(DEMO_ROLES.map((r) => [r, randomBytes(12).toString('hex')]));
const notes: string[] = [];
/** Proxy CPU with no clients, ms per second (measured once, after the warm-up). */
const backgroundCpu: Record<string, number> = {};
const BACKGROUND_CPU_WINDOW_MS = 5000;

function note(line: string): void {
  notes.push(line);
  log(`NOTE: ${line}`);
}

async function startRolegate(upstreamPort: number): Promise<RunningRolegate> {
  const port = await freeLoopbackPort();
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-bench-'));
  removeOnExit(dir);
  const configFile = path.join(dir, 'rolegate.yaml');
  const yaml = demoConfigYaml({ port, upstreamPort, rolePasswords, withPolicy: true })
    .replace(/^workers: \d+$/m, `workers: ${workers}`)
    .replace(/^policy: .*$/m, `policy: { dir: ${JSON.stringify(path.join(rolegateDir, 'policies'))} }`);
  writeFileSync(configFile, yaml, { mode: 0o600 });
  const nodeArgs = cpuProfDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', cpuProfDir];
  const spawned = spawnTracked(process.execPath, [...nodeArgs, path.join(rolegateDir, 'src/cli/main.ts'), 'start', '--config', configFile, '--log-level', 'warn'], { cwd: rolegateDir });
  // At --log-level warn there is no "listening" line: wait for one reusePort listener per worker instead.
  try {
    await waitForListeners(port, workers, 180_000, () => spawned.child.exitCode === null && spawned.child.signalCode === null, 'rolegate');
  } catch (error) {
    await spawned.stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${spawned.stdout().slice(-4000)}\n${spawned.stderr().slice(-4000)}`);
  }
  return { port, pid: spawned.pid, spawned };
}

async function startRelay(upstreamPort: number): Promise<{ port: number; pid: number; spawned: Spawned }> {
  const spawned = spawnTracked(process.execPath, [path.join(BENCH_DIR, 'tcp-relay.ts'), '--upstream-port', String(upstreamPort), '--workers', String(workers)]);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /"msg":"listening","port":(\d+)/.exec(spawned.stdout());
    if (m !== null) return { port: Number(m[1]), pid: spawned.pid, spawned };
    if (spawned.child.exitCode !== null || Date.now() > deadline) throw new Error(`tcp-relay did not start: ${spawned.stderr()}`);
    await sleep(50);
  }
}

function alive(s: Spawned): boolean {
  return s.child.exitCode === null && s.child.signalCode === null;
}

/** A proxy that died mid-run is noted and restarted, so the remaining cells still run. */
async function ensureProxies(upstreamPort: number): Promise<void> {
  if (rolegate !== null && !alive(rolegate.spawned)) {
    note(`rolegate (pid ${rolegate.pid}) exited with ${rolegate.spawned.child.exitCode ?? rolegate.spawned.child.signalCode}; restarted. Output tail:\n${rolegate.spawned.stdout().slice(-3000)}${rolegate.spawned.stderr().slice(-3000)}`);
    rolegate = await startRolegate(upstreamPort);
  }
  if (relay !== null && !alive(relay.spawned)) {
    note(`tcp-relay exited; restarted. ${relay.spawned.stderr().slice(-2000)}`);
    relay = await startRelay(upstreamPort);
  }
}

/** role → SCRAM verifier, exactly as PostgreSQL stores it (the PgBouncer userlist). */
async function scramVerifiers(db: LocalPostgres, roles: string[]): Promise<Record<string, string>> {
  const rows = await db.psql(`SELECT rolname || '|' || rolpassword FROM pg_authid WHERE rolname IN (${roles.map((r) => `'${r}'`).join(', ')})`);
  return Object.fromEntries(rows.split('\n').map((line) => [line.slice(0, line.indexOf('|')), line.slice(line.indexOf('|') + 1)]));
}

// ---- targets -----------------------------------------------------------------------------------

function targetFor(target: TargetName, script: CellSpec['script']): PgbenchTarget {
  if (pg === null) throw new Error('PostgreSQL is not running');
  // Same PostgreSQL role on every target: app_reader reads, app_writer runs TPC-B.
  const role = script === 'tpcb' ? 'app_writer' : 'app_reader';
  const base = { host: '127.0.0.1', database: DATABASE, user: role, password: rolePasswords[role]! };
  switch (target) {
    case 'direct':
      return { ...base, port: pg.port };
    case 'pgbouncer':
      return { ...base, port: pgbouncer!.port };
    case 'relay':
      return { ...base, port: relay!.port };
    case 'rolegate':
      // Realistic services through the full policy: orders-svc asks for app_writer to write; reporting-svc reads.
      return script === 'tpcb'
        ? { ...base, port: rolegate!.port, user: 'orders-svc', password: DEMO_USERS['orders-svc'], options: '-c rolegate.role=app_writer' }
        : { ...base, port: rolegate!.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'] };
    default: {
      const unreachable: never = target;
      throw new Error(`unknown target ${String(unreachable)}`);
    }
  }
}

function proxyPid(target: TargetName): number | null {
  switch (target) {
    case 'direct':
      return null;
    case 'pgbouncer':
      return pgbouncer?.pid ?? null;
    case 'rolegate':
      return rolegate?.pid ?? null;
    case 'relay':
      return relay?.pid ?? null;
    default: {
      const unreachable: never = target;
      throw new Error(`unknown target ${String(unreachable)}`);
    }
  }
}

async function measure(cell: CellSpec, target: TargetName, round: number, runSeconds: number): Promise<Sample> {
  const pid = proxyPid(target);
  const cpuBefore = pid === null ? Number.NaN : cpuMicros(pid);
  const result = await runPgbench(targetFor(target, cell.script), {
    script: cell.script,
    mode: cell.mode,
    clients: cell.clients,
    threads: Math.min(PGBENCH_THREADS, cell.clients),
    seconds: runSeconds,
    ...(cell.rate !== undefined ? { rate: cell.rate } : {}),
    connectEach: cell.kind === 'storm',
  });
  const cpuAfter = pid === null ? Number.NaN : cpuMicros(pid);
  const cpuUsPerTx = pid !== null && result.processed > 0 && Number.isFinite(cpuAfter - cpuBefore) ? (cpuAfter - cpuBefore) / result.processed : null;
  const rss = pid === null ? Number.NaN : rssBytes(pid);
  return {
    round,
    target,
    ok: result.ok,
    exitCode: result.exitCode,
    tps: result.tps,
    processed: result.processed,
    failed: result.failed,
    p50Ms: result.latency?.p50Ms ?? null,
    p99Ms: result.latency?.p99Ms ?? null,
    serviceP50Ms: result.latency?.serviceP50Ms ?? null,
    serviceP99Ms: result.latency?.serviceP99Ms ?? null,
    cpuUsPerTx,
    rssBytes: Number.isFinite(rss) ? rss : null,
    output: result.output,
  };
}

function describeSample(s: Sample): string {
  const parts = [`${s.tps.toFixed(0)} tps`];
  if (s.p50Ms !== null && s.p99Ms !== null) parts.push(`p50 ${s.p50Ms.toFixed(3)} / p99 ${s.p99Ms.toFixed(3)} ms`);
  if (s.cpuUsPerTx !== null) parts.push(`${s.cpuUsPerTx.toFixed(1)} µs CPU/tx`);
  if (!s.ok) parts.push(`FAILED (exit ${s.exitCode}, ${s.failed} failed tx)`);
  return parts.join(', ');
}

// ---- phases ------------------------------------------------------------------------------------

async function initialise(db: LocalPostgres): Promise<void> {
  log(`pgbench -i -s ${scale} through rolegate as migrator (app_admin: DDL allowed by the shipped policy)…`);
  const migrator: PgbenchTarget = { host: '127.0.0.1', port: rolegate!.port, user: 'migrator', password: DEMO_USERS.migrator, database: DATABASE };
  const args = ['-i', '-s', String(scale), '-q', '-h', migrator.host, '-p', String(migrator.port), '-U', migrator.user, DATABASE];
  const init = await runCommand('pgbench', args, pgbenchEnv(migrator), 600_000);
  if (init.code !== 0) {
    note(`pgbench -i through rolegate as migrator failed (exit ${init.code}); initialised directly against PostgreSQL as app_admin instead. pgbench output:\n${init.output}`);
    const direct: PgbenchTarget = { host: '127.0.0.1', port: db.port, user: 'app_admin', password: rolePasswords['app_admin']!, database: DATABASE };
    const retry = await runCommand('pgbench', ['-i', '-s', String(scale), '-q', '-h', direct.host, '-p', String(direct.port), '-U', direct.user, DATABASE], pgbenchEnv(direct), 600_000);
    if (retry.code !== 0) throw new Error(`pgbench -i failed directly too:\n${retry.output}`);
  }
  await db.psql(
    `GRANT SELECT ON ${PGBENCH_TABLES} TO app_reader, app_writer;
GRANT INSERT, UPDATE ON ${PGBENCH_TABLES} TO app_writer;
VACUUM ANALYZE;
CHECKPOINT;`,
    { database: DATABASE },
  );
}

/** What pgbench does itself without -n (the runs use -n: app_writer may not VACUUM or TRUNCATE). */
async function resetTables(db: LocalPostgres): Promise<void> {
  await db.psql('TRUNCATE pgbench_history; VACUUM pgbench_branches, pgbench_tellers;', { database: DATABASE });
}

async function loadPhase(db: LocalPostgres): Promise<CellResult[]> {
  const results: CellResult[] = cells.map((c) => ({ ...c, samples: [] }));
  // Warm-up: JIT, caches, pools — and a first check that every target runs both scripts without failures.
  log('warm-up: 2 s select-only (prepared) and TPC-B (simple) through every target…');
  for (const target of TARGETS) {
    for (const script of ['select-only', 'tpcb'] as const) {
      const warm = await measure({ id: 'warm-up', kind: 'load', script, mode: script === 'tpcb' ? 'simple' : 'prepared', clients: 8 }, target, 0, 2);
      if (!warm.ok) note(`warm-up ${script} through ${target} failed:\n${warm.output}`);
    }
  }
  // CPU the proxies burn with no client at all: it is part of every "µs/tx" figure, most visibly at a low fixed rate.
  const idlePids = (['pgbouncer', 'rolegate', 'relay'] as const).map((t) => [t, proxyPid(t)] as const);
  const before = idlePids.map(([, pid]) => (pid === null ? Number.NaN : cpuMicros(pid)));
  await sleep(BACKGROUND_CPU_WINDOW_MS);
  idlePids.forEach(([target, pid], i) => {
    if (pid !== null) backgroundCpu[target] = (cpuMicros(pid) - before[i]!) / BACKGROUND_CPU_WINDOW_MS; // µs per ms = ms per s
  });
  log(`background CPU with no clients (ms per s): ${Object.entries(backgroundCpu).map(([t, v]) => `${t} ${v.toFixed(2)}`).join(', ')}`);
  const perRound = cells.length * TARGETS.length;
  for (let round = 1; round <= rounds; round++) {
    await resetTables(db);
    let done = 0;
    for (const cell of results) {
      // Rotate the order of the targets each round (and cell), so none always runs first or last.
      const shift = (round - 1 + results.indexOf(cell)) % TARGETS.length;
      const order = [...TARGETS.slice(shift), ...TARGETS.slice(0, shift)];
      for (const target of order) {
        await ensureProxies(db.port);
        const sample = await measure(cell, target, round, seconds);
        cell.samples.push(sample);
        done++;
        log(`[round ${round}/${rounds} ${done}/${perRound}] ${cell.id} ${target}: ${describeSample(sample)}`);
        if (!sample.ok) note(`${cell.id} through ${target} (round ${round}) failed; pgbench output:\n${sample.output}`);
      }
    }
  }
  return results;
}

async function postgresBackends(db: LocalPostgres): Promise<number> {
  return Number(await db.psql(`SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = '${DATABASE}'`));
}

async function waitForBackends(db: LocalPostgres, atMost: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let n = await postgresBackends(db);
  while (n > atMost && Date.now() < deadline) {
    await sleep(500);
    n = await postgresBackends(db);
  }
  return n;
}

async function idlePhase(db: LocalPostgres): Promise<IdleSummary[]> {
  const results: IdleSummary[] = [];
  for (const { requested, mode, count } of idlePlan) {
    const capNote =
      count < requested
        ? `${requested} requested (${mode}); capped at ${count}: RLIMIT_NOFILE is ${fdLimit} (hard) and a session-mode proxy holds ${mode === 'after-query' ? '2 sockets per client (client + upstream)' : '1 socket per client'} plus ~${FD_RESERVE} others`
        : null;
    if (capNote !== null) note(capNote);
    for (const proxy of ['rolegate', 'pgbouncer'] as const) {
      // A fresh process per measurement: slack left by earlier load would hide the sessions' memory.
      await waitForBackends(db, 0, 60_000);
      let login: IdleLogin;
      let pid: number;
      let stop: () => Promise<unknown>;
      if (proxy === 'rolegate') {
        const rg = await startRolegate(db.port);
        pid = rg.pid;
        stop = () => rg.spawned.stop(30_000);
        login = { port: rg.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: DATABASE, queryFirst: mode === 'after-query' };
      } else {
        const pb = await startPgBouncer({ upstreamPort: db.port, database: DATABASE, users: await scramVerifiers(db, ['app_reader']), maxClients: count + 100 });
        pid = pb.pid;
        stop = () => pb.stop();
        login = { port: pb.port, user: 'app_reader', password: rolePasswords['app_reader']!, database: DATABASE, queryFirst: mode === 'after-query' };
      }
      try {
        log(`idle (${mode}): ${count} clients through ${proxy}…`);
        const r = await measureIdle(pid, login, count, log, () => postgresBackends(db));
        const backends = await postgresBackends(db);
        const summary: IdleSummary = {
          proxy,
          mode,
          requested: count,
          backendsWhileIdle: r.backendsWhileIdle,
          held: r.held,
          answeredAfterIdle: r.answeredAfterIdle,
          failedLogins: r.failedLogins,
          firstError: r.firstError,
          rssColdMiB: r.rssColdBytes / 1048576,
          rssBeforeMiB: r.rssBeforeBytes / 1048576,
          rssIdleMiB: r.rssIdleBytes / 1048576,
          mibPer1000: r.mibPer1000,
          postgresBackends: backends,
          openSeconds: r.openSeconds,
          note: capNote,
        };
        results.push(summary);
        log(
          `idle (${mode}): ${proxy} held ${r.held}/${count} (${r.answeredAfterIdle} answered after idle, ${r.failedLogins} failed logins), RSS ${summary.rssColdMiB.toFixed(1)} cold, ${summary.rssBeforeMiB.toFixed(1)} warm → ${summary.rssIdleMiB.toFixed(1)} MiB = ${r.mibPer1000.toFixed(2)} MiB per 1000; ${backends} PostgreSQL backends`,
        );
        if (r.failedLogins > 0) note(`idle ${count} (${mode}) through ${proxy}: ${r.failedLogins} logins failed, first: ${r.firstError}`);
        if (r.answeredAfterIdle < r.held) note(`idle ${count} (${mode}) through ${proxy}: ${r.held - r.answeredAfterIdle} held clients did not answer after the idle period, first: ${r.firstAfterIdleError}`);
        await r.close();
      } finally {
        await stop();
      }
    }
  }
  return results;
}

// ---- report ------------------------------------------------------------------------------------

function git(args: string[]): string | null {
  try {
    return execFileSync('git', ['-C', rolegateDir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function versionOf(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

function writeResults(loadCells: CellResult[], idle: IdleSummary[], meta: Record<string, unknown>, startedAt: Date): { json: string; svg: string } {
  mkdirSync(outDir, { recursive: true });
  const stamp = startedAt.toISOString().replaceAll(':', '').replace(/\.\d+Z$/, 'Z');
  const base = path.join(outDir, `bench-${stamp}${quick ? '-quick' : ''}`);
  const summaries = Object.fromEntries(loadCells.map((c) => [c.id, summarize(c)]));
  writeFileSync(`${base}.json`, `${JSON.stringify({ meta, notes, summaries, cells: loadCells, idle }, null, 2)}\n`);
  const title = `rolegate bench ${String(meta['date'])} — commit ${String(meta['commit'])}, ${String(meta['node'])}, ${rounds}×${seconds} s per cell`;
  writeFileSync(`${base}.svg`, chartSvg(loadCells, idle, title));
  return { json: `${base}.json`, svg: `${base}.svg` };
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  const runsPerCell = TARGETS.length * rounds;
  const estimateS = cells.length * runsPerCell * (seconds + 1) + TARGETS.length * 2 * 3 + 40 + idlePlan.reduce((a, p) => a + 2 * (10 + p.count / 150), 0);
  log(
    `rolegate bench: ${cells.length} cells × ${TARGETS.length} targets × ${rounds} rounds × ${seconds} s` +
      `${idlePlan.length > 0 ? `, idle ${idlePlan.map((p) => `${p.count} ${p.mode}`).join(' / ')}` : ''}; about ${Math.ceil(estimateS / 60)} min`,
  );
  const maxConnections = Math.max(300, maxIdle + 200);
  pg = await startLocalPostgres({ settings: { max_connections: String(maxConnections), shared_buffers: '256MB', max_wal_size: '4GB', checkpoint_timeout: '30min' } });
  log(`PostgreSQL on 127.0.0.1:${pg.port} (max_connections ${maxConnections})`);
  await prepareDemoDatabase((sql, database) => pg!.psql(sql, database === undefined ? {} : { database }), rolePasswords);
  rolegate = await startRolegate(pg.port);
  log(`rolegate on 127.0.0.1:${rolegate.port} (pid ${rolegate.pid}, ${workers} workers, policy ${path.join(rolegateDir, 'policies')})`);
  await initialise(pg);

  let loadCells: CellResult[] = [];
  if (cells.length > 0) {
    relay = await startRelay(pg.port);
    log(`tcp-relay on 127.0.0.1:${relay.port} (pid ${relay.pid})`);
    pgbouncer = await startPgBouncer({
      upstreamPort: pg.port,
      database: DATABASE,
      users: await scramVerifiers(pg, ['app_reader', 'app_writer']),
      maxClients: 500,
    });
    log(`pgbouncer on 127.0.0.1:${pgbouncer.port} (pid ${pgbouncer.pid})`);
    loadCells = await loadPhase(pg);
  }
  // The idle phase starts its own proxies.
  await rolegate.spawned.stop(30_000);
  rolegate = null;
  await relay?.spawned.stop();
  relay = null;
  await pgbouncer?.stop();
  pgbouncer = null;
  const idle = idlePlan.length > 0 ? await idlePhase(pg) : [];

  const meta = {
    date: startedAt.toISOString(),
    durationS: Math.round((Date.now() - startedAt.getTime()) / 1000),
    commit: git(['rev-parse', '--short', 'HEAD']) ?? 'unknown',
    dirty: (git(['status', '--porcelain', '--untracked-files=no']) ?? '') !== '',
    rolegateDir,
    node: process.version,
    postgres: versionOf(path.join(findPostgresBinDir(), 'postgres'), ['--version']),
    pgbench: versionOf('pgbench', ['--version']),
    pgbouncer: versionOf('/usr/sbin/pgbouncer', ['--version']),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), kernel: release(), nofileHard: fdLimit },
    backgroundCpuMsPerS: backgroundCpu,
    options: { quick, seconds, rounds, scale, workers, pgbenchThreads: PGBENCH_THREADS, idleRequested, idlePlan, maxConnections },
  };
  await pg.stop();
  pg = null;

  const files = writeResults(loadCells, idle, meta, startedAt);
  const sections = [
    `rolegate bench — ${meta.date}, commit ${meta.commit}${meta.dirty ? ' (dirty tree)' : ''}, Node ${meta.node}, ${meta.machine.cpus} CPUs, ${rounds} rounds × ${seconds} s, scale ${scale}`,
    loadTable(loadCells),
    rateTable(loadCells),
    idleTable(idle),
    Object.keys(backgroundCpu).length > 0 ? `Background CPU with no clients (ms per s): ${Object.entries(backgroundCpu).map(([t, v]) => `${t} ${v.toFixed(2)}`).join(', ')}` : '',
    notes.length > 0 ? `Notes:\n${notes.map((n) => `- ${n}`).join('\n')}` : '',
    `results: ${files.json}\n         ${files.svg}`,
  ];
  process.stdout.write(`\n${sections.filter((s) => s !== '').join('\n\n')}\n`);
}

async function shutdown(): Promise<void> {
  await rolegate?.spawned.stop(15_000);
  await relay?.spawned.stop();
  await pgbouncer?.stop();
  await pg?.stop();
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`\n${signal}: stopping PostgreSQL, PgBouncer, rolegate and the relay…`);
    // Synchronous: the 'exit' hooks of local-postgres stop the cluster and remove its temp dir.
    killTracked();
    process.exit(130);
  });
}

try {
  await main();
} catch (error) {
  log(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  await shutdown().catch(() => {});
  process.exitCode = 1;
}
