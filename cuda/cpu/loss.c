/*
 * loss.c: softmax cross-entropy per row (logsumexp with the max subtracted, in double).
 *
 *   logits: (R, V), targets: (R) int32, losses / dlosses: (R)
 *   forward   losses[r] = logsumexp(logits[r, :]) - logits[r, targets[r]]; 0 where target == ignore_index
 *   backward  dlogits[r, :] += dlosses[r] * (softmax(logits[r, :]) - onehot(targets[r])); ignored rows: 0
 * Targets are validated before anything is written: a target outside [0, V) that is not
 * ignore_index is LTE_STATUS_INVALID_ARGUMENT naming the first bad row. Parallel over rows.
 */
#include "cpu_common.h"

static lte_status check_targets(lte_ctx_t *ctx, const char *fn, const int32_t *targets, int64_t rows,
                                int32_t vocab, int32_t ignore_index) {
  for (int64_t r = 0; r < rows; r++) {
    const int32_t t = targets[r];
    if (t != ignore_index && (t < 0 || t >= vocab)) {
      return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT,
                      "%s: targets[%lld] = %d is outside [0, %d) and is not ignore_index (%d)", fn, (long long)r,
                      (int)t, (int)vocab, (int)ignore_index);
    }
  }
  return LTE_STATUS_OK;
}

/* max and log(sum(exp(x - max))) of one row, in double. */
static void row_logsumexp(const float *x, int64_t V, double *max_out, double *log_sum_out) {
  double mx = -INFINITY;
  for (int64_t c = 0; c < V; c++) {
    if ((double)x[c] > mx) mx = x[c];
  }
  double s = 0.0;
  for (int64_t c = 0; c < V; c++) s += exp((double)x[c] - mx);
  *max_out = mx;
  *log_sum_out = log(s);
}

LTE_API lte_status lte_cross_entropy_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                             const int32_t *targets, void *losses, int64_t rows, int32_t vocab,
                                             int32_t ignore_index) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(logits);
  CHECK_PTR(targets);
  CHECK_PTR(losses);
  LTE_TRY(check_targets(ctx, __func__, targets, rows, vocab, ignore_index));
  const float *X = logits;
  float *L = losses;
  const int64_t V = vocab;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * V > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const int32_t t = targets[r];
    if (t == ignore_index) {
      L[r] = 0.0f;
      continue;
    }
    const float *x = X + r * V;
    double mx, log_sum;
    row_logsumexp(x, V, &mx, &log_sum);
    L[r] = (float)(mx + log_sum - (double)x[t]);
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_cross_entropy_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                              const int32_t *targets, const void *dlosses, void *dlogits,
                                              int64_t rows, int32_t vocab, int32_t ignore_index) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(logits);
  CHECK_PTR(targets);
  CHECK_PTR(dlosses);
  CHECK_PTR(dlogits);
  LTE_TRY(check_targets(ctx, __func__, targets, rows, vocab, ignore_index));
  const float *X = logits, *DL = dlosses;
  float *DX = dlogits;
  const int64_t V = vocab;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * V > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const int32_t t = targets[r];
    if (t == ignore_index) continue;
    const float *x = X + r * V;
    float *dx = DX + r * V;
    double mx, log_sum;
    row_logsumexp(x, V, &mx, &log_sum);
    const double g = DL[r], shift = mx + log_sum; /* softmax_c = exp(x_c - shift) */
    for (int64_t c = 0; c < V; c++) {
      const double p = exp((double)x[c] - shift) - (c == t ? 1.0 : 0.0);
      dx[c] += (float)(g * p);
    }
  }
  return LTE_STATUS_OK;
}
