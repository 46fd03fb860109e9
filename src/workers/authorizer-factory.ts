// Builds a worker's Authorizer: the static config mapping when no policy is
// configured, otherwise the Rego policy (compiled module posted by the supervisor).

import type { Config } from '../config/config.ts';
import type { Authorizer } from '../session/authorizer.ts';
import type { SessionLog } from '../session/session.ts';
import { StaticAuthorizer } from '../session/static-authorizer.ts';
import type { PolicyBundle } from './messages.ts';

export async function createAuthorizer(config: Config, policy: PolicyBundle | null, _log: SessionLog): Promise<Authorizer> {
  if (policy === null) return new StaticAuthorizer(config);
  throw new Error('policy authorizer not available yet');
}
