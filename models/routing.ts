/**
 * LTE routing as a mode of the FFN (lte-spec.md §3–§5).
 *
 * Each FFN layer of a {@linkcode DecoderLM} with a routing state runs in one of three modes:
 *   dense  the plain FFN (router scores are still computed when the caller asks for them)
 *   soft   stage 1: each expert's 32 neurons scaled by its score  h ⊙ rep(sigmoid(x W_gᵀ + b))
 *   hard   stage 2 and inference: a 0/1 mask, expert on iff score > τ (strict), no score multiply
 *
 * The router is a linear layer per FFN layer, W_g (N, C) in Linear layout (out x in), optional bias
 * (N) (none by default, as in Eq. 1), reading the FFN input x (the post-norm hidden state) and
 * computed BEFORE gate/up, so sparse kernels can skip inactive experts entirely.
 *
 * Router tensors use the names of `routers.safetensors` (`layers.{i}.router.weight` / `.bias`,
 * see models/lte_artifacts.ts), also as parameter names in optimizer state.
 *
 * @module
 */
import { linear, noGrad, Rng, sigmoid, Tensor, threshold } from "../tensor/mod.ts";
import type { Device } from "../tensor/mod.ts";
import type { ModelConfig } from "./config.ts";
import {
  LTE_META_FILE,
  LteArtifactError,
  type LteMeta,
  readLteMeta,
  readRouters,
  routerBiasName,
  routerWeightName,
} from "./lte_artifacts.ts";

/** How an FFN layer uses its router. */
export type FfnMode = "dense" | "soft" | "hard";

/** The modes, for schemas and messages. */
export const FFN_MODES: readonly FfnMode[] = ["dense", "soft", "hard"];

/** Routing state installed on a model (`model.routing`). */
export interface FfnRoutingState {
  mode: FfnMode;
  /** Neurons per expert (32 in the paper); experts are contiguous blocks of the permuted FFN. */
  expertSize: number;
  /** Experts per layer (d_ff / expertSize). */
  nExperts: number;
  /** Hard threshold τ in (0, 1). */
  tau: number;
  /** Per layer: router weight (N, C), named `layers.{i}.router.weight`. */
  weights: Tensor[];
  /** Per layer: router bias (N), or null (no bias, the default). */
  biases: Tensor[] | null;
  /**
   * The scores `forward(..., { collectScores: true })` hands back are computed from the detached FFN
   * input, so losses on them (stage 1's L_eff, L_sep) train the routers only and never the model;
   * the FFN itself still uses the scores of the live input. Default false (the paper's joint
   * training: the router losses reach every parameter).
   */
  lossScoresDetached?: boolean;
}

/** A routing state that does not fit the model, or bad routing options. */
export class RoutingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RoutingError";
  }
}

/**
 * Router scores G = sigmoid(x W_gᵀ + b) for the FFN input x (..., C): shape (..., N).
 * Differentiable with respect to x and (when they require grad) the router tensors.
 */
export function routerScores(state: FfnRoutingState, layer: number, x: Tensor): Tensor {
  const w = state.weights[layer];
  if (!w) throw new RoutingError(`routing has ${state.weights.length} layers, asked for layer ${layer}`);
  return sigmoid(linear(x, w, state.biases?.[layer] ?? null));
}

/** Hard expert mask 1{G > τ} (same shape as the scores; strict comparison, no gradient). */
export function hardMask(scores: Tensor, tau: number): Tensor {
  return threshold(scores, tau);
}

/**
 * Builds a routing state from host router arrays (names as in `routers.safetensors`), checked
 * against the model config. `trainable` sets requiresGrad on the router tensors.
 */
export function createRouting(
  config: ModelConfig,
  arrays: Map<string, Float32Array>,
  opts: {
    mode: FfnMode;
    expertSize: number;
    tau: number;
    trainable: boolean;
    device: Device;
    source?: string;
    /** {@linkcode FfnRoutingState.lossScoresDetached} (default false). */
    lossScoresDetached?: boolean;
  },
): FfnRoutingState {
  const src = opts.source ?? "routers";
  if (!FFN_MODES.includes(opts.mode)) {
    throw new RoutingError(`mode must be one of ${FFN_MODES.join(", ")}, got ${JSON.stringify(opts.mode)}`);
  }
  if (!Number.isInteger(opts.expertSize) || opts.expertSize <= 0 || config.d_ff % opts.expertSize !== 0) {
    throw new RoutingError(`expert size ${opts.expertSize} must be a positive integer dividing d_ff ${config.d_ff}`);
  }
  if (!(opts.tau > 0 && opts.tau < 1)) throw new RoutingError(`tau must be in (0, 1), got ${opts.tau}`);
  const n = config.d_ff / opts.expertSize, c = config.d_model;
  const hasBias = arrays.has(routerBiasName(0));
  const weights: Tensor[] = [];
  const biases: Tensor[] = [];
  const make = (name: string, shape: number[]) => {
    const a = arrays.get(name);
    if (!a) throw new RoutingError(`${src}: missing tensor ${name} (model has ${config.n_layer} layers)`);
    const want = shape.reduce((x, y) => x * y, 1);
    if (a.length !== want) {
      throw new RoutingError(
        `${src}: tensor ${name} has ${a.length} values, expected [${shape.join(", ")}] ` +
          `(${n} experts of ${opts.expertSize} neurons, d_model ${c})`,
      );
    }
    return noGrad(() => Tensor.fromArray(a, shape, { device: opts.device, requiresGrad: opts.trainable, name }).keep());
  };
  try {
    for (let i = 0; i < config.n_layer; i++) {
      weights.push(make(routerWeightName(i), [n, c]));
      if (hasBias) biases.push(make(routerBiasName(i), [n]));
    }
  } catch (e) {
    for (const t of [...weights, ...biases]) t.dispose();
    throw e;
  }
  return {
    mode: opts.mode,
    expertSize: opts.expertSize,
    nExperts: n,
    tau: opts.tau,
    weights,
    biases: hasBias ? biases : null,
    ...(opts.lossScoresDetached ? { lossScoresDetached: true } : {}),
  };
}

/** The router tensors (weights, then biases), e.g. to hand to an optimizer. */
export function routerParams(state: FfnRoutingState): Tensor[] {
  return [...state.weights, ...(state.biases ?? [])];
}

/** Freezes (false) or unfreezes (true) the routers. */
export function setRoutersTrainable(state: FfnRoutingState, trainable: boolean): void {
  for (const t of routerParams(state)) t.requiresGrad = trainable;
}

/** Host copies of the router tensors by name (for `writeRouters` and checkpoints). */
export function routingArrays(state: FfnRoutingState): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  state.weights.forEach((t, i) => out.set(routerWeightName(i), t.toArray() as Float32Array));
  state.biases?.forEach((t, i) => out.set(routerBiasName(i), t.toArray() as Float32Array));
  return out;
}

/** Frees the router tensors. */
export function disposeRouting(state: FfnRoutingState): void {
  for (const t of routerParams(state)) t.dispose();
}

/**
 * The LTE metadata and routers of a model folder, ready for `createRouting`. Throws a clear
 * `LteArtifactError` when the folder was never grouped (no lte.json) or has no routers.
 */
export function readLteRouting(
  dir: string,
  config?: ModelConfig,
): { meta: LteMeta; arrays: Map<string, Float32Array> } {
  const meta = readLteMeta(dir, config);
  if (!meta) {
    throw new LteArtifactError(
      `${dir}/${LTE_META_FILE}`,
      "not found: this model folder has no LTE metadata (run a group stage and router-train first)",
    );
  }
  if (meta.routers === null) {
    throw new LteArtifactError(
      `${dir}/${LTE_META_FILE}`,
      "is null: this model has no routers (run router-train on it first)",
      "routers",
    );
  }
  return { meta, arrays: readRouters(dir, meta) };
}

/** Router initialisations: MoEfication-style centroids, or PyTorch's nn.Linear default. */
export type RouterInit = "centroid" | "linear";

/** The FFN "key" vector of neuron j (gate_proj row for LLaMA, c_fc column for GPT-2), copied out. */
function gateRows(config: ModelConfig, w: Float32Array): (j: number) => Float32Array {
  const c = config.d_model, f = config.d_ff;
  if (config.family === "gpt2") {
    // c_fc.weight is Conv1D (C, F): neuron j is column j.
    return (j) => {
      const v = new Float32Array(c);
      for (let k = 0; k < c; k++) v[k] = w[k * f + j]!;
      return v;
    };
  }
  return (j) => w.subarray(j * c, (j + 1) * c);
}

/** Name of the parameter whose rows/columns define the FFN neurons ("gate rows"). */
export function gateParamName(config: ModelConfig, layer: number): string {
  return config.family === "gpt2"
    ? `transformer.h.${layer}.mlp.c_fc.weight`
    : `model.layers.${layer}.mlp.gate_proj.weight`;
}

/**
 * Initial router weights (no bias), per layer (N, C):
 * - `centroid` (default): expert e's row is the mean of its neurons' L2-normalised gate rows,
 *   renormalised to unit length and rescaled to the mean raw gate-row norm of the expert, so its
 *   logit x·w_e has the scale of a typical neuron pre-activation of that expert (callers may
 *   rescale per layer on data, see `routerLogitRms`).
 * - `linear`: uniform(-1/√C, 1/√C), nn.Linear's default, from `seed`.
 * `gate(l)` returns layer l's gate weight as host data (LLaMA gate_proj (F, C), GPT-2 c_fc (C, F)).
 */
export function initRouterArrays(
  config: ModelConfig,
  gate: (layer: number) => Float32Array,
  opts: { expertSize: number; init: RouterInit; seed: number },
): Map<string, Float32Array> {
  const c = config.d_model, f = config.d_ff, s = opts.expertSize;
  if (f % s !== 0) throw new RoutingError(`expert size ${s} does not divide d_ff ${f}`);
  const n = f / s;
  const out = new Map<string, Float32Array>();
  const rng = new Rng(opts.seed);
  for (let l = 0; l < config.n_layer; l++) {
    if (opts.init === "linear") {
      const b = 1 / Math.sqrt(c);
      out.set(routerWeightName(l), rng.uniforms(n * c, -b, b));
      continue;
    }
    const row = gateRows(config, gate(l));
    const w = new Float32Array(n * c);
    const acc = new Float64Array(c);
    for (let e = 0; e < n; e++) {
      acc.fill(0);
      let normSum = 0;
      for (let j = e * s; j < (e + 1) * s; j++) {
        const v = row(j);
        let sq = 0;
        for (let k = 0; k < c; k++) sq += v[k]! * v[k]!;
        const norm = Math.sqrt(sq);
        normSum += norm;
        if (norm > 0) { for (let k = 0; k < c; k++) acc[k]! += v[k]! / norm; }
      }
      let cn = 0;
      for (let k = 0; k < c; k++) cn += acc[k]! * acc[k]!;
      cn = Math.sqrt(cn);
      const target = normSum / s;
      for (let k = 0; k < c; k++) w[e * c + k] = cn > 0 ? (acc[k]! / cn) * target : 0;
    }
    out.set(routerWeightName(l), w);
  }
  return out;
}

/**
 * Per-layer active fraction of experts from hard masks, over the rows where `rowMask` is 1
 * (all rows when null): mean over rows of (#experts with score > τ) / N.
 */
export function activeFraction(scores: Float32Array, n: number, tau: number, rowMask: Float32Array | null): number {
  const rows = scores.length / n;
  let on = 0, count = 0;
  for (let r = 0; r < rows; r++) {
    if (rowMask && rowMask[r] === 0) continue;
    count++;
    for (let e = 0; e < n; e++) if (scores[r * n + e]! > tau) on++;
  }
  return count === 0 ? NaN : on / (count * n);
}
