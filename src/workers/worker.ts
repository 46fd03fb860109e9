// Worker thread entry. Each worker owns a reusePort listener (the kernel spreads
// new connections across the workers), its sessions, its authorizer, its
// client TLS (auth/tls-server.ts) and its cancel-key table (cancel-keys.ts,
// which describes the whole cancel path). Nothing on a session's hot path
// leaves this thread.

import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { BufferBudget } from '../protocol/buffer-budget.ts';
import { startReclaiming } from './reclaim.ts';
import { OffThreadParser } from '../sql/parse-pool.ts';
import { reportSuppressedClientLines } from '../session/client-log-lines.ts';
import { pino } from 'pino';
import type { SaltedPasswordCache } from '../auth/scram.ts';
import type { Config } from '../config/config.ts';
import { ERRORS } from '../errors.ts';
import * as be from '../protocol/backend.ts';
import type { Authorizer } from '../decision/authorizer.ts';
import { offsetClock, systemClock, TimeSource, type Clock } from '../decision/clock.ts';
import { ClientSession } from '../session/session.ts';
import type { SessionHost, SessionMetricHandles } from '../session/session-host.ts';
import { FactsCache } from '../sql/facts-cache.ts';
import { WelcomeCache } from '../upstream/welcome.ts';
import { JwtVerifier } from '../auth/jwt.ts';
import { ClientTlsServer } from '../auth/tls-server.ts';
import { cidrContains, parseCidr, type Cidr } from '../config/ip-address.ts';
import { createAuthorizer } from '../decision/authorizer-factory.ts';
import { Shadow } from '../decision/shadow.ts';
import { PolicyLog } from '../decision/policy-log.ts';
import { NO_AUDIT } from '../audit/auditor.ts';
import { createWorkerAuditor } from '../audit/setup.ts';
import type { WorkerAuditor } from '../audit/worker-side.ts';
import { clientStateLabel, CLIENT_STATES, REFUSE_REASONS } from '../metrics/definitions.ts';
import { WorkerMetrics } from '../metrics/worker-counters.ts';
import { CancelKeys } from './cancel-keys.ts';
import type { MainToWorker, WorkerData, WorkerToMain } from './messages.ts';

const data = workerData as WorkerData;
const port = parentPort;
if (port === null) throw new Error('src/workers/worker.ts must run as a worker thread');

let config: Config = data.config;
const workerId = data.workerId;
const log = pino({ base: { worker: workerId }, level: data.logLevel });
const allSessions = new Set<ClientSession>();
let draining = false;
let clock: Clock = data.fixedTimeMs === null ? systemClock : offsetClock(data.fixedTimeMs);
let time = new TimeSource(config.time.zone, clock);
// Parsed facts depend only on the SQL text: the cache survives policy reloads.
const facts = new FactsCache(config.limits.parseCacheEntries);
// Evaluation failures and print() lines: one rate limit per worker, across reloads.
const policyLog = new PolicyLog(log);
const metrics = new WorkerMetrics(workerId);
let policy = data.policy;
let authorizer: Authorizer = await createAuthorizer(config, policy, policyLog, time, facts);
// policy.shadow: the candidate deciding beside the active policy (its own decision cache, the same facts cache).
let shadowPolicy = data.shadow;
let shadow: Shadow | null = shadowPolicy === null ? null : new Shadow(await createAuthorizer(config, shadowPolicy, policyLog, time, facts), metrics);
// Authorizer rebuilds (a new policy, new time settings) run one after another,
// so that the last one asked for is the one left in place.
let rebuilds: Promise<void> = Promise.resolve();
function rebuild(step: () => Promise<void>): void {
  rebuilds = rebuilds.then(step);
}

/**
 * time.zone, time.bucket_ms and time.fixed (or guards.allow) of a reloaded
 * config: a new time source and a new authorizer (its decision cache is keyed by time bucket, and
 * holds decisions made in the old zone). Sessions read both through the host
 * at each decision, so their next decisions use the new settings.
 */
function applyTime(next: Config, nextTime: TimeSource, what = 'time settings applied'): Promise<void> {
  return Promise.all([createAuthorizer(next, policy, policyLog, nextTime, facts), shadowPolicy === null ? null : createAuthorizer(next, shadowPolicy, policyLog, nextTime, facts)]).then(
    ([built, candidate]) => {
      time = nextTime;
      authorizer = built;
      shadow = candidate === null ? null : new Shadow(candidate, metrics);
      log.info({ zone: next.time.zone, bucketMs: next.time.bucketMs, fixedMs: next.time.fixedMs, guardsAllow: next.guards.allow }, what);
    },
    (err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'time settings from the reloaded config not applied; keeping the previous'),
  );
}

function post(msg: WorkerToMain, transfer?: readonly ArrayBuffer[]): void {
  port?.postMessage(msg, transfer);
}

// A CancelRequest for another worker's key goes to the supervisor, which forwards it to the owner.
const cancelKeys = new CancelKeys(workerId, (owner, processId, secretKey) => post({ type: 'cancel', owner, processId, secretKey }), log);
const clientTls = new ClientTlsServer(config.tls);
/** Trusted load balancers, parsed once per config. */
function trustedCidrs(c: Config): Cidr[] {
  return (c.proxyProtocol?.trustedCidrs ?? []).flatMap((text) => {
    const cidr = parseCidr(text);
    return cidr === null ? [] : [cidr];
  });
}
let trusted = trustedCidrs(config);
let jwtVerifier = config.auth.jwt === null ? null : new JwtVerifier(config.auth.jwt);

const handles: SessionMetricHandles = {
  refused: Object.fromEntries(
    REFUSE_REASONS.map((reason) => [
      reason,
      metrics.handle('rolegate_client_connections_refused_total', { reason }),
    ]),
  ) as SessionMetricHandles['refused'],
  authFailures: {
    'scram-sha-256': metrics.handle('rolegate_auth_failures_total', { method: 'scram-sha-256' }),
    cert: metrics.handle('rolegate_auth_failures_total', { method: 'cert' }),
    jwt: metrics.handle('rolegate_auth_failures_total', { method: 'jwt' }),
    other: metrics.handle('rolegate_auth_failures_total', { method: 'other' }),
  },
  upstreamErrors: {
    unreachable: metrics.handle('rolegate_upstream_connect_errors_total', { kind: 'unreachable' }),
    auth: metrics.handle('rolegate_upstream_connect_errors_total', { kind: 'auth' }),
    protocol: metrics.handle('rolegate_upstream_connect_errors_total', { kind: 'protocol' }),
    lost: metrics.handle('rolegate_upstream_connect_errors_total', { kind: 'lost' }),
    other: metrics.handle('rolegate_upstream_connect_errors_total', { kind: 'other' }),
  },
};
const acceptedHandle = metrics.handle('rolegate_client_connections_accepted_total');
const stateHandles = new Map(CLIENT_STATES.map((state) => [state, metrics.handle('rolegate_client_connections', { state })]));
const upstreamHandle = metrics.handle('rolegate_upstream_connections');
const auditQueueHandle = metrics.handle('rolegate_audit_worker_queue_records');
const parseHits = metrics.handle('rolegate_parse_cache_requests_total', { result: 'hit' });
const parseMisses = metrics.handle('rolegate_parse_cache_requests_total', { result: 'miss' });
const decisionHits = metrics.handle('rolegate_decision_cache_requests_total', { result: 'hit' });
const decisionMisses = metrics.handle('rolegate_decision_cache_requests_total', { result: 'miss' });

const workerAuditor: WorkerAuditor | null = config.audit === null ? null : createWorkerAuditor(config.audit, workerId, (msg, transfer) => post(msg, transfer), data.auditHealthy ? 'healthy' : 'unhealthy', data.auditJournal ?? null);
workerAuditor?.start();

/** Gauges are set from the sessions; counters travel as running totals; then one snapshot goes to the supervisor. */
function postMetrics(): void {
  const counts = new Map<string, number>();
  let upstreams = 0;
  for (const s of allSessions) {
    const label = clientStateLabel(s.state);
    if (label !== null) counts.set(label, (counts.get(label) ?? 0) + 1);
    if (s.state === 'relay') upstreams++;
  }
  for (const [state, handle] of stateHandles) metrics.set(handle, counts.get(state) ?? 0);
  metrics.set(upstreamHandle, upstreams);
  metrics.set(auditQueueHandle, workerAuditor?.stats().queued ?? 0);
  metrics.addTotal(parseHits, facts.hits);
  metrics.addTotal(parseMisses, facts.misses);
  metrics.addTotal(decisionHits, authorizer.decisionCacheHits);
  metrics.addTotal(decisionMisses, authorizer.decisionCacheMisses);
  const snapshot = metrics.snapshot();
  port?.postMessage(snapshot, [snapshot.values.buffer as ArrayBuffer]);
}
setInterval(postMetrics, config.metrics.snapshotIntervalMs).unref();

/** Before 'drained': the last audit records and counters go to the supervisor. */
function finalFlush(): void {
  reportSuppressedClientLines(log);
  workerAuditor?.stop();
  postMetrics();
}

const bufferBudget = new BufferBudget(data.bufferBudget, config.limits.maxBufferedBytes);

const host: SessionHost = {
  get config() {
    return config;
  },
  workerId,
  audit: workerAuditor ?? NO_AUDIT,
  metrics,
  handles,
  get time() {
    return time;
  },
  scramCache: new Map() as SaltedPasswordCache,
  welcomes: new WelcomeCache(),
  mockSeed: Buffer.from(data.mockSeed),
  log,
  authorizer: () => authorizer,
  shadow: () => shadow,
  register: (session) => cancelKeys.issue(session),
  unregister(session) {
    cancelKeys.release(session);
    // Every session this host serves is a ClientSession (the connection handler below makes them).
    allSessions.delete(session as ClientSession);
    if (draining && allSessions.size === 0) {
      finalFlush();
      post({ type: 'drained', workerId });
    }
  },
  tlsEnabled: () => clientTls.enabled,
  tlsUpgrade: (raw, first, onReady, onError) => clientTls.upgrade(raw, first, onReady, onError),
  jwt: () => jwtVerifier,
  trustedProxy(addr) {
    return trusted.some((cidr) => cidrContains(cidr, addr));
  },
  routeCancel: (processId, secretKey) => cancelKeys.route(processId, secretKey),
  // limits.max_buffered_bytes is read when the worker starts (the counter is the supervisor's, shared by all).
  bufferBudget,
  offThreadParser: new OffThreadParser(),
};
startReclaiming(bufferBudget, (released, ms) => log.debug({ releasedBytes: released, ms: Math.round(ms) }, 'collected released message buffers'));

const server = net.createServer({ noDelay: true }, (socket) => {
  metrics.inc(acceptedHandle);
  if (allSessions.size >= data.maxClientsPerWorker) {
    metrics.inc(handles.refused.too_many_clients);
    socket.on('error', () => {});
    socket.end(be.errorResponse({ severity: 'FATAL', sqlstate: ERRORS.RG_TOO_MANY_CLIENTS.sqlstate, message: 'sorry, too many clients already' }));
    return;
  }
  allSessions.add(new ClientSession(host, socket));
});
server.on('error', (err) => {
  post({ type: 'fatal', workerId, message: `listen on ${config.listen.host}:${data.port} failed: ${err.message}` });
});
server.listen({ host: config.listen.host, port: data.port, reusePort: true, backlog: 4096 }, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : data.port;
  post({ type: 'listening', workerId, port: actual });
});

port.on('message', (msg: MainToWorker) => {
  switch (msg.type) {
    case 'cancel':
      cancelKeys.cancelLocal(msg.processId, msg.secretKey);
      return;
    case 'drain':
      server.close();
      // Each session ends at its transaction boundary: the idle ones now (they
      // leave the set as they go), the rest at their next idle ReadyForQuery.
      // `draining` is set after this loop, so that only the check below reports
      // the worker drained when every session ended here.
      for (const s of [...allSessions]) s.drain();
      draining = true;
      if (allSessions.size === 0) {
        finalFlush();
        post({ type: 'drained', workerId });
      }
      return;
    case 'terminate':
      for (const s of [...allSessions]) s.terminate('RG_SHUTDOWN');
      finalFlush();
      post({ type: 'drained', workerId });
      return;
    case 'policy': {
      const next = msg.policy;
      const nextShadow = msg.shadow;
      rebuild(() =>
        Promise.all([createAuthorizer(config, next, policyLog, time, facts), nextShadow === null ? null : createAuthorizer(config, nextShadow, policyLog, time, facts)]).then(
          ([built, candidate]) => {
            policy = next;
            authorizer = built;
            shadowPolicy = nextShadow;
            shadow = candidate === null ? null : new Shadow(candidate, metrics);
            post({ type: 'policy-applied', workerId, revision: built.revision });
          },
          (err: unknown) => post({ type: 'policy-failed', workerId, message: err instanceof Error ? err.message : String(err) }),
        ),
      );
      return;
    }
    case 'config': {
      // Reloadable parts only (credentials, TLS material, auth settings); listen/workers need a restart.
      const next = msg.config;
      const tlsError = clientTls.reload(next.tls);
      if (tlsError !== null) {
        log.error({ err: tlsError.message }, 'TLS material from the reloaded config is unusable; keeping the previous');
        return;
      }
      if (JSON.stringify(next.auth.jwt) !== JSON.stringify(config.auth.jwt)) {
        void jwtVerifier?.close();
        jwtVerifier = next.auth.jwt === null ? null : new JwtVerifier(next.auth.jwt);
      }
      const timeChanged = next.time.zone !== config.time.zone || next.time.bucketMs !== config.time.bucketMs || next.time.fixedMs !== config.time.fixedMs;
      // guards.allow lives in the authorizer too: a changed list builds a new one (same time source).
      const guardsChanged = next.guards.allow.join() !== config.guards.allow.join();
      if (timeChanged) {
        // An unchanged time.fixed keeps the running clock: it must not jump back.
        if (next.time.fixedMs !== config.time.fixedMs) clock = next.time.fixedMs === null ? systemClock : offsetClock(next.time.fixedMs);
        const nextTime = new TimeSource(next.time.zone, clock);
        rebuild(() => applyTime(next, nextTime));
      } else if (guardsChanged) {
        const sameTime = time;
        rebuild(() => applyTime(next, sameTime, 'guard settings applied'));
      }
      config = next;
      trusted = trustedCidrs(next);
      if (timeChanged || guardsChanged) rebuild(() => Promise.resolve(post({ type: 'config-applied', workerId })));
      else post({ type: 'config-applied', workerId });
      return;
    }
    case 'stats':
      post({ type: 'stats', workerId, sessions: allSessions.size, heapUsedBytes: process.memoryUsage().heapUsed });
      return;
    case 'audit-health':
    case 'audit-ack':
    case 'audit-buffer':
      workerAuditor?.onMessage(msg);
      return;
    case 'crash':
      if (process.env['ROLEGATE_FAULT_INJECTION'] === '1') throw new Error('fault injection: worker crash requested');
      return;
    default: {
      const unreachable: never = msg;
      log.warn({ msg: unreachable }, 'unknown message from supervisor');
    }
  }
});
