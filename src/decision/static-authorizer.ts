// Identity → role mapping straight from the config's users: section, used when
// no policy: section is configured. Statements are not restricted.

import type { Config } from '../config/config.ts';
import type { ConnectDecision, ConnectInput } from '../policy/contract.ts';
import { ALLOW, undecided, type Authorizer, type StatementResult } from './authorizer.ts';

/** Statements are not restricted: one shared answer. */
const ALLOWED: StatementResult = Object.freeze(undecided(ALLOW));

export class StaticAuthorizer implements Authorizer {
  readonly revision = 'static';
  readonly enforcesStatements = false;
  readonly parseCacheHits = 0;
  readonly parseCacheMisses = 0;
  readonly decisionCacheHits = 0;
  readonly decisionCacheMisses = 0;
  private readonly config: Config;

  constructor(config: Config) {
    this.config = config;
  }

  connect(input: ConnectInput): ConnectDecision {
    const user = this.config.users[input.identity.name];
    if (user === undefined || user.role === null) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `no role mapped for identity "${input.identity.name}"` };
    }
    const requested = input.request.role;
    if (requested !== null && requested !== user.role) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `identity "${input.identity.name}" may not use role "${requested}"` };
    }
    const database = user.database ?? input.request.database;
    if (user.database !== null && input.request.database !== user.database && input.request.database !== input.identity.name) {
      return { allow: false, role: null, database: null, rule: 'static-mapping', reason: `identity "${input.identity.name}" may not use database "${input.request.database}"` };
    }
    return { allow: true, role: user.role, database, rule: 'static-mapping', reason: 'mapped by config users:' };
  }

  statements(): StatementResult {
    return ALLOWED;
  }

  preparedStatement(): StatementResult {
    return ALLOWED;
  }
}
