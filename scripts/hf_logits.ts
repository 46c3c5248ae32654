/**
 * HF interoperability helper (used by scripts/hf_interop.py on the GPU machine, where PyTorch and
 * transformers are installed):
 *   deno run -A scripts/hf_logits.ts load DIR IDS_JSON OUT_BIN [device]
 *       load a checkpoint folder (saved by transformers), run ids (a JSON [B][T] array), write
 *       float32 logits (B, T, V) little-endian to OUT_BIN
 *   deno run -A scripts/hf_logits.ts save FAMILY DIR IDS_JSON OUT_BIN [device]
 *       build a small random model of FAMILY here, save it as an HF folder, write its logits
 * @module
 */
import { writeFileSync } from "node:fs";
import { resolveDevice } from "../ffi/backend.ts";
import { loadCheckpoint, saveCheckpoint } from "../models/checkpoint.ts";
import { resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { noGrad, scope, Tensor } from "../tensor/mod.ts";

function logits(model: DecoderLM, idsJson: string, out: string, device: "cpu" | "cuda"): void {
  const ids = JSON.parse(Deno.readTextFileSync(idsJson)) as number[][];
  const b = ids.length, t = ids[0]!.length;
  const data = scope(() =>
    noGrad(() => model.forward(Tensor.fromArray(Int32Array.from(ids.flat()), [b, t], { device })).toArray())
  );
  writeFileSync(out, new Uint8Array(data.buffer));
  console.log(`wrote logits [${b}, ${t}, ${data.length / (b * t)}] to ${out}`);
}

const [cmd, ...rest] = Deno.args;
if (cmd === "load") {
  const [dir, ids, out, dev] = rest as [string, string, string, string?];
  const device = resolveDevice((dev ?? "auto") as "cpu" | "cuda" | "auto");
  const model = loadCheckpoint(dir, { device });
  logits(model, ids, out, device);
  model.dispose();
} else if (cmd === "save") {
  const [family, dir, ids, out, dev] = rest as [string, string, string, string, string?];
  const device = resolveDevice((dev ?? "auto") as "cpu" | "cuda" | "auto");
  const cfg = resolveModelConfig(
    family === "gpt2"
      ? { family: "gpt2", vocab_size: 101, n_layer: 2, d_model: 64, n_head: 4, max_seq: 32 }
      : { family: "llama", vocab_size: 101, n_layer: 2, d_model: 64, n_head: 4, n_kv_head: 2, d_ff: 96, max_seq: 32 },
  );
  const model = DecoderLM.init(cfg, { device, seed: 42 });
  saveCheckpoint(dir, model);
  logits(model, ids, out, device);
  model.dispose();
} else {
  console.error("usage: hf_logits.ts load DIR IDS OUT [device] | save FAMILY DIR IDS OUT [device]");
  Deno.exit(2);
}
