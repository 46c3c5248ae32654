/**
 * LTE Pipeline: declare LLM-efficiency experiments (Learn-To-be-Efficient) as YAML and run them, or
 * use the pieces from scripts. This is the one public entry point.
 *
 * @example Reuse the fine-tune stage without YAML (see examples/train_without_yaml.ts)
 * ```ts
 * import { FineTuneSchema, runFineTune } from "./mod.ts";
 * const config = FineTuneSchema.parse({ model: { family: "llama", n_layer: 2, d_model: 64, n_head: 4 },
 *   tokenizer: { type: "bytes" }, data: { corpus: { files: ["my.txt"] } }, training: { steps: 10 } });
 * ```
 * @module
 */

// Pipeline: config parsing/validation, runner, stage contract.
export * from "./pipeline/mod.ts";
// Stage types (importing registers them).
export { getStage, listStages, registerStage } from "./stages/mod.ts";
export { type FineTuneConfig, FineTuneSchema, fineTuneStage, runFineTune } from "./stages/fine_tune.ts";
export { evaluate, train, type TrainResult } from "./stages/_train.ts";
// Models and checkpoints.
export * from "./models/config.ts";
export { DecoderLM, type FfnRouting, paramSpecs } from "./models/decoder.ts";
export { CheckpointError, loadCheckpoint, readCheckpointConfig, saveCheckpoint } from "./models/checkpoint.ts";
export { readSafetensors, readSafetensorsHeader, SafetensorsError, writeSafetensors } from "./models/safetensors.ts";
// Text: tokenizers, corpora, datasets.
export { loadTokenizer, type Tokenizer, TokenizerError, type TokenizerSpec } from "./text/tokenizer.ts";
export { type CorpusSpec, loadCorpus } from "./text/corpus.ts";
export { TokenDataset, unigramPerplexity } from "./text/dataset.ts";
// Compute core.
export * from "./tensor/mod.ts";
export * from "./ffi/mod.ts";
// Reports.
export { linePlot } from "./report/svg_plot.ts";
