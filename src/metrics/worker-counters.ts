// Worker-side metrics: every worker-scope metric of definitions.ts lives in one
// Float64Array, laid out deterministically from the definitions (the main
// thread derives the same layout to read snapshots). Counting is an indexed
// add into that array through a handle (an offset) resolved once per label
// set — no label strings, Maps or prom-client objects on the hot path. The
// only per-statement lookup is the command tag → label index (one Map hit,
// ~20 ns; callers on the hottest path may cache the index with the facts).
// Every snapshotIntervalMs the worker posts snapshot(): a copy of the array
// plus the dictionary of the one open label (rule).

import { randomBytes } from 'node:crypto';
import { commandLabel, METRICS, OTHER_LABEL, type MetricDef, type WorkerMetricName } from './definitions.ts';

/** Distinct rule label values one worker incarnation keeps apart; further rules count under _other. */
export const WORKER_RULE_SLOTS = 64;
/** Rule names longer than this are cut (a label value is not a place for prose). */
export const MAX_RULE_LABEL_CHARS = 100;

export interface FamilyLayout {
  readonly def: MetricDef;
  /** Offset of the family's first value in the array. */
  readonly base: number;
  /** Values per label combination: 1, or for a histogram buckets + 3 (overflow, sum, count). */
  readonly slot: number;
  /** Per label: number of values (an open label: WORKER_RULE_SLOTS + 1, the last being _other). */
  readonly sizes: readonly number[];
  /** Per label: offset step, in array elements. */
  readonly strides: readonly number[];
  readonly combos: number;
  /** Closed label values → index, per label (null for the open label). */
  readonly indexes: ReadonlyArray<ReadonlyMap<string, number> | null>;
  /** Index of the open (rule) label, or -1. */
  readonly openLabel: number;
}

export interface WorkerLayout {
  readonly families: readonly FamilyLayout[];
  readonly byName: ReadonlyMap<string, FamilyLayout>;
  readonly size: number;
}

function buildLayout(): WorkerLayout {
  const families: FamilyLayout[] = [];
  const byName = new Map<string, FamilyLayout>();
  let offset = 0;
  for (const def of METRICS as readonly MetricDef[]) {
    if (def.scope !== 'worker') continue;
    const slot = def.type === 'histogram' ? (def.buckets?.length ?? 0) + 3 : 1;
    const sizes = def.labels.map((l) => (Array.isArray(l.values) ? l.values.length : WORKER_RULE_SLOTS + 1));
    const strides: number[] = new Array<number>(sizes.length);
    let step = slot;
    for (let i = sizes.length - 1; i >= 0; i--) {
      strides[i] = step;
      step *= sizes[i] as number;
    }
    const combos = step / slot;
    const indexes = def.labels.map((l) => (Array.isArray(l.values) ? new Map((l.values as readonly string[]).map((v, i) => [v, i])) : null));
    const family: FamilyLayout = { def, base: offset, slot, sizes, strides, combos, indexes, openLabel: def.labels.findIndex((l) => !Array.isArray(l.values)) };
    families.push(family);
    byName.set(def.name, family);
    offset += step;
  }
  return { families, byName, size: offset };
}

/** The one layout (identical in every thread: it depends only on definitions.ts). */
export const WORKER_LAYOUT: WorkerLayout = buildLayout();

/** A denial as the admin status page lists it. */
export interface RecentDenial {
  unix_ms: number;
  worker: number;
  session: string;
  identity: string;
  client: string;
  kind: 'connect' | 'statement';
  rule: string | null;
  /** The statement's command tag (null: a connect, or text that did not parse). */
  command: string | null;
}

/** Denials a worker keeps between two snapshots (the latest). */
export const MAX_RECENT_DENIALS = 20;

/** Worker → main, every snapshot interval. */
export interface MetricsSnapshot {
  type: 'metrics';
  workerId: number;
  /** Changes when the worker restarts: the main thread keeps totals monotonic across it. */
  incarnation: string;
  seq: number;
  values: Float64Array;
  /** Per family name with an open label: the label values in slot order. */
  open: Record<string, string[]>;
  /** Denials since the previous snapshot (the latest MAX_RECENT_DENIALS). */
  denials: RecentDenial[];
}

/** The layout of a worker-scope family (throws for any other name). */
export function family(name: string): FamilyLayout {
  const f = WORKER_LAYOUT.byName.get(name);
  if (f === undefined) throw new Error(`${name} is not a worker-scope metric`);
  return f;
}

const STATEMENTS = family('rolegate_statements_total');
const DENIALS = family('rolegate_statement_denials_total');
const DECISION = family('rolegate_decision_duration_seconds');
const QUERY = family('rolegate_query_duration_seconds');
const COMMAND_INDEX = STATEMENTS.indexes[0] as ReadonlyMap<string, number>;

export class WorkerMetrics {
  readonly workerId: number;
  readonly incarnation: string;
  /** Every worker-scope value. Handles are offsets into it. */
  readonly values: Float64Array;
  private seq = 0;
  private readonly open = new Map<FamilyLayout, Map<string, number>>();
  private readonly lastTotals = new Map<number, number>();
  /** Command tags seen → statements_total offset of (tag, allow, simple); bounded. */
  private readonly commandOffsets = new Map<string, number>();
  private denials: RecentDenial[] = [];

  constructor(workerId: number) {
    this.workerId = workerId;
    this.incarnation = `${workerId}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    this.values = new Float64Array(WORKER_LAYOUT.size);
    for (const f of WORKER_LAYOUT.families) if (f.openLabel >= 0) this.open.set(f, new Map());
  }

  /**
   * Resolve a label set to a handle (do it once, keep the number). Closed
   * labels must take one of their declared values; the open label (rule) is
   * entered in this worker's dictionary, up to WORKER_RULE_SLOTS.
   */
  handle(name: WorkerMetricName, labels: Readonly<Record<string, string>> = {}): number {
    const f = family(name);
    let offset = f.base;
    f.def.labels.forEach((l, i) => {
      const value = labels[l.name];
      if (value === undefined) throw new Error(`${name}: label ${l.name} missing`);
      const index = f.indexes[i];
      let at: number;
      if (index === null || index === undefined) at = this.openIndex(f, value);
      else {
        const found = index.get(value);
        if (found === undefined) throw new Error(`${name}: ${l.name}="${value}" is not one of its declared values`);
        at = found;
      }
      offset += at * (f.strides[i] as number);
    });
    return offset;
  }

  private openIndex(f: FamilyLayout, raw: string): number {
    const dict = this.open.get(f) as Map<string, number>;
    const value = raw.length > MAX_RULE_LABEL_CHARS ? raw.slice(0, MAX_RULE_LABEL_CHARS) : raw;
    let at = dict.get(value);
    if (at === undefined) {
      if (dict.size >= WORKER_RULE_SLOTS || value === OTHER_LABEL) return WORKER_RULE_SLOTS;
      at = dict.size;
      dict.set(value, at);
    }
    return at;
  }

  inc(handle: number, by = 1): void {
    (this.values[handle] as number) += by;
  }

  set(handle: number, value: number): void {
    this.values[handle] = value;
  }

  /** Feed a running total kept elsewhere (e.g. a cache's hit count): adds the increase, and treats a decrease as that source restarting from 0. */
  addTotal(handle: number, total: number): void {
    const last = this.lastTotals.get(handle) ?? 0;
    (this.values[handle] as number) += total >= last ? total - last : total;
    this.lastTotals.set(handle, total);
  }

  /** Histogram observation (seconds). */
  observe(handle: number, value: number, buckets: readonly number[]): void {
    const v = this.values;
    const n = buckets.length;
    let i = 0;
    while (i < n && value > (buckets[i] as number)) i++;
    (v[handle + i] as number) += 1;
    (v[handle + n + 1] as number) += value;
    (v[handle + n + 2] as number) += 1;
  }

  // ---- hot-path helpers: arithmetic on pre-resolved offsets

  /** One decided statement. command: the statement's command tag (null: it did not parse). */
  countStatement(command: string | null, allowed: boolean, protocol: 'simple' | 'extended'): void {
    const key = command ?? '';
    let offset = this.commandOffsets.get(key);
    if (offset === undefined) {
      offset = STATEMENTS.base + (COMMAND_INDEX.get(commandLabel(command)) as number) * (STATEMENTS.strides[0] as number);
      if (this.commandOffsets.size < 4096) this.commandOffsets.set(key, offset);
    }
    (this.values[offset + (allowed ? 0 : (STATEMENTS.strides[1] as number)) + (protocol === 'simple' ? 0 : (STATEMENTS.strides[2] as number))] as number) += 1;
  }

  countDenial(rule: string): void {
    (this.values[DENIALS.base + this.openIndex(DENIALS, rule)] as number) += 1;
  }

  /** A denial for the status page (not on the allow path: denials are rare and already logged). */
  noteDenial(denial: RecentDenial): void {
    if (this.denials.length >= MAX_RECENT_DENIALS) this.denials.shift();
    this.denials.push(denial);
  }

  observeDecision(kind: 'connect' | 'statement', seconds: number): void {
    this.observe(DECISION.base + (kind === 'connect' ? 0 : (DECISION.strides[0] as number)), seconds, DECISION.def.buckets as readonly number[]);
  }

  observeQuery(protocol: 'simple' | 'extended', seconds: number): void {
    this.observe(QUERY.base + (protocol === 'simple' ? 0 : (QUERY.strides[0] as number)), seconds, QUERY.def.buckets as readonly number[]);
  }

  /** A copy of every value, to postMessage. */
  snapshot(): MetricsSnapshot {
    const open: Record<string, string[]> = {};
    for (const [f, dict] of this.open) open[f.def.name] = [...dict.keys()];
    const denials = this.denials;
    this.denials = [];
    return { type: 'metrics', workerId: this.workerId, incarnation: this.incarnation, seq: ++this.seq, values: this.values.slice(), open, denials };
  }
}

