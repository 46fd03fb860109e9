// limits.max_buffered_bytes through the real proxy (two workers, one shared
// budget) and PostgreSQL: while clients hold half-sent large messages, a
// client whose message would take the total over the budget gets FATAL 53200
// and is closed; the holders' messages still complete and run; a holder that
// disconnects, or completes, gives its share back so the next client can.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { errorFields, query, type RawClient } from '../helpers/raw-client.ts';
import { reply, session, simple, values } from '../helpers/security.ts';

const BUDGET = 1024 * 1024;
/** 600 KiB: one fits the budget, two do not. */
const MESSAGE = 600 * 1024;
let proxy: RunningProxy;

before(async () => {
  await ensureDemoDatabase();
  proxy = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: `limits: { max_buffered_bytes: ${BUDGET}, max_message_bytes: ${4 * BUDGET} }\n` }));
});
after(async () => {
  await proxy?.stop();
});

/** A simple Query `SELECT length('aaa…')` of exactly `total` bytes as one message. */
function bigQuery(total: number): Buffer {
  const head = "SELECT length('";
  const tail = "')\0";
  const sql = head + 'a'.repeat(total - 5 - head.length - tail.length) + tail;
  const b = Buffer.alloc(total);
  b[0] = 0x51; // 'Q'
  b.writeInt32BE(total - 1, 1);
  b.write(sql, 5, 'latin1');
  return b;
}

/** Send the first `bytes` of a message and give the proxy time to read them. */
async function sendPart(c: RawClient, msg: Buffer, bytes: number): Promise<void> {
  c.write(msg.subarray(0, bytes));
  await new Promise((resolve) => setTimeout(resolve, 200));
}

describe('limits.max_buffered_bytes', () => {
  test('a client that would exceed the shared budget is refused with 53200; the holder completes; shares come back', async () => {
    const msg = bigQuery(MESSAGE);
    const holder = await session(proxy.port, 'reader');
    const others: RawClient[] = [];
    try {
      await sendPart(holder, msg, 100 * 1024);
      // Whichever worker each lands on, the budget is one: every further half-sent message is refused.
      for (let i = 0; i < 3; i++) {
        const c = await session(proxy.port, 'reader');
        others.push(c);
        await sendPart(c, msg, 100 * 1024);
        const m = await c.read();
        assert.equal(m?.type, 'E', `client ${i}: an ErrorResponse`);
        assert.equal(errorFields(m).get('S'), 'FATAL');
        assert.equal(errorFields(m).get('C'), '53200');
        assert.match(errorFields(m).get('M') ?? '', /limits\.max_buffered_bytes/);
        assert.ok(await c.waitClosed(), `client ${i} is closed`);
      }
      // The holder's message completes and runs.
      holder.write(msg.subarray(100 * 1024));
      const r = await holder.readUntil('Z', 10_000);
      assert.equal(r.find((x) => x.type === 'E'), undefined);
      assert.deepEqual(values(reply(r)), [String(MESSAGE - 5 - "SELECT length('".length - "')\0".length)]);
      // Given back: the next client's whole message goes through, as does a held one that completes.
      const next = await session(proxy.port, 'writer');
      others.push(next);
      await sendPart(next, msg, 300 * 1024);
      next.write(msg.subarray(300 * 1024));
      const r2 = await next.readUntil('Z', 10_000);
      assert.equal(r2.find((x) => x.type === 'E'), undefined);
    } finally {
      holder.end();
      for (const c of others) c.end();
    }
  });

  test('a client that disconnects with half a message gives its share back', async () => {
    const msg = bigQuery(MESSAGE);
    const quitter = await session(proxy.port, 'reader');
    await sendPart(quitter, msg, 200 * 1024);
    quitter.end();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const c = await session(proxy.port, 'reader');
    try {
      await sendPart(c, msg, 200 * 1024);
      c.write(msg.subarray(200 * 1024));
      const r = await c.readUntil('Z', 10_000);
      assert.equal(r.find((x) => x.type === 'E'), undefined, 'the share came back');
      const after = await simple(c, 'SELECT 1');
      assert.deepEqual(values(after), ['1']);
    } finally {
      c.end();
    }
  });
});

/** The proxy process's resident memory, MiB (workers are threads of it). */
function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;
}

describe('memory comes back', () => {
  test('ten sessions each holding half of a 60 MiB message: RSS returns within 50 MiB of where it started once they close', async () => {
    // A budget that lets all ten hold their halves (600 MiB declared, 300 MiB received).
    const big = await startProxy(demoConfig({ withPolicy: true, workers: 2, extra: 'limits: { max_buffered_bytes: 1073741824 }\n' }));
    const pid = big.child.pid as number;
    const warm = await session(big.port, 'reader');
    try {
      for (let i = 0; i < 200; i++) {
        warm.write(query(`SELECT ${i}`));
        await warm.readUntil('Z');
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const start = rssMiB(pid);
      const total = 60 * 1024 * 1024;
      const holders: RawClient[] = [];
      for (let i = 0; i < 10; i++) {
        const c = await session(big.port, 'reader');
        const head = Buffer.alloc(5);
        head[0] = 0x51; // 'Q'
        head.writeInt32BE(total - 1, 1);
        c.write(head);
        for (let k = 0; k < 30; k++) c.write(Buffer.alloc(1024 * 1024, 0x61));
        holders.push(c);
      }
      let holding = 0;
      for (let i = 0; i < 50 && holding < start + 200; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        holding = rssMiB(pid);
      }
      assert.ok(holding >= start + 200, `the halves are held (RSS ${start.toFixed(0)} → ${holding.toFixed(0)} MiB)`);
      for (const c of holders) c.end();
      let now = holding;
      for (let i = 0; i < 75 && now > start + 50; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        now = rssMiB(pid);
      }
      assert.ok(now <= start + 50, `RSS ${start.toFixed(0)} MiB at the start, ${holding.toFixed(0)} holding, ${now.toFixed(0)} after they closed`);
      // The proxy still works.
      assert.deepEqual(values(await simple(warm, 'SELECT 1')), ['1']);
    } finally {
      warm.end();
      await big.stop();
    }
  });
});
