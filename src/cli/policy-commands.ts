// `rolegate policy check` and `rolegate policy test`: the checks every build
// runs (policy/checks.ts), and the policy's own Rego tests through `opa test`
// with a coverage summary; plus the client side of `rolegate reload` over the
// admin port, which prints why a reload was refused.

import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadConfigFile } from '../config/config.ts';
import { ENTRYPOINTS, SHIPPED_SCHEMA_DIR } from '../policy/build.ts';
import { INPUT_SCHEMAS, runPolicyChecks } from '../policy/checks.ts';
import { ensureOpa, runOpa } from '../policy/opa-cli.ts';

/** Exit statuses of the policy commands (and of `rolegate reload` over HTTP). */
export const POLICY_EXIT = { ok: 0, failed: 1, usage: 2, problems: 3 } as const;

class UsageError extends Error {}

export const POLICY_HELP = `Usage: rolegate policy <check|test> [flags]

  check   Run the checks every build runs (start, reload, check-config) and
          print every problem: opa check --strict against the input schemas,
          opa build -t wasm with the opa-wasm capabilities, and a smoke test of
          rolegate/connect and rolegate/statement on the schemas' sample inputs.
          Exit 0 clean, 3 problems.
      --policy DIR         the policy directory (default: the config's, else ./policies)
      --data FILE          data file replacing DIR/data.json (default: the config's)
      --config, -c FILE    take the policy directory, data file and opa from a config
      --json               one JSON document
  test    opa test over the directory, its _test.rego files included.
          Exit 0 passed, 3 failed (or coverage under --threshold).
      --policy DIR, --config FILE   as for check
      --coverage           print the coverage per file and the lines not covered
      --threshold PCT      with --coverage: fail under PCT percent overall
      --run REGEX          only the tests whose names match
      --verbose, -v        every test's result (and, with --coverage, the
                           source of the lines not covered)
`;

interface Target {
  dir: string;
  dataFile: string | undefined;
  opaPath: string;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function resolveTarget(values: { policy?: string | undefined; config?: string | undefined; data?: string | undefined }): Promise<Target> {
  const config = values.config === undefined ? null : loadConfigFile(values.config);
  if (config !== null && config.policy === null && values.policy === undefined) {
    throw new UsageError(`${values.config} has no policy: section; give --policy DIR`);
  }
  let dir = values.policy ?? config?.policy?.dir;
  if (dir === undefined) {
    if (!(await isDirectory('policies'))) throw new UsageError('give --policy DIR or --config FILE (there is no ./policies here)');
    dir = 'policies';
  }
  const dataFile = values.data ?? config?.policy?.dataFile ?? undefined;
  const opaPath = config?.policy?.opaPath ?? (await ensureOpa());
  return { dir, dataFile, opaPath };
}

// ------------------------------------------------------------------- check

async function check(args: string[], out: NodeJS.WritableStream): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { policy: { type: 'string' }, data: { type: 'string' }, config: { type: 'string', short: 'c' }, json: { type: 'boolean' } },
    strict: true,
  });
  const target = await resolveTarget(values);
  const report = await runPolicyChecks({ dir: target.dir, opaPath: target.opaPath, ...(target.dataFile === undefined ? {} : { dataFile: target.dataFile }) });
  const ok = report.problems.length === 0;
  if (values.json === true) {
    out.write(
      `${JSON.stringify({ ok, dir: target.dir, data_file: target.dataFile ?? null, revision: report.built?.revision ?? null, samples: report.samples, problems: report.problems }, null, 2)}\n`,
    );
    return ok ? POLICY_EXIT.ok : POLICY_EXIT.problems;
  }
  if (ok) {
    const schemas = ENTRYPOINTS.map((e) => INPUT_SCHEMAS[e]).join(', ');
    const samples = ENTRYPOINTS.map((e) => `${e} (${report.samples[e]} samples)`).join(' and ');
    out.write(
      `${target.dir}: OK, revision ${report.built?.revision ?? '?'}\n` +
        `  opa check --strict against ${SHIPPED_SCHEMA_DIR} (${schemas})\n` +
        `  opa build -t wasm with the opa-wasm capabilities\n` +
        `  smoke test of ${samples}\n`,
    );
    return POLICY_EXIT.ok;
  }
  out.write(`${target.dir}: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}\n`);
  for (const problem of report.problems) out.write(`[${problem.stage}] ${problem.message}\n`);
  return POLICY_EXIT.problems;
}

// -------------------------------------------------------------------- test

interface CoverageRange {
  start?: { row?: number };
  end?: { row?: number };
}

interface CoverageReport {
  coverage?: number;
  covered_lines?: number;
  not_covered_lines?: number;
  files?: Record<string, { coverage?: number; not_covered?: CoverageRange[] }>;
}

/** Rows of `not_covered` ranges as "7-9, 12". */
export function uncoveredRows(ranges: readonly CoverageRange[] | undefined): number[] {
  const rows = new Set<number>();
  for (const range of ranges ?? []) {
    const start = range.start?.row;
    const end = range.end?.row ?? start;
    if (start === undefined || end === undefined) continue;
    for (let row = start; row <= end; row++) rows.add(row);
  }
  return [...rows].sort((a, b) => a - b);
}

export function rowRanges(rows: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < rows.length) {
    const first = rows[i] ?? 0;
    let last = first;
    while (i + 1 < rows.length && rows[i + 1] === last + 1) last = rows[++i] ?? last;
    parts.push(first === last ? `${first}` : `${first}-${last}`);
    i++;
  }
  return parts.join(', ');
}

function percent(value: number | undefined): string {
  return `${(value ?? 0).toFixed(1).padStart(5)} %`;
}

/** The coverage summary of `opa test --coverage --format=json`. */
export async function renderCoverage(report: CoverageReport, verbose: boolean): Promise<string> {
  const files = Object.entries(report.files ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const covered = report.covered_lines ?? 0;
  const total = covered + (report.not_covered_lines ?? 0);
  const width = Math.max(0, ...files.map(([name]) => name.length));
  const lines = [`coverage ${percent(report.coverage).trim()} (${covered} of ${total} lines)`];
  for (const [name, file] of files) {
    const rows = uncoveredRows(file.not_covered);
    lines.push(`  ${name.padEnd(width)}  ${percent(file.coverage)}${rows.length === 0 ? '' : `  not covered: ${rowRanges(rows)}`}`);
    if (verbose && rows.length > 0) {
      const source = await readFile(name, 'utf8').then(
        (text) => text.split('\n'),
        () => null,
      );
      if (source !== null) for (const row of rows) lines.push(`      ${name}:${row}: ${(source[row - 1] ?? '').trim()}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

async function test(args: string[], out: NodeJS.WritableStream): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      policy: { type: 'string' },
      config: { type: 'string', short: 'c' },
      coverage: { type: 'boolean' },
      threshold: { type: 'string' },
      run: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
    },
    strict: true,
  });
  let threshold: number | null = null;
  if (values.threshold !== undefined) {
    threshold = Number(values.threshold);
    if (!Number.isFinite(threshold) || threshold < 0 || threshold > 100) throw new UsageError(`--threshold must be a percentage (0-100), got "${values.threshold}"`);
    if (values.coverage !== true) throw new UsageError('--threshold needs --coverage');
  }
  const target = await resolveTarget({ policy: values.policy, config: values.config });
  // The same files as the build and the checks: hidden directories and node_modules are not the policy.
  const common = ['--ignore', '.*', '--ignore', 'node_modules', ...(values.run === undefined ? [] : ['--run', values.run])];
  const [plain, coverage] = await Promise.all([
    runOpa(target.opaPath, ['test', ...common, ...(values.verbose === true ? ['-v'] : []), target.dir]),
    values.coverage === true ? runOpa(target.opaPath, ['test', ...common, '--coverage', '--format=json', target.dir]) : null,
  ]);
  out.write(plain.stdout);
  if (plain.stderr !== '') out.write(plain.stderr);
  if (plain.code !== 0) return POLICY_EXIT.problems;
  if (coverage === null) return POLICY_EXIT.ok;
  let report: CoverageReport;
  try {
    report = JSON.parse(coverage.stdout) as CoverageReport;
  } catch {
    out.write(`opa test --coverage printed no coverage report (exit ${coverage.code}):\n${coverage.stdout}${coverage.stderr}`);
    return POLICY_EXIT.failed;
  }
  out.write(await renderCoverage(report, values.verbose === true));
  if (threshold !== null && (report.coverage ?? 0) < threshold) {
    out.write(`coverage ${(report.coverage ?? 0).toFixed(1)} % is under the threshold of ${threshold} %\n`);
    return POLICY_EXIT.problems;
  }
  return POLICY_EXIT.ok;
}

// ------------------------------------------------------------------ entry

/** `rolegate policy …`; resolves with the exit status. */
export async function runPolicyCommand(args: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'check':
        return await check(rest, out);
      case 'test':
        return await test(rest, out);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        (sub === undefined ? err : out).write(POLICY_HELP);
        return sub === undefined ? POLICY_EXIT.usage : POLICY_EXIT.ok;
      default:
        throw new UsageError(`unknown policy command "${sub}" (check, test)`);
    }
  } catch (thrown) {
    const parseArgsError = thrown instanceof TypeError && 'code' in thrown && typeof thrown.code === 'string' && thrown.code.startsWith('ERR_PARSE_ARGS');
    if (thrown instanceof UsageError || parseArgsError) {
      err.write(`rolegate: ${thrown.message}\nRun "rolegate policy --help" for usage.\n`);
      return POLICY_EXIT.usage;
    }
    throw thrown;
  }
}

// ----------------------------------------------------------------- reload

interface ReloadBody {
  ok?: unknown;
  message?: unknown;
}

/**
 * POST /reload on a running proxy's admin port. Prints what happened — for a
 * refused reload, every problem (the old policy stays active) — and resolves
 * with the exit status: 0 reloaded, 3 refused, 1 the request failed.
 */
export async function requestReload(url: string, options: { json?: boolean; out?: NodeJS.WritableStream; err?: NodeJS.WritableStream } = {}): Promise<number> {
  const out = options.out ?? process.stdout;
  const err = options.err ?? process.stderr;
  const res = await fetch(new URL('/reload', url), { method: 'POST', signal: AbortSignal.timeout(120_000) });
  const text = await res.text();
  let body: ReloadBody | null = null;
  try {
    body = JSON.parse(text) as ReloadBody;
  } catch {
    body = null;
  }
  const refused = res.status === 422 && body !== null && body.ok === false;
  if (options.json === true) {
    out.write(text.endsWith('\n') ? text : `${text}\n`);
  } else if (res.ok && body !== null && typeof body.message === 'string') {
    out.write(`reloaded: ${body.message}\n`);
  } else if (refused && typeof body?.message === 'string') {
    err.write(`reload refused: ${body.message}\n`);
  } else {
    err.write(`reload request failed: HTTP ${res.status} ${text}\n`);
  }
  if (res.ok) return POLICY_EXIT.ok;
  return refused ? POLICY_EXIT.problems : POLICY_EXIT.failed;
}
