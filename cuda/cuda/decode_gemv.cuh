/*
 * decode_gemv.cuh: the persistent weight-streaming kernels of the decode engine (issue 9), included
 * by decode.cu inside its anonymous namespace (they use its W8 / pdl / dsilu / dgelu / LinArgs).
 * Same functions and semantics as the older kernels there (lte_dec_linear, lte_dec_linear_t_sparse,
 * lte.h); decode.cu picks these when the shape fits (gemv_tune(), env LTE_DEC_GEMV=old forces the
 * older ones).
 *
 * gemv_kernel<T, R, C>   lte_dec_linear, f16/bf16 weights, 1..R rows (R = 1, 2, 4, 8), no in_mask
 *   (split, default on: more rows as several launches of at most 8 rows each, re-reading the
 *   weights). The rows' x' must fit shared memory: two blocks per SM up to 112 KiB (R <= 2 at
 *   K 11008, R <= 4 at K 4096), one block per SM up to 224 KiB (wide, default on: R = 3..4 at
 *   K 11008, R = 5..8 at K 4096). LTE_DEC_GEMV_WIDE=0 LTE_DEC_GEMV_SPLIT=0 give the fifth session's
 *   choice: those rows went to the older, L1-bound kernels.
 *   Shapes: w (N, K) or (2N, K) for SwiGLU, x (rows, ldx) f32, y (rows, N) f32.
 *   grid = SMs x blocks-per-SM (persistent, balanced), 8 warps per block.
 *   Work item = two weight rows that share x': SwiGLU gate row j and up row N + j (output j), or
 *   rows (2i, 2i + 1) (outputs 2i, 2i + 1). With an out_mask the items run over the ACTIVE outputs
 *   only (the block compacts the union of active expert groups in shared memory), so the work stays
 *   balanced at any sparsity. Warp numbering is interleaved across blocks (gw = warp * grid + block)
 *   so the warps with one item more than the others are spread over all SMs.
 *   A piece = C 16-byte chunks per lane of each of the two rows (C * 512 B per row per warp);
 *   pieces are double-buffered in registers across row AND item boundaries: the buffer of piece p
 *   is refilled with piece p + 2 right after its FMAs, so while a warp waits for piece p, piece
 *   p + 1 is in flight too (2 x 2 x C x 512 B per warp; 8 KiB at C = 4).
 *   x' (the normed / plain input rows) is built once per block in shared memory, f32, split into
 *   two planes (elements 8c..8c+3 and 8c+4..8c+7 of chunk c) so the per-lane float4 reads are
 *   conflict-free; rows are zero-padded to whole pieces so the last partial piece needs no branch
 *   (its weight loads are predicated to zero).
 *   PDL: without an out_mask a warp issues its first two pieces (and L1 prefetches of the norm
 *   weights) before griddepcontrol.wait (they do not depend on the previous kernel), then reads x.
 *
 * ts_kernel<T, R, U>     lte_dec_linear_t_sparse, f16/bf16, 1..R rows (R = 1, 2, 4).
 *   Shapes: wt (K, N) (an expert's S rows contiguous), h (rows, K) f32, mask (rows, K/S), y += .
 *   grid = SMs x blocks-per-SM; each block compacts the union of active experts, takes a
 *   contiguous balanced range of the active rows (at least min_rows), stages h of its rows in
 *   shared memory, and thread t owns columns [8t, 8t + 8) (+ 8 * blockDim strides): U rows in
 *   flight, double-buffered, then ONE float4 atomicAdd per 4 columns per row (y holds the
 *   residual). Block 0 adds the bias.
 */

constexpr int kGWarps = 8;        // warps per block of gemv_kernel

/* Streamed weights: read once per step, keep them out of L1. */
__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <class T>
__device__ __forceinline__ void cvt8(const uint4 &u, float (&f)[8]);
template <>
__device__ __forceinline__ void cvt8<__half>(const uint4 &u, float (&f)[8]) {
  const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 v = __half22float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}
template <>
__device__ __forceinline__ void cvt8<__nv_bfloat16>(const uint4 &u, float (&f)[8]) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Warp 0 writes the ascending list of the set indices of flags[0..n) (ints in shared memory) into
   list and the count into *count; list may be flags itself (in place: the __syncwarps keep every
   lane's read of a 32-entry chunk before any write into it). Caller syncs before and after. */
__device__ __forceinline__ void compact_flags_to(const int *flags, int *list, int n, int *count) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  int base = 0;
  for (int i0 = 0; i0 < n; i0 += 32) {
    const int i = i0 + lane;
    const bool on = i < n && flags[i] != 0;
    const unsigned b = __ballot_sync(0xffffffffu, on);
    __syncwarp();
    if (on) list[base + __popc(b & ((1u << lane) - 1u))] = i;
    base += __popc(b);
    __syncwarp();
  }
  if (lane == 0) *count = base;
}
__device__ __forceinline__ void compact_flags(int *flags, int n, int *count) { compact_flags_to(flags, flags, n, count); }

/* flags[e] = the bit set of the rows r of mask (rows x E, f32 0/1, n = rows E entries) that set
   expert e (bit min(r, 31)): flags[e] != 0 is the union, (flags[e] >> r) & 1 row r's own mask for
   r < 32. flags must be zeroed (and synced) before. Every thread of the block calls it; the mask's
   entries are loaded 4 per thread at a time, one round trip for small masks (a loop over the rows
   per expert takes one per row). Caller syncs after. */
__device__ __forceinline__ void union_flags(const float *mask, int n, int E, int *flags) {
  constexpr int B = 4;
  for (int i0 = threadIdx.x; i0 < n; i0 += B * blockDim.x) {
    float v[B];
#pragma unroll
    for (int j = 0; j < B; j++) v[j] = i0 + j * (int)blockDim.x < n ? __ldcg(mask + i0 + j * blockDim.x) : 0.0f;
#pragma unroll
    for (int j = 0; j < B; j++)
      if (v[j] != 0.0f) {
        const int i = i0 + j * blockDim.x;
        atomicOr(&flags[i % E], 1 << (i / E < 31 ? i / E : 31));
      }
  }
}

/* Position of a warp in its stream of pieces: item, piece, and the item's two weight rows. */
struct GPos {
  int it;
  int p;
};

/* x' (the normed / plain input rows) of rows 0..R-1 in shared memory, f32 (rows..R-1 zero), two
   planes per row so per-lane float4 reads of consecutive chunks are conflict-free: elements
   8c..8c+3 of chunk c at xs[r * XS + 4c], 8c+4..8c+7 at xs[r * XS + KP / 2 + 4c]; zero-padded from K
   to KP (a multiple of 8). Raw x first, with the row statistics accumulated on the way, then each
   thread normalizes the entries it wrote itself. sred: kGWarps x 2R floats. Every thread of the
   block (kGWarps warps) calls it; it ends with a barrier. */
template <int R>
__device__ __forceinline__ void build_xprime(const LinArgs &a, int rows, int KP, int XS, float *xs, float *sred) {
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int K = a.k;
  const bool norm = a.mode != LTE_DEC_X_PLAIN;
  // (x is read through L2 (.cg): with PDL it was written by a grid that finished after this one
  // started; XB float4 loads per thread in flight at once)
  constexpr int XB = 4, XSTEP = kGWarps * 32 * 4;
  float s1[R], s2[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    s1[r] = s2[r] = 0.0f;
    for (int k0 = threadIdx.x * 4; k0 < KP; k0 += XB * XSTEP) {
      float4 v[XB];
#pragma unroll
      for (int j = 0; j < XB; j++) {
        const int k = k0 + j * XSTEP;
        v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < rows && k < K) v[j] = __ldcg(reinterpret_cast<const float4 *>(a.x + (size_t)r * a.ldx + k));
      }
#pragma unroll
      for (int j = 0; j < XB; j++) {
        const int k = k0 + j * XSTEP;
        if (k >= KP) break;
        s1[r] += (v[j].x + v[j].y) + (v[j].z + v[j].w);
        s2[r] = fmaf(v[j].x, v[j].x, fmaf(v[j].y, v[j].y, fmaf(v[j].z, v[j].z, fmaf(v[j].w, v[j].w, s2[r]))));
        reinterpret_cast<float4 *>(xs)[(r * XS + ((k >> 2) & 1) * (KP / 2)) / 4 + (k >> 3)] = v[j];
      }
    }
  }
  if (norm) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      s1[r] = warp_sum(s1[r]);
      s2[r] = warp_sum(s2[r]);
      if (lane == 0) {
        sred[wib * 2 * R + 2 * r] = s1[r];
        sred[wib * 2 * R + 2 * r + 1] = s2[r];
      }
    }
  }
  __syncthreads();
  if (norm) {
    const bool ln = a.mode == LTE_DEC_X_LAYERNORM;
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= rows) continue;
      float t1 = 0.0f, t2 = 0.0f;
#pragma unroll
      for (int w = 0; w < kGWarps; w++) {
        t1 += sred[w * 2 * R + 2 * r];
        t2 += sred[w * 2 * R + 2 * r + 1];
      }
      float mean = 0.0f, rstd;
      if (ln) {
        mean = t1 / (float)K;
        rstd = rsqrtf(fmaxf(t2 / (float)K - mean * mean, 0.0f) + a.eps);
      } else {
        rstd = rsqrtf(t2 / (float)K + a.eps);
      }
      // each thread transforms the entries it wrote itself: no barrier between
      for (int k = threadIdx.x * 4; k < K; k += kGWarps * 32 * 4) {
        float4 &v = reinterpret_cast<float4 *>(xs)[(r * XS + ((k >> 2) & 1) * (KP / 2)) / 4 + (k >> 3)];
        const float4 w = *reinterpret_cast<const float4 *>(a.nw + k);
        if (ln) {
          const float4 b = *reinterpret_cast<const float4 *>(a.nb + k);
          v.x = (v.x - mean) * rstd * w.x + b.x;
          v.y = (v.y - mean) * rstd * w.y + b.y;
          v.z = (v.z - mean) * rstd * w.z + b.z;
          v.w = (v.w - mean) * rstd * w.w + b.w;
        } else {
          v.x = v.x * rstd * w.x;
          v.y = v.y * rstd * w.y;
          v.z = v.z * rstd * w.z;
          v.w = v.w * rstd * w.w;
        }
      }
    }
  }
  __syncthreads();
}

template <class T, int R, int C>
__global__ void __launch_bounds__(kGWarps * 32, C <= 4 && R <= 4 ? 2 : 1)
    gemv_kernel(LinArgs a, int rows, int KP, int P, int contig) {
  extern __shared__ float4 gsm4[];
  float *xs = reinterpret_cast<float *>(gsm4);      // R rows x KP, two planes per row
  int *glist = reinterpret_cast<int *>(xs + R * KP);  // out_mask: G flags, then the active-group list
  __shared__ float sred[kGWarps][2 * R];
  __shared__ int scount;
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int W = gridDim.x * kGWarps;
  const int gw = wib * gridDim.x + blockIdx.x;
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int N = a.n, K = a.k;
  const int KC = K / 8;
  const int S = a.S > 0 ? a.S : 1;
  const int G = a.out_mask ? N / S : 0;
  const T *Wt = static_cast<const T *>(a.w);
  const float4 *xs4 = reinterpret_cast<const float4 *>(xs);

  // item i -> its two weight rows (-1: none). v = virtual output index over the active outputs.
  auto vout = [&](int v) { return a.out_mask ? glist[v / S] * S + v % S : v; };
  int nv = N;  // number of (active) outputs
  auto rows_of = [&](const GPos &q, int &ra, int &rb) {
    if (swi) {
      ra = vout(q.it);
      rb = N + ra;
    } else {
      ra = vout(2 * q.it);
      rb = 2 * q.it + 1 < nv ? vout(2 * q.it + 1) : -1;
    }
  };
  int iend = 0, istep = 1;
  GPos cur{0, 0};
  auto start = [&]() {
    const int I = swi ? nv : (nv + 1) / 2;
    if (contig) {
      cur.it = (int)(((long long)gw * I) / W);
      iend = (int)(((long long)(gw + 1) * I) / W);
      istep = 1;
    } else {
      cur.it = gw;
      iend = I;
      istep = W;
    }
    cur.p = 0;
  };
  auto advance = [&](GPos &q) {
    if (++q.p == P) {
      q.p = 0;
      q.it += istep;
    }
  };
  auto load = [&](uint4 (&wa)[C], uint4 (&wb)[C], const GPos &q) {
    int ra, rb;
    rows_of(q, ra, rb);
    const T *pa = Wt + (size_t)ra * K;
    const T *pb = Wt + (size_t)(rb >= 0 ? rb : 0) * K;
#pragma unroll
    for (int u = 0; u < C; u++) {
      const int c = q.p * 32 * C + u * 32 + lane;
      const uint4 z = make_uint4(0u, 0u, 0u, 0u);
      wa[u] = c < KC ? ld_stream(pa + (size_t)c * 8) : z;
      wb[u] = c < KC && rb >= 0 ? ld_stream(pb + (size_t)c * 8) : z;
    }
  };
  float acca[R], accb[R];
#pragma unroll
  for (int r = 0; r < R; r++) acca[r] = accb[r] = 0.0f;
  auto compute = [&](const uint4 (&wa)[C], const uint4 (&wb)[C], const GPos &q) {
#pragma unroll
    for (int u = 0; u < C; u++) {
      const int c = q.p * 32 * C + u * 32 + lane;  // < KP / 8: rows are zero-padded
      float fa[8], fb[8];
      cvt8<T>(wa[u], fa);
      cvt8<T>(wb[u], fb);
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float4 lo = xs4[(r * KP) / 4 + c];
        const float4 hi = xs4[(r * KP + KP / 2) / 4 + c];
        float sa = acca[r], sb = accb[r];
        sa = fmaf(fa[0], lo.x, sa); sa = fmaf(fa[1], lo.y, sa); sa = fmaf(fa[2], lo.z, sa); sa = fmaf(fa[3], lo.w, sa);
        sa = fmaf(fa[4], hi.x, sa); sa = fmaf(fa[5], hi.y, sa); sa = fmaf(fa[6], hi.z, sa); sa = fmaf(fa[7], hi.w, sa);
        sb = fmaf(fb[0], lo.x, sb); sb = fmaf(fb[1], lo.y, sb); sb = fmaf(fb[2], lo.z, sb); sb = fmaf(fb[3], lo.w, sb);
        sb = fmaf(fb[4], hi.x, sb); sb = fmaf(fb[5], hi.y, sb); sb = fmaf(fb[6], hi.z, sb); sb = fmaf(fb[7], hi.w, sb);
        acca[r] = sa;
        accb[r] = sb;
      }
    }
    if (q.p != P - 1) return;
    // last piece of the item: reduce over the warp and write the outputs (lane r: row r)
#pragma unroll
    for (int r = 0; r < R; r++) {
      acca[r] = warp_sum(acca[r]);
      accb[r] = warp_sum(accb[r]);
    }
    const int per = a.out_mask ? a.out_period / S : 0;
    int ra, rb;
    rows_of(q, ra, rb);
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r < rows && lane == r) {
        float *yr = a.y + (size_t)r * N;
        if (swi) {
          const bool on = !a.out_mask || __ldcg(a.out_mask + (size_t)r * per + (ra % a.out_period) / S) != 0.0f;
          yr[ra] = on ? dsilu(acca[r]) * accb[r] : 0.0f;
        } else {
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int n = h ? rb : ra;
            if (n < 0) continue;
            const bool on = !a.out_mask || __ldcg(a.out_mask + (size_t)r * per + (n % a.out_period) / S) != 0.0f;
            if (on) {
              float v = (h ? accb[r] : acca[r]) + (a.bias ? a.bias[n] : 0.0f);
              if (a.act == LTE_DEC_ACT_GELU) v = dgelu(v);
              yr[n] = a.accumulate ? __ldcg(yr + n) + v : v;
            } else if (!a.accumulate) {
              yr[n] = 0.0f;
            }
          }
        }
      }
      acca[r] = accb[r] = 0.0f;
    }
  };

  uint4 a0[C], b0[C], a1[C], b1[C];
  GPos nx{0, 0};
  pdl_launch_dependents();
  const bool norm = a.mode != LTE_DEC_X_PLAIN;
  if (!a.out_mask) {
    // weights do not depend on the previous kernel: the first two pieces go out before the wait
    // (with PDL they overlap the previous kernel's tail; without, the x' set-up below)
    start();
    nx = cur;
    advance(nx);
    if (cur.it < iend) load(a0, b0, cur);
    if (nx.it < iend) load(a1, b1, nx);
  }
  if (norm) {
    // norm weights are constants too: pull this thread's lines into L1 for the x' transform
    for (int k = threadIdx.x * 4; k < K; k += kGWarps * 32 * 4) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(a.nw + k));
      if (a.mode == LTE_DEC_X_LAYERNORM) asm volatile("prefetch.global.L1 [%0];" ::"l"(a.nb + k));
    }
  }
  pdl_wait();

  if (a.out_mask) {
    // the active expert groups (union over the rows) -> compact list; then this warp's first two
    // pieces go out before the x' set-up
    const int per = a.out_period / S;
    for (int g = threadIdx.x; g < G; g += blockDim.x) {
      bool on = false;
      for (int r = 0; r < rows; r++) on |= __ldcg(a.out_mask + (size_t)r * per + g % per) != 0.0f;
      glist[g] = on ? 1 : 0;
    }
    __syncthreads();
    compact_flags(glist, G, &scount);
    __syncthreads();
    nv = scount * S;
    start();
    nx = cur;
    advance(nx);
    if (cur.it < iend) load(a0, b0, cur);
    if (nx.it < iend) load(a1, b1, nx);
    // inactive groups (no row needs them): zero their outputs (grid-wide stride)
    if (!a.accumulate) {
      for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
        bool on = false;
        for (int r = 0; r < rows; r++) on |= __ldcg(a.out_mask + (size_t)r * per + (n / S) % per) != 0.0f;
        if (!on)
          for (int r = 0; r < rows; r++) a.y[(size_t)r * N + n] = 0.0f;
      }
    }
  }

  build_xprime<R>(a, rows, KP, KP, xs, &sred[0][0]);

  // the stream: pieces s + 1 and s + 2 in flight while piece s is computed
  while (cur.it < iend) {
    compute(a0, b0, cur);
    GPos n2 = nx;
    advance(n2);
    if (n2.it < iend) load(a0, b0, n2);
    cur = nx;
    nx = n2;
    if (cur.it >= iend) break;
    compute(a1, b1, cur);
    n2 = nx;
    advance(n2);
    if (n2.it < iend) load(a1, b1, n2);
    cur = nx;
    nx = n2;
  }
}

template <class T, int R, int U, int TPB>
__global__ void __launch_bounds__(TPB, 512 / TPB)
    ts_kernel(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows, int N, int K,
              int S, int min_rows, int qmax, int vec4) {
  extern __shared__ int tsm[];
  int *list = tsm;                                   // E flags, then the active-expert list
  float *hs = reinterpret_cast<float *>(tsm + K / S);  // R x qmax: h of the block's rows
  __shared__ int scount;
  const int E = K / S;
  pdl_launch_dependents();
  pdl_wait();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    bool on = false;
    for (int r = 0; r < rows; r++) on |= __ldcg(mask + (size_t)r * E + e) != 0.0f;
    list[e] = on ? 1 : 0;
  }
  __syncthreads();
  compact_flags(list, E, &scount);
  __syncthreads();
  const int AR = scount * S;
  int q = (AR + (int)gridDim.x - 1) / (int)gridDim.x;
  if (q < min_rows) q = min_rows;
  if (q > qmax) q = qmax;  // host: qmax >= ceil(K / grid), so the blocks still cover AR
  const int lo = (int)blockIdx.x * q;
  const int hi = lo + q < AR ? lo + q : AR;
  const bool add_bias = bias != nullptr && blockIdx.x == 0;
  if (lo >= hi && !add_bias) return;
  auto row_of = [&](int j) { return list[j / S] * S + j % S; };
  for (int i = threadIdx.x; i < (hi - lo) * R; i += blockDim.x) {
    const int r = i / (hi - lo), j = i % (hi - lo);
    hs[r * qmax + j] = r < rows ? __ldcg(h + (size_t)r * K + row_of(lo + j)) : 0.0f;
  }
  __syncthreads();
  for (int cg = threadIdx.x * 8; cg < N; cg += blockDim.x * 8) {
    float acc[R][8];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int i = 0; i < 8; i++) acc[r][i] = 0.0f;
    uint4 b0[U], b1[U];
    auto load = [&](uint4 (&b)[U], int j0) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int j = j0 + u;
        b[u] = j < hi ? ld_stream(wt + (size_t)row_of(j) * N + cg) : make_uint4(0u, 0u, 0u, 0u);
      }
    };
    auto compute = [&](const uint4 (&b)[U], int j0) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int j = j0 + u;
        if (j >= hi) break;
        float w[8];
        cvt8<T>(b[u], w);
#pragma unroll
        for (int r = 0; r < R; r++) {
          const float hv = hs[r * qmax + (j - lo)];
#pragma unroll
          for (int i = 0; i < 8; i++) acc[r][i] = fmaf(hv, w[i], acc[r][i]);
        }
      }
    };
    int j = lo;
    if (j < hi) load(b0, j);
    while (j < hi) {
      if (j + U < hi) load(b1, j + U);
      compute(b0, j);
      j += U;
      if (j >= hi) break;
      if (j + U < hi) load(b0, j + U);
      compute(b1, j);
      j += U;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r >= rows) continue;
      if (add_bias)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[r][i] += bias[cg + i];
      float *yo = y + (size_t)r * N + cg;
      if (vec4) {
        atomicAdd(reinterpret_cast<float4 *>(yo), make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
        atomicAdd(reinterpret_cast<float4 *>(yo) + 1, make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]));
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++) atomicAdd(yo + i, acc[r][i]);
      }
    }
  }
}

/* ------------------------------------------------------------------ host side */

/* Run-time selection, read at every launch (like LTE_DEC_PDL), so one process can A/B:
     LTE_DEC_GEMV        old | new | auto (default: the new kernels where they apply; the older
                         block-per-row kernel for small dense N)
     LTE_DEC_GEMV_BPS    blocks per SM of gemv_kernel (default 2 for C = 4, 1 for C = 8)
     LTE_DEC_GEMV_CH     C: chunks per lane per row per piece, 4 or 8 (default 4)
     LTE_DEC_GEMV_ORDER  contig | strided item assignment (default contig)
     LTE_DEC_TS_BPS      blocks per SM of ts_kernel (default 2)
     LTE_DEC_TS_U        rows in flight per thread of ts_kernel, 4 or 8 (default 8)
     LTE_DEC_TS_MINROWS  fewest active rows per ts_kernel block (default 8)
     LTE_DEC_TS_THREADS  threads per ts_kernel block, 256 (2 blocks per SM) or 512 (1; LTE_DEC_TS_BPS
                         still multiplies) (default 256)
     LTE_DEC_GEMV_SPLIT  1: more rows than one launch of the new kernels holds (up to 16) run as
                         several launches of <= 8 (4, 2) rows each, re-reading the weights per
                         launch, instead of the older 8-row kernels (default 1 for lte_dec_linear,
                         measured in the sixth session; 0 for lte_dec_linear_t_sparse, unmeasured)
     LTE_DEC_GEMV_WIDE   1: 5-8 rows in one launch (R = 8) and x' up to 224 KiB at one block per SM
                         (default 1; with split, the 7B step at batch 8 took 10.0 ms instead of the
                         older kernels' 21.6, batch 4 4.95 instead of 6.71: sixth session)
     LTE_DEC_GEMV_MMA_KSPLIT  1: 9-16 rows whose x' does not fit one block (the down projection
                         at K 11008) run as column slices of K, each launch adding its partial
                         product into y (plain x, accumulate, no activation), so the weights are
                         read once; 0: launches of 8 rows, each re-reading them (default 1, ninth
                         session)
     LTE_DEC_GEMV_MMA_KG  2 or 4: plain-x accumulating calls of 5-16 rows (O, down) on tensor
                         cores as K groups in one launch, each block building x' of K / KG only
                         and adding its outputs with atomics; 1: never; default 0: 4 for calls of
                         at most 8 rows, none above (tenth session, H200: 7B step at batch 8
                         5.41 -> 5.02 ms with 4; at batch 16 6.79 -> 7.84 ms, though each GEMV
                         alone was faster, unexplained)
     LTE_DEC_GEMV_MMA_MASK  1: lte_dec_linear with an out_mask (the masked gate/up of a sparse
                         step) on tensor cores too, over the union's tiles only (default 1, ninth
                         session); 0: such calls stay on the CUDA-core kernels
     LTE_DEC_TS_MMA      1: lte_dec_linear_t_sparse (the union's down projection) of
                         LTE_DEC_GEMV_MMA_MIN..16 rows on tensor cores (ts_mma_kernel,
                         decode_ts_mma.cuh; same dtype rule as LTE_DEC_GEMV_MMA), 2: the same
                         on ts_mma2_kernel (warps of a block on adjacent column groups of the same
                         experts: 1 KB contiguous per k row; the default since the tenth session,
                         7B union down at 8 rows, ~50 % active: 56.5 -> 44.0 us), 0: never
                         (default 2)
     LTE_DEC_GEMV_MMA    1: lte_dec_linear of LTE_DEC_GEMV_MMA_MIN (default 5) .. 16 rows with f16
                         weights on tensor cores (gemv_mma_kernel, decode_gemv_mma.cuh; x' rounded
                         to f16), 2: bf16 weights too, 0: never (default 1; batch 8 7B step 10.0 ->
                         6.2 ms, seventh session) */
struct GemvTune {
  int mode;  // 0 old, 1 auto, 2 new
  int bps;
  int ch;
  int contig;
  int ts_bps;
  int ts_u;
  int ts_threads;
  int split;     // lte_dec_linear (gemv_kernel)
  int ts_split;  // lte_dec_linear_t_sparse (ts_kernel)
  int ts_min_rows;
  int wide;
  int mma;      // gemv_mma_kernel (decode_gemv_mma.cuh) for mma_min..16 rows
  int mma_min;
  int mma_v;    // its load shape (decode_gemv_mma.cuh, mma_shape)
  int mma_f;    // its K split (0: chosen per shape, mma_parts)
  int mma_ksplit;  // 16 rows whose x' does not fit: column slices (1) or two launches of 8 rows (0)
  int mma_mask;    // gemv_mma_kernel takes out_mask calls (masked gate/up of sparse steps)
  int ts_mma;      // ts_mma_kernel (decode_ts_mma.cuh) for lte_dec_linear_t_sparse of mma_min..16 rows
  int mma_kg;      // K groups of gemv_mma_kernel in one launch (1 = off; decode_gemv_mma.cuh, mma_kgroups)
};

constexpr int kMmaVariants = 4;  // gemv_mma_kernel load shapes (decode_gemv_mma.cuh, mma_shape)

inline GemvTune gemv_tune() {
  GemvTune t;
  const char *m = getenv("LTE_DEC_GEMV");
  t.mode = m == nullptr ? 1 : strcmp(m, "old") == 0 ? 0 : strcmp(m, "new") == 0 ? 2 : 1;
  t.ch = env_int("LTE_DEC_GEMV_CH", 4, 4, 8) > 4 ? 8 : 4;
  t.bps = env_int("LTE_DEC_GEMV_BPS", t.ch == 4 ? 2 : 1, 1, 8);
  const char *o = getenv("LTE_DEC_GEMV_ORDER");
  t.contig = !(o != nullptr && strcmp(o, "strided") == 0);
  t.ts_bps = env_int("LTE_DEC_TS_BPS", 2, 1, 8);
  t.ts_u = env_int("LTE_DEC_TS_U", 8, 4, 8) > 4 ? 8 : 4;
  t.ts_threads = env_int("LTE_DEC_TS_THREADS", 256, 256, 512) > 256 ? 512 : 256;
  t.split = env_int("LTE_DEC_GEMV_SPLIT", 1, 0, 1);
  t.ts_split = env_int("LTE_DEC_GEMV_SPLIT", 0, 0, 1);
  t.ts_min_rows = env_int("LTE_DEC_TS_MINROWS", 8, 1, 1 << 20);
  t.wide = env_int("LTE_DEC_GEMV_WIDE", 1, 0, 1);
  t.mma = env_int("LTE_DEC_GEMV_MMA", 1, 0, 2);
  t.mma_min = env_int("LTE_DEC_GEMV_MMA_MIN", 5, 1, 16);
  // 3 (8 x 2 interleaved) since the ninth session: 7B step at batch 8 6.23 -> 5.58 ms (H200)
  t.mma_v = env_int("LTE_DEC_GEMV_MMA_V", 3, 0, kMmaVariants - 1);
  t.mma_f = env_int("LTE_DEC_GEMV_MMA_F", 0, 0, 8);
  if (t.mma_f != 0 && t.mma_f != 1 && t.mma_f != 2 && t.mma_f != 4) t.mma_f = 8;
  t.mma_ksplit = env_int("LTE_DEC_GEMV_MMA_KSPLIT", 1, 0, 1);
  t.mma_mask = env_int("LTE_DEC_GEMV_MMA_MASK", 1, 0, 1);
  t.ts_mma = env_int("LTE_DEC_TS_MMA", 2, 0, 2);
  t.mma_kg = env_int("LTE_DEC_GEMV_MMA_KG", 0, 0, 4);  // 0: per call (mma_kgroups)
  if (t.mma_kg == 3) t.mma_kg = 2;
  return t;
}

constexpr size_t kGemvSmemMax = 112 * 1024;   // two blocks of 8 warps per SM still fit (228 KiB)
constexpr size_t kGemvSmemMax1 = 224 * 1024;  // one block per SM: x' of more rows (R = 8 at K 4096,
                                              // R = 4 at K 11008); the occupancy query then gives 1

inline int sm_count_of(const lte_ctx *ctx) { return ctx->sm_count > 0 ? ctx->sm_count : 132; }

/* Persistent grid: SMs x min(requested, resident) blocks. */
template <class K>
cudaError_t persistent_grid(K kernel, int threads, size_t smem, int sms, int bps, unsigned *grid) {
  if (smem > 48 * 1024) {
    // always the same cap (never lowered): a node captured earlier with more shared memory must
    // still launch when the graph replays
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kGemvSmemMax1);
    if (e != cudaSuccess) return e;
  }
  int occ = 0;
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, threads, smem);
  if (e != cudaSuccess) return e;
  if (occ < 1) occ = 1;
  *grid = (unsigned)(sms * (bps < occ ? bps : occ));
  return cudaSuccess;
}

/* Padded row length of x' for C chunks per lane per piece, and the piece count. */
inline void gemv_geometry(int k, int ch, int *kp, int *pieces) {
  const int per = 32 * ch * 8;  // elements per piece of one row
  *pieces = (k + per - 1) / per;
  *kp = *pieces * per;
}

inline size_t gemv_smem(const LinArgs &a, int R, int kp) {
  size_t s = (size_t)R * kp * sizeof(float);
  if (a.out_mask) s += (size_t)(a.n / a.S) * sizeof(int);
  return s;
}

/* Rows one launch of gemv_kernel takes: all of them (template R = 1, 2, 4, or with wide 8 rows) when
   their x' fits kGemvSmemMax (two blocks per SM; with wide kGemvSmemMax1, one block per SM), or with
   split the largest of (8,) 4, 2, 1 whose x' fits (0: the older kernels). */
inline int gemv_chunk(const GemvTune &t, const LinArgs &a, int rows) {
  int kp, pieces;
  gemv_geometry(a.k, t.ch, &kp, &pieces);
  const int R = rows == 1 ? 1 : rows == 2 ? 2 : rows <= 4 ? 4 : 8;
  const int most = t.wide ? 8 : 4;
  const size_t cap = t.wide ? kGemvSmemMax1 : kGemvSmemMax;
  if (rows <= most && gemv_smem(a, R, kp) <= cap) return rows;
  if (!t.split) return 0;
  for (int c = most; c >= 1; c /= 2)
    if (gemv_smem(a, c, kp) <= cap) return c;
  return 0;
}

/* Whether gemv_kernel takes this call (vec: the 16-byte conditions of lte_dec_linear). */
inline bool gemv_applies(const GemvTune &t, lte_dtype wdtype, const LinArgs &a, int rows, bool vec) {
  if (t.mode == 0 || !vec || rows < 1 || a.in_mask) return false;
  if (rows > 16 || (rows > (t.wide ? 8 : 4) && !t.split)) return false;
  if (wdtype != LTE_DTYPE_F16 && wdtype != LTE_DTYPE_BF16) return false;
  if (t.mode == 1 && a.act == LTE_DEC_ACT_NONE && !a.out_mask && a.n < kRowBlockMaxN) return false;
  return gemv_chunk(t, a, rows) > 0;
}

template <class T, int R, int C>
cudaError_t launch_gemv_rc(const LinArgs &a, int rows, const GemvTune &t, int sms, cudaStream_t st) {
  int kp, pieces;
  gemv_geometry(a.k, C, &kp, &pieces);
  const size_t smem = gemv_smem(a, R, kp);
  unsigned grid = 0;
  cudaError_t e = persistent_grid(gemv_kernel<T, R, C>, kGWarps * 32, smem, sms, t.bps, &grid);
  if (e != cudaSuccess) return e;
  e = dlaunch(gemv_kernel<T, R, C>, dim3(grid), dim3(kGWarps * 32), smem, st, a, rows, kp, pieces, t.contig);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_gemv_one(const LinArgs &a, int rows, const GemvTune &t, int sms, cudaStream_t st) {
  if (t.ch == 8) {
    if (rows == 1) return launch_gemv_rc<T, 1, 8>(a, rows, t, sms, st);
    if (rows == 2) return launch_gemv_rc<T, 2, 8>(a, rows, t, sms, st);
    if (rows <= 4) return launch_gemv_rc<T, 4, 8>(a, rows, t, sms, st);
    return launch_gemv_rc<T, 8, 8>(a, rows, t, sms, st);
  }
  if (rows == 1) return launch_gemv_rc<T, 1, 4>(a, rows, t, sms, st);
  if (rows == 2) return launch_gemv_rc<T, 2, 4>(a, rows, t, sms, st);
  if (rows <= 4) return launch_gemv_rc<T, 4, 4>(a, rows, t, sms, st);
  return launch_gemv_rc<T, 8, 4>(a, rows, t, sms, st);
}

/* All rows: one launch, or (split) launches of gemv_chunk rows each. */
template <class T>
cudaError_t launch_gemv(const LinArgs &a, int rows, const GemvTune &t, int sms, cudaStream_t st) {
  const int chunk = gemv_chunk(t, a, rows);
  if (chunk >= rows) return launch_gemv_one<T>(a, rows, t, sms, st);
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    LinArgs b = a;
    const int rb = rows - r0 < chunk ? rows - r0 : chunk;
    b.x = a.x + (size_t)r0 * a.ldx;
    b.y = a.y + (size_t)r0 * a.n;
    if (a.out_mask) b.out_mask = a.out_mask + (size_t)r0 * (a.out_period / a.S);
    const cudaError_t e = launch_gemv_one<T>(b, rb, t, sms, st);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

/* Rows of one ts_kernel block at most: the grid is >= sms blocks (each covers ceil(AR / grid) <=
   ceil(K / sms) rows, or min_rows), so this bounds the staged h for any occupancy. */
inline int ts_qmax(const GemvTune &t, int k, int sms) {
  const int q = (k + sms - 1) / sms;
  const int m = t.ts_min_rows < k ? t.ts_min_rows : k;
  return q > m ? q : m;
}
inline size_t ts_smem(int R, int k, int S, int qmax) {
  return (size_t)(k / S) * sizeof(int) + (size_t)R * qmax * sizeof(float);
}

inline bool ts_applies(const GemvTune &t, lte_dtype wdtype, int rows, int k, int S, int sms) {
  if (t.mode == 0 || rows < 1 || rows > 16 || (rows > 4 && !t.ts_split)) return false;
  if (wdtype != LTE_DTYPE_F16 && wdtype != LTE_DTYPE_BF16) return false;
  return ts_smem(4, k, S, ts_qmax(t, k, sms)) <= kGemvSmemMax;
}

template <class T, int R, int U, int TPB>
cudaError_t launch_ts_ru(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows, int n,
                         int k, int S, const GemvTune &t, int sms, cudaStream_t st) {
  const int qmax = ts_qmax(t, k, sms);
  const size_t smem = ts_smem(R, k, S, qmax);
  unsigned grid = 0;
  cudaError_t e = persistent_grid(ts_kernel<T, R, U, TPB>, TPB, smem, sms, t.ts_bps, &grid);
  if (e != cudaSuccess) return e;
  const int vec4 = (uintptr_t)y % 16 == 0 ? 1 : 0;
  e = dlaunch(ts_kernel<T, R, U, TPB>, dim3(grid), dim3(TPB), smem, st, wt, h, mask, bias, y, rows, n, k, S,
              t.ts_min_rows, qmax, vec4);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_ts_one(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows,
                          int n, int k, int S, const GemvTune &t, int sms, cudaStream_t st) {
  if (t.ts_threads == 512) {  // one pass over 4096 columns, 1 block per SM by default
    if (rows == 1) return launch_ts_ru<T, 1, 8, 512>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
    if (rows == 2) return launch_ts_ru<T, 2, 8, 512>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
    return launch_ts_ru<T, 4, 8, 512>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
  }
  if (t.ts_u == 4) {
    if (rows == 1) return launch_ts_ru<T, 1, 4, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
    if (rows == 2) return launch_ts_ru<T, 2, 4, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
    return launch_ts_ru<T, 4, 4, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
  }
  if (rows == 1) return launch_ts_ru<T, 1, 8, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
  if (rows == 2) return launch_ts_ru<T, 2, 8, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
  return launch_ts_ru<T, 4, 8, 256>(wt, h, mask, bias, y, rows, n, k, S, t, sms, st);
}

/* All rows: chunks of <= 4 (more than 4 only with split); each chunk adds the bias to its rows. */
template <class T>
cudaError_t launch_ts(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows, int n,
                      int k, int S, const GemvTune &t, int sms, cudaStream_t st) {
  const int E = k / S;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int rb = rows - r0 < 4 ? rows - r0 : 4;
    const cudaError_t e = launch_ts_one<T>(wt, h + (size_t)r0 * k, mask + (size_t)r0 * E, bias, y + (size_t)r0 * n,
                                           rb, n, k, S, t, sms, st);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
