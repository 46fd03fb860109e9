// Backend encoders: the bytes rolegate itself sends to clients. Checked by
// exact bytes, by our own decoders, and by a real third-party decoder
// (node-postgres's pg-protocol Parser, what `pg` clients run).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import {
  authenticationCleartextPassword,
  authenticationOk,
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
  backendKeyData,
  decodeErrorFields,
  decodeParameterStatus,
  errorResponse,
  negotiateProtocolVersion,
  noticeResponse,
  parameterStatus,
  readyForQuery,
  type ErrorFields,
} from '../../src/protocol/backend.ts';
import { Backend, TxStatus } from '../../src/protocol/constants.ts';

/** Parse with pg-protocol; every byte must be consumed into exactly `expected` messages. */
function pgParse(buf: Buffer): BackendMessage[] {
  const out: BackendMessage[] = [];
  new Parser().parse(buf, (m) => out.push(m));
  return out;
}

function only(buf: Buffer): BackendMessage {
  const msgs = pgParse(buf);
  assert.equal(msgs.length, 1, `one message, got ${msgs.map((m) => m.name).join(', ')}`);
  return msgs[0]!;
}

/** Type byte, and the length field agrees with the buffer. */
function assertFramed(buf: Buffer, type: number): Buffer {
  assert.equal(buf[0], type, `type ${String.fromCharCode(type)}`);
  assert.equal(buf.readInt32BE(1), buf.length - 1, 'length field counts itself and the body');
  return buf.subarray(5);
}

/** Field codes in wire order. */
function fieldOrder(body: Buffer): string[] {
  const codes: string[] = [];
  let pos = 0;
  while (body[pos] !== 0) {
    codes.push(String.fromCharCode(body[pos]!));
    pos = body.indexOf(0, pos + 1) + 1;
  }
  assert.equal(pos, body.length - 1, 'the terminator ends the body');
  return codes;
}

describe('errorResponse / noticeResponse', () => {
  const full: ErrorFields = { severity: 'ERROR', sqlstate: '42501', message: 'permission denied', detail: 'rolegate rule "x"', hint: 'ask', position: 12 };

  test('fields in order S V C M D H P, NUL-terminated, with a final terminator', () => {
    const body = assertFramed(errorResponse(full), Backend.ErrorResponse);
    assert.deepEqual(fieldOrder(body), ['S', 'V', 'C', 'M', 'D', 'H', 'P']);
    assert.deepEqual(
      [...decodeErrorFields(body)],
      [
        ['S', 'ERROR'],
        ['V', 'ERROR'],
        ['C', '42501'],
        ['M', 'permission denied'],
        ['D', 'rolegate rule "x"'],
        ['H', 'ask'],
        ['P', '12'],
      ],
    );
  });

  test('exact bytes of a minimal ErrorResponse', () => {
    const buf = errorResponse({ severity: 'FATAL', sqlstate: '08P01', message: 'm' });
    const body = Buffer.from('SFATAL\0VFATAL\0C08P01\0Mm\0\0', 'latin1');
    assert.deepEqual(buf, Buffer.concat([Buffer.from([0x45 /* 'E' */, 0, 0, 0, 4 + body.length]), body]));
  });

  test('absent optional fields are not sent (undefined is absent)', () => {
    const body = assertFramed(errorResponse({ severity: 'ERROR', sqlstate: 'XX000', message: 'x', detail: undefined, hint: undefined, position: undefined }), Backend.ErrorResponse);
    assert.deepEqual(fieldOrder(body), ['S', 'V', 'C', 'M']);
  });

  test('NoticeResponse has type N and the same layout', () => {
    const body = assertFramed(noticeResponse({ severity: 'WARNING', sqlstate: '01000', message: 'careful' }), Backend.NoticeResponse);
    assert.deepEqual(fieldOrder(body), ['S', 'V', 'C', 'M']);
  });

  test('a NUL in any text cannot end the field early and forge another field', () => {
    const buf = errorResponse({
      severity: 'ERROR',
      sqlstate: '42501',
      message: 'denied\0C00000\0Mall good',
      detail: 'x\0',
      hint: '\0H',
    });
    const body = assertFramed(buf, Backend.ErrorResponse);
    assert.deepEqual(fieldOrder(body), ['S', 'V', 'C', 'M', 'D', 'H']);
    const fields = decodeErrorFields(body);
    assert.equal(fields.get('C'), '42501');
    assert.equal(fields.get('M'), 'denied C00000 Mall good');
    assert.equal(fields.get('D'), 'x ');
    assert.equal(fields.get('H'), ' H');
    const pg = only(buf);
    assert.equal(pg.name, 'error');
    assert.ok(pg instanceof Error);
    assert.equal((pg as { code?: string }).code, '42501');
    assert.equal(pg.message, 'denied C00000 Mall good');
  });

  test('multi-byte UTF-8 text: the length counts bytes, not characters', () => {
    const buf = errorResponse({ severity: 'ERROR', sqlstate: '22021', message: 'ungültig — 😀' });
    assertFramed(buf, Backend.ErrorResponse);
    assert.equal(only(buf).name, 'error');
    assert.equal(decodeErrorFields(buf.subarray(5)).get('M'), 'ungültig — 😀');
  });

  test('pg-protocol reads every field the way a pg client sees it', () => {
    const e = only(errorResponse(full)) as BackendMessage & Record<string, unknown>;
    assert.equal(e.name, 'error');
    assert.equal(e['severity'], 'ERROR');
    assert.equal(e['code'], '42501');
    assert.equal(e['message'], 'permission denied');
    assert.equal(e['detail'], 'rolegate rule "x"');
    assert.equal(e['hint'], 'ask');
    assert.equal(e['position'], '12');
    const n = only(noticeResponse({ severity: 'NOTICE', sqlstate: '00000', message: 'hello' })) as BackendMessage & Record<string, unknown>;
    assert.equal(n.name, 'notice');
    assert.equal(n['message'], 'hello');
    assert.equal(n['code'], '00000');
  });

  test('property: any text round-trips through decodeErrorFields and pg-protocol, NULs become spaces', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 40 });
    const withNul = fc.oneof(text, fc.tuple(text, text).map(([a, b]) => `${a}\0${b}`));
    fc.assert(
      fc.property(withNul, fc.option(withNul, { nil: undefined }), fc.option(withNul, { nil: undefined }), fc.option(fc.nat(), { nil: undefined }), (message, detail, hint, position) => {
        const f: ErrorFields = { severity: 'ERROR', sqlstate: '42501', message, detail, hint, position };
        const buf = errorResponse(f);
        const fields = decodeErrorFields(assertFramed(buf, Backend.ErrorResponse));
        const clean = (s: string): string => s.replaceAll('\0', ' ');
        assert.equal(fields.get('C'), '42501');
        assert.equal(fields.get('M'), clean(message));
        assert.equal(fields.get('D'), detail === undefined ? undefined : clean(detail));
        assert.equal(fields.get('H'), hint === undefined ? undefined : clean(hint));
        assert.equal(fields.get('P'), position === undefined ? undefined : String(position));
        const pg = only(buf) as BackendMessage & Record<string, unknown>;
        assert.equal(pg['code'], '42501');
        assert.equal(pg['message'], clean(message));
        assert.equal(pg['detail'], detail === undefined ? undefined : clean(detail));
      }),
      { numRuns: 500 },
    );
  });
});

describe('decodeErrorFields', () => {
  test('empty body and a lone terminator give no fields', () => {
    assert.equal(decodeErrorFields(Buffer.alloc(0)).size, 0);
    assert.equal(decodeErrorFields(Buffer.from([0])).size, 0);
  });

  test('stops at a field without its NUL (truncated upstream message)', () => {
    assert.deepEqual([...decodeErrorFields(Buffer.from('SERROR\0C42', 'latin1'))], [['S', 'ERROR']]);
  });

  test('keeps unknown field codes (the protocol says ignore them; the caller decides)', () => {
    assert.deepEqual([...decodeErrorFields(Buffer.from('Zzz\0Mm\0\0', 'latin1'))], [
      ['Z', 'zz'],
      ['M', 'm'],
    ]);
  });

  test('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (b) => {
        decodeErrorFields(Buffer.from(b));
        decodeParameterStatus(Buffer.from(b));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('readyForQuery', () => {
  test('exact bytes for I, T, E; pg-protocol reads the status', () => {
    for (const [status, letter] of [
      [TxStatus.Idle, 'I'],
      [TxStatus.InTransaction, 'T'],
      [TxStatus.Failed, 'E'],
    ] as const) {
      const buf = readyForQuery(status);
      assert.deepEqual(buf, Buffer.from([0x5a /* 'Z' */, 0, 0, 0, 5, status]));
      const m = only(buf) as BackendMessage & { status?: string };
      assert.equal(m.name, 'readyForQuery');
      assert.equal(m.status, letter);
    }
  });
});

describe('authentication messages', () => {
  test('AuthenticationOk: R, length 8, code 0', () => {
    assert.deepEqual(authenticationOk(), Buffer.from([0x52 /* 'R' */, 0, 0, 0, 8, 0, 0, 0, 0]));
    assert.equal(only(authenticationOk()).name, 'authenticationOk');
  });

  test('AuthenticationCleartextPassword: code 3', () => {
    assert.deepEqual(authenticationCleartextPassword(), Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3]));
    assert.equal(only(authenticationCleartextPassword()).name, 'authenticationCleartextPassword');
  });

  test('AuthenticationSASL: code 10, mechanism list ended by an empty name', () => {
    const buf = authenticationSASL(['SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS']);
    const body = assertFramed(buf, Backend.Authentication);
    assert.equal(body.readInt32BE(0), 10);
    assert.equal(body.subarray(4).toString('latin1'), 'SCRAM-SHA-256\0SCRAM-SHA-256-PLUS\0\0');
    const m = only(buf) as BackendMessage & { mechanisms?: string[] };
    assert.equal(m.name, 'authenticationSASL');
    assert.deepEqual(m.mechanisms, ['SCRAM-SHA-256', 'SCRAM-SHA-256-PLUS']);
  });

  test('AuthenticationSASLContinue / SASLFinal: code 11 / 12 and the data verbatim', () => {
    const data = Buffer.from('r=abc,s=c2FsdA==,i=4096');
    const cont = authenticationSASLContinue(data);
    let body = assertFramed(cont, Backend.Authentication);
    assert.equal(body.readInt32BE(0), 11);
    assert.deepEqual(body.subarray(4), data);
    const m1 = only(cont) as BackendMessage & { data?: string };
    assert.equal(m1.name, 'authenticationSASLContinue');
    assert.equal(m1.data, data.toString());

    const finalData = Buffer.from('v=c2lnbmF0dXJl');
    const fin = authenticationSASLFinal(finalData);
    body = assertFramed(fin, Backend.Authentication);
    assert.equal(body.readInt32BE(0), 12);
    assert.deepEqual(body.subarray(4), finalData);
    const m2 = only(fin) as BackendMessage & { data?: string };
    assert.equal(m2.name, 'authenticationSASLFinal');
    assert.equal(m2.data, finalData.toString());
  });

  test('empty SASL data is still a well-formed message', () => {
    const buf = authenticationSASLContinue(Buffer.alloc(0));
    assert.deepEqual(buf, Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 11]));
  });

  test('SASLFinal followed by AuthenticationOk in one write parse as two messages', () => {
    const msgs = pgParse(Buffer.concat([authenticationSASLFinal(Buffer.from('v=x')), authenticationOk()]));
    assert.deepEqual(
      msgs.map((m) => m.name),
      ['authenticationSASLFinal', 'authenticationOk'],
    );
  });
});

describe('parameterStatus', () => {
  test('name and value, each NUL-terminated; round-trips through decodeParameterStatus and pg-protocol', () => {
    const buf = parameterStatus('application_name', 'ünïcode app');
    const body = assertFramed(buf, Backend.ParameterStatus);
    assert.deepEqual(decodeParameterStatus(body), { name: 'application_name', value: 'ünïcode app' });
    const m = only(buf) as BackendMessage & { parameterName?: string; parameterValue?: string };
    assert.equal(m.name, 'parameterStatus');
    assert.equal(m.parameterName, 'application_name');
    assert.equal(m.parameterValue, 'ünïcode app');
  });

  test('empty value', () => {
    const buf = parameterStatus('search_path', '');
    assert.deepEqual(buf, Buffer.concat([Buffer.from([0x53 /* 'S' */, 0, 0, 0, 4 + 13]), Buffer.from('search_path\0\0')]));
    assert.deepEqual(decodeParameterStatus(buf.subarray(5)), { name: 'search_path', value: '' });
  });

  test('decodeParameterStatus: missing NULs → null', () => {
    assert.equal(decodeParameterStatus(Buffer.alloc(0)), null);
    assert.equal(decodeParameterStatus(Buffer.from('TimeZone')), null);
    assert.equal(decodeParameterStatus(Buffer.from('TimeZone\0UTC')), null);
  });

  test('property: names and values without NUL round-trip', () => {
    const s = fc.string({ unit: 'grapheme', maxLength: 30 }).filter((x) => !x.includes('\0'));
    fc.assert(
      fc.property(s, s, (name, value) => {
        const buf = parameterStatus(name, value);
        assert.deepEqual(decodeParameterStatus(assertFramed(buf, Backend.ParameterStatus)), { name, value });
        const m = only(buf) as BackendMessage & { parameterName?: string; parameterValue?: string };
        assert.equal(m.parameterName, name);
        assert.equal(m.parameterValue, value);
      }),
      { numRuns: 300 },
    );
  });
});

describe('backendKeyData', () => {
  test('K, length 12, process id and secret key as signed int32', () => {
    for (const [pid, key] of [
      [0x01000001, 0x7fffffff],
      [0, 0],
      [0x7f000000, -1],
      [-2147483648, 123456789],
    ] as const) {
      const buf = backendKeyData(pid, key);
      assert.equal(buf.length, 13);
      const body = assertFramed(buf, Backend.BackendKeyData);
      assert.equal(body.readInt32BE(0), pid);
      assert.equal(body.readInt32BE(4), key);
      const m = only(buf) as BackendMessage & { processID?: number; secretKey?: number };
      assert.equal(m.name, 'backendKeyData');
      assert.equal(m.processID, pid);
      assert.equal(m.secretKey, key);
    }
  });
});

describe('negotiateProtocolVersion', () => {
  // pg-protocol 1.16 does not decode 'v' (it reports an invalid response), so this one is checked by hand.
  test('newest minor and the unrecognised options', () => {
    const buf = negotiateProtocolVersion(0, ['_pq_.compression', '_pq_.x']);
    const body = assertFramed(buf, Backend.NegotiateProtocolVersion);
    assert.equal(body.readInt32BE(0), 196608, 'protocol 3.0');
    assert.equal(body.readInt32BE(4), 2);
    assert.equal(body.subarray(8).toString('utf8'), '_pq_.compression\0_pq_.x\0');
  });

  test('no unrecognised options: count 0 and nothing after it', () => {
    const buf = negotiateProtocolVersion(0, []);
    assert.deepEqual(buf, Buffer.from([0x76 /* 'v' */, 0, 0, 0, 12, 0, 3, 0, 0, 0, 0, 0, 0]));
  });

  test('a newer minor is encoded in the low 16 bits', () => {
    const body = assertFramed(negotiateProtocolVersion(2, []), Backend.NegotiateProtocolVersion);
    assert.equal(body.readInt32BE(0), (3 << 16) | 2);
  });

  test('a whole startup reply (SASL final, Ok, ParameterStatus, BackendKeyData, ReadyForQuery) parses as one stream', () => {
    const stream = Buffer.concat([
      authenticationSASLFinal(Buffer.from('v=x')),
      authenticationOk(),
      parameterStatus('server_version', '17.2'),
      parameterStatus('client_encoding', 'UTF8'),
      backendKeyData(0x01000002, 99),
      readyForQuery(TxStatus.Idle),
    ]);
    // Split at every position: pg-protocol must see the same messages (our framing is self-consistent).
    // Copies, because pg-protocol reuses the caller's first buffer to merge the rest into it.
    for (let cut = 0; cut <= stream.length; cut++) {
      const parser = new Parser();
      const names: string[] = [];
      parser.parse(Buffer.from(stream.subarray(0, cut)), (m) => names.push(m.name));
      parser.parse(Buffer.from(stream.subarray(cut)), (m) => names.push(m.name));
      assert.deepEqual(names, ['authenticationSASLFinal', 'authenticationOk', 'parameterStatus', 'parameterStatus', 'backendKeyData', 'readyForQuery'], `cut ${cut}`);
    }
  });
});
