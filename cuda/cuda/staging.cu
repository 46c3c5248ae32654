/*
 * staging.cu: pinned host staging blocks and stream-ordered device->host reads into them
 * (lte_host_alloc / lte_host_free / lte_mem_read_start / lte_mem_read_wait; see lte.h).
 *
 * Design notes
 *   - Each block owns one CUDA event (timing disabled). lte_mem_read_start queues
 *     cudaMemcpyAsync(dst, src) on the context stream and records the block's event right behind
 *     it, so lte_mem_read_wait (cudaEventSynchronize) returns as soon as that copy is done, while
 *     later work queued on the stream (the next decode step) keeps running.
 *   - The copy is an ordinary stream operation outside any graph: the engine launches its
 *     captured step graph, then starts the read. During capture the call is refused (the copy and
 *     the event record would become graph nodes and never run as a read).
 *   - lte_mem_read_wait is called from a worker thread (a nonblocking FFI call) while the JS
 *     thread may start a read into another block: staging_mu guards the block list, and the event
 *     handle is copied out before waiting without the lock.
 *   - Checks, order and messages are those of the CPU backend (cuda/cpu/staging.c).
 */
#include "common.cuh"

namespace lte {

/* Index of the block holding p (anywhere inside it), or -1. Caller holds ctx->staging_mu. */
static long find_block(const lte_ctx *ctx, const void *p) {
  const uintptr_t a = (uintptr_t)p;
  for (size_t i = 0; i < ctx->staging.size(); i++) {
    const StagingBlock &b = ctx->staging[i];
    if (a >= (uintptr_t)b.ptr && a - (uintptr_t)b.ptr < b.bytes) return (long)i;
  }
  return -1;
}

void staging_release_all(lte_ctx *ctx) noexcept {
  for (StagingBlock &b : ctx->staging) {
    if (b.event) cudaEventDestroy(b.event);
    if (b.ptr) cudaFreeHost(b.ptr);
  }
  ctx->staging.clear();
}

}  // namespace lte

extern "C" LTE_API lte_status lte_host_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out) {
  LTE_ENTER("lte_host_alloc");
  LTE_CHECK_POS(bytes);
  LTE_REQUIRE_PTR(out);
  *out = nullptr;
  lte::StagingBlock b;
  b.bytes = bytes;
  cudaError_t e = cudaHostAlloc(&b.ptr, bytes, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return lte::fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN, "cannot allocate %llu bytes of host memory (cudaHostAlloc: %s)",
                (unsigned long long)bytes, cudaGetErrorString(e));
  }
  e = cudaEventCreateWithFlags(&b.event, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    cudaFreeHost(b.ptr);
    return lte::cuda_fail(ctx, FN, "cudaEventCreateWithFlags", e, __FILE__, __LINE__);
  }
  try {
    std::lock_guard<std::mutex> lock(ctx->staging_mu);
    ctx->staging.push_back(b);
  } catch (...) {
    cudaEventDestroy(b.event);
    cudaFreeHost(b.ptr);
    return lte::exception_status(ctx, FN);
  }
  *out = b.ptr;
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_host_free(lte_ctx_t *ctx, void *ptr) {
  LTE_ENTER("lte_host_free");
  if (ptr == nullptr) return LTE_STATUS_OK;
  lte::StagingBlock b;
  bool found = false;
  try {
    std::lock_guard<std::mutex> lock(ctx->staging_mu);
    for (size_t i = 0; i < ctx->staging.size(); i++) {
      if (ctx->staging[i].ptr == ptr) {
        b = ctx->staging[i];
        ctx->staging.erase(ctx->staging.begin() + (long)i);
        found = true;
        break;
      }
    }
  } catch (...) {
    return lte::exception_status(ctx, FN);
  }
  if (!found) return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, LTE_MSG_NOT_STAGING_START, "ptr", ptr);
  cudaError_t e = cudaEventSynchronize(b.event); /* a read may still be writing into the block */
  cudaEventDestroy(b.event);
  cudaFreeHost(b.ptr);
  if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "cudaEventSynchronize", e, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_mem_read_start(lte_ctx_t *ctx, void *dst, const void *src, uint64_t bytes) {
  LTE_ENTER("lte_mem_read_start");
  LTE_CHECK_POS(bytes);
  LTE_REQUIRE_PTR(dst);
  LTE_REQUIRE_PTR(src);
  cudaEvent_t ev = nullptr;
  uint64_t room = 0;
  try {
    std::lock_guard<std::mutex> lock(ctx->staging_mu);
    const long i = lte::find_block(ctx, dst);
    if (i >= 0) {
      const lte::StagingBlock &b = ctx->staging[(size_t)i];
      ev = b.event;
      room = b.bytes - (uint64_t)((uintptr_t)dst - (uintptr_t)b.ptr);
    }
  } catch (...) {
    return lte::exception_status(ctx, FN);
  }
  LTE_REQUIRE(ev != nullptr, LTE_MSG_NOT_STAGING, "dst", dst);
  LTE_REQUIRE(bytes <= room, LTE_MSG_STAGING_RANGE, (unsigned long long)bytes, (unsigned long long)room);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  LTE_CUDA_TRY(cudaStreamIsCapturing(ctx->stream, &cap));
  if (cap != cudaStreamCaptureStatusNone)
    return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "not allowed while the context's stream is being captured");
  LTE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
  LTE_CUDA_TRY(cudaEventRecord(ev, ctx->stream));
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_mem_read_wait(lte_ctx_t *ctx, const void *dst) {
  LTE_ENTER("lte_mem_read_wait");
  LTE_REQUIRE_PTR(dst);
  cudaEvent_t ev = nullptr;
  try {
    std::lock_guard<std::mutex> lock(ctx->staging_mu);
    const long i = lte::find_block(ctx, dst);
    if (i >= 0) ev = ctx->staging[(size_t)i].event;
  } catch (...) {
    return lte::exception_status(ctx, FN);
  }
  LTE_REQUIRE(ev != nullptr, LTE_MSG_NOT_STAGING, "dst", dst);
  /* an event never recorded counts as complete: OK at once */
  LTE_CUDA_TRY(cudaEventSynchronize(ev));
  return LTE_STATUS_OK;
}
