// A worker crash under a write load, with fail-closed file audit: every row
// committed in the database has the audit record of its INSERT, or falls in
// a session-lost line's seq range for its session; nothing is written twice;
// the losses the log names are the ones counted in
// rolegate_audit_records_dropped_total and in the proxy's recovery log line.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import type pg from 'pg';
import { connect, demoConfig, ensureDemoDatabase } from '../helpers/fixture.ts';
import { adminQuery } from '../helpers/pg.ts';
import { startProxy } from '../helpers/proxy.ts';

const CLIENTS = 12;
const TABLE = 'audit_crash_probe';

interface Line {
  audit: string;
  session: string;
  seq?: number;
  worker: number;
  sql?: string;
  outcome?: string;
  client?: { addr: string; port: number };
  lost?: number;
  seq_from?: number | null;
  seq_to?: number | null;
  reason?: string;
}

/** One client connection's run: its local port (the audit records' client.port) and the n of its first INSERT. */
interface Connection {
  localPort: number;
  firstN: number;
}

describe('audit survives a worker crash', () => {
  test('the records a crashed worker still held are written from its journal, not dropped', async () => {
    await ensureDemoDatabase();
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-'));
    const auditFile = path.join(dir, 'audit.log');
    // Records stay in the worker: large batches, a long flush interval.
    const extra = `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, worker: { batch_records: 10000, buffer_records: 20000, flush_interval_ms: 10000 }, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n`;
    const proxy = await startProxy(demoConfig({ workers: 1, extra }), { env: { ROLEGATE_FAULT_INJECTION: '1' } });
    try {
      const line = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
      const admin = `http://127.0.0.1:${Number(line['port'])}`;
      const c = await connect(proxy.port, 'reporting-svc');
      for (let i = 0; i < 50; i++) await c.query(`SELECT ${i} AS n`);
      await c.end();
      proxy.child.kill('SIGUSR2');
      await proxy.waitForLog((l) => l['msg'] === 'worker restarted');
      const text = await (await fetch(`${admin}/metrics`)).text();
      assert.equal(Number(/^rolegate_audit_records_dropped_total (\d+)$/m.exec(text)?.[1]), 0);
      assert.equal(Number(/^rolegate_audit_records_written_total (\d+)$/m.exec(text)?.[1]), 51);
      const lines = readFileSync(auditFile, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line);
      assert.deepEqual(lines.map((l) => [l.audit, l.seq]), Array.from({ length: 51 }, (_, i) => [i === 0 ? 'connect' : 'statement', i + 1]), 'the connect record and 50 statements, once each, in order; the session had ended, so no session-lost line');
      assert.deepEqual(lines.slice(1).map((l) => l.sql), Array.from({ length: 50 }, (_, i) => `SELECT ${i} AS n`));
    } finally {
      await proxy.stop();
    }
  });

  test('every committed INSERT has its record or lies in a session-lost range; losses counted exactly', async () => {
    await ensureDemoDatabase();
    await adminQuery(`DROP TABLE IF EXISTS ${TABLE}; CREATE TABLE ${TABLE} (id int PRIMARY KEY, client int NOT NULL, n int NOT NULL); GRANT INSERT ON ${TABLE} TO PUBLIC;`, 'app');
    const dir = mkdtempSync(path.join(tmpdir(), 'rolegate-audit-crash-'));
    const auditFile = path.join(dir, 'audit.log');
    // Batches of 500 and a 2 s timer: at any instant a worker holds lines it has not posted yet.
    const extra = `admin: { host: 127.0.0.1, port: 0 }\naudit: { sink: file, mode: fail-closed, worker: { batch_records: 500, buffer_records: 20000, flush_interval_ms: 2000 }, file: { path: ${JSON.stringify(auditFile)} } }\nmetrics: { snapshot_interval_ms: 100 }\n`;
    const proxy = await startProxy(demoConfig({ workers: 2, extra }), { env: { ROLEGATE_FAULT_INJECTION: '1' } });
    let stopped = false;
    try {
      const adminLine = await proxy.waitForLog((l) => l['msg'] === 'admin listening');
      const admin = `http://127.0.0.1:${Number(adminLine['port'])}`;
      const connections: Connection[][] = Array.from({ length: CLIENTS }, () => []);
      let running = true;
      let broken = 0;
      const runClient = async (c: number): Promise<void> => {
        let n = 0;
        while (running) {
          let client: pg.Client;
          try {
            client = await connect(proxy.port, 'orders-svc');
          } catch {
            // The restarted worker is not listening yet: try again.
            await new Promise((r) => setTimeout(r, 50));
            continue;
          }
          client.on('error', () => {});
          const stream = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream;
          connections[c]!.push({ localPort: stream.localPort, firstN: n });
          try {
            while (running) {
              await client.query(`INSERT INTO ${TABLE} VALUES (${c * 1_000_000 + n}, ${c}, ${n})`);
              n++;
            }
            await client.end();
          } catch {
            // Its worker died: this INSERT may or may not have committed. Reconnect and go on with the next n.
            broken++;
            n++;
          }
        }
      };
      const clients = Array.from({ length: CLIENTS }, (_, c) => runClient(c));
      await new Promise((r) => setTimeout(r, 1500));
      proxy.child.kill('SIGUSR2');
      await proxy.waitForLog((l) => l['msg'] === 'worker restarted');
      await new Promise((r) => setTimeout(r, 1000));
      running = false;
      await Promise.all(clients);
      assert.ok(broken > 0, 'some clients were on the crashed worker');
      const recovery = await proxy.waitForLog((l) => l['msg'] === 'audit records recovered after worker exit');
      const metrics = await (await fetch(`${admin}/metrics`)).text();
      const dropped = Number(/^rolegate_audit_records_dropped_total (\d+)$/m.exec(metrics)?.[1]);
      const lostMetric = Number(/^rolegate_audit_records_lost_total (\d+)$/m.exec(metrics)?.[1]);
      const recoveredMetric = Number(/^rolegate_audit_records_recovered_total (\d+)$/m.exec(metrics)?.[1]);
      assert.equal(await proxy.stop('SIGTERM'), 0);
      stopped = true;

      const lines = readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Line);
      const statements = lines.filter((l) => l.audit === 'statement');
      const lostLines = lines.filter((l) => l.audit === 'session-lost');
      assert.deepEqual(
        lines.filter((l) => l.audit === 'records-lost'),
        [],
        'nothing lost beyond what sessions name',
      );
      // No record written twice.
      const keys = new Set(statements.map((l) => `${l.session}/${l.seq}`));
      assert.equal(keys.size, statements.length, 'no duplicate (session, seq)');
      const bySql = new Set(statements.map((l) => l.sql));

      // Sessions: by the client's local port, from their connect records (the crashed worker's sessions end in session-lost lines).
      const sessionOfPort = new Map<number, string>();
      for (const l of lines) if (l.audit === 'connect' && l.client !== undefined) sessionOfPort.set(l.client.port, l.session);
      const lostBySession = new Map(lostLines.map((l) => [l.session, l]));

      const rows = await adminQuery<{ id: number; client: number; n: number }>(`SELECT id, client, n FROM ${TABLE} ORDER BY id`, 'app');
      assert.ok(rows.length > 100, `a write load: ${rows.length} rows`);
      let withRecord = 0;
      let inLostRange = 0;
      for (const row of rows) {
        if (bySql.has(`INSERT INTO ${TABLE} VALUES (${row.id}, ${row.client}, ${row.n})`)) {
          withRecord++;
          continue;
        }
        // No record: the connection that sent it, and the seq its record would have had (connect is 1, one record per INSERT).
        const conn = [...connections[row.client]!].reverse().find((k) => k.firstN <= row.n);
        assert.ok(conn !== undefined, `row ${row.id}: its connection`);
        const session = sessionOfPort.get(conn.localPort);
        assert.ok(session !== undefined, `row ${row.id}: the connect record of its session`);
        const seq = 2 + row.n - conn.firstN;
        const lost = lostBySession.get(session);
        assert.ok(lost !== undefined && lost.seq_from !== null && lost.seq_to !== null && lost.seq_from! <= seq && seq <= lost.seq_to!, `row ${row.id} (session ${session}, seq ${seq}) has no record and no session-lost range: ${JSON.stringify(lost)}`);
        inLostRange++;
      }
      // Exact counts: the lost records are the seqs in the named ranges absent from the log, and they are what the metric counted.
      let absent = 0;
      for (const l of lostLines) {
        if (l.seq_from === null || l.seq_to === null) continue;
        for (let s = l.seq_from!; s <= l.seq_to!; s++) if (!keys.has(`${l.session}/${s}`)) absent++;
      }
      const named = lostLines.reduce((sum, l) => sum + (l.lost ?? 0), 0);
      assert.equal(absent, named, 'each session-lost count is the number of seqs missing in its range');
      assert.ok(inLostRange <= named, 'every row without a record is one of the named losses');
      assert.equal(dropped, named, 'rolegate_audit_records_dropped_total counts exactly the named losses');
      assert.equal(recovery['lostRecords'], named);
      assert.equal(lostMetric, named, 'rolegate_audit_records_lost_total too');
      assert.equal(recoveredMetric, recovery['recoveredRecords'], 'rolegate_audit_records_recovered_total is what the log line reports');
      assert.equal(recovery['sessionsLost'], lostLines.length);
      assert.ok(Number(recovery['recoveredRecords']) > 0, 'lines formatted but not posted were written from the journal');
      assert.ok(lostLines.every((l) => l.worker === 0 && l.reason !== undefined && /^worker exited \(code \d+\)$/.test(l.reason)));
      process.stdout.write(
        `# audit-crash: rows ${rows.length}, with record ${withRecord}, in a session-lost range ${inLostRange}; recovered ${String(recovery['recoveredRecords'])}, lost ${named} in ${lostLines.length} session-lost lines; dropped_total ${dropped}; broken client connections ${broken}\n`,
      );
    } finally {
      if (!stopped) await proxy.stop();
    }
  });
});
