// The factories that turn the validated audit: config section (AuditConfig,
// owned by config/config.ts; YAML keys in docs/audit.md) into the main
// thread's AuditHub and a worker's WorkerAuditor.

import type { AuditConfig } from '../config/config.ts';
import { AuditHub, type SendToWorker } from './main-side.ts';
import { Auditor } from './auditor.ts';
import { FileSink, HttpSink, StdoutSink, type AuditSink } from './sinks.ts';
import { setActiveJournal } from './crash-journal.ts';
import { WorkerAuditor, type AuditControlMessage, type AuditHealth, type AuditPost } from './worker-side.ts';

/**
 * The bound on each of a record's client-made lists, tables and bound
 * parameters, and with audit.input on also its input (prepareRecord): half
 * (a third with input) of what the smallest queue a record passes
 * through — the worker's buffer, the sink's queue — holds besides the longest
 * SQL text (6 × max_sql_bytes when every byte needs an escape) and 4 KiB for
 * the other fields; at most 1 MiB. (A full input's own statement.sql is cut
 * to max_sql_bytes too, and counted within the input's bound.) A Bind carries up to 32 767 values and a
 * long statement names any number of tables: unbounded, one record could
 * outgrow every queue and be dropped — in fail-closed mode, a statement run
 * without its record. At least ~6 KiB (the queues' minimum is 8 × max_sql_bytes, at least 64 KiB).
 */
export function auditListBudget(config: AuditConfig): number {
  const sinkBytes = config.sink === 'stdout' ? config.stdout.maxQueuedBytes : config.sink === 'file' ? (config.file?.maxQueuedBytes ?? 0) : (config.http?.maxQueuedBytes ?? 0);
  const smallest = Math.min(config.worker.bufferBytes, sinkBytes);
  const lists = (config.input ?? 'off') === 'off' ? 2 : 3;
  return Math.min(1024 * 1024, Math.floor((smallest - 6 * config.maxSqlBytes - 4096) / lists));
}

/** Open the configured sink (the file is opened now: a bad path fails start-up with RG_AUDIT_SINK). */
export async function openAuditSink(config: AuditConfig): Promise<AuditSink> {
  switch (config.sink) {
    case 'stdout':
      return new StdoutSink(config.stdout);
    case 'file': {
      if (config.file === null) throw new Error('audit.file is required for sink: file');
      return FileSink.open({ ...config.file });
    }
    case 'http': {
      if (config.http === null) throw new Error('audit.http is required for sink: http');
      return new HttpSink({ ...config.http, headers: { ...config.http.headers }, keepRejected: config.mode === 'fail-closed' });
    }
    default: {
      const unreachable: never = config.sink;
      return unreachable;
    }
  }
}

/** Main thread: sink + Auditor + AuditHub. */
export async function startMainAudit(
  config: AuditConfig,
  broadcast: (msg: AuditControlMessage) => void,
  sendTo: SendToWorker,
  onHealthChange?: (healthy: boolean, lastError: string | null) => void,
): Promise<AuditHub> {
  const sink = await openAuditSink(config);
  const auditor = new Auditor(sink, { mode: config.mode, maxSqlBytes: config.maxSqlBytes, parameters: config.parameters, maxParameterBytes: config.maxParameterBytes, maxListBytes: auditListBudget(config), input: config.input ?? 'off' });
  // Each worker's crash journal holds as many bytes as the worker may hold unposted.
  return new AuditHub(auditor, broadcast, sendTo, onHealthChange, { journalBytes: config.worker.bufferBytes });
}

/**
 * Worker thread: the session-facing recorder; call start() once, stop() before
 * the worker exits. `journal`: the crash journal the main thread allocated
 * (AuditHub.journalFor); it becomes the one this thread's statement trackers
 * report to.
 */
export function createWorkerAuditor(config: AuditConfig, workerId: number, post: AuditPost, initialHealth: AuditHealth, journal: SharedArrayBuffer | null = null): WorkerAuditor {
  const auditor = new WorkerAuditor(
    {
      workerId,
      mode: config.mode,
      maxSqlBytes: config.maxSqlBytes,
      parameters: config.parameters,
      maxParameterBytes: config.maxParameterBytes,
      maxListBytes: auditListBudget(config),
      input: config.input ?? 'off',
      bufferRecords: config.worker.bufferRecords,
      bufferBytes: config.worker.bufferBytes,
      batchRecords: config.worker.batchRecords,
      flushIntervalMs: config.worker.flushIntervalMs,
      journal,
    },
    post,
    initialHealth,
  );
  setActiveJournal(auditor.journal);
  return auditor;
}
