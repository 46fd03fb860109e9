// Micro-benchmark of the framer (src/protocol/framer.ts): the first step of
// every byte stream through rolegate. Cases, each a chunk as a socket delivers
// it and every message framed out of it (NeedMore at the end):
//   simple-query   one Query (pgbench select-only, simple protocol)
//   extended-tx    Parse/Bind/Describe/Execute/Sync (one extended statement)
//   server-answer  RowDescription, DataRow, CommandComplete, ReadyForQuery
//   rows-100       100 DataRows of ~100 bytes in one chunk
//   split-message  a 1 KiB Query arriving in 3 chunks (assembled)
//   streamed-64k   a 64 KiB DataRow streamed in 4 parts (Raw events, no buffering)
// µs per chunk (median of --runs interleaved runs), and ns per message.
//   node bench/micro-framer.ts [--runs N]

import { Framer, FrameEvent } from '../src/protocol/framer.ts';
import { message as msg, query } from '../test/helpers/raw-client.ts';
import { fmtUs, measureCases, printTable } from './lib/micro.ts';
import { numberArg } from './lib/args.ts';

const dataRow = (value: string): Buffer => {
  const v = Buffer.from(value);
  const body = Buffer.alloc(2 + 4 + v.length);
  body.writeInt16BE(1, 0);
  body.writeInt32BE(v.length, 2);
  v.copy(body, 6);
  return msg('D', body);
};

const selectSql = 'SELECT abalance FROM pgbench_accounts WHERE aid = 12345;';
const cases: Array<{ name: string; chunks: Buffer[]; messages: number; streamed?: number[] }> = [
  { name: 'simple-query', chunks: [query(selectSql)], messages: 1 },
  {
    name: 'extended-tx',
    chunks: [Buffer.concat([msg('P', `\0${'SELECT abalance FROM pgbench_accounts WHERE aid = $1;'}\0\0\0`), msg('B', Buffer.from('\0\0\0\0\0\x01\0\0\0\x0512345\0\0')), msg('D', 'P\0'), msg('E', '\0\0\0\0\0'), msg('S', '')])],
    messages: 5,
  },
  { name: 'server-answer', chunks: [Buffer.concat([msg('T', Buffer.alloc(27)), dataRow('-2871'), msg('C', 'SELECT 1\0'), msg('Z', 'I')])], messages: 4 },
  { name: 'rows-100', chunks: [Buffer.concat(Array.from({ length: 100 }, (_, i) => dataRow(`${i}`.padStart(94, 'x'))))], messages: 100 },
  (() => {
    const whole = query('x'.repeat(1024));
    return { name: 'split-message', chunks: [whole.subarray(0, 3), whole.subarray(3, 600), whole.subarray(600)], messages: 1 };
  })(),
  (() => {
    const whole = dataRow('y'.repeat(64 * 1024));
    const q = Math.ceil(whole.length / 4);
    return { name: 'streamed-64k', chunks: [0, 1, 2, 3].map((i) => whole.subarray(i * q, (i + 1) * q)), messages: 1, streamed: [0x44] };
  })(),
];

const fns = new Map<string, () => unknown>();
for (const c of cases) {
  const framer = new Framer(1 << 30, c.streamed ?? []);
  fns.set(c.name, () => {
    let events = 0;
    for (const chunk of c.chunks) {
      framer.push(chunk);
      for (let ev = framer.next(); ev !== FrameEvent.NeedMore; ev = framer.next()) {
        if (ev === FrameEvent.Error) throw new Error(`${c.name}: framing error`);
        events++;
      }
    }
    return events;
  });
}
const runs = numberArg('--runs', 41);
const results = measureCases(fns, runs);
const rows = [['case', 'bytes', 'messages', 'µs per chunk set', 'ns per message']];
for (const c of cases) {
  const us = results.get(c.name) as number;
  rows.push([c.name, String(c.chunks.reduce((n, b) => n + b.length, 0)), String(c.messages), fmtUs(us), ((us * 1000) / c.messages).toFixed(0)]);
}
printTable(rows);
console.log(`median of ${runs} interleaved runs, Node ${process.version}`);
