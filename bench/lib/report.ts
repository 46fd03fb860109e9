// Summaries, the console/markdown table and the SVG chart of a bench/run.ts
// run. Every number in the table is a median over the run's rounds; ratios
// are medians of per-round ratios (each round runs all targets back to back,
// so a ratio compares runs made under the same machine noise).

export const TARGETS = ['direct', 'pgbouncer', 'rolegate', 'relay'] as const;
export type TargetName = (typeof TARGETS)[number];

export type CellKind = 'load' | 'rate' | 'storm';

export interface Sample {
  round: number;
  target: TargetName;
  ok: boolean;
  exitCode: number | null;
  tps: number;
  processed: number;
  failed: number;
  p50Ms: number | null;
  p99Ms: number | null;
  serviceP50Ms: number | null;
  serviceP99Ms: number | null;
  /** Proxy CPU (utime + stime, all threads) during the run per processed transaction; null for direct. */
  cpuUsPerTx: number | null;
  /** Proxy VmRSS right after the run; null for direct. */
  rssBytes: number | null;
  /** pgbench summary lines, or its whole output when the run failed. */
  output: string;
}

export interface CellSpec {
  id: string;
  kind: CellKind;
  script: 'select-only' | 'tpcb';
  mode: 'simple' | 'extended' | 'prepared';
  clients: number;
  rate?: number;
}

export interface CellResult extends CellSpec {
  samples: Sample[];
}

export interface TargetSummary {
  target: TargetName;
  runs: number;
  okRuns: number;
  failedTx: number;
  tps: number;
  vsDirect: number | null;
  vsPgbouncer: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  /** rate cells: this target's latency minus direct's, per round, median. */
  addedP50Ms: number | null;
  addedP99Ms: number | null;
  serviceP50Ms: number | null;
  serviceP99Ms: number | null;
  cpuUsPerTx: number | null;
  rssMiB: number | null;
}

export interface IdleSummary {
  proxy: 'rolegate' | 'pgbouncer';
  /** logged-in: authenticated, no query yet; after-query: one SELECT 1 each (a server connection held). */
  mode: 'logged-in' | 'after-query';
  requested: number;
  /** PostgreSQL backends while the clients were idle. */
  backendsWhileIdle: number;
  held: number;
  answeredAfterIdle: number;
  failedLogins: number;
  firstError: string | null;
  /** Fresh process, before the warm-up burst. */
  rssColdMiB: number;
  rssBeforeMiB: number;
  rssIdleMiB: number;
  mibPer1000: number;
  postgresBackends: number;
  openSeconds: number;
  note: string | null;
}

export function median(values: readonly number[]): number | null {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

function pairedMedian(cell: CellResult, target: TargetName, other: TargetName, f: (a: Sample, b: Sample) => number | null): number | null {
  const values: number[] = [];
  for (const a of cell.samples) {
    if (a.target !== target || !a.ok) continue;
    const b = cell.samples.find((s) => s.target === other && s.round === a.round && s.ok);
    if (b === undefined) continue;
    const v = f(a, b);
    if (v !== null && Number.isFinite(v)) values.push(v);
  }
  return median(values);
}

function nonNull(values: ReadonlyArray<number | null>): number[] {
  return values.filter((v): v is number => v !== null);
}

export function summarize(cell: CellResult): TargetSummary[] {
  const targets = TARGETS.filter((t) => cell.samples.some((s) => s.target === t));
  return targets.map((target) => {
    const all = cell.samples.filter((s) => s.target === target);
    const ok = all.filter((s) => s.ok);
    const ratio = (other: TargetName): number | null => (target === other ? null : pairedMedian(cell, target, other, (a, b) => (b.tps > 0 ? a.tps / b.tps : null)));
    const added = (pick: (s: Sample) => number | null): number | null =>
      cell.kind !== 'rate' || target === 'direct'
        ? null
        : pairedMedian(cell, target, 'direct', (a, b) => {
            const x = pick(a);
            const y = pick(b);
            return x === null || y === null ? null : x - y;
          });
    const rss = median(nonNull(all.map((s) => s.rssBytes)));
    return {
      target,
      runs: all.length,
      okRuns: ok.length,
      failedTx: all.reduce((n, s) => n + s.failed, 0),
      tps: median(ok.map((s) => s.tps)) ?? 0,
      vsDirect: ratio('direct'),
      vsPgbouncer: ratio('pgbouncer'),
      p50Ms: median(nonNull(ok.map((s) => s.p50Ms))),
      p99Ms: median(nonNull(ok.map((s) => s.p99Ms))),
      addedP50Ms: added((s) => s.p50Ms),
      addedP99Ms: added((s) => s.p99Ms),
      serviceP50Ms: median(nonNull(ok.map((s) => s.serviceP50Ms))),
      serviceP99Ms: median(nonNull(ok.map((s) => s.serviceP99Ms))),
      cpuUsPerTx: median(nonNull(ok.map((s) => s.cpuUsPerTx))),
      rssMiB: rss === null ? null : rss / 1048576,
    };
  });
}

function fmt(v: number | null, digits: number): string {
  return v === null || !Number.isFinite(v) ? '–' : v.toFixed(digits);
}

function signed(v: number | null, digits: number): string {
  return v === null || !Number.isFinite(v) ? '–' : `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`;
}

function mdTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i <= 1 ? `-${'-'.repeat(w)}-` : `-${'-'.repeat(w)}:`)).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}

/** The runs column: the count when every run completed without a failed transaction, else what went wrong. */
function runsCell(s: TargetSummary): string {
  return s.okRuns === s.runs && s.failedTx === 0 ? `${s.runs}` : `${s.okRuns}/${s.runs} ok, ${s.failedTx} failed tx`;
}

export function loadTable(cells: CellResult[]): string {
  const rows: string[][] = [];
  for (const cell of cells.filter((c) => c.kind !== 'rate')) {
    for (const s of summarize(cell)) {
      rows.push([
        cell.id,
        s.target,
        fmt(s.tps, 0),
        fmt(s.vsDirect, 2),
        fmt(s.vsPgbouncer, 2),
        fmt(s.p50Ms, 3),
        fmt(s.p99Ms, 3),
        fmt(s.cpuUsPerTx, 1),
        fmt(s.rssMiB, 1),
        runsCell(s),
      ]);
    }
  }
  if (rows.length === 0) return '';
  return mdTable(['cell', 'target', 'TPS', '×direct', '×pgbouncer', 'p50 ms', 'p99 ms', 'proxy CPU µs/tx', 'proxy RSS MiB', 'runs'], rows);
}

export function rateTable(cells: CellResult[]): string {
  const rows: string[][] = [];
  for (const cell of cells.filter((c) => c.kind === 'rate')) {
    for (const s of summarize(cell)) {
      rows.push([
        cell.id,
        s.target,
        fmt(s.tps, 0),
        fmt(s.p50Ms, 3),
        fmt(s.p99Ms, 3),
        signed(s.addedP50Ms, 3),
        signed(s.addedP99Ms, 3),
        fmt(s.serviceP50Ms, 3),
        fmt(s.serviceP99Ms, 3),
        fmt(s.cpuUsPerTx, 1),
        runsCell(s),
      ]);
    }
  }
  if (rows.length === 0) return '';
  return mdTable(['cell', 'target', 'TPS', 'p50 ms', 'p99 ms', 'added p50', 'added p99', 'service p50', 'service p99', 'proxy CPU µs/tx', 'runs'], rows);
}

export function idleTable(idle: IdleSummary[]): string {
  if (idle.length === 0) return '';
  return mdTable(
    ['proxy', 'mode', 'clients', 'held', 'answered after idle', 'RSS cold MiB', 'RSS warm MiB', 'RSS idle MiB', 'MiB per 1000', 'PG backends idle', 'open s'],
    idle.map((r) => [
      r.proxy,
      r.mode,
      String(r.requested),
      String(r.held),
      String(r.answeredAfterIdle),
      fmt(r.rssColdMiB, 1),
      fmt(r.rssBeforeMiB, 1),
      fmt(r.rssIdleMiB, 1),
      fmt(r.mibPer1000, 2),
      String(r.backendsWhileIdle),
      fmt(r.openSeconds, 1),
    ]),
  );
}

// ---- SVG ---------------------------------------------------------------------------------------

const COLORS: Record<TargetName, string> = { direct: '#7f8c8d', pgbouncer: '#2e86de', rolegate: '#e67e22', relay: '#27ae60' };

interface Panel {
  title: string;
  groups: string[];
  series: TargetName[];
  /** values[group][series]; null = no bar. */
  values: Array<Array<number | null>>;
  digits: number;
  referenceLine?: number;
}

function escapeXml(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function panelSvg(panel: Panel, y0: number, width: number): { svg: string; height: number } {
  const left = 60;
  const top = y0 + 30;
  const plotH = 190;
  const labelH = 70;
  const plotW = width - left - 20;
  const max = niceMax(Math.max(...panel.values.flat().filter((v): v is number => v !== null && Number.isFinite(v)), panel.referenceLine ?? 0));
  const groupW = plotW / Math.max(1, panel.groups.length);
  const barW = Math.max(3, (groupW * 0.8) / Math.max(1, panel.series.length));
  const y = (v: number): number => top + plotH - (v / max) * plotH;
  const parts: string[] = [`<text x="${left}" y="${y0 + 18}" font-size="14" font-weight="bold">${escapeXml(panel.title)}</text>`];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" font-size="10" text-anchor="end">${Number(v.toPrecision(3))}</text>`);
  }
  panel.groups.forEach((group, g) => {
    const gx = left + g * groupW + groupW * 0.1;
    panel.series.forEach((target, s) => {
      const v = panel.values[g]?.[s] ?? null;
      if (v === null || !Number.isFinite(v)) return;
      const x = gx + s * barW;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${(top + plotH - y(v)).toFixed(1)}" fill="${COLORS[target]}"><title>${escapeXml(`${group} ${target}: ${v.toFixed(panel.digits)}`)}</title></rect>`,
      );
      // Values on the bars when there is room for them (the <title> tooltips carry them anyway).
      if (barW >= 16) {
        const label = v >= 100 ? v.toFixed(0) : v.toPrecision(2);
        parts.push(`<text x="${(x + (barW - 1) / 2).toFixed(1)}" y="${(y(v) - 3).toFixed(1)}" font-size="${barW >= 28 ? 10 : 8}" text-anchor="middle">${label}</text>`);
      }
    });
    const cx = left + g * groupW + groupW / 2;
    parts.push(`<text x="${cx.toFixed(1)}" y="${top + plotH + 12}" font-size="10" text-anchor="end" transform="rotate(-35 ${cx.toFixed(1)} ${top + plotH + 12})">${escapeXml(group)}</text>`);
  });
  if (panel.referenceLine !== undefined) {
    const ry = y(panel.referenceLine).toFixed(1);
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${ry}" y2="${ry}" stroke="#c0392b" stroke-dasharray="4 3"/>`);
  }
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  return { svg: parts.join('\n'), height: 30 + plotH + labelH };
}

export function chartSvg(cells: CellResult[], idle: IdleSummary[], title: string): string {
  const width = 1100;
  const throughput = cells.filter((c) => c.kind !== 'rate');
  const rated = cells.filter((c) => c.kind === 'rate');
  const summaries = new Map(cells.map((c) => [c.id, summarize(c)]));
  const pick = (cell: CellResult, target: TargetName, f: (s: TargetSummary) => number | null): number | null => {
    const s = summaries.get(cell.id)?.find((x) => x.target === target);
    return s === undefined ? null : f(s);
  };
  const panels: Panel[] = [
    {
      title: 'TPS relative to direct PostgreSQL (median of per-round ratios; dashed: 1.0)',
      groups: throughput.map((c) => c.id),
      series: [...TARGETS],
      values: throughput.map((c) => TARGETS.map((t) => (t === 'direct' ? (pick(c, t, (s) => (s.okRuns > 0 ? 1 : null)) ?? null) : pick(c, t, (s) => s.vsDirect)))),
      digits: 2,
      referenceLine: 1,
    },
    {
      title: 'Proxy CPU µs per transaction (utime+stime of the proxy process)',
      groups: throughput.map((c) => c.id),
      series: ['pgbouncer', 'rolegate', 'relay'],
      values: throughput.map((c) => (['pgbouncer', 'rolegate', 'relay'] as const).map((t) => pick(c, t, (s) => s.cpuUsPerTx))),
      digits: 1,
    },
  ];
  if (rated.length > 0) {
    panels.push({
      title: 'Fixed rate: p50 and p99 latency, ms',
      groups: rated.flatMap((c) => [`${c.id} p50`, `${c.id} p99`]),
      series: [...TARGETS],
      values: rated.flatMap((c) => [TARGETS.map((t) => pick(c, t, (s) => s.p50Ms)), TARGETS.map((t) => pick(c, t, (s) => s.p99Ms))]),
      digits: 3,
    });
  }
  if (idle.length > 0) {
    panels.push({
      title: 'Idle clients: proxy RSS MiB per 1000 clients',
      groups: [...new Set(idle.map((r) => `${r.requested} ${r.mode}`))],
      series: ['pgbouncer', 'rolegate'],
      values: [...new Set(idle.map((r) => `${r.requested} ${r.mode}`))].map((g) =>
        (['pgbouncer', 'rolegate'] as const).map((p) => idle.find((r) => `${r.requested} ${r.mode}` === g && r.proxy === p)?.mibPer1000 ?? null),
      ),
      digits: 2,
    });
  }
  const body: string[] = [];
  let y = 40;
  for (const panel of panels) {
    const { svg, height } = panelSvg(panel, y, width);
    body.push(svg);
    y += height;
  }
  const legend = TARGETS.map((t, i) => `<rect x="${60 + i * 120}" y="${y + 4}" width="12" height="12" fill="${COLORS[t]}"/><text x="${78 + i * 120}" y="${y + 14}" font-size="12">${t}</text>`).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 30}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>
${body.join('\n')}
${legend}
</svg>
`;
}
