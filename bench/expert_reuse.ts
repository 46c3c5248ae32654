/**
 * Expert reuse between consecutive tokens, for a REAL trained LTE model on REAL text: of the
 * experts token t activates in a layer, how many were already active for token t-1? That decides
 * whether a kernel that speculatively prefetches the previous token's experts (into L2) while the
 * next token's routing runs would pay off (docs/next-steps.md, the speculative L2 prefetch item).
 *
 * The adapted model (an `adapt` stage's `model/` folder of a pipeline run) is loaded as the eval
 * stage loads it (loadCheckpoint + the routers of lte.json, hard threshold τ through
 * lte/baselines.ts `LtePolicy`), on the CPU backend, and run teacher-forced over the pipeline's own
 * validation split (the stage's `data:` config through text/dataset.ts `TokenDataset`, windows of
 * `seq_len` consecutive tokens in order, as the eval stage's `valBatches`). The first window's
 * masks are checked against models/lte_model.ts `routerMasks` (the model's own hard mode).
 *
 * Per layer, A_t = the set of experts on for token t (score > τ); sums run over positions t >= 1
 * of each window (pairs never cross windows), so every ratio is bytes-weighted:
 *   a          active fraction, mean |A_t| / E over all positions
 *   reuse      Σ|A_t ∩ A_{t-1}| / Σ|A_t|
 *   chance     Σ_e p_e² / Σ_e p_e: the reuse of independent tokens with the same per-expert firing
 *              rates p_e (>= a when some experts fire more often than others); `chance_plain` = a
 * Speculation policies, prefetch set P_t (evaluated at the same positions t >= 1):
 *   prev1      P_t = A_{t-1}
 *   prev2      P_t = A_{t-1} ∪ A_{t-2} (at t = 1 only A_0 exists)
 *   hot        P_t = the k = round(a·E) experts of the layer that fire most often (static; the
 *              frequencies come from the same tokens, so slightly optimistic)
 *   hot(cv)    the same size, ranked by the firing rates of the OTHER half of the windows (even
 *              windows ranked by the odd ones and back): the hot set without in-sample frequencies
 *   hot@prev2  the static set as large as prev2's mean prefetch, round(prefetch·E): prev2 at equal bytes
 *   covered = Σ|A_t ∩ P_t| / Σ|A_t|   wasted = Σ|P_t \ A_t| / Σ|P_t|   prefetch = mean |P_t| / E
 * Also the reuse at lags d = 2, 4, 8 (t against t-d; the JSON has 1..8) and, in the JSON, the static
 * set's covered / wasted at every size k. "all" pools the counts of every layer.
 *
 *   deno run -A bench/expert_reuse.ts --run runs/quickstart [--stage stage2] [--tokens N]
 *        [--batch 16] [--out file.json]
 *
 * `--stage` defaults to the first `lte:` model of the run's eval stage (else its last adapt stage);
 * `--tokens` (default: the whole validation split) cuts the measurement after N tokens.
 *
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { LtePolicy, withRouting } from "../lte/baselines.ts";
import { loadCheckpoint, readCheckpointConfig } from "../models/checkpoint.ts";
import { routerBiasName, routerWeightName } from "../models/lte_artifacts.ts";
import { loadLteModel, routerMasks } from "../models/lte_model.ts";
import { readLteRouting } from "../models/routing.ts";
import { openTokenData, tokenizerFilesKey } from "../stages/_data.ts";
import { loadTokenizerFrom, tokenizerFiles } from "../stages/_model_io.ts";
import { type DataConfig, DataSchema } from "../stages/_schemas.ts";
import { noGrad, resolveDevice, scope, Tensor } from "../tensor/mod.ts";

// ---------------------------------------------------------------------------------------------
// Statistics (pure: masks in, numbers out)

/** Sums of one prefetch policy over positions t >= 1: Σ|P_t| and Σ|A_t ∩ P_t|. */
export interface PolicyCounts {
  prefetched: number;
  hit: number;
}

/** Raw counts of one layer (or of several layers added with {@linkcode addReuseCounts}). */
export interface ReuseCounts {
  /** Experts per layer (summed over layers when pooled). */
  experts: number;
  /** Tokens (positions) seen. */
  positions: number;
  /** Σ|A_t| over all positions. */
  active: number;
  /** Σ_e p_e² and Σ_e p_e (p_e = expert e's firing rate), summed over layers when pooled. */
  sumP2: number;
  sumP: number;
  /** Positions t >= 1 (consecutive pairs inside a window). */
  pairs: number;
  /** Σ|A_t| over t >= 1 (the denominator of reuse / covered). */
  pairActive: number;
  /** Σ_{t>=1} experts-per-layer (the denominator of `prefetch`). */
  pairSlots: number;
  prev1: PolicyCounts;
  prev2: PolicyCounts;
  hot: PolicyCounts;
}

/** One policy's ratios. */
export interface PolicyStats {
  /** Mean |P_t| / E. */
  prefetch: number;
  /** Σ|A_t ∩ P_t| / Σ|A_t|. */
  covered: number;
  /** Σ|P_t \ A_t| / Σ|P_t| (NaN when nothing was prefetched). */
  wasted: number;
}

/** The ratios of {@linkcode reuseStats}. */
export interface ReuseStats {
  tokens: number;
  pairs: number;
  /** Active fraction a. */
  active: number;
  /** Σ|A_t ∩ A_{t-1}| / Σ|A_t| over t >= 1 (= prev1.covered). */
  reuse: number;
  /** Σ_e p_e² / Σ_e p_e: reuse of independent tokens with the same per-expert rates. */
  chance: number;
  /** a: reuse of independent tokens if every expert fired equally often. */
  chance_plain: number;
  prev1: PolicyStats;
  prev2: PolicyStats;
  hot: PolicyStats;
}

/** One layer's counts plus its per-expert firing rates and static hot sets. */
export interface LayerReuse {
  counts: ReuseCounts;
  /** Firing rate p_e of each expert over all positions. */
  rates: number[];
  /** Experts by rank (most frequent first, ties by lower index; by `opts.rank` when given). */
  order: number[];
  /** The static hot set `counts.hot` used: the first k of `order`. */
  hotSet: number[];
  /** The static policy for every size k = 0..E: P_t = the first k of `order`. */
  hotCurve: PolicyCounts[];
}

/**
 * Counts for one layer. `windows[w]` is a T_w x `experts` row-major 0/1 mask of consecutive tokens
 * (window w's token t, expert e at `t * experts + e`); pairs are taken inside a window only.
 * `opts.rank`: per-expert scores that rank the static hot set (default: these windows' own
 * firing counts); `opts.k`: its size (default round(a·E)).
 */
export function layerReuse(
  windows: readonly Uint8Array[],
  experts: number,
  opts: { rank?: ArrayLike<number>; k?: number } = {},
): LayerReuse {
  const E = experts;
  if (!(Number.isInteger(E) && E > 0)) throw new RangeError(`experts must be a positive integer, got ${E}`);
  const freq = new Float64Array(E), pairFreq = new Float64Array(E);
  let positions = 0, active = 0;
  for (const m of windows) {
    if (m.length % E !== 0) throw new RangeError(`a window mask of ${m.length} values is not T x ${E}`);
    for (let i = 0; i < m.length; i++) {
      if (!m[i]) continue;
      freq[i % E]!++;
      active++;
      if (i >= E) pairFreq[i % E]!++;
    }
    positions += m.length / E;
  }
  const rates = Array.from(freq, (f) => (positions ? f / positions : 0));
  let sumP = 0, sumP2 = 0;
  for (const p of rates) {
    sumP += p;
    sumP2 += p * p;
  }
  const rank = opts.rank ?? freq;
  if (rank.length !== E) throw new RangeError(`rank has ${rank.length} values, expected ${E}`);
  const order = Array.from({ length: E }, (_, e) => e).sort((x, y) => rank[y]! - rank[x]! || x - y);
  const k = Math.min(E, Math.max(0, opts.k ?? Math.round(positions ? active / positions : 0)));

  const c: ReuseCounts = {
    experts: E,
    positions,
    active,
    sumP2,
    sumP,
    pairs: 0,
    pairActive: 0,
    pairSlots: 0,
    prev1: { prefetched: 0, hit: 0 },
    prev2: { prefetched: 0, hit: 0 },
    hot: { prefetched: 0, hit: 0 },
  };
  for (const m of windows) {
    const T = m.length / E;
    for (let t = 1; t < T; t++) {
      c.pairs++;
      c.pairSlots += E;
      const cur = t * E, p1 = (t - 1) * E, p2 = (t - 2) * E;
      for (let e = 0; e < E; e++) {
        const a = m[cur + e]! ? 1 : 0;
        const in1 = m[p1 + e]! ? 1 : 0;
        const in2 = in1 || (t >= 2 && m[p2 + e]!) ? 1 : 0;
        c.pairActive += a;
        c.prev1.prefetched += in1;
        c.prev1.hit += a & in1;
        c.prev2.prefetched += in2;
        c.prev2.hit += a & in2;
      }
    }
  }
  // The static set's hits are the t >= 1 firing counts of its members.
  const hotCurve: PolicyCounts[] = [{ prefetched: 0, hit: 0 }];
  for (let j = 0; j < E; j++) {
    const last = hotCurve[j]!;
    hotCurve.push({ prefetched: last.prefetched + c.pairs, hit: last.hit + pairFreq[order[j]!]! });
  }
  c.hot = { ...hotCurve[k]! };
  return { counts: c, rates, order, hotSet: order.slice(0, k), hotCurve };
}

/**
 * Reuse at lags 1..`maxLag`: Σ|A_t ∩ A_{t-d}| / Σ|A_t| over positions t >= d of each window
 * (index d-1; lag 1 is `reuse`). NaN where no window is longer than d.
 */
export function lagReuse(windows: readonly Uint8Array[], experts: number, maxLag: number): number[] {
  const E = experts;
  return Array.from({ length: maxLag }, (_, i) => {
    const d = i + 1;
    let hit = 0, act = 0;
    for (const m of windows) {
      for (let j = d * E; j < m.length; j++) {
        if (!m[j]) continue;
        act++;
        if (m[j - d * E]) hit++;
      }
    }
    return hit / act;
  });
}

/** The counts of several layers added (for the pooled "all" row). */
export function addReuseCounts(parts: readonly ReuseCounts[]): ReuseCounts {
  const pol = (k: "prev1" | "prev2" | "hot") => addPolicyCounts(parts.map((p) => p[k]));
  const sum = (k: "experts" | "positions" | "active" | "sumP2" | "sumP" | "pairs" | "pairActive" | "pairSlots") =>
    parts.reduce((s, p) => s + p[k], 0);
  return {
    experts: sum("experts"),
    positions: sum("positions"),
    active: sum("active"),
    sumP2: sum("sumP2"),
    sumP: sum("sumP"),
    pairs: sum("pairs"),
    pairActive: sum("pairActive"),
    pairSlots: sum("pairSlots"),
    prev1: pol("prev1"),
    prev2: pol("prev2"),
    hot: pol("hot"),
  };
}

/** Policy counts added. */
export function addPolicyCounts(parts: readonly PolicyCounts[]): PolicyCounts {
  return {
    prefetched: parts.reduce((s, p) => s + p.prefetched, 0),
    hit: parts.reduce((s, p) => s + p.hit, 0),
  };
}

/** One policy's ratios, given the counts' Σ|A_t| and Σ E over positions t >= 1. */
export function policyStats(p: PolicyCounts, c: { pairActive: number; pairSlots: number }): PolicyStats {
  return {
    prefetch: p.prefetched / c.pairSlots,
    covered: p.hit / c.pairActive,
    wasted: p.prefetched ? (p.prefetched - p.hit) / p.prefetched : NaN,
  };
}

/**
 * Ratios from counts (see the module doc). For counts pooled over `layers` layers, `tokens` and
 * `pairs` are given per layer.
 */
export function reuseStats(c: ReuseCounts, layers = 1): ReuseStats {
  const slots = c.experts * c.positions / layers;
  return {
    tokens: c.positions / layers,
    pairs: c.pairs / layers,
    active: c.active / slots,
    reuse: c.prev1.hit / c.pairActive,
    chance: c.sumP2 / c.sumP,
    chance_plain: c.active / slots,
    prev1: policyStats(c.prev1, c),
    prev2: policyStats(c.prev2, c),
    hot: policyStats(c.hot, c),
  };
}

// ---------------------------------------------------------------------------------------------
// The measurement

interface Row {
  label: string;
  s: ReuseStats;
  lags: number[];
  hotCv: PolicyStats;
  hotAtPrev2: PolicyStats;
}

/** Two readable tables: reuse against chance (with lags), then the prefetch policies. */
function formatTables(rows: Row[]): string {
  const f = (v: number) => (Number.isFinite(v) ? v.toFixed(3) : "  -  ");
  const pol = (p: PolicyStats, pf = true) => `${pf ? f(p.prefetch) + " " : ""}${f(p.covered)} ${f(p.wasted)}`;
  const t1 = ["layer |     a | chance(a) chance(p_e) | reuse lag1  lag2  lag4  lag8"];
  const t2 = [
    "layer | prev1 pf  cov   waste | hot   pf  cov   waste | hot(cv) cov waste | prev2 pf  cov   waste | " +
    "hot@prev2 pf cov waste",
  ];
  for (const r of rows) {
    const l = r.label.padEnd(5);
    t1.push(
      `${l} | ${f(r.s.active)} | ${f(r.s.chance_plain)}     ${f(r.s.chance)}       | ${f(r.s.reuse)}      ` +
        [1, 3, 7].map((i) => f(r.lags[i] ?? NaN)).join(" "),
    );
    t2.push(
      `${l} | ${pol(r.s.prev1)}      | ${pol(r.s.hot)}      | ${pol(r.hotCv, false)}       | ` +
        `${pol(r.s.prev2)}      | ${pol(r.hotAtPrev2)}`,
    );
  }
  return [
    ...t1,
    "",
    ...t2,
    "(pf: mean prefetched fraction of E; cov: share of used expert bytes prefetched; " +
    "waste: share of prefetched bytes unused)",
  ].join("\n");
}

interface RunStage {
  name: string;
  type: string;
  lte?: string[];
  data?: unknown;
}

/** The stage to measure: `--stage`, else the eval stage's first `lte:` model, else the last adapt stage. */
function pickStage(stages: RunStage[], asked: string | undefined): string {
  if (asked) return asked;
  const ev = stages.find((s) => s.type === "eval" && s.lte?.length);
  if (ev) return ev.lte![0]!;
  const adapt = stages.filter((s) => s.type === "adapt").at(-1);
  if (!adapt) throw new Error("no eval or adapt stage in the run's config.yaml; pass --stage");
  return adapt.name;
}

function main(): void {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      run: { type: "string", default: "runs/quickstart" },
      stage: { type: "string" },
      tokens: { type: "string" },
      batch: { type: "string", default: "16" },
      out: { type: "string" },
    },
  });
  const runDir = a.run!;
  const cfgFile = join(runDir, "config.yaml");
  if (!existsSync(cfgFile)) throw new Error(`${cfgFile}: not found (is ${runDir} a pipeline run directory?)`);
  const runCfg = parseYaml(readFileSync(cfgFile, "utf8")) as { name: string; seed?: number; stages: RunStage[] };
  const overrides = parseYaml(readFileSync(join(runDir, "overrides.yaml"), "utf8")) as { config_dir: string };
  const stageName = pickStage(runCfg.stages, a.stage);
  const stageDir = join(runDir, "stages", stageName);
  const stageJson = JSON.parse(readFileSync(join(stageDir, "stage.json"), "utf8"));
  if (stageJson.status !== "complete") throw new Error(`${stageDir}/stage.json: status ${stageJson.status}`);
  const modelDir = join(stageDir, "model");

  // Data: the stage's own data config (adapt has one), else the eval stage's.
  const dataRaw = stageJson.config?.data ?? runCfg.stages.find((s) => s.type === "eval")?.data;
  if (!dataRaw) throw new Error(`stage ${stageName} has no data: config and the run has no eval stage with one`);
  const dataCfg: DataConfig = DataSchema.parse(dataRaw);
  const seed = runCfg.seed ?? 0;
  const { tokenizer, spec } = loadTokenizerFrom(modelDir);
  // keyed as the eval stage keys it (the model folder's tokenizer files): its token cache serves
  const data = openTokenData(dataCfg, {
    baseDir: overrides.config_dir,
    tokenizer,
    tokenizerKey: tokenizerFilesKey(tokenizerFiles(spec, modelDir)),
    seed,
    log: (m) => console.error(m),
  });

  // Model: as stages/eval.ts (loadCheckpoint + LtePolicy at lte.json's τ), CPU backend.
  const device = resolveDevice("cpu");
  const config = readCheckpointConfig(modelDir);
  const { meta, arrays } = readLteRouting(modelDir, config);
  const routers = Array.from({ length: meta.n_layer }, (_, l) => ({
    weight: arrays.get(routerWeightName(l))!,
    bias: arrays.get(routerBiasName(l)) ?? null,
  }));
  const E = meta.experts_per_layer, L = meta.n_layer, T = dataCfg.seq_len, B = Number(a.batch);
  if (T > config.max_seq) throw new RangeError(`data.seq_len ${T} exceeds the model's max_seq ${config.max_seq}`);
  const n = data.valTokens;
  const limit = Math.min(n, a.tokens ? Number(a.tokens) : n);
  const model = loadCheckpoint(modelDir, { device });
  const policy = new LtePolicy(model, routers, { expertSize: meta.expert_size, tau: meta.tau });

  const windows: Uint8Array[][] = Array.from({ length: L }, () => []);
  let tokens = 0, seq = 0, firstWindow: { ids: Int32Array; masks: Uint8Array[] } | null = null;
  const t0 = performance.now();
  for (const batch of data.valBatches({ batchSize: B, seqLen: T })) {
    if (tokens >= limit) break;
    const rows = batch.rows;
    const lens: number[] = [];
    for (let r = 0; r < rows; r++) {
      const len = Math.max(0, Math.min(T, n - (seq + r) * T, limit - tokens));
      lens.push(len);
      tokens += len;
    }
    const got: Float32Array[] = [];
    policy.onMask = (l, m) => void (got[l] = m);
    withRouting(
      model,
      policy.hook,
      () =>
        scope(() =>
          noGrad(() => void model.forward(Tensor.fromArray(batch.inputs.subarray(0, rows * T), [rows, T], { device })))
        ),
    );
    for (let l = 0; l < L; l++) {
      const m = got[l]!;
      if (m.length !== rows * T * E) {
        throw new Error(`layer ${l}: mask of ${m.length} values, expected ${rows * T * E}`);
      }
      for (let r = 0; r < rows; r++) {
        if (lens[r]! === 0) continue;
        windows[l]!.push(Uint8Array.from(m.subarray(r * T * E, (r * T + lens[r]!) * E), (v) => (v > 0 ? 1 : 0)));
      }
    }
    if (!firstWindow) {
      firstWindow = { ids: batch.inputs.slice(0, lens[0]!), masks: windows.map((w) => w[0]!) };
    }
    seq += rows;
  }
  const forwardS = (performance.now() - t0) / 1000;
  policy.dispose();
  model.dispose();

  // Cross-check: the model's own hard mode (models/lte_model.ts) on the first window.
  const own = loadLteModel(modelDir, { device });
  const fw = firstWindow!;
  const ref = routerMasks(own.model, Tensor.fromArray(fw.ids, [1, fw.ids.length], { device })).masks;
  own.model.dispose();
  let differ = 0;
  ref.forEach((m, l) => m.forEach((v, i) => void (differ += v !== fw.masks[l]![i] ? 1 : 0)));

  const LAGS = 8;
  const perLayer = windows.map((w) => layerReuse(w, E));
  const all = addReuseCounts(perLayer.map((p) => p.counts));
  const extras = perLayer.map((p, l) => {
    const w = windows[l]!, k = p.hotSet.length;
    // The hot set ranked on the other half of the windows (even <-> odd): out-of-sample frequencies.
    const even = w.filter((_, i) => i % 2 === 0), odd = w.filter((_, i) => i % 2 === 1);
    const hotCv = addPolicyCounts([
      layerReuse(odd, E, { rank: layerReuse(even, E).rates, k }).counts.hot,
      layerReuse(even, E, { rank: layerReuse(odd, E).rates, k }).counts.hot,
    ]);
    // The static set as large as prev2's mean prefetch.
    const k2 = Math.round(policyStats(p.counts.prev2, p.counts).prefetch * E);
    return { hotCv, k2, hotAtPrev2: p.hotCurve[k2]!, lags: lagReuse(w, E, LAGS) };
  });
  const rows: Row[] = perLayer.map((p, l) => ({
    label: String(l),
    s: reuseStats(p.counts),
    lags: extras[l]!.lags,
    hotCv: policyStats(extras[l]!.hotCv, p.counts),
    hotAtPrev2: policyStats(extras[l]!.hotAtPrev2, p.counts),
  }));
  rows.push({
    label: "all",
    s: reuseStats(all, L),
    lags: lagReuse(windows.flat(), E, LAGS),
    hotCv: policyStats(addPolicyCounts(extras.map((x) => x.hotCv)), all),
    hotAtPrev2: policyStats(addPolicyCounts(extras.map((x) => x.hotAtPrev2)), all),
  });

  const stage1 = meta.provenance.slice().reverse().find((p) => p.type === "router-train");
  console.log(
    `expert_reuse: ${modelDir} (${config.family}, ${L} layers, d_model ${config.d_model}, d_ff ${config.d_ff} = ` +
      `${E} experts of ${meta.expert_size}, tau ${meta.tau}), ${tokens} validation tokens in ` +
      `${windows[0]!.length} windows of <= ${T}, ${forwardS.toFixed(1)} s on the CPU`,
  );
  console.log(
    `cross-check vs routerMasks (first window, ${fw.ids.length} tokens): ${differ} of ${L * fw.ids.length * E} ` +
      `mask bits differ`,
  );
  console.log(formatTables(rows));
  for (const [l, p] of perLayer.entries()) {
    console.log(
      `layer ${l}: hot set [${p.hotSet.join(", ")}] (k ${p.hotSet.length}; at prev2's size k ${extras[l]!.k2}); ` +
        `p_e ${p.rates.map((r) => r.toFixed(2)).join(" ")}`,
    );
  }

  if (a.out) {
    const out = {
      tool: "bench/expert_reuse.ts",
      time: new Date().toISOString(),
      run: runDir,
      run_name: runCfg.name,
      stage: stageName,
      stage_summary: {
        sparsity: stageJson.summary?.sparsity ?? null,
        sparsity_per_layer: stageJson.summary?.sparsity_per_layer ?? null,
        val_ppl: stageJson.summary?.val_ppl ?? null,
        target_sparsity: stage1 ? (stage1.target_sparsity ?? null) : null,
      },
      model: {
        dir: modelDir,
        family: config.family,
        n_layer: L,
        d_model: config.d_model,
        d_ff: config.d_ff,
        experts_per_layer: E,
        expert_size: meta.expert_size,
        tau: meta.tau,
        grouping: meta.grouping.method,
      },
      data: { ...dataCfg, split: "validation", val_tokens: n },
      device: "cpu",
      tokens,
      windows: windows[0]!.length,
      pairs_per_layer: all.pairs / L,
      cross_check: { window_tokens: fw.ids.length, differing_mask_bits: differ },
      definitions: "see the module doc of bench/expert_reuse.ts; sums over positions t >= 1 inside a window; " +
        "hot_cv: the hot set ranked by the other half of the windows (even/odd); hot_at_prev2: the static set " +
        "of size round(prev2.prefetch * E); lag_reuse[d-1]: reuse between t and t-d; hot_curve: static set of " +
        "every size k",
      per_layer: perLayer.map((p, l) => ({
        layer: l,
        ...rows[l]!.s,
        hot_cv: rows[l]!.hotCv,
        hot_at_prev2: { k: extras[l]!.k2, ...rows[l]!.hotAtPrev2 },
        lag_reuse: rows[l]!.lags,
        hot_set: p.hotSet,
        rates: p.rates,
        hot_curve: p.hotCurve.map((h, k) => ({ k, ...policyStats(h, p.counts) })),
        counts: p.counts,
      })),
      all: {
        ...rows[L]!.s,
        hot_cv: rows[L]!.hotCv,
        hot_at_prev2: rows[L]!.hotAtPrev2,
        lag_reuse: rows[L]!.lags,
        counts: all,
      },
    };
    writeFileSync(a.out, JSON.stringify(out, null, 1) + "\n");
    console.log(`wrote ${a.out}`);
  }
}

if (import.meta.main) main();
