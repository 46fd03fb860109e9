// Auditor modes (fail-closed vs best-effort) over a failing sink, the worker
// side's bounded buffer and health, the main side's hub, and the statement
// tracker that pairs statements with the server's answers.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Auditor, NO_AUDIT } from '../../src/audit/auditor.ts';
import { defaultAuditMode, type AuditConfig } from '../../src/config/config.ts';
import { AuditHub } from '../../src/audit/main-side.ts';
import type { AuditRecord } from '../../src/audit/record.ts';
import { createWorkerAuditor, openAuditSink, startMainAudit } from '../../src/audit/setup.ts';
import { FileSink, HttpSink, StdoutSink, type AuditSink, type AuditSinkStats } from '../../src/audit/sinks.ts';
import { StatementTracker } from '../../src/audit/statement-tracker.ts';
import { AuditBuffer, CHUNK_BYTES, WorkerAuditor, type AuditBatchMessage, type AuditControlMessage, type AuditPost } from '../../src/audit/worker-side.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function rec(n: number, sql = `SELECT ${n}`): AuditRecord {
  return {
    audit: 'statement',
    time: new Date(0).toISOString(),
    unix_ms: 0,
    seq: n,
    session: 's',
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
    command: 'SELECT',
    tables: [],
  };
}

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A sink whose health and acceptance the test controls. */
class FakeSink implements AuditSink {
  lines: string[] = [];
  accept = true;
  private ok = true;
  private listeners: Array<(h: boolean) => void> = [];
  dropped = 0;
  get healthy(): boolean {
    return this.ok;
  }
  get lastError(): string | null {
    return this.ok ? null : 'broken';
  }
  setHealthy(h: boolean): void {
    if (h === this.ok) return;
    this.ok = h;
    for (const l of this.listeners) l(h);
  }
  onHealthChange(l: (h: boolean) => void): void {
    this.listeners.push(l);
  }
  write(line: string): boolean {
    return this.writeChunk(Buffer.from(line), 1);
  }
  writeChunk(data: Uint8Array, records: number): boolean {
    if (!this.accept) {
      this.dropped += records;
      return false;
    }
    const lines = Buffer.from(data).toString('utf8').split(/(?<=\n)/);
    assert.equal(lines.length, records, 'records matches the lines in the chunk');
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
    return { written: this.lines.length, dropped: this.dropped, queued: 0, failures: 0 };
  }
}

test('default audit mode: file → fail-closed; stdout and http → best-effort', () => {
  assert.equal(defaultAuditMode('file'), 'fail-closed');
  assert.equal(defaultAuditMode('stdout'), 'best-effort');
  assert.equal(defaultAuditMode('http'), 'best-effort');
  assert.equal(NO_AUDIT.enabled, false);
  assert.equal(NO_AUDIT.canProceed(), true);
});

test('file sink fails (EISDIR): fail-closed refuses, best-effort proceeds and counts drops', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-auditor-'));
  dirs.push(dir);
  const file = path.join(dir, 'audit.log');
  for (const mode of ['fail-closed', 'best-effort'] as const) {
    mkdirSync(file);
    const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 5, maxQueuedBytes: 1 << 20, retryMs: 20 });
    const auditor = new Auditor(sink, { mode, maxSqlBytes: 100, parameters: 'off' });
    assert.equal(auditor.canProceed(), true, 'healthy before the first failure');
    auditor.record(rec(0));
    await until(() => !sink.healthy);
    assert.equal(auditor.canProceed(), mode === 'best-effort', mode);
    for (let i = 1; i < 10; i++) auditor.record(rec(i));
    const s = auditor.stats();
    assert.equal(s.healthy, false);
    assert.equal(s.mode, mode);
    assert.equal(s.queued, 5);
    assert.equal(s.dropped, 5, 'beyond the bounded queue, records are dropped and counted');
    // Repaired: the queue is written, the sink heals, statements may run again.
    rmSync(file, { recursive: true });
    await until(() => sink.healthy && sink.stats().queued === 0);
    assert.equal(auditor.canProceed(), true);
    await auditor.close();
    const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as AuditRecord).sql), ['SELECT 0', 'SELECT 1', 'SELECT 2', 'SELECT 3', 'SELECT 4']);
    rmSync(file);
  }
});

test('Auditor.record truncates SQL to max_sql_bytes and never throws', () => {
  const sink = new FakeSink();
  const auditor = new Auditor(sink, { mode: 'best-effort', maxSqlBytes: 10, parameters: 'off' });
  auditor.record(rec(1, 'SELECT 1234567890'));
  const back = JSON.parse(sink.lines[0]!) as AuditRecord;
  assert.equal(back.sql, 'SELECT 123');
  assert.equal(back.sql_truncated, true);
  // A record that cannot be formatted (a bug upstream left its identity out) is a counted drop.
  const bad = { ...rec(2), identity: null } as unknown as AuditRecord;
  assert.doesNotThrow(() => auditor.record(bad));
  assert.equal(auditor.stats().dropped, 1);
});

test('AuditBuffer: bounded, drain swaps the list, drops counted, health decides fail-closed', () => {
  const b = new AuditBuffer({ mode: 'fail-closed', maxRecords: 10, maxBytes: 1000, batchRecords: 4 });
  assert.equal(b.health, 'unknown');
  assert.equal(b.canProceed(), false, "fail-closed: 'unknown' is not healthy");
  b.setHealth(true);
  assert.equal(b.canProceed(), true);
  for (let i = 0; i < 3; i++) assert.equal(b.push(`l${i}\n`), true);
  assert.equal(b.ready, false);
  b.push('l3\n');
  assert.equal(b.ready, true);
  assert.equal(b.queued, 4);
  const drained = b.drain();
  assert.ok(drained !== null);
  assert.deepEqual(drained.map((c) => [Buffer.from(c.data).toString('utf8'), c.records]), [['l0\nl1\nl2\nl3\n', 4]], 'one chunk of whole lines');
  assert.equal(b.queued, 0);
  assert.equal(b.drain(), null);
  for (let i = 0; i < 9; i++) b.push('x\n');
  assert.equal(b.canProceed(), false, 'fail-closed: at 90 % of the bound');
  b.push('x\n');
  assert.equal(b.push('x\n'), false);
  assert.equal(b.takeDropped(), 1);
  assert.equal(b.takeDropped(), 0);
  assert.equal(b.droppedTotal, 1);
  b.drain();
  b.setHealth(false);
  assert.equal(b.canProceed(), false);
  // Byte bound, in UTF-8 bytes.
  const small = new AuditBuffer({ mode: 'best-effort', maxRecords: 100, maxBytes: 10, batchRecords: 100 });
  assert.equal(small.push('123456'), true);
  assert.equal(small.push('123456'), false);
  assert.equal(small.push('éé'), true, '4 bytes: 10 in all');
  assert.equal(small.push('x'), false);
  assert.equal(small.canProceed(), true, "best-effort: always, 'unknown' included");
  small.setHealth('unhealthy');
  assert.equal(small.canProceed(), true);
});

/** A post function that checks what the worker hands over for transfer and keeps the messages. */
function collectPosts(): { posted: AuditBatchMessage[]; post: AuditPost } {
  const posted: AuditBatchMessage[] = [];
  return {
    posted,
    post: (m, transfer) => {
      if (m.chunk === null) assert.deepEqual(transfer, [], 'nothing to transfer without a chunk');
      else {
        assert.deepEqual(transfer, [m.chunk.buffer], 'the chunk\'s buffer is transferred');
        // It must be an ArrayBuffer of its own (not a slice of Node's shared pool, which holds other data): one
        // allocated for audit chunks (CHUNK_BYTES, or larger for a longer line), or an exact copy.
        assert.equal(m.chunk.byteOffset, 0);
        assert.ok(m.chunk.buffer.byteLength === m.chunk.byteLength || m.chunk.buffer.byteLength >= CHUNK_BYTES, `buffer of ${m.chunk.buffer.byteLength} bytes for ${m.chunk.byteLength}`);
        assert.notEqual(m.chunk.buffer.byteLength, Buffer.poolSize, 'not the shared pool');
      }
      posted.push(m);
    },
  };
}

/** The lines of a posted batch (checking `records` against them). */
function linesOf(m: AuditBatchMessage): string[] {
  if (m.chunk === null) return [];
  const lines = Buffer.from(m.chunk).toString('utf8').split(/(?<=\n)/);
  assert.equal(lines.length, m.records);
  return lines;
}

test('WorkerAuditor: batches by size and by timer, bounded in flight until acknowledged, drops reported', async () => {
  const { posted, post } = collectPosts();
  const w = new WorkerAuditor({ workerId: 3, mode: 'best-effort', maxSqlBytes: 1000, parameters: 'off', bufferRecords: 8, bufferBytes: 1 << 20, batchRecords: 4, flushIntervalMs: 20, maxInFlightRecords: 8 }, post);
  for (let i = 0; i < 4; i++) w.record(rec(i, i === 2 ? 'SELECT \'é漢😀\'' : `SELECT ${i}`));
  assert.equal(posted.length, 1, 'a full batch goes at once');
  assert.equal(posted[0]!.workerId, 3);
  assert.equal(posted[0]!.records, 4);
  assert.deepEqual(linesOf(posted[0]!).map((l) => (JSON.parse(l) as AuditRecord).sql), ['SELECT 0', 'SELECT 1', 'SELECT \'é漢😀\'', 'SELECT 3']);
  for (let i = 4; i < 8; i++) w.record(rec(i));
  assert.equal(posted.length, 2);
  // 8 in flight: the next batch waits for an acknowledgement, the buffer fills, then drops.
  for (let i = 8; i < 20; i++) w.record(rec(i));
  assert.equal(posted.length, 2);
  // Small batches leave as exact copies: one chunk buffer serves them all.
  assert.deepEqual(w.stats(), { queued: 8, inFlight: 8, posted: 8, dropped: 4, buffersAllocated: 1 });
  w.onMessage({ type: 'audit-ack', records: 8 });
  w.flush();
  assert.equal(posted.length, 3);
  assert.deepEqual(linesOf(posted[2]!).map((l) => (JSON.parse(l) as AuditRecord).sql), Array.from({ length: 8 }, (_, i) => `SELECT ${i + 8}`));
  assert.equal(posted[2]!.dropped, 4);
  // The timer sends a partial batch.
  w.onMessage({ type: 'audit-ack', records: 8 });
  w.start();
  w.record(rec(99));
  await until(() => posted.length === 4);
  assert.equal(posted[3]!.records, 1);
  // stop() posts the rest regardless of the bound.
  w.record(rec(100));
  w.stop();
  assert.equal(posted.length, 5);
  assert.deepEqual(linesOf(posted[4]!).map((l) => (JSON.parse(l) as AuditRecord).sql), ['SELECT 100']);
  // Health: best-effort proceeds whatever the sink says.
  w.onMessage({ type: 'audit-health', healthy: false });
  assert.equal(w.canProceed(), true);
});

test('WorkerAuditor: drops with nothing queued go alone (no chunk); stop() reports them too', () => {
  const { posted, post } = collectPosts();
  const w = new WorkerAuditor({ workerId: 1, mode: 'best-effort', maxSqlBytes: 1000, parameters: 'off', bufferRecords: 2, bufferBytes: 1 << 20, batchRecords: 2, flushIntervalMs: 1000, maxInFlightRecords: 2 }, post);
  w.record(rec(0));
  w.record(rec(1)); // a full batch: posted, 2 in flight
  w.record(rec(2));
  w.record(rec(3));
  w.record(rec(4)); // buffer full: dropped
  assert.equal(posted.length, 1);
  w.flush(); // in-flight bound: nothing sent
  assert.equal(posted.length, 1);
  w.onMessage({ type: 'audit-ack', records: 2 });
  w.flush();
  assert.deepEqual({ ...posted[1]!, chunk: null }, { type: 'audit', workerId: 1, chunk: null, records: 2, dropped: 1 });
  // A record that cannot be formatted, with nothing queued: the drop is reported alone, without a chunk.
  const bad = { ...rec(5), identity: null } as unknown as AuditRecord;
  w.record(bad);
  w.flush();
  assert.deepEqual(posted[2], { type: 'audit', workerId: 1, chunk: null, records: 0, dropped: 1 });
  w.flush();
  assert.equal(posted.length, 3, 'reported once');
  // stop(): what is left, queued records and drops, in one message regardless of the in-flight bound.
  w.record(rec(6));
  w.record(bad);
  w.stop();
  assert.equal(posted.length, 4);
  assert.equal(posted[3]!.dropped, 1);
  assert.deepEqual(linesOf(posted[3]!).map((l) => (JSON.parse(l) as AuditRecord).sql), ['SELECT 6']);
  w.record(bad);
  w.stop();
  assert.deepEqual(posted[4], { type: 'audit', workerId: 1, chunk: null, records: 0, dropped: 1 });
});

test('AuditBuffer: lines fill chunks of CHUNK_BYTES; a longer line gets a chunk of its own; order and counts kept', () => {
  const b = new AuditBuffer({ mode: 'best-effort', maxRecords: 100_000, maxBytes: 64 * 1024 * 1024, batchRecords: 100_000 });
  const line = (i: number): string => `${String(i).padStart(6, '0')}${'é'.repeat(500)}\n`; // 1007 bytes
  const n = Math.ceil((CHUNK_BYTES * 2.5) / 1007);
  for (let i = 0; i < n; i++) assert.equal(b.push(line(i)), true);
  const huge = `H${'x'.repeat(CHUNK_BYTES * 2)}\n`;
  assert.equal(b.push(huge), true);
  assert.equal(b.push(line(n)), true);
  const chunks = b.drain();
  assert.ok(chunks !== null);
  const text = chunks.map((c) => Buffer.from(c.data).toString('utf8')).join('');
  assert.equal(text, Array.from({ length: n }, (_, i) => line(i)).join('') + huge + line(n));
  assert.deepEqual(chunks.map((c) => Buffer.from(c.data).toString('utf8').split('\n').length - 1), chunks.map((c) => c.records));
  assert.ok(chunks.every((c) => c.data.byteLength <= Math.max(CHUNK_BYTES, huge.length)), 'no chunk beyond its buffer');
  assert.ok(chunks.some((c) => c.data.byteLength === huge.length && c.records === 1), 'the long line alone');
  assert.equal(b.queued, 0);
});

test('AuditBuffer: a mostly empty chunk (a timer flush at low traffic) leaves as an exact copy', () => {
  const b = new AuditBuffer({ mode: 'best-effort', maxRecords: 100, maxBytes: 1 << 20, batchRecords: 100 });
  b.push('a\n');
  const first = b.drain();
  assert.ok(first !== null);
  assert.equal(first[0]!.data.buffer.byteLength, 2, 'exact copy: transferring it does not take a 256 KiB buffer along');
  b.push('b\n');
  const second = b.drain();
  assert.equal(Buffer.from(second![0]!.data).toString(), 'b\n');
});

test('WorkerAuditor fail-closed: unknown → refuse; healthy → proceed; unhealthy → refuse', () => {
  const w = new WorkerAuditor({ workerId: 0, mode: 'fail-closed', maxSqlBytes: 1000, parameters: 'redacted', bufferRecords: 100, bufferBytes: 1 << 20, batchRecords: 10, flushIntervalMs: 1000 }, () => {});
  assert.equal(w.canProceed(), false);
  w.onMessage({ type: 'audit-health', healthy: true });
  assert.equal(w.canProceed(), true);
  w.onMessage({ type: 'audit-health', healthy: false });
  assert.equal(w.canProceed(), false);
  assert.equal(w.parameters, 'redacted');
  const started = new WorkerAuditor({ workerId: 0, mode: 'fail-closed', maxSqlBytes: 1000, parameters: 'off', bufferRecords: 100, bufferBytes: 1 << 20, batchRecords: 10, flushIntervalMs: 1000 }, () => {}, 'healthy');
  assert.equal(started.canProceed(), true, 'initial health from workerData');
});

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

test('AuditHub: hands each chunk to the sink whole, acknowledges to the sender, counts worker drops, broadcasts health changes once each', () => {
  const sink = new FakeSink();
  const chunks: Array<[string, number]> = [];
  const inner = sink.writeChunk.bind(sink);
  sink.writeChunk = (data, records) => {
    chunks.push([Buffer.from(data).toString('utf8'), records]);
    return inner(data, records);
  };
  const auditor = new Auditor(sink, { mode: 'fail-closed', maxSqlBytes: 100, parameters: 'off' });
  const broadcasts: AuditControlMessage[] = [];
  const sent: Array<[number, AuditControlMessage]> = [];
  const changes: Array<[boolean, string | null]> = [];
  const hub = new AuditHub(auditor, (m) => broadcasts.push(m), (id, m) => sent.push([id, m]), (h, e) => changes.push([h, e]));
  assert.deepEqual(hub.healthMessage(), { type: 'audit-health', healthy: true });
  hub.accept({ type: 'audit', workerId: 2, chunk: utf8('a\nb\n'), records: 2, dropped: 0 });
  hub.accept({ type: 'audit', workerId: 1, chunk: null, records: 0, dropped: 3 });
  assert.deepEqual(chunks, [['a\nb\n', 2]], 'one sink call per batch');
  assert.deepEqual(sink.lines, ['a\n', 'b\n']);
  assert.deepEqual(sent, [[2, { type: 'audit-ack', records: 2 }]], 'drops alone are not acknowledged');
  sink.setHealthy(false);
  sink.setHealthy(false);
  sink.setHealthy(true);
  assert.deepEqual(broadcasts, [
    { type: 'audit-health', healthy: false },
    { type: 'audit-health', healthy: true },
  ]);
  assert.deepEqual(changes, [
    [false, 'broken'],
    [true, null],
  ]);
  // Records the sink refuses are counted there (and still acknowledged: they left the worker); worker drops on top.
  sink.accept = false;
  hub.accept({ type: 'audit', workerId: 2, chunk: utf8('c\nd\n'), records: 2, dropped: 1 });
  assert.deepEqual(sent.at(-1), [2, { type: 'audit-ack', records: 2 }]);
  const s = hub.stats();
  assert.equal(s.written, 2);
  assert.equal(s.dropped, 2 + 3 + 1);
  assert.equal(s.workerDropped, 4);
  assert.equal(s.batches, 3);
});

// ---------------------------------------------------------------- tracker

function tracker(): { t: StatementTracker; out: AuditRecord[]; clock: { now: number } } {
  const out: AuditRecord[] = [];
  const clock = { now: 0 };
  return { t: new StatementTracker((r) => out.push(r), () => clock.now), out, clock };
}

test('tracker: a multi-statement Query — rows per statement, query time from the previous answer', () => {
  const { t, out, clock } = tracker();
  t.expect(rec(1, 'INSERT …'), 0);
  t.expect(rec(2, 'UPDATE …'), 0);
  clock.now = 2;
  t.onCommandComplete(5);
  clock.now = 5;
  t.onCommandComplete(3);
  clock.now = 6;
  t.onReadyForQuery();
  assert.deepEqual(
    out.map((r) => [r.sql, r.outcome, r.rows, r.query_us]),
    [
      ['INSERT …', 'complete', 5, 2000],
      ['UPDATE …', 'complete', 3, 3000],
    ],
  );
  assert.equal(t.pending, 0);
});

test('tracker: an error stops the rest of the Query; they are "not-run" at ReadyForQuery', () => {
  const { t, out } = tracker();
  t.expect(rec(1), 0);
  t.expect(rec(2), 0);
  t.expect(rec(3), 0);
  t.onCommandComplete(1);
  t.onError('23505');
  t.onReadyForQuery();
  assert.deepEqual(
    out.map((r) => [r.sql, r.outcome, r.sqlstate]),
    [
      ['SELECT 1', 'complete', undefined],
      ['SELECT 2', 'error', '23505'],
      ['SELECT 3', 'not-run', undefined],
    ],
  );
});

test('tracker: pipelined extended protocol — answers belong to their own group only', () => {
  const { t, out } = tracker();
  // Group 0: Execute ×2, Sync; group 1: Execute, Sync — all sent before any answer.
  t.expect(rec(1), 0);
  t.expect(rec(2), 0);
  t.expect(rec(3), 1);
  t.onError('42P01'); // group 0's first answer: rec 1 failed (e.g. relation does not exist)
  t.onReadyForQuery(); // group 0 ends: rec 2 never ran
  t.onPortalSuspended(); // group 1: rec 3 hit its row limit
  t.onReadyForQuery();
  assert.deepEqual(
    out.map((r) => [r.sql, r.outcome]),
    [
      ['SELECT 1', 'error'],
      ['SELECT 2', 'not-run'],
      ['SELECT 3', 'suspended'],
    ],
  );
});

test('tracker: answers with nothing pending in the group (a denial\'s group, an empty query) are ignored', () => {
  const { t, out } = tracker();
  // Group 0 is an injected denial (its error is swapped by the session, not reported here).
  t.expect(rec(1), 1);
  t.onEmptyQuery();
  t.onCommandComplete(9);
  assert.equal(out.length, 0, 'group 0 has no tracked execution');
  t.onReadyForQuery();
  t.onEmptyQuery();
  t.onReadyForQuery();
  assert.deepEqual(
    out.map((r) => [r.outcome, r.rows]),
    [['complete', null]],
  );
});

test('tracker: with audit off, a bare object tracks query latency alone', () => {
  const done: Array<{ protocol: 'simple' | 'extended'; query_us?: number; outcome?: string }> = [];
  let now = 0;
  const t = new StatementTracker<{ protocol: 'simple' | 'extended'; query_us?: number; outcome?: AuditRecord['outcome']; rows?: number | null; sqlstate?: string }>((r) => done.push(r), () => now);
  t.expect({ protocol: 'extended' }, 0);
  now = 0.25;
  t.onCommandComplete(1);
  assert.deepEqual(done, [{ protocol: 'extended', rows: 1, outcome: 'complete', query_us: 250 }]);
});

test('tracker: session end emits what is open as "unknown"; the pending bound emits at once', () => {
  const { t, out, clock } = tracker();
  t.expect(rec(1), 0);
  clock.now = 1.5;
  t.close();
  assert.deepEqual(
    out.map((r) => [r.outcome, r.query_us]),
    [['unknown', 1500]],
  );
  const small = new StatementTracker((r) => out.push(r), () => 0, 2);
  small.expect(rec(2), 0);
  small.expect(rec(3), 0);
  small.expect(rec(4), 0);
  assert.equal(out.at(-1)!.sql, 'SELECT 4');
  assert.equal(out.at(-1)!.outcome, 'unknown');
  assert.equal(small.pending, 2);
});

test('setup: each sink kind from config; a bad file path fails start-up with RG_AUDIT_SINK', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-setup-'));
  dirs.push(dir);
  const base: AuditConfig = {
    sink: 'file',
    mode: 'fail-closed',
    maxSqlBytes: 4096,
    parameters: 'off',
    maxParameterBytes: 256,
    worker: { bufferRecords: 100, bufferBytes: 1 << 20, batchRecords: 10, flushIntervalMs: 50 },
    stdout: { maxQueuedRecords: 100, maxQueuedBytes: 1 << 20 },
    file: { path: path.join(dir, 'a.log'), maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 100, maxQueuedBytes: 1 << 20, retryMs: 100 },
    http: { url: 'http://127.0.0.1:9/x', headers: { authorization: 'Bearer t' }, batchMaxRecords: 10, batchMaxBytes: 1 << 20, flushIntervalMs: 1000, timeoutMs: 1000, maxQueuedRecords: 100, maxQueuedBytes: 1 << 20, retryInitialMs: 10, retryMaxMs: 100 },
  };
  const file = await openAuditSink(base);
  assert.ok(file instanceof FileSink);
  await file.close();
  const http = await openAuditSink({ ...base, sink: 'http' });
  assert.ok(http instanceof HttpSink);
  await http.close();
  const stdout = await openAuditSink({ ...base, sink: 'stdout' });
  assert.ok(stdout instanceof StdoutSink);
  await stdout.close();
  await assert.rejects(startMainAudit({ ...base, file: { ...base.file!, path: dir } }, () => {}, () => {}), (err: Error & { code?: string }) => err.code === 'RG_AUDIT_SINK');
  const hub = await startMainAudit(base, () => {}, () => {});
  assert.equal(hub.sinkHealthy, true);
  const { posted, post } = collectPosts();
  const worker = createWorkerAuditor(base, 4, post, 'healthy');
  assert.equal(worker.canProceed(), true);
  worker.record(rec(1));
  worker.stop();
  hub.accept(posted[0]!);
  await hub.close();
  assert.equal(readFileSync(base.file!.path, 'utf8').split('\n').length, 2);
});
