/**
 * The op cases shared by the finite-difference gradient check (tests/tensor_gradcheck_test.ts,
 * CPU) and the CPU<->CUDA agreement suite (tests/gpu/agreement_test.ts). Each case builds its
 * inputs from a seed, so both backends see identical data; shapes are deliberately odd (not
 * multiples of warp or block sizes).
 */
import {
  add,
  addBias,
  argmax,
  attention,
  crossEntropy,
  crossEntropyRows,
  type Device,
  embedding,
  expertScale,
  gelu,
  layerNorm,
  linear,
  matmul,
  mean,
  mul,
  rmsNorm,
  Rng,
  rope,
  sampleTopP,
  scale,
  sepPenalty,
  sigmoid,
  silu,
  sliceLast,
  sum,
  swiglu,
  Tensor,
  threshold,
} from "../tensor/mod.ts";

/** How to make one input. */
export interface InputSpec {
  shape: number[];
  /** f32 values: uniform in [lo, hi); i32 values: integers in [0, hi). */
  kind?: "f32" | "i32";
  lo?: number;
  hi?: number;
  /** Differentiable input (default true for f32). */
  grad?: boolean;
  /** Fixed host values instead of random ones. */
  values?: number[];
}

/** One op case. */
export interface OpCase {
  name: string;
  inputs: InputSpec[];
  fn: (xs: Tensor[]) => Tensor;
  /** Finite-difference step and tolerance (|analytic - numeric| <= atol + rtol |numeric|). */
  fd?: { h?: number; atol?: number; rtol?: number } | false;
  /** CPU<->CUDA tolerance on outputs and gradients. */
  agree?: { atol?: number; rtol?: number };
  /** Integer output compared exactly (argmax, sampling). */
  exact?: boolean;
}

/** Builds the host data of a case's inputs. */
export function makeInputs(c: OpCase, seed: number): (Float32Array | Int32Array)[] {
  const rng = new Rng(seed);
  return c.inputs.map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.values) return s.kind === "i32" ? Int32Array.from(s.values) : Float32Array.from(s.values);
    if (s.kind === "i32") return Int32Array.from({ length: n }, () => rng.int(s.hi ?? 2));
    return rng.uniforms(n, s.lo ?? -1, s.hi ?? 1);
  });
}

/** Uploads inputs to a device. */
export function toTensors(c: OpCase, data: (Float32Array | Int32Array)[], device: Device): Tensor[] {
  return c.inputs.map((s, i) =>
    Tensor.fromArray(data[i]!, s.shape, {
      device,
      dtype: s.kind === "i32" ? "i32" : "f32",
      requiresGrad: s.kind !== "i32" && s.grad !== false,
    })
  );
}

// Shapes: B=2, T=5, H=4, HKV=2, D=6 for attention; R=7 rows; C=13 channels.
export const OP_CASES: OpCase[] = [
  { name: "add", inputs: [{ shape: [7, 13] }, { shape: [7, 13] }], fn: ([a, b]) => add(a!, b!) },
  { name: "mul", inputs: [{ shape: [7, 13] }, { shape: [7, 13] }], fn: ([a, b]) => mul(a!, b!) },
  { name: "scale", inputs: [{ shape: [3, 37] }], fn: ([a]) => scale(a!, -1.7, 0.3) },
  { name: "addBias", inputs: [{ shape: [2, 5, 13] }, { shape: [13] }], fn: ([x, b]) => addBias(x!, b!) },
  { name: "addBias/2-D bias", inputs: [{ shape: [3, 5, 13] }, { shape: [5, 13] }], fn: ([x, b]) => addBias(x!, b!) },
  { name: "sum", inputs: [{ shape: [1031] }], fn: ([x]) => sum(x!), agree: { atol: 1e-4, rtol: 1e-5 } },
  { name: "mean", inputs: [{ shape: [17, 9] }], fn: ([x]) => mean(x!) },
  { name: "sliceLast", inputs: [{ shape: [7, 39] }], fn: ([x]) => sliceLast(x!, 13, 13) },
  { name: "gelu", inputs: [{ shape: [1000], lo: -4, hi: 4 }], fn: ([x]) => gelu(x!) },
  { name: "silu", inputs: [{ shape: [1000], lo: -4, hi: 4 }], fn: ([x]) => silu(x!) },
  { name: "sigmoid", inputs: [{ shape: [1000], lo: -5, hi: 5 }], fn: ([x]) => sigmoid(x!) },
  { name: "swiglu", inputs: [{ shape: [9, 31], lo: -3, hi: 3 }, { shape: [9, 31] }], fn: ([g, u]) => swiglu(g!, u!) },
  {
    name: "expertScale/soft",
    inputs: [{ shape: [7, 3 * 32] }, { shape: [7, 3], lo: 0, hi: 1 }],
    fn: ([h, g]) => expertScale(h!, g!, 32),
  },
  {
    name: "expertScale/hard mask",
    inputs: [{ shape: [7, 5 * 4] }, { shape: [7, 5], lo: -1, hi: 1, grad: false }],
    fn: ([h, r]) => expertScale(h!, threshold(r!, 0), 4),
  },
  {
    // Scores in (0, 1) away from tau = 0.5 (the penalty's curvature near tau needs a tiny fd step).
    name: "sepPenalty",
    inputs: [{ shape: [9, 13], values: Array.from({ length: 117 }, (_, i) => (i % 2 ? 0.6 : 0.05) + (i % 7) * 0.05) }],
    fn: ([g]) => sepPenalty(g!, 0.5, 1e-4),
    fd: { h: 1e-3, atol: 1e-2, rtol: 2e-2 },
    agree: { atol: 1e-4, rtol: 1e-5 },
  },
  {
    name: "layerNorm",
    inputs: [{ shape: [7, 37], lo: -2, hi: 2 }, { shape: [37], lo: 0.5, hi: 1.5 }, { shape: [37] }],
    fn: ([x, w, b]) => layerNorm(x!, w!, b!, 1e-5),
  },
  {
    name: "rmsNorm",
    inputs: [{ shape: [7, 37], lo: -2, hi: 2 }, { shape: [37], lo: 0.5, hi: 1.5 }],
    fn: ([x, w]) => rmsNorm(x!, w!, 1e-6),
  },
  { name: "matmul", inputs: [{ shape: [7, 11] }, { shape: [11, 5] }], fn: ([a, b]) => matmul(a!, b!) },
  {
    name: "matmul/transA",
    inputs: [{ shape: [11, 7] }, { shape: [11, 5] }],
    fn: ([a, b]) => matmul(a!, b!, { transA: true }),
  },
  {
    name: "matmul/transB",
    inputs: [{ shape: [7, 11] }, { shape: [5, 11] }],
    fn: ([a, b]) => matmul(a!, b!, { transB: true }),
  },
  {
    name: "matmul/transA+transB",
    inputs: [{ shape: [11, 7] }, { shape: [5, 11] }],
    fn: ([a, b]) => matmul(a!, b!, { transA: true, transB: true }),
  },
  {
    name: "matmul/batched",
    inputs: [{ shape: [3, 7, 11] }, { shape: [3, 11, 5] }],
    fn: ([a, b]) => matmul(a!, b!),
  },
  {
    name: "matmul/batched transB",
    inputs: [{ shape: [3, 7, 11] }, { shape: [3, 5, 11] }],
    fn: ([a, b]) => matmul(a!, b!, { transB: true }),
  },
  {
    name: "linear (shared weight, bias)",
    inputs: [{ shape: [2, 5, 11] }, { shape: [9, 11] }, { shape: [9] }],
    fn: ([x, w, b]) => linear(x!, w!, b!),
  },
  {
    name: "embedding",
    inputs: [{ shape: [2, 7], kind: "i32", hi: 11 }, { shape: [11, 13] }],
    fn: ([ids, w]) => embedding(ids!, w!),
  },
  {
    name: "rope",
    inputs: [{ shape: [2, 5, 3, 8] }],
    fn: ([x]) => rope(x!, { posOffset: 3, theta: 10000 }),
  },
  {
    name: "attention/MHA",
    inputs: [{ shape: [2, 5, 4, 6] }, { shape: [2, 5, 4, 6] }, { shape: [2, 5, 4, 6] }],
    fn: ([q, k, v]) => attention(q!, k!, v!),
  },
  {
    name: "attention/GQA",
    inputs: [{ shape: [2, 5, 4, 6] }, { shape: [2, 5, 2, 6] }, { shape: [2, 5, 2, 6] }],
    fn: ([q, k, v]) => attention(q!, k!, v!),
  },
  {
    name: "attention/T=1",
    inputs: [{ shape: [1, 1, 2, 4] }, { shape: [1, 1, 1, 4] }, { shape: [1, 1, 1, 4] }],
    fn: ([q, k, v]) => attention(q!, k!, v!),
  },
  {
    name: "crossEntropyRows",
    inputs: [{ shape: [6, 19], lo: -3, hi: 3 }, { shape: [6], kind: "i32", values: [3, 0, -100, 18, 7, 7] }],
    fn: ([l, t]) => crossEntropyRows(l!, t!, -100),
  },
  {
    name: "crossEntropy (mean, ignore_index)",
    inputs: [{ shape: [2, 3, 19], lo: -3, hi: 3 }, { shape: [2, 3], kind: "i32", values: [3, -100, 5, 18, 7, 0] }],
    fn: ([l, t]) => crossEntropy(l!, t!, -100),
  },
  {
    name: "argmax",
    inputs: [{ shape: [5, 37], grad: false, values: argmaxValues() }],
    fn: ([x]) => argmax(x!),
    fd: false,
    exact: true,
  },
  {
    name: "sampleTopP",
    inputs: [{ shape: [8, 50], lo: -4, hi: 4, grad: false }],
    fn: ([x]) => sampleTopP(x!, { temperature: 0.8, topP: 0.9, seed: 1234 }),
    fd: false,
    exact: true,
  },
];

/** argmax inputs with ties (the lowest index must win). */
function argmaxValues(): number[] {
  const v: number[] = [];
  for (let r = 0; r < 5; r++) for (let c = 0; c < 37; c++) v.push(((c * 7 + r * 3) % 11) / 10);
  v[37 * 2 + 20] = 5;
  v[37 * 2 + 30] = 5;
  return v;
}
