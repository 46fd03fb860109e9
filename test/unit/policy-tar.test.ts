// The bundle tar reader, on archives built byte by byte.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { normaliseTarPath, readTarFiles } from '../../src/policy/tar.ts';

const encoder = new TextEncoder();

function header(fields: { name: string; size: number; type: string; prefix?: string; ustar?: boolean; base256Size?: boolean }): Uint8Array {
  const block = new Uint8Array(512);
  block.set(encoder.encode(fields.name).subarray(0, 100), 0);
  block.set(encoder.encode('0000644\0'), 100);
  if (fields.base256Size === true) {
    block[124] = 0x80;
    let size = fields.size;
    for (let i = 135; i > 124; i--) {
      block[i] = size % 256;
      size = Math.floor(size / 256);
    }
  } else {
    block.set(encoder.encode(`${fields.size.toString(8).padStart(11, '0')}\0`), 124);
  }
  block[156] = fields.type.charCodeAt(0);
  if (fields.ustar !== false) block.set(encoder.encode('ustar\x0000'), 257);
  if (fields.prefix !== undefined) block.set(encoder.encode(fields.prefix), 345);
  return block;
}

function padded(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.length / 512) * 512);
  out.set(data);
  return out;
}

function archive(...parts: Uint8Array[]): Uint8Array {
  const all = [...parts, new Uint8Array(1024)];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of all) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function file(name: string, text: string, extra: { prefix?: string; type?: string; base256Size?: boolean } = {}): Uint8Array[] {
  const data = encoder.encode(text);
  return [header({ name, size: data.length, type: extra.type ?? '0', ...extra }), padded(data)];
}

function pax(path: string): Uint8Array[] {
  const record = ` path=${path}\n`;
  let length = record.length;
  while (`${length}${record}`.length !== length) length = `${length}${record}`.length;
  const data = encoder.encode(`${length}${record}`);
  return [header({ name: 'PaxHeaders/x', size: data.length, type: 'x' }), padded(data)];
}

const text = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : new TextDecoder().decode(bytes));

describe('readTarFiles', () => {
  test('regular files keyed by their path without the leading slash', () => {
    const files = readTarFiles(archive(...file('/policy.wasm', 'WASM'), ...file('/data.json', '{}'), ...file('/.manifest', '{"revision":""}')));
    assert.deepEqual([...files.keys()], ['policy.wasm', 'data.json', '.manifest']);
    assert.equal(text(files.get('data.json')), '{}');
  });

  test('data spanning several blocks, and empty files', () => {
    const big = 'x'.repeat(1300);
    const files = readTarFiles(archive(...file('big', big), ...file('empty', ''), ...file('after', 'ok')));
    assert.equal(text(files.get('big')), big);
    assert.equal(text(files.get('empty')), '');
    assert.equal(text(files.get('after')), 'ok');
  });

  test('ustar prefix, PAX path and GNU long names', () => {
    const long = `${'d'.repeat(120)}/data.json`;
    const files = readTarFiles(
      archive(
        ...file('data.json', 'prefixed', { prefix: 'policies/catalog' }),
        ...pax(long),
        ...file('ignored-short-name', 'pax'),
        header({ name: '././@LongLink', size: long.length + 1, type: 'L' }),
        padded(encoder.encode(`${long.replace('data', 'gnu')}\0`)),
        ...file('ignored-too', 'gnu'),
      ),
    );
    assert.equal(text(files.get('policies/catalog/data.json')), 'prefixed');
    assert.equal(text(files.get(long)), 'pax');
    assert.equal(text(files.get(long.replace('data', 'gnu'))), 'gnu');
    assert.equal(files.has('ignored-short-name'), false);
  });

  test('directories, links and pre-POSIX headers', () => {
    const files = readTarFiles(
      archive(header({ name: 'dir/', size: 0, type: '5' }), header({ name: 'link', size: 0, type: '2' }), ...file('old', 'v7', { type: '\0' })),
    );
    assert.deepEqual([...files.keys()], ['old']);
  });

  test('base-256 sizes', () => {
    const files = readTarFiles(archive(...file('b256', 'hello', { base256Size: true })));
    assert.equal(text(files.get('b256')), 'hello');
  });

  test('truncated or corrupt archives throw', () => {
    const whole = archive(...file('a', 'x'.repeat(600)));
    assert.throws(() => readTarFiles(whole.subarray(0, 700)), /truncated/);
    const corrupt = archive(...file('a', 'x'));
    corrupt.set(encoder.encode('zz'), 124);
    assert.throws(() => readTarFiles(corrupt), /invalid octal/);
  });

  test('an empty archive has no files', () => {
    assert.equal(readTarFiles(new Uint8Array(1024)).size, 0);
    assert.equal(readTarFiles(new Uint8Array(0)).size, 0);
  });

  test('normaliseTarPath', () => {
    assert.equal(normaliseTarPath('/policy.wasm'), 'policy.wasm');
    assert.equal(normaliseTarPath('./a/b'), 'a/b');
    assert.equal(normaliseTarPath('a/b'), 'a/b');
  });
});
