/**
 * The runner on real (tiny) stages: run dir layout, caching and invalidation, --force, --only,
 * failure handling, --resume, interruption.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { parseConfig, type PipelineConfig } from "../pipeline/config.ts";
import { PlanError, planPipeline, readManifest, type RunOptions, runPipeline } from "../pipeline/runner.ts";
import { writeFileAtomic, writeJsonAtomic } from "../pipeline/stage.ts";
import { getStage, registerStage } from "../stages/registry.ts";

/** How often each stage name's run() was called, and with which resume flag. */
const calls: { name: string; resume: boolean; dirFiles: string[] }[] = [];

const WriteText = z.strictObject({
  text: z.string(),
  repeat: z.number().int().positive().default(1),
  fail: z.boolean().default(false),
  steps: z.number().int().nonnegative().default(0),
});

if (!getStage("write-text")) {
  registerStage({
    type: "write-text",
    description: "Writes text (repeated) to out.txt",
    schema: WriteText,
    inputs: () => [],
    async run(c: z.infer<typeof WriteText>, ctx) {
      calls.push({
        name: ctx.name,
        resume: ctx.resume,
        dirFiles: [...Deno.readDirSync(ctx.dir)].map((e) => e.name).sort(),
      });
      const bar = ctx.progress({ total: c.steps, label: ctx.name });
      let step = 0;
      for (; step < c.steps && !ctx.signal.aborted; step++) {
        bar.update(step + 1, { loss: 1 / (step + 1) });
        ctx.metric({ step, loss: 1 / (step + 1) });
        await new Promise((r) => setTimeout(r, 1));
      }
      bar.done();
      if (c.fail) throw new Error(`write-text failed on purpose`);
      await writeFileAtomic(join(ctx.dir, "out.txt"), c.text.repeat(c.repeat));
      ctx.log(`wrote ${c.text.length * c.repeat} chars`);
      return { chars: c.text.length * c.repeat, steps: step, resumed: ctx.resume };
    },
  });
}

const Count = z.strictObject({ from: z.string() });
if (!getStage("count")) {
  registerStage({
    type: "count",
    description: "Counts the characters of an upstream stage's out.txt",
    schema: Count,
    inputs: (c: z.infer<typeof Count>) => [c.from],
    async run(c: z.infer<typeof Count>, ctx) {
      calls.push({ name: ctx.name, resume: ctx.resume, dirFiles: [] });
      const up = ctx.inputs[c.from]!;
      const text = await Deno.readTextFile(join(up.dir, "out.txt"));
      await writeJsonAtomic(join(ctx.dir, "count.json"), { n: text.length, upstream: up.summary });
      return { n: text.length };
    },
  });
}

const YAML_TEXT = `name: rt
seed: 0
stages:
  - name: a
    type: write-text
    text: hello
  - name: b
    type: count
    from: a
  - name: c
    type: write-text
    text: xyz
`;

function config(runDir: string, overrides: string[] = [], text = YAML_TEXT): PipelineConfig {
  return parseConfig(text, { file: "rt.yaml", overrides: [`run_dir=${runDir}`, ...overrides] });
}

function sink() {
  const lines: string[] = [];
  return { lines, output: { write: (t: string) => void lines.push(t), isTerminal: false } };
}

async function run(cfg: PipelineConfig, opts: RunOptions = {}) {
  const s = sink();
  calls.length = 0;
  const result = await runPipeline(cfg, { handleSignals: false, output: s.output, ...opts });
  return { result, text: s.lines.join(""), ran: calls.map((c) => c.name) };
}

function actions(result: Awaited<ReturnType<typeof runPipeline>>) {
  return Object.fromEntries(result.stages.map((s) => [s.name, s.status ? `${s.action}:${s.status}` : s.action]));
}

Deno.test("runPipeline() writes the run dir layout and stage manifests", async () => {
  const dir = await Deno.makeTempDir();
  const { result, ran } = await run(config(dir, ["stages.a.steps=3"]));
  assert.equal(result.status, "complete");
  assert.deepEqual(ran, ["a", "b", "c"]);
  for (const f of ["config.yaml", "overrides.yaml", "env.json", "log.txt", "metrics.jsonl"]) {
    assert.ok((await Deno.stat(join(dir, f))).isFile, f);
  }
  assert.match(await Deno.readTextFile(join(dir, "config.yaml")), /text: hello\n\s+repeat: 1/);
  assert.match(await Deno.readTextFile(join(dir, "overrides.yaml")), /stages\.a\.steps=3/);
  const env = JSON.parse(await Deno.readTextFile(join(dir, "env.json")));
  assert.equal(env.device_requested, "cpu");
  assert.equal(typeof env.deno.deno, "string");
  assert.ok(env.git === null || typeof env.git.dirty === "boolean");
  const metrics = (await Deno.readTextFile(join(dir, "metrics.jsonl"))).trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(metrics.length, 3);
  assert.equal(metrics[0].stage, "a");
  assert.equal(typeof metrics[0].time, "string");
  const m = (await readManifest(dir, "b"))!;
  assert.equal(m.status, "complete");
  assert.equal(m.type, "count");
  assert.deepEqual(m.summary, { n: 5 });
  assert.equal(typeof m.duration_s, "number");
  assert.match(m.hash, /^[0-9a-f]{64}$/);
  assert.deepEqual(JSON.parse(await Deno.readTextFile(join(dir, "stages/b/count.json"))), {
    n: 5,
    upstream: { chars: 5, steps: 3, resumed: false },
  });
  assert.match(await Deno.readTextFile(join(dir, "log.txt")), /\[a\] wrote 5 chars/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() skips unchanged stages and reruns changed ones and their consumers", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir));
  const second = await run(config(dir));
  assert.deepEqual(second.ran, []);
  assert.match(second.text, /stage a: unchanged \(hash [0-9a-f]{12}\), skipped/);
  assert.deepEqual(actions(second.result), { a: "skipped:complete", b: "skipped:complete", c: "skipped:complete" });

  // Changing a consumer reruns only it; changing a producer reruns it and its consumer.
  assert.deepEqual((await run(config(dir), {})).ran, []);
  assert.deepEqual((await run(config(dir, ["stages.c.text=abc"]))).ran, ["c"]);
  const third = await run(config(dir, ["stages.c.text=abc", "stages.a.repeat=2"]));
  assert.deepEqual(third.ran, ["a", "b"]);
  assert.deepEqual((await readManifest(dir, "b"))!.summary, { n: 10 });
  // A pipeline-level setting (seed) is part of every hash.
  assert.deepEqual((await run(config(dir, ["stages.c.text=abc", "stages.a.repeat=2", "seed=5"]))).ran, ["a", "b", "c"]);
  // No moved-aside folders remain after successful reruns.
  const entries = [...Deno.readDirSync(join(dir, "stages"))].map((e) => e.name).sort();
  assert.deepEqual(entries, ["a", "b", "c"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() with force reruns the selected stages", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir));
  assert.deepEqual((await run(config(dir), { force: true })).ran, ["a", "b", "c"]);
  assert.deepEqual((await run(config(dir), { force: true, only: ["c"] })).ran, ["c"]);
  // Forcing a producer alone leaves its consumer stale: the next run re-runs the consumer.
  assert.deepEqual((await run(config(dir), { force: true, only: ["a"] })).ran, ["a"]);
  assert.deepEqual((await run(config(dir))).ran, ["b"]);
  assert.deepEqual((await run(config(dir))).ran, []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() with only runs the selected stages and checks their inputs", async () => {
  const dir = await Deno.makeTempDir();
  // b's input a has not run: a clear error, before anything is written.
  await assert.rejects(() => run(config(dir), { only: ["b"] }), (err: unknown) => {
    assert.ok(err instanceof PlanError);
    assert.equal(err.message, '--only b: input stage "a" has not run; run it too: --only a,b');
    return true;
  });
  assert.deepEqual([...Deno.readDirSync(dir)], []);
  await assert.rejects(() => run(config(dir), { only: ["bb"] }), /--only: no stage named "bb" \(did you mean "b"\?\)/);

  const first = await run(config(dir), { only: ["a", "c"] });
  assert.deepEqual(first.ran, ["a", "c"]);
  assert.deepEqual(actions(first.result), { a: "ran:complete", b: "not-selected", c: "ran:complete" });
  assert.deepEqual((await run(config(dir), { only: ["b"] })).ran, ["b"]);
  // A changed (stale) input is an error too.
  await assert.rejects(() => run(config(dir, ["stages.a.text=bye"]), { only: ["b"] }), /input stage "a" is stale/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() marks a failed stage, stops, and keeps earlier artifacts", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir));
  const aBefore = await Deno.readTextFile(join(dir, "stages/a/out.txt"));
  const cBefore = await Deno.readTextFile(join(dir, "stages/c/out.txt"));
  const bad = YAML_TEXT.replace("text: hello", "text: hello\n    fail: true").replace("text: xyz", "text: new");
  const { result, ran, text } = await run(config(dir, [], bad));
  assert.equal(result.status, "failed");
  assert.deepEqual(ran, ["a"]);
  assert.deepEqual(actions(result), { a: "ran:failed", b: "not-run", c: "not-run" });
  const m = (await readManifest(dir, "a"))!;
  assert.equal(m.status, "failed");
  assert.equal(m.error, "write-text failed on purpose");
  assert.match(text, /stage a: failed after .*: write-text failed on purpose/);
  // The previous result of a was moved aside, not deleted; c is untouched.
  const old = [...Deno.readDirSync(join(dir, "stages"))].map((e) => e.name).filter((n) => n.startsWith(".a.old-"));
  assert.equal(old.length, 1);
  assert.equal(await Deno.readTextFile(join(dir, "stages", old[0]!, "out.txt")), aBefore);
  assert.equal(await Deno.readTextFile(join(dir, "stages/c/out.txt")), cBefore);
  assert.equal((await readManifest(dir, "c"))!.status, "complete");
  // Fixing the config reruns the failed stage (its hash changed) and the rest.
  const fixed = await run(config(dir, [], YAML_TEXT.replace("text: xyz", "text: new")));
  assert.equal(fixed.result.status, "complete");
  assert.deepEqual(fixed.ran, ["a", "b", "c"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() passes resume to the stage and keeps its folder", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir, [], YAML_TEXT.replace("text: hello", "text: hello\n    fail: true")));
  await Deno.writeTextFile(join(dir, "stages/a/checkpoint.bin"), "ckpt");
  const resumed = await run(config(dir), { resume: true, only: ["a"] });
  assert.deepEqual(calls, [{ name: "a", resume: true, dirFiles: ["checkpoint.bin", "stage.json"] }]);
  assert.equal(resumed.result.stages[0]!.summary!.resumed, true);
  assert.equal((await readManifest(dir, "a"))!.resumed, true);
  // Without resume the stage starts from an empty folder.
  await run(config(dir), { force: true, only: ["a"] });
  assert.deepEqual(calls, [{ name: "a", resume: false, dirFiles: ["stage.json"] }]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() marks a stage interrupted when the signal aborts", async () => {
  const dir = await Deno.makeTempDir();
  const ac = new AbortController();
  const cfg = config(dir, ["stages.a.steps=100000"]);
  // Abort once stage a has started (not after a fixed delay, which races planning on a loaded machine).
  // run() clears `calls` before it starts the pipeline; stage a pushes an entry when it starts.
  const timer = setInterval(() => {
    if (calls.some((c) => c.name === "a")) {
      clearInterval(timer);
      ac.abort(new Error("test interrupt"));
    }
  }, 2);
  const { result, text } = await run(cfg, { signal: ac.signal });
  assert.equal(result.status, "interrupted");
  assert.deepEqual(actions(result), { a: "ran:interrupted", b: "not-run", c: "not-run" });
  const m = (await readManifest(dir, "a"))!;
  assert.equal(m.status, "interrupted");
  assert.ok((m.summary!.steps as number) < 100000);
  assert.match(text, /continue with --resume --only a/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("planPipeline() reports cached and pending stages without writing", async () => {
  const dir = await Deno.makeTempDir();
  const runDir = join(dir, "nested", "run");
  const plan0 = await planPipeline(config(runDir));
  assert.deepEqual(plan0.map((p) => p.action), ["run", "run", "run"]);
  await assert.rejects(() => Deno.stat(join(dir, "nested")), Deno.errors.NotFound);
  await run(config(runDir));
  const plan1 = await planPipeline(config(runDir, ["stages.c.text=q"]));
  assert.deepEqual(plan1.map((p) => [p.name, p.action, p.cached, p.previous]), [
    ["a", "skip", true, "complete"],
    ["b", "skip", true, "complete"],
    ["c", "run", false, "complete"],
  ]);
  assert.deepEqual(plan1[1]!.inputs, ["a"]);
  await Deno.remove(dir, { recursive: true });
});
