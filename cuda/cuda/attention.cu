/*
 * attention.cu: causal multi-head self-attention with grouped-query heads, forward and backward.
 *
 *   q, dq, out, dout: (B, T, H, D)    k, v, dk, dv: (B, T, HKV, D)    probs: (B, H, T, T)
 *   query head h reads key/value head h / rep, rep = H / HKV
 *
 * Design: the heavy lifting is strided-batched GEMMs (lte::gemm: cuBLAS, or the fallback SGEMM),
 * with cheap layout kernels around them. The (B, T, H, D) layout interleaves heads, which a single
 * strided batch cannot walk, so q is permuted and k, v are permuted *and expanded* (each kv head
 * repeated for its rep query heads) into (B*H, T, D) scratch buffers; then every GEMM is one call
 * with batch = B*H. The permutes move B*T*H*D floats, small next to the (B*H, T, T) score matrix
 * (T/D times larger), so they cost little; scratch comes from the caching allocator and is
 * returned at the end of the call (safe: one stream).
 *
 * Forward
 *   Qp, Kp, Vp = permute/expand(q, k, v)                    (B*H, T, D)
 *   probs      = scale * Qp Kp^T                            GEMM, full T x T (upper half unused)
 *   probs      = causal_softmax(probs)                      warp per row; zeros above the diagonal
 *   Op         = probs Vp                                   GEMM
 *   out        = permute back(Op)
 * Backward (P = probs, dOp = permute(dout)); each gradient is skipped when its pointer is NULL
 *   dVp = P^T dOp                                           GEMM (trans_a)
 *   dP  = dOp Vp^T                                          GEMM (trans_b)
 *   dS  = P * (dP - rowsum(dP * P))                         warp per row, in place in dP
 *   dQp = scale dS Kp,  dKp = scale dS^T Qp                 GEMMs
 *   dq += permute back(dQp); dk, dv += sum over the rep query heads of each group of dKp, dVp
 * The group sum is done in a fixed order by one thread per output element: deterministic, no
 * atomics.
 */
#include "reduce.cuh"

namespace lte {
namespace {

/* dst[(b*H + h), t, d] = src[b, t, h / rep, d]      src: (B, T, Hs, D), Hs = H / rep */
__global__ void to_heads_major_kernel(const float *src, float *dst, int64_t total, int T, int H, int rep, int D) {
  const int Hs = H / rep;
  LTE_GRID_STRIDE(idx, total) {
    const int d = (int)(idx % D);
    int64_t r = idx / D;
    const int t = (int)(r % T);
    r /= T;
    const int h = (int)(r % H);
    const int64_t b = r / H;
    dst[idx] = src[((b * T + t) * Hs + h / rep) * D + d];
  }
}

/* dst[b, t, g, d] (= or +=) sum_{j < rep} src[(b*H + g*rep + j), t, d]
   src: (B*H, T, D), dst: (B, T, H/rep, D); total = B*T*(H/rep)*D. */
__global__ void from_heads_major_kernel(const float *src, float *dst, int64_t total, int T, int H, int rep, int D,
                                        int accumulate) {
  const int G = H / rep;
  LTE_GRID_STRIDE(idx, total) {
    const int d = (int)(idx % D);
    int64_t r = idx / D;
    const int g = (int)(r % G);
    r /= G;
    const int t = (int)(r % T);
    const int64_t b = r / T;
    float acc = 0.f;
    for (int j = 0; j < rep; ++j) acc += src[((b * H + g * rep + j) * T + t) * D + d];
    dst[idx] = accumulate ? dst[idx] + acc : acc;
  }
}

/* In-place causal softmax of score rows: row = (bh, i), valid columns j <= i. One warp per row. */
__global__ void causal_softmax_kernel(float *p, int64_t rows, int T) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += nwarps) {
    const int i = (int)(row % T);
    float *pr = p + row * T;
    float m = -INFINITY;
    for (int j = lane; j <= i; j += 32) m = fmaxf(m, pr[j]);
    m = warp_max(m);
    float s = 0.f;
    for (int j = lane; j <= i; j += 32) {
      const float e = expf(pr[j] - m);
      pr[j] = e;
      s += e;
    }
    s = warp_sum(s);
    const float inv = 1.f / s;
    for (int j = lane; j < T; j += 32) pr[j] = j <= i ? pr[j] * inv : 0.f;
  }
}

/* In place: ds = p * (dp - sum_j p_j dp_j) for j <= i, 0 above the diagonal. One warp per row. */
__global__ void softmax_backward_kernel(const float *p, float *dp, int64_t rows, int T) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += nwarps) {
    const int i = (int)(row % T);
    const float *pr = p + row * T;
    float *dr = dp + row * T;
    float dot = 0.f;
    for (int j = lane; j <= i; j += 32) dot += pr[j] * dr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32) dr[j] = j <= i ? pr[j] * (dr[j] - dot) : 0.f;
  }
}

struct Dims {
  int B, T, H, HKV, D, rep;
  int64_t q_elems() const { return (int64_t)B * T * H * D; }   /* also Qp, Kp, Vp (expanded) */
  int64_t rows() const { return (int64_t)B * H * T; }          /* score rows */
  int bh() const { return B * H; }
};

lte_status to_heads_major(lte_ctx *ctx, const char *FN, const Dims &s, const float *src, float *dst, int rep) {
  const int64_t total = s.q_elems();
  to_heads_major_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(src, dst, total, s.T, s.H, rep, s.D);
  LTE_LAUNCH_CHECK("to_heads_major_kernel");
  return LTE_STATUS_OK;
}

lte_status from_heads_major(lte_ctx *ctx, const char *FN, const Dims &s, const float *src, float *dst, int rep,
                            int accumulate) {
  const int64_t total = (int64_t)s.B * s.T * (s.H / rep) * s.D;
  from_heads_major_kernel<<<grid_for(ctx, total), kThreads, 0, ctx->stream>>>(src, dst, total, s.T, s.H, rep, s.D,
                                                                              accumulate);
  LTE_LAUNCH_CHECK("from_heads_major_kernel");
  return LTE_STATUS_OK;
}

unsigned warp_rows_grid(const lte_ctx *ctx, int64_t rows) { return grid_for(ctx, rows, kThreads / 32); }

}  // namespace
}  // namespace lte

using namespace lte;

/* Same checks, order and messages as the CPU backend. */
#define ATTN_VALIDATE()                                                                                    \
  LTE_REQUIRE_F32(dtype);                                                                                  \
  LTE_CHECK_POS(batch);                                                                                    \
  LTE_CHECK_POS(seq);                                                                                      \
  LTE_CHECK_POS(heads);                                                                                    \
  LTE_CHECK_POS(kv_heads);                                                                                 \
  LTE_CHECK_POS(head_dim);                                                                                 \
  LTE_REQUIRE(heads % kv_heads == 0, "heads = %d is not a multiple of kv_heads = %d", heads, kv_heads);  \
  LTE_REQUIRE(isfinite(scale), "scale = %g must be finite", (double)scale);                               \
  LTE_REQUIRE((int64_t)batch * heads <= INT32_MAX, "batch * heads = %lld is too large for one GEMM batch", \
              (long long)batch * heads)

extern "C" LTE_API lte_status lte_attention_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *q, const void *k,
                                                    const void *v, void *out, void *probs, int32_t batch, int32_t seq,
                                                    int32_t heads, int32_t kv_heads, int32_t head_dim, float scale) {
  LTE_ENTER("lte_attention_forward");
  ATTN_VALIDATE();
  LTE_REQUIRE_PTR(q);
  LTE_REQUIRE_PTR(k);
  LTE_REQUIRE_PTR(v);
  LTE_REQUIRE_PTR(out);
  LTE_REQUIRE_PTR(probs);
  const Dims s{batch, seq, heads, kv_heads, head_dim, heads / kv_heads};
  const int T = s.T, D = s.D;
  float *P = static_cast<float *>(probs);

  Scratch scratch(ctx, FN);
  float *Qp = nullptr, *Kp = nullptr, *Vp = nullptr;
  LTE_TRY(scratch.get(s.q_elems(), &Qp));
  LTE_TRY(scratch.get(s.q_elems(), &Kp));
  LTE_TRY(scratch.get(s.q_elems(), &Vp));
  LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(q), Qp, 1));
  LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(k), Kp, s.rep));
  LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(v), Vp, s.rep));

  // scores (T x T) = scale * Qp (T x D) @ Kp^T (D x T), per (b, h)
  LTE_TRY(gemm(ctx, FN, false, true, T, T, D, scale, Qp, D, (int64_t)T * D, Kp, D, (int64_t)T * D, 0.f, P, T,
               (int64_t)T * T, s.bh()));
  causal_softmax_kernel<<<warp_rows_grid(ctx, s.rows()), kThreads, 0, ctx->stream>>>(P, s.rows(), T);
  LTE_LAUNCH_CHECK("causal_softmax_kernel");
  // Op (T x D) = P (T x T) @ Vp (T x D); Qp's buffer is reused for Op.
  float *Op = Qp;
  LTE_TRY(gemm(ctx, FN, false, false, T, D, T, 1.f, P, T, (int64_t)T * T, Vp, D, (int64_t)T * D, 0.f, Op, D,
               (int64_t)T * D, s.bh()));
  return from_heads_major(ctx, FN, s, Op, static_cast<float *>(out), 1, 0);
}

extern "C" LTE_API lte_status lte_attention_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout, const void *q,
                                                     const void *k, const void *v, const void *probs, void *dq,
                                                     void *dk, void *dv, int32_t batch, int32_t seq, int32_t heads,
                                                     int32_t kv_heads, int32_t head_dim, float scale) {
  LTE_ENTER("lte_attention_backward");
  ATTN_VALIDATE();
  LTE_REQUIRE_PTR(dout);
  LTE_REQUIRE_PTR(q);
  LTE_REQUIRE_PTR(k);
  LTE_REQUIRE_PTR(v);
  LTE_REQUIRE_PTR(probs);
  if (dq == nullptr && dk == nullptr && dv == nullptr) return LTE_STATUS_OK;
  const Dims s{batch, seq, heads, kv_heads, head_dim, heads / kv_heads};
  const int T = s.T, D = s.D;
  const int64_t sTD = (int64_t)T * D, sTT = (int64_t)T * T;
  const float *P = static_cast<const float *>(probs);

  Scratch scratch(ctx, FN);
  float *dOp = nullptr, *tmp = nullptr;
  LTE_TRY(scratch.get(s.q_elems(), &dOp));
  LTE_TRY(scratch.get(s.q_elems(), &tmp)); /* dVp, then dQp, then dKp */
  LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(dout), dOp, 1));

  if (dv) {
    // dVp (T x D) = P^T (T x T) @ dOp (T x D)
    LTE_TRY(gemm(ctx, FN, true, false, T, D, T, 1.f, P, T, sTT, dOp, D, sTD, 0.f, tmp, D, sTD, s.bh()));
    LTE_TRY(from_heads_major(ctx, FN, s, tmp, static_cast<float *>(dv), s.rep, 1));
  }
  if (dq == nullptr && dk == nullptr) return LTE_STATUS_OK;

  float *Vp = nullptr, *dS = nullptr;
  LTE_TRY(scratch.get(s.q_elems(), &Vp));
  LTE_TRY(scratch.get((size_t)s.bh() * sTT, &dS));
  LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(v), Vp, s.rep));
  // dP (T x T) = dOp (T x D) @ Vp^T (D x T)
  LTE_TRY(gemm(ctx, FN, false, true, T, T, D, 1.f, dOp, D, sTD, Vp, D, sTD, 0.f, dS, T, sTT, s.bh()));
  softmax_backward_kernel<<<warp_rows_grid(ctx, s.rows()), kThreads, 0, ctx->stream>>>(P, dS, s.rows(), T);
  LTE_LAUNCH_CHECK("softmax_backward_kernel");

  float *X = Vp; /* Vp is no longer needed: reuse it for Kp, then Qp */
  if (dq) {
    // dQp (T x D) = scale * dS (T x T) @ Kp (T x D)
    LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(k), X, s.rep));
    LTE_TRY(gemm(ctx, FN, false, false, T, D, T, scale, dS, T, sTT, X, D, sTD, 0.f, tmp, D, sTD, s.bh()));
    LTE_TRY(from_heads_major(ctx, FN, s, tmp, static_cast<float *>(dq), 1, 1));
  }
  if (dk) {
    // dKp (T x D) = scale * dS^T (T x T) @ Qp (T x D)
    LTE_TRY(to_heads_major(ctx, FN, s, static_cast<const float *>(q), X, 1));
    LTE_TRY(gemm(ctx, FN, true, false, T, D, T, scale, dS, T, sTT, X, D, sTD, 0.f, tmp, D, sTD, s.bh()));
    LTE_TRY(from_heads_major(ctx, FN, s, tmp, static_cast<float *>(dk), s.rep, 1));
  }
  return LTE_STATUS_OK;
}
