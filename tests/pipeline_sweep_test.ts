/**
 * Sweeps: expansion in the config loader, variant names, fan-out of downstream stages, gathering
 * stages, errors, and caching (a shared upstream stage runs once).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { formatPlan, parseArgs } from "../pipeline/cli.ts";
import { ConfigError, parseConfig } from "../pipeline/config.ts";
import { registerStage } from "../pipeline/registry.ts";
import { planPipeline, runPipeline } from "../pipeline/runner.ts";
import type { StageOutput } from "../pipeline/stage.ts";

const ran: { name: string; seed: number; lr?: number }[] = [];
let gathered: Record<string, StageOutput> = {};

const Train = z.strictObject({
  from: z.string().optional(),
  optimizer: z.strictObject({ lr: z.number().positive().default(0.01), beta: z.number().default(0.9) }).default({
    lr: 0.01,
    beta: 0.9,
  }),
  tag: z.string().default("x"),
  beta: z.number().optional(),
});
registerStage({
  type: "sw-train",
  description: "Records that it ran, with its lr and seed",
  schema: Train,
  inputs: (c: z.infer<typeof Train>) => (c.from ? [c.from] : []),
  run(c: z.infer<typeof Train>, ctx) {
    ran.push({ name: ctx.name, seed: ctx.pipeline.seed, lr: c.optimizer.lr });
    return Promise.resolve({ lr: c.optimizer.lr, seed: ctx.pipeline.seed });
  },
});
const From = z.strictObject({ from: z.string() });
registerStage({
  type: "sw-eval",
  description: "Consumes one model",
  schema: From,
  inputs: (c: z.infer<typeof From>) => [c.from],
  run(c: z.infer<typeof From>, ctx) {
    ran.push({ name: ctx.name, seed: ctx.pipeline.seed });
    const up = ctx.inputs[c.from]!;
    return Promise.resolve({ upstream_lr: up.summary.lr, base: up.base ?? null });
  },
});
registerStage({
  type: "sw-report",
  description: "Gathers every variant",
  schema: From,
  inputs: (c: z.infer<typeof From>) => [c.from],
  gathers: true,
  run(_c: z.infer<typeof From>, ctx) {
    ran.push({ name: ctx.name, seed: ctx.pipeline.seed });
    gathered = ctx.inputs;
    return Promise.resolve({ n: Object.keys(ctx.inputs).length });
  },
});

const YAML = `name: sw
seed: 7
stages:
  - { name: base, type: sw-train }
  - name: train
    type: sw-train
    from: base
    sweep: { optimizer.lr: [0.001, 0.003], seed: [0, 1] }
  - { name: eval, type: sw-eval, from: train }
  - { name: report, type: sw-report, from: eval }
`;

Deno.test("sweep: expansion (cartesian, YAML key order), names, values and seed", () => {
  const c = parseConfig(YAML);
  assert.deepEqual(c.stages.map((s) => s.name), [
    "base",
    "train@lr=0.001,seed=0",
    "train@lr=0.001,seed=1",
    "train@lr=0.003,seed=0",
    "train@lr=0.003,seed=1",
    "eval@lr=0.001,seed=0",
    "eval@lr=0.001,seed=1",
    "eval@lr=0.003,seed=0",
    "eval@lr=0.003,seed=1",
    "report",
  ]);
  const t = c.stages[3]!;
  assert.equal(t.base, "train");
  assert.deepEqual(t.variant, { lr: 0.003, seed: 0 });
  assert.equal(t.seed, 0);
  assert.deepEqual((t.config as z.infer<typeof Train>).optimizer, { lr: 0.003, beta: 0.9 });
  assert.deepEqual(t.inputs, ["base"]); // the shared upstream stage is not expanded
  assert.equal(c.stages[0]!.seed, undefined);
});

Deno.test("sweep: downstream stages fan out along the variants; a gathering stage consumes them all", () => {
  const c = parseConfig(YAML);
  const e = c.stages.find((s) => s.name === "eval@lr=0.003,seed=1")!;
  assert.deepEqual(e.inputs, ["train@lr=0.003,seed=1"]);
  assert.deepEqual((e.config as { from: string }).from, "train@lr=0.003,seed=1");
  assert.deepEqual(e.variant, { lr: 0.003, seed: 1 });
  assert.equal(e.seed, 1);
  const r = c.stages.at(-1)!;
  assert.deepEqual(r.inputs, c.stages.filter((s) => s.base === "eval").map((s) => s.name));
  // Two swept inputs join on their shared keys (same variants), not a product.
  const two = parseConfig(`name: j
stages:
  - { name: a, type: sw-train, sweep: { seed: [0, 1] } }
  - { name: b, type: sw-train, from: a, sweep: { optimizer.lr: [0.1, 0.2] } }
  - { name: c, type: sw-eval, from: b }
`);
  assert.deepEqual(two.stages.filter((s) => s.base === "c").map((s) => [s.name, s.inputs[0]]), [
    ["c@seed=0,lr=0.1", "b@seed=0,lr=0.1"],
    ["c@seed=0,lr=0.2", "b@seed=0,lr=0.2"],
    ["c@seed=1,lr=0.1", "b@seed=1,lr=0.1"],
    ["c@seed=1,lr=0.2", "b@seed=1,lr=0.2"],
  ]);
});

Deno.test("sweep: runs each variant with its seed, gathers with variant and base, shared stages run once", async () => {
  const dir = await Deno.makeTempDir();
  const opts = { handleSignals: false, output: { write: () => {}, isTerminal: false } };
  ran.length = 0;
  const r1 = await runPipeline(parseConfig(YAML, { overrides: [`run_dir=${dir}`] }), opts);
  assert.equal(r1.status, "complete");
  assert.equal(ran.filter((x) => x.name === "base").length, 1);
  assert.deepEqual(ran.find((x) => x.name === "base")!.seed, 7);
  assert.deepEqual(ran.find((x) => x.name === "train@lr=0.001,seed=1"), {
    name: "train@lr=0.001,seed=1",
    seed: 1,
    lr: 0.001,
  });
  assert.deepEqual(
    Object.keys(gathered).sort(),
    r1.stages.filter((s) => s.name.startsWith("eval@")).map((s) => s.name).sort(),
  );
  const g = gathered["eval@lr=0.003,seed=0"]!;
  assert.equal(g.base, "eval");
  assert.deepEqual(g.variant, { lr: 0.003, seed: 0 });
  assert.equal(g.summary.upstream_lr, 0.003);
  assert.equal(g.summary.base, "train"); // a fanned-out stage sees its input's base too
  assert.ok(g.dir.endsWith(join("stages", "eval@lr=0.003,seed=0")));
  // Unchanged: everything cached. A new value runs only its own variants (and the gather).
  ran.length = 0;
  const r2 = await runPipeline(parseConfig(YAML, { overrides: [`run_dir=${dir}`] }), opts);
  assert.ok(r2.stages.every((s) => s.action === "skipped"));
  const more = YAML.replace("[0.001, 0.003]", "[0.001, 0.003, 0.01]");
  await runPipeline(parseConfig(more, { overrides: [`run_dir=${dir}`] }), opts);
  assert.deepEqual(ran.map((x) => x.name).sort(), [
    "eval@lr=0.01,seed=0",
    "eval@lr=0.01,seed=1",
    "report",
    "train@lr=0.01,seed=0",
    "train@lr=0.01,seed=1",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sweep: validate prints the expanded plan", async () => {
  const plan = await planPipeline(parseConfig(YAML, { overrides: ["run_dir=/nonexistent/sw"] }));
  const text = formatPlan(plan, "/nonexistent/sw");
  assert.match(text, /train@lr=0\.001,seed=0\s+sw-train\s+base\s+will run/);
  assert.match(text, /eval@lr=0\.003,seed=1\s+sw-eval\s+train@lr=0\.003,seed=1\s+will run/);
  assert.match(text, /report\s+sw-report\s+eval@lr=0\.001,seed=0,eval@lr=0\.001,seed=1,/);
});

Deno.test("sweep: unknown key path, empty list, name collisions and bad values are located errors", () => {
  const errs = (sweep: string) => {
    try {
      parseConfig(`name: e\nstages:\n  - name: t\n    type: sw-train\n    sweep: ${sweep}\n`, { file: "e.yaml" });
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.issues.map((i) => `${i.location} ${i.path}${i.stage ? ` (stage ${i.stage})` : ""}: ${i.message}`);
    }
    assert.fail("no error");
  };
  assert.match(
    errs("{ optimizer.lrr: [1, 2] }")[0]!,
    /^e\.yaml:5:\d+ stages\[0\]\.sweep\.optimizer\.lrr \(stage t\): sweep key "optimizer\.lrr": stage type "sw-train" has no key "optimizer\.lrr" \(did you mean "lr"\?\)/,
  );
  assert.match(errs("{ optimizer.lr: [] }")[0]!, /sweep "optimizer\.lr" has an empty list/);
  assert.match(errs("{ optimizer.lr: 0.1 }")[0]!, /must be a list of values/);
  assert.match(errs("{ optimizer.beta: [1], beta: [2] }")[0]!, /both shorten to "beta"/);
  assert.match(errs("{ optimizer.lr: [0.1, 0.10] }")[0]!, /repeats the value 0\.1/);
  assert.match(
    errs("{ tag: [a/b] }")[0]!,
    /stages\[0\]\.sweep\.tag\[0\] \(stage t\): .*cannot be part of a stage name/,
  );
  assert.match(errs("[1, 2]")[0]!, /sweep must be a mapping/);
  assert.match(errs("{ name: [a, b] }")[0]!, /sweep cannot vary "name"/);
  assert.match(errs("{ seed: [-1] }")[0]!, /non-negative integers/);
  // A value the schema refuses is reported for its variant.
  assert.match(
    errs("{ optimizer.lr: [0.1, -1] }").join("\n"),
    /^e\.yaml:5:\d+ stages\[0\]\.optimizer\.lr \(stage t@lr=-1\): expected number > 0/m,
  );
});

Deno.test("sweep: --only takes variant names (commas inside them kept) or a base name for all variants", async () => {
  assert.deepEqual(parseArgs(["--only", "base,train@lr=0.001,seed=1,eval@lr=0.003,seed=0"]).only, [
    "base",
    "train@lr=0.001,seed=1",
    "eval@lr=0.003,seed=0",
  ]);
  const c = parseConfig(YAML, { overrides: ["run_dir=/nonexistent/sw"] });
  const one = await planPipeline(c, { only: ["base", "train@lr=0.001,seed=1"] });
  assert.deepEqual(one.filter((p) => p.action === "run").map((p) => p.name), ["base", "train@lr=0.001,seed=1"]);
  const all = await planPipeline(c, { only: ["base", "train"] });
  assert.equal(all.filter((p) => p.action === "run").length, 5);
});
