// The Auditor: the one owner of the audit sink, in the main thread. It takes
// records made in the main thread (record()) and the workers' batches of
// finished lines (writeChunk(), via main-side.ts), and answers the fail-closed
// question. Sessions in workers talk to a WorkerAuditor (worker-side.ts), which
// implements the same AuditRecorder contract.
//
// Modes (audit.mode):
//   fail-closed  a statement (and a connection) is refused with
//                RG_AUDIT_UNAVAILABLE while the sink is unhealthy: nothing runs
//                that cannot be audited. Default for the file sink.
//   best-effort  statements go on; records that cannot be written are dropped
//                and counted (rolegate_audit_records_dropped_total). Default for
//                stdout and http.

import type { AuditInputMode, AuditMode, ParameterMode } from '../config/config.ts';
import type { AuditSink, AuditSinkStats, ChunkLease } from './sinks.ts';
import { formatRecord, prepareRecord, type AuditRecord, type PrepareOptions } from './record.ts';


export interface AuditorOptions {
  mode: AuditMode;
  /** SQL text beyond this many UTF-8 bytes is cut (sql_truncated: true). */
  maxSqlBytes: number;
  parameters: ParameterMode;
  /** parameters: full — each value is cut to this many bytes (text) or half as many (hex). */
  maxParameterBytes?: number;
  /** A record's table and parameter lists are each cut to this many bytes of JSON, and a larger input left out (auditListBudget() in setup.ts); default: no bound. */
  maxListBytes?: number;
  /** audit.input; default off. */
  input?: AuditInputMode;
}

/** What a session needs, in either thread. Implementations never throw and never block. */
export interface AuditRecorder {
  /** false: audit is off; do not build records at all. */
  readonly enabled: boolean;
  readonly parameters: ParameterMode;
  readonly maxParameterBytes: number;
  /** audit.input: what records hold of the policy input (absent: off). */
  readonly input?: AuditInputMode;
  /** audit.max_sql_bytes (a full input's statement.sql is cut to it like `sql`). */
  readonly maxSqlBytes?: number;
  /** false only in fail-closed mode while records cannot be written: refuse with RG_AUDIT_UNAVAILABLE. */
  canProceed(): boolean;
  /** Prepare (truncate), format and queue one record. The record object is the caller's and is modified. */
  record(record: AuditRecord): void;
}

/** Audit off. */
export const NO_AUDIT: AuditRecorder = Object.freeze({
  enabled: false,
  parameters: 'off',
  maxParameterBytes: 0,
  input: 'off',
  canProceed: () => true,
  record: () => {},
});

export interface AuditorStats extends AuditSinkStats {
  healthy: boolean;
  mode: AuditMode;
  /** Lines the workers dropped before they reached the main thread (their buffers were full). */
  workerDropped: number;
}

export class Auditor implements AuditRecorder {
  readonly enabled = true;
  readonly sink: AuditSink;
  readonly mode: AuditMode;
  readonly parameters: ParameterMode;
  readonly maxParameterBytes: number;
  readonly input: AuditInputMode;
  readonly maxSqlBytes: number;
  private readonly prepare: PrepareOptions;
  private workerDropped = 0;
  private formatFailures = 0;

  constructor(sink: AuditSink, options: AuditorOptions) {
    this.sink = sink;
    this.mode = options.mode;
    this.parameters = options.parameters;
    this.prepare = { maxSqlBytes: options.maxSqlBytes, maxListBytes: options.maxListBytes };
    this.maxParameterBytes = options.maxParameterBytes ?? 256;
    this.input = options.input ?? 'off';
    this.maxSqlBytes = options.maxSqlBytes;
  }

  canProceed(): boolean {
    return this.mode === 'best-effort' || this.sink.healthy;
  }

  record(record: AuditRecord): void {
    let line: string;
    try {
      line = formatRecord(prepareRecord(record, this.prepare));
    } catch {
      // A record that cannot be serialised (a bug upstream of here) is a drop, not a crash.
      this.formatFailures++;
      return;
    }
    this.sink.write(line);
  }

  /** A worker's batch: `records` finished lines as UTF-8. The sink counts what it cannot take as dropped and releases the lease when done with the bytes. */
  writeChunk(data: Uint8Array, records: number, lease: ChunkLease | null = null): boolean {
    return this.sink.writeChunk(data, records, lease);
  }

  /** Count records a worker dropped before they could be sent here. */
  addWorkerDropped(n: number): void {
    if (n > 0) this.workerDropped += n;
  }

  onHealthChange(listener: (healthy: boolean) => void): void {
    this.sink.onHealthChange(listener);
  }

  stats(): AuditorStats {
    const s = this.sink.stats();
    return {
      written: s.written,
      dropped: s.dropped + this.workerDropped + this.formatFailures,
      queued: s.queued,
      failures: s.failures,
      healthy: this.sink.healthy,
      mode: this.mode,
      workerDropped: this.workerDropped,
    };
  }

  flush(): Promise<void> {
    return this.sink.flush();
  }

  close(): Promise<void> {
    return this.sink.close();
  }
}
