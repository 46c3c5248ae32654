/*
 * decode_blas.cuh: lte_dec_linear and lte_dec_linear_t_sparse of many rows on cuBLAS (issue 9,
 * twelfth session), included by decode.cu inside its anonymous namespace (it uses pdl_prologue,
 * dlaunch, env_int, dsilu, dgelu, pack2 and block_sum).
 *
 * Why: from 4 rows cuBLAS's half GEMMs stream the weights at 3.1-3.9 TB/s where our tensor-core
 * GEMV reaches 2.0-2.8 (docs/engine.md, "Batched decode on tensor cores": QKV at 8 rows 28.1
 * against 45.2 us, gate/up 46.1 against 70.5), and the tenth session's Nsight Compute profile found
 * our kernel latency-bound on its weight loads. At 1-2 rows our GEMVs stay faster (the fused norm
 * and epilogue, PDL). A call becomes up to three launches:
 *   blas_prep_kernel      x' (plain / RMSNorm / LayerNorm, as lte_dec_linear forms it; times the
 *                         in_mask, or the union of the rows' masks for the transposed down) rounded
 *                         to the weight dtype: xh (rows, K), the GEMM's input;
 *   gemm_half (blas.cu)   cublasGemmEx, f32 compute and output: straight into y (plain outputs,
 *                         accumulating into the residual with beta = 1) or into the f32 products c;
 *   blas_epilogue_kernel  y from c: SwiGLU / GELU / bias, the out_mask, accumulate.
 * Precision: x' is rounded to the weight dtype, as on the tensor-core GEMV (MMA_TOL of
 * tests/gpu/gemv_test.ts); products and sums are f32.
 *
 * Masked calls ("masked dense"): an out_mask call (the masked gate/up of a sparse step) computes
 * every output and zeroes the masked ones in the epilogue; the transposed sparse down multiplies
 * every expert block, with x' zero outside the union (so the result is the union's, as the
 * contract of lte_dec_linear_t_sparse says). Both read all weights: at 4-16 rows the union of the
 * rows' experts is most of them, and the dense GEMM at cuBLAS's bandwidth was measured against the
 * union kernels (docs/engine.md, "Twelfth session").
 *
 * Switches (read at each launch, like LTE_DEC_PDL):
 *   LTE_DEC_BLAS         0: never; 1: f16 weights (default); 2: bf16 too (x' rounded to bf16,
 *                        the 7e-3 logit error that keeps bf16 off the tensor-core GEMV)
 *   LTE_DEC_BLAS_MIN     fewest rows (default kBlasMinRows = 4)
 *   LTE_DEC_BLAS_MASKED  1: out_mask calls and the transposed sparse down too (default); 0: they
 *                        keep the union kernels
 *   LTE_DEC_BLAS_ROUTER_ROWS  1: the fused sparse FFN's router in its gate/up GEMM when w_fc has
 *                        the router rows (default); 0: the side-stream router (blas_sparse_ffn)
 *   LTE_DEC_DIAG_MD      a diagnostic (WRONG results, timing only): see blas_sparse_ffn
 */

/* Fewest rows (twelfth session, H200, 7B step, device ms, our kernels -> cuBLAS from 1 row):
   batch 1 3.646 -> 4.220, 2 3.953 -> 4.267, 4 4.961 -> 4.312, 6 4.846 -> 4.335, 8 5.098 -> 4.368,
   16 6.833 -> 4.630 (docs/results/issue9_h200_session12_call1.txt); batch 3 not measured. */
constexpr int kBlasMinRows = 4;
constexpr int kBlasPrepThreads = 256;
constexpr int kBlasPrepSplit = 8;         // blocks per row of blas_prep_kernel (each computes the row's statistics)
constexpr size_t kBlasWorkspace = 32 << 20;  // cuBLAS workspace (32 MiB: NVIDIA's advice for Hopper)

struct BlasTune {
  int on;  // 0 off, 1 f16, 2 f16 and bf16
  int min_rows;
  int masked;
};
inline BlasTune blas_tune() {
  BlasTune t;
  t.on = env_int("LTE_DEC_BLAS", 1, 0, 2);
  t.min_rows = env_int("LTE_DEC_BLAS_MIN", kBlasMinRows, 1, 1 << 20);
  t.masked = env_int("LTE_DEC_BLAS_MASKED", 1, 0, 1);
  return t;
}

/* xh[r, k] = T(x'[r, k] * m[r, k]), grid (rows, kBlasPrepSplit): every block of a row computes the
   row's norm statistics (the same sums and formulas as build_xprime; the row is read from L2 a few
   times over, cheaper than another launch) and writes its slice of k. m: in_mask[r, k / S]; with
   `union_mask` the union over all rows instead (the transposed down's contract). K % 4 == 0. */
template <class T>
__global__ void __launch_bounds__(kBlasPrepThreads)
    blas_prep_kernel(const float *x, int ldx, int mode, const float *nw, const float *nb, float eps,
                     const float *in_mask, int S, int union_mask, int rows, T *xh, int K, float *xf, T *xl,
                     int32_t *zero_counts) {
  pdl_prologue();
  __shared__ float sm[32];
  const int r = blockIdx.x;
  if (zero_counts && blockIdx.y == 0 && threadIdx.x == 0) zero_counts[r] = 0;
  const float *xr = x + (size_t)r * ldx;
  const bool norm = mode != LTE_DEC_X_PLAIN, ln = mode == LTE_DEC_X_LAYERNORM;
  float mean = 0.0f, rstd = 1.0f;
  if (norm) {
    float s1 = 0.0f, s2 = 0.0f;
    for (int k = 4 * threadIdx.x; k < K; k += 4 * blockDim.x) {
      const float4 v = __ldcg(reinterpret_cast<const float4 *>(xr + k));
      s1 += (v.x + v.y) + (v.z + v.w);
      s2 = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, s2))));
    }
    s1 = block_sum(s1, sm);
    s2 = block_sum(s2, sm);
    mean = ln ? s1 / (float)K : 0.0f;
    rstd = ln ? rsqrtf(fmaxf(s2 / (float)K - mean * mean, 0.0f) + eps) : rsqrtf(s2 / (float)K + eps);
  }
  const int E = in_mask ? K / S : 0;
  const int K4 = K / 4, per = (K4 + gridDim.y - 1) / gridDim.y;
  const int c1 = min(K4, (int)(blockIdx.y + 1) * per);
  for (int c = blockIdx.y * per + threadIdx.x; c < c1; c += blockDim.x) {
    const int k = 4 * c;
    float4 v = __ldcg(reinterpret_cast<const float4 *>(xr + k));
    if (norm) {
      const float4 w = *reinterpret_cast<const float4 *>(nw + k);
      const float4 b = ln ? *reinterpret_cast<const float4 *>(nb + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      v.x = (v.x - mean) * rstd * w.x + b.x;
      v.y = (v.y - mean) * rstd * w.y + b.y;
      v.z = (v.z - mean) * rstd * w.z + b.z;
      v.w = (v.w - mean) * rstd * w.w + b.w;
    }
    if (in_mask) {  // S % 4 == 0: the 4 elements share one expert
      const int e = k / S;
      float m = 0.0f;
      if (union_mask) {
        for (int q = 0; q < rows; q++) m = __ldcg(in_mask + (size_t)q * E + e) != 0.0f ? 1.0f : m;
      } else {
        m = __ldcg(in_mask + (size_t)r * E + e);
      }
      v.x *= m;
      v.y *= m;
      v.z *= m;
      v.w *= m;
    }
    uint2 p;
    p.x = pack2<T>(v.x, v.y);
    p.y = pack2<T>(v.z, v.w);
    *reinterpret_cast<uint2 *>(xh + (size_t)r * K + k) = p;
    if (xf) *reinterpret_cast<float4 *>(xf + (size_t)r * K + k) = v;  // the f32 x' too (the router's input)
    if (xl) {  // what rounding x' to T left out (the router rows' second input)
      const T *ph = reinterpret_cast<const T *>(&p);
      uint2 q;
      q.x = pack2<T>(v.x - to_f<T>(ph[0]), v.y - to_f<T>(ph[1]));
      q.y = pack2<T>(v.z - to_f<T>(ph[2]), v.w - to_f<T>(ph[3]));
      *reinterpret_cast<uint2 *>(xl + (size_t)r * K + k) = q;
    }
  }
}

/* blas_prep_kernel for the weight dtype (f16 or bf16), grid (rows, kBlasPrepSplit). */
inline cudaError_t launch_blas_prep(lte_dtype wdtype, cudaStream_t st, const float *x, int ldx, int mode,
                                   const float *nw, const float *nb, float eps, const float *in_mask, int S,
                                   int union_mask, int rows, void *xh, int K, float *xf, void *xl = nullptr,
                                   int32_t *zero_counts = nullptr) {
  const dim3 g((unsigned)rows, kBlasPrepSplit), b(kBlasPrepThreads);
  if (wdtype == LTE_DTYPE_F16)
    return dlaunch(blas_prep_kernel<__half>, g, b, 0, st, x, ldx, mode, nw, nb, eps, in_mask, S, union_mask, rows,
                   static_cast<__half *>(xh), K, xf, static_cast<__half *>(xl), zero_counts);
  return dlaunch(blas_prep_kernel<__nv_bfloat16>, g, b, 0, st, x, ldx, mode, nw, nb, eps, in_mask, S, union_mask, rows,
                 static_cast<__nv_bfloat16 *>(xh), K, xf, static_cast<__nv_bfloat16 *>(xl), zero_counts);
}

/* y[r, o] (o < N) from the f32 products c (rows, ldc): SwiGLU silu(c[r, o]) * c[r, N + o] (no bias,
   as lte_dec_linear), else act(c[r, o] + bias[o]); where out_mask[r, (o % P) / S] == 0 the output is
   0 (or y is left as it is when accumulating); accumulate adds into y (act NONE only). */
__global__ void blas_epilogue_kernel(const float *c, int ldc, const float *bias, int act, int accumulate,
                                     const float *out_mask, int P, int S, float *y, int N, int rows) {
  pdl_prologue();
  const int EP = out_mask ? P / S : 0;
  LTE_GRID_STRIDE(i, (int64_t)rows * N) {
    const int r = (int)(i / N), o = (int)(i % N);
    float *yo = y + i;
    if (out_mask && __ldcg(out_mask + (size_t)r * EP + (o % P) / S) == 0.0f) {
      if (!accumulate) *yo = 0.0f;
      continue;
    }
    const float *cr = c + (size_t)r * ldc;
    float v;
    if (act == LTE_DEC_ACT_SWIGLU) {
      v = dsilu(cr[o]) * cr[N + o];
    } else {
      v = cr[o] + (bias ? bias[o] : 0.0f);
      if (act == LTE_DEC_ACT_GELU) v = dgelu(v);
    }
    *yo = accumulate ? *yo + v : v;
  }
}

/* Whether a call takes the cuBLAS path: cuBLAS with cublasGemmEx, the weight dtype allowed by
   LTE_DEC_BLAS, at least LTE_DEC_BLAS_MIN rows, masks only with LTE_DEC_BLAS_MASKED, 16-byte
   vectors of x (k % 8, ldx % 4, aligned x and norm weights: `vec` of the caller) and S % 4 == 0. */
inline bool blas_applies(const BlasTune &t, const lte_ctx *ctx, lte_dtype wdtype, int rows, bool masked, bool vec,
                         int S) {
  if (!t.on || rows < t.min_rows || !vec || !gemm_half_available(ctx)) return false;
  if (wdtype != LTE_DTYPE_F16 && (wdtype != LTE_DTYPE_BF16 || t.on < 2)) return false;
  if (masked && (!t.masked || S % 4 != 0)) return false;
  return true;
}

inline size_t blas_align(size_t b) { return (b + 255) / 256 * 256; }

/* lte_dec_linear on cuBLAS (blas_applies said yes). Returns the status (errors name `fn`). */
inline lte_status blas_linear(lte_ctx *ctx, const char *fn, lte_dtype wdtype, const LinArgs &a, int rows) {
  const int NW = a.act == LTE_DEC_ACT_SWIGLU ? 2 * a.n : a.n;  // weight rows
  const bool direct = a.act == LTE_DEC_ACT_NONE && !a.bias && !a.out_mask;
  const size_t xb = blas_align((size_t)rows * a.k * 2), cb = direct ? 0 : blas_align((size_t)rows * NW * 4);
  char *ws = static_cast<char *>(decode_scratch(ctx, kBlasWorkspace + xb + cb));
  if (!ws) return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, fn, "cannot allocate the cuBLAS decode scratch");
  void *xh = ws + kBlasWorkspace;
  float *c = reinterpret_cast<float *>(ws + kBlasWorkspace + xb);
  cudaError_t e = launch_blas_prep(wdtype, ctx->stream, a.x, a.ldx, a.mode, a.nw, a.nb, a.eps, a.in_mask, a.S, 0, rows,
                                   xh, a.k, nullptr);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_prep_kernel", e, __FILE__, __LINE__);
  lte_status st = gemm_half(ctx, fn, wdtype, false, rows, NW, a.k, a.w, a.ldw ? a.ldw : a.k, xh,
                            direct && a.accumulate ? 1.0f : 0.0f, direct ? a.y : c, direct ? a.n : NW, ws,
                            kBlasWorkspace);
  if (st != LTE_STATUS_OK || direct) return st;
  e = dlaunch(blas_epilogue_kernel, dim3(grid_for(ctx, (int64_t)rows * a.n)), dim3(kThreads), 0, ctx->stream,
              (const float *)c, NW, a.bias, a.act, a.accumulate, a.out_mask, a.out_period, a.S, a.y, a.n, rows);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_epilogue_kernel", e, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

/* lte_dec_linear_t_sparse on cuBLAS: x' = h times the union of the rows' masks, one GEMM over the
   transposed weights (k, n) into y (beta 1), or into c when there is a bias. */
inline lte_status blas_t_sparse(lte_ctx *ctx, const char *fn, lte_dtype wdtype, const void *wt, const float *h,
                                const float *mask, const float *bias, float *y, int rows, int n, int k, int S) {
  const size_t xb = blas_align((size_t)rows * k * 2), cb = bias ? blas_align((size_t)rows * n * 4) : 0;
  char *ws = static_cast<char *>(decode_scratch(ctx, kBlasWorkspace + xb + cb));
  if (!ws) return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, fn, "cannot allocate the cuBLAS decode scratch");
  void *xh = ws + kBlasWorkspace;
  float *c = reinterpret_cast<float *>(ws + kBlasWorkspace + xb);
  cudaError_t e = launch_blas_prep(wdtype, ctx->stream, h, k, LTE_DEC_X_PLAIN, nullptr, nullptr, 0.0f, mask, S, 1, rows,
                                   xh, k, nullptr);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_prep_kernel", e, __FILE__, __LINE__);
  lte_status st = gemm_half(ctx, fn, wdtype, true, rows, n, k, wt, n, xh, bias ? 0.0f : 1.0f, bias ? c : y, n, ws,
                            kBlasWorkspace);
  if (st != LTE_STATUS_OK || !bias) return st;
  e = dlaunch(blas_epilogue_kernel, dim3(grid_for(ctx, (int64_t)rows * n)), dim3(kThreads), 0, ctx->stream,
              (const float *)c, n, bias, (int)LTE_DEC_ACT_NONE, 1, (const float *)nullptr, 0, 1, y, n, rows);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_epilogue_kernel", e, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

/* ------------------------------------------------------------------ the sparse FFN block, masked dense */

/* a_j of the sparse FFN block from the f32 products cr of one row: silu(cr[j] + b[j]) * (cr[F + j] +
   b[F + j]) (SwiGLU) or gelu(cr[j] + b[j]); b may be NULL. */
__device__ __forceinline__ float sffn_act_of(const float *cr, const float *b, int j, int F, int act) {
  return act == LTE_DEC_ACT_SWIGLU ? dsilu(cr[j] + (b ? b[j] : 0.0f)) * (cr[F + j] + (b ? b[F + j] : 0.0f))
                                   : dgelu(cr[j] + (b ? b[j] : 0.0f));
}

/* hh[r, j] = T(mask[r, j / S] ? a_j : 0), a_j = silu(c[r, j] + b[j]) * (c[r, F + j] + b[F + j])
   (SwiGLU) or gelu(c[r, j] + b[j]): the h of lte_dec_sparse_ffn, rounded for the down GEMM. F even. */
template <class T>
__global__ void blas_sffn_act_kernel(const float *c, int ldc, const float *b, const float *mask, int E, int S, int act,
                                     T *hh, int F, int rows) {
  pdl_prologue();
  LTE_GRID_STRIDE(i, (int64_t)rows * F / 2) {
    const int r = (int)(2 * i / F), j = (int)(2 * i % F);
    const float *cr = c + (size_t)r * ldc;
    float v[2];
#pragma unroll
    for (int q = 0; q < 2; q++)
      v[q] = __ldcg(mask + (size_t)r * E + (j + q) / S) == 0.0f ? 0.0f : sffn_act_of(cr, b, j + q, F, act);
    *reinterpret_cast<uint32_t *>(hh + (size_t)r * F + j) = pack2<T>(v[0], v[1]);
  }
}

/* blas_sffn_act_kernel for the router in the gate/up GEMM (LTE_DEC_SFFN_ROUTER_ROWS): c is (2R,
   ldc), rows r < R the products with x' (hi) and rows R + r those with its lo part; columns NW + e
   the router's hi rows and NW + E + e its lo rows. logit[r, e] = (hi.hi + lo_w.hi_x) + hi_w.lo_x +
   b_router[e]: x'.w_router to ~2^-22 relative (the lo.lo term, ~2^-22, is dropped), as the f32
   router. Writes the mask (the thread of each expert's first neuron), counts (zeroed by the prep
   kernel; one atomicAdd per row and warp) and hh. */
template <class T>
__global__ void blas_sffn_route_act_kernel(const float *c, int ldc, int NW, const float *b_router, float threshold,
                                           const float *b, float *mask, int32_t *counts, int E, int S, int act, T *hh,
                                           int F, int rows) {
  pdl_prologue();
  LTE_GRID_STRIDE(i, (int64_t)rows * F / 2) {
    const int r = (int)(2 * i / F), j = (int)(2 * i % F), e = j / S;
    const float *cr = c + (size_t)r * ldc;
    const float logit = (cr[NW + e] + cr[NW + E + e]) + c[(size_t)(rows + r) * ldc + NW + e] +
                        (b_router ? b_router[e] : 0.0f);
    const bool on = logit > threshold, first = j % S == 0;  // S even: one pair starts each expert
    if (first) mask[(size_t)r * E + e] = on ? 1.0f : 0.0f;
    if (counts) {
      const unsigned am = __activemask();
      __syncwarp(am);
      const unsigned peers = __match_any_sync(am, r);
      const int n = __popc(__ballot_sync(am, first && on) & peers);
      if (n && (int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(counts + r, n);
    }
    const float v0 = on ? sffn_act_of(cr, b, j, F, act) : 0.0f, v1 = on ? sffn_act_of(cr, b, j + 1, F, act) : 0.0f;
    *reinterpret_cast<uint32_t *>(hh + (size_t)r * F + j) = pack2<T>(v0, v1);
  }
}

/* The context's second stream and its two events (created at the first use; the capture mode of
   lte_graph_begin is relaxed): the router of the masked-dense block runs there, beside the gate/up
   GEMM. false when CUDA cannot create them. */
inline bool decode_side(lte_ctx *ctx) {
  if (ctx->dec_side) return true;
  cudaStream_t s = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess ||
      cudaEventCreateWithFlags(&a, cudaEventDisableTiming) != cudaSuccess ||
      cudaEventCreateWithFlags(&b, cudaEventDisableTiming) != cudaSuccess) {
    cudaGetLastError();
    if (s) cudaStreamDestroy(s);
    if (a) cudaEventDestroy(a);
    return false;
  }
  ctx->dec_side = s;
  ctx->dec_fork = a;
  ctx->dec_join = b;
  return true;
}

/* lte_dec_sparse_ffn of many rows on cuBLAS ("masked dense", twelfth session): every expert's
   gate/up rows are multiplied (at 4-16 rows the union is most experts, and cuBLAS streams them at
   ~3.9 TB/s where the union kernels reach ~2), the hard mask is applied to h, and the down GEMM
   reads every expert's rows of w_down_t (h is zero outside each row's experts). Two ways to route:
   - router_rows (LTE_DEC_SFFN_ROUTER_ROWS, f16; thirteenth session): w_fc carries the router's hi
     and lo rows, so ONE GEMM of 2R rows (x' hi, then x' lo) gives gate/up and the router's terms,
     and the act kernel forms the logits, the mask and the counts:
       prep (xn f32, xh, xl; counts zeroed) -> GEMM [gate; up; hi; lo] x [xh; xl] -> route + act -> down
   - otherwise the router and the mask run on the context's second stream beside the gate/up GEMM
     (they depend only on x'):
       main:  prep (xn f32, xh) -> fork -> gate/up GEMM -> join -> act under the mask -> down
       side:  the router GEMV on xn (linear_rowblock_kernel), router_mask_kernel (mask, counts)
     Measured and removed (twelfth session): the router, mask and counts in one kernel, and the
     router as an f32 cuBLAS GEMM (both slower at 8 rows), the side stream at the greatest
     priority (no change).
   The down GEMM accumulates into x (into c2, then the bias, when b_down). Everything is the op's
   contract (lte.h); the router is f32 (or hi + lo, ~f32) as on the CPU. */
inline lte_status blas_sparse_ffn(lte_ctx *ctx, const char *fn, lte_dtype wdtype, float *x, int x_mode,
                                  const float *nw, const float *nb, float eps, const float *w_router,
                                  const float *b_router, float threshold, const void *w_fc, const float *b_fc,
                                  const void *w_down_t, const float *b_down, float *xn, float *mask,
                                  int32_t *counts, int rows, int C, int F, int S, int act, bool router_rows) {
  // LTE_DEC_BLAS_ROUTER_ROWS=0: the side-stream router even when w_fc has the router rows
  const bool rr = router_rows && wdtype == LTE_DTYPE_F16 && env_int("LTE_DEC_BLAS_ROUTER_ROWS", 1, 0, 1);
  const int E = F / S, NW = act == LTE_DEC_ACT_SWIGLU ? 2 * F : F;
  const int GR = rr ? 2 * rows : rows, NC = rr ? NW + 2 * E : NW;  // the gate/up GEMM's rows and outputs
  const size_t xb = blas_align((size_t)GR * C * 2), cb = blas_align((size_t)GR * NC * 4);
  const size_t hb = blas_align((size_t)rows * F * 2), lb = rr ? 0 : blas_align((size_t)rows * E * 4);
  const size_t db = b_down ? blas_align((size_t)rows * C * 4) : 0;
  char *ws = static_cast<char *>(decode_scratch(ctx, kBlasWorkspace + xb + cb + hb + lb + db));
  if (!ws) return fail(ctx, LTE_STATUS_OUT_OF_MEMORY, fn, "cannot allocate the cuBLAS decode scratch");
  if (!rr && !decode_side(ctx)) return fail(ctx, LTE_STATUS_CUDA_ERROR, fn, "cannot create the decode side stream");
  char *p = ws + kBlasWorkspace;
  void *xh = p;
  void *xl = p + (size_t)rows * C * 2;  // rr: x' lo, right after xh (the GEMM's rows R..2R-1)
  float *c = reinterpret_cast<float *>(p + xb);
  void *hh = p + xb + cb;
  float *logits = reinterpret_cast<float *>(p + xb + cb + hb);
  float *c2 = reinterpret_cast<float *>(p + xb + cb + hb + lb);
  cudaStream_t st = ctx->stream, side = ctx->dec_side;
  // LTE_DEC_DIAG_MD (a diagnostic, WRONG results, for timing only): bit 0 skips the side-stream
  // router and mask (the mask is left as it was), bit 1 runs the down GEMM as if w_down_t were (C, F)
  const int diag = env_int("LTE_DEC_DIAG_MD", 0, 0, 3);
  const bool side_router = !rr && !(diag & 1);
  cudaError_t e = launch_blas_prep(wdtype, st, x, C, x_mode, nw, nb, eps, nullptr, S, 0, rows, xh, C, xn,
                                   rr ? xl : nullptr, rr ? counts : nullptr);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_prep_kernel", e, __FILE__, __LINE__);
  if (side_router) {  // side stream: router logits (f32 weights, x' = xn) and the hard mask
    if ((e = cudaEventRecord(ctx->dec_fork, st)) != cudaSuccess || (e = cudaStreamWaitEvent(side, ctx->dec_fork, 0)) != cudaSuccess)
      return cuda_fail(ctx, fn, "fork to the side stream", e, __FILE__, __LINE__);
    const LinArgs ra{w_router, xn, C, LTE_DEC_X_PLAIN, nullptr, nullptr, 0.0f, nullptr, nullptr,
                     0,        S,  b_router, logits,  E,       C,       0,    LTE_DEC_ACT_NONE};
    if ((e = launch_linear<float>(ra, rows, side, true)) != cudaSuccess)
      return cuda_fail(ctx, fn, "launch of the router GEMV", e, __FILE__, __LINE__);
    if ((e = dlaunch(router_mask_kernel, dim3(rows), dim3(256), 0, side, (const float *)logits, mask, counts, 1, E,
                     threshold)) != cudaSuccess)
      return cuda_fail(ctx, fn, "launch of router_mask_kernel", e, __FILE__, __LINE__);
    if ((e = cudaEventRecord(ctx->dec_join, side)) != cudaSuccess)
      return cuda_fail(ctx, fn, "cudaEventRecord (join)", e, __FILE__, __LINE__);
  }
  // main stream: gate/up of every expert (and the router's rows), then h under the mask
  lte_status s = gemm_half(ctx, fn, wdtype, false, GR, NC, C, w_fc, C, xh, 0.0f, c, NC, ws, kBlasWorkspace);
  if (s != LTE_STATUS_OK) return s;
  if (side_router && (e = cudaStreamWaitEvent(st, ctx->dec_join, 0)) != cudaSuccess)
    return cuda_fail(ctx, fn, "join of the side stream", e, __FILE__, __LINE__);
  const unsigned ag = grid_for(ctx, (int64_t)rows * F / 2);
  if (rr)
    e = dlaunch(blas_sffn_route_act_kernel<__half>, dim3(ag), dim3(kThreads), 0, st, (const float *)c, NC, NW, b_router,
                threshold, b_fc, mask, counts, E, S, act, static_cast<__half *>(hh), F, rows);
  else if (wdtype == LTE_DTYPE_F16)
    e = dlaunch(blas_sffn_act_kernel<__half>, dim3(ag), dim3(kThreads), 0, st, (const float *)c, NW, b_fc,
                (const float *)mask, E, S, act, static_cast<__half *>(hh), F, rows);
  else
    e = dlaunch(blas_sffn_act_kernel<__nv_bfloat16>, dim3(ag), dim3(kThreads), 0, st, (const float *)c, NW, b_fc,
                (const float *)mask, E, S, act, static_cast<__nv_bfloat16 *>(hh), F, rows);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of the masked-dense act kernel", e, __FILE__, __LINE__);
  s = gemm_half(ctx, fn, wdtype, !(diag & 2), rows, C, F, w_down_t, diag & 2 ? F : C, hh, b_down ? 0.0f : 1.0f,
                b_down ? c2 : x, C, ws, kBlasWorkspace);
  if (s != LTE_STATUS_OK || !b_down) return s;
  e = dlaunch(blas_epilogue_kernel, dim3(grid_for(ctx, (int64_t)rows * C)), dim3(kThreads), 0, st, (const float *)c2, C,
              b_down, (int)LTE_DEC_ACT_NONE, 1, (const float *)nullptr, 0, 1, x, C, rows);
  if (e != cudaSuccess) return cuda_fail(ctx, fn, "launch of blas_epilogue_kernel", e, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}
