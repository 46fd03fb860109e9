// A minimal reader for the tar archives `opa build` writes (Go's archive/tar:
// ustar headers, PAX records for long names). Only regular files are returned.
// Enough for bundle.tar.gz; not a general-purpose tar implementation.

const BLOCK_BYTES = 512;

function readString(block: Uint8Array, offset: number, length: number): string {
  let end = offset;
  const limit = offset + length;
  while (end < limit && block[end] !== 0) end++;
  return new TextDecoder().decode(block.subarray(offset, end));
}

/** Header numbers are NUL/space-terminated octal, or base-256 when the top bit is set (GNU). */
function readNumber(block: Uint8Array, offset: number, length: number): number {
  const first = block[offset] ?? 0;
  if ((first & 0x80) !== 0) {
    let value = first & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + (block[offset + i] ?? 0);
    return value;
  }
  const text = readString(block, offset, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new Error(`invalid octal number in tar header: ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

function isZeroBlock(block: Uint8Array): boolean {
  for (const byte of block) if (byte !== 0) return false;
  return true;
}

/** PAX extended header records: "<len> <key>=<value>\n". */
function readPaxPath(data: Uint8Array): string | null {
  const text = new TextDecoder().decode(data);
  let offset = 0;
  while (offset < text.length) {
    const space = text.indexOf(' ', offset);
    if (space < 0) break;
    const length = Number.parseInt(text.slice(offset, space), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = text.slice(space + 1, offset + length - 1);
    const equals = record.indexOf('=');
    if (equals > 0 && record.slice(0, equals) === 'path') return record.slice(equals + 1);
    offset += length;
  }
  return null;
}

/** Strips the leading "/" or "./" that bundle paths carry: "/policy.wasm" → "policy.wasm". */
export function normaliseTarPath(path: string): string {
  return path.replace(/^(\.\/|\/)+/, '');
}

/** Regular files of an (uncompressed) tar archive, keyed by normalised path. */
export function readTarFiles(archive: Uint8Array): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  let offset = 0;
  let pendingPath: string | null = null;
  while (offset + BLOCK_BYTES <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK_BYTES);
    if (isZeroBlock(header)) break;
    const size = readNumber(header, 124, 12);
    const type = String.fromCharCode(header[156] ?? 0);
    const dataStart = offset + BLOCK_BYTES;
    const dataEnd = dataStart + size;
    if (dataEnd > archive.length) throw new Error('truncated tar archive');
    const data = archive.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / BLOCK_BYTES) * BLOCK_BYTES;

    if (type === 'x') {
      pendingPath = readPaxPath(data);
      continue;
    }
    if (type === 'L') {
      pendingPath = readString(data, 0, data.length);
      continue;
    }
    let path = pendingPath;
    pendingPath = null;
    if (path === null) {
      const name = readString(header, 0, 100);
      const magic = readString(header, 257, 6);
      const prefix = magic.startsWith('ustar') ? readString(header, 345, 155) : '';
      path = prefix === '' ? name : `${prefix}/${name}`;
    }
    if (type === '0' || type === '\0') files.set(normaliseTarPath(path), data);
  }
  return files;
}
