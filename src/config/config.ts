// Configuration: read once from YAML, validated with every problem reported
// together (file, key, line, what is wrong), then deep-frozen. Workers get the
// frozen plain object through postMessage (structured clone).

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { isMap, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { RolegateError } from '../errors.ts';

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
}

export interface Config {
  file: string | null;
  listen: { host: string; port: number };
  workers: number;
  upstream: { host: string; port: number; connectTimeoutMs: number };
  limits: {
    maxMessageBytes: number;
    startupTimeoutMs: number;
    maxClientConnections: number;
    parseCacheEntries: number;
    decisionCacheEntries: number;
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
}

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
  const upstream = {
    host: up.string('host', '127.0.0.1'),
    port: up.int('port', 5432, 1, 65535),
    connectTimeoutMs: up.int('connect_timeout_ms', 5000, 100, 600_000),
  };
  up.finish();

  const lim = top.child('limits');
  const limits = {
    maxMessageBytes: lim.int('max_message_bytes', 64 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    startupTimeoutMs: lim.int('startup_timeout_ms', 10_000, 100, 600_000),
    maxClientConnections: lim.int('max_client_connections', 20_000, 1, 1_000_000),
    parseCacheEntries: lim.int('parse_cache_entries', 10_000, 0, 10_000_000),
    decisionCacheEntries: lim.int('decision_cache_entries', 50_000, 0, 10_000_000),
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
  const time = { zone, bucketMs: t.int('bucket_ms', 60_000, 1000, 3_600_000), fixedMs };
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

  top.finish();
  return { file, listen: listenCfg, workers, upstream, limits, users, roles, policy, time, proxy, admin, shutdown, passthroughParameters };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
