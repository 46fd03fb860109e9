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

function bigStatement(targetBytes: number): string {
  const columns: string[] = [];
  for (let i = 0; columns.join(', ').length < targetBytes * 0.55; i++) {
    columns.push(`CASE WHEN o.status_${i} = 'open' THEN coalesce(o.amount_${i}, 0) * 1.${i % 10} ELSE lower(c.note_${i}) END AS col_${i}`);
  }
  const predicates: string[] = [];
  for (let i = 0; predicates.join(' AND ').length < targetBytes * 0.3; i++) {
    predicates.push(`(o.region_${i} IN ('north', 'south', 'east') OR c.flag_${i} IS NOT NULL)`);
  }
  return (
    `WITH recent AS (SELECT customer_id, max(created_at) AS last_seen FROM app.orders GROUP BY customer_id)\n` +
    `SELECT ${columns.join(', ')}\n` +
    `FROM app.orders o JOIN app.customers c ON c.id = o.customer_id\n` +
    `LEFT JOIN recent r ON r.customer_id = c.id\n` +
    `WHERE ${predicates.join(' AND ')}\n` +
    `ORDER BY o.created_at DESC LIMIT 100`
  );
}

const STATEMENTS: ReadonlyArray<readonly [string, string]> = [
  ['pgbench select', 'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;'],
  ['pgbench update', 'UPDATE pgbench_accounts SET abalance = abalance + -4062 WHERE aid = 48213;'],
  [
    'pgbench insert',
    'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 48213, -4062, CURRENT_TIMESTAMP);',
  ],
  [
    '3-table join',
    'SELECT o.id, o.total, c.name, p.title FROM orders o JOIN customers c ON c.id = o.customer_id ' +
      'JOIN products p ON p.id = o.product_id WHERE o.created_at > now() - interval \'1 day\' AND c.region = $1 ' +
      'ORDER BY o.created_at DESC LIMIT 50',
  ],
  [
    'update returning',
    "UPDATE orders SET status = 'shipped', shipped_at = now() WHERE id = $1 AND status = 'paid' RETURNING id, status, shipped_at",
  ],
  ['~5 KB select', bigStatement(5 * 1024)],
];

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
