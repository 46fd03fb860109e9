// Builds a worker's Authorizer: the static config mapping when no policy is
// configured, otherwise the Rego policy (module compiled once by the
// supervisor, instantiated here with this worker's own memory).

import type { Config } from '../config/config.ts';
import { PolicyEngine } from '../policy/engine.ts';
import type { FactsCache } from '../sql/facts-cache.ts';
import { initParser } from '../sql/parser.ts';
import type { Authorizer } from '../session/authorizer.ts';
import type { TimeSource } from '../session/clock.ts';
import { PolicyAuthorizer } from '../session/policy-authorizer.ts';
import type { SessionLog } from '../session/session.ts';
import { StaticAuthorizer } from '../session/static-authorizer.ts';
import type { PolicyBundle } from './messages.ts';

export async function createAuthorizer(config: Config, policy: PolicyBundle | null, log: SessionLog, time: TimeSource, facts: FactsCache): Promise<Authorizer> {
  if (policy === null) return new StaticAuthorizer(config);
  await initParser();
  const engine = await PolicyEngine.create(policy, {
    onError: (error, entrypoint) => log.warn({ code: error.code, entrypoint, err: error.message, revision: policy.revision }, 'policy evaluation failed'),
  });
  return new PolicyAuthorizer({ engine, facts, time, bucketMs: config.time.bucketMs, decisionCacheEntries: config.limits.decisionCacheEntries, keyByText: policy.readsStatementText });
}
