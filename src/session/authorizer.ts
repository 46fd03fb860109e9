// The seam between a session and whatever decides: the static config mapping
// (no policy configured) or the Rego policy (src/policy). A session calls it
// synchronously on the hot path; implementations must not block or throw.

import type { ClientInput, ConnectDecision, ConnectInput, IdentityInput, ProxyInput, TimeInput } from '../policy/contract.ts';

/** What a session knows about itself once the connect decision is made. */
export interface SessionContext {
  readonly identity: IdentityInput;
  readonly client: ClientInput;
  readonly proxy: ProxyInput;
  readonly role: string;
  readonly database: string;
}

export type StatementProtocol = 'simple' | 'extended';

export type StatementVerdict =
  | { allow: true }
  | {
      allow: false;
      /** 42501 for a policy deny, 42601 for text the parser rejects (fail closed). */
      sqlstate: string;
      message: string;
      rule: string;
      reason: string;
      /** 1-based character position in the text, for parse errors. */
      position?: number;
    };

export const ALLOW: StatementVerdict = Object.freeze({ allow: true });

export interface Authorizer {
  /** Policy revision the decisions come from ("static" without a policy). */
  readonly revision: string;
  connect(input: ConnectInput): ConnectDecision;
  /**
   * Decide every statement in one SQL text (a simple Query may hold several;
   * the text is forwarded only if all are allowed).
   */
  statements(session: SessionContext, sql: string, protocol: StatementProtocol, inTransaction: boolean, time: TimeInput): StatementVerdict;
}
