// Locating, installing and running the OPA command-line tool. rolegate needs
// `opa` only to compile policies (supervisor side, never on the hot path): the
// workers evaluate the compiled WebAssembly with @open-policy-agent/opa-wasm.

import { execFile } from 'node:child_process';
import { access, constants, mkdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RolegateError } from '../errors.ts';

/** The OPA release rolegate's policies and opa-wasm 1.10 are tested with. */
export const OPA_VERSION = '1.22.3';
export const OPA_MODULE = 'github.com/open-policy-agent/opa';

/** The repository root (…/src/policy/opa-cli.ts → …/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface OpaRunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOpaOptions {
  cwd?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Written to the program's stdin (then closed). */
  input?: string;
}

const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/**
 * Runs a program and resolves with its exit code and output; rejects only when
 * the program cannot be started (ENOENT, EACCES) or times out.
 */
export function runProgram(file: string, args: readonly string[], options: RunOpaOptions = {}): Promise<OpaRunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        cwd: options.cwd,
        env: options.env ?? process.env,
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: MAX_OUTPUT_BYTES,
        encoding: 'utf8',
        windowsHide: true,
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        // A non-zero exit carries a numeric code; spawn failures carry a string code.
        if (typeof error.code === 'number') {
          resolve({ code: error.code, stdout, stderr });
          return;
        }
        if (error.killed === true) {
          reject(new Error(`${file} timed out after ${options.timeoutMs ?? 120_000} ms`, { cause: error }));
          return;
        }
        // ENOENT, EACCES: the program could not be started.
        reject(new Error(error.message, { cause: error }));
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Runs `opa <args>`; failing to start it is an RG_POLICY_BUILD error. */
export async function runOpa(opaPath: string, args: readonly string[], options: RunOpaOptions = {}): Promise<OpaRunResult> {
  try {
    return await runProgram(opaPath, args, options);
  } catch (thrown) {
    throw new RolegateError('RG_POLICY_BUILD', `could not run ${opaPath}: ${thrown instanceof Error ? thrown.message : String(thrown)}`, {
      cause: thrown,
    });
  }
}

/** `opa version` → "1.22.3", or null when the file is not a working opa binary. */
export async function opaVersion(opaPath: string, env?: NodeJS.ProcessEnv): Promise<string | null> {
  let result: OpaRunResult;
  try {
    result = await runProgram(opaPath, ['version'], { timeoutMs: 20_000, env });
  } catch {
    return null;
  }
  if (result.code !== 0) return null;
  const match = /^Version:\s*v?(\S+)/m.exec(result.stdout);
  return match?.[1] ?? null;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | null> {
  const dirs = (env.PATH ?? '').split(delimiter).filter((dir) => dir !== '');
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return null;
}

export interface LocateOpaOptions {
  /** Default: the repository this file belongs to. */
  repoRoot?: string;
  /** Default: process.env (ROLEGATE_OPA, PATH). */
  env?: NodeJS.ProcessEnv;
}

/** Where ensureOpa installs OPA: <repo>/.tools/bin/opa. */
export function toolsOpaPath(repoRoot: string = REPO_ROOT): string {
  return join(repoRoot, '.tools', 'bin', 'opa');
}

/**
 * Finds the OPA binary, in order:
 *   1. $ROLEGATE_OPA (an explicit choice: any version, but it must run);
 *   2. <repo>/.tools/bin/opa (installed by ensureOpa), if it reports OPA_VERSION
 *      (a stale one is reinstalled by ensureOpa);
 *   3. `opa` on PATH, only if `opa version` reports OPA_VERSION.
 * Returns null when none qualifies.
 */
export async function locateOpa(options: LocateOpaOptions = {}): Promise<string | null> {
  const env = options.env ?? process.env;
  const explicit = env.ROLEGATE_OPA;
  if (explicit !== undefined && explicit !== '') {
    if ((await opaVersion(explicit, env)) === null) {
      throw new RolegateError('RG_POLICY_BUILD', `ROLEGATE_OPA=${explicit} is not a working opa binary (\`${explicit} version\` failed)`);
    }
    return explicit;
  }
  const tools = toolsOpaPath(options.repoRoot ?? REPO_ROOT);
  if ((await isExecutable(tools)) && (await opaVersion(tools, env)) === OPA_VERSION) return tools;
  const onPath = await findOnPath('opa', env);
  if (onPath !== null && (await opaVersion(onPath, env)) === OPA_VERSION) return onPath;
  return null;
}

export interface EnsureOpaOptions extends LocateOpaOptions {
  /** One line before a (slow) install. Default: stderr. */
  log?: (line: string) => void;
  /** Default: 10 minutes (go downloads and compiles OPA). */
  installTimeoutMs?: number;
}

/**
 * locateOpa, else `go install github.com/open-policy-agent/opa@v1.22.3` with
 * GOBIN=<repo>/.tools/bin. Resolves with the path of a working opa binary.
 */
export async function ensureOpa(options: EnsureOpaOptions = {}): Promise<string> {
  const found = await locateOpa(options);
  if (found !== null) return found;

  const env = options.env ?? process.env;
  const repoRoot = options.repoRoot ?? REPO_ROOT;
  const target = toolsOpaPath(repoRoot);
  const goBin = join(repoRoot, '.tools', 'bin');
  const go = await findOnPath('go', env);
  if (go === null) {
    throw new RolegateError(
      'RG_POLICY_BUILD',
      `opa ${OPA_VERSION} not found (ROLEGATE_OPA unset, no ${target}, no matching opa on PATH) and \`go\` is not on PATH to install it: ` +
        `install Go (https://go.dev/dl/) or download opa ${OPA_VERSION} and set ROLEGATE_OPA`,
    );
  }
  await mkdir(goBin, { recursive: true });
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  log(`rolegate: installing opa ${OPA_VERSION} into ${goBin} with \`go install\` (takes a minute or two)…`);
  const result = await runProgram(go, ['install', `${OPA_MODULE}@v${OPA_VERSION}`], {
    cwd: repoRoot,
    env: { ...env, GOBIN: goBin },
    timeoutMs: options.installTimeoutMs ?? 600_000,
  }).catch((thrown: unknown) => {
    throw new RolegateError('RG_POLICY_BUILD', `go install of opa ${OPA_VERSION} failed: ${thrown instanceof Error ? thrown.message : String(thrown)}`, {
      cause: thrown,
    });
  });
  if (result.code !== 0) {
    throw new RolegateError('RG_POLICY_BUILD', `go install of opa ${OPA_VERSION} failed (exit ${result.code}):\n${result.stderr.trim()}`, {
      detail: result.stderr,
    });
  }
  const version = await opaVersion(target, env);
  if (version !== OPA_VERSION) {
    throw new RolegateError('RG_POLICY_BUILD', `go install reported success but \`${target} version\` reports ${version ?? 'nothing'}, not ${OPA_VERSION}`);
  }
  return target;
}
