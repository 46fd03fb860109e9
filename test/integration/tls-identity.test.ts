// Identity and transport (docs/identity.md) against the real PostgreSQL: TLS
// for clients (SSLRequest and direct TLS), client certificates, JWT logins with
// a JWKS served locally, PROXY protocol from trusted load balancers, and TLS to
// the upstream. Certificates and keys are made by the tests with openssl.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chownSync, cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import pg from 'pg';
import { createScramVerifier } from '../../src/auth/scram.ts';
import { startLocalPostgres } from '../../src/cli/local-postgres.ts';
import { createTestPki, type TestPki } from '../helpers/certs.ts';
import { connect, demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { REPO, startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { errorFields, query, RawClient, sqlstate, startupPacket } from '../helpers/raw-client.ts';

const run = promisify(execFile);

let pki: TestPki;
let serverCert: { cert: string; key: string };

before(() => {
  pki = createTestPki();
  serverCert = pki.issue('proxy-server', { cn: 'rolegate.test', san: ['DNS:localhost', 'IP:127.0.0.1'], server: true });
});
after(() => pki?.cleanup());

function tlsSection(extra = ''): string {
  return `tls: { cert_file: ${JSON.stringify(serverCert.cert)}, key_file: ${JSON.stringify(serverCert.key)}, ca_file: ${JSON.stringify(pki.caCert)}${extra} }\n`;
}

function psqlArgs(port: number, user: string, extra: string): string[] {
  return ['-X', '-At', '-c', "SELECT current_user || ' ' || inet_client_addr()::text", `host=127.0.0.1 port=${port} dbname=app user=${user} ${extra}`];
}

describe('TLS for clients', () => {
  let proxy: RunningProxy;
  before(async () => {
    await ensureDemoDatabase();
    proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: `${tlsSection()}auth: { cert: { identity: cn } }\n` }));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('psql with sslmode=verify-full against the proxy certificate', async () => {
    const { stdout } = await run('psql', psqlArgs(proxy.port, 'reporting-svc', `sslmode=verify-full sslrootcert=${pki.caCert}`), { env: { ...process.env, PGPASSWORD: DEMO_USERS['reporting-svc'] } });
    assert.match(stdout, /^app_reader /);
  });

  test('psql with verify-full refuses a proxy whose CA it does not trust', async () => {
    await assert.rejects(run('psql', psqlArgs(proxy.port, 'reporting-svc', `sslmode=verify-full sslrootcert=${pki.otherCaCert}`), { env: { ...process.env, PGPASSWORD: DEMO_USERS['reporting-svc'] } }), /certificate verify failed/);
  });

  test('a client certificate is the identity: psql logs in without a password and the policy sees method cert', async () => {
    const dba = pki.issue('dba-client', { cn: 'dba', client: true });
    // data.json: service "dba" allows methods cert/scram, requires TLS, may ask for app_admin.
    const { stdout } = await run('psql', psqlArgs(proxy.port, 'dba', `sslmode=verify-full sslrootcert=${pki.caCert} sslcert=${dba.cert} sslkey=${dba.key} options='-c rolegate.role=app_admin'`), { env: { ...process.env, PGPASSWORD: '' } });
    assert.match(stdout, /^app_admin /);
  });

  test('expired, untrusted and mismatching client certificates are refused with 28000', async () => {
    const expired = pki.issue('expired-client', { cn: 'dba', client: true, expired: true });
    const stranger = pki.issue('stranger-client', { cn: 'dba', client: true, ca: 'other' });
    const other = pki.issue('other-name', { cn: 'reporting-svc', client: true });
    const cases: Array<[{ cert: string; key: string }, string, RegExp]> = [
      [expired, 'dba', /client certificate rejected: CERT_HAS_EXPIRED/],
      [stranger, 'dba', /client certificate rejected/],
      [other, 'dba', /certificate identity "reporting-svc" does not match user "dba"/],
    ];
    for (const [cert, user, re] of cases) {
      const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user, database: 'app', ssl: { ca: readFileSync(pki.caCert), cert: readFileSync(cert.cert), key: readFileSync(cert.key), servername: 'localhost' } });
      const err = await c.connect().then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err, `${cert.cert} must be refused`);
      assert.equal(err.code, '28000', err.message);
      assert.match(err.message, re);
      await c.end().catch(() => {});
    }
  });

  test('bytes sent after SSLRequest but before the handshake are refused, never processed', async () => {
    const c = await RawClient.connect(proxy.port);
    const ssl = Buffer.alloc(8);
    ssl.writeInt32BE(8, 0);
    ssl.writeInt32BE(80877103, 4);
    // SSLRequest and a plaintext startup packet in one segment (CVE-2021-23214 class).
    c.write(Buffer.concat([ssl, startupPacket({ user: 'reporting-svc', database: 'app' })]));
    const m = await c.read();
    assert.equal(sqlstate(m), '08P01');
    assert.match(errorFields(m!).get('M') ?? '', /unencrypted data after SSL request/);
    assert.ok(await c.waitClosed());
  });

  test('direct TLS (PostgreSQL 17 sslnegotiation=direct) with ALPN "postgresql"; without ALPN it is refused', async () => {
    const login = async (alpn: string[] | undefined): Promise<string[]> => {
      const socket = tls.connect({ host: '127.0.0.1', port: proxy.port, ca: readFileSync(pki.caCert), servername: 'localhost', ...(alpn ? { ALPNProtocols: alpn } : {}) });
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
      const types: string[] = [];
      socket.write(startupPacket({ user: 'reporting-svc', database: 'app' }));
      const data = await new Promise<Buffer>((resolve) => {
        let buf = Buffer.alloc(0);
        socket.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) resolve(buf);
        });
        socket.on('close', () => resolve(buf));
      });
      if (data.length > 0) types.push(String.fromCharCode(data[0] as number));
      socket.destroy();
      return types;
    };
    assert.deepEqual(await login(['postgresql']), ['R'], 'AuthenticationSASL over direct TLS');
    assert.deepEqual(await login(undefined), ['E'], 'refused without ALPN');
  });

  test('GSSENCRequest is still answered N', async () => {
    const c = await RawClient.connect(proxy.port);
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8, 0);
    gss.writeInt32BE(80877104, 4);
    c.write(gss);
    assert.equal(await c.readByte(), 'N');
    c.end();
  });
});

describe('tls.required refuses plaintext logins', () => {
  test('plaintext: 28000 naming TLS; with TLS the same user logs in', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 1, extra: tlsSection(', required: true') }));
    try {
      const plain = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'reporting-svc', password: DEMO_USERS['reporting-svc'], database: 'app', ssl: false });
      const err = await plain.connect().then(
        () => null,
        (e: unknown) => e as pg.DatabaseError,
      );
      assert.ok(err);
      assert.equal(err.code, '28000');
      assert.match(err.message, /TLS is required/);
      await plain.end().catch(() => {});
      const secure = await connect(proxy.port, 'reporting-svc', { ssl: { ca: readFileSync(pki.caCert), servername: 'localhost' } });
      assert.equal((await secure.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
      await secure.end();
    } finally {
      await proxy.stop();
    }
  });
});

describe('JWT / OIDC logins', () => {
  interface Key {
    kid: string;
    privateKey: CryptoKey;
    jwk: JWK;
  }
  const makeKey = async (kid: string): Promise<Key> => {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
  };
  let keys: Key[] = [];
  let jwks: http.Server;
  let jwksUrl = '';
  let proxy: RunningProxy;
  const ISSUER = 'https://issuer.rolegate.test';
  const sign = (key: Key, claims: Record<string, unknown>): Promise<string> =>
    new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' }).setIssuer(ISSUER).setAudience('rolegate').setIssuedAt().setExpirationTime('5m').sign(key.privateKey);

  before(async () => {
    await ensureDemoDatabase();
    keys = [await makeKey('key-1')];
    jwks = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: keys.map((k) => k.jwk) }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as net.AddressInfo).port}/jwks.json`;
    // A policy that maps a Kubernetes service-account claim to a service: the
    // shipped library with its identity → service lookup routed through a claim.
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-jwt-policy-'));
    cpSync(path.join(REPO, 'policies'), dir, { recursive: true });
    writeFileSync(
      path.join(dir, 'k8s.rego'),
      `package rolegate.k8s

# JWT logins: the service account's namespace names the service.
service_name := data.k8s_namespaces[input.identity.claims["kubernetes.io"].namespace] if input.identity.method == "jwt"

service_name := input.identity.name if input.identity.method != "jwt"
`,
    );
    writeFileSync(path.join(dir, 'k8s_test.rego'), 'package rolegate.k8s_test\n');
    for (const file of ['services.rego', 'network.rego', 'environment.rego', 'session.rego']) {
      const p = path.join(dir, file);
      const text = readFileSync(p, 'utf8');
      assert.ok(text.includes('service := data.services[input.identity.name]'), `${file} has the lookup this test reroutes`);
      writeFileSync(p, text.replace('service := data.services[input.identity.name]', 'service := data.services[data.rolegate.k8s.service_name]'));
    }
    const dataPath = path.join(dir, 'data.json');
    const data = JSON.parse(readFileSync(dataPath, 'utf8')) as Record<string, unknown>;
    data['k8s_namespaces'] = { orders: 'reporting-svc' };
    writeFileSync(dataPath, JSON.stringify(data));
    const config = demoConfig({ withPolicy: true, workers: 2, extra: `${tlsSection()}auth: { jwt: { issuer: "${ISSUER}", audience: rolegate, jwks_url: "${jwksUrl}", identity_claim: sub, jwks_min_refresh_ms: 0 } }\n` }).replace(/policy: \{ dir: "[^"]+" \}/, `policy: { dir: ${JSON.stringify(dir)} }`);
    proxy = await startProxy(config);
  });
  after(async () => {
    await proxy?.stop();
    await new Promise<void>((resolve) => jwks?.close(() => resolve()));
  });

  const tokenLogin = (token: string, ssl: boolean): Promise<pg.Client> => {
    const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: 'k8s', password: token, database: 'app', ssl: ssl ? { ca: readFileSync(pki.caCert), servername: 'localhost' } : false });
    return client.connect().then(() => client);
  };

  test('a token for a service account in namespace orders logs in as app_reader; claims reached the policy', async () => {
    const token = await sign(keys[0]!, { sub: 'system:serviceaccount:orders:api', 'kubernetes.io': { namespace: 'orders' } });
    const c = await tokenLogin(token, true);
    assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, 'app_reader');
    await c.end();
  });

  test('another namespace is refused by the policy (28000); a bad token is refused before it (28P01)', async () => {
    const other = await sign(keys[0]!, { sub: 'system:serviceaccount:billing:api', 'kubernetes.io': { namespace: 'billing' } });
    await assert.rejects(tokenLogin(other, true), (e: pg.DatabaseError) => e.code === '28000');
    const stranger = await makeKey('key-1'); // same kid, different key: a forgery
    const forged = await sign(stranger, { sub: 'x', 'kubernetes.io': { namespace: 'orders' } });
    await assert.rejects(tokenLogin(forged, true), (e: pg.DatabaseError) => e.code === '28P01' && /token authentication failed/.test(e.message));
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'x', iss: ISSUER, aud: 'rolegate', exp: 9e9 })).toString('base64url')}.`;
    await assert.rejects(tokenLogin(unsigned, true), (e: pg.DatabaseError) => e.code === '28P01');
  });

  test('tokens are refused over plaintext', async () => {
    const token = await sign(keys[0]!, { sub: 'system:serviceaccount:orders:api', 'kubernetes.io': { namespace: 'orders' } });
    await assert.rejects(tokenLogin(token, false), (e: pg.DatabaseError) => e.code === '28000' && /requires TLS/.test(e.message));
  });

  test('a token signed by a rotated key is accepted without a restart', async () => {
    keys = [await makeKey('key-2')]; // the identity provider rotates
    const token = await sign(keys[0]!, { sub: 'system:serviceaccount:orders:worker', 'kubernetes.io': { namespace: 'orders' } });
    const c = await tokenLogin(token, true);
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    await c.end();
  });
});

describe('PROXY protocol', () => {
  const v1 = (src: string): Buffer => Buffer.from(`PROXY TCP4 ${src} 127.0.0.1 40000 6432\r\n`, 'latin1');
  const v2 = (src: string): Buffer => {
    const header = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c]);
    const addrs = Buffer.alloc(12);
    src.split('.').forEach((o, i) => (addrs[i] = Number(o)));
    addrs.set([127, 0, 0, 1], 4);
    addrs.writeUInt16BE(40000, 8);
    addrs.writeUInt16BE(6432, 10);
    return Buffer.concat([header, addrs]);
  };

  async function loginVia(port: number, header: Buffer | null, user: keyof typeof DEMO_USERS): Promise<{ ok: boolean; state?: string; message?: string; addr?: string }> {
    const c = await RawClient.connect(port);
    if (header) c.write(header);
    try {
      await c.login(user, DEMO_USERS[user]);
    } catch (err) {
      const m = String(err);
      const state = /"C":"(\w+)"/.exec(m)?.[1];
      c.end();
      return { ok: false, ...(state === undefined ? {} : { state }), message: m };
    }
    c.write(query('SELECT 1'));
    await c.readUntil('Z');
    c.end();
    return { ok: true };
  }

  test('trusted load balancer: the policy sees the client address from the header (v1 and v2)', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: 'proxy_protocol: { trusted_cidrs: [127.0.0.0/8], required: true }\n' }));
    try {
      // data.json: reporting-svc may come from 10.20.0.0/16 (and loopback), not from 192.0.2.0/24.
      assert.deepEqual(await loginVia(proxy.port, v1('10.20.1.1'), 'reporting-svc'), { ok: true });
      assert.deepEqual(await loginVia(proxy.port, v2('10.20.1.2'), 'reporting-svc'), { ok: true });
      const refused = await loginVia(proxy.port, v1('192.0.2.10'), 'reporting-svc');
      assert.equal(refused.ok, false);
      assert.equal(refused.state, '28000');
      assert.match(refused.message ?? '', /client-address-not-allowed|not allowed/);
      // Required: a connection without the header is refused.
      const c = await RawClient.connect(proxy.port);
      c.write(startupPacket({ user: 'reporting-svc', database: 'app' }));
      const m = await c.read();
      assert.equal(sqlstate(m), '08P01');
      assert.match(errorFields(m!).get('M') ?? '', /PROXY protocol header is required/);
    } finally {
      await proxy.stop();
    }
  });

  test('a PROXY header from an untrusted address is refused', async () => {
    await ensureDemoDatabase();
    const proxy = await startProxy(demoConfig({ workers: 1, extra: 'proxy_protocol: { trusted_cidrs: [10.0.0.0/8], required: false }\n' }));
    try {
      const c = await RawClient.connect(proxy.port);
      c.write(v1('10.20.1.1'));
      c.write(startupPacket({ user: 'reporting-svc', database: 'app' }));
      const m = await c.read();
      assert.equal(sqlstate(m), '08P01');
      assert.match(errorFields(m!).get('M') ?? '', /untrusted address/);
      // Without a header, clients from non-LB addresses log in normally.
      assert.deepEqual(await loginVia(proxy.port, null, 'reporting-svc'), { ok: true });
    } finally {
      await proxy.stop();
    }
  });
});

describe('TLS to the upstream', () => {
  test('verify-full with the right CA; the wrong CA or a server without TLS is a clear 08006', async () => {
    const upstreamCert = pki.issue('upstream-server', { cn: 'localhost', san: ['DNS:localhost', 'IP:127.0.0.1'], server: true });
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-upstream-tls-'));
    const certFile = path.join(dir, 'server.crt');
    const keyFile = path.join(dir, 'server.key');
    cpSync(upstreamCert.cert, certFile);
    cpSync(upstreamCert.key, keyFile);
    if (process.getuid?.() === 0) {
      // The server runs as the postgres OS user and insists on owning its key.
      const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
      const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
      for (const f of [dir, certFile, keyFile]) chownSync(f, uid, gid);
    }
    const pgTls = await startLocalPostgres({ settings: { ssl: 'on', ssl_cert_file: certFile, ssl_key_file: keyFile } });
    try {
      await pgTls.psql("CREATE ROLE tls_role LOGIN PASSWORD 'tls-secret';");
      const base = (mode: string, ca: string): string => `listen: { host: 127.0.0.1, port: 0 }
workers: 1
upstream: { host: 127.0.0.1, port: ${pgTls.port}, tls: { mode: ${mode}, ca_file: ${JSON.stringify(ca)}, server_name: localhost } }
roles: { tls_role: { password: "tls-secret" } }
users: { svc: { scram_verifier: "${createScramVerifier('svc-pw')}", role: tls_role, database: postgres } }
`;
      const good = await startProxy(base('verify-full', pki.caCert));
      try {
        const c = await connect(good.port, 'orders-svc', { user: 'svc', password: 'svc-pw', database: 'postgres' });
        const r = await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
        assert.equal(r.rows[0]?.ssl, true, 'the upstream session is encrypted');
        await c.end();
      } finally {
        await good.stop();
      }
      const bad = await startProxy(base('verify-full', pki.otherCaCert));
      try {
        await assert.rejects(connect(bad.port, 'orders-svc', { user: 'svc', password: 'svc-pw', database: 'postgres' }), (e: pg.DatabaseError) => e.code === '08006');
        const line = await bad.waitForLog((l) => l['msg'] === 'upstream connect failed');
        assert.match(String(line['err']), /certificate/i);
      } finally {
        await bad.stop();
      }
    } finally {
      await pgTls.stop();
    }
    // The shared test cluster has no TLS: mode require must refuse it.
    await ensureDemoDatabase();
    const plainUpstream = await startProxy(demoConfig({ workers: 1 }).replace(/upstream: \{ host: 127\.0\.0\.1, port: (\d+) \}/, 'upstream: { host: 127.0.0.1, port: $1, tls: { mode: require } }'));
    try {
      await assert.rejects(connect(plainUpstream.port, 'reporting-svc'), (e: pg.DatabaseError) => e.code === '08006');
      const line = await plainUpstream.waitForLog((l) => l['msg'] === 'upstream connect failed');
      assert.match(String(line['err']), /does not accept TLS/);
    } finally {
      await plainUpstream.stop();
    }
  });
});
