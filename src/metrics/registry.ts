// The main thread's metrics: one prom-client Registry for what the main thread
// owns (policy revision, reloads, worker restarts, audit sink, and prom-client's
// default process metrics) plus the merged worker snapshots, exposed together
// by metrics() for GET /metrics.
//
// Workers keep plain counters (worker-counters.ts) and post snapshots; this
// side merges them (prom-client's clusterMetrics() works with the cluster
// module only, not with worker threads). Counters and histograms are summed
// over workers; gauges keep a worker label. A restarted worker counts from 0
// again: the last snapshot of each ended incarnation is folded into a base
// that is added to every scrape, so totals never go backwards (what a worker
// counted after its last snapshot before dying is lost — at most one snapshot
// interval).
// The merged families are handed to prom-client as metric JSON through
// AggregatorRegistry.aggregate() and Registry.merge() (both public API), so
// the text format is prom-client's own.

import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { CLIENT_STATES, metricDef, OTHER_LABEL, RELOAD_RESULTS, type MetricName } from './definitions.ts';
import { family, WORKER_LAYOUT, WORKER_RULE_SLOTS, type FamilyLayout, type MetricsSnapshot, type RecentDenial } from './worker-counters.ts';

/** Denials the main thread keeps for the status page (newest first). */
export const STATUS_DENIALS = 50;

/** What GET /status shows of the workers (from their latest snapshots). */
export interface WorkerStatus {
  worker: number;
  connections: Record<(typeof CLIENT_STATES)[number], number>;
  upstreamConnections: number;
  auditQueue: number;
}

const CONNECTIONS = family('rolegate_client_connections');
const UPSTREAM = family('rolegate_upstream_connections');
const AUDIT_QUEUE = family('rolegate_audit_worker_queue_records');

export interface MetricsRegistryOptions {
  /** prom-client's process_* and nodejs_* metrics (main thread only). Default true. */
  defaultMetrics?: boolean;
  /** Distinct rule label values over all workers; further rules count as _other. Default 100. */
  maxRuleLabels?: number;
}

/** What the audit side reports at scrape time (AuditHub.stats() fits). */
export interface AuditMetricsSource {
  written: number;
  dropped: number;
  /** Lines a crashed worker had formatted but not sent, written from its journal after it exited. */
  recovered: number;
  /** Records a crashed worker had not formatted yet: lost (also in dropped), named by session-lost lines in the log. */
  lost: number;
  queued: number;
  failures: number;
  healthy: boolean;
}

/** Families with at most this many label combinations (and no open label) export every combination, zeros included. */
const ZERO_FILL_MAX = 16;

interface Series {
  family: FamilyLayout;
  labels: Record<string, string>;
  /** 1 value, or histogram: bucket counts (not cumulative), overflow, sum, count. */
  values: number[];
}

interface PromValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

interface PromMetricJson {
  name: string;
  help: string;
  type: string;
  aggregator: 'sum';
  values: PromValue[];
}

function promName(name: MetricName): { name: string; help: string } {
  const def = metricDef(name);
  return { name: def.name, help: def.help };
}

export class MetricsRegistry {
  /** Content type of metrics() (Prometheus text format 0.0.4). */
  static readonly contentType: string = Registry.PROMETHEUS_CONTENT_TYPE;
  readonly contentType: string = Registry.PROMETHEUS_CONTENT_TYPE;
  private readonly registry: Registry = new Registry();
  private readonly live = new Map<number, MetricsSnapshot>();
  /** Newest last; at most STATUS_DENIALS. */
  private readonly denials: RecentDenial[] = [];
  private readonly base = new Map<string, Series>();
  private readonly rules = new Set<string>();
  private readonly maxRuleLabels: number;
  private readonly revision: Gauge<'revision'>;
  private readonly reloads: Counter<'result'>;
  private readonly restarts: Counter<'worker'>;
  private auditSource: (() => AuditMetricsSource) | null = null;

  constructor(options: MetricsRegistryOptions = {}) {
    this.maxRuleLabels = options.maxRuleLabels ?? 100;
    const registers = [this.registry];
    this.revision = new Gauge({ ...promName('rolegate_policy_revision_info'), labelNames: ['revision'], registers });
    this.reloads = new Counter({ ...promName('rolegate_policy_reloads_total'), labelNames: ['result'], registers });
    for (const result of RELOAD_RESULTS) this.reloads.inc({ result }, 0);
    this.restarts = new Counter({ ...promName('rolegate_worker_restarts_total'), labelNames: ['worker'], registers });
    // 100 ms (default 10 ms): the event-loop-delay monitor's timer otherwise costs an idle proxy CPU.
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
  }

  // ------------------------------------------------------------ main scope

  setPolicyRevision(revision: string | null): void {
    this.revision.reset();
    if (revision !== null) this.revision.set({ revision }, 1);
  }

  reloadOutcome(result: (typeof RELOAD_RESULTS)[number]): void {
    this.reloads.inc({ result });
  }

  workerRestarted(workerId: number): void {
    this.restarts.inc({ worker: String(workerId) });
  }

  /** Audit on: its metrics read this at scrape time. Call once. */
  setAuditSource(source: () => AuditMetricsSource): void {
    if (this.auditSource !== null) throw new Error('audit source already set');
    this.auditSource = source;
    const registers = [this.registry];
    // Running totals the hub keeps: each scrape sets the counter to the current total.
    const total = (name: MetricName, pick: (s: AuditMetricsSource) => number): void => {
      new Counter({
        ...promName(name),
        registers,
        collect(this: Counter) {
          this.reset();
          this.inc(pick(source()));
        },
      });
    };
    total('rolegate_audit_records_written_total', (s) => s.written);
    total('rolegate_audit_records_dropped_total', (s) => s.dropped);
    total('rolegate_audit_records_recovered_total', (s) => s.recovered);
    total('rolegate_audit_records_lost_total', (s) => s.lost);
    total('rolegate_audit_sink_failures_total', (s) => s.failures);
    new Gauge({
      ...promName('rolegate_audit_sink_queue_records'),
      registers,
      collect(this: Gauge) {
        this.set(source().queued);
      },
    });
    new Gauge({
      ...promName('rolegate_audit_sink_healthy'),
      registers,
      collect(this: Gauge) {
        this.set(source().healthy ? 1 : 0);
      },
    });
  }

  // --------------------------------------------------------- worker scope

  /** A worker's snapshot. Returns false (ignored) for a stale or malformed one. */
  acceptSnapshot(snapshot: MetricsSnapshot): boolean {
    if (!(snapshot.values instanceof Float64Array) || snapshot.values.length !== WORKER_LAYOUT.size) return false;
    const prev = this.live.get(snapshot.workerId);
    if (prev !== undefined) {
      if (prev.incarnation === snapshot.incarnation) {
        if (snapshot.seq <= prev.seq) return false;
      } else {
        // A new incarnation before we heard of the old one's exit: keep its counts.
        this.fold(prev);
      }
    }
    this.live.set(snapshot.workerId, snapshot);
    if (Array.isArray(snapshot.denials)) {
      this.denials.push(...snapshot.denials.slice(-STATUS_DENIALS));
      if (this.denials.length > STATUS_DENIALS) this.denials.splice(0, this.denials.length - STATUS_DENIALS);
    }
    return true;
  }

  /** A live worker's audit queue in its latest snapshot (0 when none). */
  workerAuditQueue(workerId: number): number {
    const s = this.live.get(workerId);
    return s === undefined ? 0 : (s.values[AUDIT_QUEUE.base] as number);
  }

  /** The latest denials the workers reported, newest first (order between workers: by time). */
  recentDenials(): RecentDenial[] {
    return [...this.denials].sort((a, b) => b.unix_ms - a.unix_ms);
  }

  /** Each live worker's connections by state, upstream connections and audit queue, from its latest snapshot. */
  workerStatus(): WorkerStatus[] {
    return [...this.live.values()]
      .sort((a, b) => a.workerId - b.workerId)
      .map((s) => {
        const connections = {} as WorkerStatus['connections'];
        for (const state of CLIENT_STATES) {
          const i = CONNECTIONS.indexes[0]?.get(state) as number;
          connections[state] = s.values[CONNECTIONS.base + i * (CONNECTIONS.strides[0] as number)] as number;
        }
        return { worker: s.workerId, connections, upstreamConnections: s.values[UPSTREAM.base] as number, auditQueue: s.values[AUDIT_QUEUE.base] as number };
      });
  }

  /** A worker-scope counter summed over every worker, live or gone (series whose labels include `labels`). */
  counterTotal(name: string, labels: Readonly<Record<string, string>> = {}): number {
    const wanted = Object.entries(labels);
    const matches = (s: Series): boolean => s.family.def.name === name && wanted.every(([k, v]) => s.labels[k] === v);
    let total = 0;
    for (const s of this.base.values()) if (matches(s)) total += s.values[0] ?? 0;
    for (const snap of this.live.values()) for (const s of this.expand(snap, false)) if (matches(s)) total += s.values[0] ?? 0;
    return total;
  }

  /** The worker exited: keep its counters in the base, drop its gauges. */
  workerExited(workerId: number): void {
    const prev = this.live.get(workerId);
    if (prev === undefined) return;
    this.fold(prev);
    this.live.delete(workerId);
  }

  private fold(snapshot: MetricsSnapshot): void {
    for (const s of this.expand(snapshot, false)) this.addInto(this.base, s);
  }

  private addInto(into: Map<string, Series>, s: Series): void {
    const key = `${s.family.def.name}\u0000${JSON.stringify(s.labels)}`;
    const have = into.get(key);
    if (have === undefined) {
      into.set(key, { family: s.family, labels: s.labels, values: [...s.values] });
      return;
    }
    for (let i = 0; i < s.values.length; i++) (have.values[i] as number) += s.values[i] as number;
  }

  private ruleLabel(value: string): string {
    if (value === OTHER_LABEL || this.rules.has(value)) return value;
    if (this.rules.size < this.maxRuleLabels) {
      this.rules.add(value);
      return value;
    }
    return OTHER_LABEL;
  }

  /** The non-zero series of a snapshot: counters and histograms, or (gauges: true) gauges only. */
  private expand(snapshot: MetricsSnapshot, gauges: boolean): Series[] {
    const out: Series[] = [];
    const v = snapshot.values;
    for (const f of WORKER_LAYOUT.families) {
      if ((f.def.type === 'gauge') !== gauges) continue;
      const open = snapshot.open[f.def.name] ?? [];
      for (let c = 0; c < f.combos; c++) {
        const at = f.base + c * f.slot;
        let nonZero = false;
        for (let k = 0; k < f.slot; k++) {
          if (v[at + k] !== 0) {
            nonZero = true;
            break;
          }
        }
        if (!nonZero && !gauges) continue;
        const labels = this.labelsOf(f, c, open);
        if (labels === null) continue;
        out.push({ family: f, labels, values: Array.from(v.subarray(at, at + f.slot)) });
      }
    }
    return out;
  }

  private labelsOf(f: FamilyLayout, combo: number, open: readonly string[]): Record<string, string> | null {
    const labels: Record<string, string> = {};
    let rest = combo;
    for (let i = 0; i < f.sizes.length; i++) {
      const stride = (f.strides[i] as number) / f.slot;
      const idx = Math.floor(rest / stride);
      rest -= idx * stride;
      const def = f.def.labels[i];
      if (def === undefined) return null;
      if (Array.isArray(def.values)) labels[def.name] = def.values[idx] as string;
      else if (idx === WORKER_RULE_SLOTS) labels[def.name] = OTHER_LABEL;
      else if (idx < open.length) labels[def.name] = this.ruleLabel(open[idx] as string);
      else return null;
    }
    return labels;
  }

  private zeroFilled(f: FamilyLayout): boolean {
    return f.openLabel < 0 && f.combos <= ZERO_FILL_MAX;
  }

  /** The merged worker-scope families as prom-client metric JSON. */
  private workerFamilies(): PromMetricJson[] {
    const totals = new Map<string, Series>();
    for (const s of this.base.values()) this.addInto(totals, s);
    for (const snap of this.live.values()) for (const s of this.expand(snap, false)) this.addInto(totals, s);
    const byFamily = new Map<FamilyLayout, Series[]>();
    for (const s of totals.values()) {
      const list = byFamily.get(s.family);
      if (list === undefined) byFamily.set(s.family, [s]);
      else list.push(s);
    }
    const out: PromMetricJson[] = [];
    const workers = [...this.live.values()].sort((a, b) => a.workerId - b.workerId);
    for (const f of WORKER_LAYOUT.families) {
      const { name, help, type } = f.def;
      const metric: PromMetricJson = { name, help, type, aggregator: 'sum', values: [] };
      if (type === 'gauge') {
        for (const snap of workers) {
          for (const s of this.expand(snap, true)) {
            if (s.family === f) metric.values.push({ value: s.values[0] as number, labels: { worker: String(snap.workerId), ...s.labels } });
          }
        }
      } else {
        let series = byFamily.get(f) ?? [];
        if (this.zeroFilled(f)) {
          const have = new Map(series.map((s) => [JSON.stringify(s.labels), s]));
          series = [];
          for (let c = 0; c < f.combos; c++) {
            const labels = this.labelsOf(f, c, []) as Record<string, string>;
            series.push(have.get(JSON.stringify(labels)) ?? { family: f, labels, values: new Array<number>(f.slot).fill(0) });
          }
        } else {
          series.sort((a, b) => (JSON.stringify(a.labels) < JSON.stringify(b.labels) ? -1 : 1));
        }
        for (const s of series) {
          if (type === 'counter') metric.values.push({ value: s.values[0] as number, labels: s.labels });
          else this.histogramValues(metric, f, s);
        }
      }
      out.push(metric);
    }
    return out;
  }

  private histogramValues(metric: PromMetricJson, f: FamilyLayout, s: Series): void {
    const buckets = f.def.buckets ?? [];
    let cumulative = 0;
    for (let i = 0; i < buckets.length; i++) {
      cumulative += s.values[i] as number;
      metric.values.push({ metricName: `${metric.name}_bucket`, labels: { ...s.labels, le: buckets[i] as number }, value: cumulative });
    }
    const n = buckets.length;
    const count = s.values[n + 2] as number;
    metric.values.push({ metricName: `${metric.name}_bucket`, labels: { ...s.labels, le: '+Inf' }, value: count });
    metric.values.push({ metricName: `${metric.name}_sum`, labels: s.labels, value: s.values[n + 1] as number });
    metric.values.push({ metricName: `${metric.name}_count`, labels: s.labels, value: count });
  }

  /** The exposition text for GET /metrics (serve it with `contentType`). */
  async metrics(): Promise<string> {
    const merged = AggregatorRegistry.aggregate<typeof Registry.PROMETHEUS_CONTENT_TYPE>([this.workerFamilies()]);
    return Registry.merge([this.registry, merged]).metrics();
  }

  /** Live workers and how many series the rule label holds (for /status and tests). */
  info(): { workers: number[]; ruleLabels: number } {
    return { workers: [...this.live.keys()].sort((a, b) => a - b), ruleLabels: this.rules.size };
  }
}
