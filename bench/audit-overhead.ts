// Audit on versus off, measured in one run (bench/lib/ab.ts): two rolegate
// instances in front of one throwaway PostgreSQL — identical but for `audit:`
// (file sink, fail-closed, the default mode for files) — and pgbench cells
// interleaved round by round so the ratio is fair on a noisy machine.
//
//   node bench/audit-overhead.ts [--seconds 5] [--rounds 3] [--warmup 2]

import path from 'node:path';
import { runAb } from './lib/ab.ts';
import { numberArg } from './lib/args.ts';

await runAb({
  seconds: numberArg('--seconds', 5),
  rounds: numberArg('--rounds', 3),
  warmupSeconds: numberArg('--warmup', 2),
  variants: [
    { name: 'audit off' },
    { name: 'audit on', yaml: (dir) => `audit: { sink: file, file: { path: ${JSON.stringify(path.join(dir, 'audit.log'))}, max_bytes: 1073741824 } }\n` },
  ],
});
