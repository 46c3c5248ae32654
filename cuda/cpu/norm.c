/*
 * norm.c: LayerNorm and RMSNorm over the last dimension (statistics in double).
 *
 *   layernorm  x, y: (R, cols), w, b: (cols), mean, rstd: (R)
 *              mean = sum(x) / cols, var = sum((x - mean)^2) / cols (two passes), rstd = 1/sqrt(var + eps)
 *              y = (x - mean) * rstd * w + b
 *     backward xhat = (x - mean) rstd, g = dy * w
 *              dx += rstd (g - mean(g) - xhat mean(g xhat))
 *              dw += sum_r dy xhat,  db += sum_r dy
 *   rmsnorm    rstd = 1/sqrt(mean(x^2) + eps), y = x rstd w
 *     backward g = dy * w:  dx += rstd g - x rstd^3 mean(g x),  dw += sum_r dy x rstd
 *
 * dx is parallel over rows; dw/db are parallel over blocks of columns, each column summed over
 * rows in order (no atomics, thread-count independent).
 */
#include "cpu_common.h"

enum { NORM_CB = 64 }; /* columns per block of the dw/db reduction */

static lte_status check_eps(lte_ctx_t *ctx, const char *fn, float eps) {
  if (eps >= 0.0f && isfinite(eps)) return LTE_STATUS_OK;
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: eps = %g must be finite and >= 0", fn, (double)eps);
}

LTE_API lte_status lte_layernorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w,
                                         const void *b, void *y, void *mean, void *rstd, int64_t rows,
                                         int32_t cols, float eps) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  LTE_TRY(check_eps(ctx, __func__, eps));
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(w);
  CHECK_PTR(y);
  CHECK_PTR(mean);
  CHECK_PTR(rstd);
  const float *X = x, *W = w, *Bv = b;
  float *Y = y, *MEAN = mean, *RSTD = rstd;
  const int64_t C = cols;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * C;
    float *yr = Y + r * C;
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += xr[c];
    const double mu = s / (double)C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; c++) {
      const double d = xr[c] - mu;
      ss += d * d;
    }
    const double rs = 1.0 / sqrt(ss / (double)C + (double)eps);
    for (int64_t c = 0; c < C; c++) {
      const double v = ((double)xr[c] - mu) * rs * (double)W[c] + (Bv ? (double)Bv[c] : 0.0);
      yr[c] = (float)v;
    }
    MEAN[r] = (float)mu;
    RSTD[r] = (float)rs;
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_layernorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                          const void *w, const void *mean, const void *rstd, void *dx, void *dw,
                                          void *db, int64_t rows, int32_t cols) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(dy);
  if (dx || dw) {
    CHECK_PTR(x);
    CHECK_PTR(mean);
    CHECK_PTR(rstd);
  }
  if (dx) CHECK_PTR(w);
  const float *DY = dy, *X = x, *W = w, *MEAN = mean, *RSTD = rstd;
  float *DX = dx, *DW = dw, *DB = db;
  const int64_t C = cols;
  const int nt = lte_nthreads(ctx);
  if (DX) {
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
      const float *dyr = DY + r * C, *xr = X + r * C;
      float *dxr = DX + r * C;
      const double mu = MEAN[r], rs = RSTD[r];
      double sum_g = 0.0, sum_gx = 0.0; /* sum(g), sum(g * xhat) */
      for (int64_t c = 0; c < C; c++) {
        const double g = (double)dyr[c] * (double)W[c];
        sum_g += g;
        sum_gx += g * ((double)xr[c] - mu) * rs;
      }
      const double mean_g = sum_g / (double)C, mean_gx = sum_gx / (double)C;
      for (int64_t c = 0; c < C; c++) {
        const double g = (double)dyr[c] * (double)W[c];
        const double xhat = ((double)xr[c] - mu) * rs;
        dxr[c] += (float)(rs * (g - mean_g - xhat * mean_gx));
      }
    }
  }
  if (DW || DB) {
    const int64_t n_blocks = (C + NORM_CB - 1) / NORM_CB;
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
      const int64_t c0 = blk * NORM_CB, c1 = c0 + NORM_CB < C ? c0 + NORM_CB : C;
      double acc_w[NORM_CB] = {0}, acc_b[NORM_CB] = {0};
      for (int64_t r = 0; r < rows; r++) {
        const float *dyr = DY + r * C;
        const double mu = DW ? (double)MEAN[r] : 0.0, rs = DW ? (double)RSTD[r] : 0.0;
        for (int64_t c = c0; c < c1; c++) {
          if (DW) acc_w[c - c0] += (double)dyr[c] * ((double)X[r * C + c] - mu) * rs;
          acc_b[c - c0] += (double)dyr[c];
        }
      }
      for (int64_t c = c0; c < c1; c++) {
        if (DW) DW[c] += (float)acc_w[c - c0];
        if (DB) DB[c] += (float)acc_b[c - c0];
      }
    }
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_rmsnorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w, void *y,
                                       void *rstd, int64_t rows, int32_t cols, float eps) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  LTE_TRY(check_eps(ctx, __func__, eps));
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(w);
  CHECK_PTR(y);
  CHECK_PTR(rstd);
  const float *X = x, *W = w;
  float *Y = y, *RSTD = rstd;
  const int64_t C = cols;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * C;
    float *yr = Y + r * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * (double)xr[c];
    const double rs = 1.0 / sqrt(ss / (double)C + (double)eps);
    for (int64_t c = 0; c < C; c++) yr[c] = (float)((double)xr[c] * rs * (double)W[c]);
    RSTD[r] = (float)rs;
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_rmsnorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                        const void *w, const void *rstd, void *dx, void *dw, int64_t rows,
                                        int32_t cols) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(dy);
  CHECK_PTR(x);
  CHECK_PTR(rstd);
  if (dx) CHECK_PTR(w);
  const float *DY = dy, *X = x, *W = w, *RSTD = rstd;
  float *DX = dx, *DW = dw;
  const int64_t C = cols;
  const int nt = lte_nthreads(ctx);
  if (DX) {
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
      const float *dyr = DY + r * C, *xr = X + r * C;
      float *dxr = DX + r * C;
      const double rs = RSTD[r];
      double sum_gx = 0.0;
      for (int64_t c = 0; c < C; c++) sum_gx += (double)dyr[c] * (double)W[c] * (double)xr[c];
      const double k = rs * rs * rs * sum_gx / (double)C;
      for (int64_t c = 0; c < C; c++) {
        dxr[c] += (float)(rs * (double)dyr[c] * (double)W[c] - (double)xr[c] * k);
      }
    }
  }
  if (DW) {
    const int64_t n_blocks = (C + NORM_CB - 1) / NORM_CB;
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * C > LTE_PAR_MIN)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
      const int64_t c0 = blk * NORM_CB, c1 = c0 + NORM_CB < C ? c0 + NORM_CB : C;
      double acc[NORM_CB] = {0};
      for (int64_t r = 0; r < rows; r++) {
        const double rs = RSTD[r];
        for (int64_t c = c0; c < c1; c++) acc[c - c0] += (double)DY[r * C + c] * (double)X[r * C + c] * rs;
      }
      for (int64_t c = c0; c < c1; c++) DW[c] += (float)acc[c - c0];
    }
  }
  return LTE_STATUS_OK;
}
