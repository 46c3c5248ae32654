/**
 * The decode engine: loads a GPT-2 or LLaMA checkpoint folder (dense, or LTE with `lte.json` +
 * routers applied in hard mode), keeps a preallocated KV cache of `maxBatch` slots ×
 * `maxContext` positions, and decodes with the native decode kernels (cuda/include/lte.h,
 * section "decode engine"; CPU reference cuda/cpu/decode.c, CUDA cuda/cuda/decode.cu).
 *
 * - Weights are converted once at load to `dtype` (f32, f16 or bf16); activations, norms, router
 *   weights and logits stay f32 and every sum accumulates in f32. The KV cache has the weight dtype,
 *   or `kvDtype` ("i8": int8 values with one f32 scale per position and kv head).
 * - One step = embed → per layer (fused norm+QKV GEMV, RoPE + KV append, attention over the
 *   cache, O GEMV + residual, [router GEMV + hard mask], fused norm+gate/up GEMV, fused act+down
 *   GEMV + residual) → final norm + head GEMV → sampling on the device. Token ids, positions,
 *   slots and sampling parameters live in device arrays; sampling writes the next input id and
 *   advances the position on the device, so on CUDA a step is captured once per batch size as a
 *   CUDA graph and replayed, with one asynchronous read of the sampled tokens per step.
 * - Lookahead (`generate()`, option `lookahead`, default on for CUDA): step t+1 is launched before
 *   the host reads token t, whose read (a stream-ordered copy into pinned memory, double-buffered
 *   per slot, waited for through its own event) then overlaps step t+1 on the device.
 * - Sparse (LTE) models: the router logits are computed from the FFN input, an expert is active iff
 *   sigmoid(logit) > tau (strict), and only the weights of experts some row of the step needs (the
 *   union) are read: by the fused op `lte_dec_sparse_ffn`, the masked GEMVs or KERNELS' kernels,
 *   picked per step (`sparseFfnPath`).
 *
 * Errors that come from the caller's input are `EngineError`s, raised before any device work, so
 * they never disturb the other slots.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Backend, getBackend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { readCheckpointConfig } from "../models/checkpoint.ts";
import type { ModelConfig } from "../models/config.ts";
import { paramSpecs } from "../models/decoder.ts";
import { readLteMeta, readRouters, routerBiasName, routerWeightName } from "../models/lte_artifacts.ts";
import { f32ToBf16, f32ToF16, readSafetensors } from "../models/safetensors.ts";
import { loadTokenizer, type Tokenizer } from "../text/tokenizer.ts";
import { SFFN_MAX_BATCH, SparseFfn } from "./ffn_kernels.ts";

/** Sampling parameters of one sequence. temperature 0 = greedy; topK 0 = off; topP 1 = off. */
export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}
/** How to build an engine. */
export interface EngineOptions {
  device: "cpu" | "cuda";
  dtype: "f32" | "f16" | "bf16";
  /** Apply the LTE routers (hard mode) and skip inactive experts; needs an LTE folder. */
  sparse: boolean;
  /** KV-cache slots (sequences decoded together). */
  maxBatch: number;
  /** Positions per slot (prompt + generated tokens). */
  maxContext: number;
  /**
   * Sparse FFN through KERNELS' gather kernels (`lte_sffn_*`, engine/ffn_kernels.ts: tensor cores)
   * for every step. LLaMA only; d_model % 64 == 0, expert_size % 16 == 0, maxBatch <= 16. Default:
   * CUDA steps of at least `KERNELS_MIN_ROWS` rows take it when the model fits those rules, except
   * f16 steps of at least `MASKED_GEMV_MIN_ROWS` rows, which take the masked GEMVs on tensor cores
   * (each the fastest there over a union of experts on the H200); false never uses it.
   */
  ffnKernels?: boolean;
  /**
   * Sparse FFN block as ONE op, `lte_dec_sparse_ffn` (norm, router, hard mask, gate/up + act and
   * down of the active experts' neurons straight into the residual; on CUDA a route kernel and one
   * fused kernel, cuda/cuda/decode_sffn.cuh), for CUDA steps of at most `FUSED_FFN_MAX_ROWS` rows.
   * Default: on for the CPU (equal to the older op chain bit for bit); on CUDA for steps of 1-2 rows,
   * and (twelfth session) for f16 steps of `MASKED_DENSE_MIN_ROWS`+ rows whose expected union of
   * experts is at least `MASKED_DENSE_MIN_UNION`: the op runs those as masked dense on cuBLAS.
   * Each (rows, path) pair has its own captured graph. true / false force it on / off.
   */
  fusedFfn?: boolean;
  /**
   * CUDA: capture the step with programmatic dependent launch between the engine's kernels (each
   * kernel is scheduled while its predecessor finishes and waits for it on the device, and the
   * GEMVs issue their first weight loads before that wait). Default: on, except for steps that take
   * KERNELS' sparse FFN (measured on the H200, docs/engine.md).
   */
  pdl?: boolean;
  /**
   * Read each step's sampled tokens with a blocking call on the calling thread instead of a
   * nonblocking one on a worker thread: no worker hand-off per token (about 0.1 ms per token on
   * the H200, 2-3% of a 7B step), but the event loop waits while the device computes the step.
   * For benchmarks and single-stream scripts; leave it off in servers. Default false.
   */
  syncRead?: boolean;
  /**
   * Decode one step ahead: step t+1 is launched (the device feeds token t back itself) before the
   * host has read token t, whose read (into pinned memory, double-buffered) then overlaps step t+1
   * on the device, hiding the per-token host turnaround. `generate()` does it per sequence;
   * `step()` (the server's batch loop) launches the next step for the same slots and sampling
   * before it waits for this one, and uses it when the next call asks for exactly those; when the
   * batch changes, the tokens of that step are kept per slot and returned by the slots' next
   * `step()` (a slot freed meanwhile drops its token). Tokens are identical either way; when a
   * sequence ends, one extra step has run whose KV write lies past the sequence end (never past
   * the context). Default: on for CUDA, off on the CPU (its ops run synchronously: nothing to
   * overlap).
   */
  lookahead?: boolean;
  /**
   * The KV cache's dtype. Default: the weights' `dtype`. "i8": an 8-bit cache, one f32 scale per
   * (slot, kv head, position) beside int8 values (cuda/include/lte.h, LTE_DTYPE_I8): about half the
   * bytes of an f16 cache (a long-context step reads its whole cache). CUDA: head sizes with a flash
   * kernel (powers of two, 8-256). H200, 7B shape: 1.02x the f16 cache's step at ~4k positions, 1.10x
   * at batch 8 after 2k-token prompts, 0.98x at short contexts (docs/engine.md "Seventeenth session").
   */
  kvDtype?: "f32" | "f16" | "bf16" | "i8";
}
/** Result of one decode step. */
export interface StepResult {
  /** Sampled token per slot, in the order of the `slots` argument. */
  tokens: number[];
  /** Per slot: per layer the number of active experts; [] when dense. */
  activeExperts: number[][];
}
/** One generated token. */
export interface GeneratedToken {
  id: number;
  /** Text released with this token (stop-sequence prefixes and partial UTF-8 are held back). */
  text: string;
  activeExperts: number[];
}
/** Options of `generate`. */
export type GenerateOptions = { maxTokens: number; stop?: string[]; signal?: AbortSignal } & Partial<SamplingParams>;

/** Bad input to the engine (prompt too long, no free slot, router mismatch, dtype...). */
export class EngineError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EngineError";
  }
}

/** Default sampling: greedy. */
export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1, seed: 0 };

const X = { PLAIN: 0, RMS: 1, LN: 2 } as const;
const ACT = { NONE: 0, SWIGLU: 1, GELU: 2 } as const;
/** lte.h LTE_DEC_SFFN_ROUTER_ROWS: OR-ed into the fused op's act when fc carries the router's rows. */
const SFFN_ROUTER_ROWS = 0x100;
const PREFILL_CHUNK = 16;

type Ptr = Deno.PointerObject;
type WDtype = "f32" | "f16" | "bf16";

interface LayerWeights {
  qkv: Ptr;
  qkvB: Ptr | null;
  o: Ptr;
  oB: Ptr | null;
  ln1: Ptr;
  ln1b: Ptr | null;
  ln2: Ptr;
  ln2b: Ptr | null;
  /** LLaMA: [gate; up] (2F, C); GPT-2: c_fc transposed (F, C). */
  fc: Ptr;
  fcB: Ptr | null;
  /** (C, F): HF down_proj as stored / GPT-2 c_proj transposed. */
  down: Ptr;
  downB: Ptr | null;
  router: Ptr | null;
  routerB: Ptr | null;
}

/** A token a launched step decoded for a slot, with the slot's state before it (to undo it). */
interface Decoded {
  token: number;
  activeExperts: number[];
  sp: SamplingParams;
  before: { pos: number; next: number };
}

/** A decode step launched by `step()`: its tokens are copied into a pinned staging block behind it. */
interface LaunchedStep {
  slots: number[];
  sps: SamplingParams[];
  buf: { ptr: Ptr; out: Int32Array };
  /** `#lastKey` right after the launch: the io block holds these rows as the device advanced them. */
  marker: string;
  /** Slots freed (or prefilled again) since the launch: their tokens are dropped. */
  dropped: Set<number>;
}

/**
 * A lookahead decode of one slot (`generate()` with `lookahead`). Step m produces generated token
 * m (token 0 comes from the prefill) at position `start + m - 1`; its sampled token is copied into
 * staging block m % 2 of the slot right behind the step.
 */
interface Chain {
  slot: number;
  sp: SamplingParams;
  /** Prompt length: step m writes its KV at position start + m - 1. */
  start: number;
  /** Steps allowed: m < limit (maxTokens, and the context). */
  limit: number;
  /** Highest step launched (0: none). */
  launched: number;
  /** Highest token whose value the host holds (read, or token 0), and that value. */
  known: number;
  knownToken: number;
  /** Tokens read ahead of their turn (the chain was interrupted: see #chainLaunch). */
  done: Map<number, { token: number; activeExperts: number[] }>;
  /** `#lastKey` while the io block holds this chain's row as the device advanced it. */
  marker: string;
  bufs: { ptr: Ptr; out: Int32Array }[];
}

/** Host-side weights for `Engine.fromArrays` (HF names and layouts, f32). */
export type WeightArrays = Map<string, Float32Array>;

/** Routers for a sparse engine built from arrays. */
export interface RouterSpec {
  expertSize: number;
  tau: number;
  /** `layers.{i}.router.weight` [E, C] and optional `layers.{i}.router.bias` [E]. */
  arrays: Map<string, Float32Array>;
}

function logit(tau: number): number {
  return Math.log(tau / (1 - tau));
}

/**
 * Byte offset of an 8-bit K (or V) cache's f32 scales: after its `rows` x `D` int8 values, from the
 * next 16-byte boundary (LTE_KV_I8_SCALES in cuda/include/lte.h).
 */
export function kvI8ScalesOffset(rows: number, D: number): number {
  return Math.ceil((rows * D) / 16) * 16;
}

/**
 * Bytes of one layer's K (or V) cache: `rows` cached positions (slots x kv heads x positions) of
 * `D` values in `dt`; "i8" adds one f32 scale per row after the int8 values (kvI8ScalesOffset).
 */
export function kvCacheBytes(dt: "f32" | "f16" | "bf16" | "i8", rows: number, D: number): number {
  if (dt === "i8") return kvI8ScalesOffset(rows, D) + rows * 4;
  return rows * D * (dt === "f32" ? 4 : 2);
}

function checkOptions(opts: EngineOptions, config: ModelConfig): void {
  if (opts.device !== "cpu" && opts.device !== "cuda") {
    throw new EngineError(`engine option device: "${opts.device}" is not supported (cpu, cuda)`);
  }
  if (opts.dtype !== "f32" && opts.dtype !== "f16" && opts.dtype !== "bf16") {
    throw new EngineError(`engine option dtype: "${opts.dtype}" is not supported (f32, f16, bf16)`);
  }
  if (opts.kvDtype !== undefined && !["f32", "f16", "bf16", "i8"].includes(opts.kvDtype)) {
    throw new EngineError(`engine option kvDtype: "${opts.kvDtype}" is not supported (f32, f16, bf16, i8)`);
  }
  const headDim = config.d_model / config.n_head;
  if (
    opts.device === "cuda" && opts.kvDtype === "i8" &&
    !(headDim >= 8 && headDim <= 256 && (headDim & (headDim - 1)) === 0)
  ) {
    throw new EngineError(
      `engine option kvDtype: "i8" on cuda needs a head size that is a power of two in [8, 256] (this model's: ${headDim})`,
    );
  }
  if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1 || opts.maxBatch > 256) {
    throw new EngineError(`engine option maxBatch: ${opts.maxBatch} must be an integer in [1, 256]`);
  }
  if (!Number.isInteger(opts.maxContext) || opts.maxContext < 1) {
    throw new EngineError(`engine option maxContext: ${opts.maxContext} must be a positive integer`);
  }
  if (opts.maxContext > config.max_seq) {
    throw new EngineError(
      `engine option maxContext: ${opts.maxContext} exceeds the model's context ${config.max_seq} (config.json)`,
    );
  }
  if (opts.ffnKernels && opts.sparse) {
    if (config.family !== "llama") throw new EngineError("engine option ffnKernels: supported for LLaMA models only");
    if (config.d_model % 64 !== 0) {
      throw new EngineError(`engine option ffnKernels: d_model ${config.d_model} % 64 != 0`);
    }
    if (opts.maxBatch > SFFN_MAX_BATCH) {
      throw new EngineError(`engine option ffnKernels: maxBatch ${opts.maxBatch} > ${SFFN_MAX_BATCH}`);
    }
  }
}

/** CUDA steps of at most this many rows may use `lte_dec_sparse_ffn` (its kernels hold 1, 2 or 4 rows). */
export const FUSED_FFN_MAX_ROWS = 4;
/**
 * CUDA steps of at least this many rows take KERNELS' sparse FFN by default (H200, 90 % sparse,
 * device time vs dense: batch 4 1.62x against 1.36x for the fused op; batch 8 2.13x against 1.16x
 * for the masked GEMVs).
 */
export const KERNELS_MIN_ROWS = 3;
/**
 * CUDA steps of at least this many rows with f16 weights take the engine's masked GEMVs instead
 * (on tensor cores: the masked gate/up over the union's tiles, the union's down on ts_mma2_kernel).
 * H200, tenth session, LLaMA-2-7B shape, device ms per step against KERNELS' kernels in the same
 * call: batch 8 6.29 / 6.36 (~50 % active), 5.20 / 5.31 (~10 %); batch 16 7.64 / 8.64, 7.31 / 8.14.
 * At batch 6 the two were within 2 % either way, so 5-7 rows keep KERNELS' kernels; bf16 weights
 * keep them too (their masked GEMVs run on CUDA cores).
 */
export const MASKED_GEMV_MIN_ROWS = 8;

/**
 * Twelfth session: on CUDA with cuBLAS, f16 steps of at least `MASKED_DENSE_MIN_ROWS` rows (the
 * native LTE_DEC_BLAS_MIN) whose expected union of active experts, 1 - (1 - a)^rows with a the
 * running fraction of active experts per token, is at least `MASKED_DENSE_MIN_UNION` take the
 * fused op `lte_dec_sparse_ffn`, which runs them as "masked dense" on cuBLAS (every expert's
 * gate/up and down rows at cuBLAS's bandwidth, the hard mask applied to h; since the thirteenth
 * session the router is hi + lo rows of the gate/up GEMM, `#routerRows`: cuda/cuda/decode_blas.cuh).
 * Smaller unions keep the union kernels above. H200, LLaMA-2-7B shape (docs/engine.md "Twelfth
 * session", "Thirteenth session": 0.98-1.00x dense at a full union, batch 4-16).
 */
export const MASKED_DENSE_MIN_ROWS = 4;
export const MASKED_DENSE_MIN_UNION = 0.55;

/** The three implementations of a sparse FFN block (see EngineOptions.fusedFfn / ffnKernels). */
export type SparseFfnPath = "fused" | "kernels" | "gemv";

/** The decode engine (see the module doc). */
export class Engine {
  readonly tokenizer: Tokenizer;
  readonly contextSize: number;
  readonly maxBatch: number;
  readonly nLayer: number;
  readonly expertsPerLayer: number | null;
  readonly modelName: string;
  readonly config: ModelConfig;
  readonly options: EngineOptions;
  /** Bytes of device memory held (weights + cache + scratch). */
  deviceBytes = 0;
  /** Bytes of weights read by one batch-1 decode step (dense: all; sparse: all but the FFN). */
  readonly weightBytes: { total: number; ffnPerExpert: number; ffnDense: number };

  #be: Backend;
  #wdt: number;
  #kvdt: number; // the KV cache's dtype code (kvDtype, default the weights')
  #allocs: Ptr[] = [];
  #layers: LayerWeights[] = [];
  #embed!: Ptr;
  #posEmbed: Ptr | null = null;
  #lnf!: Ptr;
  #lnfb: Ptr | null = null;
  #head!: Ptr;
  #kc: Ptr[] = [];
  #vc: Ptr[] = [];
  #expertSize = 0;
  #threshold = 0;
  #rows: number;
  // scratch
  #x!: Ptr;
  #qkv!: Ptr;
  #att!: Ptr;
  #h!: Ptr;
  #rlog: Ptr | null = null;
  #xn: Ptr | null = null;
  #sffn: SparseFfn | null = null;
  /** Running fraction of active experts per token (null before the first sparse step's counts). */
  #activity: number | null = null;
  /** The CUDA backend has the decode engine's cuBLAS path (lte_ctx_device_info "decode_cublas"). */
  #decodeCublas = false;
  /**
   * fc carries the router as f16 hi + lo rows after its gate/up rows (LTE_DEC_SFFN_ROUTER_ROWS), so
   * masked dense computes the router in its gate/up GEMM (thirteenth session): sparse f16 models on
   * CUDA with the cuBLAS path. 2 x E x C x 2 bytes per layer (5.6 MB at the 7B shape).
   */
  #routerRows = false;
  #mask: Ptr | null = null;
  #logits!: Ptr;
  #sscratch!: Ptr;
  // io block: ids, pos, slots (i32), temp (f32), topk (i32), topp (f32), seeds (u64) | out (i32), counts (i32)
  #io!: Ptr;
  #ioHost: ArrayBuffer;
  #inBytes: number;
  #outOff: number;
  #outBytes: number;
  #off: Record<"ids" | "pos" | "slots" | "temp" | "topk" | "topp" | "seeds" | "out" | "counts", number>;
  /** Captured step graphs by rows and sparse FFN path ("R:path"). */
  #graphs = new Map<string, Ptr>();
  #graphOk: boolean;
  #lastKey: string | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #slots: { used: boolean; pos: number; next: number }[];
  #disposed = false;
  /** Lookahead: per slot two pinned staging blocks for the sampled-token reads (lazily made). */
  #staging: ({ ptr: Ptr; out: Int32Array }[] | null)[];
  #chainSerial = 0;
  /** `step()` lookahead: the step launched for the next call, tokens kept for a slot's next call, staging. */
  #ahead: LaunchedStep | null = null;
  #stash = new Map<number, Decoded>();
  #stepBufs: { ptr: Ptr; out: Int32Array }[] | null = null;
  #stepBufNext = 0;

  private constructor(
    config: ModelConfig,
    opts: EngineOptions,
    tokenizer: Tokenizer,
    name: string,
    routers: { expertSize: number; tau: number; n: number } | null,
  ) {
    this.config = config;
    this.options = opts;
    this.tokenizer = tokenizer;
    this.modelName = name;
    this.contextSize = opts.maxContext;
    this.maxBatch = opts.maxBatch;
    this.nLayer = config.n_layer;
    this.expertsPerLayer = routers ? routers.n : null;
    this.#expertSize = routers?.expertSize ?? 0;
    this.#threshold = routers ? logit(routers.tau) : 0;
    try {
      this.#be = getBackend(opts.device);
    } catch (e) {
      throw new EngineError(
        `engine option device: the ${opts.device} backend is not available: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    this.#wdt = DTypeCode[opts.dtype];
    this.#kvdt = DTypeCode[opts.kvDtype ?? opts.dtype];
    this.#graphOk = opts.device === "cuda";
    this.#decodeCublas = opts.device === "cuda" && this.#be.deviceInfo().decode_cublas === true;
    this.#routerRows = routers !== null && this.#decodeCublas && opts.dtype === "f16" &&
      routers.expertSize % 4 === 0;
    this.#rows = Math.max(opts.maxBatch, PREFILL_CHUNK);
    this.#slots = Array.from({ length: opts.maxBatch }, () => ({ used: false, pos: 0, next: 0 }));
    this.#staging = Array.from({ length: opts.maxBatch }, () => null);
    const R = this.#rows, L = config.n_layer;
    this.#off = {
      ids: 0,
      pos: 4 * R,
      slots: 8 * R,
      temp: 12 * R,
      topk: 16 * R,
      topp: 20 * R,
      seeds: 24 * R,
      out: 32 * R,
      counts: 36 * R,
    };
    this.#inBytes = 32 * R;
    this.#outOff = 32 * R;
    this.#outBytes = 4 * R + 4 * R * L;
    this.#ioHost = new ArrayBuffer(this.#inBytes + this.#outBytes);
    const c = config, bpe = opts.dtype === "f32" ? 4 : 2;
    const hd = c.d_model / c.n_head, qkvW = (c.n_head + 2 * c.n_kv_head) * hd;
    const fcRows = c.family === "llama" ? 2 * c.d_ff : c.d_ff;
    const perLayer = (qkvW * c.d_model + c.d_model * c.d_model) * bpe;
    const ffn = (fcRows + c.d_ff) * c.d_model * bpe;
    const head = c.vocab_size * c.d_model * bpe;
    this.weightBytes = {
      total: L * (perLayer + ffn) + head,
      ffnDense: L * ffn,
      ffnPerExpert: routers ? ((fcRows / c.d_ff + 1) * routers.expertSize * c.d_model * bpe) : 0,
    };
  }

  // ------------------------------------------------------------------ loading

  /** Loads a model folder (config.json + model.safetensors + tokenizer; lte.json + routers when sparse). */
  static load(modelDir: string, opts: EngineOptions): Promise<Engine> {
    return Promise.resolve().then(() => Engine.#loadSync(modelDir, opts));
  }

  static #loadSync(dir: string, opts: EngineOptions): Engine {
    let config: ModelConfig;
    try {
      config = readCheckpointConfig(dir);
    } catch (e) {
      throw new EngineError((e as Error).message, { cause: e });
    }
    checkOptions(opts, config);
    const file = join(dir, "model.safetensors");
    if (!existsSync(file)) throw new EngineError(`${file}: not found`);
    const st = readSafetensors(file);
    const names = new Set(st.names());
    const arrays: WeightArrays = new Map();
    for (const s of paramSpecs(config)) {
      const alias = [s.name, s.name.startsWith("transformer.") ? s.name.slice("transformer.".length) : s.name].find((
        n,
      ) => names.has(n));
      if (!alias) {
        throw new EngineError(`${file}: missing tensor ${s.name} (config.json describes a ${config.family} model)`);
      }
      const info = st.info(alias);
      if (info.shape.join(",") !== s.shape.join(",")) {
        throw new EngineError(
          `${file}: tensor ${alias} has shape [${info.shape.join(", ")}], expected [${s.shape.join(", ")}]`,
        );
      }
      arrays.set(s.name, st.getF32(alias));
    }
    let routers: RouterSpec | null = null;
    if (opts.sparse) {
      let meta;
      try {
        meta = readLteMeta(dir, config);
      } catch (e) {
        throw new EngineError(`routers do not match the model: ${(e as Error).message}`, { cause: e });
      }
      if (!meta) throw new EngineError(`${join(dir, "lte.json")}: not found; sparse: true needs an LTE model folder`);
      if (meta.routers === null) {
        throw new EngineError(
          `${join(dir, "lte.json")}: key "routers" is null; run router-train before sparse decoding`,
        );
      }
      try {
        routers = { expertSize: meta.expert_size, tau: meta.tau, arrays: readRouters(dir, meta) };
      } catch (e) {
        throw new EngineError(`routers do not match the model: ${(e as Error).message}`, { cause: e });
      }
    }
    const tokenizer = Engine.#tokenizerOf(dir);
    const name = dir.replace(/\/+$/, "").split("/").pop() ?? dir;
    return Engine.fromArrays(config, arrays, opts, { tokenizer, name, routers });
  }

  static #tokenizerOf(dir: string): Tokenizer {
    const spec = join(dir, "lte_tokenizer.json");
    try {
      if (existsSync(spec)) {
        return loadTokenizer(JSON.parse(readFileSync(spec, "utf8")), { baseDir: dir, source: spec });
      }
      if (existsSync(join(dir, "tokenizer.json"))) {
        return loadTokenizer({ type: "hf", path: "tokenizer.json" }, { baseDir: dir });
      }
      if (existsSync(join(dir, "vocab.json")) && existsSync(join(dir, "merges.txt"))) {
        return loadTokenizer({ type: "gpt2", encoder: "vocab.json", merges: "merges.txt" }, { baseDir: dir });
      }
    } catch (e) {
      throw new EngineError(`${dir}: cannot load the tokenizer: ${(e as Error).message}`, { cause: e });
    }
    throw new EngineError(`${dir}: no tokenizer (lte_tokenizer.json, tokenizer.json or vocab.json + merges.txt)`);
  }

  /** An engine from host weights (HF names/layouts, f32), e.g. a model held in memory by a test. */
  static fromArrays(
    config: ModelConfig,
    arrays: WeightArrays,
    opts: EngineOptions,
    extra: { tokenizer: Tokenizer; name?: string; routers?: RouterSpec | null },
  ): Engine {
    checkOptions(opts, config);
    const r = extra.routers ?? null;
    let nExp = 0;
    if (opts.sparse && !r) throw new EngineError("sparse: true needs routers (an LTE model folder)");
    if (r && opts.sparse) {
      if (!(r.expertSize > 0) || config.d_ff % r.expertSize !== 0) {
        throw new EngineError(
          `routers do not match the model: expert_size ${r.expertSize} does not divide d_ff ${config.d_ff}`,
        );
      }
      if (!(r.tau > 0 && r.tau < 1)) throw new EngineError(`routers: tau ${r.tau} must be in (0, 1)`);
      nExp = config.d_ff / r.expertSize;
      for (let i = 0; i < config.n_layer; i++) {
        const w = r.arrays.get(routerWeightName(i));
        if (!w || w.length !== nExp * config.d_model) {
          throw new EngineError(
            `routers do not match the model: ${routerWeightName(i)} needs [${nExp}, ${config.d_model}] values ` +
              `(d_ff ${config.d_ff} / expert_size ${r.expertSize}), got ${w ? w.length : "none"}`,
          );
        }
        const b = r.arrays.get(routerBiasName(i));
        if (b && b.length !== nExp) {
          throw new EngineError(`routers do not match the model: ${routerBiasName(i)} needs ${nExp} values`);
        }
      }
    }
    const eng = new Engine(
      config,
      opts,
      extra.tokenizer,
      extra.name ?? "model",
      opts.sparse && r ? { expertSize: r.expertSize, tau: r.tau, n: nExp } : null,
    );
    try {
      eng.#upload(arrays, opts.sparse ? r : null);
      eng.#allocState();
    } catch (e) {
      eng.dispose();
      throw e;
    }
    return eng;
  }

  /**
   * An engine with random weights generated on the device (benchmarks: no host transfer of a
   * 7B-sized model). Norm weights are 1. `sparse`: random routers whose bias makes about
   * `activeFraction` of the experts active per token (the measured fraction is reported by steps).
   */
  static random(
    config: ModelConfig,
    opts: EngineOptions,
    extra: { seed: number; tokenizer: Tokenizer; expertSize?: number; activeFraction?: number; scale?: number },
  ): Engine {
    checkOptions(opts, config);
    const es = extra.expertSize ?? 32;
    const nExp = config.d_ff / es;
    const eng = new Engine(
      config,
      opts,
      extra.tokenizer,
      "random",
      opts.sparse ? { expertSize: es, tau: 0.5, n: nExp } : null,
    );
    try {
      eng.#randomWeights(extra.seed, extra.scale ?? 0.02, extra.activeFraction ?? 0.5);
      eng.#allocState();
    } catch (e) {
      eng.dispose();
      throw e;
    }
    return eng;
  }

  #alloc(bytes: number): Ptr {
    const p = this.#be.alloc(bytes);
    this.#allocs.push(p);
    this.deviceBytes += bytes;
    return p;
  }

  #check(status: number, op: string): void {
    this.#be.check(status, op);
  }

  /** f32 vector on the device (norm weights, biases, routers). */
  #f32(a: Float32Array): Ptr {
    const p = this.#alloc(a.byteLength);
    this.#be.write(p, a);
    return p;
  }

  /** A weight matrix in the engine dtype (`spare` bytes more allocated after it). */
  #w(a: Float32Array, spare = 0): Ptr {
    const dt = this.options.dtype as WDtype;
    const host = dt === "f32" ? a : dt === "f16" ? f32ToF16(a) : f32ToBf16(a);
    const p = this.#alloc(host.byteLength + spare);
    this.#be.write(p, host);
    return p;
  }

  /** Bytes of the router rows after fc's gate/up (or c_fc) rows: E hi rows and E lo rows, f16. */
  #routerRowBytes(): number {
    return this.#routerRows ? 2 * this.expertsPerLayer! * this.config.d_model * 2 : 0;
  }

  /** Writes the layer's router as f16 hi + lo rows after fc's rows (#routerRows). */
  #splitRouter(lw: LayerWeights): void {
    const c = this.config, n = this.expertsPerLayer! * c.d_model;
    const fcBytes = (c.family === "gpt2" ? 1 : 2) * c.d_ff * c.d_model * 2;
    const hi = this.#at(lw.fc, fcBytes), lo = this.#at(lw.fc, fcBytes + 2 * n);
    this.#check(
      this.#be.sym.lte_dec_convert_split(this.#be.ctx, this.#wdt, lw.router!, hi, lo, n),
      "lte_dec_convert_split",
    );
  }

  #upload(a: WeightArrays, routers: RouterSpec | null): void {
    const c = this.config, d = c.d_model, f = c.d_ff;
    const sparse = routers !== null;
    const get = (n: string) => {
      const v = a.get(n);
      if (!v) throw new EngineError(`weights: missing tensor ${n}`);
      return v;
    };
    const tr = (m: Float32Array, rows: number, cols: number) => {
      const out = new Float32Array(m.length);
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = m[i * cols + j]!;
      return out;
    };
    for (let i = 0; i < c.n_layer; i++) {
      let lw: LayerWeights;
      if (c.family === "gpt2") {
        const p = `transformer.h.${i}`;
        lw = {
          qkv: this.#w(tr(get(`${p}.attn.c_attn.weight`), d, 3 * d)),
          qkvB: this.#f32(get(`${p}.attn.c_attn.bias`)),
          o: this.#w(tr(get(`${p}.attn.c_proj.weight`), d, d)),
          oB: this.#f32(get(`${p}.attn.c_proj.bias`)),
          ln1: this.#f32(get(`${p}.ln_1.weight`)),
          ln1b: this.#f32(get(`${p}.ln_1.bias`)),
          ln2: this.#f32(get(`${p}.ln_2.weight`)),
          ln2b: this.#f32(get(`${p}.ln_2.bias`)),
          fc: this.#w(tr(get(`${p}.mlp.c_fc.weight`), d, f), this.#routerRowBytes()),
          fcB: this.#f32(get(`${p}.mlp.c_fc.bias`)),
          // c_proj is stored (F, C): the sparse path reads it as is, the dense GEMV wants (C, F)
          down: this.#w(sparse ? get(`${p}.mlp.c_proj.weight`) : tr(get(`${p}.mlp.c_proj.weight`), f, d)),
          downB: this.#f32(get(`${p}.mlp.c_proj.bias`)),
          router: null,
          routerB: null,
        };
      } else {
        const p = `model.layers.${i}`;
        const q = get(`${p}.self_attn.q_proj.weight`), k = get(`${p}.self_attn.k_proj.weight`);
        const v = get(`${p}.self_attn.v_proj.weight`);
        const qkv = new Float32Array(q.length + k.length + v.length);
        qkv.set(q, 0);
        qkv.set(k, q.length);
        qkv.set(v, q.length + k.length);
        const g = get(`${p}.mlp.gate_proj.weight`), u = get(`${p}.mlp.up_proj.weight`);
        const gu = new Float32Array(g.length + u.length);
        gu.set(g, 0);
        gu.set(u, g.length);
        lw = {
          qkv: this.#w(qkv),
          qkvB: null,
          o: this.#w(get(`${p}.self_attn.o_proj.weight`)),
          oB: null,
          ln1: this.#f32(get(`${p}.input_layernorm.weight`)),
          ln1b: null,
          ln2: this.#f32(get(`${p}.post_attention_layernorm.weight`)),
          ln2b: null,
          fc: this.#w(gu, this.#routerRowBytes()),
          fcB: null,
          // down_proj is stored (C, F): the sparse path wants it transposed once to (F, C)
          down: this.#w(sparse ? tr(get(`${p}.mlp.down_proj.weight`), d, f) : get(`${p}.mlp.down_proj.weight`)),
          downB: null,
          router: null,
          routerB: null,
        };
      }
      if (routers) {
        lw.router = this.#f32(routers.arrays.get(routerWeightName(i))!);
        const b = routers.arrays.get(routerBiasName(i));
        lw.routerB = b ? this.#f32(b) : null;
        if (this.#routerRows) this.#splitRouter(lw);
      }
      this.#layers.push(lw);
    }
    if (c.family === "gpt2") {
      this.#embed = this.#w(get("transformer.wte.weight"));
      this.#posEmbed = this.#w(get("transformer.wpe.weight"));
      this.#lnf = this.#f32(get("transformer.ln_f.weight"));
      this.#lnfb = this.#f32(get("transformer.ln_f.bias"));
      this.#head = this.#embed;
    } else {
      this.#embed = this.#w(get("model.embed_tokens.weight"));
      this.#lnf = this.#f32(get("model.norm.weight"));
      this.#head = c.tie_embeddings ? this.#embed : this.#w(get("lm_head.weight"));
    }
  }

  #randomWeights(seed: number, scale: number, active: number): void {
    const c = this.config, d = c.d_model, f = c.d_ff, hd = d / c.n_head;
    const bpe = this.options.dtype === "f32" ? 4 : 2;
    let s = BigInt(seed) * 1000003n;
    const rnd = (n: number, sc = scale, dt = this.#wdt, bytes = bpe, spare = 0): Ptr => {
      const p = this.#alloc(n * bytes + spare);
      s += 1n;
      this.#check(this.#be.sym.lte_dec_fill_random(this.#be.ctx, dt, p, n, s, sc), "lte_dec_fill_random");
      return p;
    };
    const ones = (n: number): Ptr => this.#f32(new Float32Array(n).fill(1));
    const zeros = (n: number): Ptr => this.#f32(new Float32Array(n));
    const qkvW = (c.n_head + 2 * c.n_kv_head) * hd;
    const g2 = c.family === "gpt2";
    // router: logits ~ N(b, 1)-ish for a normalised x (|x|^2 ~ d); bias sets the active fraction
    const nExp = this.expertsPerLayer ?? 0;
    const rScale = Math.sqrt(3 / d);
    const bias = probit(active);
    for (let i = 0; i < c.n_layer; i++) {
      this.#layers.push({
        qkv: rnd(qkvW * d),
        qkvB: g2 ? zeros(qkvW) : null,
        o: rnd(d * d),
        oB: g2 ? zeros(d) : null,
        ln1: ones(d),
        ln1b: g2 ? zeros(d) : null,
        ln2: ones(d),
        ln2b: g2 ? zeros(d) : null,
        fc: rnd((g2 ? 1 : 2) * f * d, scale, this.#wdt, bpe, this.#routerRowBytes()),
        fcB: g2 ? zeros(f) : null,
        down: rnd(d * f),
        downB: g2 ? zeros(d) : null,
        router: nExp ? rnd(nExp * d, rScale, DTypeCode.f32, 4) : null,
        routerB: nExp ? this.#f32(new Float32Array(nExp).fill(bias)) : null,
      });
      if (this.#routerRows) this.#splitRouter(this.#layers[i]!);
    }
    this.#embed = rnd(c.vocab_size * d, 1);
    if (g2) this.#posEmbed = rnd(c.max_seq * d, 0.1);
    this.#lnf = ones(d);
    this.#lnfb = g2 ? zeros(d) : null;
    this.#head = c.tie_embeddings ? this.#embed : rnd(c.vocab_size * d);
  }

  #allocState(): void {
    const c = this.config, R = this.#rows, d = c.d_model, hd = d / c.n_head;
    const kvBytes = kvCacheBytes(
      this.options.kvDtype ?? this.options.dtype,
      this.maxBatch * c.n_kv_head * this.contextSize,
      hd,
    );
    for (let i = 0; i < c.n_layer; i++) {
      this.#kc.push(this.#alloc(kvBytes));
      this.#vc.push(this.#alloc(kvBytes));
    }
    const qkvW = (c.n_head + 2 * c.n_kv_head) * hd;
    this.#x = this.#alloc(4 * R * d);
    this.#qkv = this.#alloc(4 * R * qkvW);
    this.#att = this.#alloc(4 * R * d);
    this.#h = this.#alloc(4 * R * c.d_ff);
    // KERNELS' sparse FFN: explicit (ffnKernels: true) or, by default, on CUDA whenever the model
    // fits its shape rules (it measured faster on the H200: docs/engine.md)
    const c0 = this.config, o0 = this.options;
    const fits = c0.family === "llama" && c0.d_model % 64 === 0 && this.#expertSize % 16 === 0 &&
      o0.maxBatch <= SFFN_MAX_BATCH;
    if (o0.ffnKernels && this.expertsPerLayer && this.#expertSize % 16 !== 0) {
      throw new EngineError(`engine option ffnKernels: expert_size ${this.#expertSize} % 16 != 0`);
    }
    if (this.expertsPerLayer) this.#xn = this.#alloc(4 * R * d);
    if (this.expertsPerLayer && (o0.ffnKernels ?? (o0.device === "cuda" && fits))) {
      this.#sffn = new SparseFfn(this.#be, this.options.dtype, {
        dModel: d,
        nExperts: this.expertsPerLayer,
        expertSize: this.#expertSize,
        act: "silu_mul",
        maxBatch: R,
      }, { activations: "f32" });
    }
    if (this.expertsPerLayer) {
      this.#rlog = this.#alloc(4 * R * this.expertsPerLayer);
      this.#mask = this.#alloc(4 * R * this.expertsPerLayer);
    }
    this.#logits = this.#alloc(4 * R * c.vocab_size);
    this.#sscratch = this.#alloc(4 * R * c.vocab_size);
    this.#io = this.#alloc(this.#inBytes + this.#outBytes);
    this.#be.write(this.#io, new Uint8Array(this.#inBytes + this.#outBytes));
  }

  // ------------------------------------------------------------------ the step

  #at(p: Ptr, bytes: number): Ptr {
    return Deno.UnsafePointer.offset(p, bytes) as Ptr;
  }

  /** Enqueues one pass over `rows` io rows; logits/sampling for rows [headRow, headRow + headRows). */
  #enqueue(rows: number, headRow: number, headRows: number, advance: boolean): void {
    const s = this.#be.sym, ctx = this.#be.ctx, c = this.config, o = this.#off;
    const d = c.d_model, hd = d / c.n_head, f = c.d_ff, wdt = this.#wdt;
    const qkvW = (c.n_head + 2 * c.n_kv_head) * hd;
    const g2 = c.family === "gpt2";
    const normMode = g2 ? X.LN : X.RMS;
    const io = this.#io;
    const ids = this.#at(io, o.ids), pos = this.#at(io, o.pos), slots = this.#at(io, o.slots);
    const ck = (st: number, op: string) => {
      if (st !== 0) this.#check(st, op);
    };
    ck(
      s.lte_dec_embed(ctx, wdt, ids, pos, this.#embed, this.#posEmbed, this.#x, rows, c.vocab_size, c.max_seq, d),
      "lte_dec_embed",
    );
    const E = this.expertsPerLayer ?? 0, S = this.#expertSize;
    const lin = (
      wd: number,
      w: Ptr,
      x: Ptr,
      mode: number,
      nw: Ptr | null,
      nb: Ptr | null,
      masks: [Ptr | null, Ptr | null],
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
          wd,
          w,
          x,
          k,
          mode,
          nw,
          nb,
          c.norm_eps,
          masks[0],
          masks[1],
          f,
          S,
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
    const none: [null, null] = [null, null];
    for (let l = 0; l < c.n_layer; l++) {
      const w = this.#layers[l]!;
      lin(wdt, w.qkv, this.#x, normMode, w.ln1, w.ln1b, none, w.qkvB, this.#qkv, qkvW, d, 0, ACT.NONE);
      const theta = g2 ? 0 : c.rope_theta, scale = 1 / Math.sqrt(hd);
      if (advance) {
        // a decode step: every row is its own slot, so RoPE + append + attention is one launch
        ck(
          s.lte_dec_rope_attention(
            ctx,
            this.#kvdt,
            this.#qkv,
            qkvW,
            this.#kc[l]!,
            this.#vc[l]!,
            slots,
            pos,
            this.#att,
            rows,
            c.n_head,
            c.n_kv_head,
            hd,
            this.maxBatch,
            this.contextSize,
            theta,
            scale,
          ),
          "lte_dec_rope_attention",
        );
      } else {
        ck(
          s.lte_dec_rope_append(
            ctx,
            this.#kvdt,
            this.#qkv,
            qkvW,
            this.#kc[l]!,
            this.#vc[l]!,
            slots,
            pos,
            rows,
            c.n_head,
            c.n_kv_head,
            hd,
            this.maxBatch,
            this.contextSize,
            theta,
          ),
          "lte_dec_rope_append",
        );
        ck(
          s.lte_dec_attention(
            ctx,
            this.#kvdt,
            this.#qkv,
            qkvW,
            this.#kc[l]!,
            this.#vc[l]!,
            slots,
            pos,
            this.#att,
            rows,
            c.n_head,
            c.n_kv_head,
            hd,
            this.maxBatch,
            this.contextSize,
            scale,
          ),
          "lte_dec_attention",
        );
      }
      lin(wdt, w.o, this.#att, X.PLAIN, null, null, none, w.oB, this.#x, d, d, 1, ACT.NONE);
      const path = E > 0 ? this.sparseFfnPath(rows) : null;
      if (path === "fused") {
        // the whole sparse FFN block in one op: x += down(act(gate/up(norm x))) over active experts
        ck(
          s.lte_dec_sparse_ffn(
            ctx,
            wdt,
            this.#x,
            normMode,
            w.ln2,
            w.ln2b,
            c.norm_eps,
            w.router,
            w.routerB,
            this.#threshold,
            w.fc,
            w.fcB,
            w.down,
            w.downB,
            this.#xn!,
            this.#mask!,
            this.#at(io, o.counts + 4 * l * this.#rows),
            rows,
            d,
            f,
            S,
            (g2 ? ACT.GELU : ACT.SWIGLU) | (this.#routerRows ? SFFN_ROUTER_ROWS : 0),
          ),
          "lte_dec_sparse_ffn",
        );
        continue;
      }
      const k = path === "kernels" ? this.#sffn : null;
      if (k) {
        // KERNELS' sparse FFN: norm -> route (f32 routers) -> gather gate/up -> down into x
        const bpe = this.options.dtype === "f32" ? 4 : 2;
        ck(s.lte_dec_norm(ctx, this.#x, w.ln2, w.ln2b, this.#xn!, rows, d, c.norm_eps, g2 ? 1 : 0), "lte_dec_norm");
        ck(
          s.lte_sffn_route(
            ctx,
            DTypeCode.f32,
            this.#xn!,
            w.router,
            w.routerB,
            k.logits,
            k.bits,
            k.list,
            k.counts,
            k.workspace,
            rows,
            d,
            E,
          ),
          "lte_sffn_route",
        );
        ck(
          s.lte_sffn_gate_up(
            ctx,
            wdt,
            DTypeCode.f32,
            0,
            this.#xn!,
            w.fc,
            this.#at(w.fc, f * d * bpe),
            null,
            k.bits,
            k.list,
            k.counts,
            k.h,
            k.workspace,
            rows,
            d,
            E,
            S,
          ),
          "lte_sffn_gate_up",
        );
        ck(
          s.lte_sffn_down(
            ctx,
            wdt,
            DTypeCode.f32,
            k.h,
            w.down,
            null,
            k.list,
            k.counts,
            this.#x,
            this.#x,
            k.workspace,
            rows,
            d,
            E,
            S,
            0,
          ),
          "lte_sffn_down",
        );
        ck(
          s.lte_mem_copy(ctx, this.#at(io, o.counts + 4 * l * this.#rows), k.counts, BigInt(4 * rows)),
          "lte_mem_copy",
        );
        continue;
      }
      let mask: Ptr | null = null;
      if (E > 0) {
        lin(
          DTypeCode.f32,
          w.router!,
          this.#x,
          normMode,
          w.ln2,
          w.ln2b,
          none,
          w.routerB,
          this.#rlog!,
          E,
          d,
          0,
          ACT.NONE,
        );
        ck(
          s.lte_dec_router_mask(
            ctx,
            this.#rlog!,
            this.#mask!,
            this.#at(io, o.counts + 4 * l * this.#rows),
            1,
            rows,
            E,
            this.#threshold,
          ),
          "lte_dec_router_mask",
        );
        mask = this.#mask;
      }
      // h = act(norm(x) W_fc^T): SwiGLU over the [gate; up] rows, or GELU(c_fc + bias); rows of
      // experts no token needs are skipped
      lin(
        wdt,
        w.fc,
        this.#x,
        normMode,
        w.ln2,
        w.ln2b,
        [null, mask],
        w.fcB,
        this.#h,
        f,
        d,
        0,
        g2 ? ACT.GELU : ACT.SWIGLU,
      );
      if (mask) {
        // x += h W_down^T (+ bias) over the union's expert blocks of the transposed weight
        ck(
          s.lte_dec_linear_t_sparse(ctx, wdt, w.down, this.#h, mask, w.downB, this.#x, rows, d, f, S),
          "lte_dec_linear_t_sparse",
        );
      } else {
        lin(wdt, w.down, this.#h, X.PLAIN, null, null, none, w.downB, this.#x, d, f, 1, ACT.NONE);
      }
    }
    ck(
      s.lte_dec_linear(
        ctx,
        wdt,
        this.#head,
        this.#at(this.#x, 4 * d * headRow),
        d,
        normMode,
        this.#lnf,
        this.#lnfb,
        c.norm_eps,
        null,
        null,
        0,
        0,
        null,
        this.#logits,
        headRows,
        c.vocab_size,
        d,
        0,
        ACT.NONE,
      ),
      "lte_dec_linear",
    );
    ck(
      s.lte_dec_sample(
        ctx,
        this.#logits,
        this.#at(io, o.temp + 4 * headRow),
        this.#at(io, o.topk + 4 * headRow),
        this.#at(io, o.topp + 4 * headRow),
        this.#at(io, o.seeds + 8 * headRow),
        this.#at(io, o.pos + 4 * headRow),
        this.#at(io, o.ids + 4 * headRow),
        this.#at(io, o.out + 4 * headRow),
        this.#sscratch,
        headRows,
        c.vocab_size,
        advance ? 1 : 0,
      ),
      "lte_dec_sample",
    );
  }

  /** Writes the io input block for rows. */
  #writeRows(rows: { id: number; pos: number; slot: number; sp: SamplingParams }[]): void {
    const o = this.#off;
    const i32 = new Int32Array(this.#ioHost),
      f32 = new Float32Array(this.#ioHost),
      u64 = new BigUint64Array(this.#ioHost);
    rows.forEach((r, i) => {
      i32[o.ids / 4 + i] = r.id;
      i32[o.pos / 4 + i] = r.pos;
      i32[o.slots / 4 + i] = r.slot;
      f32[o.temp / 4 + i] = r.sp.temperature;
      i32[o.topk / 4 + i] = r.sp.topK;
      f32[o.topp / 4 + i] = r.sp.topP;
      u64[o.seeds / 8 + i] = BigInt.asUintN(64, BigInt(Math.trunc(r.sp.seed)));
    });
    this.#be.write(this.#io, new Uint8Array(this.#ioHost, 0, this.#inBytes));
  }

  async #readOut(rows: number): Promise<{ out: Int32Array; counts: Int32Array }> {
    const buf = new Uint8Array(this.#outBytes);
    if (this.options.syncRead) this.#be.read(buf, this.#at(this.#io, this.#outOff));
    else await this.#be.readAsync(buf, this.#at(this.#io, this.#outOff));
    const all = new Int32Array(buf.buffer);
    return { out: all.slice(0, rows), counts: all.slice(this.#rows) };
  }

  /**
   * Per-layer active experts of io row `row` (counts are stored layer-major: [l * rows + r]); also
   * feeds the running fraction of active experts per token that chooses the path of batched
   * sparse steps (`expectedUnion`).
   */
  #active(counts: Int32Array, row: number): number[] {
    const a = Array.from({ length: this.nLayer }, (_, l) => counts[l * this.#rows + row]!);
    if (this.expertsPerLayer) {
      const f = a.reduce((u, v) => u + v, 0) / (this.nLayer * this.expertsPerLayer);
      this.#activity = this.#activity === null ? f : 0.9 * this.#activity + 0.1 * f;
    }
    return a;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #checkSampling(sp: SamplingParams, where: string): SamplingParams {
    const t = sp.temperature ?? 0, k = sp.topK ?? 0, p = sp.topP ?? 1, seed = sp.seed ?? 0;
    if (!Number.isFinite(t) || t < 0) throw new EngineError(`${where}: temperature ${t} must be >= 0 (0 = greedy)`);
    if (!Number.isInteger(k) || k < 0) throw new EngineError(`${where}: topK ${k} must be an integer >= 0 (0 = off)`);
    if (!(p > 0 && p <= 1)) throw new EngineError(`${where}: topP ${p} must be in (0, 1]`);
    if (!Number.isSafeInteger(seed)) throw new EngineError(`${where}: seed ${seed} must be an integer`);
    return { temperature: t, topK: k, topP: p, seed };
  }

  #checkSlot(slot: number, where: string): void {
    if (this.#disposed) throw new EngineError(`${where}: the engine has been disposed`);
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.maxBatch || !this.#slots[slot]!.used) {
      throw new EngineError(`${where}: slot ${slot} is not an allocated slot (allocSlot() first)`);
    }
  }

  // ------------------------------------------------------------------ public API

  /** A free KV-cache slot, or null when all `maxBatch` are in use. */
  allocSlot(): number | null {
    const i = this.#slots.findIndex((s) => !s.used);
    if (i < 0) return null;
    this.#slots[i] = { used: true, pos: 0, next: 0 };
    return i;
  }

  /** Returns a slot (its cache contents are simply overwritten by the next user). */
  freeSlot(slot: number): void {
    if (Number.isInteger(slot) && slot >= 0 && slot < this.maxBatch) {
      this.#slots[slot]!.used = false;
      this.#forget(slot);
    }
  }

  /**
   * Undoes the slot's kept token: the slot is back where it was before that step, whose KV write
   * at that position the next step of the slot overwrites.
   */
  #undo(slot: number): void {
    const kept = this.#stash.get(slot);
    if (!kept) return;
    Object.assign(this.#slots[slot]!, kept.before);
    this.#stash.delete(slot);
    this.#lastKey = null;
  }

  /** The slot's sequence is over: a token kept for it, or coming from a step in flight, is dropped. */
  #forget(slot: number): void {
    this.#stash.delete(slot);
    if (this.#ahead?.slots.includes(slot)) this.#ahead.dropped.add(slot);
  }

  /** Tokens in the slot's cache (the next token's position). */
  position(slot: number): number {
    this.#checkSlot(slot, "position");
    // a token decoded ahead (step() lookahead) but not yet returned does not count
    return this.#slots[slot]!.pos - (this.#stash.has(slot) ? 1 : 0);
  }

  /** Runs the prompt through the model into the slot's cache; returns the first sampled token. */
  prefill(slot: number, ids: number[], sampling: SamplingParams): Promise<{ token: number; activeExperts: number[] }> {
    this.#checkSlot(slot, "prefill");
    const sp = this.#checkSampling(sampling, "prefill sampling");
    if (ids.length === 0) throw new EngineError("prefill: the prompt has no tokens");
    if (ids.length >= this.contextSize) {
      throw new EngineError(
        `prefill: the prompt has ${ids.length} tokens; the context holds ${this.contextSize} (prompt + at least one generated token)`,
      );
    }
    for (const [i, t] of ids.entries()) {
      if (!Number.isInteger(t) || t < 0 || t >= this.config.vocab_size) {
        throw new EngineError(`prefill: token ${i} = ${t} is outside the vocabulary [0, ${this.config.vocab_size})`);
      }
    }
    this.#forget(slot);
    return this.#serial(async () => {
      this.#lastKey = null;
      let res: { out: Int32Array; counts: Int32Array } | null = null;
      for (let start = 0; start < ids.length; start += this.#rows) {
        const chunk = ids.slice(start, start + this.#rows);
        const last = start + chunk.length === ids.length;
        this.#writeRows(chunk.map((id, i) => ({ id, pos: start + i, slot, sp })));
        this.#enqueue(chunk.length, last ? chunk.length - 1 : 0, last ? 1 : 0, false);
        if (last) {
          const r = await this.#readOut(chunk.length);
          res = r;
        }
      }
      const row = (ids.length - 1) % this.#rows;
      const token = res!.out[row]!;
      const st = this.#slots[slot]!;
      st.pos = ids.length;
      st.next = token;
      const ae = this.expertsPerLayer ? this.#active(res!.counts, row) : [];
      return { token, activeExperts: ae };
    });
  }

  /**
   * One decode step for these slots (each feeds its last sampled token). With `lookahead` the
   * next step for the same slots is already running when this returns (see the option).
   */
  step(slots: number[], sampling: SamplingParams[]): Promise<StepResult> {
    if (slots.length === 0) return Promise.resolve({ tokens: [], activeExperts: [] });
    if (slots.length > this.maxBatch) {
      throw new EngineError(
        `step: ${slots.length} slots exceed the batch the cache was built for (maxBatch ${this.maxBatch})`,
      );
    }
    if (sampling.length !== slots.length) {
      throw new EngineError(`step: ${sampling.length} sampling entries for ${slots.length} slots`);
    }
    if (new Set(slots).size !== slots.length) throw new EngineError(`step: slots ${slots.join(", ")} repeat a slot`);
    const sps = sampling.map((s, i) => this.#checkSampling(s, `step sampling[${i}]`));
    for (const slot of slots) {
      this.#checkSlot(slot, "step");
      const st = this.#slots[slot]!;
      if (st.pos === 0) throw new EngineError(`step: slot ${slot} has no prompt (prefill first)`);
      // a slot whose token is kept or in flight needs no room: that step has run
      const inFlight = this.#stash.has(slot) || (this.#ahead?.slots.includes(slot) && !this.#ahead.dropped.has(slot));
      if (st.pos >= this.contextSize && !inFlight) {
        throw new EngineError(`step: slot ${slot} is full (${st.pos} of ${this.contextSize} positions)`);
      }
    }
    return this.#serial(async () => {
      try {
        return await this.#stepRun(slots, sps);
      } catch (e) {
        this.#ahead = null;
        this.#lastKey = null;
        throw e;
      }
    });
  }

  async #stepRun(slots: number[], sps: SamplingParams[]): Promise<StepResult> {
    const lookahead = this.options.lookahead ?? this.options.device === "cuda";
    const same = (l: LaunchedStep) =>
      l.slots.length === slots.length && l.slots.every((s, i) => s === slots[i]) &&
      l.sps.every((p, i) => JSON.stringify(p) === JSON.stringify(sps[i]));
    // the next step can go in behind the one in flight when every slot has a position left for it
    const roomForNext = () => slots.every((slot) => this.#slots[slot]!.pos + 1 < this.contextSize);
    const got = new Map<number, Decoded>();
    let next: LaunchedStep | null = null;
    const ahead = this.#ahead;
    this.#ahead = null;
    if (ahead) {
      const hit = same(ahead) && ahead.dropped.size === 0;
      // steady state: step t + 1 is queued before token t is awaited (the io block still holds the
      // rows as step t advanced them: nothing to write)
      if (hit && lookahead && this.#lastKey === ahead.marker && roomForNext()) {
        next = this.#launchStep(slots, sps, false);
      }
      for (const [slot, r] of await this.#consume(ahead)) (hit ? got : this.#stash).set(slot, r);
    }
    if (got.size === 0) {
      for (const [i, slot] of slots.entries()) {
        const kept = this.#stash.get(slot);
        if (!kept) continue;
        // decoded with the sampling the slot had then: used as is, or undone and decoded again
        if (JSON.stringify(kept.sp) === JSON.stringify(sps[i])) got.set(slot, kept);
        else this.#undo(slot);
        this.#stash.delete(slot);
      }
      const rest = slots.filter((slot) => !got.has(slot));
      if (rest.length > 0) {
        const now = this.#launchStep(rest, rest.map((slot) => sps[slots.indexOf(slot)]!), true);
        if (lookahead && rest.length === slots.length && roomForNext()) next = this.#launchStep(slots, sps, false);
        for (const [slot, r] of await this.#consume(now)) got.set(slot, r);
      }
    }
    if (!next && lookahead && got.size === slots.length && roomForNext()) {
      // the batch is known again (after a change, or the io block was used by someone else)
      next = this.#launchStep(slots, sps, true);
    }
    this.#ahead = next;
    return {
      tokens: slots.map((slot) => got.get(slot)!.token),
      activeExperts: slots.map((slot) => got.get(slot)!.activeExperts),
    };
  }

  /**
   * Launches one decode step for these slots and queues the copy of its tokens into a pinned
   * staging block. write = false: the io block already holds the rows as the previous step advanced
   * them on the device (`#lastKey` is that step's marker); true: the rows are written from the
   * slots' host state unless the io block holds exactly them.
   */
  #launchStep(slots: number[], sps: SamplingParams[], write: boolean): LaunchedStep {
    if (write) {
      const rows = slots.map((slot, i) => ({
        id: this.#slots[slot]!.next,
        pos: this.#slots[slot]!.pos,
        slot,
        sp: sps[i]!,
      }));
      const key = JSON.stringify(rows);
      if (key !== this.#lastKey) this.#writeRows(rows);
    }
    this.#launch(slots.length);
    if (!this.#stepBufs) {
      this.#stepBufs = [0, 1].map(() => {
        const ptr = this.#be.hostAlloc(this.#outBytes) as Ptr;
        return { ptr, out: new Int32Array(Deno.UnsafePointerView.getArrayBuffer(ptr, this.#outBytes)) };
      });
    }
    // two blocks alternate: at most two launched steps are unread at any time
    const buf = this.#stepBufs[this.#stepBufNext]!;
    this.#stepBufNext ^= 1;
    this.#be.readStart(
      buf.ptr,
      this.#at(this.#io, this.#outOff),
      this.expertsPerLayer ? this.#outBytes : 4 * this.#rows,
    );
    const marker = `step ${++this.#chainSerial}`;
    this.#lastKey = marker;
    return { slots, sps, buf, marker, dropped: new Set() };
  }

  /** Waits for a launched step's tokens; the slots it still owns advance past them. */
  async #consume(l: LaunchedStep): Promise<Map<number, Decoded>> {
    if (this.options.syncRead) this.#be.readWait(l.buf.ptr);
    else await this.#be.readWaitAsync(l.buf.ptr);
    const out = new Map<number, Decoded>();
    const counts = l.buf.out.subarray(this.#rows);
    l.slots.forEach((slot, i) => {
      if (l.dropped.has(slot)) return;
      const token = l.buf.out[i]!;
      const st = this.#slots[slot]!;
      const before = { pos: st.pos, next: st.next };
      st.pos += 1;
      st.next = token;
      out.set(slot, {
        token,
        activeExperts: this.expertsPerLayer ? this.#active(counts, i) : [],
        sp: l.sps[i]!,
        before,
      });
    });
    if (this.#lastKey === l.marker) {
      // nothing launched since: the io block holds the rows as this step advanced them
      this.#lastKey = JSON.stringify(
        l.slots.map((slot, i) => ({ id: this.#slots[slot]!.next, pos: this.#slots[slot]!.pos, slot, sp: l.sps[i]! })),
      );
    }
    return out;
  }

  /**
   * Benchmarks only: `n` decode steps of these slots launched back to back (the device advances
   * ids and positions itself, so no host work happens between them) and one read at the end.
   * Returns milliseconds per step of device time without the host's per-token turnaround; the
   * slots advance by `n` positions and only the last step's tokens are kept.
   */
  timeSteps(slots: number[], sampling: SamplingParams[], n: number): Promise<number> {
    if (!Number.isInteger(n) || n < 1) throw new EngineError(`timeSteps: n ${n} must be an integer >= 1`);
    for (const slot of slots) {
      this.#checkSlot(slot, "timeSteps");
      const st = this.#slots[slot]!;
      if (st.pos === 0) throw new EngineError(`timeSteps: slot ${slot} has no prompt (prefill first)`);
      if (st.pos + n > this.contextSize) {
        throw new EngineError(`timeSteps: slot ${slot} at ${st.pos} has no room for ${n} more positions`);
      }
    }
    if (
      slots.length === 0 || slots.length > this.maxBatch || sampling.length !== slots.length ||
      new Set(slots).size !== slots.length
    ) {
      throw new EngineError(`timeSteps: ${slots.length} slots / ${sampling.length} sampling entries`);
    }
    const sps = sampling.map((s, i) => this.#checkSampling(s, `timeSteps sampling[${i}]`));
    return this.#serial(async () => {
      // a step() lookahead in flight finishes first; for these slots it is undone (as if it had
      // not run), the others keep their tokens for their next step()
      if (this.#ahead) {
        const a = this.#ahead;
        this.#ahead = null;
        for (const [slot, r] of await this.#consume(a)) this.#stash.set(slot, r);
      }
      for (const slot of slots) {
        this.#undo(slot);
        const st = this.#slots[slot]!;
        if (st.pos + n > this.contextSize) {
          throw new EngineError(`timeSteps: slot ${slot} at ${st.pos} has no room for ${n} more positions`);
        }
      }
      const R = slots.length;
      const rows = slots.map((slot, i) => ({
        id: this.#slots[slot]!.next,
        pos: this.#slots[slot]!.pos,
        slot,
        sp: sps[i]!,
      }));
      this.#writeRows(rows);
      this.#launch(R); // warm (captures the graph on first use)
      await this.#readOut(R);
      const t0 = performance.now();
      for (let i = 1; i < n; i++) this.#launch(R);
      const r = await this.#readOut(R);
      const ms = (performance.now() - t0) / Math.max(1, n - 1);
      slots.forEach((slot, i) => {
        const st = this.#slots[slot]!;
        st.pos += n;
        st.next = r.out[i]!;
      });
      this.#lastKey = null;
      return ms;
    });
  }

  /**
   * The sparse FFN implementation a step of `rows` rows runs (null for a dense model). CUDA
   * defaults: steps of >= KERNELS_MIN_ROWS rows take KERNELS' kernels when the model fits them,
   * the others the fused op `lte_dec_sparse_ffn` (H200, 2026-12-02, fifth session, device time per
   * step at the LLaMA-2-7B shape: fused 2.97 / 2.11 ms at 50 / 10 % active against 3.28 / 2.32 for
   * the masked GEMVs with PDL; docs/engine.md). Tenth session: f16 steps of >= MASKED_GEMV_MIN_ROWS
   * rows take the masked GEMVs (tensor cores, the union's down on ts_mma2_kernel), faster than
   * KERNELS' kernels at batch 8 and 16 on the H200.
   */
  sparseFfnPath(rows: number): SparseFfnPath | null {
    if (!this.expertsPerLayer) return null;
    const o = this.options, cuda = o.device === "cuda";
    if (this.#sffn && o.ffnKernels) return "kernels";
    if (o.fusedFfn === true && (!cuda || rows <= FUSED_FFN_MAX_ROWS || this.#maskedDense(rows))) return "fused";
    if (!cuda) return o.fusedFfn === false ? "gemv" : "fused";
    if (o.fusedFfn !== false && this.#maskedDense(rows) && this.expectedUnion(rows) >= MASKED_DENSE_MIN_UNION) {
      return "fused";
    }
    if (o.dtype === "f16" && rows >= MASKED_GEMV_MIN_ROWS) return "gemv";
    if (this.#sffn && rows >= KERNELS_MIN_ROWS) return "kernels";
    return o.fusedFfn !== false && rows <= FUSED_FFN_MAX_ROWS ? "fused" : "gemv";
  }

  /** Whether the fused op runs a step of `rows` rows as masked dense on cuBLAS (f16, cuBLAS loaded). */
  #maskedDense(rows: number): boolean {
    // (the native switches, when set, move the op's own choice: cuda/cuda/decode_blas.cuh)
    const env = (k: string) => Deno.env.get(k);
    const min = Math.max(MASKED_DENSE_MIN_ROWS, Number(env("LTE_DEC_BLAS_MIN") || MASKED_DENSE_MIN_ROWS));
    return this.#decodeCublas && this.options.dtype === "f16" && rows >= min && this.#expertSize % 4 === 0 &&
      env("LTE_DEC_BLAS") !== "0" && env("LTE_DEC_BLAS_MASKED") !== "0";
  }

  /**
   * The fraction of experts a step of `rows` tokens is expected to need (the union), from the
   * running fraction of active experts per token (0.5 before the first sparse step), taking the
   * tokens' choices as independent.
   */
  expectedUnion(rows: number): number {
    return 1 - Math.pow(1 - (this.#activity ?? 0.5), rows);
  }

  /** Runs one step over R rows: the captured graph on CUDA, the ops eagerly otherwise. */
  #launch(R: number): void {
    const s = this.#be.sym, ctx = this.#be.ctx;
    if (this.#graphOk) {
      const path = this.sparseFfnPath(R);
      const key = `${R}:${path}`;
      let g = this.#graphs.get(key);
      if (!g) {
        const prev = Deno.env.get("LTE_DEC_PDL"), prevCarveout = Deno.env.get("LTE_DEC_CARVEOUT");
        const prevMasked = Deno.env.get("LTE_DEC_BLAS_MASKED");
        // the masked GEMVs path is the union kernels: masked dense is the fused op's (twelfth session)
        if (prevMasked === undefined && path === "gemv") Deno.env.set("LTE_DEC_BLAS_MASKED", "0");
        // PDL by default (measured faster on the H200: dense 3.69 vs 3.94 ms per 7B step; sparse
        // masked GEMVs 3.31 vs 3.45 ms at 50 %) except for KERNELS' sparse FFN, where it measured
        // slower (3.44 vs 3.38 ms; docs/engine.md)
        if (this.options.pdl ?? path !== "kernels") Deno.env.set("LTE_DEC_PDL", "1");
        else Deno.env.delete("LTE_DEC_PDL");
        // every kernel of a step with the fused sparse FFN op at the largest shared-memory carveout
        // (unless the caller chose one): 2.93 -> 2.83 ms (50 %) and 2.08 -> 2.05 ms (10 % active)
        // per 7B step; dense steps measured 1.3 % slower with it, so they keep the driver's choice
        if (prevCarveout === undefined && path === "fused") Deno.env.set("LTE_DEC_CARVEOUT", "100");
        try {
          const st = s.lte_graph_begin(ctx);
          if (st !== 0) {
            this.#graphOk = false;
          } else {
            try {
              this.#enqueue(R, 0, R, true);
            } catch (e) {
              const out = new BigUint64Array(1);
              s.lte_graph_end(ctx, out);
              throw e;
            }
            const out = new BigUint64Array(1);
            this.#check(s.lte_graph_end(ctx, out), "lte_graph_end");
            g = Deno.UnsafePointer.create(out[0]!) as Ptr;
            this.#graphs.set(key, g);
          }
        } finally {
          if (prev === undefined) Deno.env.delete("LTE_DEC_PDL");
          else Deno.env.set("LTE_DEC_PDL", prev);
          if (prevCarveout === undefined) Deno.env.delete("LTE_DEC_CARVEOUT");
          if (prevMasked === undefined) Deno.env.delete("LTE_DEC_BLAS_MASKED");
        }
      }
      if (g) {
        this.#check(s.lte_graph_launch(ctx, g), "lte_graph_launch");
        return;
      }
    }
    this.#enqueue(R, 0, R, true);
  }

  // ------------------------------------------------------------------ lookahead decoding

  /** The slot's two staging blocks (pinned on CUDA), allocated on first use. */
  #stagingOf(slot: number): { ptr: Ptr; out: Int32Array }[] {
    let st = this.#staging[slot];
    if (!st) {
      st = [0, 1].map(() => {
        const ptr = this.#be.hostAlloc(this.#outBytes) as Ptr;
        return { ptr, out: new Int32Array(Deno.UnsafePointerView.getArrayBuffer(ptr, this.#outBytes)) };
      });
      this.#staging[slot] = st;
    }
    return st;
  }

  #chainStart(slot: number, sp: SamplingParams, start: number, first: number, maxTokens: number): Chain {
    return {
      slot,
      sp,
      start,
      // step m needs m < maxTokens and its position start + m - 1 inside the context
      limit: Math.min(maxTokens, this.contextSize - start + 1),
      launched: 0,
      known: 0,
      knownToken: first,
      done: new Map(),
      marker: `lookahead ${++this.#chainSerial}`,
      bufs: this.#stagingOf(slot),
    };
  }

  /**
   * Launches step m of the chain (unless it is past the limit or already launched) and queues the
   * read of its token into staging block m % 2 (token m - 2, its previous content, has been
   * consumed). When the io block still holds this chain's row as the previous step advanced it on
   * the device, nothing is written; after another caller used the engine in between, the row is
   * written again from token m - 1, read first if it is still in flight.
   */
  #chainLaunch(ch: Chain, m: number): Promise<void> {
    if (m >= ch.limit || m <= ch.launched) return Promise.resolve();
    return this.#serial(async () => {
      if (this.#disposed) throw new EngineError("generate: the engine has been disposed");
      if (this.#lastKey !== ch.marker) {
        if (ch.known < m - 1) ch.done.set(m - 1, await this.#chainWait(ch, m - 1));
        this.#writeRows([{ id: ch.knownToken, pos: ch.start + m - 1, slot: ch.slot, sp: ch.sp }]);
      }
      this.#launch(1);
      const bytes = this.expertsPerLayer ? this.#outBytes : 4;
      this.#be.readStart(ch.bufs[m % 2]!.ptr, this.#at(this.#io, this.#outOff), bytes);
      ch.launched = m;
      this.#lastKey = ch.marker;
    });
  }

  /** Waits for the read of token n (step n launched) and returns it. */
  async #chainWait(ch: Chain, n: number): Promise<{ token: number; activeExperts: number[] }> {
    if (n > ch.launched) throw new Error(`engine: lookahead token ${n} read before its step was launched`);
    if (this.#disposed) throw new EngineError("generate: the engine has been disposed");
    const buf = ch.bufs[n % 2]!;
    if (this.options.syncRead) this.#be.readWait(buf.ptr);
    else await this.#be.readWaitAsync(buf.ptr);
    const token = buf.out[0]!;
    const activeExperts = this.expertsPerLayer ? this.#active(buf.out.subarray(this.#rows), 0) : [];
    ch.known = n;
    ch.knownToken = token;
    return { token, activeExperts };
  }

  /** Token n of the chain (n >= 1, step n launched); the slot advances past it, as `step` does. */
  async #chainRead(ch: Chain, n: number): Promise<{ token: number; activeExperts: number[] }> {
    const r = ch.done.get(n) ?? await this.#chainWait(ch, n);
    ch.done.delete(n);
    const st = this.#slots[ch.slot]!;
    st.pos = ch.start + n;
    st.next = r.token;
    return r;
  }

  /** Prompt in, tokens out (async iterator), in a slot of its own; the slot is freed at the end. */
  async *generate(prompt: string | number[], opts: GenerateOptions): AsyncIterable<GeneratedToken> {
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 0) {
      throw new EngineError(`generate: maxTokens ${opts.maxTokens} must be an integer >= 0`);
    }
    const sp = this.#checkSampling({ ...GREEDY, ...stripUndefined(opts) }, "generate");
    const tk = this.tokenizer;
    const ids = typeof prompt === "string"
      ? tk.encode(prompt, { addBos: tk.kind === "hf-bpe" && tk.bosId !== undefined, allowSpecial: false })
      : prompt;
    if (ids.length === 0) {
      if (tk.bosId === undefined) throw new EngineError("generate: the prompt is empty");
      ids.push(tk.bosId);
    }
    if (ids.length >= this.contextSize) {
      throw new EngineError(
        `generate: the prompt has ${ids.length} tokens; the context holds ${this.contextSize} (prompt + at least one generated token)`,
      );
    }
    if (opts.maxTokens === 0) return;
    const slot = this.allocSlot();
    if (slot === null) throw new EngineError(`generate: all ${this.maxBatch} slots are in use`);
    const stops = (opts.stop ?? []).filter((s) => s.length > 0);
    const out: number[] = [];
    let emitted = 0; // characters of the decoded text already released
    try {
      let r = await this.prefill(slot, ids, sp);
      const chain = (this.options.lookahead ?? this.options.device === "cuda")
        ? this.#chainStart(slot, sp, ids.length, r.token, opts.maxTokens)
        : null;
      for (let n = 0; n < opts.maxTokens; n++) {
        if (opts.signal?.aborted) return;
        if (chain && n > 0) {
          // step n + 1 goes in behind step n before token n is read (speculative: token n may
          // end the sequence; then step n + 1 wrote past its end, harmlessly)
          await this.#chainLaunch(chain, n + 1);
          r = await this.#chainRead(chain, n);
          if (opts.signal?.aborted) return;
        }
        const id = r.token;
        if (tk.eosId !== undefined && id === tk.eosId) return;
        out.push(id);
        const text = tk.decode(out, { skipSpecial: true });
        // stop sequences: end at the first occurrence, releasing the text before it
        let stopAt = -1;
        for (const s of stops) {
          const i = text.indexOf(s, Math.max(0, emitted - s.length + 1));
          if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
        }
        if (stopAt >= 0) {
          yield { id, text: text.slice(emitted, Math.max(emitted, stopAt)), activeExperts: r.activeExperts };
          return;
        }
        // hold back a trailing partial character and any suffix that could start a stop sequence
        let safe = text.endsWith("\uFFFD") ? text.length - 1 : text.length;
        for (const s of stops) {
          for (let k = Math.min(s.length - 1, safe - emitted); k > 0; k--) {
            if (text.slice(safe - k, safe) === s.slice(0, k)) {
              safe -= k;
              break;
            }
          }
        }
        const piece = safe > emitted ? text.slice(emitted, safe) : "";
        emitted = Math.max(emitted, safe);
        const last = n + 1 >= opts.maxTokens || this.#slots[slot]!.pos >= this.contextSize;
        // lookahead: step n + 1 runs while the caller takes token n (for n > 0 it already does)
        if (chain && !last) await this.#chainLaunch(chain, n + 1);
        yield { id, text: last ? text.slice(emitted - piece.length) : piece, activeExperts: r.activeExperts };
        if (last) return;
        if (chain) continue;
        const s = await this.step([slot], [sp]);
        r = { token: s.tokens[0]!, activeExperts: s.activeExperts[0]! };
      }
    } finally {
      this.freeSlot(slot);
    }
  }

  /**
   * Logits (rows x V, f32) of the last step (row i = the i-th slot) or of the last prefill (row 0).
   * For tests and debugging; waits for the device. With `lookahead` a `step()` has already launched
   * the next step, whose logits replaced them: that is an error (use lookahead: false to inspect).
   */
  async lastLogits(rows: number): Promise<Float32Array> {
    const out = new Float32Array(rows * this.config.vocab_size);
    await this.#serial(() => {
      if (this.#ahead) {
        throw new EngineError(
          "lastLogits: step() already launched the next step (engine option lookahead), whose logits replaced the last step's; build the engine with lookahead: false to inspect logits",
        );
      }
      return this.#be.readAsync(out, this.#logits);
    });
    return out;
  }

  /** Frees the device memory and graphs. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const be = this.#be;
    if (!be || be.closed) return;
    for (const g of this.#graphs.values()) be.sym.lte_graph_free(be.ctx, g);
    this.#sffn?.dispose();
    this.#graphs.clear();
    for (const st of this.#staging) for (const b of st ?? []) be.hostFree(b.ptr);
    this.#staging = [];
    for (const b of this.#stepBufs ?? []) be.hostFree(b.ptr);
    this.#stepBufs = null;
    for (const p of this.#allocs) be.free(p);
    this.#allocs = [];
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Inverse of the standard normal CDF (Acklam's approximation; |error| < 1.2e-9). */
function probit(p: number): number {
  const a = [
    -3.969683028665376e1,
    2.209460984245205e2,
    -2.759285104469687e2,
    1.38357751867269e2,
    -3.066479806614716e1,
    2.506628277459239,
  ];
  const b = [
    -5.447609879822406e1,
    1.615858368580409e2,
    -1.556989798598866e2,
    6.680131188771972e1,
    -1.328068155288572e1,
  ];
  const c = [
    -7.784894002430293e-3,
    -3.223964580411365e-1,
    -2.400758277161838,
    -2.549732539343734,
    4.374664141464968,
    2.938163982698783,
  ];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const q0 = Math.min(Math.max(p, 1e-9), 1 - 1e-9);
  if (q0 < 0.02425) {
    const q = Math.sqrt(-2 * Math.log(q0));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) /
      ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (q0 > 1 - 0.02425) return -probit(1 - q0);
  const q = q0 - 0.5, r = q * q;
  return (((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q /
    (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}
