// The main thread's half of audit: the AuditHub takes the workers' batches
// (AuditBatchMessage: a transferred UTF-8 chunk of whole lines), hands each
// chunk through the Auditor to the one sink as it is, acknowledges them (the
// workers' in-flight bound), gives each chunk's buffer back to its worker once
// the sink is done with it (ChunkLease: the worker writes its next lines into
// it), and tells every worker when the sink's health changes (they need it
// for fail-closed). Pure: the supervisor passes messages in and gives it a
// send function; no threads here.
//
// Crash recovery: the hub allocates each worker's crash journal
// (crash-journal.ts) for its workerData and counts what that worker's batches
// delivered. When the worker exits, workerExited() writes the lines the
// journal holds beyond that (formatted, never posted), then one session-lost
// line per session that was open, naming the records that were never made
// (statements forwarded whose answers had not arrived) — so a crash leaves its
// evidence in the log itself — and counts both.

import type { Auditor, AuditorStats } from './auditor.ts';
import { allocateJournal, readJournal, type Delivered } from './crash-journal.ts';
import { ChunkLease } from './sinks.ts';
import { CHUNK_BYTES, type AuditBatchMessage, type AuditControlMessage } from './worker-side.ts';

/** Sends to one worker; `transfer` moves ArrayBuffers (a returned chunk buffer). */
export type SendToWorker = (workerId: number, msg: AuditControlMessage, transfer?: ArrayBuffer[]) => void;

export interface AuditHubStats extends AuditorStats {
  /** Batches taken from workers. */
  batches: number;
  /** Chunk buffers given back to their workers. */
  buffersReturned: number;
  /** Records a worker had formatted but not posted when it exited, written from its crash journal. */
  recovered: number;
  /** Records lost with a worker's exit (never made, or no longer in its journal); also in `dropped`. Each session's share is named in a session-lost line. */
  lost: number;
  /** session-lost lines written. */
  sessionsLost: number;
}

/** What workerExited() found: records written from the journal, records lost (named in session-lost lines, or beyond the ring), unreported drops, session-lost lines. */
export interface WorkerAuditLoss {
  recovered: number;
  lost: number;
  dropped: number;
  sessions: number;
}

interface WorkerJournal {
  sab: SharedArrayBuffer;
  delivered: Delivered;
}

export interface AuditHubOptions {
  /** Ring bytes of each worker's crash journal (audit.worker.buffer_bytes: what a worker can hold unposted); 0: no journals. */
  journalBytes?: number;
}

export class AuditHub {
  readonly auditor: Auditor;
  private readonly broadcast: (msg: AuditControlMessage) => void;
  private readonly sendTo: SendToWorker;
  private healthy: boolean;
  private batches = 0;
  private returned = 0;
  private readonly journalBytes: number;
  private readonly journals = new Map<number, WorkerJournal>();
  private recovered = 0;
  private lost = 0;
  private sessionsLost = 0;

  /**
   * @param broadcast send to every live worker (health changes)
   * @param sendTo    send to one worker (acknowledgements, returned buffers)
   * @param onHealthChange optional observer (logs: one line per change)
   */
  constructor(auditor: Auditor, broadcast: (msg: AuditControlMessage) => void, sendTo: SendToWorker, onHealthChange?: (healthy: boolean, lastError: string | null) => void, options: AuditHubOptions = {}) {
    this.auditor = auditor;
    this.journalBytes = options.journalBytes ?? 0;
    this.broadcast = broadcast;
    this.sendTo = sendTo;
    this.healthy = auditor.sink.healthy;
    auditor.onHealthChange((healthy) => {
      if (healthy === this.healthy) return;
      this.healthy = healthy;
      this.broadcast({ type: 'audit-health', healthy });
      onHealthChange?.(healthy, auditor.sink.lastError);
    });
  }

  /** The message a newly started worker gets first (put it in workerData, or post it right after spawning). */
  healthMessage(): AuditControlMessage {
    return { type: 'audit-health', healthy: this.healthy };
  }

  get sinkHealthy(): boolean {
    return this.healthy;
  }

  /** A batch from a worker: hand its chunk to the sink as one unit, count the worker's drops, acknowledge. */
  accept(msg: AuditBatchMessage): void {
    this.batches++;
    this.auditor.addWorkerDropped(msg.dropped);
    const journal = this.journals.get(msg.workerId);
    if (journal !== undefined) {
      const d = journal.delivered;
      d.dropped = (d.dropped + msg.dropped) | 0;
      d.records = (d.records + msg.records) | 0;
      d.bytes += msg.chunk?.byteLength ?? 0;
    }
    if (msg.chunk === null || msg.records === 0) return;
    this.auditor.writeChunk(msg.chunk, msg.records, this.lease(msg.workerId, msg.chunk));
    this.sendTo(msg.workerId, { type: 'audit-ack', records: msg.records });
  }

  /**
   * A new journal for the worker about to start in slot `workerId` (its
   * workerData); null when journals are off. `sessions`: how many sessions it
   * may hold at once.
   */
  journalFor(workerId: number, sessions: number): SharedArrayBuffer | null {
    if (this.journalBytes <= 0) return null;
    const sab = allocateJournal(this.journalBytes, sessions);
    this.journals.set(workerId, { sab, delivered: { bytes: 0, records: 0, dropped: 0 } });
    return sab;
  }

  /**
   * The worker in slot `workerId` exited (after every message it posted was
   * accepted: the 'exit' event comes after them). Writes what its journal
   * holds beyond its batches, then a session-lost line per session still
   * open; `reason` goes into those lines. After a graceful stop there is
   * nothing left and nothing is written.
   */
  workerExited(workerId: number, reason: string, nowMs: number = Date.now()): WorkerAuditLoss {
    const journal = this.journals.get(workerId);
    if (journal === undefined) return { recovered: 0, lost: 0, dropped: 0, sessions: 0 };
    this.journals.delete(workerId);
    const r = readJournal(journal.sab, journal.delivered);
    if (r.data !== null) {
      this.auditor.writeChunk(r.data, r.records);
      this.recovered += r.records;
    }
    const time = new Date(nowMs).toISOString();
    let lost = r.unrecoverable;
    for (const s of r.sessions) {
      lost += s.lost;
      this.sessionsLost++;
      this.auditor.sink.write(
        `${JSON.stringify({ audit: 'session-lost', time, unix_ms: nowMs, session: s.session, worker: workerId, lost: s.lost, seq_from: s.seqFrom, seq_to: s.seqTo, reason })}\n`,
      );
    }
    // Losses no session line can name: lines the ring no longer held, drops not yet reported, sessions that had no slot.
    if (r.unrecoverable > 0 || r.droppedUnreported > 0 || r.untracked > 0) {
      this.auditor.sink.write(`${JSON.stringify({ audit: 'records-lost', time, unix_ms: nowMs, worker: workerId, lost: r.unrecoverable, dropped: r.droppedUnreported, untracked_sessions: r.untracked, reason })}\n`);
    }
    this.lost += lost;
    this.auditor.addWorkerDropped(lost + r.droppedUnreported);
    return { recovered: r.records, lost, dropped: r.droppedUnreported, sessions: r.sessions.length };
  }

  /** A chunk written into a whole worker chunk buffer goes back to that worker when the sink is done with it; other (exact-size) chunks are not worth it. */
  private lease(workerId: number, chunk: Uint8Array): ChunkLease | null {
    const buffer = chunk.buffer;
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== CHUNK_BYTES) return null;
    return new ChunkLease(() => {
      this.returned++;
      this.sendTo(workerId, { type: 'audit-buffer', buffer }, [buffer]);
    });
  }

  stats(): AuditHubStats {
    return { ...this.auditor.stats(), batches: this.batches, buffersReturned: this.returned, recovered: this.recovered, lost: this.lost, sessionsLost: this.sessionsLost };
  }

  /** Flush and close the sink (after the workers have posted their last batches). */
  close(): Promise<void> {
    return this.auditor.close();
  }
}
