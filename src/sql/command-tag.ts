// Command tags: the words of PostgreSQL's CreateCommandTag() (tcop/utility.c) for the
// raw parse tree, which is what event triggers and the server log name a statement
// by. CommandComplete differs for a few (CREATE TABLE AS, CREATE MATERIALIZED VIEW
// and EXECUTE complete as 'SELECT n'); the statement's own tag is what a policy needs.
// Checked against a PostgreSQL server for ~170 statements (the differences are
// those and the deliberate ones below). The deliberate differences:
//   - SET ROLE / SET SESSION AUTHORIZATION are 'SET ROLE' / 'SET SESSION AUTHORIZATION'
//     (PostgreSQL says 'SET'): they change the identity the rest of the session runs as.
//     The test is the parameter name, so `SET role = x` and `SET LOCAL ROLE x` are
//     'SET ROLE' too. RESET ROLE stays 'RESET' with parameter 'role'.
//   - START TRANSACTION is 'BEGIN' (PostgreSQL: 'START TRANSACTION'): same statement,
//     one word for policies to list. END is 'COMMIT' and ABORT 'ROLLBACK', as in PostgreSQL.
// SELECT INTO is 'SELECT' as in PostgreSQL; flags.into says it creates a table.
// A node type this table does not know gets a tag derived from its name
// ('CreateFooBarStmt' → 'CREATE FOO BAR'): deterministic, never a throw.

type Obj = Record<string, unknown>;

/** ObjectType → the words after CREATE/ALTER/DROP (AlterObjectTypeCommandTag). */
const OBJECT_WORDS: Readonly<Record<string, string>> = {
  OBJECT_ACCESS_METHOD: 'ACCESS METHOD',
  OBJECT_AGGREGATE: 'AGGREGATE',
  OBJECT_AMOP: 'OPERATOR FAMILY',
  OBJECT_AMPROC: 'OPERATOR FAMILY',
  OBJECT_ATTRIBUTE: 'TYPE',
  OBJECT_CAST: 'CAST',
  OBJECT_COLUMN: 'TABLE',
  OBJECT_COLLATION: 'COLLATION',
  OBJECT_CONVERSION: 'CONVERSION',
  OBJECT_DATABASE: 'DATABASE',
  OBJECT_DEFAULT: 'TABLE',
  OBJECT_DEFACL: 'DEFAULT PRIVILEGES',
  OBJECT_DOMAIN: 'DOMAIN',
  OBJECT_DOMCONSTRAINT: 'DOMAIN',
  OBJECT_EVENT_TRIGGER: 'EVENT TRIGGER',
  OBJECT_EXTENSION: 'EXTENSION',
  OBJECT_FDW: 'FOREIGN DATA WRAPPER',
  OBJECT_FOREIGN_SERVER: 'SERVER',
  OBJECT_FOREIGN_TABLE: 'FOREIGN TABLE',
  OBJECT_FUNCTION: 'FUNCTION',
  OBJECT_INDEX: 'INDEX',
  OBJECT_LANGUAGE: 'LANGUAGE',
  OBJECT_LARGEOBJECT: 'LARGE OBJECT',
  OBJECT_OPCLASS: 'OPERATOR CLASS',
  OBJECT_OPERATOR: 'OPERATOR',
  OBJECT_OPFAMILY: 'OPERATOR FAMILY',
  OBJECT_PARAMETER_ACL: 'PARAMETER',
  OBJECT_POLICY: 'POLICY',
  OBJECT_PROCEDURE: 'PROCEDURE',
  OBJECT_PUBLICATION: 'PUBLICATION',
  OBJECT_PUBLICATION_NAMESPACE: 'PUBLICATION',
  OBJECT_PUBLICATION_REL: 'PUBLICATION',
  OBJECT_ROLE: 'ROLE',
  OBJECT_ROUTINE: 'ROUTINE',
  OBJECT_RULE: 'RULE',
  OBJECT_SCHEMA: 'SCHEMA',
  OBJECT_SEQUENCE: 'SEQUENCE',
  OBJECT_SUBSCRIPTION: 'SUBSCRIPTION',
  OBJECT_STATISTIC_EXT: 'STATISTICS',
  OBJECT_TABCONSTRAINT: 'TABLE',
  OBJECT_TABLE: 'TABLE',
  OBJECT_TABLESPACE: 'TABLESPACE',
  OBJECT_TRANSFORM: 'TRANSFORM',
  OBJECT_TRIGGER: 'TRIGGER',
  OBJECT_TSCONFIGURATION: 'TEXT SEARCH CONFIGURATION',
  OBJECT_TSDICTIONARY: 'TEXT SEARCH DICTIONARY',
  OBJECT_TSPARSER: 'TEXT SEARCH PARSER',
  OBJECT_TSTEMPLATE: 'TEXT SEARCH TEMPLATE',
  OBJECT_TYPE: 'TYPE',
  OBJECT_USER_MAPPING: 'USER MAPPING',
  OBJECT_VIEW: 'VIEW',
  OBJECT_MATVIEW: 'MATERIALIZED VIEW',
};

/** Statements whose tag does not depend on their fields. */
const FIXED_TAGS: Readonly<Record<string, string>> = {
  InsertStmt: 'INSERT',
  UpdateStmt: 'UPDATE',
  DeleteStmt: 'DELETE',
  MergeStmt: 'MERGE',
  SelectStmt: 'SELECT',
  PLAssignStmt: 'SELECT',
  ReturnStmt: 'SELECT',
  CopyStmt: 'COPY',
  CallStmt: 'CALL',
  DoStmt: 'DO',
  ExplainStmt: 'EXPLAIN',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  DeclareCursorStmt: 'DECLARE CURSOR',
  VariableShowStmt: 'SHOW',
  AlterSystemStmt: 'ALTER SYSTEM',
  ConstraintsSetStmt: 'SET CONSTRAINTS',
  TruncateStmt: 'TRUNCATE TABLE',
  LockStmt: 'LOCK TABLE',
  CommentStmt: 'COMMENT',
  SecLabelStmt: 'SECURITY LABEL',
  ListenStmt: 'LISTEN',
  UnlistenStmt: 'UNLISTEN',
  NotifyStmt: 'NOTIFY',
  LoadStmt: 'LOAD',
  CheckPointStmt: 'CHECKPOINT',
  ClusterStmt: 'CLUSTER',
  ReindexStmt: 'REINDEX',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  CreateStmt: 'CREATE TABLE',
  CreateSchemaStmt: 'CREATE SCHEMA',
  CreateExtensionStmt: 'CREATE EXTENSION',
  AlterExtensionStmt: 'ALTER EXTENSION',
  AlterExtensionContentsStmt: 'ALTER EXTENSION',
  CreateTableSpaceStmt: 'CREATE TABLESPACE',
  DropTableSpaceStmt: 'DROP TABLESPACE',
  AlterTableSpaceOptionsStmt: 'ALTER TABLESPACE',
  CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER',
  AlterFdwStmt: 'ALTER FOREIGN DATA WRAPPER',
  CreateForeignServerStmt: 'CREATE SERVER',
  AlterForeignServerStmt: 'ALTER SERVER',
  CreateUserMappingStmt: 'CREATE USER MAPPING',
  AlterUserMappingStmt: 'ALTER USER MAPPING',
  DropUserMappingStmt: 'DROP USER MAPPING',
  CreateForeignTableStmt: 'CREATE FOREIGN TABLE',
  ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
  AlterDefaultPrivilegesStmt: 'ALTER DEFAULT PRIVILEGES',
  CompositeTypeStmt: 'CREATE TYPE',
  CreateEnumStmt: 'CREATE TYPE',
  CreateRangeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE',
  AlterTypeStmt: 'ALTER TYPE',
  ViewStmt: 'CREATE VIEW',
  IndexStmt: 'CREATE INDEX',
  RuleStmt: 'CREATE RULE',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  CreateDomainStmt: 'CREATE DOMAIN',
  AlterDomainStmt: 'ALTER DOMAIN',
  CreatedbStmt: 'CREATE DATABASE',
  AlterDatabaseStmt: 'ALTER DATABASE',
  AlterDatabaseRefreshCollStmt: 'ALTER DATABASE',
  AlterDatabaseSetStmt: 'ALTER DATABASE',
  DropdbStmt: 'DROP DATABASE',
  CreateTrigStmt: 'CREATE TRIGGER',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER',
  AlterEventTrigStmt: 'ALTER EVENT TRIGGER',
  CreatePLangStmt: 'CREATE LANGUAGE',
  CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE',
  AlterRoleSetStmt: 'ALTER ROLE',
  DropRoleStmt: 'DROP ROLE',
  DropOwnedStmt: 'DROP OWNED',
  ReassignOwnedStmt: 'REASSIGN OWNED',
  CreateConversionStmt: 'CREATE CONVERSION',
  CreateCastStmt: 'CREATE CAST',
  CreateOpClassStmt: 'CREATE OPERATOR CLASS',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY',
  AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY',
  AlterOperatorStmt: 'ALTER OPERATOR',
  AlterTSDictionaryStmt: 'ALTER TEXT SEARCH DICTIONARY',
  AlterTSConfigurationStmt: 'ALTER TEXT SEARCH CONFIGURATION',
  CreatePolicyStmt: 'CREATE POLICY',
  AlterPolicyStmt: 'ALTER POLICY',
  CreateAmStmt: 'CREATE ACCESS METHOD',
  CreatePublicationStmt: 'CREATE PUBLICATION',
  AlterPublicationStmt: 'ALTER PUBLICATION',
  CreateSubscriptionStmt: 'CREATE SUBSCRIPTION',
  AlterSubscriptionStmt: 'ALTER SUBSCRIPTION',
  DropSubscriptionStmt: 'DROP SUBSCRIPTION',
  AlterCollationStmt: 'ALTER COLLATION',
  CreateTransformStmt: 'CREATE TRANSFORM',
  CreateStatsStmt: 'CREATE STATISTICS',
  AlterStatsStmt: 'ALTER STATISTICS',
};

const DEFINE_KIND_WORDS: Readonly<Record<string, string>> = {
  OBJECT_AGGREGATE: 'CREATE AGGREGATE',
  OBJECT_OPERATOR: 'CREATE OPERATOR',
  OBJECT_TYPE: 'CREATE TYPE',
  OBJECT_TSPARSER: 'CREATE TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'CREATE TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'CREATE TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'CREATE TEXT SEARCH CONFIGURATION',
  OBJECT_COLLATION: 'CREATE COLLATION',
};

const TRANSACTION_TAGS: Readonly<Record<string, string>> = {
  TRANS_STMT_BEGIN: 'BEGIN',
  TRANS_STMT_START: 'BEGIN',
  TRANS_STMT_COMMIT: 'COMMIT',
  TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT',
  TRANS_STMT_RELEASE: 'RELEASE',
  TRANS_STMT_ROLLBACK_TO: 'ROLLBACK',
  TRANS_STMT_PREPARE: 'PREPARE TRANSACTION',
  TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED',
  TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
};

const DISCARD_TAGS: Readonly<Record<string, string>> = {
  DISCARD_ALL: 'DISCARD ALL',
  DISCARD_PLANS: 'DISCARD PLANS',
  DISCARD_SEQUENCES: 'DISCARD SEQUENCES',
  DISCARD_TEMP: 'DISCARD TEMP',
};

function str(o: Obj, key: string): string | undefined {
  const v = o[key];
  return typeof v === 'string' ? v : undefined;
}

/** 'OBJECT_FOREIGN_TABLE' → 'FOREIGN TABLE' for object types added after this table. */
function objectWords(objtype: string | undefined): string {
  if (objtype === undefined) return 'OBJECT';
  return OBJECT_WORDS[objtype] ?? objtype.replace(/^OBJECT_/, '').replaceAll('_', ' ');
}

/** 'CreateFooBarStmt' → 'CREATE FOO BAR'; 'AlterTSThingStmt' → 'ALTER TS THING'. */
export function tagFromNodeName(nodeName: string): string {
  const base = nodeName.endsWith('Stmt') ? nodeName.slice(0, -4) : nodeName;
  const words = base
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .replaceAll('_', ' ')
    .trim()
    .toUpperCase();
  return words === '' ? 'UNKNOWN' : words;
}

/**
 * The tag of one raw statement. `nodeName` is the wrapper key of the statement node
 * (`SelectStmt`, `DropStmt`, ...) and `body` its value.
 */
export function commandTag(nodeName: string, body: Obj): string {
  const fixed = FIXED_TAGS[nodeName];
  if (fixed !== undefined) return fixed;
  switch (nodeName) {
    case 'TransactionStmt':
      return TRANSACTION_TAGS[str(body, 'kind') ?? ''] ?? 'BEGIN';
    case 'VariableSetStmt': {
      const kind = str(body, 'kind');
      if (kind === 'VAR_RESET' || kind === 'VAR_RESET_ALL') return 'RESET';
      const name = str(body, 'name')?.toLowerCase();
      if (name === 'role') return 'SET ROLE';
      if (name === 'session_authorization') return 'SET SESSION AUTHORIZATION';
      return 'SET';
    }
    case 'DropStmt':
      return 'DROP ' + objectWords(str(body, 'removeType'));
    case 'AlterTableStmt':
    case 'AlterTableMoveAllStmt':
      return 'ALTER ' + objectWords(str(body, 'objtype'));
    case 'RenameStmt': {
      // A renamed column takes its tag from the relation that holds it (utility.c).
      const renameType = str(body, 'renameType');
      const type = renameType === 'OBJECT_COLUMN' ? str(body, 'relationType') : renameType;
      return 'ALTER ' + objectWords(type);
    }
    case 'AlterObjectDependsStmt':
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
      return 'ALTER ' + objectWords(str(body, 'objectType'));
    case 'AlterFunctionStmt':
      return 'ALTER ' + objectWords(str(body, 'objtype') ?? 'OBJECT_FUNCTION');
    case 'CreateFunctionStmt':
      return body['is_procedure'] === true ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'GrantStmt':
      return body['is_grant'] === true ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt': // role membership, not object privileges: a tag of its own
      return body['is_grant'] === true ? 'GRANT ROLE' : 'REVOKE ROLE';
    case 'DefineStmt':
      return DEFINE_KIND_WORDS[str(body, 'kind') ?? ''] ?? 'CREATE ' + objectWords(str(body, 'kind'));
    case 'CreateTableAsStmt':
      if (str(body, 'objtype') === 'OBJECT_MATVIEW') return 'CREATE MATERIALIZED VIEW';
      return body['is_select_into'] === true ? 'SELECT' : 'CREATE TABLE AS';
    case 'VacuumStmt':
      return body['is_vacuumcmd'] === true ? 'VACUUM' : 'ANALYZE';
    case 'FetchStmt':
      return body['ismove'] === true ? 'MOVE' : 'FETCH';
    case 'ClosePortalStmt':
      return str(body, 'portalname') === undefined ? 'CLOSE CURSOR ALL' : 'CLOSE CURSOR';
    case 'DeallocateStmt':
      return body['isall'] === true ? 'DEALLOCATE ALL' : 'DEALLOCATE';
    case 'DiscardStmt':
      return DISCARD_TAGS[str(body, 'target') ?? ''] ?? 'DISCARD';
    default:
      return tagFromNodeName(nodeName);
  }
}
