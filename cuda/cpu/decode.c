/*
 * decode.c: CPU reference of the decode-engine kernels (lte.h section "decode engine").
 *
 * Readable loops, one output element per thread (bit-identical for any thread count). Half
 * weights (F16/BF16) are widened to f32 element by element; every sum is an f32 sum in index
 * order, as the CUDA kernels do per lane (their order differs, hence the written tolerances of
 * tests/gpu/engine_test.ts). Graph capture is a CUDA feature: lte_graph_begin returns
 * LTE_STATUS_UNSUPPORTED here and the engine runs its steps eagerly.
 */
#include "cpu_common.h"
#include "half.h" /* lte_load_elem / lte_store_elem: half weights and caches, shared with sparse_ffn.c */

static lte_status dec_check_dtype(lte_ctx_t *ctx, const char *fn, lte_dtype dt, const char *what) {
  if (dt == LTE_DTYPE_F32 || dt == LTE_DTYPE_F16 || dt == LTE_DTYPE_BF16) return LTE_STATUS_OK;
  if (dt == LTE_DTYPE_I32) {
    return lte_fail(ctx, LTE_STATUS_UNSUPPORTED, "%s: %s i32 is not supported (f32, f16, bf16)", fn, what);
  }
  if (dt == LTE_DTYPE_I8) {
    return lte_fail(ctx, LTE_STATUS_UNSUPPORTED, "%s: %s i8 is a KV-cache dtype only (f32, f16, bf16)", fn, what);
  }
  return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: unknown %s %d", fn, what, (int)dt);
}
#define CHECK_DT(dt) LTE_TRY(dec_check_dtype(ctx, __func__, (dt), #dt))

/* ---------------------------------------------------------------- KV-cache rows */

/* A KV cache's dtype: the weight dtypes, or LTE_DTYPE_I8 (int8 values + per-position f32 scales). */
static lte_status dec_check_kvdtype(lte_ctx_t *ctx, const char *fn, lte_dtype dt) {
  return dt == LTE_DTYPE_I8 ? LTE_STATUS_OK : dec_check_dtype(ctx, fn, dt, "kvdtype");
}

/* x / scale rounded half to even and clamped to [-127, 127] (NaN -> 0), as lte.h specifies. */
static inline int8_t dec_i8_quant(float x, float scale) {
  const float r = rintf(x / scale);
  if (r != r) return 0;
  return (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
}

/* An LTE_DTYPE_I8 cache's per-row f32 scales, after its n_values int8 values (lte.h). */
static inline float *dec_i8_scales(const void *cache, int64_t n_values) {
  return (float *)((char *)cache + LTE_KV_I8_SCALES(n_values));
}

/* Stores x (D floats) as cached row `row` = (slot * HKV + g) * T + t of a cache of n_values
   elements (the scales' place for LTE_DTYPE_I8). */
static void dec_kv_store_row(lte_dtype kvdtype, void *cache, int64_t n_values, int64_t row, int32_t D,
                             const float *x) {
  if (kvdtype != LTE_DTYPE_I8) {
    for (int32_t d = 0; d < D; d++) lte_store_elem(kvdtype, cache, row * D + d, x[d]);
    return;
  }
  float amax = 0.0f;
  for (int32_t d = 0; d < D; d++) amax = fmaxf(amax, fabsf(x[d]));
  const float scale = amax / 127.0f;
  int8_t *q = (int8_t *)cache + row * D;
  dec_i8_scales(cache, n_values)[row] = scale;
  for (int32_t d = 0; d < D; d++) q[d] = scale > 0.0f ? dec_i8_quant(x[d], scale) : 0;
}

/* Cached row `row` as D floats (int8 values times their row's scale for LTE_DTYPE_I8). */
static void dec_kv_load_row(lte_dtype kvdtype, const void *cache, int64_t n_values, int64_t row, int32_t D,
                            float *out) {
  if (kvdtype != LTE_DTYPE_I8) {
    for (int32_t d = 0; d < D; d++) out[d] = lte_load_elem(kvdtype, cache, row * D + d);
    return;
  }
  const int8_t *q = (const int8_t *)cache + row * D;
  const float scale = dec_i8_scales(cache, n_values)[row];
  for (int32_t d = 0; d < D; d++) out[d] = (float)q[d] * scale;
}

static inline float dec_silu(float x) { return x / (1.0f + expf(-x)); }
static inline float dec_gelu(float x) {
  const float c = 0.7978845608028654f; /* sqrt(2/pi) */
  return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

/* x' of one row (x_mode: plain, RMSNorm(nw), LayerNorm(nw, nb)), shared by lte_dec_linear and
   lte_dec_sparse_ffn so that their sums agree bit for bit. */
static void dec_xprime_row(const float *xr, int64_t K, int32_t x_mode, const float *NW, const float *NB, float eps,
                           float *o) {
  float mean = 0.0f, rstd = 1.0f;
  if (x_mode != LTE_DEC_X_PLAIN) {
    float s = 0.0f, ss = 0.0f;
    for (int64_t i = 0; i < K; i++) {
      s += xr[i];
      ss += xr[i] * xr[i];
    }
    if (x_mode == LTE_DEC_X_RMSNORM) {
      rstd = 1.0f / sqrtf(ss / (float)K + eps);
    } else {
      mean = s / (float)K;
      float var = ss / (float)K - mean * mean;
      if (var < 0.0f) var = 0.0f;
      rstd = 1.0f / sqrtf(var + eps);
    }
  }
  for (int64_t i = 0; i < K; i++) {
    float v = xr[i];
    if (x_mode == LTE_DEC_X_RMSNORM) v = v * rstd * NW[i];
    else if (x_mode == LTE_DEC_X_LAYERNORM) v = (v - mean) * rstd * NW[i] + NB[i];
    o[i] = v;
  }
}

/* ---------------------------------------------------------------- linear */

LTE_API lte_status lte_dec_linear(lte_ctx_t *ctx, lte_dtype wdtype, const void *w, const void *x, int32_t ldx,
                                  int32_t x_mode, const void *norm_w, const void *norm_b, float eps,
                                  const void *in_mask, const void *out_mask, int32_t out_period,
                                  int32_t expert_size, const void *bias, void *y, int32_t rows, int32_t n,
                                  int32_t k, int32_t accumulate, int32_t act) {
  CHECK_CTX();
  CHECK_DT(wdtype);
  CHECK_NONNEG(rows);
  CHECK_POS(n);
  CHECK_POS(k);
  if (x_mode < LTE_DEC_X_PLAIN || x_mode > LTE_DEC_X_LAYERNORM) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: x_mode = %d is not a LTE_DEC_X_* value", __func__, (int)x_mode);
  }
  if (act < LTE_DEC_ACT_NONE || act > LTE_DEC_ACT_GELU) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: act = %d is not a LTE_DEC_ACT_* value", __func__, (int)act);
  }
  if (act != LTE_DEC_ACT_NONE && accumulate) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: accumulate needs act = LTE_DEC_ACT_NONE", __func__);
  }
  if (ldx < k) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: ldx = %d < k = %d", __func__, (int)ldx, (int)k);
  if ((in_mask || out_mask) && (expert_size <= 0)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: expert_size = %d must be > 0 with a mask", __func__,
                (int)expert_size);
  }
  if (in_mask && k % expert_size != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: k = %d is not a multiple of expert_size %d", __func__, (int)k,
                (int)expert_size);
  }
  if (out_mask && (out_period <= 0 || out_period % expert_size != 0 || n % out_period != 0)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT,
                "%s: out_period = %d must be > 0, a multiple of expert_size %d and divide n = %d", __func__,
                (int)out_period, (int)expert_size, (int)n);
  }
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(w);
  CHECK_PTR(x);
  CHECK_PTR(y);
  if (x_mode != LTE_DEC_X_PLAIN) CHECK_PTR(norm_w);
  if (x_mode == LTE_DEC_X_LAYERNORM) CHECK_PTR(norm_b);
  const float *X = x, *NW = norm_w, *NB = norm_b, *IM = in_mask, *OM = out_mask, *BI = bias;
  float *Y = y;
  const int64_t K = k, N = n;
  float *xp = malloc((size_t)rows * (size_t)K * sizeof(float));
  if (!xp) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %lld floats", __func__, (long long)rows * K);
  for (int32_t r = 0; r < rows; r++) {
    float *o = xp + (int64_t)r * K;
    dec_xprime_row(X + (int64_t)r * ldx, K, x_mode, NW, NB, eps, o);
    if (IM) {
      for (int64_t i = 0; i < K; i++) o[i] *= IM[(int64_t)r * (K / expert_size) + i / expert_size];
    }
  }
  const int nt = lte_nthreads(ctx);
  const int64_t per = out_mask ? out_period / expert_size : 0;
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)rows * N * K > LTE_PAR_MIN)
  for (int64_t j = 0; j < N; j++) {
    for (int32_t r = 0; r < rows; r++) {
      float *yo = Y + (int64_t)r * N + j;
      if (OM && OM[(int64_t)r * per + (j % out_period) / expert_size] == 0.0f) {
        if (!accumulate) *yo = 0.0f;
        continue;
      }
      const float *xr = xp + (int64_t)r * K;
      float acc = 0.0f;
      for (int64_t i = 0; i < K; i++) acc += lte_load_elem(wdtype, w, j * K + i) * xr[i];
      if (act == LTE_DEC_ACT_SWIGLU) {
        float up = 0.0f;
        for (int64_t i = 0; i < K; i++) up += lte_load_elem(wdtype, w, (N + j) * K + i) * xr[i];
        *yo = dec_silu(acc) * up;
        continue;
      }
      if (BI) acc += BI[j];
      if (act == LTE_DEC_ACT_GELU) acc = dec_gelu(acc);
      *yo = accumulate ? *yo + acc : acc;
    }
  }
  free(xp);
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- sparse transposed projection */

LTE_API lte_status lte_dec_linear_t_sparse(lte_ctx_t *ctx, lte_dtype wdtype, const void *wt, const void *h,
                                           const void *mask, const void *bias, void *y, int32_t rows, int32_t n,
                                           int32_t k, int32_t expert_size) {
  CHECK_CTX();
  CHECK_DT(wdtype);
  CHECK_NONNEG(rows);
  CHECK_POS(n);
  CHECK_POS(k);
  CHECK_POS(expert_size);
  if (k % expert_size != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: k = %d is not a multiple of expert_size %d", __func__, (int)k,
                (int)expert_size);
  }
  if (n % 8 != 0) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: n = %d must be a multiple of 8", __func__, (int)n);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(wt);
  CHECK_PTR(h);
  CHECK_PTR(mask);
  CHECK_PTR(y);
  const float *H = h, *M = mask, *BI = bias;
  float *Y = y;
  const int32_t E = k / expert_size;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)rows * n * k > LTE_PAR_MIN)
  for (int64_t c = 0; c < n; c++) {
    for (int32_t r = 0; r < rows; r++) {
      float acc = BI ? BI[c] : 0.0f;
      for (int32_t e = 0; e < E; e++) {
        int on = 0;
        for (int32_t q = 0; q < rows; q++) on |= M[(int64_t)q * E + e] != 0.0f;
        if (!on) continue;
        for (int32_t j = 0; j < expert_size; j++) {
          const int64_t kk = (int64_t)e * expert_size + j;
          acc += H[(int64_t)r * k + kk] * lte_load_elem(wdtype, wt, kk * n + c);
        }
      }
      Y[(int64_t)r * n + c] += acc;
    }
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- norm */

LTE_API lte_status lte_dec_norm(lte_ctx_t *ctx, const void *x, const void *w, const void *b, void *y, int32_t rows,
                                int32_t cols, float eps, int32_t kind) {
  CHECK_CTX();
  CHECK_NONNEG(rows);
  CHECK_POS(cols);
  if (kind != 0 && kind != 1) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: kind = %d (0 rms, 1 layer)", __func__, kind);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(w);
  CHECK_PTR(y);
  if (kind == 1) CHECK_PTR(b);
  const float *X = x, *W = w, *Bb = b;
  float *Y = y;
  for (int32_t r = 0; r < rows; r++) {
    const float *xr = X + (int64_t)r * cols;
    float *yr = Y + (int64_t)r * cols;
    if (kind == 0) {
      float ss = 0.0f;
      for (int32_t i = 0; i < cols; i++) ss += xr[i] * xr[i];
      const float rstd = 1.0f / sqrtf(ss / (float)cols + eps);
      for (int32_t i = 0; i < cols; i++) yr[i] = xr[i] * rstd * W[i];
    } else {
      float s = 0.0f, ss = 0.0f;
      for (int32_t i = 0; i < cols; i++) {
        s += xr[i];
        ss += xr[i] * xr[i];
      }
      const float mean = s / (float)cols;
      float var = ss / (float)cols - mean * mean;
      if (var < 0.0f) var = 0.0f;
      const float rstd = 1.0f / sqrtf(var + eps);
      for (int32_t i = 0; i < cols; i++) yr[i] = (xr[i] - mean) * rstd * W[i] + Bb[i];
    }
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- embedding */

LTE_API lte_status lte_dec_embed(lte_ctx_t *ctx, lte_dtype wdtype, const int32_t *ids, const int32_t *pos,
                                 const void *tok, const void *pos_table, void *out, int32_t rows, int32_t vocab,
                                 int32_t n_pos, int32_t dim) {
  CHECK_CTX();
  CHECK_DT(wdtype);
  CHECK_NONNEG(rows);
  CHECK_POS(vocab);
  CHECK_POS(dim);
  if (pos_table) CHECK_POS(n_pos); /* checked here, not per row, so the CUDA backend (which cannot read device positions) answers alike */
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(ids);
  CHECK_PTR(tok);
  CHECK_PTR(out);
  if (pos_table) CHECK_PTR(pos);
  float *O = out;
  for (int32_t r = 0; r < rows; r++) {
    if (ids[r] < 0 || ids[r] >= vocab) {
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: ids[%d] = %d is outside [0, %d)", __func__, r, ids[r], vocab);
    }
    if (pos_table && (pos[r] < 0 || pos[r] >= n_pos)) {
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: pos[%d] = %d is outside [0, %d)", __func__, r, pos[r], n_pos);
    }
    for (int32_t i = 0; i < dim; i++) {
      float v = lte_load_elem(wdtype, tok, (int64_t)ids[r] * dim + i);
      if (pos_table) v += lte_load_elem(wdtype, pos_table, (int64_t)pos[r] * dim + i);
      O[(int64_t)r * dim + i] = v;
    }
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- rope + kv append */

static lte_status dec_check_rows(lte_ctx_t *ctx, const char *fn, const int32_t *slots, const int32_t *pos,
                                 int32_t rows, int32_t n_slots, int32_t max_t) {
  for (int32_t r = 0; r < rows; r++) {
    if (slots[r] < 0 || slots[r] >= n_slots) {
      return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: slots[%d] = %d is outside [0, %d)", fn, r, slots[r],
                      n_slots);
    }
    if (pos[r] < 0 || pos[r] >= max_t) {
      return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: pos[%d] = %d is outside [0, %d)", fn, r, pos[r], max_t);
    }
  }
  return LTE_STATUS_OK;
}

/* Argument checks of lte_dec_rope_append and lte_dec_rope_attention, in the CUDA backend's order
   and with its messages; fn is the caller's name, out is checked when with_out (the attention's
   output). *done = 1 when rows == 0 (nothing to do, pointers unchecked). */
static lte_status dec_check_rope(lte_ctx_t *ctx, const char *fn, lte_dtype kvdtype, const void *qkv, int32_t ld,
                                 const void *k_cache, const void *v_cache, const int32_t *slots, const int32_t *pos,
                                 const void *out, int with_out, int32_t rows, int32_t heads, int32_t kv_heads,
                                 int32_t head_dim, int32_t n_slots, int32_t max_t, float theta, int *done) {
  *done = 0;
  LTE_TRY(lte_check_ctx(ctx, fn));
  LTE_TRY(dec_check_kvdtype(ctx, fn, kvdtype));
  LTE_TRY(lte_check_nonneg(ctx, fn, rows, "rows"));
  LTE_TRY(lte_check_pos(ctx, fn, heads, "heads"));
  LTE_TRY(lte_check_pos(ctx, fn, kv_heads, "kv_heads"));
  LTE_TRY(lte_check_pos(ctx, fn, head_dim, "head_dim"));
  LTE_TRY(lte_check_pos(ctx, fn, n_slots, "n_slots"));
  LTE_TRY(lte_check_pos(ctx, fn, max_t, "max_t"));
  if (heads % kv_heads != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: heads %d not divisible by kv_heads %d", fn, heads, kv_heads);
  }
  if (theta > 0.0f && head_dim % 2 != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: head_dim %d must be even for RoPE", fn, head_dim);
  }
  if ((int64_t)ld < (int64_t)(heads + 2 * kv_heads) * head_dim) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: ld = %d < (H + 2 HKV) D", fn, ld);
  }
  if (rows == 0) {
    *done = 1;
    return LTE_STATUS_OK;
  }
  LTE_TRY(lte_check_ptr(ctx, fn, qkv, "qkv"));
  LTE_TRY(lte_check_ptr(ctx, fn, k_cache, "k_cache"));
  LTE_TRY(lte_check_ptr(ctx, fn, v_cache, "v_cache"));
  LTE_TRY(lte_check_ptr(ctx, fn, slots, "slots"));
  LTE_TRY(lte_check_ptr(ctx, fn, pos, "pos"));
  if (with_out) LTE_TRY(lte_check_ptr(ctx, fn, out, "out"));
  return dec_check_rows(ctx, fn, slots, pos, rows, n_slots, max_t);
}

LTE_API lte_status lte_dec_rope_append(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld, void *k_cache,
                                       void *v_cache, const int32_t *slots, const int32_t *pos, int32_t rows,
                                       int32_t heads, int32_t kv_heads, int32_t head_dim, int32_t n_slots,
                                       int32_t max_t, float theta) {
  int done;
  LTE_TRY(dec_check_rope(ctx, __func__, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, NULL, 0, rows, heads,
                         kv_heads, head_dim, n_slots, max_t, theta, &done));
  if (done) return LTE_STATUS_OK;
  float *Q = qkv;
  const int32_t D = head_dim, half = D / 2;
  const int64_t n_values = (int64_t)n_slots * kv_heads * max_t * D;
  for (int32_t r = 0; r < rows; r++) {
    float *row = Q + (int64_t)r * ld;
    if (theta > 0.0f) {
      for (int32_t h = 0; h < heads + kv_heads; h++) {
        float *v = row + (int64_t)h * D;
        for (int32_t i = 0; i < half; i++) {
          const double ang = (double)pos[r] * pow((double)theta, -2.0 * (double)i / (double)D);
          const float c = (float)cos(ang), s = (float)sin(ang);
          const float a = v[i], b = v[i + half];
          v[i] = a * c - b * s;
          v[i + half] = b * c + a * s;
        }
      }
    }
    for (int32_t g = 0; g < kv_heads; g++) {
      const int64_t crow = ((int64_t)slots[r] * kv_heads + g) * max_t + pos[r];
      dec_kv_store_row(kvdtype, k_cache, n_values, crow, D, row + (int64_t)(heads + g) * D);
      dec_kv_store_row(kvdtype, v_cache, n_values, crow, D, row + (int64_t)(heads + kv_heads + g) * D);
    }
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- attention over the cache */

LTE_API lte_status lte_dec_attention(lte_ctx_t *ctx, lte_dtype kvdtype, const void *qkv, int32_t ld,
                                     const void *k_cache, const void *v_cache, const int32_t *slots,
                                     const int32_t *pos, void *out, int32_t rows, int32_t heads, int32_t kv_heads,
                                     int32_t head_dim, int32_t n_slots, int32_t max_t, float scale) {
  CHECK_CTX();
  LTE_TRY(dec_check_kvdtype(ctx, __func__, kvdtype));
  CHECK_NONNEG(rows);
  CHECK_POS(heads);
  CHECK_POS(kv_heads);
  CHECK_POS(head_dim);
  CHECK_POS(n_slots);
  CHECK_POS(max_t);
  if (heads % kv_heads != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: heads %d not divisible by kv_heads %d", __func__, heads, kv_heads);
  }
  if ((int64_t)ld < (int64_t)heads * head_dim) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: ld = %d < H * D", __func__, ld);
  }
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(qkv);
  CHECK_PTR(k_cache);
  CHECK_PTR(v_cache);
  CHECK_PTR(slots);
  CHECK_PTR(pos);
  CHECK_PTR(out);
  LTE_TRY(dec_check_rows(ctx, __func__, slots, pos, rows, n_slots, max_t));
  const float *Q = qkv;
  float *O = out;
  const int32_t D = head_dim, group = heads / kv_heads;
  const int64_t n_values = (int64_t)n_slots * kv_heads * max_t * D;
  /* s: the scores (max_t); kv: one cached row widened to f32 (D) */
  float *s = malloc(((size_t)max_t + (size_t)D) * sizeof(float));
  if (!s) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch", __func__);
  float *kv = s + max_t;
  for (int32_t r = 0; r < rows; r++) {
    const int32_t len = pos[r] + 1;
    for (int32_t h = 0; h < heads; h++) {
      const float *q = Q + (int64_t)r * ld + (int64_t)h * D;
      const int64_t row0 = ((int64_t)slots[r] * kv_heads + h / group) * max_t; /* the head's position 0 */
      float mx = -INFINITY;
      for (int32_t t = 0; t < len; t++) {
        dec_kv_load_row(kvdtype, k_cache, n_values, row0 + t, D, kv);
        float dot = 0.0f;
        for (int32_t d = 0; d < D; d++) dot += q[d] * kv[d];
        s[t] = dot * scale;
        if (s[t] > mx) mx = s[t];
      }
      float sum = 0.0f;
      for (int32_t t = 0; t < len; t++) {
        s[t] = expf(s[t] - mx);
        sum += s[t];
      }
      /* o[d] sums s[t] v_t[d] over t in order (as one accumulator per d would) */
      float *o = O + (int64_t)r * heads * D + (int64_t)h * D;
      for (int32_t d = 0; d < D; d++) o[d] = 0.0f;
      for (int32_t t = 0; t < len; t++) {
        dec_kv_load_row(kvdtype, v_cache, n_values, row0 + t, D, kv);
        for (int32_t d = 0; d < D; d++) o[d] += s[t] * kv[d];
      }
      for (int32_t d = 0; d < D; d++) o[d] = o[d] / sum;
    }
  }
  free(s);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_dec_rope_attention(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld, void *k_cache,
                                          void *v_cache, const int32_t *slots, const int32_t *pos, void *out,
                                          int32_t rows, int32_t heads, int32_t kv_heads, int32_t head_dim,
                                          int32_t n_slots, int32_t max_t, float theta, float scale) {
  int done;
  LTE_TRY(dec_check_rope(ctx, __func__, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, out, 1, rows, heads,
                         kv_heads, head_dim, n_slots, max_t, theta, &done));
  if (done) return LTE_STATUS_OK;
  LTE_TRY(lte_dec_rope_append(ctx, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, rows, heads, kv_heads, head_dim,
                              n_slots, max_t, theta));
  return lte_dec_attention(ctx, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, out, rows, heads, kv_heads, head_dim,
                           n_slots, max_t, scale);
}

/* ---------------------------------------------------------------- router mask */

LTE_API lte_status lte_dec_router_mask(lte_ctx_t *ctx, const void *logits, void *mask, int32_t *counts,
                                       int32_t count_ld, int32_t rows, int32_t n_experts, float threshold) {
  CHECK_CTX();
  CHECK_NONNEG(rows);
  CHECK_POS(n_experts);
  if (counts) CHECK_POS(count_ld);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(logits);
  CHECK_PTR(mask);
  const float *L = logits;
  float *M = mask;
  for (int32_t r = 0; r < rows; r++) {
    int32_t c = 0;
    for (int32_t e = 0; e < n_experts; e++) {
      const int on = L[(int64_t)r * n_experts + e] > threshold;
      M[(int64_t)r * n_experts + e] = on ? 1.0f : 0.0f;
      c += on;
    }
    if (counts) counts[(int64_t)r * count_ld] = c;
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- sparse FFN block */

/* The same sums in the same order as lte_dec_linear (norm, router, gate/up), lte_dec_router_mask
   and lte_dec_linear_t_sparse (down: bias first, then the union's neurons ascending), so this op
   equals that chain of ops bit for bit on this backend (tests/dec_sparse_ffn_test.ts; the engine
   level in tests/engine_test.ts). */
LTE_API lte_status lte_dec_sparse_ffn(lte_ctx_t *ctx, lte_dtype wdtype, void *x, int32_t x_mode, const void *norm_w,
                                      const void *norm_b, float eps, const void *w_router, const void *b_router,
                                      float threshold, const void *w_fc, const void *b_fc, const void *w_down_t,
                                      const void *b_down, void *xn, void *mask, int32_t *counts, int32_t rows,
                                      int32_t d_model, int32_t d_ff, int32_t expert_size, int32_t act) {
  CHECK_CTX();
  CHECK_DT(wdtype);
  CHECK_NONNEG(rows);
  CHECK_POS(d_model);
  CHECK_POS(d_ff);
  CHECK_POS(expert_size);
  if (x_mode < LTE_DEC_X_PLAIN || x_mode > LTE_DEC_X_LAYERNORM) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: x_mode = %d is not a LTE_DEC_X_* value", __func__, (int)x_mode);
  }
  /* LTE_DEC_SFFN_ROUTER_ROWS: w_fc's router rows, a copy of w_router; the reference reads w_router */
  act &= ~LTE_DEC_SFFN_ROUTER_ROWS;
  if (act != LTE_DEC_ACT_SWIGLU && act != LTE_DEC_ACT_GELU) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT,
                "%s: act = %d must be LTE_DEC_ACT_SWIGLU or LTE_DEC_ACT_GELU (optionally | LTE_DEC_SFFN_ROUTER_ROWS)",
                __func__, (int)act);
  }
  if (d_ff % expert_size != 0) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: d_ff = %d is not a multiple of expert_size %d", __func__, (int)d_ff,
                (int)expert_size);
  }
  if (d_model % 8 != 0 || d_model > 8192) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: d_model = %d must be a multiple of 8 and <= 8192", __func__,
                (int)d_model);
  }
  if (d_ff / expert_size > 4096) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: %d experts per layer exceed 4096", __func__,
                (int)(d_ff / expert_size));
  }
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(w_router);
  CHECK_PTR(w_fc);
  CHECK_PTR(w_down_t);
  CHECK_PTR(xn);
  CHECK_PTR(mask);
  if (x_mode != LTE_DEC_X_PLAIN) CHECK_PTR(norm_w);
  if (x_mode == LTE_DEC_X_LAYERNORM) CHECK_PTR(norm_b);
  const int64_t C = d_model, F = d_ff, S = expert_size, E = F / S;
  const float *WR = w_router, *BR = b_router, *BF = b_fc, *BD = b_down;
  float *X = x, *XN = xn, *M = mask;
  const int swi = act == LTE_DEC_ACT_SWIGLU;
  /* x' (as lte_dec_linear forms it), then the router (f32 weights) and the mask */
  for (int32_t r = 0; r < rows; r++) {
    dec_xprime_row(X + (int64_t)r * C, C, x_mode, norm_w, norm_b, eps, XN + (int64_t)r * C);
  }
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)rows * E * C > LTE_PAR_MIN)
  for (int64_t e = 0; e < E; e++) {
    for (int32_t r = 0; r < rows; r++) {
      float acc = 0.0f;
      for (int64_t i = 0; i < C; i++) acc += WR[e * C + i] * XN[(int64_t)r * C + i];
      if (BR) acc += BR[e];
      M[(int64_t)r * E + e] = acc > threshold ? 1.0f : 0.0f;
    }
  }
  if (counts) {
    for (int32_t r = 0; r < rows; r++) {
      int32_t c = 0;
      for (int64_t e = 0; e < E; e++) c += M[(int64_t)r * E + e] != 0.0f;
      counts[r] = c;
    }
  }
  /* h over the union's neurons (zeros elsewhere), then the down projection */
  float *H = calloc((size_t)rows * (size_t)F, sizeof(float));
  if (!H) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %lld floats", __func__, (long long)rows * F);
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)rows * F * C > LTE_PAR_MIN)
  for (int64_t j = 0; j < F; j++) {
    const int64_t e = j / S;
    for (int32_t r = 0; r < rows; r++) {
      if (M[(int64_t)r * E + e] == 0.0f) continue;
      const float *xr = XN + (int64_t)r * C;
      float g = 0.0f;
      for (int64_t i = 0; i < C; i++) g += lte_load_elem(wdtype, w_fc, j * C + i) * xr[i];
      float h;
      if (swi) {
        float u = 0.0f;
        for (int64_t i = 0; i < C; i++) u += lte_load_elem(wdtype, w_fc, (F + j) * C + i) * xr[i];
        if (BF) {
          g += BF[j];
          u += BF[F + j];
        }
        h = dec_silu(g) * u;
      } else {
        h = dec_gelu(g + (BF ? BF[j] : 0.0f));
      }
      H[(int64_t)r * F + j] = h;
    }
  }
#pragma omp parallel for num_threads(nt) schedule(static) if ((int64_t)rows * F * C > LTE_PAR_MIN)
  for (int64_t c = 0; c < C; c++) {
    for (int32_t r = 0; r < rows; r++) {
      float acc = BD ? BD[c] : 0.0f;
      for (int64_t e = 0; e < E; e++) {
        int on = 0;
        for (int32_t q = 0; q < rows; q++) on |= M[(int64_t)q * E + e] != 0.0f;
        if (!on) continue;
        for (int64_t j = 0; j < S; j++) {
          const int64_t kk = e * S + j;
          acc += H[(int64_t)r * F + kk] * lte_load_elem(wdtype, w_down_t, kk * C + c);
        }
      }
      X[(int64_t)r * C + c] += acc;
    }
  }
  free(H);
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- sampling */

static int dec_cmp_desc_f(const void *pa, const void *pb) {
  const float a = *(const float *)pa, b = *(const float *)pb;
  return (a < b) - (a > b);
}

LTE_API lte_status lte_dec_sample(lte_ctx_t *ctx, const void *logits, const void *temperature, const int32_t *top_k,
                                  const void *top_p, const uint64_t *seeds, int32_t *pos, int32_t *ids,
                                  int32_t *out, void *scratch, int32_t rows, int32_t vocab, int32_t advance) {
  CHECK_CTX();
  CHECK_NONNEG(rows);
  CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  CHECK_PTR(logits);
  CHECK_PTR(temperature);
  CHECK_PTR(top_k);
  CHECK_PTR(top_p);
  CHECK_PTR(seeds);
  CHECK_PTR(pos);
  CHECK_PTR(out);
  CHECK_PTR(scratch);
  if (advance) CHECK_PTR(ids);
  const float *X = logits, *TEMP = temperature, *TP = top_p;
  float *SC = scratch;
  const int64_t V = vocab;
  for (int32_t r = 0; r < rows; r++) {
    const float *xr = X + (int64_t)r * V;
    int64_t chosen = 0;
    if (!(TEMP[r] > 0.0f)) {
      for (int64_t c = 1; c < V; c++) {
        if (xr[c] > xr[chosen]) chosen = c;
      }
    } else {
      float *e = SC + (int64_t)r * V;
      const float inv_t = 1.0f / TEMP[r];
      float mx = -INFINITY;
      for (int64_t i = 0; i < V; i++) {
        e[i] = xr[i] * inv_t;
        if (e[i] > mx) mx = e[i];
      }
      float kth = -INFINITY;
      if (top_k[r] > 0 && top_k[r] < V) {
        float *sorted = malloc((size_t)V * sizeof(float));
        if (!sorted) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch", __func__);
        memcpy(sorted, e, (size_t)V * sizeof(float));
        qsort(sorted, (size_t)V, sizeof(float), dec_cmp_desc_f);
        kth = sorted[top_k[r] - 1];
        free(sorted);
      }
      float z = 0.0f;
      for (int64_t i = 0; i < V; i++) {
        e[i] = e[i] >= kth ? expf(e[i] - mx) : 0.0f;
        z += e[i];
      }
      float cut = 0.0f; /* keep e_i >= cut (and e_i > 0) */
      if (TP[r] < 1.0f) {
        float *sorted = malloc((size_t)V * sizeof(float));
        if (!sorted) return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate scratch", __func__);
        memcpy(sorted, e, (size_t)V * sizeof(float));
        qsort(sorted, (size_t)V, sizeof(float), dec_cmp_desc_f);
        const float target = TP[r] * z;
        float above = 0.0f;
        for (int64_t i = 0; i < V;) {
          const float value = sorted[i];
          while (i < V && sorted[i] == value) above += sorted[i++];
          if (above >= target) {
            cut = value;
            break;
          }
        }
        free(sorted);
      }
      float kept = 0.0f;
      for (int64_t i = 0; i < V; i++) {
        if (e[i] > 0.0f && e[i] >= cut) kept += e[i];
      }
      const float u = lte_uniform(seeds[r], pos[r]) * kept;
      float running = 0.0f;
      int64_t last = -1;
      chosen = -1;
      for (int64_t i = 0; i < V; i++) {
        if (!(e[i] > 0.0f && e[i] >= cut)) continue;
        last = i;
        running += e[i];
        if (running > u) {
          chosen = i;
          break;
        }
      }
      if (chosen < 0) chosen = last >= 0 ? last : 0;
    }
    out[r] = (int32_t)chosen;
    if (advance) {
      ids[r] = (int32_t)chosen;
      pos[r] += 1;
    }
  }
  return LTE_STATUS_OK;
}

/* ---------------------------------------------------------------- utilities */

LTE_API lte_status lte_dec_fill_random(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, uint64_t seed,
                                       float scale) {
  CHECK_CTX();
  CHECK_DT(dtype);
  CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  for (int64_t i = 0; i < n; i++) lte_store_elem(dtype, x, i, scale * (2.0f * lte_uniform(seed, i) - 1.0f));
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_dec_convert(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  CHECK_CTX();
  CHECK_DT(dtype);
  CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  for (int64_t i = 0; i < n; i++) lte_store_elem(dtype, y, i, X[i]);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_dec_convert_split(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *hi, void *lo,
                                         int64_t n) {
  CHECK_CTX();
  if (dtype != LTE_DTYPE_F16 && dtype != LTE_DTYPE_BF16) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: dtype %d must be F16 or BF16", __func__, (int)dtype);
  }
  CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  CHECK_PTR(hi);
  CHECK_PTR(lo);
  const float *X = x;
  for (int64_t i = 0; i < n; i++) {
    lte_store_elem(dtype, hi, i, X[i]);
    lte_store_elem(dtype, lo, i, X[i] - lte_load_elem(dtype, hi, i));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_graph_begin(lte_ctx_t *ctx) {
  CHECK_CTX();
  return FAIL(LTE_STATUS_UNSUPPORTED, "%s: graph capture needs the cuda backend (run the steps eagerly)", __func__);
}

LTE_API lte_status lte_graph_end(lte_ctx_t *ctx, void **graph_out) {
  CHECK_CTX();
  CHECK_PTR(graph_out);
  *graph_out = NULL;
  return FAIL(LTE_STATUS_UNSUPPORTED, "%s: graph capture needs the cuda backend", __func__);
}

LTE_API lte_status lte_graph_launch(lte_ctx_t *ctx, void *graph) {
  CHECK_CTX();
  (void)graph;
  return FAIL(LTE_STATUS_UNSUPPORTED, "%s: graph capture needs the cuda backend", __func__);
}

LTE_API lte_status lte_graph_free(lte_ctx_t *ctx, void *graph) {
  CHECK_CTX();
  if (graph == NULL) return LTE_STATUS_OK;
  return FAIL(LTE_STATUS_UNSUPPORTED, "%s: graph capture needs the cuda backend", __func__);
}

LTE_API lte_status lte_graph_time(lte_ctx_t *ctx, void *graph, int32_t warmup, int32_t reps, int32_t inner,
                                  float *host_us) {
  CHECK_CTX();
  (void)graph, (void)warmup, (void)reps, (void)inner, (void)host_us;
  return FAIL(LTE_STATUS_UNSUPPORTED, "%s: graph capture needs the cuda backend", __func__);
}
