// Builds a worker's Authorizer: the static config mapping when no policy is
// configured, otherwise the Rego policy (module compiled once by the
// supervisor, instantiated here with this worker's own memory).

import type { Config } from '../config/config.ts';
import { PolicyEngine } from '../policy/engine.ts';
import type { FactsCache } from '../sql/facts-cache.ts';
import { initParser } from '../sql/parser.ts';
import type { Authorizer } from './authorizer.ts';
import type { TimeSource } from './clock.ts';
import { Guards } from './guards.ts';
import { PolicyAuthorizer } from './policy-authorizer.ts';
import { PolicyLog, type DecisionLog } from './policy-log.ts';
import { StaticAuthorizer } from './static-authorizer.ts';
import type { PolicyBundle } from '../policy/engine.ts';

/**
 * `time` and config.time.bucketMs go into the authorizer: a change to
 * time.* (reload) builds a new one, with an empty decision cache.
 * Evaluation failures and print() lines go to `log`, rate-limited: pass the
 * worker's one PolicyLog, so its budget outlives reloads (a plain logger gets
 * a budget of its own).
 */
export async function createAuthorizer(config: Config, policy: PolicyBundle | null, log: PolicyLog | DecisionLog, time: TimeSource, facts: FactsCache): Promise<Authorizer> {
  await initParser();
  const guards = new Guards(config.guards.allow);
  if (policy === null) return new StaticAuthorizer(config, facts, guards);
  const { revision } = policy;
  const policyLog = log instanceof PolicyLog ? log : new PolicyLog(log);
  const engine = await PolicyEngine.create(policy, {
    onError: (error, _entrypoint, call) => policyLog.evaluationFailed(error, call, revision),
    onPrint: (line, call) => policyLog.printed(line, call, revision),
  });
  return new PolicyAuthorizer({ engine, facts, time, bucketMs: config.time.bucketMs, decisionCacheEntries: config.limits.decisionCacheEntries, keyByText: policy.readsStatementText, guards });
}
