/*
 * half.cu: lte_convert, f32 <-> f16 <-> bf16 conversion with an optional transpose (CUDA).
 *
 *   dst = transpose ? src^T : src      src: (rows, cols) of src_dtype, dst of dst_dtype
 * Values go through f32 (exact for every source value); f32 -> f16 / bf16 rounds to nearest even
 * (__float2half_rn / __float2bfloat16_rn), bit-identical to the CPU reference (cuda/cpu/half.h).
 * The plain copy is a grid-stride loop; the transpose goes through a 32x33 shared-memory tile so
 * that both the reads and the writes are coalesced.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "half.cuh"

namespace lte {
namespace {

__global__ void convert_kernel(lte_dtype sdt, const void *src, lte_dtype ddt, void *dst, int64_t n) {
  LTE_GRID_STRIDE(i, n) store_from_f32(ddt, dst, i, load_as_f32(sdt, src, i));
}

/* dst (cols, rows) = src (rows, cols)^T; blockDim (32, 8), one 32x32 tile per block-iteration. */
__global__ void convert_transpose_kernel(lte_dtype sdt, const void *src, lte_dtype ddt, void *dst, int64_t rows,
                                         int64_t cols) {
  __shared__ float tile[32][33];
  const int64_t tiles_r = (rows + 31) / 32, tiles_c = (cols + 31) / 32;
  for (int64_t t = blockIdx.x; t < tiles_r * tiles_c; t += gridDim.x) {
    const int64_t r0 = (t / tiles_c) * 32, c0 = (t % tiles_c) * 32;
    for (int i = threadIdx.y; i < 32; i += 8) {
      const int64_t r = r0 + i, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[i][threadIdx.x] = load_as_f32(sdt, src, r * cols + c);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
      const int64_t c = c0 + i, r = r0 + threadIdx.x; /* dst row c, dst col r */
      if (r < rows && c < cols) store_from_f32(ddt, dst, c * rows + r, tile[threadIdx.x][i]);
    }
    __syncthreads();
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

#define LTE_REQUIRE_FLOAT_DTYPE(dt, name)                                                              \
  do {                                                                                                 \
    if ((dt) != LTE_DTYPE_F32 && (dt) != LTE_DTYPE_F16 && (dt) != LTE_DTYPE_BF16) {                    \
      if ((dt) == LTE_DTYPE_I32)                                                                       \
        return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "%s i32 is not a float dtype", name);        \
      return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "unknown %s %d", name, (int)(dt));        \
    }                                                                                                  \
  } while (0)

extern "C" LTE_API lte_status lte_convert(lte_ctx_t *ctx, lte_dtype src_dtype, const void *src, lte_dtype dst_dtype,
                                          void *dst, int64_t rows, int64_t cols, int32_t transpose) {
  LTE_ENTER("lte_convert");
  LTE_REQUIRE_FLOAT_DTYPE(src_dtype, "src_dtype");
  LTE_REQUIRE_FLOAT_DTYPE(dst_dtype, "dst_dtype");
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_NONNEG(cols);
  if (rows == 0 || cols == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(src);
  LTE_REQUIRE_PTR(dst);
  LTE_REQUIRE(src != dst, "src and dst must not overlap");
  if (!transpose) {
    const int64_t n = rows * cols;
    convert_kernel<<<grid_for(ctx, n), kThreads, 0, ctx->stream>>>(src_dtype, src, dst_dtype, dst, n);
    LTE_LAUNCH_CHECK("convert_kernel");
    return LTE_STATUS_OK;
  }
  const int64_t tiles = ((rows + 31) / 32) * ((cols + 31) / 32);
  const int64_t cap = (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 132) * 16;
  const unsigned grid = (unsigned)(tiles < cap ? tiles : cap);
  convert_transpose_kernel<<<grid, dim3(32, 8), 0, ctx->stream>>>(src_dtype, src, dst_dtype, dst, rows, cols);
  LTE_LAUNCH_CHECK("convert_transpose_kernel");
  return LTE_STATUS_OK;
}
