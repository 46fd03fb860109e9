// Starting the proxy from a validated config: policy bundle, supervisor,
// admin HTTP, policy reloads, signals.

import type { Logger } from 'pino';
import { startAdminServer } from '../admin/server.ts';
import { status, STATUS_PAGE, type StatusSource } from '../admin/status.ts';
import { loadConfigFile, type Config } from '../config/config.ts';
import { Supervisor } from '../workers/supervisor.ts';
import { MetricsRegistry } from '../metrics/registry.ts';
import { startMainAudit } from '../audit/setup.ts';
import type { AuditHub } from '../audit/main-side.ts';
import { RolegateError } from '../errors.ts';
import { loadPolicyBundle, loadShadowBundle, PolicyReloader } from './policy-loader.ts';

export function withOverrides(config: Config, overrides: { port?: number | undefined; workers?: number | undefined }): Config {
  return {
    ...config,
    listen: { ...config.listen, port: overrides.port ?? config.listen.port },
    workers: overrides.workers ?? config.workers,
  };
}

export interface RunningProxy {
  supervisor: Supervisor;
  reloader: PolicyReloader | null;
  /** The admin HTTP port actually bound (admin.port 0 = any free one); null without an admin: section. */
  adminPort: number | null;
}

export interface RunProxyOptions {
  /** After SIGINT/SIGTERM drained the workers, before the process exits (the demo stops its database here). */
  onStopped?: () => Promise<void>;
}

export async function runProxy(config: Config, log: Logger, logLevel: string, options: RunProxyOptions = {}): Promise<RunningProxy> {
  const startedAt = Date.now();
  const policy = config.policy === null ? null : await loadPolicyBundle(config, log);
  // policy.shadow: a candidate that does not build stops the start like the active policy would.
  const shadow = config.policy === null ? null : await loadShadowBundle(config, log);
  const metrics = new MetricsRegistry({ defaultMetrics: config.metrics.defaultMetrics, maxRuleLabels: config.metrics.maxRuleLabels });
  metrics.setPolicyRevision(policy?.revision ?? null);
  const supervisor = new Supervisor({ config, log, policy, shadow, logLevel, fixedTimeMs: config.time.fixedMs, metrics, audit: null });
  let auditHub: AuditHub | null = null;
  if (config.audit !== null) {
    // A sink that cannot be opened (bad path) refuses start-up: auditing was asked for.
    const hub = await startMainAudit(
      config.audit,
      (msg) => supervisor.broadcast(msg),
      (id, msg, transfer) => supervisor.sendTo(id, msg, transfer),
      (healthy, lastError) => (healthy ? log.info({}, 'audit sink healthy again') : log.error({ err: lastError }, 'audit sink failing')),
    );
    supervisor.setAudit(hub);
    auditHub = hub;
    metrics.setAuditSource(() => hub.stats());
  }
  const reloader = config.policy === null ? null : new PolicyReloader(config, log, supervisor, policy?.revision ?? null, shadow);
  if (reloader !== null) {
    reloader.onOutcome = (outcome) => {
      metrics.reloadOutcome(!outcome.ok ? 'failure' : outcome.changed ? 'success' : 'unchanged');
      metrics.setPolicyRevision(reloader.revision);
    };
  }
  if (process.env['ROLEGATE_FAULT_INJECTION'] === '1') {
    // Test-only: SIGUSR2 crashes worker 0 so the restart path can be exercised.
    process.on('SIGUSR2', () => supervisor.crashWorker(0));
  }
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    reloader?.close();
    supervisor
      .shutdown(config.shutdown.drainTimeoutMs)
      .then(() => options.onStopped?.())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err: String(err) }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let current = config;
  /**
   * SIGHUP: re-read the config file (credentials from env/files, TLS material,
   * auth settings, policy location) and rebuild the policy. Open sessions carry
   * on; new sessions use the new settings. An invalid config changes nothing.
   */
  const reloadAll = async (reason: string): Promise<{ ok: boolean; revision: string | null; message: string; changed: boolean }> => {
    if (current.file !== null) {
      try {
        const next = loadConfigFile(current.file);
        // audit: the sink is the main thread's, made once; a worker restarted
        // later must keep feeding it the way the others do.
        const fixed = ['listen', 'workers', 'admin', 'audit'] as const;
        const ignored = fixed.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(current[k]) && !(k === 'listen' && next.listen.port === 0));
        if (ignored.length > 0) log.warn({ keys: ignored }, 'config reload: these settings need a restart and keep their running values');
        const timeChanged = JSON.stringify(next.time) !== JSON.stringify(current.time);
        current = { ...next, listen: current.listen, workers: current.workers, admin: current.admin, audit: current.audit };
        supervisor.setConfig(current);
        if (reloader !== null) reloader.config = current;
        log.info({ reason, file: current.file }, 'config reload');
        // Each worker builds a new time source and decision cache with them; open sessions' next decisions use them.
        if (timeChanged) log.info({ zone: current.time.zone, bucketMs: current.time.bucketMs, fixedMs: current.time.fixedMs }, 'config reload: new time settings apply to the next decisions');
        logLiftedGuards(log, current, 'config reload: ');
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        log.error({ reason, err: message }, 'config reload failed; the running config stays active');
        metrics.reloadOutcome('failure');
        const refused = `config refused; the running config stays active: ${message}`;
        if (reloader !== null) return reloader.recordRefusal(reason, refused, err instanceof RolegateError ? err.code : 'RG_CONFIG_INVALID');
        return { ok: false, revision: null, message: refused, changed: false };
      }
    }
    if (reloader !== null) return reloader.reload(reason);
    return { ok: true, revision: null, message: 'config reloaded (no policy configured)', changed: true };
  };
  process.on('SIGHUP', () => {
    void reloadAll('SIGHUP');
  });
  logLiftedGuards(log, config, '');
  // Handlers first: a signal that arrives while workers start must still drain.
  await supervisor.start();
  reloader?.watch();
  const statusSource: StatusSource = {
    revision: () => reloader?.revision ?? null,
    lastReload: () => reloader?.lastOutcome ?? null,
    startedAt,
    workers: () => metrics.workerStatus(),
    recentDenials: () => metrics.recentDenials(),
    guards: () => ({ allow: current.guards.allow }),
    audit: () => (auditHub === null ? null : { ...auditHub.stats(), sinkHealthy: auditHub.sinkHealthy }),
    shadow: () => {
      const revision = reloader?.shadowRevision ?? null;
      if (revision === null) return null;
      const disagreements = (change: string): number => metrics.counterTotal('rolegate_shadow_disagreements_total', { change });
      return { revision, decisions: metrics.counterTotal('rolegate_shadow_decisions_total'), disagreements: { allow_to_deny: disagreements('allow_to_deny'), deny_to_allow: disagreements('deny_to_allow') } };
    },
  };
  const admin = await startAdminServer(config, log, {
    policyReady: () => config.policy === null || reloader?.revision !== null,
    auditReady: () => auditHub === null || auditHub.sinkHealthy || config.audit?.mode !== 'fail-closed',
    reload: (reason) => reloadAll(reason),
    extra: new Map<string, () => Promise<[number, string, string]>>([
      ['/metrics', async () => [200, metrics.contentType, await metrics.metrics()]],
      ['/status', () => Promise.resolve([200, 'application/json', `${JSON.stringify(status(statusSource))}\n`])],
      ['/status.html', () => Promise.resolve([200, 'text/html; charset=utf-8', STATUS_PAGE])],
    ]),
  });
  const address = admin?.address();
  return { supervisor, reloader, adminPort: typeof address === 'object' && address !== null ? address.port : null };
}

/**
 * guards.allow opens side doors for every session whose policy allows the
 * statement: said at start (a warning, so it is seen) and at each reload.
 */
function logLiftedGuards(log: Logger, config: Config, prefix: string): void {
  const allow = config.guards.allow;
  if (allow.length > 0) log.warn({ guardsAllow: allow }, `${prefix}guards lifted by guards.allow: ${allow.join(', ')} (the policy alone decides these statements)`);
  else if (prefix !== '') log.info({ guardsAllow: allow }, `${prefix}every guard holds (guards.allow is empty)`);
}
