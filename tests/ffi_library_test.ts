/**
 * Library loading and the symbol table: overrides, helpful failures, stale builds, and that
 * ffi/symbols.ts declares exactly the functions of cuda/include/lte.h with the same arity.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { LibraryLoadError } from "../ffi/errors.ts";
import { checkFresh } from "../ffi/library.ts";
import { SYMBOLS } from "../ffi/symbols.ts";

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

Deno.test("ffi/symbols.ts declares every function of lte.h with the same number of parameters", () => {
  const header = readFileSync(new URL("../cuda/include/lte.h", import.meta.url), "utf8");
  const decls = new Map<string, number>();
  for (const m of header.matchAll(/LTE_API\s+[\w\s*]+?\b(lte_\w+)\s*\(([^)]*)\)/g)) {
    const params = m[2]!.trim();
    decls.set(m[1]!, params === "void" || params === "" ? 0 : params.split(",").length);
  }
  assert.ok(decls.size > 50, `parsed only ${decls.size} declarations`);
  const table = new Map<string, number>();
  for (const [key, def] of Object.entries(SYMBOLS)) {
    const name = (def as { name?: string }).name ?? key;
    table.set(name, def.parameters.length);
  }
  for (const [name, arity] of decls) {
    assert.ok(table.has(name), `${name} is declared in lte.h but missing from ffi/symbols.ts`);
    assert.equal(table.get(name), arity, `${name}: ${arity} parameters in lte.h, ${table.get(name)} in symbols.ts`);
  }
  for (const name of table.keys()) assert.ok(decls.has(name), `${name} is in symbols.ts but not declared in lte.h`);
});
