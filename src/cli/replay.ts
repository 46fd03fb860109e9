// `rolegate replay`: re-decide every decision an audit log recorded with a
// draft policy and say what would change — allow→deny and deny→allow, counted
// by service, rule and command, with example records. Exit status 1 when an
// allowed decision would be denied (a CI gate) unless --allow-new-denials.
//
// The log is read here in chunks of whole lines; each chunk goes to a piscina
// worker (replay-worker.ts) with its buffer transferred. A task round trip
// costs 30–75 µs, more than a cached decision, so a task carries a few hundred
// records (CHUNK_BYTES). The draft (and a baseline revision) is built and
// compiled once here; each worker instantiates the module it is given once.

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Piscina } from 'piscina';
import { auditFiles, readLineChunks } from '../audit/log-reader.ts';
import { RolegateError } from '../errors.ts';
import { buildPolicy } from '../policy/build.ts';
import { compilePolicy, PolicyEngine } from '../policy/engine.ts';
import { ensureOpa } from '../policy/opa-cli.ts';
import { loadRevision } from '../policy/revisions.ts';
import { mentionsSql } from './policy-loader.ts';
import { emptyTally, mergeTally, Replayer, type Direction, type ReplayChange, type ReplayGroup, type ReplayOptions, type ReplayPolicy, type ReplayTally } from './replay-worker.ts';

/** Bytes of audit lines per worker task: at ~600–900 bytes a record, a few hundred records. */
export const CHUNK_BYTES = 256 * 1024;

export const REPLAY_HELP = `rolegate replay --audit FILE... --policy DIR [flags]

Re-decide every connect and statement decision in audit logs (the file sink's
JSON lines; FILE.1, FILE.2 … rotated beside FILE are read too) with a draft
policy, and print what would change. Records carry their decision's input with
audit.input: facts or full; others are rebuilt from their own fields (the SQL
parsed again) and the report says how many were rebuilt which way.

  --audit FILE          an audit log (repeatable)
  --policy DIR          the draft: a policy directory (built with opa)
  --data FILE           data file replacing DIR/data.json
  --policy-revision REV the draft: a kept revision (with --revisions)
  --revisions DIR       policy.revisions.dir: where revisions are kept
  --baseline recorded|REV  compare with the recorded decisions (default), or
                        with kept revision REV re-deciding the same inputs
  --allow-new-denials   exit 0 even when allowed decisions would be denied
  --json                one JSON document on stdout
  --workers N           worker threads (default: CPU count; 0 = no pool)
  --max-changes N       changes listed one by one (default 1000)
  --examples N          example records per group (default 3)
  --time-zone ZONE      input.time zone for records without input (default UTC)
  --bucket-ms N         decision cache time bucket (default 60000)
  --env E --instance I  proxy.env / proxy.instance for records without input
                        (default dev / rolegate)
  --opa PATH            the opa binary (default: found or installed)

Exit status: 0 nothing allowed would be denied; 1 an allowed decision would be
denied (unless --allow-new-denials); 2 usage; 3 the policy does not build.
`;

export interface ReplayReport {
  draft: { source: string; revision: string; reads_statement_text: boolean };
  baseline: 'recorded' | { revision: string };
  files: string[];
  tally: ReplayTally;
  elapsedMs: number;
  workers: number;
  /** proxy.env / proxy.instance given to records without input. */
  proxy: { env: string; instance: string };
}

class UsageError extends Error {}

function int(value: string | undefined, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer of at least ${min}, got "${value}"`);
  return n;
}

export interface ReplayRunOptions {
  files: string[];
  options: ReplayOptions;
  /** 0: inline, in this thread. */
  workers: number;
  /** Bytes of lines per task (default CHUNK_BYTES). */
  chunkBytes?: number;
}

/**
 * Replay files with the policies of `options`: on `workers` piscina threads,
 * or inline. elapsedMs is the replay alone: the threads are started and the
 * policies instantiated before the clock starts.
 */
export async function replayFiles(run: ReplayRunOptions): Promise<{ tally: ReplayTally; elapsedMs: number }> {
  const { options } = run;
  const total = emptyTally();
  const chunkBytes = run.chunkBytes ?? CHUNK_BYTES;
  if (run.workers === 0) {
    const replayer = await Replayer.create(options);
    const t0 = performance.now();
    await readLineChunks(run.files, chunkBytes, (chunk) => mergeTally(total, replayer.replayChunk(chunk), options.maxChanges, options.examplesPerGroup));
    return { tally: total, elapsedMs: performance.now() - t0 };
  }
  const pool = new Piscina({
    filename: new URL('./replay-worker.ts', import.meta.url).href,
    minThreads: run.workers,
    maxThreads: run.workers,
    idleTimeout: 60_000,
    workerData: options,
  });
  let t0 = performance.now();
  try {
    // One empty task per thread, at once: each starts and instantiates its policies.
    await Promise.all(Array.from({ length: run.workers }, () => pool.run({ chunk: new Uint8Array(0) })));
    t0 = performance.now();
    const inFlight = new Set<Promise<void>>();
    let failure: unknown = null;
    await readLineChunks(run.files, chunkBytes, async (chunk) => {
      const task: Promise<void> = (pool.run({ chunk }, { transferList: [chunk.buffer as ArrayBuffer] }) as Promise<ReplayTally>).then(
        (tally) => mergeTally(total, tally, options.maxChanges, options.examplesPerGroup),
        (err: unknown) => {
          failure ??= err;
        },
      );
      inFlight.add(task);
      void task.finally(() => inFlight.delete(task));
      // Four tasks per thread in flight: work stays queued through a pause of the reading thread; reading waits beyond that.
      if (inFlight.size >= run.workers * 4) await Promise.race(inFlight);
    });
    await Promise.all(inFlight);
    if (failure !== null) throw failure instanceof Error ? failure : new Error(`a replay worker failed: ${JSON.stringify(failure)}`);
  } finally {
    await pool.destroy();
  }
  return { tally: total, elapsedMs: performance.now() - t0 };
}

/** A draft or baseline from a policy directory: built with opa, compiled, instantiated once to check it loads. */
export async function policyFromDir(dir: string, dataFile: string | undefined, opaPath: string | undefined): Promise<ReplayPolicy> {
  const opa = opaPath ?? (await ensureOpa({ log: (line) => process.stderr.write(`${line}\n`) }));
  const built = await buildPolicy({ dir, opaPath: opa, ...(dataFile === undefined ? {} : { dataFile }) });
  const artifact = await compilePolicy(built);
  await PolicyEngine.create(artifact);
  return { ...artifact, readsStatementText: await mentionsSql(dir) };
}

/** A kept revision (policy.revisions), compiled. */
export async function policyFromRevision(revisionsDir: string, revision: string): Promise<ReplayPolicy> {
  const stored = await loadRevision(revisionsDir, revision);
  const artifact = await compilePolicy({ wasm: stored.wasm, data: stored.data, revision: stored.revision });
  await PolicyEngine.create(artifact);
  return { ...artifact, readsStatementText: stored.readsStatementText };
}

/** `rolegate replay …`: the exit status. */
export async function runReplay(argv: string[]): Promise<number> {
  try {
    return await replayCommand(argv);
  } catch (err) {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`rolegate replay: ${err.message}\nRun "rolegate replay --help" for usage.\n`);
      return 2;
    }
    if (err instanceof RolegateError && err.code.startsWith('RG_POLICY')) {
      process.stderr.write(`rolegate replay: ${err.message}\n`);
      return 3;
    }
    throw err;
  }
}

async function replayCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      audit: { type: 'string', multiple: true },
      policy: { type: 'string' },
      data: { type: 'string' },
      'policy-revision': { type: 'string' },
      revisions: { type: 'string' },
      baseline: { type: 'string' },
      'allow-new-denials': { type: 'boolean' },
      json: { type: 'boolean' },
      workers: { type: 'string' },
      'max-changes': { type: 'string' },
      examples: { type: 'string' },
      'time-zone': { type: 'string' },
      'bucket-ms': { type: 'string' },
      env: { type: 'string' },
      instance: { type: 'string' },
      opa: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(REPLAY_HELP);
    return 0;
  }
  const auditPaths = values.audit ?? [];
  if (auditPaths.length === 0) throw new UsageError('replay needs --audit FILE');
  if ((values.policy === undefined) === (values['policy-revision'] === undefined)) throw new UsageError('replay needs one of --policy DIR and --policy-revision REV');
  const baselineArg = values.baseline ?? 'recorded';
  if ((values['policy-revision'] !== undefined || baselineArg !== 'recorded') && values.revisions === undefined) throw new UsageError('--policy-revision and --baseline REV need --revisions DIR');
  const zone = values['time-zone'] ?? 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    throw new UsageError(`unknown time zone "${zone}"`);
  }
  const bucketMs = int(values['bucket-ms'], 'bucket-ms', 60_000, 1000);
  const workers = int(values.workers, 'workers', availableParallelism(), 0);
  const maxChanges = int(values['max-changes'], 'max-changes', 1000, 0);
  const examplesPerGroup = int(values.examples, 'examples', 3, 0);
  let files: string[];
  try {
    files = await auditFiles(auditPaths);
  } catch (err) {
    throw new UsageError(`cannot read the audit log: ${(err as Error).message}`);
  }

  const draft = values.policy !== undefined ? await policyFromDir(values.policy, values.data, values.opa) : await policyFromRevision(values.revisions as string, values['policy-revision'] as string);
  const baseline = baselineArg === 'recorded' ? null : await policyFromRevision(values.revisions as string, baselineArg);
  const options: ReplayOptions = {
    draft,
    baseline,
    zone,
    bucketMs,
    proxy: { env: values.env ?? 'dev', instance: values.instance ?? 'rolegate' },
    maxChanges,
    examplesPerGroup,
    cacheEntries: 100_000,
  };
  const { tally, elapsedMs } = await replayFiles({ files, options, workers });
  const report: ReplayReport = {
    draft: { source: values.policy ?? `revision ${values['policy-revision']}`, revision: draft.revision, reads_statement_text: draft.readsStatementText },
    baseline: baseline === null ? 'recorded' : { revision: baseline.revision },
    files,
    tally,
    elapsedMs,
    workers,
    proxy: options.proxy,
  };
  const gate = tally.allowToDeny > 0 && values['allow-new-denials'] !== true;
  process.stdout.write(values.json === true ? `${JSON.stringify(replayJson(report, gate ? 1 : 0))}\n` : replayText(report, gate));
  return gate ? 1 : 0;
}

function byKey(groups: readonly ReplayGroup[], direction: Direction, key: 'service' | 'rule' | 'command'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const g of groups) if (g.direction === direction) out[g[key]] = (out[g[key]] ?? 0) + g.count;
  return Object.fromEntries(Object.entries(out).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));
}

function directionJson(report: ReplayReport, direction: Direction): unknown {
  const groups = report.tally.groups.filter((g) => g.direction === direction).sort((a, b) => b.count - a.count);
  return {
    total: direction === 'allow-to-deny' ? report.tally.allowToDeny : report.tally.denyToAllow,
    by_service: byKey(groups, direction, 'service'),
    by_rule: byKey(groups, direction, 'rule'),
    by_command: byKey(groups, direction, 'command'),
    groups: groups.map(({ service, rule, command, count, examples }) => ({ service, rule, command, count, examples })),
  };
}

/** The --json document. */
export function replayJson(report: ReplayReport, exit: number): unknown {
  const t = report.tally;
  const decided = t.decided.connect + t.decided.statement;
  return {
    draft: report.draft,
    baseline: report.baseline,
    files: report.files,
    lines: t.lines,
    not_records: t.notRecords,
    decided: { ...t.decided, total: decided },
    rebuilt: t.rebuilt,
    /** What records without input were decided with (besides their own fields). */
    assumed: { proxy: report.proxy, in_transaction: false, tls: false, claims: {}, cert: null },
    skipped: t.skipped,
    refused: t.refused,
    unchanged: t.unchanged,
    rule_changed: t.ruleChanged,
    allow_to_deny: directionJson(report, 'allow-to-deny'),
    deny_to_allow: directionJson(report, 'deny-to-allow'),
    changes: t.changes.map(changeJson),
    changes_omitted: t.changesOmitted,
    rule_changes: t.ruleChanges.map(changeJson),
    caveats: t.caveats,
    workers: report.workers,
    elapsed_ms: Math.round(report.elapsedMs),
    decisions_per_second: report.elapsedMs > 0 ? Math.round(decided / (report.elapsedMs / 1000)) : null,
    exit,
  };
}

function changeJson(c: ReplayChange): unknown {
  return { ...c };
}

function counts(record: Record<string, number>): string {
  const entries = Object.entries(record);
  return entries.length === 0 ? 'none' : entries.map(([k, n]) => `${k} ${n}`).join(', ');
}

function cut(text: string, max = 120): string {
  const one = text.replace(/\s+/g, ' ');
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/** The readable report. */
export function replayText(report: ReplayReport, gate: boolean): string {
  const t = report.tally;
  const decided = t.decided.connect + t.decided.statement;
  const lines: string[] = [];
  const baseline = report.baseline === 'recorded' ? 'the recorded decisions' : `revision ${report.baseline.revision}`;
  lines.push(`rolegate replay: draft ${report.draft.source} (revision ${report.draft.revision}) against ${baseline}`);
  lines.push(`read ${t.lines} lines from ${report.files.length} file(s)${t.notRecords > 0 ? ` (${t.notRecords} not audit records)` : ''}`);
  lines.push(`decided ${decided}: ${t.decided.connect} connect, ${t.decided.statement} statement — in ${(report.elapsedMs / 1000).toFixed(2)} s (${report.elapsedMs > 0 ? Math.round(decided / (report.elapsedMs / 1000)) : 0}/s, ${report.workers === 0 ? 'inline' : `${report.workers} workers`})`);
  lines.push(`rebuilt from: full input ${t.rebuilt.full}, facts input ${t.rebuilt.facts}, SQL parsed again ${t.rebuilt.reparsed}, connect record fields ${t.rebuilt.record}`);
  const skipped = Object.values(t.skipped).reduce((a, b) => a + b, 0);
  if (skipped > 0) lines.push(`skipped ${skipped} refusals rolegate makes without the policy: ${counts(t.skipped)}`);
  const refused = Object.values(t.refused).reduce((a, b) => a + b, 0);
  if (refused > 0) lines.push(`refused ${refused} records that cannot be rebuilt: ${counts(t.refused)}`);
  if (t.rebuilt.record > 0) lines.push(`note: ${t.rebuilt.record} connect records had no input: decided as asking for the role they got, without TLS, claims or certificate, with proxy ${report.proxy.env}/${report.proxy.instance} (--env, --instance)`);
  if (t.rebuilt.reparsed > 0) lines.push(`note: ${t.rebuilt.reparsed} statement records had no input: their text parsed again, decided outside a transaction, without TLS, claims or certificate, with proxy ${report.proxy.env}/${report.proxy.instance}`);
  if (t.caveats.executeNotFollowed > 0) lines.push(`note: ${t.caveats.executeNotFollowed} EXECUTE statements decided on their own facts (the prepared text they run is not in the record)`);
  if (t.caveats.truncatedTextRead > 0) lines.push(`note: ${t.caveats.truncatedTextRead} records' text was cut and the policy reads statement.sql`);
  lines.push(`unchanged ${t.unchanged}; same decision by another rule ${t.ruleChanged}`);
  for (const direction of ['allow-to-deny', 'deny-to-allow'] as const) {
    const total = direction === 'allow-to-deny' ? t.allowToDeny : t.denyToAllow;
    lines.push('');
    lines.push(`${direction === 'allow-to-deny' ? 'allow → deny' : 'deny → allow'}: ${total}`);
    if (total === 0) continue;
    const groups = t.groups.filter((g) => g.direction === direction).sort((a, b) => b.count - a.count || (a.service < b.service ? -1 : 1));
    lines.push(`  by service: ${counts(byKey(groups, direction, 'service'))}`);
    lines.push(`  by rule:    ${counts(byKey(groups, direction, 'rule'))}`);
    lines.push(`  by command: ${counts(byKey(groups, direction, 'command'))}`);
    for (const g of groups) {
      lines.push(`  ${g.service} · ${g.rule} · ${g.command}: ${g.count}`);
      for (const e of g.examples) lines.push(`    ${e.session} #${e.seq}  ${cut(e.sql)}`);
    }
  }
  if (t.changesOmitted > 0) lines.push(`(${t.changesOmitted} changes beyond --max-changes are counted, not listed in --json)`);
  lines.push('');
  if (gate) lines.push(`exit 1: ${t.allowToDeny} allowed decision(s) would be denied (--allow-new-denials accepts them)`);
  else lines.push(t.allowToDeny > 0 ? `${t.allowToDeny} allowed decision(s) would be denied (accepted: --allow-new-denials)` : 'no allowed decision would be denied');
  return `${lines.join('\n')}\n`;
}
