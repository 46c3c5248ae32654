/**
 * The chat page at `/`: a static HTML shell (below) and its script, `web/app.ts` bundled by esbuild
 * into `build/web/app.js` by `deno task build`. If that bundle is missing or older than a file in
 * web/, the server bundles it itself on first request (same esbuild code, `web/bundle.ts`). The
 * page loads nothing from the network.
 *
 * @module
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Where `deno task build` writes the page bundle. */
export const PAGE_BUNDLE: string = join(ROOT, "build", "web", "app.js");
const WEB_DIR = join(ROOT, "web");

let cached: string | null = null;

function stale(): boolean {
  if (!existsSync(PAGE_BUNDLE)) return true;
  const built = statSync(PAGE_BUNDLE).mtimeMs;
  return readdirSync(WEB_DIR).some((f) => f.endsWith(".ts") && statSync(join(WEB_DIR, f)).mtimeMs > built);
}

/** The bundled page script (bundling it first when missing or stale). */
export async function pageScript(): Promise<string> {
  if (cached !== null) return cached;
  if (stale()) {
    const { bundlePage } = await import("../web/bundle.ts");
    await bundlePage(PAGE_BUNDLE);
  }
  cached = readFileSync(PAGE_BUNDLE, "utf8");
  return cached;
}

/** The page's HTML. */
export function pageHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LTE chat</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f6f6f4; color: #222; }
  header { padding: 10px 16px; background: #1d2b36; color: #eee; display: flex; gap: 18px; flex-wrap: wrap; }
  header b { color: #fff; }
  #stats span { margin-right: 14px; font-variant-numeric: tabular-nums; }
  main { max-width: 900px; margin: 0 auto; padding: 12px 16px 140px; }
  .msg { margin: 10px 0; padding: 8px 12px; border-radius: 8px; white-space: pre-wrap; }
  .user { background: #dde8f3; }
  .assistant { background: #fff; border: 1px solid #ddd; }
  .error { background: #fbe3e3; }
  .strip { display: flex; gap: 1px; margin-top: 6px; overflow-x: auto; padding-bottom: 2px; }
  .strip .col { display: flex; flex-direction: column; gap: 1px; }
  .strip .cell { width: 7px; height: 7px; }
  .legend { font-size: 12px; color: #666; margin-top: 2px; }
  form { position: fixed; bottom: 0; left: 0; right: 0; background: #fff; border-top: 1px solid #ccc; padding: 10px 16px;
    display: flex; gap: 8px; }
  textarea { flex: 1; height: 48px; font: inherit; }
  button { font: inherit; padding: 0 18px; }
</style>
</head>
<body>
<header><b id="model">LTE chat</b><div id="stats"><span id="tps">tokens/s: -</span><span id="ttft">TTFT: -</span><span id="sparsity">FFN sparsity: -</span></div></header>
<main id="log"></main>
<form id="form"><textarea id="input" placeholder="Write a message; Enter sends, Shift+Enter adds a line"></textarea><button id="send" type="submit">Send</button></form>
<script type="module" src="/app.js"></script>
</body>
</html>
`;
}
