/*
 * decode_gemv_mma.cuh: lte_dec_linear for 5..16 rows on tensor cores (issue 9, seventh session),
 * included by decode.cu inside its anonymous namespace after decode_gemv.cuh (it uses its x'
 * builder, ld_stream, pdl_*, persistent_grid and GemvTune).
 *
 * Why: the CUDA-core GEMV (gemv_kernel) does R FMAs and R shared-memory reads of x' per weight, so
 * from ~5 rows on it is bound by instruction issue, not by the weight stream (7B step at batch 8:
 * 10.0 ms against 3.6 ms at batch 1 for the same bytes). mma.sync m16n8k16 multiplies a 16 x 16
 * weight tile by 8 rows in one instruction per warp, so the weight stream is the bound again.
 *
 * gemv_mma_kernel<T, NT, XF, LD, U>   f16/bf16 weights, rows <= 8 NT, no in_mask / out_mask.
 *   Precision (written tolerance, tests/gpu/gemv_test.ts): x' is rounded to T at the tensor-core
 *   input (as in any half-precision inference); products and sums are f32.
 *   Tile = 16 weight rows: SwiGLU gate rows 8t..8t+7 over up rows N+8t..N+8t+7 (so a lane's
 *   accumulators hold gate AND up of the same output: the SwiGLU epilogue needs no exchange), else
 *   rows 16t..16t+15. Block b owns the contiguous tiles [b T / G, (b + 1) T / G); each tile's K is
 *   split into F parts (F = 1, 2, 4, 8 per shape, mma_parts: balance vs run length), and the block's
 *   8 warps take its (tile, part) units round robin (8 / F tiles per round).
 *   A stage = 32 LD k of a unit's 16 rows: lane (g, c) = (lane / 4, lane % 4) loads LD consecutive
 *   16-byte chunks of row g and of row g + 8 (the 4 lanes of a row read 64 LD contiguous bytes;
 *   LD = 4 measured best: 1 and 2 starve the DRAM of long runs, 8 costs registers) and feeds chunk
 *   j to the two mmas of pair j under a k permutation both operands share (slots 2c, 2c+1, 2c+8,
 *   2c+9 of the first mma = elements 0..3 of the chunk, of the second = 4..7): one shared-memory
 *   vector read of x' per chunk and n-tile feeds both. Lane groups rotate which chunk goes to which
 *   pair so the x' reads of a pair hit distinct banks. U stages are in flight per warp, across unit
 *   boundaries; the first U go out before griddepcontrol.wait.
 *   The F partial tiles meet in shared memory: each warp stores its fragment to a ring slot and
 *   counts itself in; the warp that arrives last sums the F partials in part order (deterministic)
 *   and writes the outputs (bias, GELU / SwiGLU, residual), then frees the slot.
 *   x' in shared memory: XF = 1 f32 in the two-plane layout of build_xprime, XF = 0 already rounded
 *   to T where f32 does not fit (twice the rows per byte: 8 rows at K 11008, 16 at K 4096; norm
 *   modes then take a statistics pass over x first).
 *   Switches: LTE_DEC_GEMV_MMA=0 (off) / 1 (f16 weights, default) / 2 (bf16 too), LTE_DEC_GEMV_MMA_MIN (fewest rows, default 5: at 4 rows the
 *   CUDA-core kernel measured faster), LTE_DEC_GEMV_MMA_V (LD x U: 4 x 4, 8 x 2; 2, 3 = 0, 1 with interleaved chunks;
 *   default 3), LTE_DEC_GEMV_MMA_F (force F), LTE_DEC_GEMV_MMA_KSPLIT (16 rows at K 11008: column slices).
 *   16 rows whose x' does not fit (the down projection at K 11008) run as 2-4 launches over column
 *   slices of K (a.ldw = the full row stride), each adding its partial product into y, so the
 *   weights cross once; until the ninth session they ran as two launches of 8 rows (read twice).
 */

constexpr int kMmaSlots = 32;  // partial tiles held: a ring of 32 / F tiles (4 rounds of 8 / F)

/* LD: 16-byte chunks per lane per row per stage, U: stages in flight per warp. A stage is 32 LD k
   of a row, read by its 4 lanes (c = 0..3) in LD load instructions:
     IL = 0: lane c holds chunks LD c .. LD c + LD - 1 (consecutive): one instruction touches 16 of
             every 64 LD bytes of the row, half of each 32-byte sector (the other half comes with
             the next instruction, which the L1::no_allocate stream does not cache: each sector
             likely crosses from L2 twice);
     IL = 1: lane c holds chunks c, 4 + c, 8 + c, ...: instruction j reads 64 contiguous bytes
             (two whole sectors) of each row, so every sector crosses once (eighth session;
             faster in the ninth, see mma_shape). */
template <class T, int NT, int XF, int LD, int U, int IL>
__global__ void __launch_bounds__(kGWarps * 32, 1)
    gemv_mma_kernel(LinArgs a, int rows, int F, int KS, int KP, int XS, int KG) {
  constexpr int kStage = 32 * LD;
  extern __shared__ float4 msm4[];
  constexpr int R8 = 8 * NT;
  float *xf = reinterpret_cast<float *>(msm4);  // XF: R8 rows x XS floats
  T *xh = reinterpret_cast<T *>(msm4);          // !XF: R8 rows x XS elements of T
  const size_t xbytes = XF ? (size_t)R8 * XS * sizeof(float) : (size_t)R8 * XS * sizeof(T);
  float4 *part = reinterpret_cast<float4 *>(reinterpret_cast<char *>(msm4) + xbytes);  // slots x 32 lanes x NT
  __shared__ float sred[kGWarps * 2 * R8];
  __shared__ int cnt[kMmaSlots], gen[kMmaSlots];
  __shared__ int ocount;

  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  // K groups (KG > 1, LTE_DEC_GEMV_MMA_KG; plain x, accumulate, no activation, no mask): block b
  // works on column slice b % KG of K (a.k = the slice length, a.ldw = the full K) for its share
  // of the tiles among the G / KG blocks of that slice, and adds its outputs into y with atomics;
  // each block builds x' of its slice only (ninth session, opt-in, not yet run on a GPU)
  const int nbk = gridDim.x / KG, bik = blockIdx.x / KG;
  if (KG > 1) {
    const int kgi = blockIdx.x % KG, k0 = kgi * a.k;
    a.k = max(0, min(a.k, a.ldw - k0));
    a.x += k0;
    a.w = static_cast<const T *>(a.w) + k0;
    if (kgi > 0) a.bias = nullptr;
  }
  // lane group c holds its chunks rotated by `rot` (chunk (j + rot) % LD in register slot j) and
  // feeds slot j to mma pair j (the pairs' sums cover the same k either way): the lanes' x' reads
  // of one pair then fall into distinct shared-memory banks (with XS's row pad, mma_geometry)
  // (IL = 1 needs none: the 4 lanes of a row read 64 contiguous bytes, the row pad does the rest)
  const int rot = IL ? 0 : LD == 8 ? 2 * c : LD == 4 ? c >> 1 : 0;
  const int kc0 = IL ? 8 * c : 8 * LD * c;  // first k of lane group c's chunks in a stage
  const bool swi = a.act == LTE_DEC_ACT_SWIGLU;
  const int N = a.n, K = a.k;
  const size_t LDW = a.ldw ? a.ldw : K;  // weight row stride (a K-split launch reads a column slice)
  const int TA = swi ? N / 8 : (N + 15) / 16;
  // out_mask (ninth session): the block's tiles are a balanced range of the union's tiles only
  // (virtual index v: period, active expert, tile of the expert; tile_of), known after the PDL
  // wait; without it v = t. A tile lies within one expert (mma_applies: S, P multiples of its width).
  const bool om = a.out_mask != nullptr;
  const int TW = swi ? 8 : 16;                        // outputs per tile
  const int EP = om ? a.out_period / a.S : 0;         // experts per period of the mask
  const int TPE = om ? a.S / TW : 1, TPP = om ? a.out_period / TW : 1;
  int *oflag = reinterpret_cast<int *>(part + kMmaSlots * 32 * NT);  // EP: the rows' bits per expert (union_flags)
  int *olist = oflag + EP;                                            // EP: the union's experts, ascending
  int t0 = (int)(((long long)bik * TA) / nbk);
  int t1 = (int)(((long long)(bik + 1) * TA) / nbk);
  const int SPT = KS / kStage;  // stages per unit (a tile's part of KS k)
  int NUB = (t1 - t0) * F;  // units of the block; warp w takes units w, w + 8, w + 16, ...
  int Q = (wib < NUB ? (NUB - wib + kGWarps - 1) / kGWarps : 0) * SPT;  // stages of this warp
  const int ring = kMmaSlots / F;  // tiles in the ring
  const T *Wt = static_cast<const T *>(a.w);
  pdl_launch_dependents();
  if (!om && NUB == 0) return;  // more blocks than tiles (small N): the whole block leaves together
  auto tile_of = [&](int v) {
    if (!om) return v;
    const int per = ocount * TPE, rem = v % per;
    return (v / per) * TPP + olist[rem / TPE] * TPE + rem % TPE;
  };

  // weight rows of lane (g, c) in tile t: ra (fragment row g), rb (row g + 8); -1 = past N
  auto rows_of = [&](int t, int &ra, int &rb) {
    if (swi) {
      ra = 8 * t + g;
      rb = N + ra;
    } else {
      ra = 16 * t + g;
      rb = ra + 8 < N ? ra + 8 : -1;
      if (ra >= N) ra = -1;
    }
  };
  auto load = [&](uint4 (&wa)[LD], uint4 (&wb)[LD], int q) {
    const int u = wib + kGWarps * (q / SPT);
    const int t = tile_of(t0 + u / F);
    const int k0 = (u % F) * KS + (q % SPT) * kStage + kc0;
    int ra, rb;
    rows_of(t, ra, rb);
    const uint4 z = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
    for (int j = 0; j < LD; j++) {
      const int k = k0 + (IL ? 32 * j : 8 * ((j + rot) % LD));
      wa[j] = ra >= 0 && k < K ? ld_stream(Wt + (size_t)ra * LDW + k) : z;
      wb[j] = rb >= 0 && k < K ? ld_stream(Wt + (size_t)rb * LDW + k) : z;
    }
  };

  uint4 wa[U][LD], wb[U][LD];
  if (!om) {
#pragma unroll
    for (int u = 0; u < U; u++)
      if (u < Q) load(wa[u], wb[u], u);  // weights do not depend on the previous kernel
  } else {
    for (int e = threadIdx.x; e < EP; e += blockDim.x) oflag[e] = 0;
    __syncthreads();
  }
  pdl_wait();

  if (threadIdx.x < kMmaSlots) {
    cnt[threadIdx.x] = 0;
    gen[threadIdx.x] = 0;
  }
  if (om) {
    // the union of the rows' experts, compacted; outputs no row needs are zeroed (grid-wide)
    union_flags(a.out_mask, rows * EP, EP, oflag);
    __syncthreads();
    compact_flags_to(oflag, olist, EP, &ocount);
    if (!a.accumulate)
      for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < N; o += gridDim.x * blockDim.x)
        if (!oflag[(o % a.out_period) / a.S])
          for (int r = 0; r < rows; r++) a.y[(size_t)r * N + o] = 0.0f;
    __syncthreads();
    const int TU = (N / a.out_period) * ocount * TPE;  // the union's tiles
    t0 = (int)(((long long)bik * TU) / nbk);
    t1 = (int)(((long long)(bik + 1) * TU) / nbk);
    NUB = (t1 - t0) * F;
    Q = (wib < NUB ? (NUB - wib + kGWarps - 1) / kGWarps : 0) * SPT;
    if (NUB == 0) return;  // the whole block leaves together
#pragma unroll
    for (int u = 0; u < U; u++)
      if (u < Q) load(wa[u], wb[u], u);
  }
  if (XF) {
    build_xprime<R8>(a, rows, KP, XS, xf, sred);  // ends with a barrier
  } else {
    // x' rounded to T, rows R8 x KP zero-padded (x read through L2: written by the previous grid).
    // Norm modes (16 rows, whose f32 x' does not fit) first get each row's statistics: a warp per
    // row, XB float4 loads per lane in flight; the same sums and formulas as build_xprime.
    constexpr int XB = 8, XSTEP = kGWarps * 32;
    const bool norm = a.mode != LTE_DEC_X_PLAIN, ln = a.mode == LTE_DEC_X_LAYERNORM;
    float *smean = sred, *srstd = sred + R8;
    if (norm) {
      for (int r = wib; r < R8; r += kGWarps) {
        float s1 = 0.0f, s2 = 0.0f;
        const float4 *xr = reinterpret_cast<const float4 *>(a.x + (size_t)r * a.ldx);
        for (int k0 = lane; r < rows && k0 < K / 4; k0 += 32 * XB) {
          float4 v[XB];
#pragma unroll
          for (int j = 0; j < XB; j++)
            v[j] = k0 + 32 * j < K / 4 ? __ldcg(xr + k0 + 32 * j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
          for (int j = 0; j < XB; j++) {
            s1 += (v[j].x + v[j].y) + (v[j].z + v[j].w);
            s2 = fmaf(v[j].x, v[j].x, fmaf(v[j].y, v[j].y, fmaf(v[j].z, v[j].z, fmaf(v[j].w, v[j].w, s2))));
          }
        }
        s1 = warp_sum(s1);
        s2 = warp_sum(s2);
        if (lane == 0) {
          const float mean = ln ? s1 / (float)K : 0.0f;
          smean[r] = mean;
          srstd[r] = ln ? rsqrtf(fmaxf(s2 / (float)K - mean * mean, 0.0f) + a.eps) : rsqrtf(s2 / (float)K + a.eps);
        }
      }
      __syncthreads();
    }
    const int KP4 = KP / 4, total = R8 * KP4;
    for (int i0 = threadIdx.x; i0 < total; i0 += XB * XSTEP) {
      float4 v[XB];
#pragma unroll
      for (int j = 0; j < XB; j++) {
        const int i = i0 + j * XSTEP, r = i / KP4, k = (i % KP4) * 4;
        v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < total && r < rows && k < K) v[j] = __ldcg(reinterpret_cast<const float4 *>(a.x + (size_t)r * a.ldx + k));
      }
#pragma unroll
      for (int j = 0; j < XB; j++) {
        const int i = i0 + j * XSTEP, r = i / KP4, k = (i % KP4) * 4;
        if (i >= total) break;
        if (norm && r < rows && k < K) {
          const float mean = smean[r], rstd = srstd[r];
          const float4 w = *reinterpret_cast<const float4 *>(a.nw + k);
          const float4 b = ln ? *reinterpret_cast<const float4 *>(a.nb + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          v[j].x = (v[j].x - mean) * rstd * w.x + b.x;
          v[j].y = (v[j].y - mean) * rstd * w.y + b.y;
          v[j].z = (v[j].z - mean) * rstd * w.z + b.z;
          v[j].w = (v[j].w - mean) * rstd * w.w + b.w;
        }
        uint2 p;
        p.x = pack2<T>(v[j].x, v[j].y);
        p.y = pack2<T>(v[j].z, v[j].w);
        *reinterpret_cast<uint2 *>(xh + (size_t)r * XS + k) = p;
      }
    }
    __syncthreads();
  }

  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

  // the last warp of a tile: sum the F partials of ring slot `slot` in part order, write outputs
  auto epilogue = [&](int t, int slot) {
    float s[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    for (int w = 0; w < F; w++)  // the F parts, in part order (deterministic)
#pragma unroll
      for (int n = 0; n < NT; n++) {
        const float4 v = part[((slot * F + w) * 32 + lane) * NT + n];
        s[n][0] += v.x;
        s[n][1] += v.y;
        s[n][2] += v.z;
        s[n][3] += v.w;
      }
    // out_mask: the tile's expert (one per tile); a row whose mask is 0 gets 0 (or keeps y); the
    // rows' bits of each expert are in shared memory (union_flags; rows <= 16 here)
    const int te = om ? ((t * TW) % a.out_period) / a.S : 0;
    const int tbits = om ? oflag[te] : 0;
    auto off = [&](int r) { return om && !((tbits >> r) & 1); };
#pragma unroll
    for (int n = 0; n < NT; n++) {
      const int r0 = n * 8 + 2 * c;  // batch rows r0 (d0, d2) and r0 + 1 (d1, d3)
      if (swi) {
        const int j = 8 * t + g;
        if (r0 < rows) a.y[(size_t)r0 * N + j] = off(r0) ? 0.0f : dsilu(s[n][0]) * s[n][2];
        if (r0 + 1 < rows) a.y[(size_t)(r0 + 1) * N + j] = off(r0 + 1) ? 0.0f : dsilu(s[n][1]) * s[n][3];
        continue;
      }
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int o = 16 * t + g + 8 * h;
        if (o >= N) continue;
        const float b = a.bias ? a.bias[o] : 0.0f;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int r = r0 + e;
          if (r >= rows) continue;
          if (off(r)) {
            if (!a.accumulate) a.y[(size_t)r * N + o] = 0.0f;
            continue;
          }
          float v = s[n][2 * h + e] + b;
          if (a.act == LTE_DEC_ACT_GELU) v = dgelu(v);
          float *yo = a.y + (size_t)r * N + o;
          if (KG > 1) atomicAdd(yo, v);  // the other K groups add into the same outputs
          else *yo = a.accumulate ? __ldcg(yo) + v : v;
        }
      }
    }
  };

  // stage q from register slot q % U: two mmas per chunk and n-tile; at the last stage of a unit,
  // hand the partial tile over (and finish the tile if this warp is the last of its F parts)
  auto compute = [&](const uint4 (&WA)[LD], const uint4 (&WB)[LD], int q) {
    const int s = q % SPT;
    const int u = wib + kGWarps * (q / SPT);
    const int k0 = (u % F) * KS + s * kStage + kc0;
#pragma unroll
    for (int j = 0; j < LD; j++)
#pragma unroll
    for (int n = 0; n < NT; n++) {
      const uint4 &A = WA[j], &B = WB[j];
      const int kc = k0 + (IL ? 32 * j : 8 * ((j + rot) % LD));  // first k of the chunk load() put into slot j
      uint32_t b0, b1, b2, b3;
      const int r = n * 8 + g;
      if (XF) {
        const int ch = kc / 8;
        const float4 lo = *reinterpret_cast<const float4 *>(xf + (size_t)r * XS + 4 * ch);
        const float4 hi = *reinterpret_cast<const float4 *>(xf + (size_t)r * XS + KP / 2 + 4 * ch);
        b0 = pack2<T>(lo.x, lo.y);
        b1 = pack2<T>(lo.z, lo.w);
        b2 = pack2<T>(hi.x, hi.y);
        b3 = pack2<T>(hi.z, hi.w);
      } else {
        const uint4 v = *reinterpret_cast<const uint4 *>(xh + (size_t)r * XS + kc);
        b0 = v.x;
        b1 = v.y;
        b2 = v.z;
        b3 = v.w;
      }
      mma16816<T>(acc[n], A.x, B.x, A.y, B.y, b0, b1);
      mma16816<T>(acc[n], A.z, B.z, A.w, B.w, b2, b3);
    }
    if (s != SPT - 1) return;
    const int lt = u / F, slot = lt % ring, round = lt / ring;
    // the slot's previous tile (lt - ring) must be finished: warps drift apart by < 4 rounds
    if (lane == 0)
      while (*reinterpret_cast<volatile int *>(&gen[slot]) != round) {
      }
    __syncwarp();
#pragma unroll
    for (int n = 0; n < NT; n++) {
      part[((slot * F + u % F) * 32 + lane) * NT + n] = make_float4(acc[n][0], acc[n][1], acc[n][2], acc[n][3]);
      acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    }
    __syncwarp();
    int arrived = 0;
    if (lane == 0) {
      __threadfence_block();
      arrived = atomicAdd(&cnt[slot], 1);
    }
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != F - 1) return;
    __threadfence_block();
    epilogue(tile_of(t0 + lt), slot);
    __syncwarp();
    if (lane == 0) {
      cnt[slot] = 0;
      __threadfence_block();
      *reinterpret_cast<volatile int *>(&gen[slot]) = round + 1;
    }
  };

  for (int q0 = 0; q0 < Q; q0 += U) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int q = q0 + u;
      if (q < Q) {
        compute(wa[u], wb[u], q);
        if (q + U < Q) load(wa[u], wb[u], q + U);
      }
    }
  }
}

/* ------------------------------------------------------------------ host side */

/* The variant (LTE_DEC_GEMV_MMA_V): 16-byte chunks per lane per row per stage, stages in flight and
   the chunks' order (il: interleaved, whole sectors per load instruction; 2 and 3 are 0 and 1
   interleaved, written in the eighth session). Measured in the ninth (H200, docs/results/
   gemv_mma_variants_h200.txt): 3 the fastest at 8 and 16 rows on every 7B shape but O at 8 rows
   (19.1 us against 17.9 for 2; e.g. gate/up R 8 2.74 TB/s against 2.54 for 0, head R 16 2.95
   against 2.70), 7B step at batch 8 5.58 ms against 6.23 for 0: the default. Until the seventh
   session 2 and 3 were 4 x 2 and 2 x 8, both measured slower than 0 and removed: each variant is 8
   kernels of compile time). */
struct MmaShape {
  int ld, u, il;
};
inline MmaShape mma_shape(int v) {
  const MmaShape s[kMmaVariants] = {{4, 4, 0}, {8, 2, 0}, {4, 4, 1}, {8, 2, 1}};
  return s[v < 0 || v >= kMmaVariants ? 0 : v];
}

/* Parts per tile F (1, 2, 4, 8: the K split between warps). Blocks own whole tiles and process
   8 / F tiles per round, so F trades balance (ceil(F T_b / 8) rounds for the fullest block) against
   the length of each warp's contiguous run of a row (K / F); the best balance wins, the smaller F
   within 0.10 of it (0.03 until the ninth session; at 7B shapes only gate/up changes, F 8 -> 2:
   68.7 -> 66.3 us at 8 rows, 88.4 -> 82.6 at 16, masked at ~50 % 83.2 -> 73.1 / 111.0 -> 94.0, in
   the forced-F rows of the same H200 run, docs/results/gemv_mma_h200_session9c.json).
   LTE_DEC_GEMV_MMA_F forces one. */
inline int mma_parts(const GemvTune &t, int tiles, int blocks) {
  if (t.mma_f > 0) return t.mma_f;
  const int tb = (tiles + blocks - 1) / blocks;
  double eff[4];
  double best = 0.0;
  for (int i = 0; i < 4; i++) {
    const int f = 1 << i;
    const int rounds = (f * tb + kGWarps - 1) / kGWarps;
    eff[i] = (double)f * tiles / blocks / kGWarps / rounds;
    if (eff[i] > best) best = eff[i];
  }
  for (int i = 0; i < 4; i++)
    if (eff[i] >= best - 0.10) return 1 << i;
  return kGWarps;
}

/* k per part (KS, a multiple of a stage of 32 ld k), the zero-padded row length of x' (KP = F KS)
   and its row stride in shared memory (XS, padded so lane groups g and g + 1 read distinct banks). */
inline void mma_geometry(int k, int xf, int ld, int il, int f, int *ks, int *kp, int *xs) {
  const int st = 32 * ld;
  *ks = (k + f * st - 1) / (f * st) * st;
  *kp = f * *ks;
  // row pad (bytes) that puts the two rows of a quarter warp into distinct banks, given the lanes'
  // spacing (16 LD bytes, or 16 interleaved) and the rotation in the kernel
  const int pad = ld == 1 || il ? 64 : ld == 4 ? 32 : 16;
  *xs = *kp + pad / (xf ? 4 : 2);
}
inline int mma_ep(const LinArgs &a) { return a.out_mask ? a.out_period / a.S : 0; }  // out_mask's experts per period
inline size_t mma_smem(int nt, int xf, int ld, int il, int f, int k, int ep) {
  int ks, kp, xs;
  mma_geometry(k, xf, ld, il, f, &ks, &kp, &xs);
  return (size_t)8 * nt * xs * (xf ? 4 : 2) + (size_t)kMmaSlots * 32 * nt * sizeof(float4) +
         (size_t)2 * ep * sizeof(int);
}

/* The variant one launch of `rows` rows takes: nt (1 or 2 n-tiles of 8 rows) and xf (f32 x' when it
   fits one block per SM, else x' in T), or false when neither fits. */
inline bool mma_pick(const LinArgs &a, int rows, int ld, int il, int f, int *nt, int *xf) {
  *nt = rows <= 8 ? 1 : 2;
  if (mma_smem(*nt, 1, ld, il, f, a.k, mma_ep(a)) <= kGemvSmemMax1) {
    *xf = 1;
    return true;
  }
  *xf = 0;
  return mma_smem(*nt, 0, ld, il, f, a.k, mma_ep(a)) <= kGemvSmemMax1;
}

inline int mma_tiles(const LinArgs &a) { return a.act == LTE_DEC_ACT_SWIGLU ? a.n / 8 : (a.n + 15) / 16; }

/* Column slices of K for a call whose rows' x' does not fit one block (ninth session): each launch
   reads W[:, k0:k1] once for every row and adds its partial product into y, which only a plain x
   (no norm statistics over the whole row), accumulate and no activation allow (the bias goes with
   the first slice). Returns the slice count S (slices of a multiple of 64 k, every one fitting), or
   0 when the call cannot be sliced. */
constexpr int kMmaSliceAlign = 64;
inline int mma_ksplit_len(int k, int s) { return (k + s * kMmaSliceAlign - 1) / (s * kMmaSliceAlign) * kMmaSliceAlign; }
inline int mma_slices(const GemvTune &t, const LinArgs &a, int rows, int sms) {
  if (!t.mma_ksplit || a.mode != LTE_DEC_X_PLAIN || !a.accumulate || a.act != LTE_DEC_ACT_NONE) return 0;
  const MmaShape sh = mma_shape(t.mma_v);
  const int f = mma_parts(t, mma_tiles(a), sms);
  for (int s = 2; s <= 4; s++) {
    LinArgs b = a;
    b.k = mma_ksplit_len(a.k, s);
    int nt, xf;
    if (mma_pick(b, rows, sh.ld, sh.il, f, &nt, &xf)) return s;
  }
  return 0;
}

/* K groups in one launch (LTE_DEC_GEMV_MMA_KG; ninth session, measured in the tenth): the blocks
   split into KG groups, group j computing the partial product of column slice j of K for all
   tiles and adding it into y with atomics, so each block builds x' of K / KG only (every block
   reading all of x' costs L2 traffic of G R K 4 bytes per call: 46 MB for the down projection at 8
   rows, half its weight bytes). Same conditions as the column slices. Default (0): KG 4 for calls
   of at most 8 rows (H200, 7B step at batch 8: 5.41 -> 5.02 ms; down at 8 rows 38.9 -> 32.4 us, O
   18.8 -> 17.5), none above (at 16 rows each GEMV alone was faster, 69.4 -> 54.7 us for the down,
   but the step went 6.79 -> 7.84 ms: not understood yet). Returns KG, or 1 when off or not
   applicable (or a slice of it does not fit). */
inline int mma_kgroups(const GemvTune &t, const LinArgs &a, int rows, int sms) {
  const int kg = t.mma_kg == 0 ? (rows <= 8 ? 4 : 1) : t.mma_kg;
  if (kg <= 1 || a.mode != LTE_DEC_X_PLAIN || !a.accumulate || a.act != LTE_DEC_ACT_NONE || a.out_mask || a.in_mask)
    return 1;
  if (a.k < kg * kMmaSliceAlign || sms < kg) return 1;
  const MmaShape sh = mma_shape(t.mma_v);
  LinArgs b = a;
  b.k = mma_ksplit_len(a.k, kg);
  int nt, xf;
  return mma_pick(b, rows, sh.ld, sh.il, mma_parts(t, mma_tiles(a), sms / kg), &nt, &xf) ? kg : 1;
}

/* Rows one launch of gemv_mma_kernel takes (all, or 8 when 16 do not fit and K cannot be sliced),
   0 = does not apply. */
inline int mma_chunk(const GemvTune &t, const LinArgs &a, int rows, int sms) {
  const MmaShape sh = mma_shape(t.mma_v);
  const int f = mma_parts(t, mma_tiles(a), sms);
  if (mma_kgroups(t, a, rows, sms) > 1) return rows;
  int nt, xf;
  if (mma_pick(a, rows, sh.ld, sh.il, f, &nt, &xf)) return rows;
  if (mma_slices(t, a, rows, sms) > 0) return rows;
  return rows > 8 && mma_pick(a, 8, sh.ld, sh.il, f, &nt, &xf) ? 8 : 0;
}

/* Whether gemv_mma_kernel takes this call: at least LTE_DEC_GEMV_MMA_MIN rows (default 5), the
   16-byte conditions (vec), no in_mask, an out_mask only with tiles inside one expert (and
   LTE_DEC_GEMV_MMA_MASK=1, the default since the ninth session); f16 weights with LTE_DEC_GEMV_MMA=1 (default), bf16 too with
   2. bf16 stays on the CUDA-core kernels by default: x' rounded to bf16 (2^-9) put the engine's
   bf16 logits 7e-3 from the CPU reference and flipped a greedy token of tests/gpu/engine_test.ts
   (a 16-row prefill chunk), against <= 4e-4 with f32 x'. */
inline bool mma_applies(const GemvTune &t, lte_dtype wdtype, const LinArgs &a, int rows, bool vec, int sms) {
  if (t.mode == 0 || !t.mma || rows < t.mma_min || rows > 16 || !vec || a.in_mask) return false;
  if (wdtype != LTE_DTYPE_F16 && (wdtype != LTE_DTYPE_BF16 || t.mma < 2)) return false;
  if (a.act == LTE_DEC_ACT_SWIGLU && a.n % 8 != 0) return false;
  const int tw = a.act == LTE_DEC_ACT_SWIGLU ? 8 : 16;
  if (a.out_mask && (!t.mma_mask || a.S % tw != 0 || a.out_period % tw != 0)) return false;
  return mma_chunk(t, a, rows, sms) > 0;
}

template <class T, int NT, int XF, int LD, int U, int IL>
cudaError_t launch_mma_v(const LinArgs &a, int rows, int f, int sms, cudaStream_t st, int kg) {
  int ks, kp, xs;
  mma_geometry(a.k, XF, LD, IL, f, &ks, &kp, &xs);
  const size_t smem = mma_smem(NT, XF, LD, IL, f, a.k, mma_ep(a));
  unsigned grid = 0;
  cudaError_t e = persistent_grid(gemv_mma_kernel<T, NT, XF, LD, U, IL>, kGWarps * 32, smem, sms, 1, &grid);
  if (e != cudaSuccess) return e;
  grid = grid / kg * kg;  // whole K groups
  e = dlaunch(gemv_mma_kernel<T, NT, XF, LD, U, IL>, dim3(grid), dim3(kGWarps * 32), smem, st, a, rows, f, ks, kp,
              xs, kg);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

template <class T, int LD, int U, int IL>
cudaError_t launch_mma_one(const LinArgs &b, int rb, int f, int sms, cudaStream_t st, int kg = 1) {
  int nt, xf;
  mma_pick(b, rb, LD, IL, f, &nt, &xf);
  if (nt == 1)
    return xf ? launch_mma_v<T, 1, 1, LD, U, IL>(b, rb, f, sms, st, kg)
              : launch_mma_v<T, 1, 0, LD, U, IL>(b, rb, f, sms, st, kg);
  return xf ? launch_mma_v<T, 2, 1, LD, U, IL>(b, rb, f, sms, st, kg)
            : launch_mma_v<T, 2, 0, LD, U, IL>(b, rb, f, sms, st, kg);
}

template <class T, int LD, int U, int IL>
cudaError_t launch_mma_lu(const GemvTune &t, const LinArgs &a, int rows, int sms, cudaStream_t st) {
  const int kg = mma_kgroups(t, a, rows, sms);
  if (kg > 1) {  // one launch, block b on slice b % kg of K
    LinArgs b = a;
    b.ldw = a.k;
    b.k = mma_ksplit_len(a.k, kg);
    return launch_mma_one<T, LD, U, IL>(b, rows, mma_parts(t, mma_tiles(a), sms / kg), sms, st, kg);
  }
  const int f = mma_parts(t, mma_tiles(a), sms);
  int nt, xf;
  const int slices = mma_pick(a, rows, LD, IL, f, &nt, &xf) ? 0 : mma_slices(t, a, rows, sms);
  if (slices > 0) {  // column slices: W[:, k0:k0+len] of every row, the partial sums added into y
    const int len = mma_ksplit_len(a.k, slices);
    for (int k0 = 0; k0 < a.k; k0 += len) {
      LinArgs b = a;
      b.w = static_cast<const T *>(a.w) + k0;
      b.ldw = a.k;
      b.x = a.x + k0;
      b.k = a.k - k0 < len ? a.k - k0 : len;
      if (k0 > 0) b.bias = nullptr;
      cudaError_t e = launch_mma_one<T, LD, U, IL>(b, rows, f, sms, st);
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  }
  const int chunk = mma_chunk(t, a, rows, sms);
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    LinArgs b = a;
    const int rb = rows - r0 < chunk ? rows - r0 : chunk;
    b.x = a.x + (size_t)r0 * a.ldx;
    b.y = a.y + (size_t)r0 * a.n;
    if (a.out_mask) b.out_mask = a.out_mask + (size_t)r0 * mma_ep(a);
    cudaError_t e = launch_mma_one<T, LD, U, IL>(b, rb, f, sms, st);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <class T>
cudaError_t launch_mma(const LinArgs &a, int rows, const GemvTune &t, int sms, cudaStream_t st) {
  switch (t.mma_v) {
  case 1: return launch_mma_lu<T, 8, 2, 0>(t, a, rows, sms, st);
  case 2: return launch_mma_lu<T, 4, 4, 1>(t, a, rows, sms, st);
  case 3: return launch_mma_lu<T, 8, 2, 1>(t, a, rows, sms, st);
  default: return launch_mma_lu<T, 4, 4, 0>(t, a, rows, sms, st);
  }
}
