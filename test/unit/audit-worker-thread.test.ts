// The cross-thread audit path with a real worker_threads Worker: records made
// in the worker arrive in the main thread's file sink, in order and byte-exact,
// their chunks really transferred (detached in the worker after posting), and
// a health change in the main thread reaches the worker's fail-closed check;
// each chunk buffer comes back once the sink has written it and carries the
// worker's next lines.
// This file is its own worker script (isMainThread decides which half runs).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Auditor } from '../../src/audit/auditor.ts';
import { AuditHub } from '../../src/audit/main-side.ts';
import type { AuditRecord } from '../../src/audit/record.ts';
import { FileSink, type AuditSink, type AuditSinkStats, type ChunkLease } from '../../src/audit/sinks.ts';
import { WorkerAuditor, type AuditBatchMessage, type AuditControlMessage } from '../../src/audit/worker-side.ts';

type ToWorker = AuditControlMessage | { type: 'make'; from: number; count: number } | { type: 'probe' } | { type: 'stop' };
type FromWorker = AuditBatchMessage | { type: 'made' } | { type: 'probe'; canProceed: boolean } | { type: 'stopped'; chunks: number; detached: number; allocated: number };

function record(n: number): AuditRecord {
  return {
    audit: 'statement',
    time: new Date(n).toISOString(),
    unix_ms: n,
    seq: n,
    session: `w-${n}`,
    worker: 1,
    identity: { name: 'u', method: 'scram-sha-256' },
    client: { addr: '127.0.0.1', port: 1 },
    database: 'app',
    role: 'r',
    decision: n % 3 === 0 ? 'deny' : 'allow',
    rule: null,
    reason: null,
    policy_revision: 'r1',
    decision_us: 1,
    protocol: 'extended',
    sql: `SELECT ${n} -- \n\u2028"é😀`,
  };
}

if (!isMainThread) {
  const port = parentPort!;
  const data = workerData as { healthy: boolean; batchRecords?: number };
  // Posted chunks, and those whose ArrayBuffer was gone from this thread right after postMessage (transferred, not copied).
  let chunks = 0;
  let detached = 0;
  const auditor = new WorkerAuditor(
    { workerId: 1, mode: 'fail-closed', maxSqlBytes: 4096, parameters: 'off', bufferRecords: 1000, bufferBytes: 1 << 20, batchRecords: data.batchRecords ?? 64, flushIntervalMs: 10 },
    (msg, transfer) => {
      const bytes = msg.chunk?.byteLength ?? 0;
      port.postMessage(msg, transfer);
      if (msg.chunk === null) return;
      chunks++;
      if (bytes > 0 && msg.chunk.byteLength === 0 && msg.chunk.buffer.byteLength === 0) detached++;
    },
    data.healthy ? 'healthy' : 'unknown',
  );
  auditor.start();
  port.on('message', (msg: ToWorker) => {
    switch (msg.type) {
      case 'audit-health':
      case 'audit-ack':
      case 'audit-buffer':
        auditor.onMessage(msg);
        return;
      case 'make':
        for (let i = msg.from; i < msg.from + msg.count; i++) auditor.record(record(i));
        port.postMessage({ type: 'made' } satisfies FromWorker);
        return;
      case 'probe':
        port.postMessage({ type: 'probe', canProceed: auditor.canProceed() } satisfies FromWorker);
        return;
      case 'stop':
        auditor.stop();
        port.postMessage({ type: 'stopped', chunks, detached, allocated: auditor.stats().buffersAllocated } satisfies FromWorker);
        port.close();
        return;
    }
  });
} else {
  /** The real file sink behind a switch, so the test can fail it on cue (file failures have their own tests). */
  class SwitchedSink implements AuditSink {
    readonly inner: FileSink;
    private failing = false;
    private readonly listeners: Array<(healthy: boolean) => void> = [];
    constructor(inner: FileSink) {
      this.inner = inner;
    }
    get healthy(): boolean {
      return !this.failing && this.inner.healthy;
    }
    get lastError(): string | null {
      return this.failing ? 'switched off' : this.inner.lastError;
    }
    set(failing: boolean): void {
      this.failing = failing;
      for (const l of this.listeners) l(!failing);
    }
    onHealthChange(l: (healthy: boolean) => void): void {
      this.listeners.push(l);
    }
    writeChunk(data: Uint8Array, records: number, lease?: ChunkLease | null): boolean {
      return this.inner.writeChunk(data, records, lease);
    }
    write(line: string): boolean {
      return this.inner.write(line);
    }
    flush(): Promise<void> {
      return this.inner.flush();
    }
    close(): Promise<void> {
      return this.inner.close();
    }
    stats(): AuditSinkStats {
      return this.inner.stats();
    }
  }

  /**
   * This file run as a worker, behind an AuditHub over `auditor` (acknowledgements
   * and returned buffers go back to it, transferred); every batch it posts goes to
   * onBatch, then to the hub. next(type) waits for its next message of that type.
   */
  function startAuditWorker(auditor: Auditor, data: { batchRecords?: number } = {}, onBatch?: (m: AuditBatchMessage) => void) {
    let current: Worker | null = null;
    const hub = new AuditHub(
      auditor,
      (msg) => current?.postMessage(msg),
      (_id, msg, transfer) => current?.postMessage(msg, transfer),
    );
    const worker = new Worker(new URL(import.meta.url), { workerData: { ...data, healthy: hub.sinkHealthy } });
    current = worker;
    const waiters: Array<(m: FromWorker) => boolean> = [];
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'audit') {
        onBatch?.(m);
        hub.accept(m);
      }
      const i = waiters.findIndex((w) => w(m));
      if (i >= 0) waiters.splice(i, 1);
    });
    const next = <T extends FromWorker['type']>(type: T): Promise<Extract<FromWorker, { type: T }>> =>
      new Promise((resolve) =>
        waiters.push((m) => {
          if (m.type !== type) return false;
          resolve(m as Extract<FromWorker, { type: T }>);
          return true;
        }),
      );
    const send = (m: ToWorker): void => worker.postMessage(m);
    return { hub, worker, next, send };
  }

  test("a real worker thread: records reach the main thread's file sink in order; health changes reach the worker", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-thread-'));
    let worker: Worker | null = null;
    try {
      const file = path.join(dir, 'audit.log');
      const sink = new SwitchedSink(await FileSink.open({ path: file, maxBytes: 1 << 20, keep: 2, maxQueuedRecords: 10_000, maxQueuedBytes: 1 << 24, retryMs: 20 }));
      const auditor = new Auditor(sink, { mode: 'fail-closed', maxSqlBytes: 4096, parameters: 'off' });
      let received = 0;
      let receivedBytes = 0;
      const started = startAuditWorker(auditor, {}, (m) => {
        if (m.chunk === null) return;
        received++;
        receivedBytes += m.chunk.byteLength;
      });
      const { hub, next, send } = started;
      worker = started.worker;
      const probe = async (): Promise<boolean> => {
        send({ type: 'probe' });
        return (await next('probe')).canProceed;
      };

      assert.equal(await probe(), true, 'initial health passed in workerData');
      // 500 leave in full batches of 64 (bounded in flight, acknowledged by the hub); 7 more on the flush timer.
      send({ type: 'make', from: 0, count: 500 });
      await next('made');
      send({ type: 'make', from: 500, count: 7 });
      await next('made');
      const t0 = Date.now();
      while (auditor.stats().written < 507 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      assert.equal(auditor.stats().written, 507);

      // The sink turns unhealthy in the main thread: the worker hears it and refuses (fail-closed) …
      sink.set(true);
      assert.equal(await probe(), false, 'the broadcast arrived before the probe (one port, in order)');
      // … and proceeds again once it heals.
      sink.set(false);
      assert.equal(await probe(), true);

      send({ type: 'make', from: 507, count: 3 });
      await next('made');
      send({ type: 'stop' });
      const stopped = await next('stopped');
      await new Promise((r) => worker!.once('exit', r));
      await hub.close();
      assert.ok(stopped.chunks >= 9, `batches of 64 and the timer's (${stopped.chunks})`);
      assert.equal(stopped.detached, stopped.chunks, 'every chunk was transferred: detached in the worker after postMessage');
      assert.equal(received, stopped.chunks);
      const bytes = readFileSync(file);
      assert.equal(bytes.length, receivedBytes, 'the file holds exactly the bytes the worker sent');
      const lines = bytes.toString('utf8').split('\n').slice(0, -1);
      const ns = lines.map((l) => (JSON.parse(l) as AuditRecord).unix_ms);
      assert.deepEqual(ns, Array.from({ length: 510 }, (_, i) => i), 'every record, in order, one per line');
      assert.equal((JSON.parse(lines[5]!) as AuditRecord).sql, 'SELECT 5 -- \n\u2028"é😀');
      assert.deepEqual(auditor.stats().dropped, 0);
    } finally {
      await worker?.terminate();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a real worker thread: each chunk buffer goes back to the worker once written and holds its next lines (no new buffers per batch)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-reuse-'));
    let worker: Worker | null = null;
    try {
      const file = path.join(dir, 'audit.log');
      const auditor = new Auditor(await FileSink.open({ path: file, maxBytes: 1 << 26, keep: 1, maxQueuedRecords: 10_000, maxQueuedBytes: 1 << 24, retryMs: 20 }), { mode: 'fail-closed', maxSqlBytes: 4096, parameters: 'off' });
      // Batches of 256 lines (~85 KB): full enough to travel in their chunk buffer (emptier ones leave as an exact copy).
      const started = startAuditWorker(auditor, { batchRecords: 256 });
      const { hub, next, send } = started;
      worker = started.worker;
      // 30 rounds of two full batches (a chunk each); each round waits until the sink has written them.
      const rounds = 30;
      const perRound = 512;
      for (let r = 0; r < rounds; r++) {
        send({ type: 'make', from: r * perRound, count: perRound });
        await next('made');
        const t0 = Date.now();
        while ((auditor.stats().written < (r + 1) * perRound || hub.stats().buffersReturned < (r + 1) * 2) && Date.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 2));
      }
      assert.equal(hub.stats().buffersReturned, rounds * 2, 'every full chunk buffer went back once written');
      send({ type: 'stop' });
      const stopped = await next('stopped');
      await new Promise((r) => worker!.once('exit', r));
      await hub.close();
      assert.equal(stopped.detached, stopped.chunks, 'posted chunks were transferred, not copied');
      assert.ok(stopped.chunks >= rounds * 2, `${stopped.chunks} chunks`);
      assert.ok(stopped.allocated <= 3, `the worker allocated ${stopped.allocated} chunk buffers for ${stopped.chunks} chunks`);
      // Reused buffers never mixed lines up: every record once, in order, intact.
      const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1);
      assert.deepEqual(
        lines.map((l) => (JSON.parse(l) as AuditRecord).unix_ms),
        Array.from({ length: rounds * perRound }, (_, i) => i),
      );
      const last = rounds * perRound - 1;
      assert.equal((JSON.parse(lines[last]!) as AuditRecord).sql, `SELECT ${last} -- \n\u2028"é😀`);
    } finally {
      await worker?.terminate();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
