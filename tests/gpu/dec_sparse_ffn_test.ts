/**
 * lte_dec_sparse_ffn, CPU <-> CUDA agreement (GPU machine: `deno test -A tests/gpu/dec_sparse_ffn_test.ts`;
 * skipped without a usable CUDA backend).
 *
 * Tolerances (identical inputs on both backends; only the f32 summation order differs, and CUDA
 * adds the down projection with float atomics): xn relative 2e-5, the block's output x - x0 1e-4; masks and counts exact
 * (the case's threshold sits in a gap of the logits, see tests/_dec_sffn_cases.ts).
 * Shapes cover the kernel's paths: 1/2/4 rows per launch and 5 rows (two launches), 16-byte
 * column chunks per thread CPT = 1 (C 136: a partial chunk row), 2 (C 4096 f16), 4 (C 4096 f32,
 * C 8192 f16) and 8 (C 8192 f32), SwiGLU and GELU, every x-mode, biases, no / all experts, the
 * LLaMA-2-7B FFN at 50 % and 90 %, and the tuning variants (neurons per stage 1-4, ring depth,
 * copy hint, blocks per SM, PDL launch attribute).
 */
import nodeAssert from "node:assert/strict";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { withDecEnv } from "../../ffi/tuning.ts";
import { Option } from "../../ffi/symbols.ts";
import {
  ACT,
  caseName,
  makeInputs,
  rel,
  runOp,
  runOpGraph,
  type SffnCase,
  thresholdMargin,
  withThreshold,
  X_MODE,
} from "../_dec_sffn_cases.ts";

const hasCuda = backendAvailable("cuda");
const { swiglu, gelu } = ACT;
const { plain, rms, layer } = X_MODE;

const CASES: SffnCase[] = [
  { dt: "f16", rows: 1, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
  { dt: "f16", rows: 1, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.1 },
  // one row (sffn_route1_kernel): LayerNorm, plain, and C > 4096 (the slices' register-less rest)
  { dt: "f16", rows: 1, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.5 },
  { dt: "f32", rows: 1, C: 264, F: 256, S: 32, act: gelu, mode: plain, bias: true, active: 0.6 },
  { dt: "bf16", rows: 1, C: 8192, F: 512, S: 32, act: swiglu, mode: rms, bias: true, active: 0.5 },
  { dt: "bf16", rows: 4, C: 4096, F: 2048, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
  { dt: "f32", rows: 2, C: 4096, F: 1024, S: 32, act: swiglu, mode: layer, bias: true, active: 0.4 },
  { dt: "f16", rows: 3, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.5 },
  { dt: "bf16", rows: 5, C: 136, F: 96, S: 16, act: swiglu, mode: rms, bias: true, active: 0.3 },
  { dt: "f16", rows: 4, C: 8192, F: 512, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
  { dt: "f32", rows: 4, C: 8192, F: 256, S: 32, act: gelu, mode: plain, bias: true, active: 0.7 },
  { dt: "f16", rows: 2, C: 128, F: 512, S: 32, act: gelu, mode: layer, bias: true, active: 0 },
  { dt: "f16", rows: 2, C: 128, F: 512, S: 32, act: swiglu, mode: rms, bias: false, active: 1 },
  // 4096 experts of 1 neuron: the most experts the kernels take (the union's shared-memory list, 16
  // rounds of compaction)
  { dt: "f16", rows: 2, C: 128, F: 4096, S: 1, act: swiglu, mode: rms, bias: true, active: 0.5 },
];

const K1 = { LTE_DEC_SFFN_KERNEL: "1" };
const VARIANTS: [string, Record<string, string>][] = [
  ["default (two-phase kernel, 2 blocks per SM)", {}],
  ["float atomics into x (LTE_DEC_SFFN_REDUCE=0: not deterministic)", { LTE_DEC_SFFN_REDUCE: "0" }],
  ["deterministic sums, no clusters, PDL attribute", { LTE_DEC_SFFN_CLUSTER: "1", LTE_DEC_PDL: "1" }],
  ["float atomics, no clusters", { LTE_DEC_SFFN_REDUCE: "0", LTE_DEC_SFFN_CLUSTER: "1" }],
  ["two-phase kernel, 1 block per SM, PDL attribute", { LTE_DEC_SFFN_BPS2: "1", LTE_DEC_PDL: "1" }],
  ["one-row route kernel, 4 warps per expert, PDL attribute", { LTE_DEC_SFFN_ROUTE: "2", LTE_DEC_PDL: "1" }],
  ["one-row route kernel, 8 warps per expert", { LTE_DEC_SFFN_ROUTE: "2", LTE_DEC_SFFN_RSPLIT: "8" }],
  ["bulk reductions, no clusters", { LTE_DEC_SFFN_CLUSTER: "1", LTE_DEC_SFFN_ATOM: "1" }],
  ["clusters of 2 with bulk reductions, 2 items in flight", { LTE_DEC_SFFN_ATOM: "1", LTE_DEC_SFFN_P1D: "2" }],
  ["staged route kernel, 2 warps per expert", { LTE_DEC_SFFN_ROUTE: "1", LTE_DEC_SFFN_RSPLIT: "2" }],
  ["staged route kernel, 4 warps per expert, no clusters", {
    LTE_DEC_SFFN_ROUTE: "1",
    LTE_DEC_SFFN_RSPLIT: "4",
    LTE_DEC_SFFN_CLUSTER: "1",
  }],
  ["clusters of 4 blocks, PDL attribute", { LTE_DEC_SFFN_CLUSTER: "4", LTE_DEC_PDL: "1" }],
  ["clusters of 2, release fence at the cluster exit", { LTE_DEC_SFFN_CLUSTER: "2", LTE_DEC_SFFN_CSYNC: "1" }],
  ["clusters of 8 blocks, 3 items in flight", { LTE_DEC_SFFN_CLUSTER: "8", LTE_DEC_SFFN_P1D: "3" }],
  ["ring kernel, 1 neuron per stage, 2-stage ring, no hint", {
    ...K1,
    LTE_DEC_SFFN_NPS: "1",
    LTE_DEC_SFFN_SMEM: "16",
    LTE_DEC_SFFN_HINT: "0",
  }],
  ["ring kernel, 3 neurons per stage, 2 blocks per SM", {
    ...K1,
    LTE_DEC_SFFN_NPS: "3",
    LTE_DEC_SFFN_BPS: "2",
    LTE_DEC_SFFN_SMEM: "200",
  }],
  ["ring kernel, 4 neurons per stage, PDL attribute", { ...K1, LTE_DEC_SFFN_NPS: "4", LTE_DEC_PDL: "1" }],
  ["ring kernel, 512 threads, 3 neurons per stage", {
    ...K1,
    LTE_DEC_SFFN_THREADS: "512",
    LTE_DEC_SFFN_NPS: "3",
    LTE_DEC_SFFN_SMEM: "216",
  }],
];

type Inputs = ReturnType<typeof makeInputs>;
type Outputs = ReturnType<typeof runOp>;

/** A case's inputs with the threshold in a gap of the logits, and the CPU reference outputs. */
function prepared(c: SffnCase, seed: number): { inp: Inputs; ref: Outputs } {
  const cpu = getBackend("cpu");
  let inp = makeInputs(c, seed);
  inp = withThreshold(c, inp, runOp(cpu, c, inp).xn);
  const ref = runOp(cpu, c, inp);
  nodeAssert.ok(thresholdMargin(c, inp, ref.xn) > 1e-4, `${caseName(c)}: a logit is within 1e-4 of the threshold`);
  return { inp, ref };
}

/** Masks and counts exactly; returns the relative errors of the block's own output (x - x0, so
 * the residual does not hide its error) and of xn. */
function compared(inp: Inputs, ref: Outputs, got: Outputs, tag: string): { ex: number; en: number } {
  nodeAssert.deepStrictEqual(Array.from(got.mask), Array.from(ref.mask), `${tag}: mask`);
  nodeAssert.deepStrictEqual(Array.from(got.counts), Array.from(ref.counts), `${tag}: counts`);
  const d = (o: Float32Array) => o.map((v, j) => v - inp.x[j]!);
  return { ex: rel(d(got.x), d(ref.x)), en: rel(got.xn, ref.xn) };
}

Deno.test({
  name: "lte_dec_sparse_ffn: CUDA agrees with the CPU reference (shapes, dtypes, rows, tuning variants)",
  ignore: !hasCuda,
  fn() {
    const cuda = getBackend("cuda");
    const worst: Record<string, number> = {};
    for (const [i, c] of CASES.entries()) {
      const { inp, ref } = prepared(c, 200 + i);
      // the 7B-sized cases run every variant; the others the default and one variant
      const variants = c.C === 4096 && c.F === 11008
        ? VARIANTS
        : [VARIANTS[0]!, VARIANTS[1 + (i % (VARIANTS.length - 1))]!];
      for (const [vn, env] of variants) {
        // (4+ rows of f16 take the masked-dense cuBLAS path by default: the next test)
        const got = withDecEnv({ ...env, LTE_DEC_BLAS: "0" }, () => runOp(cuda, c, inp));
        const tag = `${caseName(c)} [${vn}]`;
        const { ex, en } = compared(inp, ref, got, tag);
        worst[c.dt] = Math.max(worst[c.dt] ?? 0, ex, en);
        nodeAssert.ok(en < 2e-5, `${tag}: xn rel ${en}`);
        nodeAssert.ok(ex < 1e-4, `${tag}: (x - x0) rel ${ex}`);
      }
    }
    console.log(`lte_dec_sparse_ffn CPU<->CUDA worst relative error: ${JSON.stringify(worst)}`);
  },
});

// Back-to-back calls inside a replayed graph with PDL (no node between them), each on a different x
// and all sharing one xn buffer: they agree with the CPU only if every launch pair's FFN kernel
// used its own route kernel's x' and experts. A kernel that skips griddepcontrol.wait can run
// ahead of a previous launch under PDL: the eighteenth session's route arrival flags (removed,
// docs/engine.md) read stale counters that way in the engine's steps. 5 rows: two launch pairs per call.
Deno.test({
  name: "lte_dec_sparse_ffn: back-to-back calls in a replayed graph with PDL agree with the CPU",
  ignore: !hasCuda,
  fn() {
    const cuda = getBackend("cuda"), cpu = getBackend("cpu");
    const graphCases: SffnCase[] = [
      { dt: "f16", rows: 1, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.1 },
      { dt: "bf16", rows: 5, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.5 },
    ];
    for (const [i, c] of graphCases.entries()) {
      const { inp } = prepared(c, 400 + i);
      // four calls: the prepared x, then x from other seeds whose logits keep off the threshold
      const inputs = [inp];
      for (let seed = 500 + 10 * i; inputs.length < 4; seed++) {
        const cand = { ...inp, x: makeInputs(c, seed).x };
        if (thresholdMargin(c, cand, runOp(cpu, c, cand).xn) > 1e-4) inputs.push(cand);
      }
      const refs = inputs.map((v) => runOp(cpu, c, v));
      nodeAssert.ok(
        refs.some((r) => r.counts.join() !== refs[0]!.counts.join()),
        `${caseName(c)}: the calls' expert counts must differ`,
      );
      for (const [vn, env] of [["deterministic", {}], ["atomics", { LTE_DEC_SFFN_REDUCE: "0" }]] as const) {
        const got = withDecEnv({ ...env, LTE_DEC_BLAS: "0", LTE_DEC_PDL: "1" }, () => runOpGraph(cuda, c, inputs, 3));
        for (const [k, g] of got.entries()) {
          const tag = `${caseName(c)} [graph, ${vn}] call ${k}`;
          const { ex } = compared(inputs[k]!, refs[k]!, { ...g, xn: refs[k]!.xn }, tag);
          nodeAssert.ok(ex < 1e-4, `${tag}: (x - x0) rel ${ex}`);
        }
        // the shared xn holds the last call's x'
        nodeAssert.ok(rel(got[3]!.xn, refs[3]!.xn) < 2e-5, `${caseName(c)} [graph, ${vn}]: xn`);
      }
    }
  },
});

// Deterministic sums (the default since the eighteenth session): the two-phase kernel keeps each
// neuron's piece sums apart (no shared-memory atomics) and stores its clusters' partial sums, which a
// second kernel adds into x in order (no float atomics on x), so repeated calls on the same inputs
// give the same bits, by default and under LTE_OPTION_DETERMINISTIC even with LTE_DEC_SFFN_REDUCE=0.
// With the float atomics the bits depend on which block adds first (not asserted: they may agree).
Deno.test({
  name: "lte_dec_sparse_ffn: bit-identical results on repeated calls (default, and LTE_OPTION_DETERMINISTIC)",
  ignore: !hasCuda,
  fn() {
    const cuda = getBackend("cuda");
    const detCases: SffnCase[] = [
      { dt: "f16", rows: 1, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
      { dt: "bf16", rows: 2, C: 4096, F: 2048, S: 32, act: swiglu, mode: rms, bias: true, active: 0.5 },
      { dt: "f16", rows: 3, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.5 },
    ];
    for (const [i, c] of detCases.entries()) {
      const { inp, ref } = prepared(c, 600 + i);
      const runs = (n: number, env: Record<string, string> = {}) =>
        withDecEnv({ ...env, LTE_DEC_BLAS: "0" }, () => Array.from({ length: n }, () => runOp(cuda, c, inp)));
      cuda.setOption(Option.DETERMINISTIC, 1);
      let opt: Outputs[];
      try {
        opt = runs(3, { LTE_DEC_SFFN_REDUCE: "0" }); // the option wins over the knob
      } finally {
        cuda.setOption(Option.DETERMINISTIC, 0);
      }
      for (const [mode, det] of [["default", runs(3)], ["LTE_OPTION_DETERMINISTIC", opt]] as const) {
        for (const [k, o] of det.entries()) {
          const tag = `${caseName(c)} [${mode}] run ${k}`;
          const { ex } = compared(inp, ref, o, tag);
          nodeAssert.ok(ex < 1e-4, `${tag}: (x - x0) rel ${ex}`);
          nodeAssert.deepStrictEqual(Array.from(o.x), Array.from(det[0]!.x), `${tag}: x differs from run 0`);
        }
      }
      const atom = runs(5, { LTE_DEC_SFFN_REDUCE: "0" });
      const differ = atom.filter((o) => o.x.some((v, j) => v !== atom[0]!.x[j])).length;
      console.log(`${caseName(c)}: atomics, ${differ} of 4 repeated runs differ from the first in some bit`);
    }
  },
});

// From LTE_DEC_BLAS_MIN (4) rows the CUDA op runs as "masked dense" on cuBLAS (twelfth session,
// cuda/cuda/decode_blas.cuh): the f32 router on a second stream, every expert's gate/up and down
// rows in half GEMMs with x' and h rounded to the weight dtype, the mask applied to h. With
// LTE_DEC_SFFN_ROUTER_ROWS (thirteenth session) the router is part of the gate/up GEMM, its hi and
// lo rows times x' hi and lo (~f32). Written
// tolerance: masks, counts and xn as above (the router and x' stay ~f32); the block's output within
// 2e-3 (f16) / 1.6e-2 (bf16) of the reference: two chained roundings of MMA_TOL's 3e-4 / 2.3e-3
// (tests/gpu/gemv_test.ts) with room; and above a floor of 2e-5 / 1.5e-4 (nothing rounded would
// mean the path did not run). bf16 takes it with LTE_DEC_BLAS=2.
const BLAS_CASES: SffnCase[] = [
  { dt: "f16", rows: 8, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
  { dt: "f16", rows: 16, C: 4096, F: 11008, S: 32, act: swiglu, mode: rms, bias: false, active: 0.1 },
  { dt: "f16", rows: 4, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.5 },
  { dt: "f16", rows: 5, C: 136, F: 96, S: 16, act: swiglu, mode: plain, bias: true, active: 0.3 },
  { dt: "bf16", rows: 8, C: 4096, F: 2048, S: 32, act: swiglu, mode: rms, bias: false, active: 0.5 },
  { dt: "bf16", rows: 12, C: 768, F: 3072, S: 32, act: gelu, mode: layer, bias: true, active: 0.4 },
  { dt: "f16", rows: 8, C: 128, F: 512, S: 32, act: swiglu, mode: rms, bias: true, active: 0 },
  { dt: "f16", rows: 8, C: 128, F: 512, S: 32, act: gelu, mode: layer, bias: true, active: 1 },
];
const BLAS_TOL = { f16: [2e-5, 2e-3], bf16: [1.5e-4, 1.6e-2] } as const;

Deno.test({
  name: "lte_dec_sparse_ffn: the masked-dense cuBLAS path (4-16 rows) agrees with the CPU reference",
  ignore: !hasCuda,
  fn() {
    const cuda = getBackend("cuda");
    const worst: Record<string, number> = {};
    for (const [i, c] of BLAS_CASES.entries()) {
      const { inp, ref } = prepared(c, 300 + i);
      for (
        const [vn, env, rows] of [
          ["default", {}, false],
          ["PDL attribute", { LTE_DEC_PDL: "1" }, false],
          // the router in the gate/up GEMM (f16: w_fc's hi + lo rows; bf16 ignores them)
          ["router rows", {}, true],
          ["router rows, PDL attribute", { LTE_DEC_PDL: "1" }, true],
        ] as const
      ) {
        const got = withDecEnv({ ...env, LTE_DEC_BLAS: "2" }, () => runOp(cuda, c, inp, rows));
        const tag = `${caseName(c)} [cuBLAS, ${vn}]`;
        const { ex, en } = compared(inp, ref, got, tag);
        const [floor, tol] = BLAS_TOL[c.dt as "f16" | "bf16"];
        worst[c.dt] = Math.max(worst[c.dt] ?? 0, ex);
        nodeAssert.ok(en < 2e-5, `${tag}: xn rel ${en}`);
        nodeAssert.ok(ex < tol, `${tag}: (x - x0) rel ${ex} >= ${tol}`);
        if (c.active > 0) nodeAssert.ok(ex > floor, `${tag}: (x - x0) rel ${ex} <= ${floor}: cuBLAS did not run`);
      }
      if (c.dt === "f16" && c.active > 0 && c.active < 1) {
        // the router rows are what routes: zero rows (logit = bias) must change the masks
        const z = runOp(cuda, c, inp, "zeros");
        nodeAssert.notDeepStrictEqual(Array.from(z.mask), Array.from(ref.mask), `${caseName(c)}: zero router rows`);
      }
    }
    console.log(`lte_dec_sparse_ffn masked dense CPU<->CUDA worst relative error: ${JSON.stringify(worst)}`);
  },
});
