/**
 * Weight-streaming GEMVs of one LLaMA-2-7B decode step, one kernel at a time (GPU machine):
 * the older kernels (LTE_DEC_GEMV=old) against the persistent ones of cuda/cuda/decode_gemv.cuh
 * and their tuning variants, in the same process.
 *
 * Shapes (fp16 weights, f32 activations, batch 1 unless said):
 *   qkv    N 12288, K 4096, RMSNorm x          o     N 4096, K 4096, accumulate + no bias
 *   gu     SwiGLU 2 x 11008 rows, K 4096, RMSNorm; masked 50 % / 90 % (expert size 32, 344 experts)
 *   down   N 4096, K 11008, accumulate (dense engine path)
 *   ts     lte_dec_linear_t_sparse, (11008, 4096) transposed, dense mask / 50 % / 90 %
 *   head   N 32000, K 4096, RMSNorm
 * Each measurement is one CUDA graph of 8 calls on 8 DISTINCT weight copies (far beyond the 60 MB
 * L2), captured with the variant's environment (the launchers read it at capture time): 3 warm-up
 * replays, then 7 samples of `--iters` replays each timed with performance.now() around the
 * launches and a final synchronize; us per call = median / (iters * 8). TB/s = weight bytes read
 * per call / time (the ideal is ~4.1-4.3 TB/s, PyTorch's device-to-device copy on this GPU).
 *
 *   deno run -A bench/gemv_bench.ts [--iters 20] [--out file.json] [--quick] [--mma] [--router]
 *     [--case NAME] [--rows R] [--variant NAME]
 * --mma: only 4 / 8 / 16 rows of each shape, CUDA-core kernels vs the tensor-core kernel's variants.
 * --router: the f32 router GEMV of the sparse engine at 2-16 rows.
 * --case / --rows / --variant: only the cases whose name contains NAME, with R rows, and the
 * variants named NAME exactly (e.g. one kernel under Nsight Compute: bench/profile_device.sh mma).
 *
 * @module
 */
import { backendAvailable, getBackend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { deviceBuffers, timeGraph } from "./_kernel_bench.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const ITERS = Number(flag("--iters", "20"));
const OUT = flag("--out", "");
const quick = args.includes("--quick");
const ONLY_CASE = flag("--case", ""), ONLY_ROWS = Number(flag("--rows", "0")), ONLY_VARIANT = flag("--variant", "");
if (!backendAvailable("cuda")) {
  console.log("gemv_bench: no CUDA backend/GPU here; skipped (run it on the GPU machine)");
  Deno.exit(0);
}
const be = getBackend("cuda");
const s = be.sym;
const ctx = be.ctx;
type Ptr = Deno.PointerObject;
const COPIES = 8;
const D = 4096, F = 11008, V = 32000, S = 32, E = F / S;

function ck(st: number, op: string): void {
  be.check(st, op);
}

const { random: randomBuf, f32: f32Buf } = deviceBuffers(be);
/** Expert mask with exactly round(active * E) experts on (random subset, fixed seed). */
function expertMask(rows: number, active: number, salt: number): Float32Array {
  const m = new Float32Array(rows * E);
  let st = 12345 + salt;
  const rnd = () => {
    st = (st * 1103515245 + 12345) % 2147483648;
    return st / 2147483648;
  };
  for (let r = 0; r < rows; r++) {
    const idx = Array.from({ length: E }, (_, i) => i);
    for (let i = E - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    for (let i = 0; i < Math.round(active * E); i++) m[r * E + idx[i]!] = 1;
  }
  return m;
}
function unionCount(m: Float32Array, rows: number): number {
  let c = 0;
  for (let e = 0; e < E; e++) {
    let on = false;
    for (let r = 0; r < rows; r++) on ||= m[r * E + e] !== 0;
    if (on) c++;
  }
  return c;
}

interface Case {
  name: string;
  rows: number;
  bytes: number; // weight bytes read per call
  /** Enqueues call number i (weights copy i). */
  enqueue: (i: number) => void;
  free: () => void;
}

function linearCase(
  name: string,
  rows: number,
  n: number,
  k: number,
  mode: number,
  act: number,
  acc: boolean,
  active = 1,
  dt: "f16" | "f32" = "f16",
): Case {
  const wrows = act === 1 ? 2 * n : n;
  const ws = Array.from({ length: COPIES }, () => randomBuf(DTypeCode[dt], wrows * k, 0.02));
  const x = randomBuf(DTypeCode.f32, rows * k, 1);
  const nw = randomBuf(DTypeCode.f32, k, 1);
  const y = randomBuf(DTypeCode.f32, rows * n, 1);
  const maskArr = active < 1 ? expertMask(rows, active, n + rows) : null;
  const mask = maskArr ? f32Buf(maskArr) : null;
  const frac = maskArr ? unionCount(maskArr, rows) / E : 1;
  return {
    name,
    rows,
    bytes: wrows * k * (dt === "f32" ? 4 : 2) * frac,
    enqueue: (i) =>
      ck(
        s.lte_dec_linear(
          ctx,
          DTypeCode[dt],
          ws[i]!,
          x,
          k,
          mode,
          nw,
          null,
          1e-5,
          null,
          mask,
          mask ? n : 0,
          mask ? S : 0,
          null,
          y,
          rows,
          n,
          k,
          acc ? 1 : 0,
          act,
        ),
        "lte_dec_linear",
      ),
    free: () => {
      for (const p of [...ws, x, nw, y]) be.free(p);
      if (mask) be.free(mask);
    },
  };
}

function tsCase(name: string, rows: number, active: number): Case {
  const ws = Array.from({ length: COPIES }, () => randomBuf(DTypeCode.f16, F * D, 0.02));
  const h = randomBuf(DTypeCode.f32, rows * F, 1);
  const maskArr = expertMask(rows, active, 7 + rows);
  const mask = f32Buf(maskArr);
  const y = randomBuf(DTypeCode.f32, rows * D, 1);
  return {
    name,
    rows,
    bytes: (unionCount(maskArr, rows) / E) * F * D * 2,
    enqueue: (i) =>
      ck(
        s.lte_dec_linear_t_sparse(ctx, DTypeCode.f16, ws[i]!, h, mask, null, y, rows, D, F, S),
        "lte_dec_linear_t_sparse",
      ),
    free: () => {
      for (const p of [...ws, h, mask, y]) be.free(p);
    },
  };
}

/** us per call of the case under the environment env (8 calls per graph replay). */
function time(c: Case, env: Record<string, string>): number {
  return timeGraph(
    be,
    () => {
      for (let i = 0; i < COPIES; i++) c.enqueue(i);
    },
    env,
    ITERS,
    COPIES,
  );
}

const GEMV_VARIANTS: [string, Record<string, string>][] = [
  ["old", { LTE_DEC_GEMV: "old" }],
  ["new", { LTE_DEC_GEMV: "new" }],
  ["new bps1", { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_BPS: "1" }],
  ["new ch8", { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_CH: "8" }],
  ["new strided", { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_ORDER: "strided" }],
  ["old pdl", { LTE_DEC_GEMV: "old", LTE_DEC_PDL: "1" }],
  ["new pdl", { LTE_DEC_GEMV: "new", LTE_DEC_PDL: "1" }],
];
const TS_VARIANTS: [string, Record<string, string>][] = [
  ["old", { LTE_DEC_GEMV: "old" }],
  ["new", { LTE_DEC_GEMV: "new" }],
  ["new u4", { LTE_DEC_GEMV: "new", LTE_DEC_TS_U: "4" }],
  ["new bps1", { LTE_DEC_GEMV: "new", LTE_DEC_TS_BPS: "1" }],
  ["new minrows1", { LTE_DEC_GEMV: "new", LTE_DEC_TS_MINROWS: "1" }],
  ["new minrows32", { LTE_DEC_GEMV: "new", LTE_DEC_TS_MINROWS: "32" }],
  ["new t512", { LTE_DEC_GEMV: "new", LTE_DEC_TS_THREADS: "512" }],
  ["new t512 minrows16", { LTE_DEC_GEMV: "new", LTE_DEC_TS_THREADS: "512", LTE_DEC_TS_MINROWS: "16" }],
  ["new pdl", { LTE_DEC_GEMV: "new", LTE_DEC_PDL: "1" }],
];

type Maker = () => Case;
const gemvCases: Maker[] = [
  () => linearCase("qkv rms", 1, 3 * D, D, 1, 0, false),
  () => linearCase("o acc", 1, D, D, 0, 0, true),
  () => linearCase("gate/up swiglu", 1, F, D, 1, 1, false),
  () => linearCase("gate/up 50%", 1, F, D, 1, 1, false, 0.5),
  () => linearCase("gate/up 90%", 1, F, D, 1, 1, false, 0.1),
  () => linearCase("down K=11008 acc", 1, D, F, 0, 0, true),
  () => linearCase("head rms", 1, V, D, 1, 0, false),
];
const batchCases: Maker[] = quick ? [] : [
  () => linearCase("qkv rms", 2, 3 * D, D, 1, 0, false),
  () => linearCase("qkv rms", 4, 3 * D, D, 1, 0, false),
  () => linearCase("gate/up swiglu", 2, F, D, 1, 1, false),
  () => linearCase("gate/up swiglu", 4, F, D, 1, 1, false),
  () => linearCase("down K=11008 acc", 2, D, F, 0, 0, true),
];
// batch 8: the older 8-row kernel vs split launches of the new one (weights re-read per launch)
const splitCases: Maker[] = quick ? [] : [
  () => linearCase("qkv rms", 8, 3 * D, D, 1, 0, false),
  () => linearCase("gate/up swiglu", 8, F, D, 1, 1, false),
  () => linearCase("down K=11008 acc", 8, D, F, 0, 0, true),
  () => tsCase("t_sparse 90%", 8, 0.1),
];
const SPLIT_VARIANTS: [string, Record<string, string>][] = [
  ["old", { LTE_DEC_GEMV: "old" }],
  ["new split", { LTE_DEC_GEMV: "new", LTE_DEC_GEMV_SPLIT: "1" }],
];
// 4-16 rows: the CUDA-core kernels against the tensor-core kernel's load shapes (seventh session;
// --mma runs only these)
const mmaCases: Maker[] = [4, 8, 16].flatMap((r): Maker[] => [
  () => linearCase("qkv rms", r, 3 * D, D, 1, 0, false),
  () => linearCase("o acc", r, D, D, 0, 0, true),
  () => linearCase("gate/up swiglu", r, F, D, 1, 1, false),
  () => linearCase("down K=11008 acc", r, D, F, 0, 0, true),
  () => linearCase("head rms", r, V, D, 1, 0, false),
  // the union's down projection (lte_dec_linear_t_sparse; tensor cores since the ninth session)
  // and the masked gate/up (out_mask: the union's tiles only), at ~50 % / ~10 % active per row
  ...(r > 4
    ? [
      () => tsCase("t_sparse 50%", r, 0.5),
      () => tsCase("t_sparse 90%", r, 0.1),
      () => linearCase("gate/up 50%", r, F, D, 1, 1, false, 0.5),
      () => linearCase("gate/up 90%", r, F, D, 1, 1, false, 0.1),
    ]
    : []),
]);
// (every tensor-core row sets LTE_DEC_GEMV_MMA_MIN=1: at 4 rows the default of 5 would time the
// CUDA-core kernel under the tensor-core label, as the ninth session's first run did)
const MMA_ON = { LTE_DEC_GEMV_MMA_MIN: "1" };
const MMA_VARIANTS: [string, Record<string, string>][] = [
  ["cuda cores", { LTE_DEC_GEMV_MMA: "0" }],
  // v2, v3: v0, v1 with interleaved chunks (whole 32-byte sectors per load instruction); v3 the
  // default since the ninth session
  ...[0, 2, 3].map((
    v,
  ): [string, Record<string, string>] => [`mma v${v}`, { ...MMA_ON, LTE_DEC_GEMV_MMA_V: String(v) }]),
  // the K split between warps forced (default: chosen per shape)
  ...[1, 2, 4, 8].map((f): [string, Record<string, string>] => [`mma v3 F${f}`, {
    ...MMA_ON,
    LTE_DEC_GEMV_MMA_V: "3",
    LTE_DEC_GEMV_MMA_F: String(f),
  }]),
  // 16 rows at K 11008: two launches of 8 rows instead of column slices (the default since the ninth)
  ["mma v3 no kslices", { ...MMA_ON, LTE_DEC_GEMV_MMA_V: "3", LTE_DEC_GEMV_MMA_KSPLIT: "0" }],
  // plain accumulating calls (O, down) as K groups in one launch (opt-in, ninth session)
  ["mma v3 KG2", { ...MMA_ON, LTE_DEC_GEMV_MMA_V: "3", LTE_DEC_GEMV_MMA_KG: "2" }],
  ["mma v3 KG4", { ...MMA_ON, LTE_DEC_GEMV_MMA_V: "3", LTE_DEC_GEMV_MMA_KG: "4" }],
  // the union's down on the ninth session's ts_mma_kernel (the default is ts_mma2_kernel since the
  // tenth): only the t_sparse rows differ from "mma v3"
  ["mma v3 ts1", { ...MMA_ON, LTE_DEC_GEMV_MMA_V: "3", LTE_DEC_TS_MMA: "1" }],
];
// --router: the sparse engine's f32 router (N = 344 experts, K 4096, RMSNorm) at 2-16 rows, on the
// block-per-output kernel (eleventh session: 8.5-8.9 us at 8 rows; a kernel that built x' once per
// block measured slower, docs/engine.md "Eleventh session")
const routerCases: Maker[] = [2, 4, 8, 16].map((r): Maker => () =>
  linearCase("router f32", r, E, D, 1, 0, false, 1, "f32")
);
const ROUTER_VARIANTS: [string, Record<string, string>][] = [["default", {}], ["pdl", { LTE_DEC_PDL: "1" }]];
const tsCases: Maker[] = [
  () => tsCase("t_sparse dense", 1, 1),
  () => tsCase("t_sparse 50%", 1, 0.5),
  () => tsCase("t_sparse 90%", 1, 0.1),
  ...(quick ? [] : [() => tsCase("t_sparse 50%", 2, 0.5), () => tsCase("t_sparse 90%", 4, 0.1)]),
];

interface Row {
  case: string;
  rows: number;
  variant: string;
  us: number;
  tb_s: number;
  bytes: number;
}
const rows: Row[] = [];
function run(makers: Maker[], variants: [string, Record<string, string>][]): void {
  for (const mk of makers) {
    const c = mk();
    try {
      if ((ONLY_CASE && !c.name.includes(ONLY_CASE)) || (ONLY_ROWS && c.rows !== ONLY_ROWS)) continue;
      for (const [vn, env] of variants) {
        if (ONLY_VARIANT && vn !== ONLY_VARIANT) continue;
        let us: number;
        try {
          us = time(c, env);
        } catch (e) {
          // a variant that cannot launch at this shape is a result too; the others still run
          console.log(`  ${c.name} R=${c.rows} ${vn}: FAILED ${(e as Error).message.split("\n")[0]}`);
          rows.push({ case: c.name, rows: c.rows, variant: vn, us: NaN, tb_s: NaN, bytes: c.bytes });
          continue;
        }
        rows.push({ case: c.name, rows: c.rows, variant: vn, us, tb_s: c.bytes / (us * 1e-6) / 1e12, bytes: c.bytes });
        console.log(`  ${c.name} R=${c.rows} ${vn}: ${us.toFixed(2)} us ${(c.bytes / us / 1e6).toFixed(2)} TB/s`);
      }
    } finally {
      c.free();
    }
  }
}
const info = be.deviceInfo();
if (args.includes("--router")) {
  run(routerCases, ROUTER_VARIANTS);
} else if (args.includes("--mma")) {
  run(mmaCases, MMA_VARIANTS);
} else {
  run(gemvCases, quick ? GEMV_VARIANTS.slice(0, 2) : GEMV_VARIANTS);
  run(batchCases, GEMV_VARIANTS.slice(0, 2));
  run(splitCases, SPLIT_VARIANTS);
  run(tsCases, quick ? TS_VARIANTS.slice(0, 2) : TS_VARIANTS);
}

// per-token estimate of the dense 7B GEMVs: 32 x (qkv + o + gate/up + down) + head
const pick = (name: string, v: string, r = 1) =>
  rows.find((x) => x.case === name && x.variant === v && x.rows === r)?.us;
const step: Record<string, number> = {};
for (const v of ["old", "new", "new pdl", "old pdl"]) {
  const parts = ["qkv rms", "o acc", "gate/up swiglu", "down K=11008 acc"].map((n) => pick(n, v));
  const head = pick("head rms", v);
  if (parts.every((p) => p !== undefined) && head !== undefined) {
    step[v] = (32 * parts.reduce((a, b) => a! + b!, 0)! + head) / 1000;
  }
}

if (OUT) {
  Deno.writeTextFileSync(
    OUT,
    JSON.stringify(
      {
        bench: "gemv_bench",
        device: info,
        dtype: "f16 weights, f32 activations",
        method: `graph of ${COPIES} calls on distinct weights, median of 7 x ${ITERS} replays`,
        rows,
        dense_step_gemv_ms: step,
      },
      null,
      1,
    ),
  );
}

// the table, last
const variantsOf = (cs: string, r: number) => rows.filter((x) => x.case === cs && x.rows === r);
const keys = [...new Set(rows.map((x) => `${x.case}|${x.rows}`))];
console.log("\n=== GEMV bench (H200 expected; f16 weights; us per call / TB/s; same run) ===");
for (const key of keys) {
  const [cs, r] = key.split("|");
  const vs = variantsOf(cs!, Number(r));
  const old = vs.find((x) => x.variant === "old")?.us;
  const cells = vs.map((x) =>
    `${x.variant} ${x.us.toFixed(1)}/${x.tb_s.toFixed(2)}${
      old && x.variant !== "old" ? ` (${(old / x.us).toFixed(2)}x)` : ""
    }`
  );
  console.log(`${cs!.padEnd(18)} R=${r} ${(vs[0]!.bytes / 1e6).toFixed(1).padStart(6)} MB | ${cells.join(" | ")}`);
}
console.log(
  `dense 7B step, GEMVs only (32 x (qkv+o+gate/up+down) + head): ` +
    Object.entries(step).map(([k, v]) => `${k} ${v.toFixed(3)} ms`).join(", "),
);
