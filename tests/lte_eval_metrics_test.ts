/** LTE eval metrics and baselines: FLOP counts, union sparsity, ROUGE-L, matched-sparsity policies. */
import assert from "node:assert/strict";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import {
  decodeBatchGroups,
  flopsPerToken,
  Histogram,
  lcsLength,
  rougeL,
  SparsityMeter,
  unionSparsity,
} from "../lte/metrics.ts";
import {
  type Budget,
  calibrate,
  choleskySolve,
  ditheredK,
  LtePolicy,
  MagnitudePolicy,
  OraclePolicy,
  PolicyError,
  PredictorPolicy,
  RandomRouterPolicy,
  type RoutingPolicy,
  withRouting,
} from "../lte/baselines.ts";
import { noGrad, Rng, scope, Tensor } from "../tensor/mod.ts";

Deno.test("flopsPerToken() reproduces the paper's LLaMA-7B 12.06 GFLOPs and 0.084 router GFLOPs", () => {
  const llama7b = { family: "llama" as const, n_layer: 32, d_model: 4096, n_head: 32, n_kv_head: 32, d_ff: 11008 };
  const dense = flopsPerToken(llama7b);
  assert.ok(Math.abs(dense.attention - 4.0) < 1e-9, `attention ${dense.attention}`);
  assert.ok(Math.abs(dense.ffn - 8.0625) < 1e-9, `ffn ${dense.ffn}`);
  assert.ok(Math.abs(dense.total - 12.0625) < 1e-9, `total ${dense.total}`);
  const lte = flopsPerToken(llama7b, { ffnDensity: 0.5, routerExperts: 344 });
  assert.ok(Math.abs(lte.router - 0.084) < 5e-4, `router ${lte.router}`);
  assert.ok(Math.abs(lte.total - (4 + 8.0625 / 2 + lte.router)) < 1e-9);
  // The paper's 6.59 GFLOPs on WikiText ↔ about 69% FFN sparsity (lte-spec §8).
  const wiki = flopsPerToken(llama7b, { ffnDensity: 1 - 0.689, routerExperts: 344 });
  assert.ok(Math.abs(wiki.total - 6.59) < 0.01, `wiki ${wiki.total}`);
  // GPT-2 small: 12 layers of 4·768² attention + 2·768·3072 FFN MACs.
  const g = flopsPerToken({ family: "gpt2", n_layer: 12, d_model: 768, n_head: 12, n_kv_head: 12, d_ff: 3072 });
  assert.equal(g.total * 2 ** 30, 2 * 12 * (4 * 768 * 768 + 2 * 768 * 3072));
  assert.throws(() => flopsPerToken(llama7b, { ffnDensity: [0.5] }), RangeError);
});

Deno.test("unionSparsity() on a hand-made mask", () => {
  // 4 rows x 4 units.
  const mask = [
    1,
    0,
    0,
    0,
    0,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ];
  assert.equal(unionSparsity(mask, 4, [[0]]), 0.75);
  assert.equal(unionSparsity(mask, 4, [[0, 1]]), 0.5);
  assert.equal(unionSparsity(mask, 4, [[0, 2]]), 0.75);
  assert.equal(unionSparsity(mask, 4, [[0, 1], [2, 3]]), (0.5 + 0.75) / 2);
  assert.equal(unionSparsity(mask, 4, [[0, 1, 2, 3]]), 0.5);
  // Decode-like groups: B=4 sequences, T=2 positions, batch 2 -> rows (0,2),(1,3),(4,6),(5,7).
  assert.deepEqual(decodeBatchGroups(4, 2, 2), [[0, 2], [1, 3], [4, 6], [5, 7]]);
  assert.deepEqual(decodeBatchGroups(1, 3, 2), []);
});

Deno.test("SparsityMeter: per-layer, overall and union sparsity; padding rows skipped", () => {
  const m = new SparsityMeter({ nLayer: 2, units: 4, unitSize: 8, dFf: 32 });
  m.setShape(2, 1, Uint8Array.from([1, 1]));
  m.add(0, [1, 1, 0, 0, 0, 0, 1, 1]); // 2 of 4 each row; union of the two rows = 4
  m.add(1, [1, 0, 0, 0, 1, 0, 0, 0]); // 1 of 4; union 1
  const r = m.result();
  assert.deepEqual(r.per_layer, [0.5, 0.75]);
  assert.equal(r.overall, 0.625);
  assert.equal(r.union.find((u) => u.batch === 1)!.sparsity, 0.625);
  assert.equal(r.union.find((u) => u.batch === 2)!.sparsity, (0 + 0.75) / 2);
  assert.equal(r.union.find((u) => u.batch === 4)!.sparsity, null);
  const p = new SparsityMeter({ nLayer: 1, units: 2, unitSize: 1, dFf: 2 });
  p.setShape(2, 1, Uint8Array.from([1, 0]));
  p.add(0, [1, 0, 1, 1]);
  assert.deepEqual(p.result().per_layer, [0.5]);
  assert.throws(() => p.add(0, [1, 0]), RangeError);
});

Deno.test("rougeL() on known strings; LCS", () => {
  assert.equal(lcsLength(["a", "b", "c", "d"], ["a", "c", "d", "b"]), 3);
  const r = rougeL("The cat sat on the mat.", "the cat is on the mat");
  assert.ok(Math.abs(r.f1 - 5 / 6) < 1e-12, `f1 ${r.f1}`);
  assert.equal(rougeL("identical words here", "Identical, words here!").f1, 1);
  assert.equal(rougeL("", "something").f1, 0);
  const r2 = rougeL("police killed the gunman", "police kill the gunman");
  assert.ok(Math.abs(r2.precision - 0.75) < 1e-12 && Math.abs(r2.recall - 0.75) < 1e-12);
});

Deno.test("Histogram: mass near the ends of [0, 1]", () => {
  const h = new Histogram(10);
  h.add([0.01, 0.02, 0.99, 0.5]);
  assert.equal(h.massNearEnds(0.1), 0.75);
  assert.equal(h.toJSON().counts.reduce((a, b) => a + b), 4);
});

Deno.test("choleskySolve() solves a small SPD system; ditheredK() averages to the budget", () => {
  const a = Float64Array.from([4, 1, 1, 3]), b = Float64Array.from([1, 2]);
  const x = choleskySolve(a, b, 2, 1, 0);
  assert.ok(Math.abs(4 * x[0]! + x[1]! - 1) < 1e-12 && Math.abs(x[0]! + 3 * x[1]! - 2) < 1e-12);
  let s = 0;
  for (let r = 0; r < 10000; r++) s += ditheredK(r, 2.3, 8);
  assert.ok(Math.abs(s / 10000 - 2.3) < 1e-3, `mean k ${s / 10000}`);
});

// ----------------------------------------------------------------------------- tiny model policies

const cfg = resolveModelConfig({
  family: "llama",
  vocab_size: 40,
  n_layer: 2,
  d_model: 32,
  n_head: 4,
  n_kv_head: 2,
  d_ff: 64,
  max_seq: 16,
});
const EXPERT = 8, E = 8;

function ids(seed: number, b = 16, t = 8): Tensor {
  const rng = new Rng(seed);
  return Tensor.fromArray(Int32Array.from({ length: b * t }, () => rng.int(40)), [b, t], { device: "cpu" });
}

/** Measured overall sparsity and logits of a policy on a fixed batch. */
function run(model: DecoderLM, policy: RoutingPolicy): { sparsity: number; logits: Float32Array } {
  const meter = new SparsityMeter({ nLayer: 2, units: policy.units, unitSize: policy.unitSize, dFf: 64 });
  policy.onMask = (l, m) => meter.add(l, m);
  meter.setShape(16, 8);
  const logits = withRouting(
    model,
    policy.hook,
    () => scope(() => noGrad(() => model.forward(ids(7)).toArray() as Float32Array)),
  );
  return { sparsity: meter.result().overall, logits };
}

function mse(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return s / a.length;
}

Deno.test("each baseline hits the requested sparsity; oracle is closer to dense than random routers", () => {
  const model = DecoderLM.init(cfg, { device: "cpu", seed: 3 });
  try {
    const dense = scope(() => noGrad(() => model.forward(ids(7)).toArray() as Float32Array));
    // Budget: layer 0 keeps 3 of 8 experts, layer 1 keeps 2.5 on average.
    const budget: Budget = { expertSize: EXPERT, activeExperts: [3, 2.5] };
    const want = 1 - (3 + 2.5) / 2 / E;
    const random = new RandomRouterPolicy(model, budget, 1);
    const oracle = new OraclePolicy(model, budget);
    const predictor = new PredictorPolicy(model, EXPERT);
    calibrate(model, predictor.calibrate, [ids(1), ids(2)]);
    predictor.fit("cpu");
    predictor.setBudget(budget, 2);
    const magnitude = new MagnitudePolicy(model, { seed: 0 });
    calibrate(model, magnitude.calibrate, [ids(1), ids(2)]);
    magnitude.finishCalibration();
    magnitude.setSparsity([1 - 3 / 8, 1 - 2.5 / 8]);
    const results: Record<string, { sparsity: number; err: number }> = {};
    for (const p of [random, oracle, predictor, magnitude]) {
      const r = run(model, p);
      results[p.kind] = { sparsity: r.sparsity, err: mse(r.logits, dense) };
      p.dispose();
    }
    for (const k of ["random", "oracle", "predictor"]) {
      assert.ok(Math.abs(results[k]!.sparsity - want) < 0.01, `${k}: sparsity ${results[k]!.sparsity} vs ${want}`);
    }
    // Magnitude thresholds come from other (calibration) tokens: close, not exact.
    assert.ok(Math.abs(results.magnitude!.sparsity - want) < 0.05, `magnitude ${results.magnitude!.sparsity}`);
    assert.ok(
      results.oracle!.err < results.random!.err,
      `oracle ${results.oracle!.err} vs random ${results.random!.err}`,
    );
    assert.ok(results.predictor!.err < results.random!.err, `predictor ${results.predictor!.err} vs random`);
  } finally {
    model.dispose();
  }
});

Deno.test("LtePolicy: all-on routers equal dense; mismatched routers are refused with the key", () => {
  const model = DecoderLM.init(cfg, { device: "cpu", seed: 4 });
  try {
    const dense = scope(() => noGrad(() => model.forward(ids(7)).toArray() as Float32Array));
    // Zero weights and a large bias: every score is ~1 > τ, so every expert is on.
    const on = Array.from({ length: 2 }, () => ({
      weight: new Float32Array(E * 32),
      bias: new Float32Array(E).fill(10),
    }));
    const p = new LtePolicy(model, on, { expertSize: EXPERT, tau: 0.5 });
    const r = run(model, p);
    p.dispose();
    assert.equal(r.sparsity, 0);
    assert.deepEqual(r.logits, dense);
    assert.throws(
      () => new LtePolicy(model, on.slice(0, 1), { expertSize: EXPERT, tau: 0.5 }),
      PolicyError,
      "routers cover 1 layers, the model has 2",
    );
    const wrong = [{ weight: new Float32Array(4 * 32) }, { weight: new Float32Array(4 * 32) }];
    assert.throws(() => new LtePolicy(model, wrong, { expertSize: EXPERT, tau: 0.5 }), /layers\.0\.router\.weight/);
  } finally {
    model.dispose();
  }
});

Deno.test("continuationLogProb() adds up token by token; labelAccuracy/generationRougeL run on a tiny model", async () => {
  const { continuationLogProb, generationRougeL, labelAccuracy } = await import("../lte/metrics.ts");
  const model = DecoderLM.init(cfg, { device: "cpu", seed: 5 });
  try {
    const ctx = [1, 2, 3], opts = { device: "cpu" as const };
    const both = continuationLogProb(model, ctx, [4, 5], opts);
    const parts = continuationLogProb(model, ctx, [4], opts) + continuationLogProb(model, [...ctx, 4], [5], opts);
    assert.ok(both < 0 && Math.abs(both - parts) < 1e-4, `${both} vs ${parts}`);
    // A codec over ids 0..39: characters a.. map to ids.
    const codec = {
      encode: (s: string) => [...s].map((c) => (((c.charCodeAt(0) - 97) % 40) + 40) % 40),
      decode: (ids: ArrayLike<number>) => Array.from(ids, (i) => String.fromCharCode(97 + i)).join(""),
    };
    const acc = labelAccuracy(model, codec, [{ text: "abc", label: "x" }, { text: "abd", label: "y" }], opts);
    assert.equal(acc.n, 2);
    assert.deepEqual(acc.labels, ["x", "y"]);
    assert.ok([0, 0.5, 1].includes(acc.accuracy));
    const gen = generationRougeL(model, codec, [{ prompt: "ab", completion: "cd ef" }], { ...opts, maxNew: 3 });
    assert.equal(gen.n, 1);
    assert.equal(gen.examples[0]!.output.length, 3);
    assert.ok(gen.rouge_l >= 0 && gen.rouge_l <= 1);
  } finally {
    model.dispose();
  }
});
