/**
 * The training loop shared by the training stages (fine-tune now; router-train and adapt add
 * their losses through `extraLoss`): AdamW with warm-up + decay, gradient accumulation and
 * clipping, periodic validation, atomic resumable checkpoints and exact resume.
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
import type { DecoderLM } from "../models/decoder.ts";
import { readSafetensors } from "../models/safetensors.ts";
import type { TokenDataset } from "../text/dataset.ts";
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

/** One logged training step. */
export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens_per_s: number;
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

function saveState(
  dir: string,
  model: DecoderLM,
  opt: AdamW,
  state: TrainerState,
  extraFiles: Record<string, string | Uint8Array>,
): void {
  const s = opt.state();
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  opt.params.forEach((p, i) => {
    tensors[`m.${p.name}`] = { dtype: "F32", shape: [...p.shape], data: s.m[i]! };
    tensors[`v.${p.name}`] = { dtype: "F32", shape: [...p.shape], data: s.v[i]! };
  });
  saveCheckpoint(dir, model, {
    files: { "trainer_state.json": JSON.stringify({ ...state, adam_step: s.step }, null, 1), ...extraFiles },
    safetensors: { "optimizer.safetensors": tensors },
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
  /** Extra loss terms (LTE efficiency / separability); gets the model, returns a scalar or null. */
  extraLoss?: (model: DecoderLM) => Tensor | null;
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
    const saved = JSON.parse(readFileSync(statePath, "utf8")) as TrainerState & { adam_step: number };
    adamStep = saved.adam_step;
    state = saved;
    if (opts.resumeKey !== undefined && state.resume_key !== opts.resumeKey) {
      throw new Error(
        `${statePath}: this state was saved by a run with a different model, data, batch or seed; ` +
          `--resume would mix two experiments (rerun without --resume to start over)`,
      );
    }
    model = loadCheckpoint(opts.stateDir, { device });
    resumedFrom = state.step;
  } else {
    if (opts.resumeKey !== undefined) state.resume_key = opts.resumeKey;
    model = opts.makeModel();
  }
  const params = model.parameters();
  const opt = new AdamW(params, {
    lr: oc.lr,
    beta1: oc.beta1,
    beta2: oc.beta2,
    eps: oc.eps,
    weightDecay: oc.weight_decay,
  });
  if (resuming) {
    const st = readSafetensors(join(opts.stateDir, "optimizer.safetensors"));
    opt.loadState({
      step: adamStep,
      m: params.map((p) => st.getF32(`m.${p.name}`)),
      v: params.map((p) => st.getF32(`v.${p.name}`)),
    });
    ctx.log(`resuming from step ${state.step} of ${tr.steps} (${opts.stateDir})`);
  }
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
    saveState(opts.stateDir, model, opt, state, opts.extraFiles ?? {});
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
          const task = crossEntropy(model.forward(ids), tg);
          const extra = opts.extraLoss?.(model);
          const loss = extra ? add(task, extra) : task;
          backward(tr.grad_accum === 1 ? loss : scale(loss, 1 / tr.grad_accum));
          // Read the value after backward is queued, so the device never idles between the two.
          return task.item();
        });
      }
      const { norm, scale: clip } = gradNorm(params, oc.grad_clip);
      opt.update({ lr, gradScale: clip });
      state.step++;
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
