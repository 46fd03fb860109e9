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
import { ChunkQueue, FileSink, HttpSink, StdoutSink } from '../../src/audit/sinks.ts';
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

test('file sink: the file\'s directory removed while running → unhealthy; recreated → healthy again', async () => {
  const dir = tempDir();
  const sub = path.join(dir, 'logs');
  mkdirSync(sub);
  const file = path.join(sub, 'audit.log');
  const sink = await FileSink.open({ path: file, maxBytes: 300, keep: 1, ...FILE_DEFAULTS });
  sink.write(line(0));
  await sink.flush();
  rmSync(sub, { recursive: true });
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
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
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
