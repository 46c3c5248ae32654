/** Layers point one way: nothing in pipeline/ imports stages/ or ffi/ (issue 7). */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const DIR = new URL("../pipeline", import.meta.url).pathname;

Deno.test("pipeline/*.ts imports neither stages/ nor ffi/ (static or dynamic)", () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith(".ts"));
  assert.ok(files.length >= 10, `found only ${files.length} files in ${DIR}`);
  const bad: string[] = [];
  for (const f of files) {
    const text = readFileSync(join(DIR, f), "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)) {
      if (/(^|\/)\.\.\/(stages|ffi)\//.test(m[1]!)) bad.push(`${f}: ${m[1]}`);
    }
  }
  assert.deepEqual(bad, []);
});
