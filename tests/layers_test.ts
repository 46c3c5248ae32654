/**
 * Layers point one way (docs/compute-core.md, "Layers"): every import between the top-level
 * folders of the framework is checked against the allowed table below, and the public entry point
 * mod.ts never exports a private module (a file whose name starts with `_`).
 *
 *   YAML -> pipeline/ (framework; never imports stages/) <- stages/ -> serve/, lte/, report/
 *        -> engine/, models/ -> tensor/ -> ffi/ -> native (cuda/)
 *   text/ and io/ are leaves usable from models/ upwards.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(new URL("..", import.meta.url).pathname);

/** Folder -> the other top-level folders its modules may import. */
const ALLOWED: Record<string, string[]> = {
  io: [],
  cuda: [],
  ffi: ["cuda"],
  tensor: ["ffi"],
  text: ["io"],
  models: ["tensor", "text", "io"],
  engine: ["models", "tensor", "ffi", "text", "io"],
  lte: ["models", "tensor", "text", "io"],
  serve: ["web", "engine", "models", "lte", "tensor", "text", "io"],
  report: ["lte", "models", "text", "io"],
  pipeline: ["io", "report"],
  stages: ["pipeline", "serve", "lte", "engine", "report", "models", "tensor", "text", "io"],
};

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...tsFiles(p));
    else if (name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** Relative module specifiers of static imports/exports and dynamic imports (comments ignored). */
export function localImports(src: string): string[] {
  const code = src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const specs: string[] = [];
  for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.\.?\/[^"']+)["']/g)) specs.push(m[1]!);
  return specs;
}

Deno.test("imports between folders follow the layer table", () => {
  const problems: string[] = [];
  for (const folder of Object.keys(ALLOWED)) {
    let files: string[];
    try {
      files = tsFiles(join(ROOT, folder));
    } catch {
      continue; // folder not present (yet)
    }
    for (const file of files) {
      for (const spec of localImports(readFileSync(file, "utf8"))) {
        const target = relative(ROOT, resolve(dirname(file), spec)).split("/")[0]!;
        if (target === folder || ALLOWED[folder]!.includes(target)) continue;
        problems.push(
          `${relative(ROOT, file)} imports ${spec}: ${folder}/ may import only ${
            ALLOWED[folder]!.join(", ") || "nothing"
          }`,
        );
      }
    }
  }
  assert.deepEqual(problems, [], "\n" + problems.join("\n"));
});

Deno.test("the import scanner sees static, type-only, re-exported and dynamic imports", () => {
  const src = `import { a } from "../x/a.ts";\nimport type { B } from './b.ts';\nexport * from "../y/c.ts";\n` +
    `const m = await import("../z/d.ts");\n// import { e } from "../no/e.ts";\nimport "npm:yaml";\n`;
  assert.deepEqual(localImports(src), ["../x/a.ts", "./b.ts", "../y/c.ts", "../z/d.ts"]);
});

Deno.test("mod.ts exports no private module and loads", async () => {
  const src = readFileSync(join(ROOT, "mod.ts"), "utf8");
  const priv = localImports(src).filter((s) => s.split("/").pop()!.startsWith("_"));
  assert.deepEqual(priv, [], "mod.ts must not export private modules");
  const mod = await import("../mod.ts");
  for (
    const name of ["runPipeline", "loadConfig", "registerStage", "runFineTune", "DecoderLM", "Tensor", "getBackend"]
  ) {
    assert.ok(name in mod, `mod.ts should export ${name}`);
  }
  for (const name of ["train", "evaluate", "SYMBOLS", "loadLibrary"]) {
    assert.ok(!(name in mod), `mod.ts should not export ${name}`);
  }
});
