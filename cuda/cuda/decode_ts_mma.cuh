/*
 * decode_ts_mma.cuh: lte_dec_linear_t_sparse for 5..16 rows on tensor cores (issue 9, ninth
 * session), included by decode.cu inside its anonymous namespace after decode_gemv_mma.cuh (it uses
 * union_flags, compact_flags_to, ld_stream, pdl_*, persistent_grid, pack2 and mma16816).
 *
 * Why: the down projection of a sparse step over the union of the batch's experts ran on CUDA cores
 * (ts_kernel, 1..4 rows per launch, or linear_t_sparse_kernel), bound by instruction issue from ~5
 * rows on as the dense GEMV was before gemv_mma_kernel; at batch 8 the union is most experts, so
 * the sparse step was slower than the dense one.
 *
 * ts_mma_kernel<T, NT, U>   y[r, n] += bias[n] + sum over the union's experts e, j < S of
 *                           h[r, e S + j] wt[e S + j, n]        (wt: (K, N), k-major: HF down_proj^T)
 *   Work: units = (column group of 64 outputs, active expert), column-group major; block b takes
 *   the contiguous range [b U / G, (b + 1) U / G) and its warps take its units round robin, a stage
 *   being one 16-k tile of a unit. In a stage lane (g, c) = (lane / 4, lane % 4) loads the 8
 *   outputs 8g..8g+7 of the group at the k rows 2c, 2c+1, 2c+8, 2c+9 of the tile (four 16-byte
 *   loads; the 8 lanes of a k row read its 128 contiguous bytes), and byte permutes turn them into
 *   the A fragments of 4 mmas (m16n8k16: M = 16 outputs, K = 16 k, N = 8 batch rows): tile T's
 *   fragment row m is output 8m + 2T (m < 8) or 8(m - 8) + 2T + 1, so register word T of each
 *   load feeds tile T. The B fragments are h (f32, read through L2) rounded to T.
 *   A warp's accumulators cover one column group; when its next unit is in another group (or it
 *   is done) it adds them into the block's shared-memory slot of that group (a block's range spans
 *   at most ceil(NG / G) + 2 groups); after a barrier the block adds its slots into y with float4
 *   atomics (neighbouring blocks share boundary groups). The bias: block b adds it for the groups
 *   g = b mod G. U stages in flight per warp (issued after the PDL wait: which experts to read
 *   depends on the mask the previous kernel wrote).
 *   Precision: h rounded to T at the tensor-core input (as x' in gemv_mma_kernel); f32 sums; the
 *   atomics make the order of the final adds vary from run to run (as with ts_kernel).
 *   Conditions (ts_mma_applies): f16 weights (bf16 with LTE_DEC_GEMV_MMA=2), 5..16 rows (from
 *   LTE_DEC_GEMV_MMA_MIN), N a multiple of 64, S a multiple of 16; LTE_DEC_TS_MMA=0 turns it off.
 */

constexpr int kTmCols = 64;  // outputs per column group (4 mma tiles of 16)

/* One stage of a ts_mma kernel: the 16-k tile at k row f0 - 2c of column group grp (lane (g, c)
   loads outputs 8g..8g+7 at k rows f0, f0 + 1, f0 + 8, f0 + 9, and the matching h of batch rows
   8n + g), then its 4 x NT mmas into acc (tile T's fragment row m = output 8m + 2T, m < 8, or
   8(m - 8) + 2T + 1). acc[n][t][i] ends as output column 8g + 2t + (i >> 1) of batch row
   8n + 2c + (i & 1). Shared by ts_mma_kernel and ts_mma2_kernel. */
template <class T, int NT>
__device__ __forceinline__ void tm_load(uint4 (&w)[4], float2 (&hx)[NT][2], const T *wt, const float *h, int f0, int grp,
                                        int N, int K, int rows, int g) {
  const T *p = wt + (size_t)f0 * N + grp * kTmCols + 8 * g;
  w[0] = ld_stream(p);
  w[1] = ld_stream(p + N);
  w[2] = ld_stream(p + (size_t)8 * N);
  w[3] = ld_stream(p + (size_t)9 * N);
#pragma unroll
  for (int n = 0; n < NT; n++) {
    const int r = 8 * n + g;
    const float2 z = make_float2(0.0f, 0.0f);
    hx[n][0] = r < rows ? __ldcg(reinterpret_cast<const float2 *>(h + (size_t)r * K + f0)) : z;
    hx[n][1] = r < rows ? __ldcg(reinterpret_cast<const float2 *>(h + (size_t)r * K + f0 + 8)) : z;
  }
}

template <class T, int NT>
__device__ __forceinline__ void tm_mma(float (&acc)[NT][4][4], const uint4 (&w)[4], const float2 (&hx)[NT][2]) {
  const uint32_t *w0 = reinterpret_cast<const uint32_t *>(&w[0]), *w1 = reinterpret_cast<const uint32_t *>(&w[1]);
  const uint32_t *w2 = reinterpret_cast<const uint32_t *>(&w[2]), *w3 = reinterpret_cast<const uint32_t *>(&w[3]);
  uint32_t b0[NT], b1[NT];
#pragma unroll
  for (int n = 0; n < NT; n++) {
    b0[n] = pack2<T>(hx[n][0].x, hx[n][0].y);
    b1[n] = pack2<T>(hx[n][1].x, hx[n][1].y);
  }
#pragma unroll
  for (int t = 0; t < 4; t++) {
    // A rows m < 8: output 8m + 2t (low halves), m >= 8: 8(m - 8) + 2t + 1 (high halves)
    const uint32_t a0 = __byte_perm(w0[t], w1[t], 0x5410), a1 = __byte_perm(w0[t], w1[t], 0x7632);
    const uint32_t a2 = __byte_perm(w2[t], w3[t], 0x5410), a3 = __byte_perm(w2[t], w3[t], 0x7632);
#pragma unroll
    for (int n = 0; n < NT; n++) mma16816<T>(acc[n][t], a0, a1, a2, a3, b0[n], b1[n]);
  }
}

/* The U-stage register ring of a warp: stages 0..U-1 issued, then stage q computed and stage
   q + U issued into its registers, for Q stages (load(w, hx, q), compute(w, hx, q)). */
template <int NT, int U, class Load, class Compute>
__device__ __forceinline__ void tm_ring(int Q, Load &load, Compute &compute) {
  uint4 w[U][4];
  float2 hx[U][NT][2];
#pragma unroll
  for (int u = 0; u < U; u++)
    if (u < Q) load(w[u], hx[u], u);
  for (int q0 = 0; q0 < Q; q0 += U) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int q = q0 + u;
      if (q < Q) {
        compute(w[u], hx[u], q);
        if (q + U < Q) load(w[u], hx[u], q + U);
      }
    }
  }
}

/* After the PDL wait (the mask is the previous kernel's output): the union of the rows' experts of
   mask (rows x E, f32 0/1) as row bits in flags (zeroed by the caller before a barrier), compacted
   ascending into list; returns their count (the same in every thread). Shared by both kernels. */
__device__ __forceinline__ int tm_union_list(const float *mask, int rows, int E, int *flags, int *list, int *count) {
  pdl_wait();
  union_flags(mask, rows * E, E, flags);
  __syncthreads();
  compact_flags_to(flags, list, E, count);
  __syncthreads();
  return *count;
}

template <int NT>
__device__ __forceinline__ void tm_zero(float (&acc)[NT][4][4]) {
#pragma unroll
  for (int n = 0; n < NT; n++)
#pragma unroll
    for (int t = 0; t < 4; t++) acc[n][t][0] = acc[n][t][1] = acc[n][t][2] = acc[n][t][3] = 0.0f;
}

template <class T, int NT, int U>
__global__ void __launch_bounds__(kGWarps * 32, 1)
    ts_mma_kernel(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows, int N, int K,
                  int S, int slots, int vec4) {
  extern __shared__ float4 tmsm4[];
  constexpr int R8 = 8 * NT;
  const int E = K / S;
  float *accs = reinterpret_cast<float *>(tmsm4);         // slots x R8 x kTmCols f32
  int *flags = reinterpret_cast<int *>(accs + (size_t)slots * R8 * kTmCols);  // E: the union's flags
  int *list = flags + E;                                                       // E: its experts, ascending
  __shared__ int scount;
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int NG = N / kTmCols, KT = S / 16;
  pdl_launch_dependents();
  for (int i = threadIdx.x; i < slots * R8 * kTmCols; i += blockDim.x) accs[i] = 0.0f;
  for (int e = threadIdx.x; e < E; e += blockDim.x) flags[e] = 0;
  __syncthreads();
  const int nA = tm_union_list(mask, rows, E, flags, list, &scount);
  const long long UT = (long long)NG * nA;
  const int ub0 = (int)(UT * blockIdx.x / gridDim.x), ub1 = (int)(UT * (blockIdx.x + 1) / gridDim.x);
  const int g0 = nA ? ub0 / nA : 0;  // the block's first column group = shared-memory slot 0
  const int QU = wib < ub1 - ub0 ? (ub1 - ub0 - wib + kGWarps - 1) / kGWarps : 0;  // units of this warp
  const int Q = QU * KT;                                                         // its stages

  // stage q: unit ub0 + wib + 8 (q / KT), k tile q % KT
  auto load = [&](uint4 (&w)[4], float2 (&hx)[NT][2], int q) {
    const int u = ub0 + wib + kGWarps * (q / KT);
    const int grp = u / nA, e = list[u % nA];
    tm_load<T, NT>(w, hx, wt, h, e * S + 16 * (q % KT) + 2 * c, grp, N, K, rows, g);
  };

  float acc[NT][4][4];
  tm_zero<NT>(acc);
  int cur = -1;  // column group of the accumulators (-1: none yet)
  // add the accumulators into the slot of group `cur`: output (tile t, fragment row m) = column
  // 8m + 2t or 8(m - 8) + 2t + 1, batch row 8n + 2c (+1)
  auto flush = [&]() {
    if (cur < 0) return;
    const int s = cur - g0;
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int t = 0; t < 4; t++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int col = 8 * g + 2 * t + (i >> 1), r = 8 * n + 2 * c + (i & 1);
          if (s < slots) atomicAdd(&accs[((size_t)s * R8 + r) * kTmCols + col], acc[n][t][i]);
          else if (r < rows) atomicAdd(y + (size_t)r * N + cur * kTmCols + col, acc[n][t][i]);  // (not expected)
        }
    tm_zero<NT>(acc);
  };
  auto compute = [&](const uint4 (&w)[4], const float2 (&hx)[NT][2], int q) {
    const int grp = (ub0 + wib + kGWarps * (q / KT)) / nA;
    if (grp != cur) {
      flush();
      cur = grp;
    }
    tm_mma<T, NT>(acc, w, hx);
  };

  tm_ring<NT, U>(Q, load, compute);
  flush();
  // the bias, once per output: block b takes the groups b, b + G, ...
  if (bias)
    for (int grp = blockIdx.x; grp < NG; grp += gridDim.x)
      for (int i = threadIdx.x; i < rows * kTmCols; i += blockDim.x) {
        const int r = i / kTmCols, col = grp * kTmCols + i % kTmCols;
        atomicAdd(y + (size_t)r * N + col, bias[col]);
      }
  __syncthreads();
  if (nA == 0 || ub0 >= ub1) return;
  const int gl = (ub1 - 1) / nA;  // the block's last group
  for (int s = 0; s <= gl - g0 && s < slots; s++)
    for (int i = threadIdx.x; i < rows * (kTmCols / 4); i += blockDim.x) {
      const int r = i / (kTmCols / 4), c4 = i % (kTmCols / 4);
      const float4 v = *reinterpret_cast<const float4 *>(&accs[((size_t)s * R8 + r) * kTmCols + 4 * c4]);
      float *yo = y + (size_t)r * N + (g0 + s) * kTmCols + 4 * c4;
      if (vec4) {
        atomicAdd(reinterpret_cast<float4 *>(yo), v);
      } else {
        atomicAdd(yo, v.x);
        atomicAdd(yo + 1, v.y);
        atomicAdd(yo + 2, v.z);
        atomicAdd(yo + 3, v.w);
      }
    }
}

/* ts_mma2_kernel<T, NT, U> (LTE_DEC_TS_MMA=2, tenth session): the same product and fragments as
 * ts_mma_kernel, with the work laid out for DRAM locality. ts_mma_kernel's warps each read 128-byte
 * pieces (one column group) of k rows 8 KB apart, and the warps and blocks reading the other pieces
 * of the same rows run at other times: few bytes per opened DRAM page (it streams at 1.3-1.6 TB/s
 * where the dense down reads 2.2). Here a unit is (column tile of kGWarps groups, active expert),
 * tile major; warp w of a block always takes group w of the unit's tile, so the 8 warps march
 * through the same experts in step and each k row is read as 1 KB contiguous (8 warps x 128 B),
 * and the blocks of the other tiles read the rest of the row at about the same time. A warp keeps
 * its accumulators in registers until the tile changes (at most once or twice per block) and adds
 * them into y with float4 atomics straight from its fragments (lane (g, c) holds outputs 8g..8g+7
 * of batch rows 2c, 2c + 1): no shared-memory slots. The bias goes with the unit of expert index 0
 * of each tile.
 */
template <class T, int NT, int U>
__global__ void __launch_bounds__(kGWarps * 32, 1)
    ts_mma2_kernel(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows, int N, int K,
                   int S, int vec4) {
  extern __shared__ int tm2sm[];
  const int E = K / S;
  int *flags = tm2sm;  // E: the union's flags
  int *list = flags + E;  // E: its experts, ascending
  __shared__ int scount;
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int NG = N / kTmCols, KT = S / 16, NCT = (NG + kGWarps - 1) / kGWarps;
  pdl_launch_dependents();
  for (int e = threadIdx.x; e < E; e += blockDim.x) flags[e] = 0;
  __syncthreads();
  const int nA = tm_union_list(mask, rows, E, flags, list, &scount);
  if (nA == 0) {  // no expert active: y += bias only
    if (bias)
      for (int ct = blockIdx.x; ct < NCT; ct += gridDim.x) {
        const int grp = ct * kGWarps + wib;
        if (grp < NG)
          for (int i = lane; i < rows * kTmCols; i += 32) {
            const int col = grp * kTmCols + i % kTmCols;
            atomicAdd(y + (size_t)(i / kTmCols) * N + col, bias[col]);
          }
      }
    return;
  }
  const long long UT = (long long)NCT * nA;
  const int ub0 = (int)(UT * blockIdx.x / gridDim.x), ub1 = (int)(UT * (blockIdx.x + 1) / gridDim.x);
  const int Q = (ub1 - ub0) * KT;  // stages, the same for every warp of the block

  // stage q: unit ub0 + q / KT (tile u / nA, expert list[u % nA]), k tile q % KT
  auto load = [&](uint4 (&w)[4], float2 (&hx)[NT][2], int q) {
    const int u = ub0 + q / KT;
    const int grp = (u / nA) * kGWarps + wib, e = list[u % nA];
    if (grp >= NG) return;  // (the last tile's missing groups)
    tm_load<T, NT>(w, hx, wt, h, e * S + 16 * (q % KT) + 2 * c, grp, N, K, rows, g);
  };

  float acc[NT][4][4];
  tm_zero<NT>(acc);
  int cur = -1;          // column tile of the accumulators (-1: none yet)
  bool with_bias = false;  // the accumulators hold the tile's expert index 0 (its bias goes with them)
  // acc[n][t][i] = output column 8g + 2t + (i >> 1) of batch row 8n + 2c + (i & 1)
  auto flush = [&]() {
    if (cur < 0) return;
    const int grp = cur * kGWarps + wib;
    if (grp < NG) {
      const int col = grp * kTmCols + 8 * g;
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
          const int r = 8 * n + 2 * c + hr;
          if (r >= rows) continue;
          float v[8];
#pragma unroll
          for (int t = 0; t < 4; t++) {
            v[2 * t] = acc[n][t][hr];
            v[2 * t + 1] = acc[n][t][2 + hr];
          }
          if (with_bias && bias)
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] += bias[col + j];
          float *yo = y + (size_t)r * N + col;
          if (vec4) {
            atomicAdd(reinterpret_cast<float4 *>(yo), make_float4(v[0], v[1], v[2], v[3]));
            atomicAdd(reinterpret_cast<float4 *>(yo + 4), make_float4(v[4], v[5], v[6], v[7]));
          } else {
#pragma unroll
            for (int j = 0; j < 8; j++) atomicAdd(yo + j, v[j]);
          }
        }
    }
    tm_zero<NT>(acc);
    with_bias = false;
  };
  auto compute = [&](const uint4 (&w)[4], const float2 (&hx)[NT][2], int q) {
    const int u = ub0 + q / KT, ct = u / nA;
    if (ct != cur) {
      flush();
      cur = ct;
    }
    if (u % nA == 0) with_bias = true;
    if (ct * kGWarps + wib >= NG) return;
    tm_mma<T, NT>(acc, w, hx);
  };

  tm_ring<NT, U>(Q, load, compute);
  flush();
}

/* ------------------------------------------------------------------ host side */

inline int ts_mma_slots(int n, int sms) { return (n / kTmCols + sms - 1) / sms + 2; }
inline size_t ts_mma_smem(int nt, int n, int k, int S, int sms) {
  return (size_t)ts_mma_slots(n, sms) * 8 * nt * kTmCols * sizeof(float) + (size_t)2 * (k / S) * sizeof(int);
}

/* Whether ts_mma_kernel takes this call (see the header). */
inline bool ts_mma_applies(const GemvTune &t, lte_dtype wdtype, const void *h, int rows, int n, int k, int S,
                           int sms) {
  if (!t.ts_mma || !t.mma || rows < t.mma_min || rows > 16 || n % kTmCols != 0 || S % 16 != 0) return false;
  if ((uintptr_t)h % 8 != 0) return false;  // float2 reads of h
  if (wdtype != LTE_DTYPE_F16 && (wdtype != LTE_DTYPE_BF16 || t.mma < 2)) return false;
  return ts_mma_smem(rows <= 8 ? 1 : 2, n, k, S, sms) <= kGemvSmemMax1;
}

template <class T, int NT, int U>
cudaError_t launch_ts_mma_v(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows,
                            int n, int k, int S, int sms, cudaStream_t st) {
  const int slots = ts_mma_slots(n, sms);
  const size_t smem = ts_mma_smem(NT, n, k, S, sms);
  unsigned grid = 0;
  cudaError_t e = persistent_grid(ts_mma_kernel<T, NT, U>, kGWarps * 32, smem, sms, 1, &grid);
  if (e != cudaSuccess) return e;
  const int vec4 = (uintptr_t)y % 16 == 0 ? 1 : 0;
  e = dlaunch(ts_mma_kernel<T, NT, U>, dim3(grid), dim3(kGWarps * 32), smem, st, wt, h, mask, bias, y, rows, n, k, S,
              slots, vec4);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

template <class T, int NT, int U>
cudaError_t launch_ts_mma2_v(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows,
                             int n, int k, int S, int sms, cudaStream_t st) {
  const size_t smem = (size_t)2 * (k / S) * sizeof(int);
  unsigned grid = 0;
  cudaError_t e = persistent_grid(ts_mma2_kernel<T, NT, U>, kGWarps * 32, smem, sms, 1, &grid);
  if (e != cudaSuccess) return e;
  const int vec4 = (uintptr_t)y % 16 == 0 ? 1 : 0;
  e = dlaunch(ts_mma2_kernel<T, NT, U>, dim3(grid), dim3(kGWarps * 32), smem, st, wt, h, mask, bias, y, rows, n, k, S,
              vec4);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

/* version: LTE_DEC_TS_MMA (1: ts_mma_kernel, 2: ts_mma2_kernel) */
template <class T>
cudaError_t launch_ts_mma(const T *wt, const float *h, const float *mask, const float *bias, float *y, int rows,
                          int n, int k, int S, int sms, cudaStream_t st, int version) {
  if (version == 2) {
    if (rows <= 8) return launch_ts_mma2_v<T, 1, 6>(wt, h, mask, bias, y, rows, n, k, S, sms, st);
    return launch_ts_mma2_v<T, 2, 4>(wt, h, mask, bias, y, rows, n, k, S, sms, st);
  }
  // stages in flight: 16 bytes x 4 loads + 4 NT h floats per lane each (registers: ~200 at most).
  // (Ninth session: 128-output groups, 8 loads per stage and 4 / 3 stages, measured slower on the
  // H200: 60.1 / 93.2 us against 55.3 / 71.6 for the 7B union's down at ~50 % active, 8 / 16 rows.)
  if (rows <= 8) return launch_ts_mma_v<T, 1, 6>(wt, h, mask, bias, y, rows, n, k, S, sms, st);
  return launch_ts_mma_v<T, 2, 4>(wt, h, mask, bias, y, rows, n, k, S, sms, st);
}
