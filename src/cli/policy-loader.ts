// Builds the configured policy with the OPA CLI and compiles the wasm once in
// the main thread (the compiled module is posted to every worker), and reloads
// it: on SIGHUP, on a change to a policy or data file, and on request (admin
// POST /reload). A policy that fails a build-time check (opa check --strict
// against the input schemas, the wasm build, the smoke test of both entry
// points: policy/checks.ts), or does not compile or instantiate, is refused
// with every problem listed and the running one stays active.

import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config, PolicyConfig } from '../config/config.ts';
import { RolegateError, type ErrorCode } from '../errors.ts';
import { policySourceFiles } from '../policy/build.ts';
import { buildCheckedPolicy } from '../policy/checks.ts';
import { PolicyEngine } from '../policy/engine.ts';
import { ensureOpa } from '../policy/opa-cli.ts';
import { keepRevision, readPolicySources, sameSources } from '../policy/revisions.ts';
import type { PolicyBundle } from '../policy/engine.ts';
import type { Supervisor } from '../workers/supervisor.ts';

async function opaFor(policy: PolicyConfig, log: Logger): Promise<string> {
  if (policy.opaPath !== null) return policy.opaPath;
  return ensureOpa({ log: (line) => log.info({}, line) });
}

export interface LoadPolicyOptions {
  /**
   * Keep the built revision in policy.revisions (when configured); default
   * true: the proxy loads a policy to make it active. check-config does not.
   */
  keepRevision?: boolean;
}

export async function loadPolicyBundle(config: Config, log: Logger, options: LoadPolicyOptions = {}): Promise<PolicyBundle> {
  const policy = config.policy;
  if (policy === null) throw new RolegateError('RG_POLICY_LOAD', 'no policy: section in the config');
  const opaPath = await opaFor(policy, log);
  const store = options.keepRevision === false ? undefined : policy.revisions;
  // The sources as they were when the build started (a file saved during the build is caught below).
  const sourcesBefore = store === undefined ? null : await readPolicySources(policy.dir, policy.dataFile).catch(() => null);
  const { built, artifact } = await buildCheckedPolicy({ dir: policy.dir, opaPath, ...(policy.dataFile === null ? {} : { dataFile: policy.dataFile }) });
  // Instantiate once here: a module that cannot load or take its data is refused
  // before any worker sees it.
  await PolicyEngine.create(artifact);
  const bundle = { ...artifact, readsStatementText: await mentionsSql(policy.dir) };
  if (store !== undefined) {
    // Kept before it becomes active, so every revision that ever decides is there to replay. A store
    // that cannot be written is logged, never a reason to refuse the policy.
    try {
      const sourcesAfter = await readPolicySources(policy.dir, policy.dataFile).catch(() => null);
      const sources = sourcesBefore !== null && sourcesAfter !== null && sameSources(sourcesBefore, sourcesAfter) ? sourcesBefore : null;
      const kept = await keepRevision(store.dir, store.maxCount, { revision: built.revision, wasm: built.wasm, data: built.data, readsStatementText: bundle.readsStatementText, sourceDir: policy.dir, dataFile: policy.dataFile, sources });
      if (kept.added) log.info({ revision: built.revision, path: kept.path, evicted: kept.evicted, sources: sources !== null }, 'policy revision kept');
    } catch (err) {
      log.warn({ revision: built.revision, dir: store.dir, err: err instanceof Error ? err.message : String(err) }, 'policy revision not kept');
    }
  }
  return bundle;
}

/** The candidate of policy.shadow, built and checked exactly like the active policy; null when none is configured. */
export async function loadShadowBundle(config: Config, log: Logger): Promise<PolicyBundle | null> {
  const policy = config.policy;
  const shadow = policy?.shadow;
  if (policy === null || shadow === undefined) return null;
  const opaPath = await opaFor(policy, log);
  const { artifact } = await buildCheckedPolicy({ dir: shadow.dir, opaPath, ...(shadow.dataFile === null ? {} : { dataFile: shadow.dataFile }) });
  await PolicyEngine.create(artifact);
  return { ...artifact, readsStatementText: await mentionsSql(shadow.dir) };
}

/**
 * Conservative: the word `sql` anywhere in a non-test .rego file outside
 * whole-line comments (input.statement.sql, input.statement["sql"], a
 * variable named sql…) keys decisions by the statement's exact text.
 */
export async function mentionsSql(dir: string): Promise<boolean> {
  for (const file of await policySourceFiles(dir, false)) {
    if (file.kind !== 'rego') continue;
    const code = (await readFile(file.path, 'utf8'))
      .split('\n')
      .filter((line) => !line.trimStart().startsWith('#'))
      .join('\n');
    if (/\bsql\b/.test(code)) return true;
  }
  return false;
}

export interface ReloadOutcome {
  ok: boolean;
  /** The revision active after the reload (a refused reload leaves the previous one). */
  revision: string | null;
  previous: string | null;
  /** What happened; for a refusal, every problem (opa's file:line messages, the checks'). */
  message: string;
  changed: boolean;
  /** When the reload finished (ISO 8601). */
  at: string;
  /** What asked for it: SIGHUP, admin POST /reload, a file change. */
  reason: string;
  /** Why it was refused (RG_POLICY_CHECK, RG_POLICY_BUILD, RG_CONFIG_INVALID, …); null when it was not. */
  code: ErrorCode | null;
}

/** Serialises reloads: one at a time; requests during a reload coalesce into one more. */
export class PolicyReloader {
  revision: string | null;
  /** The shadow candidate deciding beside the active policy (policy.shadow), or null. */
  shadow: PolicyBundle | null;
  lastOutcome: ReloadOutcome | null = null;
  /** Observer of every reload's outcome (metrics). */
  onOutcome: ((outcome: ReloadOutcome) => void) | null = null;
  config: Config;
  private readonly log: Logger;
  private readonly supervisor: Supervisor;
  private running: Promise<ReloadOutcome> | null = null;
  private again = false;
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | null = null;
  /** What watch() was started for (watchKey); null: not watching. */
  private watched: string | null = null;

  constructor(config: Config, log: Logger, supervisor: Supervisor, initialRevision: string | null, initialShadow: PolicyBundle | null = null) {
    this.config = config;
    this.log = log;
    this.supervisor = supervisor;
    this.revision = initialRevision;
    this.shadow = initialShadow;
  }

  get shadowRevision(): string | null {
    return this.shadow?.revision ?? null;
  }

  /**
   * The shadow candidate as configured now: rebuilt, or null when policy.shadow
   * is gone. One that does not build keeps the previous candidate (logged; the
   * active policy's reload goes on).
   */
  private async nextShadow(): Promise<{ bundle: PolicyBundle | null; problem: string | null }> {
    try {
      return { bundle: await loadShadowBundle(this.config, this.log), problem: null };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.log.error({ shadow: this.config.policy?.shadow?.dir, err: message }, 'shadow policy refused; the previous candidate stays');
      return { bundle: this.shadow, problem: `shadow policy refused (revision ${this.shadowRevision ?? 'none'} stays): ${message}` };
    }
  }

  reload(reason: string): Promise<ReloadOutcome> {
    if (this.running !== null) {
      this.again = true;
      return this.running;
    }
    this.running = this.run(reason).finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        void this.reload('coalesced');
      }
    });
    return this.running;
  }

  /**
   * Records a reload that failed before the policy was looked at (an invalid
   * config file), so /status shows it like a refused policy. The caller counts
   * it in the metrics (onOutcome is not called).
   */
  recordRefusal(reason: string, message: string, code: ErrorCode): ReloadOutcome {
    const outcome: ReloadOutcome = { ok: false, revision: this.revision, previous: this.revision, changed: false, message, at: new Date().toISOString(), reason, code };
    this.lastOutcome = outcome;
    return outcome;
  }

  private async run(reason: string): Promise<ReloadOutcome> {
    const previous = this.revision;
    let outcome: Omit<ReloadOutcome, 'at' | 'reason' | 'code'>;
    let code: ErrorCode | null = null;
    try {
      const bundle = await loadPolicyBundle(this.config, this.log);
      const shadow = await this.nextShadow();
      const note = shadow.problem === null ? '' : `; ${shadow.problem}`;
      if (bundle.revision === previous && (shadow.bundle?.revision ?? null) === this.shadowRevision) {
        outcome = { ok: true, revision: previous, previous, changed: false, message: `policy unchanged${note}` };
      } else {
        const applied = await this.supervisor.setPolicy(bundle, shadow.bundle);
        const failed = applied.filter((a) => !a.ok);
        if (failed.length > 0) {
          code = 'RG_POLICY_LOAD';
          outcome = { ok: false, revision: bundle.revision, previous, changed: true, message: `workers failed to apply the policy: ${failed.map((f) => `worker ${f.workerId}: ${f.message}`).join('; ')}` };
        } else {
          this.revision = bundle.revision;
          this.shadow = shadow.bundle;
          const shadowText = shadow.bundle === null ? '' : `, shadow ${shadow.bundle.revision} beside it`;
          outcome = { ok: true, revision: bundle.revision, previous, changed: true, message: `policy ${bundle.revision} active in ${applied.length} workers${shadowText}${note}` };
        }
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      code = err instanceof RolegateError ? err.code : 'RG_INTERNAL';
      outcome = { ok: false, revision: previous, previous, changed: false, message: `policy refused; revision ${previous ?? 'none'} stays active: ${message}` };
    }
    const done: ReloadOutcome = { ...outcome, at: new Date().toISOString(), reason, code };
    this.lastOutcome = done;
    // A reload may point policy.dir (or data_file) elsewhere: watch what is configured now.
    if (done.ok && this.watched !== null && this.watched !== watchKey(this.config)) {
      this.close();
      this.watch();
    }
    this.onOutcome?.(done);
    if (done.ok) this.log.info({ reason, revision: done.revision, previous, changed: done.changed }, 'policy reload');
    else this.log.error({ reason, revision: done.revision, code, err: done.message }, 'policy reload failed');
    return done;
  }

  /** Rebuild when a .rego, data or schema file in the policy directory (or the data file) changes. */
  watch(): void {
    const policy = this.config.policy;
    this.watched = watchKey(this.config);
    if (policy === null || !policy.watch) return;
    const trigger = (file: string | null): void => {
      if (file !== null && !/\.(rego|json|ya?ml)$/.test(file)) return;
      if (this.debounce !== null) clearTimeout(this.debounce);
      this.debounce = setTimeout(() => {
        this.debounce = null;
        void this.reload(`file change${file === null ? '' : `: ${file}`}`);
      }, 300);
    };
    const targets = [policy.dir];
    if (policy.dataFile !== null && path.dirname(policy.dataFile) !== policy.dir) targets.push(path.dirname(policy.dataFile));
    for (const dir of targets) {
      try {
        const w = watch(dir, { recursive: true }, (_event, file) => trigger(file === null ? null : String(file)));
        w.on('error', (err) => this.log.warn({ dir, err: err.message }, 'policy watch failed'));
        this.watchers.push(w);
      } catch (err) {
        this.log.warn({ dir, err: (err as Error).message }, 'cannot watch policy directory');
      }
    }
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.debounce !== null) clearTimeout(this.debounce);
  }
}

/** The watched locations of a config: a change of any means watching anew. */
function watchKey(config: Config): string {
  const policy = config.policy;
  return JSON.stringify(policy === null ? null : [policy.dir, policy.dataFile, policy.watch]);
}
