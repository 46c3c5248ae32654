/**
 * The one FFI symbol table of the native library: every function of `cuda/include/lte.h`, C names
 * unchanged, one parameter per line with its C declaration as the comment. The header is the
 * single source of truth: `tests/ffi_symbols_test.ts` parses it and checks every entry here,
 * parameter by parameter and the result type, so a missing function or an i32/i64, u64/i64,
 * f32 or pointer/buffer mismatch fails. When you add a function to lte.h, add its entry here in
 * the same form (the test prints the expected entry when it is missing).
 *
 * Argument types follow the FFI cost measurements in docs/compute-core.md ("Event loop"):
 * pointers and 32-bit integers on hot paths; 64-bit element counts take JS numbers (a slower
 * conversion, still far below a kernel launch).
 *
 * @module
 */

/** ABI version this binding was written for (`LTE_ABI_VERSION` in lte.h). */
export const LTE_ABI_VERSION = 1;

/** Status codes (`lte_status`). */
export const Status = {
  OK: 0,
  INVALID_ARGUMENT: 1,
  OUT_OF_MEMORY: 2,
  UNSUPPORTED: 3,
  CUDA_ERROR: 4,
  BLAS_ERROR: 5,
  NO_DEVICE: 6,
  INTERNAL: 7,
} as const;

/** Native dtype codes (`lte_dtype`). */
export const DTypeCode = { f32: 0, f16: 1, bf16: 2, i32: 3, i8: 4 } as const;

/** Context options (`lte_ctx_set_option`). */
export const Option = { ALLOW_TF32: 1, MEMORY_LIMIT: 2, NUM_THREADS: 3, DETERMINISTIC: 4 } as const;

// FFI types. A C pointer is `P` (a device pointer, or a host pointer the library owns) unless it
// points into host memory that JS owns for the call: `B` ("buffer", a typed array). The rule the
// header follows and tests/ffi_symbols_test.ts enforces: a pointer is a buffer when its parameter
// name starts with `host_`, it is a pointer-to-pointer out-parameter (`T **out`), a `char *`, or a
// pointer to one of the ABI's structs (`lte_*_t *` other than `lte_ctx_t *`).
const P = "pointer" as const;
const B = "buffer" as const;
const I32 = "i32" as const;
const I64 = "i64" as const;
const U64 = "u64" as const;
const F32 = "f32" as const;
const S = "i32" as const; // lte_status result

/** The symbol table passed to `Deno.dlopen`: one entry per `LTE_API` function, one parameter per line. */
export const SYMBOLS = {
  // ------------------------------------------------------------ library and context
  lte_abi_version: {
    parameters: [],
    result: "u32", // uint32_t
  },
  lte_backend_name: {
    parameters: [],
    result: P, // const char *
  },
  lte_build_id: {
    parameters: [],
    result: P, // const char *
  },
  lte_status_string: {
    parameters: [
      I32, // lte_status status
    ],
    result: P, // const char *
  },
  lte_last_error: {
    parameters: [],
    result: P, // const char *
  },
  lte_ctx_create: {
    parameters: [
      I32, // int32_t device_index
      B, // lte_ctx_t **out
    ],
    result: S, // lte_status
  },
  lte_ctx_free: {
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: S, // lte_status
  },
  lte_ctx_last_error: {
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: P, // const char *
  },
  lte_ctx_synchronize: {
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: S, // lte_status
  },
  /** Same function, run on a worker thread so a server's event loop keeps running. */
  lte_ctx_synchronize_async: {
    name: "lte_ctx_synchronize",
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: S, // lte_status
    nonblocking: true,
  },
  lte_ctx_set_option: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // int32_t option
      I64, // int64_t value
    ],
    result: S, // lte_status
  },
  lte_ctx_device_info: {
    parameters: [
      P, // lte_ctx_t *ctx
      B, // char *buf
      I32, // int32_t len
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ memory
  lte_mem_alloc: {
    parameters: [
      P, // lte_ctx_t *ctx
      U64, // uint64_t bytes
      B, // void **out
    ],
    result: S, // lte_status
  },
  lte_mem_free: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *ptr
    ],
    result: S, // lte_status
  },
  lte_mem_stats: {
    parameters: [
      P, // lte_ctx_t *ctx
      B, // lte_mem_stats_t *out
    ],
    result: S, // lte_status
  },
  lte_mem_empty_cache: {
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: S, // lte_status
  },
  lte_mem_write: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *dst
      B, // const void *host_src
      U64, // uint64_t bytes
    ],
    result: S, // lte_status
  },
  lte_mem_read: {
    parameters: [
      P, // lte_ctx_t *ctx
      B, // void *host_dst
      P, // const void *src
      U64, // uint64_t bytes
    ],
    result: S, // lte_status
  },
  /** Same function, run on a worker thread (`Backend#readAsync`). */
  lte_mem_read_async: {
    name: "lte_mem_read",
    parameters: [
      P, // lte_ctx_t *ctx
      B, // void *host_dst
      P, // const void *src
      U64, // uint64_t bytes
    ],
    result: S, // lte_status
    nonblocking: true,
  },
  lte_mem_copy: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *dst
      P, // const void *src
      U64, // uint64_t bytes
    ],
    result: S, // lte_status
  },
  lte_host_alloc: {
    parameters: [
      P, // lte_ctx_t *ctx
      U64, // uint64_t bytes
      B, // void **out
    ],
    result: S, // lte_status
  },
  lte_host_free: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *ptr
    ],
    result: S, // lte_status
  },
  lte_mem_read_start: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *dst
      P, // const void *src
      U64, // uint64_t bytes
    ],
    result: S, // lte_status
  },
  lte_mem_read_wait: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // const void *dst
    ],
    result: S, // lte_status
  },
  /** Same function, run on a worker thread (`Backend#readWaitAsync`: the event loop keeps running). */
  lte_mem_read_wait_async: {
    name: "lte_mem_read_wait",
    parameters: [
      P, // lte_ctx_t *ctx
      P, // const void *dst
    ],
    result: S, // lte_status
    nonblocking: true,
  },
  lte_fill: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // void *x
      I64, // int64_t n
      F32, // float value
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ elementwise and reductions
  lte_add: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *a
      P, // const void *b
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_mul: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *a
      P, // const void *b
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_scale: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
      F32, // float alpha
      F32, // float beta
    ],
    result: S, // lte_status
  },
  lte_axpy: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
      F32, // float alpha
    ],
    result: S, // lte_status
  },
  lte_mul_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *a
      P, // const void *b
      P, // void *da
      P, // void *db
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_sum: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *out
      I64, // int64_t n
      I32, // int32_t accumulate
    ],
    result: S, // lte_status
  },
  lte_sum_squares: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *out
      I64, // int64_t n
      I32, // int32_t accumulate
    ],
    result: S, // lte_status
  },
  lte_broadcast_scalar_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dout
      P, // void *dx
      I64, // int64_t n
      F32, // float alpha
    ],
    result: S, // lte_status
  },
  lte_bias_add: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // const void *bias
      P, // void *y
      I64, // int64_t rows
      I64, // int64_t cols
    ],
    result: S, // lte_status
  },
  lte_sum_rows: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *out
      I64, // int64_t rows
      I64, // int64_t cols
      I32, // int32_t accumulate
    ],
    result: S, // lte_status
  },
  lte_copy_2d: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *src
      I64, // int64_t src_ld
      P, // void *dst
      I64, // int64_t dst_ld
      I64, // int64_t rows
      I64, // int64_t cols
      I32, // int32_t accumulate
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ activations
  lte_gelu_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_gelu_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *x
      P, // void *dx
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_silu_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_silu_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *x
      P, // void *dx
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_sigmoid_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_sigmoid_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *y
      P, // void *dx
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_swiglu_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *gate
      P, // const void *up
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_swiglu_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *gate
      P, // const void *up
      P, // void *dgate
      P, // void *dup
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_threshold: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *mask
      I64, // int64_t n
      F32, // float threshold
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ LTE routing
  lte_expert_scale_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *h
      P, // const void *g
      P, // void *y
      I64, // int64_t rows
      I32, // int32_t n_experts
      I32, // int32_t expert_size
    ],
    result: S, // lte_status
  },
  lte_expert_scale_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *h
      P, // const void *g
      P, // void *dh
      P, // void *dg
      I64, // int64_t rows
      I32, // int32_t n_experts
      I32, // int32_t expert_size
    ],
    result: S, // lte_status
  },
  lte_sep_penalty_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *g
      P, // void *y
      I64, // int64_t n
      F32, // float tau
      F32, // float eps
    ],
    result: S, // lte_status
  },
  lte_sep_penalty_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *g
      P, // void *dg
      I64, // int64_t n
      F32, // float tau
      F32, // float eps
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ normalisation
  lte_layernorm_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // const void *w
      P, // const void *b
      P, // void *y
      P, // void *mean
      P, // void *rstd
      I64, // int64_t rows
      I32, // int32_t cols
      F32, // float eps
    ],
    result: S, // lte_status
  },
  lte_layernorm_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *x
      P, // const void *w
      P, // const void *mean
      P, // const void *rstd
      P, // void *dx
      P, // void *dw
      P, // void *db
      I64, // int64_t rows
      I32, // int32_t cols
    ],
    result: S, // lte_status
  },
  lte_rmsnorm_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // const void *w
      P, // void *y
      P, // void *rstd
      I64, // int64_t rows
      I32, // int32_t cols
      F32, // float eps
    ],
    result: S, // lte_status
  },
  lte_rmsnorm_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // const void *x
      P, // const void *w
      P, // const void *rstd
      P, // void *dx
      P, // void *dw
      I64, // int64_t rows
      I32, // int32_t cols
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ matmul
  lte_matmul: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *a
      P, // const void *b
      P, // void *c
      I32, // int32_t batch
      I32, // int32_t m
      I32, // int32_t n
      I32, // int32_t k
      I32, // int32_t trans_a
      I32, // int32_t trans_b
      I64, // int64_t stride_a
      I64, // int64_t stride_b
      I64, // int64_t stride_c
      F32, // float alpha
      F32, // float beta
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ embedding
  lte_embedding_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const int32_t *ids
      P, // const void *weight
      P, // void *out
      I64, // int64_t n_tokens
      I32, // int32_t vocab
      I32, // int32_t dim
    ],
    result: S, // lte_status
  },
  lte_embedding_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const int32_t *ids
      P, // const void *dout
      P, // void *dweight
      I64, // int64_t n_tokens
      I32, // int32_t vocab
      I32, // int32_t dim
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ rotary position embedding
  lte_rope_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I32, // int32_t batch
      I32, // int32_t seq
      I32, // int32_t heads
      I32, // int32_t head_dim
      I32, // int32_t pos_offset
      F32, // float theta
    ],
    result: S, // lte_status
  },
  lte_rope_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dy
      P, // void *dx
      I32, // int32_t batch
      I32, // int32_t seq
      I32, // int32_t heads
      I32, // int32_t head_dim
      I32, // int32_t pos_offset
      F32, // float theta
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ attention
  lte_attention_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *q
      P, // const void *k
      P, // const void *v
      P, // void *out
      P, // void *probs
      I32, // int32_t batch
      I32, // int32_t seq
      I32, // int32_t heads
      I32, // int32_t kv_heads
      I32, // int32_t head_dim
      F32, // float scale
    ],
    result: S, // lte_status
  },
  lte_attention_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *dout
      P, // const void *q
      P, // const void *k
      P, // const void *v
      P, // const void *probs
      P, // void *dq
      P, // void *dk
      P, // void *dv
      I32, // int32_t batch
      I32, // int32_t seq
      I32, // int32_t heads
      I32, // int32_t kv_heads
      I32, // int32_t head_dim
      F32, // float scale
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ loss
  lte_cross_entropy_forward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *logits
      P, // const int32_t *targets
      P, // void *losses
      I64, // int64_t rows
      I32, // int32_t vocab
      I32, // int32_t ignore_index
    ],
    result: S, // lte_status
  },
  lte_cross_entropy_backward: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *logits
      P, // const int32_t *targets
      P, // const void *dlosses
      P, // void *dlogits
      I64, // int64_t rows
      I32, // int32_t vocab
      I32, // int32_t ignore_index
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ optimizer
  lte_adamw_step: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // void *param
      P, // const void *grad
      P, // void *m
      P, // void *v
      I64, // int64_t n
      F32, // float lr
      F32, // float beta1
      F32, // float beta2
      F32, // float eps
      F32, // float weight_decay
      F32, // float bias_correction1
      F32, // float bias_correction2
      F32, // float grad_scale
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ sampling
  lte_argmax: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // int32_t *out
      I64, // int64_t rows
      I32, // int32_t cols
    ],
    result: S, // lte_status
  },
  lte_sample_top_p: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *logits
      P, // int32_t *out
      I64, // int64_t rows
      I32, // int32_t vocab
      F32, // float temperature
      F32, // float top_p
      U64, // uint64_t seed
    ],
    result: S, // lte_status
  },
  // ------------------------------------------------------------ KERNELS: half precision and sparse FFN
  lte_convert: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype src_dtype
      P, // const void *src
      I32, // lte_dtype dst_dtype
      P, // void *dst
      I64, // int64_t rows
      I64, // int64_t cols
      I32, // int32_t transpose
    ],
    result: S, // lte_status
  },
  lte_sffn_workspace_size: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // int32_t batch
      I32, // int32_t d_model
      I32, // int32_t n_experts
      I32, // int32_t expert_size
      B, // uint64_t *host_bytes
    ],
    result: S, // lte_status
  },
  lte_sffn_route: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // const void *w_router
      P, // const void *b_router
      P, // float *logits
      P, // uint32_t *bits
      P, // int32_t *list
      P, // int32_t *counts
      P, // void *ws
      I32, // int32_t batch
      I32, // int32_t d_model
      I32, // int32_t n_experts
    ],
    result: S, // lte_status
  },
  lte_sffn_gate_up: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      I32, // lte_dtype x_dtype
      I32, // int32_t act
      P, // const void *x
      P, // const void *w_gate
      P, // const void *w_in
      P, // const void *b_in
      P, // const uint32_t *bits
      P, // const int32_t *list
      P, // const int32_t *counts
      P, // void *h
      P, // void *ws
      I32, // int32_t batch
      I32, // int32_t d_model
      I32, // int32_t n_experts
      I32, // int32_t expert_size
    ],
    result: S, // lte_status
  },
  lte_sffn_down: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      I32, // lte_dtype y_dtype
      P, // const void *h
      P, // const void *w_down_t
      P, // const void *b_down
      P, // const int32_t *list
      P, // const int32_t *counts
      P, // const void *residual
      P, // void *y
      P, // void *ws
      I32, // int32_t batch
      I32, // int32_t d_model
      I32, // int32_t n_experts
      I32, // int32_t expert_size
      I32, // int32_t variant
    ],
    result: S, // lte_status
  },
  lte_sffn_set_tuning: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // int32_t key
      I32, // int32_t value
    ],
    result: S, // lte_status
  },
  lte_sffn_dense_gemv: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // const void *w
      P, // void *y
      I32, // int32_t batch
      I32, // int32_t rows
      I32, // int32_t cols
    ],
    result: S, // lte_status
  },
  lte_sffn_dense_act: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      I32, // int32_t act
      P, // const void *gate
      P, // const void *up
      P, // void *h
      I64, // int64_t n
    ],
    result: S, // lte_status
  },

  // ------------------------------------------------------------ ENGINE: decode engine (engine/mod.ts)
  lte_dec_linear: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype wdtype
      P, // const void *w
      P, // const void *x
      I32, // int32_t ldx
      I32, // int32_t x_mode
      P, // const void *norm_w
      P, // const void *norm_b
      F32, // float eps
      P, // const void *in_mask
      P, // const void *out_mask
      I32, // int32_t out_period
      I32, // int32_t expert_size
      P, // const void *bias
      P, // void *y
      I32, // int32_t rows
      I32, // int32_t n
      I32, // int32_t k
      I32, // int32_t accumulate
      I32, // int32_t act
    ],
    result: S, // lte_status
  },
  lte_dec_linear_t_sparse: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype wdtype
      P, // const void *wt
      P, // const void *h
      P, // const void *mask
      P, // const void *bias
      P, // void *y
      I32, // int32_t rows
      I32, // int32_t n
      I32, // int32_t k
      I32, // int32_t expert_size
    ],
    result: S, // lte_status
  },
  lte_dec_norm: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // const void *x
      P, // const void *w
      P, // const void *b
      P, // void *y
      I32, // int32_t rows
      I32, // int32_t cols
      F32, // float eps
      I32, // int32_t kind
    ],
    result: S, // lte_status
  },
  lte_dec_embed: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype wdtype
      P, // const int32_t *ids
      P, // const int32_t *pos
      P, // const void *tok
      P, // const void *pos_table
      P, // void *out
      I32, // int32_t rows
      I32, // int32_t vocab
      I32, // int32_t n_pos
      I32, // int32_t dim
    ],
    result: S, // lte_status
  },
  lte_dec_rope_append: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype kvdtype
      P, // void *qkv
      I32, // int32_t ld
      P, // void *k_cache
      P, // void *v_cache
      P, // const int32_t *slots
      P, // const int32_t *pos
      I32, // int32_t rows
      I32, // int32_t heads
      I32, // int32_t kv_heads
      I32, // int32_t head_dim
      I32, // int32_t n_slots
      I32, // int32_t max_t
      F32, // float theta
    ],
    result: S, // lte_status
  },
  lte_dec_attention: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype kvdtype
      P, // const void *qkv
      I32, // int32_t ld
      P, // const void *k_cache
      P, // const void *v_cache
      P, // const int32_t *slots
      P, // const int32_t *pos
      P, // void *out
      I32, // int32_t rows
      I32, // int32_t heads
      I32, // int32_t kv_heads
      I32, // int32_t head_dim
      I32, // int32_t n_slots
      I32, // int32_t max_t
      F32, // float scale
    ],
    result: S, // lte_status
  },
  lte_dec_rope_attention: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype kvdtype
      P, // void *qkv
      I32, // int32_t ld
      P, // void *k_cache
      P, // void *v_cache
      P, // const int32_t *slots
      P, // const int32_t *pos
      P, // void *out
      I32, // int32_t rows
      I32, // int32_t heads
      I32, // int32_t kv_heads
      I32, // int32_t head_dim
      I32, // int32_t n_slots
      I32, // int32_t max_t
      F32, // float theta
      F32, // float scale
    ],
    result: S, // lte_status
  },
  lte_dec_router_mask: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // const void *logits
      P, // void *mask
      P, // int32_t *counts
      I32, // int32_t count_ld
      I32, // int32_t rows
      I32, // int32_t n_experts
      F32, // float threshold
    ],
    result: S, // lte_status
  },
  lte_dec_sparse_ffn: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype wdtype
      P, // void *x
      I32, // int32_t x_mode
      P, // const void *norm_w
      P, // const void *norm_b
      F32, // float eps
      P, // const void *w_router
      P, // const void *b_router
      F32, // float threshold
      P, // const void *w_fc
      P, // const void *b_fc
      P, // const void *w_down_t
      P, // const void *b_down
      P, // void *xn
      P, // void *mask
      P, // int32_t *counts
      I32, // int32_t rows
      I32, // int32_t d_model
      I32, // int32_t d_ff
      I32, // int32_t expert_size
      I32, // int32_t act
    ],
    result: S, // lte_status
  },
  lte_dec_sample: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // const void *logits
      P, // const void *temperature
      P, // const int32_t *top_k
      P, // const void *top_p
      P, // const uint64_t *seeds
      P, // int32_t *pos
      P, // int32_t *ids
      P, // int32_t *out
      P, // void *scratch
      I32, // int32_t rows
      I32, // int32_t vocab
      I32, // int32_t advance
    ],
    result: S, // lte_status
  },
  lte_dec_fill_random: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // void *x
      I64, // int64_t n
      U64, // uint64_t seed
      F32, // float scale
    ],
    result: S, // lte_status
  },
  lte_dec_convert: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *y
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_dec_convert_split: {
    parameters: [
      P, // lte_ctx_t *ctx
      I32, // lte_dtype dtype
      P, // const void *x
      P, // void *hi
      P, // void *lo
      I64, // int64_t n
    ],
    result: S, // lte_status
  },
  lte_graph_begin: {
    parameters: [
      P, // lte_ctx_t *ctx
    ],
    result: S, // lte_status
  },
  lte_graph_end: {
    parameters: [
      P, // lte_ctx_t *ctx
      B, // void **graph_out
    ],
    result: S, // lte_status
  },
  lte_graph_launch: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *graph
    ],
    result: S, // lte_status
  },
  lte_graph_free: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *graph
    ],
    result: S, // lte_status
  },
  lte_graph_time: {
    parameters: [
      P, // lte_ctx_t *ctx
      P, // void *graph
      I32, // int32_t warmup
      I32, // int32_t reps
      I32, // int32_t inner
      B, // float *host_us
    ],
    result: S, // lte_status
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The loaded library's typed symbols. Deno types 64-bit integer parameters as `bigint`, but also
 * accepts JS numbers at run time (the conversion costs ~0.2 µs, see docs/compute-core.md); element counts
 * are passed as numbers, so the parameter types are widened here.
 */
export type LteSymbols = Loosen<Deno.DynamicLibrary<typeof SYMBOLS>["symbols"]>;

type Loosen<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: { [I in keyof A]: A[I] extends bigint ? number | bigint : A[I] }) => R
    : T[K];
};
