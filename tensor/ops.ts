/**
 * Differentiable tensor ops. Each op checks shapes, dtypes and devices in TypeScript (raising
 * `ShapeError` naming the op and the shapes, before any native call), runs the native forward,
 * and — when grad mode is on and an input requires grad — records a node whose backward calls
 * the native backward, which accumulates into the inputs' gradient buffers.
 *
 * Shape legend: B batch, T sequence, C channels, H heads, HKV key/value heads, D head dim,
 * V vocabulary, R rows (all leading dims flattened), N experts, S expert size.
 *
 * @module
 */
import type { Backend } from "../ffi/backend.ts";
import { ShapeError } from "./errors.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { fmtShape, gradEnabled, type GradNode, numel, Tensor } from "./tensor.ts";

const F32 = DTypeCode.f32;

// ---------------------------------------------------------------- helpers

function sameDevice(op: string, ...ts: Tensor[]): Backend {
  const b = ts[0]!.backend;
  for (const t of ts) {
    if (t.backend !== b) {
      throw new ShapeError(op, `tensors on different devices: ${ts.map((x) => x.describe()).join(", ")}`);
    }
  }
  return b;
}

function needF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") {
      throw new ShapeError(op, `expected f32, got ${t.describe()} (other float dtypes are not implemented yet)`);
    }
  }
}

function needI32(op: string, t: Tensor): void {
  if (t.dtype !== "i32") throw new ShapeError(op, `expected i32 indices, got ${t.describe()}`);
}

function sameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(op, `shapes differ: ${a.describe()} vs ${b.describe()}`);
  }
}

function lastDim(t: Tensor): number {
  return t.shape.length === 0 ? 1 : t.shape[t.shape.length - 1]!;
}

function rowsOf(t: Tensor): number {
  const c = lastDim(t);
  return c === 0 ? 0 : t.size / c;
}

/** Records `backward` on `out` when grad mode is on and some input requires grad. */
function record(out: Tensor, op: string, inputs: Tensor[], backward: GradNode["backward"]): Tensor {
  if (!gradEnabled()) return out;
  const needs = inputs.filter((t) => t.requiresGrad);
  if (needs.length === 0) return out;
  out.requiresGrad = true;
  out.computed = true;
  out.node = { op, inputs: needs, backward };
  return out;
}

function gradIf(t: Tensor, gradOf: (t: Tensor) => Tensor): Deno.PointerObject | null {
  return t.requiresGrad ? gradOf(t).ptr : null;
}

function axpyInto(b: Backend, src: Tensor, dst: Tensor, alpha = 1): void {
  b.check(b.sym.lte_axpy(b.ctx, F32, src.ptr, dst.ptr, src.size, alpha), "lte_axpy");
}

function out(shape: readonly number[], like: Tensor, dtype: "f32" | "i32" = "f32"): Tensor {
  return Tensor.empty(shape, { device: like.device, dtype });
}

// ---------------------------------------------------------------- elementwise

/** a + b (same shape). */
export function add(a: Tensor, b: Tensor): Tensor {
  const be = sameDevice("add", a, b);
  needF32("add", a, b);
  sameShape("add", a, b);
  const y = out(a.shape, a);
  be.check(be.sym.lte_add(be.ctx, F32, a.ptr, b.ptr, y.ptr, a.size), "lte_add");
  return record(y, "add", [a, b], (g, gradOf, adopt) => {
    if (a.requiresGrad && !adopt(a, g)) axpyInto(be, g, gradOf(a));
    if (b.requiresGrad && !adopt(b, g)) axpyInto(be, g, gradOf(b));
  });
}

/** a * b elementwise (same shape). */
export function mul(a: Tensor, b: Tensor): Tensor {
  const be = sameDevice("mul", a, b);
  needF32("mul", a, b);
  sameShape("mul", a, b);
  const y = out(a.shape, a);
  be.check(be.sym.lte_mul(be.ctx, F32, a.ptr, b.ptr, y.ptr, a.size), "lte_mul");
  return record(y, "mul", [a, b], (g, gradOf) => {
    be.check(
      be.sym.lte_mul_backward(be.ctx, F32, g.ptr, a.ptr, b.ptr, gradIf(a, gradOf), gradIf(b, gradOf), a.size),
      "lte_mul_backward",
    );
  });
}

/** alpha * x + beta. */
export function scale(x: Tensor, alpha: number, beta = 0): Tensor {
  const be = x.backend;
  needF32("scale", x);
  const y = out(x.shape, x);
  be.check(be.sym.lte_scale(be.ctx, F32, x.ptr, y.ptr, x.size, alpha, beta), "lte_scale");
  return record(y, "scale", [x], (g, gradOf) => axpyInto(be, g, gradOf(x), alpha));
}

/** x + bias, where bias has the shape of x's trailing dims (e.g. (C) for x (B, T, C)). */
export function addBias(x: Tensor, bias: Tensor): Tensor {
  const be = sameDevice("addBias", x, bias);
  needF32("addBias", x, bias);
  const k = bias.shape.length;
  const tail = x.shape.slice(x.shape.length - k);
  if (k > x.shape.length || tail.some((d, i) => d !== bias.shape[i])) {
    throw new ShapeError("addBias", `bias ${bias.describe()} does not match the trailing dims of ${x.describe()}`);
  }
  const cols = bias.size;
  const rows = cols === 0 ? 0 : x.size / cols;
  const y = out(x.shape, x);
  be.check(be.sym.lte_bias_add(be.ctx, F32, x.ptr, bias.ptr, y.ptr, rows, cols), "lte_bias_add");
  return record(y, "addBias", [x, bias], (g, gradOf) => {
    if (x.requiresGrad) axpyInto(be, g, gradOf(x));
    if (bias.requiresGrad) {
      be.check(be.sym.lte_sum_rows(be.ctx, F32, g.ptr, gradOf(bias).ptr, rows, cols, 1), "lte_sum_rows");
    }
  });
}

type Unary = "gelu" | "silu" | "sigmoid";

function unary(kind: Unary, x: Tensor): Tensor {
  const be = x.backend;
  needF32(kind, x);
  const y = out(x.shape, x);
  const s = be.sym;
  const fwd = kind === "gelu" ? s.lte_gelu_forward : kind === "silu" ? s.lte_silu_forward : s.lte_sigmoid_forward;
  be.check(fwd(be.ctx, F32, x.ptr, y.ptr, x.size), `lte_${kind}_forward`);
  return record(y, kind, [x], (g, gradOf) => {
    const dx = gradOf(x).ptr;
    if (kind === "gelu") be.check(s.lte_gelu_backward(be.ctx, F32, g.ptr, x.ptr, dx, x.size), "lte_gelu_backward");
    else if (kind === "silu") be.check(s.lte_silu_backward(be.ctx, F32, g.ptr, x.ptr, dx, x.size), "lte_silu_backward");
    else be.check(s.lte_sigmoid_backward(be.ctx, F32, g.ptr, y.ptr, dx, x.size), "lte_sigmoid_backward");
  });
}

/** GELU, tanh approximation (GPT-2). */
export function gelu(x: Tensor): Tensor {
  return unary("gelu", x);
}

/** SiLU (swish): x * sigmoid(x). */
export function silu(x: Tensor): Tensor {
  return unary("silu", x);
}

/** Logistic sigmoid (LTE router scores). */
export function sigmoid(x: Tensor): Tensor {
  return unary("sigmoid", x);
}

/** SwiGLU product: silu(gate) * up. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const be = sameDevice("swiglu", gate, up);
  needF32("swiglu", gate, up);
  sameShape("swiglu", gate, up);
  const y = out(gate.shape, gate);
  be.check(be.sym.lte_swiglu_forward(be.ctx, F32, gate.ptr, up.ptr, y.ptr, gate.size), "lte_swiglu_forward");
  return record(y, "swiglu", [gate, up], (g, gradOf) => {
    be.check(
      be.sym.lte_swiglu_backward(
        be.ctx,
        F32,
        g.ptr,
        gate.ptr,
        up.ptr,
        gradIf(gate, gradOf),
        gradIf(up, gradOf),
        gate.size,
      ),
      "lte_swiglu_backward",
    );
  });
}

/** Hard 0/1 mask: x > threshold (strict). No gradient. */
export function threshold(x: Tensor, value: number): Tensor {
  needF32("threshold", x);
  const be = x.backend;
  const y = out(x.shape, x);
  be.check(be.sym.lte_threshold(be.ctx, F32, x.ptr, y.ptr, x.size, value), "lte_threshold");
  return y;
}

// ---------------------------------------------------------------- LTE routing

/**
 * Scales each neuron of h (R, N*S) by its expert's entry of g (R, N): soft router scores in LTE
 * stage 1, or a hard 0/1 mask (from `threshold`) in stage 2.
 */
export function expertScale(h: Tensor, g: Tensor, expertSize: number): Tensor {
  const be = sameDevice("expertScale", h, g);
  needF32("expertScale", h, g);
  const n = lastDim(g);
  const rows = rowsOf(h);
  if (!Number.isInteger(expertSize) || expertSize <= 0 || lastDim(h) !== n * expertSize || rowsOf(g) !== rows) {
    throw new ShapeError(
      "expertScale",
      `h ${h.describe()} must be (R, N*S) and g ${g.describe()} (R, N) with S = ${expertSize}`,
    );
  }
  const y = out(h.shape, h);
  be.check(
    be.sym.lte_expert_scale_forward(be.ctx, F32, h.ptr, g.ptr, y.ptr, rows, n, expertSize),
    "lte_expert_scale_forward",
  );
  return record(y, "expertScale", [h, g], (gy, gradOf) => {
    be.check(
      be.sym.lte_expert_scale_backward(
        be.ctx,
        F32,
        gy.ptr,
        h.ptr,
        g.ptr,
        gradIf(h, gradOf),
        gradIf(g, gradOf),
        rows,
        n,
        expertSize,
      ),
      "lte_expert_scale_backward",
    );
  });
}

/**
 * LTE separability penalty, elementwise over router scores g: 1 / ((g - tau)^2 + eps), eps > 0
 * (the paper's Eq. 5 with a guard that keeps it finite at g = tau). Differentiable in g.
 */
export function sepPenalty(g: Tensor, tau: number, eps: number): Tensor {
  needF32("sepPenalty", g);
  if (!(eps > 0) || !Number.isFinite(tau)) {
    throw new RangeError(`sepPenalty: needs eps > 0 and a finite tau, got eps ${eps}, tau ${tau}`);
  }
  const be = g.backend;
  const y = out(g.shape, g);
  be.check(be.sym.lte_sep_penalty_forward(be.ctx, F32, g.ptr, y.ptr, g.size, tau, eps), "lte_sep_penalty_forward");
  return record(y, "sepPenalty", [g], (gy, gradOf) => {
    be.check(
      be.sym.lte_sep_penalty_backward(be.ctx, F32, gy.ptr, g.ptr, gradOf(g).ptr, g.size, tau, eps),
      "lte_sep_penalty_backward",
    );
  });
}

// ---------------------------------------------------------------- reductions

/** Sum of all elements, as a scalar tensor. */
export function sum(x: Tensor): Tensor {
  needF32("sum", x);
  const be = x.backend;
  const y = out([], x);
  be.check(be.sym.lte_sum(be.ctx, F32, x.ptr, y.ptr, x.size, 0), "lte_sum");
  return record(y, "sum", [x], (g, gradOf) => {
    be.check(
      be.sym.lte_broadcast_scalar_backward(be.ctx, F32, g.ptr, gradOf(x).ptr, x.size, 1),
      "lte_broadcast_scalar_backward",
    );
  });
}

/** Mean of all elements, as a scalar tensor. */
export function mean(x: Tensor): Tensor {
  if (x.size === 0) throw new ShapeError("mean", `empty tensor ${x.describe()}`);
  return scale(sum(x), 1 / x.size);
}

/** Sum of squares of all elements (no gradient); with `into`, adds to that scalar instead. */
export function sumSquares(x: Tensor, into?: Tensor): Tensor {
  needF32("sumSquares", x);
  const be = x.backend;
  const y = into ?? out([], x);
  be.check(be.sym.lte_sum_squares(be.ctx, F32, x.ptr, y.ptr, x.size, into ? 1 : 0), "lte_sum_squares");
  return y;
}

// ---------------------------------------------------------------- slicing

/** Columns [start, start + width) of a (R, C) view of x: shape (..., width). */
export function sliceLast(x: Tensor, start: number, width: number): Tensor {
  needF32("sliceLast", x);
  const c = lastDim(x);
  if (start < 0 || width <= 0 || start + width > c) {
    throw new RangeError(`sliceLast: columns [${start}, ${start + width}) out of range for ${x.describe()}`);
  }
  const be = x.backend;
  const rows = rowsOf(x);
  const y = out([...x.shape.slice(0, -1), width], x);
  be.check(be.sym.lte_copy_2d(be.ctx, F32, x.ptrAt(start), c, y.ptr, width, rows, width, 0), "lte_copy_2d");
  return record(y, "sliceLast", [x], (g, gradOf) => {
    be.check(be.sym.lte_copy_2d(be.ctx, F32, g.ptr, width, gradOf(x).ptrAt(start), c, rows, width, 1), "lte_copy_2d");
  });
}

// ---------------------------------------------------------------- matmul

/** Options of `matmul`. */
export interface MatmulOptions {
  /** Use a's last two dims transposed. */
  transA?: boolean;
  /** Use b's last two dims transposed. */
  transB?: boolean;
}

function mm(
  be: Backend,
  a: Deno.PointerObject,
  b: Deno.PointerObject,
  c: Deno.PointerObject,
  batch: number,
  m: number,
  n: number,
  k: number,
  ta: boolean,
  tb: boolean,
  sa: number,
  sb: number,
  sc: number,
  beta: number,
): void {
  be.check(
    be.sym.lte_matmul(be.ctx, F32, a, b, c, batch, m, n, k, ta ? 1 : 0, tb ? 1 : 0, sa, sb, sc, 1, beta),
    "lte_matmul",
  );
}

/**
 * Matrix product of the last two dims, op(a) @ op(b). Either both have the same leading (batch)
 * dims, or b is 2-D and shared by every batch item (a linear layer; folded into one GEMM).
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const be = sameDevice("matmul", a, b);
  needF32("matmul", a, b);
  const ta = !!opts.transA, tb = !!opts.transB;
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new ShapeError("matmul", `needs at least 2-D operands, got ${a.describe()} and ${b.describe()}`);
  }
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = ta ? ac : ar, k = ta ? ar : ac;
  const kb = tb ? bc : br, n = tb ? br : bc;
  const what = () => `${a.describe()}${ta ? "ᵀ" : ""} @ ${b.describe()}${tb ? "ᵀ" : ""} (inner dims ${k} and ${kb})`;
  if (k !== kb) throw new ShapeError("matmul", `inner dimensions differ: ${what()}`);
  const aBatch = a.shape.slice(0, -2), bBatch = b.shape.slice(0, -2);
  const shared = b.shape.length === 2;
  if (!shared && (aBatch.length !== bBatch.length || aBatch.some((d, i) => d !== bBatch[i]))) {
    throw new ShapeError("matmul", `batch dims differ: ${what()}`);
  }
  if (shared && ta && numel(aBatch) > 1) {
    throw new ShapeError("matmul", `a transposed batched operand with a shared 2-D b is not supported: ${what()}`);
  }
  const batch = numel(aBatch);
  const y = out([...aBatch, m, n], a);
  if (y.size === 0) return y;
  if (k === 0) return y.fill(0);
  // A shared weight with untransposed a: fold the batch into rows, one GEMM.
  const fold = shared && !ta;
  const M = fold ? batch * m : m, B = fold ? 1 : batch;
  mm(be, a.ptr, b.ptr, y.ptr, B, M, n, k, ta, tb, fold ? 0 : m * k, shared ? 0 : k * n, fold ? 0 : m * n, 0);
  return record(y, "matmul", [a, b], (g, gradOf) => {
    if (a.requiresGrad) {
      const da = gradOf(a).ptr;
      // d op(A) = dC op(B)^T
      if (!ta) {
        mm(be, g.ptr, b.ptr, da, B, M, k, n, false, !tb, fold ? 0 : m * n, shared ? 0 : k * n, fold ? 0 : m * k, 1);
      } else mm(be, b.ptr, g.ptr, da, B, k, m, n, tb, true, shared ? 0 : k * n, m * n, m * k, 1);
    }
    if (b.requiresGrad) {
      const db = gradOf(b).ptr;
      // d op(B) = op(A)^T dC; with a shared b the folded rows sum over the batch inside the GEMM.
      if (!tb) {
        mm(be, a.ptr, g.ptr, db, B, k, n, M, !ta, false, fold ? 0 : m * k, fold ? 0 : m * n, shared ? 0 : k * n, 1);
      } else mm(be, g.ptr, a.ptr, db, B, n, k, M, true, ta, fold ? 0 : m * n, fold ? 0 : m * k, shared ? 0 : k * n, 1);
    }
  });
}

/** Linear layer in Hugging Face layout: x (..., in) @ weight (out, in)ᵀ + bias (out). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.shape.length !== 2 || lastDim(x) !== weight.shape[1]) {
    throw new ShapeError("linear", `x ${x.describe()} does not fit weight ${weight.describe()} (out, in)`);
  }
  const y = matmul(x, weight, { transB: true });
  if (!bias) return y;
  if (bias.shape.length !== 1 || bias.shape[0] !== weight.shape[0]) {
    throw new ShapeError("linear", `bias ${bias.describe()} does not fit weight ${weight.describe()}`);
  }
  return addBias(y, bias);
}

// ---------------------------------------------------------------- normalisation

/** LayerNorm over the last dim. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps = 1e-5): Tensor {
  const be = sameDevice("layerNorm", x, weight, ...(bias ? [bias] : []));
  needF32("layerNorm", x, weight, ...(bias ? [bias] : []));
  const c = lastDim(x), rows = rowsOf(x);
  if (weight.size !== c || (bias && bias.size !== c)) {
    throw new ShapeError("layerNorm", `weight ${weight.describe()} / bias must have ${c} elements for ${x.describe()}`);
  }
  const y = out(x.shape, x);
  const meanT = out([rows], x), rstd = out([rows], x);
  be.check(
    be.sym.lte_layernorm_forward(
      be.ctx,
      F32,
      x.ptr,
      weight.ptr,
      bias?.ptr ?? null,
      y.ptr,
      meanT.ptr,
      rstd.ptr,
      rows,
      c,
      eps,
    ),
    "lte_layernorm_forward",
  );
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record(y, "layerNorm", inputs, (g, gradOf) => {
    be.check(
      be.sym.lte_layernorm_backward(
        be.ctx,
        F32,
        g.ptr,
        x.ptr,
        weight.ptr,
        meanT.ptr,
        rstd.ptr,
        gradIf(x, gradOf),
        gradIf(weight, gradOf),
        bias ? gradIf(bias, gradOf) : null,
        rows,
        c,
      ),
      "lte_layernorm_backward",
    );
  });
}

/** RMSNorm over the last dim (LLaMA). */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  const be = sameDevice("rmsNorm", x, weight);
  needF32("rmsNorm", x, weight);
  const c = lastDim(x), rows = rowsOf(x);
  if (weight.size !== c) {
    throw new ShapeError("rmsNorm", `weight ${weight.describe()} must have ${c} elements for ${x.describe()}`);
  }
  const y = out(x.shape, x);
  const rstd = out([rows], x);
  be.check(
    be.sym.lte_rmsnorm_forward(be.ctx, F32, x.ptr, weight.ptr, y.ptr, rstd.ptr, rows, c, eps),
    "lte_rmsnorm_forward",
  );
  return record(y, "rmsNorm", [x, weight], (g, gradOf) => {
    be.check(
      be.sym.lte_rmsnorm_backward(
        be.ctx,
        F32,
        g.ptr,
        x.ptr,
        weight.ptr,
        rstd.ptr,
        gradIf(x, gradOf),
        gradIf(weight, gradOf),
        rows,
        c,
      ),
      "lte_rmsnorm_backward",
    );
  });
}

// ---------------------------------------------------------------- embedding

/** Rows of weight (V, C) picked by ids (any shape, i32): shape (...ids, C). */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const be = sameDevice("embedding", ids, weight);
  needI32("embedding", ids);
  needF32("embedding", weight);
  if (weight.shape.length !== 2) throw new ShapeError("embedding", `weight must be (V, C), got ${weight.describe()}`);
  const [v, c] = weight.shape as [number, number];
  if (ids.hostCopy) {
    const host = ids.hostCopy;
    for (let i = 0; i < host.length; i++) {
      const id = host[i]!;
      if (!(id >= 0 && id < v)) {
        throw new RangeError(`embedding: ids[${i}] = ${id} is outside [0, ${v}) for weight ${weight.describe()}`);
      }
    }
  }
  const y = out([...ids.shape, c], weight);
  be.check(
    be.sym.lte_embedding_forward(be.ctx, F32, ids.ptr, weight.ptr, y.ptr, ids.size, v, c),
    "lte_embedding_forward",
  );
  return record(y, "embedding", [weight], (g, gradOf) => {
    be.check(
      be.sym.lte_embedding_backward(be.ctx, F32, ids.ptr, g.ptr, gradOf(weight).ptr, ids.size, v, c),
      "lte_embedding_backward",
    );
  });
}

// ---------------------------------------------------------------- rotary embedding

/** Options of `rope`. */
export interface RopeOptions {
  /** Position of the first token (decode with a cache). Default 0. */
  posOffset?: number;
  /** Base frequency. Default 10000. */
  theta?: number;
}

/** Rotary position embedding (HF LLaMA rotate_half) on x (B, T, H, D). */
export function rope(x: Tensor, opts: RopeOptions = {}): Tensor {
  needF32("rope", x);
  if (x.shape.length !== 4 || x.shape[3]! % 2 !== 0) {
    throw new ShapeError("rope", `x must be (B, T, H, D) with even D, got ${x.describe()}`);
  }
  const [bsz, t, h, d] = x.shape as [number, number, number, number];
  const pos = opts.posOffset ?? 0, theta = opts.theta ?? 10000;
  const be = x.backend;
  const y = out(x.shape, x);
  be.check(be.sym.lte_rope_forward(be.ctx, F32, x.ptr, y.ptr, bsz, t, h, d, pos, theta), "lte_rope_forward");
  return record(y, "rope", [x], (g, gradOf) => {
    be.check(
      be.sym.lte_rope_backward(be.ctx, F32, g.ptr, gradOf(x).ptr, bsz, t, h, d, pos, theta),
      "lte_rope_backward",
    );
  });
}

// ---------------------------------------------------------------- attention

/**
 * Causal self-attention. q (B, T, H, D); k, v (B, T, HKV, D) with H % HKV == 0 (grouped-query
 * heads). Returns (B, T, H, D). Saves the (B, H, T, T) probabilities for backward.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: { scale?: number } = {}): Tensor {
  const be = sameDevice("attention", q, k, v);
  needF32("attention", q, k, v);
  if (q.shape.length !== 4 || k.shape.length !== 4) {
    throw new ShapeError(
      "attention",
      `q, k, v must be 4-D (B, T, H, D): ${q.describe()}, ${k.describe()}, ${v.describe()}`,
    );
  }
  sameShape("attention", k, v);
  const [bsz, t, h, d] = q.shape as [number, number, number, number];
  const [kb, kt, hkv, kd] = k.shape as [number, number, number, number];
  if (kb !== bsz || kt !== t || kd !== d || hkv === 0 || h % hkv !== 0) {
    throw new ShapeError(
      "attention",
      `q ${fmtShape(q.shape)} and k/v ${fmtShape(k.shape)} must share B, T, D and have H % HKV == 0`,
    );
  }
  const sc = opts.scale ?? 1 / Math.sqrt(d);
  const y = out(q.shape, q);
  const probs = out([bsz, h, t, t], q);
  be.check(
    be.sym.lte_attention_forward(be.ctx, F32, q.ptr, k.ptr, v.ptr, y.ptr, probs.ptr, bsz, t, h, hkv, d, sc),
    "lte_attention_forward",
  );
  return record(y, "attention", [q, k, v], (g, gradOf) => {
    be.check(
      be.sym.lte_attention_backward(
        be.ctx,
        F32,
        g.ptr,
        q.ptr,
        k.ptr,
        v.ptr,
        probs.ptr,
        gradIf(q, gradOf),
        gradIf(k, gradOf),
        gradIf(v, gradOf),
        bsz,
        t,
        h,
        hkv,
        d,
        sc,
      ),
      "lte_attention_backward",
    );
  });
}

// ---------------------------------------------------------------- loss

/** Per-row softmax cross-entropy: logits (..., V), targets (...) i32 → losses (...), 0 where ignored. */
export function crossEntropyRows(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  const be = sameDevice("crossEntropy", logits, targets);
  needF32("crossEntropy", logits);
  needI32("crossEntropy", targets);
  const v = lastDim(logits), rows = rowsOf(logits);
  if (targets.size !== rows) {
    throw new ShapeError(
      "crossEntropy",
      `targets ${targets.describe()} must have one entry per row of ${logits.describe()}`,
    );
  }
  if (targets.hostCopy) {
    const host = targets.hostCopy;
    for (let i = 0; i < host.length; i++) {
      const id = host[i]!;
      if (id !== ignoreIndex && !(id >= 0 && id < v)) {
        throw new RangeError(
          `crossEntropy: targets[${i}] = ${id} is outside [0, ${v}) and is not ignore_index ${ignoreIndex}`,
        );
      }
    }
  }
  const losses = out(logits.shape.slice(0, -1), logits);
  be.check(
    be.sym.lte_cross_entropy_forward(be.ctx, F32, logits.ptr, targets.ptr, losses.ptr, rows, v, ignoreIndex),
    "lte_cross_entropy_forward",
  );
  return record(losses, "crossEntropy", [logits], (g, gradOf) => {
    be.check(
      be.sym.lte_cross_entropy_backward(
        be.ctx,
        F32,
        logits.ptr,
        targets.ptr,
        g.ptr,
        gradOf(logits).ptr,
        rows,
        v,
        ignoreIndex,
      ),
      "lte_cross_entropy_backward",
    );
  });
}

/** Number of targets that are not `ignoreIndex` (from the host copy, or read back). */
export function countTargets(targets: Tensor, ignoreIndex = -100): number {
  const host = targets.hostCopy ?? targets.toArray();
  let n = 0;
  for (let i = 0; i < host.length; i++) if (host[i] !== ignoreIndex) n++;
  return n;
}

/** Mean softmax cross-entropy over the targets that are not `ignoreIndex` (scalar). */
export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  const count = countTargets(targets, ignoreIndex);
  const losses = crossEntropyRows(logits, targets, ignoreIndex);
  return scale(sum(losses), count === 0 ? 0 : 1 / count);
}

// ---------------------------------------------------------------- sampling (no gradient)

/** Index of the largest value of each row: x (..., V) → (...) i32. */
export function argmax(x: Tensor): Tensor {
  needF32("argmax", x);
  const be = x.backend;
  const y = out(x.shape.slice(0, -1), x, "i32");
  be.check(be.sym.lte_argmax(be.ctx, F32, x.ptr, y.ptr, rowsOf(x), lastDim(x)), "lte_argmax");
  return y;
}

/** Options of `sampleTopP`. */
export interface SampleOptions {
  temperature?: number;
  topP?: number;
  seed: number | bigint;
}

/** Nucleus sampling per row of logits (..., V) → (...) i32; deterministic for a seed. */
export function sampleTopP(logits: Tensor, opts: SampleOptions): Tensor {
  needF32("sampleTopP", logits);
  const temperature = opts.temperature ?? 1, topP = opts.topP ?? 1;
  if (!(temperature > 0) || !(topP > 0 && topP <= 1)) {
    throw new RangeError(`sampleTopP: temperature must be > 0 and top_p in (0, 1], got ${temperature} and ${topP}`);
  }
  const be = logits.backend;
  const y = out(logits.shape.slice(0, -1), logits, "i32");
  const seed = BigInt.asUintN(64, BigInt(opts.seed));
  be.check(
    be.sym.lte_sample_top_p(be.ctx, F32, logits.ptr, y.ptr, rowsOf(logits), lastDim(logits), temperature, topP, seed),
    "lte_sample_top_p",
  );
  return y;
}
