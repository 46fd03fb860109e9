// Builds the configured policy with the OPA CLI and compiles the wasm once in
// the main thread (the compiled module is posted to every worker), and reloads
// it: on SIGHUP, on a change to a policy or data file, and on request (admin
// POST /reload). A policy that does not build, compile or instantiate is
// refused with opa's own message and the running one stays active.

import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config, PolicyConfig } from '../config/config.ts';
import { RolegateError } from '../errors.ts';
import { buildPolicy } from '../policy/build.ts';
import { compilePolicy, PolicyEngine } from '../policy/engine.ts';
import { ensureOpa } from '../policy/opa-cli.ts';
import type { PolicyBundle } from '../policy/engine.ts';
import type { Supervisor } from '../workers/supervisor.ts';

async function opaFor(policy: PolicyConfig, log: Logger): Promise<string> {
  if (policy.opaPath !== null) return policy.opaPath;
  return ensureOpa({ log: (line) => log.info({}, line) });
}

export async function loadPolicyBundle(config: Config, log: Logger): Promise<PolicyBundle> {
  const policy = config.policy;
  if (policy === null) throw new RolegateError('RG_POLICY_LOAD', 'no policy: section in the config');
  const opaPath = await opaFor(policy, log);
  const built = await buildPolicy({ dir: policy.dir, opaPath, ...(policy.dataFile === null ? {} : { dataFile: policy.dataFile }) });
  const artifact = await compilePolicy(built);
  // Instantiate once here: a module that cannot load or take its data is refused
  // before any worker sees it.
  await PolicyEngine.create(artifact);
  return { ...artifact, readsStatementText: await mentionsSql(policy.dir) };
}

/**
 * Conservative: the word `sql` anywhere in a non-test .rego file outside
 * whole-line comments (input.statement.sql, input.statement["sql"], a
 * variable named sql…) keys decisions by the statement's exact text.
 */
export async function mentionsSql(dir: string): Promise<boolean> {
  const files = await readdir(dir, { recursive: true });
  for (const file of files) {
    if (!file.endsWith('.rego') || file.endsWith('_test.rego')) continue;
    const code = (await readFile(path.join(dir, file), 'utf8'))
      .split('\n')
      .filter((line) => !line.trimStart().startsWith('#'))
      .join('\n');
    if (/\bsql\b/.test(code)) return true;
  }
  return false;
}

export interface ReloadOutcome {
  ok: boolean;
  revision: string | null;
  previous: string | null;
  message: string;
  changed: boolean;
}

/** Serialises reloads: one at a time; requests during a reload coalesce into one more. */
export class PolicyReloader {
  revision: string | null;
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

  constructor(config: Config, log: Logger, supervisor: Supervisor, initialRevision: string | null) {
    this.config = config;
    this.log = log;
    this.supervisor = supervisor;
    this.revision = initialRevision;
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

  private async run(reason: string): Promise<ReloadOutcome> {
    const previous = this.revision;
    let outcome: ReloadOutcome;
    try {
      const bundle = await loadPolicyBundle(this.config, this.log);
      if (bundle.revision === previous) {
        outcome = { ok: true, revision: previous, previous, changed: false, message: 'policy unchanged' };
      } else {
        const applied = await this.supervisor.setPolicy(bundle);
        const failed = applied.filter((a) => !a.ok);
        if (failed.length > 0) {
          outcome = { ok: false, revision: bundle.revision, previous, changed: true, message: `workers failed to apply the policy: ${failed.map((f) => `worker ${f.workerId}: ${f.message}`).join('; ')}` };
        } else {
          this.revision = bundle.revision;
          outcome = { ok: true, revision: bundle.revision, previous, changed: true, message: `policy ${bundle.revision} active in ${applied.length} workers` };
        }
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      outcome = { ok: false, revision: previous, previous, changed: false, message: `policy refused; revision ${previous ?? 'none'} stays active: ${message}` };
    }
    this.lastOutcome = outcome;
    this.onOutcome?.(outcome);
    if (outcome.ok) this.log.info({ reason, revision: outcome.revision, previous, changed: outcome.changed }, 'policy reload');
    else this.log.error({ reason, revision: outcome.revision, err: outcome.message }, 'policy reload failed');
    return outcome;
  }

  /** Rebuild when a .rego, data or schema file in the policy directory (or the data file) changes. */
  watch(): void {
    const policy = this.config.policy;
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
