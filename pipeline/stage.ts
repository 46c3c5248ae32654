/**
 * The stage contract: what a stage type (fine-tune, group, router-train, adapt, eval, serve, ...)
 * implements and what the runner hands it.
 *
 * A stage type is a plain object registered once with `registerStage()` from
 * `pipeline/registry.ts` (re-exported by `stages/mod.ts` and `stages/registry.ts`). The runner validates the stage's YAML keys with {@linkcode StageDefinition.schema}
 * before anything runs, orders stages by {@linkcode StageDefinition.inputs}, creates an artifact
 * folder, and calls {@linkcode StageDefinition.run} with a {@linkcode StageContext}.
 *
 * @example A minimal stage
 * ```ts
 * import { z } from "zod";
 * import { registerStage } from "../pipeline/registry.ts";
 * import { writeJsonAtomic, type StageDefinition } from "../pipeline/stage.ts";
 *
 * const Config = z.strictObject({
 *   from: z.string().describe("stage whose model to evaluate"),
 *   batches: z.number().int().positive().default(10),
 * });
 *
 * export const evalStage: StageDefinition<z.infer<typeof Config>> = {
 *   type: "eval",
 *   description: "Perplexity and FLOPs of a trained model",
 *   schema: Config,
 *   inputs: (c) => [c.from],
 *   async run(c, ctx) {
 *     const modelDir = ctx.inputs[c.from]!.dir;
 *     const bar = ctx.progress({ total: c.batches, label: "eval", unit: "batch" });
 *     let done = 0;
 *     for (; done < c.batches && !ctx.signal.aborted; done++) {
 *       // ... evaluate one batch from modelDir ...
 *       bar.update(done + 1, { ppl: 12.3 });
 *     }
 *     bar.done();
 *     if (done < c.batches) return { interrupted: true, batches: done }; // Ctrl-C: status interrupted
 *     await writeJsonAtomic(`${ctx.dir}/results.json`, { ppl: 12.3 });
 *     return { ppl: 12.3 }; // status complete
 *   },
 * };
 * registerStage(evalStage);
 * ```
 *
 * @module
 */
import type { z } from "zod";
import type { Progress, ProgressOptions } from "./progress.ts";

export { writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
export { canonicalJson, hashConfig } from "./hash.ts";
export { yieldToSignals } from "./signals.ts";
export type { Progress, ProgressOptions } from "./progress.ts";

/** Keys of a stage item that belong to the pipeline, not to the stage type's schema. */
export const RESERVED_STAGE_KEYS: readonly string[] = ["name", "type", "sweep"];

/** Compute device requested at the top of the YAML. */
export type DeviceSetting = "cpu" | "cuda" | "auto";

/** Top-level settings of a pipeline, resolved (defaults applied, overrides applied). */
export interface PipelineSettings {
  /** Pipeline name, `[a-z0-9_-]+`. */
  name: string;
  /** Free text from the YAML, if any. */
  description?: string;
  /** Seed every stage should derive its randomness from. @default {0} */
  seed: number;
  /** Requested backend. Stages resolve `auto` themselves (CUDA when the library has it). @default {"cpu"} */
  device: DeviceSetting;
  /** Run directory, relative to the working directory unless absolute. @default {"runs/<name>"} */
  run_dir: string;
}

/** What a finished upstream stage offers to the stages that consume it. */
export interface StageOutput {
  /** The upstream stage's artifact folder (`<run_dir>/stages/<name>`). */
  dir: string;
  /** The summary its `run()` returned (also in its `stage.json`). */
  summary: Record<string, unknown>;
  /** The upstream stage's cache hash. */
  hash: string;
  /**
   * For a variant of a swept stage (`sweep:`): the values it was made with, by shortened key
   * (e.g. `{ lr: 0.001, seed: 1 }`). Absent for a stage that is not swept.
   */
  variant?: Record<string, unknown>;
  /** For a variant of a swept stage: the unexpanded stage name (e.g. `train` for `train@lr=0.001`). */
  base?: string;
}

/**
 * A stage type. Implementations are plain objects; there is no base class to extend.
 *
 * @typeParam C The stage's resolved config, i.e. `z.infer<typeof schema>`.
 */
export interface StageDefinition<C = any> {
  /** Type name used in the YAML `type:` key, `[a-z0-9-]+`, e.g. `"fine-tune"`. */
  type: string;
  /** One line shown by `deno task pipeline stages`. */
  description: string;
  /**
   * Schema of the stage's own keys (everything but `name` and `type`), with defaults. Use
   * `z.strictObject`; unknown keys are reported as errors at every nesting level anyway, with a
   * did-you-mean against the keys the schema declares.
   */
  schema: z.ZodType<C>;
  /**
   * Names of the upstream stages this config consumes (e.g. `[config.from]`). They must appear
   * earlier in the file; their outputs arrive in {@linkcode StageContext.inputs}, and their cache
   * hashes are part of this stage's hash. Called on the validated config.
   */
  inputs(config: C): string[];
  /**
   * Do the work. Write artifacts under `ctx.dir` (prefer {@linkcode writeFileAtomic}), check
   * `ctx.signal.aborted` at step boundaries, and return a JSON-serialisable summary, which the
   * runner stores in the stage's `stage.json`.
   *
   * The stage, not the signal, decides the status it ends with:
   * - returning a summary marks the stage `complete`, even if the signal was aborted meanwhile (the
   *   work finished, e.g. the last step was already done); the pipeline then stops before the next
   *   stage;
   * - returning a summary with `interrupted: true` marks it `interrupted`: the stage stopped early
   *   because `ctx.signal` aborted, after saving what `--resume` needs to continue (a checkpoint
   *   in `ctx.dir`);
   * - throwing marks it `interrupted` when `ctx.signal` is aborted at that point (e.g. an abort
   *   error), otherwise `failed`; either way the pipeline stops.
   */
  run(config: C, ctx: StageContext): Promise<Record<string, unknown>>;
  /**
   * Optional checks of things the schema cannot see (files a stage reads, checkpoint folders), run
   * for every selected stage before any stage runs, so a missing file fails the pipeline in
   * seconds rather than after hours of earlier stages. Return one message per problem, each
   * starting with the key path (e.g. `data.tokens_file: file not found: /x/y.tok`).
   */
  preflight?(config: C, env: PreflightEnv): string[];
  /**
   * Optional identity of the files the stage reads that the YAML only names (data files, a starting
   * checkpoint, tokenizer files): a string that changes when they change, e.g. their sizes and
   * modification times, or content hashes. It is part of the stage's cache hash, so editing a data
   * file re-runs the stage (and its consumers) although the config did not change. Called whenever
   * the pipeline is planned (every `validate` and run), so keep it cheap; do not include files the
   * stage writes itself. It should not throw (a missing file is preflight's to report); if it does,
   * the error message is hashed instead.
   */
  fingerprint?(config: C, env: { configDir: string }): string;
  /**
   * Optional version of the stage's code, part of its cache hash: bump it when a change to `run()`
   * changes its results, so cached results made by the old code re-run. Absent means no version.
   */
  version?: string;
  /**
   * `false` for a stage whose result is never a cacheable product (a server that runs until it is
   * stopped): it is never recorded `complete` (a returned summary is recorded as `ended`), never
   * skipped as cached, and never asks for `--resume`. @default {true}
   */
  cache?: false;
  /**
   * `true` for a stage that consumes every variant of a swept input at once (an evaluation report):
   * it does not expand along with its swept inputs; `ctx.inputs` holds each variant under its full
   * name (`train@lr=0.001`), each {@linkcode StageOutput} with `variant` and `base`.
   */
  gathers?: true;
}

/** What {@linkcode StageDefinition.preflight} gets besides the config. */
export interface PreflightEnv {
  /** Absolute folder of the YAML file (relative paths in the config resolve against it). */
  configDir: string;
  /** The pipeline's requested device (`auto` unresolved), e.g. to check a model fits in memory. */
  device: DeviceSetting;
}

/** What the runner hands to {@linkcode StageDefinition.run}. */
export interface StageContext {
  /** The stage's name in the YAML (`stages[i].name`). */
  name: string;
  /** The stage's type. */
  type: string;
  /** The pipeline's run directory. */
  runDir: string;
  /** This stage's artifact folder, `<runDir>/stages/<name>`. It exists when `run()` is called. */
  dir: string;
  /**
   * Absolute folder of the YAML file (the working directory for configs parsed from a string), for
   * stages that resolve relative paths against the config rather than the working directory.
   */
  configDir: string;
  /**
   * This stage's cache hash (type, resolved config, upstream hashes, seed, device, and the
   * definition's `version` and `fingerprint()` when it has them).
   */
  hash: string;
  /** Outputs of the stages named by `inputs(config)`, keyed by stage name. */
  inputs: Record<string, StageOutput>;
  /** Top-level resolved settings (seed, device, ...). */
  pipeline: PipelineSettings;
  /**
   * True under `--resume` when the previous attempt of this very stage config (same hash, same
   * upstream results) did not complete: `dir` still holds its files, so continue from the stage's
   * own checkpoint if there is one. When false, `dir` is empty (an older attempt was moved aside).
   */
  resume: boolean;
  /** Aborted on SIGINT/SIGTERM: stop at the next step boundary, save, and return. */
  signal: AbortSignal;
  /** Print a line (prefixed with the stage name) and append it to the run's `log.txt`. */
  log(msg: string): void;
  /**
   * Append one JSON line to the run's `metrics.jsonl`. The runner adds `stage`, `time`, `attempt`
   * (the attempt's `started` time in `stage.json`) and `hash` (short cache hash), after the record's
   * own keys, so a record cannot override them.
   */
  metric(record: Record<string, unknown>): void;
  /** A progress bar on a terminal, periodic plain lines otherwise. */
  progress(opts: ProgressOptions): Progress;
}
