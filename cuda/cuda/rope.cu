/*
 * rope.cu: rotary position embedding, Hugging Face LLaMA "rotate_half" convention.
 *
 *   x, y, dy, dx: (B, T, H, D), pairs (i, i + D/2) for i < D/2,
 *   angle(t, i) = (pos_offset + t) * theta^(-2i/D)
 *   forward:  y[i] = x[i] cos - x[i + D/2] sin,   y[i + D/2] = x[i + D/2] cos + x[i] sin
 *   backward: dx += R^T dy:  dx[i] += dy[i] cos + dy[i + D/2] sin,
 *                            dx[i + D/2] += dy[i + D/2] cos - dy[i] sin
 *
 * The (T, D/2) cos/sin table is computed first in double precision (a float angle at position
 * ~1000 is already off by ~1e-4 rad) and rounded to float; the rotation kernel then reads it for
 * every (batch, head). Each thread owns one pair and reads both elements before writing, so
 * in-place (y == x, dx == dy is not meaningful) works.
 */
#include "common.cuh"

namespace lte {
namespace {

__global__ void rope_table_kernel(float *cos_t, float *sin_t, int seq, int half, int head_dim, int pos_offset,
                                  double theta) {
  const int64_t total = (int64_t)seq * half;
  LTE_GRID_STRIDE(idx, total) {
    const int t = (int)(idx / half), i = (int)(idx % half);
    const double freq = pow(theta, -2.0 * (double)i / (double)head_dim);
    const double ang = (double)(pos_offset + t) * freq;
    double s, c;
    sincos(ang, &s, &c);
    cos_t[idx] = (float)c;
    sin_t[idx] = (float)s;
  }
}

template <bool kBackward>
__global__ void rope_apply_kernel(const float *in, float *out, const float *cos_t, const float *sin_t, int64_t total,
                                  int seq, int heads, int half) {
  // total = B * T * H * half; idx -> (b, t, h, i)
  LTE_GRID_STRIDE(idx, total) {
    const int i = (int)(idx % half);
    const int64_t bth = idx / half;
    const int t = (int)((bth / heads) % seq);
    const int64_t base = bth * (2 * half);
    const float c = cos_t[(int64_t)t * half + i], s = sin_t[(int64_t)t * half + i];
    const float a = in[base + i], b = in[base + i + half];
    if (kBackward) {
      out[base + i] += a * c + b * s;
      out[base + i + half] += b * c - a * s;
    } else {
      out[base + i] = a * c - b * s;
      out[base + i + half] = b * c + a * s;
    }
  }
}

template <bool kBackward>
lte_status rope(lte_ctx *ctx, const char *FN, lte_dtype dtype, const void *src, void *dst, int32_t batch, int32_t seq,
                int32_t heads, int32_t head_dim, int32_t pos_offset, float theta) {
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_POS(batch);
  LTE_CHECK_POS(seq);
  LTE_CHECK_POS(heads);
  LTE_CHECK_POS(head_dim);
  LTE_CHECK_NONNEG(pos_offset);
  LTE_REQUIRE(head_dim % 2 == 0, "head_dim = %d must be even", head_dim);
  LTE_REQUIRE(theta > 0.f && isfinite(theta), "theta = %g must be finite and > 0", (double)theta);
  LTE_REQUIRE(src != nullptr, "%s is NULL", kBackward ? "dy" : "x");
  LTE_REQUIRE(dst != nullptr, "%s is NULL", kBackward ? "dx" : "y");
  const int half = head_dim / 2;
  Scratch scratch(ctx, FN);
  float *cos_t = nullptr, *sin_t = nullptr;
  LTE_TRY(scratch.get((size_t)seq * half, &cos_t));
  LTE_TRY(scratch.get((size_t)seq * half, &sin_t));
  rope_table_kernel<<<grid_for(ctx, (int64_t)seq * half), kThreads, 0, ctx->stream>>>(cos_t, sin_t, seq, half, head_dim,
                                                                                     pos_offset, (double)theta);
  LTE_LAUNCH_CHECK("rope_table_kernel");
  const int64_t total = (int64_t)batch * seq * heads * half;
  rope_apply_kernel<kBackward><<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(
      static_cast<const float *>(src), static_cast<float *>(dst), cos_t, sin_t, total, seq, heads, half);
  LTE_LAUNCH_CHECK("rope_apply_kernel");
  return LTE_STATUS_OK;
}

}  // namespace
}  // namespace lte

extern "C" LTE_API lte_status lte_rope_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int32_t batch,
                                               int32_t seq, int32_t heads, int32_t head_dim, int32_t pos_offset,
                                               float theta) {
  LTE_ENTER("lte_rope_forward");
  return lte::rope<false>(ctx, FN, dtype, x, y, batch, seq, heads, head_dim, pos_offset, theta);
}

extern "C" LTE_API lte_status lte_rope_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, void *dx,
                                                int32_t batch, int32_t seq, int32_t heads, int32_t head_dim,
                                                int32_t pos_offset, float theta) {
  LTE_ENTER("lte_rope_backward");
  return lte::rope<true>(ctx, FN, dtype, dy, dx, batch, seq, heads, head_dim, pos_offset, theta);
}
