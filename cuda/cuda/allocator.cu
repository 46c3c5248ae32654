/*
 * allocator.cu: the per-context caching device allocator behind lte_mem_alloc / lte_mem_free, and
 * the scratch buffers of the ops (lte::device_alloc / lte::device_free).
 *
 * Design
 *   - Sizes are rounded up: to 512 B below 1 MiB, to 2 MiB above. Training allocates the same
 *     shapes every step, so after the first step every request is served from the cache without
 *     touching cudaMalloc/cudaFree (which synchronize the device).
 *   - Freed blocks go to an exact-size free list (std::map<size, vector<ptr>>); live blocks are in
 *     a hash map ptr -> {rounded size, requested size}. Freeing a pointer that is not live is
 *     LTE_STATUS_INVALID_ARGUMENT.
 *   - Freeing a block that queued kernels still use is safe: every user of this context's memory
 *     is on ctx->stream, so the next owner's kernels run after the previous owner's.
 *   - bytes_in_use counts requested bytes (what lte_mem_alloc handed out); LTE_OPTION_MEMORY_LIMIT
 *     applies to that number. bytes_cached counts the rounded sizes of cached blocks.
 *   - On cudaMalloc failure: synchronize, release the whole cache, retry once, then report
 *     LTE_STATUS_OUT_OF_MEMORY with the requested / in-use / cached byte counts.
 *   - One std::mutex per context guards the maps; device calls made under it are only
 *     cudaMalloc/cudaFree/cudaStreamSynchronize.
 */
#include "common.cuh"

namespace lte {

static constexpr size_t kSmallGranule = 512;
static constexpr size_t kLargeThreshold = 1u << 20;
static constexpr size_t kLargeGranule = 2u << 20;

static size_t round_size(size_t bytes) {
  if (bytes < kLargeThreshold) return (bytes + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

/* Frees every cached block. Caller holds ctx->alloc.mu and has synchronized the stream. */
static void release_cache_locked(lte_ctx *ctx) {
  for (auto &kv : ctx->alloc.free_lists)
    for (void *p : kv.second) cudaFree(p);
  ctx->alloc.free_lists.clear();
  ctx->alloc.bytes_cached = 0;
}

static std::string mib(uint64_t b) {
  char buf[64];
  snprintf(buf, sizeof buf, "%llu bytes (%.1f MiB)", (unsigned long long)b, (double)b / (1024.0 * 1024.0));
  return buf;
}

lte_status device_alloc(lte_ctx *ctx, const char *fn, size_t bytes, void **out) {
  const char *FN = fn;
  *out = nullptr;
  if (bytes == 0) bytes = 1;
  const size_t size = round_size(bytes);
  AllocatorState &st = ctx->alloc;
  std::lock_guard<std::mutex> lock(st.mu);
  if (ctx->memory_limit != 0 && st.bytes_in_use + bytes > ctx->memory_limit) {
    return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN,
                "allocating %s would exceed LTE_OPTION_MEMORY_LIMIT %s (in use %s, cached %s)", mib(bytes).c_str(),
                mib(ctx->memory_limit).c_str(), mib(st.bytes_in_use).c_str(), mib(st.bytes_cached).c_str());
  }
  void *p = nullptr;
  auto it = st.free_lists.find(size);
  if (it != st.free_lists.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) st.free_lists.erase(it);
    st.bytes_cached -= size;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError(); /* cudaErrorMemoryAllocation is not sticky; clear it */
      cudaStreamSynchronize(ctx->stream);
      release_cache_locked(ctx);
      e = cudaMalloc(&p, size);
      if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN,
                    "cudaMalloc of %s failed: %s (in use %s, cached %s, device free %s of %s)", mib(size).c_str(),
                    cudaGetErrorString(e), mib(st.bytes_in_use).c_str(), mib(st.bytes_cached).c_str(),
                    mib(free_b).c_str(), mib(total_b).c_str());
      }
    }
  }
  st.live[p] = Block{size, bytes};
  st.bytes_in_use += bytes;
  if (st.bytes_in_use > st.peak_bytes_in_use) st.peak_bytes_in_use = st.bytes_in_use;
  *out = p;
  return LTE_STATUS_OK;
}

bool device_free(lte_ctx *ctx, void *ptr) {
  AllocatorState &st = ctx->alloc;
  std::lock_guard<std::mutex> lock(st.mu);
  auto it = st.live.find(ptr);
  if (it == st.live.end()) return false;
  st.bytes_in_use -= it->second.requested;
  st.bytes_cached += it->second.size;
  st.free_lists[it->second.size].push_back(ptr);
  st.live.erase(it);
  return true;
}

void release_cache(lte_ctx *ctx) {
  std::lock_guard<std::mutex> lock(ctx->alloc.mu);
  release_cache_locked(ctx);
}

void release_all(lte_ctx *ctx) {
  std::lock_guard<std::mutex> lock(ctx->alloc.mu);
  release_cache_locked(ctx);
  for (auto &kv : ctx->alloc.live) cudaFree(kv.first);
  ctx->alloc.live.clear();
  ctx->alloc.bytes_in_use = 0;
}

}  // namespace lte

using lte::fail;

extern "C" LTE_API lte_status lte_mem_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out) {
  LTE_ENTER("lte_mem_alloc");
  LTE_REQUIRE_PTR(out);
  *out = nullptr;
  LTE_REQUIRE(bytes > 0, "bytes must be > 0");
  return lte::device_alloc(ctx, FN, (size_t)bytes, out);
}

extern "C" LTE_API lte_status lte_mem_free(lte_ctx_t *ctx, void *ptr) {
  LTE_ENTER("lte_mem_free");
  if (ptr == nullptr) return LTE_STATUS_OK;
  LTE_REQUIRE(lte::device_free(ctx, ptr), "pointer %p was not allocated by this context (or was already freed)", ptr);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_mem_stats(lte_ctx_t *ctx, lte_mem_stats_t *out) {
  LTE_ENTER("lte_mem_stats");
  LTE_REQUIRE_PTR(out);
  size_t free_b = 0, total_b = 0;
  LTE_CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
  std::lock_guard<std::mutex> lock(ctx->alloc.mu);
  out->bytes_in_use = ctx->alloc.bytes_in_use;
  out->bytes_cached = ctx->alloc.bytes_cached;
  out->peak_bytes_in_use = ctx->alloc.peak_bytes_in_use;
  out->num_allocs = ctx->alloc.live.size();
  out->device_total = total_b;
  out->device_free = free_b;
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_mem_empty_cache(lte_ctx_t *ctx) {
  LTE_ENTER("lte_mem_empty_cache");
  // cudaFree would wait for the device anyway; synchronizing first makes that explicit and
  // surfaces a pending kernel fault here with its real cause.
  LTE_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  lte::release_cache(ctx);
  return LTE_STATUS_OK;
}
