/**
 * The LTE stage-1 regularisers over router scores G (lte-spec.md §3, Eq. 4–6):
 *
 *   L_eff = mean over (non-padding tokens × layers × experts) of G²
 *   L_sep = mean over the same of 1 / ((G − τ)² + ε)        (ε > 0, default 1e-4: the paper's ε = 0
 *           is infinite at G = τ; the guard keeps loss and gradient finite)
 *
 * Both are one global mean over all layers, so layers compete for the sparsity budget
 * ("inter-layer orchestration"). The stage-1 objective is L_task + η·L_eff + λ·L_sep.
 *
 * @module
 */
import { add, expertScale, mul, scale, sepPenalty, sum, type Tensor } from "../tensor/mod.ts";
import { IGNORE_INDEX } from "../text/dataset.ts";

/** Default ε of the separability guard. */
export const DEFAULT_SEP_EPS = 1e-4;

/** Options of `routerLosses`. */
export interface RouterLossOptions {
  /** Threshold τ of the separability loss (0.5 in the paper). */
  tau: number;
  /** Guard ε > 0 of the separability loss. */
  eps?: number;
  /**
   * Per row (R) 1 for tokens that count, 0 for padding; null: every row counts. Build it with
   * `tokenMask`. Shape (R, 1) or (R).
   */
  rowMask?: Tensor | null;
  /** Number of rows with mask 1 (defaults to the row count when there is no mask). */
  count?: number;
}

/** L_eff and L_sep (scalar tensors, differentiable in the scores). */
export interface RouterLosses {
  eff: Tensor;
  sep: Tensor;
}

function masked(x: Tensor, rowMask: Tensor | null | undefined): Tensor {
  if (!rowMask) return x;
  const n = x.shape[x.shape.length - 1]!;
  // Scale every row of x (R, N) by its mask entry: expertScale with one "expert" of N columns.
  return expertScale(x, rowMask.reshape([x.size / n, 1]), n);
}

/**
 * L_eff = mean G² and L_sep = mean 1/((G−τ)²+ε) over the rows that count × layers × experts, for
 * per-layer scores (R, N) from `model.forward(ids, { collectScores: true })`.
 */
export function routerLosses(scores: Tensor[], opts: RouterLossOptions): RouterLosses {
  if (scores.length === 0) throw new RangeError("routerLosses: no router scores (the model has no routed layers)");
  const eps = opts.eps ?? DEFAULT_SEP_EPS;
  if (!(opts.tau > 0 && opts.tau < 1)) throw new RangeError(`routerLosses: tau must be in (0, 1), got ${opts.tau}`);
  if (!(eps > 0)) throw new RangeError(`routerLosses: eps must be > 0, got ${eps}`);
  const first = scores[0]!;
  const n = first.shape[first.shape.length - 1]!;
  const rows = first.size / n;
  const count = opts.count ?? rows;
  if (count <= 0) {
    // No token counts (an all-padding batch): zero losses that still connect to the graph.
    const z = scale(sum(scores[0]!), 0);
    return { eff: z, sep: scale(z, 1) };
  }
  let eff: Tensor | null = null, sep: Tensor | null = null;
  for (const g of scores) {
    const e = sum(masked(mul(g, g), opts.rowMask));
    const s = sum(masked(sepPenalty(g, opts.tau, eps), opts.rowMask));
    eff = eff ? add(eff, e) : e;
    sep = sep ? add(sep, s) : s;
  }
  const denom = count * n * scores.length;
  return { eff: scale(eff!, 1 / denom), sep: scale(sep!, 1 / denom) };
}

/**
 * Which rows (B*T input positions) are real tokens: 0 for the padding that `packSequence` appends
 * after a stream ends (the trailing run of positions whose input is `padId` and whose target is
 * ignored), 1 otherwise. Prompt tokens (ignored targets, real inputs) count. Returns the mask and
 * the number of ones; the mask is null when every row counts.
 */
export function tokenMask(
  inputs: Int32Array,
  targets: Int32Array,
  batchRows: number,
  seqLen: number,
  padId: number,
): { mask: Float32Array | null; count: number } {
  const mask = new Float32Array(batchRows * seqLen).fill(1);
  let count = batchRows * seqLen;
  for (let r = 0; r < batchRows; r++) {
    for (let t = seqLen - 1; t >= 0; t--) {
      const i = r * seqLen + t;
      if (inputs[i] !== padId || targets[i] !== IGNORE_INDEX) break;
      mask[i] = 0;
      count--;
    }
  }
  return { mask: count === batchRows * seqLen ? null : mask, count };
}

/** Host-side histogram of scores in [0, 1] (bins equal-width), over rows with mask 1. */
export function scoreHistogram(
  scores: Float32Array,
  n: number,
  bins: number,
  rowMask: Float32Array | null,
  into?: number[],
): number[] {
  const h = into ?? new Array(bins).fill(0);
  const rows = scores.length / n;
  for (let r = 0; r < rows; r++) {
    if (rowMask && rowMask[r] === 0) continue;
    for (let e = 0; e < n; e++) {
      const v = scores[r * n + e]!;
      h[Math.min(bins - 1, Math.max(0, Math.floor(v * bins)))]++;
    }
  }
  return h;
}
