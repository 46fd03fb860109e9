// Messages between the supervisor (main thread) and the worker threads.
// Plain objects only: errors cross as {code, message}, never as classes.

import type { Config } from '../config/config.ts';
import type { AuditBatchMessage, AuditControlMessage } from '../audit/worker-side.ts';
import type { MetricsSnapshot } from '../metrics/worker-counters.ts';
import type { PolicyBundle } from '../policy/engine.ts';

export interface WorkerData {
  workerId: number;
  config: Config;
  port: number;
  mockSeed: Uint8Array;
  policy: PolicyBundle | null;
  /** The candidate policy deciding beside it (policy.shadow), or null. */
  shadow: PolicyBundle | null;
  logLevel: string;
  maxClientsPerWorker: number;
  /** Start instant of an injected clock (config time.fixed), else null. */
  fixedTimeMs: number | null;
  /** The audit sink's health when this worker starts (fail-closed needs it from the first statement). */
  auditHealthy: boolean;
  /** The audit crash journal the main thread reads if this worker dies (audit/crash-journal.ts); null with audit off. */
  auditJournal?: SharedArrayBuffer | null;
  /** The process's budget counter for incomplete client messages (protocol/buffer-budget.ts), shared by every worker. */
  bufferBudget: SharedArrayBuffer;
}

export type MainToWorker =
  | { type: 'cancel'; processId: number; secretKey: number }
  | { type: 'drain' }
  | { type: 'terminate' }
  | { type: 'policy'; policy: PolicyBundle | null; shadow: PolicyBundle | null }
  | { type: 'stats' }
  /** A reloaded config: new sessions use its credentials, TLS material and auth settings. */
  | { type: 'config'; config: Config }
  /** Fault injection for the restart test; honoured only with ROLEGATE_FAULT_INJECTION=1. */
  | { type: 'crash' }
  | AuditControlMessage;

export type WorkerToMain =
  | { type: 'listening'; workerId: number; port: number }
  | { type: 'fatal'; workerId: number; message: string }
  | { type: 'cancel'; owner: number; processId: number; secretKey: number }
  | { type: 'drained'; workerId: number }
  | { type: 'policy-applied'; workerId: number; revision: string }
  | { type: 'policy-failed'; workerId: number; message: string }
  | { type: 'stats'; workerId: number; sessions: number; heapUsedBytes: number }
  | { type: 'config-applied'; workerId: number }
  | AuditBatchMessage
  | MetricsSnapshot;
