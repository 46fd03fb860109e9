// The policy inputs (docs/policy.md, "Connect input" and "Statement input"):
// the connect input a session builds once, the SessionContext its statement
// decisions start from after an allow, and each statement's input. The proxy
// (session.ts, policy-authorizer.ts) and `rolegate explain` (cli/explain.ts)
// both build them here, so what explain shows is what the proxy evaluates.

import type { ClientInput, ConnectInput, IdentityInput, ProxyInput, StatementInput, TimeInput } from '../policy/contract.ts';
import type { StatementFacts } from '../sql/statement-facts.ts';
import type { SessionContext, StatementProtocol } from './authorizer.ts';

/** The connect entry point's input. */
export function connectInput(identity: IdentityInput, client: ClientInput, request: ConnectInput['request'], time: TimeInput, proxy: ProxyInput): ConnectInput {
  return { identity, client, request, time, proxy };
}

/** What the session's statement decisions start from, once the connect decision chose `role` and `database`. */
export function sessionContext(input: ConnectInput, role: string, database: string): SessionContext {
  const { identity, client } = input;
  return {
    identity,
    client,
    proxy: input.proxy,
    role,
    database,
    // Everything of input a statement decision may depend on, except time and
    // the statement (docs/policy.md: decisions must not depend on client.port).
    cacheKey: [identity.method, identity.name, JSON.stringify(identity.claims), identity.cert?.fingerprint ?? '', role, database, client.addr, client.tls ? 'tls' : 'plain'].join('\u0001'),
    keyMemo: { bucket: -1, keys: [] },
  };
}

/** The statement entry point's input for one statement's facts (built on every decision-cache miss). */
export function statementInput(session: SessionContext, facts: StatementFacts, protocol: StatementProtocol, inTransaction: boolean, time: TimeInput): StatementInput {
  return {
    identity: session.identity,
    client: session.client,
    time,
    proxy: session.proxy,
    session: { role: session.role, database: session.database, in_transaction: inTransaction },
    statement: { ...facts, protocol },
  };
}
