// Configuration: read once from YAML, validated with every problem reported
// together (file, key, line, what is wrong), then deep-frozen. Workers get the
// frozen plain object through postMessage (structured clone).

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { isMap, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { RolegateError } from '../errors.ts';
import { parseCidr } from './ip-address.ts';

export interface RoleCredentials {
  /** Resolved secret; null means the upstream trusts this role (no password). */
  password: string | null;
  /** Where the secret came from, for messages: "config", "env:NAME", "file:/path". */
  source: string;
}

export interface UserConfig {
  scramVerifier: string;
  /** Static identity → role mapping, used when no policy is configured. */
  role: string | null;
  database: string | null;
}

export interface PolicyConfig {
  dir: string;
  dataFile: string | null;
  opaPath: string | null;
  watch: boolean;
  /** policy.revisions: where every revision that was built to become active is kept (absent: not kept). */
  revisions?: PolicyRevisionsConfig;
  /** policy.shadow: a candidate policy decided beside the active one, never enforced (absent: off). */
  shadow?: PolicyShadowConfig;
}

/** policy.shadow: where the candidate's Rego (and optionally its data file) live; reloaded with the active policy. */
export interface PolicyShadowConfig {
  dir: string;
  dataFile: string | null;
}

/** policy.revisions: a content-addressed store of built policies, `<dir>/<revision>/`, the newest maxCount kept. */
export interface PolicyRevisionsConfig {
  dir: string;
  maxCount: number;
}

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3';

/** Client-side TLS (the proxy as TLS server). PEM contents are read at load and on every reload. */
export interface ClientTlsConfig {
  certFile: string;
  keyFile: string;
  certPem: string;
  keyPem: string;
  /** CA bundle that client certificates must chain to (mTLS); null = no client certificates requested. */
  caFile: string | null;
  caPem: string | null;
  minVersion: TlsVersion;
  ciphers: string | null;
  /** Refuse logins that are not over TLS (28000). */
  required: boolean;
}

export type UpstreamTlsMode = 'disable' | 'require' | 'verify-full';

export interface UpstreamTlsConfig {
  mode: UpstreamTlsMode;
  caFile: string | null;
  caPem: string | null;
  /** Name checked against the server certificate (verify-full); default upstream.host. */
  serverName: string | null;
}

export type CertIdentitySource = 'cn' | 'san-dns' | 'san-uri' | 'san-email';

export interface JwtAuthConfig {
  issuer: string;
  audience: string[];
  jwksUrl: string;
  algorithms: string[];
  clockSkewSec: number;
  identityClaim: string;
  jwksCacheMs: number;
  jwksTimeoutMs: number;
  /** An unknown key id refetches the JWKS at most this often. */
  minRefreshIntervalMs: number;
}

/** Every asymmetric JWS algorithm jose verifies with a public key from a JWKS: the only values auth.jwt.algorithms accepts. */
export const ASYMMETRIC_JWS_ALGORITHMS: readonly string[] = Object.freeze([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

export interface AuthConfig {
  /** A verified client certificate is the identity (no password); null = certificates are not an auth method. */
  cert: { identity: CertIdentitySource } | null;
  /** A JWT sent as the password (over TLS only) is the identity; null = off. */
  jwt: JwtAuthConfig | null;
}

export interface ProxyProtocolConfig {
  /** Load balancers allowed to send a PROXY header (v1 or v2). */
  trustedCidrs: readonly string[];
  /** Connections from trusted addresses must start with a PROXY header. */
  required: boolean;
}

export type AuditSinkKind = 'stdout' | 'file' | 'http';

/**
 * fail-closed: a statement (and a connection) is refused while its record
 * cannot be written. best-effort: statements go on; such records are dropped
 * and counted.
 */
export type AuditMode = 'fail-closed' | 'best-effort';

/** audit.parameters: what a record holds of bound parameters — nothing, their sizes (redacted), or their values cut to maxParameterBytes (full). */
export type ParameterMode = 'off' | 'redacted' | 'full';

/** audit.input: what a record holds of its decision's policy input — nothing, what the record's other fields lack (facts), or all of it (full). */
export type AuditInputMode = 'off' | 'facts' | 'full';

/** The default mode of each sink kind when audit.mode is not set. */
export function defaultAuditMode(sink: AuditSinkKind): AuditMode {
  switch (sink) {
    case 'file':
      return 'fail-closed';
    case 'stdout':
    case 'http':
      return 'best-effort';
    default: {
      const unreachable: never = sink;
      return unreachable;
    }
  }
}

/** audit.stdout: the sink's queue bounds. */
export interface AuditStdoutConfig {
  maxQueuedRecords: number;
  maxQueuedBytes: number;
}

/** audit.file: path, size-based rotation, queue bounds and the retry interval after a failed write. */
export interface AuditFileConfig {
  path: string;
  /** Rotate before a write would take the file past this size. */
  maxBytes: number;
  /** Rotated files kept: path.1 (newest) … path.<keep>; 0 = just start the file over. */
  keep: number;
  maxQueuedRecords: number;
  maxQueuedBytes: number;
  /** After a failure, try to reopen and write again every retryMs. */
  retryMs: number;
}

/** audit.http: NDJSON batches POSTed to url. */
export interface AuditHttpConfig {
  /** http: or https: URL the NDJSON batches are POSTed to. */
  url: string;
  /** Lower-case header names; values from headers and headers_env. */
  headers: Readonly<Record<string, string>>;
  batchMaxRecords: number;
  batchMaxBytes: number;
  /** Send a partial batch at least this often. */
  flushIntervalMs: number;
  /** Connect, headers and body timeout of one request. */
  timeoutMs: number;
  maxQueuedRecords: number;
  maxQueuedBytes: number;
  /** Backoff after a failed batch: retryInitialMs × 2^(attempt-1), capped at retryMaxMs, with jitter (½ to 1 ×). */
  retryInitialMs: number;
  retryMaxMs: number;
}

export interface AuditConfig {
  sink: AuditSinkKind;
  mode: AuditMode;
  maxSqlBytes: number;
  parameters: ParameterMode;
  maxParameterBytes: number;
  /** Absent: off. */
  input?: AuditInputMode;
  worker: { bufferRecords: number; bufferBytes: number; batchRecords: number; flushIntervalMs: number };
  stdout: AuditStdoutConfig;
  /** Set when the audit: section has a file: key (required for sink: file). */
  file: AuditFileConfig | null;
  /** Set when the audit: section has an http: key (required for sink: http). */
  http: AuditHttpConfig | null;
}

export interface Config {
  file: string | null;
  listen: { host: string; port: number };
  workers: number;
  upstream: {
    host: string;
    port: number;
    connectTimeoutMs: number;
    tls: UpstreamTlsConfig;
    /**
     * eager: log in upstream as soon as the client is authenticated. lazy: on the
     * client's first message, when the worker already knows the server's
     * ParameterStatus values for the same role, database and parameters (an idle
     * client then holds no upstream connection).
     */
    connect: 'eager' | 'lazy';
  };
  tls: ClientTlsConfig | null;
  auth: AuthConfig;
  proxyProtocol: ProxyProtocolConfig | null;
  limits: {
    maxMessageBytes: number;
    /** All sessions' incomplete client messages together (a split message of 64 KiB or more counts its declared size while it waits). */
    maxBufferedBytes: number;
    /** Longest Query / Parse text rolegate parses and decides (longer: refused, 54000). At most MAX_STATEMENT_BYTES_LIMIT. */
    maxStatementBytes: number;
    startupTimeoutMs: number;
    maxClientConnections: number;
    parseCacheEntries: number;
    decisionCacheEntries: number;
    /** V8 young generation of each worker thread, MiB (resourceLimits.maxYoungGenerationSizeMb). */
    workerYoungGenerationMb: number;
  };
  users: Readonly<Record<string, UserConfig>>;
  roles: Readonly<Record<string, RoleCredentials>>;
  policy: PolicyConfig | null;
  /** fixedMs: the clock starts at this instant and advances in real time (tests, what-if); null = system clock. */
  time: { zone: string; bucketMs: number; fixedMs: number | null };
  proxy: { env: string; instance: string };
  admin: { host: string; port: number } | null;
  shutdown: { drainTimeoutMs: number };
  /** Startup parameters a client may pass through to the upstream. */
  passthroughParameters: readonly string[];
  /** null: audit off. */
  audit: AuditConfig | null;
  metrics: MetricsConfig;
  /** guards.allow: the side doors the operator opened by name (rolegate's other guards cannot be lifted). */
  guards: { allow: readonly LiftableGuard[] };
}

/**
 * Guards an operator may lift with guards.allow (decision/guards.ts holds
 * them all): each opens a way out of the database, not a way around rolegate.
 * The role and the parser's settings stay guarded whatever the config says.
 */
/**
 * The largest limits.max_statement_bytes: a statement's text goes into the
 * policy's input, and the policy's WebAssembly memory gives out between 16 and
 * 32 MiB of text (opa_malloc fails: the statement would be refused as a
 * policy error, or allowed from a cache, depending on what came before). Parse
 * and evaluation take about 45 ms per MiB on a worker's thread, during which
 * its other sessions wait: the default (1 MiB) keeps that under ~50 ms.
 */
export const MAX_STATEMENT_BYTES_LIMIT = 16 * 1024 * 1024;

export const LIFTABLE_GUARDS = ['copy_program', 'copy_file', 'large_objects', 'server_files', 'remote_connections'] as const;
export type LiftableGuard = (typeof LIFTABLE_GUARDS)[number];

const DEFAULT_PASSTHROUGH = [
  'application_name',
  'DateStyle',
  'IntervalStyle',
  'TimeZone',
  'extra_float_digits',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
] as const;

type Raw = Record<string, unknown>;

class Problems {
  readonly list: string[] = [];
  private readonly where: (keyPath: string) => string;
  constructor(where: (keyPath: string) => string) {
    this.where = where;
  }
  add(keyPath: string, what: string): void {
    this.list.push(`${this.where(keyPath)}: ${what}`);
  }
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads typed values out of a raw object, recording a problem for each bad one. */
class Reader {
  private readonly problems: Problems;
  private readonly raw: Raw;
  private readonly prefix: string;
  private readonly seen = new Set<string>();

  constructor(problems: Problems, raw: unknown, prefix: string) {
    this.problems = problems;
    this.prefix = prefix;
    if (raw === undefined || raw === null) {
      this.raw = {};
    } else if (isObject(raw)) {
      this.raw = raw;
    } else {
      problems.add(prefix || '(top level)', 'must be a mapping');
      this.raw = {};
    }
  }

  key(k: string): string {
    return this.prefix ? `${this.prefix}.${k}` : k;
  }

  has(k: string): boolean {
    return this.raw[k] !== undefined && this.raw[k] !== null;
  }

  value(k: string): unknown {
    this.seen.add(k);
    return this.raw[k];
  }

  string(k: string, fallback?: string): string {
    const v = this.value(k);
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.problems.add(this.key(k), 'is required');
      return '';
    }
    if (typeof v !== 'string' || v.length === 0) {
      this.problems.add(this.key(k), `must be a non-empty string, got ${JSON.stringify(v)}`);
      return fallback ?? '';
    }
    return v;
  }

  optionalString(k: string): string | null {
    const v = this.value(k);
    if (v === undefined || v === null) return null;
    if (typeof v !== 'string' || v.length === 0) {
      this.problems.add(this.key(k), `must be a non-empty string, got ${JSON.stringify(v)}`);
      return null;
    }
    return v;
  }

  int(k: string, fallback: number, min: number, max: number): number {
    const v = this.value(k);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.problems.add(this.key(k), `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
      return fallback;
    }
    return v;
  }

  bool(k: string, fallback: boolean): boolean {
    const v = this.value(k);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') {
      this.problems.add(this.key(k), `must be true or false, got ${JSON.stringify(v)}`);
      return fallback;
    }
    return v;
  }

  oneOf<T extends string>(k: string, values: readonly T[], fallback: T): T {
    const v = this.value(k);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
      this.problems.add(this.key(k), `must be one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
      return fallback;
    }
    return v as T;
  }

  stringList(k: string, fallback: readonly string[]): string[] {
    const v = this.value(k);
    if (v === undefined || v === null) return [...fallback];
    if (typeof v === 'string' && v.length > 0) return [v];
    if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== 'string' || x.length === 0)) {
      this.problems.add(this.key(k), `must be a non-empty list of strings, got ${JSON.stringify(v)}`);
      return [...fallback];
    }
    return v as string[];
  }

  /** A file path (relative to the config file) whose contents are read now. */
  file(k: string, baseDir: string, required: boolean): { path: string; text: string } | null {
    const rel = required ? this.string(k) : this.optionalString(k);
    if (rel === null || rel === '') return null;
    const p = path.resolve(baseDir, rel);
    try {
      return { path: p, text: readFileSync(p, 'utf8') };
    } catch (err) {
      this.problems.add(this.key(k), `cannot read ${p}: ${(err as Error).message}`);
      return null;
    }
  }

  child(k: string): Reader {
    return new Reader(this.problems, this.value(k), this.key(k));
  }

  /** Entries of a mapping whose keys are names (users, roles). */
  entries(k: string): Array<[string, Reader]> {
    const v = this.value(k);
    if (v === undefined || v === null) return [];
    if (!isObject(v)) {
      this.problems.add(this.key(k), 'must be a mapping of names');
      return [];
    }
    return Object.keys(v).map((name) => [name, new Reader(this.problems, v[name], `${this.key(k)}.${name}`)]);
  }

  /** Report keys nobody read: typos must not pass silently. */
  finish(): void {
    for (const k of Object.keys(this.raw)) {
      if (!this.seen.has(k)) this.problems.add(this.key(k), 'unknown key');
    }
  }
}

export interface LoadOptions {
  /** Environment used for password_env (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Parse and validate a YAML config file; throws RG_CONFIG_INVALID listing every problem. */
export function loadConfigFile(file: string, options: LoadOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RolegateError('RG_CONFIG_INVALID', `${file}: cannot read config file: ${(err as Error).message}`);
  }
  return parseConfig(text, file, options);
}

export function parseConfig(text: string, file: string | null, options: LoadOptions = {}): Config {
  const label = file ?? '<config>';
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const msgs = doc.errors.map((e) => {
      // e.linePos is only filled in with prettyErrors: true; e.pos is always there.
      const pos = lineCounter.linePos(e.pos[0]);
      return `${label}:${pos.line}:${pos.col}: ${e.message.split('\n')[0]}`;
    });
    throw new RolegateError('RG_CONFIG_INVALID', `invalid configuration:\n  ${msgs.join('\n  ')}`);
  }
  const where = (keyPath: string): string => {
    const node = nodeAt(doc.contents, keyPath);
    const line = node?.range ? lineCounter.linePos(node.range[0]).line : null;
    return `${label}${line === null ? '' : `:${line}`}: ${keyPath}`;
  };
  const problems = new Problems(where);
  const baseDir = file === null ? process.cwd() : path.dirname(path.resolve(file));
  const config = validate(doc.toJS(), problems, baseDir, options.env ?? process.env, file);
  if (problems.list.length > 0) {
    throw new RolegateError('RG_CONFIG_INVALID', `invalid configuration (${problems.list.length} problem${problems.list.length === 1 ? '' : 's'}):\n  ${problems.list.join('\n  ')}`);
  }
  return deepFreeze(config);
}

/** The node at keyPath, or the nearest enclosing one when a key is missing (so "is required" still gets a line). */
function nodeAt(root: unknown, keyPath: string): YamlNode | null {
  let node: unknown = root;
  for (const part of keyPath.split('.')) {
    if (!isMap(node)) break;
    const child: unknown = node.get(part, true);
    if (child === undefined) break;
    node = child;
  }
  return (node as YamlNode | null | undefined) ?? null;
}

const SCRAM_VERIFIER = /^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/;
const IDENT = /^[A-Za-z_][A-Za-z0-9_$-]*$/;

function validate(raw: unknown, problems: Problems, baseDir: string, env: NodeJS.ProcessEnv, file: string | null): Config {
  const top = new Reader(problems, raw, '');

  const listen = top.child('listen');
  const listenCfg = { host: listen.string('host', '127.0.0.1'), port: listen.int('port', 6432, 0, 65535) };
  listen.finish();

  // At most 127: the worker id lives in 7 bits of the BackendKeyData process id (cancel routing).
  const workers = top.int('workers', Math.min(availableParallelism(), 127), 1, 127);

  const up = top.child('upstream');
  const upHost = up.string('host', '127.0.0.1');
  const upPort = up.int('port', 5432, 1, 65535);
  const upTimeout = up.int('connect_timeout_ms', 5000, 100, 600_000);
  const ut = up.child('tls');
  const upTlsMode = ut.oneOf('mode', ['disable', 'require', 'verify-full'] as const, 'disable');
  const upCa = ut.file('ca_file', baseDir, false);
  if (upTlsMode === 'verify-full' && upCa === null) problems.add(ut.key('ca_file'), 'is required for mode verify-full (the CA bundle the server certificate must chain to)');
  const upstreamTls: UpstreamTlsConfig = { mode: upTlsMode, caFile: upCa?.path ?? null, caPem: upCa?.text ?? null, serverName: ut.optionalString('server_name') };
  ut.finish();
  const upstream = { host: upHost, port: upPort, connectTimeoutMs: upTimeout, tls: upstreamTls, connect: up.oneOf('connect', ['eager', 'lazy'] as const, 'lazy') };
  up.finish();

  let tls: ClientTlsConfig | null = null;
  if (top.has('tls')) {
    const t = top.child('tls');
    const cert = t.file('cert_file', baseDir, true);
    const key = t.file('key_file', baseDir, true);
    const ca = t.file('ca_file', baseDir, false);
    tls = {
      certFile: cert?.path ?? '',
      keyFile: key?.path ?? '',
      certPem: cert?.text ?? '',
      keyPem: key?.text ?? '',
      caFile: ca?.path ?? null,
      caPem: ca?.text ?? null,
      minVersion: t.oneOf('min_version', ['TLSv1.2', 'TLSv1.3'] as const, 'TLSv1.2'),
      ciphers: t.optionalString('ciphers'),
      required: t.bool('required', false),
    };
    if (cert !== null && !cert.text.includes('BEGIN CERTIFICATE')) problems.add(t.key('cert_file'), `${cert.path} holds no PEM certificate`);
    if (key !== null && !/BEGIN [A-Z ]*PRIVATE KEY/.test(key.text)) problems.add(t.key('key_file'), `${key.path} holds no PEM private key`);
    t.finish();
  } else {
    top.value('tls');
  }

  const au = top.child('auth');
  let certAuth: AuthConfig['cert'] = null;
  if (au.has('cert')) {
    const c = au.child('cert');
    certAuth = { identity: c.oneOf('identity', ['cn', 'san-dns', 'san-uri', 'san-email'] as const, 'cn') };
    c.finish();
    if (tls === null || tls.caFile === null) problems.add(au.key('cert'), 'needs tls.ca_file (the CA client certificates must chain to)');
  } else {
    au.value('cert');
  }
  let jwtAuth: JwtAuthConfig | null = null;
  if (au.has('jwt')) {
    const j = au.child('jwt');
    const jwksUrl = j.string('jwks_url');
    if (jwksUrl !== '' && !/^https?:\/\//.test(jwksUrl)) problems.add(j.key('jwks_url'), `must be an http(s) URL, got ${JSON.stringify(jwksUrl)}`);
    const algorithms = j.stringList('algorithms', ['RS256', 'ES256', 'PS256', 'EdDSA']);
    const weak = algorithms.filter((a) => !ASYMMETRIC_JWS_ALGORITHMS.includes(a));
    if (weak.length > 0) problems.add(j.key('algorithms'), `may not include ${weak.join(', ')} (allowed: ${ASYMMETRIC_JWS_ALGORITHMS.join(', ')}; none and shared-secret algorithms are refused)`);
    jwtAuth = {
      issuer: j.string('issuer'),
      audience: j.stringList('audience', []),
      jwksUrl,
      algorithms,
      clockSkewSec: j.int('clock_skew_s', 30, 0, 600),
      identityClaim: j.string('identity_claim', 'sub'),
      jwksCacheMs: j.int('jwks_cache_ms', 600_000, 1000, 86_400_000),
      jwksTimeoutMs: j.int('jwks_timeout_ms', 5000, 100, 60_000),
      minRefreshIntervalMs: j.int('jwks_min_refresh_ms', 10_000, 0, 3_600_000),
    };
    if (jwtAuth.audience.length === 0) problems.add(j.key('audience'), 'is required (the audience tokens must be issued for)');
    j.finish();
    if (tls === null) problems.add(au.key('jwt'), 'needs a tls: section: tokens are accepted only over TLS');
  } else {
    au.value('jwt');
  }
  au.finish();
  const auth: AuthConfig = { cert: certAuth, jwt: jwtAuth };

  let proxyProtocol: ProxyProtocolConfig | null = null;
  if (top.has('proxy_protocol')) {
    const pp = top.child('proxy_protocol');
    const cidrs = pp.stringList('trusted_cidrs', []);
    for (const c of cidrs) if (parseCidr(c) === null) problems.add(pp.key('trusted_cidrs'), `${JSON.stringify(c)} is not a CIDR with host bits zero (e.g. 10.0.0.0/8, fd00::/8)`);
    if (cidrs.length === 0) problems.add(pp.key('trusted_cidrs'), 'is required: the load balancers allowed to send PROXY headers');
    proxyProtocol = { trustedCidrs: cidrs, required: pp.bool('required', true) };
    pp.finish();
  } else {
    top.value('proxy_protocol');
  }

  const lim = top.child('limits');
  const limits = {
    maxMessageBytes: lim.int('max_message_bytes', 64 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    maxStatementBytes: lim.int('max_statement_bytes', 1024 * 1024, 1024, MAX_STATEMENT_BYTES_LIMIT),
    maxBufferedBytes: lim.int('max_buffered_bytes', 256 * 1024 * 1024, 1024 * 1024, 1024 ** 4),
    startupTimeoutMs: lim.int('startup_timeout_ms', 10_000, 100, 600_000),
    maxClientConnections: lim.int('max_client_connections', 20_000, 1, 1_000_000),
    parseCacheEntries: lim.int('parse_cache_entries', 10_000, 0, 10_000_000),
    decisionCacheEntries: lim.int('decision_cache_entries', 50_000, 0, 10_000_000),
    // V8 would grow it to ~48 MiB per worker as sessions accumulate (their objects survive
    // scavenges): ~25 MiB more RSS per worker for nothing measurable (bench/README.md).
    workerYoungGenerationMb: lim.int('worker_young_generation_mb', 12, 3, 1024),
  };
  lim.finish();

  const roles: Record<string, RoleCredentials> = {};
  for (const [name, r] of top.entries('roles')) {
    const sources = ['password', 'password_env', 'password_file', 'trust'].filter((k) => r.has(k));
    if (sources.length !== 1) {
      problems.add(`roles.${name}`, `needs exactly one of password, password_env, password_file, trust (has ${sources.length === 0 ? 'none' : sources.join(', ')})`);
      for (const k of ['password', 'password_env', 'password_file', 'trust']) r.value(k);
    } else if (r.has('password')) {
      roles[name] = { password: r.string('password'), source: 'config' };
    } else if (r.has('password_env')) {
      const varName = r.string('password_env');
      const value = env[varName];
      if (value === undefined || value === '') problems.add(r.key('password_env'), `environment variable ${varName} is not set`);
      roles[name] = { password: value ?? '', source: `env:${varName}` };
    } else if (r.has('password_file')) {
      const p = path.resolve(baseDir, r.string('password_file'));
      let value = '';
      try {
        value = readFileSync(p, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        problems.add(r.key('password_file'), `cannot read ${p}: ${(err as Error).message}`);
      }
      roles[name] = { password: value, source: `file:${p}` };
    } else {
      if (r.bool('trust', false) !== true) problems.add(r.key('trust'), 'must be true when given');
      roles[name] = { password: null, source: 'trust' };
    }
    r.finish();
  }

  const users: Record<string, UserConfig> = {};
  for (const [name, u] of top.entries('users')) {
    const verifier = u.string('scram_verifier');
    if (verifier && !SCRAM_VERIFIER.test(verifier)) {
      problems.add(u.key('scram_verifier'), 'must be a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>); make one with `rolegate hash-password`');
    }
    const role = u.optionalString('role');
    if (role !== null && !Object.hasOwn(roles, role)) problems.add(u.key('role'), `role "${role}" has no credentials under roles:`);
    users[name] = { scramVerifier: verifier, role, database: u.optionalString('database') };
    u.finish();
  }

  let policy: PolicyConfig | null = null;
  if (top.has('policy')) {
    const p = top.child('policy');
    const dataFile = p.optionalString('data_file');
    const opaPath = p.optionalString('opa_path');
    policy = {
      dir: path.resolve(baseDir, p.string('dir')),
      dataFile: dataFile === null ? null : path.resolve(baseDir, dataFile),
      opaPath: opaPath === null ? null : path.resolve(baseDir, opaPath),
      watch: p.bool('watch', true),
    };
    if (p.has('revisions')) {
      const r = p.child('revisions');
      policy.revisions = { dir: path.resolve(baseDir, r.string('dir')), maxCount: r.int('max_count', 100, 1, 100_000) };
      r.finish();
    } else {
      p.value('revisions');
    }
    if (p.has('shadow')) {
      const sh = p.child('shadow');
      const shadowData = sh.optionalString('data_file');
      policy.shadow = { dir: path.resolve(baseDir, sh.string('dir')), dataFile: shadowData === null ? null : path.resolve(baseDir, shadowData) };
      sh.finish();
    } else {
      p.value('shadow');
    }
    p.finish();
  } else {
    top.value('policy');
    for (const [name, u] of Object.entries(users)) {
      if (u.role === null) problems.add(`users.${name}.role`, 'is required when no policy: section maps identities to roles');
    }
  }

  const t = top.child('time');
  const zone = t.string('zone', 'UTC');
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    problems.add(t.key('zone'), `unknown time zone "${zone}" (use an IANA name such as Europe/Berlin)`);
  }
  const fixedText = t.optionalString('fixed');
  let fixedMs: number | null = null;
  if (fixedText !== null) {
    fixedMs = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(fixedText) ? Date.parse(fixedText) : Number.NaN;
    if (Number.isNaN(fixedMs)) {
      problems.add(t.key('fixed'), `must be an RFC 3339 time such as 2026-11-27T22:55:00Z, got ${JSON.stringify(fixedText)}`);
      fixedMs = null;
    }
  }
  const bucketMs = t.int('bucket_ms', 60_000, 1000, 60_000);
  // Buckets must start on every minute edge (in every zone: offsets are whole
  // minutes), or a cached decision could outlive a time-window edge inside it.
  if (60_000 % bucketMs !== 0) problems.add(t.key('bucket_ms'), `must divide 60000 (e.g. 1000, 5000, 15000, 30000, 60000), got ${bucketMs}`);
  const time = { zone, bucketMs, fixedMs };
  t.finish();

  const px = top.child('proxy');
  const proxy = { env: px.string('env', 'dev'), instance: px.string('instance', 'rolegate') };
  px.finish();

  let admin: Config['admin'] = null;
  if (top.has('admin')) {
    const a = top.child('admin');
    admin = { host: a.string('host', '127.0.0.1'), port: a.int('port', 9187, 0, 65535) };
    a.finish();
  } else {
    top.value('admin');
  }

  const sd = top.child('shutdown');
  const shutdown = { drainTimeoutMs: sd.int('drain_timeout_ms', 30_000, 0, 3_600_000) };
  sd.finish();

  let passthroughParameters: readonly string[] = DEFAULT_PASSTHROUGH;
  const pt = top.value('passthrough_parameters');
  if (pt !== undefined && pt !== null) {
    if (!Array.isArray(pt) || pt.some((x) => typeof x !== 'string' || !IDENT.test(x))) {
      problems.add('passthrough_parameters', 'must be a list of parameter names');
    } else {
      const pinned = pt.filter((x: string) => ['client_encoding', 'standard_conforming_strings', 'options', 'role', 'session_authorization', 'replication', 'user', 'database'].includes(x.toLowerCase()));
      if (pinned.length > 0) problems.add('passthrough_parameters', `may not include ${pinned.join(', ')} (pinned or decided by rolegate)`);
      passthroughParameters = pt as string[];
    }
  }

  const audit = readAudit(top, problems, baseDir, env);
  const metrics = readMetrics(top);
  const guards = readGuards(top, problems);
  top.finish();
  return { file, listen: listenCfg, workers, upstream, tls, auth, proxyProtocol, limits, users, roles, policy, time, proxy, admin, shutdown, passthroughParameters, audit, metrics, guards };
}

export interface MetricsConfig {
  snapshotIntervalMs: number;
  defaultMetrics: boolean;
  maxRuleLabels: number;
}

const MIB = 1024 * 1024;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function readAudit(top: Reader, problems: Problems, baseDir: string, env: NodeJS.ProcessEnv): AuditConfig | null {
  if (!top.has('audit')) {
    top.value('audit');
    return null;
  }
  const a = top.child('audit');
  const sink = a.oneOf('sink', ['stdout', 'file', 'http'] as const, 'stdout');
  if (!a.has('sink')) problems.add(a.key('sink'), 'is required (stdout, file or http)');
  const mode = a.oneOf('mode', ['fail-closed', 'best-effort'] as const, defaultAuditMode(sink));
  const maxSqlBytes = a.int('max_sql_bytes', 4096, 64, MIB);
  const parameters = a.oneOf('parameters', ['off', 'redacted', 'full'] as const, 'off');
  const maxParameterBytes = a.int('max_parameter_bytes', 256, 1, 65536);
  const input = a.oneOf('input', ['off', 'facts', 'full'] as const, 'off');
  // A queue must hold at least one record of the largest size (escapes can make a line ~6× its SQL).
  const minQueueBytes = Math.max(64 * 1024, 8 * maxSqlBytes);

  const w = a.child('worker');
  const worker = {
    bufferRecords: w.int('buffer_records', 10_000, 100, 1_000_000),
    bufferBytes: w.int('buffer_bytes', 16 * MIB, minQueueBytes, 1024 * MIB),
    // Larger batches mean fewer cross-thread messages and file writes: 1 024 / 100 ms cost the main
    // thread and libuv ~0.2 µs per record under load, 256 / 50 ms ~0.8 (bench/ab.ts, per-thread CPU).
    batchRecords: w.int('batch_records', 1024, 1, 10_000),
    flushIntervalMs: w.int('flush_interval_ms', 100, 1, 10_000),
  };
  if (worker.batchRecords > worker.bufferRecords) problems.add(w.key('batch_records'), `must not exceed buffer_records (${worker.bufferRecords})`);
  w.finish();

  const so = a.child('stdout');
  const stdout = { maxQueuedRecords: so.int('max_queued_records', 100_000, 100, 10_000_000), maxQueuedBytes: so.int('max_queued_bytes', 64 * MIB, minQueueBytes, 4096 * MIB) };
  so.finish();
  if (sink !== 'stdout' && a.has('stdout')) problems.add(a.key('stdout'), `is only used with sink: stdout (sink is ${sink})`);

  let file: AuditConfig['file'] = null;
  if (a.has('file')) {
    const f = a.child('file');
    file = {
      path: path.resolve(baseDir, f.string('path')),
      maxBytes: f.int('max_bytes', 100 * MIB, 4096, 2 ** 40),
      keep: f.int('keep', 5, 0, 1000),
      maxQueuedRecords: f.int('max_queued_records', 100_000, 100, 10_000_000),
      maxQueuedBytes: f.int('max_queued_bytes', 64 * MIB, minQueueBytes, 4096 * MIB),
      retryMs: f.int('retry_ms', 1000, 10, 600_000),
    };
    f.finish();
    if (sink !== 'file') problems.add(a.key('file'), `is only used with sink: file (sink is ${sink})`);
  } else {
    a.value('file');
    if (sink === 'file') problems.add(a.key('file'), 'is required with sink: file (at least file.path)');
  }

  let http: AuditConfig['http'] = null;
  if (a.has('http')) {
    const h = a.child('http');
    const url = h.string('url');
    try {
      const u = new URL(url);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') problems.add(h.key('url'), `must be an http: or https: URL, got ${u.protocol}`);
      if (u.username !== '' || u.password !== '') problems.add(h.key('url'), 'must not carry credentials (use headers_env)');
    } catch {
      if (url !== '') problems.add(h.key('url'), `is not a URL: ${JSON.stringify(url)}`);
    }
    const headers: Record<string, string> = {};
    const rawHeaders = h.value('headers');
    if (rawHeaders !== undefined && rawHeaders !== null) {
      if (typeof rawHeaders !== 'object' || Array.isArray(rawHeaders)) problems.add(h.key('headers'), 'must be a mapping of header name to value');
      else
        for (const [name, value] of Object.entries(rawHeaders as Record<string, unknown>)) {
          if (!HEADER_NAME.test(name) || typeof value !== 'string') problems.add(`${h.key('headers')}.${name}`, 'must be a header name with a string value');
          else headers[name.toLowerCase()] = value;
        }
    }
    const rawEnv = h.value('headers_env');
    if (rawEnv !== undefined && rawEnv !== null) {
      if (typeof rawEnv !== 'object' || Array.isArray(rawEnv)) problems.add(h.key('headers_env'), 'must be a mapping of header name to environment variable');
      else
        for (const [name, varName] of Object.entries(rawEnv as Record<string, unknown>)) {
          const value = typeof varName === 'string' ? env[varName] : undefined;
          if (!HEADER_NAME.test(name) || typeof varName !== 'string') problems.add(`${h.key('headers_env')}.${name}`, 'must be a header name with an environment variable name');
          else if (value === undefined || value === '') problems.add(`${h.key('headers_env')}.${name}`, `environment variable ${varName} is not set`);
          else headers[name.toLowerCase()] = value;
        }
    }
    if (Object.hasOwn(headers, 'content-type')) problems.add(h.key('headers'), 'content-type is always application/x-ndjson');
    http = {
      url,
      headers,
      batchMaxRecords: h.int('batch_max_records', 500, 1, 100_000),
      batchMaxBytes: h.int('batch_max_bytes', MIB, 1024, 64 * MIB),
      flushIntervalMs: h.int('flush_interval_ms', 1000, 10, 600_000),
      timeoutMs: h.int('timeout_ms', 10_000, 100, 600_000),
      maxQueuedRecords: h.int('max_queued_records', 100_000, 100, 10_000_000),
      maxQueuedBytes: h.int('max_queued_bytes', 64 * MIB, minQueueBytes, 4096 * MIB),
      retryInitialMs: h.int('retry_initial_ms', 250, 10, 600_000),
      retryMaxMs: h.int('retry_max_ms', 30_000, 10, 3_600_000),
    };
    if (http.retryMaxMs < http.retryInitialMs) problems.add(h.key('retry_max_ms'), `must be at least retry_initial_ms (${http.retryInitialMs})`);
    if (http.batchMaxRecords > http.maxQueuedRecords) problems.add(h.key('batch_max_records'), `must not exceed max_queued_records (${http.maxQueuedRecords})`);
    h.finish();
    if (sink !== 'http') problems.add(a.key('http'), `is only used with sink: http (sink is ${sink})`);
  } else {
    a.value('http');
    if (sink === 'http') problems.add(a.key('http'), 'is required with sink: http (at least http.url)');
  }
  a.finish();
  return { sink, mode, maxSqlBytes, parameters, maxParameterBytes, input, worker, stdout, file, http };
}

function readMetrics(top: Reader): MetricsConfig {
  const m = top.child('metrics');
  const metrics = {
    snapshotIntervalMs: m.int('snapshot_interval_ms', 1000, 100, 60_000),
    defaultMetrics: m.bool('default_metrics', true),
    maxRuleLabels: m.int('max_rule_labels', 100, 1, 10_000),
  };
  m.finish();
  return metrics;
}

/** guards.allow: names from LIFTABLE_GUARDS; the guards that cannot be lifted are named as such. */
function readGuards(top: Reader, problems: Problems): Config['guards'] {
  const g = top.child('guards');
  const raw = g.value('allow');
  const allow: LiftableGuard[] = [];
  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw) || raw.some((x) => typeof x !== 'string')) {
      problems.add(g.key('allow'), `must be a list of guard names (${LIFTABLE_GUARDS.join(', ')}), got ${JSON.stringify(raw)}`);
    } else {
      for (const name of raw as string[]) {
        if ((LIFTABLE_GUARDS as readonly string[]).includes(name)) {
          if (!allow.includes(name as LiftableGuard)) allow.push(name as LiftableGuard);
        } else if (name === 'role_change' || name === 'pinned_parameter') {
          problems.add(g.key('allow'), `"${name}" cannot be lifted: the session's role and the settings rolegate reads SQL under are always guarded`);
        } else {
          problems.add(g.key('allow'), `unknown guard "${name}"; the guards that can be lifted are ${LIFTABLE_GUARDS.join(', ')}`);
        }
      }
    }
  }
  g.finish();
  return { allow };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
