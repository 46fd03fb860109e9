// How long one client's long statements make the other sessions of its worker
// wait. One worker, one throwaway PostgreSQL: a neighbour sends `SELECT 1`
// every 5 ms and records each round trip; meanwhile (or not: the quiet
// phases) another client loops a `SELECT length('aaa…')` of --kib KiB. Quiet
// and loaded phases alternate per round; reported: the neighbour's p50, p99
// and max per phase, and how many long statements ran. `--root DIR` runs
// another checkout (e.g. the commit before off-thread parsing) for comparison.
//
//   node bench/neighbour-stall.ts [--kib 1024] [--seconds 5] [--rounds 3] [--root DIR]

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { demoConfigYaml, DEMO_USERS, prepareDemoDatabase } from '../src/cli/demo.ts';
import { startLocalPostgres } from '../src/cli/local-postgres.ts';
import { startProxy, withVariant } from './lib/ab.ts';
import { numberArg, stringArg } from './lib/args.ts';

const kib = numberArg('--kib', 1024);
const seconds = numberArg('--seconds', 5);
const rounds = numberArg('--rounds', 3);
const root = stringArg('--root');

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const pgServer = await startLocalPostgres({});
let proxy: ChildProcess | null = null;
try {
  const pw = { app_reader: 'r-bench', app_writer: 'w-bench', app_admin: 'a-bench' };
  await prepareDemoDatabase((sql, db) => pgServer.psql(sql, db === undefined ? {} : { database: db }), pw);
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-stall-'));
  const file = path.join(dir, 'rolegate.yaml');
  // One worker: the neighbour and the long statements share its thread.
  // Up to 1 MiB fits the default limits.max_statement_bytes (and runs on checkouts that predate it).
  const limits = kib > 1024 ? `limits: { max_statement_bytes: ${(kib + 1) * 1024} }\n` : '';
  writeFileSync(file, withVariant(demoConfigYaml({ port: 0, upstreamPort: pgServer.port, rolePasswords: pw, withPolicy: true }), limits).replace(/workers: \d+/, 'workers: 1'));
  const started = await startProxy(file, [], root);
  proxy = started.child;
  const client = (): pg.Client => new pg.Client({ host: '127.0.0.1', port: started.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: 'app' });
  const neighbour = client();
  const heavy = client();
  await neighbour.connect();
  await heavy.connect();
  const long = `SELECT length('${'a'.repeat(kib * 1024 - 20)}')`;
  const phase = async (loaded: boolean): Promise<{ lat: number[]; heavyRuns: number }> => {
    let stop = false;
    let heavyRuns = 0;
    const loop = (async () => {
      while (loaded && !stop) {
        await heavy.query(long);
        heavyRuns++;
      }
    })();
    const lat: number[] = [];
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      const t0 = performance.now();
      await neighbour.query('SELECT 1');
      lat.push(performance.now() - t0);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    stop = true;
    await loop;
    return { lat, heavyRuns };
  };
  await phase(true); // warm-up (parser, policy, pool thread)
  const results: Record<'quiet' | 'loaded', number[]> = { quiet: [], loaded: [] };
  let heavyTotal = 0;
  for (let r = 0; r < rounds; r++) {
    for (const loaded of r % 2 === 0 ? [false, true] : [true, false]) {
      const { lat, heavyRuns } = await phase(loaded);
      results[loaded ? 'loaded' : 'quiet'].push(...lat);
      heavyTotal += heavyRuns;
    }
  }
  await neighbour.end();
  await heavy.end();
  console.log(`neighbour round trips (ms), one worker, ${kib} KiB statements looped by another client${root === undefined ? '' : ` (rolegate at ${root})`}`);
  console.log('| phase | n | p50 | p99 | max |');
  console.log('|---|--:|--:|--:|--:|');
  for (const name of ['quiet', 'loaded'] as const) {
    const s = [...results[name]].sort((a, b) => a - b);
    console.log(`| ${name} | ${s.length} | ${percentile(s, 50).toFixed(2)} | ${percentile(s, 99).toFixed(2)} | ${(s.at(-1) ?? Number.NaN).toFixed(2)} |`);
  }
  console.log(`long statements run while loaded: ${heavyTotal}`);
} finally {
  proxy?.kill('SIGTERM');
  await pgServer.stop();
}
