// Synthetic audit logs for replay tests and bench/replay.ts: OLTP sessions
// (pgbench's TPC-B and select-only, with fresh literals in every statement),
// decided by the real PolicyAuthorizer and written by the real record builder
// and formatter, as a proxy with audit.input would write them. Each line comes
// with what the generator knows about it (identity, statement, decision), so
// a test can say which records a draft flips without replaying anything.

import { StatementInputParts, connectRecordInput, timeJson } from '../../src/audit/record-input.ts';
import { formatRecord, newRecord, prepareRecord, tableName, type AuditRecord } from '../../src/audit/record.ts';
import { SessionSqlState } from '../../src/decision/authorizer.ts';
import { TimeSource } from '../../src/decision/clock.ts';
import { connectInput, sessionContext } from '../../src/decision/inputs.ts';
import { PolicyAuthorizer } from '../../src/decision/policy-authorizer.ts';
import type { PolicyEngine } from '../../src/policy/engine.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';

export interface SyntheticRecord {
  line: string;
  audit: 'connect' | 'statement';
  session: string;
  seq: number;
  identity: string;
  role: string;
  sql: string;
  command: string | null;
  tables: string[];
  protocol: 'simple' | 'extended' | null;
  decision: 'allow' | 'deny';
  rule: string | null;
}

export interface SyntheticLogOptions {
  /** Statement records to make (connect records come on top: one per session). */
  statements: number;
  engine: PolicyEngine;
  /** Whether the policy reads statement.sql (decisions keyed by text). */
  keyByText?: boolean;
  input: 'off' | 'facts' | 'full';
  /** First record's instant; records are 1 ms apart. */
  startMs?: number;
  /** Statements per session before it ends (default 200). */
  sessionLength?: number;
  seed?: number;
}

/** A small deterministic PRNG (mulberry32): the same log for the same seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Identity {
  name: string;
  /** Inside the service's CIDRs in the shipped data.json. */
  addr: string;
  requestedRole: string | null;
  role: string;
  /** TPC-B (writes in transactions) or select-only (reads); a reader also tries a write now and then (denied). */
  work: 'tpcb' | 'select' | 'reader-with-denials';
  protocol: 'simple' | 'extended';
}

const IDENTITIES: Identity[] = [
  { name: 'orders-svc', addr: '10.1.0.7', requestedRole: 'app_writer', role: 'app_writer', work: 'tpcb', protocol: 'simple' },
  { name: 'orders-svc', addr: '10.1.0.8', requestedRole: 'app_writer', role: 'app_writer', work: 'tpcb', protocol: 'extended' },
  { name: 'reporting-svc', addr: '10.20.0.9', requestedRole: null, role: 'app_reader', work: 'select', protocol: 'simple' },
  { name: 'reporting-svc', addr: '10.20.0.9', requestedRole: null, role: 'app_reader', work: 'select', protocol: 'extended' },
  { name: 'reporting-svc', addr: '10.20.0.10', requestedRole: null, role: 'app_reader', work: 'reader-with-denials', protocol: 'simple' },
  { name: 'migrator', addr: '10.5.0.3', requestedRole: null, role: 'app_admin', work: 'select', protocol: 'simple' },
];

/** One transaction's statements: [text, parameter-free text for simple]. */
function transaction(work: Identity['work'], protocol: Identity['protocol'], rnd: () => number): string[] {
  const aid = 1 + Math.floor(rnd() * 1_000_000);
  const tid = 1 + Math.floor(rnd() * 100);
  const bid = 1 + Math.floor(rnd() * 10);
  const delta = Math.floor(rnd() * 10_000) - 5000;
  const ext = protocol === 'extended';
  switch (work) {
    case 'select':
      return [ext ? 'SELECT abalance FROM pgbench_accounts WHERE aid = $1' : `SELECT abalance FROM pgbench_accounts WHERE aid = ${aid}`];
    case 'reader-with-denials':
      return rnd() < 0.1 ? [`UPDATE pgbench_accounts SET abalance = abalance + ${delta} WHERE aid = ${aid}`] : [`SELECT abalance FROM pgbench_accounts WHERE aid = ${aid}`];
    case 'tpcb':
      return ext
        ? [
            'BEGIN',
            'UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2',
            'SELECT abalance FROM pgbench_accounts WHERE aid = $1',
            'UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2',
            'UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2',
            'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)',
            'END',
          ]
        : [
            'BEGIN',
            `UPDATE pgbench_accounts SET abalance = abalance + ${delta} WHERE aid = ${aid}`,
            `SELECT abalance FROM pgbench_accounts WHERE aid = ${aid}`,
            `UPDATE pgbench_tellers SET tbalance = tbalance + ${delta} WHERE tid = ${tid}`,
            `UPDATE pgbench_branches SET bbalance = bbalance + ${delta} WHERE bid = ${bid}`,
            `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (${tid}, ${bid}, ${aid}, ${delta}, CURRENT_TIMESTAMP)`,
            'END',
          ];
    default: {
      const unreachable: never = work;
      return unreachable;
    }
  }
}

/** The log, one entry per line, in the order a proxy with one worker would write it. */
export function syntheticAuditLog(options: SyntheticLogOptions): SyntheticRecord[] {
  const rnd = prng(options.seed ?? 1);
  const clock = { ms: options.startMs ?? Date.parse('2026-11-25T10:00:00Z') };
  const time = new TimeSource('UTC', { nowMs: () => clock.ms });
  const authorizer = new PolicyAuthorizer({ engine: options.engine, facts: new FactsCache(10_000), time, bucketMs: 60_000, decisionCacheEntries: 100_000, keyByText: options.keyByText ?? false });
  const proxy = { env: 'prod', instance: 'rolegate-bench' };
  const mode = options.input === 'off' ? null : options.input;
  const sessionLength = options.sessionLength ?? 200;
  const out: SyntheticRecord[] = [];
  let statements = 0;
  let sessionNo = 0;
  while (statements < options.statements) {
    const who = IDENTITIES[sessionNo % IDENTITIES.length] as Identity;
    const session = `5eed0000-${(++sessionNo).toString(36)}`;
    const client = { addr: who.addr, port: 40_000 + (sessionNo % 20_000), tls: false };
    const connect = connectInput({ name: who.name, method: 'scram-sha-256', claims: {}, cert: null }, client, { database: 'app', role: who.requestedRole, application_name: 'pgbench' }, time.now(), proxy);
    const decision = authorizer.connect(connect);
    let seq = 1;
    const identity = { name: who.name, method: 'scram-sha-256' };
    const recordClient = { addr: client.addr, port: client.port };
    const push = (r: AuditRecord, meta: Omit<SyntheticRecord, 'line' | 'session' | 'seq' | 'identity' | 'role' | 'audit' | 'decision' | 'rule'>): void => {
      out.push({ line: formatRecord(prepareRecord(r, { maxSqlBytes: 4096, maxListBytes: 1 << 20 })), audit: r.audit, session, seq: r.seq, identity: who.name, role: r.role ?? '', decision: r.decision, rule: r.rule, ...meta });
      clock.ms++;
    };
    push(newRecord('connect', clock.ms, seq, session, 0, identity, recordClient, 'app', decision.role, decision.allow ? 'allow' : 'deny', decision.rule, decision.reason, authorizer.revision, 40, undefined, undefined, undefined, undefined, undefined, undefined, mode === null ? undefined : connectRecordInput(mode, connect)), { sql: '', command: null, tables: [], protocol: null });
    if (!decision.allow || decision.role === null) continue;
    const ctx = sessionContext(connect, decision.role, 'app');
    const parts = mode === null ? null : new StatementInputParts(mode, ctx, 4096);
    const state = new SessionSqlState();
    let inTransaction = false;
    for (let n = 0; n < sessionLength && statements < options.statements; ) {
      for (const sql of transaction(who.work, who.protocol, rnd)) {
        const result = authorizer.statements({ session: ctx, state, sql, protocol: who.protocol, inTransaction });
        const parsed = result.parsed?.[0];
        const facts = parsed?.facts ?? null;
        const d = result.decisions[0] ?? null;
        const tables = facts === null ? [] : facts.tables.map(tableName);
        const input = parts === null || facts === null || d === null ? undefined : parts.build(facts, who.protocol, inTransaction, timeJson(time.now()));
        const record = newRecord('statement', clock.ms, ++seq, session, 0, identity, recordClient, 'app', decision.role, result.allow ? 'allow' : 'deny', d?.rule ?? (result.allow ? null : result.rule), d?.reason ?? (result.allow ? null : result.reason), authorizer.revision, 20, who.protocol, who.protocol === 'extended' ? '' : undefined, facts?.sql ?? sql, facts?.command ?? null, tables, undefined, input);
        record.outcome = result.allow ? 'complete' : 'not-run';
        push(record, { sql: facts?.sql ?? sql, command: facts?.command ?? null, tables, protocol: who.protocol });
        statements++;
        n++;
        if (result.allow && (facts?.command === 'BEGIN' || facts?.command === 'START TRANSACTION')) inTransaction = true;
        if (result.allow && (facts?.command === 'COMMIT' || facts?.command === 'ROLLBACK')) inTransaction = false;
        if (statements >= options.statements) break;
      }
    }
  }
  return out;
}
