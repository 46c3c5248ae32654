/*
 * rope.c: rotary position embedding, Hugging Face LLaMA "rotate_half" convention.
 *
 *   x, y: (B, T, H, D); token t has position pos = pos_offset + t; pair i in [0, D/2) couples
 *   elements i and i + D/2 with angle = pos * theta^(-2i/D):
 *     forward   y[i]       = x[i] cos - x[i + D/2] sin
 *               y[i + D/2] = x[i + D/2] cos + x[i] sin            (in place allowed: x == y)
 *     backward  dx[i]       += dy[i] cos + dy[i + D/2] sin         (R^T dy, accumulated)
 *               dx[i + D/2] += dy[i + D/2] cos - dy[i] sin
 * Angles, cos and sin are evaluated in double. Parallel over (B, T) rows.
 */
#include "cpu_common.h"

static lte_status rope_check(lte_ctx_t *ctx, const char *fn, lte_dtype dtype, const void *in, void *out,
                             const char *in_name, const char *out_name, int32_t batch, int32_t seq, int32_t heads,
                             int32_t head_dim, int32_t pos_offset, float theta) {
  LTE_TRY(lte_check_ctx(ctx, fn));
  LTE_TRY(lte_check_f32(ctx, fn, dtype));
  LTE_TRY(lte_check_pos(ctx, fn, batch, "batch"));
  LTE_TRY(lte_check_pos(ctx, fn, seq, "seq"));
  LTE_TRY(lte_check_pos(ctx, fn, heads, "heads"));
  LTE_TRY(lte_check_pos(ctx, fn, head_dim, "head_dim"));
  LTE_TRY(lte_check_nonneg(ctx, fn, pos_offset, "pos_offset"));
  if (head_dim % 2 != 0) {
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: head_dim = %d must be even", fn, (int)head_dim);
  }
  if (!(theta > 0.0f) || !isfinite(theta)) {
    return lte_fail(ctx, LTE_STATUS_INVALID_ARGUMENT, "%s: theta = %g must be finite and > 0", fn, (double)theta);
  }
  LTE_TRY(lte_check_ptr(ctx, fn, in, in_name));
  LTE_TRY(lte_check_ptr(ctx, fn, out, out_name));
  return LTE_STATUS_OK;
}

/* direction = +1: forward rotation, y = R x (overwrite); -1: dx += R^T dy. */
static void rope_apply(const lte_ctx_t *ctx, const float *in, float *out, int32_t batch, int32_t seq,
                       int32_t heads, int32_t head_dim, int32_t pos_offset, float theta, int direction) {
  const int64_t H = heads, D = head_dim, half = D / 2, rows = (int64_t)batch * seq;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (rows * H * D > LTE_PAR_MIN)
  for (int64_t bt = 0; bt < rows; bt++) {
    const double pos = (double)pos_offset + (double)(bt % seq);
    for (int64_t i = 0; i < half; i++) {
      const double angle = pos * pow((double)theta, -2.0 * (double)i / (double)D);
      const double cs = cos(angle), sn = sin(angle);
      for (int64_t h = 0; h < H; h++) {
        const int64_t base = (bt * H + h) * D;
        const double x1 = in[base + i], x2 = in[base + i + half];
        if (direction > 0) {
          out[base + i] = (float)(x1 * cs - x2 * sn);
          out[base + i + half] = (float)(x2 * cs + x1 * sn);
        } else {
          out[base + i] += (float)(x1 * cs + x2 * sn);
          out[base + i + half] += (float)(x2 * cs - x1 * sn);
        }
      }
    }
  }
}

LTE_API lte_status lte_rope_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int32_t batch,
                                    int32_t seq, int32_t heads, int32_t head_dim, int32_t pos_offset, float theta) {
  LTE_TRY(rope_check(ctx, __func__, dtype, x, y, "x", "y", batch, seq, heads, head_dim, pos_offset, theta));
  rope_apply(ctx, x, y, batch, seq, heads, head_dim, pos_offset, theta, +1);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_rope_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, void *dx, int32_t batch,
                                     int32_t seq, int32_t heads, int32_t head_dim, int32_t pos_offset, float theta) {
  LTE_TRY(rope_check(ctx, __func__, dtype, dy, dx, "dy", "dx", batch, seq, heads, head_dim, pos_offset, theta));
  rope_apply(ctx, dy, dx, batch, seq, heads, head_dim, pos_offset, theta, -1);
  return LTE_STATUS_OK;
}
