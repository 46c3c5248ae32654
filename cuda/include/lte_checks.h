/*
 * lte_checks.h: the argument-check messages and dtype rule both backends share (private to the
 * library, not part of the ABI). What a caller sees for a bad argument must not depend on the
 * backend, so the message formats are written once here; each backend wraps them in its own
 * macros, which prefix the public function's name and record the error:
 *   CPU  (cuda/cpu/cpu_common.h, context.c): CHECK_CTX, CHECK_F32, CHECK_PTR, CHECK_NONNEG, CHECK_POS
 *   CUDA (cuda/cuda/common.cuh):             LTE_ENTER, LTE_REQUIRE_F32, LTE_REQUIRE_PTR,
 *                                            LTE_CHECK_NONNEG, LTE_CHECK_POS
 * Every op checks in the same order on both backends: ctx, dtype, sizes, op-specific values, the
 * early return when there is no work, then pointers. tests/ffi_arg_checks_test.ts and
 * tests/gpu/arg_checks_test.ts (generated cases for every op of lte.h) hold both backends to it.
 */
#ifndef LTE_CHECKS_H
#define LTE_CHECKS_H

#include "lte.h"
#include "lte_names.h"

/* Message formats; the backend adds "<function>: " in front. */
#define LTE_MSG_CTX_NULL "ctx is NULL"
#define LTE_MSG_PTR_NULL "%s is NULL"                                      /* parameter name */
#define LTE_MSG_NONNEG "%s = %lld must be >= 0"                            /* name, (long long) value */
#define LTE_MSG_POS "%s = %lld must be > 0"                                /* name, (long long) value */
#define LTE_MSG_DTYPE_UNSUPPORTED "dtype %s is not supported by the %s backend" /* dtype name, backend */
#define LTE_MSG_DTYPE_UNKNOWN "unknown dtype %d"                           /* (int) dtype */
/* Staging blocks (lte_host_alloc): parameter name, pointer; then the range rule of lte_mem_read_start. */
#define LTE_MSG_NOT_STAGING "%s = %p is not in a block of lte_host_alloc on this context"
#define LTE_MSG_NOT_STAGING_START "%s = %p is not a block returned by lte_host_alloc on this context"
#define LTE_MSG_STAGING_RANGE "dst + bytes (%llu) runs past the end of its lte_host_alloc block (%llu bytes from dst)"

/* Status for a dtype an f32-only op was given: OK for f32, UNSUPPORTED for another dtype the ABI
   defines (message LTE_MSG_DTYPE_UNSUPPORTED), INVALID_ARGUMENT for any other value
   (LTE_MSG_DTYPE_UNKNOWN). */
static inline lte_status lte_f32_dtype_status(lte_dtype dtype) {
  if (dtype == LTE_DTYPE_F32) return LTE_STATUS_OK;
  return lte_dtype_text(dtype) ? LTE_STATUS_UNSUPPORTED : LTE_STATUS_INVALID_ARGUMENT;
}

#endif /* LTE_CHECKS_H */
