// The policy contract (documented for policy authors in docs/policy.md, with
// JSON Schemas in docs/policy-schema/).
// These types are the public `input` shapes and the decision shapes of
// data.rolegate.connect and data.rolegate.statement. The statement facts
// (input.statement minus protocol) are the SQL layer's: sql/statement-facts.ts.

import type { StatementFacts } from '../sql/statement-facts.ts';

export type AuthMethod = 'scram-sha-256' | 'cert' | 'jwt';

export interface IdentityInput {
  name: string;
  method: AuthMethod;
  claims: Record<string, unknown>;
  cert: { subject: string; san: string[]; fingerprint?: string } | null;
}

export interface ClientInput {
  /** Normalised: IPv4-mapped IPv6 becomes dotted IPv4. */
  addr: string;
  port: number;
  tls: boolean;
}

export interface TimeInput {
  unix_ns: number;
  rfc3339: string;
  weekday: string;
  hour: number;
  minute: number;
  tz: string;
}

export interface ProxyInput {
  env: string;
  instance: string;
}

export interface ConnectInput {
  identity: IdentityInput;
  client: ClientInput;
  request: { database: string; role: string | null; application_name: string | null };
  time: TimeInput;
  proxy: ProxyInput;
}

export interface StatementInput {
  identity: IdentityInput;
  client: ClientInput;
  time: TimeInput;
  proxy: ProxyInput;
  session: { role: string; database: string; in_transaction: boolean };
  statement: StatementFacts & { protocol: 'simple' | 'extended' };
}

export interface ConnectDecision {
  allow: boolean;
  role: string | null;
  database: string | null;
  rule: string;
  reason: string;
}

export interface StatementDecision {
  allow: boolean;
  rule: string;
  reason: string;
}
