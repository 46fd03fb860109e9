#!/usr/bin/env node
// rolegate command line. Exit codes: 0 ok, 1 runtime failure, 2 usage error,
// 3 invalid configuration or policy.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createScramVerifier } from '../auth/scram.ts';
import { loadConfigFile } from '../config/config.ts';
import { RolegateError } from '../errors.ts';
import { DEMO_ADMIN_PORT, runDemo } from './demo.ts';
import { runExplain, runFacts } from './explain.ts';
import { runReplay } from './replay.ts';
import { runReview } from './review.ts';
import { loadPolicyBundle } from './policy-loader.ts';
import { requestReload, runPolicyCommand } from './policy-commands.ts';
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
      --admin-port N       admin HTTP on 127.0.0.1 (default 9187, 0 = any free port)
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
      --pid PID            or signal this process instead (prints only that
                           the signal was sent; the log has the outcome)
      --json               print the proxy's JSON answer as it is
                   Exit 0 reloaded, 3 refused (every problem printed; the
                   running policy stays active), 1 request failed.
  facts            Print what rolegate reads in a SQL text, per statement:
                   command, tables (read/write), functions, columns, flags,
                   parameter. No database needed. Exit 0 parsed, 1 not parsed
                   (rolegate would refuse it), 2 usage.
      --sql TEXT | --file FILE   the SQL (else read from stdin)
      --json               one JSON document
  explain          Decide SQL as the proxy would, without a proxy or a database:
                   the facts, the exact connect and statement input documents,
                   each decision (rule, reason) and what the client would get.
                   Exit 0 allowed, 1 denied (gate scripts on it), 2 usage,
                   3 policy or config invalid.
      --sql TEXT | --file FILE   the SQL (else read from stdin)
      --audit-record FILE[:LINE] or replay one audit record (identity, client,
                           database, role, SQL, protocol, time); flags override
      --identity NAME      who authenticated (required without --audit-record)
      --method M           scram-sha-256 (default) | cert | jwt
      --claims JSON        JWT claims (default {}); --cert-subject S,
                           --cert-san S (repeatable) for --method cert
      --role R             the requested role (options=-c rolegate.role=R)
      --database DB        requested database (default: the identity name)
      --application-name A
      --addr IP --port N --tls   the client (default 127.0.0.1, port 0, no TLS)
      --time RFC3339       the instant decided at (default now)
      --tz ZONE            IANA zone of input.time (default: config, else UTC)
      --env E --instance I proxy.env / proxy.instance (default: config)
      --protocol P         simple (default) | extended
      --in-transaction     decide as inside a transaction block
      --policy DIR         a policy directory, e.g. a draft (default: the
                           config's policy, else the shipped policies/)
      --data FILE          data file replacing DIR/data.json
      --config, -c FILE    take policy, time zone, proxy and caches from a config
      --json               one JSON document
      --trace [MODE]       add opa eval --explain=MODE (full, notes, fails,
                           debug; default full) over the same sources, data and
                           input
  policy check     The checks every build runs, all problems at once: opa
                   check --strict against docs/policy-schema, opa build -t wasm
                   with the opa-wasm capabilities, a smoke test of both entry
                   points. Exit 0 clean, 3 problems.
      --policy DIR --data FILE --config, -c FILE --json
  policy test      opa test over the policy directory (its _test.rego files).
                   Exit 0 passed, 3 failed.
      --policy DIR --config, -c FILE --run REGEX --verbose, -v
      --coverage [--threshold PCT]   coverage per file, lines not covered
  replay           Re-decide every decision in audit logs with a draft policy
                   and print what would change (allow→deny, deny→allow by
                   service, rule, command, with examples), on a worker pool.
                   Exit 0 no new denials, 1 an allowed decision would be denied
                   (a CI gate), 2 usage, 3 the policy does not build.
      --audit FILE         an audit log (repeatable; rotated FILE.N read too)
      --policy DIR         the draft (or --policy-revision REV --revisions DIR)
      --baseline recorded|REV  compare with the records (default) or a kept revision
      --allow-new-denials  exit 0 anyway;  --json;  --workers N (0 = no pool)
                   (rolegate replay --help: every flag)
  review           Least privilege from evidence: services never seen, roles
                   never chosen, rules never matched, tables a service may
                   write but only reads.
      --audit FILE         an audit log (repeatable)
      --since RFC3339      only records from then on
      --policy DIR         the policy reviewed (or --policy-revision REV --revisions DIR)
      --json               one JSON document
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
      const { values } = parseArgs({ args: rest, options: { port: { type: 'string' }, 'admin-port': { type: 'string' }, 'log-level': { type: 'string' } }, strict: true });
      const adminPort = intFlag(values['admin-port'], 'admin-port') ?? DEMO_ADMIN_PORT;
      if (adminPort > 65535) usage('--admin-port must be at most 65535');
      await runDemo({ port: intFlag(values.port, 'port') ?? 6432, adminPort, logLevel: values['log-level'] ?? 'info' });
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
      if (config.policy !== null) await loadPolicyBundle(config, pino({ level: 'warn' }), { keepRevision: false });
      process.stdout.write(`${values.config}: OK (${Object.keys(config.users).length} users, ${Object.keys(config.roles).length} roles, ${config.workers} workers)\n`);
      return;
    }
    case 'facts':
      process.exitCode = await runFacts(rest);
      return;
    case 'replay':
      process.exitCode = await runReplay(rest);
      return;
    case 'review':
      process.exitCode = await runReview(rest);
      return;
    case 'explain':
      process.exitCode = await runExplain(rest);
      return;
    case 'reload': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, admin: { type: 'string' }, pid: { type: 'string' }, json: { type: 'boolean' } }, strict: true });
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
      process.exitCode = await requestReload(url, { json: values.json === true });
      return;
    }
    case 'policy':
      process.exitCode = await runPolicyCommand(rest);
      return;
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
