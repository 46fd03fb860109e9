// One pgbench run: spawn, parse its summary, and read its per-transaction log
// (`-l`) for latency percentiles. Percentiles come from every transaction,
// not from pgbench's averages: p99 is what an added hop shows up in first.
//
// Per-transaction log line (pgbench docs, "Per-Transaction Logging"):
//   client_id transaction_no time script_no time_epoch time_us [schedule_lag]
// `time` is the transaction's latency in µs; with --rate it counts from the
// scheduled start, so it includes the schedule lag (the last field), which is
// subtracted for the service latency.

import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { forgetTempDir, removeOnExit, trackPid, untrackPid } from './procs.ts';

export interface PgbenchTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** libpq `options` (PGOPTIONS), e.g. `-c rolegate.role=app_writer`. */
  options?: string;
}

export interface PgbenchRun {
  script: 'select-only' | 'tpcb';
  mode: 'simple' | 'extended' | 'prepared';
  clients: number;
  threads: number;
  seconds: number;
  /** --rate (transactions per second, over all clients). */
  rate?: number;
  /** -C: a new connection per transaction. */
  connectEach?: boolean;
}

export interface LatencyStats {
  count: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** --rate only: latency without the schedule lag. */
  serviceP50Ms?: number;
  serviceP99Ms?: number;
}

export interface PgbenchResult {
  ok: boolean;
  exitCode: number | null;
  tps: number;
  processed: number;
  failed: number;
  latency: LatencyStats | null;
  /** stdout + stderr, kept whole when the run failed, else the summary lines only. */
  output: string;
  wallMs: number;
}

export function pgbenchArgs(target: PgbenchTarget, run: PgbenchRun, logPrefix: string | null): string[] {
  const args = ['-h', target.host, '-p', String(target.port), '-U', target.user, '-n', '-M', run.mode, '-c', String(run.clients), '-j', String(run.threads), '-T', String(run.seconds)];
  if (run.script === 'select-only') args.push('-S');
  if (run.rate !== undefined) args.push('-R', String(run.rate));
  if (run.connectEach === true) args.push('-C');
  if (logPrefix !== null) args.push('-l', '--log-prefix', logPrefix);
  args.push(target.database);
  return args;
}

export function pgbenchEnv(target: PgbenchTarget): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env['PGPASSWORD'] = target.password;
  env['PGCONNECT_TIMEOUT'] = '10';
  env['PGSSLMODE'] = 'disable';
  if (target.options !== undefined) env['PGOPTIONS'] = target.options;
  return env;
}

/** Runs a command to completion; output is collected whole. */
export function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) trackPid(child.pid);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => chunks.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) untrackPid(child.pid);
      resolve({ code, output: Buffer.concat(chunks).toString('utf8') });
    });
  });
}

export async function runPgbench(target: PgbenchTarget, run: PgbenchRun): Promise<PgbenchResult> {
  const logDir = await mkdtemp(path.join(tmpdir(), 'rolegate-bench-log-'));
  removeOnExit(logDir);
  const started = Date.now();
  try {
    const { code, output } = await runCommand('pgbench', pgbenchArgs(target, run, path.join(logDir, 'tx')), pgbenchEnv(target), (run.seconds + 120) * 1000);
    const wallMs = Date.now() - started;
    const processed = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? 0);
    const failedMatch = /number of failed transactions: (\d+)/.exec(output);
    const failed = Number(failedMatch?.[1] ?? 0);
    const tps = Number(/^tps = ([\d.]+)/m.exec(output)?.[1] ?? 0);
    const latency = await readLatencies(logDir, run.rate !== undefined);
    const ok = code === 0 && failed === 0 && processed > 0;
    const summary = output
      .split('\n')
      .filter((l) => /^(number of|tps|latency|initial connection|average connection)/.test(l))
      .join('\n');
    return { ok, exitCode: code, tps, processed, failed, latency, output: ok ? summary : output, wallMs };
  } finally {
    await rm(logDir, { recursive: true, force: true });
    forgetTempDir(logDir);
  }
}

async function readLatencies(logDir: string, rated: boolean): Promise<LatencyStats | null> {
  const latencies: number[] = [];
  const service: number[] = [];
  for (const file of await readdir(logDir)) {
    const text = await readFile(path.join(logDir, file), 'utf8');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      const fields = text.slice(start, end).split(' ');
      start = end + 1;
      // A failed transaction logs "failed"/"skipped" in place of the time.
      const us = Number(fields[2]);
      if (fields.length < 6 || !Number.isFinite(us)) continue;
      latencies.push(us);
      if (rated && fields.length >= 7) service.push(us - Number(fields[6]));
    }
  }
  if (latencies.length === 0) return null;
  const f64 = Float64Array.from(latencies).sort();
  const stats: LatencyStats = {
    count: f64.length,
    p50Ms: quantile(f64, 0.5) / 1000,
    p99Ms: quantile(f64, 0.99) / 1000,
    meanMs: f64.reduce((a, b) => a + b, 0) / f64.length / 1000,
  };
  if (service.length > 0) {
    const s = Float64Array.from(service).sort();
    stats.serviceP50Ms = quantile(s, 0.5) / 1000;
    stats.serviceP99Ms = quantile(s, 0.99) / 1000;
  }
  return stats;
}

/** Nearest-rank quantile of sorted values. */
export function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}
