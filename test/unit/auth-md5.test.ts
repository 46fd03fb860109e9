import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MD5_SALT_BYTES, md5PasswordMessage, md5Verifier } from '../../src/auth/md5.ts';
import { RolegateError } from '../../src/errors.ts';

// Vectors computed by PostgreSQL 15 (the salt is 4 raw bytes, so it goes in as bytea):
//   SELECT 'md5' || md5(convert_to(md5('pw' || 'user'), 'UTF8') || '\x01020304'::bytea);
//   SELECT 'md5' || md5('pw' || 'user');
//   SELECT 'md5' || md5(convert_to(md5(convert_to('pässwörd' || 'ünïcode', 'UTF8')), 'UTF8') || '\xdeadbeef'::bytea);
// The live login against a real server is in auth-scram.test.ts, which owns the cluster.

describe('md5PasswordMessage', () => {
  test('matches PostgreSQL for user "user", password "pw", salt 01 02 03 04', () => {
    const message = md5PasswordMessage('user', 'pw', Buffer.from([0x01, 0x02, 0x03, 0x04]));
    assert.ok(Buffer.isBuffer(message));
    assert.equal(message.toString('latin1'), 'md546eacb7412409e1444bde22e56e70744');
  });

  test('matches PostgreSQL for non-ASCII user and password (UTF-8 bytes) and a salt with high bytes', () => {
    const message = md5PasswordMessage('ünïcode', 'pässwörd', Buffer.from('deadbeef', 'hex'));
    assert.equal(message.toString('latin1'), 'md5cbe7fe0b45865215875135b8e5093684');
  });

  test('is "md5" plus 32 lowercase hex digits, with no NUL terminator (the message writer adds it)', () => {
    const message = md5PasswordMessage('u', '', Buffer.alloc(MD5_SALT_BYTES));
    assert.match(message.toString('latin1'), /^md5[0-9a-f]{32}$/);
    assert.equal(message.length, 35);
  });

  test('the salt changes the answer; password and user are not interchangeable', () => {
    const salt = Buffer.from([1, 2, 3, 4]);
    const base = md5PasswordMessage('user', 'pw', salt).toString();
    assert.notEqual(md5PasswordMessage('user', 'pw', Buffer.from([1, 2, 3, 5])).toString(), base);
    assert.notEqual(md5PasswordMessage('pw', 'user', salt).toString(), base);
  });

  test('a salt that is not 4 bytes is RG_UPSTREAM_AUTH', () => {
    for (const length of [0, 3, 5]) {
      assert.throws(
        () => md5PasswordMessage('user', 'pw', Buffer.alloc(length)),
        (error: unknown) => error instanceof RolegateError && error.code === 'RG_UPSTREAM_AUTH' && error.message.includes(`got ${length}`),
      );
    }
  });
});

describe('md5Verifier', () => {
  test('is the pg_authid form PostgreSQL stores', () => {
    assert.equal(md5Verifier('user', 'pw'), 'md5871c429757b7a0bf1654fad112b77bd4');
  });
});
