// rolegate replay, the deciding side: audit lines in, a tally of what a
// draft policy would decide differently out. Runs in piscina worker threads
// (the default export handles one task: a chunk of whole lines), or inline
// (createReplayer) when --workers 0. Each worker instantiates the policies
// once, on its first task.
//
// A record's decision input is rebuilt the best way its record allows:
//   full      the record holds the whole input document (audit.input: full);
//   facts     it holds what its other fields lack (audit.input: facts): the
//             two are put together again;
//   reparsed  a statement record without input: its `sql` is parsed again by
//             the proxy's parser (facts cache and all), with the record's
//             identity, role, database and time; not known: the transaction
//             state (taken as outside one), TLS (off), claims ({}), the
//             certificate (none), proxy.env/instance (--env, --instance);
//   record    a connect record without input: the record's identity, client,
//             database and time, the decided role as the requested one.
// Records that cannot be rebuilt are refused and counted: statement text cut
// to max_sql_bytes without an input to stand for it, or no text at all (an
// Execute of a portal rolegate did not know). Refusals rolegate makes on its
// own (proxy-rules.ts: audit-unavailable, parse-error, …) do not depend on the
// policy and are skipped.
//
// Decisions are cached as the proxy caches them (policy-authorizer.ts): by the
// statement's facts without its text unless the policy reads the text, the
// identity, role, database, client address and TLS, the time bucket, the
// transaction state and the protocol; so records that differ only in literals
// share one evaluation. Connect decisions are never cached (nor are they in
// the proxy).
//
// A facts-input record is keyed from its text: the input member, cut out of
// the line, holds nothing the key must leave out but the time, so the key is
// that text without the time member, plus the record's identity, client
// address, role, database, protocol and the time bucket. Only a cache miss
// parses the input. The record without its input is about half the line:
// measured on the bench's OLTP log, JSON.parse of whole lines was a quarter of
// the replay's time, and building a key by JSON.stringify of the parsed facts
// another tenth; keyed from the text, replay ran about twice as fast.

import { workerData } from 'node:worker_threads';
import { forEachLine, parseAuditLine, type AuditLogRecord } from '../audit/log-reader.ts';
import { TimeSource } from '../decision/clock.ts';
import { connectInput, sessionContext, statementInput } from '../decision/inputs.ts';
import { PROXY_RULES } from '../decision/proxy-rules.ts';
import type { ConnectInput, IdentityInput, ProxyInput, StatementDecision, StatementInput, TimeInput } from '../policy/contract.ts';
import { PolicyEngine, type PolicyArtifact } from '../policy/engine.ts';
import { FactsCache } from '../sql/facts-cache.ts';
import { initParser, type ParsedStatement } from '../sql/parser.ts';

/** A policy as the workers get it: the compiled module (posted once), its data, and how its decisions are keyed. */
export interface ReplayPolicy extends PolicyArtifact {
  readsStatementText: boolean;
}

export interface ReplayOptions {
  draft: ReplayPolicy;
  /** null: compare with the decisions the records hold. */
  baseline: ReplayPolicy | null;
  /** input.time zone for records without input. */
  zone: string;
  bucketMs: number;
  /** proxy for records without input. */
  proxy: ProxyInput;
  /** Changes listed one by one per task (the rest are counted). */
  maxChanges: number;
  /** Examples kept per group (service × rule × command). */
  examplesPerGroup: number;
  /** Cached decisions per policy; past this the cache starts over. */
  cacheEntries: number;
}

export type RebuildWay = 'full' | 'facts' | 'reparsed' | 'record';
export type Direction = 'allow-to-deny' | 'deny-to-allow';

export interface Verdict {
  decision: 'allow' | 'deny';
  rule: string | null;
  reason: string | null;
  /** Connect decisions: the role. */
  role?: string | null;
}

export interface ReplayExample {
  session: string;
  seq: number;
  sql: string;
}

export interface ReplayGroup {
  direction: Direction;
  service: string;
  /** The denying rule: the draft's for allow→deny, the recorded (baseline's) for deny→allow. */
  rule: string;
  command: string;
  count: number;
  examples: ReplayExample[];
}

export interface ReplayChange {
  direction: Direction | 'rule';
  audit: 'connect' | 'statement';
  session: string;
  seq: number;
  time: string;
  service: string;
  role: string | null;
  database: string;
  command: string;
  protocol: 'simple' | 'extended' | null;
  sql: string;
  rebuilt: RebuildWay;
  before: Verdict;
  after: Verdict;
}

export interface ReplayTally {
  /** Non-empty lines read. */
  lines: number;
  /** Lines that are not audit records (other log lines, damaged lines). */
  notRecords: number;
  decided: { connect: number; statement: number };
  rebuilt: Record<RebuildWay, number>;
  /** Rolegate's own refusals, by rule: not the policy's to decide. */
  skipped: Record<string, number>;
  /** Records that could not be rebuilt, by why. */
  refused: Record<string, number>;
  unchanged: number;
  /** Same decision, another rule (or, for a connect, another role). */
  ruleChanged: number;
  allowToDeny: number;
  denyToAllow: number;
  groups: ReplayGroup[];
  /** Decisions that flip, one by one (up to maxChanges per task). */
  changes: ReplayChange[];
  changesOmitted: number;
  /** A few same-decision, other-rule records. */
  ruleChanges: ReplayChange[];
  /** Where a rebuild may differ from what the proxy decided. */
  caveats: {
    /** Statements that EXECUTE a prepared statement: the proxy also decided the prepared text, which no record holds. */
    executeNotFollowed: number;
    /** The policy reads statement.sql and the record's text was cut. */
    truncatedTextRead: number;
  };
}

export function emptyTally(): ReplayTally {
  return {
    lines: 0,
    notRecords: 0,
    decided: { connect: 0, statement: 0 },
    rebuilt: { full: 0, facts: 0, reparsed: 0, record: 0 },
    skipped: {},
    refused: {},
    unchanged: 0,
    ruleChanged: 0,
    allowToDeny: 0,
    denyToAllow: 0,
    groups: [],
    changes: [],
    changesOmitted: 0,
    ruleChanges: [],
    caveats: { executeNotFollowed: 0, truncatedTextRead: 0 },
  };
}

const RULE_CHANGE_SAMPLES = 20;

function add(into: Record<string, number>, key: string, n = 1): void {
  into[key] = (into[key] ?? 0) + n;
}

function groupKey(g: { direction: string; service: string; rule: string; command: string }): string {
  return `${g.direction}\u0001${g.service}\u0001${g.rule}\u0001${g.command}`;
}

/** Adds `from` into `into` (tallies of separate tasks). */
export function mergeTally(into: ReplayTally, from: ReplayTally, maxChanges: number, examplesPerGroup: number): void {
  into.lines += from.lines;
  into.notRecords += from.notRecords;
  into.decided.connect += from.decided.connect;
  into.decided.statement += from.decided.statement;
  for (const way of Object.keys(into.rebuilt) as RebuildWay[]) into.rebuilt[way] += from.rebuilt[way];
  for (const [k, n] of Object.entries(from.skipped)) add(into.skipped, k, n);
  for (const [k, n] of Object.entries(from.refused)) add(into.refused, k, n);
  into.unchanged += from.unchanged;
  into.ruleChanged += from.ruleChanged;
  into.allowToDeny += from.allowToDeny;
  into.denyToAllow += from.denyToAllow;
  const groups = new Map(into.groups.map((g) => [groupKey(g), g]));
  for (const g of from.groups) {
    const mine = groups.get(groupKey(g));
    if (mine === undefined) {
      const copy = { ...g, examples: g.examples.slice(0, examplesPerGroup) };
      groups.set(groupKey(g), copy);
      into.groups.push(copy);
    } else {
      mine.count += g.count;
      for (const e of g.examples) if (mine.examples.length < examplesPerGroup) mine.examples.push(e);
    }
  }
  for (const c of from.changes) {
    if (into.changes.length < maxChanges) into.changes.push(c);
    else into.changesOmitted++;
  }
  into.changesOmitted += from.changesOmitted;
  for (const c of from.ruleChanges) if (into.ruleChanges.length < RULE_CHANGE_SAMPLES) into.ruleChanges.push(c);
  into.caveats.executeNotFollowed += from.caveats.executeNotFollowed;
  into.caveats.truncatedTextRead += from.caveats.truncatedTextRead;
}

/** A statement decision as cached, with the command it was made for (a cache hit names it without the facts). */
interface CachedDecision extends StatementDecision {
  command: string;
}

/** A policy instantiated in this thread, with its own decision cache. */
interface Slot {
  engine: PolicyEngine;
  readsText: boolean;
  /** Keys: "F…" from a facts input's text, "S…" from an input object (decisionKey). */
  cache: Map<string, CachedDecision>;
}

/** Where a record's input starts: its last member. */
const INPUT_MEMBER = ',"input":{';
/** A facts input (record-input.ts) starts so; a full one has identity.name first. */
const FACTS_INPUT_START = '{"identity":{"claims":';
const TIME_MEMBER = ',"time":{';
const PROXY_MEMBER = '},"proxy":';
const UNIX_NS = /"unix_ns":(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/;

const PROXY_RULE_IDS: ReadonlySet<string> = new Set(Object.keys(PROXY_RULES));

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A settable clock: input.time for records that carry none, from their own instant. */
class RecordClock {
  ms = 0;
  nowMs(): number {
    return this.ms;
  }
}

export class Replayer {
  readonly tally: ReplayTally = emptyTally();
  private readonly options: ReplayOptions;
  private readonly draft: Slot;
  private readonly baseline: Slot | null;
  private readonly facts = new FactsCache(10_000);
  private readonly clock = new RecordClock();
  private readonly time: TimeSource;
  private readonly groups = new Map<string, ReplayGroup>();

  private constructor(options: ReplayOptions, draft: PolicyEngine, baseline: PolicyEngine | null) {
    this.options = options;
    this.draft = { engine: draft, readsText: options.draft.readsStatementText, cache: new Map() };
    this.baseline = baseline === null || options.baseline === null ? null : { engine: baseline, readsText: options.baseline.readsStatementText, cache: new Map() };
    this.time = new TimeSource(options.zone, this.clock);
  }

  static async create(options: ReplayOptions): Promise<Replayer> {
    await initParser();
    const draft = await PolicyEngine.create(options.draft);
    const baseline = options.baseline === null ? null : await PolicyEngine.create(options.baseline);
    return new Replayer(options, draft, baseline);
  }

  /** Replay a chunk of whole lines; returns the tally of this chunk and starts a new one. */
  replayChunk(chunk: Uint8Array): ReplayTally {
    forEachLine(chunk, (line) => this.replayLine(line));
    return this.takeTally();
  }

  takeTally(): ReplayTally {
    const out = { ...this.tally, decided: { ...this.tally.decided }, rebuilt: { ...this.tally.rebuilt }, caveats: { ...this.tally.caveats } };
    Object.assign(this.tally, emptyTally());
    this.groups.clear();
    return out;
  }

  replayLine(line: string): void {
    const t = this.tally;
    t.lines++;
    // The input member, `,"input":{…}`: no member before it holds this text outside a string,
    // and a string cannot hold it unescaped. The record is parsed without it (and without any
    // member after it: the formatter writes none, so none is needed). The input is taken to
    // run to the line's last '}' — the formatter's layout; a key made from more text than the
    // input is still a correct key, and parseInput() finds the input's true end if need be.
    // (Finding it on every line by scanning cost ~3 µs a record, a third of the replay.)
    const at = line.indexOf(INPUT_MEMBER);
    const r = parseAuditLine(at < 0 ? line : `${line.slice(0, at)}}`);
    if (r === null || (at >= 0 && !line.endsWith('}'))) {
      t.notRecords++;
      return;
    }
    const inputText = at < 0 ? null : line.slice(at + INPUT_MEMBER.length - 1, line.length - 1);
    if (r.audit === 'connect') {
      if (inputText !== null && !this.attachInput(r, inputText)) return;
      this.replayConnect(r);
      return;
    }
    if (r.decision === 'deny' && r.rule !== null && PROXY_RULE_IDS.has(r.rule)) {
      add(t.skipped, r.rule);
      return;
    }
    if (inputText !== null && inputText.startsWith(FACTS_INPUT_START) && this.replayFactsText(r, inputText)) return;
    if (inputText !== null && !this.attachInput(r, inputText)) return;
    this.replayStatement(r);
  }

  /** The input parsed onto the record; false (counted) when it is not JSON. */
  private attachInput(r: AuditLogRecord, inputText: string): boolean {
    const input = parseInput(inputText);
    if (input === null) {
      this.tally.notRecords++;
      return false;
    }
    r.input = input;
    return true;
  }

  /**
   * A facts-input statement record decided from its text (see the head of this
   * file); false when the text is not laid out as the formatter writes it.
   */
  private replayFactsText(r: AuditLogRecord, inputText: string): boolean {
    const timeAt = inputText.indexOf(TIME_MEMBER);
    const proxyAt = timeAt < 0 ? -1 : inputText.indexOf(PROXY_MEMBER, timeAt);
    if (proxyAt < 0) return false;
    const unixNs = UNIX_NS.exec(inputText.slice(timeAt, proxyAt));
    if (unixNs === null) return false;
    const bucket = Math.floor(Number(unixNs[1]) / 1e6 / this.options.bucketMs);
    const protocol = r.protocol ?? 'simple';
    const rest = `${inputText.slice(0, timeAt)}${inputText.slice(proxyAt)}`;
    const context = `F\u0003${r.identity.method}\u0001${r.identity.name}\u0001${r.client.addr}\u0001${r.role}\u0001${r.database}\u0001${protocol}\u0001${bucket}\u0001`;
    const sql = r.sql ?? '';
    let parsed: StatementInput | null = null;
    const input = (): StatementInput => {
      if (parsed === null) {
        const recorded = parseInput(inputText);
        if (recorded === null || !isObj(recorded['statement'])) throw new Error('unreadable input');
        parsed = this.statementInputOf(r, recorded, recorded['statement'], 'facts');
      }
      return parsed;
    };
    let after: Verdict & { command: string };
    let before: Verdict;
    try {
      after = this.decideKeyed(this.draft, `${context}${this.draft.readsText ? sql : ''}\u0002${rest}`, input);
      before = this.baseline === null ? recordedVerdict(r) : this.decideKeyed(this.baseline, `${context}${this.baseline.readsText ? sql : ''}\u0002${rest}`, input);
    } catch {
      // The input text is not what the formatter writes: not a record this replay can read.
      this.tally.notRecords++;
      return true;
    }
    if (r.sql_truncated === true && (this.draft.readsText || this.baseline?.readsText === true)) this.tally.caveats.truncatedTextRead++;
    const command = after.command;
    if (command === 'EXECUTE') this.tally.caveats.executeNotFollowed++;
    this.tally.decided.statement++;
    this.tally.rebuilt.facts++;
    this.compare(r, 'facts', command, before, after);
    return true;
  }

  /** A cached decision by `key`, else the input (built only now) evaluated. */
  private decideKeyed(slot: Slot, key: string, input: () => StatementInput): Verdict & { command: string } {
    let cached = slot.cache.get(key);
    if (cached === undefined) {
      const i = input();
      const d = slot.engine.statement(i);
      cached = { allow: d.allow, rule: d.rule, reason: d.reason, command: i.statement.command };
      if (slot.cache.size >= this.options.cacheEntries) slot.cache.clear();
      slot.cache.set(key, cached);
    }
    return { decision: cached.allow ? 'allow' : 'deny', rule: cached.rule, reason: cached.reason, command: cached.command };
  }

  // ---------------------------------------------------------------- connect

  private replayConnect(r: AuditLogRecord): void {
    const recorded = r.input;
    const way: RebuildWay = recorded === undefined ? 'record' : isFullInput(recorded) ? 'full' : 'facts';
    const base = connectInput(
      this.identityOf(r),
      { addr: r.client.addr, port: r.client.port, tls: false },
      { database: r.database, role: r.role, application_name: null },
      this.timeAt(r.unix_ms),
      this.options.proxy,
    );
    const input = (recorded === undefined ? base : merged(base, recorded)) as ConnectInput;
    const after = connectVerdict(this.draft.engine, input);
    const before = this.baseline === null ? { decision: r.decision, rule: r.rule, reason: r.reason, role: r.role } : connectVerdict(this.baseline.engine, input);
    this.tally.decided.connect++;
    this.tally.rebuilt[way]++;
    this.compare(r, way, '(connect)', before, after);
  }

  // -------------------------------------------------------------- statement

  private replayStatement(r: AuditLogRecord): void {
    const t = this.tally;
    const recorded = r.input;
    const statement = recorded?.['statement'];
    if (recorded !== undefined && isObj(statement) && typeof statement['command'] === 'string') {
      this.replayRecordedInput(r, recorded, statement);
      return;
    }
    const sql = r.sql;
    if (sql === undefined || (sql === '' && r.statement_name === undefined && r.protocol === 'extended')) {
      add(t.refused, 'no statement text (an Execute of a portal rolegate did not know)');
      return;
    }
    if (r.sql_truncated === true) {
      add(t.refused, r.input_omitted !== undefined ? 'text cut to max_sql_bytes and input too large to record' : 'text cut to max_sql_bytes and no input recorded');
      return;
    }
    this.replayReparsed(r, sql);
  }

  /** The statement input: the recorded one over what the record's own fields give. */
  private statementInputOf(r: AuditLogRecord, recorded: Obj, statement: Obj, way: 'facts' | 'full'): StatementInput {
    const protocol = r.protocol ?? 'simple';
    const base = {
      identity: this.identityOf(r),
      client: { addr: r.client.addr, port: r.client.port, tls: false },
      time: recorded['time'] === undefined ? this.timeAt(r.unix_ms) : undefined,
      proxy: this.options.proxy,
      session: { role: r.role ?? '', database: r.database, in_transaction: false },
      statement: { sql: r.sql ?? '', protocol },
    };
    const input = merged(base, recorded) as unknown as StatementInput;
    // facts: statement.sql and .protocol come from the record.
    if (way === 'facts') input.statement = { ...(statement as unknown as StatementInput['statement']), sql: r.sql ?? '', protocol };
    return input;
  }

  /** audit.input facts or full: the input put together again, decided as one statement. */
  private replayRecordedInput(r: AuditLogRecord, recorded: Obj, statement: Obj): void {
    const way: RebuildWay = isFullInput(recorded) ? 'full' : 'facts';
    const input = this.statementInputOf(r, recorded, statement, way);
    if (r.sql_truncated === true && (this.draft.readsText || this.baseline?.readsText === true)) this.tally.caveats.truncatedTextRead++;
    if (input.statement.command === 'EXECUTE') this.tally.caveats.executeNotFollowed++;
    const after = this.decide(this.draft, input);
    const before = this.baseline === null ? recordedVerdict(r) : this.decide(this.baseline, input);
    this.tally.decided.statement++;
    this.tally.rebuilt[way]++;
    this.compare(r, way, input.statement.command, before, after);
  }

  /** No input recorded: the text parsed again, each statement decided in turn (the first deny decides). */
  private replayReparsed(r: AuditLogRecord, sql: string): void {
    const protocol = r.protocol ?? 'simple';
    const parsed = this.facts.get(sql);
    let command: string;
    let after: Verdict;
    let before: Verdict;
    if (!parsed.ok) {
      // The proxy refuses text its parser rejects, whatever the policy says.
      const denial: Verdict = { decision: 'deny', rule: 'parse-error', reason: `the statement could not be parsed: ${parsed.message}` };
      command = r.command ?? '(unparsed)';
      after = denial;
      before = this.baseline === null ? recordedVerdict(r) : denial;
    } else {
      const time = this.timeAt(r.unix_ms);
      const session = sessionContext(connectInput(this.identityOf(r), { addr: r.client.addr, port: r.client.port, tls: false }, { database: r.database, role: r.role, application_name: null }, time, this.options.proxy), r.role ?? '', r.database);
      const inputs = parsed.statements.map((stmt: ParsedStatement) => statementInput(session, stmt.facts, protocol, false, time));
      for (const input of inputs) if (input.statement.command === 'EXECUTE') this.tally.caveats.executeNotFollowed++;
      after = this.decideAll(this.draft, inputs);
      before = this.baseline === null ? recordedVerdict(r) : this.decideAll(this.baseline, inputs);
      const deciding = inputs.find((i) => i.statement.command === r.command) ?? inputs[0];
      command = deciding?.statement.command ?? r.command ?? '(empty)';
    }
    this.tally.decided.statement++;
    this.tally.rebuilt.reparsed++;
    this.compare(r, 'reparsed', command, before, after);
  }

  /** Every statement of one text: the first deny, else the first statement's allow (an empty text is allowed). */
  private decideAll(slot: Slot, inputs: readonly StatementInput[]): Verdict {
    let first: Verdict | null = null;
    for (const input of inputs) {
      const v = this.decide(slot, input);
      if (v.decision === 'deny') return v;
      first ??= v;
    }
    return first ?? { decision: 'allow', rule: null, reason: null };
  }

  private decide(slot: Slot, input: StatementInput): Verdict {
    return this.decideKeyed(slot, `S\u0003${decisionKey(input, slot.readsText, this.options.bucketMs)}`, () => input);
  }

  // ---------------------------------------------------------------- helpers

  private identityOf(r: AuditLogRecord): IdentityInput {
    return { name: r.identity.name, method: r.identity.method as IdentityInput['method'], claims: {}, cert: null };
  }

  private timeAt(unixMs: number): TimeInput {
    this.clock.ms = unixMs;
    return this.time.now();
  }

  private compare(r: AuditLogRecord, way: RebuildWay, command: string, before: Verdict, after: Verdict): void {
    const t = this.tally;
    if (before.decision === after.decision) {
      if (before.rule === after.rule && (r.audit !== 'connect' || before.role === after.role)) {
        t.unchanged++;
        return;
      }
      t.ruleChanged++;
      if (t.ruleChanges.length < RULE_CHANGE_SAMPLES) t.ruleChanges.push(this.change('rule', r, way, command, before, after));
      return;
    }
    const direction: Direction = after.decision === 'deny' ? 'allow-to-deny' : 'deny-to-allow';
    if (direction === 'allow-to-deny') t.allowToDeny++;
    else t.denyToAllow++;
    const rule = (direction === 'allow-to-deny' ? after.rule : before.rule) ?? '(none)';
    const service = r.identity.name;
    const key = groupKey({ direction, service, rule, command });
    let group = this.groups.get(key);
    if (group === undefined) {
      group = { direction, service, rule, command, count: 0, examples: [] };
      this.groups.set(key, group);
      t.groups.push(group);
    }
    group.count++;
    if (group.examples.length < this.options.examplesPerGroup) group.examples.push({ session: r.session, seq: r.seq, sql: r.sql ?? '' });
    if (t.changes.length < this.options.maxChanges) t.changes.push(this.change(direction, r, way, command, before, after));
    else t.changesOmitted++;
  }

  private change(direction: Direction | 'rule', r: AuditLogRecord, way: RebuildWay, command: string, before: Verdict, after: Verdict): ReplayChange {
    return {
      direction,
      audit: r.audit,
      session: r.session,
      seq: r.seq,
      time: r.time,
      service: r.identity.name,
      role: r.role,
      database: r.database,
      command,
      protocol: r.protocol ?? null,
      sql: r.sql ?? '',
      rebuilt: way,
      before,
      after,
    };
  }
}

/**
 * The input object at the start of `text` (which may run on past it, with
 * members the record has after its input); null when it is not JSON.
 */
function parseInput(text: string): Obj | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    const end = objectEnd(text, 0);
    if (end < 0) return null;
    try {
      value = JSON.parse(text.slice(0, end));
    } catch {
      return null;
    }
  }
  return isObj(value) ? value : null;
}

/**
 * The index just past the JSON object that starts at text[start] ('{'),
 * strings skipped whole (indexOf to their closing quote: most of a record is
 * in strings); -1 when it does not end.
 */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* '"' */) {
      let close = text.indexOf('"', i + 1);
      while (close > 0 && escaped(text, close)) close = text.indexOf('"', close + 1);
      if (close < 0) return -1;
      i = close;
    } else if (c === 0x7b /* '{' */) depth++;
    else if (c === 0x7d /* '}' */ && --depth === 0) return i + 1;
  }
  return -1;
}

/** The quote at text[at] is escaped: an odd number of backslashes before it. */
function escaped(text: string, at: number): boolean {
  let n = 0;
  while (text.charCodeAt(at - 1 - n) === 0x5c /* '\\' */) n++;
  return n % 2 === 1;
}

/** A full input holds identity.name; a facts input leaves it to the record. */
function isFullInput(input: Obj): boolean {
  const identity = input['identity'];
  return isObj(identity) && typeof identity['name'] === 'string';
}

/** The recorded input over the base the record gives: object members merged one level down, the rest replaced. */
function merged(base: object, recorded: Obj): Obj {
  const out: Obj = { ...(base as Obj) };
  for (const [k, v] of Object.entries(recorded)) {
    const b = out[k];
    out[k] = isObj(b) && isObj(v) ? { ...b, ...v } : v;
  }
  return out;
}

function recordedVerdict(r: AuditLogRecord): Verdict {
  return { decision: r.decision, rule: r.rule, reason: r.reason };
}

function connectVerdict(engine: PolicyEngine, input: ConnectInput): Verdict {
  const d = engine.connect(input);
  return { decision: d.allow && d.role !== null ? 'allow' : 'deny', rule: d.rule, reason: d.reason, role: d.role };
}

/**
 * Everything of a statement input a cached decision may depend on: what the
 * proxy's cache keys by, plus proxy.env/instance (one replay may read several
 * proxies' logs) and the whole certificate.
 */
function decisionKey(input: StatementInput, readsText: boolean, bucketMs: number): string {
  const { identity, client, session, proxy, statement } = input;
  const bucket = Math.floor(Number(input.time?.unix_ns ?? 0) / 1e6 / bucketMs);
  let facts: string;
  if (readsText) facts = JSON.stringify(statement);
  else {
    const { sql: _sql, protocol: _protocol, ...rest } = statement;
    facts = JSON.stringify(rest);
  }
  return `${identity.method}\u0001${identity.name}\u0001${JSON.stringify(identity.claims)}\u0001${JSON.stringify(identity.cert)}\u0001${session.role}\u0001${session.database}\u0001${client.addr}\u0001${client.tls}\u0001${proxy?.env}\u0001${proxy?.instance}\u0001${bucket}\u0001${session.in_transaction}\u0001${statement.protocol}\u0002${facts}`;
}

// ------------------------------------------------------------ piscina entry

/** What the pool's workers are started with (structured-cloned: the modules are compiled once, in the main thread). */
export type ReplayWorkerData = ReplayOptions;

/** One task: a chunk of whole audit lines (its buffer transferred). */
export interface ReplayTask {
  chunk: Uint8Array;
}

let replayer: Promise<Replayer> | null = null;

/** The piscina handler: the policies are instantiated on the first task, once per worker. */
export default async function replayTask(task: ReplayTask): Promise<ReplayTally> {
  replayer ??= Replayer.create(workerData as ReplayWorkerData);
  return (await replayer).replayChunk(task.chunk);
}
