// One registry of every error rolegate reports: stable code → SQLSTATE → message.
// Branch on `code`, never on message text. Errors that cross a thread boundary
// lose their class: send them as `toWire()` and rebuild with `fromWire()`.

export const ERRORS = {
  // protocol (client leg)
  RG_PROTOCOL_VIOLATION: { sqlstate: '08P01', message: 'protocol violation' },
  RG_MESSAGE_TOO_LARGE: { sqlstate: '08P01', message: 'message length exceeds the configured maximum' },
  RG_BAD_MESSAGE_LENGTH: { sqlstate: '08P01', message: 'invalid message length' },
  RG_UNKNOWN_MESSAGE: { sqlstate: '08P01', message: 'unknown message type' },
  RG_STARTUP_TOO_LARGE: { sqlstate: '08P01', message: 'startup packet too large' },
  RG_STARTUP_TIMEOUT: { sqlstate: '08P01', message: 'startup packet not received in time' },
  RG_STARTUP_INVALID: { sqlstate: '08P01', message: 'invalid startup packet' },
  RG_UNSUPPORTED_PROTOCOL: { sqlstate: '0A000', message: 'unsupported frontend protocol' },
  RG_INVALID_UTF8: { sqlstate: '22021', message: 'invalid byte sequence for encoding "UTF8"' },
  RG_NUL_IN_TEXT: { sqlstate: '22021', message: 'SQL text contains a NUL byte' },
  RG_BUFFER_BUDGET: { sqlstate: '53200', message: 'rolegate is holding too much of its clients\' incomplete messages (limits.max_buffered_bytes); try again later' },
  RG_STARTUP_PINNED: { sqlstate: '22023', message: 'rolegate sessions use client_encoding UTF8 and standard_conforming_strings on' },
  RG_REPLICATION_REFUSED: { sqlstate: '28000', message: 'replication connections are not allowed through rolegate' },
  RG_FUNCTION_CALL_REFUSED: { sqlstate: '42501', message: 'the FunctionCall protocol message is not allowed' },
  // authentication
  RG_AUTH_FAILED: { sqlstate: '28P01', message: 'password authentication failed' },
  RG_AUTH_METHOD: { sqlstate: '28000', message: 'authentication method not accepted' },
  RG_CONNECT_DENIED: { sqlstate: '28000', message: 'connection refused by policy' },
  /** The token sent as the password failed verification (signature, alg, iss, aud, exp, nbf, identity claim): a wrong credential, like a bad password (28P01 invalid_password), so clients do not retry it. */
  RG_JWT_INVALID: { sqlstate: '28P01', message: 'token authentication failed' },
  /**
   * The identity provider's JWKS could not be fetched or read, so no token can be checked. Not the client's fault:
   * 28xxx would make clients and operators discard a good credential. 08006 (connection_failure), like
   * RG_UPSTREAM_UNREACHABLE: a dependency of the login is unreachable; drivers' retry policies treat class 08 as transient.
   */
  RG_JWKS_UNAVAILABLE: { sqlstate: '08006', message: 'the identity provider keys (JWKS) are unavailable' },
  RG_TLS_REQUIRED: { sqlstate: '28000', message: 'TLS is required' },
  RG_CERT_REJECTED: { sqlstate: '28000', message: 'client certificate rejected' },
  RG_PROXY_PROTOCOL: { sqlstate: '08P01', message: 'PROXY protocol header refused' },
  RG_TOO_MANY_CLIENTS: { sqlstate: '53300', message: 'too many client connections' },
  // upstream
  RG_UPSTREAM_UNREACHABLE: { sqlstate: '08006', message: 'could not connect to the upstream database' },
  RG_UPSTREAM_AUTH: { sqlstate: '08006', message: 'the proxy could not authenticate to the upstream database' },
  RG_UPSTREAM_LOST: { sqlstate: '08006', message: 'connection to the upstream database was lost' },
  RG_UPSTREAM_PROTOCOL: { sqlstate: '08P01', message: 'upstream protocol violation' },
  RG_UPSTREAM_PARAMETER: { sqlstate: '08P01', message: 'upstream changed a pinned parameter' },
  // lifecycle
  RG_SHUTDOWN: { sqlstate: '57P01', message: 'terminating connection due to administrator command' },
  RG_INTERNAL: { sqlstate: 'XX000', message: 'internal error in rolegate' },
  RG_LOCAL_POSTGRES: { sqlstate: 'XX000', message: 'the local PostgreSQL cluster could not be started or used' },
  // statements
  RG_STATEMENT_DENIED: { sqlstate: '42501', message: 'statement denied by policy' },
  RG_PARSE_ERROR: { sqlstate: '42601', message: 'statement could not be parsed' },
  RG_PARSE_DENIED: { sqlstate: '42501', message: 'statement could not be parsed and is denied' },
  // policy and config (CLI / supervisor side; no client sees these)
  RG_CONFIG_INVALID: { sqlstate: 'F0000', message: 'invalid configuration' },
  RG_POLICY_BUILD: { sqlstate: 'F0000', message: 'policy could not be built' },
  /** The policy built but failed a build-time check (strict/schema type check, smoke test of the entry points); the running policy stays active. */
  RG_POLICY_CHECK: { sqlstate: 'F0000', message: 'policy failed the build-time checks' },
  RG_POLICY_LOAD: { sqlstate: 'F0000', message: 'policy could not be loaded' },
  RG_POLICY_EVAL: { sqlstate: 'XX000', message: 'policy evaluation failed' },
  // audit and metrics
  /** audit.mode fail-closed and the audit sink cannot take records: the statement (or connection) is refused, nothing runs. */
  RG_AUDIT_UNAVAILABLE: { sqlstate: '58030', message: 'refused: the audit log cannot be written (audit mode is fail-closed)' },
  /** The audit sink could not be set up at start-up (file not writable, bad URL): the proxy does not start. */
  RG_AUDIT_SINK: { sqlstate: 'F0000', message: 'the audit sink could not be opened' },
} as const satisfies Record<string, { sqlstate: string; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface WireError {
  code: ErrorCode;
  message: string;
  sqlstate: string;
  detail?: string;
}

export class RolegateError extends Error {
  readonly code: ErrorCode;
  readonly sqlstate: string;
  readonly detail: string | undefined;

  constructor(code: ErrorCode, message?: string, options?: { detail?: string; cause?: unknown }) {
    super(message ?? ERRORS[code].message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RolegateError';
    this.code = code;
    this.sqlstate = ERRORS[code].sqlstate;
    this.detail = options?.detail;
  }

  toWire(): WireError {
    const wire: WireError = { code: this.code, message: this.message, sqlstate: this.sqlstate };
    if (this.detail !== undefined) wire.detail = this.detail;
    return wire;
  }

  static fromWire(wire: WireError): RolegateError {
    return new RolegateError(wire.code, wire.message, wire.detail === undefined ? undefined : { detail: wire.detail });
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value);
}

/** Third-party code (opa-wasm) throws strings and plain objects: make an Error of anything. */
export function describeThrown(thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message;
  if (typeof thrown === 'string') return thrown;
  try {
    return JSON.stringify(thrown);
  } catch {
    return String(thrown);
  }
}
