/*
 * decode_attention.cuh: decode attention kernels of the decode engine (issue 9), included by
 * decode.cu inside its anonymous namespace (they use its pdl_prologue / to_f / from_f).
 *
 * attention_flash_kernel<T, LP, FUSED, PIPE>   lte_dec_attention (FUSED = false) and
 *   lte_dec_rope_attention (FUSED = true): one block (8 warps) per (row, head), a single pass with
 *   an online softmax (flash-decoding inside the block). LP = D / 8 lanes own one cached position
 *   (lane lg of the group holds dims [8 lg, 8 lg + 8)), so a warp covers 32 / LP positions per load
 *   and each lane keeps kAttnU positions' K and V vectors (16-byte loads) in flight; PIPE
 *   (default; LTE_DEC_ATTN_PIPE=0: not) loads the next trip's while it scores this one. Every
 *   (warp, group) keeps its own running max, sum and 8-dim value accumulator; at the end each warp
 *   merges its groups by shuffles and the 8 warps' states are merged in shared memory (4 KiB of
 *   values at D = 128; eighteenth session: the groups' own states took 8 / 16 KiB for f16 / 8-bit).
 *   No shared memory grows with the context.
 *   FUSED: the block also does lte_dec_rope_append's work for its row: RoPE of its q head and of
 *   its kv head's k at pos[r] (angles in double, as the CPU reference), and the first q head of
 *   each kv group appends k and v to the cache. The new position's k and v are taken from shared
 *   memory, rounded through the cache dtype exactly as the cache would hold them, so the result is
 *   the two-op result; only positions < pos[r] are read from the cache. Needs distinct slots
 *   across rows (a decode step; a prefill chunk appends positions other rows attend to).
 *   Before griddepcontrol.wait (PDL) the first q head of each kv group prefetches the group's cached
 *   K and V lines (positions < pos[r], written by earlier steps) into L2 while the call's whole
 *   cache fits in 16 MiB (attention_prefetch_positions; LTE_DEC_ATTN_PF=0: never, 1: always).
 *   Shapes: qkv (R, ld) f32 [q | k | v], caches (n_slots, HKV, T, D), out (R, H * D) f32.
 *   Split over positions (fifteenth session; flash-decoding across blocks): with max_t > the
 *   minimum chunk (LTE_DEC_ATTN_CHUNK positions, default 128) each (row, head) gets S blocks, at
 *   most 2 per SM over the call's (row, head) pairs (at most kAttnMaxSplit, at most
 *   ceil(max_t / chunk)).
 *   Each step divides its n cached positions among them in chunks of max(chunk, ceil(n / S))
 *   (blocks past n exit at once: the grid is fixed when a graph is captured, the position is not);
 *   when more than one is busy each writes its (max, sum, unnormalised values) to a
 *   context-owned scratch and the last of them to arrive (a counter it resets) merges them into
 *   out. Split 0 does the row's RoPE append and the new position. One block per (row, head) left
 *   the GPU idle at long contexts: the 7B step took 7.06 ms at 4k positions against 3.45 without
 *   the attention (docs/engine.md). LTE_DEC_ATTN_SPLIT=0: one block per (row, head).
 */

constexpr int kFlashWarps = 8;
constexpr int kAttnU = 4;
constexpr int kAttnMaxSplit = 64;   // position chunks per (row, head) at most
constexpr int kAttnMinChunk = 128;  // positions per chunk at least (LTE_DEC_ATTN_CHUNK)
constexpr int kAttnMaxBps = 8;      // split blocks per SM at most (LTE_DEC_ATTN_BPS)

template <class T>
struct Raw8;  // 8 consecutive cache elements as raw registers, widened on use
template <>
struct Raw8<float> {
  float4 a, b;
  __device__ __forceinline__ void load(const float *p) {
    a = __ldg(reinterpret_cast<const float4 *>(p));
    b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
  }
  __device__ __forceinline__ void get(float *o) const {
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
  }
};
template <>
struct Raw8<__half> {
  uint4 u;
  __device__ __forceinline__ void load(const __half *p) { u = __ldg(reinterpret_cast<const uint4 *>(p)); }
  __device__ __forceinline__ void get(float *o) const {
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __half22float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
};
template <>
struct Raw8<__nv_bfloat16> {
  uint4 u;
  __device__ __forceinline__ void load(const __nv_bfloat16 *p) { u = __ldg(reinterpret_cast<const uint4 *>(p)); }
  __device__ __forceinline__ void get(float *o) const {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __bfloat1622float2(h[i]);
      o[2 * i] = f.x;
      o[2 * i + 1] = f.y;
    }
  }
};

/* Four int8 values (one 32-bit word) as exact floats without I2F (16 per SM per clock on sm_90, which
   capped the 8-bit cache at the f16 cache's speed): each byte, offset to unsigned, becomes the low
   mantissa byte of 2^23 (PRMT), and one FADD removes 2^23 + 128. */
__device__ __forceinline__ void i8x4_to_f(unsigned w, float *o) {
  const unsigned u = w ^ 0x80808080u;
#pragma unroll
  for (int i = 0; i < 4; i++) o[i] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7650u + i)) - 8388736.0f;
}
template <>
struct Raw8<int8_t> {  // an 8-bit cache (LTE_DTYPE_I8) at D = 8: the values only; the row's scale apart
  uint2 u;
  __device__ __forceinline__ void load(const int8_t *p) { u = __ldg(reinterpret_cast<const uint2 *>(p)); }
  __device__ __forceinline__ void get(float *o) const {
    i8x4_to_f(u.x, o);
    i8x4_to_f(u.y, o + 4);
  }
};
/* 16 int8 values (an 8-bit cache at D >= 16): a 16-byte load, as the other dtypes' lanes make. */
struct Raw16I8 {
  uint4 u;
  __device__ __forceinline__ void load(const int8_t *p) { u = __ldg(reinterpret_cast<const uint4 *>(p)); }
  __device__ __forceinline__ void get(float *o) const {
    i8x4_to_f(u.x, o);
    i8x4_to_f(u.y, o + 4);
    i8x4_to_f(u.z, o + 8);
    i8x4_to_f(u.w, o + 12);
  }
};

/* One online-softmax update of a group's state with score s (already scaled) and value vs * v
   (vs: an 8-bit cache's row scale, else 1). */
template <int VL>
__device__ __forceinline__ void flash_update(float s, const float *v, float &m, float &l, float *acc, float vs = 1.0f) {
  const float mn = fmaxf(m, s);
  const float c = expf(m - mn), p = expf(s - mn);
  l = fmaf(l, c, p);
  const float pv = p * vs;
#pragma unroll
  for (int j = 0; j < VL; j++) acc[j] = fmaf(acc[j], c, pv * v[j]);
  m = mn;
}

/* A value as the cache holds it: rounded through T; an 8-bit cache rounds per row later (its
   scale needs the whole row), so the value passes unchanged here. */
template <class T>
__device__ __forceinline__ float cache_round(float v) {
  if constexpr (std::is_same<T, int8_t>::value) return v;
  else return to_f(from_f<T>(v));
}

/* RoPE of pair e at position p: angle p * theta^(-2e / D) in double, as the CPU reference. */
__device__ __forceinline__ void rope_cs(int p, int e, int D, float theta, float &c, float &s) {
  const double ang = (double)p * pow((double)theta, -2.0 * (double)e / (double)D);
  c = (float)cos(ang);
  s = (float)sin(ang);
}

// an 8-bit cache at 16 values per lane needs ~150 registers pipelined: capped at 128 for 2 blocks per SM
template <class T, int LP, int VL, bool FUSED, bool PIPE>
__global__ void __launch_bounds__(kFlashWarps * 32, VL == 16 ? 2 : 1)
    attention_flash_kernel(const float *qkv, int ld, T *kc, T *vc, const int32_t *slots, const int32_t *pos,
                           float *out, int H, int HKV, int max_t, float scale, float theta, int pf_max_pos,
                           int nsplit, int min_chunk, float *part, int *cnt, float *ksc, float *vsc) {
  // ksc, vsc: the per-row scales of an 8-bit cache (T = int8_t; lte.h LTE_DTYPE_I8), else unused
  constexpr bool I8 = std::is_same<T, int8_t>::value;
  // VL values per lane: 8 (16-byte loads of f16 / bf16, two of f32), 16 for an 8-bit cache at D >= 16
  static_assert(VL == 8 || (VL == 16 && I8), "16 values per lane: 8-bit caches only");
  using Raw = typename std::conditional<VL == 16, Raw16I8, Raw8<T>>::type;
  constexpr int D = LP * VL;
  constexpr int PPW = 32 / LP;          // positions per warp per load
  constexpr int G = kFlashWarps * PPW;  // (warp, group) partial states per block = position stride
  // the warps' merged states (each warp first merges its PPW groups by shuffles): 4 KiB of s_acc at
  // D = 128 for every cache dtype (the groups' own states took 8 KiB for f16, 16 KiB for 8-bit)
  __shared__ float s_m[kFlashWarps], s_l[kFlashWarps];
  __shared__ float s_acc[kFlashWarps * D];
  __shared__ float s_q[FUSED ? D : 1], s_k[FUSED ? D : 1], s_v[FUSED ? D : 1];
  __shared__ int s_last;
  __shared__ float s_scale[2];  // an 8-bit cache: the new position's k and v scales
  // block = ((row, head), split sp)
  const int rh = blockIdx.x / nsplit, sp = blockIdx.x % nsplit;
  const int r = rh / H, h = rh % H;
  // a step's cached positions are divided among the nsplit blocks in chunks of at least min_chunk
  // positions (a multiple of 16): n cached positions -> chunk_of(n), and blocks past them exit
  auto chunk_of = [&](int n) {
    const int c = ((n + nsplit - 1) / nsplit + 15) & ~15;
    return c > min_chunk ? c : min_chunk;
  };
  constexpr int half = D / 2;  // <= 128 < blockDim: thread e < half rotates pair (e, e + half)
  pdl_launch_dependents();
  // Before the wait (PDL), on the position as read now: in a replayed graph it is this step's (the
  // previous step's sampler wrote it before this launch began); an eager launch may race that
  // sampler, so the work below is checked against pos read again after the wait.
  const int p_pre = __ldcg(pos + r);
  // FUSED: the RoPE angle (double pow, cos, sin: long dependent chains) of this thread's pair
  float c_pre = 1.0f, s_pre = 0.0f;
  if (FUSED && theta > 0.0f && (int)threadIdx.x < half) rope_cs(p_pre, (int)threadIdx.x, D, theta, c_pre, s_pre);
  const bool pf_group = h % (H / HKV) == 0;  // the kv group's first q head prefetches its K / V
  if (p_pre <= pf_max_pos && pf_group) {
    // LTE_DEC_ATTN_PF: this split's cached positions (< pos, written by earlier steps) into L2 while
    // the previous kernel (the QKV projection) finishes, when the call's whole cache is small enough
    // (pf_max_pos); only a hint, so a stale position costs nothing
    const int p0 = p_pre, slot = __ldcg(slots + r);
    const int c0 = chunk_of(p0), t0 = sp * c0, p1 = min(p0, t0 + c0);  // this split's positions, as of now
    if (p1 > t0 && p0 <= max_t && slot >= 0) {
      const size_t off = ((size_t)slot * HKV + h / (H / HKV)) * (size_t)max_t * D + (size_t)t0 * D;
      const char *kb = reinterpret_cast<const char *>(kc + off), *vb = reinterpret_cast<const char *>(vc + off);
      const int lines = (int)(((size_t)(p1 - t0) * D * sizeof(T) + 127) / 128);
      for (int i = threadIdx.x; i < lines; i += blockDim.x) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(kb + (size_t)i * 128));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(vb + (size_t)i * 128));
      }
    }
  }
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / LP, lg = lane % LP;  // group within the warp, VL-dim chunk within D
  const int p = __ldcg(pos + r);
  const int n_cached = FUSED ? p : p + 1;  // positions read from the cache
  // the chunks this step has positions in (split 0 always: FUSED's new position is its work)
  const int chunk = chunk_of(n_cached);
  const int n_act = n_cached > chunk ? (n_cached + chunk - 1) / chunk : 1;  // <= nsplit
  if (sp >= n_act) return;
  const int t_lo = sp * chunk, t_hi = sp == n_act - 1 ? n_cached : t_lo + chunk;
  const int g = h / (H / HKV);
  const size_t head0 = ((size_t)slots[r] * HKV + g) * (size_t)max_t * D;
  const float *row = qkv + (size_t)r * ld;
  float q[VL];
  if (FUSED) {
    static_assert(D / 2 <= kFlashWarps * 32, "one RoPE pair per thread");
    const int e = threadIdx.x;
    if (e < half) {
      float c = c_pre, s = s_pre;
      if (theta > 0.0f && p != p_pre) rope_cs(p, e, D, theta, c, s);
      const float qa = row[(size_t)h * D + e], qb = row[(size_t)h * D + e + half];
      const float ka = row[(size_t)(H + g) * D + e], kb = row[(size_t)(H + g) * D + e + half];
      // products rounded separately (no FMA contraction), as the CPU reference evaluates them
      s_q[e] = __fsub_rn(__fmul_rn(qa, c), __fmul_rn(qb, s));
      s_q[e + half] = __fadd_rn(__fmul_rn(qb, c), __fmul_rn(qa, s));
      // the cache holds k in T: the new position is used exactly as a cached one would be
      // (an 8-bit cache: rounded below, once the row's scale is known)
      s_k[e] = cache_round<T>(__fsub_rn(__fmul_rn(ka, c), __fmul_rn(kb, s)));
      s_k[e + half] = cache_round<T>(__fadd_rn(__fmul_rn(kb, c), __fmul_rn(ka, s)));
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) s_v[d] = cache_round<T>(row[(size_t)(H + HKV + g) * D + d]);
    __syncthreads();
    // the kv group's first q head appends (split 0); an 8-bit cache: quantize_new below
    if constexpr (!I8) {
      if (h % (H / HKV) == 0 && sp == 0) {
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
          kc[head0 + (size_t)p * D + d] = from_f<T>(s_k[d]);
          vc[head0 + (size_t)p * D + d] = from_f<T>(s_v[d]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < VL; j++) q[j] = s_q[lg * VL + j];
  } else {
    const float *qp = row + (size_t)h * D + lg * VL;
#pragma unroll
    for (int j = 0; j < VL; j++) q[j] = qp[j];
  }
  const size_t base = head0 + (size_t)lg * VL;
  float m = -INFINITY, l = 0.0f, acc[VL];
#pragma unroll
  for (int j = 0; j < VL; j++) acc[j] = 0.0f;
  // An 8-bit cache, FUSED, split 0 (the only blocks that score the new position): the new k and v
  // rows quantized (scale = max|x| / 127 per row; warp 0: k, warp 1: v) into s_k / s_v as the cache
  // will hold them, appended by the kv group's first q head. Called once the first trip's loads are
  // in flight: its two barriers then overlap them rather than delay them. Block-uniform.
  auto quantize_new = [&]() {
    if constexpr (FUSED && I8) {
      if (sp != 0) return;
      const bool appends = h % (H / HKV) == 0;
      if (warp < 2) {
        const float *x = warp == 0 ? s_k : s_v;
        float mx = 0.0f;
        for (int d = lane; d < D; d += 32) mx = fmaxf(mx, fabsf(x[d]));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0) s_scale[warp] = mx / 127.0f;
      }
      __syncthreads();
      const float ksn = s_scale[0], vsn = s_scale[1];
      const size_t crow = head0 / D + (size_t)p;
      if (appends && threadIdx.x == 0) {
        ksc[crow] = ksn;
        vsc[crow] = vsn;
      }
      for (int d = threadIdx.x; d < D; d += blockDim.x) {
        const int8_t qk = ksn > 0.0f ? i8_quant(s_k[d], ksn) : 0, qv = vsn > 0.0f ? i8_quant(s_v[d], vsn) : 0;
        if (appends) {
          kc[head0 + (size_t)p * D + d] = qk;
          vc[head0 + (size_t)p * D + d] = qv;
        }
        s_k[d] = (float)qk * ksn;
        s_v[d] = (float)qv * vsn;
      }
      __syncthreads();
    }
  };
  // One trip of the warp: positions tb + sub + u G (u < kAttnU) of the lane's group, masked past t_hi.
  // The trip count must be the same for the whole warp (its groups hold different positions and
  // the shuffles below need all 32 lanes): loop on the warp's first position, mask per lane.
  // (an 8-bit cache: each position's K and V scales travel with its values, sk / sv)
  const size_t row0 = head0 / D;  // the head's position 0 among the cache's rows
  auto load_trip = [&](int tb, Raw *kr, Raw *vr, float *sk, float *sv) {
#pragma unroll
    for (int u = 0; u < kAttnU; u++) {
      const int t = tb + sub + u * G;
      if (t < t_hi) {
        kr[u].load(kc + base + (size_t)t * D);
        vr[u].load(vc + base + (size_t)t * D);
        if constexpr (I8) {
          sk[u] = __ldg(ksc + row0 + t);
          sv[u] = __ldg(vsc + row0 + t);
        }
      }
    }
  };
  auto score_trip = [&](int tb, const Raw *kr, const Raw *vr, const float *sk, const float *sv) {
#pragma unroll
    for (int u = 0; u < kAttnU; u++) {
      const int t = tb + sub + u * G;
      float kv[VL];
      kr[u].get(kv);
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < VL; j++) s = fmaf(q[j], kv[j], s);
#pragma unroll
      for (int o = LP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o, LP);
      if (t >= t_hi) continue;  // uniform within the group (same t for its LP lanes)
      float vv[VL];
      vr[u].get(vv);
      // an 8-bit cache: the row scales multiply the score and the softmax weight, not each value
      flash_update<VL>(I8 ? s * sk[u] * scale : s * scale, vv, m, l, acc, I8 ? sv[u] : 1.0f);
    }
  };
  constexpr int kTrip = G * kAttnU;  // positions per block per trip
  if (PIPE) {
    // software-pipelined: the next trip's K and V are in flight while this trip's dots and softmax run
    Raw kr[kAttnU], vr[kAttnU];
    float sk[kAttnU] = {}, sv[kAttnU] = {};
    int tb = t_lo + warp * PPW;
    if (tb < t_hi) load_trip(tb, kr, vr, sk, sv);
    quantize_new();
    for (; tb < t_hi; tb += kTrip) {
      Raw kn[kAttnU] = {}, vn[kAttnU] = {};
      float skn[kAttnU] = {}, svn[kAttnU] = {};
      if (tb + kTrip < t_hi) load_trip(tb + kTrip, kn, vn, skn, svn);
      score_trip(tb, kr, vr, sk, sv);
#pragma unroll
      for (int u = 0; u < kAttnU; u++) {
        kr[u] = kn[u];
        vr[u] = vn[u];
        sk[u] = skn[u];
        sv[u] = svn[u];
      }
    }
  } else {
    quantize_new();
    for (int tb = t_lo + warp * PPW; tb < t_hi; tb += kTrip) {
      Raw kr[kAttnU], vr[kAttnU];
      float sk[kAttnU] = {}, sv[kAttnU] = {};
      load_trip(tb, kr, vr, sk, sv);
      score_trip(tb, kr, vr, sk, sv);
    }
  }
  if (FUSED && warp == 0 && sp == 0) {  // the new position, from shared memory, in group 0 of split 0
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < VL; j++) s = fmaf(q[j], s_k[lg * VL + j], s);
#pragma unroll
    for (int o = LP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o, LP);
    if (sub == 0) flash_update<VL>(s * scale, s_v + lg * VL, m, l, acc);
  }
  // the warp's PPW groups (lanes lg + k LP hold the same dims of different positions) merged by
  // shuffles into every group; an empty group has m = -inf, l = 0, acc = 0 (two empty: weights 0)
#pragma unroll
  for (int o = LP; o < 32; o <<= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
    const float mn = fmaxf(m, m2);
    const float c1 = mn == -INFINITY ? 0.0f : expf(m - mn), c2 = mn == -INFINITY ? 0.0f : expf(m2 - mn);
    l = fmaf(l, c1, l2 * c2);
#pragma unroll
    for (int j = 0; j < VL; j++) acc[j] = fmaf(acc[j], c1, __shfl_xor_sync(0xffffffffu, acc[j], o) * c2);
    m = mn;
  }
  if (sub == 0) {
    if (lg == 0) {
      s_m[warp] = m;
      s_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < VL; j++) s_acc[warp * D + lg * VL + j] = acc[j];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int i = 0; i < kFlashWarps; i++) M = fmaxf(M, s_m[i]);
  float L = 0.0f;
  for (int i = 0; i < kFlashWarps; i++) L += s_l[i] * expf(s_m[i] - M);  // empty warps: l = 0, exp(-inf) = 0
  // one chunk: the normalised result into out; several: this chunk's (M, L, unnormalised values)
  // into the scratch, and the last of them to arrive merges
  float *o = out + (size_t)r * H * D + (size_t)h * D;
  const bool single = n_act == 1;
  float *pp = single ? nullptr : part + ((size_t)rh * nsplit + sp) * (D + 2);
  float *dst = single ? o : pp + 2;
  const float inv_l = single ? 1.0f / L : 1.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v = 0.0f;
    for (int i = 0; i < kFlashWarps; i++) v = fmaf(s_acc[i * D + d], expf(s_m[i] - M), v);
    dst[d] = v * inv_l;
  }
  if (single) return;
  if (threadIdx.x == 0) {
    pp[0] = M;
    pp[1] = L;
  }
  __threadfence();  // this block's partial is visible before its arrival counts
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(cnt + rh, 1) == n_act - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();  // the other chunks' partials, published before their arrivals
  // each chunk's weight exp(M_k - Mx) once, in shared memory, for L and every output dimension
  const float *p0 = part + (size_t)rh * nsplit * (D + 2);
  __shared__ float s_w[kAttnMaxSplit];
  __shared__ float s_inv;
  float Mx = -INFINITY;
  for (int k = 0; k < n_act; k++) Mx = fmaxf(Mx, __ldcg(p0 + (size_t)k * (D + 2)));
  for (int k = threadIdx.x; k < n_act; k += blockDim.x) s_w[k] = expf(__ldcg(p0 + (size_t)k * (D + 2)) - Mx);
  __syncthreads();
  if (threadIdx.x == 0) {
    float Lx = 0.0f;
    for (int k = 0; k < n_act; k++) Lx += __ldcg(p0 + (size_t)k * (D + 2) + 1) * s_w[k];
    s_inv = 1.0f / Lx;
  }
  __syncthreads();
  const float inv = s_inv;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v = 0.0f;
    for (int k = 0; k < n_act; k++) v = fmaf(__ldcg(p0 + (size_t)k * (D + 2) + 2 + d), s_w[k], v);
    o[d] = v * inv;
  }
  if (threadIdx.x == 0) cnt[rh] = 0;  // every chunk has arrived: ready for the next launch
}

/* LTE_DEC_ATTN=old selects the two-pass kernel (and, for lte_dec_rope_attention, the two ops). */
bool flash_attention_enabled() {
  const char *e = getenv("LTE_DEC_ATTN");
  return e == nullptr || std::strcmp(e, "old") != 0;
}

/* Position chunks per (row, head) for a cache of max_t positions (1: no split), and the scratch
   they need; the split needs the context's attention scratch (NULL while it cannot grow: no split).
   Layout: kAttnCounters arrival counters first (a fixed place, whatever the call's shape), then
   the partials, (rows * H * nsplit) x (D + 2) floats. */
constexpr int kAttnCounters = 16384;
inline int attention_split(lte_ctx *ctx, int rows, int H, int D, int max_t, int sms, int *chunk,
                           int **cnt, float **part) {
  *chunk = max_t;
  const char *e = getenv("LTE_DEC_ATTN_SPLIT");  // 0: one block per (row, head)
  if (e != nullptr && e[0] == '0') return 1;
  const char *c = getenv("LTE_DEC_ATTN_CHUNK");
  int ch = c ? atoi(c) : kAttnMinChunk;
  if (ch < 16) ch = 16;
  // the scratch is sized for any split of any call (rows * H * nsplit <= kAttnMaxBps SMs partials),
  // so the eager prefill before a step's graph capture allocates what the captured step needs, even
  // when it does not split itself; kAttnCounters >= kAttnMaxBps SMs covers every split call's pairs
  if (max_t <= ch || (long long)rows * H > kAttnCounters) return 1;
  const size_t bytes = (size_t)kAttnCounters * sizeof(int) + (size_t)kAttnMaxBps * sms * (D + 2) * sizeof(float);
  void *s = attention_scratch(ctx, bytes);
  if (s == nullptr) return 1;
  // at most 2 blocks per SM (LTE_DEC_ATTN_BPS) over the call's (row, head) pairs; each step divides
  // its positions among them (in chunks of at least ch), so the active blocks stay ~2 per SM at any
  // context length. Rounded down: a split that would take more than one wave of blocks costs more
  // than it saves (sixteenth session: batch 8 after 2k-token prompts, 2 splits per pair rounded up
  // made the 7B step 6.91 ms against 6.34 not split)
  const char *b = getenv("LTE_DEC_ATTN_BPS");
  int bps = b ? atoi(b) : 2;
  bps = bps < 1 ? 1 : bps > kAttnMaxBps ? kAttnMaxBps : bps;
  int ns = bps * sms / (rows * H);
  const int most = (max_t + ch - 1) / ch;
  ns = ns > most ? most : ns;
  ns = ns > kAttnMaxSplit ? kAttnMaxSplit : ns;
  if (ns <= 1) return 1;
  *chunk = ch;
  *cnt = static_cast<int *>(s);
  *part = reinterpret_cast<float *>(static_cast<char *>(s) + (size_t)kAttnCounters * sizeof(int));
  return ns;
}

/* The cache prefetch's rule (LTE_DEC_ATTN_PF): a block whose row is at most this many positions in
   prefetches its K and V into L2 before the PDL wait, i.e. while the call's whole cache (rows x
   HKV heads x positions, K and V) fits in LTE_DEC_ATTN_PF_MB MiB (default 16) of the L2. Measured on
   the H200 (sixteenth session, 7B, batch 1): the prefetch helps at short contexts, is even at 1k
   positions (16 MiB) and costs 2.8 % of the step at ~4k (67 MB: it contends with the QKV
   projection and overflows the 50 MB L2). LTE_DEC_ATTN_PF=1 always, 0 never. */
inline int attention_prefetch_positions(int rows, int HKV, int D, lte_dtype kvdtype) {
  const char *pf = getenv("LTE_DEC_ATTN_PF");
  if (pf != nullptr && pf[0] == '0') return -1;
  if (pf != nullptr && pf[0] == '1') return INT_MAX;
  const char *mb = getenv("LTE_DEC_ATTN_PF_MB");
  const double budget = (mb ? atof(mb) : 16.0) * 1048576.0;
  const double per_pos =
      2.0 * (rows > 0 ? rows : 1) * HKV * D * (kvdtype == LTE_DTYPE_F32 ? 4 : kvdtype == LTE_DTYPE_I8 ? 1 : 2);
  const double n = budget / per_pos;
  return n >= (double)INT_MAX ? INT_MAX : n > 0.0 ? (int)n : 0;
}

/* Launches the flash kernel when the head size has one (D = 8..256, powers of two); false = no. */
template <bool FUSED>
bool launch_flash(lte_ctx *ctx, lte_dtype kvdtype, const float *qkv, int ld, void *kc, void *vc,
                  const int32_t *slots, const int32_t *pos, float *out, int rows, int H, int HKV, int D, int n_slots,
                  int max_t, float scale, float theta, cudaStream_t st, cudaError_t *err) {
  const int lp = D / 8;
  if (D % 8 != 0 || (lp & (lp - 1)) != 0 || lp > 32 || !flash_attention_enabled()) return false;
  if (kvdtype == LTE_DTYPE_I8 && D > 256) return false;  // 16 values per lane: at most 16 lanes
  // an 8-bit cache's per-row scales (lte.h LTE_DTYPE_I8), after its n_values values
  const int64_t n_values = (int64_t)n_slots * HKV * max_t * D;
  float *ksc = kvdtype == LTE_DTYPE_I8 ? i8_scales(kc, n_values) : nullptr;
  float *vsc = kvdtype == LTE_DTYPE_I8 ? i8_scales(vc, n_values) : nullptr;
  if ((uintptr_t)kc % 16 != 0 || (uintptr_t)vc % 16 != 0) return false;
  int chunk = max_t, *cnt = nullptr;
  float *part = nullptr;
  const int nsplit = attention_split(ctx, rows, H, D, max_t, sm_count_of(ctx), &chunk, &cnt, &part);
  const dim3 grid((unsigned)rows * (unsigned)H * (unsigned)nsplit), block(kFlashWarps * 32);
  const int pf_max_pos = attention_prefetch_positions(rows, HKV, D, kvdtype);
  // LTE_DEC_ATTN_PIPE=0: each trip loads its K and V, then scores them (no software pipelining)
  const char *pe = getenv("LTE_DEC_ATTN_PIPE");
  const bool pipe = pe == nullptr || pe[0] != '0';
#define LTE_FLASH_V(T, LP, VL)                                                                                  \
  *err = pipe ? dlaunch(attention_flash_kernel<T, LP, VL, FUSED, true>, grid, block, 0, st, qkv, ld,             \
                        static_cast<T *>(kc), static_cast<T *>(vc), slots, pos, out, H, HKV, max_t, scale, theta, \
                        pf_max_pos, nsplit, chunk, part, cnt, ksc, vsc)                                           \
              : dlaunch(attention_flash_kernel<T, LP, VL, FUSED, false>, grid, block, 0, st, qkv, ld,            \
                        static_cast<T *>(kc), static_cast<T *>(vc), slots, pos, out, H, HKV, max_t, scale, theta, \
                        pf_max_pos, nsplit, chunk, part, cnt, ksc, vsc)
#define LTE_FLASH(T, LP) LTE_FLASH_V(T, LP, 8)
#define LTE_FLASH_D(T)                        \
  do {                                        \
    if (lp == 1) LTE_FLASH(T, 1);             \
    else if (lp == 2) LTE_FLASH(T, 2);        \
    else if (lp == 4) LTE_FLASH(T, 4);        \
    else if (lp == 8) LTE_FLASH(T, 8);        \
    else if (lp == 16) LTE_FLASH(T, 16);      \
    else LTE_FLASH(T, 32);                    \
  } while (0)
  if (kvdtype == LTE_DTYPE_F32) LTE_FLASH_D(float);
  else if (kvdtype == LTE_DTYPE_I8) {
    // 16 values (one 16-byte load) per lane from D = 16 on: D / 16 lanes per position
    if (lp == 1) LTE_FLASH_V(int8_t, 1, 8);
    else if (lp == 2) LTE_FLASH_V(int8_t, 1, 16);
    else if (lp == 4) LTE_FLASH_V(int8_t, 2, 16);
    else if (lp == 8) LTE_FLASH_V(int8_t, 4, 16);
    else if (lp == 16) LTE_FLASH_V(int8_t, 8, 16);
    else LTE_FLASH_V(int8_t, 16, 16);
  }
  else if (kvdtype == LTE_DTYPE_F16) LTE_FLASH_D(__half);
  else LTE_FLASH_D(__nv_bfloat16);
#undef LTE_FLASH_D
#undef LTE_FLASH
#undef LTE_FLASH_V
  if (*err == cudaSuccess) *err = cudaGetLastError();
  return true;
}
