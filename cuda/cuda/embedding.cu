/*
 * embedding.cu: token embedding lookup and its scatter-add backward.
 *
 *   ids: (n_tokens) int32   weight, dweight: (V, C)   out, dout: (n_tokens, C)
 *
 * Ids live on the device, so their range is checked by the kernels: a bad id claims the
 * context's device error record (the lowest bad index of the first failing launch, see
 * common.cuh) and its row is skipped — never read or written out of bounds. The next lte_ctx_synchronize / lte_mem_read
 * turns the flag into LTE_STATUS_INVALID_ARGUMENT naming this function.
 *
 * Backward: one thread per (token, channel) doing atomicAdd into dweight (repeated tokens collide
 * only on the same row, and float atomics on H100 are cheap). With LTE_OPTION_DETERMINISTIC=1 a
 * sequential-over-tokens kernel is used instead: each (row, channel) of dweight is owned by one
 * thread, which walks the tokens in order and adds those of its row, so the summation order is
 * fixed and no two threads ever write the same address. The rows are dealt round-robin to
 * gridDim.y vocabulary slices (row id belongs to slice id % gridDim.y), so many threads per
 * channel run in parallel; every thread still reads all the ids.
 */
#include "common.cuh"

namespace lte {
namespace {

__global__ void embedding_forward_kernel(const int32_t *ids, const float *weight, float *out, int64_t n_tokens,
                                         int vocab, int dim, DeviceError *err, unsigned long long serial) {
  const int64_t total = n_tokens * dim;
  LTE_GRID_STRIDE(i, total) {
    const int64_t t = i / dim;
    const int c = (int)(i - t * dim);
    const int32_t id = ids[t];
    if (id < 0 || id >= vocab) {
      if (c == 0) report_bad_index(err, serial, DEV_OP_EMBEDDING_FORWARD, t, id, vocab, 0);
      continue;
    }
    out[i] = weight[(int64_t)id * dim + c];
  }
}

__global__ void embedding_backward_atomic_kernel(const int32_t *ids, const float *dout, float *dweight,
                                                 int64_t n_tokens, int vocab, int dim, DeviceError *err,
                                                 unsigned long long serial) {
  const int64_t total = n_tokens * dim;
  LTE_GRID_STRIDE(i, total) {
    const int64_t t = i / dim;
    const int c = (int)(i - t * dim);
    const int32_t id = ids[t];
    if (id < 0 || id >= vocab) {
      if (c == 0) report_bad_index(err, serial, DEV_OP_EMBEDDING_BACKWARD, t, id, vocab, 0);
      continue;
    }
    atomicAdd(dweight + (int64_t)id * dim + c, dout[i]);
  }
}

/* Deterministic variant, grid (x: channels, y: vocabulary slices): the thread for channel c in
   slice blockIdx.y owns channel c of every row id with id % gridDim.y == blockIdx.y and adds that
   row's tokens in token order. Only slice 0 reports bad ids (it scans every token, in order). */
__global__ void embedding_backward_ordered_kernel(const int32_t *ids, const float *dout, float *dweight,
                                                  int64_t n_tokens, int vocab, int dim, DeviceError *err,
                                                  unsigned long long serial) {
  const unsigned slice = blockIdx.y, slices = gridDim.y;
  LTE_GRID_STRIDE(c, (int64_t)dim) {
    for (int64_t t = 0; t < n_tokens; ++t) {
      const int32_t id = ids[t];
      if (id < 0 || id >= vocab) {
        if (c == 0 && slice == 0) report_bad_index(err, serial, DEV_OP_EMBEDDING_BACKWARD, t, id, vocab, 0);
        continue;
      }
      if ((unsigned)id % slices != slice) continue;
      dweight[(int64_t)id * dim + c] += dout[t * dim + c];
    }
  }
}

constexpr int kOrderedThreads = 128;

/* Vocabulary slices of the deterministic backward: enough blocks in all for about one full wave
   (16 blocks of 128 threads per SM), never more slices than rows or than gridDim.y allows. */
unsigned ordered_slices(const lte_ctx *ctx, unsigned grid_x, int vocab) {
  const int64_t target = (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 132) * 16;
  int64_t slices = (target + grid_x - 1) / grid_x;
  if (slices > vocab) slices = vocab;
  if (slices > 65535) slices = 65535;
  if (slices < 1) slices = 1;
  return (unsigned)slices;
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_embedding_forward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids,
                                                    const void *weight, void *out, int64_t n_tokens, int32_t vocab,
                                                    int32_t dim) {
  LTE_ENTER("lte_embedding_forward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(n_tokens);
  LTE_CHECK_POS(vocab);
  LTE_CHECK_POS(dim);
  if (n_tokens == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(ids);
  LTE_REQUIRE_PTR(weight);
  LTE_REQUIRE_PTR(out);
  const int64_t total = n_tokens * dim;
  embedding_forward_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(
      ids, static_cast<const float *>(weight), static_cast<float *>(out), n_tokens, vocab, dim, ctx->d_err,
        next_launch_serial(ctx));
  LTE_LAUNCH_CHECK("embedding_forward_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_embedding_backward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids,
                                                     const void *dout, void *dweight, int64_t n_tokens, int32_t vocab,
                                                     int32_t dim) {
  LTE_ENTER("lte_embedding_backward");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(n_tokens);
  LTE_CHECK_POS(vocab);
  LTE_CHECK_POS(dim);
  if (n_tokens == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(ids);
  LTE_REQUIRE_PTR(dout);
  LTE_REQUIRE_PTR(dweight);
  const int64_t total = n_tokens * dim;
  if (ctx->deterministic) {
    const unsigned grid_x = grid_for(ctx, dim, kOrderedThreads);
    const dim3 grid(grid_x, ordered_slices(ctx, grid_x, vocab));
    embedding_backward_ordered_kernel<<<grid, kOrderedThreads, 0, ctx->stream>>>(
        ids, static_cast<const float *>(dout), static_cast<float *>(dweight), n_tokens, vocab, dim, ctx->d_err,
        next_launch_serial(ctx));
    LTE_LAUNCH_CHECK("embedding_backward_ordered_kernel");
  } else {
    embedding_backward_atomic_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(
        ids, static_cast<const float *>(dout), static_cast<float *>(dweight), n_tokens, vocab, dim, ctx->d_err,
        next_launch_serial(ctx));
    LTE_LAUNCH_CHECK("embedding_backward_atomic_kernel");
  }
  return LTE_STATUS_OK;
}
