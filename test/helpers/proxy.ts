// Starts the real rolegate CLI as a child process (as users run it) and waits
// for its "listening" log line.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO, 'src/cli/main.ts');

export interface RunningProxy {
  port: number;
  child: ChildProcess;
  configFile: string;
  /** Every JSON log line so far, parsed. */
  logs: Array<Record<string, unknown>>;
  stderr: () => string;
  /** Send a signal and resolve with the exit code (SIGKILL after timeoutMs). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
  /** Resolves with the first log line matching `pred` (rejects after timeoutMs). */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export async function startProxy(configYaml: string, options: { args?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<RunningProxy> {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-test-'));
  const configFile = path.join(dir, 'rolegate.yaml');
  writeFileSync(configFile, configYaml, { mode: 0o600 });
  const child = spawn(process.execPath, [CLI, 'start', '--config', configFile, '--log-level', 'debug', ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];
  let stderr = '';
  let buffered = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        parsed = { msg: line, unparsed: true };
      }
      logs.push(parsed);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i];
        if (w && w.pred(parsed)) {
          waiters.splice(i, 1);
          w.resolve(parsed);
        }
      }
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  const waitForLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms; stderr: ${stderr}\nlogs: ${JSON.stringify(logs.slice(-20))}`)), timeoutMs);
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`rolegate exited with code ${code} before the expected log line; stderr: ${stderr}\nlogs: ${JSON.stringify(logs.slice(-20))}`));
      });
    });
  };

  const listening = await waitForLog((l) => l['msg'] === 'listening');
  return {
    port: Number(listening['port']),
    child,
    configFile,
    logs,
    stderr: () => stderr,
    waitForLog,
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
