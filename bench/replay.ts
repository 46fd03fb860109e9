// Replayed decisions per second (rolegate replay): N synthetic OLTP audit
// records (pgbench TPC-B and select-only sessions of several services, a new
// literal in every statement, decided and written by the real authorizer and
// record formatter: test/helpers/audit-log.ts) replayed against the shipped
// policy inline (no pool) and on 1 and 2 piscina workers. A figure is the
// median over --rounds of decisions (connect + statement) per second of the
// replay itself (threads started and policies instantiated beforehand), the
// log read from the page cache.
//
//   node bench/replay.ts [--records 200000] [--rounds 3] [--input facts|full|off] [--chunk-kb 256] [--workers 0,1,2]

import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { policyFromDir, replayFiles } from '../src/cli/replay.ts';
import { SHIPPED_POLICY_DIR } from '../src/policy/build.ts';
import { PolicyEngine } from '../src/policy/engine.ts';
import { ensureOpa } from '../src/policy/opa-cli.ts';
import { initParser } from '../src/sql/parser.ts';
import { syntheticAuditLog } from '../test/helpers/audit-log.ts';
import { numberArg } from './lib/args.ts';
import { median, printTable } from './lib/micro.ts';

function argument(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}

const records = numberArg('--records', 200_000);
const rounds = numberArg('--rounds', 3);
const chunkBytes = numberArg('--chunk-kb', 256) * 1024;
const input = (argument('--input') ?? 'facts') as 'facts' | 'full' | 'off';
const variants = (argument('--workers') ?? '0,1,2').split(',').map(Number);

await initParser();
const policy = await policyFromDir(SHIPPED_POLICY_DIR, undefined, await ensureOpa());
const engine = await PolicyEngine.create(policy);

const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-bench-replay-'));
const file = path.join(dir, 'audit.log');
const t0 = performance.now();
const log = syntheticAuditLog({ statements: records, engine, input, seed: 42 });
writeFileSync(file, log.map((r) => r.line).join(''));
const bytes = statSync(file).size;
process.stderr.write(`generated ${log.length} records (${(bytes / 1e6).toFixed(1)} MB, input ${input}) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

const options = { draft: policy, baseline: null, zone: 'UTC', bucketMs: 60_000, proxy: { env: 'prod', instance: 'rolegate-bench' }, maxChanges: 1000, examplesPerGroup: 3, cacheEntries: 100_000 };
const rates = new Map<number, number[]>(variants.map((w) => [w, []]));
try {
  for (let round = 0; round < rounds; round++) {
    // Order alternates round by round so drift spreads over every variant alike.
    for (const workers of round % 2 === 0 ? variants : [...variants].reverse()) {
      const { tally, elapsedMs } = await replayFiles({ files: [file], options, workers, chunkBytes });
      const decided = tally.decided.connect + tally.decided.statement;
      if (decided !== log.length || tally.allowToDeny + tally.denyToAllow !== 0) throw new Error(`replay decided ${decided} of ${log.length}, ${tally.allowToDeny + tally.denyToAllow} changed`);
      rates.get(workers)?.push(decided / (elapsedMs / 1000));
      process.stderr.write(`round ${round + 1}: ${workers === 0 ? 'inline' : `${workers} worker(s)`} ${Math.round(decided / (elapsedMs / 1000))}/s\n`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
printTable([
  ['replay', 'decisions/s', 'µs per decision'],
  ...variants.map((w) => {
    const rate = median(rates.get(w) ?? []);
    return [w === 0 ? 'inline (no pool)' : `piscina, ${w} worker${w === 1 ? '' : 's'}`, `${Math.round(rate)}`, (1e6 / rate).toFixed(2)];
  }),
]);
console.log(`${log.length} records, input ${input}, ${chunkBytes / 1024} KiB per task (~${Math.round((chunkBytes / bytes) * log.length)} records), median of ${rounds} rounds; ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node ${process.version}`);
