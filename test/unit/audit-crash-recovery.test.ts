// A worker's crash, byte by byte: a WorkerAuditor writes its lines into
// chunks and its crash journal, some batches reach the AuditHub and some do
// not, then the worker "dies" (the hub is told it exited). Every formatted
// line must reach the sink exactly once, in order; records never made (their
// statements still awaiting an answer) must be named in session-lost lines
// with their seq range and counted; drops must be counted exactly.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Auditor } from '../../src/audit/auditor.ts';
import { allocateJournal, CrashJournal, readJournal } from '../../src/audit/crash-journal.ts';
import { AuditHub } from '../../src/audit/main-side.ts';
import type { AuditRecord } from '../../src/audit/record.ts';
import type { AuditSink, AuditSinkStats } from '../../src/audit/sinks.ts';
import { StatementTracker } from '../../src/audit/statement-tracker.ts';
import { WorkerAuditor, type AuditBatchMessage } from '../../src/audit/worker-side.ts';

function rec(session: string, seq: number, sql = `INSERT INTO t VALUES (${seq})`): AuditRecord {
  return {
    audit: 'statement',
    time: new Date(0).toISOString(),
    unix_ms: 0,
    seq,
    session,
    worker: 0,
    identity: { name: 'u', method: 'scram-sha-256' },
    client: { addr: '127.0.0.1', port: 1 },
    database: 'app',
    role: 'r',
    decision: 'allow',
    rule: null,
    reason: null,
    policy_revision: 'r1',
    decision_us: 1,
    protocol: 'simple',
    sql,
    command: 'INSERT',
    tables: [],
  };
}

/** Keeps every line it is given (one per record), as the file would. */
class MemorySink implements AuditSink {
  lines: string[] = [];
  readonly healthy = true;
  readonly lastError = null;
  onHealthChange(): void {}
  write(line: string): boolean {
    return this.writeChunk(Buffer.from(line), 1);
  }
  writeChunk(data: Uint8Array, records: number): boolean {
    const lines = Buffer.from(data).toString('utf8').split(/(?<=\n)/);
    assert.equal(lines.length, records, 'records matches the lines handed over');
    this.lines.push(...lines);
    return true;
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  stats(): AuditSinkStats {
    return { written: this.lines.length, dropped: 0, queued: 0, failures: 0 };
  }
  records(): Array<Record<string, unknown>> {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

interface Rig {
  sink: MemorySink;
  hub: AuditHub;
  worker: WorkerAuditor;
  journal: SharedArrayBuffer;
  /** Batches the worker posted that have not reached the hub (a test delivers them or not). */
  held: AuditBatchMessage[];
  deliver(): void;
}

function rig(opts: { journalBytes?: number; bufferRecords?: number; bufferBytes?: number; batchRecords?: number; sessions?: number } = {}): Rig {
  const sink = new MemorySink();
  const auditor = new Auditor(sink, { mode: 'fail-closed', maxSqlBytes: 1000, parameters: 'off' });
  const hub = new AuditHub(auditor, () => {}, () => {}, undefined, { journalBytes: opts.journalBytes ?? 1 << 20 });
  const journal = hub.journalFor(0, opts.sessions ?? 16);
  assert.ok(journal !== null);
  const held: AuditBatchMessage[] = [];
  const worker = new WorkerAuditor(
    { workerId: 0, mode: 'fail-closed', maxSqlBytes: 1000, parameters: 'off', bufferRecords: opts.bufferRecords ?? 1000, bufferBytes: opts.bufferBytes ?? 1 << 20, batchRecords: opts.batchRecords ?? 4, flushIntervalMs: 1000, journal },
    (msg) => held.push(msg),
    'healthy',
  );
  return {
    sink,
    hub,
    worker,
    journal,
    held,
    deliver() {
      for (const m of held.splice(0)) hub.accept(m);
    },
  };
}

const sqlOf = (r: Record<string, unknown>): unknown => r['sql'];

test('lines formatted but never posted are written after the worker dies: each once, in order', () => {
  const r = rig({ batchRecords: 4 });
  for (let i = 1; i <= 10; i++) r.worker.record(rec('s1', i));
  // Two full batches went out (8 records); 2 are still in the worker's buffer.
  assert.equal(r.held.length, 2);
  r.deliver();
  assert.equal(r.sink.lines.length, 8);
  r.hub.workerExited(0, 'worker exited (code 1)');
  assert.deepEqual(r.sink.records().map(sqlOf), Array.from({ length: 10 }, (_, i) => `INSERT INTO t VALUES (${i + 1})`));
  const s = r.hub.stats();
  assert.equal(s.recovered, 2);
  assert.equal(s.lost, 0);
  assert.equal(s.dropped, 0);
  // Read once: a second exit report for the same worker writes nothing more.
  r.hub.workerExited(0, 'again');
  assert.equal(r.sink.lines.length, 10);
});

test('batches posted before the death but accepted before the exit report are not written twice', () => {
  const r = rig({ batchRecords: 3 });
  for (let i = 1; i <= 7; i++) r.worker.record(rec('s1', i));
  // The timer would flush the last one: do it, so every line has been posted.
  r.worker.flush();
  r.deliver();
  r.hub.workerExited(0, 'worker exited (code 1)');
  assert.equal(r.sink.lines.length, 7);
  assert.equal(r.hub.stats().recovered, 0);
});

test('a graceful stop leaves nothing to recover and writes no loss line', () => {
  const r = rig();
  const t = new StatementTracker((x) => r.worker.record(x), () => 0, 10_000, r.worker.journal);
  t.expect(rec('s1', 2), 0);
  t.onCommandComplete(1);
  t.onReadyForQuery();
  t.close();
  r.worker.stop();
  r.deliver();
  r.hub.workerExited(0, 'worker stopped');
  assert.deepEqual(r.sink.records().map((x) => x['audit']), ['statement']);
  assert.equal(r.hub.stats().sessionsLost, 0);
});

test('records never made (awaiting the server) are named per session: count and seq range; a denial inside the range is in the log', () => {
  const r = rig({ batchRecords: 1000 });
  const journal = r.worker.journal;
  const a = new StatementTracker((x) => r.worker.record(x), () => 0, 10_000, journal);
  const b = new StatementTracker((x) => r.worker.record(x), () => 0, 10_000, journal);
  const c = new StatementTracker((x) => r.worker.record(x), () => 0, 10_000, journal);
  // Session a: seq 2 answered; seq 3 and 5 forwarded (pipelined), seq 4 a denial recorded at once; no answer yet.
  a.expect(rec('sess-a', 2), 0);
  a.onCommandComplete(1);
  a.onReadyForQuery();
  a.expect(rec('sess-a', 3), 1);
  r.worker.record({ ...rec('sess-a', 4), decision: 'deny' });
  a.expect(rec('sess-a', 5), 2);
  // Session b: everything answered, still open.
  b.expect(rec('sess-b', 2), 0);
  b.onCommandComplete(1);
  b.onReadyForQuery();
  // Session c: ended before the crash; its slot is free again.
  c.expect(rec('sess-c', 2), 0);
  c.onCommandComplete(1);
  c.onReadyForQuery();
  c.close();
  r.hub.workerExited(0, 'worker exited (code 1)', 1_000);
  const out = r.sink.records();
  assert.deepEqual(
    out.filter((x) => x['audit'] === 'statement').map((x) => [x['session'], x['seq']]),
    [
      ['sess-a', 2],
      ['sess-a', 4],
      ['sess-b', 2],
      ['sess-c', 2],
    ],
    'every record made is written (none was posted before the death)',
  );
  const lost = out.filter((x) => x['audit'] === 'session-lost');
  assert.deepEqual(lost, [
    { audit: 'session-lost', time: new Date(1_000).toISOString(), unix_ms: 1_000, session: 'sess-a', worker: 0, lost: 2, seq_from: 3, seq_to: 5, reason: 'worker exited (code 1)' },
    { audit: 'session-lost', time: new Date(1_000).toISOString(), unix_ms: 1_000, session: 'sess-b', worker: 0, lost: 0, seq_from: null, seq_to: null, reason: 'worker exited (code 1)' },
  ]);
  // The auditor's check: seqs in the range and absent from the log are exactly `lost`.
  const present = new Set(out.filter((x) => x['session'] === 'sess-a' && x['audit'] === 'statement').map((x) => x['seq']));
  assert.equal([3, 4, 5].filter((s) => !present.has(s)).length, 2);
  const s = r.hub.stats();
  assert.equal(s.recovered, 4);
  assert.equal(s.lost, 2);
  assert.equal(s.sessionsLost, 2);
  assert.equal(s.dropped, 2, 'lost records are counted as dropped, exactly');
});

test('the ring wraps: after many posted lines, the unposted ones still come back whole', () => {
  // A ring far smaller than what passes through it, but larger than what is held unposted.
  const r = rig({ journalBytes: 4096, batchRecords: 5 });
  let n = 0;
  for (; n < 500; n++) {
    r.worker.record(rec('s1', n + 1, `INSERT ${'é'.repeat(n % 37)} ${n}`));
    r.deliver();
  }
  for (let i = 0; i < 3; i++, n++) r.worker.record(rec('s1', n + 1, `INSERT ${'é'.repeat(n % 37)} ${n}`));
  assert.equal(r.held.length, 0, 'the last 3 are unposted');
  r.hub.workerExited(0, 'worker exited (code 1)');
  assert.deepEqual(
    r.sink.records().map((x) => x['seq']),
    Array.from({ length: n }, (_, i) => i + 1),
  );
  assert.equal(r.hub.stats().recovered, 3);
});

test('a ring smaller than what was unposted: the whole lines left are written, the rest counted and named in a records-lost line', () => {
  const r = rig({ journalBytes: 1024, batchRecords: 1000 });
  for (let i = 1; i <= 20; i++) r.worker.record(rec('s1', i));
  r.hub.workerExited(0, 'worker exited (code 1)');
  const out = r.sink.records();
  const statements = out.filter((x) => x['audit'] === 'statement');
  const tail = statements.map((x) => x['seq']);
  assert.ok(tail.length > 0 && tail.length < 20, `some but not all: ${tail.length}`);
  assert.deepEqual(tail, Array.from({ length: tail.length }, (_, i) => 20 - tail.length + 1 + i), 'the newest, whole, in order');
  const lostLine = out.find((x) => x['audit'] === 'records-lost');
  assert.ok(lostLine !== undefined);
  assert.equal(lostLine['lost'], 20 - tail.length);
  assert.equal(r.hub.stats().lost, 20 - tail.length);
  assert.equal(r.hub.stats().recovered, tail.length);
});

test('drops the worker had not reported yet are counted at its death', () => {
  const r = rig({ bufferRecords: 3, batchRecords: 3 });
  // In flight bound = bufferRecords: the first 3 go, then the buffer fills and drops.
  for (let i = 1; i <= 8; i++) r.worker.record(rec('s1', i));
  r.deliver();
  const before = r.hub.stats().dropped;
  r.hub.workerExited(0, 'worker exited (code 1)');
  const s = r.hub.stats();
  assert.equal(s.recovered, 3);
  assert.equal(s.dropped - before, 2, 'the 2 unreported drops');
  assert.equal(r.sink.records().find((x) => x['audit'] === 'records-lost')?.['dropped'], 2);
});

test('journal: session slots are reused, and a full table counts sessions it cannot name', () => {
  const sab = allocateJournal(256, 2);
  const j = new CrashJournal(sab);
  const s1 = j.open('a');
  const s2 = j.open('b');
  assert.equal(j.open('c'), -1);
  j.expect(s1, 7);
  j.close(s2);
  const s3 = j.open('d');
  assert.equal(s3, s2);
  const r = readJournal(sab, { bytes: 0, records: 0, dropped: 0 });
  assert.deepEqual(r.sessions.map((s) => [s.session, s.lost, s.seqFrom, s.seqTo]).sort(), [
    ['a', 1, 7, 7],
    ['d', 0, null, null],
  ]);
  assert.equal(r.untracked, 1);
});
