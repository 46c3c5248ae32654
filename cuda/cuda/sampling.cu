/*
 * sampling.cu: argmax and nucleus (top-p) sampling, one block per row.
 *
 *   x, logits: (R, V)   out: (R) int32
 *
 * argmax: each thread scans a strided slice keeping the first maximum, then a (value, index)
 * block reduction that prefers the larger value and, on ties, the lower index — the same answer
 * as a left-to-right scan with a strict '>'.
 *
 * top-p, following the order-free definition in lte.h exactly, without sorting:
 *   1. e_i = exp(z_i - max z), z = logits / temperature, in double as in the CPU reference (kept
 *      in scratch); Z = sum e_i. p_i = e_i / Z is never formed: comparisons and the walk are done
 *      on e (same order, same ties), masses compared against top_p * Z.
 *   2. F(v) = sum { e_i : e_i >= v } is a non-increasing step function whose steps are at the
 *      e_i. p_cut is the largest v with F(v) >= top_p * Z, which is necessarily one of the e_i.
 *      For non-negative doubles the bit pattern is monotone in the value, so p_cut is found by
 *      bisection over bit patterns in [0, bits(1.0)] (62 steps, each one block reduction). F(0)
 *      and Z are the same reduction over the same values in the same order, hence equal, so the
 *      search always starts from a valid lower end (this is what makes top_p = 1 keep everything).
 *   3. kept = { i : e_i >= p_cut }, K = F(p_cut), u = lte_uniform(seed, r) * K.
 *   4. Ordered walk: each thread owns a contiguous chunk of indices; chunk sums of kept mass are
 *      exclusive-scanned across the block (in thread order = index order); each thread walks its
 *      chunk from its prefix and reports the first index whose running mass exceeds u; the block
 *      takes the minimum. If rounding leaves no crossing, the last kept index is returned.
 * The result equals the CPU reference except when u lies within rounding of a running-mass
 * boundary or F(v) within rounding of top_p * Z (summation orders differ). Deterministic for a
 * seed (fixed reduction trees, no atomics).
 */
#include <climits>

#include "reduce.cuh"

namespace lte {
namespace {

constexpr int kArgmaxThreads = 256;
constexpr int kTopPThreads = 512;

__device__ __forceinline__ void better(float &v, int &i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__global__ void argmax_kernel(const float *x, int32_t *out, int64_t rows, int cols) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * (int64_t)cols;
    float v = -INFINITY;
    int idx = INT_MAX;
    // NaN never wins (a strict '>' against it is false), except that a row starting with NaN
    // yields 0, exactly like the CPU's left-to-right scan; so a NaN start value is skipped here
    // and index 0 is special-cased at the end.
    if ((int)threadIdx.x < cols && !isnan(xr[threadIdx.x])) {
      v = xr[threadIdx.x];
      idx = threadIdx.x;
    }
    for (int c = threadIdx.x + blockDim.x; c < cols; c += blockDim.x) {
      const float xv = xr[c];
      if (xv > v) {
        v = xv;
        idx = c;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
      better(v, idx, ov, oi);
    }
    __syncthreads();
    if (lane == 0) {
      sv[wid] = v;
      si[wid] = idx;
    }
    __syncthreads();
    if (wid == 0) {
      v = lane < nw ? sv[lane] : -INFINITY;
      idx = lane < nw ? si[lane] : INT_MAX;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        better(v, idx, ov, oi);
      }
      if (lane == 0) out[r] = (idx == INT_MAX || isnan(xr[0])) ? 0 : idx;
    }
  }
}

/* sum { e_i : e_i >= v } over the row, returned to every thread. */
__device__ double mass_at_least(const double *e, int V, double v, double *smem) {
  double s = 0.0;
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    const double x = e[c];
    if (x >= v) s += x;
  }
  return block_sum(s, smem);
}

__device__ double block_max_double(double v, double *smem) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  if (wid == 0) {
    double t = lane < nw ? smem[lane] : -INFINITY;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t = fmax(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (lane == 0) smem[0] = t;
  }
  __syncthreads();
  return smem[0];
}

/* Block-wide exclusive prefix sum of one double per thread (thread order). */
__device__ double block_exclusive_scan(double x, double *smem) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  double incl = x;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += y;
  }
  __syncthreads();
  if (lane == 31) smem[wid] = incl;
  __syncthreads();
  if (wid == 0) {
    double w = lane < nw ? smem[lane] : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    if (lane < nw) smem[lane] = w; /* inclusive warp-total prefix */
  }
  __syncthreads();
  const double warp_prefix = wid > 0 ? smem[wid - 1] : 0.0;
  const double r = warp_prefix + incl - x;
  __syncthreads();
  return r;
}

__device__ int block_min_int(int v, int *smem) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) smem[wid] = v;
  __syncthreads();
  if (wid == 0) {
    int t = lane < nw ? smem[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t = min(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (lane == 0) smem[0] = t;
  }
  __syncthreads();
  const int r = smem[0];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kTopPThreads) top_p_kernel(const float *logits, double *e_all, int32_t *out,
                                                              int64_t rows, int V, float temperature, float top_p,
                                                              uint64_t seed) {
  __shared__ double dsmem[32];
  __shared__ int ismem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = logits + r * (int64_t)V;
    double *e = e_all + (int64_t)blockIdx.x * V; /* one scratch row per block */

    // 1. e_i = exp(z_i - max z), z = x / temperature, in double like the CPU reference; Z = F(0)
    const double temp = (double)temperature;
    double m = -INFINITY;
    for (int c = threadIdx.x; c < V; c += blockDim.x) m = fmax(m, (double)xr[c] / temp);
    m = block_max_double(m, dsmem);
    for (int c = threadIdx.x; c < V; c += blockDim.x) e[c] = exp((double)xr[c] / temp - m);
    __syncthreads(); /* e is re-read below, partly by other threads of the block */
    const double Z = mass_at_least(e, V, 0.0, dsmem);
    const double target = (double)top_p * Z;

    // 2. p_cut = the largest e value v with F(v) >= target: bisection over the bit patterns of
    //    non-negative doubles (monotone in the value), in [0, bits(1.0)]; e_i <= 1 = exp(0).
    unsigned long long lo = 0ull, hi = (unsigned long long)__double_as_longlong(1.0) + 1ull;
    while (hi - lo > 1ull) {
      const unsigned long long mid = lo + (hi - lo) / 2ull;
      if (mass_at_least(e, V, __longlong_as_double((long long)mid), dsmem) >= target)
        lo = mid;
      else
        hi = mid;
    }
    const double p_cut = __longlong_as_double((long long)lo);

    // 3. kept mass and the scaled uniform
    const double K = mass_at_least(e, V, p_cut, dsmem);
    const double u = (double)lte_uniform(seed, r) * K;

    // 4. ordered walk over contiguous chunks
    const int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    const int c0 = min(V, (int)threadIdx.x * chunk);
    const int c1 = min(V, c0 + chunk);
    double local = 0.0;
    int last_kept = -1;
    for (int c = c0; c < c1; ++c) {
      const double x = e[c];
      if (x >= p_cut) {
        local += x;
        last_kept = c;
      }
    }
    double run = block_exclusive_scan(local, dsmem);
    int found = INT_MAX;
    if (run + local > u) { /* the crossing, if any, is in this chunk */
      for (int c = c0; c < c1; ++c) {
        const double x = e[c];
        if (x >= p_cut) {
          run += x;
          if (run > u) {
            found = c;
            break;
          }
        }
      }
    }
    found = block_min_int(found, ismem);
    if (found == INT_MAX) found = -block_min_int(-last_kept, ismem); /* max kept index */
    if (threadIdx.x == 0) out[r] = found < 0 ? 0 : found;
    __syncthreads(); /* the scratch row is rewritten for the next row */
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_argmax(lte_ctx_t *ctx, lte_dtype dtype, const void *x, int32_t *out, int64_t rows,
                                         int32_t cols) {
  LTE_ENTER("lte_argmax");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(cols);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(out);
  argmax_kernel<<<row_grid(rows), kArgmaxThreads, 0, ctx->stream>>>(static_cast<const float *>(x), out, rows, cols);
  LTE_LAUNCH_CHECK("argmax_kernel");
  return LTE_STATUS_OK;
}

extern "C" LTE_API lte_status lte_sample_top_p(lte_ctx_t *ctx, lte_dtype dtype, const void *logits, int32_t *out,
                                               int64_t rows, int32_t vocab, float temperature, float top_p,
                                               uint64_t seed) {
  LTE_ENTER("lte_sample_top_p");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(rows);
  LTE_CHECK_POS(vocab);
  LTE_REQUIRE(temperature > 0.f && isfinite(temperature), "temperature = %g must be finite and > 0",
              (double)temperature);
  LTE_REQUIRE(top_p > 0.f && top_p <= 1.f, "top_p = %g must be in (0, 1]", (double)top_p);
  if (rows == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(logits);
  LTE_REQUIRE_PTR(out);
  // One scratch row of exp values per block; blocks loop over rows. 1024 blocks is plenty of
  // parallelism for sampling batches and bounds scratch at 1024 * V doubles.
  const int64_t blocks = rows < 1024 ? rows : 1024;
  Scratch scratch(ctx, FN);
  double *e = nullptr;
  LTE_TRY(scratch.get((size_t)blocks * vocab, &e));
  top_p_kernel<<<(unsigned)blocks, kTopPThreads, 0, ctx->stream>>>(static_cast<const float *>(logits), e, out, rows,
                                                                    vocab, temperature, top_p, seed);
  LTE_LAUNCH_CHECK("top_p_kernel");
  return LTE_STATUS_OK;
}
