/*
 * routing.cu: LTE expert scaling, y[r, e*S + j] = h[r, e*S + j] * g[r, e].
 *
 *   h, y, dy, dh: (R, N*S)   g, dg: (R, N)
 *
 * forward and the dh part of backward are elementwise (grid-stride over R*N*S). The dg part is a
 * reduction over each expert's S neurons: one warp per (row, expert) (S is 32 in the LTE models,
 * so one coalesced 128-byte read per operand), warp-shuffle sum, one add into dg. No atomics, so
 * the result is deterministic.
 */
#include "reduce.cuh"

namespace lte {
namespace {

__global__ void expert_scale_forward_kernel(const float *h, const float *g, float *y, int64_t total, int64_t S) {
  LTE_GRID_STRIDE(i, total) y[i] = h[i] * g[i / S];
}

__global__ void expert_scale_dh_kernel(const float *dy, const float *g, float *dh, int64_t total, int64_t S) {
  LTE_GRID_STRIDE(i, total) dh[i] += dy[i] * g[i / S];
}

/* One warp per (row, expert) pair; `groups` = R * N. */
__global__ void expert_scale_dg_kernel(const float *dy, const float *h, float *dg, int64_t groups, int S) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t w = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); w < groups; w += warps_total) {
    const float *dyw = dy + w * S;
    const float *hw = h + w * S;
    float acc = 0.f;
    for (int j = lane; j < S; j += 32) acc += dyw[j] * hw[j];
    acc = warp_sum(acc);
    if (lane == 0) dg[w] += acc;
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_expert_scale_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *h, const void *g,
                                                       void *y, int64_t rows, int32_t n_experts, int32_t expert_size) {
  LTE_ENTER("lte_expert_scale_forward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(n_experts);
  LTE_CHECK_POS(expert_size);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(h);
  LTE_REQUIRE_PTR(g);
  LTE_REQUIRE_PTR(y);
  const int64_t total = rows * n_experts * (int64_t)expert_size;
  expert_scale_forward_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(
      static_cast<const float *>(h), static_cast<const float *>(g), static_cast<float *>(y), total, expert_size);
  LTE_LAUNCH_CHECK("expert_scale_forward_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_expert_scale_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *h,
                                                        const void *g, void *dh, void *dg, int64_t rows,
                                                        int32_t n_experts, int32_t expert_size) {
  LTE_ENTER("lte_expert_scale_backward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(n_experts);
  LTE_CHECK_POS(expert_size);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(dy);
  if (dh) LTE_REQUIRE_PTR(g);
  if (dg) LTE_REQUIRE_PTR(h);
  const int64_t groups = rows * n_experts;
  const int64_t total = groups * expert_size;
  if (dh) {
    expert_scale_dh_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(
        static_cast<const float *>(dy), static_cast<const float *>(g), static_cast<float *>(dh), total, expert_size);
    LTE_LAUNCH_CHECK("expert_scale_dh_kernel");
  }
  if (dg) {
    const int warps_per_block = kThreads / 32;
    expert_scale_dg_kernel<<<grid_for(ctx, groups, warps_per_block), kThreads, 0, ctx->stream>>>(
        static_cast<const float *>(dy), static_cast<const float *>(h), static_cast<float *>(dg), groups, expert_size);
    LTE_LAUNCH_CHECK("expert_scale_dg_kernel");
  }
  return LTE_STATUS_OK;
}
