// JWT / OIDC verification for client logins: the client sends a token as its
// cleartext password (accepted over TLS only; the session enforces that) and a
// valid token's identity claim becomes the identity, its claims
// `input.identity.claims` for the policy.
//
// Signature checking is jose's; the JWKS is fetched here with undici so that
// caching, timeouts, refetch-on-unknown-kid and its rate limit are ours:
//   - keys are cached for jwksCacheMs; concurrent logins share one fetch;
//   - a token whose kid no cached key matches triggers one refetch (picks up
//     keys rotated at the JWKS URL without a restart), at most one per
//     minRefreshIntervalMs, so unauthenticated clients cannot make us hammer
//     the identity provider with made-up kids;
//   - when a refresh of expired keys fails, the previous keys keep working
//     for one more jwksCacheMs (an identity-provider blip does not stop every
//     login), never longer;
//   - after a failed fetch, logins fail fast (no new fetch) until
//     minRefreshIntervalMs has passed.
// Only asymmetric algorithms are accepted: `none` and every HS* are refused
// before any key is looked at (RS/HS confusion: an HS256 token "signed" with
// the RSA public key as the HMAC secret), symmetric (kty "oct") JWKS members
// are dropped, and header-supplied keys (jwk, jku, x5u, x5c) are never used.
// Failure messages say which check failed and never echo the token or any
// value taken from it.

import { createLocalJWKSet, jwtVerify, type CryptoKey, type JWTPayload, type JWTVerifyOptions } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import { ASYMMETRIC_JWS_ALGORITHMS } from '../config/config.ts';
import { describeThrown, RolegateError } from '../errors.ts';

export interface JwtConfig {
  /** Exact `iss` the tokens must carry. */
  issuer: string;
  /** The token's `aud` must contain (one of) these. */
  audience: string | string[];
  /** http(s) URL of the identity provider's JWKS (e.g. the OIDC `jwks_uri`). */
  jwksUrl: string;
  /** Allowed `alg` values; asymmetric only. Default RS256, ES256, PS256, EdDSA. */
  algorithms?: string[];
  /** Tolerance for exp / nbf / iat, in seconds. Default 30. */
  clockSkewSec?: number;
  /** The claim holding the identity; must be a non-empty string. Default `sub`. */
  identityClaim?: string;
  /** How long fetched keys are used before a refetch. Default 600000. */
  jwksCacheMs?: number;
  /** Timeout of one JWKS fetch (connect, headers and body). Default 5000. */
  jwksTimeoutMs?: number;
  /** Least time between two fetches started by unknown kids or after a failure. Default 10000. */
  minRefreshIntervalMs?: number;
}

export const JWT_DEFAULTS = Object.freeze({
  algorithms: Object.freeze<string[]>(['RS256', 'ES256', 'PS256', 'EdDSA']),
  clockSkewSec: 30,
  identityClaim: 'sub',
  jwksCacheMs: 600_000,
  jwksTimeoutMs: 5000,
  minRefreshIntervalMs: 10_000,
});

export type JwtErrorCode = 'RG_JWT_INVALID' | 'RG_JWKS_UNAVAILABLE';

export type JwtVerifyResult =
  | { ok: true; identity: string; claims: Record<string, unknown> }
  | { ok: false; code: JwtErrorCode; message: string };

export interface JwtVerifierOptions {
  fetch?: typeof undiciFetch;
  /** Clock in ms since the epoch (Date.now): token times and cache ages. */
  now?: () => number;
}

/** A token longer than this is refused before any parsing (large Entra ID tokens are ~8 KB). */
export const MAX_TOKEN_CHARS = 32 * 1024;
/** A JWKS document larger than this is refused (real ones are a few KB). */
export const MAX_JWKS_BYTES = 1024 * 1024;
/** A JWKS with more members than this is refused: a token without kid is tried against each candidate. */
export const MAX_JWKS_KEYS = 100;

type KeySet = ReturnType<typeof createLocalJWKSet>;
type KeysOutcome = { ok: true; keys: KeySet } | { ok: false; message: string };
type VerifyOutcome = { kind: 'ok'; payload: JWTPayload } | { kind: 'no-key' } | { kind: 'failed'; result: JwtVerifyResult };

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const KNOWN_ALGORITHMS = new Set([...ASYMMETRIC_JWS_ALGORITHMS, 'HS256', 'HS384', 'HS512', 'none', 'ML-DSA-44', 'ML-DSA-65', 'ML-DSA-87']);
// C0 controls and DEL: an identity is logged and audited; it must print as itself.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export class JwtVerifier {
  private readonly issuer: string;
  private readonly audience: string[];
  private readonly jwksUrl: URL;
  private readonly algorithms: readonly string[];
  private readonly clockSkewSec: number;
  private readonly identityClaim: string;
  private readonly jwksCacheMs: number;
  private readonly jwksTimeoutMs: number;
  private readonly minRefreshIntervalMs: number;
  private readonly fetchFn: typeof undiciFetch;
  private readonly now: () => number;
  private readonly dispatcher: Agent;
  private readonly closing = new AbortController();
  private closed = false;

  private keys: { set: KeySet; fetchedAtMs: number } | null = null;
  /** When the last fetch started, and why it failed (null: it succeeded). */
  private lastAttemptMs = Number.NEGATIVE_INFINITY;
  private lastFailure: string | null = null;
  /** The fetch in progress: every caller waiting for keys shares it. */
  private inflight: Promise<KeysOutcome> | null = null;

  constructor(config: JwtConfig, options: JwtVerifierOptions = {}) {
    const problems: string[] = [];
    const issuer = config.issuer;
    if (typeof issuer !== 'string' || issuer === '') problems.push('issuer is required');
    const audience = typeof config.audience === 'string' ? [config.audience] : Array.isArray(config.audience) ? [...config.audience] : [];
    if (audience.length === 0 || audience.some((a) => typeof a !== 'string' || a === '')) problems.push('audience must be one or more non-empty strings');
    let jwksUrl: URL | null = null;
    try {
      jwksUrl = new URL(config.jwksUrl);
      if (jwksUrl.protocol !== 'https:' && jwksUrl.protocol !== 'http:') problems.push('jwks_url must be an http(s) URL');
    } catch {
      problems.push('jwks_url is not a URL');
    }
    const algorithms = config.algorithms ?? JWT_DEFAULTS.algorithms;
    if (algorithms.length === 0) problems.push('algorithms must not be empty');
    for (const alg of algorithms) {
      if (alg === 'none' || alg.startsWith('HS')) problems.push(`algorithm ${alg} is refused: only asymmetric signatures are accepted`);
      else if (!ASYMMETRIC_JWS_ALGORITHMS.includes(alg)) problems.push(`algorithm ${JSON.stringify(alg)} is not supported (use ${ASYMMETRIC_JWS_ALGORITHMS.join(', ')})`);
    }
    const number = (name: string, value: number | undefined, fallback: number, min: number): number => {
      const v = value ?? fallback;
      if (!Number.isFinite(v) || v < min) problems.push(`${name} must be a number >= ${min}`);
      return v;
    };
    const clockSkewSec = number('clockSkewSec', config.clockSkewSec, JWT_DEFAULTS.clockSkewSec, 0);
    const jwksCacheMs = number('jwksCacheMs', config.jwksCacheMs, JWT_DEFAULTS.jwksCacheMs, 0);
    const jwksTimeoutMs = number('jwksTimeoutMs', config.jwksTimeoutMs, JWT_DEFAULTS.jwksTimeoutMs, 1);
    const minRefreshIntervalMs = number('minRefreshIntervalMs', config.minRefreshIntervalMs, JWT_DEFAULTS.minRefreshIntervalMs, 0);
    const identityClaim = config.identityClaim ?? JWT_DEFAULTS.identityClaim;
    if (typeof identityClaim !== 'string' || identityClaim === '') problems.push('identityClaim must be a non-empty string');
    if (problems.length > 0 || jwksUrl === null) throw new RolegateError('RG_CONFIG_INVALID', `invalid JWT configuration: ${problems.join('; ')}`);

    this.issuer = issuer;
    this.audience = audience;
    this.jwksUrl = jwksUrl;
    this.algorithms = Object.freeze([...algorithms]);
    this.clockSkewSec = clockSkewSec;
    this.identityClaim = identityClaim;
    this.jwksCacheMs = jwksCacheMs;
    this.jwksTimeoutMs = jwksTimeoutMs;
    this.minRefreshIntervalMs = minRefreshIntervalMs;
    this.fetchFn = options.fetch ?? undiciFetch;
    this.now = options.now ?? Date.now;
    this.dispatcher = new Agent({ connect: { timeout: jwksTimeoutMs }, headersTimeout: jwksTimeoutMs, bodyTimeout: jwksTimeoutMs });
  }

  async verify(token: string): Promise<JwtVerifyResult> {
    if (this.closed) return unavailable('the JWT verifier is closed');
    const shapeProblem = this.checkShape(token);
    if (shapeProblem !== null) return invalid(shapeProblem);

    const current = await this.currentKeys();
    if (!current.ok) return unavailable(current.message);
    let outcome = await this.verifyWith(current.keys, token);
    if (outcome.kind === 'no-key') {
      // Perhaps the keys were rotated: refetch once, unless one was just done.
      const refreshed = await this.refreshForUnknownKey();
      if (refreshed === 'rate-limited') {
        return invalid(`no JWKS key matches the token's kid and algorithm (keys were fetched less than ${this.minRefreshIntervalMs} ms ago)`);
      }
      if (!refreshed.ok) return unavailable(refreshed.message);
      outcome = await this.verifyWith(refreshed.keys, token);
      if (outcome.kind === 'no-key') return invalid("no JWKS key matches the token's kid and algorithm, also after refetching the JWKS");
    }
    if (outcome.kind === 'failed') return outcome.result;
    return this.checkClaims(outcome.payload);
  }

  /** Stop: abort a JWKS fetch in progress and release its connections. Later verify() calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closing.abort(new RolegateError('RG_JWKS_UNAVAILABLE', 'the JWT verifier was closed'));
    await this.dispatcher.destroy();
  }

  // ---------------------------------------------------------------- token checks

  /** Cheap structural checks, before any key is fetched or looked at. */
  private checkShape(token: string): string | null {
    if (typeof token !== 'string' || token === '') return 'empty token';
    if (token.length > MAX_TOKEN_CHARS) return `token longer than ${MAX_TOKEN_CHARS} characters`;
    const parts = token.split('.');
    if (parts.length === 5) return 'encrypted tokens (JWE) are not accepted; send a signed JWT';
    if (parts.length !== 3) return 'malformed token: a JWT has three dot-separated base64url parts';
    const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
    if (!BASE64URL.test(headerPart) || !BASE64URL.test(payloadPart)) return 'malformed token: header or payload is not base64url';
    let header: unknown;
    try {
      header = JSON.parse(Buffer.from(headerPart, 'base64url').toString('utf8'));
    } catch {
      return 'malformed token: the header is not JSON';
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) return 'malformed token: the header is not a JSON object';
    const alg = (header as Record<string, unknown>).alg;
    if (typeof alg !== 'string' || alg === '') return 'malformed token: the header has no alg';
    if (alg.toLowerCase() === 'none') return 'unsigned token (alg "none") refused';
    if (alg.startsWith('HS')) return `${alg === 'HS256' || alg === 'HS384' || alg === 'HS512' ? alg : 'HMAC'} token refused: only asymmetric signatures from the identity provider are accepted`;
    if (!this.algorithms.includes(alg)) {
      const shown = KNOWN_ALGORITHMS.has(alg) ? `algorithm ${alg}` : 'the token algorithm';
      return `${shown} is not allowed (allowed: ${this.algorithms.join(', ')})`;
    }
    if (signaturePart === '' || !BASE64URL.test(signaturePart)) return 'malformed token: missing or non-base64url signature';
    return null;
  }

  private verifyOptions(): JWTVerifyOptions {
    return {
      algorithms: [...this.algorithms],
      issuer: this.issuer,
      audience: this.audience,
      clockTolerance: this.clockSkewSec,
      currentDate: new Date(this.now()),
      requiredClaims: ['exp'],
    };
  }

  private async verifyWith(keys: KeySet, token: string): Promise<VerifyOutcome> {
    const options = this.verifyOptions();
    try {
      const { payload } = await jwtVerify(token, keys, options);
      return { kind: 'ok', payload };
    } catch (err) {
      const code = joseCode(err);
      if (code === 'ERR_JWKS_NO_MATCHING_KEY') return { kind: 'no-key' };
      if (code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS' || !isAsyncIterable(err)) return { kind: 'failed', result: mapJoseError(err) };
      // No kid (or a shared one): jose hands back every candidate key; the
      // signature decides. Bounded by MAX_JWKS_KEYS.
      let last: unknown = err;
      for await (const key of err) {
        try {
          const { payload } = await jwtVerify(token, key as CryptoKey, options);
          return { kind: 'ok', payload };
        } catch (attempt) {
          last = attempt;
          if (joseCode(attempt) !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') break;
        }
      }
      return { kind: 'failed', result: mapJoseError(last === err ? signatureFailed() : last) };
    }
  }

  private checkClaims(payload: JWTPayload): JwtVerifyResult {
    const nowSec = Math.floor(this.now() / 1000);
    // jose checks iat only with maxTokenAge; a token issued in the future is a clock or forgery problem.
    if (payload.iat !== undefined && payload.iat > nowSec + this.clockSkewSec) return invalid('token issued in the future (iat is ahead of the clock beyond the allowed skew)');
    const claims = payload as Record<string, unknown>;
    const identity = Object.hasOwn(claims, this.identityClaim) ? claims[this.identityClaim] : undefined;
    if (identity === undefined) return invalid(`token has no "${this.identityClaim}" claim (the identity)`);
    if (typeof identity !== 'string' || identity === '') return invalid(`token's "${this.identityClaim}" claim (the identity) is not a non-empty string`);
    if (CONTROL_CHARS.test(identity)) return invalid(`token's "${this.identityClaim}" claim (the identity) contains control characters`);
    return { ok: true, identity, claims };
  }

  // ---------------------------------------------------------------- JWKS

  /** Keys for a verification: cached, refetched when expired, stale ones while a refetch fails. */
  private async currentKeys(): Promise<KeysOutcome> {
    const now = this.now();
    if (this.keys !== null && now - this.keys.fetchedAtMs < this.jwksCacheMs) return { ok: true, keys: this.keys.set };
    let outcome: KeysOutcome;
    if (this.inflight !== null) outcome = await this.inflight;
    else if (now - this.lastAttemptMs < this.minRefreshIntervalMs && this.lastFailure !== null) outcome = { ok: false, message: this.lastFailure };
    else outcome = await this.fetchKeys();
    if (outcome.ok) return outcome;
    const stale = this.keys;
    if (stale !== null && this.now() - stale.fetchedAtMs < 2 * this.jwksCacheMs) return { ok: true, keys: stale.set };
    return outcome;
  }

  private async refreshForUnknownKey(): Promise<KeysOutcome | 'rate-limited'> {
    if (this.inflight !== null) return this.inflight;
    if (this.now() - this.lastAttemptMs < this.minRefreshIntervalMs) return 'rate-limited';
    return this.fetchKeys();
  }

  private fetchKeys(): Promise<KeysOutcome> {
    if (this.inflight !== null) return this.inflight;
    this.lastAttemptMs = this.now();
    const pending = this.download()
      .catch((err: unknown): KeysOutcome => ({ ok: false, message: `JWKS fetch failed: ${describeThrown(err)}` }))
      .then((outcome) => {
        if (outcome.ok) {
          this.keys = { set: outcome.keys, fetchedAtMs: this.now() };
          this.lastFailure = null;
        } else {
          this.lastFailure = outcome.message;
        }
        this.inflight = null;
        return outcome;
      });
    this.inflight = pending;
    return pending;
  }

  private async download(): Promise<KeysOutcome> {
    const where = `JWKS at ${this.jwksUrl.origin}${this.jwksUrl.pathname}`;
    const signal = AbortSignal.any([this.closing.signal, AbortSignal.timeout(this.jwksTimeoutMs)]);
    let text: string;
    try {
      const response = await this.fetchFn(this.jwksUrl, {
        signal,
        dispatcher: this.dispatcher,
        headers: { accept: 'application/jwk-set+json, application/json' },
      });
      if (response.status !== 200) {
        await response.body?.cancel().catch(() => undefined);
        return { ok: false, message: `${where} answered HTTP ${response.status}` };
      }
      const declared = Number(response.headers.get('content-length') ?? '0');
      if (declared > MAX_JWKS_BYTES) {
        await response.body?.cancel().catch(() => undefined);
        return { ok: false, message: `${where} is larger than ${MAX_JWKS_BYTES} bytes` };
      }
      const body = await readCapped(response.body, MAX_JWKS_BYTES);
      if (body === null) return { ok: false, message: `${where} is larger than ${MAX_JWKS_BYTES} bytes` };
      text = body;
    } catch (err) {
      if (this.closed) return { ok: false, message: 'the JWT verifier was closed' };
      if (signal.aborted) return { ok: false, message: `${where} did not answer within ${this.jwksTimeoutMs} ms` };
      return { ok: false, message: `${where} could not be fetched: ${fetchErrorText(err)}` };
    }
    return parseJwks(text, where);
  }
}

// ---------------------------------------------------------------- helpers

function invalid(message: string): JwtVerifyResult {
  return { ok: false, code: 'RG_JWT_INVALID', message };
}

function unavailable(message: string): JwtVerifyResult {
  return { ok: false, code: 'RG_JWKS_UNAVAILABLE', message };
}

function signatureFailed(): { code: string } {
  return { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' };
}

function joseCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

/** jose's failure → our message. jose's own texts are not used: some carry header values from the token. */
function mapJoseError(err: unknown): JwtVerifyResult {
  const code = joseCode(err);
  const claim = typeof err === 'object' && err !== null ? (err as { claim?: unknown }).claim : undefined;
  const reason = typeof err === 'object' && err !== null ? (err as { reason?: unknown }).reason : undefined;
  switch (code) {
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return invalid('token signature verification failed');
    case 'ERR_JWT_EXPIRED':
      return invalid('token expired (exp is in the past beyond the allowed clock skew)');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return invalid(claimMessage(claim, reason));
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return invalid('token algorithm is not allowed');
    case 'ERR_JOSE_NOT_SUPPORTED':
      return invalid('token uses an algorithm, key type or critical header parameter (crit) that is not supported');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return invalid('malformed token: not a valid signed JWT (header, payload or critical parameters)');
    case 'ERR_JWK_INVALID':
    case 'ERR_JWKS_INVALID':
      return unavailable('the JWKS key for this token could not be used (malformed or not a public key)');
    default:
      // e.g. jose's TypeError for an RSA key under 2048 bits.
      return invalid('token could not be verified with the JWKS key (key unusable for this algorithm)');
  }
}

function claimMessage(claim: unknown, reason: unknown): string {
  switch (claim) {
    case 'iss':
      return reason === 'missing' ? 'token has no issuer (iss) claim' : 'token issuer (iss) does not match the configured issuer';
    case 'aud':
      return reason === 'missing' ? 'token has no audience (aud) claim' : 'token audience (aud) does not include the configured audience';
    case 'exp':
      return reason === 'missing' ? 'token has no expiry (exp) claim' : 'token expiry (exp) is not a number';
    case 'nbf':
      return reason === 'check_failed' ? 'token not valid yet (nbf is in the future beyond the allowed clock skew)' : 'token not-before (nbf) is not a number';
    case 'iat':
      return 'token issued-at (iat) is not a number';
    default:
      return 'token claims failed validation';
  }
}

async function readCapped(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<string | null> {
  if (body === null) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > maxBytes) {
      await body.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total).toString('utf8');
}

function fetchErrorText(err: unknown): string {
  // undici: TypeError('fetch failed') with the socket error (ECONNREFUSED, …) as its cause.
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause !== undefined) {
    const code = joseCode(cause);
    return code === undefined ? describeThrown(cause) : `${code} ${describeThrown(cause)}`.trim();
  }
  return describeThrown(err);
}

function parseJwks(text: string, where: string): KeysOutcome {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { ok: false, message: `${where} is not JSON` };
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
    return { ok: false, message: `${where} is not a JWK Set (no "keys" array)` };
  }
  const members = (doc as { keys: unknown[] }).keys;
  if (members.length > MAX_JWKS_KEYS) return { ok: false, message: `${where} has more than ${MAX_JWKS_KEYS} keys` };
  // Symmetric keys never verify anything here (HS* is refused), and a key with
  // private parts would be a leak we should not use.
  const usable = members.filter((k) => typeof k === 'object' && k !== null && (k as { kty?: unknown }).kty !== 'oct' && !Object.hasOwn(k, 'd'));
  try {
    return { ok: true, keys: createLocalJWKSet({ keys: usable as Parameters<typeof createLocalJWKSet>[0]['keys'] }) };
  } catch {
    return { ok: false, message: `${where} is a malformed JWK Set` };
  }
}
