/**
 * Exact-capacity ("balanced") assignment for balanced k-means: pure host code with no imports, so
 * the grouping worker threads (lte/grouping_worker.ts) can run it without the native library.
 *
 * @module
 */

/** Bad grouping input (expert size, shapes); the message names the key. */
export class GroupingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GroupingError";
  }
}

/** Result of {@linkcode balancedAssign}. */
export interface AssignResult {
  /** Cluster of each item, each cluster exactly `capacity` items. */
  labels: Int32Array;
  /** Σ score[i, labels[i]]. */
  total: number;
  /** Number of bids made (work measure). */
  bids: number;
  /** Bids that needed a scan of every cluster (the candidate list could not decide). */
  fullScans: number;
  /** Final slot prices (per cluster, heap order): a warm start for a similar problem. */
  prices: Float64Array;
}

/** Options of {@linkcode balancedAssign}. */
export interface AssignOptions {
  /** ε of the last phase, relative to the score range. @default {1e-4} */
  epsFinal?: number;
  /** Candidate clusters per item (its best raw scores). @default {16} */
  candidates?: number;
  /** Slot prices from an earlier, similar problem (k-means' previous round): start near ε_final. */
  prices?: Float64Array;
  /** With `prices`: the first ε as a multiple of ε_final. @default {64} */
  warmFactor?: number;
}

/**
 * Exact-capacity assignment maximising Σ score[i, label_i] (score: n x K row-major, n = K*capacity)
 * by the auction algorithm (Bertsekas) with ε-scaling. Each cluster has `capacity` slots with their
 * own prices, kept in a per-cluster min-heap; an unassigned item bids for the cheapest slot of its
 * best cluster, raising that slot's price by its margin over its second-best option (another
 * cluster, or the next-cheapest slot of the same one) plus ε, and evicts the slot's holder. Every
 * bid raises a price by at least ε, so it terminates, with every item assigned and every cluster
 * exactly full, within n·ε of the optimum for the final phase's ε.
 *
 * ε-scaling: from range/256 down to `epsFinal`·range, ÷4 per phase; with `prices` from a similar
 * earlier problem (the previous k-means round) it starts at 64·ε_final instead, which saves about a
 * quarter of the bids. Prices only rise within a call, so any start prices are valid.
 *
 * Speed: an item first looks only at its `candidates` best-scoring clusters; the bid is decided from
 * them when its second-best value already beats an upper bound on every other cluster (its next raw
 * score minus a lower bound of the lowest price), otherwise it scans all K clusters. The bids are
 * therefore exactly those of the full auction.
 */
export function balancedAssign(
  score: Float32Array,
  n: number,
  K: number,
  capacity: number,
  opts: AssignOptions = {},
): AssignResult {
  if (!(K >= 1 && capacity >= 1 && n === K * capacity)) {
    throw new GroupingError(`balancedAssign: n ${n} != K ${K} x capacity ${capacity}`);
  }
  if (score.length !== n * K) throw new GroupingError(`balancedAssign: score has ${score.length} values, need n*K`);
  const labels = new Int32Array(n);
  if (K === 1) {
    let total = 0;
    for (let i = 0; i < n; i++) total += score[i]!;
    return { labels, total, bids: 0, fullScans: 0, prices: new Float64Array(n) };
  }
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < score.length; i++) {
    const v = score[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new GroupingError("balancedAssign: scores are not finite");
  const range = hi - lo > 0 ? hi - lo : 1;
  const epsFinal = range * (opts.epsFinal ?? 1e-4);
  const warm = opts.prices !== undefined && opts.prices.length === n;
  let eps = warm ? epsFinal * (opts.warmFactor ?? 64) : Math.max(range / 256, epsFinal);

  // Candidate lists: the T best raw scores of each row, and the (T+1)-th score ("outside").
  const T = Math.min(K, Math.max(2, opts.candidates ?? 16));
  const cand = new Int32Array(n * T);
  // Their scores side by side (T = 16 floats: one cache line per bid instead of T scattered reads).
  const candS = new Float32Array(n * T);
  const outside = new Float64Array(n).fill(-Infinity);
  {
    const topV = new Float64Array(T + 1), topJ = new Int32Array(T + 1);
    for (let i = 0; i < n; i++) {
      const row = i * K;
      let m = 0; // entries held in topV (sorted descending), at most T + 1
      for (let j = 0; j < K; j++) {
        const v = score[row + j]!;
        if (m === T + 1 && v <= topV[T]!) continue;
        let p = m < T + 1 ? m++ : T;
        while (p > 0 && topV[p - 1]! < v) {
          topV[p] = topV[p - 1]!;
          topJ[p] = topJ[p - 1]!;
          p--;
        }
        topV[p] = v;
        topJ[p] = j;
      }
      for (let t = 0; t < T; t++) {
        cand[i * T + t] = topJ[t]!;
        candS[i * T + t] = topV[t]!;
      }
      if (T < K) outside[i] = topV[T]!;
    }
  }

  // Per cluster a binary min-heap of its slots: price and holder (slots are interchangeable).
  const heapP = warm ? Float64Array.from(opts.prices!) : new Float64Array(n);
  const heapO = new Int32Array(n);
  const stack = new Int32Array(n);
  const cap = capacity;
  let bids = 0, fullScans = 0;
  for (;;) {
    // One ε phase: every item unassigned, prices kept. Prices only rise, so a stale global
    // minimum price stays a valid lower bound within the phase.
    heapO.fill(-1);
    let gmin = Infinity;
    for (let j = 0; j < K; j++) if (heapP[j * cap]! < gmin) gmin = heapP[j * cap]!;
    let sinceMin = 0, top = 0;
    for (let i = n - 1; i >= 0; i--) stack[top++] = i;
    while (top > 0) {
      const i = stack[--top]!;
      const row = i * K, co = i * T;
      let b1 = -1, v1 = -Infinity, v2 = -Infinity, s1 = 0;
      for (let t = 0; t < T; t++) {
        const j = cand[co + t]!, sc = candS[co + t]!;
        const v = sc - heapP[j * cap]!;
        if (v > v1) {
          v2 = v1;
          v1 = v;
          b1 = j;
          s1 = sc;
        } else if (v > v2) v2 = v;
      }
      if (v2 < outside[i]! - gmin) {
        // A cluster outside the list might beat the second best: decide over all clusters.
        fullScans++;
        b1 = -1, v1 = -Infinity, v2 = -Infinity;
        for (let j = 0; j < K; j++) {
          const v = score[row + j]! - heapP[j * cap]!;
          if (v > v1) {
            v2 = v1;
            v1 = v;
            b1 = j;
          } else if (v > v2) v2 = v;
        }
        s1 = score[row + b1]!;
      }
      const o = b1 * cap;
      if (cap > 1) {
        // The next-cheapest slot of the same cluster (a child of the heap root).
        const p2 = cap > 2 ? Math.min(heapP[o + 1]!, heapP[o + 2]!) : heapP[o + 1]!;
        const alt = s1 - p2;
        if (alt > v2) v2 = alt;
      }
      const newPrice = heapP[o]! + (v1 - v2) + eps;
      const prev = heapO[o]!;
      labels[i] = b1;
      if (prev >= 0) stack[top++] = prev;
      // Replace the root with (newPrice, i) and sift down.
      let p = 0;
      for (;;) {
        const l = 2 * p + 1;
        if (l >= cap) break;
        let c = l;
        if (l + 1 < cap && heapP[o + l + 1]! < heapP[o + l]!) c = l + 1;
        if (heapP[o + c]! >= newPrice) break;
        heapP[o + p] = heapP[o + c]!;
        heapO[o + p] = heapO[o + c]!;
        p = c;
      }
      heapP[o + p] = newPrice;
      heapO[o + p] = i;
      bids++;
      if (++sinceMin >= 512) {
        gmin = Infinity;
        for (let j = 0; j < K; j++) if (heapP[j * cap]! < gmin) gmin = heapP[j * cap]!;
        sinceMin = 0;
      }
    }
    if (eps <= epsFinal) break;
    eps = Math.max(eps / 4, epsFinal);
  }
  let total = 0;
  for (let i = 0; i < n; i++) total += score[i * K + labels[i]!]!;
  return { labels, total, bids, fullScans, prices: heapP };
}

/**
 * k-means assignment scores from dot products: score[i, c] = 2·x_i·c_c − |c_c|² (in place), so
 * maximising the score minimises |x_i − c_c|². `dots` is n x K, `centreSq` holds |c_c|².
 */
export function kmeansScores(dots: Float32Array, n: number, K: number, centreSq: Float64Array): Float32Array {
  for (let i = 0; i < n; i++) {
    const o = i * K;
    for (let c = 0; c < K; c++) dots[o + c] = 2 * dots[o + c]! - centreSq[c]!;
  }
  return dots;
}
