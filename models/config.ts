/**
 * Decoder model configuration: one schema for both families, and the mapping to and from Hugging
 * Face `config.json` (GPT2Config / LlamaConfig), so checkpoints round-trip with `transformers`.
 *
 * @module
 */
import { z } from "zod";

/** The two decoder families built from the same modules. */
export type Family = "gpt2" | "llama";

/** Model configuration as written in pipeline YAML (`model:` block). */
export const ModelConfigSchema = z.strictObject({
  /** gpt2: LayerNorm, GELU, learned positions, tied embeddings. llama: RMSNorm, RoPE, SwiGLU, GQA. */
  family: z.enum(["gpt2", "llama"]),
  vocab_size: z.number().int().positive(),
  n_layer: z.number().int().positive(),
  d_model: z.number().int().positive(),
  n_head: z.number().int().positive(),
  /** Key/value heads (llama GQA); defaults to n_head. */
  n_kv_head: z.number().int().positive().optional(),
  /** FFN width; default 4*d_model (gpt2) or the LLaMA rule 2/3*4*d rounded up to 32. */
  d_ff: z.number().int().positive().optional(),
  /** Longest sequence (gpt2 learned positions; llama max_position_embeddings). */
  max_seq: z.number().int().positive().default(1024),
  norm_eps: z.number().positive().optional(),
  rope_theta: z.number().positive().default(10000),
  /** Tie the output head to the token embedding (always true for gpt2). */
  tie_embeddings: z.boolean().optional(),
  /** Std of the normal initialisation. */
  init_std: z.number().positive().default(0.02),
});

/** Parsed (input) model config. */
export type ModelConfigInput = z.input<typeof ModelConfigSchema>;

/** Fully resolved model config: every optional field filled. */
export interface ModelConfig {
  family: Family;
  vocab_size: number;
  n_layer: number;
  d_model: number;
  n_head: number;
  n_kv_head: number;
  d_ff: number;
  max_seq: number;
  norm_eps: number;
  rope_theta: number;
  tie_embeddings: boolean;
  init_std: number;
}

/** Fills defaults and checks cross-field constraints. Throws RangeError naming the key. */
export function resolveModelConfig(input: ModelConfigInput): ModelConfig {
  const parsed = ModelConfigSchema.safeParse(input);
  if (!parsed.success) {
    // One line per problem, named by key (not zod's JSON dump of its issues).
    throw new RangeError(
      parsed.error.issues.map((i) => {
        const key = i.path.map(String).join(".");
        const got = i.path.reduce((v: any, k) => (v == null ? v : v[k as any]), input as any);
        return `model.${key}: ${i.message}${got !== undefined ? ` (got ${JSON.stringify(got)})` : ""}`;
      }).join("; "),
    );
  }
  const c = parsed.data;
  const nKv = c.n_kv_head ?? c.n_head;
  if (c.d_model % c.n_head !== 0) {
    throw new RangeError(`model.d_model (${c.d_model}) must be divisible by model.n_head (${c.n_head})`);
  }
  if (c.n_head % nKv !== 0) {
    throw new RangeError(`model.n_head (${c.n_head}) must be divisible by model.n_kv_head (${nKv})`);
  }
  if (c.family === "gpt2" && c.tie_embeddings === false) {
    throw new RangeError(`model.tie_embeddings: gpt2 always ties the output head to the token embedding`);
  }
  if (c.family === "gpt2" && nKv !== c.n_head) {
    throw new RangeError(`model.n_kv_head is a llama option; gpt2 uses n_head key/value heads`);
  }
  if (c.family === "llama" && (c.d_model / c.n_head) % 2 !== 0) {
    throw new RangeError(`model: llama head dim d_model/n_head = ${c.d_model / c.n_head} must be even for RoPE`);
  }
  const dff = c.d_ff ?? (c.family === "gpt2" ? 4 * c.d_model : Math.ceil((8 * c.d_model) / 3 / 32) * 32);
  return {
    family: c.family,
    vocab_size: c.vocab_size,
    n_layer: c.n_layer,
    d_model: c.d_model,
    n_head: c.n_head,
    n_kv_head: nKv,
    d_ff: dff,
    max_seq: c.max_seq,
    norm_eps: c.norm_eps ?? (c.family === "gpt2" ? 1e-5 : 1e-6),
    rope_theta: c.rope_theta,
    tie_embeddings: c.family === "gpt2" ? true : (c.tie_embeddings ?? false),
    init_std: c.init_std,
  };
}

/** Hugging Face `config.json` for a model config. */
export function toHfConfig(c: ModelConfig): Record<string, unknown> {
  if (c.family === "gpt2") {
    return {
      architectures: ["GPT2LMHeadModel"],
      model_type: "gpt2",
      vocab_size: c.vocab_size,
      n_positions: c.max_seq,
      n_embd: c.d_model,
      n_layer: c.n_layer,
      n_head: c.n_head,
      n_inner: c.d_ff,
      activation_function: "gelu_new",
      layer_norm_epsilon: c.norm_eps,
      initializer_range: c.init_std,
      resid_pdrop: 0,
      embd_pdrop: 0,
      attn_pdrop: 0,
      tie_word_embeddings: true,
      torch_dtype: "float32",
    };
  }
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: c.vocab_size,
    hidden_size: c.d_model,
    intermediate_size: c.d_ff,
    num_hidden_layers: c.n_layer,
    num_attention_heads: c.n_head,
    num_key_value_heads: c.n_kv_head,
    max_position_embeddings: c.max_seq,
    rms_norm_eps: c.norm_eps,
    rope_theta: c.rope_theta,
    hidden_act: "silu",
    tie_word_embeddings: c.tie_embeddings,
    attention_bias: false,
    mlp_bias: false,
    initializer_range: c.init_std,
    torch_dtype: "float32",
  };
}

function num(obj: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new TypeError(`${file}: key "${key}" must be a number, got ${JSON.stringify(obj[key])}`);
  }
  return v;
}

/** Reads a Hugging Face `config.json` object (GPT-2 or LLaMA). `file` names it in errors. */
export function fromHfConfig(hf: Record<string, unknown>, file = "config.json"): ModelConfig {
  const type = hf.model_type;
  if (type === "gpt2") {
    const act = hf.activation_function ?? "gelu_new";
    if (act !== "gelu_new" && act !== "gelu_pytorch_tanh") {
      throw new TypeError(`${file}: activation_function "${act}" is not supported (gelu_new)`);
    }
    for (const k of ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"]) {
      if (hf[k] === true) throw new TypeError(`${file}: ${k} is not supported`);
    }
    const d = num(hf, "n_embd", file);
    return resolveModelConfig({
      family: "gpt2",
      vocab_size: num(hf, "vocab_size", file),
      n_layer: num(hf, "n_layer", file),
      d_model: d,
      n_head: num(hf, "n_head", file),
      d_ff: hf.n_inner == null ? 4 * d : num(hf, "n_inner", file),
      max_seq: num(hf, "n_positions", file, 1024),
      norm_eps: num(hf, "layer_norm_epsilon", file, 1e-5),
      init_std: num(hf, "initializer_range", file, 0.02),
    });
  }
  if (type === "llama") {
    if ((hf.hidden_act ?? "silu") !== "silu") {
      throw new TypeError(`${file}: hidden_act "${hf.hidden_act}" is not supported (silu)`);
    }
    if (hf.attention_bias === true || hf.mlp_bias === true) {
      throw new TypeError(`${file}: attention_bias / mlp_bias are not supported`);
    }
    if (hf.rope_scaling != null) throw new TypeError(`${file}: rope_scaling is not supported`);
    const heads = num(hf, "num_attention_heads", file);
    if (hf.head_dim != null && hf.head_dim !== num(hf, "hidden_size", file) / heads) {
      throw new TypeError(`${file}: head_dim ${hf.head_dim} != hidden_size / num_attention_heads is not supported`);
    }
    return resolveModelConfig({
      family: "llama",
      vocab_size: num(hf, "vocab_size", file),
      n_layer: num(hf, "num_hidden_layers", file),
      d_model: num(hf, "hidden_size", file),
      n_head: heads,
      n_kv_head: num(hf, "num_key_value_heads", file, heads),
      d_ff: num(hf, "intermediate_size", file),
      max_seq: num(hf, "max_position_embeddings", file, 2048),
      norm_eps: num(hf, "rms_norm_eps", file, 1e-6),
      rope_theta: num(hf, "rope_theta", file, 10000),
      tie_embeddings: hf.tie_word_embeddings === true,
      init_std: num(hf, "initializer_range", file, 0.02),
    });
  }
  throw new TypeError(`${file}: model_type ${JSON.stringify(type)} is not supported (gpt2, llama)`);
}

/** Parameter count of a config. */
export function countParams(c: ModelConfig): number {
  const d = c.d_model, hd = d / c.n_head, kv = c.n_kv_head * hd;
  if (c.family === "gpt2") {
    const layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * c.d_ff + c.d_ff) + (c.d_ff * d + d);
    return c.vocab_size * d + c.max_seq * d + c.n_layer * layer + 2 * d;
  }
  const layer = d + (d * d + 2 * d * kv + d * d) + d + 3 * d * c.d_ff;
  return c.vocab_size * d * (c.tie_embeddings ? 1 : 2) + c.n_layer * layer + d;
}
