// Decoders for the frontend messages rolegate must look inside. Each takes the
// whole message (header included) as buf[start, end) and returns null when the
// body is malformed; the caller answers 08P01 and closes (fail closed).
// Only the SQL text is decoded to a string: names are needed for bookkeeping.

import { isUtf8 } from 'node:buffer';
import { MAX_STARTUP_PACKET_BYTES, StartupCode } from './constants.ts';

/** Why SQL text was refused before parsing. */
export type TextProblem = 'RG_NUL_IN_TEXT' | 'RG_INVALID_UTF8';

export interface DecodedText {
  text: string;
  /** Offset just after the text's terminating NUL. */
  next: number;
}

/** A NUL-terminated string at buf[pos…]; null when no NUL before `end`. */
export function readCString(buf: Buffer, pos: number, end: number): DecodedText | null {
  const nul = buf.indexOf(0, pos);
  if (nul < 0 || nul >= end) return null;
  return { text: buf.toString('utf8', pos, nul), next: nul + 1 };
}

/**
 * A statement or portal name: like readCString, but null unless the bytes are
 * UTF-8. Names key the session's bookkeeping, and lossy decoding would map
 * distinct names to one string ("\xff" and "\xfe" both become U+FFFD). The
 * server, pinned to client_encoding=UTF8, refuses such names as well.
 */
function readName(buf: Buffer, pos: number, end: number): DecodedText | null {
  const nul = buf.indexOf(0, pos);
  if (nul < 0 || nul >= end || !isUtf8(buf.subarray(pos, nul))) return null;
  return { text: buf.toString('utf8', pos, nul), next: nul + 1 };
}

/**
 * SQL text of Query or Parse: UTF-8 only (the upstream is pinned to
 * client_encoding=UTF8, so anything else would be read differently by the
 * server than by the parser). The first NUL ends the C string in the server,
 * so text after an inner NUL is what the protocol calls garbage: refused.
 */
export function checkSqlBytes(buf: Buffer, start: number, end: number): TextProblem | null {
  const slice = buf.subarray(start, end);
  if (slice.includes(0)) return 'RG_NUL_IN_TEXT';
  if (!isUtf8(slice)) return 'RG_INVALID_UTF8';
  return null;
}

/** Query ('Q'): body is the query string. */
export function decodeQuery(buf: Buffer, start: number, end: number): { textStart: number; textEnd: number } | null {
  const bodyStart = start + 5;
  // The string must end exactly at the message end, with exactly one NUL.
  if (end - bodyStart < 1 || buf[end - 1] !== 0) return null;
  const nul = buf.indexOf(0, bodyStart);
  if (nul !== end - 1) return null;
  return { textStart: bodyStart, textEnd: end - 1 };
}

export interface ParseMessage {
  name: string;
  textStart: number;
  textEnd: number;
  paramTypeCount: number;
}

/** Parse ('P'): statement name, query string, int16 count, int32 type OIDs. */
export function decodeParse(buf: Buffer, start: number, end: number): ParseMessage | null {
  const name = readName(buf, start + 5, end);
  if (name === null) return null;
  const textStart = name.next;
  const nul = buf.indexOf(0, textStart);
  if (nul < 0 || nul >= end) return null;
  const countPos = nul + 1;
  if (countPos + 2 > end) return null;
  // Unsigned, as the server reads it (pq_getmsgint(msg, 2)): libpq sends up to 65535.
  const count = buf.readUInt16BE(countPos);
  if (countPos + 2 + count * 4 !== end) return null;
  return { name: name.text, textStart, textEnd: nul, paramTypeCount: count };
}

/** Bind ('B'): only the portal and statement names are needed. */
export function decodeBind(buf: Buffer, start: number, end: number): { portal: string; statement: string } | null {
  const portal = readName(buf, start + 5, end);
  if (portal === null) return null;
  const statement = readName(buf, portal.next, end);
  if (statement === null) return null;
  return { portal: portal.text, statement: statement.text };
}

/** Describe ('D') and Close ('C'): 'S' (statement) or 'P' (portal) and a name. */
export function decodeTarget(buf: Buffer, start: number, end: number): { kind: 'S' | 'P'; name: string } | null {
  const kindByte = buf[start + 5];
  if (kindByte !== 0x53 /* 'S' */ && kindByte !== 0x50 /* 'P' */) return null;
  const name = readName(buf, start + 6, end);
  if (name === null || name.next !== end) return null;
  return { kind: kindByte === 0x53 ? 'S' : 'P', name: name.text };
}

/** Execute ('E'): portal name and max rows. */
export function decodeExecute(buf: Buffer, start: number, end: number): { portal: string; maxRows: number } | null {
  const portal = readName(buf, start + 5, end);
  if (portal === null || portal.next + 4 !== end) return null;
  return { portal: portal.text, maxRows: buf.readInt32BE(portal.next) };
}

// ---- startup phase ("Start-up" in the protocol's message flow section) ----

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'startup'; minor: number; params: Map<string, string> }
  | { kind: 'unsupported'; major: number; minor: number }
  | { kind: 'invalid'; reason: string };

/**
 * Length of the startup packet at the head of `buf`, or null if fewer than 4
 * bytes are there. Negative when the length is out of bounds (caller closes).
 */
export function startupPacketLength(buf: Buffer): number | null {
  if (buf.length < 4) return null;
  const len = buf.readInt32BE(0);
  if (len < 8 || len > MAX_STARTUP_PACKET_BYTES) return -1;
  return len;
}

/** Decode one whole startup-phase packet (length already checked). */
export function decodeStartupPacket(packet: Buffer): StartupPacket {
  const code = packet.readInt32BE(4);
  if (code === StartupCode.SSLRequest) return packet.length === 8 ? { kind: 'ssl' } : { kind: 'invalid', reason: 'bad SSLRequest length' };
  if (code === StartupCode.GSSENCRequest) return packet.length === 8 ? { kind: 'gssenc' } : { kind: 'invalid', reason: 'bad GSSENCRequest length' };
  if (code === StartupCode.CancelRequest) {
    if (packet.length !== 16) return { kind: 'invalid', reason: 'bad CancelRequest length' };
    return { kind: 'cancel', processId: packet.readInt32BE(8), secretKey: packet.readInt32BE(12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) return { kind: 'unsupported', major, minor };
  // Parameters: name\0value\0 … \0 — the final NUL must end the packet.
  const params = new Map<string, string>();
  let pos = 8;
  const end = packet.length;
  if (packet[end - 1] !== 0) return { kind: 'invalid', reason: 'startup packet is not NUL-terminated' };
  while (pos < end - 1) {
    const name = readCString(packet, pos, end);
    if (name === null) return { kind: 'invalid', reason: 'truncated parameter name' };
    const value = readCString(packet, name.next, end);
    if (value === null) return { kind: 'invalid', reason: `missing value for parameter "${name.text}"` };
    if (name.text.length === 0) return { kind: 'invalid', reason: 'empty parameter name' };
    if (params.has(name.text)) return { kind: 'invalid', reason: `duplicate parameter "${name.text}"` };
    params.set(name.text, value.text);
    pos = value.next;
  }
  if (pos !== end - 1) return { kind: 'invalid', reason: 'startup packet has trailing bytes' };
  if (!isUtf8(packet.subarray(8))) return { kind: 'invalid', reason: 'startup parameters are not valid UTF-8' };
  return { kind: 'startup', minor, params };
}
