/*
 * elementwise.cu: fill, add, mul, scale, axpy, mul_backward, sum, sum_squares,
 * broadcast_scalar_backward, bias_add, sum_rows, copy_2d.
 *
 * Elementwise ops are grid-stride loops (grid capped at a few waves, see lte::grid_for), so any n
 * up to 2^63 works with one launch. In-place (y == x) is fine: each element is read before it is
 * written by the same thread. Reductions (sum, sum_squares, sum_rows) use the two-pass,
 * atomic-free helpers of reduce.cuh and honour `accumulate` in their final pass.
 */
#include "reduce.cuh"

namespace lte {

namespace {

__global__ void fill_f32_kernel(float *y, int64_t n, float v) {
  LTE_GRID_STRIDE(i, n) y[i] = v;
}
__global__ void fill_i32_kernel(int32_t *y, int64_t n, int32_t v) {
  LTE_GRID_STRIDE(i, n) y[i] = v;
}
__global__ void add_kernel(const float *a, const float *b, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}
__global__ void mul_kernel(const float *a, const float *b, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}
__global__ void scale_kernel(const float *x, float *y, int64_t n, float alpha, float beta) {
  LTE_GRID_STRIDE(i, n) y[i] = alpha * x[i] + beta;
}
__global__ void axpy_kernel(const float *x, float *y, int64_t n, float alpha) {
  LTE_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
__global__ void mul_backward_kernel(const float *dy, const float *a, const float *b, float *da, float *db, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    // Only the operands a present gradient needs are read (the other may be NULL). Both are read
    // before either write, in case da aliases a or b.
    const float g = dy[i];
    const float bv = da ? b[i] : 0.f, av = db ? a[i] : 0.f;
    if (da) da[i] += g * bv;
    if (db) db[i] += g * av;
  }
}
__global__ void broadcast_scalar_backward_kernel(const float *dout, float *dx, int64_t n, float alpha) {
  const float g = alpha * dout[0];
  LTE_GRID_STRIDE(i, n) dx[i] += g;
}
__global__ void bias_add_kernel(const float *x, const float *bias, float *y, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  LTE_GRID_STRIDE(i, n) y[i] = x[i] + bias[i % cols];
}
__global__ void copy_2d_kernel(const float *src, int64_t src_ld, float *dst, int64_t dst_ld, int64_t rows,
                               int64_t cols, int accumulate) {
  const int64_t n = rows * cols;
  LTE_GRID_STRIDE(i, n) {
    const int64_t r = i / cols, c = i - r * cols;
    const float v = src[r * src_ld + c];
    float *d = dst + r * dst_ld + c;
    *d = accumulate ? *d + v : v;
  }
}

struct Identity {
  const float *x;
  __device__ float operator()(int64_t i) const { return x[i]; }
};
struct Square {
  const float *x;
  __device__ float operator()(int64_t i) const {
    const float v = x[i];
    return v * v;
  }
};
}  // namespace

lte_status fill_f32(lte_ctx *ctx, const char *fn, float *y, int64_t n, float value) {
  const char *FN = fn;
  if (n <= 0) return LTE_STATUS_OK;
  fill_f32_kernel<<<grid_for(ctx, n), kThreads, 0, ctx->stream>>>(y, n, value);
  LTE_LAUNCH_CHECK("fill_f32_kernel");
  return LTE_STATUS_OK;
}

}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_fill(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, float value) {
  LTE_ENTER("lte_fill");
  if (dtype != LTE_DTYPE_I32) LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  if (dtype == LTE_DTYPE_F32) return fill_f32(ctx, FN, F32W(x), n, value);
  LTE_REQUIRE(value > -2147483649.0f && value < 2147483648.0f, "value %g does not fit in i32", (double)value);
  fill_i32_kernel<<<grid_for(ctx, n), kThreads, 0, ctx->stream>>>(static_cast<int32_t *>(x), n, (int32_t)value);
  LTE_LAUNCH_CHECK("fill_i32_kernel");
  return LTE_STATUS_OK;
}

/* ELEMENTWISE_PROLOGUE and LAUNCH_EW: see common.cuh. */

extern "C" LTE_API lte_status lte_add(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y,
                                      int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_add");
  LTE_REQUIRE_PTR(a);
  LTE_REQUIRE_PTR(b);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(add_kernel, F32(a), F32(b), F32W(y), n);
}

extern "C" LTE_API lte_status lte_mul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y,
                                      int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_mul");
  LTE_REQUIRE_PTR(a);
  LTE_REQUIRE_PTR(b);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(mul_kernel, F32(a), F32(b), F32W(y), n);
}

extern "C" LTE_API lte_status lte_scale(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n,
                                        float alpha, float beta) {
  ELEMENTWISE_PROLOGUE("lte_scale");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(scale_kernel, F32(x), F32W(y), n, alpha, beta);
}

extern "C" LTE_API lte_status lte_axpy(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n,
                                       float alpha) {
  ELEMENTWISE_PROLOGUE("lte_axpy");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(axpy_kernel, F32(x), F32W(y), n, alpha);
}

extern "C" LTE_API lte_status lte_mul_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *a,
                                               const void *b, void *da, void *db, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_mul_backward");
  LTE_REQUIRE_PTR(dy);
  if (da) LTE_REQUIRE_PTR(b);
  if (db) LTE_REQUIRE_PTR(a);
  if (da == nullptr && db == nullptr) return LTE_STATUS_OK;
  LAUNCH_EW(mul_backward_kernel, F32(dy), F32(a), F32(b), F32W(da), F32W(db), n);
}

template <class F>
static lte_status sum_impl(lte_ctx *ctx, const char *FN, lte_dtype dtype, const void *x, void *out, int64_t n,
                           int32_t accumulate) {
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(n);
  LTE_REQUIRE_PTR(out);
  if (n > 0) LTE_REQUIRE_PTR(x);
  return full_reduce(ctx, FN, F{F32(x)}, n, F32W(out), accumulate != 0);
}

extern "C" LTE_API lte_status lte_sum(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n,
                                      int32_t accumulate) {
  LTE_ENTER("lte_sum");
  return sum_impl<Identity>(ctx, FN, dtype, x, out, n, accumulate);
}

extern "C" LTE_API lte_status lte_sum_squares(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n,
                                              int32_t accumulate) {
  LTE_ENTER("lte_sum_squares");
  return sum_impl<Square>(ctx, FN, dtype, x, out, n, accumulate);
}

extern "C" LTE_API lte_status lte_broadcast_scalar_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout,
                                                            void *dx, int64_t n, float alpha) {
  ELEMENTWISE_PROLOGUE("lte_broadcast_scalar_backward");
  LTE_REQUIRE_PTR(dout);
  LTE_REQUIRE_PTR(dx);
  LAUNCH_EW(broadcast_scalar_backward_kernel, F32(dout), F32W(dx), n, alpha);
}

extern "C" LTE_API lte_status lte_bias_add(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *bias, void *y,
                                           int64_t rows, int64_t cols) {
  LTE_ENTER("lte_bias_add");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(bias);
  LTE_REQUIRE_PTR(y);
  bias_add_kernel<<<grid_for(ctx, rows * cols), kThreads, 0, ctx->stream>>>(F32(x), F32(bias), F32W(y), rows, cols);
  LTE_LAUNCH_CHECK("bias_add_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sum_rows(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t rows,
                                           int64_t cols, int32_t accumulate) {
  LTE_ENTER("lte_sum_rows");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_NONNEG(cols);
  if (cols == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(out);
  if (rows > 0) LTE_REQUIRE_PTR(x);
  return column_reduce(ctx, FN, RowMajorElem{F32(x), cols}, rows, cols, F32W(out), accumulate != 0);
}

extern "C" LTE_API lte_status lte_copy_2d(lte_ctx_t *ctx, lte_dtype dtype, const void *src, int64_t src_ld, void *dst,
                                          int64_t dst_ld, int64_t rows, int64_t cols, int32_t accumulate) {
  LTE_ENTER("lte_copy_2d");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(src);
  LTE_REQUIRE_PTR(dst);
  LTE_REQUIRE(src_ld >= cols && dst_ld >= cols, "src_ld = %lld and dst_ld = %lld must be >= cols = %lld",
              (long long)src_ld, (long long)dst_ld, (long long)cols);
  copy_2d_kernel<<<grid_for(ctx, rows * cols), kThreads, 0, ctx->stream>>>(F32(src), src_ld, F32W(dst), dst_ld, rows,
                                                                           cols, accumulate != 0);
  LTE_LAUNCH_CHECK("copy_2d_kernel");
  return LTE_STATUS_OK;
}
