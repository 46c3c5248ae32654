/**
 * CPU reference of the sparse FFN ops (cuda/cpu/sparse_ffn.c, cuda/cpu/half.c) against a float64
 * TypeScript reference (tests/_sparse_ffn_cases.ts), plus the properties the engine relies on:
 *   - lte_convert rounds exactly like Math.f16round / bf16 round-to-nearest-even, transposes right;
 *   - route: strict threshold, ascending union list, per-token bits and counts, dense mode;
 *   - sparse FFN with every expert equals the dense FFN; with a router it equals the dense FFN
 *     with the hard mask applied (SiLU-mul and GELU + biases, f32 / f16 / bf16);
 *   - batch over the union: every token's row is bit-identical to running that token alone;
 *   - bad shapes and codes are INVALID_ARGUMENT naming the parameter.
 * Tolerances here only cover f64 vs the CPU's double-then-f32 rounding: 1 unit in the last place
 * of the dtype (rtol 2^-10 f16, 2^-7 bf16, 1e-6 f32) plus a tiny atol for cancellation.
 */
import assert from "node:assert/strict";
import { getBackend } from "../ffi/backend.ts";
import { DTypeCode, Status } from "../ffi/symbols.ts";
import { downloadAsF32, SparseFfn, uploadAs } from "../engine/ffn_kernels.ts";
import {
  bf16round,
  compare,
  decode,
  down,
  encode,
  expandH,
  gateUp,
  makeProblem,
  Prng,
  readAs,
  readRoute,
  referenceFfn,
  roundAll,
  route,
  upload,
} from "./_sparse_ffn_cases.ts";

const be = getBackend("cpu");
const TOL = {
  f32: { atol: 1e-6, rtol: 2e-6 },
  f16: { atol: 1e-4, rtol: 2 ** -10 },
  bf16: { atol: 1e-3, rtol: 2 ** -7 },
};

Deno.test("lte_convert: f32 -> f16 / bf16 round to nearest even like Math.f16round, and back exactly", () => {
  const rng = new Prng(1);
  const vals = [
    0,
    -0,
    1,
    1 + 2 ** -11, // tie -> even (1)
    1 + 3 * 2 ** -11, // tie -> even (1 + 2^-9)
    65504,
    65519,
    65520, // -> inf
    -70000,
    2 ** -24, // smallest f16 subnormal
    2 ** -25, // tie -> 0
    3 * 2 ** -26,
    6.1e-5,
    1e-8,
    Infinity,
    -Infinity,
    ...rng.uniform(2000, -3, 3),
    ...Array.from(rng.uniform(500, -1, 1), (v) => v * 1e-5),
  ];
  const src = new Float32Array(vals);
  const n = src.length;
  const dSrc = uploadAs(be, "f32", src, 1, n);
  for (const dt of ["f16", "bf16"] as const) {
    const dst = be.alloc(2 * n);
    be.check(be.sym.lte_convert(be.ctx, DTypeCode.f32, dSrc, DTypeCode[dt], dst, 1, n, 0), "lte_convert");
    const bytes = new Uint8Array(2 * n);
    be.read(bytes, dst);
    const got = decode(dt, bytes);
    for (let i = 0; i < n; i++) {
      const want = dt === "f16" ? Math.f16round(src[i]!) : bf16round(src[i]!);
      assert.ok(Object.is(got[i], want), `${dt}: convert(${src[i]}) = ${got[i]}, want ${want}`);
    }
    // and back to f32 exactly
    const back = downloadAsF32(be, dst, dt, n);
    for (let i = 0; i < n; i++) assert.ok(Object.is(back[i], got[i]));
    be.free(dst);
  }
  be.free(dSrc);
});

Deno.test("lte_convert: transpose (rows, cols) -> (cols, rows) across dtypes", () => {
  const rows = 37, cols = 70;
  const src = new Prng(2).uniform(rows * cols, -2, 2);
  const d = uploadAs(be, "bf16", src, rows, cols, true); // bf16 of src^T
  const got = downloadAsF32(be, d, "bf16", rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) assert.equal(got[c * rows + r], bf16round(src[r * cols + c]!));
  }
  be.free(d);
});

Deno.test("route: strict threshold, ascending union, bits and counts; dense mode selects everything", () => {
  const p = makeProblem(3, { dtype: "f16", act: "silu_mul", batch: 3, C: 128, N: 20, S: 16, bias: true });
  const ref = referenceFfn(p);
  const d = upload(be, p);
  route(d);
  const r = readRoute(d);
  const union: number[] = [];
  for (let e = 0; e < p.N; e++) {
    let m = 0;
    for (let b = 0; b < p.batch; b++) if (ref.selected[b]![e]) m |= 1 << b;
    assert.equal(r.bits[e], m >>> 0, `bits[${e}]`);
    if (m) union.push(e);
    for (let b = 0; b < p.batch; b++) {
      assert.ok(Math.abs(r.logits[b * p.N + e]! - ref.logits[b * p.N + e]!) < 1e-5, "logit");
    }
  }
  assert.deepEqual([...r.list.subarray(0, union.length)], union);
  assert.ok(r.list.subarray(union.length).every((v) => v === -1), "list is -1 past the union");
  for (let b = 0; b < p.batch; b++) assert.equal(r.counts[b], ref.selected[b]!.filter(Boolean).length);
  assert.equal(r.counts[p.batch], union.length);
  assert.ok(union.length > 0 && union.length < p.N, `a mixed selection (${union.length} of ${p.N})`);
  d.free();

  const dense = makeProblem(4, { dtype: "bf16", act: "silu_mul", batch: 2, C: 64, N: 5, S: 16, dense: true });
  const dd = upload(be, dense);
  route(dd);
  const rd = readRoute(dd);
  assert.deepEqual([...rd.list], [0, 1, 2, 3, 4]);
  assert.deepEqual([...rd.bits], [3, 3, 3, 3, 3]);
  assert.deepEqual([...rd.counts], [5, 5, 5]);
  assert.ok(rd.logits.every((v) => v === 0));
  dd.free();
});

for (const dtype of ["f32", "f16", "bf16"] as const) {
  for (const act of ["silu_mul", "gelu"] as const) {
    Deno.test(`sparse FFN ${dtype} ${act}: all experts = dense FFN; routed = dense FFN with the mask applied`, () => {
      const tol = TOL[dtype];
      for (const dense of [true, false]) {
        const p = makeProblem(10 + (dense ? 1 : 0), {
          dtype,
          act,
          batch: 2,
          C: 128,
          N: 12,
          S: 32,
          dense,
          bias: act === "gelu",
          residual: true,
        });
        const ref = referenceFfn(p); // dense: no router -> every expert
        const d = upload(be, p);
        route(d);
        gateUp(d);
        down(d);
        const r = readRoute(d);
        const P = r.counts[p.batch]!;
        if (dense) assert.equal(P, p.N);
        const h = expandH(p, readAs(d, d.h, p.batch * p.N * p.S), r.list, P);
        const ch = compare(h, ref.h, tol.atol, tol.rtol);
        assert.ok(ch.worst <= 1, `h: worst ${ch.worst} at ${ch.at}`);
        const y = readAs(d, d.y, p.batch * p.C, p.adtype);
        const cy = compare(y, ref.y, tol.atol, tol.rtol);
        assert.ok(cy.worst <= 1 && cy.nan === 0, `y: worst ${cy.worst} at ${cy.at}, nan ${cy.nan}`);
        if (!dense) {
          // the mask matters: the unmasked dense FFN is far away
          const full = referenceFfn(p, ref.selected.map((row) => row.map(() => true)));
          assert.ok(compare(y, full.y, tol.atol, tol.rtol).worst > 10, "masked output differs from dense");
        }
        d.free();
      }
    });
  }
}

for (const dtype of ["f16", "bf16"] as const) {
  Deno.test(`sparse FFN ${dtype} weights with f32 activations (x, routers, residual, y) matches the reference`, () => {
    const tol = TOL[dtype];
    const p = makeProblem(50, {
      dtype,
      adtype: "f32",
      act: "silu_mul",
      batch: 3,
      C: 128,
      N: 12,
      S: 32,
      bias: true,
      residual: true,
    });
    const ref = referenceFfn(p);
    const d = upload(be, p);
    route(d);
    gateUp(d);
    down(d);
    const y = readAs(d, d.y, p.batch * p.C, "f32");
    const c = compare(y, ref.y, tol.atol, tol.rtol);
    assert.ok(c.worst <= 1 && c.nan === 0, `y: worst ${c.worst} at ${c.at}`);
    // y is f32 here: not rounded to the weight dtype
    assert.ok(y.some((v) => roundAll(dtype, new Float32Array([v]))[0] !== v), "f32 output keeps f32 precision");
    d.free();
  });
}

Deno.test("batch over the union: each token's row equals that token run alone (bit-identical), both variants", () => {
  const B = 4;
  const p = makeProblem(20, { dtype: "bf16", act: "silu_mul", batch: B, C: 128, N: 16, S: 16, residual: true });
  const d = upload(be, p);
  route(d);
  gateUp(d);
  down(d, "splitk");
  const yAll = readAs(d, d.y, B * p.C, p.adtype);
  down(d, "atomic");
  assert.deepEqual(readAs(d, d.y, B * p.C, p.adtype), yAll);
  const counts = readRoute(d).counts;
  assert.ok(counts[B]! > Math.max(...counts.subarray(0, B)), "the union is larger than any token's set");
  d.free();
  for (let b = 0; b < B; b++) {
    const one = {
      ...p,
      batch: 1,
      x: p.x.slice(b * p.C, (b + 1) * p.C),
      residual: p.residual!.slice(b * p.C, (b + 1) * p.C),
    };
    const d1 = upload(be, one);
    route(d1);
    gateUp(d1);
    down(d1);
    assert.deepEqual(readAs(d1, d1.y, p.C, p.adtype), yAll.slice(b * p.C, (b + 1) * p.C), `token ${b}`);
    d1.free();
  }
});

Deno.test("SparseFfn wrapper: forward with residual in place (y = y + FFN(x)) matches the reference", () => {
  const p = makeProblem(30, { dtype: "f16", act: "silu_mul", batch: 1, C: 64, N: 8, S: 16, residual: true });
  const ref = referenceFfn(p);
  const ffn = new SparseFfn(be, "f16", { dModel: 64, nExperts: 8, expertSize: 16, act: "silu_mul", maxBatch: 2 });
  const layer = {
    router: ffn.uploadMatrix(p.router!, 8, 64),
    routerBias: null,
    gate: ffn.uploadMatrix(p.gate!, 128, 64),
    inW: ffn.uploadMatrix(p.inW, 128, 64),
    inBias: null,
    // the wrapper transposes HF's (C, F) down_proj; hand it downT^T
    downT: ffn.uploadMatrix(transpose(p.downT, 128, 64), 64, 128, { transpose: true }),
    downBias: null,
  };
  const x = ffn.uploadVector(p.x);
  const y = ffn.uploadVector(p.residual!);
  ffn.forward(layer, x, y, { batch: 1, residual: y });
  const got = downloadAsF32(be, y, "f16", 64);
  const c = compare(got, ref.y, TOL.f16.atol, TOL.f16.rtol);
  assert.ok(c.worst <= 1, `worst ${c.worst}`);
  const counts = ffn.readCounts(1);
  assert.equal(counts.perToken[0], ref.selected[0]!.filter(Boolean).length);
  assert.equal(counts.union, counts.perToken[0]);
  assert.throws(() => ffn.forward(layer, x, y, { batch: 3 }), /batch = 3 must be an integer in \[1, 2\]/);
  for (const ptr of [layer.router, layer.gate, layer.inW, layer.downT, x, y]) be.free(ptr);
  ffn.dispose();
});

Deno.test("dense baselines: lte_sffn_dense_gemv and lte_sffn_dense_act", () => {
  const rows = 24, cols = 64, B = 2;
  const rng = new Prng(5);
  const x = rng.uniform(B * cols, -1, 1), w = rng.uniform(rows * cols, -0.2, 0.2);
  const dx = be.alloc(2 * B * cols), dw = be.alloc(2 * rows * cols), dy = be.alloc(2 * B * rows);
  be.write(dx, encode("f16", x));
  be.write(dw, encode("f16", w));
  be.check(be.sym.lte_sffn_dense_gemv(be.ctx, DTypeCode.f16, dx, dw, dy, B, rows, cols), "gemv");
  const xr = decode("f16", encode("f16", x)), wr = decode("f16", encode("f16", w));
  const y = new Uint8Array(2 * B * rows);
  be.read(y, dy);
  const got = decode("f16", y);
  for (let b = 0; b < B; b++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += xr[b * cols + k]! * wr[r * cols + k]!;
      assert.equal(got[b * rows + r], Math.f16round(Math.fround(s)));
    }
  }
  // h = silu(gate) * up over the same buffers
  const dh = be.alloc(2 * B * rows);
  be.check(be.sym.lte_sffn_dense_act(be.ctx, DTypeCode.f16, 0, dy, dy, dh, B * rows), "act");
  const hb = new Uint8Array(2 * B * rows);
  be.read(hb, dh);
  const h = decode("f16", hb);
  for (let i = 0; i < B * rows; i++) {
    const g = got[i]!;
    assert.ok(Math.abs(h[i]! - g / (1 + Math.exp(-g)) * g) <= 1e-3 * Math.abs(h[i]!) + 1e-6);
  }
  for (const ptr of [dx, dw, dy, dh]) be.free(ptr);
});

Deno.test("bad input: INVALID_ARGUMENT naming the parameter; graphs are CUDA-only", () => {
  const p = makeProblem(40, { dtype: "f16", act: "silu_mul", batch: 1, C: 64, N: 4, S: 16 });
  const d = upload(be, p);
  const call = (batch: number, C: number, S: number, act = 0) =>
    be.sym.lte_sffn_gate_up(
      be.ctx,
      DTypeCode.f16,
      DTypeCode.f16,
      act,
      d.x,
      d.gate,
      d.inW,
      null,
      d.bits,
      d.list,
      d.counts,
      d.h,
      d.ws,
      batch,
      C,
      4,
      S,
    );
  const msg = () => Deno.UnsafePointerView.getCString(be.sym.lte_ctx_last_error(be.ctx)!);
  assert.equal(call(0, 64, 16), Status.INVALID_ARGUMENT);
  assert.match(msg(), /lte_sffn_gate_up: batch = 0 must be in \[1, 16\]/);
  assert.equal(call(17, 64, 16), Status.INVALID_ARGUMENT);
  assert.equal(call(1, 96, 16), Status.INVALID_ARGUMENT);
  assert.match(msg(), /d_model = 96 must be a positive multiple of 64/);
  assert.equal(call(1, 64, 24), Status.INVALID_ARGUMENT);
  assert.match(msg(), /expert_size = 24/);
  assert.equal(call(1, 64, 16, 7), Status.INVALID_ARGUMENT);
  assert.match(msg(), /act = 7/);
  route(d);
  // a corrupted union (list entry out of range) is caught on the CPU before any read
  be.write(d.list, new Int32Array([9, -1, -1, -1]));
  be.write(d.counts, new Int32Array([1, 1]));
  assert.equal(call(1, 64, 16), Status.INVALID_ARGUMENT);
  assert.match(msg(), /list\[0\] = 9 is outside \[0, 4\)/);
  assert.equal(
    be.sym.lte_sffn_down(
      be.ctx,
      DTypeCode.f16,
      DTypeCode.f16,
      d.h,
      d.downT,
      null,
      d.list,
      d.counts,
      null,
      d.y,
      d.ws,
      1,
      64,
      4,
      16,
      5,
    ),
    Status.INVALID_ARGUMENT,
  );
  assert.match(msg(), /variant = 5/);
  assert.equal(
    be.sym.lte_convert(be.ctx, DTypeCode.i32, d.x, DTypeCode.f16, d.h, 1, 4, 0),
    Status.UNSUPPORTED,
  );
  assert.equal(be.sym.lte_graph_begin(be.ctx), Status.UNSUPPORTED);
  assert.equal(be.sym.lte_graph_time(be.ctx, null, 0, 1, 1, new Float32Array(1)), Status.UNSUPPORTED);
  d.free();
});

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}
