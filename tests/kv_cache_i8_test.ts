/**
 * The 8-bit KV cache (LTE_DTYPE_I8, cuda/include/lte.h) on the CPU reference: what
 * lte_dec_rope_append stores (round-half-even(x / scale) with scale = max|x| / 127, the scales after
 * the values from a 16-byte boundary), that lte_dec_attention over it equals, bit for bit, the
 * attention over an f32 cache holding the same dequantized rows, and the decode engine's
 * `kvDtype: "i8"` against the full-sequence forward (within the cache's rounding) and a bad value.
 */
import assert from "node:assert/strict";
import { Engine, EngineError, type EngineOptions, GREEDY, kvCacheBytes } from "../engine/mod.ts";
import { getBackend } from "../ffi/backend.ts";
import { cString } from "../ffi/library.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { DecoderLM } from "../models/decoder.ts";
import { noGrad, Rng, scope, Tensor } from "../tensor/mod.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { tinyLlamaConfig } from "./_tiny_llama.ts";

Deno.env.set("OMP_NUM_THREADS", Deno.env.get("OMP_NUM_THREADS") ?? "1");

/** Round half to even, as C's rintf in the default rounding mode. */
function rintEven(x: number): number {
  const f = Math.floor(x), d = x - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

Deno.test("i8 KV cache: rope_append quantizes per position, attention reads q * scale", () => {
  const be = getBackend("cpu"), s = be.sym;
  const rng = new Rng(5);
  const H = 4, HKV = 2, D = 16, T = 9, NS = 2, rows = 2, ld = (H + 2 * HKV) * D;
  const nValues = NS * HKV * T * D, scalesAt = Math.ceil(nValues / 16) * 16;
  assert.equal(kvCacheBytes("i8", NS * HKV * T, D), scalesAt + NS * HKV * T * 4);
  const bytes = kvCacheBytes("i8", NS * HKV * T, D);
  const kc = be.alloc(bytes), vc = be.alloc(bytes);
  const kf = be.alloc(nValues * 4), vf = be.alloc(nValues * 4); // f32 caches with the dequantized rows
  const qkvHost = rng.normals(rows * ld, 1.5);
  qkvHost[(H + 1) * D + 3] = 0; // a zero in a row; and row 1's first k head all zero: scale 0
  for (let d = 0; d < D; d++) qkvHost[ld + H * D + d] = 0;
  const slots = Int32Array.from([1, 0]), pos = Int32Array.from([4, 0]);
  const qkv = be.alloc(qkvHost.byteLength), sl = be.alloc(8), ps = be.alloc(8);
  const out8 = be.alloc(rows * H * D * 4), out32 = be.alloc(rows * H * D * 4);
  try {
    be.write(kc, new Uint8Array(bytes)), be.write(vc, new Uint8Array(bytes));
    be.write(qkv, qkvHost), be.write(sl, slots), be.write(ps, pos);
    // no rotation (theta 0): the k and v rows stored are qkv's own
    be.check(
      s.lte_dec_rope_append(be.ctx, DTypeCode.i8, qkv, ld, kc, vc, sl, ps, rows, H, HKV, D, NS, T, 0),
      "lte_dec_rope_append",
    );
    const kb = new Uint8Array(bytes), vb = new Uint8Array(bytes);
    be.read(kb, kc), be.read(vb, vc);
    const deq = (buf: Uint8Array) => {
      const q = new Int8Array(buf.buffer, 0, nValues), sc = new Float32Array(buf.buffer, scalesAt, NS * HKV * T);
      return Float32Array.from(q, (v, i) => Math.fround(v * sc[Math.floor(i / D)]!));
    };
    for (const [which, buf, off] of [["k", kb, H], ["v", vb, H + HKV]] as const) {
      const q = new Int8Array(buf.buffer, 0, nValues), sc = new Float32Array(buf.buffer, scalesAt, NS * HKV * T);
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < HKV; g++) {
          const x = qkvHost.subarray(r * ld + (off + g) * D, r * ld + (off + g + 1) * D);
          const amax = Math.max(...Array.from(x, Math.abs));
          const scale = Math.fround(amax / 127), crow = (slots[r]! * HKV + g) * T + pos[r]!;
          assert.equal(sc[crow], scale, `${which} scale of row ${r} head ${g}`);
          for (let d = 0; d < D; d++) {
            const want = scale > 0 ? Math.max(-127, Math.min(127, rintEven(Math.fround(x[d]! / scale)))) : 0;
            assert.equal(q[crow * D + d], want, `${which}[${r}, ${g}, ${d}]`);
          }
        }
      }
    }
    // attention over the i8 caches = attention over f32 caches holding q * scale, bit for bit
    be.write(kf, deq(kb)), be.write(vf, deq(vb));
    const att = (dt: number, k: Deno.PointerValue, v: Deno.PointerValue, out: Deno.PointerValue) =>
      be.check(s.lte_dec_attention(be.ctx, dt, qkv, ld, k, v, sl, ps, out, rows, H, HKV, D, NS, T, 0.25), "attention");
    att(DTypeCode.i8, kc, vc, out8);
    att(DTypeCode.f32, kf, vf, out32);
    const a = new Float32Array(rows * H * D), b = new Float32Array(rows * H * D);
    be.read(a, out8), be.read(b, out32);
    assert.deepEqual(a, b);
    // i8 is a cache dtype only: as a weight dtype it is refused with a clear status
    const st = s.lte_dec_norm(be.ctx, qkv, qkv, null, out8, 1, 4, 1e-5, 0);
    assert.equal(st, 0); // (norm takes no dtype: a control that the context is healthy)
    const bad = s.lte_dec_embed(be.ctx, DTypeCode.i8, sl, null, qkv, null, out8, 1, 4, 0, 4);
    assert.notEqual(bad, 0);
    assert.match(cString(s.lte_ctx_last_error(be.ctx)), /i8 is a KV-cache dtype only/);
  } finally {
    for (const p of [kc, vc, kf, vf, qkv, sl, ps, out8, out32]) be.free(p);
  }
});

Deno.test("engine kvDtype i8 (CPU): logits follow the full-sequence forward within the cache's rounding", async () => {
  const config = tinyLlamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 3 });
  const CPU: EngineOptions = { device: "cpu", dtype: "f32", sparse: false, maxBatch: 2, maxContext: 48 };
  const tokenizer = loadTokenizer({ type: "bytes" });
  const eng = Engine.fromArrays(config, model.toArrays(), { ...CPU, kvDtype: "i8" }, { tokenizer });
  const exact = Engine.fromArrays(config, model.toArrays(), CPU, { tokenizer });
  const last = (ids: number[]) =>
    noGrad(() =>
      scope(() => {
        const all = model.forward(Tensor.fromArray(Int32Array.from(ids), [1, ids.length])).toArray() as Float32Array;
        return all.slice((ids.length - 1) * config.vocab_size);
      })
    );
  const rel = (a: Float32Array, b: Float32Array) => {
    let n = 0, d = 0;
    for (let i = 0; i < a.length; i++) n = Math.max(n, Math.abs(a[i]! - b[i]!)), d = Math.max(d, Math.abs(b[i]!));
    return n / d;
  };
  try {
    const ids = [5, 77, 130, 9, 200, 31, 64];
    const a = eng.allocSlot()!, b = exact.allocSlot()!;
    const [p8, p32] = [await eng.prefill(a, ids, GREEDY), await exact.prefill(b, ids, GREEDY)];
    // greedy tokens agree on this model and prompt (no near-tie within the cache's rounding), so the
    // logits of both engines are those of the same sequence
    assert.equal(p8.token, p32.token);
    ids.push(p32.token);
    let worst = 0, worstExact = 0;
    for (let i = 0; i < 8; i++) {
      const [s8, s32] = [await eng.step([a], [GREEDY]), await exact.step([b], [GREEDY])];
      const ref = last(ids);
      worst = Math.max(worst, rel(await eng.lastLogits(1), ref));
      worstExact = Math.max(worstExact, rel(await exact.lastLogits(1), ref));
      assert.deepEqual(s8.tokens, s32.tokens, `step ${i}`);
      ids.push(s32.tokens[0]!);
    }
    assert.ok(worstExact < 1e-4, `the f32 cache: ${worstExact}`);
    // an 8-bit cache moves the logits, but only by its rounding (~1/254 of a row's largest value)
    assert.ok(worst > 0 && worst < 3e-2, `the i8 cache: ${worst}`);
  } finally {
    eng.dispose();
    exact.dispose();
    model.dispose();
  }
});

Deno.test("engine kvDtype: a bad value is an EngineError naming the option", () => {
  const config = tinyLlamaConfig();
  const base: EngineOptions = { device: "cpu", dtype: "f32", sparse: false, maxBatch: 1, maxContext: 16 };
  assert.throws(
    () =>
      Engine.random(config, { ...base, kvDtype: "i4" as "i8" }, {
        seed: 1,
        tokenizer: loadTokenizer({ type: "bytes" }),
      }),
    (e: unknown) => e instanceof EngineError && /kvDtype: "i4" is not supported/.test((e as Error).message),
  );
});

Deno.test("engine kvDtype i8 on cuda: a head size without a flash kernel is refused at load, naming it", () => {
  // checked before any device work, so this runs without a GPU too
  const config = { ...tinyLlamaConfig(), d_model: 48, n_head: 4, n_kv_head: 4 }; // head size 12
  const base: EngineOptions = { device: "cuda", dtype: "f16", sparse: false, maxBatch: 1, maxContext: 16 };
  assert.throws(
    () => Engine.random(config, { ...base, kvDtype: "i8" }, { seed: 1, tokenizer: loadTokenizer({ type: "bytes" }) }),
    (e: unknown) =>
      e instanceof EngineError &&
      /kvDtype: "i8" on cuda needs a head size .* \(this model's: 12\)/.test((e as Error).message),
  );
});
