/**
 * Shared by the kernel benches (bench/gemv_bench.ts, bench/fused_ffn_bench.ts): device buffers
 * of random or given values, and the time of one captured graph under a variant's environment (the
 * native launchers read their tuning variables when the graph is captured).
 *
 * @module
 */
import type { Backend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { withDecEnv } from "../ffi/tuning.ts";

/**
 * Device buffers for a bench: `random(dt, n, scale)` holds n values uniform in [-scale, scale]
 * (lte_dec_fill_random, a new seed per buffer: 1, 2, ...), `f32(a)` a copy of `a`.
 */
export function deviceBuffers(be: Backend): {
  random: (dt: number, n: number, scale: number) => Deno.PointerObject;
  f32: (a: Float32Array) => Deno.PointerObject;
} {
  let seed = 1n;
  return {
    random(dt, n, scale) {
      const p = be.alloc(n * (dt === DTypeCode.f32 ? 4 : 2));
      be.check(be.sym.lte_dec_fill_random(be.ctx, dt, p, BigInt(n), seed++, scale), "lte_dec_fill_random");
      return p;
    },
    f32(a) {
      const p = be.alloc(a.byteLength);
      be.write(p, a);
      return p;
    },
  };
}

export function median(a: number[]): number {
  const t = [...a].sort((x, y) => x - y);
  return t[Math.floor(t.length / 2)]!;
}

/**
 * Captures `enqueue` once as a CUDA graph under `env`, replays it 3 times to warm up, then takes 7
 * samples of `iters` replays (performance.now() around the launches and a final synchronize).
 * Returns the median microseconds per replay divided by `callsPerReplay`.
 */
export function timeGraph(
  be: Backend,
  enqueue: () => void,
  env: Record<string, string>,
  iters: number,
  callsPerReplay: number,
): number {
  const s = be.sym, ctx = be.ctx;
  const ck = (st: number, op: string) => be.check(st, op);
  const out = new BigUint64Array(1);
  withDecEnv(env, () => {
    ck(s.lte_graph_begin(ctx), "lte_graph_begin");
    try {
      enqueue();
    } finally {
      ck(s.lte_graph_end(ctx, out), "lte_graph_end");
    }
  });
  const g = Deno.UnsafePointer.create(out[0]!)!;
  try {
    for (let i = 0; i < 3; i++) ck(s.lte_graph_launch(ctx, g), "lte_graph_launch");
    be.synchronize();
    const samples: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = performance.now();
      for (let i = 0; i < iters; i++) ck(s.lte_graph_launch(ctx, g), "lte_graph_launch");
      be.synchronize();
      samples.push((performance.now() - t0) * 1000 / (iters * callsPerReplay));
    }
    return median(samples);
  } finally {
    ck(s.lte_graph_free(ctx, g), "lte_graph_free");
  }
}
