// Idle clients: open N client connections through a proxy, log each in
// (SCRAM) — and in mode after-query run one `SELECT 1`, so that the proxy holds
// a server connection for it (session mode: until the client leaves) — then
// leave them idle and read the proxy's RSS. Logged in but before a query,
// neither PgBouncer nor rolegate (upstream.connect: lazy) holds one. Finally
// every client must still answer a query. Uses the byte-level test client
// (test/helpers/raw-client.ts).

import { query, RawClient } from '../../test/helpers/raw-client.ts';
import { rssBytes, sleep } from './procs.ts';

export type IdleMode = 'logged-in' | 'after-query';

export interface IdleLogin {
  port: number;
  /** Run `SELECT 1` after the login (mode after-query). */
  queryFirst: boolean;
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
  /** Why the first client that did not answer after the idle period failed. */
  firstAfterIdleError: string | null;
  failedLogins: number;
  firstError: string | null;
  /** RSS of the fresh process, before the warm-up burst. */
  rssColdBytes: number;
  rssBeforeBytes: number;
  rssIdleBytes: number;
  /** (rssIdle - rssBefore) / held × 1000, in MiB. */
  mibPer1000: number;
  /** PostgreSQL backends while the clients were idle (NaN without a probe). */
  backendsWhileIdle: number;
  openSeconds: number;
}

const BATCH = 50;
/** Sessions in the warm-up burst (fewer when fewer clients are measured). */
const WARM_SESSIONS = 1000;
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
  if (!login.queryFirst) return;
  client.write(query('SELECT 1'));
  const reply = await client.readUntil('Z', 30_000);
  const error = reply.find((m) => m.type === 'E');
  if (error !== undefined) throw new Error(`SELECT 1 failed: ${error.body.toString('utf8').replaceAll('\0', ' ').trim()}`);
}

export async function measureIdle(pid: number, login: IdleLogin, count: number, log: (line: string) => void, backends?: () => Promise<number>): Promise<IdleResult & { close: () => Promise<void> }> {
  // Warm the proxy with a burst of full sessions (login and a query) that then leave, and take the
  // baseline after it: the first burst of upstream logins raises the process's memory high-water mark
  // once (measured for rolegate: ~25 MiB for a first 1000, then ~0 for the next 1000 — allocator and
  // heap growth, not per-session state), which would otherwise be charged to the idle clients.
  const rssColdBytes = rssBytes(pid);
  for (let i = 0; i < Math.min(count, WARM_SESSIONS); i += BATCH) {
    const burst = await Promise.all(Array.from({ length: Math.min(BATCH, count - i) }, () => openOne({ ...login, queryFirst: true })));
    for (const c of burst) c.socket.destroy();
  }
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
  const backendsWhileIdle = backends === undefined ? Number.NaN : await backends();

  let answeredAfterIdle = 0;
  let firstAfterIdleError: string | null = null;
  for (let i = 0; i < clients.length; i += BATCH) {
    const results = await Promise.allSettled(
      clients.slice(i, i + BATCH).map(async (c) => {
        if (c.closed) throw new Error('closed');
        c.write(query('SELECT 1'));
        const reply = await c.readUntil('Z', 30_000);
        const error = reply.find((m) => m.type === 'E');
        if (error !== undefined) throw new Error(error.body.toString('utf8').replaceAll('\0', ' ').trim());
        if (!reply.some((m) => m.type === 'D')) throw new Error('no row');
      }),
    );
    for (const r of results) {
      if (r.status === 'fulfilled') answeredAfterIdle++;
      else firstAfterIdleError ??= r.reason instanceof Error ? r.reason.message : String(r.reason);
    }
  }
  return {
    requested: count,
    held,
    answeredAfterIdle,
    firstAfterIdleError,
    failedLogins,
    firstError,
    rssColdBytes,
    rssBeforeBytes,
    rssIdleBytes,
    mibPer1000: held > 0 ? ((rssIdleBytes - rssBeforeBytes) / held) * 1000 / 1048576 : Number.NaN,
    backendsWhileIdle,
    openSeconds,
    close: async () => {
      for (const c of clients) c.socket.destroy();
      await sleep(500);
    },
  };
}
