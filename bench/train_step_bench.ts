/**
 * Training-step benchmark: tokens/s of full AdamW steps (forward, backward, clipping, update) on
 * random data, then a per-native-op time breakdown of a few profiled steps ("where does a step's
 * time go"), and peak device memory.
 *
 *   deno run -A bench/train_step_bench.ts [--preset llama-58m|gpt2-124m|tiny] [--device cpu|cuda|auto]
 *       [--batch B] [--seq T] [--steps N] [--tf32] [--json out.json]
 *
 * Presets match the PyTorch reference table in ../shared/docs/anchors.md: llama-58m (8 layers,
 * d 512, d_ff 1376, vocab 32000, 16 × 512 tokens) and gpt2-124m (12 layers, d 768, vocab 50257,
 * 8 × 1024 tokens; gpt2-124m-v50304 pads the vocabulary to a multiple of 64). Timing: wall clock over N steps; every step ends with a device sync (the loss
 * and the gradient norm are read back), as in real training.
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import { getBackend, resolveDevice } from "../ffi/backend.ts";
import { type ModelConfigInput, resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { AdamW, backward, crossEntropy, gradNorm, Rng, scope, Tensor, zeroGrad } from "../tensor/mod.ts";

const PRESETS: Record<string, { model: ModelConfigInput; batch: number; seq: number }> = {
  "llama-58m": {
    model: {
      family: "llama",
      vocab_size: 32000,
      n_layer: 8,
      d_model: 512,
      n_head: 8,
      n_kv_head: 8,
      d_ff: 1376,
      max_seq: 512,
    },
    batch: 16,
    seq: 512,
  },
  "gpt2-124m": {
    model: { family: "gpt2", vocab_size: 50257, n_layer: 12, d_model: 768, n_head: 12, max_seq: 1024 },
    batch: 8,
    seq: 1024,
  },
  // The same with the vocabulary padded to a multiple of 64 (what fine-tune does by default).
  "gpt2-124m-v50304": {
    model: { family: "gpt2", vocab_size: 50304, n_layer: 12, d_model: 768, n_head: 12, max_seq: 1024 },
    batch: 8,
    seq: 1024,
  },
  tiny: {
    model: { family: "llama", vocab_size: 256, n_layer: 2, d_model: 64, n_head: 4, d_ff: 160, max_seq: 64 },
    batch: 8,
    seq: 64,
  },
};

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    preset: { type: "string", default: "llama-58m" },
    device: { type: "string", default: "auto" },
    batch: { type: "string" },
    seq: { type: "string" },
    steps: { type: "string", default: "20" },
    tf32: { type: "boolean", default: false },
    json: { type: "string" },
  },
});
const preset = PRESETS[a.preset!];
if (!preset) throw new Error(`--preset must be one of ${Object.keys(PRESETS).join(", ")}`);
const device = resolveDevice(a.device as "cpu" | "cuda" | "auto");
const B = Number(a.batch ?? preset.batch), T = Number(a.seq ?? preset.seq), steps = Number(a.steps);
const cfg = resolveModelConfig({ ...preset.model, max_seq: Math.max(T, preset.model.max_seq ?? T) });
const be = getBackend(device);
if (device === "cuda") be.setAllowTf32(a.tf32!);

const model = DecoderLM.init(cfg, { device, seed: 0 });
const opt = new AdamW(model.parameters(), { lr: 1e-4, weightDecay: 0.1 });
const rng = new Rng(1);
const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocab_size));
const targets = Int32Array.from({ length: B * T }, () => rng.int(cfg.vocab_size));

function step(): number {
  zeroGrad(model.parameters());
  const loss = scope(() => {
    const l = crossEntropy(
      model.forward(Tensor.fromArray(ids, [B, T], { device })),
      Tensor.fromArray(targets, [B, T], { device }),
    );
    backward(l);
    return l.item();
  });
  opt.update({ gradScale: gradNorm(model.parameters(), 1.0).scale });
  return loss;
}

const info = be.deviceInfo();
console.log(
  `${a.preset}: ${(model.numParams() / 1e6).toFixed(2)}M params, ${B} × ${T} tokens, ${device}${
    device === "cuda" ? `, TF32 ${a.tf32 ? "on" : "off"}` : ""
  }`,
);
console.log(`device: ${JSON.stringify(info)}`);
for (let i = 0; i < 3; i++) step(); // warm-up: allocator cache, cuBLAS heuristics
const t0 = performance.now();
for (let i = 0; i < steps; i++) step();
const sec = (performance.now() - t0) / 1000;
const tokPerS = (B * T * steps) / sec;
console.log(
  `${steps} steps in ${sec.toFixed(2)} s: ${(sec / steps * 1000).toFixed(1)} ms/step, ${Math.round(tokPerS)} tokens/s`,
);

be.startProfile();
const profSteps = 3;
for (let i = 0; i < profSteps; i++) step();
const prof = be.stopProfile();
const total = prof.reduce((s, p) => s + p.ms, 0);
console.log(
  `\nper-op time over ${profSteps} profiled steps (each call synchronized; ${(total / profSteps).toFixed(1)} ms/step):`,
);
console.log("native function                    calls/step   ms/step   share");
for (const p of prof.slice(0, 20)) {
  console.log(
    `${p.op.padEnd(34)} ${(p.calls / profSteps).toFixed(0).padStart(10)} ${(p.ms / profSteps).toFixed(2).padStart(9)} ${
      (100 * p.ms / total).toFixed(1).padStart(6)
    }%`,
  );
}
const mem = be.memStats();
console.log(`\npeak memory in use: ${(mem.peakBytesInUse / 2 ** 30).toFixed(2)} GiB`);
if (a.json) {
  writeFileSync(
    a.json,
    JSON.stringify(
      {
        preset: a.preset,
        device,
        info,
        B,
        T,
        steps,
        tf32: a.tf32,
        ms_per_step: sec / steps * 1000,
        tokens_per_s: tokPerS,
        profile: prof,
        peak_bytes: mem.peakBytesInUse,
      },
      null,
      2,
    ),
  );
}
opt.dispose();
model.dispose();
