// Compiling a policy directory to WebAssembly with the OPA CLI (supervisor side).
//
//   opa build -t wasm -e rolegate/connect -e rolegate/statement \
//     --capabilities <opa-wasm capabilities + rego_v1> -o bundle.tar.gz <dir>
//
// opa-wasm reads neither file of the bundle, so we extract /policy.wasm and
// /data.json ourselves. Only what the bundle needs is staged: *.rego except
// *_test.rego, and data.json / data.yaml files (a subdirectory's data lands at
// its path: policies/catalog/data.json → data.catalog). `opa build <dir>` on its
// own would also load every other JSON file (schemas, fixtures) as data.

import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { RolegateError } from '../errors.ts';
import { REPO_ROOT, runOpa } from './opa-cli.ts';
import { readTarFiles } from './tar.ts';
import { builtinNames, explainUndefinedFunctions } from './wasm-builtins.ts';

/** The entry points rolegate evaluates: connect once per login, statement for every statement (docs/policy.md). */
export const ENTRYPOINTS = ['rolegate/connect', 'rolegate/statement'] as const;
export type PolicyEntrypoint = (typeof ENTRYPOINTS)[number];

/** The policy library shipped with rolegate. */
export const SHIPPED_POLICY_DIR = join(REPO_ROOT, 'policies');
/** JSON Schemas of the two inputs, laid out for `opa check --schema`. */
export const SHIPPED_SCHEMA_DIR = join(REPO_ROOT, 'docs', 'policy-schema');

const DATA_FILE_NAMES = new Set(['data.json', 'data.yaml', 'data.yml']);

export interface BuildPolicyOptions {
  /** Directory of .rego files (and data.json files) to compile. */
  dir: string;
  opaPath: string;
  /** Replaces `<dir>/data.json` (the example data) with a deployment's data; .json or .yaml. */
  dataFile?: string;
  /** Evaluate `data.rolegate.lint.errors` and refuse data it reports (default true). */
  lint?: boolean;
  /** Per opa invocation; default 120 s. */
  timeoutMs?: number;
}

export interface BuiltPolicy {
  /** policy.wasm from the bundle: compile it once with WebAssembly.compile. */
  wasm: Uint8Array;
  /** data.json from the bundle (all data files merged): give it to PolicyEngine#setData. */
  data: unknown;
  /** sha256 over wasm + data, 16 hex digits: changes whenever either does. */
  revision: string;
}

function buildError(message: string, output?: string, cause?: unknown): RolegateError {
  const text = output === undefined || output.trim() === '' ? message : `${message}:\n${output.trim()}`;
  const options: { detail?: string; cause?: unknown } = {};
  if (output !== undefined) options.detail = output;
  if (cause !== undefined) options.cause = cause;
  return new RolegateError('RG_POLICY_BUILD', text, options);
}

/** The declaration of print()'s builtin, as `opa capabilities --current` lists it. */
const INTERNAL_PRINT = { name: 'internal.print', decl: { type: 'function', args: [{ type: 'array', dynamic: { type: 'set', of: { type: 'any' } } }] } } as const;

/**
 * opa-wasm 1.10 ships capabilities.json listing the builtins its runtime can
 * serve; compiling against it makes an unsupported builtin (time.now_ns, …) a
 * build error instead of a runtime one. The file predates Rego v1, so the
 * `rego_v1` feature is added (without it OPA 1.x refuses to parse v1 syntax).
 */
export async function opaWasmCapabilities(): Promise<Record<string, unknown>> {
  let path: string;
  try {
    const entry = fileURLToPath(import.meta.resolve('@open-policy-agent/opa-wasm'));
    path = join(dirname(entry), '..', 'capabilities.json');
  } catch (thrown) {
    throw buildError('cannot resolve @open-policy-agent/opa-wasm (is it installed?)', undefined, thrown);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (thrown) {
    throw buildError(`cannot read ${path}`, undefined, thrown);
  }
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { builtins?: unknown }).builtins)) {
    throw buildError(`${path} is not an OPA capabilities file`);
  }
  const capabilities = parsed as Record<string, unknown>;
  const features = Array.isArray(capabilities.features) ? capabilities.features.filter((f) => typeof f === 'string') : [];
  if (!features.includes('rego_v1')) features.push('rego_v1');
  // print() compiles to the builtin internal.print, which opa-wasm's list
  // lacks; PolicyEngine serves it (each line goes to the worker's log).
  const builtins = capabilities.builtins as unknown[];
  const hasPrint = builtins.some((b) => typeof b === 'object' && b !== null && (b as { name?: unknown }).name === INTERNAL_PRINT.name);
  return { ...capabilities, builtins: hasPrint ? builtins : [...builtins, INTERNAL_PRINT], features };
}

const opaBuiltinsByPath = new Map<string, Promise<Set<string>>>();

/**
 * Every builtin the opa binary knows (`opa capabilities --current`), asked
 * once per binary: it tells a builtin the wasm target lacks from a function
 * that does not exist at all. Empty when opa cannot say.
 */
export function opaBuiltinNames(opaPath: string): Promise<Set<string>> {
  let names = opaBuiltinsByPath.get(opaPath);
  if (names === undefined) {
    names = runOpa(opaPath, ['capabilities', '--current'], { timeoutMs: 30_000 }).then(
      (result) => {
        if (result.code !== 0) return new Set<string>();
        try {
          return builtinNames(JSON.parse(result.stdout));
        } catch {
          return new Set<string>();
        }
      },
      () => new Set<string>(),
    );
    opaBuiltinsByPath.set(opaPath, names);
  }
  return names;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** One file a policy is built from. */
export interface PolicySourceFile {
  /** Where it is. */
  path: string;
  /** Its path below the policy directory, '/'-separated. */
  name: string;
  kind: 'rego' | 'data';
}

/**
 * The files a build compiles, in a stable order: every .rego except
 * *_test.rego, and every data file, below `dir` (hidden entries and
 * node_modules skipped). `replaceRootData`: a data file given apart replaces
 * the directory's own root data file, which is left out.
 */
export async function policySourceFiles(dir: string, replaceRootData: boolean): Promise<PolicySourceFile[]> {
  const out: PolicySourceFile[] = [];
  const walk = async (at: string): Promise<void> => {
    const entries = await readdir(at, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (entry.name.startsWith('.') || entry.name === 'node_modules') continue;
      const from = join(at, entry.name);
      if (entry.isDirectory()) {
        await walk(from);
        continue;
      }
      if (!entry.isFile()) continue;
      const kind = entry.name.endsWith('.rego') && !entry.name.endsWith('_test.rego') ? 'rego' : DATA_FILE_NAMES.has(entry.name) && !(replaceRootData && at === dir) ? 'data' : null;
      if (kind !== null) out.push({ path: from, name: relative(dir, from).split(sep).join('/'), kind });
    }
  };
  await walk(dir);
  return out;
}

/** Copies what the bundle needs from `source` into `target`, keeping relative paths; returns the number of .rego files. */
async function stage(source: string, target: string, replaceRootData: boolean): Promise<number> {
  const files = await policySourceFiles(source, replaceRootData);
  for (const file of files) {
    const to = join(target, relative(source, file.path));
    await mkdir(dirname(to), { recursive: true });
    await copyFile(file.path, to);
  }
  return files.filter((f) => f.kind === 'rego').length;
}

/** The directory name policies are built under (see buildPolicy). */
const STAGED_NAME = 'rolegate-policy';

/** Rewrites staged paths in opa's messages back to the caller's directory. */
function unstagePaths(text: string, stagedName: string, dir: string): string {
  const shown = dir.endsWith('/') ? dir.slice(0, -1) : dir;
  return text.replaceAll(`${stagedName}/`, `${shown}/`);
}

function parseManifestEntrypoints(manifest: Uint8Array | undefined): string[] {
  if (manifest === undefined) return [];
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(manifest));
    const wasm = (parsed as { wasm?: unknown }).wasm;
    if (!Array.isArray(wasm)) return [];
    return wasm.map((entry: unknown) => (entry as { entrypoint?: unknown }).entrypoint).filter((e): e is string => typeof e === 'string');
  } catch {
    return [];
  }
}

export function policyRevision(wasm: Uint8Array, dataJson: Uint8Array): string {
  return createHash('sha256').update(wasm).update(new Uint8Array([0])).update(dataJson).digest('hex').slice(0, 16);
}

/** Compiles a policy directory to WebAssembly; any failure is RG_POLICY_BUILD with opa's own message. */
export async function buildPolicy(options: BuildPolicyOptions): Promise<BuiltPolicy> {
  const dir = resolve(options.dir);
  if (!(await isDirectory(dir))) throw buildError(`policy directory ${options.dir} does not exist`);
  if (options.dataFile !== undefined) {
    const ext = extname(options.dataFile).toLowerCase();
    if (ext !== '.json' && ext !== '.yaml' && ext !== '.yml') throw buildError(`data file ${options.dataFile} must be .json or .yaml`);
    try {
      if (!(await stat(options.dataFile)).isFile()) throw new Error('not a file');
    } catch (thrown) {
      throw buildError(`data file ${options.dataFile} does not exist`, undefined, thrown);
    }
  }

  const work = await mkdtemp(join(tmpdir(), 'rolegate-policy-'));
  try {
    // Staged under one fixed name, whatever the directory is called: opa writes
    // the file paths into the compiled policy, so a draft copied elsewhere must
    // build to the same revision. opa's messages are given the caller's paths back.
    const stagedName = STAGED_NAME;
    const stagedDir = join(work, 'src', stagedName);
    await mkdir(stagedDir, { recursive: true });
    const regoFiles = await stage(dir, stagedDir, options.dataFile !== undefined);
    if (regoFiles === 0) throw buildError(`policy directory ${options.dir} holds no .rego files`);
    if (options.dataFile !== undefined) {
      const ext = extname(options.dataFile).toLowerCase() === '.json' ? 'json' : 'yaml';
      await copyFile(options.dataFile, join(stagedDir, `data.${ext}`));
    }
    const capabilitiesPath = join(work, 'capabilities.json');
    await writeFile(capabilitiesPath, JSON.stringify(await opaWasmCapabilities()));
    const bundlePath = join(work, 'bundle.tar.gz');

    // Without --wasm-include-print opa drops every print() call from the wasm, silently.
    const args = ['build', '-t', 'wasm', '--wasm-include-print'];
    for (const entrypoint of ENTRYPOINTS) args.push('-e', entrypoint);
    args.push('--capabilities', capabilitiesPath, '-o', bundlePath, stagedName);
    const runOptions = { cwd: join(work, 'src'), timeoutMs: options.timeoutMs ?? 120_000 };
    const [build, lint] = await Promise.all([
      runOpa(options.opaPath, args, runOptions),
      options.lint === false ? null : runOpa(options.opaPath, ['eval', '--format', 'json', '--data', stagedName, 'data.rolegate.lint.errors'], runOptions),
    ]);
    if (build.code !== 0) {
      let output = unstagePaths(`${build.stderr}${build.stdout}`, stagedName, options.dir);
      if (output.includes('undefined function')) output = explainUndefinedFunctions(output, await opaBuiltinNames(options.opaPath));
      throw buildError(`opa build failed for ${options.dir}`, output);
    }
    if (lint !== null) {
      const problems = lintProblems(lint.code, lint.stdout, lint.stderr);
      if (problems.length > 0) {
        throw buildError(`policy data failed data.rolegate.lint (${options.dataFile ?? join(options.dir, 'data.json')})`, problems.map((p) => `- ${p}`).join('\n'));
      }
    }

    let files: Map<string, Uint8Array>;
    try {
      files = readTarFiles(gunzipSync(await readFile(bundlePath)));
    } catch (thrown) {
      throw buildError(`cannot read the bundle opa built (${thrown instanceof Error ? thrown.message : String(thrown)})`, undefined, thrown);
    }
    const wasm = files.get('policy.wasm');
    const dataJson = files.get('data.json') ?? new TextEncoder().encode('{}');
    if (wasm === undefined) throw buildError('the bundle opa built has no /policy.wasm');
    const entrypoints = parseManifestEntrypoints(files.get('.manifest'));
    for (const entrypoint of ENTRYPOINTS) {
      if (!entrypoints.includes(entrypoint)) throw buildError(`the bundle opa built lacks the entry point ${entrypoint}`);
    }
    let data: unknown;
    try {
      data = JSON.parse(new TextDecoder().decode(dataJson));
    } catch (thrown) {
      throw buildError('the bundle opa built has an unreadable /data.json', undefined, thrown);
    }
    return { wasm: wasm.slice(), data, revision: policyRevision(wasm, dataJson) };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Reads `opa eval --format json data.rolegate.lint.errors`; undefined (no lint package) means no problems. */
function lintProblems(code: number, stdout: string, stderr: string): string[] {
  if (code !== 0) return [`opa eval of data.rolegate.lint.errors failed: ${stderr.trim() || stdout.trim()}`];
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    return [`opa eval printed unreadable JSON: ${stdout.slice(0, 200)}`];
  }
  const result = (parsed as { result?: unknown }).result;
  if (!Array.isArray(result) || result.length === 0) return [];
  const expressions = (result[0] as { expressions?: unknown }).expressions;
  if (!Array.isArray(expressions) || expressions.length === 0) return [];
  const value = (expressions[0] as { value?: unknown }).value;
  if (!Array.isArray(value)) return [`data.rolegate.lint.errors is not a set of strings`];
  return value.map((v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v))).sort();
}

export interface CheckPolicyOptions {
  dir: string;
  opaPath: string;
  /** A directory of JSON Schemas referenced by `# METADATA schemas:` annotations (see SHIPPED_SCHEMA_DIR). */
  schemaDir?: string;
  timeoutMs?: number;
}

/** `opa check --strict [--schema <dir>] <dir>` (tests included); failure is RG_POLICY_BUILD with opa's output. */
export async function checkPolicy(options: CheckPolicyOptions): Promise<void> {
  const dir = resolve(options.dir);
  if (!(await isDirectory(dir))) throw buildError(`policy directory ${options.dir} does not exist`);
  const args = ['check', '--strict'];
  if (options.schemaDir !== undefined) args.push('--schema', options.schemaDir);
  args.push(options.dir);
  const result = await runOpa(options.opaPath, args, { timeoutMs: options.timeoutMs ?? 120_000 });
  if (result.code !== 0) throw buildError(`opa check --strict failed for ${options.dir}`, `${result.stderr}${result.stdout}`);
}
