// Micro-benchmark of one statement decision (facts, then decision: steps 3–4 of
// "One query" in docs/QUERY_LIFECYCLE.md), on the
// shipped policy really compiled by opa:
//   hit    — PolicyAuthorizer.statements() when both caches hit (the steady state)
//   parse  — parseStatements() cold: libpg-query parse + facts walk, no cache
//   eval   — PolicyEngine.statement() cold: one wasm evaluation of those facts
//   miss   — PolicyAuthorizer.statements() with both caches empty (parse + eval + bookkeeping)
// For five OLTP statements and one ~5 KB statement. Median µs per statement over
// --runs timed batches (~5 ms each, cases interleaved), after a warm-up.
//
//   node bench/micro-decision.ts [--runs 31] [--json out.json]

import { writeFileSync } from 'node:fs';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../src/policy/build.ts';
import type { StatementInput } from '../src/policy/contract.ts';
import { compilePolicy, PolicyEngine } from '../src/policy/engine.ts';
import { ensureOpa } from '../src/policy/opa-cli.ts';
import { SessionSqlState, type SessionContext } from '../src/decision/authorizer.ts';
import { TimeSource } from '../src/decision/clock.ts';
import { PolicyAuthorizer } from '../src/decision/policy-authorizer.ts';
import { FactsCache } from '../src/sql/facts-cache.ts';
import { initParser, parseStatements, type ParsedStatement } from '../src/sql/parser.ts';
import { numberArg, stringArg } from './lib/args.ts';
import { median } from './lib/micro.ts';
import { STATEMENTS } from './lib/statements.ts';

const runs = numberArg('--runs', 31);
const jsonOut = stringArg('--json');

/** µs per call of fn, over a batch sized to take about 5 ms. */
function timeBatch(fn: () => void, batch: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < batch; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1000 / batch;
}

function batchSize(fn: () => void): number {
  let n = 1;
  for (;;) {
    const us = timeBatch(fn, n) * n;
    if (us > 5000 || n >= 1 << 20) return n;
    n *= 2;
  }
}

await initParser();
const opaPath = await ensureOpa();
const artifact = await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath }));
const engine = await PolicyEngine.create(artifact);
const time = new TimeSource('UTC');
const session: SessionContext = {
  identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
  client: { addr: '127.0.0.1', port: 50000, tls: false },
  proxy: { env: 'prod', instance: 'bench' },
  role: 'app_writer',
  database: 'app',
  cacheKey: 'scram-sha-256\u0001orders-svc\u0001{}\u0001\u0001app_writer\u0001app\u0001127.0.0.1\u0001plain',
  keyMemo: { bucket: -1, keys: [] },
};

interface Row {
  name: string;
  bytes: number;
  hitUs: number;
  parseUs: number;
  evalUs: number;
  missUs: number;
  decision: string;
}

const warmAuthorizer = new PolicyAuthorizer({ engine, facts: new FactsCache(1000), time, bucketMs: 60_000, decisionCacheEntries: 1000, keyByText: false });
const cases = STATEMENTS.map(([name, sql]) => {
  const parsed = parseStatements(sql);
  if (!parsed.ok) throw new Error(`${name} does not parse: ${parsed.message}`);
  const stmt = parsed.statements[0] as ParsedStatement;
  const input: StatementInput = {
    identity: session.identity,
    client: session.client,
    time: time.now(),
    proxy: session.proxy,
    session: { role: session.role, database: session.database, in_transaction: false },
    statement: { ...stmt.facts, protocol: 'extended' },
  };
  const state = new SessionSqlState();
  const verdict = warmAuthorizer.statements({ session, state, sql, protocol: 'extended', inTransaction: false });
  return {
    name,
    sql,
    input,
    state,
    decision: verdict.allow ? 'allow' : `deny (${verdict.rule})`,
    hit: () => void warmAuthorizer.statements({ session, state, sql, protocol: 'extended', inTransaction: false }),
    parse: () => void parseStatements(sql),
    evaluate: () => void engine.statement(input),
    // A fresh authorizer and caches each call: the full cold path.
    miss: () => void new PolicyAuthorizer({ engine, facts: new FactsCache(10), time, bucketMs: 60_000, decisionCacheEntries: 10, keyByText: false }).statements({ session, state, sql, protocol: 'extended', inTransaction: false }),
  };
});

const kinds = ['hit', 'parse', 'evaluate', 'miss'] as const;
const sizes = new Map<string, number>();
for (const c of cases) for (const k of kinds) sizes.set(`${c.name}/${k}`, batchSize(c[k]));
const samples = new Map<string, number[]>();
for (let r = 0; r < runs; r++) {
  for (const c of cases) {
    for (const k of kinds) {
      const key = `${c.name}/${k}`;
      const list = samples.get(key) ?? [];
      list.push(timeBatch(c[k], sizes.get(key) ?? 1));
      samples.set(key, list);
    }
  }
}

const rows: Row[] = cases.map((c) => ({
  name: c.name,
  bytes: Buffer.byteLength(c.sql),
  hitUs: median(samples.get(`${c.name}/hit`) ?? []),
  parseUs: median(samples.get(`${c.name}/parse`) ?? []),
  evalUs: median(samples.get(`${c.name}/evaluate`) ?? []),
  missUs: median(samples.get(`${c.name}/miss`) ?? []),
  decision: c.decision,
}));

const pad = (s: string, n: number): string => s.padEnd(n);
const num = (v: number): string => (v < 1 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)).padStart(9);
console.log(`${pad('statement', 18)}${'bytes'.padStart(6)}${'hit µs'.padStart(9)}${'parse µs'.padStart(9)}${'eval µs'.padStart(9)}${'miss µs'.padStart(9)}  decision (as app_writer)`);
for (const r of rows) console.log(`${pad(r.name, 18)}${String(r.bytes).padStart(6)}${num(r.hitUs)}${num(r.parseUs)}${num(r.evalUs)}${num(r.missUs)}  ${r.decision}`);
console.log(`median of ${runs} runs per figure; Node ${process.version}; policy revision ${engine.revision}`);
if (jsonOut !== undefined) writeFileSync(jsonOut, JSON.stringify({ node: process.version, runs, revision: engine.revision, rows }, null, 2));
