// `rolegate demo` as a newcomer runs it: the real CLI with its own throwaway
// PostgreSQL (initdb), the shipped policy and an admin port. SIGHUP reloads
// and leaves the database alone; SIGTERM drains, stops the database and
// removes its files.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import pg from 'pg';
import { DEMO_USERS } from '../../src/cli/demo.ts';
import { CLI } from '../helpers/proxy.ts';

interface Demo {
  child: ChildProcess;
  proxyPort: number;
  adminUrl: string;
  dataDir: string;
  configFile: string;
  logs: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

async function startDemo(): Promise<Demo> {
  const child = spawn(process.execPath, [CLI, 'demo', '--port', '0', '--admin-port', '0', '--log-level', 'debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let buffered = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line, unparsed: true });
      }
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const until = async <T>(probe: () => T | null, what: string, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = probe();
      if (found !== null) return found;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`demo exited (${child.exitCode ?? child.signalCode}) before ${what}; stderr:\n${stderr}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`no ${what} within ${timeoutMs} ms; stderr:\n${stderr}\nlogs: ${JSON.stringify(logs.slice(-10))}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  // initdb, the policy build and the workers: well under a minute here.
  const banner = await until(() => (/Ctrl-C stops/.test(stderr) ? stderr : null), 'banner', 120_000);
  const field = (re: RegExp): string => {
    const m = re.exec(banner);
    assert.ok(m?.[1], `banner has ${re}:\n${banner}`);
    return m[1];
  };
  return {
    child,
    proxyPort: Number(field(/proxy on 127\.0\.0\.1:(\d+)/)),
    adminUrl: field(/admin: +(http:\/\/127\.0\.0\.1:\d+)/),
    dataDir: field(/\(data in ([^)]+)\)/),
    configFile: field(/config: (\S+)/),
    logs,
    stderr: () => stderr,
    exited,
    waitForLog: (pred, timeoutMs = 30_000) => until(() => logs.find(pred) ?? null, 'matching log line', timeoutMs),
  };
}

async function countOrders(port: number): Promise<number> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: 'app', connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const r = await client.query<{ n: string }>('SELECT count(*) AS n FROM orders');
    return Number(r.rows[0]?.n);
  } finally {
    await client.end();
  }
}

describe('rolegate demo', { timeout: 240_000 }, () => {
  test('SIGHUP reloads and keeps the database; the admin port answers; SIGTERM stops and removes everything', async () => {
    const demo = await startDemo();
    try {
      const clusterDir = path.dirname(demo.dataDir);
      assert.ok(existsSync(demo.dataDir), 'the cluster runs from its data dir');
      assert.equal(await countOrders(demo.proxyPort), 200);

      // The admin port of the banner.
      const healthz = await fetch(`${demo.adminUrl}/healthz`);
      assert.equal(healthz.status, 200);
      assert.equal(await healthz.text(), 'ok\n');
      type Status = { revision: string | null; workers: unknown[] };
      let status = (await (await fetch(`${demo.adminUrl}/status`)).json()) as Status;
      // Workers appear with their first metrics snapshot.
      for (let i = 0; i < 100 && status.workers.length < 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        status = (await (await fetch(`${demo.adminUrl}/status`)).json()) as Status;
      }
      assert.match(status.revision ?? '', /^[0-9a-f]{16}$/);
      assert.equal(status.workers.length, 2);
      assert.equal((await fetch(`${demo.adminUrl}/readyz`)).status, 200);
      assert.match(await (await fetch(`${demo.adminUrl}/status.html`)).text(), /<html/i);
      assert.match(await (await fetch(`${demo.adminUrl}/metrics`)).text(), /rolegate_/);

      // A session open across the reload.
      const open = new pg.Client({ host: '127.0.0.1', port: demo.proxyPort, user: 'orders-svc', password: DEMO_USERS['orders-svc'], database: 'app' });
      await open.connect();
      const seen = demo.logs.length;
      demo.child.kill('SIGHUP');
      const reload = await demo.waitForLog((l) => l['msg'] === 'policy reload' && l['reason'] === 'SIGHUP' && demo.logs.indexOf(l) >= seen);
      assert.equal(reload['revision'], status.revision);
      assert.equal(demo.child.exitCode, null, 'the demo runs on');
      assert.ok(existsSync(demo.dataDir), 'the database survives SIGHUP');
      assert.ok(existsSync(demo.configFile), 'and so does its config');
      assert.equal(await countOrders(demo.proxyPort), 200, 'new sessions reach the database');
      assert.equal((await open.query<{ n: number }>('SELECT 6 * 7 AS n')).rows[0]?.n, 42, 'the open session carries on');
      assert.equal((await fetch(`${demo.adminUrl}/healthz`)).status, 200);
      const reloaded = (await (await fetch(`${demo.adminUrl}/reload`, { method: 'POST' })).json()) as { ok: boolean };
      assert.equal(reloaded.ok, true, 'POST /reload on the demo');
      assert.ok(existsSync(demo.dataDir));

      // SIGTERM: the open (idle) session is drained at once (57P01), then the
      // database stops and its directory goes.
      const closed = new Promise<string | undefined>((resolve) => open.on('error', (err: Error & { code?: string }) => resolve(err.code)));
      demo.child.kill('SIGTERM');
      const end = await demo.exited;
      assert.deepEqual(end, { code: 0, signal: null }, demo.stderr());
      assert.equal(await closed, '57P01');
      assert.ok(demo.logs.some((l) => l['msg'] === 'draining'));
      assert.equal(existsSync(clusterDir), false, `${clusterDir} removed`);
      assert.equal(existsSync(demo.configFile), false, 'the generated config (role passwords) removed');
    } finally {
      if (demo.child.exitCode === null && demo.child.signalCode === null) demo.child.kill('SIGKILL');
    }
  });
});
