/** lte/grouping.ts: balanced assignment, balanced k-means, random grouping, function-preserving permutation. */
import assert from "node:assert/strict";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import {
  balancedAssign,
  balancedKmeans,
  expertsPerLayer,
  GroupingError,
  groupLayer,
  groupLayers,
  neuronFeatures,
  permutationFromLabels,
  permuteFfn,
  randomLabels,
  WorkerAssigner,
} from "../lte/grouping.ts";
import { noGrad, Rng, scope, Tensor } from "../tensor/mod.ts";

/** Every cluster in [0, K) exactly `size` times (so every item exactly once). */
function assertBalanced(labels: Int32Array, K: number, size: number): void {
  const count = new Int32Array(K);
  for (const l of labels) {
    assert.ok(l >= 0 && l < K, `label ${l} outside [0, ${K})`);
    count[l]!++;
  }
  assert.deepEqual([...count], new Array(K).fill(size));
}

function bruteForceBest(score: Float32Array, n: number, K: number, cap: number): number {
  let best = -Infinity;
  const lab = new Int32Array(n), cnt = new Int32Array(K);
  const rec = (i: number, acc: number) => {
    if (i === n) {
      best = Math.max(best, acc);
      return;
    }
    for (let j = 0; j < K; j++) {
      if (cnt[j]! >= cap) continue;
      cnt[j]!++;
      lab[i] = j;
      rec(i + 1, acc + score[i * K + j]!);
      cnt[j]!--;
    }
  };
  rec(0, 0);
  return best;
}

Deno.test("balancedAssign() reaches the optimum of small problems (brute force) with every cluster exactly full", () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 20; trial++) {
    const K = 2 + (trial % 3), cap = 1 + (trial % 2) + (trial % 3 === 0 ? 1 : 0), n = K * cap;
    const score = rng.normals(n * K);
    // Every other trial: integer scores with many ties.
    if (trial % 2) { for (let i = 0; i < score.length; i++) score[i] = Math.round(score[i]! * 2); }
    const r = balancedAssign(score, n, K, cap, { epsFinal: 1e-7, candidates: 2 });
    assertBalanced(r.labels, K, cap);
    const best = bruteForceBest(score, n, K, cap);
    assert.ok(r.total >= best - 1e-4, `trial ${trial}: auction ${r.total} < optimum ${best}`);
    // Warm start from these prices on a perturbed problem: still balanced and optimal.
    const next = Float32Array.from(score, (v) => v + 0.3 * rng.normal());
    const w = balancedAssign(next, n, K, cap, { epsFinal: 1e-7, candidates: 2, prices: r.prices });
    assertBalanced(w.labels, K, cap);
    const bestNext = bruteForceBest(next, n, K, cap);
    assert.ok(w.total >= bestNext - 1e-4, `trial ${trial} warm: auction ${w.total} < optimum ${bestNext}`);
  }
});

Deno.test("balancedAssign() stays exactly balanced on adversarial inputs: identical rows, one cluster wanted by all", () => {
  const n = 96, K = 12, cap = 8;
  const same = new Float32Array(n * K);
  for (let i = 0; i < n; i++) for (let j = 0; j < K; j++) same[i * K + j] = j * 0.1; // all prefer the last
  assertBalanced(balancedAssign(same, n, K, cap).labels, K, cap);
  assertBalanced(balancedAssign(new Float32Array(n * K), n, K, cap).labels, K, cap); // all zero: all ties
  const rng = new Rng(3);
  const popular = rng.normals(n * K, 0.01);
  for (let i = 0; i < n; i++) popular[i * K + 5] = 10; // cluster 5 is everybody's favourite by far
  const r = balancedAssign(popular, n, K, cap, { candidates: 2 });
  assertBalanced(r.labels, K, cap);
  assert.ok(r.fullScans > 0, "candidate lists cannot decide once cluster 5 is full");
  assert.throws(() => balancedAssign(new Float32Array(10 * 3), 10, 3, 3), GroupingError);
});

Deno.test("expert_size must divide d_ff: the error names the key and the sizes that do", () => {
  assert.equal(expertsPerLayer(11008, 32), 344);
  assert.throws(() => expertsPerLayer(512, 48), (e: Error) => {
    assert.ok(e instanceof GroupingError);
    assert.match(e.message, /expert_size 48 does not divide the model's d_ff 512/);
    assert.match(e.message, /32, 64/);
    return true;
  });
  assert.throws(() => expertsPerLayer(512, 0), /expert_size must be a positive integer/);
  assert.throws(() => randomLabels(100, 32, 0), /expert_size 32 does not divide/);
});

/** Planted clusters: `K` centres, `size` noisy copies each, rows shuffled. */
function planted(K: number, size: number, d: number, seed: number): { x: Float32Array; truth: Int32Array } {
  const rng = new Rng(seed);
  const centres = rng.normals(K * d);
  const n = K * size;
  const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  const x = new Float32Array(n * d), truth = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    const i = order[p]!, c = Math.floor(p / size);
    truth[i] = c;
    for (let k = 0; k < d; k++) x[i * d + k] = centres[c * d + k]! + 0.05 * rng.normal();
  }
  return { x, truth };
}

/** Same partition up to renaming the clusters. */
function samePartition(a: Int32Array, b: Int32Array): boolean {
  const map = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    const m = map.get(a[i]!);
    if (m === undefined) map.set(a[i]!, b[i]!);
    else if (m !== b[i]) return false;
  }
  return new Set(map.values()).size === map.size;
}

Deno.test("balancedKmeans() recovers planted balanced clusters exactly, deterministically per seed", async () => {
  const { x, truth } = planted(8, 4, 16, 1);
  const run = (seed: number) => balancedKmeans(x, 32, 16, { size: 4, seed, iterations: 20, device: "cpu" });
  const a = await run(0), b = await run(0);
  assertBalanced(a.labels, 8, 4);
  assert.ok(samePartition(a.labels, truth), `labels ${a.labels} vs planted ${truth}`);
  assert.deepEqual(a.labels, b.labels);
  assert.deepEqual(a.history, b.history);
  // Inertia of the planted partition is tiny: 32 rows x 16 dims x 0.05² noise.
  assert.ok(a.inertia < 32 * 16 * 0.0025 * 1.5, `inertia ${a.inertia}`);
});

Deno.test("balancedKmeans() on duplicate rows and on unbalanced clusters still fills every expert exactly", async () => {
  // 40 identical rows + 8 others; clusters of 8: duplicates must spill over into several experts.
  const d = 8, rng = new Rng(5);
  const row = rng.normals(d);
  const x = new Float32Array(48 * d);
  for (let i = 0; i < 40; i++) x.set(row, i * d);
  x.set(rng.normals(8 * d), 40 * d);
  const r = await balancedKmeans(x, 48, d, { size: 8, seed: 1, iterations: 10, device: "cpu" });
  assertBalanced(r.labels, 6, 8);
  // Two tight clusters of 12 and 4 (unequal) into experts of 8.
  const { x: y } = planted(2, 8, 8, 9);
  const big = new Float32Array(16 * 8);
  big.set(y.subarray(0, 12 * 8));
  big.set(new Rng(2).normals(4 * 8), 12 * 8);
  assertBalanced((await balancedKmeans(big, 16, 8, { size: 8, seed: 0, iterations: 10, device: "cpu" })).labels, 2, 8);
});

Deno.test("groupLayer(): kmeans beats a random grouping on clustered features; random method is balanced and seeded", async () => {
  const { x } = planted(16, 8, 24, 4);
  const opts = { expertSize: 8, seed: 3, iterations: 15, device: "cpu" as const };
  const km = await groupLayer(0, Float32Array.from(x), 128, 24, { ...opts, method: "kmeans" });
  assertBalanced(km.labels, 16, 8);
  assert.ok(km.intraCosine > 0.9, `kmeans intra cosine ${km.intraCosine}`);
  assert.ok(km.randomIntraCosine < 0.3, `random intra cosine ${km.randomIntraCosine}`);
  const r1 = await groupLayer(2, Float32Array.from(x), 128, 24, { ...opts, method: "random" });
  const r2 = await groupLayer(2, Float32Array.from(x), 128, 24, { ...opts, method: "random" });
  assertBalanced(r1.labels, 16, 8);
  assert.deepEqual(r1.labels, r2.labels);
  assert.equal(r1.intraCosine, r1.randomIntraCosine);
  // The permutation puts expert e's neurons at [8e, 8e+8).
  for (let i = 0; i < 128; i++) assert.equal(km.labels[km.permutation[i]!], Math.floor(i / 8));
  assert.throws(() => permutationFromLabels(new Int32Array([0, 0, 0, 1]), 2, 2), /not balanced/);
});

Deno.test("WorkerAssigner gives the same grouping as the inline assignment", async () => {
  const { x } = planted(8, 8, 16, 6);
  const noisy = Float32Array.from(x, (v, i) => v + 0.5 * Math.sin(i));
  const opts = { method: "kmeans" as const, expertSize: 8, seed: 0, iterations: 6, device: "cpu" as const };
  const inline = await groupLayers(2, () => ({ data: Float32Array.from(noisy), n: 64, d: 16 }), opts);
  const pool = new WorkerAssigner(1); // one thread (each worker is type-checked under deno test), two layers queued
  try {
    const threaded = await groupLayers(2, () => ({ data: Float32Array.from(noisy), n: 64, d: 16 }), {
      ...opts,
      assigner: pool,
      concurrency: 2,
    });
    for (let l = 0; l < 2; l++) assert.deepEqual(threaded[l]!.labels, inline[l]!.labels);
  } finally {
    pool.close();
  }
});

for (const family of ["gpt2", "llama"] as const) {
  Deno.test(`permuting the FFN neurons by the grouping keeps ${family} logits (CPU)`, async () => {
    const cfg = resolveModelConfig({
      family,
      vocab_size: 40,
      n_layer: 2,
      d_model: 16,
      n_head: 2,
      d_ff: 48,
      max_seq: 8,
    });
    const m = DecoderLM.init(cfg, { device: "cpu", seed: 11 });
    // Non-zero GPT-2 c_fc biases, so a bias left unpermuted would change the logits.
    const arrays = m.toArrays();
    if (family === "gpt2") {
      for (let l = 0; l < 2; l++) arrays.set(`transformer.h.${l}.mlp.c_fc.bias`, new Rng(l).normals(48, 0.5));
    }
    const base = DecoderLM.fromArrays(cfg, arrays, { device: "cpu" });
    const permuted = new Map(arrays);
    for (let l = 0; l < 2; l++) {
      const g = await groupLayer(l, neuronFeatures(cfg, l, (n) => arrays.get(n)!), 48, 16, {
        method: "kmeans",
        expertSize: 8,
        seed: 0,
        iterations: 5,
        device: "cpu",
      });
      assert.notDeepEqual([...g.permutation], [...Array(48).keys()], "a non-trivial permutation");
      for (const [name, a] of permuteFfn(cfg, l, g.permutation, (n) => arrays.get(n)!)) permuted.set(name, a);
    }
    const moved = DecoderLM.fromArrays(cfg, permuted, { device: "cpu" });
    const ids = new Int32Array([1, 7, 3, 39, 0, 12]);
    const logits = (model: DecoderLM) =>
      scope(() => noGrad(() => model.forward(Tensor.fromArray(ids, [1, 6])).toArray() as Float32Array));
    const a = logits(base), b = logits(moved);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst < 1e-5, `max |logit difference| ${worst}`);
    // A wrong permutation (down/c_proj left alone) does change them: the test can fail.
    const broken = new Map(permuted);
    const out = family === "gpt2" ? "transformer.h.0.mlp.c_proj.weight" : "model.layers.0.mlp.down_proj.weight";
    broken.set(out, arrays.get(out)!);
    const wrong = DecoderLM.fromArrays(cfg, broken, { device: "cpu" });
    const c = logits(wrong);
    assert.ok(a.some((v, i) => Math.abs(v - c[i]!) > 1e-3));
    for (const x of [m, base, moved, wrong]) x.dispose();
  });
}
