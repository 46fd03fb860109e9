// A scripted workload for the policy authors' toolkit tests (replay, and
// shadow mode over the same workload): several services of the demo, allowed
// and denied statements, simple and extended protocol — and a draft policy
// that changes exactly two rules, with the workload knowing which of its
// records each change flips.
//
// The workload knows each of its statements' records without reading the
// audit log: a session's records are numbered from 1 (the connect) in the
// order the session makes them (one per statement of a simple Query, one per
// Execute, one per denied Query or Parse); the session is found by the client
// port the connect record names.

import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { clientConfig, type DemoUser } from './fixture.ts';

/** The two rules the draft adds (each a denial in package rolegate.commands). */
export const DRAFT_RULES = {
  reportingCustomers: 'draft-reporting-no-customers',
  migratorCreateTable: 'draft-migrator-no-create-table',
} as const;

const DRAFT_REGO = `# A draft made by test/helpers/replay-workload.ts: two rules the shipped
# policy does not have.
package rolegate.commands

# reporting-svc may no longer read customers.
denials contains {
	"priority": 75,
	"rule": "${DRAFT_RULES.reportingCustomers}",
	"reason": "reporting-svc may not read customers (draft)",
} if {
	input.identity.name == "reporting-svc"
	some table in input.statement.tables
	table.name == "customers"
	"read" in table.access
}

# migrator may no longer create tables.
denials contains {
	"priority": 75,
	"rule": "${DRAFT_RULES.migratorCreateTable}",
	"reason": "migrator may not create tables (draft)",
} if {
	input.identity.name == "migrator"
	input.statement.command == "CREATE TABLE"
}
`;

/** A copy of the shipped policies/ plus draft.rego: exactly the two DRAFT_RULES added. */
export function makeDraftPolicy(): string {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'rolegate-draft-')), 'policies');
  cpSync(SHIPPED_POLICY_DIR, dir, { recursive: true });
  writeFileSync(path.join(dir, 'draft.rego'), DRAFT_REGO);
  return dir;
}

/** Which records of a step the draft decides differently (index among the step's records). */
export type DraftEffect = 'flips' | 'same';

/** One statement record the workload made, as it knows it. */
export interface WorkloadRecord {
  user: DemoUser;
  /** The client's local port: the connect record's client.port. */
  port: number;
  seq: number;
  sql: string;
  protocol: 'simple' | 'extended';
  /** What the proxy did (an error with SQLSTATE 42501 is a denial). */
  allowed: boolean;
  /** Under the draft: an allowed record of a statement the draft denies flips. */
  draft: DraftEffect;
}

export interface WorkloadRun {
  records: WorkloadRecord[];
  /** Client ports of sessions the proxy refused at connect. */
  deniedConnects: Array<{ user: DemoUser; database: string }>;
  /** Allowed records the draft denies: exactly the flips replay (and shadow mode) must report. */
  expectedFlips(): WorkloadRecord[];
}

interface Step {
  sql: string;
  values?: unknown[];
  /** Named prepared statement (node-postgres: Parse once, then Bind/Execute). */
  name?: string;
  /** Extended protocol without parameters. */
  extended?: boolean;
  /** Records the step makes (a simple Query: one per statement). */
  records?: number;
  /** Per record: whether the draft's rules deny it. */
  draft: DraftEffect | DraftEffect[];
}

interface SessionScript {
  user: DemoUser;
  options?: string;
  steps: Step[];
}

function script(suffix: string): SessionScript[] {
  const t = `replay_e2e_${suffix}`;
  return [
    {
      user: 'reporting-svc',
      steps: [
        { sql: 'SELECT count(*) FROM orders', draft: 'same' },
        { sql: 'SELECT count(*) FROM customers', draft: 'flips' },
        { sql: 'DELETE FROM orders WHERE id = -1', draft: 'same' },
        { sql: 'SELECT 1; SELECT name FROM customers WHERE id = 3', records: 2, draft: ['same', 'flips'] },
        { sql: 'SELECT o.total FROM orders o WHERE o.id = 1', draft: 'same' },
      ],
    },
    {
      user: 'reporting-svc',
      steps: [
        { sql: 'SELECT name FROM customers WHERE id = $1', values: [1], draft: 'flips' },
        { sql: 'SELECT total FROM orders WHERE id = $1', values: [2], draft: 'same' },
        { sql: 'SELECT email FROM customers WHERE id = $1', values: [1], name: 'customer_email', draft: 'flips' },
        { sql: 'SELECT email FROM customers WHERE id = $1', values: [2], name: 'customer_email', draft: 'flips' },
        { sql: 'DELETE FROM customers WHERE id = $1', values: [-1], draft: 'same' },
        { sql: 'SELECT count(*) FROM orders WHERE total > $1', values: [10], draft: 'same' },
      ],
    },
    {
      user: 'migrator',
      steps: [
        { sql: `CREATE TABLE ${t}_a (id int)`, draft: 'flips' },
        { sql: `INSERT INTO ${t}_a VALUES (1)`, draft: 'same' },
        { sql: `SELECT count(*) FROM customers`, draft: 'same' },
        { sql: `DROP TABLE ${t}_a`, draft: 'same' },
        { sql: `CREATE TABLE ${t}_b (id int)`, extended: true, draft: 'flips' },
        { sql: `DROP TABLE ${t}_b`, extended: true, draft: 'same' },
      ],
    },
    {
      user: 'orders-svc',
      options: '-c rolegate.role=app_writer',
      steps: [
        { sql: "INSERT INTO orders (customer, total) VALUES ($1, $2)", values: [`replay ${suffix}`, 1], draft: 'same' },
        { sql: 'SELECT count(*) FROM customers', draft: 'same' },
        { sql: 'DELETE FROM orders WHERE customer = $1', values: [`replay ${suffix}`], draft: 'same' },
      ],
    },
    {
      user: 'orders-svc',
      steps: [
        { sql: 'UPDATE orders SET total = total WHERE id = -1', draft: 'same' },
        { sql: 'SELECT id FROM orders WHERE id = $1', values: [1], draft: 'same' },
      ],
    },
  ];
}

function localPort(client: pg.Client): number {
  const stream = (client as unknown as { connection: { stream: { localPort?: number } } }).connection.stream;
  if (typeof stream.localPort !== 'number') throw new Error('no local port on the client socket');
  return stream.localPort;
}

/**
 * Runs the workload through the proxy on `port`, one statement at a time.
 * `suffix` keeps table names apart between runs on one cluster.
 */
export async function runWorkload(port: number, suffix = `${process.pid}_${Date.now().toString(36)}`): Promise<WorkloadRun> {
  const records: WorkloadRecord[] = [];
  // Every session stays open until the end: no two of them share a client port.
  const open: pg.Client[] = [];
  try {
    for (const session of script(suffix)) {
      const client = new pg.Client(clientConfig(port, session.user, session.options === undefined ? {} : { options: session.options }));
      await client.connect();
      open.push(client);
      const clientPort = localPort(client);
      let seq = 1; // the connect record
      for (const step of session.steps) {
        let allowed = true;
        try {
          if (step.values !== undefined || step.name !== undefined) await client.query({ text: step.sql, values: step.values ?? [], ...(step.name === undefined ? {} : { name: step.name }) });
          else if (step.extended === true) await client.query({ text: step.sql, queryMode: 'extended' } as unknown as string);
          else await client.query(step.sql);
        } catch (err) {
          if ((err as { code?: string }).code !== '42501') throw err;
          allowed = false;
        }
        const n = allowed ? (step.records ?? 1) : 1;
        const effects = Array.isArray(step.draft) ? step.draft : [step.draft];
        for (let i = 0; i < n; i++) {
          // A denied multi-statement Query is one record: it flips only if the statement that denied it would be allowed, which no step here does.
          records.push({ user: session.user, port: clientPort, seq: ++seq, sql: step.sql, protocol: step.values !== undefined || step.name !== undefined || step.extended === true ? 'extended' : 'simple', allowed, draft: effects[i] ?? effects[0] ?? 'same' });
        }
      }
    }
  } finally {
    await Promise.all(open.map((c) => c.end()));
  }
  // A connect the policy refuses (reporting-svc may not use database postgres).
  const deniedConnects: WorkloadRun['deniedConnects'] = [];
  const refused = new pg.Client(clientConfig(port, 'reporting-svc', { database: 'postgres' }));
  try {
    await refused.connect();
    await refused.end();
    throw new Error('reporting-svc was allowed to connect to database postgres');
  } catch (err) {
    if ((err as Error).message.includes('was allowed')) throw err;
    deniedConnects.push({ user: 'reporting-svc', database: 'postgres' });
  }
  return {
    records,
    deniedConnects,
    expectedFlips: () => records.filter((r) => r.allowed && r.draft === 'flips'),
  };
}

/** The audit records' sessions by client port (from their connect records). */
export function sessionsByPort(auditLines: ReadonlyArray<{ audit: string; session: string; client: { port: number } }>): Map<number, string> {
  const out = new Map<number, string>();
  for (const r of auditLines) if (r.audit === 'connect') out.set(r.client.port, r.session);
  return out;
}

/** `${session}#${seq}` of each expected flip. */
export function flipKeys(run: WorkloadRun, sessions: ReadonlyMap<number, string>): string[] {
  return run
    .expectedFlips()
    .map((r) => {
      const session = sessions.get(r.port);
      if (session === undefined) throw new Error(`no connect record for client port ${r.port}`);
      return `${session}#${r.seq}`;
    })
    .sort();
}
