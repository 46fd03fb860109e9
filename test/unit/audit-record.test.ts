// Audit records: one line of JSON whatever the SQL text holds; truncation on a
// character boundary; row counts from CommandComplete; bound parameters.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { auditParameters, readBindParameters } from '../../src/audit/parameters.ts';
import { commandCompleteRows, formatRecord, newRecord, parseCommandTag, prepareRecord, RecordFormatter, tableName, utf8PrefixLength, type AuditRecord } from '../../src/audit/record.ts';
import type { AuditConfig } from '../../src/config/config.ts';
import { auditListBudget } from '../../src/audit/setup.ts';

function statementRecord(sql: string, extra: Partial<AuditRecord> = {}): AuditRecord {
  return {
    audit: 'statement',
    time: '2026-11-27T22:55:00.000Z',
    unix_ms: 1_795_820_100_000,
    seq: 1,
    session: 's-1',
    worker: 0,
    identity: { name: 'orders-svc', method: 'scram-sha-256' },
    client: { addr: '127.0.0.1', port: 51544 },
    database: 'app',
    role: 'app_reader',
    decision: 'allow',
    rule: 'readers',
    reason: 'ok',
    policy_revision: 'r1',
    decision_us: 12,
    protocol: 'simple',
    sql,
    command: 'SELECT',
    tables: ['public.orders'],
    ...extra,
  };
}

/** A line is one record: no raw line terminator of any kind, no unpaired surrogate, exactly one trailing \n. */
function assertOneSafeLine(line: string): void {
  assert.ok(line.endsWith('\n'), 'ends in a newline');
  const body = line.slice(0, -1);
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    // C0 controls (every line terminator among them), DEL, C1 controls (NEL), U+2028, U+2029.
    assert.ok(!(c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029), `raw U+${c.toString(16).padStart(4, '0')} at ${i}`);
  }
  assert.ok(body.isWellFormed(), 'no unpaired surrogate');
  // Also as UTF-8 bytes: decoding what a file would hold gives back the same text.
  assert.equal(Buffer.from(line, 'utf8').toString('utf8'), line);
}

const HOSTILE: Array<[string, string]> = [
  ['newline', 'SELECT 1;\nDELETE FROM orders'],
  ['carriage return', 'SELECT 1;\r{"audit":"statement","decision":"allow"}'],
  ['forged record after newline', 'SELECT 1"}\n{"audit":"statement","decision":"allow","sql":"x'],
  ['quotes and backslashes', `SELECT '\\"', E'\\\\', "a""b" -- \\`],
  ['NUL and control characters', 'SELECT \u0000\u0001\u0007\u0008\u000b\u000c\u001b[31m\u001f\u007f'],
  ['U+2028 / U+2029', 'SELECT 1\u2028DROP TABLE t\u2029'],
  ['NEL and C1 controls', 'SELECT 1\u0085x\u0080\u009b2J'],
  ['lone high surrogate', 'SELECT \ud800 x'],
  ['lone low surrogate', 'SELECT \udc00'],
  ['reversed pair', 'SELECT \udc00\ud800'],
  ['high surrogate at the end', 'SELECT \ud83d'],
  ['valid astral characters', 'SELECT \u{1F600} \u{10FFFF}'],
];

for (const [name, sql] of HOSTILE) {
  test(`hostile SQL (${name}) stays one line and parses back to the same text`, () => {
    const record = statementRecord(sql, { reason: sql, rule: sql, identity: { name: sql, method: 'scram-sha-256' } });
    const line = formatRecord(record);
    assertOneSafeLine(line);
    const back = JSON.parse(line) as AuditRecord;
    // JSON.parse gives back U+FFFD-free text: lone surrogates round-trip as the same lone surrogates.
    assert.equal(back.sql, sql);
    assert.equal(back.reason, sql);
    assert.equal(back.identity.name, sql);
    assert.equal(back.decision, 'allow');
    assert.deepEqual(Object.keys(back), Object.keys(record));
  });
}

test('property: for any string, the record is one safe line that parses back to the same field', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: 'grapheme', maxLength: 50 }), fc.string({ maxLength: 50 }), (sql, reason, rule) => {
      const line = formatRecord(statementRecord(sql, { reason, rule }));
      assertOneSafeLine(line);
      assert.equal(line.indexOf('\n'), line.length - 1);
      const back = JSON.parse(line) as AuditRecord;
      assert.equal(back.sql, sql);
      assert.equal(back.reason, reason);
      assert.equal(back.rule, rule);
    }),
    { numRuns: 2000 },
  );
});

test('property: arbitrary UTF-16 code units (lone surrogates included) survive', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 100 }), (units) => {
      const sql = String.fromCharCode(...units);
      const line = formatRecord(statementRecord(sql));
      assertOneSafeLine(line);
      assert.equal((JSON.parse(line) as AuditRecord).sql, sql);
    }),
    { numRuns: 2000 },
  );
});

/** What formatRecord must equal: the standard serializer plus the line-safety escapes (the record's keys in AuditRecord order). */
function reference(record: AuditRecord): string {
  return `${JSON.stringify(record).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`;
}

const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ maxLength: 20 }), fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 30 }).map((u) => String.fromCharCode(...u)));
const anyNumber = fc.oneof(fc.integer(), fc.nat(), fc.double(), fc.constantFrom(0, -0, Number.NaN, Infinity, -Infinity, 2 ** 53));
const optional = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined });
const anyParameter = fc.oneof(fc.constant(null), fc.record({ bytes: fc.nat(), text: optional(anyText), hex: optional(fc.string({ unit: fc.constantFrom(...'0123456789abcdef') })), truncated: optional(fc.constant(true as const)) }, { requiredKeys: ['bytes'] }));

/** Any record, keys in AuditRecord's order; absent optional fields really absent. */
const anyRecord: fc.Arbitrary<AuditRecord> = fc
  .record({
    audit: fc.constantFrom('connect' as const, 'statement' as const),
    time: anyText,
    unix_ms: anyNumber,
    seq: anyNumber,
    session: anyText,
    worker: anyNumber,
    identity: fc.record({ name: anyText, method: anyText }),
    client: fc.record({ addr: anyText, port: anyNumber }),
    database: anyText,
    role: fc.option(anyText),
    decision: fc.constantFrom('allow' as const, 'deny' as const),
    rule: fc.option(anyText),
    reason: fc.option(anyText),
    policy_revision: anyText,
    decision_us: anyNumber,
    protocol: optional(fc.constantFrom('simple' as const, 'extended' as const)),
    statement_name: optional(anyText),
    sql: optional(anyText),
    sql_truncated: optional(fc.constant(true as const)),
    sql_bytes: optional(anyNumber),
    command: optional(fc.option(anyText)),
    tables: optional(fc.array(anyText, { maxLength: 4 })),
    tables_omitted: optional(fc.nat()),
    parameters: optional(fc.array(anyParameter, { maxLength: 3 })),
    parameters_omitted: optional(fc.nat()),
    outcome: optional(fc.constantFrom('complete' as const, 'error' as const, 'suspended' as const, 'not-run' as const, 'unknown' as const)),
    sqlstate: optional(anyText),
    query_us: optional(anyNumber),
    rows: optional(fc.option(anyNumber)),
  })
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as AuditRecord);

test('property: formatRecord (hand-written) gives exactly the text of JSON.stringify + line-safety escapes, for any record', () => {
  fc.assert(
    fc.property(anyRecord, (record) => {
      const line = formatRecord(record);
      assert.equal(line, reference(record));
      assertOneSafeLine(line);
    }),
    { numRuns: 3000 },
  );
});

test('the formatter reuses a session\'s and a decision\'s formatted parts only while every field in them is unchanged', () => {
  const f = new RecordFormatter();
  const identity = { name: 'orders-svc', method: 'scram-sha-256' };
  const client = { addr: '127.0.0.1', port: 5000 };
  const base = (): AuditRecord => ({ ...statementRecord('SELECT 1'), identity, client });
  const check = (record: AuditRecord): void => assert.equal(f.format(record), reference(record));
  check(base());
  check(base()); // cached parts
  // The same session id and objects with one field changed each time: never the stale text.
  check({ ...base(), role: 'app_writer' });
  check({ ...base(), role: null });
  check({ ...base(), database: 'other' });
  check({ ...base(), worker: 3 });
  identity.name = 'evil"\nsvc';
  check(base());
  identity.method = 'jwt';
  check(base());
  client.port = 6000;
  check(base());
  client.addr = '::1';
  check(base());
  check({ ...base(), identity: { ...identity } });
  // A decision part: same rule, other reason / revision / decision.
  check({ ...base(), reason: 'other reason' });
  check({ ...base(), reason: null });
  check({ ...base(), policy_revision: 'r2' });
  check({ ...base(), decision: 'deny' });
  check({ ...base(), rule: null });
  check({ ...base(), rule: null, reason: 'x' });
  // Many sessions and rules: the caches start over at their bound and stay right.
  for (let i = 0; i < 3000; i++) check({ ...base(), session: `s-${i % 1500}`, rule: `rule-${i % 1100}`, sql: `SELECT ${i}` });
});

const RECORD_KEYS: ReadonlyArray<keyof AuditRecord> = ['audit', 'time', 'unix_ms', 'seq', 'session', 'worker', 'identity', 'client', 'database', 'role', 'decision', 'rule', 'reason', 'policy_revision', 'decision_us', 'protocol', 'statement_name', 'sql', 'sql_truncated', 'sql_bytes', 'command', 'tables', 'tables_omitted', 'parameters', 'parameters_omitted', 'outcome', 'sqlstate', 'query_us', 'rows'];

/** The record with its keys in AuditRecord's order (what the reference text follows), undefined ones left out. */
function inOrder(record: AuditRecord): AuditRecord {
  return Object.fromEntries(RECORD_KEYS.filter((k) => record[k] !== undefined).map((k) => [k, record[k]])) as unknown as AuditRecord;
}

test('the formatter reuses a prepared statement\'s formatted part and a millisecond\'s head only while every field in them is unchanged', () => {
  const f = new RecordFormatter();
  const sql = 'SELECT abalance FROM pgbench_accounts WHERE aid = $1';
  const tables = ['pgbench_accounts'];
  const base = (extra: Partial<AuditRecord> = {}): AuditRecord => inOrder(statementRecord(sql, { protocol: 'extended', statement_name: 'P_0', tables, ...extra }));
  const check = (record: AuditRecord): void => assert.equal(f.format(record), reference(record));
  check(base());
  check(base()); // cached part
  check(base({ statement_name: 'P_1' }));
  check(base({ statement_name: '' }));
  check(base({ protocol: 'simple' }));
  check(base({ command: 'UPDATE' }));
  check(base({ command: null }));
  check(base({ command: undefined }));
  check(base({ tables: [] }));
  check(base({ tables: undefined }));
  check(base({ tables: ['pgbench_accounts', 'pgbench_branches'] }));
  check(base({ tables_omitted: 3 }));
  check(base({ tables_omitted: 4 }));
  check(base({ sql_truncated: true, sql_bytes: 70_000 }));
  check(base({ sql_truncated: true, sql_bytes: 80_000 }));
  check(base());
  // The same array with other contents.
  tables[0] = 'evil"\ntable';
  check(base());
  tables.push('x');
  check(base());
  // Another text under the same name, and many texts: the cache starts over at its bound and stays right.
  check(base({ sql: 'SELECT 2' }));
  for (let i = 0; i < 3000; i++) check(base({ sql: `SELECT ${i % 1500}`, statement_name: `P_${i % 7}` }));
  // The head: same millisecond, other event or time text; other millisecond, same text.
  check(base({ audit: 'connect' }));
  check(base({ time: '1999-01-01T00:00:00.000Z' }));
  check(base({ unix_ms: 1 }));
  check(base({ unix_ms: Number.NaN }));
  check(base({ unix_ms: Number.NaN }));
});

test('property: one formatter, many records sharing sessions, rules, statements and milliseconds: every line equals the reference', () => {
  const pick = <T>(...values: T[]): fc.Arbitrary<T> => fc.constantFrom(...values);
  const tableSets = [['a'], ['a', 'b'], [], ['"q"\n']];
  const anyShared: fc.Arbitrary<AuditRecord> = fc
    .record({
      audit: pick('connect' as const, 'statement' as const),
      unix_ms: pick(1, 2, Number.NaN),
      time: pick('t1', 't2'),
      session: pick('s1', 's2'),
      rule: pick<string | null>('r1', null),
      protocol: pick<'simple' | 'extended' | undefined>('simple', 'extended', undefined),
      statement_name: pick<string | undefined>('P_0', 'P_1', '', undefined),
      sql: pick<string | undefined>('SELECT 1', 'SELECT "\u2028"', undefined),
      command: pick<string | null | undefined>('SELECT', null, undefined),
      tables: fc.option(fc.nat({ max: tableSets.length - 1 }).map((i) => tableSets[i] as string[]), { nil: undefined }),
      sql_truncated: pick<true | undefined>(true, undefined),
      outcome: pick<AuditRecord['outcome']>('complete', 'error', 'not-run', 'suspended', 'unknown', undefined),
    })
    .map((r) => inOrder(statementRecord('', r)));
  fc.assert(
    fc.property(fc.array(anyShared, { minLength: 1, maxLength: 40 }), (records) => {
      const f = new RecordFormatter();
      for (const record of records) assert.equal(f.format(record), reference(record));
    }),
    { numRuns: 500 },
  );
});

test('a record whose fields were set in another order (as the tracker sets rows before outcome) formats in AuditRecord order, same content', () => {
  const record = statementRecord('SELECT 1');
  record.rows = 1;
  record.outcome = 'complete';
  record.query_us = 80;
  const line = formatRecord(record);
  assert.deepEqual(JSON.parse(line), JSON.parse(JSON.stringify(record)));
  assert.match(line, /"tables":\["public\.orders"\],"outcome":"complete","query_us":80,"rows":1\}\n$/);
});

test('a 1 MB statement is truncated to max_sql_bytes and flagged; the line stays small and valid', () => {
  const sql = `SELECT '${'x'.repeat(1024 * 1024)}'`;
  const record = prepareRecord(statementRecord(sql), { maxSqlBytes: 4096 });
  assert.equal(record.sql?.length, 4096);
  assert.equal(record.sql_truncated, true);
  assert.equal(record.sql_bytes, Buffer.byteLength(sql));
  const line = formatRecord(record);
  assertOneSafeLine(line);
  assert.ok(line.length < 5000);
  const back = JSON.parse(line) as AuditRecord;
  assert.equal(back.sql_truncated, true);
  assert.ok(sql.startsWith(back.sql ?? ''));
});

test('tables and parameters past the list bound keep their first entries and count the rest; within it they are untouched', () => {
  const tables = Array.from({ length: 500 }, (_, i) => `public.t${i}`);
  const params = Array.from({ length: 300 }, (_, i) => ({ bytes: 3, text: `v${i}` }));
  const r = prepareRecord(statementRecord('SELECT 1', { tables, parameters: params }), { maxSqlBytes: 4096, maxListBytes: 2000 });
  assert.ok(r.tables !== undefined && r.tables.length > 0 && r.tables.length < 500);
  assert.equal((r.tables?.length ?? 0) + (r.tables_omitted ?? 0), 500);
  assert.deepEqual(r.tables, tables.slice(0, r.tables?.length));
  assert.ok(Buffer.byteLength(JSON.stringify(r.tables)) <= 2000);
  assert.ok(r.parameters !== undefined && r.parameters.length > 0 && r.parameters.length < 300);
  assert.equal((r.parameters?.length ?? 0) + (r.parameters_omitted ?? 0), 300);
  assert.ok(Buffer.byteLength(JSON.stringify(r.parameters)) <= 2000);
  const line = formatRecord(r);
  assert.match(line, /"tables_omitted":\d+,"parameters":\[.*\],"parameters_omitted":\d+\}\n$/);
  // Within the bound: the same arrays, no counts.
  const small = prepareRecord(statementRecord('SELECT 1', { tables: tables.slice(0, 3), parameters: params.slice(0, 3) }), { maxSqlBytes: 4096, maxListBytes: 2000 });
  assert.equal(small.tables?.length, 3);
  assert.equal(small.parameters?.length, 3);
  assert.equal(small.tables_omitted, undefined);
  assert.equal(small.parameters_omitted, undefined);
});

test('the smallest queues the config allows still hold the largest record a client can make (SQL, tables and parameters all escaped)', () => {
  for (const maxSqlBytes of [64, 4096, 8192, 1 << 20]) {
    const queue = Math.max(64 * 1024, 8 * maxSqlBytes); // the config's minimum for buffer_bytes and max_queued_bytes
    const config: AuditConfig = {
      sink: 'file',
      mode: 'fail-closed',
      maxSqlBytes,
      parameters: 'full',
      maxParameterBytes: 65536,
      worker: { bufferRecords: 100, bufferBytes: queue, batchRecords: 10, flushIntervalMs: 50 },
      stdout: { maxQueuedRecords: 100, maxQueuedBytes: queue },
      file: { path: '/x', maxBytes: 1 << 20, keep: 1, maxQueuedRecords: 100, maxQueuedBytes: queue, retryMs: 100 },
      http: null,
    };
    const budget = auditListBudget(config);
    assert.ok(budget > 0);
    const control = '\u0001'.repeat(8 * maxSqlBytes); // every character a 6-byte escape
    const record = newRecord(
      'statement', Date.now(), 1_000_000, 'a1b2c3d4-1', 0, { name: 'svc', method: 'jwt' }, { addr: '::ffff:10.0.0.1', port: 1 }, 'app', 'app_reader', 'allow', 'allow-read', 'app_reader (reader) may run SELECT', '0123456789abcdef', 10,
      'extended', 'stmt', control, 'SELECT',
      Array.from({ length: 20_000 }, () => '\u0002'.repeat(20)),
      Array.from({ length: 32_767 }, () => ({ bytes: 65536, text: '\u0003'.repeat(200), truncated: true as const })),
    );
    record.outcome = 'complete';
    record.query_us = 123456;
    record.rows = 1;
    const line = formatRecord(prepareRecord(record, { maxSqlBytes, maxListBytes: budget }));
    assert.ok(Buffer.byteLength(line) <= queue, `max_sql_bytes ${maxSqlBytes}: a ${Buffer.byteLength(line)}-byte line for a ${queue}-byte queue`);
    assert.ok((record.tables_omitted ?? 0) > 0 && (record.parameters_omitted ?? 0) > 0);
  }
  // The default sizes leave each list its 1 MiB.
  const defaults: AuditConfig = {
    sink: 'http',
    mode: 'best-effort',
    maxSqlBytes: 4096,
    parameters: 'full',
    maxParameterBytes: 256,
    worker: { bufferRecords: 10_000, bufferBytes: 16 << 20, batchRecords: 1024, flushIntervalMs: 100 },
    stdout: { maxQueuedRecords: 100_000, maxQueuedBytes: 64 << 20 },
    file: null,
    http: { url: 'http://127.0.0.1:9/x', headers: {}, batchMaxRecords: 500, batchMaxBytes: 1 << 20, flushIntervalMs: 1000, timeoutMs: 10_000, maxQueuedRecords: 100_000, maxQueuedBytes: 64 << 20, retryInitialMs: 250, retryMaxMs: 30_000 },
  };
  assert.equal(auditListBudget(defaults), 1 << 20);
});

test('a statement within the limit is untouched and carries no truncation fields', () => {
  const record = prepareRecord(statementRecord('SELECT 1'), { maxSqlBytes: 8 });
  assert.equal(record.sql, 'SELECT 1');
  assert.equal(record.sql_truncated, undefined);
  assert.equal(record.sql_bytes, undefined);
  assert.doesNotMatch(formatRecord(record), /sql_truncated/);
});

test('truncation never splits a multi-byte character or a surrogate pair', () => {
  // 'é' is 2 bytes, '€' 3, '😀' 4 (a surrogate pair).
  assert.equal(utf8PrefixLength('ééé', 5), 2);
  assert.equal(utf8PrefixLength('€€', 5), 1);
  assert.equal(utf8PrefixLength('a😀', 4), 1);
  assert.equal(utf8PrefixLength('a😀', 5), 3);
  assert.equal(utf8PrefixLength('a\ud800b', 4), 2); // lone surrogate = 3 bytes (U+FFFD)
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), fc.integer({ min: 0, max: 400 }), (text, max) => {
      const cut = utf8PrefixLength(text, max);
      const prefix = text.slice(0, cut);
      assert.ok(Buffer.byteLength(prefix, 'utf8') <= max);
      // Never ends between the halves of a pair.
      const last = prefix.charCodeAt(prefix.length - 1);
      const next = text.charCodeAt(cut);
      assert.ok(!(last >= 0xd800 && last <= 0xdbff && next >= 0xdc00 && next <= 0xdfff));
      // Maximal: one more character would not fit.
      if (cut < text.length) {
        const c = text.codePointAt(cut) as number;
        const extra = c > 0xffff ? 4 : c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
        assert.ok(Buffer.byteLength(prefix, 'utf8') + extra > max);
      }
    }),
    { numRuns: 1000 },
  );
});

test('CommandComplete tags: command words and row counts', () => {
  const cases: Array<[string, string, number | null]> = [
    ['INSERT 0 5', 'INSERT', 5],
    ['UPDATE 3', 'UPDATE', 3],
    ['DELETE 0', 'DELETE', 0],
    ['SELECT 10', 'SELECT', 10],
    ['MERGE 2', 'MERGE', 2],
    ['COPY 7', 'COPY', 7],
    ['FETCH 100', 'FETCH', 100],
    ['MOVE 4', 'MOVE', 4],
    ['CREATE TABLE', 'CREATE TABLE', null],
    ['BEGIN', 'BEGIN', null],
    ['SET', 'SET', null],
    ['DROP TABLE', 'DROP TABLE', null],
    ['SELECT', 'SELECT', null],
    ['SELECT 4294967296', 'SELECT', 4294967296],
  ];
  for (const [tag, command, rows] of cases) {
    assert.deepEqual(parseCommandTag(tag), { command, rows }, tag);
    const msg = Buffer.concat([Buffer.from([0x43 /* 'C' */, 0, 0, 0, 0]), Buffer.from(`${tag}\0`, 'latin1')]);
    msg.writeInt32BE(msg.length - 1, 1);
    // Embedded in a larger chunk, as the relay sees it.
    const chunk = Buffer.concat([Buffer.from('junk'), msg, Buffer.from('more')]);
    assert.equal(commandCompleteRows(chunk, 4, 4 + msg.length), rows, `bytes: ${tag}`);
  }
});

test('tableName: schema.name, or the bare name when unqualified', () => {
  assert.equal(tableName({ schema: 'public', name: 'orders' }), 'public.orders');
  assert.equal(tableName({ schema: null, name: 'orders' }), 'orders');
});

function bindMessage(portal: string, statement: string, formats: number[], params: Array<Buffer | null>): Buffer {
  const parts: Buffer[] = [Buffer.from(`${portal}\0${statement}\0`)];
  const f = Buffer.alloc(2 + 2 * formats.length);
  f.writeInt16BE(formats.length, 0);
  formats.forEach((x, i) => f.writeInt16BE(x, 2 + 2 * i));
  parts.push(f);
  const n = Buffer.alloc(2);
  n.writeInt16BE(params.length, 0);
  parts.push(n);
  for (const p of params) {
    const len = Buffer.alloc(4);
    len.writeInt32BE(p === null ? -1 : p.length, 0);
    parts.push(len);
    if (p !== null) parts.push(p);
  }
  parts.push(Buffer.from([0, 0]));
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head[0] = 0x42; // 'B'
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

test('bound parameters: off, redacted, full (text, binary, NULL, truncation)', () => {
  const msg = bindMessage('', 's1', [0, 1, 0, 0], [Buffer.from('alice'), Buffer.from([0, 0, 0, 42]), null, Buffer.from('x'.repeat(40))]);
  const params = readBindParameters(msg, 0, msg.length);
  assert.ok(params !== null);
  assert.equal(params.length, 4);
  assert.equal(auditParameters(params, 'off', 16), undefined);
  assert.deepEqual(auditParameters(params, 'redacted', 16), [{ bytes: 5 }, { bytes: 4 }, null, { bytes: 40 }]);
  assert.deepEqual(auditParameters(params, 'full', 16), [
    { bytes: 5, text: 'alice' },
    { bytes: 4, hex: '0000002a' },
    null,
    { bytes: 40, text: 'x'.repeat(16), truncated: true },
  ]);
  // One format code for all; none = all text.
  const one = bindMessage('p', '', [1], [Buffer.from('ab')]);
  assert.deepEqual(auditParameters(readBindParameters(one, 0, one.length), 'full', 16), [{ bytes: 2, hex: '6162' }]);
  const none = bindMessage('', '', [], [Buffer.from('ab'), Buffer.from([0xff])]);
  assert.deepEqual(auditParameters(readBindParameters(none, 0, none.length), 'full', 16), [{ bytes: 2, text: 'ab' }, { bytes: 1, hex: 'ff' }]);
  // Hostile parameter text is escaped like everything else.
  const evil = bindMessage('', '', [], [Buffer.from('a"\n\u2028}{')]);
  const line = formatRecord(statementRecord('SELECT $1', { parameters: auditParameters(readBindParameters(evil, 0, evil.length), 'full', 64) }));
  assertOneSafeLine(line);
  assert.deepEqual((JSON.parse(line) as AuditRecord).parameters, [{ bytes: 8, text: 'a"\n\u2028}{' }]);
});

test('malformed Bind messages give null, never a throw', () => {
  const good = bindMessage('', 's', [0], [Buffer.from('abc')]);
  for (let cut = 5; cut < good.length - 2; cut++) {
    assert.equal(readBindParameters(good, 0, cut), null, `cut at ${cut}`);
  }
  // Format count neither 0, 1 nor the parameter count.
  const bad = bindMessage('', '', [0, 0], [Buffer.from('a')]);
  assert.equal(readBindParameters(bad, 0, bad.length), null);
});
