/**
 * The one FFI symbol table of the native library: every function of `cuda/include/lte.h`, C names
 * unchanged, each parameter annotated with its C declaration. `tests/ffi_symbols_test.ts` checks
 * that this table and the header declare the same functions.
 *
 * Argument types follow the FFI cost measurements in `docs/ffi.md`: pointers and 32-bit integers
 * on hot paths; 64-bit element counts take JS numbers (a slower conversion, still far below a
 * kernel launch).
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
export const DTypeCode = { f32: 0, f16: 1, bf16: 2, i32: 3 } as const;

/** Context options (`lte_ctx_set_option`). */
export const Option = { ALLOW_TF32: 1, MEMORY_LIMIT: 2, NUM_THREADS: 3, DETERMINISTIC: 4 } as const;

const P = "pointer" as const;
const I32 = "i32" as const;
const I64 = "i64" as const;
const F32 = "f32" as const;
const S = "i32" as const; // lte_status result

/** The symbol table passed to `Deno.dlopen`. */
export const SYMBOLS = {
  // ------------------------------------------------------------ library and context
  lte_abi_version: { parameters: [], result: "u32" },
  lte_backend_name: { parameters: [], result: P },
  lte_build_id: { parameters: [], result: P },
  lte_status_string: { parameters: [I32 /* lte_status status */], result: P },
  lte_last_error: { parameters: [], result: P },
  lte_ctx_create: { parameters: [I32, /* int32_t device_index */ "buffer" /* lte_ctx_t **out */], result: S },
  lte_ctx_free: { parameters: [P /* lte_ctx_t *ctx */], result: S },
  lte_ctx_last_error: { parameters: [P /* lte_ctx_t *ctx */], result: P },
  lte_ctx_synchronize: { parameters: [P /* lte_ctx_t *ctx */], result: S },
  /** Same function, run on a worker thread so a server's event loop keeps running. */
  lte_ctx_synchronize_async: { name: "lte_ctx_synchronize", parameters: [P], result: S, nonblocking: true },
  lte_ctx_set_option: { parameters: [P, /* ctx */ I32, /* int32_t option */ I64 /* int64_t value */], result: S },
  lte_ctx_device_info: { parameters: [P, /* ctx */ "buffer", /* char *buf */ I32 /* int32_t len */], result: S },
  // ------------------------------------------------------------ memory
  lte_mem_alloc: { parameters: [P, /* ctx */ "u64", /* uint64_t bytes */ "buffer" /* void **out */], result: S },
  lte_mem_free: { parameters: [P, /* ctx */ P /* void *ptr */], result: S },
  lte_mem_stats: { parameters: [P, /* ctx */ "buffer" /* lte_mem_stats_t *out */], result: S },
  lte_mem_empty_cache: { parameters: [P /* ctx */], result: S },
  lte_mem_write: {
    parameters: [P, /* ctx */ P, /* void *dst */ "buffer", /* const void *host_src */ "u64"],
    result: S,
  },
  lte_mem_read: { parameters: [P, /* ctx */ "buffer", /* void *host_dst */ P, /* const void *src */ "u64"], result: S },
  lte_mem_read_async: {
    name: "lte_mem_read",
    parameters: [P, "buffer", P, "u64"],
    result: S,
    nonblocking: true,
  },
  lte_mem_copy: { parameters: [P, /* ctx */ P, /* void *dst */ P, /* const void *src */ "u64"], result: S },
  lte_fill: { parameters: [P, /* ctx */ I32, /* dtype */ P, /* void *x */ I64, /* n */ F32 /* value */], result: S },
  // ------------------------------------------------------------ elementwise and reductions
  lte_add: { parameters: [P, I32, P, /* a */ P, /* b */ P, /* y */ I64 /* n */], result: S },
  lte_mul: { parameters: [P, I32, P, /* a */ P, /* b */ P, /* y */ I64 /* n */], result: S },
  lte_scale: { parameters: [P, I32, P, /* x */ P, /* y */ I64, /* n */ F32, /* alpha */ F32 /* beta */], result: S },
  lte_axpy: { parameters: [P, I32, P, /* x */ P, /* y */ I64, /* n */ F32 /* alpha */], result: S },
  lte_mul_backward: {
    parameters: [P, I32, P, /* dy */ P, /* a */ P, /* b */ P, /* da */ P, /* db */ I64 /* n */],
    result: S,
  },
  lte_sum: { parameters: [P, I32, P, /* x */ P, /* out */ I64, /* n */ I32 /* accumulate */], result: S },
  lte_sum_squares: { parameters: [P, I32, P, /* x */ P, /* out */ I64, /* n */ I32 /* accumulate */], result: S },
  lte_broadcast_scalar_backward: {
    parameters: [P, I32, P, /* dout */ P, /* dx */ I64, /* n */ F32 /* alpha */],
    result: S,
  },
  lte_bias_add: { parameters: [P, I32, P, /* x */ P, /* bias */ P, /* y */ I64, /* rows */ I64 /* cols */], result: S },
  lte_sum_rows: {
    parameters: [P, I32, P, /* x */ P, /* out */ I64, /* rows */ I64, /* cols */ I32 /* accumulate */],
    result: S,
  },
  lte_copy_2d: {
    parameters: [
      P,
      I32,
      P, /* src */
      I64, /* src_ld */
      P, /* dst */
      I64, /* dst_ld */
      I64, /* rows */
      I64, /* cols */
      I32, /* accumulate */
    ],
    result: S,
  },
  // ------------------------------------------------------------ activations
  lte_gelu_forward: { parameters: [P, I32, P, /* x */ P, /* y */ I64 /* n */], result: S },
  lte_gelu_backward: { parameters: [P, I32, P, /* dy */ P, /* x */ P, /* dx */ I64 /* n */], result: S },
  lte_silu_forward: { parameters: [P, I32, P, /* x */ P, /* y */ I64 /* n */], result: S },
  lte_silu_backward: { parameters: [P, I32, P, /* dy */ P, /* x */ P, /* dx */ I64 /* n */], result: S },
  lte_sigmoid_forward: { parameters: [P, I32, P, /* x */ P, /* y */ I64 /* n */], result: S },
  lte_sigmoid_backward: { parameters: [P, I32, P, /* dy */ P, /* y */ P, /* dx */ I64 /* n */], result: S },
  lte_swiglu_forward: { parameters: [P, I32, P, /* gate */ P, /* up */ P, /* y */ I64 /* n */], result: S },
  lte_swiglu_backward: {
    parameters: [P, I32, P, /* dy */ P, /* gate */ P, /* up */ P, /* dgate */ P, /* dup */ I64 /* n */],
    result: S,
  },
  lte_threshold: { parameters: [P, I32, P, /* x */ P, /* mask */ I64, /* n */ F32 /* threshold */], result: S },
  // ------------------------------------------------------------ LTE routing
  lte_expert_scale_forward: {
    parameters: [P, I32, P, /* h */ P, /* g */ P, /* y */ I64, /* rows */ I32, /* n_experts */ I32 /* expert_size */],
    result: S,
  },
  lte_expert_scale_backward: {
    parameters: [P, I32, P, /* dy */ P, /* h */ P, /* g */ P, /* dh */ P, /* dg */ I64, /* rows */ I32, I32],
    result: S,
  },
  // ------------------------------------------------------------ normalisation
  lte_layernorm_forward: {
    parameters: [
      P,
      I32,
      P, /* x */
      P, /* w */
      P, /* b */
      P, /* y */
      P, /* mean */
      P, /* rstd */
      I64, /* rows */
      I32, /* cols */
      F32, /* eps */
    ],
    result: S,
  },
  lte_layernorm_backward: {
    parameters: [
      P,
      I32,
      P, /* dy */
      P, /* x */
      P, /* w */
      P, /* mean */
      P, /* rstd */
      P, /* dx */
      P, /* dw */
      P, /* db */
      I64, /* rows */
      I32, /* cols */
    ],
    result: S,
  },
  lte_rmsnorm_forward: {
    parameters: [P, I32, P, /* x */ P, /* w */ P, /* y */ P, /* rstd */ I64, /* rows */ I32, /* cols */ F32 /* eps */],
    result: S,
  },
  lte_rmsnorm_backward: {
    parameters: [
      P,
      I32,
      P, /* dy */
      P, /* x */
      P, /* w */
      P, /* rstd */
      P, /* dx */
      P, /* dw */
      I64, /* rows */
      I32, /* cols */
    ],
    result: S,
  },
  // ------------------------------------------------------------ matmul
  lte_matmul: {
    parameters: [
      P,
      I32,
      P, /* a */
      P, /* b */
      P, /* c */
      I32, /* batch */
      I32, /* m */
      I32, /* n */
      I32, /* k */
      I32, /* trans_a */
      I32, /* trans_b */
      I64, /* stride_a */
      I64, /* stride_b */
      I64, /* stride_c */
      F32, /* alpha */
      F32, /* beta */
    ],
    result: S,
  },
  // ------------------------------------------------------------ embedding
  lte_embedding_forward: {
    parameters: [
      P,
      I32,
      P, /* const int32_t *ids */
      P, /* weight */
      P, /* out */
      I64, /* n_tokens */
      I32, /* vocab */
      I32, /* dim */
    ],
    result: S,
  },
  lte_embedding_backward: {
    parameters: [
      P,
      I32,
      P, /* ids */
      P, /* dout */
      P, /* dweight */
      I64, /* n_tokens */
      I32, /* vocab */
      I32, /* dim */
    ],
    result: S,
  },
  // ------------------------------------------------------------ rotary position embedding
  lte_rope_forward: {
    parameters: [
      P,
      I32,
      P, /* x */
      P, /* y */
      I32, /* batch */
      I32, /* seq */
      I32, /* heads */
      I32, /* head_dim */
      I32, /* pos_offset */
      F32, /* theta */
    ],
    result: S,
  },
  lte_rope_backward: {
    parameters: [P, I32, P, /* dy */ P, /* dx */ I32, I32, I32, I32, I32, F32],
    result: S,
  },
  // ------------------------------------------------------------ attention
  lte_attention_forward: {
    parameters: [
      P,
      I32,
      P, /* q */
      P, /* k */
      P, /* v */
      P, /* out */
      P, /* probs */
      I32, /* batch */
      I32, /* seq */
      I32, /* heads */
      I32, /* kv_heads */
      I32, /* head_dim */
      F32, /* scale */
    ],
    result: S,
  },
  lte_attention_backward: {
    parameters: [
      P,
      I32,
      P, /* dout */
      P, /* q */
      P, /* k */
      P, /* v */
      P, /* probs */
      P, /* dq */
      P, /* dk */
      P, /* dv */
      I32, /* batch */
      I32, /* seq */
      I32, /* heads */
      I32, /* kv_heads */
      I32, /* head_dim */
      F32, /* scale */
    ],
    result: S,
  },
  // ------------------------------------------------------------ loss
  lte_cross_entropy_forward: {
    parameters: [
      P,
      I32,
      P, /* logits */
      P, /* const int32_t *targets */
      P, /* losses */
      I64, /* rows */
      I32, /* vocab */
      I32, /* ignore_index */
    ],
    result: S,
  },
  lte_cross_entropy_backward: {
    parameters: [
      P,
      I32,
      P, /* logits */
      P, /* targets */
      P, /* dlosses */
      P, /* dlogits */
      I64, /* rows */
      I32, /* vocab */
      I32, /* ignore_index */
    ],
    result: S,
  },
  // ------------------------------------------------------------ optimizer
  lte_adamw_step: {
    parameters: [
      P,
      I32,
      P, /* param */
      P, /* grad */
      P, /* m */
      P, /* v */
      I64, /* n */
      F32, /* lr */
      F32, /* beta1 */
      F32, /* beta2 */
      F32, /* eps */
      F32, /* weight_decay */
      F32, /* bias_correction1 */
      F32, /* bias_correction2 */
      F32, /* grad_scale */
    ],
    result: S,
  },
  // ------------------------------------------------------------ sampling
  lte_argmax: { parameters: [P, I32, P, /* x */ P, /* int32_t *out */ I64, /* rows */ I32 /* cols */], result: S },
  lte_sample_top_p: {
    parameters: [
      P,
      I32,
      P, /* logits */
      P, /* int32_t *out */
      I64, /* rows */
      I32, /* vocab */
      F32, /* temperature */
      F32, /* top_p */
      "u64", /* uint64_t seed */
    ],
    result: S,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The loaded library's typed symbols. Deno types 64-bit integer parameters as `bigint`, but also
 * accepts JS numbers at run time (the conversion costs ~0.2 µs, see docs/ffi.md); element counts
 * are passed as numbers, so the parameter types are widened here.
 */
export type LteSymbols = Loosen<Deno.DynamicLibrary<typeof SYMBOLS>["symbols"]>;

type Loosen<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: { [I in keyof A]: A[I] extends bigint ? number | bigint : A[I] }) => R
    : T[K];
};
