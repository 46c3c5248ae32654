/**
 * Tensors: a shape, a dtype and a block of backend memory. Storage is released deterministically:
 * by `dispose()`, or at the end of the `scope()` that created the tensor; a FinalizationRegistry
 * frees storage of tensors that were dropped without either, as a backstop only.
 *
 * Dtypes: `f32` and `i32` are computed today; `f16`/`bf16` exist as storage types so checkpoints and
 * the serving kernels can use them without changing this API (ops reject them until kernels land).
 *
 * @example
 * ```ts
 * import { scope, Tensor } from "./tensor.ts";
 * const y = scope(() => {
 *   const x = Tensor.fromArray([1, 2, 3, 4], [2, 2], { device: "cpu" });
 *   return x.reshape([4]);
 * });
 * console.log(y.toArray()); // Float32Array [1, 2, 3, 4]
 * y.dispose();
 * ```
 * @module
 */
import { type Backend, type BackendKind, getBackend } from "../ffi/backend.ts";
import { DisposedTensorError, ShapeError } from "./errors.ts";
import { DTypeCode } from "../ffi/symbols.ts";

/** Element types. */
export type DType = "f32" | "i32" | "f16" | "bf16";
/** Where a tensor lives. */
export type Device = BackendKind;

const DTYPE_BYTES: Record<DType, number> = { f32: 4, i32: 4, f16: 2, bf16: 2 };

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return DTYPE_BYTES[dtype];
}

/** Native code of a dtype. */
export function dtypeCode(dtype: DType): number {
  return DTypeCode[dtype];
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Formats a shape for messages: `[2, 3]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Reference-counted block of backend memory shared by a tensor and its reshaped views. */
class Storage {
  refs = 1;
  constructor(readonly backend: Backend, public ptr: Deno.PointerObject | null, readonly bytes: number) {}
  release(): void {
    if (--this.refs > 0 || this.ptr === null) return;
    const p = this.ptr;
    this.ptr = null;
    if (!this.backend.closed) this.backend.free(p);
    liveStorages--;
  }
}

let liveStorages = 0;
let liveTensors = 0;

const finalizer = new FinalizationRegistry<Storage>((s) => {
  // Backstop only: the tensor was garbage-collected without dispose(). Release its storage ref.
  try {
    s.release();
  } catch { /* the backend may be gone at shutdown */ }
});

/** A node of the autograd graph: how to push an output gradient to the inputs. */
export interface GradNode {
  /** Op name, for error messages. */
  op: string;
  /** Inputs that need gradients. */
  inputs: Tensor[];
  /**
   * Accumulates input gradients; `gradOf(t)` returns t's gradient buffer (zero-initialised).
   * `adopt(t, g)` makes `g` (unchanged) t's gradient if t has none yet and returns true; a node
   * whose gradient passes through unchanged tries it before accumulating.
   */
  backward(grad: Tensor, gradOf: (t: Tensor) => Tensor, adopt: (t: Tensor, g: Tensor) => boolean): void;
}

// ---------------------------------------------------------------- scopes

const scopeStack: Set<Tensor>[] = [];

function track(t: Tensor): void {
  scopeStack[scopeStack.length - 1]?.add(t);
}

function collectTensors(value: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || value === null || typeof value !== "object") return;
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) { for (const v of value) collectTensors(v, out, depth + 1); }
  else if (value.constructor === Object) { for (const v of Object.values(value)) collectTensors(v, out, depth + 1); }
}

/**
 * Runs `fn`; every tensor created inside and not returned (directly, or in an array or plain
 * object) is disposed when it returns or throws. Returned tensors move to the enclosing scope.
 */
export function scope<T>(fn: () => T): T {
  const created = new Set<Tensor>();
  scopeStack.push(created);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopeStack.pop();
    for (const t of created) t.dispose();
    throw e;
  }
  scopeStack.pop();
  if (result instanceof Promise) {
    for (const t of created) t.dispose();
    throw new TypeError("scope: fn must be synchronous (tensors created after an await cannot be attributed)");
  }
  const keep = new Set<Tensor>();
  collectTensors(result, keep);
  for (const t of created) {
    if (keep.has(t) || t.kept) {
      if (!t.kept) track(t);
    } else t.dispose();
  }
  return result;
}

/** Counters for leak tests: live tensors and live storages created by this module. */
export function liveCounts(): { tensors: number; storages: number } {
  return { tensors: liveTensors, storages: liveStorages };
}

// ---------------------------------------------------------------- tensor

/** Options for creating a tensor. */
export interface TensorOptions {
  /** Backend; default `cpu`. */
  device?: Device;
  /** Element type; default `f32` (or `i32` for Int32Array data). */
  dtype?: DType;
  /** Record operations on this tensor for autograd. */
  requiresGrad?: boolean;
  /** Name used in messages and checkpoints. */
  name?: string;
}

/** An n-dimensional array in backend memory. */
export class Tensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Backend the data lives on. */
  readonly backend: Backend;
  /** Whether gradients flow to this tensor. */
  requiresGrad: boolean;
  /** Accumulated gradient (leaves only), created by the first backward pass. */
  grad: Tensor | null = null;
  /** How this tensor was computed (non-leaves with requiresGrad); released by `backward`. */
  node: GradNode | null = null;
  /** Set when an op recorded this tensor in the graph: it is not a leaf even once `node` is released. */
  computed = false;
  /** Optional name (parameters). */
  name: string | undefined;
  /**
   * Host copy of an i32 tensor created from host data and never written since (token ids and
   * targets): lets ops range-check indices without reading the device. Not kept for f32 data, so
   * parameters do not cost host memory twice.
   */
  hostCopy: Int32Array | null = null;
  /** Set by `keep()`: survives the scope it was created in. */
  kept = false;
  #storage: Storage | null;

  /** Low level: wraps storage. Use the static constructors instead. */
  constructor(shape: readonly number[], dtype: DType, backend: Backend, storage?: Storage) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError("Tensor", `invalid shape ${fmtShape(shape)}`);
    }
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.backend = backend;
    this.requiresGrad = false;
    this.name = undefined;
    if (storage) {
      storage.refs++;
      this.#storage = storage;
    } else {
      const bytes = numel(shape) * DTYPE_BYTES[dtype];
      this.#storage = new Storage(backend, backend.alloc(bytes), bytes);
      liveStorages++;
    }
    liveTensors++;
    finalizer.register(this, this.#storage, this);
    track(this);
  }

  /** Uninitialised tensor. */
  static empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
    const t = new Tensor(shape, opts.dtype ?? "f32", getBackend(opts.device ?? "cpu"));
    return t.#init(opts);
  }

  /** Tensor filled with `value`. */
  static full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
    const t = Tensor.empty(shape, opts);
    t.fill(value);
    return t;
  }

  /** Zeros. */
  static zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
    return Tensor.full(shape, 0, opts);
  }

  /** Tensor from host data (copied). Int32Array data gives an i32 tensor unless dtype says otherwise. */
  static fromArray(
    data: ArrayLike<number> | Float32Array | Int32Array,
    shape: readonly number[],
    opts: TensorOptions = {},
  ): Tensor {
    const dtype = opts.dtype ?? (data instanceof Int32Array ? "i32" : "f32");
    if (dtype !== "f32" && dtype !== "i32") {
      throw new ShapeError("Tensor.fromArray", `host data can be f32 or i32, got ${dtype}`);
    }
    if (data.length !== numel(shape)) {
      throw new ShapeError("Tensor.fromArray", `${data.length} values do not fill shape ${fmtShape(shape)}`);
    }
    const host = dtype === "i32"
      ? (data instanceof Int32Array ? data : Int32Array.from(data))
      : (data instanceof Float32Array ? data : Float32Array.from(data));
    const t = Tensor.empty(shape, { ...opts, dtype });
    if (host.length > 0) t.backend.write(t.ptr, host);
    if (host instanceof Int32Array) t.hostCopy = host.slice();
    return t;
  }

  /** Scalar tensor. */
  static scalar(value: number, opts: TensorOptions = {}): Tensor {
    return Tensor.fromArray([value], [], opts);
  }

  #init(opts: TensorOptions): Tensor {
    if (opts.requiresGrad) this.requiresGrad = true;
    if (opts.name !== undefined) this.name = opts.name;
    return this;
  }

  /** Device name. */
  get device(): Device {
    return this.backend.kind;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Size in bytes. */
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** Whether `dispose()` has run. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** Native pointer to the data; throws if disposed. */
  get ptr(): Deno.PointerObject {
    const s = this.#storage;
    if (s === null || s.ptr === null) throw new DisposedTensorError(this.describe());
    return s.ptr;
  }

  /** Pointer `elements` elements past the start (for column slices). */
  ptrAt(elements: number): Deno.PointerObject {
    return Deno.UnsafePointer.offset(this.ptr, elements * DTYPE_BYTES[this.dtype]) as Deno.PointerObject;
  }

  /** Short description for messages: `f32[2, 3]@cpu 'name'`. */
  describe(): string {
    return `${this.dtype}${fmtShape(this.shape)}@${this.device}${this.name ? ` '${this.name}'` : ""}`;
  }

  /** Keeps this tensor alive past the scope that created it (e.g. parameters, optimizer state). */
  keep(): this {
    this.kept = true;
    for (const s of scopeStack) s.delete(this);
    return this;
  }

  /** Releases the storage (idempotent). Gradients are disposed too. */
  dispose(): void {
    if (this.#storage === null) return;
    finalizer.unregister(this);
    const s = this.#storage;
    this.#storage = null;
    this.node = null;
    liveTensors--;
    s.release();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Same data, new shape (shares storage; no copy). Gradients flow through. */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveShape(shape, this.size);
    const t = new Tensor(resolved, this.dtype, this.backend, this.#liveStorage());
    if (this.hostCopy) t.hostCopy = this.hostCopy;
    if (this.requiresGrad && gradEnabled()) {
      t.requiresGrad = true;
      t.computed = true;
      t.node = {
        op: "reshape",
        inputs: [this],
        backward: (g, gradOf, adopt) => {
          if (adopt(this, g)) return;
          const gx = gradOf(this);
          g.backend.check(
            g.backend.sym.lte_axpy(g.backend.ctx, DTypeCode.f32, g.ptr, gx.ptr, g.size, 1),
            "lte_axpy",
          );
        },
      };
    }
    return t;
  }

  #liveStorage(): Storage {
    if (this.#storage === null || this.#storage.ptr === null) throw new DisposedTensorError(this.describe());
    return this.#storage;
  }

  /** Sets every element to `value`. */
  fill(value: number): this {
    const b = this.backend;
    if (this.size > 0) b.check(b.sym.lte_fill(b.ctx, dtypeCode(this.dtype), this.ptr, this.size, value), "lte_fill");
    this.hostCopy = null;
    return this;
  }

  /** Overwrites the data from host memory. */
  write(data: ArrayLike<number>): this {
    if (data.length !== this.size) {
      throw new ShapeError("Tensor.write", `${data.length} values for ${this.describe()}`);
    }
    const host = this.dtype === "i32" ? Int32Array.from(data) : this.dtype === "f32" ? Float32Array.from(data) : null;
    if (!host) throw new ShapeError("Tensor.write", `cannot write host numbers into ${this.dtype}`);
    if (host.length > 0) this.backend.write(this.ptr, host);
    this.hostCopy = null;
    return this;
  }

  /** Copies the data to the host (waits for queued work). */
  toArray(): Float32Array | Int32Array {
    const out = this.#hostBuffer("Tensor.toArray");
    if (out.length > 0) this.backend.read(out, this.ptr);
    return out;
  }

  /** Like `toArray`, waiting on a worker thread (keeps a server's event loop free). */
  async toArrayAsync(): Promise<Float32Array | Int32Array> {
    const out = this.#hostBuffer("Tensor.toArrayAsync");
    if (out.length > 0) await this.backend.readAsync(out, this.ptr);
    return out;
  }

  #hostBuffer(op: string): Float32Array | Int32Array {
    if (this.dtype === "i32") return new Int32Array(this.size);
    if (this.dtype === "f32") return new Float32Array(this.size);
    throw new ShapeError(op, `reading ${this.dtype} to the host is not supported yet`);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new ShapeError("Tensor.item", `needs one element, got ${this.describe()}`);
    return this.toArray()[0]!;
  }

  /** Copy to another device (or the same one); no gradient. */
  to(device: Device): Tensor {
    const t = Tensor.empty(this.shape, { device, dtype: this.dtype });
    if (this.size === 0) return t;
    if (device === this.device) {
      this.backend.check(
        this.backend.sym.lte_mem_copy(this.backend.ctx, t.ptr, this.ptr, BigInt(this.byteLength)),
        "lte_mem_copy",
      );
    } else {
      t.backend.write(t.ptr, this.toArray());
    }
    return t;
  }

  /** A copy with no autograd history. */
  detach(): Tensor {
    return this.to(this.device);
  }
}

/** Resolves one `-1` in a shape and checks the element count. */
function resolveShape(shape: readonly number[], size: number): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (free >= 0) {
    const rest = numel(out.filter((_, i) => i !== free));
    if (rest === 0 || size % rest !== 0) {
      throw new ShapeError("reshape", `cannot reshape ${size} elements to ${fmtShape(shape)}`);
    }
    out[free] = size / rest;
  }
  if (numel(out) !== size) throw new ShapeError("reshape", `cannot reshape ${size} elements to ${fmtShape(shape)}`);
  return out;
}

// ---------------------------------------------------------------- grad mode

let gradDepth = 0;

/** Whether ops record the autograd graph (false inside `noGrad`). */
export function gradEnabled(): boolean {
  return gradDepth === 0;
}

/** Runs `fn` without recording autograd history (eval, serving, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  gradDepth++;
  try {
    return fn();
  } finally {
    gradDepth--;
  }
}
