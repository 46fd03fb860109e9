// One statement's parse tree → the facts the policy reads as input.statement
// (command, tables, functions, columns, flags; docs/policy.md "Statement input").
//
// ONE recursive pass over libpg-query's JSON tree. The walk is generic (every object
// and array is descended, whatever its node type), so a node type this file never
// heard of is still searched for relations and function calls; only the handful of
// nodes that change *how* what lies below is read get a handler:
//   - SelectStmt / InsertStmt / UpdateStmt / DeleteStmt / MergeStmt: CTE names and the
//     column scope (FROM items) are set up before the children are walked;
//   - DML targets, INTO, COPY FROM, LOCK, DROP/COMMENT name lists: write access;
//   - FuncCall, ColumnRef, VariableSetStmt/Show, ExecuteStmt: recorded.
//
// Access. A relation is found by shape (an object with `relname`), because DML
// targets, IntoClause.rel, Constraint.pktable, ViewStmt.view... are bare RangeVars,
// not `{RangeVar: …}`. The walk carries a `write` bit: a utility statement (DDL,
// GRANT, VACUUM, ...) starts in write mode, so any relation it names is a write
// unless a query below it (SelectStmt, DML source) switches back to read. Known reads
// under DDL: FOREIGN KEY ... REFERENCES t, LIKE t, CREATE TRIGGER ... FROM t.
// Maintenance statements (VACUUM, ANALYZE, CLUSTER, REINDEX, REFRESH) therefore write:
// they need ownership / MAINTAIN, never plain SELECT. A SQL-standard function body
// (CREATE FUNCTION ... BEGIN ATOMIC ... END) is parsed, so its tables are reported as
// if it ran now (on the safe side); bodies in strings (AS '...', DO) are invisible.
//
// EXPLAIN: the inner statement's tables are reported with the inner statement's
// access whether or not ANALYZE is given. EXPLAIN ANALYZE DELETE executes the DELETE;
// plain EXPLAIN DELETE does not, but the contract has no flag to tell them apart, so
// both read as writes (fail closed). A policy can still allow EXPLAIN of reads.
//
// Locks follow the privilege PostgreSQL checks (verified against a server with a
// SELECT-only role): LOCK TABLE in ACCESS SHARE mode needs SELECT → read; every other
// mode (ROW SHARE included) needs UPDATE/DELETE/TRUNCATE/MAINTAIN → write
// (LockTableAclCheck). SELECT ... FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE needs
// UPDATE → the locked tables are read and written: with OF, the named FROM items;
// without, every table the SELECT reads, also in its subqueries (PostgreSQL locks only
// those in FROM: a superset, on the safe side). flags.locking is set for all of these.
//
// Columns are best-effort: a qualified ColumnRef names its qualifier, resolved through
// the FROM aliases in scope to the table name; an unqualified one gets the table only
// when the nearest FROM list holds exactly one table. INSERT column lists and UPDATE /
// ON CONFLICT / MERGE SET targets are writes; INSERT without a column list writes '*'.
//
// CTE names are scoped as PostgreSQL scopes them: in a non-RECURSIVE WITH, a CTE's name
// is visible to the CTEs after it and to the main statement, not to its own body
// (`WITH t AS (SELECT * FROM t)` reads the real table t); a schema-qualified name and a
// DML target are never CTE references.

import type {
  ColumnFact,
  FunctionFact,
  StatementFacts,
  StatementFlags,
  TableAccess,
  TableFact,
} from './statement-facts.ts';
import { commandTag } from './command-tag.ts';
import { PARSER_SETTINGS } from './guarded-effects.ts';
import { parameterName, truncateIdentifier } from './identifiers.ts';

type Obj = Record<string, unknown>;

interface ScopeEntry {
  /** The name a ColumnRef qualifier uses: alias, else relname. */
  alias: string;
  /** The real table behind it; null for subqueries, functions and CTEs. */
  table: string | null;
  schema: string | null;
}

interface Scope {
  /** FROM items (and a DML target). */
  entries: ScopeEntry[];
  /** DML only: the target's rows under other names (excluded, old, new); looked up last. */
  targetName: string | null;
  parent: Scope | null;
}

interface Walk {
  tables: Map<string, TableFact>;
  functions: Map<string, FunctionFact>;
  columns: Map<string, ColumnFact>;
  flags: StatementFlags;
  parameter: string | null;
  /**
   * set_config() met with a name that is not a literal, or with another name than
   * `parameter`: the statement changes more than `parameter` says, so `parameter`
   * is reported as null (the policy then judges set_config by its name).
   */
  parameterConflict: boolean;
  /** CTE names visible here, innermost last. */
  ctes: string[];
  scope: Scope | null;
  /** CREATE SCHEMA s CREATE TABLE t ...: PostgreSQL creates unqualified elements in s. */
  writeSchema: string | null;
  /** Inside SELECT ... FOR UPDATE (no OF list): every table read is also locked. */
  lockReads: boolean;
  execute: string | null;
  /** Every parameter the statement sets or resets (see StatementWalk.settings). */
  settings: SettingChange[];
}

/** One parameter a statement sets or resets. */
export interface SettingChange {
  /** Lower-cased; 'all' for RESET ALL; '?' for set_config() with a name that is not a literal. */
  name: string;
  /**
   * The new value of a parser setting (guarded-effects.ts PARSER_SETTINGS)
   * when it is one literal (SET x = 'v', set_config(…, 'v', …)); null: a
   * reset, DEFAULT, a list, an expression, or any other parameter.
   */
  value: string | null;
}

export interface StatementWalk {
  facts: StatementFacts;
  /** Name of a prepared statement this statement runs (EXECUTE, EXPLAIN EXECUTE, CREATE TABLE AS EXECUTE). */
  execute: string | null;
  /**
   * Every parameter the statement sets or resets, lower-cased, in any form:
   * SET / SET LOCAL / RESET ('all' for RESET ALL), the SET clauses of ALTER
   * ROLE / DATABASE / SYSTEM / FUNCTION and CREATE FUNCTION, and
   * set_config(). `facts.parameter` holds one name for the policy; rolegate's
   * own guards need all of them.
   */
  settings: readonly SettingChange[];
}

/** Relation kinds whose DROP / COMMENT / SECURITY LABEL name list is the relation itself. */
const RELATION_OBJECTS: ReadonlySet<string> = new Set([
  'OBJECT_TABLE',
  'OBJECT_VIEW',
  'OBJECT_MATVIEW',
  'OBJECT_FOREIGN_TABLE',
  'OBJECT_SEQUENCE',
  'OBJECT_INDEX',
]);

/** Objects that live on a relation: the name list is the relation's, then the object's own. */
const ON_RELATION_OBJECTS: ReadonlySet<string> = new Set([
  'OBJECT_COLUMN',
  'OBJECT_TRIGGER',
  'OBJECT_POLICY',
  'OBJECT_RULE',
  'OBJECT_TABCONSTRAINT',
]);

/**
 * Names by which a DML statement's expressions see rows of its target table: ON
 * CONFLICT's excluded, RETURNING old / new (PostgreSQL 18). A FROM item of the same
 * name wins.
 */
const PSEUDO_TARGET_NAMES: ReadonlySet<string> = new Set(['excluded', 'old', 'new']);

const NO_SETTINGS: readonly SettingChange[] = Object.freeze([]);

/** LockStmt.mode: lockdefs.h AccessShareLock. */
const ACCESS_SHARE_LOCK = 1;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `{String: {sval}}` → sval. */
function stringNode(node: unknown): string | undefined {
  if (!isObj(node)) return undefined;
  const s = node['String'];
  if (!isObj(s)) return undefined;
  const sval = s['sval'];
  // An empty sval is left out of the JSON.
  return typeof sval === 'string' ? sval : '';
}

/** A string literal, possibly cast ('role'::text); undefined for anything else. */
function constString(node: unknown): string | undefined {
  if (!isObj(node)) return undefined;
  const c = node['A_Const'];
  if (isObj(c)) {
    const s = c['sval'];
    if (!isObj(s)) return undefined;
    const sval = s['sval'];
    return typeof sval === 'string' ? sval : '';
  }
  const cast = node['TypeCast'];
  if (isObj(cast)) return constString(cast['arg']);
  return undefined;
}

function aliasName(o: Obj): string | undefined {
  const alias = o['alias'];
  if (!isObj(alias)) return undefined;
  const name = alias['aliasname'];
  return typeof name === 'string' ? name : undefined;
}

function addTable(w: Walk, schema: string | null, name: string, access: TableAccess): void {
  const n = truncateIdentifier(name);
  const s = schema === null ? null : truncateIdentifier(schema);
  // NUL cannot occur in an identifier: an unambiguous separator.
  const key = s === null ? '\0' + n : s + '\0' + n;
  const seen = w.tables.get(key);
  if (seen === undefined) w.tables.set(key, { schema: s, name: n, access: [access] });
  else if (seen.access.length === 1 && seen.access[0] !== access) seen.access = ['read', 'write'];
}

function addFunction(w: Walk, schema: string | null, name: string): void {
  const n = truncateIdentifier(name);
  const s = schema === null ? null : truncateIdentifier(schema);
  const key = s === null ? '\0' + n : s + '\0' + n;
  if (!w.functions.has(key)) w.functions.set(key, { schema: s, name: n });
}

function addColumn(w: Walk, table: string | null, name: string, access: TableAccess): void {
  const t = table === null ? null : truncateIdentifier(table);
  const n = name === '*' ? name : truncateIdentifier(name);
  const key = (t === null ? '\0' : t + '\0') + n + '\0' + access;
  if (!w.columns.has(key)) w.columns.set(key, { table: t, name: n, access });
}

function isCte(w: Walk, relname: string): boolean {
  return w.ctes.length !== 0 && w.ctes.lastIndexOf(relname) !== -1;
}

function onRangeVar(w: Walk, rv: Obj, write: boolean): void {
  const relname = rv['relname'];
  if (typeof relname !== 'string') return;
  const schemaname = rv['schemaname'];
  if (typeof schemaname === 'string') {
    addTable(w, schemaname, relname, write ? 'write' : 'read');
    if (!write && w.lockReads) addTable(w, schemaname, relname, 'write');
    return;
  }
  if (write) addTable(w, w.writeSchema, relname, 'write');
  else if (!isCte(w, relname)) {
    addTable(w, null, relname, 'read');
    if (w.lockReads) addTable(w, null, relname, 'write');
  }
}

// ---- column scope -------------------------------------------------------------

function collectFromItem(w: Walk, item: unknown, out: ScopeEntry[]): void {
  if (!isObj(item)) return;
  for (const k in item) {
    const v = item[k];
    if (!isObj(v)) continue;
    switch (k) {
      case 'RangeVar': {
        const relname = v['relname'];
        if (typeof relname !== 'string') break;
        const schemaname = v['schemaname'];
        const schema = typeof schemaname === 'string' ? schemaname : null;
        const real = schema !== null || !isCte(w, relname);
        out.push({ alias: aliasName(v) ?? relname, table: real ? relname : null, schema });
        break;
      }
      case 'JoinExpr': {
        collectFromItem(w, v['larg'], out);
        collectFromItem(w, v['rarg'], out);
        const alias = aliasName(v);
        if (alias !== undefined) out.push({ alias, table: null, schema: null });
        break;
      }
      case 'RangeTableSample':
        collectFromItem(w, v['relation'], out);
        break;
      default: {
        // RangeSubselect, RangeFunction, RangeTableFunc, JsonTable: known by alias only.
        const alias = aliasName(v);
        if (alias !== undefined) out.push({ alias, table: null, schema: null });
      }
    }
  }
}

function collectFromList(w: Walk, items: unknown, out: ScopeEntry[]): void {
  if (!Array.isArray(items)) return;
  for (let i = 0; i < items.length; i++) collectFromItem(w, items[i], out);
}

function unqualifiedTable(w: Walk): string | null {
  for (let s = w.scope; s !== null; s = s.parent) {
    if (s.entries.length === 0) continue;
    const only = s.entries.length === 1 ? s.entries[0] : undefined;
    return only === undefined ? null : only.table;
  }
  return null;
}

function qualifiedTable(w: Walk, qualifier: string): string {
  for (let s = w.scope; s !== null; s = s.parent) {
    for (const e of s.entries) if (e.alias === qualifier) return e.table ?? qualifier;
    if (s.targetName !== null && PSEUDO_TARGET_NAMES.has(qualifier)) return s.targetName;
  }
  return qualifier; // a name the parser alone cannot place
}

function onColumnRef(w: Walk, cr: Obj): void {
  const fields = cr['fields'];
  if (!Array.isArray(fields) || fields.length === 0) return;
  const last: unknown = fields[fields.length - 1];
  const name = isObj(last) && 'A_Star' in last ? '*' : stringNode(last);
  if (name === undefined) return;
  if (fields.length === 1) {
    addColumn(w, unqualifiedTable(w), name, 'read');
    return;
  }
  const qualifier = stringNode(fields[fields.length - 2]);
  addColumn(w, qualifier === undefined ? null : qualifiedTable(w, qualifier), name, 'read');
}

// ---- statements that shape what lies below ------------------------------------------

function onWith(w: Walk, withClause: Obj): void {
  const ctes = withClause['ctes'];
  if (!Array.isArray(ctes)) return;
  const recursive = withClause['recursive'] === true;
  if (recursive) {
    for (const item of ctes) {
      const cte = isObj(item) ? item['CommonTableExpr'] : undefined;
      const name = isObj(cte) ? cte['ctename'] : undefined;
      if (typeof name === 'string') w.ctes.push(name);
    }
  }
  for (const item of ctes) {
    const cte = isObj(item) ? item['CommonTableExpr'] : undefined;
    if (!isObj(cte)) {
      walkValue(w, item, false);
      continue;
    }
    onCommonTableExpr(w, cte);
    const name = cte['ctename'];
    if (!recursive && typeof name === 'string') w.ctes.push(name);
  }
}

function onCommonTableExpr(w: Walk, cte: Obj): void {
  const query = cte['ctequery'];
  if (isObj(query) && ('InsertStmt' in query || 'UpdateStmt' in query || 'DeleteStmt' in query || 'MergeStmt' in query)) {
    w.flags.data_modifying_cte = true;
  }
  // search_clause / cycle_clause name output columns only.
  walkValue(w, query, false);
}

function onInto(w: Walk, into: Obj): void {
  w.flags.into = true;
  for (const k in into) {
    const v = into[k];
    if (k === 'rel') {
      if (isObj(v)) onRangeVar(w, v, true);
    } else walkValue(w, v, false);
  }
}

/**
 * FOR UPDATE / SHARE: the FROM items an OF list names (real tables), or null when
 * every table read must count as locked (no OF list, or OF names a subquery).
 */
function lockedEntries(locking: unknown[], entries: ScopeEntry[]): ScopeEntry[] | null {
  const locked: ScopeEntry[] = [];
  for (const item of locking) {
    const clause = isObj(item) ? item['LockingClause'] : undefined;
    const rels = isObj(clause) ? clause['lockedRels'] : undefined;
    if (!Array.isArray(rels) || rels.length === 0) return null;
    for (const rel of rels) {
      const rv = isObj(rel) ? rel['RangeVar'] : undefined;
      const name = isObj(rv) ? rv['relname'] : undefined;
      if (typeof name !== 'string') return null;
      const entry = entries.find((e) => e.alias === name);
      if (entry === undefined) continue; // PostgreSQL rejects the statement
      if (entry.table === null) return null;
      locked.push(entry);
    }
  }
  return locked;
}

function onSelect(w: Walk, s: Obj): void {
  const cteMark = w.ctes.length;
  const outer = w.scope;
  const outerLockReads = w.lockReads;
  const withClause = s['withClause'];
  if (isObj(withClause)) onWith(w, withClause);
  const entries: ScopeEntry[] = [];
  collectFromList(w, s['fromClause'], entries);
  w.scope = { entries, targetName: null, parent: outer };
  const locking = s['lockingClause'];
  let locked: ScopeEntry[] | null = [];
  if (Array.isArray(locking) && locking.length !== 0) {
    w.flags.locking = true;
    locked = lockedEntries(locking, entries);
    if (locked === null) w.lockReads = true;
  }
  for (const k in s) {
    const v = s[k];
    if (typeof v !== 'object' || v === null) continue;
    switch (k) {
      case 'withClause':
        break;
      case 'larg': // set operation arms are bare SelectStmt shapes
      case 'rarg':
        if (isObj(v)) onSelect(w, v);
        break;
      case 'intoClause':
        if (isObj(v)) onInto(w, v);
        break;
      case 'lockingClause':
        // handled above: lockedRels are FROM-item names (often aliases), not tables
        break;
      default:
        walkValue(w, v, false);
    }
  }
  if (locked !== null) for (const e of locked) if (e.table !== null) addTable(w, e.schema, e.table, 'write');
  w.lockReads = outerLockReads;
  w.scope = outer;
  w.ctes.length = cteMark;
}

/** ResTargets naming written columns: INSERT (a, b), UPDATE SET a = ..., ON CONFLICT / MERGE SET. */
function onSetTargets(w: Walk, list: unknown, target: string | null): void {
  if (!Array.isArray(list)) {
    walkValue(w, list, false);
    return;
  }
  for (const item of list) {
    const rt = isObj(item) ? item['ResTarget'] : undefined;
    if (!isObj(rt)) {
      walkValue(w, item, false);
      continue;
    }
    const name = rt['name'];
    if (typeof name === 'string') addColumn(w, target, name, 'write');
    walkValue(w, rt['val'], false);
    walkValue(w, rt['indirection'], false);
  }
}

function onModify(w: Walk, nodeName: string, s: Obj): void {
  const cteMark = w.ctes.length;
  const outer = w.scope;
  const withClause = s['withClause'];
  if (isObj(withClause)) onWith(w, withClause);
  const entries: ScopeEntry[] = [];
  let target: string | null = null;
  const rel = s['relation'];
  if (isObj(rel) && typeof rel['relname'] === 'string') {
    target = rel['relname'];
    onRangeVar(w, rel, true); // a DML target is always a real table, never a CTE
    const schemaname = rel['schemaname'];
    entries.push({ alias: aliasName(rel) ?? target, table: target, schema: typeof schemaname === 'string' ? schemaname : null });
  }
  collectFromList(w, s['fromClause'], entries); // UPDATE ... FROM
  collectFromList(w, s['usingClause'], entries); // DELETE ... USING
  collectFromItem(w, s['sourceRelation'], entries); // MERGE ... USING
  w.scope = { entries, targetName: target, parent: outer };
  let namedColumns = false;
  for (const k in s) {
    const v = s[k];
    if (typeof v !== 'object' || v === null) continue;
    switch (k) {
      case 'withClause':
      case 'relation':
        break;
      case 'cols':
        namedColumns = true;
        onSetTargets(w, v, target);
        break;
      case 'targetList':
        onSetTargets(w, v, target);
        break;
      case 'onConflictClause':
        if (isObj(v)) walkWithTargets(w, v, target);
        break;
      case 'mergeWhenClauses':
        if (Array.isArray(v)) {
          for (const item of v) {
            const when = isObj(item) ? item['MergeWhenClause'] : undefined;
            if (!isObj(when)) walkValue(w, item, false);
            else {
              if (when['commandType'] === 'CMD_INSERT' && when['targetList'] === undefined && target !== null) {
                addColumn(w, target, '*', 'write');
              }
              walkWithTargets(w, when, target);
            }
          }
        }
        break;
      default:
        walkValue(w, v, false);
    }
  }
  if (nodeName === 'InsertStmt' && !namedColumns && target !== null) addColumn(w, target, '*', 'write');
  w.scope = outer;
  w.ctes.length = cteMark;
}

function walkWithTargets(w: Walk, o: Obj, target: string | null): void {
  for (const k in o) {
    if (k === 'targetList') onSetTargets(w, o[k], target);
    else walkValue(w, o[k], false);
  }
}

function onFuncCall(w: Walk, fc: Obj): void {
  const parts = fc['funcname'];
  if (Array.isArray(parts) && parts.length !== 0) {
    const name = stringNode(parts[parts.length - 1]);
    const schema = parts.length >= 2 ? (stringNode(parts[parts.length - 2]) ?? null) : null;
    if (name !== undefined) {
      addFunction(w, schema, name);
      // set_config('role', ...) is SET in function form. A non-literal name leaves
      // `parameter` null: the policy must judge set_config by its name then. So does
      // a second set_config() naming another parameter: `parameter` holds one name,
      // and `set_config('application_name', …), set_config('role', …)` must not
      // pass as a change of application_name only.
      if (name === 'set_config' && (schema === null || schema === 'pg_catalog')) {
        const args = fc['args'];
        const param = Array.isArray(args) ? constString(args[0]) : undefined;
        if (param === undefined) {
          w.parameterConflict = true;
          w.settings.push({ name: '?', value: null });
        } else {
          const folded = parameterName(param);
          const value = PARSER_SETTINGS.has(folded) && Array.isArray(args) ? constString(args[1]) : undefined;
          w.settings.push({ name: folded, value: value ?? null });
          if (w.parameter === null) w.parameter = folded;
          else if (w.parameter !== folded) w.parameterConflict = true;
        }
      }
    }
  }
  for (const k in fc) if (k !== 'funcname') walkValue(w, fc[k], false);
}

function onVariableSet(w: Walk, vs: Obj): void {
  const name = vs['name'];
  const setting = vs['kind'] === 'VAR_RESET_ALL' ? 'all' : typeof name === 'string' ? parameterName(name) : null;
  if (setting !== null) {
    w.parameter ??= setting;
    const args = vs['args'];
    // The value is read only where it matters (a read literal makes the text's facts its own, not its shape's).
    const value = PARSER_SETTINGS.has(setting) && vs['kind'] === 'VAR_SET_VALUE' && Array.isArray(args) && args.length === 1 ? (constString(args[0]) ?? null) : null;
    w.settings.push({ name: setting, value });
  }
  walkValue(w, vs['args'], false);
}

function onCopy(w: Walk, c: Obj): void {
  const isFrom = c['is_from'] === true;
  if (c['is_program'] === true) w.flags.copy_program = true;
  else if (typeof c['filename'] === 'string') w.flags.copy_file = true;
  const outer = w.scope;
  const rel = c['relation'];
  if (isObj(rel) && typeof rel['relname'] === 'string') {
    const target = rel['relname'];
    onRangeVar(w, rel, isFrom);
    const access: TableAccess = isFrom ? 'write' : 'read';
    const attlist = c['attlist'];
    if (Array.isArray(attlist) && attlist.length !== 0) {
      for (const a of attlist) {
        const name = stringNode(a);
        if (name !== undefined) addColumn(w, target, name, access);
      }
    } else addColumn(w, target, '*', access);
    w.scope = { entries: [{ alias: target, table: target, schema: null }], targetName: null, parent: outer };
  }
  walkValue(w, c['query'], false);
  walkValue(w, c['whereClause'], false);
  walkValue(w, c['options'], false);
  w.scope = outer;
}

function onLock(w: Walk, l: Obj): void {
  w.flags.locking = true;
  const write = l['mode'] !== ACCESS_SHARE_LOCK;
  walkValue(w, l['relations'], write);
}

/** DROP / COMMENT ON / SECURITY LABEL ON name relations as String lists, not RangeVars. */
function onNamedObjects(w: Walk, o: Obj, objtype: unknown, objects: unknown[]): void {
  if (typeof objtype === 'string') {
    const onRelation = ON_RELATION_OBJECTS.has(objtype);
    if (onRelation || RELATION_OBJECTS.has(objtype)) {
      for (const obj of objects) {
        const list = isObj(obj) ? obj['List'] : undefined;
        const items = isObj(list) ? list['items'] : undefined;
        if (!Array.isArray(items)) continue;
        const end = onRelation ? items.length - 1 : items.length;
        const name = end >= 1 ? stringNode(items[end - 1]) : undefined;
        if (name === undefined) continue;
        const schema = end >= 2 ? (stringNode(items[end - 2]) ?? null) : null;
        addTable(w, schema, name, 'write');
      }
    }
  }
  for (const k in o) if (k !== 'objects' && k !== 'object') walkValue(w, o[k], true);
}

function onCreateSchema(w: Walk, cs: Obj): void {
  const outer = w.writeSchema;
  const name = cs['schemaname'];
  w.writeSchema = typeof name === 'string' ? name : null;
  walkValue(w, cs['schemaElts'], true);
  w.writeSchema = outer;
}

// ---- the generic walk ---------------------------------------------------------------

// walkObject descends into objects directly rather than through walkValue (fewer JS
// frames per tree level). Measured with the default stack: `SELECT 1 + 1 + ...` walks
// up to ~3,400 levels (libpg-query itself stops near 9,400). Deeper trees fail closed:
// parseStatements returns RG_INTERNAL.
function walkValue(w: Walk, v: unknown, write: boolean): void {
  if (typeof v !== 'object' || v === null) return;
  if (Array.isArray(v)) walkArray(w, v, write);
  else walkObject(w, v as Obj, write);
}

function walkArray(w: Walk, a: unknown[], write: boolean): void {
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) walkArray(w, v, write);
    else walkObject(w, v as Obj, write);
  }
}

function walkObject(w: Walk, o: Obj, write: boolean): void {
  for (const k in o) {
    // A RangeVar, wrapped or bare: relname follows catalogname/schemaname (strings),
    // so it is met before anything the object holds.
    if (k === 'relname') {
      onRangeVar(w, o, write);
      return;
    }
    const v = o[k];
    if (typeof v !== 'object' || v === null) continue;
    switch (k) {
      // leaves: nothing below can name a relation or call a function
      case 'A_Const':
      case 'String':
      case 'Integer':
      case 'Float':
      case 'Boolean':
      case 'BitString':
      case 'ParamRef':
      case 'A_Star':
        break;
      case 'ColumnRef':
        if (isObj(v)) onColumnRef(w, v);
        break;
      case 'FuncCall':
      case 'funccall': // CallStmt holds a bare FuncCall
        if (isObj(v)) onFuncCall(w, v);
        break;
      case 'SelectStmt':
        if (isObj(v)) onSelect(w, v);
        break;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        if (isObj(v)) onModify(w, k, v);
        break;
      case 'into': // CreateTableAsStmt.into: a bare IntoClause
      case 'IntoClause':
        if (isObj(v)) onInto(w, v);
        break;
      case 'CommonTableExpr': // only met outside a WITH handled above
        if (isObj(v)) onCommonTableExpr(w, v);
        break;
      case 'pktable': // FOREIGN KEY ... REFERENCES t
      case 'constrrel': // CREATE CONSTRAINT TRIGGER ... FROM t
      case 'TableLikeClause': // CREATE TABLE ... (LIKE t)
        walkValue(w, v, false);
        break;
      case 'CopyStmt':
        if (isObj(v)) onCopy(w, v);
        break;
      case 'LockStmt':
        if (isObj(v)) onLock(w, v);
        break;
      case 'DropStmt':
        if (isObj(v)) onNamedObjects(w, v, v['removeType'], Array.isArray(v['objects']) ? v['objects'] : []);
        break;
      case 'CommentStmt':
      case 'SecLabelStmt':
        if (isObj(v)) onNamedObjects(w, v, v['objtype'], [v['object']]);
        break;
      case 'CreateSchemaStmt':
        if (isObj(v)) onCreateSchema(w, v);
        break;
      case 'VariableSetStmt':
      case 'setstmt': // ALTER SYSTEM / ALTER ROLE / ALTER DATABASE ... SET
        if (isObj(v)) onVariableSet(w, v);
        break;
      case 'VariableShowStmt':
        if (isObj(v) && w.parameter === null && typeof v['name'] === 'string') w.parameter = parameterName(v['name']);
        break;
      case 'ExecuteStmt':
        if (isObj(v)) {
          const name = v['name'];
          if (w.execute === null && typeof name === 'string') w.execute = truncateIdentifier(name);
          walkValue(w, v['params'], false);
        }
        break;
      default:
        if (Array.isArray(v)) walkArray(w, v, write);
        else walkObject(w, v as Obj, write);
    }
  }
}

function newWalk(): Walk {
  return {
    tables: new Map(),
    functions: new Map(),
    columns: new Map(),
    flags: { data_modifying_cte: false, into: false, locking: false, copy_program: false, copy_file: false },
    parameter: null,
    parameterConflict: false,
    ctes: [],
    scope: null,
    writeSchema: null,
    lockReads: false,
    execute: null,
    settings: [],
  };
}

/** The wrapper key of a statement node: `{SelectStmt: {...}}` → 'SelectStmt'. */
export function nodeNameOf(stmt: Obj): string {
  for (const k in stmt) return k;
  return '';
}

/**
 * Facts of one raw statement node (`RawStmt.stmt`). `sql` is that statement's text.
 * A utility statement is walked in write mode: whatever relation it names it changes,
 * unless a query below it reads.
 */
export function statementFacts(stmt: Obj, sql: string): StatementWalk {
  const w = newWalk();
  const nodeName = nodeNameOf(stmt);
  const body = stmt[nodeName];
  walkObject(w, stmt, true);
  const facts: StatementFacts = {
    sql,
    command: commandTag(nodeName, isObj(body) ? body : {}),
    tables: [...w.tables.values()],
    functions: [...w.functions.values()],
    columns: [...w.columns.values()],
    flags: w.flags,
    parameter: w.parameterConflict ? null : w.parameter,
  };
  return { facts, execute: w.execute, settings: w.settings.length === 0 ? NO_SETTINGS : w.settings };
}
