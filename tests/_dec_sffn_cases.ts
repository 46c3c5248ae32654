/**
 * Cases of `lte_dec_sparse_ffn` (the fused sparse FFN block of the decode engine) shared by the
 * CPU test (tests/dec_sparse_ffn_test.ts: the op equals the chain of the older ops bit for bit) and
 * the GPU test (tests/gpu/dec_sparse_ffn_test.ts: CUDA agrees with the CPU reference).
 *
 * The threshold of a case is chosen from the CPU reference's own router logits (computed in f64
 * from x' and the router), inside the widest gap near the wanted active fraction, so a hard
 * decision never sits within f32 rounding of the threshold and masks can be compared exactly.
 */
import type { Backend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { f32ToBf16, f32ToF16 } from "../models/safetensors.ts";
import { Rng } from "../tensor/mod.ts";

export type Dt = "f32" | "f16" | "bf16";
/** lte.h LTE_DEC_X_* and LTE_DEC_ACT_* codes. */
export const X_MODE = { plain: 0, rms: 1, layer: 2 } as const;
export const ACT = { swiglu: 1, gelu: 2 } as const;

export interface SffnCase {
  dt: Dt;
  rows: number;
  C: number;
  F: number;
  S: number;
  act: 1 | 2;
  mode: 0 | 1 | 2;
  /** b_fc / b_down / b_router present. */
  bias: boolean;
  /** Wanted fraction of active (row, expert) pairs; 0 = none, 1 = all. */
  active: number;
}

export function caseName(c: SffnCase): string {
  return `${c.dt} rows ${c.rows} C ${c.C} F ${c.F} S ${c.S} ${c.act === 1 ? "swiglu" : "gelu"} mode ${c.mode}` +
    `${c.bias ? " bias" : ""} active ${c.active}`;
}

export interface SffnInputs {
  x: Float32Array;
  nw: Float32Array;
  nb: Float32Array;
  wr: Float32Array;
  br: Float32Array | null;
  /** Weights in the case's dtype, as bytes. */
  wfc: Uint8Array;
  bfc: Float32Array | null;
  wd: Uint8Array;
  bd: Float32Array | null;
  eps: number;
  thr: number;
}

export interface SffnOutputs {
  x: Float32Array;
  xn: Float32Array;
  mask: Float32Array;
  counts: Int32Array;
}

function toDt(a: Float32Array, dt: Dt): Uint8Array {
  const v = dt === "f32" ? a : dt === "f16" ? f32ToF16(a) : f32ToBf16(a);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Random inputs; `thr` is still 0 (see `withThreshold`). */
export function makeInputs(c: SffnCase, seed: number): SffnInputs {
  const rng = new Rng(seed);
  const E = c.F / c.S, rowsFc = c.act === ACT.swiglu ? 2 * c.F : c.F;
  return {
    x: rng.normals(c.rows * c.C, 1),
    nw: Float32Array.from(rng.normals(c.C, 0.1), (v) => 1 + v),
    nb: rng.normals(c.C, 0.1),
    wr: rng.normals(E * c.C, 2 / Math.sqrt(c.C)),
    br: c.bias ? rng.normals(E, 0.5) : null,
    wfc: toDt(rng.normals(rowsFc * c.C, 1 / Math.sqrt(c.C)), c.dt),
    bfc: c.bias ? rng.normals(rowsFc, 0.2) : null,
    wd: toDt(rng.normals(c.F * c.C, 1 / Math.sqrt(c.F)), c.dt),
    bd: c.bias ? rng.normals(c.C, 0.2) : null,
    eps: 1e-5,
    thr: 0,
  };
}

/**
 * The threshold for the wanted active fraction, from x' (the op's xn output): all logits in f64,
 * sorted; among the 16 gaps nearest the wanted quantile the widest one, and its midpoint.
 */
export function withThreshold(c: SffnCase, inp: SffnInputs, xn: Float32Array): SffnInputs {
  const logits = routerLogits(c, inp, xn);
  logits.sort((a, b) => a - b);
  const n = logits.length;
  if (c.active <= 0) return { ...inp, thr: logits[n - 1]! + 1 };
  if (c.active >= 1) return { ...inp, thr: logits[0]! - 1 };
  const q = Math.min(n - 1, Math.max(1, Math.round((1 - c.active) * n)));
  let best = q, gap = -1;
  for (let i = Math.max(1, q - 8); i <= Math.min(n - 1, q + 8); i++) {
    const g = logits[i]! - logits[i - 1]!;
    if (g > gap) [best, gap] = [i, g];
  }
  return { ...inp, thr: (logits[best]! + logits[best - 1]!) / 2 };
}

/** Minimum distance of a logit (f64, from xn) to the threshold: a guard for exact mask checks. */
export function thresholdMargin(c: SffnCase, inp: SffnInputs, xn: Float32Array): number {
  return Math.min(...routerLogits(c, inp, xn).map((l) => Math.abs(l - inp.thr)));
}

/** Every (row, expert) router logit in f64, from x' and the inputs' router. */
function routerLogits(c: SffnCase, inp: SffnInputs, xn: Float32Array): number[] {
  const E = c.F / c.S;
  const logits: number[] = [];
  for (let r = 0; r < c.rows; r++) {
    for (let e = 0; e < E; e++) {
      let acc = inp.br ? inp.br[e]! : 0;
      for (let i = 0; i < c.C; i++) acc += inp.wr[e * c.C + i]! * xn[r * c.C + i]!;
      logits.push(acc);
    }
  }
  return logits;
}

class Bufs {
  #own: Deno.PointerObject[] = [];
  constructor(readonly be: Backend) {}
  of(a: ArrayBufferView | null): Deno.PointerObject | null {
    if (!a) return null;
    const p = this.be.alloc(Math.max(16, a.byteLength));
    this.be.write(p, a);
    this.#own.push(p);
    return p;
  }
  zeros(bytes: number): Deno.PointerObject {
    return this.of(new Uint8Array(bytes))!;
  }
  free(): void {
    for (const p of this.#own) this.be.free(p);
  }
}

/** Waits for the backend, then reads the block's four outputs. */
function outputs(
  be: Backend,
  c: SffnCase,
  x: Deno.PointerObject,
  xn: Deno.PointerObject,
  mask: Deno.PointerObject,
  counts: Deno.PointerObject,
): SffnOutputs {
  be.synchronize();
  const o = {
    x: new Float32Array(c.rows * c.C),
    xn: new Float32Array(c.rows * c.C),
    mask: new Float32Array(c.rows * (c.F / c.S)),
    counts: new Int32Array(c.rows),
  };
  be.read(o.x, x);
  be.read(o.xn, xn);
  be.read(o.mask, mask);
  be.read(o.counts, counts);
  return o;
}

/** lte.h LTE_DEC_SFFN_ROUTER_ROWS. */
export const SFFN_ROUTER_ROWS = 0x100;

/**
 * One call of lte_dec_sparse_ffn on `be`. `routerRows` (half dtypes): w_fc carries the router's hi
 * and lo rows, split on `be` by lte_dec_convert_split, and act has LTE_DEC_SFFN_ROUTER_ROWS;
 * "zeros": the flag with zero rows (not w_router's split: a backend that reads them routes by b only).
 */
export function runOp(be: Backend, c: SffnCase, inp: SffnInputs, routerRows: boolean | "zeros" = false): SffnOutputs {
  const b = new Bufs(be);
  try {
    const E = c.F / c.S;
    const x = b.of(inp.x)!, xn = b.zeros(4 * c.rows * c.C), mask = b.zeros(4 * c.rows * E);
    const counts = b.zeros(4 * c.rows);
    let wfc = b.of(inp.wfc)!;
    if (routerRows) {
      const n = E * c.C, fc = inp.wfc.byteLength;
      const buf = new Uint8Array(fc + 4 * n);
      buf.set(inp.wfc);
      wfc = b.of(buf)!;
      const wr = b.of(inp.wr)!, at = (o: number) => Deno.UnsafePointer.offset(wfc, o) as Deno.PointerObject;
      if (routerRows === true) {
        be.check(be.sym.lte_dec_convert_split(be.ctx, DTypeCode[c.dt], wr, at(fc), at(fc + 2 * n), n), "split");
      }
    }
    callOp(be, c, inp, weightsOf(b, inp, wfc), { x, xn, mask, counts }, routerRows !== false);
    return outputs(be, c, x, xn, mask, counts);
  } finally {
    b.free();
  }
}

type Ptr = Deno.PointerObject | null;
interface Weights {
  nw: Ptr;
  nb: Ptr;
  wr: Ptr;
  br: Ptr;
  wfc: Ptr;
  bfc: Ptr;
  wd: Ptr;
  bd: Ptr;
}
interface Outs {
  x: Deno.PointerObject;
  xn: Deno.PointerObject;
  mask: Deno.PointerObject;
  counts: Deno.PointerObject;
}

function weightsOf(b: Bufs, inp: SffnInputs, wfc = b.of(inp.wfc)): Weights {
  return {
    nw: b.of(inp.nw),
    nb: b.of(inp.nb),
    wr: b.of(inp.wr),
    br: b.of(inp.br),
    wfc,
    bfc: b.of(inp.bfc),
    wd: b.of(inp.wd),
    bd: b.of(inp.bd),
  };
}

/** Enqueues one lte_dec_sparse_ffn on `be` (no wait). */
function callOp(be: Backend, c: SffnCase, inp: SffnInputs, w: Weights, o: Outs, routerRows = false): void {
  be.check(
    be.sym.lte_dec_sparse_ffn(
      be.ctx,
      DTypeCode[c.dt],
      o.x,
      c.mode,
      w.nw,
      w.nb,
      inp.eps,
      w.wr,
      w.br,
      inp.thr,
      w.wfc,
      w.bfc,
      w.wd,
      w.bd,
      o.xn,
      o.mask,
      o.counts,
      c.rows,
      c.C,
      c.F,
      c.S,
      c.act | (routerRows ? SFFN_ROUTER_ROWS : 0),
    ),
    "lte_dec_sparse_ffn",
  );
}

/**
 * Several calls of lte_dec_sparse_ffn back to back inside one captured graph, replayed `replays`
 * times: the graph first restores every call's residual x[k] from inputs[k].x (captured copies),
 * then runs the calls one after another with nothing between them (with PDL each launch pair is
 * chained to the previous one); all calls share one xn buffer, so a call that read the previous
 * call's x' or expert list would show in its output. The inputs must share everything but x.
 * Returns each call's outputs after the last replay (xn: the last call's).
 */
export function runOpGraph(be: Backend, c: SffnCase, inputs: SffnInputs[], replays: number): SffnOutputs[] {
  const b = new Bufs(be), s = be.sym, E = c.F / c.S;
  try {
    const w = weightsOf(b, inputs[0]!), xn = b.zeros(4 * c.rows * c.C);
    const calls = inputs.map((inp) => ({
      x0: b.of(inp.x)!,
      o: { x: b.zeros(4 * c.rows * c.C), xn, mask: b.zeros(4 * c.rows * E), counts: b.zeros(4 * c.rows) },
    }));
    const out = new BigUint64Array(1);
    be.check(s.lte_graph_begin(be.ctx), "lte_graph_begin");
    try {
      for (const { x0, o } of calls) {
        be.check(s.lte_mem_copy(be.ctx, o.x, x0, BigInt(4 * c.rows * c.C)), "lte_mem_copy");
      }
      for (const [k, { o }] of calls.entries()) callOp(be, c, inputs[k]!, w, o);
    } finally {
      be.check(s.lte_graph_end(be.ctx, out), "lte_graph_end"); // a failed call must not leave the stream capturing
    }
    const g = Deno.UnsafePointer.create(out[0]!);
    try {
      for (let r = 0; r < replays; r++) be.check(s.lte_graph_launch(be.ctx, g), "lte_graph_launch");
      return calls.map(({ o }) => outputs(be, c, o.x, o.xn, o.mask, o.counts));
    } finally {
      be.check(s.lte_graph_free(be.ctx, g), "lte_graph_free");
    }
  } finally {
    b.free();
  }
}

/**
 * The same block as the chain of the older ops: lte_dec_norm (x'), lte_dec_linear (router, f32),
 * lte_dec_router_mask, lte_dec_linear (gate/up or c_fc with the mask as out_mask) and
 * lte_dec_linear_t_sparse (down, into x). SwiGLU with b_fc has no chain (lte_dec_linear's SwiGLU
 * takes no bias).
 */
export function runChain(be: Backend, c: SffnCase, inp: SffnInputs): SffnOutputs {
  if (c.act === ACT.swiglu && inp.bfc) throw new Error("runChain: SwiGLU with b_fc has no older-op chain");
  const b = new Bufs(be);
  try {
    const E = c.F / c.S, s = be.sym, ctx = be.ctx;
    const x = b.of(inp.x)!, xn = b.zeros(4 * c.rows * c.C), mask = b.zeros(4 * c.rows * E);
    const counts = b.zeros(4 * c.rows), logits = b.zeros(4 * c.rows * E), h = b.zeros(4 * c.rows * c.F);
    const nw = b.of(inp.nw), nb = b.of(inp.nb);
    if (c.mode === X_MODE.plain) be.check(s.lte_mem_copy(ctx, xn, x, BigInt(4 * c.rows * c.C)), "lte_mem_copy");
    else {
      be.check(
        s.lte_dec_norm(ctx, x, nw, nb, xn, c.rows, c.C, inp.eps, c.mode === X_MODE.rms ? 0 : 1),
        "lte_dec_norm",
      );
    }
    const lin = (
      dt: number,
      w: Deno.PointerObject | null,
      om: Deno.PointerObject | null,
      bias: unknown,
      y: unknown,
      n: number,
      act: number,
    ) =>
      be.check(
        s.lte_dec_linear(
          ctx,
          dt,
          w,
          x,
          c.C,
          c.mode,
          nw,
          nb,
          inp.eps,
          null,
          om,
          om ? c.F : 0,
          om ? c.S : 0,
          bias as Deno.PointerObject | null,
          y as Deno.PointerObject,
          c.rows,
          n,
          c.C,
          0,
          act,
        ),
        "lte_dec_linear",
      );
    lin(DTypeCode.f32, b.of(inp.wr), null, b.of(inp.br), logits, E, 0);
    be.check(s.lte_dec_router_mask(ctx, logits, mask, counts, 1, c.rows, E, inp.thr), "lte_dec_router_mask");
    lin(DTypeCode[c.dt], b.of(inp.wfc), mask, b.of(inp.bfc), h, c.F, c.act);
    be.check(
      s.lte_dec_linear_t_sparse(ctx, DTypeCode[c.dt], b.of(inp.wd), h, mask, b.of(inp.bd), x, c.rows, c.C, c.F, c.S),
      "lte_dec_linear_t_sparse",
    );
    return outputs(be, c, x, xn, mask, counts);
  } finally {
    b.free();
  }
}

/** Max |a - b| / max |b|. */
export function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}
