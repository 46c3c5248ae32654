/**
 * Bad-argument cases for every op of cuda/include/lte.h, generated from the header (new ops are
 * covered without editing this file), and a runner that records what a backend answers. The CPU
 * test (tests/ffi_arg_checks_test.ts) checks invariants of the answers; the GPU test
 * (tests/gpu/arg_checks_test.ts) requires the CUDA backend to answer every case exactly as the
 * CPU backend does: same status, same message (the backend's own name aside).
 *
 * An op is an `LTE_API` function whose first two parameters are `lte_ctx_t *ctx, lte_dtype dtype`.
 * Its "plausible" arguments: device pointers to 64 KiB of zeros (valid token ids, targets, data),
 * host buffers of 64 KiB, every integer 2 (even, so head_dim passes) except 0/1 flags (trans_*, accumulate) at 1, every float 1. The cases then break one thing at a time:
 * an unknown dtype, a reserved dtype (f16), all floats 0, each integer at -1 and 0, each float at
 * 0 and -1, each pointer NULL. A case may legitimately succeed; what matters is that both backends
 * agree and that every message names its function.
 */
import { readFileSync } from "node:fs";
import type { Backend } from "../ffi/backend.ts";
import { cString } from "../ffi/library.ts";
import { Status } from "../ffi/symbols.ts";
import { type CFunction, expectedParamType, parseHeader } from "./_lte_header.ts";

/** An abstract argument: a device buffer, a host buffer, NULL, or a number. */
export type Arg = "DEV" | "HOST" | "NULL" | number;

export interface ArgCase {
  fn: string;
  label: string;
  args: Arg[];
}

export interface Outcome {
  status: number;
  message: string;
}

const BYTES = 65536;

/**
 * Parameters whose plausible value is not 1 or 2 (an op's documented shape rules), by parameter
 * name or by "function.parameter". When tests/ffi_arg_checks_test.ts lists an op whose pointer
 * checks the generated cases do not reach, add its rule here.
 */
export const PLAUSIBLE: Record<string, number> = {
  d_model: 64, // sparse FFN: C % 64 == 0
  expert_size: 16, // sparse FFN: S % 16 == 0 (also fine for lte_expert_scale_*)
  act: 0, // LTE_SFFN_ACT_SILU_MUL
  variant: 0, // LTE_SFFN_DOWN_AUTO
  // Decode ops (key "function.parameter" for a rule of one function):
  "lte_dec_linear.k": 16, // K % expert_size == 0
  "lte_dec_linear.ldx": 16, // ldx >= K
  "lte_dec_linear.x_mode": 0, // LTE_DEC_X_PLAIN
  "lte_dec_linear.act": 0, // LTE_DEC_ACT_NONE
  "lte_dec_linear.n": 16, // out_period divides N
  "lte_dec_linear.out_period": 16, // a multiple of expert_size
  "lte_dec_linear_t_sparse.k": 16,
  "lte_dec_linear_t_sparse.n": 8, // N % 8 == 0
  "lte_dec_rope_append.ld": 64, // ld >= (H + 2 HKV) D
  "lte_dec_attention.ld": 64, // ld >= H D
  "lte_dec_rope_attention.ld": 64, // ld >= (H + 2 HKV) D
  "lte_dec_sparse_ffn.x_mode": 1, // LTE_DEC_X_RMSNORM
  "lte_dec_sparse_ffn.d_ff": 32, // a multiple of expert_size
  "lte_dec_sparse_ffn.act": 1, // LTE_DEC_ACT_SWIGLU
};

export const HEADER = parseHeader(readFileSync(new URL("../cuda/include/lte.h", import.meta.url), "utf8"));

/** The ops of the header (ctx, dtype, ...). */
export function headerOps(): CFunction[] {
  return [...HEADER.functions.values()].filter((f) =>
    f.params[0]?.type === "lte_ctx_t *" && f.params[1]?.type === "lte_dtype"
  );
}

/** Every bad-argument case, in a fixed order. */
export function argCases(): ArgCase[] {
  const cases: ArgCase[] = [];
  for (const f of headerOps()) {
    const types = f.params.map((p) => expectedParamType(p, HEADER.typedefs));
    const isFloat = (i: number) => types[i] === "f32" || types[i] === "f64";
    const isDtype = (i: number) => f.params[i]!.type === "lte_dtype";
    // Two plausible bases: every integer 1 (matmul strides fit), every integer 2 (head_dim even).
    for (const n of [1, 2]) {
      const base: Arg[] = f.params.map((p, i) => {
        if (i === 0) return "NULL"; // the context; the runner passes the backend's
        if (isDtype(i)) return 0; // LTE_DTYPE_F32 (the op's dtype and any other lte_dtype parameter)
        const t = types[i]!;
        if (t === "pointer") return "DEV";
        if (t === "buffer") return "HOST";
        if (isFloat(i) || /^(trans_|accumulate)/.test(p.name)) return 1; // floats 1, 0/1 flags 1
        return PLAUSIBLE[`${f.name}.${p.name}`] ?? PLAUSIBLE[p.name] ?? n;
      });
      const isInt = (i: number) => i > 1 && !isFloat(i) && !isDtype(i) && typeof base[i] === "number";
      const with_ = (label: string, edit: (a: Arg[]) => void) => {
        const args = [...base];
        edit(args);
        cases.push({ fn: f.name, label: `integers ${n}, ${label}`, args });
      };
      if (n === 1) {
        with_("dtype 99", (a) => a[1] = 99);
        with_("dtype f16", (a) => a[1] = 1);
      }
      with_("plausible arguments", () => {});
      if (base.some((_, i) => isFloat(i))) with_("all floats 0", (a) => a.forEach((_, i) => isFloat(i) && (a[i] = 0)));
      f.params.forEach((p, i) => {
        if (i > 1 && isDtype(i)) {
          if (n === 1) with_(`${p.name} = 99`, (a) => a[i] = 99);
        } else if (isInt(i)) {
          with_(`${p.name} = -1`, (a) => a[i] = -1);
          if (n === 1) with_(`${p.name} = 0`, (a) => a[i] = 0);
        } else if (isFloat(i)) {
          if (n === 1) with_(`${p.name} = 0`, (a) => a[i] = 0);
          if (n === 1) with_(`${p.name} = -1`, (a) => a[i] = -1);
        } else if (i > 1) {
          with_(`${p.name} = NULL`, (a) => a[i] = "NULL");
        }
      });
    }
  }
  return cases;
}

/**
 * Runs one case on a backend: the call's status and context message; when the call itself
 * succeeds, the status of the following synchronize (the CUDA backend reports bad indices found on
 * the device there, the CPU backend at the call).
 */
export function runCase(be: Backend, c: ArgCase): Outcome {
  const f = HEADER.functions.get(c.fn)!;
  const owned: Deno.PointerObject[] = [];
  const zeros = new Uint8Array(BYTES);
  try {
    const args = c.args.map((a, i) => {
      const t = expectedParamType(f.params[i]!, HEADER.typedefs);
      if (i === 0) return be.ctx;
      if (a === "NULL") return null;
      if (a === "DEV") {
        const p = be.alloc(BYTES);
        owned.push(p);
        be.write(p, zeros);
        return p;
      }
      if (a === "HOST") return new Uint8Array(BYTES);
      if (t === "i64" || t === "u64") return BigInt(a as number);
      return a;
    });
    const call = (be.sym as unknown as Record<string, (...a: unknown[]) => number>)[c.fn];
    if (!call) throw new Error(`${c.fn} is not in ffi/symbols.ts`);
    let status = call(...args);
    let message = status === Status.OK ? "" : cString(be.sym.lte_ctx_last_error(be.ctx));
    const sync = be.sym.lte_ctx_synchronize(be.ctx);
    if (status === Status.OK && sync !== Status.OK) {
      status = sync;
      message = cString(be.sym.lte_ctx_last_error(be.ctx));
    }
    return { status, message };
  } finally {
    for (const p of owned) be.free(p);
  }
}

/** A message with the backend's own name replaced, for comparing backends. */
export function normalise(message: string, backend: string): string {
  return message.replaceAll(`the ${backend} backend`, "the <backend> backend");
}
