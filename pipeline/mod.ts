/**
 * LTE Pipeline framework: declare LLM-efficiency experiments as YAML, validate them before any
 * compute, and run their stages with caching, crash-safe manifests and resumption.
 *
 * - {@linkcode parseConfig} / {@linkcode loadConfig}: YAML + overrides → validated {@linkcode PipelineConfig}
 *   (or one {@linkcode ConfigError} listing every problem with `file:line:col`).
 * - {@linkcode planPipeline} / {@linkcode runPipeline}: what would run, and running it.
 * - {@linkcode StageDefinition} / {@linkcode StageContext}: the contract stage types implement;
 *   register them with {@linkcode registerStage}.
 *
 * @example
 * ```ts
 * import { loadConfig, runPipeline } from "./pipeline/mod.ts";
 * import "./stages/mod.ts"; // the stage types register themselves into pipeline/registry.ts
 *
 * const config = await loadConfig("examples/quickstart.yaml", { overrides: ["seed=1"] });
 * const result = await runPipeline(config);
 * console.log(result.status);
 * ```
 *
 * @module
 */
export * from "./stage.ts";
export * from "./config.ts";
export * from "./runner.ts";
export * from "./progress.ts";
export { getStage, listStages, registerStage } from "./registry.ts";
export { canonicalJson, hashConfig } from "./hash.ts";
