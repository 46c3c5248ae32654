/**
 * The decode step's attention op alone (GPU machine): `lte_dec_rope_attention` (RoPE, KV append and
 * attention over the cache in one launch) at the LLaMA-2-7B shape (32 q heads, 32 kv heads, head
 * size 128), f16 against the 8-bit cache (`LTE_DTYPE_I8`), after N cached positions per row, 1 or 8
 * rows (distinct slots). A CUDA graph of 8 launches over 8 distinct layers' caches (so the L2 holds
 * no layer's cache from its previous launch), replayed; prints us per launch and the K / V bytes
 * read per us (TB/s), each variant against the f16 cache's default in the same run.
 *
 *   deno run -A bench/attention_bench.ts [--ctx 1024,4000] [--rows 1,8] [--only default,i8]
 *     [--eager N]   no graph: N eager launches per config (for Nsight Compute's --kernel-name)
 *     [--out FILE]  JSON rows
 *
 * Variants (the env of the native launcher, read when the graph is captured): default and i8 (the
 * two caches), and for each cache the attention loop not software-pipelined (`_nopipe`). Results:
 * docs/results/attention_h200_session17.json (docs/engine.md "Seventeenth session").
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { backendAvailable, getBackend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { kvCacheBytes, kvI8ScalesOffset } from "../engine/mod.ts";
import { deviceBuffers, timeGraph } from "./_kernel_bench.ts";
import { withDecEnv } from "../ffi/tuning.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const list = (name: string, def: string) => flag(name, def).split(",").filter((x) => x !== "");
if (!backendAvailable("cuda")) {
  console.log("attention_bench: no CUDA backend/GPU here; skipped (run it on the GPU machine)");
  Deno.exit(0);
}
const be = getBackend("cuda");
const s = be.sym, ctx = be.ctx;
const ck = (st: number, op: string) => be.check(st, op);
type Ptr = Deno.PointerObject;
const LAYERS = 8, H = 32, HKV = 32, D = 128, THETA = 10000;
const LD = (H + 2 * HKV) * D;
const contexts = list("--ctx", "1024,4000").map(Number);
const rowCounts = list("--rows", "1,8").map(Number);
const eager = Number(flag("--eager", "0"));
const out = flag("--out", "");

type Kv = "f16" | "i8";
interface Variant {
  key: string;
  kv: Kv;
  env: Record<string, string>;
}
const VARIANTS: Variant[] = (["f16", "i8"] as const).flatMap((kv): Variant[] => {
  const base = kv === "f16" ? "default" : "i8";
  return [
    { key: base, kv, env: {} },
    { key: `${base}_nopipe`, kv, env: { LTE_DEC_ATTN_PIPE: "0" } },
  ];
});
const only = list("--only", VARIANTS.map((v) => v.key).join(","));
for (const k of only) {
  if (!VARIANTS.some((v) => v.key === k)) {
    throw new Error(`attention_bench: --only ${k}: no such variant (${VARIANTS.map((v) => v.key).join(", ")})`);
  }
}
const { random: randomBuf } = deviceBuffers(be);

/** One layer's K or V cache of `kv` for `slots` slots of `maxT` positions, random contents. */
function cache(kv: Kv, slots: number, maxT: number): Ptr {
  const rows = slots * HKV * maxT;
  if (kv === "f16") return randomBuf(DTypeCode.f16, rows * D, 1);
  // 8-bit: random int8 values (the bytes of random halves), then positive scales from 16-byte alignment
  const bytes = kvCacheBytes("i8", rows, D), at = kvI8ScalesOffset(rows, D);
  const p = be.alloc(bytes);
  ck(s.lte_dec_fill_random(ctx, DTypeCode.f16, p, BigInt(at / 2), 7n, 1), "lte_dec_fill_random");
  const sc = Deno.UnsafePointer.offset(p, at) as Ptr;
  ck(s.lte_dec_fill_random(ctx, DTypeCode.f32, sc, BigInt(rows), 8n, 0.01), "lte_dec_fill_random");
  return p;
}

interface Row {
  variant: string;
  kv: Kv;
  rows: number;
  positions: number;
  us: number;
  tb_s: number;
  vs_default: number | null;
}
const results: Row[] = [];
for (const R of rowCounts) {
  for (const n of contexts) {
    const maxT = n + 128;
    const qkv = randomBuf(DTypeCode.f32, R * LD, 1), o = be.alloc(4 * R * H * D);
    const slots = be.alloc(4 * R), pos = be.alloc(4 * R);
    be.write(slots, Int32Array.from({ length: R }, (_, i) => i));
    be.write(pos, new Int32Array(R).fill(n)); // n cached positions, the new one at n
    const layers: Record<Kv, [Ptr, Ptr][]> = { f16: [], i8: [] };
    for (const kv of ["f16", "i8"] as const) {
      if (!only.some((k) => VARIANTS.find((v) => v.key === k)!.kv === kv)) continue;
      for (let l = 0; l < LAYERS; l++) layers[kv].push([cache(kv, R, maxT), cache(kv, R, maxT)]);
    }
    be.synchronize();
    let ref: number | null = null;
    for (const v of VARIANTS.filter((v) => only.includes(v.key))) {
      const dt = v.kv === "f16" ? DTypeCode.f16 : DTypeCode.i8;
      const enqueue = () => {
        for (const [k, vc] of layers[v.kv]) {
          ck(
            s.lte_dec_rope_attention(
              ctx,
              dt,
              qkv,
              LD,
              k,
              vc,
              slots,
              pos,
              o,
              R,
              H,
              HKV,
              D,
              R,
              maxT,
              THETA,
              1 / Math.sqrt(D),
            ),
            "lte_dec_rope_attention",
          );
        }
      };
      if (eager > 0) {
        withDecEnv(v.env, () => {
          for (let i = 0; i < eager; i++) enqueue();
        });
        be.synchronize();
        console.log(`eager ${v.key} rows ${R} positions ${n}: ${eager} x ${LAYERS} launches`);
        continue;
      }
      // one eager pass first: a capture on a context whose attention scratch was never allocated
      // cannot allocate it and runs unsplit (docs/engine.md, sixteenth session)
      withDecEnv(v.env, enqueue);
      be.synchronize();
      const us = timeGraph(be, enqueue, v.env, 20, LAYERS);
      const bytes = R * 2 * HKV * n * D * (v.kv === "f16" ? 2 : 1 + 4 / D);
      if (v.key === "default") ref = us;
      const row: Row = {
        variant: v.key,
        kv: v.kv,
        rows: R,
        positions: n,
        us,
        tb_s: bytes / us / 1e6,
        vs_default: ref === null ? null : ref / us,
      };
      results.push(row);
      console.log(
        `rows ${R} positions ${String(n).padStart(5)} ${v.key.padEnd(14)} ${us.toFixed(2).padStart(8)} us  ${
          row.tb_s.toFixed(2)
        } TB/s K+V${row.vs_default === null ? "" : `  ${row.vs_default.toFixed(2)}x default`}`,
      );
    }
    for (const kv of ["f16", "i8"] as const) for (const [k, vc] of layers[kv]) be.free(k), be.free(vc);
    for (const p of [qkv, o, slots, pos]) be.free(p);
  }
}
if (out && !eager) {
  writeFileSync(
    out,
    JSON.stringify(
      {
        bench: "attention_bench",
        shape: { H, HKV, D, layers: LAYERS },
        device: { ...be.deviceInfo(), build_id: be.buildId },
        rows: results,
      },
      null,
      2,
    ),
  );
}
