/*
 * optim.cu: AdamW with decoupled weight decay, one tensor per call (grid-stride, one element per
 * thread iteration; param, m, v updated in place).
 *
 *   g = grad * grad_scale
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   param -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * param)
 *
 * The bias corrections are computed by the caller (they depend only on the step count), so this
 * kernel has no per-step state of its own.
 */
#include "common.cuh"

namespace lte {
namespace {

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
  LTE_GRID_STRIDE(i, n) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float p = param[i];
    param[i] = p - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + weight_decay * p);
  }
}

}  // namespace
}  // namespace lte

using namespace lte;

extern "C" LTE_API lte_status lte_adamw_step(lte_ctx_t *ctx, lte_dtype dtype, void *param, const void *grad, void *m,
                                             void *v, int64_t n, float lr, float beta1, float beta2, float eps,
                                             float weight_decay, float bias_correction1, float bias_correction2,
                                             float grad_scale) {
  LTE_ENTER("lte_adamw_step");
  LTE_REQUIRE_F32(dtype);
  LTE_CHECK_NONNEG(n);
  LTE_REQUIRE(bias_correction1 > 0.f && bias_correction2 > 0.f,
              "bias_correction1 = %g and bias_correction2 = %g must be > 0", (double)bias_correction1,
              (double)bias_correction2);
  if (n == 0) return LTE_STATUS_OK;
  LTE_REQUIRE_PTR(param);
  LTE_REQUIRE_PTR(grad);
  LTE_REQUIRE_PTR(m);
  LTE_REQUIRE_PTR(v);
  adamw_kernel<<<grid_for(ctx, n), kThreads, 0, ctx->stream>>>(
      static_cast<float *>(param), static_cast<const float *>(grad), static_cast<float *>(m), static_cast<float *>(v),
      n, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, grad_scale);
  LTE_LAUNCH_CHECK("adamw_kernel");
  return LTE_STATUS_OK;
}
