/*
 * decode_sffn.cuh: lte_dec_sparse_ffn on the GPU (issue 9), included by decode.cu inside its
 * anonymous namespace after decode_gemv.cuh (uses its cvt8 / pdl helpers / env_int). The whole
 * sparse FFN block of a decode step in two launches; semantics and CPU reference: lte.h,
 * cuda/cpu/decode.c.
 *
 * sffn_route_kernel<R>   x' = norm(x) and the hard router mask.
 *   grid = ceil(E / 8) blocks of 8 warps; warp w of block b owns expert e = 8b + w.
 *   Before griddepcontrol.wait (PDL) each lane loads its part of the expert's f32 router row
 *   into registers (up to kRoutePF float4 per lane = the whole row at C <= 4096): the router is a
 *   constant, so its bytes stream while the previous kernel finishes. Then every block loads the
 *   R rows of x into shared memory, reduces the norm statistics, forms x' in place (each block
 *   writes its slice of x' to global for the FFN kernel), and each warp reduces its dot products:
 *   mask[r, e] = x'[r] . w_router[e] + b_router[e] > threshold.
 *
 * Then h and the down projection of every active neuron, in ONE launch. Both kernels below share
 * the frame: every block reads the mask (R x E), compacts the union of the rows' active experts in
 * shared memory (ballots; block 0 writes the per-row counts) and takes a contiguous, balanced
 * range of the union's NEURONS (nact * S split evenly: blocks differ by at most one neuron). A
 * neuron needs 3 weight rows (SwiGLU: gate row n, up row F + n, down row n of the transposed down
 * weight; GELU: 2). Each thread ends owning 16-byte column chunks of the output and adds them into
 * x with float4 atomics (x is the residual; block 0 adds b_down), so neither h nor partial sums
 * leave the SM. The mask is the previous kernel's output, so no weight load can start before
 * griddepcontrol.wait; the kernels let their successor launch at once.
 *
 * sffn_ffn2_kernel<T, R, CPT>   (f16/bf16; default, LTE_DEC_SFFN_KERNEL=2) two phases, 2 blocks of
 *   8 warps per SM (LTE_DEC_SFFN_BPS2), described at the kernel: gate/up streamed per warp into
 *   registers (no barrier per neuron), one barrier, down streamed per thread. ~45 us per 7B FFN
 *   block at 50 % on the H200 (docs/engine.md).
 *
 * Tried and removed (docs/engine.md, fourth session): the route kernel's work inside the FFN kernel
 * behind a grid-wide barrier (one launch per block): slower at every sparsity measured.
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
};

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
        float4 v = *p;
        v.x = (v.x - mean[r]) * rstd[r] * w.x + b.x;
        v.y = (v.y - mean[r]) * rstd[r] * w.y + b.y;
        v.z = (v.z - mean[r]) * rstd[r] * w.z + b.z;
        v.w = (v.w - mean[r]) * rstd[r] * w.w + b.w;
        *p = v;
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

template <int R>
__global__ void __launch_bounds__(kRouteWarps * 32) sffn_route_kernel(SffnArgs a, int rows) {
  extern __shared__ float4 rsm4[];
  float *xs = reinterpret_cast<float *>(rsm4);  // R x C: x, then x'
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * kRouteWarps + warp;
  const bool own = e < a.E;
  const int Q = a.C >> 2;  // float4 per row
  const float4 *wrow = reinterpret_cast<const float4 *>(a.wr + (size_t)(own ? e : 0) * a.C);
  float4 wv[kRoutePF];
#pragma unroll
  for (int i = 0; i < kRoutePF; i++) {
    const int q = lane + 32 * i;
    wv[i] = own && q < Q ? __ldcs(wrow + q) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  NormRegs<kRouteWarps * 32> nr;
  nr.load(a);
  pdl_launch_dependents();
  pdl_wait();
  sffn_xprime<R, kRouteWarps * 32>(a, rows, xs, nr);
  sffn_store_xn<R, kRouteWarps * 32>(a, rows, xs);
  if (!own) return;
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (r >= rows) break;
    const float4 *xr = reinterpret_cast<const float4 *>(xs + (size_t)r * a.C);
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < kRoutePF; i++) {
      const int q = lane + 32 * i;
      if (q < Q) {
        const float4 v = xr[q];
        acc += (wv[i].x * v.x + wv[i].y * v.y) + (wv[i].z * v.z + wv[i].w * v.w);
      }
    }
    for (int q = lane + 32 * kRoutePF; q < Q; q += 32) {  // C > 4096: the rest of the row
      const float4 w = __ldcs(wrow + q), v = xr[q];
      acc += (w.x * v.x + w.y * v.y) + (w.z * v.z + w.w * v.w);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      const float logit = acc + (a.br ? a.br[e] : 0.0f);
      a.mask[(size_t)r * a.E + e] = logit > a.thr ? 1.0f : 0.0f;
    }
  }
}

/* ------------------------------------------------------------------ gate/up + act + down */

/* ------------------------------------------------------------------ shared by the FFN kernels */

/* Block-wide: the union of the rows' active experts, ascending, into list (shared memory), the
   per-row flags into on (R, E), and each row's count added into cnt (zeroed here; complete after
   the caller's next barrier). Returns the union size. TH threads; every thread calls it. */
template <int R, int TH>
__device__ int sffn_union(const SffnArgs &a, int rows, int *list, unsigned char *on, int *wtot, int *cnt) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid < R) cnt[tid] = 0;
  // the (R, E) mask into `on` first, loads before stores: one L2 round trip per 4 * TH entries
  for (int i0 = tid; i0 < rows * a.E; i0 += 4 * TH) {
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


/* ------------------------------------------------------------------ gate/up + act + down, two phases */

/* sffn_ffn2_kernel<T, R, CPT> (f16/bf16; LTE_DEC_SFFN_KERNEL=2, the default for them): the same work
   split as sffn_ffn_kernel (a balanced range of the union's neurons per block, 2 blocks per SM) but
   streamed like the decode GEMVs, with no barrier per neuron:
   phase 1 (gate/up): items = (neuron, piece of 1024 columns); the block's 8 warps take items round
     robin, each lane loads 4 x 16 B of the gate and up rows of its item straight into registers
     (ld.global.nc, double-buffered: the next item's loads are out while this one is reduced), dots
     with x' from shared memory, warp-reduces and adds the partial sums into shared memory. (Pieces
     of 512 columns with 4 in flight per warp, which would give every warp of a block the same item
     count, measured 55.6 us per block at 50 %; this design 45.5-49.9 in the calls around it.);
   phase 2 (down): after one barrier the block forms h of its neurons, then thread t streams its
     16-byte column chunks of the neurons' down rows (a ring of kSf2Depth neurons in registers; the
     first loads are issued before that barrier) into f32 accumulators, and adds them into x with
     float4 atomics as sffn_ffn_kernel does.
   LTE_DEC_SFFN_TRACE=1 (a diagnostic, never in a graph): blocks 0, grid/2 and grid-1 printf the
   clock64 cycles from their start to each phase boundary. */
constexpr int kSf2Threads = 256;
constexpr int kSf2Warps = kSf2Threads / 32;
constexpr int kSf2Depth = 8;  // down rows in flight per thread

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

template <class T, int R, int CPT>
__global__ void __launch_bounds__(kSf2Threads, 2) sffn_ffn2_kernel(SffnArgs a, int rows, int maxmine, int trace) {
  extern __shared__ float4 f2sm4[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int C = a.C, cpr = C / 8;                      // 16-byte chunks per row
  float *xs = reinterpret_cast<float *>(f2sm4);         // (R, C) x'
  float *hsum = xs + (size_t)R * C;                     // (maxmine, R, 2): gate / up sums, then h
  int *list = reinterpret_cast<int *>(hsum + (size_t)maxmine * R * 2);  // union of active experts
  unsigned char *on = reinterpret_cast<unsigned char *>(list + a.E);    // (R, E)
  __shared__ int wtot[kSf2Warps];
  __shared__ int cnt[R];
  long long tc[6];  // LTE_DEC_SFFN_TRACE: clock64 at the phase boundaries
  const unsigned long long tg0 = trace ? global_ns() : 0ull;
  tc[0] = clock64();

  pdl_launch_dependents();
  pdl_wait();
  // x' rows into shared memory, loads before stores (and before the union's mask loads)
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
  const int nact = sffn_union<R, kSf2Threads>(a, rows, list, on, wtot, cnt);
  const long long NN = (long long)nact * a.S;
  const int u0 = (int)(NN * blockIdx.x / gridDim.x), u1 = (int)(NN * (blockIdx.x + 1) / gridDim.x);
  const int nmine = u1 - u0;
  const bool bias_here = blockIdx.x == 0 && a.bd != nullptr;
  for (int i = tid; i < nmine * R * 2; i += kSf2Threads) hsum[i] = 0.0f;
  __syncthreads();
  if (blockIdx.x == 0 && a.counts && tid < rows) a.counts[tid] = cnt[tid];
  tc[1] = clock64();
  if (nmine == 0 && !bias_here) return;

  const T *wfc = static_cast<const T *>(a.wfc), *wd = static_cast<const T *>(a.wd);
  auto neuron = [&](int k) {
    const int u = u0 + k;
    return list[u / a.S] * a.S + u % a.S;
  };

  // phase 1: gate/up partial dots, items (neuron k, piece p of 128 chunks)
  const int P = (cpr + 127) / 128;
  const int items = nmine * P;
  const uint4 z = make_uint4(0u, 0u, 0u, 0u);
  uint4 ga[4], ua[4], gb[4], ub[4];
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
      if (lane == 0 && r < rows) {
        atomicAdd(&hsum[((size_t)k * R + r) * 2], sg[r]);
        if (swi) atomicAdd(&hsum[((size_t)k * R + r) * 2 + 1], su[r]);
      }
    }
  };
  {
    int it = warp;
    if (it < items) load(it, ga, ua);
    if (it + kSf2Warps < items) load(it + kSf2Warps, gb, ub);
    while (it < items) {
      compute(it, ga, ua);
      if (it + 2 * kSf2Warps < items) load(it + 2 * kSf2Warps, ga, ua);
      it += kSf2Warps;
      if (it >= items) break;
      compute(it, gb, ub);
      if (it + 2 * kSf2Warps < items) load(it + 2 * kSf2Warps, gb, ub);
      it += kSf2Warps;
    }
  }
  tc[2] = clock64();

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
  for (int i = tid; i < nmine * R; i += kSf2Threads) {
    const int k = i / R, r = i - k * R;
    const int n = neuron(k);
    hsum[2 * i] = (r < rows && on[r * a.E + n / a.S]) ? sffn_h(a, n, hsum[2 * i], hsum[2 * i + 1]) : 0.0f;
  }
  __syncthreads();
  tc[3] = clock64();
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
  tc[4] = clock64();
  // x += this block's share (+ b_down once, by block 0)
  sffn_add_out<R, CPT, 8, kSf2Threads>(a, rows, cpr, yacc, bias_here);
  if (trace && tid == 0 && (blockIdx.x == 0 || blockIdx.x == gridDim.x / 2 || blockIdx.x == gridDim.x - 1)) {
    tc[5] = clock64();
    printf("sffn trace block %d/%d neurons %d: cycles from start: union+x' %lld phase1 %lld h %lld phase2 %lld "
           "out %lld; globaltimer start %llu end %llu\n",
           blockIdx.x, gridDim.x, nmine, tc[1] - tc[0], tc[2] - tc[0], tc[3] - tc[0], tc[4] - tc[0], tc[5] - tc[0],
           tg0, global_ns());
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
  int trace;
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
  t.trace = env_int("LTE_DEC_SFFN_TRACE", 0, 0, 1);
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

template <int R>
cudaError_t launch_sffn_route(const SffnArgs &a, int rows, cudaStream_t st) {
  const size_t smem = (size_t)R * a.C * sizeof(float);
  if (smem > 48 * 1024) {
    size_t cap = 0;
    const cudaError_t e = sffn_smem_cap(sffn_route_kernel<R>, &cap);
    if (e != cudaSuccess) return e;
  }
  const unsigned grid = (unsigned)((a.E + kRouteWarps - 1) / kRouteWarps);
  return dlaunch(sffn_route_kernel<R>, dim3(grid), dim3(kRouteWarps * 32), smem, st, a, rows);
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

template <class T, int R, int CPT>
cudaError_t launch_sffn_ffn2_rc(const SffnArgs &a, int rows, const SffnTune &t, int sms, cudaStream_t st) {
  size_t cap = 0;
  cudaError_t e = sffn_smem_cap(sffn_ffn2_kernel<T, R, CPT>, &cap);
  if (e != cudaSuccess) return e;
  long long grid = (long long)sms * t.bps2;
  const long long cand = ((long long)a.F + 7) / 8;  // at least ~8 candidate neurons per block
  if (cand < grid) grid = cand < 1 ? 1 : cand;
  const int maxmine = (int)((a.F + grid - 1) / grid) + 1;
  const size_t smem = (size_t)R * a.C * 4 + (size_t)maxmine * R * 8 + (size_t)a.E * 4 + (size_t)R * a.E;
  if (smem > cap) return cudaErrorInvalidValue;
  return dlaunch(sffn_ffn2_kernel<T, R, CPT>, dim3((unsigned)grid), dim3(kSf2Threads), smem, st, a, rows, maxmine,
                 t.trace);
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
  const SffnTune t = sffn_tune();
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int rb = rows - r0 < 4 ? rows - r0 : 4;
    SffnArgs a = a0;
    a.x += (size_t)r0 * a.C;
    a.xn += (size_t)r0 * a.C;
    a.mask += (size_t)r0 * a.E;
    if (a.counts) a.counts += r0;
    cudaError_t e;
    if (rb == 1) e = launch_sffn_route<1>(a, rb, st);
    else if (rb == 2) e = launch_sffn_route<2>(a, rb, st);
    else e = launch_sffn_route<4>(a, rb, st);
    if (e != cudaSuccess) return e;
    if (rb == 1) e = launch_sffn_ffn_r<T, 1>(a, rb, t, sms, st);
    else if (rb == 2) e = launch_sffn_ffn_r<T, 2>(a, rb, t, sms, st);
    else e = launch_sffn_ffn_r<T, 4>(a, rb, t, sms, st);
    if (e != cudaSuccess) return e;
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
