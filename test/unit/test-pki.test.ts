import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { createTestPki, type IssuedCert, type TestPki } from '../helpers/certs.ts';

// The test PKI helper (test/helpers/certs.ts) against node:crypto's own X.509
// checks and a real TLS handshake on loopback.

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

let pki: TestPki;
let ca: X509Certificate;
let otherCa: X509Certificate;
let server: IssuedCert;
let client: IssuedCert;
let expired: IssuedCert;
let early: IssuedCert;
let stranger: IssuedCert;

const load = (file: string): X509Certificate => new X509Certificate(readFileSync(file));
/** Extended key usage OIDs (Node 24 names it extKeyUsage; keyUsage is the older alias). */
const eku = (cert: X509Certificate): string[] | undefined => (cert as X509Certificate & { extKeyUsage?: string[] }).extKeyUsage ?? cert.keyUsage;

before(() => {
  pki = createTestPki();
  ca = load(pki.caCert);
  otherCa = load(pki.otherCaCert);
  server = pki.issue('server', { cn: 'localhost', san: ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1'], server: true });
  client = pki.issue('orders-svc', { cn: 'orders-svc', san: ['URI:spiffe://cluster.local/ns/orders/sa/orders-api'], client: true });
  expired = pki.issue('expired', { cn: 'old-svc', client: true, expired: true });
  early = pki.issue('early', { cn: 'future-svc', client: true, notYetValid: true });
  stranger = pki.issue('stranger', { cn: 'orders-svc', client: true, ca: 'other' });
});

after(() => pki.cleanup());

describe('test PKI', () => {
  test('the CAs are self-signed CA certificates, valid now, and unrelated', () => {
    for (const c of [ca, otherCa]) {
      assert.equal(c.ca, true);
      assert.ok(c.verify(c.publicKey));
      assert.ok(c.validFromDate.getTime() < Date.now() && c.validToDate.getTime() > Date.now());
    }
    assert.match(ca.subject, /CN=rolegate test CA/);
    assert.equal(ca.verify(otherCa.publicKey), false);
    assert.equal(statSync(pki.caKey).mode & 0o777, 0o600);
  });

  test('a server certificate: issued by the CA, SANs present, serverAuth, matches its key', () => {
    const cert = load(server.cert);
    assert.ok(cert.checkIssued(ca));
    assert.ok(cert.verify(ca.publicKey));
    assert.equal(cert.ca, false);
    assert.match(cert.subject, /CN=localhost/);
    for (const san of ['DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1']) assert.ok(cert.subjectAltName?.includes(san), `${san} in ${cert.subjectAltName}`);
    assert.equal(cert.checkHost('localhost'), 'localhost');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    assert.deepEqual(eku(cert), [SERVER_AUTH]);
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(server.key))));
    assert.equal(createPrivateKey(readFileSync(server.key)).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(statSync(server.key).mode & 0o777, 0o600);
    assert.ok(cert.validFromDate.getTime() < Date.now() && cert.validToDate.getTime() > Date.now() + 300 * 86_400_000);
  });

  test('a client certificate with a SPIFFE URI SAN and clientAuth only', () => {
    const cert = load(client.cert);
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey));
    assert.match(cert.subject, /CN=orders-svc/);
    assert.ok(cert.subjectAltName?.includes('URI:spiffe://cluster.local/ns/orders/sa/orders-api'));
    assert.deepEqual(eku(cert), [CLIENT_AUTH]);
  });

  test('client and server usage together; days sets the window', () => {
    const both = load(pki.issue('both', { cn: 'both', client: true, server: true, days: 2 }).cert);
    assert.deepEqual(eku(both)?.sort(), [SERVER_AUTH, CLIENT_AUTH].sort());
    assert.ok(both.validToDate.getTime() < Date.now() + 3 * 86_400_000);
  });

  test('the expired certificate has validTo in the past (and is still correctly signed)', () => {
    const cert = load(expired.cert);
    assert.ok(cert.validToDate.getTime() < Date.now());
    assert.ok(cert.validFromDate.getTime() < cert.validToDate.getTime());
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey));
  });

  test('the not-yet-valid certificate has validFrom in the future', () => {
    const cert = load(early.cert);
    assert.ok(cert.validFromDate.getTime() > Date.now());
    assert.ok(cert.verify(ca.publicKey));
  });

  test("the other CA's certificate does not verify against the main CA", () => {
    const cert = load(stranger.cert);
    assert.equal(cert.checkIssued(ca), false);
    assert.equal(cert.verify(ca.publicKey), false);
    assert.ok(cert.checkIssued(otherCa) && cert.verify(otherCa.publicKey));
    assert.match(cert.subject, /CN=orders-svc/); // same name, different issuer
  });

  test('a CN with "/", "+" and non-ASCII characters survives as written', () => {
    const cert = load(pki.issue('odd-cn', { cn: 'team/a+b ünïcode', client: true }).cert);
    // node renders the subject RFC 2253-style and escapes "+"; the stored UTF8String is literal.
    assert.equal(cert.subject, 'CN=team/a\\+b ünïcode');
  });

  test('bad input is refused before openssl runs', () => {
    assert.throws(() => pki.issue('../escape', { cn: 'x' }), /certificate name/);
    assert.throws(() => pki.issue('server', { cn: 'x' }), /already issued/);
    assert.throws(() => pki.issue('bad-san', { cn: 'x', san: ['DNS:a,IP:1.2.3.4'] }), /SAN/);
    assert.throws(() => pki.issue('bad-san2', { cn: 'x', san: ['localhost'] }), /SAN/);
    assert.throws(() => pki.issue('both-windows', { cn: 'x', expired: true, notYetValid: true }), /both/);
  });
});

describe('test PKI in a real TLS handshake (loopback)', () => {
  async function handshake(clientCert: IssuedCert | null): Promise<{ serverSaw: { authorized: boolean; error: string | null; cn: string | null }; clientOk: boolean }> {
    const tlsServer = tls.createServer({
      cert: readFileSync(server.cert),
      key: readFileSync(server.key),
      ca: readFileSync(pki.caCert),
      requestCert: true,
      rejectUnauthorized: false, // inspect the verdict instead of dropping the handshake
    });
    const seen = new Promise<{ authorized: boolean; error: string | null; cn: string | null }>((resolve) => {
      tlsServer.on('secureConnection', (socket) => {
        const peer = socket.getPeerCertificate();
        const error = socket.authorizationError;
        resolve({ authorized: socket.authorized, error: error === null ? null : String(error), cn: typeof peer.subject?.CN === 'string' ? peer.subject.CN : null });
        socket.end();
      });
    });
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    const port = (tlsServer.address() as AddressInfo).port;
    try {
      const clientOk = await new Promise<boolean>((resolve, reject) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: readFileSync(pki.caCert),
          ...(clientCert === null ? {} : { cert: readFileSync(clientCert.cert), key: readFileSync(clientCert.key) }),
        });
        socket.on('secureConnect', () => {
          resolve(socket.authorized);
          socket.end();
        });
        socket.on('error', reject);
      });
      return { serverSaw: await seen, clientOk };
    } finally {
      await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
    }
  }

  test('the client verifies the server (CA + SAN); the server verifies the client certificate', async () => {
    const r = await handshake(client);
    assert.equal(r.clientOk, true);
    assert.deepEqual(r.serverSaw, { authorized: true, error: null, cn: 'orders-svc' });
  });

  test('expired, not yet valid and other-CA client certificates are not authorized', async () => {
    assert.equal((await handshake(expired)).serverSaw.error, 'CERT_HAS_EXPIRED');
    assert.equal((await handshake(early)).serverSaw.error, 'CERT_NOT_YET_VALID');
    const other = (await handshake(stranger)).serverSaw;
    assert.equal(other.authorized, false);
    assert.match(other.error ?? '', /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
  });

  test('a server-only certificate is refused as a client certificate (extended key usage)', async () => {
    const r = await handshake(server);
    assert.equal(r.serverSaw.authorized, false);
    assert.match(r.serverSaw.error ?? '', /INVALID_PURPOSE/);
  });
});
