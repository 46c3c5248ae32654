/*
 * sparse_ffn.cu: LTE sparse FFN inference kernels (lte.h, KERNELS section). Design, measurements
 * and the choice of defaults: docs/engine.md "Sparse FFN kernels".
 *
 * One FFN block, three launches, no host round trip, fixed launch sizes (graph-capturable):
 *
 *   route_kernel       router GEMV split over (8 experts per block) x (RSPLIT column slices); f32
 *                      atomics into a zeroed workspace row; the last block to finish (a counter in
 *                      the workspace) adds the bias, writes logits, applies the strict threshold,
 *                      builds the per-expert token bits, the ascending union list and the counts,
 *                      and zeroes what it used (the workspace stays zeroed between calls).
 *   gate_up_mma        one block per tile of 8 union neurons (SiLU-mul: gate rows and up rows form
 *                      the 16 rows of one m16n8k16 tensor-core tile) or 16 neurons (GELU); its 8 warps
 *                      split d_model, a shared-memory sum joins them, the epilogue applies bias,
 *                      activation and the per-token mask and writes h (dtype). Launched for every
 *                      tile of all N experts; tiles past P*S exit at once.
 *   down_mma           grid (column tiles of 512) x (KS row chunks of the P*S union rows): each warp
 *                      owns 64 output columns and runs m16n8k16 with the 64 columns as M, the union
 *                      rows as K and the tokens as N. w_down_t rows are contiguous along the
 *                      columns, so each lane loads 16 bytes from 4 consecutive rows and builds the
 *                      row-pair fragments with byte permutes. Partial sums are finished either by
 *                      fp32 atomics (float4) into a zeroed workspace row (ATOMIC) or written as
 *                      partials (SPLITK); in both cases the last block of a column tile adds
 *                      bias and residual, rounds to dtype and re-zeroes what it used.
 *
 * Local-list scheme (LTE_SFFN_TUNE_LOCAL_LIST): route_bits_kernel (one 128-thread block per expert,
 * logits + bits only, no grid-wide step), gate_up_sel (each warp selects its tile's expert from the
 * bits; gate_up writes list and counts), down_mma<LOCAL> (per-block compaction of the bits).
 * Variants read from the environment at launch (benchmark A/B): LTE_SFFN_GU_SPLIT (gate_up_split,
 * a tile's columns split over a thread-block cluster), LTE_SFFN_L2PF (L2 prefetch hints).
 *
 * The k index of a tensor-core product may be permuted freely as long as both operands use the
 * same permutation: gate/up use it to load 16 contiguous bytes per lane for both the weights and
 * x (lane (g, t) of a 32-column chunk takes columns 8t..8t+7), down uses it to take rows 4t..4t+3.
 *
 * f16 and bf16 use the tensor-core kernels; f32 (not a serving dtype) uses plain CUDA-core
 * kernels with the same contract (route is shared). Weights are read with non-coherent,
 * L1-no-allocate 16-byte loads (streamed once); x and h through the normal cached path.
 */
#include <cuda_bf16.h>
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <dlfcn.h>
#include <stdlib.h>

#include <initializer_list>
#include <type_traits>

#include "half.cuh"
#include "mma.cuh"
#include "reduce.cuh"

namespace lte {
namespace sffn {

constexpr int kBlock = 256; /* threads of every kernel here (8 warps) */
constexpr int kRouteSplit = 4;
constexpr int kDownColsPerBlock = 512; /* 8 warps x 64 columns */
constexpr int kMaxDownBlocksPerSm = 8;
constexpr int kMaxLocalExperts = 2048; /* bits-based schemes (local list, route v2): N <= this */

/* Process-wide tuning knobs (lte_sffn_set_tuning; benchmarks sweep them). */
/* Defaults = the best of the sweep on the H200 (docs/results/sparse_ffn_h200.json "tuning"):
   PDL on, unroll 4 (8 within noise), 2 down blocks per SM, route's grid-wide list (the local-list
   scheme measured 62.6 / 35.0 us at 50 / 90 % against 51.0 / 22.2). */
struct Tuning {
  int pdl = 1;                /* programmatic dependent launch between the three kernels */
  int gate_up_unroll = 4;     /* 32-column chunks in flight per warp (4 or 8) */
  int down_blocks_per_sm = 2; /* target blocks of the down grid per multiprocessor (1..8) */
  int local_list = 0;         /* per-block union compaction instead of route's grid-wide step */
};
Tuning g_tune;

/* Defaults of the environment-selected variants (env_choice below; unset = these). Kept at the
   2026-12-01 behaviour until a device run shows a winner (docs/engine.md "Changes of 2026-12-02"). */
constexpr int kDefRouteV2 = 0;   /* LTE_SFFN_ROUTE_V2 */
constexpr int kDefL2Pf = 0;      /* LTE_SFFN_L2PF */
constexpr int kDefGuPersist = 0; /* LTE_SFFN_GU_PERSIST */
constexpr int kDefGuSplit = 1;   /* LTE_SFFN_GU_SPLIT */
constexpr int kDefDownCl = 0;    /* LTE_SFFN_DOWN_CL */
constexpr int kDefInPlace = 1;   /* LTE_SFFN_DOWN_INPLACE (f32 y += FFN(x) without a finishing block) */

/* Programmatic dependent launch (sm_90): `wait` blocks until the previous kernel in the stream has
   completed and its writes are visible; `trigger` lets the next kernel's blocks be scheduled as
   this grid's blocks retire. Both are no-ops for a kernel launched without the PDL attribute.
   Rule used below: nothing produced or consumed by a neighbouring kernel is touched before
   `wait`, except the union list and counts in down (written by route, which completed before
   gate_up passed its own `wait` and triggered). */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* ------------------------------------------------------------------ workspace layout */

struct Layout {
  int cb;             /* column blocks of the down kernel */
  int ks;             /* row chunks (grid.y) of the down kernel */
  size_t ctr_off;     /* int32[64]: [0] route counter, [1 + i] down counter of column block i */
  size_t bits_off;    /* u32[N] copy of the bits (local-list scheme: down reads them here) */
  size_t racc_off;    /* f32[B * N] router accumulators */
  size_t dacc_off;    /* f32[B * C] down accumulators (ATOMIC) */
  size_t part_off;    /* f32[KS * B * C] down partials (SPLITK) */
  size_t bytes;
};

inline size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

inline Layout layout(const lte_ctx *ctx, int B, int C, int N) {
  Layout L;
  L.cb = (C + kDownColsPerBlock - 1) / kDownColsPerBlock;
  const int sms = ctx->sm_count > 0 ? ctx->sm_count : 132;
  L.ks = (sms * g_tune.down_blocks_per_sm + L.cb - 1) / L.cb;
  const int ks_max = (sms * kMaxDownBlocksPerSm + L.cb - 1) / L.cb; /* workspace sized for any knob */
  if (L.ks < 1) L.ks = 1;
  size_t off = 0;
  L.ctr_off = off;
  off = align256(off + sizeof(int) * (1 + (size_t)L.cb));
  L.bits_off = off;
  off = align256(off + sizeof(uint32_t) * (size_t)N);
  L.racc_off = off;
  off = align256(off + sizeof(float) * (size_t)B * N);
  L.dacc_off = off;
  off = align256(off + sizeof(float) * (size_t)B * C);
  L.part_off = off;
  off = align256(off + sizeof(float) * (size_t)ks_max * B * C);
  L.bytes = off;
  return L;
}

/* ------------------------------------------------------------------ small device helpers */

/* 16-byte streaming load (weights: read once, keep them out of L1). */
__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/* 16-byte load of an activation (x, h) through L2 only: with PDL a kernel may start before its
   predecessor finished, so nothing written by another kernel is read through the incoherent L1. */
__device__ __forceinline__ uint4 ld_cached(const void *p) { return __ldcg(static_cast<const uint4 *>(p)); }

/* L2 prefetch of `bytes` (multiple of 16, 16-byte aligned) starting at p: fire-and-forget, no
   registers, no completion to wait for; a hint only (the data is read normally later). */
__device__ __forceinline__ void prefetch_l2(const void *p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

/* LTE_SFFN_L2PF bits (env, read at launch; default 0): kPfGateUpNext = gate/up prefetches the next
   column window of its tile's 16 rows one iteration ahead (twice the bytes in flight without
   registers); kPfGateUpTile = the whole tile (its column range) at the tile's start; kPfDown = a
   down block prefetches all of its rows before the PDL wait (the DRAM keeps streaming through
   gate/up's tail). */
constexpr int kPfGateUpNext = 1, kPfGateUpTile = 2, kPfDown = 4;
/* Not an env bit: set by the host in down's `pf` argument when f32 y may be updated in place
   (LTE_SFFN_DOWN_INPLACE, default 1). */
constexpr int kInPlaceFlag = 1 << 8;

/* 8 consecutive activations as 8 packed T (16 bytes): a plain load when x is already T, two
   float4 loads and round-to-nearest packing when x is f32. */
template <class T, class XT>
__device__ __forceinline__ uint4 load_x8(const XT *p) {
  if constexpr (std::is_same<T, XT>::value) {
    return ld_cached(p);
  } else {
    const float4 a = __ldcg(reinterpret_cast<const float4 *>(p));
    const float4 b = __ldcg(reinterpret_cast<const float4 *>(p) + 1);
    uint4 r;
    r.x = pack2<T>(a.x, a.y), r.y = pack2<T>(a.z, a.w);
    r.z = pack2<T>(b.x, b.y), r.w = pack2<T>(b.z, b.w);
    return r;
  }
}

__device__ __forceinline__ float silu_f(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ float gelu_f(float x) {
  const float k0 = 0.7978845608028654f, k1 = 0.044715f;
  return 0.5f * x * (1.0f + tanhf(k0 * (x + k1 * x * x * x)));
}

/* Last-block-done protocol: every block calls this once after its global writes; returns true in
   exactly one block (the last to arrive), which then sees every other block's writes. Resets the
   counter for the next call. Must be called by all threads of the block. */
__device__ __forceinline__ bool last_block_arrived(int *counter, int expected) {
  __shared__ int s_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const int prev = atomicAdd(counter, 1);
    s_last = prev == expected - 1;
    if (s_last) *counter = 0; /* nobody else touches it again in this launch */
  }
  __syncthreads();
  if (s_last) __threadfence();
  return s_last != 0;
}

/* ------------------------------------------------------------------ route */

/* grid (ceil(N / 8), RSPLIT): warp w of block x handles expert 8x + w over column slice y. The
   first RU 16-byte weight loads per lane are issued before the PDL wait (weights are constant), so
   they overlap the previous kernel's tail. dense (w == nullptr): grid (1, 1), the last-block part. */
template <class T>
__global__ void __launch_bounds__(kBlock) route_kernel(const T *__restrict__ x, const T *__restrict__ w,
                                                       const T *__restrict__ bias, float *__restrict__ logits,
                                                       uint32_t *__restrict__ bits, int32_t *__restrict__ list,
                                                       int32_t *__restrict__ counts, float *__restrict__ racc,
                                                       int *__restrict__ counter, int B, int C, int N) {
  constexpr int V = 16 / sizeof(T);
  constexpr int RU = 4;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (w != nullptr) {
    const int e = blockIdx.x * 8 + warp;
    const int slice = C / gridDim.y; /* C % (64 * RSPLIT) == 0: the host chooses gridDim.y */
    const int c0 = blockIdx.y * slice;
    if (e < N) {
      float acc[LTE_SFFN_MAX_BATCH];
#pragma unroll
      for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) acc[b] = 0.f;
      const T *wr = w + (int64_t)e * C;
      for (int cb = c0 + lane * V; cb < c0 + slice; cb += 32 * V * RU) {
        uint4 wv[RU];
#pragma unroll
        for (int u = 0; u < RU; u++)
          if (cb + u * 32 * V < c0 + slice) wv[u] = ld_stream(wr + cb + u * 32 * V);
        if (cb == c0 + lane * V) pdl_wait();
#pragma unroll
        for (int u = 0; u < RU; u++) {
          const int c = cb + u * 32 * V;
          if (c >= c0 + slice) break;
          const T *wt = reinterpret_cast<const T *>(&wv[u]);
#pragma unroll
          for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
            if (b < B) {
              const uint4 xv = ld_cached(x + (int64_t)b * C + c);
              const T *xt = reinterpret_cast<const T *>(&xv);
              float s = 0.f;
#pragma unroll
              for (int i = 0; i < V; i++) s += to_f(wt[i]) * to_f(xt[i]);
              acc[b] += s;
            }
          }
        }
      }
      pdl_wait();
#pragma unroll
      for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
        if (b < B) {
          const float s = warp_sum(acc[b]);
          if (lane == 0) atomicAdd(&racc[(int64_t)b * N + e], s);
        }
      }
    }
    pdl_wait();
    pdl_trigger();
    if (!last_block_arrived(counter, gridDim.x * gridDim.y)) return;
  } else {
    pdl_wait();
    pdl_trigger();
  }
  /* the last block: logits, threshold, bits, union list, counts. The masks of up to
     kBlock * CH experts are formed first (independent L2 loads, one round trip), then compacted. */
  constexpr int CH = 4;
  __shared__ int s_warp[8];
  __shared__ int s_tok[LTE_SFFN_MAX_BATCH];
  __shared__ int s_base;
  if (threadIdx.x < LTE_SFFN_MAX_BATCH) s_tok[threadIdx.x] = 0;
  if (threadIdx.x == 0) s_base = 0;
  __syncthreads();
  const uint32_t full = B >= 32 ? 0xffffffffu : ((1u << B) - 1u);
  for (int e00 = 0; e00 < N; e00 += kBlock * CH) {
    uint32_t mm[CH];
#pragma unroll
    for (int ch = 0; ch < CH; ch++) {
      const int e = e00 + ch * kBlock + threadIdx.x;
      uint32_t m = 0;
      if (e < N) {
        if (w == nullptr) {
          m = full;
          for (int b = 0; b < B; b++) logits[(int64_t)b * N + e] = 0.f;
        } else {
          const float bv = bias ? to_f(bias[e]) : 0.f;
#pragma unroll
          for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
            if (b < B) {
              float *a = &racc[(int64_t)b * N + e];
              const float l = __ldcg(a) + bv;
              *a = 0.f;
              logits[(int64_t)b * N + e] = l;
              if (l > 0.f) m |= 1u << b;
            }
          }
        }
        bits[e] = m;
      }
      mm[ch] = m;
    }
#pragma unroll
    for (int ch = 0; ch < CH; ch++) {
      if (e00 + ch * kBlock >= N) break; /* uniform across the block */
      const int e = e00 + ch * kBlock + threadIdx.x;
      const uint32_t m = mm[ch];
      const uint32_t ballot = __ballot_sync(0xffffffffu, m != 0);
      const int prefix = __popc(ballot & ((1u << lane) - 1u));
      if (lane == 0) s_warp[warp] = __popc(ballot);
      for (int b = 0; b < B; b++) {
        const int cnt = __popc(__ballot_sync(0xffffffffu, (m >> b) & 1u));
        if (lane == 0 && cnt) atomicAdd(&s_tok[b], cnt);
      }
      __syncthreads();
      int off = s_base;
      for (int i = 0; i < warp; i++) off += s_warp[i];
      if (m != 0) list[off + prefix] = e;
      __syncthreads();
      if (threadIdx.x == 0) {
        int tot = 0;
        for (int i = 0; i < 8; i++) tot += s_warp[i];
        s_base += tot;
      }
      __syncthreads();
    }
  }
  for (int e = s_base + threadIdx.x; e < N; e += kBlock) list[e] = -1;
  if (threadIdx.x < B) counts[threadIdx.x] = s_tok[threadIdx.x];
  if (threadIdx.x == 0) counts[B] = s_base;
}

/* Local-list scheme, route: no grid-wide step at all. One block of 4 warps per expert (grid N: 344
   blocks for LLaMA shapes, ~2.6 per SM, ~21 KB of router rows in flight per SM); each warp takes
   C/4 columns of the row (f16, C = 4096: 4 x 16-byte loads per lane, all issued before the PDL wait
   since the router weights are constant), a shared-memory join, then warp 0 adds the bias and
   writes the B logits and the expert's bit word (also into ws_bits, where down reads it). No
   atomics, no fence, no counter: the kernel's end is the only synchronisation. Small blocks (128
   threads, <= 64 registers: 8 K registers) fit next to the previous layer's down blocks (2 x 27 K
   registers per SM), so with PDL the router rows stream while that down kernel drains.
   (The earlier warp-per-expert version used 43 blocks, i.e. 43 SMs, for N = 344.)
   w == nullptr: dense (all bits set, logits 0). */
constexpr int kRouteWarps = 4;
/* LIST (env LTE_SFFN_ROUTE_V2 = 1, route's grid-wide list scheme): the same kernel, then the last
   block to finish (threadfence + counter) compacts the bits into list and counts (route's
   contract). Shorter than route_kernel's chain: no split-K atomics into a workspace row, no
   re-zeroing, the bits (1.4 KB for N = 344) loaded in one round trip. */
template <class T, bool LIST>
__global__ void __launch_bounds__(kRouteWarps * 32, 8)
    route_bits_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias,
                      float *__restrict__ logits, uint32_t *__restrict__ bits, uint32_t *__restrict__ ws_bits,
                      int32_t *__restrict__ list, int32_t *__restrict__ counts, int *__restrict__ counter, int B,
                      int C, int N) {
  constexpr int V = 16 / sizeof(T);
  constexpr int RU = 4; /* 16-byte loads per lane in flight (f16 / f32, C = 4096: the whole slice) */
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.x;
  __shared__ float s_part[kRouteWarps][LTE_SFFN_MAX_BATCH];
  if (w != nullptr) {
    float acc[LTE_SFFN_MAX_BATCH];
#pragma unroll
    for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) acc[b] = 0.f;
    const int slice = C / kRouteWarps; /* C % 64 == 0: a multiple of V */
    const int c0 = warp * slice, c1 = c0 + slice;
    const T *wr = w + (int64_t)e * C;
    for (int cb = c0 + lane * V; cb < c1; cb += 32 * V * RU) {
      uint4 wv[RU];
#pragma unroll
      for (int u = 0; u < RU; u++)
        if (cb + u * 32 * V < c1) wv[u] = ld_stream(wr + cb + u * 32 * V);
      if (cb == c0 + lane * V) pdl_wait();
#pragma unroll
      for (int u = 0; u < RU; u++) {
        const int c = cb + u * 32 * V;
        if (c >= c1) break;
        const T *wt = reinterpret_cast<const T *>(&wv[u]);
#pragma unroll
        for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
          if (b < B) {
            const uint4 xv = ld_cached(x + (int64_t)b * C + c);
            const T *xt = reinterpret_cast<const T *>(&xv);
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < V; i++) s += to_f(wt[i]) * to_f(xt[i]);
            acc[b] += s;
          }
        }
      }
    }
#pragma unroll
    for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
      if (b < B) {
        const float s = warp_sum(acc[b]);
        if (lane == 0) s_part[warp][b] = s;
      }
    }
  }
  pdl_wait(); /* nothing below may be written before the previous kernel (a down reading ws_bits) ended */
  pdl_trigger();
  __syncthreads();
  if (warp == 0) {
    float l = 0.f;
    if (w != nullptr && lane < B) {
#pragma unroll
      for (int i = 0; i < kRouteWarps; i++) l += s_part[i][lane];
      if (bias) l += to_f(bias[e]);
    }
    const bool sel = lane < B && (w == nullptr || l > 0.f);
    const uint32_t m = __ballot_sync(0xffffffffu, sel);
    if (lane < B) logits[(int64_t)lane * N + e] = l;
    if (lane == 0) bits[e] = m, ws_bits[e] = m; /* thread 0: the one that fences below */
  }
  if constexpr (LIST) {
    if (!last_block_arrived(counter, gridDim.x)) return;
    /* the last block: every bit word is visible; compact them (N <= kMaxLocalExperts: one round trip) */
    constexpr int NTH = kRouteWarps * 32, CH = kMaxLocalExperts / NTH;
    __shared__ int s_w[kRouteWarps];
    __shared__ int s_tok[LTE_SFFN_MAX_BATCH];
    if (threadIdx.x < LTE_SFFN_MAX_BATCH) s_tok[threadIdx.x] = 0;
    uint32_t mm[CH];
#pragma unroll
    for (int c = 0; c < CH; c++) {
      const int i = c * NTH + threadIdx.x;
      mm[c] = i < N ? __ldcg(&bits[i]) : 0u;
    }
    __syncthreads();
    int base = 0;
#pragma unroll
    for (int c = 0; c < CH; c++) {
      if (c * NTH >= N) break; /* uniform */
      const uint32_t bal = __ballot_sync(0xffffffffu, mm[c] != 0);
      for (int b = 0; b < B; b++) {
        const int n = __popc(__ballot_sync(0xffffffffu, (mm[c] >> b) & 1u));
        if (lane == 0 && n) atomicAdd(&s_tok[b], n);
      }
      if (lane == 0) s_w[warp] = __popc(bal);
      __syncthreads();
      int off = base, tot = 0;
#pragma unroll
      for (int i = 0; i < kRouteWarps; i++) {
        const int v = s_w[i];
        off += i < warp ? v : 0;
        tot += v;
      }
      if (mm[c]) list[off + __popc(bal & ((1u << lane) - 1u))] = c * NTH + threadIdx.x;
      base += tot;
      __syncthreads();
    }
    for (int i = base + threadIdx.x; i < N; i += NTH) list[i] = -1;
    if (threadIdx.x < B) counts[threadIdx.x] = s_tok[threadIdx.x];
    if (threadIdx.x == 0) counts[B] = base;
  }
}

/* ------------------------------------------------------------------ gate/up (tensor cores) */

/* L2 prefetch for a gate/up tile (neurons n0.., 16 weight rows) by lanes 0-15 of warp 0:
   whole = the column range [cbeg, cend) now (kPfGateUpTile), else the block's window of the
   iteration starting at column `next` (kPfGateUpNext; 8 warps x 32 x U columns). */
template <class T, bool GLU, int U>
__device__ __forceinline__ void gate_up_prefetch(int pf, bool whole, const T *w_gate, const T *w_in, int n0, int C,
                                                 int cbeg, int cend, int next) {
  if (threadIdx.x >= 16) return;
  int c0, c1;
  if (whole) {
    c0 = cbeg, c1 = cend;
  } else {
    if (!(pf & kPfGateUpNext) || (pf & kPfGateUpTile)) return;
    c0 = cbeg + next, c1 = min(cend, c0 + 8 * 32 * U);
  }
  if (c0 >= c1) return;
  const int r = threadIdx.x;
  const T *row = GLU ? (r < 8 ? w_gate : w_in) + (int64_t)(n0 + (r & 7)) * C : w_in + (int64_t)(n0 + r) * C;
  prefetch_l2(row + c0, (uint32_t)((c1 - c0) * sizeof(T)));
}

/* Resident blocks per SM the gate/up kernels are compiled for: 3 (<= 80 registers: 3 x 256 x 80 =
   61440 of 65536; at 84 the allocation rounds to 88 and only 2 fit) for the batch <= 8, unroll-4
   kernels; 2 for the others (NT = 2 or U = 8 hold ~105-128 live registers). */
constexpr int gate_up_min_blocks(int NT, int U) { return NT == 1 && U == 4 ? 3 : 2; }

/* GLU: tile = 8 neurons (A rows 0-7: gate rows, 8-15: up rows); GELU: 16 neurons of w_in.
   NT n-tiles of 8 tokens (B <= 8: 1, else 2). U: 32-column chunks in flight per warp. */
/* One tile (TN union neurons starting at compact index kk0, expert e) by the whole block; warp 0
   writes h. Ends with every warp past its last use of `red` only after the caller's barrier. */
template <class T, class XT, bool GLU, int NT, int U>
__device__ __forceinline__ void gate_up_tile(const XT *__restrict__ x, const T *__restrict__ w_gate,
                                             const T *__restrict__ w_in, const T *__restrict__ b_in, uint32_t m,
                                             int e, int kk0, T *__restrict__ h, int B, int C, int S, int F,
                                             float (*red)[NT * 4][32], int pf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int p = kk0 / S;
  const int n0 = e * S + (kk0 - p * S);
  const T *ra = GLU ? w_gate + (int64_t)(n0 + g) * C : w_in + (int64_t)(n0 + g) * C;
  const T *rb = GLU ? w_in + (int64_t)(n0 + g) * C : w_in + (int64_t)(n0 + g + 8) * C;
  const XT *xr[NT];
  bool xok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    xok[nt] = nt * 8 + g < B;
    xr[nt] = x + (int64_t)(xok[nt] ? nt * 8 + g : 0) * C;
  }
  float d[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
  gate_up_prefetch<T, GLU, U>(pf, pf & kPfGateUpTile, w_gate, w_in, n0, C, 0, C, 0);

  for (int kb = warp * 32; kb < C; kb += 8 * 32 * U) {
    gate_up_prefetch<T, GLU, U>(pf, false, w_gate, w_in, n0, C, 0, C, kb - warp * 32 + 8 * 32 * U);
    uint4 av[U], bv[U], xv[U][NT];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int col = kb + u * 256 + 8 * t;
      if (kb + u * 256 < C) {
        av[u] = ld_stream(ra + col);
        bv[u] = ld_stream(rb + col);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) xv[u][nt] = xok[nt] ? load_x8<T>(xr[nt] + col) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (kb + u * 256 < C) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
          mma16816<T>(d[nt], av[u].x, bv[u].x, av[u].y, bv[u].y, xv[u][nt].x, xv[u][nt].y);
          mma16816<T>(d[nt], av[u].z, bv[u].z, av[u].w, bv[u].w, xv[u][nt].z, xv[u][nt].w);
        }
      }
    }
  }
  /* join the 8 warps' partial sums */
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int i = 0; i < 4; i++) red[warp][nt * 4 + i][lane] = d[nt][i];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float s = 0.f;
#pragma unroll
      for (int wi = 0; wi < 8; wi++) s += red[wi][nt * 4 + i][lane];
      d[nt][i] = s;
    }
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
#pragma unroll
    for (int q = 0; q < 2; q++) {
      const int tok = nt * 8 + 2 * t + q;
      if (tok >= B) continue;
      const bool on = (m >> tok) & 1u;
      if (GLU) {
        float up = d[nt][2 + q];
        if (b_in) up += to_f(b_in[n0 + g]);
        const float v = on ? silu_f(d[nt][q]) * up : 0.f;
        h[(int64_t)tok * F + kk0 + g] = from_f<T>(v);
      } else {
        float v0 = d[nt][q], v1 = d[nt][2 + q];
        if (b_in) {
          v0 += to_f(b_in[n0 + g]);
          v1 += to_f(b_in[n0 + g + 8]);
        }
        h[(int64_t)tok * F + kk0 + g] = from_f<T>(on ? gelu_f(v0) : 0.f);
        h[(int64_t)tok * F + kk0 + g + 8] = from_f<T>(on ? gelu_f(v1) : 0.f);
      }
    }
  }
}

/* Compacts {e < N : bits[e] != 0} (ascending) into s_list (shared, N <= kMaxLocalExperts) and
   returns its size in every thread; s_tok (optional) gets per-token counts added. One L2 round
   trip for all bits, then a ballot scan per 256-expert chunk. Called by all threads. */
__device__ int block_compact(const uint32_t *__restrict__ bits, int N, int B, int *s_list, int *s_warp,
                             int *s_tok) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int CH = kMaxLocalExperts / kBlock;
  uint32_t mm[CH];
#pragma unroll
  for (int c = 0; c < CH; c++) {
    const int e = c * kBlock + threadIdx.x;
    mm[c] = e < N ? __ldcg(&bits[e]) : 0u;
  }
  int base = 0;
#pragma unroll
  for (int c = 0; c < CH; c++) {
    if (c * kBlock >= N) break; /* uniform */
    const uint32_t ballot = __ballot_sync(0xffffffffu, mm[c] != 0);
    if (s_tok) {
      for (int b = 0; b < B; b++) {
        const int cnt = __popc(__ballot_sync(0xffffffffu, (mm[c] >> b) & 1u));
        if (lane == 0 && cnt) atomicAdd(&s_tok[b], cnt);
      }
    }
    if (lane == 0) s_warp[warp] = __popc(ballot);
    __syncthreads();
    int off = base, tot = 0;
#pragma unroll
    for (int i = 0; i < kBlock / 32; i++) {
      const int v = s_warp[i];
      off += i < warp ? v : 0;
      tot += v;
    }
    if (mm[c]) s_list[off + __popc(ballot & ((1u << lane) - 1u))] = c * kBlock + threadIdx.x;
    base += tot;
    __syncthreads();
  }
  return base;
}

/* One block: list and counts from the bits (local-list mode before the f32-weight kernels). */
__global__ void __launch_bounds__(kBlock) compact_kernel(const uint32_t *__restrict__ bits, int32_t *__restrict__ list,
                                                         int32_t *__restrict__ counts, int N, int B) {
  __shared__ int s_list[kMaxLocalExperts];
  __shared__ int s_warp[kBlock / 32];
  __shared__ int s_tok[LTE_SFFN_MAX_BATCH];
  if (threadIdx.x < LTE_SFFN_MAX_BATCH) s_tok[threadIdx.x] = 0;
  __syncthreads();
  const int P = block_compact(bits, N, B, s_list, s_warp, s_tok);
  for (int i = threadIdx.x; i < N; i += kBlock) list[i] = i < P ? s_list[i] : -1;
  if (threadIdx.x < B) counts[threadIdx.x] = s_tok[threadIdx.x];
  if (threadIdx.x == 0) counts[B] = P;
}

/* One block per tile of the union (list and counts from route). */
template <class T, class XT, bool GLU, int NT, int U>
__global__ void __launch_bounds__(kBlock, gate_up_min_blocks(NT, U))
    gate_up_mma(const XT *__restrict__ x, const T *__restrict__ w_gate, const T *__restrict__ w_in,
                const T *__restrict__ b_in, const uint32_t *__restrict__ bits, const int32_t *__restrict__ list,
                int32_t *__restrict__ counts, T *__restrict__ h, int N, int B, int C, int S, int F, int pf) {
  constexpr int TN = GLU ? 8 : 16;
  __shared__ float red[8][NT * 4][32];
  pdl_wait();
  pdl_trigger();
  /* the list is -1 past the union (lte.h), so one dependent L2 round trip (not counts, then list)
     stands between route's end and this block's first weight load. Grid = all F / TN tiles (one
     per block) or fewer (LTE_SFFN_GU_PERSIST: blocks loop over tiles, the grid is resident at once,
     so no stream of blocks past the union delays the dependent down launch). */
  for (int tile = blockIdx.x; tile < F / TN; tile += gridDim.x) {
    const int kk0 = tile * TN; /* compact neuron index of the tile */
    const int e = __ldcg(&list[kk0 / S]);
    if (e < 0 || e >= N) break; /* ascending tiles: every later one is past the union too */
    gate_up_tile<T, XT, GLU, NT, U>(x, w_gate, w_in, b_in, __ldcg(&bits[e]), e, kk0, h, B, C, S, F, red, pf);
    __syncthreads(); /* red is reused by the next tile */
  }
}

/* Local-list scheme, gate/up: one block per tile of the union as in gate_up_mma, but the tile's
   expert is found from route's bits instead of a list: warp 0 loads the bit words, 512 per step
   with all 16 loads per lane in flight (N = 344: one step, one L2 round trip), selects the expert
   of compact index kk0 / S with ballot + popc + __fns and hands it to the other warps through
   shared memory (one barrier, ~0.1 us, instead of 8x the L2 reads). The block holding an expert's first tile writes
   its list entry; the grid's last block (past the union unless it is dense) writes counts and the
   -1 tail of the list. */
__device__ __forceinline__ void select_expert(const uint32_t *__restrict__ bits, int N, int target, int *e_out,
                                              uint32_t *m_out) {
  const int lane = threadIdx.x & 31;
  int e = -1, seen = 0;
  uint32_t m = 0;
  for (int c0 = 0; c0 < N && e < 0; c0 += 512) { /* e is warp-uniform */
    uint32_t v[16];
#pragma unroll
    for (int k = 0; k < 16; k++) {
      const int i = c0 + k * 32 + lane;
      v[k] = i < N ? __ldcg(&bits[i]) : 0u;
    }
#pragma unroll
    for (int k = 0; k < 16; k++) {
      const uint32_t bal = __ballot_sync(0xffffffffu, v[k] != 0);
      const int n = __popc(bal);
      if (e < 0 && seen + n > target) {
        const int pos = (int)__fns(bal, 0, target - seen + 1);
        e = c0 + k * 32 + pos;
        m = __shfl_sync(0xffffffffu, v[k], pos);
      }
      seen += n;
    }
  }
  *e_out = e;
  *m_out = m;
}

/* select_expert by warp 0 only, broadcast through shared memory (one barrier): the other 7 warps
   would re-read the same bit words from L2 (N = 344: 1.4 KB per warp; x 8 warps x 1376..5504
   blocks = 15..60 MB of L2 reads per call, competing with the weight stream). Called by all threads. */
__device__ __forceinline__ void block_select_expert(const uint32_t *__restrict__ bits, int N, int target, int *e_out,
                                                    uint32_t *m_out) {
  __shared__ int s_e;
  __shared__ uint32_t s_m;
  if (threadIdx.x < 32) {
    int e;
    uint32_t m;
    select_expert(bits, N, target, &e, &m);
    if (threadIdx.x == 0) s_e = e, s_m = m;
  }
  __syncthreads();
  *e_out = s_e;
  *m_out = s_m;
}

/* counts[b] (tokens' expert counts), counts[B] = P and list[P..N) = -1, by one warp. */
__device__ void write_counts(const uint32_t *__restrict__ bits, int32_t *__restrict__ list,
                             int32_t *__restrict__ counts, int N, int B) {
  const int lane = threadIdx.x & 31;
  int tok = 0, P = 0; /* lane b < B counts token b */
  for (int c0 = 0; c0 < N; c0 += 256) {
    uint32_t v[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
      const int i = c0 + k * 32 + lane;
      v[k] = i < N ? __ldcg(&bits[i]) : 0u;
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
      P += __popc(__ballot_sync(0xffffffffu, v[k] != 0));
      for (int b = 0; b < B; b++) {
        const int n = __popc(__ballot_sync(0xffffffffu, (v[k] >> b) & 1u));
        if (lane == b) tok += n;
      }
    }
  }
  if (lane < B) counts[lane] = tok;
  if (lane == 0) counts[B] = P;
  for (int i = P + lane; i < N; i += 32) list[i] = -1;
}

template <class T, class XT, bool GLU, int NT, int U>
__global__ void __launch_bounds__(kBlock, gate_up_min_blocks(NT, U))
    gate_up_sel(const XT *__restrict__ x, const T *__restrict__ w_gate, const T *__restrict__ w_in,
                const T *__restrict__ b_in, const uint32_t *__restrict__ bits, int32_t *__restrict__ list,
                int32_t *__restrict__ counts, T *__restrict__ h, int N, int B, int C, int S, int F, int pf) {
  constexpr int TN = GLU ? 8 : 16;
  __shared__ float red[8][NT * 4][32];
  pdl_wait();
  pdl_trigger();
  for (int tile = blockIdx.x; tile < F / TN; tile += gridDim.x) { /* see gate_up_mma */
    const int kk0 = tile * TN; /* compact neuron index of the tile */
    int e;
    uint32_t m;
    block_select_expert(bits, N, kk0 / S, &e, &m); /* its barrier also guards red's reuse */
    if (e < 0) break;
    if (threadIdx.x == 0 && kk0 % S == 0) list[kk0 / S] = e;
    gate_up_tile<T, XT, GLU, NT, U>(x, w_gate, w_in, b_in, m, e, kk0, h, B, C, S, F, red, pf);
  }
  if (blockIdx.x == gridDim.x - 1 && threadIdx.x < 32) write_counts(bits, list, counts, N, B);
}

/* Column-split gate/up (LTE_SFFN_GU_SPLIT = CS in {2, 4}, env, read at launch): the CS blocks of a
   thread-block cluster share one tile, block rank r reading columns [r C/CS, (r+1) C/CS) of its 16
   rows (8 warps split that range as in gate_up_tile). Each block sums its warps in shared memory;
   rank 0 adds the other ranks' sums through distributed shared memory (cluster barriers: hardware,
   no spin) and runs the epilogue. Why: a tile is 128 KB of weights, so at 50 % (688 tiles) the
   one-block-per-tile grid is ~1.7 waves of 3 blocks per SM and its last tiles run at low occupancy;
   CS blocks per tile make the unit CS times smaller (finer tail, and at 90 % (136 tiles) CS blocks
   per SM stream instead of one). SEL: find the expert from the bits (local-list scheme) instead of
   the list. Grid = tiles * CS, cluster (CS, 1, 1). */
template <class T, class XT, bool GLU, int NT, int U, int CS, bool SEL>
__global__ void __launch_bounds__(kBlock, gate_up_min_blocks(NT, U))
    gate_up_split(const XT *__restrict__ x, const T *__restrict__ w_gate, const T *__restrict__ w_in,
                  const T *__restrict__ b_in, const uint32_t *__restrict__ bits, int32_t *__restrict__ list,
                  int32_t *__restrict__ counts, T *__restrict__ h, int N, int B, int C, int S, int F, int pf) {
  namespace cg = cooperative_groups;
  constexpr int TN = GLU ? 8 : 16;
  __shared__ float red[8][NT * 4][32];
  __shared__ float sum[NT * 4][32];
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int rank = (int)cluster.block_rank();
  pdl_wait();
  pdl_trigger();
  /* clusters loop over tiles (grid = all tiles, or fewer with LTE_SFFN_GU_PERSIST) */
  for (int tile = blockIdx.x / CS; tile < F / TN; tile += gridDim.x / CS) {
    const int kk0 = tile * TN; /* compact neuron index of the tile */
    int e;
    uint32_t m;
    if constexpr (SEL) {
      block_select_expert(bits, N, kk0 / S, &e, &m);
    } else {
      e = __ldcg(&list[kk0 / S]); /* -1 past the union */
      if (e >= N) e = -1;
      m = e >= 0 ? __ldcg(&bits[e]) : 0u;
    }
    if (e < 0) break; /* uniform over the cluster: every rank leaves, none touches another's memory */
    if (SEL && rank == 0 && threadIdx.x == 0 && kk0 % S == 0) list[kk0 / S] = e;
    const int p = kk0 / S;
    const int n0 = e * S + (kk0 - p * S);
    const T *ra = GLU ? w_gate + (int64_t)(n0 + g) * C : w_in + (int64_t)(n0 + g) * C;
    const T *rb = GLU ? w_in + (int64_t)(n0 + g) * C : w_in + (int64_t)(n0 + g + 8) * C;
    const XT *xr[NT];
    bool xok[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      xok[nt] = nt * 8 + g < B;
      xr[nt] = x + (int64_t)(xok[nt] ? nt * 8 + g : 0) * C;
    }
    float d[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
    const int cw = C / CS, cbeg = rank * cw, cend = cbeg + cw; /* host: C % (32 * CS) == 0 */
    gate_up_prefetch<T, GLU, U>(pf, pf & kPfGateUpTile, w_gate, w_in, n0, C, cbeg, cend, 0);
    for (int kb = cbeg + warp * 32; kb < cend; kb += 8 * 32 * U) {
      gate_up_prefetch<T, GLU, U>(pf, false, w_gate, w_in, n0, C, cbeg, cend, kb - cbeg - warp * 32 + 8 * 32 * U);
      uint4 av[U], bv[U], xv[U][NT];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int col = kb + u * 256 + 8 * t;
        if (kb + u * 256 < cend) {
          av[u] = ld_stream(ra + col);
          bv[u] = ld_stream(rb + col);
#pragma unroll
          for (int nt = 0; nt < NT; nt++) xv[u][nt] = xok[nt] ? load_x8<T>(xr[nt] + col) : make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        if (kb + u * 256 < cend) {
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            mma16816<T>(d[nt], av[u].x, bv[u].x, av[u].y, bv[u].y, xv[u][nt].x, xv[u][nt].y);
            mma16816<T>(d[nt], av[u].z, bv[u].z, av[u].w, bv[u].w, xv[u][nt].z, xv[u][nt].w);
          }
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int i = 0; i < 4; i++) red[warp][nt * 4 + i][lane] = d[nt][i];
    __syncthreads();
    if (warp == 0) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float v = 0.f;
#pragma unroll
          for (int wi = 0; wi < 8; wi++) v += red[wi][nt * 4 + i][lane];
          sum[nt * 4 + i][lane] = v;
        }
    }
    cluster.sync(); /* every rank's sum is complete and visible cluster-wide */
    if (rank == 0 && warp == 0) {
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float v = sum[nt * 4 + i][lane];
#pragma unroll
          for (int r = 1; r < CS; r++) v += cluster.map_shared_rank(&sum[0][0], r)[(nt * 4 + i) * 32 + lane];
          d[nt][i] = v;
        }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int q = 0; q < 2; q++) {
          const int tok = nt * 8 + 2 * t + q;
          if (tok >= B) continue;
          const bool on = (m >> tok) & 1u;
          if (GLU) {
            float up = d[nt][2 + q];
            if (b_in) up += to_f(b_in[n0 + g]);
            const float v = on ? silu_f(d[nt][q]) * up : 0.f;
            h[(int64_t)tok * F + kk0 + g] = from_f<T>(v);
          } else {
            float v0 = d[nt][q], v1 = d[nt][2 + q];
            if (b_in) {
              v0 += to_f(b_in[n0 + g]);
              v1 += to_f(b_in[n0 + g + 8]);
            }
            h[(int64_t)tok * F + kk0 + g] = from_f<T>(on ? gelu_f(v0) : 0.f);
            h[(int64_t)tok * F + kk0 + g + 8] = from_f<T>(on ? gelu_f(v1) : 0.f);
          }
        }
      }
    }
    cluster.sync(); /* rank 0 has read the other ranks' shared memory (sum, red reuse is safe) */
  }
  if (SEL && blockIdx.x == gridDim.x - 1 && warp == 0) write_counts(bits, list, counts, N, B);
}

/* ------------------------------------------------------------------ down (tensor cores) */

/* Finishes one 512-column tile: y = residual + bias + (sum of partials or the atomic row). */
template <class T, class YT, bool ATOMIC>
__device__ void down_finish(const T *__restrict__ bias, const YT *residual, YT *y, float *__restrict__ dacc,
                            const float *__restrict__ part, int nparts, int B, int C) {
  const int c0 = blockIdx.x * kDownColsPerBlock;
  const int ncols = min(kDownColsPerBlock, C - c0);
  for (int i = threadIdx.x; i < B * ncols; i += kBlock) {
    const int b = i / ncols, c = c0 + i % ncols;
    const int64_t o = (int64_t)b * C + c;
    float v;
    if (ATOMIC) {
      v = __ldcg(&dacc[o]);
      dacc[o] = 0.f;
    } else {
      v = 0.f;
      for (int k = 0; k < nparts; k++) v += __ldcg(&part[((int64_t)k * B + b) * C + c]);
    }
    if (bias) v += to_f(bias[c]);
    if (residual) v += to_f(__ldcg(&residual[o]));
    y[o] = from_f<YT>(v);
  }
}

template <class T, class YT, int NT, int U, bool ATOMIC, bool LOCAL>
__global__ void __launch_bounds__(kBlock, 2)
    down_mma(const T *__restrict__ hbuf, const T *__restrict__ wdt, const T *__restrict__ bias,
             const uint32_t *__restrict__ bits, const int32_t *__restrict__ list_g,
             const int32_t *__restrict__ counts, int N, const YT *residual, YT *y,
             float *__restrict__ dacc, float *__restrict__ part, int *__restrict__ counters, int B, int C, int S,
             int F, int pf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  pdl_trigger();
  /* the union (route's output: complete, see pdl_wait): from route's list, or compacted here */
  int K;
  const int32_t *list;
  if constexpr (LOCAL) {
    __shared__ int s_list[kMaxLocalExperts];
    __shared__ int s_warp[kBlock / 32];
    K = block_compact(bits, N, B, s_list, s_warp, nullptr) * S;
    list = s_list;
  } else {
    K = __ldcg(&counts[B]) * S;
    list = list_g;
  }
  const int chunks = K / 16;             /* 16-row steps */
  const int per = (chunks + gridDim.y - 1) / gridDim.y;
  const int nparts = per > 0 ? (chunks + per - 1) / per : 0;
  const int s_begin = blockIdx.y * per, s_end = min(chunks, s_begin + per);
  const int c0 = (blockIdx.x * 8 + warp) * 64;
  const bool active = s_begin < s_end && c0 < C;
  /* f32 y updated in place (residual == y, the f32-activation engine's residual add): the partial
     sums go straight into y with atomics (row chunk 0 adds the bias), so there is no finishing
     block, no threadfence / counter chain and no workspace row to re-zero. */
  constexpr bool kYF32 = std::is_same<YT, float>::value;
  const bool inplace = ATOMIC && kYF32 && (pf & kInPlaceFlag) && residual != nullptr &&
                       static_cast<const void *>(residual) == static_cast<const void *>(y);
  if (pf & kPfDown) { /* this block's rows past the first U steps (those are loaded below), 1 KB each */
    const int cb0 = blockIdx.x * kDownColsPerBlock;
    const uint32_t bytes = (uint32_t)(min(kDownColsPerBlock, C - cb0) * sizeof(T));
    for (int r = (s_begin + U) * 16 + threadIdx.x; r < s_end * 16; r += kBlock) {
      const int p = r / S;
      const int64_t row = (int64_t)(LOCAL ? list[p] : __ldcg(&list[p])) * S + (r - p * S);
      prefetch_l2(wdt + row * C + cb0, bytes);
    }
  }
  if (active) {
    const int cg = c0 + 8 * g;
    const T *hr[NT];
    bool hok[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      hok[nt] = nt * 8 + g < B;
      hr[nt] = hbuf + (int64_t)(hok[nt] ? nt * 8 + g : 0) * F + 4 * t;
    }
    float d[NT][4][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int i = 0; i < 4; i++) d[nt][i][0] = d[nt][i][1] = d[nt][i][2] = d[nt][i][3] = 0.f;
    for (int s0 = s_begin; s0 < s_end; s0 += U) {
      uint4 wv[U][4];
      uint2 hv[U][NT];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int s = s0 + u;
        if (s < s_end) {
          const int kk = s * 16;
          const int p = kk / S;
          const int64_t row = (int64_t)(LOCAL ? list[p] : __ldcg(&list[p])) * S + (kk - p * S) + 4 * t;
          const T *wr = wdt + row * C + cg;
#pragma unroll
          for (int q = 0; q < 4; q++) wv[u][q] = ld_stream(wr + (int64_t)q * C);
        }
      }
      if (s0 == s_begin) pdl_wait(); /* h comes from gate_up: the weights above were already in flight */
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int s = s0 + u;
        if (s < s_end) {
          const int kk = s * 16;
#pragma unroll
          for (int nt = 0; nt < NT; nt++)
            hv[u][nt] = hok[nt] ? __ldcg(reinterpret_cast<const uint2 *>(hr[nt] + kk)) : make_uint2(0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
        if (s0 + u < s_end) {
          const uint32_t *w0 = &wv[u][0].x, *w1 = &wv[u][1].x, *w2 = &wv[u][2].x, *w3 = &wv[u][3].x;
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const uint32_t a0 = __byte_perm(w0[i], w1[i], 0x5410), a1 = __byte_perm(w0[i], w1[i], 0x7632);
            const uint32_t a2 = __byte_perm(w2[i], w3[i], 0x5410), a3 = __byte_perm(w2[i], w3[i], 0x7632);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) mma16816<T>(d[nt][i], a0, a1, a2, a3, hv[u][nt].x, hv[u][nt].y);
          }
        }
      }
    }
    /* lane holds, for tokens nt*8 + 2t + q, the 8 columns cg .. cg + 7:
       column cg + 2i <- d[nt][i][q], column cg + 2i + 1 <- d[nt][i][2 + q] */
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const int tok = nt * 8 + 2 * t + q;
        if (tok >= B) continue;
        float4 lo = make_float4(d[nt][0][q], d[nt][0][2 + q], d[nt][1][q], d[nt][1][2 + q]);
        float4 hi = make_float4(d[nt][2][q], d[nt][2][2 + q], d[nt][3][q], d[nt][3][2 + q]);
        if (ATOMIC) {
          float *dst = dacc + (int64_t)tok * C + cg;
          if constexpr (kYF32) {
            if (inplace) {
              dst = reinterpret_cast<float *>(y) + (int64_t)tok * C + cg;
              if (bias != nullptr && blockIdx.y == 0) {
                lo.x += to_f(bias[cg + 0]), lo.y += to_f(bias[cg + 1]), lo.z += to_f(bias[cg + 2]);
                lo.w += to_f(bias[cg + 3]), hi.x += to_f(bias[cg + 4]), hi.y += to_f(bias[cg + 5]);
                hi.z += to_f(bias[cg + 6]), hi.w += to_f(bias[cg + 7]);
              }
            }
          }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
          atomicAdd(reinterpret_cast<float4 *>(dst), lo);
          atomicAdd(reinterpret_cast<float4 *>(dst + 4), hi);
#else
          atomicAdd(dst + 0, lo.x), atomicAdd(dst + 1, lo.y), atomicAdd(dst + 2, lo.z), atomicAdd(dst + 3, lo.w);
          atomicAdd(dst + 4, hi.x), atomicAdd(dst + 5, hi.y), atomicAdd(dst + 6, hi.z), atomicAdd(dst + 7, hi.w);
#endif
        } else {
          float *dst = part + ((int64_t)blockIdx.y * B + tok) * C + cg;
          __stcg(reinterpret_cast<float4 *>(dst), lo);
          __stcg(reinterpret_cast<float4 *>(dst + 4), hi);
        }
      }
    }
  }
  if (inplace) {
    if (!active && blockIdx.y == 0 && c0 < C && bias != nullptr) { /* empty union: y += bias */
      pdl_wait();
      for (int i = lane; i < B * 64; i += 32) {
        const int tok = i / 64, c = c0 + i % 64;
        atomicAdd(reinterpret_cast<float *>(y) + (int64_t)tok * C + c, to_f(bias[c]));
      }
    }
    return;
  }
  pdl_wait();
  if (!last_block_arrived(&counters[blockIdx.x], gridDim.y)) return;
  down_finish<T, YT, ATOMIC>(bias, residual, y, dacc, part, nparts, B, C);
}

/* Cluster down (env LTE_SFFN_DOWN_CL = 1, batch <= 8, atomic/auto variants): no atomics, no
   workspace, no finishing block. A cluster of CS blocks owns 64 output columns; block rank r takes
   the r-th of CS contiguous shares of the union's 16-row steps and its 8 warps interleave those
   steps (warp w: steps w, w + 8, ...), each running the down_mma inner loop (m16n8k16, 64 columns
   as M, 4 rows per lane from one 16-byte load each). The warps' sums meet in shared memory, the
   ranks' through distributed shared memory at rank 0, which adds bias and residual and writes y.
   Why: down_mma's atomics -> threadfence -> counter -> last-block finish is a serial chain at the
   end of every FFN block (and the fp32 row must be re-zeroed). Grid (C / 64) * CS, cluster (CS);
   CS = 4 at C = 4096 (256 blocks, 2 per SM, all resident: the weight loads before the PDL wait
   overlap gate_up's tail). */
template <class T, class YT, int U, bool LOCAL>
__global__ void __launch_bounds__(kBlock, 2)
    down_cl(const T *__restrict__ hbuf, const T *__restrict__ wdt, const T *__restrict__ bias,
            const uint32_t *__restrict__ bits, const int32_t *__restrict__ list_g, const int32_t *__restrict__ counts,
            int N, const YT *residual, YT *y, int B, int C, int S, int F, int pf) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int rank = (int)cluster.block_rank(), CS = (int)cluster.num_blocks();
  __shared__ float red[8][16][32];
  __shared__ float sum[16 * 32];
  pdl_trigger();
  int K;
  const int32_t *list;
  if constexpr (LOCAL) {
    __shared__ int s_list[kMaxLocalExperts];
    __shared__ int s_warp[kBlock / 32];
    K = block_compact(bits, N, B, s_list, s_warp, nullptr) * S;
    list = s_list;
  } else {
    K = __ldcg(&counts[B]) * S;
    list = list_g;
  }
  const int steps = K / 16;
  const int per = (steps + CS - 1) / CS;
  const int sb = rank * per, se = min(steps, sb + per);
  const int c0 = (blockIdx.x / CS) * 64; /* the cluster's 64 columns */
  const int cg0 = c0 + 8 * g;
  if (pf & kPfDown) { /* this block's rows past the first 8 * U steps, 128 bytes each */
    for (int r = (sb + 8 * U) * 16 + threadIdx.x; r < se * 16; r += kBlock) {
      const int p = r / S;
      const int64_t row = (int64_t)(LOCAL ? list[p] : __ldcg(&list[p])) * S + (r - p * S);
      prefetch_l2(wdt + row * C + c0, 64 * sizeof(T));
    }
  }
  const bool hok = g < B;
  const T *hr = hbuf + (int64_t)(hok ? g : 0) * F + 4 * t;
  float d[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++) d[i][0] = d[i][1] = d[i][2] = d[i][3] = 0.f;
  bool waited = false;
  for (int s0 = sb + warp; s0 < se; s0 += 8 * U) {
    uint4 wv[U][4];
    uint2 hv[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int s = s0 + 8 * u;
      if (s < se) {
        const int kk = s * 16;
        const int p = kk / S;
        const int64_t row = (int64_t)(LOCAL ? list[p] : __ldcg(&list[p])) * S + (kk - p * S) + 4 * t;
        const T *wr = wdt + row * C + cg0;
#pragma unroll
        for (int q = 0; q < 4; q++) wv[u][q] = ld_stream(wr + (int64_t)q * C);
      }
    }
    if (!waited) pdl_wait(), waited = true; /* h comes from gate_up */
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int s = s0 + 8 * u;
      if (s < se) hv[u] = hok ? __ldcg(reinterpret_cast<const uint2 *>(hr + s * 16)) : make_uint2(0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (s0 + 8 * u < se) {
        const uint32_t *w0 = &wv[u][0].x, *w1 = &wv[u][1].x, *w2 = &wv[u][2].x, *w3 = &wv[u][3].x;
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const uint32_t a0 = __byte_perm(w0[i], w1[i], 0x5410), a1 = __byte_perm(w0[i], w1[i], 0x7632);
          const uint32_t a2 = __byte_perm(w2[i], w3[i], 0x5410), a3 = __byte_perm(w2[i], w3[i], 0x7632);
          mma16816<T>(d[i], a0, a1, a2, a3, hv[u].x, hv[u].y);
        }
      }
    }
  }
  if (!waited) pdl_wait(); /* residual and y: nothing is written before the predecessors finished */
  /* d[i][j]: column cg0 + 2i + (j >> 1), token 2t + (j & 1) */
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) red[warp][i * 4 + j][lane] = d[i][j];
  __syncthreads();
  for (int v = threadIdx.x; v < 16 * 32; v += kBlock) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < 8; w++) a += red[w][v >> 5][v & 31];
    sum[v] = a;
  }
  cluster.sync(); /* every rank's sum is complete and visible cluster-wide */
  if (rank == 0) {
    for (int v = threadIdx.x; v < 16 * 32; v += kBlock) {
      float a = sum[v];
      for (int r = 1; r < CS; r++) a += cluster.map_shared_rank(sum, r)[v];
      const int ij = v >> 5, ln = v & 31, i = ij >> 2, j = ij & 3;
      const int tok = 2 * (ln & 3) + (j & 1), col = c0 + 8 * (ln >> 2) + 2 * i + (j >> 1);
      if (tok < B && col < C) {
        const int64_t o = (int64_t)tok * C + col;
        if (bias) a += to_f(bias[col]);
        if (residual) a += to_f(__ldcg(&residual[o]));
        y[o] = from_f<YT>(a);
      }
    }
  }
  cluster.sync(); /* rank 0 has read the other ranks' shared memory: they may exit now */
}

/* ------------------------------------------------------------------ f32 (CUDA-core) versions */

/* one warp per union neuron; grid N*S/8 blocks of 8 warps */
__global__ void __launch_bounds__(kBlock)
    gate_up_f32(const float *__restrict__ x, const float *__restrict__ w_gate, const float *__restrict__ w_in,
                const float *__restrict__ b_in, const uint32_t *__restrict__ bits, const int32_t *__restrict__ list,
                const int32_t *__restrict__ counts, float *__restrict__ h, int act, int B, int C, int S, int F) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kk = blockIdx.x * 8 + warp;
  if (kk >= counts[B] * S) return;
  const int e = list[kk / S];
  const int64_t n = (int64_t)e * S + kk % S;
  const uint32_t m = bits[e];
  for (int b = 0; b < B; b++) {
    float gs = 0.f, us = 0.f;
    for (int c = lane; c < C; c += 32) {
      const float xv = x[(int64_t)b * C + c];
      if (act == LTE_SFFN_ACT_SILU_MUL) gs += xv * w_gate[n * C + c];
      us += xv * w_in[n * C + c];
    }
    gs = warp_sum(gs);
    us = warp_sum(us);
    if (lane == 0) {
      if (b_in) us += b_in[n];
      const float v = act == LTE_SFFN_ACT_SILU_MUL ? silu_f(gs) * us : gelu_f(us);
      h[(int64_t)b * F + kk] = ((m >> b) & 1u) ? v : 0.f;
    }
  }
}

/* one thread per output column; grid ceil(C / 256) */
__global__ void __launch_bounds__(kBlock)
    down_f32(const float *__restrict__ hbuf, const float *__restrict__ wdt, const float *__restrict__ bias,
             const int32_t *__restrict__ list, const int32_t *__restrict__ counts, const float *residual, float *y,
             int B, int C, int S, int F) {
  const int c = blockIdx.x * kBlock + threadIdx.x;
  if (c >= C) return;
  const int K = counts[B] * S;
  float acc[LTE_SFFN_MAX_BATCH];
#pragma unroll
  for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) acc[b] = 0.f;
  for (int k = 0; k < K; k++) {
    const float wv = wdt[((int64_t)list[k / S] * S + k % S) * C + c];
#pragma unroll
    for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++)
      if (b < B) acc[b] += hbuf[(int64_t)b * F + k] * wv;
  }
#pragma unroll
  for (int b = 0; b < LTE_SFFN_MAX_BATCH; b++) {
    if (b < B) {
      float v = acc[b];
      if (bias) v += bias[c];
      if (residual) v += residual[(int64_t)b * C + c];
      y[(int64_t)b * C + c] = v;
    }
  }
}

/* ------------------------------------------------------------------ dense baseline activation */

template <class T>
__global__ void dense_act_kernel(int act, const T *gate, const T *up, T *h, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float u = to_f(up[i]);
    h[i] = from_f<T>(act == LTE_SFFN_ACT_SILU_MUL ? silu_f(to_f(gate[i])) * u : gelu_f(u));
  }
}

/* ------------------------------------------------------------------ cuBLAS GemmEx (baseline) */

typedef int (*PFN_cublasGemmEx)(void *handle, int transa, int transb, int m, int n, int k, const void *alpha,
                                const void *A, int Atype, int lda, const void *B, int Btype, int ldb,
                                const void *beta, void *C, int Ctype, int ldc, int computeType, int algo);

PFN_cublasGemmEx gemm_ex() {
  static PFN_cublasGemmEx fn = [] {
    const char *name = blas_library_name();
    if (!name) return (PFN_cublasGemmEx) nullptr;
    void *h = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
    if (!h) return (PFN_cublasGemmEx) nullptr;
    return (PFN_cublasGemmEx)dlsym(h, "cublasGemmEx");
  }();
  return fn;
}


/* Launches kernel on ctx->stream, with the programmatic-dependent-launch attribute when the PDL
   knob is on. Returns the launch error (LTE_LAUNCH_CHECK reports it). */
template <typename... KArgs, typename... Args>
cudaError_t launch_b(lte_ctx *ctx, void (*kernel)(KArgs...), dim3 grid, unsigned block, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = ctx->stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = g_tune.pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}

template <typename... KArgs, typename... Args>
cudaError_t launch(lte_ctx *ctx, void (*kernel)(KArgs...), dim3 grid, Args... args) {
  return launch_b(ctx, kernel, grid, kBlock, args...);
}

/* launch() with a thread-block cluster of `cs` blocks along x (grid.x % cs == 0). */
template <typename... KArgs, typename... Args>
cudaError_t launch_cluster(lte_ctx *ctx, void (*kernel)(KArgs...), dim3 grid, int cs, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kBlock);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = ctx->stream;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cs;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = g_tune.pdl ? 2 : 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}

/* Experimental variants selected by environment variables read at every launch (so one process
   can A/B them; a captured graph keeps what it was captured with). Unset or invalid = default. */
inline int env_choice(const char *name, int def, std::initializer_list<int> allowed) {
  const char *v = getenv(name);
  if (!v || !*v) return def;
  const int x = atoi(v);
  for (int a : allowed)
    if (a == x) return x;
  return def;
}

}  // namespace sffn
}  // namespace lte

using namespace lte;
using namespace lte::sffn;

/* ------------------------------------------------------------------ validation (mirrors cpu/sparse_ffn.c) */

#define SFFN_CHECK_DTYPE(dt)                                                                   \
  do {                                                                                         \
    if ((dt) != LTE_DTYPE_F32 && (dt) != LTE_DTYPE_F16 && (dt) != LTE_DTYPE_BF16) {            \
      if ((dt) == LTE_DTYPE_I32)                                                               \
        return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "dtype i32 is not a float dtype");   \
      return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "unknown dtype %d", (int)(dt));   \
    }                                                                                          \
  } while (0)

#define SFFN_CHECK_BATCH(b) \
  LTE_REQUIRE((b) >= 1 && (b) <= LTE_SFFN_MAX_BATCH, "batch = %d must be in [1, %d]", (int)(b), LTE_SFFN_MAX_BATCH)

#define SFFN_CHECK_MODEL(C, N, S)                                                                               \
  do {                                                                                                          \
    LTE_REQUIRE((C) > 0 && (C) % 64 == 0, "d_model = %d must be a positive multiple of 64", (int)(C));         \
    LTE_REQUIRE((N) > 0, "n_experts = %d must be > 0", (int)(N));                                               \
    LTE_REQUIRE((S) > 0 && (S) % 16 == 0, "expert_size = %d must be a positive multiple of 16", (int)(S));     \
  } while (0)

#define SFFN_CHECK_ACT(a)                                                                                     \
  LTE_REQUIRE((a) == LTE_SFFN_ACT_SILU_MUL || (a) == LTE_SFFN_ACT_GELU, "act = %d is not an LTE_SFFN_ACT_* value", \
              (int)(a))

extern "C" LTE_API lte_status lte_sffn_workspace_size(lte_ctx_t *ctx, int32_t batch, int32_t d_model,
                                                      int32_t n_experts, int32_t expert_size, uint64_t *host_bytes) {
  LTE_ENTER("lte_sffn_workspace_size");
  SFFN_CHECK_BATCH(batch);
  SFFN_CHECK_MODEL(d_model, n_experts, expert_size);
  LTE_REQUIRE_PTR(host_bytes);
  host_bytes[0] = layout(ctx, batch, d_model, n_experts).bytes;
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sffn_route(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w_router,
                                             const void *b_router, float *logits, uint32_t *bits, int32_t *list,
                                             int32_t *counts, void *ws, int32_t batch, int32_t d_model,
                                             int32_t n_experts) {
  LTE_ENTER("lte_sffn_route");
  SFFN_CHECK_DTYPE(dtype);
  SFFN_CHECK_BATCH(batch);
  SFFN_CHECK_MODEL(d_model, n_experts, 16);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(bits);
  LTE_REQUIRE_PTR(list);
  LTE_REQUIRE_PTR(counts);
  LTE_REQUIRE_PTR(ws);
  const Layout L = layout(ctx, batch, d_model, n_experts);
  char *w8 = static_cast<char *>(ws);
  int *ctr = reinterpret_cast<int *>(w8 + L.ctr_off);
  float *racc = reinterpret_cast<float *>(w8 + L.racc_off);
  const bool local = g_tune.local_list && n_experts <= kMaxLocalExperts;
  if (local || (n_experts <= kMaxLocalExperts && env_choice("LTE_SFFN_ROUTE_V2", kDefRouteV2, {0, 1}) == 1)) {
    const dim3 g(n_experts);
    uint32_t *ws_bits = reinterpret_cast<uint32_t *>(static_cast<char *>(ws) + L.bits_off);
#define ROUTE_BITS(T, LIST)                                                                                          \
  launch_b(ctx, route_bits_kernel<T, LIST>, g, kRouteWarps * 32, static_cast<const T *>(x),                         \
           static_cast<const T *>(w_router), static_cast<const T *>(b_router), logits, bits, ws_bits, list, counts, ctr, \
           (int)batch, (int)d_model, (int)n_experts)
    const cudaError_t le = dtype == LTE_DTYPE_F16    ? (local ? ROUTE_BITS(__half, false) : ROUTE_BITS(__half, true))
                           : dtype == LTE_DTYPE_BF16 ? (local ? ROUTE_BITS(__nv_bfloat16, false)
                                                              : ROUTE_BITS(__nv_bfloat16, true))
                                                     : (local ? ROUTE_BITS(float, false) : ROUTE_BITS(float, true));
#undef ROUTE_BITS
    if (le != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of route_bits_kernel", le, __FILE__, __LINE__);
    return LTE_STATUS_OK;
  }
  int split = kRouteSplit;
  while (split > 1 && d_model % (split * 64) != 0) split--;
  dim3 grid(w_router ? (n_experts + 7) / 8 : 1, w_router ? split : 1);
#define ROUTE(T)                                                                                              \
  launch(ctx, route_kernel<T>, grid, static_cast<const T *>(x), static_cast<const T *>(w_router),              \
         static_cast<const T *>(b_router), logits, bits, list, counts, racc, ctr, (int)batch, (int)d_model,     \
         (int)n_experts)
  cudaError_t le;
  if (dtype == LTE_DTYPE_F16)
    le = ROUTE(__half);
  else if (dtype == LTE_DTYPE_BF16)
    le = ROUTE(__nv_bfloat16);
  else
    le = ROUTE(float);
#undef ROUTE
  if (le != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of route_kernel", le, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

template <class T, class XT, bool GLU, int NT, int U>
static cudaError_t launch_gate_up3(lte_ctx *ctx, unsigned grid, const XT *x, const T *wg, const T *wi, const T *bi,
                                   const uint32_t *bits, int32_t *list, int32_t *counts, T *h, int N, int B, int C,
                                   int S, int F) {
  const bool local = g_tune.local_list && N <= kMaxLocalExperts;
  const int pf = env_choice("LTE_SFFN_L2PF", kDefL2Pf, {0, 1, 2, 3, 4, 5, 6, 7});
  /* LTE_SFFN_GU_PERSIST = 1: as many blocks as are resident at once (they loop over the tiles);
     2: 3 blocks (x split), a test of the loop with many tiles per block */
  const int pmode = env_choice("LTE_SFFN_GU_PERSIST", kDefGuPersist, {0, 1, 2});
  const unsigned slots = pmode == 2 ? 3u : (ctx->sm_count > 0 ? ctx->sm_count : 132) * gate_up_min_blocks(NT, U);
  const bool persist = pmode != 0;
  if constexpr (NT == 1 && U == 4) {
    /* column split over a cluster (batch <= 8): LTE_SFFN_GU_SPLIT = 2 or 4 */
    int cs = env_choice("LTE_SFFN_GU_SPLIT", kDefGuSplit, {1, 2, 4});
    while (cs > 1 && C % (32 * cs) != 0) cs /= 2;
    if (cs > 1) {
      unsigned gx = grid * cs;
      const unsigned cap = pmode == 2 ? 3u * cs : slots / cs * cs; /* whole clusters */
      if (persist && gx > cap) gx = cap;
      const dim3 g(gx);
#define GU_SPLIT(CS, SEL) \
  launch_cluster(ctx, gate_up_split<T, XT, GLU, 1, 4, CS, SEL>, g, CS, x, wg, wi, bi, bits, list, counts, h, N, B, C, S, F, \
                 pf)
      if (cs == 2) return local ? GU_SPLIT(2, true) : GU_SPLIT(2, false);
      return local ? GU_SPLIT(4, true) : GU_SPLIT(4, false);
#undef GU_SPLIT
    }
  }
  const dim3 g1(persist && grid > slots ? slots : grid);
  if (local)
    return launch(ctx, gate_up_sel<T, XT, GLU, NT, U>, g1, x, wg, wi, bi, bits, list, counts, h, N, B, C, S, F, pf);
  return launch(ctx, gate_up_mma<T, XT, GLU, NT, U>, g1, x, wg, wi, bi, bits, (const int32_t *)list, counts, h, N, B,
                C, S, F, pf);
}

template <class T, class XT, bool GLU>
static cudaError_t launch_gate_up2(lte_ctx *ctx, unsigned grid, const void *x, const void *w_gate, const void *w_in,
                                   const void *b_in, const uint32_t *bits, const int32_t *list, const int32_t *counts,
                                   void *h, int N, int B, int C, int S, int F) {
  const XT *xx = static_cast<const XT *>(x);
  const T *wg = static_cast<const T *>(w_gate), *wi = static_cast<const T *>(w_in), *bi = static_cast<const T *>(b_in);
  T *hh = static_cast<T *>(h);
  /* local-list mode writes list and counts (documented in lte.h) */
  int32_t *ll = const_cast<int32_t *>(list), *cc = const_cast<int32_t *>(counts);
  if (B > 8) return launch_gate_up3<T, XT, GLU, 2, 4>(ctx, grid, xx, wg, wi, bi, bits, ll, cc, hh, N, B, C, S, F);
  /* f32 x doubles the x registers: 4 chunks in flight */
  if (g_tune.gate_up_unroll == 4 || !std::is_same<T, XT>::value)
    return launch_gate_up3<T, XT, GLU, 1, 4>(ctx, grid, xx, wg, wi, bi, bits, ll, cc, hh, N, B, C, S, F);
  return launch_gate_up3<T, T, GLU, 1, 8>(ctx, grid, static_cast<const T *>(x), wg, wi, bi, bits, ll, cc, hh, N, B, C,
                                          S, F);
}

template <class T>
static cudaError_t launch_gate_up(lte_ctx *ctx, bool glu, bool xf32, unsigned grid, const void *x, const void *w_gate,
                                  const void *w_in, const void *b_in, const uint32_t *bits, const int32_t *list,
                                  const int32_t *counts, void *h, int N, int B, int C, int S, int F) {
  if (xf32) {
    return glu ? launch_gate_up2<T, float, true>(ctx, grid, x, w_gate, w_in, b_in, bits, list, counts, h, N, B, C, S, F)
               : launch_gate_up2<T, float, false>(ctx, grid, x, w_gate, w_in, b_in, bits, list, counts, h, N, B, C, S,
                                                  F);
  }
  return glu ? launch_gate_up2<T, T, true>(ctx, grid, x, w_gate, w_in, b_in, bits, list, counts, h, N, B, C, S, F)
             : launch_gate_up2<T, T, false>(ctx, grid, x, w_gate, w_in, b_in, bits, list, counts, h, N, B, C, S, F);
}

#define SFFN_CHECK_ACT_DTYPE(dt, adt, name)                                                                     \
  LTE_REQUIRE((adt) == (dt) || (adt) == LTE_DTYPE_F32, "%s = %d must be the weight dtype (%d) or f32 (0)", name, \
              (int)(adt), (int)(dt))

extern "C" LTE_API lte_status lte_sffn_gate_up(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype x_dtype, int32_t act,
                                               const void *x, const void *w_gate, const void *w_in, const void *b_in,
                                               const uint32_t *bits, const int32_t *list, const int32_t *counts,
                                               void *h, void *ws, int32_t batch, int32_t d_model, int32_t n_experts,
                                               int32_t expert_size) {
  LTE_ENTER("lte_sffn_gate_up");
  SFFN_CHECK_DTYPE(dtype);
  SFFN_CHECK_ACT_DTYPE(dtype, x_dtype, "x_dtype");
  SFFN_CHECK_ACT(act);
  SFFN_CHECK_BATCH(batch);
  SFFN_CHECK_MODEL(d_model, n_experts, expert_size);
  LTE_REQUIRE_PTR(x);
  if (act == LTE_SFFN_ACT_SILU_MUL) LTE_REQUIRE_PTR(w_gate);
  LTE_REQUIRE_PTR(w_in);
  LTE_REQUIRE_PTR(bits);
  LTE_REQUIRE_PTR(list);
  LTE_REQUIRE_PTR(counts);
  LTE_REQUIRE_PTR(h);
  LTE_REQUIRE_PTR(ws);
  const int S = expert_size, F = n_experts * expert_size;
  const bool glu = act == LTE_SFFN_ACT_SILU_MUL;
  if (dtype == LTE_DTYPE_F32) {
    if (g_tune.local_list && n_experts <= kMaxLocalExperts) { /* route wrote only the bits */
      compact_kernel<<<1, kBlock, 0, ctx->stream>>>(bits, const_cast<int32_t *>(list), const_cast<int32_t *>(counts),
                                                    n_experts, batch);
      LTE_LAUNCH_CHECK("compact_kernel");
    }
    gate_up_f32<<<(F + 7) / 8, kBlock, 0, ctx->stream>>>(
        static_cast<const float *>(x), static_cast<const float *>(w_gate), static_cast<const float *>(w_in),
        static_cast<const float *>(b_in), bits, list, counts, static_cast<float *>(h), act, batch, d_model, S, F);
    LTE_LAUNCH_CHECK("gate_up_f32");
    return LTE_STATUS_OK;
  }
  const unsigned grid = glu ? F / 8 : F / 16;
  const bool xf32 = x_dtype == LTE_DTYPE_F32;
  const cudaError_t le =
      dtype == LTE_DTYPE_F16
          ? launch_gate_up<__half>(ctx, glu, xf32, grid, x, w_gate, w_in, b_in, bits, list, counts, h, n_experts,
                                   batch, d_model, S, F)
          : launch_gate_up<__nv_bfloat16>(ctx, glu, xf32, grid, x, w_gate, w_in, b_in, bits, list, counts, h,
                                          n_experts, batch, d_model, S, F);
  if (le != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of gate_up_mma", le, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

/* The default down variant (docs/engine.md "Sparse FFN kernels": the faster one on the H200). */
static constexpr int kDefaultDown = LTE_SFFN_DOWN_ATOMIC;

template <class T, class YT, bool ATOMIC>
static cudaError_t launch_down2(lte_ctx *ctx, const Layout &L, const void *h, const void *wdt, const void *bias,
                                const uint32_t *bits, const int32_t *list, const int32_t *counts, const void *residual,
                                void *y, void *ws, int N, int B, int C, int S, int F) {
  char *w8 = static_cast<char *>(ws);
  int *ctr = reinterpret_cast<int *>(w8 + L.ctr_off) + 1;
  float *dacc = reinterpret_cast<float *>(w8 + L.dacc_off);
  float *part = reinterpret_cast<float *>(w8 + L.part_off);
  const dim3 grid(L.cb, L.ks);
  const T *hh = static_cast<const T *>(h), *ww = static_cast<const T *>(wdt), *bb = static_cast<const T *>(bias);
  const YT *rr = static_cast<const YT *>(residual);
  YT *yy = static_cast<YT *>(y);
  const bool local = g_tune.local_list && N <= kMaxLocalExperts;
  const int pf = env_choice("LTE_SFFN_L2PF", kDefL2Pf, {0, 1, 2, 3, 4, 5, 6, 7}) |
                 (env_choice("LTE_SFFN_DOWN_INPLACE", kDefInPlace, {0, 1}) ? kInPlaceFlag : 0);
  if (ATOMIC && B <= 8 && env_choice("LTE_SFFN_DOWN_CL", kDefDownCl, {0, 1}) == 1) {
    const int sms = ctx->sm_count > 0 ? ctx->sm_count : 132, tiles = C / 64;
    int cs = 1;
    while (cs < 8 && tiles * cs * 2 <= 2 * sms) cs *= 2; /* ~2 blocks per SM, all resident */
    const dim3 g(tiles * cs);
    return local ? launch_cluster(ctx, down_cl<T, YT, 4, true>, g, cs, hh, ww, bb, bits, list, counts, N, rr, yy, B, C,
                                  S, F, pf)
                 : launch_cluster(ctx, down_cl<T, YT, 4, false>, g, cs, hh, ww, bb, bits, list, counts, N, rr, yy, B, C,
                                  S, F, pf);
  }
#define DOWN(NT, U, LOC) \
  launch(ctx, down_mma<T, YT, NT, U, ATOMIC, LOC>, grid, hh, ww, bb, bits, list, counts, N, rr, yy, dacc, part, ctr, B, C, S, \
         F, pf)
  if (B <= 8) return local ? DOWN(1, 4, true) : DOWN(1, 4, false);
  return local ? DOWN(2, 2, true) : DOWN(2, 2, false);
#undef DOWN
}

template <class T>
static cudaError_t launch_down(lte_ctx *ctx, bool atomic, bool yf32, const Layout &L, const void *h, const void *wdt,
                               const void *bias, const uint32_t *bits, const int32_t *list, const int32_t *counts,
                               const void *residual, void *y, void *ws, int N, int B, int C, int S, int F) {
  if (yf32) {
    return atomic ? launch_down2<T, float, true>(ctx, L, h, wdt, bias, bits, list, counts, residual, y, ws, N, B, C, S, F)
                  : launch_down2<T, float, false>(ctx, L, h, wdt, bias, bits, list, counts, residual, y, ws, N, B, C, S,
                                                  F);
  }
  return atomic ? launch_down2<T, T, true>(ctx, L, h, wdt, bias, bits, list, counts, residual, y, ws, N, B, C, S, F)
                : launch_down2<T, T, false>(ctx, L, h, wdt, bias, bits, list, counts, residual, y, ws, N, B, C, S, F);
}

extern "C" LTE_API lte_status lte_sffn_down(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype y_dtype, const void *h,
                                            const void *w_down_t, const void *b_down, const int32_t *list,
                                            const int32_t *counts, const void *residual, void *y, void *ws,
                                            int32_t batch, int32_t d_model, int32_t n_experts, int32_t expert_size,
                                            int32_t variant) {
  LTE_ENTER("lte_sffn_down");
  SFFN_CHECK_DTYPE(dtype);
  SFFN_CHECK_ACT_DTYPE(dtype, y_dtype, "y_dtype");
  SFFN_CHECK_BATCH(batch);
  SFFN_CHECK_MODEL(d_model, n_experts, expert_size);
  LTE_REQUIRE(variant >= LTE_SFFN_DOWN_AUTO && variant <= LTE_SFFN_DOWN_SPLITK,
              "variant = %d is not an LTE_SFFN_DOWN_* value", (int)variant);
  LTE_REQUIRE_PTR(h);
  LTE_REQUIRE_PTR(w_down_t);
  LTE_REQUIRE_PTR(list);
  LTE_REQUIRE_PTR(counts);
  LTE_REQUIRE_PTR(y);
  LTE_REQUIRE_PTR(ws);
  const int S = expert_size, F = n_experts * expert_size;
  if (dtype == LTE_DTYPE_F32) {
    down_f32<<<(d_model + kBlock - 1) / kBlock, kBlock, 0, ctx->stream>>>(
        static_cast<const float *>(h), static_cast<const float *>(w_down_t), static_cast<const float *>(b_down), list,
        counts, static_cast<const float *>(residual), static_cast<float *>(y), batch, d_model, S, F);
    LTE_LAUNCH_CHECK("down_f32");
    return LTE_STATUS_OK;
  }
  const Layout L = layout(ctx, batch, d_model, n_experts);
  const uint32_t *bits = reinterpret_cast<const uint32_t *>(static_cast<const char *>(ws) + L.bits_off);
  const bool atomic = (variant == LTE_SFFN_DOWN_AUTO ? kDefaultDown : variant) == LTE_SFFN_DOWN_ATOMIC;
  const bool yf32 = y_dtype == LTE_DTYPE_F32;
  const cudaError_t le =
      dtype == LTE_DTYPE_F16
          ? launch_down<__half>(ctx, atomic, yf32, L, h, w_down_t, b_down, bits, list, counts, residual, y, ws,
                                n_experts, batch, d_model, S, F)
          : launch_down<__nv_bfloat16>(ctx, atomic, yf32, L, h, w_down_t, b_down, bits, list, counts, residual, y, ws,
                                       n_experts, batch, d_model, S, F);
  if (le != cudaSuccess) return lte::cuda_fail(ctx, FN, "launch of down_mma", le, __FILE__, __LINE__);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sffn_dense_gemv(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w,
                                                  void *y, int32_t batch, int32_t rows, int32_t cols) {
  LTE_ENTER("lte_sffn_dense_gemv");
  SFFN_CHECK_DTYPE(dtype);
  LTE_CHECK_POS(batch);
  LTE_CHECK_POS(rows);
  LTE_CHECK_POS(cols);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(w);
  LTE_REQUIRE_PTR(y);
  PFN_cublasGemmEx fn = ctx->cublas ? gemm_ex() : nullptr;
  if (!fn) return lte::fail(ctx, LTE_STATUS_UNSUPPORTED, FN, "cuBLAS (cublasGemmEx) is not available");
  /* row-major y (B, rows) = x (B, cols) w^T  <=>  column-major y^T (rows, B) = w^T^T . x^T */
  const int dt = dtype == LTE_DTYPE_F16 ? 2 /* CUDA_R_16F */ : dtype == LTE_DTYPE_BF16 ? 14 /* CUDA_R_16BF */ : 0;
  const float alpha = 1.f, beta = 0.f;
  const int st = fn(ctx->cublas, 1 /* T */, 0 /* N */, rows, batch, cols, &alpha, w, dt, cols, x, dt, cols, &beta, y,
                    dt, rows, 68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */);
  if (st != 0) return lte::fail(ctx, LTE_STATUS_BLAS_ERROR, FN, "cublasGemmEx failed with status %d", st);
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sffn_dense_act(lte_ctx_t *ctx, lte_dtype dtype, int32_t act, const void *gate,
                                                 const void *up, void *h, int64_t n) {
  LTE_ENTER("lte_sffn_dense_act");
  SFFN_CHECK_DTYPE(dtype);
  SFFN_CHECK_ACT(act);
  LTE_CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  if (act == LTE_SFFN_ACT_SILU_MUL) LTE_REQUIRE_PTR(gate);
  LTE_REQUIRE_PTR(up);
  LTE_REQUIRE_PTR(h);
#define DACT(T)                                                                                                  \
  dense_act_kernel<T><<<grid_for(ctx, n), kThreads, 0, ctx->stream>>>(act, static_cast<const T *>(gate),         \
                                                                      static_cast<const T *>(up), static_cast<T *>(h), n)
  if (dtype == LTE_DTYPE_F16)
    DACT(__half);
  else if (dtype == LTE_DTYPE_BF16)
    DACT(__nv_bfloat16);
  else
    DACT(float);
#undef DACT
  LTE_LAUNCH_CHECK("dense_act_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sffn_set_tuning(lte_ctx_t *ctx, int32_t key, int32_t value) {
  LTE_ENTER("lte_sffn_set_tuning");
  switch (key) {
    case LTE_SFFN_TUNE_PDL:
      LTE_REQUIRE(value == 0 || value == 1, "LTE_SFFN_TUNE_PDL value = %d must be 0 or 1", (int)value);
      g_tune.pdl = value;
      return LTE_STATUS_OK;
    case LTE_SFFN_TUNE_GATE_UP_UNROLL:
      LTE_REQUIRE(value == 4 || value == 8, "LTE_SFFN_TUNE_GATE_UP_UNROLL value = %d must be 4 or 8", (int)value);
      g_tune.gate_up_unroll = value;
      return LTE_STATUS_OK;
    case LTE_SFFN_TUNE_LOCAL_LIST:
      LTE_REQUIRE(value == 0 || value == 1, "LTE_SFFN_TUNE_LOCAL_LIST value = %d must be 0 or 1", (int)value);
      g_tune.local_list = value;
      return LTE_STATUS_OK;
    case LTE_SFFN_TUNE_DOWN_BLOCKS_PER_SM:
      LTE_REQUIRE(value >= 1 && value <= kMaxDownBlocksPerSm, "LTE_SFFN_TUNE_DOWN_BLOCKS_PER_SM value = %d must be in [1, %d]",
                  (int)value, kMaxDownBlocksPerSm);
      g_tune.down_blocks_per_sm = value;
      return LTE_STATUS_OK;
    default:
      return lte::fail(ctx, LTE_STATUS_INVALID_ARGUMENT, FN, "unknown tuning key %d", (int)key);
  }
}
