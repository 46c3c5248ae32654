/*
 * elementwise.c: elementwise arithmetic, reductions and strided copies (f32).
 *
 *   add, mul, scale, axpy, mul_backward           (n)
 *   sum, sum_squares -> out (1)                   fixed-size chunks summed in double, then the
 *                                                 chunk partials added in order: the result does not
 *                                                 depend on the thread count
 *   broadcast_scalar_backward                     dx (n) += alpha * dout[0]
 *   bias_add, sum_rows                            x: (R, cols), bias / out: (cols)
 *   copy_2d                                       strided (rows, cols) block copy or accumulate
 *
 * n == 0 (or rows == 0 / cols == 0) is a no-op; pointers are only checked when there is work.
 */
#include "cpu_common.h"

#define SUM_CHUNK 8192 /* elements per partial sum: fixed, independent of the thread count */

/* y = a + b    a, b, y: (n) */
LTE_API lte_status lte_add(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(a);
  CHECK_PTR(b);
  CHECK_PTR(y);
  const float *A = a, *B = b;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) Y[i] = A[i] + B[i];
  return LTE_STATUS_OK;
}

/* y = a * b    a, b, y: (n) */
LTE_API lte_status lte_mul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(a);
  CHECK_PTR(b);
  CHECK_PTR(y);
  const float *A = a, *B = b;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) Y[i] = A[i] * B[i];
  return LTE_STATUS_OK;
}

/* y = alpha * x + beta    x, y: (n) */
LTE_API lte_status lte_scale(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n, float alpha,
                             float beta) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) Y[i] = alpha * X[i] + beta;
  return LTE_STATUS_OK;
}

/* y += alpha * x    x, y: (n) */
LTE_API lte_status lte_axpy(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n, float alpha) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) Y[i] += alpha * X[i];
  return LTE_STATUS_OK;
}

/* da += dy * b, db += dy * a    (n); da or db may be NULL */
LTE_API lte_status lte_mul_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *a, const void *b,
                                    void *da, void *db, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dy);
  if (da) CHECK_PTR(b);
  if (db) CHECK_PTR(a);
  const float *DY = dy, *A = a, *B = b;
  float *DA = da, *DB = db;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const float g = DY[i];
    if (DA) DA[i] += g * B[i];
    if (DB) DB[i] += g * A[i];
  }
  return LTE_STATUS_OK;
}

/* Deterministic double sum of x[i] (squares = 0) or x[i]^2 (squares = 1): fixed chunks, partials
   summed in chunk order. Returns 0 on success, -1 if the partials array could not be allocated. */
static int chunked_sum(const lte_ctx_t *ctx, const float *x, int64_t n, int squares, double *result) {
  const int64_t n_chunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
  double one_chunk;
  double *partial = n_chunks == 1 ? &one_chunk : malloc((size_t)n_chunks * sizeof *partial);
  if (!partial) return -1;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n_chunks > 2)
  for (int64_t c = 0; c < n_chunks; c++) {
    const int64_t lo = c * SUM_CHUNK, hi = lo + SUM_CHUNK < n ? lo + SUM_CHUNK : n;
    double s = 0.0;
    if (squares) {
      for (int64_t i = lo; i < hi; i++) s += (double)x[i] * (double)x[i];
    } else {
      for (int64_t i = lo; i < hi; i++) s += (double)x[i];
    }
    partial[c] = s;
  }
  double total = 0.0;
  for (int64_t c = 0; c < n_chunks; c++) total += partial[c];
  if (partial != &one_chunk) free(partial);
  *result = total;
  return 0;
}

static lte_status sum_impl(lte_ctx_t *ctx, const char *fn, lte_dtype dtype, const void *x, void *out, int64_t n,
                           int32_t accumulate, int squares) {
  LTE_TRY(lte_check_ctx(ctx, fn));
  LTE_TRY(lte_check_f32(ctx, fn, dtype));
  LTE_TRY(lte_check_nonneg(ctx, fn, n, "n"));
  LTE_TRY(lte_check_ptr(ctx, fn, out, "out"));
  if (n > 0) LTE_TRY(lte_check_ptr(ctx, fn, x, "x"));
  float *o = out;
  double total = 0.0;
  if (n > 0 && chunked_sum(ctx, x, n, squares, &total) != 0) {
    return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate the partial sums", fn);
  }
  o[0] = (float)((accumulate ? (double)o[0] : 0.0) + total);
  return LTE_STATUS_OK;
}

/* out[0] = (accumulate ? out[0] : 0) + sum(x)    x: (n) */
LTE_API lte_status lte_sum(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n, int32_t accumulate) {
  return sum_impl(ctx, __func__, dtype, x, out, n, accumulate, 0);
}

/* out[0] = (accumulate ? out[0] : 0) + sum(x^2)    x: (n) */
LTE_API lte_status lte_sum_squares(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n,
                                   int32_t accumulate) {
  return sum_impl(ctx, __func__, dtype, x, out, n, accumulate, 1);
}

/* dx[i] += alpha * dout[0]    dx: (n), dout: (1) */
LTE_API lte_status lte_broadcast_scalar_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout, void *dx,
                                                 int64_t n, float alpha) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dout);
  CHECK_PTR(dx);
  const float g = alpha * ((const float *)dout)[0];
  float *DX = dx;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) DX[i] += g;
  return LTE_STATUS_OK;
}

/* y[r, c] = x[r, c] + bias[c]    x, y: (R, cols), bias: (cols) */
LTE_API lte_status lte_bias_add(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *bias, void *y,
                                int64_t rows, int64_t cols) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(bias);
  CHECK_PTR(y);
  const float *X = x, *BIAS = bias;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * cols > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = X + r * cols;
    float *yr = Y + r * cols;
    for (int64_t c = 0; c < cols; c++) yr[c] = xr[c] + BIAS[c];
  }
  return LTE_STATUS_OK;
}

/* out[c] = (accumulate ? out[c] : 0) + sum_r x[r, c]    x: (R, cols), out: (cols)
   Parallel over blocks of columns; each column is summed over rows in order, in double. */
LTE_API lte_status lte_sum_rows(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t rows,
                                int64_t cols, int32_t accumulate) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_NONNEG(cols);
  if (cols == 0) return LTE_STATUS_OK;
  CHECK_PTR(out);
  if (rows > 0) CHECK_PTR(x);
  enum { CB = 256 }; /* columns per block */
  const float *X = x;
  float *O = out;
  const int64_t n_blocks = (cols + CB - 1) / CB;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * cols > LTE_PAR_MIN)
  for (int64_t blk = 0; blk < n_blocks; blk++) {
    const int64_t c0 = blk * CB, c1 = c0 + CB < cols ? c0 + CB : cols;
    double acc[CB];
    for (int64_t c = c0; c < c1; c++) acc[c - c0] = accumulate ? (double)O[c] : 0.0;
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = X + r * cols;
      for (int64_t c = c0; c < c1; c++) acc[c - c0] += (double)xr[c];
    }
    for (int64_t c = c0; c < c1; c++) O[c] = (float)acc[c - c0];
  }
  return LTE_STATUS_OK;
}

/* dst[r*dst_ld + c] (= or +=) src[r*src_ld + c]    r < rows, c < cols */
LTE_API lte_status lte_copy_2d(lte_ctx_t *ctx, lte_dtype dtype, const void *src, int64_t src_ld, void *dst,
                               int64_t dst_ld, int64_t rows, int64_t cols, int32_t accumulate) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(rows);
  CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  CHECK_PTR(src);
  CHECK_PTR(dst);
  if (src_ld < cols || dst_ld < cols) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: src_ld = %lld and dst_ld = %lld must be >= cols = %lld", __func__,
                (long long)src_ld, (long long)dst_ld, (long long)cols);
  }
  const float *S = src;
  float *D = dst;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * cols > LTE_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *s = S + r * src_ld;
    float *d = D + r * dst_ld;
    if (accumulate) {
      for (int64_t c = 0; c < cols; c++) d[c] += s[c];
    } else {
      for (int64_t c = 0; c < cols; c++) d[c] = s[c];
    }
  }
  return LTE_STATUS_OK;
}
