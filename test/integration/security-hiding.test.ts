// Security class 1 (docs/security.md) — hiding statements. A write, DDL or code
// must not get past rolegate by hiding inside another statement, a comment, a
// string, a quoted or truncated name, a CTE, EXPLAIN ANALYZE, SELECT INTO,
// PREPARE/EXECUTE, a cursor, DO or CALL. The probe grants every role every
// privilege, so the database itself would allow each change: only rolegate
// stands in between. Each denial is checked on the server (the probe is
// unchanged and the last statement the backend saw is rolegate's stand-in) and
// for the session state afterwards; each shape also has a legitimate twin that
// must stay allowed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { demoConfig } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import {
  assertDenied,
  assertNeverReachedServer,
  assertOk,
  assertUsable,
  backendPid,
  editJson,
  policyCopy,
  Probe,
  proxyWithProbe,
  session,
  simple,
  values,
  withPolicyDir,
  type Kind,
} from '../helpers/security.ts';

const P = 'sec_hide_probe';
const probe = new Probe(P);
let proxy: RunningProxy;
proxyWithProbe(
  probe,
  (p) => (proxy = p),
  // A procedure that writes the probe: what CALL would run.
  () =>
    adminQuery(
      `CREATE OR REPLACE PROCEDURE ${P}_wipe() LANGUAGE sql AS $$ DELETE FROM ${P} $$;
       GRANT EXECUTE ON PROCEDURE ${P}_wipe() TO PUBLIC;`,
      'app',
    ).then(() => undefined),
);

/**
 * One denial, proven: 42501 naming `rule`, the server never saw the text, the
 * probe is unchanged, the session answers the next query.
 */
async function denied(kind: Kind, sql: string, rule: string | RegExp): Promise<void> {
  const c = await session(proxy.port, kind);
  try {
    const pid = await backendPid(c);
    const before = await probe.state();
    assertDenied(await simple(c, sql), rule, 'I', sql);
    await assertNeverReachedServer(pid, sql);
    await probe.assertUnchanged(before, sql);
    await assertUsable(c);
  } finally {
    c.end();
  }
}

/** The legitimate twin: allowed, and (being legitimate) changes nothing either. */
async function allowed(kind: Kind, sql: string, expected?: Array<string | null>): Promise<void> {
  const c = await session(proxy.port, kind);
  try {
    const before = await probe.state();
    const r = await simple(c, sql);
    assertOk(r, 'I', sql);
    if (expected !== undefined) assert.deepEqual(values(r), expected, sql);
    await probe.assertUnchanged(before, sql);
  } finally {
    c.end();
  }
}

describe('multi-statement Query messages', () => {
  const hidden = [
    `SELECT 1; DELETE FROM ${P}`,
    `SELECT 1;DELETE FROM ${P};`,
    `DELETE FROM ${P}; SELECT 1`,
    `SELECT 1;\n\n\tDELETE FROM ${P}\n`,
    `BEGIN; DELETE FROM ${P}; COMMIT`,
    `SELECT 1; SELECT 2; UPDATE ${P} SET v = 'x'; SELECT 3`,
    `SELECT 1;;; INSERT INTO ${P} VALUES (9, 'nine')`,
  ];
  for (const sql of hidden) test(`refused as a whole: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));

  test('nothing of a refused multi-statement Query runs, not even the allowed part before the denied one', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      const before = await probe.state();
      // The writer may UPDATE; DROP is DDL. The UPDATE must not run either.
      assertDenied(await simple(c, `UPDATE ${P} SET v = 'first'; DROP TABLE ${P}`), 'no-ddl-outside-admin');
      await probe.assertUnchanged(before);
    } finally {
      c.end();
    }
  });

  test('legitimate: several reads in one Query', () => allowed('reader', `SELECT 1; SELECT count(*) FROM ${P}; SELECT 'DELETE FROM ${P}'`, ['1', '3', `DELETE FROM ${P}`]));
});

describe('comments', () => {
  const hidden = [
    `SELECT 1 /* comment */ ; DELETE FROM ${P}`,
    `SELECT 1 -- comment\n; DELETE FROM ${P}`,
    `-- SELECT only\nDELETE FROM ${P}`,
    `/* /* nested */ still a comment */ DELETE FROM ${P}`,
    `SELECT 1 /* /* nested */ */ ; DELETE FROM ${P}`,
    `/* ' */ DELETE FROM ${P} /* ' */`,
    `/* $$ */ DELETE FROM ${P} /* $$ */`,
    `/* -- */ DELETE FROM ${P}`,
    `SELECT 1 /* " */ ; DELETE FROM ${P} /* " */`,
    `SELECT 1 /**/; DELETE/**/FROM/**/${P}`,
    `SELECT 1 --\r; DELETE FROM ${P}`,
  ];
  for (const sql of hidden) test(`a statement around comments is seen: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));

  const legitimate: Array<[string, string]> = [
    [`SELECT 'ok' /* DELETE FROM ${P} */`, 'ok'],
    [`SELECT 'ok' -- ; DELETE FROM ${P}`, 'ok'],
    [`SELECT 'ok' /* /* nested */ ; DELETE FROM ${P}; */`, 'ok'],
    [`SELECT 'ok' /* ' ; DELETE FROM ${P}; ' */`, 'ok'],
    [`SELECT 'ok' /* $$ ; DELETE FROM ${P}; $$ */`, 'ok'],
    [`/* DROP TABLE ${P}; */ SELECT 'ok'`, 'ok'],
  ];
  for (const [sql, value] of legitimate) test(`legitimate: a write inside a comment is just a comment: ${JSON.stringify(sql)}`, () => allowed('reader', sql, [value]));
});

describe('string literals and dollar quoting', () => {
  const hidden = [
    // standard_conforming_strings is pinned on: a backslash does not escape, the quote ends the string.
    `SELECT '\\'; DELETE FROM ${P}; --'`,
    // E'\\' is one backslash, then the quote ends the string.
    `SELECT E'\\\\'; DELETE FROM ${P}; --'`,
    `SELECT $a$ $b$ $a$; DELETE FROM ${P}; --`,
    `SELECT $$ a $$; DELETE FROM ${P}; SELECT $$ b $$`,
    `SELECT $x$ $X$ $x$; DELETE FROM ${P}`,
    `SELECT ''''; DELETE FROM ${P}; --'`,
    `SELECT U&'\\0027'; DELETE FROM ${P}; --'`,
  ];
  for (const sql of hidden) test(`a statement after a string is seen: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));

  const legitimate: Array<[string, string]> = [
    [`SELECT '; DELETE FROM ${P}'`, `; DELETE FROM ${P}`],
    [`SELECT '''; DELETE FROM ${P}; --'`, `'; DELETE FROM ${P}; --`],
    [`SELECT E'\\'; DELETE FROM ${P}; --'`, `'; DELETE FROM ${P}; --`],
    [`SELECT 'x\\''; DELETE FROM ${P}; --'`, `x\\'; DELETE FROM ${P}; --`],
    [`SELECT $$; DELETE FROM ${P}; $$`, `; DELETE FROM ${P}; `],
    [`SELECT $tag$ $$; DELETE FROM ${P}; $$ $tag$`, ` $$; DELETE FROM ${P}; $$ `],
    [`SELECT $_$'; DELETE FROM ${P}; --$_$`, `'; DELETE FROM ${P}; --`],
    [`SELECT U&'!0027; DELETE FROM ${P}; --' UESCAPE '!'`, `'; DELETE FROM ${P}; --`],
    [`SELECT U&'\\0027; DELETE FROM ${P}; --'`, `'; DELETE FROM ${P}; --`],
    [`SELECT 'a' \n 'b; DELETE FROM ${P}'`, `ab; DELETE FROM ${P}`],
  ];
  for (const [sql, value] of legitimate) test(`legitimate: SQL inside a string stays a string: ${JSON.stringify(sql)}`, () => allowed('reader', sql, [value]));
});

describe('identifiers: case folding, quoting, Unicode escapes, schema qualification', () => {
  const spellings = [
    `DELETE FROM ${P.toUpperCase()}`,
    `DELETE FROM "${P}"`,
    `DELETE FROM public.${P}`,
    `DELETE FROM "public"."${P}"`,
    `DELETE FROM app.public.${P}`,
    `DELETE FROM U&"\\0073ec_hide_probe"`,
    `DELETE FROM U&"!0073ec_hide_probe" UESCAPE '!'`,
    `DELETE FROM ONLY ${P}`,
    `DELETE FROM ${P} AS t WHERE t.id > 0`,
    `UPDATE ${P} SET v = 'x'`,
    `INSERT INTO ${P} VALUES (9, 'nine')`,
    `MERGE INTO ${P} t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE`,
    `TRUNCATE ${P}`,
  ];
  for (const sql of spellings) test(`a write by any spelling is a write: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));

  test('legitimate: reads by every spelling', async () => {
    for (const sql of [`SELECT count(*) FROM ${P.toUpperCase()}`, `SELECT count(*) FROM "public"."${P}"`, `SELECT count(*) FROM U&"\\0073ec_hide_probe"`, `TABLE ${P}`]) {
      await allowed('reader', sql);
    }
  });
});

describe('data-modifying CTEs', () => {
  const hidden = [
    `WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d`,
    `WITH d AS (DELETE FROM ${P} RETURNING *) SELECT 1`,
    `WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2), d AS (UPDATE ${P} SET v = 'x' RETURNING 1) SELECT * FROM r`,
    `SELECT * FROM (WITH d AS (DELETE FROM ${P} RETURNING id) SELECT id FROM d) s`,
    `SELECT * FROM ${P} WHERE id IN (WITH d AS (DELETE FROM ${P} RETURNING id) SELECT id FROM d)`,
    `SELECT (WITH d AS (DELETE FROM ${P} RETURNING id) SELECT count(*) FROM d)`,
    `WITH a AS (SELECT 1), b AS (WITH c AS (INSERT INTO ${P} VALUES (9, 'n') RETURNING 1) SELECT * FROM c) SELECT * FROM a, b`,
    `VALUES ((WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT 1))`,
    `SELECT 1 UNION ALL (WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT 1)`,
    `WITH m AS (MERGE INTO ${P} t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING t.id) SELECT 1`,
  ];
  for (const sql of hidden) test(`refused for a reader: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));

  test('INSERT … SELECT with a DELETE nested in a subquery: refused for a reader, and the writer’s DDL-free version runs', async () => {
    await denied('reader', `INSERT INTO ${P} SELECT id + 10, v FROM (WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d) s`, 'read-only-role');
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, `WITH d AS (UPDATE ${P} SET v = 'cte-write' WHERE id = 3 RETURNING id) SELECT * FROM d`));
    } finally {
      c.end();
      const rows = await adminQuery<{ v: string }>(`SELECT v FROM ${P} WHERE id = 3`, 'app');
      assert.equal(rows[0]?.v, 'cte-write');
      await probe.reset();
    }
  });

  test('legitimate: CTEs that only read', () => allowed('reader', `WITH a AS (SELECT id FROM ${P}), b AS (SELECT count(*) AS n FROM a) SELECT n FROM b`, ['3']));
  test('legitimate: a recursive CTE', () => allowed('reader', 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT sum(n) FROM r', ['6']));
});

describe('EXPLAIN', () => {
  const hidden = [
    `EXPLAIN ANALYZE DELETE FROM ${P}`,
    `EXPLAIN (ANALYZE) DELETE FROM ${P}`,
    `EXPLAIN (ANALYZE true, FORMAT JSON) DELETE FROM ${P}`,
    `EXPLAIN (ANALYZE on, BUFFERS on, FORMAT YAML) UPDATE ${P} SET v = 'x'`,
    `EXPLAIN (ANALYZE 1) INSERT INTO ${P} VALUES (9, 'n')`,
    `EXPLAIN (FORMAT XML, ANALYZE) WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT * FROM d`,
    `EXPLAIN ANALYZE SELECT * FROM (WITH d AS (DELETE FROM ${P} RETURNING id) SELECT id FROM d) s`,
    `EXPLAIN ANALYZE SELECT setval('${P}_seq', 42)`,
    `EXPLAIN ANALYZE SELECT nextval('${P}_seq')`,
    `EXPLAIN ANALYZE SELECT * FROM ${P} FOR UPDATE`,
    // Without ANALYZE nothing would run, but the facts cannot tell: refused too (fail closed).
    `EXPLAIN DELETE FROM ${P}`,
  ];
  for (const sql of hidden) test(`refused for a reader: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'read-only-role'));
  test('EXPLAIN ANALYZE CREATE TABLE AS is DDL', () => denied('reader', `EXPLAIN ANALYZE CREATE TABLE ${P}_evil AS SELECT 1`, 'no-ddl-outside-admin'));
  test('EXPLAIN ANALYZE SELECT INTO is DDL', () => denied('writer', `EXPLAIN ANALYZE SELECT 1 INTO ${P}_evil`, 'no-ddl-outside-admin'));

  test('legitimate: EXPLAIN without ANALYZE of a SELECT', () => allowed('reader', `EXPLAIN SELECT * FROM ${P}`));
  test('legitimate: EXPLAIN (FORMAT JSON) and EXPLAIN ANALYZE of a SELECT', async () => {
    await allowed('reader', `EXPLAIN (FORMAT JSON) SELECT * FROM ${P} WHERE id = 1`);
    await allowed('reader', `EXPLAIN (ANALYZE, COSTS off) SELECT count(*) FROM ${P}`);
  });
});

describe('SELECT INTO and CREATE TABLE AS', () => {
  const ddl = [
    `SELECT * INTO ${P}_evil FROM ${P}`,
    `SELECT * INTO TEMP ${P}_evil FROM ${P}`,
    `SELECT * INTO UNLOGGED ${P}_evil FROM ${P}`,
    `SELECT 1 AS a INTO TABLE public.${P}_evil`,
    `CREATE TABLE ${P}_evil AS SELECT * FROM ${P}`,
    `CREATE TEMP TABLE ${P}_evil AS SELECT 1`,
    `CREATE TABLE IF NOT EXISTS ${P}_evil AS TABLE ${P}`,
    `CREATE MATERIALIZED VIEW ${P}_evil AS SELECT 1`,
    `CREATE TABLE ${P}_evil AS WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d`,
  ];
  for (const sql of ddl) {
    test(`DDL for a reader: ${JSON.stringify(sql)}`, () => denied('reader', sql, /rolegate rule "(no-ddl-outside-admin|read-only-role)"/));
    test(`DDL for a writer too: ${JSON.stringify(sql)}`, () => denied('writer', sql, 'no-ddl-outside-admin'));
  }
  test('legitimate: the admin may CREATE TABLE AS', async () => {
    const c = await session(proxy.port, 'admin');
    try {
      assertOk(await simple(c, `CREATE TABLE ${P}_evil_admin AS SELECT 1 AS a`));
    } finally {
      c.end();
      await probe.dropCreated();
    }
  });
});

describe('PREPARE and EXECUTE', () => {
  test('PREPARE of a write is refused for a reader; EXECUTE of it is then unknown', async () => {
    await denied('reader', `PREPARE p AS DELETE FROM ${P}`, 'read-only-role');
    await denied('reader', `PREPARE p (int) AS UPDATE ${P} SET v = 'x' WHERE id = $1`, 'read-only-role');
    await denied('reader', `PREPARE p AS WITH d AS (DELETE FROM ${P} RETURNING 1) SELECT * FROM d`, 'read-only-role');
    await denied('reader', `PREPARE p AS SELECT setval('${P}_seq', 7)`, 'read-only-role');
    await denied('reader', 'EXECUTE p', 'unknown-prepared-statement');
  });

  test('EXECUTE of a name that was never prepared through rolegate is refused in every wrapping', async () => {
    for (const sql of ['EXECUTE never_prepared', 'EXECUTE never_prepared(1, 2)', 'EXPLAIN ANALYZE EXECUTE never_prepared', 'EXPLAIN EXECUTE never_prepared']) {
      await denied('reader', sql, 'unknown-prepared-statement');
    }
    await denied('admin', `CREATE TABLE ${P}_evil AS EXECUTE never_prepared`, 'unknown-prepared-statement');
  });

  test('EXECUTE is decided as what was prepared, also inside EXPLAIN ANALYZE and CREATE TABLE AS', async () => {
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, `PREPARE wipe AS DELETE FROM ${P} WHERE id = 99`));
      assertOk(await simple(c, 'EXECUTE wipe'), 'I', 'a writer may execute its own write');
      const pid = await backendPid(c);
      // The writer may not create tables: CREATE TABLE AS EXECUTE is DDL whatever was prepared.
      const before = await probe.state();
      assertDenied(await simple(c, `CREATE TABLE ${P}_evil AS EXECUTE wipe`), 'no-ddl-outside-admin');
      await assertNeverReachedServer(pid);
      await probe.assertUnchanged(before);
      // After DEALLOCATE the name is unknown again.
      assertOk(await simple(c, 'DEALLOCATE wipe'));
      assertDenied(await simple(c, 'EXECUTE wipe'), 'unknown-prepared-statement');
      assertOk(await simple(c, 'PREPARE wipe2 AS SELECT 1'));
      assertOk(await simple(c, 'DEALLOCATE ALL'));
      assertDenied(await simple(c, 'EXECUTE wipe2'), 'unknown-prepared-statement');
      await assertUsable(c);
    } finally {
      c.end();
    }
  });

  test('legitimate: a reader prepares and executes reads', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, `PREPARE q (int) AS SELECT v FROM ${P} WHERE id = $1`));
      const r = await simple(c, 'EXECUTE q(2)');
      assertOk(r);
      assert.deepEqual(values(r), ['two']);
      assertOk(await simple(c, 'EXPLAIN ANALYZE EXECUTE q(1)'));
    } finally {
      c.end();
    }
  });

  test('legitimate: PREPARE and EXECUTE of a read in one Query', async () => {
    await allowed('reader', 'PREPARE pe AS SELECT 1; EXECUTE pe', ['1']);
  });
});

describe('cursors', () => {
  test('DECLARE of a locking or data-modifying query is refused for a reader', async () => {
    await denied('reader', `DECLARE c CURSOR WITH HOLD FOR SELECT * FROM ${P} FOR UPDATE`, 'read-only-role');
    await denied('reader', `DECLARE c CURSOR WITH HOLD FOR WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d`, 'read-only-role');
    await denied('reader', `DECLARE c CURSOR WITH HOLD FOR SELECT setval('${P}_seq', 5)`, 'read-only-role');
  });

  test('PostgreSQL itself refuses DECLARE over a data-modifying CTE (rolegate refuses it first, above)', async () => {
    const err = await adminQuery(`BEGIN; DECLARE c CURSOR FOR WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d; ROLLBACK`, 'app').then(
      () => null,
      (e: unknown) => e as Error,
    );
    assert.match(err?.message ?? '', /DECLARE CURSOR must not contain data-modifying statements in WITH/);
  });

  test('a refused DECLARE inside a transaction aborts it; FETCH then fails and nothing ran', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      const before = await probe.state();
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertDenied(await simple(c, `DECLARE c CURSOR FOR SELECT * FROM ${P} FOR SHARE`), 'read-only-role', 'E');
      const fetch = await simple(c, 'FETCH 1 FROM c');
      assert.equal(fetch.types, 'EZ');
      assert.equal(fetch.errors[0]?.get('C'), '25P02', 'the transaction is aborted');
      const end = await simple(c, 'COMMIT');
      assertOk(end);
      assert.equal(end.messages.find((m) => m.type === 'C')?.body.toString('utf8').replace(/\0$/, ''), 'ROLLBACK');
      await probe.assertUnchanged(before);
    } finally {
      c.end();
    }
  });

  test('legitimate: DECLARE, FETCH, MOVE and CLOSE of a read-only cursor', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `DECLARE c SCROLL CURSOR FOR SELECT v FROM ${P} ORDER BY id`), 'T');
      assert.deepEqual(values(await simple(c, 'FETCH 2 FROM c')), ['one', 'two']);
      assertOk(await simple(c, 'MOVE ABSOLUTE 0 IN c'), 'T');
      assert.deepEqual(values(await simple(c, 'FETCH NEXT FROM c')), ['one']);
      assertOk(await simple(c, 'CLOSE c'), 'T');
      assertOk(await simple(c, 'COMMIT'));
      assertOk(await simple(c, `DECLARE h CURSOR WITH HOLD FOR SELECT id FROM ${P} ORDER BY id`));
      assert.deepEqual(values(await simple(c, 'FETCH ALL FROM h')), ['1', '2', '3']);
    } finally {
      c.end();
    }
  });
});

describe('DO, CALL and functions with side effects', () => {
  const code = [
    `DO $$ BEGIN DELETE FROM ${P}; END $$`,
    `DO LANGUAGE plpgsql $$ BEGIN EXECUTE 'DELETE FROM ${P}'; END $$`,
    `DO 'BEGIN DELETE FROM ${P}; END'`,
    `SELECT 1; DO $$ BEGIN DELETE FROM ${P}; END $$`,
  ];
  for (const sql of code) {
    test(`DO is admin-only code, for a reader: ${JSON.stringify(sql)}`, () => denied('reader', sql, 'no-code-outside-admin'));
    test(`… and for a writer: ${JSON.stringify(sql)}`, () => denied('writer', sql, 'no-code-outside-admin'));
  }
  test('CREATE FUNCTION / PROCEDURE, triggers and rules are refused outside admin', async () => {
    for (const kind of ['reader', 'writer'] as const) {
      await denied(kind, `CREATE FUNCTION ${P}_evil() RETURNS int LANGUAGE sql AS 'DELETE FROM ${P} RETURNING 1'`, 'no-code-outside-admin');
      await denied(kind, `CREATE OR REPLACE PROCEDURE ${P}_evil() LANGUAGE sql AS $$ DELETE FROM ${P} $$`, 'no-code-outside-admin');
      await denied(kind, `CREATE TRIGGER t BEFORE INSERT ON ${P} FOR EACH ROW EXECUTE FUNCTION ${P}_evil()`, 'no-ddl-outside-admin');
      await denied(kind, `CREATE RULE r AS ON INSERT TO ${P} DO ALSO DELETE FROM ${P}`, 'no-ddl-outside-admin');
      await denied(kind, `CREATE VIEW ${P}_evil AS SELECT * FROM ${P}`, 'no-ddl-outside-admin');
    }
  });
  test('CALL is a write: refused for a reader', async () => {
    await denied('reader', `CALL ${P}_wipe()`, 'read-only-role');
    await denied('reader', `CALL public.${P}_wipe()`, 'read-only-role');
  });
  test('sequence and NOTIFY functions are writes: refused for a reader', async () => {
    for (const sql of [`SELECT nextval('${P}_seq')`, `SELECT setval('${P}_seq', 100)`, `SELECT pg_catalog.setval('${P}_seq', 100, true)`, `SELECT id FROM ${P} WHERE id = nextval('${P}_seq')`, "SELECT pg_notify('chan', 'x')"]) {
      await denied('reader', sql, 'read-only-role');
    }
  });
  test('legitimate: a writer may CALL and use sequences; a reader reads currval-free sequence state', async () => {
    await allowed('reader', `SELECT last_value FROM ${P}_seq`, ['1']);
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, `SELECT nextval('${P}_seq')`));
      assertOk(await simple(c, `CALL ${P}_wipe()`));
    } finally {
      c.end();
      await probe.reset();
    }
  });
});

describe('COPY', () => {
  test('COPY (DELETE … RETURNING) TO STDOUT is a write', async () => {
    await denied('reader', `COPY (DELETE FROM ${P} RETURNING *) TO STDOUT`, 'read-only-role');
    await denied('reader', `COPY (UPDATE ${P} SET v = 'x' RETURNING id) TO STDOUT WITH (FORMAT csv)`, 'read-only-role');
    await denied('reader', `COPY (WITH d AS (DELETE FROM ${P} RETURNING *) SELECT * FROM d) TO STDOUT`, 'read-only-role');
    await denied('reader', `COPY ${P} FROM STDIN`, 'read-only-role');
  });
  test('legitimate: COPY … TO STDOUT of a table and a query', async () => {
    for (const sql of [`COPY ${P} TO STDOUT`, `COPY (SELECT id FROM ${P} WHERE id < 3) TO STDOUT WITH (FORMAT csv, HEADER)`]) {
      const c = await session(proxy.port, 'reader');
      try {
        const r = await simple(c, sql);
        assertOk(r, 'I', sql);
        assert.ok(r.types.startsWith('H'), `${sql}: CopyOutResponse, got ${r.types}`);
      } finally {
        c.end();
      }
    }
  });
});

describe('63-byte identifier truncation', () => {
  // PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1) without
  // splitting a character; rolegate must name the table PostgreSQL will use.
  const name63 = 'sec_hide_protected_' + 'x'.repeat(63 - 'sec_hide_protected_'.length);
  const multibyte = 'sec_hide_é_' + 'y'.repeat(63 - Buffer.byteLength('sec_hide_é_') - 1) + 'é';
  const multibyteKept = multibyte.slice(0, -1);
  let custom: RunningProxy;

  before(async () => {
    assert.equal(Buffer.byteLength(name63), 63);
    for (const table of [name63, multibyteKept]) {
      await adminQuery(`CREATE TABLE IF NOT EXISTS ${table} (id int); GRANT ALL ON ${table} TO PUBLIC; TRUNCATE ${table}; INSERT INTO ${table} VALUES (1)`, 'app');
    }
    // A policy copy that protects the 63-byte name from writes, for every role.
    const dir = policyCopy();
    editJson(`${dir}/catalog/data.json`, (catalog: { protected_tables: Record<string, unknown> }) => {
      catalog.protected_tables[name63] = { rule: 'protected-table', reason: 'the test protects this table' };
      catalog.protected_tables[multibyteKept] = { rule: 'protected-table', reason: 'the test protects this table' };
    });
    custom = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 1 }), dir));
  });
  after(async () => {
    await custom?.stop();
    await adminQuery(`DROP TABLE IF EXISTS ${name63}; DROP TABLE IF EXISTS ${multibyteKept}`, 'app');
  });

  test('a longer name that PostgreSQL truncates onto the protected one is the protected one', async () => {
    const c = await session(custom.port, 'writer');
    try {
      const pid = await backendPid(c);
      for (const longer of [name63 + 'suffix', name63 + '_and_much_more_text_that_is_cut_off', `"${name63}ZZZ"`, `public.${name63}tail`]) {
        assertDenied(await simple(c, `DELETE FROM ${longer}`), 'protected-table', 'I', longer);
        assertDenied(await simple(c, `INSERT INTO ${longer} VALUES (2)`), 'protected-table', 'I', longer);
        await assertNeverReachedServer(pid, longer);
      }
      // The same table by its exact name, for comparison.
      assertDenied(await simple(c, `UPDATE ${name63} SET id = 3`), 'protected-table');
      // Reading it is fine, under any spelling PostgreSQL truncates to it.
      const r = await simple(c, `SELECT count(*) FROM ${name63}_read_through_a_longer_name`);
      assertOk(r);
      assert.deepEqual(values(r), ['1']);
    } finally {
      c.end();
    }
    const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM ${name63}`, 'app');
    assert.equal(rows[0]?.n, '1');
  });

  test('truncation never splits a multi-byte character (PostgreSQL and rolegate cut at the same place)', async () => {
    // 62 bytes + 'é' (2 bytes) = 64: PostgreSQL keeps 62 bytes, not half an 'é'.
    assert.equal(Buffer.byteLength(multibyte), 64);
    const c = await session(custom.port, 'writer');
    try {
      const pid = await backendPid(c);
      assertDenied(await simple(c, `DELETE FROM ${multibyte}`), 'protected-table');
      assertDenied(await simple(c, `UPDATE "${multibyte}" SET id = 5`), 'protected-table');
      await assertNeverReachedServer(pid);
      // The server agrees on the cut: the 62-byte name is the table it reads.
      const r = await simple(c, `SELECT count(*) FROM ${multibyte}`);
      assertOk(r);
      assert.deepEqual(values(r), ['1']);
      const named = await simple(c, `SELECT 1 AS ${multibyte}`);
      const head = named.messages.find((m) => m.type === 'T');
      assert.ok(head);
      assert.equal(head.body.toString('utf8', 2, head.body.indexOf(0, 2)), multibyteKept, 'PostgreSQL kept 62 bytes');
    } finally {
      c.end();
    }
    const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM ${multibyteKept}`, 'app');
    assert.equal(rows[0]?.n, '1');
  });
});

describe('search_path', () => {
  test('legitimate: SET search_path is a session command; it unlocks nothing', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      const before = await probe.state();
      assertOk(await simple(c, 'SET search_path = pg_temp, public'));
      // Shadowing a function needs CREATE FUNCTION: admin-only.
      assertDenied(await simple(c, `CREATE FUNCTION pg_temp.lower(text) RETURNS text LANGUAGE sql AS 'SELECT 1::text'`), 'no-code-outside-admin');
      assertDenied(await simple(c, `DELETE FROM ${P}`), 'read-only-role');
      assertOk(await simple(c, 'RESET search_path'));
      await probe.assertUnchanged(before);
    } finally {
      c.end();
    }
  });
});
