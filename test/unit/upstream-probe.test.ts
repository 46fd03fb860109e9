// The readiness probe against fake upstreams (net.createServer writing raw
// bytes): what goes on the wire (one SSLRequest), each answer a server can
// give or not give, the TLS handshake that closes an 'S' politely, and the
// reuse of results under polling.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { probeUpstream, UpstreamReadiness, type ProbeResult, type ProbeTarget } from '../../src/upstream/probe.ts';
import { createTestPki, type TestPki } from '../helpers/certs.ts';

/** SSLRequest ("SSL Session Encryption"): length 8, code 80877103. */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

interface Seen {
  /** Every byte the probe sent on its (last) connection. */
  bytes: Buffer;
  /** The probe's connection ended (FIN or close). */
  ended: Promise<void>;
}

/** A fake upstream; `onSslRequest` decides what it does once the 8 bytes are in. */
async function fake(onSslRequest: (socket: net.Socket) => void): Promise<{ port: number; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    let resolveEnded = (): void => {};
    const entry: Seen = { bytes: Buffer.alloc(0), ended: new Promise((resolve) => (resolveEnded = resolve)) };
    seen.push(entry);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      resolveEnded();
    });
    const onData = (chunk: Buffer): void => {
      entry.bytes = Buffer.concat([entry.bytes, chunk]);
      if (entry.bytes.length < 8) return;
      socket.removeListener('data', onData);
      onSslRequest(socket);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function target(port: number, options: { timeoutMs?: number; mode?: ProbeTarget['tls']['mode'] } = {}): ProbeTarget {
  return { host: '127.0.0.1', port, connectTimeoutMs: options.timeoutMs ?? 2000, tls: { mode: options.mode ?? 'disable' } };
}

describe('probeUpstream', () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of closers) await c();
  });

  test("'N': ready; the probe sent exactly one SSLRequest and closed", async () => {
    const up = await fake((socket) => socket.write('N'));
    closers.push(up.close);
    assert.deepEqual(await probeUpstream(target(up.port)), { ok: true });
    await up.seen[0]?.ended;
    assert.equal(up.seen.length, 1);
    assert.deepEqual(up.seen[0]?.bytes, SSL_REQUEST, 'nothing but the SSLRequest: no credentials, no StartupMessage');
  });

  test("'N' while upstream.tls.mode requires TLS: logins would fail, so not ready", async () => {
    const up = await fake((socket) => socket.write('N'));
    closers.push(up.close);
    const result = await probeUpstream(target(up.port, { mode: 'require' }));
    assert.deepEqual(result, { ok: false, error: `127.0.0.1:${up.port} does not accept TLS (upstream.tls.mode is require)` });
  });

  test('no answer (a stopped postmaster): not ready once connect_timeout_ms has passed', async () => {
    const up = await fake(() => {});
    closers.push(up.close);
    const t0 = Date.now();
    const result = await probeUpstream(target(up.port, { timeoutMs: 300 }));
    const ms = Date.now() - t0;
    assert.deepEqual(result, { ok: false, error: 'no answer to SSLRequest within 300 ms' });
    assert.ok(ms >= 290 && ms < 1500, `gave up after ${ms} ms`);
    await up.seen[0]?.ended; // and the probe's connection is closed, not left behind
  });

  test('closed without an answer, an error answer, a stranger byte: not ready, each saying why', async () => {
    const closes = await fake((socket) => socket.destroy());
    const errors = await fake((socket) => socket.end('EFATAL:  sorry, too many clients already\n\0'));
    const http = await fake((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    closers.push(closes.close, errors.close, http.close);
    assert.deepEqual(await probeUpstream(target(closes.port)), { ok: false, error: `127.0.0.1:${closes.port} closed the connection without answering SSLRequest` });
    assert.deepEqual(await probeUpstream(target(errors.port)), { ok: false, error: `127.0.0.1:${errors.port} answered SSLRequest with an error (it cannot start a backend)` });
    assert.deepEqual(await probeUpstream(target(http.port)), { ok: false, error: `127.0.0.1:${http.port} answered SSLRequest with byte 0x48: not a PostgreSQL server?` });
  });

  test('a refused TCP connect: not ready', async () => {
    const up = await fake(() => {});
    const port = up.port;
    await up.close();
    const result = await probeUpstream(target(port));
    assert.equal(result.ok, false);
    assert.match((result as { error: string }).error, new RegExp(`^connect to 127\\.0\\.0\\.1:${port} failed: .*ECONNREFUSED`));
  });

  describe("'S': ready, and the TLS handshake is completed and closed with close_notify", () => {
    let pki: TestPki;
    before(() => {
      pki = createTestPki();
    });
    after(() => pki.cleanup());

    test('the server sees a finished handshake and a clean end, not an EOF in the middle of it', async () => {
      const cert = pki.issue('upstream', { cn: 'upstream', san: ['IP:127.0.0.1'] });
      const events: string[] = [];
      let done = (): void => {};
      const closed = new Promise<void>((resolve) => (done = resolve));
      const up = await fake((socket) => {
        socket.write('S');
        const secure = new tls.TLSSocket(socket, { isServer: true, key: readFileSync(cert.key), cert: readFileSync(cert.cert) });
        secure.on('secure', () => events.push('handshake'));
        secure.on('data', () => events.push('data'));
        secure.on('end', () => events.push('end'));
        secure.on('error', (err: Error) => events.push(`error: ${err.message}`));
        secure.on('close', () => done());
      });
      closers.push(up.close);
      assert.deepEqual(await probeUpstream(target(up.port, { mode: 'disable' })), { ok: true });
      await closed;
      assert.deepEqual(events, ['handshake', 'end'], 'handshake finished, no bytes sent over TLS, a clean end');
    });
  });
});

describe('UpstreamReadiness', () => {
  function counted(results: ProbeResult[]): { probe: () => Promise<ProbeResult>; calls: () => number; settle: () => void } {
    let calls = 0;
    let release = (): void => {};
    return {
      probe: () => {
        const result = results[Math.min(calls, results.length - 1)] as ProbeResult;
        calls++;
        return new Promise((resolve) => (release = () => resolve(result)));
      },
      calls: () => calls,
      settle: () => release(),
    };
  }

  test('callers during a probe share it; a result is reused for the interval, then probed anew', async () => {
    let now = 1_000_000;
    const fakeProbe = counted([{ ok: false, error: 'no answer to SSLRequest within 2500 ms' }, { ok: true }]);
    const readiness = new UpstreamReadiness(target(1), { now: () => now, probe: fakeProbe.probe });
    const waiting = [readiness.check(), readiness.check(), readiness.check()];
    assert.equal(fakeProbe.calls(), 1, 'one probe for three callers');
    now += 2500; // the probe took its time
    fakeProbe.settle();
    for (const r of await Promise.all(waiting)) assert.deepEqual(r, { ok: false, error: 'no answer to SSLRequest within 2500 ms' });

    now += 999;
    assert.deepEqual(await readiness.check(), { ok: false, error: 'no answer to SSLRequest within 2500 ms' }, 'reused inside the interval (counted from the result)');
    assert.equal(fakeProbe.calls(), 1);

    now += 1;
    const next = readiness.check();
    assert.equal(fakeProbe.calls(), 2, 'probed anew after the interval');
    fakeProbe.settle();
    assert.deepEqual(await next, { ok: true });
  });
});
