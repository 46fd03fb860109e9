// The checks every policy build runs before rolegate accepts a policy — at
// start, on reload, in `check-config` and in `rolegate policy check`:
//
//   1. schema: `opa check --strict --schema <schemas> <dir>`, what authors run
//      themselves: strict-mode errors, and type errors against the input
//      schemas in packages annotated with `# METADATA schemas: - input:
//      schema.connect_input | schema.statement_input`. A package that names no
//      schema is checked a second time against both inputs at once (an anyOf
//      built from the same two files), so `input.statement.comand` is an
//      error wherever it is written.
//   2. build: `opa build -t wasm` against opa-wasm's capabilities (buildPolicy);
//      a builtin the wasm target lacks is named with its alternative.
//   3. smoke: both entry points evaluated on the sample inputs the schemas carry
//      (`examples`); every answer must be undefined (a deny) or a well-formed
//      decision (decisionProblems), so a policy whose answers lack `allow`
//      never goes live denying everything.
//
// Every problem of every stage is collected, so an author sees them all at once.

import { loadPolicy, type LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeThrown, RolegateError } from '../errors.ts';
import { buildPolicy, ENTRYPOINTS, SHIPPED_SCHEMA_DIR, type BuiltPolicy, type PolicyEntrypoint } from './build.ts';
import { compilePolicy, decisionProblems, DEFAULT_INITIAL_MEMORY_PAGES, DEFAULT_MAXIMUM_MEMORY_PAGES, type PolicyArtifact } from './engine.ts';
import { runOpa } from './opa-cli.ts';

/** The input schema of each entry point: `<schema dir>/<name>.json`, `schema.<name>` in annotations. */
export const INPUT_SCHEMAS: Readonly<Record<PolicyEntrypoint, string>> = {
  'rolegate/connect': 'connect_input',
  'rolegate/statement': 'statement_input',
};

export type CheckStage = 'schema' | 'build' | 'smoke' | 'data';

export interface PolicyProblem {
  stage: CheckStage;
  /** One problem, file:line first when it has one; may span lines (opa's context lines). */
  message: string;
}

export interface PolicyCheckOptions {
  dir: string;
  opaPath: string;
  /** Replaces `<dir>/data.json` (see buildPolicy). */
  dataFile?: string;
  /** The input schemas (default docs/policy-schema). */
  schemaDir?: string;
  /** Per opa invocation; default 120 s. */
  timeoutMs?: number;
}

export interface PolicyCheckReport {
  problems: PolicyProblem[];
  /** The compiled policy when the build succeeded. */
  built: BuiltPolicy | null;
  artifact: PolicyArtifact | null;
  /** The build's own error, kept so a build-only failure keeps its code. */
  buildError: RolegateError | null;
  /** How many sample inputs the smoke test evaluated per entry point. */
  samples: Record<PolicyEntrypoint, number>;
}

// ---------------------------------------------------------------------------
// 1. schema

/**
 * One schema for the input of either entry point: `anyOf` the two input
 * schemas, their `definitions` merged under `<schema name>.<definition>` so
 * the two files may define the same name differently.
 */
export function combinedInputSchema(schemas: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const definitions: Record<string, unknown> = {};
  const anyOf: unknown[] = [];
  for (const [name, schema] of Object.entries(schemas)) {
    if (typeof schema !== 'object' || schema === null) continue;
    const rewritten = rewriteRefs(schema, name) as Record<string, unknown>;
    const { $schema: _s, $id: _i, definitions: own, ...rest } = rewritten;
    if (typeof own === 'object' && own !== null) {
      for (const [key, value] of Object.entries(own)) definitions[`${name}.${key}`] = value;
    }
    anyOf.push(rest);
  }
  return { $schema: 'http://json-schema.org/draft-07/schema#', definitions, anyOf };
}

function rewriteRefs(value: unknown, name: string): unknown {
  if (Array.isArray(value)) return value.map((item) => rewriteRefs(item, name));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (key === '$ref' && typeof item === 'string' && item.startsWith('#/definitions/')) out[key] = `#/definitions/${name}.${item.slice('#/definitions/'.length)}`;
    else out[key] = rewriteRefs(item, name);
  }
  return out;
}

/** One problem per error of opa's pretty output ("N errors occurred:" then `file:row: code: message` + indented context). */
export function splitOpaErrors(output: string): string[] {
  const text = output.replace(/^(?:error: )?(?:load error: )?\d+ errors? occurred(?: during loading)?:[ \n]?/i, '');
  const chunks: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (/^\s/.test(line) && chunks.length > 0) chunks[chunks.length - 1] += `\n${line}`;
    else chunks.push(line);
  }
  return chunks.filter((chunk) => !/^rego_compile_error: error limit reached/.test(chunk));
}

/** `file:row: code` of an opa error, the key two runs of opa report the same problem under. */
function errorKey(chunk: string): string | null {
  const match = /^(.+?:\d+): (rego_\w+):/.exec(chunk);
  return match === null ? null : `${match[1]}: ${match[2]}`;
}

interface OpaJsonError {
  message?: unknown;
  code?: unknown;
  location?: { file?: unknown; row?: unknown; col?: unknown };
  details?: { ref?: Array<{ value?: unknown }>; pos?: unknown; oneOf?: unknown; have?: { type?: unknown } };
}

/** Renders an error of `opa check --format json` the way opa's pretty output does. */
function renderJsonError(error: OpaJsonError): string {
  const message = typeof error.message === 'string' ? error.message : JSON.stringify(error);
  const file = typeof error.location?.file === 'string' ? error.location.file : null;
  const row = typeof error.location?.row === 'number' ? error.location.row : null;
  const code = typeof error.code === 'string' ? error.code : null;
  let text = `${file !== null && row !== null ? `${file}:${row}: ` : ''}${code !== null ? `${code}: ` : ''}${message}`;
  const details = error.details;
  const ref = Array.isArray(details?.ref) ? details.ref.map((part) => String(part.value)) : null;
  const pos = typeof details?.pos === 'number' ? details.pos : null;
  if (ref !== null && pos !== null && pos < ref.length) {
    const shown = ref.join('.');
    const caret = ' '.repeat(ref.slice(0, pos).join('.').length + 1);
    text += `\n\t${shown}\n\t${caret}^`;
    if (Array.isArray(details?.oneOf)) {
      text += `\n\t${caret}have: ${JSON.stringify(ref[pos])}`;
      text += `\n\t${caret}want (one of): [${details.oneOf.map((key) => JSON.stringify(key)).join(' ')}]`;
    } else if (typeof details?.have?.type === 'string') {
      text += `\n\t${caret}have: ${details.have.type}`;
    }
  }
  return text;
}

function jsonErrors(output: string): OpaJsonError[] | null {
  const start = output.indexOf('{');
  if (start < 0) return null;
  try {
    const parsed = JSON.parse(output.slice(start)) as { errors?: unknown };
    return Array.isArray(parsed.errors) ? (parsed.errors as OpaJsonError[]) : null;
  } catch {
    return null;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function readSchemas(schemaDir: string): Promise<Record<PolicyEntrypoint, Record<string, unknown>>> {
  const out: Partial<Record<PolicyEntrypoint, Record<string, unknown>>> = {};
  for (const entrypoint of ENTRYPOINTS) {
    const file = join(schemaDir, `${INPUT_SCHEMAS[entrypoint]}.json`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(file, 'utf8'));
    } catch (thrown) {
      throw new RolegateError('RG_POLICY_CHECK', `cannot read the input schema ${file} (${describeThrown(thrown)}): rolegate's installation is incomplete`, {
        cause: thrown,
      });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new RolegateError('RG_POLICY_CHECK', `${file} is not a JSON Schema object`);
    out[entrypoint] = parsed as Record<string, unknown>;
  }
  return out as Record<PolicyEntrypoint, Record<string, unknown>>;
}

// Files the bundle never contains are not checked either (buildPolicy skips them too).
const IGNORED = ['--ignore', '.*', '--ignore', 'node_modules'];

/**
 * Stage 1: `opa check --strict --schema <schemaDir> <dir>` (tests included),
 * then the same modules against the combined input schema; errors of the
 * second run that the first already reported, or that only say an annotated
 * package's schema is unknown to it, are dropped.
 */
export async function schemaCheck(options: { dir: string; opaPath: string; schemaDir: string; timeoutMs?: number }): Promise<PolicyProblem[]> {
  const schemas = await readSchemas(options.schemaDir);
  const combined = combinedInputSchema(Object.fromEntries(ENTRYPOINTS.map((e) => [INPUT_SCHEMAS[e], schemas[e]])));
  const work = await mkdtemp(join(tmpdir(), 'rolegate-check-'));
  try {
    const combinedPath = join(work, 'input.json');
    await writeFile(combinedPath, JSON.stringify(combined));
    const runOptions = { timeoutMs: options.timeoutMs ?? 120_000 };
    const [annotated, global] = await Promise.all([
      runOpa(options.opaPath, ['check', '--strict', '--max-errors=-1', ...IGNORED, '--schema', options.schemaDir, options.dir], runOptions),
      runOpa(options.opaPath, ['check', '--max-errors=-1', '--format', 'json', ...IGNORED, '--schema', combinedPath, options.dir], runOptions),
    ]);
    const problems: PolicyProblem[] = [];
    const seen = new Set<string>();
    if (annotated.code !== 0) {
      const chunks = splitOpaErrors(`${annotated.stderr}${annotated.stdout}`.trim());
      if (chunks.length === 0) chunks.push(`opa check failed (exit ${annotated.code}) with no message`);
      for (const chunk of chunks) {
        const key = errorKey(chunk);
        if (key !== null) seen.add(key);
        seen.add(chunk);
        problems.push({ stage: 'schema', message: chunk });
      }
    }
    if (global.code !== 0) {
      const errors = jsonErrors(`${global.stdout}\n${global.stderr}`);
      for (const error of errors ?? []) {
        if (typeof error.message === 'string' && error.message.startsWith('undefined schema:')) continue;
        const chunk = renderJsonError(error);
        const key = errorKey(chunk);
        if (seen.has(chunk) || (key !== null && seen.has(key))) continue;
        if (key !== null) seen.add(key);
        seen.add(chunk);
        problems.push({ stage: 'schema', message: chunk });
      }
    }
    return problems;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// 3. smoke

/** The sample inputs of each entry point: the `examples` of its input schema. */
export async function sampleInputs(schemaDir: string = SHIPPED_SCHEMA_DIR): Promise<Record<PolicyEntrypoint, unknown[]>> {
  const schemas = await readSchemas(schemaDir);
  const out: Partial<Record<PolicyEntrypoint, unknown[]>> = {};
  for (const entrypoint of ENTRYPOINTS) {
    const examples = schemas[entrypoint].examples;
    if (!Array.isArray(examples) || examples.length === 0) {
      throw new RolegateError('RG_POLICY_CHECK', `${join(schemaDir, `${INPUT_SCHEMAS[entrypoint]}.json`)} has no examples: the smoke test needs sample inputs`);
    }
    out[entrypoint] = examples;
  }
  return out as Record<PolicyEntrypoint, unknown[]>;
}

function pick(value: unknown, ...path: string[]): unknown {
  let at = value;
  for (const key of path) {
    if (typeof at !== 'object' || at === null) return undefined;
    at = (at as Record<string, unknown>)[key];
  }
  return at;
}

/** A short name for a sample input: who, from where, what. */
export function sampleLabel(entrypoint: PolicyEntrypoint, input: unknown): string {
  const name = String(pick(input, 'identity', 'name'));
  if (entrypoint === 'rolegate/connect') {
    const role = pick(input, 'request', 'role');
    return `${name} from ${String(pick(input, 'client', 'addr'))} to ${String(pick(input, 'request', 'database'))}${typeof role === 'string' ? ` as ${role}` : ''}`;
  }
  return `${name} as ${String(pick(input, 'session', 'role'))}: ${String(pick(input, 'statement', 'sql'))}`;
}

function shortJson(value: unknown, max = 200): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/**
 * Stage 3: evaluates both entry points on every sample (with the policy's own
 * data) and reports each distinct problem once per entry point, naming the
 * first sample that shows it and what the policy answered.
 */
export async function smokeTest(artifact: PolicyArtifact, samples: Record<PolicyEntrypoint, unknown[]>): Promise<PolicyProblem[]> {
  let policy: LoadedPolicy;
  try {
    // print() compiles to internal.print (the build keeps it): served as a no-op here, the proxy logs it.
    policy = await loadPolicy(artifact.module, { initial: DEFAULT_INITIAL_MEMORY_PAGES, maximum: DEFAULT_MAXIMUM_MEMORY_PAGES }, { 'internal.print': () => undefined });
    if (typeof artifact.data !== 'object' || artifact.data === null) throw new Error('the policy data is not a JSON object');
    policy.setData(artifact.data);
  } catch (thrown) {
    return [{ stage: 'smoke', message: `the policy cannot be instantiated with its data: ${describeThrown(thrown)}` }];
  }
  const problems: PolicyProblem[] = [];
  const entrypointIds: unknown = policy.entrypoints;
  const ids = (typeof entrypointIds === 'object' && entrypointIds !== null ? entrypointIds : {}) as Record<string, unknown>;
  for (const entrypoint of ENTRYPOINTS) {
    const id = ids[entrypoint];
    if (typeof id !== 'number') {
      problems.push({ stage: 'smoke', message: `${entrypoint}: the compiled policy has no such entry point` });
      continue;
    }
    const inputs = samples[entrypoint];
    const found = new Map<string, { label: string; answer: unknown; count: number }>();
    for (const input of inputs) {
      let value: unknown;
      let messages: string[];
      try {
        const resultSet: unknown = policy.evaluate(input, id);
        value = Array.isArray(resultSet) && resultSet.length === 1 ? (resultSet[0] as { result?: unknown }).result : undefined;
        messages = decisionProblems(entrypoint, value);
      } catch (thrown) {
        value = undefined;
        messages = [`evaluation failed: ${describeThrown(thrown)}`];
      }
      for (const message of messages) {
        const entry = found.get(message);
        if (entry === undefined) found.set(message, { label: sampleLabel(entrypoint, input), answer: value, count: 1 });
        else entry.count++;
      }
    }
    for (const [message, { label, answer, count }] of found) {
      const more = count > 1 ? ` (and ${count - 1} more of ${inputs.length} samples)` : '';
      const answered = message.startsWith('evaluation failed') ? '' : `; it answered ${shortJson(answer)}`;
      problems.push({ stage: 'smoke', message: `${entrypoint}: ${message} — sample input "${label}"${more}${answered}` });
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------
// all stages

/** Build problems, without those the schema stage already reported (a syntax error shows in both). */
function buildProblems(error: RolegateError, schemaProblems: PolicyProblem[]): PolicyProblem[] {
  const chunks = error.detail === undefined ? [] : splitOpaErrors(error.detail.trim());
  if (chunks.length === 0 || chunks.some((chunk) => !/^.+?:\d+: /.test(chunk))) return [{ stage: 'build', message: error.message }];
  const known = new Set(schemaProblems.map((p) => errorKey(p.message)).filter((key) => key !== null));
  return chunks.filter((chunk) => !known.has(errorKey(chunk) ?? '')).map((message) => ({ stage: 'build', message }));
}

/** Runs every stage and collects every problem; never throws for a problem of the policy. */
export async function runPolicyChecks(options: PolicyCheckOptions): Promise<PolicyCheckReport> {
  const schemaDir = options.schemaDir ?? SHIPPED_SCHEMA_DIR;
  const report: PolicyCheckReport = { problems: [], built: null, artifact: null, buildError: null, samples: { 'rolegate/connect': 0, 'rolegate/statement': 0 } };
  if (!(await isDirectory(options.dir))) {
    report.buildError = new RolegateError('RG_POLICY_BUILD', `policy directory ${options.dir} does not exist`);
    report.problems.push({ stage: 'build', message: report.buildError.message });
    return report;
  }
  const timing = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
  const caught = (thrown: unknown): RolegateError => {
    if (thrown instanceof RolegateError) return thrown;
    throw thrown;
  };
  const [schema, build, samples] = await Promise.all([
    schemaCheck({ dir: options.dir, opaPath: options.opaPath, schemaDir, ...timing }).catch(caught),
    buildPolicy({ dir: options.dir, opaPath: options.opaPath, ...(options.dataFile === undefined ? {} : { dataFile: options.dataFile }), ...timing }).catch(caught),
    sampleInputs(schemaDir).catch(caught),
  ]);
  if (schema instanceof RolegateError) report.problems.push({ stage: 'schema', message: schema.message });
  else report.problems.push(...schema);
  if (build instanceof RolegateError) {
    report.buildError = build;
    report.problems.push(...buildProblems(build, schema instanceof RolegateError ? [] : schema));
    return report;
  }
  report.built = build;
  report.problems.push(...(await dataKeyProblems(build.data, schemaDir)));
  try {
    report.artifact = await compilePolicy(build);
  } catch (thrown) {
    report.buildError = caught(thrown);
    report.problems.push({ stage: 'build', message: report.buildError.message });
    return report;
  }
  if (samples instanceof RolegateError) {
    report.problems.push({ stage: 'smoke', message: samples.message });
    return report;
  }
  report.samples = { 'rolegate/connect': samples['rolegate/connect'].length, 'rolegate/statement': samples['rolegate/statement'].length };
  report.problems.push(...(await smokeTest(report.artifact, samples)));
  return report;
}

/**
 * Top-level data keys that look like a misspelt library key. The library's
 * lint (Rego) checks every key inside services, roles and windows, but cannot
 * list data's own top-level keys (that rule would depend on itself); authors
 * may keep their own data at the top level (a policies/<name>/data.json
 * becomes data.<name>), so only a near miss of a key the data schema names is
 * refused — `maintenance_window` silently dropping every maintenance window is
 * what this catches.
 */
export async function dataKeyProblems(data: unknown, schemaDir: string): Promise<PolicyProblem[]> {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return [];
  let known: string[];
  try {
    const schema = JSON.parse(await readFile(join(schemaDir, 'data.json'), 'utf8')) as { properties?: Record<string, unknown> };
    known = Object.keys(schema.properties ?? {});
  } catch {
    return [];
  }
  const problems: PolicyProblem[] = [];
  for (const key of Object.keys(data)) {
    if (known.includes(key)) continue;
    const near = known.find((k) => editDistance(k, key) <= 2);
    if (near !== undefined) problems.push({ stage: 'data', message: `unknown-key: data.${key} is not a key the library reads (did you mean ${near}?)` });
  }
  return problems;
}

/** Levenshtein distance (short keys only). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row.push(Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = row;
  }
  return prev[b.length] as number;
}

/** The problems as one text: a heading, then one "- " item per problem (continuation lines indented). */
export function formatProblems(dir: string, problems: readonly PolicyProblem[]): string {
  const items = problems.map((p) => `- ${p.message.replaceAll('\n', '\n  ')}`);
  return `policy ${dir} failed the build checks (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${items.join('\n')}`;
}

/**
 * What start, reload and check-config use: the checked, compiled policy, or a
 * RolegateError listing every problem — RG_POLICY_CHECK when a check failed;
 * a failure of the build alone keeps the build's own error (RG_POLICY_BUILD,
 * RG_POLICY_LOAD).
 */
export async function buildCheckedPolicy(options: PolicyCheckOptions): Promise<{ built: BuiltPolicy; artifact: PolicyArtifact }> {
  const report = await runPolicyChecks(options);
  if (report.problems.length === 0 && report.built !== null && report.artifact !== null) return { built: report.built, artifact: report.artifact };
  if (report.buildError !== null && report.problems.every((p) => p.stage === 'build')) throw report.buildError;
  const text = formatProblems(options.dir, report.problems);
  throw new RolegateError('RG_POLICY_CHECK', text, { detail: report.problems.map((p) => p.message).join('\n') });
}
