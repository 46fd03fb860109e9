// Gives the memory of large client messages back to the system once they are
// garbage. A message assembled from pieces lives in one buffer outside the
// JavaScript heap (protocol/framer.ts); when its session ends or the message
// has been handled, the buffer is unreferenced but stays mapped until V8's
// collector runs — and a worker with no traffic never collects. Measured: ten
// sessions each holding half of a 60 MiB message took the process from 220 to
// 395 MiB RSS, which stayed there; with a collection after the release it
// went back to 261 MiB within seconds.

import v8 from 'node:v8';
import vm from 'node:vm';
import type { BufferBudget } from '../protocol/buffer-budget.ts';

/** Collect when at least this much was released since the last check. */
export const RECLAIM_AFTER_BYTES = 32 * 1024 * 1024;
/** How often the worker checks (a collection of a worker's heap takes a few ms; this caps them at one per interval). */
export const RECLAIM_INTERVAL_MS = 1000;

/** V8's gc() for this isolate, or null where it cannot be had. */
function exposedGc(): (() => void) | null {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    return null;
  }
}

/** Start the periodic check for this worker; returns a stop function. */
export function startReclaiming(budget: BufferBudget, onCollect: (releasedBytes: number, ms: number) => void): () => void {
  const gc = exposedGc();
  if (gc === null) return () => {};
  const timer = setInterval(() => {
    const released = budget.takeReleased();
    if (released < RECLAIM_AFTER_BYTES) return;
    const t0 = performance.now();
    gc();
    onCollect(released, performance.now() - t0);
  }, RECLAIM_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
