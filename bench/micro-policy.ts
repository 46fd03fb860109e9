// Micro-benchmark: the statement entry point of the shipped policy, evaluated
// through PolicyEngine with no decision cache in front ("cold" decisions: every
// call is a full wasm evaluation). Five OLTP-like statements; median and p99 µs
// per call, plus the very first call on a fresh instance, plus what the
// ArrayBuffer input saves over handing opa-wasm a plain object.
//
//   node bench/micro-policy.ts [--iterations 20000] [--json out.json]

import { writeFile } from 'node:fs/promises';
import { loadPolicy } from '@open-policy-agent/opa-wasm';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../src/policy/build.ts';
import type { StatementInput } from '../src/policy/contract.ts';
import type { StatementFacts } from '../src/sql/statement-facts.ts';
import { compilePolicy, PolicyEngine } from '../src/policy/engine.ts';
import { ensureOpa } from '../src/policy/opa-cli.ts';
import { stringArg } from './lib/args.ts';

const iterations = Number(stringArg('--iterations') ?? 20_000);
const jsonOut = stringArg('--json');

const noFlags: StatementFacts['flags'] = { data_modifying_cte: false, into: false, locking: false, copy_program: false, copy_file: false };

function input(role: string, command: string, sql: string, facts: Partial<StatementFacts>, inTransaction = false): StatementInput {
  return {
    identity: { name: 'orders-svc', method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '10.1.2.3', port: 51544, tls: true },
    time: { unix_ns: 1_795_820_100_000_000_000, rfc3339: '2026-11-27T22:55:00Z', weekday: 'Friday', hour: 22, minute: 55, tz: 'UTC' },
    proxy: { env: 'prod', instance: 'bench' },
    session: { role, database: 'app', in_transaction: inTransaction },
    statement: { sql, command, protocol: 'extended', tables: [], functions: [], columns: [], flags: noFlags, parameter: null, ...facts },
  };
}

const cases: Array<{ name: string; input: StatementInput }> = [
  {
    name: 'select-by-pk (reader)',
    input: input('app_reader', 'SELECT', 'SELECT id, status, total FROM orders WHERE id = $1', {
      tables: [{ schema: null, name: 'orders', access: ['read'] }],
      columns: [
        { table: 'orders', name: 'id', access: 'read' },
        { table: 'orders', name: 'status', access: 'read' },
        { table: 'orders', name: 'total', access: 'read' },
      ],
    }),
  },
  {
    name: 'select-join (reader)',
    input: input('app_reader', 'SELECT', 'SELECT o.id, c.name, now() FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1', {
      tables: [
        { schema: null, name: 'orders', access: ['read'] },
        { schema: null, name: 'customers', access: ['read'] },
      ],
      functions: [{ schema: null, name: 'now' }],
      columns: [
        { table: 'o', name: 'id', access: 'read' },
        { table: 'c', name: 'name', access: 'read' },
        { table: 'c', name: 'id', access: 'read' },
        { table: 'o', name: 'customer_id', access: 'read' },
      ],
    }),
  },
  {
    name: 'insert (writer)',
    input: input('app_writer', 'INSERT', 'INSERT INTO order_lines (order_id, sku, qty) VALUES ($1, $2, $3)', {
      tables: [{ schema: null, name: 'order_lines', access: ['write'] }],
      columns: [
        { table: 'order_lines', name: 'order_id', access: 'write' },
        { table: 'order_lines', name: 'sku', access: 'write' },
        { table: 'order_lines', name: 'qty', access: 'write' },
      ],
    }, true),
  },
  {
    name: 'update (writer)',
    input: input('app_writer', 'UPDATE', 'UPDATE orders SET status = $2 WHERE id = $1', {
      tables: [{ schema: null, name: 'orders', access: ['read', 'write'] }],
      columns: [
        { table: 'orders', name: 'status', access: 'write' },
        { table: 'orders', name: 'id', access: 'read' },
      ],
    }, true),
  },
  { name: 'begin (writer)', input: input('app_writer', 'BEGIN', 'BEGIN', {}) },
];

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

/** Times `fn` call by call; returns [median, p99] in µs. */
function measure(fn: () => unknown): [number, number] {
  for (let i = 0; i < 2_000; i++) fn();
  const samples = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const start = process.hrtime.bigint();
    fn();
    samples[i] = Number(process.hrtime.bigint() - start) / 1_000;
  }
  samples.sort();
  return [percentile(samples, 0.5), percentile(samples, 0.99)];
}

const opaPath = await ensureOpa();
const built = await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath });
const artifact = await compilePolicy(built);

const rows: Array<Record<string, string | number | boolean>> = [];
for (const { name, input: statement } of cases) {
  // The first evaluation of a freshly instantiated engine (what a worker pays once).
  const fresh = await PolicyEngine.create(artifact);
  const firstStart = process.hrtime.bigint();
  const decision = fresh.statement(statement);
  const firstUs = Number(process.hrtime.bigint() - firstStart) / 1_000;
  const [medianUs, p99Us] = measure(() => fresh.statement(statement));
  rows.push({ case: name, allow: decision.allow, rule: decision.rule, firstCallUs: round(firstUs), medianUs: round(medianUs), p99Us: round(p99Us) });
}

// What PolicyEngine's ArrayBuffer input saves: raw opa-wasm, object vs ArrayBuffer.
const raw = await loadPolicy(artifact.module, { initial: 16, maximum: 1024 });
raw.setData(built.data as object);
const sample = cases[0]?.input;
const encoder = new TextEncoder();
const [objectUs] = measure(() => raw.evaluate(sample, 'rolegate/statement'));
const [bufferUs] = measure(() => raw.evaluate(encoder.encode(JSON.stringify(sample)).buffer, 'rolegate/statement'));

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

console.log(`rolegate micro-policy: statement entry point, revision ${built.revision}, ${iterations} iterations per case, node ${process.version}`);
console.table(rows);
console.log(`raw opa-wasm evaluate, select-by-pk: plain object ${round(objectUs)} µs, ArrayBuffer (incl. stringify+encode) ${round(bufferUs)} µs (median)`);

if (jsonOut !== undefined) {
  await writeFile(jsonOut, `${JSON.stringify({ revision: built.revision, iterations, node: process.version, rows, rawObjectUs: objectUs, rawBufferUs: bufferUs }, null, 2)}\n`);
}
