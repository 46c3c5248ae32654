/**
 * LTE routing modes and losses on tiny CPU models: finite-difference gradients of L_eff, L_sep
 * and the soft scaling (through the whole model, into the router weights and the FFN input),
 * scores exactly at τ are off, hard mode with every expert on and soft mode with every score 1
 * equal dense, and the generic mask hook.
 */
import assert from "node:assert/strict";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { routerBiasName, routerWeightName } from "../models/lte_artifacts.ts";
import { createRouting, type FfnMode, hardMask, initRouterArrays, routingArrays } from "../models/routing.ts";
import { routerLosses, tokenMask } from "../lte/losses.ts";
import { add, backward, crossEntropy, noGrad, Rng, scale, scope, Tensor } from "../tensor/mod.ts";
import { IGNORE_INDEX } from "../text/dataset.ts";

const B = 2, T = 6, VOCAB = 23;

function tinyModel(family: "gpt2" | "llama", seed = 1): DecoderLM {
  const cfg = resolveModelConfig(
    family === "gpt2"
      ? { family, vocab_size: VOCAB, n_layer: 2, d_model: 16, n_head: 2, d_ff: 32, max_seq: T }
      : { family, vocab_size: VOCAB, n_layer: 2, d_model: 16, n_head: 2, n_kv_head: 1, d_ff: 32, max_seq: T },
  );
  const m = DecoderLM.init(cfg, { device: "cpu", seed });
  // Larger weights than the 0.02 init so every path carries signal.
  for (const t of m.parameters()) {
    if (t.shape.length === 2) t.write(new Rng(seed + t.size).normals(t.size, 0.3));
  }
  return m;
}

function attach(m: DecoderLM, mode: FfnMode, arrays: Map<string, Float32Array>, trainable = true): void {
  m.routing = createRouting(m.config, arrays, { mode, expertSize: 4, tau: 0.5, trainable, device: "cpu" });
}

function randomRouters(m: DecoderLM, seed: number, bias?: number): Map<string, Float32Array> {
  const a = initRouterArrays(m.config, () => new Float32Array(0), { expertSize: 4, init: "linear", seed });
  for (const [k, v] of a) a.set(k, v.map((x) => x * 4));
  if (bias !== undefined) {
    for (let i = 0; i < m.config.n_layer; i++) a.set(routerBiasName(i), new Float32Array(8).fill(bias));
  }
  return a;
}

const ids = () => Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % VOCAB);
const tgts = () => Int32Array.from({ length: B * T }, (_, i) => (i * 5 + 1) % VOCAB);

function logitsOf(m: DecoderLM): Float32Array {
  return scope(() => noGrad(() => m.forward(Tensor.fromArray(ids(), [B, T])).toArray() as Float32Array));
}

for (const family of ["gpt2", "llama"] as const) {
  Deno.test(`routing (${family}): hard mode with every expert on and soft mode with every score 1 equal dense`, () => {
    const m = tinyModel(family);
    try {
      const dense = logitsOf(m);
      attach(m, "hard", randomRouters(m, 3, 30)); // bias 30: every score > 0.5
      assert.deepEqual(logitsOf(m), dense);
      m.routing!.mode = "soft";
      // sigmoid(x·w + 200) rounds to exactly 1.0f for these inputs.
      for (const b of m.routing!.biases!) b.write(new Float32Array(8).fill(200));
      assert.deepEqual(logitsOf(m), dense);
      m.routing!.mode = "dense";
      for (const b of m.routing!.biases!) b.write(new Float32Array(8).fill(-200));
      assert.deepEqual(logitsOf(m), dense, "dense mode ignores the routers");
      m.routing!.mode = "hard";
      assert.notDeepEqual(logitsOf(m), dense, "hard mode with every expert off differs");
    } finally {
      m.dispose();
    }
  });
}

Deno.test("routing: a score exactly at τ is off (strict >), and collectScores returns (R, N) per layer", () => {
  const m = tinyModel("llama");
  try {
    const zero = new Map<string, Float32Array>();
    for (let i = 0; i < 2; i++) zero.set(routerWeightName(i), new Float32Array(8 * 16));
    attach(m, "hard", zero); // x·0 = 0 -> sigmoid = 0.5 exactly
    scope(() =>
      noGrad(() => {
        const r = m.forward(Tensor.fromArray(ids(), [B, T]), { collectScores: true });
        assert.equal(r.scores.length, 2);
        for (const g of r.scores) {
          assert.deepEqual(g.shape, [B * T, 8]);
          assert.ok((g.toArray() as Float32Array).every((v) => v === 0.5));
          assert.ok((hardMask(g, 0.5).toArray() as Float32Array).every((v) => v === 0));
        }
      })
    );
    // Every expert off: the FFN adds nothing, so the logits equal a model whose FFN output
    // weights are zero.
    const off = logitsOf(m);
    m.routing!.mode = "dense";
    m.param("model.layers.0.mlp.down_proj.weight").write(new Float32Array(16 * 32));
    m.param("model.layers.1.mlp.down_proj.weight").write(new Float32Array(16 * 32));
    assert.deepEqual(logitsOf(m), off);
  } finally {
    m.dispose();
  }
});

Deno.test("routing: collectScores on a dense model and a bad mask hook are clear errors", () => {
  const m = tinyModel("gpt2");
  try {
    assert.throws(() => m.forward(Tensor.fromArray(ids(), [B, T]), { collectScores: true }), /needs routers/);
    m.ffnMask = () => Tensor.zeros([B * T, 3]);
    assert.throws(() => logitsOf(m), /mask .* must be \(R, N\) experts/);
    // A neuron mask of ones and an expert mask of ones leave the logits unchanged.
    m.ffnMask = null;
    const dense = logitsOf(m);
    m.ffnMask = (_l, _x, h) => Tensor.fromArray(new Float32Array(h.size).fill(1), h.shape);
    assert.deepEqual(logitsOf(m), dense);
    m.ffnMask = () => Tensor.fromArray(new Float32Array(B * T * 4).fill(1), [B * T, 4]);
    assert.deepEqual(logitsOf(m), dense);
  } finally {
    m.dispose();
  }
});

/** Central-difference check of d loss / d (one host array entry). */
function fdCheck(
  lossAt: () => number,
  set: (v: number) => void,
  orig: number,
  analytic: number,
  h: number,
  what: string,
): void {
  set(orig + h);
  const up = lossAt();
  set(orig - h);
  const dn = lossAt();
  set(orig);
  const numeric = (up - dn) / (2 * h);
  assert.ok(
    Math.abs(analytic - numeric) <= 2e-3 + 3e-2 * Math.abs(numeric),
    `${what}: analytic ${analytic} vs numeric ${numeric}`,
  );
}

Deno.test("losses: L_eff and L_sep match their definitions and finite differences (with a padding mask)", () => {
  const R = 5, N = 7;
  const rng = new Rng(4);
  // Scores in (0, 1), kept at least 0.08 from τ so the finite-difference step stays in one regime.
  const data = [0, 1].map(() =>
    Float32Array.from({ length: R * N }, () => {
      const v = rng.uniform();
      return v < 0.5 ? Math.min(v, 0.42) : Math.max(v, 0.58);
    })
  );
  const maskArr = Float32Array.from([1, 1, 0, 1, 1]);
  const eps = 1e-4, tau = 0.5;
  const hostLosses = () => {
    let e = 0, s = 0, c = 0;
    for (const d of data) {
      for (let r = 0; r < R; r++) {
        if (!maskArr[r]) continue;
        for (let j = 0; j < N; j++) {
          const g = d[r * N + j]!;
          e += g * g;
          s += 1 / ((g - tau) ** 2 + eps);
          c++;
        }
      }
    }
    return { eff: e / c, sep: s / c };
  };
  scope(() => {
    const gs = data.map((d) => Tensor.fromArray(d, [R, N], { requiresGrad: true }));
    const rowMask = Tensor.fromArray(maskArr, [R, 1]);
    const l = routerLosses(gs, { tau, eps, rowMask, count: 4 });
    const want = hostLosses();
    assert.ok(Math.abs(l.eff.item() - want.eff) < 1e-6 * want.eff);
    assert.ok(Math.abs(l.sep.item() - want.sep) < 1e-5 * want.sep);
    // d/dg of 0.7 L_eff + 0.5 L_sep, against host finite differences in double.
    backward(add(scale(l.eff, 0.7), scale(l.sep, 0.5)));
    for (let k = 0; k < 2; k++) {
      const grad = gs[k]!.grad!.toArray();
      for (const idx of [0, 3, 2 * N + 1, 4 * N + 6, 3 * N + 2]) {
        const orig = data[k]![idx]!;
        fdCheck(
          () => {
            const x = hostLosses();
            return 0.7 * x.eff + 0.5 * x.sep;
          },
          (v) => (data[k]![idx] = v),
          orig,
          grad[idx]!,
          1e-4,
          `scores[${k}][${idx}]`,
        );
        if (maskArr[Math.floor(idx / N)] === 0) assert.equal(grad[idx], 0, "padding rows get no gradient");
      }
    }
  });
});

Deno.test("losses: soft scaling — gradients of task + η L_eff + λ L_sep into router weights and biases", () => {
  const m = tinyModel("gpt2", 5);
  try {
    attach(m, "soft", randomRouters(m, 9, 0.3));
    const lossAt = () => {
      const r = m.forward(Tensor.fromArray(ids(), [B, T]), { collectScores: true });
      const l = routerLosses(r.scores, { tau: 0.5 });
      const ce = crossEntropy(r.logits, Tensor.fromArray(tgts(), [B, T]));
      return add(ce, add(scale(l.eff, 0.8), scale(l.sep, 0.01)));
    };
    scope(() => backward(lossAt()));
    const w = m.routing!.weights[1]!, b = m.routing!.biases![0]!;
    const gw = w.grad!.toArray(), gb = b.grad!.toArray();
    const value = () => scope(() => noGrad(() => lossAt().item()));
    for (const [t, g, idxs] of [[w, gw, [0, 17, 101]], [b, gb, [0, 5]]] as const) {
      const host = t.toArray() as Float32Array;
      for (const i of idxs) {
        fdCheck(
          value,
          (v) => {
            host[i] = v;
            t.write(host);
          },
          host[i]!,
          g[i]!,
          1e-3,
          `${t.name}[${i}]`,
        );
      }
    }
    // The soft scaling also routes gradient into the FFN weights of an expert.
    assert.ok((m.param("transformer.h.0.mlp.c_fc.weight").grad!.toArray() as Float32Array).some((v) => v !== 0));
  } finally {
    m.dispose();
  }
});

// lossScoresDetached (router-train's router.losses_train_model: false, nineteenth session): the
// collected scores come from the detached FFN input, so L_eff and L_sep train the routers and nothing
// else, while the FFN's own soft scaling still gets the live scores (the same values).
Deno.test("routing: lossScoresDetached keeps the router losses' gradient out of the model", () => {
  const grads = (detached: boolean) => {
    const m = tinyModel("llama", 6);
    try {
      attach(m, "soft", randomRouters(m, 4, 0.2));
      m.routing!.lossScoresDetached = detached;
      const r = m.forward(Tensor.fromArray(ids(), [B, T]), { collectScores: true });
      const l = routerLosses(r.scores, { tau: 0.5 });
      scope(() => backward(add(scale(l.eff, 0.8), scale(l.sep, 0.01))));
      const g = (t: Tensor) => Array.from((t.grad?.toArray() as Float32Array | undefined) ?? []);
      return {
        scores: r.scores.map((t) => Array.from(t.toArray() as Float32Array)),
        router: g(m.routing!.weights[0]!),
        lastRouter: g(m.routing!.weights[m.config.n_layer - 1]!),
        model: g(m.param("model.layers.0.self_attn.q_proj.weight")),
      };
    } finally {
      m.dispose();
    }
  };
  const joint = grads(false), apart = grads(true);
  assert.deepEqual(apart.scores, joint.scores, "the same score values");
  assert.ok(joint.model.some((v) => v !== 0), "joint: the router losses reach the attention weights");
  assert.ok(apart.model.every((v) => v === 0), "detached: no gradient into the model");
  assert.ok(apart.router.some((v) => v !== 0), "detached: the routers still learn");
  // joint, layer 0's router also learns from the later layers' losses (through its FFN's output,
  // their input); the last layer's router only ever learns from its own: the same gradient
  assert.notDeepEqual(apart.router, joint.router, "layer 0's router gradient");
  assert.deepEqual(apart.lastRouter, joint.lastRouter, "the last layer's router gradient");
});

Deno.test("losses: tokenMask zeroes only trailing padding", () => {
  const P = 0, I = IGNORE_INDEX;
  const inputs = Int32Array.from([5, 6, 7, P, P, /**/ 5, P, 6, 7, 8]);
  const targets = Int32Array.from([6, 7, I, I, I, /**/ I, 6, 7, 8, 9]);
  const { mask, count } = tokenMask(inputs, targets, 2, 5, P);
  assert.deepEqual([...mask!], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
  assert.equal(count, 8);
  assert.equal(tokenMask(Int32Array.from([1, 2]), Int32Array.from([2, 3]), 1, 2, P).mask, null);
});

Deno.test("routing: centroid init is the renormalised mean of each expert's normalised gate rows", () => {
  const m = tinyModel("llama");
  try {
    const gate = (l: number) => m.param(`model.layers.${l}.mlp.gate_proj.weight`).toArray() as Float32Array;
    const a = initRouterArrays(m.config, gate, { expertSize: 4, init: "centroid", seed: 0 });
    const w = a.get(routerWeightName(1))!;
    const g = gate(1);
    // Expert 2 = neurons 8..11: direction of the mean of unit rows, norm = mean row norm.
    const c = 16, mean = new Float64Array(c);
    let normSum = 0;
    for (let j = 8; j < 12; j++) {
      const row = g.subarray(j * c, (j + 1) * c);
      const nrm = Math.hypot(...row);
      normSum += nrm;
      for (let k = 0; k < c; k++) mean[k]! += row[k]! / nrm;
    }
    const mn = Math.hypot(...mean);
    for (let k = 0; k < c; k++) assert.ok(Math.abs(w[2 * c + k]! - (mean[k]! / mn) * (normSum / 4)) < 1e-5);
    attach(m, "soft", a);
    assert.deepEqual(routingArrays(m.routing!).get(routerWeightName(1)), w);
  } finally {
    m.dispose();
  }
});
