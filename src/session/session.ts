// One client connection, start to end, wired to its sockets. The parts:
//   handshake.ts      startup packets, TLS, authentication → an identity
//   (this file)       the connect decision, the upstream login (now, or parked
//                     until the first message), the sockets, cancel, the end
//   relay.ts          the logged-in protocol state machine, both directions
//   statement-log.ts  audit records, tracked executions, portals
// docs/QUERY_LIFECYCLE.md walks a connection and one query through them.
//
// States (`state`): the handshake's phases (proxy-header, startup,
// tls-handshake, sasl-initial, sasl-final, password, authenticating), then
//   parked:     authenticated and greeted, upstream login deferred to the
//               first message (upstream.connect: lazy)
//   connecting: logging in upstream; client bytes are held
//   relay:      the relay core runs
//   closed

import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { peerTlsInfo } from '../auth/client-cert.ts';
import type { Config, RoleCredentials } from '../config/config.ts';
import type { SessionContext } from '../decision/authorizer.ts';
import { connectInput, sessionContext } from '../decision/inputs.ts';
import { ERRORS, RolegateError, type ErrorCode } from '../errors.ts';
import { upstreamErrorKind } from '../metrics/definitions.ts';
import type { IdentityInput } from '../policy/contract.ts';
import * as be from '../protocol/backend.ts';
import { TxStatus } from '../protocol/constants.ts';
import * as encode from '../protocol/frontend-encode.ts';
import { PARSER_SETTINGS } from '../sql/guarded-effects.ts';
import { connectUpstream, sendUpstreamCancel, type UpstreamReady } from '../upstream/connect.ts';
import { changedParameters, WelcomeCache } from '../upstream/welcome.ts';
import { clientLineAllowed } from './client-log-lines.ts';
import { Handshake, isPassthrough, normaliseAddress, type HandshakeIo, type HandshakePhase } from './handshake.ts';
import { DRAIN_MESSAGE, NONCE_PREFIX, Relay, type RelayIo } from './relay.ts';
import { refuseReason, type CancelTarget, type SessionHost } from './session-host.ts';
import { StatementLog } from './statement-log.ts';

export type SessionState = Exclude<HandshakePhase, 'done'> | 'parked' | 'connecting' | 'relay' | 'closed';

/** The upstream login a session will make (now, or on its first message when parked). */
interface UpstreamPlan {
  role: string;
  database: string;
  parameters: Map<string, string>;
  welcomeKey: string;
  /** ParameterStatus values the client was greeted with (parked); null: not greeted yet. */
  announced: ReadonlyMap<string, string> | null;
}

let sessionCounter = 0;
/**
 * Session ids are this prefix and a counter. Each worker thread loads this
 * module anew (its own counter), and a restarted worker starts over: the
 * prefix is random per module instance, so ids stay unique across workers
 * and restarts (the pid would not: workers are threads of one process).
 */
const SESSION_PREFIX = randomBytes(4).toString('hex');

/** Client bytes held while the upstream login runs; past this many chunks the client is paused. */
const MAX_HELD_CHUNKS = 64;
/** A peer that never reads (or an upstream that never closes) is cut off this long after the end. */
const CLOSE_GRACE_MS = 5000;

export class ClientSession implements CancelTarget {
  readonly id: string;
  /** The client's socket: the TCP socket, or the TLSSocket over it after SSLRequest. */
  client: net.Socket;
  processId = 0;
  secretKey = 0;

  private readonly host: SessionHost;
  private readonly config: Config;
  private readonly handshake: Handshake;
  private phase: 'handshake' | 'parked' | 'connecting' | 'relay' | 'closed' = 'handshake';
  private startupTimer: NodeJS.Timeout | null;
  /** Per-session part of denial nonces: one SQL identifier token ([a-z0-9_], < 63 bytes). */
  private readonly nonceBase: string;
  private log: StatementLog | null = null;
  private context: SessionContext | null = null;
  private plan: UpstreamPlan | null = null;
  /** Client bytes that arrived while the upstream was being connected. */
  private heldClientChunks: Buffer[] = [];

  private upstream: net.Socket | null = null;
  private upstreamProcessId = 0;
  private upstreamSecretKey = 0;
  private relay: Relay | null = null;

  constructor(host: SessionHost, client: net.Socket) {
    this.host = host;
    this.config = host.config;
    this.client = client;
    this.id = `${SESSION_PREFIX}-${(++sessionCounter).toString(36)}`;
    this.nonceBase = `${NONCE_PREFIX}_${sessionCounter.toString(36)}`;
    const handshakeHost = {
      config: this.config,
      mockSeed: host.mockSeed,
      log: host.log,
      authFailed: (method: 'scram-sha-256' | 'cert' | 'jwt' | 'other') => host.metrics.inc(host.handles.authFailures[method]),
      tlsEnabled: () => host.tlsEnabled(),
      jwt: () => host.jwt(),
      trustedProxy: (addr: string) => host.trustedProxy(addr),
      bufferBudget: host.bufferBudget ?? null,
    };
    this.handshake = new Handshake(handshakeHost, this.handshakeIo, this.id, normaliseAddress(client.remoteAddress), client.remotePort ?? 0);
    client.setNoDelay(true);
    this.attach(client);
    client.on('error', (err) => this.onClientGone(err));
    client.on('close', () => this.onClientGone(null));
    this.startupTimer = setTimeout(() => this.onStartupTimeout(), this.config.limits.startupTimeoutMs);
  }

  /** The state as metrics and the status page show it. */
  get state(): SessionState {
    return this.phase === 'handshake' ? (this.handshake.phase === 'done' ? 'closed' : this.handshake.phase) : this.phase;
  }

  get remoteAddress(): string {
    return this.handshake.clientAddr;
  }

  private readonly onData = (chunk: Buffer): void => this.onClientData(chunk);
  private readonly onDrain = (): void => {
    this.upstream?.resume();
  };

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
  }

  private onClientData(chunk: Buffer): void {
    switch (this.phase) {
      case 'relay':
        (this.relay as Relay).onClientBytes(chunk);
        return;
      case 'handshake':
        this.handshake.onBytes(chunk);
        return;
      case 'connecting':
        this.heldClientChunks.push(chunk);
        if (this.heldClientChunks.length > MAX_HELD_CHUNKS) this.client.pause();
        return;
      case 'parked':
        this.unpark(chunk);
        return;
      case 'closed':
        return;
      default: {
        const unreachable: never = this.phase;
        throw new Error(`unhandled session phase ${String(unreachable)}`);
      }
    }
  }

  // -------------------------------------------------------------- handshake

  private readonly handshakeIo: HandshakeIo = {
    send: (bytes) => {
      this.client.write(bytes);
    },
    startTls: (first, direct) => this.startTls(first, direct),
    cancel: (processId, secretKey) => {
      // The cancel connection carries nothing else; the protocol closes it without a reply.
      this.phase = 'closed';
      this.clearStartupTimer();
      this.client.end();
      this.host.unregister(this);
      this.host.routeCancel(processId, secretKey);
    },
    fail: (code, message, detail) => this.fatal(code, message, detail),
    close: () => this.close(),
    authenticated: (identity, rest) => {
      this.onAuthenticated(identity);
      if (rest === null) return;
      // What the client pipelined after authenticating waits for the upstream.
      if (this.phase === 'parked') this.unpark(rest);
      else if (this.phase === 'connecting') this.heldClientChunks.push(rest);
    },
  };

  /** Wrap the client socket in TLS (after 'S', or direct TLS with `first` bytes already read). */
  private startTls(first: Buffer | null, direct: boolean): void {
    const raw = this.client;
    raw.off('data', this.onData);
    raw.off('drain', this.onDrain);
    this.host.tlsUpgrade(
      raw,
      first,
      (secure) => this.onTlsReady(secure, direct),
      (err) => {
        this.host.log.debug({ session: this.id, err: err.message }, 'TLS handshake failed');
        this.phase = 'closed';
        this.handshake.stop();
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
    this.attach(secure);
    this.handshake.tlsReady(peerTlsInfo(secure), direct, secure.alpnProtocol);
  }

  // ------------------------------------------------------- login and upstream

  /** The identity is proven: ask the authorizer for role and database, then go upstream. */
  private onAuthenticated(identity: IdentityInput): void {
    this.phase = 'connecting';
    const hs = this.handshake;
    const database = hs.params.get('database') ?? identity.name;
    const input = connectInput(
      identity,
      { addr: hs.clientAddr, port: hs.clientPort, tls: hs.tls !== null },
      { database, role: hs.requestedRole, application_name: hs.params.get('application_name') ?? hs.params.get('fallback_application_name') ?? null },
      this.host.time.now(),
      this.config.proxy,
    );
    if (!this.host.audit.canProceed()) return this.fatal('RG_AUDIT_UNAVAILABLE');
    const log = (this.log = new StatementLog(this.host, this.id, input.client));
    const t0 = performance.now();
    const authorizer = this.host.authorizer();
    const decision = authorizer.connect(input);
    const decisionUs = Math.round((performance.now() - t0) * 1000);
    this.host.metrics.observeDecision('connect', decisionUs / 1e6);
    // Shadow mode: the candidate decides the same login (counted; the record names a disagreement).
    const shadowed = this.host.shadow()?.connect(input, decision) ?? null;
    log.connect(identity, decision.database ?? database, decision, authorizer.revision, decisionUs, input, shadowed);
    if (!decision.allow || decision.role === null) {
      if (clientLineAllowed(this.host.log, 'connection denied')) this.host.log.info({ session: this.id, identity: identity.name, client: input.client.addr, rule: decision.rule, reason: decision.reason }, 'connection denied');
      this.host.metrics.noteDenial({ unix_ms: Date.now(), worker: this.host.workerId, session: this.id, identity: identity.name, client: input.client.addr, kind: 'connect', rule: decision.rule, command: null });
      return this.fatal('RG_CONNECT_DENIED', `connection refused by policy: ${decision.reason}`, `rule: ${decision.rule}`);
    }
    const role = decision.role;
    const targetDb = decision.database ?? database;
    this.context = { ...sessionContext(input, role, targetDb), sessionId: this.id };
    log.begin(this.context);
    if (this.credentials(role) === null) return;
    this.clearStartupTimer();
    const upstreamParams = new Map<string, string>();
    for (const [k, v] of hs.params) {
      if (k === 'user' || k === 'database' || k === 'options') continue;
      if (PARSER_SETTINGS.has(k.toLowerCase())) continue;
      if (k === 'fallback_application_name' && !hs.params.has('application_name')) upstreamParams.set('application_name', v);
      else if (isPassthrough(this.config, k)) upstreamParams.set(k, v);
    }
    const welcomeKey = WelcomeCache.key(this.config.upstream, role, targetDb, upstreamParams);
    this.plan = { role, database: targetDb, parameters: upstreamParams, welcomeKey, announced: null };
    if (this.config.upstream.connect === 'eager') return this.connectUpstream();
    const welcomes = this.host.welcomes;
    const welcome = welcomes.get(welcomeKey);
    if (welcome !== undefined) return this.park(welcome);
    // The first login of its kind: wait for one under way, or be the one.
    const waiting = welcomes.wait(welcomeKey, (greeting) => {
      if (this.phase !== 'connecting') return;
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
    this.phase = 'parked';
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
    if (chunk.equals(encode.TERMINATE)) return this.close();
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
    this.phase = 'connecting';
    connectUpstream(this.host.config.upstream, { user: plan.role, database: plan.database, password: creds.password, parameters: plan.parameters }, this.host.scramCache).then(
      (ready) => this.onUpstreamReady(plan, ready),
      (err: unknown) => {
        this.host.welcomes.fail(plan.welcomeKey);
        const e = err instanceof RolegateError ? err : new RolegateError('RG_UPSTREAM_UNREACHABLE', String(err));
        if (clientLineAllowed(this.host.log, 'upstream connect failed')) this.host.log.warn({ session: this.id, role: plan.role, database: plan.database, code: e.code, err: e.message }, 'upstream connect failed');
        this.host.metrics.inc(this.host.handles.upstreamErrors[upstreamErrorKind(e.code)]);
        // The client learns the class of failure, not the upstream's internals.
        const clientMessage = e.code === 'RG_UPSTREAM_AUTH' ? ERRORS.RG_UPSTREAM_AUTH.message : ERRORS.RG_UPSTREAM_UNREACHABLE.message;
        this.fatal(e.code, clientMessage);
      },
    );
  }

  private onUpstreamReady(plan: UpstreamPlan, ready: UpstreamReady): void {
    this.host.welcomes.set(plan.welcomeKey, ready.parameterStatus);
    if (this.phase === 'closed') {
      ready.socket.end(encode.TERMINATE);
      return;
    }
    const upstream = (this.upstream = ready.socket);
    this.upstreamProcessId = ready.processId;
    this.upstreamSecretKey = ready.secretKey;
    const relay = (this.relay = new Relay(this.host, this.relayIo, this.log as StatementLog, {
      sessionId: this.id,
      nonceBase: this.nonceBase,
      maxMessageBytes: this.config.limits.maxMessageBytes,
      maxStatementBytes: this.config.limits.maxStatementBytes,
      bucketMs: this.config.time.bucketMs,
      context: this.context as SessionContext,
      txStatus: ready.txStatus,
    }));
    this.phase = 'relay';
    upstream.on('data', (chunk: Buffer) => relay.onServerBytes(chunk));
    upstream.on('error', (err) => this.onUpstreamGone(err));
    upstream.on('close', () => this.onUpstreamGone(null));
    upstream.on('drain', () => this.client.resume());
    if (plan.announced === null) this.greet(ready.parameterStatus, ready.txStatus);
    else {
      // What changed since the greeting (e.g. ALTER ROLE ... SET), before any answer.
      const changed = changedParameters(plan.announced, ready.parameterStatus);
      if (changed.length > 0) this.client.write(Buffer.concat(changed.map(([k, v]) => be.parameterStatus(k, v))));
    }
    this.plan = null;
    this.host.log.debug({ session: this.id, role: plan.role, database: plan.database }, 'session ready');
    // What the server sent after its ReadyForQuery in the login's last chunk (a NOTIFY, a ParameterStatus).
    if (ready.rest.length > 0) relay.onServerBytes(ready.rest);
    const held = this.heldClientChunks;
    this.heldClientChunks = [];
    this.client.resume();
    for (const chunk of held) relay.onClientBytes(chunk);
  }

  /** The relay core's two sides: each write that fills a socket's buffer pauses the other side until it drains. */
  private readonly relayIo: RelayIo = {
    toServer: (bytes) => {
      if (!(this.upstream as net.Socket).write(bytes)) this.client.pause();
    },
    toClient: (bytes) => {
      if (!this.client.write(bytes)) this.upstream?.pause();
    },
    fail: (code, message) => this.fatal(code, message),
    pauseClient: () => this.client.pause(),
    resumeClient: () => this.client.resume(),
    cancelServer: () => {
      sendUpstreamCancel(this.config.upstream, this.upstreamProcessId, this.upstreamSecretKey, (err) =>
        this.host.log.warn({ session: this.id, err: err.message }, 'upstream cancel failed'),
      );
    },
    terminate: () => {
      this.phase = 'closed';
      this.log?.end();
      this.upstream?.end(encode.TERMINATE);
      this.client.end();
      this.host.unregister(this);
    },
  };

  // ------------------------------------------------------------------ cancel

  /** Called by the worker for a CancelRequest naming this session (secret already checked). */
  cancelUpstream(): void {
    if (this.phase === 'relay') this.relay?.cancel();
  }

  // ------------------------------------------------------------------- ending

  private onStartupTimeout(): void {
    this.startupTimer = null;
    if (this.phase !== 'handshake') return;
    const state = this.state;
    this.fatal('RG_STARTUP_TIMEOUT', state === 'startup' || state === 'proxy-header' || state === 'tls-handshake' ? undefined : 'authentication timed out');
  }

  private clearStartupTimer(): void {
    if (this.startupTimer !== null) {
      clearTimeout(this.startupTimer);
      this.startupTimer = null;
    }
  }

  /** Mark the session closed everywhere (handshake, relay, statement log, timers). */
  private markClosed(): void {
    this.phase = 'closed';
    this.handshake.stop();
    this.relay?.end();
    this.log?.end();
    this.clearStartupTimer();
  }

  private onClientGone(err: Error | null): void {
    if (err !== null) this.host.log.debug({ session: this.id, err: err.message }, 'client socket error');
    if (this.phase === 'closed') return;
    this.releaseUpstream();
    this.markClosed();
    this.client.destroy();
    this.host.unregister(this);
  }

  private onUpstreamGone(err: Error | null): void {
    if (this.phase === 'closed') return;
    if (err !== null) this.host.log.warn({ session: this.id, err: err.message }, 'upstream socket error');
    if (this.relay?.serverSentFatal === true) {
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
    if (this.phase === 'relay' && this.relay?.busy === true) this.cancelUpstream();
    upstream.end(encode.TERMINATE);
    // An upstream that does not close after Terminate is cut off.
    setTimeout(() => upstream.destroy(), CLOSE_GRACE_MS).unref();
  }

  /**
   * The proxy is draining: end the session at its transaction boundary. A
   * relaying session ends now if idle, else at its next idle ReadyForQuery
   * (the relay core decides); one without an upstream session (handshake,
   * parked, logging in) has no transaction and ends now.
   */
  drain(): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'relay') (this.relay as Relay).drain();
    else this.fatal('RG_SHUTDOWN', DRAIN_MESSAGE);
  }

  /** Administrative end of the session (drain timeout, shutdown). */
  terminate(code: ErrorCode, message?: string): void {
    if (this.phase === 'closed') return;
    this.fatal(code, message);
  }

  /** Send a FATAL ErrorResponse and close the connection. */
  fatal(code: ErrorCode, message?: string, detail?: string): void {
    if (this.phase === 'closed') return;
    if (this.phase !== 'relay') this.host.metrics.inc(this.host.handles.refused[refuseReason(code)]);
    const entry = ERRORS[code];
    if (!this.client.destroyed && this.client.writable) {
      this.client.write(be.errorResponse({ severity: 'FATAL', sqlstate: entry.sqlstate, message: message ?? entry.message, detail }));
    }
    this.close();
  }

  close(): void {
    if (this.phase === 'closed') return;
    this.releaseUpstream();
    this.markClosed();
    this.client.end();
    // A peer that never reads must not hold the socket forever.
    setTimeout(() => this.client.destroy(), CLOSE_GRACE_MS).unref();
    this.host.unregister(this);
  }
}
