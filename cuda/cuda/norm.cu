/*
 * norm.cu: LayerNorm and RMSNorm over the last dimension, forward and backward.
 *
 *   x, y, dy, dx: (R, cols)   w, b, dw, db: (cols)   mean, rstd: (R)
 *
 * Forward and dx: one block per row (blockDim chosen from cols), float accumulators, block
 * reductions via reduce.cuh. LayerNorm uses the two-pass variance mean((x - mean)^2) rather than
 * E[x^2] - mean^2, which cancels badly for rows with a large mean.
 *
 * dw / db are sums over rows: lte::column_reduce (per-chunk partial sums in scratch, then a
 * fixed-order second pass), so they are deterministic without atomics whatever
 * LTE_OPTION_DETERMINISTIC says, and accumulate (+=) as every backward output does.
 *
 * Backward formulas (xhat = normalised x, g = w * dy):
 *   LayerNorm: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), dw += dy * xhat, db += dy
 *   RMSNorm:   dx += rstd * (g - xhat * mean(g * xhat)),             dw += dy * xhat
 */
#include "reduce.cuh"

namespace lte {
namespace {

int row_threads(int cols) {
  if (cols >= 4096) return 1024;
  if (cols >= 1024) return 512;
  if (cols >= 256) return 256;
  if (cols >= 64) return 128;
  return 32;
}

__global__ void layernorm_forward_kernel(const float *x, const float *w, const float *b, float *y, float *mean_out,
                                         float *rstd_out, int64_t rows, int cols, float eps) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
    const float mean = block_sum(s, smem) / (float)cols;
    float v = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float d = xr[c] - mean;
      v += d * d;
    }
    const float var = block_sum(v, smem) / (float)cols;
    const float rstd = rsqrtf(var + eps);
    float *yr = y + r * cols;
    // y may alias x: every thread reads xr[c] before writing yr[c] for the same c, and the
    // reductions above completed (block_sum synchronizes) before any write.
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float o = (xr[c] - mean) * rstd * w[c];
      yr[c] = b ? o + b[c] : o;
    }
    if (threadIdx.x == 0) {
      if (mean_out) mean_out[r] = mean;
      if (rstd_out) rstd_out[r] = rstd;
    }
  }
}

__global__ void layernorm_dx_kernel(const float *dy, const float *x, const float *w, const float *mean_in,
                                    const float *rstd_in, float *dx, int64_t rows, int cols) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols, *dyr = dy + r * cols;
    const float mean = mean_in[r], rstd = rstd_in[r];
    float sg = 0.f, sgx = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float g = w[c] * dyr[c];
      sg += g;
      sgx += g * (xr[c] - mean) * rstd;
    }
    const float mg = block_sum(sg, smem) / (float)cols;
    const float mgx = block_sum(sgx, smem) / (float)cols;
    float *dxr = dx + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xhat = (xr[c] - mean) * rstd;
      dxr[c] += rstd * (w[c] * dyr[c] - mg - xhat * mgx);
    }
  }
}

__global__ void rmsnorm_forward_kernel(const float *x, const float *w, float *y, float *rstd_out, int64_t rows,
                                       int cols, float eps) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c] * xr[c];
    const float rstd = rsqrtf(block_sum(s, smem) / (float)cols + eps);
    float *yr = y + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * rstd * w[c];
    if (threadIdx.x == 0 && rstd_out) rstd_out[r] = rstd;
  }
}

__global__ void rmsnorm_dx_kernel(const float *dy, const float *x, const float *w, const float *rstd_in, float *dx,
                                  int64_t rows, int cols) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * cols, *dyr = dy + r * cols;
    const float rstd = rstd_in[r];
    float sgx = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sgx += w[c] * dyr[c] * xr[c] * rstd;
    const float mgx = block_sum(sgx, smem) / (float)cols;
    float *dxr = dx + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xhat = xr[c] * rstd;
      dxr[c] += rstd * (w[c] * dyr[c] - xhat * mgx);
    }
  }
}

/* Column-reduction terms for the weight / bias gradients. */
struct LayerNormDw {
  const float *dy, *x, *mean, *rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    return dy[r * cols + c] * (x[r * cols + c] - mean[r]) * rstd[r];
  }
};
struct RmsNormDw {
  const float *dy, *x, *rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return dy[r * cols + c] * x[r * cols + c] * rstd[r]; }
};

}  // namespace
}  // namespace lte

using namespace lte;

#define NORM_CHECK_SIZES()  \
  LTE_REQUIRE_F32(dtype);   \
  LTE_CHECK_NONNEG(rows);   \
  LTE_CHECK_POS(cols)

extern "C" LTE_API lte_status lte_layernorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w,
                                                    const void *b, void *y, void *mean, void *rstd, int64_t rows,
                                                    int32_t cols, float eps) {
  LTE_ENTER("lte_layernorm_forward");
  NORM_CHECK_SIZES();
  LTE_REQUIRE(eps >= 0.f && isfinite(eps), "eps = %g must be finite and >= 0", (double)eps);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(w);
  LTE_REQUIRE_PTR(y);
  LTE_REQUIRE_PTR(mean);
  LTE_REQUIRE_PTR(rstd);
  layernorm_forward_kernel<<<row_grid(rows), row_threads(cols), 0, ctx->stream>>>(
      F32(x), F32(w), F32(b), F32W(y), F32W(mean), F32W(rstd), rows, cols, eps);
  LTE_LAUNCH_CHECK("layernorm_forward_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_layernorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                                     const void *w, const void *mean, const void *rstd, void *dx,
                                                     void *dw, void *db, int64_t rows, int32_t cols) {
  LTE_ENTER("lte_layernorm_backward");
  NORM_CHECK_SIZES();
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(dy);
  if (dx || dw) {
    LTE_REQUIRE_PTR(x);
    LTE_REQUIRE_PTR(mean);
    LTE_REQUIRE_PTR(rstd);
  }
  if (dx) LTE_REQUIRE_PTR(w);
  if (dx) {
    layernorm_dx_kernel<<<row_grid(rows), row_threads(cols), 0, ctx->stream>>>(F32(dy), F32(x), F32(w), F32(mean),
                                                                               F32(rstd), F32W(dx), rows, cols);
    LTE_LAUNCH_CHECK("layernorm_dx_kernel");
  }
  if (dw) LTE_TRY(column_reduce(ctx, FN, LayerNormDw{F32(dy), F32(x), F32(mean), F32(rstd), cols}, rows, cols, F32W(dw), 1));
  if (db) LTE_TRY(column_reduce(ctx, FN, RowMajorElem{F32(dy), cols}, rows, cols, F32W(db), 1));
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_rmsnorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w,
                                                  void *y, void *rstd, int64_t rows, int32_t cols, float eps) {
  LTE_ENTER("lte_rmsnorm_forward");
  NORM_CHECK_SIZES();
  LTE_REQUIRE(eps >= 0.f && isfinite(eps), "eps = %g must be finite and >= 0", (double)eps);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(w);
  LTE_REQUIRE_PTR(y);
  LTE_REQUIRE_PTR(rstd);
  rmsnorm_forward_kernel<<<row_grid(rows), row_threads(cols), 0, ctx->stream>>>(F32(x), F32(w), F32W(y), F32W(rstd),
                                                                                rows, cols, eps);
  LTE_LAUNCH_CHECK("rmsnorm_forward_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_rmsnorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                                   const void *w, const void *rstd, void *dx, void *dw, int64_t rows,
                                                   int32_t cols) {
  LTE_ENTER("lte_rmsnorm_backward");
  NORM_CHECK_SIZES();
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(rstd);
  if (dx) LTE_REQUIRE_PTR(w);
  if (dx) {
    rmsnorm_dx_kernel<<<row_grid(rows), row_threads(cols), 0, ctx->stream>>>(F32(dy), F32(x), F32(w), F32(rstd),
                                                                             F32W(dx), rows, cols);
    LTE_LAUNCH_CHECK("rmsnorm_dx_kernel");
  }
  if (dw) LTE_TRY(column_reduce(ctx, FN, RmsNormDw{F32(dy), F32(x), F32(rstd), cols}, rows, cols, F32W(dw), 1));
  return LTE_STATUS_OK;
}
