// A drain ends each relayed session at its transaction boundary: the relay
// core without sockets, the test answering as PostgreSQL does ("Message
// Flow" in the protocol docs). Every policy allows everything here: only
// where the session ends is under test.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NO_AUDIT } from '../../src/audit/auditor.ts';
import { ALLOW, undecided, type Authorizer, type SessionContext } from '../../src/decision/authorizer.ts';
import { TimeSource } from '../../src/decision/clock.ts';
import { WorkerMetrics } from '../../src/metrics/worker-counters.ts';
import { DRAIN_MESSAGE, Relay, type RelayIo } from '../../src/session/relay.ts';
import { StatementLog } from '../../src/session/statement-log.ts';
import { bind, execute, flush, message, parse, query, sync, terminate } from '../helpers/raw-client.ts';

const allowAll: Authorizer = {
  revision: 'test',
  parseCacheHits: 0,
  parseCacheMisses: 0,
  decisionCacheHits: 0,
  decisionCacheMisses: 0,
  enforcesStatements: false,
  connect: () => ({ allow: true, role: 'app_writer', database: 'app', rule: 'test', reason: 'test' }),
  statements: () => undecided(ALLOW),
  preparedStatement: () => undecided(ALLOW),
};

const ctx: SessionContext = {
  identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
  client: { addr: '127.0.0.1', port: 5000, tls: false },
  proxy: { env: 'prod', instance: 'drain-test' },
  role: 'app_writer',
  database: 'app',
  cacheKey: 'orders-svc|app_writer',
  keyMemo: { bucket: -1, keys: [] },
};

/** One relay core; `out` lists what left it, in order: bytes to each side and the session's end. */
function harness() {
  const out: string[] = [];
  const toServer: Buffer[] = [];
  const toClient: Buffer[] = [];
  const io: RelayIo = {
    toServer: (b) => void toServer.push(Buffer.from(b)),
    toClient: (b) => {
      toClient.push(Buffer.from(b));
      out.push(`client ${Buffer.from(b).toString('latin1')}`);
    },
    fail: (code, msg) => void out.push(`fail ${code} ${msg ?? ''}`),
    terminate: () => void out.push('terminate'),
    cancelServer: () => void out.push('cancel'),
  };
  const time = new TimeSource('UTC', { nowMs: () => Date.parse('2026-11-27T12:00:10Z') });
  const host = { workerId: 0, audit: NO_AUDIT, metrics: new WorkerMetrics(0), time, log: { info() {}, warn() {}, debug() {} }, authorizer: () => allowAll, shadow: () => null };
  const log = new StatementLog(host, 'sess-1', { addr: '127.0.0.1', port: 5000 });
  log.begin(ctx);
  const relay = new Relay(host, io, log, { sessionId: 'sess-1', nonceBase: 'test', maxMessageBytes: 1 << 20, bucketMs: 60_000, context: ctx, txStatus: 0x49 /* 'I' */ });
  const ended = (): boolean => out.some((e) => e.startsWith('fail'));
  return { relay, out, toServer, toClient, ended };
}

const ready = (status: 'I' | 'T' | 'E'): Buffer => message('Z', status);
const done = (tag: string, status: 'I' | 'T' | 'E'): Buffer => Buffer.concat([message('C', `${tag}\0`), ready(status)]);
const ENDED = `fail RG_SHUTDOWN ${DRAIN_MESSAGE}`;

describe('relay core: a drain ends the session at its transaction boundary', () => {
  test('an idle session ends at once, with nothing sent upstream', () => {
    const h = harness();
    h.relay.drain();
    assert.deepEqual(h.out, [ENDED]);
    assert.deepEqual(h.toServer, []);
  });

  test('inside BEGIN: the transaction runs on to its COMMIT; the client gets the COMMIT\'s ReadyForQuery, then the FATAL', () => {
    const h = harness();
    h.relay.onClientBytes(query('BEGIN'));
    h.relay.onServerBytes(done('BEGIN', 'T'));
    h.relay.drain();
    assert.equal(h.ended(), false, 'inside a transaction');
    const update = query('UPDATE orders SET total = 1 WHERE id = 1');
    h.relay.onClientBytes(update);
    assert.deepEqual(h.toServer.at(-1), update, 'work inside the transaction is still forwarded');
    h.relay.onServerBytes(done('UPDATE 1', 'T'));
    assert.equal(h.ended(), false, 'still inside the transaction');
    h.relay.onClientBytes(query('COMMIT'));
    h.relay.onServerBytes(done('COMMIT', 'I'));
    assert.deepEqual(h.out.slice(-2), [`client ${done('COMMIT', 'I').toString('latin1')}`, ENDED]);
  });

  test('a failed transaction (E) is not a boundary: the session ends after its ROLLBACK', () => {
    const h = harness();
    h.relay.onClientBytes(query('BEGIN'));
    h.relay.onServerBytes(done('BEGIN', 'T'));
    h.relay.onClientBytes(query('SELECT 1/0'));
    h.relay.onServerBytes(Buffer.concat([message('E', 'SERROR\0C22012\0Mdivision by zero\0\0'), ready('E')]));
    h.relay.drain();
    assert.equal(h.ended(), false);
    h.relay.onClientBytes(query('ROLLBACK'));
    h.relay.onServerBytes(done('ROLLBACK', 'I'));
    assert.equal(h.out.at(-1), ENDED);
  });

  test('a statement in flight outside a transaction: the session ends after its answer', () => {
    const h = harness();
    h.relay.onClientBytes(query('SELECT pg_sleep(1)'));
    h.relay.drain();
    assert.equal(h.ended(), false, 'an answer is outstanding');
    h.relay.onServerBytes(done('SELECT 1', 'I'));
    assert.equal(h.out.at(-1), ENDED);
    assert.equal(h.out.filter((e) => e.startsWith('cancel')).length, 0, 'nothing is cancelled');
  });

  test('pipelined queries: the session ends only after the last one\'s ReadyForQuery', () => {
    const h = harness();
    h.relay.onClientBytes(Buffer.concat([query('INSERT INTO t VALUES (1)'), query('INSERT INTO t VALUES (2)')]));
    h.relay.drain();
    h.relay.onServerBytes(done('INSERT 0 1', 'I'));
    assert.equal(h.ended(), false, 'the second query awaits its answer');
    h.relay.onServerBytes(done('INSERT 0 1', 'I'));
    assert.equal(h.out.at(-1), ENDED);
  });

  test('extended messages without a Sync (Flush): not a boundary until the Sync\'s ReadyForQuery', () => {
    const h = harness();
    h.relay.onClientBytes(Buffer.concat([parse('', 'INSERT INTO t VALUES (1)'), bind('', ''), execute(), flush()]));
    h.relay.onServerBytes(Buffer.concat([message('1'), message('2'), message('C', 'INSERT 0 1\0')]));
    h.relay.drain();
    assert.equal(h.ended(), false, 'the implicit transaction is open until Sync');
    h.relay.onClientBytes(sync());
    assert.deepEqual(h.toServer.at(-1), sync(), 'the Sync that commits it is forwarded');
    h.relay.onServerBytes(ready('I'));
    assert.equal(h.out.at(-1), ENDED);
  });

  test('COPY FROM STDIN under way: the copy completes, then the session ends', () => {
    const h = harness();
    h.relay.onClientBytes(query('COPY t FROM STDIN'));
    h.relay.onServerBytes(message('G', Buffer.from([0, 0, 0])));
    h.relay.drain();
    h.relay.onClientBytes(Buffer.concat([message('d', '1\n'), message('c')]));
    assert.equal(h.ended(), false);
    h.relay.onServerBytes(done('COPY 1', 'I'));
    assert.equal(h.out.at(-1), ENDED);
  });

  test('a Terminate during the drain ends the session the ordinary way', () => {
    const h = harness();
    h.relay.onClientBytes(query('BEGIN'));
    h.relay.onServerBytes(done('BEGIN', 'T'));
    h.relay.drain();
    h.relay.onClientBytes(terminate());
    assert.deepEqual(h.out.slice(-1), ['terminate']);
    assert.equal(h.ended(), false);
  });

  test('without a drain, an idle ReadyForQuery ends nothing', () => {
    const h = harness();
    h.relay.onClientBytes(query('SELECT 1'));
    h.relay.onServerBytes(done('SELECT 1', 'I'));
    assert.equal(h.ended(), false);
  });
});
