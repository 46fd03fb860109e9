// Reading audit logs back (rolegate replay, rolegate review): the file sink's
// lines, rotated files included, cut into chunks of whole lines that can go
// to a worker thread as they are (a transferable buffer each), and one line
// parsed into the record it holds. Lines that are not audit records — pino's
// own log lines on a shared stdout — are told apart by their first key.

import { open, realpath, stat } from 'node:fs/promises';
import type { AuditRecord } from './record.ts';

/**
 * A record as JSON.parse gives it back from a line (docs/audit.md, "Fields"):
 * the record as written, its `input` (audit.input: facts or full) a plain object.
 */
export type AuditLogRecord = Omit<AuditRecord, 'input'> & { input?: Record<string, unknown> };

/** Every audit line starts with this: the formatter writes `audit` first. */
const RECORD_START = '{"audit":';

/** The record a line holds; null for a line that is not an audit record (or not JSON). */
export function parseAuditLine(line: string): AuditLogRecord | null {
  if (!line.startsWith(RECORD_START)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null) return null;
  const r = parsed as Partial<AuditLogRecord>;
  if ((r.audit !== 'connect' && r.audit !== 'statement') || typeof r.session !== 'string' || typeof r.seq !== 'number' || typeof r.unix_ms !== 'number') return null;
  if (typeof r.identity !== 'object' || r.identity === null || typeof r.client !== 'object' || r.client === null) return null;
  if (r.decision !== 'allow' && r.decision !== 'deny') return null;
  return r as AuditLogRecord;
}

/** Calls `each` with every non-empty line of a chunk of whole lines (UTF-8). */
export function forEachLine(chunk: Uint8Array, each: (line: string) => void): void {
  const text = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('utf8');
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    let last = end;
    if (last > start && text.charCodeAt(last - 1) === 0x0d /* '\r' */) last--;
    if (last > start) each(text.slice(start, last));
    start = end + 1;
  }
}

/**
 * The files to read for the paths given: each path, preceded by its rotated
 * files (path.N … path.1, oldest first) when they exist, each file once
 * (a glob such as audit.log* names them all already).
 */
export async function auditFiles(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  const add = async (file: string): Promise<void> => {
    const real = await realpath(file);
    if (seen.has(real)) return;
    seen.add(real);
    out.push(file);
  };
  for (const p of paths) {
    const rotated: string[] = [];
    for (let n = 1; n <= 1000; n++) {
      const candidate = `${p}.${n}`;
      try {
        if (!(await stat(candidate)).isFile()) break;
      } catch {
        break;
      }
      rotated.push(candidate);
    }
    for (const file of rotated.reverse()) await add(file);
    const s = await stat(p);
    if (!s.isFile()) throw new Error(`${p} is not a file`);
    await add(p);
  }
  return out;
}

/**
 * Reads the files in order and hands on chunks of whole lines of about
 * `chunkBytes` (a line longer than that is a chunk of its own). Each chunk is
 * a fresh buffer of its own (transferable to a worker). `onChunk` may return
 * a promise: reading waits for it (backpressure). The file is read in large
 * blocks into one buffer that is reused, so a chunk costs one allocation, the
 * copy that leaves (per-chunk read buffers and concatenations drove the main
 * thread into full garbage collections while the workers waited for work).
 */
export async function readLineChunks(files: readonly string[], chunkBytes: number, onChunk: (chunk: Uint8Array, file: string) => unknown, blockBytes = Math.max(4 * 1024 * 1024, 4 * chunkBytes)): Promise<void> {
  let block = Buffer.allocUnsafeSlow(Math.max(blockBytes, 1));
  for (const file of files) {
    const handle = await open(file, 'r');
    try {
      // block[0, filled): bytes read and not yet handed on (the start of a line).
      let filled = 0;
      for (;;) {
        if (filled === block.length) {
          // One line longer than the block: make room.
          const bigger = Buffer.allocUnsafeSlow(block.length * 2);
          block.copy(bigger, 0, 0, filled);
          block = bigger;
        }
        const { bytesRead } = await handle.read(block, filled, block.length - filled, null);
        const total = filled + bytesRead;
        let start = 0;
        while (total - start >= chunkBytes) {
          let cut = block.lastIndexOf(0x0a /* '\n' */, start + chunkBytes - 1);
          if (cut < start) cut = block.indexOf(0x0a /* '\n' */, start + chunkBytes);
          if (cut < 0 || cut >= total) break;
          await onChunk(exactCopy(block.subarray(start, cut + 1)), file);
          start = cut + 1;
        }
        if (bytesRead === 0) {
          // The end: what is left, a last line perhaps without its '\n' (a file being written, or cut).
          if (total > start) await onChunk(exactCopy(block.subarray(start, total)), file);
          break;
        }
        block.copy(block, 0, start, total);
        filled = total - start;
      }
    } finally {
      await handle.close();
    }
  }
}

/** The bytes in an ArrayBuffer of exactly their size (never a view of a pooled or larger one). */
function exactCopy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(bytes.byteLength));
  out.set(bytes);
  return out;
}
