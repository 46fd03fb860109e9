// Opens one upstream connection as the mapped role, with credentials only the
// proxy holds, and runs the startup phase to the first ReadyForQuery.
// pg-protocol parses the upstream's startup-phase messages and serializes ours;
// after ReadyForQuery the socket is handed to the session for byte relay and
// pg-protocol is no longer involved (its parser decodes every field to strings
// and has no size cap: not for the relay path).

import net from 'node:net';
import tls from 'node:tls';
import type { UpstreamTlsConfig } from '../config/config.ts';
import { serialize } from 'pg-protocol';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { md5PasswordMessage } from '../auth/md5.ts';
import { ScramClientExchange, type SaltedPasswordCache } from '../auth/scram.ts';
import { RolegateError } from '../errors.ts';
import { StartupCode } from '../protocol/constants.ts';

export interface UpstreamTarget {
  host: string;
  port: number;
  connectTimeoutMs: number;
  tls: UpstreamTlsConfig;
}

export interface UpstreamLogin {
  user: string;
  database: string;
  /** null: the upstream must not ask for a password (trust). */
  password: string | null;
  /** Startup parameters (already filtered by the caller; pinned ones added here). */
  parameters: ReadonlyMap<string, string>;
}

export interface UpstreamReady {
  socket: net.Socket;
  /** ParameterStatus messages in arrival order, raw bytes to relay to the client. */
  parameterStatus: Map<string, string>;
  processId: number;
  secretKey: number;
  txStatus: number;
}

/**
 * Parameters pinned on every upstream session: the SQL parser in the proxy reads
 * UTF-8 with standard-conforming strings; the server must read the same bytes
 * the same way (see LIBRARY-NOTES "Parser differentials").
 */
export const PINNED_PARAMETERS: ReadonlyMap<string, string> = new Map([
  ['client_encoding', 'UTF8'],
  ['standard_conforming_strings', 'on'],
]);

function startupMessage(login: UpstreamLogin): Buffer {
  // Built by hand rather than with serialize.startup(), which appends its own
  // client_encoding after ours.
  const parts: string[] = ['user', login.user, 'database', login.database];
  for (const [k, v] of login.parameters) parts.push(k, v);
  for (const [k, v] of PINNED_PARAMETERS) parts.push(k, v);
  const body = Buffer.from(parts.join('\0') + '\0\0', 'utf8');
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(8 + body.length, 0);
  out.writeInt32BE(StartupCode.Protocol3, 4);
  body.copy(out, 8);
  return out;
}

const SSL_REQUEST = Buffer.alloc(8);
SSL_REQUEST.writeInt32BE(8, 0);
SSL_REQUEST.writeInt32BE(StartupCode.SSLRequest, 4);

export function cancelRequest(processId: number, secretKey: number): Buffer {
  const out = Buffer.allocUnsafe(16);
  out.writeInt32BE(16, 0);
  out.writeInt32BE(StartupCode.CancelRequest, 4);
  out.writeInt32BE(processId, 8);
  out.writeInt32BE(secretKey, 12);
  return out;
}

/** Send a CancelRequest to the upstream (fire and forget; errors are reported, never thrown). */
export function sendUpstreamCancel(target: UpstreamTarget, processId: number, secretKey: number, onError: (err: Error) => void): void {
  const socket = net.connect({ host: target.host, port: target.port });
  socket.setTimeout(target.connectTimeoutMs, () => socket.destroy(new Error('cancel request timed out')));
  socket.on('connect', () => socket.end(cancelRequest(processId, secretKey)));
  socket.on('error', onError);
  socket.on('data', () => {});
}

export function connectUpstream(target: UpstreamTarget, login: UpstreamLogin, scramCache: SaltedPasswordCache): Promise<UpstreamReady> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: target.host, port: target.port });
    raw.setNoDelay(true);
    let socket: net.Socket = raw;
    const parser = new Parser();
    const parameterStatus = new Map<string, string>();
    let processId = 0;
    let secretKey = 0;
    let scram: ScramClientExchange | null = null;
    let settled = false;

    const timer = setTimeout(() => fail(new RolegateError('RG_UPSTREAM_UNREACHABLE', `upstream ${target.host}:${target.port} did not complete startup within ${target.connectTimeoutMs} ms`)), target.connectTimeoutMs);

    function fail(err: RolegateError): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('data');
      socket.destroy();
      raw.destroy();
      reject(err);
    }

    function needPassword(kind: string): string {
      if (login.password === null) throw new RolegateError('RG_UPSTREAM_AUTH', `upstream asked for ${kind} authentication for role "${login.user}", but the role is configured as trust`);
      return login.password;
    }

    function onMessage(msg: BackendMessage): void {
      if (settled) return;
      switch (msg.name) {
        case 'authenticationOk':
          // A server that skips SASLFinal has not proven it knows the verifier.
          if (scram !== null && !scram.complete) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent AuthenticationOk before completing SCRAM');
          return;
        case 'authenticationCleartextPassword':
          socket.write(serialize.password(needPassword('cleartext password')));
          return;
        case 'authenticationMD5Password': {
          const salt = (msg as unknown as { salt: Buffer }).salt;
          const body = md5PasswordMessage(login.user, needPassword('md5'), salt);
          socket.write(serialize.password(body.toString('utf8')));
          return;
        }
        case 'authenticationSASL': {
          const mechanisms = (msg as unknown as { mechanisms: string[] }).mechanisms;
          if (!mechanisms.includes('SCRAM-SHA-256')) throw new RolegateError('RG_UPSTREAM_AUTH', `upstream offers SASL mechanisms ${mechanisms.join(', ')}; rolegate speaks SCRAM-SHA-256`);
          scram = new ScramClientExchange(needPassword('SCRAM-SHA-256'), scramCache);
          const first = scram.clientFirst();
          socket.write(serialize.sendSASLInitialResponseMessage(first.mechanism, first.data.toString('utf8')));
          return;
        }
        case 'authenticationSASLContinue': {
          if (scram === null) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent SASLContinue without SASL');
          const data = (msg as unknown as { data: string }).data;
          socket.write(serialize.sendSCRAMClientFinalMessage(scram.handleServerFirst(Buffer.from(data, 'utf8')).toString('utf8')));
          return;
        }
        case 'authenticationSASLFinal': {
          if (scram === null) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent SASLFinal without SASL');
          scram.verifyServerFinal(Buffer.from((msg as unknown as { data: string }).data, 'utf8'));
          return;
        }
        case 'parameterStatus': {
          const ps = msg as unknown as { parameterName: string; parameterValue: string };
          parameterStatus.set(ps.parameterName, ps.parameterValue);
          return;
        }
        case 'backendKeyData': {
          const k = msg as unknown as { processID: number; secretKey: number };
          processId = k.processID;
          secretKey = k.secretKey;
          return;
        }
        case 'notice':
          return;
        case 'error': {
          const e = msg as unknown as { message: string; code?: string; severity?: string };
          const authFailure = e.code !== undefined && e.code.startsWith('28');
          throw new RolegateError(authFailure ? 'RG_UPSTREAM_AUTH' : 'RG_UPSTREAM_UNREACHABLE', `upstream refused role "${login.user}" on database "${login.database}": ${e.message}`, { detail: e.code === undefined ? undefined : `upstream SQLSTATE ${e.code}` });
        }
        case 'readyForQuery': {
          settled = true;
          clearTimeout(timer);
          socket.removeListener('data', onData);
          socket.removeListener('error', onSocketError);
          socket.removeListener('close', onClose);
          raw.removeListener('error', onSocketError);
          const status = (msg as unknown as { status: string }).status;
          resolve({ socket, parameterStatus, processId, secretKey, txStatus: status.charCodeAt(0) });
          return;
        }
        default:
          throw new RolegateError('RG_UPSTREAM_PROTOCOL', `unexpected upstream message "${msg.name}" during startup`);
      }
    }

    function onData(chunk: Buffer): void {
      try {
        parser.parse(chunk, onMessage);
      } catch (err) {
        fail(err instanceof RolegateError ? err : new RolegateError('RG_UPSTREAM_PROTOCOL', `upstream startup failed: ${(err as Error).message}`));
      }
    }
    function onSocketError(err: Error): void {
      fail(new RolegateError('RG_UPSTREAM_UNREACHABLE', `could not connect to upstream ${target.host}:${target.port}: ${err.message}`));
    }
    function onClose(): void {
      fail(new RolegateError('RG_UPSTREAM_LOST', `upstream ${target.host}:${target.port} closed the connection during startup`));
    }

    function startup(): void {
      socket.on('data', onData);
      socket.on('close', onClose);
      socket.write(startupMessage(login));
    }

    /** SSLRequest, then a TLS handshake on the same socket ("SSL Session Encryption"). */
    function negotiateTls(): void {
      const mode = target.tls.mode;
      raw.write(SSL_REQUEST);
      raw.once('data', (answer: Buffer) => {
        if (settled) return;
        if (answer.length !== 1) return fail(new RolegateError('RG_UPSTREAM_PROTOCOL', 'upstream answered SSLRequest with more than one byte (possible man-in-the-middle)'));
        if (answer[0] !== 0x53 /* 'S' */) return fail(new RolegateError('RG_UPSTREAM_UNREACHABLE', `upstream ${target.host}:${target.port} does not accept TLS (upstream.tls.mode is ${mode})`));
        const serverName = target.tls.serverName ?? target.host;
        const secure = tls.connect({
          socket: raw,
          host: serverName,
          ...(net.isIP(serverName) === 0 ? { servername: serverName } : {}),
          ...(target.tls.caPem === null ? {} : { ca: target.tls.caPem }),
          rejectUnauthorized: mode === 'verify-full',
          minVersion: 'TLSv1.2',
        });
        socket = secure;
        secure.on('error', onSocketError);
        secure.once('secureConnect', () => {
          if (settled) return;
          startup();
        });
      });
    }

    raw.on('error', onSocketError);
    raw.once('connect', () => {
      if (target.tls.mode === 'disable') startup();
      else negotiateTls();
    });
  });
}
