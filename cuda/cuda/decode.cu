/*
 * decode.cu: CUDA kernels of the decode engine (lte.h section "decode engine"); the CPU
 * reference is cuda/cpu/decode.c.
 *
 *   lte_dec_linear       GEMV / skinny GEMM for up to 8 rows per launch (more rows: several
 *                        launches). One warp per two weight rows (two outputs, or the gate and up
 *                        rows of one SwiGLU output); each lane streams 16-byte weight vectors (8
 *                        halves) of both rows, 2 chunks in flight, widens to f32 and keeps f32
 *                        partial sums; x is loaded once per chunk for both rows. The row's norm
 *                        (RMS/Layer) is applied while x is read: its statistics are accumulated in
 *                        the same pass and applied to the warp's final sums (rstd * sum w x nw -
 *                        rstd mean sum w nw + sum w nb), so no norm kernel runs; the activation
 *                        (SwiGLU, GELU) is applied in the epilogue, so h is written once.
 *                        An out_mask lets a warp skip the weight rows of experts no row needs; an
 *                        in_mask lets a lane skip 8-element weight chunks of inactive experts.
 *                        Since issue 9 the persistent kernels of decode_gemv.cuh (gemv_kernel,
 *                        ts_kernel) take lte_dec_linear / lte_dec_linear_t_sparse for f16/bf16
 *                        weights and 1..4 rows (LTE_DEC_GEMV=old forces the kernels below).
 *   lte_dec_norm         one block per row; rows of <= 16384 floats (cols % 4 == 0) keep their values
 *                        in registers between the two passes (norm_vec_kernel: one round trip).
 *   lte_dec_rope_append  one thread per rotated pair / appended value (angles in double as the
 *                        training op and the CPU reference).
 *   lte_dec_attention    one block per (row, head), single pass with an online softmax: D/8 lanes
 *                        own a cached position (16-byte K and V loads, 4 positions in flight per
 *                        lane), each (warp, lane group) keeps its running max/sum/values, merged in
 *                        shared memory (attention_flash_kernel; D = 8, 16, ..., 256). Other head
 *                        sizes, or LTE_DEC_ATTN=old: scores in shared memory, block max/sum, then
 *                        (8-dim chunk x position group) threads accumulate the values.
 *   lte_dec_rope_attention  decode steps (distinct slots): the same kernel also rotates its q head
 *                        and kv head at pos[r] and appends k/v (decode_attention.cuh); other head
 *                        sizes run lte_dec_rope_append then lte_dec_attention.
 *   lte_dec_sparse_ffn   the whole sparse FFN block (route kernel + one fused gate/up/down kernel,
 *                        decode_sffn.cuh); from LTE_DEC_BLAS_MIN rows on cuBLAS as "masked dense",
 *                        the router in the gate/up GEMM (LTE_DEC_SFFN_ROUTER_ROWS) or on a second
 *                        stream (decode_blas.cuh, blas_sparse_ffn).
 *   lte_dec_sample       one block (1024 threads) per row: argmax, or the order-free top-k /
 *                        top-p definition of lte.h found by bisection over float bit patterns
 *                        (no sort), then an ordered walk (chunk sums, block exclusive scan).
 *   cuBLAS path          lte_dec_linear / lte_dec_linear_t_sparse of >= LTE_DEC_BLAS_MIN (4) rows
 *                        (f16) as x' prep + cublasGemmEx + epilogue (decode_blas.cuh, twelfth
 *                        session).
 *   lte_graph_*          cudaStreamBeginCapture / EndCapture / Instantiate / GraphLaunch on the
 *                        context stream.
 * Nothing here synchronises or reads the host, so every op is graph-capturable; the only allocation
 * is the cuBLAS path's context-owned scratch, made once at its first call (cudaMalloc is allowed
 * in the relaxed capture mode of lte_graph_begin).
 */
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "half.cuh"
#include "mma.cuh"
#include "reduce.cuh"

namespace lte {
namespace {

/* ------------------------------------------------------------------ loads */

/* 8 consecutive weights widened to f32. Weights are read once per step: streaming loads
   (ld.global.cs, evict-first) keep them from evicting the activations that every warp re-reads. */
template <class T>
struct W8;

template <>
struct W8<float> {
  static __device__ __forceinline__ void load(const float *p, float *o) {
    const float4 a = __ldcs(reinterpret_cast<const float4 *>(p));
    const float4 b = __ldcs(reinterpret_cast<const float4 *>(p) + 1);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
  }
  static __device__ __forceinline__ float one(const float *p) { return __ldg(p); }
};

template <>
struct W8<__half> {
  static __device__ __forceinline__ void load(const __half *p, float *o) {
    const uint4 u = __ldcs(reinterpret_cast<const uint4 *>(p));
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __half22float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
  static __device__ __forceinline__ float one(const __half *p) { return __half2float(p[0]); }
};

template <>
struct W8<__nv_bfloat16> {
  static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *o) {
    const uint4 u = __ldcs(reinterpret_cast<const uint4 *>(p));
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __bfloat1622float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
  static __device__ __forceinline__ float one(const __nv_bfloat16 *p) { return __bfloat162float(p[0]); }
};

/* Programmatic dependent launch (LTE_DEC_PDL=1 when the step is captured): every step kernel
   first lets its successor be scheduled (its blocks then wait at griddepcontrol.wait), then waits
   for its predecessor to complete and flush. Launched without the attribute both are no-ops. */
__device__ __forceinline__ void pdl_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* A tuning variable: `def` when unset or empty, else its integer value clamped to [lo, hi]. */
inline int env_int(const char *name, int def, int lo, int hi) {
  const char *e = getenv(name);
  if (e == nullptr || e[0] == 0) return def;
  const int v = atoi(e);
  return v < lo ? lo : v > hi ? hi : v;
}

bool pdl_enabled() {
  const char *e = getenv("LTE_DEC_PDL");
  return e != nullptr && e[0] == '1';
}

/* LTE_DEC_CARVEOUT=0..100: the preferred shared-memory carveout (percent of the unified L1 /
   shared storage) of every step kernel launched (or captured) while it is set; unset or negative =
   the driver's choice per kernel. The engine sets 100 while it captures a step with the fused
   sparse FFN op: 3.4 % / 1.4 % faster 7B steps at 50 % / 10 % active, while dense steps measured
   1.3 % slower with it (sixth session, docs/engine.md). Our reading: the SMs switch between the
   sparse FFN kernels' and the GEMVs' shared-memory configurations at every neighbour otherwise. */
int carveout_pref() { return env_int("LTE_DEC_CARVEOUT", -1, -1, 100); }

/* A step kernel's launch: the PDL attribute when enabled, and thread-block clusters of `cluster`
   blocks along x when cluster > 1 (grid.x a multiple of it). */
template <class... KArgs, class... Args>
cudaError_t dlaunch_c(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, int cluster,
                      Args &&...args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[3];
  int n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = (unsigned)cluster;
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  const int co = carveout_pref();
  if (co >= 0) {
    attr[n].id = cudaLaunchAttributePreferredSharedMemoryCarveout;
    attr[n++].val.sharedMemCarveout = (unsigned)co;
  }
  cfg.attrs = n ? attr : nullptr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, k, std::forward<Args>(args)...);
}

template <class... KArgs, class... Args>
cudaError_t dlaunch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args &&...args) {
  return dlaunch_c(k, grid, block, smem, st, 1, std::forward<Args>(args)...);
}

__device__ __forceinline__ float dsilu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float dgelu(float x) {
  const float c = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

/* ------------------------------------------------------------------ linear */

constexpr int kLinWarps = 8;
constexpr int kUnroll = 2;

struct LinArgs {
  const void *w;
  const float *x;
  int ldx;
  int mode;
  const float *nw;
  const float *nb;
  float eps;
  const float *in_mask;
  const float *out_mask;
  int out_period;
  int S;
  const float *bias;
  float *y;
  int n;
  int k;
  int accumulate;
  int act;
  int ldw = 0;  // weight row stride in elements, 0 = k (gemv_mma_kernel's K-split launches set it)
};

template <int VEC>
__device__ __forceinline__ void ldx_f32(const float *p, float *o) {
  if (VEC == 8) {
    const float4 a = *reinterpret_cast<const float4 *>(p);
    const float4 b = *(reinterpret_cast<const float4 *>(p) + 1);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
  } else {
    o[0] = p[0];
  }
}

/* One warp computes two weight rows: output j and j + 1 (act NONE / GELU), or the gate row j and
   the up row n + j of one SwiGLU output (act SWIGLU). Lane l reads VEC consecutive weights of
   both rows per chunk, kUnroll chunks in flight; the x chunk (and norm weights) are loaded once
   for both rows. VEC = 8 needs k % 8 == 0, ldx % 4 == 0 and 16-byte aligned rows. */
template <class T, int RB, int VEC>
__global__ void __launch_bounds__(kLinWarps * 32) linear_kernel(LinArgs a, int rows) {
  const int lane = threadIdx.x & 31;
  const int wg = blockIdx.x * kLinWarps + (threadIdx.x >> 5);
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int j0 = swi ? wg : 2 * wg;
  const int K = a.k;
  if (j0 < a.n && !a.out_mask && !a.in_mask) {
    // weights do not depend on the previous kernel: start pulling this warp's first chunks into
    // L2 while (with PDL) the previous kernel finishes
    const T *W = static_cast<const T *>(a.w);
    const int rb0 = swi ? a.n + j0 : (j0 + 1 < a.n ? j0 + 1 : j0);
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int kk = lane * VEC + u * 32 * VEC;
      if (kk < K) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(W + (size_t)j0 * K + kk));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(W + (size_t)rb0 * K + kk));
      }
    }
  }
  pdl_prologue();
  if (j0 >= a.n) return;
  const int j1 = swi ? -1 : (j0 + 1 < a.n ? j0 + 1 : -1);
  bool on0[RB], on1[RB];
  bool need0 = false, need1 = false;
  const int per = a.out_mask ? a.out_period / a.S : 0;
#pragma unroll
  for (int r = 0; r < RB; r++) {
    on0[r] = r < rows;
    on1[r] = r < rows && j1 >= 0;
    if (a.out_mask) {
      if (on0[r]) on0[r] = a.out_mask[(size_t)r * per + (j0 % a.out_period) / a.S] != 0.0f;
      if (on1[r]) on1[r] = a.out_mask[(size_t)r * per + (j1 % a.out_period) / a.S] != 0.0f;
    }
    need0 = need0 || on0[r];
    need1 = need1 || on1[r];
  }
  // weight rows actually read
  const int ra = need0 ? j0 : -1;
  const int rb = swi ? (need0 ? a.n + j0 : -1) : (need1 ? j1 : -1);
  if (ra < 0 && rb < 0) {
    if (lane == 0 && !a.accumulate) {
#pragma unroll
      for (int r = 0; r < RB; r++) {
        if (r >= rows) continue;
        a.y[(size_t)r * a.n + j0] = 0.0f;
        if (j1 >= 0) a.y[(size_t)r * a.n + j1] = 0.0f;
      }
    }
    return;
  }
  const T *W = static_cast<const T *>(a.w);
  const T *wa = W + (size_t)(ra >= 0 ? ra : 0) * K;
  const T *wb = W + (size_t)(rb >= 0 ? rb : 0) * K;
  const bool norm = a.mode != LTE_DEC_X_PLAIN;
  const bool ln = a.mode == LTE_DEC_X_LAYERNORM;
  const int nexp = a.in_mask ? K / a.S : 0;
  float acca[RB], accb[RB], s1[RB], s2[RB];
  float lwa = 0.0f, lba = 0.0f, lwb = 0.0f, lbb = 0.0f;
#pragma unroll
  for (int r = 0; r < RB; r++) acca[r] = accb[r] = s1[r] = s2[r] = 0.0f;
  constexpr int STEP = 32 * VEC;
  for (int k0 = lane * VEC; k0 < K; k0 += STEP * kUnroll) {
    float wva[kUnroll][VEC], wvb[kUnroll][VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int kk = k0 + u * STEP;
      bool live = kk < K;
      if (live && a.in_mask) {
        bool any = false;
#pragma unroll
        for (int r = 0; r < RB; r++)
          if (r < rows) any = any || a.in_mask[(size_t)r * nexp + kk / a.S] != 0.0f;
        live = any;
      }
      if (live && ra >= 0) {
        if (VEC == 8) W8<T>::load(wa + kk, wva[u]);
        else wva[u][0] = W8<T>::one(wa + kk);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; j++) wva[u][j] = 0.0f;
      }
      if (live && rb >= 0) {
        if (VEC == 8) W8<T>::load(wb + kk, wvb[u]);
        else wvb[u][0] = W8<T>::one(wb + kk);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; j++) wvb[u][j] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int kk = k0 + u * STEP;
      if (kk >= K) continue;
      float nwv[VEC], nbv[VEC];
      if (norm) ldx_f32<VEC>(a.nw + kk, nwv);
      if (ln) {
        ldx_f32<VEC>(a.nb + kk, nbv);
#pragma unroll
        for (int j = 0; j < VEC; j++) {
          lwa = fmaf(wva[u][j], nwv[j], lwa);
          lba = fmaf(wva[u][j], nbv[j], lba);
          lwb = fmaf(wvb[u][j], nwv[j], lwb);
          lbb = fmaf(wvb[u][j], nbv[j], lbb);
        }
      }
#pragma unroll
      for (int r = 0; r < RB; r++) {
        if (r >= rows) continue;
        float xv[VEC];
        ldx_f32<VEC>(a.x + (size_t)r * a.ldx + kk, xv);
        const float m = a.in_mask ? a.in_mask[(size_t)r * nexp + kk / a.S] : 1.0f;
#pragma unroll
        for (int j = 0; j < VEC; j++) {
          if (norm) {
            s1[r] += xv[j];
            s2[r] = fmaf(xv[j], xv[j], s2[r]);
            xv[j] *= nwv[j];
          }
          xv[j] *= m;
          acca[r] = fmaf(wva[u][j], xv[j], acca[r]);
          accb[r] = fmaf(wvb[u][j], xv[j], accb[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RB; r++) {
    acca[r] = warp_sum(acca[r]);
    accb[r] = warp_sum(accb[r]);
    if (norm) {
      s1[r] = warp_sum(s1[r]);
      s2[r] = warp_sum(s2[r]);
    }
  }
  if (ln) {
    lwa = warp_sum(lwa);
    lba = warp_sum(lba);
    lwb = warp_sum(lwb);
    lbb = warp_sum(lbb);
  }
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < RB; r++) {
    if (r >= rows) continue;
    float va = acca[r], vb = accb[r];
    if (a.mode == LTE_DEC_X_RMSNORM) {
      const float rstd = rsqrtf(s2[r] / (float)K + a.eps);
      va *= rstd;
      vb *= rstd;
    } else if (ln) {
      const float mean = s1[r] / (float)K;
      const float rstd = rsqrtf(fmaxf(s2[r] / (float)K - mean * mean, 0.0f) + a.eps);
      va = rstd * (va - mean * lwa) + lba;
      vb = rstd * (vb - mean * lwb) + lbb;
    }
    float *y0 = a.y + (size_t)r * a.n + j0;
    if (swi) {
      *y0 = on0[r] ? dsilu(va) * vb : 0.0f;
      continue;
    }
    if (on0[r]) {
      float v = va + (a.bias ? a.bias[j0] : 0.0f);
      if (a.act == LTE_DEC_ACT_GELU) v = dgelu(v);
      *y0 = a.accumulate ? *y0 + v : v;
    } else if (!a.accumulate) {
      *y0 = 0.0f;
    }
    if (j1 >= 0) {
      float *y1 = y0 + 1;
      if (on1[r]) {
        float v = vb + (a.bias ? a.bias[j1] : 0.0f);
        if (a.act == LTE_DEC_ACT_GELU) v = dgelu(v);
        *y1 = a.accumulate ? *y1 + v : v;
      } else if (!a.accumulate) {
        *y1 = 0.0f;
      }
    }
  }
}

/* Small N (the router GEMV: 344 rows at LLaMA-7B shape; the tiny models of the tests): one block
   per output row, the 256 threads split K (16-byte loads), so the weights are streamed by N * 8
   warps instead of N / 2. act NONE, no masks, VEC path only. */
constexpr int kRowThreads = 256;
constexpr int kRowBlockMaxN = 2048; /* below this many outputs a block per row beats a warp per two rows */

template <class T, int RB>
__global__ void __launch_bounds__(kRowThreads) linear_rowblock_kernel(LinArgs a, int rows) {
  pdl_prologue();
  __shared__ float red[kRowThreads / 32][3 * 8 + 2];
  __shared__ float tot[3 * 8 + 2];
  const int n = blockIdx.x;
  const int K = a.k;
  const T *wr = static_cast<const T *>(a.w) + (size_t)n * K;
  const bool norm = a.mode != LTE_DEC_X_PLAIN;
  const bool ln = a.mode == LTE_DEC_X_LAYERNORM;
  float acc[RB], s1[RB], s2[RB];
  float lw = 0.0f, lb = 0.0f;
#pragma unroll
  for (int r = 0; r < RB; r++) acc[r] = s1[r] = s2[r] = 0.0f;
  for (int k0 = threadIdx.x * 8; k0 < K; k0 += kRowThreads * 8) {
    float wv[8], nwv[8], nbv[8];
    W8<T>::load(wr + k0, wv);
    if (norm) ldx_f32<8>(a.nw + k0, nwv);
    if (ln) {
      ldx_f32<8>(a.nb + k0, nbv);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        lw = fmaf(wv[j], nwv[j], lw);
        lb = fmaf(wv[j], nbv[j], lb);
      }
    }
#pragma unroll
    for (int r = 0; r < RB; r++) {
      if (r >= rows) continue;
      float xv[8];
      ldx_f32<8>(a.x + (size_t)r * a.ldx + k0, xv);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        if (norm) {
          s1[r] += xv[j];
          s2[r] = fmaf(xv[j], xv[j], s2[r]);
          xv[j] *= nwv[j];
        }
        acc[r] = fmaf(wv[j], xv[j], acc[r]);
      }
    }
  }
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < RB; r++) {
    acc[r] = warp_sum(acc[r]);
    s1[r] = warp_sum(s1[r]);
    s2[r] = warp_sum(s2[r]);
  }
  lw = warp_sum(lw);
  lb = warp_sum(lb);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < RB; r++) {
      red[wid][3 * r] = acc[r];
      red[wid][3 * r + 1] = s1[r];
      red[wid][3 * r + 2] = s2[r];
    }
    red[wid][3 * RB] = lw;
    red[wid][3 * RB + 1] = lb;
  }
  __syncthreads();
  if ((int)threadIdx.x < 3 * RB + 2) {
    float t = 0.0f;
    for (int w = 0; w < kRowThreads / 32; w++) t += red[w][threadIdx.x];
    tot[threadIdx.x] = t;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int r = 0; r < rows && r < RB; r++) {
    float v = tot[3 * r];
    if (a.mode == LTE_DEC_X_RMSNORM) {
      v *= rsqrtf(tot[3 * r + 2] / (float)K + a.eps);
    } else if (ln) {
      const float mean = tot[3 * r + 1] / (float)K;
      const float rstd = rsqrtf(fmaxf(tot[3 * r + 2] / (float)K - mean * mean, 0.0f) + a.eps);
      v = rstd * (v - mean * tot[3 * RB]) + tot[3 * RB + 1];
    }
    v += a.bias ? a.bias[n] : 0.0f;
    float *yo = a.y + (size_t)r * a.n + n;
    *yo = a.accumulate ? *yo + v : v;
  }
}

/* Vector path: rows in chunks of up to 8 (RB = 1, 2, 4, 8 instantiated, the smallest that holds
   the chunk). Scalar path (odd shapes): one row per launch. */
template <class T>
cudaError_t launch_linear(const LinArgs &a, int rows, cudaStream_t st, bool vec) {
  const int warps = a.act == LTE_DEC_ACT_SWIGLU ? a.n : (a.n + 1) / 2;
  const unsigned blocks = (unsigned)((warps + kLinWarps - 1) / kLinWarps);
  const int chunk = vec ? 8 : 1;
  const bool rowblock = vec && a.act == LTE_DEC_ACT_NONE && !a.in_mask && !a.out_mask && a.n < kRowBlockMaxN;
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    LinArgs b = a;
    const int rb = rows - r0 < chunk ? rows - r0 : chunk;
    b.x = a.x + (size_t)r0 * a.ldx;
    b.y = a.y + (size_t)r0 * a.n;
    if (a.in_mask) b.in_mask = a.in_mask + (size_t)r0 * (a.k / a.S);
    if (a.out_mask) b.out_mask = a.out_mask + (size_t)r0 * (a.out_period / a.S);
    cudaError_t e0 = cudaSuccess;
    if (rowblock) {
      if (rb == 1) e0 = dlaunch(linear_rowblock_kernel<T, 1>, dim3(a.n), dim3(kRowThreads), 0, st, b, rb);
      else if (rb == 2) e0 = dlaunch(linear_rowblock_kernel<T, 2>, dim3(a.n), dim3(kRowThreads), 0, st, b, rb);
      else if (rb <= 4) e0 = dlaunch(linear_rowblock_kernel<T, 4>, dim3(a.n), dim3(kRowThreads), 0, st, b, rb);
      else e0 = dlaunch(linear_rowblock_kernel<T, 8>, dim3(a.n), dim3(kRowThreads), 0, st, b, rb);
    } else if (!vec) e0 = dlaunch(linear_kernel<T, 1, 1>, dim3(blocks), dim3(kLinWarps * 32), 0, st, b, 1);
    else if (rb == 1) e0 = dlaunch(linear_kernel<T, 1, 8>, dim3(blocks), dim3(kLinWarps * 32), 0, st, b, rb);
    else if (rb == 2) e0 = dlaunch(linear_kernel<T, 2, 8>, dim3(blocks), dim3(kLinWarps * 32), 0, st, b, rb);
    else if (rb <= 4) e0 = dlaunch(linear_kernel<T, 4, 8>, dim3(blocks), dim3(kLinWarps * 32), 0, st, b, rb);
    else e0 = dlaunch(linear_kernel<T, 8, 8>, dim3(blocks), dim3(kLinWarps * 32), 0, st, b, rb);
    if (e0 != cudaSuccess) return e0;
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

/* ------------------------------------------------------------------ sparse transposed projection */

constexpr int kTsThreads = 128;  // 8 columns per thread: 1024 columns per block
constexpr int kTsExperts = 2;    // experts per block

/* grid (ceil(E / kTsExperts), ceil(N / 1024)). A block walks the rows of its experts that some
   row of the batch needs, 16-byte weight loads (4 rows in flight), and adds its partial sums into
   y with atomics (y already holds the residual). */
template <class T, int RB>
__global__ void __launch_bounds__(kTsThreads) linear_t_sparse_kernel(const T *wt, const float *h, const float *mask,
                                                                     const float *bias, float *y, int rows, int N,
                                                                     int K, int S) {
  pdl_prologue();
  const int E = K / S;
  const int c0 = (blockIdx.y * kTsThreads + threadIdx.x) * 8;
  float acc[RB][8];
#pragma unroll
  for (int r = 0; r < RB; r++)
#pragma unroll
    for (int j = 0; j < 8; j++) acc[r][j] = 0.0f;
  bool any_work = false;
  for (int ee = 0; ee < kTsExperts; ee++) {
    const int e = blockIdx.x * kTsExperts + ee;
    if (e >= E) break;
    bool on = false;
    for (int r = 0; r < rows; r++) on = on || mask[(size_t)r * E + e] != 0.0f;
    if (!on) continue;
    any_work = true;
    if (c0 >= N) continue;
    for (int j0 = 0; j0 < S; j0 += 4) {
      float w[4][8];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        if (j0 + u < S) W8<T>::load(wt + (size_t)(e * S + j0 + u) * N + c0, w[u]);
        else
#pragma unroll
          for (int j = 0; j < 8; j++) w[u][j] = 0.0f;
      }
#pragma unroll
      for (int u = 0; u < 4; u++) {
        if (j0 + u >= S) continue;
        const int kk = e * S + j0 + u;
#pragma unroll
        for (int r = 0; r < RB; r++) {
          if (r >= rows) continue;
          const float hv = h[(size_t)r * K + kk];
#pragma unroll
          for (int j = 0; j < 8; j++) acc[r][j] = fmaf(hv, w[u][j], acc[r][j]);
        }
      }
    }
  }
  if (c0 >= N) return;
  const bool add_bias = bias != nullptr && blockIdx.x == 0;
  if (!any_work && !add_bias) return;
#pragma unroll
  for (int r = 0; r < RB; r++) {
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      float v = acc[r][j];
      if (add_bias) v += bias[c0 + j];
      if (any_work || add_bias) atomicAdd(&y[(size_t)r * N + c0 + j], v);
    }
  }
}

/* persistent weight-streaming kernels (gemv_kernel, ts_kernel) and their launchers */
#include "decode_gemv.cuh"
#include "decode_gemv_mma.cuh"
#include "decode_ts_mma.cuh"

/* ------------------------------------------------------------------ norm */

__global__ void norm_kernel(const float *x, const float *w, const float *b, float *y, int cols, float eps, int kind) {
  pdl_prologue();
  __shared__ float sm[32];
  const float *xr = x + (size_t)blockIdx.x * cols;
  float *yr = y + (size_t)blockIdx.x * cols;
  float s = 0.0f, ss = 0.0f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    s += xr[i];
    ss += xr[i] * xr[i];
  }
  ss = block_sum(ss, sm);
  if (kind == 0) {
    const float rstd = rsqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = xr[i] * rstd * w[i];
  } else {
    s = block_sum(s, sm);
    const float mean = s / (float)cols;
    const float rstd = rsqrtf(fmaxf(ss / (float)cols - mean * mean, 0.0f) + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
  }
}

/* Rows of up to kNormVecThreads * 4 * kNormVec floats with cols % 4 == 0: every value is loaded
   once (all of a thread's float4 loads in flight together) and kept in registers for the second
   pass, so a row costs one round trip instead of a serial loop over two passes. */
constexpr int kNormVecThreads = 1024;
constexpr int kNormVec = 4;

__global__ void __launch_bounds__(kNormVecThreads)
    norm_vec_kernel(const float *x, const float *w, const float *b, float *y, int cols, float eps, int kind) {
  pdl_prologue();
  __shared__ float sm[32];
  const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)blockIdx.x * cols);
  float4 *yr = reinterpret_cast<float4 *>(y + (size_t)blockIdx.x * cols);
  const int n4 = cols / 4;
  float4 v[kNormVec];
  float s = 0.0f, ss = 0.0f;
#pragma unroll
  for (int u = 0; u < kNormVec; u++) {
    const int i = threadIdx.x + u * kNormVecThreads;
    v[u] = i < n4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int u = 0; u < kNormVec; u++) {
    s += (v[u].x + v[u].y) + (v[u].z + v[u].w);
    ss += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
  }
  ss = block_sum(ss, sm);
  float mean = 0.0f, rstd;
  if (kind == 0) {
    rstd = rsqrtf(ss / (float)cols + eps);
  } else {
    s = block_sum(s, sm);
    mean = s / (float)cols;
    rstd = rsqrtf(fmaxf(ss / (float)cols - mean * mean, 0.0f) + eps);
  }
  const float4 *w4 = reinterpret_cast<const float4 *>(w);
  const float4 *b4 = reinterpret_cast<const float4 *>(b);
#pragma unroll
  for (int u = 0; u < kNormVec; u++) {
    const int i = threadIdx.x + u * kNormVecThreads;
    if (i >= n4) break;
    const float4 wv = w4[i];
    float4 o;
    if (kind == 0) {
      o = make_float4(v[u].x * rstd * wv.x, v[u].y * rstd * wv.y, v[u].z * rstd * wv.z, v[u].w * rstd * wv.w);
    } else {
      const float4 bv = b4[i];
      o = make_float4((v[u].x - mean) * rstd * wv.x + bv.x, (v[u].y - mean) * rstd * wv.y + bv.y,
                      (v[u].z - mean) * rstd * wv.z + bv.z, (v[u].w - mean) * rstd * wv.w + bv.w);
    }
    yr[i] = o;
  }
}

/* ------------------------------------------------------------------ embedding */

template <class T>
__global__ void embed_kernel(const int32_t *ids, const int32_t *pos, const T *tok, const T *pt, float *out, int rows,
                             int vocab, int n_pos, int dim) {
  pdl_prologue();
  LTE_GRID_STRIDE(i, (int64_t)rows * dim) {
    const int r = (int)(i / dim), c = (int)(i % dim);
    const int id = ids[r];
    float v = 0.0f;
    if (id >= 0 && id < vocab) v = to_f(tok[(size_t)id * dim + c]);
    if (pt) {
      const int p = pos[r];
      if (p >= 0 && p < n_pos) v += to_f(pt[(size_t)p * dim + c]);
    }
    out[i] = v;
  }
}

/* ------------------------------------------------------------------ rope + append */

template <class T>
__global__ void rope_append_kernel(float *qkv, int ld, T *kc, T *vc, const int32_t *slots, const int32_t *pos,
                                   int rows, int H, int HKV, int D, int max_t, float theta) {
  pdl_prologue();
  const int half = D / 2;
  const int64_t per_row = (int64_t)(H + HKV) * half + (int64_t)HKV * D;
  LTE_GRID_STRIDE(i, (int64_t)rows * per_row) {
    const int r = (int)(i / per_row);
    int64_t j = i % per_row;
    float *row = qkv + (size_t)r * ld;
    const int p = pos[r], slot = slots[r];
    if (j < (int64_t)(H + HKV) * half) {
      const int h = (int)(j / half), e = (int)(j % half);
      float *v = row + (size_t)h * D;
      float a0 = v[e], a1 = v[e + half];
      if (theta > 0.0f) {
        const double ang = (double)p * pow((double)theta, -2.0 * (double)e / (double)D);
        const float c = (float)cos(ang), s = (float)sin(ang);
        const float b0 = a0 * c - a1 * s, b1 = a1 * c + a0 * s;
        a0 = b0;
        a1 = b1;
        v[e] = a0;
        v[e + half] = a1;
      }
      if (h >= H && kc != nullptr) {
        const int g = h - H;
        const size_t base = (((size_t)slot * HKV + g) * max_t + p) * D;
        kc[base + e] = from_f<T>(a0);
        kc[base + e + half] = from_f<T>(a1);
      }
    } else if (kc != nullptr) {  // (kc == nullptr: the rotation only; an 8-bit cache appends apart)
      j -= (int64_t)(H + HKV) * half;
      const int g = (int)(j / D), d = (int)(j % D);
      const size_t base = (((size_t)slot * HKV + g) * max_t + p) * D;
      vc[base + d] = from_f<T>(row[(size_t)(H + HKV + g) * D + d]);
    }
  }
}

/* D odd (no rope possible): plain append of k and v. */
template <class T>
__global__ void append_odd_kernel(const float *qkv, int ld, T *kc, T *vc, const int32_t *slots, const int32_t *pos,
                                  int rows, int H, int HKV, int D, int max_t) {
  pdl_prologue();
  LTE_GRID_STRIDE(i, (int64_t)rows * HKV * D) {
    const int r = (int)(i / ((int64_t)HKV * D));
    const int g = (int)((i / D) % HKV), d = (int)(i % D);
    const float *row = qkv + (size_t)r * ld;
    const size_t base = (((size_t)slots[r] * HKV + g) * max_t + pos[r]) * D;
    kc[base + d] = from_f<T>(row[(size_t)(H + g) * D + d]);
    vc[base + d] = from_f<T>(row[(size_t)(H + HKV + g) * D + d]);
  }
}

/* LTE_DTYPE_I8 caches (lte.h): n_values int8 values, then one f32 scale per cached row. */
__host__ __device__ inline float *i8_scales(void *cache, int64_t n_values) {
  return reinterpret_cast<float *>(static_cast<char *>(cache) + LTE_KV_I8_SCALES(n_values));
}

/* x / scale rounded half to even, clamped to [-127, 127], NaN -> 0: the CPU reference's rule. */
__device__ __forceinline__ int8_t i8_quant(float x, float scale) {
  const float r = rintf(x / scale);
  if (r != r) return 0;
  return (int8_t)fminf(fmaxf(r, -127.0f), 127.0f);
}

/* The 8-bit append: one block per (row, K or V, kv head) quantizes that head's (rotated) row of
   qkv with scale = max|x| / 127 and stores the values and the scale. */
constexpr int kQuantThreads = 128;
__global__ void __launch_bounds__(kQuantThreads)
    quant_append_kernel(const float *qkv, int ld, int8_t *kc, int8_t *vc, const int32_t *slots, const int32_t *pos,
                        int H, int HKV, int D, int max_t, int64_t n_values) {
  pdl_prologue();
  __shared__ float red[32];
  const int r = blockIdx.x / (2 * HKV), j = blockIdx.x % (2 * HKV);
  const bool is_v = j >= HKV;
  const int g = is_v ? j - HKV : j;
  const float *x = qkv + (size_t)r * ld + (size_t)((is_v ? H + HKV : H) + g) * D;
  float m = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) m = fmaxf(m, fabsf(x[d]));
  m = block_max(m, red);
  const float scale = m / 127.0f;
  const size_t crow = ((size_t)slots[r] * HKV + g) * max_t + pos[r];
  int8_t *dst = is_v ? vc : kc;
  if (threadIdx.x == 0) i8_scales(dst, n_values)[crow] = scale;
  for (int d = threadIdx.x; d < D; d += blockDim.x) dst[crow * D + d] = scale > 0.0f ? i8_quant(x[d], scale) : 0;
}

/* ------------------------------------------------------------------ attention */

constexpr int kAttnThreads = 256;
constexpr int kAttnPart = 2048; /* floats of shared memory for the V partial sums */

/* One block per (row, head). Scores: one thread per cached position (a full q.k over D with
   16-byte loads: many independent loads in flight), kept in shared memory. Softmax: block max and
   sum. Values: thread (dc, tg) accumulates the 8 dims dc*8.. over the positions t = tg (mod TG),
   16-byte loads, then the TG partial sums are added in shared memory. VEC path: D % 8 == 0 and
   D <= 2048; otherwise one element per load. */
template <class T, bool VEC>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(const float *qkv, int ld, const T *kc, const T *vc,
                                                                 const int32_t *slots, const int32_t *pos, float *out,
                                                                 int H, int HKV, int D, int max_t, float scale) {
  pdl_prologue();
  extern __shared__ float sm_dyn[];
  __shared__ float red[32];
  const int r = blockIdx.x / H, h = blockIdx.x % H;
  const int len = pos[r] + 1;
  const int g = h / (H / HKV);
  const float *q = qkv + (size_t)r * ld + (size_t)h * D;
  const size_t base = ((size_t)slots[r] * HKV + g) * (size_t)max_t * D;
  float *qs = sm_dyn;              // D
  float *sc = sm_dyn + D;          // max_t
  float *part = sc + max_t;        // kAttnPart
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = q[d];
  __syncthreads();
  float mx = -INFINITY;
  for (int t = threadIdx.x; t < len; t += blockDim.x) {
    const T *kr = kc + base + (size_t)t * D;
    float dot = 0.0f;
    if (VEC) {
      for (int d0 = 0; d0 < D; d0 += 8) {
        float kv[8];
        W8<T>::load(kr + d0, kv);
#pragma unroll
        for (int j = 0; j < 8; j++) dot = fmaf(qs[d0 + j], kv[j], dot);
      }
    } else {
      for (int d = 0; d < D; d++) dot = fmaf(qs[d], to_f(kr[d]), dot);
    }
    dot *= scale;
    sc[t] = dot;
    mx = fmaxf(mx, dot);
  }
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int t = threadIdx.x; t < len; t += blockDim.x) {
    const float e = expf(sc[t] - mx);
    sc[t] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // its leading __syncthreads orders the sc writes
  const float inv = 1.0f / sum;
  float *o = out + (size_t)r * H * D + (size_t)h * D;
  if (VEC) {
    const int DC = D / 8;                       // 8-wide chunks per row
    const int TG = blockDim.x / DC > 0 ? blockDim.x / DC : 1;  // position groups
    const int dc = threadIdx.x % DC, tg = threadIdx.x / DC;
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    if (tg < TG && (int)threadIdx.x < TG * DC) {
      for (int t = tg; t < len; t += TG) {
        float vv[8];
        W8<T>::load(vc + base + (size_t)t * D + dc * 8, vv);
        const float p = sc[t];
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j] = fmaf(p, vv[j], acc[j]);
      }
    }
    // reduce the TG partial sums, kAttnPart / D groups at a time
    const int G = kAttnPart / D;
    for (int g0 = 0; g0 < TG; g0 += G) {
      __syncthreads();
      if ((int)threadIdx.x < TG * DC && tg >= g0 && tg < g0 + G) {
#pragma unroll
        for (int j = 0; j < 8; j++) part[(tg - g0) * D + dc * 8 + j] = acc[j];
      }
      __syncthreads();
      for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = g0 == 0 ? 0.0f : o[d];
        const int gn = min(G, TG - g0);
        for (int q2 = 0; q2 < gn; q2++) s += part[q2 * D + d];
        o[d] = s;
      }
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] *= inv;
  } else {
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      const T *vr = vc + base + d;
      float acc = 0.0f;
      for (int t = 0; t < len; t++) acc = fmaf(sc[t], to_f(vr[(size_t)t * D]), acc);
      o[d] = acc * inv;
    }
  }
}

#include "decode_attention.cuh"
#include "decode_sffn.cuh"

/* ------------------------------------------------------------------ router mask */

__global__ void router_mask_kernel(const float *logits, float *mask, int32_t *counts, int count_ld, int E,
                                   float threshold) {
  pdl_prologue();
  __shared__ int sm[32];
  const int r = blockIdx.x;
  int c = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const bool on = logits[(size_t)r * E + e] > threshold;
    mask[(size_t)r * E + e] = on ? 1.0f : 0.0f;
    c += on ? 1 : 0;
  }
  c = block_sum(c, sm);
  if (counts && threadIdx.x == 0) counts[(size_t)r * count_ld] = c;
}

#include "decode_blas.cuh"

/* ------------------------------------------------------------------ sampling */

constexpr int kSampleThreads = 1024;
constexpr int kSampleU = 8;  // float4 loads per thread in flight (greedy)

__device__ __forceinline__ uint32_t fkey(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float unkey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ int block_sum_int(int v, int *smem) { return block_sum(v, smem); }

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(const float *logits, const float *temperature,
                                                                 const int32_t *top_k, const float *top_p,
                                                                 const uint64_t *seeds, int32_t *pos, int32_t *ids,
                                                                 int32_t *out, float *scratch, int V, int advance) {
  pdl_prologue();
  __shared__ float fsm[32];
  __shared__ int ism[32];
  __shared__ float chunk_prefix[kSampleThreads];
  const int r = blockIdx.x;
  const float *x = logits + (size_t)r * V;
  float *e = scratch + (size_t)r * V;
  const float temp = temperature[r];
  int chosen = 0;
  if (!(temp > 0.0f)) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    auto consider = [&](float v, int c) {
      if (v > bv || (v == bv && c < bi)) {
        bv = v;
        bi = c;
      }
    };
    if ((V & 3) == 0 && ((uintptr_t)x & 15) == 0) {
      // all of a thread's float4 loads issued at once: one round trip for V <= 4 * kSampleU *
      // kSampleThreads (a scalar loop waited for each of its ~32 loads in turn: 17 us at V 32000)
      const float4 *x4 = reinterpret_cast<const float4 *>(x);
      const int V4 = V >> 2;
      for (int c0 = threadIdx.x; c0 < V4; c0 += kSampleU * blockDim.x) {
        float4 v[kSampleU];
#pragma unroll
        for (int u = 0; u < kSampleU; u++) {
          const int c = c0 + u * (int)blockDim.x;
          v[u] = c < V4 ? x4[c] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < kSampleU; u++) {
          const int c = c0 + u * (int)blockDim.x;
          if (c >= V4) break;
          consider(v[u].x, 4 * c);
          consider(v[u].y, 4 * c + 1);
          consider(v[u].z, 4 * c + 2);
          consider(v[u].w, 4 * c + 3);
        }
      }
    } else {
#pragma unroll 8
      for (int c = threadIdx.x; c < V; c += blockDim.x) consider(x[c], c);
    }
    // (value, index) reduction: larger value, then lower index
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    __shared__ float wv[32];
    __shared__ int wi[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) {
      wv[wid] = bv;
      wi[wid] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float v = wv[0];
      int i = wi[0];
      for (int w = 1; w < (int)(blockDim.x >> 5); w++) {
        if (wv[w] > v || (wv[w] == v && wi[w] < i)) {
          v = wv[w];
          i = wi[w];
        }
      }
      chosen = i == INT_MAX ? 0 : i;
    }
  } else {
    const float inv_t = 1.0f / temp;
    float mx = -INFINITY;
#pragma unroll 8
    for (int c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, x[c] * inv_t);
    mx = block_max(mx, fsm);
    const int k = top_k[r];
    float kth = -INFINITY;
    if (k > 0 && k < V) {
      // largest key t with count{key(z) >= t} >= k, built bit by bit from the top
      uint32_t t = 0;
      for (int b = 31; b >= 0; b--) {
        const uint32_t cand = t | (1u << b);
        int cnt = 0;
#pragma unroll 8
        for (int c = threadIdx.x; c < V; c += blockDim.x) cnt += fkey(x[c] * inv_t) >= cand ? 1 : 0;
        cnt = block_sum_int(cnt, ism);
        if (cnt >= k) t = cand;
      }
      kth = unkey(t);
    }
    float z = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float zz = x[c] * inv_t;
      const float ev = zz >= kth ? expf(zz - mx) : 0.0f;
      e[c] = ev;
      z += ev;
    }
    z = block_sum(z, fsm);
    float cut = 0.0f;
    const float tp = top_p[r];
    if (tp < 1.0f) {
      // largest v (bit pattern of a non-negative float) with sum{e >= v} >= tp * z
      const float target = tp * z;
      uint32_t t = 0;
      for (int b = 30; b >= 0; b--) {
        const uint32_t cand = t | (1u << b);
        const float v = __uint_as_float(cand);
        float m = 0.0f;
#pragma unroll 8
        for (int c = threadIdx.x; c < V; c += blockDim.x) m += e[c] >= v ? e[c] : 0.0f;
        m = block_sum(m, fsm);
        if (m >= target) t = cand;
      }
      cut = __uint_as_float(t);
    }
    // ordered walk: thread i owns the contiguous chunk [i*C, (i+1)*C)
    const int C = (V + blockDim.x - 1) / blockDim.x;
    const int c0 = threadIdx.x * C, c1 = min(V, c0 + C);
    float mass = 0.0f;
    int last = -1;
    for (int c = c0; c < c1; c++) {
      const float ev = e[c];
      if (ev > 0.0f && ev >= cut) {
        mass += ev;
        last = c;
      }
    }
    chunk_prefix[threadIdx.x] = mass;
    __syncthreads();
    if (threadIdx.x == 0) {  // sequential exclusive scan over 1024 chunk sums (index order)
      float run = 0.0f;
      for (int i = 0; i < (int)blockDim.x; i++) {
        const float m = chunk_prefix[i];
        chunk_prefix[i] = run;
        run += m;
      }
      fsm[0] = run;
    }
    __syncthreads();
    const float kept = fsm[0];
    const float u = lte_uniform(seeds[r], pos[r]) * kept;
    int found = INT_MAX;
    float run = chunk_prefix[threadIdx.x];
    if (run <= u || threadIdx.x == 0) {
      for (int c = c0; c < c1; c++) {
        const float ev = e[c];
        if (!(ev > 0.0f && ev >= cut)) continue;
        run += ev;
        if (run > u) {
          found = c;
          break;
        }
      }
    }
    // first crossing in index order; fall back to the last kept index
    int f = found;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) f = min(f, __shfl_xor_sync(0xffffffffu, f, o));
    int l = last;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) l = max(l, __shfl_xor_sync(0xffffffffu, l, o));
    __shared__ int wf[32], wl[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
      wf[wid] = f;
      wl[wid] = l;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int ff = INT_MAX, ll = -1;
      for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
        ff = min(ff, wf[w]);
        ll = max(ll, wl[w]);
      }
      chosen = ff != INT_MAX ? ff : (ll >= 0 ? ll : 0);
    }
  }
  if (threadIdx.x == 0) {
    out[r] = chosen;
    if (advance) {
      ids[r] = chosen;
      pos[r] += 1;
    }
  }
}

/* ------------------------------------------------------------------ utilities */

template <class T>
__global__ void fill_random_kernel(T *x, int64_t n, uint64_t seed, float scale) {
  LTE_GRID_STRIDE(i, n) x[i] = from_f<T>(scale * (2.0f * lte_uniform(seed, i) - 1.0f));
}

template <class T>
__global__ void convert_kernel(const float *x, T *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) y[i] = from_f<T>(x[i]);
}

/* hi = T(x), lo = T(x - hi): lte_dec_convert_split */
template <class T>
__global__ void convert_split_kernel(const float *x, T *hi, T *lo, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const T h = from_f<T>(x[i]);
    hi[i] = h;
    lo[i] = from_f<T>(x[i] - to_f<T>(h));
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

#define LTE_REQUIRE_WDT(dt)                                                                                 \
  do {                                                                                                      \
    if ((dt) != LTE_DTYPE_F32 && (dt) != LTE_DTYPE_F16 && (dt) != LTE_DTYPE_BF16) {                         \
      if ((dt) == LTE_DTYPE_I32)                                                                            \
        return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "%s i32 is not supported (f32, f16, bf16)", #dt); \
      if ((dt) == LTE_DTYPE_I8)                                                                             \
        return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "%s i8 is a KV-cache dtype only (f32, f16, bf16)",  \
                         #dt);                                                                              \
      return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "unknown %s %d", #dt, (int)(dt));              \
    }                                                                                                       \
  } while (0)

/* The KV cache's dtype: a weight dtype or LTE_DTYPE_I8 (lte.h). */
#define LTE_REQUIRE_KVDT(dt)                \
  do {                                      \
    if ((dt) != LTE_DTYPE_I8) LTE_REQUIRE_WDT(dt); \
  } while (0)

/* LTE_DEC_DIAG_SKIP_LINEAR="NxK[,NxK...]" (a diagnostic, wrong results): lte_dec_linear calls of
   n outputs and k inputs launch nothing, so a step's time without them gives those GEMVs' share of
   the step, boundaries included (bench/decode_bench.ts "skip" rows; with LTE_DEC_DIAG_SKIP_ATTN and
   LTE_DEC_DIAG_SKIP_SFFN every op of a layer can be left out in turn). Read at each call: a graph
   keeps what its capture saw. */
static bool diag_skip_linear(int n, int k) {
  const char *e = getenv("LTE_DEC_DIAG_SKIP_LINEAR");
  if (e == nullptr) return false;
  while (*e) {
    char *end = nullptr;
    const long sn = strtol(e, &end, 10);
    if (end == e || *end != 'x') return false;
    const char *k0 = end + 1;
    const long sk = strtol(k0, &end, 10);
    if (end == k0) return false;
    if (sn == n && sk == k) return true;
    e = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0') return false;
  }
  return false;
}

extern "C" LTE_API lte_status lte_dec_linear(lte_ctx_t *ctx, lte_dtype wdtype, const void *w, const void *x,
                                             int32_t ldx, int32_t x_mode, const void *norm_w, const void *norm_b,
                                             float eps, const void *in_mask, const void *out_mask, int32_t out_period,
                                             int32_t expert_size, const void *bias, void *y, int32_t rows, int32_t n,
                                             int32_t k, int32_t accumulate, int32_t act) {
  LTE_ENTER("lte_dec_linear");
  LTE_REQUIRE_WDT(wdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(n);
  LTE_CHECK_POS(k);
  LTE_REQUIRE(x_mode >= LTE_DEC_X_PLAIN && x_mode <= LTE_DEC_X_LAYERNORM, "x_mode = %d is not a LTE_DEC_X_* value",
              (int)x_mode);
  LTE_REQUIRE(act >= LTE_DEC_ACT_NONE && act <= LTE_DEC_ACT_GELU, "act = %d is not a LTE_DEC_ACT_* value", (int)act);
  LTE_REQUIRE(act == LTE_DEC_ACT_NONE || !accumulate, "accumulate needs act = LTE_DEC_ACT_NONE");
  LTE_REQUIRE(ldx >= k, "ldx = %d < k = %d", (int)ldx, (int)k);
  LTE_REQUIRE(!(in_mask || out_mask) || expert_size > 0, "expert_size = %d must be > 0 with a mask",
              (int)expert_size);
  LTE_REQUIRE(!in_mask || k % expert_size == 0, "k = %d is not a multiple of expert_size %d", (int)k,
              (int)expert_size);
  LTE_REQUIRE(!out_mask || (out_period > 0 && out_period % expert_size == 0 && n % out_period == 0),
              "out_period = %d must be > 0, a multiple of expert_size %d and divide n = %d", (int)out_period,
              (int)expert_size, (int)n);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(w);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  if (x_mode != LTE_DEC_X_PLAIN) LTE_REQUIRE_PTR(norm_w);
  if (x_mode == LTE_DEC_X_LAYERNORM) LTE_REQUIRE_PTR(norm_b);
  if (diag_skip_linear(n, k)) return LTE_STATUS_OK;
  LinArgs a{w,          F32(x),      ldx,   x_mode,      F32(norm_w), F32(norm_b), eps, F32(in_mask), F32(out_mask),
            out_period, expert_size, F32(bias), F32W(y), n,          k,           accumulate, act};
  const size_t wb = wdtype == LTE_DTYPE_F32 ? 4 : 2;
  const bool vec = k % 8 == 0 && ldx % 4 == 0 && (!in_mask || expert_size % 8 == 0) && ((uintptr_t)w % 16 == 0) &&
                   ((uintptr_t)x % 16 == 0) && ((size_t)k * wb) % 16 == 0 &&
                   (x_mode == LTE_DEC_X_PLAIN || (uintptr_t)norm_w % 16 == 0) &&
                   (x_mode != LTE_DEC_X_LAYERNORM || (uintptr_t)norm_b % 16 == 0);
  cudaError_t e;
  if (blas_applies(blas_tune(), ctx, wdtype, rows, in_mask || out_mask, vec, expert_size))
    return blas_linear(ctx, FN, wdtype, a, rows);
  const GemvTune tune = gemv_tune();
  if (mma_applies(tune, wdtype, a, rows, vec, sm_count_of(ctx))) {
    if (wdtype == LTE_DTYPE_F16) e = launch_mma<__half>(a, rows, tune, sm_count_of(ctx), ctx->stream);
    else e = launch_mma<__nv_bfloat16>(a, rows, tune, sm_count_of(ctx), ctx->stream);
    if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of gemv_mma_kernel", e, __FILE__, __LINE__);
    return LTE_STATUS_OK;
  }
  if (gemv_applies(tune, wdtype, a, rows, vec)) {
    if (wdtype == LTE_DTYPE_F16) e = launch_gemv<__half>(a, rows, tune, sm_count_of(ctx), ctx->stream);
    else e = launch_gemv<__nv_bfloat16>(a, rows, tune, sm_count_of(ctx), ctx->stream);
    if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of gemv_kernel", e, __FILE__, __LINE__);
    return LTE_STATUS_OK;
  }
  if (wdtype == LTE_DTYPE_F32) e = launch_linear<float>(a, rows, ctx->stream, vec);
  else if (wdtype == LTE_DTYPE_F16) e = launch_linear<__half>(a, rows, ctx->stream, vec);
  else e = launch_linear<__nv_bfloat16>(a, rows, ctx->stream, vec);
  if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of linear_kernel", e, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_linear_t_sparse(lte_ctx_t *ctx, lte_dtype wdtype, const void *wt, const void *h,
                                                      const void *mask, const void *bias, void *y, int32_t rows,
                                                      int32_t n, int32_t k, int32_t expert_size) {
  LTE_ENTER("lte_dec_linear_t_sparse");
  LTE_REQUIRE_WDT(wdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(n);
  LTE_CHECK_POS(k);
  LTE_CHECK_POS(expert_size);
  LTE_REQUIRE(k % expert_size == 0, "k = %d is not a multiple of expert_size %d", (int)k, (int)expert_size);
  LTE_REQUIRE(n % 8 == 0, "n = %d must be a multiple of 8", (int)n);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(wt);
  LTE_REQUIRE_PTR(h);
  LTE_REQUIRE_PTR(mask);
  LTE_REQUIRE_PTR(y);
  LTE_REQUIRE((uintptr_t)wt % 16 == 0, "wt must be 16-byte aligned");
  if (blas_applies(blas_tune(), ctx, wdtype, rows, true, k % 8 == 0 && (uintptr_t)h % 16 == 0, expert_size))
    return blas_t_sparse(ctx, FN, wdtype, wt, F32(h), F32(mask), F32(bias), F32W(y), rows, n, k, expert_size);
  const GemvTune tune = gemv_tune();
  if (ts_mma_applies(tune, wdtype, h, rows, n, k, expert_size, sm_count_of(ctx))) {
    cudaError_t e;
    if (wdtype == LTE_DTYPE_F16)
      e = launch_ts_mma<__half>(static_cast<const __half *>(wt), F32(h), F32(mask), F32(bias), F32W(y), rows, n, k,
                                expert_size, sm_count_of(ctx), ctx->stream, tune.ts_mma);
    else
      e = launch_ts_mma<__nv_bfloat16>(static_cast<const __nv_bfloat16 *>(wt), F32(h), F32(mask), F32(bias), F32W(y),
                                       rows, n, k, expert_size, sm_count_of(ctx), ctx->stream, tune.ts_mma);
    if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of ts_mma_kernel", e, __FILE__, __LINE__);
    return LTE_STATUS_OK;
  }
  if (ts_applies(tune, wdtype, rows, k, expert_size, sm_count_of(ctx))) {
    cudaError_t e;
    if (wdtype == LTE_DTYPE_F16)
      e = launch_ts<__half>(static_cast<const __half *>(wt), F32(h), F32(mask), F32(bias), F32W(y), rows, n, k,
                            expert_size, tune, sm_count_of(ctx), ctx->stream);
    else
      e = launch_ts<__nv_bfloat16>(static_cast<const __nv_bfloat16 *>(wt), F32(h), F32(mask), F32(bias), F32W(y),
                                   rows, n, k, expert_size, tune, sm_count_of(ctx), ctx->stream);
    if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of ts_kernel", e, __FILE__, __LINE__);
    return LTE_STATUS_OK;
  }
  const int E = k / expert_size;
  const dim3 grid((unsigned)((E + kTsExperts - 1) / kTsExperts), (unsigned)((n + 8 * kTsThreads - 1) / (8 * kTsThreads)));
  for (int r0 = 0; r0 < rows; r0 += 8) {
    const int rb = rows - r0 < 8 ? rows - r0 : 8;
    const float *hb = F32(h) + (size_t)r0 * k;
    const float *mb = F32(mask) + (size_t)r0 * E;
    float *yb = F32W(y) + (size_t)r0 * n;
    const float *bb = F32(bias);  // every chunk of rows gets the bias once
#define LTE_TS(T)                                                                                              \
  if (rb == 1)                                                                                                 \
    LTE_CUDA_TRY(dlaunch(linear_t_sparse_kernel<T, 1>, dim3(grid), dim3(kTsThreads), 0, ctx->stream, static_cast<const T *>(wt), hb, mb, bb, yb, \
                                                                        rb, n, k, expert_size));                \
  else                                                                                                         \
    LTE_CUDA_TRY(dlaunch(linear_t_sparse_kernel<T, 8>, dim3(grid), dim3(kTsThreads), 0, ctx->stream, static_cast<const T *>(wt), hb, mb, bb, yb, \
                                                                        rb, n, k, expert_size))
    if (wdtype == LTE_DTYPE_F32) LTE_TS(float);
    else if (wdtype == LTE_DTYPE_F16) LTE_TS(__half);
    else LTE_TS(__nv_bfloat16);
#undef LTE_TS
    LTE_LAUNCH_CHECK("linear_t_sparse_kernel");
  }
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_norm(lte_ctx_t *ctx, const void *x, const void *w, const void *b, void *y,
                                           int32_t rows, int32_t cols, float eps, int32_t kind) {
  LTE_ENTER("lte_dec_norm");
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(cols);
  LTE_REQUIRE(kind == 0 || kind == 1, "kind = %d (0 rms, 1 layer)", (int)kind);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(w);
  LTE_REQUIRE_PTR(y);
  if (kind == 1) LTE_REQUIRE_PTR(b);
  const bool vec4 = cols % 4 == 0 && cols <= kNormVecThreads * 4 * kNormVec && (uintptr_t)x % 16 == 0 &&
                    (uintptr_t)y % 16 == 0 && (uintptr_t)w % 16 == 0 && (kind == 0 || (uintptr_t)b % 16 == 0);
  if (vec4) {
    LTE_CUDA_TRY(dlaunch(norm_vec_kernel, dim3(rows), dim3(kNormVecThreads), 0, ctx->stream, F32(x), F32(w), F32(b),
                         F32W(y), cols, eps, kind));
    LTE_LAUNCH_CHECK("norm_vec_kernel");
    return LTE_STATUS_OK;
  }
  LTE_CUDA_TRY(dlaunch(norm_kernel, dim3(rows), dim3(256), 0, ctx->stream, F32(x), F32(w), F32(b), F32W(y), cols, eps, kind));
  LTE_LAUNCH_CHECK("norm_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_embed(lte_ctx_t *ctx, lte_dtype wdtype, const int32_t *ids, const int32_t *pos,
                                            const void *tok, const void *pos_table, void *out, int32_t rows,
                                            int32_t vocab, int32_t n_pos, int32_t dim) {
  LTE_ENTER("lte_dec_embed");
  LTE_REQUIRE_WDT(wdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(vocab);
  LTE_CHECK_POS(dim);
  if (pos_table) LTE_CHECK_POS(n_pos);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(ids);
  LTE_REQUIRE_PTR(tok);
  LTE_REQUIRE_PTR(out);
  if (pos_table) LTE_REQUIRE_PTR(pos);
  const int64_t n = (int64_t)rows * dim;
  const unsigned g = grid_for(ctx, n);
  if (wdtype == LTE_DTYPE_F32)
    LTE_CUDA_TRY(dlaunch(embed_kernel<float>, dim3(g), dim3(kThreads), 0, ctx->stream, ids, pos, F32(tok), F32(pos_table), F32W(out), rows, vocab,
                                                         n_pos, dim));
  else if (wdtype == LTE_DTYPE_F16)
    LTE_CUDA_TRY(dlaunch(embed_kernel<__half>, dim3(g), dim3(kThreads), 0, ctx->stream, ids, pos, static_cast<const __half *>(tok),
                                                          static_cast<const __half *>(pos_table), F32W(out), rows,
                                                          vocab, n_pos, dim));
  else
    LTE_CUDA_TRY(dlaunch(embed_kernel<__nv_bfloat16>, dim3(g), dim3(kThreads), 0, ctx->stream, 
        ids, pos, static_cast<const __nv_bfloat16 *>(tok), static_cast<const __nv_bfloat16 *>(pos_table), F32W(out),
        rows, vocab, n_pos, dim));
  LTE_LAUNCH_CHECK("embed_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_rope_append(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld,
                                                  void *k_cache, void *v_cache, const int32_t *slots,
                                                  const int32_t *pos, int32_t rows, int32_t heads, int32_t kv_heads,
                                                  int32_t head_dim, int32_t n_slots, int32_t max_t, float theta) {
  LTE_ENTER("lte_dec_rope_append");
  LTE_REQUIRE_KVDT(kvdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(heads);
  LTE_CHECK_POS(kv_heads);
  LTE_CHECK_POS(head_dim);
  LTE_CHECK_POS(n_slots);
  LTE_CHECK_POS(max_t);
  LTE_REQUIRE(heads % kv_heads == 0, "heads %d not divisible by kv_heads %d", (int)heads, (int)kv_heads);
  LTE_REQUIRE(!(theta > 0.0f) || head_dim % 2 == 0, "head_dim %d must be even for RoPE", (int)head_dim);
  LTE_REQUIRE((int64_t)ld >= (int64_t)(heads + 2 * kv_heads) * head_dim, "ld = %d < (H + 2 HKV) D", (int)ld);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(qkv);
  LTE_REQUIRE_PTR(k_cache);
  LTE_REQUIRE_PTR(v_cache);
  LTE_REQUIRE_PTR(slots);
  LTE_REQUIRE_PTR(pos);
  const bool odd = head_dim % 2 != 0;
  const int64_t n = odd ? (int64_t)rows * kv_heads * head_dim
                        : (int64_t)rows * ((int64_t)(heads + kv_heads) * (head_dim / 2) + (int64_t)kv_heads * head_dim);
  const unsigned g = grid_for(ctx, n);
#define LTE_RA(T)                                                                                               \
  if (odd)                                                                                                      \
    LTE_CUDA_TRY(dlaunch(append_odd_kernel<T>, dim3(g), dim3(kThreads), 0, ctx->stream, F32(qkv), ld, static_cast<T *>(k_cache),              \
                                                          static_cast<T *>(v_cache), slots, pos, rows, heads,  \
                                                          kv_heads, head_dim, max_t));                          \
  else                                                                                                          \
    LTE_CUDA_TRY(dlaunch(rope_append_kernel<T>, dim3(g), dim3(kThreads), 0, ctx->stream, F32W(qkv), ld, static_cast<T *>(k_cache),            \
                                                           static_cast<T *>(v_cache), slots, pos, rows, heads, \
                                                           kv_heads, head_dim, max_t, theta))
  if (kvdtype == LTE_DTYPE_I8) {
    // the rotation in place (no append), then the quantizing append, one block per (row, K/V, head)
    if (!odd && theta > 0.0f)
      LTE_CUDA_TRY(dlaunch(rope_append_kernel<float>, dim3(g), dim3(kThreads), 0, ctx->stream, F32W(qkv), ld,
                           static_cast<float *>(nullptr), static_cast<float *>(nullptr), slots, pos, rows, heads,
                           kv_heads, head_dim, max_t, theta));
    LTE_CUDA_TRY(dlaunch(quant_append_kernel, dim3((unsigned)rows * 2u * (unsigned)kv_heads), dim3(kQuantThreads), 0,
                         ctx->stream, F32(qkv), ld, static_cast<int8_t *>(k_cache), static_cast<int8_t *>(v_cache),
                         slots, pos, heads, kv_heads, head_dim, max_t,
                         (int64_t)n_slots * kv_heads * max_t * head_dim));
  } else if (kvdtype == LTE_DTYPE_F32) LTE_RA(float);
  else if (kvdtype == LTE_DTYPE_F16) LTE_RA(__half);
  else LTE_RA(__nv_bfloat16);
#undef LTE_RA
  LTE_LAUNCH_CHECK("rope_append_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_attention(lte_ctx_t *ctx, lte_dtype kvdtype, const void *qkv, int32_t ld,
                                                const void *k_cache, const void *v_cache, const int32_t *slots,
                                                const int32_t *pos, void *out, int32_t rows, int32_t heads,
                                                int32_t kv_heads, int32_t head_dim, int32_t n_slots, int32_t max_t,
                                                float scale) {
  LTE_ENTER("lte_dec_attention");
  LTE_REQUIRE_KVDT(kvdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(heads);
  LTE_CHECK_POS(kv_heads);
  LTE_CHECK_POS(head_dim);
  LTE_CHECK_POS(n_slots);
  LTE_CHECK_POS(max_t);
  LTE_REQUIRE(heads % kv_heads == 0, "heads %d not divisible by kv_heads %d", (int)heads, (int)kv_heads);
  LTE_REQUIRE((int64_t)ld >= (int64_t)heads * head_dim, "ld = %d < H * D", (int)ld);
  const size_t smem = (size_t)(head_dim + max_t + kAttnPart) * sizeof(float);
  LTE_REQUIRE(smem <= 200 * 1024, "max_t = %d needs %zu bytes of shared memory (limit 200 KiB)", (int)max_t, smem);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(qkv);
  LTE_REQUIRE_PTR(k_cache);
  LTE_REQUIRE_PTR(v_cache);
  LTE_REQUIRE_PTR(slots);
  LTE_REQUIRE_PTR(pos);
  LTE_REQUIRE_PTR(out);
  const size_t eb = kvdtype == LTE_DTYPE_F32 ? 4 : 2;
  const bool vec = head_dim % 8 == 0 && head_dim <= kAttnPart && ((size_t)head_dim * eb) % 16 == 0 &&
                   (uintptr_t)k_cache % 16 == 0 && (uintptr_t)v_cache % 16 == 0;
  const unsigned blocks = (unsigned)rows * (unsigned)heads;
#define LTE_ATT(T, V)                                                                                              \
  do {                                                                                                             \
    if (smem > 48 * 1024)                                                                                          \
      LTE_CUDA_TRY(cudaFuncSetAttribute(attention_kernel<T, V>, cudaFuncAttributeMaxDynamicSharedMemorySize,      \
                                        200 * 1024));                                                              \
    LTE_CUDA_TRY(dlaunch(attention_kernel<T, V>, dim3(blocks), dim3(kAttnThreads), smem, ctx->stream,                                            \
        F32(qkv), ld, static_cast<const T *>(k_cache), static_cast<const T *>(v_cache), slots, pos, F32W(out), heads, \
        kv_heads, head_dim, max_t, scale));                                                                         \
  } while (0)
  {
    cudaError_t e = cudaSuccess;
    if (launch_flash<false>(ctx, kvdtype, F32(qkv), ld, const_cast<void *>(k_cache), const_cast<void *>(v_cache), slots,
                            pos, F32W(out), rows, heads, kv_heads, head_dim, n_slots, max_t, scale, 0.0f,
                            ctx->stream, &e)) {
      LTE_CUDA_TRY(e);
      return LTE_STATUS_OK;
    }
  }
  LTE_REQUIRE(kvdtype != LTE_DTYPE_I8,
              "kvdtype i8 needs head_dim a power of two in [8, 256] on CUDA (head_dim %d; the flash kernel)",
              (int)head_dim);
  if (kvdtype == LTE_DTYPE_F32) {
    if (vec) LTE_ATT(float, true); else LTE_ATT(float, false);
  } else if (kvdtype == LTE_DTYPE_F16) {
    if (vec) LTE_ATT(__half, true); else LTE_ATT(__half, false);
  } else {
    if (vec) LTE_ATT(__nv_bfloat16, true); else LTE_ATT(__nv_bfloat16, false);
  }
#undef LTE_ATT
  LTE_LAUNCH_CHECK("attention_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_rope_attention(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld,
                                                     void *k_cache, void *v_cache, const int32_t *slots,
                                                     const int32_t *pos, void *out, int32_t rows, int32_t heads,
                                                     int32_t kv_heads, int32_t head_dim, int32_t n_slots,
                                                     int32_t max_t, float theta, float scale) {
  LTE_ENTER("lte_dec_rope_attention");
  LTE_REQUIRE_KVDT(kvdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(heads);
  LTE_CHECK_POS(kv_heads);
  LTE_CHECK_POS(head_dim);
  LTE_CHECK_POS(n_slots);
  LTE_CHECK_POS(max_t);
  LTE_REQUIRE(heads % kv_heads == 0, "heads %d not divisible by kv_heads %d", (int)heads, (int)kv_heads);
  LTE_REQUIRE(!(theta > 0.0f) || head_dim % 2 == 0, "head_dim %d must be even for RoPE", (int)head_dim);
  LTE_REQUIRE((int64_t)ld >= (int64_t)(heads + 2 * kv_heads) * head_dim, "ld = %d < (H + 2 HKV) D", (int)ld);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(qkv);
  LTE_REQUIRE_PTR(k_cache);
  LTE_REQUIRE_PTR(v_cache);
  LTE_REQUIRE_PTR(slots);
  LTE_REQUIRE_PTR(pos);
  LTE_REQUIRE_PTR(out);
  // LTE_DEC_DIAG_SKIP_ATTN=1 (a diagnostic, wrong results): no launch, so a step's time without it
  // gives the attention's own share of the step (the benches' "attention skipped" rows)
  const char *skip = getenv("LTE_DEC_DIAG_SKIP_ATTN");
  if (skip != nullptr && skip[0] == '1') return LTE_STATUS_OK;
  cudaError_t e = cudaSuccess;
  if (launch_flash<true>(ctx, kvdtype, F32(qkv), ld, k_cache, v_cache, slots, pos, F32W(out), rows, heads, kv_heads,
                         head_dim, n_slots, max_t, scale, theta, ctx->stream, &e)) {
    LTE_CUDA_TRY(e);
    return LTE_STATUS_OK;
  }
  // other head sizes (or LTE_DEC_ATTN=old): the two ops
  const lte_status st = lte_dec_rope_append(ctx, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, rows, heads,
                                            kv_heads, head_dim, n_slots, max_t, theta);
  if (st != LTE_STATUS_OK) return st;
  return lte_dec_attention(ctx, kvdtype, qkv, ld, k_cache, v_cache, slots, pos, out, rows, heads, kv_heads,
                           head_dim, n_slots, max_t, scale);
}

extern "C" LTE_API lte_status lte_dec_router_mask(lte_ctx_t *ctx, const void *logits, void *mask, int32_t *counts,
                                                  int32_t count_ld, int32_t rows, int32_t n_experts,
                                                  float threshold) {
  LTE_ENTER("lte_dec_router_mask");
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(n_experts);
  if (counts) LTE_CHECK_POS(count_ld);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(mask);
  LTE_CUDA_TRY(dlaunch(router_mask_kernel, dim3(rows), dim3(256), 0, ctx->stream, F32(logits), F32W(mask), counts, count_ld, n_experts, threshold));
  LTE_LAUNCH_CHECK("router_mask_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_sparse_ffn(lte_ctx_t *ctx, lte_dtype wdtype, void *x, int32_t x_mode,
                                                 const void *norm_w, const void *norm_b, float eps,
                                                 const void *w_router, const void *b_router, float threshold,
                                                 const void *w_fc, const void *b_fc, const void *w_down_t,
                                                 const void *b_down, void *xn, void *mask, int32_t *counts,
                                                 int32_t rows, int32_t d_model, int32_t d_ff, int32_t expert_size,
                                                 int32_t act) {
  LTE_ENTER("lte_dec_sparse_ffn");
  LTE_REQUIRE_WDT(wdtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(d_model);
  LTE_CHECK_POS(d_ff);
  LTE_CHECK_POS(expert_size);
  LTE_REQUIRE(x_mode >= LTE_DEC_X_PLAIN && x_mode <= LTE_DEC_X_LAYERNORM, "x_mode = %d is not a LTE_DEC_X_* value",
              (int)x_mode);
  const bool router_rows = (act & LTE_DEC_SFFN_ROUTER_ROWS) != 0;  // used by the masked-dense path only
  act &= ~LTE_DEC_SFFN_ROUTER_ROWS;
  LTE_REQUIRE(act == LTE_DEC_ACT_SWIGLU || act == LTE_DEC_ACT_GELU,
              "act = %d must be LTE_DEC_ACT_SWIGLU or LTE_DEC_ACT_GELU (optionally | LTE_DEC_SFFN_ROUTER_ROWS)",
              (int)act);
  LTE_REQUIRE(d_ff % expert_size == 0, "d_ff = %d is not a multiple of expert_size %d", (int)d_ff, (int)expert_size);
  LTE_REQUIRE(d_model % 8 == 0 && d_model <= kSfMaxC, "d_model = %d must be a multiple of 8 and <= 8192",
              (int)d_model);
  LTE_REQUIRE(d_ff / expert_size <= kSfMaxE, "%d experts per layer exceed 4096", (int)(d_ff / expert_size));
  if (rows == 0) return LTE_STATUS_OK;
  // LTE_DEC_DIAG_SKIP_SFFN=1 (a diagnostic, wrong results): the block launches nothing (see
  // diag_skip_linear)
  const char *skip_sffn = getenv("LTE_DEC_DIAG_SKIP_SFFN");
  if (skip_sffn != nullptr && skip_sffn[0] == '1') return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(w_router);
  LTE_REQUIRE_PTR(w_fc);
  LTE_REQUIRE_PTR(w_down_t);
  LTE_REQUIRE_PTR(xn);
  LTE_REQUIRE_PTR(mask);
  if (x_mode != LTE_DEC_X_PLAIN) LTE_REQUIRE_PTR(norm_w);
  if (x_mode == LTE_DEC_X_LAYERNORM) LTE_REQUIRE_PTR(norm_b);
  LTE_REQUIRE(((uintptr_t)x | (uintptr_t)xn | (uintptr_t)w_router | (uintptr_t)w_fc | (uintptr_t)w_down_t |
               (uintptr_t)norm_w | (uintptr_t)norm_b) % 16 == 0,
              "x, xn, w_router, w_fc, w_down_t, norm_w and norm_b must be 16-byte aligned");
  // deterministic sums (decode_sffn.cuh, sffn_reduce_kernel), the default since the eighteenth
  // session (measured as fast as the float atomics on the H200); LTE_DEC_SFFN_REDUCE=0 brings the
  // atomics back unless LTE_OPTION_DETERMINISTIC is set. The partial sums' scratch (P <= SMs x blocks
  // per SM partials of up to 4 rows) grows outside captures only, so it is sized here whatever the
  // path (an engine's eager prefill comes before its step's capture); a capture that finds it too
  // small keeps the atomics.
  float *parts = nullptr;
  if (ctx->deterministic || env_int("LTE_DEC_SFFN_REDUCE", 1, 0, 1) == 1) {
    const size_t bps = (size_t)sffn_tune().bps2;  // the launch's blocks per SM
    parts = static_cast<float *>(sffn_parts_scratch(ctx, (size_t)sm_count_of(ctx) * bps * 4 * d_model * 4));
  }
  if ((wdtype == LTE_DTYPE_F16 || wdtype == LTE_DTYPE_BF16) &&
      blas_applies(blas_tune(), ctx, wdtype, rows, true, ((uintptr_t)x | (uintptr_t)xn) % 16 == 0, expert_size) &&
      (d_ff / expert_size) * expert_size == d_ff && d_ff % 2 == 0)
    return blas_sparse_ffn(ctx, FN, wdtype, F32W(x), x_mode, F32(norm_w), F32(norm_b), eps, F32(w_router),
                           F32(b_router), threshold, w_fc, F32(b_fc), w_down_t, F32(b_down), F32W(xn), F32W(mask),
                           counts, rows, d_model, d_ff, expert_size, act, router_rows);
  SffnArgs a{F32W(x), x_mode,      F32(norm_w), F32(norm_b), eps,        F32(w_router), F32(b_router), threshold,
             w_fc,    F32(b_fc),   w_down_t,    F32(b_down), F32W(xn),   F32W(mask),    counts,        d_model,
             d_ff,    expert_size, d_ff / expert_size,       act,           0,
             parts};
  cudaError_t e;
  const int sms = sm_count_of(ctx);
  if (wdtype == LTE_DTYPE_F16) e = launch_sffn<__half>(a, rows, sms, ctx->stream);
  else if (wdtype == LTE_DTYPE_BF16) e = launch_sffn<__nv_bfloat16>(a, rows, sms, ctx->stream);
  else e = launch_sffn<float>(a, rows, sms, ctx->stream);
  if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of sffn_route_kernel / sffn_ffn_kernel", e, __FILE__,
                                              __LINE__);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_sample(lte_ctx_t *ctx, const void *logits, const void *temperature,
                                             const int32_t *top_k, const void *top_p, const uint64_t *seeds,
                                             int32_t *pos, int32_t *ids, int32_t *out, void *scratch, int32_t rows,
                                             int32_t vocab, int32_t advance) {
  LTE_ENTER("lte_dec_sample");
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(vocab);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(temperature);
  LTE_REQUIRE_PTR(top_k);
  LTE_REQUIRE_PTR(top_p);
  LTE_REQUIRE_PTR(seeds);
  LTE_REQUIRE_PTR(pos);
  LTE_REQUIRE_PTR(out);
  LTE_REQUIRE_PTR(scratch);
  if (advance) LTE_REQUIRE_PTR(ids);
  LTE_CUDA_TRY(dlaunch(sample_kernel, dim3(rows), dim3(kSampleThreads), 0, ctx->stream, F32(logits), F32(temperature), top_k, F32(top_p), seeds,
                                                          pos, ids, out, F32W(scratch), vocab, advance));
  LTE_LAUNCH_CHECK("sample_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_fill_random(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, uint64_t seed,
                                                  float scale) {
  LTE_ENTER("lte_dec_fill_random");
  LTE_REQUIRE_WDT(dtype);
  LTE_CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  const unsigned g = grid_for(ctx, n);
  if (dtype == LTE_DTYPE_F32) fill_random_kernel<float><<<g, kThreads, 0, ctx->stream>>>(F32W(x), n, seed, scale);
  else if (dtype == LTE_DTYPE_F16)
    fill_random_kernel<__half><<<g, kThreads, 0, ctx->stream>>>(static_cast<__half *>(x), n, seed, scale);
  else
    fill_random_kernel<__nv_bfloat16><<<g, kThreads, 0, ctx->stream>>>(static_cast<__nv_bfloat16 *>(x), n, seed,
                                                                        scale);
  LTE_LAUNCH_CHECK("fill_random_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_convert(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  LTE_ENTER("lte_dec_convert");
  LTE_REQUIRE_WDT(dtype);
  LTE_CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  const unsigned g = grid_for(ctx, n);
  if (dtype == LTE_DTYPE_F32) convert_kernel<float><<<g, kThreads, 0, ctx->stream>>>(F32(x), F32W(y), n);
  else if (dtype == LTE_DTYPE_F16)
    convert_kernel<__half><<<g, kThreads, 0, ctx->stream>>>(F32(x), static_cast<__half *>(y), n);
  else convert_kernel<__nv_bfloat16><<<g, kThreads, 0, ctx->stream>>>(F32(x), static_cast<__nv_bfloat16 *>(y), n);
  LTE_LAUNCH_CHECK("convert_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_dec_convert_split(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *hi,
                                                    void *lo, int64_t n) {
  LTE_ENTER("lte_dec_convert_split");
  LTE_REQUIRE(dtype == LTE_DTYPE_F16 || dtype == LTE_DTYPE_BF16, "dtype %d must be F16 or BF16", (int)dtype);
  LTE_CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(hi);
  LTE_REQUIRE_PTR(lo);
  const unsigned g = grid_for(ctx, n);
  if (dtype == LTE_DTYPE_F16)
    convert_split_kernel<__half>
        <<<g, kThreads, 0, ctx->stream>>>(F32(x), static_cast<__half *>(hi), static_cast<__half *>(lo), n);
  else
    convert_split_kernel<__nv_bfloat16><<<g, kThreads, 0, ctx->stream>>>(
        F32(x), static_cast<__nv_bfloat16 *>(hi), static_cast<__nv_bfloat16 *>(lo), n);
  LTE_LAUNCH_CHECK("convert_split_kernel");
  return LTE_STATUS_OK;
}

/* ------------------------------------------------------------------ graphs */

extern "C" LTE_API lte_status lte_graph_begin(lte_ctx_t *ctx) {
  LTE_ENTER("lte_graph_begin");
  LTE_CUDA_TRY(cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeRelaxed));
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_graph_end(lte_ctx_t *ctx, void **graph_out) {
  LTE_ENTER("lte_graph_end");
  LTE_REQUIRE_PTR(graph_out);
  *graph_out = nullptr;
  cudaGraph_t graph = nullptr;
  LTE_CUDA_TRY(cudaStreamEndCapture(ctx->stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) return lte::cuda_fail(ctx, FN, "cudaGraphInstantiate", e, __FILE__, __LINE__);
  *graph_out = (void *)exec;
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_graph_launch(lte_ctx_t *ctx, void *graph) {
  LTE_ENTER("lte_graph_launch");
  LTE_REQUIRE_PTR(graph);
  LTE_CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)graph, ctx->stream));
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_graph_free(lte_ctx_t *ctx, void *graph) {
  LTE_ENTER("lte_graph_free");
  if (graph == nullptr) return LTE_STATUS_OK;
  LTE_CUDA_TRY(cudaGraphExecDestroy((cudaGraphExec_t)graph));
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_graph_time(lte_ctx_t *ctx, void *graph, int32_t warmup, int32_t reps, int32_t inner,
                                             float *host_us) {
  LTE_ENTER("lte_graph_time");
  LTE_REQUIRE_PTR(graph);
  LTE_REQUIRE_PTR(host_us);
  LTE_CHECK_NONNEG(warmup);
  LTE_CHECK_POS(reps);
  LTE_CHECK_POS(inner);
  cudaGraphExec_t exec = static_cast<cudaGraphExec_t>(graph);
  for (int i = 0; i < warmup; i++) LTE_CUDA_TRY(cudaGraphLaunch(exec, ctx->stream));
  cudaEvent_t ev[2];
  LTE_CUDA_TRY(cudaEventCreate(&ev[0]));
  if (const cudaError_t e1 = cudaEventCreate(&ev[1]); e1 != cudaSuccess) {
    cudaEventDestroy(ev[0]);  // not leaked when the second one fails
    return lte::cuda_fail(ctx, FN, "cudaEventCreate(&ev[1])", e1, __FILE__, __LINE__);
  }
  lte_status st = LTE_STATUS_OK;
  for (int r = 0; r < reps && st == LTE_STATUS_OK; r++) {
    cudaError_t e = cudaEventRecord(ev[0], ctx->stream);
    for (int i = 0; i < inner && e == cudaSuccess; i++) e = cudaGraphLaunch(exec, ctx->stream);
    if (e == cudaSuccess) e = cudaEventRecord(ev[1], ctx->stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(ev[1]);
    float ms = 0.f;
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, ev[0], ev[1]);
    if (e != cudaSuccess) st = lte::cuda_fail(ctx, FN, "timing a graph replay", e, __FILE__, __LINE__);
    host_us[r] = ms * 1000.f / (float)inner;
  }
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  return st;
}
