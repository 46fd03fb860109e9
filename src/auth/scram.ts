// SCRAM-SHA-256 (RFC 5802, RFC 7677) for both legs, as state machines with no
// I/O: the session layer moves the bytes of SASLInitialResponse / SASLResponse
// (client leg) and AuthenticationSASLContinue / AuthenticationSASLFinal
// (upstream leg) in and out.
//
// The server side follows PostgreSQL's src/backend/libpq/auth-scram.c; the
// client side follows libpq's fe-auth-scram.c. Messages are handled as
// latin1 strings: one char per byte, so AuthMessage is rebuilt from the exact
// bytes the peer sent, whatever they are.
//
// Channel binding (SCRAM-SHA-256-PLUS) waits for TLS: the server never offers
// it and refuses clients that ask for it; the client always sends gs2 flag 'n'.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { RolegateError } from '../errors.ts';
import {
  SCRAM_DEFAULT_ITERATIONS,
  SCRAM_DEFAULT_SALT_BYTES,
  SCRAM_KEY_BYTES,
  SCRAM_MECHANISM,
  decodeBase64Strict,
  deriveScramKeys,
  hmacSha256,
  isValidIterations,
  preparePassword,
  sha256,
  type ScramKeys,
  type ScramVerifier,
} from './verifier.ts';

// The verifier API is part of this module's surface: callers import SCRAM from one place.
export { createScramVerifier, formatScramVerifier, parseScramVerifier, saslprep, type ScramKeys, type ScramVerifier } from './verifier.ts';

/** PostgreSQL's SCRAM_RAW_NONCE_LEN: both sides send 18 random bytes, base64 (24 chars). */
const RAW_NONCE_BYTES = 18;

// ---------------------------------------------------------------------------
// Server side (client leg)
// ---------------------------------------------------------------------------

export type ScramFailureCode = 'RG_AUTH_FAILED' | 'RG_PROTOCOL_VIOLATION' | 'RG_AUTH_METHOD';

export interface ScramFailure {
  ok: false;
  code: ScramFailureCode;
  message: string;
}

export type ScramServerFirstResult = { ok: true; serverFirst: Buffer } | ScramFailure;
export type ScramServerFinalResult = { ok: true; serverFinal: Buffer } | ScramFailure;

export interface ScramServerOptions {
  /** Per-proxy secret (≥ 16 bytes): the mock salt is HMAC(mockSeed, userName), stable per user name. */
  mockSeed: Buffer;
  /** The user name from the StartupMessage; the SCRAM "n=" attribute is ignored, as in PostgreSQL. */
  userName: string;
  /** TLS later: becomes the tls-server-end-point data, and 'y' from the client must then fail. */
  channelBinding: null;
  /** Iterations the mock exchange announces; match the deployment's verifiers. Default 4096. */
  mockIterations?: number;
  /** Fixed server nonce, for test vectors only. Default: 18 random bytes, base64. */
  nonce?: string;
}

type ServerState = 'awaitingClientFirst' | 'awaitingClientFinal' | 'done' | 'failed';

/**
 * One SCRAM-SHA-256 exchange with a client. With a null verifier (unknown
 * user, or a role whose password is not a SCRAM verifier) it runs a mock
 * exchange: fake but stable salt, the usual iteration count, the same
 * computations, and at the end the same failure as a wrong password.
 */
export class ScramServerExchange {
  #state: ServerState = 'awaitingClientFirst';
  readonly #verifier: ScramVerifier;
  /** Mock exchange: fails at the final step whatever the proof (PostgreSQL's state->doomed). */
  readonly #doomed: boolean;
  readonly #userName: string;
  readonly #serverNonce: string;
  #gs2Header = '';
  #clientNonce = '';
  #clientFirstBare = '';
  #serverFirst = '';

  constructor(verifier: ScramVerifier | null, options: ScramServerOptions) {
    if (options.mockSeed.length < 16) throw new RolegateError('RG_INTERNAL', 'SCRAM mockSeed must be at least 16 bytes');
    const nonce = options.nonce ?? randomBytes(RAW_NONCE_BYTES).toString('base64');
    if (!isPrintableNonce(nonce)) throw new RolegateError('RG_INTERNAL', 'SCRAM server nonce must be printable ASCII without ","');
    this.#userName = options.userName;
    this.#serverNonce = nonce;
    if (verifier !== null) {
      this.#verifier = verifier;
      this.#doomed = false;
    } else {
      const iterations = options.mockIterations ?? SCRAM_DEFAULT_ITERATIONS;
      if (!isValidIterations(iterations)) throw new RolegateError('RG_INTERNAL', `invalid SCRAM mockIterations ${iterations}`);
      // Random keys: nobody can produce a proof for them, and #doomed makes sure.
      this.#verifier = {
        iterations,
        salt: mockSalt(options.mockSeed, options.userName),
        storedKey: randomBytes(SCRAM_KEY_BYTES),
        serverKey: randomBytes(SCRAM_KEY_BYTES),
      };
      this.#doomed = true;
    }
  }

  /** SASLInitialResponse: the selected mechanism and client-first-message. */
  handleClientFirst(mechanism: string, data: Buffer): ScramServerFirstResult {
    if (this.#state !== 'awaitingClientFirst') return this.#fail('RG_PROTOCOL_VIOLATION', `unexpected SASLInitialResponse: SCRAM exchange is ${this.#state}`);
    this.#state = 'failed'; // until this message is fully accepted

    if (mechanism !== SCRAM_MECHANISM) {
      return this.#fail(
        'RG_AUTH_METHOD',
        mechanism === `${SCRAM_MECHANISM}-PLUS`
          ? 'client selected SCRAM-SHA-256-PLUS, but channel binding is not offered (rolegate does not support it without TLS)'
          : `client selected an invalid SASL authentication mechanism "${printable(mechanism)}"`,
      );
    }
    const text = messageText(data);
    if (text === null) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('the message is empty or contains a NUL byte'));

    // client-first-message = gs2-header client-first-message-bare
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    const fields = text.split(',');
    const [cbindFlag = '', authzid, ...bare] = fields;
    if (authzid === undefined) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('truncated gs2 header'));
    switch (cbindFlag) {
      case 'n': // client does not support channel binding
      case 'y': // client supports it but thinks the server does not: true for now (RFC 5802 §6)
        break;
      default:
        if (cbindFlag.startsWith('p')) {
          return this.#fail(
            'RG_PROTOCOL_VIOLATION',
            malformed('the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data (gs2 flag "p"); rolegate does not support channel binding'),
          );
        }
        return this.#fail('RG_PROTOCOL_VIOLATION', malformed(`unexpected channel-binding flag "${printable(cbindFlag)}"`));
    }
    if (authzid.startsWith('a')) return this.#fail('RG_AUTH_METHOD', 'client uses authorization identity, but it is not supported');
    if (authzid !== '') return this.#fail('RG_PROTOCOL_VIOLATION', malformed(`unexpected attribute "${printable(authzid)}" in gs2 header`));

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    const [userField, nonceField, ...extensions] = bare;
    if (userField?.startsWith('m') === true) return this.#fail('RG_AUTH_METHOD', 'client requires an unsupported SCRAM extension');
    // The user name is ignored: PostgreSQL uses the StartupMessage's (libpq sends "n=").
    const userError = expectAttribute(userField, 'n');
    if (userError !== null) return this.#fail('RG_PROTOCOL_VIOLATION', userError);
    const nonceError = expectAttribute(nonceField, 'r');
    if (nonceError !== null) return this.#fail('RG_PROTOCOL_VIOLATION', nonceError);
    const clientNonce = (nonceField ?? '').slice(2);
    if (!isPrintableNonce(clientNonce)) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('the client nonce is empty or has non-printable characters'));
    // Optional extensions are ignored, as PostgreSQL does; they must still be attributes.
    for (const extension of extensions) {
      const error = expectAnyAttribute(extension);
      if (error !== null) return this.#fail('RG_PROTOCOL_VIOLATION', error);
    }

    this.#gs2Header = `${cbindFlag},,`;
    this.#clientNonce = clientNonce;
    this.#clientFirstBare = text.slice(this.#gs2Header.length);
    const { iterations, salt } = this.#verifier;
    this.#serverFirst = `r=${clientNonce}${this.#serverNonce},s=${salt.toString('base64')},i=${iterations}`;
    this.#state = 'awaitingClientFinal';
    return { ok: true, serverFirst: Buffer.from(this.#serverFirst, 'latin1') };
  }

  /** SASLResponse: client-final-message. Success carries server-final-message for AuthenticationSASLFinal. */
  handleClientFinal(data: Buffer): ScramServerFinalResult {
    if (this.#state !== 'awaitingClientFinal') return this.#fail('RG_PROTOCOL_VIOLATION', `unexpected SASLResponse: SCRAM exchange is ${this.#state}`);
    this.#state = 'failed';

    const text = messageText(data);
    if (text === null) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('the message is empty or contains a NUL byte'));

    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    const fields = text.split(',');
    const [bindingField, nonceField] = fields;
    const bindingError = expectAttribute(bindingField, 'c');
    if (bindingError !== null) return this.#fail('RG_PROTOCOL_VIOLATION', bindingError);
    // Without channel binding, c= repeats the gs2 header: "biws" for "n,,", "eSws" for "y,,".
    if ((bindingField ?? '').slice(2) !== Buffer.from(this.#gs2Header, 'latin1').toString('base64')) {
      return this.#fail('RG_PROTOCOL_VIOLATION', 'unexpected SCRAM channel-binding attribute in client-final-message');
    }
    const nonceError = expectAttribute(nonceField, 'r');
    if (nonceError !== null) return this.#fail('RG_PROTOCOL_VIOLATION', nonceError);
    // Extensions are skipped up to the proof, which must be the last attribute.
    let proofIndex = 2;
    for (; proofIndex < fields.length; proofIndex++) {
      const field = fields[proofIndex];
      const error = expectAnyAttribute(field);
      if (error !== null) return this.#fail('RG_PROTOCOL_VIOLATION', error);
      if (field?.startsWith('p=') === true) break;
    }
    if (proofIndex >= fields.length) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('client-final-message has no proof'));
    if (proofIndex !== fields.length - 1) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('garbage found at the end of client-final-message'));
    const proof = decodeBase64Strict((fields[proofIndex] ?? '').slice(2));
    if (proof === null || proof.length !== SCRAM_KEY_BYTES) return this.#fail('RG_PROTOCOL_VIOLATION', malformed('malformed proof in client-final-message'));

    if ((nonceField ?? '').slice(2) !== this.#clientNonce + this.#serverNonce) {
      return this.#fail('RG_PROTOCOL_VIOLATION', 'invalid SCRAM response: nonce does not match');
    }

    // Computed in the mock exchange too, so timing does not tell whether the role exists.
    const withoutProof = fields.slice(0, proofIndex).join(',');
    const authMessage = Buffer.from(`${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`, 'latin1');
    const clientSignature = hmacSha256(this.#verifier.storedKey, authMessage);
    for (let i = 0; i < SCRAM_KEY_BYTES; i++) clientSignature[i] = (clientSignature[i] ?? 0) ^ (proof[i] ?? 0);
    const proofMatches = timingSafeEqual(sha256(clientSignature), this.#verifier.storedKey);
    if (!proofMatches || this.#doomed) {
      // One message for a wrong password and an unknown user: no user enumeration.
      return this.#fail('RG_AUTH_FAILED', `password authentication failed for user "${this.#userName}"`);
    }

    this.#state = 'done';
    const serverSignature = hmacSha256(this.#verifier.serverKey, authMessage);
    return { ok: true, serverFinal: Buffer.from(`v=${serverSignature.toString('base64')}`, 'latin1') };
  }

  #fail(code: ScramFailureCode, message: string): ScramFailure {
    this.#state = 'failed';
    return { ok: false, code, message };
  }
}

/** PostgreSQL hashes the user name with a per-cluster nonce; we key an HMAC with the proxy's mock seed. */
function mockSalt(mockSeed: Buffer, userName: string): Buffer {
  return createHmac('sha256', mockSeed).update(userName, 'utf8').digest().subarray(0, SCRAM_DEFAULT_SALT_BYTES);
}

// ---------------------------------------------------------------------------
// Client side (upstream leg)
// ---------------------------------------------------------------------------

/**
 * Keys derived from (password, salt, iterations), shared between upstream
 * connects: the upstream keeps one verifier per role, so every connect after
 * the first skips PBKDF2. The exchange keys it on a digest (never the password
 * itself) and keeps it bounded (least recently used entry evicted beyond
 * SCRAM_KEY_CACHE_MAX_ENTRIES). Entries are password equivalents: keep the map
 * in the worker that owns the upstream credentials.
 */
export type SaltedPasswordCache = Map<string, ScramKeys>;

export const SCRAM_KEY_CACHE_MAX_ENTRIES = 64;

function cachedScramKeys(cache: SaltedPasswordCache, preparedPassword: Buffer, salt: Buffer, iterations: number): ScramKeys {
  const key = `${iterations}:${salt.toString('base64')}:${sha256(preparedPassword).toString('base64')}`;
  const cached = cache.get(key);
  if (cached !== undefined) {
    cache.delete(key); // Map iterates in insertion order: re-inserting marks it most recently used
    cache.set(key, cached);
    return cached;
  }
  const keys = deriveScramKeys(preparedPassword, salt, iterations);
  cache.set(key, keys);
  for (const oldest of cache.keys()) {
    if (cache.size <= SCRAM_KEY_CACHE_MAX_ENTRIES) break;
    cache.delete(oldest);
  }
  return keys;
}

export interface ScramClientOptions {
  /**
   * Refuse a server-first-message above this iteration count: PBKDF2 runs
   * synchronously, so a hostile upstream could stall the worker (1,000,000 measured at 140 ms). Default 1,000,000.
   */
  maxIterations?: number;
  /** Sent as "n="; PostgreSQL ignores it and libpq sends it empty. Default ''. */
  userName?: string;
  /** Fixed client nonce, for test vectors only. Default: 18 random bytes, base64. */
  nonce?: string;
}

const DEFAULT_MAX_CLIENT_ITERATIONS = 1_000_000;

type ClientState = 'initial' | 'awaitingServerFirst' | 'awaitingServerFinal' | 'done' | 'failed';

/** One SCRAM-SHA-256 exchange with the upstream server, as libpq runs it without channel binding. */
export class ScramClientExchange {
  #state: ClientState = 'initial';
  readonly #password: Buffer;
  readonly #clientNonce: string;
  readonly #userName: string;
  readonly #keyCache: SaltedPasswordCache | undefined;
  readonly #maxIterations: number;
  #clientFirstBare = '';
  #expectedServerSignature: Buffer | null = null;

  constructor(password: string, keyCache?: SaltedPasswordCache, options?: ScramClientOptions) {
    this.#password = preparePassword(password);
    const nonce = options?.nonce ?? randomBytes(RAW_NONCE_BYTES).toString('base64');
    if (!isPrintableNonce(nonce)) throw new RolegateError('RG_INTERNAL', 'SCRAM client nonce must be printable ASCII without ","');
    this.#clientNonce = nonce;
    this.#userName = options?.userName ?? '';
    this.#keyCache = keyCache;
    this.#maxIterations = options?.maxIterations ?? DEFAULT_MAX_CLIENT_ITERATIONS;
  }

  /** True once the server's signature has been verified: only then is AuthenticationOk to be trusted. */
  get complete(): boolean {
    return this.#state === 'done';
  }

  /** The SASLInitialResponse contents. */
  clientFirst(): { mechanism: 'SCRAM-SHA-256'; data: Buffer } {
    if (this.#state !== 'initial') throw new RolegateError('RG_INTERNAL', 'SCRAM clientFirst() called twice');
    this.#state = 'awaitingServerFirst';
    this.#clientFirstBare = `n=${saslName(this.#userName)},r=${this.#clientNonce}`;
    return { mechanism: SCRAM_MECHANISM, data: Buffer.from(`n,,${this.#clientFirstBare}`, 'utf8') };
  }

  /** AuthenticationSASLContinue's server-first-message → client-final-message for SASLResponse. */
  handleServerFirst(data: Buffer): Buffer {
    this.#expectState('awaitingServerFirst', 'AuthenticationSASLContinue');
    this.#state = 'failed'; // until accepted
    const text = messageText(data);
    if (text === null) throw upstreamError('the server-first-message is empty or contains a NUL byte');

    // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
    // libpq accepts exactly r, s, i: so do we.
    const fields = text.split(',');
    const [nonceField, saltField, iterationsField] = fields;
    for (const [field, name] of [[nonceField, 'r'], [saltField, 's'], [iterationsField, 'i']] as const) {
      const error = expectAttribute(field, name);
      if (error !== null) throw upstreamError(error);
    }
    if (fields.length > 3) throw upstreamError(malformed('garbage at end of server-first-message'));
    const nonce = (nonceField ?? '').slice(2);
    if (!nonce.startsWith(this.#clientNonce) || nonce.length === this.#clientNonce.length || !isPrintableNonce(nonce)) {
      throw upstreamError('invalid SCRAM response (nonce mismatch)');
    }
    const salt = decodeBase64Strict((saltField ?? '').slice(2));
    if (salt === null || salt.length === 0) throw upstreamError(malformed('invalid salt'));
    const iterationsText = (iterationsField ?? '').slice(2);
    const iterations = /^[0-9]{1,10}$/.test(iterationsText) ? Number(iterationsText) : Number.NaN;
    if (!isValidIterations(iterations)) throw upstreamError(malformed('invalid iteration count'));
    if (iterations > this.#maxIterations) {
      throw upstreamError(`the upstream server asks for ${iterations} SCRAM iterations, above the limit of ${this.#maxIterations}`);
    }

    const keys =
      this.#keyCache === undefined
        ? deriveScramKeys(this.#password, salt, iterations)
        : cachedScramKeys(this.#keyCache, this.#password, salt, iterations);
    const withoutProof = `c=biws,r=${nonce}`; // "biws" = base64("n,,")
    const authMessage = Buffer.concat([Buffer.from(`${this.#clientFirstBare},`, 'utf8'), data, Buffer.from(`,${withoutProof}`, 'latin1')]);
    const proof = hmacSha256(keys.storedKey, authMessage);
    for (let i = 0; i < SCRAM_KEY_BYTES; i++) proof[i] = (proof[i] ?? 0) ^ (keys.clientKey[i] ?? 0);
    this.#expectedServerSignature = hmacSha256(keys.serverKey, authMessage);
    this.#state = 'awaitingServerFinal';
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'latin1');
  }

  /** AuthenticationSASLFinal's server-final-message: throws RG_UPSTREAM_AUTH unless the server proved it knows the verifier. */
  verifyServerFinal(data: Buffer): void {
    this.#expectState('awaitingServerFinal', 'AuthenticationSASLFinal');
    this.#state = 'failed';
    const text = messageText(data);
    if (text === null) throw upstreamError('the server-final-message is empty or contains a NUL byte');

    // server-final-message = (server-error / verifier) ["," extensions]
    if (text.startsWith('e=')) throw upstreamError(`error received from server in SCRAM exchange: ${printable(text.slice(2))}`);
    const fields = text.split(',');
    const [verifierField] = fields;
    const error = expectAttribute(verifierField, 'v');
    if (error !== null) throw upstreamError(error);
    if (fields.length > 1) throw upstreamError(malformed('garbage at end of server-final-message'));
    const signature = decodeBase64Strict((verifierField ?? '').slice(2));
    if (signature === null || signature.length !== SCRAM_KEY_BYTES) throw upstreamError(malformed('invalid server signature'));
    const expected = this.#expectedServerSignature;
    if (expected === null || !timingSafeEqual(signature, expected)) throw upstreamError('incorrect server signature');
    this.#state = 'done';
  }

  #expectState(state: ClientState, message: string): void {
    if (this.#state !== state) {
      const current = this.#state;
      this.#state = 'failed';
      throw upstreamError(`unexpected ${message}: SCRAM exchange is ${current}`);
    }
  }
}

function upstreamError(message: string): RolegateError {
  return new RolegateError('RG_UPSTREAM_AUTH', `the proxy could not authenticate to the upstream database: ${message}`);
}

// ---------------------------------------------------------------------------
// Shared parsing
// ---------------------------------------------------------------------------

/** The message as one char per byte, or null if empty or holding a NUL (PostgreSQL reads C strings). */
function messageText(data: Buffer): string | null {
  if (data.length === 0 || data.includes(0)) return null;
  return data.toString('latin1');
}

function malformed(detail: string): string {
  return `malformed SCRAM message: ${detail}`;
}

/** null if `field` is `<name>=<value>`, else the message PostgreSQL's read_attr_value gives. */
function expectAttribute(field: string | undefined, name: string): string | null {
  if (field === undefined || field === '') return malformed(`expected attribute "${name}" but found end of message`);
  if (field[0] !== name) return malformed(`expected attribute "${name}" but found "${printable(field.slice(0, 1))}"`);
  if (field[1] !== '=') return malformed(`expected character "=" for attribute "${name}"`);
  return null;
}

/** attr-val = ALPHA "=" value (PostgreSQL's read_any_attr). */
function expectAnyAttribute(field: string | undefined): string | null {
  if (field === undefined || field === '') return malformed('attribute expected, but found end of message');
  if (!/^[A-Za-z]=/.test(field)) return malformed(`attribute expected, but found "${printable(field.slice(0, 2))}"`);
  return null;
}

/** printable = %x21-2B / %x2D-7E (RFC 5802 §7): no ',' and no space. */
function isPrintableNonce(nonce: string): boolean {
  return /^[\x21-\x2b\x2d-\x7e]+$/.test(nonce);
}

/** RFC 5802 saslname: ',' and '=' escaped. */
function saslName(name: string): string {
  return name.replaceAll('=', '=3D').replaceAll(',', '=2C');
}

/** Peer text quoted in messages: capped, and anything but printable ASCII escaped (as PostgreSQL's sanitize_str). */
function printable(text: string): string {
  const escaped = text.slice(0, 64).replace(/[^\x20-\x7e]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return text.length > 64 ? `${escaped}...` : escaped;
}
