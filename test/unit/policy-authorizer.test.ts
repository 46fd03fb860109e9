// PolicyAuthorizer: the shipped policy (really compiled by opa) behind the two
// caches, with an injected clock for the time bucket.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { buildPolicy, SHIPPED_POLICY_DIR } from '../../src/policy/build.ts';
import { compilePolicy, PolicyEngine } from '../../src/policy/engine.ts';
import { ensureOpa } from '../../src/policy/opa-cli.ts';
import { SessionSqlState, type SessionContext } from '../../src/decision/authorizer.ts';
import { TimeSource, type Clock } from '../../src/decision/clock.ts';
import { PolicyAuthorizer } from '../../src/decision/policy-authorizer.ts';
import { FactsCache } from '../../src/sql/facts-cache.ts';
import { initParser } from '../../src/sql/parser.ts';

let engine: PolicyEngine;
const clockAt = { ms: Date.parse('2026-11-27T12:00:10Z') };
const clock: Clock = { nowMs: () => clockAt.ms };

function session(role: string, name = 'orders-svc'): SessionContext {
  return {
    identity: { name, method: 'scram-sha-256', claims: {}, cert: null },
    client: { addr: '127.0.0.1', port: 5000, tls: false },
    proxy: { env: 'prod', instance: 'test' },
    role,
    database: 'app',
    cacheKey: `${name}|${role}`,
    keyMemo: { bucket: -1, keys: [] },
  };
}

function authorizer(keyByText: boolean, decisionCacheEntries = 100): PolicyAuthorizer {
  return new PolicyAuthorizer({ engine, facts: new FactsCache(100), time: new TimeSource('UTC', clock), bucketMs: 60_000, decisionCacheEntries, keyByText });
}

before(async () => {
  await initParser();
  const opaPath = await ensureOpa();
  engine = await PolicyEngine.create(await compilePolicy(await buildPolicy({ dir: SHIPPED_POLICY_DIR, opaPath })));
});

describe('PolicyAuthorizer caches', () => {
  test('keyed by facts: statements differing only in literals share one decision', () => {
    const a = authorizer(false);
    const s = session('app_reader');
    const state = new SessionSqlState();
    assert.equal(a.statements({ session: s, state, sql: 'SELECT * FROM orders WHERE id = 1', protocol: 'simple', inTransaction: false }).allow, true);
    assert.equal(a.statements({ session: s, state, sql: 'SELECT * FROM orders WHERE id = 2', protocol: 'simple', inTransaction: false }).allow, true);
    assert.equal(a.decisionCacheMisses, 1);
    assert.equal(a.decisionCacheHits, 1);
    // A different table is different facts: a new decision.
    assert.equal(a.statements({ session: s, state, sql: 'SELECT * FROM customers WHERE id = 2', protocol: 'simple', inTransaction: false }).allow, true);
    assert.equal(a.decisionCacheMisses, 2);
    // The deny of a write is not served from the read's entry.
    const v = a.statements({ session: s, state, sql: 'DELETE FROM orders WHERE id = 3', protocol: 'simple', inTransaction: false });
    assert.equal(v.allow, false);
    assert.equal(v.allow ? '' : v.rule, 'read-only-role');
  });

  test('keyed by text (a policy that reads statement.sql): each text is its own decision', () => {
    const a = authorizer(true);
    const s = session('app_reader');
    const state = new SessionSqlState();
    a.statements({ session: s, state, sql: 'SELECT * FROM orders WHERE id = 1', protocol: 'simple', inTransaction: false });
    a.statements({ session: s, state, sql: 'SELECT * FROM orders WHERE id = 2', protocol: 'simple', inTransaction: false });
    a.statements({ session: s, state, sql: 'SELECT * FROM orders WHERE id = 1', protocol: 'simple', inTransaction: false });
    assert.equal(a.decisionCacheMisses, 2);
    assert.equal(a.decisionCacheHits, 1);
  });

  test('the session context, transaction state and protocol are part of the key', () => {
    const a = authorizer(false);
    const state = new SessionSqlState();
    a.statements({ session: session('app_reader'), state, sql: 'SELECT 1', protocol: 'simple', inTransaction: false });
    a.statements({ session: session('app_writer'), state, sql: 'SELECT 1', protocol: 'simple', inTransaction: false });
    a.statements({ session: session('app_reader'), state, sql: 'SELECT 1', protocol: 'simple', inTransaction: true });
    a.statements({ session: session('app_reader'), state, sql: 'SELECT 1', protocol: 'extended', inTransaction: false });
    assert.equal(a.decisionCacheMisses, 4);
    a.statements({ session: session('app_reader'), state, sql: 'SELECT 1', protocol: 'simple', inTransaction: false });
    assert.equal(a.decisionCacheHits, 1);
  });

  test('a new time bucket re-decides: the maintenance window applies at its edge', () => {
    const a = authorizer(false);
    const s = session('app_writer');
    const state = new SessionSqlState();
    // The shipped window: Sunday 03:00–03:30 UTC, writes denied.
    clockAt.ms = Date.parse('2026-11-29T02:59:30Z');
    assert.equal(a.statements({ session: s, state, sql: "UPDATE orders SET total = 1 WHERE id = 1", protocol: 'simple', inTransaction: false }).allow, true);
    clockAt.ms = Date.parse('2026-11-29T03:00:00Z');
    const inside = a.statements({ session: s, state, sql: "UPDATE orders SET total = 1 WHERE id = 1", protocol: 'simple', inTransaction: false });
    assert.equal(inside.allow, false);
    assert.equal(inside.allow ? '' : inside.rule, 'maintenance-window');
    clockAt.ms = Date.parse('2026-11-29T03:30:00Z');
    assert.equal(a.statements({ session: s, state, sql: "UPDATE orders SET total = 1 WHERE id = 1", protocol: 'simple', inTransaction: false }).allow, true);
    clockAt.ms = Date.parse('2026-11-27T12:00:10Z');
  });

  test('the cache is bounded', () => {
    const a = authorizer(false, 5);
    const s = session('app_reader');
    const state = new SessionSqlState();
    for (let i = 0; i < 50; i++) a.statements({ session: s, state, sql: `SELECT c${i} FROM orders`, protocol: 'simple', inTransaction: false });
    assert.ok(a.decisionCacheSize <= 5, `size ${a.decisionCacheSize}`);
    assert.equal(a.decisionCacheMisses, 50);
  });

  test('EXECUTE is decided as the prepared statement; PREPARE and DEALLOCATE are tracked', () => {
    const a = authorizer(false);
    const s = session('app_writer');
    const state = new SessionSqlState();
    assert.equal(a.statements({ session: s, state, sql: 'PREPARE upd AS UPDATE orders SET total = $1', protocol: 'simple', inTransaction: false }).allow, true);
    assert.equal(state.statements.get('upd')?.sql, 'UPDATE orders SET total = $1');
    assert.equal(a.statements({ session: s, state, sql: 'EXECUTE upd(1)', protocol: 'simple', inTransaction: false }).allow, true);
    assert.equal(a.statements({ session: s, state, sql: 'DEALLOCATE upd', protocol: 'simple', inTransaction: false }).allow, true);
    const after = a.statements({ session: s, state, sql: 'EXECUTE upd(1)', protocol: 'simple', inTransaction: false });
    assert.equal(after.allow ? '' : after.rule, 'unknown-prepared-statement');
  });

  test('a parse error is a deny with the parser’s message and a 1-based position', () => {
    const a = authorizer(false);
    const v = a.statements({ session: session('app_reader'), state: new SessionSqlState(), sql: 'SELECT * FORM orders', protocol: 'simple', inTransaction: false });
    assert.equal(v.allow, false);
    if (!v.allow) {
      assert.equal(v.sqlstate, '42601');
      assert.equal(v.rule, 'parse-error');
      assert.equal(v.position, 10);
    }
  });
});

describe('which key a policy gets', () => {
  test('the shipped policy never reads statement.sql: decisions keyed by facts', async () => {
    const { mentionsSql } = await import('../../src/cli/policy-loader.ts');
    assert.equal(await mentionsSql(SHIPPED_POLICY_DIR), false);
  });

  test('a policy mentioning sql outside comments is keyed by text', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const { mentionsSql } = await import('../../src/cli/policy-loader.ts');
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-sql-'));
    writeFileSync(path.join(dir, 'a.rego'), 'package rolegate\n# the SQL text is ignored here, sql too\nx := 1\n');
    assert.equal(await mentionsSql(dir), false);
    writeFileSync(path.join(dir, 'b.rego'), 'package rolegate\ndeny if contains(input.statement["sql"], "pg_sleep")\n');
    assert.equal(await mentionsSql(dir), true);
  });

  test('a decision is a value: what one call returned is not changed by the next (another session\'s) call', () => {
    const a = authorizer(false);
    const state = new SessionSqlState();
    const reader = a.statements({ session: session('app_reader', 'reporting-svc'), state, sql: 'SELECT 1; DELETE FROM orders', protocol: 'simple', inTransaction: false });
    const snapshot = JSON.stringify({ allow: reader.allow, parsed: reader.parsed?.map((p) => p.facts.command), decisions: reader.decisions });
    assert.equal(reader.allow, false);
    assert.deepEqual(reader.parsed?.map((p) => p.facts.command), ['SELECT', 'DELETE']);
    assert.equal(reader.decisions.length, 2, 'one decision per statement decided, up to the deny');
    assert.equal(reader.decisions[1]?.allow, false);
    const other = a.statements({ session: session('app_writer'), state: new SessionSqlState(), sql: 'UPDATE orders SET total = 1', protocol: 'extended', inTransaction: true });
    assert.equal(other.allow, true);
    assert.equal(JSON.stringify({ allow: reader.allow, parsed: reader.parsed?.map((p) => p.facts.command), decisions: reader.decisions }), snapshot);
    assert.ok(reader.decisionUs >= 0 && Number.isInteger(reader.decisionUs));
  });
});
