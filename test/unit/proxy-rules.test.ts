// rolegate's own refusal rules: one table, every id documented for readers of
// the audit log, and the wording clients have always been given.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { invalidText, parseErrorDenial, PROXY_RULES, proxyDenial } from '../../src/decision/proxy-rules.ts';
import { ERRORS } from '../../src/errors.ts';

describe('proxy rules', () => {
  test('every rule id is documented in docs/audit.md', () => {
    const doc = readFileSync(new URL('../../docs/audit.md', import.meta.url), 'utf8');
    for (const id of Object.keys(PROXY_RULES)) assert.ok(doc.includes(`\`${id}\``), `docs/audit.md names ${id}`);
  });

  test('denials carry the table\'s SQLSTATE and the rule id', () => {
    for (const id of Object.keys(PROXY_RULES) as Array<keyof typeof PROXY_RULES>) {
      const d = proxyDenial(id, 'x');
      assert.equal(d.allow, false);
      assert.equal(d.rule, id);
      assert.equal(d.sqlstate, PROXY_RULES[id].sqlstate);
      assert.ok(d.message.length > 0 && d.reason.length > 0);
    }
  });

  test('the client wording', () => {
    assert.deepEqual(proxyDenial('unknown-prepared-statement', 'p1'), {
      allow: false,
      sqlstate: '42501',
      rule: 'unknown-prepared-statement',
      reason: 'prepared statement "p1" was not prepared through rolegate in this session',
      message: 'permission denied by rolegate rule "unknown-prepared-statement": prepared statement "p1" was not prepared through rolegate in this session',
    });
    assert.equal(proxyDenial('prepared-statement-limit', '10000').message, 'too many prepared statements in this session (limit 10000)');
    assert.equal(proxyDenial('prepared-statement-limit', '10000').sqlstate, '54000');
    assert.equal(proxyDenial('function-call-message').message, ERRORS.RG_FUNCTION_CALL_REFUSED.message);
    assert.equal(proxyDenial('audit-unavailable').sqlstate, ERRORS.RG_AUDIT_UNAVAILABLE.sqlstate);
    assert.deepEqual(invalidText('RG_NUL_IN_TEXT'), { allow: false, sqlstate: '22021', rule: 'invalid-text', reason: ERRORS.RG_NUL_IN_TEXT.message, message: ERRORS.RG_NUL_IN_TEXT.message });
  });

  test('parse errors: SQLSTATE by the parser\'s code, the parser\'s message, a position when it gave one', () => {
    assert.deepEqual(parseErrorDenial('RG_PARSE_ERROR', 'syntax error at or near "FORM"', 10), {
      allow: false,
      sqlstate: '42601',
      rule: 'parse-error',
      reason: 'the statement could not be parsed: syntax error at or near "FORM"',
      message: 'syntax error at or near "FORM"',
      position: 10,
    });
    assert.equal(parseErrorDenial('RG_INVALID_UTF8', 'bad', null).sqlstate, '22021');
    assert.equal(parseErrorDenial('RG_INTERNAL', 'parser failed', null).sqlstate, '42501');
    assert.equal('position' in parseErrorDenial('RG_PARSE_ERROR', 'x', null), false);
  });
});
