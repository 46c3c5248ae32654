/**
 * AdamW with decoupled weight decay and global gradient-norm clipping, running natively on the
 * parameters' backend. Optimizer state (m, v, step) can be exported to host arrays and restored,
 * so checkpoints resume exactly.
 *
 * @module
 */
import { ShapeError } from "./errors.ts";
import { DTypeCode } from "../ffi/symbols.ts";
import { sumSquares } from "./ops.ts";
import { noGrad, Tensor } from "./tensor.ts";

/** AdamW hyper-parameters. */
export interface AdamWOptions {
  /** Learning rate. @default 3e-4 */
  lr?: number;
  /** @default 0.9 */
  beta1?: number;
  /** @default 0.95 */
  beta2?: number;
  /** @default 1e-8 */
  eps?: number;
  /** Decoupled weight decay. @default 0.0 */
  weightDecay?: number;
  /** Which parameters get weight decay (default: those with 2 or more dims, i.e. not norms/biases). */
  decay?: (p: Tensor) => boolean;
}

/** Host copy of AdamW state, for checkpoints. */
export interface AdamWState {
  step: number;
  m: Float32Array[];
  v: Float32Array[];
}

/** AdamW optimizer over a fixed list of parameters. */
export class AdamW {
  readonly params: Tensor[];
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Number of completed steps. */
  step = 0;
  #m: Tensor[];
  #v: Tensor[];
  #decay: boolean[];

  constructor(params: Tensor[], opts: AdamWOptions = {}) {
    this.params = params;
    this.lr = opts.lr ?? 3e-4;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.95;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    const decay = opts.decay ?? ((p: Tensor) => p.shape.length >= 2);
    this.#decay = params.map(decay);
    this.#m = params.map((p) => noGrad(() => Tensor.zeros(p.shape, { device: p.device })).keep());
    this.#v = params.map((p) => noGrad(() => Tensor.zeros(p.shape, { device: p.device })).keep());
  }

  /**
   * One update from the parameters' accumulated gradients. `gradScale` multiplies every gradient
   * (global-norm clipping and averaging over accumulation steps); `lr` overrides the rate (schedules).
   * Parameters without a gradient are skipped.
   */
  update(opts: { lr?: number; gradScale?: number } = {}): void {
    this.step++;
    const lr = opts.lr ?? this.lr;
    const scale = opts.gradScale ?? 1;
    const bc1 = 1 - Math.pow(this.beta1, this.step);
    const bc2 = 1 - Math.pow(this.beta2, this.step);
    for (let i = 0; i < this.params.length; i++) {
      const p = this.params[i]!;
      if (!p.grad) continue;
      const be = p.backend;
      const wd = this.#decay[i] ? this.weightDecay : 0;
      be.check(
        be.sym.lte_adamw_step(
          be.ctx,
          DTypeCode.f32,
          p.ptr,
          p.grad.ptr,
          this.#m[i]!.ptr,
          this.#v[i]!.ptr,
          p.size,
          lr,
          this.beta1,
          this.beta2,
          this.eps,
          wd,
          bc1,
          bc2,
          scale,
        ),
        "lte_adamw_step",
      );
    }
  }

  /** State as host arrays (for checkpoints). */
  state(): AdamWState {
    return {
      step: this.step,
      m: this.#m.map((t) => t.toArray() as Float32Array),
      v: this.#v.map((t) => t.toArray() as Float32Array),
    };
  }

  /** Restores state saved by `state()`. */
  loadState(s: AdamWState): void {
    if (s.m.length !== this.params.length || s.v.length !== this.params.length) {
      throw new ShapeError("AdamW.loadState", `state has ${s.m.length} tensors, optimizer has ${this.params.length}`);
    }
    this.step = s.step;
    s.m.forEach((a, i) => this.#m[i]!.write(a));
    s.v.forEach((a, i) => this.#v[i]!.write(a));
  }

  /** Frees optimizer state. */
  dispose(): void {
    for (const t of [...this.#m, ...this.#v]) t.dispose();
  }
}

/**
 * Global L2 norm of all gradients (one device reduction per tensor, one read), and the factor
 * that clips it to `maxNorm` (1 when it is already below, or when maxNorm <= 0).
 */
export function gradNorm(params: Tensor[], maxNorm = 0): { norm: number; scale: number } {
  const withGrad = params.filter((p) => p.grad);
  if (withGrad.length === 0) return { norm: 0, scale: 1 };
  const acc = noGrad(() => Tensor.zeros([], { device: withGrad[0]!.device }));
  try {
    for (const p of withGrad) sumSquares(p.grad!, acc);
    const norm = Math.sqrt(acc.item());
    const scale = maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
    return { norm, scale };
  } finally {
    acc.dispose();
  }
}
