// Framer: typed v3 messages cut from a byte stream ("Message Formats").
// Every stream is fed whole, split at every byte position, one byte per chunk
// and in random chunkings; what comes out (Frame slices and Raw parts) must
// put the input back together byte for byte, message by message.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameEvent, Framer } from '../../src/protocol/framer.ts';
import { Frontend } from '../../src/protocol/constants.ts';

const MAX = 64 * 1024;
const STREAMED = [Frontend.CopyData];

// ---- byte builders ----

function msg(type: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const out = Buffer.alloc(5 + b.length);
  out[0] = type;
  out.writeInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
}

/** A header with an arbitrary (possibly invalid) length field. */
function header(type: number, length: number): Buffer {
  const out = Buffer.alloc(5);
  out[0] = type;
  out.writeInt32BE(length, 1);
  return out;
}

const cstr = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');
const int16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

function patterned(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** A varied stream: Query, Parse, Bind, Execute, Sync, zero-length bodies, CopyData large and small. */
function variedMessages(): Buffer[] {
  return [
    msg(Frontend.Query, cstr('SELECT 1')),
    msg(Frontend.Parse, Buffer.concat([cstr('s1'), cstr('SELECT $1::int'), int16(1), int32(23)])),
    msg(Frontend.Bind, Buffer.concat([cstr(''), cstr('s1'), int16(0), int16(1), int32(1), Buffer.from('7'), int16(0)])),
    msg(Frontend.Execute, Buffer.concat([cstr(''), int32(0)])),
    msg(Frontend.Sync),
    msg(Frontend.Flush),
    msg(Frontend.CopyData, patterned(3000, 7)),
    msg(Frontend.CopyData),
    msg(Frontend.CopyData, Buffer.from([0])),
    msg(Frontend.CopyDone),
    msg(Frontend.Query, cstr('')),
    msg(Frontend.CopyData, patterned(17, 3)),
    msg(Frontend.Sync),
  ];
}

// ---- driver ----

interface Piece {
  kind: 'frame' | 'raw';
  type: number;
  first: boolean;
  bytes: Buffer;
  /** The slice lies in the memory of the chunk just pushed (not a copy). */
  inChunk: boolean;
  /** Nothing was held back when that chunk was pushed (it starts at a message boundary or inside a streamed message). */
  cleanChunk: boolean;
}

/** buf[start, end) is a view of chunk's memory: same ArrayBuffer, inside chunk's byte range. */
function isViewInto(buf: Buffer, start: number, end: number, chunk: Buffer): boolean {
  if (buf.buffer !== chunk.buffer) return false;
  const from = buf.byteOffset + start;
  return from >= chunk.byteOffset && buf.byteOffset + end <= chunk.byteOffset + chunk.length;
}

interface Run {
  pieces: Piece[];
  error: string | null;
  maxBuffered: number;
  steps: number;
}

/**
 * Push each chunk and drain events until NeedMore or Error. Steps per push are
 * bounded: every Frame or Raw consumes at least one byte, so more events than
 * buffered bytes + 2 means the framer is looping.
 */
function drive(framer: Framer, chunks: readonly Buffer[]): Run {
  const run: Run = { pieces: [], error: null, maxBuffered: 0, steps: 0 };
  for (const chunk of chunks) {
    const budget = framer.bufferedBytes + chunk.length + 2;
    const cleanChunk = framer.bufferedBytes === 0;
    framer.push(chunk);
    run.maxBuffered = Math.max(run.maxBuffered, framer.bufferedBytes);
    for (let i = 0; ; i++) {
      assert.ok(i <= budget, `framer did not settle within ${budget} steps`);
      run.steps++;
      const ev = framer.next();
      run.maxBuffered = Math.max(run.maxBuffered, framer.bufferedBytes);
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        run.error = framer.errorCode;
        return run;
      }
      assert.ok(framer.start >= 0 && framer.start <= framer.end && framer.end <= framer.buf.length, 'slice out of bounds');
      const bytes = Buffer.from(framer.buf.subarray(framer.start, framer.end));
      const inChunk = isViewInto(framer.buf, framer.start, framer.end, chunk);
      run.pieces.push({ kind: ev === FrameEvent.Frame ? 'frame' : 'raw', type: framer.type, first: framer.first, bytes, inChunk, cleanChunk });
    }
  }
  return run;
}

/** Whole messages rebuilt from Frame events and Raw parts (a Raw run starts with `first`). */
function messagesOf(pieces: readonly Piece[]): Buffer[] {
  const out: Buffer[] = [];
  let raw: Buffer[] | null = null;
  let rawNeeded = 0;
  let rawHave = 0;
  for (const p of pieces) {
    if (p.kind === 'frame') {
      assert.equal(raw, null, 'a Frame arrived while a streamed message was incomplete');
      out.push(p.bytes);
      continue;
    }
    if (p.first) {
      assert.equal(raw, null, 'a new streamed message began before the previous one ended');
      assert.ok(p.bytes.length >= 5, 'the first Raw part holds the whole header');
      raw = [p.bytes];
      rawNeeded = p.bytes.readInt32BE(1) + 1;
      rawHave = p.bytes.length;
      assert.ok(rawHave < rawNeeded, 'a message wholly present is a Frame, not Raw');
    } else {
      assert.notEqual(raw, null, 'Raw continuation without a first part');
      raw!.push(p.bytes);
      rawHave += p.bytes.length;
      assert.ok(p.bytes.length > 0, 'empty Raw part');
    }
    assert.ok(rawHave <= rawNeeded, 'Raw parts overran the message length');
    if (rawHave === rawNeeded) {
      out.push(Buffer.concat(raw!));
      raw = null;
    }
  }
  assert.equal(raw, null, 'stream ended inside a streamed message');
  return out;
}

function assertReassembles(messages: readonly Buffer[], chunks: readonly Buffer[], streamed: readonly number[] = STREAMED): Run {
  const run = drive(new Framer(MAX, streamed), chunks);
  assert.equal(run.error, null);
  assert.deepEqual(Buffer.concat(run.pieces.map((p) => p.bytes)), Buffer.concat(messages), 'slices concatenate to the input');
  const rebuilt = messagesOf(run.pieces);
  assert.equal(rebuilt.length, messages.length, 'message count');
  for (let i = 0; i < messages.length; i++) assert.deepEqual(rebuilt[i], messages[i], `message ${i}`);
  for (const p of run.pieces) {
    if (p.kind === 'raw') assert.ok(streamed.includes(p.type), `Raw only for streamed types, got ${p.type}`);
  }
  return run;
}

function chunkAt(input: Buffer, cuts: readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts].sort((a, b) => a - b)) {
    out.push(input.subarray(prev, c));
    prev = c;
  }
  out.push(input.subarray(prev));
  return out;
}

// Raw parts: only the first carries the header byte, so relax the type check for them.
function checkTypes(run: Run): void {
  for (const p of run.pieces) if (p.kind === 'frame' || p.first) assert.equal(p.type, p.bytes[0]);
}

describe('Framer: whole and split streams', () => {
  const messages = variedMessages();
  const input = Buffer.concat(messages);

  test('one chunk: every message is a Frame, in order, byte-exact', () => {
    const run = drive(new Framer(MAX, STREAMED), [input]);
    assert.equal(run.error, null);
    assert.equal(run.pieces.length, messages.length);
    run.pieces.forEach((p, i) => {
      assert.equal(p.kind, 'frame');
      assert.equal(p.type, messages[i]![0]);
      assert.deepEqual(p.bytes, messages[i]);
    });
  });

  test('two chunks split at every byte position', () => {
    for (let cut = 0; cut <= input.length; cut++) {
      const run = drive(new Framer(MAX, STREAMED), [input.subarray(0, cut), input.subarray(cut)]);
      assert.equal(run.error, null, `cut ${cut}`);
      assert.deepEqual(Buffer.concat(run.pieces.map((p) => p.bytes)), input, `cut ${cut}`);
      const rebuilt = messagesOf(run.pieces);
      assert.deepEqual(rebuilt, messages, `cut ${cut}`);
      checkTypes(run);
    }
  });

  test('two chunks split at every byte position, nothing streamed: only Frames, each a whole message', () => {
    for (let cut = 0; cut <= input.length; cut++) {
      const run = drive(new Framer(MAX, []), [input.subarray(0, cut), input.subarray(cut)]);
      assert.ok(run.pieces.every((p) => p.kind === 'frame'));
      assert.deepEqual(
        run.pieces.map((p) => p.bytes),
        messages,
        `cut ${cut}`,
      );
    }
  });

  test('one byte per chunk', () => {
    const chunks = [...input].map((b) => Buffer.from([b]));
    const run = assertReassembles(messages, chunks);
    checkTypes(run);
    // The 3000-byte CopyData went through as Raw parts, never buffered whole.
    assert.ok(run.pieces.some((p) => p.kind === 'raw' && p.first));
    const largestUnstreamed = Math.max(...messages.filter((m) => m[0] !== Frontend.CopyData).map((m) => m.length));
    assert.ok(run.maxBuffered <= largestUnstreamed, `buffered ${run.maxBuffered} bytes while streaming one byte at a time`);
  });

  test('one byte per chunk, nothing streamed: buffering is bounded by the largest message', () => {
    const chunks = [...input].map((b) => Buffer.from([b]));
    const run = drive(new Framer(MAX, []), chunks);
    assert.deepEqual(
      run.pieces.map((p) => p.bytes),
      messages,
    );
    assert.ok(run.maxBuffered <= 3005 + 1);
  });

  test('empty chunks change nothing', () => {
    const cut = 40;
    const empty = Buffer.alloc(0);
    assertReassembles(messages, [empty, input.subarray(0, cut), empty, empty, input.subarray(cut), empty]);
  });

  test('a streamed message split three ways: first part holds the header, the rest continue it', () => {
    const copy = msg(Frontend.CopyData, patterned(100, 1));
    const run = drive(new Framer(MAX, STREAMED), [copy.subarray(0, 10), copy.subarray(10, 50), copy.subarray(50)]);
    assert.deepEqual(
      run.pieces.map((p) => [p.kind, p.first, p.bytes.length]),
      [
        ['raw', true, 10],
        ['raw', false, 40],
        ['raw', false, 55],
      ],
    );
    assert.ok(run.pieces.every((p) => p.type === Frontend.CopyData));
  });

  test('a streamed message whose header itself is split: the assembled header, then the body in place', () => {
    const copy = msg(Frontend.CopyData, patterned(100, 2));
    const run = drive(new Framer(MAX, STREAMED), [copy.subarray(0, 3), copy.subarray(3, 20), copy.subarray(20)]);
    assert.deepEqual(
      run.pieces.map((p) => [p.kind, p.first, p.bytes.length]),
      [
        ['raw', true, 5],
        ['raw', false, 15],
        ['raw', false, 85],
      ],
    );
    assert.deepEqual(Buffer.concat(run.pieces.map((p) => p.bytes)), copy);
  });

  test('a streamed message followed by other messages in the last chunk: the Raw part stops at the message end', () => {
    const copy = msg(Frontend.CopyData, patterned(50, 3));
    const done = msg(Frontend.CopyDone);
    const sync = msg(Frontend.Sync);
    const tail = Buffer.concat([copy.subarray(30), done, sync]);
    const run = drive(new Framer(MAX, STREAMED), [copy.subarray(0, 30), tail]);
    assert.deepEqual(
      run.pieces.map((p) => [p.kind, p.type, p.bytes.length]),
      [
        ['raw', Frontend.CopyData, 30],
        ['raw', Frontend.CopyData, 25],
        ['frame', Frontend.CopyDone, 5],
        ['frame', Frontend.Sync, 5],
      ],
    );
  });

  test('a message of exactly maxMessageBytes (length field) is accepted', () => {
    const max = 1024;
    const m = msg(Frontend.Query, Buffer.concat([Buffer.alloc(max - 5, 0x61), Buffer.from([0])]));
    assert.equal(m.readInt32BE(1), max);
    const run = drive(new Framer(max), [m]);
    assert.equal(run.error, null);
    assert.equal(run.pieces.length, 1);
  });
});

describe('Framer: zero-copy', () => {
  test('messages wholly inside a chunk are subarrays of that chunk (same ArrayBuffer, no copy)', () => {
    const chunk = Buffer.concat(variedMessages());
    const framer = new Framer(MAX, STREAMED);
    framer.push(chunk);
    let offset = 0;
    for (let ev = framer.next(); ev !== FrameEvent.NeedMore; ev = framer.next()) {
      assert.equal(ev, FrameEvent.Frame);
      assert.equal(framer.buf, chunk, 'the frame is reported against the pushed chunk itself');
      assert.ok(isViewInto(framer.buf, framer.start, framer.end, chunk));
      assert.equal(framer.start, offset);
      offset = framer.end;
    }
    assert.equal(offset, chunk.length);
  });

  test('a message inside a chunk after a split message completes is still not copied when the chunk starts clean', () => {
    const a = msg(Frontend.Query, cstr('SELECT 1'));
    const b = msg(Frontend.Query, cstr('SELECT 2'));
    const framer = new Framer(MAX);
    // First chunk: a whole message and the first half of b, consumed until NeedMore.
    const first = Buffer.concat([a, b.subarray(0, 6)]);
    framer.push(first);
    assert.equal(framer.next(), FrameEvent.Frame);
    assert.ok(isViewInto(framer.buf, framer.start, framer.end, first));
    assert.equal(framer.next(), FrameEvent.NeedMore);
    framer.push(b.subarray(6));
    assert.equal(framer.next(), FrameEvent.Frame);
    assert.deepEqual(framer.buf.subarray(framer.start, framer.end), b);
    // Nothing left: the next chunk is framed in place again.
    assert.equal(framer.next(), FrameEvent.NeedMore);
    const clean = Buffer.concat([a, b]);
    framer.push(clean);
    assert.equal(framer.next(), FrameEvent.Frame);
    assert.equal(framer.buf, clean);
    assert.ok(isViewInto(framer.buf, framer.start, framer.end, clean));
  });

  test('Raw parts of a streamed message are subarrays of the pushed chunks', () => {
    const copy = msg(Frontend.CopyData, patterned(1000, 9));
    const c1 = copy.subarray(0, 400);
    const c2 = copy.subarray(400);
    const framer = new Framer(MAX, STREAMED);
    framer.push(c1);
    assert.equal(framer.next(), FrameEvent.Raw);
    assert.equal(framer.buf, c1);
    assert.equal(framer.next(), FrameEvent.NeedMore);
    framer.push(c2);
    assert.equal(framer.next(), FrameEvent.Raw);
    assert.equal(framer.buf, c2);
  });

  test(
    'messages wholly inside the chunk that completes a split message are subarrays of that chunk',
    () => {
      const a = msg(Frontend.Query, cstr('SELECT 1'));
      const b = msg(Frontend.Query, cstr('SELECT 2'));
      const framer = new Framer(MAX);
      framer.push(a.subarray(0, 4));
      assert.equal(framer.next(), FrameEvent.NeedMore);
      const second = Buffer.concat([a.subarray(4), b]);
      framer.push(second);
      assert.equal(framer.next(), FrameEvent.Frame);
      assert.equal(framer.next(), FrameEvent.Frame);
      assert.ok(isViewInto(framer.buf, framer.start, framer.end, second), 'b was framed from a copy of the chunk');
    },
  );
});

describe('Framer: invalid lengths', () => {
  const cases: Array<[string, number, 'RG_BAD_MESSAGE_LENGTH' | 'RG_MESSAGE_TOO_LARGE']> = [
    ['length 0', 0, 'RG_BAD_MESSAGE_LENGTH'],
    ['length 3 (< 4, the length counts itself)', 3, 'RG_BAD_MESSAGE_LENGTH'],
    ['length -1', -1, 'RG_BAD_MESSAGE_LENGTH'],
    ['length -2^31', -0x80000000, 'RG_BAD_MESSAGE_LENGTH'],
    ['length maxMessageBytes + 1', MAX + 1, 'RG_MESSAGE_TOO_LARGE'],
    ['length 2^31 - 1', 0x7fffffff, 'RG_MESSAGE_TOO_LARGE'],
  ];
  for (const [name, length, code] of cases) {
    test(`${name} → Error ${code}`, () => {
      const framer = new Framer(MAX, STREAMED);
      framer.push(Buffer.concat([msg(Frontend.Sync), header(Frontend.Query, length), Buffer.alloc(20)]));
      assert.equal(framer.next(), FrameEvent.Frame);
      assert.equal(framer.errorCode, null);
      assert.equal(framer.next(), FrameEvent.Error);
      assert.equal(framer.errorCode, code);
    });
  }

  test('a streamed type is checked the same way (no Raw for a bad length)', () => {
    for (const [length, code] of [
      [2, 'RG_BAD_MESSAGE_LENGTH'],
      [MAX + 1, 'RG_MESSAGE_TOO_LARGE'],
    ] as const) {
      const framer = new Framer(MAX, STREAMED);
      framer.push(Buffer.concat([header(Frontend.CopyData, length), Buffer.alloc(3)]));
      assert.equal(framer.next(), FrameEvent.Error);
      assert.equal(framer.errorCode, code);
    }
  });

  test('a bad length whose header is split across chunks is still caught', () => {
    const bad = header(Frontend.Query, 2);
    for (let cut = 1; cut < 5; cut++) {
      const run = drive(new Framer(MAX), [bad.subarray(0, cut), bad.subarray(cut)]);
      assert.equal(run.error, 'RG_BAD_MESSAGE_LENGTH', `cut ${cut}`);
    }
  });

  test('after an Error every later call returns Error and nothing is buffered', () => {
    const framer = new Framer(MAX, STREAMED);
    framer.push(header(Frontend.Query, 1));
    assert.equal(framer.next(), FrameEvent.Error);
    for (let i = 0; i < 5; i++) {
      framer.push(msg(Frontend.Sync));
      assert.equal(framer.next(), FrameEvent.Error);
      assert.equal(framer.next(), FrameEvent.Error);
      assert.equal(framer.errorCode, 'RG_BAD_MESSAGE_LENGTH');
      assert.equal(framer.bufferedBytes, 0);
    }
  });

  test('an oversized length is refused from the header alone, before its body arrives', () => {
    const framer = new Framer(1024);
    framer.push(header(Frontend.Query, 1025));
    assert.equal(framer.next(), FrameEvent.Error);
    assert.equal(framer.errorCode, 'RG_MESSAGE_TOO_LARGE');
  });
});

// ---- properties ----

const TYPES = [Frontend.Query, Frontend.Parse, Frontend.Bind, Frontend.Sync, Frontend.CopyData, Frontend.CopyDone, Frontend.Execute];

const messageArb = fc
  .tuple(fc.constantFrom(...TYPES), fc.oneof({ weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 200, maxLength: 3000 }) }))
  .map(([type, body]) => msg(type, Buffer.from(body)));

/** Cut points (sorted later) inside a stream of `length` bytes. */
const cutsArb = (length: number): fc.Arbitrary<number[]> => fc.array(fc.integer({ min: 0, max: length }), { maxLength: 30 });

describe('Framer: properties', () => {
  test('random messages, random chunkings: slices concatenate to the input and message boundaries match', () => {
    let runs = 0;
    fc.assert(
      fc.property(
        fc.array(messageArb, { maxLength: 25 }).chain((messages) => {
          const total = messages.reduce((n, m) => n + m.length, 0);
          return fc.tuple(fc.constant(messages), cutsArb(total), fc.boolean());
        }),
        ([messages, cuts, streamCopy]) => {
          const input = Buffer.concat(messages);
          const chunks = chunkAt(input, cuts);
          const streamed = streamCopy ? STREAMED : [];
          const run = assertReassembles(messages, chunks, streamed);
          checkTypes(run);
          const largestChunk = Math.max(0, ...chunks.map((c) => c.length));
          assert.ok(run.maxBuffered <= MAX + largestChunk);
          // Zero-copy: in a chunk pushed with nothing held back, every Frame
          // and Raw part is a view of that chunk.
          for (const p of run.pieces) if (p.cleanChunk) assert.ok(p.inChunk, 'copied although the chunk started clean');
          // Raw continuation parts are always views of the chunk.
          for (const p of run.pieces) if (p.kind === 'raw' && !p.first) assert.ok(p.inChunk);
          runs++;
        },
      ),
      { numRuns: 300 },
    );
    assert.equal(runs, 300);
  });

  test('random garbage never throws, always settles, and buffers at most maxMessageBytes + one chunk', () => {
    const max = 1024;
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 4000 }).chain((bytes) => fc.tuple(fc.constant(Buffer.from(bytes)), cutsArb(bytes.length))),
        fc.boolean(),
        ([input, cuts], streamCopy) => {
          const chunks = chunkAt(input, cuts);
          const run = drive(new Framer(max, streamCopy ? STREAMED : []), chunks);
          const largestChunk = Math.max(0, ...chunks.map((c) => c.length));
          assert.ok(run.maxBuffered <= max + largestChunk, `buffered ${run.maxBuffered}`);
          // Whatever was emitted is a prefix of the input, byte for byte.
          const emitted = Buffer.concat(run.pieces.map((p) => p.bytes));
          assert.deepEqual(emitted, input.subarray(0, emitted.length));
          if (run.error !== null) assert.ok(run.error === 'RG_BAD_MESSAGE_LENGTH' || run.error === 'RG_MESSAGE_TOO_LARGE');
        },
      ),
      { numRuns: 500 },
    );
  });

  test('garbage with plausible headers (small valid-looking lengths) is framed the same however it is chunked', () => {
    const plausible = fc
      .array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: -8, max: 60 }), fc.uint8Array({ maxLength: 60 })), { maxLength: 20 })
      .map((parts) => Buffer.concat(parts.map(([type, length, body]) => Buffer.concat([header(type, length), Buffer.from(body)]))));
    fc.assert(
      fc.property(
        plausible.chain((input) => fc.tuple(fc.constant(input), cutsArb(input.length))),
        ([input, cuts]) => {
          const whole = drive(new Framer(1024, []), [input]);
          const split = drive(new Framer(1024, []), chunkAt(input, cuts));
          assert.equal(split.error, whole.error);
          assert.deepEqual(
            split.pieces.map((p) => p.bytes),
            whole.pieces.map((p) => p.bytes),
          );
        },
      ),
      { numRuns: 300 },
    );
  });
});
