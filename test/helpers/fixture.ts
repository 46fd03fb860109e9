// The demo database (roles app_reader/app_writer/app_admin, database app) in
// the test cluster, and configs that put rolegate in front of it.

import assert from 'node:assert/strict';
import pg from 'pg';
import { DEMO_ROLES, DEMO_USERS, demoConfigYaml, prepareDemoDatabase } from '../../src/cli/demo.ts';
import { adminQuery, testPostgres } from './pg.ts';

export const ROLE_PASSWORDS: Record<string, string> = Object.fromEntries(DEMO_ROLES.map((r) => [r, `${r}-test-secret`]));
export { DEMO_USERS };

let prepared: Promise<void> | null = null;

/** Create the demo roles, database and tables once per test process (idempotent across files). */
export function ensureDemoDatabase(): Promise<void> {
  prepared ??= (async () => {
    const existing = await adminQuery<{ n: string }>("SELECT count(*) AS n FROM pg_database WHERE datname = 'app'");
    if (existing[0]?.n === '1') return;
    await prepareDemoDatabase((sql, database) => adminQuery(sql, database), ROLE_PASSWORDS);
  })();
  return prepared;
}

export function demoConfig(options: { withPolicy?: boolean; workers?: number; extra?: string } = {}): string {
  const base = demoConfigYaml({ port: 0, upstreamPort: testPostgres().port, rolePasswords: ROLE_PASSWORDS, withPolicy: options.withPolicy ?? false });
  return base.replace('workers: 2', `workers: ${options.workers ?? 2}`) + (options.extra ?? '');
}

export type DemoUser = keyof typeof DEMO_USERS;

export function clientConfig(port: number, user: DemoUser, extra: Partial<pg.ClientConfig> = {}): pg.ClientConfig {
  return { host: '127.0.0.1', port, user, password: DEMO_USERS[user], database: 'app', ...extra };
}

export async function connect(port: number, user: DemoUser, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(port, user, extra));
  await client.connect();
  return client;
}

/** Awaits `p`, which must fail with 42501 naming `rule` (a statement the policy denied); returns the error. */
export async function deniedWith(p: Promise<unknown>, rule: string): Promise<pg.DatabaseError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as pg.DatabaseError,
  );
  assert.ok(err, `expected a denial by ${rule}`);
  assert.equal(err.code, '42501', err.message);
  assert.match(err.message, new RegExp(`rule "${rule}"`));
  return err;
}
