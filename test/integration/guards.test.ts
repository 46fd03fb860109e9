// Guards: refusals rolegate makes itself, before the policy is asked and
// whatever it answers (role changes, the pinned parameters client_encoding and
// standard_conforming_strings, COPY … PROGRAM, COPY to/from server files,
// server-side large objects, server files, remote connections). The policy here
// allows every statement, and the database is made permissive on purpose: the
// mapped role may switch to a more privileged role, owns its database, is a
// member of pg_execute_server_program / pg_read_server_files /
// pg_write_server_files / pg_monitor, may ALTER SYSTEM the pinned parameters
// and may run lo_import/lo_export, pg_read_file & co., dblink, postgres_fdw
// and adminpack. Each attempt is first sent straight to PostgreSQL as the mapped
// role (inside BEGIN … ROLLBACK) to show that it would work there; through
// rolegate it must be refused by the guard, run nothing, and leave the session
// usable.

import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery, testPostgres } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { bind, errorFields, execute, message, parse, RawClient, startupPacket, sync } from '../helpers/raw-client.ts';
import {
  assertDenied,
  assertNeverReachedServer,
  assertOk,
  assertUsable,
  backendPid,
  lastServerQuery,
  roundTrip,
  simple,
  values,
  withPolicyDir,
  type Reply,
} from '../helpers/security.ts';

const DB = 'guards_db';
/** The role the policy maps the service to (owns DB). */
const MAPPED = 'guards_mapped';
const MAPPED_PASSWORD = 'guards-mapped-test-secret';
/**
 * The more privileged role: MAPPED is a member through a NOINHERIT bridge, so
 * SET ROLE to it is allowed by PostgreSQL but its privileges (SELECT on the
 * secret) come only with the switch; MAPPED itself inherits the server roles.
 */
const TARGET = 'guards_target';
const BRIDGE = 'guards_bridge';
const SECRET = 'guards_secret';
const PROBE = 'guards_probe';
const SERVICE = 'reporting-svc';
const DIRECT_APP = 'guards-direct';
const DBLINK_APP = 'guards-dblink';
const FDW_APP = 'guards-fdw';

/**
 * Directories the PostgreSQL server writes into and reads from. Tests may run
 * as root with PostgreSQL running as the `postgres` OS user: under /tmp, mode
 * 0777. OUT gets whatever an attempt through rolegate would write; DIRECT what
 * the same statement sent straight to PostgreSQL writes; IN holds files to
 * read (and to rename or unlink).
 */
const ROOT = mkdtempSync('/tmp/rolegate-guards-');
chmodSync(ROOT, 0o755);
const OUT = path.join(ROOT, 'out');
const DIRECT = path.join(ROOT, 'direct');
const IN = path.join(ROOT, 'in');
const IN_FILES: Record<string, string> = { 'input.tsv': '9\tnine\n', 'ids.txt': '9\n', 'rename-me.txt': 'rename me\n', 'unlink-me.txt': 'unlink me\n' };

type GuardRule = 'guard:role-change' | 'guard:pinned-parameter' | 'guard:copy-program' | 'guard:copy-file' | 'guard:large-objects' | 'guard:server-files' | 'guard:remote-connections';
type Extension = 'dblink' | 'postgres_fdw' | 'adminpack';

interface GuardCase {
  /** Placeholders: @out@, @in@ (directories), @loid@ (a large object MAPPED owns), @connstr@ (MAPPED's connection string to DB). */
  sql: string;
  rule: GuardRule;
  /** The statement only means something with this extension (skipped when it cannot be created). */
  needs?: Extension;
  /** Why PostgreSQL itself refuses it too (no direct run; the guard must refuse it all the same). */
  postgresRefuses?: string;
  /** Cannot run inside a transaction block: the direct run goes outside one, then `undo` runs. */
  outsideTransaction?: { undo: string | null };
  /** Several statements in one Query: no extended-protocol attempt. */
  multi?: true;
  /** The direct run writes this file (in DIRECT): proof that the statement really works there. */
  writes?: string;
}

const ROLE = 'guard:role-change';
const PINNED = 'guard:pinned-parameter';

const CASES: GuardCase[] = [
  // role and session_authorization, in every form
  { sql: `SET ROLE ${TARGET}`, rule: ROLE },
  { sql: `SET ROLE '${TARGET}'`, rule: ROLE },
  { sql: `SET ROLE ${TARGET.toUpperCase()}`, rule: ROLE },
  { sql: `SET SESSION ROLE ${TARGET}`, rule: ROLE },
  { sql: `SET LOCAL ROLE ${TARGET}`, rule: ROLE },
  { sql: `SET role = ${TARGET}`, rule: ROLE },
  { sql: `SET "role" TO '${TARGET}'`, rule: ROLE },
  { sql: 'SET ROLE NONE', rule: ROLE },
  { sql: 'SET role TO DEFAULT', rule: ROLE },
  { sql: 'RESET ROLE', rule: ROLE },
  { sql: `SET SESSION AUTHORIZATION ${TARGET}`, rule: ROLE, postgresRefuses: 'only a superuser may become another session user' },
  { sql: `SET SESSION AUTHORIZATION ${MAPPED}`, rule: ROLE },
  { sql: 'SET SESSION AUTHORIZATION DEFAULT', rule: ROLE },
  { sql: 'RESET SESSION AUTHORIZATION', rule: ROLE },
  { sql: `SET session_authorization = '${MAPPED}'`, rule: ROLE },
  { sql: `SELECT set_config('role', '${TARGET}', false)`, rule: ROLE },
  { sql: `SELECT set_config('role', '${TARGET}', true)`, rule: ROLE },
  { sql: `SELECT pg_catalog.set_config('ROLE', '${TARGET}', false)`, rule: ROLE },
  { sql: `SELECT set_config(E'r\\x6fle', '${TARGET}', false)`, rule: ROLE },
  { sql: `SELECT set_config(U&'\\0072ole', '${TARGET}', false)`, rule: ROLE },
  { sql: `SELECT set_config('session_authorization', '${MAPPED}', false)`, rule: ROLE },
  { sql: `SELECT * FROM set_config('role', '${TARGET}', false)`, rule: ROLE },
  { sql: `WITH s AS (SELECT set_config('role', '${TARGET}', false)) SELECT * FROM s`, rule: ROLE },
  { sql: `EXPLAIN ANALYZE SELECT set_config('role', '${TARGET}', false)`, rule: ROLE },
  // set_config() whose name is not a literal: rolegate cannot know what it sets
  { sql: `SELECT set_config('r' || 'ole', '${TARGET}', false)`, rule: ROLE },
  { sql: `SELECT set_config(v, '${TARGET}', false) FROM (VALUES ('role')) s(v)`, rule: ROLE },
  { sql: `SELECT set_config('application_name', 'x', false), set_config('role', '${TARGET}', false)`, rule: ROLE },
  // stored defaults that a later login would pick up
  { sql: `ALTER ROLE ${MAPPED} SET role = '${TARGET}'`, rule: ROLE },
  { sql: `ALTER USER ${MAPPED} SET role TO ${TARGET}`, rule: ROLE },
  { sql: `ALTER ROLE CURRENT_USER SET role = ${TARGET}`, rule: ROLE },
  { sql: `ALTER ROLE ${MAPPED} IN DATABASE ${DB} SET role = ${TARGET}`, rule: ROLE },
  { sql: `ALTER ROLE ${MAPPED} RESET role`, rule: ROLE },
  { sql: `ALTER ROLE ${MAPPED} SET session_authorization = '${MAPPED}'`, rule: ROLE },
  { sql: `ALTER ROLE ALL SET role = ${TARGET}`, rule: ROLE, postgresRefuses: 'ALTER ROLE ALL needs a superuser' },
  { sql: `ALTER DATABASE ${DB} SET role = ${TARGET}`, rule: ROLE },
  { sql: `ALTER DATABASE ${DB} SET session_authorization = '${MAPPED}'`, rule: ROLE },
  { sql: `CREATE FUNCTION guards_evil_f() RETURNS text LANGUAGE sql SET role = ${TARGET} AS 'SELECT current_user::text'`, rule: ROLE },
  { sql: `CREATE OR REPLACE FUNCTION guards_fn() RETURNS int LANGUAGE sql SET role = ${TARGET} AS 'SELECT 1'`, rule: ROLE },
  { sql: `ALTER FUNCTION guards_fn() SET role = ${TARGET}`, rule: ROLE },
  { sql: `CREATE PROCEDURE guards_evil_p() LANGUAGE sql SET role = ${TARGET} AS 'SELECT 1'`, rule: ROLE },
  { sql: `ALTER PROCEDURE guards_proc() SET role = ${TARGET}`, rule: ROLE },
  { sql: 'RESET ALL', rule: ROLE },
  { sql: 'DISCARD ALL', rule: ROLE, outsideTransaction: { undo: null } },
  { sql: `INSERT INTO ${PROBE} VALUES (10, 'ten'); SET ROLE ${TARGET}`, rule: ROLE, multi: true },

  // client_encoding and standard_conforming_strings stay what rolegate's byte layer assumes
  { sql: "SET client_encoding = 'SJIS'", rule: PINNED },
  { sql: "SET client_encoding TO 'LATIN1'", rule: PINNED },
  { sql: "SET SESSION client_encoding = 'SJIS'", rule: PINNED },
  { sql: "SET LOCAL client_encoding = 'SJIS'", rule: PINNED },
  { sql: "SET NAMES 'SJIS'", rule: PINNED },
  { sql: 'RESET client_encoding', rule: PINNED },
  { sql: 'SET client_encoding TO DEFAULT', rule: PINNED },
  { sql: "SELECT set_config('client_encoding', 'SJIS', false)", rule: PINNED },
  { sql: "SELECT set_config('CLIENT_ENCODING', 'SJIS', true)", rule: PINNED },
  { sql: "SELECT set_config('client_encoding', 'SJ' || 'IS', false)", rule: PINNED },
  { sql: `ALTER ROLE ${MAPPED} SET client_encoding = 'SJIS'`, rule: PINNED },
  { sql: `ALTER DATABASE ${DB} SET client_encoding = 'SJIS'`, rule: PINNED },
  { sql: "ALTER SYSTEM SET client_encoding = 'SJIS'", rule: PINNED, outsideTransaction: { undo: 'ALTER SYSTEM RESET client_encoding' } },
  { sql: "CREATE FUNCTION guards_evil_ce() RETURNS int LANGUAGE sql SET client_encoding = 'SJIS' AS 'SELECT 1'", rule: PINNED },
  { sql: 'SET standard_conforming_strings = off', rule: PINNED },
  { sql: 'SET LOCAL standard_conforming_strings TO off', rule: PINNED },
  { sql: 'RESET standard_conforming_strings', rule: PINNED },
  { sql: "SELECT set_config('standard_conforming_strings', 'off', false)", rule: PINNED },
  { sql: `ALTER ROLE ${MAPPED} SET standard_conforming_strings = off`, rule: PINNED },
  { sql: `ALTER DATABASE ${DB} SET standard_conforming_strings = off`, rule: PINNED },
  { sql: 'ALTER SYSTEM SET standard_conforming_strings = off', rule: PINNED, outsideTransaction: { undo: 'ALTER SYSTEM RESET standard_conforming_strings' } },
  { sql: 'CREATE FUNCTION guards_evil_scs() RETURNS int LANGUAGE sql SET standard_conforming_strings = off AS \'SELECT 1\'', rule: PINNED },
  // a write to pg_settings is a set_config() in disguise, whatever the name
  { sql: "UPDATE pg_settings SET setting = 'guards-evil' WHERE name = 'application_name'", rule: PINNED },
  { sql: "UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", rule: PINNED },
  { sql: "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'", rule: PINNED },

  // COPY … PROGRAM: a shell command on the database host
  { sql: `COPY ${PROBE} TO PROGRAM 'cat > @out@/program-table.txt'`, rule: 'guard:copy-program', writes: 'program-table.txt' },
  { sql: "COPY (SELECT 'x') TO PROGRAM 'cat > @out@/program-query.txt'", rule: 'guard:copy-program', writes: 'program-query.txt' },
  { sql: `copy ${PROBE} to program 'cat > @out@/program-csv.txt' with (format csv)`, rule: 'guard:copy-program', writes: 'program-csv.txt' },
  { sql: `COPY ${PROBE} (id) FROM PROGRAM 'echo 9'`, rule: 'guard:copy-program' },
  { sql: `COPY ${PROBE} FROM PROGRAM 'cat @in@/input.tsv' WITH (FORMAT text)`, rule: 'guard:copy-program' },
  { sql: `SELECT 1; COPY ${PROBE} TO PROGRAM 'cat > @out@/program-multi.txt'`, rule: 'guard:copy-program', multi: true, writes: 'program-multi.txt' },

  // COPY to or from a server file
  { sql: `COPY ${PROBE} TO '@out@/file-table.txt'`, rule: 'guard:copy-file', writes: 'file-table.txt' },
  { sql: "COPY (SELECT 'x') TO '@out@/file-query.txt'", rule: 'guard:copy-file', writes: 'file-query.txt' },
  { sql: `COPY ${PROBE} TO '@out@/file-binary' (FORMAT binary)`, rule: 'guard:copy-file', writes: 'file-binary' },
  { sql: `COPY ${PROBE} FROM '@in@/input.tsv'`, rule: 'guard:copy-file' },
  { sql: `COPY ${PROBE} (id) FROM '@in@/ids.txt' WITH (FORMAT text)`, rule: 'guard:copy-file' },

  // server-side large objects: files of the database host
  { sql: "SELECT lo_import('@in@/input.tsv')", rule: 'guard:large-objects' },
  { sql: "SELECT lo_import('@in@/input.tsv', 424242)", rule: 'guard:large-objects' },
  { sql: "SELECT pg_catalog.lo_import('@in@/input.tsv')", rule: 'guard:large-objects' },
  { sql: 'SELECT "lo_import"(\'@in@/input.tsv\')', rule: 'guard:large-objects' },
  { sql: "SELECT * FROM lo_import('@in@/input.tsv')", rule: 'guard:large-objects' },
  { sql: "SELECT lo_export(@loid@, '@out@/lo-export.bin')", rule: 'guard:large-objects', writes: 'lo-export.bin' },
  { sql: "SELECT pg_catalog.lo_export(@loid@, '@out@/lo-qualified.bin')", rule: 'guard:large-objects', writes: 'lo-qualified.bin' },
  { sql: "SELECT 1 WHERE lo_export(@loid@, '@out@/lo-where.bin') = 1", rule: 'guard:large-objects', writes: 'lo-where.bin' },

  // server files
  { sql: "SELECT pg_read_file('@in@/input.tsv')", rule: 'guard:server-files' },
  { sql: "SELECT pg_read_file('@in@/input.tsv', 0, 4)", rule: 'guard:server-files' },
  { sql: "SELECT pg_catalog.pg_read_file('@in@/input.tsv')", rule: 'guard:server-files' },
  { sql: 'SELECT "pg_read_file"(\'@in@/input.tsv\')', rule: 'guard:server-files' },
  { sql: "SELECT pg_read_binary_file('@in@/input.tsv')", rule: 'guard:server-files' },
  { sql: "SELECT pg_stat_file('@in@/input.tsv')", rule: 'guard:server-files' },
  { sql: "SELECT * FROM pg_ls_dir('@in@')", rule: 'guard:server-files' },
  { sql: 'SELECT * FROM pg_ls_waldir()', rule: 'guard:server-files' },
  { sql: 'SELECT * FROM pg_ls_logdir()', rule: 'guard:server-files', postgresRefuses: 'the test cluster has no log directory (logging_collector is off)' },
  { sql: 'SELECT * FROM pg_ls_tmpdir()', rule: 'guard:server-files' },
  { sql: 'SELECT * FROM pg_ls_archive_statusdir()', rule: 'guard:server-files' },
  { sql: "WITH f AS (SELECT pg_read_file('@in@/input.tsv') AS t) SELECT t FROM f", rule: 'guard:server-files' },
  { sql: "EXPLAIN ANALYZE SELECT pg_read_file('@in@/input.tsv')", rule: 'guard:server-files' },
  { sql: "SELECT pg_file_write('@out@/adminpack-write.txt', 'x', false)", rule: 'guard:server-files', needs: 'adminpack', writes: 'adminpack-write.txt' },
  { sql: "SELECT pg_file_rename('@in@/rename-me.txt', '@out@/renamed.txt')", rule: 'guard:server-files', needs: 'adminpack', writes: 'renamed.txt' },
  { sql: "SELECT pg_file_unlink('@in@/unlink-me.txt')", rule: 'guard:server-files', needs: 'adminpack' },
  { sql: "SELECT pg_file_sync('@in@/input.tsv')", rule: 'guard:server-files', needs: 'adminpack' },
  { sql: 'SELECT pg_logdir_ls()', rule: 'guard:server-files', needs: 'adminpack', postgresRefuses: 'the test cluster has no log directory (logging_collector is off)' },

  // remote connections: they log in elsewhere, as someone else, and run SQL rolegate never sees
  { sql: "SELECT dblink_connect('guards', '@connstr@')", rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: "SELECT dblink_connect_u('guards', '@connstr@')", rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: `SELECT * FROM dblink('@connstr@', 'DELETE FROM ${PROBE} RETURNING id') AS t(id int)`, rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: `SELECT dblink_exec('@connstr@', 'DELETE FROM ${PROBE}')`, rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: `SELECT public.dblink_exec('@connstr@', 'DELETE FROM ${PROBE}')`, rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: `SELECT "dblink_exec"('@connstr@', 'DELETE FROM ${PROBE}')`, rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: 'SELECT dblink_get_connections()', rule: 'guard:remote-connections', needs: 'dblink' },
  { sql: 'SELECT * FROM postgres_fdw_get_connections()', rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: 'SELECT postgres_fdw_disconnect_all()', rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: "SELECT postgres_fdw_disconnect('guards_srv')", rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: `CREATE SERVER guards_evil_srv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '${DB}')`, rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: "ALTER SERVER guards_srv OPTIONS (SET host 'evil.invalid')", rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: 'CREATE USER MAPPING FOR PUBLIC SERVER guards_srv', rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: `ALTER USER MAPPING FOR ${MAPPED} SERVER guards_srv OPTIONS (SET password 'changed')`, rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: `IMPORT FOREIGN SCHEMA public LIMIT TO (${PROBE}) FROM SERVER guards_srv INTO guards_import`, rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  { sql: `CREATE FOREIGN TABLE guards_evil_ft (id int) SERVER guards_srv OPTIONS (table_name '${PROBE}')`, rule: 'guard:remote-connections', needs: 'postgres_fdw' },
  // Repointing a foreign table (with file_fdw: OPTIONS (ADD program …) would run a command at the next SELECT).
  { sql: "ALTER FOREIGN TABLE guards_ft OPTIONS (SET table_name 'guards_elsewhere')", rule: 'guard:remote-connections', needs: 'postgres_fdw' },
];

/** What this cluster could install (set in before()). */
const extensions: Record<Extension, boolean> = { dblink: false, postgres_fdw: false, adminpack: false };
/** A large object MAPPED owns (lo_export reads it). */
let loid = 0;
let proxy: RunningProxy;
let auditFile = '';
let policyDir = '';

/**
 * A policy that allows everything: MAPPED for the service, every statement.
 * Only the guards stand between a client and PostgreSQL.
 */
const ALLOW_ALL_POLICY = `package rolegate

connect := {"allow": true, "role": "${MAPPED}", "database": null, "rule": "guards-test-connect", "reason": "the guards test maps ${SERVICE} to ${MAPPED}"} if {
\tinput.identity.name == "${SERVICE}"
}

statement := {"allow": true, "rule": "guards-test-allow-all", "reason": "the guards test allows every statement"}
`;

function connstr(): string {
  return `host=127.0.0.1 port=${testPostgres().port} dbname=${DB} user=${MAPPED} password=${MAPPED_PASSWORD} application_name=${DBLINK_APP}`;
}

/** The text with its placeholders filled in; `outDir` is where files go (OUT through rolegate, DIRECT straight to PostgreSQL). */
function resolve(sql: string, outDir = OUT): string {
  return sql.replaceAll('@out@', outDir).replaceAll('@in@', IN).replaceAll('@loid@', String(loid)).replaceAll('@connstr@', connstr());
}

/** The permissive proxy's config: the allow-all policy, MAPPED's upstream credentials, `extra` appended. */
function guardsConfig(extra: string, options: { workers?: number } = {}): string {
  const base = demoConfig({ withPolicy: true, workers: options.workers ?? 2, extra });
  const withRole = base.replace('roles:\n', `roles:\n  ${MAPPED}: { password: "${MAPPED_PASSWORD}" }\n`);
  assert.notEqual(withRole, base, 'the config has a roles: section');
  return withPolicyDir(withRole, policyDir);
}

async function dropEverything(): Promise<void> {
  await adminQuery(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  // ALTER SYSTEM cannot run in a transaction block (a multi-statement Query is one): one at a time.
  await adminQuery('ALTER SYSTEM RESET client_encoding');
  await adminQuery('ALTER SYSTEM RESET standard_conforming_strings');
  await adminQuery(`ALTER ROLE ALL RESET role`);
  await adminQuery(`DO $$ BEGIN
      IF EXISTS (SELECT FROM pg_roles WHERE rolname = '${MAPPED}') THEN DROP OWNED BY ${MAPPED}; END IF;
      IF EXISTS (SELECT FROM pg_roles WHERE rolname = '${TARGET}') THEN DROP OWNED BY ${TARGET}; END IF;
    END $$;
    DROP ROLE IF EXISTS ${MAPPED}; DROP ROLE IF EXISTS ${BRIDGE}; DROP ROLE IF EXISTS ${TARGET};`);
}

/** GRANT EXECUTE to MAPPED on every overload of these functions (they are revoked from PUBLIC by default). */
async function grantExecute(names: string[]): Promise<void> {
  await adminQuery(
    `DO $$ DECLARE f regprocedure; BEGIN
       FOR f IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.proname IN (${names.map((n) => `'${n}'`).join(', ')}) LOOP
         EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO ${MAPPED}', f);
       END LOOP;
     END $$`,
    DB,
  );
}

async function tryExtension(name: Extension, setup: string): Promise<void> {
  try {
    await adminQuery(`CREATE EXTENSION IF NOT EXISTS ${name}`, DB);
  } catch {
    return;
  }
  await adminQuery(setup, DB);
  extensions[name] = true;
}

function resetFiles(): void {
  for (const dir of [OUT, DIRECT, IN]) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    chmodSync(dir, 0o777);
  }
  for (const [name, body] of Object.entries(IN_FILES)) {
    writeFileSync(path.join(IN, name), body);
    chmodSync(path.join(IN, name), 0o666);
  }
}

async function resetProbe(): Promise<void> {
  await adminQuery(`TRUNCATE ${PROBE}; INSERT INTO ${PROBE} VALUES (1, 'one'), (2, 'two'), (3, 'three'); SELECT setval('${PROBE}_seq', 1, false);`, DB);
}

before(async () => {
  await ensureDemoDatabase();
  await dropEverything();
  await adminQuery(`CREATE ROLE ${TARGET} NOLOGIN; CREATE ROLE ${BRIDGE} NOLOGIN NOINHERIT;
    CREATE ROLE ${MAPPED} LOGIN PASSWORD '${MAPPED_PASSWORD}';
    GRANT ${TARGET} TO ${BRIDGE}; GRANT ${BRIDGE} TO ${MAPPED};
    GRANT pg_execute_server_program, pg_read_server_files, pg_write_server_files, pg_monitor TO ${MAPPED};
    GRANT ALTER SYSTEM ON PARAMETER client_encoding, standard_conforming_strings TO ${MAPPED};`);
  await adminQuery(`CREATE DATABASE ${DB} OWNER ${MAPPED}`);
  await adminQuery(
    `CREATE TABLE ${PROBE} (id int PRIMARY KEY, v text); CREATE SEQUENCE ${PROBE}_seq;
     ALTER TABLE ${PROBE} OWNER TO ${MAPPED}; ALTER SEQUENCE ${PROBE}_seq OWNER TO ${MAPPED};
     CREATE TABLE ${SECRET} (s text); INSERT INTO ${SECRET} VALUES ('the secret');
     REVOKE ALL ON ${SECRET} FROM PUBLIC; GRANT SELECT ON ${SECRET} TO ${TARGET};
     CREATE FUNCTION guards_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'; ALTER FUNCTION guards_fn() OWNER TO ${MAPPED};
     CREATE PROCEDURE guards_proc() LANGUAGE sql AS 'SELECT 1'; ALTER PROCEDURE guards_proc() OWNER TO ${MAPPED};`,
    DB,
  );
  await grantExecute(['lo_import', 'lo_export', 'pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'pg_ls_dir']);
  const created = await adminQuery<{ oid: number }>("SELECT lo_from_bytea(0, 'large object body') AS oid", DB);
  loid = Number(created[0]?.oid);
  await adminQuery(`ALTER LARGE OBJECT ${loid} OWNER TO ${MAPPED}`, DB);
  await tryExtension('dblink', `GRANT EXECUTE ON FUNCTION dblink_connect_u(text), dblink_connect_u(text, text) TO ${MAPPED}`);
  const { port } = testPostgres();
  await tryExtension(
    'postgres_fdw',
    `GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO ${MAPPED};
     CREATE SERVER guards_srv FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '${port}', dbname '${DB}', application_name '${FDW_APP}');
     ALTER SERVER guards_srv OWNER TO ${MAPPED};
     CREATE USER MAPPING FOR ${MAPPED} SERVER guards_srv OPTIONS (user '${MAPPED}', password '${MAPPED_PASSWORD}');
     CREATE SCHEMA guards_import AUTHORIZATION ${MAPPED};
     CREATE FOREIGN TABLE guards_ft (id int) SERVER guards_srv OPTIONS (table_name '${PROBE}');
     ALTER FOREIGN TABLE guards_ft OWNER TO ${MAPPED};`,
  );
  if (await adminQuery(`CREATE EXTENSION IF NOT EXISTS adminpack`, DB).then(() => true, () => false)) {
    await grantExecute(['pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync', 'pg_logdir_ls']);
    extensions.adminpack = true;
  }
  await resetProbe();
  resetFiles();
  policyDir = mkdtempSync('/tmp/rolegate-guards-policy-');
  writeFileSync(path.join(policyDir, 'rolegate.rego'), ALLOW_ALL_POLICY);
  auditFile = path.join(ROOT, 'audit.log');
  proxy = await startProxy(guardsConfig(`admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n`));
});

after(async () => {
  await proxy?.stop();
  await dropEverything();
  rmSync(ROOT, { recursive: true, force: true });
  if (policyDir !== '') rmSync(policyDir, { recursive: true, force: true });
});

/** A session through rolegate as the service (mapped to MAPPED by the allow-all policy). */
async function guardedSession(port: number, database = DB): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.login(SERVICE, DEMO_USERS[SERVICE], database);
  return c;
}

/** A session straight to PostgreSQL as MAPPED, as rolegate would log in (but without rolegate in between). */
async function directSession(): Promise<RawClient> {
  const c = await RawClient.connect(testPostgres().port);
  await c.login(MAPPED, MAPPED_PASSWORD, DB, { application_name: DIRECT_APP });
  return c;
}

function errorsOf(r: Reply): string {
  return JSON.stringify(r.errors.map((e) => `${e.get('C')} ${e.get('M')}`));
}

/** Until the direct session and whatever it connected to (dblink, postgres_fdw) have left the server. */
async function settle(): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name IN ('${DIRECT_APP}', '${DBLINK_APP}', '${FDW_APP}')`);
    if (rows[0]?.n === '0') return;
    assert.ok(Date.now() < deadline, 'the direct session and its remote connections did not go away');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The statement sent straight to PostgreSQL as MAPPED succeeds: PostgreSQL alone would let it run. */
async function assertPostgresAccepts(k: GuardCase): Promise<void> {
  const sql = resolve(k.sql, DIRECT);
  const c = await directSession();
  try {
    if (k.outsideTransaction === undefined) {
      assertOk(await simple(c, 'BEGIN'), 'T');
      const r = await simple(c, sql);
      assert.deepEqual(r.errors.length, 0, `straight to PostgreSQL, ${sql} failed: ${errorsOf(r)}`);
      assertOk(await simple(c, 'ROLLBACK'));
    } else {
      const r = await simple(c, sql);
      assert.deepEqual(r.errors.length, 0, `straight to PostgreSQL, ${sql} failed: ${errorsOf(r)}`);
      if (k.outsideTransaction.undo !== null) assertOk(await simple(c, k.outsideTransaction.undo));
    }
    if (k.writes !== undefined) assert.ok(statSync(path.join(DIRECT, k.writes)).isFile(), `straight to PostgreSQL, ${sql} wrote ${k.writes}`);
  } finally {
    c.end();
  }
}

/**
 * Everything an attempt could change in the database: the probe table and
 * sequence, large objects, stored role/database settings, postgresql.auto.conf,
 * functions, relations, foreign servers, user mappings, foreign tables, and
 * connections made by dblink.
 */
async function databaseState(): Promise<string> {
  const rows = await adminQuery<{ s: string }>(
    `SELECT concat_ws(E'\\n',
       'probe ' || (SELECT string_agg(id || '=' || coalesce(v, 'NULL'), ',' ORDER BY id) FROM ${PROBE}),
       (SELECT 'sequence ' || last_value || CASE WHEN is_called THEN '+' ELSE '' END FROM ${PROBE}_seq),
       (SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata),
       (SELECT 'stored settings ' || coalesce(string_agg(coalesce(d.datname, '*') || '/' || coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), '; ' ORDER BY 1), '')
          FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole),
       (SELECT 'auto.conf ' || coalesce(string_agg(name || '=' || setting, ',' ORDER BY name), '') FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'),
       (SELECT 'functions ' || string_agg(proname || '[' || coalesce(array_to_string(proconfig, ','), '') || ']' || md5(prosrc), ',' ORDER BY proname) FROM pg_proc WHERE proname LIKE 'guards%'),
       (SELECT 'relations ' || string_agg(relname || ':' || relkind::text, ',' ORDER BY relname) FROM pg_class WHERE relname LIKE 'guards%'),
       (SELECT 'servers ' || coalesce(string_agg(srvname || '[' || coalesce(array_to_string(srvoptions, ','), '') || ']', ',' ORDER BY srvname), '') FROM pg_foreign_server),
       (SELECT 'user mappings ' || coalesce(string_agg(coalesce(r.rolname, 'PUBLIC') || '[' || coalesce(array_to_string(m.umoptions, ','), '') || ']', ',' ORDER BY 1), '')
          FROM pg_user_mapping m LEFT JOIN pg_roles r ON r.oid = m.umuser),
       (SELECT 'foreign tables ' || count(*) FROM pg_foreign_table),
       (SELECT 'dblink connections ' || count(*) FROM pg_stat_activity WHERE application_name = '${DBLINK_APP}')) AS s`,
    DB,
  );
  return rows[0]?.s ?? '';
}

/** Who the session is and the parameters an attempt could change, read through the session itself (idle). */
async function sessionState(c: RawClient): Promise<string> {
  const r = await simple(
    c,
    "SELECT concat_ws(' | ', current_user, session_user, current_setting('role'), current_setting('client_encoding'), current_setting('standard_conforming_strings'), current_setting('application_name'), current_setting('search_path'), current_setting('work_mem'))",
  );
  assertOk(r, 'I', 'session state');
  return values(r)[0] ?? '';
}

/** Files in OUT (nothing may appear) and IN (nothing may go), with sizes. */
function filesState(): string {
  return [OUT, IN].map((dir) => `${path.basename(dir)}: ${readdirSync(dir).sort().map((f) => `${f}(${statSync(path.join(dir, f)).size})`).join(',')}`).join('; ');
}

interface Snapshot {
  database: string;
  session: string;
  files: string;
}

async function snapshot(c: RawClient): Promise<Snapshot> {
  return { database: await databaseState(), session: await sessionState(c), files: filesState() };
}

async function assertUnchanged(c: RawClient, before: Snapshot, label: string): Promise<void> {
  assert.equal(await databaseState(), before.database, `${label}: the database changed`);
  assert.equal(await sessionState(c), before.session, `${label}: the session changed (role or parameters)`);
  assert.equal(filesState(), before.files, `${label}: files were written or removed`);
}

/** A guard's refusal: 42501, the rule in the message and the detail, the session in `status`. */
function assertGuardDenial(r: Reply, rule: GuardRule, status: string, label: string): void {
  assertDenied(r, rule, status, label);
  const e = r.errors[0]!;
  assert.match(e.get('M') ?? '', new RegExp(`^permission denied by rolegate rule "${rule}": .+`), label);
  assert.match(e.get('D') ?? '', new RegExp(`^rule: ${rule}; policy revision: \\S+`), label);
}

describe('the database would accept each attempt (the test is meaningful)', () => {
  test('MAPPED reaches TARGET by SET ROLE only, inherits the server roles, owns its database', async () => {
    const rows = await adminQuery<{ member: boolean; inherits: boolean; secret: boolean; files: boolean; program: boolean; owner: string; alter_system: boolean }>(
      `SELECT pg_has_role('${MAPPED}', '${TARGET}', 'MEMBER') AS member, pg_has_role('${MAPPED}', '${TARGET}', 'USAGE') AS inherits,
         has_table_privilege('${MAPPED}', '${SECRET}', 'SELECT') AS secret,
         pg_has_role('${MAPPED}', 'pg_read_server_files', 'USAGE') AND pg_has_role('${MAPPED}', 'pg_write_server_files', 'USAGE') AS files,
         pg_has_role('${MAPPED}', 'pg_execute_server_program', 'USAGE') AS program,
         (SELECT datdba::regrole::text FROM pg_database WHERE datname = '${DB}') AS owner,
         has_parameter_privilege('${MAPPED}', 'client_encoding', 'ALTER SYSTEM') AS alter_system`,
      DB,
    );
    assert.deepEqual(rows[0], { member: true, inherits: false, secret: false, files: true, program: true, owner: MAPPED, alter_system: true });
  });

  test('straight to PostgreSQL, SET ROLE gives MAPPED the secret', async () => {
    const c = await directSession();
    try {
      assertOk(await simple(c, `SET ROLE ${TARGET}`));
      assert.deepEqual(values(await simple(c, `SELECT s FROM ${SECRET}`)), ['the secret']);
    } finally {
      c.end();
    }
  });

  test('the policy allows everything else (a DELETE, DDL) through rolegate', async () => {
    const c = await guardedSession(proxy.port);
    try {
      assertOk(await simple(c, `CREATE TABLE guards_policy_check (id int); DROP TABLE guards_policy_check; DELETE FROM ${PROBE} WHERE id = 0`));
    } finally {
      c.end();
      await resetProbe();
    }
  });
});

describe('every guarded form is refused, runs nothing, and the session goes on', () => {
  for (const k of CASES) {
    test(`${k.rule}: ${k.sql}`, async (t) => {
      if (k.needs !== undefined && !extensions[k.needs]) {
        t.skip(`the ${k.needs} extension cannot be created in this cluster`);
        return;
      }
      const label = k.sql;
      if (k.postgresRefuses === undefined) await assertPostgresAccepts(k);
      await settle();
      await resetProbe();
      resetFiles();
      const sql = resolve(k.sql);
      const c = await guardedSession(proxy.port);
      try {
        const pid = await backendPid(c);
        const before = await snapshot(c);

        // Simple protocol, outside a transaction: refused, the session stays idle.
        assertGuardDenial(await simple(c, sql), k.rule, 'I', label);
        await assertNeverReachedServer(pid, label);
        await assertUnchanged(c, before, label);

        // Inside a transaction: refused, the transaction is aborted (E), ROLLBACK ends it.
        assertOk(await simple(c, 'BEGIN'), 'T', label);
        assertGuardDenial(await simple(c, sql), k.rule, 'E', `${label} (in a transaction)`);
        await assertNeverReachedServer(pid, `${label} (in a transaction)`);
        const aborted = await simple(c, 'SELECT 1');
        assert.equal(aborted.errors[0]?.get('C'), '25P02', `${label}: the transaction is aborted, got ${aborted.types}`);
        assertOk(await simple(c, 'ROLLBACK'), 'I', label);
        await assertUnchanged(c, before, `${label} (after ROLLBACK)`);

        // Extended protocol: refused at Parse, never forwarded.
        if (k.multi !== true) {
          const r = await roundTrip(c, Buffer.concat([parse('', sql), bind('', ''), execute(), sync()]));
          assertGuardDenial(r, k.rule, 'I', `${label} (extended)`);
          assert.ok(!(await lastServerQuery(pid)).includes(sql), `${label} (extended): the server received the text`);
          await assertUnchanged(c, before, `${label} (extended)`);
        }
        await assertUsable(c);
      } finally {
        c.end();
      }
    });
  }

  test('set_config() with a parameter for the name (extended protocol) is refused at Parse', async () => {
    const c = await guardedSession(proxy.port);
    try {
      const pid = await backendPid(c);
      const before = await snapshot(c);
      const r = await roundTrip(c, Buffer.concat([parse('', 'SELECT set_config($1, $2, false)'), bind('', ''), execute(), sync()]));
      assertGuardDenial(r, ROLE, 'I', 'set_config($1, …)');
      assert.ok(!(await lastServerQuery(pid)).includes('set_config($1'), 'the server received the text');
      await assertUnchanged(c, before, 'set_config($1, …)');
    } finally {
      c.end();
    }
  });

  test('PREPARE … set_config(\'role\', …): refused when prepared, or when executed — the role never changes', async () => {
    const c = await guardedSession(proxy.port);
    try {
      const before = await snapshot(c);
      const prepared = await simple(c, `PREPARE guards_p AS SELECT set_config('role', '${TARGET}', false)`);
      if (prepared.errors.length > 0) assertGuardDenial(prepared, ROLE, 'I', 'PREPARE');
      else assertGuardDenial(await simple(c, 'EXECUTE guards_p'), ROLE, 'I', 'EXECUTE');
      await assertUnchanged(c, before, 'PREPARE/EXECUTE');
    } finally {
      c.end();
    }
  });

  test('pipelined: SET ROLE and the read of the secret behind it in one write — the read runs as MAPPED and is refused by PostgreSQL', async () => {
    const c = await guardedSession(proxy.port);
    try {
      c.write(Buffer.concat([message('Q', `SET ROLE ${TARGET}\0`), message('Q', `SELECT s FROM ${SECRET}\0`)]));
      const first = await c.readUntil('Z');
      assert.equal(errorFields(first.find((m) => m.type === 'E')!).get('C'), '42501');
      assert.match(errorFields(first.find((m) => m.type === 'E')!).get('M') ?? '', /rule "guard:role-change"/);
      const second = await c.readUntil('Z');
      assert.match(errorFields(second.find((m) => m.type === 'E')!).get('M') ?? '', /^permission denied for table/);
    } finally {
      c.end();
    }
  });
});

describe('legitimate twins still work through the guards', () => {
  test('SET application_name, SET search_path, set_config(\'application_name\', …), SHOW role / client_encoding / standard_conforming_strings', async () => {
    const c = await guardedSession(proxy.port);
    try {
      assertOk(await simple(c, "SET application_name = 'guards-twin'"));
      assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['guards-twin']);
      assertOk(await simple(c, 'SET search_path = public, pg_catalog'));
      assert.deepEqual(values(await simple(c, 'SHOW search_path')), ['public, pg_catalog']);
      assert.deepEqual(values(await simple(c, "SELECT set_config('application_name', 'via-set-config', false)")), ['via-set-config']);
      assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['via-set-config']);
      // The upstream login pins role=MAPPED, so SHOW role names it.
      assert.deepEqual(values(await simple(c, 'SHOW role')), [MAPPED]);
      assert.deepEqual(values(await simple(c, 'SHOW session_authorization')), [MAPPED]);
      assert.deepEqual(values(await simple(c, 'SHOW client_encoding')), ['UTF8']);
      assert.deepEqual(values(await simple(c, 'SHOW standard_conforming_strings')), ['on']);
      assert.deepEqual(values(await simple(c, "SELECT current_setting('client_encoding')")), ['UTF8']);
    } finally {
      c.end();
    }
  });

  test('setting a pinned parameter to its pinned value (what drivers send on connect) is allowed and changes nothing', async () => {
    const c = await guardedSession(proxy.port);
    try {
      for (const sql of ["SET client_encoding TO 'UTF8'", "SET NAMES 'utf8'", "SET client_encoding = 'unicode'", "SELECT set_config('client_encoding', 'UTF-8', false)", 'SET standard_conforming_strings = on']) {
        assertOk(await simple(c, sql), 'I', sql);
        assert.deepEqual(values(await simple(c, 'SHOW client_encoding')), ['UTF8'], sql);
        assert.deepEqual(values(await simple(c, 'SHOW standard_conforming_strings')), ['on'], sql);
      }
      await assertUsable(c);
    } finally {
      c.end();
    }
  });

  test('SET LOCAL work_mem inside a transaction, gone after COMMIT', async () => {
    const c = await guardedSession(proxy.port);
    try {
      const before = values(await simple(c, 'SHOW work_mem'))[0];
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, "SET LOCAL work_mem = '7MB'"), 'T');
      assert.deepEqual(values(await simple(c, 'SHOW work_mem')), ['7MB']);
      assertOk(await simple(c, 'COMMIT'));
      assert.deepEqual(values(await simple(c, 'SHOW work_mem')), [before]);
      assert.notEqual(before, '7MB');
    } finally {
      c.end();
    }
  });

  async function storedSettings(): Promise<string> {
    const rows = await adminQuery<{ c: string | null }>(`SELECT array_to_string(setconfig, ',') AS c FROM pg_db_role_setting WHERE setrole = '${MAPPED}'::regrole AND setdatabase = 0`);
    return rows[0]?.c ?? '';
  }

  test('ALTER ROLE <mapped> SET work_mem, then RESET work_mem', async () => {
    const c = await guardedSession(proxy.port);
    try {
      assertOk(await simple(c, `ALTER ROLE ${MAPPED} SET work_mem = '5MB'`));
      assert.equal(await storedSettings(), 'work_mem=5MB');
      assertOk(await simple(c, `ALTER ROLE ${MAPPED} RESET work_mem`));
      assert.equal(await storedSettings(), '');
    } finally {
      c.end();
      await adminQuery(`ALTER ROLE ${MAPPED} RESET ALL`);
    }
  });

  test('ALTER ROLE <mapped> RESET ALL removes stored defaults', async () => {
    await adminQuery(`ALTER ROLE ${MAPPED} SET work_mem = '2MB'`);
    const c = await guardedSession(proxy.port);
    try {
      assert.equal(await storedSettings(), 'work_mem=2MB');
      assertOk(await simple(c, `ALTER ROLE ${MAPPED} RESET ALL`));
      assert.equal(await storedSettings(), '');
    } finally {
      c.end();
      await adminQuery(`ALTER ROLE ${MAPPED} RESET ALL`);
    }
  });

  test('COPY … FROM STDIN and COPY … TO STDOUT', async () => {
    const c = await guardedSession(proxy.port);
    try {
      c.write(message('Q', `COPY ${PROBE} FROM STDIN\0`));
      assert.equal((await c.read())?.type, 'G');
      assertOk(await roundTrip(c, Buffer.concat([message('d', '10\tten\n'), message('c')])));
      const out = await simple(c, `COPY (SELECT v FROM ${PROBE} WHERE id = 10) TO STDOUT`);
      assertOk(out);
      assert.ok(out.types.startsWith('H'), out.types);
      assert.deepEqual(
        out.messages.filter((m) => m.type === 'd').map((m) => m.body.toString('utf8')),
        ['ten\n'],
      );
    } finally {
      c.end();
      await resetProbe();
    }
  });

  test('client-side large objects: lo_from_bytea, lo_get, lo_unlink', async () => {
    const c = await guardedSession(proxy.port);
    try {
      const oid = values(await simple(c, "SELECT lo_from_bytea(0, 'client side')"))[0];
      assert.match(oid ?? '', /^\d+$/);
      assert.deepEqual(values(await simple(c, `SELECT convert_from(lo_get(${oid}), 'UTF8')`)), ['client side']);
      assert.deepEqual(values(await simple(c, `SELECT lo_unlink(${oid})`)), ['1']);
    } finally {
      c.end();
    }
  });
});

describe('the upstream login pins the mapped role', () => {
  const plants: Array<[string, string]> = [
    [`ALTER ROLE ${MAPPED} SET role = ${TARGET}`, `ALTER ROLE ${MAPPED} RESET role`],
    [`ALTER ROLE ${MAPPED} IN DATABASE ${DB} SET role = ${TARGET}`, `ALTER ROLE ${MAPPED} IN DATABASE ${DB} RESET role`],
    [`ALTER DATABASE ${DB} SET role = ${TARGET}`, `ALTER DATABASE ${DB} RESET role`],
  ];
  for (const [plant, undo] of plants) {
    test(`planted outside rolegate: ${plant} — a new session is still MAPPED at its first query`, async () => {
      await adminQuery(plant);
      try {
        // Without rolegate the planted default takes effect at login.
        const d = await directSession();
        try {
          assert.deepEqual(values(await simple(d, "SELECT current_user || ' ' || session_user")), [`${TARGET} ${MAPPED}`], 'the plant works straight to PostgreSQL');
        } finally {
          d.end();
        }
        const c = await guardedSession(proxy.port);
        try {
          assert.deepEqual(values(await simple(c, "SELECT current_user || ' ' || session_user")), [`${MAPPED} ${MAPPED}`]);
          const read = await simple(c, `SELECT s FROM ${SECRET}`);
          assert.match(read.errors[0]?.get('M') ?? '', /^permission denied for table/, 'the secret stays unreadable');
        } finally {
          c.end();
        }
      } finally {
        await adminQuery(undo);
        await settle();
      }
    });
  }
});

describe('client_encoding and standard_conforming_strings', () => {
  /** The answer to a startup packet that must be refused before anything else. */
  async function startupRefusal(params: Record<string, string>): Promise<Map<string, string>> {
    const c = await RawClient.connect(proxy.port);
    try {
      c.write(startupPacket({ user: SERVICE, database: DB, ...params }));
      const m = await c.read();
      assert.equal(m?.type, 'E', `${JSON.stringify(params)}: expected an ErrorResponse, got ${m?.type ?? 'a closed connection'}`);
      assert.ok(await c.waitClosed(), `${JSON.stringify(params)}: the connection is closed`);
      return errorFields(m);
    } finally {
      c.end();
    }
  }

  for (const [params, name, asked] of [
    [{ client_encoding: 'SJIS' }, 'client_encoding', 'SJIS'],
    [{ client_encoding: 'LATIN1' }, 'client_encoding', 'LATIN1'],
    [{ options: '-c client_encoding=SJIS' }, 'client_encoding', 'SJIS'],
    [{ standard_conforming_strings: 'off' }, 'standard_conforming_strings', 'off'],
  ] as const) {
    test(`startup ${JSON.stringify(params)}: FATAL 22023 naming ${name}`, async () => {
      const e = await startupRefusal(params);
      assert.equal(e.get('S'), 'FATAL');
      assert.equal(e.get('C'), '22023');
      assert.match(e.get('M') ?? '', new RegExp(`^rolegate serves ${name} ${name === 'client_encoding' ? 'UTF8' : 'on'} only; the client asked for "${asked}"`));
      // What to do instead, in the detail field.
      assert.match(e.get('D') ?? '', /connect with client_encoding=UTF8/, `with advice; got ${JSON.stringify(Object.fromEntries(e))}`);
    });
  }

  for (const spelling of ['UTF8', 'utf-8', 'UNICODE', 'Utf_8']) {
    test(`startup client_encoding '${spelling}' is accepted; the session is UTF8`, async () => {
      const c = await RawClient.connect(proxy.port);
      try {
        const login = await c.login(SERVICE, DEMO_USERS[SERVICE], DB, { client_encoding: spelling, standard_conforming_strings: 'on' });
        const reported = login.filter((m) => m.type === 'S').map((m) => m.body.toString('utf8').split('\0'));
        assert.deepEqual(reported.find(([k]) => k === 'client_encoding')?.[1], 'UTF8');
        assert.deepEqual(values(await simple(c, 'SHOW client_encoding')), ['UTF8']);
      } finally {
        c.end();
      }
    });
  }

  test("SET client_encoding = 'SJIS' mid-session is refused and the session is not closed", async () => {
    const c = await guardedSession(proxy.port);
    try {
      const r = await simple(c, "SET client_encoding = 'SJIS'");
      assertGuardDenial(r, PINNED, 'I', 'SET client_encoding');
      assert.equal(c.closed, false);
      assert.deepEqual(values(await simple(c, "SELECT 'still here'")), ['still here']);
      assert.deepEqual(values(await simple(c, 'SHOW client_encoding')), ['UTF8']);
    } finally {
      c.end();
    }
  });
});

describe('audit, metrics and status', () => {
  interface AuditRecord {
    audit: string;
    sql?: string;
    rule: string | null;
    decision: string;
    outcome?: string;
  }

  async function adminBase(p: RunningProxy): Promise<string> {
    const line = await p.waitForLog((l) => l['msg'] === 'admin listening');
    return `http://127.0.0.1:${Number(line['port'])}`;
  }

  async function denials(base: string, rule: string): Promise<number> {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    let total = 0;
    for (const line of (await res.text()).split('\n')) {
      if (line.startsWith('rolegate_statement_denials_total{') && line.includes(`rule="${rule}"`)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return total;
  }

  async function waitFor<T>(probe: () => Promise<T | null> | T | null, what: string, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== null) return v;
      assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  test('a guard denial is audited (rule, decision deny, outcome not-run) and counted in rolegate_statement_denials_total', async () => {
    const base = await adminBase(proxy);
    const counted = await denials(base, ROLE);
    const sql = `SELECT set_config('role', '${TARGET}', false) AS audited_${process.pid}`;
    const c = await guardedSession(proxy.port);
    try {
      assertGuardDenial(await simple(c, sql), ROLE, 'I', sql);
    } finally {
      c.end();
    }
    const record = await waitFor(() => {
      let text = '';
      try {
        text = readFileSync(auditFile, 'utf8');
      } catch {
        return null;
      }
      const records = text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as AuditRecord);
      return records.find((r) => r.audit === 'statement' && r.sql === sql) ?? null;
    }, 'the audit record');
    assert.deepEqual([record.rule, record.decision, record.outcome], [ROLE, 'deny', 'not-run']);
    const now = await waitFor(async () => {
      const n = await denials(base, ROLE);
      return n > counted ? n : null;
    }, 'the denial metric');
    assert.equal(now, counted + 1);
  });

  test('/status shows no lifted guard by default', async () => {
    const res = await fetch(`${await adminBase(proxy)}/status`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { guards?: { allow?: unknown } };
    assert.deepEqual(body.guards, { allow: [] });
  });
});

describe('guards.allow: [copy_program] lifts that guard only', () => {
  let lifted: RunningProxy;
  before(async () => {
    lifted = await startProxy(guardsConfig('admin: { host: 127.0.0.1, port: 0 }\nguards:\n  allow: [copy_program]\n', { workers: 1 }));
  });
  after(async () => {
    await lifted?.stop();
  });

  test('the start logs the lifted guards; /status lists them', async () => {
    const line = await lifted.waitForLog((l) => String(l['msg']).startsWith('guards lifted'));
    assert.equal(line['level'], 40, 'a warning');
    const port = Number((await lifted.waitForLog((l) => l['msg'] === 'admin listening'))['port']);
    const res = await fetch(`http://127.0.0.1:${port}/status`);
    const body = (await res.json()) as { guards?: { allow?: unknown } };
    assert.deepEqual(body.guards, { allow: ['copy_program'] });
  });

  test('COPY … TO PROGRAM and FROM PROGRAM run; COPY to a server file and SET ROLE stay refused', async () => {
    resetFiles();
    await resetProbe();
    const c = await guardedSession(lifted.port);
    try {
      assertOk(await simple(c, `COPY (SELECT 'lifted') TO PROGRAM 'cat > ${OUT}/lifted.txt'`));
      assert.equal(readFileSync(path.join(OUT, 'lifted.txt'), 'utf8'), 'lifted\n');
      assertOk(await simple(c, `COPY ${PROBE} (id) FROM PROGRAM 'echo 11'`));
      assert.deepEqual(values(await simple(c, `SELECT count(*) FROM ${PROBE} WHERE id = 11`)), ['1']);

      const pid = await backendPid(c);
      assertGuardDenial(await simple(c, `COPY ${PROBE} TO '${OUT}/file.txt'`), 'guard:copy-file', 'I', 'copy-file with copy_program lifted');
      await assertNeverReachedServer(pid, 'copy-file');
      assert.deepEqual(readdirSync(OUT), ['lifted.txt']);
      assertGuardDenial(await simple(c, `SET ROLE ${TARGET}`), ROLE, 'I', 'SET ROLE with copy_program lifted');
      assertGuardDenial(await simple(c, "SELECT lo_import('" + IN + "/input.tsv')"), 'guard:large-objects', 'I', 'lo_import with copy_program lifted');
    } finally {
      c.end();
      resetFiles();
      await resetProbe();
    }
  });
});

describe('static mode (no policy: users map to roles) has the same guards', () => {
  let stat: RunningProxy;
  before(async () => {
    // Make the switch one PostgreSQL would allow app_reader (the static role of the service).
    await adminQuery(`GRANT ${TARGET} TO app_reader`);
    stat = await startProxy(demoConfig({ withPolicy: false, workers: 1 }));
  });
  after(async () => {
    await stat?.stop();
    await adminQuery(`REVOKE ${TARGET} FROM app_reader`);
  });

  test('SET ROLE and set_config(\'role\', …) are refused with guard:role-change; COPY TO PROGRAM with guard:copy-program', async () => {
    const c = await guardedSession(stat.port, 'app');
    try {
      const pid = await backendPid(c);
      assertGuardDenial(await simple(c, `SET ROLE ${TARGET}`), ROLE, 'I', 'static SET ROLE');
      await assertNeverReachedServer(pid, 'static SET ROLE');
      assertGuardDenial(await simple(c, `SELECT set_config('role', '${TARGET}', false)`), ROLE, 'I', 'static set_config');
      assertGuardDenial(await simple(c, `COPY (SELECT 1) TO PROGRAM 'cat > ${OUT}/static.txt'`), 'guard:copy-program', 'I', 'static COPY TO PROGRAM');
      assert.deepEqual(values(await simple(c, "SELECT current_user || ' ' || session_user")), ['app_reader app_reader']);
      assert.deepEqual(readdirSync(OUT), []);
      await assertUsable(c);
    } finally {
      c.end();
    }
  });
});
