/*
 * decode_gemv_f32.cuh: lte_dec_linear with f32 weights and few outputs over 2..16 rows (issue 9,
 * eleventh session), included by decode.cu inside its anonymous namespace after decode_gemv.cuh
 * (it uses build_xprime, ld_stream, pdl_* and kGWarps).
 *
 * Why: the sparse engine's router (N = E experts of f32 weights, K = d, RMSNorm of x) runs on the
 * older block-per-output kernel from 3 rows on, where each of the N blocks re-reads and re-norms
 * every row of x: at the 7B shape (N 344, K 4096, 8 rows: 5.6 MB of weights) 12.9 us per launch
 * under Nsight Compute, two launches for 16 rows (eleventh session, first device call), i.e.
 * 0.4-0.8 ms of a 5-8 ms batched step.
 *
 * gemv_f32_kernel<R>   grid (B, ceil(rows / R)), B = max(ceil(N / kF32MaxOut), min(N, SMs)):
 *   block b owns outputs [b N / B, (b + 1) N / B) (at most kF32MaxOut) for rows R y .. R y + R - 1;
 *   it builds x' of its rows once in shared memory (build_xprime: f32, normed; its raw rows by
 *   cp.async unless LTE_DEC_XP_ASYNC=0: the first build, with register loads, took 25.6 us under
 *   Nsight Compute, twice the older kernel, R round trips to L2), and warp w, lane l
 *   take the 8-element k chunks c = 32 w + l, c + 256, ... of every owned output. The first
 *   kF32U chunks of each output go out before griddepcontrol.wait (weights do not depend on the
 *   previous kernel). Partial sums meet in shared memory in a fixed order (deterministic).
 *   f32 products and sums: no rounding of x' (the CPU reference's precision).
 * Switch: LTE_DEC_GEMV_F32=0 leaves such calls to the older kernels (A/B).
 */

constexpr int kF32MaxOut = 4;  // outputs per block
constexpr int kF32U = 2;       // chunks per lane per output held in registers (loaded before the wait)

template <int R>
__global__ void __launch_bounds__(kGWarps * 32, 1) gemv_f32_kernel(LinArgs a, int rows) {
  extern __shared__ float4 fsm4[];
  float *xs = reinterpret_cast<float *>(fsm4);  // R rows x K, two planes per row (build_xprime)
  __shared__ float sred[kGWarps * 2 * R];
  __shared__ float part[kGWarps][kF32MaxOut][R];
  const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
  const int N = a.n, K = a.k, KC = K / 8;  // K % 8 == 0 (f32_applies)
  const int o0 = (int)(((long long)blockIdx.x * N) / gridDim.x);
  const int no = (int)(((long long)(blockIdx.x + 1) * N) / gridDim.x) - o0;  // <= kF32MaxOut
  const int r0 = blockIdx.y * R, rb = min(R, rows - r0);
  const float *W = static_cast<const float *>(a.w);
  constexpr int STEP = kGWarps * 32;  // chunks per round of the block
  const int cb = wib * 32 + lane;

  // w[u][o]: chunk cb + u STEP (+ round) of output o0 + o, as two 16-byte halves
  uint4 w[kF32U][kF32MaxOut][2];
  auto load = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kF32U; u++) {
      const int c = c0 + u * STEP;
#pragma unroll
      for (int o = 0; o < kF32MaxOut; o++) {
        const uint4 z = make_uint4(0u, 0u, 0u, 0u);
        const float *p = W + (size_t)(o0 + o) * K + 8 * (size_t)c;
        w[u][o][0] = o < no && c < KC ? ld_stream(p) : z;
        w[u][o][1] = o < no && c < KC ? ld_stream(p + 4) : z;
      }
    }
  };
  pdl_launch_dependents();
  load(cb);
  if (a.mode != LTE_DEC_X_PLAIN) {
    for (int k = threadIdx.x * 4; k < K; k += STEP * 4) {
      asm volatile("prefetch.global.L1 [%0];" ::"l"(a.nw + k));
      if (a.mode == LTE_DEC_X_LAYERNORM) asm volatile("prefetch.global.L1 [%0];" ::"l"(a.nb + k));
    }
  }
  pdl_wait();

  LinArgs b = a;
  b.x = a.x + (size_t)r0 * a.ldx;
  build_xprime<R>(b, rb, K, K, xs, sred);

  const float4 *xs4 = reinterpret_cast<const float4 *>(xs);
  float acc[kF32MaxOut][R];
#pragma unroll
  for (int o = 0; o < kF32MaxOut; o++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[o][r] = 0.0f;
  for (int c0 = cb; c0 < KC; c0 += kF32U * STEP) {
    if (c0 != cb) load(c0);
#pragma unroll
    for (int u = 0; u < kF32U; u++) {
      const int c = c0 + u * STEP;
      if (c >= KC) break;
#pragma unroll
      for (int r = 0; r < R; r++) {
        const float4 lo = xs4[(r * K) / 4 + c];          // elements 8c .. 8c + 3
        const float4 hi = xs4[(r * K + K / 2) / 4 + c];  // 8c + 4 .. 8c + 7
#pragma unroll
        for (int o = 0; o < kF32MaxOut; o++) {
          const uint4 p = w[u][o][0], q = w[u][o][1];
          float s = acc[o][r];
          s = fmaf(__uint_as_float(p.x), lo.x, s);
          s = fmaf(__uint_as_float(p.y), lo.y, s);
          s = fmaf(__uint_as_float(p.z), lo.z, s);
          s = fmaf(__uint_as_float(p.w), lo.w, s);
          s = fmaf(__uint_as_float(q.x), hi.x, s);
          s = fmaf(__uint_as_float(q.y), hi.y, s);
          s = fmaf(__uint_as_float(q.z), hi.z, s);
          s = fmaf(__uint_as_float(q.w), hi.w, s);
          acc[o][r] = s;
        }
      }
    }
  }
#pragma unroll
  for (int o = 0; o < kF32MaxOut; o++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      const float v = warp_sum(acc[o][r]);
      if (lane == 0) part[wib][o][r] = v;
    }
  __syncthreads();
  for (int i = threadIdx.x; i < no * R; i += blockDim.x) {
    const int o = i / R, r = i % R;
    if (r >= rb) continue;
    float v = 0.0f;
#pragma unroll
    for (int ww = 0; ww < kGWarps; ww++) v += part[ww][o][r];
    const int n = o0 + o;
    if (a.bias) v += a.bias[n];
    float *yp = a.y + (size_t)(r0 + r) * N + n;
    *yp = a.accumulate ? __ldcg(yp) + v : v;
  }
}

/* Whether gemv_f32_kernel takes this call: f32 weights, 2..16 rows, no activation, no masks, K a
   multiple of 8 (vec), x' of 8 rows within one block's shared memory, and few enough outputs that
   every block owns at most kF32MaxOut of them in one wave. */
inline bool f32_applies(lte_dtype wdtype, const LinArgs &a, int rows, bool vec, int sms) {
  if (env_int("LTE_DEC_GEMV_F32", 1, 0, 1) == 0) return false;
  if (wdtype != LTE_DTYPE_F32 || !vec || rows < 2 || rows > 16) return false;
  if (a.act != LTE_DEC_ACT_NONE || a.in_mask || a.out_mask) return false;
  if ((size_t)8 * a.k * sizeof(float) > kGemvSmemMax1) return false;
  return a.n <= kF32MaxOut * sms;
}

template <int R>
cudaError_t launch_gemv_f32_r(const LinArgs &a, int rows, int sms, cudaStream_t st) {
  const size_t smem = (size_t)R * a.k * sizeof(float);
  if (smem > 48 * 1024) {
    // the same cap always (a node captured with more shared memory must still launch on replay)
    const cudaError_t e =
        cudaFuncSetAttribute(gemv_f32_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kGemvSmemMax1);
    if (e != cudaSuccess) return e;
  }
  const int lo = (a.n + kF32MaxOut - 1) / kF32MaxOut;
  const int B = lo > (a.n < sms ? a.n : sms) ? lo : (a.n < sms ? a.n : sms);
  const dim3 grid((unsigned)B, (unsigned)((rows + R - 1) / R));
  const cudaError_t e = dlaunch(gemv_f32_kernel<R>, grid, dim3(kGWarps * 32), smem, st, a, rows);
  if (e != cudaSuccess) return e;
  return cudaGetLastError();
}

inline cudaError_t launch_gemv_f32(const LinArgs &a, int rows, int sms, cudaStream_t st) {
  if (rows <= 2) return launch_gemv_f32_r<2>(a, rows, sms, st);
  if (rows <= 4) return launch_gemv_f32_r<4>(a, rows, sms, st);
  return launch_gemv_f32_r<8>(a, rows, sms, st);
}
