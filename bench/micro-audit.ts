// Micro-benchmark of one audit record on the worker side (src/audit/): what
// `audit:` adds per statement before the main thread writes the bytes.
//   build      the statement record object, as the session makes it (newRecord;
//              a simple Query and an Execute of a prepared statement in turn)
//   format     prepareRecord + formatRecord (one JSON line, line-safe)
//   track      StatementTracker: expect, CommandComplete, ReadyForQuery
//   worker     WorkerAuditor.record: format + UTF-8 into the batch chunk, batches posted
//              (to a no-op that acknowledges at once)
//   all        build + track + worker: a statement's whole worker-side cost
// µs per record (median of --runs interleaved runs).
//   node bench/micro-audit.ts [--runs N]

import { formatRecord, newRecord, prepareRecord, type AuditRecord } from '../src/audit/record.ts';
import { StatementTracker } from '../src/audit/statement-tracker.ts';
import { WorkerAuditor } from '../src/audit/worker-side.ts';
import { fmtUs, measureCases, printTable } from './lib/micro.ts';
import { numberArg } from './lib/args.ts';

const identity = { name: 'reporting-svc', method: 'scram-sha-256' };
const client = { addr: '127.0.0.1', port: 50312 };
const tables = ['pgbench_accounts'];
let aid = 0;

function nextSql(): string {
  return `SELECT abalance FROM pgbench_accounts WHERE aid = ${(aid = (aid + 7919) % 500_000)}`;
}

let variant = 0;

const PREPARED = 'SELECT abalance FROM pgbench_accounts WHERE aid = $1;';

/** As the session builds it (newRecord): a simple Query with its own literal, and an Execute of a prepared statement, in turn. */
function build(): AuditRecord {
  const extended = (variant++ & 1) === 1;
  return newRecord('statement', Date.now(), variant, 'q1x-4f', 0, identity, client, 'app', 'app_reader', 'allow', 'reader-select', 'app_reader may read application tables', 'sha256:3f2a9c1d7e', 2, extended ? 'extended' : 'simple', extended ? 'P_0' : undefined, extended ? PREPARED : nextSql(), 'SELECT', tables, undefined);
}

const prepare = { maxSqlBytes: 4096 };
const auditor: WorkerAuditor = new WorkerAuditor(
  { workerId: 0, mode: 'best-effort', maxSqlBytes: 4096, parameters: 'off', bufferRecords: 10_000, bufferBytes: 16 << 20, batchRecords: 256, flushIntervalMs: 1_000_000 },
  (msg) => auditor.onMessage({ type: 'audit-ack', records: msg.records }),
);
const tracker = new StatementTracker<AuditRecord>((r) => auditor.record(r));
let group = 0;

const cases = new Map<string, () => unknown>([
  ['build', () => build()],
  ['format', () => formatRecord(prepareRecord(build(), prepare))],
  ['track', () => {
    const t = new StatementTracker<AuditRecord>(() => {});
    t.expect(build(), 0);
    t.onCommandComplete(1);
    t.onReadyForQuery();
  }],
  ['worker', () => auditor.record(build())],
  ['all', () => {
    tracker.expect(build(), group++);
    tracker.onCommandComplete(1);
    tracker.onReadyForQuery();
  }],
]);
const runs = numberArg('--runs', 41);
const results = measureCases(cases, runs);
const line = formatRecord(prepareRecord(build(), prepare));
printTable([['step', 'µs per record'], ...[...results].map(([k, v]) => [k, fmtUs(v)])]);
console.log(`median of ${runs} interleaved runs; record line ${Buffer.byteLength(line)} bytes; Node ${process.version}`);
