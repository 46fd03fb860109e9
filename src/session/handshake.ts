// The client side of a connection before it is proven: the PROXY header of a
// trusted load balancer, the startup packets ("Start-up" in the protocol's
// message flow: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage),
// TLS, and authentication (SCRAM-SHA-256, a verified client certificate, or a
// JWT as the password over TLS). It ends with an identity, or with a FATAL.
//
// Phases:  proxy-header → startup ⇄ tls-handshake → sasl-initial → sasl-final
//                                                 → password → authenticating
// The handshake touches no socket: it writes through HandshakeIo, and the
// session swaps the socket when TLS starts.

import { ScramServerExchange, parseScramVerifier } from '../auth/scram.ts';
import type { JwtVerifier } from '../auth/jwt.ts';
import { certIdentity, type TlsInfo } from '../auth/client-cert.ts';
import type { Config } from '../config/config.ts';
import type { ErrorCode } from '../errors.ts';
import type { IdentityInput } from '../policy/contract.ts';
import * as be from '../protocol/backend.ts';
import { Frontend } from '../protocol/constants.ts';
import { FrameEvent, Framer } from '../protocol/framer.ts';
import * as fe from '../protocol/frontend.ts';
import { parseProxyHeader } from '../protocol/proxy-protocol.ts';
import type { BufferBudget } from '../protocol/buffer-budget.ts';
import { PARSER_SETTINGS, isUtf8Name } from '../sql/guarded-effects.ts';
import { parseOptions } from './startup-options.ts';
import type { SessionLog } from './session-host.ts';

export type HandshakePhase = 'proxy-header' | 'startup' | 'tls-handshake' | 'sasl-initial' | 'sasl-final' | 'password' | 'authenticating' | 'done';

/** What the worker provides to a handshake. */
export interface HandshakeHost {
  readonly config: Config;
  /** Per-process secret that makes mock SCRAM salts stable per unknown user name. */
  readonly mockSeed: Buffer;
  readonly log: SessionLog;
  /** Count a failed authentication by method. */
  authFailed(method: 'scram-sha-256' | 'cert' | 'jwt' | 'other'): void;
  /** Is tls: configured (SSLRequest answered 'S', direct TLS accepted)? */
  tlsEnabled(): boolean;
  /** JWT verifier when auth.jwt is configured. */
  jwt(): JwtVerifier | null;
  /** Is this peer address a trusted load balancer (may send a PROXY header)? */
  trustedProxy(addr: string): boolean;
  /** The process's budget for incomplete client messages; absent: unbounded (tests). */
  readonly bufferBudget?: BufferBudget | null;
}

/** How the handshake acts on its connection. */
export interface HandshakeIo {
  /** Bytes for the client. */
  send(bytes: Buffer): void;
  /** Wrap the client socket in TLS (`first`: bytes of a direct-TLS ClientHello already read); the session answers with tlsReady(). */
  startTls(first: Buffer | null, direct: boolean): void;
  /** A CancelRequest: the connection carried nothing else and is done. */
  cancel(processId: number, secretKey: number): void;
  /** FATAL to the client, then close. */
  fail(code: ErrorCode, message?: string, detail?: string): void;
  /** The client sent Terminate before logging in. */
  close(): void;
  /** The identity is proven; `rest` holds what the client pipelined after its last authentication message. */
  authenticated(identity: IdentityInput, rest: Buffer | null): void;
}

/** The startup packet may not exceed this (PostgreSQL's own limit is 10 000 bytes). */
export const MAX_STARTUP_PACKET_BYTES = 10_000;
/** Nothing else may arrive while TLS or a token check is under way; a client that keeps sending is cut off. */
const MAX_HELD_BYTES = 10_000;
const AUTH_TYPES_ALLOWED = new Set<number>([Frontend.Password, Frontend.Terminate]);

export class Handshake {
  phase: HandshakePhase = 'startup';
  /** The startup packet's parameters (options already applied). */
  params = new Map<string, string>();
  /** The role asked for with `-c rolegate.role=…`; the policy decides. */
  requestedRole: string | null = null;
  /** What TLS proved (null: plaintext). */
  tls: TlsInfo | null = null;
  /** The client's address: the socket peer, or the source in a trusted PROXY header. */
  clientAddr: string;
  clientPort: number;

  private readonly host: HandshakeHost;
  private readonly io: HandshakeIo;
  private readonly sessionId: string;
  private held: Buffer | null = null;
  private readonly framer: Framer;
  private scram: ScramServerExchange | null = null;

  constructor(host: HandshakeHost, io: HandshakeIo, sessionId: string, clientAddr: string, clientPort: number) {
    this.host = host;
    this.io = io;
    this.sessionId = sessionId;
    this.clientAddr = clientAddr;
    this.clientPort = clientPort;
    this.framer = new Framer(host.config.limits.maxMessageBytes, [Frontend.CopyData], host.bufferBudget ?? null);
    if (host.config.proxyProtocol !== null && host.trustedProxy(clientAddr)) this.phase = 'proxy-header';
  }

  get user(): string {
    return this.params.get('user') ?? '';
  }

  /** Is the handshake still waiting for the client (startup timeout applies)? */
  get pending(): boolean {
    return this.phase !== 'done';
  }

  /** The session ended (or moved on): nothing more is handled. */
  stop(): void {
    this.phase = 'done';
    this.framer.dispose();
  }

  /** Bytes from the client. */
  onBytes(chunk: Buffer): void {
    switch (this.phase) {
      case 'startup':
        this.onStartupBytes(chunk);
        return;
      case 'proxy-header':
        this.onProxyHeaderBytes(chunk);
        return;
      case 'sasl-initial':
      case 'sasl-final':
      case 'password':
        this.onAuthBytes(chunk);
        return;
      case 'tls-handshake':
      case 'authenticating':
        // Nothing may arrive here (TLS bytes go to the TLSSocket; a client waits
        // for the authentication result): hold it and refuse it later.
        this.held = this.held === null ? chunk : Buffer.concat([this.held, chunk]);
        if (this.held.length > MAX_HELD_BYTES) this.fail('RG_PROTOCOL_VIOLATION', 'unexpected data during authentication');
        return;
      case 'done':
        return;
      default: {
        const unreachable: never = this.phase;
        throw new Error(`unhandled handshake phase ${String(unreachable)}`);
      }
    }
  }

  /** The phase as it is now (a method, so TypeScript does not keep an earlier narrowing). */
  private currentPhase(): HandshakePhase {
    return this.phase;
  }

  private fail(code: ErrorCode, message?: string, detail?: string): void {
    this.phase = 'done';
    this.io.fail(code, message, detail);
  }

  // ------------------------------------------------------------ PROXY header

  /** PROXY protocol v1/v2 header from a trusted load balancer, before anything else. */
  private onProxyHeaderBytes(chunk: Buffer): void {
    const buf = this.held === null ? chunk : Buffer.concat([this.held, chunk]);
    const parsed = parseProxyHeader(buf);
    switch (parsed.status) {
      case 'need-more':
        this.held = buf;
        return;
      case 'invalid':
        return this.fail('RG_PROXY_PROTOCOL', `invalid PROXY protocol header: ${parsed.reason}`);
      case 'absent':
        if (this.host.config.proxyProtocol?.required === true) return this.fail('RG_PROXY_PROTOCOL', 'a PROXY protocol header is required from this address');
        this.held = null;
        this.phase = 'startup';
        this.onStartupBytes(buf);
        return;
      case 'ok': {
        const header = parsed.header;
        if (header.kind === 'proxy') {
          this.clientAddr = normaliseAddress(header.sourceAddr);
          this.clientPort = header.sourcePort;
        }
        this.held = null;
        this.phase = 'startup';
        const rest = buf.subarray(parsed.consumed);
        if (rest.length > 0) this.onStartupBytes(rest);
        return;
      }
      default: {
        const unreachable: never = parsed;
        throw new Error(`unhandled PROXY parse ${JSON.stringify(unreachable)}`);
      }
    }
  }

  // ---------------------------------------------------------- startup packets

  private onStartupBytes(chunk: Buffer): void {
    let buf = this.held === null ? chunk : Buffer.concat([this.held, chunk]);
    if (this.tls === null && this.held === null && buf[0] === 0x16 /* TLS handshake record */) {
      // PostgreSQL 17 direct TLS (sslnegotiation=direct): TLS from the first byte, ALPN "postgresql".
      return this.startTls(buf, true);
    }
    if (this.host.config.proxyProtocol !== null && this.tls === null && parseProxyHeader(buf).status !== 'absent' && !this.host.trustedProxy(this.clientAddr)) {
      return this.fail('RG_PROXY_PROTOCOL', `PROXY protocol header from untrusted address ${this.clientAddr}`);
    }
    for (;;) {
      const len = fe.startupPacketLength(buf);
      if (len === null) break;
      if (len < 0) return this.fail('RG_STARTUP_TOO_LARGE', `invalid startup packet length ${buf.readInt32BE(0)} (maximum ${MAX_STARTUP_PACKET_BYTES} bytes)`);
      if (buf.length < len) break;
      const packet = buf.subarray(0, len);
      buf = buf.subarray(len);
      const decoded = fe.decodeStartupPacket(packet);
      switch (decoded.kind) {
        case 'ssl':
          if (this.tls !== null) return this.fail('RG_PROTOCOL_VIOLATION', 'SSLRequest inside a TLS connection');
          if (!this.host.tlsEnabled()) {
            // TLS is not configured: 'N' tells the client to go on in plaintext.
            this.io.send(Buffer.from('N'));
            continue;
          }
          // Bytes sent after SSLRequest but before the handshake were not encrypted:
          // never treat them as if they were (CVE-2021-23214).
          if (buf.length > 0) return this.fail('RG_PROTOCOL_VIOLATION', 'received unencrypted data after SSL request');
          this.held = null;
          this.io.send(Buffer.from('S'));
          return this.startTls(null, false);
        case 'gssenc':
          // GSS encryption is not offered.
          this.io.send(Buffer.from('N'));
          continue;
        case 'cancel':
          this.phase = 'done';
          this.io.cancel(decoded.processId, decoded.secretKey);
          return;
        case 'unsupported':
          return this.fail('RG_UNSUPPORTED_PROTOCOL', `unsupported frontend protocol ${decoded.major}.${decoded.minor}: server supports 3.0 to 3.0`);
        case 'invalid':
          return this.fail('RG_STARTUP_INVALID', `invalid startup packet: ${decoded.reason}`);
        case 'startup':
          this.held = null;
          this.onStartupMessage(decoded.minor, decoded.params, buf);
          return;
        default: {
          const unreachable: never = decoded;
          throw new Error(`unhandled startup packet ${JSON.stringify(unreachable)}`);
        }
      }
    }
    this.held = buf.length === 0 ? null : Buffer.from(buf);
  }

  private startTls(first: Buffer | null, direct: boolean): void {
    if (!this.host.tlsEnabled()) return this.fail('RG_PROTOCOL_VIOLATION', 'TLS is not configured');
    this.phase = 'tls-handshake';
    this.held = null;
    this.io.startTls(first, direct);
  }

  /** The TLS handshake finished on the session's new socket; `alpn` is the protocol the client chose. */
  tlsReady(info: TlsInfo, direct: boolean, alpn: string | false | null): void {
    if (this.phase !== 'tls-handshake') return;
    if (direct && alpn !== 'postgresql') {
      // PostgreSQL requires ALPN for direct TLS (it keeps other protocols out).
      return this.fail('RG_PROTOCOL_VIOLATION', 'direct TLS connection without ALPN "postgresql"');
    }
    this.tls = info;
    const held = this.held;
    this.held = null;
    this.phase = 'startup';
    if (held !== null) this.onStartupBytes(held);
  }

  /** StartupMessage: options, TLS requirements, then the authentication method. `rest`: bytes after the packet. */
  private onStartupMessage(minor: number, params: Map<string, string>, rest: Buffer): void {
    const unrecognised = [...params.keys()].filter((k) => k.startsWith('_pq_.'));
    if (minor > 0 || unrecognised.length > 0) this.io.send(be.negotiateProtocolVersion(0, unrecognised));
    const replication = params.get('replication');
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
      return this.fail('RG_REPLICATION_REFUSED');
    }
    const user = params.get('user');
    if (user === undefined || user === '') return this.fail('RG_AUTH_METHOD', 'no PostgreSQL user name specified in startup packet');
    const config = this.host.config;
    const options = params.get('options');
    if (options !== undefined) {
      const parsed = parseOptions(options);
      if (typeof parsed === 'string') return this.fail('RG_STARTUP_INVALID', parsed);
      for (const [k, v] of parsed) {
        if (k === 'rolegate.role') this.requestedRole = v;
        else if (isPassthrough(config, k) || PARSER_SETTINGS.has(k.toLowerCase())) params.set(k, v);
        else return this.fail('RG_STARTUP_INVALID', `startup option "-c ${k}" is not allowed through rolegate`);
      }
    }
    const pinned = pinnedSettingProblem(params);
    if (pinned !== null) return this.fail('RG_STARTUP_PINNED', pinned, 'connect with client_encoding=UTF8 (PGCLIENTENCODING=UTF8, or the driver\'s encoding option) and standard_conforming_strings on');
    this.params = params;
    if (this.tls === null && config.tls?.required === true) {
      return this.fail('RG_TLS_REQUIRED', 'TLS is required: connect with sslmode=require (or stronger)');
    }
    // A certificate that was presented but does not verify is refused outright.
    if (this.tls?.certPresented === true && !this.tls.authorized) {
      return this.fail('RG_CERT_REJECTED', `client certificate rejected: ${this.tls.authorizationError ?? 'not trusted'}`);
    }
    const certAuth = config.auth.cert;
    if (certAuth !== null && this.tls?.authorized === true) return this.onCertificateLogin(user, certAuth.identity, rest);
    if (!Object.hasOwn(config.users, user) && config.auth.jwt !== null) {
      if (this.tls === null) return this.fail('RG_TLS_REQUIRED', 'token login requires TLS: connect with sslmode=require (or stronger)');
      this.phase = 'password';
      this.io.send(be.authenticationCleartextPassword());
    } else {
      this.phase = 'sasl-initial';
      this.io.send(be.authenticationSASL(['SCRAM-SHA-256']));
    }
    if (rest.length > 0) this.onAuthBytes(rest);
  }

  /** A verified client certificate is the identity; the startup user must name it (as PostgreSQL's cert method). */
  private onCertificateLogin(user: string, source: NonNullable<Config['auth']['cert']>['identity'], rest: Buffer): void {
    const info = this.tls;
    if (info === null) return this.fail('RG_AUTH_METHOD');
    const name = certIdentity(info, source);
    if (name === null) return this.fail('RG_CERT_REJECTED', `client certificate has no ${source} to take the identity from`);
    if (name !== user) return this.fail('RG_CERT_REJECTED', `certificate identity "${name}" does not match user "${user}"`);
    this.io.send(be.authenticationOk());
    this.phase = 'done';
    this.io.authenticated({ name, method: 'cert', claims: {}, cert: { subject: info.subject, san: info.san, fingerprint: info.fingerprint } }, rest.length > 0 ? rest : null);
  }

  // ----------------------------------------------------------- authentication

  /** Authentication phase: typed messages, only 'p' (and 'X') expected. */
  private onAuthBytes(chunk: Buffer): void {
    const framer = this.framer;
    framer.push(chunk);
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) return;
      if (ev === FrameEvent.Error) return this.fail(framer.errorCode ?? 'RG_PROTOCOL_VIOLATION');
      if (ev === FrameEvent.Raw) return this.fail('RG_PROTOCOL_VIOLATION', 'expected a SASL response');
      const type = framer.type;
      if (!AUTH_TYPES_ALLOWED.has(type)) {
        return this.fail('RG_PROTOCOL_VIOLATION', `expected SASL response, got message type "${String.fromCharCode(type)}"`);
      }
      if (type === Frontend.Terminate) {
        this.phase = 'done';
        return this.io.close();
      }
      if (framer.end - framer.start > MAX_STARTUP_PACKET_BYTES) return this.fail('RG_MESSAGE_TOO_LARGE', 'SASL message too large');
      const body = framer.buf.subarray(framer.start + 5, framer.end);
      const phase = this.phase;
      if (phase === 'sasl-initial') this.onSASLInitialResponse(body);
      else if (phase === 'sasl-final') {
        const identity = this.onSASLResponse(body);
        if (identity !== null) {
          // Anything the client pipelined after its final SASL message goes to the session.
          const rest = framer.takeRest();
          this.phase = 'done';
          return this.io.authenticated(identity, rest.length > 0 ? rest : null);
        }
      } else if (phase === 'password') this.onPasswordMessage(body);
      else return this.fail('RG_PROTOCOL_VIOLATION', 'unexpected message during authentication');
      const after = this.currentPhase();
      if (after === 'done') return;
      if (after === 'authenticating') {
        const rest = framer.takeRest();
        if (rest.length > 0) this.held = rest;
        return;
      }
    }
  }

  private onSASLInitialResponse(body: Buffer): void {
    const mech = fe.readCString(body, 0, body.length);
    if (mech === null || mech.next + 4 > body.length) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed SASLInitialResponse');
    const dataLen = body.readInt32BE(mech.next);
    const dataStart = mech.next + 4;
    if (dataLen < 0 || dataStart + dataLen !== body.length) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed SASLInitialResponse length');
    const user = this.user;
    const users = this.host.config.users;
    const userConfig = Object.hasOwn(users, user) ? users[user] : undefined;
    const verifier = userConfig === undefined ? null : parseScramVerifier(userConfig.scramVerifier);
    this.scram = new ScramServerExchange(verifier, { mockSeed: this.host.mockSeed, userName: user, channelBinding: null });
    const result = this.scram.handleClientFirst(mech.text, body.subarray(dataStart));
    if (!result.ok) return this.authFailed(result.code, result.message);
    this.phase = 'sasl-final';
    this.io.send(be.authenticationSASLContinue(result.serverFirst));
  }

  /** SASLResponse (client-final): the identity when the proof holds. */
  private onSASLResponse(body: Buffer): IdentityInput | null {
    const scram = this.scram;
    if (scram === null) {
      this.fail('RG_PROTOCOL_VIOLATION', 'SASLResponse before SASLInitialResponse');
      return null;
    }
    const result = scram.handleClientFinal(body);
    if (!result.ok) {
      this.authFailed(result.code, result.message);
      return null;
    }
    this.scram = null;
    this.io.send(Buffer.concat([be.authenticationSASLFinal(result.serverFinal), be.authenticationOk()]));
    return { name: this.user, method: 'scram-sha-256', claims: {}, cert: null };
  }

  /** PasswordMessage carrying a JWT (auth.jwt; TLS only). */
  private onPasswordMessage(body: Buffer): void {
    const verifier = this.host.jwt();
    if (verifier === null) return this.fail('RG_AUTH_METHOD');
    const token = fe.readCString(body, 0, body.length);
    if (token === null || token.next !== body.length || token.text.length === 0) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed password message');
    this.phase = 'authenticating';
    verifier.verify(token.text).then(
      (result) => {
        if (this.currentPhase() !== 'authenticating') return;
        if (!result.ok) return this.authFailed(result.code, result.message);
        if (this.held !== null) return this.fail('RG_PROTOCOL_VIOLATION', 'unexpected data during authentication');
        this.io.send(be.authenticationOk());
        this.phase = 'done';
        this.io.authenticated({ name: result.identity, method: 'jwt', claims: result.claims, cert: null }, null);
      },
      (err: unknown) => this.authFailed('RG_JWT_INVALID', String(err)),
    );
  }

  private authFailed(code: ErrorCode, detailForLog: string): void {
    const user = this.user;
    this.host.log.info({ session: this.sessionId, user, client: this.clientAddr, code, why: detailForLog }, 'authentication failed');
    const method = this.phase === 'authenticating' || code === 'RG_JWT_INVALID' || code === 'RG_JWKS_UNAVAILABLE' ? 'jwt' : 'scram-sha-256';
    this.host.authFailed(method);
    // Wrong password and unknown user read the same (no user enumeration).
    if (code === 'RG_AUTH_FAILED') return this.fail('RG_AUTH_FAILED', `password authentication failed for user "${user}"`);
    if (code === 'RG_JWT_INVALID') return this.fail('RG_JWT_INVALID', `token authentication failed for user "${user}"`);
    return this.fail(code, detailForLog);
  }
}

/** A startup parameter the config lets clients pass on to the server (passthrough_parameters). */
export function isPassthrough(config: Config, name: string): boolean {
  const lower = name.toLowerCase();
  return config.passthroughParameters.some((p) => p.toLowerCase() === lower);
}

/** IPv4-mapped IPv6 addresses become dotted IPv4 (the policy contract's client.addr). */
export function normaliseAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

/**
 * A startup packet asking for another client_encoding, or for
 * standard_conforming_strings off: refused with a clear error rather than
 * silently overridden (the upstream session always reads UTF-8 with standard
 * strings, and the client would read the server's bytes in an encoding it did
 * not get). UTF8 under any spelling PostgreSQL accepts, and "on" (or a
 * synonym), are fine.
 */
function pinnedSettingProblem(params: ReadonlyMap<string, string>): string | null {
  for (const [key, value] of params) {
    const name = key.toLowerCase();
    if (name === 'client_encoding' && !isUtf8Name(value)) return `rolegate serves client_encoding UTF8 only; the client asked for "${value}"`;
    if (name === 'standard_conforming_strings' && !['on', 'true', 'yes', '1'].includes(value.toLowerCase())) {
      return `rolegate serves standard_conforming_strings on only; the client asked for "${value}"`;
    }
  }
  return null;
}
