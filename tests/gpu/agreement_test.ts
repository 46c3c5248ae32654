/**
 * CPU <-> CUDA agreement for every op, forward and backward (in the spirit of ggml's
 * test-backend-ops): the same seeded inputs run on both backends; outputs and the gradients of
 * L = sum(op(x) * R) are compared elementwise with |cuda - cpu| <= atol + rtol * |cpu|.
 *
 * Tolerances (f32, TF32 off): default atol = rtol = 1e-4. The CPU reference accumulates in
 * double, CUDA in float with a different order; for the shapes here (reductions over at most a
 * few thousand terms of magnitude <= 1) that ordering error is below ~1e-5, so 1e-4 catches any
 * real bug (wrong index, missing term) while never flaking on rounding. Integer outputs (argmax,
 * sampling) must match exactly.
 *
 * Runs only where the CUDA library and a GPU are available; LTE_REQUIRE_CUDA=1 (deno task
 * test:gpu) turns a missing GPU into a failure. A JSON summary (ops checked, worst error per op)
 * is written to $LTE_AGREEMENT_REPORT when set.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { Option } from "../../ffi/symbols.ts";
import {
  AdamW,
  attention,
  backward,
  crossEntropy,
  embedding,
  gradNorm,
  layerNorm,
  matmul,
  mul,
  rmsNorm,
  Rng,
  scope,
  sum,
  Tensor,
} from "../../tensor/mod.ts";
import { makeInputs, OP_CASES, type OpCase, toTensors } from "../_op_cases.ts";

const required = Deno.env.get("LTE_REQUIRE_CUDA") === "1";
const haveCuda = backendAvailable("cuda");
if (required && !haveCuda) {
  Deno.test("CUDA backend is available", () => {
    getBackend("cuda"); // throws the real reason
  });
}

/** Larger shapes that exercise multi-block and multi-warp paths of the CUDA kernels. */
const LARGE_CASES: OpCase[] = [
  {
    name: "matmul/large odd",
    inputs: [{ shape: [3, 129, 257] }, { shape: [3, 257, 65] }],
    fn: ([a, b]) => matmul(a!, b!),
    agree: { atol: 2e-4, rtol: 1e-4 },
  },
  {
    name: "layerNorm/C=1029",
    inputs: [{ shape: [33, 1029], lo: -3, hi: 3 }, { shape: [1029] }, { shape: [1029] }],
    fn: ([x, w, b]) => layerNorm(x!, w!, b!),
    agree: { atol: 2e-4, rtol: 1e-4 },
  },
  {
    name: "rmsNorm/C=1029",
    inputs: [{ shape: [33, 1029], lo: -3, hi: 3 }, { shape: [1029] }],
    fn: ([x, w]) => rmsNorm(x!, w!),
    agree: { atol: 2e-4, rtol: 1e-4 },
  },
  {
    name: "attention/T=77 D=64 GQA",
    inputs: [{ shape: [2, 77, 8, 64] }, { shape: [2, 77, 2, 64] }, { shape: [2, 77, 2, 64] }],
    fn: ([q, k, v]) => attention(q!, k!, v!),
    agree: { atol: 2e-4, rtol: 1e-4 },
  },
  {
    name: "crossEntropy/V=50257",
    inputs: [{ shape: [3, 50257], lo: -4, hi: 4 }, { shape: [3], kind: "i32", values: [0, 50256, 12345] }],
    fn: ([l, t]) => crossEntropy(l!, t!),
    agree: { atol: 1e-4, rtol: 1e-4 },
  },
];

interface Worst {
  op: string;
  checked: number;
  worstAbs: number;
  worstRel: number;
  tolerance: string;
}
const report: Worst[] = [];

function compare(
  name: string,
  what: string,
  cpu: ArrayLike<number>,
  gpu: ArrayLike<number>,
  atol: number,
  rtol: number,
  w: Worst,
) {
  assert.equal(gpu.length, cpu.length, `${name} ${what}: lengths differ`);
  for (let i = 0; i < cpu.length; i++) {
    const c = cpu[i]!, g = gpu[i]!;
    const err = Math.abs(c - g);
    w.checked++;
    w.worstAbs = Math.max(w.worstAbs, err);
    w.worstRel = Math.max(w.worstRel, err / Math.max(Math.abs(c), 1e-6));
    if (!(err <= atol + rtol * Math.abs(c))) {
      assert.fail(
        `${name} ${what}[${i}]: cuda ${g} vs cpu ${c} (|diff| ${err.toExponential(2)} > ${atol} + ${rtol}·|cpu|)`,
      );
    }
  }
}

function runOn(c: OpCase, device: "cpu" | "cuda", data: (Float32Array | Int32Array)[]) {
  return scope(() => {
    const xs = toTensors(c, data, device);
    const y = c.fn(xs);
    const out = y.toArray();
    const grads: (Float32Array | null)[] = [];
    if (!c.exact && y.requiresGrad) {
      const r = new Rng(99).uniforms(y.size, -1, 1);
      backward(sum(mul(y, Tensor.fromArray(r, y.shape, { device }))));
      for (const x of xs) grads.push(x.grad ? (x.grad.toArray() as Float32Array) : null);
    }
    return { out, grads };
  });
}

for (const c of [...OP_CASES, ...LARGE_CASES]) {
  Deno.test({
    name: `cuda agrees with cpu: ${c.name} (forward${c.exact ? "" : " and backward"})`,
    ignore: !haveCuda,
    fn() {
      const data = makeInputs(c, 11);
      const atol = c.agree?.atol ?? 1e-4, rtol = c.agree?.rtol ?? 1e-4;
      const w: Worst = {
        op: c.name,
        checked: 0,
        worstAbs: 0,
        worstRel: 0,
        tolerance: c.exact ? "exact" : `${atol} + ${rtol}|cpu|`,
      };
      const cpu = runOn(c, "cpu", data);
      const gpu = runOn(c, "cuda", data);
      if (c.exact) {
        assert.deepEqual([...gpu.out], [...cpu.out], `${c.name}: integer outputs differ`);
        w.checked += cpu.out.length;
      } else {
        compare(c.name, "forward", cpu.out, gpu.out, atol, rtol, w);
        cpu.grads.forEach((g, i) => {
          if (g) compare(c.name, `grad of input ${i}`, g, gpu.grads[i]!, atol, rtol, w);
        });
      }
      report.push(w);
    },
  });
}

Deno.test({
  name: "cuda deterministic mode: embedding backward with repeated ids is bit-identical run to run and agrees with cpu",
  ignore: !haveCuda,
  fn() {
    const be = getBackend("cuda");
    const V = 1000, C = 96, N = 4096;
    const rng = new Rng(5);
    const ids = Int32Array.from({ length: N }, () => rng.int(17) * 7); // few distinct rows: heavy collisions
    const dout = rng.uniforms(N * C, -1, 1);
    const grad = (device: "cpu" | "cuda") =>
      scope(() => {
        const w = Tensor.zeros([V, C], { device, requiresGrad: true });
        const y = embedding(Tensor.fromArray(ids, [N], { device }), w);
        backward(y, Tensor.fromArray(dout, [N, C], { device }));
        return w.grad!.toArray();
      });
    be.setOption(Option.DETERMINISTIC, 1);
    try {
      const a = grad("cuda"), b = grad("cuda"), cpu = grad("cpu");
      assert.deepEqual(a, b, "deterministic embedding backward differs between runs");
      for (let i = 0; i < a.length; i++) {
        assert.ok(Math.abs(a[i]! - cpu[i]!) <= 1e-4 + 1e-4 * Math.abs(cpu[i]!), `index ${i}: ${a[i]} vs ${cpu[i]}`);
      }
    } finally {
      be.setOption(Option.DETERMINISTIC, 0);
    }
  },
});

Deno.test({
  name: "cuda agrees with cpu: AdamW steps with clipping (sum of squares, grad scale, weight decay)",
  ignore: !haveCuda,
  fn() {
    const n = 10_007; // odd length: partial blocks in every kernel
    const rng = new Rng(9);
    const p0 = rng.uniforms(n, -1, 1), grads = [rng.uniforms(n, -3, 3), rng.uniforms(n, -3, 3), rng.uniforms(n, -3, 3)];
    const run = (device: "cpu" | "cuda") => {
      const p = Tensor.fromArray(p0, [n], { device, requiresGrad: true }).keep();
      const opt = new AdamW([p], { lr: 1e-2, weightDecay: 0.1, decay: () => true });
      const norms: number[] = [];
      try {
        for (const g of grads) {
          p.grad?.dispose();
          p.grad = Tensor.fromArray(g, [n], { device }).keep();
          const { norm, scale } = gradNorm([p], 50);
          norms.push(norm);
          opt.update({ gradScale: scale });
        }
        return { p: p.toArray(), norms };
      } finally {
        opt.dispose();
        p.dispose();
      }
    };
    const cpu = run("cpu"), gpu = run("cuda");
    const w: Worst = { op: "adamw + grad norm", checked: 0, worstAbs: 0, worstRel: 0, tolerance: "1e-5 + 1e-5|cpu|" };
    compare("adamw", "grad norm", cpu.norms, gpu.norms, 1e-5, 1e-5, w);
    compare("adamw", "parameters after 3 steps", cpu.p, gpu.p, 1e-5, 1e-5, w);
    report.push(w);
  },
});

// Last, so it summarises every test above.
Deno.test({
  name: "cuda agreement report",
  ignore: !haveCuda,
  fn() {
    const path = Deno.env.get("LTE_AGREEMENT_REPORT");
    const info = getBackend("cuda").deviceInfo();
    const lines = report.map((w) =>
      `${w.op.padEnd(36)} ${String(w.checked).padStart(8)} values  worst abs ${
        w.worstAbs.toExponential(2)
      }  worst rel ${w.worstRel.toExponential(2)}  tol ${w.tolerance}`
    );
    console.log(`device: ${JSON.stringify(info)}\n${lines.join("\n")}`);
    if (path) writeFileSync(path, JSON.stringify({ device: info, ops: report }, null, 2));
  },
});
