/*
 * reduce.cuh: reduction building blocks shared by several op families.
 *
 *   warp_sum / warp_max / block_sum / block_max   shuffle-based reductions (any blockDim that is
 *                                                  a multiple of 32, up to 1024)
 *   column_reduce(ctx, fn, f, rows, cols, out, accumulate)
 *       out[c] = (accumulate ? out[c] : 0) + sum_r f(r, c)       (bias / norm-weight gradients)
 *   full_reduce(ctx, fn, f, n, out, accumulate)
 *       out[0] = (accumulate ? out[0] : 0) + sum_i f(i)          (lte_sum, lte_sum_squares)
 *
 * Both host helpers are two-pass and atomic-free: pass 1 writes per-block partial sums into a
 * scratch buffer, pass 2 adds the partials in a fixed order. Results are therefore bit-identical
 * from run to run (LTE_OPTION_DETERMINISTIC needs nothing extra here), and there is no need to
 * pre-zero the output.
 */
#pragma once

#include "common.cuh"

namespace lte {

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Sum over the block, result returned to every thread. `smem` must hold 32 T. The leading
   __syncthreads makes back-to-back calls with the same smem safe. */
template <class T>
__device__ T block_sum(T v, T *smem) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  if (wid == 0) {
    T t = lane < nw ? smem[lane] : T(0);
    t = warp_sum(t);
    if (lane == 0) smem[0] = t;
  }
  __syncthreads();
  return smem[0];
}

__device__ inline float block_max(float v, float *smem) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  if (wid == 0) {
    float t = lane < nw ? smem[lane] : -INFINITY;
    t = warp_max(t);
    if (lane == 0) smem[0] = t;
  }
  __syncthreads();
  return smem[0];
}

/* ------------------------------------------------------------------ column reduction */

namespace {
/* f(r, c) = x[r * cols + c]: the plain column sum of a row-major (rows, cols) matrix (lte_sum_rows,
   LayerNorm db). In an unnamed namespace, like the op-specific functors, so that every unit gets
   its own kernel instantiation. */
struct RowMajorElem {
  const float *x;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return x[r * cols + c]; }
};
}  // namespace

/* grid (ceil(cols / blockDim), chunks): thread owns column c and sums rows of chunk blockIdx.y.
   Adjacent threads read adjacent columns, so every row read is coalesced. */
template <class F>
__global__ void column_partial_kernel(F f, int64_t rows, int64_t cols, int64_t rows_per_chunk, float *partial) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += f(r, c);
  partial[(int64_t)blockIdx.y * cols + c] = acc;
}

/* out[c] (= or +=) sum over chunks, in chunk order (deterministic). A template only so that the
   definition can live in this header without clashing between translation units. */
template <int kDummy = 0>
__global__ void column_finalize_kernel(const float *partial, int chunks, int64_t cols, float *out, int accumulate) {
  const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float acc = 0.f;
  for (int g = 0; g < chunks; ++g) acc += partial[(int64_t)g * cols + c];
  out[c] = accumulate ? out[c] + acc : acc;
}

/* Scratch budget of column_reduce's partial sums, in floats. */
constexpr int64_t kColumnPartialMaxFloats = int64_t(4) << 20;

template <class F>
lte_status column_reduce(lte_ctx *ctx, const char *fn, F f, int64_t rows, int64_t cols, float *out, int accumulate) {
  const char *FN = fn;
  if (cols <= 0) return LTE_STATUS_OK;
  if (rows <= 0) {
    if (!accumulate) return fill_f32(ctx, fn, out, cols, 0.f);
    return LTE_STATUS_OK;
  }
  // About 32 rows per chunk, at most 1024 chunks: enough blocks to fill the GPU for the typical
  // (8192 x 768) gradient, a small partial buffer, and a short second pass. The partial buffer
  // (chunks * cols floats) is also kept within kColumnPartialMaxFloats (16 MiB): very wide inputs
  // get fewer, longer chunks (a single chunk when cols alone exceeds the budget).
  int64_t chunks = (rows + 31) / 32;
  if (chunks > 1024) chunks = 1024;
  const int64_t max_chunks = kColumnPartialMaxFloats / cols > 1 ? kColumnPartialMaxFloats / cols : 1;
  if (chunks > max_chunks) chunks = max_chunks;
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  Scratch scratch(ctx, fn);
  float *partial = nullptr;
  LTE_TRY(scratch.get(chunks * cols, &partial));
  dim3 grid((unsigned)((cols + kThreads - 1) / kThreads), (unsigned)chunks);
  column_partial_kernel<<<grid, kThreads, 0, ctx->stream>>>(f, rows, cols, rows_per_chunk, partial);
  LTE_LAUNCH_CHECK("column_partial_kernel");
  column_finalize_kernel<><<<(unsigned)((cols + kThreads - 1) / kThreads), kThreads, 0, ctx->stream>>>(
      partial, (int)chunks, cols, out, accumulate);
  LTE_LAUNCH_CHECK("column_finalize_kernel");
  return LTE_STATUS_OK;
}

/* ------------------------------------------------------------------ full reduction */

constexpr int kReduceThreads = 512;
constexpr int kReduceMaxBlocks = 1024;

template <class F>
__global__ void full_partial_kernel(F f, int64_t n, float *partial) {
  __shared__ float smem[32];
  float acc = 0.f;
  LTE_GRID_STRIDE(i, n) acc += f(i);
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <int kDummy = 0>
__global__ void full_finalize_kernel(const float *partial, int count, float *out, int accumulate) {
  __shared__ float smem[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) out[0] = accumulate ? out[0] + acc : acc;
}

template <class F>
lte_status full_reduce(lte_ctx *ctx, const char *fn, F f, int64_t n, float *out, int accumulate) {
  const char *FN = fn;
  int64_t blocks = (n + kReduceThreads - 1) / kReduceThreads;
  if (blocks > kReduceMaxBlocks) blocks = kReduceMaxBlocks;
  if (blocks < 1) blocks = 1;
  Scratch scratch(ctx, fn);
  float *partial = nullptr;
  LTE_TRY(scratch.get(blocks, &partial));
  full_partial_kernel<<<(unsigned)blocks, kReduceThreads, 0, ctx->stream>>>(f, n, partial);
  LTE_LAUNCH_CHECK("full_partial_kernel");
  full_finalize_kernel<><<<1, kReduceThreads, 0, ctx->stream>>>(partial, (int)blocks, out, accumulate);
  LTE_LAUNCH_CHECK("full_finalize_kernel");
  return LTE_STATUS_OK;
}

}  // namespace lte
