/*
 * matmul.c: batched GEMM, the only op of the CPU backend tuned for speed (CPU training uses it).
 *
 *   C[i] = alpha * op(A[i]) @ op(B[i]) + beta * C[i]      i < batch
 *     op(A[i]): (m, k), stored (m, k) row-major, or (k, m) when trans_a = 1
 *     op(B[i]): (k, n), stored (k, n) row-major, or (n, k) when trans_b = 1
 *     C[i]:     (m, n) row-major; stride_* = elements between batch items (0 broadcasts)
 *   beta == 0 overwrites C (NaN/Inf already in C are ignored), as BLAS does.
 *
 * Scheme (a small GotoBLAS-style blocking that the compiler auto-vectorises at -O3):
 *   work item = (batch item, panel of NC columns of C, chunk of MC rows of C)
 *   1. pack op(B)[:, panel] into strips of NR columns, each strip stored (k, NR) contiguous
 *      (this also absorbs trans_b; columns past n are zero padded);
 *   2. for each block of MR rows and each strip, a register-blocked micro-kernel accumulates the
 *      MR x NR tile over the whole k dimension in float, p = 0, 1, ..., k-1 in order;
 *   3. C = alpha * acc + beta * C.
 * Every C element is computed by one thread with the same operation order whatever the thread
 * count, so results are bit-identical for any LTE_OPTION_NUM_THREADS.
 */
#include "cpu_common.h"

enum {
  MR = 4,   /* rows of the micro-tile */
  NR = 8,   /* columns of the micro-tile (two SSE / one AVX register) */
  NC = 256, /* columns of C per work item (B panel: k x NC floats) */
  MC = 64   /* rows of C per work item */
};

/* acc[r][j] = sum_p op(A)(row r, p) * panel[p][j], p in order. arow[r] points at op(A)'s row r
   (element p at arow[r][p * a_ks]); rows beyond the matrix repeat the last row (result unused). */
static inline void micro_kernel(int64_t k, const float *const arow[MR], int64_t a_ks, const float *panel,
                                float acc[MR][NR]) {
  float c0[NR] = {0}, c1[NR] = {0}, c2[NR] = {0}, c3[NR] = {0};
  const float *a0 = arow[0], *a1 = arow[1], *a2 = arow[2], *a3 = arow[3];
  for (int64_t p = 0; p < k; p++) {
    const float *bp = panel + p * NR;
    const float x0 = a0[p * a_ks], x1 = a1[p * a_ks], x2 = a2[p * a_ks], x3 = a3[p * a_ks];
    for (int j = 0; j < NR; j++) {
      c0[j] += x0 * bp[j];
      c1[j] += x1 * bp[j];
      c2[j] += x2 * bp[j];
      c3[j] += x3 * bp[j];
    }
  }
  for (int j = 0; j < NR; j++) {
    acc[0][j] = c0[j];
    acc[1][j] = c1[j];
    acc[2][j] = c2[j];
    acc[3][j] = c3[j];
  }
}

/* Packs op(B)[:, j0 : j0 + jw) into ceil(jw / NR) strips of (k, NR), zero padded. */
static void pack_b(const float *b, int trans_b, int64_t n, int64_t k, int64_t j0, int64_t jw, float *panel) {
  const int64_t strips = (jw + NR - 1) / NR;
  for (int64_t s = 0; s < strips; s++) {
    float *dst = panel + s * k * NR;
    const int64_t jb = j0 + s * NR, nr = jw - s * NR < NR ? jw - s * NR : NR;
    if (!trans_b) {
      /* op(B)(p, j) = b[p * n + j]: copy NR contiguous floats per p */
      for (int64_t p = 0; p < k; p++) {
        const float *src = b + p * n + jb;
        for (int64_t j = 0; j < NR; j++) dst[p * NR + j] = j < nr ? src[j] : 0.0f;
      }
    } else {
      /* op(B)(p, j) = b[j * k + p]: read each stored row j contiguously */
      for (int64_t j = 0; j < NR; j++) {
        const float *src = b + (jb + j) * k;
        if (j < nr) {
          for (int64_t p = 0; p < k; p++) dst[p * NR + j] = src[p];
        } else {
          for (int64_t p = 0; p < k; p++) dst[p * NR + j] = 0.0f;
        }
      }
    }
  }
}

LTE_API lte_status lte_matmul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *c, int32_t batch,
                              int32_t m, int32_t n, int32_t k, int32_t trans_a, int32_t trans_b, int64_t stride_a,
                              int64_t stride_b, int64_t stride_c, float alpha, float beta) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_POS(batch);
  CHECK_POS(m);
  CHECK_POS(n);
  CHECK_POS(k);
  CHECK_NONNEG(stride_a);
  CHECK_NONNEG(stride_b);
  CHECK_NONNEG(stride_c);
  CHECK_PTR(a);
  CHECK_PTR(b);
  CHECK_PTR(c);
  if ((trans_a != 0 && trans_a != 1) || (trans_b != 0 && trans_b != 1)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: trans_a = %d and trans_b = %d must be 0 or 1", __func__,
                (int)trans_a, (int)trans_b);
  }
  if (batch > 1 && stride_c < (int64_t)m * n) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT,
                "%s: stride_c = %lld is smaller than m * n = %lld: batch items would overlap", __func__,
                (long long)stride_c, (long long)m * n);
  }
  const float *A = a, *B = b;
  float *Cm = c;
  const int64_t M = m, N = n, K = k;
  /* op(A)(i, p) = A[i * a_rs + p * a_ks] */
  const int64_t a_rs = trans_a ? 1 : K, a_ks = trans_a ? M : 1;
  const int64_t n_panels = (N + NC - 1) / NC, n_chunks = (M + MC - 1) / MC;
  const int64_t n_items = (int64_t)batch * n_panels * n_chunks;
  const int64_t panel_floats = K * ((NC + NR - 1) / NR) * NR;
  const int nt = lte_nthreads(ctx);
  int alloc_failed = 0;
#pragma omp parallel num_threads(nt) if (n_items > 1 && M * N * K > 32768)
  {
    float *panel = malloc((size_t)panel_floats * sizeof(float));
    if (!panel) {
#pragma omp atomic write
      alloc_failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t item = 0; item < n_items; item++) {
      if (!panel) continue;
      const int64_t bi = item / (n_panels * n_chunks);
      const int64_t pi = (item / n_chunks) % n_panels;
      const int64_t ci = item % n_chunks;
      const float *Ab = A + bi * stride_a, *Bb = B + bi * stride_b;
      float *Cb = Cm + bi * stride_c;
      const int64_t j0 = pi * NC, jw = N - j0 < NC ? N - j0 : NC;
      const int64_t i0 = ci * MC, i1 = i0 + MC < M ? i0 + MC : M;
      pack_b(Bb, trans_b, N, K, j0, jw, panel);
      for (int64_t i = i0; i < i1; i += MR) {
        const int64_t mr = i1 - i < MR ? i1 - i : MR;
        const float *arow[MR];
        for (int r = 0; r < MR; r++) arow[r] = Ab + (i + (r < mr ? r : mr - 1)) * a_rs;
        for (int64_t s = 0; s * NR < jw; s++) {
          float acc[MR][NR];
          micro_kernel(K, arow, a_ks, panel + s * K * NR, acc);
          const int64_t jb = j0 + s * NR, nr = jw - s * NR < NR ? jw - s * NR : NR;
          for (int64_t r = 0; r < mr; r++) {
            float *crow = Cb + (i + r) * N + jb;
            if (beta == 0.0f) {
              for (int64_t j = 0; j < nr; j++) crow[j] = alpha * acc[r][j];
            } else {
              for (int64_t j = 0; j < nr; j++) crow[j] = alpha * acc[r][j] + beta * crow[j];
            }
          }
        }
      }
    }
    free(panel);
  }
  if (alloc_failed) {
    return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate a %lld-byte packing buffer", __func__,
                (long long)(panel_floats * (int64_t)sizeof(float)));
  }
  return LTE_STATUS_OK;
}
