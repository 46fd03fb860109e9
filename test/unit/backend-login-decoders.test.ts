// Decoders for what the upstream sends during rolegate's login
// (decodeAuthentication, decodeBackendKeyData, decodeReadyForQuery beside the
// older decodeParameterStatus / decodeErrorFields): valid messages decoded
// directly and through the Framer split at every byte position; truncated,
// padded and random input gives an invalid result and never throws.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import * as be from '../../src/protocol/backend.ts';
import { Backend, TxStatus } from '../../src/protocol/constants.ts';
import { FrameEvent, Framer } from '../../src/protocol/framer.ts';
import { frame } from '../helpers/raw-client.ts';

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function auth(code: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  return frame(Backend.Authentication, Buffer.concat([int32(code), rest]));
}

type Decoded = ReturnType<typeof decode>;

/** Decode one whole message by its type, as connectUpstream dispatches. */
function decode(type: number, body: Buffer): unknown {
  switch (type) {
    case Backend.Authentication:
      return be.decodeAuthentication(body);
    case Backend.BackendKeyData:
      return be.decodeBackendKeyData(body);
    case Backend.ReadyForQuery:
      return be.decodeReadyForQuery(body);
    case Backend.ParameterStatus:
      return be.decodeParameterStatus(body);
    case Backend.ErrorResponse:
    case Backend.NoticeResponse:
      return Object.fromEntries(be.decodeErrorFields(body));
    default:
      throw new Error(`no decoder for type ${type}`);
  }
}

const salt = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
const serverFirst = Buffer.from('r=abcdef,s=c2FsdA==,i=4096', 'latin1');
const serverFinal = Buffer.from('v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 'latin1');

/** Valid messages of a login, hand-built, with what each decodes to. */
const VALID: ReadonlyArray<{ name: string; bytes: Buffer; expected: Decoded }> = [
  { name: 'AuthenticationOk', bytes: Buffer.from('5200000008' + '00000000', 'hex'), expected: { kind: 'ok' } },
  { name: 'AuthenticationCleartextPassword', bytes: Buffer.from('5200000008' + '00000003', 'hex'), expected: { kind: 'cleartext-password' } },
  { name: 'AuthenticationMD5Password', bytes: Buffer.from('520000000c' + '00000005' + 'deadbeef', 'hex'), expected: { kind: 'md5-password', salt } },
  { name: 'AuthenticationSASL', bytes: auth(10, Buffer.from('SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0', 'latin1')), expected: { kind: 'sasl', mechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] } },
  { name: 'AuthenticationSASL (no mechanism)', bytes: auth(10, Buffer.from([0])), expected: { kind: 'sasl', mechanisms: [] } },
  { name: 'AuthenticationSASLContinue', bytes: auth(11, serverFirst), expected: { kind: 'sasl-continue', data: serverFirst } },
  { name: 'AuthenticationSASLFinal', bytes: auth(12, serverFinal), expected: { kind: 'sasl-final', data: serverFinal } },
  { name: 'AuthenticationGSS (unsupported)', bytes: auth(7), expected: { kind: 'unsupported', code: 7 } },
  { name: 'AuthenticationSSPI (unsupported)', bytes: auth(9), expected: { kind: 'unsupported', code: 9 } },
  { name: 'Authentication code -1 (unsupported)', bytes: auth(-1), expected: { kind: 'unsupported', code: -1 } },
  { name: 'ParameterStatus', bytes: frame(Backend.ParameterStatus, Buffer.from('TimeZone\0Europe/Zürich\0', 'utf8')), expected: { name: 'TimeZone', value: 'Europe/Zürich' } },
  { name: 'BackendKeyData', bytes: Buffer.from('4b0000000c' + '00003039' + 'fffffffe', 'hex'), expected: { processId: 12345, secretKey: -2 } },
  { name: 'NoticeResponse', bytes: frame(Backend.NoticeResponse, Buffer.from('SWARNING\0C01000\0Mheads up\0\0', 'latin1')), expected: { S: 'WARNING', C: '01000', M: 'heads up' } },
  { name: 'ErrorResponse', bytes: frame(Backend.ErrorResponse, Buffer.from('SFATAL\0C28P01\0Mpassword authentication failed\0\0', 'latin1')), expected: { S: 'FATAL', C: '28P01', M: 'password authentication failed' } },
  { name: 'ReadyForQuery I', bytes: Buffer.from('5a00000005' + '49', 'hex'), expected: TxStatus.Idle },
  { name: 'ReadyForQuery T', bytes: Buffer.from('5a00000005' + '54', 'hex'), expected: TxStatus.InTransaction },
  { name: 'ReadyForQuery E', bytes: Buffer.from('5a00000005' + '45', 'hex'), expected: TxStatus.Failed },
];

interface Framed {
  type: number;
  decoded: unknown;
}

/** Frame `chunks` with a login-sized Framer and decode every message. */
function frameAndDecode(chunks: readonly Buffer[]): Framed[] {
  const framer = new Framer(64 * 1024);
  const out: Framed[] = [];
  for (const chunk of chunks) {
    framer.push(chunk);
    for (;;) {
      const event = framer.next();
      if (event === FrameEvent.NeedMore) break;
      assert.equal(event, FrameEvent.Frame, `framer event ${event} (${framer.errorCode ?? ''})`);
      out.push({ type: framer.type, decoded: decode(framer.type, framer.buf.subarray(framer.start + 5, framer.end)) });
    }
  }
  return out;
}

describe('login decoders: valid messages', () => {
  test('decoded directly', () => {
    for (const { name, bytes, expected } of VALID) {
      assert.deepEqual(decode(bytes[0] as number, bytes.subarray(5)), expected, name);
    }
  });

  test('each message through the Framer, split at every byte position', () => {
    for (const { name, bytes, expected } of VALID) {
      for (let cut = 0; cut <= bytes.length; cut++) {
        const got = frameAndDecode([bytes.subarray(0, cut), bytes.subarray(cut)]);
        assert.deepEqual(got, [{ type: bytes[0], decoded: expected }], `${name} cut at ${cut}`);
      }
      const oneByOne = frameAndDecode([...bytes].map((b) => Buffer.from([b])));
      assert.deepEqual(oneByOne, [{ type: bytes[0], decoded: expected }], `${name} one byte at a time`);
    }
  });

  test('a whole login stream, split at every pair of positions', () => {
    const stream = Buffer.concat(VALID.map((v) => v.bytes));
    const expected = VALID.map((v) => ({ type: v.bytes[0], decoded: v.expected }));
    // Every pair of cuts is ~n²/2 framings: step the second cut to keep this fast but dense.
    for (let a = 0; a <= stream.length; a++) {
      for (let b = a; b <= stream.length; b += 7) {
        const got = frameAndDecode([stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)]);
        assert.deepEqual(got, expected, `cuts at ${a}, ${b}`);
      }
    }
  });

  test('our backend encoders decode to what they encoded', () => {
    assert.deepEqual(be.decodeAuthentication(be.authenticationOk().subarray(5)), { kind: 'ok' });
    assert.deepEqual(be.decodeAuthentication(be.authenticationCleartextPassword().subarray(5)), { kind: 'cleartext-password' });
    assert.deepEqual(be.decodeAuthentication(be.authenticationSASL(['SCRAM-SHA-256']).subarray(5)), { kind: 'sasl', mechanisms: ['SCRAM-SHA-256'] });
    assert.deepEqual(be.decodeAuthentication(be.authenticationSASLContinue(serverFirst).subarray(5)), { kind: 'sasl-continue', data: serverFirst });
    assert.deepEqual(be.decodeAuthentication(be.authenticationSASLFinal(serverFinal).subarray(5)), { kind: 'sasl-final', data: serverFinal });
    assert.deepEqual(be.decodeBackendKeyData(be.backendKeyData(7, -7).subarray(5)), { processId: 7, secretKey: -7 });
    assert.equal(be.decodeReadyForQuery(be.readyForQuery(TxStatus.InTransaction).subarray(5)), TxStatus.InTransaction);
  });

  test('decoded salt and SASL data are copies: reusing the chunk does not change them', () => {
    const md5 = Buffer.from(VALID[2]?.bytes ?? []);
    const decoded = be.decodeAuthentication(md5.subarray(5));
    md5.fill(0);
    assert.deepEqual(decoded, { kind: 'md5-password', salt });
    const cont = auth(11, serverFirst);
    const decodedCont = be.decodeAuthentication(cont.subarray(5));
    cont.fill(0);
    assert.deepEqual(decodedCont, { kind: 'sasl-continue', data: serverFirst });
  });
});

describe('login decoders: malformed input is invalid, never a throw', () => {
  test('every truncation of a fixed-size message is invalid', () => {
    const fixed = VALID.filter((v) => /^(AuthenticationOk|AuthenticationCleartextPassword|AuthenticationMD5Password|AuthenticationSASL|BackendKeyData|ReadyForQuery)/.test(v.name) && !/Continue|Final/.test(v.name));
    assert.ok(fixed.length >= 8);
    for (const { name, bytes } of fixed) {
      const body = bytes.subarray(5);
      for (let len = 0; len < body.length; len++) {
        const got = decode(bytes[0] as number, body.subarray(0, len));
        assert.ok(got === null || (got as { kind?: string }).kind === 'invalid', `${name} cut to ${len} bytes: ${JSON.stringify(got)}`);
      }
    }
  });

  test('SASLContinue / SASLFinal / any auth body shorter than its code is invalid', () => {
    for (const bytes of [auth(11, serverFirst), auth(12, serverFinal), auth(7)]) {
      for (let len = 0; len < 4; len++) assert.equal(be.decodeAuthentication(bytes.subarray(5, 5 + len)).kind, 'invalid');
    }
  });

  test('a byte too many is invalid for fixed-size messages', () => {
    const extra = Buffer.from([0x49]);
    for (const code of [0, 3]) assert.equal(be.decodeAuthentication(Buffer.concat([int32(code), extra])).kind, 'invalid', `code ${code}`);
    assert.equal(be.decodeAuthentication(Buffer.concat([int32(5), salt, extra])).kind, 'invalid');
    assert.equal(be.decodeAuthentication(Buffer.concat([int32(10), Buffer.from('SCRAM-SHA-256\0\0x', 'latin1')])).kind, 'invalid');
    assert.equal(be.decodeBackendKeyData(Buffer.alloc(9)), null);
    assert.equal(be.decodeReadyForQuery(Buffer.from('II')), null);
  });

  test('SASL mechanism list without its final empty name is invalid', () => {
    assert.equal(be.decodeAuthentication(Buffer.concat([int32(10), Buffer.from('SCRAM-SHA-256\0', 'latin1')])).kind, 'invalid');
    assert.equal(be.decodeAuthentication(Buffer.concat([int32(10), Buffer.from('SCRAM-SHA-256', 'latin1')])).kind, 'invalid');
    assert.equal(be.decodeAuthentication(int32(10)).kind, 'invalid');
  });

  test('ReadyForQuery with a status other than I, T, E is invalid', () => {
    for (let b = 0; b < 256; b++) {
      const got = be.decodeReadyForQuery(Buffer.from([b]));
      if (b === 0x49 || b === 0x54 || b === 0x45) assert.equal(got, b);
      else assert.equal(got, null, `status byte ${b}`);
    }
  });

  test('property: random bodies never throw, and what decodes is consistent with the bytes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.tuple(fc.constantFrom(0, 3, 5, 10, 11, 12, 7), fc.uint8Array({ maxLength: 40 })).map(([code, rest]) => Buffer.concat([int32(code), Buffer.from(rest)]))), (raw) => {
        const body = Buffer.from(raw);
        const a = be.decodeAuthentication(body);
        switch (a.kind) {
          case 'ok':
          case 'cleartext-password':
            assert.equal(body.length, 4);
            break;
          case 'md5-password':
            assert.equal(body.length, 8);
            assert.deepEqual(a.salt, body.subarray(4));
            break;
          case 'sasl':
            assert.equal(body[body.length - 1], 0);
            for (const m of a.mechanisms) assert.ok(m.length > 0 && !m.includes('\0'));
            break;
          case 'sasl-continue':
          case 'sasl-final':
            assert.deepEqual(a.data, body.subarray(4));
            break;
          case 'unsupported':
            assert.ok(![0, 3, 5, 10, 11, 12].includes(a.code));
            break;
          case 'invalid':
            assert.ok(a.reason.length > 0);
            break;
          default: {
            const unreachable: never = a;
            assert.fail(JSON.stringify(unreachable));
          }
        }
        const k = be.decodeBackendKeyData(body);
        assert.equal(k === null, body.length !== 8);
        const z = be.decodeReadyForQuery(body);
        if (z !== null) assert.deepEqual(Buffer.from([z]), body);
        be.decodeParameterStatus(body);
        be.decodeErrorFields(body);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: a login stream with random bytes flipped frames and decodes without throwing', () => {
    const stream = Buffer.concat(VALID.map((v) => v.bytes));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 4 }), (flips, cuts) => {
        const bytes = Buffer.from(stream);
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
        const framer = new Framer(64 * 1024);
        let prev = 0;
        for (const p of [...points, bytes.length]) {
          framer.push(bytes.subarray(prev, p));
          prev = p;
          for (;;) {
            const event = framer.next();
            if (event === FrameEvent.NeedMore || event === FrameEvent.Error) break;
            const type = framer.type;
            const body = framer.buf.subarray(framer.start + 5, framer.end);
            be.decodeAuthentication(body);
            be.decodeBackendKeyData(body);
            be.decodeReadyForQuery(body);
            be.decodeParameterStatus(body);
            be.decodeErrorFields(body);
            assert.ok(type >= 0 && type < 256);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
