// The worker's cancel-key table (src/workers/cancel-keys.ts): the layout of
// the BackendKeyData keys it issues, the secret check, and routing a
// CancelRequest to the worker that owns the key.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CancelKeys, MAX_WORKER_ID, ownerWorker, randomSecretKey, type CancelLog, type CancelTarget } from '../../src/workers/cancel-keys.ts';

class FakeSession implements CancelTarget {
  cancels = 0;
  readonly id: string;
  constructor(id: string) {
    this.id = id;
  }
  cancelUpstream(): void {
    this.cancels++;
  }
}

interface Logged {
  level: 'info' | 'debug';
  obj: object;
  msg: string;
}

function recorder(): CancelLog & { lines: Logged[] } {
  const lines: Logged[] = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj, msg }),
    debug: (obj, msg) => lines.push({ level: 'debug', obj, msg }),
  };
}

const noForward = (): void => assert.fail('nothing may be forwarded');
const sequenceOf = (processId: number): number => processId & 0xffffff;

describe('key layout', () => {
  test('the worker id is recoverable from the processId (bits 24–30); the processId stays positive', () => {
    for (const workerId of [0, 1, 5, 64, MAX_WORKER_ID]) {
      const keys = new CancelKeys(workerId, noForward, recorder());
      for (let i = 0; i < 50; i++) {
        const { processId, secretKey } = keys.issue(new FakeSession(`s${i}`));
        assert.equal(ownerWorker(processId), workerId);
        assert.equal(processId >>> 24, workerId, 'bit 31 is never set');
        assert.ok(processId > 0 && processId <= 0x7fffffff, `processId ${processId} is a positive int32`);
        assert.notEqual(sequenceOf(processId), 0);
        assert.ok(Number.isInteger(secretKey) && secretKey >= 1 && secretKey < 0x7fffffff, `secret ${secretKey} is a positive 31-bit number`);
      }
    }
  });

  test('a worker id that does not fit 7 bits is refused', () => {
    assert.throws(() => new CancelKeys(MAX_WORKER_ID + 1, noForward, recorder()), RangeError);
    assert.throws(() => new CancelKeys(-1, noForward, recorder()), RangeError);
  });

  test('ownerWorker reads bits 24–30 of any int32, also one with bit 31 set (a forged key)', () => {
    assert.equal(ownerWorker((3 << 24) | 0x123456), 3);
    assert.equal(ownerWorker(-1), MAX_WORKER_ID);
    assert.equal(ownerWorker(0x80000000 | 0), 0);
  });

  test('secrets are random: 1000 draws are not all alike and stay in range', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const s = randomSecretKey();
      assert.ok(s >= 1 && s < 0x7fffffff);
      seen.add(s);
    }
    assert.ok(seen.size > 990, `${seen.size} distinct secrets in 1000`);
  });

  test('keys are unique while registered: 20 000 issues and releases over a sequence that wraps many times', () => {
    // A 255-wide sequence with up to 200 sessions held wraps about 80 times here.
    const keys = new CancelKeys(9, noForward, recorder(), 255);
    const held = new Map<number, FakeSession>();
    let seed = 12345;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 20_000; i++) {
      if (held.size < 200 && (held.size < 100 || next(2) === 0)) {
        const s = new FakeSession(`s${i}`);
        const { processId } = keys.issue(s);
        assert.equal(held.has(processId), false, `processId ${processId} issued while still held`);
        assert.notEqual(sequenceOf(processId), 0);
        assert.equal(ownerWorker(processId), 9);
        held.set(processId, s);
      } else {
        const pids = [...held.keys()];
        const pid = pids[next(pids.length)]!;
        const s = held.get(pid)!;
        keys.release(s);
        held.delete(pid);
      }
      assert.equal(keys.size, held.size);
    }
  });

  test('the sequence wraps around past 0 and skips the processIds still held', () => {
    const keys = new CancelKeys(4, noForward, recorder(), 3);
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((id) => new FakeSession(id)) as [FakeSession, FakeSession, FakeSession, FakeSession, FakeSession];
    assert.deepEqual([a, b, c].map((s) => sequenceOf(keys.issue(s).processId)), [1, 2, 3]);
    keys.release(b);
    // 3 → 0 (never issued) → 1 (held by a) → 2 (free again).
    assert.equal(sequenceOf(keys.issue(d).processId), 2);
    assert.throws(() => keys.issue(e), /no free cancel key/);
    keys.release(a);
    assert.equal(sequenceOf(keys.issue(e).processId), 1);
  });

  test('issuing again for the same session replaces its key; release is idempotent', () => {
    const keys = new CancelKeys(1, noForward, recorder());
    const s = new FakeSession('s');
    const first = keys.issue(s);
    const second = keys.issue(s);
    assert.equal(keys.size, 1);
    assert.equal(keys.cancelLocal(first.processId, first.secretKey), false, 'the replaced key is dead');
    assert.equal(keys.cancelLocal(second.processId, second.secretKey), true);
    keys.release(s);
    keys.release(s);
    assert.equal(keys.size, 0);
    assert.equal(keys.cancelLocal(second.processId, second.secretKey), false, 'a released key cancels nothing');
    assert.equal(s.cancels, 1);
  });
});

describe('the secret check', () => {
  test('the right key cancels its own session only', () => {
    const log = recorder();
    const keys = new CancelKeys(2, noForward, log);
    const victim = new FakeSession('victim');
    const bystander = new FakeSession('bystander');
    const k = keys.issue(victim);
    keys.issue(bystander);
    keys.route(k.processId, k.secretKey);
    assert.equal(victim.cancels, 1);
    assert.equal(bystander.cancels, 0);
    assert.ok(log.lines.some((l) => l.msg === 'cancel request' && (l.obj as { session?: string }).session === 'victim'));
  });

  test('a wrong secret, another session’s secret or an unknown processId is ignored (and logged)', () => {
    const log = recorder();
    const keys = new CancelKeys(2, noForward, log);
    const victim = new FakeSession('victim');
    const other = new FakeSession('other');
    const k = keys.issue(victim);
    const o = keys.issue(other);
    const wrong = [k.secretKey ^ 1, k.secretKey ^ 0x01000000, o.secretKey, 0, -1, 0x7fffffff];
    for (const secret of wrong) {
      if (secret === k.secretKey) continue;
      keys.route(k.processId, secret);
    }
    keys.route(k.processId + 0x100, k.secretKey);
    keys.route((2 << 24) | 0, k.secretKey);
    assert.equal(victim.cancels, 0);
    assert.equal(other.cancels, 0);
    assert.ok(log.lines.filter((l) => l.msg === 'cancel request with unknown key ignored').length >= wrong.length + 1);
  });
});

describe('routing across workers', () => {
  test('a key of another worker goes to the post callback with the owner id; nothing is cancelled here', () => {
    const posted: Array<[number, number, number]> = [];
    const here = new CancelKeys(2, (owner, processId, secretKey) => posted.push([owner, processId, secretKey]), recorder());
    const local = new FakeSession('local');
    here.issue(local);
    const elsewhere = new CancelKeys(5, noForward, recorder());
    const remote = new FakeSession('remote');
    const k = elsewhere.issue(remote);
    here.route(k.processId, k.secretKey);
    assert.deepEqual(posted, [[5, k.processId, k.secretKey]]);
    assert.equal(local.cancels, 0);
    assert.equal(remote.cancels, 0);
    // What the supervisor does with the message: the owner checks the secret and cancels.
    assert.equal(elsewhere.cancelLocal(k.processId, k.secretKey), true);
    assert.equal(remote.cancels, 1);
  });

  test('a forged processId with bit 31 set is routed by bits 24–30 (the owner then finds no such key)', () => {
    const posted: number[] = [];
    const keys = new CancelKeys(0, (owner) => posted.push(owner), recorder());
    keys.route(0x85000001 | 0, 42);
    assert.deepEqual(posted, [5]);
  });
});
