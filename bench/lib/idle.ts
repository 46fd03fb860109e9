// Idle clients: open N client connections through a proxy, log each in
// (SCRAM) and run one `SELECT 1` — so that a session-mode pooler (PgBouncer)
// holds a server connection for it just as rolegate does from the start — then
// leave them idle and read the proxy's RSS. Finally every client must still
// answer a query. Uses the byte-level test client (test/helpers/raw-client.ts).

import { query, RawClient } from '../../test/helpers/raw-client.ts';
import { rssBytes, sleep } from './procs.ts';

export interface IdleLogin {
  port: number;
  user: string;
  password: string;
  database: string;
  /** Extra start-up parameters (e.g. options). */
  extra?: Record<string, string>;
}

export interface IdleResult {
  requested: number;
  /** Clients logged in and answering `SELECT 1` while idle. */
  held: number;
  /** Clients that still answered after the idle period. */
  answeredAfterIdle: number;
  failedLogins: number;
  firstError: string | null;
  rssBeforeBytes: number;
  rssIdleBytes: number;
  /** (rssIdle - rssBefore) / held × 1000, in MiB. */
  mibPer1000: number;
  openSeconds: number;
}

const BATCH = 50;
/** Stop opening more once this many logins failed: the limit is reached. */
const MAX_FAILURES = 200;

async function openOne(login: IdleLogin): Promise<RawClient> {
  const client = await RawClient.connect(login.port);
  try {
    await loginAndSelect(client, login);
    return client;
  } catch (error) {
    client.socket.destroy();
    throw error;
  }
}

async function loginAndSelect(client: RawClient, login: IdleLogin): Promise<void> {
  await client.login(login.user, login.password, login.database, login.extra ?? {});
  client.write(query('SELECT 1'));
  const reply = await client.readUntil('Z', 30_000);
  const error = reply.find((m) => m.type === 'E');
  if (error !== undefined) throw new Error(`SELECT 1 failed: ${error.body.toString('utf8').replaceAll('\0', ' ').trim()}`);
}

export async function measureIdle(pid: number, login: IdleLogin, count: number, log: (line: string) => void): Promise<IdleResult & { close: () => Promise<void> }> {
  // Warm the proxy with one full session, then take the baseline.
  const warm = await RawClient.connect(login.port);
  await loginAndSelect(warm, login);
  warm.socket.destroy();
  await sleep(1000);
  const rssBeforeBytes = rssBytes(pid);

  const clients: RawClient[] = [];
  let failedLogins = 0;
  let firstError: string | null = null;
  const started = Date.now();
  let nextReport = started + 10_000;
  for (let i = 0; i < count && failedLogins < MAX_FAILURES; i += BATCH) {
    const n = Math.min(BATCH, count - i);
    const settled = await Promise.allSettled(Array.from({ length: n }, () => openOne(login)));
    for (const s of settled) {
      if (s.status === 'fulfilled') clients.push(s.value);
      else {
        failedLogins++;
        firstError ??= s.reason instanceof Error ? s.reason.message : String(s.reason);
      }
    }
    if (Date.now() > nextReport) {
      log(`  … ${clients.length} open, ${failedLogins} failed`);
      nextReport = Date.now() + 10_000;
    }
  }
  const openSeconds = (Date.now() - started) / 1000;
  await sleep(2000);
  const held = clients.filter((c) => !c.closed).length;
  const rssIdleBytes = rssBytes(pid);

  let answeredAfterIdle = 0;
  for (let i = 0; i < clients.length; i += BATCH) {
    const results = await Promise.allSettled(
      clients.slice(i, i + BATCH).map(async (c) => {
        if (c.closed) throw new Error('closed');
        c.write(query('SELECT 1'));
        const reply = await c.readUntil('Z', 30_000);
        if (!reply.some((m) => m.type === 'D')) throw new Error('no row');
      }),
    );
    answeredAfterIdle += results.filter((r) => r.status === 'fulfilled').length;
  }
  return {
    requested: count,
    held,
    answeredAfterIdle,
    failedLogins,
    firstError,
    rssBeforeBytes,
    rssIdleBytes,
    mibPer1000: held > 0 ? ((rssIdleBytes - rssBeforeBytes) / held) * 1000 / 1048576 : Number.NaN,
    openSeconds,
    close: async () => {
      for (const c of clients) c.socket.destroy();
      await sleep(500);
    },
  };
}
