/*
 * half.c: lte_convert, f32 <-> f16 <-> bf16 conversion with an optional transpose (CPU reference).
 *
 *   dst = transpose ? src^T : src      src: (rows, cols) of src_dtype, dst of dst_dtype
 * Conversions go through f32 (exact for every source value), rounding to nearest even (half.h).
 * Parallel over destination rows: every element is written by one thread.
 */
#include "cpu_common.h"
#include "half.h"

static lte_status check_float_dtype(lte_ctx_t *ctx, const char *fn, lte_dtype dtype, const char *name) {
  if (dtype == LTE_DTYPE_F32 || dtype == LTE_DTYPE_F16 || dtype == LTE_DTYPE_BF16) return LTE_STATUS_OK;
  if (dtype == LTE_DTYPE_I32) return lte_fail(ctx, LTE_STATUS_UNSUPPORTED, "%s: %s i32 is not a float dtype", fn, name);
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: unknown %s %d", fn, name, (int)dtype);
}

LTE_API lte_status lte_convert(lte_ctx_t *ctx, lte_dtype src_dtype, const void *src, lte_dtype dst_dtype, void *dst,
                               int64_t rows, int64_t cols, int32_t transpose) {
  CHECK_CTX();
  LTE_TRY(check_float_dtype(ctx, __func__, src_dtype, "src_dtype"));
  LTE_TRY(check_float_dtype(ctx, __func__, dst_dtype, "dst_dtype"));
  CHECK_NONNEG(rows);
  CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  CHECK_PTR(src);
  CHECK_PTR(dst);
  if (src == dst) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: src and dst must not overlap", __func__);
  const int nt = lte_nthreads(ctx);
  /* destination shape */
  const int64_t drows = transpose ? cols : rows, dcols = transpose ? rows : cols;
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * cols > LTE_PAR_MIN)
  for (int64_t r = 0; r < drows; r++) {
    for (int64_t c = 0; c < dcols; c++) {
      const int64_t si = transpose ? c * cols + r : r * cols + c;
      lte_store_elem(dst_dtype, dst, r * dcols + c, lte_load_elem(src_dtype, src, si));
    }
  }
  return LTE_STATUS_OK;
}
