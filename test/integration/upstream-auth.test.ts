// The proxy's own login to PostgreSQL: SCRAM-SHA-256 (the shared test
// cluster), md5 and trust (clusters of their own here), credentials from env
// and files, and rotating a role's password while a session is open.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createScramVerifier } from '../../src/auth/scram.ts';
import { startLocalPostgres, type LocalPostgres } from '../../src/cli/local-postgres.ts';
import { connect, demoConfig, DEMO_USERS, ensureDemoDatabase, ROLE_PASSWORDS } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy } from '../helpers/proxy.ts';

function configFor(pg: LocalPostgres, role: string, credentials: string): string {
  return `listen: { host: 127.0.0.1, port: 0 }
workers: 1
upstream: { host: 127.0.0.1, port: ${pg.port} }
roles:
  ${role}: ${credentials}
users:
  svc: { scram_verifier: "${createScramVerifier('svc-password')}", role: ${role}, database: postgres }
`;
}

describe('upstream authentication methods', () => {
  test('md5: the proxy answers the server’s md5 challenge', async () => {
    const pg = await startLocalPostgres({ authMethod: 'md5' });
    try {
      await pg.psql("SET password_encryption = 'md5'; CREATE ROLE md5_role LOGIN PASSWORD 'md5-secret';");
      const stored = await pg.psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5_role'");
      assert.equal(stored, 'md5', 'the role really has an md5 password');
      const proxy = await startProxy(configFor(pg, 'md5_role', '{ password: "md5-secret" }'));
      try {
        const c = await connect(proxy.port, 'orders-svc', { user: 'svc', password: 'svc-password', database: 'postgres' });
        assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'md5_role');
        await c.end();
      } finally {
        await proxy.stop();
      }
    } finally {
      await pg.stop();
    }
  });

  test('trust: the proxy logs in without a password', async () => {
    const pg = await startLocalPostgres({ authMethod: 'trust' });
    try {
      await pg.psql('CREATE ROLE trusted_role LOGIN;');
      const proxy = await startProxy(configFor(pg, 'trusted_role', '{ trust: true }'));
      try {
        const c = await connect(proxy.port, 'orders-svc', { user: 'svc', password: 'svc-password', database: 'postgres' });
        assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'trusted_role');
        await c.end();
      } finally {
        await proxy.stop();
      }
    } finally {
      await pg.stop();
    }
  });
});

describe('misconfigured upstream credentials', () => {
  test('a role configured as trust against a server that asks for a password: the client gets 08006, the log says why', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 1 }).replace(/app_reader: \{ password: "[^"]+" \}/, 'app_reader: { trust: true }'));
    try {
      await assert.rejects(connect(proxy.port, 'reporting-svc'), (err: Error & { code?: string }) => err.code === '08006');
      const line = await proxy.waitForLog((l) => l['msg'] === 'upstream connect failed');
      assert.match(String(line['err']), /configured as trust/);
    } finally {
      await proxy.stop();
    }
  });
});

describe('upstream credentials from env and files, rotated without a restart', () => {
  test('password_file: rotating the password and reloading keeps open sessions and serves new ones with the new secret', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-secret-'));
    const secretFile = path.join(dir, 'app_reader');
    writeFileSync(secretFile, `${ROLE_PASSWORDS['app_reader']}\n`);
    const config = demoConfig({ workers: 2 }).replace(/app_reader: \{ password: "[^"]+" \}/, `app_reader: { password_file: ${JSON.stringify(secretFile)} }`);
    const proxy = await startProxy(config);
    try {
      const open = await connect(proxy.port, 'reporting-svc');
      assert.equal((await open.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
      // Rotate: the database gets a new password, the secret file follows, the proxy reloads.
      await adminQuery("ALTER ROLE app_reader PASSWORD 'rotated-reader-secret'");
      try {
        writeFileSync(secretFile, 'rotated-reader-secret\n');
        const reloaded = proxy.waitForLog((l) => l['msg'] === 'config reload');
        proxy.child.kill('SIGHUP');
        await reloaded;
        await new Promise((r) => setTimeout(r, 200)); // workers apply the config message
        // The open session carries on…
        assert.equal((await open.query('SELECT 1 AS one')).rows[0].one, 1);
        // …and new sessions log in upstream with the new secret (on every worker).
        const fresh = await Promise.all(Array.from({ length: 6 }, () => connect(proxy.port, 'reporting-svc')));
        for (const c of fresh) assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
        await Promise.all(fresh.map((c) => c.end()));
      } finally {
        await adminQuery(`ALTER ROLE app_reader PASSWORD '${ROLE_PASSWORDS['app_reader']}'`);
      }
      await open.end();
    } finally {
      await proxy.stop();
    }
  });

  test('password_env: the secret comes from the environment; a missing variable is a config error naming it', async () => {
    await ensureDemoDatabase();
    const config = demoConfig({ workers: 1 }).replace(/app_reader: \{ password: "[^"]+" \}/, 'app_reader: { password_env: RG_TEST_READER_SECRET }');
    const proxy = await startProxy(config, { env: { RG_TEST_READER_SECRET: ROLE_PASSWORDS['app_reader'] } });
    try {
      const c = await connect(proxy.port, 'reporting-svc');
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
      await c.end();
    } finally {
      await proxy.stop();
    }
    await assert.rejects(startProxy(config, { env: { RG_TEST_READER_SECRET: '' } }), /environment variable RG_TEST_READER_SECRET is not set/);
  });

  test('a client never learns the upstream password: wrong client password fails before any upstream login', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 1 }));
    try {
      const before = await adminQuery<{ c: string }>("SELECT count(*) AS c FROM pg_stat_activity WHERE usename = 'app_reader'");
      await assert.rejects(connect(proxy.port, 'reporting-svc', { password: `${DEMO_USERS['reporting-svc']}-wrong` }), /password authentication failed/);
      const after = await adminQuery<{ c: string }>("SELECT count(*) AS c FROM pg_stat_activity WHERE usename = 'app_reader'");
      assert.equal(after[0]?.c, before[0]?.c);
    } finally {
      await proxy.stop();
    }
  });
});
