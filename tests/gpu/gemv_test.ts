/**
 * Decode-engine weight-streaming kernels (issue 9), CPU <-> CUDA agreement on the GPU machine:
 * `deno test -A tests/gpu/gemv_test.ts` (skipped without a usable CUDA backend).
 *
 * Every branch of the persistent kernels in cuda/cuda/decode_gemv.cuh (gemv_kernel for
 * lte_dec_linear, ts_kernel for lte_dec_linear_t_sparse) against the CPU reference, under each
 * run-time selection: LTE_DEC_GEMV = new (forced, even for small N), auto (default), old (the older
 * kernels), and the tuning variants (chunks per piece 4/8, blocks per SM, contiguous / strided
 * items, rows in flight, minimum rows per block, 256/512 threads, split launches for 5..16 rows),
 * with and without PDL launches.
 * Cases: rows 1..16 (one launch of up to 8 rows, one block per SM for x' over 112 KiB, split
 * launches beyond; each switched off: the older kernels), K a multiple of a piece and not (1048 = 1024 + 24, 344),
 * odd N, RMSNorm / LayerNorm / plain x, accumulate + bias, GELU + bias, SwiGLU, out_mask
 * (random, all off, all on; period = N and N / 2), f16 and bf16 (f32: the fallback).
 * The tensor-core kernel (cuda/cuda/decode_gemv_mma.cuh, 5..16 rows of f16 by default) has its own
 * test: every case on it under each load shape, K split, column slices of K, PDL and carveout, with
 * out_mask since the ninth session, and the default selection (f16 takes it, bf16 does not); so
 * has the tensor-core lte_dec_linear_t_sparse (ts_mma_kernel, cuda/cuda/decode_ts_mma.cuh).
 *
 * Written tolerance (as tests/gpu/engine_test.ts): identical inputs on both sides (same half bit
 * patterns), only the f32 summation order differs -> max |cuda - cpu| / max |cpu| < 1e-5; the
 * tensor-core kernel rounds x' to the weight dtype: MMA_TOL below.
 */
import nodeAssert from "node:assert/strict";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { withDecEnv } from "../../ffi/tuning.ts";
import { DTypeCode } from "../../ffi/symbols.ts";
import { f32ToBf16, f32ToF16 } from "../../models/safetensors.ts";
import { Rng } from "../../tensor/mod.ts";

const hasCuda = backendAvailable("cuda");
const report: Record<string, number> = {};

function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

type Kind = "cpu" | "cuda";
type Dt = "f32" | "f16" | "bf16";

/** Device buffers with the same contents on both backends. */
class Pair {
  readonly p: Record<Kind, Deno.PointerObject>;
  constructor(readonly bytes: number) {
    this.p = { cpu: getBackend("cpu").alloc(bytes), cuda: getBackend("cuda").alloc(bytes) };
  }
  static of(data: ArrayBufferView): Pair {
    const pr = new Pair(data.byteLength);
    getBackend("cpu").write(pr.p.cpu, data);
    getBackend("cuda").write(pr.p.cuda, data);
    return pr;
  }
  static weights(a: Float32Array, dt: Dt): Pair {
    return Pair.of(dt === "f32" ? a : dt === "f16" ? f32ToF16(a) : f32ToBf16(a));
  }
  f32(kind: Kind): Float32Array {
    const out = new Float32Array(this.bytes / 4);
    getBackend(kind).read(out, this.p[kind]);
    return out;
  }
  free(): void {
    getBackend("cpu").free(this.p.cpu);
    getBackend("cuda").free(this.p.cuda);
  }
}

function both(fn: (kind: Kind) => number, op: string): void {
  for (const k of ["cpu", "cuda"] as const) getBackend(k).check(fn(k), op);
  getBackend("cuda").synchronize();
}

/** Runs fn with the given environment (read by the native launchers at each launch). */

// every variant of the CUDA-core kernels (the tensor-core one, from 5 rows by default, has its own
// test and tolerance below)
const VARIANTS: Record<string, string>[] = ([
  { LTE_DEC_GEMV: "new" },
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_CH: "8" },
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_ORDER: "strided", LTE_DEC_GEMV_BPS: "1" },
  { LTE_DEC_GEMV: "new", LTE_DEC_PDL: "1" },
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_WIDE: "0", LTE_DEC_GEMV_SPLIT: "1" },
  // 5-8 rows in one launch, x' over 112 KiB at one block per SM (default: wide + split); neither
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_WIDE: "1", LTE_DEC_GEMV_SPLIT: "0" },
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_WIDE: "0", LTE_DEC_GEMV_SPLIT: "0" },
  { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_WIDE: "1", LTE_DEC_GEMV_SPLIT: "1", LTE_DEC_PDL: "1" },
  { LTE_DEC_GEMV: "auto" },
  { LTE_DEC_GEMV: "old" },
] as Record<string, string>[]).map((v) => ({ ...v, LTE_DEC_GEMV_MMA: "0", LTE_DEC_BLAS: "0" }));

function maskOf(rng: Rng, len: number, kind: "rand" | "off" | "on" | "sparse"): Float32Array {
  return Float32Array.from({ length: len }, () => {
    if (kind === "off") return 0;
    if (kind === "on") return 1;
    return rng.uniform() < (kind === "sparse" ? 0.1 : 0.5) ? 1 : 0;
  });
}

interface LinCase {
  dt: Dt;
  rows: number;
  n: number;
  k: number;
  mode: number;
  act: number;
  acc: boolean;
  bias: boolean;
  mask?: "rand" | "off" | "on" | "sparse";
  period?: number;
  S?: number;
  /** input-side expert mask (the new kernel leaves it to the older one: checks the fallback) */
  inMask?: boolean;
}

/**
 * Written tolerance of the tensor-core kernel (gemv_mma_kernel): x' is rounded to the weight dtype
 * at the tensor-core input, a relative error of 2^-12 (f16) / 2^-9 (bf16) per element, so the
 * outputs differ from the f32-x' reference by about 3e-4 (f16) / 2.3e-3 (bf16) of their maximum
 * (random data): bounds 1e-3 / 8e-3. And a floor: an error below 2e-5 (f16) / 1.5e-4 (bf16) means
 * x' was NOT rounded, i.e. the call did not take the tensor-core kernel.
 */
const MMA_TOL = { f16: [2e-5, 1e-3], bf16: [1.5e-4, 8e-3] } as const;

function runLinear(rng: Rng, c: LinCase, tag: string, mma = false): void {
  const S = c.S ?? 8;
  const { rows, n, k } = c;
  const w = Pair.weights(rng.normals((c.act === 1 ? 2 : 1) * n * k, 0.1), c.dt);
  const ldx = k + 8;
  const x = Pair.of(rng.normals(rows * ldx, 1));
  const nw = Pair.of(rng.normals(k, 1)), nb = Pair.of(rng.normals(k, 0.5)), bias = Pair.of(rng.normals(n, 1));
  const period = c.period ?? n;
  const outMask = c.mask ? Pair.of(maskOf(rng, rows * (period / S), c.mask)) : null;
  const inMask = c.inMask ? Pair.of(maskOf(rng, rows * (k / S), "rand")) : null;
  const y = Pair.of(rng.normals(rows * n, 1));
  both(
    (kd) =>
      getBackend(kd).sym.lte_dec_linear(
        getBackend(kd).ctx,
        DTypeCode[c.dt],
        w.p[kd],
        x.p[kd],
        ldx,
        c.mode,
        nw.p[kd],
        nb.p[kd],
        1e-5,
        inMask ? inMask.p[kd] : null,
        outMask ? outMask.p[kd] : null,
        outMask ? period : 0,
        outMask || inMask ? S : 0,
        c.bias ? bias.p[kd] : null,
        y.p[kd],
        rows,
        n,
        k,
        c.acc ? 1 : 0,
        c.act,
      ),
    "lte_dec_linear",
  );
  const e = rel(y.f32("cuda"), y.f32("cpu"));
  const key = `linear_${mma ? "mma_" : ""}${c.dt}`;
  report[key] = Math.max(report[key] ?? 0, e);
  if (mma && c.dt !== "f32") {
    const [floor, tol] = MMA_TOL[c.dt];
    report[`${key}_min`] = Math.min(report[`${key}_min`] ?? 1, e);
    assert(e < tol, `linear on tensor cores [${tag}] ${JSON.stringify(c)}: ${e} >= ${tol}`);
    // (with every output masked off there is nothing rounded to see)
    if (c.mask !== "off") {
      assert(e > floor, `linear [${tag}] ${JSON.stringify(c)}: ${e} <= ${floor}: the tensor-core kernel did not run`);
    }
  } else {
    assert(e < 1e-5, `linear [${tag}] ${JSON.stringify(c)}: ${e}`);
  }
  for (const p of [w, x, nw, nb, bias, y]) p.free();
  outMask?.free();
  inMask?.free();
}

Deno.test({
  name: "gemv: lte_dec_linear persistent kernel (every branch, every variant) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(11);
    const cases: LinCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      for (const rows of [1, 2, 3, 4]) {
        // QKV-like: RMSNorm, whole pieces; O-like: plain + accumulate + bias; LayerNorm + GELU
        cases.push({ dt, rows, n: 96, k: 4096, mode: 1, act: 0, acc: false, bias: false });
        cases.push({ dt, rows, n: 33, k: 1048, mode: 0, act: 0, acc: true, bias: true });
        cases.push({ dt, rows, n: 40, k: 344, mode: 2, act: 2, acc: false, bias: true });
        // SwiGLU, dense and masked (partial last piece)
        cases.push({ dt, rows, n: 64, k: 1048, mode: 1, act: 1, acc: false, bias: false });
        for (const mask of ["rand", "off", "on", "sparse"] as const) {
          cases.push({ dt, rows, n: 96, k: 344, mode: 1, act: 1, acc: false, bias: false, mask, S: 8 });
        }
        // masked GELU (c_fc) with period N / 2, masked accumulate (outputs left unchanged)
        cases.push({ dt, rows, n: 96, k: 200, mode: 2, act: 2, acc: false, bias: true, mask: "rand", period: 48 });
        cases.push({ dt, rows, n: 64, k: 200, mode: 0, act: 0, acc: true, bias: true, mask: "rand", S: 16 });
        cases.push({
          dt,
          rows,
          n: 33,
          k: 1048,
          mode: 0,
          act: 0,
          acc: false,
          bias: true,
          mask: "rand",
          S: 11,
          period: 33,
        });
      }
      // LTE_DEC_GEMV_WIDE, one block per SM (x' over 112 KiB): 3-4 rows at a down-projection-like K,
      // 5-8 rows at K 4096
      cases.push({ dt, rows: 4, n: 300, k: 11000, mode: 0, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 6, n: 520, k: 4096, mode: 1, act: 1, acc: false, bias: false });
      cases.push({ dt, rows: 8, n: 130, k: 4000, mode: 2, act: 2, acc: false, bias: true });
      // large enough N for the default (auto) selection; 5 rows (the fallback, or R = 8 with wide)
      cases.push({ dt, rows: 1, n: 2050, k: 512, mode: 1, act: 0, acc: false, bias: false });
      cases.push({ dt, rows: 2, n: 2050, k: 1048, mode: 0, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 5, n: 2050, k: 512, mode: 1, act: 1, acc: false, bias: false, mask: "rand", S: 10 });
      cases.push({ dt, rows: 2, n: 2050, k: 512, mode: 0, act: 0, acc: true, bias: true, inMask: true, S: 32 });
      // more rows than one launch holds (split: chunks of 4, or of 2 when 4 rows of x' do not fit)
      cases.push({ dt, rows: 8, n: 200, k: 1048, mode: 1, act: 1, acc: false, bias: false, mask: "rand", S: 8 });
      cases.push({ dt, rows: 16, n: 72, k: 512, mode: 2, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 3, n: 40, k: 8200, mode: 0, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 7, n: 40, k: 8200, mode: 1, act: 2, acc: false, bias: true });
    }
    cases.push({ dt: "f32", rows: 2, n: 2050, k: 512, mode: 1, act: 0, acc: false, bias: true });
    for (const v of VARIANTS) {
      withDecEnv(v, () => {
        for (const c of cases) runLinear(rng, c, JSON.stringify(v));
      });
    }
    console.log("GEMV_AGREEMENT", JSON.stringify(report));
  },
});

// f32 weights and few outputs over 2..16 rows (the sparse engine's router in steps of 3+ rows and
// prefill chunks: the block-per-output kernel, linear_rowblock_kernel, in launches of 8 rows),
// with and without PDL; the same 1e-5 bound (f32 x')
Deno.test({
  name: "gemv: lte_dec_linear with f32 weights and few outputs (the router at 2-16 rows) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(14);
    const cases: LinCase[] = [];
    for (const rows of [2, 3, 5, 8, 9, 16]) {
      // the 7B router (344 outputs, a block each), RMSNorm, with and without a bias
      cases.push({ dt: "f32", rows, n: 344, k: 4096, mode: 1, act: 0, acc: false, bias: rows % 2 === 1 });
      // LayerNorm + accumulate; few outputs
      cases.push({ dt: "f32", rows, n: 528, k: 1048, mode: 2, act: 0, acc: true, bias: true });
      cases.push({ dt: "f32", rows, n: 7, k: 8, mode: 0, act: 0, acc: false, bias: true });
      // K beyond a block's first pass (8 elements x 256 threads)
      cases.push({ dt: "f32", rows, n: 40, k: 6000, mode: 1, act: 0, acc: true, bias: false });
    }
    // K not a multiple of 8 (scalar loads), an activation, one row, many outputs
    cases.push({ dt: "f32", rows: 4, n: 100, k: 1046, mode: 1, act: 0, acc: false, bias: false });
    cases.push({ dt: "f32", rows: 4, n: 100, k: 1048, mode: 2, act: 2, acc: false, bias: true });
    cases.push({ dt: "f32", rows: 1, n: 344, k: 4096, mode: 1, act: 0, acc: false, bias: true });
    cases.push({ dt: "f32", rows: 8, n: 1000, k: 512, mode: 1, act: 0, acc: false, bias: true });
    for (const v of [{}, { LTE_DEC_PDL: "1" }] as Record<string, string>[]) {
      withDecEnv(v, () => {
        for (const c of cases) runLinear(rng, c, JSON.stringify(v));
      });
    }
    console.log("GEMV_AGREEMENT", JSON.stringify(report));
  },
});

Deno.test({
  name: "gemv: lte_dec_linear on tensor cores (1..16 rows, every x-mode and epilogue) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(13);
    const cases: LinCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      // QKV-like (RMSNorm, a partial last tile; 16 rows: the f32 x' does not fit, so a statistics
      // pass, then x' in the weight dtype), O-like (plain + accumulate + bias; 16 rows: x' in the
      // weight dtype), down-like K (x' in the weight dtype; 16 rows: column slices of K), LayerNorm +
      // GELU and SwiGLU (16 rows at K 4096: the statistics pass too)
      for (const rows of [3, 8, 16]) {
        cases.push({ dt, rows, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false });
      }
      for (const rows of [5, 16]) cases.push({ dt, rows, n: 33, k: 1048, mode: 0, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 16, n: 72, k: 4096, mode: 0, act: 0, acc: true, bias: true });
      // (16 rows: column slices of K, each launch adding into y, the bias with the first; a norm
      // mode or no accumulate cannot be sliced: two launches of 8 rows)
      for (const rows of [8, 16]) cases.push({ dt, rows, n: 40, k: 11000, mode: 0, act: 0, acc: true, bias: true });
      cases.push({ dt, rows: 13, n: 24, k: 11000, mode: 1, act: 0, acc: false, bias: false });
      cases.push({ dt, rows: 16, n: 56, k: 12288, mode: 0, act: 0, acc: true, bias: false });
      // out_mask (ninth session: the union's tiles only, masked rows zeroed or left as they were):
      // SwiGLU, GELU over two mask periods, accumulate with a bias, column slices of K, all on, all off
      cases.push({ dt, rows: 8, n: 256, k: 1048, mode: 1, act: 1, acc: false, bias: false, mask: "rand", S: 32 });
      cases.push({
        dt,
        rows: 16,
        n: 96,
        k: 344,
        mode: 2,
        act: 2,
        acc: false,
        bias: true,
        mask: "sparse",
        S: 16,
        period: 48,
      });
      cases.push({ dt, rows: 6, n: 64, k: 1048, mode: 0, act: 0, acc: true, bias: true, mask: "rand", S: 16 });
      cases.push({ dt, rows: 12, n: 160, k: 11000, mode: 0, act: 0, acc: true, bias: true, mask: "rand", S: 32 });
      cases.push({ dt, rows: 7, n: 128, k: 512, mode: 1, act: 1, acc: false, bias: false, mask: "on", S: 8 });
      cases.push({ dt, rows: 5, n: 256, k: 512, mode: 1, act: 1, acc: false, bias: false, mask: "off", S: 32 });
      for (const rows of [4, 12]) cases.push({ dt, rows, n: 40, k: 344, mode: 2, act: 2, acc: false, bias: true });
      for (const rows of [3, 9, 16]) cases.push({ dt, rows, n: 64, k: 1048, mode: 1, act: 1, acc: false, bias: false });
      cases.push({ dt, rows: 6, n: 520, k: 4096, mode: 1, act: 1, acc: false, bias: false });
      cases.push({ dt, rows: 16, n: 40, k: 4096, mode: 2, act: 2, acc: false, bias: true });
      cases.push({ dt, rows: 13, n: 64, k: 4096, mode: 1, act: 1, acc: false, bias: false });
      // many tiles per block (beyond the ring of partial tiles at F = 8 / 4; 5280 tiles: at F = 1 too)
      cases.push({ dt, rows: 4, n: 84480, k: 256, mode: 0, act: 0, acc: true, bias: false });
      cases.push({ dt, rows: 4, n: 12670, k: 256, mode: 1, act: 0, acc: false, bias: true });
      cases.push({ dt, rows: 7, n: 7400, k: 256, mode: 2, act: 1, acc: false, bias: false });
      cases.push({ dt, rows: 3, n: 2050, k: 512, mode: 0, act: 2, acc: false, bias: true });
    }
    const variants: Record<string, string>[] = [
      {},
      { LTE_DEC_PDL: "1" },
      { LTE_DEC_CARVEOUT: "100" },
      // load shapes (chunks per lane x stages in flight: 0: 4 x 4, 1: 8 x 2; 2, 3: the same with
      // interleaved chunks; 3 the default since the ninth session)
      ...["0", "1", "2"].map((v) => ({ LTE_DEC_GEMV_MMA_V: v })),
      { LTE_DEC_GEMV_MMA_V: "2", LTE_DEC_GEMV_MMA_F: "8" },
      // 16 rows at K 11000 (x' does not fit): two launches of 8 rows instead of column slices of K
      { LTE_DEC_GEMV_MMA_KSPLIT: "0" },
      // K groups in one launch for plain accumulating calls (opt-in; the other cases ignore it)
      { LTE_DEC_GEMV_MMA_KG: "2" },
      { LTE_DEC_GEMV_MMA_KG: "4" },
      // K split into F parts per tile (default: chosen per shape)
      ...["1", "2", "4", "8"].map((f) => ({ LTE_DEC_GEMV_MMA_F: f })),
    ];
    // every case on tensor cores (the default takes 5+ rows; rows 3-4 are cases too)
    for (const v of variants) {
      const env = { ...v, LTE_DEC_GEMV_MMA_MIN: "1", LTE_DEC_GEMV_MMA: "2", LTE_DEC_BLAS: "0" };
      withDecEnv(env, () => cases.forEach((c) => runLinear(rng, c, JSON.stringify(v), true)));
    }
    // 1-2 rows on tensor cores when asked (LTE_DEC_GEMV_MMA_MIN=1)
    withDecEnv({ LTE_DEC_GEMV_MMA_MIN: "1", LTE_DEC_GEMV_MMA: "2", LTE_DEC_BLAS: "0" }, () => {
      for (const dt of ["f16", "bf16"] as const) {
        for (const rows of [1, 2]) {
          runLinear(rng, { dt, rows, n: 96, k: 4096, mode: 1, act: 1, acc: false, bias: false }, "min 1", true);
          runLinear(rng, { dt, rows, n: 130, k: 1048, mode: 0, act: 0, acc: true, bias: true }, "min 1", true);
        }
      }
    });
    // the default selection without cuBLAS: 8 rows of f16 weights on tensor cores (x' rounded:
    // above the floor), bf16 weights on the CUDA-core kernels (exact x': within 1e-5)
    withDecEnv({ LTE_DEC_BLAS: "0" }, () => {
      runLinear(
        rng,
        { dt: "f16", rows: 8, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false },
        "default",
        true,
      );
      runLinear(rng, { dt: "bf16", rows: 8, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false }, "default");
    });
    console.log("GEMV_MMA_AGREEMENT", JSON.stringify(report));
  },
});

interface TsCase {
  dt: Dt;
  rows: number;
  n: number;
  k: number;
  S: number;
  mask: "rand" | "off" | "on" | "sparse";
  bias: boolean;
}

function runTs(rng: Rng, c: TsCase, tag: string, mma = false): void {
  const { rows, n, k, S } = c;
  const E = k / S;
  const mask = maskOf(rng, rows * E, c.mask);
  const hh = rng.normals(rows * k, 1);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < k; i++) if (!mask[r * E + Math.floor(i / S)]) hh[r * k + i] = 0;
  }
  const wt = Pair.weights(rng.normals(k * n, 0.1), c.dt), h = Pair.of(hh), m = Pair.of(mask);
  const bias = Pair.of(rng.normals(n, 1)), y = Pair.of(rng.normals(rows * n, 1));
  both(
    (kd) =>
      getBackend(kd).sym.lte_dec_linear_t_sparse(
        getBackend(kd).ctx,
        DTypeCode[c.dt],
        wt.p[kd],
        h.p[kd],
        m.p[kd],
        c.bias ? bias.p[kd] : null,
        y.p[kd],
        rows,
        n,
        k,
        S,
      ),
    "lte_dec_linear_t_sparse",
  );
  const e = rel(y.f32("cuda"), y.f32("cpu"));
  const key = `linear_t_sparse_${mma ? "mma_" : ""}${c.dt}`;
  report[key] = Math.max(report[key] ?? 0, e);
  if (mma && c.dt !== "f32") {
    // h rounded to the weight dtype at the tensor-core input: the same written tolerance and floor
    // as the tensor-core lte_dec_linear (nothing is rounded when every expert is off)
    const [floor, tol] = MMA_TOL[c.dt];
    assert(e < tol, `linear_t_sparse on tensor cores [${tag}] ${JSON.stringify(c)}: ${e} >= ${tol}`);
    if (c.mask !== "off") {
      assert(e > floor, `linear_t_sparse [${tag}] ${JSON.stringify(c)}: ${e}: tensor cores did not run`);
    }
  } else {
    assert(e < 1e-5, `linear_t_sparse [${tag}] ${JSON.stringify(c)}: ${e}`);
  }
  for (const p of [wt, h, m, bias, y]) p.free();
}

Deno.test({
  name: "gemv: lte_dec_linear_t_sparse persistent kernel (every variant) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(12);
    const cases: TsCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      for (const rows of [1, 2, 3, 4, 5]) {
        for (const mask of ["rand", "off", "on", "sparse"] as const) {
          cases.push({ dt, rows, n: 1024, k: 2752, S: 32, mask, bias: true });
        }
        cases.push({ dt, rows, n: 4104, k: 256, S: 8, mask: "rand", bias: false });
        cases.push({ dt, rows, n: 64, k: 96, S: 16, mask: "rand", bias: true });
        cases.push({ dt, rows, n: 2056, k: 330, S: 11, mask: "sparse", bias: true });
      }
      cases.push({ dt, rows: 8, n: 1024, k: 2752, S: 32, mask: "rand", bias: true });
      cases.push({ dt, rows: 13, n: 264, k: 96, S: 16, mask: "sparse", bias: true });
    }
    cases.push({ dt: "f32", rows: 3, n: 1024, k: 2752, S: 32, mask: "rand", bias: true });
    const variants: Record<string, string>[] = [
      { LTE_DEC_GEMV: "new" },
      { LTE_DEC_GEMV: "new", LTE_DEC_TS_U: "4", LTE_DEC_TS_MINROWS: "1" },
      { LTE_DEC_GEMV: "new", LTE_DEC_TS_BPS: "1", LTE_DEC_TS_MINROWS: "64" },
      { LTE_DEC_GEMV: "new", LTE_DEC_TS_THREADS: "512", LTE_DEC_TS_MINROWS: "16" },
      { LTE_DEC_GEMV: "new", LTE_DEC_PDL: "1" },
      { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_SPLIT: "1" },
      { LTE_DEC_GEMV: "old" },
    ];
    for (const v of variants) {
      // (5+ rows of f16 take the tensor-core kernel by default: the next test)
      withDecEnv({ ...v, LTE_DEC_TS_MMA: "0", LTE_DEC_BLAS: "0" }, () => {
        for (const c of cases) runTs(rng, c, JSON.stringify(v));
      });
    }
    console.log("GEMV_AGREEMENT", JSON.stringify(report));
  },
});

Deno.test({
  name: "gemv: lte_dec_linear_t_sparse on tensor cores (ts_mma_kernel) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(14);
    const cases: TsCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      for (const rows of [1, 3, 5, 8, 12, 16]) {
        for (const mask of ["rand", "on", "sparse", "off"] as const) {
          cases.push({ dt, rows, n: 1024, k: 2752, S: 32, mask, bias: rows % 2 === 1 });
        }
        cases.push({ dt, rows, n: 64, k: 96, S: 16, mask: "rand", bias: true }); // fewer units than blocks
        cases.push({ dt, rows, n: 192, k: 512, S: 64, mask: "rand", bias: false }); // 4 k tiles per expert
      }
      // the 7B down projection (N 4096, K 11008): a block's units span several column groups
      for (const rows of [8, 16]) cases.push({ dt, rows, n: 4096, k: 11008, S: 32, mask: "rand", bias: false });
      cases.push({ dt, rows: 6, n: 8448, k: 1024, S: 32, mask: "sparse", bias: true }); // 132 groups
    }
    // every case on tensor cores: bf16 too (LTE_DEC_GEMV_MMA=2), 1-4 rows too (MMA_MIN=1)
    // (default: ts_mma2_kernel, the tenth session's work layout; n 64 / 192: a column tile with
    // idle warps, n 8448: 17 tiles; LTE_DEC_TS_MMA 1: the ninth session's ts_mma_kernel)
    for (const v of [{}, { LTE_DEC_PDL: "1" }, { LTE_DEC_TS_MMA: "1" }] as Record<string, string>[]) {
      withDecEnv({ ...v, LTE_DEC_GEMV_MMA: "2", LTE_DEC_GEMV_MMA_MIN: "1", LTE_DEC_BLAS: "0" }, () => {
        for (const c of cases) runTs(rng, c, JSON.stringify(v), true);
      });
    }
    // the default selection without cuBLAS: 8 rows of f16 on tensor cores, bf16 on the CUDA-core
    // kernels (exact)
    withDecEnv({ LTE_DEC_BLAS: "0" }, () => {
      runTs(rng, { dt: "f16", rows: 8, n: 1024, k: 2752, S: 32, mask: "rand", bias: true }, "default", true);
      runTs(rng, { dt: "bf16", rows: 8, n: 1024, k: 2752, S: 32, mask: "rand", bias: true }, "default");
    });
    console.log("TS_MMA_AGREEMENT", JSON.stringify(report));
  },
});

// The cuBLAS path (cuda/cuda/decode_blas.cuh, twelfth session): x' prep + cublasGemmEx + epilogue
// for f16 calls of LTE_DEC_BLAS_MIN (4) rows and more, masked calls as "masked dense". x' is rounded
// to the weight dtype as on the tensor cores: the same MMA_TOL bound, and its floor proves the path
// ran, since the tensor-core kernels are switched off here (the CUDA-core ones round nothing).
Deno.test({
  name: "gemv: lte_dec_linear and lte_dec_linear_t_sparse on cuBLAS (4-16 rows, masks) agree CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(15);
    const off = { LTE_DEC_GEMV_MMA: "0", LTE_DEC_TS_MMA: "0" };
    const lin: LinCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      for (const rows of [4, 8, 12, 16]) {
        // QKV (RMSNorm, no epilogue: straight into y), O / down (plain, accumulate + bias, K 11000),
        // LayerNorm + GELU + bias, SwiGLU
        lin.push({ dt, rows, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false });
        lin.push({ dt, rows, n: 72, k: 4096, mode: 0, act: 0, acc: true, bias: false });
        lin.push({ dt, rows, n: 40, k: 11000, mode: 0, act: 0, acc: true, bias: true });
        lin.push({ dt, rows, n: 40, k: 344, mode: 2, act: 2, acc: false, bias: true });
        lin.push({ dt, rows, n: 64, k: 1048, mode: 1, act: 1, acc: false, bias: false });
        // masked dense: out_mask (SwiGLU random / all off / all on; GELU over two periods;
        // accumulate, masked rows left as they were), in_mask
        for (const mask of ["rand", "off", "on"] as const) {
          lin.push({ dt, rows, n: 256, k: 1048, mode: 1, act: 1, acc: false, bias: false, mask, S: 32 });
        }
        lin.push({
          dt,
          rows,
          n: 96,
          k: 344,
          mode: 2,
          act: 2,
          acc: false,
          bias: true,
          mask: "sparse",
          S: 16,
          period: 48,
        });
        lin.push({ dt, rows, n: 64, k: 1048, mode: 0, act: 0, acc: true, bias: true, mask: "rand", S: 16 });
        lin.push({ dt, rows, n: 2050, k: 512, mode: 0, act: 0, acc: true, bias: true, inMask: true, S: 32 });
      }
    }
    const ts: TsCase[] = [];
    for (const dt of ["f16", "bf16"] as const) {
      for (const rows of [8, 16]) {
        for (const mask of ["rand", "on", "sparse", "off"] as const) {
          ts.push({ dt, rows, n: 1024, k: 2752, S: 32, mask, bias: mask === "rand" });
        }
        ts.push({ dt, rows, n: 4096, k: 11008, S: 32, mask: "rand", bias: false });
      }
    }
    for (const v of [{}, { LTE_DEC_PDL: "1" }] as Record<string, string>[]) {
      withDecEnv({ ...v, ...off, LTE_DEC_BLAS: "2" }, () => {
        for (const c of lin) runLinear(rng, c, `blas ${JSON.stringify(v)}`, true);
        for (const c of ts) runTs(rng, c, `blas ${JSON.stringify(v)}`, true);
      });
    }
    // fewer rows when asked; below LTE_DEC_BLAS_MIN the CUDA-core kernels (exact x'); bf16 stays
    // off cuBLAS by default (LTE_DEC_BLAS=1); LTE_DEC_BLAS_MASKED=0 keeps masked calls on the
    // union kernels
    withDecEnv({ ...off, LTE_DEC_BLAS_MIN: "1" }, () => {
      runLinear(rng, { dt: "f16", rows: 1, n: 96, k: 4096, mode: 1, act: 1, acc: false, bias: false }, "min 1", true);
      runTs(rng, { dt: "f16", rows: 3, n: 1024, k: 2752, S: 32, mask: "rand", bias: true }, "min 1", true);
    });
    withDecEnv(off, () => {
      runLinear(rng, { dt: "f16", rows: 3, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false }, "3 rows");
      runLinear(rng, { dt: "f16", rows: 8, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false }, "8", true);
      runLinear(rng, { dt: "bf16", rows: 8, n: 200, k: 4096, mode: 1, act: 0, acc: false, bias: false }, "bf16");
    });
    withDecEnv({ ...off, LTE_DEC_BLAS_MASKED: "0" }, () => {
      const m: LinCase = {
        dt: "f16",
        rows: 8,
        n: 256,
        k: 1048,
        mode: 1,
        act: 1,
        acc: false,
        bias: false,
        mask: "rand",
        S: 32,
      };
      runLinear(rng, m, "masked 0");
      runTs(rng, { dt: "f16", rows: 8, n: 1024, k: 2752, S: 32, mask: "rand", bias: true }, "masked 0");
    });
    console.log("GEMV_BLAS_AGREEMENT", JSON.stringify(report));
  },
});

Deno.test({
  name: "gemv: a captured graph of the new kernels replays to the same result (PDL on)",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(13);
    const be = getBackend("cuda");
    const s = be.sym;
    withDecEnv({ LTE_DEC_GEMV: "new", LTE_DEC_PDL: "1" }, () => {
      const n = 3000, k = 1048, f = 2048, S = 32, E = f / S;
      const w = Pair.weights(rng.normals(n * k, 0.1), "f16");
      const fc = Pair.weights(rng.normals(2 * f * k, 0.1), "f16");
      const down = Pair.weights(rng.normals(f * k, 0.1), "f16");
      const x0 = rng.normals(k, 1);
      const x = Pair.of(x0), nw = Pair.of(rng.normals(k, 1));
      const y = Pair.of(new Float32Array(n)), hbuf = Pair.of(new Float32Array(f));
      const mask = Pair.of(maskOf(rng, E, "rand"));
      // x -> y = rms(x) W ; h = swiglu(rms(x) Fc) masked ; x += h Down^T (sparse)
      const enqueue = (kd: Kind) => {
        const b = getBackend(kd), c = b.ctx;
        b.check(
          b.sym.lte_dec_linear(
            c,
            DTypeCode.f16,
            w.p[kd],
            x.p[kd],
            k,
            1,
            nw.p[kd],
            null,
            1e-5,
            null,
            null,
            0,
            0,
            null,
            y.p[kd],
            1,
            n,
            k,
            0,
            0,
          ),
          "lte_dec_linear",
        );
        b.check(
          b.sym.lte_dec_linear(
            c,
            DTypeCode.f16,
            fc.p[kd],
            x.p[kd],
            k,
            1,
            nw.p[kd],
            null,
            1e-5,
            null,
            mask.p[kd],
            f,
            S,
            null,
            hbuf.p[kd],
            1,
            f,
            k,
            0,
            1,
          ),
          "lte_dec_linear",
        );
        b.check(
          b.sym.lte_dec_linear_t_sparse(
            c,
            DTypeCode.f16,
            down.p[kd],
            hbuf.p[kd],
            mask.p[kd],
            null,
            x.p[kd],
            1,
            k,
            f,
            S,
          ),
          "lte_dec_linear_t_sparse",
        );
      };
      const out = new BigUint64Array(1);
      be.check(s.lte_graph_begin(be.ctx), "lte_graph_begin");
      enqueue("cuda");
      be.check(s.lte_graph_end(be.ctx, out), "lte_graph_end");
      const g = Deno.UnsafePointer.create(out[0]!);
      try {
        for (let rep = 0; rep < 3; rep++) {
          be.check(s.lte_graph_launch(be.ctx, g), "lte_graph_launch");
          enqueue("cpu");
          be.synchronize();
          for (const [name, p] of [["y", y], ["h", hbuf], ["x", x]] as const) {
            const e = rel(p.f32("cuda"), p.f32("cpu"));
            assert(e < 1e-5, `graph replay ${rep} ${name}: ${e}`);
          }
        }
      } finally {
        s.lte_graph_free(be.ctx, g);
      }
      for (const p of [w, fc, down, x, nw, y, hbuf, mask]) p.free();
    });
  },
});
