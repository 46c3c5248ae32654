/*
 * allocator.cu: the per-context caching device allocator behind lte_mem_alloc / lte_mem_free, and
 * the scratch buffers of the ops (lte::device_alloc / lte::device_free).
 *
 * Design
 *   - Sizes are rounded up: to 512 B below 1 MiB, to 2 MiB above. Training allocates the same
 *     shapes every step, so after the first step every request is served from the cache without
 *     touching cudaMalloc/cudaFree (which synchronize the device). Requests within one rounding
 *     granule of SIZE_MAX are LTE_STATUS_OUT_OF_MEMORY (rounding them up would wrap).
 *   - Freed blocks go to an ordered free list (std::map<size, vector<ptr>>); a request takes the
 *     smallest cached block whose size is >= the rounded request and at most twice it
 *     (lower_bound). Live blocks are in a hash map ptr -> {held size, requested size}. Freeing a
 *     pointer that is not live is LTE_STATUS_INVALID_ARGUMENT.
 *   - Freeing a block that queued kernels still use is safe: every user of this context's memory
 *     is on ctx->stream, so the next owner's kernels run after the previous owner's.
 *   - bytes_in_use counts requested bytes (what lte_mem_alloc handed out); LTE_OPTION_MEMORY_LIMIT
 *     applies to that number. bytes_cached counts the held sizes of cached blocks.
 *   - cudaMalloc failing with cudaErrorMemoryAllocation: synchronize, release the whole cache,
 *     retry once, then report LTE_STATUS_OUT_OF_MEMORY with the requested / in-use / cached byte
 *     counts. Any other cudaMalloc (or synchronize) error is LTE_STATUS_CUDA_ERROR naming the call,
 *     and leaves the cache alone.
 *   - No C++ exception leaves this file: std::bad_alloc from the maps / vectors / strings becomes
 *     LTE_STATUS_OUT_OF_MEMORY, anything else LTE_STATUS_INTERNAL (lte::exception_status). A block
 *     that cudaMalloc returned but that could not be recorded is freed again.
 *   - One std::mutex per context guards the maps; device calls made under it are only
 *     cudaMalloc/cudaFree/cudaStreamSynchronize.
 */
#include "common.cuh"

namespace lte {

static constexpr size_t kSmallGranule = 512;
static constexpr size_t kLargeThreshold = 1u << 20;
static constexpr size_t kLargeGranule = 2u << 20;

/* Largest request that round_size can round up without wrapping. */
static constexpr size_t kMaxRequest = SIZE_MAX - kLargeGranule;

static size_t round_size(size_t bytes) {
  if (bytes < kLargeThreshold) return (bytes + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

/* Frees every cached block. Caller holds ctx->alloc.mu and has synchronized the stream. */
static void release_cache_locked(lte_ctx *ctx) noexcept {
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

lte_status exception_status(lte_ctx *ctx, const char *fn) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, fn, "out of host memory (std::bad_alloc)");
  } catch (const std::exception &e) {
    return fail(ctx, LTE_STATUS_INTERNAL, fn, "unexpected C++ exception: %s", e.what());
  } catch (...) {
    return fail(ctx, LTE_STATUS_INTERNAL, fn, "unexpected C++ exception");
  }
}

/* device_alloc without the exception guard: may throw (std::bad_alloc from the maps, the
   message strings, or std::system_error from the mutex), never leaking a device block. */
static lte_status device_alloc_impl(lte_ctx *ctx, const char *fn, size_t bytes, void **out) {
  const char *FN = fn;
  *out = nullptr;
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxRequest) {
    return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN, "allocating %s exceeds the largest possible allocation",
                mib(bytes).c_str());
  }
  AllocatorState &st = ctx->alloc;
  std::lock_guard<std::mutex> lock(st.mu);
  const uint64_t limit = ctx->memory_limit;
  if (limit != 0 && (bytes > limit || st.bytes_in_use > limit - bytes)) {
    return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN,
                "allocating %s would exceed LTE_OPTION_MEMORY_LIMIT %s (in use %s, cached %s)", mib(bytes).c_str(),
                mib(limit).c_str(), mib(st.bytes_in_use).c_str(), mib(st.bytes_cached).c_str());
  }
  const size_t size = round_size(bytes);
  void *p = nullptr;
  size_t held = size;
  /* Smallest cached block that fits, if it is at most twice the rounded request (empty lists are
     never kept in the map). */
  auto it = st.free_lists.lower_bound(size);
  if (it != st.free_lists.end() && it->first - size <= size && !it->second.empty()) {
    held = it->first;
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) st.free_lists.erase(it);
    st.bytes_cached -= held;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) cudaGetLastError(); /* clear a non-sticky error so later launch checks start clean */
    if (e == cudaErrorMemoryAllocation) {
      /* Out of device memory: wait for queued work (cached blocks may still be in use by it),
         give the cache back to the driver and try once more. */
      const cudaError_t se = cudaStreamSynchronize(ctx->stream);
      if (se != cudaSuccess) {
        cudaGetLastError();
        return cuda_fail(ctx, FN, "cudaStreamSynchronize(ctx->stream)", se, __FILE__, __LINE__);
      }
      release_cache_locked(ctx);
      p = nullptr;
      e = cudaMalloc(&p, size);
      if (e != cudaSuccess) cudaGetLastError();
      if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
        return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, FN,
                    "cudaMalloc of %s failed: %s (in use %s, cached %s, device free %s of %s)", mib(size).c_str(),
                    cudaGetErrorString(e), mib(st.bytes_in_use).c_str(), mib(st.bytes_cached).c_str(),
                    mib(free_b).c_str(), mib(total_b).c_str());
      }
    }
    if (e != cudaSuccess) return cuda_fail(ctx, FN, "cudaMalloc", e, __FILE__, __LINE__);
  }
  try {
    st.live.emplace(p, Block{held, bytes});
  } catch (...) {
    cudaFree(p); /* could not be recorded: give it back rather than leak it */
    throw;
  }
  st.bytes_in_use += bytes;
  if (st.bytes_in_use > st.peak_bytes_in_use) st.peak_bytes_in_use = st.bytes_in_use;
  *out = p;
  return LTE_STATUS_OK;
}

lte_status device_alloc(lte_ctx *ctx, const char *fn, size_t bytes, void **out) noexcept {
  try {
    return device_alloc_impl(ctx, fn, bytes, out);
  } catch (...) {
    *out = nullptr;
    return exception_status(ctx, fn);
  }
}

bool device_free(lte_ctx *ctx, void *ptr) noexcept {
  try {
    AllocatorState &st = ctx->alloc;
    std::lock_guard<std::mutex> lock(st.mu);
    auto it = st.live.find(ptr);
    if (it == st.live.end()) return false;
    const Block b = it->second;
    bool cached = false;
    try {
      st.free_lists[b.size].push_back(ptr);
      cached = true;
    } catch (...) {
      /* No host memory to cache it: drop a list that operator[] may have left empty, and give
         the block back to the driver instead (cudaFree waits for the kernels still using it). */
      auto f = st.free_lists.find(b.size);
      if (f != st.free_lists.end() && f->second.empty()) st.free_lists.erase(f);
    }
    if (cached) {
      st.bytes_cached += b.size;
    } else if (cudaFree(ptr) != cudaSuccess) {
      cudaGetLastError();
    }
    st.bytes_in_use -= b.requested;
    st.live.erase(it);
    return true;
  } catch (...) {
    return false; /* only the mutex can throw here (std::system_error) */
  }
}

void release_cache(lte_ctx *ctx) {
  std::lock_guard<std::mutex> lock(ctx->alloc.mu);
  release_cache_locked(ctx);
}

static void release_all_locked(lte_ctx *ctx) noexcept {
  release_cache_locked(ctx);
  for (auto &kv : ctx->alloc.live) cudaFree(kv.first);
  ctx->alloc.live.clear();
  ctx->alloc.bytes_in_use = 0;
}

void release_all(lte_ctx *ctx) noexcept {
  try {
    std::lock_guard<std::mutex> lock(ctx->alloc.mu);
    release_all_locked(ctx);
  } catch (...) {
    release_all_locked(ctx); /* the mutex failed (std::system_error); at teardown nobody else uses ctx */
  }
}

}  // namespace lte

using lte::fail;

extern "C" LTE_API lte_status lte_mem_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out) {
  LTE_ENTER("lte_mem_alloc");
  LTE_REQUIRE_PTR(out);
  *out = nullptr;
  LTE_REQUIRE(bytes > 0, "bytes must be > 0");
  static_assert(sizeof(size_t) >= sizeof(uint64_t), "size_t must hold a uint64_t byte count");
  return lte::device_alloc(ctx, FN, (size_t)bytes, out); /* noexcept */
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
  try {
    std::lock_guard<std::mutex> lock(ctx->alloc.mu);
    out->bytes_in_use = ctx->alloc.bytes_in_use;
    out->bytes_cached = ctx->alloc.bytes_cached;
    out->peak_bytes_in_use = ctx->alloc.peak_bytes_in_use;
    out->num_allocs = ctx->alloc.live.size();
  } catch (...) {
    return lte::exception_status(ctx, FN);
  }
  out->device_total = total_b;
  out->device_free = free_b;
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_mem_empty_cache(lte_ctx_t *ctx) {
  LTE_ENTER("lte_mem_empty_cache");
  // cudaFree would wait for the device anyway; synchronizing first makes that explicit and
  // surfaces a pending kernel fault here with its real cause.
  LTE_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  try {
    lte::release_cache(ctx);
  } catch (...) {
    return lte::exception_status(ctx, FN);
  }
  return LTE_STATUS_OK;
}
