// The PostgreSQL cluster that scripts/test.ts (`npm test`) starts for the
// whole run, and an admin connection to it.

import pg from 'pg';
import type { QueryResultRow } from 'pg';

export interface TestPostgres {
  host: string;
  port: number;
  /** Superuser; connects over TCP with `password`, or over `socketDir` without one. */
  user: string;
  password: string;
  /** Directory of the Unix socket (`.s.PGSQL.<port>`): pass it as `host` to use the socket. */
  socketDir: string;
}

export const TEST_PG_ENV = {
  host: 'ROLEGATE_TEST_PGHOST',
  port: 'ROLEGATE_TEST_PGPORT',
  user: 'ROLEGATE_TEST_PGUSER',
  password: 'ROLEGATE_TEST_PGPASSWORD',
  socketDir: 'ROLEGATE_TEST_PGSOCKET',
} as const;

export function testPostgres(): TestPostgres {
  const read = (name: string): string => {
    const value = process.env[name];
    if (value === undefined || value === '') {
      throw new Error(
        `${name} is not set: this test needs the PostgreSQL cluster that the test runner starts. ` +
          'Run it with `npm test` (or `node scripts/test.ts <file>`), not with a bare `node --test`.',
      );
    }
    return value;
  };
  const port = Number.parseInt(read(TEST_PG_ENV.port), 10);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`${TEST_PG_ENV.port} is not a port: ${process.env[TEST_PG_ENV.port]}`);
  return {
    host: read(TEST_PG_ENV.host),
    port,
    user: read(TEST_PG_ENV.user),
    password: read(TEST_PG_ENV.password),
    socketDir: read(TEST_PG_ENV.socketDir),
  };
}

/**
 * Runs one statement (or several, without parameters) as the superuser over
 * TCP on a fresh connection, closed afterwards, and resolves with the rows
 * (of the last statement).
 */
export async function adminQuery<R extends QueryResultRow = QueryResultRow>(sql: string, database = 'postgres'): Promise<R[]> {
  const { host, port, user, password } = testPostgres();
  const client = new pg.Client({ host, port, user, password, database, application_name: 'rolegate-test-admin' });
  await client.connect();
  try {
    const result = await client.query<R>(sql);
    // A multi-statement string yields one result per statement.
    const results: unknown = result;
    if (Array.isArray(results)) {
      const last: unknown = results.at(-1);
      return last === undefined ? [] : (last as pg.QueryResult<R>).rows;
    }
    return result.rows;
  } finally {
    await client.end();
  }
}
