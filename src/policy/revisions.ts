// The policy revision store (config policy.revisions): every policy rolegate
// built to make active is kept under <dir>/<revision>/, so an audit record's
// policy_revision can be evaluated again long after a reload replaced it
// (`rolegate replay --baseline REV`, `--policy-revision REV`). Content
// addressed: the revision is sha256 over the wasm and data (build.ts), so
// keeping the same revision again only marks it as recently active.
//
//   <dir>/<revision>/policy.wasm   what the workers evaluate
//   <dir>/<revision>/data.json     the data document the workers were given
//   <dir>/<revision>/src/…         the sources as opa built them: every .rego
//                                  but *_test.rego, and the data files (the
//                                  deployment's data file as src/data.json|yaml)
//   <dir>/<revision>/meta.json     revision, when kept, where from, checksums
//
// Bounded: past max_count the revisions least recently kept are deleted. A
// revision is written into a temporary directory and renamed into place, so a
// reader never sees half of one, and two proxies sharing the directory race
// harmlessly (the loser's copy is the same bytes and is dropped).

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { RolegateError } from '../errors.ts';
import { policySourceFiles } from './build.ts';

/** What keeping a revision needs: the built policy and what it was built from. */
export interface RevisionToKeep {
  revision: string;
  wasm: Uint8Array;
  data: unknown;
  /** The policy's Rego mentions `sql` (decisions keyed by the statement text). */
  readsStatementText: boolean;
  sourceDir: string;
  dataFile: string | null;
  /** Relative path → bytes (readPolicySources()); null: not kept (the files changed while the policy was built). */
  sources: ReadonlyMap<string, Uint8Array> | null;
}

export interface RevisionMeta {
  revision: string;
  /** RFC 3339: first kept. */
  kept_at: string;
  source_dir: string;
  data_file: string | null;
  reads_statement_text: boolean;
  /** sha256 (hex) of policy.wasm and data.json as written. */
  sha256: { 'policy.wasm': string; 'data.json': string };
  /** Files under src/ (empty when the sources were not kept). */
  sources: string[];
}

/** A revision read back: enough to instantiate it (PolicyEngine) and key its decisions. */
export interface StoredRevision {
  revision: string;
  wasm: Uint8Array;
  data: unknown;
  readsStatementText: boolean;
  meta: RevisionMeta;
  /** <dir>/<revision> */
  path: string;
}

export interface KeepOutcome {
  /** false: it was there already (now marked recently active). */
  added: boolean;
  path: string;
  /** Revisions deleted to stay within maxCount. */
  evicted: string[];
}

/** Revision ids are hex (build.ts: 16 digits); anything else is refused before it names a path. */
const REVISION = /^[0-9a-f]{8,64}$/;

export function isRevisionId(text: string): boolean {
  return REVISION.test(text);
}


/**
 * The sources a policy is built from, as build.ts stages them: every .rego
 * except *_test.rego and every data file under `dir` (hidden entries and
 * node_modules skipped); with `dataFile`, the root data file is that one.
 */
export async function readPolicySources(dir: string, dataFile: string | null): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const file of await policySourceFiles(dir, dataFile !== null)) out.set(file.name, await readFile(file.path));
  if (dataFile !== null) out.set(path.extname(dataFile).toLowerCase() === '.json' ? 'data.json' : 'data.yaml', await readFile(dataFile));
  return out;
}

/** Same files, same bytes. */
export function sameSources(a: ReadonlyMap<string, Uint8Array>, b: ReadonlyMap<string, Uint8Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, bytes] of a) {
    const other = b.get(name);
    if (other === undefined || Buffer.compare(Buffer.from(bytes), Buffer.from(other)) !== 0) return false;
  }
  return true;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function storeError(message: string, cause?: unknown): RolegateError {
  return new RolegateError('RG_POLICY_LOAD', message, cause === undefined ? {} : { cause });
}

/** Keep `policy` under `dir` (created if missing), then delete the least recently kept past maxCount. */
export async function keepRevision(dir: string, maxCount: number, policy: RevisionToKeep): Promise<KeepOutcome> {
  if (!isRevisionId(policy.revision)) throw storeError(`policy revision "${policy.revision}" is not a revision id`);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  const target = path.join(dir, policy.revision);
  let added = false;
  if (await exists(path.join(target, 'meta.json'))) {
    // Kept before: now the most recently active again.
    const now = new Date();
    await utimes(path.join(target, 'meta.json'), now, now);
  } else {
    const temp = path.join(dir, `.tmp-${policy.revision}-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      await mkdir(path.join(temp, 'src'), { recursive: true });
      const dataJson = new TextEncoder().encode(JSON.stringify(policy.data));
      await writeFile(path.join(temp, 'policy.wasm'), policy.wasm);
      await writeFile(path.join(temp, 'data.json'), dataJson);
      const sources = policy.sources === null ? [] : [...policy.sources.keys()];
      for (const [name, bytes] of policy.sources ?? []) {
        const to = path.join(temp, 'src', ...name.split('/'));
        if (!to.startsWith(path.join(temp, 'src') + path.sep)) continue;
        await mkdir(path.dirname(to), { recursive: true });
        await writeFile(to, bytes);
      }
      const meta: RevisionMeta = {
        revision: policy.revision,
        kept_at: new Date().toISOString(),
        source_dir: policy.sourceDir,
        data_file: policy.dataFile,
        reads_statement_text: policy.readsStatementText,
        sha256: { 'policy.wasm': sha256(policy.wasm), 'data.json': sha256(dataJson) },
        sources,
      };
      await writeFile(path.join(temp, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
      try {
        await rename(temp, target);
        added = true;
      } catch (err) {
        // Another process kept the same revision meanwhile (same content): keep theirs.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      }
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }
  const evicted = await evict(dir, maxCount, policy.revision);
  return { added, path: target, evicted };
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

interface Listed {
  revision: string;
  keptMs: number;
}

/** Kept revisions, most recently kept first. */
async function listed(dir: string): Promise<Listed[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: Listed[] = [];
  for (const name of entries) {
    if (!isRevisionId(name)) continue;
    try {
      out.push({ revision: name, keptMs: (await stat(path.join(dir, name, 'meta.json'))).mtimeMs });
    } catch {
      // Not (or no longer) a complete revision.
    }
  }
  out.sort((a, b) => b.keptMs - a.keptMs || (a.revision < b.revision ? -1 : 1));
  return out;
}

async function evict(dir: string, maxCount: number, keep: string): Promise<string[]> {
  const all = await listed(dir);
  const evicted: string[] = [];
  let kept = 0;
  for (const entry of all) {
    if (entry.revision === keep || kept < maxCount - 1) {
      if (entry.revision !== keep) kept++;
      continue;
    }
    await rm(path.join(dir, entry.revision), { recursive: true, force: true });
    evicted.push(entry.revision);
  }
  return evicted;
}

/** The kept revisions' meta, most recently kept first. */
export async function listRevisions(dir: string): Promise<RevisionMeta[]> {
  const out: RevisionMeta[] = [];
  for (const entry of await listed(dir)) {
    try {
      out.push(JSON.parse(await readFile(path.join(dir, entry.revision, 'meta.json'), 'utf8')) as RevisionMeta);
    } catch {
      // Removed meanwhile, or unreadable: not listed.
    }
  }
  return out;
}

/** Read a kept revision back, its files checked against meta.json (RG_POLICY_LOAD when missing or changed). */
export async function loadRevision(dir: string, revision: string): Promise<StoredRevision> {
  if (!isRevisionId(revision)) throw storeError(`"${revision}" is not a policy revision id (hex digits, as audit records give it)`);
  const at = path.join(dir, revision);
  let meta: RevisionMeta;
  let wasm: Uint8Array;
  let dataJson: Uint8Array;
  try {
    meta = JSON.parse(await readFile(path.join(at, 'meta.json'), 'utf8')) as RevisionMeta;
    wasm = await readFile(path.join(at, 'policy.wasm'));
    dataJson = await readFile(path.join(at, 'data.json'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw storeError(`policy revision ${revision} is not kept in ${dir}`, err);
    throw storeError(`cannot read policy revision ${revision} from ${dir}: ${(err as Error).message}`, err);
  }
  if (meta.revision !== revision || meta.sha256?.['policy.wasm'] !== sha256(wasm) || meta.sha256['data.json'] !== sha256(dataJson)) {
    throw storeError(`policy revision ${revision} in ${dir} does not match its meta.json checksums (changed or damaged)`);
  }
  let data: unknown;
  try {
    data = JSON.parse(new TextDecoder().decode(dataJson));
  } catch (err) {
    throw storeError(`policy revision ${revision}: data.json is not JSON`, err);
  }
  return { revision, wasm, data, readsStatementText: meta.reads_statement_text === true, meta, path: at };
}
