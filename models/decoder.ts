/**
 * Decoder-only language models, GPT-2 and LLaMA families, from one set of modules.
 *
 * Parameters are stored under their Hugging Face names and layouts, so a checkpoint is a plain
 * dump of `model.params` (see models/checkpoint.ts):
 *   gpt2:  transformer.wte/wpe, transformer.h.{i}.ln_1/attn.c_attn/attn.c_proj/ln_2/mlp.c_fc/mlp.c_proj,
 *          transformer.ln_f; Conv1D weights are (in, out); the head is tied to wte.
 *   llama: model.embed_tokens, model.layers.{i}.input_layernorm/self_attn.{q,k,v,o}_proj/
 *          post_attention_layernorm/mlp.{gate,up,down}_proj, model.norm, lm_head; Linear weights
 *          are (out, in).
 *
 * The FFN is the module LTE changes. With `routing` set (models/routing.ts), each FFN layer runs
 * in the routing state's mode: `dense`, `soft` (stage 1: the intermediate activations of each
 * expert scaled by its sigmoid router score) or `hard` (stage 2 / inference: a 0/1 mask, score > τ).
 * The router reads the FFN input and is computed before gate/up. `forward(ids, { collectScores:
 * true })` also returns every layer's router scores (R, N) from the same pass. Two generic hooks
 * stay for baselines: `ffnMask` (an expert (R, N) or neuron (R, F) mask) and `ffnRouting`
 * (rescales the (R, F) activations); both run after the routing mode.
 *
 * Shape legend: B batch, T sequence, C d_model, H heads, HKV kv heads, D head dim, F d_ff, V vocab.
 * @module
 */
import { ShapeError } from "../tensor/errors.ts";
import {
  add,
  addBias,
  attention,
  type Device,
  embedding,
  expertScale,
  gelu,
  layerNorm,
  linear,
  matmul,
  mul,
  rmsNorm,
  Rng,
  rope,
  sliceLast,
  swiglu,
  Tensor,
} from "../tensor/mod.ts";
import type { ModelConfig } from "./config.ts";
import { type FfnRoutingState, hardMask, routerScores, RoutingError } from "./routing.ts";

export type { FfnMode, FfnRoutingState } from "./routing.ts";

/** Generic FFN hook (baselines): rescales (R, F) activations given the FFN input (R, C). */
export type FfnRouting = (layer: number, ffnInput: Tensor, hidden: Tensor) => Tensor;

/**
 * Generic FFN mask hook (baselines: oracle top-k, predictors, magnitude thresholds, random
 * routers): returns an expert mask (R, N) — applied per expert block of d_ff / N neurons — or a
 * neuron mask (R, F), multiplied into the (R, F) activations given the FFN input (R, C).
 */
export type FfnMask = (layer: number, ffnInput: Tensor, hidden: Tensor) => Tensor;

/** Options of `DecoderLM.forward`. */
export interface ForwardOptions {
  /** Also return each layer's router scores (R, N), R = B*T (needs `routing`). */
  collectScores?: boolean;
}

/** Logits plus per-layer router scores (`forward(ids, { collectScores: true })`). */
export interface ForwardResult {
  logits: Tensor;
  /** Per layer (R, N) sigmoid router scores, R = B*T rows in (b, t) order. */
  scores: Tensor[];
}

/** Shape and init of one parameter. */
export interface ParamSpec {
  name: string;
  shape: number[];
  init: "normal" | "normal_scaled" | "zeros" | "ones";
}

/** The parameter list of a config, in a fixed order (init order and checkpoint order). */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const d = c.d_model, f = c.d_ff, hd = d / c.n_head, kv = c.n_kv_head * hd;
  const out: ParamSpec[] = [];
  const p = (name: string, shape: number[], init: ParamSpec["init"]) => out.push({ name, shape, init });
  if (c.family === "gpt2") {
    p("transformer.wte.weight", [c.vocab_size, d], "normal");
    p("transformer.wpe.weight", [c.max_seq, d], "normal");
    for (let i = 0; i < c.n_layer; i++) {
      const h = `transformer.h.${i}`;
      p(`${h}.ln_1.weight`, [d], "ones");
      p(`${h}.ln_1.bias`, [d], "zeros");
      p(`${h}.attn.c_attn.weight`, [d, 3 * d], "normal");
      p(`${h}.attn.c_attn.bias`, [3 * d], "zeros");
      p(`${h}.attn.c_proj.weight`, [d, d], "normal_scaled");
      p(`${h}.attn.c_proj.bias`, [d], "zeros");
      p(`${h}.ln_2.weight`, [d], "ones");
      p(`${h}.ln_2.bias`, [d], "zeros");
      p(`${h}.mlp.c_fc.weight`, [d, f], "normal");
      p(`${h}.mlp.c_fc.bias`, [f], "zeros");
      p(`${h}.mlp.c_proj.weight`, [f, d], "normal_scaled");
      p(`${h}.mlp.c_proj.bias`, [d], "zeros");
    }
    p("transformer.ln_f.weight", [d], "ones");
    p("transformer.ln_f.bias", [d], "zeros");
  } else {
    p("model.embed_tokens.weight", [c.vocab_size, d], "normal");
    for (let i = 0; i < c.n_layer; i++) {
      const l = `model.layers.${i}`;
      p(`${l}.input_layernorm.weight`, [d], "ones");
      p(`${l}.self_attn.q_proj.weight`, [d, d], "normal");
      p(`${l}.self_attn.k_proj.weight`, [kv, d], "normal");
      p(`${l}.self_attn.v_proj.weight`, [kv, d], "normal");
      p(`${l}.self_attn.o_proj.weight`, [d, d], "normal_scaled");
      p(`${l}.post_attention_layernorm.weight`, [d], "ones");
      p(`${l}.mlp.gate_proj.weight`, [f, d], "normal");
      p(`${l}.mlp.up_proj.weight`, [f, d], "normal");
      p(`${l}.mlp.down_proj.weight`, [d, f], "normal_scaled");
    }
    p("model.norm.weight", [d], "ones");
    if (!c.tie_embeddings) p("lm_head.weight", [c.vocab_size, d], "normal");
  }
  return out;
}

/** A decoder LM: parameters (kept tensors) plus the forward pass. Dispose with `dispose()`. */
export class DecoderLM {
  readonly config: ModelConfig;
  /** Parameters by Hugging Face name, in `paramSpecs` order. */
  readonly params: Map<string, Tensor>;
  /** LTE routing (router tensors, mode, expert size, τ); null: a dense model. */
  routing: FfnRoutingState | null = null;
  /** Generic mask hook on the FFN (baselines); null: unset. */
  ffnMask: FfnMask | null = null;
  /** Generic rescaling hook on the FFN (baselines); null: unset. */
  ffnRouting: FfnRouting | null = null;

  private constructor(config: ModelConfig, params: Map<string, Tensor>) {
    this.config = config;
    this.params = params;
  }

  /** A model with freshly initialised parameters (host RNG: identical on every backend). */
  static init(config: ModelConfig, opts: { device: Device; seed: number }): DecoderLM {
    const rng = new Rng(opts.seed);
    const params = new Map<string, Tensor>();
    const std = config.init_std;
    for (const s of paramSpecs(config)) {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const data = s.init === "zeros"
        ? new Float32Array(n)
        : s.init === "ones"
        ? new Float32Array(n).fill(1)
        : rng.normals(n, s.init === "normal_scaled" ? std / Math.sqrt(2 * config.n_layer) : std);
      params.set(
        s.name,
        Tensor.fromArray(data, s.shape, { device: opts.device, requiresGrad: true, name: s.name }).keep(),
      );
    }
    return new DecoderLM(config, params);
  }

  /** A model from host arrays by name (checkpoint load); checks names and shapes. */
  static fromArrays(
    config: ModelConfig,
    arrays: Map<string, Float32Array>,
    opts: { device: Device; source?: string },
  ): DecoderLM {
    const src = opts.source ?? "weights";
    const specs = paramSpecs(config);
    const missing = specs.filter((s) => !arrays.has(s.name)).map((s) => s.name);
    if (missing.length > 0) {
      throw new ShapeError(
        "DecoderLM.load",
        `${src}: missing tensors ${missing.slice(0, 5).join(", ")}${
          missing.length > 5 ? ` (+${missing.length - 5} more)` : ""
        }`,
      );
    }
    const params = new Map<string, Tensor>();
    try {
      for (const s of specs) {
        const a = arrays.get(s.name)!;
        const n = s.shape.reduce((x, y) => x * y, 1);
        if (a.length !== n) {
          throw new ShapeError(
            "DecoderLM.load",
            `${src}: tensor ${s.name} has ${a.length} values, expected shape [${s.shape.join(", ")}] (${n})`,
          );
        }
        params.set(
          s.name,
          Tensor.fromArray(a, s.shape, { device: opts.device, requiresGrad: true, name: s.name }).keep(),
        );
      }
    } catch (e) {
      for (const t of params.values()) t.dispose();
      throw e;
    }
    return new DecoderLM(config, params);
  }

  /** Parameter by name. */
  param(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`DecoderLM: no parameter named ${name}`);
    return t;
  }

  /** All parameters in a fixed order. */
  parameters(): Tensor[] {
    return [...this.params.values()];
  }

  /** Number of parameter values. */
  numParams(): number {
    let n = 0;
    for (const t of this.params.values()) n += t.size;
    return n;
  }

  /**
   * Logits (B, T, V) for token ids (B, T) i32; with `collectScores`, also the router scores of
   * every layer from the same pass (for the LTE losses and sparsity metrics).
   */
  forward(ids: Tensor): Tensor;
  forward(ids: Tensor, opts: ForwardOptions & { collectScores: true }): ForwardResult;
  forward(ids: Tensor, opts?: ForwardOptions): Tensor | ForwardResult;
  forward(ids: Tensor, opts: ForwardOptions = {}): Tensor | ForwardResult {
    const c = this.config;
    if (ids.shape.length !== 2) throw new ShapeError("DecoderLM.forward", `ids must be (B, T), got ${ids.describe()}`);
    const t = ids.shape[1]!;
    if (t > c.max_seq) throw new RangeError(`DecoderLM.forward: sequence length ${t} exceeds max_seq ${c.max_seq}`);
    if (opts.collectScores && !this.routing) {
      throw new RoutingError("DecoderLM.forward: collectScores needs routers (model.routing is null: a dense model)");
    }
    const scores: Tensor[] | null = opts.collectScores ? [] : null;
    const logits = c.family === "gpt2" ? this.#gpt2(ids, scores) : this.#llama(ids, scores);
    return scores ? { logits, scores } : logits;
  }

  /** FFN intermediate activations (R, F) for FFN input h (R, C): act(h W1 + b1) or silu(h Wg) * (h Wu). */
  ffnHidden(layer: number, h: Tensor): Tensor {
    if (this.config.family === "gpt2") {
      const p = `transformer.h.${layer}.mlp`;
      return gelu(addBias(matmul(h, this.param(`${p}.c_fc.weight`)), this.param(`${p}.c_fc.bias`)));
    }
    const p = `model.layers.${layer}.mlp`;
    return swiglu(linear(h, this.param(`${p}.gate_proj.weight`)), linear(h, this.param(`${p}.up_proj.weight`)));
  }

  /** FFN output (R, C) from intermediate activations (R, F). */
  ffnOut(layer: number, a: Tensor): Tensor {
    if (this.config.family === "gpt2") {
      const p = `transformer.h.${layer}.mlp`;
      return addBias(matmul(a, this.param(`${p}.c_proj.weight`)), this.param(`${p}.c_proj.bias`));
    }
    return linear(a, this.param(`model.layers.${layer}.mlp.down_proj.weight`));
  }

  #ffn(layer: number, h: Tensor, scores: Tensor[] | null): Tensor {
    const r = this.routing;
    // The router reads the FFN input and runs before gate/up (sparse kernels pick experts first).
    const g = r && (r.mode !== "dense" || scores) ? routerScores(r, layer, h) : null;
    if (g && scores) {
      const gl = r!.lossScoresDetached ? routerScores(r!, layer, h.detach()) : g;
      scores.push(gl.reshape([gl.size / r!.nExperts, r!.nExperts]));
    }
    let a = this.ffnHidden(layer, h);
    if (g && r!.mode === "soft") a = expertScale(a, g, r!.expertSize);
    else if (g && r!.mode === "hard") a = expertScale(a, hardMask(g, r!.tau), r!.expertSize);
    if (this.ffnMask) a = this.#applyMask(layer, this.ffnMask(layer, h, a), a);
    if (this.ffnRouting) a = this.ffnRouting(layer, h, a);
    return this.ffnOut(layer, a);
  }

  #applyMask(layer: number, m: Tensor, a: Tensor): Tensor {
    const f = this.config.d_ff;
    const last = m.shape[m.shape.length - 1] ?? 1;
    if (m.size === a.size && last === f) return mul(a, m.reshape(a.shape));
    const n = last, rows = a.size / f;
    if (f % n !== 0 || m.size !== rows * n) {
      throw new ShapeError(
        "DecoderLM.ffnMask",
        `layer ${layer}: mask ${m.describe()} must be (R, N) experts with N dividing d_ff ${f}, or (R, ${f}) neurons, R = ${rows}`,
      );
    }
    return expertScale(a, m, f / n);
  }

  #gpt2(ids: Tensor, scores: Tensor[] | null): Tensor {
    const c = this.config;
    const [b, t] = ids.shape as [number, number];
    const d = c.d_model, hd = d / c.n_head;
    const pos = Tensor.fromArray(Int32Array.from({ length: t }, (_, i) => i), [t], { device: ids.device });
    let x = addBias(
      embedding(ids, this.param("transformer.wte.weight")),
      embedding(pos, this.param("transformer.wpe.weight")),
    );
    for (let i = 0; i < c.n_layer; i++) {
      const p = `transformer.h.${i}`;
      const h = layerNorm(x, this.param(`${p}.ln_1.weight`), this.param(`${p}.ln_1.bias`), c.norm_eps);
      const qkv = addBias(matmul(h, this.param(`${p}.attn.c_attn.weight`)), this.param(`${p}.attn.c_attn.bias`));
      const q = sliceLast(qkv, 0, d).reshape([b, t, c.n_head, hd]);
      const k = sliceLast(qkv, d, d).reshape([b, t, c.n_head, hd]);
      const v = sliceLast(qkv, 2 * d, d).reshape([b, t, c.n_head, hd]);
      const a = attention(q, k, v).reshape([b, t, d]);
      x = add(x, addBias(matmul(a, this.param(`${p}.attn.c_proj.weight`)), this.param(`${p}.attn.c_proj.bias`)));
      const h2 = layerNorm(x, this.param(`${p}.ln_2.weight`), this.param(`${p}.ln_2.bias`), c.norm_eps);
      x = add(x, this.#ffn(i, h2, scores));
    }
    x = layerNorm(x, this.param("transformer.ln_f.weight"), this.param("transformer.ln_f.bias"), c.norm_eps);
    return linear(x, this.param("transformer.wte.weight"));
  }

  #llama(ids: Tensor, scores: Tensor[] | null): Tensor {
    const c = this.config;
    const [b, t] = ids.shape as [number, number];
    const d = c.d_model, hd = d / c.n_head;
    let x = embedding(ids, this.param("model.embed_tokens.weight"));
    for (let i = 0; i < c.n_layer; i++) {
      const p = `model.layers.${i}`;
      const h = rmsNorm(x, this.param(`${p}.input_layernorm.weight`), c.norm_eps);
      const q = rope(linear(h, this.param(`${p}.self_attn.q_proj.weight`)).reshape([b, t, c.n_head, hd]), {
        theta: c.rope_theta,
      });
      const k = rope(linear(h, this.param(`${p}.self_attn.k_proj.weight`)).reshape([b, t, c.n_kv_head, hd]), {
        theta: c.rope_theta,
      });
      const v = linear(h, this.param(`${p}.self_attn.v_proj.weight`)).reshape([b, t, c.n_kv_head, hd]);
      const a = attention(q, k, v).reshape([b, t, d]);
      x = add(x, linear(a, this.param(`${p}.self_attn.o_proj.weight`)));
      const h2 = rmsNorm(x, this.param(`${p}.post_attention_layernorm.weight`), c.norm_eps);
      x = add(x, this.#ffn(i, h2, scores));
    }
    x = rmsNorm(x, this.param("model.norm.weight"), c.norm_eps);
    const head = c.tie_embeddings ? this.param("model.embed_tokens.weight") : this.param("lm_head.weight");
    return linear(x, head);
  }

  /** Host copies of all parameters by name (for checkpoints). */
  toArrays(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const [name, t] of this.params) out.set(name, t.toArray() as Float32Array);
    return out;
  }

  /** Frees parameters, routers and their gradients. */
  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    if (this.routing) {
      for (const t of [...this.routing.weights, ...(this.routing.biases ?? [])]) t.dispose();
      this.routing = null;
    }
  }
}
