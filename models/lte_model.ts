/**
 * Loading an LTE model folder (config.json + model.safetensors + lte.json + routers.safetensors)
 * with its routers installed in a chosen FFN mode, and reading per-layer expert masks.
 *
 * @example Hard-mode masks of an adapted model
 * ```ts
 * const { model, meta } = loadLteModel("runs/x/stages/stage2/model", { device: "cpu" });
 * const { logits, masks } = routerMasks(model, Tensor.fromArray(ids, [1, ids.length]));
 * // masks[layer][t * meta.experts_per_layer + e] === 1  <=>  expert e is on for token t
 * ```
 * @module
 */
import { noGrad, scope, type Tensor } from "../tensor/mod.ts";
import type { Device } from "../tensor/mod.ts";
import { loadCheckpoint, readCheckpointConfig } from "./checkpoint.ts";
import type { DecoderLM } from "./decoder.ts";
import type { LteMeta } from "./lte_artifacts.ts";
import { createRouting, type FfnMode, readLteRouting } from "./routing.ts";

/**
 * Loads an LTE model folder with its routers (frozen unless `trainable`) in `mode` (default hard).
 * Throws `LteArtifactError` naming the file when lte.json or the routers are missing or do not
 * match the model (layer count, expert count, d_model).
 */
export function loadLteModel(
  dir: string,
  opts: { device: Device; mode?: FfnMode; trainable?: boolean },
): { model: DecoderLM; meta: LteMeta } {
  const cfg = readCheckpointConfig(dir);
  const { meta, arrays } = readLteRouting(dir, cfg);
  const model = loadCheckpoint(dir, { device: opts.device });
  try {
    model.routing = createRouting(cfg, arrays, {
      mode: opts.mode ?? "hard",
      expertSize: meta.expert_size,
      tau: meta.tau,
      trainable: opts.trainable ?? false,
      device: opts.device,
      source: `${dir}/${meta.routers!.file}`,
    });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, meta };
}

/**
 * One forward pass (no gradient) returning the logits and, per layer, the hard expert mask as host
 * 0/1 bytes (R*N, row-major: token r = b*T + t, expert e), with score > τ strict. The logits are
 * those of the model's current mode (hard for a model from `loadLteModel`).
 */
export function routerMasks(model: DecoderLM, ids: Tensor): { logits: Float32Array; masks: Uint8Array[] } {
  const r = model.routing;
  if (!r) throw new Error("routerMasks: the model has no routers (load it with loadLteModel)");
  return scope(() =>
    noGrad(() => {
      const f = model.forward(ids, { collectScores: true });
      const masks = f.scores.map((g) => {
        const s = g.toArray() as Float32Array;
        const m = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) m[i] = s[i]! > r.tau ? 1 : 0;
        return m;
      });
      return { logits: f.logits.toArray() as Float32Array, masks };
    })
  );
}
