// Shadow mode on versus off, measured in one run (bench/lib/ab.ts): two
// rolegate instances in front of one throwaway PostgreSQL, identical but for
// policy.shadow — a copy of the shipped policy as the candidate, so every
// decision agrees and what is measured is the candidate's cost alone (its
// decision-cache hit per statement, its evaluation on a miss) — and pgbench
// cells interleaved round by round.
//
//   node bench/shadow-overhead.ts [--seconds 5] [--rounds 3] [--warmup 2]

import { cpSync } from 'node:fs';
import path from 'node:path';
import { SHIPPED_POLICY_DIR } from '../src/policy/build.ts';
import { runAb } from './lib/ab.ts';
import { numberArg } from './lib/args.ts';

await runAb({
  seconds: numberArg('--seconds', 5),
  rounds: numberArg('--rounds', 3),
  warmupSeconds: numberArg('--warmup', 2),
  variants: [
    { name: 'shadow off' },
    {
      name: 'shadow on',
      yaml: (dir) => {
        const candidate = path.join(dir, 'candidate');
        cpSync(SHIPPED_POLICY_DIR, candidate, { recursive: true });
        return `policy: { dir: ${JSON.stringify(SHIPPED_POLICY_DIR)}, shadow: { dir: ${JSON.stringify(candidate)} } }\n`;
      },
    },
  ],
});
