/**
 * Tiny models for the engine tests: the LLaMA the CPU engine tests decode with (2 layers, d 64, GQA
 * 4/2 heads, byte vocabulary: tests/engine_test.ts, tests/engine_lookahead_test.ts,
 * tests/engine_step_lookahead_test.ts) and seeded random weights for `Engine.fromArrays`.
 */
import type { WeightArrays } from "../engine/mod.ts";
import { type ModelConfig, resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";

export function tinyLlamaConfig(): ModelConfig {
  return resolveModelConfig({
    family: "llama",
    vocab_size: 256,
    n_layer: 2,
    d_model: 64,
    n_head: 4,
    n_kv_head: 2,
    d_ff: 256,
    max_seq: 64,
    init_std: 0.08,
  });
}

/** The weights of a freshly initialised model (HF names and layouts, f32), for `Engine.fromArrays`. */
export function initArrays(config: ModelConfig, seed: number): WeightArrays {
  const m = DecoderLM.init(config, { device: "cpu", seed });
  try {
    return m.toArrays();
  } finally {
    m.dispose();
  }
}
