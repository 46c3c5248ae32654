/*
 * lte.h: the one public C ABI of the LTE Pipeline native compute library.
 *
 * Two shared libraries implement this header with identical semantics:
 *   build/liblte_cpu.so   the CPU reference backend (C files in cuda/cpu/, readable loops, OpenMP)
 *   build/liblte_cuda.so  the CUDA backend (.cu files in cuda/cuda/; cuBLAS loaded at run time)
 * The Deno side (ffi/symbols.ts) mirrors every declaration below, C names unchanged, one parameter
 * per line with its C declaration as the comment; tests/ffi_symbols_test.ts parses this header and
 * checks each parameter and result type (it prints the entry to add for a new function). Pointer
 * parameters are FFI "pointer" (device memory, the context) except where JS owns the host memory
 * for the call, FFI "buffer": a name starting with host_, a T ** out-parameter, char *, or a pointer
 * to one of the structs below (lte_*_t * other than lte_ctx_t *). Name new host arrays host_*.
 *
 * Conventions (read these before adding an op):
 *   - Every function except the four info getters returns lte_status. Nothing here ever calls
 *     exit() or abort(): errors become a status plus a message readable through
 *     lte_ctx_last_error(ctx) (or lte_last_error() for calls that have no context yet).
 *   - Tensors are plain device pointers (host pointers on the CPU backend) obtained from
 *     lte_mem_alloc. Layout is row-major and contiguous unless a stride argument says otherwise.
 *     Shapes are given in comments with this legend:
 *       B = batch, T = sequence length, C = channels (d_model), H = query heads,
 *       HKV = key/value heads, D = head dim, V = vocab, R = rows, N = experts, S = expert size.
 *   - Every op takes a dtype (lte_dtype). Only LTE_DTYPE_F32 is implemented today for float data;
 *     other float dtypes return LTE_STATUS_UNSUPPORTED until their kernels land, so half precision
 *     can be added without changing any signature. Index tensors (token ids, targets, argmax
 *     output) are always int32.
 *   - Backward functions ACCUMULATE into gradient outputs (dx += ...), so autograd can sum the
 *     contributions of several consumers and gradient accumulation over micro-batches is free.
 *     A gradient output pointer may be NULL when that gradient is not needed.
 *   - Forward functions OVERWRITE their outputs. In-place (y == x) is allowed for elementwise ops.
 *   - Work is queued on the context's stream (CUDA) and may still be running when a call returns.
 *     lte_mem_read and lte_ctx_synchronize wait for it; asynchronous kernel errors (including
 *     out-of-range token ids detected on the device) are reported by the next synchronizing call.
 */
#ifndef LTE_H
#define LTE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LTE_API __declspec(dllexport)
#else
#define LTE_API __attribute__((visibility("default")))
#endif

/* Bumped on every incompatible change of this header; ffi/symbols.ts checks it at load time. */
#define LTE_ABI_VERSION 1

typedef int32_t lte_status;
enum {
  LTE_STATUS_OK = 0,
  LTE_STATUS_INVALID_ARGUMENT = 1, /* bad shape, null pointer, out-of-range index or option */
  LTE_STATUS_OUT_OF_MEMORY = 2,    /* allocation failed even after emptying the cache */
  LTE_STATUS_UNSUPPORTED = 3,      /* dtype or feature not implemented by this backend */
  LTE_STATUS_CUDA_ERROR = 4,       /* a CUDA runtime/driver call failed; message names it */
  LTE_STATUS_BLAS_ERROR = 5,       /* a cuBLAS call failed or cuBLAS could not be loaded */
  LTE_STATUS_NO_DEVICE = 6,        /* no usable device (no GPU, no driver, bad index) */
  LTE_STATUS_INTERNAL = 7          /* a bug in this library */
};

typedef int32_t lte_dtype;
enum {
  LTE_DTYPE_F32 = 0,
  LTE_DTYPE_F16 = 1, /* reserved: serving kernels */
  LTE_DTYPE_BF16 = 2, /* reserved: mixed-precision training */
  LTE_DTYPE_I32 = 3,
  LTE_DTYPE_I8 = 4 /* the decode engine's KV cache only (kvdtype): int8 values + f32 scales, see there */
};

/* Context options for lte_ctx_set_option. */
enum {
  LTE_OPTION_ALLOW_TF32 = 1,      /* CUDA: 1 lets cuBLAS use TF32 tensor cores for f32 matmul (default 0) */
  LTE_OPTION_MEMORY_LIMIT = 2,    /* bytes; allocations beyond this many bytes in use fail with
                                     LTE_STATUS_OUT_OF_MEMORY (0 = no limit, the default) */
  LTE_OPTION_NUM_THREADS = 3,     /* CPU: worker threads (0 = all cores, the default) */
  LTE_OPTION_DETERMINISTIC = 4    /* CUDA: 1 avoids atomics in reductions where an alternative exists */
};

/* Opaque context: device, stream, BLAS handle, caching allocator, last error. */
typedef struct lte_ctx lte_ctx_t;

/* Memory statistics filled by lte_mem_stats (all in bytes except counts). */
typedef struct lte_mem_stats {
  uint64_t bytes_in_use;    /* currently handed out by lte_mem_alloc */
  uint64_t bytes_cached;    /* freed blocks kept for reuse (CUDA caching allocator) */
  uint64_t peak_bytes_in_use;
  uint64_t num_allocs;      /* live allocations */
  uint64_t device_total;    /* device memory size (0 on CPU) */
  uint64_t device_free;     /* device free memory as reported by the driver (0 on CPU) */
} lte_mem_stats_t;

/* ---------------------------------------------------------------- library and context */

LTE_API uint32_t lte_abi_version(void);
/* "cpu" or "cuda". */
LTE_API const char *lte_backend_name(void);
/* Build id: a hash of the sources the library was compiled from (set by cuda/build.ts). */
LTE_API const char *lte_build_id(void);
LTE_API const char *lte_status_string(lte_status status);
/* Message of the last failed call on this thread (calls without a context, e.g. ctx_create). */
LTE_API const char *lte_last_error(void);

/* device_index: GPU ordinal for CUDA, ignored on CPU. */
LTE_API lte_status lte_ctx_create(int32_t device_index, lte_ctx_t **out);
/* Frees the context and every block it cached. Live allocations are released too. */
LTE_API lte_status lte_ctx_free(lte_ctx_t *ctx);
/* Message of the last failed call on this context ("" if none). Valid until the next failure. */
LTE_API const char *lte_ctx_last_error(lte_ctx_t *ctx);
LTE_API lte_status lte_ctx_synchronize(lte_ctx_t *ctx);
LTE_API lte_status lte_ctx_set_option(lte_ctx_t *ctx, int32_t option, int64_t value);
/* Writes a NUL-terminated JSON object describing the device into buf (truncated to len). */
LTE_API lte_status lte_ctx_device_info(lte_ctx_t *ctx, char *buf, int32_t len);

/* ---------------------------------------------------------------- memory */

/* Allocates bytes (>0) aligned to 256 bytes. Contents are undefined. */
LTE_API lte_status lte_mem_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out);
/* Returns a block to the cache. NULL is a no-op. A pointer not from this ctx is an error. */
LTE_API lte_status lte_mem_free(lte_ctx_t *ctx, void *ptr);
LTE_API lte_status lte_mem_stats(lte_ctx_t *ctx, lte_mem_stats_t *out);
/* Releases cached (free) blocks back to the device. */
LTE_API lte_status lte_mem_empty_cache(lte_ctx_t *ctx);
/* host -> device. Synchronous with respect to host memory (src may be reused on return). */
LTE_API lte_status lte_mem_write(lte_ctx_t *ctx, void *dst, const void *host_src, uint64_t bytes);
/* device -> host. Waits for queued work. */
LTE_API lte_status lte_mem_read(lte_ctx_t *ctx, void *host_dst, const void *src, uint64_t bytes);
/* device -> device. */
LTE_API lte_status lte_mem_copy(lte_ctx_t *ctx, void *dst, const void *src, uint64_t bytes);
/* Pinned host staging and stream-ordered reads (the decode engine's lookahead: the read of step t's
   tokens overlaps step t+1 on the device).
   lte_host_alloc: bytes (> 0) of page-locked host memory (CUDA: cudaHostAlloc; CPU: malloc) with
     its own completion event; not counted by lte_mem_stats. Freed by lte_host_free or with ctx.
   lte_mem_read_start: queues a copy of bytes from device memory src to dst, which must lie in a
     block of lte_host_alloc (dst + bytes inside it), behind the work already queued, and records
     the block's event after it; returns at once (CPU: copies at once, its ops are synchronous).
     Not allowed during graph capture.
   lte_mem_read_wait: waits until the last lte_mem_read_start into dst's block has completed, not
     for work queued after it (OK at once if none was started). ptr/dst may point anywhere inside a
     block. Safe from another thread (the engine calls it as a nonblocking FFI call). Device-side
     index errors are not checked here (lte_ctx_synchronize / lte_mem_read report them).
   lte_host_free: waits for a pending read into the block, then frees it; NULL is a no-op; ptr
     must be the pointer lte_host_alloc returned. */
LTE_API lte_status lte_host_alloc(lte_ctx_t *ctx, uint64_t bytes, void **out);
LTE_API lte_status lte_host_free(lte_ctx_t *ctx, void *ptr);
LTE_API lte_status lte_mem_read_start(lte_ctx_t *ctx, void *dst, const void *src, uint64_t bytes);
LTE_API lte_status lte_mem_read_wait(lte_ctx_t *ctx, const void *dst);
/* x[0..n) = value (converted to dtype; I32 truncates). */
LTE_API lte_status lte_fill(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, float value);

/* ---------------------------------------------------------------- elementwise and reductions */

/* y = a + b            a, b, y: (n) */
LTE_API lte_status lte_add(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y, int64_t n);
/* y = a * b            a, b, y: (n) */
LTE_API lte_status lte_mul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *y, int64_t n);
/* y = alpha * x + beta  x, y: (n) */
LTE_API lte_status lte_scale(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n, float alpha, float beta);
/* y += alpha * x       x, y: (n)   (gradient accumulation) */
LTE_API lte_status lte_axpy(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n, float alpha);
/* mul backward: da += dy * b, db += dy * a (either may be NULL) */
LTE_API lte_status lte_mul_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *a, const void *b,
                                    void *da, void *db, int64_t n);
/* out[0] = (accumulate ? out[0] : 0) + sum(x)        x: (n), out: (1) */
LTE_API lte_status lte_sum(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n, int32_t accumulate);
/* out[0] = (accumulate ? out[0] : 0) + sum(x^2)      (global grad norm) */
LTE_API lte_status lte_sum_squares(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t n,
                                   int32_t accumulate);
/* dx[i] += alpha * dout[0] for i < n    (backward of sum/mean; dout is a device scalar) */
LTE_API lte_status lte_broadcast_scalar_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout, void *dx,
                                                 int64_t n, float alpha);
/* y[r, c] = x[r, c] + bias[c]        x, y: (R, cols), bias: (cols) */
LTE_API lte_status lte_bias_add(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *bias, void *y,
                                int64_t rows, int64_t cols);
/* out[c] = (accumulate ? out[c] : 0) + sum_r x[r, c]    x: (R, cols)  (bias gradient) */
LTE_API lte_status lte_sum_rows(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *out, int64_t rows,
                                int64_t cols, int32_t accumulate);
/* 2-D strided block copy: dst[r*dst_ld + c] (= or +=) src[r*src_ld + c], r < rows, c < cols.
   Used to slice fused projections (GPT-2 c_attn) and for their backward (accumulate = 1). */
LTE_API lte_status lte_copy_2d(lte_ctx_t *ctx, lte_dtype dtype, const void *src, int64_t src_ld, void *dst,
                               int64_t dst_ld, int64_t rows, int64_t cols, int32_t accumulate);

/* ---------------------------------------------------------------- activations */

/* GELU, tanh approximation: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (n) */
LTE_API lte_status lte_gelu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n);
LTE_API lte_status lte_gelu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x, void *dx,
                                     int64_t n);
/* SiLU: y = x * sigmoid(x)  (n) */
LTE_API lte_status lte_silu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n);
LTE_API lte_status lte_silu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x, void *dx,
                                     int64_t n);
/* Sigmoid: y = 1 / (1 + exp(-x)); backward uses the saved output y: dx += dy * y * (1 - y) */
LTE_API lte_status lte_sigmoid_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n);
LTE_API lte_status lte_sigmoid_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *y, void *dx,
                                        int64_t n);
/* SwiGLU product: y = silu(gate) * up     gate, up, y: (n) */
LTE_API lte_status lte_swiglu_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *gate, const void *up, void *y,
                                      int64_t n);
LTE_API lte_status lte_swiglu_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *gate,
                                       const void *up, void *dgate, void *dup, int64_t n);
/* mask[i] = x[i] > threshold ? 1 : 0   (hard expert selection; strict comparison, no gradient).
   mask has the dtype of x. */
LTE_API lte_status lte_threshold(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *mask, int64_t n,
                                 float threshold);

/* ---------------------------------------------------------------- LTE routing */

/* Per-neuron scaling by a per-expert vector repeated over each expert's S neurons:
     y[r, e*S + j] = h[r, e*S + j] * g[r, e]       h, y: (R, N*S), g: (R, N)
   g is the soft router score (stage 1) or a hard 0/1 mask (stage 2, pass dg = NULL). */
LTE_API lte_status lte_expert_scale_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *h, const void *g, void *y,
                                            int64_t rows, int32_t n_experts, int32_t expert_size);
/* dh[r, e*S+j] += dy[r, e*S+j] * g[r, e];  dg[r, e] += sum_j dy[r, e*S+j] * h[r, e*S+j] */
LTE_API lte_status lte_expert_scale_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *h,
                                             const void *g, void *dh, void *dg, int64_t rows, int32_t n_experts,
                                             int32_t expert_size);
/* LTE separability penalty (stage 1), elementwise over router scores g (eps > 0):
     y[i] = 1 / ((g[i] - tau)^2 + eps);   dg[i] += dy[i] * -2 (g[i] - tau) / ((g[i] - tau)^2 + eps)^2 */
LTE_API lte_status lte_sep_penalty_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *g, void *y, int64_t n,
                                           float tau, float eps);
LTE_API lte_status lte_sep_penalty_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *g, void *dg,
                                            int64_t n, float tau, float eps);

/* ---------------------------------------------------------------- normalisation */

/* LayerNorm over the last dim: y = (x - mean) * rstd * w + b.
   x, y: (R, cols); w, b: (cols); mean, rstd: (R) saved for backward. b may be NULL. */
LTE_API lte_status lte_layernorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w,
                                         const void *b, void *y, void *mean, void *rstd, int64_t rows,
                                         int32_t cols, float eps);
LTE_API lte_status lte_layernorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                          const void *w, const void *mean, const void *rstd, void *dx, void *dw,
                                          void *db, int64_t rows, int32_t cols);
/* RMSNorm over the last dim: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). rstd: (R) saved. */
LTE_API lte_status lte_rmsnorm_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w, void *y,
                                       void *rstd, int64_t rows, int32_t cols, float eps);
LTE_API lte_status lte_rmsnorm_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, const void *x,
                                        const void *w, const void *rstd, void *dx, void *dw, int64_t rows,
                                        int32_t cols);

/* ---------------------------------------------------------------- matmul */

/* Batched GEMM:  C[i] = alpha * op(A[i]) @ op(B[i]) + beta * C[i],  i < batch
     op(A[i]): (m, k): A[i] is stored (m, k) row-major, or (k, m) when trans_a = 1
     op(B[i]): (k, n): B[i] is stored (k, n) row-major, or (n, k) when trans_b = 1
     C[i]: (m, n) row-major. Element strides between batch items may be 0 (broadcast a weight).
   beta = 1 accumulates (used by backward). CUDA: cuBLAS, TF32 only if LTE_OPTION_ALLOW_TF32. */
LTE_API lte_status lte_matmul(lte_ctx_t *ctx, lte_dtype dtype, const void *a, const void *b, void *c, int32_t batch,
                              int32_t m, int32_t n, int32_t k, int32_t trans_a, int32_t trans_b, int64_t stride_a,
                              int64_t stride_b, int64_t stride_c, float alpha, float beta);

/* ---------------------------------------------------------------- embedding */

/* out[t, :] = weight[ids[t], :]     ids: (n_tokens) int32, weight: (V, C), out: (n_tokens, C)
   An id outside [0, V) is LTE_STATUS_INVALID_ARGUMENT (on CUDA: reported by the next sync). */
LTE_API lte_status lte_embedding_forward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids, const void *weight,
                                         void *out, int64_t n_tokens, int32_t vocab, int32_t dim);
/* dweight[ids[t], :] += dout[t, :]   (scatter-add) */
LTE_API lte_status lte_embedding_backward(lte_ctx_t *ctx, lte_dtype dtype, const int32_t *ids, const void *dout,
                                          void *dweight, int64_t n_tokens, int32_t vocab, int32_t dim);

/* ---------------------------------------------------------------- rotary position embedding */

/* RoPE, Hugging Face LLaMA convention ("rotate_half": pairs (i, i + D/2)), in place allowed.
     x, y: (B, T, H, D); position of token t is pos_offset + t; frequency i: theta^(-2i/D).
   backward applies the inverse rotation and accumulates: dx += R^T dy. */
LTE_API lte_status lte_rope_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int32_t batch,
                                    int32_t seq, int32_t heads, int32_t head_dim, int32_t pos_offset, float theta);
LTE_API lte_status lte_rope_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dy, void *dx, int32_t batch,
                                     int32_t seq, int32_t heads, int32_t head_dim, int32_t pos_offset, float theta);

/* ---------------------------------------------------------------- attention */

/* Causal multi-head self-attention with grouped-query heads (H % HKV == 0; query head h reads
   key/value head h / (H / HKV)).
     q: (B, T, H, D), k, v: (B, T, HKV, D), out: (B, T, H, D)
     probs: (B, H, T, T) softmax(scale * q k^T + causal mask), saved for backward
            (entries above the diagonal are written as 0).
   scale is usually 1/sqrt(D). */
LTE_API lte_status lte_attention_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *q, const void *k,
                                         const void *v, void *out, void *probs, int32_t batch, int32_t seq,
                                         int32_t heads, int32_t kv_heads, int32_t head_dim, float scale);
/* Accumulates dq, dk, dv (shapes as q, k, v). */
LTE_API lte_status lte_attention_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *dout, const void *q,
                                          const void *k, const void *v, const void *probs, void *dq, void *dk,
                                          void *dv, int32_t batch, int32_t seq, int32_t heads, int32_t kv_heads,
                                          int32_t head_dim, float scale);

/* ---------------------------------------------------------------- loss */

/* Softmax cross-entropy per row:  losses[r] = logsumexp(logits[r, :]) - logits[r, targets[r]]
   and losses[r] = 0 where targets[r] == ignore_index.   logits: (R, V), targets: (R) int32,
   losses: (R). A target outside [0, V) that is not ignore_index is LTE_STATUS_INVALID_ARGUMENT. */
LTE_API lte_status lte_cross_entropy_forward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                             const int32_t *targets, void *losses, int64_t rows, int32_t vocab,
                                             int32_t ignore_index);
/* dlogits[r, :] += dlosses[r] * (softmax(logits[r, :]) - onehot(targets[r])); ignored rows get 0. */
LTE_API lte_status lte_cross_entropy_backward(lte_ctx_t *ctx, lte_dtype dtype, const void *logits,
                                              const int32_t *targets, const void *dlosses, void *dlogits,
                                              int64_t rows, int32_t vocab, int32_t ignore_index);

/* ---------------------------------------------------------------- optimizer */

/* AdamW with decoupled weight decay, one tensor (n elements):
     g = grad * grad_scale                    (grad_scale carries global-norm clipping)
     m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
     param -= lr * ( (m / bias_correction1) / (sqrt(v / bias_correction2) + eps) + weight_decay * param )
   bias_correction1 = 1 - beta1^step, bias_correction2 = 1 - beta2^step (computed by the caller). */
LTE_API lte_status lte_adamw_step(lte_ctx_t *ctx, lte_dtype dtype, void *param, const void *grad, void *m, void *v,
                                  int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                  float bias_correction1, float bias_correction2, float grad_scale);

/* ---------------------------------------------------------------- sampling */

/* out[r] = argmax_c x[r, c] (lowest index among ties)    x: (R, cols), out: (R) int32 */
LTE_API lte_status lte_argmax(lte_ctx_t *ctx, lte_dtype dtype, const void *x, int32_t *out, int64_t rows,
                              int32_t cols);
/* Nucleus sampling per row of logits, defined so that both backends agree without a full sort:
     p = softmax(logits[r, :] / temperature)
     p_cut = the largest probability value such that sum of { p_i : p_i >= p_cut } >= top_p
     kept  = { i : p_i >= p_cut }   (all ties at the cut are kept)
     u = lte_uniform(seed, r) * sum_{i in kept} p_i
     out[r] = the first kept index i, walking indices in increasing order, whose running kept
              mass exceeds u (the last kept index if rounding leaves none).
   logits: (R, V), out: (R) int32; temperature > 0, 0 < top_p <= 1. Deterministic for a seed. */
LTE_API lte_status lte_sample_top_p(lte_ctx_t *ctx, lte_dtype dtype, const void *logits, int32_t *out,
                                    int64_t rows, int32_t vocab, float temperature, float top_p, uint64_t seed);

/* ================================================================ KERNELS: half precision and sparse FFN
 * (owner: KERNELS, issue 9; CPU reference cuda/cpu/half.c + sparse_ffn.c, CUDA cuda/cuda/half.cu +
 * sparse_ffn.cu; TS wrapper engine/ffn_kernels.ts; design and numbers in docs/engine.md.)
 *
 * Inference-only ops on half-precision weights. dtype is the storage type of weights, x, y and h:
 * LTE_DTYPE_F16, LTE_DTYPE_BF16 or LTE_DTYPE_F32; every product is accumulated in fp32.
 * Legend: B = tokens in the step (1..16), C = d_model, N = experts per layer, S = expert size,
 * F = N * S = d_ff, P = |union of the B tokens' active experts| (a device value, never read back).
 * Shape rules (both backends): C % 64 == 0, S % 16 == 0, 1 <= B <= LTE_SFFN_MAX_BATCH.
 * Expert e owns neurons [e*S, (e+1)*S): rows of w_gate / w_in (F, C) as stored by HF (GPT-2 c_fc
 * transposed once at load) and rows of w_down_t (F, C) = HF down_proj (C, F) transposed once.
 *
 * One FFN block = lte_sffn_route -> lte_sffn_gate_up -> lte_sffn_down, all on the device: no host
 * sync, no allocation, launch sizes fixed by (B, C, N, S) (kernels launched for all N experts exit
 * early past P), so the three calls can be captured in a CUDA graph. `ws` is a workspace of
 * lte_sffn_workspace_size bytes that must be ZERO-FILLED ONCE after allocation (lte_fill with
 * LTE_DTYPE_I32, value 0); the kernels leave it zeroed again. One ws serves every layer of a
 * stream (calls are ordered); two streams need two. */
#define LTE_SFFN_MAX_BATCH 16
enum {
  LTE_SFFN_ACT_SILU_MUL = 0, /* LLaMA: h = silu(x W_gate^T) * (x W_in^T + b_in) */
  LTE_SFFN_ACT_GELU = 1      /* GPT-2: h = gelu_tanh(x W_in^T + b_in); w_gate unused (NULL) */
};
enum {
  LTE_SFFN_DOWN_AUTO = 0,   /* the measured default (docs/engine.md "Sparse FFN kernels") */
  LTE_SFFN_DOWN_ATOMIC = 1, /* row chunks x column tiles, fp32 atomics into ws, last block finishes */
  LTE_SFFN_DOWN_SPLITK = 2  /* row chunks write fp32 partials into ws, last block per tile sums them */
};

/* f32 <-> f16 <-> bf16 conversion (round to nearest even; NaN stays NaN), optionally transposed:
     dst = transpose ? src^T : src       src: (rows, cols), dst: (rows, cols) or (cols, rows)
   Used once at load time (HF down_proj (C, F) -> w_down_t (F, C); GPT-2 c_fc (C, F) -> w_in). */
LTE_API lte_status lte_convert(lte_ctx_t *ctx, lte_dtype src_dtype, const void *src, lte_dtype dst_dtype, void *dst,
                               int64_t rows, int64_t cols, int32_t transpose);

/* Bytes of workspace for these sizes on this context's device (host_bytes[0]). */
LTE_API lte_status lte_sffn_workspace_size(lte_ctx_t *ctx, int32_t batch, int32_t d_model, int32_t n_experts,
                                           int32_t expert_size, uint64_t *host_bytes);

/* Router GEMV + strict threshold + compaction.
     logits[b, e] = x[b, :] . w_router[e, :] + (b_router ? b_router[e] : 0)      (f32, (B, N))
     token b selects expert e  <=>  logits[b, e] > 0   (sigmoid > 0.5; strict)
     bits[e]  = sum over b of (selected(b, e) << b)                               (u32, (N))
     list[0..P) = the experts with bits != 0 in increasing order (the union)      (i32, (N); rest -1)
     counts[b] = experts selected by token b, counts[B] = P                       (i32, (B + 1))
   (CUDA with LTE_SFFN_TUNE_LOCAL_LIST: list and counts are written by lte_sffn_gate_up instead.)
   w_router == NULL: dense (every expert selected by every token, logits = 0). b_router may be NULL.
   x, w_router, b_router: dtype (the activation dtype: F32 keeps the routers exact). */
LTE_API lte_status lte_sffn_route(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w_router,
                                  const void *b_router, float *logits, uint32_t *bits, int32_t *list, int32_t *counts,
                                  void *ws, int32_t batch, int32_t d_model, int32_t n_experts);

/* Fused gather-GEMV over the union's experts, activation and per-token mask:
     for p < P, e = list[p], j < S, n = e*S + j:
       h[b, p*S + j] = selected(b, e) ? act(x[b, :] . w_gate[n, :], x[b, :] . w_in[n, :] + b_in[n]) : 0
   h: (B, F) dtype, only the first P*S columns of each row are written. w_gate: (F, C) (NULL for
   GELU); w_in: (F, C); b_in: (F) or NULL, all dtype. x: (B, C) in x_dtype = dtype or F32 (an
   engine that keeps f32 activations passes them as they are; they are rounded to dtype before the
   products, the tensor cores' input). Reads only the rows of the P listed experts. */
LTE_API lte_status lte_sffn_gate_up(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype x_dtype, int32_t act, const void *x,
                                    const void *w_gate, const void *w_in, const void *b_in, const uint32_t *bits,
                                    const int32_t *list, const int32_t *counts, void *h, void *ws, int32_t batch,
                                    int32_t d_model, int32_t n_experts, int32_t expert_size);

/* Down projection over the union's rows of the transposed down weight, plus bias and residual:
     y[b, :] = (residual ? residual[b, :] : 0) + (b_down ? b_down : 0)
               + sum_{p < P} sum_{j < S} h[b, p*S + j] * w_down_t[list[p]*S + j, :]
   h: (B, F) from lte_sffn_gate_up; w_down_t: (F, C); b_down: (C) or NULL, all dtype; residual, y:
   (B, C) in y_dtype = dtype or F32 (residual may equal y: y += FFN(x)). variant: LTE_SFFN_DOWN_*. */
LTE_API lte_status lte_sffn_down(lte_ctx_t *ctx, lte_dtype dtype, lte_dtype y_dtype, const void *h,
                                 const void *w_down_t, const void *b_down, const int32_t *list, const int32_t *counts,
                                 const void *residual, void *y, void *ws, int32_t batch, int32_t d_model,
                                 int32_t n_experts, int32_t expert_size, int32_t variant);

/* Process-wide tuning knobs of the CUDA kernels (benchmarks sweep them; defaults are the measured
   best, docs/engine.md). The CPU backend validates and ignores them. Set them before capturing a
   graph: a captured graph keeps the launch configuration it was captured with. */
enum {
  LTE_SFFN_TUNE_PDL = 1,                /* 0/1: programmatic dependent launch between the kernels */
  LTE_SFFN_TUNE_GATE_UP_UNROLL = 2,     /* 4 or 8: column chunks in flight per warp (batch <= 8) */
  LTE_SFFN_TUNE_DOWN_BLOCKS_PER_SM = 3, /* 1..8: row chunks of the down grid per multiprocessor */
  LTE_SFFN_TUNE_LOCAL_LIST = 4          /* 0/1: route writes only logits + bits (and a copy of the bits
                                           in ws); gate_up and down compact the union per block (no
                                           grid-wide step); gate_up writes list and counts. Needs
                                           n_experts <= 2048 (else ignored). Rebuilt 2026-12-02
                                           (docs/engine.md); off until measured faster */
};
LTE_API lte_status lte_sffn_set_tuning(lte_ctx_t *ctx, int32_t key, int32_t value);

/* Dense baseline GEMV(s) for benchmarks and checks: y (B, rows) = x (B, cols) . w^T, w (rows, cols).
   CUDA: cuBLAS GemmEx (fp32 compute) when cuBLAS is loaded, else LTE_STATUS_UNSUPPORTED. */
LTE_API lte_status lte_sffn_dense_gemv(lte_ctx_t *ctx, lte_dtype dtype, const void *x, const void *w, void *y,
                                       int32_t batch, int32_t rows, int32_t cols);
/* Dense baseline activation: h = act(gate, up) elementwise over n (silu(gate) * up, or gelu(up)). */
LTE_API lte_status lte_sffn_dense_act(lte_ctx_t *ctx, lte_dtype dtype, int32_t act, const void *gate, const void *up,
                                      void *h, int64_t n);

/* (CUDA graphs of these kernels for benchmarks: lte_graph_* in the decode engine section.) */
/* ================================================================ end KERNELS section */

/* ================================================================ decode engine (ENGINE, issue 9)
 * Kernels of the inference engine (engine/mod.ts): one decode step for R tokens (R slots, or R
 * prompt tokens of one slot in a prefill chunk) over a preallocated KV cache. Weights are in
 * wdtype/kvdtype = F32, F16 or BF16 (converted once at load); activations, norm weights, biases,
 * router weights and logits are always f32, and every sum accumulates in f32. Nothing here reads
 * the host, and the only allocations are the CUDA backend's scratch blocks (owned by the context,
 * grown by calls outside a capture: cuBLAS at the first call of 4+ rows that takes it, the split
 * attention's partials, lte_dec_sparse_ffn's partial sums), so a whole step can be captured as a
 * CUDA graph and replayed:
 * positions, slots and token ids are read from device arrays (int32, R entries).
 * Legend: R rows, N outputs, K inputs, H heads, HKV kv heads, D head dim, T max context, E experts. */

/* x-loader modes of lte_dec_linear (how row r of the input x' is formed from x). */
enum {
  LTE_DEC_X_PLAIN = 0,    /* x'[k] = x[r*ldx + k] */
  LTE_DEC_X_RMSNORM = 1,  /* x'[k] = x[k] * rstd_r * norm_w[k],  rstd_r = 1/sqrt(mean_k x^2 + eps) */
  LTE_DEC_X_LAYERNORM = 2 /* x'[k] = (x[k] - mean_r) * rstd_r * norm_w[k] + norm_b[k] */
};
/* Output activations of lte_dec_linear. */
enum {
  LTE_DEC_ACT_NONE = 0,
  LTE_DEC_ACT_SWIGLU = 1, /* w has 2N rows [gate; up]: y[r, j] = silu(w[j] . x') * (w[N + j] . x') */
  LTE_DEC_ACT_GELU = 2    /* y[r, j] = gelu_tanh(w[j] . x' + bias[j]) */
};
/* OR-ed into lte_dec_sparse_ffn's act: w_fc carries the router too. After its 2F (SWIGLU) or F
   (GELU) rows come E rows hi = wdtype(w_router) and E rows lo = wdtype(w_router - hi)
   (lte_dec_convert_split), so a backend may compute the router in the gate/up product (the CUDA
   backend's masked dense path does, at ~f32 precision: hi and lo of x' too). The result is the
   contract's, with the router of w_router; the rows must be w_router's split. */
enum { LTE_DEC_SFFN_ROUTER_ROWS = 0x100 };

/* GEMV / skinny GEMM:  y[r, n] = act((accumulate ? y[r, n] : 0) + bias[n] + sum_k w[n, k] * x'[r, k] * m[r, k])
     w: (N, K) (2N rows for SWIGLU) in wdtype, row-major (nn.Linear layout); x: rows of stride ldx;
     y: (R, N); bias: (N) or NULL; accumulate only with act NONE.
     m[r, k] = in_mask ? in_mask[r * (K / S) + k / S] : 1   (f32 0/1 expert mask, S = expert_size;
       input-side sparsity: weight chunks of experts no row needs are not read — down projections)
     out_mask (optional, f32 (R, out_period / S)): where out_mask[r, (n % out_period) / S] == 0 the
       output is 0 (or left unchanged when accumulating) and, when no row of the batch needs output
       n, its weight row(s) are not read (output-side expert sparsity: gate/up, c_fc). */
LTE_API lte_status lte_dec_linear(lte_ctx_t *ctx, lte_dtype wdtype, const void *w, const void *x, int32_t ldx,
                                  int32_t x_mode, const void *norm_w, const void *norm_b, float eps,
                                  const void *in_mask, const void *out_mask, int32_t out_period,
                                  int32_t expert_size, const void *bias, void *y, int32_t rows, int32_t n,
                                  int32_t k, int32_t accumulate, int32_t act);
/* Input-side sparse projection over expert blocks of a transposed weight (the down projection):
     y[r, n] += bias[n] + sum over experts e active for ANY row (mask[r', e] != 0)
                          sum_{j < S} h[r, e*S + j] * wt[e*S + j, n]
   wt: (K, N) in wdtype (HF down_proj (N, K) transposed once: an expert's S rows are contiguous);
   h: (R, K) f32 (a row's inactive experts hold zeros), mask: (R, K / S) f32 0/1, bias: (N) or NULL,
   y: (R, N) f32, accumulated (the residual). Only the weight rows of the union are read. */
LTE_API lte_status lte_dec_linear_t_sparse(lte_ctx_t *ctx, lte_dtype wdtype, const void *wt, const void *h,
                                           const void *mask, const void *bias, void *y, int32_t rows, int32_t n,
                                           int32_t k, int32_t expert_size);
/* y = rmsnorm(x) * w (kind 0) or layernorm(x) * w + b (kind 1), no saved statistics.  x, y: (R, C) */
LTE_API lte_status lte_dec_norm(lte_ctx_t *ctx, const void *x, const void *w, const void *b, void *y, int32_t rows,
                                int32_t cols, float eps, int32_t kind);
/* out[r, :] = tok[ids[r], :] + (pos_table ? pos_table[pos[r], :] : 0)   tables: (V, C) / (P, C) in wdtype.
   CPU: an id or position out of range is LTE_STATUS_INVALID_ARGUMENT; CUDA writes a zero row
   (the engine range-checks ids on the host). */
LTE_API lte_status lte_dec_embed(lte_ctx_t *ctx, lte_dtype wdtype, const int32_t *ids, const int32_t *pos,
                                 const void *tok, const void *pos_table, void *out, int32_t rows, int32_t vocab,
                                 int32_t n_pos, int32_t dim);
/* RoPE (theta > 0; Hugging Face rotate_half pairs (i, i + D/2), position pos[r]) on the q and k
   parts of qkv in place, then K/V append: cache[slot[r], g, pos[r], :] = k / v of row r.
     qkv: (R, ld) f32 with q at [0, H*D), k at [H*D, (H+HKV)*D), v at [(H+HKV)*D, (H+2HKV)*D)
     k_cache, v_cache: (n_slots, HKV, T, D) in kvdtype. theta = 0: no rotation (GPT-2).
   kvdtype LTE_DTYPE_I8 (an 8-bit cache; CUDA: head sizes 8-256, powers of two): each cache block holds the int8 values
   (n_slots, HKV, T, D) and then, from byte LTE_KV_I8_SCALES(n_slots * HKV * T * D) on, one f32 scale
   per (slot, kv head, position). A position's row x is stored as scale = max|x| / 127 and
   q = round-half-even(x / scale) clamped to [-127, 127] (0 and scale 0 for an all-zero row); it
   reads back as q * scale. */
#define LTE_KV_I8_SCALES(n_values) ((((int64_t)(n_values)) + 15) & ~(int64_t)15)
LTE_API lte_status lte_dec_rope_append(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld, void *k_cache,
                                       void *v_cache, const int32_t *slots, const int32_t *pos, int32_t rows,
                                       int32_t heads, int32_t kv_heads, int32_t head_dim, int32_t n_slots,
                                       int32_t max_t, float theta);
/* Attention of each row's query over its slot's cache positions 0..pos[r] (GQA: head h reads kv
   head h / (H / HKV)): out[r, h*D + d] = sum_t softmax_t(scale * q . k_t) v_t[d].  out: (R, H*D).
   Rows of one slot with increasing pos (a prefill chunk) are causal by construction. */
LTE_API lte_status lte_dec_attention(lte_ctx_t *ctx, lte_dtype kvdtype, const void *qkv, int32_t ld,
                                     const void *k_cache, const void *v_cache, const int32_t *slots,
                                     const int32_t *pos, void *out, int32_t rows, int32_t heads, int32_t kv_heads,
                                     int32_t head_dim, int32_t n_slots, int32_t max_t, float scale);
/* lte_dec_rope_append then lte_dec_attention in one launch, for a decode step: the rows' slots
   must be DISTINCT (rows of one slot with increasing positions, a prefill chunk, need the two ops:
   a row would attend to positions another row appends). out and the caches are as after the two
   ops; the q and k parts of qkv are scratch afterwards (unspecified). */
LTE_API lte_status lte_dec_rope_attention(lte_ctx_t *ctx, lte_dtype kvdtype, void *qkv, int32_t ld, void *k_cache,
                                          void *v_cache, const int32_t *slots, const int32_t *pos, void *out,
                                          int32_t rows, int32_t heads, int32_t kv_heads, int32_t head_dim,
                                          int32_t n_slots, int32_t max_t, float theta, float scale);
/* Hard routing: mask[r, e] = logits[r, e] > threshold ? 1 : 0 (strict); counts[r * count_ld] =
   number of active experts of row r (int32; skipped when counts is NULL).  logits, mask: (R, E) */
LTE_API lte_status lte_dec_router_mask(lte_ctx_t *ctx, const void *logits, void *mask, int32_t *counts,
                                       int32_t count_ld, int32_t rows, int32_t n_experts, float threshold);
/* The whole sparse (LTE hard-routed) FFN block of a decode step, in place on the residual x:
     x'[r] = x_mode transform of x[r] (plain, RMSNorm(norm_w), LayerNorm(norm_w, norm_b): as
             lte_dec_linear forms it); stored in xn
     mask[r, e] = x'[r] . w_router[e] + b_router[e] > threshold ? 1 : 0 (strict); counts[r] = sum_e
     h[r, j] = mask[r, j / S] ? a_j : 0 with, for SWIGLU (w_fc (2F, C) = [gate; up]),
               a_j = silu(w_fc[j] . x'[r] + b_fc[j]) * (w_fc[F + j] . x'[r] + b_fc[F + j]),
               for GELU (w_fc (F, C)), a_j = gelu_tanh(w_fc[j] . x'[r] + b_fc[j])
     x[r, :] += b_down + sum_j h[r, j] * w_down_t[j, :]
   Only the weight rows of experts that some row needs are read (the union over the rows).
   x: (R, C) f32; w_router: (E, C) f32 with E = F / S, b_router (E) f32 or NULL; w_fc, w_down_t
   (F, C: HF down_proj transposed) in wdtype, b_fc / b_down f32 or NULL; xn: (R, C) f32 out;
   mask: (R, E) f32 out; counts: (R) int32 or NULL. act: LTE_DEC_ACT_SWIGLU or LTE_DEC_ACT_GELU.
   Limits of the CUDA kernels, checked by both backends: C % 8 == 0, C <= 8192, E <= 4096.
   CUDA, f16 / bf16 weights: bit-reproducible by default (each cluster's partial sum of h W_down is
   stored and a second kernel adds them into x in a fixed order); LTE_DEC_SFFN_REDUCE=0 (unless
   LTE_OPTION_DETERMINISTIC) and f32 weights add with float atomics, whose last bits may differ from
   run to run. */
LTE_API lte_status lte_dec_sparse_ffn(lte_ctx_t *ctx, lte_dtype wdtype, void *x, int32_t x_mode, const void *norm_w,
                                      const void *norm_b, float eps, const void *w_router, const void *b_router,
                                      float threshold, const void *w_fc, const void *b_fc, const void *w_down_t,
                                      const void *b_down, void *xn, void *mask, int32_t *counts, int32_t rows,
                                      int32_t d_model, int32_t d_ff, int32_t expert_size, int32_t act);
/* Sampling, parameters per row from device arrays:
     temperature[r] <= 0: out[r] = argmax (lowest index among ties)
     else z = logits[r] / temperature[r];
          top_k[r] in (0, V): keep z_i >= the top_k-th largest z (all ties kept), else keep all;
          p = softmax over the kept set; top_p[r] < 1: keep p_i >= p_cut (definition of
          lte_sample_top_p) ; u = lte_uniform(seeds[r], pos[r]) * kept mass;
          out[r] = first kept index (increasing order) whose running mass exceeds u (else the last kept).
   advance != 0: ids[r] = out[r] and pos[r] += 1 (the next step's input, without the host).
   scratch: (R, V) f32.  Deterministic for (seed, position). */
LTE_API lte_status lte_dec_sample(lte_ctx_t *ctx, const void *logits, const void *temperature, const int32_t *top_k,
                                  const void *top_p, const uint64_t *seeds, int32_t *pos, int32_t *ids,
                                  int32_t *out, void *scratch, int32_t rows, int32_t vocab, int32_t advance);
/* x[i] = scale * (2 * lte_uniform(seed, i) - 1) in dtype (F32/F16/BF16): random weights for benchmarks. */
LTE_API lte_status lte_dec_fill_random(lte_ctx_t *ctx, lte_dtype dtype, void *x, int64_t n, uint64_t seed,
                                       float scale);
/* y[i] = x[i] converted from f32 to dtype (F32/F16/BF16, round to nearest even).  n elements. */
LTE_API lte_status lte_dec_convert(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *y, int64_t n);
/* hi[i] = dtype(x[i]) and lo[i] = dtype(x[i] - float(hi[i])) (F16/BF16; round to nearest even): a
   f32 value as the sum of two half values. hi + lo is x to 2^-22 relative for F16 while lo is a
   normal half (|x| >= 2^-3; below, to lo's subnormal step, 2^-25 absolute), to 2^-16 for BF16. */
LTE_API lte_status lte_dec_convert_split(lte_ctx_t *ctx, lte_dtype dtype, const void *x, void *hi, void *lo,
                                         int64_t n);
/* Graph capture of everything queued on the context between begin and end (CUDA graphs);
   launch replays it on the context's stream; free releases it. The CPU backend returns
   LTE_STATUS_UNSUPPORTED from lte_graph_begin (callers then run the ops eagerly). No host read may
   happen between begin and end; the capture is relaxed, so the cuBLAS scratch may be allocated
   there (once per context). */
LTE_API lte_status lte_graph_begin(lte_ctx_t *ctx);
LTE_API lte_status lte_graph_end(lte_ctx_t *ctx, void **graph_out);
LTE_API lte_status lte_graph_launch(lte_ctx_t *ctx, void *graph);
LTE_API lte_status lte_graph_free(lte_ctx_t *ctx, void *graph);
/* Benchmarks: host_us[r] = (device time of `inner` back-to-back launches of the graph) / inner for
   r < reps, after `warmup` launches (CUDA events on the context's stream; returns when done). */
LTE_API lte_status lte_graph_time(lte_ctx_t *ctx, void *graph, int32_t warmup, int32_t reps, int32_t inner,
                                  float *host_us);
/* ================================================================ end of decode engine section */

#ifdef __cplusplus
}
#endif

#if defined(__CUDACC__)
#define LTE_HOST_DEVICE __host__ __device__
#else
#define LTE_HOST_DEVICE
#endif

/* The uniform used by lte_sample_top_p, shared by both backends (also usable from tests):
   splitmix64(seed + 0x9E3779B97F4A7C15 * (row + 1)), top 24 bits / 2^24. */
static inline LTE_HOST_DEVICE float lte_uniform(uint64_t seed, int64_t row) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(row + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#endif /* LTE_H */
