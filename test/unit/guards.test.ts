// rolegate's own guards: which statements the real parser's facts mark as
// guarded (sql/guarded-effects.ts), the denial each gets (decision/guards.ts),
// and that guards.allow lifts only the side door it names. The end-to-end
// proof against a real PostgreSQL is test/integration/guards.test.ts.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { Guards } from '../../src/decision/guards.ts';
import { PROXY_RULES } from '../../src/decision/proxy-rules.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { GUARDED_EFFECTS, isUtf8Name, type GuardedEffect } from '../../src/sql/guarded-effects.ts';
import { initParser, parseStatements } from '../../src/sql/parser.ts';

before(async () => {
  await initParser();
});

/** The guarded effects of each statement of `sql` (the text must parse). */
function effects(sql: string): GuardedEffect[][] {
  const parsed = parseStatements(sql);
  if (!parsed.ok) assert.fail(`${JSON.stringify(sql)} did not parse: ${parsed.message}`);
  return parsed.statements.map((s) => [...s.meta.guarded]);
}

function only(sql: string): GuardedEffect[] {
  const all = effects(sql);
  assert.equal(all.length, 1, sql);
  return all[0] as GuardedEffect[];
}

const GUARDED: Array<[string, GuardedEffect]> = [
  ['SET ROLE other', 'role_change'],
  ['SET SESSION ROLE other', 'role_change'],
  ['SET LOCAL ROLE other', 'role_change'],
  ['SET "ROLE" TO other', 'role_change'],
  ['SET role TO DEFAULT', 'role_change'],
  ['RESET ROLE', 'role_change'],
  ['SET ROLE NONE', 'role_change'],
  ['SET SESSION AUTHORIZATION other', 'role_change'],
  ['SET SESSION AUTHORIZATION DEFAULT', 'role_change'],
  ['RESET SESSION AUTHORIZATION', 'role_change'],
  ['RESET ALL', 'role_change'],
  ['DISCARD ALL', 'role_change'],
  ["SELECT set_config('role', 'other', false)", 'role_change'],
  ["SELECT pg_catalog.set_config('ROLE', 'other', true)", 'role_change'],
  ["SELECT set_config(E'r\\x6fle', 'other', false)", 'role_change'],
  ["SELECT set_config('session_authorization', 'other', false)", 'role_change'],
  // A name no parser can read may be the role.
  ["SELECT set_config(name, 'x', false) FROM (VALUES ('role')) v(name)", 'role_change'],
  ['SELECT set_config($1, $2, false)', 'role_change'],
  // A second set_config hides behind a harmless first one.
  ["SELECT set_config('application_name', 'a', false), set_config('role', 'other', false)", 'role_change'],
  ['ALTER ROLE app SET role = other', 'role_change'],
  ['ALTER ROLE app IN DATABASE d SET role TO other', 'role_change'],
  ['ALTER USER app SET session_authorization = other', 'role_change'],
  ['ALTER DATABASE d SET role = other', 'role_change'],
  ['CREATE FUNCTION f() RETURNS int LANGUAGE sql SET role = other AS $$SELECT 1$$', 'role_change'],
  ['ALTER FUNCTION f() SET role = other', 'role_change'],
  ["PREPARE p AS SELECT set_config('role', 'other', false)", 'role_change'],
  ["DECLARE c CURSOR FOR SELECT set_config('role', 'other', false)", 'role_change'],
  ["SET client_encoding = 'SJIS'", 'pinned_parameter'],
  ["SET NAMES 'SJIS'", 'pinned_parameter'],
  ["SET LOCAL client_encoding TO 'BIG5'", 'pinned_parameter'],
  ['RESET client_encoding', 'pinned_parameter'],
  ['SET client_encoding TO DEFAULT', 'pinned_parameter'],
  ['SET standard_conforming_strings = off', 'pinned_parameter'],
  ['SET standard_conforming_strings TO 0', 'pinned_parameter'],
  ['RESET standard_conforming_strings', 'pinned_parameter'],
  ["SELECT set_config('standard_conforming_strings', 'off', false)", 'pinned_parameter'],
  ["SELECT set_config('client_encoding', 'LATIN1', false)", 'pinned_parameter'],
  ["UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", 'pinned_parameter'],
  ["UPDATE pg_catalog.pg_settings SET setting = '1MB' WHERE name = 'work_mem'", 'pinned_parameter'],
  ["ALTER ROLE app SET client_encoding = 'SJIS'", 'pinned_parameter'],
  ['ALTER DATABASE d SET standard_conforming_strings = off', 'pinned_parameter'],
  ["ALTER SYSTEM SET client_encoding = 'SJIS'", 'pinned_parameter'],
  ["COPY t FROM PROGRAM 'id'", 'copy_program'],
  ["COPY (SELECT 1) TO PROGRAM 'cat > /tmp/x'", 'copy_program'],
  ["COPY t FROM '/etc/passwd'", 'copy_file'],
  ["COPY t TO '/tmp/out.csv' (FORMAT csv)", 'copy_file'],
  ["SELECT lo_import('/etc/passwd')", 'large_objects'],
  ["SELECT lo_export(16384, '/tmp/x')", 'large_objects'],
  ["SELECT pg_read_file('/etc/passwd')", 'server_files'],
  ["SELECT pg_catalog.pg_read_binary_file('postgresql.conf')", 'server_files'],
  ["SELECT * FROM pg_ls_dir('.')", 'server_files'],
  ['SELECT * FROM pg_ls_waldir()', 'server_files'],
  ["SELECT pg_stat_file('PG_VERSION')", 'server_files'],
  ["SELECT pg_file_write('x', 'y', false)", 'server_files'],
  ["SELECT dblink_connect('host=10.0.0.1')", 'remote_connections'],
  ["SELECT * FROM ext.dblink('dbname=x', 'SELECT 1') AS t(a int)", 'remote_connections'],
  ["SELECT dblink_exec('dbname=x', 'DROP TABLE t')", 'remote_connections'],
  ['SELECT postgres_fdw_disconnect_all()', 'remote_connections'],
  ['CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw', 'remote_connections'],
  ["ALTER SERVER s OPTIONS (SET host 'elsewhere')", 'remote_connections'],
  ["CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (user 'x')", 'remote_connections'],
  ['IMPORT FOREIGN SCHEMA public FROM SERVER s INTO local', 'remote_connections'],
  ["CREATE FOREIGN TABLE ft (a text) SERVER files OPTIONS (filename '/etc/passwd')", 'remote_connections'],
  ["ALTER FOREIGN TABLE ft OPTIONS (SET filename '/etc/shadow')", 'remote_connections'],
];

const TWINS: string[] = [
  'SET application_name = app',
  'SET search_path TO app, public',
  "SET LOCAL work_mem = '8MB'",
  'SET TIME ZONE UTC',
  "SELECT set_config('application_name', 'x', false)",
  'SHOW role',
  'SHOW client_encoding',
  "SELECT current_setting('role')",
  'SELECT current_user, session_user',
  'RESET search_path',
  'DISCARD PLANS',
  'DISCARD TEMP',
  'ALTER ROLE app RESET ALL',
  "ALTER ROLE app SET work_mem = '8MB'",
  'COPY t FROM STDIN',
  'COPY (SELECT 1) TO STDOUT',
  "SELECT lo_from_bytea(0, 'x'), lo_get(16384)",
  'SELECT * FROM pg_settings',
  // Setting a pinned parameter to its pinned value changes nothing (libpq's PQsetClientEncoding, Rails).
  "SET client_encoding TO 'UTF8'",
  "SET NAMES 'utf8'",
  "SET client_encoding = 'unicode'",
  'SET standard_conforming_strings = on',
  "SELECT set_config('client_encoding', 'UTF-8', false)",
];

describe('guarded effects of real parse trees', () => {
  for (const [sql, effect] of GUARDED) {
    test(`${sql} → ${effect}`, () => {
      assert.deepEqual(only(sql), [effect]);
    });
  }
  for (const sql of TWINS) {
    test(`${sql} → nothing guarded`, () => {
      assert.deepEqual(only(sql), []);
    });
  }

  test('each statement of a text has its own effects', () => {
    assert.deepEqual(effects("SELECT 1; SET ROLE x; COPY t TO PROGRAM 'y'"), [[], ['role_change'], ['copy_program']]);
  });

  test('one statement can touch several guards, listed in guard order', () => {
    assert.deepEqual(only("SELECT pg_read_file('/x'), set_config('role', 'y', false), lo_import('/z')"), ['role_change', 'large_objects', 'server_files']);
  });

  test('statements that share a literal-free shape keep their own effects (the value of a pinned setting is read)', () => {
    const cache = new FactsCache(100);
    for (const [sql, expected] of [
      ["SET client_encoding = 'UTF8'", []],
      ["SET client_encoding = 'SJIS'", ['pinned_parameter']],
      ["SET client_encoding = 'utf8'", []],
      ["SET client_encoding = 'BIG5'", ['pinned_parameter']],
    ] as const) {
      const parsed = cache.get(sql);
      assert.ok(parsed.ok);
      assert.deepEqual([...(parsed.statements[0]?.meta.guarded ?? ['?'])], expected, sql);
    }
  });

  test('UTF8 under the spellings PostgreSQL accepts', () => {
    for (const name of ['UTF8', 'utf8', 'UTF-8', 'utf_8', 'Unicode']) assert.equal(isUtf8Name(name), true, name);
    for (const name of ['SJIS', 'SQL_ASCII', 'LATIN1', 'utf16', '']) assert.equal(isUtf8Name(name), false, name);
  });
});

describe('Guards: denials and guards.allow', () => {
  const sample: Record<GuardedEffect, string> = {
    role_change: 'SET ROLE x',
    pinned_parameter: "SET client_encoding = 'SJIS'",
    copy_program: "COPY t TO PROGRAM 'x'",
    copy_file: "COPY t TO '/x'",
    large_objects: "SELECT lo_import('/x')",
    server_files: "SELECT pg_read_file('/x')",
    remote_connections: "SELECT dblink_connect('x')",
  };

  function decide(guards: Guards, sql: string): ReturnType<Guards['check']> {
    const parsed = parseStatements(sql);
    assert.ok(parsed.ok);
    const stmt = parsed.statements[0];
    assert.ok(stmt !== undefined);
    return guards.check(stmt);
  }

  test('every guard refuses with its own rule id, SQLSTATE 42501 and the command in the message', () => {
    const guards = new Guards();
    for (const effect of GUARDED_EFFECTS) {
      const denial = decide(guards, sample[effect]);
      assert.ok(denial !== null, effect);
      assert.equal(denial.rule, `guard:${effect.replaceAll('_', '-')}`);
      assert.ok(denial.rule in PROXY_RULES, denial.rule);
      assert.equal(denial.sqlstate, '42501');
      assert.match(denial.message, new RegExp(`^permission denied by rolegate rule "${denial.rule}": `));
    }
    assert.match(decide(guards, 'SET ROLE x')?.reason ?? '', /^SET ROLE could change or reset who the session is/);
  });

  test('guards.allow lifts exactly the named side door', () => {
    const guards = new Guards(['copy_program', 'server_files']);
    assert.equal(decide(guards, sample.copy_program), null);
    assert.equal(decide(guards, sample.server_files), null);
    assert.equal(decide(guards, sample.copy_file)?.rule, 'guard:copy-file');
    assert.equal(decide(guards, sample.role_change)?.rule, 'guard:role-change');
    assert.deepEqual(guards.allowed, ['copy_program', 'server_files']);
  });

  test('a statement with a lifted and a held guard is refused by the held one', () => {
    const guards = new Guards(['server_files']);
    const parsed = parseStatements("SELECT pg_read_file('/x'), lo_import('/y')");
    assert.ok(parsed.ok);
    const stmt = parsed.statements[0];
    assert.ok(stmt !== undefined);
    assert.equal(guards.check(stmt)?.rule, 'guard:large-objects');
  });
});
