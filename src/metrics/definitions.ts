// Every metric rolegate exports, declared once (like envoy's postgres_proxy
// stats list). Workers count into plain arrays laid out from this list
// (worker-counters.ts); the main thread's prom-client registry (registry.ts)
// reads the same list, and docs/metrics.md is generated from it (docs.ts).
// Prometheus conventions: rolegate_ prefix, base units (seconds, bytes),
// counters end in _total, _info gauges carry their value in a label.
//
// Label values are closed sets wherever they come from traffic, so no client
// can grow the series count: commands outside the list fold into
// "CREATE OTHER" / "ALTER OTHER" / "DROP OTHER" / "OTHER"; policy rule names
// (chosen by policy authors, not clients) are capped (max_rule_labels), the
// rest count under "_other".

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** worker: counted in each worker thread, merged in main; main: owned by the main thread. */
export type MetricScope = 'worker' | 'main';

export interface LabelDef {
  readonly name: string;
  /** The closed set of values (worker scope), or the kind of an open label: */
  readonly values: readonly string[] | 'rule' | 'worker' | 'revision';
}

export interface MetricDef {
  readonly name: string;
  readonly type: MetricType;
  readonly scope: MetricScope;
  readonly help: string;
  /** For worker-scope gauges the main thread adds a `worker` label; worker-scope counters and histograms are summed over workers. */
  readonly labels: readonly LabelDef[];
  readonly buckets?: readonly number[];
}

/** The value a capped label takes once the cap is reached. */
export const OTHER_LABEL = '_other';

export const DECISIONS = ['allow', 'deny'] as const;
export const PROTOCOLS = ['simple', 'extended'] as const;
export const CLIENT_STATES = ['startup', 'authenticating', 'parked', 'connecting', 'relay'] as const;
export const CACHE_RESULTS = ['hit', 'miss'] as const;
export const DECISION_KINDS = ['connect', 'statement'] as const;
export const AUTH_METHODS = ['scram-sha-256', 'md5', 'password', 'cert', 'jwt', 'other'] as const;
export const REFUSE_REASONS = [
  'too_many_clients',
  'startup_invalid',
  'startup_timeout',
  'unsupported_protocol',
  'tls_required',
  'auth_failed',
  'policy_denied',
  'upstream_failed',
  'audit_unavailable',
  'shutting_down',
  'protocol_error',
] as const;
export const UPSTREAM_ERROR_KINDS = ['unreachable', 'auth', 'protocol', 'lost', 'other'] as const;
export const RELOAD_RESULTS = ['success', 'failure', 'unchanged'] as const;
export const SHADOW_CHANGES = ['allow_to_deny', 'deny_to_allow'] as const;

/**
 * Command label values: the command tags statements most often carry, then
 * fold groups. "UNPARSED" counts text the parser rejected (and invalid text),
 * "FUNCTION CALL" the FunctionCall protocol message.
 */
export const METRIC_COMMANDS = [
  'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'COPY',
  'BEGIN', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE', 'PREPARE TRANSACTION', 'COMMIT PREPARED', 'ROLLBACK PREPARED',
  'SET', 'SET ROLE', 'SET SESSION AUTHORIZATION', 'SET CONSTRAINTS', 'RESET', 'SHOW', 'DISCARD', 'DISCARD ALL',
  'EXPLAIN', 'PREPARE', 'EXECUTE', 'DEALLOCATE', 'DEALLOCATE ALL', 'DECLARE CURSOR', 'FETCH', 'MOVE', 'CLOSE CURSOR', 'CLOSE CURSOR ALL',
  'LISTEN', 'NOTIFY', 'UNLISTEN', 'LOCK TABLE', 'TRUNCATE TABLE', 'CALL', 'DO', 'LOAD',
  'VACUUM', 'ANALYZE', 'CLUSTER', 'REINDEX', 'CHECKPOINT', 'REFRESH MATERIALIZED VIEW', 'COMMENT',
  'GRANT', 'REVOKE', 'GRANT ROLE', 'REVOKE ROLE',
  'CREATE TABLE', 'CREATE TABLE AS', 'CREATE INDEX', 'CREATE VIEW', 'CREATE MATERIALIZED VIEW', 'CREATE SCHEMA', 'CREATE SEQUENCE',
  'CREATE FUNCTION', 'CREATE PROCEDURE', 'CREATE TRIGGER', 'CREATE TYPE', 'CREATE EXTENSION', 'CREATE ROLE', 'CREATE DATABASE',
  'ALTER TABLE', 'ALTER INDEX', 'ALTER SEQUENCE', 'ALTER ROLE', 'ALTER DATABASE', 'ALTER SYSTEM', 'ALTER DEFAULT PRIVILEGES',
  'DROP TABLE', 'DROP INDEX', 'DROP VIEW', 'DROP SCHEMA', 'DROP SEQUENCE', 'DROP FUNCTION', 'DROP PROCEDURE', 'DROP TRIGGER',
  'DROP TYPE', 'DROP EXTENSION', 'DROP ROLE', 'DROP DATABASE', 'DROP OWNED', 'REASSIGN OWNED',
  'UNPARSED', 'FUNCTION CALL',
  'CREATE OTHER', 'ALTER OTHER', 'DROP OTHER', 'OTHER',
] as const;

/** 1 µs … 10 ms: a cached decision is ~1 µs, a parse + policy evaluation tens of µs. */
export const DECISION_BUCKETS_SECONDS = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2] as const;
/** 100 µs … 30 s. */
export const QUERY_BUCKETS_SECONDS = [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

const worker: LabelDef = { name: 'worker', values: 'worker' };

export const METRICS = [
  // ---- counted in the workers
  { name: 'rolegate_client_connections', type: 'gauge', scope: 'worker', help: 'Client connections open now, by worker and session state (parked = authenticated, upstream login deferred to the first message; relay = connected upstream).', labels: [{ name: 'state', values: CLIENT_STATES }] },
  { name: 'rolegate_client_connections_accepted_total', type: 'counter', scope: 'worker', help: 'Client TCP connections accepted by a worker listener.', labels: [] },
  { name: 'rolegate_client_connections_refused_total', type: 'counter', scope: 'worker', help: 'Client connections closed by rolegate before reaching relay, by reason.', labels: [{ name: 'reason', values: REFUSE_REASONS }] },
  { name: 'rolegate_auth_failures_total', type: 'counter', scope: 'worker', help: 'Failed client authentications, by method.', labels: [{ name: 'method', values: AUTH_METHODS }] },
  { name: 'rolegate_statements_total', type: 'counter', scope: 'worker', help: 'Statements decided, by command tag, decision and protocol (each statement of a multi-statement Query counts).', labels: [{ name: 'command', values: METRIC_COMMANDS }, { name: 'decision', values: DECISIONS }, { name: 'protocol', values: PROTOCOLS }] },
  { name: 'rolegate_statement_denials_total', type: 'counter', scope: 'worker', help: 'Denied statements, by the policy rule that denied them (capped: further rules count as _other).', labels: [{ name: 'rule', values: 'rule' }] },
  { name: 'rolegate_decision_duration_seconds', type: 'histogram', scope: 'worker', help: 'Time to decide a connection or a statement (facts, cache lookups, policy evaluation).', labels: [{ name: 'kind', values: DECISION_KINDS }], buckets: DECISION_BUCKETS_SECONDS },
  { name: 'rolegate_query_duration_seconds', type: 'histogram', scope: 'worker', help: 'Proxy-observed execution time of allowed statements: forwarded until CommandComplete or ErrorResponse.', labels: [{ name: 'protocol', values: PROTOCOLS }], buckets: QUERY_BUCKETS_SECONDS },
  { name: 'rolegate_parse_cache_requests_total', type: 'counter', scope: 'worker', help: 'SQL facts cache lookups (exact text, or another text of the same literal-free shape), by result.', labels: [{ name: 'result', values: CACHE_RESULTS }] },
  { name: 'rolegate_decision_cache_requests_total', type: 'counter', scope: 'worker', help: 'Policy decision cache lookups, by result.', labels: [{ name: 'result', values: CACHE_RESULTS }] },
  { name: 'rolegate_shadow_decisions_total', type: 'counter', scope: 'worker', help: 'Decisions the shadow policy (policy.shadow) made beside the active one, by kind.', labels: [{ name: 'kind', values: DECISION_KINDS }] },
  { name: 'rolegate_shadow_disagreements_total', type: 'counter', scope: 'worker', help: "Shadow decisions that differ from the active policy's: allow_to_deny (the candidate would refuse what runs now), deny_to_allow (it would let through what is refused now).", labels: [{ name: 'kind', values: DECISION_KINDS }, { name: 'change', values: SHADOW_CHANGES }] },
  { name: 'rolegate_upstream_connect_errors_total', type: 'counter', scope: 'worker', help: 'Failed upstream logins, by kind.', labels: [{ name: 'kind', values: UPSTREAM_ERROR_KINDS }] },
  { name: 'rolegate_upstream_connections', type: 'gauge', scope: 'worker', help: 'Upstream (PostgreSQL) connections open now, by worker.', labels: [] },
  { name: 'rolegate_audit_worker_queue_records', type: 'gauge', scope: 'worker', help: 'Audit records waiting in a worker to be sent to the main thread.', labels: [] },
  // ---- owned by the main thread
  { name: 'rolegate_policy_revision_info', type: 'gauge', scope: 'main', help: 'The policy revision in force (value 1; no series without a policy).', labels: [{ name: 'revision', values: 'revision' }] },
  { name: 'rolegate_policy_reloads_total', type: 'counter', scope: 'main', help: 'Policy reloads, by result (unchanged: same revision, nothing swapped).', labels: [{ name: 'result', values: RELOAD_RESULTS }] },
  { name: 'rolegate_audit_records_written_total', type: 'counter', scope: 'main', help: 'Audit records written by the sink.', labels: [] },
  { name: 'rolegate_audit_records_recovered_total', type: 'counter', scope: 'main', help: 'Audit lines a crashed worker had formatted but not yet sent, written from its journal after it exited.', labels: [] },
  { name: 'rolegate_audit_records_lost_total', type: 'counter', scope: 'main', help: 'Audit records a crashed worker had not formatted yet (also counted in dropped); the log names each session and seq range in a session-lost line.', labels: [] },
  { name: 'rolegate_audit_records_dropped_total', type: 'counter', scope: 'main', help: 'Audit records lost: refused by a full buffer (worker or sink), rejected by the collector, or unwritable at shutdown.', labels: [] },
  { name: 'rolegate_audit_sink_queue_records', type: 'gauge', scope: 'main', help: 'Audit records accepted by the sink and not yet written.', labels: [] },
  { name: 'rolegate_audit_sink_healthy', type: 'gauge', scope: 'main', help: '1 while the audit sink writes successfully and has room; 0 otherwise (fail-closed refuses statements then).', labels: [] },
  { name: 'rolegate_audit_sink_failures_total', type: 'counter', scope: 'main', help: 'Failed audit sink writes or requests.', labels: [] },
  { name: 'rolegate_worker_restarts_total', type: 'counter', scope: 'main', help: 'Worker threads restarted after an unexpected exit, by worker.', labels: [worker] },
] as const satisfies readonly MetricDef[];

export type MetricName = (typeof METRICS)[number]['name'];
export type WorkerMetricName = Extract<(typeof METRICS)[number], { scope: 'worker' }>['name'];

export function metricDef(name: MetricName): MetricDef {
  const def = METRICS.find((m) => m.name === name);
  if (def === undefined) throw new Error(`unknown metric ${name}`);
  return def;
}

const COMMAND_SET: ReadonlySet<string> = new Set(METRIC_COMMANDS);

/** The command label for a command tag: itself when in the closed set, else its fold group. */
export function commandLabel(tag: string | null): (typeof METRIC_COMMANDS)[number] {
  if (tag === null) return 'UNPARSED';
  if (COMMAND_SET.has(tag)) return tag as (typeof METRIC_COMMANDS)[number];
  if (tag.startsWith('CREATE ')) return 'CREATE OTHER';
  if (tag.startsWith('ALTER ')) return 'ALTER OTHER';
  if (tag.startsWith('DROP ')) return 'DROP OTHER';
  if (tag.startsWith('DISCARD ')) return 'DISCARD';
  return 'OTHER';
}

/** Session state (src/session/session.ts) → client_connections state label; null for closed sessions. */
export function clientStateLabel(state: string): (typeof CLIENT_STATES)[number] | null {
  switch (state) {
    case 'proxy-header':
    case 'startup':
    case 'tls-handshake':
      return 'startup';
    case 'sasl-initial':
    case 'sasl-final':
    case 'password':
    case 'authenticating':
      return 'authenticating';
    case 'parked':
      return 'parked';
    case 'connecting':
      return 'connecting';
    case 'relay':
      return 'relay';
    default:
      return null;
  }
}

/** Error code of a failed upstream login → upstream_connect_errors kind (by code, never by message text). */
export function upstreamErrorKind(code: string): (typeof UPSTREAM_ERROR_KINDS)[number] {
  switch (code) {
    case 'RG_UPSTREAM_UNREACHABLE':
      return 'unreachable';
    case 'RG_UPSTREAM_AUTH':
      return 'auth';
    case 'RG_UPSTREAM_PROTOCOL':
    case 'RG_UPSTREAM_PARAMETER':
      return 'protocol';
    case 'RG_UPSTREAM_LOST':
      return 'lost';
    default:
      return 'other';
  }
}
