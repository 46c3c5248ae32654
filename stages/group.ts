/**
 * `group`: expert grouping (LTE spec §2). Splits each FFN layer of an upstream stage's model into
 * experts of `expert_size` neurons (balanced k-means on the L2-normalised gate rows / c_fc
 * columns; or random; or MoEfication-style co-activation on calibration data), permutes the FFN
 * weights once so each expert is a contiguous block (dense logits unchanged), and writes the
 * result as a plain HF model folder plus `lte.json`.
 *
 * Artifacts in the stage folder:
 *   model/        config.json, model.safetensors (FFN permuted, dtypes kept), tokenizer files, lte.json
 *   results.json  the summary: mean intra-expert cosine per layer and overall vs random grouping
 *
 * @example
 * ```yaml
 * - name: group
 *   type: group
 *   from: train          # a stage that writes model/ (fine-tune, adapt, group)
 *   expert_size: 32      # must divide d_ff
 *   method: kmeans       # kmeans | random | coactivation
 * ```
 * @module
 */
import { z } from "zod";
import {
  closeSync,
  copyFileSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { createHash } from "node:crypto";
import { loadCheckpoint, readCheckpointConfig } from "../models/checkpoint.ts";
import type { ModelConfig } from "../models/config.ts";
import {
  LTE_FORMAT,
  LTE_META_FILE,
  type LteMeta,
  readLteMeta,
  ROUTERS_FILE,
  writeLteMeta,
} from "../models/lte_artifacts.ts";
import { buildSafetensorsHeader, readSafetensors, type SafetensorsFile } from "../models/safetensors.ts";
import {
  type Assigner,
  type ElemArray,
  expertsPerLayer,
  ffnLayout,
  groupLayers,
  inlineAssigner,
  type LayerGrouping,
  neuronFeatures,
  permuteFfnTensor,
  WorkerAssigner,
} from "../lte/grouping.ts";
import { fsyncDir, writeAll } from "../io/atomic.ts";
import { type StageContext, type StageDefinition, writeJsonAtomic } from "../pipeline/stage.ts";
import { registerStage } from "../pipeline/registry.ts";
import { resolveCorpusFiles } from "../text/corpus.ts";
import { noGrad, resolveDevice, scope, Tensor } from "../tensor/mod.ts";
import { openTokenData } from "./_data.ts";
import { loadTokenizerFrom, TOKENIZER_SPEC_FILE } from "./_model_io.ts";
import { DataSchema } from "./_schemas.ts";

/** The group stage's config. */
export const GroupSchema = z.strictObject({
  /** Upstream stage whose `model/` to group (fine-tune, adapt, another group). */
  from: z.string().min(1),
  /** Neurons per expert; must divide the model's d_ff. */
  expert_size: z.number().int().positive().default(32),
  method: z.enum(["kmeans", "random", "coactivation"]).default("kmeans"),
  /** Seed of k-means++ and of the random grouping; default: the pipeline seed. */
  seed: z.number().int().nonnegative().optional(),
  /** Maximum assignment <-> centroid-update iterations per layer (stops earlier on convergence). */
  iterations: z.number().int().positive().max(1000).default(25),
  /** Hard-routing threshold τ recorded in lte.json for router-train / adapt / inference. */
  tau: z.number().gt(0).lt(1).default(0.5),
  /** Host threads for the assignment step (0: one per core but one, at most the layer count). */
  threads: z.number().int().nonnegative().default(0),
  /** coactivation only: calibration text; activations of `batches` x `batch_size` sequences. */
  calibration: z.strictObject({
    data: DataSchema,
    batches: z.number().int().positive().default(4),
    batch_size: z.number().int().positive().default(8),
  }).optional(),
}).superRefine((c, ctx) => {
  if (c.method === "coactivation" && !c.calibration) {
    ctx.addIssue({
      code: "custom",
      path: ["calibration"],
      message: "method coactivation needs calibration data (calibration.data)",
    });
  }
  if (c.method !== "coactivation" && c.calibration) {
    ctx.addIssue({
      code: "custom",
      path: ["calibration"],
      message: `only method coactivation uses calibration data (method is ${c.method})`,
    });
  }
});

/** Resolved group config. */
export type GroupConfig = z.infer<typeof GroupSchema>;

/** Thrown for bad input found before any compute; names the key. */
export class GroupStageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GroupStageError";
  }
}

/** Files of an upstream model folder that the grouped folder does not copy verbatim. */
const NOT_COPIED = new Set(["model.safetensors", LTE_META_FILE, ROUTERS_FILE]);

/** The upstream model folder, checked: a clear error if the `from` stage produced no model. */
export function upstreamModelDir(c: GroupConfig, ctx: Pick<StageContext, "inputs" | "name">): string {
  const up = ctx.inputs[c.from];
  if (!up) throw new GroupStageError(`from: stage "${c.from}" is not an input of stage "${ctx.name}"`);
  const dir = join(up.dir, "model");
  for (const f of ["config.json", "model.safetensors"]) {
    if (!existsSync(join(dir, f))) {
      throw new GroupStageError(
        `from: stage "${c.from}" produced no model folder (${join(dir, f)} not found); ` +
          `group needs a stage that writes model/ (fine-tune, adapt, group)`,
      );
    }
  }
  return dir;
}

/** Activation magnitudes |h| per layer on calibration batches, as neuron profiles (d_ff x tokens). */
function activationProfiles(
  c: GroupConfig,
  ctx: StageContext,
  src: string,
  cfg: ModelConfig,
  device: "cpu" | "cuda",
): { profiles: Float32Array[]; tokens: number } {
  const cal = c.calibration!;
  const { tokenizer } = loadTokenizerFrom(src);
  if (cal.data.seq_len > cfg.max_seq) {
    throw new GroupStageError(
      `calibration.data.seq_len ${cal.data.seq_len} exceeds the model's max_seq ${cfg.max_seq}`,
    );
  }
  const data = openTokenData(cal.data, {
    baseDir: ctx.configDir,
    tokenizer,
    seed: ctx.pipeline.seed,
    log: (m) => ctx.log(m),
  });
  const B = cal.batch_size, T = cal.data.seq_len, R = B * T, F = cfg.d_ff;
  const tokens = cal.batches * R;
  const profiles = Array.from({ length: cfg.n_layer }, () => new Float32Array(F * tokens));
  const model = loadCheckpoint(src, { device });
  try {
    let offset = 0;
    model.ffnRouting = (layer, _x, hidden) => {
      const h = hidden.toArray() as Float32Array; // (R, F)
      const p = profiles[layer]!;
      for (let r = 0; r < R; r++) {
        for (let f = 0; f < F; f++) p[f * tokens + offset + r] = Math.abs(h[r * F + f]!);
      }
      return hidden;
    };
    const bar = ctx.progress({ total: cal.batches, label: `${ctx.name}: calibration`, unit: "batch" });
    let b = 0;
    for (const batch of data.batches({ batchSize: B, seqLen: T, seed: ctx.pipeline.seed, steps: cal.batches })) {
      scope(() => noGrad(() => model.forward(Tensor.fromArray(batch.inputs, [B, T], { device }))));
      offset += R;
      bar.update(++b);
    }
    bar.done();
  } finally {
    model.ffnRouting = null;
    model.dispose();
  }
  return { profiles, tokens };
}

/** Dtypes copied byte for byte; any other is converted to F32. */
const KEPT_DTYPES = new Set(["F32", "F16", "BF16", "I32", "I64", "U8"]);

/**
 * Writes `st`'s tensors to `path` with every FFN tensor permuted (elements moved bit-exactly in
 * their stored dtype), streaming one tensor at a time: the header first (laid out as
 * `writeSafetensors` lays it out), then each tensor's bytes, so a 7B model never sits in memory.
 */
function writePermuted(
  path: string,
  st: SafetensorsFile,
  cfg: ModelConfig,
  perms: Int32Array[],
  resolveName: (name: string) => string,
): void {
  const ffn = new Map<string, { layer: number; hf: string }>();
  for (let l = 0; l < cfg.n_layer; l++) {
    for (const hf of ffnLayout(cfg, l).keys()) ffn.set(resolveName(hf), { layer: l, hf });
  }
  const infos: Record<string, { dtype: string; shape: number[]; byteLength: number }> = {};
  for (const name of st.names()) {
    const info = st.info(name);
    const kept = KEPT_DTYPES.has(info.dtype);
    if (ffn.has(name) && !["F32", "F16", "BF16"].includes(info.dtype)) {
      throw new GroupStageError(
        `${st.path}: tensor ${name} has dtype ${info.dtype}; FFN weights must be F32, F16 or BF16`,
      );
    }
    const numel = info.shape.reduce((x, y) => x * y, 1);
    infos[name] = {
      dtype: kept ? info.dtype : "F32",
      shape: info.shape,
      byteLength: kept ? info.byteLength : numel * 4,
    };
  }
  const { bytes: header, order } = buildSafetensorsHeader(infos, { ...st.metadata, format: "pt", lte_stage: "group" });
  const fd = openSync(path, "wx");
  try {
    writeAll(fd, header);
    for (const name of order) {
      const info = st.info(name);
      let out: ArrayBufferView;
      const f = ffn.get(name);
      if (f) {
        const raw = st.getRaw(name);
        const elems: ElemArray = info.dtype === "F32"
          ? new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4)
          : new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
        out = permuteFfnTensor(cfg, f.layer, f.hf, perms[f.layer]!, elems);
      } else out = KEPT_DTYPES.has(info.dtype) ? st.getRaw(name) : st.getF32(name);
      writeAll(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Runs the stage (also usable from scripts). */
export async function runGroup(c: GroupConfig, ctx: StageContext): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  // Bad input first, before any compute.
  const src = upstreamModelDir(c, ctx);
  const cfg = readCheckpointConfig(src);
  const experts = expertsPerLayer(cfg.d_ff, c.expert_size, "expert_size");
  const prev = readLteMeta(src, cfg);
  if (prev?.routers) {
    throw new GroupStageError(
      `from: the model of stage "${c.from}" already has routers (${join(src, LTE_META_FILE)}); ` +
        `group a model before router-train, not after`,
    );
  }
  if (prev && prev.expert_size !== c.expert_size) {
    ctx.log(`note: regrouping a model grouped with expert_size ${prev.expert_size} into ${c.expert_size}`);
  }
  const device = resolveDevice(ctx.pipeline.device);
  const seed = c.seed ?? ctx.pipeline.seed;
  const st = readSafetensors(join(src, "model.safetensors"));
  const resolveName = (name: string) => {
    if (st.has(name)) return name;
    const short = name.replace(/^transformer\./, "");
    if (st.has(short)) return short;
    throw new GroupStageError(`${st.path}: missing tensor ${name}`);
  };
  ctx.log(
    `${cfg.family}: ${cfg.n_layer} layers x d_ff ${cfg.d_ff} -> ${experts} experts of ${c.expert_size} ` +
      `by ${c.method} on ${device} (seed ${seed})`,
  );

  // Features per layer: neuron input vectors, or activation profiles on calibration data.
  let calib: { profiles: Float32Array[]; tokens: number } | null = null;
  if (c.method === "coactivation") calib = activationProfiles(c, ctx, src, cfg, device);
  const features = (l: number) => {
    const weights = neuronFeatures(cfg, l, (n) => st.getF32(resolveName(n)));
    if (calib) {
      const data = calib.profiles[l]!;
      calib.profiles[l] = new Float32Array(0); // handed over
      // Grouped by activation profiles; the cosine is reported on the weights, as for kmeans.
      return { data, n: cfg.d_ff, d: calib.tokens, report: { data: weights, d: cfg.d_model } };
    }
    return { data: weights, n: cfg.d_ff, d: cfg.d_model };
  };

  const threads = c.threads > 0
    ? c.threads
    : Math.min(cfg.n_layer, Math.max(1, (navigator.hardwareConcurrency ?? 2) - 1));
  const assigner: Assigner = threads > 1 && c.method !== "random" ? new WorkerAssigner(threads) : inlineAssigner();
  const bar = ctx.progress({ total: cfg.n_layer, label: ctx.name, unit: "layer" });
  let done = 0;
  let layers: LayerGrouping[];
  try {
    layers = await groupLayers(cfg.n_layer, features, {
      method: c.method,
      expertSize: c.expert_size,
      seed,
      iterations: c.iterations,
      device,
      assigner,
      concurrency: assigner.threads,
      signal: ctx.signal,
      onLayer: (r) => {
        bar.update(++done, { cos: Number(r.intraCosine.toFixed(3)), random: Number(r.randomIntraCosine.toFixed(3)) });
        ctx.metric({
          layer: r.layer,
          intra_cosine: r.intraCosine,
          random_intra_cosine: r.randomIntraCosine,
          inertia: r.inertia,
          iterations: r.iterations,
          ms: r.ms,
        });
      },
    });
  } finally {
    assigner.close();
    bar.done();
  }
  const groupMs = performance.now() - t0;

  // Permutations compose with an upstream grouping: new i = upstream neuron perm[i].
  const permutation = layers.map((r, l) => {
    const p = Array.from(r.permutation);
    return prev ? p.map((i) => prev.permutation[l]![i]!) : p;
  });
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const intra = layers.map((r) => r.intraCosine), rnd = layers.map((r) => r.randomIntraCosine);
  const meta: LteMeta = {
    format: LTE_FORMAT,
    expert_size: c.expert_size,
    n_layer: cfg.n_layer,
    d_ff: cfg.d_ff,
    d_model: cfg.d_model,
    experts_per_layer: experts,
    tau: c.tau,
    permutation,
    grouping: {
      method: c.method,
      seed,
      mean_intra_cosine: mean(intra),
      random_intra_cosine: mean(rnd),
      per_layer_intra_cosine: intra,
      per_layer_random_intra_cosine: rnd,
      cosine_of: "L2-normalised neuron input weights (LLaMA gate_proj rows, GPT-2 c_fc columns)",
      iterations: c.iterations,
      ...(calib ? { calibration_tokens: calib.tokens } : {}),
    },
    routers: null,
    method: "lte",
    provenance: [
      ...(prev?.provenance ?? []),
      { stage: ctx.name, type: "group", hash: ctx.hash, time: new Date().toISOString() },
    ],
  };

  // Write the folder under a temporary name, then move it into place.
  const out = join(ctx.dir, "model"), tmp = join(ctx.dir, `.model.tmp-${Deno.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    for (const f of readdirSync(src)) {
      if (NOT_COPIED.has(f) || f.startsWith(".") || !statSync(join(src, f)).isFile()) continue;
      copyFileSync(join(src, f), join(tmp, f));
    }
    writePermuted(join(tmp, "model.safetensors"), st, cfg, layers.map((r) => r.permutation), resolveName);
    writeLteMeta(tmp, meta, cfg);
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
    fsyncDir(ctx.dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }

  const summary = {
    device,
    family: cfg.family,
    method: c.method,
    seed,
    expert_size: c.expert_size,
    experts_per_layer: experts,
    n_layer: cfg.n_layer,
    d_ff: cfg.d_ff,
    mean_intra_cosine: meta.grouping.mean_intra_cosine,
    random_intra_cosine: meta.grouping.random_intra_cosine,
    per_layer: layers.map((r) => ({
      layer: r.layer,
      intra_cosine: r.intraCosine,
      random_intra_cosine: r.randomIntraCosine,
      ...(r.groupingFeatureIntraCosine !== undefined
        ? {
          activation_profile_intra_cosine: r.groupingFeatureIntraCosine,
          activation_profile_random_intra_cosine: r.groupingFeatureRandomIntraCosine,
        }
        : {}),
      inertia: r.inertia,
      iterations: r.iterations,
      ms: Math.round(r.ms),
    })),
    threads: assigner.threads,
    group_s: groupMs / 1000,
    wall_s: (performance.now() - t0) / 1000,
    model_dir: "model/",
    tokenizer: existsSync(join(out, TOKENIZER_SPEC_FILE)),
  };
  await writeJsonAtomic(join(ctx.dir, "results.json"), summary);
  ctx.log(
    `done: mean intra-expert cosine ${summary.mean_intra_cosine.toFixed(4)} vs random ` +
      `${summary.random_intra_cosine.toFixed(4)}; ${summary.group_s.toFixed(1)} s`,
  );
  return summary;
}

/** Checks what the config names (calibration files) before anything runs. */
export function preflightGroup(c: GroupConfig, env: { configDir: string }): string[] {
  const problems: string[] = [];
  const data = c.calibration?.data;
  if (data?.tokens_file && !existsSync(resolve(env.configDir, data.tokens_file))) {
    problems.push(`calibration.data.tokens_file: file not found: ${resolve(env.configDir, data.tokens_file)}`);
  }
  if (data?.corpus) {
    try {
      resolveCorpusFiles(data.corpus, env.configDir);
    } catch (e) {
      problems.push(`calibration.data.corpus: ${(e as Error).message}`);
    }
  }
  return problems;
}

/** Identity of the calibration files (sizes and times), for the cache hash. */
export function fingerprintGroup(c: GroupConfig, env: { configDir: string }): string {
  const h = createHash("sha256");
  const data = c.calibration?.data;
  try {
    const files = data?.tokens_file
      ? [resolve(env.configDir, data.tokens_file)]
      : data?.corpus
      ? resolveCorpusFiles(data.corpus, env.configDir).map((f) => f.path)
      : [];
    for (const f of files) {
      const s = statSync(f);
      h.update(`${f}\0${s.size}\0${s.mtimeMs}\0`);
    }
  } catch (e) {
    h.update((e as Error).message);
  }
  return h.digest("hex").slice(0, 16);
}

/** The stage definition. */
export const groupStage: StageDefinition<GroupConfig> = {
  type: "group",
  description: "Group FFN neurons into equal-size experts (balanced k-means) and permute them contiguous",
  schema: GroupSchema,
  inputs: (c) => [c.from],
  run: runGroup,
  preflight: preflightGroup,
  fingerprint: fingerprintGroup,
  version: "1",
};
registerStage(groupStage);
