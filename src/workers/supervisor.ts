// The main thread: starts N worker threads on one reusePort address, restarts a
// crashed worker, routes CancelRequests between workers, pushes policy
// revisions, and drains on shutdown. It never touches a client socket.

import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { BufferBudget } from '../protocol/buffer-budget.ts';
import { RolegateError } from '../errors.ts';
import type { AuditHub } from '../audit/main-side.ts';
import type { MetricsRegistry } from '../metrics/registry.ts';
import type { PolicyBundle } from '../policy/engine.ts';
import type { MainToWorker, WorkerData, WorkerToMain } from './messages.ts';

export type WorkerStats = Extract<WorkerToMain, { type: 'stats' }>;

const WORKER_URL = new URL('./worker.ts', import.meta.url);

interface Slot {
  id: number;
  worker: Worker | null;
  listening: boolean;
  restarts: number[];
}

export interface SupervisorOptions {
  config: Config;
  log: Logger;
  policy: PolicyBundle | null;
  /** The candidate policy deciding beside it (policy.shadow), or null. */
  shadow?: PolicyBundle | null;
  logLevel: string;
  fixedTimeMs: number | null;
  metrics: MetricsRegistry;
  /** The main thread's audit (null: audit off). Set before start(). */
  audit: AuditHub | null;
}

export class Supervisor {
  port = 0;
  private options: SupervisorOptions;
  private readonly slots: Slot[] = [];
  private readonly mockSeed = randomBytes(32);
  private policy: PolicyBundle | null;
  private shadow: PolicyBundle | null;
  private stopping = false;
  private drainedWaiters = new Map<number, () => void>();
  /** One budget counter for every worker's incomplete client messages (a restarted worker shares it too). */
  private readonly bufferBudget = BufferBudget.shared();
  private statsCollector: ((msg: WorkerStats) => void) | null = null;

  constructor(options: SupervisorOptions) {
    this.options = options;
    this.policy = options.policy;
    this.shadow = options.shadow ?? null;
  }

  get workerCount(): number {
    return this.slots.length;
  }

  /** Start every worker; resolves once all listen (on the same port). */
  async start(): Promise<number> {
    const { config } = this.options;
    for (let i = 0; i < config.workers; i++) this.slots.push({ id: i, worker: null, listening: false, restarts: [] });
    // The first worker binds the configured port (possibly 0 = any); the rest join it.
    this.port = await this.spawn(this.slots[0] as Slot, config.listen.port);
    await Promise.all(this.slots.slice(1).map((slot) => this.spawn(slot, this.port)));
    this.options.log.info({ host: config.listen.host, port: this.port, workers: config.workers, policy: this.policy?.revision ?? 'static' }, 'listening');
    return this.port;
  }

  private spawn(slot: Slot, port: number): Promise<number> {
    const { config } = this.options;
    const maxClientsPerWorker = Math.max(1, Math.ceil(config.limits.maxClientConnections / config.workers));
    const data: WorkerData = {
      workerId: slot.id,
      config,
      port,
      mockSeed: new Uint8Array(this.mockSeed),
      policy: this.policy,
      shadow: this.shadow,
      logLevel: this.options.logLevel,
      maxClientsPerWorker,
      fixedTimeMs: this.options.fixedTimeMs,
      auditHealthy: this.options.audit?.sinkHealthy ?? true,
      auditJournal: this.options.audit?.journalFor(slot.id, maxClientsPerWorker) ?? null,
      bufferBudget: this.bufferBudget,
    };
    const worker = new Worker(WORKER_URL, { workerData: data, name: `rolegate-worker-${slot.id}`, resourceLimits: { maxYoungGenerationSizeMb: this.options.config.limits.workerYoungGenerationMb } });
    slot.worker = worker;
    slot.listening = false;
    return new Promise((resolve, reject) => {
      let started = false;
      worker.on('message', (msg: WorkerToMain) => {
        if (msg.type === 'listening' && !started) {
          started = true;
          slot.listening = true;
          resolve(msg.port);
          return;
        }
        if (msg.type === 'fatal' && !started) {
          started = true;
          reject(new RolegateError('RG_INTERNAL', msg.message));
          void worker.terminate();
          return;
        }
        this.onWorkerMessage(msg);
      });
      worker.on('error', (err: Error) => {
        this.options.log.error({ worker: slot.id, err: err.message, stack: err.stack }, 'worker crashed');
        if (!started) {
          started = true;
          reject(new RolegateError('RG_INTERNAL', `worker ${slot.id} failed to start: ${err.message}`));
        }
      });
      worker.on('exit', (code) => {
        if (slot.worker !== worker) return;
        slot.worker = null;
        // Its posted batches came before this event. After a crash its journal
        // still holds the lines it had not posted, and its open sessions name
        // the records never made: the hub writes both (nothing after a stop).
        const loss = this.options.audit?.workerExited(slot.id, this.stopping ? 'worker stopped' : `worker exited (code ${code})`);
        if (loss !== undefined && (loss.recovered > 0 || loss.sessions > 0 || loss.dropped > 0)) {
          this.options.log.warn({ worker: slot.id, recoveredRecords: loss.recovered, lostRecords: loss.lost, droppedRecords: loss.dropped, sessionsLost: loss.sessions }, 'audit records recovered after worker exit');
        }
        this.options.metrics.workerExited(slot.id);
        slot.listening = false;
        this.drainedWaiters.get(slot.id)?.();
        if (this.stopping || !started) return;
        this.restart(slot, code);
      });
    });
  }

  private restart(slot: Slot, code: number): void {
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => now - t < 60_000);
    slot.restarts.push(now);
    // Back off when a worker keeps crashing, so a bad state cannot spin the CPU.
    const delayMs = Math.min(30_000, 100 * 2 ** (slot.restarts.length - 1));
    this.options.log.warn({ worker: slot.id, exitCode: code, restartInMs: delayMs }, 'worker exited; restarting');
    this.options.metrics.workerRestarted(slot.id);
    setTimeout(() => {
      if (this.stopping) return;
      this.spawn(slot, this.port).then(
        () => this.options.log.info({ worker: slot.id }, 'worker restarted'),
        (err: unknown) => this.options.log.error({ worker: slot.id, err: String(err) }, 'worker restart failed'),
      );
    }, delayMs).unref();
  }

  private onWorkerMessage(msg: WorkerToMain): void {
    switch (msg.type) {
      case 'cancel': {
        const target = this.slots[msg.owner]?.worker;
        if (target) this.send(target, { type: 'cancel', processId: msg.processId, secretKey: msg.secretKey });
        return;
      }
      case 'drained':
        this.drainedWaiters.get(msg.workerId)?.();
        return;
      case 'policy-applied':
        this.options.log.info({ worker: msg.workerId, revision: msg.revision }, 'policy applied');
        return;
      case 'policy-failed':
        this.options.log.error({ worker: msg.workerId, err: msg.message }, 'policy apply failed');
        return;
      case 'stats':
        this.statsCollector?.(msg);
        return;
      case 'audit':
        this.options.audit?.accept(msg);
        return;
      case 'metrics':
        this.options.metrics.acceptSnapshot(msg);
        return;
      case 'config-applied':
        this.options.log.debug({ worker: msg.workerId }, 'config applied');
        return;
      case 'listening':
      case 'fatal':
        return;
      default: {
        const unreachable: never = msg;
        this.options.log.warn({ msg: unreachable }, 'unknown worker message');
      }
    }
  }

  private send(worker: Worker, msg: MainToWorker, transfer?: ArrayBuffer[]): void {
    worker.postMessage(msg, transfer);
  }

  /** To every live worker (audit health changes). */
  broadcast(msg: MainToWorker): void {
    for (const slot of this.slots) if (slot.worker) this.send(slot.worker, msg);
  }

  /** To one worker (audit acknowledgements and returned chunk buffers, moved by `transfer`). */
  sendTo(workerId: number, msg: MainToWorker, transfer?: ArrayBuffer[]): void {
    const worker = this.slots[workerId]?.worker;
    if (worker) this.send(worker, msg, transfer);
  }

  setAudit(audit: AuditHub | null): void {
    this.options = { ...this.options, audit };
  }

  /** Hand a reloaded config to every worker (and to workers started later, time.fixed included). */
  setConfig(config: Config): void {
    this.options = { ...this.options, config, fixedTimeMs: config.time.fixedMs };
    for (const slot of this.slots) if (slot.worker) this.send(slot.worker, { type: 'config', config });
  }

  /** Fault injection (tests): make one worker throw, as a bug would. */
  crashWorker(id: number): void {
    const worker = this.slots[id]?.worker;
    if (worker) this.send(worker, { type: 'crash' });
  }

  /**
   * Push a new policy revision (already validated by the caller), and the
   * shadow candidate beside it, to every worker; resolves when each has
   * swapped them in (or failed to).
   */
  setPolicy(policy: PolicyBundle | null, shadow: PolicyBundle | null = null): Promise<Array<{ workerId: number; ok: boolean; message: string }>> {
    this.policy = policy;
    this.shadow = shadow;
    const live = this.slots.filter((s) => s.worker !== null);
    return Promise.all(
      live.map(
        (slot) =>
          new Promise<{ workerId: number; ok: boolean; message: string }>((resolve) => {
            const worker = slot.worker;
            if (worker === null) return resolve({ workerId: slot.id, ok: false, message: 'worker gone' });
            const onMessage = (msg: WorkerToMain): void => {
              if (msg.type === 'policy-applied' || msg.type === 'policy-failed') {
                worker.off('message', onMessage);
                clearTimeout(timer);
                resolve({ workerId: slot.id, ok: msg.type === 'policy-applied', message: msg.type === 'policy-failed' ? msg.message : msg.revision });
              }
            };
            const timer = setTimeout(() => {
              worker.off('message', onMessage);
              resolve({ workerId: slot.id, ok: false, message: 'no answer within 10 s' });
            }, 10_000);
            worker.on('message', onMessage);
            this.send(worker, { type: 'policy', policy, shadow });
          }),
      ),
    );
  }

  /**
   * Graceful stop: workers stop accepting and end each session at its
   * transaction boundary (57P01: idle ones at once, the others at their next
   * idle ReadyForQuery); sessions still inside a transaction after
   * drainTimeoutMs receive 57P01 and are closed mid-transaction.
   */
  async shutdown(drainTimeoutMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const live = this.slots.filter((s) => s.worker !== null);
    this.options.log.info({ drainTimeoutMs }, 'draining');
    const drained = live.map(
      (slot) =>
        new Promise<void>((resolve) => {
          this.drainedWaiters.set(slot.id, resolve);
        }),
    );
    for (const slot of live) if (slot.worker) this.send(slot.worker, { type: 'drain' });
    const timedOut = await Promise.race([Promise.all(drained).then(() => false), delay(drainTimeoutMs).then(() => true)]);
    if (timedOut) {
      this.options.log.warn({}, 'drain timeout: terminating remaining sessions');
      const terminated = live.map(
        (slot) =>
          new Promise<void>((resolve) => {
            this.drainedWaiters.set(slot.id, resolve);
          }),
      );
      for (const slot of live) if (slot.worker) this.send(slot.worker, { type: 'terminate' });
      await Promise.race([Promise.all(terminated), delay(2000)]);
      // Give the 57P01 messages a moment to leave the sockets.
      await delay(100);
    }
    await Promise.all(live.flatMap((slot) => (slot.worker === null ? [] : [slot.worker.terminate()])));
    // Workers sent their last audit batches before 'drained'; write them out.
    await this.options.audit?.close();
    this.options.log.info({}, 'stopped');
  }

  /** Per-worker session counts and heap (for tests, admin and the idle-client bench). */
  async stats(): Promise<WorkerStats[]> {
    const live = this.slots.filter((s) => s.worker !== null);
    const results: WorkerStats[] = [];
    await new Promise<void>((resolve) => {
      if (live.length === 0) return resolve();
      this.statsCollector = (msg) => {
        results.push(msg);
        if (results.length === live.length) resolve();
      };
      for (const slot of live) if (slot.worker) this.send(slot.worker, { type: 'stats' });
      setTimeout(resolve, 2000).unref();
    });
    this.statsCollector = null;
    return results;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
