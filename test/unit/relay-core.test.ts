// The relay core without sockets: raw client bytes in, raw server bytes in,
// and exactly the bytes each side would receive out — with the shipped policy
// (really compiled by opa) deciding every statement. The "server" here is the
// test, answering as PostgreSQL does ("Message Flow" in the protocol docs).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { AuditRecorder } from '../../src/audit/auditor.ts';
import type { AuditRecord } from '../../src/audit/record.ts';
import type { Authorizer, SessionContext } from '../../src/decision/authorizer.ts';
import { TimeSource } from '../../src/decision/clock.ts';
import { PolicyAuthorizer } from '../../src/decision/policy-authorizer.ts';
import { WorkerMetrics } from '../../src/metrics/worker-counters.ts';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { compilePolicy, PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import * as be from '../../src/protocol/backend.ts';
import * as encode from '../../src/protocol/frontend-encode.ts';
import { OffThreadParser } from '../../src/sql/parse-pool.ts';
import { Relay, type RelayIo } from '../../src/session/relay.ts';
import { StatementLog } from '../../src/session/statement-log.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { initParser } from '../../src/sql/parser.ts';
import { bind, execute, message, parse, query, sync, terminate } from '../helpers/raw-client.ts';

let engine: PolicyEngine;

before(async () => {
  await initParser();
  engine = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath: await ensureOpa() })));
});

const silent = { info() {}, warn() {}, debug() {} };

function context(name: string, role: string): SessionContext {
  return {
    identity: { name, method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '127.0.0.1', port: 5000, tls: false },
    proxy: { env: 'prod', instance: 'relay-test' },
    role,
    database: 'app',
    cacheKey: `${name}|${role}`,
    keyMemo: { bucket: -1, keys: [] },
  };
}

/** One relay core with a recording RelayIo and audit recorder. */
function harness(name = 'reporting-svc', role = 'app_reader', maxStatementBytes?: number, offThreadParser: OffThreadParser | null = null) {
  const toServer: Buffer[] = [];
  const toClient: Buffer[] = [];
  const events: string[] = [];
  const records: AuditRecord[] = [];
  const audit: AuditRecorder = { enabled: true, parameters: 'off', maxParameterBytes: 0, canProceed: () => true, record: (r) => void records.push(r) };
  const time = new TimeSource('UTC', { nowMs: () => Date.parse('2026-11-27T12:00:10Z') });
  const authorizer: Authorizer = new PolicyAuthorizer({ engine, facts: new FactsCache(100), time, bucketMs: 60_000, decisionCacheEntries: 100, keyByText: false });
  const host = { workerId: 0, audit, metrics: new WorkerMetrics(0), time, log: silent, authorizer: () => authorizer, shadow: () => null, offThreadParser };
  const io: RelayIo = {
    toServer: (b) => void toServer.push(Buffer.from(b)),
    toClient: (b) => void toClient.push(Buffer.from(b)),
    fail: (code, msg) => void events.push(`fail ${code} ${msg ?? ''}`),
    terminate: () => void events.push('terminate'),
    cancelServer: () => void events.push('cancel'),
    pauseClient: () => void events.push('pause'),
    resumeClient: () => void events.push('resume'),
  };
  const ctx = context(name, role);
  const log = new StatementLog(host, 'sess-1', { addr: '127.0.0.1', port: 5000 });
  log.begin(ctx);
  const relay = new Relay(host, io, log, { sessionId: 'sess-1', nonceBase: 'test', maxMessageBytes: 1 << 20, maxStatementBytes, bucketMs: 60_000, context: ctx, txStatus: 0x49 /* 'I' */ });
  /** Everything written to a side since the last take, as one buffer. */
  const take = (list: Buffer[]): Buffer => Buffer.concat(list.splice(0));
  return { relay, toServer, toClient, events, records, take };
}

// Backend messages as PostgreSQL sends them.
const parseComplete = (): Buffer => message('1');
const bindComplete = (): Buffer => message('2');
const ready = (status: 'I' | 'T' | 'E' = 'I'): Buffer => message('Z', status);
const commandComplete = (tag: string): Buffer => message('C', `${tag}\0`);
const rowDescription1 = (): Buffer => {
  // one int4 column "n"
  const body = Buffer.alloc(2 + 2 + 18);
  body.writeInt16BE(1, 0);
  body.write('n\0', 2, 'latin1');
  body.writeInt32BE(0, 4); // table oid
  body.writeInt16BE(0, 8); // column
  body.writeInt32BE(23, 10); // int4
  body.writeInt16BE(4, 14);
  body.writeInt32BE(-1, 16);
  body.writeInt16BE(0, 20);
  return message('T', body);
};
const dataRow1 = (text: string): Buffer => {
  const v = Buffer.from(text);
  const body = Buffer.alloc(2 + 4 + v.length);
  body.writeInt16BE(1, 0);
  body.writeInt32BE(v.length, 2);
  v.copy(body, 6);
  return message('D', body);
};
/** The server's answer to an injected denial: a syntax error quoting the nonce. */
const syntaxError = (nonce: string): Buffer => be.errorResponse({ severity: 'ERROR', sqlstate: '42601', message: `syntax error at or near "${nonce}"`, position: 1 });

function fields(bytes: Buffer): Map<string, string> {
  assert.equal(String.fromCharCode(bytes[0] as number), 'E', 'an ErrorResponse');
  assert.equal(bytes.readInt32BE(1) + 1, bytes.length, 'exactly one message');
  return be.decodeErrorFields(bytes.subarray(5));
}

describe('relay core (no sockets)', () => {
  test('pipelined Parse/Bind/Execute with a denied statement in the middle: the allowed part passes as the client sent it, the denied Parse becomes an injected failing Parse, the rest is dropped until Sync', () => {
    const h = harness();
    const allowed = Buffer.concat([parse('s1', 'SELECT count(*) FROM orders'), bind('', 's1'), execute()]);
    const denied = Buffer.concat([parse('s2', 'DELETE FROM orders'), bind('', 's2'), execute()]);
    const after = Buffer.concat([parse('s3', 'SELECT 1'), bind('', 's3'), execute()]);
    h.relay.onClientBytes(Buffer.concat([allowed, denied, after, sync()]));

    const nonce = 'rolegate_denied_test_1';
    assert.deepEqual(h.take(h.toServer), Buffer.concat([allowed, encode.parse('rolegate_denied_test', nonce), sync()]));
    assert.deepEqual(h.toClient, [], 'nothing is answered before the server answers');
    assert.equal(h.relay.busy, true);

    // PostgreSQL: the first statement runs; the injected Parse fails; the rest is skipped up to Sync.
    const answered = Buffer.concat([parseComplete(), bindComplete(), dataRow1('42'), commandComplete('SELECT 1')]);
    h.relay.onServerBytes(Buffer.concat([answered, syntaxError(nonce), ready()]));
    const out = h.take(h.toClient);
    assert.deepEqual(out.subarray(0, answered.length), answered, 'the allowed part is relayed byte for byte');
    const rfq = ready();
    const error = out.subarray(answered.length, out.length - rfq.length);
    const f = fields(error);
    assert.equal(f.get('S'), 'ERROR');
    assert.equal(f.get('C'), '42501');
    assert.match(f.get('M') ?? '', /^permission denied by rolegate rule "[a-z-]+": /);
    assert.match(f.get('D') ?? '', /^rule: [a-z-]+; policy revision: /);
    assert.equal((f.get('M') ?? '').includes(nonce), false, 'the client never sees the nonce');
    assert.deepEqual(out.subarray(out.length - rfq.length), rfq);
    assert.equal(h.relay.busy, false);
    assert.deepEqual(h.events, []);

    const statements = h.records.map((r) => [r.statement_name, r.command, r.decision, r.outcome]);
    assert.deepEqual(statements, [
      ['s2', 'DELETE', 'deny', 'not-run'],
      ['s1', 'SELECT', 'allow', 'complete'],
    ]);
  });

  test('a multi-statement Query with a denied part: nothing of it is forwarded; the server gets a failing Query, the client our 42501 and the ReadyForQuery', () => {
    const h = harness();
    h.relay.onClientBytes(query('SELECT 1; DELETE FROM orders; SELECT 2'));
    const nonce = 'rolegate_denied_test_1';
    assert.deepEqual(h.take(h.toServer), encode.query(nonce));
    h.relay.onServerBytes(Buffer.concat([syntaxError(nonce), ready()]));
    const out = h.take(h.toClient);
    const rfq = ready();
    assert.deepEqual(out.subarray(out.length - rfq.length), rfq);
    const f = fields(out.subarray(0, out.length - rfq.length));
    assert.equal(f.get('C'), '42501');
    assert.equal(h.records.length, 1);
    assert.equal(h.records[0]?.command, 'DELETE', 'the record names the statement that was refused');

    // The session goes on: an allowed Query is forwarded as the client's own bytes.
    const next = query('SELECT count(*) FROM orders');
    h.relay.onClientBytes(next);
    assert.deepEqual(h.take(h.toServer), next);
    const answer = Buffer.concat([rowDescription1(), dataRow1('3'), commandComplete('SELECT 1'), ready()]);
    h.relay.onServerBytes(answer);
    assert.deepEqual(h.take(h.toClient), answer);
  });

  test('COPY FROM STDIN: the Query, the CopyData stream (split across chunks, a message larger than a chunk) and CopyDone pass through byte for byte', () => {
    const h = harness('orders-svc', 'app_writer');
    const copy = query('COPY orders (id, total) FROM STDIN');
    h.relay.onClientBytes(copy);
    assert.deepEqual(h.take(h.toServer), copy);
    const copyIn = message('G', Buffer.from([0, 0, 2, 0, 0, 0, 0]));
    h.relay.onServerBytes(copyIn);
    assert.deepEqual(h.take(h.toClient), copyIn);

    const big = message('d', Buffer.alloc(200_000, 0x61));
    const rows = Buffer.concat([message('d', '1\t10\n'), big, message('d', '2\t20\n'), message('c')]);
    // Cut at awkward places: inside a header, inside the big row, between messages.
    const cuts = [3, 11, 50_000, 150_000, rows.length - 4, rows.length];
    let at = 0;
    for (const cut of cuts) {
      h.relay.onClientBytes(rows.subarray(at, cut));
      at = cut;
    }
    assert.deepEqual(h.take(h.toServer), rows);
    const done = Buffer.concat([commandComplete('COPY 3'), ready()]);
    h.relay.onServerBytes(done);
    assert.deepEqual(h.take(h.toClient), done);
    assert.deepEqual(h.events, []);
  });

  test('a cancel: the server is asked to cancel; neither side of the session gets a byte from it; the cancelled statement\'s error is relayed as the server sent it', () => {
    const h = harness();
    const sleep = query('SELECT pg_sleep(10)');
    h.relay.onClientBytes(sleep);
    assert.deepEqual(h.take(h.toServer), sleep);
    assert.equal(h.relay.busy, true);
    h.relay.cancel();
    assert.deepEqual(h.events, ['cancel']);
    assert.deepEqual(h.toServer, []);
    assert.deepEqual(h.toClient, []);
    const cancelled = Buffer.concat([be.errorResponse({ severity: 'ERROR', sqlstate: '57014', message: 'canceling statement due to user request' }), ready()]);
    h.relay.onServerBytes(cancelled);
    assert.deepEqual(h.take(h.toClient), cancelled);
    assert.equal(h.relay.busy, false);
    assert.equal(h.records.at(-1)?.outcome, 'error');
    assert.equal(h.records.at(-1)?.sqlstate, '57014');

    h.relay.onClientBytes(terminate());
    assert.deepEqual(h.events, ['cancel', 'terminate']);
    h.relay.cancel();
    assert.deepEqual(h.events, ['cancel', 'terminate'], 'an ended relay asks nothing of the server');
  });

  test('a denial inside an explicit transaction leaves it unable to commit: the injected statement fails in the server, so COMMIT becomes ROLLBACK there', () => {
    const h = harness('orders-svc', 'app_reader');
    h.relay.onClientBytes(query('BEGIN'));
    assert.deepEqual(h.take(h.toServer), query('BEGIN'));
    h.relay.onServerBytes(Buffer.concat([commandComplete('BEGIN'), ready('T')]));
    h.take(h.toClient);
    h.relay.onClientBytes(query('DELETE FROM orders'));
    assert.deepEqual(h.take(h.toServer), encode.query('rolegate_denied_test_1'), 'the server sees a failing statement inside the transaction');
    h.relay.onServerBytes(Buffer.concat([syntaxError('rolegate_denied_test_1'), ready('E')]));
    const out = h.take(h.toClient);
    assert.deepEqual(out.subarray(out.length - 6), ready('E'), 'the client is told the transaction failed');
  });

  test('100 denied statements pipelined before the server answers: every one is answered with 42501, none with the server\'s syntax error', () => {
    const h = harness();
    const n = 100;
    const batch: Buffer[] = [];
    for (let i = 0; i < n; i++) batch.push(parse('', 'DELETE FROM orders'), sync());
    h.relay.onClientBytes(Buffer.concat(batch));
    const replies: Buffer[] = [];
    for (let i = 1; i <= n; i++) replies.push(syntaxError(`rolegate_denied_test_${i.toString(36)}`), ready());
    h.relay.onServerBytes(Buffer.concat(replies));
    const out = h.take(h.toClient);
    let at = 0;
    let errors = 0;
    while (at < out.length) {
      const len = out.readInt32BE(at + 1) + 1;
      const msg = out.subarray(at, at + len);
      if (msg[0] === 0x45 /* 'E' */) {
        assert.equal(fields(msg).get('C'), '42501');
        errors++;
      }
      at += len;
    }
    assert.equal(errors, n);
    assert.equal(h.relay.busy, false);
  });

  test('framing errors fail closed with 08P01-class codes and nothing is forwarded after them', () => {
    const h = harness();
    const bad = Buffer.from([0x51 /* 'Q' */, 0, 0, 0, 2]);
    h.relay.onClientBytes(Buffer.concat([query('SELECT 1'), bad]));
    assert.deepEqual(h.take(h.toServer), query('SELECT 1'), 'what came before the bad frame is forwarded');
    assert.equal(h.events.length, 1);
    assert.match(h.events[0] as string, /^fail RG_BAD_MESSAGE_LENGTH/);
    h.relay.onClientBytes(query('SELECT 2'));
    assert.deepEqual(h.toServer, [], 'an ended relay forwards nothing');
  });

  test('a guarded statement is refused before the policy: its own rule id, the statement\'s facts in the record, the session goes on', () => {
    const h = harness();
    h.relay.onClientBytes(query('SET ROLE app_admin'));
    const sent = h.take(h.toServer);
    assert.equal(sent.includes(Buffer.from('app_admin')), false, 'the text never reaches the server');
    const nonce = 'rolegate_denied_test_1';
    h.relay.onServerBytes(Buffer.concat([syntaxError(nonce), ready()]));
    const out = h.take(h.toClient);
    const f = fields(out.subarray(0, out.length - ready().length));
    assert.equal(f.get('C'), '42501');
    assert.match(f.get('M') ?? '', /^permission denied by rolegate rule "guard:role-change": SET ROLE could change or reset who the session is/);
    assert.deepEqual(h.records.map((r) => [r.command, r.decision, r.rule, r.outcome]), [['SET ROLE', 'deny', 'guard:role-change', 'not-run']]);
    assert.deepEqual(h.events, [], 'the session goes on');
    h.relay.onClientBytes(query('SELECT 1'));
    assert.deepEqual(h.take(h.toServer), query('SELECT 1'));
  });

  test('a text over max_statement_bytes is refused (54000) before it is parsed, whatever the caches hold; the session goes on', () => {
    const h = harness('reporting-svc', 'app_reader', 64);
    const small = "SELECT length('aaaa')";
    const large = `SELECT length('${'a'.repeat(100)}')`;
    // The same shape decided first (facts and decision caches warm): the long text is still refused.
    h.relay.onClientBytes(query(small));
    assert.deepEqual(h.take(h.toServer), query(small));
    h.relay.onServerBytes(Buffer.concat([rowDescription1(), dataRow1('4'), commandComplete('SELECT 1'), ready()]));
    h.take(h.toClient);
    for (const bytes of [query(large), Buffer.concat([parse('big', large), bind('', 'big'), execute(), sync()])]) {
      h.relay.onClientBytes(bytes);
      const sent = h.take(h.toServer);
      assert.equal(sent.includes(Buffer.from('aaaaaaaaaa')), false, 'the text never reaches the server');
      const nonce = /rolegate_denied_test_\d+/.exec(sent.toString('latin1'))?.[0] ?? '';
      h.relay.onServerBytes(Buffer.concat([syntaxError(nonce), ready()]));
      const out = h.take(h.toClient);
      const f = fields(out.subarray(0, out.length - ready().length));
      assert.equal(f.get('C'), '54000');
      assert.equal(f.get('M'), `statement too large for rolegate: the statement is ${Buffer.byteLength(large)} bytes; limits.max_statement_bytes is 64`);
    }
    assert.deepEqual(h.records.filter((r) => r.decision === 'deny').map((r) => r.rule), ['statement-too-large', 'statement-too-large']);
    assert.deepEqual(h.events, [], 'the session goes on');
  });

  test('a text too long to cache is parsed off the thread: the message and everything after it wait, in order, and the decision is made before a byte is forwarded', async () => {
    const parser = new OffThreadParser(100);
    try {
      const h = harness('reporting-svc', 'app_reader', undefined, parser);
      const big = query(`SELECT count(*) FROM orders WHERE note <> '${'x'.repeat(300)}'`);
      const small = query('SELECT 1');
      const deniedBig = query(`DELETE FROM orders WHERE note = '${'y'.repeat(300)}'`);
      const later = query('SELECT 2');
      h.relay.onClientBytes(Buffer.concat([big, small, deniedBig]));
      assert.deepEqual(h.toServer, [], 'nothing is forwarded while the first text is parsed');
      assert.equal(h.relay.busy, true);
      h.relay.onClientBytes(later);
      assert.deepEqual(h.toServer, [], 'what arrives meanwhile waits too');
      for (let i = 0; i < 200 && h.events.filter((e) => e === 'resume').length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      const sent = h.take(h.toServer);
      // big and small forwarded as sent; the denied DELETE replaced by a failing statement; then the later query.
      assert.deepEqual(sent.subarray(0, big.length + small.length), Buffer.concat([big, small]));
      const rest = sent.subarray(big.length + small.length).toString('latin1');
      assert.match(rest, /^Q.{4}rolegate_denied_test_1\0Q.{4}SELECT 2\0$/s);
      assert.equal(rest.includes('DELETE'), false, 'the denied text never reaches the server');
      assert.deepEqual(h.events.filter((e) => e === 'pause' || e === 'resume').slice(-1), ['resume']);
      assert.ok(parser.parsed >= 2, `parsed off the thread: ${parser.parsed}`);
      const denied = h.records.filter((r) => r.decision === 'deny');
      assert.deepEqual(denied.map((r) => [r.command, r.rule]), [['DELETE', 'read-only-role']]);
    } finally {
      await parser.close();
    }
  });

  test('a ParameterStatus naming another session user ends the session (server-side code no parser saw); the mapped one is relayed', () => {
    const h = harness();
    const same = message('S', 'session_authorization\0app_reader\0');
    h.relay.onServerBytes(same);
    assert.deepEqual(h.take(h.toClient), same);
    assert.deepEqual(h.events, []);
    h.relay.onServerBytes(Buffer.concat([message('S', 'session_authorization\0postgres\0'), ready()]));
    const events: string[] = h.events;
    assert.equal(events.length, 1);
    assert.match(events[0] ?? '', /^fail RG_UPSTREAM_PARAMETER the session user changed to "postgres"; rolegate sessions stay role "app_reader"/);
  });
});
