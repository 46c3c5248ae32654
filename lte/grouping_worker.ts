/**
 * Worker thread of the grouping: runs the host-side balanced assignment (k-means scores from the
 * dot products, then the auction) for {@linkcode WorkerAssigner} in lte/grouping.ts, so several
 * layers' assignments run on separate cores while the GEMMs run on the device.
 *
 * Message in: `{ id, dots, n, K, capacity, centreSq, opts }`; out: `{ id, result }` or `{ id, error }`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { type AssignOptions, balancedAssign, kmeansScores } from "./balanced_assign.ts";

interface Job {
  id: number;
  dots: Float32Array;
  n: number;
  K: number;
  capacity: number;
  centreSq: Float64Array;
  opts: AssignOptions;
}

self.onmessage = (e: MessageEvent<Job>) => {
  const { id, dots, n, K, capacity, centreSq, opts } = e.data;
  try {
    const result = balancedAssign(kmeansScores(dots, n, K, centreSq), n, K, capacity, opts);
    self.postMessage({ id, result }, [result.labels.buffer as ArrayBuffer, result.prices.buffer as ArrayBuffer]);
  } catch (err) {
    self.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
