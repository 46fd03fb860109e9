// The refusals rolegate makes on its own, before or beside the policy: one
// table of rule id → SQLSTATE → client message and audit reason. Every
// statement the proxy refuses without a policy rule names one of these ids
// (in the ErrorResponse detail, the audit record and the denial metrics), so
// a policy author can tell "my policy said no" from "rolegate said no".
// docs/audit.md lists them for readers of the audit log.

import { ERRORS, type ErrorCode } from '../errors.ts';
import type { StatementDenial } from './authorizer.ts';

interface ProxyRule {
  readonly sqlstate: string;
  /** The audit reason (and the rest of the client message); `detail` is the case at hand. */
  reason(detail: string): string;
  /**
   * The client's message. Default: the policy's wording,
   * `permission denied by rolegate rule "<id>": <reason>`.
   */
  message?(detail: string): string;
}

export const PROXY_RULES = {
  /** Text that is not valid UTF-8, or holds a NUL byte: never parsed, never forwarded. */
  'invalid-text': { sqlstate: '22021', reason: (problem) => problem, message: (problem) => problem },
  /** Text PostgreSQL's parser rejects (fail closed: the server might read it differently). */
  'parse-error': { sqlstate: '42601', reason: (message) => `the statement could not be parsed: ${message}`, message: (message) => message },
  /** Fail-closed audit: nothing runs that cannot be recorded. */
  'audit-unavailable': { sqlstate: ERRORS.RG_AUDIT_UNAVAILABLE.sqlstate, reason: () => 'the audit log cannot be written (fail-closed)', message: () => ERRORS.RG_AUDIT_UNAVAILABLE.message },
  /** The FunctionCall message ('F') calls a function by OID, invisible to any SQL parser. */
  'function-call-message': { sqlstate: ERRORS.RG_FUNCTION_CALL_REFUSED.sqlstate, reason: () => 'the FunctionCall message bypasses SQL and is refused', message: () => ERRORS.RG_FUNCTION_CALL_REFUSED.message },
  /** Bind or EXECUTE of a name nothing rolegate allowed was prepared under. */
  'unknown-prepared-statement': { sqlstate: '42501', reason: (name) => `prepared statement "${name}" was not prepared through rolegate in this session` },
  /** A prepared statement redefined so often rolegate cannot know what the name runs. */
  'ambiguous-prepared-statement': { sqlstate: '42501', reason: () => 'the prepared statement was redefined too often for rolegate to know what it runs' },
  /** A prepared statement whose body EXECUTEs another one. */
  'nested-execute': { sqlstate: '42501', reason: (name) => `prepared statement "${name}" executes another prepared statement` },
  // Guards (guards.ts): held by rolegate whatever the policy answers; `detail` is the statement's command.
  /** SET/RESET ROLE, SESSION AUTHORIZATION, set_config('role'), ALTER ROLE … SET role, RESET ALL, DISCARD ALL. */
  'guard:role-change': { sqlstate: '42501', reason: (command) => `${command} could change or reset who the session is (role, session authorization); it stays the role rolegate logged in as` },
  /** client_encoding and standard_conforming_strings: the server must read SQL as rolegate's parser does. */
  'guard:pinned-parameter': { sqlstate: '42501', reason: (command) => `${command} could change client_encoding or standard_conforming_strings, which rolegate pins so that the server reads SQL as rolegate does` },
  /** COPY … PROGRAM runs a shell command on the database host. */
  'guard:copy-program': { sqlstate: '42501', reason: () => 'COPY … PROGRAM runs a command on the database host (the operator can lift this with guards.allow: [copy_program])' },
  /** COPY to or from a file on the database host. */
  'guard:copy-file': { sqlstate: '42501', reason: () => 'COPY to or from a server file reads or writes files on the database host (guards.allow: [copy_file] lifts this)' },
  /** Server-side lo_import / lo_export. */
  'guard:large-objects': { sqlstate: '42501', reason: () => 'server-side lo_import/lo_export read or write files on the database host (guards.allow: [large_objects] lifts this)' },
  /** pg_read_file, pg_ls_*, pg_stat_file, adminpack's file functions. */
  'guard:server-files': { sqlstate: '42501', reason: () => 'the statement reads, lists or writes files on the database host (guards.allow: [server_files] lifts this)' },
  /** dblink*, postgres_fdw_*, foreign servers and user mappings. */
  'guard:remote-connections': { sqlstate: '42501', reason: () => 'the statement opens or defines a connection from the database host to another server or data source (guards.allow: [remote_connections] lifts this)' },
  /** limits.max_statement_bytes: longer texts are never parsed or decided on a worker's thread (54000, whatever the caches hold). */
  'statement-too-large': { sqlstate: '54000', reason: (detail) => detail, message: (detail) => `statement too large for rolegate: ${detail}` },
  /** The per-session bound on prepared statements (what rolegate tracks per session is bounded). */
  'prepared-statement-limit': { sqlstate: '54000', reason: () => 'the session holds too many prepared statements', message: (limit) => `too many prepared statements in this session (limit ${limit})` },
} as const satisfies Record<string, ProxyRule>;

export type ProxyRuleId = keyof typeof PROXY_RULES;

/** The denial of one of rolegate's own rules; `detail` fills in the case (a name, a parser message, a limit). */
export function proxyDenial(rule: ProxyRuleId, detail = ''): StatementDenial {
  const entry: ProxyRule = PROXY_RULES[rule];
  const reason = entry.reason(detail);
  const message = entry.message === undefined ? policyMessage(rule, reason) : entry.message(detail);
  return { allow: false, sqlstate: entry.sqlstate, message, rule, reason };
}

/** The client message of a statement denied by a rule (the policy's or rolegate's own). */
export function policyMessage(rule: string, reason: string): string {
  return `permission denied by rolegate rule "${rule}": ${reason}`;
}

/**
 * Text the parser rejected: 42601 for a syntax error, 22021 for text it cannot
 * read, 42501 when the parser itself failed (fail closed either way);
 * `position` is the 1-based character where the parser stopped, if it said.
 */
export function parseErrorDenial(code: ErrorCode, message: string, position: number | null): StatementDenial {
  const denial = proxyDenial('parse-error', message);
  denial.sqlstate = code === 'RG_PARSE_ERROR' ? '42601' : code === 'RG_INTERNAL' ? '42501' : '22021';
  if (position !== null) denial.position = position;
  return denial;
}

/** A text problem found before parsing (invalid UTF-8, NUL): its error's message is the whole story. */
export function invalidText(problem: Extract<ErrorCode, 'RG_NUL_IN_TEXT' | 'RG_INVALID_UTF8'>): StatementDenial {
  return proxyDenial('invalid-text', ERRORS[problem].message);
}
