// A session's bookkeeping for audit and the statement metrics: its records
// (connect and statement, numbered by seq), the executions awaiting the
// server's answer (outcome, rows, query time), and the portals that name the
// statement an Execute runs. The relay core tells it what it forwarded and
// what came back; nothing here touches a socket or decides anything.
//
// With audit.input on, a record also carries its decision's policy input
// (record-input.ts): the facts, the transaction state and the time the
// decision was made with. A Query's statements are decided as the Query
// arrives, with the transaction state of the last ReadyForQuery; an
// Execute's statement was decided at its Parse (or re-checked at Bind), so
// that decision's time and transaction state are kept with the prepared
// statement (decided()) for its Executes' records.

import type { AuditRecorder } from '../audit/auditor.ts';
import { auditParameters, readBindParameters, type BoundParameter } from '../audit/parameters.ts';
import { newRecord, tableName, type AuditRecord, type RecordInput } from '../audit/record.ts';
import { connectRecordInput, StatementInputParts, timeJson, type RecordedInputMode } from '../audit/record-input.ts';
import { StatementTracker, type TrackedExecution } from '../audit/statement-tracker.ts';
import { shadowRecord, type ShadowDisagreement, type ShadowedResult } from '../decision/shadow.ts';
import { decidedFacts, type Authorizer, type PreparedRecord, type SessionContext, type StatementDenial, type StatementResult } from '../decision/authorizer.ts';
import type { TimeSource } from '../decision/clock.ts';
import type { WorkerMetrics } from '../metrics/worker-counters.ts';
import type { ConnectDecision, ConnectInput, IdentityInput } from '../policy/contract.ts';
import * as fe from '../protocol/frontend.ts';
import type { StatementFacts, TableFact } from '../sql/statement-facts.ts';

export interface StatementLogHost {
  readonly workerId: number;
  readonly audit: AuditRecorder;
  readonly metrics: WorkerMetrics;
  /** input.time of the decisions (audit.input records it). */
  readonly time: TimeSource;
  /** The current authorizer: records name its policy revision. */
  authorizer(): Authorizer;
}

/** The time and transaction state a prepared statement's decision was made with (audit.input). */
interface DecisionContext {
  time: string;
  inTransaction: boolean;
}

// input.time as JSON, kept for the millisecond it was made in: records of one millisecond share it.
let timeSourceOfLast: TimeSource | null = null;
let timeMsOfLast = Number.NaN;
let timeTextOfLast = '';

function currentTime(source: TimeSource): string {
  const ms = source.nowMs();
  if (ms !== timeMsOfLast || source !== timeSourceOfLast) {
    timeSourceOfLast = source;
    timeMsOfLast = ms;
    timeTextOfLast = timeJson(source.now());
  }
  return timeTextOfLast;
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
  /** The shadow candidate would have allowed it. */
  shadow?: ShadowDisagreement | undefined;
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
  /** audit.input, null when off: then nothing below is made. */
  private readonly inputMode: RecordedInputMode | null;
  /** What this session's statement inputs share (audit.input on, after begin()). */
  private inputParts: StatementInputParts | null = null;
  /** Decision contexts of this session's prepared statements (audit.input on). */
  private decisionContexts: WeakMap<PreparedRecord, DecisionContext> | null = null;
  /** As the last ReadyForQuery said: statements are decided with this (input.session.in_transaction). */
  private inTransaction = false;
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
    const mode = host.audit.enabled ? (host.audit.input ?? 'off') : 'off';
    this.inputMode = mode === 'off' ? null : mode;
  }

  get auditing(): boolean {
    return this.host.audit.enabled;
  }

  /** The connect decision: its record (seq 1); `input` is what the policy was asked (recorded with audit.input on). */
  connect(identity: IdentityInput, database: string, decision: ConnectDecision, revision: string, decisionUs: number, input?: ConnectInput, shadow: ShadowDisagreement | null = null): void {
    const audit = this.host.audit;
    if (!audit.enabled) return;
    const verdict = decision.allow && decision.role !== null ? 'allow' : 'deny';
    const recorded = this.inputMode === null || input === undefined ? undefined : connectRecordInput(this.inputMode, input);
    const record = newRecord('connect', Date.now(), ++this.seq, this.sessionId, this.host.workerId, this.identityOf(identity), this.client, database, decision.role, verdict, decision.rule, decision.reason, revision, decisionUs, undefined, undefined, undefined, undefined, undefined, undefined, recorded);
    if (shadow !== null) record.shadow = shadowRecord(shadow);
    audit.record(record);
  }

  /** The session is logged in: its statements' records name this identity, role and database. */
  begin(context: SessionContext): void {
    this.context = context;
    if (this.inputMode !== null) {
      this.inputParts = new StatementInputParts(this.inputMode, context, this.host.audit.maxSqlBytes ?? Number.MAX_SAFE_INTEGER);
      this.decisionContexts = new WeakMap();
    }
  }

  /**
   * A prepared statement was allowed at its Parse, or re-checked at Bind: its
   * Executes' records carry this decision's time and transaction state.
   */
  decided(rec: PreparedRecord): void {
    if (this.decisionContexts === null) return;
    this.decisionContexts.set(rec, { time: currentTime(this.host.time), inTransaction: this.inTransaction });
  }

  /** An allowed Query was forwarded: one tracked execution per statement (audit records, or just latency). */
  query(result: ShadowedResult, sql: string, group: number): void {
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
    // Every statement of one Query is decided at once, with one time and transaction state.
    const parts = this.inputParts;
    const time = parts === null ? '' : currentTime(this.host.time);
    for (let i = 0; i < parsed.length; i++) {
      const stmt = parsed[i];
      if (stmt === undefined) continue;
      const d = result.decisions[i] ?? null;
      const input = parts === null || d === null ? undefined : parts.build(stmt.facts, 'simple', this.inTransaction, time);
      const record = this.statementRecord('simple', null, stmt.facts.sql, stmt.facts, 'allow', d?.rule ?? null, d?.reason ?? null, result.decisionUs, undefined, input);
      // The candidate refused this statement of the Query (the ones before it it allowed).
      if (result.shadow !== undefined && result.shadow.index === i) record.shadow = shadowRecord(result.shadow);
      this.tracker.expect(record, group);
    }
  }

  /** A refused statement: its record (outcome not-run) and the status page's latest denials. */
  denied(protocol: 'simple' | 'extended', denied: DeniedStatement, verdict: StatementDenial, decisionUs: number): void {
    if (this.host.audit.enabled) {
      // Facts are there only when the policy decided (and so was asked).
      const parts = this.inputParts;
      const input = parts === null || denied.facts === null ? undefined : parts.build(denied.facts, protocol, this.inTransaction, currentTime(this.host.time));
      const record = this.statementRecord(protocol, denied.name, denied.sql, denied.facts, 'deny', verdict.rule, verdict.reason, decisionUs, undefined, input);
      if (denied.command !== undefined) record.command = denied.command;
      if (denied.shadow !== undefined) record.shadow = shadowRecord(denied.shadow);
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
    let input: RecordInput | undefined;
    const parts = this.inputParts;
    if (parts !== null && rec !== undefined && rec.facts !== null && rec.decision !== null) {
      const at = this.decisionContexts?.get(rec);
      input = parts.build(rec.facts, 'extended', at?.inTransaction ?? this.inTransaction, at?.time ?? currentTime(this.host.time));
    }
    const record = this.statementRecord('extended', statement, rec?.sql ?? '', rec?.facts ?? null, 'allow', rec?.decision?.rule ?? null, rec?.decision?.reason ?? null, rec?.decisionUs ?? 0, parameters, input);
    if (rec?.shadow !== undefined) record.shadow = shadowRecord(rec.shadow);
    this.tracker.expect(record, group);
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
    this.inTransaction = !idle;
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
    input: RecordInput | undefined = undefined,
  ): AuditRecord {
    const ctx = this.context;
    const identity = ctx === null ? { name: '', method: 'scram-sha-256' as const } : this.identityOf(ctx.identity);
    const tables = facts === null ? NO_TABLES : tableNames(facts.tables);
    const revision = this.host.authorizer().revision;
    return newRecord('statement', Date.now(), ++this.seq, this.sessionId, this.host.workerId, identity, this.client, ctx?.database ?? '', ctx?.role ?? null, decision, rule, reason, revision, decisionUs, protocol, statementName ?? undefined, sql, facts?.command ?? null, tables, parameters, input);
  }
}

/** The facts a refused statement's record names (null when rolegate refused it before asking the policy). */
export function deniedFacts(result: StatementResult): StatementFacts | null {
  return result.allow ? null : decidedFacts(result);
}
