import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { LocalPostgresError, startLocalPostgres } from '../../src/cli/local-postgres.ts';
import type { LocalPostgres } from '../../src/cli/local-postgres.ts';

describe('startLocalPostgres', () => {
  let cluster: LocalPostgres;
  let tmpDir: string;

  before(async () => {
    cluster = await startLocalPostgres({ settings: { work_mem: '8MB' } });
    tmpDir = cluster.dataDir.replace(/\/data$/, '');
  });

  after(async () => {
    await cluster.stop();
  });

  test('exposes coordinates of a running cluster', () => {
    assert.equal(cluster.host, '127.0.0.1');
    assert.ok(cluster.port > 0 && cluster.port < 65536);
    assert.ok(existsSync(cluster.dataDir));
    assert.ok(existsSync(`${cluster.socketDir}/.s.PGSQL.${cluster.port}`), 'Unix socket present');
    assert.ok(cluster.superuserPassword.length >= 16);
  });

  test('psql over the socket as the superuser', async () => {
    assert.equal(await cluster.psql('SELECT 1 + 1'), '2');
    assert.equal(await cluster.psql('SHOW max_connections'), '300');
    assert.equal(await cluster.psql('SHOW password_encryption'), 'scram-sha-256');
    assert.equal(await cluster.psql('SHOW work_mem'), '8MB', 'options.settings applied');
    assert.equal(await cluster.psql("SELECT 'one'; SELECT 'two'"), 'one\ntwo', 'a script of several statements');
  });

  test('the server log is readable', async () => {
    await cluster.psql("DO $$ BEGIN RAISE LOG 'local-postgres-test-marker'; END $$");
    assert.match(readFileSync(cluster.logFile, 'utf8'), /local-postgres-test-marker/);
  });

  test('psql rejects with stderr on SQL errors', async () => {
    await assert.rejects(cluster.psql('SELECT * FROM no_such_table'), (error: unknown) => {
      assert.ok(error instanceof LocalPostgresError);
      assert.equal(error.code, 'RG_LOCAL_POSTGRES');
      assert.match(error.message, /relation "no_such_table" does not exist/);
      assert.match(error.stderr, /no_such_table/);
      return true;
    });
  });

  test('scram-sha-256 over TCP for a created role, through psql and pg', async () => {
    await cluster.psql("CREATE ROLE lp_reader LOGIN PASSWORD 'reader-secret'; CREATE DATABASE lp_app OWNER lp_reader");
    assert.match(await cluster.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'lp_reader'"), /^SCRAM-SHA-256\$4096:/);
    assert.equal(await cluster.psql('SELECT current_user, current_database()', { user: 'lp_reader', password: 'reader-secret', database: 'lp_app' }), 'lp_reader|lp_app');
    await assert.rejects(cluster.psql('SELECT 1', { user: 'lp_reader', password: 'wrong' }), /password authentication failed/);

    const client = new pg.Client({ host: cluster.host, port: cluster.port, user: 'lp_reader', password: 'reader-secret', database: 'lp_app' });
    await client.connect();
    try {
      const result = await client.query<{ usr: string; addr: string }>('SELECT current_user AS usr, host(inet_server_addr()) AS addr');
      assert.deepEqual(result.rows, [{ usr: 'lp_reader', addr: '127.0.0.1' }]);
    } finally {
      await client.end();
    }
  });

  test('the superuser over TCP with its password (pg)', async () => {
    const client = new pg.Client({ host: cluster.host, port: cluster.port, user: cluster.superuser, password: cluster.superuserPassword, database: 'postgres' });
    await client.connect();
    try {
      const result = await client.query<{ su: boolean }>('SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user');
      assert.equal(result.rows[0]?.su, true);
    } finally {
      await client.end();
    }
    assert.equal(await cluster.psql('SELECT 42', { user: cluster.superuser }), '42');
  });

  test('stop removes the temp dir and is idempotent', async () => {
    const second = await startLocalPostgres({ authMethod: 'md5' });
    const secondTmp = second.dataDir.replace(/\/data$/, '');
    assert.notEqual(second.port, cluster.port);
    assert.equal(await second.psql('SELECT 3'), '3');
    await Promise.all([second.stop(), second.stop()]);
    assert.equal(existsSync(secondTmp), false, 'temp dir removed');
    await second.stop();
    await assert.rejects(second.psql('SELECT 1'), LocalPostgresError);
    assert.ok(existsSync(tmpDir), 'the other cluster is untouched');
    assert.equal(await cluster.psql('SELECT 1'), '1');
  });

  test('a taken fixed port fails with the server log tail', async () => {
    await assert.rejects(startLocalPostgres({ port: cluster.port }), (error: unknown) => {
      assert.ok(error instanceof LocalPostgresError);
      assert.match(error.message, /did not start/);
      assert.match(error.message, /last lines of .*postgres\.log/);
      assert.match(error.message, /could not (bind|create)|already in use/i);
      return true;
    });
  });

  test('bad settings and bin dirs are rejected clearly', async () => {
    await assert.rejects(startLocalPostgres({ settings: { 'bad name': 'x' } }), /invalid postgresql.conf setting name/);
    await assert.rejects(startLocalPostgres({ binDir: '/nonexistent/bin' }), /options\.binDir=\/nonexistent\/bin does not hold .*missing: initdb, pg_ctl, postgres/);
  });
});

test('after stop the temp dir is gone', async () => {
  const cluster = await startLocalPostgres();
  const tmpDir = cluster.dataDir.replace(/\/data$/, '');
  assert.ok(existsSync(tmpDir));
  await cluster.stop();
  assert.equal(existsSync(tmpDir), false);
  await cluster.stop();
});
