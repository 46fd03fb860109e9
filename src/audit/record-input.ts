// The policy input a record carries (audit.input), as line-safe JSON text
// built from parts: what a session's inputs share is serialised once per
// session, a statement's facts once per facts object (the facts cache shares
// them between texts and sessions), the time once per millisecond. A record
// then costs a short concatenation, not a JSON.stringify of an ~1 KB
// document. The text equals JSON.stringify of the input (plus the line-safety
// escapes): test/unit/audit-input.test.ts checks it against the inputs the
// authorizer builds.
//
// facts: the input without what the record's own fields hold — identity.name
//        and .method (identity), client.addr and .port (client), session.role
//        and .database (role, database), statement.sql (sql) and
//        .protocol (protocol). Replay puts the two together again.
// full:  the whole input document, statement.sql cut to max_sql_bytes.

import type { ClientInput, ConnectInput, IdentityInput, ProxyInput, TimeInput } from '../policy/contract.ts';
import { factsTemplate } from '../sql/facts-cache.ts';
import type { StatementFacts } from '../sql/statement-facts.ts';
import { RecordInput, safeJson, str, utf8PrefixLength } from './record.ts';

export type RecordedInputMode = 'facts' | 'full';

/** The connect record's input: once per session, so serialised whole. */
export function connectRecordInput(mode: RecordedInputMode, input: ConnectInput): RecordInput {
  if (mode === 'full') return new RecordInput(safeJson(input));
  const { identity, client, ...rest } = input;
  return new RecordInput(safeJson({ identity: identityRest(identity), client: clientRest(client), ...rest }));
}

/** identity without name and method (the record's `identity`). */
function identityRest(identity: IdentityInput): Omit<IdentityInput, 'name' | 'method'> {
  const { name: _name, method: _method, ...rest } = identity;
  return rest;
}

/** client without addr and port (the record's `client`). */
function clientRest(client: ClientInput): Omit<ClientInput, 'addr' | 'port'> {
  const { addr: _addr, port: _port, ...rest } = client;
  return rest;
}

/** A facts object's members without `sql`, as `"command":…,"parameter":…` (no braces). */
const FACTS_BODY = new WeakMap<StatementFacts, string>();

export function factsBody(facts: StatementFacts): string {
  // Facts derived from a text's shape share everything but `sql` with their template.
  const template = factsTemplate(facts);
  let body = FACTS_BODY.get(template);
  if (body === undefined) {
    const { sql: _sql, ...rest } = template;
    body = safeJson(rest).slice(1, -1);
    FACTS_BODY.set(template, body);
  }
  return body;
}

/** input.time as JSON. */
export function timeJson(time: TimeInput): string {
  return safeJson(time);
}

/** What one session's statement inputs share, serialised once; build() adds a statement's own parts. */
export class StatementInputParts {
  readonly mode: RecordedInputMode;
  private readonly maxSqlBytes: number;
  /** `{"identity":…,"client":…,"time":` */
  private readonly head: string;
  /** `,"proxy":…,"session":{…,"in_transaction":` */
  private readonly mid: string;

  constructor(mode: RecordedInputMode, session: { identity: IdentityInput; client: ClientInput; proxy: ProxyInput; role: string; database: string }, maxSqlBytes: number) {
    this.mode = mode;
    this.maxSqlBytes = maxSqlBytes;
    if (mode === 'full') {
      this.head = `{"identity":${safeJson(session.identity)},"client":${safeJson(session.client)},"time":`;
      this.mid = `,"proxy":${safeJson(session.proxy)},"session":{"role":${str(session.role)},"database":${str(session.database)},"in_transaction":`;
    } else {
      this.head = `{"identity":${safeJson(identityRest(session.identity))},"client":${safeJson(clientRest(session.client))},"time":`;
      this.mid = `,"proxy":${safeJson(session.proxy)},"session":{"in_transaction":`;
    }
    // Flattened once (a concatenation stays a tree of parts until read whole).
    Buffer.byteLength(this.head);
    Buffer.byteLength(this.mid);
  }

  /** One statement decision's input; `time` is timeJson() of input.time. */
  build(facts: StatementFacts, protocol: 'simple' | 'extended', inTransaction: boolean, time: string): RecordInput {
    const body = factsBody(facts);
    let statement: string;
    if (this.mode === 'full') {
      const sql = facts.sql;
      const cut = utf8PrefixLength(sql, this.maxSqlBytes);
      statement = `{"sql":${str(cut < sql.length ? sql.slice(0, cut) : sql)}${body === '' ? '' : `,${body}`},"protocol":"${protocol}"}`;
    } else {
      statement = `{${body}}`;
    }
    return new RecordInput(`${this.head}${time}${this.mid}${inTransaction ? 'true' : 'false'}},"statement":${statement}}`);
  }
}
