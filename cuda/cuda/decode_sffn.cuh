/*
 * decode_sffn.cuh: lte_dec_sparse_ffn on the GPU (issue 9), included by decode.cu inside its
 * anonymous namespace after decode_gemv.cuh (uses its cvt8 / pdl helpers, and decode.cu's
 * env_int). The whole sparse FFN block of a decode step in two launches; semantics and CPU
 * reference: lte.h, cuda/cpu/decode.c.
 *
 * sffn_route_kernel<R, SPLIT>   x' = norm(x) and the hard router mask (the default route kernel).
 *   grid = ceil(E / (8 / SPLIT)) blocks of 8 warps; SPLIT warps (LTE_DEC_SFFN_RSPLIT 1, 2, 4;
 *   default 1) share expert e's row. Before griddepcontrol.wait (PDL) each lane loads its part of
 *   the expert's f32 router row into registers (up to kRoutePF float4 per lane = the whole row at
 *   C <= 4096): the router is a constant, so its bytes stream while the previous kernel finishes.
 *   Then every block loads the R rows of x into shared memory, reduces the norm statistics, forms
 *   x' in place (each block writes its slice of x' to global for the FFN kernel), and each warp
 *   reduces its dot products: mask[r, e] = x'[r] . w_router[e] + b_router[e] > threshold.
 * sffn_route1_kernel<SPLIT>   the same for one row without the shared-memory staging
 *   (LTE_DEC_SFFN_ROUTE=2; measured equal to the staged kernel, whose time is set by its router
 *   loads: docs/engine.md, fifth session).
 *
 * Then h and the down projection of every active neuron, in ONE launch. Both kernels below share
 * the frame: every block reads the mask (R x E), compacts the union of the rows' active experts in
 * shared memory (ballots; block 0 writes the per-row counts) and takes a contiguous, balanced
 * range of the union's NEURONS (nact * S split evenly: blocks differ by at most one neuron). A
 * neuron needs 3 weight rows (SwiGLU: gate row n, up row F + n, down row n of the transposed down
 * weight; GELU: 2). Each thread ends owning 16-byte column chunks of the output and adds them into
 * x (x is the residual; b_down added once), so neither h nor partial sums leave the SM except
 * through that add. The mask is the previous kernel's output, so no weight load can start before
 * griddepcontrol.wait; the kernels let their successor launch at once.
 *
 * sffn_ffn2_kernel<T, R, CPT, P1D>   (f16/bf16; default, LTE_DEC_SFFN_KERNEL=2) two phases, 2
 *   blocks of 8 warps per SM (LTE_DEC_SFFN_BPS2), described at the kernel: gate/up streamed per
 *   warp into registers, P1D items in flight per warp (LTE_DEC_SFFN_P1D 2 or 3, default 3 for one
 *   row), one barrier, down streamed per thread; then the add into x (sffn_ffn2_out): thread-block
 *   clusters of 2 (LTE_DEC_SFFN_CLUSTER; default: 2 for large layers, none for small ones) first
 *   sum their partials through distributed shared memory, halving the float4 atomics on x (all
 *   blocks add into the same C floats, and
 *   those same-address atomics cost ~8 us per 7B block when all 264 blocks add; clusters of 4 or 8
 *   do not fit at once on the H200's GPCs at 2 blocks per SM). LTE_DEC_SFFN_ATOM=1 adds with bulk
 *   (TMA) reductions instead (measured slower), 2 skips the adds (a diagnostic, wrong results).
 *   41.6 / 17.6 us per 7B FFN block at 50 / 10 % active on the H200 (docs/engine.md).
 *   Deterministic sums (the default since the eighteenth session, measured as fast): each neuron's
 *   gate/up piece sums are kept apart and added in piece order (no shared-memory atomics), and each
 *   cluster stores its sum into a.parts instead of adding it into x; sffn_reduce_kernel then adds the
 *   clusters' sums into x in cluster order, so a call's bits no longer depend on which block finishes
 *   first. LTE_DEC_SFFN_REDUCE=0 restores the float atomics unless LTE_OPTION_DETERMINISTIC is set.
 *
 * Tried and removed (docs/engine.md): the route kernel's work inside the FFN kernel behind a
 * grid-wide barrier (fourth session: slower at every sparsity); the first down rows staged in
 * shared memory by cp.async behind the first gate/up loads (fifth session: 1-3 us slower).
 *
 * LTE_DEC_SFFN_TRACE=1: per-block timeline records of both kernels (TlRec below).
 *
 * sffn_ffn_kernel<T, R, CPT, TH>   (f32 weights, or LTE_DEC_SFFN_KERNEL=1) the first design: the
 *   rows of `nps` neurons per stage stream into a ring of `nstg` shared-memory stages with cp.async
 *   (16 B per thread-copy, L2 only); thread t owns the column chunks t, t + TH, ... of every row,
 *   keeps x' of them in registers, forms partial gate/up dots from shared memory (warp shuffles,
 *   then per-warp sums in shared memory, h formed by warp 0), and applies the previous stage's down
 *   rows in the same phase: two __syncthreads per stage. Measured latency-bound on the H200 (one
 *   block of 8 warps per SM: 0.28 issued instructions per cycle per scheduler, 1.76 TB/s).
 *   Tuning (env): LTE_DEC_SFFN_NPS neurons per stage (1..4, default 2), LTE_DEC_SFFN_SMEM ring
 *   budget in KiB (default 192), LTE_DEC_SFFN_THREADS 256 / 512, LTE_DEC_SFFN_BPS blocks per SM,
 *   LTE_DEC_SFFN_HINT 0 none / 1 .L2::256B prefetch-size hint (default 1).
 */

constexpr int kRouteWarps = 8;   // warps (= experts) per block of sffn_route_kernel (2 measured slower:
                                 // 64 threads load x in 16 dependent rounds)
constexpr int kRoutePF = 32;     // float4 of a router row per lane held in registers (C <= 4096)
constexpr int kSfMaxE = 4096;    // experts per layer (shared-memory list); lte.h documents the limit
constexpr int kSfMaxC = 8192;    // d_model

/* 16 bytes of weights as f32: 8 halves or 4 floats. */
template <class T>
struct V16 {
  static constexpr int n = 8;
  static __device__ __forceinline__ void cvt(const uint4 &u, float (&f)[8]) { cvt8<T>(u, f); }
};
template <>
struct V16<float> {
  static constexpr int n = 4;
  static __device__ __forceinline__ void cvt(const uint4 &u, float (&f)[4]) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
  }
};

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int hint) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  if (hint == 1) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
  } else {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
/* cp.async.wait_group takes an immediate: the ring depth is a launch parameter, hence the switch. */
__device__ __forceinline__ void cp_async_wait(int pending) {
  switch (pending) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
  }
}

struct SffnArgs {
  float *x;          // (R, C) residual, += the block's output
  int mode;          // LTE_DEC_X_*
  const float *nw;   // norm weight (C) / bias (C)
  const float *nb;
  float eps;
  const float *wr;   // router (E, C) f32, bias (E) or NULL
  const float *br;
  float thr;
  const void *wfc;   // (F or 2F, C) wdtype, bias f32 or NULL
  const float *bfc;
  const void *wd;    // (F, C) wdtype: the down projection transposed, bias (C) f32 or NULL
  const float *bd;
  float *xn;         // (R, C) f32 out: x'
  float *mask;       // (R, E) f32 out
  int32_t *counts;   // (R) or NULL
  int C, F, S, E, act;
  int skip_router;  // LTE_DEC_SFFN_DIAG=1 (a diagnostic): the route kernels do not load w_router (read as 0)
  // deterministic sums (the default; LTE_DEC_SFFN_REDUCE=0 without LTE_OPTION_DETERMINISTIC: float
  // atomics; the two-phase kernel only): the (P, R, C) partial sums of the P = grid / csize clusters,
  // summed into x in order by sffn_reduce_kernel; NULL: atomics
  float *parts;
};

/* ------------------------------------------------------------------ timeline (diagnostic) */

/* LTE_DEC_SFFN_TRACE=1 (a diagnostic, never inside a graph): every block of both kernels records
   %globaltimer and clock64 at its phase boundaries (and its SM) into a device buffer, one slot per
   launch pair; after every kTlLaunches pairs a one-thread kernel printfs the records as
   "sffn tl <launch> <R|F> <block> <sm> <neurons> <ns...> <cycles...>" lines, which
   bench/sffn_timeline.ts turns into a per-launch timeline (when each phase starts and ends across
   the grid, and the gaps between the kernels). */
constexpr int kTlLaunches = 16;  // launch pairs per dump
constexpr int kTlBlocks = 512;   // blocks recorded per kernel
constexpr int kTlMarks = 10;     // marks per block
constexpr int kTlStride = 32;    // u64 per block record: ns[0..16), cycles[16..31), sm at 31

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/* A block's record: null when tracing is off or the block is past kTlBlocks. */
struct TlRec {
  unsigned long long *p;
  __device__ TlRec(unsigned long long *base) {
    p = base && blockIdx.x < kTlBlocks ? base + (size_t)blockIdx.x * kTlStride : nullptr;
    if (p && threadIdx.x == 0) {
      unsigned sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      p[31] = sm;
    }
  }
  __device__ __forceinline__ void mark(int i) const {
    if (p && threadIdx.x == 0) {
      p[i] = global_ns();
      p[16 + i] = (unsigned long long)clock64();
    }
  }
};

/* Prints `launches` recorded launch pairs (route = kind 0, FFN = kind 1) and clears nothing: the
   host clears the buffer after this kernel. */
__global__ void sffn_tl_dump_kernel(const unsigned long long *tl, int launches) {
  for (int L = 0; L < launches; L++) {
    for (int k = 0; k < 2; k++) {
      for (int b = 0; b < kTlBlocks; b++) {
        const unsigned long long *p = tl + (((size_t)L * 2 + k) * kTlBlocks + b) * kTlStride;
        if (p[0] == 0) continue;
        const unsigned long long c0 = p[16];
        auto dc = [&](int i) { return p[i] ? (long long)(p[16 + i] - c0) : -1ll; };
        printf("sffn tl %d %c %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %lld %lld %lld %lld %lld "
               "%lld %lld %lld %lld\n",
               L, k ? 'F' : 'R', b, p[31], p[30], p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], dc(1),
               dc(2), dc(3), dc(4), dc(5), dc(6), dc(7), dc(8), dc(9));
      }
    }
  }
}

/* ------------------------------------------------------------------ x' (shared by the kernels) */

/* The norm weight / bias float4 a thread of sffn_xprime transforms (q = tid + i * TH). They are
   constants: kernels load them before the PDL wait, so x' costs one dependent round trip (x). */
template <int TH>
struct NormRegs {
  static constexpr int n = (kSfMaxC / 4 + TH - 1) / TH;
  float4 w[n], b[n];
  __device__ __forceinline__ void load(const SffnArgs &a) {
    const int Q = a.C >> 2;
#pragma unroll
    for (int i = 0; i < n; i++) {
      const int q = threadIdx.x + i * TH;
      const bool in = q < Q && a.mode != LTE_DEC_X_PLAIN;
      w[i] = in ? __ldg(reinterpret_cast<const float4 *>(a.nw) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
      b[i] = in && a.mode == LTE_DEC_X_LAYERNORM ? __ldg(reinterpret_cast<const float4 *>(a.nb) + q)
                                                 : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
};

/* x' of 4 consecutive elements: (v - mean) * rstd * w + b (RMSNorm: mean 0, b 0). The one formula of
   both route kernels, so their x' agree bit for bit. */
__device__ __forceinline__ float4 sffn_norm4(float4 v, float mean, float rstd, const float4 &w, const float4 &b) {
  v.x = (v.x - mean) * rstd * w.x + b.x;
  v.y = (v.y - mean) * rstd * w.y + b.y;
  v.z = (v.z - mean) * rstd * w.z + b.z;
  v.w = (v.w - mean) * rstd * w.w + b.w;
  return v;
}

/* Block-wide: the R rows of x into xs (shared memory, R x C f32), then x' = the x_mode transform in
   place with the norm parameters nr (NormRegs::load). TH threads; every thread calls it; xs is
   complete at return. */
template <int R, int TH>
__device__ void sffn_xprime(const SffnArgs &a, int rows, float *xs, const NormRegs<TH> &nr) {
  __shared__ float red[TH / 32][2 * R];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int Q = a.C >> 2;  // float4 per row
  float s[R], ss[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    s[r] = ss[r] = 0.0f;
    if (r >= rows) continue;
    // a row's loads all issued before its stores: one round trip per row
    float4 v[NormRegs<TH>::n];
#pragma unroll
    for (int i = 0; i < NormRegs<TH>::n; i++) {
      const int q = threadIdx.x + i * TH;
      v[i] = q < Q ? __ldcg(reinterpret_cast<const float4 *>(a.x + (size_t)r * a.C) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < NormRegs<TH>::n; i++) {
      const int q = threadIdx.x + i * TH;
      if (q < Q) reinterpret_cast<float4 *>(xs + (size_t)r * a.C)[q] = v[i];
      s[r] += (v[i].x + v[i].y) + (v[i].z + v[i].w);
      ss[r] += (v[i].x * v[i].x + v[i].y * v[i].y) + (v[i].z * v[i].z + v[i].w * v[i].w);
    }
  }
  if (a.mode != LTE_DEC_X_PLAIN) {
    float mean[R], rstd[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      s[r] = warp_sum(s[r]);
      ss[r] = warp_sum(ss[r]);
      if (lane == 0) {
        red[warp][2 * r] = s[r];
        red[warp][2 * r + 1] = ss[r];
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; r++) {
      float ts = 0.0f, tss = 0.0f;
      for (int w = 0; w < TH / 32; w++) {
        ts += red[w][2 * r];
        tss += red[w][2 * r + 1];
      }
      if (a.mode == LTE_DEC_X_RMSNORM) {
        mean[r] = 0.0f;
        rstd[r] = 1.0f / sqrtf(tss / (float)a.C + a.eps);
      } else {
        mean[r] = ts / (float)a.C;
        float var = tss / (float)a.C - mean[r] * mean[r];
        if (var < 0.0f) var = 0.0f;
        rstd[r] = 1.0f / sqrtf(var + a.eps);
      }
    }
    // x' in place: the thread transforms exactly the float4 it stored above
#pragma unroll
    for (int i = 0; i < NormRegs<TH>::n; i++) {
      const int q = threadIdx.x + i * TH;
      if (q >= Q) break;
      const float4 w = nr.w[i], b = nr.b[i];
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (r >= rows) break;
        float4 *p = reinterpret_cast<float4 *>(xs + (size_t)r * a.C) + q;
        *p = sffn_norm4(*p, mean[r], rstd[r], w, b);
      }
    }
  }
  __syncthreads();
}

/* This block's slice of x' (xs) to global xn: every float4 of x' is written by exactly one block. */
template <int R, int TH>
__device__ void sffn_store_xn(const SffnArgs &a, int rows, const float *xs) {
  const int Q = a.C >> 2;
  const int per = (Q + gridDim.x - 1) / gridDim.x;
  const int q0 = blockIdx.x * per, q1 = min(Q, q0 + per);
  for (int q = q0 + threadIdx.x; q < q1; q += TH) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= rows) break;
      reinterpret_cast<float4 *>(a.xn + (size_t)r * a.C)[q] = reinterpret_cast<const float4 *>(xs + (size_t)r * a.C)[q];
    }
  }
}

/* h of neuron n from its gate/up (SwiGLU) or fc (GELU) dot products, biases added. */
__device__ __forceinline__ float sffn_h(const SffnArgs &a, int n, float g, float u) {
  if (a.act == LTE_DEC_ACT_SWIGLU) {
    if (a.bfc) {
      g += a.bfc[n];
      u += a.bfc[a.F + n];
    }
    return dsilu(g) * u;
  }
  return dgelu(g + (a.bfc ? a.bfc[n] : 0.0f));
}

/* ------------------------------------------------------------------ route */

/* SPLIT warps share an expert's router row (each holds 1 / SPLIT of it in registers): kRouteWarps /
   SPLIT experts per block, so SPLIT times as many blocks (SMs) stream the router weights.
   LTE_DEC_SFFN_RSPLIT = 1, 2 or 4. */
template <int R, int SPLIT>
__global__ void __launch_bounds__(kRouteWarps * 32) sffn_route_kernel(SffnArgs a, int rows, unsigned long long *tl) {
  extern __shared__ float4 rsm4[];
  float *xs = reinterpret_cast<float *>(rsm4);  // R x C: x, then x'
  __shared__ float part[kRouteWarps][R];        // SPLIT > 1: the warps' partial dots
  constexpr int PF = kRoutePF / SPLIT;          // router float4 per lane held in registers
  const TlRec rec(tl);
  rec.mark(0);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * (kRouteWarps / SPLIT) + warp / SPLIT, sp = warp % SPLIT;
  const bool own = e < a.E;
  const int Q = a.C >> 2;  // float4 per row
  const int q0 = Q * sp / SPLIT, q1 = Q * (sp + 1) / SPLIT;  // this warp's slice of the row
  const float4 *wrow = reinterpret_cast<const float4 *>(a.wr + (size_t)(own ? e : 0) * a.C);
  float4 wv[PF];
#pragma unroll
  for (int i = 0; i < PF; i++) {
    const int q = q0 + lane + 32 * i;
    wv[i] = own && q < q1 && !a.skip_router ? __ldcs(wrow + q) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  NormRegs<kRouteWarps * 32> nr;
  nr.load(a);
  pdl_launch_dependents();
  pdl_wait();
  rec.mark(1);
  sffn_xprime<R, kRouteWarps * 32>(a, rows, xs, nr);
  sffn_store_xn<R, kRouteWarps * 32>(a, rows, xs);
  rec.mark(2);
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (r >= rows || !own) break;
    const float4 *xr = reinterpret_cast<const float4 *>(xs + (size_t)r * a.C);
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < PF; i++) {
      const int q = q0 + lane + 32 * i;
      if (q < q1) {
        const float4 v = xr[q];
        acc += (wv[i].x * v.x + wv[i].y * v.y) + (wv[i].z * v.z + wv[i].w * v.w);
      }
    }
    for (int q = q0 + lane + 32 * PF; q < q1; q += 32) {  // C > 4096: the rest of the slice
      const float4 w = __ldcs(wrow + q), v = xr[q];
      acc += (w.x * v.x + w.y * v.y) + (w.z * v.z + w.w * v.w);
    }
    acc = warp_sum(acc);
    if (SPLIT == 1 && lane == 0) {
      const float logit = acc + (a.br ? a.br[e] : 0.0f);
      a.mask[(size_t)r * a.E + e] = logit > a.thr ? 1.0f : 0.0f;
    }
    if (SPLIT > 1 && lane == 0) part[warp][r] = acc;
  }
  if (SPLIT > 1) {
    __syncthreads();
    // the expert's first warp: lane r sums row r's parts in slice order
    if (own && sp == 0 && lane < rows) {
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < SPLIT; k++) acc += part[warp + k][lane];
      const float logit = acc + (a.br ? a.br[e] : 0.0f);
      a.mask[(size_t)lane * a.E + e] = logit > a.thr ? 1.0f : 0.0f;
    }
  }
  if (rec.p) {
    __syncthreads();
    rec.mark(3);
  }
}

/* sffn_route1_kernel<SPLIT>: the route kernel for ONE row without staging x in shared memory
   (LTE_DEC_SFFN_ROUTE=2). SPLIT warps share expert e's router row: warp part p loads w[e, slice p]
   into registers before the PDL wait (untouched until after it, so the wait does not wait for them),
   and after the wait x[slice p] and norm_w[slice p], and reduces sum w nw x, sum x and sum x^2 over
   its slice (LayerNorm also sum w nw and sum w nb). One barrier joins the parts: rstd (and the mean)
   follow from the sums, and
     RMSNorm:   logit = rstd * sum_k w[k] nw[k] x[k]
     LayerNorm: logit = rstd * (sum_k w[k] nw[k] x[k] - mean * sum_k w[k] nw[k]) + sum_k w[k] nb[k]
   (+ b_router) > threshold: the same x' as sffn_xprime, summed in another order. The warps of the
   block's first expert write the block's slice of x' from the x they hold. Every warp loads its
   slice of x, so every block has the statistics (also the last block, whose last warps own no
   expert). */
template <int SPLIT>
__global__ void __launch_bounds__(kRouteWarps * 32) sffn_route1_kernel(SffnArgs a, unsigned long long *tl) {
  constexpr int PF = kRoutePF / SPLIT;  // float4 of a slice per lane held in registers (C <= 4096)
  __shared__ float part[kRouteWarps][5];  // per warp: w nw x, sum x, sum x^2, sum w nw, sum w nb
  const TlRec rec(tl);
  rec.mark(0);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * (kRouteWarps / SPLIT) + warp / SPLIT, sp = warp % SPLIT;
  const bool own = e < a.E, norm = a.mode != LTE_DEC_X_PLAIN, ln = a.mode == LTE_DEC_X_LAYERNORM;
  const int Q = a.C >> 2;
  const int q0 = Q * sp / SPLIT, q1 = Q * (sp + 1) / SPLIT;
  const float4 *wrow = reinterpret_cast<const float4 *>(a.wr + (size_t)(own ? e : 0) * a.C);
  const float4 *x4 = reinterpret_cast<const float4 *>(a.x);
  const float4 *nw4 = reinterpret_cast<const float4 *>(a.nw), *nb4 = reinterpret_cast<const float4 *>(a.nb);
  const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f), one4 = make_float4(1.f, 1.f, 1.f, 1.f);
  float4 wv[PF];
#pragma unroll
  for (int i = 0; i < PF; i++) {
    const int q = q0 + lane + 32 * i;
    wv[i] = own && q < q1 && !a.skip_router ? __ldcs(wrow + q) : z4;
  }
  pdl_launch_dependents();
  pdl_wait();
  rec.mark(1);
  float4 xv[PF], nv[PF];
#pragma unroll
  for (int i = 0; i < PF; i++) {
    const int q = q0 + lane + 32 * i;
    xv[i] = q < q1 ? __ldcg(x4 + q) : z4;
    nv[i] = norm && q < q1 ? __ldg(nw4 + q) : one4;
  }
  float dot = 0.0f, sx = 0.0f, sxx = 0.0f, kw = 0.0f, kb = 0.0f;
  auto accum = [&](float4 w, const float4 &n, const float4 &v, int q) {
    if (ln) {
      const float4 b = __ldg(nb4 + q);
      kb += (w.x * b.x + w.y * b.y) + (w.z * b.z + w.w * b.w);
    }
    w.x *= n.x;
    w.y *= n.y;
    w.z *= n.z;
    w.w *= n.w;
    kw += (w.x + w.y) + (w.z + w.w);
    dot += (w.x * v.x + w.y * v.y) + (w.z * v.z + w.w * v.w);
    sx += (v.x + v.y) + (v.z + v.w);
    sxx += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
  };
#pragma unroll
  for (int i = 0; i < PF; i++) {
    const int q = q0 + lane + 32 * i;
    if (q < q1) accum(wv[i], nv[i], xv[i], q);
  }
  for (int q = q0 + lane + 32 * PF; q < q1; q += 32)  // C > 4096: the rest of the slice
    accum(own ? __ldcs(wrow + q) : z4, norm ? __ldg(nw4 + q) : one4, __ldcg(x4 + q), q);
  dot = warp_sum(dot);
  sx = warp_sum(sx);
  sxx = warp_sum(sxx);
  kw = warp_sum(kw);
  kb = warp_sum(kb);
  if (lane == 0) {
    part[warp][0] = dot;
    part[warp][1] = sx;
    part[warp][2] = sxx;
    part[warp][3] = kw;
    part[warp][4] = kb;
  }
  __syncthreads();
  // statistics of x from the block's first expert's parts (every warp loaded its slice of x)
  float tsx = 0.0f, tsxx = 0.0f;
#pragma unroll
  for (int k = 0; k < SPLIT; k++) {
    tsx += part[k][1];
    tsxx += part[k][2];
  }
  float mean = 0.0f, rstd = 1.0f;
  if (a.mode == LTE_DEC_X_RMSNORM) {
    rstd = 1.0f / sqrtf(tsxx / (float)a.C + a.eps);
  } else if (ln) {
    mean = tsx / (float)a.C;
    float var = tsxx / (float)a.C - mean * mean;
    if (var < 0.0f) var = 0.0f;
    rstd = 1.0f / sqrtf(var + a.eps);
  }
  rec.mark(2);
  if (own && sp == 0 && lane == 0) {
    float d = 0.0f, w1 = 0.0f, wb = 0.0f;
#pragma unroll
    for (int k = 0; k < SPLIT; k++) {
      d += part[warp + k][0];
      w1 += part[warp + k][3];
      wb += part[warp + k][4];
    }
    const float logit = (norm ? rstd * (d - mean * w1) + wb : d) + (a.br ? a.br[e] : 0.0f);
    a.mask[e] = logit > a.thr ? 1.0f : 0.0f;
  }
  // this block's slice of x' (every float4 of x' written by exactly one block), from registers
  if (warp < SPLIT) {
    const int per = (Q + gridDim.x - 1) / gridDim.x;
    const int s0 = blockIdx.x * per, s1 = min(Q, s0 + per);
    auto put = [&](int q, float4 v, const float4 &n) {
      if (norm) {
        const float4 b = ln ? __ldg(nb4 + q) : z4;
        v = sffn_norm4(v, mean, rstd, n, b);
      }
      reinterpret_cast<float4 *>(a.xn)[q] = v;
    };
#pragma unroll
    for (int i = 0; i < PF; i++) {
      const int q = q0 + lane + 32 * i;
      if (q < q1 && q >= s0 && q < s1) put(q, xv[i], nv[i]);
    }
    for (int q = q0 + lane + 32 * PF; q < q1; q += 32)  // C > 4096
      if (q >= s0 && q < s1) put(q, __ldcg(x4 + q), norm ? __ldg(nw4 + q) : one4);
  }
  if (rec.p) {
    __syncthreads();
    rec.mark(3);
  }
}

/* ------------------------------------------------------------------ gate/up + act + down */

/* ------------------------------------------------------------------ shared by the FFN kernels */

/* Block-wide: the union of the rows' active experts, ascending, into list (shared memory), the
   per-row flags into on (R, E) (unless the caller stored them: from = rows * E), and each row's count
   added into cnt (zeroed here; complete after the caller's next barrier). Returns the union size.
   TH threads; every thread calls it. */
template <int R, int TH>
__device__ int sffn_union(const SffnArgs &a, int rows, int *list, unsigned char *on, int *wtot, int *cnt,
                          int from = 0) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid < R) cnt[tid] = 0;
  // the (R, E) mask into `on` first, loads before stores: one L2 round trip per 4 * TH entries
  for (int i0 = from + tid; i0 < rows * a.E; i0 += 4 * TH) {
    float v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = i0 + k * TH < rows * a.E ? __ldcg(a.mask + i0 + k * TH) : 0.0f;
#pragma unroll
    for (int k = 0; k < 4; k++)
      if (i0 + k * TH < rows * a.E) on[i0 + k * TH] = v[k] != 0.0f;
  }
  __syncthreads();
  int mine[R];
#pragma unroll
  for (int r = 0; r < R; r++) mine[r] = 0;
  int base = 0;
  for (int e0 = 0; e0 < a.E; e0 += TH) {
    const int e = e0 + tid;
    bool any = false;
    if (e < a.E) {
#pragma unroll
      for (int r = 0; r < R; r++) {
        if (r >= rows) break;
        const bool o = on[r * a.E + e];
        any |= o;
        mine[r] += o;
      }
    }
    const unsigned b = __ballot_sync(0xffffffffu, any);
    if (lane == 0) wtot[warp] = __popc(b);
    __syncthreads();
    int off = 0, tot = 0;
#pragma unroll
    for (int w = 0; w < TH / 32; w++) {
      const int t = wtot[w];
      off += w < warp ? t : 0;
      tot += t;
    }
    if (any) list[base + off + __popc(b & ((1u << lane) - 1u))] = e;
    base += tot;
    __syncthreads();  // wtot is rewritten next round
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int c = warp_sum(mine[r]);
    if (lane == 0 && c) atomicAdd(&cnt[r], c);
  }
  return base;
}

/* x[r, columns of chunk c = tid + j * TH] += yacc[r][j] (+ b_down once, by block 0): float4 atomics
   (x is the residual every block adds into). VPC values per 16-byte chunk. */
template <int R, int CPT, int VPC, int TH>
__device__ void sffn_add_out(const SffnArgs &a, int rows, int cpr, const float (&yacc)[R][CPT][VPC], bool bias) {
#pragma unroll
  for (int j = 0; j < CPT; j++) {
    const int c = threadIdx.x + j * TH;
    if (c >= cpr) continue;
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= rows) break;
#pragma unroll
      for (int v0 = 0; v0 < VPC; v0 += 4) {
        const int col = c * VPC + v0;
        float4 add = make_float4(yacc[r][j][v0], yacc[r][j][v0 + 1], yacc[r][j][v0 + 2], yacc[r][j][v0 + 3]);
        if (bias) {
          add.x += a.bd[col];
          add.y += a.bd[col + 1];
          add.z += a.bd[col + 2];
          add.w += a.bd[col + 3];
        }
        float *dst = a.x + (size_t)r * a.C + col;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        atomicAdd(reinterpret_cast<float4 *>(dst), add);
#else
        atomicAdd(dst, add.x);
        atomicAdd(dst + 1, add.y);
        atomicAdd(dst + 2, add.z);
        atomicAdd(dst + 3, add.w);
#endif
      }
    }
  }
}

constexpr int kSfMaxNps = 4;  // neurons per ring stage (LTE_DEC_SFFN_NPS)

template <class T, int R, int CPT, int TH>
__global__ void __launch_bounds__(TH, TH == 256 && R <= 2 ? 2 : 1)
    sffn_ffn_kernel(SffnArgs a, int rows, int nstg, int hint, int nps) {
  constexpr int kSfThreads = TH, kSfWarps = TH / 32;
  constexpr int VPC = V16<T>::n;  // values per 16-byte chunk
  constexpr int NPM = R >= 4 ? 2 : kSfMaxNps;  // neurons per stage at most (registers: 4 rows)
  extern __shared__ float4 fsm4[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int rpn = swi ? 3 : 2;                        // weight rows per neuron
  const size_t rowb = (size_t)a.C * sizeof(T);        // bytes per weight row (multiple of 16)
  const int cpr = (int)(rowb / 16);                   // 16-byte chunks per row
  const size_t neur_b = (size_t)rpn * rowb;           // one neuron's rows in a stage
  const size_t stage_b = (size_t)nps * neur_b;
  char *stg = reinterpret_cast<char *>(fsm4);         // nstg stages of nps neurons
  int *list = reinterpret_cast<int *>(stg + (size_t)nstg * stage_b);  // union of active experts
  unsigned char *on = reinterpret_cast<unsigned char *>(list + a.E);  // (R, E): expert on for row r
  __shared__ float red[2][kSfWarps][kSfMaxNps][R][2];  // per-warp dot sums, double-buffered by parity
  __shared__ int wtot[kSfWarps];
  __shared__ float hbuf[2][kSfMaxNps][R];  // h of a stage (warp 0 forms it), double-buffered by parity
  __shared__ int cnt[R];

  // the mask is the previous kernel's output: nothing to load before the wait
  pdl_launch_dependents();
  pdl_wait();

  // 1. union of the rows' active experts, ascending (block-wide stream compaction)
  const int nact = sffn_union<R, kSfThreads>(a, rows, list, on, wtot, cnt);
  __syncthreads();
  if (blockIdx.x == 0 && a.counts && tid < rows) a.counts[tid] = cnt[tid];

  // 2. this block's neurons [u0, u1) of the union's nact * S, in stages of nps neurons
  const long long NN = (long long)nact * a.S;
  const int u0 = (int)(NN * blockIdx.x / gridDim.x), u1 = (int)(NN * (blockIdx.x + 1) / gridDim.x);
  const int nmine = u1 - u0;
  const bool bias_here = blockIdx.x == 0 && a.bd != nullptr;
  if (nmine == 0 && !bias_here) return;
  const int nst = (nmine + nps - 1) / nps;

  const char *wfc = static_cast<const char *>(a.wfc), *wd = static_cast<const char *>(a.wd);
  auto neuron = [&](int k) {  // global neuron index of this block's k-th neuron
    const int u = u0 + k;
    return list[u / a.S] * a.S + u % a.S;
  };
  auto issue = [&](int st) {  // stage st's neurons into ring slot st % nstg
    if (st < nst) {
      char *dst0 = stg + (size_t)(st % nstg) * stage_b;
      for (int i = 0; i < nps; i++) {
        const int k = st * nps + i;
        if (k >= nmine) break;
        const int n = neuron(k);
        char *dst = dst0 + (size_t)i * neur_b;
        const char *src0 = wfc + (size_t)n * rowb;
        const char *src1 = swi ? wfc + (size_t)(a.F + n) * rowb : wd + (size_t)n * rowb;
        const char *src2 = wd + (size_t)n * rowb;
        for (int c = tid; c < cpr; c += kSfThreads) {
          cp_async16(dst + c * 16, src0 + c * 16, hint);
          cp_async16(dst + rowb + c * 16, src1 + c * 16, hint);
          if (swi) cp_async16(dst + 2 * rowb + c * 16, src2 + c * 16, hint);
        }
      }
    }
    cp_async_commit();  // one group per stage slot, empty past the end: the wait count stays uniform
  };
  for (int st = 0; st < nstg - 1; st++) issue(st);

  // x' of this thread's columns, and its output accumulators
  float xr[R][CPT][VPC], yacc[R][CPT][VPC];
#pragma unroll
  for (int j = 0; j < CPT; j++) {
    const int c = tid + j * kSfThreads;
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
      for (int v = 0; v < VPC; v++) {
        yacc[r][j][v] = 0.0f;
        xr[r][j][v] = (c < cpr && r < rows) ? __ldcg(a.xn + (size_t)r * a.C + c * VPC + v) : 0.0f;
      }
    }
  }

  // y += h * down rows of stage st's first `cnt` neurons (in their ring slot)
  auto down = [&](int st, int cnt) {
    float hs[NPM][R];
#pragma unroll
    for (int i = 0; i < NPM; i++)
#pragma unroll
      for (int r = 0; r < R; r++) hs[i][r] = hbuf[st & 1][i][r];
    const char *slot = stg + (size_t)(st % nstg) * stage_b + (size_t)(rpn - 1) * rowb;
#pragma unroll
    for (int i = 0; i < NPM; i++) {
      if (i >= cnt) break;
      const char *row = slot + (size_t)i * neur_b;
#pragma unroll
      for (int j = 0; j < CPT; j++) {
        const int c = tid + j * kSfThreads;
        if (c < cpr) {
          float w[VPC];
          V16<T>::cvt(*reinterpret_cast<const uint4 *>(row + c * 16), w);
#pragma unroll
          for (int r = 0; r < R; r++)
#pragma unroll
            for (int v = 0; v < VPC; v++) yacc[r][j][v] += hs[i][r] * w[v];
        }
      }
    }
  };

  for (int st = 0; st < nst; st++) {
    cp_async_wait(nstg - 2);
    __syncthreads();  // stage st is in shared memory; every thread is past iteration st - 1
    const int cnt_st = min(nps, nmine - st * nps);
    const char *slot = stg + (size_t)(st % nstg) * stage_b;
    float pg[NPM][R], pu[NPM][R];
#pragma unroll
    for (int i = 0; i < NPM; i++) {
#pragma unroll
      for (int r = 0; r < R; r++) pg[i][r] = pu[i][r] = 0.0f;
      if (i >= cnt_st) continue;
      const char *buf = slot + (size_t)i * neur_b;
#pragma unroll
      for (int j = 0; j < CPT; j++) {
        const int c = tid + j * kSfThreads;
        if (c < cpr) {
          float g[VPC], u[VPC];
          V16<T>::cvt(*reinterpret_cast<const uint4 *>(buf + c * 16), g);
          if (swi) V16<T>::cvt(*reinterpret_cast<const uint4 *>(buf + rowb + c * 16), u);
#pragma unroll
          for (int r = 0; r < R; r++) {
#pragma unroll
            for (int v = 0; v < VPC; v++) {
              pg[i][r] += g[v] * xr[r][j][v];
              if (swi) pu[i][r] += u[v] * xr[r][j][v];
            }
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < NPM; i++) {
      if (i >= cnt_st) break;
#pragma unroll
      for (int r = 0; r < R; r++) {
        pg[i][r] = warp_sum(pg[i][r]);
        if (swi) pu[i][r] = warp_sum(pu[i][r]);
        if (lane == 0) {
          red[st & 1][warp][i][r][0] = pg[i][r];
          red[st & 1][warp][i][r][1] = pu[i][r];
        }
      }
    }
    if (st > 0) down(st - 1, nps);  // stages before the last are full
    __syncthreads();  // the warp sums of stage st are complete; ring slot (st - 1) % nstg is free
    issue(st + nstg - 1);
    // h of stage st: lane (i, r) of warp 0 sums the 8..16 warp partials (read at the next stage,
    // after its first barrier)
    if (warp == 0 && lane < NPM * R) {
      const int i = lane / R, r = lane % R;
      if (i < cnt_st) {
        const int n = neuron(st * nps + i);
        float g = 0.0f, u = 0.0f;
#pragma unroll
        for (int w = 0; w < kSfWarps; w++) {
          g += red[st & 1][w][i][r][0];
          u += red[st & 1][w][i][r][1];
        }
        hbuf[st & 1][i][r] = (r < rows && on[r * a.E + n / a.S]) ? sffn_h(a, n, g, u) : 0.0f;
      }
    }
  }
  __syncthreads();  // the last stage's h
  if (nst > 0) down(nst - 1, nmine - (nst - 1) * nps);
  cp_async_wait(0);

  // 3. this block's share of x += h W_down (+ b_down once, by block 0)
  sffn_add_out<R, CPT, VPC, kSfThreads>(a, rows, cpr, yacc, bias_here);
}


constexpr int kSf2Threads = 256;
constexpr int kSf2Warps = kSf2Threads / 32;
constexpr int kSf2Depth = 8;  // down rows in flight per thread

/* gdst[0 .. bytes) += ssrc[0 .. bytes) as f32, added by the TMA unit (cp.reduce.async.bulk: one
   bulk request instead of bytes / 16 float4 atomics), waiting until it is done. One thread per call;
   the shared-memory writes before it need fence.proxy.async and a barrier. bytes % 16 == 0, both
   addresses 16-byte aligned. */
__device__ __forceinline__ void sffn_bulk_add(float *gdst, const float *ssrc, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned s = (unsigned)__cvta_generic_to_shared(ssrc);
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;" ::"l"(gdst), "r"(s),
               "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
#endif
}

/* Rows [0, rows) x float4 columns [q0, q1) of part (shared, (R, C)) added into x by bulk
   reductions of up to 4 KiB, one per thread. Every thread calls it (barrier inside). */
__device__ void sffn_bulk_add_rows(const SffnArgs &a, int rows, const float *part, int q0, int q1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  constexpr int kChunk = 256;  // float4 per bulk request (4 KiB)
  const int per_row = (q1 - q0 + kChunk - 1) / kChunk;
  for (int i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
    const int r = i / per_row, c0 = q0 + (i - r * per_row) * kChunk, c1 = min(q1, c0 + kChunk);
    sffn_bulk_add(a.x + (size_t)r * a.C + 4 * c0, part + (size_t)r * a.C + 4 * c0, (unsigned)(c1 - c0) * 16u);
  }
#endif
}

/* x += this block's partial output yacc (+ b_down once). csize == 1: float4 atomics (atom 0) or
   bulk reductions of the whole partial through shared memory (atom 1). csize > 1 (sm_90):
   thread-block clusters of n = csize blocks first reduce their partials through distributed shared
   memory, so x receives grid / n adds per element instead of grid: each block stores its partial
   (R, C) into part (its own shared memory; x' is dead by now), then block k of the cluster sums
   column slice k over the n blocks (+ b_down in the first cluster) and adds it into x with atomics
   (atom 0) or bulk reductions (atom 1). Every block of a cluster calls it (no early exit).
   atom 2 skips the adds (LTE_DEC_SFFN_ATOM=2, a diagnostic of what they cost); atom 3
   (deterministic mode) stores the cluster's (or block's) sum into a.parts for sffn_reduce_kernel. */
template <int R, int CPT>
__device__ void sffn_ffn2_out(const SffnArgs &a, int rows, float *part, const float (&yacc)[R][CPT][8], int csize,
                              int atom, bool bias_here, bool relaxed_exit) {
  const int tid = threadIdx.x, C = a.C, cpr = C / 8, Q = C / 4;
  if (csize == 1 && atom == 0) {
    sffn_add_out<R, CPT, 8, kSf2Threads>(a, rows, cpr, yacc, bias_here);
    return;
  }
  if (csize == 1 && atom == 2) return;
  // the partial (+ the bias, csize == 1) into shared memory, or (csize == 1, atom 3: deterministic)
  // into this block's (R, C) slot of a.parts
  const bool bias1 = csize == 1 && bias_here, to_parts = csize == 1 && atom == 3;
  float *dst0 = to_parts ? a.parts + (size_t)blockIdx.x * R * C : part;
#pragma unroll
  for (int j = 0; j < CPT; j++) {
    const int c = tid + j * kSf2Threads;
    if (c >= cpr) continue;
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= rows) break;
      float v[8];
#pragma unroll
      for (int i = 0; i < 8; i++) v[i] = yacc[r][j][i] + (bias1 ? a.bd[c * 8 + i] : 0.0f);
      float4 *dst = reinterpret_cast<float4 *>(dst0 + (size_t)r * C) + 2 * c;
      dst[0] = make_float4(v[0], v[1], v[2], v[3]);
      dst[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  }
  if (to_parts) return;
  if (csize == 1) {  // atom 1
    sffn_bulk_add_rows(a, rows, part, 0, Q);
    return;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cl = cg::this_cluster();
  cl.sync();
  const int n = (int)cl.num_blocks(), k = (int)cl.block_rank();
  const int q0 = Q * k / n, q1 = Q * (k + 1) / n, per = q1 - q0;
  const bool bias = a.bd != nullptr && blockIdx.x < (unsigned)n;  // the first cluster
  for (int i = tid; atom != 2 && i < rows * per; i += kSf2Threads) {
    const int r = i / per, q = q0 + i - r * per;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int b = 0; b < n; b++) {
      const float4 v = *(reinterpret_cast<const float4 *>(cl.map_shared_rank(part, b) + (size_t)r * C) + q);
      s.x += v.x;
      s.y += v.y;
      s.z += v.z;
      s.w += v.w;
    }
    if (bias) {
      const float4 bv = reinterpret_cast<const float4 *>(a.bd)[q];
      s.x += bv.x;
      s.y += bv.y;
      s.z += bv.z;
      s.w += bv.w;
    }
    float4 *dst = reinterpret_cast<float4 *>(a.x + (size_t)r * C) + q;
    if (atom == 0) atomicAdd(dst, s);
    else if (atom == 3) reinterpret_cast<float4 *>(a.parts + ((size_t)(blockIdx.x / n) * R + r) * C)[q] = s;
    else reinterpret_cast<float4 *>(part + (size_t)r * C)[q] = s;  // own slice: read only by this thread
  }
  if (atom == 1) sffn_bulk_add_rows(a, rows, part, q0, q1);
  // no block leaves (freeing its shared memory) while another still reads it. That needs no memory
  // ordering: a relaxed arrive does not wait for this thread's atomics to complete, which a release
  // (cl.sync) does (Nsight Compute: "membar" stalls, docs/results/ncu_sffn_stalls_h200.txt).
  // LTE_DEC_SFFN_CSYNC=1 keeps the release (the A/B).
  if (relaxed_exit) {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  } else {
    cl.sync();
  }
#endif
}

/* ------------------------------------------------------------------ gate/up + act + down, two phases */

/* sffn_ffn2_kernel<T, R, CPT, P1D> (f16/bf16; LTE_DEC_SFFN_KERNEL=2, the default for them): the same
   work split as sffn_ffn_kernel (a balanced range of the union's neurons per block, 2 blocks per SM)
   but streamed like the decode GEMVs, with no barrier per neuron:
   phase 1 (gate/up): items = (neuron, piece of 1024 columns); the block's 8 warps take items round
     robin, each lane loads 4 x 16 B of the gate and up rows of its item straight into registers
     (ld.global.nc, P1D items in flight: the next items' loads are out while this one is reduced), dots
     with x' from shared memory, warp-reduces and adds the partial sums into shared memory. (Pieces
     of 512 columns with 4 in flight per warp, which would give every warp of a block the same item
     count, measured 55.6 us per block at 50 %; this design 45.5-49.9 in the calls around it.);
   phase 2 (down): after one barrier the block forms h of its neurons, then thread t streams its
     16-byte column chunks of the neurons' down rows (a ring of kSf2Depth neurons in registers; the
     first loads are issued before that barrier) into f32 accumulators, and adds them into x
     (sffn_ffn2_out: summed over a cluster of csize blocks first, then float4 atomics).
   LTE_DEC_SFFN_TRACE=1: the timeline records above (TlRec). */

template <class T, int R, int CPT, int P1D>
__global__ void __launch_bounds__(kSf2Threads, 2)
    sffn_ffn2_kernel(SffnArgs a, int rows, int maxmine, int csize, int atom, unsigned long long *tl) {
  extern __shared__ float4 f2sm4[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int C = a.C, cpr = C / 8;                      // 16-byte chunks per row
  const bool det = (atom & 3) == 3;                     // deterministic mode (a.parts)
  const int P = (cpr + 127) / 128;                      // phase-1 pieces per neuron
  float *xs = reinterpret_cast<float *>(f2sm4);         // (R, C) x'
  float *hsum = xs + (size_t)R * C;                     // (maxmine, R, 2): gate / up sums, then h
  // det: (maxmine, P, R, 2) per-piece sums, added in piece order (no shared-memory atomics)
  float *hsp = hsum + (size_t)maxmine * R * 2;
  int *list = reinterpret_cast<int *>(hsp + (det ? (size_t)maxmine * P * R * 2 : 0));  // union of active experts
  unsigned char *on = reinterpret_cast<unsigned char *>(list + a.E);    // (R, E)
  __shared__ int wtot[kSf2Warps];
  __shared__ int cnt[R];
  const TlRec rec(tl);  // LTE_DEC_SFFN_TRACE
  rec.mark(0);

  pdl_launch_dependents();
  pdl_wait();
  rec.mark(1);
  // the mask's first 4 x 256 entries, then x' rows: every load issued before the first store
  const int ME = rows * a.E, mfirst = ME < 4 * kSf2Threads ? ME : 4 * kSf2Threads;
  float mv[4];
#pragma unroll
  for (int k = 0; k < 4; k++) mv[k] = tid + k * kSf2Threads < mfirst ? __ldcg(a.mask + tid + k * kSf2Threads) : 0.0f;
  for (int q0 = tid; q0 < R * (C / 4); q0 += 4 * kSf2Threads) {
    float4 v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const int q = q0 + k * kSf2Threads;
      v[k] = q < rows * (C / 4) ? __ldcg(reinterpret_cast<const float4 *>(a.xn) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
      if (q0 + k * kSf2Threads < R * (C / 4)) reinterpret_cast<float4 *>(xs)[q0 + k * kSf2Threads] = v[k];
  }
#pragma unroll
  for (int k = 0; k < 4; k++)
    if (tid + k * kSf2Threads < mfirst) on[tid + k * kSf2Threads] = mv[k] != 0.0f;
  const int nact = sffn_union<R, kSf2Threads>(a, rows, list, on, wtot, cnt, mfirst);
  const long long NN = (long long)nact * a.S;
  const int u0 = (int)(NN * blockIdx.x / gridDim.x), u1 = (int)(NN * (blockIdx.x + 1) / gridDim.x);
  const int nmine = u1 - u0;
  const bool bias_here = blockIdx.x == 0 && a.bd != nullptr;
  for (int i = tid; i < nmine * R * 2; i += kSf2Threads) hsum[i] = 0.0f;
  __syncthreads();
  if (blockIdx.x == 0 && a.counts && tid < rows) a.counts[tid] = cnt[tid];
  rec.mark(2);
  if (rec.p && tid == 0) rec.p[30] = (unsigned long long)nmine;
  // (a cluster's blocks all reach its barriers; det: every block stores its partial, zeros here)
  if (nmine == 0 && !bias_here && csize == 1 && !det) return;

  const T *wfc = static_cast<const T *>(a.wfc), *wd = static_cast<const T *>(a.wd);
  auto neuron = [&](int k) {
    const int u = u0 + k;
    return list[u / a.S] * a.S + u % a.S;
  };

  // phase 1: gate/up partial dots, items (neuron k, piece p of 128 chunks)
  const int items = nmine * P;
  const uint4 z = make_uint4(0u, 0u, 0u, 0u);
  uint4 gbuf[P1D][4], ubuf[P1D][4];  // P1D items in flight per warp
  auto load = [&](int it, uint4 (&g)[4], uint4 (&u)[4]) {
    const int k = it / P, p = it - k * P;
    const int n = neuron(k);
    const T *grow = wfc + (size_t)n * C;
    const T *urow = wfc + (size_t)(swi ? a.F + n : n) * C;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int q = p * 128 + i * 32 + lane;
      g[i] = q < cpr ? ld_stream(grow + (size_t)q * 8) : z;
      u[i] = swi && q < cpr ? ld_stream(urow + (size_t)q * 8) : z;
    }
  };
  auto compute = [&](int it, const uint4 (&g)[4], const uint4 (&u)[4]) {
    const int k = it / P, p = it - k * P;
    float sg[R], su[R];
#pragma unroll
    for (int r = 0; r < R; r++) sg[r] = su[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int q = p * 128 + i * 32 + lane;
      if (q < cpr) {
        float gf[8], uf[8];
        cvt8<T>(g[i], gf);
        cvt8<T>(u[i], uf);
#pragma unroll
        for (int r = 0; r < R; r++) {
          const float4 x0 = reinterpret_cast<const float4 *>(xs + (size_t)r * C)[2 * q];
          const float4 x1 = reinterpret_cast<const float4 *>(xs + (size_t)r * C)[2 * q + 1];
          sg[r] += (gf[0] * x0.x + gf[1] * x0.y) + (gf[2] * x0.z + gf[3] * x0.w) + (gf[4] * x1.x + gf[5] * x1.y) +
                   (gf[6] * x1.z + gf[7] * x1.w);
          su[r] += (uf[0] * x0.x + uf[1] * x0.y) + (uf[2] * x0.z + uf[3] * x0.w) + (uf[4] * x1.x + uf[5] * x1.y) +
                   (uf[6] * x1.z + uf[7] * x1.w);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      sg[r] = warp_sum(sg[r]);
      if (swi) su[r] = warp_sum(su[r]);
      if (lane == 0 && r < rows && det) {
        hsp[(((size_t)k * P + p) * R + r) * 2] = sg[r];
        hsp[(((size_t)k * P + p) * R + r) * 2 + 1] = su[r];
      } else if (lane == 0 && r < rows) {
        atomicAdd(&hsum[((size_t)k * R + r) * 2], sg[r]);
        if (swi) atomicAdd(&hsum[((size_t)k * R + r) * 2 + 1], su[r]);
      }
    }
  };
  {
    int it = warp;
#pragma unroll
    for (int d = 0; d < P1D; d++)
      if (it + d * kSf2Warps < items) load(it + d * kSf2Warps, gbuf[d], ubuf[d]);
    while (it < items) {
#pragma unroll
      for (int d = 0; d < P1D; d++) {
        if (it < items) {
          compute(it, gbuf[d], ubuf[d]);
          if (it + P1D * kSf2Warps < items) load(it + P1D * kSf2Warps, gbuf[d], ubuf[d]);
        }
        it += kSf2Warps;
      }
    }
  }
  rec.mark(3);  // warp 0's phase 1 done

  // phase 2: the first down rows go out before the barrier (they do not depend on h)
  uint4 ring[kSf2Depth][CPT];
  auto loadd = [&](int k, uint4 (&w)[CPT]) {
    const T *row = wd + (size_t)neuron(k) * C;
#pragma unroll
    for (int j = 0; j < CPT; j++) {
      const int c = tid + j * kSf2Threads;
      w[j] = c < cpr ? ld_stream(row + (size_t)c * 8) : z;
    }
  };
#pragma unroll
  for (int q = 0; q < kSf2Depth; q++)
    if (q < nmine) loadd(q, ring[q]);
  __syncthreads();  // every gate/up partial sum is in hsum
  rec.mark(4);
  for (int i = tid; i < nmine * R; i += kSf2Threads) {
    const int k = i / R, r = i - k * R;
    const int n = neuron(k);
    if (det && r < rows) {  // the pieces' sums in piece order
      float g = 0.0f, u = 0.0f;
      for (int q = 0; q < P; q++) {
        g += hsp[(((size_t)k * P + q) * R + r) * 2];
        u += swi ? hsp[(((size_t)k * P + q) * R + r) * 2 + 1] : 0.0f;
      }
      hsum[2 * i] = g;
      hsum[2 * i + 1] = u;
    }
    hsum[2 * i] = (r < rows && on[r * a.E + n / a.S]) ? sffn_h(a, n, hsum[2 * i], hsum[2 * i + 1]) : 0.0f;
  }
  __syncthreads();
  rec.mark(5);
  float yacc[R][CPT][8];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int j = 0; j < CPT; j++)
#pragma unroll
      for (int v = 0; v < 8; v++) yacc[r][j][v] = 0.0f;
  for (int k0 = 0; k0 < nmine; k0 += kSf2Depth) {
#pragma unroll
    for (int q = 0; q < kSf2Depth; q++) {
      const int k = k0 + q;
      if (k >= nmine) break;
      float h[R];
#pragma unroll
      for (int r = 0; r < R; r++) h[r] = hsum[((size_t)k * R + r) * 2];
#pragma unroll
      for (int j = 0; j < CPT; j++) {
        float w[8];
        cvt8<T>(ring[q][j], w);
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
          for (int v = 0; v < 8; v++) yacc[r][j][v] += h[r] * w[v];
      }
      if (k + kSf2Depth < nmine) loadd(k + kSf2Depth, ring[q]);
    }
  }
  rec.mark(6);  // thread 0's phase 2 done
  // x += this block's share (+ b_down once, by block 0)
  sffn_ffn2_out<R, CPT>(a, rows, xs, yacc, csize, atom & 3, bias_here, (atom & 4) == 0);
  rec.mark(7);
  if (rec.p) {
    __syncthreads();
    rec.mark(8);  // every thread's atomics issued
  }
}

/* ------------------------------------------------------------------ deterministic mode */

/* x[r, :] += the P partial sums of a.parts ((P, R, C): one per cluster of the two-phase kernel,
   b_down inside the first), summed in partial order: the op's result no longer depends on the
   order in which blocks finish (float atomics do). Block = kRedCols float4 columns x kRedSlices
   slices; slice s sums partials s, s + kRedSlices, ... in order, then the column's slice-0 thread
   sums the slices in order and adds the total into x (one writer per element). grid = (columns /
   kRedCols, rows). */
constexpr int kRedCols = 8, kRedSlices = 32;
__global__ void __launch_bounds__(kRedCols * kRedSlices)
    sffn_reduce_kernel(const float *parts, int P, int R, float *x, int C) {
  __shared__ float4 s_part[kRedSlices][kRedCols];
  pdl_launch_dependents();
  pdl_wait();
  const int Q = C / 4, col = threadIdx.x % kRedCols, sl = threadIdx.x / kRedCols;
  const int r = blockIdx.y, q = blockIdx.x * kRedCols + col;
  const float4 *p4 = reinterpret_cast<const float4 *>(parts);
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
  if (q < Q) {
#pragma unroll 8
    for (int p = sl; p < P; p += kRedSlices) {
      const float4 v = __ldcg(p4 + ((size_t)p * R + r) * Q + q);
      s.x += v.x;
      s.y += v.y;
      s.z += v.z;
      s.w += v.w;
    }
  }
  s_part[sl][col] = s;
  __syncthreads();
  if (sl == 0 && q < Q) {
    float4 t = s_part[0][col];
    for (int k = 1; k < kRedSlices; k++) {
      const float4 v = s_part[k][col];
      t.x += v.x;
      t.y += v.y;
      t.z += v.z;
      t.w += v.w;
    }
    float4 *xp = reinterpret_cast<float4 *>(x + (size_t)r * C) + q;
    float4 xv = __ldcg(xp);
    xv.x += t.x;
    xv.y += t.y;
    xv.z += t.z;
    xv.w += t.w;
    *xp = xv;
  }
}

/* ------------------------------------------------------------------ launch */

struct SffnTune {
  int smem_kib;
  int hint;
  int bps;
  int nps;
  int threads;
  int kernel;
  int bps2;
  int rsplit;
  int route;
  int p1d;
  int cluster;
  int atom;
  int trace;
  int diag;
  int noroute;
  unsigned long long *tl;  // trace: this launch pair's records (route, then FFN at + kTlBlocks * kTlStride)
};

inline SffnTune sffn_tune() {
  SffnTune t;
  t.smem_kib = env_int("LTE_DEC_SFFN_SMEM", 192, 16, 220);
  t.hint = env_int("LTE_DEC_SFFN_HINT", 1, 0, 1);
  t.bps = env_int("LTE_DEC_SFFN_BPS", 1, 1, 4);
  t.nps = env_int("LTE_DEC_SFFN_NPS", 2, 1, kSfMaxNps);
  t.threads = env_int("LTE_DEC_SFFN_THREADS", 256, 256, 512) > 256 ? 512 : 256;
  t.kernel = env_int("LTE_DEC_SFFN_KERNEL", 2, 1, 2);
  t.bps2 = env_int("LTE_DEC_SFFN_BPS2", 2, 1, 4);
  // warps per expert of the route kernels: the staged one 1, 2 or 4 (default 1), the one-row one 4 or 8
  t.rsplit = env_int("LTE_DEC_SFFN_RSPLIT", 0, 0, 8);
  t.route = env_int("LTE_DEC_SFFN_ROUTE", 1, 1, 2);
  t.p1d = env_int("LTE_DEC_SFFN_P1D", 3, 2, 3);
  // 0 = auto: clusters of 2 when the grid is the full persistent one (large layers: 264 blocks adding
  // into x at the 7B shape), none for small layers, where the adds are few and the cluster barriers
  // cost more (H200: the quickstart's d 128 model 75.5 vs 69.6 us per step with clusters of 2)
  t.cluster = env_int("LTE_DEC_SFFN_CLUSTER", 0, 0, 8);
  t.cluster = t.cluster >= 8 ? 8 : t.cluster >= 4 ? 4 : t.cluster >= 2 ? 2 : t.cluster;
  t.atom = env_int("LTE_DEC_SFFN_ATOM", 0, 0, 2) | (env_int("LTE_DEC_SFFN_CSYNC", 0, 0, 1) ? 4 : 0);
  t.trace = env_int("LTE_DEC_SFFN_TRACE", 0, 0, 1);
  t.diag = env_int("LTE_DEC_SFFN_DIAG", 0, 0, 1);
  // LTE_DEC_DIAG_SFFN_NOROUTE=1 (a diagnostic, WRONG results): no route kernel; the FFN kernel waits for
  // the previous kernel and takes the mask and x' the buffers hold (an earlier call's): what the
  // block would cost if its routing were known before the O projection ended (a router one op earlier)
  t.noroute = env_int("LTE_DEC_DIAG_SFFN_NOROUTE", 0, 0, 1);
  t.tl = nullptr;
  return t;
}

/* The kernel's dynamic shared-memory cap: the device's opt-in maximum per block minus the kernel's
   static shared memory (the attribute call fails with invalid argument above it). Set once per
   kernel, always to the same value (never lowered: a graph node captured earlier must still launch
   on replay). */
template <class K>
cudaError_t sffn_smem_cap(K kernel, size_t *cap) {
  // kernels already set (all instantiations of one signature share this function: key by pointer)
  static const void *seen[256];
  static size_t seen_cap[256];
  static int nseen = 0;
  for (int i = 0; i < nseen; i++) {
    if (seen[i] == reinterpret_cast<const void *>(kernel)) {
      *cap = seen_cap[i];
      return cudaSuccess;
    }
  }
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  cudaFuncAttributes fa;
  if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, kernel);
  if (e != cudaSuccess) return e;
  *cap = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)*cap);
  if (e == cudaSuccess && nseen < 256) {
    seen[nseen] = reinterpret_cast<const void *>(kernel);
    seen_cap[nseen++] = *cap;
  }
  return e;
}

/* The current device's compute capability major (clusters need 9). */
inline int sffn_cc_major() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return major;
}

template <int R, int SPLIT>
cudaError_t launch_sffn_route_s(const SffnArgs &a, int rows, const SffnTune &t, cudaStream_t st) {
  const size_t smem = (size_t)R * a.C * sizeof(float);
  if (smem > 48 * 1024) {
    size_t cap = 0;
    const cudaError_t e = sffn_smem_cap(sffn_route_kernel<R, SPLIT>, &cap);
    if (e != cudaSuccess) return e;
  }
  constexpr int epb = kRouteWarps / SPLIT;  // experts per block
  const unsigned grid = (unsigned)((a.E + epb - 1) / epb);
  return dlaunch(sffn_route_kernel<R, SPLIT>, dim3(grid), dim3(kRouteWarps * 32), smem, st, a, rows, t.tl);
}

template <int R>
cudaError_t launch_sffn_route(const SffnArgs &a, int rows, const SffnTune &t, cudaStream_t st) {
  if (R == 1 && t.route == 2) {  // one row: sffn_route1_kernel, 4 (or 8) warps per expert
    const int split = t.rsplit == 8 ? 8 : 4, epb = kRouteWarps / split;
    const unsigned grid = (unsigned)((a.E + epb - 1) / epb);
    if (split == 8) return dlaunch(sffn_route1_kernel<8>, dim3(grid), dim3(kRouteWarps * 32), 0, st, a, t.tl);
    return dlaunch(sffn_route1_kernel<4>, dim3(grid), dim3(kRouteWarps * 32), 0, st, a, t.tl);
  }
  if (t.rsplit >= 4) return launch_sffn_route_s<R, 4>(a, rows, t, st);
  if (t.rsplit >= 2) return launch_sffn_route_s<R, 2>(a, rows, t, st);
  return launch_sffn_route_s<R, 1>(a, rows, t, st);
}

template <class T, int R, int CPT, int TH>
cudaError_t launch_sffn_ffn_rc(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  const int rpn = a.act == LTE_DEC_ACT_SWIGLU ? 3 : 2;
  size_t cap = 0;
  cudaError_t e = sffn_smem_cap(sffn_ffn_kernel<T, R, CPT, TH>, &cap);
  if (e != cudaSuccess) return e;
  size_t extra = (size_t)a.E * sizeof(int) + (size_t)R * a.E;
  extra = (extra + 15) & ~(size_t)15;
  const size_t neur_b = (size_t)rpn * a.C * sizeof(T);
  // neurons per stage: as asked (the 4-row kernel holds 2), but two stages must fit
  int nps = R >= 4 && t.nps > 2 ? 2 : t.nps;
  while (nps > 1 && 2 * nps * neur_b + extra > cap) nps--;
  const size_t stage_b = (size_t)nps * neur_b;
  int nstg = (int)((size_t)t.smem_kib * 1024 / t.bps / stage_b);
  nstg = nstg < 2 ? 2 : (nstg > 8 ? 8 : nstg);
  size_t smem = (size_t)nstg * stage_b + extra;
  while (smem > cap && nstg > 2) smem = (size_t)(--nstg) * stage_b + extra;
  // at least one stage of candidate neurons per block: small layers use fewer blocks
  const long long cand = ((long long)a.F + nps - 1) / nps;
  long long grid = (long long)sms * t.bps;
  if (cand < grid) grid = cand < 1 ? 1 : cand;
  return dlaunch(sffn_ffn_kernel<T, R, CPT, TH>, dim3((unsigned)grid), dim3(TH), smem, st, a, rows, nstg,
                 t.hint, nps);
}

template <class T, int R, int TH>
cudaError_t launch_sffn_ffn_rt(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  const int cpr = (int)((size_t)a.C * sizeof(T) / 16);
  const int cpt = (cpr + TH - 1) / TH;
  if (cpt <= 1) return launch_sffn_ffn_rc<T, R, 1, TH>(a, rows, t, sms, st);
  if (cpt <= 2) return launch_sffn_ffn_rc<T, R, 2, TH>(a, rows, t, sms, st);
  if (TH == 512 || cpt <= 4) return launch_sffn_ffn_rc<T, R, 4, TH>(a, rows, t, sms, st);
  return launch_sffn_ffn_rc<T, R, 8, TH>(a, rows, t, sms, st);
}

/* How many clusters of csize blocks of `kernel` (256 threads, smem bytes) can be resident at once
   (cudaOccupancyMaxActiveClusters: whole clusters fit inside one GPC, so at 2 blocks per SM not
   every GPC's slots divide into clusters of 4 or 8). Cached per (kernel, csize, smem). */
template <class K>
int sffn_max_clusters(K kernel, int csize, size_t smem) {
  struct Entry {
    const void *k;
    int csize;
    size_t smem;
    int n;
  };
  static Entry cache[64];
  static int ncache = 0;
  for (int i = 0; i < ncache; i++)
    if (cache[i].k == reinterpret_cast<const void *>(kernel) && cache[i].csize == csize && cache[i].smem == smem)
      return cache[i].n;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)csize);
  cfg.blockDim = dim3(kSf2Threads);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)csize;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  if (ncache < 64) cache[ncache++] = {reinterpret_cast<const void *>(kernel), csize, smem, n};
  return n;
}

template <class T, int R, int CPT, int P1D>
cudaError_t launch_sffn_ffn2_rcd(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  auto kernel = sffn_ffn2_kernel<T, R, CPT, P1D>;
  size_t cap = 0;
  cudaError_t e = sffn_smem_cap(kernel, &cap);
  if (e != cudaSuccess) return e;
  long long grid = (long long)sms * t.bps2;
  const long long cand = ((long long)a.F + 7) / 8;  // at least ~8 candidate neurons per block
  if (cand < grid) grid = cand < 1 ? 1 : cand;
  const bool det = a.parts != nullptr;
  const int pieces = (a.C / 8 + 127) / 128;  // phase-1 pieces per neuron (det: their sums kept apart)
  auto smem_for = [&](long long g) {
    const int maxmine = (int)((a.F + g - 1) / g) + 1;
    return (size_t)R * a.C * 4 + (size_t)maxmine * R * 8 * (det ? 1 + pieces : 1) + (size_t)a.E * 4 +
           (size_t)R * a.E;
  };
  // clusters (sm_90): a grid of whole clusters that can all be resident at once, else no clusters
  int csize = t.cluster > 0 ? t.cluster : (grid >= (long long)sms * t.bps2 ? 2 : 1);
  if (csize > 1 && (sffn_cc_major() < 9 || grid < csize)) csize = 1;
  if (csize > 1) {
    grid -= grid % csize;
    const int nc = sffn_max_clusters(kernel, csize, smem_for(grid));
    if (nc < 1) csize = 1;
    else if ((long long)nc * csize < grid) grid = (long long)nc * csize;
  }
  const int maxmine = (int)((a.F + grid - 1) / grid) + 1;
  const size_t smem = smem_for(grid);
  if (smem > cap) return cudaErrorInvalidValue;
  // det: (atom 3) the clusters' sums into a.parts, then sffn_reduce_kernel adds them into x in order
  const int atom = det ? 3 | (t.atom & 4) : t.atom;
  e = dlaunch_c(kernel, dim3((unsigned)grid), dim3(kSf2Threads), smem, st, csize, a, rows, maxmine, csize, atom,
                t.tl ? t.tl + (size_t)kTlBlocks * kTlStride : nullptr);
  if (e != cudaSuccess || !det) return e;
  const unsigned cols = (unsigned)((a.C / 4 + kRedCols - 1) / kRedCols);
  return dlaunch(sffn_reduce_kernel, dim3(cols, (unsigned)rows), dim3(kRedCols * kRedSlices), 0, st,
                 static_cast<const float *>(a.parts), (int)(grid / csize), R, a.x, a.C);
}

/* Phase 1 with 3 items in flight per warp (LTE_DEC_SFFN_P1D=3) exists for one row only. */
template <class T, int R, int CPT>
cudaError_t launch_sffn_ffn2_rc(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  if constexpr (R == 1) {
    if (t.p1d == 3) return launch_sffn_ffn2_rcd<T, R, CPT, 3>(a, rows, t, sms, st);
  }
  return launch_sffn_ffn2_rcd<T, R, CPT, 2>(a, rows, t, sms, st);
}

template <class T, int R>
cudaError_t launch_sffn_ffn_r(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  if constexpr (sizeof(T) == 2) {
    if (t.kernel == 2) {
      const int cpr = a.C / 8;
      if (cpr <= kSf2Threads) return launch_sffn_ffn2_rc<T, R, 1>(a, rows, t, sms, st);
      if (cpr <= 2 * kSf2Threads) return launch_sffn_ffn2_rc<T, R, 2>(a, rows, t, sms, st);
      return launch_sffn_ffn2_rc<T, R, 4>(a, rows, t, sms, st);
    }
  }
  if (t.threads == 512) return launch_sffn_ffn_rt<T, R, 512>(a, rows, t, sms, st);
  return launch_sffn_ffn_rt<T, R, 256>(a, rows, t, sms, st);
}

/* rows <= 4 per pair of launches (route, then gate/up + down); more rows: groups of 4. */
template <class T>
cudaError_t launch_sffn_groups(const SffnArgs &a0, int rows, int sms, cudaStream_t st) {
  SffnTune t = sffn_tune();
  // LTE_DEC_SFFN_TRACE: one record slot per launch pair, printed every kTlLaunches pairs
  static unsigned long long *tl_buf = nullptr;
  static int tl_pairs = 0;
  const size_t tl_bytes = (size_t)kTlLaunches * 2 * kTlBlocks * kTlStride * sizeof(unsigned long long);
  if (t.trace && !tl_buf) {
    // a dump prints up to kTlLaunches * 2 * kTlBlocks lines of ~200 B: beyond the default 1 MiB FIFO
    (void)cudaDeviceSetLimit(cudaLimitPrintfFifoSize, (size_t)64 << 20);
    (void)cudaGetLastError();
    cudaError_t e = cudaMalloc(&tl_buf, tl_bytes);
    if (e == cudaSuccess) e = cudaMemset(tl_buf, 0, tl_bytes);
    if (e != cudaSuccess) return e;
  }
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int rb = rows - r0 < 4 ? rows - r0 : 4;
    SffnArgs a = a0;
    a.skip_router = t.diag;
    // deterministic mode: the two-phase kernel only (f16 / bf16); the ring kernel keeps its atomics
    if (!(sizeof(T) == 2 && t.kernel == 2)) a.parts = nullptr;
    a.x += (size_t)r0 * a.C;
    a.xn += (size_t)r0 * a.C;
    a.mask += (size_t)r0 * a.E;
    if (a.counts) a.counts += r0;
    cudaError_t e;
    if (t.trace) t.tl = tl_buf + (size_t)(tl_pairs % kTlLaunches) * 2 * kTlBlocks * kTlStride;
    if (t.noroute) e = cudaSuccess;
    else if (rb == 1) e = launch_sffn_route<1>(a, rb, t, st);
    else if (rb == 2) e = launch_sffn_route<2>(a, rb, t, st);
    else e = launch_sffn_route<4>(a, rb, t, st);
    if (e != cudaSuccess) return e;
    if (rb == 1) e = launch_sffn_ffn_r<T, 1>(a, rb, t, sms, st);
    else if (rb == 2) e = launch_sffn_ffn_r<T, 2>(a, rb, t, sms, st);
    else e = launch_sffn_ffn_r<T, 4>(a, rb, t, sms, st);
    if (e != cudaSuccess) return e;
    if (t.trace && ++tl_pairs % kTlLaunches == 0) {
      sffn_tl_dump_kernel<<<1, 1, 0, st>>>(tl_buf, kTlLaunches);
      e = cudaMemsetAsync(tl_buf, 0, tl_bytes, st);
      if (e != cudaSuccess) return e;
    }
  }
  return cudaGetLastError();
}

/* A failed attribute call or launch leaves its (non-sticky) error for cudaGetLastError: clear it so
   the next op's launch check does not report it. */
template <class T>
cudaError_t launch_sffn(const SffnArgs &a, int rows, int sms, cudaStream_t st) {
  const cudaError_t e = launch_sffn_groups<T>(a, rows, sms, st);
  if (e != cudaSuccess) (void)cudaGetLastError();
  return e;
}
