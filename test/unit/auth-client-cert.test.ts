// What a TLS handshake proved about the client (src/auth/client-cert.ts):
// real certificates made with openssl, presented in a real handshake on
// loopback, read on the server side as a session reads them.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { certIdentity, formatSubject, peerTlsInfo, type TlsInfo } from '../../src/auth/client-cert.ts';
import { createTestPki, type IssuedCert, type TestPki } from '../helpers/certs.ts';

let pki: TestPki;
let server: IssuedCert;
/** C, O, two OUs, CN; SANs of every kind (two DNS names: the first one counts). */
let rich: IssuedCert;
/** No CN and no SAN: a certificate that names nobody. */
let nameless: IssuedCert;

const RICH_SANS = ['DNS:orders.internal', 'DNS:orders-2.internal', 'URI:spiffe://cluster.local/ns/orders/sa/orders-api', 'email:orders@example.com', 'IP:10.1.2.3'];

/** A client certificate with any subject, signed by the test PKI's main CA (its helper writes CN-only subjects). */
function issueWithSubject(name: string, subject: string, sans: string[]): IssuedCert {
  const key = path.join(pki.dir, `${name}.key`);
  const csr = path.join(pki.dir, `${name}.csr`);
  const cert = path.join(pki.dir, `${name}.crt`);
  const ext = path.join(pki.dir, `${name}.ext`);
  const lines = ['basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature', 'extendedKeyUsage = clientAuth'];
  if (sans.length > 0) lines.push(`subjectAltName = ${sans.join(',')}`);
  writeFileSync(ext, `${lines.join('\n')}\n`);
  const run = (args: string[]): void => void execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  run(['req', '-new', '-key', key, '-subj', subject, '-out', csr]);
  run(['x509', '-req', '-in', csr, '-CA', pki.caCert, '-CAkey', pki.caKey, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', cert]);
  return { cert, key };
}

/** Handshake with a server that asks for (but does not enforce) a client certificate, as rolegate's does; what the server side proved. */
async function handshake(client: IssuedCert | null): Promise<TlsInfo> {
  const srv = tls.createServer({
    cert: readFileSync(server.cert),
    key: readFileSync(server.key),
    ca: readFileSync(pki.caCert),
    requestCert: true,
    rejectUnauthorized: false,
  });
  try {
    const proved = new Promise<TlsInfo>((resolve, reject) => {
      srv.once('secureConnection', (secure) => {
        resolve(peerTlsInfo(secure));
        secure.end();
      });
      srv.once('tlsClientError', reject);
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as AddressInfo).port;
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(pki.caCert),
      ...(client === null ? {} : { cert: readFileSync(client.cert), key: readFileSync(client.key) }),
    });
    socket.on('error', () => {});
    socket.on('data', () => {});
    try {
      return await proved;
    } finally {
      socket.destroy();
    }
  } finally {
    srv.close();
  }
}

before(() => {
  pki = createTestPki();
  server = pki.issue('server', { cn: 'localhost', san: ['DNS:localhost', 'IP:127.0.0.1'], server: true });
  rich = issueWithSubject('rich', '/C=DE/O=Acme/OU=ops/OU=db/CN=orders-svc', RICH_SANS);
  nameless = issueWithSubject('nameless', '/O=Acme/OU=batch', []);
});
after(() => pki?.cleanup());

describe('peerTlsInfo: what the handshake proved', () => {
  test('a trusted certificate: authorized, subject in certificate order (two OUs joined by "+"), SANs, fingerprint, CN', async () => {
    const info = await handshake(rich);
    assert.deepEqual(info, {
      authorized: true,
      authorizationError: null,
      certPresented: true,
      subject: 'C=DE,O=Acme,OU=ops+db,CN=orders-svc',
      san: ['DNS:orders.internal', 'DNS:orders-2.internal', 'URI:spiffe://cluster.local/ns/orders/sa/orders-api', 'email:orders@example.com', 'IP Address:10.1.2.3'],
      fingerprint: new X509Certificate(readFileSync(rich.cert)).fingerprint256,
      commonName: 'orders-svc',
    });
  });

  test('no client certificate: nothing presented, nothing authorized, empty fields', async () => {
    assert.deepEqual(await handshake(null), {
      authorized: false,
      authorizationError: null,
      certPresented: false,
      subject: '',
      san: [],
      fingerprint: '',
      commonName: null,
    });
  });

  test('an expired certificate is presented but not authorized, with the reason', async () => {
    const info = await handshake(pki.issue('expired', { cn: 'old-svc', client: true, expired: true }));
    assert.equal(info.certPresented, true);
    assert.equal(info.authorized, false);
    assert.equal(info.authorizationError, 'CERT_HAS_EXPIRED');
    assert.equal(info.commonName, 'old-svc');
    assert.equal(info.subject, 'CN=old-svc');
  });

  test('a certificate from a CA nobody trusts is not authorized', async () => {
    const info = await handshake(pki.issue('stranger', { cn: 'orders-svc', client: true, ca: 'other' }));
    assert.equal(info.certPresented, true);
    assert.equal(info.authorized, false);
    assert.equal(typeof info.authorizationError, 'string');
    assert.notEqual(info.authorizationError, '');
  });
});

describe('certIdentity: the identity per auth.cert.identity', () => {
  test('cn, san-dns (the first DNS entry), san-uri and san-email from one certificate', async () => {
    const info = await handshake(rich);
    assert.equal(certIdentity(info, 'cn'), 'orders-svc');
    assert.equal(certIdentity(info, 'san-dns'), 'orders.internal');
    assert.equal(certIdentity(info, 'san-uri'), 'spiffe://cluster.local/ns/orders/sa/orders-api');
    assert.equal(certIdentity(info, 'san-email'), 'orders@example.com');
  });

  test('a CN-only certificate carries no SAN identity', async () => {
    const info = await handshake(pki.issue('cn-only', { cn: 'reporting-svc', client: true }));
    assert.equal(certIdentity(info, 'cn'), 'reporting-svc');
    for (const source of ['san-dns', 'san-uri', 'san-email'] as const) assert.equal(certIdentity(info, source), null, source);
  });

  test('a certificate without CN or SAN carries no identity at all', async () => {
    const info = await handshake(nameless);
    assert.equal(info.authorized, true);
    assert.equal(info.subject, 'O=Acme,OU=batch');
    for (const source of ['cn', 'san-dns', 'san-uri', 'san-email'] as const) assert.equal(certIdentity(info, source), null, source);
  });

  test('a SAN prefix is matched whole: a URI that mentions "DNS:" is not a DNS name', async () => {
    const tricky = issueWithSubject('tricky', '/CN=tricky', ['URI:urn:x:DNS:admin', 'email:DNS:admin@example.com']);
    const info = await handshake(tricky);
    assert.equal(certIdentity(info, 'san-dns'), null);
    assert.equal(certIdentity(info, 'san-uri'), 'urn:x:DNS:admin');
  });
});

describe('formatSubject', () => {
  test('no subject formats as an empty string', () => {
    assert.equal(formatSubject(undefined), '');
  });

  test('a subject read from a certificate file formats as the handshake does', () => {
    // toLegacyObject() is the same shape getPeerCertificate() returns.
    const legacy = new X509Certificate(readFileSync(rich.cert)).toLegacyObject();
    assert.equal(formatSubject(legacy.subject), 'C=DE,O=Acme,OU=ops+db,CN=orders-svc');
  });
});
