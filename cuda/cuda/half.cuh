/*
 * half.cuh: f32 <-> f16 / bf16 element conversions shared by the CUDA kernels (half.cu's
 * lte_convert, the decode engine, the sparse FFN kernels). Narrowing rounds to nearest even, as the
 * CPU reference does (cuda/cpu/half.h), so converted weights are bit-identical on both backends.
 *   to_f<T>(v), from_f<T>(v)          compile-time element type (T = float, __half, __nv_bfloat16)
 *   load_as_f32 / store_from_f32       run-time lte_dtype, element i of a buffer
 */
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "lte.h"

namespace lte {

template <class T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

/* Element i of p (dtype dt: F32, F16 or BF16) as f32. */
__device__ __forceinline__ float load_as_f32(lte_dtype dt, const void *p, int64_t i) {
  if (dt == LTE_DTYPE_F32) return static_cast<const float *>(p)[i];
  if (dt == LTE_DTYPE_F16) return to_f(static_cast<const __half *>(p)[i]);
  return to_f(static_cast<const __nv_bfloat16 *>(p)[i]);
}

/* Element i of p (dtype dt) = v, rounded to nearest even. */
__device__ __forceinline__ void store_from_f32(lte_dtype dt, void *p, int64_t i, float v) {
  if (dt == LTE_DTYPE_F32)
    static_cast<float *>(p)[i] = v;
  else if (dt == LTE_DTYPE_F16)
    static_cast<__half *>(p)[i] = from_f<__half>(v);
  else
    static_cast<__nv_bfloat16 *>(p)[i] = from_f<__nv_bfloat16>(v);
}

}  // namespace lte
