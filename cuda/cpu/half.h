/*
 * half.h: f16 / bf16 <-> f32 scalar conversions for the CPU reference backend (private).
 *
 * Bit-exact with CUDA's __float2half_rn / __half2float / __float2bfloat16_rn / __bfloat162float:
 * round to nearest, ties to even; overflow to infinity; f16 subnormals kept; NaN stays a (quiet)
 * NaN. Used by half.c (lte_convert) and sparse_ffn.c (half weights, fp32/double accumulation).
 */
#ifndef LTE_CPU_HALF_H
#define LTE_CPU_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lte.h"

static inline uint32_t lte_f32_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  return x;
}

static inline float lte_bits_f32(uint32_t x) {
  float f;
  memcpy(&f, &x, sizeof f);
  return f;
}

static inline uint16_t lte_f32_to_f16(float f) {
  const uint32_t x = lte_f32_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u)); /* NaN / inf */
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) {                                    /* below 2^-14: f16 subnormal or zero */
    /* units of 2^-24; the scaling is exact and rintf rounds half to even (default mode) */
    const uint32_t m = (uint32_t)rintf(lte_bits_f32(ax) * 16777216.0f);
    return (uint16_t)(sign | m); /* m == 1024 is the smallest normal, correctly encoded */
  }
  uint32_t h = ((((ax >> 23) - 127u + 15u)) << 10) | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
  return (uint16_t)(sign | h);
}

static inline float lte_f16_to_f32(uint16_t h) {
  const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  const uint32_t e = ((uint32_t)h >> 10) & 0x1fu, m = (uint32_t)h & 0x3ffu;
  if (e == 0) {
    const float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  if (e == 31) return lte_bits_f32(sign | 0x7f800000u | (m << 13));
  return lte_bits_f32(sign | ((e - 15u + 127u) << 23) | (m << 13));
}

static inline uint16_t lte_f32_to_bf16(float f) {
  const uint32_t x = lte_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(((x >> 16) & 0x8000u) | 0x7fc0u);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline float lte_bf16_to_f32(uint16_t h) { return lte_bits_f32((uint32_t)h << 16); }

/* Element i of a tensor of float dtype `dtype` (F32, F16 or BF16), as f32. */
static inline float lte_load_elem(lte_dtype dtype, const void *p, int64_t i) {
  if (dtype == LTE_DTYPE_F32) return ((const float *)p)[i];
  if (dtype == LTE_DTYPE_F16) return lte_f16_to_f32(((const uint16_t *)p)[i]);
  return lte_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* Stores v (rounded to `dtype`) as element i. */
static inline void lte_store_elem(lte_dtype dtype, void *p, int64_t i, float v) {
  if (dtype == LTE_DTYPE_F32)
    ((float *)p)[i] = v;
  else if (dtype == LTE_DTYPE_F16)
    ((uint16_t *)p)[i] = lte_f32_to_f16(v);
  else
    ((uint16_t *)p)[i] = lte_f32_to_bf16(v);
}

/* Bytes per element of a float dtype (F32 4, F16/BF16 2). */
static inline int64_t lte_float_size(lte_dtype dtype) { return dtype == LTE_DTYPE_F32 ? 4 : 2; }

#endif /* LTE_CPU_HALF_H */
