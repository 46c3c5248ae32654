/**
 * Shared by tests/sparse_ffn_test.ts (CPU) and tests/gpu/sparse_ffn_test.ts (CPU <-> CUDA): seeded
 * FFN problems for the sparse FFN ops, a float64 TypeScript reference of the whole block, and
 * helpers to run the native ops on one backend.
 *
 * The reference works on the weights after rounding to the storage dtype (what the kernels read)
 * and rounds h and y to the dtype at the same points as the kernels (h after the activation, y
 * after bias and residual), so the only differences left are summation order and f32 vs f64.
 * @module
 */
import type { Backend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { dtypeBytes, type FfnAct, type FfnDtype } from "../engine/ffn_kernels.ts";

/** Small seeded generator (mulberry32). */
export class Prng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(n: number, lo: number, hi: number): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * this.next();
    return a;
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Rounds to bf16 (nearest even), returned as a number. */
export function bf16round(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return NaN;
  u32buf[0] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
  return f32buf[0]!;
}

/** Rounds a value to what a tensor of `dtype` stores. */
export function roundTo(dtype: FfnDtype, v: number): number {
  if (dtype === "f32") return Math.fround(v);
  if (dtype === "f16") return Math.f16round(v);
  return bf16round(v);
}

export function roundAll(dtype: FfnDtype, a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = roundTo(dtype, a[i]!);
  return out;
}

/** Host bytes of `a` stored as `dtype` (f16 via Float16Array, bf16 by rounding the f32 bits). */
export function encode(dtype: FfnDtype, a: Float32Array): Uint8Array {
  if (dtype === "f32") return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
  if (dtype === "f16") return new Uint8Array(Float16Array.from(a).buffer);
  const out = new Uint16Array(a.length);
  const r = roundAll("bf16", a);
  const bits = new Uint32Array(r.buffer);
  for (let i = 0; i < a.length; i++) out[i] = bits[i]! >>> 16;
  return new Uint8Array(out.buffer);
}

/** Inverse of `encode`. */
export function decode(dtype: FfnDtype, bytes: Uint8Array): Float32Array {
  const copy = bytes.slice();
  if (dtype === "f32") return new Float32Array(copy.buffer);
  if (dtype === "f16") return Float32Array.from(new Float16Array(copy.buffer));
  const h = new Uint16Array(copy.buffer);
  const bits = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) bits[i] = h[i]! << 16;
  return new Float32Array(bits.buffer);
}

/** One FFN problem (weights already rounded to `dtype`, all f32 arrays on the host). */
export interface FfnProblem {
  dtype: FfnDtype; // weights and h
  adtype: FfnDtype; // activations x, residual, y, and the router weights / bias: dtype or f32
  act: FfnAct;
  batch: number;
  C: number;
  N: number;
  S: number;
  x: Float32Array; // (B, C)
  router: Float32Array | null; // (N, C)
  routerBias: Float32Array | null; // (N)
  gate: Float32Array | null; // (F, C)
  inW: Float32Array; // (F, C)
  inBias: Float32Array | null; // (F)
  downT: Float32Array; // (F, C)
  downBias: Float32Array | null; // (C)
  residual: Float32Array | null; // (B, C)
}

/**
 * A seeded problem. Router rows are redrawn until every token's logit for every expert is at
 * least `margin` away from 0 (in float64), so the selection is the same under any summation
 * order: selection differences between backends are then bugs, not rounding.
 */
export function makeProblem(
  seed: number,
  o: {
    dtype: FfnDtype;
    adtype?: FfnDtype;
    act: FfnAct;
    batch: number;
    C: number;
    N: number;
    S: number;
    dense?: boolean;
    bias?: boolean;
    residual?: boolean;
    margin?: number;
  },
): FfnProblem {
  const rng = new Prng(seed);
  const { dtype, batch: B, C, N, S } = o;
  const F = N * S;
  const sc = 1 / Math.sqrt(C);
  const adtype = o.adtype ?? dtype;
  const r = (a: Float32Array) => roundAll(dtype, a);
  const ra = (a: Float32Array) => roundAll(adtype, a);
  const x = ra(rng.uniform(B * C, -1, 1));
  let router: Float32Array | null = null;
  let routerBias: Float32Array | null = null;
  if (!o.dense) {
    router = new Float32Array(N * C);
    routerBias = o.bias ? ra(rng.uniform(N, -0.1, 0.1)) : null;
    const margin = o.margin ?? 0.02;
    for (let e = 0; e < N; e++) {
      for (let attempt = 0;; attempt++) {
        const row = ra(rng.uniform(C, -sc, sc));
        let ok = true;
        for (let b = 0; b < B && ok; b++) {
          let l = routerBias ? routerBias[e]! : 0;
          for (let k = 0; k < C; k++) l += row[k]! * x[b * C + k]!;
          if (Math.abs(l) < margin) ok = false;
        }
        if (ok || attempt > 200) {
          router.set(row, e * C);
          break;
        }
      }
    }
  }
  return {
    dtype,
    adtype,
    act: o.act,
    batch: B,
    C,
    N,
    S,
    x,
    router,
    routerBias,
    gate: o.act === "silu_mul" ? r(rng.uniform(F * C, -sc, sc)) : null,
    inW: r(rng.uniform(F * C, -sc, sc)),
    inBias: o.bias ? r(rng.uniform(F, -0.5, 0.5)) : null,
    downT: r(rng.uniform(F * C, -1 / Math.sqrt(F), 1 / Math.sqrt(F))),
    downBias: o.bias ? r(rng.uniform(C, -0.5, 0.5)) : null,
    residual: o.residual ? ra(rng.uniform(B * C, -1, 1)) : null,
  };
}

/** Float64 reference of the whole block. `mask[b][e]` overrides the router when given. */
export function referenceFfn(p: FfnProblem, mask?: boolean[][]): {
  logits: Float64Array;
  selected: boolean[][];
  h: Float32Array; // (B, F) in neuron order (not compact)
  y: Float32Array; // (B, C), rounded to dtype
} {
  const { batch: B, C, N, S, dtype } = p;
  const F = N * S;
  const logits = new Float64Array(B * N);
  const selected: boolean[][] = [];
  for (let b = 0; b < B; b++) {
    const row: boolean[] = [];
    for (let e = 0; e < N; e++) {
      let l = 0;
      if (p.router) {
        for (let k = 0; k < C; k++) l += p.router[e * C + k]! * p.x[b * C + k]!;
        if (p.routerBias) l += p.routerBias[e]!;
      }
      logits[b * N + e] = l;
      row.push(mask ? mask[b]![e]! : p.router ? Math.fround(l) > 0 : true);
    }
    selected.push(row);
  }
  const xw = roundAll(dtype, p.x); // x as the gate/up products see it (rounded to the weight dtype)
  const h = new Float32Array(B * F);
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < F; n++) {
      if (!selected[b]![Math.floor(n / S)]) continue;
      let up = 0, gate = 0;
      for (let k = 0; k < C; k++) {
        const xv = xw[b * C + k]!;
        up += p.inW[n * C + k]! * xv;
        if (p.gate) gate += p.gate[n * C + k]! * xv;
      }
      let u = Math.fround(up);
      if (p.inBias) u = Math.fround(u + p.inBias[n]!);
      const g = Math.fround(gate);
      const v = p.act === "gelu"
        ? 0.5 * u * (1 + Math.tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)))
        : (g / (1 + Math.exp(-g))) * u;
      h[b * F + n] = roundTo(dtype, v);
    }
  }
  const y = new Float32Array(B * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      let acc = 0;
      for (let n = 0; n < F; n++) {
        const hv = h[b * F + n]!;
        if (hv !== 0) acc += hv * p.downT[n * C + c]!;
      }
      let v = Math.fround(acc);
      if (p.downBias) v += p.downBias[c]!;
      if (p.residual) v += p.residual[b * C + c]!;
      y[b * C + c] = roundTo(p.adtype, v);
    }
  }
  return { logits, selected, h, y };
}

/** Device copies of a problem's tensors on one backend, plus the step buffers. */
export interface DeviceFfn {
  be: Backend;
  p: FfnProblem;
  x: Deno.PointerObject;
  router: Deno.PointerObject | null;
  routerBias: Deno.PointerObject | null;
  gate: Deno.PointerObject | null;
  inW: Deno.PointerObject;
  inBias: Deno.PointerObject | null;
  downT: Deno.PointerObject;
  downBias: Deno.PointerObject | null;
  residual: Deno.PointerObject | null;
  logits: Deno.PointerObject;
  bits: Deno.PointerObject;
  list: Deno.PointerObject;
  counts: Deno.PointerObject;
  h: Deno.PointerObject;
  y: Deno.PointerObject;
  ws: Deno.PointerObject;
  free(): void;
}

/** Bytes of 0xff: NaN in f16, bf16 and f32; -1 in i32. Outputs are poisoned with it before a run. */
export function poison(be: Backend, ptr: Deno.PointerObject, bytes: number): void {
  be.write(ptr, new Uint8Array(bytes).fill(0xff));
}

export function upload(be: Backend, p: FfnProblem): DeviceFfn {
  const owned: Deno.PointerObject[] = [];
  const put = (a: Float32Array | null, dtype: FfnDtype = p.dtype): Deno.PointerObject | null => {
    if (!a) return null;
    const bytes = encode(dtype, a);
    const ptr = be.alloc(bytes.byteLength);
    owned.push(ptr);
    be.write(ptr, bytes);
    return ptr;
  };
  const alloc = (bytes: number) => {
    const ptr = be.alloc(bytes);
    owned.push(ptr);
    return ptr;
  };
  const { batch: B, C, N, S } = p;
  const F = N * S;
  const wsBytes = new BigUint64Array(1);
  be.check(be.sym.lte_sffn_workspace_size(be.ctx, B, C, N, S, wsBytes), "lte_sffn_workspace_size");
  const ws = alloc(Number(wsBytes[0]!));
  be.write(ws, new Uint8Array(Number(wsBytes[0]!)));
  const eb = dtypeBytes(p.dtype);
  return {
    be,
    p,
    x: put(p.x, p.adtype)!,
    router: put(p.router, p.adtype),
    routerBias: put(p.routerBias, p.adtype),
    gate: put(p.gate),
    inW: put(p.inW)!,
    inBias: put(p.inBias),
    downT: put(p.downT)!,
    downBias: put(p.downBias),
    residual: put(p.residual, p.adtype),
    logits: alloc(4 * B * N),
    bits: alloc(4 * N),
    list: alloc(4 * N),
    counts: alloc(4 * (B + 1)),
    h: alloc(eb * B * F),
    y: alloc(dtypeBytes(p.adtype) * B * C),
    ws,
    free() {
      for (const q of owned) be.free(q);
    },
  };
}

export const ACT_CODE = { silu_mul: 0, gelu: 1 } as const;
export const VARIANT_CODE = { auto: 0, atomic: 1, splitk: 2 } as const;

export function route(d: DeviceFfn): void {
  const { be, p } = d;
  be.check(
    be.sym.lte_sffn_route(
      be.ctx,
      DTypeCode[p.adtype],
      d.x,
      d.router,
      d.routerBias,
      d.logits,
      d.bits,
      d.list,
      d.counts,
      d.ws,
      p.batch,
      p.C,
      p.N,
    ),
    "lte_sffn_route",
  );
}

export function gateUp(d: DeviceFfn): void {
  const { be, p } = d;
  be.check(
    be.sym.lte_sffn_gate_up(
      be.ctx,
      DTypeCode[p.dtype],
      DTypeCode[p.adtype],
      ACT_CODE[p.act],
      d.x,
      d.gate,
      d.inW,
      d.inBias,
      d.bits,
      d.list,
      d.counts,
      d.h,
      d.ws,
      p.batch,
      p.C,
      p.N,
      p.S,
    ),
    "lte_sffn_gate_up",
  );
}

export function down(d: DeviceFfn, variant: keyof typeof VARIANT_CODE = "auto"): void {
  const { be, p } = d;
  be.check(
    be.sym.lte_sffn_down(
      be.ctx,
      DTypeCode[p.dtype],
      DTypeCode[p.adtype],
      d.h,
      d.downT,
      d.downBias,
      d.list,
      d.counts,
      d.residual,
      d.y,
      d.ws,
      p.batch,
      p.C,
      p.N,
      p.S,
      VARIANT_CODE[variant],
    ),
    "lte_sffn_down",
  );
}

/** Reads the route outputs back. */
export function readRoute(d: DeviceFfn): {
  logits: Float32Array;
  bits: Uint32Array;
  list: Int32Array;
  counts: Int32Array;
} {
  const { be, p } = d;
  const logits = new Float32Array(p.batch * p.N), bits = new Uint32Array(p.N), list = new Int32Array(p.N);
  const counts = new Int32Array(p.batch + 1);
  be.read(logits, d.logits);
  be.read(bits, d.bits);
  be.read(list, d.list);
  be.read(counts, d.counts);
  return { logits, bits, list, counts };
}

/** Reads a buffer of n elements of `dtype` (default: the weight dtype) as f32. */
export function readAs(d: DeviceFfn, ptr: Deno.PointerObject, n: number, dtype: FfnDtype = d.p.dtype): Float32Array {
  const bytes = new Uint8Array(n * dtypeBytes(dtype));
  d.be.read(bytes, ptr);
  return decode(dtype, bytes);
}

/** Writes route results (bits, list, counts) computed elsewhere, to feed gate_up/down directly. */
export function writeRoute(d: DeviceFfn, r: { bits: Uint32Array; list: Int32Array; counts: Int32Array }): void {
  d.be.write(d.bits, r.bits);
  d.be.write(d.list, r.list);
  d.be.write(d.counts, r.counts);
}

/** Expands a compact h (B, F: the union's experts first) to neuron order using the union list. */
export function expandH(p: FfnProblem, hCompact: Float32Array, list: Int32Array, P: number): Float32Array {
  const F = p.N * p.S;
  const out = new Float32Array(p.batch * F);
  for (let b = 0; b < p.batch; b++) {
    for (let q = 0; q < P; q++) {
      const e = list[q]!;
      for (let j = 0; j < p.S; j++) out[b * F + e * p.S + j] = hCompact[b * F + q * p.S + j]!;
    }
  }
  return out;
}

/** max |a - b| / (atol + rtol |b|) over all elements (<= 1 passes), and the relative L2 error. */
export function compare(a: Float32Array, ref: Float32Array, atol: number, rtol: number): {
  worst: number;
  rel: number;
  nan: number;
  at: number;
} {
  let worst = 0, num = 0, den = 0, nan = 0, at = -1;
  for (let i = 0; i < ref.length; i++) {
    const x = a[i]!, r = ref[i]!;
    if (!Number.isFinite(x)) {
      nan++;
      continue;
    }
    const q = Math.abs(x - r) / (atol + rtol * Math.abs(r));
    if (q > worst) {
      worst = q;
      at = i;
    }
    num += (x - r) ** 2;
    den += r * r;
  }
  return { worst, rel: Math.sqrt(num / Math.max(den, 1e-30)), nan, at };
}
