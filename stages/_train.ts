/**
 * The training loop shared by the training stages (fine-tune, router-train, adapt): AdamW with
 * warm-up + decay, gradient accumulation and clipping, periodic validation, atomic resumable
 * checkpoints and exact resume.
 *
 * LTE stages choose what is optimised with `paramGroups` (model + routers in stage 1, model only
 * in stage 2, routers only on request), each group with its own learning rate (the schedule's
 * warm-up and decay scale every group alike); everything outside the groups is frozen. The
 * extra-loss hook receives the router scores of the same forward pass (`collectScores`), and
 * `hookState` / `afterStep` let a stage keep state (a sparsity controller) that is saved with the
 * checkpoint and restored on resume.
 *
 * Exact resume: the state folder holds the model, the AdamW moments and step, and the loss
 * history; data batches are a pure function of (seed, step), and nothing else is random, so a run
 * resumed at step k continues with bit-identical batches and updates (same backend).
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { StageContext } from "../pipeline/stage.ts";
import { loadCheckpoint, recoverCheckpoint, saveCheckpoint } from "../models/checkpoint.ts";
import type { DecoderLM, ForwardResult } from "../models/decoder.ts";
import { readSafetensors } from "../models/safetensors.ts";
import type { TokenDataset } from "../text/dataset.ts";
import { routerParams } from "../models/routing.ts";
import {
  AdamW,
  add,
  backward,
  countTargets,
  crossEntropy,
  type Device,
  gradNorm,
  noGrad,
  scale,
  scope,
  Tensor,
  zeroGrad,
} from "../tensor/mod.ts";
import { learningRate, type OptimizerConfig, type TrainingConfig } from "./_schemas.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { linePlot, type Series } from "../report/svg_plot.ts";

/** One logged training step (`extra`: fields a stage's `afterStep` hook added, e.g. η, L_eff). */
export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
  [extra: string]: unknown;
}

/** A set of parameters optimised together, with its own peak learning rate and weight decay. */
export interface ParamGroup {
  /** Group name (logs; e.g. "model", "routers"). */
  name: string;
  /** The tensors (each needs a unique `name`: it keys the optimizer state in checkpoints). */
  params: Tensor[];
  /** Peak learning rate; the optimizer schedule (warm-up, decay) scales it like `optimizer.lr`. */
  lr: number;
  /** Decoupled weight decay (default: `optimizer.weight_decay`). */
  weightDecay?: number;
}

/** What the extra-loss hook receives about the current micro-batch. */
export interface TrainPass {
  /** Logits and (with `collectScores`) per-layer router scores (R, N) of this very forward pass. */
  forward: ForwardResult;
  /** Host inputs / targets (B*T) of the micro-batch. */
  inputs: Int32Array;
  targets: Int32Array;
  batchSize: number;
  seqLen: number;
  /** 0-based optimizer step being computed, and the micro-batch index within it. */
  step: number;
  micro: number;
}

/** One validation measurement. */
export interface EvalRecord {
  step: number;
  val_loss: number;
  val_ppl: number;
  tokens: number;
}

/** Saved with every resumable checkpoint. */
interface TrainerState {
  version: 1;
  /** What the state was trained for (model, data, batch, seed); a resume must match it. */
  resume_key?: string;
  step: number;
  tokens_seen: number;
  elapsed_s: number;
  history: StepRecord[];
  evals: EvalRecord[];
  /** `hookState.save()` of the stage's hooks (controller state). */
  hooks?: unknown;
}

/** What `train` returns. */
export interface TrainResult {
  model: DecoderLM;
  steps: number;
  interrupted: boolean;
  resumedFrom: number | null;
  tokensSeen: number;
  elapsedS: number;
  tokensPerS: number;
  history: StepRecord[];
  evals: EvalRecord[];
}

/** Mean validation loss over up to `maxBatches` batches (token-weighted). */
export async function evaluate(
  model: DecoderLM,
  data: TokenDataset,
  opts: { batchSize: number; seqLen: number; maxBatches: number; device: Device },
): Promise<{ loss: number; ppl: number; tokens: number }> {
  let total = 0, count = 0, b = 0;
  for (const batch of data.valBatches({ batchSize: opts.batchSize, seqLen: opts.seqLen })) {
    if (b++ >= opts.maxBatches) break;
    // Let signal handlers run between batches (a long evaluation must not make Ctrl-C unresponsive).
    if (b % 8 === 0) await new Promise((r) => setTimeout(r, 0));
    const rows = batch.rows;
    const n = rows * opts.seqLen;
    const loss = scope(() =>
      noGrad(() => {
        const ids = Tensor.fromArray(batch.inputs.subarray(0, n), [rows, opts.seqLen], { device: opts.device });
        const tg = Tensor.fromArray(batch.targets.subarray(0, n), [rows, opts.seqLen], { device: opts.device });
        const c = countTargets(tg);
        return c === 0 ? 0 : crossEntropy(model.forward(ids), tg).item() * c;
      })
    );
    total += loss;
    count += batch.tokens;
  }
  const mean = count === 0 ? NaN : total / count;
  return { loss: mean, ppl: Math.exp(mean), tokens: count };
}

/** Training produced a NaN or infinite loss or gradient: the stage fails (never cached). */
function divergedError(loss: number, norm: number, step: number, oc: OptimizerConfig): Error {
  const what = Number.isFinite(loss) ? `gradient norm is ${norm}` : `loss is ${loss}`;
  return new RangeError(
    `training diverged: the ${what} at step ${step}; nothing of this step was applied or saved. ` +
      `Lower optimizer.lr (now ${oc.lr}), keep optimizer.grad_clip > 0 (now ${oc.grad_clip}), ` +
      `or check the starting weights for NaN/inf values`,
  );
}

/** One AdamW per parameter group, stepped together (one step count), state keyed by tensor name. */
class GroupedAdamW {
  readonly groups: { group: ParamGroup; opt: AdamW }[];
  readonly params: Tensor[];

  constructor(groups: ParamGroup[], oc: OptimizerConfig) {
    const names = new Set<string>();
    for (const g of groups) {
      for (const p of g.params) {
        if (!p.name) throw new Error(`parameter group "${g.name}": a tensor has no name (names key optimizer state)`);
        if (names.has(p.name)) throw new Error(`parameter ${p.name} is in two parameter groups`);
        names.add(p.name);
      }
    }
    this.groups = groups.filter((g) => g.params.length > 0).map((group) => ({
      group,
      opt: new AdamW(group.params, {
        lr: group.lr,
        beta1: oc.beta1,
        beta2: oc.beta2,
        eps: oc.eps,
        weightDecay: group.weightDecay ?? oc.weight_decay,
      }),
    }));
    this.params = this.groups.flatMap((g) => g.group.params);
  }

  /** One update; `lrOf(peak)` is the scheduled rate of a group with that peak rate. */
  update(lrOf: (peak: number) => number, gradScale: number): void {
    for (const { group, opt } of this.groups) opt.update({ lr: lrOf(group.lr), gradScale });
  }

  get step(): number {
    return this.groups[0]?.opt.step ?? 0;
  }

  tensors(): Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> {
    const out: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const { opt } of this.groups) {
      const s = opt.state();
      opt.params.forEach((p, i) => {
        out[`m.${p.name}`] = { dtype: "F32", shape: [...p.shape], data: s.m[i]! };
        out[`v.${p.name}`] = { dtype: "F32", shape: [...p.shape], data: s.v[i]! };
      });
    }
    return out;
  }

  load(step: number, file: string): void {
    const st = readSafetensors(file);
    for (const { opt } of this.groups) {
      opt.loadState({
        step,
        m: opt.params.map((p) => st.getF32(`m.${p.name}`)),
        v: opt.params.map((p) => st.getF32(`v.${p.name}`)),
      });
    }
  }

  dispose(): void {
    for (const { opt } of this.groups) opt.dispose();
  }
}

function saveState(
  dir: string,
  model: DecoderLM,
  opt: GroupedAdamW,
  state: TrainerState,
  extraFiles: Record<string, string | Uint8Array>,
  extraSafetensors: Record<string, Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }>>,
): void {
  saveCheckpoint(dir, model, {
    files: { "trainer_state.json": JSON.stringify({ ...state, adam_step: opt.step }, null, 1), ...extraFiles },
    safetensors: { "optimizer.safetensors": opt.tensors(), ...extraSafetensors },
  });
}

/**
 * Trains `model` in place (or the model restored from `stateDir` when resuming) and returns it.
 * `makeModel` is only called when there is no state to resume from.
 */
export async function train(opts: {
  ctx: StageContext;
  makeModel: () => DecoderLM;
  data: TokenDataset;
  seqLen: number;
  optimizer: OptimizerConfig;
  training: TrainingConfig;
  device: Device;
  seed: number;
  stateDir: string;
  /** Files saved into every checkpoint (e.g. the tokenizer spec). */
  extraFiles?: Record<string, string | Uint8Array>;
  /**
   * Extra loss terms (LTE efficiency / separability): gets the model and the current pass (its
   * router scores from the same forward), returns a scalar added to the task loss, or null.
   */
  extraLoss?: (model: DecoderLM, pass: TrainPass) => Tensor | null;
  /** Forward with `collectScores: true` (the model needs routers) and hand the scores to `extraLoss`. */
  collectScores?: boolean;
  /**
   * Parameter groups to optimise (default: every model parameter at `optimizer.lr`). Model
   * parameters and routers in no group are frozen (requiresGrad false) for the run.
   */
  paramGroups?: (model: DecoderLM) => ParamGroup[];
  /** Called after each optimizer update (step = steps done); the fields it returns join the step record. */
  afterStep?: (step: number, model: DecoderLM) => Record<string, unknown> | void;
  /** State of the stage's hooks (a controller), saved in trainer_state.json and restored on resume. */
  hookState?: { save(): unknown; load(saved: unknown): void };
  /** Rebuilds the model from a saved state folder (default `loadCheckpoint`; LTE stages reattach routers). */
  loadModel?: (dir: string) => DecoderLM;
  /** Extra safetensors files written into every state checkpoint (e.g. the routers). */
  stateSafetensors?: (
    model: DecoderLM,
  ) => Record<string, Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }>>;
  /**
   * Identifies what the run trains (model, init, data, batch, seed). Saved with the state; resuming
   * a state saved under another key is refused instead of silently mixing two experiments.
   */
  resumeKey?: string;
}): Promise<TrainResult> {
  const { ctx, data, seqLen, training: tr, optimizer: oc, device } = opts;
  let model: DecoderLM;
  let state: TrainerState = { version: 1, step: 0, tokens_seen: 0, elapsed_s: 0, history: [], evals: [] };
  let resumedFrom: number | null = null;
  const statePath = join(opts.stateDir, "trainer_state.json");
  if (ctx.resume && recoverCheckpoint(opts.stateDir)) {
    ctx.log(`recovered ${opts.stateDir} from a checkpoint save that was interrupted`);
  }
  const resuming = ctx.resume && existsSync(statePath);
  if (ctx.resume && !resuming) ctx.log(`--resume: no saved state in ${opts.stateDir}; starting from step 0`);
  let adamStep = 0;
  if (resuming) {
    let saved: TrainerState & { adam_step: number };
    try {
      saved = JSON.parse(readFileSync(statePath, "utf8"));
      if (saved === null || typeof saved !== "object" || !Number.isInteger(saved.step)) {
        throw new Error("not a trainer state (no integer step)");
      }
    } catch (e) {
      throw new Error(
        `${statePath}: cannot read the saved training state: ${(e as Error).message} ` +
          `(rerun with --force to discard it and start over)`,
      );
    }
    adamStep = saved.adam_step;
    state = saved;
    if (opts.resumeKey !== undefined && state.resume_key !== opts.resumeKey) {
      throw new Error(
        `${statePath}: this state was saved by a run with a different model, data, batch or seed; ` +
          `--resume would mix two experiments (rerun without --resume to start over)`,
      );
    }
    model = opts.loadModel ? opts.loadModel(opts.stateDir) : loadCheckpoint(opts.stateDir, { device });
    if (opts.hookState && state.hooks !== undefined) opts.hookState.load(state.hooks);
    resumedFrom = state.step;
  } else {
    if (opts.resumeKey !== undefined) state.resume_key = opts.resumeKey;
    model = opts.makeModel();
  }
  let opt: GroupedAdamW;
  try {
    const groups = opts.paramGroups
      ? opts.paramGroups(model)
      : [{ name: "model", params: model.parameters(), lr: oc.lr }];
    // Everything outside the groups is frozen for this run (no gradient work, no update).
    const optimised = new Set(groups.flatMap((g) => g.params));
    const all = [...model.parameters(), ...(model.routing ? routerParams(model.routing) : [])];
    for (const p of all) p.requiresGrad = optimised.has(p);
    opt = new GroupedAdamW(groups, oc);
    if (opt.params.length === 0) throw new Error("nothing to train: every parameter group is empty");
    if (resuming) {
      opt.load(adamStep, join(opts.stateDir, "optimizer.safetensors"));
      ctx.log(`resuming from step ${state.step} of ${tr.steps} (${opts.stateDir})`);
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  const params = opt.params;
  if (device === "cuda") params[0]!.backend.setAllowTf32(tr.tf32);

  const batches = data.batches({
    batchSize: tr.batch_size,
    seqLen,
    seed: opts.seed,
    startStep: state.step * tr.grad_accum,
  });
  const bar = ctx.progress({ total: tr.steps, label: "train", unit: "step" });
  const evalNow = async (step: number, maxBatches: number) => {
    const r = await evaluate(model, data, { batchSize: tr.batch_size, seqLen, maxBatches, device });
    const rec: EvalRecord = { step, val_loss: r.loss, val_ppl: r.ppl, tokens: r.tokens };
    ctx.metric({ kind: "eval", ...rec });
    return rec;
  };
  const save = () => {
    if (opts.hookState) state.hooks = opts.hookState.save();
    saveState(opts.stateDir, model, opt, state, opts.extraFiles ?? {}, opts.stateSafetensors?.(model) ?? {});
  };

  let interrupted = false;
  // Throughput over the last 20 steps (a sliding window, so evals and checkpoints age out).
  const recent: { tokens: number; seconds: number }[] = [];
  // The loop is synchronous compute; yield to the event loop now and then so that SIGINT/SIGTERM
  // handlers (which abort ctx.signal) and a server's requests get to run.
  let lastYield = performance.now();
  const yieldToEventLoop = async () => {
    if (performance.now() - lastYield < 100) return;
    await new Promise((r) => setTimeout(r, 0));
    lastYield = performance.now();
  };
  try {
    while (state.step < tr.steps) {
      await yieldToEventLoop();
      if (ctx.signal.aborted) {
        interrupted = true;
        break;
      }
      const t0 = performance.now();
      const lr = learningRate(oc, state.step, tr.steps);
      zeroGrad(params);
      let lossSum = 0, tokens = 0;
      for (let micro = 0; micro < tr.grad_accum; micro++) {
        const batch = batches.next().value!;
        tokens += batch.tokens;
        lossSum += scope(() => {
          const ids = Tensor.fromArray(batch.inputs, [tr.batch_size, seqLen], { device });
          const tg = Tensor.fromArray(batch.targets, [tr.batch_size, seqLen], { device });
          const forward = opts.collectScores
            ? model.forward(ids, { collectScores: true })
            : { logits: model.forward(ids), scores: [] };
          const task = crossEntropy(forward.logits, tg);
          const extra = opts.extraLoss?.(model, {
            forward,
            inputs: batch.inputs,
            targets: batch.targets,
            batchSize: tr.batch_size,
            seqLen,
            step: state.step,
            micro,
          });
          const loss = extra ? add(task, extra) : task;
          backward(tr.grad_accum === 1 ? loss : scale(loss, 1 / tr.grad_accum));
          // Read the value after backward is queued, so the device never idles between the two.
          return task.item();
        });
      }
      const { norm, scale: clip } = gradNorm(params, oc.grad_clip);
      // A NaN/inf loss or gradient would poison the weights and be cached as a result: stop here.
      if (!Number.isFinite(lossSum) || !Number.isFinite(norm)) throw divergedError(lossSum, norm, state.step + 1, oc);
      // Each group follows the schedule scaled to its own peak rate (warm-up and decay alike).
      const stepAt = state.step;
      opt.update(
        (peak) =>
          peak === oc.lr ? lr : learningRate({ ...oc, lr: peak, min_lr: oc.min_lr * (peak / oc.lr) }, stepAt, tr.steps),
        clip,
      );
      state.step++;
      const hookFields = opts.afterStep?.(state.step, model) ?? {};
      state.tokens_seen += tokens;
      state.elapsed_s += (performance.now() - t0) / 1000;
      recent.push({ tokens, seconds: (performance.now() - t0) / 1000 });
      if (recent.length > 20) recent.shift();
      const rt = recent.reduce((a, r) => a + r.seconds, 0);
      const rec: StepRecord = {
        step: state.step,
        loss: lossSum / tr.grad_accum,
        lr,
        grad_norm: norm,
        tokens_per_s: rt > 0 ? recent.reduce((a, r) => a + r.tokens, 0) / rt : 0,
        ...hookFields,
      };
      state.history.push(rec);
      ctx.metric({ kind: "train", ...rec });
      bar.update(state.step, {
        loss: rec.loss.toFixed(4),
        lr: rec.lr.toExponential(2),
        "tok/s": Math.round(rec.tokens_per_s),
      });
      if (tr.eval_every > 0 && state.step % tr.eval_every === 0 && state.step < tr.steps) {
        const e = await evalNow(state.step, tr.eval_batches);
        state.evals.push(e);
        ctx.log(`step ${state.step}: val loss ${e.val_loss.toFixed(4)}, ppl ${e.val_ppl.toFixed(2)}`);
      }
      if (tr.checkpoint_every > 0 && state.step % tr.checkpoint_every === 0 && state.step < tr.steps) save();
    }
    bar.done();
    if (interrupted) {
      save();
      ctx.log(`interrupted at step ${state.step}; state saved to ${opts.stateDir} (continue with --resume)`);
    } else if (state.evals.at(-1)?.step !== state.step || resumedFrom !== state.step) {
      // (A resumed run whose state already holds the final evaluation does not repeat it.)
      const e = await evalNow(state.step, tr.final_eval_batches);
      state.evals.push(e);
      save();
    }
  } catch (e) {
    opt.dispose();
    model.dispose();
    throw e;
  }
  opt.dispose();
  return {
    model,
    steps: state.step,
    interrupted,
    resumedFrom,
    tokensSeen: state.tokens_seen,
    elapsedS: state.elapsed_s,
    tokensPerS: state.elapsed_s > 0 ? state.tokens_seen / state.elapsed_s : 0,
    history: state.history,
    evals: state.evals,
  };
}

/**
 * Writes `<dir>/loss.svg`: train loss and validation loss vs step (the plot every training stage
 * writes), plus any extra series (e.g. a baseline line).
 */
export async function writeLossPlot(
  dir: string,
  title: string,
  result: Pick<TrainResult, "history" | "evals">,
  opts: { validationName?: string; extra?: Series[] } = {},
): Promise<void> {
  await writeFileAtomic(
    join(dir, "loss.svg"),
    linePlot({
      title,
      xLabel: "step",
      yLabel: "cross-entropy (nats/token)",
      series: [
        { name: "train", points: result.history.map((h) => [h.step, h.loss]) },
        {
          name: opts.validationName ?? "validation",
          points: result.evals.map((e) => [e.step, e.val_loss]),
          markers: "with-line",
        },
        ...(opts.extra ?? []),
      ],
    }),
  );
}
