// Micro-benchmark of the facts step of a statement's path (docs/QUERY_LIFECYCLE.md,
// "One query", step 3): SQL text → facts.
//   node bench/micro-parse.ts [--runs N]
// For each statement: libpg-query parseSync alone (WASM parse + JSON.parse of the
// tree), the facts walk alone over an already-parsed tree, parseStatements (parse +
// walk + statement slicing, no cache: the cold path), a FactsCache hit, and a shape
// hit: another text differing only in its literals (what the simple protocol sends
// for every new value), answered from the first one's facts (src/sql/shape.ts);
// the figure includes making the new text. – where the text has no literal.
// Each figure is the median over N timed batches (~5 ms each, all cases interleaved
// run by run), after a warm-up of every path; µs per statement.

import { parseSync } from 'libpg-query';
import { FactsCache } from '../src/sql/facts-cache.ts';
import { statementFacts } from '../src/sql/facts.ts';
import { initParser, parseStatements } from '../src/sql/parser.ts';
import { sqlShape } from '../src/sql/shape.ts';
import { fmtUs, measureCases, printTable } from './lib/micro.ts';
import { numberArg } from './lib/args.ts';
import { STATEMENTS } from './lib/statements.ts';

await initParser();
const runs = numberArg('--runs', 41);
const KINDS = ['parseSync', 'walk', 'cold', 'hit', 'shape'] as const;
const cases = new Map<string, () => unknown>();
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
    shape: () => undefined,
  };
  const shape = sqlShape(sql);
  if (shape !== null) {
    let n = 0;
    const parts = shape.key.split(/\0[is]/);
    const kinds = [...shape.key.matchAll(/\0([is])/g)].map((m) => m[1]);
    fns.shape = () => {
      n = (n + 1) % 1_000_000;
      let text = parts[0] as string;
      for (let i = 0; i < kinds.length; i++) text += (kinds[i] === 'i' ? String(n + i) : `'v${n}'`) + (parts[i + 1] as string);
      return cache.get(text);
    };
  }
  for (const kind of KINDS) if (kind !== 'shape' || shape !== null) cases.set(`${label}/${kind}`, fns[kind]);
}
// Warm-up (JIT tiers, WASM memory growth), calibration and interleaved timed runs: lib/micro.ts.
const results = measureCases(cases, runs);

const rows: string[][] = [['statement', 'bytes', 'parseSync µs', 'walk µs', 'cold µs', 'cache hit µs', 'shape hit µs']];
for (const [label, sql] of STATEMENTS) {
  const figure = (kind: (typeof KINDS)[number]): string => {
    const us = results.get(`${label}/${kind}`);
    return us === undefined ? '–' : fmtUs(us);
  };
  rows.push([label, String(Buffer.byteLength(sql)), figure('parseSync'), figure('walk'), figure('cold'), figure('hit'), figure('shape')]);
}
printTable(rows);
console.log(`median of ${runs} runs per figure, Node ${process.version}; cold = parseStatements (no cache)`);
