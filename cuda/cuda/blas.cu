/*
 * blas.cu: cuBLAS loaded at run time, and the row-major GEMM dispatcher every op uses.
 *
 * Why dlopen: CI compiles the CUDA backend with nvcc but without cuBLAS (and without a GPU), and
 * a missing libcublas must not stop the library from loading. So nothing here includes
 * cublas_v2.h: the few prototypes and enum values needed are declared below, with values copied
 * from cublas_api.h (stable across CUDA 11-13):
 *   CUBLAS_STATUS_SUCCESS = 0, CUBLAS_OP_N = 0, CUBLAS_OP_T = 1,
 *   CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3.
 * Search order: libcublas.so.13, libcublas.so.12, libcublas.so (first that loads and exports
 * every needed symbol wins; the library is loaded once per process). LTE_CUDA_NO_CUBLAS=1 skips
 * cuBLAS entirely (to exercise the fallback SGEMM on a GPU machine).
 *
 * Row-major -> column-major: cuBLAS sees our row-major C (m, n) as its column-major C^T (n, m).
 * So C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T: swap the operands, swap m and n, keep
 * each operand's transpose flag (a row-major (r, c) matrix with leading dim ld is exactly a
 * column-major (c, r) matrix with the same ld).
 *
 * A failing cuBLAS call is LTE_STATUS_BLAS_ERROR naming the call; the fallback SGEMM is used
 * only when cuBLAS is absent.
 *
 * Half-precision GEMMs of the decode engine (gemm_half, twelfth session): cublasGemmEx with f16 /
 * bf16 operands, f32 output and f32 compute (CUBLAS_COMPUTE_32F = 68, CUBLAS_GEMM_DEFAULT = -1;
 * cudaDataType_t values come from the runtime's library_types.h). Optional symbols: a cuBLAS
 * without cublasGemmEx leaves the decode engine on its own kernels. They run on a workspace the
 * context owns (cublasSetWorkspace_v2), so a captured graph never depends on an allocation made by
 * the library during capture.
 */
#include <dlfcn.h>
#include <library_types.h>

#include <cstdlib>
#include <mutex>

#include "common.cuh"

namespace lte {

namespace {

typedef int cublasStatus_t;
typedef void *cublasHandle_t;
typedef int cublasOperation_t;
typedef int cublasMath_t;
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
constexpr cublasOperation_t CUBLAS_OP_N = 0;
constexpr cublasOperation_t CUBLAS_OP_T = 1;
constexpr cublasMath_t CUBLAS_DEFAULT_MATH = 0;
constexpr cublasMath_t CUBLAS_TF32_TENSOR_OP_MATH = 3;

typedef cublasStatus_t (*PFN_cublasCreate)(cublasHandle_t *);
typedef cublasStatus_t (*PFN_cublasDestroy)(cublasHandle_t);
typedef cublasStatus_t (*PFN_cublasSetStream)(cublasHandle_t, cudaStream_t);
typedef cublasStatus_t (*PFN_cublasSetMathMode)(cublasHandle_t, cublasMath_t);
typedef const char *(*PFN_cublasGetStatusString)(cublasStatus_t);
typedef cublasStatus_t (*PFN_cublasGemmEx)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k,
                                            const void *alpha, const void *A, cudaDataType_t Atype, int lda,
                                            const void *B, cudaDataType_t Btype, int ldb, const void *beta, void *C,
                                            cudaDataType_t Ctype, int ldc, int computeType, int algo);
typedef cublasStatus_t (*PFN_cublasSetWorkspace)(cublasHandle_t, void *, size_t);
constexpr int CUBLAS_COMPUTE_32F = 68;
constexpr int CUBLAS_GEMM_DEFAULT = -1;
typedef cublasStatus_t (*PFN_cublasSgemmStridedBatched)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m,
                                                         int n, int k, const float *alpha, const float *A, int lda,
                                                         long long strideA, const float *B, int ldb,
                                                         long long strideB, const float *beta, float *C, int ldc,
                                                         long long strideC, int batchCount);

struct CublasApi {
  void *lib = nullptr;
  const char *soname = nullptr;
  std::string load_error;
  PFN_cublasCreate create = nullptr;
  PFN_cublasDestroy destroy = nullptr;
  PFN_cublasSetStream set_stream = nullptr;
  PFN_cublasSetMathMode set_math_mode = nullptr;
  PFN_cublasGetStatusString status_string = nullptr; /* optional */
  PFN_cublasSgemmStridedBatched sgemm_strided_batched = nullptr;
  PFN_cublasGemmEx gemm_ex = nullptr;              /* optional: the decode engine's gemm_half */
  PFN_cublasSetWorkspace set_workspace = nullptr;  /* optional, needed with gemm_ex */
};

CublasApi g_api;
std::once_flag g_once;

void load_cublas() {
  const char *disable = getenv("LTE_CUDA_NO_CUBLAS");
  if (disable && disable[0] == '1') {
    g_api.load_error = "disabled by LTE_CUDA_NO_CUBLAS=1";
    return;
  }
  // Plain sonames first (the dynamic loader's search path), then the usual toolkit folders in
  // case the GPU machine has no ld.so.conf entry for them.
  static std::vector<std::string> names;
  const char *sonames[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  for (const char *s : sonames) names.push_back(s);
  const char *cuda_home = getenv("CUDA_HOME");
  for (std::string dir : {std::string(cuda_home ? cuda_home : "") + "/lib64", std::string("/usr/local/cuda/lib64")}) {
    if (dir == "/lib64") continue;
    for (const char *s : sonames) names.push_back(dir + "/" + s);
  }
  std::string errors;
  for (const std::string &name_s : names) {
    const char *name = name_s.c_str();
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *err = dlerror();
      if (!errors.empty()) errors += "; ";
      errors += err ? err : name;
      continue;
    }
    CublasApi api;
    api.lib = h;
    api.soname = name;
    api.create = (PFN_cublasCreate)dlsym(h, "cublasCreate_v2");
    api.destroy = (PFN_cublasDestroy)dlsym(h, "cublasDestroy_v2");
    api.set_stream = (PFN_cublasSetStream)dlsym(h, "cublasSetStream_v2");
    api.set_math_mode = (PFN_cublasSetMathMode)dlsym(h, "cublasSetMathMode");
    api.status_string = (PFN_cublasGetStatusString)dlsym(h, "cublasGetStatusString");
    api.sgemm_strided_batched = (PFN_cublasSgemmStridedBatched)dlsym(h, "cublasSgemmStridedBatched");
    api.gemm_ex = (PFN_cublasGemmEx)dlsym(h, "cublasGemmEx");
    api.set_workspace = (PFN_cublasSetWorkspace)dlsym(h, "cublasSetWorkspace_v2");
    if (api.create && api.destroy && api.set_stream && api.set_math_mode && api.sgemm_strided_batched) {
      g_api = api;
      return;
    }
    if (!errors.empty()) errors += "; ";
    errors += std::string(name) + " lacks a required symbol";
    dlclose(h);
  }
  g_api.load_error = errors;
}

std::string status_text(cublasStatus_t s) {
  const char *txt = g_api.status_string ? g_api.status_string(s) : nullptr;
  char buf[96];
  snprintf(buf, sizeof buf, "cuBLAS status %d%s%s", s, txt ? " " : "", txt ? txt : "");
  return buf;
}

}  // namespace

const char *blas_library_name() { return g_api.soname; }

void blas_init(lte_ctx *ctx) {
  std::call_once(g_once, load_cublas);
  if (!g_api.lib) {
    ctx->blas_note = "cuBLAS not loaded (" + g_api.load_error + "); using the fallback SGEMM";
    return;
  }
  cublasHandle_t h = nullptr;
  cublasStatus_t s = g_api.create(&h);
  if (s != CUBLAS_STATUS_SUCCESS) {
    ctx->blas_note = "cublasCreate_v2 failed (" + status_text(s) + "); using the fallback SGEMM";
    return;
  }
  if ((s = g_api.set_stream(h, ctx->stream)) != CUBLAS_STATUS_SUCCESS ||
      (s = g_api.set_math_mode(h, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
    g_api.destroy(h);
    ctx->blas_note = "cuBLAS handle setup failed (" + status_text(s) + "); using the fallback SGEMM";
    return;
  }
  ctx->cublas = h;
}

void blas_destroy(lte_ctx *ctx) {
  if (ctx->cublas && g_api.destroy) g_api.destroy(ctx->cublas);
  ctx->cublas = nullptr;
}

lte_status blas_apply_math_mode(lte_ctx *ctx, const char *fn) {
  if (!ctx->cublas) return LTE_STATUS_OK;
  cublasStatus_t s = g_api.set_math_mode(ctx->cublas, ctx->allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  if (s != CUBLAS_STATUS_SUCCESS)
    return fail(ctx, LTE_STATUS_BLAS_ERROR, fn, "cublasSetMathMode failed: %s", status_text(s).c_str());
  return LTE_STATUS_OK;
}

lte_status gemm(lte_ctx *ctx, const char *fn, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                float beta, float *c, int64_t ldc, int64_t stride_c, int batch) {
  const char *FN = fn;
  if (m <= 0 || n <= 0 || batch <= 0) return LTE_STATUS_OK;
  if (k <= 0) {
    // C = beta * C. cuBLAS would reject lda = k = 0, and the fallback handles it anyway.
    return gemm_fallback(ctx, fn, trans_a, trans_b, m, n, 0, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                         stride_c, batch);
  }
  if (!ctx->cublas) {
    return gemm_fallback(ctx, fn, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                         stride_c, batch);
  }
  if (lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
    return fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "leading dimension exceeds the int32 range of cuBLAS");
  // The stream is re-bound on every call: cheap, and robust if the handle's stream was changed.
  cublasStatus_t s = g_api.set_stream(ctx->cublas, ctx->stream);
  if (s != CUBLAS_STATUS_SUCCESS)
    return fail(ctx, LTE_STATUS_BLAS_ERROR, FN, "cublasSetStream_v2 failed: %s", status_text(s).c_str());
  // C^T (n x m, col-major, ld ldc) = op(B)^T (n x k) * op(A)^T (k x m)
  s = g_api.sgemm_strided_batched(ctx->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  n, m, k, &alpha, b, (int)ldb, (long long)stride_b, a, (int)lda,
                                  (long long)stride_a, &beta, c, (int)ldc, (long long)stride_c, batch);
  if (s != CUBLAS_STATUS_SUCCESS) {
    return fail(ctx, LTE_STATUS_BLAS_ERROR, FN,
                "cublasSgemmStridedBatched(m=%d, n=%d, k=%d, batch=%d, trans_a=%d, trans_b=%d) failed: %s", m, n, k,
                batch, (int)trans_a, (int)trans_b, status_text(s).c_str());
  }
  LTE_LAUNCH_CHECK("cublasSgemmStridedBatched");
  return LTE_STATUS_OK;
}

bool gemm_half_available(const lte_ctx *ctx) { return ctx->cublas && g_api.gemm_ex && g_api.set_workspace; }

void *GrowScratch::grow(size_t want, size_t headroom, bool zero, cudaStream_t zero_on) {
  if (want <= bytes) return ptr;
  const size_t n = want + headroom;
  void *p = nullptr;
  if (cudaMalloc(&p, n) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  if (zero && cudaMemsetAsync(p, 0, n, zero_on) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(p);
    return nullptr;
  }
  if (ptr) retired.push_back(ptr);  // a graph captured earlier may hold it: never freed before release
  ptr = p;
  bytes = n;
  return p;
}

void GrowScratch::release() {
  for (void *p : retired) cudaFree(p);
  retired.clear();
  if (ptr) cudaFree(ptr);
  ptr = nullptr;
  bytes = 0;
}

// 8 MiB of headroom on every (re)allocation: a 7B step's largest call needs ~2 MiB beyond the
// workspace, so one block of ~40 MiB serves a whole engine
void *decode_scratch(lte_ctx *ctx, size_t bytes) { return ctx->dec_scratch.grow(bytes, (size_t)8 << 20, false, nullptr); }

/* Grows s outside stream captures only (a zeroing memset would become part of the graph, and a
   cudaMalloc during a capture is refused): NULL there when it is too small. */
static void *scratch_outside_capture(lte_ctx *ctx, GrowScratch &s, size_t bytes, bool zero) {
  if (bytes <= s.bytes) return s.ptr;
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(ctx->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return nullptr;
  }
  return s.grow(bytes, 0, zero, ctx->stream);
}

void *attention_scratch(lte_ctx *ctx, size_t bytes) { return scratch_outside_capture(ctx, ctx->attn_scratch, bytes, true); }

void *sffn_parts_scratch(lte_ctx *ctx, size_t bytes) { return scratch_outside_capture(ctx, ctx->sffn_parts, bytes, false); }

void decode_scratch_release(lte_ctx *ctx) {
  ctx->attn_scratch.release();
  ctx->sffn_parts.release();
  ctx->dec_scratch.release();
  if (ctx->dec_fork) cudaEventDestroy(ctx->dec_fork);
  if (ctx->dec_join) cudaEventDestroy(ctx->dec_join);
  if (ctx->dec_side) cudaStreamDestroy(ctx->dec_side);
  ctx->dec_fork = ctx->dec_join = nullptr;
  ctx->dec_side = nullptr;
}

lte_status gemm_half(lte_ctx *ctx, const char *fn, lte_dtype dt, bool w_kn, int rows, int n, int k, const void *w,
                     int ldw, const void *xh, float beta, float *y, int ldy, void *workspace, size_t ws_bytes) {
  const char *FN = fn;
  if (!gemm_half_available(ctx)) return fail(ctx, LTE_STATUS_UNSUPPORTED, fn, "cublasGemmEx is not available");
  const cudaDataType_t t = dt == LTE_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  cublasStatus_t s = g_api.set_stream(ctx->cublas, ctx->stream);
  if (s == CUBLAS_STATUS_SUCCESS) s = g_api.set_workspace(ctx->cublas, workspace, ws_bytes);
  if (s != CUBLAS_STATUS_SUCCESS)
    return fail(ctx, LTE_STATUS_BLAS_ERROR, fn, "cublasSetStream/SetWorkspace failed: %s", status_text(s).c_str());
  const float alpha = 1.0f;
  // column-major view: Y^T (n x rows, ld ldy) = op(W) (n x k) . X^T (k x rows, ld k); W as stored
  // (n, k) row-major is column-major (k x n): op T; stored (k, n) it is (n x k): op N
  s = g_api.gemm_ex(ctx->cublas, w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w, t, ldw, xh, t, k,
                    &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS)
    return fail(ctx, LTE_STATUS_BLAS_ERROR, fn, "cublasGemmEx(n=%d, rows=%d, k=%d, %s) failed: %s", n, rows, k,
                w_kn ? "(k, n) weights" : "(n, k) weights", status_text(s).c_str());
  LTE_LAUNCH_CHECK("cublasGemmEx");
  return LTE_STATUS_OK;
}

}  // namespace lte
