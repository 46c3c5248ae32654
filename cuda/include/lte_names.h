/*
 * lte_names.h: names shared by both backends (private to the library, not part of the ABI).
 * Status strings and dtype names are part of what the two backends must agree on, so they are
 * written once here.
 */
#ifndef LTE_NAMES_H
#define LTE_NAMES_H

#include "lte.h"

/* Text of a status code, or NULL for an unknown code. */
static inline const char *lte_status_text(lte_status status) {
  switch (status) {
    case LTE_STATUS_OK: return "ok";
    case LTE_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case LTE_STATUS_OUT_OF_MEMORY: return "out of memory";
    case LTE_STATUS_UNSUPPORTED: return "unsupported";
    case LTE_STATUS_CUDA_ERROR: return "CUDA error";
    case LTE_STATUS_BLAS_ERROR: return "BLAS error";
    case LTE_STATUS_NO_DEVICE: return "no device";
    case LTE_STATUS_INTERNAL: return "internal error";
    default: return (const char *)0;
  }
}

/* Short name of a dtype ("f32", ...), or NULL for an unknown value. */
static inline const char *lte_dtype_text(lte_dtype dtype) {
  switch (dtype) {
    case LTE_DTYPE_F32: return "f32";
    case LTE_DTYPE_F16: return "f16";
    case LTE_DTYPE_BF16: return "bf16";
    case LTE_DTYPE_I32: return "i32";
    default: return (const char *)0;
  }
}

#endif /* LTE_NAMES_H */
