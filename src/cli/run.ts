// Starting the proxy from a validated config: policy bundle, supervisor,
// admin HTTP, policy reloads, signals.

import type { Logger } from 'pino';
import { startAdminServer } from '../admin/server.ts';
import type { Config } from '../config/config.ts';
import { Supervisor } from '../workers/supervisor.ts';
import { loadPolicyBundle, PolicyReloader } from './policy-loader.ts';

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
}

export async function runProxy(config: Config, log: Logger, logLevel: string): Promise<RunningProxy> {
  const policy = config.policy === null ? null : await loadPolicyBundle(config, log);
  const supervisor = new Supervisor({ config, log, policy, logLevel, fixedTimeMs: config.time.fixedMs });
  const reloader = config.policy === null ? null : new PolicyReloader(config, log, supervisor, policy?.revision ?? null);
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
    supervisor.shutdown(config.shutdown.drainTimeoutMs).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: String(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (reloader === null) log.warn({}, 'SIGHUP: no policy configured, nothing to reload');
    else void reloader.reload('SIGHUP');
  });
  // Handlers first: a signal that arrives while workers start must still drain.
  await supervisor.start();
  reloader?.watch();
  await startAdminServer(config, log, {
    policyReady: () => config.policy === null || reloader?.revision !== null,
    reload: (reason) =>
      reloader === null ? Promise.resolve({ ok: false, revision: null, message: 'no policy configured', changed: false }) : reloader.reload(reason),
  });
  return { supervisor, reloader };
}
