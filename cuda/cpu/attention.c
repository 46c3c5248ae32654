/*
 * attention.c: causal multi-head self-attention with grouped-query heads (reference loops).
 *
 *   q: (B, T, H, D), k, v: (B, T, HKV, D), out: (B, T, H, D), probs: (B, H, T, T)
 *   query head h reads key/value head h / (H / HKV).
 *   forward   s_j = scale * q_t . k_j (j <= t), P_t = softmax(s) (max subtracted, sums in double),
 *             probs[b, h, t, j] = P_tj for j <= t and 0 above the diagonal,
 *             out_t = sum_j P_tj v_j (double accumulation, using the stored f32 probabilities).
 *   backward  dV += P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),
 *             dQ += scale dS K,  dK += scale dS^T Q
 *             (key/value gradients of the H / HKV query heads sharing a kv head are summed).
 * Forward is parallel over (b, h, t) rows; backward over (b, kv head), each task handling its
 * query heads in order with double accumulators, so no two threads write the same element and
 * the result does not depend on the thread count.
 */
#include "cpu_common.h"

static lte_status attention_check(lte_ctx_t *ctx, const char *fn, lte_dtype dtype, int32_t batch, int32_t seq,
                                  int32_t heads, int32_t kv_heads, int32_t head_dim, float scale) {
  LTE_TRY(lte_check_ctx(ctx, fn));
  LTE_TRY(lte_check_f32(ctx, fn, dtype));
  LTE_TRY(lte_check_pos(ctx, fn, batch, "batch"));
  LTE_TRY(lte_check_pos(ctx, fn, seq, "seq"));
  LTE_TRY(lte_check_pos(ctx, fn, heads, "heads"));
  LTE_TRY(lte_check_pos(ctx, fn, kv_heads, "kv_heads"));
  LTE_TRY(lte_check_pos(ctx, fn, head_dim, "head_dim"));
  if (heads % kv_heads != 0) {
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: heads = %d is not a multiple of kv_heads = %d", fn,
                    (int)heads, (int)kv_heads);
  }
  if (!isfinite(scale)) {
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: scale = %g must be finite", fn, (double)scale);
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_attention_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *q, const void *k,
                                         const void *v, void *out, void *probs, int32_t batch, int32_t seq,
                                         int32_t heads, int32_t kv_heads, int32_t head_dim, float scale) {
  LTE_TRY(attention_check(ctx, __func__, dtype, batch, seq, heads, kv_heads, head_dim, scale));
  CHECK_PTR(q);
  CHECK_PTR(k);
  CHECK_PTR(v);
  CHECK_PTR(out);
  CHECK_PTR(probs);
  const float *Q = q, *K = k, *V = v;
  float *O = out, *P = probs;
  const int64_t T = seq, H = heads, HKV = kv_heads, D = head_dim, group = H / HKV;
  const int64_t n_rows = (int64_t)batch * H * T;
  const int nt = lte_nthreads(ctx);
  int alloc_failed = 0;
#pragma omp parallel num_threads(nt) if (n_rows * T * D > LTE_PAR_MIN)
  {
    double *s = malloc((size_t)(T + D) * sizeof(double)); /* scores (T), output accumulator (D) */
    if (!s) {
#pragma omp atomic write
      alloc_failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n_rows; row++) {
      if (!s) continue;
      double *acc = s + T;
      const int64_t b = row / (H * T), h = (row / T) % H, t = row % T, kvh = h / group;
      const float *qt = Q + ((b * T + t) * H + h) * D;
      float *pt = P + ((b * H + h) * T + t) * T;
      /* scores and max over j <= t */
      double mx = -INFINITY;
      for (int64_t j = 0; j <= t; j++) {
        const float *kj = K + ((b * T + j) * HKV + kvh) * D;
        double dot = 0.0;
        for (int64_t d = 0; d < D; d++) dot += (double)qt[d] * (double)kj[d];
        s[j] = (double)scale * dot;
        if (s[j] > mx) mx = s[j];
      }
      double sum = 0.0;
      for (int64_t j = 0; j <= t; j++) {
        s[j] = exp(s[j] - mx);
        sum += s[j];
      }
      for (int64_t j = 0; j <= t; j++) pt[j] = (float)(s[j] / sum);
      for (int64_t j = t + 1; j < T; j++) pt[j] = 0.0f;
      /* out_t = sum_j P_tj v_j */
      for (int64_t d = 0; d < D; d++) acc[d] = 0.0;
      for (int64_t j = 0; j <= t; j++) {
        const float *vj = V + ((b * T + j) * HKV + kvh) * D;
        const double p = pt[j];
        for (int64_t d = 0; d < D; d++) acc[d] += p * (double)vj[d];
      }
      float *ot = O + ((b * T + t) * H + h) * D;
      for (int64_t d = 0; d < D; d++) ot[d] = (float)acc[d];
    }
    free(s);
  }
  if (alloc_failed) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch memory", __func__);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_attention_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout, const void *q,
                                          const void *k, const void *v, const void *probs, void *dq, void *dk,
                                          void *dv, int32_t batch, int32_t seq, int32_t heads, int32_t kv_heads,
                                          int32_t head_dim, float scale) {
  LTE_TRY(attention_check(ctx, __func__, dtype, batch, seq, heads, kv_heads, head_dim, scale));
  CHECK_PTR(dout);
  CHECK_PTR(q);
  CHECK_PTR(k);
  CHECK_PTR(v);
  CHECK_PTR(probs);
  if (!dq && !dk && !dv) return LTE_STATUS_OK;
  const float *DO = dout, *Q = q, *K = k, *V = v, *P = probs;
  float *DQ = dq, *DK = dk, *DV = dv;
  const int64_t T = seq, H = heads, HKV = kv_heads, D = head_dim, group = H / HKV;
  const int64_t n_tasks = (int64_t)batch * HKV;
  const int nt = lte_nthreads(ctx);
  int alloc_failed = 0;
#pragma omp parallel num_threads(nt) if (n_tasks * group * T * T * D > LTE_PAR_MIN)
  {
    /* ds (T), dq accumulator (D), dk and dv accumulators (T, D) of one (b, kv head) */
    double *scratch = malloc((size_t)(T + D + 2 * T * D) * sizeof(double));
    if (!scratch) {
#pragma omp atomic write
      alloc_failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t task = 0; task < n_tasks; task++) {
      if (!scratch) continue;
      double *ds = scratch, *dq_acc = ds + T, *dk_acc = dq_acc + D, *dv_acc = dk_acc + T * D;
      const int64_t b = task / HKV, kvh = task % HKV;
      for (int64_t i = 0; i < 2 * T * D; i++) dk_acc[i] = 0.0;
      for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int64_t t = 0; t < T; t++) {
          const float *dot_ = DO + ((b * T + t) * H + h) * D;
          const float *qt = Q + ((b * T + t) * H + h) * D;
          const float *pt = P + ((b * H + h) * T + t) * T;
          /* dP_tj = dO_t . v_j, then dS = P (dP - sum_j dP_tj P_tj) */
          double rowsum = 0.0;
          for (int64_t j = 0; j <= t; j++) {
            const float *vj = V + ((b * T + j) * HKV + kvh) * D;
            double dot = 0.0;
            for (int64_t d = 0; d < D; d++) dot += (double)dot_[d] * (double)vj[d];
            ds[j] = dot;
            rowsum += dot * (double)pt[j];
          }
          for (int64_t j = 0; j <= t; j++) ds[j] = (double)pt[j] * (ds[j] - rowsum);
          for (int64_t d = 0; d < D; d++) dq_acc[d] = 0.0;
          for (int64_t j = 0; j <= t; j++) {
            const float *kj = K + ((b * T + j) * HKV + kvh) * D;
            const double sj = (double)scale * ds[j], pj = pt[j];
            for (int64_t d = 0; d < D; d++) {
              dq_acc[d] += sj * (double)kj[d];        /* dQ_t += scale dS_tj k_j */
              dk_acc[j * D + d] += sj * (double)qt[d]; /* dK_j += scale dS_tj q_t */
              dv_acc[j * D + d] += pj * (double)dot_[d]; /* dV_j += P_tj dO_t */
            }
          }
          if (DQ) {
            float *dqt = DQ + ((b * T + t) * H + h) * D;
            for (int64_t d = 0; d < D; d++) dqt[d] += (float)dq_acc[d];
          }
        }
      }
      for (int64_t j = 0; j < T; j++) {
        const int64_t off = ((b * T + j) * HKV + kvh) * D;
        for (int64_t d = 0; d < D; d++) {
          if (DK) DK[off + d] += (float)dk_acc[j * D + d];
          if (DV) DV[off + d] += (float)dv_acc[j * D + d];
        }
      }
    }
    free(scratch);
  }
  if (alloc_failed) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch memory", __func__);
  return LTE_STATUS_OK;
}
