/** Checkpoint folders: round trip, HF name aliases, and every kind of bad checkpoint. */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CheckpointError, loadCheckpoint, recoverCheckpoint, saveCheckpoint } from "../models/checkpoint.ts";
import { fromHfConfig, resolveModelConfig, toHfConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors.ts";
import { noGrad, scope, Tensor } from "../tensor/mod.ts";

const gpt2 = resolveModelConfig({ family: "gpt2", vocab_size: 50, n_layer: 2, d_model: 16, n_head: 2, max_seq: 8 });
const llama = resolveModelConfig({
  family: "llama",
  vocab_size: 50,
  n_layer: 1,
  d_model: 16,
  n_head: 4,
  n_kv_head: 2,
  d_ff: 24,
  max_seq: 8,
});

function logits(m: DecoderLM): number[] {
  return scope(() => noGrad(() => [...m.forward(Tensor.fromArray(new Int32Array([1, 7, 3, 49]), [1, 4])).toArray()]));
}

for (const cfg of [gpt2, llama]) {
  Deno.test(`saveCheckpoint() + loadCheckpoint() round-trip a ${cfg.family} model exactly`, () => {
    const dir = Deno.makeTempDirSync();
    const m = DecoderLM.init(cfg, { device: "cpu", seed: 4 });
    try {
      saveCheckpoint(join(dir, "ckpt"), m);
      const back = loadCheckpoint(join(dir, "ckpt"), { device: "cpu" });
      assert.deepEqual(logits(back), logits(m));
      assert.deepEqual(fromHfConfig(JSON.parse(readFileSync(join(dir, "ckpt/config.json"), "utf8"))), cfg);
      back.dispose();
    } finally {
      m.dispose();
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test("loadCheckpoint() accepts GPT-2 names without the transformer. prefix and ignores attn.bias buffers", () => {
  const dir = Deno.makeTempDirSync();
  const m = DecoderLM.init(gpt2, { device: "cpu", seed: 5 });
  try {
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const [name, a] of m.toArrays()) {
      tensors[name.replace(/^transformer\./, "")] = { dtype: "F32", shape: [...m.param(name).shape], data: a };
    }
    tensors["h.0.attn.bias"] = { dtype: "F32", shape: [1, 1, 8, 8], data: new Float32Array(64) };
    writeSafetensors(join(dir, "model.safetensors"), tensors);
    writeFileSync(join(dir, "config.json"), JSON.stringify(toHfConfig(gpt2)));
    const back = loadCheckpoint(dir, { device: "cpu" });
    assert.deepEqual(logits(back), logits(m));
    back.dispose();
  } finally {
    m.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bad checkpoints are CheckpointErrors naming the file and the tensor or key", () => {
  const dir = Deno.makeTempDirSync();
  const m = DecoderLM.init(llama, { device: "cpu", seed: 6 });
  try {
    const ck = join(dir, "c");
    saveCheckpoint(ck, m);
    const cfgPath = join(ck, "config.json");
    const good = readFileSync(cfgPath, "utf8");
    // Shapes that do not match config.json.
    writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(good), intermediate_size: 32 }));
    assert.throws(
      () => loadCheckpoint(ck, { device: "cpu" }),
      (e: unknown) =>
        e instanceof CheckpointError &&
        /model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[24, 16\], config\.json implies \[32, 16\]/
          .test(e.message),
    );
    // Unknown model type, broken JSON, missing config.
    writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(good), model_type: "bert" }));
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /config\.json: model_type "bert" is not supported/);
    writeFileSync(cfgPath, "{ not json");
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /config\.json: invalid JSON/);
    Deno.removeSync(cfgPath);
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /config\.json: not found/);
    writeFileSync(cfgPath, good);
    // A missing tensor, an unexpected one.
    const st = readSafetensors(join(ck, "model.safetensors"));
    const all: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const n of st.names()) all[n] = { dtype: "F32", shape: st.info(n).shape, data: st.getF32(n) };
    const { ["model.norm.weight"]: _dropped, ...missing } = all;
    writeSafetensors(join(ck, "model.safetensors"), missing);
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /missing tensor model\.norm\.weight/);
    writeSafetensors(join(ck, "model.safetensors"), {
      ...all,
      "extra.weight": { dtype: "F32", shape: [2], data: new Float32Array(2) },
    });
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /unexpected tensors extra\.weight/);
    // A truncated safetensors header.
    const bytes = readFileSync(join(ck, "model.safetensors"));
    writeFileSync(join(ck, "model.safetensors"), bytes.subarray(0, 40));
    assert.throws(() => loadCheckpoint(ck, { device: "cpu" }), /truncated safetensors header/);
  } finally {
    m.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fromHfConfig() rejects unsupported architectures by key", () => {
  assert.throws(
    () => fromHfConfig({ model_type: "llama", hidden_act: "gelu" }, "x/config.json"),
    /x\/config\.json: hidden_act "gelu"/,
  );
  assert.throws(
    () => fromHfConfig({ model_type: "llama", hidden_act: "silu", rope_scaling: { type: "linear" } }),
    /rope_scaling/,
  );
  assert.throws(() => fromHfConfig({ model_type: "gpt2", n_embd: "wide" }), /key "n_embd" must be a number/);
});

Deno.test("recoverCheckpoint() restores the previous folder when a save stopped between its two renames", () => {
  const dir = Deno.makeTempDirSync();
  const m = DecoderLM.init(llama, { device: "cpu", seed: 8 });
  try {
    const ck = join(dir, "state");
    saveCheckpoint(ck, m);
    Deno.renameSync(ck, join(dir, ".state.old-4242")); // what a crash mid-swap leaves behind
    assert.equal(recoverCheckpoint(ck), true);
    const back = loadCheckpoint(ck, { device: "cpu" });
    assert.deepEqual(logits(back), logits(m));
    back.dispose();
    assert.equal(recoverCheckpoint(ck), false); // nothing to do when the folder is there
  } finally {
    m.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
});
