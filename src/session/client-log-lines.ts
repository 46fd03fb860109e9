// Session log lines whose number a client sets: a denied statement, a denied
// connection, a failed upstream login (one client can send thousands of
// denied statements a second, or log in again and again against a failing
// upstream). Each kind gets at most CLIENT_LINES_PER_WINDOW lines per
// CLIENT_LINE_WINDOW_MS per worker; the rest are counted and the count is
// written as one "log lines suppressed" line (`lines`: the kind,
// `suppressed`: how many) when the window ends. The metrics count every one
// of them: rolegate_statement_denials_total,
// rolegate_client_connections_refused_total{reason="policy_denied"},
// rolegate_upstream_connect_errors_total.

import { LineBudget } from '../log-budget.ts';
import type { SessionLog } from './session-host.ts';

/** Lines of each kind per window per worker: enough to see who and what; a flood shows as counts. */
export const CLIENT_LINES_PER_WINDOW = 20;
/** The window: 20 lines per 10 s is at most ~130 lines a minute of each kind per worker, counts included. */
export const CLIENT_LINE_WINDOW_MS = 10_000;

export type ClientLogLine = 'statement denied' | 'connection denied' | 'upstream connect failed';

/**
 * Budgets by the worker's logger. A worker has one logger for all its
 * sessions, so this is one set of budgets per worker (each worker thread also
 * loads this module anew); a test's fake host with its own logger gets its own.
 */
const budgets = new WeakMap<SessionLog, Map<ClientLogLine, LineBudget>>();

/** Write the counts still waiting for their window to end (a worker about to exit: its timers would never fire). */
export function reportSuppressedClientLines(log: SessionLog): void {
  for (const budget of budgets.get(log)?.values() ?? []) budget.report();
}

/** True: write this line now. False: it was counted, and the count will be logged. */
export function clientLineAllowed(log: SessionLog, line: ClientLogLine): boolean {
  let byLine = budgets.get(log);
  if (byLine === undefined) {
    byLine = new Map();
    budgets.set(log, byLine);
  }
  let budget = byLine.get(line);
  if (budget === undefined) {
    budget = new LineBudget(log, line, CLIENT_LINES_PER_WINDOW, Date.now, CLIENT_LINE_WINDOW_MS);
    byLine.set(line, budget);
  }
  return budget.take();
}
