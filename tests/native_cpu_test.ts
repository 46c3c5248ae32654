/**
 * C-level checks of the CPU reference backend: compiles tests/native/cpu_gradcheck.c against
 * cuda/include/lte.h and build/liblte_cpu.so (into build/tests/) and runs it. The C program checks
 * every native backward against central finite differences, several forwards against independent
 * double-precision code, the error paths, and that results do not depend on the thread count
 * (see the comment at the top of the C file for the step and tolerances).
 *
 * Needs gcc and a built library: `deno task build --backend cpu`.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const LIB_DIR = join(ROOT, "build");
const OUT_DIR = join(ROOT, "build", "tests");
const SOURCE = join(ROOT, "tests", "native", "cpu_gradcheck.c");
const BINARY = join(OUT_DIR, "cpu_gradcheck");

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(cmd, { args, cwd: ROOT, stdout: "piped", stderr: "piped" }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr) };
}

let compiled: Promise<void> | undefined;

/** Compiles the C checker once per test run. */
function compile(): Promise<void> {
  compiled ??= (async () => {
    assert.ok(
      existsSync(join(LIB_DIR, "liblte_cpu.so")),
      "build/liblte_cpu.so is missing: run `deno task build --backend cpu` first",
    );
    mkdirSync(OUT_DIR, { recursive: true });
    const cc = Deno.env.get("CC") ?? "gcc";
    const r = await run(cc, [
      "-std=c11",
      "-O1",
      "-Wall",
      "-Wextra",
      "-Werror=implicit-function-declaration",
      "-I",
      join(ROOT, "cuda", "include"),
      SOURCE,
      "-o",
      BINARY,
      "-L",
      LIB_DIR,
      "-llte_cpu",
      `-Wl,-rpath,${LIB_DIR}`,
      "-lm",
    ]);
    assert.equal(r.code, 0, `compiling ${SOURCE} failed:\n${r.out}`);
  })();
  return compiled;
}

Deno.test("cpu reference: finite-difference gradients of every backward, forwards, errors and determinism", async () => {
  await compile();
  const r = await run(BINARY, []);
  const failed = r.out.split("\n").filter((l) => l.startsWith("FAIL"));
  assert.equal(
    r.code,
    0,
    `cpu_gradcheck exited with ${r.code}; failing checks:\n${failed.join("\n")}\n\nfull output:\n${r.out}`,
  );
  const summary = r.out.match(/cpu_gradcheck: (\d+) checks, (\d+) failed/);
  assert.ok(summary, `no summary line in the output:\n${r.out}`);
  assert.equal(Number(summary[2]), 0, r.out);
  // Every backward of lte.h must have been exercised (a silently skipped case would pass).
  for (
    const op of [
      "mul",
      "sum/broadcast_scalar",
      "bias_add/sum_rows",
      "copy_2d",
      "gelu",
      "silu",
      "sigmoid",
      "swiglu",
      "expert_scale",
      "layernorm",
      "rmsnorm",
      "matmul ta=0 tb=0",
      "matmul ta=0 tb=1",
      "matmul ta=1 tb=0",
      "matmul ta=1 tb=1",
      "embedding",
      "rope",
      "attention GQA",
      "cross_entropy",
    ]
  ) {
    assert.ok(r.out.includes(`PASS grad ${op} `), `no passing gradient check for ${op}:\n${r.out}`);
  }
});

Deno.test("cpu reference: the checker reports thread-count independence and error paths", async () => {
  await compile();
  const r = await run(BINARY, []);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /PASS threads 1 vs 2: matmul/);
  assert.match(r.out, /PASS threads 1 vs 2: attention/);
  assert.match(r.out, /PASS threads 1 vs 2: sum/);
  assert.match(r.out, /PASS memory limit -> OUT_OF_MEMORY/);
  assert.match(r.out, /PASS bad id -> INVALID_ARGUMENT: "lte_embedding_forward: ids\[17\] = 50300/);
});
