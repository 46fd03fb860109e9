// /readyz against upstreams that accept TCP but do not take logins. A fake
// upstream (a net.Server on 127.0.0.1) stands in for PostgreSQL, so the suite's
// shared server is never stopped: accepting and never answering is what a
// postmaster stopped with SIGSTOP looks like (the kernel completes the TCP
// handshake from the listen backlog); answering 'N' to SSLRequest is what a
// running one without TLS does. A closed port stands in for a server that is down.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { demoConfig } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';

const CONNECT_TIMEOUT_MS = 1000;
/** The probe result is reused for up to a second. */
const PROBE_INTERVAL_MS = 1000;
/** SSLRequest ("SSL Session Encryption"): length 8, code 80877103. */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

interface FakeUpstream {
  port: number;
  /** hang: accept and never answer (a stopped postmaster); answer: 'N' to SSLRequest (a running one). */
  mode: 'hang' | 'answer';
  /** Connections accepted so far. */
  connections: number;
  /** SSLRequests received so far. */
  sslRequests: number;
  close(): Promise<void>;
}

async function fakeUpstream(): Promise<FakeUpstream> {
  const sockets = new Set<net.Socket>();
  const fake: FakeUpstream = {
    port: 0,
    mode: 'hang',
    connections: 0,
    sslRequests: 0,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    fake.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 8) return;
      if (buf.subarray(0, 8).equals(SSL_REQUEST)) fake.sslRequests++;
      if (fake.mode === 'answer') socket.write('N');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.port = (server.address() as net.AddressInfo).port;
  return fake;
}

/** A port nothing listens on: bound once, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The demo config (no policy, no audit: only the upstream decides readiness) in front of `upstreamPort`. */
function configFor(upstreamPort: number): string {
  const base = demoConfig({ workers: 1, extra: 'admin: { host: 127.0.0.1, port: 0 }\n' });
  const upstream = /^upstream: \{ host: 127\.0\.0\.1, port: \d+ \}$/m;
  assert.match(base, upstream, 'the demo config has the upstream line this test replaces');
  return base.replace(upstream, `upstream: { host: 127.0.0.1, port: ${upstreamPort}, connect_timeout_ms: ${CONNECT_TIMEOUT_MS} }`);
}

async function adminPort(proxy: RunningProxy): Promise<number> {
  const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
  return Number(line['port']);
}

interface Readiness {
  status: number;
  ms: number;
  body: { ready: boolean; policy: boolean; audit: boolean; upstream: boolean; upstream_error: string | null };
}

async function readyz(port: number): Promise<Readiness> {
  const t0 = Date.now();
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  const body = (await res.json()) as Readiness['body'];
  return { status: res.status, ms: Date.now() - t0, body };
}

/** Polls /readyz until it answers `status`; fails after `withinMs`. */
async function readyzBecomes(port: number, status: number, withinMs: number): Promise<Readiness & { afterMs: number }> {
  const t0 = Date.now();
  for (;;) {
    const r = await readyz(port);
    const afterMs = Date.now() - t0;
    assert.ok(afterMs <= withinMs, `/readyz was ${r.status} after ${afterMs} ms (expected ${status} within ${withinMs} ms): ${JSON.stringify(r.body)}`);
    if (r.status === status) return { ...r, afterMs };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('/readyz reflects whether the upstream takes logins', { timeout: 120_000 }, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c();
  });

  test('an upstream that accepts TCP but never answers is not ready; one that answers SSLRequest is', async () => {
    const fake = await fakeUpstream();
    cleanup.push(() => fake.close());
    const proxy = await startProxy(configFor(fake.port));
    cleanup.push(() => proxy.stop());
    const port = await adminPort(proxy);

    // Hung: TCP is accepted, SSLRequest is never answered.
    const hung = await readyz(port);
    assert.equal(hung.status, 503, JSON.stringify(hung.body));
    assert.deepEqual(hung.body, { ready: false, policy: true, audit: true, upstream: false, upstream_error: `no answer to SSLRequest within ${CONNECT_TIMEOUT_MS} ms` });
    assert.ok(hung.ms < CONNECT_TIMEOUT_MS + 1000, `answered after ${hung.ms} ms`);
    assert.ok(fake.connections >= 1 && fake.sslRequests >= 1, 'the probe connected and sent SSLRequest');

    // Polling does not open a connection per request: results are reused for a second.
    const before = fake.connections;
    const burst = await Promise.all(Array.from({ length: 20 }, () => readyz(port)));
    assert.ok(
      burst.every((r) => r.status === 503),
      'every request of the burst sees the hung upstream',
    );
    assert.ok(fake.connections - before <= 1, `${fake.connections - before} probes for 20 requests`);

    // Running again (SIGCONT): it answers 'N'; ready within a probe interval.
    fake.mode = 'answer';
    const up = await readyzBecomes(port, 200, PROBE_INTERVAL_MS + CONNECT_TIMEOUT_MS + 1000);
    assert.deepEqual(up.body, { ready: true, policy: true, audit: true, upstream: true, upstream_error: null });

    // Stopped again: not ready within connect_timeout_ms and a probe interval.
    fake.mode = 'hang';
    const down = await readyzBecomes(port, 503, CONNECT_TIMEOUT_MS + PROBE_INTERVAL_MS + 500);
    assert.equal(down.body.upstream_error, `no answer to SSLRequest within ${CONNECT_TIMEOUT_MS} ms`);
  });

  test('an upstream port that refuses TCP is not ready, saying so', async () => {
    const proxy = await startProxy(configFor(await closedPort()));
    cleanup.push(() => proxy.stop());
    const port = await adminPort(proxy);
    const r = await readyz(port);
    assert.equal(r.status, 503);
    assert.equal(r.body.upstream, false);
    assert.match(String(r.body.upstream_error), /^connect to 127\.0\.0\.1:\d+ failed: .*ECONNREFUSED/);
  });
});
