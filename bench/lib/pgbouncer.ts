// PgBouncer (the Debian package's /usr/sbin/pgbouncer) in session mode in
// front of the throwaway PostgreSQL, for comparison. Clients authenticate to
// PgBouncer with SCRAM-SHA-256 against a generated userlist holding the SCRAM
// verifiers PostgreSQL stores (pg_authid.rolpassword), as production setups
// do: PgBouncer then checks a client proof without PBKDF2 and logs in upstream
// with the ClientKey the client's proof reveals (PgBouncer ≥ 1.14). With
// plain-text passwords in the userlist it would run PBKDF2 (4096 rounds) for
// every client login, which is not what the connect-storm cell should compare.
// The pool is as large as the client count, so no client waits for a server
// connection. Config, userlist, log and pid file live in a temp dir
// that stop() removes. As root, PgBouncer runs as the `postgres` OS user via
// `runuser`, which stays PgBouncer's parent: pid is PgBouncer's own pid (the
// one whose CPU and RSS the report reads).

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { childPids, forgetTempDir, freeLoopbackPort, removeOnExit, sleep, spawnTracked, trackPid, untrackPid, waitForListeners, type Spawned } from './procs.ts';

export const PGBOUNCER_BIN = '/usr/sbin/pgbouncer';

export interface PgBouncer {
  port: number;
  /** PgBouncer's own pid (not runuser's). */
  pid: number;
  dir: string;
  logTail(): string;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  upstreamPort: number;
  database: string;
  /** PostgreSQL role → its SCRAM verifier as pg_authid stores it; clients log in with the role's password. */
  users: Record<string, string>;
  /** max_client_conn and the pool size. */
  maxClients: number;
}

function quote(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

function osUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('running as root, but there is no `postgres` OS user to run PgBouncer as');
  return { uid, gid };
}

export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  if (!existsSync(PGBOUNCER_BIN)) throw new Error(`${PGBOUNCER_BIN} not found (Debian: apt-get install pgbouncer)`);
  const owner = osUser();
  const dir = await mkdtemp(path.join(tmpdir(), 'rolegate-bench-pgbouncer-'));
  removeOnExit(dir);
  const port = await freeLoopbackPort();
  const ini = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  const logFile = path.join(dir, 'pgbouncer.log');
  const pidFile = path.join(dir, 'pgbouncer.pid');
  await writeFile(userlist, Object.entries(options.users).map(([u, pw]) => `${quote(u)} ${quote(pw)}`).join('\n') + '\n', { mode: 0o600 });
  await writeFile(
    ini,
    `[databases]
${options.database} = host=127.0.0.1 port=${options.upstreamPort} dbname=${options.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${userlist}
pool_mode = session
max_client_conn = ${options.maxClients}
default_pool_size = ${options.maxClients}
max_db_connections = 0
max_user_connections = 0
logfile = ${logFile}
pidfile = ${pidFile}
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 600
listen_backlog = 4096
`,
    { mode: 0o600 },
  );
  if (owner !== null) {
    for (const p of [dir, ini, userlist]) await chown(p, owner.uid, owner.gid);
  }
  // runuser applies PAM limits (soft RLIMIT_NOFILE 1024 here): raise the soft limit to the hard one, else
  // PgBouncer cannot hold more than ~500 clients (each needs a client and a server socket).
  const raiseLimit = ['/bin/sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"', PGBOUNCER_BIN, ini];
  const spawned: Spawned = owner === null ? spawnTracked(raiseLimit[0]!, raiseLimit.slice(1)) : spawnTracked('runuser', ['-u', 'postgres', '--', ...raiseLimit]);
  const alive = (): boolean => spawned.child.exitCode === null && spawned.child.signalCode === null;
  const logTail = (): string => {
    try {
      return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-20).join('\n');
    } catch {
      return spawned.stderr();
    }
  };
  try {
    await waitForListeners(port, 1, 20_000, alive, 'pgbouncer');
  } catch (error) {
    await spawned.stop();
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${logTail()}`);
  }
  let pid = spawned.pid;
  if (owner !== null) {
    // runuser forks: PgBouncer is its child (sh exec'd it).
    for (let i = 0; i < 50 && pid === spawned.pid; i++) {
      pid = childPids(spawned.pid)[0] ?? spawned.pid;
      if (pid === spawned.pid) await sleep(50);
    }
    if (pid === spawned.pid && existsSync(pidFile)) pid = Number(readFileSync(pidFile, 'utf8').trim());
    trackPid(pid);
  }
  return {
    port,
    pid,
    dir,
    logTail,
    async stop() {
      if (pid !== spawned.pid) {
        // SIGTERM: immediate shutdown (SIGINT would wait for clients).
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
        untrackPid(pid);
      }
      await spawned.stop();
      await rm(dir, { recursive: true, force: true });
      forgetTempDir(dir);
    },
  };
}
