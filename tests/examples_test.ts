/**
 * Every example pipeline validates against the real stage schemas (recursive glob, with the count
 * checked so a new file cannot be skipped silently), and the real fine-tune schema reports user
 * mistakes with a location and a did-you-mean.
 */
import assert from "node:assert/strict";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { ConfigError, loadConfig, parseConfig } from "../pipeline/mod.ts";
import "../stages/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? yamlFiles(p) : /\.ya?ml$/.test(n) ? [p] : [];
  });
}

Deno.test("every examples/**/*.yaml validates against the registered stage schemas", async () => {
  const files = yamlFiles(join(ROOT, "examples"));
  assert.equal(
    files.length,
    3,
    `expected 3 example pipelines, found: ${files.map((f) => relative(ROOT, f)).join(", ")}`,
  );
  for (const f of files) {
    const config = await loadConfig(f);
    assert.ok(config.stages.length > 0, f);
  }
});

Deno.test("the fine-tune schema reports a misspelled key with file:line:col and a did-you-mean", () => {
  const text = `name: t
stages:
  - name: train
    type: fine-tune
    model: { family: gpt3, n_layer: 2, d_model: 64, n_head: 4 }
    tokenizer: { type: bytes }
    data: { corpus: { files: [a.txt] }, seq_len: "long" }
    training: { stepz: 10 }
`;
  assert.throws(() => parseConfig(text, { file: "x.yaml" }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    const msg = e.message;
    assert.match(msg, /x\.yaml:5:\d+ stages\[0\]\.model\.family \(stage train\): .*gpt3/);
    assert.match(msg, /x\.yaml:7:\d+ stages\[0\]\.data\.seq_len \(stage train\): expected number/);
    assert.match(
      msg,
      /x\.yaml:8:\d+ stages\[0\]\.training\.stepz \(stage train\): unknown key "stepz" \(did you mean "steps"\?\)/,
    );
    return true;
  });
});

Deno.test("the fine-tune schema reports architecture rules (heads must divide d_model) at validation time", () => {
  const text = `name: t
stages:
  - name: train
    type: fine-tune
    model: { family: llama, n_layer: 1, d_model: 64, n_head: 3 }
    tokenizer: { type: bytes }
    data: { corpus: { files: [a.txt] } }
    training: { steps: 1 }
`;
  assert.throws(
    () => parseConfig(text, { file: "y.yaml" }),
    /y\.yaml:5:\d+ stages\[0\]\.model \(stage train\): d_model \(64\) must be divisible by model\.n_head \(3\)/,
  );
});
