/**
 * Issue 6, the cases inside the fine-tune stage and the data it reads: divergence, short and
 * non-UTF-8 corpora, memory that cannot fit, validate-time checks, and messages that were raw.
 * Tiny CPU models on a few kB of text (see the table in docs/pipeline.md, "Reliability (issue 6)").
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../pipeline/config.ts";
import { createProgress } from "../pipeline/progress.ts";
import { PlanError, planPipeline, readManifest, runPipeline } from "../pipeline/runner.ts";
import type { StageContext } from "../pipeline/stage.ts";
import { FineTuneSchema, runFineTune } from "../stages/fine_tune.ts";
import { checkTrainingMemory } from "../stages/_memory.ts";
import { resolveModelConfig } from "../models/config.ts";
import { readCheckpointConfig } from "../models/checkpoint.ts";
import { CorpusError, loadCorpus } from "../text/corpus.ts";
import { tokenizeDocument } from "../text/dataset.ts";
import { BytesTokenizer } from "../text/tokenizer.ts";

const TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, having little money. ".repeat(40);

function yaml(over: { data?: string; optimizer?: string; model?: string; training?: string } = {}): string {
  return `name: rel
stages:
  - name: train
    type: fine-tune
    model: ${over.model ?? "{ family: gpt2, n_layer: 1, d_model: 16, n_head: 2, max_seq: 16 }"}
    tokenizer: { type: bytes }
    data: ${over.data ?? "{ corpus: { files: [corpus.txt] }, seq_len: 16, val_fraction: 0.1 }"}
    optimizer: ${over.optimizer ?? "{ lr: 0.01 }"}
    training: ${over.training ?? "{ steps: 4, batch_size: 2, final_eval_batches: 2 }"}
`;
}

async function setup(text = TEXT): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "corpus.txt"), text);
  return dir;
}

async function runIn(dir: string, y: string) {
  await Deno.writeTextFile(join(dir, "p.yaml"), y);
  const config = parseConfig(y, { file: join(dir, "p.yaml"), overrides: [`run_dir=${join(dir, "run")}`] });
  const lines: string[] = [];
  const result = await runPipeline(config, {
    handleSignals: false,
    output: { write: (t) => void lines.push(t), isTerminal: false },
  });
  return { config, result, text: lines.join(""), manifest: await readManifest(join(dir, "run"), "train") };
}

Deno.test("a diverging run (loss NaN/inf) stops with the step and a hint, fails, and is never cached", async () => {
  const dir = await setup();
  const r = await runIn(
    dir,
    yaml({
      optimizer: "{ lr: 1.0e+30, min_lr: 0, grad_clip: 0, schedule: constant }",
      training: "{ steps: 6, batch_size: 2 }",
    }),
  );
  assert.equal(r.result.status, "failed");
  assert.equal(r.manifest!.status, "failed");
  assert.match(
    r.manifest!.error!,
    /training diverged: the (loss|gradient norm) is (NaN|-?Infinity) at step [2-6]; .*optimizer\.lr/,
  );
  await assert.rejects(() => Deno.stat(join(dir, "run", "stages", "train", "model")), Deno.errors.NotFound);
  const plan = await planPipeline(r.config);
  assert.equal(plan[0]!.cached, false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a corpus shorter than one sequence fails, naming the file and the sizes", async () => {
  const dir = await setup("tiny text, 30 bytes long.....\n");
  const r = await runIn(dir, yaml({ data: "{ corpus: { files: [corpus.txt] }, seq_len: 16, val_fraction: 0.5 }" }));
  assert.equal(r.manifest!.status, "failed");
  assert.match(
    r.manifest!.error!,
    /corpus corpus\.txt is too short: \d+ train \+ \d+ validation tokens.*seq_len \+ 1 = 17/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a non-UTF-8 corpus (Latin-1, UTF-16) fails with the file name and the count of bad bytes", async () => {
  const dir = await Deno.makeTempDir();
  const latin1 = new Uint8Array([...new TextEncoder().encode("caf"), 0xe9, 0x20, 0x6e, 0x61, 0xef, 0x76, 0x65]);
  await Deno.writeFile(join(dir, "latin1.txt"), latin1);
  assert.throws(
    () => loadCorpus({ files: ["latin1.txt"] }, { baseDir: dir }),
    (e: unknown) =>
      e instanceof CorpusError && /latin1\.txt: not UTF-8 text: 2 of 10 bytes .*first at byte 3/.test(e.message),
  );
  const utf16 = new Uint8Array([0xff, 0xfe, 0x68, 0x00, 0x69, 0x00]);
  await Deno.writeFile(join(dir, "u16.txt"), utf16);
  assert.throws(
    () => loadCorpus({ files: ["u16.txt"] }, { baseDir: dir }),
    /u16\.txt: not UTF-8 .*UTF-16 byte-order mark/,
  );
  // With the bytes tokenizer, encoding: bytes trains on the raw bytes instead (ids = bytes).
  const raw = loadCorpus({ files: ["latin1.txt", "u16.txt"], encoding: "bytes" }, { baseDir: dir }).documents;
  const tok = new BytesTokenizer({ type: "bytes", eos: "<|endoftext|>" });
  assert.deepEqual(tokenizeDocument(raw[0]!, tok).tokens, [...latin1, tok.eosId]);
  assert.deepEqual(tokenizeDocument(raw[1]!, tok).tokens, [...utf16, tok.eosId]);
  assert.throws(() =>
    FineTuneSchema.parse({
      model: { family: "gpt2", n_layer: 1, d_model: 16, n_head: 2, max_seq: 16 },
      tokenizer: { type: "gpt2" },
      data: { corpus: { files: ["latin1.txt"], encoding: "bytes" }, seq_len: 16 },
      training: { steps: 2 },
    }), /only the bytes tokenizer/);
  // Valid UTF-8 (with a BOM and multi-byte characters) still reads.
  await Deno.writeTextFile(join(dir, "ok.txt"), "\ufeffnaïve café ✓ 𝄞");
  assert.equal(loadCorpus({ files: ["ok.txt"] }, { baseDir: dir }).documents[0]!.text, "naïve café ✓ 𝄞");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("validate refuses a model that cannot fit in memory, with the estimate (max_seq typo, huge d_model)", async () => {
  const dir = await setup();
  for (
    const model of [
      "{ family: gpt2, n_layer: 1, d_model: 16, n_head: 2, max_seq: 100000000000 }",
      "{ family: llama, n_layer: 2, d_model: 1048576, n_head: 8, max_seq: 16 }",
    ]
  ) {
    const y = yaml({ model });
    const config = parseConfig(y, { file: join(dir, "p.yaml"), overrides: [`run_dir=${join(dir, "run")}`] });
    await assert.rejects(
      () => planPipeline(config),
      (e: unknown) =>
        e instanceof PlanError &&
        /model: training needs about [\d.]+ [GTP]iB but this machine's memory \(cpu\) is/.test(e.message),
    );
  }
  // The estimate itself: 16 bytes per parameter plus activations; a small model fits in 1 GiB.
  const small = resolveModelConfig({
    family: "gpt2",
    vocab_size: 256,
    n_layer: 1,
    d_model: 16,
    n_head: 2,
    max_seq: 16,
  });
  assert.equal(checkTrainingMemory(small, 2, 16, "cpu", { bytes: 1 << 30, what: "1 GiB" }), undefined);
  assert.match(
    checkTrainingMemory(small, 2, 16, "cpu", { bytes: 1000, what: "a tiny device" })!,
    /a tiny device is 1000 B/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("validate catches seq_len > max_seq, min_lr > lr, warmup_steps > steps and missing tokenizer files", async () => {
  const y = yaml({
    data: "{ corpus: { files: [corpus.txt] }, seq_len: 32 }",
    optimizer: "{ lr: 0.001, min_lr: 0.01, warmup_steps: 10 }",
  });
  assert.throws(() => parseConfig(y, { file: "v.yaml" }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    const msgs = e.issues.map((i) => `${i.path}: ${i.message}`);
    assert.ok(
      msgs.some((m) => /^stages\[0\]\.data\.seq_len: data\.seq_len 32 exceeds model\.max_seq 16/.test(m)),
      msgs.join("\n"),
    );
    assert.ok(msgs.some((m) => /^stages\[0\]\.optimizer\.min_lr: .*above optimizer\.lr/.test(m)), msgs.join("\n"));
    assert.ok(
      msgs.some((m) => /^stages\[0\]\.optimizer\.warmup_steps: .*exceeds training\.steps 4/.test(m)),
      msgs.join("\n"),
    );
    return true;
  });
  const dir = await setup();
  const tok = yaml().replace("tokenizer: { type: bytes }", "tokenizer: { type: hf, path: nope/tokenizer.json }");
  const config = parseConfig(tok, { file: join(dir, "p.yaml"), overrides: [`run_dir=${join(dir, "run")}`] });
  await assert.rejects(() => planPipeline(config), /tokenizer\.path: file not found: .*nope\/tokenizer\.json/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("raw messages: bad config.json values and an unreadable trainer_state.json name the file", async () => {
  const dir = await setup();
  const ckpt = join(dir, "ckpt");
  await Deno.mkdir(ckpt);
  await Deno.writeTextFile(
    join(ckpt, "config.json"),
    JSON.stringify({ model_type: "gpt2", vocab_size: 256, n_layer: 1, n_embd: 16, n_head: 0 }),
  );
  assert.throws(() => readCheckpointConfig(ckpt), (e: unknown) => {
    const msg = (e as Error).message;
    assert.ok(msg.includes(join(ckpt, "config.json")), msg);
    assert.match(msg, /model\.n_head: Too small.*\(got 0\)/);
    assert.doesNotMatch(msg, /"code":|\[\s*\{/); // no zod JSON dump
    return true;
  });
  // trainer_state.json that is a folder (EISDIR) or garbage: the error names it and says what to do.
  const c = FineTuneSchema.parse({
    model: { family: "gpt2", n_layer: 1, d_model: 16, n_head: 2, max_seq: 16 },
    tokenizer: { type: "bytes" },
    data: { corpus: { files: ["corpus.txt"] }, seq_len: 16, val_fraction: 0.1 },
    training: { steps: 2, batch_size: 2 },
  });
  for (const bad of ["folder", "{garbage"]) {
    const stageDir = join(dir, `stage-${bad === "folder" ? "dir" : "garbage"}`);
    const state = join(stageDir, "state", "trainer_state.json");
    await Deno.mkdir(join(stageDir, "state"), { recursive: true });
    if (bad === "folder") await Deno.mkdir(state);
    else await Deno.writeTextFile(state, bad);
    const noop = () => {};
    const ctx: StageContext = {
      name: "train",
      type: "fine-tune",
      runDir: dir,
      dir: stageDir,
      configDir: dir,
      hash: "t",
      inputs: {},
      pipeline: { name: "t", seed: 0, device: "cpu", run_dir: dir },
      resume: true,
      signal: new AbortController().signal,
      log: noop,
      metric: noop,
      progress: (o) => createProgress(o, { write: noop, isTerminal: false }),
    };
    await assert.rejects(
      () => runFineTune(c, ctx),
      (e: unknown) =>
        (e as Error).message.startsWith(`${state}: cannot read the saved training state`) &&
        /--force/.test((e as Error).message),
    );
  }
  await Deno.remove(dir, { recursive: true });
});
