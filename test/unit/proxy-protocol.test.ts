import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketAddress } from 'node:net';
import fc from 'fast-check';
import { canonicalIp, cidrContains, parseCidr } from '../../src/config/ip-address.ts';
import {
  PROXY_V1_MAX_BYTES,
  PROXY_V2_MAX_BYTES,
  PROXY_V2_SIGNATURE,
  Pp2Type,
  crc32c,
  parseProxyHeader,
  type ProxyParse,
} from '../../src/protocol/proxy-protocol.ts';

// ---------------------------------------------------------------- byte builders

const v1 = (line: string): Buffer => Buffer.from(line, 'latin1');

interface V2Options {
  version?: number;
  command?: number;
  familyProtocol?: number;
  /** Address block (12 / 36 / 216 bytes, or anything for malformed cases). */
  addr?: Buffer;
  tlvs?: Array<[number, Buffer]>;
  /** Raw bytes after the address block instead of encoded TLVs. */
  rawTail?: Buffer;
  /** Override the length field. */
  length?: number;
  /** Append a PP2_TYPE_CRC32C TLV with the correct (or the given) checksum. */
  crc?: boolean | number;
}

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

function v2(options: V2Options = {}): Buffer {
  const addr = options.addr ?? inet4('192.0.2.10', '198.51.100.20', 51544, 5432);
  const tail = options.rawTail ?? Buffer.concat((options.tlvs ?? []).map(([type, value]) => tlv(type, value)));
  const crcTlv = options.crc === undefined || options.crc === false ? Buffer.alloc(0) : tlv(Pp2Type.Crc32c, Buffer.alloc(4));
  const body = Buffer.concat([addr, tail, crcTlv]);
  const head = Buffer.alloc(16);
  PROXY_V2_SIGNATURE.copy(head);
  head[12] = ((options.version ?? 2) << 4) | (options.command ?? 1);
  head[13] = options.familyProtocol ?? 0x11;
  head.writeUInt16BE(options.length ?? body.length, 14);
  const whole = Buffer.concat([head, body]);
  if (options.crc !== undefined && options.crc !== false) {
    const at = whole.length - 4;
    whole.writeUInt32BE(typeof options.crc === 'number' ? options.crc : crc32c(whole, 0, whole.length, at), at);
  }
  return whole;
}

function inet4(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  src.split('.').forEach((o, i) => (b[i] = Number(o)));
  dst.split('.').forEach((o, i) => (b[4 + i] = Number(o)));
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

function inet6(src: Uint8Array, dst: Uint8Array, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  b.set(src, 0);
  b.set(dst, 16);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return b;
}

const hex16 = (text: string): Buffer => Buffer.from(text.replace(/[^0-9a-f]/gi, ''), 'hex');

function ok(result: ProxyParse): Extract<ProxyParse, { status: 'ok' }> {
  assert.equal(result.status, 'ok', JSON.stringify(result));
  return result;
}

function invalidReason(result: ProxyParse): string {
  assert.equal(result.status, 'invalid', JSON.stringify(result));
  return result.reason;
}

function assertPrefixesNeedMore(whole: Buffer): void {
  for (let n = 0; n < whole.length; n++) {
    const result = parseProxyHeader(whole.subarray(0, n));
    assert.deepEqual(result, { status: 'need-more' }, `prefix of ${n} / ${whole.length} bytes: ${JSON.stringify(result)}`);
  }
}

/** The shortest prefix that parses as invalid (or -1). */
function firstInvalidAt(whole: Buffer): number {
  for (let n = 0; n <= whole.length; n++) if (parseProxyHeader(whole.subarray(0, n)).status === 'invalid') return n;
  return -1;
}

// ---------------------------------------------------------------- v1

describe('PROXY v1', () => {
  const valid: Array<[string, string, Record<string, unknown>]> = [
    ['TCP4', 'PROXY TCP4 192.168.0.1 10.0.0.1 56324 5432\r\n', { family: 'tcp4', sourceAddr: '192.168.0.1', destAddr: '10.0.0.1', sourcePort: 56324, destPort: 5432 }],
    ['TCP4 with port 0 and 65535', 'PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n', { sourceAddr: '0.0.0.0', destAddr: '255.255.255.255', sourcePort: 0, destPort: 65535 }],
    ['TCP6 compressed', 'PROXY TCP6 2001:db8::1 2001:db8::2 1234 5432\r\n', { family: 'tcp6', sourceAddr: '2001:db8::1', destAddr: '2001:db8::2' }],
    ['TCP6 non-canonical text is canonicalised', 'PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::FFFF:10.0.0.1 1 2\r\n', { sourceAddr: '2001:db8::1', destAddr: '::ffff:10.0.0.1' }],
    ['TCP6 worst-case length (104 bytes)', `PROXY TCP6 ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`, { sourcePort: 65535 }],
    ['TCP6 ::', 'PROXY TCP6 :: ::1 1 2\r\n', { sourceAddr: '::', destAddr: '::1' }],
  ];
  for (const [name, line, expected] of valid) {
    test(`valid: ${name}`, () => {
      const result = ok(parseProxyHeader(v1(`${line}\x00\x00\x00\x08rest`)));
      assert.equal(result.consumed, line.length);
      assert.equal(result.header.kind, 'proxy');
      for (const [key, value] of Object.entries(expected)) assert.deepEqual((result.header as Record<string, unknown>)[key], value, key);
      if (result.header.kind === 'proxy') assert.equal(result.header.tlvs.size, 0);
      assertPrefixesNeedMore(v1(line));
    });
  }

  test('the 104-byte TCP6 worst case fits; the limit is 107 bytes with CRLF', () => {
    assert.equal(valid[4]![1].length, 104);
    const longest = `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_MAX_BYTES - 16)}\r\n`;
    assert.equal(longest.length, PROXY_V1_MAX_BYTES);
    assert.deepEqual(ok(parseProxyHeader(v1(longest))).header, { kind: 'local' });
    const tooLong = `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_MAX_BYTES - 15)}\r\n`;
    assert.match(invalidReason(parseProxyHeader(v1(tooLong))), /107/);
    // Decided once 106 bytes hold no CR: CRLF could no longer end within 107.
    assert.equal(firstInvalidAt(v1(tooLong)), PROXY_V1_MAX_BYTES - 1);
  });

  test('UNKNOWN (with or without the rest of the line) is local', () => {
    for (const line of ['PROXY UNKNOWN\r\n', 'PROXY UNKNOWN ffff:f...:ffff ffff:f...:ffff 65535 65535\r\n', 'PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n']) {
      const result = ok(parseProxyHeader(v1(line)));
      assert.deepEqual(result, { status: 'ok', header: { kind: 'local' }, consumed: line.length });
      assertPrefixesNeedMore(v1(line));
    }
  });

  const invalid: Array<[string, string, RegExp]> = [
    ['lower-case protocol', 'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n', /protocol/],
    ['TCP5', 'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', /protocol/],
    ['UNKNOWNX', 'PROXY UNKNOWNX\r\n', /protocol/],
    ['no space after PROXY', 'PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n', /space/],
    ['IPv4 with a leading zero (octal to inet_aton)', 'PROXY TCP4 010.2.3.4 5.6.7.8 1 2\r\n', /source address/],
    ['IPv4 octet > 255', 'PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n', /destination address/],
    ['IPv4 with 3 octets', 'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n', /source address/],
    ['IPv6 address under TCP4', 'PROXY TCP4 ::1 5.6.7.8 1 2\r\n', /source address/],
    ['IPv4 address under TCP6', 'PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /source address/],
    ['IPv6 with a zone id', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /source address/],
    ['IPv6 with two ::', 'PROXY TCP6 1::2::3 ::1 1 2\r\n', /source address/],
    ['IPv6 with 9 groups', 'PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', /source address/],
    ['IPv6 with a 5-digit group', 'PROXY TCP6 12345::1 ::1 1 2\r\n', /source address/],
    ['port with a leading zero', 'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', /source port/],
    ['port 65536', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n', /destination port/],
    ['negative port', 'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', /source port/],
    ['two spaces', 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', /empty destination address/],
    ['missing destination port', 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /missing destination port/],
    ['trailing space', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', /too many fields/],
    ['bare LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', /line feed/],
    ['CR without LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', /carriage return/],
    ['CR LF missing in 107 bytes', `PROXY TCP4 1.2.3.4 5.6.7.8 1 2${' '.repeat(100)}`, /too many|107/],
  ];
  for (const [name, line, reason] of invalid) {
    test(`invalid: ${name}`, () => {
      assert.match(invalidReason(parseProxyHeader(v1(line))), reason);
      // Also followed by more bytes.
      assert.equal(parseProxyHeader(v1(`${line}\r\nmore`)).status, 'invalid');
    });
  }

  test('invalid is decided at the first byte that no valid header could have', () => {
    const cases: Array<[string, number]> = [
      ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', 'PROXY TCP5'.length],
      ['PROXYX', 'PROXYX'.length],
      ['PROXY TCP4 1.2.3.4 5.6.7.800 1 2\r\n', 'PROXY TCP4 1.2.3.4 5.6.7.800'.length],
      ['PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'PROXY TCP4 01'.length],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', 'PROXY TCP4 1.2.3.4 5.6.7.8 65536'.length],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 '.length],
      ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', 'PROXY TCP6 1.'.length],
      ['PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', 'PROXY TCP6 1:2:3:4:5:6:7:8:'.length],
      ['PROXY TCP6 1::2::3 ::1 1 2\r\n', 'PROXY TCP6 1::2::'.length],
      ['PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n', 'PROXY TCP6 1:2:3:4:5:6:7::8'.length],
      ['PROXY TCP6 :1::2 ::1 1 2\r\n', 'PROXY TCP6 :1'.length],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX'.length],
    ];
    for (const [line, at] of cases) assert.equal(firstInvalidAt(v1(line)), at, line);
  });
});

// ---------------------------------------------------------------- v2

describe('PROXY v2', () => {
  test('IPv4 with TLVs (ALPN, AUTHORITY, NOOP padding, CRC32C)', () => {
    const whole = v2({
      tlvs: [
        [Pp2Type.Alpn, Buffer.from('postgresql')],
        [Pp2Type.Noop, Buffer.alloc(2)],
        [Pp2Type.Authority, Buffer.from('db.example.com')],
        [Pp2Type.Noop, Buffer.alloc(0)],
        [0xea, Buffer.from([0x01, 0x76, 0x70, 0x63])], // PP2_TYPE_AWS-style custom TLV
      ],
      crc: true,
    });
    const result = ok(parseProxyHeader(Buffer.concat([whole, Buffer.from('startup')])));
    assert.equal(result.consumed, whole.length);
    assert.ok(result.header.kind === 'proxy');
    assert.equal(result.header.family, 'tcp4');
    assert.equal(result.header.sourceAddr, '192.0.2.10');
    assert.equal(result.header.destAddr, '198.51.100.20');
    assert.equal(result.header.sourcePort, 51544);
    assert.equal(result.header.destPort, 5432);
    assert.deepEqual([...result.header.tlvs.keys()].sort((a, b) => a - b), [Pp2Type.Alpn, Pp2Type.Authority, Pp2Type.Crc32c, 0xea]);
    assert.equal(result.header.tlvs.get(Pp2Type.Authority)!.toString(), 'db.example.com');
    // TLV values are copies: reusing the input buffer does not change them.
    const input = Buffer.from(whole);
    const copy = ok(parseProxyHeader(input));
    input.fill(0);
    assert.ok(copy.header.kind === 'proxy');
    assert.equal(copy.header.tlvs.get(Pp2Type.Alpn)!.toString(), 'postgresql');
    assertPrefixesNeedMore(whole);
  });

  test('IPv6, canonical text out', () => {
    const whole = v2({ familyProtocol: 0x21, addr: inet6(hex16('2001:0db8:0000:0000:0000:0000:0000:0001'), hex16('0000:0000:0000:0000:0000:ffff:0a00:0001'), 1, 65535) });
    const result = ok(parseProxyHeader(whole));
    assert.deepEqual(result.header, { kind: 'proxy', family: 'tcp6', sourceAddr: '2001:db8::1', destAddr: '::ffff:10.0.0.1', sourcePort: 1, destPort: 65535, tlvs: new Map() });
    assert.equal(result.consumed, 16 + 36);
    assertPrefixesNeedMore(whole);
  });

  test('LOCAL is local whatever the family and body (health checks)', () => {
    for (const whole of [
      v2({ command: 0, familyProtocol: 0x00, addr: Buffer.alloc(0) }),
      v2({ command: 0, familyProtocol: 0x11 }),
      v2({ command: 0, familyProtocol: 0xff, addr: Buffer.from('ignored') }),
    ]) {
      assert.deepEqual(parseProxyHeader(whole), { status: 'ok', header: { kind: 'local' }, consumed: whole.length });
      assertPrefixesNeedMore(whole);
    }
  });

  test('PROXY with AF_UNSPEC or AF_UNIX is local (no IP to report)', () => {
    const unspec = v2({ familyProtocol: 0x00, addr: Buffer.alloc(0) });
    assert.deepEqual(parseProxyHeader(unspec), { status: 'ok', header: { kind: 'local' }, consumed: 16 });
    const unix = v2({ familyProtocol: 0x31, addr: Buffer.alloc(216, 0x61) });
    assert.deepEqual(parseProxyHeader(unix), { status: 'ok', header: { kind: 'local' }, consumed: 16 + 216 });
    assertPrefixesNeedMore(unix);
  });

  test('the largest header (16 + 65535 bytes) parses; it is never need-more once whole', () => {
    const pad = PROXY_V2_MAX_BYTES - 16 - 12 - 3;
    const whole = v2({ tlvs: [[Pp2Type.Noop, Buffer.alloc(pad)]] });
    assert.equal(whole.length, PROXY_V2_MAX_BYTES);
    assert.equal(ok(parseProxyHeader(whole)).consumed, PROXY_V2_MAX_BYTES);
    assert.equal(parseProxyHeader(whole.subarray(0, whole.length - 1)).status, 'need-more');
  });

  const invalid: Array<[string, Buffer, RegExp, number]> = [
    ['version 1 in the binary format', v2({ version: 1 }), /version 1/, 13],
    ['version 3', v2({ version: 3 }), /version 3/, 13],
    ['command 2', v2({ command: 2 }), /command 2/, 13],
    ['UDP over IPv4', v2({ familyProtocol: 0x12 }), /UDP/, 14],
    ['UDP over IPv6', v2({ familyProtocol: 0x22, addr: Buffer.alloc(36) }), /UDP/, 14],
    ['unix datagram', v2({ familyProtocol: 0x32, addr: Buffer.alloc(216) }), /datagram/, 14],
    ['AF_INET with UNSPEC transport', v2({ familyProtocol: 0x10 }), /0x10/, 14],
    ['unknown family 4', v2({ familyProtocol: 0x41 }), /0x41/, 14],
    ['length shorter than the IPv4 block', v2({ addr: Buffer.alloc(8) }), /shorter than the 12-byte/, 16],
    ['length shorter than the IPv6 block', v2({ familyProtocol: 0x21, addr: Buffer.alloc(20) }), /shorter than the 36-byte/, 16],
    ['TLV overruns the header', v2({ rawTail: Buffer.from([0x01, 0x00, 0x10, 0x61]) }), /overruns/, 16 + 12 + 3],
    ['one trailing byte', v2({ rawTail: Buffer.from([0x01]) }), /trailing/, 16],
    ['two trailing bytes after a TLV', v2({ rawTail: Buffer.concat([tlv(0x01, Buffer.from('xy')), Buffer.from([0x02, 0x00])]) }), /trailing/, 16 + 12 + 3],
    ['duplicate TLV', v2({ tlvs: [[Pp2Type.Authority, Buffer.from('a')], [Pp2Type.Authority, Buffer.from('b')]] }), /twice/, 16 + 12 + 4 + 3],
    ['CRC32C mismatch', v2({ crc: 0xdeadbeef }), /CRC32C/, -1],
    ['CRC32C of 3 bytes', v2({ tlvs: [[Pp2Type.Crc32c, Buffer.alloc(3)]] }), /CRC32C TLV must be 4 bytes/, 16 + 12 + 3],
    ['UNIQUE_ID over 128 bytes', v2({ tlvs: [[Pp2Type.UniqueId, Buffer.alloc(129)]] }), /UNIQUE_ID/, 16 + 12 + 3],
    ['SSL TLV under 5 bytes', v2({ tlvs: [[Pp2Type.Ssl, Buffer.alloc(4)]] }), /SSL/, 16 + 12 + 3],
  ];
  for (const [name, whole, reason, decidedAt] of invalid) {
    test(`invalid: ${name}`, () => {
      assert.match(invalidReason(parseProxyHeader(whole)), reason);
      // As early as possible: at the byte that settles it (-1: only the whole header can tell).
      assert.equal(firstInvalidAt(whole), decidedAt === -1 ? whole.length : decidedAt);
    });
  }

  test('the CRC32C implementation matches the RFC 3720 test vector', () => {
    assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  });
});

// ---------------------------------------------------------------- absent and garbage

describe('bytes that are not a PROXY header', () => {
  test('absent: a PostgreSQL startup packet, an SSLRequest, a TLS ClientHello, HTTP', () => {
    const startup = Buffer.from('0000000800030000', 'hex');
    const sslRequest = Buffer.from('0000000804d2162f', 'hex');
    const clientHello = Buffer.from('160301020001', 'hex');
    for (const buf of [startup, sslRequest, clientHello, Buffer.from('GET / HTTP/1.1\r\n'), Buffer.from('PROXZ'), Buffer.from('PR0XY')]) {
      assert.deepEqual(parseProxyHeader(buf), { status: 'absent' }, buf.toString('hex'));
    }
  });

  test('absent as soon as a signature byte differs; need-more while it matches', () => {
    const almost = Buffer.from(PROXY_V2_SIGNATURE);
    almost[7] = 0x71; // 'q' instead of 'Q'
    assert.deepEqual(parseProxyHeader(almost.subarray(0, 7)), { status: 'need-more' });
    assert.deepEqual(parseProxyHeader(almost.subarray(0, 8)), { status: 'absent' });
    assert.deepEqual(parseProxyHeader(Buffer.from('PRO')), { status: 'need-more' });
    assert.deepEqual(parseProxyHeader(Buffer.alloc(0)), { status: 'need-more' });
  });
});

// ---------------------------------------------------------------- properties

const ipv4Bytes = fc.uint8Array({ minLength: 4, maxLength: 4 });
const ipv6Bytes = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  // Zero runs, so compression is exercised.
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff, 0xdb8), { minLength: 8, maxLength: 8 }).map((words) => {
    const b = new Uint8Array(16);
    words.forEach((w, i) => ((b[2 * i] = w >> 8), (b[2 * i + 1] = w & 0xff)));
    return b;
  }),
  ipv4Bytes.map((v4) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4])),
);
const port = fc.integer({ min: 0, max: 65535 });

/**
 * A valid RFC 4291 text form of the address: uncompressed with leading zeros,
 * node's canonical form, upper case, or any zero run (even one group)
 * compressed, with or without a dotted IPv4 tail.
 */
function ipv6Text(bytes: Uint8Array, style: number): string {
  const words = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  switch (style % 4) {
    case 0:
      return words.map((w) => w.padStart(4, '0')).join(':');
    case 1:
      return nodeCanonical(bytes);
    case 2:
      return nodeCanonical(bytes).toUpperCase();
    default: {
      const dotted = (style >> 2) % 2 === 1;
      const groups: string[] = dotted ? words.slice(0, 6) : words;
      const runs: Array<[number, number]> = [];
      for (let i = 0; i < groups.length; i++) for (let j = i; j < groups.length && groups[j] === '0'; j++) runs.push([i, j + 1]);
      const tail = dotted ? `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}` : null;
      const join = (parts: string[]): string => parts.join(':');
      if (runs.length === 0) return tail === null ? join(groups) : `${join(groups)}:${tail}`;
      const [from, to] = runs[(style >> 3) % runs.length]!;
      const head = join(groups.slice(0, from));
      const rest = groups.slice(to);
      if (tail !== null) rest.push(tail);
      return `${head}::${join(rest)}`;
    }
  }
}

function nodeCanonical(bytes: Uint8Array): string {
  const words = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16)).join(':');
  return new SocketAddress({ address: words, family: 'ipv6' }).address;
}

/** libuv prints IPv4-compatible addresses (first 96 bits zero) as ::a.b.c.d; RFC 5952 keeps hex there. */
const ipv4Compatible = (b: Uint8Array): boolean => b.subarray(0, 12).every((x) => x === 0) && !(b.subarray(12).every((x) => x === 0) || (b[12] === 0 && b[13] === 0 && b[14] === 0));

const validHeader = fc.oneof(
  fc.tuple(ipv4Bytes, ipv4Bytes, port, port).map(([s, d, sp, dp]) => ({
    bytes: v1(`PROXY TCP4 ${s.join('.')} ${d.join('.')} ${sp} ${dp}\r\n`),
    expect: { family: 'tcp4', sourceAddr: s.join('.'), destAddr: d.join('.'), sourcePort: sp, destPort: dp },
  })),
  fc
    .tuple(ipv6Bytes, ipv6Bytes, port, port, fc.nat(255))
    .map(([s, d, sp, dp, style]) => ({
      bytes: v1(`PROXY TCP6 ${ipv6Text(s, style)} ${ipv6Text(d, style + 1)} ${sp} ${dp}\r\n`),
      expect: { family: 'tcp6', source: s, dest: d, sourcePort: sp, destPort: dp },
    }))
    // Long text forms can exceed the 107-byte line limit (tested separately).
    .filter(({ bytes }) => bytes.length <= PROXY_V1_MAX_BYTES),
  fc
    .tuple(ipv4Bytes, ipv4Bytes, port, port, fc.array(fc.tuple(fc.integer({ min: 0xe0, max: 0xef }), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 }), fc.boolean())
    .map(([s, d, sp, dp, tlvs, crc]) => {
      const unique = [...new Map(tlvs.map(([t, v]) => [t, Buffer.from(v)])).entries()];
      return {
        bytes: v2({ addr: inet4(s.join('.'), d.join('.'), sp, dp), tlvs: unique, crc }),
        expect: { family: 'tcp4', sourceAddr: s.join('.'), destAddr: d.join('.'), sourcePort: sp, destPort: dp },
      };
    }),
  fc.tuple(ipv6Bytes, ipv6Bytes, port, port).map(([s, d, sp, dp]) => ({
    bytes: v2({ familyProtocol: 0x21, addr: inet6(s, d, sp, dp) }),
    expect: { family: 'tcp6', source: s, dest: d, sourcePort: sp, destPort: dp },
  })),
);

describe('properties (fast-check)', () => {
  test('valid headers parse to their fields, every prefix is need-more, trailing bytes are left alone', () => {
    fc.assert(
      fc.property(validHeader, fc.uint8Array({ maxLength: 16 }), ({ bytes, expect }, trailer) => {
        const result = ok(parseProxyHeader(Buffer.concat([bytes, trailer])));
        assert.equal(result.consumed, bytes.length);
        assert.ok(result.header.kind === 'proxy');
        const h = result.header;
        assert.equal(h.family, expect.family);
        assert.equal(h.sourcePort, expect.sourcePort);
        assert.equal(h.destPort, expect.destPort);
        if ('sourceAddr' in expect) {
          assert.equal(h.sourceAddr, expect.sourceAddr);
          assert.equal(h.destAddr, expect.destAddr);
        } else {
          for (const [text, raw] of [[h.sourceAddr, expect.source], [h.destAddr, expect.dest]] as const) {
            if (!ipv4Compatible(raw)) assert.equal(text, nodeCanonical(raw));
            assert.equal(canonicalIp(text) !== null, true);
          }
        }
        assertPrefixesNeedMore(bytes);
      }),
      { numRuns: Number(process.env.RUNS ?? 300) },
    );
  });

  test('a v1 line over 107 bytes is invalid even when every field is valid', () => {
    const line = `PROXY TCP6 ${'0000:'.repeat(6)}255.255.255.255 ${'0000:'.repeat(6)}255.255.255.255 1 2\r\n`;
    assert.ok(line.length > PROXY_V1_MAX_BYTES);
    assert.match(invalidReason(parseProxyHeader(v1(line))), /107/);
  });

  test('never throws on random input; need-more never at or beyond the maximum header size', () => {
    const starts = fc.constantFrom(Buffer.alloc(0), Buffer.from('PROXY '), Buffer.from('PROXY TCP4 '), Buffer.from('PROXY TCP6 '), Buffer.from('PROXY UNKNOWN'), PROXY_V2_SIGNATURE);
    const v1ish = fc.array(fc.constantFrom(...'0123456789abcdefABCDEF:.% \r\nTCPUNKOWX46'.split('')), { maxLength: 130 }).map((cs) => Buffer.from(cs.join(''), 'latin1'));
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)), v1ish);
    fc.assert(
      fc.property(starts, bytes, (start, tail) => {
        const buf = Buffer.concat([start, tail]);
        const result = parseProxyHeader(buf);
        assert.ok(['need-more', 'ok', 'absent', 'invalid'].includes(result.status));
        if (result.status === 'need-more') {
          const max = buf[0] === 0x50 ? PROXY_V1_MAX_BYTES : buf.length >= 16 ? 16 + buf.readUInt16BE(14) : 16;
          assert.ok(buf.length < max, `need-more at ${buf.length} bytes`);
          assert.ok(buf.length < PROXY_V2_MAX_BYTES);
        }
        if (result.status === 'ok') assert.ok(result.consumed <= buf.length);
      }),
      { numRuns: 2000 },
    );
  });

  test('decisions are final: a longer input never changes ok / invalid / absent', () => {
    const mutated = fc.tuple(validHeader, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([{ bytes }, at, value]) => {
      const b = Buffer.from(bytes);
      b[at % b.length] = value;
      return b;
    });
    fc.assert(
      fc.property(mutated, (buf) => {
        let decided: ProxyParse | null = null;
        for (let n = 0; n <= buf.length; n++) {
          const result = parseProxyHeader(buf.subarray(0, n));
          if (decided === null) {
            if (result.status !== 'need-more') decided = result;
          } else if (decided.status === 'ok') {
            assert.deepEqual(result, decided, `prefix ${n}`);
          } else {
            assert.equal(result.status, decided.status, `prefix ${n}`); // the reason may name more of the field
          }
        }
      }),
      { numRuns: Number(process.env.RUNS ?? 300) },
    );
  });
});

// ---------------------------------------------------------------- CIDR allow-list

describe('parseCidr / cidrContains / canonicalIp', () => {
  test('IPv4 ranges', () => {
    assert.equal(cidrContains('10.0.0.0/8', '10.255.1.2'), true);
    assert.equal(cidrContains('10.0.0.0/8', '11.0.0.1'), false);
    assert.equal(cidrContains('192.168.1.0/24', '192.168.1.255'), true);
    assert.equal(cidrContains('192.168.1.0/24', '192.168.2.0'), false);
    assert.equal(cidrContains('172.16.0.0/12', '172.31.255.255'), true);
    assert.equal(cidrContains('172.16.0.0/12', '172.32.0.0'), false);
    assert.equal(cidrContains('0.0.0.0/0', '203.0.113.9'), true);
    assert.equal(cidrContains('203.0.113.9/32', '203.0.113.9'), true);
    assert.equal(cidrContains('203.0.113.9/32', '203.0.113.8'), false);
    assert.equal(cidrContains('203.0.113.9', '203.0.113.9'), true); // bare address = one host
  });

  test('IPv6 ranges, any text form of the address', () => {
    assert.equal(cidrContains('2001:db8::/32', '2001:DB8:0:0::5'), true);
    assert.equal(cidrContains('2001:db8::/32', '2001:db9::1'), false);
    assert.equal(cidrContains('fd00::/8', 'fdff:ffff::1'), true);
    assert.equal(cidrContains('fe80::/10', 'fe80::1%eth0'), true); // a socket's zone id is dropped
    assert.equal(cidrContains('::1/128', '0:0:0:0:0:0:0:1'), true);
    assert.equal(cidrContains('2001:db8::/33', '2001:db8:8000::1'), false);
  });

  test('IPv4-mapped IPv6 is IPv4 on both sides', () => {
    assert.equal(cidrContains('10.0.0.0/8', '::ffff:10.1.2.3'), true);
    assert.equal(cidrContains('10.0.0.0/8', '::FFFF:0a01:0203'), true);
    assert.equal(cidrContains('::ffff:10.0.0.0/104', '10.1.2.3'), true);
    assert.equal(cidrContains('::ffff:10.0.0.0/104', '11.1.2.3'), false);
    assert.deepEqual(parseCidr('::ffff:10.0.0.0/104'), parseCidr('10.0.0.0/8'));
    assert.deepEqual(parseCidr('::ffff:0:0/96'), parseCidr('0.0.0.0/0'));
  });

  test('an IPv6 range does not swallow IPv4 clients, and the other way round', () => {
    assert.equal(cidrContains('::/0', '10.1.2.3'), false);
    assert.equal(cidrContains('::/0', '::ffff:10.1.2.3'), false);
    assert.equal(cidrContains('::/0', '2001:db8::1'), true);
    assert.equal(cidrContains('0.0.0.0/0', '2001:db8::1'), false);
  });

  test('strict parsing: malformed ranges are null and contain nothing', () => {
    for (const bad of ['', '/8', '10.0.0.0/', '10.0.0.0/33', '10.0.0.0/08', '10.0.0.0/-1', '010.0.0.0/8', '10.0.0/8', '10.1.0.0/8', '::/129', '2001:db8::1/32', 'fe80::%eth0/10', 'example.com/8', '10.0.0.0/8/8', '10.0.0.0 /8']) {
      assert.equal(parseCidr(bad), null, bad);
      assert.equal(cidrContains(bad, '10.0.0.1'), false, bad);
    }
    assert.equal(cidrContains('10.0.0.0/8', '010.0.0.1'), false);
    assert.equal(cidrContains('10.0.0.0/8', 'not an address'), false);
    assert.equal(cidrContains('10.0.0.0/8', ''), false);
  });

  test('parseCidr reports the canonical network', () => {
    assert.deepEqual(
      { ...parseCidr('2001:0DB8:0000::/48')!, bytes: undefined },
      { family: 'ipv6', address: '2001:db8::', prefixLength: 48, bytes: undefined },
    );
    const v4 = parseCidr('10.0.0.0/8')!;
    assert.equal(cidrContains(v4, '10.0.0.1'), true); // a parsed range is accepted too
  });

  test('canonicalIp', () => {
    assert.equal(canonicalIp('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp('2001:0DB8::0001'), '2001:db8::1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1'); // first of two equal runs
    assert.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1'); // a single zero group is not compressed
    assert.equal(canonicalIp('fe80::1%eth0'), 'fe80::1');
    assert.equal(canonicalIp('1.2.3.04'), null);
    assert.equal(canonicalIp('1.2.3'), null);
  });
});
