/**
 * Decode engine, CPU <-> CUDA agreement (GPU machine: `deno test -A tests/gpu/engine_test.ts`;
 * skipped without a usable CUDA backend).
 *
 * Written tolerances (relative: max |cuda - cpu| / max |cpu| over the output):
 *   - op level, identical inputs on both sides (the same f16/bf16 bit patterns are written to
 *     both backends): only the f32 summation order differs  ->  1e-5 (attention, linear, norm),
 *     exact for embedding gathers, conversions and hard masks (compared as sets of experts);
 *   - sampling: greedy exact; seeded top-k/top-p identical on >= 95% of rows (a row may differ
 *     only when the uniform lands within f32 rounding of a cumulative-mass boundary);
 *   - engine level, same dtype on both backends (f32, f16 or bf16 weights and KV cache):
 *     logits 1e-4 (f32) / 2e-3 (f16) / 1e-2 (bf16): KV values (and, on the KERNELS path, x) are
 *     rounded from slightly different f32 sums, one bf16 ulp is 3.9e-3 (measured: 2.7e-3 for bf16
 *     on the KERNELS path, <= 4e-4 on the engine's own kernels; f16 1.0e-3 since prefill chunks of
 *     5+ rows run the tensor-core GEMV, which rounds x' to f16),
 *     greedy tokens identical over 12 steps (tiny models with well separated logits);
 *   - half vs f32 reference: CUDA f16 logits within 2e-2 and bf16 within 6e-2 of the CPU f32 engine.
 */
import nodeAssert from "node:assert/strict";

function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}
function assertEquals(a: unknown, b: unknown, msg?: string): void {
  nodeAssert.deepStrictEqual(a, b, msg);
}
import {
  Engine,
  type EngineOptions,
  GREEDY,
  kvCacheBytes,
  kvI8ScalesOffset,
  MASKED_DENSE_MIN_ROWS,
  MASKED_DENSE_MIN_UNION,
  MASKED_GEMV_MIN_ROWS,
} from "../../engine/mod.ts";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { cString } from "../../ffi/library.ts";
import { DTypeCode } from "../../ffi/symbols.ts";
import { withDecEnv, withDecEnvAsync } from "../../ffi/tuning.ts";
import { type ModelConfig, resolveModelConfig } from "../../models/config.ts";
import { routerBiasName, routerWeightName } from "../../models/lte_artifacts.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../../models/safetensors.ts";
import { Rng } from "../../tensor/mod.ts";
import { loadTokenizer } from "../../text/tokenizer.ts";
import { batchLoopScript } from "../_step_lookahead_script.ts";
import { initArrays } from "../_tiny_llama.ts";

const hasCuda = backendAvailable("cuda");
const tokenizer = loadTokenizer({ type: "bytes" });
const report: Record<string, number> = {};

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
  i32(kind: Kind): Int32Array {
    const out = new Int32Array(this.bytes / 4);
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

/**
 * The op tests below hold the CUDA-core kernels to 1e-5: the tensor-core ones (5+ rows of f16,
 * masked gate/up and the union's down projection too since the ninth session) round x' / h to
 * f16 and have their own tolerance and tests (tests/gpu/gemv_test.ts), so they are off here.
 */
const cudaCores = (fn: () => void): void => withDecEnv({ LTE_DEC_GEMV_MMA: "0", LTE_DEC_BLAS: "0" }, fn);

Deno.test({
  name: "engine ops: lte_dec_linear every x-mode, masks, batch sizes and dtypes agree CPU<->CUDA",
  ignore: !hasCuda,
  fn: () =>
    cudaCores(() => {
      const rng = new Rng(1);
      for (const dt of ["f32", "f16", "bf16"] as const) {
        for (const [rows, n, k] of [[1, 96, 256], [3, 64, 512], [11, 40, 200], [8, 33, 100]] as const) {
          for (const [mode, act] of [[0, 0], [1, 0], [2, 0], [1, 1], [2, 2], [0, 2]] as const) {
            const S = 8;
            const w = Pair.weights(rng.normals((act === 1 ? 2 : 1) * n * k, 0.1), dt);
            const ldx = k + 4;
            const x = Pair.of(rng.normals(rows * ldx, 1));
            const nw = Pair.of(rng.normals(k, 1)), nb = Pair.of(rng.normals(k, 0.5)), bias = Pair.of(rng.normals(n, 1));
            const inMask = Pair.of(Float32Array.from({ length: rows * (k / S) }, () => (rng.uniform() < 0.5 ? 1 : 0)));
            const outMask = n % S === 0
              ? Pair.of(Float32Array.from({ length: rows * (n / S) }, () => (rng.uniform() < 0.5 ? 1 : 0)))
              : null;
            const y = Pair.of(rng.normals(rows * n, 1));
            const useIn = mode === 0 && k % S === 0;
            both(
              (kd) =>
                getBackend(kd).sym.lte_dec_linear(
                  getBackend(kd).ctx,
                  DTypeCode[dt],
                  w.p[kd],
                  x.p[kd],
                  ldx,
                  mode,
                  nw.p[kd],
                  nb.p[kd],
                  1e-5,
                  useIn ? inMask.p[kd] : null,
                  outMask ? outMask.p[kd] : null,
                  n,
                  S,
                  bias.p[kd],
                  y.p[kd],
                  rows,
                  n,
                  k,
                  act === 0 ? 1 : 0,
                  act,
                ),
              "lte_dec_linear",
            );
            const e = rel(y.f32("cuda"), y.f32("cpu"));
            const key = `linear_${dt}`;
            report[key] = Math.max(report[key] ?? 0, e);
            assert(e < 1e-5, `linear ${dt} rows ${rows} n ${n} k ${k} mode ${mode} act ${act}: ${e}`);
            for (const p of [w, x, nw, nb, bias, inMask, y]) p.free();
            outMask?.free();
          }
        }
      }
    }),
});

Deno.test({
  name: "engine ops: lte_dec_linear_t_sparse (union of expert blocks, atomics) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn: () =>
    cudaCores(() => {
      const rng = new Rng(3);
      for (const dt of ["f32", "f16", "bf16"] as const) {
        for (
          const [rows, n, k, S] of [[1, 1024, 512, 32], [3, 2056, 256, 32], [8, 64, 96, 16], [11, 48, 64, 8]] as const
        ) {
          const E = k / S;
          const mask = Float32Array.from({ length: rows * E }, () => (rng.uniform() < 0.3 ? 1 : 0));
          const hh = rng.normals(rows * k, 1);
          for (let r = 0; r < rows; r++) {
            for (let i = 0; i < k; i++) if (!mask[r * E + Math.floor(i / S)]) hh[r * k + i] = 0;
          }
          const wt = Pair.weights(rng.normals(k * n, 0.1), dt), h = Pair.of(hh), m = Pair.of(mask);
          const bias = Pair.of(rng.normals(n, 1)), y = Pair.of(rng.normals(rows * n, 1));
          both(
            (kd) =>
              getBackend(kd).sym.lte_dec_linear_t_sparse(
                getBackend(kd).ctx,
                DTypeCode[dt],
                wt.p[kd],
                h.p[kd],
                m.p[kd],
                bias.p[kd],
                y.p[kd],
                rows,
                n,
                k,
                S,
              ),
            "lte_dec_linear_t_sparse",
          );
          const e = rel(y.f32("cuda"), y.f32("cpu"));
          report[`linear_t_sparse_${dt}`] = Math.max(report[`linear_t_sparse_${dt}`] ?? 0, e);
          assert(e < 1e-5, `linear_t_sparse ${dt} rows ${rows} n ${n} k ${k}: ${e}`);
          for (const p of [wt, h, m, bias, y]) p.free();
        }
      }
    }),
});

/**
 * The attention kernels compared with the CPU: the flash kernel as the engine runs it (split over
 * positions in chunks of at least 128 when the cache is longer: 3 chunks in the T = 300 cases),
 * split in chunks of at least 16 (up to 19 chunks, merged by the last to arrive; a row at position
 * 0 or 9 has one), the same with 8 blocks per SM and the KV prefetch always, not split, without
 * any prefetch, split without software pipelining, and the two-pass kernel.
 */
const ATTN_VARIANTS: [string, Record<string, string>][] = [
  ["flash", {}],
  ["flash_chunk16", { LTE_DEC_ATTN_CHUNK: "16" }],
  ["flash_nosplit", { LTE_DEC_ATTN_SPLIT: "0" }],
  // 8 blocks per SM, the KV prefetch always
  ["flash_chunk16_bps8_pf1", { LTE_DEC_ATTN_CHUNK: "16", LTE_DEC_ATTN_BPS: "8", LTE_DEC_ATTN_PF: "1" }],
  ["flash_pf0", { LTE_DEC_ATTN_PF: "0" }],
  ["flash_chunk16_nopipe", { LTE_DEC_ATTN_CHUNK: "16", LTE_DEC_ATTN_PIPE: "0" }],
  ["old", { LTE_DEC_ATTN: "old" }],
];

/**
 * One lte_dec_rope_attention case on both backends: 3 rows on DISTINCT slots (a decode step) of a
 * 4-slot cache of T positions at the given positions, random caches and qkv; `call` runs it on a
 * backend's buffers with any context of that backend.
 */
function ropeAttentionCase(rng: Rng, dt: Dt, H: number, HKV: number, D: number, T: number, positions: number[]) {
  const NS = 4, rows = 3, ld = (H + 2 * HKV) * D + 8;
  const kc = Pair.weights(rng.normals(NS * HKV * T * D, 1), dt);
  const vc = Pair.weights(rng.normals(NS * HKV * T * D, 1), dt);
  const qkv = Pair.of(rng.normals(rows * ld, 1));
  const slots = Pair.of(Int32Array.from([3, 0, 1])), ps = Pair.of(Int32Array.from(positions));
  const out = new Pair(rows * H * D * 4);
  const call = (kd: Kind, ctx: Deno.PointerValue, theta: number) =>
    getBackend(kd).sym.lte_dec_rope_attention(
      ctx,
      DTypeCode[dt],
      qkv.p[kd],
      ld,
      kc.p[kd],
      vc.p[kd],
      slots.p[kd],
      ps.p[kd],
      out.p[kd],
      rows,
      H,
      HKV,
      D,
      NS,
      T,
      theta,
      1 / Math.sqrt(D),
    );
  const cacheElems = NS * HKV * T * D;
  return { kc, vc, out, call, cacheElems, free: () => [kc, vc, qkv, slots, ps, out].forEach((p) => p.free()) };
}

Deno.test({
  name: "engine ops: lte_dec_rope_attention (one launch per decode step) agrees CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(12);
    const widen = (b: Uint8Array, dt: Dt) =>
      dt === "f32"
        ? new Float32Array(b.buffer)
        : dt === "f16"
        ? f16ToF32(new Uint16Array(b.buffer))
        : bf16ToF32(new Uint16Array(b.buffer));
    // head sizes with a flash kernel (16, 64, 128) and without (96: the two ops), GQA, RoPE and not
    for (const dt of ["f32", "f16", "bf16"] as const) {
      for (
        const [H, HKV, D, T, theta] of [
          [4, 2, 16, 20, 10000],
          [4, 4, 64, 70, 10000],
          [2, 1, 128, 300, 500000],
          [4, 2, 64, 40, 0],
          [2, 2, 96, 30, 10000],
        ] as const
      ) {
        for (const [kernel, env] of ATTN_VARIANTS) {
          for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
          try {
            // one row at position 0, one at the last position
            const { kc, vc, out, call, cacheElems, free } = ropeAttentionCase(rng, dt, H, HKV, D, T, [T - 1, 0, 9]);
            both((kd) => call(kd, getBackend(kd).ctx, theta), "lte_dec_rope_attention");
            const eo = rel(out.f32("cuda"), out.f32("cpu"));
            report[`rope_attention_${dt}_D${D}_${kernel}`] = eo;
            // f16/bf16: a rotated k that rounds to the neighbouring half value on one backend (cos/sin
            // in double differ in the last bits) moves one score by about an ulp of k
            assert(eo < (dt === "f32" ? 1e-5 : 1e-3), `rope_attention ${dt} D=${D} theta=${theta} (${kernel}): ${eo}`);
            for (const c of [kc, vc]) {
              const cu = new Uint8Array(cacheElems * (dt === "f32" ? 4 : 2)), cp = new Uint8Array(cu.length);
              getBackend("cuda").read(cu, c.p.cuda);
              getBackend("cpu").read(cp, c.p.cpu);
              const ec = rel(widen(cu, dt), widen(cp, dt));
              assert(ec < (dt === "f32" ? 1e-5 : dt === "f16" ? 2e-3 : 1e-2), `${dt} D=${D} cache after append: ${ec}`);
            }
            free();
          } finally {
            for (const k of Object.keys(env)) Deno.env.delete(k);
          }
        }
      }
    }
  },
});

/**
 * The split attention's scratch grows only outside graph captures (its zeroing memset would become a
 * graph node): a step captured on a fresh context, whose scratch was never allocated, must run the
 * attention unsplit (the fallback) and still agree with the CPU, replay after replay. The buffers
 * belong to the shared context (device memory serves every context of the device).
 */
Deno.test({
  name: "engine ops: a captured split attention on a fresh context (no scratch yet) falls back and agrees",
  ignore: !hasCuda,
  fn() {
    const be = getBackend("cuda"), s = be.sym;
    const rng = new Rng(31);
    const { out, call, free } = ropeAttentionCase(rng, "f16", 4, 2, 128, 300, [299, 0, 200]);
    const op = (kd: Kind, ctx: Deno.PointerValue) => call(kd, ctx, 10000);
    getBackend("cpu").check(op("cpu", getBackend("cpu").ctx), "lte_dec_rope_attention (cpu)");
    be.synchronize(); // the shared context's writes land before the fresh context reads them
    const hold = new BigUint64Array(1);
    be.check(s.lte_ctx_create(0, hold), "lte_ctx_create");
    const ctx2 = Deno.UnsafePointer.create(hold[0]!);
    const check2 = (status: number, what: string) =>
      assert(status === 0, `${what}: ${cString(s.lte_ctx_last_error(ctx2))}`);
    try {
      // chunks of >= 16 positions: an eager call on this context would split these rows 19 ways
      withDecEnv({ LTE_DEC_ATTN_CHUNK: "16" }, () => {
        check2(s.lte_graph_begin(ctx2), "lte_graph_begin");
        const captured = op("cuda", ctx2);
        const ended = s.lte_graph_end(ctx2, hold);
        check2(captured, "lte_dec_rope_attention inside the capture");
        check2(ended, "lte_graph_end");
      });
      const g = Deno.UnsafePointer.create(hold[0]!);
      try {
        for (let rep = 0; rep < 2; rep++) {
          check2(s.lte_graph_launch(ctx2, g), "lte_graph_launch");
          check2(s.lte_ctx_synchronize(ctx2), "lte_ctx_synchronize");
          const e = rel(out.f32("cuda"), out.f32("cpu"));
          report[`rope_attention_f16_D128_captured_fresh_ctx_${rep}`] = e;
          assert(e < 1e-3, `captured attention on a fresh context, replay ${rep}: ${e}`);
        }
      } finally {
        s.lte_graph_free(ctx2, g);
      }
    } finally {
      s.lte_ctx_free(ctx2);
      free();
    }
  },
});

Deno.test({
  name: "engine ops: norm, embedding, rope+append, attention, router mask, sampling agree CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(2);
    // norm
    for (const kind of [0, 1]) {
      const x = Pair.of(rng.normals(5 * 300, 2)), w = Pair.of(rng.normals(300, 1)), b = Pair.of(rng.normals(300, 1));
      const y = new Pair(5 * 300 * 4);
      both(
        (kd) =>
          getBackend(kd).sym.lte_dec_norm(getBackend(kd).ctx, x.p[kd], w.p[kd], b.p[kd], y.p[kd], 5, 300, 1e-5, kind),
        "lte_dec_norm",
      );
      const e = rel(y.f32("cuda"), y.f32("cpu"));
      assert(e < 1e-5, `norm kind ${kind}: ${e}`);
      for (const p of [x, w, b, y]) p.free();
    }
    for (const dt of ["f32", "f16", "bf16"] as const) {
      // embedding (+ positions): exact
      const V = 50, C = 24, P = 16, R = 4;
      const tok = Pair.weights(rng.normals(V * C, 1), dt), pt = Pair.weights(rng.normals(P * C, 1), dt);
      const ids = Pair.of(Int32Array.from([3, 49, 0, 17])), pos = Pair.of(Int32Array.from([0, 5, 15, 2]));
      const out = new Pair(R * C * 4);
      both(
        (kd) =>
          getBackend(kd).sym.lte_dec_embed(
            getBackend(kd).ctx,
            DTypeCode[dt],
            ids.p[kd],
            pos.p[kd],
            tok.p[kd],
            pt.p[kd],
            out.p[kd],
            R,
            V,
            P,
            C,
          ),
        "lte_dec_embed",
      );
      assertEquals(Array.from(out.f32("cuda")), Array.from(out.f32("cpu")));
      for (const p of [tok, pt, ids, pos, out]) p.free();
      // rope + append, then attention over a cache with earlier positions filled identically;
      // head sizes 16/64/128 (2, 8, 16 lanes per position) and a context longer than one block's
      // positions per pass
      for (const [H, HKV, D, T] of [[4, 2, 16, 20], [4, 4, 64, 70], [2, 1, 128, 300]] as const) {
        const NS = 3, rows = 3, ld = (H + 2 * HKV) * D;
        const eb = dt === "f32" ? 4 : 2;
        const cacheInit = rng.normals(NS * HKV * T * D, 1);
        const kc = Pair.weights(cacheInit, dt), vc = Pair.weights(rng.normals(NS * HKV * T * D, 1), dt);
        const qkv = Pair.of(rng.normals(rows * ld, 1));
        const slots = Pair.of(Int32Array.from([2, 0, 2])), ps = Pair.of(Int32Array.from([7, T - 1, 8]));
        both(
          (kd) =>
            getBackend(kd).sym.lte_dec_rope_append(
              getBackend(kd).ctx,
              DTypeCode[dt],
              qkv.p[kd],
              ld,
              kc.p[kd],
              vc.p[kd],
              slots.p[kd],
              ps.p[kd],
              rows,
              H,
              HKV,
              D,
              NS,
              T,
              10000,
            ),
          "lte_dec_rope_append",
        );
        const eq = rel(qkv.f32("cuda"), qkv.f32("cpu"));
        assert(eq < 1e-5, `rope ${dt}: ${eq}`);
        const kcu = new Uint8Array(NS * HKV * T * D * eb), kcp = new Uint8Array(kcu.length);
        getBackend("cuda").read(kcu, kc.p.cuda);
        getBackend("cpu").read(kcp, kc.p.cpu);
        const widen = (b: Uint8Array) =>
          dt === "f32"
            ? new Float32Array(b.buffer)
            : dt === "f16"
            ? f16ToF32(new Uint16Array(b.buffer))
            : bf16ToF32(new Uint16Array(b.buffer));
        const ek = rel(widen(kcu), widen(kcp));
        assert(ek < (dt === "f32" ? 1e-5 : dt === "f16" ? 2e-3 : 1e-2), `${dt} k cache after rope+append: ${ek}`);
        getBackend("cuda").write(kc.p.cuda, kcp); // identical caches for the attention check
        const att = new Pair(rows * H * D * 4);
        // the single-pass kernel (default; split over positions or not) and the two-pass one
        // (LTE_DEC_ATTN=old) against the CPU
        for (const [kernel, env] of ATTN_VARIANTS) {
          for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
          try {
            both(
              (kd) =>
                getBackend(kd).sym.lte_dec_attention(
                  getBackend(kd).ctx,
                  DTypeCode[dt],
                  qkv.p[kd],
                  ld,
                  kc.p[kd],
                  vc.p[kd],
                  slots.p[kd],
                  ps.p[kd],
                  att.p[kd],
                  rows,
                  H,
                  HKV,
                  D,
                  NS,
                  T,
                  0.25,
                ),
              "lte_dec_attention",
            );
            const ea = rel(att.f32("cuda"), att.f32("cpu"));
            report[`attention_${dt}_D${D}_${kernel}`] = ea;
            assert(ea < 1e-5, `attention ${dt} D=${D} T=${T} (${kernel}): ${ea}`);
          } finally {
            for (const k of Object.keys(env)) Deno.env.delete(k);
          }
        }
        for (const p of [kc, vc, qkv, slots, ps, att]) p.free();
      }
      const eb = dt === "f32" ? 4 : 2;
      // conversion: round to nearest even on both
      const src = Pair.of(rng.normals(1000, 3));
      const dst = new Pair(1000 * eb + 8);
      both(
        (kd) => getBackend(kd).sym.lte_dec_convert(getBackend(kd).ctx, DTypeCode[dt], src.p[kd], dst.p[kd], 1000),
        "lte_dec_convert",
      );
      assertEquals(
        Array.from(dst.i32("cuda").slice(0, 1000 * eb / 4)),
        Array.from(dst.i32("cpu").slice(0, 1000 * eb / 4)),
      );
      // the split into hi + lo halves (the router rows of masked dense): bit-identical on both
      if (dt !== "f32") {
        const hl = new Pair(2000 * eb + 8);
        both(
          (kd) =>
            getBackend(kd).sym.lte_dec_convert_split(
              getBackend(kd).ctx,
              DTypeCode[dt],
              src.p[kd],
              hl.p[kd],
              Deno.UnsafePointer.offset(hl.p[kd], 1000 * eb) as Deno.PointerObject,
              1000,
            ),
          "lte_dec_convert_split",
        );
        assertEquals(Array.from(hl.i32("cuda").slice(0, 500)), Array.from(hl.i32("cpu").slice(0, 500)));
        hl.free();
      }
      src.free();
      dst.free();
    }
    // router mask: the active experts as sets, and the counts
    {
      const R = 6, E = 40;
      const lg = Pair.of(rng.normals(R * E, 1)), m = new Pair(R * E * 4), cnt = Pair.of(new Int32Array(R * 3));
      both(
        (kd) => getBackend(kd).sym.lte_dec_router_mask(getBackend(kd).ctx, lg.p[kd], m.p[kd], cnt.p[kd], 3, R, E, 0.1),
        "lte_dec_router_mask",
      );
      assertEquals(Array.from(m.f32("cuda")), Array.from(m.f32("cpu")));
      assertEquals(Array.from(cnt.i32("cuda")), Array.from(cnt.i32("cpu")));
      for (const p of [lg, m, cnt]) p.free();
    }
    // sampling
    {
      const R = 64, V = 3000;
      const logits = Pair.of(rng.normals(R * V, 3));
      const temp = Pair.of(Float32Array.from({ length: R }, (_, i) => (i % 4 === 0 ? 0 : 0.5 + (i % 3) * 0.4)));
      const topk = Pair.of(Int32Array.from({ length: R }, (_, i) => [0, 1, 50, 2999][i % 4]!));
      const topp = Pair.of(Float32Array.from({ length: R }, (_, i) => [1, 0.9, 0.5, 0.99][(i >> 2) % 4]!));
      const seeds = Pair.of(BigUint64Array.from({ length: R }, (_, i) => BigInt(i * 7919 + 1)));
      const pos = Pair.of(Int32Array.from({ length: R }, (_, i) => i * 3));
      const ids = Pair.of(new Int32Array(R)), out = Pair.of(new Int32Array(R)), scratch = new Pair(R * V * 4);
      both(
        (kd) =>
          getBackend(kd).sym.lte_dec_sample(
            getBackend(kd).ctx,
            logits.p[kd],
            temp.p[kd],
            topk.p[kd],
            topp.p[kd],
            seeds.p[kd],
            pos.p[kd],
            ids.p[kd],
            out.p[kd],
            scratch.p[kd],
            R,
            V,
            1,
          ),
        "lte_dec_sample",
      );
      const a = out.i32("cuda"), b = out.i32("cpu");
      let same = 0;
      for (let i = 0; i < R; i++) {
        if (i % 4 === 0) assertEquals(a[i], b[i], `greedy row ${i}`);
        if (a[i] === b[i]) same++;
      }
      report.sample_agreement = same / R;
      assert(same / R >= 0.95, `sampled rows agree on ${same}/${R}`);
      assertEquals(Array.from(ids.i32("cuda")), Array.from(a));
      assertEquals(Array.from(pos.i32("cuda")), Array.from(pos.i32("cpu")));
      for (const p of [logits, temp, topk, topp, seeds, pos, ids, out, scratch]) p.free();
    }
  },
});

function tiny(family: "llama" | "gpt2"): ModelConfig {
  return resolveModelConfig({
    family,
    vocab_size: 256,
    n_layer: 2,
    d_model: 128,
    n_head: 4,
    n_kv_head: family === "llama" ? 2 : undefined,
    d_ff: 256,
    max_seq: 128,
    init_std: 0.1,
  });
}

/**
 * Routers whose decisions cannot flip between backends: biases +-3 (random sign per expert) and
 * weights N(0, 0.01), so a logit (|x'| = sqrt(d) after the RMSNorm: w.x' ~ N(0, 0.01 sqrt(d))) stays
 * many standard deviations from the threshold, about half the experts active. Random routers do
 * flip: tensor-core GEMVs round their inputs to f16, the router input then differs from the CPU's
 * by ~5e-4 relative, and a logit that close to the threshold turns an expert on or off in one
 * engine and not the other (the 8-row test measured 0.069 that way on the H200, eleventh session).
 */
function marginRouters(config: ModelConfig, S: number): Map<string, Float32Array> {
  return seededRouters(config, S, 6, 0.01, (rng, E) => Float32Array.from({ length: E }, () => (rng.int(2) ? 3 : -3)));
}

/** Seeded random routers (weights N(0, 0.1), biases N(0, 0.3)) for `config` in experts of S neurons. */
function randomRouters(config: ModelConfig, S: number): Map<string, Float32Array> {
  return seededRouters(config, S, 5, 0.1, (rng, E) => rng.normals(E, 0.3));
}

/** Per layer: router weights N(0, wStd) [E, d], then the biases `bias` draws, from one seeded stream. */
function seededRouters(
  config: ModelConfig,
  S: number,
  seed: number,
  wStd: number,
  bias: (rng: Rng, E: number) => Float32Array,
): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const E = config.d_ff / S;
  const out = new Map<string, Float32Array>();
  for (let i = 0; i < config.n_layer; i++) {
    out.set(routerWeightName(i), rng.normals(E * config.d_model, wStd));
    out.set(routerBiasName(i), bias(rng, E));
  }
  return out;
}

interface Run {
  /** tokens[s][i]: token of slot i sampled at step s (s = 0: prefill). */
  tokens: number[][];
  /** logits[s][i]: the logits that token came from. */
  logits: Float32Array[][];
  active: number[][][];
}

async function decode(eng: Engine, prompts: number[][], steps: number): Promise<Run> {
  const V = eng.config.vocab_size;
  const slots = prompts.map(() => eng.allocSlot()!);
  const first: number[] = [], firstLogits: Float32Array[] = [], firstActive: number[][] = [];
  for (const [i, p] of prompts.entries()) {
    const r = await eng.prefill(slots[i]!, p, GREEDY);
    first.push(r.token);
    firstActive.push(r.activeExperts);
    firstLogits.push(await eng.lastLogits(1));
  }
  const run: Run = { tokens: [first], logits: [firstLogits], active: [firstActive] };
  for (let s = 0; s < steps; s++) {
    const r = await eng.step(slots, slots.map(() => GREEDY));
    const all = await eng.lastLogits(slots.length);
    run.tokens.push(r.tokens);
    run.active.push(r.activeExperts);
    run.logits.push(slots.map((_, i) => all.slice(i * V, (i + 1) * V)));
  }
  for (const s of slots) eng.freeSlot(s);
  return run;
}

/** Gap between the two largest logits, relative to the largest magnitude. */
function top2Gap(l: Float32Array): number {
  let a = -Infinity, b = -Infinity, m = 0;
  for (const v of l) {
    m = Math.max(m, Math.abs(v));
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) b = v;
  }
  return (a - b) / m;
}

/**
 * Compares run `a` with reference run `b` slot by slot, step by step, until the first token that
 * differs; a difference is accepted only at a near-tie of the reference (top-2 gap below
 * 4 x tol), after which the sequences are different and comparing stops. Returns the worst
 * relative logit difference over the compared steps (and checks active experts, when given).
 */
function agree(a: Run, b: Run, tol: number, tag: string): number {
  let worst = 0, activeDiff = 0, activeN = 0;
  for (let i = 0; i < b.tokens[0]!.length; i++) {
    for (let s = 0; s < b.tokens.length; s++) {
      worst = Math.max(worst, rel(a.logits[s]![i]!, b.logits[s]![i]!));
      const aa = a.active[s]![i]!, bb = b.active[s]![i]!;
      for (let l = 0; l < bb.length; l++) {
        activeN++;
        if (aa[l] !== bb[l]) {
          activeDiff++;
          assert(Math.abs(aa[l]! - bb[l]!) <= 1, `${tag}: slot ${i} step ${s} layer ${l}: active ${aa[l]} vs ${bb[l]}`);
        }
      }
      if (a.tokens[s]![i] !== b.tokens[s]![i]) {
        const gap = top2Gap(b.logits[s]![i]!);
        assert(
          gap < 4 * tol,
          `${tag}: slot ${i} step ${s}: token ${a.tokens[s]![i]} vs ${b.tokens[s]![i]} (top-2 gap ${gap})`,
        );
        break;
      }
    }
  }
  assert(activeDiff <= Math.max(1, 0.01 * activeN), `${tag}: ${activeDiff} of ${activeN} active-expert counts differ`);
  return worst;
}

/** The batch-3 engine tests' prompts (3 slots, different lengths) and CPU f32 options; lookahead
 * off: decode() reads each step's logits (lastLogits refuses with a step in flight). */
const PROMPTS3 = [[1, 50, 99, 3, 200], [7, 8], [250, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 9]];
const BASE3: EngineOptions = {
  device: "cpu",
  dtype: "f32",
  sparse: false,
  maxBatch: 3,
  maxContext: 64,
  lookahead: false,
};

for (const family of ["llama", "gpt2"] as const) {
  Deno.test({
    name:
      `engine: ${family} decoding on CUDA (graphs, batch 3, f32/f16/bf16, dense and sparse) agrees with the CPU engine`,
    ignore: !hasCuda,
    async fn() {
      const config = tiny(family);
      const arrays = initArrays(config, 12);
      const S = 32, routerArrays = randomRouters(config, S);
      const prompts = PROMPTS3, base = BASE3;
      const ref32 = Engine.fromArrays(config, arrays, base, { tokenizer });
      const want32 = await decode(ref32, prompts, 12);
      ref32.dispose();
      // [sparse, ffnKernels, fusedFfn]: dense, the engine's own masked GEMVs, the fused op
      // (lte_dec_sparse_ffn), KERNELS' sparse FFN kernels
      const variants: [boolean, boolean, boolean][] = [[false, false, false], [true, false, false], [
        true,
        false,
        true,
      ]];
      if (family === "llama") variants.push([true, true, false]);
      for (const [sparse, ffnKernels, fusedFfn] of variants) {
        for (const dt of ["f32", "f16", "bf16"] as const) {
          const opts = { ...base, dtype: dt, sparse, ffnKernels, fusedFfn };
          const routers = sparse ? { expertSize: S, tau: 0.5, arrays: routerArrays } : null;
          const cpu = Engine.fromArrays(config, arrays, opts, { tokenizer, routers });
          const gpu = Engine.fromArrays(config, arrays, { ...opts, device: "cuda" }, { tokenizer, routers });
          try {
            const a = await decode(gpu, prompts, 12), b = await decode(cpu, prompts, 12);
            const tag = `${family}_${dt}${sparse ? "_sparse" : ""}${ffnKernels ? "_kernels" : ""}${
              fusedFfn ? "_fused" : ""
            }`;
            const tol = dt === "f32" ? 1e-4 : dt === "f16" ? 2e-3 : 1e-2;
            const worst = agree(a, b, tol, tag);
            report[`engine_${tag}`] = worst;
            assert(worst < tol, `${tag}: logits differ by ${worst}`);
            if (!sparse && dt !== "f32") {
              const tol32 = dt === "f16" ? 2e-2 : 6e-2;
              const vs32 = agree(a, want32, tol32, `${tag} vs f32`);
              report[`engine_${tag}_vs_f32`] = vs32;
              assert(vs32 < tol32, `${tag} vs f32: ${vs32}`);
            }
            if (dt !== "f32") {
              // programmatic dependent launch between the step's kernels: the same results with it
              // toggled against the default (on, except for KERNELS' sparse FFN)
              const pdl = sparse && ffnKernels;
              const gp = Engine.fromArrays(config, arrays, { ...opts, device: "cuda", pdl }, {
                tokenizer,
                routers,
              });
              try {
                const c = await decode(gp, prompts, 12);
                // dense: bit-identical; sparse: the down projection adds with atomics, and a
                // different summation order rounds some KV values differently (measured 1.1e-5)
                const ptol = sparse ? tol : 1e-6;
                const e = agree(c, a, ptol, `${tag}: pdl`);
                report[`engine_${tag}_pdl`] = e;
                assert(e < ptol, `${tag}: pdl logits differ by ${e}`);
              } finally {
                gp.dispose();
              }
            }
            // a second run replays the captured graphs: the same results
            const again = await decode(gpu, prompts, 12);
            agree(again, a, sparse ? 1e-5 : 1e-7, `${tag}: graph replay`);
          } finally {
            cpu.dispose();
            gpu.dispose();
          }
        }
      }
    },
  });
}

/**
 * The 8-bit KV cache (kvdtype i8, lte.h LTE_DTYPE_I8): the fused RoPE + append + attention of a decode
 * step in every flash variant, then the plain attention over the caches it left, against the CPU
 * reference. Caches start as random int8 values with random positive scales. The new position's k
 * is rotated in double on both backends; a last-bit difference can move one int8 value by 1, hence
 * a tolerance of about one quantization step.
 */
Deno.test({
  name: "engine ops: the 8-bit KV cache (i8): rope+attention, append and attention agree CPU<->CUDA",
  ignore: !hasCuda,
  fn() {
    const rng = new Rng(41);
    for (
      const [H, HKV, D, T, theta] of [[4, 2, 16, 20, 10000], [4, 4, 64, 70, 10000], [2, 1, 128, 300, 500000], [
        4,
        2,
        64,
        40,
        0,
      ], [2, 1, 8, 30, 10000]] as const
    ) {
      for (const [kernel, env] of ATTN_VARIANTS.filter(([k]) => k !== "old")) {
        withDecEnv(env, () => {
          const NS = 4, rows = 3, ld = (H + 2 * HKV) * D + 8, cacheRows = NS * HKV * T;
          const bytes = kvCacheBytes("i8", cacheRows, D), at = kvI8ScalesOffset(cacheRows, D);
          const init = () => {
            const b = new Uint8Array(bytes);
            const q = new Int8Array(b.buffer, 0, cacheRows * D), sc = new Float32Array(b.buffer, at, cacheRows);
            for (let i = 0; i < q.length; i++) q[i] = rng.int(255) - 127;
            for (let i = 0; i < sc.length; i++) sc[i] = 0.005 + 0.02 * rng.uniform();
            return b;
          };
          const qkv0 = rng.normals(rows * ld, 1);
          const kc = Pair.of(init()), vc = Pair.of(init()), qkv = Pair.of(qkv0);
          const slots = Pair.of(Int32Array.from([3, 0, 1])), ps = Pair.of(Int32Array.from([T - 1, 0, 9]));
          const out = new Pair(rows * H * D * 4);
          const args = (kd: Kind) =>
            [qkv.p[kd], ld, kc.p[kd], vc.p[kd], slots.p[kd], ps.p[kd], out.p[kd], rows, H, HKV, D, NS, T] as const;
          const invSqrtD = 1 / Math.sqrt(D);
          both((kd) => {
            const be = getBackend(kd);
            return be.sym.lte_dec_rope_attention(be.ctx, DTypeCode.i8, ...args(kd), theta, invSqrtD);
          }, "lte_dec_rope_attention i8");
          const tag = `i8_D${D}_${kernel}`;
          const eo = rel(out.f32("cuda"), out.f32("cpu"));
          report[`rope_attention_${tag}`] = eo;
          assert(eo < 1e-2, `rope_attention ${tag}: ${eo}`);
          // the caches after the append, dequantized (values x their row's scale)
          for (const c of [kc, vc]) {
            const deq = (kd: Kind) => {
              const b = new Uint8Array(bytes);
              getBackend(kd).read(b, c.p[kd]);
              const q = new Int8Array(b.buffer, 0, cacheRows * D), sc = new Float32Array(b.buffer, at, cacheRows);
              return Float32Array.from(q, (x, i) => x * sc[Math.floor(i / D)]!);
            };
            const ec = rel(deq("cuda"), deq("cpu"));
            assert(ec < 2e-2, `${tag}: cache after append: ${ec}`);
          }
          // the plain attention (prefill's op) over the caches each backend now holds; the fused op
          // leaves qkv's q and k unspecified (the CPU rotates them in place): the same qkv on both
          for (const kd of ["cpu", "cuda"] as const) getBackend(kd).write(qkv.p[kd], qkv0);
          both((kd) => {
            const be = getBackend(kd);
            return be.sym.lte_dec_attention(be.ctx, DTypeCode.i8, ...args(kd), invSqrtD);
          }, "lte_dec_attention i8");
          const ea = rel(out.f32("cuda"), out.f32("cpu"));
          report[`attention_${tag}`] = ea;
          assert(ea < 1e-2, `attention ${tag}: ${ea}`);
          for (const p of [kc, vc, qkv, slots, ps, out]) p.free();
        });
      }
    }
  },
});

Deno.test({
  name: "engine: kvDtype i8 decoding on CUDA (graphs, batch 3) agrees with the CPU engine's i8 cache",
  ignore: !hasCuda,
  async fn() {
    const config = tiny("llama");
    const arrays = initArrays(config, 12);
    const prompts = PROMPTS3, base: EngineOptions = { ...BASE3, kvDtype: "i8" };
    for (const dt of ["f32", "f16"] as const) {
      const cpu = Engine.fromArrays(config, arrays, { ...base, dtype: dt }, { tokenizer });
      const gpu = Engine.fromArrays(config, arrays, { ...base, dtype: dt, device: "cuda" }, { tokenizer });
      try {
        const a = await decode(gpu, prompts, 12), b = await decode(cpu, prompts, 12);
        const worst = agree(a, b, 2e-2, `kv i8 ${dt}`);
        report[`engine_llama_${dt}_kv_i8`] = worst;
        assert(worst < 2e-2, `kv i8 ${dt}: logits differ by ${worst}`);
      } finally {
        cpu.dispose();
        gpu.dispose();
      }
    }
  },
});

// 8-row steps and prefill chunks: the paths the batch-3 test above never reaches. By default
// (twelfth session) the GEMVs of 8+ rows run on cuBLAS, the sparse ones as "masked dense"
// (cuda/cuda/decode_blas.cuh); with LTE_DEC_BLAS=0 on our tensor-core GEMVs (from 5 rows; dense O
// and down in K groups up to 8 rows; f16 sparse steps of >= 8 rows on the masked tensor-core GEMVs
// with the union's down on ts_mma2_kernel; tenth session). d_model 256 so that the K groups apply
// (K >= 4 x 64); d_ff 512 = 16 experts of 32, N 256 = half a column tile.
Deno.test({
  name:
    "engine: 8-row steps on CUDA (cuBLAS; tensor cores, K groups, the masked sparse path) agree with the CPU engine",
  ignore: !hasCuda,
  async fn() {
    const config = resolveModelConfig({
      family: "llama",
      vocab_size: 256,
      n_layer: 2,
      d_model: 256,
      n_head: 4,
      n_kv_head: 2,
      d_ff: 512,
      max_seq: 64,
      init_std: 0.1,
    });
    const arrays = initArrays(config, 31);
    // routers with a margin (no flips between the engines; the union is then the same for every
    // row: per-row masks within a union are tests/gpu/gemv_test.ts's cases)
    const S = 32, routerArrays = marginRouters(config, S);
    const rng = new Rng(32);
    // 8 slots; prompts of 3-19 tokens, so prefill runs chunks of 8 rows and of fewer
    const prompts = Array.from(
      { length: 8 },
      (_, i) => Array.from({ length: 3 + 2 * i + (i % 3) }, () => rng.int(256)),
    );
    for (const [path, env] of [["blas", {}], ["mma", { LTE_DEC_BLAS: "0" }]] as const) {
      await withDecEnvAsync(env, () => eightRows(config, arrays, routerArrays, S, prompts, path));
    }
  },
});

/** The 8-row comparison for one kernel path ("blas": the default, "mma": LTE_DEC_BLAS=0), dense then sparse. */
async function eightRows(
  config: ModelConfig,
  arrays: Map<string, Float32Array>,
  routerArrays: Map<string, Float32Array>,
  S: number,
  prompts: number[][],
  path: string,
): Promise<void> {
  for (const sparse of [false, true]) {
    const opts: EngineOptions = {
      device: "cpu",
      dtype: "f16",
      sparse,
      maxBatch: 8,
      maxContext: 48,
      lookahead: false,
    };
    const routers = sparse ? { expertSize: S, tau: 0.5, arrays: routerArrays } : null;
    const cpu = Engine.fromArrays(config, arrays, opts, { tokenizer, routers });
    const gpu = Engine.fromArrays(config, arrays, { ...opts, device: "cuda" }, { tokenizer, routers });
    try {
      // (margin routers: about half the experts per token, so the union of 8 is all of them)
      if (sparse) assertEquals(gpu.sparseFfnPath(8), path === "blas" ? "fused" : "gemv");
      const a = await decode(gpu, prompts, 10), b = await decode(cpu, prompts, 10);
      const tag = `llama_f16_8rows_${path}${sparse ? "_sparse" : ""}`;
      if (sparse) {
        // the masked kernels must have had experts to skip (and some to keep)
        const counts = a.active.flat(2), E = config.d_ff / S;
        const frac = counts.reduce((u, v) => u + v, 0) / (counts.length * E);
        assert(frac > 0.2 && frac < 0.8, `${tag}: active fraction ${frac}`);
      }
      // Written tolerance: each tensor-core GEMV rounds its input to f16 (tests/gpu/gemv_test.ts
      // MMA_TOL: ~3e-4 of the output's maximum, bound 1e-3 per op), and a step chains 9 of them
      // (2 layers x QKV, O, gate/up, down, and the head) where the batch-3 test's CUDA-core
      // GEMVs keep f32 inputs (its 2e-3). Measured on the H200 (eleventh session): dense
      // 2.4e-3 to 2.6e-3 under every kernel switch.
      const tol = 5e-3;
      const worst = agree(a, b, tol, tag);
      report[`engine_${tag}`] = worst;
      console.log(`${tag}: worst relative logit difference ${worst}`);
      assert(worst < tol, `${tag}: logits differ by ${worst}`);
      // the graph replays give the same results up to the atomics' order of adds (the K groups'
      // and the union down's): an f32 rounding difference that moves the next tensor-core GEMV's
      // f16 input by one step (4.9e-4 relative) is then carried through the layers and the head
      // (measured 3.4e-4 to 6.6e-4 on the H200 with the K groups, eleventh session)
      const again = await decode(gpu, prompts, 10);
      const e = agree(again, a, 2e-3, `${tag}: graph replay`);
      console.log(`${tag}: graph replay differs by ${e}`);
      assert(e < 2e-3, `${tag}: graph replay differs by ${e}`);
    } finally {
      cpu.dispose();
      gpu.dispose();
    }
  }
}

Deno.test({
  name: "engine: lookahead decoding on CUDA (generate) gives the tokens of the plain path",
  ignore: !hasCuda,
  async fn() {
    const config = tiny("llama");
    const arrays = initArrays(config, 12);
    const S = 32, routerArrays = randomRouters(config, S);
    const gen = async (eng: Engine, prompt: number[], opts: Parameters<Engine["generate"]>[1]) => {
      const ids: number[] = [], active: number[][] = [];
      for await (const t of eng.generate(prompt, opts)) {
        ids.push(t.id);
        active.push(t.activeExperts);
      }
      return { ids, active };
    };
    // sparse: the down projection adds with atomics, so even the plain path may round a KV value
    // differently from run to run; a difference then counts only if two plain runs agree
    const same = async (
      got: { ids: number[]; active: number[][] },
      want: { ids: number[]; active: number[][] },
      again: () => Promise<{ ids: number[]; active: number[][] }>,
      tag: string,
    ) => {
      if (JSON.stringify(got) === JSON.stringify(want)) return;
      const w2 = await again();
      assert(JSON.stringify(w2) !== JSON.stringify(want), `${tag}: lookahead ${got.ids} vs plain ${want.ids}`);
      report[`lookahead_nondeterministic_${tag}`] = 1;
    };
    const prompt = [1, 50, 99, 3, 200];
    for (const sparse of [false, true]) {
      for (const syncRead of [false, true]) {
        const opts: EngineOptions = {
          device: "cuda",
          dtype: "f16",
          sparse,
          maxBatch: 3,
          maxContext: 48,
          syncRead,
        };
        const routers = sparse ? { expertSize: S, tau: 0.5, arrays: routerArrays } : null;
        const on = Engine.fromArrays(config, arrays, { ...opts, lookahead: true }, { tokenizer, routers });
        const off = Engine.fromArrays(config, arrays, { ...opts, lookahead: false }, { tokenizer, routers });
        const tag = `${sparse ? "sparse" : "dense"}${syncRead ? " syncRead" : ""}`;
        try {
          for (
            const o of [
              { maxTokens: 30 },
              { maxTokens: 2 },
              { maxTokens: 1 },
              { maxTokens: 20, temperature: 0.9, topK: 40, topP: 0.95, seed: 3 },
              { maxTokens: 60 }, // ends at the context (48)
            ]
          ) {
            const a = await gen(off, prompt, o), b = await gen(on, prompt, o);
            await same(b, a, () => gen(off, prompt, o), `${tag} ${JSON.stringify(o)}`);
          }
          // two generations at once (each one's chain is interrupted by the other's steps)
          const o1 = { maxTokens: 16, temperature: 0.8, seed: 9 }, o2 = { maxTokens: 12 };
          const [c1, c2] = await Promise.all([gen(on, prompt, o1), gen(on, [7, 8], o2)]);
          await same(c1, await gen(off, prompt, o1), () => gen(off, prompt, o1), `${tag}: concurrent 1`);
          await same(c2, await gen(off, [7, 8], o2), () => gen(off, [7, 8], o2), `${tag}: concurrent 2`);
        } finally {
          on.dispose();
          off.dispose();
        }
      }
    }
  },
});

Deno.test({
  name: "staging (lte_host_alloc, lte_mem_read_start/wait, lte_host_free) on CUDA: the CPU's data and errors",
  ignore: !hasCuda,
  async fn() {
    const data = Int32Array.from({ length: 16 }, (_, i) => i * 5 - 9);
    const answers: Record<Kind, string[]> = { cpu: [], cuda: [] };
    for (const kind of ["cpu", "cuda"] as const) {
      const be = getBackend(kind), s = be.sym, ctx = be.ctx;
      const src = be.alloc(64);
      be.write(src, data);
      const blk = be.hostAlloc(64);
      try {
        const view = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(blk, 64));
        view.fill(0);
        be.readWait(blk); // nothing started: at once
        const mid = Deno.UnsafePointer.offset(blk, 16) as Deno.PointerObject;
        be.readStart(mid, src, 32);
        await be.readWaitAsync(mid);
        assertEquals(Array.from(view), [0, 0, 0, 0, ...data.slice(0, 8), 0, 0, 0, 0], kind);
        // a read, then more work queued behind it: the wait returns the read's data
        be.readStart(blk, src, 64);
        s.lte_dec_fill_random(ctx, DTypeCode.f32, src, 16, 1n, 1);
        be.readWait(blk);
        assertEquals(Array.from(view), Array.from(data), kind);
        const out = new BigUint64Array(1);
        const at = (st: number) => `${st} ${cString(s.lte_ctx_last_error(ctx))}`.replace(/0x[0-9a-f]+/g, "P");
        answers[kind].push(
          at(s.lte_host_alloc(ctx, 0n, out)),
          at(s.lte_host_alloc(ctx, 8n, null)),
          at(s.lte_mem_read_start(ctx, src, src, 4n)),
          at(s.lte_mem_read_start(ctx, blk, src, 65n)),
          at(s.lte_mem_read_start(ctx, mid, src, 49n)),
          at(s.lte_mem_read_start(ctx, blk, null, 4n)),
          at(s.lte_mem_read_start(ctx, blk, src, 0n)),
          at(s.lte_mem_read_wait(ctx, src)),
          at(s.lte_mem_read_wait(ctx, null)),
          at(s.lte_host_free(ctx, mid)),
        );
      } finally {
        be.hostFree(blk);
        be.free(src);
      }
    }
    assertEquals(answers.cuda, answers.cpu);
    assert(answers.cpu.every((a) => a.startsWith("1 lte_")), answers.cpu.join("\n"));
  },
});

Deno.test({
  name:
    "engine: the sparse FFN path of a step (fused op for 1-2 rows, KERNELS' kernels from 3, masked dense on cuBLAS by expected union, f16 masked GEMVs from 8)",
  ignore: !hasCuda,
  async fn() {
    const config = resolveModelConfig({
      family: "llama",
      vocab_size: 512,
      n_layer: 2,
      d_model: 2048,
      n_head: 16,
      d_ff: 2048,
      max_seq: 64,
    });
    const opts: EngineOptions = { device: "cuda", dtype: "f16", sparse: true, maxBatch: 1, maxContext: 64 };
    for (const active of [0.6, 0.08]) {
      const eng = Engine.random(config, opts, { seed: 3, tokenizer, activeFraction: active });
      try {
        const seen = [eng.sparseFfnPath(1)!];
        const slot = eng.allocSlot()!;
        await eng.prefill(slot, [1, 2, 3, 4], GREEDY);
        for (let i = 0; i < 8; i++) {
          await eng.step([slot], [GREEDY]);
          seen.push(eng.sparseFfnPath(1)!);
        }
        assertEquals(new Set(seen), new Set(["fused"]), `active ${active}: ${JSON.stringify(seen)}`);
        assertEquals(eng.sparseFfnPath(2), "fused");
        assertEquals(eng.sparseFfnPath(3), "kernels");
        // twelfth session: from MASKED_DENSE_MIN_ROWS rows, masked dense on cuBLAS (the fused op)
        // when the expected union (from the running activity, here ~`active`) is large enough
        const a1 = eng.expectedUnion(1);
        assert(Math.abs(a1 - active) < 0.1, `active ${active}: running activity ${a1}`);
        for (const rows of [4, 5, 7, 8, 12, 16]) {
          const md = eng.expectedUnion(rows) >= MASKED_DENSE_MIN_UNION;
          const want = md ? "fused" : rows >= MASKED_GEMV_MIN_ROWS ? "gemv" : "kernels";
          assertEquals(eng.sparseFfnPath(rows), want, `active ${active}, ${rows} rows`);
        }
        // (1 - 0.4^4 = 0.97 of the experts at 60 %: masked dense; 1 - 0.92^4 = 0.28 at 8 %: KERNELS')
        assertEquals(eng.sparseFfnPath(MASKED_DENSE_MIN_ROWS), active > 0.5 ? "fused" : "kernels");
        // without the cuBLAS path: KERNELS' kernels up to 7 rows, the union's masked GEMVs from 8
        withDecEnv({ LTE_DEC_BLAS: "0" }, () => {
          assertEquals(eng.sparseFfnPath(MASKED_GEMV_MIN_ROWS - 1), "kernels");
          assertEquals(eng.sparseFfnPath(MASKED_GEMV_MIN_ROWS), "gemv");
          assertEquals(eng.sparseFfnPath(16), "gemv");
        });
      } finally {
        eng.dispose();
      }
    }
    // the options force a path
    const forced = Engine.random(config, { ...opts, fusedFfn: false }, { seed: 3, tokenizer, activeFraction: 0.5 });
    try {
      assertEquals(forced.sparseFfnPath(1), "gemv");
    } finally {
      forced.dispose();
    }
    // ffnKernels forces KERNELS' kernels at every row count; bf16 keeps them from 8 rows (its
    // masked GEMVs run on CUDA cores)
    for (const [o, want] of [[{ ffnKernels: true }, "kernels"], [{ dtype: "bf16" }, "kernels"]] as const) {
      const e = Engine.random(config, { ...opts, ...o }, { seed: 3, tokenizer, activeFraction: 0.5 });
      try {
        assertEquals(e.sparseFfnPath(MASKED_GEMV_MIN_ROWS), want, JSON.stringify(o));
      } finally {
        e.dispose();
      }
    }
  },
});

Deno.test({
  name: "engine GPU agreement report",
  ignore: !hasCuda,
  fn() {
    console.log("ENGINE_AGREEMENT " + JSON.stringify(report));
    const out = Deno.env.get("OUT");
    if (out) Deno.writeTextFileSync(`${out}/engine_agreement.json`, JSON.stringify(report, null, 2));
  },
});

Deno.test({
  name: "engine: step() lookahead on CUDA (the server's batch loop) gives the plain path's results",
  ignore: !hasCuda,
  async fn() {
    const config = tiny("llama");
    const arrays = initArrays(config, 21);
    const tokenizer = loadTokenizer({ type: "bytes" });
    // dense only: its kernels are deterministic, so on and off must match exactly
    for (const dtype of ["f16", "bf16"] as const) {
      const opts: EngineOptions = { device: "cuda", dtype, sparse: false, maxBatch: 3, maxContext: 24 };
      const on = Engine.fromArrays(config, arrays, { ...opts, lookahead: true }, { tokenizer });
      const off = Engine.fromArrays(config, arrays, { ...opts, lookahead: false }, { tokenizer });
      try {
        const want = await batchLoopScript(off);
        nodeAssert.deepStrictEqual(await batchLoopScript(on), want, `${dtype}: step() lookahead changed the results`);
      } finally {
        on.dispose();
        off.dispose();
      }
    }
  },
});
