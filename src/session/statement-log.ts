// A session's bookkeeping for audit and the statement metrics: its records
// (connect and statement, numbered by seq), the executions awaiting the
// server's answer (outcome, rows, query time), and the portals that name the
// statement an Execute runs. The relay core tells it what it forwarded and
// what came back; nothing here touches a socket or decides anything.

import type { AuditRecorder } from '../audit/auditor.ts';
import { auditParameters, readBindParameters, type BoundParameter } from '../audit/parameters.ts';
import { newRecord, tableName, type AuditRecord } from '../audit/record.ts';
import { StatementTracker, type TrackedExecution } from '../audit/statement-tracker.ts';
import { decidedFacts, type Authorizer, type PreparedRecord, type SessionContext, type StatementDenial, type StatementResult } from '../decision/authorizer.ts';
import type { WorkerMetrics } from '../metrics/worker-counters.ts';
import type { ConnectDecision, IdentityInput } from '../policy/contract.ts';
import * as fe from '../protocol/frontend.ts';
import type { StatementFacts, TableFact } from '../sql/statement-facts.ts';

export interface StatementLogHost {
  readonly workerId: number;
  readonly audit: AuditRecorder;
  readonly metrics: WorkerMetrics;
  /** The current authorizer: records name its policy revision. */
  authorizer(): Authorizer;
}

/**
 * A refused statement as its audit record names it: the client's statement
 * name (extended protocol), its text, and its facts — only when the policy
 * decided it (null when rolegate refused it before: invalid text, fail-closed
 * audit, an unknown statement name, a FunctionCall) — or a command word
 * standing in for them.
 */
export interface DeniedStatement {
  name: string | null;
  sql: string;
  facts: StatementFacts | null;
  command?: string;
}

/** A portal as audit needs it (statement null: none bound). */
interface BoundPortal {
  statement: string | null;
  params: BoundParameter[] | null;
  group: number;
}

/** What the tracker follows per execution: an audit record, or (audit off) just enough for the latency histogram. */
type Tracked = TrackedExecution & { protocol?: 'simple' | 'extended'; audit?: AuditRecord['audit'] };

const NO_TABLES: string[] = [];

/** Audit's "schema.name" list per facts' tables array (facts are cached and shared: each statement's list is built once). */
const TABLE_NAMES = new WeakMap<readonly TableFact[], string[]>();

function tableNames(tables: readonly TableFact[]): string[] {
  if (tables.length === 0) return NO_TABLES;
  let names = TABLE_NAMES.get(tables);
  if (names === undefined) {
    names = tables.map(tableName);
    TABLE_NAMES.set(tables, names);
  }
  return names;
}

export class StatementLog {
  private readonly host: StatementLogHost;
  private readonly sessionId: string;
  /** Pairs forwarded executions with the server's answers (outcome, rows, query time). */
  private readonly tracker: StatementTracker<Tracked>;
  /** Audit records this session made (each record's seq). */
  private seq = 0;
  /** Shared by this session's audit records (serialised, never mutated). */
  private identity: AuditRecord['identity'] | null = null;
  private readonly client: AuditRecord['client'];
  private context: SessionContext | null = null;
  /**
   * Portals bound through this session, kept only to name the statement (and
   * its bound parameters) in Execute's audit record: the unnamed portal — all
   * most clients use — in its own slot (no allocation per Bind), named ones in
   * a Map. `group` is the group number of the Bind: a portal ends with its
   * transaction, so the ReadyForQuery (idle) that closes that group or a later
   * one forgets it — not a Bind pipelined behind it.
   */
  private readonly unnamedPortal: BoundPortal = { statement: null, params: null, group: 0 };
  private portals: Map<string, BoundPortal> | null = null;

  constructor(host: StatementLogHost, sessionId: string, client: { addr: string; port: number }) {
    this.host = host;
    this.sessionId = sessionId;
    this.client = { addr: client.addr, port: client.port };
    this.tracker = new StatementTracker<Tracked>((r) => this.onExecutionDone(r));
  }

  get auditing(): boolean {
    return this.host.audit.enabled;
  }

  /** The connect decision: its record (seq 1). */
  connect(identity: IdentityInput, database: string, decision: ConnectDecision, revision: string, decisionUs: number): void {
    const audit = this.host.audit;
    if (!audit.enabled) return;
    const verdict = decision.allow && decision.role !== null ? 'allow' : 'deny';
    audit.record(newRecord('connect', Date.now(), ++this.seq, this.sessionId, this.host.workerId, this.identityOf(identity), this.client, database, decision.role, verdict, decision.rule, decision.reason, revision, decisionUs, undefined, undefined, undefined, undefined, undefined, undefined));
  }

  /** The session is logged in: its statements' records name this identity, role and database. */
  begin(context: SessionContext): void {
    this.context = context;
  }

  /** An allowed Query was forwarded: one tracked execution per statement (audit records, or just latency). */
  query(result: StatementResult, sql: string, group: number): void {
    const parsed = result.parsed;
    if (!this.host.audit.enabled) {
      const n = parsed === null ? 1 : Math.max(parsed.length, 1);
      for (let i = 0; i < n; i++) this.tracker.expect({ protocol: 'simple' }, group);
      return;
    }
    if (parsed === null || parsed.length === 0) {
      this.tracker.expect(this.statementRecord('simple', null, sql, null, 'allow', null, null, result.decisionUs), group);
      return;
    }
    for (let i = 0; i < parsed.length; i++) {
      const stmt = parsed[i];
      if (stmt === undefined) continue;
      const d = result.decisions[i] ?? null;
      this.tracker.expect(this.statementRecord('simple', null, stmt.facts.sql, stmt.facts, 'allow', d?.rule ?? null, d?.reason ?? null, result.decisionUs), group);
    }
  }

  /** A refused statement: its record (outcome not-run) and the status page's latest denials. */
  denied(protocol: 'simple' | 'extended', denied: DeniedStatement, verdict: StatementDenial, decisionUs: number): void {
    if (this.host.audit.enabled) {
      const record = this.statementRecord(protocol, denied.name, denied.sql, denied.facts, 'deny', verdict.rule, verdict.reason, decisionUs);
      if (denied.command !== undefined) record.command = denied.command;
      record.outcome = 'not-run';
      this.host.audit.record(record);
    }
    this.host.metrics.noteDenial({
      unix_ms: Date.now(),
      worker: this.host.workerId,
      session: this.sessionId,
      identity: this.context?.identity.name ?? '',
      client: this.client.addr,
      kind: 'statement',
      rule: verdict.rule,
      command: denied.command ?? denied.facts?.command ?? null,
    });
  }

  /** Bind ('B') forwarded: remember which statement (and values) the portal holds, for its Executes' records. */
  bind(portal: string, statement: string, buf: Buffer, start: number, end: number, group: number): void {
    if (!this.host.audit.enabled) return;
    const params = this.host.audit.parameters !== 'off' ? readBindParameters(buf, start, end) : null;
    if (portal === '') {
      const slot = this.unnamedPortal;
      slot.statement = statement;
      slot.params = params;
      slot.group = group;
    } else {
      const portals = (this.portals ??= new Map());
      if (portals.size >= 1000 && !portals.has(portal)) portals.clear();
      portals.set(portal, { statement, params, group });
    }
  }

  /** Execute ('E') forwarded: one tracked execution of the portal's statement (record with parameters, rows, time). */
  execute(buf: Buffer, start: number, end: number, group: number, statements: ReadonlyMap<string, PreparedRecord>): void {
    if (!this.host.audit.enabled) {
      this.tracker.expect({ protocol: 'extended' }, group);
      return;
    }
    // Execute = 'E', length, portal name (NUL-terminated), row limit: an empty name is the unnamed portal.
    let portal: BoundPortal | undefined;
    if (end - start === 10 && buf[start + 5] === 0) portal = this.unnamedPortal;
    else {
      const e = fe.decodeExecute(buf, start, end);
      portal = e === null ? undefined : e.portal === '' ? this.unnamedPortal : this.portals?.get(e.portal);
    }
    const statement = portal?.statement ?? null;
    const rec = statement === null ? undefined : statements.get(statement);
    const audit = this.host.audit;
    const parameters = auditParameters(portal?.params ?? null, audit.parameters, audit.maxParameterBytes);
    this.tracker.expect(this.statementRecord('extended', statement, rec?.sql ?? '', rec?.facts ?? null, 'allow', rec?.decision?.rule ?? null, rec?.decision?.reason ?? null, rec?.decisionUs ?? 0, parameters), group);
  }

  /** Close ('C') of a portal. */
  closePortal(name: string): void {
    if (name === '') this.forgetUnnamedPortal();
    else this.portals?.delete(name);
  }

  // ------------------------------------------------------ the server's answers

  commandComplete(rows: number | null): void {
    this.tracker.onCommandComplete(rows);
  }

  emptyQuery(): void {
    this.tracker.onEmptyQuery();
  }

  portalSuspended(): void {
    this.tracker.onPortalSuspended();
  }

  error(sqlstate: string): void {
    this.tracker.onError(sqlstate);
  }

  /** ReadyForQuery closing group `group`; `idle`: no transaction is open, so no portal bound up to it is left. */
  readyForQuery(idle: boolean, group: number): void {
    this.tracker.onReadyForQuery();
    if (!idle) return;
    if (this.unnamedPortal.group <= group) this.forgetUnnamedPortal();
    if (this.portals !== null && this.portals.size > 0) {
      for (const [name, p] of this.portals) if (p.group <= group) this.portals.delete(name);
    }
  }

  /** The session ended: executions still awaiting an answer are recorded as such. */
  end(): void {
    this.tracker.close();
  }

  // ------------------------------------------------------------------ records

  private forgetUnnamedPortal(): void {
    this.unnamedPortal.statement = null;
    this.unnamedPortal.params = null;
  }

  private onExecutionDone(r: Tracked): void {
    if (r.query_us !== undefined) this.host.metrics.observeQuery(r.protocol ?? 'simple', r.query_us / 1e6);
    if (r.audit !== undefined) this.host.audit.record(r as AuditRecord);
  }

  /** The identity as this session's records share it (one object while the name holds). */
  private identityOf(identity: IdentityInput): AuditRecord['identity'] {
    if (this.identity?.name !== identity.name) this.identity = { name: identity.name, method: identity.method };
    return this.identity;
  }

  private statementRecord(
    protocol: 'simple' | 'extended',
    statementName: string | null,
    sql: string,
    facts: StatementFacts | null,
    decision: 'allow' | 'deny',
    rule: string | null,
    reason: string | null,
    decisionUs: number,
    parameters: AuditRecord['parameters'] = undefined,
  ): AuditRecord {
    const ctx = this.context;
    const identity = ctx === null ? { name: '', method: 'scram-sha-256' as const } : this.identityOf(ctx.identity);
    const tables = facts === null ? NO_TABLES : tableNames(facts.tables);
    const revision = this.host.authorizer().revision;
    return newRecord('statement', Date.now(), ++this.seq, this.sessionId, this.host.workerId, identity, this.client, ctx?.database ?? '', ctx?.role ?? null, decision, rule, reason, revision, decisionUs, protocol, statementName ?? undefined, sql, facts?.command ?? null, tables, parameters);
  }
}

/** The facts a refused statement's record names (null when rolegate refused it before asking the policy). */
export function deniedFacts(result: StatementResult): StatementFacts | null {
  return result.allow ? null : decidedFacts(result);
}
