// GET /status (JSON) and GET /status.html (a page that renders it every two
// seconds) on the admin port: what an operator looks at first — the policy
// revision and how the last reload went (a refused policy's reason included),
// each worker's sessions by state, the audit sink, and the latest
// denials with who, from where, which rule. Built from what the main thread
// already holds (the workers' metrics snapshots, the audit hub): asking for
// it costs the workers nothing.

import type { AuditHubStats } from '../audit/main-side.ts';
import type { WorkerStatus } from '../metrics/registry.ts';
import type { RecentDenial } from '../metrics/worker-counters.ts';

/** The last reload as the policy reloader recorded it. */
export interface ReloadRecord {
  at: string;
  ok: boolean;
  reason: string;
  revision: string | null;
  message: string;
  code: string | null;
}

export interface StatusSource {
  revision(): string | null;
  /** The last reload (SIGHUP, POST /reload, file change); null before the first or without a policy. */
  lastReload?: () => ReloadRecord | null;
  startedAt: number;
  workers(): WorkerStatus[];
  recentDenials(): RecentDenial[];
  audit(): (AuditHubStats & { sinkHealthy: boolean }) | null;
  /** Shadow mode (policy.shadow): the candidate's revision and how often it decided and disagreed; null when off. */
  shadow?: () => ShadowStatus | null;
  /** guards.allow of the running config: the side doors the operator opened. */
  guards?: () => { allow: readonly string[] };
}

export interface ShadowStatus {
  revision: string;
  decisions: number;
  disagreements: { allow_to_deny: number; deny_to_allow: number };
}

export interface Status {
  revision: string | null;
  /** The active revision and the last reload: `error` says why a refused one was refused (the old revision stays active). */
  policy: {
    revision: string | null;
    last_reload: { at: string; ok: boolean; reason: string; revision: string | null; code: string | null; error: string | null } | null;
    shadow: ShadowStatus | null;
  };
  started_at: string;
  uptime_s: number;
  workers: WorkerStatus[];
  audit: { healthy: boolean; mode: string; written: number; dropped: number; queued: number; failures: number } | null;
  recent_denials: RecentDenial[];
  /** rolegate's own guards: which ones the config lifted (every other guard holds). */
  guards: { allow: readonly string[] };
}

export function status(source: StatusSource, now = Date.now()): Status {
  const audit = source.audit();
  const last = source.lastReload?.() ?? null;
  return {
    revision: source.revision(),
    policy: {
      revision: source.revision(),
      last_reload: last === null ? null : { at: last.at, ok: last.ok, reason: last.reason, revision: last.revision, code: last.code, error: last.ok ? null : last.message },
      shadow: source.shadow?.() ?? null,
    },
    started_at: new Date(source.startedAt).toISOString(),
    uptime_s: Math.floor((now - source.startedAt) / 1000),
    workers: source.workers(),
    audit: audit === null ? null : { healthy: audit.sinkHealthy, mode: audit.mode, written: audit.written, dropped: audit.dropped, queued: audit.queued, failures: audit.failures },
    recent_denials: source.recentDenials(),
    guards: source.guards?.() ?? { allow: [] },
  };
}

/**
 * The page: static HTML whose script fetches /status and renders it with
 * textContent only (identities and rules come from clients and policies: no
 * markup is ever built from them).
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rolegate status</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00020; font-weight: 600; }
#reload { white-space: pre-wrap; }
</style>
</head>
<body>
<h1>rolegate</h1>
<p id="summary">loading…</p>
<p id="reload"></p>
<p id="shadow"></p>
<p id="guards"></p>
<h2>Workers</h2>
<table id="workers"></table>
<h2>Audit</h2>
<p id="audit"></p>
<h2>Recent denials</h2>
<table id="denials"></table>
<script>
function row(table, cells, header) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement(header ? 'th' : 'td');
    td.textContent = String(c);
    if (!header && typeof c === 'number') td.className = 'n';
    tr.appendChild(td);
  }
  table.appendChild(tr);
}
async function refresh() {
  try {
    const s = await (await fetch('/status', { cache: 'no-store' })).json();
    document.getElementById('summary').textContent = 'policy revision ' + (s.revision ?? 'none') + ' · up ' + s.uptime_s + ' s since ' + s.started_at;
    const r = document.getElementById('reload');
    const last = s.policy.last_reload;
    r.className = last !== null && !last.ok ? 'bad' : '';
    r.textContent = last === null ? 'no reload yet' : 'last reload ' + last.at + ' (' + last.reason + '): ' + (last.ok ? 'ok' : 'REFUSED, revision ' + (last.revision ?? 'none') + ' stays active: ' + last.error);
    const sh = s.policy.shadow;
    document.getElementById('shadow').textContent = sh === null ? 'shadow policy: off' : 'shadow policy ' + sh.revision + ' · ' + sh.decisions + ' decisions · would deny what runs now: ' + sh.disagreements.allow_to_deny + ' · would allow what is refused now: ' + sh.disagreements.deny_to_allow;
    const g = document.getElementById('guards');
    g.className = s.guards.allow.length > 0 ? 'bad' : '';
    g.textContent = s.guards.allow.length === 0 ? 'every guard holds' : 'guards lifted by guards.allow: ' + s.guards.allow.join(', ');
    const w = document.getElementById('workers');
    w.replaceChildren();
    const states = s.workers.length > 0 ? Object.keys(s.workers[0].connections) : [];
    row(w, ['worker', ...states, 'upstream', 'audit queue'], true);
    for (const x of s.workers) row(w, [x.worker, ...states.map((k) => x.connections[k]), x.upstreamConnections, x.auditQueue]);
    const a = document.getElementById('audit');
    a.className = s.audit !== null && !s.audit.healthy ? 'bad' : '';
    a.textContent = s.audit === null ? 'off' : (s.audit.healthy ? 'healthy' : 'FAILING') + ' · ' + s.audit.mode + ' · written ' + s.audit.written + ' · dropped ' + s.audit.dropped + ' · queued ' + s.audit.queued + ' · failures ' + s.audit.failures;
    const d = document.getElementById('denials');
    d.replaceChildren();
    row(d, ['time', 'kind', 'identity', 'client', 'rule', 'command', 'worker', 'session'], true);
    for (const x of s.recent_denials) row(d, [new Date(x.unix_ms).toISOString(), x.kind, x.identity, x.client, x.rule ?? '', x.command ?? '', x.worker, x.session]);
  } catch (err) {
    document.getElementById('summary').textContent = 'status unavailable: ' + err;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
