/**
 * Memory a training run needs, estimated from the config alone (no allocation), so `validate` can
 * refuse a model that cannot fit on the chosen device instead of letting the run eat all memory.
 *
 * f32 training: weights + gradients + AdamW's two moments = 16 bytes per parameter; activations
 * kept for backward ≈ per token and layer 10·d_model + 4·d_ff + 2·n_head·seq_len floats, plus the
 * logits and their gradient (2·vocab floats per token). It is an estimate (±50 %), used only to
 * refuse configs that are far off (a typo in max_seq or d_model), not to tune batch sizes.
 *
 * @module
 */
import { getBackend, resolveDevice } from "../tensor/mod.ts";
import { countParams, type ModelConfig } from "../models/config.ts";
import type { DeviceSetting } from "../pipeline/stage.ts";

/** Estimated training memory, in bytes. */
export interface TrainingMemory {
  params: number;
  /** Weights, gradients, AdamW moments. */
  paramBytes: number;
  /** Activations kept for backward, for one micro-batch. */
  activationBytes: number;
  total: number;
}

/** Estimate the memory of training `cfg` at `batch` × `seqLen` tokens per micro-batch. */
export function estimateTrainingMemory(cfg: ModelConfig, batch: number, seqLen: number): TrainingMemory {
  const params = countParams(cfg);
  const paramBytes = params * 16;
  const perToken = cfg.n_layer * (10 * cfg.d_model + 4 * cfg.d_ff + 2 * cfg.n_head * seqLen) + 2 * cfg.vocab_size;
  const activationBytes = batch * seqLen * perToken * 4;
  return { params, paramBytes, activationBytes, total: paramBytes + activationBytes };
}

/** Memory of the device a run will use, or undefined when it cannot be told (no CUDA library). */
export function deviceMemory(device: DeviceSetting): { bytes: number; what: string } | undefined {
  try {
    const kind = device === "cpu" ? "cpu" : resolveDevice(device);
    if (kind === "cpu") return { bytes: Deno.systemMemoryInfo().total, what: "this machine's memory (cpu)" };
    const info = getBackend(kind).deviceInfo();
    const total = Number(info.memory_total);
    return Number.isFinite(total) && total > 0
      ? { bytes: total, what: `the GPU's memory (${String(info.name ?? "cuda")})` }
      : undefined;
  } catch {
    return undefined;
  }
}

/** `12.3 GiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) n /= 1024, i++;
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toPrecision(3)} ${units[i]}`;
}

/**
 * A preflight message when training `cfg` cannot fit on `device`, else undefined.
 *
 * @param available Device memory (default: {@linkcode deviceMemory}); tests pass a fixed value.
 */
export function checkTrainingMemory(
  cfg: ModelConfig,
  batch: number,
  seqLen: number,
  device: DeviceSetting,
  available: { bytes: number; what: string } | undefined = deviceMemory(device),
): string | undefined {
  const m = estimateTrainingMemory(cfg, batch, seqLen);
  if (available === undefined || m.total <= available.bytes) return undefined;
  return `model: training needs about ${formatBytes(m.total)} but ${available.what} is ${
    formatBytes(available.bytes)
  }: ${(m.params / 1e6).toFixed(1)}M parameters × 16 bytes (weights, gradients, AdamW) = ${
    formatBytes(m.paramBytes)
  }, activations for batch_size ${batch} × seq_len ${seqLen} ≈ ${formatBytes(m.activationBytes)} ` +
    `(max_seq ${cfg.max_seq}, d_model ${cfg.d_model}, n_layer ${cfg.n_layer}, d_ff ${cfg.d_ff}, vocab ${cfg.vocab_size}); ` +
    `make the model or training.batch_size / data.seq_len smaller`;
}
