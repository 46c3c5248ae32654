/**
 * Issue 6, the runner and config-loader cases: one small test per case (see the table in
 * docs/pipeline.md, "Reliability (issue 6)").
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { ConfigSyntaxError, loadConfig, parseConfig, type PipelineConfig } from "../pipeline/config.ts";
import { registerStage } from "../pipeline/registry.ts";
import {
  PlanError,
  planPipeline,
  readManifest,
  type RunOptions,
  runPipeline,
  type StageManifest,
} from "../pipeline/runner.ts";
import { RUN_MARKER } from "../pipeline/rundir.ts";
import { writeFileAtomic, yieldToSignals } from "../pipeline/stage.ts";

const Rel = z.strictObject({
  fail: z.boolean().default(false),
  metrics: z.number().int().nonnegative().default(1),
  swallow: z.boolean().default(false),
});
registerStage({
  type: "rel-write",
  description: "Writes out.txt and some metrics",
  schema: Rel,
  inputs: () => [],
  async run(c: z.infer<typeof Rel>, ctx) {
    for (let i = 0; i < c.metrics; i++) {
      try {
        ctx.metric({ i });
      } catch (e) {
        if (!c.swallow) throw e;
      }
    }
    if (c.fail) throw new Error("rel-write failed on purpose");
    await writeFileAtomic(join(ctx.dir, "out.txt"), "ok");
    return { metrics: c.metrics };
  },
});

registerStage({
  type: "rel-break-record",
  description: "Makes its own stage.json unwritable (a folder), as a broken disk would",
  schema: z.strictObject({}),
  inputs: () => [],
  async run(_c, ctx) {
    await Deno.remove(join(ctx.dir, "stage.json"));
    await Deno.mkdir(join(ctx.dir, "stage.json", "x"), { recursive: true });
    return {};
  },
});

registerStage({
  type: "rel-nan",
  description: "Returns a NaN result, as a diverged evaluation would",
  schema: z.strictObject({}),
  inputs: () => [],
  run: () => Promise.resolve({ val_ppl: NaN, per_layer: [1, Infinity] }),
});

let serveRuns = 0;
registerStage({
  type: "rel-serve",
  description: "A server-like stage: never a cacheable result",
  schema: z.strictObject({}),
  inputs: () => [],
  cache: false,
  run() {
    serveRuns++;
    return Promise.resolve({ served: 1 });
  },
});

const TEXT = `name: rel
stages:
  - { name: a, type: rel-write }
`;

function cfg(runDir: string, text = TEXT, file = "<string>"): PipelineConfig {
  return parseConfig(text, { file, overrides: [`run_dir=${runDir}`] });
}

async function run(c: PipelineConfig, opts: RunOptions = {}) {
  const lines: string[] = [];
  const result = await runPipeline(c, {
    handleSignals: false,
    output: { write: (t) => void lines.push(t), isTerminal: false },
    ...opts,
  });
  return { result, text: lines.join("") };
}

Deno.test("a run dir that exists, is not empty and has no marker is refused and left untouched", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "thesis.txt"), "my files");
  await Deno.mkdir(join(dir, "stages"));
  await assert.rejects(
    () => run(cfg(dir)),
    (e: unknown) => e instanceof PlanError && /not a pipeline run directory/.test(e.message),
  );
  // validate (planning) says so too, and neither wrote anything.
  await assert.rejects(() => planPipeline(cfg(dir)), /no \.lte-run\.json/);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["stages", "thesis.txt"]);
  // An empty folder is fine, and gets the marker.
  const empty = await Deno.makeTempDir();
  assert.equal((await run(cfg(empty))).result.status, "complete");
  assert.equal(JSON.parse(await Deno.readTextFile(join(empty, RUN_MARKER))).name, "rel");
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(empty, { recursive: true });
});

Deno.test("a second pipeline file with the same name does not replace the first one's results", async () => {
  const base = await Deno.makeTempDir();
  const runDir = join(base, "runs");
  const first = join(base, "one.yaml"), second = join(base, "two.yaml");
  await Deno.writeTextFile(first, TEXT);
  await Deno.writeTextFile(second, TEXT.replace("rel-write }", "rel-write, metrics: 2 }"));
  const one = await loadConfig(first, { overrides: [`run_dir=${runDir}`] });
  assert.equal((await run(one)).result.status, "complete");
  const two = await loadConfig(second, { overrides: [`run_dir=${runDir}`] });
  await assert.rejects(
    () => run(two),
    (e: unknown) => e instanceof PlanError && /one\.yaml.*two\.yaml has the same name/s.test(e.message),
  );
  assert.equal((await readManifest(runDir, "a"))!.status, "complete");
  assert.equal(((await readManifest(runDir, "a"))!.config as { metrics: number }).metrics, 1);
  // Another pipeline name in the same folder is refused as well.
  const other = parseConfig(TEXT.replace("name: rel", "name: other"), { overrides: [`run_dir=${runDir}`] });
  await assert.rejects(() => run(other), /holds the results of pipeline "rel", not "other"/);
  await Deno.remove(base, { recursive: true });
});

Deno.test("a resumable attempt is never discarded silently: --resume continues it, --force discards it", async () => {
  const dir = await Deno.makeTempDir();
  const c = cfg(dir);
  await run(c);
  // Leave the stage as a crash would: stage.json "running", same hash.
  const path = join(dir, "stages", "a", "stage.json");
  const m: StageManifest = JSON.parse(await Deno.readTextFile(path));
  await Deno.writeTextFile(path, JSON.stringify({ ...m, status: "running" }));
  await assert.rejects(
    () => run(c),
    (e: unknown) =>
      e instanceof PlanError && /stage a: its previous attempt \(running.*add --resume.*--force/.test(e.message),
  );
  assert.equal((await readManifest(dir, "a"))!.status, "running"); // nothing touched
  const resumed = await run(c, { resume: true });
  assert.equal(resumed.result.stages[0]!.status, "complete");
  assert.equal((await readManifest(dir, "a"))!.resumed, true);
  // A failed attempt is started over (it would usually fail again), with a log line.
  await Deno.writeTextFile(path, JSON.stringify({ ...m, status: "failed" }));
  const again = await run(c);
  assert.equal(again.result.status, "complete");
  assert.match(again.text, /stage a: starting its failed attempt over \(--resume would continue it instead\)/);
  await Deno.writeTextFile(path, JSON.stringify({ ...m, status: "interrupted" }));
  const forced = await run(c, { force: true });
  assert.equal(forced.result.status, "complete");
  assert.equal((await readManifest(dir, "a"))!.resumed, false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("metrics.jsonl: a torn last line is cut on open; a write error names the file and fails the stage", async () => {
  const dir = await Deno.makeTempDir();
  const metrics = join(dir, "metrics.jsonl");
  await run(cfg(dir));
  await Deno.writeTextFile(metrics, '{"i":0}\n{"i":1,"sta', { append: true }); // a crash mid-append
  const again = await run(cfg(dir), { force: true });
  assert.match(again.text, /metrics\.jsonl: removed a torn last line \(\d+ bytes\)/);
  const lines = (await Deno.readTextFile(metrics)).trimEnd().split("\n");
  for (const l of lines) JSON.parse(l); // every line whole
  if (Deno.build.os === "linux") {
    // A full disk: /dev/full fails every write with ENOSPC. The stage swallows the error; the runner
    // still marks it failed, and the message names the file.
    await Deno.remove(metrics);
    await Deno.symlink("/dev/full", metrics);
    const full = await run(cfg(dir, TEXT.replace("rel-write }", "rel-write, swallow: true }")));
    assert.equal(full.result.status, "failed");
    const m = (await readManifest(dir, "a"))!;
    assert.equal(m.status, "failed");
    assert.match(m.error!, new RegExp(`cannot append to ${metrics.replaceAll("/", "\\/")}: .*No space left`, "i"));
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("stale temporary files and folders of dead processes are removed; others are kept", async () => {
  const dir = await Deno.makeTempDir();
  await run(cfg(dir));
  // A pid that is not running: spawn a process and wait for it to end.
  const dead = new Deno.Command("true").spawn();
  await dead.status;
  const stageDir = join(dir, "stages", "a");
  const stale = [join(stageDir, `.model.tmp-${dead.pid}`), join(stageDir, `.out.txt.tmp-${dead.pid}-0123abcd`)];
  await Deno.mkdir(stale[0]!);
  await Deno.writeTextFile(join(stale[0]!, "model.safetensors"), "partial");
  await Deno.writeTextFile(stale[1]!, "partial");
  const kept = [join(stageDir, `.model.tmp-1`), join(stageDir, ".notes.tmp-draft"), join(stageDir, "x.tmp-99999")];
  for (const k of kept) await Deno.writeTextFile(k, "keep"); // pid 1 runs; the others are not our names
  const r = await run(cfg(dir));
  for (const s of stale) {
    await assert.rejects(() => Deno.lstat(s), Deno.errors.NotFound);
    assert.ok(r.text.includes(`removed ${s}`), r.text);
  }
  for (const k of kept) await Deno.lstat(k);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a cache: false stage is recorded ended, never complete, and is never skipped", async () => {
  const dir = await Deno.makeTempDir();
  const c = cfg(dir, `name: rel\nstages:\n  - { name: srv, type: rel-serve }\n`);
  serveRuns = 0;
  const first = await run(c);
  assert.equal(first.result.status, "complete");
  assert.equal((await readManifest(dir, "srv"))!.status, "ended");
  const plan = await planPipeline(c);
  assert.equal(plan[0]!.action, "run");
  // Marked as if it had been killed: still no --resume demand, it just runs again.
  await run(c);
  assert.equal(serveRuns, 2);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config files: size cap, linear duplicate-key check, alias bomb and long names name the file", async () => {
  const dir = await Deno.makeTempDir();
  const big = join(dir, "big.yaml");
  await Deno.writeTextFile(big, `name: big\nstages: []\n# ${"x".repeat(1.5 * 1024 * 1024)}\n`);
  await assert.rejects(
    () => loadConfig(big),
    (e: unknown) => e instanceof ConfigSyntaxError && e.message.includes(big) && /limited to 1 MiB/.test(e.message),
  );
  // 20k keys in one mapping plus one duplicate: reported at its line (a quadratic check takes minutes).
  const keys = Array.from({ length: 20_000 }, (_, i) => `  k${i}: 1`).join("\n");
  assert.throws(
    () => parseConfig(`name: d\nextra:\n${keys}\n  k7: 2\nstages: []\n`, { file: "d.yaml" }),
    (e: unknown) => e instanceof ConfigSyntaxError && e.code === "DUPLICATE_KEY" && e.line === 20_003,
  );
  const bomb = [
    "a: &a [x, x, x, x, x, x, x, x, x]",
    ...Array.from({ length: 8 }, (_, i) => {
      const p = String.fromCharCode(97 + i), n = String.fromCharCode(98 + i);
      return `${n}: &${n} [*${p}, *${p}, *${p}, *${p}, *${p}, *${p}, *${p}, *${p}, *${p}]`;
    }),
    "name: bomb",
    "stages: []",
  ].join("\n");
  assert.throws(
    () => parseConfig(bomb, { file: "bomb.yaml" }),
    (e: unknown) => e instanceof ConfigSyntaxError && /bomb\.yaml: .*alias/i.test(e.message),
  );
  assert.throws(
    () => parseConfig(`name: n\nstages:\n  - { name: ${"s".repeat(101)}, type: rel-write }\n`, { file: "n.yaml" }),
    /n\.yaml:3:\d+ stages\[0\]\.name.*100/,
  );
  await Deno.remove(dir, { recursive: true });
});

// SIGTERM during a long setup (before any training step): the stage awaits between setup phases
// (yieldToSignals), so the signal is honoured there. Run in a child process (this file, child mode).
const CHILD_ENV = "LTE_PIPELINE_SETUP_SIGTERM_CHILD";
if (Deno.env.get(CHILD_ENV)) {
  registerStage({
    type: "long-setup",
    description: "200 synchronous setup phases of 20 ms",
    schema: z.strictObject({}),
    inputs: () => [],
    async run(_c, ctx) {
      ctx.log("setup started");
      for (let phase = 0; phase < 200; phase++) {
        const end = performance.now() + 20;
        while (performance.now() < end) { /* synchronous work, as building a big model is */ }
        await yieldToSignals(ctx.signal);
      }
      return { phases: 200 };
    },
  });
  const c = parseConfig(`name: setup\nstages:\n  - { name: s, type: long-setup }\n`, {
    overrides: [`run_dir=${Deno.env.get(CHILD_ENV)}`],
  });
  const r = await runPipeline(c, {});
  Deno.exit(r.status === "interrupted" ? 130 : 0);
}

Deno.test({
  name: "SIGTERM during a long synchronous setup interrupts the stage (exit 130, stage interrupted)",
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
    while (!/setup started/.test(err)) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    child.kill("SIGTERM");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    const status = await child.status;
    assert.equal(status.code, 130, err);
    const m = (await readManifest(dir, "s"))!;
    assert.equal(m.status, "interrupted");
    assert.match(m.error!, /SIGTERM/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test("a stage record that cannot be written is an error naming stage.json, not a silent success", async () => {
  const dir = await Deno.makeTempDir();
  await assert.rejects(
    () => run(cfg(dir, `name: rel\nstages:\n  - { name: b, type: rel-break-record }\n`)),
    (e: unknown) => (e as Error).message.startsWith(`cannot write ${join(dir, "stages", "b", "stage.json")}`),
  );
  await assert.rejects(() => Deno.stat(join(dir, ".lock")), Deno.errors.NotFound); // the lock is released
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a stage that returns NaN or inf in its summary is failed, not complete (and never cached)", async () => {
  const dir = await Deno.makeTempDir();
  const c = cfg(dir, `name: rel\nstages:\n  - { name: n, type: rel-nan }\n`);
  const r = await run(c);
  assert.equal(r.result.status, "failed");
  const m = (await readManifest(dir, "n"))!;
  assert.equal(m.status, "failed");
  assert.match(m.error!, /non-finite number at summary\.val_ppl \(NaN\)/);
  assert.equal((await planPipeline(c))[0]!.cached, false);
  await Deno.remove(dir, { recursive: true });
});
