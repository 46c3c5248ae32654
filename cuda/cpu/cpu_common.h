/*
 * cpu_common.h: private definitions shared by the CPU reference backend (the .c files of cuda/cpu).
 *
 *   struct lte_ctx     thread count, memory limit, allocation table, last error
 *   lte_fail()         records an error message (per context and per thread) and returns a status
 *   CHECK_* macros     argument validation; each returns early with the failing status, and every
 *                      message starts with the public function name (__func__); the message
 *                      formats are shared with the CUDA backend (cuda/include/lte_checks.h)
 *   lte_nthreads()     OpenMP thread count of a context (LTE_OPTION_NUM_THREADS, 0 = all cores)
 *
 * Determinism rule for every op in this backend: each output element is produced by exactly one
 * thread, in an order that does not depend on the number of threads, so results are bit-identical
 * for any LTE_OPTION_NUM_THREADS.
 */
#ifndef LTE_CPU_COMMON_H
#define LTE_CPU_COMMON_H

#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lte.h"
#include "lte_checks.h"
#include "lte_names.h"

#define LTE_ERROR_LEN 1024

/* One live allocation (chained hash table entry keyed by the pointer). */
typedef struct lte_block {
  void *ptr;
  uint64_t bytes;
  struct lte_block *next;
} lte_block_t;

struct lte_ctx {
  int threads;             /* LTE_OPTION_NUM_THREADS (0 = omp default) */
  int allow_tf32;          /* stored, no effect on CPU */
  int deterministic;       /* stored, the CPU backend is always deterministic */
  uint64_t memory_limit;   /* 0 = unlimited */
  pthread_mutex_t mu;      /* guards the allocation table and the counters below */
  lte_block_t **buckets;
  uint64_t n_buckets;      /* power of two */
  uint64_t num_allocs;
  uint64_t bytes_in_use;
  uint64_t peak_bytes_in_use;
  struct lte_staging_block *staging; /* lte_host_alloc blocks (staging.c), under mu */
  char last_error[LTE_ERROR_LEN];
};

/* Frees every lte_host_alloc block of ctx (staging.c; called by lte_ctx_free). */
void lte_staging_free_all(lte_ctx_t *ctx);

/* Records "<message>" as the last error of ctx (if any) and of the calling thread; returns status. */
lte_status lte_fail(lte_ctx_t *ctx, lte_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short dtype name for messages: "f32", "f16", "bf16", "i32" or "dtype <n>". */
const char *lte_dtype_name(lte_dtype dtype, char *buf, size_t len);

/* Number of OpenMP threads to use for this context. */
int lte_nthreads(const lte_ctx_t *ctx);

/* Validation helpers (fn = public function name). They return LTE_STATUS_OK or fail. */
lte_status lte_check_ctx(const lte_ctx_t *ctx, const char *fn);
lte_status lte_check_f32(lte_ctx_t *ctx, const char *fn, lte_dtype dtype);
lte_status lte_check_ptr(lte_ctx_t *ctx, const char *fn, const void *p, const char *name);
lte_status lte_check_nonneg(lte_ctx_t *ctx, const char *fn, int64_t v, const char *name);
lte_status lte_check_pos(lte_ctx_t *ctx, const char *fn, int64_t v, const char *name);

#define LTE_TRY(expr)                       \
  do {                                      \
    lte_status lte_st_ = (expr);            \
    if (lte_st_ != LTE_STATUS_OK) return lte_st_; \
  } while (0)

#define CHECK_CTX() LTE_TRY(lte_check_ctx(ctx, __func__))
#define CHECK_F32() LTE_TRY(lte_check_f32(ctx, __func__, dtype))
#define CHECK_PTR(p) LTE_TRY(lte_check_ptr(ctx, __func__, (const void *)(p), #p))
#define CHECK_NONNEG(v) LTE_TRY(lte_check_nonneg(ctx, __func__, (int64_t)(v), #v))
#define CHECK_POS(v) LTE_TRY(lte_check_pos(ctx, __func__, (int64_t)(v), #v))
#define FAIL(status, ...) lte_fail(ctx, (status), __VA_ARGS__)

/* Common prologue of the (n)-sized elementwise and activation ops: context, dtype, n >= 0, early
   return on n == 0 (pointers are checked after it, only when there is work). */
#define ELEMENTWISE_PROLOGUE() \
  CHECK_CTX();                 \
  CHECK_F32();                 \
  CHECK_NONNEG(n);             \
  if (n == 0) return LTE_STATUS_OK

/* Below this many elements (or rows x cols) a loop runs on one thread: fork/join costs more. */
#define LTE_PAR_MIN 16384

#endif /* LTE_CPU_COMMON_H */
