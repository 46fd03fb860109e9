// The shipped example configs stay valid as the config schema evolves.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadConfigFile } from '../../src/config/config.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const env = { APP_READER_PASSWORD: 'r', APP_WRITER_PASSWORD: 'w' };

test('examples/rolegate.yaml is a valid config', () => {
  const config = loadConfigFile(path.join(REPO, 'examples/rolegate.yaml'), { env });
  assert.equal(config.listen.port, 6432);
  assert.equal(config.roles['app_reader']?.source, 'env:APP_READER_PASSWORD');
  assert.equal(config.users['orders-svc']?.role, 'app_writer');
  assert.equal(config.policy?.dir, path.join(REPO, 'policies'));
  assert.deepEqual(config.admin, { host: '127.0.0.1', port: 9187 });
});

test('examples/rolegate.docker.yaml is a valid config', () => {
  const config = loadConfigFile(path.join(REPO, 'examples/rolegate.docker.yaml'), { env });
  assert.equal(config.upstream.host, 'postgres');
  assert.deepEqual(Object.keys(config.users).sort(), ['billing-svc', 'orders-svc']);
});

test('a config without password_env variables set names each missing variable', () => {
  assert.throws(
    () => loadConfigFile(path.join(REPO, 'examples/rolegate.yaml'), { env: {} }),
    (err: Error & { code?: string }) => err.code === 'RG_CONFIG_INVALID' && /APP_READER_PASSWORD/.test(err.message) && /APP_WRITER_PASSWORD/.test(err.message),
  );
});
