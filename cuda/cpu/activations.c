/*
 * activations.c: pointwise activations (f32 storage, evaluated in double), all shaped (n).
 *
 *   GELU (tanh approximation)  y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
 *                              dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 *   SiLU                       y = x s, s = sigmoid(x);   dy/dx = s (1 + x (1 - s))
 *   Sigmoid                    y = 1 / (1 + exp(-x));     backward from the saved y: y (1 - y)
 *   SwiGLU product             y = silu(gate) * up
 *   threshold                  mask = x > threshold ? 1 : 0 (no gradient)
 * Forward ops overwrite (in place allowed); backward ops accumulate into dx.
 */
#include "cpu_common.h"

#define GELU_K 0.7978845608028654 /* sqrt(2 / pi) */
#define GELU_C 0.044715

/* Every op starts with ELEMENTWISE_PROLOGUE() (cpu_common.h). */

static inline double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

LTE_API lte_status lte_gelu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double v = X[i];
    Y[i] = (float)(0.5 * v * (1.0 + tanh(GELU_K * (v + GELU_C * v * v * v))));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_gelu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x, void *dx,
                                     int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dy);
  CHECK_PTR(x);
  CHECK_PTR(dx);
  const float *DY = dy, *X = x;
  float *DX = dx;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double v = X[i];
    const double t = tanh(GELU_K * (v + GELU_C * v * v * v));
    const double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * v * v);
    DX[i] += (float)((double)DY[i] * d);
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_silu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double v = X[i];
    Y[i] = (float)(v * sigmoid_d(v));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_silu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x, void *dx,
                                     int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dy);
  CHECK_PTR(x);
  CHECK_PTR(dx);
  const float *DY = dy, *X = x;
  float *DX = dx;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double v = X[i], s = sigmoid_d(v);
    DX[i] += (float)((double)DY[i] * s * (1.0 + v * (1.0 - s)));
  }
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_sigmoid_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(y);
  const float *X = x;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) Y[i] = (float)sigmoid_d(X[i]);
  return LTE_STATUS_OK;
}

/* dx += dy * y * (1 - y), y the saved forward output */
LTE_API lte_status lte_sigmoid_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *y, void *dx,
                                        int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dy);
  CHECK_PTR(y);
  CHECK_PTR(dx);
  const float *DY = dy, *Y = y;
  float *DX = dx;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    const double s = Y[i];
    DX[i] += (float)((double)DY[i] * s * (1.0 - s));
  }
  return LTE_STATUS_OK;
}

/* y = silu(gate) * up    gate, up, y: (n) */
LTE_API lte_status lte_swiglu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *gate, const void *up, void *y,
                                      int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(gate);
  CHECK_PTR(up);
  CHECK_PTR(y);
  const float *G = gate, *U = up;
  float *Y = y;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double g = G[i];
    Y[i] = (float)(g * sigmoid_d(g) * (double)U[i]);
  }
  return LTE_STATUS_OK;
}

/* dgate += dy * up * silu'(gate);  dup += dy * silu(gate)    (either may be NULL) */
LTE_API lte_status lte_swiglu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *gate,
                                       const void *up, void *dgate, void *dup, int64_t n) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(dy);
  CHECK_PTR(gate);
  if (dgate) CHECK_PTR(up);
  const float *DY = dy, *G = gate, *U = up;
  float *DG = dgate, *DU = dup;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN / 4)
  for (int64_t i = 0; i < n; i++) {
    const double g = G[i], s = sigmoid_d(g), d = DY[i];
    if (DG) DG[i] += (float)(d * (double)U[i] * s * (1.0 + g * (1.0 - s)));
    if (DU) DU[i] += (float)(d * g * s);
  }
  return LTE_STATUS_OK;
}

/* mask[i] = x[i] > threshold ? 1 : 0    (strict; NaN gives 0) */
LTE_API lte_status lte_threshold(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *mask, int64_t n,
                                 float threshold) {
  ELEMENTWISE_PROLOGUE();
  CHECK_PTR(x);
  CHECK_PTR(mask);
  const float *X = x;
  float *M = mask;
  const int nt = lte_nthreads(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
  for (int64_t i = 0; i < n; i++) M[i] = X[i] > threshold ? 1.0f : 0.0f;
  return LTE_STATUS_OK;
}
