// The library's extension point through a running rolegate in front of a real
// PostgreSQL, with a real client: a service narrowed to some tables and to
// write windows by data alone, then a new concern added as a new hook file and
// a SIGHUP. Every denial is checked on the database side too.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { adminQuery } from '../helpers/pg.ts';
import { connect, demoConfig, deniedWith, ensureDemoDatabase } from '../helpers/fixture.ts';
import { startProxy, type RunningProxy } from '../helpers/proxy.ts';
import { editJson, policyCopy, reload, withPolicyDir } from '../helpers/security.ts';

async function value(sql: string): Promise<string | undefined> {
  const rows = await adminQuery<{ v: string }>(sql, 'app');
  return rows[0]?.v;
}

const NO_DELETE_HOOK = `package rolegate.hooks

deny_statement contains {"rule": "no-delete-ext", "reason": "rows of ext_orders are never deleted", "priority": 5} if {
	input.statement.command == "DELETE"
	some table in input.statement.tables
	table.name == "ext_orders"
}
`;

describe('table lists, write windows and hooks through rolegate', () => {
  let proxy: RunningProxy;
  let dir: string;
  before(async () => {
    await ensureDemoDatabase();
    // PostgreSQL's own grants let app_writer do everything below: only rolegate refuses.
    await adminQuery(
      `CREATE TABLE IF NOT EXISTS ext_orders (id int PRIMARY KEY, v text);
       CREATE TABLE IF NOT EXISTS ext_notes (id int PRIMARY KEY, v text);
       CREATE TABLE IF NOT EXISTS ext_secret (id int PRIMARY KEY, v text);
       GRANT SELECT, INSERT, UPDATE, DELETE ON ext_orders, ext_notes, ext_secret TO app_writer;
       TRUNCATE ext_orders, ext_notes, ext_secret;
       INSERT INTO ext_orders VALUES (1, 'one'); INSERT INTO ext_notes VALUES (1, 'note'); INSERT INTO ext_secret VALUES (1, 'secret');`,
      'app',
    );
    dir = policyCopy();
    editJson(path.join(dir, 'data.json'), (data) => {
      data.services['orders-svc'].tables = { allow: ['public.ext_orders', 'public.ext_notes'], write: ['public.ext_orders'] };
      data.services['orders-svc'].write_windows = [{ name: 'always', start: '00:00', end: '24:00' }];
    });
    proxy = await startProxy(withPolicyDir(demoConfig({ withPolicy: true, workers: 1 }), dir));
  });
  after(async () => {
    await proxy?.stop();
  });

  test('data alone narrows a service to its tables; a hook file added and reloaded denies with its own rule', async () => {
    const c = await connect(proxy.port, 'orders-svc', { options: '-c rolegate.role=app_writer' });
    try {
      assert.equal((await c.query('SELECT v FROM ext_orders WHERE id = 1')).rows[0].v, 'one');
      assert.equal((await c.query('SELECT o.v FROM public.ext_orders o JOIN ext_notes n USING (id)')).rowCount, 1);
      assert.equal((await c.query({ text: 'UPDATE ext_orders SET v = $1 WHERE id = 1', values: ['updated'] })).rowCount, 1);

      const denied = await deniedWith(c.query('SELECT v FROM ext_secret'), 'service-table-not-allowed');
      assert.match(denied.message, /orders-svc may not use table ext_secret/);
      await deniedWith(c.query({ text: 'SELECT o.v FROM ext_orders o JOIN ext_secret s USING (id) WHERE o.id = $1', values: [1] }), 'service-table-not-allowed');
      await deniedWith(c.query("UPDATE ext_notes SET v = 'changed'"), 'service-table-not-writable');
      await deniedWith(c.query("WITH d AS (UPDATE ext_notes SET v = 'cte' RETURNING id) SELECT * FROM ext_orders"), 'service-table-not-writable');
      await deniedWith(c.query('SET search_path = pg_temp, public'), 'service-search-path');

      // A new concern: one new file, the data's window closed, a SIGHUP.
      writeFileSync(path.join(dir, 'hooks_no_delete.rego'), NO_DELETE_HOOK);
      editJson(path.join(dir, 'data.json'), (data) => {
        data.services['orders-svc'].write_windows = [];
      });
      await reload(proxy);
      await deniedWith(c.query('DELETE FROM ext_orders WHERE id = 1'), 'no-delete-ext');
      const closed = await deniedWith(c.query("UPDATE ext_orders SET v = 'after-reload' WHERE id = 1"), 'service-write-window');
      assert.match(closed.message, /orders-svc writes only inside its write windows \(\)/);
      assert.equal((await c.query('SELECT v FROM ext_orders WHERE id = 1')).rows[0].v, 'updated');
    } finally {
      await c.end();
    }
    assert.equal(await value('SELECT v FROM ext_orders WHERE id = 1'), 'updated');
    assert.equal(await value('SELECT v FROM ext_notes WHERE id = 1'), 'note');
    assert.equal(await value('SELECT count(*)::text AS v FROM ext_orders'), '1');
  });
});
