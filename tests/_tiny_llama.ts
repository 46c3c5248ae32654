/**
 * The tiny LLaMA the CPU engine tests decode with (2 layers, d 64, GQA 4/2 heads, byte vocabulary):
 * tests/engine_test.ts, tests/engine_lookahead_test.ts, tests/engine_step_lookahead_test.ts.
 */
import { type ModelConfig, resolveModelConfig } from "../models/config.ts";

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
