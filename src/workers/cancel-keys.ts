// Cancel routing: the BackendKeyData keys this proxy issues, and where a
// CancelRequest naming one of them goes.
//
// The whole path, end to end:
//  1. At login each session gets a key from its worker's table (issue): a
//     processId with the worker id in bits 24–30 and a nonzero 24-bit
//     sequence in bits 0–23, and a random 31-bit secret. The client sees only
//     this key in BackendKeyData, never the upstream server's key.
//  2. To cancel, the client opens a new connection and sends CancelRequest
//     (Message Formats: CancelRequest, code 80877102) with that key. The
//     kernel spreads connections across the workers' reusePort listeners, so
//     it lands on any worker; that worker's session reads it and calls
//     SessionHost.routeCancel (route here).
//  3. The owner worker is read from bits 24–30 of the processId. Another
//     worker's key is posted to the supervisor as a 'cancel' message, which
//     forwards it to the owner; the owner calls cancelLocal for it.
//  4. The owner looks the processId up and compares the secret in constant
//     time; an unknown key or a wrong secret is ignored (the protocol sends no
//     reply to a CancelRequest either way).
//  5. The session that owns the key cancels upstream with the real upstream
//     key it got in the server's BackendKeyData (sendUpstreamCancel, a new
//     connection to the server).

import { randomInt, timingSafeEqual } from 'node:crypto';

/** What a cancel reaches: the session that owns a key. */
export interface CancelTarget {
  readonly id: string;
  /** Cancel what this session runs upstream (the secret is already checked). */
  cancelUpstream(): void;
}

export interface CancelKey {
  processId: number;
  secretKey: number;
}

export interface CancelLog {
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** Send a CancelRequest for another worker's key to that worker (via the supervisor). */
export type ForwardCancel = (owner: number, processId: number, secretKey: number) => void;

/** The largest worker id: it lives in bits 24–30 (bit 31 would make the processId negative), hence config workers ≤ 127. */
export const MAX_WORKER_ID = 0x7f;
const SEQUENCE_MASK = 0xffffff;

/** The worker that issued this processId (bits 24–30). */
export function ownerWorker(processId: number): number {
  return (processId >>> 24) & MAX_WORKER_ID;
}

/** A random 31-bit secret for BackendKeyData (never the upstream's key). */
export function randomSecretKey(): number {
  return randomInt(1, 0x7fffffff);
}

/** One worker's cancel keys: the sessions it issued keys to, by processId. */
export class CancelKeys {
  private readonly byProcessId = new Map<number, { owner: CancelTarget; secretKey: number }>();
  private readonly byOwner = new Map<CancelTarget, number>();
  private readonly workerId: number;
  private readonly forward: ForwardCancel;
  private readonly log: CancelLog;
  private readonly maxSequence: number;
  private sequence = 0;
  /** Scratch for the constant-time compare (one thread: no allocation per cancel). */
  private readonly given = Buffer.alloc(4);
  private readonly held = Buffer.alloc(4);

  /**
   * `maxSequence`: the largest sequence issued before wrapping to 1
   * (default 2^24 − 1); tests lower it to reach the wrap-around.
   */
  constructor(workerId: number, forward: ForwardCancel, log: CancelLog, maxSequence = SEQUENCE_MASK) {
    if (!Number.isInteger(workerId) || workerId < 0 || workerId > MAX_WORKER_ID) throw new RangeError(`worker id ${workerId} does not fit the cancel key (0–${MAX_WORKER_ID})`);
    if (!Number.isInteger(maxSequence) || maxSequence < 1 || maxSequence > SEQUENCE_MASK) throw new RangeError(`maxSequence ${maxSequence} out of range (1–${SEQUENCE_MASK})`);
    this.workerId = workerId;
    this.forward = forward;
    this.log = log;
    this.maxSequence = maxSequence;
  }

  /** Sessions holding a key now. */
  get size(): number {
    return this.byProcessId.size;
  }

  /** Issue a key for this owner: a processId no registered session holds, sequence never 0. */
  issue(owner: CancelTarget): CancelKey {
    // A session registers once; a second call replaces its key.
    this.release(owner);
    if (this.byProcessId.size >= this.maxSequence) throw new Error('no free cancel key: every sequence number is held');
    let processId: number;
    do {
      this.sequence = this.sequence >= this.maxSequence ? 0 : this.sequence + 1;
      // Worker id in bits 24–30 routes a CancelRequest that lands on another worker.
      processId = (this.workerId << 24) | this.sequence;
    } while (this.sequence === 0 || this.byProcessId.has(processId));
    const secretKey = randomSecretKey();
    this.byProcessId.set(processId, { owner, secretKey });
    this.byOwner.set(owner, processId);
    return { processId, secretKey };
  }

  /** Forget this owner's key (idempotent: sessions release on every way out). */
  release(owner: CancelTarget): void {
    const processId = this.byOwner.get(owner);
    if (processId === undefined) return;
    this.byOwner.delete(owner);
    this.byProcessId.delete(processId);
  }

  /** A CancelRequest arrived on this worker's listener: cancel here, or forward to the owner worker. */
  route(processId: number, secretKey: number): void {
    const owner = ownerWorker(processId);
    if (owner === this.workerId) {
      this.cancelLocal(processId, secretKey);
      return;
    }
    this.log.debug({ owner }, 'cancel routed to owning worker');
    this.forward(owner, processId, secretKey);
  }

  /** A CancelRequest for a key of this worker (from its own listener or forwarded). true when a session was told to cancel. */
  cancelLocal(processId: number, secretKey: number): boolean {
    const entry = this.byProcessId.get(processId);
    this.given.writeInt32BE(secretKey | 0);
    this.held.writeInt32BE(entry?.secretKey ?? 0);
    // Constant-time compare: cancel keys must not be guessable byte by byte.
    if (entry === undefined || !timingSafeEqual(this.given, this.held)) {
      this.log.info({ processId }, 'cancel request with unknown key ignored');
      return false;
    }
    this.log.debug({ session: entry.owner.id }, 'cancel request');
    entry.owner.cancelUpstream();
    return true;
  }
}
