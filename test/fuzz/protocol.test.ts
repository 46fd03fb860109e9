// Fuzz (docs/security.md, "Fuzzing"): the byte layer — framer, frontend
// decoders, startup packets, startup `options`, backend decoders — with random
// and mutated input. These are pure functions: no sockets, no PostgreSQL.
// Properties: nothing throws, nothing loops, memory held is bounded by the
// configured maximum, what is reported lies inside the input and, for valid
// streams however they are split, puts the input back together byte for byte.
//
// Time-boxed for CI; ROLEGATE_FUZZ_RUNS / ROLEGATE_FUZZ_SECONDS scale it up,
// ROLEGATE_FUZZ_SEED replays a failure (fast-check prints the seed and path).

import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import * as be from '../../src/protocol/backend.ts';
import { Frontend, MAX_STARTUP_PACKET_BYTES } from '../../src/protocol/constants.ts';
import { FrameEvent, Framer } from '../../src/protocol/framer.ts';
import * as fe from '../../src/protocol/frontend.ts';
import { parseOptions } from '../../src/session/startup-options.ts';
import { fuzzBudget, mutate, mutationArbitrary, splitAt } from '../helpers/security.ts';
import { frame } from '../helpers/raw-client.ts';

const budget = fuzzBudget({ runs: 2000, seconds: 3 });
const params = { numRuns: budget.numRuns, interruptAfterTimeLimit: budget.timeLimitMs, ...(budget.seed === undefined ? {} : { seed: budget.seed }) };
const MAX = 4096;

// ---- generators ---------------------------------------------------------------

const FRONTEND_TYPES = [
  Frontend.Query, Frontend.Parse, Frontend.Bind, Frontend.Describe, Frontend.Execute, Frontend.Sync,
  Frontend.Flush, Frontend.Close, Frontend.CopyData, Frontend.CopyDone, Frontend.CopyFail,
  Frontend.FunctionCall, Frontend.Terminate,
];

/** A well-formed message of a frontend type with a random body (CopyData may be larger than MAX / 2 to force streaming). */
const validMessage = fc
  .tuple(fc.constantFrom(...FRONTEND_TYPES), fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 3 * MAX }))
  .map(([type, body, big]) => (type === Frontend.CopyData && big > MAX ? frame(type, new Uint8Array(Math.min(big, 20 * MAX))) : frame(type, body)));

const mutation = mutationArbitrary([MAX, MAX + 1]);
const split = splitAt;

// ---- framer driver --------------------------------------------------------------

interface Pieces {
  frames: Array<{ type: number; bytes: Buffer }>;
  raw: Buffer[];
  all: Buffer[];
  error: string | null;
  maxBuffered: number;
}

function drive(framer: Framer, chunks: readonly Buffer[], maxMessageBytes: number): Pieces {
  const out: Pieces = { frames: [], raw: [], all: [], error: null, maxBuffered: 0 };
  for (const chunk of chunks) {
    const steps = framer.bufferedBytes + chunk.length + 2;
    framer.push(chunk);
    for (let i = 0; ; i++) {
      assert.ok(i <= steps, 'the framer does not settle');
      const ev = framer.next();
      out.maxBuffered = Math.max(out.maxBuffered, framer.bufferedBytes);
      // Held bytes: at most one incomplete message (≤ max + header) plus the rest of the chunk being framed.
      assert.ok(framer.bufferedBytes <= maxMessageBytes + 5 + chunk.length, `buffered ${framer.bufferedBytes}`);
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        out.error = framer.errorCode;
        assert.equal(framer.next(), FrameEvent.Error, 'an error is final');
        framer.push(Buffer.from([1, 2, 3]));
        assert.equal(framer.next(), FrameEvent.Error, 'an error stays final after more input');
        return out;
      }
      assert.ok(framer.start >= 0 && framer.start < framer.end && framer.end <= framer.buf.length, 'slice inside its buffer');
      const bytes = Buffer.from(framer.buf.subarray(framer.start, framer.end));
      out.all.push(bytes);
      if (ev === FrameEvent.Frame) {
        assert.equal(bytes.readInt32BE(1) + 1, bytes.length, 'a frame is one whole message');
        assert.ok(bytes.length - 1 <= maxMessageBytes, 'a frame respects the maximum');
        out.frames.push({ type: framer.type, bytes });
      } else {
        out.raw.push(bytes);
      }
    }
  }
  return out;
}

describe('framer', () => {
  test('valid streams split anywhere come back byte for byte', () => {
    fc.assert(
      fc.property(fc.array(validMessage, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 40 }), (messages, cuts) => {
        const input = Buffer.concat(messages);
        const pieces = drive(new Framer(MAX * 100, [Frontend.CopyData]), split(input, cuts), MAX * 100);
        assert.equal(pieces.error, null);
        assert.deepEqual(Buffer.concat(pieces.all), input);
        // Every non-streamed message is one frame.
        const framed = messages.filter((m) => m[0] !== Frontend.CopyData).length;
        assert.ok(pieces.frames.filter((f) => f.type !== Frontend.CopyData).length === framed);
      }),
      params,
    );
  });

  test('mutated streams: never throws, never loops, bounded memory, output is a prefix of the input', () => {
    fc.assert(
      fc.property(fc.array(validMessage, { maxLength: 20 }), fc.array(mutation, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 20 }), fc.boolean(), (messages, mutations, cuts, streamCopy) => {
        const input = mutate(Buffer.concat(messages), mutations);
        const pieces = drive(new Framer(MAX, streamCopy ? [Frontend.CopyData] : []), split(input, cuts), MAX);
        const out = Buffer.concat(pieces.all);
        assert.ok(out.length <= input.length);
        assert.deepEqual(out, input.subarray(0, out.length), 'reported bytes are the input, in order');
        if (pieces.error !== null) assert.ok(['RG_BAD_MESSAGE_LENGTH', 'RG_MESSAGE_TOO_LARGE'].includes(pieces.error));
      }),
      params,
    );
  });

  test('random bytes: never throws, errors only on a bad length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
        const pieces = drive(new Framer(MAX, [Frontend.CopyData]), split(Buffer.from(bytes), cuts), MAX);
        if (pieces.error === null) return;
        // The length field at the failing header really is out of range.
        const done = Buffer.concat(pieces.all).length;
        const len = Buffer.from(bytes).readInt32BE(done + 1);
        assert.ok(len < 4 || len > MAX, `failed on length ${len}`);
      }),
      params,
    );
  });
});

// ---- decoders -----------------------------------------------------------------

/** A message of `type` around a body that is part valid structure, part noise. */
const decodedBody = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.tuple(fc.string({ unit: 'binary', maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 80 }), fc.uint8Array({ maxLength: 12 })).map(([a, b, tail]) => Buffer.concat([Buffer.from(`${a}\0${b}\0`), tail])),
);

describe('frontend decoders', () => {
  test('Query, Parse, Bind, Describe/Close, Execute never throw and stay inside the message', () => {
    fc.assert(
      fc.property(decodedBody, fc.uint8Array({ maxLength: 8 }), (body, padding) => {
        // The message sits inside a larger buffer, as it does inside a chunk.
        const m = Buffer.concat([Buffer.from(padding), frame(0x51, body), Buffer.from(padding)]);
        const start = padding.length;
        const end = start + 5 + body.length;
        const q = fe.decodeQuery(m, start, end);
        if (q !== null) {
          assert.equal(q.textEnd, end - 1);
          assert.equal(m.subarray(q.textStart, q.textEnd).includes(0), false);
        }
        const p = fe.decodeParse(m, start, end);
        if (p !== null) {
          assert.ok(p.textStart >= start + 5 && p.textEnd < end && p.textStart <= p.textEnd);
          assert.equal(m.subarray(p.textStart, p.textEnd).includes(0), false, 'the text stops at the first NUL, as in the server');
          assert.equal(p.textEnd + 1 + 2 + 4 * p.paramTypeCount, end);
          assert.ok(isUtf8(Buffer.from(p.name)));
        }
        const b = fe.decodeBind(m, start, end);
        if (b !== null) assert.ok(!b.portal.includes('\0') && !b.statement.includes('\0'));
        const t = fe.decodeTarget(m, start, end);
        if (t !== null) assert.ok(t.kind === 'S' || t.kind === 'P');
        const e = fe.decodeExecute(m, start, end);
        if (e !== null) assert.ok(Number.isInteger(e.maxRows));
      }),
      params,
    );
  });

  test('checkSqlBytes agrees with a plain UTF-8 and NUL check', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.string({ unit: 'grapheme', maxLength: 30 }).map((s) => new Uint8Array(Buffer.from(s)))), (bytes) => {
        const b = Buffer.from(bytes);
        const problem = fe.checkSqlBytes(b, 0, b.length);
        if (b.includes(0)) assert.equal(problem, 'RG_NUL_IN_TEXT');
        else if (!isUtf8(b)) assert.equal(problem, 'RG_INVALID_UTF8');
        else {
          assert.equal(problem, null);
          // Valid text survives the decode the proxy does, unchanged.
          assert.deepEqual(Buffer.from(b.toString('utf8')), b);
        }
      }),
      params,
    );
  });
});

describe('startup packets', () => {
  const packet = fc
    .tuple(fc.dictionary(fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 30 }), { maxKeys: 6 }), fc.constantFrom(196608, 196609, 131072, 80877103, 80877104, 80877102, 1234))
    .map(([p, code]) => {
      const body = Buffer.from(Object.entries(p).map(([k, v]) => `${k}\0${v}\0`).join('') + '\0');
      const out = Buffer.alloc(8 + body.length);
      out.writeInt32BE(out.length, 0);
      out.writeInt32BE(code, 4);
      body.copy(out, 8);
      return out;
    });

  test('length check and decoder never throw on valid, mutated or random packets', () => {
    fc.assert(
      fc.property(fc.oneof(packet, fc.tuple(packet, fc.array(mutation, { maxLength: 4 })).map(([p, m]) => mutate(p, m)), fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b))), (bytes) => {
        const len = fe.startupPacketLength(bytes);
        if (len === null) return assert.ok(bytes.length < 4);
        if (len < 0) {
          const field = bytes.readInt32BE(0);
          return assert.ok(field < 8 || field > MAX_STARTUP_PACKET_BYTES);
        }
        if (bytes.length < len) return;
        const decoded = fe.decodeStartupPacket(bytes.subarray(0, len));
        if (decoded.kind === 'startup') {
          for (const [k, v] of decoded.params) {
            assert.ok(k.length > 0 && !k.includes('\0') && !v.includes('\0'));
            assert.ok(isUtf8(Buffer.from(k + v)));
          }
        }
      }),
      params,
    );
  });

  test('startup options: parseOptions never throws; escaped values round-trip as one value', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (options) => {
        const parsed = parseOptions(options);
        if (typeof parsed !== 'string') for (const [k] of parsed) assert.ok(!k.includes('-') && !k.includes('='));
      }),
      params,
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.stringMatching(/^[a-z_.]{1,12}$/), fc.string({ maxLength: 20 })), { maxLength: 5 }), (pairs) => {
        const escape = (s: string): string => s.replace(/[\\ \t]/g, (c) => `\\${c}`);
        const text = pairs.map(([k, v]) => `-c ${k}=${escape(v)}`).join(' ');
        const parsed = parseOptions(text);
        assert.notEqual(typeof parsed, 'string', text);
        assert.deepEqual(parsed, pairs.map(([k, v]) => [k, v]));
      }),
      params,
    );
  });
});

describe('backend decoders (the upstream leg)', () => {
  test('decodeErrorFields and decodeParameterStatus never throw; errorResponse round-trips', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        be.decodeErrorFields(Buffer.from(bytes));
        be.decodeParameterStatus(Buffer.from(bytes));
      }),
      params,
    );
    const text = fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(text, text, text, (message, detail, sqlstate) => {
        const out = be.errorResponse({ severity: 'ERROR', sqlstate: sqlstate.slice(0, 5) || '42501', message, detail: detail || undefined });
        assert.equal(out.readInt32BE(1) + 1, out.length);
        const fields = be.decodeErrorFields(out.subarray(5));
        assert.equal(fields.get('M'), message);
        const ps = be.decodeParameterStatus(be.parameterStatus(message, detail).subarray(5));
        assert.deepEqual(ps, { name: message, value: detail });
      }),
      params,
    );
  });
});
