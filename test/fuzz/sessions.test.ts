// Fuzz (docs/security.md, "Fuzzing"): whole sessions against the running proxy,
// with the real PostgreSQL behind it. Each run logs in as the reader and sends
// a pipeline built from valid messages — Query, Parse/Bind/Describe/Execute/
// Sync/Flush/Close, COPY data, FunctionCall — over a pool of allowed, denied
// and hiding SQL, then maybe mutated (byte flips, length corruption,
// truncation, insertions, deletions, reordering) and delivered split at random
// points. A tail (Sync, ROLLBACK, SELECT 4242) follows. Properties:
//   - no hang: every session answers the tail or ends within a bound, and an
//     unmutated pipeline is always answered (or ended by its own Terminate);
//   - the proxy never dies: a fresh login works after every batch;
//   - no unhandled rejection or uncaught exception, no worker crash;
//   - memory bounded: the proxy's RSS does not grow without bound;
//   - nothing a reader may not do ever happens: the probe (which grants every
//     role everything) never changes;
//   - no upstream session is left behind.
// The start-up phase is fuzzed as well (mutated startup and SASL messages).
//
// CI runs a few seconds; ROLEGATE_FUZZ_SECONDS / ROLEGATE_FUZZ_RUNS scale it
// up, ROLEGATE_FUZZ_LANES sets the concurrent sessions (default 4). The
// numbers of a run are printed as test diagnostics.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { message, RawClient, startupPacket, type Message } from '../helpers/raw-client.ts';
import { assertUsable, fuzzBudget, mutate, mutationArbitrary, Probe, session, sleep, splitAt, type Mutation } from '../helpers/security.ts';

const P = 'sec_fuzz_probe';
const probe = new Probe(P);
const MAX_MESSAGE_BYTES = 1 << 20;
const budget = fuzzBudget({ runs: 100_000, seconds: 6 });
const LANES = Number.parseInt(process.env['ROLEGATE_FUZZ_LANES'] ?? '', 10) || 4;
/**
 * A session must answer the tail or end within this; longer is a hang — or,
 * for a mutated stream, a message whose length promises bytes that never come
 * (then the proxy must close the session when the client leaves).
 */
const ANSWER_MS = 6000;
const ANSWER_MUTATED_MS = 1200;
const CLOSE_MS = 4000;
const STARTUP_TIMEOUT_MS = 3000;

let proxy: RunningProxy;
let probeBefore = '';
let baselineUpstream = 0;

const stats = { runs: 0, messages: 0, bytes: 0, mutated: 0, answered: 0, closed: 0, waiting: 0, startupRuns: 0 };

function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

async function upstreamSessions(): Promise<number> {
  const rows = await adminQuery<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'app' AND usename IN ('app_reader', 'app_writer', 'app_admin')");
  return Number(rows[0]?.n);
}

before(async () => {
  await ensureDemoDatabase();
  await probe.create();
  probeBefore = await probe.state();
  proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: `limits: { startup_timeout_ms: ${STARTUP_TIMEOUT_MS}, max_message_bytes: ${MAX_MESSAGE_BYTES} }\n` }));
  baselineUpstream = await upstreamSessions();
});
after(async () => {
  await proxy?.stop();
});

// ---- message builders -------------------------------------------------------------

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');
const int16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
};

const SQL = [
  'SELECT 1',
  `SELECT * FROM ${P}`,
  `SELECT count(*) FROM ${P} WHERE id = $1`,
  'SELECT $1::text, $2::int',
  `DELETE FROM ${P}`,
  `UPDATE ${P} SET v = 'fuzz'`,
  `INSERT INTO ${P} VALUES (99, 'fuzz')`,
  `TRUNCATE ${P}`,
  `DROP TABLE ${P}`,
  `WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT * FROM d`,
  `SELECT 1; DELETE FROM ${P}`,
  `SELECT '\\'; DELETE FROM ${P}; --'`,
  `SELECT E'\\'; DELETE FROM ${P}; --'`,
  `SELECT E'ぁ\\'; DELETE FROM ${P}; --'`,
  `/* /* */ DELETE FROM ${P} */ SELECT 1`,
  `SELECT $$ ; DELETE FROM ${P}; $$`,
  `SELECT setval('${P}_seq', 99)`,
  `SELECT nextval('${P}_seq')`,
  "SET client_encoding = 'SJIS'",
  "SELECT set_config('application_name', 'x', false), set_config('client_encoding', 'SJIS', false)",
  "SELECT set_config('role', 'app_admin', false)",
  'SET ROLE app_admin',
  'DISCARD ALL',
  'RESET ALL',
  'BEGIN',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT s',
  'ROLLBACK TO SAVEPOINT s',
  'PREPARE p AS SELECT 1',
  `PREPARE w AS DELETE FROM ${P}`,
  'EXECUTE p',
  'EXECUTE w',
  'DEALLOCATE ALL',
  `DECLARE c CURSOR WITH HOLD FOR SELECT * FROM ${P}`,
  'FETCH 1 FROM c',
  'CLOSE c',
  `COPY ${P} TO STDOUT`,
  `COPY ${P} FROM STDIN`,
  `COPY (DELETE FROM ${P} RETURNING *) TO STDOUT`,
  'SELECT 1/0',
  `EXPLAIN ANALYZE DELETE FROM ${P}`,
  `EXPLAIN SELECT * FROM ${P}`,
  "SELECT pg_read_file('/etc/hostname')",
  "SELECT lo_import('/etc/hostname')",
  `SELECT query_to_xml('DELETE FROM ${P}', true, false, '')`,
  `DO $$ BEGIN DELETE FROM ${P}; END $$`,
  'SHOW client_encoding',
  '',
  ';',
  'SELEKT broken',
];

type Spec =
  | { t: 'Q'; sql: number }
  | { t: 'P'; name: number; sql: number; types: number }
  | { t: 'B'; portal: number; stmt: number; params: string[] }
  | { t: 'D'; kind: 'S' | 'P'; name: number }
  | { t: 'E'; portal: number; rows: number }
  | { t: 'C'; kind: 'S' | 'P'; name: number }
  | { t: 'S' }
  | { t: 'H' }
  | { t: 'd'; data: string }
  | { t: 'c' }
  | { t: 'f'; why: string }
  | { t: 'F'; oid: number }
  | { t: 'X' };

const NAMES = ['', 's1', 'p', 'w'];

const spec: fc.Arbitrary<Spec> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('Q' as const), sql: fc.nat(SQL.length - 1) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('P' as const), name: fc.nat(NAMES.length - 1), sql: fc.nat(SQL.length - 1), types: fc.nat(2) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('B' as const), portal: fc.nat(NAMES.length - 1), stmt: fc.nat(NAMES.length - 1), params: fc.array(fc.constantFrom('1', '42', 'x', ''), { maxLength: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('D' as const), kind: fc.constantFrom('S' as const, 'P' as const), name: fc.nat(NAMES.length - 1) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('E' as const), portal: fc.nat(NAMES.length - 1), rows: fc.constantFrom(0, 1, 2) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('C' as const), kind: fc.constantFrom('S' as const, 'P' as const), name: fc.nat(NAMES.length - 1) }) },
  { weight: 4, arbitrary: fc.constant({ t: 'S' as const }) },
  { weight: 1, arbitrary: fc.constant({ t: 'H' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('d' as const), data: fc.constantFrom('1\tone\n', '99\tfuzz\n', '\\.\n') }) },
  { weight: 1, arbitrary: fc.constant({ t: 'c' as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('f' as const), why: fc.constantFrom('stop', '') }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('F' as const), oid: fc.integer({ min: 1, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'X' as const }) },
);

function encode(s: Spec): Buffer {
  switch (s.t) {
    case 'Q':
      return message('Q', cstr(SQL[s.sql]!));
    case 'P':
      return message('P', Buffer.concat([cstr(NAMES[s.name]!), cstr(SQL[s.sql]!), int16(s.types), ...Array.from({ length: s.types }, () => int32(25))]));
    case 'B':
      return message('B', Buffer.concat([cstr(NAMES[s.portal]!), cstr(NAMES[s.stmt]!), int16(0), int16(s.params.length), ...s.params.flatMap((p) => [int32(Buffer.byteLength(p)), Buffer.from(p)]), int16(0)]));
    case 'D':
      return message('D', Buffer.concat([Buffer.from(s.kind), cstr(NAMES[s.name]!)]));
    case 'E':
      return message('E', Buffer.concat([cstr(NAMES[s.portal]!), int32(s.rows)]));
    case 'C':
      return message('C', Buffer.concat([Buffer.from(s.kind), cstr(NAMES[s.name]!)]));
    case 'S':
      return message('S');
    case 'H':
      return message('H');
    case 'd':
      return message('d', s.data);
    case 'c':
      return message('c');
    case 'f':
      return message('f', cstr(s.why));
    case 'F':
      return message('F', Buffer.concat([int32(s.oid), int16(0), int16(1), int32(1), Buffer.from('1'), int16(0)]));
    case 'X':
      return message('X');
    default: {
      const unreachable: never = s;
      throw new Error(`unknown spec ${JSON.stringify(unreachable)}`);
    }
  }
}

interface Case {
  specs: Spec[];
  reorder: number[] | null;
  mutations: Mutation[];
  cuts: number[];
  delays: number[];
}

const fuzzCase: fc.Arbitrary<Case> = fc.record({
  specs: fc.array(spec, { minLength: 1, maxLength: 24 }),
  reorder: fc.option(fc.array(fc.nat(), { minLength: 24, maxLength: 24 }), { freq: 6 }),
  mutations: fc.oneof({ weight: 2, arbitrary: fc.constant([] as Mutation[]) }, { weight: 3, arbitrary: fc.array(mutationArbitrary([MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, 100, 1000]), { minLength: 1, maxLength: 4 }) }),
  cuts: fc.array(fc.nat(), { maxLength: 12 }),
  delays: fc.array(fc.nat(8), { maxLength: 12 }),
});

// Sync ends any extended pipeline, ROLLBACK any (aborted) transaction block; then a query whose answer is recognisable.
const TAIL = Buffer.concat([message('S'), message('Q', 'ROLLBACK\0'), message('Q', 'SELECT 4242 AS fuzz_tail\0')]);

function isTailRow(m: Message): boolean {
  return m.type === 'D' && m.body.length === 10 && m.body.toString('utf8', 6) === '4242';
}

type Outcome = 'answered' | 'closed' | 'waiting';

/** Deliver one case on a fresh reader session; resolves with how the session ended up. */
async function runCase(c: Case): Promise<Outcome> {
  let specs = c.specs;
  if (c.reorder !== null) {
    const keys = c.reorder;
    specs = specs.map((s, i) => ({ s, k: keys[i] ?? i })).sort((a, b) => a.k - b.k).map((x) => x.s);
  }
  const stream = mutate(Buffer.concat(specs.map(encode)), c.mutations);
  stats.runs++;
  stats.messages += specs.length;
  stats.bytes += stream.length;
  if (c.mutations.length > 0) stats.mutated++;
  const client = await session(proxy.port, 'reader');
  try {
    const chunks = splitAt(stream, c.cuts);
    for (let i = 0; i < chunks.length && !client.closed; i++) {
      client.write(chunks[i]!);
      const d = c.delays[i] ?? 0;
      if (d > 0) await sleep(d);
    }
    if (!client.closed) client.write(TAIL);
    const deadline = Date.now() + (c.mutations.length > 0 ? ANSWER_MUTATED_MS : ANSWER_MS);
    let sawTail = false;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let m: Message | null;
      try {
        m = await client.read(left);
      } catch {
        break; // timed out
      }
      if (m === null) return 'closed';
      if (isTailRow(m)) sawTail = true;
      else if (sawTail && m.type === 'Z') return 'answered';
    }
    // Still open and silent: a message the proxy is waiting for the rest of, or a hang.
    client.end();
    const closed = await client.waitClosed(CLOSE_MS);
    assert.ok(closed, 'the proxy did not close a session after the client’s FIN');
    return 'waiting';
  } finally {
    client.socket.destroy();
  }
}

async function assertProxyHealthy(): Promise<void> {
  assert.equal(proxy.child.exitCode, null, 'the proxy process is alive');
  const c = await session(proxy.port, 'reader');
  await assertUsable(c);
  c.end();
  assert.doesNotMatch(proxy.stderr(), /Unhandled|uncaught|FATAL ERROR|heap out of memory/i, proxy.stderr());
  assert.equal(proxy.logs.some((l) => l['msg'] === 'worker crashed'), false, 'no worker crashed');
}

describe('whole sessions under fuzzing', () => {
  test('random and mutated pipelines: no crash, no hang, no change, bounded memory', async (t) => {
    const pid = proxy.child.pid!;
    // Warm up (JIT, caches, parser) before the memory baseline.
    for (let i = 0; i < 20; i++) await runCase({ specs: [{ t: 'Q', sql: i % SQL.length }, { t: 'S' }], reorder: null, mutations: [], cuts: [], delays: [] });
    const rssStart = rssKb(pid);
    let rssMax = rssStart;
    const started = Date.now();
    const perLane = Math.max(1, Math.ceil(budget.numRuns / LANES));
    await Promise.all(
      Array.from({ length: LANES }, (_, lane) =>
        fc.assert(
          fc.asyncProperty(fuzzCase, async (c) => {
            const outcome = await runCase(c);
            stats[outcome]++;
            if (c.mutations.length === 0 && !c.specs.some((s) => s.t === 'X')) {
              assert.equal(outcome, 'answered', 'an unmutated pipeline is always answered');
            }
            if (stats.runs % 25 === 0) {
              rssMax = Math.max(rssMax, rssKb(pid));
              assert.equal(await probe.state(), probeBefore, 'the probe changed: a reader got a write through');
              assert.equal(proxy.child.exitCode, null, 'the proxy died');
            }
          }),
          { numRuns: perLane, interruptAfterTimeLimit: budget.timeLimitMs, ...(budget.seed === undefined ? {} : { seed: budget.seed + lane }) },
        ),
      ),
    );
    const seconds = (Date.now() - started) / 1000;
    await assertProxyHealthy();
    await probe.assertUnchanged(probeBefore, 'after the fuzz run');
    const rssEnd = rssKb(pid);
    rssMax = Math.max(rssMax, rssEnd);
    t.diagnostic(
      `fuzz sessions: ${stats.runs} sessions, ${stats.messages} messages, ${stats.bytes} bytes in ${seconds.toFixed(1)} s ` +
        `(${stats.mutated} mutated; answered ${stats.answered}, closed ${stats.closed}, waiting ${stats.waiting}); ` +
        `proxy RSS ${Math.round(rssStart / 1024)} MB → ${Math.round(rssEnd / 1024)} MB (max ${Math.round(rssMax / 1024)} MB)`,
    );
    // Bounded: per-session state is released; allow for allocator slack, not for growth per session.
    assert.ok(rssEnd - rssStart < 200 * 1024, `proxy RSS grew by ${Math.round((rssEnd - rssStart) / 1024)} MB`);
  });

  test('the start-up phase: mutated startup packets and SASL messages end in an answer or a close', async (t) => {
    const startupCase = fc.record({
      params: fc.dictionary(fc.constantFrom('user', 'database', 'options', 'replication', 'application_name', 'client_encoding', '_pq_.x', 'role'), fc.constantFrom('reporting-svc', 'app', '-c rolegate.role=app_reader', '-c role=x', 'database', 'SJIS', ''), { maxKeys: 5 }),
      code: fc.constantFrom(196608, 196610, 80877103, 80877104, 80877102, 131072),
      sasl: fc.array(fc.uint8Array({ maxLength: 60 }), { maxLength: 3 }),
      mutations: fc.array(mutationArbitrary([10000, 10001, 8]), { maxLength: 3 }),
      cuts: fc.array(fc.nat(), { maxLength: 6 }),
    });
    // Most of these wait for the startup timeout: run many lanes at once.
    await Promise.all(Array.from({ length: LANES * 4 }, (_, lane) => fc.assert(
      fc.asyncProperty(startupCase, async (c) => {
        stats.startupRuns++;
        const bytes = mutate(Buffer.concat([startupPacket(c.params, c.code), ...c.sasl.map((b) => message('p', Buffer.from(b)))]), c.mutations);
        const client = await RawClient.connect(proxy.port);
        try {
          for (const chunk of splitAt(bytes, c.cuts)) client.write(chunk);
          // The startup timeout bounds everything here.
          const deadline = Date.now() + STARTUP_TIMEOUT_MS + CLOSE_MS;
          while (!client.closed && Date.now() < deadline) {
            const m = await client.read(deadline - Date.now()).catch(() => null);
            if (m === null) break;
          }
          if (!client.closed) {
            client.end();
            assert.ok(await client.waitClosed(CLOSE_MS), 'a start-up session was neither answered nor closed');
          }
        } finally {
          client.socket.destroy();
        }
      }),
      { numRuns: Math.max(10, Math.floor(budget.numRuns / 80)), interruptAfterTimeLimit: Math.max(STARTUP_TIMEOUT_MS + CLOSE_MS, budget.timeLimitMs / 2), ...(budget.seed === undefined ? {} : { seed: budget.seed + 100 + lane }) },
    )));
    t.diagnostic(`fuzz start-up: ${stats.startupRuns} connections`);
    await assertProxyHealthy();
  });

  test('a real login still works with the demo password (the fuzzing used the real credentials)', async () => {
    const c = await RawClient.connect(proxy.port);
    await c.login('reporting-svc', DEMO_USERS['reporting-svc']);
    c.end();
  });

  test('no upstream session is left behind', async () => {
    const deadline = Date.now() + 15_000;
    let now = await upstreamSessions();
    while (now > baselineUpstream && Date.now() < deadline) {
      await sleep(200);
      now = await upstreamSessions();
    }
    assert.ok(now <= baselineUpstream, `upstream sessions ${now}, baseline ${baselineUpstream}`);
  });
});
