// The audit record: one JSON line per decision (fields, and when each record is
// written: docs/audit.md).
// A record is built by the session in its worker thread, prepared (SQL text
// truncated) and formatted there, and only the finished line crosses to the
// main thread's sink. The line must stay one line whatever the SQL text,
// identity or policy reason holds: formatRecord() guarantees it.

export type AuditEvent = 'connect' | 'statement';
export type AuditDecision = 'allow' | 'deny';

/**
 * What became of an allowed statement, from the server's answer:
 * - complete: CommandComplete (or EmptyQueryResponse);
 * - error: the server sent ErrorResponse for it (sqlstate says which);
 * - suspended: Execute with a row limit ended in PortalSuspended;
 * - not-run: an earlier error in the same Query / pipeline made the server skip it;
 * - unknown: the session ended before the answer came.
 */
export type StatementOutcome = 'complete' | 'error' | 'suspended' | 'not-run' | 'unknown';

/**
 * A bound parameter as audited: null is SQL NULL; `bytes` is its length on the
 * wire; with parameters: full also `text` (text format, valid UTF-8) or `hex`
 * (binary format or invalid UTF-8), cut to the configured maximum (`truncated`).
 */
export type AuditParameter = null | { bytes: number; text?: string; hex?: string; truncated?: true };

/**
 * A decision's policy input as its record carries it (audit.input): JSON text,
 * line-safe, made from parts cached per session, statement and millisecond
 * (record-input.ts), and written into the line as it is. toJSON gives
 * JSON.stringify(record) the same text formatRecord writes.
 */
export class RecordInput {
  readonly json: string;
  constructor(json: string) {
    this.json = json;
  }
  toJSON(): unknown {
    return JSON.parse(this.json);
  }
}

/** The shadow candidate's different answer: what would change, its rule and reason, its revision. */
export interface AuditShadow {
  change: 'allow_to_deny' | 'deny_to_allow';
  rule: string | null;
  reason: string | null;
  revision: string;
}

export interface AuditRecord {
  /** First key on purpose: tells audit lines from pino log lines on a shared stdout. */
  audit: AuditEvent;
  /** RFC 3339, UTC, millisecond precision. */
  time: string;
  unix_ms: number;
  /**
   * The record's number in its session, from 1 in the order the session made
   * them (a statement's record is made when it is forwarded, written when it
   * is answered). With `session`, a unique key: a collector can drop the
   * duplicates an HTTP retry may deliver, and order a session's records.
   */
  seq: number;
  session: string;
  worker: number;
  identity: { name: string; method: string };
  client: { addr: string; port: number };
  database: string;
  /** The decided role (null: a connect denied before a role was chosen). */
  role: string | null;
  decision: AuditDecision;
  rule: string | null;
  reason: string | null;
  policy_revision: string;
  /** Time the decision took (facts + policy, or the cache hit), µs. */
  decision_us: number;

  // ---- statement records only
  protocol?: 'simple' | 'extended';
  /** Prepared statement name (extended protocol; '' is the unnamed statement). */
  statement_name?: string;
  sql?: string;
  /** Present (true) only when `sql` was cut to audit.max_sql_bytes; sql_bytes is the full length. */
  sql_truncated?: true;
  sql_bytes?: number;
  /** Command tag of the statement (SELECT, INSERT, SET ROLE …); null when the text did not parse. */
  command?: string | null;
  /** Tables as "schema.name" ("name" when unqualified). */
  tables?: string[];
  /** Present when the tables did not all fit the record's budget: this many were left out at the end of the list. */
  tables_omitted?: number;
  parameters?: AuditParameter[];
  /** Present when the parameters did not all fit the record's budget: this many were left out at the end of the list. */
  parameters_omitted?: number;
  /** What the server made of the statement; "not-run" on a deny (nothing was sent). */
  outcome?: StatementOutcome;
  /** SQLSTATE of the server's ErrorResponse when outcome is "error". */
  sqlstate?: string;
  /** Proxy-observed execution time: forwarded → CommandComplete / ErrorResponse, µs. */
  query_us?: number;
  /** Rows from the CommandComplete tag (INSERT 0 5 → 5, SELECT 10 → 10); null when the tag has none. */
  rows?: number | null;

  // ---- shadow mode (policy.shadow)
  /** Present when the shadow candidate decided this record's decision differently. */
  shadow?: AuditShadow;

  // ---- audit.input facts | full
  /** The decision's policy input: facts — what the other fields lack; full — the whole document. Absent when the policy was not asked. */
  input?: RecordInput;
  /** Present when the input did not fit the record's budget: its size in bytes (the record carries no input). */
  input_omitted?: number;
}

/**
 * A record with every AuditRecord field present, in its order (absent ones
 * undefined, which formatRecord leaves out, as JSON.stringify would). All
 * records then share one hidden class: what later fills one in (outcome,
 * rows, a cut SQL text) changes no shape, and the formatter reads one shape
 * only. The one place records are made, for connects and statements alike.
 * Measured against adding the statement fields one by one to a 14-field
 * literal (four shapes mixed, build + track + format): 0.74 vs 0.78 µs, within
 * the noise of bench/micro-audit.ts — kept for being one literal, not for
 * speed. Positional: no options object per statement.
 */
export function newRecord(
  audit: AuditEvent,
  unixMs: number,
  seq: number,
  session: string,
  worker: number,
  identity: AuditRecord['identity'],
  client: AuditRecord['client'],
  database: string,
  role: string | null,
  decision: AuditDecision,
  rule: string | null,
  reason: string | null,
  policyRevision: string,
  decisionUs: number,
  // statement records only (undefined in connect records):
  protocol: 'simple' | 'extended' | undefined,
  statementName: string | undefined,
  sql: string | undefined,
  command: string | null | undefined,
  tables: string[] | undefined,
  parameters: AuditParameter[] | undefined,
  input: RecordInput | undefined = undefined,
): AuditRecord {
  return {
    audit,
    time: rfc3339(unixMs),
    unix_ms: unixMs,
    seq,
    session,
    worker,
    identity,
    client,
    database,
    role,
    decision,
    rule,
    reason,
    policy_revision: policyRevision,
    decision_us: decisionUs,
    protocol,
    statement_name: statementName,
    sql,
    sql_truncated: undefined,
    sql_bytes: undefined,
    command,
    tables,
    tables_omitted: undefined,
    parameters,
    parameters_omitted: undefined,
    outcome: undefined,
    sqlstate: undefined,
    query_us: undefined,
    rows: undefined,
    shadow: undefined,
    input,
    input_omitted: undefined,
  };
}

export interface PrepareOptions {
  maxSqlBytes: number;
  /** Bound on the JSON of each of `tables`, `parameters` (counted as if every character needed an escape) and `input` (UTF-8 bytes); default: none. */
  maxListBytes?: number;
}

/**
 * Apply the configured limits in place (the record is the caller's fresh
 * object): SQL text longer than maxSqlBytes in UTF-8 is cut on a character
 * boundary and flagged; a table or parameter list past maxListBytes keeps its
 * first entries and counts the rest (tables_omitted, parameters_omitted). So
 * bounded, a record always fits the queues (setup.ts sizes the bound from
 * them): a client cannot make its statement's record too large to be written.
 * An input past maxListBytes is left out whole and its size given
 * (input_omitted): a cut input would show the policy facts it never saw.
 * (Text the operator controls — policy reasons — and identity names are not cut.)
 */
export function prepareRecord(record: AuditRecord, options: PrepareOptions): AuditRecord {
  const sql = record.sql;
  if (sql !== undefined) {
    const cut = utf8PrefixLength(sql, options.maxSqlBytes);
    if (cut < sql.length) {
      record.sql = sql.slice(0, cut);
      record.sql_truncated = true;
      record.sql_bytes = Buffer.byteLength(sql, 'utf8');
    }
  }
  const budget = options.maxListBytes;
  if (budget === undefined) return record;
  const tables = record.tables;
  if (tables !== undefined) {
    const keep = fitting(tables, budget, tableSize);
    if (keep < tables.length) {
      record.tables = tables.slice(0, keep);
      record.tables_omitted = tables.length - keep;
    }
  }
  const params = record.parameters;
  if (params !== undefined) {
    const keep = fitting(params, budget, parameterSize);
    if (keep < params.length) {
      record.parameters = params.slice(0, keep);
      record.parameters_omitted = params.length - keep;
    }
  }
  const input = record.input;
  // Already escaped JSON without lone surrogates: at most 3 UTF-8 bytes per UTF-16 unit, so most inputs need no count.
  if (input !== undefined && input.json.length * 3 > budget) {
    const bytes = Buffer.byteLength(input.json, 'utf8');
    if (bytes > budget) {
      record.input = undefined;
      record.input_omitted = bytes;
    }
  }
  return record;
}

/** How many of the first items fit `budget` bytes of JSON at most, `size` being an item's bound (with its comma). */
function fitting<T>(items: readonly T[], budget: number, size: (item: T) => number): number {
  let used = 2;
  for (let i = 0; i < items.length; i++) {
    used += size(items[i] as T);
    if (used > budget) return i;
  }
  return items.length;
}

// Bounds of one entry's JSON, each character counted as a 6-byte escape.
const tableSize = (name: string): number => 3 + 6 * name.length;
const parameterSize = (p: AuditParameter): number => (p === null ? 5 : 48 + 6 * (p.text?.length ?? 0) + (p.hex?.length ?? 0));

/**
 * Number of UTF-16 code units of `text` whose UTF-8 encoding fits in maxBytes,
 * never splitting a surrogate pair. A lone surrogate counts 3 bytes (U+FFFD).
 */
export function utf8PrefixLength(text: string, maxBytes: number): number {
  const len = text.length;
  // Every UTF-16 code unit is at most 3 UTF-8 bytes: short texts need no scan.
  if (len * 3 <= maxBytes) return len;
  let bytes = 0;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    let n = 3;
    let units = 1;
    if (c < 0x80) n = 1;
    else if (c < 0x800) n = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < len) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n = 4;
        units = 2;
      }
    }
    if (bytes + n > maxBytes) return i;
    bytes += n;
    i += units - 1;
  }
  return len;
}

// What JSON.stringify escapes: '"', '\\' and every C0 control character, and
// (since ES2019, "well-formed JSON.stringify") every unpaired surrogate. What
// it leaves raw is still one JSON line, but U+2028/U+2029 end a line for
// JavaScript and many log tools, U+0085 (NEL) for Python's splitlines() and
// Unicode-aware splitters, and C1 controls + DEL confuse terminals. Escape them.
const LINE_UNSAFE = /[\u007f-\u009f\u2028\u2029]/g;

/** Anything in a string that JSON or line safety must escape; surrogates (paired ones too) go the slow, exact way. */
// eslint-disable-next-line no-control-regex -- C0 controls are exactly what must be found
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\u009f\u2028\u2029\ud800-\udfff]/;

function escapeUnit(ch: string): string {
  return `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** A JSON value as one safe line: JSON.stringify, then the line-unsafe characters it leaves raw escaped. */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(LINE_UNSAFE, escapeUnit);
}

/** A string as a JSON string literal, line-safe (most audit strings need no escape: one scan, no copy). */
export function str(text: string): string {
  return NEEDS_ESCAPE.test(text) ? safeJson(text) : `"${text}"`;
}

function strOrNull(text: string | null): string {
  return text === null ? 'null' : str(text);
}

function num(n: number): string {
  return Number.isFinite(n) ? `${n}` : 'null';
}

function tablesJson(tables: readonly string[]): string {
  if (tables.length === 0) return '[]';
  let out = `[${str(tables[0] as string)}`;
  for (let i = 1; i < tables.length; i++) out += `,${str(tables[i] as string)}`;
  return `${out}]`;
}

interface SessionPart {
  identity: AuditRecord['identity'];
  name: string;
  method: string;
  client: AuditRecord['client'];
  addr: string;
  port: number;
  worker: number;
  database: string;
  role: string | null;
  /** `,"session":…,"role":…` as one flat string. */
  text: string;
}

interface DecisionPart {
  decision: AuditDecision;
  rule: string | null;
  reason: string | null;
  revision: string;
  /** `,"decision":…,"policy_revision":…` as one flat string. */
  text: string;
}

interface StatementPart {
  protocol: AuditRecord['protocol'];
  name: string | undefined;
  truncated: true | undefined;
  bytes: number | undefined;
  command: string | null | undefined;
  /** A copy of the table names (a record's array may be the same one with other contents). */
  tables: readonly string[] | undefined;
  tablesOmitted: number | undefined;
  /** `,"protocol":…,"tables":[…]` as one flat string. */
  text: string;
}

/** Cached parts kept per formatter; past this many the cache starts over. */
const MAX_CACHED_PARTS = 1024;

/** Statement parts are cached for texts up to this long (the text is both key and part: memory ≤ ~3 × this × MAX_CACHED_PARTS). */
const MAX_CACHED_SQL_CHARS = 1024;

function sameTables(cached: readonly string[] | undefined, tables: readonly string[] | undefined): boolean {
  if (cached === undefined || tables === undefined) return cached === tables;
  if (tables.length !== cached.length) return false;
  for (let i = 0; i < cached.length; i++) if (tables[i] !== cached[i]) return false;
  return true;
}

/** The outcome member; its values need no escape (anything else goes the general way). */
function outcomePart(outcome: string): string {
  switch (outcome) {
    case 'complete':
      return ',"outcome":"complete"';
    case 'error':
      return ',"outcome":"error"';
    case 'not-run':
      return ',"outcome":"not-run"';
    case 'suspended':
      return ',"outcome":"suspended"';
    case 'unknown':
      return ',"outcome":"unknown"';
    default:
      return `,"outcome":${str(outcome)}`;
  }
}

/**
 * Formats records as lines (formatRecord). Written by hand, field by field in
 * AuditRecord's order (absent optional fields left out): the same text
 * JSON.stringify + the line-safety escapes give for a record built in that
 * order (test/unit/audit-record.test.ts compares them for any record). It runs
 * once per statement, so what a session repeats in every record — session,
 * identity, client, database, role — and what a decision repeats — decision,
 * rule, reason, policy revision — are formatted once and kept as flat strings
 * (each checked field by field before reuse); so are a prepared statement's
 * members (protocol … tables, repeated by its every Execute) and the head of
 * the records of one millisecond. A line is then a short concatenation, cheap
 * to flatten when its UTF-8 is written. bench/micro-audit.ts (a simple Query
 * and a prepared Execute in turn): 1.21 µs per record with JSON.stringify and
 * the escape pass, 0.40–0.44 with the session and decision parts cached,
 * 0.18–0.25 with the statement part and head too.
 */
export class RecordFormatter {
  private readonly sessions = new Map<string, SessionPart>();
  private readonly decisions = new Map<string | null, DecisionPart>();
  private readonly statements = new Map<string, StatementPart>();
  // The line's head for the last (audit, time, unix_ms): records of one millisecond share it.
  private headAudit = '';
  private headTime = '';
  private headMs = Number.NaN;
  private headText = '';

  /** The record as exactly one line of JSON, ending in '\n'. Never contains a raw line terminator or an unpaired surrogate. */
  format(r: AuditRecord): string {
    let line = `${this.head(r)},"seq":${num(r.seq)}${this.sessionPart(r)}${this.decisionPart(r)},"decision_us":${num(r.decision_us)}${this.statementPart(r)}`;
    if (r.parameters !== undefined) line += `,"parameters":${safeJson(r.parameters)}`;
    if (r.parameters_omitted !== undefined) line += `,"parameters_omitted":${num(r.parameters_omitted)}`;
    if (r.outcome !== undefined) line += outcomePart(r.outcome);
    if (r.sqlstate !== undefined) line += `,"sqlstate":${str(r.sqlstate)}`;
    if (r.query_us !== undefined) line += `,"query_us":${num(r.query_us)}`;
    if (r.rows !== undefined) line += `,"rows":${r.rows === null ? 'null' : num(r.rows)}`;
    if (r.shadow !== undefined) line += `,"shadow":${safeJson(r.shadow)}`;
    if (r.input !== undefined) line += `,"input":${r.input.json}`;
    if (r.input_omitted !== undefined) line += `,"input_omitted":${num(r.input_omitted)}`;
    return `${line}}\n`;
  }

  /** `{"audit":…,"time":…,"unix_ms":…` (the millisecond's number is a double: its text is worth keeping). */
  private head(r: AuditRecord): string {
    if (r.unix_ms === this.headMs && r.time === this.headTime && r.audit === this.headAudit) return this.headText;
    this.headAudit = r.audit;
    this.headTime = r.time;
    this.headMs = r.unix_ms;
    this.headText = flat(`{"audit":${str(r.audit)},"time":${str(r.time)},"unix_ms":${num(r.unix_ms)}`);
    return this.headText;
  }

  /**
   * `,"protocol":…,"statement_name":…,"sql":…,"command":…,"tables":[…]` (the
   * members present). Kept for named-statement records — an extended-protocol
   * statement's every Execute repeats them, text and all — keyed by the text;
   * simple-protocol texts mostly differ in their literals, so they are not.
   */
  private statementPart(r: AuditRecord): string {
    const sql = r.sql;
    if (r.statement_name === undefined || sql === undefined || sql.length > MAX_CACHED_SQL_CHARS) return statementText(r);
    const cached = this.statements.get(sql);
    if (
      cached !== undefined &&
      cached.name === r.statement_name &&
      cached.protocol === r.protocol &&
      cached.command === r.command &&
      cached.truncated === r.sql_truncated &&
      cached.bytes === r.sql_bytes &&
      cached.tablesOmitted === r.tables_omitted &&
      sameTables(cached.tables, r.tables)
    ) {
      return cached.text;
    }
    const text = flat(statementText(r));
    if (this.statements.size >= MAX_CACHED_PARTS) this.statements.clear();
    this.statements.set(sql, { protocol: r.protocol, name: r.statement_name, truncated: r.sql_truncated, bytes: r.sql_bytes, command: r.command, tables: r.tables === undefined ? undefined : [...r.tables], tablesOmitted: r.tables_omitted, text });
    return text;
  }

  private sessionPart(r: AuditRecord): string {
    const id = r.identity;
    const client = r.client;
    const cached = this.sessions.get(r.session);
    if (
      cached !== undefined &&
      cached.identity === id &&
      cached.name === id.name &&
      cached.method === id.method &&
      cached.client === client &&
      cached.addr === client.addr &&
      cached.port === client.port &&
      cached.worker === r.worker &&
      cached.database === r.database &&
      cached.role === r.role
    ) {
      return cached.text;
    }
    const text = flat(`,"session":${str(r.session)},"worker":${num(r.worker)},"identity":{"name":${str(id.name)},"method":${str(id.method)}},"client":{"addr":${str(client.addr)},"port":${num(client.port)}},"database":${str(r.database)},"role":${strOrNull(r.role)}`);
    if (this.sessions.size >= MAX_CACHED_PARTS) this.sessions.clear();
    this.sessions.set(r.session, { identity: id, name: id.name, method: id.method, client, addr: client.addr, port: client.port, worker: r.worker, database: r.database, role: r.role, text });
    return text;
  }

  private decisionPart(r: AuditRecord): string {
    const cached = this.decisions.get(r.rule);
    if (cached !== undefined && cached.decision === r.decision && cached.reason === r.reason && cached.revision === r.policy_revision) return cached.text;
    const text = flat(`,"decision":${str(r.decision)},"rule":${strOrNull(r.rule)},"reason":${strOrNull(r.reason)},"policy_revision":${str(r.policy_revision)}`);
    if (this.decisions.size >= MAX_CACHED_PARTS) this.decisions.clear();
    this.decisions.set(r.rule, { decision: r.decision, rule: r.rule, reason: r.reason, revision: r.policy_revision, text });
    return text;
  }
}

function statementText(r: AuditRecord): string {
  let text = '';
  if (r.protocol !== undefined) text += `,"protocol":${str(r.protocol)}`;
  if (r.statement_name !== undefined) text += `,"statement_name":${str(r.statement_name)}`;
  if (r.sql !== undefined) text += `,"sql":${str(r.sql)}`;
  if (r.sql_truncated !== undefined) text += `,"sql_truncated":${r.sql_truncated}`;
  if (r.sql_bytes !== undefined) text += `,"sql_bytes":${num(r.sql_bytes)}`;
  if (r.command !== undefined) text += `,"command":${strOrNull(r.command)}`;
  if (r.tables !== undefined) text += `,"tables":${tablesJson(r.tables)}`;
  if (r.tables_omitted !== undefined) text += `,"tables_omitted":${num(r.tables_omitted)}`;
  return text;
}

/**
 * The same string, flattened: a concatenation is a tree of parts until
 * something reads it whole, and V8 then flattens it in place. Counting its
 * UTF-8 bytes reads it whole once, so a cached part is not re-walked in every
 * line that reuses it (measured: ~15 % of a line's format + write).
 */
function flat(text: string): string {
  Buffer.byteLength(text, 'utf8');
  return text;
}

const defaultFormatter = new RecordFormatter();

/** The record as exactly one line of JSON, ending in '\n'. Never contains a raw line terminator or an unpaired surrogate. */
export function formatRecord(record: AuditRecord): string {
  return defaultFormatter.format(record);
}

/** "schema.name" for a table fact; the bare name when unqualified. */
export function tableName(table: { schema: string | null; name: string }): string {
  return table.schema === null ? table.name : `${table.schema}.${table.name}`;
}

let lastMs = Number.NaN;
let lastText = '';

/** RFC 3339 (UTC, ms) of a unix-ms instant; records of one millisecond share the string. */
export function rfc3339(unixMs: number): string {
  if (unixMs !== lastMs) {
    lastMs = unixMs;
    lastText = new Date(unixMs).toISOString();
  }
  return lastText;
}

// ---------------------------------------------------------- CommandComplete

// Tags that end in a row count (PostgreSQL "CommandComplete" message formats):
// INSERT oid rows, DELETE rows, UPDATE rows, MERGE rows, SELECT rows,
// MOVE rows, FETCH rows, COPY rows. CREATE TABLE AS / EXECUTE also complete as SELECT rows.
const COUNTED = new Set(['INSERT', 'DELETE', 'UPDATE', 'MERGE', 'SELECT', 'MOVE', 'FETCH', 'COPY']);

/** Split a CommandComplete tag ("INSERT 0 5", "CREATE TABLE") into its command words and row count. */
export function parseCommandTag(tag: string): { command: string; rows: number | null } {
  const space = tag.indexOf(' ');
  const first = space < 0 ? tag : tag.slice(0, space);
  if (!COUNTED.has(first)) return { command: tag, rows: null };
  const last = tag.lastIndexOf(' ');
  const digits = tag.slice(last + 1);
  if (last < 0 || !/^\d{1,20}$/.test(digits)) return { command: tag, rows: null };
  return { command: first, rows: Number(digits) };
}

/**
 * Row count of a CommandComplete message ('C') read straight from its bytes
 * (type, length, tag, NUL), without decoding the tag to a string; null when
 * the tag carries none. buf[start] is the type byte.
 */
export function commandCompleteRows(buf: Buffer, start: number, end: number): number | null {
  // The tag ends at the terminating NUL (end - 1).
  let i = end - 2;
  const tagStart = start + 5;
  let rows = 0;
  let scale = 1;
  let digits = 0;
  while (i >= tagStart) {
    const b = buf[i] as number;
    if (b < 0x30 || b > 0x39) break;
    rows += (b - 0x30) * scale;
    scale *= 10;
    digits++;
    i--;
  }
  if (digits === 0 || digits > 20 || i < tagStart || buf[i] !== 0x20 /* ' ' */) return null;
  // First word: up to the first space.
  let j = tagStart;
  while (j < end - 1 && buf[j] !== 0x20) j++;
  return COUNTED.has(buf.toString('latin1', tagStart, j)) ? rows : null;
}
