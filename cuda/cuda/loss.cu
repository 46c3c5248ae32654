/*
 * loss.cu: softmax cross-entropy per row, forward and backward.
 *
 *   logits, dlogits: (R, V)   targets: (R) int32   losses, dlosses: (R)
 *   losses[r] = logsumexp(logits[r]) - logits[r, t]; 0 where t == ignore_index
 *   dlogits[r] += dlosses[r] * (softmax(logits[r]) - onehot(t)); ignored rows untouched
 *
 * One block (512 threads) per row: V can be 50257, so a row is ~100 elements per thread. Two
 * passes over the row (max, then sum of exp(x - max)) with block reductions; the backward
 * recomputes max and sum rather than saving them, which keeps the ABI simple and costs one extra
 * read of a row that is about to be read anyway.
 *
 * A target outside [0, V) that is not ignore_index claims the context's device error flag and its
 * row is skipped (loss written as 0, no gradient); the next synchronizing call reports it.
 */
#include "reduce.cuh"

namespace lte {
namespace {

constexpr int kCeThreads = 512;

/* Returns max and sum(exp(x - max)) of one row to every thread of the block. */
__device__ void row_max_sumexp(const float *xr, int V, float *smem, float *out_max, float *out_sum) {
  float m = -INFINITY;
  for (int c = threadIdx.x; c < V; c += blockDim.x) m = fmaxf(m, xr[c]);
  m = block_max(m, smem);
  float s = 0.f;
  for (int c = threadIdx.x; c < V; c += blockDim.x) s += expf(xr[c] - m);
  s = block_sum(s, smem);
  *out_max = m;
  *out_sum = s;
}

__global__ void cross_entropy_forward_kernel(const float *logits, const int32_t *targets, float *losses, int64_t rows,
                                             int V, int ignore_index, DeviceError *err, unsigned long long serial) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t t = targets[r];
    if (t == ignore_index || t < 0 || t >= V) {
      if (threadIdx.x == 0) {
        losses[r] = 0.f;
        if (t != ignore_index) report_bad_index(err, serial, DEV_OP_CROSS_ENTROPY_FORWARD, r, t, V, ignore_index);
      }
      continue; /* uniform across the block: no thread reaches a block reduction */
    }
    const float *xr = logits + r * (int64_t)V;
    float m, s;
    row_max_sumexp(xr, V, smem, &m, &s);
    if (threadIdx.x == 0) losses[r] = logf(s) + m - xr[t];
  }
}

__global__ void cross_entropy_backward_kernel(const float *logits, const int32_t *targets, const float *dlosses,
                                              float *dlogits, int64_t rows, int V, int ignore_index,
                                              DeviceError *err, unsigned long long serial) {
  __shared__ float smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t t = targets[r];
    if (t == ignore_index || t < 0 || t >= V) {
      if (threadIdx.x == 0 && t != ignore_index)
        report_bad_index(err, serial, DEV_OP_CROSS_ENTROPY_BACKWARD, r, t, V, ignore_index);
      continue;
    }
    const float *xr = logits + r * (int64_t)V;
    float m, s;
    row_max_sumexp(xr, V, smem, &m, &s);
    const float g = dlosses[r];
    const float inv = 1.f / s;
    float *dr = dlogits + r * (int64_t)V;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = expf(xr[c] - m) * inv;
      dr[c] += g * (c == t ? p - 1.f : p);
    }
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_cross_entropy_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                                        const int32_t *targets, void *losses, int64_t rows,
                                                        int32_t vocab, int32_t ignore_index) {
  LTE_ENTER("lte_cross_entropy_forward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(targets);
  LTE_REQUIRE_PTR(losses);
  cross_entropy_forward_kernel<<<row_grid(rows), kCeThreads, 0, ctx->stream>>>(
      static_cast<const float *>(logits), targets, static_cast<float *>(losses), rows, vocab, ignore_index,
      ctx->d_err, next_launch_serial(ctx));
  LTE_LAUNCH_CHECK("cross_entropy_forward_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_cross_entropy_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                                         const int32_t *targets, const void *dlosses, void *dlogits,
                                                         int64_t rows, int32_t vocab, int32_t ignore_index) {
  LTE_ENTER("lte_cross_entropy_backward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(targets);
  LTE_REQUIRE_PTR(dlosses);
  LTE_REQUIRE_PTR(dlogits);
  cross_entropy_backward_kernel<<<row_grid(rows), kCeThreads, 0, ctx->stream>>>(
      static_cast<const float *>(logits), targets, static_cast<const float *>(dlosses), static_cast<float *>(dlogits),
      rows, vocab, ignore_index, ctx->d_err, next_launch_serial(ctx));
  LTE_LAUNCH_CHECK("cross_entropy_backward_kernel");
  return LTE_STATUS_OK;
}
