/**
 * Bundles the chat page script (web/app.ts) with esbuild into one browser file. Run by
 * `deno task build` (`deno run -A web/bundle.ts [out.js]`, default build/web/app.js) and by the
 * server when the bundle is missing or stale.
 *
 * @module
 */
import * as esbuild from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Writes the bundle to `outFile`. */
export async function bundlePage(outFile: string): Promise<void> {
  mkdirSync(dirname(outFile), { recursive: true });
  try {
    await esbuild.build({
      entryPoints: [join(ROOT, "web", "app.ts")],
      bundle: true,
      format: "esm",
      platform: "browser",
      target: "es2020",
      minify: true,
      outfile: outFile,
      logLevel: "warning",
    });
  } finally {
    await esbuild.stop();
  }
}

if (import.meta.main) {
  // `deno task build` appends its own arguments (e.g. --require-cuda) to the native build, not here.
  // A failure here must not break the native build: the server bundles the page itself when the
  // bundle is missing, and tests/serve_page_test.ts fails on a page that does not build.
  const out = Deno.args.find((a) => !a.startsWith("-")) ?? join(ROOT, "build", "web", "app.js");
  try {
    await bundlePage(out);
    console.log(`web: bundled the chat page into ${out}`);
  } catch (e) {
    console.error(`web: warning: could not bundle the chat page: ${(e as Error).message}`);
  }
}
