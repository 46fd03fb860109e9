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
// Also here: the trusted-proxy allow-list helpers (parseCidr, cidrContains)
// and canonical IP text (canonicalIp), which need the same strict address
// parsing as the v1 text format.

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

// ---------------------------------------------------------------- addresses

/** Strict dotted-decimal IPv4: four decimal octets 0-255, no leading zeros (inet_pton's rule; "010" would be octal to inet_aton). */
function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const octet = parseOctet(parts[i]!);
    if (octet === null) return null;
    bytes[i] = octet;
  }
  return bytes;
}

function parseOctet(text: string): number | null {
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(text)) return null;
  const value = Number(text);
  return value <= 255 ? value : null;
}

function ipv4PrefixViable(text: string): boolean {
  const parts = text.split('.');
  if (parts.length > 4) return false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '' && i === parts.length - 1) continue;
    if (parseOctet(part) === null) return false;
  }
  return true;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Any RFC 4291 §2.2 text form (no zone id), to 16 bytes. */
function parseIpv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45) return null;
  const gap = text.indexOf('::');
  if (gap !== -1 && text.indexOf('::', gap + 1) !== -1) return null;
  const head = gap === -1 ? text : text.slice(0, gap);
  const tail = gap === -1 ? '' : text.slice(gap + 2);
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  // An embedded IPv4 address may only be the last piece.
  const lastList = tailGroups.length > 0 || gap !== -1 ? tailGroups : headGroups;
  let ipv4: Uint8Array | null = null;
  const last = lastList[lastList.length - 1];
  if (last !== undefined && last.includes('.')) {
    ipv4 = parseIpv4(last);
    if (ipv4 === null) return null;
    lastList.pop();
  }
  const words: number[] = [];
  const tailWords: number[] = [];
  for (const group of headGroups) {
    if (!HEX_GROUP.test(group)) return null;
    words.push(parseInt(group, 16));
  }
  for (const group of tailGroups) {
    if (!HEX_GROUP.test(group)) return null;
    tailWords.push(parseInt(group, 16));
  }
  if (ipv4 !== null) tailWords.push((ipv4[0]! << 8) | ipv4[1]!, (ipv4[2]! << 8) | ipv4[3]!);
  const explicit = words.length + tailWords.length;
  if (gap === -1 ? explicit !== 8 : explicit > 7) return null;
  while (words.length + tailWords.length < 8) words.push(0);
  const all = words.concat(tailWords);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = all[i]! >> 8;
    bytes[2 * i + 1] = all[i]! & 0xff;
  }
  return bytes;
}

/**
 * Can `text` be extended into a valid IPv6 address? Tracks the explicit groups
 * seen (E), whether "::" was seen, and the last, possibly partial piece.
 */
function ipv6PrefixViable(text: string): boolean {
  if (text === '' || text === ':') return true;
  if (text.length > 45 || !/^[0-9a-fA-F:.]*$/.test(text)) return false;
  if (text.startsWith(':') && !text.startsWith('::')) return false;
  if (text.includes(':::')) return false;
  const gap = text.indexOf('::');
  const hasGap = gap !== -1;
  if (hasGap && text.indexOf('::', gap + 1) !== -1) return false;
  const pieces = text.split(':');
  const last = pieces.pop()!;
  let groups = 0;
  for (const piece of pieces) {
    if (piece === '') continue; // the empty pieces around "::"
    if (!HEX_GROUP.test(piece)) return false;
    groups++;
  }
  // The most explicit groups (an embedded IPv4 counts two) a valid address can have.
  const max = hasGap ? 7 : 8;
  if (last.includes('.')) return ipv4PrefixViable(last) && (hasGap ? groups + 2 <= max : groups === 6);
  if (!/^[0-9a-fA-F]{0,4}$/.test(last)) return false;
  // A non-empty last piece is one more group; so is the group a trailing single ':' demands.
  const endsInSingleColon = last === '' && !text.endsWith('::');
  const needed = groups + (last !== '' || endsInSingleColon ? 1 : 0);
  return needed <= max;
}

function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  return formatIpv6(bytes);
}

/** RFC 5952 §4: lower case, no leading zeros, the longest run (≥ 2) of zero groups as "::" (the first on a tie); §5: IPv4-mapped as ::ffff:a.b.c.d. */
function formatIpv6(bytes: Uint8Array): string {
  if (isIpv4Mapped(bytes)) return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return words.map((w) => w.toString(16)).join(':');
  const head = words.slice(0, bestStart).map((w) => w.toString(16)).join(':');
  const tail = words.slice(bestStart + bestLength).map((w) => w.toString(16)).join(':');
  return `${head}::${tail}`;
}

function isIpv4Mapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

interface ParsedIp {
  family: 'ipv4' | 'ipv6';
  bytes: Uint8Array;
}

/** Text → family and bytes; IPv4-mapped IPv6 becomes IPv4; a zone id ("%eth0") is dropped. */
function parseIp(text: string, allowZone: boolean): ParsedIp | null {
  const v4 = parseIpv4(text);
  if (v4 !== null) return { family: 'ipv4', bytes: v4 };
  let body = text;
  const zone = text.indexOf('%');
  if (zone !== -1) {
    if (!allowZone || zone === text.length - 1) return null;
    body = text.slice(0, zone);
  }
  const v6 = parseIpv6(body);
  if (v6 === null) return null;
  if (isIpv4Mapped(v6)) return { family: 'ipv4', bytes: v6.slice(12) };
  return { family: 'ipv6', bytes: v6 };
}

/**
 * Canonical text of an IP address, as the policy sees `client.addr`: dotted
 * IPv4 (also for IPv4-mapped IPv6), RFC 5952 IPv6, zone id dropped. Null when
 * the text is not an IP address (IPv4 with leading zeros is not).
 */
export function canonicalIp(addr: string): string | null {
  const ip = parseIp(addr, true);
  return ip === null ? null : formatAddress(ip.bytes);
}

export interface Cidr {
  /** After normalisation: a range inside ::ffff:0:0/96 is IPv4. */
  family: 'ipv4' | 'ipv6';
  /** Canonical network address. */
  address: string;
  prefixLength: number;
  /** Network address bytes (4 or 16). */
  bytes: Uint8Array;
}

/**
 * Parse "addr/len" (or a bare address: a single host) strictly: canonical
 * IPv4, any RFC 4291 IPv6 form, decimal length without leading zeros, and no
 * host bits set ("10.1.2.3/8" is refused: it almost always hides a typo).
 * IPv4-mapped ranges (::ffff:a.b.c.d/96..128) become the IPv4 range.
 */
export function parseCidr(cidr: string): Cidr | null {
  const slash = cidr.indexOf('/');
  const addrText = slash === -1 ? cidr : cidr.slice(0, slash);
  const v6Text = parseIpv4(addrText) === null;
  const ip = parseIp(addrText, false);
  if (ip === null) return null;
  const fullBits = v6Text ? 128 : 32;
  let prefixLength = fullBits;
  if (slash !== -1) {
    const lengthText = cidr.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(lengthText)) return null;
    prefixLength = Number(lengthText);
    if (prefixLength > fullBits) return null;
  }
  if (v6Text && ip.family === 'ipv4') {
    // Written as IPv4-mapped IPv6: the IPv4 range only if it stays inside ::ffff:0:0/96.
    if (prefixLength < 96) return rangeOf('ipv6', parseIpv6(addrText)!, prefixLength);
    prefixLength -= 96;
  }
  return rangeOf(ip.family, ip.bytes, prefixLength);
}

function rangeOf(family: 'ipv4' | 'ipv6', bytes: Uint8Array, prefixLength: number): Cidr | null {
  if (!prefixMatches(bytes, new Uint8Array(bytes.length), prefixLength, true)) return null;
  return { family, address: formatAddress(bytes), prefixLength, bytes };
}

/**
 * Is `addr` inside `cidr`? Both sides are normalised (IPv4-mapped IPv6 is
 * IPv4), and then an IPv4 address only matches an IPv4 range and an IPv6
 * address an IPv6 range: "::/0" does not quietly trust every IPv4 client (it
 * would with node:net BlockList, which matches IPv4 inside ::ffff:0:0/96).
 * An unparsable range or address is not contained (the caller fails closed).
 */
export function cidrContains(cidr: string | Cidr, addr: string): boolean {
  const range = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
  const ip = parseIp(addr, true);
  if (range === null || ip === null || range.family !== ip.family) return false;
  return prefixMatches(ip.bytes, range.bytes, range.prefixLength, false);
}

/** Do a and b agree on the first `bits` bits? With hostBitsZero: is a zero after them (b is ignored)? */
function prefixMatches(a: Uint8Array, b: Uint8Array, bits: number, hostBitsZero: boolean): boolean {
  for (let i = 0; i < a.length; i++) {
    const keep = bits >= 8 * (i + 1) ? 0xff : bits <= 8 * i ? 0 : (0xff << (8 - (bits - 8 * i))) & 0xff;
    if (hostBitsZero) {
      if ((a[i]! & ~keep & 0xff) !== 0) return false;
    } else if ((a[i]! & keep) !== (b[i]! & keep)) {
      return false;
    }
  }
  return true;
}
