// Pairs allowed statements with the server's answers, so their audit records
// carry outcome, rows and query time. One tracker per session; pure (the
// session feeds it events; the clock is injectable).
//
// Response order ("Message Flow" in the protocol docs): the server answers in
// the order it received messages. Each tracked execution — one per statement
// of an allowed simple Query, one per forwarded Execute — ends with exactly
// one of CommandComplete, EmptyQueryResponse, PortalSuspended or
// ErrorResponse, unless an earlier error made the server skip it. After an
// error the server skips to the end of the group: the rest of a multi-
// statement Query, or the extended-protocol messages up to Sync. A group is
// closed by its ReadyForQuery. Groups are numbered like the session's
// `syncsSent` (each Query or Sync forwarded, injected denials included) and
// ReadyForQuery messages are counted here; an answer only ever belongs to the
// oldest entry of the group being answered.
//
// In a worker with a crash journal (crash-journal.ts), the tracker keeps its
// session's slot there current: how many records await an answer and their
// seq range. If the worker dies, those records were never made, and the main
// thread names them in a session-lost line instead.

import { activeJournal, type CrashJournal } from './crash-journal.ts';
import type { AuditRecord } from './record.ts';

/**
 * What the tracker fills in. An AuditRecord is one; with audit off a session
 * can track a bare `{ protocol }` object just for the query-latency histogram.
 */
export type TrackedExecution = Pick<AuditRecord, 'outcome' | 'rows' | 'query_us' | 'sqlstate'> & Partial<Pick<AuditRecord, 'seq' | 'session'>>;

interface Pending<T extends TrackedExecution> {
  record: T;
  group: number;
  forwardedAt: number;
}

export class StatementTracker<T extends TrackedExecution = AuditRecord> {
  private readonly emit: (record: T) => void;
  private readonly now: () => number;
  private readonly maxPending: number;
  private entries: Array<Pending<T>> = [];
  private head = 0;
  private readies = 0;
  /** When the server last finished answering something: executions run one after another, so one starts no earlier than that. */
  private lastDoneAt = -Infinity;
  /** The worker's crash journal and this session's slot in it (-1: none yet, or none free). */
  private readonly journal: CrashJournal | null;
  private slot = -1;

  /**
   * @param emit   receives each finished record (pass it to AuditRecorder.record; observe query_us for the latency histogram)
   * @param now    milliseconds, monotonic (performance.now)
   * @param maxPending beyond this many unanswered executions a new one is emitted at once with outcome "unknown" (a client pipelining without reading cannot grow this without bound)
   * @param journal  where awaited records are noted (default: the worker's active crash journal, if any); only records with a seq and session are
   */
  constructor(emit: (record: T) => void, now: () => number = () => performance.now(), maxPending = 10_000, journal: CrashJournal | null = activeJournal()) {
    this.emit = emit;
    this.now = now;
    this.maxPending = maxPending;
    this.journal = journal;
  }

  get pending(): number {
    return this.entries.length - this.head;
  }

  /** An allowed execution was forwarded; `group` is the session's syncsSent before this Query (or before the Sync that will end this Execute's pipeline). */
  expect(record: T, group: number): void {
    if (this.pending >= this.maxPending) {
      record.outcome = 'unknown';
      this.emit(record);
      return;
    }
    this.entries.push({ record, group, forwardedAt: this.now() });
    const journal = this.journal;
    if (journal !== null && record.seq !== undefined && record.session !== undefined) {
      if (this.slot < 0) this.slot = journal.open(record.session);
      if (this.slot >= 0) journal.expect(this.slot, record.seq);
    }
  }

  /** CommandComplete: `rows` from commandCompleteRows(). */
  onCommandComplete(rows: number | null): void {
    const p = this.answered();
    if (p === null) return;
    p.record.rows = rows;
    this.finish(p, 'complete');
  }

  onEmptyQuery(): void {
    const p = this.answered();
    if (p === null) return;
    p.record.rows = null;
    this.finish(p, 'complete');
  }

  onPortalSuspended(): void {
    const p = this.answered();
    if (p === null) return;
    this.finish(p, 'suspended');
  }

  /** An ErrorResponse that is the server's own (not the swapped answer to an injected denial). */
  onError(sqlstate: string | null): void {
    const p = this.answered();
    if (p === null) return;
    if (sqlstate !== null) p.record.sqlstate = sqlstate;
    this.finish(p, 'error');
  }

  /** ReadyForQuery: what is still open in this group was skipped by the server. */
  onReadyForQuery(): void {
    const group = this.readies++;
    while (this.head < this.entries.length) {
      const p = this.entries[this.head] as Pending<T>;
      if (p.group > group) break;
      this.shift();
      p.record.outcome = 'not-run';
      this.emit(p.record);
      this.made(p);
    }
    // A pipelined next group starts running once this one is answered.
    this.lastDoneAt = this.now();
  }

  /** The session ended: emit everything still open as "unknown". */
  close(): void {
    const t = this.now();
    while (this.head < this.entries.length) {
      const p = this.entries[this.head] as Pending<T>;
      this.shift();
      p.record.outcome = 'unknown';
      p.record.query_us = Math.round((t - p.forwardedAt) * 1000);
      this.emit(p.record);
      this.made(p);
    }
    if (this.slot >= 0) this.journal?.close(this.slot);
    this.slot = -1;
  }

  private answered(): Pending<T> | null {
    const p = this.entries[this.head];
    return p !== undefined && p.group === this.readies ? p : null;
  }

  private finish(p: Pending<T>, outcome: 'complete' | 'error' | 'suspended'): void {
    this.shift();
    const t = this.now();
    p.record.outcome = outcome;
    p.record.query_us = Math.max(0, Math.round((t - Math.max(p.forwardedAt, this.lastDoneAt)) * 1000));
    this.lastDoneAt = t;
    this.emit(p.record);
    this.made(p);
  }

  /** An awaited record was made (after emit: it is in the worker's buffer and journal now). */
  private made(p: Pending<T>): void {
    if (this.slot < 0 || p.record.seq === undefined) return;
    const next = this.entries[this.head];
    (this.journal as CrashJournal).answered(this.slot, next?.record.seq ?? 0);
  }

  private shift(): void {
    this.head++;
    if (this.head === this.entries.length) {
      this.entries = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }
}
