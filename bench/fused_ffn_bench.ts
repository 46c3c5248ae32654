/**
 * The sparse FFN block of a LLaMA-2-7B decode step (GPU machine): the fused op
 * `lte_dec_sparse_ffn` (cuda/cuda/decode_sffn.cuh) and its tuning variants against, in the same
 * process, the engine's older chain of ops (router GEMV, router mask, masked gate/up GEMV,
 * transposed sparse down) and the dense GEMVs (gate/up SwiGLU + down) of the dense engine.
 *
 * Shapes: d 4096, d_ff 11008 = 344 experts of 32, fp16 weights, f32 activations and f32 router
 * (as the engine keeps them), RMSNorm inside the op. The router weights are zero and its bias +-1,
 * so each layer's active set is an exact random subset (the same for every row of a batch: the
 * union equals the per-row set). Each measurement is one CUDA graph of 8 blocks on 8 DISTINCT
 * weight copies (2.2 GB, far beyond the 60 MB L2), captured with the variant's environment: 3
 * warm-up replays, then 7 samples of `--iters` replays timed with performance.now() around the
 * launches and a final synchronize; us per block = median / (iters * 8). Bytes per block = router
 * (5.6 MB f32) + 3 x active neurons x 8 KiB; the byte ideal divides them by 4.11 TB/s (PyTorch's
 * device-to-device copy on the H200, docs/engine.md).
 *
 *   deno run -A bench/fused_ffn_bench.ts [--iters 20] [--quick] [--only "fused pdl,k2 1/SM"] [--active 0.1]
 *     [--trace] [--out file.json]
 *
 * --only keeps the named variants, --active the batch-1 case of that active fraction (for Nsight
 * Compute), --trace adds timeline records of traced launches (LTE_DEC_SFFN_TRACE; bench/sffn_timeline.ts).
 *
 * @module
 */
import { backendAvailable, getBackend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { deviceBuffers, timeGraph } from "./_kernel_bench.ts";
import { withDecEnv } from "../ffi/tuning.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const ITERS = Number(flag("--iters", "20"));
const quick = args.includes("--quick");
if (!backendAvailable("cuda")) {
  console.log("fused_ffn_bench: no CUDA backend/GPU here; skipped (run it on the GPU machine)");
  Deno.exit(0);
}
const be = getBackend("cuda");
const s = be.sym, ctx = be.ctx;
type Ptr = Deno.PointerObject;
const LAYERS = 8, D = 4096, F = 11008, S = 32, E = F / S, R_MAX = 4;
const COPY_TB_S = 4.11;
const ck = (st: number, op: string) => be.check(st, op);

const { random: randomBuf, f32: f32Buf } = deviceBuffers(be);

interface Layer {
  fc: Ptr;
  down: Ptr;
  router: Ptr;
  rbias: Ptr;
}
const layers: Layer[] = Array.from({ length: LAYERS }, () => ({
  fc: randomBuf(DTypeCode.f16, 2 * F * D, 1 / 64),
  down: randomBuf(DTypeCode.f16, F * D, 1 / 100),
  router: randomBuf(DTypeCode.f32, E * D, 0),
  rbias: be.alloc(4 * E),
}));
const ones = f32Buf(new Float32Array(D).fill(1));
const x = randomBuf(DTypeCode.f32, R_MAX * D, 1);
const xn = be.alloc(4 * R_MAX * D), mask = be.alloc(4 * R_MAX * E), counts = be.alloc(4 * R_MAX);
const logits = be.alloc(4 * R_MAX * E), h = be.alloc(4 * R_MAX * F);

/** Router biases: exactly round(active * E) experts of each layer at +1 (a fixed random subset). */
function setActive(active: number): void {
  let st = 12345;
  const rnd = () => (st = (st * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (const L of layers) {
    const idx = Array.from({ length: E }, (_, i) => i);
    for (let i = E - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    const b = new Float32Array(E).fill(-1);
    for (let i = 0; i < Math.round(active * E); i++) b[idx[i]!] = 1;
    be.write(L.rbias, b);
  }
}

type Enqueue = (L: Layer, rows: number) => void;
const fused: Enqueue = (L, rows) =>
  ck(
    s.lte_dec_sparse_ffn(
      ctx,
      DTypeCode.f16,
      x,
      1,
      ones,
      null,
      1e-5,
      L.router,
      L.rbias,
      0,
      L.fc,
      null,
      L.down,
      null,
      xn,
      mask,
      counts,
      rows,
      D,
      F,
      S,
      1,
    ),
    "lte_dec_sparse_ffn",
  );
const lin = (
  rows: number,
  w: Ptr,
  dt: number,
  xin: Ptr,
  mode: number,
  om: Ptr | null,
  bias: Ptr | null,
  y: Ptr,
  n: number,
  k: number,
  acc: number,
  act: number,
) =>
  ck(
    s.lte_dec_linear(
      ctx,
      dt,
      w,
      xin,
      k,
      mode,
      mode ? ones : null,
      null,
      1e-5,
      null,
      om,
      om ? F : 0,
      om ? S : 0,
      bias,
      y,
      rows,
      n,
      k,
      acc,
      act,
    ),
    "lte_dec_linear",
  );
const chain: Enqueue = (L, rows) => {
  lin(rows, L.router, DTypeCode.f32, x, 1, null, L.rbias, logits, E, D, 0, 0);
  ck(s.lte_dec_router_mask(ctx, logits, mask, counts, 1, rows, E, 0), "lte_dec_router_mask");
  lin(rows, L.fc, DTypeCode.f16, x, 1, mask, null, h, F, D, 0, 1);
  ck(s.lte_dec_linear_t_sparse(ctx, DTypeCode.f16, L.down, h, mask, null, x, rows, D, F, S), "lte_dec_linear_t_sparse");
};
const dense: Enqueue = (L, rows) => {
  lin(rows, L.fc, DTypeCode.f16, x, 1, null, null, h, F, D, 0, 1);
  lin(rows, L.down, DTypeCode.f16, h, 0, null, null, x, D, F, 1, 0);
};

/** us per FFN block of `fn` over the 8 layers at `rows` rows, under the environment env. */
function time(fn: Enqueue, rows: number, env: Record<string, string>): number {
  return timeGraph(
    be,
    () => {
      for (const L of layers) fn(L, rows);
    },
    env,
    ITERS,
    LAYERS,
  );
}

const P = { LTE_DEC_PDL: "1" };
const K1 = { ...P, LTE_DEC_SFFN_KERNEL: "1" };
const VARIANTS: [string, Enqueue, Record<string, string>][] = [
  ["fused", fused, {}],
  ["fused pdl", fused, P],
  // float atomics into x instead of the deterministic ordered sums (the default since the eighteenth session)
  ["atomics pdl", fused, { ...P, LTE_DEC_SFFN_REDUCE: "0" }],
  // tuning variants of the defaults (cuda/cuda/decode_sffn.cuh, sffn_tune: the staged route kernel,
  // clusters of 2 blocks with float4 atomics, 3 phase-1 items in flight per warp)
  ["p1d2 pdl", fused, { ...P, LTE_DEC_SFFN_P1D: "2" }],
  ["route1 pdl", fused, { ...P, LTE_DEC_SFFN_ROUTE: "2" }],
  ["route1 s8 pdl", fused, { ...P, LTE_DEC_SFFN_ROUTE: "2", LTE_DEC_SFFN_RSPLIT: "8" }],
  ["staged rsplit4 pdl", fused, { ...P, LTE_DEC_SFFN_RSPLIT: "4" }],
  ["cluster1 pdl", fused, { ...P, LTE_DEC_SFFN_CLUSTER: "1" }],
  ["release exit pdl", fused, { ...P, LTE_DEC_SFFN_CSYNC: "1" }],
  ["bulk pdl", fused, { ...P, LTE_DEC_SFFN_CLUSTER: "1", LTE_DEC_SFFN_ATOM: "1" }],
  ["cluster2 bulk pdl", fused, { ...P, LTE_DEC_SFFN_ATOM: "1" }],
  // diagnostics, not results: the route kernel does not load the router (the same masks here: the
  // bench's router weights are zero), and the block's output never reaches x (what the atomics cost)
  ["no router loads pdl", fused, { ...P, LTE_DEC_SFFN_DIAG: "1" }],
  ["no atomics pdl", fused, { ...P, LTE_DEC_SFFN_ATOM: "2" }],
  ...(quick ? [] : [
    ["k2 1/SM", fused, { ...P, LTE_DEC_SFFN_BPS2: "1" }],
    ["k2 3/SM", fused, { ...P, LTE_DEC_SFFN_BPS2: "3" }],
    ["ring t512 nps3", fused, { ...K1, LTE_DEC_SFFN_THREADS: "512", LTE_DEC_SFFN_NPS: "3", LTE_DEC_SFFN_SMEM: "216" }],
    ["ring nps2", fused, K1],
  ] as [string, Enqueue, Record<string, string>][]),
  ["older chain pdl", chain, P],
  ["dense gemv pdl", dense, P],
];
const only = flag("--only", "");
if (only) {
  const keep = only.split(",");
  VARIANTS.splice(0, VARIANTS.length, ...VARIANTS.filter(([vn]) => keep.includes(vn)));
}
const CASES: [number, number][] = flag("--active", "")
  ? [[1, Number(flag("--active", ""))]]
  : quick
  ? [[1, 0.5], [1, 0.1]]
  : [[1, 1], [1, 0.75], [1, 0.5], [1, 0.25], [1, 0.1], [2, 0.5], [2, 0.1], [4, 0.5], [4, 0.1]];

interface Row {
  rows: number;
  active: number;
  variant: string;
  us: number;
  tb_s: number;
  ideal_us: number;
}
const results: Row[] = [];
const info = be.deviceInfo();
console.log(`fused_ffn_bench on ${JSON.stringify(info).slice(0, 120)}`);
for (const [rows, active] of CASES) {
  setActive(active);
  const neurons = Math.round(active * E) * S;
  const bytes = E * D * 4 + 3 * neurons * D * 2;
  const ideal = bytes / (COPY_TB_S * 1e6);
  for (const [vn, fn, env] of VARIANTS) {
    if (vn.startsWith("dense") && active !== 1 && rows === 1 && results.some((r) => r.variant === vn && r.rows === 1)) {
      // dense does not depend on the sparsity: once per batch size
      continue;
    }
    let us = NaN;
    try {
      us = time(fn, rows, env);
    } catch (e) {
      console.log(`  R=${rows} active ${active} ${vn}: FAILED ${(e as Error).message.split("\n")[0]}`);
    }
    const dBytes = vn.startsWith("dense") ? 3 * F * D * 2 : bytes;
    const row = { rows, active, variant: vn, us, tb_s: dBytes / (us * 1e6), ideal_us: ideal };
    results.push(row);
    console.log(
      `  R=${rows} active ${(active * 100).toFixed(0)}% ${vn}: ${us.toFixed(2)} us (${row.tb_s.toFixed(2)} TB/s; ` +
        `byte ideal ${ideal.toFixed(1)} us)`,
    );
  }
}
// the short table last
console.log("\nFFN block, LLaMA-2-7B shape, fp16 weights, us per block (graph of 8 distinct layers):");
const vnames = [...new Set(results.map((r) => r.variant))];
console.log(["rows", "active", ...vnames, "byte ideal"].join(" | "));
for (const [rows, active] of CASES) {
  const cell = (vn: string) => {
    const r = results.find((q) =>
      q.rows === rows && q.variant === vn && (q.active === active || vn.startsWith("dense"))
    );
    return r ? r.us.toFixed(1) : "-";
  };
  const ideal = results.find((q) => q.rows === rows && q.active === active)?.ideal_us ?? NaN;
  console.log([rows, `${active * 100}%`, ...vnames.map(cell), ideal.toFixed(1)].join(" | "));
}
// --trace: 16 launches (the 8 layers twice) of the fused op per configuration outside a graph, with
// LTE_DEC_SFFN_TRACE=1: the native library prints one timeline record per block of both kernels
// ("sffn tl" lines, in the order of the "trace:" lines); bench/sffn_timeline.ts summarises them.
if (args.includes("--trace")) {
  const configs: [string, Record<string, string>][] = [
    ["two-phase", P],
    ["two-phase no atomics", { ...P, LTE_DEC_SFFN_ATOM: "2" }],
    ["two-phase no router loads", { ...P, LTE_DEC_SFFN_DIAG: "1" }],
  ];
  for (const active of [0.5, 0.1]) {
    setActive(active);
    for (const [vn, env] of configs) {
      console.log(`trace: active ${active * 100}% ${vn}`);
      withDecEnv({ ...env, LTE_DEC_SFFN_TRACE: "1" }, () => {
        for (let pass = 0; pass < 2; pass++) for (const L of layers) fused(L, 1);
        be.synchronize();
      });
    }
  }
}
const outFile = flag("--out", Deno.env.get("OUT") ? `${Deno.env.get("OUT")}/fused_ffn_bench.json` : "");
if (outFile) {
  Deno.writeTextFileSync(
    outFile,
    JSON.stringify({ device: info, shapes: { D, F, S, E, layers: LAYERS }, copy_tb_s: COPY_TB_S, results }, null, 1),
  );
}
