// What a statement does that rolegate guards itself, whatever the policy says
// (decision/guards.ts): changing who the session is, changing a setting the
// proxy's parser depends on, and reaching outside the database (programs and
// files on the database host, other servers). Read from a statement's facts
// and the parameters it sets, once per parse (the facts cache keeps the
// answer with the statement); the cache-hit path only checks for an empty list.

import type { SettingChange } from './facts.ts';
import type { StatementFacts } from './statement-facts.ts';

/** One guarded effect; decision/guards.ts gives each its rule id and says which can be lifted. */
export type GuardedEffect = 'role_change' | 'pinned_parameter' | 'copy_program' | 'copy_file' | 'large_objects' | 'server_files' | 'remote_connections';

export const GUARDED_EFFECTS: readonly GuardedEffect[] = ['role_change', 'pinned_parameter', 'copy_program', 'copy_file', 'large_objects', 'server_files', 'remote_connections'];

/**
 * The settings under which rolegate's parser reads SQL: UTF-8 text with
 * standard-conforming strings. The server must read the same bytes the same
 * way: with standard_conforming_strings=off a backslash in '…' escapes the
 * quote, and in SJIS or BIG5 a multi-byte character's second byte can be a
 * quote or a backslash, so a literal would end where the proxy sees none and a
 * statement it never saw would run. Every upstream session is opened with
 * these values and no statement may change them.
 */
export const PARSER_SETTINGS: ReadonlyMap<string, string> = new Map([
  ['client_encoding', 'UTF8'],
  ['standard_conforming_strings', 'on'],
]);

/** Settings that are the session's identity: the current role and the session user. */
const IDENTITY_SETTINGS: ReadonlySet<string> = new Set(['role', 'session_authorization']);

/** Server-side file access functions (core, and adminpack's). */
const FILE_FUNCTIONS: ReadonlySet<string> = new Set(['pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync', 'pg_logdir_ls']);

/** lo_import / lo_export run on the server and read or write files on its host (libpq's client-side versions use lo_open/loread/lowrite). */
const LARGE_OBJECT_FILE_FUNCTIONS: ReadonlySet<string> = new Set(['lo_import', 'lo_export']);

/** Statements that define where a foreign-data wrapper connects or what it reads (postgres_fdw, file_fdw, …). */
const FOREIGN_SERVER_COMMANDS: ReadonlySet<string> = new Set(['CREATE SERVER', 'ALTER SERVER', 'CREATE USER MAPPING', 'ALTER USER MAPPING', 'IMPORT FOREIGN SCHEMA', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE']);

const NONE: readonly GuardedEffect[] = Object.freeze([]);

/**
 * A pinned parameter set to the value it is pinned to changes nothing, and
 * drivers do it on connect (libpq's PQsetClientEncoding sends
 * `SET client_encoding TO 'UTF8'`; Rails sends `SET standard_conforming_strings = on`):
 * allowed. Encoding names compare as PostgreSQL compares them (case and
 * punctuation ignored; UNICODE is UTF8's alias).
 */
function isPinnedValue(name: string, value: string | null): boolean {
  if (value === null) return false;
  if (name === 'client_encoding') return isUtf8Name(value);
  const v = value.toLowerCase();
  return v === 'on' || v === 'true' || v === 'yes';
}

/** An encoding name PostgreSQL reads as UTF8 (its comparison ignores case and non-alphanumerics). */
export function isUtf8Name(value: string): boolean {
  const clean = value.toLowerCase().replace(/[^a-z0-9]/g, '');
  return clean === 'utf8' || clean === 'unicode';
}

/**
 * The guarded effects of one statement (its facts and every parameter it sets,
 * `settings` as facts.ts collects them), in GUARDED_EFFECTS order; a frozen
 * empty list for nearly every statement.
 *
 * Functions match by name in any schema: dblink's and adminpack's live in
 * whatever schema their extension was created in, and a user function that
 * shadows a built-in name is refused with it (on the safe side).
 */
export function guardedEffects(facts: StatementFacts, settings: readonly SettingChange[]): readonly GuardedEffect[] {
  let found: GuardedEffect[] | null = null;
  const add = (effect: GuardedEffect): void => {
    found ??= [];
    if (!found.includes(effect)) found.push(effect);
  };
  for (const { name, value } of settings) {
    // '?': set_config() with a name no parser can read; it may be the role.
    if (IDENTITY_SETTINGS.has(name) || name === '?') add('role_change');
    else if (PARSER_SETTINGS.has(name) && !isPinnedValue(name, value)) add('pinned_parameter');
    // RESET ALL in a session (not ALTER ROLE … RESET ALL, which only drops stored defaults).
    else if (name === 'all' && facts.command === 'RESET') add('role_change');
  }
  if (facts.command === 'DISCARD ALL') add('role_change');
  for (const t of facts.tables) {
    // The pg_settings view's update rule calls set_config() with whatever name the row has.
    if (t.name === 'pg_settings' && (t.schema === null || t.schema === 'pg_catalog') && t.access.includes('write')) add('pinned_parameter');
  }
  if (facts.flags.copy_program) add('copy_program');
  if (facts.flags.copy_file) add('copy_file');
  for (const f of facts.functions) {
    const name = f.name;
    if (LARGE_OBJECT_FILE_FUNCTIONS.has(name)) add('large_objects');
    else if (FILE_FUNCTIONS.has(name) || name.startsWith('pg_ls_')) add('server_files');
    else if (name.startsWith('dblink') || name.startsWith('postgres_fdw_')) add('remote_connections');
  }
  if (FOREIGN_SERVER_COMMANDS.has(facts.command)) add('remote_connections');
  if (found === null) return NONE;
  const list: GuardedEffect[] = found;
  return Object.freeze(GUARDED_EFFECTS.filter((e) => list.includes(e)));
}
