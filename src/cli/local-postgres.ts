// A throwaway PostgreSQL cluster on loopback: used by the test runner
// (scripts/test.ts) and by `rolegate demo`. Everything lives in one temp dir
// (data, Unix socket, server log) that stop() removes.
//
// PostgreSQL refuses to run as root (initdb/postgres exit with "cannot be run
// as root"), so when this process is root the temp dir is chowned to the
// `postgres` OS user and initdb/pg_ctl run under `runuser -u postgres`.
//
// Cleanup of a crashed run is best effort: while a cluster is running, a
// process 'exit' listener stops it synchronously (`pg_ctl stop -m immediate`)
// and removes its temp dir. SIGINT/SIGTERM/SIGHUP listeners do the same when
// this module is the signal's only listener (the default action would kill the
// process), then re-raise the signal so the process still dies of it. A signal
// the program handles itself is the program's: SIGHUP is a reload for
// `rolegate demo`, and its SIGINT/SIGTERM drain the proxy before stop(); the
// cluster stays until stop() or the 'exit' listener. A SIGKILL cannot be caught:
// the postmaster then keeps running (it is in its own session, pg_ctl detaches
// it) until `pg_ctl stop -D <dataDir>` or a reboot; its temp dir is named
// `rolegate-pg-*` under the OS temp dir.

import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, readFileSync, rmSync, statSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export type LocalPostgresAuthMethod = 'scram-sha-256' | 'md5' | 'trust';

export interface LocalPostgresOptions {
  /** Loopback TCP port; default: a free one (bind :0 and release), retried if taken meanwhile. */
  port?: number;
  /** Directory holding initdb, pg_ctl and postgres; default: see findPostgresBinDir(). */
  binDir?: string;
  /** pg_hba.conf method for TCP connections on 127.0.0.1/32 (default scram-sha-256). */
  authMethod?: LocalPostgresAuthMethod;
  /** Extra postgresql.conf settings; they win over the defaults below. */
  settings?: Record<string, string>;
  /** Progress lines (commands run, paths, port); default: silent. */
  log?: (line: string) => void;
}

export interface PsqlOptions {
  database?: string;
  user?: string;
  password?: string;
}

export interface LocalPostgres {
  host: '127.0.0.1';
  port: number;
  socketDir: string;
  dataDir: string;
  /** The temp dir holding everything (data, socket, log) that stop() and the exit/signal cleanup remove; a caller may keep its own throwaway files there. */
  tmpDir: string;
  superuser: string;
  superuserPassword: string;
  /** The server log (pg_ctl -l); with settings { log_statement: 'all' } it shows what reached the server. */
  logFile: string;
  /**
   * Runs the SQL through real psql (`-X -q -A -t -v ON_ERROR_STOP=1`, script
   * on stdin) and resolves with its stdout, the last newline removed; rejects
   * with psql's stderr on failure. With no user or password given it connects
   * as the superuser over the Unix socket (trust); otherwise over TCP with
   * the password (the superuser's password when user is the superuser).
   */
  psql(sql: string, opts?: PsqlOptions): Promise<string>;
  /** `pg_ctl stop -m fast`, then removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** Every failure of this module: `command` names the file or command, `detail` holds stderr / log tail. */
export class LocalPostgresError extends Error {
  readonly code = 'RG_LOCAL_POSTGRES';
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;

  constructor(message: string, options: { command: string; exitCode?: number | null; stderr?: string; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LocalPostgresError';
    this.command = options.command;
    this.exitCode = options.exitCode ?? null;
    this.stderr = options.stderr ?? '';
  }
}

const OS_USER = 'postgres';
const SUPERUSER = 'postgres';
const HOST = '127.0.0.1';
const BIN_DIR_CANDIDATES = [18, 17, 16, 15].map((major) => `/usr/lib/postgresql/${major}/bin`);
const START_TIMEOUT_S = 60;
const STOP_TIMEOUT_S = 60;
const LOG_TAIL_LINES = 40;
const PORT_ATTEMPTS = 3;
// sockaddr_un.sun_path is 108 bytes on Linux, including the NUL.
const MAX_SOCKET_PATH_BYTES = 107;

interface RunOptions {
  asOsUser: boolean;
  input?: string;
  env?: Record<string, string>;
  cwd: string;
  timeoutMs?: number;
}

interface RunResult {
  stdout: string;
  stderr: string;
}

interface Identity {
  /** Non-null when this process is root and commands must run as the postgres OS user. */
  osUser: { name: string; uid: number; gid: number } | null;
}

/** Resolution order: options.binDir, $ROLEGATE_PG_BINDIR, /usr/lib/postgresql/{18,17,16,15}/bin, `pg_config --bindir`. */
export function findPostgresBinDir(binDir?: string): string {
  const explicit: [string, string | undefined][] = [
    ['options.binDir', binDir],
    ['ROLEGATE_PG_BINDIR', process.env['ROLEGATE_PG_BINDIR']],
  ];
  for (const [source, dir] of explicit) {
    if (dir === undefined || dir === '') continue;
    const missing = missingServerBinaries(dir);
    if (missing.length > 0) {
      throw new LocalPostgresError(`${source}=${dir} does not hold the PostgreSQL server binaries (missing: ${missing.join(', ')})`, {
        command: join(dir, missing[0] ?? 'initdb'),
      });
    }
    return dir;
  }
  for (const dir of BIN_DIR_CANDIDATES) {
    if (missingServerBinaries(dir).length === 0) return dir;
  }
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (pgConfig.status === 0) {
    const dir = pgConfig.stdout.trim();
    if (dir !== '' && missingServerBinaries(dir).length === 0) return dir;
  }
  throw new LocalPostgresError(
    `PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in ${BIN_DIR_CANDIDATES.join(', ')} nor via pg_config --bindir; ` +
      'install the PostgreSQL server (Debian: apt-get install postgresql-15) or set ROLEGATE_PG_BINDIR',
    { command: 'initdb' },
  );
}

function missingServerBinaries(dir: string): string[] {
  return ['initdb', 'pg_ctl', 'postgres'].filter((name) => {
    try {
      accessSync(join(dir, name), fsConstants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

export async function startLocalPostgres(options: LocalPostgresOptions = {}): Promise<LocalPostgres> {
  const log = options.log ?? (() => {});
  const authMethod = options.authMethod ?? 'scram-sha-256';
  const binDir = findPostgresBinDir(options.binDir);
  const identity = resolveIdentity();
  const settings = validateSettings(options.settings ?? {});
  const psqlBin = pickPsql(binDir);

  const tmpDir = await mkdtemp(join(tempBase(identity, log), 'rolegate-pg-'));
  const dataDir = join(tmpDir, 'data');
  const socketDir = join(tmpDir, 'sock');
  const logFile = join(tmpDir, 'postgres.log');
  const pwFile = join(tmpDir, 'superuser.pw');
  const superuserPassword = randomBytes(18).toString('base64url');
  log(`local-postgres: bin dir ${binDir}, temp dir ${tmpDir}`);

  const ctx: ClusterContext = { binDir, identity, tmpDir, dataDir, log, children: new Set() };
  // Registered before initdb, so that a signal during start-up also cleans up.
  live.add(ctx);
  updateExitHooks();
  try {
    await mkdir(socketDir, { mode: 0o700 });
    await writeFile(pwFile, `${superuserPassword}\n`, { mode: 0o600 });
    if (identity.osUser !== null) {
      for (const path of [tmpDir, socketDir, pwFile]) await chown(path, identity.osUser.uid, identity.osUser.gid);
    }

    await run(
      join(binDir, 'initdb'),
      ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwFile}`, '--auth-local=trust', `--auth-host=${authMethod}`, '--encoding=UTF8', '--no-locale', '--no-sync'],
      { asOsUser: true, cwd: tmpDir },
      ctx,
    );
    await rm(pwFile, { force: true });

    const confPath = join(dataDir, 'postgresql.conf');
    const initdbConf = await readFile(confPath, 'utf8');
    await writeFile(join(dataDir, 'pg_hba.conf'), hbaConf(authMethod));

    const fixedPort = options.port;
    for (let attempt = 1; ; attempt++) {
      const port = fixedPort ?? (await freeLoopbackPort());
      if (socketPathBytes(socketDir, port) > MAX_SOCKET_PATH_BYTES) {
        throw new LocalPostgresError(`Unix socket path ${socketDir}/.s.PGSQL.${port} is longer than ${MAX_SOCKET_PATH_BYTES} bytes; set TMPDIR to a shorter directory`, {
          command: 'postgres',
        });
      }
      await writeFile(confPath, initdbConf + serverConf(port, socketDir, settings));
      log(`local-postgres: starting on ${HOST}:${port} (socket ${socketDir})`);
      try {
        await run(
          join(binDir, 'pg_ctl'),
          ['start', '-D', dataDir, '-l', logFile, '-w', '-t', String(START_TIMEOUT_S)],
          { asOsUser: true, cwd: tmpDir, timeoutMs: (START_TIMEOUT_S + 15) * 1000 },
          ctx,
        );
      } catch (error) {
        const tail = await logTail(logFile);
        const portTaken = /could not bind|Address already in use/i.test(tail);
        if (portTaken && fixedPort === undefined && attempt < PORT_ATTEMPTS) {
          log(`local-postgres: port ${port} was taken meanwhile, retrying with another`);
          continue;
        }
        const base = error instanceof LocalPostgresError ? error : null;
        throw new LocalPostgresError(
          `PostgreSQL did not start on ${HOST}:${port}: ${base?.message ?? String(error)}\n--- last lines of ${logFile} ---\n${tail}`,
          { command: join(binDir, 'pg_ctl'), exitCode: base?.exitCode ?? null, stderr: base?.stderr ?? '', cause: error },
        );
      }
      return makeCluster(ctx, { port, socketDir, superuserPassword, psqlBin, logFile });
    }
  } catch (error) {
    // pg_ctl may have timed out with the server still coming up: stop it, then remove the temp dir.
    if (ctx.emergencyStopped !== true) emergencyStop(ctx);
    live.delete(ctx);
    updateExitHooks();
    throw error;
  }
}

interface ClusterContext {
  binDir: string;
  identity: Identity;
  tmpDir: string;
  dataDir: string;
  log: (line: string) => void;
  /** Set once the exit/signal cleanup has stopped the server and removed tmpDir. */
  emergencyStopped?: boolean;
  /** Commands in flight (initdb, pg_ctl, psql), ended by the exit/signal cleanup. */
  children: Set<ChildProcess>;
}

function makeCluster(
  ctx: ClusterContext,
  server: { port: number; socketDir: string; superuserPassword: string; psqlBin: string; logFile: string },
): LocalPostgres {
  let stopping: Promise<void> | null = null;
  const { port, socketDir, superuserPassword, psqlBin, logFile } = server;

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (ctx.emergencyStopped === true) return;
      await stopServer(ctx);
      live.delete(ctx);
      updateExitHooks();
      await rm(ctx.tmpDir, { recursive: true, force: true });
      ctx.log(`local-postgres: stopped, removed ${ctx.tmpDir}`);
    })();
    return stopping;
  };

  const psql = async (sql: string, opts: PsqlOptions = {}): Promise<string> => {
    if (stopping !== null) throw new LocalPostgresError('psql called after stop()', { command: psqlBin });
    const user = opts.user ?? SUPERUSER;
    const password = opts.password ?? (user === SUPERUSER ? superuserPassword : undefined);
    // No user and no password: the superuser over the socket (trust in pg_hba.conf).
    const viaSocket = opts.user === undefined && opts.password === undefined;
    const env: Record<string, string> = { PGCONNECT_TIMEOUT: '10', PGPASSFILE: join(ctx.tmpDir, 'no-pgpass') };
    if (password !== undefined) env['PGPASSWORD'] = password;
    const args = [
      '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
      '-h', viaSocket ? socketDir : HOST, '-p', String(port), '-U', user, '-d', opts.database ?? 'postgres',
      // -w: never prompt for a password (no stdin left for it anyway).
      '-w', '-f', '-',
    ];
    const { stdout } = await run(psqlBin, args, { asOsUser: false, input: sql, env, cwd: ctx.tmpDir, timeoutMs: 120_000 }, ctx);
    return stdout.endsWith('\n') ? stdout.slice(0, -1) : stdout;
  };

  return { host: HOST, port, socketDir, dataDir: ctx.dataDir, tmpDir: ctx.tmpDir, superuser: SUPERUSER, superuserPassword, logFile, psql, stop };
}

async function stopServer(ctx: ClusterContext): Promise<void> {
  const pgCtl = join(ctx.binDir, 'pg_ctl');
  try {
    await run(pgCtl, ['stop', '-D', ctx.dataDir, '-m', 'fast', '-w', '-t', String(STOP_TIMEOUT_S)], { asOsUser: true, cwd: ctx.tmpDir, timeoutMs: (STOP_TIMEOUT_S + 15) * 1000 }, ctx);
    return;
  } catch (error) {
    // Exit code 3 of `pg_ctl status`: no server running (already stopped, or crashed).
    const status = await run(pgCtl, ['status', '-D', ctx.dataDir], { asOsUser: true, cwd: ctx.tmpDir }, ctx).then(
      () => 0,
      (statusError: unknown) => (statusError instanceof LocalPostgresError ? statusError.exitCode : null),
    );
    if (status === 3) return;
    ctx.log(`local-postgres: fast stop failed (${error instanceof Error ? error.message : String(error)}), trying immediate`);
    await run(pgCtl, ['stop', '-D', ctx.dataDir, '-m', 'immediate', '-w', '-t', String(STOP_TIMEOUT_S)], { asOsUser: true, cwd: ctx.tmpDir }, ctx);
  }
}

// ---- process exit / signal cleanup (best effort, synchronous) --------------------------------

const live = new Set<ClusterContext>();
const CLEANUP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let hooksInstalled = false;

function emergencyStop(ctx: ClusterContext): void {
  ctx.emergencyStopped = true;
  // runuser passes SIGTERM on to initdb / pg_ctl; initdb then removes its half-made data dir.
  for (const child of ctx.children) child.kill('SIGTERM');
  waitForExitSync(ctx.children, 5_000);
  const [command, args] = commandLine(join(ctx.binDir, 'pg_ctl'), ['stop', '-D', ctx.dataDir, '-m', 'immediate', '-w', '-t', '20'], ctx.identity, true);
  spawnSync(command, args, { cwd: ctx.tmpDir, env: cleanEnv({}), stdio: 'ignore', timeout: 30_000 });
  try {
    rmSync(ctx.tmpDir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // best effort: a leftover temp dir is harmless
  }
}

/** The event loop is blocked here (exit/signal path): poll /proc until the children are zombies or gone. */
function waitForExitSync(children: Set<ChildProcess>, timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  const tick = new Int32Array(new SharedArrayBuffer(4));
  const running = (child: ChildProcess): boolean => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return false;
    try {
      // Field 3 of /proc/<pid>/stat is the state; after the command name in parentheses.
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false;
    }
  };
  while (Date.now() < deadline && [...children].some(running)) Atomics.wait(tick, 0, 0, 50);
}

function cleanupAll(): void {
  for (const ctx of live) emergencyStop(ctx);
  live.clear();
}

function onExit(): void {
  cleanupAll();
}

function onSignal(signal: NodeJS.Signals): void {
  // The program handles this signal: it decides whether the process ends (the
  // 'exit' listener still cleans up when it does). Removing the cluster here
  // would delete the database of a process that carries on.
  if (process.listenerCount(signal) > 1) return;
  cleanupAll();
  removeExitHooks();
  // Nobody else handles this signal: die of it as the default action would have.
  process.kill(process.pid, signal);
}

function updateExitHooks(): void {
  if (live.size > 0 && !hooksInstalled) {
    process.on('exit', onExit);
    for (const signal of CLEANUP_SIGNALS) process.on(signal, onSignal);
    hooksInstalled = true;
  } else if (live.size === 0 && hooksInstalled) {
    removeExitHooks();
  }
}

function removeExitHooks(): void {
  process.off('exit', onExit);
  for (const signal of CLEANUP_SIGNALS) process.off(signal, onSignal);
  hooksInstalled = false;
}

// ---- helpers ----------------------------------------------------------------------------------

function resolveIdentity(): Identity {
  if (process.getuid?.() !== 0) return { osUser: null };
  const ids = spawnSync('id', ['-u', OS_USER], { encoding: 'utf8' });
  const gids = spawnSync('id', ['-g', OS_USER], { encoding: 'utf8' });
  const uid = Number.parseInt(ids.stdout ?? '', 10);
  const gid = Number.parseInt(gids.stdout ?? '', 10);
  if (ids.status !== 0 || gids.status !== 0 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new LocalPostgresError(
      `running as root, and PostgreSQL refuses to run as root, but the OS user '${OS_USER}' does not exist (id -u ${OS_USER}: ${(ids.stderr ?? '').trim()}); ` +
        `create it (the Debian postgresql-15 package does) or run as a non-root user`,
      { command: 'id' },
    );
  }
  const runuser = spawnSync('runuser', ['--help'], { stdio: 'ignore' });
  if (runuser.error !== undefined) {
    throw new LocalPostgresError(`running as root requires runuser (util-linux) to run PostgreSQL as '${OS_USER}': ${runuser.error.message}`, { command: 'runuser' });
  }
  return { osUser: { name: OS_USER, uid, gid } };
}

/** The OS temp dir, unless we are root and the postgres user cannot reach into it (TMPDIR=/root/tmp, say). */
function tempBase(identity: Identity, log: (line: string) => void): string {
  const base = tmpdir();
  if (identity.osUser === null) return base;
  for (let dir = base; ; dir = dirname(dir)) {
    let mode: number;
    try {
      mode = statSync(dir).mode;
    } catch {
      break;
    }
    if ((mode & 0o001) === 0) {
      log(`local-postgres: ${dir} is not searchable by '${OS_USER}', using /tmp instead of ${base}`);
      return '/tmp';
    }
    if (dir === dirname(dir)) break;
  }
  return base;
}

function pickPsql(binDir: string): string {
  try {
    accessSync(join(binDir, 'psql'), fsConstants.X_OK);
    return join(binDir, 'psql');
  } catch {
    return 'psql';
  }
}

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/;

function validateSettings(settings: Record<string, string>): Record<string, string> {
  for (const name of Object.keys(settings)) {
    if (!SETTING_NAME.test(name)) {
      throw new LocalPostgresError(`invalid postgresql.conf setting name ${JSON.stringify(name)}`, { command: 'postgresql.conf' });
    }
  }
  return settings;
}

function quoteConf(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

function serverConf(port: number, socketDir: string, settings: Record<string, string>): string {
  const merged: Record<string, string> = {
    listen_addresses: HOST,
    port: String(port),
    unix_socket_directories: socketDir,
    password_encryption: 'scram-sha-256',
    // Integration tests open many connections (through the proxy and directly).
    max_connections: '300',
    // Throwaway data: durability costs time and buys nothing.
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    ...settings,
  };
  const lines = Object.entries(merged).map(([name, value]) => `${name} = ${quoteConf(value)}`);
  return `\n# --- rolegate local-postgres ---\n${lines.join('\n')}\n`;
}

function hbaConf(authMethod: LocalPostgresAuthMethod): string {
  return [
    '# rolegate local-postgres: superuser over the socket without a password, everything else authenticates.',
    '# TYPE  DATABASE  USER  ADDRESS  METHOD',
    `local   all       ${SUPERUSER}           trust`,
    `local   all       all            ${authMethod}`,
    `host    all       all   ${HOST}/32  ${authMethod}`,
    '',
  ].join('\n');
}

function socketPathBytes(socketDir: string, port: number): number {
  return Buffer.byteLength(`${socketDir}/.s.PGSQL.${port}`);
}

/** A TCP port free on 127.0.0.1 just now (bind :0, release). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (error) => reject(new LocalPostgresError(`could not find a free port on ${HOST}: ${error.message}`, { command: 'listen', cause: error })));
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new LocalPostgresError('listen on port 0 returned no port', { command: 'listen' }))));
    });
  });
}

async function logTail(logFile: string): Promise<string> {
  try {
    const text = await readFile(logFile, 'utf8');
    return text.trimEnd().split('\n').slice(-LOG_TAIL_LINES).join('\n') || '(empty)';
  } catch (error) {
    return `(no log: ${error instanceof Error ? error.message : String(error)})`;
  }
}

/** The environment without PG* variables, which would redirect initdb/pg_ctl/psql elsewhere. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('PG')) env[name] = value;
  }
  return { ...env, ...extra };
}

function commandLine(file: string, args: string[], identity: Identity, asOsUser: boolean): [string, string[]] {
  if (asOsUser && identity.osUser !== null) return ['runuser', ['-u', identity.osUser.name, '--', file, ...args]];
  return [file, args];
}

function run(file: string, args: string[], options: RunOptions, ctx: ClusterContext): Promise<RunResult> {
  const [command, argv] = commandLine(file, args, ctx.identity, options.asOsUser);
  const shown = [file, ...args].join(' ');
  ctx.log(`local-postgres: $ ${shown}`);
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, {
      cwd: options.cwd,
      env: cleanEnv(options.env ?? {}),
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs,
    });
    ctx.children.add(child);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.stdin.on('error', () => {}); // EPIPE when the command exits before reading its input
    child.stdin.end(options.input ?? '');
    child.once('error', (error) => {
      ctx.children.delete(child);
      reject(new LocalPostgresError(`could not run ${command === file ? file : `${command} (for ${file})`}: ${error.message}`, { command: shown, cause: error }));
    });
    child.once('close', (code, signal) => {
      ctx.children.delete(child);
      const out = Buffer.concat(stdout).toString('utf8');
      const err = Buffer.concat(stderr).toString('utf8');
      if (code === 0) {
        resolve({ stdout: out, stderr: err });
        return;
      }
      const how = signal !== null ? `was killed by ${signal}${options.timeoutMs !== undefined ? ` (timeout ${options.timeoutMs} ms?)` : ''}` : `exited with code ${code}`;
      const errText = err.trim();
      reject(new LocalPostgresError(`${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown} ${how}${errText === '' ? '' : `:\n${errText}`}`, {
        command: shown,
        exitCode: code,
        stderr: err,
      }));
    });
  });
}
