// The main thread's half of audit: the AuditHub takes the workers' batches
// (AuditBatchMessage: a transferred UTF-8 chunk of whole lines), hands each
// chunk through the Auditor to the one sink as it is, acknowledges them (the
// workers' in-flight bound), gives each chunk's buffer back to its worker once
// the sink is done with it (ChunkLease: the worker writes its next lines into
// it), and tells every worker when the sink's health changes (they need it
// for fail-closed). Pure: the supervisor passes messages in and gives it a
// send function; no threads here.

import type { Auditor, AuditorStats } from './auditor.ts';
import { ChunkLease } from './sinks.ts';
import { CHUNK_BYTES, type AuditBatchMessage, type AuditControlMessage } from './worker-side.ts';

/** Sends to one worker; `transfer` moves ArrayBuffers (a returned chunk buffer). */
export type SendToWorker = (workerId: number, msg: AuditControlMessage, transfer?: ArrayBuffer[]) => void;

export interface AuditHubStats extends AuditorStats {
  /** Batches taken from workers. */
  batches: number;
  /** Chunk buffers given back to their workers. */
  buffersReturned: number;
}

export class AuditHub {
  readonly auditor: Auditor;
  private readonly broadcast: (msg: AuditControlMessage) => void;
  private readonly sendTo: SendToWorker;
  private healthy: boolean;
  private batches = 0;
  private returned = 0;

  /**
   * @param broadcast send to every live worker (health changes)
   * @param sendTo    send to one worker (acknowledgements, returned buffers)
   * @param onHealthChange optional observer (logs: one line per change)
   */
  constructor(auditor: Auditor, broadcast: (msg: AuditControlMessage) => void, sendTo: SendToWorker, onHealthChange?: (healthy: boolean, lastError: string | null) => void) {
    this.auditor = auditor;
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
    if (msg.chunk === null || msg.records === 0) return;
    this.auditor.writeChunk(msg.chunk, msg.records, this.lease(msg.workerId, msg.chunk));
    this.sendTo(msg.workerId, { type: 'audit-ack', records: msg.records });
  }

  /**
   * A worker died without posting its last lines: count them as dropped. The
   * number is its queue in its latest metrics snapshot (at most one snapshot
   * interval old); records of statements still awaiting their answers there
   * are not in it.
   */
  noteWorkerLost(records: number): void {
    this.auditor.addWorkerDropped(records);
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
    return { ...this.auditor.stats(), batches: this.batches, buffersReturned: this.returned };
  }

  /** Flush and close the sink (after the workers have posted their last batches). */
  close(): Promise<void> {
    return this.auditor.close();
  }
}
