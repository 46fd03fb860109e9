// audit.input: the policy input in a record. The JSON text built from cached
// parts must be the input the authorizer evaluates (full) or exactly what the
// record's other fields lack (facts); records stay one safe line, equal to
// JSON.stringify + the line-safety escapes; an input that does not fit its
// budget is left out whole; and through the relay core, an Execute's record
// carries the transaction state and time its Parse was decided with.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { AuditRecorder } from '../../src/audit/auditor.ts';
import { connectRecordInput, StatementInputParts, timeJson } from '../../src/audit/record-input.ts';
import { formatRecord, newRecord, prepareRecord, type AuditRecord } from '../../src/audit/record.ts';
import { auditListBudget } from '../../src/audit/setup.ts';
import type { AuditConfig } from '../../src/config/config.ts';
import type { Authorizer, SessionContext } from '../../src/decision/authorizer.ts';
import { TimeSource } from '../../src/decision/clock.ts';
import { connectInput, sessionContext, statementInput } from '../../src/decision/inputs.ts';
import { PolicyAuthorizer } from '../../src/decision/policy-authorizer.ts';
import { WorkerMetrics } from '../../src/metrics/worker-counters.ts';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import type { ConnectInput, StatementInput } from '../../src/policy/contract.ts';
import { compilePolicy, PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import { Relay, type RelayIo } from '../../src/session/relay.ts';
import { StatementLog } from '../../src/session/statement-log.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { initParser, parseStatements } from '../../src/sql/parser.ts';
import type { StatementFacts } from '../../src/sql/statement-facts.ts';
import { bind, execute, message, parse, query, sync } from '../helpers/raw-client.ts';

const LINE_UNSAFE = /[\u007f-\u009f\u2028\u2029]/g;
const lineSafe = (json: string): string => json.replace(LINE_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

function factsOf(sql: string): StatementFacts {
  const parsed = parseStatements(sql);
  assert.ok(parsed.ok && parsed.statements[0] !== undefined, `parses: ${sql}`);
  return parsed.statements[0].facts;
}

const time = new TimeSource('Europe/Berlin', { nowMs: () => Date.parse('2026-11-27T22:55:00.123Z') }).now();

function connectOf(claims: Record<string, unknown> = {}): ConnectInput {
  return connectInput(
    { name: 'orders-svc', method: 'jwt', claims, cert: null },
    { addr: '10.1.0.7', port: 51544, tls: true },
    { database: 'app', role: 'app_writer', application_name: 'orders\u2028api' },
    time,
    { env: 'prod', instance: 'rg-1' },
  );
}

/** The facts-mode input merged with the record's own fields, as replay puts them together. */
function mergedBack(facts: Record<string, any>, record: { identity: { name: string; method: string }; client: { addr: string; port: number }; role: string; database: string; sql: string; protocol: string }): StatementInput {
  return {
    identity: { name: record.identity.name, method: record.identity.method, ...facts.identity },
    client: { addr: record.client.addr, port: record.client.port, ...facts.client },
    time: facts.time,
    proxy: facts.proxy,
    session: { role: record.role, database: record.database, ...facts.session },
    statement: { sql: record.sql, ...facts.statement, protocol: record.protocol },
  };
}

before(async () => {
  await initParser();
});

describe('input documents', () => {
  const statements = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = 42',
    'UPDATE orders SET total = total + 1 WHERE id = $1',
    "SELECT set_config('role', 'x', false)",
    'WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d',
    "SELECT '\u2028\u0085\u0001\"\\' AS hostile, e.name FROM emp e JOIN customers c ON c.id = e.id FOR UPDATE",
    'COPY orders TO STDOUT',
    'SET search_path = public',
  ];
  for (const sql of statements) {
    test(`full: the same text JSON.stringify gives for the authorizer's input (${sql.slice(0, 40)})`, () => {
      const claims = { sub: 'orders-svc', groups: ['a', 'b\u2029'], n: 1.5 };
      const ctx = sessionContext(connectOf(claims), 'app_writer', 'app');
      const facts = factsOf(sql);
      for (const protocol of ['simple', 'extended'] as const) {
        for (const inTx of [false, true]) {
          const full = new StatementInputParts('full', ctx, 4096).build(facts, protocol, inTx, timeJson(time));
          assert.equal(full.json, lineSafe(JSON.stringify(statementInput(ctx, facts, protocol, inTx, time))));
          assert.deepEqual(JSON.parse(full.json), statementInput(ctx, facts, protocol, inTx, time));
        }
      }
    });

    test(`facts: with the record's fields, exactly the authorizer's input, and nothing the record holds (${sql.slice(0, 40)})`, () => {
      const ctx = sessionContext(connectOf({ sub: 'x' }), 'app_writer', 'app');
      const facts = factsOf(sql);
      const recorded = JSON.parse(new StatementInputParts('facts', ctx, 4096).build(facts, 'extended', true, timeJson(time)).json);
      assert.equal(recorded.identity.name, undefined);
      assert.equal(recorded.client.addr, undefined);
      assert.equal(recorded.statement.sql, undefined);
      assert.equal(recorded.statement.protocol, undefined);
      assert.equal(recorded.session.role, undefined);
      const record = { identity: { name: 'orders-svc', method: 'jwt' }, client: { addr: '10.1.0.7', port: 51544 }, role: 'app_writer', database: 'app', sql: facts.sql, protocol: 'extended' };
      assert.deepEqual(mergedBack(recorded, record), statementInput(ctx, facts, 'extended', true, time));
    });
  }

  test('full: statement.sql is cut to max_sql_bytes on a character boundary', () => {
    const ctx = sessionContext(connectOf(), 'app_reader', 'app');
    const facts = factsOf(`SELECT '${'é'.repeat(100)}' FROM orders`);
    const doc = JSON.parse(new StatementInputParts('full', ctx, 64).build(facts, 'simple', false, timeJson(time)).json);
    assert.ok(Buffer.byteLength(doc.statement.sql) <= 64);
    assert.ok(facts.sql.startsWith(doc.statement.sql));
  });

  test('shape-derived facts (another literal) give their own sql, the template facts for the rest', () => {
    const cache = new FactsCache(100);
    const a = cache.get('SELECT * FROM orders WHERE id = 1');
    const b = cache.get('SELECT * FROM orders WHERE id = 2');
    assert.ok(a.ok && b.ok);
    const ctx = sessionContext(connectOf(), 'app_reader', 'app');
    const parts = new StatementInputParts('full', ctx, 4096);
    const fb = b.statements[0]!.facts;
    assert.equal(parts.build(fb, 'simple', false, timeJson(time)).json, lineSafe(JSON.stringify(statementInput(ctx, fb, 'simple', false, time))));
  });

  test('connect: full is the ConnectInput; facts leaves out the record identity name/method and client addr/port', () => {
    const input = connectOf({ sub: 'orders-svc', roles: ['w'] });
    assert.deepEqual(JSON.parse(connectRecordInput('full', input).json), input);
    const facts = JSON.parse(connectRecordInput('facts', input).json);
    assert.deepEqual(facts, { identity: { claims: input.identity.claims, cert: null }, client: { tls: true }, request: input.request, time: input.time, proxy: input.proxy });
    assert.ok(!/[\u2028\u2029]/.test(connectRecordInput('facts', input).json), 'line-safe');
  });
});

function recordWithInput(sql: string, input: AuditRecord['input']): AuditRecord {
  return newRecord('statement', 1_795_820_100_123, 7, 's-1', 0, { name: 'orders-svc', method: 'jwt' }, { addr: '10.1.0.7', port: 51544 }, 'app', 'app_writer', 'allow', 'allow-read', 'ok', 'r1', 3, 'simple', undefined, sql, 'SELECT', ['orders'], undefined, input);
}

const reference = (record: AuditRecord): string => `${lineSafe(JSON.stringify(record))}\n`;

describe('records with input', () => {
  test('property: a record with any input is one safe line, the same text as JSON.stringify + escapes, and parses back to the input', () => {
    const ctxOf = (claim: string, role: string): SessionContext => sessionContext(connectOf({ c: claim }), role, 'app');
    const texts = ['SELECT 1', 'SELECT * FROM orders WHERE id = 1', 'DELETE FROM customers', 'SELECT x FROM t1 JOIN t2 USING (id)'];
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ maxLength: 10 }), fc.constantFrom(...texts), fc.constantFrom('facts' as const, 'full' as const), fc.boolean(), (claim, role, sql, mode, inTx) => {
        const ctx = ctxOf(claim, role || 'r');
        const input = new StatementInputParts(mode, ctx, 4096).build(factsOf(sql), 'simple', inTx, timeJson(time));
        const record = recordWithInput(sql, input);
        record.outcome = 'complete';
        record.rows = 1;
        const line = formatRecord(record);
        assert.equal(line, reference(record));
        assert.equal(line.indexOf('\n'), line.length - 1);
        assert.ok(!/[\u2028\u2029\u0085]/.test(line));
        const back = JSON.parse(line);
        assert.deepEqual(back.input, JSON.parse(input.json));
        if (mode === 'full') assert.deepEqual(back.input, statementInput(ctx, factsOf(sql), 'simple', inTx, time));
      }),
      { numRuns: 300 },
    );
  });

  test('an input past the budget is left out whole, with its size; one within it stays', () => {
    const ctx = sessionContext(connectOf(), 'app_reader', 'app');
    const tables = Array.from({ length: 400 }, (_, i) => `t${i}`).join(', ');
    const input = new StatementInputParts('facts', ctx, 4096).build(factsOf(`SELECT 1 FROM ${tables}`), 'simple', false, timeJson(time));
    const bytes = Buffer.byteLength(input.json);
    const kept = prepareRecord(recordWithInput('x', input), { maxSqlBytes: 4096, maxListBytes: bytes });
    assert.equal(kept.input, input);
    assert.equal(kept.input_omitted, undefined);
    const cut = prepareRecord(recordWithInput('x', input), { maxSqlBytes: 4096, maxListBytes: bytes - 1 });
    assert.equal(cut.input, undefined);
    assert.equal(cut.input_omitted, bytes);
    assert.deepEqual(Object.keys(JSON.parse(formatRecord(cut))).slice(-1), ['input_omitted']);
  });

  test('with input on, the smallest queues still hold the largest record a client can make', () => {
    for (const mode of ['facts', 'full'] as const) {
      for (const maxSqlBytes of [64, 4096, 8192]) {
        const queue = Math.max(64 * 1024, 8 * maxSqlBytes);
        const config: AuditConfig = {
          sink: 'file',
          mode: 'fail-closed',
          maxSqlBytes,
          parameters: 'full',
          maxParameterBytes: 65536,
          input: mode,
          worker: { bufferRecords: 100, bufferBytes: queue, batchRecords: 10, flushIntervalMs: 50 },
          stdout: { maxQueuedRecords: 100, maxQueuedBytes: queue },
          file: { path: '/x', maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 100, maxQueuedBytes: queue, retryMs: 100 },
          http: null,
        };
        const budget = auditListBudget(config);
        assert.ok(budget > 0);
        // Every character of the text needs a 6-byte escape; hundreds of tables and columns.
        const control = '\u0001'.repeat(maxSqlBytes);
        const names = Array.from({ length: 2000 }, (_, i) => `"\u0002${i}"`).join(', ');
        const facts = factsOf(`SELECT a, b, c FROM ${names}`);
        const ctx = sessionContext(connectOf({ big: '\u0003'.repeat(1000) }), 'app_reader', 'app');
        const input = new StatementInputParts(mode, ctx, maxSqlBytes).build({ ...facts, sql: control }, 'extended', false, timeJson(time));
        const record = newRecord('statement', Date.now(), 1_000_000, 'a1b2c3d4-1', 0, { name: 'svc', method: 'jwt' }, { addr: '::ffff:10.0.0.1', port: 1 }, 'app', 'app_reader', 'allow', 'allow-read', 'app_reader (reader) may run SELECT', '0123456789abcdef', 10,
          'extended', 'stmt', control, 'SELECT',
          Array.from({ length: 20_000 }, () => '\u0002'.repeat(20)),
          Array.from({ length: 32_767 }, () => ({ bytes: 65536, text: '\u0003'.repeat(200), truncated: true as const })),
          input);
        record.outcome = 'complete';
        record.query_us = 123456;
        record.rows = 1;
        const line = formatRecord(prepareRecord(record, { maxSqlBytes, maxListBytes: budget }));
        assert.ok(Buffer.byteLength(line) <= queue, `${mode}, max_sql_bytes ${maxSqlBytes}: a ${Buffer.byteLength(line)}-byte line for a ${queue}-byte queue`);
      }
    }
  });

  test('input off: the budget is what it was (half, not a third)', () => {
    const base: AuditConfig = {
      sink: 'file', mode: 'fail-closed', maxSqlBytes: 4096, parameters: 'off', maxParameterBytes: 256,
      worker: { bufferRecords: 100, bufferBytes: 65536, batchRecords: 10, flushIntervalMs: 50 },
      stdout: { maxQueuedRecords: 100, maxQueuedBytes: 65536 },
      file: { path: '/x', maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 100, maxQueuedBytes: 65536, retryMs: 100 },
      http: null,
    };
    assert.equal(auditListBudget(base), Math.floor((65536 - 6 * 4096 - 4096) / 2));
    assert.equal(auditListBudget({ ...base, input: 'off' }), auditListBudget(base));
    assert.equal(auditListBudget({ ...base, input: 'facts' }), Math.floor((65536 - 6 * 4096 - 4096) / 3));
  });
});

describe('through the relay core', () => {
  let engine: PolicyEngine;
  before(async () => {
    engine = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath: await ensureOpa() })));
  });

  function harness(mode: 'off' | 'facts' | 'full', clockMs: { ms: number }) {
    const records: AuditRecord[] = [];
    const audit: AuditRecorder = { enabled: true, parameters: 'off', maxParameterBytes: 0, input: mode, maxSqlBytes: 4096, canProceed: () => true, record: (r) => void records.push(r) };
    const time = new TimeSource('UTC', { nowMs: () => clockMs.ms });
    const authorizer: Authorizer = new PolicyAuthorizer({ engine, facts: new FactsCache(100), time, bucketMs: 60_000, decisionCacheEntries: 100, keyByText: false });
    const host = { workerId: 0, audit, metrics: new WorkerMetrics(0), time, log: { info() {}, warn() {}, debug() {} }, authorizer: () => authorizer, shadow: () => null };
    const io: RelayIo = { toServer: () => {}, toClient: () => {}, fail: () => {}, terminate: () => {}, cancelServer: () => {} };
    const connect = connectInput({ name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null }, { addr: '127.0.0.1', port: 5000, tls: false }, { database: 'app', role: 'app_writer', application_name: null }, time.now(), { env: 'prod', instance: 't' });
    const ctx = sessionContext(connect, 'app_writer', 'app');
    const log = new StatementLog(host, 'sess-1', connect.client);
    log.connect(connect.identity, 'app', authorizer.connect(connect), authorizer.revision, 5, connect);
    log.begin(ctx);
    const relay = new Relay(host, io, log, { sessionId: 'sess-1', nonceBase: 'test', maxMessageBytes: 1 << 20, bucketMs: 60_000, context: ctx, txStatus: 0x49 /* 'I' */ });
    return { relay, records, ctx, connect };
  }

  const ready = (status: 'I' | 'T'): Buffer => message('Z', status);
  const done = (tag: string): Buffer => message('C', `${tag}\0`);

  test('a Query is recorded with the transaction state it was decided in; an Execute with its Parse\'s (time and state), not the Execute\'s', () => {
    const clock = { ms: Date.parse('2026-11-27T12:00:10Z') };
    const h = harness('facts', clock);
    const parseMs = clock.ms;
    // Parse outside a transaction …
    h.relay.onClientBytes(Buffer.concat([parse('s1', 'UPDATE orders SET total = 1 WHERE id = $1'), sync()]));
    h.relay.onServerBytes(Buffer.concat([message('1'), ready('I')]));
    // … BEGIN, then Bind/Execute inside it, a minute later.
    h.relay.onClientBytes(query('BEGIN'));
    h.relay.onServerBytes(Buffer.concat([done('BEGIN'), ready('T')]));
    clock.ms += 5_000;
    h.relay.onClientBytes(Buffer.concat([bind('', 's1'), execute(), sync()]));
    h.relay.onServerBytes(Buffer.concat([message('2'), done('UPDATE 0'), ready('T')]));
    h.relay.onClientBytes(query('SELECT count(*) FROM orders'));
    h.relay.onServerBytes(Buffer.concat([done('SELECT 1'), ready('T')]));
    h.relay.onClientBytes(query('DROP TABLE orders'));
    const [connect, begin, exec, select, drop] = h.records.map((r) => JSON.parse(formatRecord(r)));
    assert.deepEqual(connect.input, JSON.parse(connectRecordInput('facts', h.connect).json));
    assert.equal(begin.input.session.in_transaction, false);
    assert.equal(exec.sql, 'UPDATE orders SET total = 1 WHERE id = $1');
    assert.equal(exec.input.session.in_transaction, false, 'as at its Parse');
    assert.equal(exec.input.time.unix_ns, parseMs * 1e6, "the Parse's time");
    assert.equal(exec.input.statement.command, 'UPDATE');
    assert.equal(exec.input.statement.tables[0].name, 'orders');
    assert.ok(exec.input.statement.tables[0].access.includes('write'));
    assert.equal(select.input.session.in_transaction, true);
    assert.equal(select.input.time.unix_ns, clock.ms * 1e6);
    assert.equal(drop.decision, 'deny');
    assert.equal(drop.input.session.in_transaction, true);
    assert.equal(drop.input.statement.command, 'DROP TABLE');
  });

  test('input off: no record has input, as before', () => {
    const h = harness('off', { ms: Date.parse('2026-11-27T12:00:10Z') });
    h.relay.onClientBytes(query('SELECT 1'));
    h.relay.onServerBytes(Buffer.concat([done('SELECT 1'), ready('I')]));
    h.relay.onClientBytes(query('DROP TABLE orders'));
    assert.equal(h.records.length, 3);
    for (const r of h.records) {
      assert.equal(r.input, undefined);
      assert.ok(!formatRecord(r).includes('"input"'));
    }
  });

  test('full: the Execute record holds the very input a cache miss at its Parse evaluates', () => {
    const clock = { ms: Date.parse('2026-11-27T12:00:10Z') };
    const h = harness('full', clock);
    h.relay.onClientBytes(Buffer.concat([parse('', 'SELECT * FROM customers WHERE id = $1'), bind('', ''), execute(), sync()]));
    h.relay.onServerBytes(Buffer.concat([message('1'), message('2'), done('SELECT 1'), ready('I')]));
    const exec = JSON.parse(formatRecord(h.records[1]!));
    const facts = factsOf('SELECT * FROM customers WHERE id = $1');
    assert.deepEqual(exec.input, statementInput(h.ctx, facts, 'extended', false, new TimeSource('UTC', { nowMs: () => clock.ms }).now()));
  });
});
