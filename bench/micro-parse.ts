// Micro-benchmark of DESIGN §2 step 3: SQL text → facts.
//   node bench/micro-parse.ts [--runs N]
// For each statement: libpg-query parseSync alone (WASM parse + JSON.parse of the
// tree), the facts walk alone over an already-parsed tree, parseStatements (parse +
// walk + statement slicing, no cache: the cold path), and a FactsCache hit.
// Each figure is the median over N timed batches (~5 ms each, all cases interleaved
// run by run), after a warm-up of every path; µs per statement.

import { parseSync } from 'libpg-query';
import { FactsCache } from '../src/sql/facts-cache.ts';
import { statementFacts } from '../src/sql/facts.ts';
import { initParser, parseStatements } from '../src/sql/parser.ts';
import { STATEMENTS } from './lib/statements.ts';

function argRuns(): number {
  const i = process.argv.indexOf('--runs');
  const n = i === -1 ? NaN : Number(process.argv[i + 1]);
  return Number.isInteger(n) && n > 0 ? n : 41;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

let sink = 0; // keeps results observable so nothing is optimised away

interface Case {
  fn: () => unknown;
  batch: number;
  perCallUs: number[];
}

/** Calls per timed batch so that one batch takes ~5 ms. */
function calibrate(fn: () => unknown): number {
  for (let batch = 1; ; batch *= 2) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn();
    if (Number(process.hrtime.bigint() - t0) >= 5_000_000 || batch >= 1 << 20) return batch;
  }
}

function fmt(us: number): string {
  return us < 10 ? us.toFixed(2) : us.toFixed(1);
}

await initParser();
const runs = argRuns();
const KINDS = ['parseSync', 'walk', 'cold', 'hit'] as const;
const cases = new Map<string, Case>();
for (const [label, sql] of STATEMENTS) {
  const check = parseStatements(sql);
  if (!check.ok) throw new Error(`${label}: ${check.message}`);
  const tree = (parseSync(sql).stmts ?? []).map((raw) => raw.stmt as unknown as Record<string, unknown>);
  const cache = new FactsCache(1000);
  cache.get(sql);
  const fns: Record<(typeof KINDS)[number], () => unknown> = {
    parseSync: () => parseSync(sql),
    walk: () => tree.map((stmt) => statementFacts(stmt, sql)),
    cold: () => parseStatements(sql),
    hit: () => cache.get(sql),
  };
  for (const kind of KINDS) cases.set(`${label}/${kind}`, { fn: fns[kind], batch: 0, perCallUs: [] });
}
// Warm-up (JIT tiers, WASM memory growth), then calibrate every case.
for (let i = 0; i < 300; i++) for (const c of cases.values()) c.fn();
for (const c of cases.values()) c.batch = calibrate(c.fn);
// Timed runs interleave all cases, so drift and GC spread over every figure alike.
for (let r = 0; r < runs; r++) {
  for (const c of cases.values()) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < c.batch; i++) if (c.fn() !== undefined) sink++;
    c.perCallUs.push(Number(process.hrtime.bigint() - t0) / c.batch / 1000);
  }
}

const rows: string[][] = [['statement', 'bytes', 'parseSync µs', 'walk µs', 'cold µs', 'cache hit µs']];
for (const [label, sql] of STATEMENTS) {
  const figure = (kind: (typeof KINDS)[number]): string => fmt(median(cases.get(`${label}/${kind}`)?.perCallUs ?? []));
  rows.push([label, String(Buffer.byteLength(sql)), figure('parseSync'), figure('walk'), figure('cold'), figure('hit')]);
}
const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
for (const r of rows) console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  '));
console.log(`median of ${runs} runs per figure, Node ${process.version}; cold = parseStatements (no cache)`);
if (sink < 0) console.log(sink);
