// 1000 idle clients through rolegate stay connected and usable, holding no
// upstream connection while idle (upstream.connect: lazy, the default); the
// proxy's memory per 1000 idle clients is reported as a test diagnostic.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { adminQuery } from '../helpers/pg.ts';
import { query, RawClient } from '../helpers/raw-client.ts';

const CLIENTS = 1000;
const BATCH = 50;
const WORKERS = 2;
const APP = `idle-${process.pid}`;

async function upstreamSessions(): Promise<number> {
  const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '${APP}'`);
  return Number(rows[0]?.n);
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
  return kb * 1024;
}

describe(`${CLIENTS} idle clients`, () => {
  let proxy: RunningProxy;
  const clients: RawClient[] = [];

  before(async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(demoConfig({ workers: WORKERS }));
  });
  after(async () => {
    for (const c of clients) c.socket.destroy();
    await proxy?.stop();
  });

  test('all connect, stay idle, and all remain usable', async (t) => {
    const pid = proxy.child.pid;
    assert.ok(pid);
    // Warm the proxy (JIT, caches) with one session before the baseline.
    const warm = await RawClient.connect(proxy.port);
    await warm.login('reporting-svc', DEMO_USERS['reporting-svc']);
    warm.socket.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const baseline = rssBytes(pid);

    let halfway = 0;
    for (let i = 0; i < CLIENTS; i += BATCH) {
      if (i === CLIENTS / 2) {
        await new Promise((r) => setTimeout(r, 500));
        halfway = rssBytes(pid);
      }
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, CLIENTS - i) }, async () => {
          const c = await RawClient.connect(proxy.port);
          await c.login('reporting-svc', DEMO_USERS['reporting-svc'], 'app', { application_name: APP });
          return c;
        }),
      );
      clients.push(...batch);
    }
    await new Promise((r) => setTimeout(r, 2000)); // idle
    const loaded = rssBytes(pid);
    const perThousandMiB = ((loaded - baseline) / clients.length) * 1000 / 1024 / 1024;
    // The second half's growth excludes the heap the first logins grew once (login garbage, JIT).
    const marginalMiB = ((loaded - halfway) / (clients.length / 2)) * 1000 / 1024 / 1024;
    t.diagnostic(`proxy RSS: ${(baseline / 1048576).toFixed(1)} MiB before, ${(loaded / 1048576).toFixed(1)} MiB with ${clients.length} idle clients → ${perThousandMiB.toFixed(1)} MiB per 1000 idle clients overall, ${marginalMiB.toFixed(1)} MiB per 1000 for the second ${clients.length / 2}`);
    // Only the first login of this kind per worker went upstream at once (its greeting serves the rest).
    assert.ok((await upstreamSessions()) <= WORKERS, 'idle clients hold no upstream connection');

    // Every one of them still answers, with its own result.
    for (let i = 0; i < clients.length; i += BATCH) {
      await Promise.all(
        clients.slice(i, i + BATCH).map(async (c, j) => {
          c.write(query(`SELECT ${i + j} AS n`));
          const res = await c.readUntil('Z', 20_000);
          const row = res.find((m) => m.type === 'D');
          assert.ok(row, `client ${i + j} got a row`);
          assert.equal(row.body.toString('utf8', 6), String(i + j));
        }),
      );
    }
    assert.equal(clients.filter((c) => c.closed).length, 0, 'no client was disconnected');
    assert.equal(await upstreamSessions(), CLIENTS, 'each client that sent a query holds its own upstream session');
  });
});
