// SQL text → one ParsedStatement per statement, with PostgreSQL's own parser
// (libpg-query 18, WASM) and one walk of each statement's tree (facts.ts).
// This runs on a parse-cache miss (facts-cache.ts), inline in the worker thread.

import { hasSqlDetails, loadModule, parseSync, scanSync } from 'libpg-query';
import type { StatementFacts } from './statement-facts.ts';
import { ERRORS, describeThrown, type ErrorCode } from '../errors.ts';
import { nodeNameOf, statementFacts } from './facts.ts';
import { guardedEffects, type GuardedEffect } from './guarded-effects.ts';
import { truncateIdentifier } from './identifiers.ts';
import { watchLiterals, type LiteralWatch, type SqlShape } from './shape.ts';

type Obj = Record<string, unknown>;

export type TransactionControl =
  | 'begin'
  | 'commit'
  | 'rollback'
  | 'savepoint'
  | 'release'
  | 'rollback_to'
  | 'prepare_transaction';

/** Session-level bookkeeping, not given to the policy. */
export interface StatementMeta {
  /** PREPARE name AS <inner>: the session keeps `inner` to decide EXECUTE name. */
  prepare: { name: string; inner: StatementFacts } | null;
  /**
   * A prepared statement this statement runs: EXECUTE name, and also
   * EXPLAIN [ANALYZE] EXECUTE name and CREATE TABLE ... AS EXECUTE name, whose own
   * facts cannot show what the prepared statement does. The session must decide the
   * prepared statement's facts as well.
   */
  execute: string | null;
  /** DEALLOCATE name; '' for DEALLOCATE ALL. */
  deallocate: string | null;
  /** DECLARE name CURSOR FOR <inner>. */
  declareCursor: { name: string; inner: StatementFacts } | null;
  /** Transaction control; COMMIT/ROLLBACK PREPARED are not (they run outside a block). */
  transaction: TransactionControl | null;
  /** What the statement does that rolegate's own guards refuse unless lifted (nearly always empty). */
  guarded: readonly GuardedEffect[];
}

export interface ParsedStatement {
  /** facts.sql is this statement's text: a substring of the input, whitespace-trimmed. */
  facts: StatementFacts;
  meta: StatementMeta;
}

/** Why the text has no facts. */
export type ParseErrorCode = Extract<ErrorCode, 'RG_PARSE_ERROR' | 'RG_NUL_IN_TEXT' | 'RG_INVALID_UTF8' | 'RG_INTERNAL'>;

export type ParsedText =
  | { ok: true; statements: ParsedStatement[] }
  | {
      ok: false;
      /** RG_PARSE_ERROR: PostgreSQL's syntax error; the others: text PostgreSQL would never parse, or a parser failure. */
      code: ParseErrorCode;
      message: string;
      /**
       * 0-based position of the error in characters (code points), as PostgreSQL
       * counts for ErrorResponse 'P' (which is this + 1); null when unknown.
       */
      cursorPosition: number | null;
    };

let initPromise: Promise<void> | null = null;

/** Load the WASM parser (~40 ms) once per thread; parseStatements fails closed until then. */
export function initParser(): Promise<void> {
  initPromise ??= loadModule().catch((thrown: unknown) => {
    initPromise = null; // let a later call retry
    throw thrown;
  });
  return initPromise;
}

const TRANSACTION_KINDS: Readonly<Record<string, TransactionControl>> = {
  TRANS_STMT_BEGIN: 'begin',
  TRANS_STMT_START: 'begin',
  TRANS_STMT_COMMIT: 'commit',
  TRANS_STMT_ROLLBACK: 'rollback',
  TRANS_STMT_SAVEPOINT: 'savepoint',
  TRANS_STMT_RELEASE: 'release',
  TRANS_STMT_ROLLBACK_TO: 'rollback_to',
  TRANS_STMT_PREPARE: 'prepare_transaction',
};

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Code points before UTF-16 index `index` (PostgreSQL counts characters, JS counts units). */
function codePointOffset(text: string, index: number): number {
  let n = 0;
  for (let i = 0; i < index; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < index) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

function firstLoneSurrogate(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0xd800 || unit > 0xdfff) continue;
    if (unit <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        i++;
        continue;
      }
    }
    return i;
  }
  return -1;
}

/** PostgreSQL's scanner whitespace (scan.l `space`): ' ', \t, \n, \r, \f, \v. */
function isSqlSpace(unit: number): boolean {
  return unit === 0x20 || (unit >= 0x09 && unit <= 0x0d);
}

function trimSql(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isSqlSpace(text.charCodeAt(start))) start++;
  while (end > start && isSqlSpace(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/**
 * The statement text of a text holding exactly one statement, found without
 * the parser: trimmed, without the one terminating ';'. A cached shape checks
 * this against the parser's own slice of its first text before relying on it.
 */
export function soleStatementText(sql: string): string {
  const text = trimSql(sql);
  return text.charCodeAt(text.length - 1) === 0x3b /* ; */ ? trimSql(text.slice(0, -1)) : text;
}

/**
 * stmt_location / stmt_len are BYTE offsets into the UTF-8 text (stmt_len 0: to the
 * end). `bytes` is null when the text is ASCII and byte offsets are string offsets.
 */
function sliceStatement(sql: string, bytes: Buffer | null, location: number, length: number): string {
  if (bytes === null) return trimSql(length === 0 ? sql.slice(location) : sql.slice(location, location + length));
  return trimSql(bytes.toString('utf8', location, length === 0 ? bytes.length : location + length));
}

/**
 * The text of PREPARE's / DECLARE's inner statement: what follows `AS` (PREPARE name
 * [(types)] AS ...) or `FOR` (DECLARE name ... CURSOR ... FOR ...), found with the same
 * scanner. Falls back to the whole statement if the tokens are not as expected.
 */
function innerStatementText(stmtSql: string, keyword: 'as' | 'for'): string {
  try {
    const tokens = scanSync(stmtSql).tokens;
    let i = 2; // tokens[0] is PREPARE/DECLARE, tokens[1] the name
    if (keyword === 'as' && tokens[i]?.text === '(') {
      let depth = 0;
      for (; i < tokens.length; i++) {
        const text = tokens[i]?.text;
        if (text === '(') depth++;
        else if (text === ')' && --depth === 0) break;
      }
      i++;
    }
    for (; i < tokens.length; i++) {
      const token = tokens[i];
      if (token === undefined) break;
      if (token.tokenName === 'SQL_COMMENT' || token.tokenName === 'C_COMMENT') continue;
      if (token.text.toLowerCase() !== keyword) {
        if (keyword === 'as') break; // PREPARE: AS must come next
        continue;
      }
      const next = tokens.slice(i + 1).find((t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT');
      if (next === undefined) break;
      return trimSql(Buffer.from(stmtSql, 'utf8').toString('utf8', next.start));
    }
  } catch {
    // the statement parsed, so this does not happen; the whole text is still right
  }
  return stmtSql;
}

function parsedStatement(stmt: Obj, sql: string): ParsedStatement {
  const { facts, execute, settings } = statementFacts(stmt, sql);
  const meta: StatementMeta = { prepare: null, execute, deallocate: null, declareCursor: null, transaction: null, guarded: guardedEffects(facts, settings) };
  const nodeName = nodeNameOf(stmt);
  const body = stmt[nodeName];
  if (!isObj(body)) return { facts, meta };
  switch (nodeName) {
    case 'PrepareStmt': {
      const name = body['name'];
      const query = body['query'];
      if (typeof name === 'string' && isObj(query)) {
        meta.prepare = { name: truncateIdentifier(name), inner: statementFacts(query, innerStatementText(sql, 'as')).facts };
      }
      break;
    }
    case 'DeclareCursorStmt': {
      const name = body['portalname'];
      const query = body['query'];
      if (typeof name === 'string' && isObj(query)) {
        meta.declareCursor = { name: truncateIdentifier(name), inner: statementFacts(query, innerStatementText(sql, 'for')).facts };
      }
      break;
    }
    case 'DeallocateStmt': {
      const name = body['name'];
      meta.deallocate = body['isall'] === true ? '' : typeof name === 'string' ? truncateIdentifier(name) : '';
      break;
    }
    case 'TransactionStmt': {
      const kind = body['kind'];
      meta.transaction = typeof kind === 'string' ? (TRANSACTION_KINDS[kind] ?? null) : null;
      break;
    }
    default:
      break;
  }
  return { facts, meta };
}

function failure(code: ParseErrorCode, message: string, cursorPosition: number | null): ParsedText {
  return { ok: false, code, message, cursorPosition };
}

/**
 * Parse a simple-Query string or a Parse message's text. Synchronous; never throws.
 * An empty or comment-only text has zero statements (PostgreSQL answers
 * EmptyQueryResponse).
 */
export function parseStatements(sql: string): ParsedText {
  return parseText(sql, null).parsed;
}

/**
 * parseStatements, and whether the facts hold for every text of `shape`: true
 * only for one statement with no session bookkeeping (PREPARE, DECLARE,
 * EXECUTE, DEALLOCATE embed or name other statements) whose facts were derived
 * without reading any of the shape's literals.
 */
export function parseShaped(sql: string, shape: SqlShape): { parsed: ParsedText; literalFree: boolean } {
  return parseText(sql, shape);
}

function parseText(sql: string, shape: SqlShape | null): { parsed: ParsedText; literalFree: boolean } {
  if (typeof sql !== 'string') return refused('RG_INTERNAL', 'SQL text is not a string', null);
  if (sql.length === 0) return { parsed: { ok: true, statements: [] }, literalFree: false };
  // The C parser reads a NUL-terminated string: text after a NUL would be invisible to
  // it but not necessarily to whoever forwards the bytes. PostgreSQL rejects such a
  // message too.
  const nul = sql.indexOf('\0');
  if (nul !== -1) return refused('RG_NUL_IN_TEXT', ERRORS.RG_NUL_IN_TEXT.message, codePointOffset(sql, nul));
  // A lone surrogate has no UTF-8 form: the WASM copy and Buffer would encode it differently.
  if (!sql.isWellFormed()) {
    return refused('RG_INVALID_UTF8', ERRORS.RG_INVALID_UTF8.message, codePointOffset(sql, firstLoneSurrogate(sql)));
  }
  let tree: unknown;
  try {
    tree = parseSync(sql);
  } catch (thrown) {
    if (hasSqlDetails(thrown)) {
      const position = thrown.sqlDetails?.cursorPosition;
      return refused('RG_PARSE_ERROR', thrown.message, typeof position === 'number' && position >= 0 ? position : null);
    }
    return refused('RG_INTERNAL', 'SQL parser failed: ' + describeThrown(thrown), null);
  }
  try {
    const stmts = isObj(tree) ? tree['stmts'] : undefined;
    if (!Array.isArray(stmts)) return refused('RG_INTERNAL', 'SQL parser returned no statement list', null);
    if (stmts.length === 0) return { parsed: { ok: true, statements: [] }, literalFree: false };
    const statements: ParsedStatement[] = [];
    let bytes: Buffer | null | undefined; // decided on first need
    let watch: LiteralWatch | null = null;
    for (const raw of stmts) {
      if (!isObj(raw) || !isObj(raw['stmt'])) return refused('RG_INTERNAL', 'SQL parser returned a malformed statement', null);
      const location = typeof raw['stmt_location'] === 'number' ? raw['stmt_location'] : 0;
      const length = typeof raw['stmt_len'] === 'number' ? raw['stmt_len'] : 0;
      let text: string;
      if (location === 0 && length === 0) text = trimSql(sql); // the single-statement case
      else {
        if (bytes === undefined) bytes = Buffer.byteLength(sql, 'utf8') === sql.length ? null : Buffer.from(sql, 'utf8');
        text = sliceStatement(sql, bytes, location, length);
      }
      if (shape !== null && stmts.length === 1) watch = watchLiterals(raw['stmt'], shape);
      statements.push(parsedStatement(raw['stmt'], text));
    }
    const only = statements.length === 1 ? (statements[0] as ParsedStatement).meta : null;
    const literalFree = watch !== null && !watch.read && only !== null && only.prepare === null && only.declareCursor === null && only.execute === null && only.deallocate === null;
    return { parsed: { ok: true, statements }, literalFree };
  } catch (thrown) {
    // e.g. RangeError on a tree nested deeper than the JS stack: fail closed.
    return refused('RG_INTERNAL', 'could not derive statement facts: ' + describeThrown(thrown), null);
  }
}

function refused(code: ParseErrorCode, message: string, cursorPosition: number | null): { parsed: ParsedText; literalFree: false } {
  return { parsed: failure(code, message, cursorPosition), literalFree: false };
}
