// Shadow mode (policy.shadow): a candidate policy decides every connection and
// every statement beside the active one, on the same input; only the active
// decision is enforced. Where the two differ the audit record says so and
// rolegate_shadow_disagreements_total counts it — a draft is judged against
// live traffic before it decides anything.
//
// The candidate keeps its own decision cache (so a cached statement costs it a
// cache hit, ~1 µs) and decides without touching the session's state: what a
// PREPARE records follows the active policy, which decides what runs.

import type { WorkerMetrics } from '../metrics/worker-counters.ts';
import type { ConnectDecision, ConnectInput } from '../policy/contract.ts';
import type { Authorizer, StatementRequest, StatementResult } from './authorizer.ts';

export type ShadowChange = 'allow_to_deny' | 'deny_to_allow';

/** A statement decision, with the shadow candidate's disagreement when it has one. */
export type ShadowedResult = StatementResult & { readonly shadow?: ShadowDisagreement };

/** A disagreement as the audit record carries it. */
export function shadowRecord(d: ShadowDisagreement): { change: ShadowChange; rule: string | null; reason: string | null; revision: string } {
  return { change: d.change, rule: d.rule, reason: d.reason, revision: d.revision };
}

/** The candidate's answer where it differs from the active policy's. */
export interface ShadowDisagreement {
  readonly change: ShadowChange;
  /** The candidate's rule and reason, and its revision. */
  readonly rule: string | null;
  readonly reason: string | null;
  readonly revision: string;
  /**
   * allow_to_deny of a text with several statements: the one the candidate
   * refused (0-based); the statements before it it allowed too. 0 otherwise.
   */
  readonly index: number;
}

export class Shadow {
  readonly authorizer: Authorizer;
  private readonly metrics: WorkerMetrics;
  private readonly decided: { connect: number; statement: number };
  private readonly changed: Readonly<Record<'connect' | 'statement', Readonly<Record<ShadowChange, number>>>>;

  constructor(authorizer: Authorizer, metrics: WorkerMetrics) {
    this.authorizer = authorizer;
    this.metrics = metrics;
    const counter = (kind: 'connect' | 'statement', change: ShadowChange): number => metrics.handle('rolegate_shadow_disagreements_total', { kind, change });
    this.decided = { connect: metrics.handle('rolegate_shadow_decisions_total', { kind: 'connect' }), statement: metrics.handle('rolegate_shadow_decisions_total', { kind: 'statement' }) };
    this.changed = {
      connect: { allow_to_deny: counter('connect', 'allow_to_deny'), deny_to_allow: counter('connect', 'deny_to_allow') },
      statement: { allow_to_deny: counter('statement', 'allow_to_deny'), deny_to_allow: counter('statement', 'deny_to_allow') },
    };
  }

  get revision(): string {
    return this.authorizer.revision;
  }

  /** The candidate's connect decision on the same input; a disagreement in whether (or as which role) the client gets in. */
  connect(input: ConnectInput, active: ConnectDecision): ShadowDisagreement | null {
    const candidate = this.authorizer.connect(input);
    this.metrics.inc(this.decided.connect);
    const activeIn = active.allow && active.role !== null;
    const candidateIn = candidate.allow && candidate.role !== null;
    if (activeIn === candidateIn && (!activeIn || candidate.role === active.role)) return null;
    // A different role counts as a refusal of what runs now.
    const change: ShadowChange = activeIn && !(candidateIn && candidate.role === active.role) ? 'allow_to_deny' : 'deny_to_allow';
    this.metrics.inc(this.changed.connect[change]);
    return { change, rule: candidate.rule, reason: candidate.reason, revision: this.authorizer.revision, index: 0 };
  }

  /** The candidate's verdict on the statement the active policy just decided (`active`). */
  statement(request: StatementRequest, active: StatementResult): ShadowDisagreement | null {
    const candidate = this.authorizer.statements({ session: request.session, state: request.state, sql: request.sql, protocol: request.protocol, inTransaction: request.inTransaction, dryRun: true });
    this.metrics.inc(this.decided.statement);
    if (candidate.allow === active.allow) return null;
    const change: ShadowChange = active.allow ? 'allow_to_deny' : 'deny_to_allow';
    this.metrics.inc(this.changed.statement[change]);
    if (candidate.allow) return { change, rule: candidate.decisions.at(-1)?.rule ?? null, reason: null, revision: this.authorizer.revision, index: 0 };
    return { change, rule: candidate.rule, reason: candidate.reason, revision: this.authorizer.revision, index: Math.max(candidate.decisions.length - 1, 0) };
  }
}
