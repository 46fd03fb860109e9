// Builds a worker's Authorizer: the static config mapping when no policy is
// configured, otherwise the Rego policy (module compiled once by the
// supervisor, instantiated here with this worker's own memory).

import type { Config } from '../config/config.ts';
import { PolicyEngine } from '../policy/engine.ts';
import type { FactsCache } from '../sql/facts-cache.ts';
import { initParser } from '../sql/parser.ts';
import type { Authorizer } from './authorizer.ts';
import type { TimeSource } from './clock.ts';
import { PolicyAuthorizer } from './policy-authorizer.ts';
import { StaticAuthorizer } from './static-authorizer.ts';
import type { PolicyBundle } from '../policy/engine.ts';

/** Where evaluation failures are reported (the worker's logger). */
export interface DecisionLog {
  warn(obj: object, msg: string): void;
}

export async function createAuthorizer(config: Config, policy: PolicyBundle | null, log: DecisionLog, time: TimeSource, facts: FactsCache): Promise<Authorizer> {
  if (policy === null) return new StaticAuthorizer(config);
  await initParser();
  const engine = await PolicyEngine.create(policy, {
    onError: (error, entrypoint) => log.warn({ code: error.code, entrypoint, err: error.message, revision: policy.revision }, 'policy evaluation failed'),
  });
  return new PolicyAuthorizer({ engine, facts, time, bucketMs: config.time.bucketMs, decisionCacheEntries: config.limits.decisionCacheEntries, keyByText: policy.readsStatementText });
}
