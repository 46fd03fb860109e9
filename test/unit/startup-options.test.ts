// The startup `options` parameter (libpq's PGOPTIONS: command-line switches,
// backslash escapes the next character) and the client address as the policy
// sees it (IPv4-mapped IPv6 becomes dotted IPv4).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { normaliseAddress } from '../../src/session/handshake.ts';
import { parseOptions } from '../../src/session/startup-options.ts';

describe('parseOptions', () => {
  const ok: Array<[string, Array<[string, string]>]> = [
    ['-c a=b', [['a', 'b']]],
    ['-ca=b', [['a', 'b']]],
    ['--a-b=c', [['a_b', 'c']]],
    ['-c search-path=x', [['search_path', 'x']]],
    ['-c application_name=my-app', [['application_name', 'my-app']]],
    ['-c rolegate.role=app_writer', [['rolegate.role', 'app_writer']]],
    ['-c a=b=c', [['a', 'b=c']]],
    ['-c a=', [['a', '']]],
    [
      '-c a=1 -cb=2 --c-d=3',
      [
        ['a', '1'],
        ['b', '2'],
        ['c_d', '3'],
      ],
    ],
    [
      '  -c\ta=1\t\t --b=2  ',
      [
        ['a', '1'],
        ['b', '2'],
      ],
    ],
    ['-c application_name=my\\ app', [['application_name', 'my app']]],
    ['-c application_name=a\\\\b', [['application_name', 'a\\b']]],
    ['-c a=\\-c\\ b=c', [['a', '-c b=c']]],
    ['-c a=x\\', [['a', 'x']]],
    ['-c TimeZone=Europe/Berlin', [['TimeZone', 'Europe/Berlin']]],
    ['-c a=ünïcode', [['a', 'ünïcode']]],
    ['', []],
    ['   ', []],
  ];
  for (const [input, expected] of ok) {
    test(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(parseOptions(input), expected);
    });
  }

  const errors: Array<[string, string]> = [
    ['-c', 'startup option "-c" needs name=value'],
    ['-c a=1 -c', 'startup option "-c" needs name=value'],
    ['-c =b', 'startup option "=b" needs name=value'],
    ['-c a', 'startup option "a" needs name=value'],
    ['--a', 'startup option "a" needs name=value'],
    ['-c a=1 b=2', 'startup option "b=2" is not allowed through rolegate (only -c name=value)'],
    ['-d 5', 'startup option "-d" is not allowed through rolegate (only -c name=value)'],
    ['-B 100', 'startup option "-B" is not allowed through rolegate (only -c name=value)'],
    ['foo', 'startup option "foo" is not allowed through rolegate (only -c name=value)'],
    ['-', 'startup option "-" is not allowed through rolegate (only -c name=value)'],
  ];
  for (const [input, message] of errors) {
    test(`${JSON.stringify(input)} → error`, () => {
      assert.equal(parseOptions(input), message);
    });
  }

  test('an escaped space does not split a word: "-c\\ a=b" is one switch word', () => {
    // The escaped space belongs to the word "-c a=b", so the name is " a".
    assert.deepEqual(parseOptions('-c\\ a=b'), [[' a', 'b']]);
  });

  test('property: -c name=value pairs with escaped spaces and backslashes round-trip', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9_.]{0,15}$/);
    const value = fc.string({ unit: 'grapheme', maxLength: 20 });
    const escape = (s: string): string => s.replace(/[\\ \t]/g, (c) => `\\${c}`);
    fc.assert(
      fc.property(fc.array(fc.tuple(name, value, fc.boolean()), { maxLength: 6 }), (pairs) => {
        const text = pairs.map(([n, v, long]) => (long ? `--${n}=${escape(v)}` : `-c ${n}=${escape(v)}`)).join(' ');
        assert.deepEqual(
          parseOptions(text),
          pairs.map(([n, v]) => [n, v]),
        );
      }),
      { numRuns: 300 },
    );
  });

  test('property: never throws; the result is pairs with non-empty names or a message', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('-', 'c', '=', ' ', '\\', '\t', 'a', '_', 'é'), maxLength: 30 }), (input) => {
        const r = parseOptions(input);
        if (typeof r === 'string') return;
        for (const [n] of r) {
          assert.ok(n.length > 0);
          assert.ok(!n.includes('-'), 'dashes in names become underscores');
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('normaliseAddress', () => {
  const cases: Array<[string | undefined, string]> = [
    ['::ffff:10.1.2.3', '10.1.2.3'],
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['10.1.2.3', '10.1.2.3'],
    ['::1', '::1'],
    ['2001:db8::1', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1%eth0'],
    ['::ffff:abcd', '::ffff:abcd'],
    ['', ''],
    [undefined, ''],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input) ?? 'undefined'} → ${JSON.stringify(expected)}`, () => {
      assert.equal(normaliseAddress(input), expected);
    });
  }
});
