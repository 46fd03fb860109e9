// The frontend messages rolegate writes upstream (src/protocol/frontend-encode.ts,
// pg-protocol's serializer underneath): checked by exact bytes for the fixed
// packets and by our own frontend decoders for the rest.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Frontend, StartupCode } from '../../src/protocol/constants.ts';
import * as encode from '../../src/protocol/frontend-encode.ts';
import { decodeParse, decodeQuery, decodeStartupPacket, readCString } from '../../src/protocol/frontend.ts';

/** Type byte and length of a typed message; the length must cover exactly the rest. */
function assertFramed(buf: Buffer, type: number): void {
  assert.equal(buf[0], type, `type byte ${String.fromCharCode(type)}`);
  assert.equal(buf.readInt32BE(1), buf.length - 1, 'length field counts itself and the body');
}

describe('fixed packets', () => {
  test('SSLRequest is 00 00 00 08 04 d2 16 2f', () => {
    assert.deepEqual(encode.sslRequest(), Buffer.from('0000000804d2162f', 'hex'));
    assert.deepEqual(decodeStartupPacket(encode.sslRequest()), { kind: 'ssl' });
  });

  test('CancelRequest: length 16, code 80877102, then process id and secret key as int32', () => {
    const buf = encode.cancelRequest(0x01020304, -2);
    assert.deepEqual(buf, Buffer.from('0000001004d2162e01020304fffffffe', 'hex'));
    assert.equal(buf.readInt32BE(4), StartupCode.CancelRequest);
    assert.deepEqual(decodeStartupPacket(buf), { kind: 'cancel', processId: 0x01020304, secretKey: -2 });
  });

  test('Terminate is X 00 00 00 04', () => {
    assert.deepEqual(encode.TERMINATE, Buffer.from([0x58 /* 'X' */, 0, 0, 0, 4]));
    assert.equal(encode.TERMINATE[0], Frontend.Terminate);
  });
});

describe('startup', () => {
  test('carries exactly the given parameters in order, client_encoding=UTF8 once', () => {
    const params = new Map([
      ['user', 'app_reader'],
      ['database', 'orders'],
      ['application_name', 'svc é'],
      ['TimeZone', 'UTC'],
      ['client_encoding', 'UTF8'],
      ['standard_conforming_strings', 'on'],
    ]);
    const packet = encode.startup(params);
    assert.equal(packet.readInt32BE(0), packet.length);
    assert.equal(packet.readInt32BE(4), StartupCode.Protocol3);
    const decoded = decodeStartupPacket(packet);
    assert.equal(decoded.kind, 'startup', JSON.stringify(decoded)); // duplicates would make it 'invalid'
    if (decoded.kind !== 'startup') return;
    assert.equal(decoded.minor, 0);
    assert.deepEqual(
      [...decoded.params],
      [
        ['user', 'app_reader'],
        ['database', 'orders'],
        ['application_name', 'svc é'],
        ['TimeZone', 'UTC'],
        ['standard_conforming_strings', 'on'],
        ['client_encoding', 'UTF8'],
      ],
    );
    const text = packet.subarray(8).toString('latin1');
    assert.equal(text.split('client_encoding').length - 1, 1, 'client_encoding appears once on the wire');
  });

  test('client_encoding is sent (as UTF8) even when not given', () => {
    const decoded = decodeStartupPacket(encode.startup(new Map([['user', 'u']])));
    assert.deepEqual(decoded, { kind: 'startup', minor: 0, params: new Map([['user', 'u'], ['client_encoding', 'UTF8']]) });
  });

  test('a client_encoding other than UTF8 (any case of the name) throws instead of being overridden', () => {
    assert.throws(() => encode.startup(new Map([['client_encoding', 'SJIS']])), RangeError);
    assert.throws(() => encode.startup(new Map([['Client_Encoding', 'LATIN1']])), RangeError);
    assert.throws(() => encode.startup(new Map([['client_encoding', 'utf8']])), RangeError);
    const decoded = decodeStartupPacket(encode.startup(new Map([['CLIENT_ENCODING', 'UTF8']])));
    assert.deepEqual(decoded, { kind: 'startup', minor: 0, params: new Map([['client_encoding', 'UTF8']]) });
  });

  test('a NUL in a name or value throws (it would inject parameters)', () => {
    assert.throws(() => encode.startup(new Map([['database', 'db\0options\0-c role=admin']])), RangeError);
    assert.throws(() => encode.startup(new Map([['a\0b', 'x']])), RangeError);
  });

  test('a parameter named __proto__ is an ordinary parameter', () => {
    const decoded = decodeStartupPacket(encode.startup(new Map([['__proto__', 'x']])));
    assert.deepEqual(decoded, { kind: 'startup', minor: 0, params: new Map([['__proto__', 'x'], ['client_encoding', 'UTF8']]) });
  });

  test('property: any NUL-free parameter list decodes back to itself plus client_encoding=UTF8', () => {
    const name = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\0') && !/^(0|[1-9][0-9]*)$/.test(s) && s.toLowerCase() !== 'client_encoding');
    const value = fc.string({ maxLength: 40, unit: 'grapheme' }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, value), { selector: ([n]) => n, maxLength: 8 }), (entries) => {
        const decoded = decodeStartupPacket(encode.startup(new Map(entries)));
        assert.equal(decoded.kind, 'startup');
        if (decoded.kind !== 'startup') return;
        // Lone surrogates have no UTF-8 form: compare what UTF-8 makes of them.
        const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('utf8');
        assert.deepEqual([...decoded.params], [...entries.map(([n, v]) => [utf8(n), utf8(v)]), ['client_encoding', 'UTF8']]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('authentication answers', () => {
  test('PasswordMessage: p, length, the password as a C string', () => {
    const buf = encode.password('md5abc');
    assertFramed(buf, Frontend.Password);
    assert.deepEqual(buf, Buffer.from('p\0\0\0\x0bmd5abc\0', 'latin1'));
  });

  test('SASLInitialResponse: mechanism C string, int32 length, the client-first-message', () => {
    const data = Buffer.from('n,,n=,r=abc', 'utf8');
    const buf = encode.saslInitialResponse('SCRAM-SHA-256', data);
    assertFramed(buf, Frontend.Password);
    const mechanism = readCString(buf, 5, buf.length);
    assert.equal(mechanism?.text, 'SCRAM-SHA-256');
    const at = mechanism?.next ?? 0;
    assert.equal(buf.readInt32BE(at), data.length);
    assert.deepEqual(buf.subarray(at + 4), data);
  });

  test('SASLResponse: the client-final-message is the whole body', () => {
    const data = Buffer.from('c=biws,r=abcdef,p=AAAA', 'latin1');
    const buf = encode.saslResponse(data);
    assertFramed(buf, Frontend.Password);
    assert.deepEqual(buf.subarray(5), data);
  });
});

describe('query and parse (denied statements)', () => {
  test('query: decodeQuery reads the text back', () => {
    for (const sql of ['', 'rolegate_denied_x_1', 'SELECT ’é’']) {
      const buf = encode.query(sql);
      assertFramed(buf, Frontend.Query);
      const q = decodeQuery(buf, 0, buf.length);
      assert.ok(q !== null);
      assert.equal(buf.toString('utf8', q.textStart, q.textEnd), sql);
    }
  });

  test('parse: decodeParse reads name and text back, no parameter types', () => {
    for (const [name, sql] of [
      ['', 'rolegate_denied_x_2'],
      ['stmt_1', 'rolegate_denied_x_3'],
      ['é', 'x'],
    ] as const) {
      const buf = encode.parse(name, sql);
      assertFramed(buf, Frontend.Parse);
      const p = decodeParse(buf, 0, buf.length);
      assert.ok(p !== null);
      assert.equal(p.name, name);
      assert.equal(buf.toString('utf8', p.textStart, p.textEnd), sql);
      assert.equal(p.paramTypeCount, 0);
    }
  });

  test('property: NUL-free text round-trips through decodeQuery and decodeParse', () => {
    const text = fc.string({ maxLength: 200, unit: 'grapheme' }).filter((s) => !s.includes('\0'));
    // Names stay within 63 characters: pg-protocol warns on stderr above that.
    const name = fc.string({ maxLength: 20, unit: 'grapheme' }).filter((s) => !s.includes('\0') && s.length <= 63);
    fc.assert(
      fc.property(name, text, (name, sql) => {
        const q = encode.query(sql);
        const dq = decodeQuery(q, 0, q.length);
        assert.ok(dq !== null);
        assert.equal(q.toString('utf8', dq.textStart, dq.textEnd), sql);
        const p = encode.parse(name, sql);
        const dp = decodeParse(p, 0, p.length);
        assert.ok(dp !== null);
        assert.equal(dp.name, name);
        assert.equal(p.toString('utf8', dp.textStart, dp.textEnd), sql);
      }),
      { numRuns: 300 },
    );
  });
});
