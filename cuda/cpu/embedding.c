/*
 * embedding.c: token embedding lookup and its scatter-add backward.
 *
 *   forward   out[t, :] = weight[ids[t], :]          ids: (n_tokens) int32, weight: (V, C), out: (n_tokens, C)
 *   backward  dweight[ids[t], :] += dout[t, :]
 * Every id is validated before anything is written; the first bad one is reported:
 *   "lte_embedding_forward: ids[17] = 50300 is outside [0, 50257)".
 * The backward is parallel over blocks of the C columns, each thread walking all tokens in order,
 * so repeated ids accumulate in token order whatever the thread count.
 */
#include "cpu_common.h"

/* Returns the index of the first id outside [0, vocab), or -1. */
static int64_t first_bad_id(const int32_t *ids, int64_t n, int32_t vocab) {
  for (int64_t t = 0; t < n; t++) {
    if (ids[t] < 0 || ids[t] >= vocab) return t;
  }
  return -1;
}

static lte_status check_ids(lte_ctx_t *ctx, const char *fn, const int32_t *ids, int64_t n, int32_t vocab) {
  const int64_t bad = first_bad_id(ids, n, vocab);
  if (bad < 0) return LTE_STATUS_OK;
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: ids[%lld] = %d is outside [0, %d)", fn, (long long)bad,
                  (int)ids[bad], (int)vocab);
}

LTE_API lte_status lte_embedding_forward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids, const void *weight,
                                         void *out, int64_t n_tokens, int32_t vocab, int32_t dim) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(n_tokens);
  CHECK_POS(vocab);
  CHECK_POS(dim);
  if (n_tokens == 0) return LTE_STATUS_OK;
  CHECK_PTR(ids);
  CHECK_PTR(weight);
  CHECK_PTR(out);
  LTE_TRY(check_ids(ctx, __func__, ids, n_tokens, vocab));
  const float *W = weight;
  float *O = out;
  const int64_t C = dim;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n_tokens * C > LTE_PAR_MIN)
  for (int64_t t = 0; t < n_tokens; t++) memcpy(O + t * C, W + (int64_t)ids[t] * C, (size_t)C * sizeof(float));
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_embedding_backward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids, const void *dout,
                                          void *dweight, int64_t n_tokens, int32_t vocab, int32_t dim) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(n_tokens);
  CHECK_POS(vocab);
  CHECK_POS(dim);
  if (n_tokens == 0) return LTE_STATUS_OK;
  CHECK_PTR(ids);
  CHECK_PTR(dout);
  CHECK_PTR(dweight);
  LTE_TRY(check_ids(ctx, __func__, ids, n_tokens, vocab));
  enum { CB = 64 }; /* columns per block */
  const float *DO = dout;
  float *DW = dweight;
  const int64_t C = dim, n_blocks = (C + CB - 1) / CB;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n_tokens * C > LTE_PAR_MIN)
  for (int64_t blk = 0; blk < n_blocks; blk++) {
    const int64_t c0 = blk * CB, c1 = c0 + CB < C ? c0 + CB : C;
    for (int64_t t = 0; t < n_tokens; t++) {
      float *dw = DW + (int64_t)ids[t] * C;
      const float *g = DO + t * C;
      for (int64_t c = c0; c < c1; c++) dw[c] += g[c];
    }
  }
  return LTE_STATUS_OK;
}
