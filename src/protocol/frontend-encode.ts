// The frontend messages rolegate itself writes to the upstream server: its
// login, cancel requests, Terminate, and the Query/Parse that stand in for a
// denied statement. One encoder for this direction: every message here is built
// by pg-protocol's serializer, wrapped with the types rolegate uses; nothing
// else in rolegate builds frontend bytes. (Reading what clients send is ours:
// frontend.ts.) No I/O.

import { serialize } from 'pg-protocol';

/** Terminate ('X'). Our own copy: pg-protocol hands out one shared buffer. */
export const TERMINATE: Buffer = Buffer.from(serialize.end());

/** SSLRequest ("SSL Session Encryption"): an untyped 8-byte packet, code 80877103. */
export function sslRequest(): Buffer {
  return serialize.requestSsl();
}

/** CancelRequest: an untyped 16-byte packet, code 80877102, then the key the server gave in BackendKeyData. */
export function cancelRequest(processId: number, secretKey: number): Buffer {
  return serialize.cancel(processId, secretKey);
}

/**
 * StartupMessage for protocol 3.0 with these parameters, in this order.
 *
 * serialize.startup() always appends client_encoding=UTF8 after the
 * parameters it is given, so UTF8 is the only client_encoding this can send,
 * and exactly once: an entry for client_encoding (any case; parameter names
 * are case-insensitive in the server) must say UTF8 and is left to that
 * appended copy. Anything else throws, as does a NUL in a name or value,
 * which would end the string early and inject parameters of its own.
 * Parameter names that look like array indices ("0", "12") would be reordered
 * by the object serialize takes; no PostgreSQL parameter is named so.
 */
export function startup(parameters: ReadonlyMap<string, string>): Buffer {
  const fields: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, value] of parameters) {
    if (name.includes('\0') || value.includes('\0')) throw new RangeError(`startup parameter "${name.replaceAll('\0', '\\0')}" contains a NUL byte`);
    if (name.toLowerCase() === 'client_encoding') {
      if (value !== 'UTF8') throw new RangeError(`client_encoding "${value}" cannot be sent: the startup encoder always sends UTF8`);
      continue;
    }
    fields[name] = value;
  }
  return serialize.startup(fields);
}

/** PasswordMessage ('p'): a cleartext password or an md5 answer ("md5" + hex). */
export function password(text: string): Buffer {
  return serialize.password(text);
}

/**
 * SASLInitialResponse ('p'): mechanism name, then the client-first-message
 * with its int32 length. SCRAM messages are UTF-8 text (RFC 5802), so the
 * string round trip serialize needs is lossless.
 */
export function saslInitialResponse(mechanism: string, data: Buffer): Buffer {
  return serialize.sendSASLInitialResponseMessage(mechanism, data.toString('utf8'));
}

/** SASLResponse ('p'): the client-final-message, the rest of the body. */
export function saslResponse(data: Buffer): Buffer {
  return serialize.sendSCRAMClientFinalMessage(data.toString('utf8'));
}

/** Query ('Q'). `sql` must not contain a NUL (the server would end the string there). */
export function query(sql: string): Buffer {
  return serialize.query(sql);
}

/**
 * Parse ('P') of `sql` as statement `name`, with no parameter types. Neither
 * may contain a NUL. pg-protocol writes a warning to stderr for names over 63
 * characters (the server's NAMEDATALEN limit); the bytes are unaffected.
 */
export function parse(name: string, sql: string): Buffer {
  return serialize.parse({ name, text: sql });
}
