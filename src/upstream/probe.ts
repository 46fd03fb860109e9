// Is the upstream taking logins? A TCP connect does not tell: a postmaster
// stopped with SIGSTOP still gets its connections accepted by the kernel (the
// listen backlog completes the handshake), yet no backend is ever started to
// read a startup packet, and every login times out. So the probe sends
// SSLRequest ("SSL Session Encryption"), which a running server answers with
// one byte, 'S' or 'N', before any authentication: no credentials needed.
//
// Leaving without noise in the server's log: after 'N' the server waits for a
// StartupMessage and says nothing when the connection closes before its first
// byte. After 'S' it waits for a TLS ClientHello, and a connection closed then
// is logged ("could not accept SSL connection: EOF detected") on every probe;
// so the probe completes the TLS handshake and closes with close_notify, which
// the server reads as a silent end before the StartupMessage.

import net from 'node:net';
import tls from 'node:tls';
import type { UpstreamTlsConfig } from '../config/config.ts';
import * as encode from '../protocol/frontend-encode.ts';

export interface ProbeTarget {
  host: string;
  port: number;
  /** The answer must come within this long: a login gets no longer. */
  connectTimeoutMs: number;
  tls: Pick<UpstreamTlsConfig, 'mode'>;
}

export type ProbeResult = { ok: true } | { ok: false; error: string };

/** A probe result is reused for this long, so polling /readyz does not open a connection per request. */
export const PROBE_MIN_INTERVAL_MS = 1000;

/** Bound on the polite TLS close after the answer was read (the result is already known then). */
const TLS_CLOSE_MS = 2000;

const SSL_ANSWER_YES = 0x53; // 'S'
const SSL_ANSWER_NO = 0x4e; // 'N'
const ERROR_RESPONSE = 0x45; // 'E': a server that cannot start a backend (fork failed) says so instead

/** One SSLRequest exchange: resolves ok when the server answers 'S' or 'N' within connectTimeoutMs. */
export function probeUpstream(target: ProbeTarget): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const where = `${target.host}:${target.port}`;
    const socket = net.connect({ host: target.host, port: target.port });
    let connected = false;
    let settled = false;
    const finish = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const fail = (error: string): void => {
      socket.destroy();
      finish({ ok: false, error });
    };
    const timer = setTimeout(() => {
      fail(connected ? `no answer to SSLRequest within ${target.connectTimeoutMs} ms` : `TCP connect to ${where} did not complete within ${target.connectTimeoutMs} ms`);
    }, target.connectTimeoutMs);
    socket.on('error', (err: Error) => fail(`connect to ${where} failed: ${err.message}`));
    socket.once('close', () => fail(`${where} closed the connection without answering SSLRequest`));
    socket.once('connect', () => {
      connected = true;
      socket.write(encode.sslRequest());
    });
    socket.once('data', (answer: Buffer) => {
      switch (answer[0]) {
        case SSL_ANSWER_NO:
          socket.destroy();
          if (target.tls.mode !== 'disable') return finish({ ok: false, error: `${where} does not accept TLS (upstream.tls.mode is ${target.tls.mode})` });
          return finish({ ok: true });
        case SSL_ANSWER_YES:
          socket.removeAllListeners('close');
          socket.removeAllListeners('error');
          closeTls(socket, target.host);
          return finish({ ok: true });
        case ERROR_RESPONSE:
          return fail(`${where} answered SSLRequest with an error (it cannot start a backend)`);
        default:
          return fail(`${where} answered SSLRequest with byte 0x${(answer[0] ?? 0).toString(16).padStart(2, '0')}: not a PostgreSQL server?`);
      }
    });
  });
}

/** Complete the TLS handshake the 'S' promised, then close with close_notify. Errors only end it early. */
function closeTls(raw: net.Socket, host: string): void {
  // The certificate is not checked: nothing is sent over this connection.
  const secure = tls.connect({ socket: raw, ...(net.isIP(host) === 0 ? { servername: host } : {}), rejectUnauthorized: false });
  const timer = setTimeout(() => secure.destroy(), TLS_CLOSE_MS);
  timer.unref();
  secure.on('error', () => secure.destroy());
  secure.once('secureConnect', () => secure.end());
  secure.once('close', () => {
    clearTimeout(timer);
    raw.destroy();
  });
  // Anything the server sends (TLS 1.3 session tickets) is read and dropped, so its close comes through.
  secure.resume();
}

/** Probe results for /readyz: at most one probe per `minIntervalMs`; callers during a probe share it. */
export class UpstreamReadiness {
  private readonly target: ProbeTarget;
  private readonly minIntervalMs: number;
  private readonly now: () => number;
  private readonly probe: (target: ProbeTarget) => Promise<ProbeResult>;
  private lastMs = Number.NEGATIVE_INFINITY;
  private last: ProbeResult = { ok: false, error: 'not probed yet' };
  private inflight: Promise<ProbeResult> | null = null;

  constructor(target: ProbeTarget, options: { minIntervalMs?: number; now?: () => number; probe?: (target: ProbeTarget) => Promise<ProbeResult> } = {}) {
    this.target = target;
    this.minIntervalMs = options.minIntervalMs ?? PROBE_MIN_INTERVAL_MS;
    this.now = options.now ?? Date.now;
    this.probe = options.probe ?? probeUpstream;
  }

  check(): Promise<ProbeResult> {
    if (this.now() - this.lastMs < this.minIntervalMs) return Promise.resolve(this.last);
    const settle = (result: ProbeResult): ProbeResult => {
      this.last = result;
      this.lastMs = this.now();
      this.inflight = null;
      return result;
    };
    this.inflight ??= this.probe(this.target).then(settle, (err: unknown) => settle({ ok: false, error: `probe failed: ${err instanceof Error ? err.message : String(err)}` }));
    return this.inflight;
  }
}
