/**
 * lte_dec_sparse_ffn on the CPU backend: the fused sparse FFN block equals the chain of the older
 * decode ops (norm, router GEMV, router mask, masked gate/up, transposed sparse down) bit for bit,
 * for SwiGLU and GELU, every x-mode, several row counts and dtypes, no / some / all experts active;
 * and bad arguments are refused with a message naming the op and the argument.
 */
import nodeAssert from "node:assert/strict";
import { getBackend } from "../ffi/backend.ts";
import { DTypeCode, Status } from "../ffi/symbols.ts";
import { cString } from "../ffi/library.ts";
import {
  ACT,
  caseName,
  makeInputs,
  runChain,
  runOp,
  type SffnCase,
  thresholdMargin,
  withThreshold,
  X_MODE,
} from "./_dec_sffn_cases.ts";

const CASES: SffnCase[] = [
  { dt: "f32", rows: 1, C: 64, F: 128, S: 16, act: ACT.swiglu, mode: X_MODE.rms, bias: false, active: 0.5 },
  { dt: "f16", rows: 3, C: 136, F: 96, S: 16, act: ACT.swiglu, mode: X_MODE.layer, bias: false, active: 0.3 },
  { dt: "bf16", rows: 5, C: 64, F: 256, S: 32, act: ACT.gelu, mode: X_MODE.layer, bias: true, active: 0.6 },
  { dt: "f16", rows: 2, C: 32, F: 64, S: 8, act: ACT.gelu, mode: X_MODE.plain, bias: true, active: 0 },
  { dt: "f32", rows: 2, C: 32, F: 64, S: 8, act: ACT.swiglu, mode: X_MODE.rms, bias: false, active: 1 },
];

Deno.test("lte_dec_sparse_ffn (CPU) equals the chain of the older decode ops bit for bit", () => {
  const be = getBackend("cpu");
  for (const [i, c] of CASES.entries()) {
    const name = caseName(c);
    let inp = makeInputs(c, 100 + i);
    inp = withThreshold(c, inp, runOp(be, c, inp).xn);
    const op = runOp(be, c, inp), chain = runChain(be, c, inp);
    nodeAssert.ok(thresholdMargin(c, inp, op.xn) > 1e-6, `${name}: a logit sits on the threshold`);
    nodeAssert.deepStrictEqual(Array.from(op.mask), Array.from(chain.mask), `${name}: mask`);
    nodeAssert.deepStrictEqual(Array.from(op.counts), Array.from(chain.counts), `${name}: counts`);
    nodeAssert.deepStrictEqual(Array.from(op.xn), Array.from(chain.xn), `${name}: xn`);
    nodeAssert.deepStrictEqual(Array.from(op.x), Array.from(chain.x), `${name}: x`);
    if (c.dt !== "f32") {
      // w_fc's router rows (LTE_DEC_SFFN_ROUTER_ROWS) are accepted; the reference routes by w_router
      const rr = runOp(be, c, inp, true);
      nodeAssert.deepStrictEqual(Array.from(rr.x), Array.from(op.x), `${name}: x with the router rows`);
      nodeAssert.deepStrictEqual(Array.from(rr.mask), Array.from(op.mask), `${name}: mask with the router rows`);
    }
    // the wanted activity was reached, and the block did something (or, with no expert, only the bias)
    const E = c.F / c.S, on = op.mask.reduce((a, v) => a + v, 0);
    if (c.active === 0) {
      nodeAssert.equal(on, 0, `${name}: experts active`);
      for (let j = 0; j < op.x.length; j++) {
        nodeAssert.equal(op.x[j], Math.fround(inp.x[j]! + (inp.bd ? inp.bd[j % c.C]! : 0)), `${name}: x[${j}]`);
      }
    } else if (c.active === 1) nodeAssert.equal(on, c.rows * E, `${name}: not all experts active`);
    else {
      nodeAssert.ok(Math.abs(on / (c.rows * E) - c.active) < 0.15, `${name}: active fraction ${on / (c.rows * E)}`);
      nodeAssert.notDeepStrictEqual(Array.from(op.x), Array.from(inp.x), `${name}: x unchanged`);
    }
  }
});

// f16: |hi + lo - x| <= 2^-22 |x| while lo is a normal half (|x| >= 2^-3), else <= 2^-25 (lo's
// subnormal step); bf16 (8 exponent bits): 2^-16 |x|
Deno.test("lte_dec_convert_split (CPU): hi is the rounded value, hi + lo is x to 2^-22 (f16) / 2^-16 (bf16)", () => {
  const be = getBackend("cpu");
  const n = 4096, x = new Float32Array(n);
  const frac = (i: number) => Math.abs(Math.sin(i * 12.9898) * 43758.5453) % 1;
  for (let i = 0; i < n; i++) x[i] = (i % 2 ? -1 : 1) * (0.5 + frac(i)) * 2 ** ((i % 21) - 12);
  const src = be.alloc(4 * n), hi = be.alloc(2 * n), lo = be.alloc(2 * n), one = be.alloc(2 * n);
  try {
    be.write(src, x);
    for (const [dt, bound] of [["f16", 2 ** -22], ["bf16", 2 ** -16]] as const) {
      be.check(be.sym.lte_dec_convert_split(be.ctx, DTypeCode[dt], src, hi, lo, n), "lte_dec_convert_split");
      be.check(be.sym.lte_dec_convert(be.ctx, DTypeCode[dt], src, one, n), "lte_dec_convert");
      const h = new Uint16Array(n), l = new Uint16Array(n), o = new Uint16Array(n);
      be.read(h, hi);
      be.read(l, lo);
      be.read(o, one);
      nodeAssert.deepStrictEqual(Array.from(h), Array.from(o), `${dt}: hi is lte_dec_convert's value`);
      const f = (b: number) => dt === "f16" ? f16Value(b) : new Float32Array(new Uint32Array([b << 16]).buffer)[0]!;
      let worst = 0, nonzero = 0;
      for (let i = 0; i < n; i++) {
        const ax = Math.abs(x[i]!), err = Math.abs(f(h[i]!) + f(l[i]!) - x[i]!);
        worst = Math.max(worst, dt === "f16" && ax < 2 ** -3 ? err / (2 ** -25 / bound) : err / ax);
        nonzero += l[i]! & 0x7fff ? 1 : 0;
      }
      nodeAssert.ok(worst <= bound, `${dt}: |hi + lo - x| / |x| = ${worst} > ${bound}`);
      nodeAssert.ok(nonzero > n / 2, `${dt}: only ${nonzero} nonzero lo values`);
    }
    const st = be.sym.lte_dec_convert_split(be.ctx, DTypeCode.f32, src, hi, lo, n);
    nodeAssert.equal(st, Status.INVALID_ARGUMENT);
    nodeAssert.match(cString(be.sym.lte_ctx_last_error(be.ctx)), /lte_dec_convert_split: dtype/);
  } finally {
    for (const p of [src, hi, lo, one]) be.free(p);
  }
});

/** The value of an IEEE half given as its bits. */
function f16Value(b: number): number {
  const s = b & 0x8000 ? -1 : 1, e = (b >> 10) & 0x1f, m = b & 0x3ff;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

Deno.test("lte_dec_sparse_ffn (CPU): bad arguments name the op and the argument", () => {
  const be = getBackend("cpu");
  const buf = be.alloc(1 << 16);
  try {
    be.write(buf, new Uint8Array(1 << 16));
    const call = (o: Partial<{ act: number; C: number; F: number; S: number; mask: null; mode: number }>) => {
      const st = be.sym.lte_dec_sparse_ffn(
        be.ctx,
        DTypeCode.f16,
        buf,
        o.mode ?? X_MODE.rms,
        buf,
        buf,
        1e-5,
        buf,
        null,
        0,
        buf,
        null,
        buf,
        null,
        buf,
        o.mask === null ? null : buf,
        null,
        1,
        o.C ?? 64,
        o.F ?? 64,
        o.S ?? 16,
        o.act ?? ACT.swiglu,
      );
      return { st, msg: st === Status.OK ? "" : cString(be.sym.lte_ctx_last_error(be.ctx)) };
    };
    nodeAssert.equal(call({}).st, Status.OK);
    for (
      const [o, want] of [
        [{ act: 0 }, "lte_dec_sparse_ffn: act = 0 must be LTE_DEC_ACT_SWIGLU or LTE_DEC_ACT_GELU"],
        [{ mode: 7 }, "lte_dec_sparse_ffn: x_mode = 7 is not a LTE_DEC_X_* value"],
        [{ C: 60 }, "lte_dec_sparse_ffn: d_model = 60 must be a multiple of 8 and <= 8192"],
        [{ F: 72 }, "lte_dec_sparse_ffn: d_ff = 72 is not a multiple of expert_size 16"],
        [{ F: 8200, S: 2 }, "lte_dec_sparse_ffn: 4100 experts per layer exceed 4096"],
        [{ mask: null }, "mask"],
      ] as const
    ) {
      const r = call(o as Parameters<typeof call>[0]);
      nodeAssert.equal(r.st, Status.INVALID_ARGUMENT, JSON.stringify(o));
      nodeAssert.ok(r.msg.includes(want), `${JSON.stringify(o)}: ${r.msg}`);
      nodeAssert.ok(r.msg.includes("lte_dec_sparse_ffn"), r.msg);
    }
  } finally {
    be.free(buf);
  }
});
