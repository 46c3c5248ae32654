/*
 * matmul.cu: lte_matmul (validation + lte::gemm) and the fallback SGEMM used when cuBLAS is not
 * available.
 *
 * Fallback SGEMM: classic shared-memory tiling, 64x64 output tile per 256-thread block, K in
 * steps of 16, each thread computing a 4x4 register tile (rows ty + 16 i, cols tx + 16 j so
 * shared-memory reads are conflict-free). Tiles of op(A) and op(B) are staged with the load
 * pattern chosen per transpose flag so that consecutive threads read consecutive addresses.
 * Bounds are checked on every load and store, so any m, n, k, leading dims and batch strides
 * (including 0 = broadcast) work. Batches are covered by a grid-stride loop over blockIdx.z.
 * It is correct rather than fast (roughly 10-20 % of cuBLAS); device_info says which path runs.
 */
#include "common.cuh"

namespace lte {

namespace {

constexpr int BM = 64, BN = 64, BK = 16;

__global__ void __launch_bounds__(256) sgemm_fallback_kernel(bool trans_a, bool trans_b, int m, int n, int k,
                                                             float alpha, const float *__restrict__ a, int64_t lda,
                                                             int64_t stride_a, const float *__restrict__ b,
                                                             int64_t ldb, int64_t stride_b, float beta, float *c,
                                                             int64_t ldc, int64_t stride_c, int batch) {
  __shared__ float As[BK][BM + 1];
  __shared__ float Bs[BK][BN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
  for (int bi = blockIdx.z; bi < batch; bi += gridDim.z) {
    const float *A = a + (int64_t)bi * stride_a;
    const float *B = b + (int64_t)bi * stride_b;
    float *C = c + (int64_t)bi * stride_c;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    for (int k0 = 0; k0 < k; k0 += BK) {
      // op(A) tile: As[kk][i] = op(A)[row0 + i][k0 + kk]
#pragma unroll
      for (int l = 0; l < (BM * BK) / 256; ++l) {
        const int idx = tid + l * 256;
        int i, kk;
        if (trans_a) {  // stored (k, m): consecutive i are consecutive addresses
          i = idx % BM;
          kk = idx / BM;
        } else {  // stored (m, k): consecutive kk are consecutive addresses
          kk = idx % BK;
          i = idx / BK;
        }
        const int gr = row0 + i, gk = k0 + kk;
        float v = 0.f;
        if (gr < m && gk < k) v = trans_a ? A[(int64_t)gk * lda + gr] : A[(int64_t)gr * lda + gk];
        As[kk][i] = v;
      }
      // op(B) tile: Bs[kk][j] = op(B)[k0 + kk][col0 + j]
#pragma unroll
      for (int l = 0; l < (BN * BK) / 256; ++l) {
        const int idx = tid + l * 256;
        int j, kk;
        if (trans_b) {  // stored (n, k)
          kk = idx % BK;
          j = idx / BK;
        } else {  // stored (k, n)
          j = idx % BN;
          kk = idx / BN;
        }
        const int gc = col0 + j, gk = k0 + kk;
        float v = 0.f;
        if (gc < n && gk < k) v = trans_b ? B[(int64_t)gc * ldb + gk] : B[(int64_t)gk * ldb + gc];
        Bs[kk][j] = v;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        float ra[4], rb[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) ra[i] = As[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) rb[j] = Bs[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = row0 + ty + 16 * i;
      if (r >= m) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = col0 + tx + 16 * j;
        if (col >= n) continue;
        float *dst = C + (int64_t)r * ldc + col;
        // beta == 0 must not read C (it may hold NaN garbage), as in BLAS.
        *dst = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *dst;
      }
    }
  }
}

}  // namespace

lte_status gemm_fallback(lte_ctx *ctx, const char *fn, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb,
                         int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c, int batch) {
  const char *FN = fn;
  if (m <= 0 || n <= 0 || batch <= 0) return LTE_STATUS_OK;
  dim3 grid((unsigned)((n + BN - 1) / BN), (unsigned)((m + BM - 1) / BM), (unsigned)(batch < 65535 ? batch : 65535));
  if (grid.y > 65535u) return fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "m = %d is too large for the fallback SGEMM", m);
  sgemm_fallback_kernel<<<grid, 256, 0, ctx->stream>>>(trans_a, trans_b, m, n, k < 0 ? 0 : k, alpha, a, lda, stride_a,
                                                        b, ldb, stride_b, beta, c, ldc, stride_c, batch);
  LTE_LAUNCH_CHECK("sgemm_fallback_kernel");
  return LTE_STATUS_OK;
}

}  // namespace lte

extern "C" LTE_API lte_status lte_matmul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *c,
                                         int32_t batch, int32_t m, int32_t n, int32_t k, int32_t trans_a,
                                         int32_t trans_b, int64_t stride_a, int64_t stride_b, int64_t stride_c,
                                         float alpha, float beta) {
  LTE_ENTER("lte_matmul");
  // Same checks, order and messages as the CPU backend.
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_POS(batch);
  LTE_CHECK_POS(m);
  LTE_CHECK_POS(n);
  LTE_CHECK_POS(k);
  LTE_CHECK_NONNEG(stride_a);
  LTE_CHECK_NONNEG(stride_b);
  LTE_CHECK_NONNEG(stride_c);
  LTE_REQUIRE_PTR(a);
  LTE_REQUIRE_PTR(b);
  LTE_REQUIRE_PTR(c);
  LTE_REQUIRE((trans_a == 0 || trans_a == 1) && (trans_b == 0 || trans_b == 1),
              "trans_a = %d and trans_b = %d must be 0 or 1", trans_a, trans_b);
  // Overlapping outputs would also be a data race between concurrently computed batch items.
  LTE_REQUIRE(batch <= 1 || stride_c >= (int64_t)m * n,
              "stride_c = %lld is smaller than m * n = %lld: batch items would overlap", (long long)stride_c,
              (long long)m * n);
  // Stored layouts are compact: A (m, k) or (k, m), B (k, n) or (n, k), C (m, n).
  const int64_t lda = trans_a ? m : k;
  const int64_t ldb = trans_b ? k : n;
  const int64_t ldc = n;
  return lte::gemm(ctx, FN, trans_a != 0, trans_b != 0, m, n, k, alpha, static_cast<const float *>(a),
                   lda > 0 ? lda : 1, stride_a, static_cast<const float *>(b), ldb > 0 ? ldb : 1, stride_b, beta,
                   static_cast<float *>(c), ldc > 0 ? ldc : 1, stride_c, batch);
}
