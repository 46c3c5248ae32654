/**
 * Finite-difference check of every differentiable op through the TypeScript autograd (CPU
 * backend). The native C-level check of each backward kernel is tests/native_cpu_test.ts; this
 * one also checks the autograd wiring (which gradient goes where, accumulation, transposes).
 *
 * Loss: L = sum(op(x) * R) with a fixed random R, computed in double on the host for the
 * numeric side. Central differences with h = 1e-2 on f32 data: truncation error O(h^2) ~1e-4
 * for these smooth ops, rounding error ~|L| * 6e-8 / 2h ~1e-5; the tolerance
 * |analytic - numeric| <= 5e-3 + 3e-2 |numeric| leaves a wide margin above both while still
 * catching any wrong or missing term (those are O(1) relative errors).
 */
import assert from "node:assert/strict";
import {
  add,
  backward,
  crossEntropy,
  linear,
  liveCounts,
  mul,
  noGrad,
  Rng,
  scale,
  scope,
  sum,
  Tensor,
} from "../tensor/mod.ts";
import { makeInputs, OP_CASES, toTensors } from "./_op_cases.ts";

function dot(y: Float32Array | Int32Array, r: Float32Array): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i]! * r[i]!;
  return s;
}

for (const c of OP_CASES) {
  if (c.fd === false) continue;
  Deno.test(`gradcheck: ${c.name} backward matches finite differences`, () => {
    const before = liveCounts();
    const data = makeInputs(c, 7);
    const fd = c.fd || {};
    const h = fd.h ?? 1e-2, atol = fd.atol ?? 5e-3, rtol = fd.rtol ?? 3e-2;
    scope(() => {
      const xs = toTensors(c, data, "cpu");
      const y = c.fn(xs);
      const r = new Rng(99).uniforms(y.size, -1, 1);
      const loss = sum(mul(y, Tensor.fromArray(r, y.shape)));
      backward(loss);
      const pick = new Rng(5);
      c.inputs.forEach((spec, i) => {
        if (spec.kind === "i32" || spec.grad === false) return;
        const x = xs[i]!;
        assert.ok(x.grad, `${c.name}: input ${i} got no gradient`);
        const analytic = x.grad!.toArray();
        const host = data[i] as Float32Array;
        const idx = host.length <= 16 ? [...host.keys()] : Array.from({ length: 16 }, () => pick.int(host.length));
        for (const j of idx) {
          const orig = host[j]!;
          const evalAt = (v: number) => {
            host[j] = v;
            const val = scope(() =>
              noGrad(() => {
                const ys = c.fn(toTensors(c, data, "cpu"));
                return dot(ys.toArray(), r);
              })
            );
            host[j] = orig;
            return val;
          };
          const numeric = (evalAt(orig + h) - evalAt(orig - h)) / (2 * h);
          const a = analytic[j]!;
          assert.ok(
            Math.abs(a - numeric) <= atol + rtol * Math.abs(numeric),
            `${c.name}: d/dx${i}[${j}] analytic ${a} vs numeric ${numeric}`,
          );
        }
      });
    });
    assert.deepEqual(liveCounts(), before, `${c.name}: tensors leaked`);
  });
}

Deno.test("gradcheck: gradients accumulate across two backward passes", () => {
  const w = Tensor.fromArray([1, 2, 3], [3], { requiresGrad: true }).keep();
  try {
    for (let i = 0; i < 2; i++) {
      scope(() => backward(sum(mul(w, w))));
    }
    assert.deepEqual([...w.grad!.toArray()], [4, 8, 12]); // 2 * (2w)
  } finally {
    w.dispose();
  }
});

Deno.test("gradcheck: a tensor used twice receives both contributions", () => {
  const x = Tensor.fromArray([0.5, -1], [2], { requiresGrad: true }).keep();
  try {
    scope(() => backward(sum(mul(x, x)))); // d/dx x^2 = 2x through two uses of x in one op
    assert.deepEqual([...x.grad!.toArray()], [1, -2]);
  } finally {
    x.dispose();
  }
});

Deno.test("gradient accumulation: two half-batches scaled by 1/2 give the full batch's mean-loss gradient", () => {
  const w = Tensor.fromArray(new Rng(1).uniforms(6 * 5, -1, 1), [6, 5], { requiresGrad: true }).keep();
  const x = new Rng(2).uniforms(4 * 5, -1, 1);
  const t = new Int32Array([0, 3, 5, 2]);
  try {
    scope(() => backward(crossEntropy(linear(Tensor.fromArray(x, [4, 5]), w), Tensor.fromArray(t, [4]))));
    const full = w.grad!.toArray();
    w.grad!.fill(0);
    for (const half of [0, 1]) {
      scope(() => {
        const xs = Tensor.fromArray(x.subarray(half * 10, half * 10 + 10), [2, 5]);
        const loss = crossEntropy(linear(xs, w), Tensor.fromArray(t.subarray(half * 2, half * 2 + 2), [2]));
        backward(scale(loss, 0.5));
      });
    }
    const acc = w.grad!.toArray();
    for (let i = 0; i < full.length; i++) {
      assert.ok(Math.abs(full[i]! - acc[i]!) < 1e-6, `element ${i}: ${full[i]} vs ${acc[i]}`);
    }
  } finally {
    w.dispose();
  }
});

Deno.test("backward() through an intermediate released by an earlier backward is an error, not silently wrong", () => {
  const x = Tensor.fromArray([1, 2, 3], [3], { requiresGrad: true }).keep();
  try {
    scope(() => {
      const y = mul(x, x);
      backward(sum(y));
      assert.throws(() => backward(sum(y)), /previous backward released; sum the losses and call backward once/);
    });
    assert.deepEqual([...x.grad!.toArray()], [2, 4, 6]); // only the first backward counted
  } finally {
    x.dispose();
  }
});

Deno.test("gradient hand-over (add/reshape) never lets two inputs share one gradient buffer", () => {
  // y = (a + b) used so that a and b both get more contributions after the add hands its
  // gradient over: d/da = 1 + 2a·2 ... checked against the closed form.
  const a = Tensor.fromArray([1, -2, 3], [3], { requiresGrad: true }).keep();
  const b = Tensor.fromArray([0.5, 4, -1], [3], { requiresGrad: true }).keep();
  try {
    scope(() => {
      const h = scale(a, 1); // intermediates: adoption only applies to non-leaves
      const k = scale(b, 1);
      const s1 = add(h, k); // hands its gradient to h (k must get its own copy)
      const loss = sum(add(add(s1, mul(h, h)), mul(k, scale(k, 3)).reshape([3, 1]).reshape([3])));
      backward(loss);
    });
    // dL/da = 1 + 2a, dL/db = 1 + 6b
    assert.deepEqual([...a.grad!.toArray()], [3, -3, 7]);
    assert.deepEqual([...b.grad!.toArray()], [4, 25, -5]);
  } finally {
    a.dispose();
    b.dispose();
  }
});
