// What survives a worker crash. The main thread allocates one journal per
// worker (a SharedArrayBuffer passed in workerData, so it knows the memory
// before the worker writes a byte) and reads it only after that worker has
// exited, when nothing writes to it any more:
//
// - a byte ring holding a copy of every finished audit line, with running
//   totals of bytes and records. The main thread counts what arrived in
//   batches; after a crash it writes what the ring holds beyond that — the
//   lines the worker had formatted but not yet posted. The ring is as large as
//   the worker's buffer bound (audit.worker.buffer_bytes), which bounds the
//   unposted bytes (posted batches are delivered before the 'exit' event),
//   so nothing formatted is lost.
// - one slot per open session: how many of its statements were forwarded and
//   have no record yet (the record is made from the server's answer), and
//   their seq range. Those records were never formatted and cannot be
//   recovered; the main thread writes one `session-lost` line per session
//   instead, naming the range and the count, so the log itself says where each
//   trail ends and what is missing.
//
// Cost on the worker's hot path: one bounded copy of the line's bytes and two
// Atomics.store per record, one or two stores per forwarded statement; no
// allocation.

/** Int32 header: ring position, laps, records, drops, ring size, slots, sessions without a slot. */
const H_POS = 0;
const H_LAP = 1;
const H_RECORDS = 2;
const H_DROPPED = 3;
const H_RING_BYTES = 4;
const H_SLOTS = 5;
const H_UNTRACKED = 6;
const HEADER_BYTES = 32;

/** A session slot: 16 Int32 (state, pending, first pending seq, last seq, id length), the id's bytes from byte 20. */
const SLOT_BYTES = 64;
const SLOT_INTS = SLOT_BYTES / 4;
const S_USED = 0;
const S_PENDING = 1;
const S_FIRST = 2;
const S_LAST = 3;
const S_ID_LEN = 4;
const ID_OFFSET = 20;
const MAX_ID_BYTES = SLOT_BYTES - ID_OFFSET;

function slotsOffset(ringBytes: number): number {
  return HEADER_BYTES + Math.ceil(ringBytes / 4) * 4;
}

/** A journal's memory for one worker (main thread, at spawn). */
export function allocateJournal(ringBytes: number, sessions: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(slotsOffset(ringBytes) + sessions * SLOT_BYTES);
  const header = new Int32Array(sab, 0, HEADER_BYTES / 4);
  header[H_RING_BYTES] = ringBytes;
  header[H_SLOTS] = sessions;
  return sab;
}

/** The worker's side: writes lines and session slots. */
export class CrashJournal {
  private readonly header: Int32Array;
  private readonly ring: Buffer;
  private readonly ringBytes: number;
  private readonly slots: Int32Array;
  private readonly slotBytes: Buffer;
  private readonly free: number[] = [];
  private pos = 0;
  private lap = 0;
  private records = 0;

  constructor(sab: SharedArrayBuffer) {
    this.header = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.ringBytes = this.header[H_RING_BYTES] ?? 0;
    const slotCount = this.header[H_SLOTS] ?? 0;
    this.ring = Buffer.from(sab, HEADER_BYTES, this.ringBytes);
    const at = slotsOffset(this.ringBytes);
    this.slots = new Int32Array(sab, at, slotCount * SLOT_INTS);
    this.slotBytes = Buffer.from(sab, at, slotCount * SLOT_BYTES);
    for (let i = slotCount - 1; i >= 0; i--) this.free.push(i);
  }

  /** A finished line, bytes [start, end) of `src`, just written to the worker's buffer. */
  appendLine(src: Buffer, start: number, end: number): void {
    const size = this.ringBytes;
    let len = end - start;
    // Longer than the ring (cannot happen: the buffer refuses lines beyond buffer_bytes): only its tail fits; recovery then finds the records count short and counts it lost.
    if (len > size) {
      start = end - size;
      len = size;
    }
    const room = size - this.pos;
    if (len < room) {
      src.copy(this.ring, this.pos, start, end);
      this.pos += len;
    } else {
      src.copy(this.ring, this.pos, start, start + room);
      src.copy(this.ring, 0, start + room, end);
      this.pos = len - room;
      Atomics.store(this.header, H_LAP, ++this.lap);
    }
    Atomics.store(this.header, H_POS, this.pos);
    this.records = (this.records + 1) | 0;
    Atomics.store(this.header, H_RECORDS, this.records);
  }

  /** The worker's running total of records it dropped (reported to the main thread in batches; the rest is read here after a crash). */
  setDropped(total: number): void {
    Atomics.store(this.header, H_DROPPED, total | 0);
  }

  /** A session's first forwarded statement: its slot (-1: none free, counted). */
  open(session: string): number {
    const slot = this.free.pop();
    if (slot === undefined) {
      Atomics.add(this.header, H_UNTRACKED, 1);
      return -1;
    }
    const base = slot * SLOT_INTS;
    const len = this.slotBytes.write(session, slot * SLOT_BYTES + ID_OFFSET, MAX_ID_BYTES, 'utf8');
    Atomics.store(this.slots, base + S_ID_LEN, len);
    Atomics.store(this.slots, base + S_PENDING, 0);
    Atomics.store(this.slots, base + S_USED, 1);
    return slot;
  }

  /** A statement forwarded, its record (seq) awaiting the server's answer. */
  expect(slot: number, seq: number): void {
    const base = slot * SLOT_INTS;
    const pending = this.slots[base + S_PENDING] ?? 0;
    if (pending === 0) Atomics.store(this.slots, base + S_FIRST, seq);
    Atomics.store(this.slots, base + S_LAST, seq);
    Atomics.store(this.slots, base + S_PENDING, pending + 1);
  }

  /** The oldest awaited record was made (and is in the ring); `nextSeq`: the seq of the one now oldest (ignored when none is left). */
  answered(slot: number, nextSeq: number): void {
    const base = slot * SLOT_INTS;
    const pending = (this.slots[base + S_PENDING] ?? 1) - 1;
    if (pending > 0) Atomics.store(this.slots, base + S_FIRST, nextSeq);
    Atomics.store(this.slots, base + S_PENDING, pending);
  }

  /** The session ended (every record made). */
  close(slot: number): void {
    Atomics.store(this.slots, slot * SLOT_INTS + S_USED, 0);
    this.free.push(slot);
  }
}

// The worker's one journal, if any: the statement trackers of its sessions
// report to it. Set once by the worker's audit setup; null elsewhere (the main
// thread, tests), and then trackers keep no slots.
let active: CrashJournal | null = null;

export function setActiveJournal(journal: CrashJournal | null): void {
  active = journal;
}

export function activeJournal(): CrashJournal | null {
  return active;
}

/** What the main thread had from a worker when it exited. */
export interface Delivered {
  /** Bytes of lines received in batches. */
  bytes: number;
  /** Records received in batches (counted modulo 2^32, like the journal). */
  records: number;
  /** Drops the worker reported in batches (modulo 2^32). */
  dropped: number;
}

/** A session that was open when its worker died. */
export interface OpenSession {
  session: string;
  /** Records of forwarded statements never made (their answers had not arrived). */
  lost: number;
  /** Their seq range (null when none): seqs in it that are absent from the log are the lost ones. */
  seqFrom: number | null;
  seqTo: number | null;
}

export interface Recovery {
  /** Whole lines formatted but not yet posted, in order (null: none). */
  data: Buffer | null;
  records: number;
  /** Formatted records the ring no longer held (0 unless the ring was smaller than the unposted bytes). */
  unrecoverable: number;
  /** Drops the worker had not reported yet. */
  droppedUnreported: number;
  sessions: OpenSession[];
  /** Sessions that found no free slot: their losses cannot be named. */
  untracked: number;
}

const NEWLINE = 0x0a; // '\n'

function countLines(data: Uint8Array): number {
  let n = 0;
  for (let i = data.indexOf(NEWLINE); i >= 0; i = data.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/** Read a dead worker's journal (main thread, after its 'exit'). Pure. */
export function readJournal(sab: SharedArrayBuffer, delivered: Delivered): Recovery {
  const header = new Int32Array(sab, 0, HEADER_BYTES / 4);
  const ringBytes = Atomics.load(header, H_RING_BYTES);
  const pushedBytes = Atomics.load(header, H_LAP) * ringBytes + Atomics.load(header, H_POS);
  const pendingRecords = (Atomics.load(header, H_RECORDS) - delivered.records) >>> 0;
  const droppedUnreported = (Atomics.load(header, H_DROPPED) - delivered.dropped) >>> 0;
  let data: Buffer | null = null;
  let records = 0;
  const missing = pushedBytes - delivered.bytes;
  if (missing > 0 && pendingRecords > 0 && ringBytes > 0) {
    const len = Math.min(missing, ringBytes);
    const ring = new Uint8Array(sab, HEADER_BYTES, ringBytes);
    const end = pushedBytes % ringBytes;
    const out = Buffer.allocUnsafe(len);
    if (end >= len) out.set(ring.subarray(end - len, end));
    else {
      out.set(ring.subarray(ringBytes - (len - end)), 0);
      out.set(ring.subarray(0, end), len - end);
    }
    // Overwritten by later lines: start at the first whole line still there.
    const firstEnd = len < missing ? out.indexOf(NEWLINE) : -1;
    const from = len < missing ? (firstEnd < 0 ? len : firstEnd + 1) : 0;
    data = from === 0 ? out : out.subarray(from);
    records = countLines(data);
    if (data.length === 0) data = null;
  }
  const slotCount = Atomics.load(header, H_SLOTS);
  const at = slotsOffset(ringBytes);
  const slots = new Int32Array(sab, at, slotCount * SLOT_INTS);
  const bytes = Buffer.from(sab, at, slotCount * SLOT_BYTES);
  const sessions: OpenSession[] = [];
  for (let i = 0; i < slotCount; i++) {
    const base = i * SLOT_INTS;
    if (Atomics.load(slots, base + S_USED) !== 1) continue;
    const lost = Atomics.load(slots, base + S_PENDING);
    const idStart = i * SLOT_BYTES + ID_OFFSET;
    sessions.push({
      session: bytes.toString('utf8', idStart, idStart + Atomics.load(slots, base + S_ID_LEN)),
      lost,
      seqFrom: lost > 0 ? Atomics.load(slots, base + S_FIRST) : null,
      seqTo: lost > 0 ? Atomics.load(slots, base + S_LAST) : null,
    });
  }
  return { data, records, unrecoverable: Math.max(0, pendingRecords - records), droppedUnreported, sessions, untracked: Atomics.load(header, H_UNTRACKED) };
}
