// Security class 3 (docs/security.md) — escaping the mapped role. rolegate logs
// in upstream as the role the policy chose; nothing a client sends may change
// it: SET ROLE, SET SESSION AUTHORIZATION, their RESET forms,
// set_config('role', …), startup options or parameters, a replication
// connection. The database is made permissive on purpose: the demo roles are
// members of a target role that owns a secret (NOINHERIT: only a switch would
// give them its privileges), so PostgreSQL itself would accept each switch and
// only rolegate stands in between. After every attempt the session is still the
// mapped role and cannot read the secret.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { clientConfig, demoConfig, DEMO_USERS, ensureDemoDatabase, ROLE_PASSWORDS } from '../helpers/fixture.ts';
import { adminQuery, testPostgres } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { errorFields, query, RawClient, startupPacket } from '../helpers/raw-client.ts';
import { assertDenied, assertNeverReachedServer, assertOk, backendPid, roleOf, session, simple, values, type Kind } from '../helpers/security.ts';

const TARGET = 'sec_escape_target';
const SECRET = 'sec_escape_secret';
let proxy: RunningProxy;

before(async () => {
  await ensureDemoDatabase();
  await adminQuery(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${TARGET}') THEN CREATE ROLE ${TARGET} NOLOGIN; END IF; END $$;
    GRANT ${TARGET} TO app_reader, app_writer, app_admin;
    ALTER ROLE app_reader NOINHERIT; ALTER ROLE app_writer NOINHERIT; ALTER ROLE app_admin NOINHERIT;`);
  await adminQuery(`DROP TABLE IF EXISTS ${SECRET}; CREATE TABLE ${SECRET} (s text); INSERT INTO ${SECRET} VALUES ('the secret');
    REVOKE ALL ON ${SECRET} FROM PUBLIC; GRANT SELECT ON ${SECRET} TO ${TARGET};`, 'app');
  proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2 }));
});
after(async () => {
  await proxy?.stop();
  await adminQuery(`DROP TABLE IF EXISTS ${SECRET}`, 'app');
  await adminQuery(`REVOKE ${TARGET} FROM app_reader, app_writer, app_admin; DROP ROLE IF EXISTS ${TARGET};
    ALTER ROLE app_reader INHERIT; ALTER ROLE app_writer INHERIT; ALTER ROLE app_admin INHERIT;`);
});

/** The session is still the mapped role: current_user, session_user, and no access to the secret. */
async function assertStillMapped(c: RawClient, kind: Kind, label: string): Promise<void> {
  const who = await simple(c, 'SELECT current_user || \' \' || session_user');
  assertOk(who, who.status, label);
  assert.deepEqual(values(who), [`${roleOf(kind)} ${roleOf(kind)}`], label);
  const read = await simple(c, `SELECT s FROM ${SECRET}`);
  assert.equal(read.types, 'EZ', `${label}: the secret must stay unreadable, got ${read.types}`);
  assert.equal(read.errors[0]?.get('C'), '42501');
  assert.match(read.errors[0]?.get('M') ?? '', /permission denied for table/, 'refused by PostgreSQL: the role really is unchanged');
}

describe('role switches in SQL', () => {
  test('the target role is reachable at the database level (the test is meaningful)', async () => {
    const rows = await adminQuery<{ ok: boolean }>(`SELECT pg_has_role('app_reader', '${TARGET}', 'MEMBER') AS ok`);
    assert.equal(rows[0]?.ok, true);
  });

  const attempts: Array<[string, string]> = [
    [`SET ROLE ${TARGET}`, 'guard:role-change'],
    [`SET ROLE '${TARGET}'`, 'guard:role-change'],
    [`SET ROLE "${TARGET}"`, 'guard:role-change'],
    [`SET SESSION ROLE ${TARGET}`, 'guard:role-change'],
    [`SET LOCAL ROLE ${TARGET}`, 'guard:role-change'],
    [`SET role = ${TARGET}`, 'guard:role-change'],
    [`SET "role" TO '${TARGET}'`, 'guard:role-change'],
    [`SET ROLE ${TARGET.toUpperCase()}`, 'guard:role-change'],
    ['SET ROLE NONE', 'guard:role-change'],
    ['SET role TO DEFAULT', 'guard:role-change'],
    ['RESET ROLE', 'guard:role-change'],
    ['RESET role', 'guard:role-change'],
    [`SET SESSION AUTHORIZATION ${TARGET}`, 'guard:role-change'],
    [`SET SESSION AUTHORIZATION '${TARGET}'`, 'guard:role-change'],
    ['SET SESSION AUTHORIZATION DEFAULT', 'guard:role-change'],
    ['RESET SESSION AUTHORIZATION', 'guard:role-change'],
    [`SET session_authorization = '${TARGET}'`, 'guard:role-change'],
    ['DISCARD ALL', 'guard:role-change'],
    [`SELECT set_config('role', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT set_config('role', '${TARGET}', true)`, 'guard:role-change'],
    [`SELECT pg_catalog.set_config('ROLE', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT set_config(E'r\\x6fle', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT set_config(U&'\\0072ole', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT set_config('session_authorization', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT s FROM ${SECRET}, set_config('role', '${TARGET}', true) x`, 'guard:role-change'],
    [`SELECT set_config('r' || 'ole', '${TARGET}', false)`, 'guard:role-change'],
    // Regression: a harmless first set_config() used to hide the second one.
    [`SELECT set_config('application_name', 'x', false), set_config('role', '${TARGET}', false)`, 'guard:role-change'],
    [`SELECT set_config(v, '${TARGET}', false) FROM (VALUES ('role')) s(v)`, 'guard:role-change'],
    [`UPDATE pg_settings SET setting = '${TARGET}' WHERE name = 'role'`, 'guard:pinned-parameter'],
    [`ALTER ROLE app_reader SET role = '${TARGET}'`, 'guard:role-change'],
    [`ALTER ROLE CURRENT_USER SET session_authorization = '${TARGET}'`, 'guard:role-change'],
    [`CREATE FUNCTION sec_escape_f() RETURNS int LANGUAGE sql SET role = '${TARGET}' AS 'SELECT 1'`, 'guard:role-change'],
    [`SET ROLE ${TARGET}; SELECT s FROM ${SECRET}`, 'guard:role-change'],
  ];
  for (const kind of ['reader', 'writer', 'admin'] as const) {
    for (const [sql, rule] of attempts) {
      test(`${kind}: ${sql}`, async () => {
        const c = await session(proxy.port, kind);
        try {
          const pid = await backendPid(c);
          assertDenied(await simple(c, sql), rule, 'I', sql);
          await assertNeverReachedServer(pid, sql);
          await assertStillMapped(c, kind, sql);
        } finally {
          c.end();
        }
      });
    }
  }

  test('inside a transaction a refused SET LOCAL ROLE aborts it, and the role is unchanged after ROLLBACK', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertDenied(await simple(c, `SET LOCAL ROLE ${TARGET}`), 'guard:role-change', 'E');
      const read = await simple(c, `SELECT s FROM ${SECRET}`);
      assert.equal(read.errors[0]?.get('C'), '25P02');
      assertOk(await simple(c, 'ROLLBACK'));
      await assertStillMapped(c, 'reader', 'after rollback');
    } finally {
      c.end();
    }
  });

  test('pipelined: SET ROLE and the read behind it in one write — the read runs as the mapped role', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      c.write(Buffer.concat([query(`SET ROLE ${TARGET}`), query(`SELECT s FROM ${SECRET}`)]));
      const first = await c.readUntil('Z');
      assert.equal(errorFields(first[0]!).get('C'), '42501');
      const second = await c.readUntil('Z');
      assert.equal(errorFields(second[0]!).get('M')?.startsWith('permission denied for table'), true);
    } finally {
      c.end();
    }
  });

  test('RESET ALL is refused by the guard (it resets what rolegate set at login); RESET of one ordinary setting works', async () => {
    for (const kind of ['reader', 'writer', 'admin'] as const) {
      const c = await session(proxy.port, kind);
      try {
        assertOk(await simple(c, "SET application_name = 'before-reset'"));
        assertDenied(await simple(c, 'RESET ALL'), 'guard:role-change', 'I', 'RESET ALL');
        await assertStillMapped(c, kind, 'after RESET ALL');
        assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['before-reset'], 'nothing was reset');
        assertOk(await simple(c, 'RESET application_name'));
        assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['']);
      } finally {
        c.end();
      }
    }
  });

  test('on the server itself DISCARD ALL keeps the session user and reports no pinned parameter: the denial is on the safe side', async () => {
    // Straight to PostgreSQL as app_reader, the way rolegate logs in (not through the proxy).
    const { port } = testPostgres();
    const c = await RawClient.connect(port);
    try {
      await c.login('app_reader', ROLE_PASSWORDS['app_reader']!, 'app', { client_encoding: 'UTF8', standard_conforming_strings: 'on' });
      await simple(c, "SET application_name = 'x'");
      const r = await simple(c, 'DISCARD ALL');
      assertOk(r);
      const reported = r.messages.filter((m) => m.type === 'S').map((m) => m.body.toString('utf8').split('\0')[0]);
      assert.ok(!reported.includes('client_encoding') && !reported.includes('standard_conforming_strings') && !reported.includes('session_authorization'), `reported: ${reported.join(', ')}`);
      assert.deepEqual(values(await simple(c, "SELECT current_user || ' ' || session_user")), ['app_reader app_reader']);
    } finally {
      c.end();
    }
  });

  test('legitimate: SHOW role / session_authorization and current_setting() read them', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assert.deepEqual(values(await simple(c, 'SHOW session_authorization')), ['app_reader']);
      // rolegate's upstream login pins the role to the mapped one (startup parameter role=<role>).
      assert.deepEqual(values(await simple(c, "SELECT current_setting('role')")), ['app_reader']);
      assert.deepEqual(values(await simple(c, 'SHOW role')), ['app_reader']);
    } finally {
      c.end();
    }
  });
});

describe('startup parameters and options', () => {
  async function loginWith(params: Record<string, string>): Promise<RawClient> {
    const c = await RawClient.connect(proxy.port);
    await c.login('reporting-svc', DEMO_USERS['reporting-svc'], 'app', params);
    return c;
  }

  test('-c options other than rolegate.role and pass-through parameters are refused before authentication', async () => {
    for (const options of [
      `-c role=${TARGET}`,
      `-crole=${TARGET}`,
      `--role=${TARGET}`,
      `-c session_authorization=${TARGET}`,
      `--session-authorization=${TARGET}`,
      `-c rolegate.role=app_reader -c role=${TARGET}`,
      '-c search_path=evil',
      '-c session_replication_role=replica',
      '-c default_transaction_read_only=off',
      '-c is_superuser=on',
      '-p 5433',
      '-D /tmp',
      '-c',
      '-c role',
    ]) {
      const c = await RawClient.connect(proxy.port);
      c.write(startupPacket({ user: 'reporting-svc', database: 'app', options }));
      const m = await c.read();
      assert.equal(m?.type, 'E', options);
      assert.equal(errorFields(m).get('C'), '08P01', options);
      assert.ok(await c.waitClosed(), options);
    }
  });

  test('a backslash-escaped option value stays one value: no second switch is smuggled', async () => {
    const c = await loginWith({ options: `-c application_name=a\\ -c\\ role=${TARGET}` });
    try {
      assert.deepEqual(values(await simple(c, 'SHOW application_name')), [`a -c role=${TARGET}`]);
      await assertStillMapped(c, 'reader', 'escaped options');
    } finally {
      c.end();
    }
  });

  test('startup parameters that are GUCs are not passed upstream unless on the pass-through list', async () => {
    const c = await loginWith({
      role: TARGET,
      session_authorization: TARGET,
      search_path: 'evil',
      session_replication_role: 'replica',
      default_transaction_read_only: 'off',
      is_superuser: 'on',
      application_name: 'kept',
      statement_timeout: '12345',
    });
    try {
      await assertStillMapped(c, 'reader', 'startup parameters');
      assert.deepEqual(values(await simple(c, 'SHOW search_path')), ['"$user", public']);
      assert.deepEqual(values(await simple(c, 'SHOW session_replication_role')), ['origin']);
      // The pass-through ones do arrive.
      assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['kept']);
      assert.deepEqual(values(await simple(c, 'SHOW statement_timeout')), ['12345ms']);
    } finally {
      c.end();
    }
  });

  test('a role or database the policy does not grant the service is refused at connect (28000)', async () => {
    for (const [extra, detail] of [
      [{ options: '-c rolegate.role=app_admin' }, /role-not-allowed/],
      [{ options: `-c rolegate.role=${TARGET}` }, /role-not-allowed/],
      [{ options: '-c rolegate.role=postgres' }, /role-not-allowed/],
      [{ database: 'postgres' }, /database-not-allowed/],
    ] as const) {
      const c = new pg.Client({ ...clientConfig(proxy.port, 'reporting-svc'), ...extra });
      const err = await c.connect().then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err, JSON.stringify(extra));
      assert.equal(err.code, '28000', JSON.stringify(extra));
      assert.match(err.detail ?? '', detail);
      await c.end().catch(() => {});
    }
  });

  test('replication connections are refused in every spelling', async () => {
    for (const value of ['database', 'true', 'on', '1', 'yes', 'TRUE', 'Database', 'physical']) {
      const c = await RawClient.connect(proxy.port);
      c.write(startupPacket({ user: 'reporting-svc', database: 'app', replication: value }));
      const m = await c.read();
      assert.equal(errorFields(m!).get('C'), '28000', value);
      assert.match(errorFields(m!).get('M') ?? '', /replication/);
      assert.ok(await c.waitClosed());
    }
  });

  test('legitimate: replication=false is an ordinary session', async () => {
    const c = await loginWith({ replication: 'false' });
    try {
      await assertStillMapped(c, 'reader', 'replication=false');
    } finally {
      c.end();
    }
  });
});
