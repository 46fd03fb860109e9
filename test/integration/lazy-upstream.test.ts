// upstream.connect: lazy (the default) — an authenticated client is greeted
// with the server's last ParameterStatus values for its kind of login and gets
// its upstream connection on its first message; eager logs in at once. The
// server side is counted in pg_stat_activity by a per-test application_name.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createScramVerifier } from '../../src/auth/scram.ts';
import { startLocalPostgres, type LocalPostgres } from '../../src/cli/local-postgres.ts';
import { cancelRequest } from '../../src/upstream/connect.ts';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { sleep } from '../helpers/security.ts';
import { errorFields, query, RawClient, terminate, type Message } from '../helpers/raw-client.ts';

const USER = 'reporting-svc';

async function backends(appName: string): Promise<number> {
  const rows = await adminQuery<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '${appName}'`);
  return Number(rows[0]?.n);
}

async function login(port: number, appName: string): Promise<{ client: RawClient; greeting: Message[] }> {
  const client = await RawClient.connect(port);
  const greeting = await client.login(USER, DEMO_USERS[USER], 'app', { application_name: appName });
  return { client, greeting };
}

function parameterStatus(messages: Message[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of messages.filter((x) => x.type === 'S')) {
    const [k, v] = m.body.toString('utf8').split('\0');
    out.set(k as string, v as string);
  }
  return out;
}

function backendKey(messages: Message[]): { processId: number; secretKey: number } {
  const k = messages.find((m) => m.type === 'K');
  assert.ok(k, 'BackendKeyData in the greeting');
  return { processId: k.body.readInt32BE(0), secretKey: k.body.readInt32BE(4) };
}

describe('upstream.connect: lazy (default)', () => {
  let proxy: RunningProxy;
  before(async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(demoConfig({ workers: 1 }));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('the first login of its kind goes upstream at once; later ones only on their first message', async () => {
    const app = `lazy-${randomBytes(4).toString('hex')}`;
    const first = await login(proxy.port, app);
    assert.equal(await backends(app), 1, 'the first client logged in upstream (its greeting is the server’s)');

    const parked = [await login(proxy.port, app), await login(proxy.port, app), await login(proxy.port, app)];
    await sleep(200);
    assert.equal(await backends(app), 1, 'authenticated idle clients hold no upstream connection');
    // They were greeted like the first: same server parameters, their own keys.
    for (const p of parked) {
      assert.deepEqual(parameterStatus(p.greeting), parameterStatus(first.greeting));
      assert.notDeepEqual(backendKey(p.greeting), backendKey(first.greeting));
      assert.equal(p.greeting.at(-1)?.body.toString('latin1'), 'I');
    }

    // A query logs in upstream (as the decided role, with the client's parameters) and is answered.
    const [a, b, c] = parked as [(typeof parked)[0], (typeof parked)[0], (typeof parked)[0]];
    a.client.write(query("SELECT current_user, current_setting('application_name')"));
    const answer = await a.client.readUntil('Z');
    const row = answer.find((m) => m.type === 'D');
    assert.ok(row, JSON.stringify(answer.map((m) => m.type)));
    assert.match(row.body.toString('utf8'), new RegExp(`app_reader[^]*${app}`));
    assert.equal(await backends(app), 2);

    // A CancelRequest for a parked session has nothing to cancel and harms nothing.
    const cancel = await RawClient.connect(proxy.port);
    const keys = backendKey(b.greeting);
    cancel.write(cancelRequest(keys.processId, keys.secretKey));
    assert.ok(await cancel.waitClosed(), 'the cancel connection is closed');
    b.client.write(query('SELECT 41 + 1'));
    const after = await b.client.readUntil('Z');
    assert.equal(after.find((m) => m.type === 'D')?.body.toString('utf8', 6), '42');

    // A parked client that leaves never costs an upstream login.
    c.client.write(terminate());
    assert.ok(await c.client.waitClosed());
    await sleep(200);
    assert.equal(await backends(app), 3, 'first + the two that sent a query');
    for (const x of [first, a, b]) x.client.end();
  });

  test('pipelined messages sent right after login wait for the upstream and run in order', async () => {
    const app = `lazy-pipe-${randomBytes(4).toString('hex')}`;
    (await login(proxy.port, app)).client.end(); // warms the greeting for this kind
    const { client } = await login(proxy.port, app);
    client.write(Buffer.concat([query('SELECT 1'), query('SELECT 2'), query('SELECT 3')]));
    const values: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await client.readUntil('Z');
      values.push(res.find((m) => m.type === 'D')?.body.toString('utf8', 6) ?? '?');
    }
    assert.deepEqual(values, ['1', '2', '3']);
    client.end();
  });
});

describe('upstream.connect: eager', () => {
  let proxy: RunningProxy;
  before(async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(demoConfig({ workers: 1 }).replace(/^upstream: \{ (.*) \}$/m, 'upstream: { $1, connect: eager }'));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('every authenticated client holds its upstream connection', async () => {
    const app = `eager-${randomBytes(4).toString('hex')}`;
    const clients = [await login(proxy.port, app), await login(proxy.port, app), await login(proxy.port, app)];
    await sleep(100);
    assert.equal(await backends(app), 3);
    for (const c of clients) c.client.end();
  });
});

describe('lazy login against a server that changed since the greeting', () => {
  let pg: LocalPostgres;
  let proxy: RunningProxy;
  before(async () => {
    pg = await startLocalPostgres({ authMethod: 'trust' });
    await pg.psql('CREATE ROLE lazy_role LOGIN;');
    proxy = await startProxy(`listen: { host: 127.0.0.1, port: 0 }
workers: 1
upstream: { host: 127.0.0.1, port: ${pg.port} }
roles:
  lazy_role: { trust: true }
users:
  svc: { scram_verifier: "${createScramVerifier('svc-password')}", role: lazy_role, database: postgres }
`);
  });
  after(async () => {
    await proxy?.stop();
    await pg?.stop();
  });

  async function svcLogin(): Promise<{ client: RawClient; greeting: Message[] }> {
    const client = await RawClient.connect(proxy.port);
    const greeting = await client.login('svc', 'svc-password', 'postgres');
    return { client, greeting };
  }

  test('a parameter that changed reaches the client as ParameterStatus before the first answer', async () => {
    const warm = await svcLogin();
    assert.equal(parameterStatus(warm.greeting).get('DateStyle'), 'ISO, MDY');
    await pg.psql("ALTER ROLE lazy_role SET DateStyle = 'German, DMY';");
    const late = await svcLogin();
    assert.equal(parameterStatus(late.greeting).get('DateStyle'), 'ISO, MDY', 'greeted with what the server said last');
    late.client.write(query('SHOW DateStyle'));
    const answer = await late.client.readUntil('Z');
    const types = answer.map((m) => m.type).join('');
    assert.match(types, /^S+TDCZ$/, `ParameterStatus first, then the answer: ${types}`);
    assert.equal(parameterStatus(answer).get('DateStyle'), 'German, DMY');
    assert.equal(answer.find((m) => m.type === 'D')?.body.toString('utf8', 6), 'German, DMY');
    // The next login of this kind is greeted with the new value.
    const next = await svcLogin();
    assert.equal(parameterStatus(next.greeting).get('DateStyle'), 'German, DMY');
    for (const x of [warm, late, next]) x.client.end();
  });

  test('an upstream login that fails on the first message ends the session with a clear FATAL', async () => {
    const warm = await svcLogin();
    warm.client.write(query('SELECT 1')); // now it holds its upstream connection
    await warm.client.readUntil('Z');
    await pg.psql('ALTER ROLE lazy_role NOLOGIN;');
    try {
      const parked = await svcLogin();
      parked.client.write(query('SELECT 1'));
      const m = await parked.client.read();
      assert.equal(m?.type, 'E');
      const fields = errorFields(m);
      assert.equal(fields.get('S'), 'FATAL');
      assert.equal(fields.get('C'), '08006');
      assert.ok(await parked.client.waitClosed(), 'the session is closed');
      // The session that logged in before is untouched.
      warm.client.write(query('SELECT 7'));
      assert.equal((await warm.client.readUntil('Z')).find((x) => x.type === 'D')?.body.toString('utf8', 6), '7');
      warm.client.end();
    } finally {
      await pg.psql('ALTER ROLE lazy_role LOGIN;');
    }
  });
});
