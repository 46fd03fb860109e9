// Prints the path of an OPA 1.22.3 binary, installing it into .tools/bin with
// `go install` when none is found (see src/policy/opa-cli.ts for the search order).
//   node scripts/ensure-opa.ts            → /path/to/opa
//   OPA=$(node scripts/ensure-opa.ts) && "$OPA" test policies

import { ensureOpa } from '../src/policy/opa-cli.ts';
import { RolegateError } from '../src/errors.ts';

try {
  const opaPath = await ensureOpa();
  process.stdout.write(`${opaPath}\n`);
} catch (thrown) {
  const message = thrown instanceof RolegateError ? `${thrown.code}: ${thrown.message}` : String(thrown);
  process.stderr.write(`ensure-opa: ${message}\n`);
  process.exitCode = 1;
}
