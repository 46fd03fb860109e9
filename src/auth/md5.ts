// MD5 password authentication for the upstream leg (AuthenticationMD5Password,
// protocol section "Message Formats"): the server sends a 4-byte salt and
// expects the PasswordMessage string
//   "md5" + hex(md5(hex(md5(password + user)) + salt))
// where hex(md5(password + user)) is exactly what pg_authid stores after "md5".

import { createHash } from 'node:crypto';
import { RolegateError } from '../errors.ts';

/** AuthenticationMD5Password carries exactly 4 salt bytes. */
export const MD5_SALT_BYTES = 4;

/**
 * The PasswordMessage contents answering AuthenticationMD5Password, without
 * the terminating NUL the message writer adds. User and password are taken as
 * UTF-8 bytes, as libpq sends them, and are not SASLprep'd (libpq does not).
 */
export function md5PasswordMessage(user: string, password: string, salt: Buffer): Buffer {
  if (salt.length !== MD5_SALT_BYTES) {
    throw new RolegateError('RG_UPSTREAM_AUTH', `AuthenticationMD5Password salt must be ${MD5_SALT_BYTES} bytes, got ${salt.length}`);
  }
  const inner = md5Hex(Buffer.from(password + user, 'utf8'));
  const outer = createHash('md5').update(inner, 'latin1').update(salt).digest('hex');
  return Buffer.from(`md5${outer}`, 'latin1');
}

/** The pg_authid form of an md5 password: "md5" + hex(md5(password + user)). */
export function md5Verifier(user: string, password: string): string {
  return `md5${md5Hex(Buffer.from(password + user, 'utf8'))}`;
}

function md5Hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}
