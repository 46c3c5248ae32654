/*
 * lte_losses.cu: the LTE separability penalty (stage 1), elementwise over router scores g.
 *
 *   forward   y[i]   = 1 / ((g[i] - tau)^2 + eps)
 *   backward  dg[i] += dy[i] * (-2 (g[i] - tau)) / ((g[i] - tau)^2 + eps)^2
 *
 * Grid-stride elementwise kernels; the CPU reference computes in double, so the two agree to a
 * few ulp of the float result. eps > 0 is required (finite at g = tau).
 */
#include "common.cuh"

namespace lte {
namespace {

__global__ void sep_penalty_forward_kernel(const float *g, float *y, int64_t n, float tau, float eps) {
  LTE_GRID_STRIDE(i, n) {
    const float d = g[i] - tau;
    y[i] = 1.f / fmaf(d, d, eps);
  }
}

__global__ void sep_penalty_backward_kernel(const float *dy, const float *g, float *dg, int64_t n, float tau,
                                            float eps) {
  LTE_GRID_STRIDE(i, n) {
    const float d = g[i] - tau;
    const float q = fmaf(d, d, eps);
    dg[i] += dy[i] * (-2.f * d) / (q * q);
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_sep_penalty_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *g, void *y,
                                                      int64_t n, float tau, float eps) {
  ELEMENTWISE_PROLOGUE("lte_sep_penalty_forward");
  LTE_REQUIRE(eps > 0.f, "eps must be > 0");
  LTE_REQUIRE_PTR(g);
  LTE_REQUIRE_PTR(y);
  LAUNCH_EW(sep_penalty_forward_kernel, F32(g), F32W(y), n, tau, eps);
}

extern "C" LTE_API lte_status lte_sep_penalty_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *g,
                                                       void *dg, int64_t n, float tau, float eps) {
  ELEMENTWISE_PROLOGUE("lte_sep_penalty_backward");
  LTE_REQUIRE(eps > 0.f, "eps must be > 0");
  LTE_REQUIRE_PTR(dy);
  LTE_REQUIRE_PTR(g);
  LTE_REQUIRE_PTR(dg);
  LAUNCH_EW(sep_penalty_backward_kernel, F32(dy), F32(g), F32W(dg), n, tau, eps);
}
