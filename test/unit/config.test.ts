// Config: validated once, every problem reported together with file:line and
// the key path, then deep-frozen.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfigFile, parseConfig, type Config } from '../../src/config/config.ts';
import { RolegateError } from '../../src/errors.ts';

const VERIFIER = 'SCRAM-SHA-256$4096:OpeJRDItcrE6cUWF8lscEg==$fZc90lUKG79O6d4H5LqNboBow5zExy5/1IoKucTXW/w=:sAr4rhjX/zAHJv0Y7ieJ57/vvUtZ6zLGQbOiVC13+ko=';

let dir = '';
let file = '';
const ENV = { APP_READER_PASSWORD: 'reader-secret' };

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'rolegate-config-test-'));
  file = path.join(dir, 'rolegate.yaml');
  writeFileSync(path.join(dir, 'writer.secret'), 'writer-secret\n');
  writeFileSync(path.join(dir, 'two-newlines.secret'), 'pw\n\n');
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The RolegateError parseConfig throws; fails the test if it does not throw one. */
function problemsOf(text: string, env: NodeJS.ProcessEnv = ENV): { error: RolegateError; lines: string[] } {
  try {
    parseConfig(text, file, { env });
  } catch (err) {
    assert.ok(err instanceof RolegateError, `expected a RolegateError, got ${String(err)}`);
    assert.equal(err.code, 'RG_CONFIG_INVALID');
    assert.equal(err.sqlstate, 'F0000');
    const lines = err.message
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
    return { error: err, lines };
  }
  assert.fail('parseConfig accepted an invalid config');
}

/** The one problem line for keyPath; asserts file:line: keyPath: and returns the text after it. */
function problemAt(lines: readonly string[], line: number, keyPath: string): string {
  const prefix = `${file}:${line}: ${keyPath}: `;
  const found = lines.filter((l) => l.startsWith(prefix));
  assert.equal(found.length, 1, `one problem at ${prefix}\nall problems:\n${lines.join('\n')}`);
  return found[0]!.slice(prefix.length);
}

const FULL = `
listen:
  host: 0.0.0.0
  port: 7432
workers: 3
upstream:
  host: db.internal
  port: 5433
  connect_timeout_ms: 2500
  connect: eager
roles:
  app_reader: { password_env: APP_READER_PASSWORD }
  app_writer: { password_file: writer.secret }
  app_admin:  { password: "change-me" }
  app_trusted: { trust: true }
users:
  orders-svc:
    scram_verifier: "${VERIFIER}"
    role: app_writer
    database: app
  reporting:
    scram_verifier: "${VERIFIER}"
policy:
  dir: policies
  data_file: data/roles.json
  watch: false
time:
  zone: Europe/Berlin
  bucket_ms: 30000
proxy:
  env: prod
  instance: rolegate-7
admin:
  host: 127.0.0.2
  port: 9999
limits:
  max_message_bytes: 1048576
  startup_timeout_ms: 5000
  max_client_connections: 100
  parse_cache_entries: 0
  decision_cache_entries: 10
  worker_young_generation_mb: 24
passthrough_parameters: [application_name, TimeZone]
shutdown:
  drain_timeout_ms: 0
`;

describe('parseConfig: valid configs', () => {
  test('a full config: every value read, paths resolved against the config file, secrets resolved', () => {
    const c = parseConfig(FULL, file, { env: ENV });
    assert.equal(c.file, file);
    assert.deepEqual(c.listen, { host: '0.0.0.0', port: 7432 });
    assert.equal(c.workers, 3);
    assert.deepEqual(c.upstream, { host: 'db.internal', port: 5433, connectTimeoutMs: 2500, tls: { mode: 'disable', caFile: null, caPem: null, serverName: null }, connect: 'eager' });
    assert.deepEqual(c.limits, { maxMessageBytes: 1048576, maxStatementBytes: 1048576, maxBufferedBytes: 256 * 1024 * 1024, startupTimeoutMs: 5000, maxClientConnections: 100, parseCacheEntries: 0, decisionCacheEntries: 10, workerYoungGenerationMb: 24 });
    assert.deepEqual(c.roles, {
      app_reader: { password: 'reader-secret', source: 'env:APP_READER_PASSWORD' },
      app_writer: { password: 'writer-secret', source: `file:${path.join(dir, 'writer.secret')}` },
      app_admin: { password: 'change-me', source: 'config' },
      app_trusted: { password: null, source: 'trust' },
    });
    assert.deepEqual(c.users, {
      'orders-svc': { scramVerifier: VERIFIER, role: 'app_writer', database: 'app' },
      reporting: { scramVerifier: VERIFIER, role: null, database: null },
    });
    assert.deepEqual(c.policy, { dir: path.join(dir, 'policies'), dataFile: path.join(dir, 'data/roles.json'), opaPath: null, watch: false });
    assert.equal(c.time.zone, 'Europe/Berlin');
    assert.equal(c.time.bucketMs, 30000);
    assert.deepEqual(c.proxy, { env: 'prod', instance: 'rolegate-7' });
    assert.deepEqual(c.admin, { host: '127.0.0.2', port: 9999 });
    assert.deepEqual(c.passthroughParameters, ['application_name', 'TimeZone']);
    assert.deepEqual(c.shutdown, { drainTimeoutMs: 0 });
  });

  test('defaults: an empty file is a valid config', () => {
    for (const text of ['', '# only a comment\n', '{}']) {
      const c = parseConfig(text, null, { env: {} });
      assert.equal(c.file, null);
      assert.deepEqual(c.listen, { host: '127.0.0.1', port: 6432 });
      assert.equal(c.workers, Math.min(availableParallelism(), 127));
      assert.deepEqual(c.upstream, { host: '127.0.0.1', port: 5432, connectTimeoutMs: 5000, tls: { mode: 'disable', caFile: null, caPem: null, serverName: null }, connect: 'lazy' });
      assert.equal(c.tls, null);
      assert.deepEqual(c.auth, { cert: null, jwt: null });
      assert.equal(c.proxyProtocol, null);
      assert.deepEqual(c.limits, { maxMessageBytes: 64 * 1024 * 1024, maxStatementBytes: 1024 * 1024, maxBufferedBytes: 256 * 1024 * 1024, startupTimeoutMs: 10_000, maxClientConnections: 20_000, parseCacheEntries: 10_000, decisionCacheEntries: 50_000, workerYoungGenerationMb: 12 });
      assert.deepEqual(c.users, {});
      assert.deepEqual(c.roles, {});
      assert.equal(c.policy, null);
      assert.equal(c.time.zone, 'UTC');
      assert.equal(c.time.bucketMs, 60_000);
      assert.deepEqual(c.proxy, { env: 'dev', instance: 'rolegate' });
      assert.equal(c.admin, null);
      assert.deepEqual(c.shutdown, { drainTimeoutMs: 30_000 });
      assert.ok(c.passthroughParameters.includes('application_name'));
      assert.ok(!c.passthroughParameters.map((p) => p.toLowerCase()).includes('client_encoding'));
    }
  });

  test('null sections mean defaults; policy: with only dir gets watch on and no data file', () => {
    const c = parseConfig('listen:\nupstream: ~\npolicy:\n  dir: /etc/rolegate/policies\n', file, { env: {} });
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 6432 });
    assert.deepEqual(c.policy, { dir: '/etc/rolegate/policies', dataFile: null, opaPath: null, watch: true });
  });

  test('password_file: one trailing newline is dropped, not more', () => {
    const c = parseConfig('roles:\n  r: { password_file: two-newlines.secret }\n', file, { env: {} });
    assert.equal(c.roles['r']?.password, 'pw\n');
  });

  test('the example config in examples/ is valid (with its password variables set)', () => {
    const example = path.resolve(import.meta.dirname, '../../examples/rolegate.yaml');
    const c = loadConfigFile(example, { env: { APP_READER_PASSWORD: 'x', APP_WRITER_PASSWORD: 'y' } });
    assert.equal(c.roles['app_reader']?.source, 'env:APP_READER_PASSWORD');
  });

  test('the result is deep-frozen', () => {
    const c: Config = parseConfig(FULL, file, { env: ENV });
    const frozen = [c, c.listen, c.upstream, c.limits, c.users, c.users['orders-svc'], c.roles, c.roles['app_reader'], c.policy, c.time, c.proxy, c.admin, c.shutdown, c.passthroughParameters];
    for (const v of frozen) assert.ok(Object.isFrozen(v), JSON.stringify(v));
    assert.throws(() => {
      (c.listen as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (c.passthroughParameters as string[]).push('search_path');
    }, TypeError);
    assert.throws(() => {
      (c.roles as Record<string, unknown>)['evil'] = { password: 'x', source: 'config' };
    }, TypeError);
    // Defaults are frozen as well.
    assert.ok(Object.isFrozen(parseConfig('', null, { env: {} }).passthroughParameters));
  });
});

describe('parseConfig: every problem reported together', () => {
  test('five different mistakes → one RG_CONFIG_INVALID listing all five with file:line and key path', () => {
    const text = [
      'listen:', //                                   1
      '  port: 99999', //                             2  out of range
      'upstream:', //                                 3
      '  hots: db', //                                4  unknown key (typo)
      'roles:', //                                    5
      '  app_reader: { password_env: NOPE_UNSET }', // 6  env var not set
      'users:', //                                    7
      '  orders-svc:', //                             8
      '    scram_verifier: "md5abc"', //              9  not a SCRAM verifier
      '    role: app_reader', //                      10
      'time:', //                                     11
      '  zone: Mars/Olympus_Mons', //                 12 unknown zone
      '',
    ].join('\n');
    const { error, lines } = problemsOf(text);
    assert.match(error.message, /^invalid configuration \(5 problems\):\n/);
    assert.equal(lines.length, 5, lines.join('\n'));
    assert.match(problemAt(lines, 2, 'listen.port'), /must be an integer from 0 to 65535, got 99999/);
    assert.equal(problemAt(lines, 4, 'upstream.hots'), 'unknown key');
    assert.match(problemAt(lines, 6, 'roles.app_reader.password_env'), /environment variable NOPE_UNSET is not set/);
    assert.match(problemAt(lines, 9, 'users.orders-svc.scram_verifier'), /must be a SCRAM-SHA-256 verifier/);
    assert.match(problemAt(lines, 12, 'time.zone'), /unknown time zone "Mars\/Olympus_Mons"/);
  });

  test('one problem is reported in the singular', () => {
    const { error } = problemsOf('workers: 0\n');
    assert.match(error.message, /^invalid configuration \(1 problem\):\n {2}\S+:1: workers: must be an integer from 1 to 127, got 0$/);
  });

  test('unknown keys at every level are reported, each with its line', () => {
    const text = [
      'lisen: {}', //                           1
      'listen:', //                             2
      '  hostname: x', //                       3
      'roles:', //                              4
      '  r: { password: a, passwd: b }', //     5
      'users:', //                              6
      '  u:', //                                7
      `    scram_verifier: "${VERIFIER}"`, //   8
      '    roel: r', //                         9
      'policy:', //                             10
      '  dir: p', //                            11
      '  wacth: true', //                       12
      '',
    ].join('\n');
    const { lines } = problemsOf(text);
    assert.equal(problemAt(lines, 1, 'lisen'), 'unknown key');
    assert.equal(problemAt(lines, 3, 'listen.hostname'), 'unknown key');
    assert.equal(problemAt(lines, 5, 'roles.r.passwd'), 'unknown key');
    assert.equal(problemAt(lines, 9, 'users.u.roel'), 'unknown key');
    assert.equal(problemAt(lines, 12, 'policy.wacth'), 'unknown key');
    assert.equal(lines.length, 5, lines.join('\n'));
  });

  test('wrong types: string for int, int for string, string for bool, scalar for a section, list for names', () => {
    const text = ['listen:', '  port: "6432"', '  host: 5', 'policy:', '  dir: p', '  watch: "yes"', 'proxy: prod', 'users: [a, b]', ''].join('\n');
    const { lines } = problemsOf(text);
    assert.match(problemAt(lines, 2, 'listen.port'), /must be an integer/);
    assert.match(problemAt(lines, 3, 'listen.host'), /must be a non-empty string, got 5/);
    assert.match(problemAt(lines, 6, 'policy.watch'), /must be true or false, got "yes"/);
    assert.equal(problemAt(lines, 7, 'proxy'), 'must be a mapping');
    assert.equal(problemAt(lines, 8, 'users'), 'must be a mapping of names');
  });

  test('a config that is not a mapping at all', () => {
    const { lines } = problemsOf('- a\n- b\n');
    assert.deepEqual(lines, [`${file}:1: (top level): must be a mapping`]);
  });

  test('bad YAML syntax is reported with line:col and nothing else is validated', () => {
    const { error, lines } = problemsOf('listen:\n  host: [a\nport: 1\n');
    assert.match(error.message, /^invalid configuration:\n/);
    assert.equal(lines.length, 1);
    assert.ok(lines[0]!.startsWith(`${file}:3:1: `), lines[0]);
  });

  test('a duplicate key is a YAML error with its line:col', () => {
    const { lines } = problemsOf('workers: 1\nlisten: {}\nworkers: 2\n');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, new RegExp(`^${escape(file)}:3:1: Map keys must be unique`));
  });

  test('without a file name the label is <config>', () => {
    assert.throws(
      () => parseConfig('workers: x\n', null, { env: {} }),
      (err: unknown) => err instanceof RolegateError && err.message.includes('<config>:1: workers: must be an integer'),
    );
  });
});

describe('parseConfig: roles and users', () => {
  test('password_env naming an unset or empty variable', () => {
    const { lines } = problemsOf('roles:\n  a: { password_env: UNSET_VAR }\n  b: { password_env: EMPTY_VAR }\n', { EMPTY_VAR: '' });
    assert.match(problemAt(lines, 2, 'roles.a.password_env'), /UNSET_VAR is not set/);
    assert.match(problemAt(lines, 3, 'roles.b.password_env'), /EMPTY_VAR is not set/);
  });

  test('password_file that cannot be read names the resolved path', () => {
    const { lines } = problemsOf('roles:\n  w: { password_file: missing.secret }\n');
    const what = problemAt(lines, 2, 'roles.w.password_file');
    assert.ok(what.startsWith(`cannot read ${path.join(dir, 'missing.secret')}: `), what);
    assert.match(what, /ENOENT/);
  });

  test('a role needs exactly one credential source; the key path has no trailing dot and a line', () => {
    const { lines } = problemsOf('roles:\n  both:\n    password: a\n    password_env: B\n  none: {}\n');
    assert.match(problemAt(lines, 3, 'roles.both'), /needs exactly one of password, password_env, password_file, trust \(has password, password_env\)/);
    assert.match(problemAt(lines, 5, 'roles.none'), /\(has none\)/);
    assert.ok(lines.every((l) => !/roles\.\w+\.:/.test(l)), lines.join('\n'));
  });

  test('trust must be true when given', () => {
    const { lines } = problemsOf('roles:\n  r: { trust: false }\n');
    assert.equal(problemAt(lines, 2, 'roles.r.trust'), 'must be true when given');
  });

  test('bad scram_verifier: md5 hashes, plain passwords, missing parts', () => {
    for (const bad of ['md5d41d8cd98f00b204e9800998ecf8427e', 'hunter2', 'SCRAM-SHA-256$4096:c2FsdA==$abc', 'SCRAM-SHA-1$4096:c2FsdA==$a:b']) {
      const { lines } = problemsOf(`users:\n  u:\n    scram_verifier: "${bad}"\n    role: r\nroles:\n  r: { trust: true }\n`);
      assert.match(problemAt(lines, 3, 'users.u.scram_verifier'), /must be a SCRAM-SHA-256 verifier/, bad);
    }
  });

  test('a missing scram_verifier is reported at the line where the user mapping starts', () => {
    const { lines } = problemsOf('roles:\n  r: { trust: true }\nusers:\n  u:\n    role: r\n');
    assert.equal(problemAt(lines, 5, 'users.u.scram_verifier'), 'is required');
  });

  test('a user role without credentials under roles:', () => {
    const { lines } = problemsOf(`roles:\n  r: { trust: true }\nusers:\n  u:\n    scram_verifier: "${VERIFIER}"\n    role: ghost\n`);
    assert.equal(problemAt(lines, 6, 'users.u.role'), 'role "ghost" has no credentials under roles:');
  });

  test('without a policy every user needs a role', () => {
    const { lines } = problemsOf(`users:\n  u:\n    scram_verifier: "${VERIFIER}"\n`);
    // A missing key gets the line where its enclosing mapping starts.
    assert.equal(problemAt(lines, 3, 'users.u.role'), 'is required when no policy: section maps identities to roles');
    // With a policy, the role may be left out.
    assert.doesNotThrow(() => parseConfig(`policy: { dir: p }\nusers:\n  u:\n    scram_verifier: "${VERIFIER}"\n`, file, { env: {} }));
  });
});

describe('parseConfig: time, limits, passthrough_parameters', () => {
  test('unknown time zone', () => {
    for (const zone of ['Europe/Atlantis', 'GMT+25', 'not a zone']) {
      const { lines } = problemsOf(`time:\n  zone: "${zone}"\n`);
      assert.match(problemAt(lines, 2, 'time.zone'), /unknown time zone/, zone);
    }
    assert.equal(parseConfig('time: { zone: America/New_York }\n', file, { env: {} }).time.zone, 'America/New_York');
  });

  test('limits.max_statement_bytes: 1 MiB by default, at most 16 MiB (the policy\'s WebAssembly memory gives out beyond)', () => {
    assert.equal(parseConfig('limits: { max_statement_bytes: 16777216 }\n', file, { env: {} }).limits.maxStatementBytes, 16 * 1024 * 1024);
    const { lines } = problemsOf('limits:\n  max_statement_bytes: 33554432\n');
    assert.match(problemAt(lines, 2, 'limits.max_statement_bytes'), /from 1024 to 16777216, got 33554432/);
  });

  test('limits are bounded', () => {
    const { lines } = problemsOf('limits:\n  max_message_bytes: 10\n  startup_timeout_ms: 1.5\n  parse_cache_entries: -1\n');
    assert.match(problemAt(lines, 2, 'limits.max_message_bytes'), /from 1024 to 1073741824, got 10/);
    assert.match(problemAt(lines, 3, 'limits.startup_timeout_ms'), /got 1.5/);
    assert.match(problemAt(lines, 4, 'limits.parse_cache_entries'), /from 0 to/);
  });

  test('workers above 127 are refused (the worker id has 7 bits in the cancel key)', () => {
    const { lines } = problemsOf('workers: 128\n');
    assert.match(problemAt(lines, 1, 'workers'), /from 1 to 127/);
  });

  test('passthrough_parameters may not include pinned or decided parameters, in any case', () => {
    for (const name of ['client_encoding', 'Client_Encoding', 'standard_conforming_strings', 'role', 'session_authorization', 'user', 'database', 'options', 'replication']) {
      const { lines } = problemsOf(`passthrough_parameters: [application_name, ${name}]\n`);
      assert.equal(problemAt(lines, 1, 'passthrough_parameters'), `may not include ${name} (pinned or decided by rolegate)`);
    }
  });

  test('passthrough_parameters must be a list of parameter names', () => {
    for (const bad of ['application_name', '[application_name, 5]', '["a b"]', '["x;y"]', '[""]']) {
      const { lines } = problemsOf(`passthrough_parameters: ${bad}\n`);
      assert.equal(problemAt(lines, 1, 'passthrough_parameters'), 'must be a list of parameter names', bad);
    }
    assert.deepEqual(parseConfig('passthrough_parameters: []\n', file, { env: {} }).passthroughParameters, []);
  });
});

describe('parseConfig: guards', () => {
  test('default: no guard lifted', () => {
    assert.deepEqual(parseConfig('workers: 1\n', file, { env: {} }).guards, { allow: [] });
  });

  test('guards.allow names side doors; duplicates collapse', () => {
    const c = parseConfig('guards:\n  allow: [copy_program, server_files, copy_program]\n', file, { env: {} });
    assert.deepEqual(c.guards.allow, ['copy_program', 'server_files']);
  });

  test('the role and pinned-parameter guards cannot be lifted; unknown names list the known ones', () => {
    for (const name of ['role_change', 'pinned_parameter']) {
      const { lines } = problemsOf(`guards:\n  allow: [${name}]\n`);
      assert.match(problemAt(lines, 2, 'guards.allow'), new RegExp(`^"${name}" cannot be lifted`));
    }
    const { lines } = problemsOf('guards:\n  allow: [copy-program]\n');
    assert.equal(problemAt(lines, 2, 'guards.allow'), 'unknown guard "copy-program"; the guards that can be lifted are copy_program, copy_file, large_objects, server_files, remote_connections');
    const bad = problemsOf('guards:\n  allow: copy_program\n');
    assert.match(problemAt(bad.lines, 2, 'guards.allow'), /must be a list of guard names/);
    const unknownKey = problemsOf('guards:\n  lift: [copy_program]\n');
    assert.ok(unknownKey.lines.some((l) => l.includes('guards.lift')), unknownKey.lines.join('\n'));
  });
});

describe('loadConfigFile', () => {
  test('an unreadable file is RG_CONFIG_INVALID naming the file', () => {
    const missing = path.join(dir, 'nope.yaml');
    assert.throws(
      () => loadConfigFile(missing, { env: {} }),
      (err: unknown) => err instanceof RolegateError && err.code === 'RG_CONFIG_INVALID' && err.message.startsWith(`${missing}: cannot read config file:`),
    );
  });

  test('reads, validates and labels problems with the file name', () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'listen:\n  port: -1\n');
    assert.throws(
      () => loadConfigFile(bad, { env: {} }),
      (err: unknown) => err instanceof RolegateError && err.message.includes(`${bad}:2: listen.port: must be an integer`),
    );
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
