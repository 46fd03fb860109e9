// Audit sinks: file rotation and failure, stdout backpressure, HTTP batching,
// retry with backoff, recovery and bounded buffers (against a local node:http server).

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { ChunkLease, ChunkQueue, FileSink, HttpSink, releaseChunks, StdoutSink } from '../../src/audit/sinks.ts';
import { freeLoopbackPort } from '../../src/cli/local-postgres.ts';
import { isErrorCode } from '../../src/errors.ts';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function line(i: number, pad = 0): string {
  return `${JSON.stringify({ audit: 'statement', n: i, sql: `SELECT ${i}${'x'.repeat(pad)}` })}\n`;
}

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const FILE_DEFAULTS = { maxQueuedRecords: 10_000, maxQueuedBytes: 16 * 1024 * 1024, retryMs: 20 };

// ------------------------------------------------------------------ queue

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const text = (chunks: ReadonlyArray<{ data: Uint8Array }>): string => chunks.map((c) => Buffer.from(c.data).toString('utf8')).join('');

/** `lines` joined as one chunk, as a worker posts them. */
function chunkOf(lines: readonly string[]): Uint8Array {
  return bytes(lines.join(''));
}

test('ChunkQueue: bounded by records and bytes; a chunk that does not fit whole leaves its fitting prefix of lines', () => {
  const q = new ChunkQueue(5, 12);
  assert.equal(q.push(bytes('aa\nbb\n'), 2), 2);
  assert.equal(q.push(bytes('cc\ndd\n'), 2), 2, 'exactly at the byte bound');
  assert.deepEqual([q.length, q.size], [4, 12]);
  assert.equal(q.push(bytes('e\n'), 1), 0, 'byte bound: nothing fits');
  assert.deepEqual([q.length, q.size], [4, 12]);
  const r = new ChunkQueue(3, 100);
  assert.equal(r.push(bytes('a\nb\nc\nd\n'), 4), 3, 'record bound: the first three lines');
  assert.equal(text(r.take(10, 100)), 'a\nb\nc\n');
  const b = new ChunkQueue(100, 8);
  // Multi-byte UTF-8 counts in bytes: 'é' is 2. 'xé\n' (4) fits, 'yé\n' (4) fits, 'z\n' does not.
  assert.equal(b.push(bytes('xé\nyé\nz\n'), 3), 2);
  assert.equal(text(b.take(10, 100)), 'xé\nyé\n');
  assert.equal(b.size, 0);
});

test('ChunkQueue: take splits at a line boundary for either bound, always yields a line, unshift keeps order', () => {
  const q = new ChunkQueue(100, 1000);
  q.push(bytes('a1\na2\na3\n'), 3);
  q.push(bytes('b1\n'), 1);
  assert.equal(q.firstLineBytes(), 3);
  // Bytes: 7 → 'a1\na2\n' (6), the rest of the chunk stays first.
  const first = q.take(100, 7);
  assert.equal(text(first), 'a1\na2\n');
  assert.deepEqual(first.map((c) => c.records), [2]);
  assert.deepEqual([q.length, q.size], [2, 6]);
  // Records: 1 → 'a3\n' only.
  const second = q.take(1, 1000);
  assert.equal(text(second), 'a3\n');
  q.unshift([...first, ...second]);
  assert.deepEqual([q.length, q.size], [4, 12]);
  // Whole chunks where they fit: 2 chunks, records summed.
  const all = q.take(100, 1000);
  assert.equal(text(all), 'a1\na2\na3\nb1\n');
  assert.equal(all.reduce((n, c) => n + c.records, 0), 4);
  assert.deepEqual([q.length, q.size, q.firstLineBytes()], [0, 0, 0]);
  // A line longer than the byte limit still comes out, alone.
  q.push(bytes('0123456789\nx\n'), 2);
  assert.equal(text(q.take(10, 1)), '0123456789\n');
  assert.equal(text(q.take(10, 1)), 'x\n');
  q.push(bytes('a\n'), 1);
  q.push(bytes('b\n'), 1);
  assert.equal(q.clear(), 2);
  assert.deepEqual([q.length, q.size], [0, 0]);
});

/**
 * A ChunkLease that counts what is done to it: retains (splits), releases (every
 * call, including any past the last reference) and frees (onFree calls).
 * `balanced`: every reference was released exactly once.
 */
class CountingLease extends ChunkLease {
  retains = 0;
  releases = 0;
  private readonly freed: { n: number };

  constructor(onFree: () => void = () => {}) {
    const freed = { n: 0 };
    super(() => {
      freed.n++;
      onFree();
    });
    this.freed = freed;
  }

  get frees(): number {
    return this.freed.n;
  }

  get balanced(): boolean {
    return this.releases === this.retains + 1 && this.freed.n === 1;
  }

  /** For assertion messages. */
  get counts(): string {
    return `retains ${this.retains}, releases ${this.releases}, frees ${this.freed.n}`;
  }

  override retain(): void {
    this.retains++;
    super.retain();
  }

  override release(): void {
    this.releases++;
    super.release();
  }
}

/** The worker's side of detachAndReuse: the buffers it got back, kept for its next lines. */
const givenBack: ArrayBuffer[] = [];

/**
 * Give `data`'s ArrayBuffer back as a worker would (the transfer detaches it
 * here) and write new bytes into it there: a later read through `data` sees
 * nothing in JavaScript, and native code still holding the memory (a socket
 * write) sends 'X's. The memory is kept alive, as the worker keeps it: freed,
 * such a native read would be a use-after-free, not a clean assertion.
 */
function detachAndReuse(data: Uint8Array): void {
  const moved = structuredClone(data.buffer as ArrayBuffer, { transfer: [data.buffer as ArrayBuffer] });
  new Uint8Array(moved).fill(0x58); // 'X'
  givenBack.push(moved);
}

test('ChunkLease: counted references; onFree runs once, when the last is released, never again', () => {
  let frees = 0;
  const lease = new ChunkLease(() => frees++);
  lease.retain();
  lease.release();
  assert.deepEqual([frees, lease.released], [0, false]);
  lease.release();
  assert.deepEqual([frees, lease.released], [1, true]);
  lease.release();
  lease.release();
  assert.equal(frees, 1, 'a release past the last reference does not free again');
});

test('ChunkQueue lease: a chunk split by take() is freed only once every part is released', () => {
  const q = new ChunkQueue(100, 1000);
  const lease = new CountingLease();
  assert.equal(q.push(bytes('a1\na2\na3\na4\n'), 4, 0, 0, lease), 4);
  assert.equal(lease.releases, 0, 'queued whole: the queue holds it');
  // Three parts: bytes cut ('a1\na2\n'), records cut ('a3\n'), the rest whole ('a4\n').
  const first = q.take(100, 7);
  assert.equal(text(first), 'a1\na2\n');
  const second = q.take(1, 1000);
  assert.equal(text(second), 'a3\n');
  assert.equal(lease.retains, 2, 'each split retains: every part holds the buffer');
  assert.ok([...first, ...second].every((c) => c.lease === lease));
  releaseChunks(first);
  releaseChunks(second);
  assert.equal(lease.frees, 0, "'a4\\n' is still queued on the same buffer");
  assert.equal(lease.released, false);
  // A failed write puts parts back: no release, no retain.
  const third = q.take(100, 1000);
  q.unshift(third);
  assert.deepEqual([lease.releases, lease.retains, lease.frees], [2, 2, 0]);
  const last = q.take(100, 1000);
  assert.equal(text(last), 'a4\n');
  assert.equal(last[0]!.lease, lease);
  releaseChunks(last);
  assert.equal(lease.frees, 1, 'freed with the last part');
  assert.ok(lease.balanced, lease.counts);
  assert.equal(q.clear(), 0);
  assert.equal(lease.frees, 1, 'clear() of an empty queue releases nothing');
});

test('ChunkQueue lease: push with no room releases at once; a queued prefix keeps it; clear() releases what is queued, once', () => {
  // No room for a single line: by records, by bytes, by what is in flight (extraRecords / extraBytes).
  const full = new ChunkQueue(2, 100);
  full.push(bytes('a\nb\n'), 2);
  const byRecords = new CountingLease();
  assert.equal(full.push(bytes('c\n'), 1, 0, 0, byRecords), 0);
  assert.ok(byRecords.balanced, 'nothing fit (records): released at once');
  const bytesFull = new ChunkQueue(100, 4);
  bytesFull.push(bytes('ab\n'), 1);
  const byBytes = new CountingLease();
  assert.equal(bytesFull.push(bytes('cd\n'), 1, 0, 0, byBytes), 0);
  assert.ok(byBytes.balanced, 'nothing fit (bytes): released at once');
  const inflight = new ChunkQueue(5, 100);
  const byInflight = new CountingLease();
  assert.equal(inflight.push(bytes('x\n'), 1, 5, 0, byInflight), 0);
  assert.ok(byInflight.balanced, 'nothing fit (in flight): released at once');
  assert.deepEqual([inflight.length, inflight.size], [0, 0]);

  // A prefix of lines fits: the queue keeps the lease (the prefix is on its buffer).
  const q = new ChunkQueue(3, 1000);
  const prefix = new CountingLease();
  assert.equal(q.push(bytes('p1\np2\np3\np4\n'), 4, 0, 0, prefix), 3);
  assert.deepEqual([prefix.releases, prefix.frees], [0, 0], 'the queued prefix keeps the lease');
  const whole = new CountingLease();
  const q2 = new ChunkQueue(10, 1000);
  q2.push(bytes('w1\n'), 1, 0, 0, whole);
  const split = new CountingLease();
  q2.push(bytes('s1\ns2\ns3\n'), 3, 0, 0, split);
  // w1 and s1 are taken (being written, say); s2..s3 stay queued.
  const taken = q2.take(2, 1000);
  assert.equal(text(taken), 'w1\ns1\n');
  assert.equal(q2.clear(), 2);
  assert.equal(split.frees, 0, 'the taken part still holds the buffer after clear()');
  assert.equal(whole.frees, 0, 'a chunk taken before clear() is not clear()\'s to release');
  releaseChunks(taken);
  assert.ok(whole.balanced);
  assert.ok(split.balanced, `split: ${split.counts}`);
  // clear() releases the queued prefix; a second clear() releases nothing again.
  assert.equal(q.clear(), 3);
  assert.ok(prefix.balanced);
  assert.equal(q.clear(), 0);
  assert.equal(prefix.releases, 1, 'clear() twice: released once');
});

// ------------------------------------------------------------------- file

test('file sink: rotation past max_bytes keeps N files and never splits a line', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 4096, keep: 3, ...FILE_DEFAULTS });
  const total = 500;
  const lines: string[] = [];
  for (let i = 0; i < total; i++) {
    const l = line(i, i % 7 === 0 ? 300 : 20);
    lines.push(l);
    assert.equal(sink.write(l), true);
  }
  await sink.flush();
  assert.equal(sink.healthy, true);
  const names = readdirSync(dir).sort();
  assert.deepEqual(names, ['audit.log', 'audit.log.1', 'audit.log.2', 'audit.log.3']);
  // Oldest first: .3, .2, .1, then the live file. Every file holds whole lines only, within max_bytes.
  const contents = ['audit.log.3', 'audit.log.2', 'audit.log.1', 'audit.log'].map((n) => readFileSync(path.join(dir, n), 'utf8'));
  for (const c of contents) {
    assert.ok(Buffer.byteLength(c) <= 4096, `file within max_bytes (${Buffer.byteLength(c)})`);
    assert.ok(c.endsWith('\n'));
    for (const l of c.split('\n').slice(0, -1)) JSON.parse(l);
  }
  // The kept files are the newest records, contiguous and in order.
  const kept = contents.join('');
  assert.ok(lines.join('').endsWith(kept), 'the newest records, in order, no gaps');
  assert.deepEqual(sink.stats(), { written: total, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
  assert.equal(sink.write(line(1)), false, 'closed: refuses');
});

test('file sink: keep 0 starts the file over; an existing file is appended to and its size counted', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  writeFileSync(file, line(-1));
  const sink = await FileSink.open({ path: file, maxBytes: 1000, keep: 0, ...FILE_DEFAULTS });
  sink.write(line(0));
  await sink.flush();
  assert.equal(readFileSync(file, 'utf8'), line(-1) + line(0));
  for (let i = 1; i < 100; i++) sink.write(line(i));
  await sink.flush();
  assert.deepEqual(readdirSync(dir), ['audit.log']);
  assert.ok(statSync(file).size <= 1000);
  await sink.close();
});

test('file sink: a line longer than max_bytes goes alone into a fresh file', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 200, keep: 2, ...FILE_DEFAULTS });
  sink.write(line(1));
  sink.write(line(2, 500));
  sink.write(line(3));
  await sink.flush();
  assert.equal(readFileSync(`${file}.2`, 'utf8'), line(1));
  assert.equal(readFileSync(`${file}.1`, 'utf8'), line(2, 500));
  assert.equal(readFileSync(file, 'utf8'), line(3));
  await sink.close();
});

/** Lines with multi-byte UTF-8 (2-, 3- and 4-byte characters), as formatRecord leaves them. */
function wideLine(i: number, pad = 0): string {
  return `${JSON.stringify({ audit: 'statement', n: i, sql: `SELECT 'é漢😀' AS c${i}${'y'.repeat(pad)}` })}\n`;
}

/** Count (and optionally replace) FileHandle#writev calls while `body` runs. */
async function withWritev<T>(impl: ((orig: WritevFn, self: fsp.FileHandle, buffers: readonly NodeJS.ArrayBufferView[], call: number) => ReturnType<WritevFn>) | null, body: (calls: () => number) => Promise<T>): Promise<T> {
  const probe = await fsp.open(path.join(tempDir(), 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { writev: WritevFn };
  await probe.close();
  const orig = proto.writev;
  let calls = 0;
  proto.writev = function (this: fsp.FileHandle, buffers: readonly NodeJS.ArrayBufferView[], position?: number) {
    calls++;
    return impl === null ? orig.call(this, buffers, position) : impl(orig, this, buffers, calls);
  };
  try {
    return await body(() => calls);
  } finally {
    proto.writev = orig;
  }
}
type WritevFn = (this: fsp.FileHandle, buffers: readonly NodeJS.ArrayBufferView[], position?: number) => Promise<{ bytesWritten: number }>;

test('file sink: chunks land byte-exact and in order, what queued during a write goes in one writev, counters in records', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 1 << 20, keep: 1, ...FILE_DEFAULTS });
  const expected: string[] = [];
  let records = 0;
  await withWritev(null, async (calls) => {
    for (let c = 0; c < 50; c++) {
      const lines = Array.from({ length: 1 + (c % 7) }, (_, i) => wideLine(c * 10 + i));
      expected.push(...lines);
      records += lines.length;
      assert.equal(sink.writeChunk(chunkOf(lines), lines.length), true);
      if (c === 25) {
        // The main thread's own records take the same path.
        const own = line(-c);
        expected.push(own);
        records++;
        assert.equal(sink.write(own), true);
      }
    }
    await sink.flush();
    // The first chunk starts the write; everything after it waits for that one write, then goes in a single writev.
    assert.equal(calls(), 2);
  });
  assert.deepEqual(readFileSync(file), Buffer.from(expected.join(''), 'utf8'));
  assert.deepEqual(sink.stats(), { written: records, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
});

test('file sink: rotation splits a multi-line chunk at the last line that fits; no file passes max_bytes', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const maxBytes = 1000;
  const sink = await FileSink.open({ path: file, maxBytes, keep: 10, ...FILE_DEFAULTS });
  // One small line first, so the chunk starts mid-file; then one chunk of 40 lines of unequal width (~2.8 files).
  const lines = [line(0), ...Array.from({ length: 40 }, (_, i) => wideLine(i + 1, (i * 7) % 30))];
  sink.write(lines[0]!);
  assert.equal(sink.writeChunk(chunkOf(lines.slice(1)), 40), true);
  await sink.flush();
  const names = readdirSync(dir)
    .filter((n) => n.startsWith('audit.log'))
    .sort((a, b) => (b.length - a.length) || b.localeCompare(a)); // oldest (.3) first, live file last
  assert.ok(names.length >= 3, `rotated at least twice (${names.join(', ')})`);
  assert.equal(names.at(-1), 'audit.log');
  const files = names.map((n) => readFileSync(path.join(dir, n)));
  for (const [i, f] of files.entries()) {
    assert.ok(f.length <= maxBytes, `${names[i]} within max_bytes (${f.length})`);
    assert.equal(f.at(-1), 0x0a, 'ends on a line end');
    const fileLines = f.toString('utf8').split('\n').slice(0, -1);
    for (const l of fileLines) JSON.parse(l);
    if (i < files.length - 1) {
      // Rotated only when the next line did not fit: the split is at the last line that fits, not earlier.
      const nextFirst = Buffer.byteLength(`${files[i + 1]!.toString('utf8').split('\n')[0]!}\n`);
      assert.ok(f.length + nextFirst > maxBytes, `${names[i]} was full (${f.length} + ${nextFirst})`);
    }
  }
  assert.deepEqual(Buffer.concat(files), Buffer.from(lines.join(''), 'utf8'), 'every byte once, in order');
  assert.deepEqual(sink.stats(), { written: 41, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
});

test('file sink: a line longer than max_bytes inside a chunk goes alone into a fresh file', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 200, keep: 3, ...FILE_DEFAULTS });
  assert.equal(sink.writeChunk(chunkOf([line(1), line(2, 500), line(3), line(4)]), 4), true);
  await sink.flush();
  assert.equal(readFileSync(`${file}.2`, 'utf8'), line(1));
  assert.equal(readFileSync(`${file}.1`, 'utf8'), line(2, 500));
  assert.equal(readFileSync(file, 'utf8'), line(3) + line(4));
  assert.equal(sink.stats().written, 4);
  await sink.close();
});

test('file sink: a chunk larger than the room left in the queue keeps its fitting lines; the rest are dropped (counted)', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  mkdirSync(file); // failing, so the queue only fills
  const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 5, maxQueuedBytes: 1 << 20, retryMs: 20 });
  const lines = Array.from({ length: 8 }, (_, i) => wideLine(i));
  assert.equal(sink.writeChunk(chunkOf(lines.slice(0, 3)), 3), true);
  assert.equal(sink.writeChunk(chunkOf(lines.slice(3)), 5), false, 'only 2 of 5 fit');
  assert.deepEqual(sink.stats(), { written: 0, dropped: 3, queued: 5, failures: sink.stats().failures });
  assert.equal(sink.healthy, false, 'saturated');
  rmSync(file, { recursive: true });
  await until(() => sink.healthy && sink.stats().queued === 0);
  assert.equal(readFileSync(file, 'utf8'), lines.slice(0, 5).join(''));
  assert.equal(sink.stats().written, 5);
  await sink.close();
});

test('file sink: a short writev is continued from the right byte (across buffers)', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  // Lazy: the chunks queue while the file opens, so the first writev gets several buffers.
  const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, ...FILE_DEFAULTS });
  const chunks = [0, 1, 2].map((c) => [wideLine(c * 2), wideLine(c * 2 + 1)]);
  await withWritev(
    (orig, self, buffers, call) => {
      if (call > 1) return orig.call(self, buffers);
      // The first buffer whole and 5 bytes of the second (mid-line, mid-character).
      const first = buffers[0] as Uint8Array;
      const second = (buffers[1] as Uint8Array).subarray(0, 5);
      return orig.call(self, [first, second]);
    },
    async (calls) => {
      for (const c of chunks) sink.writeChunk(chunkOf(c), 2);
      await sink.flush();
      assert.equal(calls(), 2);
    },
  );
  assert.deepEqual(readFileSync(file), Buffer.from(chunks.flat().join(''), 'utf8'));
  assert.deepEqual(sink.stats(), { written: 6, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
});

test('file sink: a write failing after part of a batch is truncated away; the retry writes whole lines once', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 1 << 20, keep: 1, ...FILE_DEFAULTS });
  sink.write(line(0));
  await sink.flush();
  const lines = [1, 2, 3, 4].map((i) => wideLine(i));
  await withWritev(
    (orig, self, buffers, call) => {
      if (call === 1) return orig.call(self, [(buffers[0] as Uint8Array).subarray(0, 17)]);
      if (call === 2) return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
      return orig.call(self, buffers);
    },
    async () => {
      sink.writeChunk(chunkOf(lines), 4);
      await until(() => !sink.healthy);
      assert.match(sink.lastError ?? '', /ENOSPC/);
      assert.equal(readFileSync(file, 'utf8'), line(0), 'the 17 bytes written before the error are gone');
      assert.equal(sink.stats().queued, 4);
      await until(() => sink.healthy && sink.stats().queued === 0);
    },
  );
  assert.deepEqual(readFileSync(file), Buffer.from(line(0) + lines.join(''), 'utf8'));
  assert.deepEqual(sink.stats(), { written: 5, dropped: 0, queued: 0, failures: 1 });
  await sink.close();
});

test('file sink: open fails at start-up with RG_AUDIT_SINK (path is a directory; parent is a file)', async () => {
  const dir = tempDir();
  await assert.rejects(FileSink.open({ path: dir, maxBytes: 1000, keep: 1, ...FILE_DEFAULTS }), (err: Error & { code?: string }) => isErrorCode(err.code) && err.code === 'RG_AUDIT_SINK' && /EISDIR/.test(err.message));
  const notDir = path.join(dir, 'plain-file');
  writeFileSync(notDir, '');
  await assert.rejects(FileSink.open({ path: path.join(notDir, 'audit.log'), maxBytes: 1000, keep: 1, ...FILE_DEFAULTS }), /ENOTDIR/);
});

test('file sink: a failing destination turns it unhealthy, keeps records queued (bounded), and heals when the path works again', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  // Occupy the path with a directory: every open gives EISDIR.
  mkdirSync(file);
  const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 20, maxQueuedBytes: 1 << 20, retryMs: 20 });
  const changes: boolean[] = [];
  sink.onHealthChange((h) => changes.push(h));
  assert.equal(sink.write(line(0)), true);
  await until(() => !sink.healthy);
  assert.match(sink.lastError ?? '', /EISDIR/);
  // flush() does not hang on a failing destination.
  await sink.flush();
  for (let i = 1; i < 30; i++) sink.write(line(i));
  const s = sink.stats();
  assert.equal(s.queued, 20);
  assert.equal(s.dropped, 10);
  assert.ok(s.failures >= 1);
  // The directory goes away: the retry opens the file and writes the queue, in order.
  rmSync(file, { recursive: true });
  await until(() => sink.stats().queued === 0);
  await until(() => sink.healthy);
  const written = readFileSync(file, 'utf8').split('\n').slice(0, -1).map((l) => (JSON.parse(l) as { n: number }).n);
  assert.deepEqual(written, Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(changes, [false, true]);
  await sink.close();
});

/** A file sink (rotating at 300 bytes) that has written line 0, whose directory is then removed: the next rotation cannot reopen the path until `sub` is made again. */
async function sinkWithoutItsDirectory(): Promise<{ sub: string; file: string; sink: FileSink }> {
  const sub = path.join(tempDir(), 'logs');
  mkdirSync(sub);
  const file = path.join(sub, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 300, keep: 1, ...FILE_DEFAULTS });
  sink.write(line(0));
  await sink.flush();
  rmSync(sub, { recursive: true });
  return { sub, file, sink };
}

test('file sink: the file\'s directory removed while running → unhealthy; recreated → healthy again', async () => {
  const { sub, sink } = await sinkWithoutItsDirectory();
  // The next rotation must reopen the path in a directory that is gone.
  for (let i = 1; i < 20; i++) sink.write(line(i));
  await until(() => !sink.healthy);
  assert.match(sink.lastError ?? '', /ENOENT/);
  mkdirSync(sub);
  await until(() => sink.healthy && sink.stats().queued === 0);
  await sink.close();
  assert.equal(sink.stats().dropped, 0);
});

test('file sink: saturation (≥ 90 % of the queue) is unhealthy until it drains below 50 %', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  mkdirSync(file); // failing, so the queue only fills
  const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 10, maxQueuedBytes: 1 << 20, retryMs: 10 });
  const seen: boolean[] = [];
  sink.onHealthChange((h) => seen.push(h));
  for (let i = 0; i < 10; i++) sink.write(line(i));
  rmSync(file, { recursive: true });
  await until(() => sink.healthy && sink.stats().queued === 0);
  assert.equal(seen.at(-1), true);
  await sink.close();
});

test('file sink lease: held while its writev is in flight, released once the bytes are in the file', async () => {
  const file = path.join(tempDir(), 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 1 << 20, keep: 1, ...FILE_DEFAULTS });
  const lines = [0, 1, 2].map((i) => wideLine(i));
  let atFree: Buffer | null = null;
  const lease = new CountingLease(() => {
    atFree = readFileSync(file);
  });
  let open = (): void => {};
  const gate = new Promise<void>((r) => (open = r));
  await withWritev(
    async (orig, self, buffers) => {
      await gate;
      return orig.call(self, buffers);
    },
    async (calls) => {
      assert.equal(sink.writeChunk(chunkOf(lines), 3, lease), true);
      assert.equal(lease.releases, 0, 'not at writeChunk');
      await until(() => calls() === 1);
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(lease.releases, 0, 'not while the writev is in flight');
      open();
      await sink.flush();
    },
  );
  assert.ok(lease.balanced, lease.counts);
  assert.deepEqual(atFree, Buffer.from(lines.join(''), 'utf8'), 'when it was released, every byte was in the file');
  await sink.close();
  assert.equal(lease.releases, 1, 'close() does not release it again');
});

test('file sink lease: held while a failing destination keeps the records for retry, released once the retry writes them', async () => {
  const { sub, file, sink } = await sinkWithoutItsDirectory();
  // The lines that fit the open (now unlinked) file go out; rotation then has to
  // reopen the path in a directory that is gone: the rest of the chunk waits.
  const lines = Array.from({ length: 8 }, (_, i) => line(i + 1));
  let atFree: unknown = null;
  const lease = new CountingLease(() => {
    try {
      atFree = readFileSync(file);
    } catch (err) {
      atFree = err;
    }
  });
  assert.equal(sink.writeChunk(chunkOf(lines), 8, lease), true);
  await until(() => sink.stats().failures >= 3);
  assert.match(sink.lastError ?? '', /ENOENT/);
  const waiting = sink.stats().queued;
  assert.ok(waiting > 0 && waiting < 8, `part of the chunk written, ${waiting} lines wait`);
  assert.equal(lease.retains, 1, 'split: the written part and the waiting part each held a reference');
  assert.equal(lease.releases, 1, 'the written part released its reference');
  assert.equal(lease.frees, 0, 'the waiting part still holds the buffer, across retries');
  mkdirSync(sub);
  await until(() => sink.healthy && sink.stats().queued === 0);
  assert.ok(lease.balanced, lease.counts);
  const retried = readFileSync(file);
  assert.equal(retried.toString('utf8'), lines.slice(8 - waiting).join(''), 'the waiting lines, once');
  assert.deepEqual(atFree, retried, 'released once the retried lines were in the file');
  await sink.close();
  assert.equal(sink.stats().dropped, 0);
});

test('file sink lease: dropped records release it — no room in the queue, close() giving up on a failing destination, a closed sink', async () => {
  const file = path.join(tempDir(), 'audit.log');
  mkdirSync(file); // every open gives EISDIR: the queue only fills
  const sink = FileSink.lazy({ path: file, maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 4, maxQueuedBytes: 1 << 20, retryMs: 20 });
  const whole = new CountingLease();
  const prefix = new CountingLease();
  const none = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([line(0), line(1)]), 2, whole), true);
  assert.equal(sink.writeChunk(chunkOf([line(2), line(3), line(4)]), 3, prefix), false, 'two of three fit');
  assert.equal(sink.writeChunk(chunkOf([line(5)]), 1, none), false);
  assert.ok(none.balanced, 'nothing queued: released at once');
  await until(() => sink.stats().failures >= 2);
  assert.match(sink.lastError ?? '', /EISDIR/);
  assert.deepEqual([whole.releases, prefix.releases], [0, 0], 'queued for the retry: held');
  await sink.close();
  assert.ok(whole.balanced, 'close() dropped it: released');
  assert.ok(prefix.balanced, 'close() dropped the queued prefix: released');
  assert.deepEqual(sink.stats(), { written: 0, dropped: 6, queued: 0, failures: sink.stats().failures });
  const late = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([line(6)]), 1, late), false);
  assert.ok(late.balanced, 'closed: released at once');
});

test('file sink lease: close() while a retried write is in flight and fails again drops those records and releases them', async () => {
  const file = path.join(tempDir(), 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 1 << 20, keep: 1, ...FILE_DEFAULTS });
  const lease = new CountingLease();
  let fail = (): void => {};
  const failNow = new Promise<void>((r) => (fail = r));
  await withWritev(
    async (_orig, _self, _buffers, call) => {
      // The retry (call 2) stays in flight until the test lets it fail.
      if (call === 2) await failNow;
      throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    },
    async (calls) => {
      assert.equal(sink.writeChunk(chunkOf([line(0), line(1)]), 2, lease), true);
      await until(() => calls() === 2);
      assert.equal(sink.healthy, false);
      assert.equal(lease.releases, 0);
      const closing = sink.close();
      await new Promise((r) => setTimeout(r, 20));
      fail();
      await closing;
      assert.equal(calls(), 2, 'no retry after close()');
    },
  );
  assert.ok(lease.balanced, `the buffer never went back (${lease.counts})`);
  assert.deepEqual(sink.stats(), { written: 0, dropped: 2, queued: 0, failures: 2 });
});

test('file sink lease: after release the buffer is never read (onFree detaches and reuses it); the files hold every byte', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 400, keep: 10, ...FILE_DEFAULTS });
  // One chunk over three files: rotation splits it, and the part after the first rotation fails once.
  const lines = Array.from({ length: 20 }, (_, i) => wideLine(i));
  const expected = Buffer.from(lines.join(''), 'utf8');
  const data = chunkOf(lines);
  const lease = new CountingLease(() => detachAndReuse(data));
  let retry = (): void => {};
  const retryNow = new Promise<void>((r) => (retry = r));
  await withWritev(
    async (orig, self, buffers, call) => {
      if (call === 2) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      if (call === 3) await retryNow;
      return orig.call(self, buffers);
    },
    async (calls) => {
      assert.equal(sink.writeChunk(data, 20, lease), true);
      await until(() => calls() === 3);
      assert.equal(sink.healthy, false);
      assert.equal(lease.frees, 0, 'the failed part waits on the buffer');
      assert.equal(data.byteLength, expected.length);
      retry();
      await until(() => sink.healthy && sink.stats().queued === 0);
    },
  );
  assert.ok(lease.balanced, lease.counts);
  assert.ok(lease.retains >= 2, 'split at least twice');
  assert.equal(data.byteLength, 0, 'onFree detached the buffer');
  const names = readdirSync(dir)
    .filter((n) => n.startsWith('audit.log'))
    .sort((a, b) => (b.length - a.length) || b.localeCompare(a)); // oldest first, live file last
  assert.ok(names.length >= 3, `rotated at least twice (${names.join(', ')})`);
  assert.deepEqual(Buffer.concat(names.map((n) => readFileSync(path.join(dir, n)))), expected, 'every byte once, in order, none reused');
  assert.deepEqual(sink.stats(), { written: 20, dropped: 0, queued: 0, failures: 1 });
  await sink.close();
});

// ----------------------------------------------------------------- stdout

class SlowStream extends Writable {
  chunks: string[] = [];
  pending: Array<() => void> = [];
  constructor() {
    super({ highWaterMark: 64, decodeStrings: false });
  }
  override _write(chunk: unknown, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(String(chunk));
    this.pending.push(cb);
  }
  release(): void {
    const p = this.pending;
    this.pending = [];
    for (const cb of p) cb();
  }
}

test('stdout sink: honours backpressure with a bounded queue, drains in order, counts drops', async () => {
  const stream = new SlowStream();
  const sink = new StdoutSink({ stream, maxQueuedRecords: 5, maxQueuedBytes: 1 << 20 });
  const accepted: boolean[] = [];
  for (let i = 0; i < 10; i++) accepted.push(sink.write(line(i, 100)));
  // The first write fills the stream's 64-byte buffer; five more queue; the rest are dropped.
  assert.deepEqual(accepted, [true, true, true, true, true, true, false, false, false, false]);
  assert.equal(sink.healthy, false, 'saturated');
  assert.equal(sink.stats().dropped, 4);
  while (stream.pending.length > 0 || sink.stats().queued > 0) {
    stream.release();
    await new Promise((r) => setImmediate(r));
  }
  await sink.flush();
  assert.equal(sink.healthy, true);
  assert.equal(stream.chunks.join(''), [0, 1, 2, 3, 4, 5].map((i) => line(i, 100)).join(''));
  assert.deepEqual(sink.stats(), { written: 6, dropped: 4, queued: 0, failures: 0 });
  await sink.close();
});

test('stdout sink: chunks go to the stream as their own bytes; under backpressure they queue (bounded, split at lines) and drain in order', async () => {
  const stream = new SlowStream();
  const sink = new StdoutSink({ stream, maxQueuedRecords: 3, maxQueuedBytes: 1 << 20 });
  const lines = Array.from({ length: 7 }, (_, i) => wideLine(i));
  const first = chunkOf(lines.slice(0, 3));
  assert.equal(sink.writeChunk(first, 3), true, 'written at once (and fills the 64-byte buffer)');
  assert.equal(sink.writeChunk(chunkOf(lines.slice(3, 5)), 2), true, 'queued');
  assert.equal(sink.writeChunk(chunkOf(lines.slice(5, 7)), 2), false, 'one of two fits the 3-record queue');
  assert.deepEqual(sink.stats(), { written: 3, dropped: 1, queued: 3, failures: 0 });
  while (stream.pending.length > 0 || sink.stats().queued > 0) {
    stream.release();
    await new Promise((r) => setImmediate(r));
  }
  await sink.flush();
  assert.equal(stream.chunks[0], lines.slice(0, 3).join(''), 'the chunk is one stream write');
  assert.equal(stream.chunks.join(''), lines.slice(0, 6).join(''));
  assert.deepEqual(sink.stats(), { written: 6, dropped: 1, queued: 0, failures: 0 });
  await sink.close();
});

test('stdout sink: a stream error (EPIPE) is final: unhealthy, later lines dropped', async () => {
  const stream = new Writable({
    write(_chunk, _enc, cb) {
      cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    },
  });
  const sink = new StdoutSink({ stream, maxQueuedRecords: 5, maxQueuedBytes: 1 << 20 });
  sink.write(line(0));
  await until(() => !sink.healthy);
  assert.match(sink.lastError ?? '', /EPIPE/);
  assert.equal(sink.write(line(1)), false);
  assert.equal(sink.stats().failures, 1);
  await sink.close();
});

test('stdout sink lease: released in the write callback, not before; chunks queued under backpressure are released once written after drain', async () => {
  const stream = new SlowStream();
  const sink = new StdoutSink({ stream, maxQueuedRecords: 4, maxQueuedBytes: 1 << 20 });
  const lines = Array.from({ length: 8 }, (_, i) => wideLine(i));
  const [a, b, c, d] = [0, 1, 2, 3].map(() => new CountingLease()) as [CountingLease, CountingLease, CountingLease, CountingLease];
  assert.equal(sink.writeChunk(chunkOf(lines.slice(0, 2)), 2, a), true, 'to the stream (past its 64-byte buffer: wait for drain)');
  assert.equal(sink.writeChunk(chunkOf(lines.slice(2, 4)), 2, b), true, 'queued');
  assert.equal(sink.writeChunk(chunkOf(lines.slice(4, 7)), 3, c), false, 'two of three queued');
  assert.equal(sink.writeChunk(chunkOf(lines.slice(7)), 1, d), false, 'no room');
  assert.ok(d.balanced, 'dropped: released at once');
  await new Promise((r) => setImmediate(r));
  assert.equal(stream.pending.length, 1, "a's bytes are in _write, its callback not called");
  assert.deepEqual([a.releases, b.releases, c.releases], [0, 0, 0]);
  // a's callback releases a; 'drain' then hands b and c to the stream, which takes b first.
  stream.release();
  await until(() => a.releases === 1);
  await until(() => stream.pending.length === 1);
  assert.deepEqual([b.releases, c.releases], [0, 0], 'b in _write, c buffered in the stream');
  stream.release();
  await until(() => b.releases === 1);
  await until(() => stream.pending.length === 1);
  assert.equal(c.releases, 0, 'c in _write');
  stream.release();
  await until(() => c.releases === 1);
  await sink.flush();
  for (const [name, l] of Object.entries({ a, b, c, d })) assert.ok(l.balanced, `${name}: ${l.counts}`);
  assert.equal(stream.chunks.join(''), lines.slice(0, 6).join(''));
  assert.deepEqual(sink.stats(), { written: 6, dropped: 2, queued: 0, failures: 0 });
  await sink.close();
});

test('stdout sink lease: a stream error releases the failed write, what was queued, and every later chunk at once', async () => {
  const stream = new SlowStream();
  const sink = new StdoutSink({ stream, maxQueuedRecords: 10, maxQueuedBytes: 1 << 20 });
  const inStream = new CountingLease();
  const queued = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([wideLine(0), wideLine(1)]), 2, inStream), true);
  assert.equal(sink.writeChunk(chunkOf([wideLine(2)]), 1, queued), true);
  assert.equal(stream.pending.length, 1);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([inStream.releases, queued.releases], [0, 0]);
  const fail = stream.pending.shift() as (err: Error) => void;
  fail(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
  await until(() => !sink.healthy);
  await until(() => inStream.releases > 0 && queued.releases > 0);
  assert.ok(inStream.balanced, 'the write callback (with the error) released it');
  assert.ok(queued.balanced, 'the queue was dropped: released');
  const later = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([wideLine(3)]), 1, later), false);
  assert.ok(later.balanced, 'failed sink: released at once');
  await sink.close();
  assert.deepEqual(sink.stats(), { written: 2, dropped: 2, queued: 0, failures: 1 });
});

// ------------------------------------------------------------------- http

interface Received {
  lines: string[];
  contentType: string | undefined;
  at: number;
}

/** A collector answering with the statuses given in turn (then 200). */
async function collector(statuses: number[] = [], options: { delayMs?: number; retryAfter?: string } = {}): Promise<{ url: string; received: Received[]; requests: number; close: () => Promise<void>; statuses: number[] }> {
  const state = { received: [] as Received[], requests: 0, statuses };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.requests++;
      const status = state.statuses.shift() ?? 200;
      setTimeout(() => {
        if (status === 200) {
          const body = Buffer.concat(chunks).toString('utf8');
          state.received.push({ lines: body.split('\n').slice(0, -1), contentType: req.headers['content-type'], at: Date.now() });
        }
        res.writeHead(status, options.retryAfter !== undefined && status !== 200 ? { 'retry-after': options.retryAfter } : {});
        res.end(status === 200 ? 'ok' : 'no');
      }, options.delayMs ?? 0);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/ingest?x=1`,
    get received() {
      return state.received;
    },
    get requests() {
      return state.requests;
    },
    statuses,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const HTTP_DEFAULTS = { batchMaxRecords: 10, batchMaxBytes: 1 << 20, flushIntervalMs: 50, timeoutMs: 2000, maxQueuedRecords: 1000, maxQueuedBytes: 1 << 20, retryInitialMs: 20, retryMaxMs: 200 };

test('http sink: full batches go at once, a partial one at the flush interval; NDJSON, in order', async () => {
  const c = await collector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, flushIntervalMs: 100 });
  for (let i = 0; i < 25; i++) sink.write(line(i));
  await until(() => c.received.length === 2);
  assert.deepEqual(c.received.map((r) => r.lines.length), [10, 10]);
  // The last 5 wait for the interval.
  await until(() => c.received.length === 3);
  assert.equal(c.received[2]!.lines.length, 5);
  assert.equal(c.received[0]!.contentType, 'application/x-ndjson');
  const all = c.received.flatMap((r) => r.lines).map((l) => (JSON.parse(l) as { n: number }).n);
  assert.deepEqual(all, Array.from({ length: 25 }, (_, i) => i));
  // The collector has the batch before the sink has its answer: wait for that too.
  await sink.flush();
  assert.deepEqual(sink.stats(), { written: 25, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
  await c.close();
});

test('http sink: batch byte limit splits batches', async () => {
  const c = await collector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, batchMaxRecords: 1000, batchMaxBytes: 300 });
  for (let i = 0; i < 10; i++) sink.write(line(i, 60)); // ~100 bytes each
  await sink.flush();
  await until(() => c.received.flatMap((r) => r.lines).length === 10);
  for (const r of c.received) assert.ok(r.lines.join('\n').length + 1 <= 300);
  await sink.close();
  await c.close();
});

test('http sink: one chunk is cut into batches at line boundaries by records and by bytes', async () => {
  const c = await collector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, batchMaxRecords: 10, batchMaxBytes: 700 });
  const lines = Array.from({ length: 25 }, (_, i) => wideLine(i, i === 12 ? 800 : 0));
  assert.equal(sink.writeChunk(chunkOf(lines), 25), true);
  await sink.flush();
  await until(() => c.received.flatMap((r) => r.lines).length === 25);
  for (const r of c.received) {
    assert.ok(r.lines.length <= 10);
    // Within the byte bound, except a single line longer than it (it goes alone).
    const size = Buffer.byteLength(r.lines.join('\n')) + 1;
    assert.ok(size <= 700 || r.lines.length === 1, `batch of ${size} bytes`);
  }
  assert.ok(c.received.some((r) => r.lines.length === 1 && r.lines[0]!.length > 700), 'the long line alone');
  assert.deepEqual(c.received.flatMap((r) => r.lines).map((l) => `${l}\n`), lines, 'every line once, in order, byte-exact');
  assert.deepEqual(sink.stats(), { written: 25, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
  await c.close();
});

test('http sink: 500s retry the same batch with exponential backoff; unhealthy until a batch succeeds', async () => {
  const c = await collector([500, 503, 500]);
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 40, retryMaxMs: 1000, random: () => 1 });
  const health: boolean[] = [];
  sink.onHealthChange((h) => health.push(h));
  for (let i = 0; i < 10; i++) sink.write(line(i));
  const t0 = Date.now();
  await until(() => c.received.length === 1, 5000);
  const elapsed = Date.now() - t0;
  // Backoff with random() = 1: 40 + 80 + 160 ms before the 4th attempt.
  assert.ok(elapsed >= 270, `backoff waited ${elapsed} ms`);
  assert.equal(c.requests, 4);
  assert.deepEqual(c.received[0]!.lines.map((l) => (JSON.parse(l) as { n: number }).n), Array.from({ length: 10 }, (_, i) => i));
  // The collector has the batch; the sink hears the 200 a moment later.
  await until(() => sink.healthy);
  assert.deepEqual(health, [false, true]);
  assert.equal(sink.healthy, true);
  assert.deepEqual(sink.stats(), { written: 10, dropped: 0, queued: 0, failures: 3 });
  await sink.close();
  await c.close();
});

test('http sink: backoff is capped and jittered (½ to 1 × the step)', async () => {
  const c = await collector([500, 500, 500, 500]);
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 30, retryMaxMs: 60, random: () => 0 });
  sink.write(line(0));
  await sink.flush();
  const t0 = Date.now();
  await until(() => c.received.length === 1, 5000);
  // random() = 0 → half of each step: 15 + 30 + 30 + 30 (capped at 60, halved).
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 90 && elapsed < 1000, `elapsed ${elapsed}`);
  await sink.close();
  await c.close();
});

test('http sink: connection refused → unhealthy, queue bounded (drops counted); the collector comes back → recovers and delivers', async () => {
  // Find a free port, then keep it closed for a while.
  const port = await freeLoopbackPort();
  const sink = new HttpSink({ url: `http://127.0.0.1:${port}/`, ...HTTP_DEFAULTS, maxQueuedRecords: 30, retryInitialMs: 20, retryMaxMs: 50 });
  for (let i = 0; i < 50; i++) sink.write(line(i));
  await until(() => sink.lastError !== null);
  assert.equal(sink.healthy, false);
  assert.match(sink.lastError ?? '', /ECONNREFUSED/);
  const s = sink.stats();
  assert.equal(s.dropped, 20, 'beyond 30 queued records (in flight included), writes are refused');
  assert.equal(s.queued, 30);
  // Collector starts on that port.
  const got: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push(...Buffer.concat(chunks).toString().split('\n').slice(0, -1));
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  await until(() => got.length === 30, 5000);
  await until(() => sink.healthy);
  assert.deepEqual(got.map((l) => (JSON.parse(l) as { n: number }).n), Array.from({ length: 30 }, (_, i) => i));
  await sink.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

test('http sink: a 4xx rejection drops that batch (counted) and does not retry it', async () => {
  const c = await collector([400]);
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 10 });
  for (let i = 0; i < 10; i++) sink.write(line(i));
  await until(() => !sink.healthy);
  for (let i = 10; i < 20; i++) sink.write(line(i));
  await until(() => c.received.length === 1);
  assert.deepEqual(c.received[0]!.lines.map((l) => (JSON.parse(l) as { n: number }).n), Array.from({ length: 10 }, (_, i) => i + 10));
  await until(() => sink.healthy);
  assert.deepEqual(sink.stats(), { written: 10, dropped: 10, queued: 0, failures: 1 });
  await sink.close();
  await c.close();
});

test('http sink, fail-closed (keepRejected): a rejected batch is retried until the collector takes it, then the sink is healthy again — with nothing else to send', async () => {
  const c = await collector([401, 403, 401]);
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 10, retryMaxMs: 40, keepRejected: true });
  const health: boolean[] = [];
  sink.onHealthChange((h) => health.push(h));
  for (let i = 0; i < 10; i++) sink.write(line(i));
  await until(() => c.received.length === 1, 5000);
  await until(() => sink.healthy);
  assert.equal(c.requests, 4);
  assert.deepEqual(c.received[0]!.lines.map((l) => (JSON.parse(l) as { n: number }).n), Array.from({ length: 10 }, (_, i) => i));
  assert.deepEqual(health, [false, true]);
  assert.deepEqual(sink.stats(), { written: 10, dropped: 0, queued: 0, failures: 3 });
  await sink.close();
  await c.close();
});

test('http sink: Retry-After on 429 is honoured (up to retry_max_ms)', async () => {
  const c = await collector([429], { retryAfter: '0.3' });
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 10, retryMaxMs: 2000 });
  sink.write(line(0));
  const t0 = Date.now();
  await sink.flush();
  await until(() => c.received.length === 1, 5000);
  assert.ok(Date.now() - t0 >= 290, 'waited for Retry-After');
  await sink.close();
  await c.close();
});

test('http sink: a Retry-After HTTP-date is honoured too', async () => {
  // HTTP-dates have whole seconds: two seconds ahead is at least one second's wait.
  const c = await collector([503], { retryAfter: new Date(Date.now() + 2000).toUTCString() });
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 10, retryMaxMs: 5000 });
  sink.write(line(0));
  const t0 = Date.now();
  await sink.flush();
  await until(() => c.received.length === 1, 5000);
  assert.ok(Date.now() - t0 >= 900, `waited ${Date.now() - t0} ms for the date`);
  await sink.close();
  await c.close();
});

test('http sink: close delivers what is queued, within the close timeout; a dead collector costs at most that', async () => {
  const c = await collector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, flushIntervalMs: 60_000 });
  for (let i = 0; i < 7; i++) sink.write(line(i));
  await sink.close();
  assert.equal(c.received.flatMap((r) => r.lines).length, 7);
  await c.close();

  const dead = await collector(Array.from({ length: 100 }, () => 503));
  const sink2 = new HttpSink({ url: dead.url, ...HTTP_DEFAULTS, closeTimeoutMs: 200 });
  for (let i = 0; i < 7; i++) sink2.write(line(i));
  const t0 = Date.now();
  await sink2.close();
  assert.ok(Date.now() - t0 < 1500);
  assert.equal(sink2.stats().dropped, 7);
  assert.equal(sink2.stats().queued, 0);
  await dead.close();
});

test('http sink: a url that is not http(s) is refused with RG_AUDIT_SINK', () => {
  assert.throws(() => new HttpSink({ url: 'ftp://example/', ...HTTP_DEFAULTS }), (err: Error & { code?: string }) => err.code === 'RG_AUDIT_SINK');
});

interface HeldRequest {
  body: Buffer;
  answer: (status: number) => void;
}

/** A collector that holds every request, body read, until the test answers it. */
async function heldCollector(port = 0): Promise<{ url: string; requests: HeldRequest[]; close: () => Promise<void> }> {
  const requests: HeldRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        body: Buffer.concat(chunks),
        answer: (status) => {
          res.writeHead(status);
          res.end();
        },
      });
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// The HTTP sink's contract differs from the file's and stdout's: it copies each batch as
// it takes it for a request (undici does not say when the socket is done with a body — a
// collector may answer before reading it all) and releases the chunks' buffers right then;
// retries resend its copy. So: released once sent, and never read again after release.

test('http sink lease: released once the batch is copied for its request; the body is intact though the buffer is reused at once', async () => {
  const c = await heldCollector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS });
  const lines = [0, 1, 2].map((i) => wideLine(i));
  const data = chunkOf(lines);
  const lease = new CountingLease(() => detachAndReuse(data));
  assert.equal(sink.writeChunk(data, 3, lease), true);
  assert.equal(lease.releases, 0, 'queued: held');
  const flushed = sink.flush();
  await until(() => c.requests.length === 1);
  assert.ok(lease.balanced, `sent (not yet answered): released — ${lease.counts}`);
  assert.equal(data.byteLength, 0, 'onFree detached the buffer');
  assert.deepEqual(c.requests[0]!.body, Buffer.from(lines.join(''), 'utf8'));
  c.requests[0]!.answer(204);
  await flushed;
  assert.deepEqual(sink.stats(), { written: 3, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
  assert.equal(lease.releases, 1);
  await c.close();
});

test('http sink lease: a 4xx rejection drops the batch (released when it was sent) and does not retry it', async () => {
  const c = await heldCollector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS });
  const lease = new CountingLease();
  sink.writeChunk(chunkOf([line(0), line(1)]), 2, lease);
  void sink.flush();
  await until(() => c.requests.length === 1);
  assert.ok(lease.balanced, lease.counts);
  c.requests[0]!.answer(400);
  await until(() => sink.stats().dropped === 2);
  assert.equal(sink.healthy, false);
  assert.deepEqual(sink.stats(), { written: 0, dropped: 2, queued: 0, failures: 1 });
  await sink.close();
  assert.equal(c.requests.length, 1, 'not retried');
  assert.equal(lease.releases, 1, 'released once');
  await c.close();
});

test('http sink lease: 5xx retries resend the same bytes from the sink\'s copy, after the buffer went back and was overwritten', async () => {
  const c = await heldCollector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, retryInitialMs: 20, random: () => 0 });
  const lines = [0, 1, 2].map((i) => wideLine(i));
  const data = chunkOf(lines);
  const lease = new CountingLease(() => detachAndReuse(data));
  sink.writeChunk(data, 3, lease);
  void sink.flush();
  await until(() => c.requests.length === 1);
  assert.ok(lease.balanced, lease.counts);
  c.requests[0]!.answer(500);
  await until(() => c.requests.length === 2);
  c.requests[1]!.answer(503);
  await until(() => c.requests.length === 3);
  assert.equal(sink.healthy, false);
  for (const r of c.requests) assert.deepEqual(r.body, Buffer.from(lines.join(''), 'utf8'), 'the same bytes each time');
  c.requests[2]!.answer(200);
  await until(() => sink.healthy);
  assert.deepEqual(sink.stats(), { written: 3, dropped: 0, queued: 0, failures: 2 });
  assert.equal(lease.releases, 1, 'released once');
  await sink.close();
  await c.close();
});

test('http sink lease: a refused connection retries from the copy; the collector back gets every byte', async () => {
  const port = await freeLoopbackPort();
  const sink = new HttpSink({ url: `http://127.0.0.1:${port}/`, ...HTTP_DEFAULTS, retryInitialMs: 20, retryMaxMs: 50 });
  const lines = [0, 1, 2, 3].map((i) => line(i));
  const data = chunkOf(lines);
  const lease = new CountingLease(() => detachAndReuse(data));
  sink.writeChunk(data, 4, lease);
  void sink.flush();
  await until(() => sink.stats().failures >= 2);
  assert.match(sink.lastError ?? '', /ECONNREFUSED/);
  assert.ok(lease.balanced, lease.counts);
  const c = await heldCollector(port);
  await until(() => c.requests.length === 1);
  c.requests[0]!.answer(200);
  await until(() => sink.healthy);
  assert.deepEqual(c.requests[0]!.body, Buffer.from(lines.join(''), 'utf8'));
  assert.equal(lease.releases, 1);
  await sink.close();
  await c.close();
});

test('http sink lease: a chunk cut into batches is released when its last part is sent; the buffer is not read after (detached in onFree)', async () => {
  const c = await heldCollector();
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, batchMaxRecords: 10 });
  const lines = Array.from({ length: 25 }, (_, i) => wideLine(i));
  const expected = Buffer.from(lines.join(''), 'utf8');
  const data = chunkOf(lines);
  const lease = new CountingLease(() => detachAndReuse(data));
  assert.equal(sink.writeChunk(data, 25, lease), true);
  for (let batch = 0; batch < 3; batch++) {
    await until(() => c.requests.length === batch + 1);
    if (batch < 2) assert.equal(lease.frees, 0, `batch ${batch + 1} sent, the rest still queued: held`);
    else assert.ok(lease.balanced, `the last part sent: released — ${lease.counts}`);
    c.requests[batch]!.answer(200);
  }
  assert.equal(lease.retains, 2, 'two splits: three parts');
  assert.equal(data.byteLength, 0, 'onFree detached the buffer');
  assert.deepEqual(c.requests.map((r) => r.body.toString('utf8').split('\n').length - 1), [10, 10, 5]);
  assert.deepEqual(Buffer.concat(c.requests.map((r) => r.body)), expected, 'every byte once, in order, none reused');
  await sink.flush();
  assert.deepEqual(sink.stats(), { written: 25, dropped: 0, queued: 0, failures: 0 });
  await sink.close();
  await c.close();
});

test('http sink lease: dropped records release it — no room, close() dropping the queue, a closed sink', async () => {
  const c = await heldCollector(); // never answers
  const sink = new HttpSink({ url: c.url, ...HTTP_DEFAULTS, batchMaxRecords: 2, maxQueuedRecords: 3, flushIntervalMs: 60_000, closeTimeoutMs: 150 });
  const inflight = new CountingLease();
  const queued = new CountingLease();
  const none = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([line(0), line(1)]), 2, inflight), true, 'a full batch: sent at once');
  assert.equal(sink.writeChunk(chunkOf([line(2)]), 1, queued), true, 'queued (the batch in flight counts against the bound)');
  assert.equal(sink.writeChunk(chunkOf([line(3)]), 1, none), false);
  assert.ok(none.balanced, 'no room: released at once');
  await until(() => c.requests.length === 1);
  assert.ok(inflight.balanced, 'sent: released');
  assert.equal(queued.releases, 0, 'queued: held');
  await sink.close();
  assert.ok(queued.balanced, 'close() dropped the queue: released');
  assert.deepEqual(sink.stats(), { written: 0, dropped: 4, queued: 0, failures: sink.stats().failures });
  const late = new CountingLease();
  assert.equal(sink.writeChunk(chunkOf([line(4)]), 1, late), false);
  assert.ok(late.balanced, 'closed: released at once');
  await c.close();
});

test('http sink lease: close() giving up on a retrying batch (5xx until the close timeout) drops it; its lease went at the first send', async () => {
  const dead = await collector(Array.from({ length: 100 }, () => 503));
  const sink = new HttpSink({ url: dead.url, ...HTTP_DEFAULTS, closeTimeoutMs: 150 });
  const lease = new CountingLease();
  sink.writeChunk(chunkOf([line(0), line(1), line(2)]), 3, lease);
  void sink.flush();
  await until(() => sink.stats().failures >= 1);
  assert.ok(lease.balanced, lease.counts);
  await sink.close();
  assert.equal(lease.releases, 1);
  assert.deepEqual(sink.stats(), { written: 0, dropped: 3, queued: 0, failures: sink.stats().failures });
  await dead.close();
});

test('http sink lease: a collector that answers before reading the whole body (early 2xx or 413) — the buffer is not read after release', async () => {
  // 16 MB: more than loopback's socket buffers take while the collector does not read,
  // so part of the body is still queued in the client's socket when the answer comes.
  const lines = 160_000;
  const expected = Buffer.from(`${'y'.repeat(99)}\n`.repeat(lines), 'utf8');
  for (const status of [200, 413]) {
    let held: http.IncomingMessage | null = null;
    const chunks: Buffer[] = [];
    let ended = false;
    const server = http.createServer((req, res) => {
      held = req;
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => (ended = true));
      req.pause();
      res.writeHead(status);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const sink = new HttpSink({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, ...HTTP_DEFAULTS, batchMaxRecords: lines, batchMaxBytes: 64 << 20, maxQueuedRecords: lines, maxQueuedBytes: 64 << 20 });
    try {
      const data = new Uint8Array(expected);
      const lease = new CountingLease(() => detachAndReuse(data));
      assert.equal(sink.writeChunk(data, lines, lease), true);
      void sink.flush();
      // The sink has acted on the answer (released the lease long before: at send); then read what the socket still carries.
      await until(() => lease.released && sink.stats().queued === 0);
      (held as http.IncomingMessage | null)?.resume();
      // Until the body ends, or the client stops sending (it may abandon a body after an early answer).
      let seen = -1;
      while (!ended && chunks.length !== seen) {
        seen = chunks.length;
        await new Promise((r) => setTimeout(r, 200));
      }
      const received = Buffer.concat(chunks);
      assert.ok(received.length > 0);
      assert.ok(received.equals(expected.subarray(0, received.length)), `HTTP ${status}: bytes from the reused buffer reached the collector (the first at ${received.indexOf(0x58)} of ${received.length})`);
      assert.ok(lease.balanced, lease.counts);
    } finally {
      await sink.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      givenBack.length = 0;
    }
  }
});
