// Statement and connect decisions from the Rego policy, on facts from
// PostgreSQL's own parser, with two caches:
//   facts:     exact SQL text (or its literal-free shape) → parsed statements (FactsCache, per worker)
//   decisions: session key + time bucket + transaction state + protocol + SQL
//              text → decision (this file), bounded, FIFO-evicted.
// The SQL text stands in for its facts in the key: facts are a pure function
// of the text. The policy revision is not in the key: a reload builds a new
// PolicyAuthorizer with an empty decision cache (the facts cache is shared).

import type { ConnectDecision, ConnectInput, StatementDecision } from '../policy/contract.ts';
import type { StatementFacts } from '../sql/statement-facts.ts';
import type { PolicyEngine } from '../policy/engine.ts';
import { DEFAULT_MAX_CACHED_SQL_CHARS, factsTemplate, type FactsCache } from '../sql/facts-cache.ts';
import type { ParsedStatement, ParsedText } from '../sql/parser.ts';
import { SessionSqlState, type Authorizer, type PreparedRecord, type SessionContext, type StatementProtocol, type StatementRequest, type StatementResult, type StatementVerdict } from './authorizer.ts';
import { ALLOW, MAX_CANDIDATES, notePrepared } from './authorizer.ts';
import { parseErrorDenial, policyMessage, proxyDenial } from './proxy-rules.ts';
import type { TimeSource } from './clock.ts';
import { guardDecision, Guards } from './guards.ts';
import { statementInput } from './inputs.ts';

export interface PolicyAuthorizerOptions {
  engine: PolicyEngine;
  facts: FactsCache;
  time: TimeSource;
  bucketMs: number;
  decisionCacheEntries: number;
  /**
   * Key cached decisions by the statement text (the policy may read
   * statement.sql); false: by the facts without the text, so `WHERE id = 1`
   * and `WHERE id = 2` share a decision.
   */
  keyByText: boolean;
  /** rolegate's own guard rails, checked before the policy (default: none lifted). */
  guards?: Guards;
}

export class PolicyAuthorizer implements Authorizer {
  readonly revision: string;
  readonly enforcesStatements = true;
  private readonly engine: PolicyEngine;
  private readonly facts: FactsCache;
  private readonly time: TimeSource;
  private readonly bucketMs: number;
  private readonly maxDecisions: number;
  private readonly decisions = new Map<StatementFacts | string, Map<string, StatementDecision>>();
  private readonly keyByText: boolean;
  private readonly guards: Guards;
  /** Facts → canonical key without the text (computed once per facts object). */
  private readonly factsKeys = new WeakMap<StatementFacts, string>();
  /** Decisions held (all contexts of all statements), bounded by maxDecisions. */
  private size = 0;
  hits = 0;
  misses = 0;

  get parseCacheHits(): number {
    return this.facts.hits;
  }
  get parseCacheMisses(): number {
    return this.facts.misses;
  }
  get decisionCacheHits(): number {
    return this.hits;
  }
  get decisionCacheMisses(): number {
    return this.misses;
  }

  constructor(options: PolicyAuthorizerOptions) {
    this.engine = options.engine;
    this.revision = options.engine.revision;
    this.facts = options.facts;
    this.time = options.time;
    this.bucketMs = options.bucketMs;
    this.maxDecisions = options.decisionCacheEntries;
    this.keyByText = options.keyByText;
    this.guards = options.guards ?? new Guards();
  }

  connect(input: ConnectInput): ConnectDecision {
    return this.engine.connect(input);
  }

  statements(request: StatementRequest): StatementResult {
    const t0 = performance.now();
    const { session, state, protocol, inTransaction } = request;
    const bucket = Math.floor(this.time.nowMs() / this.bucketMs);
    const parsed = request.parsed ?? this.facts.get(request.sql);
    const decisions: StatementDecision[] = [];
    const verdict = this.decideParsed(session, state, parsed, protocol, inTransaction, bucket, 0, decisions);
    if (verdict.allow && parsed.ok && request.dryRun !== true) for (const stmt of parsed.statements) this.track(state, stmt, bucket);
    return result(verdict, parsed, decisions, t0);
  }

  /** `decisions`: where this text's own decisions go (null for the texts an EXECUTE runs: they only allow or refuse). */
  private decideParsed(session: SessionContext, state: SessionSqlState, parsed: ParsedText, protocol: StatementProtocol, inTransaction: boolean, bucket: number, depth: number, decisions: StatementDecision[] | null): StatementVerdict {
    if (!parsed.ok) {
      // Fail closed: text the parser rejects is never forwarded.
      return parseErrorDenial(parsed.code, parsed.message, parsed.cursorPosition === null ? null : parsed.cursorPosition + 1);
    }
    // PREPAREs earlier in this same text, for an EXECUTE later in it.
    let preparedHere: Map<string, string> | null = null;
    for (const stmt of parsed.statements) {
      // rolegate's guards first: the policy is not asked about what they refuse.
      const refused = this.guards.check(stmt);
      if (refused !== null) {
        decisions?.push(guardDecision(refused));
        return refused;
      }
      const own = this.decideFacts(session, stmt.facts, protocol, inTransaction, bucket, decisions);
      if (!own.allow) return own;
      // EXECUTE name runs what was prepared earlier: decide that too, now (a
      // reload or a time window edge applies to it).
      const executed = stmt.meta.execute;
      if (executed !== null) {
        if (depth >= 2) return proxyDenial('nested-execute', executed);
        const here = preparedHere?.get(executed);
        const rec = state.statements.get(executed);
        const texts = here !== undefined ? [here] : rec === undefined ? null : [rec.sql, ...rec.others];
        if (texts === null) return proxyDenial('unknown-prepared-statement', executed);
        const inner = this.decideTexts(session, state, texts, protocol, inTransaction, bucket, depth + 1);
        if (!inner.allow) return inner;
      }
      if (stmt.meta.prepare !== null) (preparedHere ??= new Map()).set(stmt.meta.prepare.name, stmt.meta.prepare.inner.sql);
    }
    return ALLOW;
  }

  /** Every text a prepared statement may hold must be allowed. */
  private decideTexts(session: SessionContext, state: SessionSqlState, texts: readonly string[], protocol: StatementProtocol, inTransaction: boolean, bucket: number, depth: number): StatementVerdict {
    if (texts.length > MAX_CANDIDATES) return proxyDenial('ambiguous-prepared-statement');
    for (const text of texts) {
      const verdict = this.decideParsed(session, state, this.facts.get(text), protocol, inTransaction, bucket, depth, null);
      if (!verdict.allow) return verdict;
    }
    return ALLOW;
  }

  /**
   * Decide a prepared statement's every candidate text again (Bind after a
   * reload or a time-bucket change), each as its Parse was decided; the
   * result describes the statement's own text (its decision and facts for the
   * audit record), the other candidates only allow or refuse.
   */
  preparedStatement(session: SessionContext, state: SessionSqlState, rec: PreparedRecord, inTransaction: boolean): StatementResult {
    const t0 = performance.now();
    const bucket = Math.floor(this.time.nowMs() / this.bucketMs);
    const parsed = this.facts.get(rec.sql);
    const decisions: StatementDecision[] = [];
    if (rec.others.length + 1 > MAX_CANDIDATES) return result(proxyDenial('ambiguous-prepared-statement'), parsed, decisions, t0);
    const own = this.decideParsed(session, state, parsed, 'extended', inTransaction, bucket, 0, decisions);
    if (!own.allow || rec.others.length === 0) return result(own, parsed, decisions, t0);
    return result(this.decideTexts(session, state, rec.others, 'extended', inTransaction, bucket, 0), parsed, decisions, t0);
  }

  /** Session bookkeeping for statements of a text that was allowed as a whole. */
  private track(state: SessionSqlState, stmt: ParsedStatement, bucket: number): void {
    const meta = stmt.meta;
    if (meta.prepare !== null) notePrepared(state, meta.prepare.name, { sql: meta.prepare.inner.sql, authorizer: this, bucket, facts: meta.prepare.inner, decision: null, decisionUs: 0, others: [] });
    if (meta.declareCursor !== null && state.cursors.size < SessionSqlState.MAX_ENTRIES) state.cursors.set(meta.declareCursor.name, meta.declareCursor.inner);
    if (meta.deallocate !== null) {
      if (meta.deallocate === '') state.statements.clear();
      else state.statements.delete(meta.deallocate);
    }
    if (stmt.facts.command === 'DISCARD ALL') state.clear();
  }

  private decideFacts(session: SessionContext, facts: StatementFacts, protocol: StatementProtocol, inTransaction: boolean, bucket: number, decisions: StatementDecision[] | null): StatementVerdict {
    // Two levels: the facts object (one per distinct SQL text while the facts
    // cache holds it: no hashing of the text again), then the session's short
    // context key. Facts that did not come from the cache (not frozen: caching
    // off, or a huge text) are not cached here either.
    const cacheable = this.maxDecisions > 0 && (!this.keyByText || Object.isFrozen(facts));
    const contextKey = cacheable ? decisionContextKey(session, bucket, inTransaction, protocol) : '';
    const statementKey = this.keyByText ? facts : this.factsKey(facts);
    let perContext = cacheable ? this.decisions.get(statementKey) : undefined;
    let decision = perContext?.get(contextKey);
    if (decision === undefined) {
      this.misses++;
      // A policy that never reads statement.sql decides the same without it: a text too long
      // to cache is left out of the input (evaluating with it costs ~15 ms per MiB, without it ~0.2 ms).
      const decided = !this.keyByText && facts.sql.length > DEFAULT_MAX_CACHED_SQL_CHARS ? { ...facts, sql: '' } : facts;
      decision = this.engine.statement(statementInput(session, decided, protocol, inTransaction, this.time.now()), session.sessionId);
      if (cacheable) {
        if (this.size >= this.maxDecisions) this.evictOldest();
        if (perContext === undefined) {
          perContext = new Map();
          this.decisions.set(statementKey, perContext);
        }
        perContext.set(contextKey, decision);
        this.size++;
      }
    } else {
      this.hits++;
    }
    decisions?.push(decision);
    if (decision.allow) return ALLOW;
    return { allow: false, sqlstate: '42501', message: policyMessage(decision.rule, decision.reason), rule: decision.rule, reason: decision.reason };
  }

  /** Everything of the facts the policy can see, except the text: a canonical string. */
  private factsKey(facts: StatementFacts): string {
    // Facts derived from a text's shape share everything but `sql` with their template.
    const base = factsTemplate(facts);
    let key = this.factsKeys.get(base);
    if (key === undefined) {
      key = JSON.stringify([base.command, base.tables, base.functions, base.columns, base.flags, base.parameter]);
      this.factsKeys.set(base, key);
    }
    return key;
  }

  /** FIFO by statement: the statement cached longest ago goes with all its contexts. */
  private evictOldest(): void {
    const oldest = this.decisions.entries().next();
    if (oldest.done === true) return;
    this.size -= oldest.value[1].size;
    this.decisions.delete(oldest.value[0]);
  }

  get decisionCacheSize(): number {
    return this.size;
  }
}

/**
 * The session's part of a decision key, with the time bucket, transaction
 * state and protocol; the four variants are built once per bucket per session.
 */
function decisionContextKey(session: SessionContext, bucket: number, inTransaction: boolean, protocol: StatementProtocol): string {
  const memo = session.keyMemo;
  if (memo.bucket !== bucket) {
    memo.bucket = bucket;
    const base = `${session.cacheKey}\u0001${bucket}\u0001`;
    memo.keys = [`${base}fs`, `${base}fe`, `${base}ts`, `${base}te`];
  }
  return memo.keys[(inTransaction ? 2 : 0) + (protocol === 'simple' ? 0 : 1)] as string;
}

/** The verdict with what it was made from. */
function result(verdict: StatementVerdict, parsed: ParsedText, decisions: StatementDecision[], t0: number): StatementResult {
  return { ...verdict, parsed: parsed.ok ? parsed.statements : null, decisions, decisionUs: Math.round((performance.now() - t0) * 1000) };
}
