/**
 * Tiny model folders for the server tests and the CPU load test: a 2-layer LLaMA-style decoder
 * (random init, seeded) with the byte tokenizer, and, for the sparse variant, an LTE `lte.json` with
 * random routers (8 experts of 16 neurons per layer, τ = 0.5, so roughly half the experts fire).
 */
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { LTE_FORMAT, type LteMeta, routerWeightName, writeLteMeta, writeRouters } from "../models/lte_artifacts.ts";
import { tokenizerFiles } from "../stages/_model_io.ts";
import { Rng } from "../tensor/mod.ts";

export interface TinyModelOptions {
  /** Write lte.json + routers. @default {true} */
  sparse?: boolean;
  seed?: number;
  /** Context size (max_seq). @default {64} */
  maxSeq?: number;
  nLayer?: number;
  dModel?: number;
  dFf?: number;
  nHead?: number;
  nKvHead?: number;
  expertSize?: number;
  /** Router threshold τ. @default {0.5} */
  tau?: number;
  /** Standard deviation of the random router weights. @default {0.5} */
  routerStd?: number;
  /** A Jinja chat template to write into tokenizer_config.json. */
  chatTemplate?: string;
}

/** Writes a model folder into `dir` and returns it. */
export function makeTinyModel(dir: string, o: TinyModelOptions = {}): string {
  const nLayer = o.nLayer ?? 2, d = o.dModel ?? 32, dff = o.dFf ?? 128, es = o.expertSize ?? 16;
  const spec = { type: "bytes" as const, eos: "<|endoftext|>" };
  const cfg = resolveModelConfig({
    family: "llama",
    vocab_size: 257,
    n_layer: nLayer,
    d_model: d,
    n_head: o.nHead ?? 4,
    n_kv_head: o.nKvHead ?? 2,
    d_ff: dff,
    max_seq: o.maxSeq ?? 64,
  });
  const model = DecoderLM.init(cfg, { device: "cpu", seed: o.seed ?? 0 });
  try {
    saveCheckpoint(dir, model, { files: tokenizerFiles(spec, Deno.cwd()), special: { eos: 256 } });
  } finally {
    model.dispose();
  }
  if (o.chatTemplate !== undefined) {
    writeFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ chat_template: o.chatTemplate, eos_token: "<|endoftext|>", bos_token: "" }),
    );
  }
  if (o.sparse ?? true) {
    const E = dff / es;
    const meta: LteMeta = {
      format: LTE_FORMAT,
      expert_size: es,
      n_layer: nLayer,
      d_ff: dff,
      d_model: d,
      experts_per_layer: E,
      tau: o.tau ?? 0.5,
      permutation: Array.from({ length: nLayer }, () => Array.from({ length: dff }, (_, i) => i)),
      grouping: { method: "random", seed: 0, mean_intra_cosine: 0, random_intra_cosine: 0 },
      routers: { file: "routers.safetensors", bias: false, init: "normal", trained_by: "test-fixture" },
      method: "lte",
      provenance: [],
    };
    writeLteMeta(dir, meta);
    const rng = new Rng((o.seed ?? 0) + 7);
    const routers = new Map<string, Float32Array>();
    for (let l = 0; l < nLayer; l++) {
      routers.set(routerWeightName(l), Float32Array.from({ length: E * d }, () => (o.routerStd ?? 0.5) * rng.normal()));
    }
    writeRouters(dir, routers, meta);
  }
  return dir;
}
