/**
 * Library loading: overrides, helpful failures, stale builds. (The symbol table is checked against
 * cuda/include/lte.h, type by type, in tests/ffi_symbols_test.ts.)
 */
import assert from "node:assert/strict";
import { LibraryLoadError } from "../ffi/errors.ts";
import { checkFresh } from "../ffi/library.ts";

const deno = Deno.execPath();

async function runSnippet(code: string, env: Record<string, string>): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(deno, {
    args: ["eval", "--quiet", code],
    env,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr) };
}

Deno.test("a missing library override lists the path tried and the build command", async () => {
  const r = await runSnippet(
    `import { getBackend } from "./ffi/backend.ts";
     try { getBackend("cpu"); } catch (e) { console.log(e.name + ": " + e.message); Deno.exit(3); }`,
    { LTE_CPU_LIB: "/nonexistent/liblte_cpu.so" },
  );
  assert.equal(r.code, 3, r.out);
  assert.match(r.out, /LibraryLoadError/);
  assert.match(r.out, /\/nonexistent\/liblte_cpu\.so \(LTE_CPU_LIB\): not found/);
  assert.match(r.out, /deno task build/);
});

Deno.test("a library that is not an ELF file fails with the path and the cause", async () => {
  const tmp = Deno.makeTempFileSync({ suffix: ".so" });
  Deno.writeTextFileSync(tmp, "not a library");
  try {
    const r = await runSnippet(
      `import { getBackend } from "./ffi/backend.ts";
       try { getBackend("cpu"); } catch (e) { console.log(e.name + ": " + e.message); Deno.exit(3); }`,
      { LTE_CPU_LIB: tmp },
    );
    assert.equal(r.code, 3, r.out);
    assert.match(r.out, new RegExp(`cannot load the cpu library ${tmp}`));
  } finally {
    Deno.removeSync(tmp);
  }
});

Deno.test("checkFresh() rejects a library built from other sources", () => {
  assert.throws(() => checkFresh("cpu", "build/liblte_cpu.so", "0000000000000000"), (e: unknown) => {
    assert.ok(e instanceof LibraryLoadError);
    assert.match(e.message, /stale cpu library/);
    assert.match(e.message, /deno task build/);
    return true;
  });
});
