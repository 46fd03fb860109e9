// Encoders for the backend messages rolegate itself originates towards clients,
// and small decoders for the upstream messages it has to look inside.
// Everything else from the upstream is relayed byte-exact and never re-encoded.

import { AuthCode, Backend, TxStatus } from './constants.ts';

export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';

export interface ErrorFields {
  severity: Severity;
  sqlstate: string;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
  /** 1-based character position in the statement text ('P' field). */
  position?: number | undefined;
}

function frame(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(body.length + 4, 1);
  body.copy(out, 5);
  return out;
}

/** ErrorResponse / NoticeResponse ("Error and Notice Message Fields"). */
function encodeFields(type: number, f: ErrorFields): Buffer {
  const parts: Buffer[] = [];
  const field = (code: string, value: string): void => {
    // A NUL inside a field would end it early and let the text forge fields.
    parts.push(Buffer.from(code + value.replaceAll('\0', ' ') + '\0', 'utf8'));
  };
  field('S', f.severity);
  field('V', f.severity);
  field('C', f.sqlstate);
  field('M', f.message);
  if (f.detail !== undefined) field('D', f.detail);
  if (f.hint !== undefined) field('H', f.hint);
  if (f.position !== undefined) field('P', String(f.position));
  parts.push(Buffer.from([0]));
  return frame(type, Buffer.concat(parts));
}

export function errorResponse(f: ErrorFields): Buffer {
  return encodeFields(Backend.ErrorResponse, f);
}

export function noticeResponse(f: ErrorFields): Buffer {
  return encodeFields(Backend.NoticeResponse, f);
}

export function readyForQuery(txStatus: number): Buffer {
  return Buffer.from([Backend.ReadyForQuery, 0, 0, 0, 5, txStatus]);
}

export function authenticationOk(): Buffer {
  return Buffer.from([Backend.Authentication, 0, 0, 0, 8, 0, 0, 0, AuthCode.Ok]);
}

export function authenticationSASL(mechanisms: readonly string[]): Buffer {
  const names = Buffer.from(mechanisms.map((m) => m + '\0').join('') + '\0', 'utf8');
  const body = Buffer.allocUnsafe(4 + names.length);
  body.writeInt32BE(AuthCode.SASL, 0);
  names.copy(body, 4);
  return frame(Backend.Authentication, body);
}

export function authenticationSASLContinue(data: Buffer): Buffer {
  const body = Buffer.allocUnsafe(4 + data.length);
  body.writeInt32BE(AuthCode.SASLContinue, 0);
  data.copy(body, 4);
  return frame(Backend.Authentication, body);
}

export function authenticationSASLFinal(data: Buffer): Buffer {
  const body = Buffer.allocUnsafe(4 + data.length);
  body.writeInt32BE(AuthCode.SASLFinal, 0);
  data.copy(body, 4);
  return frame(Backend.Authentication, body);
}

export function authenticationCleartextPassword(): Buffer {
  return Buffer.from([Backend.Authentication, 0, 0, 0, 8, 0, 0, 0, AuthCode.CleartextPassword]);
}

export function parameterStatus(name: string, value: string): Buffer {
  return frame(Backend.ParameterStatus, Buffer.from(name + '\0' + value + '\0', 'utf8'));
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  const out = Buffer.allocUnsafe(13);
  out[0] = Backend.BackendKeyData;
  out.writeInt32BE(12, 1);
  out.writeInt32BE(processId, 5);
  out.writeInt32BE(secretKey, 9);
  return out;
}

/** NegotiateProtocolVersion: newest minor we support and the options we did not recognise. */
export function negotiateProtocolVersion(newestMinor: number, unrecognised: readonly string[]): Buffer {
  const names = Buffer.from(unrecognised.map((n) => n + '\0').join(''), 'utf8');
  const body = Buffer.allocUnsafe(8 + names.length);
  body.writeInt32BE((3 << 16) | newestMinor, 0);
  body.writeInt32BE(unrecognised.length, 4);
  names.copy(body, 8);
  return frame(Backend.NegotiateProtocolVersion, body);
}

/** Fields of an ErrorResponse/NoticeResponse body (after type and length). */
export function decodeErrorFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  let pos = 0;
  while (pos < body.length) {
    const code = body[pos];
    if (code === undefined || code === 0) break;
    const end = body.indexOf(0, pos + 1);
    if (end < 0) break;
    fields.set(String.fromCharCode(code), body.toString('utf8', pos + 1, end));
    pos = end + 1;
  }
  return fields;
}

/** Name and value of a ParameterStatus body. */
export function decodeParameterStatus(body: Buffer): { name: string; value: string } | null {
  const nameEnd = body.indexOf(0);
  if (nameEnd < 0) return null;
  const valueEnd = body.indexOf(0, nameEnd + 1);
  if (valueEnd < 0) return null;
  return { name: body.toString('utf8', 0, nameEnd), value: body.toString('utf8', nameEnd + 1, valueEnd) };
}

// ---- the upstream login ("Start-up" in the protocol's message flow section) ----
// Decoders for what rolegate reads while it logs in upstream. Each takes a
// message body (after type and length) and never throws: malformed input gives
// an 'invalid' result or null, and the caller ends the login.

/** An Authentication ('R') request, by its int32 sub-code ("AuthenticationXXX" in "Message Formats"). */
export type AuthenticationRequest =
  | { kind: 'ok' }
  | { kind: 'cleartext-password' }
  | { kind: 'md5-password'; salt: Buffer }
  | { kind: 'sasl'; mechanisms: string[] }
  | { kind: 'sasl-continue'; data: Buffer }
  | { kind: 'sasl-final'; data: Buffer }
  /** A method rolegate does not speak (Kerberos 2, GSS 7, GSSContinue 8, SSPI 9, …). */
  | { kind: 'unsupported'; code: number }
  | { kind: 'invalid'; reason: string };

export function decodeAuthentication(body: Buffer): AuthenticationRequest {
  if (body.length < 4) return { kind: 'invalid', reason: 'Authentication message shorter than its code' };
  const code = body.readInt32BE(0);
  switch (code) {
    case AuthCode.Ok:
      return body.length === 4 ? { kind: 'ok' } : { kind: 'invalid', reason: 'AuthenticationOk with a body' };
    case AuthCode.CleartextPassword:
      return body.length === 4 ? { kind: 'cleartext-password' } : { kind: 'invalid', reason: 'AuthenticationCleartextPassword with a body' };
    case AuthCode.MD5Password:
      // A copy: the salt outlives the chunk it arrived in.
      return body.length === 8 ? { kind: 'md5-password', salt: Buffer.from(body.subarray(4, 8)) } : { kind: 'invalid', reason: 'AuthenticationMD5Password salt is not 4 bytes' };
    case AuthCode.SASL: {
      // Mechanism names, each NUL-terminated, then an empty name ending the body.
      const mechanisms: string[] = [];
      let pos = 4;
      for (;;) {
        const nul = body.indexOf(0, pos);
        if (nul < 0) return { kind: 'invalid', reason: 'AuthenticationSASL mechanism list is not terminated' };
        if (nul === pos) break;
        mechanisms.push(body.toString('utf8', pos, nul));
        pos = nul + 1;
      }
      if (pos + 1 !== body.length) return { kind: 'invalid', reason: 'AuthenticationSASL has bytes after its mechanism list' };
      return { kind: 'sasl', mechanisms };
    }
    case AuthCode.SASLContinue:
      return { kind: 'sasl-continue', data: Buffer.from(body.subarray(4)) };
    case AuthCode.SASLFinal:
      return { kind: 'sasl-final', data: Buffer.from(body.subarray(4)) };
    default:
      return { kind: 'unsupported', code };
  }
}

/** BackendKeyData ('K'): process id and secret key, or null unless the body is exactly two int32s (protocol 3.0). */
export function decodeBackendKeyData(body: Buffer): { processId: number; secretKey: number } | null {
  if (body.length !== 8) return null;
  return { processId: body.readInt32BE(0), secretKey: body.readInt32BE(4) };
}

export type TxStatusByte = (typeof TxStatus)[keyof typeof TxStatus];

/** ReadyForQuery ('Z'): the transaction status byte ('I', 'T' or 'E'), or null for anything else. */
export function decodeReadyForQuery(body: Buffer): TxStatusByte | null {
  if (body.length !== 1) return null;
  const status = body[0];
  return status === TxStatus.Idle || status === TxStatus.InTransaction || status === TxStatus.Failed ? status : null;
}
