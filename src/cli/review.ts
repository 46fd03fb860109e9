// `rolegate review`: least privilege from evidence. What the policy grants
// (its data: services, their roles and databases; the rule ids its sources
// name) set against what the audit log shows was used: services never seen,
// roles never chosen, databases never used, rules never matched, and tables a
// service could write but only read.
//
// Table access comes from the facts: a record's input (audit.input facts or
// full) holds them with read/write; a record without input has its SQL parsed
// again by the proxy's parser. Only allowed statements count as use.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { auditFiles, forEachLine, parseAuditLine, readLineChunks, type AuditLogRecord } from '../audit/log-reader.ts';
import { PROXY_RULES } from '../decision/proxy-rules.ts';
import { ENGINE_RULES } from '../policy/engine.ts';
import { loadRevision, readPolicySources } from '../policy/revisions.ts';
import type { TableAccess } from '../sql/statement-facts.ts';
import { FactsCache } from '../sql/facts-cache.ts';
import { initParser } from '../sql/parser.ts';

export const REVIEW_HELP = `rolegate review --audit FILE... [flags]

Least privilege from evidence: what the policy grants against what the audit
log shows was used. Services in the policy data never seen, roles a service
never chose, databases it never used, rule ids the policy names that never
decided anything, tables a service could write but only read.

  --audit FILE          an audit log (repeatable; FILE.1 … beside it are read too)
  --since RFC3339       only records from this instant on
  --policy DIR          the policy whose grants are reviewed (its data files
                        and .rego sources); without one, only usage is shown
  --data FILE           data file replacing DIR/data.json
  --policy-revision REV a kept revision instead (with --revisions DIR)
  --revisions DIR       policy.revisions.dir
  --json                one JSON document on stdout

Exit status: 0 done; 2 usage; 3 the policy cannot be read.
`;

class UsageError extends Error {}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface TableUse {
  read: number;
  write: number;
}

interface ServiceUse {
  sessions: number;
  connectsAllowed: number;
  connectsDenied: number;
  roles: Record<string, number>;
  databases: Record<string, number>;
  statementsAllowed: number;
  statementsDenied: number;
  commands: Record<string, number>;
  tables: Record<string, TableUse>;
  /** Allowed statements whose tables could not be known (text cut, no input). */
  tablesUnknown: number;
  firstMs: number;
  lastMs: number;
}

export interface Usage {
  records: number;
  notRecords: number;
  beforeSince: number;
  firstMs: number | null;
  lastMs: number | null;
  services: Map<string, ServiceUse>;
  rules: Map<string, number>;
}

/** The policy as review reads it: its data document and the rule ids its sources name. */
export interface ReviewedPolicy {
  source: string;
  data: Obj;
  /** Rule ids written literally in the sources or the data. */
  rules: Set<string>;
  /** Rule ids built from a literal prefix (e.g. "allow-" + a class): matched by prefix. */
  rulePrefixes: Set<string>;
}

function newService(): ServiceUse {
  return { sessions: 0, connectsAllowed: 0, connectsDenied: 0, roles: {}, databases: {}, statementsAllowed: 0, statementsDenied: 0, commands: {}, tables: {}, tablesUnknown: 0, firstMs: Infinity, lastMs: -Infinity };
}

function bump(into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1;
}

/** Collects usage from audit records. */
export class UsageCollector {
  readonly usage: Usage = { records: 0, notRecords: 0, beforeSince: 0, firstMs: null, lastMs: null, services: new Map(), rules: new Map() };
  private readonly sinceMs: number;
  private readonly facts = new FactsCache(10_000);

  constructor(sinceMs = -Infinity) {
    this.sinceMs = sinceMs;
  }

  line(line: string): void {
    const r = parseAuditLine(line);
    if (r === null) {
      this.usage.notRecords++;
      return;
    }
    if (r.unix_ms < this.sinceMs) {
      this.usage.beforeSince++;
      return;
    }
    this.record(r);
  }

  record(r: AuditLogRecord): void {
    const u = this.usage;
    u.records++;
    u.firstMs = Math.min(u.firstMs ?? Infinity, r.unix_ms);
    u.lastMs = Math.max(u.lastMs ?? -Infinity, r.unix_ms);
    let s = u.services.get(r.identity.name);
    if (s === undefined) {
      s = newService();
      u.services.set(r.identity.name, s);
    }
    s.firstMs = Math.min(s.firstMs, r.unix_ms);
    s.lastMs = Math.max(s.lastMs, r.unix_ms);
    if (r.rule !== null) u.rules.set(r.rule, (u.rules.get(r.rule) ?? 0) + 1);
    if (r.audit === 'connect') {
      s.sessions++;
      if (r.decision === 'allow') {
        s.connectsAllowed++;
        if (r.role !== null) bump(s.roles, r.role);
        bump(s.databases, r.database);
      } else {
        s.connectsDenied++;
      }
      return;
    }
    if (r.decision === 'deny') {
      s.statementsDenied++;
      return;
    }
    s.statementsAllowed++;
    const tables = this.tablesOf(r);
    if (tables === null) {
      s.tablesUnknown++;
      if (r.command !== undefined && r.command !== null) bump(s.commands, r.command);
      return;
    }
    bump(s.commands, tables.command);
    for (const t of tables.tables) {
      const name = t.schema === null ? t.name : `${t.schema}.${t.name}`;
      const use = (s.tables[name] ??= { read: 0, write: 0 });
      if (t.access.includes('read')) use.read++;
      if (t.access.includes('write')) use.write++;
    }
  }

  /** The statement's command and tables with their access: from the recorded input, else its text parsed again; null when neither is there. */
  private tablesOf(r: AuditLogRecord): { command: string; tables: ReadonlyArray<{ schema: string | null; name: string; access: readonly TableAccess[] }> } | null {
    const statement = r.input?.['statement'];
    if (isObj(statement) && typeof statement['command'] === 'string' && Array.isArray(statement['tables'])) {
      const tables = (statement['tables'] as unknown[]).filter(isObj).map((t) => ({ schema: typeof t['schema'] === 'string' ? t['schema'] : null, name: String(t['name']), access: Array.isArray(t['access']) ? (t['access'] as TableAccess[]) : [] }));
      return { command: statement['command'], tables };
    }
    if (r.sql === undefined || r.sql === '' || r.sql_truncated === true) return null;
    const parsed = this.facts.get(r.sql);
    if (!parsed.ok || parsed.statements.length === 0) return null;
    const first = parsed.statements.find((p) => p.facts.command === r.command) ?? parsed.statements[0];
    if (first === undefined) return null;
    return { command: first.facts.command, tables: parsed.statements.flatMap((p) => p.facts.tables) };
  }
}

/** Rule ids a policy's sources and data name. */
export function ruleIdsOf(regoSources: readonly string[], data: unknown): { rules: Set<string>; prefixes: Set<string> } {
  const rules = new Set<string>();
  const prefixes = new Set<string>();
  for (const source of regoSources) {
    const code = source
      .split('\n')
      .filter((l) => !l.trimStart().startsWith('#'))
      .join('\n');
    for (const m of code.matchAll(/"rule"\s*:\s*"([^"\\]+)"/g)) rules.add(m[1] as string);
    // text.field(x, "rule", "fallback") and text.field(x, "deny_rule", "fallback"): the fallback is an id too.
    for (const m of code.matchAll(/"(?:rule|deny_rule)"\s*,\s*"([^"\\]+)"\s*\)/g)) rules.add(m[1] as string);
    // "rule": concat("", ["allow-", …]): ids made from a prefix.
    for (const m of code.matchAll(/"rule"\s*:\s*concat\(\s*"[^"]*"\s*,\s*\[\s*"([^"\\]+)"/g)) prefixes.add(m[1] as string);
  }
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) walk(x);
    else if (isObj(v)) {
      for (const [k, x] of Object.entries(v)) {
        if ((k === 'rule' || k === 'deny_rule') && typeof x === 'string') rules.add(x);
        else walk(x);
      }
    }
  };
  walk(data);
  return { rules, prefixes };
}

/** A policy directory's data document (data files placed at their directory's path) and sources. */
export async function reviewedPolicyFromDir(dir: string, dataFile: string | undefined): Promise<ReviewedPolicy> {
  const sources = await readPolicySources(dir, dataFile ?? null);
  const data: Obj = {};
  const rego: string[] = [];
  for (const [name, bytes] of sources) {
    const text = Buffer.from(bytes).toString('utf8');
    if (name.endsWith('.rego')) {
      rego.push(text);
      continue;
    }
    let value: unknown;
    try {
      value = name.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      throw new UsageError(`${path.join(dir, name)} is not readable data: ${(err as Error).message}`);
    }
    let at = data;
    for (const part of path.posix.dirname(name).split('/').filter((p) => p !== '.' && p !== '')) {
      const next = at[part];
      at = isObj(next) ? next : (at[part] = {});
    }
    if (isObj(value)) Object.assign(at, value);
  }
  const { rules, prefixes } = ruleIdsOf(rego, data);
  return { source: dir, data, rules, rulePrefixes: prefixes };
}

export async function reviewedPolicyFromRevision(revisionsDir: string, revision: string): Promise<ReviewedPolicy> {
  const stored = await loadRevision(revisionsDir, revision);
  const rego: string[] = [];
  for (const name of stored.meta.sources ?? []) {
    if (!name.endsWith('.rego')) continue;
    try {
      rego.push(await readFile(path.join(stored.path, 'src', ...name.split('/')), 'utf8'));
    } catch {
      // A source that went missing: its rule ids are not known.
    }
  }
  const data = isObj(stored.data) ? stored.data : {};
  const { rules, prefixes } = ruleIdsOf(rego, data);
  return { source: `revision ${revision}`, data, rules, rulePrefixes: prefixes };
}

export interface ReviewFindings {
  services_never_seen: string[];
  roles_never_chosen: Record<string, string[]>;
  databases_never_used: Record<string, string[]>;
  rules_never_matched: string[];
  /** Rule ids seen in records that the sources do not name literally (built ones, rolegate's own). */
  rules_not_in_sources: string[];
  /** service → tables it read and never wrote, though one of its roles may write. */
  write_capable_only_read: Record<string, string[]>;
  /** Services with a role that may write that wrote nothing at all. */
  write_capable_never_wrote: string[];
  notes: string[];
}

const ROLEGATE_OWN_RULES = new Set<string>([...Object.keys(PROXY_RULES), ...Object.values(ENGINE_RULES)]);

/** The findings of usage against a policy (null: usage only). */
export function findings(usage: Usage, policy: ReviewedPolicy | null): ReviewFindings {
  const out: ReviewFindings = { services_never_seen: [], roles_never_chosen: {}, databases_never_used: {}, rules_never_matched: [], rules_not_in_sources: [], write_capable_only_read: {}, write_capable_never_wrote: [], notes: [] };
  if (policy === null) {
    out.notes.push('no --policy: only usage is shown (what the policy grants is not known)');
    return out;
  }
  const services = isObj(policy.data['services']) ? policy.data['services'] : null;
  if (services === null) out.notes.push('the policy data has no services object: services, roles and databases are not reviewed');
  const roleKinds = isObj(policy.data['roles']) ? policy.data['roles'] : {};
  const catalog = isObj(policy.data['catalog']) ? policy.data['catalog'] : {};
  const kinds = isObj(catalog['kinds']) ? catalog['kinds'] : {};
  const classes = isObj(catalog['classes']) ? catalog['classes'] : {};
  /** A role whose kind allows a class that writes. */
  const mayWrite = (role: string): boolean => {
    const entry = roleKinds[role];
    const kind = isObj(entry) ? kinds[String(entry['kind'])] : undefined;
    const allows = isObj(kind) && Array.isArray(kind['allows']) ? (kind['allows'] as unknown[]) : [];
    return allows.some((c) => {
      const cls = classes[String(c)];
      return isObj(cls) && cls['writes'] === true;
    });
  };
  for (const [name, entry] of Object.entries(services ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (!isObj(entry)) continue;
    const use = usage.services.get(name);
    if (use === undefined) {
      out.services_never_seen.push(name);
      continue;
    }
    const roles = Array.isArray(entry['roles']) ? (entry['roles'] as unknown[]).map(String) : [];
    const unusedRoles = roles.filter((r) => (use.roles[r] ?? 0) === 0);
    if (unusedRoles.length > 0) out.roles_never_chosen[name] = unusedRoles;
    const databases = Array.isArray(entry['databases']) ? (entry['databases'] as unknown[]).map(String) : [];
    const unusedDbs = databases.filter((d) => (use.databases[d] ?? 0) === 0);
    if (unusedDbs.length > 0) out.databases_never_used[name] = unusedDbs;
    if (roles.some(mayWrite)) {
      // A service's tables.write list (when it has one) already keeps the others read-only: only its entries count.
      const tablesEntry = entry['tables'];
      const writeList = isObj(tablesEntry) && Array.isArray(tablesEntry['write']) ? (tablesEntry['write'] as unknown[]).map(String) : null;
      const writable = (table: string): boolean =>
        writeList === null || writeList.some((w) => w === table || (!w.includes('.') && table.endsWith(`.${w}`)) || (w.startsWith('public.') && w.slice('public.'.length) === table));
      const onlyRead = Object.entries(use.tables)
        .filter(([table, t]) => t.read > 0 && t.write === 0 && writable(table))
        .map(([table]) => table)
        .sort();
      if (onlyRead.length > 0) out.write_capable_only_read[name] = onlyRead;
      if (use.statementsAllowed > 0 && Object.values(use.tables).every((t) => t.write === 0) && use.tablesUnknown === 0) out.write_capable_never_wrote.push(name);
    }
  }
  const seen = new Set(usage.rules.keys());
  out.rules_never_matched = [...policy.rules].filter((r) => !seen.has(r) && !ROLEGATE_OWN_RULES.has(r)).sort();
  out.rules_not_in_sources = [...seen].filter((r) => !policy.rules.has(r) && !ROLEGATE_OWN_RULES.has(r) && ![...policy.rulePrefixes].some((p) => r.startsWith(p))).sort();
  if (policy.rulePrefixes.size > 0) out.notes.push(`rule ids built from a prefix (${[...policy.rulePrefixes].map((p) => `${p}*`).join(', ')}) are counted as seen, not checked one by one`);
  if ([...usage.services.values()].some((s) => s.tablesUnknown > 0)) out.notes.push('some allowed statements had no input and a cut text: their tables are not known (audit.input: facts records them)');
  return out;
}

export function reviewJson(usage: Usage, policy: ReviewedPolicy | null, f: ReviewFindings, files: string[]): unknown {
  const services: Record<string, unknown> = {};
  for (const [name, s] of [...usage.services].sort(([a], [b]) => (a < b ? -1 : 1))) {
    services[name] = {
      sessions: s.sessions,
      connects: { allow: s.connectsAllowed, deny: s.connectsDenied },
      roles: s.roles,
      databases: s.databases,
      statements: { allow: s.statementsAllowed, deny: s.statementsDenied },
      commands: s.commands,
      tables: s.tables,
      tables_unknown: s.tablesUnknown,
      first: new Date(s.firstMs).toISOString(),
      last: new Date(s.lastMs).toISOString(),
    };
  }
  return {
    files,
    policy: policy?.source ?? null,
    records: usage.records,
    not_records: usage.notRecords,
    before_since: usage.beforeSince,
    first: usage.firstMs === null ? null : new Date(usage.firstMs).toISOString(),
    last: usage.lastMs === null ? null : new Date(usage.lastMs).toISOString(),
    findings: f,
    rules_seen: Object.fromEntries([...usage.rules].sort((a, b) => b[1] - a[1])),
    services,
  };
}

export function reviewText(usage: Usage, policy: ReviewedPolicy | null, f: ReviewFindings, files: string[]): string {
  const lines: string[] = [];
  const span = usage.firstMs === null ? 'no records' : `${new Date(usage.firstMs).toISOString()} → ${new Date(usage.lastMs ?? usage.firstMs).toISOString()}`;
  lines.push(`rolegate review: ${usage.records} records from ${files.length} file(s), ${span}${usage.beforeSince > 0 ? ` (${usage.beforeSince} before --since left out)` : ''}`);
  lines.push(`policy: ${policy?.source ?? '(none given)'}`);
  lines.push('');
  if (policy !== null) {
    const list = (items: readonly string[]): string => (items.length === 0 ? 'none' : items.join(', '));
    lines.push(`services never seen: ${list(f.services_never_seen)}`);
    lines.push('roles never chosen:');
    if (Object.keys(f.roles_never_chosen).length === 0) lines.push('  none');
    for (const [s, roles] of Object.entries(f.roles_never_chosen)) lines.push(`  ${s}: ${roles.join(', ')}`);
    lines.push('databases never used:');
    if (Object.keys(f.databases_never_used).length === 0) lines.push('  none');
    for (const [s, dbs] of Object.entries(f.databases_never_used)) lines.push(`  ${s}: ${dbs.join(', ')}`);
    lines.push('tables only read by a service whose roles may write:');
    if (Object.keys(f.write_capable_only_read).length === 0) lines.push('  none');
    for (const [s, tables] of Object.entries(f.write_capable_only_read)) lines.push(`  ${s}: ${tables.join(', ')}`);
    if (f.write_capable_never_wrote.length > 0) lines.push(`services with a write-capable role that never wrote: ${f.write_capable_never_wrote.join(', ')}`);
    lines.push(`rules never matched: ${list(f.rules_never_matched)}`);
    lines.push('  (a denial that never fired may still guard; a grant never used may be removable)');
    if (f.rules_not_in_sources.length > 0) lines.push(`rules seen but not named in the sources: ${f.rules_not_in_sources.join(', ')}`);
    lines.push('');
  }
  lines.push('usage by service:');
  for (const [name, s] of [...usage.services].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const roles = Object.entries(s.roles).map(([r, n]) => `${r} ${n}`).join(', ') || 'none';
    lines.push(`  ${name}: ${s.sessions} sessions (${s.connectsAllowed} allowed, ${s.connectsDenied} denied; roles ${roles}); statements ${s.statementsAllowed} allowed, ${s.statementsDenied} denied`);
    const tables = Object.entries(s.tables)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([t, use]) => `${t} r${use.read} w${use.write}`);
    if (tables.length > 0) lines.push(`    tables: ${tables.join(', ')}`);
  }
  for (const note of f.notes) lines.push(`note: ${note}`);
  return `${lines.join('\n')}\n`;
}

/** Reads the files (rotated ones too) into a collector. */
export async function collectUsage(files: readonly string[], sinceMs = -Infinity): Promise<Usage> {
  await initParser();
  const collector = new UsageCollector(sinceMs);
  await readLineChunks(files, 1024 * 1024, (chunk) => forEachLine(chunk, (line) => collector.line(line)));
  return collector.usage;
}

/** `rolegate review …`: the exit status. */
export async function runReview(argv: string[]): Promise<number> {
  try {
    return await reviewCommand(argv);
  } catch (err) {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && typeof err.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`rolegate review: ${err.message}\nRun "rolegate review --help" for usage.\n`);
      return 2;
    }
    if (err instanceof Error && 'code' in err && typeof err.code === 'string' && err.code.startsWith('RG_POLICY')) {
      process.stderr.write(`rolegate review: ${err.message}\n`);
      return 3;
    }
    throw err;
  }
}

async function reviewCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      audit: { type: 'string', multiple: true },
      since: { type: 'string' },
      policy: { type: 'string' },
      data: { type: 'string' },
      'policy-revision': { type: 'string' },
      revisions: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(REVIEW_HELP);
    return 0;
  }
  const auditPaths = values.audit ?? [];
  if (auditPaths.length === 0) throw new UsageError('review needs --audit FILE');
  let sinceMs = -Infinity;
  if (values.since !== undefined) {
    sinceMs = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/.test(values.since) ? Date.parse(values.since) : Number.NaN;
    if (Number.isNaN(sinceMs)) throw new UsageError(`--since must be an RFC 3339 time such as 2026-11-27T00:00:00Z, got "${values.since}"`);
  }
  if (values.policy !== undefined && values['policy-revision'] !== undefined) throw new UsageError('give --policy DIR or --policy-revision REV, not both');
  if (values['policy-revision'] !== undefined && values.revisions === undefined) throw new UsageError('--policy-revision needs --revisions DIR');
  let files: string[];
  try {
    files = await auditFiles(auditPaths);
  } catch (err) {
    throw new UsageError(`cannot read the audit log: ${(err as Error).message}`);
  }
  let policy: ReviewedPolicy | null = null;
  if (values.policy !== undefined) {
    try {
      policy = await reviewedPolicyFromDir(values.policy, values.data);
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`cannot read the policy ${values.policy}: ${(err as Error).message}`);
    }
  } else if (values['policy-revision'] !== undefined) {
    policy = await reviewedPolicyFromRevision(values.revisions as string, values['policy-revision']);
  }
  const usage = await collectUsage(files, sinceMs);
  const f = findings(usage, policy);
  process.stdout.write(values.json === true ? `${JSON.stringify(reviewJson(usage, policy, f, files))}\n` : reviewText(usage, policy, f, files));
  return 0;
}
