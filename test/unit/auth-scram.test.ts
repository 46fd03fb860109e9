import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import {
  SCRAM_KEY_CACHE_MAX_ENTRIES,
  ScramClientExchange,
  ScramServerExchange,
  createScramVerifier,
  formatScramVerifier,
  parseScramVerifier,
  type SaltedPasswordCache,
  type ScramFailureCode,
  type ScramVerifier,
} from '../../src/auth/scram.ts';
import { deriveScramKeys, preparePassword, saslprep } from '../../src/auth/verifier.ts';
import { md5PasswordMessage } from '../../src/auth/md5.ts';
import { freeLoopbackPort } from '../../src/cli/local-postgres.ts';
import { RolegateError } from '../../src/errors.ts';

const MOCK_SEED = Buffer.from('0123456789abcdef0123456789abcdef');

function serverFor(verifier: ScramVerifier | null, userName = 'alice', nonce?: string): ScramServerExchange {
  const options = { mockSeed: MOCK_SEED, userName, channelBinding: null };
  return new ScramServerExchange(verifier, nonce === undefined ? options : { ...options, nonce });
}

function verifierFor(password: string, iterations = 4096): ScramVerifier {
  const verifier = parseScramVerifier(createScramVerifier(password, { iterations }));
  assert.ok(verifier !== null);
  return verifier;
}

type Outcome = { ok: true } | { ok: false; code: ScramFailureCode; message: string };

/** Drive a full exchange between our client and our server. */
function login(verifier: ScramVerifier | null, password: string, userName = 'alice'): Outcome {
  const server = serverFor(verifier, userName);
  const client = new ScramClientExchange(password);
  const first = client.clientFirst();
  const serverFirst = server.handleClientFirst(first.mechanism, first.data);
  if (!serverFirst.ok) return serverFirst;
  const serverFinal = server.handleClientFinal(client.handleServerFirst(serverFirst.serverFirst));
  if (!serverFinal.ok) return serverFinal;
  client.verifyServerFinal(serverFinal.serverFinal);
  assert.equal(client.complete, true);
  return { ok: true };
}

function assertFailure(result: { ok: boolean }, code: ScramFailureCode, messagePart?: string): void {
  assert.equal(result.ok, false, 'expected a failure');
  const failure = result as { ok: false; code: ScramFailureCode; message: string };
  assert.equal(failure.code, code, failure.message);
  if (messagePart !== undefined) assert.ok(failure.message.includes(messagePart), `"${failure.message}" should include "${messagePart}"`);
}

function isUpstreamAuth(messagePart: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof RolegateError, String(error));
    assert.equal(error.code, 'RG_UPSTREAM_AUTH');
    assert.ok(error.message.includes(messagePart), `"${error.message}" should include "${messagePart}"`);
    return true;
  };
}

// ---------------------------------------------------------------------------

describe('RFC 7677 SCRAM-SHA-256 test vector (user "user", password "pencil")', () => {
  const clientNonce = 'rOprNGfwEbeRWgbNEkqO';
  const serverNonce = '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
  const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
  const clientFirst = 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO';
  const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
  const clientFinal = 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
  const serverFinal = 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=';

  test('both sides produce every message of the vector, byte for byte', () => {
    const verifier = parseScramVerifier(createScramVerifier('pencil', { salt, iterations: 4096 }));
    assert.ok(verifier !== null);
    const server = serverFor(verifier, 'user', serverNonce);
    const client = new ScramClientExchange('pencil', undefined, { userName: 'user', nonce: clientNonce });

    const first = client.clientFirst();
    assert.equal(first.mechanism, 'SCRAM-SHA-256');
    assert.equal(first.data.toString(), clientFirst);

    const s1 = server.handleClientFirst(first.mechanism, first.data);
    assert.ok(s1.ok);
    assert.equal(s1.serverFirst.toString(), serverFirst);

    const final = client.handleServerFirst(s1.serverFirst);
    assert.equal(final.toString(), clientFinal);

    const s2 = server.handleClientFinal(final);
    assert.ok(s2.ok);
    assert.equal(s2.serverFinal.toString(), serverFinal);

    assert.equal(client.complete, false);
    client.verifyServerFinal(s2.serverFinal);
    assert.equal(client.complete, true);
  });

  test('the server accepts the vector\'s literal client messages, the client accepts the literal server messages', () => {
    const verifier = parseScramVerifier(createScramVerifier('pencil', { salt }));
    assert.ok(verifier !== null);
    const server = serverFor(verifier, 'someone-else', serverNonce);
    const s1 = server.handleClientFirst('SCRAM-SHA-256', Buffer.from(clientFirst));
    assert.ok(s1.ok);
    const s2 = server.handleClientFinal(Buffer.from(clientFinal));
    assert.ok(s2.ok, s2.ok ? '' : s2.message);
    assert.equal(s2.serverFinal.toString(), serverFinal);

    const client = new ScramClientExchange('pencil', undefined, { userName: 'user', nonce: clientNonce });
    client.clientFirst();
    assert.equal(client.handleServerFirst(Buffer.from(serverFirst)).toString(), clientFinal);
    client.verifyServerFinal(Buffer.from(serverFinal));
  });
});

describe('client ⇄ server round trip', () => {
  const verifier = verifierFor('correct horse');

  test('the right password authenticates, and the client verifies the server', () => {
    assert.deepEqual(login(verifier, 'correct horse'), { ok: true });
  });

  test('a wrong password is RG_AUTH_FAILED with PostgreSQL\'s message', () => {
    assert.deepEqual(login(verifier, 'correct horsf'), {
      ok: false,
      code: 'RG_AUTH_FAILED',
      message: 'password authentication failed for user "alice"',
    });
  });

  test('non-ASCII passwords are SASLprep\'d on both sides', () => {
    const prepared = verifierFor('I\u00ADX\u00A0\u2168'); // soft hyphen dropped, NBSP → space, Ⅸ → IX
    assert.deepEqual(login(prepared, 'IX IX'), { ok: true });
    assert.deepEqual(login(prepared, 'I\u00ADX\u00A0\u2168'), { ok: true });
    assert.equal(login(prepared, 'IXIX').ok, false);
  });

  test('server nonces are random base64 of 18 bytes, different per exchange', () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const client = new ScramClientExchange('x');
      const first = client.clientFirst();
      const clientNonce = /,r=(.*)$/.exec(first.data.toString())?.[1] ?? '';
      assert.match(clientNonce, /^[A-Za-z0-9+/]{24}$/);
      const result = serverFor(verifier).handleClientFirst(first.mechanism, first.data);
      assert.ok(result.ok);
      const serverNonce = /^r=([^,]*),/.exec(result.serverFirst.toString())?.[1]?.slice(clientNonce.length) ?? '';
      assert.match(serverNonce, /^[A-Za-z0-9+/]{24}$/);
      nonces.add(serverNonce);
    }
    assert.equal(nonces.size, 5);
  });

  test('gs2 flag "y" is accepted while the server offers no channel binding, and must be echoed as c=eSws', () => {
    const client = new ScramClientExchange('correct horse', undefined, { nonce: 'abc' });
    client.clientFirst();
    const server = serverFor(verifier);
    const s1 = server.handleClientFirst('SCRAM-SHA-256', Buffer.from('y,,n=,r=abc'));
    assert.ok(s1.ok);
    // Rebuild the proof over the "y" transcript: the client always sends "n,," itself.
    const final = proofMessage('correct horse', verifier, 'n=,r=abc', s1.serverFirst.toString(), 'eSws');
    const s2 = server.handleClientFinal(Buffer.from(final));
    assert.ok(s2.ok, s2.ok ? '' : s2.message);

    const mismatched = serverFor(verifier);
    const m1 = mismatched.handleClientFirst('SCRAM-SHA-256', Buffer.from('y,,n=,r=abc'));
    assert.ok(m1.ok);
    assertFailure(mismatched.handleClientFinal(Buffer.from(proofMessage('correct horse', verifier, 'n=,r=abc', m1.serverFirst.toString(), 'biws'))), 'RG_PROTOCOL_VIOLATION', 'channel-binding');
  });

  test('extensions in client-final are skipped but stay in AuthMessage', () => {
    const server = serverFor(verifier);
    const s1 = server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc,x=ignored'));
    assert.ok(s1.ok);
    const final = proofMessage('correct horse', verifier, 'n=,r=abc,x=ignored', s1.serverFirst.toString(), 'biws', ',z=ext');
    const s2 = server.handleClientFinal(Buffer.from(final));
    assert.ok(s2.ok, s2.ok ? '' : s2.message);
  });
});

/** A client-final-message built by hand, for transcripts our client never produces. */
function proofMessage(password: string, verifier: ScramVerifier, clientFirstBare: string, serverFirst: string, binding: string, extensions = ''): string {
  const nonce = /^r=([^,]*)/.exec(serverFirst)?.[1] ?? '';
  const withoutProof = `c=${binding},r=${nonce}${extensions}`;
  const keys = deriveScramKeys(preparePassword(password), verifier.salt, verifier.iterations);
  const signature = createHmac('sha256', keys.storedKey).update(`${clientFirstBare},${serverFirst},${withoutProof}`).digest();
  const proof = Buffer.from(signature.map((byte, i) => byte ^ (keys.clientKey[i] ?? 0)));
  return `${withoutProof},p=${proof.toString('base64')}`;
}

describe('unknown user (mock exchange)', () => {
  const verifier = verifierFor('secret');

  test('fails exactly like a wrong password: same code, same message', () => {
    const wrongPassword = login(verifier, 'guess');
    const unknownUser = login(null, 'guess');
    const unknownUserRightPassword = login(null, 'secret');
    assert.equal(wrongPassword.ok, false);
    assert.deepEqual(unknownUser, wrongPassword);
    assert.deepEqual(unknownUserRightPassword, wrongPassword);
  });

  test('server-first-message has the same shape as a real one: 16-byte salt, 4096 iterations', () => {
    const shape = (text: string) => text.replace(/r=[^,]+,s=[^,]+,i=/, (match) => match.replace(/[A-Za-z0-9+/=]/g, 'x'));
    const real = serverFor(verifier).handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'));
    const mock = serverFor(null).handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'));
    assert.ok(real.ok && mock.ok);
    assert.equal(shape(mock.serverFirst.toString()), shape(real.serverFirst.toString()));
    assert.match(mock.serverFirst.toString(), /,i=4096$/);
    const salt = Buffer.from(/,s=([^,]+),/.exec(mock.serverFirst.toString())?.[1] ?? '', 'base64');
    assert.equal(salt.length, 16);
  });

  test('the fake salt is stable per user name and seed, and is HMAC(mockSeed, userName)', () => {
    const saltOf = (userName: string, seed = MOCK_SEED): string => {
      const server = new ScramServerExchange(null, { mockSeed: seed, userName, channelBinding: null });
      const result = server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'));
      assert.ok(result.ok);
      return /,s=([^,]+),/.exec(result.serverFirst.toString())?.[1] ?? '';
    };
    assert.equal(saltOf('mallory'), saltOf('mallory'));
    assert.notEqual(saltOf('mallory'), saltOf('mallory2'));
    assert.notEqual(saltOf('mallory'), saltOf('mallory', randomBytes(32)));
    assert.equal(saltOf('mallory'), createHmac('sha256', MOCK_SEED).update('mallory').digest().subarray(0, 16).toString('base64'));
  });

  test('mockIterations follows the deployment\'s verifiers', () => {
    const server = new ScramServerExchange(null, { mockSeed: MOCK_SEED, userName: 'u', channelBinding: null, mockIterations: 600000 });
    const result = server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'));
    assert.ok(result.ok);
    assert.match(result.serverFirst.toString(), /,i=600000$/);
  });

  test('malformed messages fail the same way as for a real user', () => {
    for (const v of [verifier, null]) {
      const server = serverFor(v);
      assert.ok(server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc')).ok);
      assertFailure(server.handleClientFinal(Buffer.from('c=biws,r=abc,p=AAAA')), 'RG_PROTOCOL_VIOLATION', 'malformed proof');
    }
  });

  test('a mockSeed shorter than 16 bytes is refused at construction', () => {
    assert.throws(() => new ScramServerExchange(null, { mockSeed: Buffer.alloc(8), userName: 'u', channelBinding: null }), /mockSeed/);
  });
});

describe('server: malformed client-first-message', () => {
  const verifier = verifierFor('pw', 1);
  const cases: ReadonlyArray<[name: string, mechanism: string, data: Buffer, code: ScramFailureCode, messagePart: string]> = [
    ['other SASL mechanism', 'SCRAM-SHA-1', Buffer.from('n,,n=,r=abc'), 'RG_AUTH_METHOD', 'invalid SASL authentication mechanism'],
    ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256-PLUS', Buffer.from('p=tls-server-end-point,,n=,r=abc'), 'RG_AUTH_METHOD', 'channel binding'],
    ['empty message', 'SCRAM-SHA-256', Buffer.alloc(0), 'RG_PROTOCOL_VIOLATION', 'empty'],
    ['NUL byte', 'SCRAM-SHA-256', Buffer.from('n,,n=,r=ab\0c'), 'RG_PROTOCOL_VIOLATION', 'NUL'],
    ['bad gs2 flag', 'SCRAM-SHA-256', Buffer.from('x,,n=,r=abc'), 'RG_PROTOCOL_VIOLATION', 'channel-binding flag'],
    ['gs2 flag not followed by a comma', 'SCRAM-SHA-256', Buffer.from('nn,,n=,r=abc'), 'RG_PROTOCOL_VIOLATION', 'channel-binding flag'],
    ['truncated gs2 header', 'SCRAM-SHA-256', Buffer.from('n'), 'RG_PROTOCOL_VIOLATION', 'truncated'],
    ['"p=" channel binding', 'SCRAM-SHA-256', Buffer.from('p=tls-server-end-point,,n=,r=abc'), 'RG_PROTOCOL_VIOLATION', 'channel binding'],
    ['authzid', 'SCRAM-SHA-256', Buffer.from('n,a=admin,n=,r=abc'), 'RG_AUTH_METHOD', 'authorization identity'],
    ['junk in the authzid slot', 'SCRAM-SHA-256', Buffer.from('n,x=1,n=,r=abc'), 'RG_PROTOCOL_VIOLATION', 'gs2 header'],
    ['mandatory extension', 'SCRAM-SHA-256', Buffer.from('n,,m=ext,n=,r=abc'), 'RG_AUTH_METHOD', 'extension'],
    ['no user name attribute', 'SCRAM-SHA-256', Buffer.from('n,,r=abc'), 'RG_PROTOCOL_VIOLATION', 'expected attribute "n"'],
    ['truncated after the user name', 'SCRAM-SHA-256', Buffer.from('n,,n='), 'RG_PROTOCOL_VIOLATION', 'expected attribute "r" but found end'],
    ['nonce without "="', 'SCRAM-SHA-256', Buffer.from('n,,n=,rabc'), 'RG_PROTOCOL_VIOLATION', 'expected character "="'],
    ['empty nonce', 'SCRAM-SHA-256', Buffer.from('n,,n=,r='), 'RG_PROTOCOL_VIOLATION', 'nonce'],
    ['nonce with a space', 'SCRAM-SHA-256', Buffer.from('n,,n=,r=ab c'), 'RG_PROTOCOL_VIOLATION', 'non-printable'],
    ['nonce with a high byte', 'SCRAM-SHA-256', Buffer.from([...Buffer.from('n,,n=,r=ab'), 0xff]), 'RG_PROTOCOL_VIOLATION', 'non-printable'],
    ['bad extension', 'SCRAM-SHA-256', Buffer.from('n,,n=,r=abc,1=x'), 'RG_PROTOCOL_VIOLATION', 'attribute expected'],
    ['trailing comma', 'SCRAM-SHA-256', Buffer.from('n,,n=,r=abc,'), 'RG_PROTOCOL_VIOLATION', 'attribute expected'],
  ];
  for (const [name, mechanism, data, code, messagePart] of cases) {
    test(`${name} → ${code}`, () => {
      const server = serverFor(verifier);
      assertFailure(server.handleClientFirst(mechanism, data), code, messagePart);
      // The exchange is over: nothing more is accepted.
      assertFailure(server.handleClientFinal(Buffer.from('c=biws,r=abc,p=AAAA')), 'RG_PROTOCOL_VIOLATION', 'unexpected SASLResponse');
    });
  }

  test('the client\'s user name is ignored (PostgreSQL uses the StartupMessage\'s)', () => {
    const server = serverFor(verifier, 'alice');
    assert.ok(server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=bob,r=abc')).ok);
  });

  test('a peer string in an error is escaped and capped', () => {
    const result = serverFor(verifier).handleClientFirst(`X\u0001${'A'.repeat(100)}`, Buffer.from('n,,n=,r=abc'));
    assertFailure(result, 'RG_AUTH_METHOD', 'X\\x01AAA');
    assert.ok(!result.ok && result.message.length < 200);
  });
});

describe('server: malformed client-final-message', () => {
  const verifier = verifierFor('pw', 1);

  /** A server that has answered client-first "n,,n=,r=abc", and the full nonce it expects. */
  function started(): { server: ScramServerExchange; nonce: string; serverFirst: string } {
    const server = serverFor(verifier);
    const result = server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'));
    assert.ok(result.ok);
    const serverFirst = result.serverFirst.toString();
    return { server, nonce: /^r=([^,]*)/.exec(serverFirst)?.[1] ?? '', serverFirst };
  }
  const proof = Buffer.alloc(32, 7).toString('base64');

  const cases: ReadonlyArray<[name: string, build: (nonce: string) => Buffer, code: ScramFailureCode, messagePart: string]> = [
    ['empty message', () => Buffer.alloc(0), 'RG_PROTOCOL_VIOLATION', 'empty'],
    ['missing channel binding', (n) => Buffer.from(`r=${n},p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'expected attribute "c"'],
    ['wrong channel binding echo', (n) => Buffer.from(`c=eSws,r=${n},p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'channel-binding attribute'],
    ['channel binding data for "p"', (n) => Buffer.from(`c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=${n},p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'channel-binding attribute'],
    ['client nonce only', () => Buffer.from(`c=biws,r=abc,p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'nonce does not match'],
    ['nonce with extra characters', (n) => Buffer.from(`c=biws,r=${n}x,p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'nonce does not match'],
    ['other client nonce, right server nonce', (n) => Buffer.from(`c=biws,r=xyz${n.slice(3)},p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'nonce does not match'],
    ['truncated: no proof', (n) => Buffer.from(`c=biws,r=${n}`), 'RG_PROTOCOL_VIOLATION', 'no proof'],
    ['truncated: channel binding only', () => Buffer.from('c=biws'), 'RG_PROTOCOL_VIOLATION', 'expected attribute "r" but found end'],
    ['truncated proof', (n) => Buffer.from(`c=biws,r=${n},p=${proof.slice(0, 20)}`), 'RG_PROTOCOL_VIOLATION', 'malformed proof'],
    ['non-base64 proof', (n) => Buffer.from(`c=biws,r=${n},p=${'!'.repeat(44)}`), 'RG_PROTOCOL_VIOLATION', 'malformed proof'],
    ['unpadded base64 proof', (n) => Buffer.from(`c=biws,r=${n},p=${proof.replace(/=+$/, '')}`), 'RG_PROTOCOL_VIOLATION', 'malformed proof'],
    ['proof of 31 bytes', (n) => Buffer.from(`c=biws,r=${n},p=${Buffer.alloc(31).toString('base64')}`), 'RG_PROTOCOL_VIOLATION', 'malformed proof'],
    ['garbage after the proof', (n) => Buffer.from(`c=biws,r=${n},p=${proof},x=1`), 'RG_PROTOCOL_VIOLATION', 'garbage'],
    ['invalid extension', (n) => Buffer.from(`c=biws,r=${n},=x,p=${proof}`), 'RG_PROTOCOL_VIOLATION', 'attribute expected'],
    ['wrong proof', (n) => Buffer.from(`c=biws,r=${n},p=${proof}`), 'RG_AUTH_FAILED', 'password authentication failed for user "alice"'],
  ];
  for (const [name, build, code, messagePart] of cases) {
    test(`${name} → ${code}`, () => {
      const { server, nonce } = started();
      assertFailure(server.handleClientFinal(build(nonce)), code, messagePart);
      assertFailure(server.handleClientFinal(build(nonce)), 'RG_PROTOCOL_VIOLATION', 'unexpected SASLResponse');
    });
  }

  test('out of order: SASLResponse first, SASLInitialResponse twice, anything after success', () => {
    assertFailure(serverFor(verifier).handleClientFinal(Buffer.from('c=biws,r=abc,p=AAAA')), 'RG_PROTOCOL_VIOLATION', 'unexpected SASLResponse');
    const { server } = started();
    assertFailure(server.handleClientFirst('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc')), 'RG_PROTOCOL_VIOLATION', 'unexpected SASLInitialResponse');

    const done = serverFor(verifier);
    const client = new ScramClientExchange('pw');
    const first = client.clientFirst();
    const s1 = done.handleClientFirst(first.mechanism, first.data);
    assert.ok(s1.ok);
    assert.ok(done.handleClientFinal(client.handleServerFirst(s1.serverFirst)).ok);
    assertFailure(done.handleClientFirst(first.mechanism, first.data), 'RG_PROTOCOL_VIOLATION', 'is done');
  });
});

describe('client: malformed server messages', () => {
  function started(options?: { maxIterations?: number }): ScramClientExchange {
    const client = new ScramClientExchange('pw', undefined, { nonce: 'abc', ...options });
    client.clientFirst();
    return client;
  }
  const salt = Buffer.alloc(16, 1).toString('base64');

  const firstCases: ReadonlyArray<[name: string, data: string, messagePart: string]> = [
    ['empty', '', 'empty'],
    ['nonce not starting with the client nonce', `r=xyzdef,s=${salt},i=4096`, 'nonce mismatch'],
    ['no server part in the nonce', `r=abc,s=${salt},i=4096`, 'nonce mismatch'],
    ['non-printable nonce', `r=abc d,s=${salt},i=4096`, 'nonce mismatch'],
    ['mandatory extension first', `m=x,r=abcdef,s=${salt},i=4096`, 'expected attribute "r"'],
    ['missing salt', 'r=abcdef,i=4096', 'expected attribute "s"'],
    ['non-base64 salt', 'r=abcdef,s=@@@@,i=4096', 'invalid salt'],
    ['empty salt', 'r=abcdef,s=,i=4096', 'invalid salt'],
    ['missing iterations', `r=abcdef,s=${salt}`, 'expected attribute "i" but found end'],
    ['zero iterations', `r=abcdef,s=${salt},i=0`, 'invalid iteration count'],
    ['non-numeric iterations', `r=abcdef,s=${salt},i=4k`, 'invalid iteration count'],
    ['iterations above int range', `r=abcdef,s=${salt},i=99999999999`, 'invalid iteration count'],
    ['extra attribute', `r=abcdef,s=${salt},i=4096,x=1`, 'garbage at end of server-first-message'],
    ['iterations above the limit', `r=abcdef,s=${salt},i=1000001`, 'above the limit of 1000000'],
  ];
  for (const [name, data, messagePart] of firstCases) {
    test(`server-first: ${name} → RG_UPSTREAM_AUTH`, () => {
      const client = started();
      assert.throws(() => client.handleServerFirst(Buffer.from(data)), isUpstreamAuth(messagePart));
      assert.throws(() => client.verifyServerFinal(Buffer.from('v=x')), isUpstreamAuth('unexpected AuthenticationSASLFinal'));
    });
  }

  test('maxIterations is configurable', () => {
    const client = started({ maxIterations: 10 });
    assert.throws(() => client.handleServerFirst(Buffer.from(`r=abcdef,s=${salt},i=11`)), isUpstreamAuth('above the limit of 10'));
  });

  /** A client that has answered a server-first-message of a real exchange, plus the server's genuine final. */
  function atFinal(): { client: ScramClientExchange; serverFinal: string } {
    const server = serverFor(verifierFor('pw', 1));
    const client = new ScramClientExchange('pw');
    const first = client.clientFirst();
    const s1 = server.handleClientFirst(first.mechanism, first.data);
    assert.ok(s1.ok);
    const s2 = server.handleClientFinal(client.handleServerFirst(s1.serverFirst));
    assert.ok(s2.ok);
    return { client, serverFinal: s2.serverFinal.toString() };
  }

  const finalCases: ReadonlyArray<[name: string, data: (genuine: string) => string, messagePart: string]> = [
    ['server error', () => 'e=invalid-proof', 'error received from server in SCRAM exchange: invalid-proof'],
    ['empty', () => '', 'empty'],
    ['wrong attribute', (genuine) => `x${genuine.slice(1)}`, 'expected attribute "v"'],
    ['garbage after the signature', (genuine) => `${genuine},x=1`, 'garbage at end of server-final-message'],
    ['signature not base64', () => 'v=!!!!', 'invalid server signature'],
    ['signature of the wrong length', () => `v=${Buffer.alloc(20).toString('base64')}`, 'invalid server signature'],
    ['forged signature', () => `v=${Buffer.alloc(32, 9).toString('base64')}`, 'incorrect server signature'],
  ];
  for (const [name, data, messagePart] of finalCases) {
    test(`server-final: ${name} → RG_UPSTREAM_AUTH`, () => {
      const { client, serverFinal } = atFinal();
      assert.throws(() => client.verifyServerFinal(Buffer.from(data(serverFinal))), isUpstreamAuth(messagePart));
      assert.equal(client.complete, false);
    });
  }

  test('a signature from a server that only knows another password is refused', () => {
    const client = new ScramClientExchange('pw', undefined, { nonce: 'abc' });
    const first = client.clientFirst();
    const impostorVerifier = verifierFor('not-pw', 1);
    const impostor = serverFor(impostorVerifier);
    const s1 = impostor.handleClientFirst(first.mechanism, first.data);
    assert.ok(s1.ok);
    const final = client.handleServerFirst(s1.serverFirst).toString();
    assertFailure(impostor.handleClientFinal(Buffer.from(final)), 'RG_AUTH_FAILED');
    // Had it answered anyway, signing the transcript with the ServerKey it has:
    const authMessage = `n=,r=abc,${s1.serverFirst.toString()},${final.replace(/,p=[^,]*$/, '')}`;
    const forged = createHmac('sha256', impostorVerifier.serverKey).update(authMessage).digest('base64');
    assert.throws(() => client.verifyServerFinal(Buffer.from(`v=${forged}`)), isUpstreamAuth('incorrect server signature'));
  });

  test('out of order: SASLContinue before clientFirst, twice, clientFirst twice', () => {
    const fresh = new ScramClientExchange('pw');
    assert.throws(() => fresh.handleServerFirst(Buffer.from(`r=abcdef,s=${salt},i=1`)), isUpstreamAuth('unexpected AuthenticationSASLContinue'));
    const client = started();
    client.handleServerFirst(Buffer.from(`r=abcdef,s=${salt},i=1`));
    assert.throws(() => client.handleServerFirst(Buffer.from(`r=abcdef,s=${salt},i=1`)), isUpstreamAuth('unexpected AuthenticationSASLContinue'));
    assert.throws(() => started().clientFirst(), (error: unknown) => error instanceof RolegateError && error.code === 'RG_INTERNAL');
  });

  test('the user name is sent as an escaped saslname', () => {
    const client = new ScramClientExchange('pw', undefined, { userName: 'a=b,c', nonce: 'abc' });
    assert.equal(client.clientFirst().data.toString(), 'n,,n=a=3Db=2Cc,r=abc');
  });
});

describe('client key cache', () => {
  function connect(cache: SaltedPasswordCache, verifier: ScramVerifier, password = 'pw'): Outcome {
    const server = serverFor(verifier);
    const client = new ScramClientExchange(password, cache);
    const first = client.clientFirst();
    const s1 = server.handleClientFirst(first.mechanism, first.data);
    assert.ok(s1.ok);
    const s2 = server.handleClientFinal(client.handleServerFirst(s1.serverFirst));
    if (!s2.ok) return s2;
    client.verifyServerFinal(s2.serverFinal);
    return { ok: true };
  }

  test('repeated connects reuse the derived keys; the key is not the password', () => {
    const cache: SaltedPasswordCache = new Map();
    // A password no base64 salt or hex digest can contain by chance ('pw' could: the key holds the salt).
    const password = 'pass word!';
    const verifier = verifierFor(password);
    assert.deepEqual(connect(cache, verifier, password), { ok: true });
    const [entry] = cache.values();
    assert.equal(cache.size, 1);
    assert.deepEqual(connect(cache, verifier, password), { ok: true });
    assert.equal(cache.size, 1);
    assert.equal([...cache.values()][0], entry);
    assert.ok(![...cache.keys()][0]?.includes(password));
    // Another password against the same salt is another entry, and still fails.
    assert.equal(connect(cache, verifier, 'other').ok, false);
    assert.equal(cache.size, 2);
  });

  test(`is bounded to ${SCRAM_KEY_CACHE_MAX_ENTRIES} entries, least recently used evicted first`, () => {
    const cache: SaltedPasswordCache = new Map();
    const first = verifierFor('pw', 1);
    assert.deepEqual(connect(cache, first), { ok: true });
    const firstEntry = [...cache.values()][0];
    for (let i = 0; i < SCRAM_KEY_CACHE_MAX_ENTRIES + 10; i++) {
      assert.deepEqual(connect(cache, verifierFor('pw', 1)), { ok: true });
      if (i % 8 === 0) assert.deepEqual(connect(cache, first), { ok: true }); // keep it recently used
      assert.ok(cache.size <= SCRAM_KEY_CACHE_MAX_ENTRIES);
    }
    assert.equal(cache.size, SCRAM_KEY_CACHE_MAX_ENTRIES);
    assert.ok([...cache.values()].includes(firstEntry as never));
  });
});

describe('verifiers', () => {
  test('create → parse → format round trip', () => {
    const salt = Buffer.from('0123456789abcdef');
    const text = createScramVerifier('pw', { salt, iterations: 10 });
    assert.match(text, /^SCRAM-SHA-256\$10:MDEyMzQ1Njc4OWFiY2RlZg==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
    const parsed = parseScramVerifier(text);
    assert.ok(parsed !== null);
    assert.equal(parsed.iterations, 10);
    assert.deepEqual(parsed.salt, salt);
    assert.equal(parsed.storedKey.length, 32);
    assert.equal(parsed.serverKey.length, 32);
    assert.equal(formatScramVerifier(parsed), text);
  });

  test('StoredKey and ServerKey are H(HMAC(SaltedPassword, "Client Key")) and HMAC(SaltedPassword, "Server Key")', () => {
    const salt = Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64');
    const parsed = parseScramVerifier(createScramVerifier('pencil', { salt }));
    assert.ok(parsed !== null);
    // RFC 7677 values: SaltedPassword for "pencil" with that salt and 4096 iterations.
    const salted = Buffer.from('xKSVEDI6tPlSysH6mUQZOeeOp01r6B3fcJbodRPcYV0=', 'base64');
    const clientKey = createHmac('sha256', salted).update('Client Key').digest();
    assert.deepEqual(parsed.storedKey, createHash('sha256').update(clientKey).digest());
    assert.deepEqual(parsed.serverKey, createHmac('sha256', salted).update('Server Key').digest());
  });

  test('defaults: 4096 iterations, 16 random bytes of salt', () => {
    const a = parseScramVerifier(createScramVerifier('pw'));
    const b = parseScramVerifier(createScramVerifier('pw'));
    assert.ok(a !== null && b !== null);
    assert.equal(a.iterations, 4096);
    assert.equal(a.salt.length, 16);
    assert.notDeepEqual(a.salt, b.salt);
  });

  test('bad options are RG_INTERNAL', () => {
    for (const iterations of [0, -1, 1.5, 2 ** 31]) {
      assert.throws(() => createScramVerifier('pw', { iterations }), (error: unknown) => error instanceof RolegateError && error.code === 'RG_INTERNAL');
    }
    assert.throws(() => createScramVerifier('pw', { salt: Buffer.alloc(0) }), (error: unknown) => error instanceof RolegateError && error.code === 'RG_INTERNAL');
  });

  const good = createScramVerifier('pw', { iterations: 4096 });
  const [iterationsAndSalt = '', keys = ''] = good.slice('SCRAM-SHA-256$'.length).split('$');
  const [storedKey = '', serverKey = ''] = keys.split(':');
  const saltText = iterationsAndSalt.split(':')[1] ?? '';
  const malformed: ReadonlyArray<[string, string]> = [
    ['empty', ''],
    ['md5 hash', 'md5871c429757b7a0bf1654fad112b77bd4'],
    ['plain text', 'pw'],
    ['other mechanism', good.replace('SCRAM-SHA-256', 'SCRAM-SHA-1')],
    ['lower-case scheme', good.replace('SCRAM-SHA-256', 'scram-sha-256')],
    ['zero iterations', `SCRAM-SHA-256$0:${saltText}$${keys}`],
    ['iterations above int range', `SCRAM-SHA-256$2147483648:${saltText}$${keys}`],
    ['negative iterations', `SCRAM-SHA-256$-1:${saltText}$${keys}`],
    ['missing salt', `SCRAM-SHA-256$4096:$${keys}`],
    ['salt not base64', `SCRAM-SHA-256$4096:@@@@$${keys}`],
    ['StoredKey too short', `SCRAM-SHA-256$4096:${saltText}$${Buffer.alloc(31).toString('base64')}:${serverKey}`],
    ['ServerKey not base64', `SCRAM-SHA-256$4096:${saltText}$${storedKey}:${serverKey.replace(/[A-Za-z]/, '*')}`],
    ['ServerKey missing', `SCRAM-SHA-256$4096:${saltText}$${storedKey}`],
    ['trailing text', `${good}$x`],
    ['surrounding whitespace', ` ${good}`],
    ['unpadded base64', `SCRAM-SHA-256$4096:${saltText.replace(/=+$/, '')}$${keys}`],
  ];
  for (const [name, text] of malformed) {
    test(`parse rejects ${name}`, () => {
      assert.equal(parseScramVerifier(text), null);
    });
  }
});

describe('SASLprep (as PostgreSQL\'s pg_saslprep)', () => {
  const cases: ReadonlyArray<[name: string, input: string, expected: string | null]> = [
    ['ASCII is left alone', 'user', 'user'],
    ['ASCII control characters too (PostgreSQL skips SASLprep for ASCII; RFC 4013 would refuse)', 'a\u0007b', 'a\u0007b'],
    ['RFC 4013: soft hyphen mapped to nothing', 'I\u00ADX', 'IX'],
    ['RFC 4013: NFKC of ª', '\u00AA', 'a'],
    ['RFC 4013: NFKC of Ⅸ', '\u2168', 'IX'],
    ['RFC 4013: bidi, RandALCat not last', '\u0627\u0031', null],
    ['non-ASCII spaces become U+0020', 'a\u00A0b\u3000c', 'a b c'],
    ['zero-width space is a space (C.1.2 wins over B.1)', 'a\u200Bb\u00E9', 'a b\u00E9'],
    ['variation selector and BOM are dropped', 'x\uFE0Fy\uFEFF\u00E9', 'xy\u00E9'],
    ['ligature', '\uFB01\u00E9', 'fi\u00E9'],
    ['combining sequence composes', 'e\u0301', '\u00E9'],
    ['only mapped-to-nothing characters: empty, refused', '\u00AD\u200C', null],
    ['prohibited: private use', 'a\uE000', null],
    ['prohibited: a character unassigned in Unicode 3.2 (emoji)', '\uFB01\u{1F600}', null],
    ['bidi: RandALCat with LCat', '\uFB01\u05D0', null],
    ['bidi: RandALCat first and last', '\u05D0\u05D1', '\u05D0\u05D1'],
    ['bidi checked before NFKC, as PostgreSQL does (™ is not LCat, its NFKC "TM" is)', '\u05D0\u2122\u05D0', '\u05D0TM\u05D0'],
    ['lone surrogate stands for invalid UTF-8', 'a\uD800\u00E9', null],
  ];
  for (const [name, input, expected] of cases) {
    test(name, () => assert.equal(saslprep(input), expected));
  }

  test('a refused password is used raw', () => {
    assert.deepEqual(preparePassword('\uFB01\u{1F600}'), Buffer.from('\uFB01\u{1F600}', 'utf8'));
    assert.deepEqual(preparePassword('\uFB01\u00E9'), Buffer.from('fi\u00E9', 'utf8'));
  });
});

// ---------------------------------------------------------------------------
// Against a real PostgreSQL: verifiers match pg_authid byte for byte, our
// server accepts what PostgreSQL stored, our client and md5 logs in to it.
// ---------------------------------------------------------------------------

const PG_BIN = '/usr/lib/postgresql/15/bin';
const pgAvailable = existsSync(join(PG_BIN, 'initdb')) && userInfo().uid === 0;

describe('against a real PostgreSQL 15 cluster', { skip: pgAvailable ? false : 'needs PostgreSQL 15 binaries and root (to run initdb as postgres)' }, () => {
  let dir = '';
  let port = 0;
  let started = false;
  const passwords: Readonly<Record<string, string>> = {
    x: 'p',
    nfkc_role: '\uFB01\u00A0pass\u00AD\u2168', // mapped and normalised
    bidi_quirk: '\u05D0\u2122\u05D0', // passes PostgreSQL's pre-NFKC bidi check
    unassigned: '\uFB01\u{1F600}', // refused: raw bytes
    bidi_refused: '\uFB01\u05D0', // refused: raw bytes
    control_ascii: 'tab\there',
  };
  const rolpassword = new Map<string, string>();

  function psql(sql: string): string {
    return execFileSync('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', sql], {
      encoding: 'utf8',
      env: { ...process.env, PGCLIENTENCODING: 'UTF8' },
    }).trim();
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rolegate-auth-pg-'));
    chownSync(dir, postgresId('-u'), postgresId('-g')); // initdb and postgres run as the postgres OS user
    port = await freeLoopbackPort();
    const data = join(dir, 'data');
    execFileSync('runuser', ['-u', 'postgres', '--', join(PG_BIN, 'initdb'), '-D', data, '-E', 'UTF8', '--locale=C', '-U', 'postgres', '-A', 'trust'], { stdio: 'ignore' });
    writeFileSync(
      join(data, 'pg_hba.conf'),
      ['local all postgres trust', 'host all md5_role 127.0.0.1/32 md5', 'host all all 127.0.0.1/32 scram-sha-256', ''].join('\n'),
    );
    execFileSync('runuser', [
      '-u', 'postgres', '--', join(PG_BIN, 'pg_ctl'), '-D', data, '-l', join(dir, 'server.log'), '-w', '-t', '60',
      '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256 -c fsync=off`,
      'start',
    ], { stdio: 'ignore' });
    started = true;
    for (const [role, password] of Object.entries(passwords)) {
      psql(`CREATE ROLE ${role} LOGIN PASSWORD '${password.replaceAll("'", "''")}'`);
      rolpassword.set(role, psql(`SELECT rolpassword FROM pg_authid WHERE rolname = '${role}'`));
    }
    psql("SET password_encryption = 'md5'; CREATE ROLE md5_role LOGIN PASSWORD 'pw'");
  });

  after(() => {
    try {
      if (started) execFileSync('runuser', ['-u', 'postgres', '--', join(PG_BIN, 'pg_ctl'), '-D', join(dir, 'data'), '-m', 'immediate', '-w', 'stop'], { stdio: 'ignore' });
    } finally {
      if (dir !== '') rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PostgreSQL stored SCRAM verifiers that parse', () => {
    for (const role of Object.keys(passwords)) {
      const text = rolpassword.get(role) ?? '';
      const parsed = parseScramVerifier(text);
      assert.ok(parsed !== null, `${role}: ${text}`);
      assert.equal(parsed.iterations, 4096);
      assert.equal(parsed.salt.length, 16);
      assert.equal(formatScramVerifier(parsed), text);
    }
  });

  test('createScramVerifier with PostgreSQL\'s salt and iterations reproduces its verifier exactly, SASLprep included', () => {
    for (const [role, password] of Object.entries(passwords)) {
      const stored = rolpassword.get(role) ?? '';
      const parsed = parseScramVerifier(stored);
      assert.ok(parsed !== null);
      assert.equal(createScramVerifier(password, { salt: parsed.salt, iterations: parsed.iterations }), stored, role);
    }
  });

  test('our server accepts "p" and rejects "q" against the verifier PostgreSQL stored for x', () => {
    const verifier = parseScramVerifier(rolpassword.get('x') ?? '');
    assert.ok(verifier !== null);
    assert.deepEqual(login(verifier, 'p', 'x'), { ok: true });
    assert.deepEqual(login(verifier, 'q', 'x'), { ok: false, code: 'RG_AUTH_FAILED', message: 'password authentication failed for user "x"' });
    assert.deepEqual(login(null, 'p', 'x'), { ok: false, code: 'RG_AUTH_FAILED', message: 'password authentication failed for user "x"' });
  });

  test('our SCRAM client logs in to PostgreSQL, and verifies its signature', async () => {
    for (const [role, password] of Object.entries(passwords)) {
      const result = await scramLogin(port, role, password);
      assert.deepEqual(result, { ok: true, complete: true }, role);
    }
  });

  test('PostgreSQL refuses our SCRAM client with a wrong password (28P01)', async () => {
    assert.deepEqual(await scramLogin(port, 'x', 'q'), { ok: false, sqlstate: '28P01' });
  });

  test('md5PasswordMessage logs in to PostgreSQL; a wrong password is refused', async () => {
    assert.deepEqual(await md5Login(port, 'md5_role', 'pw'), { ok: true });
    assert.deepEqual(await md5Login(port, 'md5_role', 'pq'), { ok: false, sqlstate: '28P01' });
  });
});

function postgresId(flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
}

// A minimal frontend for the tests: StartupMessage, the authentication
// messages, and nothing else (protocol section "Message Flow: Start-up").

interface BackendMessage {
  type: string;
  body: Buffer;
}

class RawConnection {
  readonly #socket: Socket;
  #buffered = Buffer.alloc(0);
  #waiting: ((message: BackendMessage) => void) | null = null;
  #failed: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#deliver();
    });
    socket.on('error', (error) => {
      this.#failed = error;
    });
  }

  static open(port: number, user: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: '127.0.0.1', port }, () => {
        const params = Buffer.from(`user\0${user}\0database\0postgres\0\0`, 'utf8');
        const header = Buffer.alloc(8);
        header.writeInt32BE(8 + params.length, 0);
        header.writeInt32BE(196608, 4); // protocol 3.0
        socket.write(Buffer.concat([header, params]));
        resolve(new RawConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  send(type: string, body: Buffer): void {
    const header = Buffer.alloc(5);
    header.write(type, 0, 'latin1');
    header.writeInt32BE(4 + body.length, 1);
    this.#socket.write(Buffer.concat([header, body]));
  }

  next(): Promise<BackendMessage> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    return new Promise((resolve) => {
      this.#waiting = resolve;
      this.#deliver();
    });
  }

  /** The next authentication request (0x52 'R'): its code and payload, or the SQLSTATE of an ErrorResponse. */
  async nextAuth(): Promise<{ code: number; payload: Buffer } | { sqlstate: string }> {
    const message = await this.next();
    if (message.type === 'E') return { sqlstate: /(?:^|\0)C([^\0]*)/.exec(message.body.toString('latin1'))?.[1] ?? '' };
    assert.equal(message.type, 'R');
    return { code: message.body.readInt32BE(0), payload: message.body.subarray(4) };
  }

  close(): void {
    this.send('X', Buffer.alloc(0)); // Terminate
    this.#socket.end();
  }

  #deliver(): void {
    if (this.#waiting === null || this.#buffered.length < 5) return;
    const length = this.#buffered.readInt32BE(1);
    if (this.#buffered.length < 1 + length) return;
    const message = { type: this.#buffered.toString('latin1', 0, 1), body: this.#buffered.subarray(5, 1 + length) };
    this.#buffered = this.#buffered.subarray(1 + length);
    const waiting = this.#waiting;
    this.#waiting = null;
    waiting(message);
  }
}

async function scramLogin(port: number, user: string, password: string): Promise<{ ok: true; complete: boolean } | { ok: false; sqlstate: string }> {
  const connection = await RawConnection.open(port, user);
  try {
    const offer = await connection.nextAuth();
    assert.ok('code' in offer && offer.code === 10, 'AuthenticationSASL expected'); // 10 = AuthenticationSASL
    assert.ok(offer.payload.toString('latin1').split('\0').includes('SCRAM-SHA-256'));
    const client = new ScramClientExchange(password);
    const first = client.clientFirst();
    const length = Buffer.alloc(4);
    length.writeInt32BE(first.data.length);
    connection.send('p', Buffer.concat([Buffer.from(`${first.mechanism}\0`), length, first.data])); // SASLInitialResponse

    const cont = await connection.nextAuth();
    assert.ok('code' in cont && cont.code === 11, 'AuthenticationSASLContinue expected');
    connection.send('p', client.handleServerFirst(cont.payload)); // SASLResponse

    const final = await connection.nextAuth();
    if ('sqlstate' in final) return { ok: false, sqlstate: final.sqlstate };
    assert.equal(final.code, 12); // AuthenticationSASLFinal
    client.verifyServerFinal(final.payload);
    const ok = await connection.nextAuth();
    assert.ok('code' in ok && ok.code === 0, 'AuthenticationOk expected');
    return { ok: true, complete: client.complete };
  } finally {
    connection.close();
  }
}

async function md5Login(port: number, user: string, password: string): Promise<{ ok: true } | { ok: false; sqlstate: string }> {
  const connection = await RawConnection.open(port, user);
  try {
    const request = await connection.nextAuth();
    assert.ok('code' in request && request.code === 5, 'AuthenticationMD5Password expected');
    const answer = md5PasswordMessage(user, password, request.payload);
    connection.send('p', Buffer.concat([answer, Buffer.from([0])])); // PasswordMessage
    const result = await connection.nextAuth();
    if ('sqlstate' in result) return { ok: false, sqlstate: result.sqlstate };
    assert.equal(result.code, 0);
    return { ok: true };
  } finally {
    connection.close();
  }
}
