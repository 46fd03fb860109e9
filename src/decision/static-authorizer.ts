// Identity → role mapping straight from the config's users: section, used when
// no policy: section is configured. Statements are not restricted by a
// policy; rolegate's own guards (guards.ts) still hold, so every text is parsed
// (through the worker's facts cache) and text the parser rejects is refused.

import type { Config } from '../config/config.ts';
import type { ConnectDecision, ConnectInput } from '../policy/contract.ts';
import type { FactsCache } from '../sql/facts-cache.ts';
import type { ParsedText } from '../sql/parser.ts';
import { ALLOW, undecided, type Authorizer, type PreparedRecord, type SessionContext, type SessionSqlState, type StatementRequest, type StatementResult } from './authorizer.ts';
import { guardDecision, type Guards } from './guards.ts';
import { parseErrorDenial } from './proxy-rules.ts';

/** Statements the guards let through: one shared answer. */
const ALLOWED: StatementResult = Object.freeze(undecided(ALLOW));

export class StaticAuthorizer implements Authorizer {
  readonly revision = 'static';
  readonly enforcesStatements = false;
  readonly decisionCacheHits = 0;
  readonly decisionCacheMisses = 0;
  private readonly config: Config;
  private readonly facts: FactsCache;
  private readonly guards: Guards;

  get parseCacheHits(): number {
    return this.facts.hits;
  }
  get parseCacheMisses(): number {
    return this.facts.misses;
  }

  constructor(config: Config, facts: FactsCache, guards: Guards) {
    this.config = config;
    this.facts = facts;
    this.guards = guards;
  }

  connect(input: ConnectInput): ConnectDecision {
    const user = this.config.users[input.identity.name];
    if (user === undefined || user.role === null) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `no role mapped for identity "${input.identity.name}"` };
    }
    const requested = input.request.role;
    if (requested !== null && requested !== user.role) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `identity "${input.identity.name}" may not use role "${requested}"` };
    }
    const database = user.database ?? input.request.database;
    if (user.database !== null && input.request.database !== user.database && input.request.database !== input.identity.name) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `identity "${input.identity.name}" may not use database "${input.request.database}"` };
    }
    return { allow: true, role: user.role, database, rule: 'static-mapping', reason: 'mapped by config users:' };
  }

  /**
   * Allowed unless a guard refuses one of the text's statements. A denial's
   * result holds only the refused statement (with the guard's decision), so
   * the audit record and metrics describe it.
   */
  statements(request: StatementRequest): StatementResult {
    return this.check(request.sql, performance.now(), request.parsed);
  }

  /** At Bind after a reload (guards.allow may have changed): every text the name may hold is checked again. */
  preparedStatement(_session: SessionContext, _state: SessionSqlState, rec: PreparedRecord): StatementResult {
    const t0 = performance.now();
    for (const sql of [rec.sql, ...rec.others]) {
      const result = this.check(sql, t0);
      if (!result.allow) return result;
    }
    return ALLOWED;
  }

  private check(sql: string, t0: number, preParsed?: ParsedText): StatementResult {
    const parsed = preParsed ?? this.facts.get(sql);
    if (!parsed.ok) {
      // Fail closed: a guarded statement could hide in text the parser rejects.
      const denial = parseErrorDenial(parsed.code, parsed.message, parsed.cursorPosition === null ? null : parsed.cursorPosition + 1);
      return { ...denial, parsed: null, decisions: [], decisionUs: Math.round((performance.now() - t0) * 1000) };
    }
    for (const stmt of parsed.statements) {
      const refused = this.guards.check(stmt);
      if (refused === null) continue;
      return { ...refused, parsed: [stmt], decisions: [guardDecision(refused)], decisionUs: Math.round((performance.now() - t0) * 1000) };
    }
    return ALLOWED;
  }
}
