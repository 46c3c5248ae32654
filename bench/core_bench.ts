/**
 * Compute-core benchmark: matmul throughput at transformer shapes and the per-call cost of the
 * FFI boundary, on every backend available here (CPU always; CUDA when a GPU is present).
 *
 *   deno task bench [--json out.json] [--quick]
 *
 * Method: each measurement runs `warmup` calls, then `iters` back-to-back calls and one
 * synchronize; the time is wall-clock from the first call to the end of the synchronize, divided
 * by `iters` (the queue stays full, so launch gaps are hidden the same way a training step hides
 * them). TFLOP/s counts 2·M·N·K per GEMM. CUDA is measured with TF32 off (exact f32) and on.
 * FFI overhead is measured with calls that do no work: `lte_abi_version` (no arguments), and an
 * `lte_fill` of one element (a pointer, an int, an i64 and a float: the shape of a real op call),
 * which on CUDA includes one kernel launch.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { type Backend, backendAvailable, getBackend } from "../ffi/backend.ts";
import { DTypeCode } from "../ffi/symbols.ts";

interface Row {
  backend: string;
  device: string;
  name: string;
  shape: string;
  tf32?: boolean;
  us_per_call: number;
  tflops?: number;
}

const args = Deno.args;
const quick = args.includes("--quick");
const jsonAt = args.indexOf("--json");
const rows: Row[] = [];

function timeIt(be: Backend, iters: number, warmup: number, fn: () => void): number {
  for (let i = 0; i < warmup; i++) fn();
  be.synchronize();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  be.synchronize();
  return ((performance.now() - t0) * 1000) / iters;
}

/** Transformer GEMM shapes (M tokens × K in → N out), as in a training step's forward. */
function shapes(kind: string): { name: string; m: number; n: number; k: number }[] {
  if (kind === "cpu" || quick) {
    return [
      { name: "tiny qkv (256 tok, d 256)", m: 256, n: 768, k: 256 },
      { name: "tiny ffn up (256 tok, d 256→1024)", m: 256, n: 1024, k: 256 },
      { name: "square 512", m: 512, n: 512, k: 512 },
    ];
  }
  return [
    { name: "GPT-2 124M qkv (8×1024 tok)", m: 8192, n: 2304, k: 768 },
    { name: "GPT-2 124M ffn up", m: 8192, n: 3072, k: 768 },
    { name: "GPT-2 124M ffn down", m: 8192, n: 768, k: 3072 },
    { name: "GPT-2 124M lm head (V 50257)", m: 8192, n: 50257, k: 768 },
    { name: "LLaMA-58M ffn gate/up (16×512 tok)", m: 8192, n: 1376, k: 512 },
    { name: "LLaMA-58M lm head (V 32000)", m: 8192, n: 32000, k: 512 },
    { name: "LLaMA-7B ffn up, batch-1 decode (GEMV)", m: 1, n: 11008, k: 4096 },
    { name: "square 4096", m: 4096, n: 4096, k: 4096 },
  ];
}

function benchBackend(be: Backend): void {
  const info = be.deviceInfo();
  const device = String(info.device ?? info.name ?? be.kind);
  console.log(`\n== ${be.kind}: ${JSON.stringify(info)}`);
  // FFI overhead.
  const n = be.kind === "cpu" ? 200_000 : 100_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) be.sym.lte_abi_version();
  const usNoArgs = ((performance.now() - t0) * 1000) / n;
  rows.push({
    backend: be.kind,
    device,
    name: "ffi call, no arguments (lte_abi_version)",
    shape: "-",
    us_per_call: usNoArgs,
  });
  const p = be.alloc(256);
  const usFill = timeIt(be, n / 4, 1000, () => be.sym.lte_fill(be.ctx, DTypeCode.f32, p, 1, 0));
  rows.push({
    backend: be.kind,
    device,
    name: `op call shape, 1 element (lte_fill${be.kind === "cuda" ? " incl. kernel launch" : ""})`,
    shape: "1",
    us_per_call: usFill,
  });
  be.free(p);
  t0 = performance.now();
  // GEMMs.
  for (const tf32 of be.kind === "cuda" ? [false, true] : [false]) {
    be.setAllowTf32(tf32);
    for (const s of shapes(be.kind)) {
      const a = be.alloc(s.m * s.k * 4), b = be.alloc(s.n * s.k * 4), c = be.alloc(s.m * s.n * 4);
      be.check(be.sym.lte_fill(be.ctx, DTypeCode.f32, a, s.m * s.k, 0.01), "lte_fill");
      be.check(be.sym.lte_fill(be.ctx, DTypeCode.f32, b, s.n * s.k, 0.02), "lte_fill");
      const flops = 2 * s.m * s.n * s.k;
      const iters = Math.max(3, Math.min(200, Math.round((be.kind === "cuda" ? 2e12 : 2e9) / flops)));
      // y = x @ Wᵀ with W stored (out, in): the layout of every linear layer here.
      const us = timeIt(
        be,
        iters,
        Math.min(3, iters),
        () =>
          be.check(
            be.sym.lte_matmul(be.ctx, DTypeCode.f32, a, b, c, 1, s.m, s.n, s.k, 0, 1, 0, 0, 0, 1, 0),
            "lte_matmul",
          ),
      );
      rows.push({
        backend: be.kind,
        device,
        name: `matmul x·Wᵀ ${s.name}`,
        shape: `${s.m}×${s.k} · (${s.n}×${s.k})ᵀ`,
        ...(be.kind === "cuda" ? { tf32 } : {}),
        us_per_call: us,
        tflops: flops / (us * 1e-6) / 1e12,
      });
      be.free(a), be.free(b), be.free(c);
    }
  }
  be.setAllowTf32(false);
}

for (const kind of ["cpu", "cuda"] as const) {
  if (kind === "cuda" && !backendAvailable("cuda")) {
    console.log("\n== cuda: not available here (no library or no GPU); skipped");
    continue;
  }
  benchBackend(getBackend(kind));
}

console.log("\nbackend  tf32  µs/call      TFLOP/s  what (f32 storage)");
for (const r of rows) {
  console.log(
    `${r.backend.padEnd(8)} ${r.tf32 === undefined ? "  - " : r.tf32 ? " on " : " off"}  ${
      r.us_per_call.toFixed(r.us_per_call < 10 ? 3 : 1).padStart(10)
    }  ${
      r.tflops === undefined ? "       -" : r.tflops.toFixed(r.tflops < 1 ? 4 : 2).padStart(8)
    }  ${r.name} [${r.shape}]`,
  );
}
if (jsonAt >= 0 && args[jsonAt + 1]) {
  writeFileSync(args[jsonAt + 1]!, JSON.stringify({ date: new Date().toISOString(), rows }, null, 2));
}
