/*
 * routing.c: LTE expert scaling, a per-expert factor repeated over each expert's S neurons.
 *
 *   forward   y[r, e*S + j] = h[r, e*S + j] * g[r, e]           h, y: (R, N*S), g: (R, N)
 *   backward  dh[r, e*S + j] += dy[r, e*S + j] * g[r, e]
 *             dg[r, e]       += sum_j dy[r, e*S + j] * h[r, e*S + j]   (double, j in order)
 * Parallel over rows R: every output row belongs to one thread.
 */
#include "cpu_common.h"

LTE_API lte_status lte_expert_scale_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *h, const void *g, void *y,
                                            int64_t rows, int32_t n_experts, int32_t expert_size) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(n_experts);
  CHECK_POS(expert_size);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(h);
  CHECK_PTR(g);
  CHECK_PTR(y);
  const float *H = h, *G = g;
  float *Y = y;
  const int64_t N = n_experts, S = expert_size, width = N * S;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * width > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t e = 0; e < N; e++) {
      const float ge = G[r * N + e];
      const float *hr = H + r * width + e * S;
      float *yr = Y + r * width + e * S;
      for (int64_t j = 0; j < S; j++) yr[j] = hr[j] * ge;
    }
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_expert_scale_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *h,
                                             const void *g, void *dh, void *dg, int64_t rows, int32_t n_experts,
                                             int32_t expert_size) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(n_experts);
  CHECK_POS(expert_size);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(dy);
  if (dh) CHECK_PTR(g);
  if (dg) CHECK_PTR(h);
  const float *DY = dy, *H = h, *G = g;
  float *DH = dh, *DG = dg;
  const int64_t N = n_experts, S = expert_size, width = N * S;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * width > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t e = 0; e < N; e++) {
      const int64_t off = r * width + e * S;
      if (DH) {
        const float ge = G[r * N + e];
        for (int64_t j = 0; j < S; j++) DH[off + j] += DY[off + j] * ge;
      }
      if (DG) {
        double acc = 0.0;
        for (int64_t j = 0; j < S; j++) acc += (double)DY[off + j] * (double)H[off + j];
        DG[r * N + e] += (float)acc;
      }
    }
  }
  return LTE_STATUS_OK;
}
