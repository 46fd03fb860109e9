// Worker thread entry. Each worker owns a reusePort listener (the kernel spreads
// new connections across the workers), its sessions, its authorizer and its
// cancel-key table. Nothing on a session's hot path leaves this thread.

import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import type { SaltedPasswordCache } from '../auth/scram.ts';
import type { Config } from '../config/config.ts';
import { ERRORS } from '../errors.ts';
import * as be from '../protocol/backend.ts';
import type { Authorizer } from '../session/authorizer.ts';
import { offsetClock, systemClock, TimeSource } from '../session/clock.ts';
import { ClientSession, randomSecretKey, type SessionHost } from '../session/session.ts';
import { FactsCache } from '../sql/facts-cache.ts';
import { createAuthorizer } from './authorizer-factory.ts';
import type { MainToWorker, WorkerData, WorkerToMain } from './messages.ts';

const data = workerData as WorkerData;
const port = parentPort;
if (port === null) throw new Error('src/workers/worker.ts must run as a worker thread');

const config: Config = data.config;
const workerId = data.workerId;
const log = pino({ base: { worker: workerId }, level: data.logLevel });
const sessions = new Map<number, ClientSession>();
const allSessions = new Set<ClientSession>();
let sequence = 0;
let draining = false;
const clock = data.fixedTimeMs === null ? systemClock : offsetClock(data.fixedTimeMs);
const time = new TimeSource(config.time.zone, clock);
// Parsed facts depend only on the SQL text: the cache survives policy reloads.
const facts = new FactsCache(config.limits.parseCacheEntries);
let authorizer: Authorizer = await createAuthorizer(config, data.policy, log, time, facts);

function post(msg: WorkerToMain): void {
  port?.postMessage(msg);
}

function localCancel(processId: number, secretKey: number): void {
  const session = sessions.get(processId);
  const a = Buffer.alloc(4);
  const b = Buffer.alloc(4);
  a.writeInt32BE(secretKey);
  b.writeInt32BE(session?.secretKey ?? 0);
  // Constant-time compare: cancel keys must not be guessable byte by byte.
  if (session === undefined || !timingSafeEqual(a, b)) {
    log.info({ processId }, 'cancel request with unknown key ignored');
    return;
  }
  log.debug({ session: session.id }, 'cancel request');
  session.cancelUpstream();
}

const host: SessionHost = {
  config,
  time,
  scramCache: new Map() as SaltedPasswordCache,
  mockSeed: Buffer.from(data.mockSeed),
  log,
  authorizer: () => authorizer,
  register(session) {
    let processId: number;
    do {
      sequence = (sequence + 1) & 0xffffff;
      // Worker id in bits 24–30 routes a CancelRequest that lands on another worker.
      processId = (workerId << 24) | sequence;
    } while (sessions.has(processId) || sequence === 0);
    const secretKey = randomSecretKey();
    sessions.set(processId, session);
    return { processId, secretKey };
  },
  unregister(session) {
    if (sessions.get(session.processId) === session) sessions.delete(session.processId);
    allSessions.delete(session);
    if (draining && allSessions.size === 0) post({ type: 'drained', workerId });
  },
  routeCancel(processId, secretKey) {
    const owner = (processId >>> 24) & 0x7f;
    if (owner === workerId) localCancel(processId, secretKey);
    else {
      log.debug({ owner }, 'cancel routed to owning worker');
      post({ type: 'cancel', owner, processId, secretKey });
    }
  },
};

const server = net.createServer({ noDelay: true }, (socket) => {
  if (allSessions.size >= data.maxClientsPerWorker) {
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
      localCancel(msg.processId, msg.secretKey);
      return;
    case 'drain':
      draining = true;
      server.close();
      if (allSessions.size === 0) post({ type: 'drained', workerId });
      return;
    case 'terminate':
      for (const s of [...allSessions]) s.terminate('RG_SHUTDOWN');
      post({ type: 'drained', workerId });
      return;
    case 'policy':
      createAuthorizer(config, msg.policy, log, time, facts).then(
        (next) => {
          authorizer = next;
          post({ type: 'policy-applied', workerId, revision: next.revision });
        },
        (err: unknown) => post({ type: 'policy-failed', workerId, message: err instanceof Error ? err.message : String(err) }),
      );
      return;
    case 'stats':
      post({ type: 'stats', workerId, sessions: allSessions.size, heapUsedBytes: process.memoryUsage().heapUsed });
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
