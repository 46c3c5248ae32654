/*
 * optim.c: AdamW with decoupled weight decay, one tensor of n elements (per-element math in double).
 *
 *   g = grad * grad_scale
 *   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *   param -= lr * ( (m / bias_correction1) / (sqrt(v / bias_correction2) + eps) + weight_decay * param )
 * The bias corrections (1 - beta^step) are computed by the caller; weight decay uses the param
 * value before this step's update. Parallel over elements.
 */
#include "cpu_common.h"

LTE_API lte_status lte_adamw_step(lte_ctx_t *ctx, lte_dtype dtype, void *param, const void *grad, void *m, void *v,
                                  int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                  float bias_correction1, float bias_correction2, float grad_scale) {
  CHECK_CTX();
  CHECK_F32();
  CHECK_NONNEG(n);
  if (!(bias_correction1 > 0.0f) || !(bias_correction2 > 0.0f)) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: bias_correction1 = %g and bias_correction2 = %g must be > 0",
                __func__, (double)bias_correction1, (double)bias_correction2);
  }
  if (n == 0) return LTE_STATUS_OK;
  CHECK_PTR(param);
  CHECK_PTR(grad);
  CHECK_PTR(m);
  CHECK_PTR(v);
  float *PA = param, *M = m, *Vv = v;
  const float *G = grad;
  const double b1 = beta1, b2 = beta2, bc1 = bias_correction1, bc2 = bias_correction2;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const double g = (double)G[i] * (double)grad_scale;
    const double mi = b1 * (double)M[i] + (1.0 - b1) * g;
    const double vi = b2 * (double)Vv[i] + (1.0 - b2) * g * g;
    const double p = PA[i];
    const double update = (mi / bc1) / (sqrt(vi / bc2) + (double)eps) + (double)weight_decay * p;
    M[i] = (float)mi;
    Vv[i] = (float)vi;
    PA[i] = (float)(p - (double)lr * update);
  }
  return LTE_STATUS_OK;
}
