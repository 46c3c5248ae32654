/*
 * activations.cu: GELU (tanh approximation), SiLU, sigmoid, SwiGLU, threshold.
 *
 * All are grid-stride elementwise kernels. Forward overwrites y (y == x allowed); backward
 * accumulates into dx (dx += ...), per the lte.h convention. Math is float with the accurate
 * libdevice functions (no --use_fast_math), so results track the CPU reference to ~1 ulp.
 *
 * Derivatives
 *   gelu:    u = k (x + 0.044715 x^3), t = tanh(u), k = sqrt(2/pi)
 *            y' = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
 *   silu:    s = sigmoid(x); y' = s (1 + x (1 - s))
 *   sigmoid: y' = y (1 - y)  (from the saved output)
 *   swiglu:  y = silu(g) u;  dg += dy u silu'(g),  du += dy silu(g)
 */
#include "common.cuh"

namespace lte {
namespace {

constexpr float kGeluK = 0.7978845608028654f; /* sqrt(2/pi) */
constexpr float kGeluC = 0.044715f;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }

__global__ void gelu_forward_kernel(const float *x, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.f + tanhf(kGeluK * (v + kGeluC * v * v * v)));
  }
}
__global__ void gelu_backward_kernel(const float *dy, const float *x, float *dx, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float v = x[i];
    const float t = tanhf(kGeluK * (v + kGeluC * v * v * v));
    const float d = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * kGeluK * (1.f + 3.f * kGeluC * v * v);
    dx[i] += dy[i] * d;
  }
}
__global__ void silu_forward_kernel(const float *x, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float v = x[i];
    y[i] = v * sigmoidf_(v);
  }
}
__global__ void silu_backward_kernel(const float *dy, const float *x, float *dx, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float v = x[i];
    const float s = sigmoidf_(v);
    dx[i] += dy[i] * s * (1.f + v * (1.f - s));
  }
}
__global__ void sigmoid_forward_kernel(const float *x, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) y[i] = sigmoidf_(x[i]);
}
__global__ void sigmoid_backward_kernel(const float *dy, const float *y, float *dx, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float s = y[i];
    dx[i] += dy[i] * s * (1.f - s);
  }
}
__global__ void swiglu_forward_kernel(const float *gate, const float *up, float *y, int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float g = gate[i];
    y[i] = g * sigmoidf_(g) * up[i];
  }
}
__global__ void swiglu_backward_kernel(const float *dy, const float *gate, const float *up, float *dgate, float *dup,
                                       int64_t n) {
  LTE_GRID_STRIDE(i, n) {
    const float g = gate[i], d = dy[i];
    const float u = dgate ? up[i] : 0.f; /* up may be NULL when only dup is wanted */
    const float s = sigmoidf_(g);
    if (dgate) dgate[i] += d * u * s * (1.f + g * (1.f - s));
    if (dup) dup[i] += d * g * s;
  }
}
__global__ void threshold_kernel(const float *x, float *mask, int64_t n, float thr) {
  LTE_GRID_STRIDE(i, n) mask[i] = x[i] > thr ? 1.f : 0.f;
}

}  // namespace
}  // namespace lte

using namespace lte;

/* ELEMENTWISE_PROLOGUE (ctx, dtype, n >= 0, early return on n == 0), then the pointers in the same
   order as the CPU, then LAUNCH_EW: see common.cuh. */

extern "C" LTE_API lte_status lte_gelu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_gelu_forward");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(gelu_forward_kernel, F32(x), F32W(y), n);
}

extern "C" LTE_API lte_status lte_gelu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                                void *dx, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_gelu_backward");
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(dx);
  LAUNCH_EW(gelu_backward_kernel, F32(dy), F32(x), F32W(dx), n);
}

extern "C" LTE_API lte_status lte_silu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_silu_forward");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(silu_forward_kernel, F32(x), F32W(y), n);
}

extern "C" LTE_API lte_status lte_silu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                                void *dx, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_silu_backward");
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(dx);
  LAUNCH_EW(silu_backward_kernel, F32(dy), F32(x), F32W(dx), n);
}

extern "C" LTE_API lte_status lte_sigmoid_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y,
                                                  int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_sigmoid_forward");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(sigmoid_forward_kernel, F32(x), F32W(y), n);
}

extern "C" LTE_API lte_status lte_sigmoid_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *y,
                                                   void *dx, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_sigmoid_backward");
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(y);
  LTE_REQUIRE_PTR(dx);
  LAUNCH_EW(sigmoid_backward_kernel, F32(dy), F32(y), F32W(dx), n);
}

extern "C" LTE_API lte_status lte_swiglu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *gate, const void *up,
                                                 void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_swiglu_forward");
  LTE_REQUIRE_PTR(gate);
  LTE_REQUIRE_PTR(up);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(swiglu_forward_kernel, F32(gate), F32(up), F32W(y), n);
}

extern "C" LTE_API lte_status lte_swiglu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *gate,
                                                  const void *up, void *dgate, void *dup, int64_t n) {
  ELEMENTWISE_PROLOGUE("lte_swiglu_backward");
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(gate);
  if (dgate) LTE_REQUIRE_PTR(up);
  if (dgate == nullptr && dup == nullptr) return LTE_STATUS_OK;
  LAUNCH_EW(swiglu_backward_kernel, F32(dy), F32(gate), F32(up), F32W(dgate), F32W(dup), n);
}

extern "C" LTE_API lte_status lte_threshold(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *mask, int64_t n,
                                            float threshold) {
  ELEMENTWISE_PROLOGUE("lte_threshold");
  LTE_REQUIRE_PTR(x);
  LTE_REQUIRE_PTR(mask);
  LAUNCH_EW(threshold_kernel, F32(x), F32W(mask), n, threshold);
}
