// pgbench through rolegate with 2 workers: initialise, then 10 s at 8 clients
// in each query mode. Correctness only (0 failed transactions, every
// transaction accounted for) — throughput is measured in bench/, not here.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { adminQuery } from '../helpers/pg.ts';
import { demoConfig, DEMO_USERS, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';

const run = promisify(execFile);
const DURATION_S = Number(process.env['ROLEGATE_TEST_PGBENCH_SECONDS'] ?? 10);

describe('pgbench through rolegate (2 workers)', () => {
  let proxy: RunningProxy;
  let args: string[];
  const env = { ...process.env, PGPASSWORD: DEMO_USERS['migrator'] };

  before(async () => {
    await ensureDemoDatabase();
    await adminQuery('DROP DATABASE IF EXISTS bench');
    await adminQuery('CREATE DATABASE bench OWNER app_admin');
    // migrator may use any database here (bench), not only app.
    proxy = await startProxy(demoConfig({ workers: 2 }).replace(/(migrator: \{ scram_verifier: "[^"]+", role: app_admin), database: app \}/, '$1 }'));
    args = ['-h', '127.0.0.1', '-p', String(proxy.port), '-U', 'migrator'];
  });
  after(async () => {
    await proxy?.stop();
  });

  test('pgbench -i creates and loads the tables through the proxy', async () => {
    const { stderr } = await run('pgbench', ['-i', '-s', '1', ...args, 'bench'], { env });
    assert.match(stderr, /done in/);
    const rows = await adminQuery<{ c: string }>('SELECT count(*) AS c FROM pgbench_accounts', 'bench');
    assert.equal(rows[0]?.c, '100000');
  });

  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    test(`pgbench -M ${mode} -c 8 -T ${DURATION_S}: no failed transactions`, async () => {
      const before = await adminQuery<{ c: string }>('SELECT count(*) AS c FROM pgbench_history', 'bench');
      const { stdout } = await run('pgbench', ['-M', mode, '-c', '8', '-j', '2', '-T', String(DURATION_S), '-n', ...args, 'bench'], { env, timeout: (DURATION_S + 60) * 1000 });
      const processed = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1]);
      const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1]);
      assert.equal(failed, 0, stdout);
      assert.ok(processed > 0, stdout);
      // Every TPC-B transaction inserts one history row: all of them reached the database.
      const after = await adminQuery<{ c: string }>('SELECT count(*) AS c FROM pgbench_history', 'bench');
      assert.equal(Number(after[0]?.c) - Number(before[0]?.c), processed);
    });
  }
});
