// A/B two (or more) rolegate configurations in one run (bench/lib/ab.ts):
// interleaved pgbench cells through one rolegate per variant, same PostgreSQL.
// A variant is `name=<YAML appended to the demo config>`,
// `name=node:<node flags>` or `name=root:<another checkout>` (the same
// config run by another rolegate tree, e.g. `git worktree add /tmp/old HEAD~1`
// with node_modules linked); the first variant is the baseline.
//
//   node bench/ab.ts [--seconds 5] [--rounds 3] [--warmup 2] \
//     'default=' 'young8=limits: { worker_young_generation_mb: 8 }'
//   node bench/ab.ts 'before=root:/tmp/old' 'after='

import { runAb, type Variant } from './lib/ab.ts';
import { numberArg } from './lib/args.ts';

const specs = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !(all[i - 1] ?? '').startsWith('--'));
if (specs.length < 2) {
  process.stderr.write("usage: node bench/ab.ts [--seconds S] [--rounds R] [--warmup W] 'name=<yaml>' 'name=node:<flags>' 'name=root:<checkout>' ...\n");
  process.exit(2);
}
const variants: Variant[] = specs.map((spec) => {
  const eq = spec.indexOf('=');
  const name = eq < 0 ? spec : spec.slice(0, eq);
  const rest = eq < 0 ? '' : spec.slice(eq + 1);
  if (rest.startsWith('node:')) return { name, nodeArgs: rest.slice(5).split(' ').filter(Boolean) };
  if (rest.startsWith('root:')) return { name, root: rest.slice(5) };
  return { name, yaml: rest === '' ? '' : `${rest}\n` };
});
await runAb({ seconds: numberArg('--seconds', 5), rounds: numberArg('--rounds', 3), warmupSeconds: numberArg('--warmup', 2), variants });
