// `rolegate facts` and `rolegate explain`: what rolegate reads in a SQL text,
// and what it would decide for it, without a database or a running proxy.
//
// explain takes the proxy's own path: the policy is built and compiled by
// loadPolicyBundle, the authorizer made by createAuthorizer, the connect input
// and session context come from decision/inputs.ts as in a session, the text
// is checked as the relay checks it and decided by Authorizer.statements. Only
// the clock differs: it stands at the instant asked about. What it prints as
// each statement's input is statementInput() over the same facts, session and
// time: the document the policy evaluated.

import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { canonicalIp } from '../config/ip-address.ts';
import { loadConfigFile, parseConfig, type Config } from '../config/config.ts';
import { createAuthorizer } from '../decision/authorizer-factory.ts';
import { SessionSqlState, undecided, type Authorizer, type StatementProtocol, type StatementResult } from '../decision/authorizer.ts';
import { TimeSource } from '../decision/clock.ts';
import { connectInput, sessionContext, statementInput } from '../decision/inputs.ts';
import { PolicyLog } from '../decision/policy-log.ts';
import { invalidText, PROXY_RULES } from '../decision/proxy-rules.ts';
import { ERRORS, RolegateError } from '../errors.ts';
import { policySourceFiles, SHIPPED_POLICY_DIR } from '../policy/build.ts';
import type { AuthMethod, ConnectDecision, ConnectInput, IdentityInput, StatementDecision, StatementInput, TimeInput } from '../policy/contract.ts';
import { ensureOpa, runOpa } from '../policy/opa-cli.ts';
import { checkSqlBytes } from '../protocol/frontend.ts';
import { FactsCache } from '../sql/facts-cache.ts';
import { initParser, type ParsedStatement, type ParsedText } from '../sql/parser.ts';
import type { StatementFacts } from '../sql/statement-facts.ts';
import { loadPolicyBundle } from './policy-loader.ts';

/** Exit statuses of `rolegate explain` (and `rolegate facts`): scripts gate on them. */
export const EXPLAIN_EXIT = { allowed: 0, denied: 1, usage: 2, invalid: 3 } as const;

const METHODS: readonly AuthMethod[] = ['scram-sha-256', 'cert', 'jwt'];
const TRACE_MODES = ['full', 'notes', 'fails', 'debug'] as const;
export type TraceMode = (typeof TRACE_MODES)[number];

class UsageError extends Error {}

// ------------------------------------------------------------------ the model

/** What the client would be sent for a refusal. */
export interface ClientError {
  severity: 'ERROR' | 'FATAL';
  sqlstate: string;
  message: string;
  detail: string;
  /** 1-based character position (parse errors). */
  position?: number;
}

/** Session bookkeeping a statement does besides its facts (not given to the policy). */
export interface StatementEffects {
  prepares: string | null;
  executes: string | null;
  deallocates: string | null;
  declares_cursor: string | null;
  transaction: string | null;
}

export interface StatementExplanation {
  /** 1-based position in the text. */
  index: number;
  sql: string;
  facts: StatementFacts;
  effects: StatementEffects;
  /** The statement entry point's input; null when an earlier statement was denied (the rest are not decided). */
  input: StatementInput | null;
  decision: StatementDecision | null;
}

export interface StatementVerdict {
  allow: boolean;
  rule: string | null;
  reason: string | null;
  /**
   * policy: a statement's own decision; rolegate: one of rolegate's own rules
   * (parse error, invalid text, unknown prepared statement …); prepared-statement:
   * the policy refused the text an EXECUTE runs.
   */
  source: 'policy' | 'rolegate' | 'prepared-statement' | null;
  /** 1-based statement the verdict is about (null: the text as a whole). */
  statement: number | null;
}

export interface Explanation {
  policy: { dir: string; data_file: string | null; revision: string; reads_statement_text: boolean };
  connect: { input: ConnectInput; decision: ConnectDecision; session: { role: string; database: string } | null };
  /** null: no SQL asked about (or the connection was refused). */
  protocol: StatementProtocol | null;
  in_transaction: boolean;
  statements: StatementExplanation[];
  verdict: StatementVerdict | null;
  /** Connect and every statement allowed. */
  allowed: boolean;
  /** What the client would get instead of an answer from the server; null when allowed. */
  client_error: ClientError | null;
  /** Evaluation failures the policy raised (they are denies with rule policy-error). */
  evaluation_errors: string[];
  /** Lines the policy's print() calls wrote (policies built with print support). */
  prints: string[];
}

export interface ExplainRequest {
  identity: IdentityInput;
  client: ConnectInput['client'];
  request: ConnectInput['request'];
  /** The instant the decisions are made at (Unix ms). */
  timeMs: number;
  /** The SQL text (bytes are checked as the relay checks a message's text); null: the connect decision only. */
  sql: string | Buffer | null;
  protocol: StatementProtocol;
  inTransaction: boolean;
}

/** A clock that stands where it is put. */
class SetClock {
  ms = 0;
  nowMs(): number {
    return this.ms;
  }
}

/**
 * The proxy's decision path for one policy, held ready: build once (opa),
 * explain many requests. One zone and one proxy section, as in a running proxy.
 */
export class Explainer {
  readonly config: Config;
  readonly revision: string;
  readonly readsStatementText: boolean;
  /** The data document the compiled policy was given. */
  readonly data: unknown;
  private readonly authorizer: Authorizer;
  private readonly clock: SetClock;
  private readonly time: TimeSource;
  private evaluationErrors: string[] = [];
  private prints: string[] = [];

  private constructor(config: Config, authorizer: Authorizer, clock: SetClock, time: TimeSource, data: unknown, readsStatementText: boolean) {
    this.config = config;
    this.authorizer = authorizer;
    this.revision = authorizer.revision;
    this.clock = clock;
    this.time = time;
    this.data = data;
    this.readsStatementText = readsStatementText;
  }

  /** Builds `config.policy` as the proxy does (RG_POLICY_* when it cannot be built). */
  static async create(config: Config): Promise<Explainer> {
    if (config.policy === null) throw new RolegateError('RG_POLICY_LOAD', 'explain needs a policy (no policy: section in the config)');
    // opa's install notice goes to stderr: stdout is the explanation.
    const log = pino({ level: 'info' }, pino.destination(2));
    // A what-if never becomes active: nothing goes into the policy revision store.
    const bundle = await loadPolicyBundle(config, log, { keepRevision: false });
    const clock = new SetClock();
    const time = new TimeSource(config.time.zone, clock);
    let explainer: Explainer | null = null;
    // Evaluation failures and print() lines, as the proxy would log them, become part of the explanation.
    const lines = { warn: (obj: object) => explainer?.noteLogLine(obj, 'err'), info: (obj: object) => explainer?.noteLogLine(obj, 'print') };
    const authorizer = await createAuthorizer(config, bundle, new PolicyLog(lines), time, new FactsCache(config.limits.parseCacheEntries));
    explainer = new Explainer(config, authorizer, clock, time, bundle.data, bundle.readsStatementText);
    return explainer;
  }

  private noteLogLine(obj: object, field: 'err' | 'print'): void {
    const fields = obj as Record<string, unknown>;
    const text = fields[field];
    if (typeof text !== 'string') return;
    (field === 'err' ? this.evaluationErrors : this.prints).push(`${String(fields['entrypoint'])}: ${text}`);
  }

  /**
   * The connect decision, then (when allowed and `sql` is given) the text's
   * statement decisions. `state` is the session's prepared statements: pass
   * the same object for several texts of one session (as the relay keeps one
   * per connection); default a fresh session.
   */
  explain(req: ExplainRequest, state: SessionSqlState = new SessionSqlState()): Explanation {
    this.clock.ms = req.timeMs;
    this.evaluationErrors = [];
    this.prints = [];
    // As a session asks once authenticated.
    const input = connectInput(req.identity, req.client, req.request, this.time.now(), this.config.proxy);
    const decision = this.authorizer.connect(input);
    const out: Explanation = {
      policy: { dir: this.config.policy?.dir ?? '', data_file: this.config.policy?.dataFile ?? null, revision: this.revision, reads_statement_text: this.readsStatementText },
      connect: { input, decision, session: null },
      protocol: null,
      in_transaction: req.inTransaction,
      statements: [],
      verdict: null,
      allowed: false,
      client_error: null,
      evaluation_errors: this.evaluationErrors,
      prints: this.prints,
    };
    if (!decision.allow || decision.role === null) {
      out.client_error = { severity: 'FATAL', sqlstate: ERRORS.RG_CONNECT_DENIED.sqlstate, message: `connection refused by policy: ${decision.reason}`, detail: `rule: ${decision.rule}` };
      return out;
    }
    const session = sessionContext(input, decision.role, decision.database ?? req.request.database);
    out.connect.session = { role: session.role, database: session.database };
    if (req.sql === null) {
      out.allowed = true;
      return out;
    }

    // As the relay decides a Query's or Parse's text: bytes checked first, then the authorizer.
    const bytes = typeof req.sql === 'string' ? Buffer.from(req.sql, 'utf8') : req.sql;
    const problem = checkSqlBytes(bytes, 0, bytes.length);
    const result: StatementResult = problem !== null ? undecided(invalidText(problem)) : this.authorizer.statements({ session, state, sql: bytes.toString('utf8'), protocol: req.protocol, inTransaction: req.inTransaction });
    const time = this.time.now();
    out.protocol = req.protocol;
    out.statements = (result.parsed ?? []).map((stmt, i) => {
      const decided = result.decisions[i];
      return {
        index: i + 1,
        sql: stmt.facts.sql,
        facts: stmt.facts,
        effects: effectsOf(stmt),
        input: decided === undefined ? null : statementInput(session, stmt.facts, req.protocol, req.inTransaction, time),
        decision: decided ?? null,
      };
    });
    out.verdict = verdictOf(result);
    out.allowed = result.allow;
    if (!result.allow) {
      // As the relay words the ErrorResponse of a denial.
      out.client_error = { severity: 'ERROR', sqlstate: result.sqlstate, message: result.message, detail: `rule: ${result.rule}; policy revision: ${this.revision}` };
      if (result.position !== undefined) out.client_error.position = result.position;
    }
    return out;
  }
}

/** The text's facts as a session would get them: bytes checked as the relay does, then the parse cache. */
function parseText(cache: FactsCache, sql: string | Buffer): ParsedText {
  const bytes = typeof sql === 'string' ? Buffer.from(sql, 'utf8') : sql;
  const problem = checkSqlBytes(bytes, 0, bytes.length);
  if (problem !== null) return { ok: false, code: problem, message: ERRORS[problem].message, cursorPosition: null };
  return cache.get(bytes.toString('utf8'));
}

function effectsOf(stmt: ParsedStatement): StatementEffects {
  const meta = stmt.meta;
  return {
    prepares: meta.prepare?.name ?? null,
    executes: meta.execute,
    deallocates: meta.deallocate === '' ? 'ALL' : meta.deallocate,
    declares_cursor: meta.declareCursor?.name ?? null,
    transaction: meta.transaction,
  };
}

function verdictOf(result: StatementResult): StatementVerdict {
  const decided = result.decisions.length;
  if (result.allow) return { allow: true, rule: null, reason: null, source: null, statement: null };
  const last = result.decisions[decided - 1];
  let source: StatementVerdict['source'];
  if (last !== undefined && !last.allow && last.rule === result.rule) source = 'policy';
  else if (Object.hasOwn(PROXY_RULES, result.rule)) source = 'rolegate';
  else source = 'prepared-statement';
  return { allow: false, rule: result.rule, reason: result.reason, source, statement: decided === 0 ? null : decided };
}

// ------------------------------------------------------------------ tracing

/** The .rego files a policy build compiles (tests left out), for `opa eval` over the same sources. */
async function regoSources(dir: string): Promise<string[]> {
  return (await policySourceFiles(dir, false)).filter((f) => f.kind === 'rego').map((f) => f.path);
}

export interface TraceOutput {
  /** 'connect', or the 1-based statement. */
  of: 'connect' | number;
  entrypoint: string;
  command: string;
  output: string;
}

/**
 * `opa eval --explain=<mode>` over the policy's sources, the data document the
 * compiled policy was given, and the exact input of each decision made: the
 * connect input when the connection was refused (or no SQL was given), else
 * every decided statement's input.
 */
export async function traceExplanation(explainer: Explainer, explanation: Explanation, mode: TraceMode): Promise<TraceOutput[]> {
  const policy = explainer.config.policy;
  if (policy === null) return [];
  const opa = policy.opaPath ?? (await ensureOpa({ log: (line) => process.stderr.write(`${line}\n`) }));
  const work = await mkdtemp(path.join(tmpdir(), 'rolegate-trace-'));
  try {
    const dataPath = path.join(work, 'data.json');
    await writeFile(dataPath, JSON.stringify(explainer.data));
    const sources = await regoSources(policy.dir);
    const jobs: Array<{ of: 'connect' | number; entrypoint: string; input: unknown }> = [];
    if (explanation.statements.every((s) => s.input === null)) jobs.push({ of: 'connect', entrypoint: 'data.rolegate.connect', input: explanation.connect.input });
    for (const s of explanation.statements) if (s.input !== null) jobs.push({ of: s.index, entrypoint: 'data.rolegate.statement', input: s.input });
    const out: TraceOutput[] = [];
    for (const job of jobs) {
      const inputPath = path.join(work, `input-${String(job.of)}.json`);
      await writeFile(inputPath, JSON.stringify(job.input));
      const args = ['eval', '--format', 'pretty', `--explain=${mode}`];
      for (const file of sources) args.push('--data', file);
      args.push('--data', dataPath, '--input', inputPath, job.entrypoint);
      const run = await runOpa(opa, args, { timeoutMs: 120_000 });
      const shown = `opa eval --format pretty --explain=${mode} --data <the ${sources.length} .rego files of ${policy.dir}, tests left out> --data <the policy's data> --input <the input above> ${job.entrypoint}`;
      out.push({ of: job.of, entrypoint: job.entrypoint, command: shown, output: `${run.stdout}${run.stderr}`.trimEnd() });
    }
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ rendering

function indent(text: string, by: string): string {
  return text
    .split('\n')
    .map((line) => (line === '' ? line : by + line))
    .join('\n');
}

function listOr(items: string[]): string {
  return items.length === 0 ? '-' : items.join(', ');
}

/** The facts of one statement as lines of "label  value". */
function factLines(facts: StatementFacts, effects: StatementEffects): string[] {
  const name = (schema: string | null, n: string): string => (schema === null ? n : `${schema}.${n}`);
  const flags = Object.entries(facts.flags)
    .filter(([, on]) => on)
    .map(([flag]) => flag);
  const lines = [
    `command    ${facts.command}`,
    `tables     ${listOr(facts.tables.map((t) => `${name(t.schema, t.name)} (${t.access.join('+')})`))}`,
    `functions  ${listOr(facts.functions.map((f) => name(f.schema, f.name)))}`,
    `columns    ${listOr(facts.columns.map((c) => `${c.table === null ? c.name : `${c.table}.${c.name}`} (${c.access})`))}`,
    `flags      ${listOr(flags)}`,
    `parameter  ${facts.parameter ?? '-'}`,
  ];
  const session: string[] = [];
  if (effects.prepares !== null) session.push(`prepares ${effects.prepares}`);
  if (effects.executes !== null) session.push(`runs prepared statement ${effects.executes}`);
  if (effects.deallocates !== null) session.push(`deallocates ${effects.deallocates}`);
  if (effects.declares_cursor !== null) session.push(`declares cursor ${effects.declares_cursor}`);
  if (effects.transaction !== null) session.push(`transaction control: ${effects.transaction}`);
  if (session.length > 0) lines.push(`session    ${session.join(', ')}`);
  return lines;
}

function clientErrorLines(e: ClientError): string[] {
  const lines = [`${e.severity} ${e.sqlstate}  ${e.message}`, `DETAIL: ${e.detail}`];
  if (e.position !== undefined) lines.push(`POSITION: ${e.position}`);
  return lines;
}

function timeText(t: TimeInput): string {
  return `${t.rfc3339} (${t.weekday} ${String(t.hour).padStart(2, '0')}:${String(t.minute).padStart(2, '0')} ${t.tz})`;
}

/**
 * JSON for a reader: the document's top-level members one per line, and the
 * members of a long object below them; anything deeper on one line. Still
 * the exact document (valid JSON, for `opa eval --input`).
 */
function json(value: unknown, indent = '', depth = 0): string {
  const inline = JSON.stringify(value);
  if (typeof value !== 'object' || value === null || Array.isArray(value) || depth >= 2 || (depth > 0 && inline.length <= 100)) return inline;
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return inline;
  const inner = `${indent}  `;
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${json(v, inner, depth + 1)}`).join(',\n')}\n${indent}}`;
}

export function renderExplanation(e: Explanation, notes: readonly string[], traces: readonly TraceOutput[]): string {
  const out: string[] = [];
  const c = e.connect.input;
  out.push(`policy     ${e.policy.dir}${e.policy.data_file === null ? '' : ` + ${e.policy.data_file}`}  (revision ${e.policy.revision}; decisions cached by ${e.policy.reads_statement_text ? 'exact text' : 'facts'})`);
  out.push(`time       ${timeText(c.time)}`);
  for (const note of notes) out.push(`note       ${note}`);
  out.push('');
  const requested = c.request.role === null ? 'no role requested' : `role ${c.request.role} requested`;
  out.push(`CONNECT    ${c.identity.name} (${c.identity.method}) from ${c.client.addr}:${c.client.port}, ${c.client.tls ? 'TLS' : 'no TLS'}, database ${c.request.database}, ${requested}`);
  const d = e.connect.decision;
  out.push(`  decision ${d.allow ? 'allow' : 'deny'}  rule ${d.rule}`);
  out.push(`           ${d.reason}`);
  if (e.connect.session !== null) out.push(`  session  role ${e.connect.session.role}, database ${e.connect.session.database}`);
  out.push('  input');
  out.push(indent(json(c), '    '));
  for (const s of e.statements) {
    out.push('');
    out.push(`STATEMENT ${s.index}/${e.statements.length}  ${s.sql.replace(/\s+/g, ' ')}`);
    for (const line of factLines(s.facts, s.effects)) out.push(`  ${line}`);
    if (s.decision === null) {
      out.push('  decision (not decided: an earlier statement of the text was denied)');
      continue;
    }
    out.push(`  decision ${s.decision.allow ? 'allow' : 'deny'}  rule ${s.decision.rule}`);
    out.push(`           ${s.decision.reason}`);
    out.push('  input');
    out.push(indent(json(s.input), '    '));
  }
  out.push('');
  if (e.connect.session === null) {
    out.push(`VERDICT    connection refused by rule "${d.rule}"`);
  } else if (e.verdict === null) {
    out.push('VERDICT    connection allowed (no SQL given)');
  } else if (e.verdict.allow) {
    const n = e.statements.length;
    out.push(`VERDICT    allowed: ${n === 0 ? 'the text holds no statement (EmptyQueryResponse)' : `${n === 1 ? 'the statement is' : `all ${n} statements are`} forwarded to the server`} (${e.protocol} protocol${e.in_transaction ? ', in a transaction' : ''})`);
  } else {
    const where = e.verdict.statement === null ? '' : ` (statement ${e.verdict.statement})`;
    const by = e.verdict.source === 'rolegate' ? "rolegate's own rule" : e.verdict.source === 'prepared-statement' ? 'rule, for the prepared statement it runs,' : 'rule';
    out.push(`VERDICT    denied by ${by} "${e.verdict.rule}"${where}: nothing is forwarded`);
    out.push(`           ${e.verdict.reason}`);
  }
  if (e.client_error !== null) {
    const lines = clientErrorLines(e.client_error);
    out.push(`  client gets  ${lines[0]}`);
    for (const line of lines.slice(1)) out.push(`               ${line}`);
    if (e.client_error.severity === 'ERROR' && e.in_transaction) out.push('               (the open transaction is aborted: it cannot commit)');
  }
  for (const err of e.evaluation_errors) out.push(`  evaluation error  ${err}`);
  for (const line of e.prints) out.push(`  print     ${line}`);
  for (const t of traces) {
    out.push('');
    out.push(`TRACE ${t.of === 'connect' ? 'of the connect decision' : `of statement ${t.of}`}: ${t.command}`);
    out.push(indent(t.output, '  '));
  }
  return `${out.join('\n')}\n`;
}

function renderFacts(parsed: ParsedText): string {
  if (!parsed.ok) {
    const at = parsed.cursorPosition === null ? '' : ` at character ${parsed.cursorPosition + 1}`;
    return `not parsed (${parsed.code})${at}: ${parsed.message}\n`;
  }
  if (parsed.statements.length === 0) return 'no statements (an empty or comment-only text)\n';
  const out: string[] = [];
  parsed.statements.forEach((stmt, i) => {
    if (i > 0) out.push('');
    out.push(`statement ${i + 1}/${parsed.statements.length}  ${stmt.facts.sql.replace(/\s+/g, ' ')}`);
    for (const line of factLines(stmt.facts, effectsOf(stmt))) out.push(`  ${line}`);
  });
  return `${out.join('\n')}\n`;
}

function factsJson(parsed: ParsedText): unknown {
  if (!parsed.ok) return { ok: false, error: { code: parsed.code, message: parsed.message, position: parsed.cursorPosition === null ? null : parsed.cursorPosition + 1 } };
  return { ok: true, statements: parsed.statements.map((stmt) => ({ ...stmt.facts, effects: effectsOf(stmt) })) };
}

// ------------------------------------------------------------------ arguments

function readSqlFile(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/**
 * --sql, else --file, else (when `stdin`) standard input unless it is a
 * terminal; null when none gives any. Nothing on stdin counts as no SQL: a
 * script whose SQL went missing must not be told "allowed" for an empty text.
 */
function sqlArgument(values: { sql?: string | undefined; file?: string | undefined }, stdin: boolean): Buffer | null {
  if (values.sql !== undefined && values.file !== undefined) throw new UsageError('give the SQL with --sql or --file, not both');
  if (values.sql !== undefined) return Buffer.from(values.sql, 'utf8');
  if (values.file !== undefined) return readSqlFile(values.file);
  if (!stdin || process.stdin.isTTY === true) return null;
  let text: Buffer;
  try {
    text = readFileSync(0);
  } catch {
    return null;
  }
  return text.length === 0 ? null : text;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i;

function timeArgument(text: string): number {
  const ms = RFC3339.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms)) throw new UsageError(`--time must be an RFC 3339 time such as 2026-11-27T22:55:00Z, got ${JSON.stringify(text)}`);
  return ms;
}

function portArgument(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65_535) throw new UsageError(`--port must be a TCP port (0–65535), got ${JSON.stringify(text)}`);
  return n;
}

function addrArgument(text: string): string {
  const addr = canonicalIp(text);
  if (addr === null) throw new UsageError(`--addr must be an IP address, got ${JSON.stringify(text)}`);
  return addr;
}

function methodArgument(text: string): AuthMethod {
  const method = METHODS.find((m) => m === text);
  if (method === undefined) throw new UsageError(`--method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(text)}`);
  return method;
}

function claimsArgument(text: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--claims must be a JSON object: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UsageError('--claims must be a JSON object');
  return parsed as Record<string, unknown>;
}

/** What one audit record tells explain: the request as recorded, and the recorded outcome to compare with. */
interface AuditRecordRequest {
  event: 'connect' | 'statement';
  identity: string;
  method: AuthMethod;
  addr: string;
  port: number;
  database: string;
  role: string | null;
  sql: string | null;
  protocol: StatementProtocol;
  timeMs: number;
  recorded: { decision: string; rule: string | null; reason: string | null; policy_revision: string };
  sqlTruncated: boolean;
  /** What the record's `input` (audit.input: facts or full) adds: the parts of the input its other fields lack. */
  input: RecordedInput | null;
}

interface RecordedInput {
  claims?: Record<string, unknown>;
  cert?: IdentityInput['cert'];
  tls?: boolean;
  inTransaction?: boolean;
  /** input.time as the policy saw it. */
  timeMs?: number;
  tz?: string;
  env?: string;
  instance?: string;
  /** Connect records: the request as the client made it. */
  requestedRole?: string | null;
  applicationName?: string | null;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The parts of a recorded input explain can use; fields it does not find stay unset. */
function recordedInput(value: unknown): RecordedInput | null {
  if (!isObject(value)) return null;
  const out: RecordedInput = {};
  const identity = value['identity'];
  if (isObject(identity)) {
    if (isObject(identity['claims'])) out.claims = identity['claims'];
    const cert = identity['cert'];
    if (cert === null) out.cert = null;
    else if (isObject(cert) && typeof cert['subject'] === 'string' && Array.isArray(cert['san'])) {
      out.cert = { subject: cert['subject'], san: cert['san'].filter((x): x is string => typeof x === 'string') };
      if (typeof cert['fingerprint'] === 'string') out.cert.fingerprint = cert['fingerprint'];
    }
  }
  const client = value['client'];
  if (isObject(client) && typeof client['tls'] === 'boolean') out.tls = client['tls'];
  const session = value['session'];
  if (isObject(session) && typeof session['in_transaction'] === 'boolean') out.inTransaction = session['in_transaction'];
  const time = value['time'];
  if (isObject(time)) {
    if (typeof time['unix_ns'] === 'number') out.timeMs = Math.round(time['unix_ns'] / 1e6);
    if (typeof time['tz'] === 'string') out.tz = time['tz'];
  }
  const proxy = value['proxy'];
  if (isObject(proxy)) {
    if (typeof proxy['env'] === 'string') out.env = proxy['env'];
    if (typeof proxy['instance'] === 'string') out.instance = proxy['instance'];
  }
  const request = value['request'];
  if (isObject(request)) {
    const role = request['role'];
    if (role === null || typeof role === 'string') out.requestedRole = role;
    const app = request['application_name'];
    if (app === null || typeof app === 'string') out.applicationName = app;
  }
  return out;
}

/** FILE or FILE:LINE (1-based; default the first line). A file whose own name ends in :N is taken whole. */
function readAuditRecord(spec: string): AuditRecordRequest {
  let file = spec;
  let line = 1;
  const m = /^(.*):(\d+)$/.exec(spec);
  if (m !== null && !isFile(spec)) {
    file = m[1] as string;
    line = Number(m[2]);
    if (line < 1) throw new UsageError(`--audit-record ${spec}: lines count from 1`);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--audit-record: cannot read ${file}: ${(err as Error).message}`);
  }
  const lines = text.split('\n');
  const raw = lines[line - 1];
  if (raw === undefined || raw.trim() === '') throw new UsageError(`--audit-record: ${file} has no record on line ${line}`);
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(raw) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`--audit-record: ${file}:${line} is not JSON: ${(err as Error).message}`);
  }
  const bad = (field: string): never => {
    throw new UsageError(`--audit-record: ${file}:${line} is not an audit record (${field} missing or malformed)`);
  };
  const event = rec['audit'];
  if (event !== 'connect' && event !== 'statement') return bad('audit');
  const identity = rec['identity'];
  const client = rec['client'];
  if (!isObject(identity) || typeof identity['name'] !== 'string') return bad('identity');
  const method = METHODS.find((x) => x === identity['method']) ?? bad('identity.method');
  if (!isObject(client) || typeof client['addr'] !== 'string' || typeof client['port'] !== 'number') return bad('client');
  if (typeof rec['database'] !== 'string') return bad('database');
  const role = rec['role'];
  if (role !== null && typeof role !== 'string') return bad('role');
  if (typeof rec['unix_ms'] !== 'number') return bad('unix_ms');
  const sql = event === 'statement' ? rec['sql'] : null;
  if (event === 'statement' && typeof sql !== 'string') return bad('sql');
  const protocol = rec['protocol'] === 'extended' ? 'extended' : 'simple';
  return {
    event,
    identity: identity['name'],
    method,
    addr: client['addr'],
    port: client['port'],
    database: rec['database'],
    role,
    sql: typeof sql === 'string' ? sql : null,
    protocol,
    timeMs: rec['unix_ms'],
    recorded: {
      decision: String(rec['decision']),
      rule: typeof rec['rule'] === 'string' ? rec['rule'] : null,
      reason: typeof rec['reason'] === 'string' ? rec['reason'] : null,
      policy_revision: String(rec['policy_revision']),
    },
    sqlTruncated: rec['sql_truncated'] === true,
    input: recordedInput(rec['input']),
  };
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function traceUsage(text: string): never {
  throw new UsageError(`--trace must be one of ${TRACE_MODES.join(', ')}, got ${JSON.stringify(text)}`);
}

/** `--trace` alone means --trace=full: rewrite it so parseArgs (no optional values) reads it. */
function normaliseTraceFlag(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg !== '--trace') {
      out.push(arg);
      continue;
    }
    const next = args[i + 1];
    if (next !== undefined && (TRACE_MODES as readonly string[]).includes(next)) {
      out.push(`--trace=${next}`);
      i++;
    } else out.push('--trace=full');
  }
  return out;
}

/** The config explain decides under: --config, else every default (a config file with no keys). */
function explainConfig(configFile: string | undefined, policyDir: string | undefined, dataFile: string | undefined): Config {
  const base = configFile === undefined ? parseConfig('{}', null) : loadConfigFile(configFile);
  // --policy DIR explains a draft with its own data.json; the config's data_file applies only to the config's own policy directory.
  const fromConfig = policyDir === undefined ? base.policy : null;
  const dir = policyDir ?? fromConfig?.dir ?? SHIPPED_POLICY_DIR;
  if (policyDir !== undefined && !isDirectory(policyDir)) throw new UsageError(`--policy ${policyDir} is not a directory`);
  if (dataFile !== undefined && !isFile(dataFile)) throw new UsageError(`--data ${dataFile} is not a file`);
  const data = dataFile !== undefined ? path.resolve(dataFile) : (fromConfig?.dataFile ?? null);
  return { ...base, policy: { dir: path.resolve(dir), dataFile: data, opaPath: base.policy?.opaPath ?? null, watch: false } };
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function usageExit(message: string): number {
  process.stderr.write(`rolegate: ${message}\nRun "rolegate --help" for usage.\n`);
  return EXPLAIN_EXIT.usage;
}

/** Runs a command body; usage problems (ours and parseArgs') print and return 2, the rest propagates. */
async function withUsage(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError) return usageExit(err.message);
    if (err instanceof TypeError && 'code' in err && typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS')) return usageExit(err.message);
    throw err;
  }
}

// ------------------------------------------------------------------ commands

/** `rolegate facts`: 0 when the text parses, 1 when rolegate would refuse it unparsed, 2 usage. */
export function runFacts(args: string[]): Promise<number> {
  return withUsage(async () => {
    const { values } = parseArgs({ args, options: { sql: { type: 'string' }, file: { type: 'string' }, json: { type: 'boolean' } }, strict: true, allowPositionals: false });
    const sql = sqlArgument(values, true);
    if (sql === null) throw new UsageError('facts needs SQL: --sql TEXT, --file FILE, or on stdin');
    await initParser();
    const parsed = parseText(new FactsCache(1), sql);
    process.stdout.write(values.json === true ? `${JSON.stringify(factsJson(parsed))}\n` : renderFacts(parsed));
    return parsed.ok ? EXPLAIN_EXIT.allowed : EXPLAIN_EXIT.denied;
  });
}

/** `rolegate explain`: 0 allowed, 1 denied, 2 usage, 3 policy or config invalid (thrown as RG_POLICY_* / RG_CONFIG_INVALID). */
export function runExplain(args: string[]): Promise<number> {
  return withUsage(async () => {
    const { values } = parseArgs({
      args: normaliseTraceFlag(args),
      options: {
        sql: { type: 'string' },
        file: { type: 'string' },
        'audit-record': { type: 'string' },
        identity: { type: 'string' },
        method: { type: 'string' },
        claims: { type: 'string' },
        'cert-subject': { type: 'string' },
        'cert-san': { type: 'string', multiple: true },
        role: { type: 'string' },
        database: { type: 'string' },
        'application-name': { type: 'string' },
        addr: { type: 'string' },
        port: { type: 'string' },
        tls: { type: 'boolean' },
        time: { type: 'string' },
        tz: { type: 'string' },
        env: { type: 'string' },
        instance: { type: 'string' },
        protocol: { type: 'string' },
        'in-transaction': { type: 'boolean' },
        policy: { type: 'string' },
        data: { type: 'string' },
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean' },
        trace: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
    const notes: string[] = [];
    const record = values['audit-record'] === undefined ? null : readAuditRecord(values['audit-record']);
    // What the record's own input holds, as the policy saw it (audit.input); flags override either.
    const recorded = record?.input ?? null;
    const name = values.identity ?? record?.identity;
    if (name === undefined) throw new UsageError('explain needs --identity NAME (or --audit-record FILE[:LINE])');
    const method = values.method !== undefined ? methodArgument(values.method) : (record?.method ?? 'scram-sha-256');
    const claims = values.claims !== undefined ? claimsArgument(values.claims) : (recorded?.claims ?? {});
    const certFlags = values['cert-subject'] !== undefined || values['cert-san'] !== undefined;
    if (method !== 'cert' && certFlags) throw new UsageError('--cert-subject and --cert-san need --method cert');
    let cert: IdentityInput['cert'] = null;
    if (method === 'cert') cert = certFlags ? { subject: values['cert-subject'] ?? '', san: values['cert-san'] ?? [] } : (recorded?.cert ?? { subject: '', san: [] });
    const identity: IdentityInput = { name, method, claims, cert };
    const protocolText = values.protocol ?? record?.protocol ?? 'simple';
    if (protocolText !== 'simple' && protocolText !== 'extended') throw new UsageError(`--protocol must be simple or extended, got ${JSON.stringify(protocolText)}`);
    const trace = values.trace === undefined ? undefined : (TRACE_MODES.find((m) => m === values.trace) ?? traceUsage(values.trace));

    // --sql or --file, else the record's SQL, else stdin.
    let sql = sqlArgument(values, record?.sql === undefined || record.sql === null);
    if (sql === null && record !== null && record.sql !== null) sql = Buffer.from(record.sql, 'utf8');
    if (sql === null && record?.event !== 'connect') throw new UsageError('explain needs SQL: --sql TEXT, --file FILE, on stdin, or an --audit-record of a statement');

    // A connect record's input holds the request as made; otherwise the record's (decided) role is asked for.
    const recordRole = recorded?.requestedRole !== undefined ? recorded.requestedRole : (record?.role ?? null);
    if (record !== null) {
      notes.push(`from the ${record.event} record in ${values['audit-record']}: recorded ${record.recorded.decision} by rule ${record.recorded.rule ?? '-'} (policy revision ${record.recorded.policy_revision})`);
      if (recorded !== null) notes.push("the record's input gives TLS, claims, transaction state, time and proxy as the policy saw them");
      if (values.role === undefined && recorded?.requestedRole === undefined && record.role !== null) notes.push(`the record holds the decided role: ${record.role} is asked for as the requested role (--role to change)`);
      if (values.tls === undefined && recorded?.tls === undefined) notes.push('the record does not hold client.tls: taken as false (--tls to change; audit.input records it)');
      if (values['in-transaction'] === undefined && recorded?.inTransaction === undefined && record.event === 'statement') notes.push('the record does not hold the transaction state: taken as outside a transaction (--in-transaction to change; audit.input records it)');
      if (method === 'jwt' && values.claims === undefined && recorded?.claims === undefined) notes.push('the record does not hold JWT claims: taken as {} (--claims to give them; audit.input records them)');
      if (record.sqlTruncated && values.sql === undefined && values.file === undefined) notes.push('the record holds the SQL text cut to audit.max_sql_bytes: the decision may differ from the recorded one');
    }

    const config = explainConfig(values.config, values.policy, values.data);
    const zone = values.tz ?? recorded?.tz ?? config.time.zone;
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: zone });
    } catch {
      throw new UsageError(`--tz: unknown time zone ${JSON.stringify(zone)} (use an IANA name such as Europe/Berlin)`);
    }
    const decideConfig: Config = {
      ...config,
      time: { ...config.time, zone },
      proxy: { env: values.env ?? recorded?.env ?? config.proxy.env, instance: values.instance ?? recorded?.instance ?? config.proxy.instance },
    };
    const request: ExplainRequest = {
      identity,
      client: {
        addr: addrArgument(values.addr ?? record?.addr ?? '127.0.0.1'),
        port: values.port !== undefined ? portArgument(values.port) : (record?.port ?? 0),
        tls: values.tls ?? recorded?.tls ?? false,
      },
      request: {
        database: values.database ?? record?.database ?? name,
        role: values.role ?? recordRole,
        application_name: values['application-name'] ?? recorded?.applicationName ?? null,
      },
      timeMs: values.time !== undefined ? timeArgument(values.time) : (recorded?.timeMs ?? record?.timeMs ?? Date.now()),
      sql,
      protocol: protocolText,
      inTransaction: values['in-transaction'] ?? recorded?.inTransaction ?? false,
    };

    await initParser();
    const explainer = await Explainer.create(decideConfig);
    const explanation = explainer.explain(request);
    const session = explanation.connect.session;
    if (values.config !== undefined && session !== null && !Object.hasOwn(config.roles, session.role)) {
      notes.push(`the config holds no upstream credentials for role ${session.role}: the proxy would end this session (${ERRORS.RG_UPSTREAM_AUTH.sqlstate})`);
    }
    const traces = trace === undefined ? [] : await traceExplanation(explainer, explanation, trace);
    if (values.json === true) {
      const doc: Record<string, unknown> = { ...explanation, notes };
      if (record !== null) doc['recorded'] = record.recorded;
      if (trace !== undefined) doc['trace'] = traces;
      process.stdout.write(`${JSON.stringify(doc)}\n`);
    } else {
      process.stdout.write(renderExplanation(explanation, notes, traces));
    }
    return explanation.allowed ? EXPLAIN_EXIT.allowed : EXPLAIN_EXIT.denied;
  });
}
