#!/usr/bin/env node
// rolegate command line. Exit codes: 0 ok, 1 runtime failure, 2 usage error,
// 3 invalid configuration or policy.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createScramVerifier } from '../auth/scram.ts';
import { loadConfigFile } from '../config/config.ts';
import { RolegateError } from '../errors.ts';
import { runDemo } from './demo.ts';
import { loadPolicyBundle } from './policy-loader.ts';
import { runProxy, withOverrides } from './run.ts';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const HELP = `rolegate ${VERSION} — PostgreSQL access proxy with Rego policies

Usage: rolegate <command> [flags]

Commands:
  start            Run the proxy from a YAML config file.
      --config, -c FILE    config file (required; see examples/rolegate.yaml)
      --port N             override listen.port (0 = any free port)
      --workers N          override workers (default: CPU count)
      --log-level LEVEL    fatal|error|warn|info|debug (default info)
  demo             Start a throwaway local PostgreSQL (initdb), an example
                   config and the shipped policy, then the proxy; prints how to
                   connect with psql. Ctrl-C stops everything.
      --port N             listen port (default 6432)
  hash-password    Print a SCRAM-SHA-256 verifier for users.<name>.scram_verifier.
                   Reads the password from stdin (first line), never from argv.
      --iterations N       PBKDF2 iterations (default 4096)
  check-config     Validate a config file (and build its policy); prints every
                   problem at once.
      --config, -c FILE
  reload           Ask a running proxy to re-read its config and rebuild its
                   policy (POST /reload on its admin port, or SIGHUP to a pid).
      --config, -c FILE    find the admin address in this config's admin: section
      --admin URL          or give it, e.g. http://127.0.0.1:9187
      --pid PID            or signal this process instead
  help             This text.  (--help, -h)
  version          Print the version.  (--version, -v)

Signals: SIGTERM/SIGINT drain (stop accepting, wait up to
shutdown.drain_timeout_ms for sessions to end, then 57P01 and close);
SIGHUP reloads the policy.
`;

function usage(message: string): never {
  process.stderr.write(`rolegate: ${message}\nRun "rolegate --help" for usage.\n`);
  process.exit(2);
}

function intFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) usage(`--${name} must be a non-negative integer, got "${value}"`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return;
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`${VERSION}\n`);
      return;
    case 'start': {
      const { values } = parseArgs({
        args: rest,
        options: { config: { type: 'string', short: 'c' }, port: { type: 'string' }, workers: { type: 'string' }, 'log-level': { type: 'string' } },
        strict: true,
      });
      if (values.config === undefined) usage('start needs --config FILE');
      const logLevel = values['log-level'] ?? 'info';
      const log = pino({ level: logLevel });
      const config = withOverrides(loadConfigFile(values.config), { port: intFlag(values.port, 'port'), workers: intFlag(values.workers, 'workers') });
      if (config.workers < 1) usage('--workers must be at least 1');
      await runProxy(config, log, logLevel);
      return;
    }
    case 'demo': {
      const { values } = parseArgs({ args: rest, options: { port: { type: 'string' }, 'log-level': { type: 'string' } }, strict: true });
      await runDemo({ port: intFlag(values.port, 'port') ?? 6432, logLevel: values['log-level'] ?? 'info' });
      return;
    }
    case 'hash-password': {
      const { values } = parseArgs({ args: rest, options: { iterations: { type: 'string' } }, strict: true });
      const iterations = intFlag(values.iterations, 'iterations') ?? 4096;
      if (iterations < 4096) usage('--iterations must be at least 4096');
      const input = readFileSync(0, 'utf8');
      const password = input.split(/\r?\n/)[0] ?? '';
      if (password === '') usage('hash-password reads the password from stdin; got an empty line');
      process.stdout.write(`${createScramVerifier(password, { iterations })}\n`);
      return;
    }
    case 'check-config': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' } }, strict: true });
      if (values.config === undefined) usage('check-config needs --config FILE');
      const config = loadConfigFile(values.config);
      if (config.policy !== null) await loadPolicyBundle(config, pino({ level: 'warn' }));
      process.stdout.write(`${values.config}: OK (${Object.keys(config.users).length} users, ${Object.keys(config.roles).length} roles, ${config.workers} workers)\n`);
      return;
    }
    case 'reload': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, admin: { type: 'string' }, pid: { type: 'string' } }, strict: true });
      const pid = intFlag(values.pid, 'pid');
      if (pid !== undefined) {
        process.kill(pid, 'SIGHUP');
        process.stdout.write(`sent SIGHUP to ${pid}; the proxy log reports the outcome\n`);
        return;
      }
      let url = values.admin;
      if (url === undefined && values.config !== undefined) {
        const admin = loadConfigFile(values.config).admin;
        if (admin === null) usage(`${values.config} has no admin: section; use --pid`);
        url = `http://${admin.host === '0.0.0.0' ? '127.0.0.1' : admin.host}:${admin.port}`;
      }
      if (url === undefined) usage('reload needs --config FILE, --admin URL or --pid PID');
      const res = await fetch(new URL('/reload', url), { method: 'POST', signal: AbortSignal.timeout(120_000) });
      const body = await res.text();
      process.stdout.write(body);
      if (!res.ok) process.exit(1);
      return;
    }
    default:
      usage(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof RolegateError) {
    process.stderr.write(`rolegate: ${err.message}\n`);
    process.exit(err.code === 'RG_CONFIG_INVALID' || err.code.startsWith('RG_POLICY') ? 3 : 1);
  }
  if (err instanceof TypeError && 'code' in err && typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS')) usage(err.message);
  process.stderr.write(`rolegate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
