// Security class 2 (docs/security.md) — parser differentials. rolegate's parser
// reads SQL as UTF-8 with standard_conforming_strings on; the server must read
// the same bytes the same way. Both settings are pinned at upstream login,
// every way to change them is refused, a change reported by the server ends the
// session, and text that is not valid UTF-8 (or holds NUL) never reaches the
// server.
//
// The attack strings are real: under SJIS, BIG5 or GBK a lead byte swallows the
// following backslash (0x5c), so `E'ぁ\'; DELETE …; --'` — one SELECT in UTF-8 —
// is a SELECT and a DELETE. The tests check that with the server (convert_from)
// and then check that the encoding can never be switched to make it so.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { DEMO_USERS } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import type { RunningProxy } from '../helpers/proxy.ts';
import { bind, errorFields, execute, message, query, RawClient, startupPacket, sync, type Message } from '../helpers/raw-client.ts';
import {
  assertDenied,
  assertNeverReachedServer,
  assertOk,
  assertUsable,
  backendPid,
  Probe,
  proxyWithProbe,
  reply,
  roundTrip,
  session,
  simple,
  values,
  type Kind,
} from '../helpers/security.ts';

const P = 'sec_diff_probe';
const probe = new Probe(P);
let proxy: RunningProxy;
proxyWithProbe(probe, (p) => (proxy = p));

function parameterStatuses(messages: Message[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of messages) {
    if (m.type !== 'S') continue;
    const [name, value] = m.body.toString('utf8').split('\0');
    out.set(name ?? '', value ?? '');
  }
  return out;
}

async function assertPinned(c: RawClient): Promise<void> {
  const r = await simple(c, "SELECT current_setting('client_encoding'), current_setting('standard_conforming_strings')");
  assertOk(r);
  const row = r.messages.find((m) => m.type === 'D');
  assert.ok(row);
  const first = row.body.readInt32BE(2);
  assert.equal(row.body.toString('utf8', 6, 6 + first), 'UTF8');
  assert.equal(row.body.toString('utf8', 6 + first + 4), 'on');
}

/** The SQL in a Parse message with arbitrary bytes as its text. */
function rawParse(name: string, text: Buffer): Buffer {
  return message('P', Buffer.concat([Buffer.from(`${name}\0`), text, Buffer.from([0, 0, 0])]));
}

describe('the pinned settings', () => {
  test('a client asking for SJIS or standard_conforming_strings=off in its startup packet is refused (22023), never silently given UTF8', async () => {
    const asked: Array<Record<string, string>> = [{ client_encoding: 'SJIS' }, { client_encoding: 'BIG5' }, { standard_conforming_strings: 'off' }, { client_encoding: 'SJIS', standard_conforming_strings: 'off' }];
    for (const params of asked) {
      const c = await RawClient.connect(proxy.port);
      c.write(startupPacket({ user: 'reporting-svc', database: 'app', ...params }));
      const m = await c.read();
      assert.equal(m?.type, 'E', JSON.stringify(params));
      assert.equal(errorFields(m).get('S'), 'FATAL');
      assert.equal(errorFields(m).get('C'), '22023', JSON.stringify(params));
      assert.match(errorFields(m).get('M') ?? '', /^rolegate serves (client_encoding UTF8|standard_conforming_strings on) only; the client asked for "/, JSON.stringify(params));
      assert.ok(await c.waitClosed(), JSON.stringify(params));
    }
  });

  test('a client asking for UTF8 (any spelling) and standard_conforming_strings=on gets them; the attack string stays a SELECT', async () => {
    const c = await RawClient.connect(proxy.port);
    try {
      const login = await c.login('reporting-svc', DEMO_USERS['reporting-svc'], 'app', { client_encoding: 'utf-8', standard_conforming_strings: 'on' });
      const status = parameterStatuses(login);
      assert.equal(status.get('client_encoding'), 'UTF8');
      assert.equal(status.get('standard_conforming_strings'), 'on');
      assert.equal(status.get('server_encoding'), 'UTF8');
      await assertPinned(c);
      const before = await probe.state();
      const r = await simple(c, `SELECT E'ぁ\\'; DELETE FROM ${P}; --'`);
      assertOk(r);
      assert.deepEqual(values(r), [`ぁ'; DELETE FROM ${P}; --`]);
      await probe.assertUnchanged(before);
    } finally {
      c.end();
    }
  });

  test('startup options that set either to another value are refused before authentication; -c client_encoding=UTF8 is harmless', async () => {
    for (const options of ['-c client_encoding=SJIS', '--client-encoding=BIG5', '-c standard_conforming_strings=off', '--standard_conforming_strings=off', '-c rolegate.role=app_reader -c client_encoding=GBK']) {
      const c = await RawClient.connect(proxy.port);
      c.write(startupPacket({ user: 'reporting-svc', database: 'app', options }));
      const m = await c.read();
      assert.equal(m?.type, 'E', options);
      assert.equal(errorFields(m).get('C'), '22023', options);
      assert.match(errorFields(m).get('M') ?? '', /^rolegate serves /, options);
      assert.ok(await c.waitClosed(), options);
    }
    const c = await RawClient.connect(proxy.port);
    try {
      await c.login('reporting-svc', DEMO_USERS['reporting-svc'], 'app', { options: '-c client_encoding=UTF8' });
      await assertPinned(c);
    } finally {
      c.end();
    }
  });

  test('ALTER ROLE / ALTER DATABASE … SET made outside rolegate cannot unpin them', async () => {
    try {
      await adminQuery("ALTER ROLE app_reader SET client_encoding = 'SJIS'; ALTER DATABASE app SET standard_conforming_strings = off");
      const c = await session(proxy.port, 'reader');
      try {
        await assertPinned(c);
      } finally {
        c.end();
      }
    } finally {
      await adminQuery('ALTER ROLE app_reader RESET client_encoding; ALTER DATABASE app RESET standard_conforming_strings');
    }
  });
});

describe('every way to change them is refused (admin included)', () => {
  const attempts: Array<[string, string]> = [
    ["SET client_encoding = 'SJIS'", 'guard:pinned-parameter'],
    ["SET client_encoding TO 'BIG5'", 'guard:pinned-parameter'],
    ['SET client_encoding TO DEFAULT', 'guard:pinned-parameter'],
    ["SET SESSION client_encoding = 'GBK'", 'guard:pinned-parameter'],
    ["SET NAMES 'SJIS'", 'guard:pinned-parameter'],
    ['SET NAMES DEFAULT', 'guard:pinned-parameter'],
    ["SET \"client_encoding\" = 'SJIS'", 'guard:pinned-parameter'],
    ["SET CLIENT_ENCODING = 'SJIS'", 'guard:pinned-parameter'],
    ["SET U&\"client\\005fencoding\" = 'SJIS'", 'guard:pinned-parameter'],
    ['RESET client_encoding', 'guard:pinned-parameter'],
    ['SET standard_conforming_strings = off', 'guard:pinned-parameter'],
    ['SET standard_conforming_strings TO DEFAULT', 'guard:pinned-parameter'],
    ['SET SESSION standard_conforming_strings TO false', 'guard:pinned-parameter'],
    ["SET standard_conforming_strings = 'off'", 'guard:pinned-parameter'],
    ['RESET standard_conforming_strings', 'guard:pinned-parameter'],
    ["SELECT set_config('client_encoding', 'SJIS', false)", 'guard:pinned-parameter'],
    ["SELECT pg_catalog.set_config('client_encoding', 'SJIS', false)", 'guard:pinned-parameter'],
    ["SELECT \"pg_catalog\".\"set_config\"('Client_Encoding', 'BIG5', false)", 'guard:pinned-parameter'],
    ["SELECT set_config(E'client\\x5fencoding', 'SJIS', false)", 'guard:pinned-parameter'],
    ["SELECT set_config(U&'client\\005fencoding', 'SJIS', false)", 'guard:pinned-parameter'],
    ["SELECT set_config('standard_conforming_strings', 'off', false)", 'guard:pinned-parameter'],
    ["SELECT * FROM set_config('standard_conforming_strings', 'off', false)", 'guard:pinned-parameter'],
    ["SELECT 1 WHERE set_config('client_encoding', 'GBK', true) IS NOT NULL", 'guard:pinned-parameter'],
    ["SELECT set_config('client_encoding', v, false) FROM (VALUES ('SJIS')) s(v)", 'guard:pinned-parameter'],
    ["SELECT set_config('client_' || 'encoding', 'SJIS', false)", 'guard:role-change'],
    ["SELECT set_config(name, 'SJIS', false) FROM pg_settings WHERE name = 'client_encoding'", 'guard:role-change'],
    ["SELECT set_config(setting_name => 'client_encoding', new_value => 'SJIS', is_local => false)", 'guard:role-change'],
    // A name no parser can read could be role: refused by the role guard. Regression: a harmless first set_config() used to hide the second one.
    ["SELECT set_config('application_name', 'x', false), set_config('client_encoding', 'SJIS', false)", 'guard:pinned-parameter'],
    ["SELECT set_config('search_path', 'public', true), set_config('standard_conforming_strings', 'off', true)", 'guard:pinned-parameter'],
    ["SELECT set_config('application_name', 'x', false) FROM (SELECT set_config('client_encoding', 'SJIS', false)) s", 'guard:pinned-parameter'],
    ["UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'", 'guard:pinned-parameter'],
    ["UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", 'guard:pinned-parameter'],
    ["WITH u AS (UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding' RETURNING 1) SELECT * FROM u", 'guard:pinned-parameter'],
    ["ALTER ROLE app_reader SET client_encoding = 'SJIS'", 'guard:pinned-parameter'],
    ['ALTER DATABASE app SET standard_conforming_strings = off', 'guard:pinned-parameter'],
    ["ALTER SYSTEM SET client_encoding = 'SJIS'", 'guard:pinned-parameter'],
    ["CREATE FUNCTION sec_diff_probe_evil() RETURNS int LANGUAGE sql SET client_encoding = 'SJIS' AS 'SELECT 1'", 'guard:pinned-parameter'],
  ];
  for (const kind of ['reader', 'writer', 'admin'] as const satisfies readonly Kind[]) {
    for (const [sql, rule] of attempts) {
      test(`${kind}: ${sql}`, async () => {
        const c = await session(proxy.port, kind);
        try {
          const pid = await backendPid(c);
          const r = await simple(c, sql);
          assertDenied(r, rule.startsWith('/') || rule.includes('|') ? new RegExp(rule) : rule, 'I', sql);
          assert.ok(!r.types.includes('S'), 'no ParameterStatus: nothing changed');
          await assertNeverReachedServer(pid, sql);
          await assertPinned(c);
        } finally {
          c.end();
        }
      });
    }
  }

  test('inside a transaction: SET LOCAL and set_config(…, true) are refused and abort it', async () => {
    for (const sql of ["SET LOCAL client_encoding = 'SJIS'", 'SET LOCAL standard_conforming_strings = off', "SELECT set_config('client_encoding', 'SJIS', true)", "SELECT set_config('standard_conforming_strings', 'off', true)"]) {
      const c = await session(proxy.port, 'writer');
      try {
        assertOk(await simple(c, 'BEGIN'), 'T');
        assertOk(await simple(c, `UPDATE ${P} SET v = 'in-tx' WHERE id = 1`), 'T');
        const r = await simple(c, sql);
        assertDenied(r, 'guard:pinned-parameter', 'E', sql);
        assert.ok(!r.types.includes('S'));
        const end = await simple(c, 'COMMIT');
        assert.equal(end.messages.find((m) => m.type === 'C')?.body.toString('utf8').replace(/\0$/, ''), 'ROLLBACK');
        await assertPinned(c);
      } finally {
        c.end();
      }
      const rows = await adminQuery<{ v: string }>(`SELECT v FROM ${P} WHERE id = 1`, 'app');
      assert.equal(rows[0]?.v, 'one', `${sql}: the transaction was rolled back`);
    }
  });

  test('legitimate: SHOW and current_setting() of them are allowed; RESET ALL is refused by the role guard; a SET to the pinned value reaches the policy', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      assert.deepEqual(values(await simple(c, 'SHOW client_encoding')), ['UTF8']);
      assert.deepEqual(values(await simple(c, 'SHOW standard_conforming_strings')), ['on']);
      assertOk(await simple(c, "SET application_name = 'changed'"));
      assertDenied(await simple(c, 'RESET ALL'), 'guard:role-change', 'I', 'RESET ALL');
      assert.deepEqual(values(await simple(c, 'SHOW application_name')), ['changed'], 'nothing was reset');
      // Setting them to their pinned values changes nothing: rolegate's guard lets it through
      // (test/integration/guards.test.ts), and the decision is the policy's — the shipped one
      // cannot see the value and denies every SET of them.
      for (const sql of ["SET client_encoding TO 'UTF8'", "SET NAMES 'utf8'", 'SET standard_conforming_strings = on']) {
        assertDenied(await simple(c, sql), 'parser-differential', 'I', sql);
      }
      assertOk(await simple(c, "SELECT set_config('application_name', 'x', false), set_config('application_name', 'y', false)"));
      await assertPinned(c);
    } finally {
      c.end();
    }
  });
});

describe('multi-byte encodings whose trail byte is a backslash', () => {
  const cases: Array<{ encoding: string; lead: string }> = [
    { encoding: 'SJIS', lead: 'ぁ' },
    { encoding: 'BIG5', lead: '中' },
    { encoding: 'GBK', lead: '中' },
  ];

  for (const { encoding, lead } of cases) {
    test(`${encoding}: the server confirms the attack string would hide a DELETE under ${encoding}`, async () => {
      // In that encoding the UTF-8 bytes of `${lead}\` are two characters: the backslash is eaten.
      const rows = await adminQuery<{ n: number; at: number }>(`SELECT length(convert_from(convert_to($$${lead}\\$$, 'UTF8'), '${encoding}')) AS n, strpos(convert_from(convert_to($$${lead}\\$$, 'UTF8'), '${encoding}'), '\\') AS at`, 'app');
      assert.equal(rows[0]?.n, 2);
      assert.equal(rows[0]?.at, 0);
    });

    test(`${encoding}: switching to it and sending the attack in the same pipeline is refused; the SELECT stays a SELECT`, async () => {
      const switches = [
        `SET client_encoding = '${encoding}'`,
        `SELECT set_config('client_encoding', '${encoding}', false)`,
        `SELECT set_config('application_name', 'x', false), set_config('client_encoding', '${encoding}', false)`,
        `BEGIN; SET LOCAL client_encoding = '${encoding}'`,
      ];
      for (const change of switches) {
        const c = await session(proxy.port, 'reader');
        try {
          const before = await probe.state();
          // Both messages in one write: the server would read the second before rolegate saw any ParameterStatus.
          c.write(Buffer.concat([query(change), query(`SELECT E'${lead}\\'; DELETE FROM ${P}; --'`)]));
          const first = reply(await c.readUntil('Z'));
          assert.equal(first.types, 'EZ', change);
          assert.equal(first.errors[0]?.get('C'), '42501', change);
          const second = reply(await c.readUntil('Z'));
          assertOk(second, 'I', change);
          assert.deepEqual(values(second), [`${lead}'; DELETE FROM ${P}; --`], 'read as UTF-8: one string');
          await probe.assertUnchanged(before, change);
          await assertPinned(c);
        } finally {
          c.end();
        }
      }
    });
  }

  test('standard_conforming_strings=off in the same pipeline is refused; the SELECT stays a SELECT', async () => {
    // With it off, 'x\'' ends after x\' and the DELETE would run; with it on this is one string.
    for (const change of ['SET standard_conforming_strings = off', "SELECT set_config('application_name', 'x', false), set_config('standard_conforming_strings', 'off', false)"]) {
      const c = await session(proxy.port, 'reader');
      try {
        const before = await probe.state();
        c.write(Buffer.concat([query(change), query(`SELECT 'x\\''; DELETE FROM ${P}; --'`)]));
        const first = reply(await c.readUntil('Z'));
        assert.equal(first.errors[0]?.get('C'), '42501', change);
        const second = reply(await c.readUntil('Z'));
        assertOk(second);
        assert.deepEqual(values(second), [`x\\'; DELETE FROM ${P}; --`]);
        await probe.assertUnchanged(before, change);
      } finally {
        c.end();
      }
    }
  });
});

describe('the server reporting a change ends the session (defence in depth)', () => {
  // A function body is opaque to any parser: a function that calls set_config
  // passes the policy (deny such functions by name). The ParameterStatus the
  // server then sends makes rolegate close the session.
  const fn = `${P}_evil_encoding`;
  before(async () => {
    await adminQuery(
      `CREATE OR REPLACE FUNCTION ${fn}(enc text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_encoding', enc, false) $$;
       CREATE OR REPLACE FUNCTION ${fn}_scs() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$;
       GRANT EXECUTE ON FUNCTION ${fn}(text), ${fn}_scs() TO PUBLIC;`,
      'app',
    );
  });

  for (const call of [`SELECT ${fn}('SJIS')`, `SELECT ${fn}('LATIN1')`, `SELECT ${fn}_scs()`, `BEGIN; SELECT ${fn}('BIG5')`]) {
    test(`${call}: FATAL 08P01 and the connection closes`, async () => {
      const c = await session(proxy.port, 'reader');
      c.write(query(call));
      const got: Message[] = [];
      for (;;) {
        const m = await c.read(5000);
        if (m === null) break;
        got.push(m);
      }
      const fatal = got.find((m) => m.type === 'E' && errorFields(m).get('S') === 'FATAL');
      assert.ok(fatal, `got ${got.map((m) => m.type).join('')}`);
      assert.equal(errorFields(fatal).get('C'), '08P01');
      assert.match(errorFields(fatal).get('M') ?? '', /changed to/);
      assert.ok(c.closed);
      // The proxy goes on.
      const next = await session(proxy.port, 'reader');
      await assertPinned(next);
      next.end();
    });
  }

  test('revoking EXECUTE on set_config from PUBLIC (the recommended hardening) stops even opaque functions', async () => {
    await adminQuery('REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC', 'app');
    try {
      const c = await session(proxy.port, 'reader');
      try {
        const r = await simple(c, `SELECT ${fn}('SJIS')`);
        assert.equal(r.types, 'EZ');
        assert.equal(r.errors[0]?.get('C'), '42501');
        assert.match(r.errors[0]?.get('M') ?? '', /permission denied for function set_config/);
        await assertPinned(c);
        // SET of ordinary parameters does not use the function and still works.
        assertOk(await simple(c, "SET application_name = 'still-settable'"));
      } finally {
        c.end();
      }
    } finally {
      await adminQuery('GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO PUBLIC', 'app');
    }
  });
});

describe('text that is not valid UTF-8, or holds NUL, never reaches the server', () => {
  const invalid: Array<[string, number[]]> = [
    ['overlong quote (C0 A7)', [0xc0, 0xa7]],
    ['overlong slash (C0 AF)', [0xc0, 0xaf]],
    ['overlong 3-byte (E0 80 A7)', [0xe0, 0x80, 0xa7]],
    ['UTF-16 surrogate (ED A0 80)', [0xed, 0xa0, 0x80]],
    ['above U+10FFFF (F4 90 80 80)', [0xf4, 0x90, 0x80, 0x80]],
    ['5-byte form (F8 88 80 80 80)', [0xf8, 0x88, 0x80, 0x80, 0x80]],
    ['lone continuation byte (80)', [0x80]],
    ['truncated sequence before the quote (E3 81)', [0xe3, 0x81]],
    ['SJIS lead + backslash (82 5C)', [0x82, 0x5c]],
    ['Latin-1 é (E9)', [0xe9]],
    ['byte FF', [0xff]],
  ];
  const around = (bytes: number[]): Buffer => Buffer.concat([Buffer.from("SELECT '"), Buffer.from(bytes), Buffer.from(`'; DELETE FROM ${P}; --'`)]);

  for (const [label, bytes] of invalid) {
    test(`Query: ${label} → 22021, nothing ran, the session goes on`, async () => {
      const c = await session(proxy.port, 'writer');
      try {
        const pid = await backendPid(c);
        const before = await probe.state();
        const r = await roundTrip(c, message('Q', Buffer.concat([around(bytes), Buffer.from([0])])));
        assert.equal(r.types, 'EZ', label);
        assert.equal(r.errors[0]?.get('C'), '22021', label);
        assert.equal(r.status, 'I');
        await assertNeverReachedServer(pid, label);
        await probe.assertUnchanged(before, label);
        await assertUsable(c);
      } finally {
        c.end();
      }
    });

    test(`Parse: ${label} → 22021, the pipeline is skipped to Sync, one ReadyForQuery`, async () => {
      const c = await session(proxy.port, 'writer');
      try {
        const before = await probe.state();
        const r = await roundTrip(c, Buffer.concat([rawParse('', around(bytes)), bind('', ''), execute(), sync()]));
        assert.equal(r.types, 'EZ', label);
        assert.equal(r.errors[0]?.get('C'), '22021', label);
        await probe.assertUnchanged(before, label);
        await assertUsable(c);
      } finally {
        c.end();
      }
    });
  }

  test('Query with a NUL before a hidden statement: 08P01, connection closed, nothing ran', async () => {
    const c = await session(proxy.port, 'writer');
    const before = await probe.state();
    c.write(message('Q', `SELECT 1\0; DELETE FROM ${P}\0`));
    const m = await c.read();
    assert.equal(errorFields(m!).get('C'), '08P01');
    assert.ok(await c.waitClosed());
    await probe.assertUnchanged(before);
  });

  test('Parse with a NUL inside its text: 08P01, connection closed, nothing ran', async () => {
    const c = await session(proxy.port, 'writer');
    const before = await probe.state();
    c.write(Buffer.concat([rawParse('', Buffer.from(`SELECT 1\0DELETE FROM ${P}`)), bind('', ''), execute(), sync()]));
    const m = await c.read();
    assert.equal(errorFields(m!).get('C'), '08P01');
    assert.ok(await c.waitClosed());
    await probe.assertUnchanged(before);
  });

  test('a statement or portal name that is not UTF-8: 08P01', async () => {
    for (const bytes of [
      message('P', Buffer.concat([Buffer.from([0xff, 0xfe, 0]), Buffer.from('SELECT 1\0\0\0')])),
      message('B', Buffer.concat([Buffer.from([0xc0, 0xaf, 0]), Buffer.from('\0\0\0\0\0\0\0')])),
    ]) {
      const c = await session(proxy.port, 'reader');
      c.write(Buffer.concat([bytes, sync()]));
      const m = await c.read();
      assert.equal(errorFields(m!).get('C'), '08P01');
      assert.ok(await c.waitClosed());
    }
  });

  test('legitimate: valid multi-byte text of every width is forwarded untouched', async () => {
    const c = await session(proxy.port, 'reader');
    try {
      const text = 'é ß 中文 ぁ 🐘 \u{10FFFF} \uFFFE';
      const r = await simple(c, `SELECT '${text}'`);
      assertOk(r);
      assert.deepEqual(values(r), [text]);
    } finally {
      c.end();
    }
  });
});
