/*
 * cpu_gradcheck.c: C-level correctness checks of the CPU reference backend (build/liblte_cpu.so).
 *
 * 1. Finite-difference gradients of every backward function. For an op y = f(x1, x2, ...) and a
 *    fixed random R, the scalar L = sum(y * R) (in double) has dL/dxi = backward(dy = R). Every
 *    element of every differentiable input is perturbed: numeric = (L(x + h) - L(x - h)) / 2h.
 *    Gradient buffers are pre-filled with GRAD_FILL before the backward call and the fill is
 *    subtracted afterwards, which also checks that backward functions ACCUMULATE.
 *    Step and tolerance: the inputs are f32, so h = 1e-2 (a smaller h would amplify the f32
 *    rounding of the outputs: ~|L| 6e-8 / 2h ~ 1e-5 here). Truncation error is O(h^2 f''') ~ 1e-4
 *    for these smooth ops on inputs of size ~1 (linear ops have none). The tolerance
 *    |analytic - numeric| <= 2e-3 + 2e-2 |numeric| is ~10x above both error sources, while a
 *    wrong or missing term of a gradient shows up as an O(1) relative error.
 * 2. Forward values against independent double-precision computations written here (layernorm,
 *    attention row, cross-entropy, AdamW step, sums, top-p on hand-computable cases, argmax ties).
 * 3. Error paths (dtype, ids, targets, shapes, memory limit, unknown pointers) and that
 *    LTE_OPTION_NUM_THREADS = 1, 2 and 3 give bit-identical results.
 *
 * Prints one line per check and "cpu_gradcheck: N checks, M failed"; exits 1 if any failed.
 * Build: gcc -std=c11 -O1 -I cuda/include tests/native/cpu_gradcheck.c -L build -llte_cpu -lm
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lte.h"

#define GRAD_FILL 0.25f
#define FD_H 1e-2
#define FD_ATOL 2e-3
#define FD_RTOL 2e-2

static lte_ctx_t *ctx;
static int n_checks, n_failed;

static void check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  n_checks++;
  if (!ok) n_failed++;
  printf("%s ", ok ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x1234567ull;
static double urand(double lo, double hi) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static void *alloc_bytes(uint64_t bytes) {
  void *p = NULL;
  if (lte_mem_alloc(ctx, bytes, &p) != LTE_STATUS_OK) {
    fprintf(stderr, "allocation of %llu bytes failed: %s\n", (unsigned long long)bytes, lte_ctx_last_error(ctx));
    exit(2);
  }
  return p;
}
static float *falloc(int64_t n) { return alloc_bytes((uint64_t)n * sizeof(float)); }
static float *frand(int64_t n, double lo, double hi) {
  float *p = falloc(n);
  for (int64_t i = 0; i < n; i++) p[i] = (float)urand(lo, hi);
  return p;
}
static float *fconst(int64_t n, float v) {
  float *p = falloc(n);
  for (int64_t i = 0; i < n; i++) p[i] = v;
  return p;
}
static int32_t *ialloc(int64_t n) { return alloc_bytes((uint64_t)n * sizeof(int32_t)); }

#define OK(call)                                                                                 \
  do {                                                                                           \
    lte_status st_ = (call);                                                                     \
    if (st_ != LTE_STATUS_OK) {                                                                  \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, lte_ctx_last_error(ctx)); \
      exit(2);                                                                                   \
    }                                                                                            \
  } while (0)

/* ---------------------------------------------------------------- gradient-check framework */

typedef struct gc_case gc_case;
struct gc_case {
  const char *name;
  int nin;                 /* differentiable inputs */
  float *x[6];
  int64_t nx[6];
  float *dx[6];            /* their gradients (NULL: not requested from backward) */
  const char *xname[6];
  int nout;                /* outputs entering L */
  float *y[3];
  int64_t ny[3];
  float *r[3];             /* R for each output = dy given to backward */
  void (*fwd)(gc_case *);
  void (*bwd)(gc_case *);
  int64_t p[10];           /* op parameters */
  float f[4];
  int32_t *ids;
  float *aux[4];           /* saved state / scratch */
};

static double loss_of(gc_case *c) {
  c->fwd(c);
  double L = 0.0;
  for (int o = 0; o < c->nout; o++)
    for (int64_t i = 0; i < c->ny[o]; i++) L += (double)c->y[o][i] * (double)c->r[o][i];
  return L;
}

static void gradcheck(gc_case *c) {
  for (int o = 0; o < c->nout; o++) c->r[o] = frand(c->ny[o], -1, 1);
  for (int i = 0; i < c->nin; i++) {
    if (!c->dx[i]) c->dx[i] = falloc(c->nx[i]);
    for (int64_t j = 0; j < c->nx[i]; j++) c->dx[i][j] = GRAD_FILL;
  }
  c->fwd(c); /* saved state at the unperturbed point */
  c->bwd(c);
  for (int i = 0; i < c->nin; i++) {
    double worst_abs = 0.0, worst_rel = 0.0, worst_ratio = 0.0;
    int64_t worst_j = 0;
    double worst_a = 0, worst_n = 0;
    for (int64_t j = 0; j < c->nx[i]; j++) {
      const float orig = c->x[i][j];
      c->x[i][j] = (float)(orig + FD_H);
      const double lp = loss_of(c);
      c->x[i][j] = (float)(orig - FD_H);
      const double lm = loss_of(c);
      c->x[i][j] = orig;
      /* divide by the step actually taken in f32 */
      const double step = (double)(float)(orig + FD_H) - (double)(float)(orig - FD_H);
      const double numeric = (lp - lm) / step;
      const double analytic = (double)c->dx[i][j] - (double)GRAD_FILL;
      const double err = fabs(analytic - numeric);
      const double ratio = err / (FD_ATOL + FD_RTOL * fabs(numeric));
      const double rel = err / fmax(fabs(numeric), 1e-3);
      if (err > worst_abs) worst_abs = err;
      if (rel > worst_rel) worst_rel = rel;
      if (ratio > worst_ratio) worst_ratio = ratio, worst_j = j, worst_a = analytic, worst_n = numeric;
    }
    check(worst_ratio <= 1.0,
          "grad %-28s d%-6s %4lld elems  max_abs_err %.2e  max_rel_err %.2e  (worst [%lld]: analytic %.6f numeric %.6f)",
          c->name, c->xname[i], (long long)c->nx[i], worst_abs, worst_rel, (long long)worst_j, worst_a, worst_n);
  }
  c->fwd(c); /* leave outputs consistent */
}

/* ---------------------------------------------------------------- op wrappers */

static void mul_fwd(gc_case *c) { OK(lte_mul(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], c->p[0])); }
static void mul_bwd(gc_case *c) {
  OK(lte_mul_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->dx[0], c->dx[1], c->p[0]));
}

/* mean: y = sum(x) * (1/n); backward broadcast_scalar_backward(alpha = 1/n) */
static void mean_fwd(gc_case *c) {
  OK(lte_sum(ctx, LTE_DTYPE_F32, c->x[0], c->y[0], c->p[0], 0));
  OK(lte_scale(ctx, LTE_DTYPE_F32, c->y[0], c->y[0], 1, 1.0f / (float)c->p[0], 0.0f));
}
static void mean_bwd(gc_case *c) {
  OK(lte_broadcast_scalar_backward(ctx, LTE_DTYPE_F32, c->r[0], c->dx[0], c->p[0], 1.0f / (float)c->p[0]));
}

/* y = bias_add(x, b): dx via axpy (identity), db via sum_rows(accumulate = 1) */
static void bias_fwd(gc_case *c) { OK(lte_bias_add(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], c->p[0], c->p[1])); }
static void bias_bwd(gc_case *c) {
  OK(lte_axpy(ctx, LTE_DTYPE_F32, c->r[0], c->dx[0], c->p[0] * c->p[1], 1.0f));
  OK(lte_sum_rows(ctx, LTE_DTYPE_F32, c->r[0], c->dx[1], c->p[0], c->p[1], 1));
}

/* y (rows, cols) = columns [off, off + cols) of src (rows, ld); backward copy_2d accumulate */
static void slice_fwd(gc_case *c) {
  OK(lte_copy_2d(ctx, LTE_DTYPE_F32, c->x[0] + c->p[3], c->p[2], c->y[0], c->p[1], c->p[0], c->p[1], 0));
}
static void slice_bwd(gc_case *c) {
  OK(lte_copy_2d(ctx, LTE_DTYPE_F32, c->r[0], c->p[1], c->dx[0] + c->p[3], c->p[2], c->p[0], c->p[1], 1));
}

static void gelu_fwd(gc_case *c) { OK(lte_gelu_forward(ctx, LTE_DTYPE_F32, c->x[0], c->y[0], c->p[0])); }
static void gelu_bwd(gc_case *c) { OK(lte_gelu_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->dx[0], c->p[0])); }
static void silu_fwd(gc_case *c) { OK(lte_silu_forward(ctx, LTE_DTYPE_F32, c->x[0], c->y[0], c->p[0])); }
static void silu_bwd(gc_case *c) { OK(lte_silu_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->dx[0], c->p[0])); }
static void sigmoid_fwd(gc_case *c) { OK(lte_sigmoid_forward(ctx, LTE_DTYPE_F32, c->x[0], c->y[0], c->p[0])); }
static void sigmoid_bwd(gc_case *c) {
  OK(lte_sigmoid_backward(ctx, LTE_DTYPE_F32, c->r[0], c->y[0], c->dx[0], c->p[0])); /* from saved y */
}
static void swiglu_fwd(gc_case *c) { OK(lte_swiglu_forward(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], c->p[0])); }
static void swiglu_bwd(gc_case *c) {
  OK(lte_swiglu_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->dx[0], c->dx[1], c->p[0]));
}

static void escale_fwd(gc_case *c) {
  OK(lte_expert_scale_forward(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], c->p[0], (int32_t)c->p[1], (int32_t)c->p[2]));
}
static void escale_bwd(gc_case *c) {
  OK(lte_expert_scale_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->dx[0], c->dx[1], c->p[0],
                               (int32_t)c->p[1], (int32_t)c->p[2]));
}

/* aux[0] = mean, aux[1] = rstd */
static void ln_fwd(gc_case *c) {
  OK(lte_layernorm_forward(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->x[2], c->y[0], c->aux[0], c->aux[1], c->p[0],
                           (int32_t)c->p[1], 1e-5f));
}
static void ln_bwd(gc_case *c) {
  OK(lte_layernorm_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->aux[0], c->aux[1], c->dx[0],
                            c->dx[1], c->dx[2], c->p[0], (int32_t)c->p[1]));
}
static void rms_fwd(gc_case *c) {
  OK(lte_rmsnorm_forward(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], c->aux[1], c->p[0], (int32_t)c->p[1], 1e-5f));
}
static void rms_bwd(gc_case *c) {
  OK(lte_rmsnorm_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->aux[1], c->dx[0], c->dx[1], c->p[0],
                          (int32_t)c->p[1]));
}

/* matmul: p = batch, m, n, k, ta, tb, stride_a, stride_b; f[0] = alpha. Forward uses beta = 0
   on a C pre-filled with NaN (beta = 0 must overwrite). Backward by the transposition identities:
     dop(A) = alpha dC op(B)^T,  dop(B) = alpha op(A)^T dC,  each accumulated with beta = 1. */
static void mm_fwd(gc_case *c) {
  const int32_t batch = (int32_t)c->p[0], m = (int32_t)c->p[1], n = (int32_t)c->p[2];
  for (int64_t i = 0; i < c->ny[0]; i++) c->y[0][i] = NAN;
  OK(lte_matmul(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->y[0], batch, m, n, (int32_t)c->p[3], (int32_t)c->p[4],
                (int32_t)c->p[5], c->p[6], c->p[7], (int64_t)m * n, c->f[0], 0.0f));
}
static void mm_bwd(gc_case *c) {
  const int32_t batch = (int32_t)c->p[0], m = (int32_t)c->p[1], n = (int32_t)c->p[2], k = (int32_t)c->p[3];
  const int32_t ta = (int32_t)c->p[4], tb = (int32_t)c->p[5];
  const int64_t sa = c->p[6], sb = c->p[7], sc = (int64_t)m * n;
  const float alpha = c->f[0];
  const float *A = c->x[0], *B = c->x[1], *dC = c->r[0];
  float *dA = c->dx[0], *dB = c->dx[1];
  /* dA: one batched call (dA has A's strides, sa > 0 in these cases) */
  if (!ta) {
    OK(lte_matmul(ctx, LTE_DTYPE_F32, dC, B, dA, batch, m, k, n, 0, !tb, sc, sb, sa, alpha, 1.0f));
  } else {
    OK(lte_matmul(ctx, LTE_DTYPE_F32, B, dC, dA, batch, k, m, n, tb, 1, sb, sc, sa, alpha, 1.0f));
  }
  /* dB: per batch item, so a broadcast B (sb = 0) sums the contributions of every item */
  for (int32_t i = 0; i < batch; i++) {
    if (!tb) {
      OK(lte_matmul(ctx, LTE_DTYPE_F32, A + i * sa, dC + i * sc, dB + i * sb, 1, k, n, m, !ta, 0, 0, 0, 0, alpha, 1.0f));
    } else {
      OK(lte_matmul(ctx, LTE_DTYPE_F32, dC + i * sc, A + i * sa, dB + i * sb, 1, n, k, m, 1, ta, 0, 0, 0, alpha, 1.0f));
    }
  }
}

static void emb_fwd(gc_case *c) {
  OK(lte_embedding_forward(ctx, LTE_DTYPE_F32, c->ids, c->x[0], c->y[0], c->p[0], (int32_t)c->p[1], (int32_t)c->p[2]));
}
static void emb_bwd(gc_case *c) {
  OK(lte_embedding_backward(ctx, LTE_DTYPE_F32, c->ids, c->r[0], c->dx[0], c->p[0], (int32_t)c->p[1], (int32_t)c->p[2]));
}

/* rope: p = B, T, H, D, pos_offset; f[0] = theta */
static void rope_fwd(gc_case *c) {
  OK(lte_rope_forward(ctx, LTE_DTYPE_F32, c->x[0], c->y[0], (int32_t)c->p[0], (int32_t)c->p[1], (int32_t)c->p[2],
                      (int32_t)c->p[3], (int32_t)c->p[4], c->f[0]));
}
static void rope_bwd(gc_case *c) {
  OK(lte_rope_backward(ctx, LTE_DTYPE_F32, c->r[0], c->dx[0], (int32_t)c->p[0], (int32_t)c->p[1], (int32_t)c->p[2],
                       (int32_t)c->p[3], (int32_t)c->p[4], c->f[0]));
}

/* attention: p = B, T, H, HKV, D; f[0] = scale; aux[0] = probs */
static void attn_fwd(gc_case *c) {
  OK(lte_attention_forward(ctx, LTE_DTYPE_F32, c->x[0], c->x[1], c->x[2], c->y[0], c->aux[0], (int32_t)c->p[0],
                           (int32_t)c->p[1], (int32_t)c->p[2], (int32_t)c->p[3], (int32_t)c->p[4], c->f[0]));
}
static void attn_bwd(gc_case *c) {
  OK(lte_attention_backward(ctx, LTE_DTYPE_F32, c->r[0], c->x[0], c->x[1], c->x[2], c->aux[0], c->dx[0], c->dx[1],
                            c->dx[2], (int32_t)c->p[0], (int32_t)c->p[1], (int32_t)c->p[2], (int32_t)c->p[3],
                            (int32_t)c->p[4], c->f[0]));
}

/* cross-entropy: p = rows, vocab, ignore_index */
static void ce_fwd(gc_case *c) {
  OK(lte_cross_entropy_forward(ctx, LTE_DTYPE_F32, c->x[0], c->ids, c->y[0], c->p[0], (int32_t)c->p[1], (int32_t)c->p[2]));
}
static void ce_bwd(gc_case *c) {
  OK(lte_cross_entropy_backward(ctx, LTE_DTYPE_F32, c->x[0], c->ids, c->r[0], c->dx[0], c->p[0], (int32_t)c->p[1],
                                (int32_t)c->p[2]));
}

/* ---------------------------------------------------------------- the gradient checks */

static gc_case new_case(const char *name, void (*fwd)(gc_case *), void (*bwd)(gc_case *)) {
  gc_case c;
  memset(&c, 0, sizeof c);
  c.name = name;
  c.fwd = fwd;
  c.bwd = bwd;
  return c;
}
static void add_input(gc_case *c, const char *name, float *x, int64_t n) {
  c->xname[c->nin] = name;
  c->x[c->nin] = x;
  c->nx[c->nin] = n;
  c->nin++;
}
static void add_output(gc_case *c, int64_t n) {
  c->y[c->nout] = falloc(n);
  c->ny[c->nout] = n;
  c->nout++;
}

static void gradient_checks(void) {
  { /* elementwise mul */
    gc_case c = new_case("mul", mul_fwd, mul_bwd);
    c.p[0] = 7;
    add_input(&c, "a", frand(7, -2, 2), 7);
    add_input(&c, "b", frand(7, -2, 2), 7);
    add_output(&c, 7);
    gradcheck(&c);
  }
  { /* mean = sum * 1/n, backward broadcast_scalar_backward */
    gc_case c = new_case("sum/broadcast_scalar", mean_fwd, mean_bwd);
    c.p[0] = 9;
    add_input(&c, "x", frand(9, -1, 1), 9);
    add_output(&c, 1);
    gradcheck(&c);
  }
  { /* bias_add, backward sum_rows */
    gc_case c = new_case("bias_add/sum_rows", bias_fwd, bias_bwd);
    c.p[0] = 3, c.p[1] = 5;
    add_input(&c, "x", frand(15, -1, 1), 15);
    add_input(&c, "bias", frand(5, -1, 1), 5);
    add_output(&c, 15);
    gradcheck(&c);
  }
  { /* copy_2d slice (rows 3, cols 4 out of ld 7 at column 2), backward copy_2d accumulate */
    gc_case c = new_case("copy_2d", slice_fwd, slice_bwd);
    c.p[0] = 3, c.p[1] = 4, c.p[2] = 7, c.p[3] = 2;
    add_input(&c, "src", frand(21, -1, 1), 21);
    add_output(&c, 12);
    gradcheck(&c);
  }
  {
    gc_case c = new_case("gelu", gelu_fwd, gelu_bwd);
    c.p[0] = 11;
    add_input(&c, "x", frand(11, -3, 3), 11);
    add_output(&c, 11);
    gradcheck(&c);
  }
  {
    gc_case c = new_case("silu", silu_fwd, silu_bwd);
    c.p[0] = 11;
    add_input(&c, "x", frand(11, -4, 4), 11);
    add_output(&c, 11);
    gradcheck(&c);
  }
  {
    gc_case c = new_case("sigmoid", sigmoid_fwd, sigmoid_bwd);
    c.p[0] = 11;
    add_input(&c, "x", frand(11, -4, 4), 11);
    add_output(&c, 11);
    gradcheck(&c);
  }
  {
    gc_case c = new_case("swiglu", swiglu_fwd, swiglu_bwd);
    c.p[0] = 9;
    add_input(&c, "gate", frand(9, -3, 3), 9);
    add_input(&c, "up", frand(9, -2, 2), 9);
    add_output(&c, 9);
    gradcheck(&c);
  }
  { /* expert_scale R = 3, N = 3, S = 5 */
    gc_case c = new_case("expert_scale", escale_fwd, escale_bwd);
    c.p[0] = 3, c.p[1] = 3, c.p[2] = 5;
    add_input(&c, "h", frand(45, -1, 1), 45);
    add_input(&c, "g", frand(9, 0, 1), 9);
    add_output(&c, 45);
    gradcheck(&c);
  }
  { /* layernorm R = 3, cols = 7 */
    gc_case c = new_case("layernorm", ln_fwd, ln_bwd);
    c.p[0] = 3, c.p[1] = 7;
    add_input(&c, "x", frand(21, -2, 2), 21);
    add_input(&c, "w", frand(7, 0.5, 1.5), 7);
    add_input(&c, "b", frand(7, -0.5, 0.5), 7);
    add_output(&c, 21);
    c.aux[0] = falloc(3), c.aux[1] = falloc(3);
    gradcheck(&c);
  }
  { /* rmsnorm R = 3, cols = 7 */
    gc_case c = new_case("rmsnorm", rms_fwd, rms_bwd);
    c.p[0] = 3, c.p[1] = 7;
    add_input(&c, "x", frand(21, -2, 2), 21);
    add_input(&c, "w", frand(7, 0.5, 1.5), 7);
    add_output(&c, 21);
    c.aux[1] = falloc(3);
    gradcheck(&c);
  }
  /* matmul: batch 2, m 3, n 5, k 4, all four transposition combos; the last two broadcast B */
  for (int combo = 0; combo < 4; combo++) {
    static char names[4][40];
    const int ta = combo >> 1, tb = combo & 1;
    const int broadcast_b = combo >= 2;
    snprintf(names[combo], sizeof names[combo], "matmul ta=%d tb=%d%s", ta, tb, broadcast_b ? " B bcast" : "");
    gc_case c = new_case(names[combo], mm_fwd, mm_bwd);
    const int64_t batch = 2, m = 3, n = 5, k = 4;
    c.p[0] = batch, c.p[1] = m, c.p[2] = n, c.p[3] = k, c.p[4] = ta, c.p[5] = tb;
    c.p[6] = m * k, c.p[7] = broadcast_b ? 0 : k * n;
    c.f[0] = 0.7f;
    add_input(&c, "A", frand(batch * m * k, -1, 1), batch * m * k);
    add_input(&c, "B", frand(broadcast_b ? k * n : batch * k * n, -1, 1), broadcast_b ? k * n : batch * k * n);
    add_output(&c, batch * m * n);
    gradcheck(&c);
  }
  { /* embedding V = 6, C = 5, 7 tokens with repeats */
    gc_case c = new_case("embedding", emb_fwd, emb_bwd);
    c.p[0] = 7, c.p[1] = 6, c.p[2] = 5;
    c.ids = ialloc(7);
    const int32_t ids[7] = {3, 0, 5, 3, 3, 1, 0};
    memcpy(c.ids, ids, sizeof ids);
    add_input(&c, "weight", frand(30, -1, 1), 30);
    add_output(&c, 35);
    gradcheck(&c);
  }
  { /* rope B = 2, T = 3, H = 2, D = 6, pos_offset = 3 */
    gc_case c = new_case("rope", rope_fwd, rope_bwd);
    c.p[0] = 2, c.p[1] = 3, c.p[2] = 2, c.p[3] = 6, c.p[4] = 3;
    c.f[0] = 10000.0f;
    add_input(&c, "x", frand(72, -1, 1), 72);
    add_output(&c, 72);
    gradcheck(&c);
  }
  { /* attention B = 2, T = 5, H = 4, HKV = 2, D = 4 */
    gc_case c = new_case("attention GQA", attn_fwd, attn_bwd);
    const int64_t B = 2, T = 5, H = 4, HKV = 2, D = 4;
    c.p[0] = B, c.p[1] = T, c.p[2] = H, c.p[3] = HKV, c.p[4] = D;
    c.f[0] = 1.0f / sqrtf((float)D) * 1.5f; /* larger than usual: sharper softmax */
    add_input(&c, "q", frand(B * T * H * D, -1, 1), B * T * H * D);
    add_input(&c, "k", frand(B * T * HKV * D, -1, 1), B * T * HKV * D);
    add_input(&c, "v", frand(B * T * HKV * D, -1, 1), B * T * HKV * D);
    add_output(&c, B * T * H * D);
    c.aux[0] = falloc(B * H * T * T);
    gradcheck(&c);
  }
  { /* cross-entropy R = 4, V = 7, row 2 ignored */
    gc_case c = new_case("cross_entropy", ce_fwd, ce_bwd);
    c.p[0] = 4, c.p[1] = 7, c.p[2] = -100;
    c.ids = ialloc(4);
    const int32_t t[4] = {3, 0, -100, 6};
    memcpy(c.ids, t, sizeof t);
    add_input(&c, "logits", frand(28, -3, 3), 28);
    add_output(&c, 4);
    gradcheck(&c);
    /* the ignored row gets exactly 0 gradient and loss */
    int ok = c.y[0][2] == 0.0f;
    for (int j = 0; j < 7; j++) ok &= c.dx[0][2 * 7 + j] == GRAD_FILL;
    check(ok, "cross_entropy ignored row: loss 0 and gradient untouched");
  }
}

/* ---------------------------------------------------------------- forward values in double */

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(b)); }

static void forward_checks(void) {
  { /* layernorm vs double */
    const int R = 3, C = 7;
    float *x = frand(R * C, -2, 2), *w = frand(C, 0.5, 1.5), *b = frand(C, -1, 1), *y = falloc(R * C);
    float *mean = falloc(R), *rstd = falloc(R);
    OK(lte_layernorm_forward(ctx, LTE_DTYPE_F32, x, w, b, y, mean, rstd, R, C, 1e-5f));
    double worst = 0;
    for (int r = 0; r < R; r++) {
      double mu = 0, var = 0;
      for (int c = 0; c < C; c++) mu += x[r * C + c];
      mu /= C;
      for (int c = 0; c < C; c++) var += (x[r * C + c] - mu) * (x[r * C + c] - mu);
      var /= C;
      for (int c = 0; c < C; c++) {
        const double ref = (x[r * C + c] - mu) / sqrt(var + 1e-5) * w[c] + b[c];
        worst = fmax(worst, fabs(y[r * C + c] - ref));
      }
      worst = fmax(worst, fabs(mean[r] - mu));
    }
    check(worst < 1e-5, "forward layernorm vs double: max abs err %.2e", worst);
    /* b = NULL is allowed */
    OK(lte_layernorm_forward(ctx, LTE_DTYPE_F32, x, w, NULL, y, mean, rstd, R, C, 1e-5f));
    const double ref0 = (x[0] - mean[0]) * rstd[0] * w[0];
    check(close_to(y[0], ref0, 1e-5), "forward layernorm with b = NULL: y[0] %.6f vs %.6f", y[0], ref0);
  }
  { /* attention: one full row (b = 1, h = 3, t = 3) vs double; probs above the diagonal are 0 */
    const int B = 2, T = 5, H = 4, HKV = 2, D = 4;
    const float scale = 0.5f;
    float *q = frand(B * T * H * D, -1, 1), *k = frand(B * T * HKV * D, -1, 1), *v = frand(B * T * HKV * D, -1, 1);
    float *out = falloc(B * T * H * D), *probs = fconst(B * H * T * T, NAN);
    OK(lte_attention_forward(ctx, LTE_DTYPE_F32, q, k, v, out, probs, B, T, H, HKV, D, scale));
    const int b = 1, h = 3, t = 3, kvh = h / (H / HKV);
    double s[5], mx = -1e300, sum = 0, worst = 0;
    for (int j = 0; j <= t; j++) {
      double dot = 0;
      for (int d = 0; d < D; d++) dot += (double)q[((b * T + t) * H + h) * D + d] * k[((b * T + j) * HKV + kvh) * D + d];
      s[j] = scale * dot;
      mx = fmax(mx, s[j]);
    }
    for (int j = 0; j <= t; j++) sum += (s[j] = exp(s[j] - mx));
    for (int j = 0; j <= t; j++) worst = fmax(worst, fabs(probs[((b * H + h) * T + t) * T + j] - s[j] / sum));
    for (int d = 0; d < D; d++) {
      double o = 0;
      for (int j = 0; j <= t; j++) o += s[j] / sum * v[((b * T + j) * HKV + kvh) * D + d];
      worst = fmax(worst, fabs(out[((b * T + t) * H + h) * D + d] - o));
    }
    int zeros = 1;
    for (int bh = 0; bh < B * H; bh++)
      for (int i = 0; i < T; i++)
        for (int j = i + 1; j < T; j++) zeros &= probs[(bh * T + i) * T + j] == 0.0f;
    check(worst < 1e-6, "forward attention row vs double: max abs err %.2e", worst);
    check(zeros, "forward attention: probs above the diagonal are written as 0");
  }
  { /* cross-entropy vs double, including large logits (stability) */
    const int R = 3, V = 5;
    float *x = frand(R * V, -3, 3), *loss = falloc(R);
    x[1 * V + 2] = 1000.0f; /* row 1: exp overflow without the max shift */
    int32_t *t = ialloc(R);
    t[0] = 4, t[1] = 2, t[2] = 0;
    OK(lte_cross_entropy_forward(ctx, LTE_DTYPE_F32, x, t, loss, R, V, -1));
    double worst = 0;
    for (int r = 0; r < R; r++) {
      double mx = -1e300, s = 0;
      for (int c = 0; c < V; c++) mx = fmax(mx, x[r * V + c]);
      for (int c = 0; c < V; c++) s += exp(x[r * V + c] - mx);
      worst = fmax(worst, fabs(loss[r] - (mx + log(s) - x[r * V + t[r]])));
    }
    check(worst < 1e-5 && isfinite(loss[1]), "forward cross_entropy vs double (incl. logit 1000): max abs err %.2e", worst);
  }
  { /* AdamW one step vs double */
    const int n = 6;
    float *p = frand(n, -1, 1), *g = frand(n, -1, 1), *m = frand(n, -0.1, 0.1), *v = frand(n, 0, 0.01);
    double pd[6], md[6], vd[6];
    const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, gs = 0.5, step = 3;
    const double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (int i = 0; i < n; i++) {
      const double gi = g[i] * gs;
      md[i] = b1 * m[i] + (1 - b1) * gi;
      vd[i] = b2 * v[i] + (1 - b2) * gi * gi;
      pd[i] = p[i] - lr * ((md[i] / bc1) / (sqrt(vd[i] / bc2) + eps) + wd * p[i]);
    }
    OK(lte_adamw_step(ctx, LTE_DTYPE_F32, p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd,
                      (float)bc1, (float)bc2, (float)gs));
    double worst = 0;
    for (int i = 0; i < n; i++) {
      worst = fmax(worst, fabs(p[i] - pd[i]));
      worst = fmax(worst, fabs(m[i] - md[i]));
      worst = fmax(worst, fabs(v[i] - vd[i]) * 100);
    }
    check(worst < 1e-6, "forward adamw one step vs double: max abs err %.2e", worst);
  }
  { /* sum / sum_squares over 100003 elements vs double, and accumulate */
    const int64_t n = 100003;
    float *x = frand(n, -1, 1), *out = falloc(1);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += x[i], s2 += (double)x[i] * x[i];
    OK(lte_sum(ctx, LTE_DTYPE_F32, x, out, n, 0));
    const float a = out[0];
    OK(lte_sum_squares(ctx, LTE_DTYPE_F32, x, out, n, 1));
    check(fabs(a - s) < 1e-3 && close_to(out[0], a + s2, 1e-6), "forward sum %.6f vs %.6f, sum + sum_squares %.4f vs %.4f",
          a, s, out[0], a + s2);
  }
  { /* argmax ties -> lowest index */
    float *x = falloc(12);
    const float vals[12] = {1, 3, 3, 2, /**/ -5, -5, -5, -5, /**/ 0, 1, 7, 7};
    memcpy(x, vals, sizeof vals);
    int32_t *o = ialloc(3);
    OK(lte_argmax(ctx, LTE_DTYPE_F32, x, o, 3, 4));
    check(o[0] == 1 && o[1] == 0 && o[2] == 2, "argmax ties pick the lowest index: %d %d %d (want 1 0 2)", o[0], o[1], o[2]);
  }
  { /* threshold is strict; fill i32 truncates */
    float *x = falloc(3), *m = falloc(3);
    x[0] = 0.5f, x[1] = nextafterf(0.5f, 1.0f), x[2] = -1.0f;
    OK(lte_threshold(ctx, LTE_DTYPE_F32, x, m, 3, 0.5f));
    int32_t *i = ialloc(2);
    OK(lte_fill(ctx, LTE_DTYPE_I32, i, 1, 3.9f));
    OK(lte_fill(ctx, LTE_DTYPE_I32, i + 1, 1, -3.9f));
    check(m[0] == 0 && m[1] == 1 && m[2] == 0 && i[0] == 3 && i[1] == -3,
          "threshold strict (%g %g %g) and fill i32 truncation (%d %d)", m[0], m[1], m[2], i[0], i[1]);
  }
  { /* rope in place (x == y) equals out of place */
    const int n = 2 * 3 * 2 * 8;
    float *x = frand(n, -1, 1), *y = falloc(n), *xi = falloc(n);
    memcpy(xi, x, n * sizeof(float));
    OK(lte_rope_forward(ctx, LTE_DTYPE_F32, x, y, 2, 3, 2, 8, 5, 10000.0f));
    OK(lte_rope_forward(ctx, LTE_DTYPE_F32, xi, xi, 2, 3, 2, 8, 5, 10000.0f));
    /* token 0 of batch 0, head 0, pair 1: angle = 5 * 10000^(-2/8) */
    const double ang = 5.0 * pow(10000.0, -2.0 / 8.0);
    const double ref = x[1] * cos(ang) - x[1 + 4] * sin(ang);
    check(memcmp(x == y ? x : y, xi, n * sizeof(float)) == 0 && fabs(y[1] - ref) < 1e-6,
          "rope in place equals out of place; y[1] %.6f vs double %.6f", y[1], ref);
  }
}

/* ---------------------------------------------------------------- top-p sampling */

/* Independent implementation of the lte.h definition (O(V^2) search for p_cut). */
static int32_t top_p_reference(const float *logits, int V, float temperature, float top_p, uint64_t seed, int64_t row) {
  double p[64], mx = -1e300, s = 0;
  for (int i = 0; i < V; i++) mx = fmax(mx, (double)logits[i] / temperature);
  for (int i = 0; i < V; i++) s += (p[i] = exp((double)logits[i] / temperature - mx));
  for (int i = 0; i < V; i++) p[i] /= s;
  double p_cut = -1;
  for (int j = 0; j < V; j++) {
    double mass = 0;
    for (int i = 0; i < V; i++)
      if (p[i] >= p[j]) mass += p[i];
    if (mass >= top_p && p[j] > p_cut) p_cut = p[j];
  }
  if (p_cut < 0) { /* rounding: keep everything */
    p_cut = 2;
    for (int i = 0; i < V; i++) p_cut = fmin(p_cut, p[i]);
  }
  double kept = 0;
  for (int i = 0; i < V; i++)
    if (p[i] >= p_cut) kept += p[i];
  const double u = (double)lte_uniform(seed, row) * kept;
  double run = 0;
  int last = 0;
  for (int i = 0; i < V; i++) {
    if (p[i] < p_cut) continue;
    last = i;
    run += p[i];
    if (run > u) return i;
  }
  return last;
}

static void sampling_checks(void) {
  const int R = 64;
  /* hand case: p = (0.1, 0.4, 0.2, 0.3), top_p = 0.6 -> p_cut = 0.3, kept = {1, 3} */
  {
    const int V = 4;
    float *x = falloc(R * V);
    int32_t *o = ialloc(R);
    for (int r = 0; r < R; r++) {
      x[r * V + 0] = logf(0.1f), x[r * V + 1] = logf(0.4f), x[r * V + 2] = logf(0.2f), x[r * V + 3] = logf(0.3f);
    }
    OK(lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, R, V, 1.0f, 0.6f, 42));
    int only_kept = 1, n1 = 0, n3 = 0, agree = 1;
    for (int r = 0; r < R; r++) {
      only_kept &= o[r] == 1 || o[r] == 3;
      n1 += o[r] == 1, n3 += o[r] == 3;
      /* u < 0.4 / 0.7 of the kept mass picks 1, else 3 */
      const int want = lte_uniform(42, r) * 0.7 < 0.4 ? 1 : 3;
      agree &= o[r] == want;
    }
    check(only_kept && n1 > 0 && n3 > 0 && agree, "top_p hand case p=(.1,.4,.2,.3) top_p=.6: kept {1,3} (%d x 1, %d x 3), matches u", n1, n3);
  }
  /* ties at the cut are all kept: uniform p, top_p = 0.3 keeps all 4 */
  {
    const int V = 4;
    float *x = fconst(R * V, 0.7f);
    int32_t *o = ialloc(R);
    OK(lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, R, V, 1.0f, 0.3f, 7));
    int seen[4] = {0}, agree = 1;
    for (int r = 0; r < R; r++) {
      seen[o[r]]++;
      agree &= o[r] == (int)(lte_uniform(7, r) * 4.0f);
    }
    check(seen[0] && seen[1] && seen[2] && seen[3] && agree, "top_p keeps every tie at the cut (%d %d %d %d)", seen[0],
          seen[1], seen[2], seen[3]);
  }
  /* tiny top_p = greedy; random logits and temperatures vs the reference implementation */
  {
    const int V = 37;
    float *x = frand(R * V, -3, 3);
    int32_t *o = ialloc(R), *am = ialloc(R);
    OK(lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, R, V, 0.8f, 1e-6f, 3));
    OK(lte_argmax(ctx, LTE_DTYPE_F32, x, am, R, V));
    int greedy = 1;
    for (int r = 0; r < R; r++) greedy &= o[r] == am[r];
    check(greedy, "top_p = 1e-6 equals argmax on every row");
    int agree = 1, bad_r = -1;
    const float temps[3] = {0.5f, 1.0f, 1.7f}, tops[3] = {0.3f, 0.9f, 1.0f};
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++) {
        OK(lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, R, V, temps[a], tops[b], 1000 + a * 3 + b));
        for (int r = 0; r < R; r++) {
          if (o[r] != top_p_reference(x + r * V, V, temps[a], tops[b], 1000 + a * 3 + b, r)) agree = 0, bad_r = r;
        }
      }
    check(agree, "top_p agrees with an independent O(V^2) implementation on 9 (temperature, top_p) pairs x %d rows%s", R,
          agree ? "" : " (mismatch)");
    (void)bad_r;
  }
}

/* ---------------------------------------------------------------- error paths */

static int msg_has(const char *needle) { return strstr(lte_ctx_last_error(ctx), needle) != NULL; }

static void error_checks(void) {
  float *x = frand(8, -1, 1), *y = falloc(8);
  lte_status st = lte_gelu_forward(ctx, LTE_DTYPE_BF16, x, y, 8);
  check(st == LTE_STATUS_UNSUPPORTED && msg_has("lte_gelu_forward") && msg_has("bf16"),
        "bf16 gelu -> UNSUPPORTED: \"%s\"", lte_ctx_last_error(ctx));
  st = lte_matmul(ctx, LTE_DTYPE_F16, x, x, y, 1, 2, 2, 2, 0, 0, 0, 0, 0, 1, 0);
  check(st == LTE_STATUS_UNSUPPORTED && msg_has("lte_matmul"), "f16 matmul -> UNSUPPORTED: \"%s\"", lte_ctx_last_error(ctx));

  int32_t *ids = ialloc(20);
  for (int i = 0; i < 20; i++) ids[i] = i % 4;
  ids[17] = 50300;
  float *w = falloc(4 * 3), *out = falloc(20 * 3);
  st = lte_embedding_forward(ctx, LTE_DTYPE_F32, ids, w, out, 20, 4, 3);
  check(st == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_embedding_forward: ids[17] = 50300 is outside [0, 4)"),
        "bad id -> INVALID_ARGUMENT: \"%s\"", lte_ctx_last_error(ctx));
  ids[17] = -1;
  st = lte_embedding_backward(ctx, LTE_DTYPE_F32, ids, out, w, 20, 4, 3);
  check(st == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_embedding_backward") && msg_has("-1"),
        "negative id in backward -> INVALID_ARGUMENT: \"%s\"", lte_ctx_last_error(ctx));

  int32_t *t = ialloc(2);
  t[0] = 1, t[1] = 9;
  st = lte_cross_entropy_forward(ctx, LTE_DTYPE_F32, x, t, y, 2, 4, -100);
  check(st == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_cross_entropy_forward") && msg_has("targets[1] = 9"),
        "bad target -> INVALID_ARGUMENT: \"%s\"", lte_ctx_last_error(ctx));

  st = lte_attention_forward(ctx, LTE_DTYPE_F32, x, x, x, y, y, 1, 1, 3, 2, 2, 1.0f);
  check(st == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_attention_forward"), "heads %% kv_heads != 0 -> INVALID_ARGUMENT: \"%s\"",
        lte_ctx_last_error(ctx));
  st = lte_rope_forward(ctx, LTE_DTYPE_F32, x, y, 1, 1, 1, 5, 0, 10000.0f);
  check(st == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_rope_forward") && msg_has("even"),
        "odd head_dim rope -> INVALID_ARGUMENT: \"%s\"", lte_ctx_last_error(ctx));
  int32_t *o = ialloc(2);
  st = lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, 2, 4, 1.0f, 0.0f, 1);
  lte_status st2 = lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, 2, 4, 0.0f, 0.5f, 1);
  lte_status st3 = lte_sample_top_p(ctx, LTE_DTYPE_F32, x, o, 2, 4, 1.0f, 1.5f, 1);
  check(st == LTE_STATUS_INVALID_ARGUMENT && st2 == LTE_STATUS_INVALID_ARGUMENT && st3 == LTE_STATUS_INVALID_ARGUMENT &&
            msg_has("lte_sample_top_p"),
        "top_p 0 / temperature 0 / top_p 1.5 -> INVALID_ARGUMENT");
  st = lte_matmul(ctx, LTE_DTYPE_F32, x, x, y, 1, 0, 2, 2, 0, 0, 0, 0, 0, 1, 0);
  st2 = lte_layernorm_forward(ctx, LTE_DTYPE_F32, x, x, NULL, y, y, y, 2, -4, 1e-5f);
  st3 = lte_add(ctx, LTE_DTYPE_F32, x, NULL, y, 8);
  lte_status st4 = lte_add(ctx, LTE_DTYPE_F32, NULL, NULL, NULL, 0); /* n == 0: no-op */
  check(st == LTE_STATUS_INVALID_ARGUMENT && st2 == LTE_STATUS_INVALID_ARGUMENT && st3 == LTE_STATUS_INVALID_ARGUMENT &&
            msg_has("lte_add: b is NULL") && st4 == LTE_STATUS_OK,
        "m = 0 / cols < 0 / NULL pointer -> INVALID_ARGUMENT, n = 0 no-op: \"%s\"", lte_ctx_last_error(ctx));
  st = lte_gelu_forward(NULL, LTE_DTYPE_F32, x, y, 8);
  check(st == LTE_STATUS_INVALID_ARGUMENT && strstr(lte_last_error(), "lte_gelu_forward"),
        "NULL ctx -> INVALID_ARGUMENT, thread-local message \"%s\"", lte_last_error());

  /* memory */
  lte_mem_stats_t s0, s1;
  OK(lte_mem_stats(ctx, &s0));
  OK(lte_ctx_set_option(ctx, LTE_OPTION_MEMORY_LIMIT, (int64_t)s0.bytes_in_use + (1 << 20)));
  void *p = NULL;
  st = lte_mem_alloc(ctx, 2 << 20, &p);
  check(st == LTE_STATUS_OUT_OF_MEMORY && p == NULL && msg_has("lte_mem_alloc") && msg_has("2097152"),
        "memory limit -> OUT_OF_MEMORY: \"%s\"", lte_ctx_last_error(ctx));
  st = lte_mem_alloc(ctx, 1000, &p);
  OK(lte_mem_stats(ctx, &s1));
  check(st == LTE_STATUS_OK && ((uintptr_t)p % 256) == 0 && s1.bytes_in_use == s0.bytes_in_use + 1000 &&
            s1.num_allocs == s0.num_allocs + 1,
        "small allocation under the limit works, 256-byte aligned, counted in stats");
  OK(lte_mem_free(ctx, p));
  OK(lte_ctx_set_option(ctx, LTE_OPTION_MEMORY_LIMIT, 0));
  st = lte_mem_free(ctx, p); /* double free */
  int stack_var = 0;
  st2 = lte_mem_free(ctx, &stack_var);
  st3 = lte_mem_free(ctx, NULL);
  check(st == LTE_STATUS_INVALID_ARGUMENT && st2 == LTE_STATUS_INVALID_ARGUMENT && msg_has("lte_mem_free") &&
            st3 == LTE_STATUS_OK,
        "free of an unknown / already freed pointer -> INVALID_ARGUMENT, NULL is a no-op: \"%s\"", lte_ctx_last_error(ctx));
  st = lte_mem_alloc(ctx, 0, &p);
  check(st == LTE_STATUS_INVALID_ARGUMENT, "lte_mem_alloc(0) -> INVALID_ARGUMENT");
  st = lte_ctx_set_option(ctx, 99, 1);
  check(st == LTE_STATUS_INVALID_ARGUMENT, "unknown option -> INVALID_ARGUMENT");
  char info[256];
  OK(lte_ctx_device_info(ctx, info, sizeof info));
  check(strstr(info, "\"backend\":\"cpu\"") && strcmp(lte_backend_name(), "cpu") == 0 &&
            lte_abi_version() == LTE_ABI_VERSION && strlen(lte_build_id()) > 0 &&
            strcmp(lte_status_string(LTE_STATUS_OUT_OF_MEMORY), "out of memory") == 0,
        "info getters: %s build %s", info, lte_build_id());
}

/* ---------------------------------------------------------------- thread-count independence */

typedef struct {
  float *mm[4], *attn_out, *attn_probs, *dq, *dk, *dv, *sum, *dw, *demb;
} det_out;

static void det_run(int threads, det_out *r, float *A, float *B, float *q, float *k, float *v, float *dout, float *big,
                    float *lnx, float *lnw, int32_t *ids) {
  OK(lte_ctx_set_option(ctx, LTE_OPTION_NUM_THREADS, threads));
  const int batch = 3, m = 70, n = 130, kk = 90;
  for (int combo = 0; combo < 4; combo++) {
    r->mm[combo] = falloc(batch * m * n);
    OK(lte_matmul(ctx, LTE_DTYPE_F32, A, B, r->mm[combo], batch, m, n, kk, combo >> 1, combo & 1, m * kk,
                  combo == 3 ? 0 : kk * n, m * n, 1.0f, 0.0f));
  }
  const int Bt = 2, T = 33, H = 4, HKV = 2, D = 16;
  r->attn_out = falloc(Bt * T * H * D), r->attn_probs = falloc(Bt * H * T * T);
  r->dq = fconst(Bt * T * H * D, 0), r->dk = fconst(Bt * T * HKV * D, 0), r->dv = fconst(Bt * T * HKV * D, 0);
  OK(lte_attention_forward(ctx, LTE_DTYPE_F32, q, k, v, r->attn_out, r->attn_probs, Bt, T, H, HKV, D, 0.25f));
  OK(lte_attention_backward(ctx, LTE_DTYPE_F32, dout, q, k, v, r->attn_probs, r->dq, r->dk, r->dv, Bt, T, H, HKV, D, 0.25f));
  r->sum = falloc(2);
  OK(lte_sum(ctx, LTE_DTYPE_F32, big, r->sum, 1000003, 0));
  OK(lte_sum_squares(ctx, LTE_DTYPE_F32, big, r->sum + 1, 1000003, 0));
  /* layernorm dw over many rows, embedding backward with repeated ids */
  const int R = 500, C = 96;
  float *mean = falloc(R), *rstd = falloc(R), *y = falloc(R * C);
  r->dw = fconst(2 * C, 0);
  OK(lte_layernorm_forward(ctx, LTE_DTYPE_F32, lnx, lnw, NULL, y, mean, rstd, R, C, 1e-5f));
  OK(lte_layernorm_backward(ctx, LTE_DTYPE_F32, lnx, lnx, lnw, mean, rstd, NULL, r->dw, r->dw + C, R, C));
  r->demb = fconst(10 * C, 0);
  OK(lte_embedding_backward(ctx, LTE_DTYPE_F32, ids, lnx, r->demb, R, 10, C));
}

static int same(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

static void determinism_checks(void) {
  float *A = frand(3 * 70 * 90, -1, 1), *B = frand(3 * 90 * 130, -1, 1);
  float *q = frand(2 * 33 * 4 * 16, -1, 1), *k = frand(2 * 33 * 2 * 16, -1, 1), *v = frand(2 * 33 * 2 * 16, -1, 1);
  float *dout = frand(2 * 33 * 4 * 16, -1, 1), *big = frand(1000003, -1, 1);
  float *lnx = frand(500 * 96, -2, 2), *lnw = frand(96, 0.5, 1.5);
  int32_t *ids = ialloc(500);
  for (int i = 0; i < 500; i++) ids[i] = (i * 7) % 10;
  det_out r[3];
  const int threads[3] = {1, 2, 3};
  for (int i = 0; i < 3; i++) det_run(threads[i], &r[i], A, B, q, k, v, dout, big, lnx, lnw, ids);
  OK(lte_ctx_set_option(ctx, LTE_OPTION_NUM_THREADS, 0));
  for (int i = 1; i < 3; i++) {
    int mm = 1;
    for (int c = 0; c < 4; c++) mm &= same(r[0].mm[c], r[i].mm[c], 3 * 70 * 130);
    check(mm, "threads 1 vs %d: matmul (4 trans combos, batch 3, 70x130x90) bit-identical", threads[i]);
    check(same(r[0].attn_out, r[i].attn_out, 2 * 33 * 4 * 16) && same(r[0].attn_probs, r[i].attn_probs, 2 * 4 * 33 * 33) &&
              same(r[0].dq, r[i].dq, 2 * 33 * 4 * 16) && same(r[0].dk, r[i].dk, 2 * 33 * 2 * 16) &&
              same(r[0].dv, r[i].dv, 2 * 33 * 2 * 16),
          "threads 1 vs %d: attention forward + backward bit-identical", threads[i]);
    check(same(r[0].sum, r[i].sum, 2), "threads 1 vs %d: sum / sum_squares of 1000003 bit-identical", threads[i]);
    check(same(r[0].dw, r[i].dw, 2 * 96) && same(r[0].demb, r[i].demb, 10 * 96),
          "threads 1 vs %d: layernorm dw/db and embedding scatter-add bit-identical", threads[i]);
  }
  /* matmul vs a double reference on the large case (ta = tb = 0) */
  double worst = 0;
  for (int b = 0; b < 3; b++)
    for (int i = 0; i < 70; i++)
      for (int j = 0; j < 130; j++) {
        double s = 0;
        for (int p = 0; p < 90; p++) s += (double)A[b * 6300 + i * 90 + p] * B[b * 11700 + p * 130 + j];
        worst = fmax(worst, fabs(r[0].mm[0][(b * 70 + i) * 130 + j] - s));
      }
  check(worst < 1e-4, "matmul 70x130x90 vs double: max abs err %.2e", worst);
}

int main(void) {
  if (lte_ctx_create(0, &ctx) != LTE_STATUS_OK) {
    fprintf(stderr, "lte_ctx_create failed: %s\n", lte_last_error());
    return 2;
  }
  gradient_checks();
  forward_checks();
  sampling_checks();
  error_checks();
  determinism_checks();
  lte_ctx_free(ctx);
  printf("cpu_gradcheck: %d checks, %d failed\n", n_checks, n_failed);
  return n_failed == 0 ? 0 : 1;
}
