// What a worker provides to each of its sessions, and the names a session's
// refusals are counted under. The parts are split by who needs them: the
// handshake (handshake.ts), the relay core (relay.ts) and the session that
// wires them to sockets (session.ts).

import type net from 'node:net';
import type tls from 'node:tls';
import type { SaltedPasswordCache } from '../auth/scram.ts';
import type { Config } from '../config/config.ts';
import type { ErrorCode } from '../errors.ts';
import type { REFUSE_REASONS, UPSTREAM_ERROR_KINDS } from '../metrics/definitions.ts';
import type { WelcomeCache } from '../upstream/welcome.ts';
import type { HandshakeHost } from './handshake.ts';
import type { RelayHost } from './relay.ts';

export interface SessionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** A session as the worker's cancel-key table holds it. */
export interface CancelTarget {
  readonly id: string;
  /** A CancelRequest with this session's keys arrived: cancel what runs upstream. */
  cancelUpstream(): void;
}

/** What the worker provides to each of its sessions. */
export interface SessionHost extends RelayHost, Omit<HandshakeHost, 'authFailed'> {
  readonly config: Config;
  /** Pre-resolved metric handles (resolved once per worker). */
  readonly handles: SessionMetricHandles;
  readonly scramCache: SaltedPasswordCache;
  /** The server's ParameterStatus values by login (upstream.connect: lazy). */
  readonly welcomes: WelcomeCache;
  /** Issue this session's BackendKeyData (worker id inside the process id). */
  register(session: CancelTarget): { processId: number; secretKey: number };
  unregister(session: CancelTarget): void;
  /** A CancelRequest arrived on this worker's listener: route it to the owning session. */
  routeCancel(processId: number, secretKey: number): void;
  /**
   * Run the server side of a TLS handshake on this socket (certificate and key
   * of the current config; client certificates verified against tls.ca_file).
   */
  tlsUpgrade(raw: net.Socket, first: Buffer | null, onReady: (secure: tls.TLSSocket) => void, onError: (err: Error) => void): void;
}

export interface SessionMetricHandles {
  refused: Readonly<Record<RefuseReason, number>>;
  authFailures: Readonly<Record<'scram-sha-256' | 'cert' | 'jwt' | 'other', number>>;
  upstreamErrors: Readonly<Record<(typeof UPSTREAM_ERROR_KINDS)[number], number>>;
}

export type RefuseReason = (typeof REFUSE_REASONS)[number];

/** Why a connection that never reached relay was closed, for rolegate_client_connections_refused_total. */
export function refuseReason(code: ErrorCode): RefuseReason {
  switch (code) {
    case 'RG_STARTUP_TIMEOUT':
      return 'startup_timeout';
    case 'RG_STARTUP_INVALID':
    case 'RG_STARTUP_TOO_LARGE':
      return 'startup_invalid';
    case 'RG_UNSUPPORTED_PROTOCOL':
      return 'unsupported_protocol';
    case 'RG_TLS_REQUIRED':
      return 'tls_required';
    case 'RG_AUTH_FAILED':
    case 'RG_JWT_INVALID':
    case 'RG_JWKS_UNAVAILABLE':
    case 'RG_CERT_REJECTED':
    case 'RG_AUTH_METHOD':
      return 'auth_failed';
    case 'RG_CONNECT_DENIED':
    case 'RG_REPLICATION_REFUSED':
      return 'policy_denied';
    case 'RG_UPSTREAM_UNREACHABLE':
    case 'RG_UPSTREAM_AUTH':
    case 'RG_UPSTREAM_LOST':
    case 'RG_UPSTREAM_PROTOCOL':
      return 'upstream_failed';
    case 'RG_AUDIT_UNAVAILABLE':
      return 'audit_unavailable';
    case 'RG_SHUTDOWN':
      return 'shutting_down';
    default:
      return 'protocol_error';
  }
}
