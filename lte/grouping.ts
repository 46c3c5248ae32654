/**
 * Expert grouping (LTE spec §2): split each FFN layer's d_ff neurons into experts of exactly
 * `expertSize` neurons, then permute the FFN weights once so each expert is a contiguous block.
 *
 * - `kmeans` (default): balanced k-means on the L2-normalised neuron input vectors (LLaMA
 *   `gate_proj` rows, GPT-2 `c_fc` columns): k-means++ initialisation with a fixed seed, then
 *   "exact-capacity assignment <-> centroid update" iterations; the lowest-inertia labelling wins.
 *   The assignment step is an auction algorithm (Bertsekas; the transportation form with
 *   `expertSize` slots per cluster, ε-scaling, prices carried over between iterations), the same
 *   family as MoEfication's faster GPU variant: every expert exactly full, every neuron once,
 *   ε-optimal (within n·ε of the best exact-capacity assignment for the given centroids).
 * - `random`: a seeded random balanced split (the reference the report compares against).
 * - `coactivation`: MoEfication's co-activation split without METIS: each neuron is described by
 *   its activation magnitudes |h| over calibration tokens, L2-normalised, and the same balanced
 *   k-means groups neurons whose activation profiles align (the cosine of two profiles is their
 *   normalised co-activation). See docs/lte.md.
 *
 * The GEMMs (distances to centroids, k-means++ distances, centroid sums) run through the tensor
 * library on the chosen device (cuBLAS on CUDA); the assignment runs on the host.
 *
 * @module
 */
import type { ModelConfig } from "../models/config.ts";
import type { GroupingMethod } from "../models/lte_artifacts.ts";
import { embedding, matmul, Rng, scope, Tensor } from "../tensor/mod.ts";
import type { Device } from "../tensor/mod.ts";
import {
  type AssignOptions,
  type AssignResult,
  balancedAssign,
  GroupingError,
  kmeansScores,
} from "./balanced_assign.ts";

export { type AssignOptions, type AssignResult, balancedAssign, GroupingError, kmeansScores };
export type { GroupingMethod };

/** Number of experts per layer; throws naming `expert_size` unless it divides d_ff. */
export function expertsPerLayer(dFf: number, expertSize: number, key = "expert_size"): number {
  if (!Number.isSafeInteger(expertSize) || expertSize <= 0) {
    throw new GroupingError(`${key} must be a positive integer, got ${expertSize}`);
  }
  if (dFf % expertSize !== 0) {
    const divisors: number[] = [];
    for (let s = 1; s <= Math.min(dFf, 256); s++) if (dFf % s === 0) divisors.push(s);
    throw new GroupingError(
      `${key} ${expertSize} does not divide the model's d_ff ${dFf} (sizes that do, up to 256: ${divisors.join(", ")})`,
    );
  }
  return dFf / expertSize;
}

// ------------------------------------------------------------------------------ features

/** Scales each row of `x` (n x d, row-major) to unit L2 norm in place; zero rows stay zero. */
export function normalizeRows(x: Float32Array, n: number, d: number): Float32Array {
  for (let i = 0; i < n; i++) {
    let s = 0;
    const o = i * d;
    for (let k = 0; k < d; k++) s += x[o + k]! * x[o + k]!;
    if (s > 0) {
      const inv = 1 / Math.sqrt(s);
      for (let k = 0; k < d; k++) x[o + k]! *= inv;
    }
  }
  return x;
}

/** HF tensor names of layer `l`'s FFN. */
export function ffnNames(config: ModelConfig, l: number): { in: string[]; out: string; bias: string | null } {
  if (config.family === "gpt2") {
    const h = `transformer.h.${l}.mlp`;
    return { in: [`${h}.c_fc.weight`], out: `${h}.c_proj.weight`, bias: `${h}.c_fc.bias` };
  }
  const m = `model.layers.${l}.mlp`;
  return { in: [`${m}.gate_proj.weight`, `${m}.up_proj.weight`], out: `${m}.down_proj.weight`, bias: null };
}

/**
 * The neuron feature vectors of one layer, (d_ff x d_model) row-major, NOT normalised: LLaMA
 * `gate_proj` rows (stored [d_ff, d]), GPT-2 `c_fc` columns (Conv1D, stored [d, d_ff]).
 */
export function neuronFeatures(config: ModelConfig, l: number, get: (name: string) => Float32Array): Float32Array {
  const f = config.d_ff, d = config.d_model;
  const w = get(ffnNames(config, l).in[0]!);
  if (w.length !== f * d) throw new GroupingError(`${ffnNames(config, l).in[0]}: expected ${f * d} values`);
  if (config.family === "llama") return Float32Array.from(w);
  const out = new Float32Array(f * d);
  for (let r = 0; r < d; r++) {
    const o = r * f;
    for (let i = 0; i < f; i++) out[i * d + r] = w[o + i]!;
  }
  return out;
}

// ------------------------------------------------------------------------------ permutation

/**
 * Permutation from labels: expert e's neurons (ascending original index) land at new positions
 * [e*size, (e+1)*size). Returns `perm` with new neuron i = old neuron perm[i]. Throws unless every
 * label in [0, K) occurs exactly `size` times.
 */
export function permutationFromLabels(labels: Int32Array, experts: number, size: number): Int32Array {
  const fill = new Int32Array(experts);
  const perm = new Int32Array(labels.length);
  if (labels.length !== experts * size) {
    throw new GroupingError(`${labels.length} labels for ${experts} experts of ${size}`);
  }
  for (let i = 0; i < labels.length; i++) {
    const e = labels[i]!;
    if (!(e >= 0 && e < experts) || fill[e]! >= size) {
      throw new GroupingError(`labels are not balanced: neuron ${i} -> expert ${e}`);
    }
    perm[e * size + fill[e]!] = i;
    fill[e]!++;
  }
  return perm;
}

/** An element array of a permutable tensor: f32 values or raw 16-bit words (F16/BF16). */
export type ElemArray = Float32Array | Uint16Array;

function permuteRows<T extends ElemArray>(w: T, rows: number, cols: number, perm: Int32Array): T {
  const out = new (w.constructor as { new (n: number): T })(w.length);
  for (let i = 0; i < rows; i++) out.set(w.subarray(perm[i]! * cols, (perm[i]! + 1) * cols), i * cols);
  return out;
}

function permuteCols<T extends ElemArray>(w: T, rows: number, cols: number, perm: Int32Array): T {
  const out = new (w.constructor as { new (n: number): T })(w.length);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let i = 0; i < cols; i++) out[o + i] = w[o + perm[i]!]!;
  }
  return out;
}

/** How each FFN tensor of a layer is permuted: along its rows ([d_ff, x]) or columns ([x, d_ff]). */
export function ffnLayout(
  config: ModelConfig,
  l: number,
): Map<string, { axis: "rows" | "cols"; rows: number; cols: number }> {
  const f = config.d_ff, d = config.d_model;
  const names = ffnNames(config, l);
  const out = new Map<string, { axis: "rows" | "cols"; rows: number; cols: number }>();
  if (config.family === "llama") {
    for (const n of names.in) out.set(n, { axis: "rows", rows: f, cols: d }); // gate/up [d_ff, d]
    out.set(names.out, { axis: "cols", rows: d, cols: f }); // down_proj [d, d_ff]
  } else {
    out.set(names.in[0]!, { axis: "cols", rows: d, cols: f }); // c_fc [d, d_ff]
    out.set(names.bias!, { axis: "rows", rows: f, cols: 1 }); // c_fc.bias [d_ff]
    out.set(names.out, { axis: "rows", rows: f, cols: d }); // c_proj [d_ff, d]
  }
  return out;
}

/** One FFN tensor of layer `l` (HF name without aliases) permuted by `perm` (new i = old perm[i]). */
export function permuteFfnTensor<T extends ElemArray>(
  config: ModelConfig,
  l: number,
  name: string,
  perm: Int32Array,
  data: T,
): T {
  const how = ffnLayout(config, l).get(name);
  if (!how) throw new GroupingError(`${name} is not an FFN tensor of layer ${l}`);
  if (perm.length !== config.d_ff) {
    throw new GroupingError(`permutation of layer ${l} has ${perm.length} entries, d_ff is ${config.d_ff}`);
  }
  if (data.length !== how.rows * how.cols) {
    throw new GroupingError(`${name}: ${data.length} values, expected ${how.rows} x ${how.cols}`);
  }
  return how.axis === "rows"
    ? permuteRows(data, how.rows, how.cols, perm)
    : permuteCols(data, how.rows, how.cols, perm);
}

/**
 * Permutes layer `l`'s FFN neurons (function-preserving): LLaMA gate/up rows and down_proj
 * columns; GPT-2 c_fc columns, c_fc.bias and c_proj rows. `get` returns a tensor's elements
 * (any element type of matching count); the result maps each changed tensor name to its new array.
 */
export function permuteFfn<T extends ElemArray>(
  config: ModelConfig,
  l: number,
  perm: Int32Array,
  get: (name: string) => T,
): Map<string, T> {
  const out = new Map<string, T>();
  for (const name of ffnLayout(config, l).keys()) out.set(name, permuteFfnTensor(config, l, name, perm, get(name)));
  return out;
}

// ------------------------------------------------------------------------------ assigners

/** Runs the host-side assignment step: inline, or on a pool of worker threads. */
export interface Assigner {
  /** Scores from `dots` (n x K, consumed) and |c|², then the balanced auction. */
  assign(
    dots: Float32Array,
    n: number,
    K: number,
    capacity: number,
    centreSq: Float64Array,
    opts?: AssignOptions,
  ): Promise<AssignResult>;
  /** Threads working in parallel (1 inline). */
  readonly threads: number;
  close(): void;
}

/** The assignment on the calling thread. */
export function inlineAssigner(): Assigner {
  return {
    threads: 1,
    assign: (dots, n, K, capacity, centreSq, opts) =>
      Promise.resolve(balancedAssign(kmeansScores(dots, n, K, centreSq), n, K, capacity, opts)),
    close() {},
  };
}

interface PendingJob {
  msg: Record<string, unknown>;
  transfer: Transferable[];
  resolve: (r: AssignResult) => void;
  reject: (e: Error) => void;
}

/** The assignment on `threads` worker threads (lte/grouping_worker.ts), jobs queued FIFO. */
export class WorkerAssigner implements Assigner {
  readonly threads: number;
  #idle: Worker[] = [];
  #all: Worker[] = [];
  #queue: PendingJob[] = [];
  #running = new Map<Worker, PendingJob>();
  #nextId = 0;
  constructor(threads: number) {
    this.threads = Math.max(1, Math.floor(threads));
    for (let t = 0; t < this.threads; t++) {
      const w = new Worker(new URL("./grouping_worker.ts", import.meta.url), { type: "module" });
      w.onmessage = (e: MessageEvent<{ result?: AssignResult; error?: string }>) => {
        const job = this.#running.get(w)!;
        this.#running.delete(w);
        this.#idle.push(w);
        if (e.data.error !== undefined) job.reject(new GroupingError(e.data.error));
        else job.resolve(e.data.result!);
        this.#pump();
      };
      w.onerror = (e) => {
        e.preventDefault();
        const job = this.#running.get(w);
        this.#running.delete(w);
        job?.reject(new GroupingError(`grouping worker failed: ${e.message}`));
      };
      this.#idle.push(w);
      this.#all.push(w);
    }
  }
  assign(
    dots: Float32Array,
    n: number,
    K: number,
    capacity: number,
    centreSq: Float64Array,
    opts: AssignOptions = {},
  ): Promise<AssignResult> {
    return new Promise((resolve, reject) => {
      const msg = { id: this.#nextId++, dots, n, K, capacity, centreSq, opts };
      this.#queue.push({ msg, transfer: [dots.buffer as ArrayBuffer], resolve, reject });
      this.#pump();
    });
  }
  #pump(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const w = this.#idle.pop()!, job = this.#queue.shift()!;
      this.#running.set(w, job);
      w.postMessage(job.msg, job.transfer);
    }
  }
  close(): void {
    for (const w of this.#all) w.terminate();
    for (const job of [...this.#queue, ...this.#running.values()]) job.reject(new GroupingError("assigner closed"));
    this.#all = [];
    this.#idle = [];
    this.#queue = [];
    this.#running.clear();
  }
}

// ------------------------------------------------------------------------------ k-means

/** Options of {@linkcode balancedKmeans}. */
export interface BalancedKmeansOptions {
  /** Items per cluster; must divide n. */
  size: number;
  seed: number;
  /** Maximum assignment <-> update iterations. */
  iterations: number;
  device: Device;
  /** Where the assignment runs (default: inline). */
  assigner?: Assigner;
  /** Stop when at most this fraction of the items changed cluster in an iteration. @default {1e-3} */
  tol?: number;
  /** Auction options. */
  assign?: AssignOptions;
  /** A device copy of `x` to use (not disposed here); made and disposed here when absent. */
  features?: DeviceFeatures;
  /** Start each round's auction from the previous round's prices. @default {true} */
  warmStart?: boolean;
  /** Squared row norms of `x`, if the caller has them. */
  rowSquares?: Float64Array;
}

/** Result of {@linkcode balancedKmeans}. */
export interface BalancedKmeansResult {
  labels: Int32Array;
  /** Σ ||x_i - mean(cluster of i)||² of the kept labelling. */
  inertia: number;
  /** Iterations run. */
  iterations: number;
  /** Inertia after each iteration. */
  history: number[];
  /** Auction bids over all iterations. */
  bids: number;
  /** Milliseconds in the assignment step (host), in k-means++ and in total. */
  assignMs: number;
  initMs: number;
  totalMs: number;
}

/** A device copy of a feature matrix (n x d) plus the GEMMs k-means needs. Dispose it. */
export class DeviceFeatures {
  readonly x: Tensor;
  readonly n: number;
  readonly d: number;
  constructor(x: Float32Array, n: number, d: number, device: Device) {
    this.n = n;
    this.d = d;
    this.x = Tensor.fromArray(x, [n, d], { device }).keep();
  }
  /** X · Cᵀ for centres C (k x d host rows): (n x k) on the host. */
  dots(c: Float32Array, k: number): Float32Array {
    return scope(() => {
      const ct = Tensor.fromArray(c, [k, this.d], { device: this.x.device });
      return matmul(this.x, ct, { transB: true }).toArray() as Float32Array;
    });
  }
  /** Per-cluster sums of member rows (K x d, host) for balanced labels (cluster size `size`). */
  clusterSums(labels: Int32Array, K: number, size: number): Float32Array {
    const perm = permutationFromLabels(labels, K, size);
    return scope(() => {
      const ids = Tensor.fromArray(perm, [K, size], { device: this.x.device });
      const rows = embedding(ids, this.x); // (K, size, d)
      const ones = Tensor.full([K, 1, size], 1, { device: this.x.device });
      return matmul(ones, rows).toArray() as Float32Array; // (K, 1, d)
    });
  }
  dispose(): void {
    this.x.dispose();
  }
}

function rowSquares(x: Float32Array, n: number, d: number): Float64Array {
  const sq = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = i * d; k < (i + 1) * d; k++) s += x[k]! * x[k]!;
    sq[i] = s;
  }
  return sq;
}

/** k-means++ centres (rows of x): D² sampling with a seeded RNG; distances by device GEMV. */
function kmeansPlusPlus(df: DeviceFeatures, host: Float32Array, sq: Float64Array, K: number, rng: Rng): Float32Array {
  const { n, d } = df;
  const centres = new Float32Array(K * d);
  const minD = new Float64Array(n).fill(Infinity);
  const chosen = new Uint8Array(n);
  let pick = rng.int(n);
  for (let c = 0; c < K; c++) {
    chosen[pick] = 1;
    centres.set(host.subarray(pick * d, (pick + 1) * d), c * d);
    if (c === K - 1) break;
    const dots = df.dots(host.subarray(pick * d, (pick + 1) * d), 1);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const dist = Math.max(0, sq[i]! - 2 * dots[i]! + sq[pick]!);
      if (dist < minD[i]!) minD[i] = dist;
      if (!chosen[i]) total += minD[i]!;
    }
    // D² sampling among the points not chosen yet (if all remaining duplicate a centre: uniform).
    let r = total > 0 ? rng.uniform() * total : rng.int(n - c - 1);
    pick = -1;
    for (let i = 0; i < n; i++) {
      if (chosen[i]) continue;
      pick = i;
      if (total > 0 ? (r -= minD[i]!) <= 0 : r-- === 0) break;
    }
  }
  return centres;
}

/**
 * Balanced k-means of the rows of `x` (n x d; pass them L2-normalised for the spec's cosine
 * clustering) into n/size clusters of exactly `size`: k-means++ init (fixed seed), then iterate
 * exact-capacity auction assignment <-> centroid update; returns the lowest-inertia labelling.
 */
export async function balancedKmeans(
  x: Float32Array,
  n: number,
  d: number,
  opts: BalancedKmeansOptions,
): Promise<BalancedKmeansResult> {
  const t0 = performance.now();
  const size = opts.size;
  const K = expertsPerLayer(n, size);
  if (x.length !== n * d) throw new GroupingError(`balancedKmeans: ${x.length} values for ${n} x ${d}`);
  const assigner = opts.assigner ?? inlineAssigner();
  const tol = opts.tol ?? 1e-3;
  const df = opts.features ?? new DeviceFeatures(x, n, d, opts.device);
  try {
    const sq = opts.rowSquares ?? rowSquares(x, n, d);
    let rowSq = 0;
    for (let i = 0; i < n; i++) rowSq += sq[i]!;
    let centres = kmeansPlusPlus(df, x, sq, K, new Rng(opts.seed));
    const initMs = performance.now() - t0;
    let best: Int32Array | null = null, bestInertia = Infinity, bids = 0, assignMs = 0, it = 0;
    let prev: Int32Array | null = null, prices: Float64Array | undefined;
    const history: number[] = [];
    let sinceBest = 0;
    for (; it < Math.max(1, opts.iterations); it++) {
      const dots = df.dots(centres, K);
      const cn = new Float64Array(K);
      for (let c = 0; c < K; c++) {
        let s = 0;
        for (let k = c * d; k < (c + 1) * d; k++) s += centres[k]! * centres[k]!;
        cn[c] = s;
      }
      const ta = performance.now();
      const r = await assigner.assign(dots, n, K, size, cn, {
        ...opts.assign,
        ...(prices && (opts.warmStart ?? true) ? { prices } : {}),
      });
      prices = r.prices;
      assignMs += performance.now() - ta;
      bids += r.bids;
      const labels = r.labels;
      let moved = n;
      if (prev) {
        moved = 0;
        for (let i = 0; i < n; i++) if (labels[i] !== prev[i]) moved++;
      }
      if (moved === 0) {
        it++;
        break;
      }
      prev = labels;
      // Centroid update; the inertia of these labels follows from the means:
      // Σ|x - m_e|² = Σ|x|² - size·Σ_e |m_e|².
      const sums = df.clusterSums(labels, K, size);
      let meanSq = 0;
      for (let i = 0; i < sums.length; i++) {
        sums[i]! /= size;
        meanSq += sums[i]! * sums[i]!;
      }
      const inertia = rowSq - size * meanSq;
      history.push(inertia);
      if (inertia < bestInertia) {
        bestInertia = inertia;
        best = labels;
      }
      if (inertia <= bestInertia) sinceBest = 0;
      else sinceBest++;
      centres = sums;
      // Converged: few neurons still move, or no better labelling for 3 iterations (oscillation).
      if (moved <= tol * n || sinceBest >= 3) {
        it++;
        break;
      }
    }
    return {
      labels: best!,
      inertia: bestInertia,
      iterations: it,
      history,
      bids,
      assignMs,
      initMs,
      totalMs: performance.now() - t0,
    };
  } finally {
    if (!opts.features) df.dispose();
    if (!opts.assigner) assigner.close();
  }
}

/** A seeded random balanced labelling of n items into clusters of `size`. */
export function randomLabels(n: number, size: number, seed: number): Int32Array {
  expertsPerLayer(n, size);
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  const labels = new Int32Array(n);
  for (let p = 0; p < n; p++) labels[order[p]!] = Math.floor(p / size);
  return labels;
}

/**
 * Mean intra-expert cosine: per expert, the mean cosine similarity over pairs of distinct members
 * (rows of the L2-normalised features, held by `df`), averaged over experts. Zero rows count as
 * cosine 0. Uses the device cluster sums: Σ_{i≠j} x_i·x_j = |Σ x_i|² − Σ |x_i|².
 */
export function meanIntraCosine(df: DeviceFeatures, sq: Float64Array, labels: Int32Array, size: number): number {
  const K = expertsPerLayer(df.n, size);
  if (size < 2) return 1;
  const sums = df.clusterSums(labels, K, size);
  const self = new Float64Array(K);
  for (let i = 0; i < df.n; i++) self[labels[i]!]! += sq[i]!;
  let total = 0;
  for (let e = 0; e < K; e++) {
    let s = 0;
    for (let k = e * df.d; k < (e + 1) * df.d; k++) s += sums[k]! * sums[k]!;
    total += (s - self[e]!) / (size * (size - 1));
  }
  return total / K;
}

// ------------------------------------------------------------------------------ layers

/** Grouping of one layer. */
export interface LayerGrouping {
  layer: number;
  method: GroupingMethod;
  /** Expert of each original neuron. */
  labels: Int32Array;
  /** New neuron i = old neuron permutation[i]. */
  permutation: Int32Array;
  /**
   * Mean intra-expert cosine of the neuron input vectors (or of the grouping features when no
   * separate report features were given) for the chosen grouping and a random balanced grouping.
   */
  intraCosine: number;
  /** With report features: the same on the grouping's own features (coactivation: activation profiles). */
  groupingFeatureIntraCosine?: number;
  groupingFeatureRandomIntraCosine?: number;
  randomIntraCosine: number;
  /** k-means details (kmeans / coactivation). */
  inertia: number | null;
  iterations: number;
  bids: number;
  assignMs: number;
  ms: number;
}

/** Options of {@linkcode groupLayer} / {@linkcode groupLayers}. */
export interface GroupOptions {
  method: GroupingMethod;
  /** Neurons per expert. */
  expertSize: number;
  seed: number;
  iterations: number;
  device: Device;
  assigner?: Assigner;
  tol?: number;
  assign?: AssignOptions;
}

/** Seed of layer `l` (k-means++ and the random reference differ per layer). */
function layerSeed(seed: number, l: number, salt: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(l + 1, 0x85ebca6b) ^ salt) >>> 0;
}

/**
 * Groups one layer's neurons. `features` (n x d, raw; normalised here, in place) are the neuron
 * input vectors (kmeans, random) or activation profiles (coactivation).
 */
export async function groupLayer(
  layer: number,
  features: Float32Array,
  n: number,
  d: number,
  o: GroupOptions,
  report?: { data: Float32Array; d: number },
): Promise<LayerGrouping> {
  const t0 = performance.now();
  const K = expertsPerLayer(n, o.expertSize);
  const x = normalizeRows(features, n, d);
  const random = randomLabels(n, o.expertSize, layerSeed(o.seed, layer, 0x51ed));
  const df = new DeviceFeatures(x, n, d, o.device);
  const sq = rowSquares(x, n, d);
  let km: BalancedKmeansResult | null = null;
  let labels: Int32Array, intra: number, rnd: number;
  try {
    if (o.method !== "random") {
      km = await balancedKmeans(x, n, d, {
        size: o.expertSize,
        seed: layerSeed(o.seed, layer, 0),
        iterations: o.iterations,
        device: o.device,
        assigner: o.assigner,
        tol: o.tol,
        assign: o.assign,
        features: df,
        rowSquares: sq,
      });
    }
    labels = km ? km.labels : random;
    intra = meanIntraCosine(df, sq, labels, o.expertSize);
    rnd = o.method === "random" ? intra : meanIntraCosine(df, sq, random, o.expertSize);
  } finally {
    df.dispose();
  }
  let groupingIntra: [number, number] | undefined;
  if (report) {
    // Report the cosine on other features (the weights, for a grouping made from activations).
    groupingIntra = [intra, rnd];
    const xr = normalizeRows(report.data, n, report.d);
    const dr = new DeviceFeatures(xr, n, report.d, o.device);
    try {
      const sq = rowSquares(xr, n, report.d);
      intra = meanIntraCosine(dr, sq, labels, o.expertSize);
      rnd = meanIntraCosine(dr, sq, random, o.expertSize);
    } finally {
      dr.dispose();
    }
  }
  return {
    layer,
    ...(groupingIntra
      ? { groupingFeatureIntraCosine: groupingIntra[0], groupingFeatureRandomIntraCosine: groupingIntra[1] }
      : {}),
    method: o.method,
    labels,
    permutation: permutationFromLabels(labels, K, o.expertSize),
    intraCosine: intra,
    randomIntraCosine: rnd,
    inertia: km?.inertia ?? null,
    iterations: km?.iterations ?? 0,
    bids: km?.bids ?? 0,
    assignMs: km?.assignMs ?? 0,
    ms: performance.now() - t0,
  };
}

/** One layer's grouping features (n x d) and, optionally, other features to report the cosine on. */
export interface LayerFeatures {
  data: Float32Array;
  n: number;
  d: number;
  report?: { data: Float32Array; d: number };
}

/**
 * Groups `count` layers, up to `concurrency` at once (their GEMMs interleave on the device while
 * their assignments run on the assigner's threads). `features(l)` is called when layer l starts;
 * `onLayer` is called as each layer finishes (in completion order). Results are in layer order.
 */
export async function groupLayers(
  count: number,
  features: (l: number) => LayerFeatures | Promise<LayerFeatures>,
  o: GroupOptions & { concurrency?: number; onLayer?: (r: LayerGrouping) => void; signal?: AbortSignal },
): Promise<LayerGrouping[]> {
  const out: LayerGrouping[] = new Array(count);
  let next = 0;
  const conc = Math.max(1, Math.min(count, o.concurrency ?? o.assigner?.threads ?? 1));
  const run = async () => {
    while (next < count) {
      if (o.signal?.aborted) throw o.signal.reason ?? new Error("aborted");
      const l = next++;
      const f = await features(l);
      const r = await groupLayer(l, f.data, f.n, f.d, o, f.report);
      out[l] = r;
      o.onLayer?.(r);
    }
  };
  await Promise.all(Array.from({ length: conc }, run));
  return out;
}
