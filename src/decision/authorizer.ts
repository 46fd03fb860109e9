// The seam between a session and whatever decides: the static config mapping
// (no policy configured) or the Rego policy (policy-authorizer.ts). A session
// calls it synchronously on the hot path; implementations must not block or throw.

import type { ClientInput, ConnectDecision, ConnectInput, IdentityInput, ProxyInput, StatementDecision } from '../policy/contract.ts';
import type { StatementFacts } from '../sql/statement-facts.ts';
import type { ParsedStatement, ParsedText } from '../sql/parser.ts';
import type { ShadowDisagreement } from './shadow.ts';

/** What a session knows about itself once the connect decision is made. */
export interface SessionContext {
  readonly identity: IdentityInput;
  readonly client: ClientInput;
  readonly proxy: ProxyInput;
  readonly role: string;
  readonly database: string;
  /** Identity, role, database and client address in one string: the session's part of a decision-cache key. */
  readonly cacheKey: string;
  /** The session's id in log lines (evaluation failures and print() output name it); absent outside a session. */
  readonly sessionId?: string;
  /** Decision-cache keys of the current time bucket (built once per bucket; see policy-authorizer.ts). */
  readonly keyMemo: { bucket: number; keys: string[] };
}

/** A prepared statement as rolegate saw it created, and the decision it holds. */
export interface PreparedRecord {
  /** The statement's text: a Parse message's text, or the body of PREPARE … AS <body>. */
  sql: string;
  /** The authorizer (policy revision) and time bucket that last allowed it. */
  authorizer: Authorizer;
  bucket: number;
  /** Facts and the allowing decision, for the audit record of each Execute (null without a parser). */
  facts: StatementFacts | null;
  decision: StatementDecision | null;
  /** µs the allowing decision took (the Parse's, or the last re-check at Bind), for the audit records of its Executes. */
  decisionUs: number;
  /** The shadow candidate's disagreement with the Parse's decision (its Executes' records carry it); absent: none. */
  shadow?: ShadowDisagreement | undefined;
  /**
   * Other texts the name may hold on the server: a later PREPARE/Parse of the
   * same name either failed (duplicate) or replaced it (after a failed
   * DEALLOCATE, a rolled-back PREPARE…), and rolegate cannot tell which. Every
   * candidate is decided at EXECUTE/Bind. Bounded: beyond MAX_CANDIDATES the
   * statement is refused.
   */
  others: string[];
}

export const MAX_CANDIDATES = 8;

/** Record that `name` may now hold `sql` too (or create the record). */
export function notePrepared(state: SessionSqlState, name: string, rec: PreparedRecord): void {
  const existing = state.statements.get(name);
  if (existing === undefined) {
    if (state.statements.size < SessionSqlState.MAX_ENTRIES) state.statements.set(name, rec);
    return;
  }
  if (existing.sql === rec.sql || existing.others.includes(rec.sql)) return;
  existing.others.push(rec.sql);
}

/**
 * What one session created that no parser sees in a later statement:
 * prepared statements (Parse and SQL PREPARE share one namespace in the
 * server, and so here) and cursors. EXECUTE and Bind are decided as the
 * statement they run.
 */
export class SessionSqlState {
  readonly statements = new Map<string, PreparedRecord>();
  readonly cursors = new Map<string, StatementFacts>();
  static readonly MAX_ENTRIES = 10_000;

  clear(): void {
    this.statements.clear();
    this.cursors.clear();
  }
}

export type StatementProtocol = 'simple' | 'extended';

export interface StatementDenial {
  allow: false;
  /** 42501 for a policy deny, 42601 for text the parser rejects (fail closed). */
  sqlstate: string;
  message: string;
  rule: string;
  reason: string;
  /** 1-based character position in the text, for parse errors. */
  position?: number;
}

export type StatementVerdict = { allow: true } | StatementDenial;

export const ALLOW: StatementVerdict = Object.freeze({ allow: true });

/** One statement decision asked of an authorizer: everything the answer depends on. */
export interface StatementRequest {
  readonly session: SessionContext;
  /** The session's prepared statements and cursors; updated for allowed PREPARE / DEALLOCATE / DECLARE / DISCARD. */
  readonly state: SessionSqlState;
  readonly sql: string;
  readonly protocol: StatementProtocol;
  readonly inTransaction: boolean;
  /** Decide only: leave `state` as it is (a shadow policy judging what the active one decides). */
  readonly dryRun?: boolean;
  /** `sql` already parsed (off the worker's thread, sql/parse-pool.ts); absent: the authorizer parses it (through the facts cache). */
  readonly parsed?: ParsedText;
}

/**
 * The answer to one request, as a value of its own: the verdict and what it
 * was made from, for the caller's audit record and metrics.
 */
export interface StatementFindings {
  /** The parsed statements of the text (null: not parsed — the static authorizer, or a parse error). */
  readonly parsed: readonly ParsedStatement[] | null;
  /** One policy decision per statement decided (allows carry the allowing rule), up to the first deny. */
  readonly decisions: readonly StatementDecision[];
  /** µs the decision took (parse and evaluation on a cache miss). */
  readonly decisionUs: number;
}

export type StatementResult = StatementVerdict & StatementFindings;

const NOTHING_DECIDED: readonly StatementDecision[] = Object.freeze([]);

/** A result made without the policy: nothing parsed or decided. */
export function undecided(verdict: StatementVerdict): StatementResult {
  return { ...verdict, parsed: null, decisions: NOTHING_DECIDED, decisionUs: 0 };
}

/**
 * The facts of the statement a result is about: the refused statement for a
 * denial (for an EXECUTE whose prepared text was refused, the EXECUTE's), the
 * first statement for an allow; null when the policy decided nothing.
 */
export function decidedFacts(result: StatementResult): StatementFacts | null {
  if (result.decisions.length === 0) return null;
  const index = result.allow ? 0 : result.decisions.length - 1;
  return result.parsed?.[index]?.facts ?? null;
}

export interface Authorizer {
  /** Policy revision the decisions come from ("static" without a policy). */
  readonly revision: string;
  /** Cache counters since this authorizer was built (metrics take running totals). */
  readonly parseCacheHits: number;
  readonly parseCacheMisses: number;
  readonly decisionCacheHits: number;
  readonly decisionCacheMisses: number;
  connect(input: ConnectInput): ConnectDecision;
  /**
   * Decide every statement in one SQL text (a simple Query may hold several;
   * the text is forwarded only if all are allowed).
   */
  statements(request: StatementRequest): StatementResult;
  /**
   * Re-decide a prepared statement (all its candidate texts) at Bind; the
   * result describes the statement's own text.
   */
  preparedStatement(session: SessionContext, state: SessionSqlState, rec: PreparedRecord, inTransaction: boolean): StatementResult;
  /** false for the static mapping: statements are not restricted. */
  readonly enforcesStatements: boolean;
}
