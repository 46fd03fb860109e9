// The policy contract (DESIGN §3, documented for policy authors in docs/policy.md).
// These types are the public `input` shapes and the decision shapes of
// data.rolegate.connect and data.rolegate.statement.

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

export type TableAccess = 'read' | 'write';

export interface TableFact {
  schema: string | null;
  name: string;
  access: TableAccess[];
}

export interface FunctionFact {
  schema: string | null;
  name: string;
}

export interface ColumnFact {
  table: string | null;
  name: string;
  access: TableAccess;
}

export interface StatementFlags {
  /** A WITH clause holds INSERT/UPDATE/DELETE/MERGE. */
  data_modifying_cte: boolean;
  /** SELECT INTO / CREATE TABLE AS: a read that creates a table. */
  into: boolean;
  /** FOR UPDATE / FOR SHARE / LOCK TABLE. */
  locking: boolean;
  /** COPY ... PROGRAM (runs a shell command on the database host). */
  copy_program: boolean;
  /** COPY to or from a server-side file (not STDIN/STDOUT). */
  copy_file: boolean;
}

/** What one statement is, as PostgreSQL's own parser reads it. */
export interface StatementFacts {
  sql: string;
  command: string;
  tables: TableFact[];
  functions: FunctionFact[];
  columns: ColumnFact[];
  flags: StatementFlags;
  /** SET / RESET / SHOW / set_config target: the lower-cased parameter name, else null. */
  parameter: string | null;
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
