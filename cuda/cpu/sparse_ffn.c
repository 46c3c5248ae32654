/*
 * sparse_ffn.c: CPU reference of the LTE sparse FFN inference ops (lte.h, KERNELS section).
 *
 *   lte_sffn_route      router logits (double accumulation), strict threshold, union list, bits
 *   lte_sffn_gate_up    h = act(gate, up) for the union's experts, masked per token, rounded to dtype
 *   lte_sffn_down       y = residual + b_down + h . w_down_t[union rows], rounded to dtype
 *   lte_sffn_dense_gemv / lte_sffn_dense_act   the dense baseline ops
 *
 * Rounding points are those of the CUDA kernels: products accumulate in (here) double, the sum is
 * rounded to f32, bias and activation are applied in f32, then h and y are rounded to the storage
 * dtype. The CUDA kernels accumulate in f32 in another order, so the two agree to a tolerance
 * (tests/gpu/sparse_ffn_test.ts), not bit for bit. The workspace is not used by this backend.
 */
#include "cpu_common.h"
#include "half.h"


static lte_status check_dtype(lte_ctx_t *ctx, const char *fn, lte_dtype dtype) {
  if (dtype == LTE_DTYPE_F32 || dtype == LTE_DTYPE_F16 || dtype == LTE_DTYPE_BF16) return LTE_STATUS_OK;
  if (dtype == LTE_DTYPE_I32) return lte_fail(ctx, LTE_STATUS_UNSUPPORTED, "%s: dtype i32 is not a float dtype", fn);
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: unknown dtype %d", fn, (int)dtype);
}

static lte_status check_batch(lte_ctx_t *ctx, const char *fn, int32_t batch) {
  if (batch >= 1 && batch <= LTE_SFFN_MAX_BATCH) return LTE_STATUS_OK;
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: batch = %d must be in [1, %d]", fn, (int)batch,
                  LTE_SFFN_MAX_BATCH);
}

static lte_status check_model(lte_ctx_t *ctx, const char *fn, int32_t d_model, int32_t n_experts,
                              int32_t expert_size) {
  if (d_model <= 0 || d_model % 64 != 0)
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: d_model = %d must be a positive multiple of 64", fn,
                    (int)d_model);
  if (n_experts <= 0)
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: n_experts = %d must be > 0", fn, (int)n_experts);
  if (expert_size <= 0 || expert_size % 16 != 0)
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: expert_size = %d must be a positive multiple of 16", fn,
                    (int)expert_size);
  return LTE_STATUS_OK;
}

static lte_status check_act(lte_ctx_t *ctx, const char *fn, int32_t act) {
  if (act == LTE_SFFN_ACT_SILU_MUL || act == LTE_SFFN_ACT_GELU) return LTE_STATUS_OK;
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: act = %d is not an LTE_SFFN_ACT_* value", fn, (int)act);
}

/* Dot product of two rows of `dtype`, accumulated in double, rounded to f32. */
static float dot_row(lte_dtype dtype, const void *a, int64_t ao, const void *b, int64_t bo, int64_t n) {
  double acc = 0.0;
  for (int64_t k = 0; k < n; k++) acc += (double)lte_load_elem(dtype, a, ao + k) * (double)lte_load_elem(dtype, b, bo + k);
  return (float)acc;
}

/* x (activation dtype adt) . w (weight dtype wdt), x rounded to wdt first as the CUDA tensor-core
   kernels do (a no-op when adt == wdt). */
static float dot_row2(lte_dtype adt, const void *a, int64_t ao, lte_dtype wdt, const void *b, int64_t bo, int64_t n) {
  double acc = 0.0;
  for (int64_t k = 0; k < n; k++) {
    float xv = lte_load_elem(adt, a, ao + k);
    if (wdt == LTE_DTYPE_F16) xv = lte_f16_to_f32(lte_f32_to_f16(xv));
    if (wdt == LTE_DTYPE_BF16) xv = lte_bf16_to_f32(lte_f32_to_bf16(xv));
    acc += (double)xv * (double)lte_load_elem(wdt, b, bo + k);
  }
  return (float)acc;
}

/* The activation dtype (x of gate_up, y and residual of down) is the weight dtype or F32. */
static lte_status check_act_dtype(lte_ctx_t *ctx, const char *fn, lte_dtype dtype, lte_dtype adt, const char *name) {
  if (adt == dtype || adt == LTE_DTYPE_F32) return LTE_STATUS_OK;
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: %s = %d must be the weight dtype (%d) or f32 (0)", fn, name,
                  (int)adt, (int)dtype);
}

static float silu_f(float g) { return g / (1.0f + expf(-g)); }

static float gelu_f(float x) {
  const float k0 = 0.7978845608028654f, k1 = 0.044715f;
  return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
}

static float act_f(int32_t act, float gate, float up) { return act == LTE_SFFN_ACT_GELU ? gelu_f(up) : silu_f(gate) * up; }

LTE_API lte_status lte_sffn_workspace_size(lte_ctx_t *ctx, int32_t batch, int32_t d_model, int32_t n_experts,
                                           int32_t expert_size, uint64_t *host_bytes) {
  CHECK_CTX();
  LTE_TRY(check_batch(ctx, __func__, batch));
  LTE_TRY(check_model(ctx, __func__, d_model, n_experts, expert_size));
  CHECK_PTR(host_bytes);
  /* The CPU backend needs no workspace; report a small one so callers allocate something real. */
  host_bytes[0] = 256;
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_route(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w_router,
                                  const void *b_router, float *logits, uint32_t *bits, int32_t *list, int32_t *counts,
                                  void *ws, int32_t batch, int32_t d_model, int32_t n_experts) {
  CHECK_CTX();
  LTE_TRY(check_dtype(ctx, __func__, dtype));
  LTE_TRY(check_batch(ctx, __func__, batch));
  LTE_TRY(check_model(ctx, __func__, d_model, n_experts, 16));
  CHECK_PTR(x);
  CHECK_PTR(logits);
  CHECK_PTR(bits);
  CHECK_PTR(list);
  CHECK_PTR(counts);
  CHECK_PTR(ws);
  const int64_t B = batch, C = d_model, N = n_experts;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (N * C * B > LTE_PAR_MIN)
  for (int64_t e = 0; e < N; e++) {
    uint32_t m = 0;
    for (int64_t b = 0; b < B; b++) {
      float l = 0.f;
      if (w_router) {
        l = dot_row(dtype, x, b * C, w_router, e * C, C);
        if (b_router) l += lte_load_elem(dtype, b_router, e);
        if (l > 0.f) m |= 1u << b;
      } else {
        m |= 1u << b;
      }
      logits[b * N + e] = l;
    }
    bits[e] = m;
  }
  int32_t p = 0;
  for (int64_t b = 0; b <= B; b++) counts[b] = 0;
  for (int64_t e = 0; e < N; e++) {
    if (bits[e]) list[p++] = (int32_t)e;
    for (int64_t b = 0; b < B; b++) counts[b] += (int32_t)((bits[e] >> b) & 1u);
  }
  counts[B] = p;
  for (int64_t e = p; e < N; e++) list[e] = -1;
  return LTE_STATUS_OK;
}

/* Validates list[0..P) and counts[B] = P (host memory here). */
static lte_status check_union(lte_ctx_t *ctx, const char *fn, const int32_t *list, const int32_t *counts,
                              int32_t batch, int32_t n_experts) {
  const int32_t P = counts[batch];
  if (P < 0 || P > n_experts)
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: counts[batch] = %d is outside [0, %d]", fn, (int)P,
                    (int)n_experts);
  for (int32_t p = 0; p < P; p++)
    if (list[p] < 0 || list[p] >= n_experts)
      return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: list[%d] = %d is outside [0, %d)", fn, (int)p,
                      (int)list[p], (int)n_experts);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_gate_up(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype x_dtype, int32_t act, const void *x,
                                    const void *w_gate, const void *w_in, const void *b_in, const uint32_t *bits,
                                    const int32_t *list, const int32_t *counts, void *h, void *ws, int32_t batch,
                                    int32_t d_model, int32_t n_experts, int32_t expert_size) {
  CHECK_CTX();
  LTE_TRY(check_dtype(ctx, __func__, dtype));
  LTE_TRY(check_act_dtype(ctx, __func__, dtype, x_dtype, "x_dtype"));
  LTE_TRY(check_act(ctx, __func__, act));
  LTE_TRY(check_batch(ctx, __func__, batch));
  LTE_TRY(check_model(ctx, __func__, d_model, n_experts, expert_size));
  CHECK_PTR(x);
  if (act == LTE_SFFN_ACT_SILU_MUL) CHECK_PTR(w_gate);
  CHECK_PTR(w_in);
  CHECK_PTR(bits);
  CHECK_PTR(list);
  CHECK_PTR(counts);
  CHECK_PTR(h);
  CHECK_PTR(ws);
  LTE_TRY(check_union(ctx, __func__, list, counts, batch, n_experts));
  const int64_t B = batch, C = d_model, S = expert_size, F = (int64_t)n_experts * S, P = counts[batch];
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (P * S * C * B > LTE_PAR_MIN)
  for (int64_t k = 0; k < P * S; k++) {
    const int64_t e = list[k / S], n = e * S + k % S;
    for (int64_t b = 0; b < B; b++) {
      float v = 0.f;
      if ((bits[e] >> b) & 1u) {
        const float gate = act == LTE_SFFN_ACT_SILU_MUL ? dot_row2(x_dtype, x, b * C, dtype, w_gate, n * C, C) : 0.f;
        float up = dot_row2(x_dtype, x, b * C, dtype, w_in, n * C, C);
        if (b_in) up += lte_load_elem(dtype, b_in, n);
        v = act_f(act, gate, up);
      }
      lte_store_elem(dtype, h, b * F + k, v);
    }
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_down(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype y_dtype, const void *h,
                                 const void *w_down_t, const void *b_down, const int32_t *list, const int32_t *counts,
                                 const void *residual, void *y, void *ws, int32_t batch, int32_t d_model,
                                 int32_t n_experts, int32_t expert_size, int32_t variant) {
  CHECK_CTX();
  LTE_TRY(check_dtype(ctx, __func__, dtype));
  LTE_TRY(check_act_dtype(ctx, __func__, dtype, y_dtype, "y_dtype"));
  LTE_TRY(check_batch(ctx, __func__, batch));
  LTE_TRY(check_model(ctx, __func__, d_model, n_experts, expert_size));
  if (variant < LTE_SFFN_DOWN_AUTO || variant > LTE_SFFN_DOWN_SPLITK)
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: variant = %d is not an LTE_SFFN_DOWN_* value", __func__,
                (int)variant);
  CHECK_PTR(h);
  CHECK_PTR(w_down_t);
  CHECK_PTR(list);
  CHECK_PTR(counts);
  CHECK_PTR(y);
  CHECK_PTR(ws);
  LTE_TRY(check_union(ctx, __func__, list, counts, batch, n_experts));
  const int64_t B = batch, C = d_model, S = expert_size, F = (int64_t)n_experts * S, P = counts[batch];
  double *acc = malloc((size_t)(B * C) * sizeof(double));
  if (!acc) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: no host memory for %lld doubles", __func__, (long long)(B * C));
  const int nt = lte_nthreads(ctx);
  /* Parallel over (token, 64-column tile): each output element belongs to one thread, and its
     terms are added in the fixed order k = 0, 1, ... */
  const int64_t tiles = C / 64;
#pragma omp parallel for num_threads(nt) schedule(static) if (P * S * C * B > LTE_PAR_MIN)
  for (int64_t t = 0; t < B * tiles; t++) {
    const int64_t b = t / tiles, c0 = (t % tiles) * 64;
    double *a = acc + b * C + c0;
    for (int64_t c = 0; c < 64; c++) a[c] = 0.0;
    for (int64_t k = 0; k < P * S; k++) {
      const double hv = lte_load_elem(dtype, h, b * F + k);
      if (hv == 0.0) continue;
      const int64_t row = (int64_t)list[k / S] * S + k % S;
      for (int64_t c = 0; c < 64; c++) a[c] += hv * (double)lte_load_elem(dtype, w_down_t, row * C + c0 + c);
    }
    for (int64_t c = 0; c < 64; c++) {
      float v = (float)a[c];
      if (b_down) v += lte_load_elem(dtype, b_down, c0 + c);
      if (residual) v += lte_load_elem(y_dtype, residual, b * C + c0 + c);
      lte_store_elem(y_dtype, y, b * C + c0 + c, v);
    }
  }
  free(acc);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_dense_gemv(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w, void *y,
                                       int32_t batch, int32_t rows, int32_t cols) {
  CHECK_CTX();
  LTE_TRY(check_dtype(ctx, __func__, dtype));
  CHECK_POS(batch);
  CHECK_POS(rows);
  CHECK_POS(cols);
  CHECK_PTR(x);
  CHECK_PTR(w);
  CHECK_PTR(y);
  const int64_t B = batch, R = rows, K = cols;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (B * R * K > LTE_PAR_MIN)
  for (int64_t i = 0; i < B * R; i++) {
    const int64_t b = i / R, r = i % R;
    lte_store_elem(dtype, y, i, dot_row(dtype, x, b * K, w, r * K, K));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_dense_act(lte_ctx_t *ctx, lte_dtype dtype, int32_t act, const void *gate, const void *up,
                                      void *h, int64_t n) {
  CHECK_CTX();
  LTE_TRY(check_dtype(ctx, __func__, dtype));
  LTE_TRY(check_act(ctx, __func__, act));
  CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  if (act == LTE_SFFN_ACT_SILU_MUL) CHECK_PTR(gate);
  CHECK_PTR(up);
  CHECK_PTR(h);
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const float g = act == LTE_SFFN_ACT_SILU_MUL ? lte_load_elem(dtype, gate, i) : 0.f;
    lte_store_elem(dtype, h, i, act_f(act, g, lte_load_elem(dtype, up, i)));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sffn_set_tuning(lte_ctx_t *ctx, int32_t key, int32_t value) {
  CHECK_CTX();
  switch (key) {
    case LTE_SFFN_TUNE_PDL:
      if (value == 0 || value == 1) return LTE_STATUS_OK;
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: LTE_SFFN_TUNE_PDL value = %d must be 0 or 1", __func__, (int)value);
    case LTE_SFFN_TUNE_GATE_UP_UNROLL:
      if (value == 4 || value == 8) return LTE_STATUS_OK;
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: LTE_SFFN_TUNE_GATE_UP_UNROLL value = %d must be 4 or 8", __func__,
                  (int)value);
    case LTE_SFFN_TUNE_LOCAL_LIST:
      if (value == 0 || value == 1) return LTE_STATUS_OK;
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: LTE_SFFN_TUNE_LOCAL_LIST value = %d must be 0 or 1", __func__,
                  (int)value);
    case LTE_SFFN_TUNE_DOWN_BLOCKS_PER_SM:
      if (value >= 1 && value <= 8) return LTE_STATUS_OK;
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: LTE_SFFN_TUNE_DOWN_BLOCKS_PER_SM value = %d must be in [1, 8]",
                  __func__, (int)value);
    default:
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: unknown tuning key %d", __func__, (int)key);
  }
}
