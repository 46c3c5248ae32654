/*
 * common.cuh: private core of the CUDA backend, shared by every translation unit.
 *
 * Contents
 *   - struct lte_ctx: device ordinal, non-blocking stream, cuBLAS handle (NULL when cuBLAS could
 *     not be loaded), caching-allocator state, per-context last error, options, and the device
 *     error-flag block that kernels use to report out-of-range indices asynchronously.
 *   - Error helpers. Every failure becomes a status plus a message that starts with the public
 *     function name ("lte_gelu_forward: ..."). Nothing here aborts, exits or asserts.
 *   - Entry-point macros: LTE_ENTER (NULL ctx check + cudaSetDevice, because calls may come from
 *     any OS thread), LTE_CUDA_TRY (wraps a runtime call), LTE_LAUNCH_CHECK (cudaGetLastError
 *     after every kernel launch), LTE_REQUIRE (argument validation), LTE_REQUIRE_F32 (dtype).
 *   - Internal services implemented in other units: allocator (allocator.cu), GEMM dispatcher
 *     (blas.cu: cuBLAS or the fallback SGEMM of matmul.cu).
 *
 * Everything a context queues runs on its one stream, in order. That single fact makes freeing a
 * block that queued kernels still use safe (the next user of the block is queued after them), and
 * lets scratch buffers be released at the end of the call that allocated them.
 */
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "lte.h"
#include "lte_checks.h"
#include "lte_names.h"

/* ------------------------------------------------------------------ device error flag */

namespace lte {

/* Which public function a device-side error came from (DeviceError::op). */
enum DeviceOp : long long {
  DEV_OP_NONE = 0,
  DEV_OP_EMBEDDING_FORWARD = 1,
  DEV_OP_EMBEDDING_BACKWARD = 2,
  DEV_OP_CROSS_ENTROPY_FORWARD = 3,
  DEV_OP_CROSS_ENTROPY_BACKWARD = 4,
};

/* Written by kernels that find a bad index; read and reset by the host after a stream sync.
   Every launch of a validating kernel carries a fresh non-zero serial. The first launch that
   finds a bad index claims the record (atomicCAS on `serial`, 0 -> its serial) and describes
   itself (op, limit, aux); all its threads then atomicMin their (index << 32 | value) into `key`,
   so the report names the LOWEST bad index of the first failing launch: the same element the
   CPU backend names (it scans in order). Later launches leave a claimed record alone. */
struct DeviceError {
  unsigned long long serial; /* 0 = clear */
  unsigned long long key;    /* (index << 32) | (uint32_t)value; ~0 = none */
  long long op;              /* DeviceOp */
  long long limit;           /* valid range is [0, limit) */
  long long aux;             /* cross-entropy: ignore_index */
};

__device__ __forceinline__ void report_bad_index(DeviceError *err, unsigned long long serial, long long op,
                                                 long long index, int32_t value, long long limit, long long aux) {
  const unsigned long long old = atomicCAS(&err->serial, 0ull, serial);
  if (old == 0ull) {
    err->op = op;
    err->limit = limit;
    err->aux = aux;
  }
  if (old == 0ull || old == serial)
    atomicMin(&err->key, ((unsigned long long)index << 32) | (unsigned long long)(uint32_t)value);
}

/* ------------------------------------------------------------------ allocator state */

struct Block {
  size_t size;      /* rounded size actually held on the device */
  size_t requested; /* bytes asked for (what bytes_in_use counts) */
};

struct AllocatorState {
  std::mutex mu;
  std::unordered_map<void *, Block> live;            /* handed out */
  std::map<size_t, std::vector<void *>> free_lists;  /* rounded size -> cached blocks */
  uint64_t bytes_in_use = 0;
  uint64_t bytes_cached = 0;
  uint64_t peak_bytes_in_use = 0;
};

}  // namespace lte

namespace lte {
/* A pinned host block of lte_host_alloc and the event recorded after the last read into it
   (staging.cu). */
struct StagingBlock {
  void *ptr = nullptr;
  uint64_t bytes = 0;
  cudaEvent_t event = nullptr;
};
/* A device block owned by the context that only grows (blas.cu). A grown block's predecessor is
   retired, not freed, since graphs captured earlier may still use it; all are freed with the
   context (release). */
struct GrowScratch {
  void *ptr = nullptr;
  size_t bytes = 0;
  std::vector<void *> retired;
  /* at least `want` bytes; when it grows, want + headroom bytes, zeroed on `zero_on` first when
     `zero` (stream-ordered before the caller's kernels). NULL when an allocation fails (the old
     block stays). */
  void *grow(size_t want, size_t headroom, bool zero, cudaStream_t zero_on);
  void release();
};
}  // namespace lte

struct lte_ctx {
  int device = 0;
  cudaStream_t stream = nullptr;
  void *cublas = nullptr; /* cublasHandle_t, or NULL: use the fallback SGEMM */
  int sm_count = 0;
  lte::AllocatorState alloc;
  std::mutex err_mu;
  std::string last_error;
  /* options */
  bool allow_tf32 = false;
  bool deterministic = false;
  uint64_t memory_limit = 0;
  /* device error flag (device memory) and its pinned host mirror */
  lte::DeviceError *d_err = nullptr;
  lte::DeviceError *h_err = nullptr;
  unsigned long long launch_serial = 0; /* last serial handed to a validating kernel (under err_mu) */
  std::string blas_note; /* why cuBLAS is not used, for device_info */
  /* lte_host_alloc blocks (staging.cu); staging_mu guards the vector, not the memory */
  std::mutex staging_mu;
  std::vector<lte::StagingBlock> staging;
  /* the decode engine's cuBLAS scratch (blas.cu, decode_scratch): workspace + half inputs + f32
     products */
  lte::GrowScratch dec_scratch;
  /* the split decode attention's partials and arrival counters (decode_attention.cuh,
     attention_scratch) */
  lte::GrowScratch attn_scratch;
  /* the fused sparse FFN op's partial sums in deterministic mode (decode_sffn.cuh, sffn_parts_scratch) */
  lte::GrowScratch sffn_parts;
  /* the decode engine's second stream and its fork / join events (decode_blas.cuh, decode_side) */
  cudaStream_t dec_side = nullptr;
  cudaEvent_t dec_fork = nullptr, dec_join = nullptr;
};

/* ------------------------------------------------------------------ error helpers */

namespace lte {

/* Thread-local message for calls without a context (lte_last_error). */
void set_thread_error(const std::string &msg);

std::string vformat(const char *fmt, va_list ap);

/* Records "<fn>: <formatted>" in ctx (or the thread-local slot when ctx is NULL); returns st.
   Never throws: if the message cannot be built (no host memory), only the status is reliable. */
lte_status fail(lte_ctx *ctx, lte_status st, const char *fn, const char *fmt, ...) noexcept
    __attribute__((format(printf, 4, 5)));

/* "<fn>: <call> failed: <cudaGetErrorString> (file:line)" -> LTE_STATUS_CUDA_ERROR. */
lte_status cuda_fail(lte_ctx *ctx, const char *fn, const char *call, cudaError_t e, const char *file,
                     int line) noexcept;

/* Only inside a catch handler: records the exception being handled and returns its status
   (std::bad_alloc -> LTE_STATUS_OUT_OF_MEMORY, anything else -> LTE_STATUS_INTERNAL). Keeps C++
   exceptions from crossing an extern "C" entry point (allocator.cu). */
lte_status exception_status(lte_ctx *ctx, const char *fn) noexcept;

const char *dtype_name(lte_dtype dtype);

}  // namespace lte

#define LTE_CUDA_TRY(call)                                                      \
  do {                                                                          \
    cudaError_t lte_e_ = (call);                                                \
    if (lte_e_ != cudaSuccess) {                                                \
      return lte::cuda_fail(ctx, FN, #call, lte_e_, __FILE__, __LINE__);        \
    }                                                                           \
  } while (0)

/* After every kernel launch: reports launch-configuration errors (and sticky earlier faults). */
#define LTE_LAUNCH_CHECK(kernel_name)                                                        \
  do {                                                                                       \
    cudaError_t lte_e_ = cudaGetLastError();                                                 \
    if (lte_e_ != cudaSuccess) {                                                             \
      return lte::cuda_fail(ctx, FN, "launch of " kernel_name, lte_e_, __FILE__, __LINE__); \
    }                                                                                        \
  } while (0)

/* Propagates a non-OK status from an internal helper (which already recorded the message). */
#define LTE_TRY(expr)                      \
  do {                                     \
    lte_status lte_s_ = (expr);            \
    if (lte_s_ != LTE_STATUS_OK) return lte_s_; \
  } while (0)

/* Entry prologue: names the function (FN), rejects a NULL ctx, binds the calling thread to the
   context's device. */
#define LTE_ENTER(name)                                                                 \
  static constexpr const char *FN = name;                                               \
  if (ctx == nullptr) return lte::fail(nullptr, LTE_STATUS_INVALID_ARGUMENT, FN, LTE_MSG_CTX_NULL); \
  LTE_CUDA_TRY(cudaSetDevice(ctx->device))

#define LTE_REQUIRE(cond, ...)                                                    \
  do {                                                                            \
    if (!(cond)) return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, __VA_ARGS__); \
  } while (0)

#define LTE_REQUIRE_PTR(p) LTE_REQUIRE((p) != nullptr, LTE_MSG_PTR_NULL, #p)

/* Validation mirrors the CPU backend (cuda/cpu/) check for check, in the same order, with the
   same messages (formats shared in cuda/include/lte_checks.h): ctx, dtype, sizes, op-specific
   values, early return when there is no work, then pointers. f16/bf16/i32 are
   LTE_STATUS_UNSUPPORTED; any other dtype value is invalid. */
#define LTE_REQUIRE_F32(dtype)                                                                        \
  do {                                                                                                \
    const lte_status lte_dt_ = lte_f32_dtype_status(dtype);                                           \
    if (lte_dt_ == LTE_STATUS_UNSUPPORTED)                                                            \
      return lte::fail(ctx, lte_dt_, FN, LTE_MSG_DTYPE_UNSUPPORTED, lte::dtype_name(dtype), "cuda");  \
    if (lte_dt_ != LTE_STATUS_OK) return lte::fail(ctx, lte_dt_, FN, LTE_MSG_DTYPE_UNKNOWN, (int)(dtype)); \
  } while (0)

#define LTE_CHECK_NONNEG(v) \
  LTE_REQUIRE((int64_t)(v) >= 0, LTE_MSG_NONNEG, #v, (long long)(v))
#define LTE_CHECK_POS(v) \
  LTE_REQUIRE((int64_t)(v) > 0, LTE_MSG_POS, #v, (long long)(v))

/* The ABI passes tensors as void pointers; every op here works on f32. */
#define F32(p) static_cast<const float *>(p)
#define F32W(p) static_cast<float *>(p)

/* Common prologue of the (n)-sized elementwise / activation ops: ctx, dtype, n >= 0, early return
   on n == 0 (pointers are only checked when there is work, as on the CPU). */
#define ELEMENTWISE_PROLOGUE(name) \
  LTE_ENTER(name);                 \
  LTE_REQUIRE_F32(dtype);          \
  LTE_CHECK_NONNEG(n);             \
  if (n == 0) return LTE_STATUS_OK

/* Launches a grid-stride kernel over the n elements on ctx->stream, checks the launch and returns
   LTE_STATUS_OK from the calling entry point. */
#define LAUNCH_EW(kernel, ...)                                                     \
  do {                                                                             \
    kernel<<<lte::grid_for(ctx, n), lte::kThreads, 0, ctx->stream>>>(__VA_ARGS__); \
    LTE_LAUNCH_CHECK(#kernel);                                                     \
    return LTE_STATUS_OK;                                                          \
  } while (0)

/* ------------------------------------------------------------------ internal services */

namespace lte {

/* Frees every lte_host_alloc block of ctx (staging.cu; lte_ctx_free, after the stream drained). */
void staging_release_all(lte_ctx *ctx) noexcept;

/* A fresh serial for one launch of a validating kernel (context.cu). */
unsigned long long next_launch_serial(lte_ctx *ctx);

/* Caching allocator (allocator.cu). `fn` names the public function for error messages. Neither
   throws: host allocation failures inside become LTE_STATUS_OUT_OF_MEMORY. */
lte_status device_alloc(lte_ctx *ctx, const char *fn, size_t bytes, void **out) noexcept;
/* Returns a block to the cache; false if ptr is not a live block of ctx. */
bool device_free(lte_ctx *ctx, void *ptr) noexcept;
/* Releases every cached block (caller holds no allocator lock). May throw std::system_error
   (mutex). */
void release_cache(lte_ctx *ctx);
/* Releases live and cached blocks (context teardown). */
void release_all(lte_ctx *ctx) noexcept;

/* Scratch buffers owned by one call, released (to the cache) when the call returns, on every
   path. Safe while kernels using them are still queued: everything runs on ctx->stream. */
class Scratch {
 public:
  Scratch(lte_ctx *ctx, const char *fn) : ctx_(ctx), fn_(fn) {}
  ~Scratch() {
    for (void *p : ptrs_) device_free(ctx_, p); /* noexcept */
  }
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;
  template <class T>
  lte_status get(size_t count, T **out) noexcept {
    void *p = nullptr;
    /* An overflowing count asks for SIZE_MAX, which device_alloc rejects as out of memory. */
    const size_t bytes = count > SIZE_MAX / sizeof(T) ? SIZE_MAX : count * sizeof(T);
    lte_status st = device_alloc(ctx_, fn_, bytes > 0 ? bytes : 1, &p);
    if (st != LTE_STATUS_OK) return st;
    try {
      ptrs_.push_back(p);
    } catch (...) {
      device_free(ctx_, p);
      return exception_status(ctx_, fn_);
    }
    *out = static_cast<T *>(p);
    return LTE_STATUS_OK;
  }

 private:
  lte_ctx *ctx_;
  const char *fn_;
  std::vector<void *> ptrs_;
};

/* Row-major strided-batched SGEMM (blas.cu):
     C[i] = alpha * op(A[i]) @ op(B[i]) + beta * C[i],  i < batch
   op(A[i]) is (m, k): A stored (m, k) with leading dim lda, or (k, m) when trans_a.
   op(B[i]) is (k, n): B stored (k, n) with leading dim ldb, or (n, k) when trans_b.
   C is (m, n) with leading dim ldc. Strides are in elements and may be 0. beta == 0 never
   reads C. Uses cuBLAS when loaded, else the tiled fallback kernel. */
lte_status gemm(lte_ctx *ctx, const char *fn, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                float beta, float *c, int64_t ldc, int64_t stride_c, int batch);

/* Fallback SGEMM launcher (matmul.cu), same contract as gemm(). */
lte_status gemm_fallback(lte_ctx *ctx, const char *fn, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb,
                         int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c, int batch);

/* cuBLAS loading (blas.cu): creates ctx->cublas if the library can be loaded (or records why
   not in ctx->blas_note). Never fails the context creation. */
void blas_init(lte_ctx *ctx);
void blas_destroy(lte_ctx *ctx);
/* Applies ctx->allow_tf32 to the handle. */
lte_status blas_apply_math_mode(lte_ctx *ctx, const char *fn);
/* Soname of the loaded cuBLAS, or NULL. */
const char *blas_library_name();
/* Whether gemm_half can run (cuBLAS loaded with cublasGemmEx and cublasSetWorkspace_v2). */
bool gemm_half_available(const lte_ctx *ctx);
/* The decode engine's GEMM on cuBLAS (f16 / bf16 operands, f32 compute and output), row-major:
     y (rows, n; leading dim ldy) = beta * y + xh (rows, k; dense, type dt) . W^T
   where W is (n, k) with leading dim ldw (nn.Linear), or stored (k, n) with leading dim ldw when
   w_kn (a transposed down projection). workspace: ws_bytes of cuBLAS workspace (decode_scratch). */
lte_status gemm_half(lte_ctx *ctx, const char *fn, lte_dtype dt, bool w_kn, int rows, int n, int k, const void *w,
                     int ldw, const void *xh, float beta, float *y, int ldy, void *workspace, size_t ws_bytes);
/* A device block of at least `bytes` owned by the context for the decode engine's cuBLAS path
   (NULL when cudaMalloc fails); the same block serves every call (one stream: calls are ordered). */
void *decode_scratch(lte_ctx *ctx, size_t bytes);
/* The split decode attention's scratch: at least `bytes`, zeroed when (re)allocated (stream-ordered
   before the caller's kernels); NULL when it would have to grow while the context's stream is
   being captured (the caller then does not split) or the allocation fails. */
void *attention_scratch(lte_ctx *ctx, size_t bytes);
void *sffn_parts_scratch(lte_ctx *ctx, size_t bytes);
/* Frees the decode and attention scratch blocks and the decode side stream / events (context destruction). */
void decode_scratch_release(lte_ctx *ctx);

/* y[i] = value for i < n, on ctx->stream (elementwise.cu). */
lte_status fill_f32(lte_ctx *ctx, const char *fn, float *y, int64_t n, float value);

/* ------------------------------------------------------------------ launch helpers */

constexpr int kThreads = 256;

/* Grid for a grid-stride loop over n items: enough blocks to fill the GPU a few times over,
   never more than needed. */
inline unsigned grid_for(const lte_ctx *ctx, int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = (int64_t)(ctx->sm_count > 0 ? ctx->sm_count : 132) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return (unsigned)blocks;
}

/* Grid for the row kernels (one block per row, blocks loop over rows): one block per row up to
   65535 * 16 blocks. */
inline unsigned row_grid(int64_t rows) { return (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16); }

#define LTE_GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

}  // namespace lte
