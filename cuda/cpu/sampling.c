/*
 * sampling.c: greedy argmax and nucleus (top-p) sampling per row.
 *
 *   argmax     out[r] = argmax_c x[r, c], the lowest index among ties (NaN entries never win
 *              unless the row starts with one)                 x: (R, cols), out: (R) int32
 *   top-p      exactly the definition in lte.h, in double:
 *                p      = softmax(logits[r, :] / temperature)  (max subtracted)
 *                p_cut  = the largest probability value with sum{p_i : p_i >= p_cut} >= top_p,
 *                         found by walking a descending copy of p one group of equal values at a
 *                         time (if rounding leaves the full mass just below top_p, every token is kept)
 *                kept   = {i : p_i >= p_cut}, mass = sum of kept p_i in index order
 *                u      = lte_uniform(seed, r) * mass
 *                out[r] = first kept i (index order) whose running kept mass exceeds u, else the last kept i
 * Parallel over rows; each thread has its own scratch (2V doubles).
 */
#include "cpu_common.h"

LTE_API lte_status lte_argmax(lte_ctx_t *ctx, lte_dtype dtype, const void *x, int32_t *out, int64_t rows,
                              int32_t cols) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(out);
  const float *X = x;
  const int64_t C = cols;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * C;
    int64_t best = 0;
    for (int64_t c = 1; c < C; c++) {
      if (xr[c] > xr[best]) best = c;
    }
    out[r] = (int32_t)best;
  }
  return LTE_STATUS_OK;
}

static int cmp_desc(const void *pa, const void *pb) {
  const double a = *(const double *)pa, b = *(const double *)pb;
  return (a < b) - (a > b);
}

LTE_API lte_status lte_sample_top_p(lte_ctx_t *ctx, lte_dtype dtype, const void *logits, int32_t *out,
                                    int64_t rows, int32_t vocab, float temperature, float top_p, uint64_t seed) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(vocab);
  if (!(temperature > 0.0f) || !isfinite(temperature)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: temperature = %g must be finite and > 0", __func__,
                (double)temperature);
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: top_p = %g must be in (0, 1]", __func__, (double)top_p);
  }
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(logits);
  CHECK_PTR(out);
  const float *X = logits;
  const int64_t V = vocab;
  const int nt = lte_nthreads(ctx);
  int alloc_failed = 0;
#pragma omp parallel num_threads(nt) if (rows > 1 && rows * V > LTE_PAR_MIN)
  {
    double *p = malloc((size_t)(2 * V) * sizeof(double)); /* probabilities, sorted copy */
    if (!p) {
#pragma omp atomic write
      alloc_failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      if (!p) continue;
      double *sorted = p + V;
      const float *xr = X + r * V;
      /* p = softmax(x / temperature) */
      double mx = -INFINITY;
      for (int64_t i = 0; i < V; i++) {
        const double z = (double)xr[i] / (double)temperature;
        p[i] = z;
        if (z > mx) mx = z;
      }
      double sum = 0.0;
      for (int64_t i = 0; i < V; i++) {
        p[i] = exp(p[i] - mx);
        sum += p[i];
      }
      for (int64_t i = 0; i < V; i++) p[i] /= sum;
      /* p_cut: walk distinct values in descending order until the mass >= top_p */
      memcpy(sorted, p, (size_t)V * sizeof(double));
      qsort(sorted, (size_t)V, sizeof(double), cmp_desc);
      double p_cut = sorted[V - 1], mass_above = 0.0;
      for (int64_t i = 0; i < V;) {
        const double value = sorted[i];
        while (i < V && sorted[i] == value) mass_above += sorted[i++]; /* the whole group of ties */
        if (mass_above >= (double)top_p) {
          p_cut = value;
          break;
        }
      }
      /* u in [0, kept mass); walk kept indices in increasing order */
      double kept_mass = 0.0;
      for (int64_t i = 0; i < V; i++) {
        if (p[i] >= p_cut) kept_mass += p[i];
      }
      const double u = (double)lte_uniform(seed, r) * kept_mass;
      int64_t chosen = -1, last_kept = 0;
      double running = 0.0;
      for (int64_t i = 0; i < V; i++) {
        if (p[i] < p_cut) continue;
        last_kept = i;
        running += p[i];
        if (running > u) {
          chosen = i;
          break;
        }
      }
      out[r] = (int32_t)(chosen >= 0 ? chosen : last_kept);
    }
    free(p);
  }
  if (alloc_failed) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch memory", __func__);
  return LTE_STATUS_OK;
}
