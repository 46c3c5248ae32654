/**
 * Target-sparsity control for LTE stage 1 (router-train): the user asks for an FFN sparsity, not
 * an η (the LTE authors' users report that sparsity is an after-the-fact outcome of η and τ, and
 * that η differs by dataset; anchors.md §6).
 *
 * Two parts (docs/lte.md, "Sparsity controller"):
 *
 * 1. `SparsityController` steers η during training: an integral controller on log η driven by the
 *    hard-mode sparsity of the training batches (fraction of (token, expert) scores ≤ τ over
 *    non-padding tokens and all layers, from the scores of the training forward pass itself),
 *    smoothed by an exponential moving average. Multiplicative steps keep η positive and make the
 *    gain independent of η's scale (η spans 0.1..2 across datasets in the paper and its issues).
 *    Its state (η, the average, the step count) is saved with the training state, so a resumed
 *    run continues bit-identically.
 * 2. `calibrateOffset` closes the remaining gap at the end: one global router-logit offset δ
 *    (added to every expert's bias in every layer) found by bisection so that the hard-mode
 *    sparsity measured on validation data lands on the target. One offset for all layers keeps
 *    LTE's inter-layer allocation (layers keep different sparsities); it only moves the global
 *    operating point, which the soft-to-hard switch and the smoothed training signal leave a few
 *    points off.
 *
 * @module
 */

/** What the controller moves: η (multiplicatively) or a global router-logit offset (additively). */
export type Actuator = "eta" | "offset";

/** Settings of the sparsity controller. */
export interface EtaControllerOptions {
  /** Asked FFN sparsity in [0, 1). */
  target: number;
  /** Starting η (> 0); with the offset actuator η stays at this value. */
  eta0: number;
  /** What to steer. @default "eta" */
  actuator?: Actuator;
  /**
   * Per step per unit of sparsity error: change of log η ("eta"), or of the logit offset
   * ("offset"). @default 0.3 for eta, 1.0 for offset
   */
  gain?: number;
  /** EMA factor of the measured sparsity (0: no smoothing). @default 0.8 */
  ema?: number;
  /** Steps before the controller acts (the learning-rate warm-up). @default 0 */
  startStep?: number;
  /** Bounds of η. @default [1e-4, 1e3] */
  etaMin?: number;
  etaMax?: number;
  /** Bound of |offset|. @default 20 */
  offsetMax?: number;
}

/** Serialisable controller state. */
export interface EtaControllerState {
  eta: number;
  offset?: number;
  ema: number | null;
  steps: number;
}

/**
 * Integral control towards a target hard-mode sparsity, on log η or on a global router-logit
 * offset (the offset is added to every router logit: a lower offset switches experts off).
 */
export class SparsityController {
  readonly actuator: Actuator;
  readonly offsetMax: number;
  offset = 0;
  readonly target: number;
  readonly gain: number;
  readonly emaFactor: number;
  readonly startStep: number;
  readonly etaMin: number;
  readonly etaMax: number;
  eta: number;
  ema: number | null = null;
  steps = 0;

  constructor(o: EtaControllerOptions) {
    if (!(o.target >= 0 && o.target < 1)) throw new RangeError(`target_sparsity must be in [0, 1), got ${o.target}`);
    if (!(o.eta0 > 0)) throw new RangeError(`the starting eta must be > 0 under target_sparsity, got ${o.eta0}`);
    this.target = o.target;
    this.eta = o.eta0;
    this.actuator = o.actuator ?? "eta";
    this.gain = o.gain ?? (this.actuator === "eta" ? 0.3 : 1.0);
    this.offsetMax = o.offsetMax ?? 20;
    this.emaFactor = o.ema ?? 0.8;
    this.startStep = o.startStep ?? 0;
    this.etaMin = o.etaMin ?? 1e-4;
    this.etaMax = o.etaMax ?? 1e3;
  }

  /** Feeds the sparsity measured at one optimizer step; updates η or the offset for the next step. */
  update(measured: number): void {
    if (Number.isFinite(measured)) {
      this.ema = this.ema === null ? measured : this.emaFactor * this.ema + (1 - this.emaFactor) * measured;
    }
    this.steps++;
    if (this.steps > this.startStep && this.ema !== null) {
      const err = this.target - this.ema; // too dense (err > 0): raise η / lower the offset
      if (this.actuator === "eta") {
        this.eta = Math.min(this.etaMax, Math.max(this.etaMin, this.eta * Math.exp(this.gain * err)));
      } else {
        this.offset = Math.min(this.offsetMax, Math.max(-this.offsetMax, this.offset - this.gain * err));
      }
    }
  }

  state(): EtaControllerState {
    return { eta: this.eta, offset: this.offset, ema: this.ema, steps: this.steps };
  }

  load(s: EtaControllerState): void {
    this.eta = s.eta;
    this.offset = s.offset ?? 0;
    this.ema = s.ema;
    this.steps = s.steps;
  }
}

/** Result of `calibrateOffset`. */
export interface CalibrationResult {
  /** The logit offset chosen. */
  offset: number;
  /** Sparsity measured with it. */
  sparsity: number;
  /** Sparsity measured with offset 0 (before calibration). */
  before: number;
  /** (offset, sparsity) pairs tried, in order. */
  trace: [number, number][];
}

/**
 * Finds a logit offset δ with |sparsity(δ) − target| ≤ tol by bisection, where `measure(δ)` is the
 * hard-mode sparsity with δ added to every router logit (sparsity falls as δ grows). Returns the
 * best offset tried when the tolerance cannot be met within `maxIter` (e.g. ties at 0 or 1).
 */
export function calibrateOffset(
  measure: (offset: number) => number,
  opts: { target: number; tol?: number; maxIter?: number; span?: number },
): CalibrationResult {
  const tol = opts.tol ?? 0.005, maxIter = opts.maxIter ?? 24, span = opts.span ?? 16;
  const trace: [number, number][] = [];
  const at = (d: number) => {
    const s = measure(d);
    trace.push([d, s]);
    return s;
  };
  const before = at(0);
  let best: [number, number] = [0, before];
  const better = (d: number, s: number) => {
    if (Math.abs(s - opts.target) < Math.abs(best[1] - opts.target)) best = [d, s];
  };
  if (Math.abs(before - opts.target) <= tol) return { offset: 0, sparsity: before, before, trace };
  // Bracket: sparsity(lo) >= target >= sparsity(hi), lo < hi.
  let lo: number, hi: number;
  if (before > opts.target) {
    lo = 0;
    hi = 1;
    while (hi < span) {
      const s = at(hi);
      better(hi, s);
      if (s <= opts.target) break;
      lo = hi;
      hi *= 2;
    }
  } else {
    hi = 0;
    lo = -1;
    while (lo > -span) {
      const s = at(lo);
      better(lo, s);
      if (s >= opts.target) break;
      hi = lo;
      lo *= 2;
    }
  }
  for (let i = 0; i < maxIter && Math.abs(best[1] - opts.target) > tol; i++) {
    const mid = (lo + hi) / 2;
    const s = at(mid);
    better(mid, s);
    if (s > opts.target) lo = mid;
    else hi = mid;
  }
  return { offset: best[0], sparsity: best[1], before, trace };
}
