import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPrivateKey, createPublicKey, createSign, generateKeyPairSync } from 'node:crypto';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { fetch as undiciFetch } from 'undici';
import { JwtVerifier, type JwtConfig, type JwtVerifyResult } from '../../src/auth/jwt.ts';
import { ERRORS, RolegateError } from '../../src/errors.ts';

// A local JWKS server, keys generated here, tokens signed here. The verifier's
// clock is injected (`clock.ms`), so cache ages and the refetch rate limit
// are tested without waiting; only the HTTP timeout uses real time.

const ISSUER = 'https://idp.test.example';
const AUDIENCE = 'rolegate';
const T0 = Date.UTC(2026, 10, 27, 22, 55, 0);
const MARKER = 'SECRET-MARKER-7f3a';

interface TestKey {
  kid: string;
  alg: 'RS256' | 'ES256' | 'RS384';
  privateKey: CryptoKey;
  publicJwk: JWK;
  publicPem: string;
}

async function makeKey(kid: string, alg: TestKey['alg']): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

let rsa: TestKey;
let ec: TestKey;
let rsa2: TestKey;
let rs384: TestKey;

async function makeKeys(): Promise<void> {
  rsa = await makeKey('rsa-1', 'RS256');
  ec = await makeKey('ec-1', 'ES256');
  rsa2 = await makeKey('rsa-2', 'RS256');
  rs384 = await makeKey('rsa-384', 'RS384');
  server.keys = [rsa.publicJwk, ec.publicJwk, rs384.publicJwk];
}

// ---------------------------------------------------------------- the JWKS server

type Mode = 'ok' | 'http-500' | 'hang' | 'not-json' | 'no-keys-array';

const server = {
  http: null as http.Server | null,
  url: '',
  hits: 0,
  mode: 'ok' as Mode,
  keys: [] as JWK[],
  hanging: [] as http.ServerResponse[],
};

before(async () => {
  await makeKeys();
  server.http = http.createServer((req, res) => {
    server.hits++;
    switch (server.mode) {
      case 'ok':
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
        res.end(JSON.stringify({ keys: server.keys }));
        return;
      case 'http-500':
        res.writeHead(500);
        res.end('boom');
        return;
      case 'hang':
        server.hanging.push(res);
        return;
      case 'not-json':
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>login</html>');
        return;
      case 'no-keys-array':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"issuer":"x"}');
        return;
    }
  });
  await new Promise<void>((resolve) => server.http!.listen(0, '127.0.0.1', resolve));
  server.url = `http://127.0.0.1:${(server.http.address() as AddressInfo).port}/.well-known/jwks.json`;
});

after(async () => {
  for (const res of server.hanging) res.destroy();
  server.http?.closeAllConnections();
  await new Promise<void>((resolve) => server.http!.close(() => resolve()));
});

// ---------------------------------------------------------------- keys, clock, verifiers

const clock = { ms: T0 };
const nowSec = (): number => Math.floor(clock.ms / 1000);
const verifiers: JwtVerifier[] = [];

function makeVerifier(overrides: Partial<JwtConfig> = {}): JwtVerifier {
  const v = new JwtVerifier(
    { issuer: ISSUER, audience: AUDIENCE, jwksUrl: server.url, minRefreshIntervalMs: 10_000, jwksCacheMs: 600_000, ...overrides },
    { now: () => clock.ms },
  );
  verifiers.push(v);
  return v;
}

afterEach(async () => {
  await Promise.all(verifiers.splice(0).map((v) => v.close()));
  for (const res of server.hanging.splice(0)) res.destroy();
  server.hits = 0;
  server.mode = 'ok';
  server.keys = [rsa.publicJwk, ec.publicJwk, rs384.publicJwk];
  clock.ms = T0;
});

function baseClaims(): JWTPayload {
  return { iss: ISSUER, aud: AUDIENCE, sub: 'system:serviceaccount:orders:orders-api', iat: nowSec(), exp: nowSec() + 600, marker: MARKER, groups: ['a', 'b'] };
}

async function sign(key: TestKey, claims: JWTPayload = baseClaims(), header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey);
}

function assertOk(result: JwtVerifyResult): Extract<JwtVerifyResult, { ok: true }> {
  assert.equal(result.ok, true, JSON.stringify(result));
  return result;
}

function assertFails(result: JwtVerifyResult, code: 'RG_JWT_INVALID' | 'RG_JWKS_UNAVAILABLE', message: RegExp, token?: string): void {
  assert.equal(result.ok, false, 'expected a failure');
  assert.equal(result.code, code, result.message);
  assert.match(result.message, message);
  // Never echo the token or what it carries.
  assert.ok(!result.message.includes(MARKER), result.message);
  if (token !== undefined) for (const part of token.split('.')) if (part.length > 8) assert.ok(!result.message.includes(part), result.message);
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

// ---------------------------------------------------------------- tests

describe('JwtVerifier: valid tokens', () => {
  test('RS256: identity from sub, claims as a plain JSON object', async () => {
    const v = makeVerifier();
    const result = assertOk(await v.verify(await sign(rsa)));
    assert.equal(result.identity, 'system:serviceaccount:orders:orders-api');
    assert.deepEqual(result.claims, JSON.parse(JSON.stringify(baseClaims())));
    assert.equal(Object.getPrototypeOf(result.claims), Object.prototype);
    assert.deepEqual(JSON.parse(JSON.stringify(result.claims)), result.claims);
  });

  test('ES256', async () => {
    const v = makeVerifier();
    assertOk(await v.verify(await sign(ec)));
  });

  test('audience: a token listing several audiences passes when one is ours; a configured list matches any', async () => {
    const v = makeVerifier();
    assertOk(await v.verify(await sign(rsa, { ...baseClaims(), aud: ['other', AUDIENCE] })));
    const w = makeVerifier({ audience: ['first', 'second'] });
    assertOk(await w.verify(await sign(rsa, { ...baseClaims(), aud: 'second' })));
  });

  test('identityClaim picks another claim', async () => {
    const v = makeVerifier({ identityClaim: 'email' });
    assert.equal(assertOk(await v.verify(await sign(rsa, { ...baseClaims(), email: 'svc@example.com' }))).identity, 'svc@example.com');
  });

  test('a token without kid is tried against each candidate key', async () => {
    server.keys = [rsa2.publicJwk, rsa.publicJwk].map(({ kid: _kid, ...jwk }) => jwk);
    const v = makeVerifier();
    const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: 'RS256' }).sign(rsa.privateKey);
    assertOk(await v.verify(token));
    const forged = await new SignJWT(baseClaims()).setProtectedHeader({ alg: 'RS256' }).sign(ec.privateKey).catch(() => null);
    assert.equal(forged, null); // jose refuses an EC key for RS256; forge with an unrelated RSA key instead
    const stranger = await makeKey('x', 'RS256');
    const bad = await new SignJWT(baseClaims()).setProtectedHeader({ alg: 'RS256' }).sign(stranger.privateKey);
    assertFails(await v.verify(bad), 'RG_JWT_INVALID', /signature verification failed/, bad);
  });
});

describe('JwtVerifier: time claims and clock skew', () => {
  test('expired', async () => {
    const v = makeVerifier();
    const token = await sign(rsa, { ...baseClaims(), iat: nowSec() - 3600, exp: nowSec() - 60 });
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /expired/, token);
  });

  test('nbf in the future', async () => {
    const v = makeVerifier();
    const token = await sign(rsa, { ...baseClaims(), nbf: nowSec() + 120 });
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /not valid yet/, token);
  });

  test('iat in the future beyond the skew', async () => {
    const v = makeVerifier();
    const token = await sign(rsa, { ...baseClaims(), iat: nowSec() + 120 });
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /issued in the future/, token);
  });

  test('skew tolerance: within clockSkewSec passes, beyond fails', async () => {
    const v = makeVerifier({ clockSkewSec: 30 });
    assertOk(await v.verify(await sign(rsa, { ...baseClaims(), exp: nowSec() - 20 })));
    assertOk(await v.verify(await sign(rsa, { ...baseClaims(), nbf: nowSec() + 20 })));
    assertOk(await v.verify(await sign(rsa, { ...baseClaims(), iat: nowSec() + 20 })));
    assertFails(await v.verify(await sign(rsa, { ...baseClaims(), exp: nowSec() - 31 })), 'RG_JWT_INVALID', /expired/);
    assertFails(await v.verify(await sign(rsa, { ...baseClaims(), nbf: nowSec() + 31 })), 'RG_JWT_INVALID', /not valid yet/);
    const strict = makeVerifier({ clockSkewSec: 0 });
    assertFails(await strict.verify(await sign(rsa, { ...baseClaims(), exp: nowSec() })), 'RG_JWT_INVALID', /expired/);
  });

  test('the injected clock is the one used (a token valid at T0 is expired an hour later)', async () => {
    const v = makeVerifier();
    const token = await sign(rsa);
    assertOk(await v.verify(token));
    clock.ms += 3600_000;
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /expired/);
  });

  test('exp is required', async () => {
    const v = makeVerifier();
    const { exp: _exp, ...claims } = baseClaims();
    assertFails(await v.verify(await sign(rsa, claims)), 'RG_JWT_INVALID', /no expiry \(exp\)/);
  });
});

describe('JwtVerifier: issuer, audience, identity', () => {
  test('wrong issuer, missing issuer', async () => {
    const v = makeVerifier();
    const token = await sign(rsa, { ...baseClaims(), iss: 'https://evil.example' });
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /issuer \(iss\) does not match/, token);
    const result = await v.verify(token);
    assert.ok(!result.ok && !result.message.includes('evil'));
    const { iss: _iss, ...claims } = baseClaims();
    assertFails(await v.verify(await sign(rsa, claims)), 'RG_JWT_INVALID', /no issuer/);
  });

  test('wrong audience, missing audience', async () => {
    const v = makeVerifier();
    assertFails(await v.verify(await sign(rsa, { ...baseClaims(), aud: 'someone-else' })), 'RG_JWT_INVALID', /audience \(aud\) does not include/);
    const { aud: _aud, ...claims } = baseClaims();
    assertFails(await v.verify(await sign(rsa, claims)), 'RG_JWT_INVALID', /no audience/);
  });

  test('missing, empty, non-string or control-character identity claim', async () => {
    const v = makeVerifier();
    const { sub: _sub, ...claims } = baseClaims();
    assertFails(await v.verify(await sign(rsa, claims)), 'RG_JWT_INVALID', /no "sub" claim/);
    assertFails(await v.verify(await sign(rsa, { ...baseClaims(), sub: '' })), 'RG_JWT_INVALID', /"sub" claim .* not a non-empty string/);
    assertFails(await v.verify(await sign(rsa, { ...claims, sub: 42 } as unknown as JWTPayload)), 'RG_JWT_INVALID', /not a non-empty string/);
    assertFails(await v.verify(await sign(rsa, { ...baseClaims(), sub: 'admin\nfake log line' })), 'RG_JWT_INVALID', /control characters/);
    const w = makeVerifier({ identityClaim: 'email' });
    assertFails(await w.verify(await sign(rsa)), 'RG_JWT_INVALID', /no "email" claim/);
  });

  test('a claim from the prototype chain is not an identity', async () => {
    const w = makeVerifier({ identityClaim: 'constructor' });
    assertFails(await w.verify(await sign(rsa)), 'RG_JWT_INVALID', /no "constructor" claim/);
  });
});

describe('JwtVerifier: algorithms', () => {
  test('alg none is refused without fetching keys', async () => {
    const v = makeVerifier();
    const token = new UnsecuredJWT(baseClaims()).encode();
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /alg "none"/, token);
    const shouty = `${b64({ alg: 'NONE' })}.${b64(baseClaims())}.`;
    assertFails(await v.verify(shouty), 'RG_JWT_INVALID', /alg "none"/, shouty);
    assert.equal(server.hits, 0);
  });

  test('RS/HS confusion: HS256 "signed" with the RSA public key as the HMAC secret fails', async () => {
    const v = makeVerifier();
    for (const secret of [rsa.publicPem, createPublicKey(rsa.publicPem).export({ format: 'pem', type: 'pkcs1' }).toString(), JSON.stringify(rsa.publicJwk)]) {
      const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: 'HS256', kid: rsa.kid }).sign(new TextEncoder().encode(secret));
      assertFails(await v.verify(token), 'RG_JWT_INVALID', /HS256 token refused/, token);
    }
    // Even a JWKS that (wrongly) publishes a symmetric key cannot enable HS*.
    server.keys = [{ kty: 'oct', kid: 'shared', k: Buffer.from('secret').toString('base64url'), alg: 'HS256' }];
    const hs = await new SignJWT(baseClaims()).setProtectedHeader({ alg: 'HS256', kid: 'shared' }).sign(new TextEncoder().encode('secret'));
    assertFails(await v.verify(hs), 'RG_JWT_INVALID', /HS256 token refused/);
    assert.equal(server.hits, 0);
  });

  test('an algorithm outside the allow-list is refused; the list can be narrowed', async () => {
    const v = makeVerifier();
    assertFails(await v.verify(await sign(rs384)), 'RG_JWT_INVALID', /algorithm RS384 is not allowed/);
    const esOnly = makeVerifier({ algorithms: ['ES256'] });
    assertFails(await esOnly.verify(await sign(rsa)), 'RG_JWT_INVALID', /algorithm RS256 is not allowed/);
    assertOk(await esOnly.verify(await sign(ec)));
    const odd = `${b64({ alg: 'X-FANCY-<script>' })}.${b64(baseClaims())}.c2ln`;
    const result = await v.verify(odd);
    assertFails(result, 'RG_JWT_INVALID', /the token algorithm is not allowed/);
    assert.ok(!result.ok && !result.message.includes('FANCY'));
  });

  test('a key whose alg differs from the token alg does not verify it (ES256 header, RSA key kid)', async () => {
    const v = makeVerifier();
    const token = await sign(ec, baseClaims(), { kid: rsa.kid });
    const result = await v.verify(token);
    assertFails(result, 'RG_JWT_INVALID', /no JWKS key matches/, token);
  });

  test('an RSA key under 2048 bits is refused', async () => {
    // jose will not make one; node:crypto signs by hand.
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    server.keys = [{ ...weak.publicKey.export({ format: 'jwk' }), kid: 'weak', alg: 'RS256', use: 'sig' }];
    const input = `${b64({ alg: 'RS256', kid: 'weak' })}.${b64(baseClaims())}`;
    const token = `${input}.${createSign('RSA-SHA256').update(input).sign(weak.privateKey).toString('base64url')}`;
    const v = makeVerifier();
    assertFails(await v.verify(token), 'RG_JWT_INVALID', /key unusable/, token);
  });

  test('configuration: none, HS*, unknown algorithms and other problems are reported together', () => {
    assert.throws(
      () => new JwtVerifier({ issuer: '', audience: [], jwksUrl: 'ftp://x', algorithms: ['none', 'HS256', 'RS1'], clockSkewSec: -1 }),
      (err: unknown) => {
        assert.ok(err instanceof RolegateError);
        assert.equal(err.code, 'RG_CONFIG_INVALID');
        for (const part of [/issuer is required/, /audience/, /http\(s\)/, /algorithm none is refused/, /algorithm HS256 is refused/, /"RS1" is not supported/, /clockSkewSec/]) assert.match(err.message, part);
        return true;
      },
    );
  });
});

describe('JwtVerifier: malformed tokens', () => {
  const cases: Array<[string, () => string, RegExp]> = [
    ['empty', () => '', /empty token/],
    ['one part', () => 'not-a-jwt', /three dot-separated/],
    ['two parts', () => 'abc.def', /three dot-separated/],
    ['JWE (5 parts)', () => 'a.b.c.d.e', /JWE/],
    ['non-base64url header', () => `ab$c.${b64({})}.sig`, /not base64url/],
    ['header not JSON', () => `${Buffer.from('{nope').toString('base64url')}.${b64({})}.c2ln`, /header is not JSON/],
    ['header an array', () => `${b64(['RS256'])}.${b64({})}.c2ln`, /not a JSON object/],
    ['header without alg', () => `${b64({ kid: 'rsa-1' })}.${b64({})}.c2ln`, /no alg/],
    ['missing signature', () => `${b64({ alg: 'RS256', kid: 'rsa-1' })}.${b64(baseClaims())}.`, /signature/],
    ['too long', () => `${b64({ alg: 'RS256' })}.${'A'.repeat(40_000)}.c2ln`, /longer than/],
  ];
  for (const [name, make, message] of cases) {
    test(name, async () => {
      const v = makeVerifier();
      const token = make();
      assertFails(await v.verify(token), 'RG_JWT_INVALID', message, token);
      assert.equal(server.hits, 0, 'a malformed token never triggers a JWKS fetch');
    });
  }

  test('a tampered payload fails the signature check; the message names the check, not the token', async () => {
    const v = makeVerifier();
    const [h, , s] = (await sign(rsa)).split('.');
    const tampered = `${h}.${b64({ ...baseClaims(), sub: 'postgres' })}.${s}`;
    assertFails(await v.verify(tampered), 'RG_JWT_INVALID', /signature verification failed/, tampered);
  });

  test('signed but malformed inside: payload not a JSON object, unknown critical header', async () => {
    const v = makeVerifier();
    const key = createPrivateKey({ key: await exportPKCS8(rsa.privateKey), format: 'pem' });
    const handSigned = (header: Record<string, unknown>, payload: string): string => {
      const input = `${b64(header)}.${Buffer.from(payload).toString('base64url')}`;
      return `${input}.${createSign('RSA-SHA256').update(input).sign(key).toString('base64url')}`;
    };
    const notObject = handSigned({ alg: 'RS256', kid: rsa.kid }, '["not", "an", "object"]');
    assertFails(await v.verify(notObject), 'RG_JWT_INVALID', /malformed token/, notObject);
    const crit = handSigned({ alg: 'RS256', kid: rsa.kid, crit: ['x-must-understand'], 'x-must-understand': 1 }, JSON.stringify(baseClaims()));
    const result = await v.verify(crit);
    assertFails(result, 'RG_JWT_INVALID', /critical header parameter \(crit\) that is not supported/, crit);
    assert.ok(!result.ok && !result.message.includes('x-must-understand'));
    // The same key and claims without the oddities verify.
    assertOk(await v.verify(handSigned({ alg: 'RS256', kid: rsa.kid }, JSON.stringify(baseClaims()))));
  });
});

describe('JwtVerifier: JWKS fetching, caching, rotation', () => {
  test('the JWKS is fetched once and reused; refetched after jwksCacheMs', async () => {
    const v = makeVerifier({ jwksCacheMs: 60_000 });
    for (let i = 0; i < 5; i++) assertOk(await v.verify(await sign(i % 2 === 0 ? rsa : ec)));
    assert.equal(server.hits, 1);
    clock.ms += 59_000;
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 1);
    clock.ms += 2_000;
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 2);
  });

  test('concurrent logins on a cold cache share one fetch', async () => {
    const v = makeVerifier();
    const tokens = await Promise.all(Array.from({ length: 10 }, () => sign(rsa)));
    const results = await Promise.all(tokens.map((t) => v.verify(t)));
    for (const r of results) assertOk(r);
    assert.equal(server.hits, 1);
  });

  test('unknown kid → one refetch → the rotated key is accepted without a restart', async () => {
    const v = makeVerifier();
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 1);
    // The identity provider rotates: rsa-1 out, rsa-2 in.
    server.keys = [rsa2.publicJwk, ec.publicJwk];
    clock.ms += 10_000;
    assertOk(await v.verify(await sign(rsa2)));
    assert.equal(server.hits, 2);
    // The retired key no longer verifies (and the rate limit stops another fetch right away).
    const old = await sign(rsa);
    assertFails(await v.verify(old), 'RG_JWT_INVALID', /no JWKS key matches/, old);
    assert.equal(server.hits, 2);
  });

  test('unknown kid refetches are rate-limited', async () => {
    const v = makeVerifier({ minRefreshIntervalMs: 10_000 });
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 1);
    const ghost = await sign(rsa2); // rsa-2 is not published
    // Within the interval of the first fetch: no refetch.
    clock.ms += 5_000;
    assertFails(await v.verify(ghost), 'RG_JWT_INVALID', /fetched less than 10000 ms ago/, ghost);
    assert.equal(server.hits, 1);
    // Past it: one refetch, still unknown.
    clock.ms += 6_000;
    assertFails(await v.verify(ghost), 'RG_JWT_INVALID', /also after refetching/, ghost);
    assert.equal(server.hits, 2);
    // A second unknown kid within the interval does not refetch.
    clock.ms += 1_000;
    assertFails(await v.verify(await sign(rsa2, baseClaims(), { kid: 'another-ghost' })), 'RG_JWT_INVALID', /fetched less than/);
    assert.equal(server.hits, 2);
    // Known kids keep working meanwhile, from the cache.
    assertOk(await v.verify(await sign(ec)));
    assert.equal(server.hits, 2);
    clock.ms += 10_000;
    server.keys = [rsa.publicJwk, rsa2.publicJwk];
    assertOk(await v.verify(ghost));
    assert.equal(server.hits, 3);
  });

  test('JWKS server down (connection refused) → RG_JWKS_UNAVAILABLE', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const v = makeVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks` });
    const token = await sign(rsa);
    assertFails(await v.verify(token), 'RG_JWKS_UNAVAILABLE', /could not be fetched: .*ECONNREFUSED/, token);
    assert.equal(ERRORS.RG_JWKS_UNAVAILABLE.sqlstate, '08006');
    assert.equal(ERRORS.RG_JWT_INVALID.sqlstate, '28P01');
  });

  test('HTTP error, not JSON, not a JWK Set → RG_JWKS_UNAVAILABLE', async () => {
    const token = await sign(rsa);
    for (const [mode, message] of [['http-500', /HTTP 500/], ['not-json', /not JSON/], ['no-keys-array', /not a JWK Set/]] as const) {
      server.mode = mode;
      const v = makeVerifier();
      assertFails(await v.verify(token), 'RG_JWKS_UNAVAILABLE', message, token);
    }
  });

  test('a JWKS server that does not answer times out after jwksTimeoutMs', async () => {
    server.mode = 'hang';
    const v = makeVerifier({ jwksTimeoutMs: 200 });
    const started = Date.now();
    assertFails(await v.verify(await sign(rsa)), 'RG_JWKS_UNAVAILABLE', /did not answer within 200 ms/);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 150 && elapsed < 3000, `took ${elapsed} ms`);
  });

  test('after a failed fetch, logins fail fast until minRefreshIntervalMs has passed', async () => {
    server.mode = 'http-500';
    const v = makeVerifier({ minRefreshIntervalMs: 10_000 });
    assertFails(await v.verify(await sign(rsa)), 'RG_JWKS_UNAVAILABLE', /HTTP 500/);
    server.mode = 'ok';
    clock.ms += 5_000;
    assertFails(await v.verify(await sign(rsa)), 'RG_JWKS_UNAVAILABLE', /HTTP 500/);
    assert.equal(server.hits, 1);
    clock.ms += 5_000;
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 2);
  });

  test('expired keys keep working for one more jwksCacheMs while the identity provider is down, not longer', async () => {
    const v = makeVerifier({ jwksCacheMs: 60_000, minRefreshIntervalMs: 10_000 });
    assertOk(await v.verify(await sign(rsa)));
    server.mode = 'http-500';
    clock.ms += 61_000;
    assertOk(await v.verify(await sign(rsa))); // refresh failed, stale keys used
    assert.equal(server.hits, 2);
    clock.ms += 58_000; // 119 s old
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(server.hits, 3);
    clock.ms += 2_000; // 121 s old: too stale
    assertFails(await v.verify(await sign(rsa)), 'RG_JWKS_UNAVAILABLE', /HTTP 500/);
  });

  test('close() aborts a fetch in progress; verify after close fails', async () => {
    server.mode = 'hang';
    const v = makeVerifier({ jwksTimeoutMs: 30_000 });
    const pending = v.verify(await sign(rsa));
    while (server.hanging.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await v.close();
    assertFails(await pending, 'RG_JWKS_UNAVAILABLE', /closed/);
    assertFails(await v.verify(await sign(rsa)), 'RG_JWKS_UNAVAILABLE', /closed/);
  });

  test('an injected fetch is used (the seam for fakes)', async () => {
    let calls = 0;
    const fake: typeof undiciFetch = async (input, init) => {
      calls++;
      return undiciFetch(input, init);
    };
    const v = new JwtVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUrl: server.url }, { fetch: fake, now: () => clock.ms });
    verifiers.push(v);
    assertOk(await v.verify(await sign(rsa)));
    assert.equal(calls, 1);
  });
});
