/**
 * LTE Pipeline: declare LLM-efficiency experiments (Learn-To-be-Efficient) as YAML and run them, or
 * use the pieces from scripts. This is the one public entry point; it exports a deliberate API,
 * grouped by layer from the top down. Modules whose names start with `_` are private and never
 * exported from here (tests/layers_test.ts checks that and the layer order).
 *
 * To extend: add a named export under the heading of the module's layer (one `export { ... }`
 * line per module, names listed explicitly).
 *
 * @example Reuse the fine-tune stage without YAML (see examples/train_without_yaml.ts)
 * ```ts
 * import { FineTuneSchema, runFineTune } from "./mod.ts";
 * const config = FineTuneSchema.parse({ model: { family: "llama", n_layer: 2, d_model: 64, n_head: 4 },
 *   tokenizer: { type: "bytes" }, data: { corpus: { files: ["my.txt"] } }, training: { steps: 10 } });
 * ```
 * @module
 */

// ---- Pipeline: config parsing/validation, planning and running, the stage contract, the registry
// (pipeline/mod.ts is itself the pipeline's curated API).
export * from "./pipeline/mod.ts";

// ---- Stages: importing stages/mod.ts registers every stage type.
import "./stages/mod.ts";
export { type FineTuneConfig, FineTuneSchema, fineTuneStage, runFineTune } from "./stages/fine_tune.ts";
export { type EvalConfig, EvalSchema, evalStage, runEval } from "./stages/eval.ts";
export {
  measureRouting,
  type RouterTrainConfig,
  RouterTrainSchema,
  routerTrainStage,
  runRouterTrain,
} from "./stages/router_train.ts";
export { type AdaptConfig, AdaptSchema, adaptStage, runAdapt } from "./stages/adapt.ts";
export { type GroupConfig, GroupSchema, groupStage, runGroup } from "./stages/group.ts";

// ---- LTE algorithms (lte/)
export {
  balancedAssign,
  balancedKmeans,
  expertsPerLayer,
  GroupingError,
  groupLayer,
  groupLayers,
  type LayerGrouping,
  neuronFeatures,
  permuteFfn,
  randomLabels,
} from "./lte/grouping.ts";
export {
  BASELINES,
  type Budget,
  LtePolicy,
  MagnitudePolicy,
  OraclePolicy,
  type PolicyKind,
  PredictorPolicy,
  RandomRouterPolicy,
  type RoutingPolicy,
} from "./lte/baselines.ts";
export { type FlopsPerToken, flopsPerToken, rougeL, SparsityMeter, unionSparsity } from "./lte/metrics.ts";
export { DEFAULT_SEP_EPS, type RouterLosses, routerLosses, scoreHistogram, tokenMask } from "./lte/losses.ts";
export { type Actuator, calibrateOffset, SparsityController } from "./lte/controller.ts";

// ---- Inference engine (engine/) and serving (serve/)

// ---- Models and checkpoints
export {
  LTE_FORMAT,
  LTE_META_FILE,
  LteArtifactError,
  type LteMeta,
  readLteMeta,
  readRouters,
  routerBiasName,
  ROUTERS_FILE,
  routerWeightName,
  writeLteMeta,
  writeRouters,
} from "./models/lte_artifacts.ts";
export * from "./models/config.ts";
export {
  DecoderLM,
  type FfnMask,
  type FfnRouting,
  type ForwardOptions,
  type ForwardResult,
  paramSpecs,
} from "./models/decoder.ts";
export {
  activeFraction,
  createRouting,
  disposeRouting,
  FFN_MODES,
  type FfnMode,
  type FfnRoutingState,
  hardMask,
  initRouterArrays,
  readLteRouting,
  type RouterInit,
  routerParams,
  routerScores,
  routingArrays,
  RoutingError,
  setRoutersTrainable,
} from "./models/routing.ts";
export { loadLteModel, routerMasks } from "./models/lte_model.ts";
export { CheckpointError, loadCheckpoint, readCheckpointConfig, saveCheckpoint } from "./models/checkpoint.ts";
export { readSafetensors, readSafetensorsHeader, SafetensorsError, writeSafetensors } from "./models/safetensors.ts";

// ---- Text: tokenizers, corpora, datasets
export {
  type DecodeOptions,
  type EncodeOptions,
  loadTokenizer,
  type Tokenizer,
  TokenizerError,
  type TokenizerSpec,
} from "./text/tokenizer.ts";
export { type CorpusSpec, loadCorpus } from "./text/corpus.ts";
export { TokenDataset, unigramPerplexity } from "./text/dataset.ts";

// ---- Compute core: tensors, autograd, ops, optimizers, errors (tensor/mod.ts is the tensor
// layer's API), and the backend handles of the native binding.
export * from "./tensor/mod.ts";
export {
  Backend,
  backendAvailable,
  type BackendKind,
  getBackend,
  type MemStats,
  resolveDevice,
} from "./ffi/backend.ts";
export { Option } from "./ffi/symbols.ts";

// ---- Reports
export { linePlot } from "./report/svg_plot.ts";
export { type LteReport, renderLteReport } from "./report/lte_report.ts";
