// Audit on versus off, measured in one run: two rolegate instances in front of
// one throwaway PostgreSQL — identical but for `audit:` (file sink, fail-closed,
// the default mode for files) — and pgbench cells interleaved round by round
// so the ratio is fair on a noisy machine.
//
//   node bench/audit-overhead.ts [--seconds 5] [--rounds 3]

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { demoConfigYaml, DEMO_USERS, prepareDemoDatabase } from '../src/cli/demo.ts';
import { startLocalPostgres } from '../src/cli/local-postgres.ts';

const run = promisify(execFile);
const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? Number.NaN : Number(process.argv[i + 1]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
};
const SECONDS = arg('--seconds', 5);
const ROUNDS = arg('--rounds', 3);
const CLI = path.resolve(import.meta.dirname, '../src/cli/main.ts');

async function startProxy(configFile: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [CLI, 'start', '--config', configFile, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
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

const pg = await startLocalPostgres({ settings: { max_connections: '300' } });
const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-bench-'));
const children: ChildProcess[] = [];
try {
  const pw = { app_reader: 'r-bench', app_writer: 'w-bench', app_admin: 'a-bench' };
  await prepareDemoDatabase((sql, db) => pg.psql(sql, db === undefined ? {} : { database: db }), pw);
  await run('pgbench', ['-i', '-s', '5', '-h', '127.0.0.1', '-p', String(pg.port), '-U', pg.superuser, 'app'], { env: { ...process.env, PGPASSWORD: pg.superuserPassword } });
  await pg.psql('GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_reader; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_writer;', { database: 'app' });
  const base = demoConfigYaml({ port: 0, upstreamPort: pg.port, rolePasswords: pw, withPolicy: true });
  const auditFile = path.join(dir, 'audit.log');
  writeFileSync(path.join(dir, 'off.yaml'), base);
  writeFileSync(path.join(dir, 'on.yaml'), `${base}audit: { sink: file, file: { path: ${JSON.stringify(auditFile)}, max_bytes: 1073741824 } }\n`);
  const off = await startProxy(path.join(dir, 'off.yaml'));
  const on = await startProxy(path.join(dir, 'on.yaml'));
  children.push(off.child, on.child);

  const cells = [
    { name: 'select-only prepared c8', user: 'reporting-svc' as const, args: ['-S', '-M', 'prepared'], options: '' },
    { name: 'select-only simple c8', user: 'reporting-svc' as const, args: ['-S', '-M', 'simple'], options: '' },
    { name: 'TPC-B prepared c8', user: 'orders-svc' as const, args: ['-M', 'prepared'], options: '-c rolegate.role=app_writer' },
  ];
  const tps = new Map<string, { off: number[]; on: number[] }>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const cell of cells) {
      // Alternate which target goes first, so neither always runs on a warmer machine.
      const order = round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const which of order) {
        const port = which === 'off' ? off.port : on.port;
        const { stdout } = await run('pgbench', [...cell.args, '-c', '8', '-j', '2', '-T', String(SECONDS), '-n', '-h', '127.0.0.1', '-p', String(port), '-U', cell.user, 'app'], {
          env: { ...process.env, PGPASSWORD: DEMO_USERS[cell.user], PGOPTIONS: cell.options },
        });
        const value = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
        const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
        if (failed > 0) throw new Error(`${cell.name} audit ${which}: ${failed} failed transactions`);
        const entry = tps.get(cell.name) ?? { off: [], on: [] };
        entry[which].push(value);
        tps.set(cell.name, entry);
        process.stderr.write(`round ${round + 1}/${ROUNDS} ${cell.name} audit ${which}: ${value.toFixed(0)} tps\n`);
      }
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
  console.log(`\n| cell | TPS audit off | TPS audit on | on / off |\n|---|--:|--:|--:|`);
  for (const [name, v] of tps) console.log(`| ${name} | ${median(v.off).toFixed(0)} | ${median(v.on).toFixed(0)} | ${(median(v.on) / median(v.off)).toFixed(3)} |`);
  console.log(`\nmedians of ${ROUNDS} interleaved rounds × ${SECONDS} s; audit file ${(statSync(auditFile).size / 1048576).toFixed(0)} MiB; Node ${process.version}`);
} finally {
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
