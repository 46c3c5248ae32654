/*
 * lte_losses.c: the LTE separability penalty (stage 1), elementwise over router scores g.
 *
 *   forward   y[i]   = 1 / ((g[i] - tau)^2 + eps)
 *   backward  dg[i] += dy[i] * (-2 (g[i] - tau)) / ((g[i] - tau)^2 + eps)^2
 *
 * eps > 0 keeps the loss and its gradient finite at g = tau (the paper's Eq. 5 has eps = 0).
 * Math in double, stored as float. Forward overwrites y; backward accumulates into dg.
 */
#include "cpu_common.h"

LTE_API lte_status lte_sep_penalty_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *g, void *y, int64_t n,
                                           float tau, float eps) {
  ELEMENTWISE_PROLOGUE();
  if (!(eps > 0.0f)) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: eps must be > 0", __func__);
  CHECK_PTR(g);
  CHECK_PTR(y);
  const float *G = g;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double d = (double)G[i] - (double)tau;
    Y[i] = (float)(1.0 / (d * d + (double)eps));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sep_penalty_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *g, void *dg,
                                            int64_t n, float tau, float eps) {
  ELEMENTWISE_PROLOGUE();
  if (!(eps > 0.0f)) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: eps must be > 0", __func__);
  CHECK_PTR(dy);
  CHECK_PTR(g);
  CHECK_PTR(dg);
  const float *DY = dy, *G = g;
  float *DG = dg;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double d = (double)G[i] - (double)tau;
    const double q = d * d + (double)eps;
    DG[i] += (float)((double)DY[i] * (-2.0 * d) / (q * q));
  }
  return LTE_STATUS_OK;
}
