// Opens one upstream connection as the mapped role, with credentials only the
// proxy holds, and runs the startup phase to the first ReadyForQuery. Our own
// Framer cuts the upstream's messages (size-capped: nothing in a login is
// large) and protocol/backend.ts decodes them; protocol/frontend-encode.ts
// writes ours. After ReadyForQuery the socket, and any bytes that came after
// it, go to the session for byte relay.

import net from 'node:net';
import tls from 'node:tls';
import type { UpstreamTlsConfig } from '../config/config.ts';
import { md5PasswordMessage } from '../auth/md5.ts';
import { ScramClientExchange, type SaltedPasswordCache } from '../auth/scram.ts';
import { RolegateError } from '../errors.ts';
import { decodeAuthentication, decodeBackendKeyData, decodeErrorFields, decodeParameterStatus, decodeReadyForQuery } from '../protocol/backend.ts';
import { Backend } from '../protocol/constants.ts';
import { FrameEvent, Framer } from '../protocol/framer.ts';
import { PARSER_SETTINGS } from '../sql/guarded-effects.ts';
import * as encode from '../protocol/frontend-encode.ts';

export { cancelRequest } from '../protocol/frontend-encode.ts';

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
  /** ParameterStatus values in arrival order. */
  parameterStatus: Map<string, string>;
  processId: number;
  secretKey: number;
  txStatus: number;
  /**
   * Bytes the upstream sent after ReadyForQuery in the same read (usually
   * none; a NotificationResponse or ParameterStatus may follow). They come
   * before anything the socket emits later: relay them first.
   */
  rest: Buffer;
}


/**
 * No message of a login comes near this (ParameterStatus, authentication, an
 * ErrorResponse): a bigger length field means the stream is not what it seems.
 */
export const LOGIN_MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * user, database, the caller's parameters, then the pinned ones (later entries
 * win in the server), and role = the login role: a setting from the startup
 * packet outranks the defaults ALTER ROLE / ALTER DATABASE … SET store, so a
 * `role` default planted outside rolegate cannot make the session another role.
 */
function startupParameters(login: UpstreamLogin): Map<string, string> {
  const params = new Map<string, string>([
    ['user', login.user],
    ['database', login.database],
  ]);
  for (const [k, v] of login.parameters) params.set(k, v);
  for (const [k, v] of PARSER_SETTINGS) params.set(k, v);
  params.set('role', login.user);
  return params;
}

/**
 * After the login, the server's reports must show the session as rolegate
 * asked for it: its pinned parameters, and the login role as session user
 * (session_authorization; servers that do not report it are not checked here).
 */
function loginMismatch(login: UpstreamLogin, reported: ReadonlyMap<string, string>): string | null {
  for (const [name, value] of reported) {
    const pinned = PARSER_SETTINGS.get(name.toLowerCase());
    if (pinned !== undefined && value.toLowerCase() !== pinned.toLowerCase()) return `parameter "${name}" is "${value}" after the login; rolegate requires ${name}=${pinned}`;
    if (name === 'session_authorization' && value !== login.user) return `the session user is "${value}" after logging in as role "${login.user}"`;
  }
  return null;
}

/** Send a CancelRequest to the upstream (fire and forget; errors are reported, never thrown). */
export function sendUpstreamCancel(target: UpstreamTarget, processId: number, secretKey: number, onError: (err: Error) => void): void {
  const socket = net.connect({ host: target.host, port: target.port });
  socket.setTimeout(target.connectTimeoutMs, () => socket.destroy(new Error('cancel request timed out')));
  socket.on('connect', () => socket.end(encode.cancelRequest(processId, secretKey)));
  socket.on('error', onError);
  socket.on('data', () => {});
}

/** Name of a backend message type for log messages ("DataRow"), or its code for an unknown type. */
function backendName(type: number): string {
  for (const [name, code] of Object.entries(Backend)) if (code === type) return name;
  return `type 0x${type.toString(16).padStart(2, '0')}`;
}

export function connectUpstream(target: UpstreamTarget, login: UpstreamLogin, scramCache: SaltedPasswordCache): Promise<UpstreamReady> {
  return new Promise((resolve, reject) => {
    let startupPacket: Buffer;
    try {
      startupPacket = encode.startup(startupParameters(login));
    } catch (err) {
      reject(new RolegateError('RG_INTERNAL', `upstream startup packet for role "${login.user}" cannot be built: ${(err as Error).message}`));
      return;
    }
    const raw = net.connect({ host: target.host, port: target.port });
    raw.setNoDelay(true);
    let socket: net.Socket = raw;
    const framer = new Framer(LOGIN_MAX_MESSAGE_BYTES);
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

    function malformed(what: string): RolegateError {
      return new RolegateError('RG_UPSTREAM_PROTOCOL', `upstream sent a malformed ${what} during startup`);
    }

    /** Authentication ('R'): answer the request, or verify the server's SCRAM proof. */
    function onAuthentication(body: Buffer): void {
      const request = decodeAuthentication(body);
      switch (request.kind) {
        case 'ok':
          // A server that skips SASLFinal has not proven it knows the verifier.
          if (scram !== null && !scram.complete) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent AuthenticationOk before completing SCRAM');
          return;
        case 'cleartext-password':
          socket.write(encode.password(needPassword('cleartext password')));
          return;
        case 'md5-password': {
          const answer = md5PasswordMessage(login.user, needPassword('md5'), request.salt);
          socket.write(encode.password(answer.toString('utf8')));
          return;
        }
        case 'sasl': {
          const mechanisms = request.mechanisms;
          if (!mechanisms.includes('SCRAM-SHA-256')) throw new RolegateError('RG_UPSTREAM_AUTH', `upstream offers SASL mechanisms ${mechanisms.join(', ')}; rolegate speaks SCRAM-SHA-256`);
          scram = new ScramClientExchange(needPassword('SCRAM-SHA-256'), scramCache);
          const first = scram.clientFirst();
          socket.write(encode.saslInitialResponse(first.mechanism, first.data));
          return;
        }
        case 'sasl-continue':
          if (scram === null) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent SASLContinue without SASL');
          socket.write(encode.saslResponse(scram.handleServerFirst(request.data)));
          return;
        case 'sasl-final':
          if (scram === null) throw new RolegateError('RG_UPSTREAM_AUTH', 'upstream sent SASLFinal without SASL');
          scram.verifyServerFinal(request.data);
          return;
        case 'unsupported':
          throw new RolegateError('RG_UPSTREAM_PROTOCOL', `upstream asked for an unsupported authentication method (Authentication request code ${request.code})`);
        case 'invalid':
          throw malformed(`Authentication request (${request.reason})`);
        default: {
          const unreachable: never = request;
          throw new RolegateError('RG_INTERNAL', `unhandled authentication request ${JSON.stringify(unreachable)}`);
        }
      }
    }

    /** ErrorResponse ('E'): the login is refused; 28xxx (invalid authorization) is the credentials' fault. */
    function onErrorResponse(body: Buffer): never {
      const fields = decodeErrorFields(body);
      const code = fields.get('C');
      const authFailure = code !== undefined && code.startsWith('28');
      throw new RolegateError(authFailure ? 'RG_UPSTREAM_AUTH' : 'RG_UPSTREAM_UNREACHABLE', `upstream refused role "${login.user}" on database "${login.database}": ${fields.get('M') ?? ''}`, { detail: code === undefined ? undefined : `upstream SQLSTATE ${code}` });
    }

    /** ReadyForQuery ('Z'): the login is done; the socket and the bytes after this message go to the caller. */
    function onReadyForQuery(body: Buffer): void {
      const txStatus = decodeReadyForQuery(body);
      if (txStatus === null) throw malformed('ReadyForQuery');
      const mismatch = loginMismatch(login, parameterStatus);
      if (mismatch !== null) throw new RolegateError('RG_UPSTREAM_PARAMETER', mismatch);
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onSocketError);
      socket.removeListener('close', onClose);
      raw.removeListener('error', onSocketError);
      resolve({ socket, parameterStatus, processId, secretKey, txStatus, rest: framer.takeRest() });
    }

    /** One whole message, dispatched by type in the order a login sends them. */
    function onMessage(type: number, body: Buffer): void {
      switch (type) {
        case Backend.Authentication:
          return onAuthentication(body);
        case Backend.ParameterStatus: {
          const ps = decodeParameterStatus(body);
          if (ps === null) throw malformed('ParameterStatus');
          parameterStatus.set(ps.name, ps.value);
          return;
        }
        case Backend.BackendKeyData: {
          const key = decodeBackendKeyData(body);
          if (key === null) throw malformed('BackendKeyData');
          processId = key.processId;
          secretKey = key.secretKey;
          return;
        }
        case Backend.ReadyForQuery:
          return onReadyForQuery(body);
        case Backend.NoticeResponse:
          return;
        case Backend.ErrorResponse:
          return onErrorResponse(body);
        default:
          throw new RolegateError('RG_UPSTREAM_PROTOCOL', `unexpected upstream message ${backendName(type)} during startup`);
      }
    }

    function onData(chunk: Buffer): void {
      if (settled) return;
      framer.push(chunk);
      try {
        while (!settled) {
          const event = framer.next();
          if (event === FrameEvent.NeedMore) return;
          if (event !== FrameEvent.Frame) {
            // No type is streamed here, so anything else is a length error.
            throw new RolegateError(
              'RG_UPSTREAM_PROTOCOL',
              framer.errorCode === 'RG_MESSAGE_TOO_LARGE'
                ? `upstream sent a message longer than ${LOGIN_MAX_MESSAGE_BYTES} bytes during startup`
                : 'upstream sent a message with an invalid length during startup',
            );
          }
          onMessage(framer.type, framer.buf.subarray(framer.start + 5, framer.end));
        }
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
      socket.write(startupPacket);
    }

    /** SSLRequest, then a TLS handshake on the same socket ("SSL Session Encryption"). */
    function negotiateTls(): void {
      const mode = target.tls.mode;
      raw.write(encode.sslRequest());
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
