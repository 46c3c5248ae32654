/**
 * End-to-end decode benchmark of the engine (GPU machine): a LLaMA-2-7B-shaped model with RANDOM
 * fp16 weights generated on the device (32 layers, d 4096, 32 heads, d_ff 11008, vocab 32000),
 * batch 1, a 16-token prompt then 128 greedy decode steps, median of 5 runs:
 *   - dense; sparse at ~50% and ~90% FFN sparsity (random routers whose bias sets the active
 *     fraction; the measured fraction is printed);
 *   - batch 8 (one step decodes 8 sequences; sparse skips only experts no sequence needs);
 *   - device memory of the model with a 4,096-token cache at batch 1;
 *   - rows gen_*: the same batch-1 decode through `generate()` (what a caller streams), with
 *     lookahead (step t+1 launched before token t is read) on and off (`_nola`); tok/s counts
 *     from the first generated token to the last, prefill_ms is the time to the first token.
 * Prints tokens/s and achieved GB/s (weight bytes read per step x steps/s, as gpt-fast prints),
 * and writes JSON to $OUT/decode_bench.json (or --out FILE).
 *
 *   deno run -A bench/decode_bench.ts [--reps 5] [--new 128] [--prompt 16] [--context N] [--out file.json] [--small]
 *
 * @module
 */
import { Engine, type EngineOptions, GREEDY } from "../engine/mod.ts";
import { backendAvailable, getBackend } from "../ffi/backend.ts";
import { resolveModelConfig } from "../models/config.ts";
import { loadTokenizer } from "../text/tokenizer.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const REPS = Number(flag("--reps", "5"));
const NEW = Number(flag("--new", "128"));
// --prompt N: the decode steps then attend over N + step positions (long contexts: the attention's
// share of a step grows with them); N + --new must fit the 4,096-position model
const PROMPT = Number(flag("--prompt", "16"));
if (!(Number.isInteger(PROMPT) && PROMPT >= 1 && PROMPT + NEW + 8 <= 4096)) {
  throw new Error(`decode_bench: --prompt ${PROMPT} with --new ${NEW} must leave room in 4,096 positions`);
}
// --context N: the engine's cache length (default: just what the run needs), e.g. a server's 4,096
const CONTEXT = Math.min(4096, Math.max(PROMPT + NEW + 8, Number(flag("--context", "0"))));
const small = args.includes("--small");
const device = (flag("--device", "cuda")) as "cuda" | "cpu";
if (device === "cuda" && !backendAvailable("cuda")) {
  console.log(
    "decode_bench: no CUDA backend/GPU here; skipped (run it on the GPU machine, or pass --device cpu --small)",
  );
  Deno.exit(0);
}
const config = resolveModelConfig(
  small
    ? { family: "llama", vocab_size: 1000, n_layer: 2, d_model: 256, n_head: 4, d_ff: 512, max_seq: 4096 }
    : { family: "llama", vocab_size: 32000, n_layer: 32, d_model: 4096, n_head: 32, d_ff: 11008, max_seq: 4096 },
);
// byte tokenizer whose decode maps any id of the model's vocabulary onto a byte, so generate()
// can release text for the random model's ids (the gen_* rows)
const bytes = loadTokenizer({ type: "bytes" });
const tokenizer = new Proxy(bytes, {
  get: (t, k) =>
    k === "decode"
      ? (ids: number[], o?: { skipSpecial?: boolean }) => t.decode(ids.map((i) => i % 256), o)
      : Reflect.get(t, k),
});
const results: Record<string, unknown> = {
  model: small ? "small llama (smoke test)" : "LLaMA-2-7B shape, random fp16 weights generated on the device",
  config,
  prompt_tokens: PROMPT,
  context_tokens: CONTEXT,
  new_tokens: NEW,
  reps: REPS,
  sampling: "greedy",
};

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

interface RunStats {
  tok_s: number;
  tok_s_runs: number[];
  ms_per_token: number;
  prefill_ms: number;
  gb_s: number;
  active_fraction: number | null;
  bytes_per_token: number;
  /** K and V bytes a step's attention reads, averaged over the timed steps (all rows). */
  kv_bytes_per_step: number;
  /** Median device time per step with steps launched back to back (no host turnaround). */
  device_ms_per_step: number;
}

async function run(
  opts: EngineOptions,
  activeFraction: number | null,
  batch: number,
  viaGenerate = false,
): Promise<RunStats> {
  const eng = Engine.random(config, opts, { seed: 1, tokenizer, activeFraction: activeFraction ?? 0.5 });
  try {
    const rates: number[] = [], prefills: number[] = [];
    let activeSum = 0, activeN = 0;
    for (let rep = 0; viaGenerate && rep < REPS + 1; rep++) {
      // generate(): NEW + 1 tokens (the first from the prefill); rate over the NEW decode steps
      const prompt = Array.from({ length: PROMPT }, (_, j) => (j * 31 + rep) % config.vocab_size);
      const t0 = performance.now();
      let t1 = 0, n = 0;
      for await (const t of eng.generate(prompt, { maxTokens: NEW + 1 })) {
        if (n++ === 0) t1 = performance.now();
        else if (rep > 0 && eng.expertsPerLayer) {
          for (const c of t.activeExperts) activeSum += c / eng.expertsPerLayer, activeN++;
        }
      }
      const t2 = performance.now();
      if (rep === 0) continue;
      rates.push((n - 1) / ((t2 - t1) / 1000));
      prefills.push(t1 - t0);
    }
    for (let rep = 0; !viaGenerate && rep < REPS + 1; rep++) {
      const slots = Array.from({ length: batch }, () => eng.allocSlot()!);
      const t0 = performance.now();
      for (const [i, s] of slots.entries()) {
        const prompt = Array.from({ length: PROMPT }, (_, j) => (i * 97 + j * 31 + rep) % config.vocab_size);
        await eng.prefill(s, prompt, GREEDY);
      }
      const t1 = performance.now();
      const sp = slots.map(() => GREEDY);
      for (let n = 0; n < NEW; n++) {
        const r = await eng.step(slots, sp);
        if (rep > 0 && eng.expertsPerLayer) {
          for (const a of r.activeExperts) for (const c of a) activeSum += c / eng.expertsPerLayer, activeN++;
        }
      }
      const t2 = performance.now();
      for (const s of slots) eng.freeSlot(s);
      if (rep === 0) continue; // warm-up: graph capture, first launches
      rates.push((NEW * batch) / ((t2 - t1) / 1000));
      prefills.push(t1 - t0);
    }
    // device time per step without the host's per-token turnaround (steps launched back to back)
    const devMs: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const slots = Array.from({ length: batch }, () => eng.allocSlot()!);
      for (const [i, s] of slots.entries()) {
        await eng.prefill(
          s,
          Array.from({ length: PROMPT }, (_, j) => (i * 89 + j * 13 + rep) % config.vocab_size),
          GREEDY,
        );
      }
      devMs.push(await eng.timeSteps(slots, slots.map(() => GREEDY), NEW));
      for (const s of slots) eng.freeSlot(s);
    }
    const active = activeN ? activeSum / activeN : null;
    const wb = eng.weightBytes;
    // bytes read per step: all weights but the FFN, plus the active share of the FFN (batch 1)
    const bytes = active === null ? wb.total : wb.total - wb.ffnDense + wb.ffnDense * (batch === 1 ? active : 1);
    // K and V of every cached position, each layer, each row: PROMPT + i positions at step i
    // (an 8-bit cache: one byte per value plus its row's f32 scale)
    const kvDt = opts.kvDtype ?? opts.dtype ?? "f32", hd = config.d_model / config.n_head;
    const kvElem = kvDt === "f32" ? 4 : kvDt === "i8" ? 1 + 4 / hd : 2;
    const kvBytes = batch * config.n_layer * 2 * config.n_kv_head * hd * kvElem * (PROMPT + (NEW - 1) / 2);
    const tok = median(rates);
    return {
      tok_s: tok,
      tok_s_runs: rates,
      ms_per_token: 1000 / tok * batch,
      prefill_ms: median(prefills),
      gb_s: (bytes * tok / batch) / 1e9,
      active_fraction: active,
      bytes_per_token: bytes,
      kv_bytes_per_step: kvBytes,
      device_ms_per_step: median(devMs),
    };
  } finally {
    eng.dispose();
  }
}

const base: EngineOptions = { device, dtype: "f16", sparse: false, maxBatch: 1, maxContext: CONTEXT };
const be = getBackend(device);
results.device = be.deviceInfo();
const rows: string[] = [];
const line = (name: string, r: RunStats, ref?: RunStats, refKey = "dense") => {
  const s = `${name.padEnd(34)} ${r.tok_s.toFixed(1).padStart(8)} tok/s  ${r.ms_per_token.toFixed(3)} ms/step  ` +
    `${r.gb_s.toFixed(0).padStart(5)} GB/s  device ${r.device_ms_per_step.toFixed(3)} ms/step` +
    (r.active_fraction !== null ? `  active ${(100 * r.active_fraction).toFixed(1)}%` : "") +
    (ref ? `  ${(r.tok_s / ref.tok_s).toFixed(2)}x ${refKey.startsWith("dense") ? "dense" : refKey}` : "");
  rows.push(s);
  console.log(s);
};

async function attempt(
  key: string,
  name: string,
  fn: () => Promise<RunStats>,
  ref?: RunStats,
  refKey?: string,
): Promise<RunStats | null> {
  try {
    const r = await fn();
    line(name, r, ref, refKey);
    results[key] = ref ? { ...r, speedup: r.tok_s / ref.tok_s } : r;
    return r;
  } catch (e) {
    console.log(`${name}: FAILED ${(e as Error).message}`);
    rows.push(`${name}: FAILED ${(e as Error).message}`);
    results[key] = { error: String(e) };
    return null;
  }
}

/** Kernel variants are chosen by environment variables read when the step graph is captured. */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const prev = Object.fromEntries(Object.keys(env).map((k) => [k, Deno.env.get(k)]));
  for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(prev)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}
interface Variant {
  key: string;
  name: string;
  opts: Partial<EngineOptions>;
  active: number | null;
  batch: number;
  env?: Record<string, string>;
  /** Key of the dense run this one is compared with. */
  ref?: string;
  /** Timed through generate() (batch 1) instead of a step() loop. */
  generate?: boolean;
}
const sync = { syncRead: true };
/** The fused sparse FFN op's tuning knobs compared in the decode rows: [key suffix, label, env]. */
const FUSED_KNOBS: [string, string, Record<string, string>][] = [
  ["atomics", "float atomics (not deterministic)", { LTE_DEC_SFFN_REDUCE: "0" }],
  ["rsplit4", "route split 4", { LTE_DEC_SFFN_RSPLIT: "4" }],
  ["route1", "one-row route kernel", { LTE_DEC_SFFN_ROUTE: "2" }],
  ["cluster1", "no clusters", { LTE_DEC_SFFN_CLUSTER: "1" }],
  ["bulk", "bulk reductions", { LTE_DEC_SFFN_CLUSTER: "1", LTE_DEC_SFFN_ATOM: "1" }],
  ["cluster2_bulk", "clusters + bulk", { LTE_DEC_SFFN_ATOM: "1" }],
  ["p1d2", "2 items in flight", { LTE_DEC_SFFN_P1D: "2" }],
  ["csync", "release cluster exit", { LTE_DEC_SFFN_CSYNC: "1" }],
  // one block of 8 warps per SM: clusters of 4 / 8 fit at once there (fewer same-address adds into x)
  ["bps1_c2", "1 block per SM, clusters of 2", { LTE_DEC_SFFN_BPS2: "1", LTE_DEC_SFFN_CLUSTER: "2" }],
  ["bps1_c4", "1 block per SM, clusters of 4", { LTE_DEC_SFFN_BPS2: "1", LTE_DEC_SFFN_CLUSTER: "4" }],
  ["bps1_c8", "1 block per SM, clusters of 8", { LTE_DEC_SFFN_BPS2: "1", LTE_DEC_SFFN_CLUSTER: "8" }],
];
const VARIANTS: Variant[] = [
  { key: "dense", name: "dense batch 1 (default: PDL)", opts: {}, active: null, batch: 1 },
  { key: "dense_sync", name: "dense, blocking read", opts: sync, active: null, batch: 1 },
  { key: "sparse50", name: "sparse ~50% (default path)", opts: { sparse: true }, active: 0.5, batch: 1, ref: "dense" },
  {
    key: "sparse50_sync",
    name: "sparse ~50%, blocking read",
    opts: { sparse: true, ...sync },
    active: 0.5,
    batch: 1,
    ref: "dense_sync",
  },
  { key: "sparse90", name: "sparse ~90% (default path)", opts: { sparse: true }, active: 0.1, batch: 1, ref: "dense" },
  {
    key: "sparse90_sync",
    name: "sparse ~90%, blocking read",
    opts: { sparse: true, ...sync },
    active: 0.1,
    batch: 1,
    ref: "dense_sync",
  },
  {
    key: "sparse50_engine",
    name: "sparse ~50%, engine's kernels",
    opts: { sparse: true, ffnKernels: false },
    active: 0.5,
    batch: 1,
    ref: "dense",
  },
  {
    key: "sparse90_engine",
    name: "sparse ~90%, engine's kernels",
    opts: { sparse: true, ffnKernels: false },
    active: 0.1,
    batch: 1,
    ref: "dense",
  },
  { key: "dense_no_pdl", name: "dense, without PDL", opts: { pdl: false }, active: null, batch: 1, ref: "dense" },
  {
    key: "sparse50_pdl",
    name: "sparse ~50%, PDL",
    opts: { sparse: true, pdl: true },
    active: 0.5,
    batch: 1,
    ref: "dense",
  },
  {
    key: "sparse90_pdl",
    name: "sparse ~90%, PDL",
    opts: { sparse: true, pdl: true },
    active: 0.1,
    batch: 1,
    ref: "dense",
  },
  // the fused sparse FFN op (lte_dec_sparse_ffn; PDL on by default with it)
  ...[0.5, 0.1].flatMap((act): Variant[] => {
    const pct = act === 0.5 ? 50 : 90, f = { sparse: true, fusedFfn: true };
    return [
      {
        key: `sparse${pct}_fused`,
        name: `sparse ~${pct}%, fused FFN op`,
        opts: f,
        active: act,
        batch: 1,
        ref: "dense",
      },
      {
        key: `sparse${pct}_fused_sync`,
        name: `sparse ~${pct}%, fused, blocking read`,
        opts: { ...f, ...sync },
        active: act,
        batch: 1,
        ref: "dense_sync",
      },
      {
        key: `sparse${pct}_fused_nopdl`,
        name: `sparse ~${pct}%, fused, no PDL`,
        opts: { ...f, pdl: false },
        active: act,
        batch: 1,
        ref: "dense",
      },
      // tuning variants of the fused op (environment, cuda/cuda/decode_sffn.cuh)
      ...FUSED_KNOBS.map(([suffix, label, env]): Variant => ({
        key: `sparse${pct}_fused_${suffix}`,
        name: `sparse ~${pct}%, fused, ${label}`,
        opts: f,
        active: act,
        batch: 1,
        env,
        ref: "dense",
      })),
    ];
  }),
  // the engine's own masked GEMVs (router GEMV, mask, masked gate/up, transposed sparse down) with PDL
  ...[0.5, 0.1].flatMap((act): Variant[] => {
    const pct = act === 0.5 ? 50 : 90, o = { sparse: true, ffnKernels: false, fusedFfn: false, pdl: true };
    return [
      {
        key: `sparse${pct}_engine_pdl`,
        name: `sparse ~${pct}%, engine's kernels, PDL`,
        opts: o,
        active: act,
        batch: 1,
        ref: "dense",
      },
      {
        key: `sparse${pct}_engine_pdl_sync`,
        name: `sparse ~${pct}%, engine's kernels, PDL, blocking`,
        opts: { ...o, ...sync },
        active: act,
        batch: 1,
        ref: "dense_sync",
      },
    ];
  }),
  ...[0.5, 0.1].map((act): Variant => ({
    key: `sparse${act === 0.5 ? 50 : 90}_kernels`,
    name: `sparse ~${act === 0.5 ? 50 : 90}%, KERNELS ffn`,
    opts: { sparse: true, ffnKernels: true },
    active: act,
    batch: 1,
    ref: "dense",
  })),
  { key: "dense_batch4", name: "dense batch 4", opts: { maxBatch: 4 }, active: null, batch: 4 },
  {
    key: "sparse90_batch4_fused",
    name: "sparse ~90% batch 4, fused (union)",
    opts: { maxBatch: 4, sparse: true, fusedFfn: true },
    active: 0.1,
    batch: 4,
    ref: "dense_batch4",
  },
  {
    key: "sparse90_batch4_kernels",
    name: "sparse ~90% batch 4, KERNELS ffn",
    opts: { maxBatch: 4, sparse: true, ffnKernels: true },
    active: 0.1,
    batch: 4,
    ref: "dense_batch4",
  },
  {
    key: "dense_old_gemv",
    name: "dense, previous GEMV kernels",
    opts: {},
    active: null,
    batch: 1,
    env: { LTE_DEC_GEMV: "old" },
    ref: "dense",
  },
  {
    key: "dense_old_attn",
    name: "dense, previous attention (2 ops)",
    opts: {},
    active: null,
    batch: 1,
    env: { LTE_DEC_ATTN: "old" },
    ref: "dense",
  },
  // the sixth session's changes, each reversed (docs/engine.md: the carveout, the KV-cache prefetch)
  ...[
    ["dense", null, "dense"],
    ["sparse50", 0.5, "sparse ~50%"],
    ["sparse90", 0.1, "sparse ~90%"],
  ].flatMap(([key, act, label]): Variant[] => [
    {
      // the engine's carveout choice reversed: 100 % for dense, the driver's for the fused op
      key: act === null ? `${key}_co` : `${key}_codef`,
      name: `${label}, carveout ${act === null ? "100 %" : "driver's"}`,
      opts: act === null ? {} : { sparse: true },
      active: act as number | null,
      batch: 1,
      env: { LTE_DEC_CARVEOUT: act === null ? "100" : "-1" },
      ref: "dense",
    },
    {
      key: `${key}_attnpf0`,
      name: `${label}, no KV-cache prefetch`,
      opts: act === null ? {} : { sparse: true },
      active: act as number | null,
      batch: 1,
      env: { LTE_DEC_ATTN_PF: "0" },
      ref: "dense",
    },
  ]),
  {
    key: "dense_skip_attn",
    name: "dense, attention skipped (diag)",
    opts: {},
    active: null,
    batch: 1,
    env: { LTE_DEC_DIAG_SKIP_ATTN: "1" },
    ref: "dense",
  },
  // an upper bound for a router one op earlier (Deja Vu's lookahead predictor: a change to the method,
  // not built): the sparse block without its route kernel (LTE_DEC_DIAG_SFFN_NOROUTE: the FFN kernel
  // follows the O projection and takes the mask and x' an earlier call left, here the prefill's last
  // layer's; WRONG results), and also without the output adds (LTE_DEC_SFFN_ATOM=2 with the atomics)
  ...([[0.5, 50], [0.1, 90]] as const).flatMap(([act, pct]): Variant[] =>
    ([
      ["noroute", "no route kernel", { LTE_DEC_DIAG_SFFN_NOROUTE: "1" }],
      ["noroute_noadds", "no route kernel, no output adds", {
        LTE_DEC_DIAG_SFFN_NOROUTE: "1",
        LTE_DEC_SFFN_REDUCE: "0",
        LTE_DEC_SFFN_ATOM: "2",
      }],
    ] as const).map(([k, label, env]): Variant => ({
      key: `sparse${pct}_${k}`,
      name: `sparse ~${pct}%, ${label} (diag)`,
      opts: { sparse: true },
      active: act,
      batch: 1,
      env,
      ref: `sparse${pct}`,
    }))
  ),
  // the sparse block's fixed cost: about one expert of 344 active per token (bytes ~ nothing but the
  // router), and the same step without the block
  ...([["sparse1e", {}, "dense"], ["sparse1e_skip_sffn", { LTE_DEC_DIAG_SKIP_SFFN: "1" }, "sparse1e"]] as const).map((
    [key, env, ref],
  ): Variant => ({
    key,
    name: `sparse, ~1 expert of 344 active${key.endsWith("sffn") ? ", sparse FFN block skipped (diag)" : ""}`,
    opts: { sparse: true },
    active: 1 / 344,
    batch: 1,
    env,
    ref,
  })),
  // each op's share of a batch-1 step, boundaries included (diagnostics, WRONG results): the 7B
  // shape's GEMVs by (outputs x inputs), the attention and the sparse FFN block left out in turn
  // (LTE_DEC_DIAG_SKIP_LINEAR / _ATTN / _SFFN, cuda/cuda/decode.cu); step minus row = that op's cost
  ...([null, 0.5, 0.1] as const).flatMap((act): Variant[] =>
    ([
      ["qkv", "QKV", { LTE_DEC_DIAG_SKIP_LINEAR: "12288x4096" }],
      ["o", "O projection", { LTE_DEC_DIAG_SKIP_LINEAR: "4096x4096" }],
      ...(act === null
        ? [
          ["gateup", "gate/up", { LTE_DEC_DIAG_SKIP_LINEAR: "11008x4096" }],
          ["down", "down", { LTE_DEC_DIAG_SKIP_LINEAR: "4096x11008" }],
          ["layer_gemvs", "every layer GEMV", {
            LTE_DEC_DIAG_SKIP_LINEAR: "12288x4096,4096x4096,11008x4096,4096x11008",
          }],
        ]
        : [["sffn", "sparse FFN block", { LTE_DEC_DIAG_SKIP_SFFN: "1" }], [
          "attn",
          "attention",
          { LTE_DEC_DIAG_SKIP_ATTN: "1" },
        ]]),
      ["head", "LM head", { LTE_DEC_DIAG_SKIP_LINEAR: "32000x4096" }],
    ] as [string, string, Record<string, string>][]).map(([k, label, env]): Variant => ({
      key: `${act === null ? "dense" : `sparse${100 - 100 * act}`}_skip_${k}`,
      name: `${act === null ? "dense" : `sparse ~${100 - 100 * act}%`}, ${label} skipped (diag)`,
      opts: act === null ? {} : { sparse: true },
      active: act,
      batch: 1,
      env,
      ref: act === null ? "dense" : `sparse${100 - 100 * act}`,
    }))
  ),
  // the attention over long caches (--prompt runs), each knob reversed or moved: not split over
  // positions; the split's smallest chunk (default 128 positions); its blocks per SM
  // (LTE_DEC_ATTN_BPS, default 2); the loop not software-pipelined; the KV prefetch before the PDL
  // wait always (LTE_DEC_ATTN_PF: default while the call's cache fits in 16 MiB, 0 never:
  // dense_attnpf0 above)
  ...([
    ["nosplit", "not split", { LTE_DEC_ATTN_SPLIT: "0" }],
    ["chunk64", "in chunks of >= 64", { LTE_DEC_ATTN_CHUNK: "64" }],
    ["chunk256", "in chunks of >= 256", { LTE_DEC_ATTN_CHUNK: "256" }],
    ["bps1", "blocks per SM 1", { LTE_DEC_ATTN_BPS: "1" }],
    ["bps3", "blocks per SM 3", { LTE_DEC_ATTN_BPS: "3" }],
    ["nopipe", "not software-pipelined", { LTE_DEC_ATTN_PIPE: "0" }],
    ["pf1", "KV prefetch always", { LTE_DEC_ATTN_PF: "1" }],
  ] as const).map(([k, label, env]): Variant => ({
    key: `dense_attn_${k}`,
    name: `dense, attention ${label}`,
    opts: {},
    active: null,
    batch: 1,
    env,
    ref: "dense",
  })),
  // the 8-bit KV cache (kvDtype i8: int8 values + per-position scales; long --prompt runs)
  { key: "dense_kv_i8", name: "dense, 8-bit KV cache", opts: { kvDtype: "i8" }, active: null, batch: 1, ref: "dense" },
  {
    key: "sparse90_kv_i8",
    name: "sparse ~90%, 8-bit KV cache",
    opts: { sparse: true, kvDtype: "i8" },
    active: 0.1,
    batch: 1,
    ref: "dense",
  },
  {
    key: "dense_kv_i8_attn_nopipe",
    name: "dense, 8-bit KV cache, attention not software-pipelined",
    opts: { kvDtype: "i8" },
    active: null,
    batch: 1,
    env: { LTE_DEC_ATTN_PIPE: "0" },
    ref: "dense",
  },
  // generate(): lookahead (default on CUDA) vs off, nonblocking and blocking reads
  { key: "gen_dense", name: "gen dense, lookahead", opts: { lookahead: true }, active: null, batch: 1, generate: true },
  {
    key: "gen_dense_nola",
    name: "gen dense, no lookahead",
    opts: { lookahead: false },
    active: null,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_dense_sync",
    name: "gen dense, lookahead, blocking",
    opts: { lookahead: true, ...sync },
    active: null,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_dense_sync_nola",
    name: "gen dense, blocking, no lookahead",
    opts: { lookahead: false, ...sync },
    active: null,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_sparse50",
    name: "gen sparse ~50%, lookahead",
    opts: { sparse: true, lookahead: true },
    active: 0.5,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_sparse50_nola",
    name: "gen sparse ~50%, no lookahead",
    opts: { sparse: true, lookahead: false },
    active: 0.5,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_sparse90",
    name: "gen sparse ~90%, lookahead",
    opts: { sparse: true, lookahead: true },
    active: 0.1,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  {
    key: "gen_sparse90_nola",
    name: "gen sparse ~90%, no lookahead",
    opts: { sparse: true, lookahead: false },
    active: 0.1,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  },
  ...[0.5, 0.1].map((act): Variant => ({
    key: `gen_sparse${act === 0.5 ? 50 : 90}_engine_pdl`,
    name: `gen sparse ~${act === 0.5 ? 50 : 90}%, engine's kernels, PDL, lookahead`,
    opts: { sparse: true, ffnKernels: false, fusedFfn: false, pdl: true, lookahead: true },
    active: act,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  })),
  ...[0.5, 0.1].map((act): Variant => ({
    key: `gen_sparse${act === 0.5 ? 50 : 90}_fused`,
    name: `gen sparse ~${act === 0.5 ? 50 : 90}%, fused FFN op, lookahead`,
    opts: { sparse: true, fusedFfn: true, lookahead: true },
    active: act,
    batch: 1,
    generate: true,
    ref: "gen_dense",
  })),
  { key: "dense_batch8", name: "dense batch 8", opts: { maxBatch: 8 }, active: null, batch: 8 },
  { key: "dense_batch16", name: "dense batch 16", opts: { maxBatch: 16 }, active: null, batch: 16 },
  { key: "dense_batch2", name: "dense batch 2", opts: { maxBatch: 2 }, active: null, batch: 2 },
  // (6 rows: between KERNELS' rows and the masked GEMVs' MASKED_GEMV_MIN_ROWS, tenth session)
  { key: "dense_batch6", name: "dense batch 6", opts: { maxBatch: 6 }, active: null, batch: 6 },
  // batch 8 with the 8-bit KV cache (after dense_batch8, its reference)
  {
    key: "dense_batch8_kv_i8",
    name: "dense batch 8, 8-bit KV cache",
    opts: { maxBatch: 8, kvDtype: "i8" },
    active: null,
    batch: 8,
    ref: "dense_batch8",
  },
  // batch 8 at long contexts (--prompt): the attention not split, split at 4 blocks per SM, skipped
  ...([
    ["nosplit", "attention not split", { LTE_DEC_ATTN_SPLIT: "0" }],
    ["bps4", "attention split at 4 blocks per SM", { LTE_DEC_ATTN_BPS: "4" }],
    ["skip_attn", "attention skipped (diag)", { LTE_DEC_DIAG_SKIP_ATTN: "1" }],
  ] as const).map(([k, label, env]): Variant => ({
    key: `dense_batch8_attn_${k}`,
    name: `dense batch 8, ${label}`,
    opts: { maxBatch: 8 },
    active: null,
    batch: 8,
    env,
    ref: "dense_batch8",
  })),
  // the tensor-core GEMV (5..16 rows by default, seventh session) against the CUDA-core ones, and
  // on request for 1-2 rows
  ...[2, 4, 8, 16].map((b): Variant => ({
    key: `dense_batch${b}_cuda_cores`,
    name: `dense batch ${b}, CUDA-core GEMVs`,
    opts: { maxBatch: b },
    active: null,
    batch: b,
    env: { LTE_DEC_GEMV_MMA: "0" },
    ref: `dense_batch${b}`,
  })),
  ...[4, 8, 16].flatMap((b) =>
    // v2, v3: v0, v1 with interleaved chunks (whole 32-byte sectors per load instruction); the
    // default is v3 since the ninth session
    [0, 1, 2].map((v): Variant => ({
      key: `dense_batch${b}_mma_v${v}`,
      name: `dense batch ${b}, tensor-core GEMVs v${v}`,
      opts: { maxBatch: b },
      active: null,
      batch: b,
      // (batch 4 is below the default LTE_DEC_GEMV_MMA_MIN of 5: without it these rows would time
      // the CUDA-core kernels)
      env: { LTE_DEC_GEMV_MMA_V: String(v), ...(b < 5 ? { LTE_DEC_GEMV_MMA_MIN: "1" } : {}) },
      ref: `dense_batch${b}`,
    }))
  ),
  // batch 16: the down projection (x' of 16 rows at K 11008 does not fit) as two launches of 8
  // rows re-reading the weights, the default before the ninth session's column slices
  {
    key: "dense_batch16_no_kslices",
    name: "dense batch 16, down as 2 x 8 rows",
    opts: { maxBatch: 16 },
    active: null,
    batch: 16,
    env: { LTE_DEC_GEMV_MMA_KSPLIT: "0" },
    ref: "dense_batch16",
  },
  // O and down as K groups in one launch (LTE_DEC_GEMV_MMA_KG; default since the tenth session: 4
  // for calls of <= 8 rows, none above; kg1: never)
  ...[8, 16].flatMap((b) =>
    [1, 2, 4].map((kg): Variant => ({
      key: `dense_batch${b}_kg${kg}`,
      name: kg === 1 ? `dense batch ${b}, no K groups` : `dense batch ${b}, O and down in ${kg} K groups`,
      opts: { maxBatch: b },
      active: null,
      batch: b,
      env: { LTE_DEC_GEMV_MMA_KG: String(kg) },
      ref: `dense_batch${b}`,
    }))
  ),
  // the same two 16-row steps without PDL: is it the overlap that turns the K groups' win into a
  // loss at 16 rows (tenth session: faster kernels under Nsight Compute, a slower step in the graph)?
  ...[["", "column slices"], ["_kg4", "O and down in 4 K groups"]].map(([tag, label]): Variant => ({
    key: `dense_batch16${tag}_nopdl`,
    name: `dense batch 16, ${label}, no PDL`,
    opts: { maxBatch: 16, pdl: false },
    active: null,
    batch: 16,
    ...(tag ? { env: { LTE_DEC_GEMV_MMA_KG: "4" } } : {}),
    ref: `dense_batch16${tag}`,
  })),
  ...[1, 2].map((b): Variant => ({
    key: b === 1 ? "dense_mma" : `dense_batch${b}_mma`,
    name: `dense batch ${b}, tensor-core GEMVs`,
    opts: { maxBatch: b },
    active: null,
    batch: b,
    env: { LTE_DEC_GEMV_MMA_MIN: "1" },
    ref: b === 1 ? "dense" : `dense_batch${b}`,
  })),
  // CUDA-core GEMVs only: more rows than one launch holds at two blocks per SM (5+ rows, or 3+ at
  // K = 11008): one launch of up to 8 rows at one block per SM, then split launches re-reading the
  // weights, against each alone and the older 8-row kernels (sixth session)
  ...[4, 8, 16].flatMap((b): Variant[] =>
    ([
      ["split", "split launches only", { LTE_DEC_GEMV_WIDE: "0", LTE_DEC_GEMV_SPLIT: "1" }],
      ["wide", "one-block-per-SM launches only", { LTE_DEC_GEMV_WIDE: "1", LTE_DEC_GEMV_SPLIT: "0" }],
      ["older", "older 8-row GEMVs", { LTE_DEC_GEMV_WIDE: "0", LTE_DEC_GEMV_SPLIT: "0" }],
    ] as [string, string, Record<string, string>][]).map(([tag, label, env]): Variant => ({
      key: `dense_batch${b}_${tag}`,
      name: `dense batch ${b}, ${label}`,
      opts: { maxBatch: b },
      active: null,
      batch: b,
      env: { ...env, LTE_DEC_GEMV_MMA: "0" },
      ref: `dense_batch${b}_cuda_cores`,
    }))
  ),
  // the cuBLAS path (twelfth session, cuda/cuda/decode_blas.cuh: f16 calls of >= LTE_DEC_BLAS_MIN =
  // 8 rows by default): off (our tensor-core GEMVs, the default until then), and from 1 row
  ...[2, 4, 6, 8, 16].map((b): Variant => ({
    key: `dense_batch${b}_noblas`,
    name: `dense batch ${b}, no cuBLAS`,
    opts: { maxBatch: b },
    active: null,
    batch: b,
    env: { LTE_DEC_BLAS: "0" },
    ref: `dense_batch${b}`,
  })),
  ...[1, 2, 4, 6].map((b): Variant => ({
    key: b === 1 ? "dense_blas" : `dense_batch${b}_blas`,
    name: `dense batch ${b}, cuBLAS GEMMs`,
    opts: { maxBatch: b },
    active: null,
    batch: b,
    env: { LTE_DEC_BLAS_MIN: "1" },
    ref: b === 1 ? "dense" : `dense_batch${b}`,
  })),
  // sparse over the union of the batch's experts (random routers: 1 - (1 - a)^b of the experts
  // active at batch b), default path (Engine.sparseFfnPath), and each FFN path forced; _noblas:
  // the default path without cuBLAS (before the twelfth session)
  ...([[0.1, 4], [0.5, 4], [0.1, 6], [0.5, 6], [0.1, 8], [0.5, 8], [0.1, 16], [0.5, 16]] as [number, number][]).flatMap(
    ([act, b]): Variant[] => {
      const pct = act === 0.5 ? 50 : 90;
      const gemv = { ffnKernels: false, fusedFfn: false };
      return ([
        ["", "default path", {}],
        ["_kernels", "KERNELS ffn", { ffnKernels: true }],
        // (5+ rows: gate/up and down on tensor cores since the ninth session; _gemv_cc: as before)
        ["_gemv", "masked GEMVs", gemv],
        ["_gemv_cc", "masked GEMVs on CUDA cores", gemv, { LTE_DEC_GEMV_MMA_MASK: "0", LTE_DEC_TS_MMA: "0" }],
        // the union's down on the ninth session's ts_mma_kernel (ts_mma2_kernel since the tenth)
        ["_gemv_ts1", "masked GEMVs, ts_mma down", gemv, { LTE_DEC_TS_MMA: "1" }],
        ["_noblas", "default path, no cuBLAS", {}, { LTE_DEC_BLAS: "0" }],
        // masked dense on cuBLAS: as the fused op runs it (the router on a second stream), and as
        // the masked GEMVs run it (router, mask, gate/up in a row on one stream)
        ["_md", "masked dense (fused op)", { fusedFfn: true }],
        // masked dense with the router on the side stream (the twelfth session's way) instead of
        // its rows in the gate/up GEMM (LTE_DEC_SFFN_ROUTER_ROWS, thirteenth session)
        ["_md_side", "masked dense, side-stream router", { fusedFfn: true }, { LTE_DEC_BLAS_ROUTER_ROWS: "0" }],
        // diagnostics (WRONG results, timing only; LTE_DEC_DIAG_MD in decode_blas.cuh): masked
        // dense without the router and mask, and with the down GEMM over the (C, F) layout
        ["_md_norouter", "masked dense, DIAG no router", { fusedFfn: true }, {
          LTE_DEC_DIAG_MD: "1",
          LTE_DEC_BLAS_ROUTER_ROWS: "0",
        }],
        ["_md_nt", "masked dense, DIAG down as (C, F)", { fusedFfn: true }, { LTE_DEC_DIAG_MD: "2" }],
        ["_blas", "masked GEMVs on cuBLAS, router in line", gemv, { LTE_DEC_BLAS_MASKED: "1" }],
      ] as [string, string, Partial<EngineOptions>, Record<string, string>?][]).map(([tag, label, o, env]) => ({
        key: `sparse${pct}_batch${b}${tag}`,
        name: `sparse ~${pct}% batch ${b}, ${label} (union)`,
        opts: { maxBatch: b, sparse: true, ...o },
        active: act,
        batch: b,
        ...(env ? { env } : {}),
        ref: `dense_batch${b}`,
      }));
    },
  ),
];
const only = flag("--only", "").split(",").filter(Boolean);
const done = new Map<string, RunStats>();
for (const v of VARIANTS) {
  if (only.length && !only.includes(v.key)) continue;
  const ref = v.ref ? done.get(v.ref) : undefined;
  const r = await attempt(
    v.key,
    v.name,
    () => withEnv(v.env ?? {}, () => run({ ...base, ...v.opts }, v.active, v.batch, v.generate)),
    ref,
    v.ref,
  );
  if (r) done.set(v.key, r);
}
const dense = done.get("dense") ?? null;
for (const v of VARIANTS) {
  const r = done.get(v.key);
  if (!r || v.batch === 1 || r.active_fraction === null) continue;
  (results[v.key] as Record<string, unknown>).expected_union_active_fraction = 1 -
    Math.pow(1 - r.active_fraction, v.batch);
}
// device memory: the model + a 4,096-token cache at batch 1
try {
  be.emptyCache();
  const before = be.memStats();
  const eng = Engine.random(config, { ...base, maxContext: Math.min(4096, config.max_seq) }, { seed: 2, tokenizer });
  const after = be.memStats();
  const held = eng.deviceBytes;
  const used = before.deviceFree - after.deviceFree;
  results.memory_7b_4k = {
    engine_bytes: held,
    engine_gib: held / 2 ** 30,
    engine_gb: held / 1e9,
    device_free_drop_bytes: used,
    weights_gb: eng.weightBytes.total / 1e9,
  };
  const s = `memory: model + 4k cache ${(held / 1e9).toFixed(2)} GB (${(held / 2 ** 30).toFixed(2)} GiB); ` +
    `device free dropped by ${(used / 2 ** 30).toFixed(2)} GiB`;
  rows.push(s);
  console.log(s);
  eng.dispose();
} catch (e) {
  console.log(`memory: FAILED ${(e as Error).message}`);
  results.memory_7b_4k = { error: String(e) };
}

results.roofline_tok_s = dense ? 4.27e12 / dense.bytes_per_token : null;
console.log(`\nroofline (4.27 TB/s copy ceiling): ${Number(results.roofline_tok_s).toFixed(0)} tok/s dense`);
console.log(rows.join("\n"));
const outFile = flag("--out", Deno.env.get("OUT") ? `${Deno.env.get("OUT")}/decode_bench.json` : "");
if (outFile) Deno.writeTextFileSync(outFile, JSON.stringify(results, null, 2) + "\n");
