// The relay core: a logged-in session's protocol state machine, both
// directions, with no socket. Bytes come in through onClientBytes() and
// onServerBytes(); what goes out leaves through RelayIo. Handlers are named
// after the messages they handle.
//
// Client → server: the framer cuts messages; runs of consecutive allowed
// messages are forwarded as subarrays of the client's own chunk (never
// re-encoded). Query and Parse are decided synchronously by the authorizer
// (a value per decision); Bind re-checks a prepared statement after a policy
// reload or a time-bucket change.
//
// A denied statement never reaches the database: the core sends the server a
// statement that fails with a syntax error naming a per-session nonce instead.
// That keeps the response order of pipelined messages intact, aborts an
// explicit transaction (so it cannot commit), makes the server discard the
// rest of the pipeline until Sync, and lets the core swap that one
// ErrorResponse for its own 42501.
//
// Server → client: bytes stream back as they came; only type and length are
// read, plus ReadyForQuery (transaction status), CommandComplete (rows),
// ErrorResponse (a denial's nonce) and ParameterStatus (pinned settings).

import { randomBytes } from 'node:crypto';
import type { AuditRecorder } from '../audit/auditor.ts';
import { commandCompleteRows } from '../audit/record.ts';
import { decidedFacts, notePrepared, SessionSqlState, undecided, type Authorizer, type PreparedRecord, type SessionContext, type StatementDenial, type StatementRequest } from '../decision/authorizer.ts';
import type { Shadow, ShadowedResult } from '../decision/shadow.ts';
import type { TimeSource } from '../decision/clock.ts';
import { invalidText, proxyDenial } from '../decision/proxy-rules.ts';
import type { ErrorCode } from '../errors.ts';
import type { WorkerMetrics } from '../metrics/worker-counters.ts';
import * as be from '../protocol/backend.ts';
import { Backend, Frontend, TxStatus } from '../protocol/constants.ts';
import type { BufferBudget } from '../protocol/buffer-budget.ts';
import { PARSER_SETTINGS } from '../sql/guarded-effects.ts';
import type { OffThreadParser } from '../sql/parse-pool.ts';
import type { ParsedText } from '../sql/parser.ts';
import { FrameEvent, Framer } from '../protocol/framer.ts';
import * as fe from '../protocol/frontend.ts';
import * as encode from '../protocol/frontend-encode.ts';
import { clientLineAllowed } from './client-log-lines.ts';
import type { SessionLog } from './session-host.ts';
import { deniedFacts, type DeniedStatement, type StatementLog } from './statement-log.ts';

/** What the worker provides to the relay core. */
export interface RelayHost {
  readonly workerId: number;
  readonly audit: AuditRecorder;
  readonly metrics: WorkerMetrics;
  readonly time: TimeSource;
  readonly log: SessionLog;
  /** The current authorizer (swapped on policy reload; read per statement). */
  authorizer(): Authorizer;
  /** The candidate policy deciding beside it (policy.shadow), or null. */
  shadow(): Shadow | null;
  /** The process's budget for incomplete client messages (limits.max_buffered_bytes); absent: unbounded (tests). */
  readonly bufferBudget?: BufferBudget | null;
  /** Parses texts too long to cache away from the worker's thread; absent: every text is parsed inline. */
  readonly offThreadParser?: OffThreadParser | null;
}

/** A Query or Parse whose text is being parsed off the thread: the session waits for it, and keeps what arrives meanwhile. */
interface Suspended {
  readonly type: number;
  readonly buf: Buffer;
  readonly start: number;
  readonly end: number;
  readonly queued: Buffer[];
}



/** The two sides as the core sees them. */
export interface RelayIo {
  /** Bytes for the server. */
  toServer(bytes: Buffer): void;
  /** Bytes for the client. */
  toClient(bytes: Buffer): void;
  /** The session must end: FATAL `code` to the client, then close both sides. */
  fail(code: ErrorCode, message?: string): void;
  /** The client sent Terminate: the session ends (Terminate goes upstream). */
  terminate(): void;
  /** Ask the server to cancel what it runs (a CancelRequest with the upstream's own keys, on a connection of its own). */
  cancelServer(): void;
  /** Stop reading from the client while a text is parsed off the thread; absent: nothing to pause (tests). */
  pauseClient?(): void;
  /** Read from the client again. */
  resumeClient?(): void;
}

export interface RelayOptions {
  readonly sessionId: string;
  /** Per-session part of the denial nonces: one SQL identifier token ([a-z0-9_]). */
  readonly nonceBase: string;
  readonly maxMessageBytes: number;
  /** limits.max_statement_bytes: a longer Query or Parse text is refused before it is parsed or decided (default: no smaller than the message limit). */
  readonly maxStatementBytes?: number;
  /** Decision time bucket (config time.bucket_ms): a prepared statement is re-checked at Bind in a new bucket. */
  readonly bucketMs: number;
  readonly context: SessionContext;
  /** Transaction status at the login's ReadyForQuery. */
  readonly txStatus: number;
}

/** A denial whose injected failing statement is on its way upstream. */
interface PendingDenial {
  nonce: string;
  response: Buffer;
  /** The group it was sent in (syncsSent then): its ReadyForQuery ends it, answered or skipped. */
  group: number;
}

/** Message types a client may send once the session is relaying. */
const RELAY_TYPES = new Uint8Array(256);
for (const t of [
  Frontend.Bind,
  Frontend.Close,
  Frontend.Describe,
  Frontend.Execute,
  Frontend.FunctionCall,
  Frontend.Flush,
  Frontend.Parse,
  Frontend.Query,
  Frontend.Sync,
  Frontend.Terminate,
  Frontend.CopyData,
  Frontend.CopyDone,
  Frontend.CopyFail,
]) {
  RELAY_TYPES[t] = 1;
}

/**
 * Denials awaiting the server's answer. Entries leave when answered, or when
 * their group's ReadyForQuery shows the server skipped them (an earlier error
 * in the pipeline); a client pipelining more without reading loses the oldest
 * rewrites past this bound (the server still refuses them: fail closed).
 */
const MAX_PENDING_DENIALS = 10_000;

/** Random per thread: a client cannot predict (and so forge) the nonce of an injected denial. */
export const NONCE_PREFIX = randomBytes(8).toString('hex');

/**
 * Extended-query messages that leave work open upstream until the next Sync
 * (or a Query, which ends the implicit transaction in the server as well):
 * a session with one of them outstanding is not at a transaction boundary.
 */
const UNSYNCED_TYPES = new Uint8Array(256);
for (const t of [Frontend.Parse, Frontend.Bind, Frontend.Describe, Frontend.Execute, Frontend.Close]) UNSYNCED_TYPES[t] = 1;

/** The FATAL (57P01) text of a session a drain ends at its transaction boundary. */
export const DRAIN_MESSAGE = 'terminating connection: rolegate is shutting down';

export class Relay {
  private readonly host: RelayHost;
  private readonly io: RelayIo;
  private readonly log: StatementLog;
  private readonly sessionId: string;
  private readonly context: SessionContext;
  private readonly bucketMs: number;
  private readonly maxStatementBytes: number;
  private readonly clientFramer: Framer;
  private readonly serverFramer: Framer;
  /** PREPARE'd statements and cursors of this session (what EXECUTE and Bind run). */
  private readonly sqlState = new SessionSqlState();
  private txStatus: number;
  /** Query, Sync and FunctionCall messages sent upstream (each ends in a ReadyForQuery); also the group number of what follows. */
  private syncsSent = 0;
  private readyReceived = 0;
  private discardUntilSync = false;
  private readonly denials: PendingDenial[] = [];
  private readonly nonceBase: string;
  /** The statement name of injected Parse messages (and of Binds refused): never one a client prepared. */
  private readonly deniedName: string;
  private nonceSeq = 0;
  /** The server sent a FATAL: it already told the client why it is closing. */
  serverSentFatal = false;
  private ended = false;
  /** A drain is under way: the session ends at its next transaction boundary. */
  private draining = false;
  /** Extended-query messages were sent upstream since the last Sync (or Query). */
  private unsynced = false;
  /** The message waiting for its off-thread parse (nothing after it is handled meanwhile), or null. */
  private suspended: Suspended | null = null;
  /** The off-thread parse of the text being decided now (decide() hands it to the authorizer). */
  private preParsed: { sql: string; parsed: ParsedText } | null = null;

  // The current forward run (one at a time; see flushRun()).
  private runBuf: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;
  private runToServer = false;

  constructor(host: RelayHost, io: RelayIo, log: StatementLog, options: RelayOptions) {
    this.host = host;
    this.io = io;
    this.log = log;
    this.sessionId = options.sessionId;
    this.context = options.context;
    this.bucketMs = options.bucketMs;
    this.maxStatementBytes = options.maxStatementBytes ?? options.maxMessageBytes;
    this.nonceBase = options.nonceBase;
    this.deniedName = `rolegate_denied_${options.nonceBase}`;
    this.txStatus = options.txStatus;
    this.clientFramer = new Framer(options.maxMessageBytes, [Frontend.CopyData], host.bufferBudget ?? null);
    this.serverFramer = new Framer(0x7fffffff, [Backend.DataRow, Backend.CopyData]);
  }

  /** Something sent upstream has not been answered with its ReadyForQuery yet. */
  get busy(): boolean {
    return this.suspended !== null || this.syncsSent > this.readyReceived;
  }

  /**
   * At a transaction boundary: the last ReadyForQuery said idle ('I'), every
   * Query and Sync sent has had its ReadyForQuery (so no COPY runs either),
   * and no extended-query message awaits a Sync.
   */
  private get atBoundary(): boolean {
    return this.txStatus === TxStatus.Idle && this.syncsSent === this.readyReceived && !this.unsynced && this.suspended === null;
  }

  /**
   * The proxy is draining: end the session now if it is at a transaction
   * boundary, else at the next ReadyForQuery that reaches one (a transaction
   * under way runs to its end first).
   */
  drain(): void {
    this.draining = true;
    if (!this.ended && this.atBoundary) this.endForDrain();
  }

  private endForDrain(): void {
    this.flushRun();
    this.fail('RG_SHUTDOWN', DRAIN_MESSAGE);
  }

  /** The session is over: nothing more is relayed. */
  end(): void {
    this.ended = true;
    this.clientFramer.dispose();
  }

  /**
   * A CancelRequest with this session's keys arrived (on any worker; the
   * worker's cancel-key table routed it here): the server is asked to cancel.
   * Nothing is written to either side of the session itself — the server
   * answers the cancelled statement with an ErrorResponse (57014), relayed as
   * any other.
   */
  cancel(): void {
    if (!this.ended) this.io.cancelServer();
  }

  private fail(code: ErrorCode, message?: string): void {
    this.ended = true;
    this.io.fail(code, message);
  }

  // ------------------------------------------------------------ client → server

  onClientBytes(chunk: Buffer): void {
    if (this.ended) return;
    if (this.suspended !== null) {
      // Handled after the waiting message, in order.
      this.suspended.queued.push(chunk);
      this.io.pauseClient?.();
      return;
    }
    this.clientFramer.push(chunk);
    this.processFrames();
  }

  /** Handle every whole message the framer holds (until one must wait for an off-thread parse). */
  private processFrames(): void {
    const framer = this.clientFramer;
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        this.flushRun();
        return this.fail(framer.errorCode ?? 'RG_PROTOCOL_VIOLATION');
      }
      if (ev === FrameEvent.Raw) {
        // Part of a CopyData message too big for one chunk: forward as it comes.
        if (!this.discardUntilSync) this.extendRun(true, framer.buf, framer.start, framer.end);
        continue;
      }
      const type = framer.type;
      if (RELAY_TYPES[type] !== 1) {
        this.flushRun();
        return this.fail('RG_UNKNOWN_MESSAGE', `invalid frontend message type ${type} ("${String.fromCharCode(type)}")`);
      }
      if (type === Frontend.Sync || type === Frontend.Query) this.unsynced = false;
      else if (UNSYNCED_TYPES[type] === 1) this.unsynced = true;
      if (this.discardUntilSync) {
        // After a denied Parse the server would discard until Sync; so do we.
        if (type === Frontend.Sync) {
          this.discardUntilSync = false;
          this.syncsSent++;
          this.extendRun(true, framer.buf, framer.start, framer.end);
        }
        continue;
      }
      switch (type) {
        case Frontend.Query:
          this.onQuery(framer.buf, framer.start, framer.end);
          break;
        case Frontend.Parse:
          this.onParse(framer.buf, framer.start, framer.end);
          break;
        case Frontend.Sync:
          this.syncsSent++;
          this.extendRun(true, framer.buf, framer.start, framer.end);
          break;
        case Frontend.Terminate:
          this.flushRun();
          this.ended = true;
          return this.io.terminate();
        case Frontend.FunctionCall:
          this.onFunctionCall();
          break;
        case Frontend.Bind:
          this.onBind(framer.buf, framer.start, framer.end);
          break;
        case Frontend.Execute:
          this.onExecute(framer.buf, framer.start, framer.end);
          break;
        case Frontend.Close:
          this.onClose(framer.buf, framer.start, framer.end);
          break;
        default:
          this.extendRun(true, framer.buf, framer.start, framer.end);
      }
      if (this.ended || this.suspended !== null) return;
    }
    this.flushRun();
  }

  /**
   * A text too long to cache is parsed on the pool thread instead of here (the
   * worker's other sessions would wait for it): true when `sql` went there
   * and this message waits for it (resume() handles it, then what follows).
   */
  private parseOffThread(type: number, buf: Buffer, start: number, end: number, sql: string): boolean {
    const parser = this.host.offThreadParser;
    if (parser === undefined || parser === null || sql.length <= parser.thresholdChars) return false;
    if (this.preParsed?.sql === sql) return false; // resume(): parsed already
    // Refusals that need no parse stay here (a text over the size limit is never parsed at all).
    if (Buffer.byteLength(sql) > this.maxStatementBytes) return false;
    this.flushRun();
    this.suspended = { type, buf, start, end, queued: [] };
    this.io.pauseClient?.();
    void parser.parse(sql).then((parsed) => this.resume(sql, parsed));
    return true;
  }

  /** The off-thread parse is back: decide the waiting message, then go on with what followed it. */
  private resume(sql: string, parsed: ParsedText): void {
    const waiting = this.suspended;
    this.suspended = null;
    if (waiting === null || this.ended) return;
    this.preParsed = { sql, parsed };
    if (waiting.type === Frontend.Query) this.onQuery(waiting.buf, waiting.start, waiting.end);
    else this.onParse(waiting.buf, waiting.start, waiting.end);
    this.preParsed = null;
    if (!this.ended) this.processFrames();
    const queued = waiting.queued;
    while (!this.ended && this.suspended === null && queued.length > 0) {
      this.clientFramer.push(queued.shift() as Buffer);
      this.processFrames();
    }
    if (this.ended) return;
    // (handling the messages above may have sent another text off the thread)
    const again = this.suspended as Suspended | null;
    if (again !== null) again.queued.push(...queued);
    else this.io.resumeClient?.();
  }

  /** Simple Query ('Q'): decide every statement; forward only if all are allowed. */
  private onQuery(buf: Buffer, start: number, end: number): void {
    const q = fe.decodeQuery(buf, start, end);
    if (q === null) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed Query message');
    // A simple Query destroys the unnamed prepared statement (as in the server).
    this.sqlState.statements.delete('');
    const sql = buf.toString('utf8', q.textStart, q.textEnd);
    if (this.parseOffThread(Frontend.Query, buf, start, end, sql)) return;
    const result = this.decide(buf, q.textStart, q.textEnd, sql, 'simple');
    if (result.allow) {
      this.log.query(result, sql, this.syncsSent);
      this.syncsSent++;
      this.extendRun(true, buf, start, end);
      return;
    }
    this.deny(result, 'simple', '', { name: null, sql, facts: deniedFacts(result), shadow: result.shadow }, result.decisionUs);
  }

  /** Parse ('P'): the decision is made here and holds for the statement's Binds. */
  private onParse(buf: Buffer, start: number, end: number): void {
    const p = fe.decodeParse(buf, start, end);
    if (p === null) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed Parse message');
    const sql = buf.toString('utf8', p.textStart, p.textEnd);
    if (this.parseOffThread(Frontend.Parse, buf, start, end, sql)) return;
    const result = this.decide(buf, p.textStart, p.textEnd, sql, 'extended');
    const statements = this.sqlState.statements;
    if (result.allow) {
      if (statements.size >= SessionSqlState.MAX_ENTRIES && !statements.has(p.name)) {
        const denial = proxyDenial('prepared-statement-limit', String(SessionSqlState.MAX_ENTRIES));
        const facts = decidedFacts(result);
        this.countRefusal(facts?.command ?? null, denial.rule, 'extended');
        this.deny(denial, 'extended', p.name, { name: p.name, sql, facts }, result.decisionUs);
        this.discardUntilSync = true;
        return;
      }
      const rec: PreparedRecord = {
        sql,
        authorizer: this.host.authorizer(),
        bucket: this.bucket(),
        facts: decidedFacts(result),
        decision: result.decisions[0] ?? null,
        decisionUs: result.decisionUs,
        others: [],
        shadow: result.shadow,
      };
      // Parse of the unnamed statement replaces it. A named one that exists is
      // refused by the server (42P05) and keeps its text — unless the server
      // no longer has it (a DEALLOCATE that failed in an aborted transaction):
      // rolegate cannot tell, so the name may hold either text from now on.
      if (p.name === '') statements.set('', rec);
      else notePrepared(this.sqlState, p.name, rec);
      this.log.decided(rec);
      this.extendRun(true, buf, start, end);
      return;
    }
    // A failed Parse of the unnamed statement drops the old one in the server too.
    if (p.name === '') statements.delete('');
    this.deny(result, 'extended', p.name, { name: p.name, sql, facts: deniedFacts(result), shadow: result.shadow }, result.decisionUs);
    this.discardUntilSync = true;
  }

  /** Bind ('B'): the Parse decision holds unless the policy or the time bucket changed since. */
  private onBind(buf: Buffer, start: number, end: number): void {
    const b = fe.decodeBind(buf, start, end);
    if (b === null) return this.fail('RG_PROTOCOL_VIOLATION', 'malformed Bind message');
    const authorizer = this.host.authorizer();
    const rec = this.sqlState.statements.get(b.statement);
    if (rec === undefined && authorizer.enforcesStatements) {
      // Nothing rolegate allowed has this name: whatever the server holds under
      // it (if anything) was never decided. Refused like an unknown EXECUTE.
      const denial = proxyDenial('unknown-prepared-statement', b.statement);
      this.countRefusal(null, denial.rule, 'extended');
      this.deny(denial, 'extended', this.deniedName, { name: b.statement, sql: '', facts: null }, 0);
      this.discardUntilSync = true;
      return;
    }
    if (rec !== undefined) {
      const bucket = this.bucket();
      if (rec.authorizer !== authorizer || rec.bucket !== bucket || rec.others.length > 0) {
        const result = authorizer.preparedStatement(this.context, this.sqlState, rec, this.txStatus !== TxStatus.Idle);
        if (!result.allow) {
          // The statement stays prepared upstream; this execution fails like a failed Parse would.
          const facts = deniedFacts(result);
          this.countRefusal(facts?.command ?? null, result.rule, 'extended');
          this.deny(result, 'extended', this.deniedName, { name: b.statement, sql: rec.sql, facts }, result.decisionUs);
          this.discardUntilSync = true;
          return;
        }
        rec.authorizer = authorizer;
        rec.bucket = bucket;
        rec.decision = result.decisions[0] ?? rec.decision;
        rec.decisionUs = result.decisionUs;
        // Re-checked by the active policy alone: the Parse's shadow answer no longer describes it.
        rec.shadow = undefined;
        this.log.decided(rec);
      }
    }
    this.log.bind(b.portal, b.statement, buf, start, end, this.syncsSent);
    this.extendRun(true, buf, start, end);
  }

  /** Execute ('E'): forwarded; its execution is tracked (answered before the ReadyForQuery of the next Sync). */
  private onExecute(buf: Buffer, start: number, end: number): void {
    this.log.execute(buf, start, end, this.syncsSent, this.sqlState.statements);
    this.extendRun(true, buf, start, end);
  }

  /** Close ('C') of a statement forgets its Parse decision; of a portal, its audit bookkeeping. */
  private onClose(buf: Buffer, start: number, end: number): void {
    const c = fe.decodeTarget(buf, start, end);
    if (c !== null && c.kind === 'S') this.sqlState.statements.delete(c.name);
    if (c !== null && c.kind === 'P') this.log.closePortal(c.name);
    this.extendRun(true, buf, start, end);
  }

  /** FunctionCall ('F') calls a function by OID, invisible to any SQL parser: refused. */
  private onFunctionCall(): void {
    const denial = proxyDenial('function-call-message');
    this.countRefusal('FUNCTION CALL', denial.rule, 'simple');
    this.deny(denial, 'simple', '', { name: null, sql: '', facts: null, command: 'FUNCTION CALL' }, 0);
  }

  private bucket(): number {
    return Math.floor(this.host.time.nowMs() / this.bucketMs);
  }

  /** Decide a Query's or Parse's text (`sql`, decoded once by the caller from buf[textStart, textEnd)). */
  private decide(buf: Buffer, textStart: number, textEnd: number, sql: string, protocol: 'simple' | 'extended'): ShadowedResult {
    // Checked first, whatever the caches hold: the same text always gets the same answer,
    // and no text this long is parsed or evaluated on the worker's thread.
    if (textEnd - textStart > this.maxStatementBytes) {
      this.countRefusal(null, 'statement-too-large', protocol);
      return undecided(proxyDenial('statement-too-large', `the statement is ${textEnd - textStart} bytes; limits.max_statement_bytes is ${this.maxStatementBytes}`));
    }
    const problem = fe.checkSqlBytes(buf, textStart, textEnd);
    if (problem !== null) {
      this.countRefusal(null, 'invalid-text', protocol);
      return undecided(invalidText(problem));
    }
    if (!this.host.audit.canProceed()) {
      // Fail-closed audit: nothing runs that cannot be recorded.
      this.countRefusal(null, 'audit-unavailable', protocol);
      return undecided(proxyDenial('audit-unavailable'));
    }
    // The off-thread parse of this text, when resume() is deciding it.
    const preParsed = this.preParsed?.sql === sql ? this.preParsed.parsed : undefined;
    const request: StatementRequest = { session: this.context, state: this.sqlState, sql, protocol, inTransaction: this.txStatus !== TxStatus.Idle, parsed: preParsed };
    const active = this.host.authorizer().statements(request);
    // Shadow mode: the candidate judges the same request; the active result is enforced.
    const shadow = this.host.shadow();
    const disagreement = shadow === null ? null : shadow.statement(request, active);
    const result: ShadowedResult = disagreement === null ? active : { ...active, shadow: disagreement };
    const metrics = this.host.metrics;
    metrics.observeDecision('statement', result.decisionUs / 1e6);
    const parsed = result.parsed;
    if (parsed === null) {
      metrics.countStatement(null, result.allow, protocol);
    } else {
      const decisions = result.decisions;
      for (let i = 0; i < parsed.length && (result.allow || i < decisions.length); i++) {
        const d = decisions[i];
        metrics.countStatement(parsed[i]?.facts.command ?? null, d === undefined ? result.allow : d.allow, protocol);
      }
    }
    if (!result.allow) metrics.countDenial(result.rule);
    return result;
  }

  /** A statement refused without decide()'s policy path (which counts its own): counted the same way. */
  private countRefusal(command: string | null, rule: string, protocol: 'simple' | 'extended'): void {
    this.host.metrics.countStatement(command, false, protocol);
    this.host.metrics.countDenial(rule);
  }

  /**
   * Replace a denied message with one the server is certain to reject (a
   * syntax error naming a nonce), so the server's own error handling keeps the
   * protocol state right; the matching ErrorResponse is swapped for ours.
   */
  private deny(verdict: StatementDenial, protocol: 'simple' | 'extended', statementName: string, denied: DeniedStatement, decisionUs: number): void {
    this.flushRun();
    this.log.denied(protocol, denied, verdict, decisionUs);
    const nonce = `rolegate_denied_${this.nonceBase}_${(++this.nonceSeq).toString(36)}`;
    const response = be.errorResponse({
      severity: 'ERROR',
      sqlstate: verdict.sqlstate,
      message: verdict.message,
      detail: `rule: ${verdict.rule}; policy revision: ${this.host.authorizer().revision}`,
      position: verdict.position,
    });
    this.denials.push({ nonce, response, group: this.syncsSent });
    if (this.denials.length > MAX_PENDING_DENIALS) this.denials.shift();
    if (protocol === 'simple') {
      this.syncsSent++;
      this.io.toServer(encode.query(nonce));
    } else {
      // A denied Parse of the unnamed statement drops the previous unnamed
      // statement, exactly as a failed Parse does in the server: so the
      // injected Parse names it too. A failed Parse of a named statement
      // changes nothing in the server, whatever its name: rolegate's own short
      // name is used (the client's may be any length).
      this.io.toServer(encode.parse(statementName === '' ? '' : this.deniedName, nonce));
    }
    if (clientLineAllowed(this.host.log, 'statement denied')) this.host.log.info({ session: this.sessionId, rule: verdict.rule, reason: verdict.reason, protocol }, 'statement denied');
  }

  // ------------------------------------------------------------ server → client

  onServerBytes(chunk: Buffer): void {
    if (this.ended) return;
    const framer = this.serverFramer;
    framer.push(chunk);
    for (;;) {
      const ev = framer.next();
      if (ev === FrameEvent.NeedMore) break;
      if (ev === FrameEvent.Error) {
        this.flushRun();
        this.host.log.warn({ session: this.sessionId }, 'upstream sent an invalid message length');
        return this.fail('RG_UPSTREAM_PROTOCOL');
      }
      if (ev === FrameEvent.Raw) {
        this.extendRun(false, framer.buf, framer.start, framer.end);
        continue;
      }
      const buf = framer.buf;
      const start = framer.start;
      const end = framer.end;
      switch (framer.type) {
        case Backend.ReadyForQuery:
          if (end - start === 6) this.txStatus = buf[start + 5] as number;
          this.log.readyForQuery(this.txStatus === TxStatus.Idle, this.readyReceived);
          if (this.denials.length > 0) this.forgetDenials(this.readyReceived);
          this.readyReceived++;
          this.extendRun(false, buf, start, end);
          // Draining: the client gets this ReadyForQuery (its transaction is
          // complete), then the FATAL.
          if (this.draining && this.atBoundary) return this.endForDrain();
          break;
        case Backend.CommandComplete:
          this.log.commandComplete(commandCompleteRows(buf, start, end));
          this.extendRun(false, buf, start, end);
          break;
        case Backend.EmptyQueryResponse:
          this.log.emptyQuery();
          this.extendRun(false, buf, start, end);
          break;
        case Backend.PortalSuspended:
          this.log.portalSuspended();
          this.extendRun(false, buf, start, end);
          break;
        case Backend.ErrorResponse:
          this.onErrorResponse(buf, start, end);
          break;
        case Backend.ParameterStatus:
          this.onParameterStatus(buf, start, end);
          if (this.ended) return;
          this.extendRun(false, buf, start, end);
          break;
        default:
          this.extendRun(false, buf, start, end);
      }
    }
    this.flushRun();
  }

  private onErrorResponse(buf: Buffer, start: number, end: number): void {
    const fields = be.decodeErrorFields(buf.subarray(start + 5, end));
    if (fields.get('V') === 'FATAL' || fields.get('S') === 'FATAL') this.serverSentFatal = true;
    // Matched by nonce alone, not by counting ReadyForQuery: a Query sent inside
    // a failed pipeline gets none, so counts can drift; a nonce cannot.
    const message = fields.get('M') ?? '';
    const denials = this.denials;
    for (let i = 0; i < denials.length; i++) {
      const denial = denials[i] as PendingDenial;
      if (!message.includes(denial.nonce)) continue;
      // Earlier denials whose injected statement the server skipped are done too.
      denials.splice(0, i + 1);
      this.flushRun();
      this.io.toClient(denial.response);
      return;
    }
    this.log.error(fields.get('C') ?? 'XX000');
    this.extendRun(false, buf, start, end);
  }

  /** Group `group` is over: its denials were answered or skipped. */
  private forgetDenials(group: number): void {
    const denials = this.denials;
    let done = 0;
    while (done < denials.length && (denials[done] as PendingDenial).group <= group) done++;
    if (done > 0) denials.splice(0, done);
  }

  /**
   * The server reports parameter changes; the pinned ones must never change,
   * nor the session user (session_authorization): the guards refuse every
   * statement that could, and this catches what no parser sees (server-side
   * code that runs SET SESSION AUTHORIZATION).
   */
  private onParameterStatus(buf: Buffer, start: number, end: number): void {
    const ps = be.decodeParameterStatus(buf.subarray(start + 5, end));
    if (ps === null) return;
    if (ps.name === 'session_authorization' && ps.value !== this.context.role) {
      this.host.log.warn({ session: this.sessionId, role: this.context.role, value: ps.value }, 'session user changed upstream; closing session');
      this.flushRun();
      this.fail('RG_UPSTREAM_PARAMETER', `the session user changed to "${ps.value}"; rolegate sessions stay role "${this.context.role}"`);
      return;
    }
    const pinned = PARSER_SETTINGS.get(ps.name.toLowerCase());
    if (pinned !== undefined && ps.value.toLowerCase() !== pinned.toLowerCase()) {
      this.host.log.warn({ session: this.sessionId, parameter: ps.name, value: ps.value }, 'pinned parameter changed upstream; closing session');
      this.flushRun();
      this.fail('RG_UPSTREAM_PARAMETER', `parameter "${ps.name}" changed to "${ps.value}"; rolegate requires ${ps.name}=${pinned}`);
    }
  }

  // ---------------------------------------------------------------- forward runs

  /** Add buf[start, end) to the current run; write the run out when it is not contiguous. */
  private extendRun(toServer: boolean, buf: Buffer, start: number, end: number): void {
    if (this.runBuf === buf && this.runEnd === start && this.runToServer === toServer) {
      this.runEnd = end;
      return;
    }
    this.flushRun();
    this.runBuf = buf;
    this.runStart = start;
    this.runEnd = end;
    this.runToServer = toServer;
  }

  private flushRun(): void {
    const buf = this.runBuf;
    if (buf === null) return;
    this.runBuf = null;
    if (this.runEnd <= this.runStart) return;
    const slice = this.runStart === 0 && this.runEnd === buf.length ? buf : buf.subarray(this.runStart, this.runEnd);
    if (this.runToServer) this.io.toServer(slice);
    else this.io.toClient(slice);
  }
}
