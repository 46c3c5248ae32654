/**
 * The runner on real (tiny) stages: run dir layout, caching and invalidation, --force, --only,
 * failure handling, --resume, interruption.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { parseConfig, type PipelineConfig } from "../pipeline/config.ts";
import {
  LOCK_FILE,
  PlanError,
  planPipeline,
  readManifest,
  type RunOptions,
  runPipeline,
  stageHashes,
} from "../pipeline/runner.ts";
import { hashConfig, writeFileAtomic, writeJsonAtomic } from "../pipeline/stage.ts";
import { getStage, registerStage } from "../pipeline/registry.ts";

/** How often each stage name's run() was called, and with which resume flag. */
const calls: { name: string; resume: boolean; dirFiles: string[] }[] = [];
/** Stage names whose next run() throws (a failure that does not change the config, so the hash). */
const failOnce = new Set<string>();

const WriteText = z.strictObject({
  text: z.string(),
  repeat: z.number().int().positive().default(1),
  fail: z.boolean().default(false),
  steps: z.number().int().nonnegative().default(0),
});

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
    if (failOnce.delete(ctx.name)) throw new Error("write-text failed once on purpose");
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
    // Like fine-tune: a stage that stopped early because of the signal says so.
    const stopped = step < c.steps ? { interrupted: true } : {};
    return { chars: c.text.length * c.repeat, steps: step, resumed: ctx.resume, ...stopped };
  },
});

const Count = z.strictObject({ from: z.string() });
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
  // Fail without changing the config: --resume continues only an attempt with the same hash.
  failOnce.add("a");
  await run(config(dir));
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
  // The hint repeats the command with --resume (the CLI passes its own arguments; see the CLI test).
  assert.match(text, /stage a: interrupted after [\d.]+s; continue by running the same command with --resume/);
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

// ---------------------------------------------------------------------------------------------
// Regression tests of the review fixes

function oldFolders(dir: string, name: string): string[] {
  return [...Deno.readDirSync(join(dir, "stages"))].map((e) => e.name).filter((n) => n.startsWith(`.${name}.old-`));
}

Deno.test("runPipeline() with resume starts over when the config changed since the unfinished attempt", async () => {
  const dir = await Deno.makeTempDir();
  failOnce.add("a");
  await run(config(dir));
  assert.equal((await readManifest(dir, "a"))!.status, "failed");
  await Deno.writeTextFile(join(dir, "stages/a/checkpoint.bin"), "ckpt of another config");
  const changed = await run(config(dir, ["stages.a.text=bye"]), { resume: true });
  assert.equal(changed.result.status, "complete");
  assert.deepEqual(calls[0], { name: "a", resume: false, dirFiles: ["stage.json"] });
  assert.match(
    changed.text,
    /stage a: config changed since the failed attempt \(hash [0-9a-f]{12} -> [0-9a-f]{12}\); starting over\n/,
  );
  assert.equal((await readManifest(dir, "a"))!.resumed, false);
  // A complete stage with the same hash stays skipped under --resume.
  const again = await run(config(dir, ["stages.a.text=bye"]), { resume: true });
  assert.deepEqual(again.ran, []);
  assert.deepEqual(actions(again.result), { a: "skipped:complete", b: "skipped:complete", c: "skipped:complete" });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() with resume starts over when the stage's inputs re-ran since its attempt", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir));
  // b (count, consumes a) fails without a config change: a's output is missing.
  await Deno.remove(join(dir, "stages/a/out.txt"));
  const failedB = await run(config(dir), { force: true, only: ["b"] });
  assert.equal(failedB.result.stages[1]!.status, "failed");
  await Deno.writeTextFile(join(dir, "stages/a/out.txt"), "hello");
  // a re-runs (forced), so b's failed attempt consumed an older result of a: not continued.
  await run(config(dir), { force: true, only: ["a"] });
  const resumed = await run(config(dir), { resume: true });
  assert.deepEqual(resumed.ran, ["b"]);
  assert.deepEqual(calls[0]!.resume, false);
  assert.match(resumed.text, /stage b: its input stages have re-run since the failed attempt; starting over/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() removes every moved-aside folder once the stage completes, resumed or not", async () => {
  const dir = await Deno.makeTempDir();
  await run(config(dir));
  failOnce.add("a");
  await run(config(dir), { force: true, only: ["a"] }); // moves the complete result aside, then fails
  assert.equal(oldFolders(dir, "a").length, 1);
  await Deno.mkdir(join(dir, "stages", ".a.old-20000101T000000Z")); // left by an older crash
  await Deno.mkdir(join(dir, "stages", ".c.old-20000101T000000Z")); // another stage's: kept
  const resumed = await run(config(dir), { resume: true, only: ["a"] });
  assert.deepEqual(calls.map((c) => [c.name, c.resume]), [["a", true]]);
  assert.equal(resumed.result.status, "complete");
  assert.deepEqual(oldFolders(dir, "a"), []);
  assert.deepEqual(oldFolders(dir, "c"), [".c.old-20000101T000000Z"]);
  await Deno.remove(dir, { recursive: true });
});

/** Called by the status-probe stage when it starts (the test aborts the run from it). */
let onProbe: () => void = () => {};
const Probe = z.strictObject({ mode: z.enum(["return", "return-interrupted", "throw"]) });
registerStage({
  type: "status-probe",
  description: "Returns or throws after the run is aborted",
  schema: Probe,
  inputs: () => [],
  run(c: z.infer<typeof Probe>, ctx) {
    onProbe();
    if (!ctx.signal.aborted) throw new Error("expected an aborted signal");
    if (c.mode === "throw") return Promise.reject(new Error("stopped by the abort"));
    return Promise.resolve(c.mode === "return" ? { done: true } : { interrupted: true });
  },
});

Deno.test("runPipeline() takes the status from the stage, not from the signal", async () => {
  const expect = { "return": "complete", "return-interrupted": "interrupted", "throw": "interrupted" } as const;
  for (const [mode, status] of Object.entries(expect)) {
    const dir = await Deno.makeTempDir();
    const ac = new AbortController();
    onProbe = () => ac.abort(new Error("test interrupt"));
    const text =
      `name: st\nstages:\n  - { name: p, type: status-probe, mode: ${mode} }\n  - { name: q, type: write-text, text: x }\n`;
    const { result } = await run(parseConfig(text, { overrides: [`run_dir=${dir}`] }), { signal: ac.signal });
    assert.equal(result.stages[0]!.status, status, mode);
    assert.equal((await readManifest(dir, "p"))!.status, status, mode);
    // Either way the pipeline stops there: the run was interrupted.
    assert.equal(result.status, "interrupted", mode);
    assert.equal(result.stages[1]!.action, "not-run", mode);
    await Deno.remove(dir, { recursive: true });
  }
  onProbe = () => {};
});

Deno.test("runPipeline() prints the resume command it is given when a stage is interrupted", async () => {
  const dir = await Deno.makeTempDir();
  const ac = new AbortController();
  const timer = setInterval(() => {
    if (calls.some((c) => c.name === "a")) {
      clearInterval(timer);
      ac.abort(new Error("test interrupt"));
    }
  }, 2);
  const { text } = await run(config(dir, ["stages.a.steps=100000"]), {
    signal: ac.signal,
    resumeCommand: "deno task pipeline rt.yaml seed=0 --resume",
  });
  assert.match(
    text,
    /stage a: interrupted after [\d.]+s; continue with: deno task pipeline rt\.yaml seed=0 --resume\n/,
  );
  assert.doesNotMatch(text, /--only a/);
  await Deno.remove(dir, { recursive: true });
});

/** A stage whose hash depends on a data file (fingerprint) and on its code version. */
const Fp = z.strictObject({ file: z.string() });
registerStage({
  type: "fp-read",
  description: "Reads a data file",
  schema: Fp,
  inputs: () => [],
  version: "1",
  fingerprint: (c: z.infer<typeof Fp>, env) => Deno.readTextFileSync(join(env.configDir, c.file)),
  run: (c: z.infer<typeof Fp>, ctx) => Promise.resolve({ text: Deno.readTextFileSync(join(ctx.configDir, c.file)) }),
});

Deno.test("stageHashes() folds a stage's fingerprint and version into its hash", async () => {
  const dir = await Deno.makeTempDir();
  const yamlFile = join(dir, "fp.yaml");
  await Deno.writeTextFile(join(dir, "data.txt"), "one");
  const text = `name: fp\nrun_dir: ${join(dir, "run")}\nstages:\n  - { name: r, type: fp-read, file: data.txt }\n` +
    `  - { name: w, type: write-text, text: x }\n`;
  const cfg = () => parseConfig(text, { file: yamlFile });
  const h1 = stageHashes(cfg()).get("r")!;
  // Stages without fingerprint/version keep the plain hash.
  const w = cfg().stages[1]!;
  assert.equal(
    stageHashes(cfg()).get("w"),
    hashConfig({ type: "write-text", config: w.config, inputs: {}, seed: 0, device: "cpu" }),
  );
  assert.equal((await run(cfg())).ran.includes("w"), true);
  assert.deepEqual((await run(cfg())).ran, []);
  assert.equal((await readManifest(join(dir, "run"), "r"))!.fingerprint, "one");
  assert.equal((await readManifest(join(dir, "run"), "r"))!.version, "1");
  // The data file changed, the YAML did not: the stage re-runs.
  await Deno.writeTextFile(join(dir, "data.txt"), "two");
  const h2 = stageHashes(cfg()).get("r")!;
  assert.notEqual(h2, h1);
  assert.equal((await runPipeline(cfg(), { handleSignals: false, output: sink().output })).stages[0]!.action, "ran");
  // A new code version re-runs it too.
  const def = getStage("fp-read")!;
  def.version = "2";
  try {
    assert.notEqual(stageHashes(cfg()).get("r"), h2);
  } finally {
    def.version = "1";
  }
  await Deno.remove(dir, { recursive: true });
});

const Spoof = z.strictObject({});
registerStage({
  type: "metric-spoof",
  description: "Logs a metric with the runner's own field names",
  schema: Spoof,
  inputs: () => [],
  run(_c, ctx) {
    ctx.metric({ stage: "other", time: "never", hash: "x", attempt: "y", loss: 1.5 });
    return Promise.resolve({});
  },
});

Deno.test("ctx.metric() records attempt and hash, and a record cannot overwrite the runner's fields", async () => {
  const dir = await Deno.makeTempDir();
  await run(parseConfig(`name: m\nstages:\n  - { name: s, type: metric-spoof }\n`, { overrides: [`run_dir=${dir}`] }));
  const [rec] = (await Deno.readTextFile(join(dir, "metrics.jsonl"))).trim().split("\n").map((l) => JSON.parse(l));
  const m = (await readManifest(dir, "s"))!;
  assert.equal(rec.stage, "s");
  assert.notEqual(rec.time, "never");
  assert.equal(rec.attempt, m.started);
  assert.equal(rec.hash, m.hash.slice(0, 12));
  assert.equal(rec.loss, 1.5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runPipeline() locks the run dir: refuses a live holder, takes over a stale lock, removes its own", async () => {
  const dir = await Deno.makeTempDir();
  const lockPath = join(dir, LOCK_FILE);
  // Held by a live process (this one).
  await Deno.writeTextFile(lockPath, JSON.stringify({ pid: Deno.pid, started: "2024-01-01T00:00:00.000Z" }));
  await assert.rejects(() => run(config(dir)), (err: unknown) => {
    assert.ok(err instanceof PlanError);
    assert.match(
      err.message,
      new RegExp(`in use by process ${Deno.pid}\\b.*lock file ${lockPath.replace(/\W/g, ".")}`),
    );
    return true;
  });
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [LOCK_FILE], "nothing written");
  // validate (planning) takes no lock.
  assert.equal((await planPipeline(config(dir))).length, 3);
  // Held by a process that is gone: taken over, with a log line.
  if (Deno.build.os === "linux") {
    const child = new Deno.Command("true").spawn();
    await child.status; // reaped: its pid no longer exists
    await Deno.writeTextFile(lockPath, JSON.stringify({ pid: child.pid, started: "2024-01-01T00:00:00.000Z" }));
    const { result, text } = await run(config(dir));
    assert.equal(result.status, "complete");
    assert.match(text, new RegExp(`took over the stale lock of process ${child.pid}\\b`));
    assert.match(await Deno.readTextFile(join(dir, "log.txt")), /took over the stale lock/);
  } else {
    await Deno.remove(lockPath);
    await run(config(dir));
  }
  // Removed at the end of a run, also of a failed one.
  await assert.rejects(() => Deno.stat(lockPath), Deno.errors.NotFound);
  failOnce.add("a");
  assert.equal((await run(config(dir), { force: true })).result.status, "failed");
  await assert.rejects(() => Deno.stat(lockPath), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("planPipeline() carries the manifest it read and whether --resume would continue a stage", async () => {
  const dir = await Deno.makeTempDir();
  failOnce.add("a");
  await run(config(dir));
  const plan = await planPipeline(config(dir), { resume: true });
  assert.equal(plan[0]!.manifest?.status, "failed");
  assert.equal(plan[0]!.manifest?.hash, plan[0]!.hash);
  assert.deepEqual(plan.map((p) => [p.name, p.resumable, p.resume]), [["a", true, true], ["b", false, false], [
    "c",
    false,
    false,
  ]]);
  assert.equal((await planPipeline(config(dir)))[0]!.resume, false, "only under --resume");
  const changed = await planPipeline(config(dir, ["stages.a.text=q"]), { resume: true });
  assert.equal(changed[0]!.resume, false);
  assert.match(changed[0]!.restart!, /^config changed since the failed attempt/);
  await Deno.remove(dir, { recursive: true });
});

// A second Ctrl-C exits at once; the stage must not be left "running". Run in a child process
// (this file, in child mode) with a stage that ignores the signal.
const CHILD_ENV = "LTE_PIPELINE_SIGINT_CHILD";
if (Deno.env.get(CHILD_ENV)) {
  registerStage({
    type: "ignore-signal",
    description: "Keeps running after the signal aborts",
    schema: z.strictObject({}),
    inputs: () => [],
    async run() {
      for (let i = 0; i < 3000; i++) await new Promise((r) => setTimeout(r, 10));
      return {};
    },
  });
  const cfg = parseConfig(`name: sig\nstages:\n  - { name: stuck, type: ignore-signal }\n`, {
    overrides: [`run_dir=${Deno.env.get(CHILD_ENV)}`],
  });
  await runPipeline(cfg, { resumeCommand: "deno task pipeline sig.yaml --resume" });
  Deno.exit(0);
}

Deno.test({
  name: "a second SIGINT records the running stage as interrupted before exiting",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname],
      env: { [CHILD_ENV]: dir, NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let err = "";
    const waitFor = async (re: RegExp) => {
      while (!re.test(err)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`child ended before ${re}:\n${err}`);
        err += value;
      }
    };
    try {
      await waitFor(/stage stuck: running/);
      child.kill("SIGINT");
      await waitFor(/asking stage stuck to stop/);
      child.kill("SIGINT");
      await waitFor(/marked interrupted/);
    } finally {
      const status = await child.status;
      await reader.cancel().catch(() => {});
      assert.equal(status.code, 130, err);
    }
    const m = (await readManifest(dir, "stuck"))!;
    assert.equal(m.status, "interrupted");
    assert.match(m.error!, /SIGINT twice/);
    assert.equal(typeof m.finished, "string");
    await assert.rejects(() => Deno.stat(join(dir, LOCK_FILE)), Deno.errors.NotFound);
    await Deno.remove(dir, { recursive: true });
  },
});
