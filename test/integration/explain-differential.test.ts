// `rolegate explain` decides as the proxy does: for every statement of the
// repository's SQL corpora (test/helpers/statement-corpus.ts) and several
// identities, the live proxy's answer and explain's (its in-process API, the
// same policy, the same instant) must be the same decision — and for a
// denial the same rule, SQLSTATE, message, detail and position.
//
// The proxy is asked with Parse + Sync only: the decision is made at Parse
// (extended query protocol) and nothing runs — an allowed Parse is answered by
// the server (ParseComplete, or its own error such as 42P01 for a table that
// is not there); a denied one by rolegate's ErrorResponse naming the rule in
// its detail. Each identity's statements go through one connection in corpus
// order, and explain keeps one session state per identity in the same order,
// so a PREPARE earlier in the corpus is known to an EXECUTE later, on both sides.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ScramClientExchange } from '../../src/auth/scram.ts';
import { parseConfig } from '../../src/config/config.ts';
import { SessionSqlState } from '../../src/decision/authorizer.ts';
import { Explainer, type ExplainRequest } from '../../src/cli/explain.ts';
import { initParser } from '../../src/sql/parser.ts';
import { demoConfig, DEMO_USERS, ensureDemoDatabase, type DemoUser } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { errorFields, message, parse, RawClient, startupPacket, sync, type Message } from '../helpers/raw-client.ts';
import { corpusStatements } from '../helpers/statement-corpus.ts';

/** A Wednesday noon: far from the shipped maintenance window (Sunday 03:00–03:30). */
const FIXED = '2026-11-25T12:00:00Z';
const FIXED_MS = Date.parse(FIXED);

interface Login {
  label: string;
  user: DemoUser;
  database: string;
  role: string | null;
}

const SESSIONS: readonly Login[] = [
  { label: 'reporting-svc (app_reader)', user: 'reporting-svc', database: 'app', role: null },
  { label: 'orders-svc (default role app_reader)', user: 'orders-svc', database: 'app', role: null },
  { label: 'orders-svc as app_writer', user: 'orders-svc', database: 'app', role: 'app_writer' },
  { label: 'migrator (app_admin)', user: 'migrator', database: 'app', role: null },
];

/** Logins the shipped policy refuses. */
const REFUSED: readonly Login[] = [
  { label: 'reporting-svc asking for app_admin', user: 'reporting-svc', database: 'app', role: 'app_admin' },
  { label: 'orders-svc to a database it is not given', user: 'orders-svc', database: 'postgres', role: null },
];

/** What a client was told about one text. */
interface Answer {
  allow: boolean;
  sqlstate?: string | undefined;
  message?: string | undefined;
  detail?: string | undefined;
  position?: string | undefined;
}

/** rolegate's refusals name their rule in the detail; the server's own errors do not. */
function answerOf(messages: Message[]): Answer {
  const error = messages.find((m) => m.type === 'E');
  if (error === undefined) return { allow: true };
  const f = errorFields(error);
  const detail = f.get('D');
  if (detail === undefined || !detail.startsWith('rule: ')) return { allow: true };
  return { allow: false, sqlstate: f.get('C'), message: f.get('M'), detail, position: f.get('P') };
}

function startupOptions(login: Login): Record<string, string> {
  return login.role === null ? {} : { options: `-c rolegate.role=${login.role}` };
}

function request(login: Login, client: RawClient | null, sql: string | null): ExplainRequest {
  return {
    identity: { name: login.user, method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '127.0.0.1', port: client?.socket.localPort ?? 0, tls: false },
    request: { database: login.database, role: login.role, application_name: null },
    timeMs: FIXED_MS,
    sql,
    protocol: 'extended',
    inTransaction: false,
  };
}

/** Startup and SCRAM up to AuthenticationOk (RawClient.login goes on to ReadyForQuery). */
async function authenticate(c: RawClient, login: Login): Promise<void> {
  c.write(startupPacket({ user: login.user, database: login.database, ...startupOptions(login) }));
  const sasl = await c.read();
  assert.ok(sasl?.type === 'R' && sasl.body.readInt32BE(0) === 10, 'AuthenticationSASL');
  const scram = new ScramClientExchange(DEMO_USERS[login.user]);
  const first = scram.clientFirst();
  const length = Buffer.alloc(4);
  length.writeInt32BE(first.data.length);
  c.write(message('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), length, first.data])));
  const cont = await c.read();
  assert.ok(cont?.type === 'R' && cont.body.readInt32BE(0) === 11, 'AuthenticationSASLContinue');
  c.write(message('p', scram.handleServerFirst(cont.body.subarray(4))));
  const fin = await c.read();
  assert.ok(fin?.type === 'R' && fin.body.readInt32BE(0) === 12, 'AuthenticationSASLFinal');
  scram.verifyServerFinal(fin.body.subarray(4));
  const ok = await c.read();
  assert.ok(ok?.type === 'R' && ok.body.readInt32BE(0) === 0, 'AuthenticationOk');
}

/** Parse + Sync for each text, pipelined in batches; one answer per text, in order. */
async function proxyAnswers(client: RawClient, texts: readonly string[]): Promise<Answer[]> {
  const out: Answer[] = [];
  // Fewer than the 64 denials the relay keeps pending at once (MAX_PENDING_DENIALS in
  // session/relay.ts): past that, the oldest in flight lose their rewrite.
  const BATCH = 50;
  for (let i = 0; i < texts.length; i += BATCH) {
    const batch = texts.slice(i, i + BATCH);
    client.write(Buffer.concat(batch.flatMap((sql) => [parse('', sql), sync()])));
    for (let j = 0; j < batch.length; j++) out.push(answerOf(await client.readUntil('Z', 20_000)));
  }
  return out;
}

describe('explain decides as the proxy', () => {
  let proxy: RunningProxy;
  let explainer: Explainer;
  let corpus: string[];
  const config = demoConfig({ withPolicy: true, extra: `time: { fixed: "${FIXED}" }\n` });

  before(async () => {
    await initParser();
    corpus = corpusStatements();
    await ensureDemoDatabase();
    [proxy, explainer] = await Promise.all([startProxy(config), Explainer.create(parseConfig(config, null))]);
  });
  after(async () => {
    await proxy?.stop();
  });

  test('the corpus holds at least 1 000 distinct statements', () => {
    assert.ok(corpus.length >= 1000, `only ${corpus.length} statements`);
    assert.equal(new Set(corpus).size, corpus.length);
  });

  test('the proxy and explain build the same policy', async () => {
    const c = await RawClient.connect(proxy.port);
    try {
      await c.login('reporting-svc', DEMO_USERS['reporting-svc'], 'app');
      c.write(Buffer.concat([parse('', 'DELETE FROM orders'), sync()]));
      const answer = answerOf(await c.readUntil('Z'));
      assert.equal(answer.detail, `rule: read-only-role; policy revision: ${explainer.revision}`);
    } finally {
      c.end();
    }
  });

  test('every statement × identity: the same decision, rule, SQLSTATE, message, detail and position', async () => {
    const mismatches: string[] = [];
    const tally = { allow: 0, deny: 0, rules: new Set<string>() };
    await Promise.all(
      SESSIONS.map(async (login) => {
        const client = await RawClient.connect(proxy.port);
        try {
          await client.login(login.user, DEMO_USERS[login.user], login.database, startupOptions(login));
          // The connect decision too: the role the proxy chose is the one explain chose.
          const connected = explainer.explain(request(login, client, null));
          assert.ok(connected.allowed, `${login.label}: explain refuses the login the proxy accepted`);
          const answers = await proxyAnswers(client, corpus);
          const state = new SessionSqlState();
          corpus.forEach((sql, i) => {
            const got = answers[i] as Answer;
            const e = explainer.explain(request(login, client, sql), state);
            const want: Answer = e.allowed
              ? { allow: true }
              : { allow: false, sqlstate: e.client_error?.sqlstate, message: e.client_error?.message, detail: e.client_error?.detail, position: e.client_error?.position?.toString() };
            if (got.allow) tally.allow++;
            else {
              tally.deny++;
              tally.rules.add(got.detail ?? '');
            }
            try {
              assert.deepEqual(got, want);
            } catch {
              mismatches.push(`${login.label} | ${JSON.stringify(sql)}\n    proxy:   ${JSON.stringify(got)}\n    explain: ${JSON.stringify(want)}`);
            }
          });
        } finally {
          client.end();
        }
      }),
    );
    assert.deepEqual(mismatches.slice(0, 20), [], `${mismatches.length} of ${corpus.length * SESSIONS.length} decisions differ`);
    // A comparison of nothing would pass too: both answers must be well represented.
    assert.ok(tally.allow >= 1000 && tally.deny >= 1000, `allowed ${tally.allow}, denied ${tally.deny}`);
    assert.ok(tally.rules.size >= 10, `only ${tally.rules.size} distinct denial rules: ${[...tally.rules].join(', ')}`);
  });

  test('refused logins: the same connect rule and message', async () => {
    for (const login of REFUSED) {
      const e = explainer.explain(request(login, null, null));
      assert.equal(e.allowed, false, login.label);
      const c = await RawClient.connect(proxy.port);
      try {
        await authenticate(c, login);
        // The policy decides after authentication: its refusal is the next message.
        const fatal = await c.read();
        assert.ok(fatal?.type === 'E', `${login.label}: expected an ErrorResponse, got ${fatal?.type ?? 'a closed connection'}`);
        const f = errorFields(fatal);
        assert.deepEqual(
          { severity: f.get('S'), sqlstate: f.get('C'), message: f.get('M'), detail: f.get('D') },
          { severity: e.client_error?.severity, sqlstate: e.client_error?.sqlstate, message: e.client_error?.message, detail: e.client_error?.detail },
          login.label,
        );
      } finally {
        c.end();
      }
    }
  });
});
