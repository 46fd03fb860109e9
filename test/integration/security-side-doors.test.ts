// Security class 4 (docs/security.md) — side doors: the FunctionCall message,
// COPY … PROGRAM and server-side files, large objects, dblink, pg_read_file &
// co., and functions that run SQL handed to them as a string. All denied by
// default, for every role, admin included. The database is made permissive for
// the duration (the demo roles get pg_read_server_files, pg_write_server_files,
// pg_execute_server_program, EXECUTE on lo_import/lo_export, and dblink is
// installed), so each of these would really work without rolegate.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { demoConfig, ensureDemoDatabase, ROLE_PASSWORDS } from '../helpers/fixture.ts';
import { adminQuery, testPostgres } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { bind, execute, message, parse, sync } from '../helpers/raw-client.ts';
import {
  assertDenied,
  assertNeverReachedServer,
  assertOk,
  assertUsable,
  backendPid,
  editJson,
  policyCopy,
  Probe,
  reply,
  roundTrip,
  session,
  simple,
  values,
  withPolicyDir,
  type Kind,
} from '../helpers/security.ts';

const P = 'sec_side_probe';
const probe = new Probe(P);
const MARKER = path.join(tmpdir(), `rolegate-side-door-${process.pid}`);
const KINDS = ['reader', 'writer', 'admin'] as const satisfies readonly Kind[];
const ROLES = 'app_reader, app_writer, app_admin';
let proxy: RunningProxy;
/** A large object the admin created, and a connection string a dblink call could use. */
let loid = 0;
let connstr = '';

before(async () => {
  await ensureDemoDatabase();
  await probe.create();
  await adminQuery(`GRANT pg_read_server_files, pg_write_server_files, pg_execute_server_program TO ${ROLES}`);
  await adminQuery(
    `GRANT EXECUTE ON FUNCTION lo_import(text), lo_import(text, oid), lo_export(oid, text) TO PUBLIC;
     CREATE EXTENSION IF NOT EXISTS dblink;`,
    'app',
  );
  const created = await adminQuery<{ oid: number }>("SELECT lo_from_bytea(0, 'large object body') AS oid", 'app');
  loid = Number(created[0]?.oid);
  await adminQuery(`GRANT SELECT, UPDATE ON LARGE OBJECT ${loid} TO PUBLIC`, 'app');
  const { port } = testPostgres();
  connstr = `host=127.0.0.1 port=${port} dbname=app user=app_admin password=${ROLE_PASSWORDS['app_admin']}`;
  proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2 }));
});
after(async () => {
  await proxy?.stop();
  await adminQuery(`REVOKE pg_read_server_files, pg_write_server_files, pg_execute_server_program FROM ${ROLES}`);
  await adminQuery(`SELECT lo_unlink(${loid}); DROP EXTENSION IF EXISTS dblink; REVOKE EXECUTE ON FUNCTION lo_import(text), lo_import(text, oid), lo_export(oid, text) FROM PUBLIC;`, 'app');
});

async function largeObjectBody(): Promise<string> {
  const rows = await adminQuery<{ body: string }>(`SELECT convert_from(lo_get(${loid}), 'UTF8') AS body`, 'app');
  return rows[0]?.body ?? '';
}

/** Denied with `rule`, never reached the server, the probe, marker file and large object unchanged. */
async function denied(kind: Kind, sql: string, rule: string): Promise<void> {
  const c = await session(proxy.port, kind);
  try {
    const pid = await backendPid(c);
    const before = await probe.state();
    assertDenied(await simple(c, sql), rule, 'I', `${kind}: ${sql}`);
    await assertNeverReachedServer(pid, sql);
    await probe.assertUnchanged(before, sql);
    assert.equal(existsSync(MARKER), false, `${sql}: ${MARKER} was written`);
    assert.equal(await largeObjectBody(), 'large object body', sql);
    await assertUsable(c);
  } finally {
    c.end();
  }
}

function deniedForAll(sqls: string[], rule: string): void {
  for (const sql of sqls) {
    for (const kind of KINDS) test(`${kind}: ${sql}`, () => denied(kind, sql, rule));
  }
}

const FUNCTION_CALL_REFUSED = /the FunctionCall protocol message is not allowed/;

/** FunctionCall ('F'): function OID, text-format arguments, text result. */
function functionCall(oid: number, args: string[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4 + 2 + 2 + 2);
  head.writeInt32BE(oid, 0);
  head.writeInt16BE(1, 4); // one format code for all arguments
  head.writeInt16BE(0, 6); // text
  head.writeInt16BE(args.length, 8);
  parts.push(head);
  for (const a of args) {
    const len = Buffer.alloc(4);
    len.writeInt32BE(Buffer.byteLength(a));
    parts.push(len, Buffer.from(a));
  }
  parts.push(Buffer.from([0, 0])); // text result
  return message('F', Buffer.concat(parts));
}

async function functionOid(signature: string): Promise<number> {
  const rows = await adminQuery<{ oid: number }>(`SELECT '${signature}'::regprocedure::oid AS oid`, 'app');
  return Number(rows[0]?.oid);
}

describe('the FunctionCall message', () => {
  const calls: Array<[string, string[]]> = [
    ['setval(regclass,bigint)', [`${P}_seq`, '99']],
    ['lo_create(oid)', ['0']],
    ['lo_import(text)', ['/etc/hostname']],
    ['lo_put(oid,bigint,bytea)', ['0', '0', '\\x00']],
    ['lo_unlink(oid)', ['0']],
    ['set_config(text,text,boolean)', ['role', 'app_admin', 'false']],
    ['pg_read_file(text)', ['/etc/hostname']],
    ['int4pl(integer,integer)', ['1', '2']],
  ];
  for (const kind of KINDS) {
    for (const [fn, args] of calls) {
      test(`${kind}: F ${fn} is refused, nothing runs, the session goes on`, async () => {
        const oid = await functionOid(fn);
        const realArgs = fn.startsWith('lo_put') || fn.startsWith('lo_unlink') ? [String(loid), ...args.slice(1)] : args;
        const c = await session(proxy.port, kind);
        try {
          const pid = await backendPid(c);
          const before = await probe.state();
          const r = await roundTrip(c, functionCall(oid, realArgs));
          assertDenied(r, FUNCTION_CALL_REFUSED, 'I', fn);
          assert.match(r.errors[0]?.get('D') ?? '', /rule: function-call-message/);
          await assertNeverReachedServer(pid, fn);
          await probe.assertUnchanged(before, fn);
          assert.equal(await largeObjectBody(), 'large object body');
          await assertUsable(c);
        } finally {
          c.end();
        }
      });
    }
  }

  test('inside a transaction the refusal aborts it: COMMIT rolls back', async () => {
    const oid = await functionOid('int4pl(integer,integer)');
    const c = await session(proxy.port, 'writer');
    try {
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `UPDATE ${P} SET v = 'before-F' WHERE id = 1`), 'T');
      assertDenied(await roundTrip(c, functionCall(oid, ['1', '2'])), FUNCTION_CALL_REFUSED, 'E');
      const end = await simple(c, 'COMMIT');
      assert.equal(end.messages.find((m) => m.type === 'C')?.body.toString('utf8').replace(/\0$/, ''), 'ROLLBACK');
    } finally {
      c.end();
    }
    const rows = await adminQuery<{ v: string }>(`SELECT v FROM ${P} WHERE id = 1`, 'app');
    assert.equal(rows[0]?.v, 'one');
  });

  test('several FunctionCalls pipelined: one refusal each, in order', async () => {
    const oid = await functionOid('int4pl(integer,integer)');
    const c = await session(proxy.port, 'reader');
    try {
      c.write(Buffer.concat([functionCall(oid, ['1', '2']), functionCall(oid, ['3', '4']), message('Q', "SELECT 'after'\0")]));
      for (let i = 0; i < 2; i++) assertDenied(reply(await c.readUntil('Z')), FUNCTION_CALL_REFUSED);
      const last = reply(await c.readUntil('Z'));
      assert.deepEqual(values(last), ['after']);
    } finally {
      c.end();
    }
  });
});

describe('COPY … PROGRAM and server-side files', () => {
  deniedForAll(
    [
      `COPY ${P} TO PROGRAM 'touch ${MARKER}'`,
      `COPY ${P} FROM PROGRAM 'echo 9'`,
      `COPY (SELECT 1) TO PROGRAM 'touch ${MARKER}'`,
      `copy ${P} to program 'touch ${MARKER}' with (format csv)`,
      `COPY ${P} (id) FROM PROGRAM 'echo 9' WITH (FORMAT text)`,
      `SELECT 1; COPY ${P} TO PROGRAM 'touch ${MARKER}'`,
    ],
    'guard:copy-program',
  );
  deniedForAll(
    [
      `COPY ${P} TO '${MARKER}'`,
      `COPY (SELECT 'x') TO '${MARKER}'`,
      `COPY ${P} FROM '/etc/hostname'`,
      `COPY ${P} (v) FROM '/etc/hostname' WITH (FORMAT text)`,
      `COPY ${P} TO '${MARKER}' (FORMAT binary)`,
    ],
    'guard:copy-file',
  );

  test('legitimate: COPY … TO STDOUT for a reader, COPY … FROM STDIN for a writer', async () => {
    const reader = await session(proxy.port, 'reader');
    try {
      const r = await simple(reader, `COPY ${P} TO STDOUT`);
      assertOk(r);
      assert.ok(r.types.startsWith('H'));
    } finally {
      reader.end();
    }
    const writer = await session(proxy.port, 'writer');
    try {
      writer.write(message('Q', `COPY ${P} FROM STDIN\0`));
      const g = await writer.read();
      assert.equal(g?.type, 'G');
      const r = await roundTrip(writer, Buffer.concat([message('d', '10\tten\n'), message('c')]));
      assertOk(r);
    } finally {
      writer.end();
      await probe.reset();
    }
  });
});

describe('large objects', () => {
  // Server-side file import/export: rolegate's guard; the rest: the shipped policy's denied lo_ prefix.
  const fileCalls = (oid: number): string[] => [
    "SELECT lo_import('/etc/hostname')",
    "SELECT pg_catalog.lo_import('/etc/hostname')",
    "SELECT \"lo_import\"('/etc/hostname')",
    "SELECT \"pg_catalog\".\"lo_import\"('/etc/hostname', 0)",
    "SELECT * FROM lo_import('/etc/hostname')",
    `SELECT lo_export(${oid}, '${MARKER}')`,
  ];
  const calls = (oid: number): string[] => [
    'SELECT lo_create(0)',
    'SELECT lo_creat(-1)',
    "SELECT lo_from_bytea(0, 'x')",
    `SELECT lo_put(${oid}, 0, 'XXXXX')`,
    `SELECT lo_get(${oid})`,
    `SELECT lo_unlink(${oid})`,
    `SELECT lo_truncate(lo_open(${oid}, 131072), 0)`,
    `SELECT lowrite(lo_open(${oid}, 131072), 'XXXXX')`,
    `SELECT loread(lo_open(${oid}, 262144), 10)`,
    `WITH x AS (SELECT lo_unlink(${oid})) SELECT * FROM x`,
    `SELECT 1 WHERE EXISTS (SELECT lo_unlink(${oid}))`,
    `PREPARE lo AS SELECT lo_unlink($1)`,
  ];
  // The OID is known only once before() ran: generate the tests lazily through one test per kind.
  for (const kind of KINDS) {
    test(`${kind}: every large-object function is denied`, async () => {
      for (const sql of fileCalls(loid)) await denied(kind, sql, 'guard:large-objects');
      for (const sql of calls(loid)) await denied(kind, sql, 'denied-function');
    });
  }
  test('legitimate: reading pg_largeobject_metadata and a column named like a function', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, 'SELECT count(*) FROM pg_largeobject_metadata'));
      assert.deepEqual(values(await simple(c, "SELECT 'lo_import' AS lo_import")), ['lo_import']);
    } finally {
      c.end();
    }
  });
});

describe('dblink', () => {
  for (const kind of KINDS) {
    test(`${kind}: dblink, dblink_exec, dblink_connect are denied (they would run as app_admin)`, async () => {
      for (const sql of [
        `SELECT * FROM dblink('${connstr}', 'DELETE FROM ${P} RETURNING 1') AS t(x int)`,
        `SELECT dblink_exec('${connstr}', 'DELETE FROM ${P}')`,
        `SELECT public.dblink_exec('${connstr}', 'TRUNCATE ${P}')`,
        `SELECT dblink_connect('c', '${connstr}')`,
        `SELECT dblink_connect_u('c', '${connstr}')`,
        `SELECT "dblink_exec"('${connstr}', 'DELETE FROM ${P}')`,
      ]) {
        await denied(kind, sql, 'guard:remote-connections');
      }
    });
  }
});

describe('server files: pg_read_file & co.', () => {
  deniedForAll(
    [
      "SELECT pg_read_file('/etc/hostname')",
      "SELECT pg_catalog.pg_read_file('/etc/hostname', 0, 10)",
      "SELECT \"pg_read_file\"('/etc/hostname')",
      "SELECT \"pg_catalog\".\"pg_read_binary_file\"('/etc/hostname')",
      "SELECT * FROM pg_ls_dir('.')",
      'SELECT pg_ls_waldir()',
      'SELECT pg_ls_logdir()',
      'SELECT pg_ls_tmpdir()',
      "SELECT pg_stat_file('postgresql.conf')",
      "SELECT (SELECT pg_read_file('/etc/hostname'))",
      "WITH f AS (SELECT pg_read_file('/etc/hostname') AS t) SELECT t FROM f",
      "EXPLAIN ANALYZE SELECT pg_read_file('/etc/hostname')",
      'PREPARE rf (text) AS SELECT pg_read_file($1)',
      "VALUES (pg_read_file('/etc/hostname'))",
      "SELECT 1; SELECT pg_read_file('/etc/hostname')",
      "SELECT pg_file_write('x', 'y', false)",
    ],
    'guard:server-files',
  );
  test('admin: a DEFAULT that reads a server file is denied too', () => denied('admin', `CREATE TABLE ${P}_evil (t text DEFAULT pg_read_file('/etc/hostname'))`, 'guard:server-files'));
});

describe('functions that run SQL given as a string', () => {
  deniedForAll(
    [
      `SELECT query_to_xml('DELETE FROM ${P} RETURNING 1', true, false, '')`,
      `SELECT pg_catalog.query_to_xml('SELECT * FROM ${P}', true, false, '')`,
      `SELECT query_to_xmlschema('SELECT 1', true, false, '')`,
      `SELECT query_to_xml_and_xmlschema('SELECT 1', true, false, '')`,
      `SELECT ts_stat('SELECT to_tsvector(v) FROM ${P}')`,
      `SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, v::tsquery FROM ${P}')`,
      `SELECT table_to_xml('${P}', true, false, '')`,
      `SELECT table_to_xmlschema('${P}', true, false, '')`,
      "SELECT schema_to_xml('public', true, false, '')",
      "SELECT database_to_xml(true, false, '')",
    ],
    'denied-function',
  );

  test('legitimate: xpath and XML functions that run no SQL; cursor_to_xml of a cursor rolegate saw declared', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assert.deepEqual(values(await simple(c, "SELECT (xpath('/a/text()', '<a>pg_read_file</a>'::xml))[1]::text")), ['pg_read_file']);
      assertOk(await simple(c, 'BEGIN'), 'T');
      assertOk(await simple(c, `DECLARE c CURSOR FOR SELECT id FROM ${P} ORDER BY id`), 'T');
      assertOk(await simple(c, "SELECT cursor_to_xml('c', 1, false, false, '')"), 'T');
      assertOk(await simple(c, 'COMMIT'));
      assert.deepEqual(values(await simple(c, "SELECT 'SELECT pg_read_file(''/etc/passwd'')' AS s")), ["SELECT pg_read_file('/etc/passwd')"]);
    } finally {
      c.end();
    }
  });
});

describe('known limit: function bodies are opaque — deny such functions by name', () => {
  const fn = `${P}_exec`;
  let custom: RunningProxy;
  before(async () => {
    // Created by the DBA outside rolegate: runs whatever SQL it is given.
    await adminQuery(`CREATE OR REPLACE FUNCTION ${fn}(q text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; END $$; GRANT EXECUTE ON FUNCTION ${fn}(text) TO PUBLIC;`, 'app');
    const dir = policyCopy();
    editJson(`${dir}/catalog/data.json`, (catalog: { denied_functions: Record<string, string> }) => {
      catalog.denied_functions[fn] = 'runs SQL given as a string';
    });
    custom = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 1 }), dir));
  });
  after(async () => {
    await custom?.stop();
    await probe.reset();
  });

  test('with the shipped policy the call is a plain SELECT and its body runs (documented in docs/security.md)', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assertOk(await simple(c, `SELECT ${fn}('DELETE FROM ${P} WHERE id = 3')`));
    } finally {
      c.end();
    }
    const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM ${P}`, 'app');
    assert.equal(rows[0]?.n, '2', 'the opaque body ran');
    await probe.reset();
  });

  test('listed in data.catalog.denied_functions it is refused, however it is called', async () => {
    const c = await session(custom.port, 'reader');
    try {
      const pid = await backendPid(c);
      const before = await probe.state();
      for (const sql of [`SELECT ${fn}('DELETE FROM ${P}')`, `SELECT public.${fn}('DELETE FROM ${P}')`, `SELECT * FROM "${fn}"('DELETE FROM ${P}')`]) {
        assertDenied(await simple(c, sql), 'denied-function', 'I', sql);
        await assertNeverReachedServer(pid, sql);
      }
      // Extended protocol too.
      const r = await roundTrip(c, Buffer.concat([parse('', `SELECT ${fn}($1)`), bind('', ''), execute(), sync()]));
      assertDenied(r, 'denied-function');
      await probe.assertUnchanged(before);
    } finally {
      c.end();
    }
  });
});
