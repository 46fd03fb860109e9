// Shared by the test/integration/security-*.test.ts files (one per class of
// attack in docs/security.md): byte-level sessions as the three kinds of role,
// probe objects whose grants let every role write (so rolegate is the only
// thing between a client and a change), and assertions that a denial ran
// nothing and left the session in the right state.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from './fixture.ts';
import { adminQuery } from './pg.ts';
import { REPO, startProxy, type RunningProxy } from './proxy.ts';
import { errorFields, query, RawClient, type Message } from './raw-client.ts';

/** The shipped policy's three kinds of role, as the demo services get them. */
export type Kind = 'reader' | 'writer' | 'admin';

const LOGINS: Record<Kind, { user: keyof typeof DEMO_USERS; extra: Record<string, string>; role: string }> = {
  reader: { user: 'reporting-svc', extra: {}, role: 'app_reader' },
  writer: { user: 'orders-svc', extra: { options: '-c rolegate.role=app_writer' }, role: 'app_writer' },
  admin: { user: 'migrator', extra: {}, role: 'app_admin' },
};

export function roleOf(kind: Kind): string {
  return LOGINS[kind].role;
}

/** A logged-in byte-level session through rolegate. */
export async function session(port: number, kind: Kind, extra: Record<string, string> = {}): Promise<RawClient> {
  const login = LOGINS[kind];
  const c = await RawClient.connect(port);
  await c.login(login.user, DEMO_USERS[login.user], 'app', { ...login.extra, ...extra });
  return c;
}

/** What came back for one request, up to and including ReadyForQuery. */
export interface Reply {
  /** Message types in order, e.g. "TDCZ". */
  types: string;
  messages: Message[];
  /** ReadyForQuery's transaction status: I, T or E. */
  status: string;
  errors: Array<Map<string, string>>;
}

export function reply(messages: Message[]): Reply {
  const last = messages.at(-1);
  return {
    types: messages.map((m) => m.type).join(''),
    messages,
    status: last?.type === 'Z' ? last.body.toString('latin1', 0, 1) : '?',
    errors: messages.filter((m) => m.type === 'E').map((m) => errorFields(m)),
  };
}

/** Send bytes, read through the next ReadyForQuery. */
export async function roundTrip(c: RawClient, bytes: Buffer, timeoutMs = 10_000): Promise<Reply> {
  c.write(bytes);
  return reply(await c.readUntil('Z', timeoutMs));
}

export function simple(c: RawClient, sql: string): Promise<Reply> {
  return roundTrip(c, query(sql));
}

/** Exactly one ErrorResponse (42501 naming `rule`) and one ReadyForQuery with `status`. */
export function assertDenied(r: Reply, rule: string | RegExp, status = 'I', label = ''): void {
  const what = `${label} got ${r.types} ${JSON.stringify(r.errors.map((e) => Object.fromEntries(e)))}`;
  assert.equal(r.types, 'EZ', what);
  const e = r.errors[0]!;
  assert.equal(e.get('C'), '42501', what);
  assert.equal(e.get('S'), 'ERROR', what);
  const message = e.get('M') ?? '';
  if (typeof rule === 'string') assert.match(message, new RegExp(`rolegate rule "${rule}"`), what);
  else assert.match(message, rule, what);
  assert.equal(r.status, status, `${what}: transaction status`);
}

/** No ErrorResponse; ends in ReadyForQuery with `status`. */
export function assertOk(r: Reply, status = 'I', label = ''): void {
  assert.deepEqual(r.errors.map((e) => `${e.get('C')} ${e.get('M')}`), [], `${label} got ${r.types}`);
  assert.equal(r.status, status, `${label}: transaction status`);
}

/** Text of the first column of the DataRows in `r`. */
export function values(r: Reply): Array<string | null> {
  return r.messages
    .filter((m) => m.type === 'D')
    .map((m) => {
      const len = m.body.readInt32BE(2);
      return len < 0 ? null : m.body.toString('utf8', 6, 6 + len);
    });
}

/** The session still answers a query (and is idle, or in the given status). */
export async function assertUsable(c: RawClient, status = 'I'): Promise<void> {
  const r = await simple(c, "SELECT 'still here'");
  assertOk(r, status, 'usability check');
  assert.deepEqual(values(r), ['still here']);
}

/** The upstream backend serving this session. */
export async function backendPid(c: RawClient): Promise<number> {
  const r = await simple(c, 'SELECT pg_backend_pid()');
  assertOk(r, r.status);
  return Number(values(r)[0]);
}

/**
 * The last statement the server received on that backend (pg_stat_activity).
 * After a denial it is rolegate's failing stand-in, proof that the client's
 * text never reached the server.
 */
export async function lastServerQuery(pid: number): Promise<string> {
  const rows = await adminQuery<{ query: string }>(`SELECT query FROM pg_stat_activity WHERE pid = ${pid}`);
  return rows[0]?.query ?? '';
}

export async function assertNeverReachedServer(pid: number, label = ''): Promise<void> {
  const last = await lastServerQuery(pid);
  assert.match(last, /^rolegate_denied_[0-9a-f]+(_[0-9a-z]+)+$/, `${label}: the server's last statement was ${JSON.stringify(last)}`);
}

/**
 * A table and a sequence that every role may change (GRANT ALL TO PUBLIC, and
 * CREATE on schema public): only rolegate stands between a client and a
 * change. state() summarises everything a bypass could touch.
 */
export class Probe {
  readonly table: string;
  readonly sequence: string;

  constructor(name: string) {
    this.table = name;
    this.sequence = `${name}_seq`;
  }

  async create(): Promise<void> {
    await adminQuery(
      `DROP TABLE IF EXISTS ${this.table} CASCADE; DROP SEQUENCE IF EXISTS ${this.sequence};
       CREATE TABLE ${this.table} (id int PRIMARY KEY, v text);
       CREATE SEQUENCE ${this.sequence};
       GRANT ALL ON TABLE ${this.table} TO PUBLIC; GRANT ALL ON SEQUENCE ${this.sequence} TO PUBLIC;
       GRANT CREATE ON SCHEMA public TO PUBLIC;`,
      'app',
    );
    await this.reset();
  }

  async reset(): Promise<void> {
    await adminQuery(
      `TRUNCATE ${this.table}; INSERT INTO ${this.table} VALUES (1, 'one'), (2, 'two'), (3, 'three');
       SELECT setval('${this.sequence}', 1, false);`,
      'app',
    );
    await this.dropCreated();
  }

  /** Objects a bypass would have created are named `<table>_evil…`. */
  async dropCreated(): Promise<void> {
    const rows = await adminQuery<{ sql: string }>(
      `SELECT format('DROP %s IF EXISTS %I CASCADE', CASE relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, relname) AS sql
       FROM pg_class WHERE relname LIKE '${this.table}_evil%' AND relkind IN ('r', 'v', 'm', 'S')`,
      'app',
    );
    for (const row of rows) await adminQuery(row.sql, 'app');
  }

  async state(): Promise<string> {
    const rows = await adminQuery<{ s: string }>(
      `SELECT concat_ws(' | ',
         (SELECT string_agg(id || '=' || coalesce(v, 'NULL'), ',' ORDER BY id) FROM ${this.table}),
         (SELECT 'seq ' || last_value || CASE WHEN is_called THEN '+' ELSE '' END FROM ${this.sequence}),
         (SELECT 'created ' || count(*) FROM pg_class WHERE relname LIKE '${this.table}_evil%'),
         (SELECT 'large objects ' || count(*) FROM pg_largeobject_metadata),
         (SELECT 'functions ' || count(*) FROM pg_proc WHERE proname LIKE '${this.table}_evil%')) AS s`,
      'app',
    );
    return rows[0]?.s ?? '';
  }

  async assertUnchanged(before: string, label = ''): Promise<void> {
    assert.equal(await this.state(), before, `${label}: the probe changed`);
  }
}

/**
 * For a whole test file: before its tests, the demo database, the probe (and
 * `prepare`, e.g. objects the probe's attacks use), then a proxy enforcing the
 * shipped policy with 2 workers, handed to `ready`; stopped after the tests.
 */
export function proxyWithProbe(probe: Probe, ready: (proxy: RunningProxy) => void, prepare?: () => Promise<void>): void {
  let running: RunningProxy | undefined;
  before(async () => {
    await ensureDemoDatabase();
    await probe.create();
    await prepare?.();
    running = await startProxy(demoConfig({ withPolicy: true, workers: 2 }));
    ready(running);
  });
  after(async () => {
    await running?.stop();
  });
}

/** A private copy of the shipped policy directory that a test may edit. */
export function policyCopy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-policy-'));
  cpSync(path.join(REPO, 'policies'), dir, { recursive: true });
  return dir;
}

export function withPolicyDir(config: string, dir: string): string {
  const out = config.replace(/policy: \{ dir: "[^"]+" \}/, `policy: { dir: ${JSON.stringify(dir)} }`);
  assert.notEqual(out, config, 'the config has a policy: line to replace');
  return out;
}

/** Edit a JSON file of a policy copy in place. */
export function editJson(file: string, edit: (doc: any) => void): void {
  const doc: unknown = JSON.parse(readFileSync(file, 'utf8'));
  edit(doc);
  writeFileSync(file, JSON.stringify(doc, null, 2));
}

/** SIGHUP and wait until the new revision is applied. */
export async function reload(proxy: RunningProxy): Promise<void> {
  const seen = proxy.logs.length;
  const done = proxy.waitForLog((l) => l['msg'] === 'policy reload' && l['changed'] === true && proxy.logs.indexOf(l) >= seen, 60_000);
  proxy.child.kill('SIGHUP');
  await done;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Fuzz budgets (test/fuzz): CI runs each property time-boxed; set
 * ROLEGATE_FUZZ_RUNS / ROLEGATE_FUZZ_SECONDS to scale a run up. A seed in
 * ROLEGATE_FUZZ_SEED replays a reported failure.
 */
export function fuzzBudget(defaults: { runs: number; seconds: number }): { numRuns: number; timeLimitMs: number; seed: number | undefined } {
  const runs = Number.parseInt(process.env['ROLEGATE_FUZZ_RUNS'] ?? '', 10);
  const seconds = Number.parseFloat(process.env['ROLEGATE_FUZZ_SECONDS'] ?? '');
  const seed = Number.parseInt(process.env['ROLEGATE_FUZZ_SEED'] ?? '', 10);
  return {
    numRuns: Number.isInteger(runs) && runs > 0 ? runs : defaults.runs,
    timeLimitMs: (Number.isFinite(seconds) && seconds > 0 ? seconds : defaults.seconds) * 1000,
    seed: Number.isInteger(seed) ? seed : undefined,
  };
}

/** A byte-level mutation of a message stream (fuzzing). */
export type Mutation =
  | { kind: 'flip'; at: number; value: number }
  | { kind: 'length'; at: number; value: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number };

export function mutationArbitrary(interestingLengths: readonly number[]): fc.Arbitrary<Mutation> {
  return fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('length' as const), at: fc.nat(), value: fc.oneof(fc.integer(), fc.constantFrom(-1, 0, 3, 4, 5, 0x7fffffff, -0x80000000, ...interestingLengths)) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
  );
}

/** Apply mutations in order (positions wrap around the current length). */
export function mutate(input: Buffer, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.kind) {
      case 'flip':
        b[at] = m.value;
        break;
      case 'length':
        if (at + 4 <= b.length) b.writeInt32BE(m.value | 0, at);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.count)]);
        break;
      default: {
        const unreachable: never = m;
        throw new Error(`unknown mutation ${JSON.stringify(unreachable)}`);
      }
    }
  }
  return b;
}

/** Cut a buffer into chunks at the given points (taken modulo its length). */
export function splitAt(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    if (p > prev) out.push(bytes.subarray(prev, p));
    prev = p;
  }
  if (prev < bytes.length) out.push(bytes.subarray(prev));
  return out;
}
