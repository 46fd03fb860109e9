// Starting the proxy from a validated config: policy bundle, supervisor, signals.

import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { Supervisor } from '../workers/supervisor.ts';
import { loadPolicyBundle } from './policy-loader.ts';

export function withOverrides(config: Config, overrides: { port?: number | undefined; workers?: number | undefined }): Config {
  return {
    ...config,
    listen: { ...config.listen, port: overrides.port ?? config.listen.port },
    workers: overrides.workers ?? config.workers,
  };
}

export async function runProxy(config: Config, log: Logger, logLevel: string): Promise<Supervisor> {
  const policy = config.policy === null ? null : await loadPolicyBundle(config, log);
  const supervisor = new Supervisor({ config, log, policy, logLevel, fixedTimeMs: null });
  await supervisor.start();
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
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
  return supervisor;
}

