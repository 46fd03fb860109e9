// rolegate's own guard rails, checked before the policy on every statement:
// whatever a policy allows, a session stays the role rolegate logged in as,
// keeps the settings rolegate reads SQL under, and does not reach outside the
// database (programs, files, other servers) unless the operator lifted that
// guard by name (config guards.allow). The statement's guarded effects are
// found once per parse (sql/guarded-effects.ts); here they become a denial.

import type { GuardedEffect } from '../sql/guarded-effects.ts';
import type { StatementDecision } from '../policy/contract.ts';
import type { ParsedStatement } from '../sql/parser.ts';
import type { StatementDenial } from './authorizer.ts';
import { proxyDenial, type ProxyRuleId } from './proxy-rules.ts';

/** Each guarded effect's rule id (its entry in PROXY_RULES). */
export const GUARD_RULE: Readonly<Record<GuardedEffect, ProxyRuleId>> = {
  role_change: 'guard:role-change',
  pinned_parameter: 'guard:pinned-parameter',
  copy_program: 'guard:copy-program',
  copy_file: 'guard:copy-file',
  large_objects: 'guard:large-objects',
  server_files: 'guard:server-files',
  remote_connections: 'guard:remote-connections',
};

export class Guards {
  /** The lifted guards, as configured (config guards.allow: only the side doors can be named there). */
  readonly allowed: readonly GuardedEffect[];
  private readonly lifted: ReadonlySet<GuardedEffect>;

  constructor(allow: readonly GuardedEffect[] = []) {
    this.allowed = Object.freeze([...allow]);
    this.lifted = new Set(allow);
  }

  /** The denial for the first of the statement's guarded effects that is not lifted; null: none (nearly every statement has none). */
  check(stmt: ParsedStatement): StatementDenial | null {
    const effects = stmt.meta.guarded;
    if (effects.length === 0) return null;
    for (const effect of effects) {
      if (this.lifted.has(effect)) continue;
      return proxyDenial(GUARD_RULE[effect], stmt.facts.command);
    }
    return null;
  }
}

/** A guard's refusal as the statement's decision (results list one per statement decided, for the audit record and metrics). */
export function guardDecision(denial: StatementDenial): StatementDecision {
  return { allow: false, rule: denial.rule, reason: denial.reason };
}
