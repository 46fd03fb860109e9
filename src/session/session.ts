// One client connection, start to end: the whole state machine in one place
// (docs/QUERY_LIFECYCLE.md walks through it). States:
//   startup → sasl-initial → sasl-final → connecting → relay → closed
// Handlers are named after the protocol messages they handle.
//
// Hot path (relay): client bytes are cut into messages by the framer; runs of
// consecutive allowed messages are forwarded upstream as subarrays of the
// client's own chunk (never re-encoded). Query and Parse are decided
// synchronously by the Authorizer. A denied statement never reaches the
// database: the proxy sends the upstream a statement that fails with a syntax
// error carrying a per-session nonce instead. That keeps the response order of
// pipelined messages intact, aborts an explicit transaction (so it cannot
// commit), makes the server discard the rest of the pipeline until Sync, and
// lets the proxy swap that one ErrorResponse for its own 42501.

import { randomBytes, randomInt } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import type { Config, RoleCredentials } from '../config/config.ts';
import { ERRORS, RolegateError, type ErrorCode } from '../errors.ts';
import type { ConnectInput, IdentityInput } from '../policy/contract.ts';
import type { StatementFacts, TableFact } from '../sql/statement-facts.ts';
import type { CertIdentitySource } from '../config/config.ts';
import * as be from '../protocol/backend.ts';
import { Backend, Frontend, TxStatus } from '../protocol/constants.ts';
import { FrameEvent, Framer } from '../protocol/framer.ts';
import * as fe from '../protocol/frontend.ts';
import { ScramServerExchange, parseScramVerifier, type SaltedPasswordCache } from '../auth/scram.ts';
import { connectUpstream, PINNED_PARAMETERS, sendUpstreamCancel } from '../upstream/connect.ts';
import { changedParameters, WelcomeCache } from '../upstream/welcome.ts';
import { upstreamErrorKind, type UPSTREAM_ERROR_KINDS } from '../metrics/definitions.ts';
import { parseProxyHeader } from '../protocol/proxy-protocol.ts';
import type { JwtVerifier } from '../auth/jwt.ts';
import type { AuditRecorder } from '../audit/auditor.ts';
import { readBindParameters, auditParameters, type BoundParameter } from '../audit/parameters.ts';
import { commandCompleteRows, newRecord, tableName, type AuditParameter, type AuditRecord } from '../audit/record.ts';
import { StatementTracker, type TrackedExecution } from '../audit/statement-tracker.ts';
import type { WorkerMetrics } from '../metrics/worker-counters.ts';
import { notePrepared, SessionSqlState, type Authorizer, type PreparedRecord, type SessionContext, type StatementDenial, type StatementVerdict } from '../decision/authorizer.ts';
import type { TimeSource } from '../decision/clock.ts';

export interface SessionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** What the worker provides to each of its sessions. */
export interface SessionHost {
  readonly config: Config;
  readonly workerId: number;
  readonly audit: AuditRecorder;
  readonly metrics: WorkerMetrics;
  /** Pre-resolved metric handles (resolved once per worker). */
  readonly handles: SessionMetricHandles;
  readonly time: TimeSource;
  readonly scramCache: SaltedPasswordCache;
  /** The server's ParameterStatus values by login (upstream.connect: lazy). */
  readonly welcomes: WelcomeCache;
  /** Per-process secret that makes mock SCRAM salts stable per unknown user name. */
  readonly mockSeed: Buffer;
  readonly log: SessionLog;
  /** Current authorizer (swapped on policy reload; read per statement). */
  authorizer(): Authorizer;
  /** Issue this session's BackendKeyData (worker id inside the process id). */
  register(session: ClientSession): { processId: number; secretKey: number };
  unregister(session: ClientSession): void;
  /** A CancelRequest arrived on this worker's listener: route it to the owning session. */
  routeCancel(processId: number, secretKey: number): void;
  /** Is tls: configured (SSLRequest answered 'S', direct TLS accepted)? */
  tlsEnabled(): boolean;
  /**
   * Run the server side of a TLS handshake on this socket (certificate and key
   * of the current config; client certificates verified against tls.ca_file).
   */
  tlsUpgrade(raw: net.Socket, first: Buffer | null, onReady: (secure: tls.TLSSocket) => void, onError: (err: Error) => void): void;
  /** JWT verifier when auth.jwt is configured. */
  jwt(): JwtVerifier | null;
  /** Is this peer address a trusted load balancer (may send a PROXY header)? */
  trustedProxy(addr: string): boolean;
}

export interface SessionMetricHandles {
  refused: Readonly<Record<RefuseReason, number>>;
  authFailures: Readonly<Record<'scram-sha-256' | 'cert' | 'jwt' | 'other', number>>;
  upstreamErrors: Readonly<Record<(typeof UPSTREAM_ERROR_KINDS)[number], number>>;
}

export type RefuseReason = 'too_many_clients' | 'startup_invalid' | 'startup_timeout' | 'unsupported_protocol' | 'tls_required' | 'auth_failed' | 'policy_denied' | 'upstream_failed' | 'audit_unavailable' | 'shutting_down' | 'protocol_error';

/** Why a connection that never reached relay was closed, for rolegate_client_connections_refused_total. */
function refuseReason(code: ErrorCode): RefuseReason {
  switch (code) {
    case 'RG_STARTUP_TIMEOUT':
      return 'startup_timeout';
    case 'RG_STARTUP_INVALID':
    case 'RG_STARTUP_TOO_LARGE':
      return 'startup_invalid';
    case 'RG_UNSUPPORTED_PROTOCOL':
      return 'unsupported_protocol';
    case 'RG_TLS_REQUIRED':
      return 'tls_required';
    case 'RG_AUTH_FAILED':
    case 'RG_JWT_INVALID':
    case 'RG_JWKS_UNAVAILABLE':
    case 'RG_CERT_REJECTED':
    case 'RG_AUTH_METHOD':
      return 'auth_failed';
    case 'RG_CONNECT_DENIED':
    case 'RG_REPLICATION_REFUSED':
      return 'policy_denied';
    case 'RG_UPSTREAM_UNREACHABLE':
    case 'RG_UPSTREAM_AUTH':
    case 'RG_UPSTREAM_LOST':
    case 'RG_UPSTREAM_PROTOCOL':
      return 'upstream_failed';
    case 'RG_AUDIT_UNAVAILABLE':
      return 'audit_unavailable';
    case 'RG_SHUTDOWN':
      return 'shutting_down';
    default:
      return 'protocol_error';
  }
}

/**
 * A refused statement as its audit record names it: the client's statement
 * name (extended protocol), its text, and its facts — only when the policy
 * decided it (null when rolegate refused it before: invalid text, fail-closed
 * audit, an unknown statement name, a FunctionCall) — or a command word
 * standing in for them.
 */
interface DeniedStatement {
  name: string | null;
  sql: string;
  facts: StatementFacts | null;
  command?: string;
}

/** A portal as audit needs it (statement null: none bound). */
interface BoundPortal {
  statement: string | null;
  params: BoundParameter[] | null;
  group: number;
}

/** What the tracker follows per execution: an audit record, or (audit off) just enough for the latency histogram. */
type Tracked = TrackedExecution & { protocol?: 'simple' | 'extended'; audit?: AuditRecord['audit'] };

/** parked: authenticated and greeted, upstream login deferred to the first message (upstream.connect: lazy). */
type State = 'proxy-header' | 'startup' | 'tls-handshake' | 'sasl-initial' | 'sasl-final' | 'password' | 'authenticating' | 'parked' | 'connecting' | 'relay' | 'closed';

/** The upstream login a session will make (now, or on its first message when parked). */
interface UpstreamPlan {
  role: string;
  database: string;
  parameters: Map<string, string>;
  welcomeKey: string;
  /** ParameterStatus values the client was greeted with (parked); null: not greeted yet. */
  announced: ReadonlyMap<string, string> | null;
}

/** A denial whose injected failing statement is on its way upstream. */
interface PendingDenial {
  nonce: string;
  response: Buffer;
}

const STARTUP_TYPES_ALLOWED = new Set<number>([Frontend.Password, Frontend.Terminate]);

/** Message types a client may send once the session is relaying. */
const RELAY_TYPES = new Uint8Array(256);
for (const t of [
  Frontend.Bind,
  Frontend.Close,
  Frontend.Describe,
  Frontend.Execute,
  Frontend.FunctionCall,
  Frontend.Flush,
  Frontend.Parse,
  Frontend.Query,
  Frontend.Sync,
  Frontend.Terminate,
  Frontend.CopyData,
  Frontend.CopyDone,
  Frontend.CopyFail,
]) {
  RELAY_TYPES[t] = 1;
}

const TERMINATE = Buffer.from([Frontend.Terminate, 0, 0, 0, 4]);

/** What the TLS layer proved about the client. */
interface TlsInfo {
  /** A client certificate was presented and chains to tls.ca_file (and is in date). */
  authorized: boolean;
  /** Why a presented certificate was not authorized (e.g. CERT_HAS_EXPIRED). */
  authorizationError: string | null;
  certPresented: boolean;
  subject: string;
  san: string[];
  fingerprint: string;
  commonName: string | null;
}

export function normaliseAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

let sessionCounter = 0;
/**
 * Session ids are this prefix and a counter. Each worker thread loads this
 * module anew (its own counter), and a restarted worker starts over: the
 * prefix is random per module instance, so ids stay unique across workers
 * and restarts (the pid would not: workers are threads of one process).
 */
const SESSION_PREFIX = randomBytes(4).toString('hex');
const NO_CONTEXT: StatementDenial = Object.freeze({ allow: false, sqlstate: '42501', message: 'no session context', rule: 'internal', reason: 'no session context' });
const NO_TABLES: string[] = [];

/** Audit's "schema.name" list per facts' tables array (facts are cached and shared: each statement's list is built once). */
const TABLE_NAMES = new WeakMap<readonly TableFact[], string[]>();

function tableNames(tables: readonly TableFact[]): string[] {
  if (tables.length === 0) return NO_TABLES;
  let names = TABLE_NAMES.get(tables);
  if (names === undefined) {
    names = tables.map(tableName);
    TABLE_NAMES.set(tables, names);
  }
  return names;
}

/** Random per thread: a client cannot predict (and so forge) the nonce of an injected denial. */
const NONCE_PREFIX = randomBytes(8).toString('hex');

export class ClientSession {
  readonly id: string;
  /** The client's socket: the TCP socket, or the TLSSocket over it after SSLRequest. */
  client: net.Socket;
  processId = 0;
  secretKey = 0;
  state: State = 'startup';

  private readonly host: SessionHost;
  private readonly config: Config;
  private startupBuf: Buffer | null = null;
  private startupTimer: NodeJS.Timeout | null = null;
  private framer: Framer;
  private params = new Map<string, string>();
  private requestedRole: string | null = null;
  private tlsInfo: TlsInfo | null = null;
  /** The client's address: the socket peer, or the source in a trusted PROXY header. */
  private clientAddr: string;
  private clientPort: number;
  private scram: ScramServerExchange | null = null;
  private context: SessionContext | null = null;

  private upstream: net.Socket | null = null;
  private upstreamFramer: Framer;
  private upstreamProcessId = 0;
  private upstreamSecretKey = 0;
  private txStatus: number = TxStatus.Idle;
  /** Query, Sync and FunctionCall messages sent upstream (each ends in a ReadyForQuery). */
  private syncsSent = 0;
  private readyReceived = 0;
  private discardUntilSync = false;
  private readonly denials: PendingDenial[] = [];
  private readonly nonceBase: string;
  private nonceSeq = 0;
  private upstreamSentFatal = false;
  /** Client bytes that arrived while the upstream was being connected. */
  private heldClientChunks: Buffer[] = [];
  private plan: UpstreamPlan | null = null;
  /** PREPARE'd statements and cursors of this session (what EXECUTE runs). */
  private readonly sqlState = new SessionSqlState();
  /**
   * Portals bound through this session, kept only to name the statement (and
   * its bound parameters) in Execute's audit record: the unnamed portal — all
   * most clients use — in its own slot (no allocation per Bind), named ones in
   * a Map. `group` is the syncsSent of the Bind: a portal ends with its
   * transaction, so the ReadyForQuery (idle) that closes that group or a later
   * one forgets it — not a Bind pipelined behind it.
   */
  private unnamedPortal: BoundPortal = { statement: null, params: null, group: 0 };
  private portals: Map<string, BoundPortal> | null = null;
  /** Pairs forwarded executions with the server's answers (outcome, rows, query time). */
  private readonly tracker: StatementTracker<Tracked>;
  /** µs the last decide() took (the audit records of its Query, or of a denial, carry it; a Parse's is kept with its statement). */
  private lastDecisionUs = 0;
  /** Whether the last decision (decide() or a Bind re-check) reached the policy, so the authorizer's `last` describes it. */
  private policyDecided = false;
  /** The text the last decide() decoded. */
  private lastSql = '';
  /** Audit records this session made (each record's seq). */
  private auditSeq = 0;
  /** Shared by this session's audit records (serialised, never mutated). */
  private auditIdentity: { name: string; method: string } | null = null;
  private auditClientObject: { addr: string; port: number } | null = null;

  // Forward-run bookkeeping (one run per direction at a time; see flushRun()).
  private runBuf: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;

  constructor(host: SessionHost, client: net.Socket) {
    this.host = host;
    this.config = host.config;
    this.client = client;
    this.id = `${SESSION_PREFIX}-${(++sessionCounter).toString(36)}`;
    // One SQL identifier token ([a-z0-9_], < 63 bytes): the server's error message quotes it whole.
    this.nonceBase = `${NONCE_PREFIX}_${sessionCounter.toString(36)}`;
    this.framer = new Framer(this.config.limits.maxMessageBytes, [Frontend.CopyData]);
    this.upstreamFramer = new Framer(0x7fffffff, [Backend.DataRow, Backend.CopyData]);
    this.tracker = new StatementTracker<Tracked>((r) => this.onExecutionDone(r));
    this.clientAddr = normaliseAddress(client.remoteAddress);
    this.clientPort = client.remotePort ?? 0;
    client.setNoDelay(true);
    this.attach(client);
    client.on('error', (err) => this.onClientGone(err));
    client.on('close', () => this.onClientGone(null));
    if (this.config.proxyProtocol !== null && host.trustedProxy(this.clientAddr)) this.state = 'proxy-header';
    this.startupTimer = setTimeout(() => this.onStartupTimeout(), this.config.limits.startupTimeoutMs);
  }

  private readonly onData = (chunk: Buffer): void => this.onClientData(chunk);
  private readonly onDrain = (): void => {
    this.upstream?.resume();
  };

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
  }

  /** The state as it is now (a method, so TypeScript does not keep an earlier narrowing). */
  private currentState(): State {
    return this.state;
  }

  get remoteAddress(): string {
    return this.clientAddr;
  }

  // ---------------------------------------------------------------- client in

  private onClientData(chunk: Buffer): void {
    switch (this.state) {
      case 'relay':
        this.relayClient(chunk);
        return;
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
        this.startupBuf = this.startupBuf === null ? chunk : Buffer.concat([this.startupBuf, chunk]);
        if (this.startupBuf.length > 10000) this.fatal('RG_PROTOCOL_VIOLATION', 'unexpected data during authentication');
        return;
      case 'connecting':
        this.heldClientChunks.push(chunk);
        if (this.heldClientChunks.length > 64) this.client.pause();
        return;
      case 'parked':
        this.unpark(chunk);
        return;
      case 'closed':
        return;
      default: {
        const unreachable: never = this.state;
        throw new Error(`unhandled state ${String(unreachable)}`);
      }
    }
  }

  /** Startup phase ("Start-up" in the protocol's message flow): untyped packets. */
  /** PROXY protocol v1/v2 header from a trusted load balancer, before anything else. */
  private onProxyHeaderBytes(chunk: Buffer): void {
    const buf = this.startupBuf === null ? chunk : Buffer.concat([this.startupBuf, chunk]);
    const parsed = parseProxyHeader(buf);
    switch (parsed.status) {
      case 'need-more':
        this.startupBuf = buf;
        return;
      case 'invalid':
        return this.fatal('RG_PROXY_PROTOCOL', `invalid PROXY protocol header: ${parsed.reason}`);
      case 'absent':
        if (this.config.proxyProtocol?.required === true) return this.fatal('RG_PROXY_PROTOCOL', 'a PROXY protocol header is required from this address');
        this.startupBuf = null;
        this.state = 'startup';
        this.onStartupBytes(buf);
        return;
      case 'ok': {
        const header = parsed.header;
        if (header.kind === 'proxy') {
          this.clientAddr = normaliseAddress(header.sourceAddr);
          this.clientPort = header.sourcePort;
        }
        this.startupBuf = null;
        this.state = 'startup';
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

  private onStartupBytes(chunk: Buffer): void {
    let buf = this.startupBuf === null ? chunk : Buffer.concat([this.startupBuf, chunk]);
    if (this.tlsInfo === null && this.startupBuf === null && buf[0] === 0x16 /* TLS handshake record */) {
      // PostgreSQL 17 direct TLS (sslnegotiation=direct): TLS from the first byte, ALPN "postgresql".
      return this.startTls(buf, true);
    }
    if (this.config.proxyProtocol !== null && this.tlsInfo === null && parseProxyHeader(buf).status !== 'absent' && !this.host.trustedProxy(this.clientAddr)) {
      return this.fatal('RG_PROXY_PROTOCOL', `PROXY protocol header from untrusted address ${this.clientAddr}`);
    }
    for (;;) {
      const len = fe.startupPacketLength(buf);
      if (len === null) break;
      if (len < 0) return this.fatal('RG_STARTUP_TOO_LARGE', `invalid startup packet length ${buf.readInt32BE(0)} (maximum ${10000} bytes)`);
      if (buf.length < len) break;
      const packet = buf.subarray(0, len);
      buf = buf.subarray(len);
      const decoded = fe.decodeStartupPacket(packet);
      switch (decoded.kind) {
        case 'ssl':
          if (this.tlsInfo !== null) return this.fatal('RG_PROTOCOL_VIOLATION', 'SSLRequest inside a TLS connection');
          if (!this.host.tlsEnabled()) {
            // TLS is not configured: 'N' tells the client to go on in plaintext.
            this.client.write(Buffer.from('N'));
            continue;
          }
          // Bytes sent after SSLRequest but before the handshake were not encrypted:
          // never treat them as if they were (CVE-2021-23214).
          if (buf.length > 0) return this.fatal('RG_PROTOCOL_VIOLATION', 'received unencrypted data after SSL request');
          this.startupBuf = null;
          this.client.write(Buffer.from('S'));
          return this.startTls(null, false);
        case 'gssenc':
          // GSS encryption is not offered.
          this.client.write(Buffer.from('N'));
          continue;
        case 'cancel':
          this.onCancelRequest(decoded.processId, decoded.secretKey);
          return;
        case 'unsupported':
          return this.fatal('RG_UNSUPPORTED_PROTOCOL', `unsupported frontend protocol ${decoded.major}.${decoded.minor}: server supports 3.0 to 3.0`);
        case 'invalid':
          return this.fatal('RG_STARTUP_INVALID', `invalid startup packet: ${decoded.reason}`);
        case 'startup':
          this.startupBuf = null;
          this.onStartupMessage(decoded.minor, decoded.params);
          if (buf.length > 0 && this.state !== 'closed') this.onAuthBytes(buf);
          return;
        default: {
          const unreachable: never = decoded;
          throw new Error(`unhandled startup packet ${JSON.stringify(unreachable)}`);
        }
      }
    }
    this.startupBuf = buf.length === 0 ? null : Buffer.from(buf);
  }

  /** Wrap the client socket in TLS (after 'S', or direct TLS with `first` bytes already read). */
  private startTls(first: Buffer | null, direct: boolean): void {
    if (!this.host.tlsEnabled()) return this.fatal('RG_PROTOCOL_VIOLATION', 'TLS is not configured');
    const raw = this.client;
    raw.off('data', this.onData);
    raw.off('drain', this.onDrain);
    this.state = 'tls-handshake';
    this.startupBuf = null;
    this.host.tlsUpgrade(
      raw,
      first,
      (secure) => this.onTlsReady(secure, direct),
      (err) => {
        this.host.log.debug({ session: this.id, err: err.message }, 'TLS handshake failed');
        this.state = 'closed';
        this.clearStartupTimer();
        raw.destroy();
        this.host.unregister(this);
      },
    );
  }

  private onTlsReady(secure: tls.TLSSocket, direct: boolean): void {
    if (this.state !== 'tls-handshake') {
      secure.destroy();
      return;
    }
    this.client = secure;
    secure.on('error', (err: Error) => this.onClientGone(err));
    secure.on('close', () => this.onClientGone(null));
    if (direct && secure.alpnProtocol !== 'postgresql') {
      // PostgreSQL requires ALPN for direct TLS (it keeps other protocols out).
      return this.fatal('RG_PROTOCOL_VIOLATION', 'direct TLS connection without ALPN "postgresql"');
    }
    const cert = secure.getPeerCertificate();
    const presented = Object.keys(cert).length > 0;
    this.tlsInfo = {
      authorized: presented && secure.authorized,
      authorizationError: presented && !secure.authorized ? String(secure.authorizationError ?? 'not trusted') : null,
      certPresented: presented,
      subject: presented ? formatSubject(cert.subject) : '',
      san: presented && typeof cert.subjectaltname === 'string' ? cert.subjectaltname.split(', ').filter((x) => x.length > 0) : [],
      fingerprint: presented ? cert.fingerprint256 : '',
      commonName: presented ? firstString(cert.subject.CN) : null,
    };
    const held = this.startupBuf;
    this.startupBuf = null;
    this.state = 'startup';
    this.attach(secure);
    if (held !== null) this.onStartupBytes(held);
  }

  private onCancelRequest(processId: number, secretKey: number): void {
    // The cancel connection carries nothing else; the protocol closes it without a reply.
    this.state = 'closed';
    this.clearStartupTimer();
    this.client.end();
    this.host.unregister(this);
    this.host.routeCancel(processId, secretKey);
  }

  private onStartupMessage(minor: number, params: Map<string, string>): void {
    const unrecognised = [...params.keys()].filter((k) => k.startsWith('_pq_.'));
    if (minor > 0 || unrecognised.length > 0) this.client.write(be.negotiateProtocolVersion(0, unrecognised));
    const replication = params.get('replication');
    if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
      return this.fatal('RG_REPLICATION_REFUSED');
    }
    const user = params.get('user');
    if (user === undefined || user === '') return this.fatal('RG_AUTH_METHOD', 'no PostgreSQL user name specified in startup packet');
    const options = params.get('options');
    if (options !== undefined) {
      const parsed = parseOptions(options);
      if (typeof parsed === 'string') return this.fatal('RG_STARTUP_INVALID', parsed);
      for (const [k, v] of parsed) {
        if (k === 'rolegate.role') this.requestedRole = v;
        else if (this.isPassthrough(k)) params.set(k, v);
        else return this.fatal('RG_STARTUP_INVALID', `startup option "-c ${k}" is not allowed through rolegate`);
      }
    }
    this.params = params;
    if (this.tlsInfo === null && this.config.tls?.required === true) {
      return this.fatal('RG_TLS_REQUIRED', 'TLS is required: connect with sslmode=require (or stronger)');
    }
    // A certificate that was presented but does not verify is refused outright.
    if (this.tlsInfo?.certPresented === true && !this.tlsInfo.authorized) {
      return this.fatal('RG_CERT_REJECTED', `client certificate rejected: ${this.tlsInfo.authorizationError ?? 'not trusted'}`);
    }
    const certAuth = this.config.auth.cert;
    if (certAuth !== null && this.tlsInfo?.authorized === true) return this.onCertificateLogin(user, certAuth.identity);
    if (!Object.hasOwn(this.config.users, user) && this.config.auth.jwt !== null) {
      if (this.tlsInfo === null) return this.fatal('RG_TLS_REQUIRED', 'token login requires TLS: connect with sslmode=require (or stronger)');
      this.state = 'password';
      this.client.write(be.authenticationCleartextPassword());
      return;
    }
    this.state = 'sasl-initial';
    this.client.write(be.authenticationSASL(['SCRAM-SHA-256']));
  }

  /** A verified client certificate is the identity; the startup user must name it (as PostgreSQL's cert method). */
  private onCertificateLogin(user: string, source: CertIdentitySource): void {
    const info = this.tlsInfo;
    if (info === null) return this.fatal('RG_AUTH_METHOD');
    const name = certIdentity(info, source);
    if (name === null) return this.fatal('RG_CERT_REJECTED', `client certificate has no ${source} to take the identity from`);
    if (name !== user) return this.fatal('RG_CERT_REJECTED', `certificate identity "${name}" does not match user "${user}"`);
    this.client.write(be.authenticationOk());
    this.onAuthenticated({ name, method: 'cert', claims: {}, cert: { subject: info.subject, san: info.san, fingerprint: info.fingerprint } });
  }

  /** PasswordMessage carrying a JWT (auth.jwt; TLS only). */
  private onPasswordMessage(body: Buffer): void {
    const verifier = this.host.jwt();
    if (verifier === null) return this.fatal('RG_AUTH_METHOD');
    const token = fe.readCString(body, 0, body.length);
    if (token === null || token.next !== body.length || token.text.length === 0) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed password message');
    this.state = 'authenticating';
    verifier.verify(token.text).then(
      (result) => {
        if (this.currentState() !== 'authenticating') return;
        if (!result.ok) return this.authFailed(result.code, result.message);
        if (this.startupBuf !== null) return this.fatal('RG_PROTOCOL_VIOLATION', 'unexpected data during authentication');
        this.client.write(be.authenticationOk());
        this.onAuthenticated({ name: result.identity, method: 'jwt', claims: result.claims, cert: null });
      },
      (err: unknown) => this.authFailed('RG_JWT_INVALID', String(err)),
    );
  }

  private isPassthrough(name: string): boolean {
    const lower = name.toLowerCase();
    return this.config.passthroughParameters.some((p) => p.toLowerCase() === lower);
  }

  /** Authentication phase: typed messages, only 'p' (and 'X') expected. */
  private onAuthBytes(chunk: Buffer): void {
    const framer = this.framer;
    framer.push(chunk);
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) return;
      if (ev === FrameEvent.Error) return this.fatal(framer.errorCode ?? 'RG_PROTOCOL_VIOLATION');
      if (ev === FrameEvent.Raw) return this.fatal('RG_PROTOCOL_VIOLATION', 'expected a SASL response');
      const type = framer.type;
      if (!STARTUP_TYPES_ALLOWED.has(type)) {
        return this.fatal('RG_PROTOCOL_VIOLATION', `expected SASL response, got message type "${String.fromCharCode(type)}"`);
      }
      if (type === Frontend.Terminate) return this.close();
      if (framer.end - framer.start > 10000) return this.fatal('RG_MESSAGE_TOO_LARGE', 'SASL message too large');
      const body = framer.buf.subarray(framer.start + 5, framer.end);
      if (this.state === 'sasl-initial') this.onSASLInitialResponse(body);
      else if (this.state === 'sasl-final') this.onSASLResponse(body);
      else if (this.state === 'password') this.onPasswordMessage(body);
      else return this.fatal('RG_PROTOCOL_VIOLATION', 'unexpected message during authentication');
      const after = this.currentState();
      if (after === 'closed') return;
      if (after === 'authenticating') {
        const rest = framer.takeRest();
        this.framer = new Framer(this.config.limits.maxMessageBytes, [Frontend.CopyData]);
        if (rest.length > 0) this.startupBuf = rest;
        return;
      }
      if (after === 'connecting' || after === 'parked') {
        // Anything the client pipelined after its final SASL message waits for the upstream.
        const rest = framer.takeRest();
        this.framer = new Framer(this.config.limits.maxMessageBytes, [Frontend.CopyData]);
        if (rest.length > 0) {
          if (after === 'parked') this.unpark(rest);
          else this.heldClientChunks.push(rest);
        }
        return;
      }
    }
  }

  private onSASLInitialResponse(body: Buffer): void {
    const mech = fe.readCString(body, 0, body.length);
    if (mech === null || mech.next + 4 > body.length) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed SASLInitialResponse');
    const dataLen = body.readInt32BE(mech.next);
    const dataStart = mech.next + 4;
    if (dataLen < 0 || dataStart + dataLen !== body.length) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed SASLInitialResponse length');
    const user = this.params.get('user') ?? '';
    const userConfig = Object.hasOwn(this.config.users, user) ? this.config.users[user] : undefined;
    const verifier = userConfig === undefined ? null : parseScramVerifier(userConfig.scramVerifier);
    this.scram = new ScramServerExchange(verifier, { mockSeed: this.host.mockSeed, userName: user, channelBinding: null });
    const result = this.scram.handleClientFirst(mech.text, body.subarray(dataStart));
    if (!result.ok) return this.authFailed(result.code, result.message);
    this.state = 'sasl-final';
    this.client.write(be.authenticationSASLContinue(result.serverFirst));
  }

  private onSASLResponse(body: Buffer): void {
    const scram = this.scram;
    if (scram === null) return this.fatal('RG_PROTOCOL_VIOLATION', 'SASLResponse before SASLInitialResponse');
    const result = scram.handleClientFinal(body);
    if (!result.ok) return this.authFailed(result.code, result.message);
    this.scram = null;
    this.client.write(Buffer.concat([be.authenticationSASLFinal(result.serverFinal), be.authenticationOk()]));
    const identity: IdentityInput = { name: this.params.get('user') ?? '', method: 'scram-sha-256', claims: {}, cert: null };
    this.onAuthenticated(identity);
  }

  private authFailed(code: ErrorCode, detailForLog: string): void {
    const user = this.params.get('user') ?? '';
    this.host.log.info({ session: this.id, user, client: this.remoteAddress, code, why: detailForLog }, 'authentication failed');
    const method = this.state === 'authenticating' || code === 'RG_JWT_INVALID' || code === 'RG_JWKS_UNAVAILABLE' ? 'jwt' : 'scram-sha-256';
    this.host.metrics.inc(this.host.handles.authFailures[method]);
    // Wrong password and unknown user read the same (no user enumeration).
    if (code === 'RG_AUTH_FAILED') return this.fatal('RG_AUTH_FAILED', `password authentication failed for user "${user}"`);
    if (code === 'RG_JWT_INVALID') return this.fatal('RG_JWT_INVALID', `token authentication failed for user "${user}"`);
    return this.fatal(code, detailForLog);
  }

  /** The identity is proven: ask the authorizer for role and database, then go upstream. */
  private onAuthenticated(identity: IdentityInput): void {
    const database = this.params.get('database') ?? identity.name;
    const input: ConnectInput = {
      identity,
      client: { addr: this.clientAddr, port: this.clientPort, tls: this.tlsInfo !== null },
      request: {
        database,
        role: this.requestedRole,
        application_name: this.params.get('application_name') ?? this.params.get('fallback_application_name') ?? null,
      },
      time: this.host.time.now(),
      proxy: this.config.proxy,
    };
    const audit = this.host.audit;
    if (!audit.canProceed()) return this.fatal('RG_AUDIT_UNAVAILABLE');
    const t0 = performance.now();
    const authorizer = this.host.authorizer();
    const decision = authorizer.connect(input);
    const decisionUs = Math.round((performance.now() - t0) * 1000);
    this.host.metrics.observeDecision('connect', decisionUs / 1e6);
    if (audit.enabled) {
      const verdict = decision.allow && decision.role !== null ? 'allow' : 'deny';
      const record = newRecord('connect', Date.now(), ++this.auditSeq, this.id, this.host.workerId, this.auditIdentityOf(identity), this.auditClient(), decision.database ?? database, decision.role, verdict, decision.rule, decision.reason, authorizer.revision, decisionUs, undefined, undefined, undefined, undefined, undefined, undefined);
      audit.record(record);
    }
    if (!decision.allow || decision.role === null) {
      this.host.log.info({ session: this.id, identity: identity.name, client: input.client.addr, rule: decision.rule, reason: decision.reason }, 'connection denied');
      this.host.metrics.noteDenial({ unix_ms: Date.now(), worker: this.host.workerId, session: this.id, identity: identity.name, client: input.client.addr, kind: 'connect', rule: decision.rule, command: null });
      return this.fatal('RG_CONNECT_DENIED', `connection refused by policy: ${decision.reason}`, `rule: ${decision.rule}`);
    }
    const role = decision.role;
    const targetDb = decision.database ?? database;
    this.context = {
      identity,
      client: input.client,
      proxy: this.config.proxy,
      role,
      database: targetDb,
      // Everything of input a statement decision may depend on, except time and
      // the statement (docs/policy.md: decisions must not depend on client.port).
      cacheKey: [identity.method, identity.name, JSON.stringify(identity.claims), identity.cert?.fingerprint ?? '', role, targetDb, input.client.addr, input.client.tls ? 'tls' : 'plain'].join('\u0001'),
      keyMemo: { bucket: -1, keys: [] },
    };
    if (this.credentials(role) === null) return;
    this.clearStartupTimer();
    const upstreamParams = new Map<string, string>();
    for (const [k, v] of this.params) {
      if (k === 'user' || k === 'database' || k === 'options') continue;
      if (PINNED_PARAMETERS.has(k.toLowerCase())) continue;
      if (k === 'fallback_application_name' && !this.params.has('application_name')) upstreamParams.set('application_name', v);
      else if (this.isPassthrough(k)) upstreamParams.set(k, v);
    }
    const welcomeKey = WelcomeCache.key(this.config.upstream, role, targetDb, upstreamParams);
    this.plan = { role, database: targetDb, parameters: upstreamParams, welcomeKey, announced: null };
    if (this.config.upstream.connect === 'eager') return this.connectUpstream();
    const welcomes = this.host.welcomes;
    const welcome = welcomes.get(welcomeKey);
    if (welcome !== undefined) return this.park(welcome);
    // The first login of its kind: wait for one under way, or be the one.
    this.state = 'connecting';
    const waiting = welcomes.wait(welcomeKey, (greeting) => {
      if (this.state !== 'connecting') return;
      if (greeting === null) this.connectUpstream();
      else this.park(greeting);
    });
    if (waiting) return;
    welcomes.begin(welcomeKey);
    this.connectUpstream();
  }

  /** Greet the client as the server did at the last login of this kind; log in upstream on its first message. */
  private park(welcome: ReadonlyMap<string, string>): void {
    const plan = this.plan as UpstreamPlan;
    plan.announced = welcome;
    this.state = 'parked';
    this.greet(welcome, TxStatus.Idle);
    this.host.log.debug({ session: this.id, role: plan.role, database: plan.database }, 'session ready (upstream deferred)');
    // Bytes the client pipelined before its greeting.
    if (this.heldClientChunks.length > 0) this.connectUpstream();
  }

  /** The current config's upstream credentials for `role`; null (and the session ended) when it has none. */
  private credentials(role: string): RoleCredentials | null {
    const roles = this.host.config.roles;
    if (Object.hasOwn(roles, role)) return roles[role] as RoleCredentials;
    this.host.log.warn({ session: this.id, role }, 'no upstream credentials for role');
    this.fatal('RG_UPSTREAM_AUTH', `rolegate holds no upstream credentials for role "${role}"`);
    return null;
  }

  /** ParameterStatus…, BackendKeyData (this session's own keys), ReadyForQuery. */
  private greet(parameterStatus: ReadonlyMap<string, string>, txStatus: number): void {
    const keys = this.host.register(this);
    this.processId = keys.processId;
    this.secretKey = keys.secretKey;
    const out: Buffer[] = [];
    for (const [k, v] of parameterStatus) out.push(be.parameterStatus(k, v));
    out.push(be.backendKeyData(this.processId, this.secretKey), be.readyForQuery(txStatus));
    this.client.write(Buffer.concat(out));
  }

  /** The parked client sent something: a Terminate alone ends the session here; anything else logs in upstream first. */
  private unpark(chunk: Buffer): void {
    if (chunk.length === TERMINATE.length && chunk.equals(TERMINATE)) return this.close();
    this.heldClientChunks.push(chunk);
    this.connectUpstream();
  }

  private connectUpstream(): void {
    const plan = this.plan as UpstreamPlan;
    // Credentials and target as configured now (a reload may have rotated them while the session was parked).
    const creds = this.credentials(plan.role);
    if (creds === null) {
      this.host.welcomes.fail(plan.welcomeKey); // clients waiting for this login go on their own
      return;
    }
    this.state = 'connecting';
    connectUpstream(this.host.config.upstream, { user: plan.role, database: plan.database, password: creds.password, parameters: plan.parameters }, this.host.scramCache).then(
      (ready) => {
        this.host.welcomes.set(plan.welcomeKey, ready.parameterStatus);
        if (this.state === 'closed') {
          ready.socket.end(TERMINATE);
          return;
        }
        this.upstream = ready.socket;
        this.upstreamProcessId = ready.processId;
        this.upstreamSecretKey = ready.secretKey;
        this.txStatus = ready.txStatus;
        this.state = 'relay';
        ready.socket.on('data', (chunk: Buffer) => this.relayUpstream(chunk));
        ready.socket.on('error', (err) => this.onUpstreamGone(err));
        ready.socket.on('close', () => this.onUpstreamGone(null));
        ready.socket.on('drain', () => this.client.resume());
        if (plan.announced === null) this.greet(ready.parameterStatus, this.txStatus);
        else {
          // What changed since the greeting (e.g. ALTER ROLE ... SET), before any answer.
          const changed = changedParameters(plan.announced, ready.parameterStatus);
          if (changed.length > 0) this.client.write(Buffer.concat(changed.map(([k, v]) => be.parameterStatus(k, v))));
        }
        this.plan = null;
        this.host.log.debug({ session: this.id, role: plan.role, database: plan.database }, 'session ready');
        const held = this.heldClientChunks;
        this.heldClientChunks = [];
        this.client.resume();
        for (const chunk of held) this.relayClient(chunk);
      },
      (err: unknown) => {
        this.host.welcomes.fail(plan.welcomeKey);
        const e = err instanceof RolegateError ? err : new RolegateError('RG_UPSTREAM_UNREACHABLE', String(err));
        this.host.log.warn({ session: this.id, role: plan.role, database: plan.database, code: e.code, err: e.message }, 'upstream connect failed');
        this.host.metrics.inc(this.host.handles.upstreamErrors[upstreamErrorKind(e.code)]);
        // The client learns the class of failure, not the upstream's internals.
        const clientMessage = e.code === 'RG_UPSTREAM_AUTH' ? ERRORS.RG_UPSTREAM_AUTH.message : ERRORS.RG_UPSTREAM_UNREACHABLE.message;
        this.fatal(e.code, clientMessage);
      },
    );
  }

  // ----------------------------------------------------------- relay: client

  private relayClient(chunk: Buffer): void {
    const framer = this.framer;
    const upstream = this.upstream;
    if (upstream === null) return;
    framer.push(chunk);
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        this.flushRun(upstream);
        return this.fatal(framer.errorCode ?? 'RG_PROTOCOL_VIOLATION');
      }
      if (ev === FrameEvent.Raw) {
        // Part of a CopyData message too big for one chunk: forward as it comes.
        if (!this.discardUntilSync) this.extendRun(upstream, framer.buf, framer.start, framer.end);
        continue;
      }
      const type = framer.type;
      if (RELAY_TYPES[type] !== 1) {
        this.flushRun(upstream);
        return this.fatal('RG_UNKNOWN_MESSAGE', `invalid frontend message type ${type} ("${String.fromCharCode(type)}")`);
      }
      if (this.discardUntilSync) {
        // After a denied Parse the server would discard until Sync; so do we.
        if (type === Frontend.Sync) {
          this.discardUntilSync = false;
          this.syncsSent++;
          this.extendRun(upstream, framer.buf, framer.start, framer.end);
        }
        continue;
      }
      switch (type) {
        case Frontend.Query:
          this.onQuery(upstream, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Parse:
          this.onParse(upstream, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Sync:
          this.syncsSent++;
          this.extendRun(upstream, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Terminate:
          this.flushRun(upstream);
          return this.onTerminate();
        case Frontend.FunctionCall:
          this.onFunctionCall(upstream);
          break;
        case Frontend.Bind:
          this.onBind(upstream, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Execute:
          this.onExecute(framer.buf, framer.start, framer.end);
          this.extendRun(upstream, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Close:
          this.onClose(framer.buf, framer.start, framer.end);
          this.extendRun(upstream, framer.buf, framer.start, framer.end);
          break;
        default:
          this.extendRun(upstream, framer.buf, framer.start, framer.end);
      }
      if (this.state === 'closed') return;
    }
    this.flushRun(upstream);
  }

  /** Simple Query ('Q'): decide every statement; forward only if all are allowed. */
  private onQuery(upstream: net.Socket, buf: Buffer, start: number, end: number): void {
    const q = fe.decodeQuery(buf, start, end);
    if (q === null) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed Query message');
    // A simple Query destroys the unnamed prepared statement (as in the server).
    this.sqlState.statements.delete('');
    const verdict = this.decide(buf, q.textStart, q.textEnd, 'simple');
    if (verdict.allow) {
      this.expectSimpleQuery();
      this.syncsSent++;
      this.extendRun(upstream, buf, start, end);
      return;
    }
    this.flushRun(upstream);
    this.injectDenial(upstream, verdict, 'simple', '', { name: null, sql: this.lastSql, facts: this.deniedFacts() });
  }

  /** An allowed Query: one tracked execution per statement (audit records, or just latency). */
  private expectSimpleQuery(): void {
    const last = this.host.authorizer().last;
    const parsed = last.parsed;
    const group = this.syncsSent;
    if (!this.host.audit.enabled) {
      const n = parsed === null ? 1 : Math.max(parsed.length, 1);
      for (let i = 0; i < n; i++) this.tracker.expect({ protocol: 'simple' }, group);
      return;
    }
    if (parsed === null || parsed.length === 0) {
      this.tracker.expect(this.statementRecord('simple', null, this.lastSql, null, 'allow', null, null), group);
      return;
    }
    for (let i = 0; i < parsed.length; i++) {
      const stmt = parsed[i];
      if (stmt === undefined) continue;
      const d = last.decisions[i] ?? null;
      this.tracker.expect(this.statementRecord('simple', null, stmt.facts.sql, stmt.facts, 'allow', d?.rule ?? null, d?.reason ?? null), group);
    }
  }

  /** Parse ('P'): the decision is made here and holds for the statement's Binds. */
  private onParse(upstream: net.Socket, buf: Buffer, start: number, end: number): void {
    const p = fe.decodeParse(buf, start, end);
    if (p === null) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed Parse message');
    const verdict = this.decide(buf, p.textStart, p.textEnd, 'extended');
    const statements = this.sqlState.statements;
    if (verdict.allow) {
      if (statements.size >= SessionSqlState.MAX_ENTRIES && !statements.has(p.name)) {
        this.flushRun(upstream);
        const verdict: StatementDenial = { allow: false, sqlstate: '54000', message: `too many prepared statements in this session (limit ${SessionSqlState.MAX_ENTRIES})`, rule: 'prepared-statement-limit', reason: 'the session holds too many prepared statements' };
        const facts = this.host.authorizer().last.parsed?.[0]?.facts ?? null;
        this.countRefusal(facts?.command ?? null, verdict.rule, 'extended');
        this.injectDenial(upstream, verdict, 'extended', p.name, { name: p.name, sql: this.lastSql, facts });
        this.discardUntilSync = true;
        return;
      }
      const authorizer = this.host.authorizer();
      const last = authorizer.last;
      const rec: PreparedRecord = {
        sql: this.lastSql,
        authorizer,
        bucket: this.bucket(),
        facts: last.parsed?.[0]?.facts ?? null,
        decision: last.decisions[0] ?? null,
        decisionUs: this.lastDecisionUs,
        others: [],
      };
      // Parse of the unnamed statement replaces it. A named one that exists is
      // refused by the server (42P05) and keeps its text — unless the server
      // no longer has it (a DEALLOCATE that failed in an aborted transaction):
      // rolegate cannot tell, so the name may hold either text from now on.
      if (p.name === '') statements.set('', rec);
      else notePrepared(this.sqlState, p.name, rec);
      this.extendRun(upstream, buf, start, end);
      return;
    }
    // A failed Parse of the unnamed statement drops the old one in the server too.
    if (p.name === '') statements.delete('');
    this.flushRun(upstream);
    this.injectDenial(upstream, verdict, 'extended', p.name, { name: p.name, sql: this.lastSql, facts: this.deniedFacts() });
    this.discardUntilSync = true;
  }

  /** Bind ('B'): the Parse decision holds unless the policy or the time bucket changed since. */
  private onBind(upstream: net.Socket, buf: Buffer, start: number, end: number): void {
    const b = fe.decodeBind(buf, start, end);
    if (b === null) return this.fatal('RG_PROTOCOL_VIOLATION', 'malformed Bind message');
    const rec = this.sqlState.statements.get(b.statement);
    if (rec === undefined && this.host.authorizer().enforcesStatements) {
      // Nothing rolegate allowed has this name: whatever the server holds under
      // it (if anything) was never decided. Refused like an unknown EXECUTE.
      this.flushRun(upstream);
      this.lastDecisionUs = 0;
      this.countRefusal(null, 'unknown-prepared-statement', 'extended');
      this.injectDenial(
        upstream,
        { allow: false, sqlstate: '42501', message: `permission denied by rolegate rule "unknown-prepared-statement": prepared statement "${b.statement}" was not prepared through rolegate in this session`, rule: 'unknown-prepared-statement', reason: `prepared statement "${b.statement}" was not prepared through rolegate in this session` },
        'extended',
        `rolegate_denied_${this.nonceBase}`,
        { name: b.statement, sql: '', facts: null },
      );
      this.discardUntilSync = true;
      return;
    }
    if (rec !== undefined) {
      const authorizer = this.host.authorizer();
      const bucket = this.bucket();
      if (rec.authorizer !== authorizer || rec.bucket !== bucket || rec.others.length > 0) {
        const context = this.context;
        const t0 = performance.now();
        this.policyDecided = context !== null;
        const verdict: StatementVerdict =
          context === null ? NO_CONTEXT : authorizer.preparedStatement(context, this.sqlState, rec, this.txStatus !== TxStatus.Idle);
        this.lastDecisionUs = Math.round((performance.now() - t0) * 1000);
        if (!verdict.allow) {
          this.flushRun(upstream);
          // The statement stays prepared upstream; this execution fails like a failed Parse would.
          const facts = this.deniedFacts();
          this.countRefusal(facts?.command ?? null, verdict.rule, 'extended');
          this.injectDenial(upstream, verdict, 'extended', `rolegate_denied_${this.nonceBase}`, { name: b.statement, sql: rec.sql, facts });
          this.discardUntilSync = true;
          return;
        }
        rec.authorizer = authorizer;
        rec.bucket = bucket;
        rec.decision = authorizer.last.decisions[0] ?? rec.decision;
        rec.decisionUs = this.lastDecisionUs;
      }
    }
    // Portals are only needed to name the statement in Execute's audit record.
    if (this.host.audit.enabled) {
      const params = this.host.audit.parameters !== 'off' ? readBindParameters(buf, start, end) : null;
      if (b.portal === '') {
        const slot = this.unnamedPortal;
        slot.statement = b.statement;
        slot.params = params;
        slot.group = this.syncsSent;
      } else {
        const portals = (this.portals ??= new Map());
        if (portals.size >= 1000 && !portals.has(b.portal)) portals.clear();
        portals.set(b.portal, { statement: b.statement, params, group: this.syncsSent });
      }
    }
    this.extendRun(upstream, buf, start, end);
  }

  /** Execute ('E'): one tracked execution of the portal's statement (audit record with parameters, rows, time). */
  private onExecute(buf: Buffer, start: number, end: number): void {
    const group = this.syncsSent; // answered before the ReadyForQuery of the next Sync
    if (!this.host.audit.enabled) {
      this.tracker.expect({ protocol: 'extended' }, group);
      return;
    }
    // Execute = 'E', length, portal name (NUL-terminated), row limit: an empty name is the unnamed portal.
    let portal: BoundPortal | undefined;
    if (end - start === 10 && buf[start + 5] === 0) portal = this.unnamedPortal;
    else {
      const e = fe.decodeExecute(buf, start, end);
      portal = e === null ? undefined : e.portal === '' ? this.unnamedPortal : this.portals?.get(e.portal);
    }
    const statement = portal?.statement ?? null;
    const rec: PreparedRecord | undefined = statement === null ? undefined : this.sqlState.statements.get(statement);
    const audit = this.host.audit;
    const parameters = auditParameters(portal?.params ?? null, audit.parameters, audit.maxParameterBytes);
    this.tracker.expect(this.statementRecord('extended', statement, rec?.sql ?? '', rec?.facts ?? null, 'allow', rec?.decision?.rule ?? null, rec?.decision?.reason ?? null, rec?.decisionUs ?? 0, parameters), group);
  }

  private forgetUnnamedPortal(): void {
    this.unnamedPortal.statement = null;
    this.unnamedPortal.params = null;
  }

  /** Close ('C') of a statement forgets its Parse decision. */
  private onClose(buf: Buffer, start: number, end: number): void {
    const c = fe.decodeTarget(buf, start, end);
    if (c !== null && c.kind === 'S') this.sqlState.statements.delete(c.name);
    if (c !== null && c.kind === 'P') {
      if (c.name === '') this.forgetUnnamedPortal();
      else this.portals?.delete(c.name);
    }
  }

  private bucket(): number {
    return Math.floor(this.host.time.nowMs() / this.config.time.bucketMs);
  }

  /** FunctionCall ('F') calls a function by OID, invisible to any SQL parser: refused. */
  private onFunctionCall(upstream: net.Socket): void {
    this.flushRun(upstream);
    this.lastDecisionUs = 0;
    this.countRefusal('FUNCTION CALL', 'function-call-message', 'simple');
    this.injectDenial(
      upstream,
      { allow: false, sqlstate: ERRORS.RG_FUNCTION_CALL_REFUSED.sqlstate, message: ERRORS.RG_FUNCTION_CALL_REFUSED.message, rule: 'function-call-message', reason: 'the FunctionCall message bypasses SQL and is refused' },
      'simple',
      '',
      { name: null, sql: '', facts: null, command: 'FUNCTION CALL' },
    );
  }

  /** Decide a Query's or Parse's text; the decoded text is left in lastSql for the caller (decoded once). */
  private decide(buf: Buffer, textStart: number, textEnd: number, protocol: 'simple' | 'extended'): StatementVerdict {
    const sql = buf.toString('utf8', textStart, textEnd);
    this.lastSql = sql;
    this.lastDecisionUs = 0;
    this.policyDecided = false;
    const problem = fe.checkSqlBytes(buf, textStart, textEnd);
    if (problem !== null) {
      this.countRefusal(null, 'invalid-text', protocol);
      return { allow: false, sqlstate: ERRORS[problem].sqlstate, message: ERRORS[problem].message, rule: 'invalid-text', reason: ERRORS[problem].message };
    }
    const context = this.context;
    if (context === null) {
      this.countRefusal(null, NO_CONTEXT.rule, protocol);
      return NO_CONTEXT;
    }
    if (!this.host.audit.canProceed()) {
      // Fail-closed audit: nothing runs that cannot be recorded.
      this.countRefusal(null, 'audit-unavailable', protocol);
      return { allow: false, sqlstate: ERRORS.RG_AUDIT_UNAVAILABLE.sqlstate, message: ERRORS.RG_AUDIT_UNAVAILABLE.message, rule: 'audit-unavailable', reason: 'the audit log cannot be written (fail-closed)' };
    }
    this.policyDecided = true;
    const t0 = performance.now();
    const authorizer = this.host.authorizer();
    const verdict = authorizer.statements(context, this.sqlState, sql, protocol, this.txStatus !== TxStatus.Idle);
    const us = (performance.now() - t0) * 1000;
    this.lastDecisionUs = Math.round(us);
    const metrics = this.host.metrics;
    metrics.observeDecision('statement', us / 1e6);
    const parsed = authorizer.last.parsed;
    if (parsed === null) {
      metrics.countStatement(null, verdict.allow, protocol);
    } else {
      const decisions = authorizer.last.decisions;
      for (let i = 0; i < parsed.length && (verdict.allow || i < decisions.length); i++) {
        const d = decisions[i];
        metrics.countStatement(parsed[i]?.facts.command ?? null, d === undefined ? verdict.allow : d.allow, protocol);
      }
    }
    if (!verdict.allow) metrics.countDenial(verdict.rule);
    return verdict;
  }

  /** A statement refused without decide()'s policy path (which counts its own): counted the same way. */
  private countRefusal(command: string | null, rule: string, protocol: 'simple' | 'extended'): void {
    this.host.metrics.countStatement(command, false, protocol);
    this.host.metrics.countDenial(rule);
  }

  /**
   * The facts of the statement the policy was deciding when it refused (for
   * an EXECUTE whose prepared text was refused, the EXECUTE's); null when no
   * policy decision was made — the authorizer's `last` is the worker's, and
   * would name another statement, maybe another session's.
   */
  private deniedFacts(): StatementFacts | null {
    if (!this.policyDecided) return null;
    const last = this.host.authorizer().last;
    return last.parsed?.[last.decisions.length - 1]?.facts ?? null;
  }

  private onExecutionDone(r: Tracked): void {
    if (r.query_us !== undefined) this.host.metrics.observeQuery(r.protocol ?? 'simple', r.query_us / 1e6);
    if (r.audit !== undefined) this.host.audit.record(r as AuditRecord);
  }

  /** The identity as this session's records share it (one object while the name holds). */
  private auditClient(): AuditRecord['client'] {
    return (this.auditClientObject ??= { addr: this.clientAddr, port: this.clientPort });
  }

  private auditIdentityOf(identity: IdentityInput): AuditRecord['identity'] {
    if (this.auditIdentity?.name !== identity.name) this.auditIdentity = { name: identity.name, method: identity.method };
    return this.auditIdentity;
  }

  private statementRecord(
    protocol: 'simple' | 'extended',
    statementName: string | null,
    sql: string,
    facts: StatementFacts | null,
    decision: 'allow' | 'deny',
    rule: string | null,
    reason: string | null,
    decisionUs: number = this.lastDecisionUs,
    parameters: AuditParameter[] | undefined = undefined,
  ): AuditRecord {
    const ctx = this.context;
    const identity: IdentityInput = ctx?.identity ?? { name: this.params.get('user') ?? '', method: 'scram-sha-256', claims: {}, cert: null };
    const tables = facts === null ? NO_TABLES : tableNames(facts.tables);
    const revision = this.host.authorizer().revision;
    return newRecord('statement', Date.now(), ++this.auditSeq, this.id, this.host.workerId, this.auditIdentityOf(identity), this.auditClient(), ctx?.database ?? '', ctx?.role ?? null, decision, rule, reason, revision, decisionUs, protocol, statementName ?? undefined, sql, facts?.command ?? null, tables, parameters);
  }

  /**
   * Replace a denied message with one the server is certain to reject (a
   * syntax error naming a nonce), so the server's own error handling keeps the
   * protocol state right; the matching ErrorResponse is swapped for ours.
   */
  private injectDenial(upstream: net.Socket, verdict: StatementDenial, protocol: 'simple' | 'extended', statementName: string, denied: DeniedStatement): void {
    if (this.host.audit.enabled) {
      const record = this.statementRecord(protocol, denied.name, denied.sql, denied.facts, 'deny', verdict.rule, verdict.reason);
      if (denied.command !== undefined) record.command = denied.command;
      record.outcome = 'not-run';
      this.host.audit.record(record);
    }
    const identity = this.context?.identity.name ?? this.params.get('user') ?? '';
    this.host.metrics.noteDenial({ unix_ms: Date.now(), worker: this.host.workerId, session: this.id, identity, client: this.clientAddr, kind: 'statement', rule: verdict.rule, command: denied.command ?? denied.facts?.command ?? null });
    const nonce = `rolegate_denied_${this.nonceBase}_${(++this.nonceSeq).toString(36)}`;
    const response = be.errorResponse({
      severity: 'ERROR',
      sqlstate: verdict.sqlstate,
      message: verdict.message,
      detail: `rule: ${verdict.rule}; policy revision: ${this.host.authorizer().revision}`,
      position: verdict.position,
    });
    if (protocol === 'simple') {
      this.denials.push({ nonce, response });
      this.syncsSent++;
      upstream.write(simpleQuery(nonce));
    } else {
      // Same statement name: a denied Parse of the unnamed statement drops the
      // previous unnamed statement, exactly as a failed Parse does in the server.
      this.denials.push({ nonce, response });
      upstream.write(parseMessage(statementName, nonce));
    }
    // Skipped injections (an earlier error in the pipeline) leave entries behind: bounded.
    if (this.denials.length > 64) this.denials.shift();
    this.host.log.info({ session: this.id, rule: verdict.rule, reason: verdict.reason, protocol }, 'statement denied');
  }

  private onTerminate(): void {
    const upstream = this.upstream;
    this.state = 'closed';
    this.tracker.close();
    if (upstream !== null) upstream.end(TERMINATE);
    this.client.end();
    this.host.unregister(this);
  }

  // --------------------------------------------------------- relay: upstream

  private relayUpstream(chunk: Buffer): void {
    const framer = this.upstreamFramer;
    const client = this.client;
    framer.push(chunk);
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        this.flushRun(client);
        this.host.log.warn({ session: this.id }, 'upstream sent an invalid message length');
        return this.fatal('RG_UPSTREAM_PROTOCOL');
      }
      if (ev === FrameEvent.Raw) {
        this.extendRun(client, framer.buf, framer.start, framer.end);
        continue;
      }
      const buf = framer.buf;
      const start = framer.start;
      const end = framer.end;
      switch (framer.type) {
        case Backend.ReadyForQuery:
          if (end - start === 6) this.txStatus = buf[start + 5] as number;
          this.onReadyForQuery();
          this.extendRun(client, buf, start, end);
          break;
        case Backend.CommandComplete:
          this.tracker.onCommandComplete(commandCompleteRows(buf, start, end));
          this.extendRun(client, buf, start, end);
          break;
        case Backend.EmptyQueryResponse:
          this.tracker.onEmptyQuery();
          this.extendRun(client, buf, start, end);
          break;
        case Backend.PortalSuspended:
          this.tracker.onPortalSuspended();
          this.extendRun(client, buf, start, end);
          break;
        case Backend.ErrorResponse:
          this.onUpstreamError(client, buf, start, end);
          break;
        case Backend.ParameterStatus:
          this.onParameterStatus(buf, start, end);
          if (this.state === 'closed') return;
          this.extendRun(client, buf, start, end);
          break;
        default:
          this.extendRun(client, buf, start, end);
      }
    }
    this.flushRun(client);
  }

  private onReadyForQuery(): void {
    this.tracker.onReadyForQuery();
    // Portals end with their transaction; idle means none bound up to this group is left.
    const group = this.readyReceived++;
    if (this.txStatus === TxStatus.Idle) {
      if (this.unnamedPortal.group <= group) this.forgetUnnamedPortal();
      if (this.portals !== null && this.portals.size > 0) {
        for (const [name, p] of this.portals) if (p.group <= group) this.portals.delete(name);
      }
    }
  }

  private onUpstreamError(client: net.Socket, buf: Buffer, start: number, end: number): void {
    const fields = be.decodeErrorFields(buf.subarray(start + 5, end));
    if (fields.get('V') === 'FATAL' || fields.get('S') === 'FATAL') this.upstreamSentFatal = true;
    // Matched by nonce alone, not by counting ReadyForQuery: a Query sent inside
    // a failed pipeline gets none, so counts can drift; a nonce cannot.
    const message = fields.get('M') ?? '';
    const denials = this.denials;
    for (let i = 0; i < denials.length; i++) {
      const denial = denials[i] as PendingDenial;
      if (!message.includes(denial.nonce)) continue;
      // Earlier denials whose injected statement the server skipped are done too.
      denials.splice(0, i + 1);
      this.flushRun(client);
      client.write(denial.response);
      return;
    }
    this.tracker.onError(fields.get('C') ?? 'XX000');
    this.extendRun(client, buf, start, end);
  }

  /** The server reports parameter changes; the pinned ones must never change. */
  private onParameterStatus(buf: Buffer, start: number, end: number): void {
    const ps = be.decodeParameterStatus(buf.subarray(start + 5, end));
    if (ps === null) return;
    const pinned = PINNED_PARAMETERS.get(ps.name.toLowerCase());
    if (pinned !== undefined && ps.value.toLowerCase() !== pinned.toLowerCase()) {
      this.host.log.warn({ session: this.id, parameter: ps.name, value: ps.value }, 'pinned parameter changed upstream; closing session');
      this.fatal('RG_UPSTREAM_PARAMETER', `parameter "${ps.name}" changed to "${ps.value}"; rolegate requires ${ps.name}=${pinned}`);
    }
  }

  // ------------------------------------------------------------ forward runs

  /** Add buf[start, end) to the current run; write the run out when it is not contiguous. */
  private extendRun(sink: net.Socket, buf: Buffer, start: number, end: number): void {
    if (this.runBuf === buf && this.runEnd === start) {
      this.runEnd = end;
      return;
    }
    this.flushRun(sink);
    this.runBuf = buf;
    this.runStart = start;
    this.runEnd = end;
  }

  private flushRun(sink: net.Socket): void {
    const buf = this.runBuf;
    if (buf === null) return;
    this.runBuf = null;
    if (this.runEnd <= this.runStart) return;
    const slice = this.runStart === 0 && this.runEnd === buf.length ? buf : buf.subarray(this.runStart, this.runEnd);
    if (!sink.write(slice)) {
      // Backpressure: stop reading the other side until this one drains.
      if (sink === this.upstream) this.client.pause();
      else this.upstream?.pause();
    }
  }

  // ------------------------------------------------------------------ cancel

  /** Called by the worker for a CancelRequest naming this session (secret already checked). */
  cancelUpstream(): void {
    if (this.upstream === null || this.state !== 'relay') return;
    sendUpstreamCancel(this.config.upstream, this.upstreamProcessId, this.upstreamSecretKey, (err) =>
      this.host.log.warn({ session: this.id, err: err.message }, 'upstream cancel failed'),
    );
  }

  // ------------------------------------------------------------------- ending

  private onStartupTimeout(): void {
    this.startupTimer = null;
    const state = this.state;
    if (state !== 'parked' && state !== 'connecting' && state !== 'relay' && state !== 'closed') {
      this.fatal('RG_STARTUP_TIMEOUT', state === 'startup' || state === 'proxy-header' || state === 'tls-handshake' ? undefined : 'authentication timed out');
    }
  }

  private clearStartupTimer(): void {
    if (this.startupTimer !== null) {
      clearTimeout(this.startupTimer);
      this.startupTimer = null;
    }
  }

  private onClientGone(err: Error | null): void {
    if (err !== null) this.host.log.debug({ session: this.id, err: err.message }, 'client socket error');
    if (this.state === 'closed') return;
    this.releaseUpstream();
    this.state = 'closed';
    this.tracker.close();
    this.clearStartupTimer();
    this.client.destroy();
    this.host.unregister(this);
  }

  private onUpstreamGone(err: Error | null): void {
    if (this.state === 'closed') return;
    if (err !== null) this.host.log.warn({ session: this.id, err: err.message }, 'upstream socket error');
    if (this.upstreamSentFatal) {
      // The server already told the client why (e.g. 57P01 on shutdown).
      this.close();
      return;
    }
    this.fatal('RG_UPSTREAM_LOST');
  }

  /** End the upstream session; a query still running is cancelled first, so it cannot run on unobserved. */
  private releaseUpstream(): void {
    const upstream = this.upstream;
    if (upstream === null) return;
    if (this.state === 'relay' && this.syncsSent > this.readyReceived) this.cancelUpstream();
    upstream.end(TERMINATE);
    // An upstream that does not close after Terminate is cut off.
    setTimeout(() => upstream.destroy(), 5000).unref();
  }

  /** Administrative end of the session (drain timeout, shutdown). */
  terminate(code: ErrorCode, message?: string): void {
    if (this.state === 'closed') return;
    this.fatal(code, message);
  }

  /** Send a FATAL ErrorResponse and close the connection. */
  fatal(code: ErrorCode, message?: string, detail?: string): void {
    if (this.state === 'closed') return;
    if (this.state !== 'relay') this.host.metrics.inc(this.host.handles.refused[refuseReason(code)]);
    const entry = ERRORS[code];
    if (!this.client.destroyed && this.client.writable) {
      this.client.write(be.errorResponse({ severity: 'FATAL', sqlstate: entry.sqlstate, message: message ?? entry.message, detail }));
    }
    this.close();
  }

  close(): void {
    if (this.state === 'closed') return;
    this.releaseUpstream();
    this.state = 'closed';
    this.tracker.close();
    this.clearStartupTimer();
    this.client.end();
    // A peer that never reads must not hold the socket forever.
    setTimeout(() => this.client.destroy(), 5000).unref();
    this.host.unregister(this);
  }
}

function simpleQuery(sql: string): Buffer {
  const text = Buffer.from(sql + '\0', 'utf8');
  const out = Buffer.allocUnsafe(5 + text.length);
  out[0] = Frontend.Query;
  out.writeInt32BE(4 + text.length, 1);
  text.copy(out, 5);
  return out;
}

function parseMessage(name: string, sql: string): Buffer {
  const body = Buffer.from(name + '\0' + sql + '\0\0\0', 'utf8');
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = Frontend.Parse;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

/**
 * The startup `options` parameter: space-separated command-line switches, of
 * which only `-c name=value` / `--name=value` are meaningful (backslash escapes
 * a space, as in libpq). Returns the pairs or an error message.
 */
export function parseOptions(options: string): Array<[string, string]> | string {
  const words: string[] = [];
  let cur = '';
  let escaped = false;
  for (const ch of options) {
    if (escaped) {
      cur += ch;
      escaped = false;
    } else if (ch === '\\') {
      escaped = true;
    } else if (ch === ' ' || ch === '\t') {
      if (cur !== '') words.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur !== '') words.push(cur);
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i] as string;
    if (w === '-c') {
      const next = words[++i];
      if (next === undefined) return 'startup option "-c" needs name=value';
      w = next;
    } else if (w.startsWith('-c')) {
      w = w.slice(2);
    } else if (w.startsWith('--')) {
      w = w.slice(2);
    } else {
      return `startup option "${w}" is not allowed through rolegate (only -c name=value)`;
    }
    const eq = w.indexOf('=');
    if (eq <= 0) return `startup option "${w}" needs name=value`;
    pairs.push([w.slice(0, eq).replaceAll('-', '_'), w.slice(eq + 1)]);
  }
  return pairs;
}

/** A random 31-bit secret for BackendKeyData (never the upstream's key). */
export function randomSecretKey(): number {
  return randomInt(1, 0x7fffffff);
}

function firstString(v: string | string[] | undefined): string | null {
  if (v === undefined) return null;
  return Array.isArray(v) ? (v[0] ?? null) : v;
}

function formatSubject(subject: tls.Certificate | undefined): string {
  if (subject === undefined) return '';
  return Object.entries(subject)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : String(v)}`)
    .join(',');
}

/** The identity a verified client certificate carries (auth.cert.identity). */
function certIdentity(info: TlsInfo, source: CertIdentitySource): string | null {
  if (source === 'cn') return info.commonName;
  const prefix = source === 'san-dns' ? 'DNS:' : source === 'san-uri' ? 'URI:' : 'email:';
  const entry = info.san.find((x) => x.startsWith(prefix));
  return entry === undefined ? null : entry.slice(prefix.length);
}
