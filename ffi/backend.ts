/**
 * A `Backend` is one loaded native library plus one context (device, stream, allocator). All
 * native calls go through `backend.sym` and have their status turned into exceptions by
 * `backend.check` — the one place where that happens.
 *
 * @example
 * ```ts
 * import { getBackend } from "./backend.ts";
 * const cpu = getBackend("cpu");
 * console.log(cpu.deviceInfo());
 * ```
 * @module
 */
import type { BackendKind } from "../cuda/sources.ts";
import { nativeError } from "./errors.ts";
import { cString, type LoadedLibrary, loadLibrary } from "./library.ts";
import { type LteSymbols, Option, Status } from "./symbols.ts";

export type { BackendKind };

/** Memory statistics of a backend context, in bytes. */
export interface MemStats {
  bytesInUse: number;
  bytesCached: number;
  peakBytesInUse: number;
  numAllocs: number;
  deviceTotal: number;
  deviceFree: number;
}

/** One native library + context. Obtain with `getBackend`; close with `close()` or `using`. */
export class Backend {
  /** `cpu` or `cuda`. */
  readonly kind: BackendKind;
  /** Path the library was loaded from. */
  readonly path: string;
  /** Build id of the loaded library. */
  readonly buildId: string;
  /** Raw typed symbols; call through `check`. */
  readonly sym: LteSymbols;
  #lib: LoadedLibrary;
  #ctx: Deno.PointerObject | null;
  #out = new BigUint64Array(1);

  constructor(lib: LoadedLibrary, deviceIndex = 0) {
    this.kind = lib.kind;
    this.path = lib.path;
    this.buildId = lib.buildId;
    this.sym = lib.symbols;
    this.#lib = lib;
    const status = this.sym.lte_ctx_create(deviceIndex, this.#out);
    if (status !== Status.OK) {
      const msg = cString(this.sym.lte_last_error());
      throw nativeError(status, "lte_ctx_create", this.kind, msg);
    }
    this.#ctx = Deno.UnsafePointer.create(this.#out[0]!) as Deno.PointerObject;
  }

  /** The native context pointer (first argument of every op). */
  get ctx(): Deno.PointerObject {
    if (this.#ctx === null) throw new Error(`the ${this.kind} backend has been closed`);
    return this.#ctx;
  }

  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#ctx === null;
  }

  /** Throws the typed error for a non-OK status of native function `op`. */
  check(status: number, op: string): void {
    if (this.#profile !== null && status === Status.OK) this.#recordProfile(op);
    if (status === Status.OK) return;
    const msg = this.#ctx === null
      ? cString(this.sym.lte_last_error())
      : cString(this.sym.lte_ctx_last_error(this.#ctx));
    throw nativeError(status, op, this.kind, msg);
  }

  #profile: Map<string, { calls: number; ms: number }> | null = null;
  #profileLast = 0;

  #recordProfile(op: string): void {
    // Every native call goes through check(), in order: the time since the previous call, after
    // waiting for the device, is this call's cost (host overhead + kernel).
    this.sym.lte_ctx_synchronize(this.ctx);
    const now = performance.now();
    const e = this.#profile!.get(op) ?? { calls: 0, ms: 0 };
    e.calls++;
    e.ms += now - this.#profileLast;
    this.#profile!.set(op, e);
    this.#profileLast = now;
  }

  /**
   * Starts per-op profiling: from now on every native call synchronizes and its time is summed by
   * native function name. Slows execution (no overlap); for "where does the time go" only.
   */
  startProfile(): void {
    this.synchronize();
    this.#profile = new Map();
    this.#profileLast = performance.now();
  }

  /** Stops profiling and returns time per native function, largest first. */
  stopProfile(): { op: string; calls: number; ms: number }[] {
    const p = this.#profile ?? new Map();
    this.#profile = null;
    return [...p].map(([op, e]) => ({ op, ...e })).sort((a, b) => b.ms - a.ms);
  }

  /** Allocates `bytes` of device (or host, on CPU) memory. */
  alloc(bytes: number): Deno.PointerObject {
    this.check(this.sym.lte_mem_alloc(this.ctx, BigInt(Math.max(1, bytes)), this.#out), "lte_mem_alloc");
    return Deno.UnsafePointer.create(this.#out[0]!) as Deno.PointerObject;
  }

  /** Returns memory to the allocator. */
  free(ptr: Deno.PointerValue): void {
    if (ptr === null || this.#ctx === null) return;
    this.check(this.sym.lte_mem_free(this.#ctx, ptr), "lte_mem_free");
  }

  /** Copies host data to `dst`. */
  write(dst: Deno.PointerObject, src: ArrayBufferView): void {
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    this.check(this.sym.lte_mem_write(this.ctx, dst, bytes, BigInt(bytes.byteLength)), "lte_mem_write");
  }

  /** Copies `dst.byteLength` bytes from `src` to host memory (waits for queued work). */
  read(dst: ArrayBufferView, src: Deno.PointerObject): void {
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    this.check(this.sym.lte_mem_read(this.ctx, bytes, src, BigInt(bytes.byteLength)), "lte_mem_read");
  }

  /** Like `read`, but waits on a worker thread so the event loop keeps running. */
  async readAsync(dst: ArrayBufferView, src: Deno.PointerObject): Promise<void> {
    // Nonblocking calls reject resizable buffers; copy through a fixed one if needed.
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    this.check(await this.sym.lte_mem_read_async(this.ctx, bytes, src, BigInt(bytes.byteLength)), "lte_mem_read");
  }

  /**
   * Allocates `bytes` of pinned host staging memory (CUDA: page-locked; CPU: plain memory) for
   * `readStart`; freed by `hostFree` or with the context.
   */
  hostAlloc(bytes: number): Deno.PointerObject {
    this.check(this.sym.lte_host_alloc(this.ctx, BigInt(bytes), this.#out), "lte_host_alloc");
    return Deno.UnsafePointer.create(this.#out[0]!) as Deno.PointerObject;
  }

  /** Frees a `hostAlloc` block (waits for a read still writing into it). */
  hostFree(ptr: Deno.PointerValue): void {
    if (ptr === null || this.#ctx === null) return;
    this.check(this.sym.lte_host_free(this.#ctx, ptr), "lte_host_free");
  }

  /**
   * Queues a copy of `bytes` from device memory `src` into `dst` (inside a `hostAlloc` block)
   * behind the work already queued, and returns at once; `readWait(dst)` waits for exactly it.
   */
  readStart(dst: Deno.PointerObject, src: Deno.PointerObject, bytes: number): void {
    this.check(this.sym.lte_mem_read_start(this.ctx, dst, src, BigInt(bytes)), "lte_mem_read_start");
  }

  /** Waits (blocking the JS thread) for the last `readStart` into `dst`'s block. */
  readWait(dst: Deno.PointerObject): void {
    this.check(this.sym.lte_mem_read_wait(this.ctx, dst), "lte_mem_read_wait");
  }

  /** Like `readWait`, but waits on a worker thread so the event loop keeps running. */
  async readWaitAsync(dst: Deno.PointerObject): Promise<void> {
    this.check(await this.sym.lte_mem_read_wait_async(this.ctx, dst), "lte_mem_read_wait");
  }

  /** Waits for queued work; reports asynchronous kernel errors. */
  synchronize(): void {
    this.check(this.sym.lte_ctx_synchronize(this.ctx), "lte_ctx_synchronize");
  }

  /** Waits for queued work on a worker thread (keeps a server responsive). */
  async synchronizeAsync(): Promise<void> {
    this.check(await this.sym.lte_ctx_synchronize_async(this.ctx), "lte_ctx_synchronize");
  }

  /** Sets a context option (`Option.*`). */
  setOption(option: number, value: number): void {
    this.check(this.sym.lte_ctx_set_option(this.ctx, option, BigInt(value)), "lte_ctx_set_option");
  }

  /** Lets cuBLAS use TF32 tensor cores for f32 matmuls (CUDA only; no-op on CPU). */
  setAllowTf32(on: boolean): void {
    this.setOption(Option.ALLOW_TF32, on ? 1 : 0);
  }

  /** Allocation statistics. */
  memStats(): MemStats {
    const buf = new BigUint64Array(6);
    this.check(this.sym.lte_mem_stats(this.ctx, buf), "lte_mem_stats");
    const n = (i: number) => Number(buf[i]!);
    return {
      bytesInUse: n(0),
      bytesCached: n(1),
      peakBytesInUse: n(2),
      numAllocs: n(3),
      deviceTotal: n(4),
      deviceFree: n(5),
    };
  }

  /** Releases cached blocks back to the device. */
  emptyCache(): void {
    this.check(this.sym.lte_mem_empty_cache(this.ctx), "lte_mem_empty_cache");
  }

  /** Device description reported by the library (name, memory, cuBLAS path...). */
  deviceInfo(): Record<string, unknown> {
    const buf = new Uint8Array(4096);
    this.check(this.sym.lte_ctx_device_info(this.ctx, buf, buf.length), "lte_ctx_device_info");
    const text = new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
    try {
      return JSON.parse(text);
    } catch {
      return { raw: text };
    }
  }

  /** Frees the context (and everything allocated from it). Idempotent. */
  close(): void {
    if (this.#ctx === null) return;
    this.sym.lte_ctx_free(this.#ctx);
    this.#ctx = null;
    backends.delete(this.kind);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** The underlying library handle (closing it is left to process exit: contexts may outlive). */
  get library(): LoadedLibrary {
    return this.#lib;
  }
}

const backends = new Map<BackendKind, Backend>();
const failures = new Map<BackendKind, Error>();

/** The shared backend of a kind (created on first use). Throws if it cannot be loaded. */
export function getBackend(kind: BackendKind): Backend {
  let b = backends.get(kind);
  if (b && !b.closed) return b;
  const failed = failures.get(kind);
  if (failed) throw failed;
  try {
    b = new Backend(loadLibrary(kind));
  } catch (e) {
    failures.set(kind, e as Error);
    throw e;
  }
  backends.set(kind, b);
  return b;
}

/** Whether a backend can be created here (library present and, for CUDA, a usable GPU). */
export function backendAvailable(kind: BackendKind): boolean {
  try {
    getBackend(kind);
    return true;
  } catch {
    return false;
  }
}

/** Resolves a device request: `auto` picks CUDA when a GPU is usable, else CPU. */
export function resolveDevice(device: "cpu" | "cuda" | "auto"): BackendKind {
  if (device !== "auto") return device;
  return backendAvailable("cuda") ? "cuda" : "cpu";
}
