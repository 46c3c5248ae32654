/**
 * Thin typed wrapper over the native sparse FFN ops (cuda/include/lte.h, "KERNELS" section) for
 * the decode engine. Owner: KERNELS (issue 9). Design and measurements: docs/engine.md
 * "Sparse FFN kernels".
 *
 * Contract
 * - One `SparseFfn` per (backend, dtype, FFN shape, max batch). It owns the per-step scratch
 *   buffers (router logits, expert bits, union list, counts, h, workspace), allocated once; one
 *   instance serves every layer of a model, because the calls of one step run in order on the
 *   backend's one stream. Weights are NOT owned: upload them with `uploadMatrix` /
 *   `uploadVector` (or convert your own device buffers with `convert`) and free them yourself.
 * - Layouts (after the LTE grouping, experts are contiguous blocks of `expertSize` neurons):
 *   `router` (N, C), `routerBias` (N) | null, `gate` (F, C) | null (GELU), `inW` (F, C) = up_proj
 *   (LLaMA) or c_fc transposed (GPT-2; `uploadMatrix(..., { transpose: true })` from (C, F)),
 *   `inBias` (F) | null, `downT` (F, C) = down_proj (C, F) transposed (`transpose: true`) or GPT-2
 *   c_proj (F, C) as stored, `downBias` (C) | null. `router === null` means dense: every expert.
 * - `forward(layer, x, y, { batch, residual })` runs route -> gate/up -> down on the device: no
 *   host round trip, no allocation, fixed launch sizes, so it can be captured in a CUDA graph
 *   (`CapturedGraph.capture`). x, y, residual: (batch, C) device buffers of the activation dtype
 *   (`opts.activations`: the weight dtype, or "f32" for an engine that keeps f32 activations; the
 *   router weights and bias are then in that dtype too); residual may be y (y = residual +
 *   FFN(x), the decoder's residual add fused in).
 * - Results that are per step and stay on the device until asked for: `logits` (batch, N) f32,
 *   `bits` (N) u32 (bit b = token b chose the expert), `list` (N) i32 (the union, ascending),
 *   `counts` (batch + 1) i32 (per-token active experts, then the union size). `readCounts` reads
 *   them back (synchronizing): call it once per step, after the last layer, only if you need
 *   the statistics (StepResult.activeExperts needs one read per layer: keep a per-layer copy
 *   with `copyCounts` and read them all at the end of the step).
 * - Selection is strict: a token uses expert e iff its router logit > 0 (sigmoid > 0.5).
 * - Every call throws the backend's typed error (LteNativeError) with the op name on bad input.
 *
 * @example
 * ```ts
 * const be = getBackend("cuda");
 * const ffn = new SparseFfn(be, "f16", { dModel: 4096, nExperts: 344, expertSize: 32, act: "silu_mul", maxBatch: 1 });
 * const layer = { router: ffn.uploadMatrix(wr, 344, 4096), routerBias: null, gate: ..., inW: ..., inBias: null,
 *   downT: ffn.uploadMatrix(wDown, 4096, 11008, { transpose: true }), downBias: null };
 * ffn.forward(layer, x, y, { batch: 1, residual: y });
 * ```
 * @module
 */
import type { Backend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";

/** Storage dtype of weights and activations (fp32 accumulation in every case). */
export type FfnDtype = "f16" | "bf16" | "f32";
/** FFN activation: LLaMA SwiGLU or GPT-2 GELU (tanh approximation, with c_fc bias). */
export type FfnAct = "silu_mul" | "gelu";
/** Down-projection variant (`auto` = the measured default, see docs/engine.md). */
export type DownVariant = "auto" | "atomic" | "splitk";

/** The native limit on tokens per step (`LTE_SFFN_MAX_BATCH`). */
export const SFFN_MAX_BATCH = 16;
const ACT = { silu_mul: 0, gelu: 1 } as const;
const VARIANT = { auto: 0, atomic: 1, splitk: 2 } as const;

/** Shape of one FFN block. */
export interface FfnShape {
  dModel: number;
  nExperts: number;
  expertSize: number;
  act: FfnAct;
  /** Largest batch this instance will run (1..16). */
  maxBatch: number;
}

/** Device buffers of one layer's FFN weights (see the module contract for layouts). */
export interface FfnLayerWeights {
  router: Deno.PointerObject | null;
  routerBias: Deno.PointerObject | null;
  gate: Deno.PointerObject | null;
  inW: Deno.PointerObject;
  inBias: Deno.PointerObject | null;
  downT: Deno.PointerObject;
  downBias: Deno.PointerObject | null;
}

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: FfnDtype): number {
  return dtype === "f32" ? 4 : 2;
}

/** Per-step scratch and the three native calls of one FFN block. */
export class SparseFfn {
  readonly backend: Backend;
  readonly dtype: FfnDtype;
  readonly shape: Readonly<FfnShape>;
  /** (maxBatch, N) f32 router logits of the last `route`. */
  readonly logits: Deno.PointerObject;
  /** (N) u32 per-expert token bits of the last `route`. */
  readonly bits: Deno.PointerObject;
  /** (N) i32 union list (ascending; -1 past the union). */
  readonly list: Deno.PointerObject;
  /** (maxBatch + 1) i32: per-token counts, then the union size (at index `batch`). */
  readonly counts: Deno.PointerObject;
  /** (maxBatch, F) activations h in `dtype`. */
  readonly h: Deno.PointerObject;
  readonly workspace: Deno.PointerObject;
  /** dtype of x, y and residual: the weight dtype (default) or "f32" (an engine with f32 activations). */
  readonly activations: FfnDtype;
  #code: number;
  #disposed = false;

  constructor(backend: Backend, dtype: FfnDtype, shape: FfnShape, opts: { activations?: FfnDtype } = {}) {
    const { dModel, nExperts, expertSize, maxBatch } = shape;
    const activations = opts.activations ?? dtype;
    if (activations !== dtype && activations !== "f32") {
      throw new RangeError(`SparseFfn: activations '${activations}' must be the weight dtype '${dtype}' or 'f32'`);
    }
    this.activations = activations;
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > SFFN_MAX_BATCH) {
      throw new RangeError(`SparseFfn: maxBatch = ${maxBatch} must be an integer in [1, ${SFFN_MAX_BATCH}]`);
    }
    if (!(shape.act in ACT)) throw new RangeError(`SparseFfn: act '${shape.act}' must be 'silu_mul' or 'gelu'`);
    this.backend = backend;
    this.dtype = dtype;
    this.shape = { ...shape };
    this.#code = DTypeCode[dtype];
    const wsBytes = new BigUint64Array(1);
    backend.check(
      backend.sym.lte_sffn_workspace_size(backend.ctx, maxBatch, dModel, nExperts, expertSize, wsBytes),
      "lte_sffn_workspace_size",
    );
    const F = nExperts * expertSize;
    this.logits = backend.alloc(4 * maxBatch * nExperts);
    this.bits = backend.alloc(4 * nExperts);
    this.list = backend.alloc(4 * nExperts);
    this.counts = backend.alloc(4 * (maxBatch + 1));
    this.h = backend.alloc(dtypeBytes(dtype) * maxBatch * F);
    const ws = Number(wsBytes[0]!);
    this.workspace = backend.alloc(ws);
    // The kernels keep the workspace zeroed between calls; it must start zeroed.
    backend.check(
      backend.sym.lte_fill(backend.ctx, DTypeCode.i32, this.workspace, Math.ceil(ws / 4), 0),
      "lte_fill",
    );
  }

  /** d_ff = nExperts * expertSize. */
  get dFf(): number {
    return this.shape.nExperts * this.shape.expertSize;
  }

  #checkBatch(batch: number): void {
    if (this.#disposed) throw new Error("SparseFfn: used after dispose()");
    if (!Number.isInteger(batch) || batch < 1 || batch > this.shape.maxBatch) {
      throw new RangeError(`SparseFfn: batch = ${batch} must be an integer in [1, ${this.shape.maxBatch}]`);
    }
  }

  /** Router GEMV + threshold + union list (dense when `layer.router` is null). */
  route(layer: FfnLayerWeights, x: Deno.PointerObject, batch: number): void {
    this.#checkBatch(batch);
    const be = this.backend, s = this.shape;
    be.check(
      be.sym.lte_sffn_route(
        be.ctx,
        this.#code,
        x,
        layer.router,
        layer.routerBias,
        this.logits,
        this.bits,
        this.list,
        this.counts,
        this.workspace,
        batch,
        s.dModel,
        s.nExperts,
      ),
      "lte_sffn_route",
    );
  }

  /** h = act(gate, up) over the union's experts, masked per token. */
  gateUp(layer: FfnLayerWeights, x: Deno.PointerObject, batch: number): void {
    this.#checkBatch(batch);
    const be = this.backend, s = this.shape;
    be.check(
      be.sym.lte_sffn_gate_up(
        be.ctx,
        this.#code,
        DTypeCode[this.activations],
        ACT[s.act],
        x,
        layer.gate,
        layer.inW,
        layer.inBias,
        this.bits,
        this.list,
        this.counts,
        this.h,
        this.workspace,
        batch,
        s.dModel,
        s.nExperts,
        s.expertSize,
      ),
      "lte_sffn_gate_up",
    );
  }

  /** y = residual + downBias + h . downT[union rows]. */
  down(
    layer: FfnLayerWeights,
    y: Deno.PointerObject,
    batch: number,
    residual: Deno.PointerObject | null = null,
    variant: DownVariant = "auto",
  ): void {
    this.#checkBatch(batch);
    const be = this.backend, s = this.shape;
    be.check(
      be.sym.lte_sffn_down(
        be.ctx,
        this.#code,
        DTypeCode[this.activations],
        this.h,
        layer.downT,
        layer.downBias,
        this.list,
        this.counts,
        residual,
        y,
        this.workspace,
        batch,
        s.dModel,
        s.nExperts,
        s.expertSize,
        VARIANT[variant],
      ),
      "lte_sffn_down",
    );
  }

  /** The whole FFN block: y = (residual ?? 0) + FFN(x) (three launches, graph-capturable). */
  forward(
    layer: FfnLayerWeights,
    x: Deno.PointerObject,
    y: Deno.PointerObject,
    opts: { batch: number; residual?: Deno.PointerObject | null; variant?: DownVariant },
  ): void {
    this.route(layer, x, opts.batch);
    this.gateUp(layer, x, opts.batch);
    this.down(layer, y, opts.batch, opts.residual ?? null, opts.variant ?? "auto");
  }

  /** Copies the current counts (batch + 1 int32) to `dst` (a device buffer of >= 4 * (batch + 1) bytes). */
  copyCounts(dst: Deno.PointerObject, batch: number): void {
    this.#checkBatch(batch);
    const be = this.backend;
    be.check(be.sym.lte_mem_copy(be.ctx, dst, this.counts, BigInt(4 * (batch + 1))), "lte_mem_copy");
  }

  /** Reads counts back (waits for queued work): per-token active experts and the union size. */
  readCounts(batch: number): { perToken: number[]; union: number } {
    this.#checkBatch(batch);
    const out = new Int32Array(batch + 1);
    this.backend.read(out, this.counts);
    return { perToken: [...out.subarray(0, batch)], union: out[batch]! };
  }

  /** Uploads a host f32 matrix (rows, cols) as `dtype`, transposed to (cols, rows) if asked. */
  uploadMatrix(data: Float32Array, rows: number, cols: number, opts: { transpose?: boolean } = {}): Deno.PointerObject {
    return uploadAs(this.backend, this.dtype, data, rows, cols, opts.transpose ?? false);
  }

  /** Uploads a host f32 vector as `dtype`. */
  uploadVector(data: Float32Array): Deno.PointerObject {
    return uploadAs(this.backend, this.dtype, data, 1, data.length, false);
  }

  /** Frees the scratch buffers (not the weights). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const p of [this.logits, this.bits, this.list, this.counts, this.h, this.workspace]) this.backend.free(p);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** dst = convert(src) (optionally transposed) between f32 / f16 / bf16 device buffers. */
export function convert(
  be: Backend,
  src: Deno.PointerObject,
  srcDtype: FfnDtype,
  dst: Deno.PointerObject,
  dstDtype: FfnDtype,
  rows: number,
  cols: number,
  transpose = false,
): void {
  be.check(
    be.sym.lte_convert(be.ctx, DTypeCode[srcDtype], src, DTypeCode[dstDtype], dst, rows, cols, transpose ? 1 : 0),
    "lte_convert",
  );
}

/** Uploads host f32 data (rows, cols) into a new device buffer of `dtype` (transposed if asked). */
export function uploadAs(
  be: Backend,
  dtype: FfnDtype,
  data: Float32Array,
  rows: number,
  cols: number,
  transpose = false,
): Deno.PointerObject {
  if (data.length !== rows * cols) {
    throw new RangeError(`uploadAs: ${data.length} values for a (${rows}, ${cols}) matrix`);
  }
  const out = be.alloc(dtypeBytes(dtype) * data.length);
  if (dtype === "f32" && !transpose) {
    be.write(out, data);
    return out;
  }
  const tmp = be.alloc(4 * data.length);
  try {
    be.write(tmp, data);
    convert(be, tmp, "f32", out, dtype, rows, cols, transpose);
    be.synchronize(); // tmp is freed next; the CUDA allocator would reuse it only after queued work anyway
  } catch (e) {
    be.free(out);
    throw e;
  } finally {
    be.free(tmp);
  }
  return out;
}

/** Downloads a device buffer of `dtype` (n elements) as f32 (converted on the device). */
export function downloadAsF32(be: Backend, src: Deno.PointerObject, dtype: FfnDtype, n: number): Float32Array {
  const out = new Float32Array(n);
  if (dtype === "f32") {
    be.read(out, src);
    return out;
  }
  const tmp = be.alloc(4 * n);
  try {
    convert(be, src, dtype, tmp, "f32", 1, n);
    be.read(out, tmp);
  } finally {
    be.free(tmp);
  }
  return out;
}

/** A captured CUDA graph of the calls made inside `fn` (CUDA backend only). */
export class CapturedGraph {
  readonly backend: Backend;
  #handle: Deno.PointerObject | null;

  private constructor(backend: Backend, handle: Deno.PointerObject) {
    this.backend = backend;
    this.#handle = handle;
  }

  /** Captures the device work queued by `fn` (which must not synchronize or allocate). */
  static capture(be: Backend, fn: () => void): CapturedGraph {
    be.check(be.sym.lte_graph_begin(be.ctx), "lte_graph_begin");
    let failure: unknown = null;
    try {
      fn();
    } catch (e) {
      failure = e;
    }
    // End the capture in every case, so the stream is usable again.
    const out = new BigUint64Array(1);
    const st = be.sym.lte_graph_end(be.ctx, out);
    const handle = st === 0 && out[0] ? Deno.UnsafePointer.create(out[0]) as Deno.PointerObject : null;
    if (failure !== null) {
      if (handle) be.sym.lte_graph_free(be.ctx, handle);
      throw failure;
    }
    be.check(st, "lte_graph_end");
    if (!handle) throw new Error("CapturedGraph.capture: lte_graph_end returned no graph");
    return new CapturedGraph(be, handle);
  }

  /** Per-repetition times in µs of `inner` back-to-back replays each (after `warmup` replays). */
  time(warmup: number, reps: number, inner: number): Float32Array {
    if (this.#handle === null) throw new Error("CapturedGraph: freed");
    const us = new Float32Array(reps);
    this.backend.check(
      this.backend.sym.lte_graph_time(this.backend.ctx, this.#handle, warmup, reps, inner, us),
      "lte_graph_time",
    );
    return us;
  }

  /** Replays the graph once and waits for it. */
  replay(): void {
    this.time(1, 1, 1);
  }

  free(): void {
    if (this.#handle === null) return;
    this.backend.check(this.backend.sym.lte_graph_free(this.backend.ctx, this.#handle), "lte_graph_free");
    this.#handle = null;
  }
}
