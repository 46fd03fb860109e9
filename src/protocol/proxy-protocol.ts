// PROXY protocol v1 and v2 decoder (haproxy's proxy-protocol.txt), no I/O.
// A load balancer in front of rolegate writes one header before the client's
// own bytes, so IP-range rules see the real client, not the balancer.
//
// parseProxyHeader() is fed the bytes received so far and answers as early as
// the bytes allow: 'invalid' as soon as no continuation could make a valid
// header, 'need-more' only while one could and never once the maximum header
// size (v1 107 bytes, v2 16 + 65535) has arrived. Validation is strict: a
// header from a trusted balancer that we cannot read exactly is refused, never
// half-believed.
//
// Addresses are parsed and formatted by config/ip-address.ts, the same strict
// parser that reads the trusted-proxy allow-list (proxy_protocol.trusted_cidrs).

import { formatAddress, ipv4PrefixViable, ipv6PrefixViable, parseIpv4, parseIpv6 } from '../config/ip-address.ts';

export type ProxyHeader =
  | {
      kind: 'proxy';
      family: 'tcp4' | 'tcp6';
      /** Canonical text: dotted IPv4, or RFC 5952 IPv6 (lower case, longest zero run compressed, ::ffff:a.b.c.d for IPv4-mapped). */
      sourceAddr: string;
      sourcePort: number;
      destAddr: string;
      destPort: number;
      /** v2 TLVs by type (copies, not views of the input); PP2_TYPE_NOOP padding is dropped. Always empty for v1. */
      tlvs: Map<number, Buffer>;
    }
  /** v2 LOCAL (health checks), v2 AF_UNSPEC / AF_UNIX, v1 UNKNOWN: use the socket's own address. */
  | { kind: 'local' };

export type ProxyParse =
  | { status: 'need-more' }
  | { status: 'ok'; header: ProxyHeader; consumed: number }
  /** The bytes do not start a PROXY header (v1 "PROXY" or the v2 signature). */
  | { status: 'absent' }
  | { status: 'invalid'; reason: string };

/** v1: the longest line the spec allows, CRLF included ("PROXY UNKNOWN" lines too). */
export const PROXY_V1_MAX_BYTES = 107;
/** v2: 16 fixed bytes plus a 16-bit length. */
export const PROXY_V2_HEADER_BYTES = 16;
export const PROXY_V2_MAX_BYTES = PROXY_V2_HEADER_BYTES + 0xffff;

/** \r\n\r\n\0\r\nQUIT\n: cannot start a v1 line, an HTTP request or a PostgreSQL startup packet. */
export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** v2 TLV types (proxy-protocol.txt §2.2). */
export const Pp2Type = {
  Alpn: 0x01,
  Authority: 0x02,
  Crc32c: 0x03,
  Noop: 0x04,
  UniqueId: 0x05,
  Ssl: 0x20,
  Netns: 0x30,
} as const;

const V1_SIGNATURE = Buffer.from('PROXY', 'latin1');
const V1_SIGNATURE_BYTES = 5;
const V2_COMMAND_LOCAL = 0x0;
const V2_COMMAND_PROXY = 0x1;
/** Address block sizes after the 16-byte header, per address family. */
const V2_ADDR_BYTES_INET = 12;
const V2_ADDR_BYTES_INET6 = 36;
const V2_ADDR_BYTES_UNIX = 216;
const TLV_HEADER_BYTES = 3;
const UNIQUE_ID_MAX_BYTES = 128;
const CR = 0x0d; // '\r'
const LF = 0x0a; // '\n'
const SP = 0x20; // ' '

const NEED_MORE: ProxyParse = Object.freeze({ status: 'need-more' });
const ABSENT: ProxyParse = Object.freeze({ status: 'absent' });

function invalid(reason: string): ProxyParse {
  return { status: 'invalid', reason };
}

export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return NEED_MORE;
  switch (buf[0]) {
    case 0x50: // 'P'
      return parseV1(buf);
    case 0x0d: // '\r'
      return parseV2(buf);
    default:
      return ABSENT;
  }
}

// ---------------------------------------------------------------- v1 (text)

function parseV1(buf: Buffer): ProxyParse {
  const signatureBytes = Math.min(buf.length, V1_SIGNATURE_BYTES);
  for (let i = 0; i < signatureBytes; i++) if (buf[i] !== V1_SIGNATURE[i]) return ABSENT;
  if (buf.length <= V1_SIGNATURE_BYTES) return NEED_MORE;
  if (buf[V1_SIGNATURE_BYTES] !== SP) return invalid('v1: "PROXY" is not followed by a space');

  // The CR may sit at index 105 at the latest, so that CRLF ends within 107 bytes.
  const scanBytes = Math.min(buf.length, PROXY_V1_MAX_BYTES - 1);
  let cr = -1;
  for (let i = V1_SIGNATURE_BYTES; i < scanBytes; i++) {
    const c = buf[i];
    if (c === CR) {
      cr = i;
      break;
    }
    if (c === LF) return invalid('v1: line feed without a carriage return');
  }

  if (cr === -1) {
    // No line end yet: the line so far must still be able to become valid.
    const reason = checkV1Line(buf.toString('latin1', 0, scanBytes), false);
    if (reason !== null) return invalid(reason);
    if (buf.length >= PROXY_V1_MAX_BYTES - 1) return invalid(`v1: no CRLF within ${PROXY_V1_MAX_BYTES} bytes`);
    return NEED_MORE;
  }

  const line = buf.toString('latin1', 0, cr);
  const reason = checkV1Line(line, true);
  if (reason !== null) return invalid(reason);
  if (cr + 1 >= buf.length) return NEED_MORE; // CR is the last byte we have: LF must come next
  if (buf[cr + 1] !== LF) return invalid('v1: carriage return not followed by a line feed');
  const consumed = cr + 2;
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { status: 'ok', header: { kind: 'local' }, consumed };
  const family = parts[1] === 'TCP4' ? 'tcp4' : 'tcp6';
  const parseAddr = family === 'tcp4' ? parseIpv4 : parseIpv6;
  return {
    status: 'ok',
    consumed,
    header: {
      kind: 'proxy',
      family,
      sourceAddr: formatAddress(parseAddr(parts[2] ?? '')!),
      destAddr: formatAddress(parseAddr(parts[3] ?? '')!),
      sourcePort: Number(parts[4]),
      destPort: Number(parts[5]),
      tlvs: new Map(),
    },
  };
}

const V1_FIELD_NAMES = ['signature', 'protocol', 'source address', 'destination address', 'source port', 'destination port'] as const;

/**
 * Check a v1 line without its CRLF. complete = the CR has been seen, so every
 * field must be whole; otherwise the last field may be a prefix of a valid one.
 * Returns null when acceptable, else the reason.
 */
function checkV1Line(line: string, complete: boolean): string | null {
  const parts = line.split(' ');
  const proto = parts[1] ?? '';
  const protoComplete = complete || parts.length > 2;
  if (protoComplete) {
    if (proto === 'UNKNOWN') return null; // the rest of the line is ignored (spec: "the receiver must ignore anything presented before the CRLF")
    if (proto !== 'TCP4' && proto !== 'TCP6') return `v1: unsupported protocol ${printable(proto)} (expected TCP4, TCP6 or UNKNOWN)`;
  } else {
    return 'TCP4'.startsWith(proto) || 'TCP6'.startsWith(proto) || 'UNKNOWN'.startsWith(proto) ? null : `v1: unsupported protocol ${printable(proto)}`;
  }
  const v4 = proto === 'TCP4';
  for (let i = 2; i < Math.min(parts.length, 6); i++) {
    const field = parts[i]!;
    const whole = complete || i < parts.length - 1; // a field followed by a space is whole
    const name = V1_FIELD_NAMES[i]!;
    if (whole && field === '') return `v1: empty ${name} (fields are separated by exactly one space)`;
    let ok: boolean;
    if (i <= 3) {
      if (whole) ok = (v4 ? parseIpv4(field) : parseIpv6(field)) !== null;
      else ok = v4 ? ipv4PrefixViable(field) : ipv6PrefixViable(field);
      if (!ok) return `v1: invalid ${name} for ${proto}${v4 ? ' (dotted decimal without leading zeros)' : ''}`;
    } else {
      ok = whole ? parsePort(field) !== null : field === '' || parsePort(field) !== null;
      if (!ok) return `v1: invalid ${name} (decimal 0-65535 without leading zeros)`;
    }
  }
  if (parts.length > 6) return 'v1: too many fields';
  if (complete && parts.length < 6) return `v1: missing ${V1_FIELD_NAMES[parts.length]}`;
  return null;
}

function parsePort(text: string): number | null {
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text)) return null;
  const port = Number(text);
  return port <= 0xffff ? port : null;
}

/** For messages: a field as JSON text, cut short; never more than 40 characters of peer input. */
function printable(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

// ---------------------------------------------------------------- v2 (binary)

function parseV2(buf: Buffer): ProxyParse {
  const signatureBytes = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < signatureBytes; i++) if (buf[i] !== PROXY_V2_SIGNATURE[i]) return ABSENT;
  if (buf.length < 13) return NEED_MORE;

  const versionCommand = buf[12]!;
  const version = versionCommand >> 4;
  const command = versionCommand & 0x0f;
  if (version !== 2) return invalid(`v2: unsupported version ${version}`);
  if (command !== V2_COMMAND_LOCAL && command !== V2_COMMAND_PROXY) return invalid(`v2: unsupported command ${command}`);
  if (buf.length < 14) return NEED_MORE;

  // LOCAL: "the receiver must accept this connection as valid and must use the
  // real connection endpoints and discard the protocol block including the
  // family which is ignored".
  const familyProtocol = buf[13]!;
  let addrBytes = 0;
  let family: 'tcp4' | 'tcp6' | 'local' = 'local';
  if (command === V2_COMMAND_PROXY) {
    switch (familyProtocol) {
      case 0x00: // AF_UNSPEC, UNSPEC: "free to accept the connection anyway and use the real endpoint addresses"
        break;
      case 0x11: // AF_INET, STREAM
        family = 'tcp4';
        addrBytes = V2_ADDR_BYTES_INET;
        break;
      case 0x21: // AF_INET6, STREAM
        family = 'tcp6';
        addrBytes = V2_ADDR_BYTES_INET6;
        break;
      case 0x31: // AF_UNIX, STREAM: no IP to report
        addrBytes = V2_ADDR_BYTES_UNIX;
        break;
      case 0x12: // AF_INET, DGRAM
      case 0x22: // AF_INET6, DGRAM
        return invalid('v2: UDP is not supported (PostgreSQL runs over TCP)');
      case 0x32: // AF_UNIX, DGRAM
        return invalid('v2: unix datagram sockets are not supported');
      default:
        return invalid(`v2: unsupported address family/transport byte 0x${familyProtocol.toString(16).padStart(2, '0')}`);
    }
  }
  if (buf.length < PROXY_V2_HEADER_BYTES) return NEED_MORE;

  const length = buf.readUInt16BE(14);
  const total = PROXY_V2_HEADER_BYTES + length;
  if (length < addrBytes) return invalid(`v2: length ${length} is shorter than the ${addrBytes}-byte address block`);
  if (family === 'local') return buf.length < total ? NEED_MORE : { status: 'ok', header: { kind: 'local' }, consumed: total };

  // TLVs: check each as soon as its own header has arrived.
  const available = Math.min(buf.length, total);
  const tlvs = new Map<number, Buffer>();
  let crcAt = -1;
  let pos = PROXY_V2_HEADER_BYTES + addrBytes;
  while (pos < total) {
    if (total - pos < TLV_HEADER_BYTES) return invalid(`v2: ${total - pos} trailing byte(s) cannot hold a TLV`);
    if (available - pos < TLV_HEADER_BYTES) break;
    const type = buf[pos]!;
    const valueBytes = buf.readUInt16BE(pos + 1);
    const valueStart = pos + TLV_HEADER_BYTES;
    const end = valueStart + valueBytes;
    if (end > total) return invalid(`v2: TLV 0x${type.toString(16).padStart(2, '0')} overruns the header`);
    if (end < total && total - end < TLV_HEADER_BYTES) return invalid(`v2: ${total - end} trailing byte(s) cannot hold a TLV`);
    const reason = checkTlvLength(type, valueBytes);
    if (reason !== null) return invalid(reason);
    if (type !== Pp2Type.Noop) {
      if (tlvs.has(type)) return invalid(`v2: TLV 0x${type.toString(16).padStart(2, '0')} appears twice`);
      // Placeholder until the value has arrived; replaced below.
      tlvs.set(type, EMPTY);
    }
    if (end > available) break;
    if (type === Pp2Type.Crc32c) crcAt = valueStart;
    if (type !== Pp2Type.Noop) tlvs.set(type, Buffer.from(buf.subarray(valueStart, end)));
    pos = end;
  }
  if (buf.length < total) return NEED_MORE;

  if (crcAt !== -1) {
    // PP2_TYPE_CRC32C: CRC32c of the whole header with the checksum field zeroed.
    const expected = buf.readUInt32BE(crcAt);
    const actual = crc32c(buf, 0, total, crcAt);
    if (expected !== actual) return invalid('v2: CRC32C checksum mismatch');
  }

  let sourceAddr: string;
  let destAddr: string;
  let portsAt: number;
  if (family === 'tcp4') {
    sourceAddr = formatAddress(buf.subarray(16, 20));
    destAddr = formatAddress(buf.subarray(20, 24));
    portsAt = 24;
  } else {
    sourceAddr = formatAddress(buf.subarray(16, 32));
    destAddr = formatAddress(buf.subarray(32, 48));
    portsAt = 48;
  }
  return {
    status: 'ok',
    consumed: total,
    header: {
      kind: 'proxy',
      family,
      sourceAddr,
      destAddr,
      sourcePort: buf.readUInt16BE(portsAt),
      destPort: buf.readUInt16BE(portsAt + 2),
      tlvs,
    },
  };
}

const EMPTY = Buffer.alloc(0);

function checkTlvLength(type: number, valueBytes: number): string | null {
  switch (type) {
    case Pp2Type.Crc32c:
      return valueBytes === 4 ? null : `v2: CRC32C TLV must be 4 bytes, got ${valueBytes}`;
    case Pp2Type.UniqueId:
      return valueBytes <= UNIQUE_ID_MAX_BYTES ? null : `v2: UNIQUE_ID TLV longer than ${UNIQUE_ID_MAX_BYTES} bytes`;
    case Pp2Type.Ssl:
      // client (1 byte) + verify (4 bytes), then sub-TLVs.
      return valueBytes >= 5 ? null : 'v2: SSL TLV shorter than 5 bytes';
    default:
      return null;
  }
}

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as PP2_TYPE_CRC32C uses. */
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C of buf[start, end) with the 4 bytes at zeroAt read as zero. */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length, zeroAt = -1): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) {
    const byte = zeroAt >= 0 && i >= zeroAt && i < zeroAt + 4 ? 0 : buf[i]!;
    crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
