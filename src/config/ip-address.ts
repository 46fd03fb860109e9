// IP address text, strictly: parsing (dotted-decimal IPv4 without leading
// zeros, any RFC 4291 IPv6 form), canonical formatting (RFC 5952), CIDR ranges
// for the trusted-proxy allow-list (proxy_protocol.trusted_cidrs), and whether
// a partial text can still become an address (the PROXY v1 decoder answers
// before a line is complete).
//
// It lives under config/ because config validation parses trusted_cidrs with
// it and config imports nothing above itself; the PROXY protocol decoder and
// the worker's trust check use the same functions, so a range accepted at load
// means the same at run time. No I/O, no imports.

/** Strict dotted-decimal IPv4: four decimal octets 0-255, no leading zeros (inet_pton's rule; "010" would be octal to inet_aton). */
export function parseIpv4(text: string): Uint8Array | null {
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

/** Can `text` be extended into a valid IPv4 address (a PROXY v1 field not yet complete)? */
export function ipv4PrefixViable(text: string): boolean {
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
export function parseIpv6(text: string): Uint8Array | null {
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
export function ipv6PrefixViable(text: string): boolean {
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

/** 4 bytes → dotted IPv4; 16 bytes → RFC 5952 IPv6. */
export function formatAddress(bytes: Uint8Array): string {
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
