// The exit/signal cleanup of startLocalPostgres, in child processes that start
// a real cluster: a signal the program handles itself is the program's (SIGHUP
// is a reload for `rolegate demo`), so the cluster stays until stop() or exit;
// a signal nobody else handles still stops the cluster, removes its files and
// kills the process as the default action would.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';

const MODULE = pathToFileURL(new URL('../../src/cli/local-postgres.ts', import.meta.url).pathname).href;

interface Child {
  /** Lines the child printed, parsed. */
  events: Array<Record<string, unknown>>;
  next(pred: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  kill(signal: NodeJS.Signals): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `body` (ES module code; `cluster` and `say(obj)` in scope) after a cluster started. */
function child(body: string): Child {
  const code = `
import { startLocalPostgres } from ${JSON.stringify(MODULE)};
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\\n');
const cluster = await startLocalPostgres();
${body}
say({ ready: true, tmpDir: cluster.tmpDir });
setInterval(() => {}, 1000);
`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }> = [];
  let stderr = '';
  let buffered = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const e = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      buffered = buffered.slice(nl + 1);
      events.push(e);
      for (const w of waiters.splice(0)) {
        if (w.pred(e)) w.resolve(e);
        else waiters.push(w);
      }
    }
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 90_000);
  void exited.then(() => clearTimeout(timer));
  return {
    events,
    next: (pred) => {
      const found = events.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        waiters.push({ pred, resolve });
        void exited.then((end) => reject(new Error(`child exited (${JSON.stringify(end)}) first; stderr:\n${stderr}`)));
      });
    },
    kill: (signal) => proc.kill(signal),
    exited,
  };
}

describe('local PostgreSQL and signals', { timeout: 120_000 }, () => {
  test('a SIGHUP the program handles leaves the cluster running; an unhandled SIGTERM removes it and kills the process', async () => {
    const c = child(`process.on('SIGHUP', () => cluster.psql('SELECT 40 + 2').then((n) => say({ reloaded: n }), (e) => say({ reloaded: String(e) })));`);
    const ready = await c.next((e) => e['ready'] === true);
    const tmpDir = String(ready['tmpDir']);
    assert.ok(existsSync(tmpDir));
    c.kill('SIGHUP');
    assert.equal((await c.next((e) => 'reloaded' in e))['reloaded'], '42', 'the database answers after SIGHUP');
    assert.ok(existsSync(tmpDir), 'its files stay');
    c.kill('SIGTERM');
    assert.deepEqual(await c.exited, { code: null, signal: 'SIGTERM' }, 'dies of the signal, as without a listener');
    assert.equal(existsSync(tmpDir), false, 'the cluster was removed first');
  });

  test('a SIGHUP nobody handles removes the cluster and kills the process', async () => {
    const c = child('');
    const tmpDir = String((await c.next((e) => e['ready'] === true))['tmpDir']);
    c.kill('SIGHUP');
    assert.deepEqual(await c.exited, { code: null, signal: 'SIGHUP' });
    assert.equal(existsSync(tmpDir), false);
  });

  test('a SIGTERM the program handles: the database still answers in the handler, and exit removes it', async () => {
    const c = child(`process.on('SIGTERM', () => cluster.psql('SELECT 1').then((n) => { say({ draining: n }); process.exit(0); }));`);
    const tmpDir = String((await c.next((e) => e['ready'] === true))['tmpDir']);
    c.kill('SIGTERM');
    assert.equal((await c.next((e) => 'draining' in e))['draining'], '1');
    assert.deepEqual(await c.exited, { code: 0, signal: null });
    assert.equal(existsSync(tmpDir), false, "the 'exit' cleanup removed the cluster");
  });
});
