// Process plumbing for bench/run.ts: children that are always stopped (also on
// a failure or Ctrl-C), free loopback ports, waiting for listeners, and the
// /proc readings the report is made of (CPU time, RSS, open file limits).

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat utime/stime (sysconf(_SC_CLK_TCK); 100 on Linux x86-64 and arm64). */
export const CLOCK_TICKS_PER_S = 100;

const tracked = new Set<number>();
const tempDirs = new Set<string>();
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    killTracked();
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** A temp dir removed when this process exits (unless forgotten first). */
export function removeOnExit(dir: string): void {
  tempDirs.add(dir);
  installHooks();
}

export function forgetTempDir(dir: string): void {
  tempDirs.delete(dir);
}

/** Every tracked pid gets SIGTERM when this process exits, however it exits. */
export function trackPid(pid: number): void {
  tracked.add(pid);
  installHooks();
}

export function untrackPid(pid: number): void {
  tracked.delete(pid);
}

/** Synchronous: usable from 'exit' and signal handlers. */
export function killTracked(): void {
  for (const pid of tracked) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  tracked.clear();
}

export interface Spawned {
  child: ChildProcess;
  pid: number;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Spawns a long-running child with captured output (last 256 KiB of each stream). */
export function spawnTracked(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Spawned {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env, cwd: options.cwd });
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  const pid = child.pid;
  trackPid(pid);
  let out = '';
  let err = '';
  const keep = (s: string): string => (s.length > 262_144 ? s.slice(-262_144) : s);
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => (out = keep(out + chunk)));
  child.stderr?.on('data', (chunk: string) => (err = keep(err + chunk)));
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      untrackPid(pid);
      resolve(code);
    }),
  );
  child.once('error', () => untrackPid(pid));
  return {
    child,
    pid,
    stdout: () => out,
    stderr: () => err,
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

export { freeLoopbackPort } from '../../src/cli/local-postgres.ts';

/** Listening TCP sockets on 127.0.0.1:port, from /proc/net/tcp (one per reusePort listener). */
export function listenerCount(port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const local = `0100007F:${hexPort}`;
  let count = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    // fields[1] = local address, fields[3] = state; 0A = TCP_LISTEN.
    if (fields[1] === local && fields[3] === '0A') count++;
  }
  return count;
}

export async function waitForListeners(port: number, count: number, timeoutMs: number, alive: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (listenerCount(port) < count) {
    if (!alive()) throw new Error(`${what} exited before listening on 127.0.0.1:${port}`);
    if (Date.now() > deadline) throw new Error(`${what}: no ${count} listener(s) on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** utime + stime of a process (all its threads), in µs; NaN when it is gone. */
export function cpuMicros(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1_000_000) / CLOCK_TICKS_PER_S;
  } catch {
    return Number.NaN;
  }
}

/**
 * The whole machine's CPU time so far (first line of /proc/stat), in µs:
 * `busy` is everything but idle and iowait (user, nice, system, irq, softirq,
 * steal), `total` includes them. Differences over a run give how saturated
 * the machine was and what one transaction cost all processes together.
 */
export function machineCpuMicros(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = ticks;
  const toUs = (t: number): number => (t * 1_000_000) / CLOCK_TICKS_PER_S;
  return { busy: toUs(user + nice + system + irq + softirq + steal), total: toUs(user + nice + system + idle + iowait + irq + softirq + steal) };
}

/** VmRSS of a process in bytes; NaN when it is gone. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** Open-file limits (soft, hard) of a process, from /proc/<pid>/limits. */
export function openFileLimits(pid: number | 'self' = 'self'): { soft: number; hard: number } {
  const text = readFileSync(`/proc/${pid}/limits`, 'utf8');
  const m = /Max open files\s+(\S+)\s+(\S+)/.exec(text);
  const parse = (s: string | undefined): number => (s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s));
  return { soft: parse(m?.[1]), hard: parse(m?.[2]) };
}

/** Direct children of a process (Linux ≥ 3.5 with /proc/<pid>/task/<tid>/children). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    return [];
  }
}
