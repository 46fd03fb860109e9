// Frontend decoders: every message is built byte by byte, placed inside a
// larger buffer (so a decoder that reads past `end` is caught), and every
// malformed variant must come back null / 'invalid', never a throw.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  checkSqlBytes,
  decodeBind,
  decodeExecute,
  decodeParse,
  decodeQuery,
  decodeStartupPacket,
  decodeTarget,
  readCString,
  startupPacketLength,
} from '../../src/protocol/frontend.ts';
import { Frontend, MAX_STARTUP_PACKET_BYTES, StartupCode } from '../../src/protocol/constants.ts';

// ---- byte builders ----

const bytes = (...parts: Array<Buffer | string | number[]>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Array.isArray(p) ? Buffer.from(p) : p)));
const cstr = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');
const int16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
};
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

function msg(type: number, body: Buffer): Buffer {
  return bytes([type], int32(4 + body.length), body);
}

/**
 * The message at offset 7 of a buffer with junk before and after it (junk
 * after holds NULs and a valid-looking int, so reading past `end` shows).
 */
function placed(message: Buffer): { buf: Buffer; start: number; end: number } {
  const before = Buffer.from('junk\0\0\0');
  const after = bytes([0, 0, 0, 0, 0x53, 0x50], cstr('trailing'), int32(1));
  return { buf: bytes(before, message, after), start: before.length, end: before.length + message.length };
}

function decode<T>(fn: (buf: Buffer, start: number, end: number) => T, message: Buffer): T {
  const p = placed(message);
  return fn(p.buf, p.start, p.end);
}

function startup(code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  return bytes(int32(8 + body.length), int32(code), body);
}

function params(pairs: Array<[string, string]>): Buffer {
  return bytes(...pairs.map(([k, v]) => bytes(cstr(k), cstr(v))), [0]);
}

describe('readCString', () => {
  test('reads up to the NUL and reports the offset after it', () => {
    const buf = bytes('xx', cstr('héllo'), 'rest');
    assert.deepEqual(readCString(buf, 2, buf.length), { text: 'héllo', next: 2 + Buffer.byteLength('héllo') + 1 });
  });

  test('empty string', () => {
    assert.deepEqual(readCString(Buffer.from([0, 1]), 0, 2), { text: '', next: 1 });
  });

  test('no NUL at all → null', () => {
    assert.equal(readCString(Buffer.from('abc'), 0, 3), null);
  });

  test('NUL only at or after `end` → null (the bound is honoured)', () => {
    const buf = bytes('abc', [0]);
    assert.equal(readCString(buf, 0, 3), null);
    assert.equal(readCString(buf, 0, 2), null);
    assert.deepEqual(readCString(buf, 0, 4), { text: 'abc', next: 4 });
  });

  test('start at or past the end → null', () => {
    const buf = bytes('a', [0]);
    assert.equal(readCString(buf, 2, 2), null);
    assert.equal(readCString(buf, 5, 2), null);
  });
});

describe('checkSqlBytes', () => {
  const check = (b: Buffer): ReturnType<typeof checkSqlBytes> => {
    const buf = bytes([0xff, 0], b, [0xff, 0]);
    return checkSqlBytes(buf, 2, 2 + b.length);
  };

  test('ASCII, multi-byte UTF-8, 4-byte UTF-8 and empty text are accepted', () => {
    for (const s of ['SELECT 1', "SELECT 'héllo wörld €'", 'SELECT \'😀\'', '']) assert.equal(check(Buffer.from(s)), null, s);
  });

  test('only the given range is checked (invalid bytes and NULs around it do not count)', () => {
    assert.equal(checkSqlBytes(bytes([0xff], 'SELECT 1', [0]), 1, 9), null);
  });

  test('invalid UTF-8 → RG_INVALID_UTF8', () => {
    const bad: Array<[string, number[]]> = [
      ['lone continuation byte', [0x80]],
      ['0xFF', [0x53, 0xff]],
      ['overlong NUL (C0 80)', [0xc0, 0x80]],
      ['overlong slash (E0 80 AF)', [0xe0, 0x80, 0xaf]],
      ['UTF-16 surrogate (ED A0 80)', [0xed, 0xa0, 0x80]],
      ['truncated 3-byte sequence', [0x61, 0xe2, 0x82]],
      ['above U+10FFFF (F4 90 80 80)', [0xf4, 0x90, 0x80, 0x80]],
      ['Latin-1 é', [0x53, 0xe9, 0x53]],
    ];
    for (const [name, b] of bad) assert.equal(check(Buffer.from(b)), 'RG_INVALID_UTF8', name);
  });

  test('a NUL inside the text → RG_NUL_IN_TEXT (the server would stop reading there)', () => {
    assert.equal(check(bytes('SELECT 1', [0], '; DROP TABLE t')), 'RG_NUL_IN_TEXT');
    assert.equal(check(Buffer.from([0])), 'RG_NUL_IN_TEXT');
  });
});

describe('decodeQuery', () => {
  test('valid: the text range excludes the terminator', () => {
    const p = placed(msg(Frontend.Query, cstr('SELECT 1')));
    const q = decodeQuery(p.buf, p.start, p.end);
    assert.ok(q);
    assert.equal(p.buf.toString('utf8', q.textStart, q.textEnd), 'SELECT 1');
    assert.equal(q.textEnd, p.end - 1);
  });

  test('the empty query string is valid (the server answers EmptyQueryResponse)', () => {
    const q = decode(decodeQuery, msg(Frontend.Query, cstr('')));
    assert.ok(q);
    assert.equal(q.textStart, q.textEnd);
  });

  test('malformed → null', () => {
    const cases: Array<[string, Buffer]> = [
      ['no body at all', msg(Frontend.Query, Buffer.alloc(0))],
      ['missing terminator', msg(Frontend.Query, Buffer.from('SELECT 1'))],
      ['inner NUL (text after it would be hidden from the policy)', msg(Frontend.Query, bytes(cstr('SELECT 1'), cstr('DROP TABLE t')))],
      ['two NULs at the end', msg(Frontend.Query, bytes('SELECT 1', [0, 0]))],
      ['NUL first, text after', msg(Frontend.Query, bytes([0], cstr('DELETE FROM t')))],
    ];
    for (const [name, m] of cases) assert.equal(decode(decodeQuery, m), null, name);
  });
});

describe('decodeParse', () => {
  test('named statement, no parameter types', () => {
    const p = placed(msg(Frontend.Parse, bytes(cstr('s1'), cstr('SELECT 1'), int16(0))));
    const d = decodeParse(p.buf, p.start, p.end);
    assert.ok(d);
    assert.equal(d.name, 's1');
    assert.equal(d.paramTypeCount, 0);
    assert.equal(p.buf.toString('utf8', d.textStart, d.textEnd), 'SELECT 1');
  });

  test('unnamed statement with parameter types', () => {
    const d = decode(decodeParse, msg(Frontend.Parse, bytes(cstr(''), cstr('SELECT $1, $2'), int16(2), int32(23), int32(25))));
    assert.ok(d);
    assert.equal(d.name, '');
    assert.equal(d.paramTypeCount, 2);
  });

  test('the count is unsigned like the server reads it: 40000 parameter types (libpq allows 65535)', () => {
    const oids = Buffer.alloc(40000 * 4);
    const d = decode(decodeParse, msg(Frontend.Parse, bytes(cstr(''), cstr('SELECT $1'), int16(40000), oids)));
    assert.ok(d);
    assert.equal(d.paramTypeCount, 40000);
  });

  test('malformed → null', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty body', Buffer.alloc(0)],
      ['name without NUL', Buffer.from('s1')],
      ['query without NUL', bytes(cstr('s1'), 'SELECT 1')],
      ['no count', bytes(cstr('s1'), cstr('SELECT 1'))],
      ['one byte of count', bytes(cstr('s1'), cstr('SELECT 1'), [0])],
      ['count 1, no OID', bytes(cstr('s1'), cstr('SELECT 1'), int16(1))],
      ['count 2, one OID', bytes(cstr('s1'), cstr('SELECT 1'), int16(2), int32(23))],
      ['count 1, OID cut short', bytes(cstr('s1'), cstr('SELECT 1'), int16(1), [0, 0, 0])],
      ['count 0, trailing bytes', bytes(cstr('s1'), cstr('SELECT 1'), int16(0), [0])],
      ['count 1, trailing bytes', bytes(cstr('s1'), cstr('SELECT 1'), int16(1), int32(23), [1, 2])],
      ['count 0xFFFF ("-1"), no OIDs', bytes(cstr('s1'), cstr('SELECT 1'), int16(-1))],
      ['count 0x8000 ("-32768"), four OIDs', bytes(cstr('s1'), cstr('SELECT 1'), int16(-32768), Buffer.alloc(16))],
      ['inner NUL: text after it is read as the count', bytes(cstr('s1'), cstr('SELECT 1'), cstr('xx'), int16(0))],
      ['name not UTF-8 (would decode to the same string as "\\uFFFD")', bytes([0xff, 0], cstr('SELECT 1'), int16(0))],
    ];
    for (const [name, body] of cases) assert.equal(decode(decodeParse, msg(Frontend.Parse, body)), null, name);
  });
});

describe('statement and portal names', () => {
  test('names are byte-exact: distinct UTF-8 names never decode to the same string', () => {
    // U+FFFD itself is a valid name; an invalid byte that would decode to it is refused (above).
    const d = decode(decodeParse, msg(Frontend.Parse, bytes(cstr('\uFFFD'), cstr('SELECT 1'), int16(0))));
    assert.equal(d?.name, '\uFFFD');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 6 }), fc.uint8Array({ maxLength: 6 }), (a, b) => {
        const na = Buffer.from(a.filter((x) => x !== 0));
        const nb = Buffer.from(b.filter((x) => x !== 0));
        const da = decode(decodeBind, msg(Frontend.Bind, bytes(na, [0], cstr(''))));
        const db = decode(decodeBind, msg(Frontend.Bind, bytes(nb, [0], cstr(''))));
        if (da !== null && db !== null && !na.equals(nb)) assert.notEqual(da.portal, db.portal);
        if (da !== null) assert.deepEqual(Buffer.from(da.portal, 'utf8'), na);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('decodeBind', () => {
  test('portal and statement names; the rest of the body is left to the server', () => {
    const body = bytes(cstr('p1'), cstr('s1'), int16(0), int16(1), int32(1), '7', int16(0));
    assert.deepEqual(decode(decodeBind, msg(Frontend.Bind, body)), { portal: 'p1', statement: 's1' });
  });

  test('unnamed portal and statement', () => {
    assert.deepEqual(decode(decodeBind, msg(Frontend.Bind, bytes(cstr(''), cstr(''), int16(0), int16(0), int16(0)))), { portal: '', statement: '' });
  });

  test('malformed → null', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty body', Buffer.alloc(0)],
      ['portal without NUL', Buffer.from('p1')],
      ['statement without NUL', bytes(cstr('p1'), 's1')],
      ['portal not UTF-8', bytes([0x70, 0xfe, 0], cstr('s1'), int16(0), int16(0), int16(0))],
      ['statement not UTF-8', bytes(cstr('p1'), [0xc0, 0x80, 0], int16(0), int16(0), int16(0))],
    ];
    for (const [name, body] of cases) assert.equal(decode(decodeBind, msg(Frontend.Bind, body)), null, name);
  });
});

describe('decodeTarget (Describe / Close)', () => {
  test("'S' and 'P' with a name", () => {
    assert.deepEqual(decode(decodeTarget, msg(Frontend.Describe, bytes('S', cstr('s1')))), { kind: 'S', name: 's1' });
    assert.deepEqual(decode(decodeTarget, msg(Frontend.Close, bytes('P', cstr('')))), { kind: 'P', name: '' });
  });

  test('malformed → null', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty body (the next byte in the buffer must not be read as the kind)', Buffer.alloc(0)],
      ['kind only', Buffer.from('S')],
      ["unknown kind 'X'", bytes('X', cstr('s1'))],
      ["lower-case 's'", bytes('s', cstr('s1'))],
      ['name without NUL', bytes('S', 's1')],
      ['trailing bytes after the name', bytes('S', cstr('s1'), [0])],
      ['name not UTF-8', bytes('S', [0xff, 0])],
    ];
    for (const [name, body] of cases) assert.equal(decode(decodeTarget, msg(Frontend.Describe, body)), null, name);
  });
});

describe('decodeExecute', () => {
  test('portal name and max rows (0 = all; signed like the server)', () => {
    assert.deepEqual(decode(decodeExecute, msg(Frontend.Execute, bytes(cstr(''), int32(0)))), { portal: '', maxRows: 0 });
    assert.deepEqual(decode(decodeExecute, msg(Frontend.Execute, bytes(cstr('p1'), int32(100)))), { portal: 'p1', maxRows: 100 });
    assert.deepEqual(decode(decodeExecute, msg(Frontend.Execute, bytes(cstr('p'), int32(-1)))), { portal: 'p', maxRows: -1 });
  });

  test('malformed → null', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty body', Buffer.alloc(0)],
      ['portal without NUL', Buffer.from('p1')],
      ['no max rows', cstr('p1')],
      ['max rows cut short', bytes(cstr('p1'), [0, 0, 1])],
      ['trailing bytes', bytes(cstr('p1'), int32(0), [0])],
      ['portal not UTF-8', bytes([0xed, 0xa0, 0x80, 0], int32(0))],
    ];
    for (const [name, body] of cases) assert.equal(decode(decodeExecute, msg(Frontend.Execute, body)), null, name);
  });
});

describe('startupPacketLength', () => {
  test('fewer than 4 bytes → null (wait for more)', () => {
    for (let n = 0; n < 4; n++) assert.equal(startupPacketLength(Buffer.alloc(n, 0)), null);
  });

  test('the length is returned when 8 ≤ length ≤ MAX_STARTUP_PACKET_BYTES, even before the body arrives', () => {
    assert.equal(startupPacketLength(int32(8)), 8);
    assert.equal(startupPacketLength(int32(MAX_STARTUP_PACKET_BYTES)), MAX_STARTUP_PACKET_BYTES);
    assert.equal(startupPacketLength(bytes(int32(16), int32(StartupCode.CancelRequest))), 16);
  });

  test('out of bounds → -1', () => {
    for (const len of [0, 4, 7, -1, -8, MAX_STARTUP_PACKET_BYTES + 1, 0x7fffffff]) assert.equal(startupPacketLength(int32(len)), -1, String(len));
  });
});

describe('decodeStartupPacket', () => {
  test('protocol 3.0 with parameters', () => {
    const d = decodeStartupPacket(
      startup(
        StartupCode.Protocol3,
        params([
          ['user', 'alice'],
          ['database', 'app'],
          ['application_name', 'ünïcode'],
          ['options', '-c rolegate.role=app_writer'],
        ]),
      ),
    );
    assert.equal(d.kind, 'startup');
    assert.ok(d.kind === 'startup');
    assert.equal(d.minor, 0);
    assert.deepEqual(
      [...d.params],
      [
        ['user', 'alice'],
        ['database', 'app'],
        ['application_name', 'ünïcode'],
        ['options', '-c rolegate.role=app_writer'],
      ],
    );
  });

  test('an empty value is allowed; no parameters at all is a packet with just the terminator', () => {
    const d = decodeStartupPacket(startup(StartupCode.Protocol3, params([['user', '']])));
    assert.ok(d.kind === 'startup');
    assert.equal(d.params.get('user'), '');
    const none = decodeStartupPacket(startup(StartupCode.Protocol3, Buffer.from([0])));
    assert.ok(none.kind === 'startup');
    assert.equal(none.params.size, 0);
  });

  test('protocol 3.2 is a startup with minor 2 (the session negotiates it down)', () => {
    const d = decodeStartupPacket(startup((3 << 16) | 2, params([['user', 'u']])));
    assert.ok(d.kind === 'startup');
    assert.equal(d.minor, 2);
  });

  test('protocol 2.0 and 4.0 are unsupported, with the version reported', () => {
    assert.deepEqual(decodeStartupPacket(startup(2 << 16, params([['user', 'u']]))), { kind: 'unsupported', major: 2, minor: 0 });
    assert.deepEqual(decodeStartupPacket(startup((4 << 16) | 1, params([['user', 'u']]))), { kind: 'unsupported', major: 4, minor: 1 });
    // An unknown special code (1234.5681) is just an unsupported version.
    assert.deepEqual(decodeStartupPacket(startup(80877105)), { kind: 'unsupported', major: 1234, minor: 5681 });
  });

  test('SSLRequest, GSSENCRequest, CancelRequest', () => {
    assert.deepEqual(decodeStartupPacket(startup(StartupCode.SSLRequest)), { kind: 'ssl' });
    assert.deepEqual(decodeStartupPacket(startup(StartupCode.GSSENCRequest)), { kind: 'gssenc' });
    assert.deepEqual(decodeStartupPacket(startup(StartupCode.CancelRequest, bytes(int32(0x01000005), int32(-12345)))), {
      kind: 'cancel',
      processId: 0x01000005,
      secretKey: -12345,
    });
  });

  test('special requests with the wrong length → invalid', () => {
    const cases: Array<[string, Buffer]> = [
      ['SSLRequest + 4 bytes', startup(StartupCode.SSLRequest, int32(0))],
      ['GSSENCRequest + 1 byte', startup(StartupCode.GSSENCRequest, Buffer.from([0]))],
      ['CancelRequest without the key', startup(StartupCode.CancelRequest, int32(1))],
      ['CancelRequest with nothing', startup(StartupCode.CancelRequest)],
      ['CancelRequest with a 3.2-style long key', startup(StartupCode.CancelRequest, bytes(int32(1), Buffer.alloc(32, 7)))],
    ];
    for (const [name, packet] of cases) assert.equal(decodeStartupPacket(packet).kind, 'invalid', name);
  });

  test('malformed parameter lists → invalid, with a reason', () => {
    const cases: Array<[string, Buffer]> = [
      ['no terminator (no parameters, 8 bytes)', Buffer.alloc(0)],
      ['missing final terminator', bytes(cstr('user'), cstr('u'))],
      ['missing value', bytes(cstr('user'), [0])],
      ['name only, cut', bytes('user', [0])],
      ['duplicate parameter', params([['user', 'a'], ['user', 'b']])],
      ['duplicate parameter, different values elsewhere', params([['user', 'a'], ['database', 'd'], ['user', 'a']])],
      ['empty name before more parameters', bytes([0], cstr('user'), cstr('u'), [0])],
      ['trailing bytes after the terminator', bytes(params([['user', 'u']]), [0])],
      ['bytes after the terminator', bytes(params([['user', 'u']]), cstr('x'))],
      ['invalid UTF-8 in a value', bytes(cstr('user'), [0x61, 0xff, 0], [0])],
      ['invalid UTF-8 in a name', bytes([0xc0, 0x80, 0], cstr('v'), [0])],
    ];
    for (const [name, body] of cases) {
      const d = decodeStartupPacket(startup(StartupCode.Protocol3, body));
      assert.equal(d.kind, 'invalid', name);
      assert.ok(d.kind === 'invalid' && d.reason.length > 0);
    }
  });

  test('the duplicate reason names the parameter', () => {
    const d = decodeStartupPacket(startup(StartupCode.Protocol3, params([['database', 'a'], ['database', 'b']])));
    assert.deepEqual(d, { kind: 'invalid', reason: 'duplicate parameter "database"' });
  });
});

// ---- properties: random bytes never make a decoder throw ----

describe('decoders: properties', () => {
  const framed = fc
    .tuple(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 8 }), fc.integer({ min: 0, max: 255 }))
    .map(([before, body, after, type]) => {
      const message = msg(type, Buffer.from(body));
      return { buf: bytes(Buffer.from(before), message, Buffer.from(after)), start: before.length, end: before.length + message.length };
    });

  // Bodies built from the pieces real messages are made of, so the decoders
  // get past their first checks more often than with uniform noise.
  const piece = fc.oneof(
    fc.string({ maxLength: 12 }).map((s) => cstr(s)),
    fc.string({ maxLength: 12 }).map((s) => Buffer.from(s)),
    fc.integer({ min: -2, max: 5 }).map(int16),
    fc.integer().map(int32),
    fc.constantFrom(Buffer.from([0]), Buffer.from('S'), Buffer.from('P'), Buffer.from([0xff])),
  );
  const structured = fc.array(piece, { maxLength: 8 }).map((parts) => {
    const message = msg(0x50, Buffer.concat(parts));
    return { buf: bytes('x', message, [0, 0, 0, 0]), start: 1, end: 1 + message.length };
  });

  const inRange = (m: { start: number; end: number }, a: number, b: number): boolean => a >= m.start + 5 && a <= b && b <= m.end;

  for (const [label, arb] of [
    ['random bodies', framed],
    ['bodies of cstrings and ints', structured],
  ] as const) {
    test(`${label}: no decoder throws; returned ranges stay inside the message`, () => {
      fc.assert(
        fc.property(arb, (m) => {
          const q = decodeQuery(m.buf, m.start, m.end);
          if (q) {
            assert.ok(inRange(m, q.textStart, q.textEnd));
            assert.equal(checkSqlBytes(m.buf, q.textStart, q.textEnd) === 'RG_NUL_IN_TEXT', false, 'decodeQuery text never contains a NUL');
          }
          const p = decodeParse(m.buf, m.start, m.end);
          if (p) {
            assert.ok(inRange(m, p.textStart, p.textEnd));
            assert.equal(p.textEnd + 1 + 2 + p.paramTypeCount * 4, m.end);
          }
          decodeBind(m.buf, m.start, m.end);
          const t = decodeTarget(m.buf, m.start, m.end);
          if (t) assert.ok(t.kind === 'S' || t.kind === 'P');
          decodeExecute(m.buf, m.start, m.end);
          const c = readCString(m.buf, m.start + 5, m.end);
          if (c) assert.ok(c.next <= m.end);
        }),
        { numRuns: 1000 },
      );
    });
  }

  test('startup: random bytes through startupPacketLength + decodeStartupPacket never throw', () => {
    const codes = fc.oneof(
      fc.constantFrom(StartupCode.Protocol3, StartupCode.SSLRequest, StartupCode.GSSENCRequest, StartupCode.CancelRequest, (3 << 16) | 2, 2 << 16),
      fc.integer(),
    );
    const packet = fc.oneof(
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.tuple(codes, fc.array(fc.oneof(fc.string({ maxLength: 8 }).map(cstr), fc.uint8Array({ maxLength: 6 }).map((b) => Buffer.from(b))), { maxLength: 8 })).map(([code, parts]) =>
        startup(code, Buffer.concat(parts)),
      ),
    );
    fc.assert(
      fc.property(packet, (buf) => {
        const len = startupPacketLength(buf);
        if (len === null) return assert.ok(buf.length < 4);
        if (len < 0 || len > buf.length) return;
        const d = decodeStartupPacket(buf.subarray(0, len));
        assert.ok(['ssl', 'gssenc', 'cancel', 'startup', 'unsupported', 'invalid'].includes(d.kind));
        if (d.kind === 'startup') for (const [k] of d.params) assert.ok(k.length > 0);
      }),
      { numRuns: 2000 },
    );
  });

  test('valid startup packets round-trip their parameters', () => {
    const name = fc.string({ minLength: 1, maxLength: 10 }).filter((s) => !s.includes('\0'));
    const value = fc.string({ unit: 'grapheme', maxLength: 20 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, value), { selector: ([k]) => k, maxLength: 8 }), (pairs) => {
        const d = decodeStartupPacket(startup(StartupCode.Protocol3, params(pairs)));
        assert.ok(d.kind === 'startup', JSON.stringify(d));
        assert.deepEqual([...d.params], pairs);
      }),
      { numRuns: 500 },
    );
  });
});
