/*
 * memory.c: host allocations of the CPU backend and the memory copy / fill helpers.
 *
 * Every block comes from aligned_alloc (256-byte alignment, size rounded up to a multiple of 256)
 * and is recorded in the context's hash table (pointer -> requested bytes) under a mutex, so
 *   - lte_mem_free of a pointer this context did not hand out is LTE_STATUS_INVALID_ARGUMENT,
 *   - LTE_OPTION_MEMORY_LIMIT is enforced on the requested bytes in use,
 *   - lte_ctx_free releases whatever is still live.
 * There is no cache on the CPU: freed blocks go straight back to the C library.
 */
#include "cpu_common.h"

#include <omp.h>

#define LTE_ALIGN 256

static uint64_t hash_ptr(const void *p, uint64_t n_buckets) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x & (n_buckets - 1);
}

/* Doubles the bucket array (mutex held). Failure just keeps the old, longer chains. */
static void grow_table(lte_ctx_t *ctx) {
  uint64_t n = ctx->n_buckets * 2;
  lte_block_t **nb = calloc(n, sizeof *nb);
  if (!nb) return;
  for (uint64_t i = 0; i < ctx->n_buckets; i++) {
    lte_block_t *b = ctx->buckets[i];
    while (b) {
      lte_block_t *next = b->next;
      uint64_t h = hash_ptr(b->ptr, n);
      b->next = nb[h];
      nb[h] = b;
      b = next;
    }
  }
  free(ctx->buckets);
  ctx->buckets = nb;
  ctx->n_buckets = n;
}

LTE_API lte_status lte_mem_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out) {
  CHECK_CTX();
  CHECK_PTR(out);
  *out = NULL;
  if (bytes == 0) return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: bytes must be > 0", __func__);
  if (bytes > UINT64_MAX - LTE_ALIGN) {
    return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %llu bytes", __func__, (unsigned long long)bytes);
  }
  pthread_mutex_lock(&ctx->mu);
  uint64_t in_use = ctx->bytes_in_use, limit = ctx->memory_limit;
  if (limit != 0 && (bytes > limit || in_use > limit - bytes)) {
    pthread_mutex_unlock(&ctx->mu);
    return FAIL(LTE_STATUS_OUT_OF_MEMORY,
                "%s: out of memory: requested %llu bytes with %llu bytes in use exceeds the limit of %llu bytes "
                "(LTE_OPTION_MEMORY_LIMIT)",
                __func__, (unsigned long long)bytes, (unsigned long long)in_use, (unsigned long long)limit);
  }
  /* Reserve the bytes now so concurrent allocations cannot both pass the limit check. */
  ctx->bytes_in_use += bytes;
  pthread_mutex_unlock(&ctx->mu);

  uint64_t rounded = (bytes + LTE_ALIGN - 1) / LTE_ALIGN * LTE_ALIGN;
  void *p = (rounded <= SIZE_MAX) ? aligned_alloc(LTE_ALIGN, (size_t)rounded) : NULL;
  lte_block_t *blk = p ? malloc(sizeof *blk) : NULL;
  pthread_mutex_lock(&ctx->mu);
  if (!p || !blk) {
    ctx->bytes_in_use -= bytes;
    in_use = ctx->bytes_in_use;
    pthread_mutex_unlock(&ctx->mu);
    free(p);
    return FAIL(LTE_STATUS_OUT_OF_MEMORY, "%s: out of memory: the C library could not allocate %llu bytes (%llu bytes in use)",
                __func__, (unsigned long long)bytes, (unsigned long long)in_use);
  }
  if (ctx->num_allocs + 1 > 2 * ctx->n_buckets) grow_table(ctx);
  uint64_t h = hash_ptr(p, ctx->n_buckets);
  blk->ptr = p;
  blk->bytes = bytes;
  blk->next = ctx->buckets[h];
  ctx->buckets[h] = blk;
  ctx->num_allocs++;
  if (ctx->bytes_in_use > ctx->peak_bytes_in_use) ctx->peak_bytes_in_use = ctx->bytes_in_use;
  pthread_mutex_unlock(&ctx->mu);
  *out = p;
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_free(lte_ctx_t *ctx, void *ptr) {
  CHECK_CTX();
  if (!ptr) return LTE_STATUS_OK;
  pthread_mutex_lock(&ctx->mu);
  uint64_t h = hash_ptr(ptr, ctx->n_buckets);
  lte_block_t **link = &ctx->buckets[h];
  while (*link && (*link)->ptr != ptr) link = &(*link)->next;
  lte_block_t *blk = *link;
  if (!blk) {
    pthread_mutex_unlock(&ctx->mu);
    return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: pointer %p was not allocated by this context (or was already freed)",
                __func__, ptr);
  }
  *link = blk->next;
  ctx->bytes_in_use -= blk->bytes;
  ctx->num_allocs--;
  pthread_mutex_unlock(&ctx->mu);
  free(blk->ptr);
  free(blk);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_stats(lte_ctx_t *ctx, lte_mem_stats_t *out) {
  CHECK_CTX();
  CHECK_PTR(out);
  pthread_mutex_lock(&ctx->mu);
  out->bytes_in_use = ctx->bytes_in_use;
  out->bytes_cached = 0;
  out->peak_bytes_in_use = ctx->peak_bytes_in_use;
  out->num_allocs = ctx->num_allocs;
  out->device_total = 0;
  out->device_free = 0;
  pthread_mutex_unlock(&ctx->mu);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_empty_cache(lte_ctx_t *ctx) {
  CHECK_CTX();
  return LTE_STATUS_OK; /* nothing is cached on the CPU */
}

LTE_API lte_status lte_mem_write(lte_ctx_t *ctx, void *dst, const void *host_src, uint64_t bytes) {
  CHECK_CTX();
  if (bytes == 0) return LTE_STATUS_OK;
  CHECK_PTR(dst);
  CHECK_PTR(host_src);
  memmove(dst, host_src, (size_t)bytes);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_read(lte_ctx_t *ctx, void *host_dst, const void *src, uint64_t bytes) {
  CHECK_CTX();
  if (bytes == 0) return LTE_STATUS_OK;
  CHECK_PTR(host_dst);
  CHECK_PTR(src);
  memmove(host_dst, src, (size_t)bytes);
  return LTE_STATUS_OK;
}

LTE_API lte_status lte_mem_copy(lte_ctx_t *ctx, void *dst, const void *src, uint64_t bytes) {
  CHECK_CTX();
  if (bytes == 0) return LTE_STATUS_OK;
  CHECK_PTR(dst);
  CHECK_PTR(src);
  memmove(dst, src, (size_t)bytes);
  return LTE_STATUS_OK;
}

/* x[0..n) = value, converted to dtype (F32, or I32 truncating toward zero). */
LTE_API lte_status lte_fill(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, float value) {
  CHECK_CTX();
  if (dtype != LTE_DTYPE_I32) CHECK_F32();
  CHECK_NONNEG(n);
  if (n == 0) return LTE_STATUS_OK;
  CHECK_PTR(x);
  const int nt = lte_nthreads(ctx);
  if (dtype == LTE_DTYPE_I32) {
    if (!(value > -2147483649.0f && value < 2147483648.0f)) {
      return FAIL(LTE_STATUS_INVALID_ARGUMENT, "%s: value %g does not fit in i32", __func__, (double)value);
    }
    int32_t *xi = x;
    const int32_t iv = (int32_t)value;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
    for (int64_t i = 0; i < n; i++) xi[i] = iv;
  } else {
    float *xf = x;
#pragma omp parallel for num_threads(nt) schedule(static) if (n > LTE_PAR_MIN)
    for (int64_t i = 0; i < n; i++) xf[i] = value;
  }
  return LTE_STATUS_OK;
}
