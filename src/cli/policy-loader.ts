// Builds the configured policy with the OPA CLI and compiles the wasm once in
// the main thread; the compiled module is posted to every worker.

import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { RolegateError } from '../errors.ts';
import type { PolicyBundle } from '../workers/messages.ts';

export async function loadPolicyBundle(config: Config, _log: Logger): Promise<PolicyBundle> {
  throw new RolegateError('RG_POLICY_LOAD', `policy in ${config.policy?.dir}: not wired yet`);
}
