// Timing for the micro benchmarks: every case is warmed up, given a batch size
// that takes about 5 ms, then timed run by run with all cases interleaved (so
// drift and GC spread over every figure alike); a figure is the median µs per
// call over the runs.

let sink = 0; // keeps results observable so nothing is optimised away

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Calls per timed batch so that one batch takes ~5 ms. */
export function calibrate(fn: () => unknown): number {
  for (let batch = 1; ; batch *= 2) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) fn();
    if (Number(process.hrtime.bigint() - t0) >= 5_000_000 || batch >= 1 << 20) return batch;
  }
}

/** Median µs per call of each case over `runs` interleaved runs. */
export function measureCases(cases: ReadonlyMap<string, () => unknown>, runs: number, warmup = 300): Map<string, number> {
  for (let i = 0; i < warmup; i++) for (const fn of cases.values()) fn();
  const batches = new Map([...cases].map(([k, fn]) => [k, calibrate(fn)]));
  const samples = new Map([...cases.keys()].map((k) => [k, [] as number[]]));
  for (let r = 0; r < runs; r++) {
    for (const [k, fn] of cases) {
      const batch = batches.get(k) as number;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < batch; i++) if (fn() !== undefined) sink++;
      samples.get(k)?.push(Number(process.hrtime.bigint() - t0) / batch / 1000);
    }
  }
  if (sink < 0) console.log(sink);
  return new Map([...samples].map(([k, v]) => [k, median(v)]));
}

export function fmtUs(us: number): string {
  return us < 10 ? us.toFixed(2) : us.toFixed(1);
}

/** Print rows as an aligned table (first column left-aligned). */
export function printTable(rows: readonly string[][]): void {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  for (const r of rows) console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  '));
}
