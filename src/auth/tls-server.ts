// The server side of client TLS: after SSLRequest (the client waited for our
// 'S'), or for PostgreSQL 17's direct TLS (sslnegotiation=direct: the first
// bytes already are a ClientHello). One never-listening tls.Server per TLS
// configuration runs the handshakes on sockets the worker's own listener
// accepted; a config reload swaps it for one with the new material.

import type net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { ClientTlsConfig } from '../config/config.ts';

/** The session's callbacks for one handshake. */
interface PendingTls {
  ready: (secure: tls.TLSSocket) => void;
  fail: (err: Error) => void;
}

const peerKey = (s: net.Socket): string => `${s.remoteAddress ?? ''}|${s.remotePort ?? 0}`;

function tlsServerOptions(c: ClientTlsConfig): tls.TlsOptions {
  return {
    cert: c.certPem,
    key: c.keyPem,
    ...(c.caPem === null ? {} : { ca: c.caPem }),
    requestCert: c.caPem !== null,
    // Verified by the session after the handshake, so a bad certificate gets a clear 28000 instead of a TLS alert.
    rejectUnauthorized: false,
    minVersion: c.minVersion,
    ...(c.ciphers === null ? {} : { ciphers: c.ciphers }),
    // Direct TLS requires ALPN "postgresql" (the session refuses a direct connection without it).
    ALPNProtocols: ['postgresql'],
  };
}

/**
 * Client TLS for one worker. The tls.Server never listens: sessions hand it
 * their socket, and it verifies client certificates the way a listening
 * server does (authorized / authorizationError on the TLSSocket). Handshakes
 * are matched back to their session by the socket's peer address and port.
 */
export class ClientTlsServer {
  private material: { config: ClientTlsConfig; server: tls.Server } | null;
  /** Shared by the current and replaced servers: a handshake in flight during a reload still reaches its session. */
  private readonly pending = new Map<string, PendingTls>();

  /** Throws when the certificate or key is unusable (the config holds the files' text; Node parses it here). */
  constructor(config: ClientTlsConfig | null) {
    this.material = config === null ? null : { config, server: this.makeServer(config) };
  }

  /** Is tls: configured (SSLRequest answered 'S', direct TLS accepted)? */
  get enabled(): boolean {
    return this.material !== null;
  }

  /**
   * Take the TLS material of a reloaded config (null: TLS now off). When the
   * new certificate or key is unusable the previous server stays in place and
   * the error is returned; handshakes already running finish on the server
   * they started on.
   */
  reload(config: ClientTlsConfig | null): Error | null {
    if (config === null) {
      this.material = null;
      return null;
    }
    try {
      this.material = { config, server: this.makeServer(config) };
      return null;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  /**
   * Run the server side of a handshake on this socket. `first`: bytes already
   * read from it (direct TLS: the start of the ClientHello); null after
   * SSLRequest. Exactly one of the callbacks is called, unless the socket
   * closes first.
   */
  upgrade(raw: net.Socket, first: Buffer | null, onReady: (secure: tls.TLSSocket) => void, onError: (err: Error) => void): void {
    const material = this.material;
    if (material === null) return onError(new Error('TLS is not configured'));
    if (first !== null) return directTlsUpgrade(material.config, raw, first, onReady, onError);
    const key = peerKey(raw);
    this.pending.set(key, { ready: onReady, fail: onError });
    raw.once('close', () => this.pending.delete(key));
    material.server.emit('connection', raw);
  }

  private makeServer(c: ClientTlsConfig): tls.Server {
    const server = new tls.Server(tlsServerOptions(c));
    server.on('secureConnection', (secure: tls.TLSSocket) => {
      const key = peerKey(secure);
      const pending = this.pending.get(key);
      this.pending.delete(key);
      if (pending === undefined) secure.destroy();
      else pending.ready(secure);
    });
    server.on('tlsClientError', (err: Error, secure: tls.TLSSocket) => {
      const key = peerKey(secure);
      const pending = this.pending.get(key);
      this.pending.delete(key);
      pending?.fail(err);
    });
    return server;
  }
}

/**
 * Direct TLS: the first bytes (the ClientHello) were already read, and a TCP
 * socket's handle cannot take them back, so the handshake runs over a stream
 * that replays them, on a tls.Server of its own (rare path; it builds a
 * secure context per connection).
 */
function directTlsUpgrade(c: ClientTlsConfig, raw: net.Socket, first: Buffer, onReady: (s: tls.TLSSocket) => void, onError: (e: Error) => void): void {
  const stream = new Duplex({
    read() {
      raw.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      raw.write(chunk, callback);
    },
    final(callback) {
      raw.end();
      callback();
    },
    destroy(err, callback) {
      raw.destroy(err ?? undefined);
      callback(err);
    },
  });
  stream.push(first);
  raw.on('data', (chunk: Buffer) => {
    if (!stream.push(chunk)) raw.pause();
  });
  raw.on('end', () => stream.push(null));
  const server = new tls.Server(tlsServerOptions(c));
  server.once('secureConnection', onReady);
  server.once('tlsClientError', onError);
  server.emit('connection', stream);
}
