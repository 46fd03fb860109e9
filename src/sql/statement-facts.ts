// What one statement is, as PostgreSQL's own parser reads it: the facts the
// SQL layer derives from a parse tree (facts.ts) and the policy sees as
// input.statement (docs/policy.md). Owned here; policy/contract.ts re-exports them.

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
