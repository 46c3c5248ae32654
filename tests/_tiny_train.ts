/**
 * A tiny 2-layer decoder trained for a few steps on a fixed synthetic batch stream; shared by the
 * CPU training test and the CPU<->CUDA loss-curve test. Everything random comes from seeded host
 * RNGs, so both backends see identical weights and data.
 */
import type { Family } from "../models/config.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { AdamW, backward, crossEntropy, type Device, gradNorm, Rng, scope, Tensor, zeroGrad } from "../tensor/mod.ts";

/** Trains a tiny model and returns the loss at every step. */
export function tinyLossCurve(family: Family, device: Device, steps: number, seed = 0): number[] {
  const vocab = 37, B = 4, T = 16;
  const cfg = resolveModelConfig(
    family === "gpt2"
      ? { family, vocab_size: vocab, n_layer: 2, d_model: 32, n_head: 4, max_seq: T }
      : { family, vocab_size: vocab, n_layer: 2, d_model: 32, n_head: 4, n_kv_head: 2, d_ff: 64, max_seq: T },
  );
  const model = DecoderLM.init(cfg, { device, seed });
  const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.1 });
  const rng = new Rng(seed + 1);
  const losses: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      // A learnable stream: each sequence counts up by a random stride modulo the vocabulary.
      const ids = new Int32Array(B * (T + 1));
      for (let b = 0; b < B; b++) {
        const start = rng.int(vocab), stride = 1 + rng.int(3);
        for (let t = 0; t <= T; t++) ids[b * (T + 1) + t] = (start + stride * t) % vocab;
      }
      const inputs = new Int32Array(B * T), targets = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        inputs.set(ids.subarray(b * (T + 1), b * (T + 1) + T), b * T);
        targets.set(ids.subarray(b * (T + 1) + 1, (b + 1) * (T + 1)), b * T);
      }
      zeroGrad(model.parameters());
      losses.push(scope(() => {
        const logits = model.forward(Tensor.fromArray(inputs, [B, T], { device }));
        const loss = crossEntropy(logits, Tensor.fromArray(targets, [B, T], { device }));
        backward(loss);
        return loss.item();
      }));
      opt.update({ gradScale: gradNorm(model.parameters(), 1.0).scale });
    }
  } finally {
    opt.dispose();
    model.dispose();
  }
  return losses;
}
