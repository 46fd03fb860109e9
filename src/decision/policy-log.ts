// Log lines that a client causes by what it sends: policy evaluation failures
// and the output of Rego print(). Each line names the session, the entry point
// and the statement, so an author can find what failed. Each kind gets at most
// `perSecond` lines a second per worker; the rest are counted and reported as
// one line, so an authenticated client cannot set the log's volume.

import type { RolegateError } from '../errors.ts';
import { LineBudget } from '../log-budget.ts';
import type { EvaluationCall } from '../policy/engine.ts';

/** The worker's logger, as far as these lines need it; print() lines need `info` (without it they are dropped). */
export interface DecisionLog {
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

/** The statement's SQL text in a log line: at most this many characters. */
export const LOG_SQL_CHARS = 200;
/** One print() line: at most this many characters. */
export const LOG_PRINT_CHARS = 2000;
/** Lines of each kind per second per worker. */
export const DEFAULT_LINES_PER_SECOND = 20;

function bounded(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} chars)`;
}

/** The fields that say where a line came from: entry point, session, identity, client, and the SQL or the requested login. */
function origin(call: EvaluationCall): Record<string, unknown> {
  const input = call.input;
  const fields: Record<string, unknown> = { entrypoint: call.entrypoint, session: call.sessionId, identity: input.identity.name, client: input.client.addr };
  if ('statement' in input) {
    fields['role'] = input.session.role;
    fields['database'] = input.session.database;
    fields['sql'] = bounded(input.statement.sql, LOG_SQL_CHARS);
  } else {
    fields['database'] = input.request.database;
    fields['requestedRole'] = input.request.role;
  }
  return fields;
}

/** One per worker: it outlives policy reloads, so the budgets do too. */
export class PolicyLog {
  private readonly log: DecisionLog;
  private readonly errors: LineBudget;
  private readonly prints: LineBudget;

  constructor(log: DecisionLog, options: { perSecond?: number; now?: () => number } = {}) {
    const perSecond = options.perSecond ?? DEFAULT_LINES_PER_SECOND;
    this.log = log;
    this.errors = new LineBudget(log, 'policy evaluation failed', perSecond, options.now);
    this.prints = new LineBudget(log, 'policy print', perSecond, options.now);
  }

  evaluationFailed(error: RolegateError, call: EvaluationCall, revision: string): void {
    if (!this.errors.take()) return;
    this.log.warn({ ...origin(call), code: error.code, err: error.message, revision }, 'policy evaluation failed');
  }

  printed(line: string, call: EvaluationCall, revision: string): void {
    if (this.log.info === undefined || !this.prints.take()) return;
    this.log.info({ ...origin(call), print: bounded(line, LOG_PRINT_CHARS), revision }, 'policy print');
  }
}
