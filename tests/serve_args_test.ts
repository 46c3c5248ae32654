/** `deno task serve` command line and the serve stage's config (no model needed). */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { parseServeArgs, ServeUsageError } from "../serve/args.ts";
import { modelFolderOf, serveStage } from "../stages/serve.ts";
import { serveMain } from "../stages/serve_cli.ts";

Deno.test("parseServeArgs() reads every flag and keeps the defaults otherwise", () => {
  const d = parseServeArgs(["runs/x/model"]);
  assert.equal(d.target, "runs/x/model");
  assert.equal(d.host, "127.0.0.1");
  assert.equal(d.port, 8080);
  assert.equal(d.sparse, "auto");
  const a = parseServeArgs([
    "m",
    "--host=0.0.0.0",
    "--port",
    "9000",
    "--device",
    "cuda",
    "--dtype",
    "bf16",
    "--kv-dtype",
    "i8",
    "--dense",
    "--max-batch",
    "16",
    "--max-context",
    "512",
    "--max-queue",
    "3",
    "--max-tokens",
    "7",
    "--max-body",
    "100",
    "--grace",
    "1",
  ]);
  assert.deepEqual(
    [a.host, a.port, a.device, a.dtype, a.sparse, a.maxBatch, a.maxContext, a.maxQueue, a.defaultMaxTokens],
    ["0.0.0.0", 9000, "cuda", "bf16", false, 16, 512, 3, 7],
  );
  assert.equal(a.maxBodyBytes, 100);
  assert.equal(a.kvDtype, "i8");
  assert.equal(d.kvDtype, "auto");
  assert.equal(a.shutdownGraceS, 1);
  assert.ok(a.given.has("--port") && a.given.has("--dense"));
  assert.equal(d.lookahead, "auto");
  assert.equal(parseServeArgs(["m", "--lookahead"]).lookahead, true);
  const n = parseServeArgs(["m", "--no-lookahead"]);
  assert.equal(n.lookahead, false);
  assert.ok(n.given.has("--no-lookahead"));
});

Deno.test("parseServeArgs() names the bad flag", () => {
  assert.throws(() => parseServeArgs(["m", "--port", "http"]), ServeUsageError, "--port");
  assert.throws(() => parseServeArgs(["m", "--port", "70000"]), ServeUsageError, "not a port");
  assert.throws(() => parseServeArgs(["m", "--device", "tpu"]), ServeUsageError, "--device");
  assert.throws(() => parseServeArgs(["m", "--kv-dtype", "int4"]), ServeUsageError, "--kv-dtype");
  assert.throws(() => parseServeArgs(["m", "--max-batch", "0"]), ServeUsageError, "--max-batch");
  assert.throws(() => parseServeArgs(["m", "--prot", "1"]), ServeUsageError, 'Unknown option "--prot"');
  assert.throws(() => parseServeArgs(["m", "n"]), ServeUsageError, "Two targets");
  assert.throws(() => parseServeArgs(["m", "--host"]), ServeUsageError, "missing value");
});

Deno.test("serve stage: schema defaults, cache: false, model folder lookup", () => {
  const c = serveStage.schema.parse({ from: "adapt" });
  assert.equal(c.port, 8080);
  assert.equal(c.host, "127.0.0.1");
  assert.equal(c.model, "model");
  assert.equal(serveStage.cache, false);
  assert.deepEqual(serveStage.inputs(c), ["adapt"]);
  assert.throws(() => serveStage.schema.parse({ from: "a", port: 99999 }));
  assert.equal(c.lookahead, "auto");
  assert.equal(c.kv_dtype, "auto");
  assert.equal(serveStage.schema.parse({ from: "a", kv_dtype: "i8" }).kv_dtype, "i8");
  assert.throws(() => serveStage.schema.parse({ from: "a", kv_dtype: "int4" }));
  assert.equal(serveStage.schema.parse({ from: "a", lookahead: false }).lookahead, false);
  assert.throws(() => serveStage.schema.parse({ from: "a", lookahead: "yes" }));
  const dir = mkdtempSync(join(tmpdir(), "lte-serve-args-"));
  try {
    assert.throws(() => modelFolderOf(dir, "model"), /no model folder/);
    writeFileSync(join(dir, "config.json"), "{}");
    assert.equal(modelFolderOf(dir, "model"), dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

Deno.test("serveMain() refuses a missing folder and a pipeline without a serve stage (exit 2)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lte-serve-args-"));
  const err = console.error;
  const lines: string[] = [];
  console.error = (m: string) => lines.push(String(m));
  try {
    assert.equal(await serveMain([join(dir, "nothing")]), 2);
    assert.match(lines.join("\n"), /not a model folder/);
    const yaml = join(dir, "p.yaml");
    writeFileSync(yaml, "name: p\nstages:\n  - name: t\n    type: fine-tune\n");
    lines.length = 0;
    assert.equal(await serveMain([yaml]), 2);
    assert.match(lines.join("\n"), /no stage of type serve|p\.yaml/);
    assert.equal(await serveMain([]), 2);
  } finally {
    console.error = err;
    rmSync(dir, { recursive: true, force: true });
  }
});
