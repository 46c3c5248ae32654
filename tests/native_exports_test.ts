/**
 * Native library surface checks that need no GPU:
 *   - every built library in build/ (liblte_cpu.so, liblte_cuda.so) exports every LTE_API function
 *     declared in cuda/include/lte.h (`nm -D --defined-only`); a library that is not built is
 *     skipped;
 *   - liblte_cuda.so loads on any machine (the CUDA runtime is linked statically) and, without a
 *     GPU, lte_ctx_create reports LTE_STATUS_NO_DEVICE (6) with a message instead of failing to
 *     load or crashing. With LTE_REQUIRE_CUDA=1 (the GPU machine) context creation must succeed.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const HEADER = readFileSync(join(ROOT, "cuda/include/lte.h"), "utf8");
const API_NAMES = [...HEADER.matchAll(/LTE_API\s+[\w\s*]+?\b(lte_\w+)\s*\(/g)].map((m) => m[1]!);
const ABI_VERSION = Number(/#define\s+LTE_ABI_VERSION\s+(\d+)/.exec(HEADER)?.[1]);
const STATUS_NO_DEVICE = 6;

function libPath(kind: "cpu" | "cuda"): string {
  return join(ROOT, "build", `liblte_${kind}.so`);
}

function exportedSymbols(path: string): Set<string> {
  const r = new Deno.Command("nm", { args: ["-D", "--defined-only", path], stdout: "piped", stderr: "piped" })
    .outputSync();
  assert.ok(r.success, `nm -D --defined-only ${path} failed: ${new TextDecoder().decode(r.stderr)}`);
  const names = new Set<string>();
  for (const line of new TextDecoder().decode(r.stdout).split("\n")) {
    const parts = line.trim().split(/\s+/);
    // "<address> <type> <name>"; functions are type T (text), possibly W for weak definitions.
    if (parts.length >= 3 && /^[TW]$/.test(parts[1]!)) names.add(parts[2]!);
  }
  return names;
}

Deno.test("lte.h declares the public API (parser sanity)", () => {
  assert.ok(API_NAMES.length > 50, `parsed only ${API_NAMES.length} LTE_API declarations`);
  assert.ok(API_NAMES.includes("lte_ctx_create") && API_NAMES.includes("lte_sample_top_p"));
  assert.equal(ABI_VERSION, 1);
});

for (const kind of ["cpu", "cuda"] as const) {
  const path = libPath(kind);
  Deno.test({
    name: `liblte_${kind}.so exports every LTE_API function of lte.h`,
    ignore: !existsSync(path),
    fn() {
      const exported = exportedSymbols(path);
      const missing = API_NAMES.filter((n) => !exported.has(n));
      assert.deepEqual(missing, [], `liblte_${kind}.so does not export: ${missing.join(", ")}`);
    },
  });
}

Deno.test({
  name: "liblte_cuda.so loads without a GPU and lte_ctx_create reports LTE_STATUS_NO_DEVICE",
  ignore: !existsSync(libPath("cuda")),
  fn() {
    const lib = Deno.dlopen(libPath("cuda"), {
      lte_abi_version: { parameters: [], result: "u32" },
      lte_backend_name: { parameters: [], result: "pointer" },
      lte_build_id: { parameters: [], result: "pointer" },
      lte_ctx_create: { parameters: ["i32", "buffer"], result: "i32" },
      lte_ctx_free: { parameters: ["pointer"], result: "i32" },
      lte_last_error: { parameters: [], result: "pointer" },
    });
    try {
      const str = (p: Deno.PointerValue) => (p === null ? "" : Deno.UnsafePointerView.getCString(p));
      assert.equal(lib.symbols.lte_abi_version(), ABI_VERSION);
      assert.equal(str(lib.symbols.lte_backend_name()), "cuda");
      assert.match(str(lib.symbols.lte_build_id()), /^[0-9a-f]{16}$/);

      const out = new BigUint64Array(1);
      const status = lib.symbols.lte_ctx_create(0, out);
      const message = str(lib.symbols.lte_last_error());
      const requireCuda = Deno.env.get("LTE_REQUIRE_CUDA") === "1";
      if (status === 0) {
        // A GPU is present: the context is real; release it.
        const ctx = Deno.UnsafePointer.create(out[0]!);
        assert.ok(ctx !== null, "lte_ctx_create returned OK but a NULL context");
        assert.equal(lib.symbols.lte_ctx_free(ctx), 0);
        return;
      }
      assert.ok(!requireCuda, `LTE_REQUIRE_CUDA=1 but lte_ctx_create failed with status ${status}: ${message}`);
      assert.equal(status, STATUS_NO_DEVICE, `expected LTE_STATUS_NO_DEVICE, got ${status}: ${message}`);
      assert.ok(message.length > 0, "lte_last_error() is empty after a failed lte_ctx_create");
      assert.match(message, /^lte_ctx_create: /);
      assert.equal(out[0], 0n, "the context out-pointer must be NULL on failure");

      // A bad device index is reported the same way, never as a crash.
      assert.equal(lib.symbols.lte_ctx_create(-1, out), STATUS_NO_DEVICE);
    } finally {
      lib.close();
    }
  },
});
