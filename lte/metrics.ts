/**
 * LTE evaluation metrics (lte-spec §6, §8): FFN sparsity per layer and overall, union sparsity of a
 * batch, FLOPs per token as the paper counts them, router-score histograms, and the quality
 * metrics of the three data kinds (LM perplexity, label-scoring accuracy, ROUGE-L of greedy
 * generations).
 *
 * Sparsity is counted in *units*: an expert of `expertSize` neurons for LTE and expert-level
 * baselines, a single neuron (unit size 1) for neuron-level baselines (magnitude thresholding,
 * neuron predictors). Per layer, sparsity = 1 − unitSize·(active units)/d_ff, averaged over the
 * evaluated tokens; overall = mean over layers (all layers have the same d_ff, so this is also the
 * fraction of skipped neuron evaluations).
 *
 * FLOPs (lte-spec §6): 2 FLOPs per multiply-add of every decoder linear layer (attention q/k/v/o or
 * c_attn/c_proj, FFN gate/up/down or c_fc/c_proj) plus the router, in units of 2^30 ("GFLOPs"):
 * LLaMA-7B dense = 12.0625, its LTE router = 0.084. Embeddings, the LM head, norms and the
 * attention score products are not counted (as in the paper's Table 1).
 *
 * @module
 */
import type { ModelConfig } from "../models/config.ts";
import type { DecoderLM } from "../models/decoder.ts";
import { argmax, crossEntropyRows, type Device, noGrad, scope, Tensor } from "../tensor/mod.ts";

/** 2^30: the paper's "G" in GFLOPs per token. */
export const GFLOP_UNIT = 2 ** 30;

/** The model shape the FLOP count needs (a ModelConfig fits). */
export type FlopsShape = Pick<ModelConfig, "family" | "n_layer" | "d_model" | "n_head" | "n_kv_head" | "d_ff">;

/** FLOPs per token in 2^30 units, split by part. */
export interface FlopsPerToken {
  attention: number;
  ffn: number;
  router: number;
  total: number;
  /** Dense total (no sparsity, no router), for speed-up ratios. */
  dense: number;
}

/**
 * FLOPs per token (lte-spec §6). `ffnDensity`: fraction of FFN neurons computed, one number for all
 * layers or one per layer (1 = dense). `routerExperts`: experts per layer when a router runs (LTE),
 * adding 2·d_model·N per layer.
 */
export function flopsPerToken(
  shape: FlopsShape,
  opts: { ffnDensity?: number | number[]; routerExperts?: number } = {},
): FlopsPerToken {
  const d = shape.d_model, f = shape.d_ff, L = shape.n_layer;
  const kv = (shape.n_kv_head * d) / shape.n_head;
  // Multiply-adds per token of one layer.
  const attnMacs = shape.family === "gpt2" ? 3 * d * d + d * d : d * d + 2 * d * kv + d * d;
  const ffnMacs = shape.family === "gpt2" ? 2 * d * f : 3 * d * f;
  const density = opts.ffnDensity ?? 1;
  let ffnTotal = 0;
  for (let l = 0; l < L; l++) {
    const r = typeof density === "number" ? density : density[l];
    if (r === undefined || !(r >= 0 && r <= 1)) {
      throw new RangeError(`flopsPerToken: ffnDensity for layer ${l} must be in [0, 1], got ${r}`);
    }
    ffnTotal += 2 * ffnMacs * r;
  }
  const attention = (2 * attnMacs * L) / GFLOP_UNIT;
  const ffn = ffnTotal / GFLOP_UNIT;
  const router = opts.routerExperts ? (2 * d * opts.routerExperts * L) / GFLOP_UNIT : 0;
  const dense = attention + (2 * ffnMacs * L) / GFLOP_UNIT;
  return { attention, ffn, router, total: attention + ffn + router, dense };
}

/**
 * Union sparsity of groups of token rows: for each group, 1 − |∪ active units| / units, averaged
 * over groups. `mask` is (rows, units) row-major, nonzero = active.
 */
export function unionSparsity(mask: ArrayLike<number>, units: number, groups: number[][]): number {
  if (groups.length === 0) return NaN;
  const seen = new Uint8Array(units);
  let total = 0;
  for (const g of groups) {
    seen.fill(0);
    let n = 0;
    for (const r of g) {
      const o = r * units;
      for (let u = 0; u < units; u++) {
        if (mask[o + u] !== 0 && seen[u] === 0) (seen[u] = 1), n++;
      }
    }
    total += 1 - n / units;
  }
  return total / groups.length;
}

/**
 * Decode-like batches of a teacher-forced (B, T) forward: at each position t, the rows of `batch`
 * different sequences (sequences [k·batch, (k+1)·batch) at position t). Empty when B < batch.
 */
export function decodeBatchGroups(b: number, t: number, batch: number): number[][] {
  const out: number[][] = [];
  for (let k = 0; k + batch <= b; k += batch) {
    for (let p = 0; p < t; p++) out.push(Array.from({ length: batch }, (_, j) => (k + j) * t + p));
  }
  return out;
}

/** Batch sizes of the union-sparsity curve (paper Fig. 15). */
export const UNION_BATCHES: readonly number[] = [1, 2, 4, 8, 16];

/** Per-layer / overall / union sparsity, as the eval reports it. */
export interface SparsityResult {
  per_layer: number[];
  overall: number;
  /** Mean active units per token per layer. */
  active_units: number[];
  /** Union sparsity (mean over layers) by batch size; null where the eval batch was too small. */
  union: { batch: number; sparsity: number | null }[];
  tokens: number;
}

/**
 * Accumulates routing masks over an evaluation: call `setShape(B, T)` before each forward, then
 * `add(layer, mask)` from the routing hook with the (B·T, units) 0/1 mask of that layer. Rows whose
 * `valid` flag is 0 (padding) are not counted.
 */
export class SparsityMeter {
  readonly nLayer: number;
  readonly units: number;
  readonly unitSize: number;
  readonly dFf: number;
  #active: Float64Array;
  #tokens: Float64Array;
  #union: Map<number, { sum: Float64Array; n: Float64Array }> = new Map();
  #shape: { b: number; t: number; valid: Uint8Array | null } = { b: 0, t: 0, valid: null };
  #unionCalls: Uint32Array;
  /** Forward passes per layer that feed the union statistic (it costs rows × units per batch size). */
  readonly unionPasses: number;

  constructor(opts: { nLayer: number; units: number; unitSize: number; dFf: number; unionPasses?: number }) {
    if (opts.units * opts.unitSize !== opts.dFf) {
      throw new RangeError(`SparsityMeter: ${opts.units} units of ${opts.unitSize} neurons != d_ff ${opts.dFf}`);
    }
    this.nLayer = opts.nLayer;
    this.units = opts.units;
    this.unitSize = opts.unitSize;
    this.dFf = opts.dFf;
    this.#active = new Float64Array(opts.nLayer);
    this.#tokens = new Float64Array(opts.nLayer);
    this.#unionCalls = new Uint32Array(opts.nLayer);
    this.unionPasses = opts.unionPasses ?? Infinity;
    for (const b of UNION_BATCHES) {
      this.#union.set(b, { sum: new Float64Array(opts.nLayer), n: new Float64Array(opts.nLayer) });
    }
  }

  /** Shape of the next forward's rows (B sequences × T positions) and which rows are real tokens. */
  setShape(b: number, t: number, valid: Uint8Array | null = null): void {
    this.#shape = { b, t, valid };
  }

  /** Adds one layer's mask (rows = B·T of the current shape, row-major (rows, units)). */
  add(layer: number, mask: ArrayLike<number>): void {
    const { b, t, valid } = this.#shape;
    const rows = mask.length / this.units;
    if (!Number.isInteger(rows) || rows !== b * t) {
      throw new RangeError(`SparsityMeter.add: mask of ${mask.length} values is not (${b}·${t}, ${this.units})`);
    }
    for (let r = 0; r < rows; r++) {
      if (valid && valid[r] === 0) continue;
      let n = 0;
      const o = r * this.units;
      for (let u = 0; u < this.units; u++) if (mask[o + u] !== 0) n++;
      this.#active[layer]! += n;
      this.#tokens[layer]! += 1;
    }
    if (this.#unionCalls[layer]! >= this.unionPasses) return;
    this.#unionCalls[layer]! += 1;
    for (const [bs, acc] of this.#union) {
      let groups = decodeBatchGroups(b, t, bs);
      if (valid) groups = groups.filter((g) => g.every((r) => valid[r] !== 0));
      if (groups.length === 0) continue;
      acc.sum[layer]! += unionSparsity(mask, this.units, groups) * groups.length;
      acc.n[layer]! += groups.length;
    }
  }

  /** The accumulated result. */
  result(): SparsityResult {
    const perLayer: number[] = [], active: number[] = [];
    for (let l = 0; l < this.nLayer; l++) {
      const k = this.#tokens[l]! > 0 ? this.#active[l]! / this.#tokens[l]! : NaN;
      active.push(k);
      perLayer.push(1 - (this.unitSize * k) / this.dFf);
    }
    const union = UNION_BATCHES.map((batch) => {
      const acc = this.#union.get(batch)!;
      let s = 0, ok = true;
      for (let l = 0; l < this.nLayer; l++) {
        if (acc.n[l] === 0) ok = false;
        else s += acc.sum[l]! / acc.n[l]!;
      }
      return { batch, sparsity: ok ? s / this.nLayer : null };
    });
    return {
      per_layer: perLayer,
      overall: perLayer.reduce((a, b) => a + b, 0) / Math.max(1, this.nLayer),
      active_units: active,
      union,
      tokens: this.#tokens[0] ?? 0,
    };
  }
}

/** A fixed-bin histogram of values in [lo, hi] (router scores: [0, 1]). */
export class Histogram {
  readonly lo: number;
  readonly hi: number;
  readonly counts: Float64Array;
  constructor(bins = 40, lo = 0, hi = 1) {
    this.lo = lo;
    this.hi = hi;
    this.counts = new Float64Array(bins);
  }
  add(values: ArrayLike<number>): void {
    const n = this.counts.length, w = (this.hi - this.lo) / n;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (!Number.isFinite(v)) continue;
      const k = Math.min(n - 1, Math.max(0, Math.floor((v - this.lo) / w)));
      this.counts[k]! += 1;
    }
  }
  /** Fraction of values in the outer `edge` of the range at both ends (bimodality indicator). */
  massNearEnds(edge = 0.1): number {
    const n = this.counts.length;
    const k = Math.max(1, Math.round(edge * n));
    let ends = 0, all = 0;
    this.counts.forEach((c, i) => {
      all += c;
      if (i < k || i >= n - k) ends += c;
    });
    return all > 0 ? ends / all : NaN;
  }
  toJSON(): { lo: number; hi: number; counts: number[]; mass_near_ends: number } {
    return { lo: this.lo, hi: this.hi, counts: [...this.counts], mass_near_ends: this.massNearEnds() };
  }
}

// ---------------------------------------------------------------------------------------------
// Quality

/** Lower-cased word tokens for ROUGE (letters/digits runs, as rouge-score's default tokenizer). */
export function rougeTokens(s: string): string[] {
  return s.toLowerCase().match(/[a-z0-9]+/g) ?? [];
}

/** Length of the longest common subsequence of two token lists. */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  if (a.length === 0 || b.length === 0) return 0;
  let prev = new Uint32Array(b.length + 1), cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length]!;
}

/** ROUGE-L F1 (precision, recall from the LCS of word tokens), as rouge-score's `rougeL` fmeasure. */
export function rougeL(candidate: string, reference: string): { precision: number; recall: number; f1: number } {
  const c = rougeTokens(candidate), r = rougeTokens(reference);
  const l = lcsLength(c, r);
  if (l === 0) return { precision: 0, recall: 0, f1: 0 };
  const p = l / c.length, rc = l / r.length;
  return { precision: p, recall: rc, f1: (2 * p * rc) / (p + rc) };
}

/** Minimal tokenizer surface the quality metrics need. */
export interface TextCodec {
  encode(text: string, opts?: { addBos?: boolean; addEos?: boolean; allowSpecial?: boolean }): number[];
  decode(ids: ArrayLike<number>): string;
  eosId?: number;
}

/**
 * Greedy continuation of `prompt` ids (full forward per token, no KV cache: works with any routing
 * hook installed on the model). Stops at EOS or `maxNew` tokens.
 */
export function greedyIds(
  model: DecoderLM,
  prompt: number[],
  opts: { maxNew: number; device: Device; eosId?: number; beforeForward?: (b: number, t: number) => void },
): number[] {
  const ctx = model.config.max_seq;
  const ids = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < opts.maxNew; i++) {
    const window = ids.slice(-ctx);
    opts.beforeForward?.(1, window.length);
    const next = scope(() =>
      noGrad(() => {
        const logits = model.forward(
          Tensor.fromArray(Int32Array.from(window), [1, window.length], { device: opts.device }),
        );
        return argmax(logits).toArray()[window.length - 1]!;
      })
    );
    if (opts.eosId !== undefined && next === opts.eosId) break;
    ids.push(next);
    out.push(next);
  }
  return out;
}

/**
 * Sum of log-probabilities (nats, ≤ 0) of `continuation` after `context`, one forward. The context is
 * cut from the left to fit max_seq.
 */
export function continuationLogProb(
  model: DecoderLM,
  context: number[],
  continuation: number[],
  opts: { device: Device; beforeForward?: (b: number, t: number) => void },
): number {
  if (continuation.length === 0) return 0;
  const max = model.config.max_seq;
  const all = [...context, ...continuation].slice(-(max + 1));
  const inputs = all.slice(0, -1), n = inputs.length;
  const targets = new Int32Array(n).fill(-100);
  const first = n - continuation.length;
  for (let i = Math.max(0, first); i < n; i++) targets[i] = all[i + 1]!;
  opts.beforeForward?.(1, n);
  return scope(() =>
    noGrad(() => {
      const logits = model.forward(Tensor.fromArray(Int32Array.from(inputs), [1, n], { device: opts.device }));
      const rows = crossEntropyRows(logits.reshape([n, -1]), Tensor.fromArray(targets, [n], { device: opts.device }))
        .toArray();
      let s = 0;
      for (let i = 0; i < n; i++) if (targets[i] !== -100) s -= rows[i]!;
      return s;
    })
  );
}

/**
 * Accuracy by label scoring: for each (text, label) document, the label whose text has the highest
 * log-likelihood after `text + separator` is the prediction.
 */
export function labelAccuracy(
  model: DecoderLM,
  tok: TextCodec,
  docs: { text: string; label: string }[],
  opts: { device: Device; separator?: string; beforeForward?: (b: number, t: number) => void },
): { accuracy: number; n: number; labels: string[] } {
  const labels = [...new Set(docs.map((d) => d.label))].sort();
  const sep = opts.separator ?? " ";
  const enc = (s: string) => tok.encode(s, { addBos: false, addEos: false, allowSpecial: false });
  const labelIds = labels.map((l) => enc(l));
  let correct = 0;
  for (const d of docs) {
    const ctx = enc(d.text + sep);
    let best = -1, bestLp = -Infinity;
    labelIds.forEach((ids, i) => {
      const lp = continuationLogProb(model, ctx, ids, opts);
      if (lp > bestLp) (bestLp = lp), (best = i);
    });
    if (labels[best] === d.label) correct++;
  }
  return { accuracy: docs.length ? correct / docs.length : NaN, n: docs.length, labels };
}

/** Mean ROUGE-L F1 of greedy completions of prompt/completion documents. */
export function generationRougeL(
  model: DecoderLM,
  tok: TextCodec,
  docs: { prompt: string; completion: string }[],
  opts: { device: Device; maxNew?: number; beforeForward?: (b: number, t: number) => void },
): { rouge_l: number; n: number; examples: { prompt: string; reference: string; output: string }[] } {
  let total = 0;
  const examples: { prompt: string; reference: string; output: string }[] = [];
  for (const d of docs) {
    const ref = tok.encode(d.completion, { addBos: false, addEos: false, allowSpecial: false });
    const maxNew = opts.maxNew ?? Math.min(128, ref.length + 8);
    const prompt = tok.encode(d.prompt, { addBos: false, addEos: false, allowSpecial: false });
    const out = tok.decode(greedyIds(model, prompt, { ...opts, maxNew, eosId: tok.eosId }));
    total += rougeL(out, d.completion).f1;
    if (examples.length < 3) examples.push({ prompt: d.prompt, reference: d.completion, output: out });
  }
  return { rouge_l: docs.length ? total / docs.length : NaN, n: docs.length, examples };
}

/** Mean and (population) standard deviation; spread 0 for one value. */
export function meanStd(xs: number[]): { mean: number; std: number; n: number } {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length === 0) return { mean: NaN, std: NaN, n: 0 };
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  const s = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
  return { mean: m, std: s, n: v.length };
}
