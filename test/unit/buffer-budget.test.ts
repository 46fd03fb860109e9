// The budget for incomplete client messages (protocol/buffer-budget.ts) and
// how the Framer draws on it: a large split message takes its declared size
// when its header arrives, gives it back when it is reported whole, when the
// framer fails, or when the stream is disposed; small ones are not counted.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BufferBudget, COUNTED_MESSAGE_BYTES } from '../../src/protocol/buffer-budget.ts';
import { FrameEvent, Framer } from '../../src/protocol/framer.ts';

/** A Query ('Q') message of exactly `total` bytes. */
function queryOf(total: number): Buffer {
  const b = Buffer.alloc(total, 0x61);
  b[0] = 0x51; // 'Q'
  b.writeInt32BE(total - 1, 1);
  b[total - 1] = 0;
  return b;
}

describe('BufferBudget', () => {
  test('reserve up to the limit, in KiB; release gives it back; threads share one counter', () => {
    const shared = BufferBudget.shared();
    const a = new BufferBudget(shared, 1024 * 1024);
    const b = new BufferBudget(shared, 1024 * 1024);
    assert.equal(a.reserve(600 * 1024), true);
    assert.equal(b.reserve(600 * 1024), false, 'the second holder sees the first');
    assert.equal(b.usedBytes, 600 * 1024);
    assert.equal(b.reserve(424 * 1024), true);
    assert.equal(a.reserve(1), false);
    a.release(600 * 1024);
    b.release(424 * 1024);
    assert.equal(a.usedBytes, 0);
  });
});

describe('Framer with a budget', () => {
  const total = 200 * 1024;

  test('a split large message holds its declared size while it waits, and gives it back when reported whole', () => {
    const budget = new BufferBudget(null, 1024 * 1024);
    const f = new Framer(1 << 24, [], budget);
    const msg = queryOf(total);
    f.push(msg.subarray(0, 1000));
    assert.equal(f.next(), FrameEvent.NeedMore);
    assert.equal(budget.usedBytes, total);
    for (let at = 1000; at < total; at += 65536) {
      f.push(msg.subarray(at, Math.min(total, at + 65536)));
      const ev = f.next();
      if (at + 65536 < total) assert.equal(ev, FrameEvent.NeedMore);
      else {
        assert.equal(ev, FrameEvent.Frame);
        assert.deepEqual(f.buf.subarray(f.start, f.end), msg, 'assembled byte for byte');
      }
    }
    assert.equal(budget.usedBytes, 0);
  });

  test('the header split from the body: counted once the length is known', () => {
    const budget = new BufferBudget(null, 1024 * 1024);
    const f = new Framer(1 << 24, [], budget);
    const msg = queryOf(total);
    f.push(msg.subarray(0, 3));
    assert.equal(f.next(), FrameEvent.NeedMore);
    assert.equal(budget.usedBytes, 0);
    f.push(msg.subarray(3, 5000));
    assert.equal(f.next(), FrameEvent.NeedMore);
    assert.equal(budget.usedBytes, total);
    f.push(msg.subarray(5000));
    assert.equal(f.next(), FrameEvent.Frame);
    assert.deepEqual(f.buf.subarray(f.start, f.end), msg);
    assert.equal(budget.usedBytes, 0);
  });

  test('over the budget: the framer fails with RG_BUFFER_BUDGET and takes nothing; disposing a waiting framer gives its share back', () => {
    const budget = new BufferBudget(null, 300 * 1024);
    const first = new Framer(1 << 24, [], budget);
    const second = new Framer(1 << 24, [], budget);
    first.push(queryOf(total).subarray(0, 100));
    assert.equal(first.next(), FrameEvent.NeedMore);
    second.push(queryOf(total).subarray(0, 100));
    assert.equal(second.next(), FrameEvent.Error);
    assert.equal(second.errorCode, 'RG_BUFFER_BUDGET');
    assert.equal(budget.usedBytes, total);
    first.dispose();
    assert.equal(budget.usedBytes, 0);
    const third = new Framer(1 << 24, [], budget);
    third.push(queryOf(total));
    assert.equal(third.next(), FrameEvent.Frame, 'a whole message in one chunk is never counted');
    assert.equal(budget.usedBytes, 0);
  });

  test(`messages under ${COUNTED_MESSAGE_BYTES} bytes are not counted`, () => {
    const budget = new BufferBudget(null, 1024 * 1024);
    const f = new Framer(1 << 24, [], budget);
    const msg = queryOf(COUNTED_MESSAGE_BYTES - 1);
    f.push(msg.subarray(0, 100));
    assert.equal(f.next(), FrameEvent.NeedMore);
    assert.equal(budget.usedBytes, 0);
    f.push(msg.subarray(100));
    assert.equal(f.next(), FrameEvent.Frame);
    assert.deepEqual(f.buf.subarray(f.start, f.end), msg);
  });
});
