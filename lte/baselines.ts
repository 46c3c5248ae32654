/**
 * Routing policies for evaluation: LTE's own hard routing and the baselines it is compared with at
 * matched sparsity (lte-spec §4 random-router ablation, §12 baseline one-liners). Every policy is
 * an `ffnRouting` hook on `DecoderLM`: it sees the FFN input x (R, C) and the dense intermediate
 * activations h (R, F), returns h with the unselected units zeroed, and reports the 0/1 mask it
 * used (and LTE's router scores) through `onMask` / `onScores`, so sparsity is measured from
 * what was actually applied.
 *
 * | policy      | unit      | selection per token                                                      |
 * | ----------- | --------- | ------------------------------------------------------------------------ |
 * | `lte`       | expert    | sigmoid(x W_gᵀ (+b)) > τ (routers from router-train)                     |
 * | `random`    | expert    | top-k of x Rᵀ with a random Gaussian router R (seeded)                    |
 * | `oracle`    | expert    | top-k by the true L2 norm of the expert's activations (MoEfication's GT) |
 * | `predictor` | expert    | top-k of a linear predictor of expert norms fit on the model's own       |
 * |             |           | activations (ridge least squares; Deja Vu's predictor is also linear)    |
 * | `magnitude` | neuron    | |act(gate)| > t_l, t_l calibrated per layer (TEAL / CATS)                  |
 *
 * Matched sparsity: a `Budget` gives, per layer, the mean number of active experts per token that
 * LTE used (or the neuron sparsity for `magnitude`). Top-k policies turn a fractional mean m into
 * per-token k = ⌊m⌋ or ⌈m⌉ with a fixed low-discrepancy pattern over rows, so the mean over tokens
 * is m (the expert budget, not just the overall fraction, is matched layer by layer).
 *
 * Baselines are training-free here: they run on the grouped dense model. The matched-training
 * control (a dense model fine-tuned for as many steps as LTE's two stages) is a plain fine-tune
 * stage evaluated dense.
 *
 * @module
 */
import type { DecoderLM, FfnRouting } from "../models/decoder.ts";
import {
  expertScale,
  linear,
  matmul,
  mul,
  noGrad,
  Rng,
  scope,
  sigmoid,
  silu,
  type Tensor,
  Tensor as T,
  threshold,
} from "../tensor/mod.ts";

/** Names of the policies. */
export type PolicyKind = "lte" | "random" | "oracle" | "predictor" | "magnitude";
/** The baselines (policies other than LTE). */
export const BASELINES: readonly Exclude<PolicyKind, "lte">[] = ["random", "oracle", "predictor", "magnitude"];

/** Error in a policy's inputs (router shapes, budgets). */
export class PolicyError extends Error {
  override name = "PolicyError";
}

/** A routing policy installed as `model.ffnRouting`. */
export interface RoutingPolicy {
  kind: PolicyKind;
  /** Neurons per selection unit (expert size, or 1 for neuron-level policies). */
  unitSize: number;
  /** Units per layer (d_ff / unitSize). */
  units: number;
  /** The hook. */
  hook: FfnRouting;
  /** Called with each layer's (R, units) 0/1 mask, row-major. */
  onMask: ((layer: number, mask: Float32Array) => void) | null;
  /** Called with each layer's (R, units) router scores (LTE only). */
  onScores: ((layer: number, scores: Float32Array) => void) | null;
  /** Frees device tensors the policy holds. */
  dispose(): void;
}

/** Per-layer mean active experts per token (expert policies) and neuron sparsity (magnitude). */
export interface Budget {
  expertSize: number;
  /** Mean active experts per token, per layer. */
  activeExperts: number[];
}

const PHI = 0.6180339887498949;

/** k for row r given a fractional mean m (mean over rows → m), clamped to [0, n]. */
export function ditheredK(r: number, m: number, n: number): number {
  const base = Math.floor(m), frac = m - base;
  const u = (r * PHI) % 1;
  return Math.max(0, Math.min(n, base + (u < frac ? 1 : 0)));
}

/** (R, n) 0/1 mask keeping the k(r) largest scores of each row. */
export function topKMask(scores: Float32Array, n: number, k: (row: number) => number): Float32Array {
  const rows = scores.length / n;
  const mask = new Float32Array(scores.length);
  const idx = new Int32Array(n);
  for (let r = 0; r < rows; r++) {
    const kk = k(r);
    if (kk <= 0) continue;
    const o = r * n;
    if (kk >= n) {
      mask.fill(1, o, o + n);
      continue;
    }
    for (let i = 0; i < n; i++) idx[i] = i;
    idx.sort((a, b) => scores[o + b]! - scores[o + a]! || a - b);
    for (let i = 0; i < kk; i++) mask[o + idx[i]!] = 1;
  }
  return mask;
}

/** Per-row L2 norm of each expert's slice of h (R, E·S) → (R, E). */
export function expertNorms(h: Float32Array, experts: number, expertSize: number): Float32Array {
  const f = experts * expertSize, rows = h.length / f;
  const out = new Float32Array(rows * experts);
  for (let r = 0; r < rows; r++) {
    for (let e = 0; e < experts; e++) {
      let s = 0;
      const o = r * f + e * expertSize;
      for (let i = 0; i < expertSize; i++) s += h[o + i]! * h[o + i]!;
      out[r * experts + e] = Math.sqrt(s);
    }
  }
  return out;
}

function rows2d(x: Tensor): Tensor {
  return x.reshape([-1, x.shape[x.shape.length - 1]!]);
}

function checkBudget(b: Budget, nLayer: number, experts: number): void {
  if (b.activeExperts.length !== nLayer) {
    throw new PolicyError(`budget has ${b.activeExperts.length} layers, the model has ${nLayer}`);
  }
  b.activeExperts.forEach((m, l) => {
    if (!(m >= 0 && m <= experts)) {
      throw new PolicyError(`budget for layer ${l} is ${m} active experts, outside [0, ${experts}]`);
    }
  });
}

abstract class Base implements RoutingPolicy {
  abstract kind: PolicyKind;
  unitSize: number;
  units: number;
  onMask: ((layer: number, mask: Float32Array) => void) | null = null;
  onScores: ((layer: number, scores: Float32Array) => void) | null = null;
  protected kept: Tensor[] = [];
  constructor(unitSize: number, units: number) {
    this.unitSize = unitSize;
    this.units = units;
  }
  abstract hook: FfnRouting;
  /** Applies a host (R, units) mask to h and reports it. */
  protected apply(layer: number, h: Tensor, mask: Float32Array): Tensor {
    this.onMask?.(layer, mask);
    const m = T.fromArray(mask, [mask.length / this.units, this.units], { device: h.device });
    return this.unitSize === 1 ? mul(h, m.reshape(h.shape)) : expertScale(h, m, this.unitSize);
  }
  dispose(): void {
    for (const t of this.kept) t.dispose();
    this.kept = [];
  }
}

/** LTE's hard routing: expert on iff sigmoid(x W_gᵀ + b) > τ (mask only). */
export class LtePolicy extends Base {
  kind = "lte" as const;
  #w: Tensor[];
  #b: (Tensor | null)[];
  #tau: number;
  constructor(model: DecoderLM, routers: { weight: Float32Array; bias?: Float32Array | null }[], opts: {
    expertSize: number;
    tau: number;
  }) {
    const c = model.config;
    if (c.d_ff % opts.expertSize !== 0) {
      throw new PolicyError(`expert_size ${opts.expertSize} does not divide the model's d_ff ${c.d_ff}`);
    }
    const e = c.d_ff / opts.expertSize;
    super(opts.expertSize, e);
    if (routers.length !== c.n_layer) {
      throw new PolicyError(`routers cover ${routers.length} layers, the model has ${c.n_layer}`);
    }
    const device = model.parameters()[0]!.device;
    routers.forEach((r, l) => {
      if (r.weight.length !== e * c.d_model) {
        throw new PolicyError(
          `layers.${l}.router.weight has ${r.weight.length} values, expected [${e}, ${c.d_model}] ` +
            `(${e} experts of ${opts.expertSize} for d_ff ${c.d_ff})`,
        );
      }
      if (r.bias && r.bias.length !== e) {
        throw new PolicyError(`layers.${l}.router.bias has ${r.bias.length} values, expected ${e}`);
      }
    });
    this.#w = routers.map((r) => T.fromArray(r.weight, [e, c.d_model], { device }).keep());
    this.#b = routers.map((r) => (r.bias ? T.fromArray(r.bias, [e], { device }).keep() : null));
    this.kept.push(...this.#w, ...this.#b.filter((b): b is Tensor => b !== null));
    this.#tau = opts.tau;
  }
  hook: FfnRouting = (layer, x, h) => {
    const g = sigmoid(linear(rows2d(x), this.#w[layer]!, this.#b[layer]));
    if (this.onScores) this.onScores(layer, g.toArray() as Float32Array);
    const mask = threshold(g, this.#tau);
    this.onMask?.(layer, mask.toArray() as Float32Array);
    return expertScale(h, mask.reshape([...h.shape.slice(0, -1), this.units]), this.unitSize);
  };
}

/** Random routers + per-token top-k at the budget (the paper's Fig. 12 ablation, without adaptation). */
export class RandomRouterPolicy extends Base {
  kind = "random" as const;
  #w: Tensor[];
  #budget: Budget;
  constructor(model: DecoderLM, budget: Budget, seed: number) {
    const c = model.config;
    super(budget.expertSize, c.d_ff / budget.expertSize);
    checkBudget(budget, c.n_layer, this.units);
    const rng = new Rng(seed);
    const device = model.parameters()[0]!.device;
    this.#w = Array.from(
      { length: c.n_layer },
      () =>
        T.fromArray(rng.normals(this.units * c.d_model, 1 / Math.sqrt(c.d_model)), [this.units, c.d_model], {
          device,
        }).keep(),
    );
    this.kept.push(...this.#w);
    this.#budget = budget;
  }
  hook: FfnRouting = (layer, x, h) => {
    const s = linear(rows2d(x), this.#w[layer]!).toArray() as Float32Array;
    const m = this.#budget.activeExperts[layer]!;
    return this.apply(layer, h, topKMask(s, this.units, (r) => ditheredK(r, m, this.units)));
  };
}

/** Oracle top-k: the experts with the largest true activation norm (an upper bound for selectors). */
export class OraclePolicy extends Base {
  kind = "oracle" as const;
  #budget: Budget;
  constructor(model: DecoderLM, budget: Budget) {
    super(budget.expertSize, model.config.d_ff / budget.expertSize);
    checkBudget(budget, model.config.n_layer, this.units);
    this.#budget = budget;
  }
  hook: FfnRouting = (layer, _x, h) => {
    const norms = expertNorms(h.toArray() as Float32Array, this.units, this.unitSize);
    const m = this.#budget.activeExperts[layer]!;
    return this.apply(layer, h, topKMask(norms, this.units, (r) => ditheredK(r, m, this.units)));
  };
}

/** Solves (A + λI) w = b for symmetric positive definite A (n×n, row-major), several right-hand sides. */
export function choleskySolve(a: Float64Array, b: Float64Array, n: number, rhs: number, ridge: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j]! + (i === j ? ridge : 0);
      for (let k = 0; k < j; k++) s -= l[i * n + k]! * l[j * n + k]!;
      if (i === j) {
        if (!(s > 0)) throw new PolicyError(`predictor fit: matrix not positive definite at ${i} (${s})`);
        l[i * n + i] = Math.sqrt(s);
      } else l[i * n + j] = s / l[j * n + j]!;
    }
  }
  const x = new Float64Array(n * rhs);
  for (let c = 0; c < rhs; c++) {
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = b[i * rhs + c]!;
      for (let k = 0; k < i; k++) s -= l[i * n + k]! * y[k]!;
      y[i] = s / l[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = y[i]!;
      for (let k = i + 1; k < n; k++) s -= l[k * n + i]! * x[k * rhs + c]!;
      x[i * rhs + c] = s / l[i * n + i]!;
    }
  }
  return x;
}

/**
 * Trained top-k predictor (Deja Vu / MoEfication style): per layer a linear map x → expert norms,
 * fit by ridge least squares on the model's own dense activations (calibration pass), then top-k
 * of its predictions at the budget. Deja Vu's predictor is two bias-free linears with no
 * nonlinearity between them (a low-rank linear map), so a full-rank linear fit is its closed form.
 */
export class PredictorPolicy extends Base {
  kind = "predictor" as const;
  #c: number;
  #xtx: Float64Array[];
  #xty: Float64Array[];
  #xs: Float64Array[];
  #ys: Float64Array[];
  #n: number[];
  #w: Tensor[] = [];
  #bias: Tensor[] = [];
  #budget: Budget | null = null;
  constructor(model: DecoderLM, expertSize: number) {
    const c = model.config;
    super(expertSize, c.d_ff / expertSize);
    this.#c = c.d_model;
    const L = c.n_layer, C = c.d_model, E = this.units;
    this.#xtx = Array.from({ length: L }, () => new Float64Array(C * C));
    this.#xty = Array.from({ length: L }, () => new Float64Array(C * E));
    this.#xs = Array.from({ length: L }, () => new Float64Array(C));
    this.#ys = Array.from({ length: L }, () => new Float64Array(E));
    this.#n = new Array(L).fill(0);
  }
  /** Calibration hook: accumulates the normal equations; returns h unchanged. */
  calibrate: FfnRouting = (layer, x, h) => {
    const x2 = rows2d(x);
    const rows = x2.shape[0]!, C = this.#c, E = this.units;
    const y = expertNorms(h.toArray() as Float32Array, E, this.unitSize);
    const yt = T.fromArray(y, [rows, E], { device: x.device });
    const xtx = matmul(x2, x2, { transA: true }).toArray();
    const xty = matmul(x2, yt, { transA: true }).toArray();
    const xh = x2.toArray();
    const A = this.#xtx[layer]!, B = this.#xty[layer]!, xs = this.#xs[layer]!, ys = this.#ys[layer]!;
    for (let i = 0; i < C * C; i++) A[i]! += xtx[i]!;
    for (let i = 0; i < C * E; i++) B[i]! += xty[i]!;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < C; i++) xs[i]! += xh[r * C + i]!;
      for (let e = 0; e < E; e++) ys[e]! += y[r * E + e]!;
    }
    this.#n[layer]! += rows;
    return h;
  };
  /** Solves the per-layer fits (centred, with an intercept). Call after calibration. */
  fit(device: Tensor["device"]): { r2: number[] } {
    const C = this.#c, E = this.units;
    const r2: number[] = [];
    this.#w.forEach((t) => t.dispose());
    this.#bias.forEach((t) => t.dispose());
    this.#w = [];
    this.#bias = [];
    for (let l = 0; l < this.#n.length; l++) {
      const n = this.#n[l]!;
      if (n === 0) throw new PolicyError(`predictor: no calibration tokens for layer ${l}`);
      const mx = this.#xs[l]!.map((v) => v / n), my = this.#ys[l]!.map((v) => v / n);
      const A = new Float64Array(C * C), B = new Float64Array(C * E);
      let tr = 0;
      for (let i = 0; i < C; i++) {
        for (let j = 0; j < C; j++) A[i * C + j] = this.#xtx[l]![i * C + j]! - n * mx[i]! * mx[j]!;
        tr += A[i * C + i]!;
        for (let e = 0; e < E; e++) B[i * E + e] = this.#xty[l]![i * E + e]! - n * mx[i]! * my[e]!;
      }
      const W = choleskySolve(A, B, C, E, 1e-3 * (tr / C) + 1e-8); // (C, E)
      const wt = new Float32Array(E * C), b = new Float32Array(E);
      for (let e = 0; e < E; e++) {
        let s = my[e]!;
        for (let i = 0; i < C; i++) {
          wt[e * C + i] = W[i * E + e]!;
          s -= mx[i]! * W[i * E + e]!;
        }
        b[e] = s;
      }
      this.#w.push(T.fromArray(wt, [E, C], { device }).keep());
      this.#bias.push(T.fromArray(b, [E], { device }).keep());
      r2.push(NaN);
    }
    this.kept = [...this.#w, ...this.#bias];
    return { r2 };
  }
  /** Sets the budget before evaluating. */
  setBudget(b: Budget, nLayer: number): void {
    checkBudget(b, nLayer, this.units);
    if (b.expertSize !== this.unitSize) throw new PolicyError(`budget expert size ${b.expertSize} != ${this.unitSize}`);
    this.#budget = b;
  }
  hook: FfnRouting = (layer, x, h) => {
    if (!this.#budget || this.#w.length === 0) throw new PolicyError("predictor: fit() and setBudget() first");
    const s = linear(rows2d(x), this.#w[layer]!, this.#bias[layer]).toArray() as Float32Array;
    const m = this.#budget.activeExperts[layer]!;
    return this.apply(layer, h, topKMask(s, this.units, (r) => ditheredK(r, m, this.units)));
  };
}

/**
 * Training-free magnitude thresholding per neuron (CATS / TEAL style): neuron i is kept iff
 * |a_i| > t_l, with a = act(x W_gateᵀ) for SwiGLU (CATS thresholds the gate activation) and a = h for
 * GELU FFNs. t_l is the s_l-quantile of |a| over calibration tokens, s_l the layer's target neuron
 * sparsity (LTE's measured per-layer sparsity).
 */
export class MagnitudePolicy extends Base {
  kind = "magnitude" as const;
  #model: DecoderLM;
  #samples: Float32Array[][];
  #sorted: Float32Array[] = [];
  #thresholds: number[] = [];
  #rng: Rng;
  /** Values kept per layer per calibration batch. */
  readonly samplePerBatch: number;
  constructor(model: DecoderLM, opts: { seed: number; samplePerBatch?: number }) {
    super(1, model.config.d_ff);
    this.#model = model;
    this.#samples = Array.from({ length: model.config.n_layer }, () => []);
    this.#rng = new Rng(opts.seed);
    this.samplePerBatch = opts.samplePerBatch ?? 65536;
  }
  #gateAct(layer: number, x: Tensor, h: Tensor): Tensor {
    if (this.#model.config.family === "gpt2") return h;
    return silu(linear(x, this.#model.param(`model.layers.${layer}.mlp.gate_proj.weight`)));
  }
  calibrate: FfnRouting = (layer, x, h) => {
    const a = this.#gateAct(layer, x, h).toArray() as Float32Array;
    const k = Math.min(a.length, this.samplePerBatch);
    const out = new Float32Array(k);
    for (let i = 0; i < k; i++) {
      const j = a.length === k ? i : this.#rng.int(a.length);
      out[i] = Math.abs(a[j]!);
    }
    this.#samples[layer]!.push(out);
    return h;
  };
  /** Sorts the calibration samples (call once after calibration). */
  finishCalibration(): void {
    this.#sorted = this.#samples.map((parts, l) => {
      const n = parts.reduce((s, p) => s + p.length, 0);
      if (n === 0) throw new PolicyError(`magnitude: no calibration values for layer ${l}`);
      const all = new Float32Array(n);
      let o = 0;
      for (const p of parts) all.set(p, o), (o += p.length);
      return all.sort();
    });
    this.#samples = [];
  }
  /** Per-layer neuron sparsity targets → thresholds (quantiles of |a|). */
  setSparsity(perLayer: number[]): number[] {
    if (this.#sorted.length === 0) throw new PolicyError("magnitude: finishCalibration() first");
    if (perLayer.length !== this.#sorted.length) {
      throw new PolicyError(`magnitude: ${perLayer.length} layer targets for ${this.#sorted.length} layers`);
    }
    this.#thresholds = perLayer.map((s, l) => {
      if (!(s >= 0 && s <= 1)) throw new PolicyError(`magnitude: sparsity ${s} for layer ${l} outside [0, 1]`);
      const v = this.#sorted[l]!;
      if (s <= 0) return -1;
      const i = Math.min(v.length - 1, Math.max(0, Math.ceil(s * v.length) - 1));
      return v[i]!;
    });
    return this.#thresholds;
  }
  hook: FfnRouting = (layer, x, h) => {
    const t = this.#thresholds[layer];
    if (t === undefined) throw new PolicyError("magnitude: setSparsity() first");
    const a = this.#gateAct(layer, x, h);
    const mask = t < 0 ? threshold(mul(a, a), -1) : threshold(mul(a, a), t * t);
    this.onMask?.(layer, mask.toArray() as Float32Array);
    return mul(h, mask);
  };
}

/** Installs a hook for the duration of `fn` (restores the previous one). */
export function withRouting<R>(model: DecoderLM, hook: FfnRouting | null, fn: () => R): R {
  const prev = model.ffnRouting;
  model.ffnRouting = hook;
  try {
    return fn();
  } finally {
    model.ffnRouting = prev;
  }
}

/** Dense forward of `ids` batches with a calibration hook (no gradients). */
export function calibrate(model: DecoderLM, hook: FfnRouting, batches: Iterable<Tensor>): void {
  withRouting(model, hook, () => {
    for (const ids of batches) scope(() => noGrad(() => void model.forward(ids)));
  });
}
