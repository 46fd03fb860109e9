// Log budgets: at most N lines of a kind per window, the rest counted and the
// count written in one "log lines suppressed" line; and the session lines a
// client sets the number of (denied statements and connections, failed
// upstream logins), each kind with its own budget per worker logger.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LineBudget } from '../../src/log-budget.ts';
import { CLIENT_LINE_WINDOW_MS, CLIENT_LINES_PER_WINDOW, clientLineAllowed, reportSuppressedClientLines } from '../../src/session/client-log-lines.ts';

interface Line {
  level: 'info' | 'warn' | 'debug';
  obj: Record<string, unknown>;
  msg: string;
}

function captureLog(): { lines: Line[]; info(obj: object, msg: string): void; warn(obj: object, msg: string): void; debug(obj: object, msg: string): void } {
  const lines: Line[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    debug: (obj, msg) => lines.push({ level: 'debug', obj: obj as Record<string, unknown>, msg }),
  };
}

/** What a call site does: ask the budget, write the line if it may. */
function denied(budget: LineBudget, log: ReturnType<typeof captureLog>, n: number): void {
  if (budget.take()) log.info({ n }, 'statement denied');
}

describe('LineBudget', () => {
  test('N lines per window pass, the rest are counted; the count comes out before the next line after the window', () => {
    const log = captureLog();
    let now = 1_000_000;
    const budget = new LineBudget(log, 'statement denied', 20, () => now, 10_000);
    for (let i = 0; i < 2000; i++) denied(budget, log, i);
    assert.equal(log.lines.length, 20, 'the first 20 are written');
    assert.deepEqual(
      log.lines.map((l) => l.obj['n']),
      Array.from({ length: 20 }, (_, i) => i),
    );

    now += 9_999;
    denied(budget, log, 2000);
    assert.equal(log.lines.length, 20, 'still inside the window: counted, not written, no report yet');

    now += 1;
    denied(budget, log, 2001);
    assert.equal(log.lines.length, 22, 'a new window: the count, then the line');
    const [report, next] = log.lines.slice(20);
    assert.equal(report?.level, 'warn');
    assert.deepEqual(report?.obj, { lines: 'statement denied', suppressed: 1981, limit: 20, windowMs: 10_000 });
    assert.equal(report?.msg, 'log lines suppressed: 1981 more "statement denied" lines in 10 s');
    assert.equal(next?.obj['n'], 2001);

    now += 60_000;
    denied(budget, log, 2002);
    assert.equal(log.lines.length, 23, 'nothing suppressed in the last window: no report');
  });

  test('the count comes out when the window ends, even if no line follows', async () => {
    const log = captureLog();
    const budget = new LineBudget(log, 'upstream connect failed', 2, Date.now, 100);
    for (let i = 0; i < 5; i++) budget.take();
    assert.equal(log.lines.length, 0);
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(log.lines.length, 1);
    assert.equal(log.lines[0]?.obj['suppressed'], 3);
    assert.equal(log.lines[0]?.obj['lines'], 'upstream connect failed');
    // Reported once: the next window starts clean.
    assert.equal(budget.take(), true);
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(log.lines.length, 1);
  });

  test('a one-second window keeps the wording of the policy log lines', () => {
    const log = captureLog();
    let now = 0;
    const budget = new LineBudget(log, 'policy print', 1, () => now);
    budget.take();
    budget.take();
    now += 1000;
    budget.take();
    assert.equal(log.lines[0]?.msg, 'log lines suppressed: 1 more "policy print" lines in one second');
  });
});

describe('client log lines (statement denied, connection denied, upstream connect failed)', () => {
  test('20 lines per 10 s per kind and per worker logger', () => {
    assert.equal(CLIENT_LINES_PER_WINDOW, 20);
    assert.equal(CLIENT_LINE_WINDOW_MS, 10_000);
    const worker = captureLog();
    const statements = Array.from({ length: 100 }, () => clientLineAllowed(worker, 'statement denied'));
    assert.equal(statements.filter(Boolean).length, CLIENT_LINES_PER_WINDOW);
    assert.deepEqual(statements.slice(0, CLIENT_LINES_PER_WINDOW + 1), [...Array<boolean>(CLIENT_LINES_PER_WINDOW).fill(true), false]);
    // The other kinds have budgets of their own.
    assert.equal(clientLineAllowed(worker, 'connection denied'), true);
    assert.equal(clientLineAllowed(worker, 'upstream connect failed'), true);
    // Another worker's logger: another set of budgets.
    assert.equal(clientLineAllowed(captureLog(), 'statement denied'), true);
  });

  test('a worker about to exit writes the counts still waiting for their window', () => {
    const worker = captureLog();
    for (let i = 0; i < CLIENT_LINES_PER_WINDOW + 7; i++) clientLineAllowed(worker, 'connection denied');
    const written: Line[] = worker.lines;
    assert.equal(written.length, 0, 'nothing written by the budget yet (the window is open)');
    reportSuppressedClientLines(worker);
    assert.deepEqual(
      written.map((l) => [l.level, l.obj['lines'], l.obj['suppressed']]),
      [['warn', 'connection denied', 7]],
    );
    reportSuppressedClientLines(worker);
    assert.equal(written.length, 1, 'reported once');
    reportSuppressedClientLines(captureLog()); // a logger with no budgets: nothing to do
  });
});
