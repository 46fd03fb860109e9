// A/B of rolegate configurations, measured in one run: one rolegate instance per
// variant in front of one throwaway PostgreSQL, identical but for what the
// variant changes (YAML appended to the demo config, node flags), and pgbench
// cells interleaved round by round — the order of the variants alternating —
// so the ratios are fair on a noisy machine. Reports per cell the median TPS
// of each variant, its ratio to the first (of the medians, and the median of
// each round's ratio), the proxy's CPU per transaction (all threads, from
// /proc) and the whole machine's (/proc/stat: pgbench and PostgreSQL share
// the cores); finally each proxy's RSS.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { demoConfigYaml, DEMO_USERS, prepareDemoDatabase } from '../../src/cli/demo.ts';
import { startLocalPostgres } from '../../src/cli/local-postgres.ts';
import { cpuMicros, machineCpuMicros, rssBytes } from './procs.ts';

const run = promisify(execFile);
const CLI = path.resolve(import.meta.dirname, '../../src/cli/main.ts');

export interface Variant {
  name: string;
  /** YAML appended to the demo config (top-level keys the demo config does not set); a function gets the run's directory (for files). */
  yaml?: string | ((dir: string) => string);
  /** Flags for the node process (e.g. V8 heap flags). */
  nodeArgs?: string[];
  /** Another rolegate checkout to run instead of this one (e.g. a `git worktree` of an older commit; its node_modules must be installed or linked). */
  root?: string;
}

export interface AbCell {
  name: string;
  user: keyof typeof DEMO_USERS;
  /** pgbench arguments besides -c/-j/-T/-h/-p/-U. */
  args: string[];
  /** PGOPTIONS for the session (e.g. a role request). */
  options?: string;
}

export const DEFAULT_CELLS: AbCell[] = [
  { name: 'select-only prepared c8', user: 'reporting-svc', args: ['-S', '-M', 'prepared'] },
  { name: 'select-only simple c8', user: 'reporting-svc', args: ['-S', '-M', 'simple'] },
  { name: 'TPC-B prepared c8', user: 'orders-svc', args: ['-M', 'prepared'], options: '-c rolegate.role=app_writer' },
];

export interface AbOptions {
  variants: Variant[];
  cells?: AbCell[];
  seconds: number;
  rounds: number;
  /** Each cell through each proxy for this long before the first round, not counted (JIT, caches, connections); default 2. */
  warmupSeconds?: number;
  clients?: number;
}

/** Start `rolegate start --config configFile` (of the checkout at `root`, else this one); resolves with its port once it listens. */
export async function startProxy(configFile: string, nodeArgs: string[], root: string | undefined): Promise<{ child: ChildProcess; port: number }> {
  const cli = root === undefined ? CLI : path.resolve(root, 'src/cli/main.ts');
  const child = spawn(process.execPath, [...nodeArgs, cli, 'start', '--config', configFile, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"port":(\d+)[^\n]*"msg":"listening"|"msg":"listening"[^\n]*"port":(\d+)/.exec(buf);
      if (m) resolve(Number(m[1] ?? m[2]));
    });
    child.on('exit', (code) => reject(new Error(`rolegate exited with ${code}`)));
  });
  return { child, port };
}

interface Sample {
  tps: number;
  /** The proxy's CPU (all threads) per transaction, µs. */
  proxyUsPerTx: number;
  /** The whole machine's busy CPU per transaction (pgbench, PostgreSQL, proxy, kernel), µs. */
  machineUsPerTx: number;
  /** Fraction of the machine's CPU time that was busy. */
  busy: number;
}

export interface AbResult {
  tps: number;
  /** Median over rounds of this variant's TPS ÷ the first variant's in the same round. */
  pairedRatio: number;
  cpuUsPerTx: number;
  machineUsPerTx: number;
  busy: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Run the A/B and print a markdown table; resolves with the per-cell medians. */
export async function runAb(options: AbOptions): Promise<Map<string, Map<string, AbResult>>> {
  const cells = options.cells ?? DEFAULT_CELLS;
  const clients = options.clients ?? 8;
  const pg = await startLocalPostgres({ settings: { max_connections: '300' } });
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-ab-'));
  const children: ChildProcess[] = [];
  try {
    const pw = { app_reader: 'r-bench', app_writer: 'w-bench', app_admin: 'a-bench' };
    await prepareDemoDatabase((sql, db) => pg.psql(sql, db === undefined ? {} : { database: db }), pw);
    await run('pgbench', ['-i', '-s', '5', '-h', '127.0.0.1', '-p', String(pg.port), '-U', pg.superuser, 'app'], { env: { ...process.env, PGPASSWORD: pg.superuserPassword } });
    await pg.psql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_reader; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_writer;', { database: 'app' });
    const base = demoConfigYaml({ port: 0, upstreamPort: pg.port, rolePasswords: pw, withPolicy: true });
    const proxies: Array<{ variant: Variant; port: number; pid: number }> = [];
    for (const [i, variant] of options.variants.entries()) {
      const file = path.join(dir, `variant-${i}.yaml`);
      const extra = typeof variant.yaml === 'function' ? variant.yaml(dir) : (variant.yaml ?? '');
      writeFileSync(file, withVariant(base, extra));
      const p = await startProxy(file, variant.nodeArgs ?? [], variant.root);
      children.push(p.child);
      proxies.push({ variant, port: p.port, pid: p.child.pid as number });
    }
    const samples = new Map<string, Map<string, Sample[]>>();
    const pgbench = (cell: AbCell, port: number, seconds: number): Promise<{ stdout: string }> =>
      run('pgbench', [...cell.args, '-c', String(clients), '-j', '2', '-T', String(seconds), '-n', '-h', '127.0.0.1', '-p', String(port), '-U', cell.user, 'app'], {
        env: { ...process.env, PGPASSWORD: DEMO_USERS[cell.user], PGOPTIONS: cell.options ?? '' },
      });
    const warmup = options.warmupSeconds ?? 2;
    if (warmup > 0) for (const cell of cells) for (const proxy of proxies) await pgbench(cell, proxy.port, warmup);
    for (let round = 0; round < options.rounds; round++) {
      for (const cell of cells) {
        // Alternate the order, so no variant always runs on a warmer (or busier) machine.
        const order = round % 2 === 0 ? proxies : [...proxies].reverse();
        for (const proxy of order) {
          const cpu0 = cpuMicros(proxy.pid);
          const machine0 = machineCpuMicros();
          const { stdout } = await pgbench(cell, proxy.port, options.seconds);
          const machine1 = machineCpuMicros();
          const cpu = cpuMicros(proxy.pid) - cpu0;
          const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
          const txs = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1]);
          const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
          if (failed > 0) throw new Error(`${cell.name} through ${proxy.variant.name}: ${failed} failed transactions`);
          const sample: Sample = {
            tps,
            proxyUsPerTx: cpu / txs,
            machineUsPerTx: (machine1.busy - machine0.busy) / txs,
            busy: (machine1.busy - machine0.busy) / (machine1.total - machine0.total),
          };
          const perCell = samples.get(cell.name) ?? new Map<string, Sample[]>();
          perCell.set(proxy.variant.name, [...(perCell.get(proxy.variant.name) ?? []), sample]);
          samples.set(cell.name, perCell);
          process.stderr.write(`round ${round + 1}/${options.rounds} ${cell.name} ${proxy.variant.name}: ${tps.toFixed(0)} tps, proxy ${sample.proxyUsPerTx.toFixed(1)} µs CPU/tx, machine ${sample.machineUsPerTx.toFixed(1)} µs CPU/tx, ${(sample.busy * 100).toFixed(0)} % busy\n`);
        }
      }
    }
    const names = options.variants.map((v) => v.name);
    const result = new Map<string, Map<string, AbResult>>();
    const header = names.map((n, i) => (i === 0 ? `TPS ${n} | proxy µs/tx | machine µs/tx` : `TPS ${n} | ×${names[0]} | paired × | proxy µs/tx | machine µs/tx`)).join(' | ');
    console.log(`\n| cell | ${header} |\n|---|${names.map((_, i) => (i === 0 ? '--:|--:|--:|' : '--:|--:|--:|--:|--:|')).join('')}`);
    for (const [cell, perCell] of samples) {
      const row = new Map<string, AbResult>();
      const base = perCell.get(names[0] as string) as Sample[];
      for (const n of names) {
        const s = perCell.get(n) as Sample[];
        row.set(n, {
          tps: median(s.map((x) => x.tps)),
          // Same round, same cell: the two runs were back to back, so the machine's drift between rounds cancels.
          pairedRatio: median(s.map((x, i) => x.tps / (base[i] as Sample).tps)),
          cpuUsPerTx: median(s.map((x) => x.proxyUsPerTx)),
          machineUsPerTx: median(s.map((x) => x.machineUsPerTx)),
          busy: median(s.map((x) => x.busy)),
        });
      }
      result.set(cell, row);
      const first = row.get(names[0] as string) as AbResult;
      const cols = names.map((n, i) => {
        const v = row.get(n) as AbResult;
        const cpu = `${v.cpuUsPerTx.toFixed(1)} | ${v.machineUsPerTx.toFixed(1)}`;
        return i === 0 ? `${v.tps.toFixed(0)} | ${cpu}` : `${v.tps.toFixed(0)} | ${(v.tps / first.tps).toFixed(3)} | ${v.pairedRatio.toFixed(3)} | ${cpu}`;
      });
      console.log(`| ${cell} | ${cols.join(' | ')} |`);
    }
    const busy = [...result.values()].flatMap((row) => [...row.values()].map((v) => v.busy));
    console.log(
      `\nmedians of ${options.rounds} interleaved rounds × ${options.seconds} s after ${warmup} s of warm-up per cell and variant, ${clients} clients; ×: ratio of the medians, paired ×: median of each round's ratio; ` +
        `machine: all processes (/proc/stat, ${(Math.min(...busy) * 100).toFixed(0)}–${(Math.max(...busy) * 100).toFixed(0)} % busy); ` +
        `proxy RSS at the end: ${proxies.map((p) => `${p.variant.name} ${(rssBytes(p.pid) / 1048576).toFixed(0)} MiB`).join(', ')}; Node ${process.version}`,
    );
    return result;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The demo config with a variant's YAML appended; a top-level key the variant
 * sets replaces the demo config's one-line entry of that key (e.g. `policy:`),
 * so a variant can change what the demo config already sets.
 */
export function withVariant(base: string, extra: string): string {
  const keys = new Set([...extra.matchAll(/^([a-z_]+):/gm)].map((m) => m[1]));
  const kept = base.split('\n').filter((line) => {
    const m = /^([a-z_]+): \{.*\}$/.exec(line);
    return m === null || !keys.has(m[1]);
  });
  return kept.join('\n') + extra;
}

