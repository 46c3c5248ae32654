/*
 * staging.c: host staging blocks and "stream-ordered" reads of the CPU reference backend
 * (lte_host_alloc / lte_host_free / lte_mem_read_start / lte_mem_read_wait; see lte.h).
 *
 * The CPU backend runs every op synchronously, so a block is plain malloc memory, a read copies
 * at once and a wait has nothing to wait for; the functions still check exactly what the CUDA
 * backend checks (cuda/cuda/staging.cu), in the same order and with the same messages, so code
 * that uses them (engine/mod.ts, lookahead decoding) is exercised on the CPU too.
 */
#include "cpu_common.h"

typedef struct lte_staging_block {
  void *ptr;
  uint64_t bytes;
  struct lte_staging_block *next;
} lte_staging_block_t;

/* The block holding p (anywhere inside it), or NULL. Caller holds ctx->mu. */
static lte_staging_block_t *find_block(lte_ctx_t *ctx, const void *p) {
  const uintptr_t a = (uintptr_t)p;
  for (lte_staging_block_t *b = ctx->staging; b; b = b->next) {
    if (a >= (uintptr_t)b->ptr && a - (uintptr_t)b->ptr < b->bytes) return b;
  }
  return NULL;
}

LTE_API lte_status lte_host_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out) {
  CHECK_CTX();
  CHECK_POS(bytes);
  CHECK_PTR(out);
  *out = NULL;
  lte_staging_block_t *b = malloc(sizeof *b);
  void *p = malloc((size_t)bytes);
  if (!b || !p) {
    free(b);
    free(p);
    return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %llu bytes of host memory", __func__,
                (unsigned long long)bytes);
  }
  b->ptr = p;
  b->bytes = bytes;
  pthread_mutex_lock(&ctx->mu);
  b->next = ctx->staging;
  ctx->staging = b;
  pthread_mutex_unlock(&ctx->mu);
  *out = p;
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_host_free(lte_ctx_t *ctx, void *ptr) {
  CHECK_CTX();
  if (!ptr) return LTE_STATUS_OK;
  pthread_mutex_lock(&ctx->mu);
  lte_staging_block_t **link = &ctx->staging;
  while (*link && (*link)->ptr != ptr) link = &(*link)->next;
  lte_staging_block_t *b = *link;
  if (b) *link = b->next;
  pthread_mutex_unlock(&ctx->mu);
  if (!b) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: " LTE_MSG_NOT_STAGING_START, __func__, "ptr", ptr);
  free(b->ptr);
  free(b);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_read_start(lte_ctx_t *ctx, void *dst, const void *src, uint64_t bytes) {
  CHECK_CTX();
  CHECK_POS(bytes);
  CHECK_PTR(dst);
  CHECK_PTR(src);
  pthread_mutex_lock(&ctx->mu);
  const lte_staging_block_t *b = find_block(ctx, dst);
  const uint64_t room = b ? b->bytes - (uint64_t)((uintptr_t)dst - (uintptr_t)b->ptr) : 0;
  pthread_mutex_unlock(&ctx->mu);
  if (!b) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: " LTE_MSG_NOT_STAGING, __func__, "dst", dst);
  if (bytes > room) {
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: " LTE_MSG_STAGING_RANGE, __func__, (unsigned long long)bytes,
                (unsigned long long)room);
  }
  memcpy(dst, src, (size_t)bytes); /* every CPU op has completed: nothing to order behind */
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_read_wait(lte_ctx_t *ctx, const void *dst) {
  CHECK_CTX();
  CHECK_PTR(dst);
  pthread_mutex_lock(&ctx->mu);
  const lte_staging_block_t *b = find_block(ctx, dst);
  pthread_mutex_unlock(&ctx->mu);
  if (!b) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: " LTE_MSG_NOT_STAGING, __func__, "dst", dst);
  return LTE_STATUS_OK; /* the copy of lte_mem_read_start completed before it returned */
}

void lte_staging_free_all(lte_ctx_t *ctx) {
  lte_staging_block_t *b = ctx->staging;
  while (b) {
    lte_staging_block_t *next = b->next;
    free(b->ptr);
    free(b);
    b = next;
  }
  ctx->staging = NULL;
}
