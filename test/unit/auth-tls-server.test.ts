// Client TLS on the worker side (src/auth/tls-server.ts): a plain TCP
// listener hands accepted sockets to ClientTlsServer, as a session does after
// answering SSLRequest with 'S' or on seeing a direct-TLS ClientHello; real
// Node TLS clients connect. Certificates come from the openssl test PKI.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { ClientTlsServer } from '../../src/auth/tls-server.ts';
import type { ClientTlsConfig } from '../../src/config/config.ts';
import { createTestPki, type IssuedCert, type TestPki } from '../helpers/certs.ts';

let pki: TestPki;
let proxyA: IssuedCert;
let proxyB: IssuedCert;

function tlsConfig(cert: IssuedCert, caFile: string | null = pki.caCert): ClientTlsConfig {
  return {
    certFile: cert.cert,
    keyFile: cert.key,
    certPem: readFileSync(cert.cert, 'utf8'),
    keyPem: readFileSync(cert.key, 'utf8'),
    caFile,
    caPem: caFile === null ? null : readFileSync(caFile, 'utf8'),
    minVersion: 'TLSv1.2',
    ciphers: null,
    required: false,
  };
}

type Outcome = { ok: true; raw: net.Socket; secure: tls.TLSSocket } | { ok: false; err: Error };

/**
 * A listener that upgrades every accepted socket: at once ('ssl', as after
 * SSLRequest) or with its first chunk ('direct'). `onAccept` runs right
 * after the upgrade starts (a reload in the middle of a handshake).
 */
async function front(tlsServer: ClientTlsServer, mode: 'ssl' | 'direct', onAccept?: () => void): Promise<{ port: number; next: () => Promise<Outcome>; close: () => void }> {
  const outcomes: Array<Promise<Outcome>> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('error', () => {});
    outcomes.push(
      new Promise<Outcome>((resolve) => {
        const upgrade = (first: Buffer | null): void => {
          tlsServer.upgrade(
            raw,
            first,
            (secure) => {
              // From here on only the TLS socket is closed: destroying the TCP
              // socket under it and then the TLS socket crashes Node 24.21
              // (SIGSEGV in TLSWrap, use after free), as a session never does.
              sockets.delete(raw);
              sockets.add(secure);
              resolve({ ok: true, raw, secure });
            },
            (err) => resolve({ ok: false, err }),
          );
          onAccept?.();
        };
        if (mode === 'ssl') upgrade(null);
        else raw.once('data', (first: Buffer) => upgrade(first));
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  let taken = 0;
  return {
    port,
    next: async () => {
      while (outcomes.length <= taken) await new Promise((r) => setTimeout(r, 5));
      return outcomes[taken++]!;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

interface ClientOptions {
  cert?: IssuedCert;
  alpn?: string[];
}

/** A TLS client that trusts the test CA; resolves once its handshake is done. */
function connectClient(port: number, options: ClientOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: readFileSync(pki.caCert),
      ...(options.cert === undefined ? {} : { cert: readFileSync(options.cert.cert), key: readFileSync(options.cert.key) }),
      ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** The server side echoes one chunk; the client sees it come back through TLS. */
async function roundTrip(client: tls.TLSSocket, secure: tls.TLSSocket): Promise<void> {
  secure.once('data', (chunk: Buffer) => secure.write(Buffer.concat([Buffer.from('echo:'), chunk])));
  const reply = new Promise<string>((resolve) => client.once('data', (chunk: Buffer) => resolve(chunk.toString())));
  client.write('ping');
  assert.equal(await reply, 'echo:ping');
}

const presentedCn = (client: tls.TLSSocket): unknown => client.getPeerCertificate().subject.CN;

before(() => {
  pki = createTestPki();
  proxyA = pki.issue('proxy-a', { cn: 'proxy-a', san: ['DNS:localhost'], server: true });
  proxyB = pki.issue('proxy-b', { cn: 'proxy-b', san: ['DNS:localhost'], server: true });
});
after(() => pki?.cleanup());

describe('ClientTlsServer', () => {
  test('without tls: configured it is disabled and refuses to upgrade', () => {
    const off = new ClientTlsServer(null);
    assert.equal(off.enabled, false);
    let failed: Error | null = null;
    off.upgrade(new net.Socket(), null, () => assert.fail('no handshake without TLS'), (err) => (failed = err));
    assert.match(String(failed), /TLS is not configured/);
  });

  test('unusable material at start throws (the worker cannot start without it)', () => {
    assert.throws(() => new ClientTlsServer({ ...tlsConfig(proxyA), keyPem: readFileSync(proxyB.key, 'utf8') }));
    assert.throws(() => new ClientTlsServer({ ...tlsConfig(proxyA), certPem: 'not a certificate' }));
  });

  test('after SSLRequest: the handshake completes, the client certificate is verified, data flows both ways', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    assert.equal(tlsServer.enabled, true);
    const f = await front(tlsServer, 'ssl');
    try {
      const clientCert = pki.issue('orders', { cn: 'orders-svc', client: true });
      const client = await connectClient(f.port, { cert: clientCert });
      const outcome = await f.next();
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.err.message);
      assert.equal(presentedCn(client), 'proxy-a');
      assert.equal(outcome.secure.authorized, true);
      assert.equal(outcome.secure.getPeerCertificate().subject.CN, 'orders-svc');
      await roundTrip(client, outcome.secure);
      client.destroy();
    } finally {
      f.close();
    }
  });

  test('an untrusted client certificate still completes the handshake (the session refuses it with 28000 later)', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    const f = await front(tlsServer, 'ssl');
    try {
      const client = await connectClient(f.port, { cert: pki.issue('stranger', { cn: 'orders-svc', client: true, ca: 'other' }) });
      const outcome = await f.next();
      assert.ok(outcome.ok);
      assert.equal(outcome.secure.authorized, false);
      assert.ok(outcome.secure.authorizationError);
      client.destroy();
    } finally {
      f.close();
    }
  });

  test('concurrent handshakes are each handed to the session whose socket they arrived on', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    const f = await front(tlsServer, 'ssl');
    try {
      const names = ['svc-0', 'svc-1', 'svc-2', 'svc-3', 'svc-4', 'svc-5'];
      const certs = names.map((cn) => pki.issue(`c-${cn}`, { cn, client: true }));
      const clients = await Promise.all(certs.map((cert) => connectClient(f.port, { cert })));
      const byLocalPort = new Map(clients.map((c, i) => [c.localPort, names[i]]));
      for (let i = 0; i < names.length; i++) {
        const outcome = await f.next();
        assert.ok(outcome.ok);
        assert.equal(outcome.secure.remotePort, outcome.raw.remotePort, 'the TLS socket runs over this session’s raw socket');
        assert.equal(outcome.secure.getPeerCertificate().subject.CN, byLocalPort.get(outcome.raw.remotePort));
      }
      for (const c of clients) c.destroy();
    } finally {
      f.close();
    }
  });

  test('direct TLS: the ClientHello already read is replayed; ALPN "postgresql" is negotiated; data flows both ways', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    const f = await front(tlsServer, 'direct');
    try {
      const client = await connectClient(f.port, { alpn: ['postgresql'], cert: pki.issue('direct-client', { cn: 'direct-svc', client: true }) });
      const outcome = await f.next();
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.err.message);
      assert.equal(outcome.secure.alpnProtocol, 'postgresql');
      assert.equal(client.alpnProtocol, 'postgresql');
      assert.equal(outcome.secure.authorized, true);
      assert.equal(outcome.secure.getPeerCertificate().subject.CN, 'direct-svc');
      await roundTrip(client, outcome.secure);
      client.destroy();

      // Without ALPN the handshake completes too; the session refuses the connection by alpnProtocol.
      const bare = await connectClient(f.port);
      const second = await f.next();
      assert.ok(second.ok);
      assert.equal(second.secure.alpnProtocol, false);
      bare.destroy();
    } finally {
      f.close();
    }
  });

  test('bytes that are not a TLS handshake fail the upgrade through onError', async () => {
    for (const mode of ['ssl', 'direct'] as const) {
      const f = await front(new ClientTlsServer(tlsConfig(proxyA)), mode);
      try {
        const raw = net.connect({ host: '127.0.0.1', port: f.port });
        raw.on('error', () => {});
        // Direct mode: a handshake record type byte (0x16) followed by nonsense.
        raw.write(mode === 'direct' ? Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9]) : Buffer.from('GET / HTTP/1.1\r\n\r\n'));
        const outcome = await f.next();
        assert.equal(outcome.ok, false, mode);
        raw.destroy();
      } finally {
        f.close();
      }
    }
  });

  test('reload: unusable material is refused and the previous certificate stays; usable material is taken; null turns TLS off', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    const f = await front(tlsServer, 'ssl');
    try {
      const mismatched = tlsServer.reload({ ...tlsConfig(proxyB), keyPem: readFileSync(proxyA.key, 'utf8') });
      assert.ok(mismatched instanceof Error);
      const garbage = tlsServer.reload({ ...tlsConfig(proxyB), certPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' });
      assert.ok(garbage instanceof Error);
      assert.equal(tlsServer.enabled, true);
      const still = await connectClient(f.port);
      assert.ok((await f.next()).ok);
      assert.equal(presentedCn(still), 'proxy-a', 'the previous material is kept');
      still.destroy();

      assert.equal(tlsServer.reload(tlsConfig(proxyB)), null);
      const renewed = await connectClient(f.port);
      assert.ok((await f.next()).ok);
      assert.equal(presentedCn(renewed), 'proxy-b');
      renewed.destroy();

      assert.equal(tlsServer.reload(null), null);
      assert.equal(tlsServer.enabled, false);
      const refused = connectClient(f.port);
      const outcome = await f.next();
      assert.equal(outcome.ok, false);
      assert.match(outcome.ok ? '' : outcome.err.message, /TLS is not configured/);
      f.close();
      await assert.rejects(refused);
    } finally {
      f.close();
    }
  });

  test('a handshake under way during a reload finishes on the server it started on', async () => {
    const tlsServer = new ClientTlsServer(tlsConfig(proxyA));
    let reloaded = false;
    const f = await front(tlsServer, 'ssl', () => {
      if (!reloaded) {
        reloaded = true;
        assert.equal(tlsServer.reload(tlsConfig(proxyB)), null);
      }
    });
    try {
      const during = await connectClient(f.port);
      const outcome = await f.next();
      assert.ok(outcome.ok, 'the session of the handshake in flight is still told');
      assert.equal(presentedCn(during), 'proxy-a');
      during.destroy();
      const afterwards = await connectClient(f.port);
      assert.ok((await f.next()).ok);
      assert.equal(presentedCn(afterwards), 'proxy-b');
      afterwards.destroy();
    } finally {
      f.close();
    }
  });
});
