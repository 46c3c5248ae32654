/**
 * CPU <-> CUDA agreement of the sparse FFN ops and lte_convert (deno task test:gpu; skipped without
 * a GPU unless LTE_REQUIRE_CUDA=1). Both backends get the same bytes; each op is also fed the
 * CPU's inputs (route results, h) so one op's rounding never leaks into the next comparison.
 *
 * Written tolerances, per op (|cuda - cpu| <= atol + rtol |cpu| elementwise, AND relative L2
 * error <= l2). The CPU accumulates in double, CUDA in f32 (tensor cores for f16/bf16) in another
 * order; both round h and y to the dtype at the same points, so a value next to a rounding
 * boundary may land one unit in the last place (ulp) apart; the rules allow 2 ulp plus a small
 * absolute term for cancellation:
 *   lte_convert                exact (bit-identical)
 *   route logits (f32 out)     atol 1e-4, rtol 1e-4 (unit-scale x, weights ~ 1/sqrt(C))
 *   route selection            identical sets: bits, union list and counts equal exactly. The test
 *                              problems keep every logit >= 0.02 away from 0, so a difference is a
 *                              bug, not rounding; the GPU list must also equal {e : gpu logit > 0}.
 *   h, y  f32                  atol 1e-5 * max|ref|, rtol 1e-5, l2 1e-5
 *   h, y  f16                  atol 1e-3 * max|ref|, rtol 2^-9 (2 ulp), l2 1e-3
 *   h, y  bf16                 atol 4e-3 * max|ref|, rtol 2^-6 (2 ulp), l2 8e-3
 * Outputs are poisoned with NaN bytes before every CUDA run, so an unwritten element fails.
 */
import assert from "node:assert/strict";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { DTypeCode } from "../../ffi/symbols.ts";
import { CapturedGraph, type FfnDtype } from "../../engine/ffn_kernels.ts";
import {
  compare,
  decode,
  type DeviceFfn,
  down,
  encode,
  gateUp,
  makeProblem,
  poison,
  Prng,
  readAs,
  readRoute,
  route,
  upload,
  writeRoute,
} from "../_sparse_ffn_cases.ts";

const required = Deno.env.get("LTE_REQUIRE_CUDA") === "1";
const haveCuda = backendAvailable("cuda");
if (required && !haveCuda) {
  Deno.test("CUDA backend is available", () => {
    getBackend("cuda");
  });
}

const TOL: Record<FfnDtype, { atol: number; rtol: number; l2: number }> = {
  f32: { atol: 1e-5, rtol: 1e-5, l2: 1e-5 },
  f16: { atol: 1e-3, rtol: 2 ** -9, l2: 1e-3 },
  bf16: { atol: 4e-3, rtol: 2 ** -6, l2: 8e-3 },
};

const report: Record<string, { worst: number; rel: number }> = {};

function agree(name: string, dtype: FfnDtype, got: Float32Array, ref: Float32Array): void {
  let maxAbs = 0;
  for (const v of ref) maxAbs = Math.max(maxAbs, Math.abs(v));
  const t = TOL[dtype];
  const c = compare(got, ref, t.atol * Math.max(maxAbs, 1e-6), t.rtol);
  report[name] = { worst: c.worst, rel: c.rel };
  assert.equal(c.nan, 0, `${name}: ${c.nan} non-finite values (unwritten or overflow)`);
  assert.ok(c.worst <= 1, `${name}: worst ratio ${c.worst.toFixed(3)} at ${c.at} (${got[c.at]} vs ${ref[c.at]})`);
  assert.ok(c.rel <= t.l2, `${name}: relative L2 ${c.rel} > ${t.l2}`);
}

interface Case {
  dtype: FfnDtype;
  adtype?: FfnDtype;
  act: "silu_mul" | "gelu";
  batch: number;
  C: number;
  N: number;
  S: number;
  bias?: boolean;
  residual?: boolean;
  dense?: boolean;
}

const CASES: Case[] = [
  { dtype: "f16", act: "silu_mul", batch: 1, C: 256, N: 24, S: 32 },
  { dtype: "bf16", act: "silu_mul", batch: 1, C: 256, N: 24, S: 32, residual: true },
  { dtype: "f32", act: "silu_mul", batch: 2, C: 128, N: 12, S: 32, residual: true },
  { dtype: "f16", act: "gelu", batch: 3, C: 192, N: 16, S: 32, bias: true, residual: true },
  { dtype: "bf16", act: "gelu", batch: 1, C: 768, N: 24, S: 32, bias: true },
  { dtype: "f32", act: "gelu", batch: 5, C: 64, N: 8, S: 16, bias: true },
  { dtype: "f16", act: "silu_mul", batch: 8, C: 512, N: 32, S: 32, residual: true },
  { dtype: "bf16", act: "silu_mul", batch: 9, C: 512, N: 32, S: 16 },
  { dtype: "f16", act: "silu_mul", batch: 16, C: 1024, N: 64, S: 32, bias: true, residual: true },
  { dtype: "f16", act: "silu_mul", batch: 4, C: 1024, N: 64, S: 32, dense: true },
  { dtype: "f16", act: "silu_mul", batch: 1, C: 2048, N: 86, S: 32, residual: true },
  { dtype: "bf16", act: "silu_mul", batch: 2, C: 4096, N: 64, S: 32 },
  // many experts: the route kernel's compaction over several 256-expert chunks and outer passes
  { dtype: "f16", act: "silu_mul", batch: 2, C: 256, N: 300, S: 16, bias: true },
  { dtype: "bf16", act: "silu_mul", batch: 1, C: 64, N: 1100, S: 16 },
  // f32 activations (x, residual, y, routers) with half weights: an engine that keeps f32 activations
  { dtype: "f16", adtype: "f32", act: "silu_mul", batch: 1, C: 1024, N: 32, S: 32, bias: true, residual: true },
  { dtype: "bf16", adtype: "f32", act: "gelu", batch: 3, C: 768, N: 24, S: 32, bias: true, residual: true },
  { dtype: "f16", adtype: "f32", act: "silu_mul", batch: 12, C: 512, N: 16, S: 32, residual: true },
  // the benchmark's LLaMA-2-7B shape (route: 344 one-block experts; gate/up splits of 4096 columns)
  { dtype: "f16", act: "silu_mul", batch: 1, C: 4096, N: 344, S: 32, residual: true },
  { dtype: "bf16", act: "silu_mul", batch: 5, C: 1088, N: 344, S: 32, bias: true },
];

for (const [i, cs] of CASES.entries()) {
  const name = `${cs.dtype}${
    cs.adtype ? `/${cs.adtype} activations` : ""
  } ${cs.act} B=${cs.batch} C=${cs.C} N=${cs.N} S=${cs.S}${cs.dense ? " dense" : ""}${cs.bias ? " +bias" : ""}${
    cs.residual ? " +residual" : ""
  }`;
  Deno.test({
    name: `sparse FFN CPU<->CUDA: ${name}`,
    ignore: !haveCuda,
    fn() {
      const p = makeProblem(100 + i, cs);
      const cpu = upload(getBackend("cpu"), p);
      const gpu = upload(getBackend("cuda"), p);
      try {
        checkCase(name, cpu, gpu);
      } finally {
        cpu.free();
        gpu.free();
      }
    },
  });
}

function checkCase(name0: string, cpu: DeviceFfn, gpu: DeviceFfn): void {
  // both union schemes: route's grid-wide list (0) and per-block compaction (LTE_SFFN_TUNE_LOCAL_LIST = 1)
  for (const local of [0, 1]) {
    tune(gpu, 4, local);
    try {
      checkScheme(`${name0}${local ? " local-list" : ""}`, cpu, gpu, local === 1);
    } finally {
      tune(gpu, 4, 0);
    }
  }
}

function checkScheme(name: string, cpu: DeviceFfn, gpu: DeviceFfn, local: boolean): void {
  const p = cpu.p, B = p.batch, F = p.N * p.S, eb = p.dtype === "f32" ? 4 : 2, yb = p.adtype === "f32" ? 4 : 2;
  // --- route
  route(cpu);
  const rc = readRoute(cpu);
  // route v2 (LTE_SFFN_ROUTE_V2 = 1: one block per expert + last-block compaction) only matters
  // for route's grid-wide list scheme; the local scheme runs its own bits-only kernel either way
  for (const v2 of local ? [0] : [0, 1, 0]) {
    poison(gpu.be, gpu.bits, 4 * p.N);
    poison(gpu.be, gpu.list, 4 * p.N);
    poison(gpu.be, gpu.logits, 4 * B * p.N);
    poison(gpu.be, gpu.counts, 4 * (B + 1));
    withSplit(1, () => route(gpu), 0, 0, 0, v2);
    const rg = readRoute(gpu), at = `${name}${v2 ? " route_v2" : ""}`;
    const lc = compare(rg.logits, rc.logits, 1e-4, 1e-4);
    assert.ok(lc.worst <= 1 && lc.nan === 0, `${at} logits: worst ${lc.worst}, nan ${lc.nan}`);
    report[`${at} logits`] = { worst: lc.worst, rel: lc.rel };
    assert.deepEqual([...rg.bits], [...rc.bits], `${at}: expert bits differ`);
    // the GPU's own bits are exactly {b : its logit > 0}
    for (let e = 0; e < p.N; e++) {
      let m = 0;
      for (let b = 0; b < B; b++) if (p.router === null || rg.logits[b * p.N + e]! > 0) m |= 1 << b;
      assert.equal(rg.bits[e], m >>> 0, `${at}: bits[${e}] vs its own logits`);
    }
    if (!local) {
      assert.deepEqual([...rg.list], [...rc.list], `${at}: union lists differ`);
      assert.deepEqual([...rg.counts], [...rc.counts], `${at}: counts differ`);
    }
  }
  const P = rc.counts[B]!;
  // --- gate/up on identical route inputs (compact h: the first P*S columns of each row), for every
  // column split of the cluster variant (LTE_SFFN_GU_SPLIT; 2 and 4 apply to batch <= 8 at unroll 4)
  gateUp(cpu);
  const hc = readAs(cpu, cpu.h, B * F);
  const used = (a: Float32Array) => {
    const out = new Float32Array(B * P * p.S);
    for (let b = 0; b < B; b++) out.set(a.subarray(b * F, b * F + P * p.S), b * P * p.S);
    return out;
  };
  // persist: 1 = a resident grid looping over tiles, 2 = a 3-block (x split) grid (many tiles per block)
  for (const [split, persist] of [...SPLITS.map((v) => [v, 0]), ...SPLITS.map((v) => [v, 1]), [1, 2], [2, 2]]) {
    withSplit(
      split!,
      () => {
        poison(gpu.be, gpu.h, eb * B * F);
        writeRoute(gpu, rc);
        if (local) {
          poison(gpu.be, gpu.list, 4 * p.N);
          poison(gpu.be, gpu.counts, 4 * (B + 1));
        }
        gateUp(gpu);
        const after = readRoute(gpu); // local-list mode: gate_up wrote list and counts
        const at = `${name} split=${split} persist=${persist}`;
        assert.deepEqual([...after.list], [...rc.list], `${at}: union lists differ (after gate_up)`);
        assert.deepEqual([...after.counts], [...rc.counts], `${at}: counts differ (after gate_up)`);
        agree(`${at} h`, p.dtype, used(readAs(gpu, gpu.h, B * F)), used(hc));
      },
      0,
      0,
      persist,
    );
  }
  // --- down on identical h, both variants, each twice (the workspace must come back zeroed)
  down(cpu);
  const yc = readAs(cpu, cpu.y, B * p.C, p.adtype);
  gpu.be.write(gpu.h, encode(p.dtype, hc));
  for (const bps of [2, 1, 4, 8]) {
    tune(gpu, 3, bps); // down grid size: other row chunkings of the same rows
    for (const variant of ["atomic", "splitk", "atomic", "auto"] as const) {
      poison(gpu.be, gpu.y, yb * B * p.C);
      down(gpu, variant);
      agree(`${name} y (${variant}, ${bps} blocks/SM)`, p.dtype, readAs(gpu, gpu.y, B * p.C, p.adtype), yc);
    }
  }
  tune(gpu, 3, 2);
  // cluster down (LTE_SFFN_DOWN_CL = 1: batch <= 8, atomic / auto; else the variants above), each
  // twice, with and without its L2 prefetch
  for (const pf of [0, 4]) {
    for (const variant of ["atomic", "auto", "atomic", "splitk"] as const) {
      poison(gpu.be, gpu.y, yb * B * p.C);
      withSplit(1, () => down(gpu, variant), pf, 1);
      agree(`${name} y (${variant}, down_cl, l2pf=${pf})`, p.dtype, readAs(gpu, gpu.y, B * p.C, p.adtype), yc);
    }
  }
  // --- y updated in place (residual === y, the f32-activation engine's residual add): f32 y takes
  // the atomic path without a finishing block; every variant and local scheme must agree
  if (p.residual !== null) {
    for (const variant of ["atomic", "splitk", "auto"] as const) {
      for (const [pf, downCl, inPlace] of [[0, 0, 1], [4, 0, 1], [0, 1, 1], [0, 0, 0]]) {
        gpu.be.write(gpu.y, encode(p.adtype, p.residual));
        Deno.env.set("LTE_SFFN_DOWN_INPLACE", String(inPlace));
        try {
          withSplit(1, () => downInPlace(gpu, variant), pf, downCl);
        } finally {
          Deno.env.delete("LTE_SFFN_DOWN_INPLACE");
        }
        agree(
          `${name} y in place (${variant}, l2pf=${pf}, down_cl=${downCl}, inplace_path=${inPlace})`,
          p.dtype,
          readAs(gpu, gpu.y, B * p.C, p.adtype),
          yc,
        );
      }
    }
  }
  // --- the whole chain on the GPU, direct and as a replayed CUDA graph, with and without PDL
  for (const pdl of [0, 1]) {
    tune(gpu, 1, pdl);
    for (const unroll of B <= 8 && p.dtype !== "f32" ? [4, 8] : [8]) {
      tune(gpu, 2, unroll);
      chain(`${name} pdl=${pdl} unroll=${unroll}`, gpu, yc);
    }
  }
  tune(gpu, 2, 4);
  // env-selected variants: gate/up column split (LTE_SFFN_GU_SPLIT), L2 prefetch (LTE_SFFN_L2PF
  // bits: 1 gate/up next window, 2 gate/up whole tile, 4 down rows; hints only, results unchanged)
  // and the cluster down (LTE_SFFN_DOWN_CL)
  tune(gpu, 1, 1);
  const envs = [
    [2, 0, 0, 0, 0],
    [4, 0, 0, 1, 1],
    [1, 1, 0, 2, 0],
    [1, 6, 0, 1, 1],
    [2, 5, 1, 2, 1],
    [4, 6, 1, 0, 0],
    [1, 0, 1, 1, 1],
  ];
  for (const [split, pf, dcl, persist, v2] of envs) {
    const at = `${name} pdl=1 split=${split} l2pf=${pf} down_cl=${dcl} persist=${persist} route_v2=${v2}`;
    withSplit(split!, () => chain(at, gpu, yc), pf, dcl, persist, v2);
  }
  tune(gpu, 1, 0);
  withSplit(2, () => chain(`${name} pdl=0 split=2 l2pf=7 down_cl=1 persist=2 route_v2=1`, gpu, yc), 7, 1, 2, 1);
  tune(gpu, 1, 1);
}

/** Column splits of the cluster gate/up variant (env LTE_SFFN_GU_SPLIT, read at every launch). */
const SPLITS = [1, 2, 4];
/** Runs fn with the env-selected variants: gate/up split, L2 prefetch bits, cluster down (0/1). */
function withSplit(split: number, fn: () => void, pf = 0, downCl = 0, persist = 0, routeV2 = 0): void {
  Deno.env.set("LTE_SFFN_ROUTE_V2", String(routeV2));
  Deno.env.set("LTE_SFFN_GU_PERSIST", String(persist));
  Deno.env.set("LTE_SFFN_GU_SPLIT", String(split));
  Deno.env.set("LTE_SFFN_L2PF", String(pf));
  Deno.env.set("LTE_SFFN_DOWN_CL", String(downCl));
  try {
    fn();
  } finally {
    Deno.env.delete("LTE_SFFN_GU_SPLIT");
    Deno.env.delete("LTE_SFFN_L2PF");
    Deno.env.delete("LTE_SFFN_DOWN_CL");
    Deno.env.delete("LTE_SFFN_GU_PERSIST");
    Deno.env.delete("LTE_SFFN_ROUTE_V2");
  }
}

/** lte_sffn_down with residual = y (y += FFN(x)). */
function downInPlace(d: DeviceFfn, variant: "auto" | "atomic" | "splitk"): void {
  const { be, p } = d;
  const code = { auto: 0, atomic: 1, splitk: 2 }[variant];
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
      d.y,
      d.y,
      d.ws,
      p.batch,
      p.C,
      p.N,
      p.S,
      code,
    ),
    "lte_sffn_down (in place)",
  );
}

function tune(d: DeviceFfn, key: number, value: number): void {
  d.be.check(d.be.sym.lte_sffn_set_tuning(d.be.ctx, key, value), "lte_sffn_set_tuning");
}

function chain(name: string, gpu: DeviceFfn, yc: Float32Array): void {
  const p = gpu.p, B = p.batch, yb = p.adtype === "f32" ? 4 : 2;
  poison(gpu.be, gpu.y, yb * B * p.C);
  route(gpu);
  gateUp(gpu);
  down(gpu);
  const yChain = readAs(gpu, gpu.y, B * p.C, p.adtype);
  agree(`${name} chain`, p.dtype, yChain, yc);
  {
    // two layers back to back in one graph: with PDL, layer 2's route/gate_up must not overwrite
    // the list / h that layer 1's down is still reading (y and residual are separate buffers)
    const g = CapturedGraph.capture(gpu.be, () => {
      for (let layer = 0; layer < 2; layer++) {
        route(gpu);
        gateUp(gpu);
        down(gpu);
      }
    });
    try {
      for (let r = 0; r < 3; r++) {
        poison(gpu.be, gpu.y, yb * B * p.C);
        g.replay();
        agree(`${name} graph replay ${r}`, p.dtype, readAs(gpu, gpu.y, B * p.C, p.adtype), yc);
      }
    } finally {
      g.free();
    }
  }
}

Deno.test({
  name: "lte_convert CPU<->CUDA: bit-identical f32 -> f16 / bf16 -> f32, plain and transposed",
  ignore: !haveCuda,
  fn() {
    const cpu = getBackend("cpu"), gpu = getBackend("cuda");
    const rng = new Prng(7);
    const rows = 129, cols = 67;
    const vals = rng.uniform(rows * cols, -4, 4);
    vals.set([0, -0, 65504, 65519, 65520, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, 1e-30, -1e30], 0);
    for (const dt of ["f16", "bf16"] as const) {
      for (const transpose of [0, 1]) {
        const out: Uint8Array[] = [];
        for (const be of [cpu, gpu]) {
          const src = be.alloc(4 * vals.length), dst = be.alloc(2 * vals.length);
          be.write(src, vals);
          poison(be, dst, 2 * vals.length);
          be.check(be.sym.lte_convert(be.ctx, DTypeCode.f32, src, DTypeCode[dt], dst, rows, cols, transpose), "cv");
          const bytes = new Uint8Array(2 * vals.length);
          be.read(bytes, dst);
          out.push(bytes);
          be.free(src);
          be.free(dst);
        }
        assert.deepEqual(out[1], out[0], `${dt} transpose=${transpose}`);
        assert.ok(decode(dt, out[1]!).every((v) => !Number.isNaN(v)));
      }
    }
  },
});

Deno.test({
  name: "dense baseline (cuBLAS GemmEx) CPU<->CUDA",
  ignore: !haveCuda,
  fn() {
    const rows = 384, cols = 512, B = 3;
    const rng = new Prng(8);
    const x = encode("f16", rng.uniform(B * cols, -1, 1)), w = encode("f16", rng.uniform(rows * cols, -0.05, 0.05));
    const res: Float32Array[] = [];
    for (const be of [getBackend("cpu"), getBackend("cuda")]) {
      const dx = be.alloc(x.length), dw = be.alloc(w.length), dy = be.alloc(2 * B * rows);
      be.write(dx, x);
      be.write(dw, w);
      be.check(be.sym.lte_sffn_dense_gemv(be.ctx, DTypeCode.f16, dx, dw, dy, B, rows, cols), "gemv");
      const y = new Uint8Array(2 * B * rows);
      be.read(y, dy);
      res.push(decode("f16", y));
      for (const ptr of [dx, dw, dy]) be.free(ptr);
    }
    agree("dense gemv f16", "f16", res[1]!, res[0]!);
  },
});

Deno.test({
  name: "agreement report",
  ignore: !haveCuda,
  fn() {
    const at = Deno.env.get("LTE_SFFN_AGREEMENT_REPORT");
    if (at) Deno.writeTextFileSync(at, JSON.stringify({ tolerances: TOL, checks: report }, null, 1));
    console.log(`sparse FFN agreement: ${Object.keys(report).length} checks`);
  },
});
