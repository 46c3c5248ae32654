/** The `deno task pipeline` command line: validate, run, exit codes, error output. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { formatPlan, main, parseArgs, resumeCommand } from "../pipeline/cli.ts";
import { LOCK_FILE, type PlanEntry } from "../pipeline/runner.ts";
import { writeFileAtomic } from "../pipeline/stage.ts";
import { registerStage } from "../pipeline/registry.ts";

const Echo = z.strictObject({ text: z.string(), fail: z.boolean().default(false), from: z.string().optional() });
registerStage({
  type: "cli-echo",
  description: "Writes its text to echo.txt",
  schema: Echo,
  inputs: (c: z.infer<typeof Echo>) => (c.from ? [c.from] : []),
  async run(c: z.infer<typeof Echo>, ctx) {
    if (c.fail) throw new Error("echo refused");
    await writeFileAtomic(join(ctx.dir, "echo.txt"), c.text);
    return { length: c.text.length };
  },
});

const YAML_TEXT = `# CLI test pipeline
name: cli
stages:
  - name: first
    type: cli-echo
    text: hi
  - name: second
    type: cli-echo
    text: there
    from: first
`;

async function setup() {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "p.yaml");
  await Deno.writeTextFile(file, YAML_TEXT);
  return { dir, file, runDir: join(dir, "run") };
}

async function cli(args: string[]) {
  let stdout = "", stderr = "";
  const code = await main(args, {
    stdout: (t) => void (stdout += t),
    stderr: (t) => void (stderr += t),
    isTerminal: false,
  });
  return { code, stdout, stderr };
}

Deno.test("parseArgs() reads the file, command, overrides and flags in any order", () => {
  assert.deepEqual(
    parseArgs(["x.yaml", "validate", "seed=2", "--only", "a,b", "--only=c", "--force", "--run-dir=runs/r"]),
    {
      command: "validate",
      file: "x.yaml",
      overrides: ["seed=2"],
      only: ["a", "b", "c"],
      force: true,
      resume: false,
      runDir: "runs/r",
    },
  );
  assert.throws(() => parseArgs(["--frce"]), /Unknown option "--frce" \(did you mean "--force"\?\)/);
  assert.throws(() => parseArgs(["--only"]), /Missing value for --only/);
  assert.throws(() => parseArgs(["valdate"]), /Unrecognised argument "valdate" \(did you mean "validate"\?\)/);
});

Deno.test("main() validate prints the resolved config and plan and writes nothing", async () => {
  const { dir, file, runDir } = await setup();
  const r = await cli([file, "validate", "stages.second.text=you", "--run-dir", runDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /name: cli\nseed: 0\ndevice: cpu\n/);
  assert.match(r.stdout, /text: you/);
  assert.match(r.stdout, /1\.\s+first\s+cli-echo\s+-\s+will run\n/);
  assert.match(r.stdout, /2\.\s+second\s+cli-echo\s+first\s+will run\n/);
  await assert.rejects(() => Deno.stat(runDir), Deno.errors.NotFound);
  // After a run, validate shows both stages cached; a changed override shows which will run.
  assert.equal((await cli([file, "--run-dir", runDir])).code, 0);
  const after = await cli([file, "validate", "stages.second.text=you", "--run-dir", runDir]);
  assert.match(after.stdout, /first\s+cli-echo\s+-\s+cached \(hash [0-9a-f]{12}\)/);
  assert.match(after.stdout, /second\s+cli-echo\s+first\s+will run \(was complete, config changed\)/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("main() exits 0 on success, 1 on stage failure, 2 on config and usage errors", async () => {
  const { dir, file, runDir } = await setup();
  const ok = await cli([file, "--run-dir", runDir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /stage first: complete/);
  const again = await cli([file, "--run-dir", runDir]);
  assert.match(again.stderr, /stage first: unchanged \(hash [0-9a-f]{12}\), skipped/);

  const failed = await cli([file, "--run-dir", runDir, "stages.second.fail=true"]);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /stage second: failed after [\d.]+s: echo refused/);
  assert.doesNotMatch(failed.stderr, /\n\s+at /, "no stack trace without LTE_DEBUG");

  const bad = await cli([file, "--run-dir", runDir, "stages.second.txt=x", "seed=abc"]);
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    `error: Invalid pipeline config ${file}: 2 errors\n` +
      `override #1 'stages.second.txt=x' stages[1].txt (stage second): unknown key "txt" (did you mean "text"?)\n` +
      `override #2 'seed=abc' seed: expected number, received string "abc"\n`,
  );

  const usage = await cli(["--bogus"]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /Run with --help for usage/);
  const missing = await cli([join(dir, "nope.yaml")]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Config file not found: .*nope\.yaml/);
  const only = await cli([file, "--run-dir", join(dir, "fresh"), "--only", "second"]);
  assert.equal(only.code, 2);
  assert.match(only.stderr, /--only second: input stage "first" has not run; run it too: --only first,second/);

  const help = await cli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: deno task pipeline/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli.ts as a process exits 2 on malformed YAML without a stack trace", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "bad.yaml");
  await Deno.writeTextFile(file, "name: x\nstages:\n  - name: [a\n");
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../cli.ts", import.meta.url).pathname, file, "validate"],
    stdout: "piped",
    stderr: "piped",
    env: { LTE_DEBUG: "0", NO_COLOR: "1" },
  });
  const r = await cmd.output();
  const stderr = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 2, stderr);
  assert.match(stderr, new RegExp(`^error: Malformed YAML: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+ `));
  assert.doesNotMatch(stderr, /\n\s+at /);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("main() resolves the config file and --run-dir against INIT_CWD and records config_dir", async () => {
  const { dir } = await setup(); // p.yaml in dir
  const before = Deno.env.get("INIT_CWD");
  Deno.env.set("INIT_CWD", dir); // deno task runs in the repo root and passes the user's folder here
  try {
    const r = await cli(["p.yaml", "--run-dir", "myrun"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(join(dir, "myrun/stages/first/echo.txt")), "hi");
    const overrides = await Deno.readTextFile(join(dir, "myrun/overrides.yaml"));
    assert.match(overrides, new RegExp(`config_dir: ${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\n`));
    const env = JSON.parse(await Deno.readTextFile(join(dir, "myrun/env.json")));
    assert.equal(env.config_dir, dir);
    const missing = await cli(["nope.yaml"]);
    assert.match(missing.stderr, new RegExp(`Config file not found: ${join(dir, "nope.yaml").replace(/\W/g, ".")}`));
  } finally {
    if (before === undefined) Deno.env.delete("INIT_CWD");
    else Deno.env.set("INIT_CWD", before);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resumeCommand() repeats the user's arguments with --resume, without --force", () => {
  assert.equal(
    resumeCommand(["x.yaml", "stages.train.training.steps=50", "--only", "train", "--force"]),
    "deno task pipeline x.yaml stages.train.training.steps=50 --only train --resume",
  );
  assert.equal(resumeCommand(["x.yaml", "--resume"]), "deno task pipeline x.yaml --resume");
  assert.equal(resumeCommand(["tag=a b", "note=it's"]), `deno task pipeline 'tag=a b' 'note=it'\\''s' --resume`);
});

Deno.test("formatPlan() says whether --resume continues a stage; help shows a real override", async () => {
  const entry = (p: Partial<PlanEntry>): PlanEntry => ({
    name: "train",
    type: "fine-tune",
    inputs: [],
    hash: "a".repeat(64),
    cached: false,
    action: "run",
    resumable: false,
    resume: false,
    needsResume: false,
    ...p,
  });
  const m = (hash: string) => ({ hash, status: "interrupted" }) as PlanEntry["manifest"];
  const status = (p: Partial<PlanEntry>) =>
    formatPlan([entry(p)], "r").split("\n")[2]!.replace(/^.*fine-tune\s+-\s+/, "");
  assert.equal(
    status({ previous: "interrupted", resumable: true, needsResume: true, manifest: m("a".repeat(64)) }),
    "needs --resume (continue the interrupted attempt) or --force (discard it)",
  );
  assert.equal(
    status({ previous: "interrupted", resumable: true, manifest: m("a".repeat(64)) }), // with --force
    "will run (was interrupted; started over: --force)",
  );
  assert.equal(
    status({ previous: "interrupted", resumable: true, resume: true, manifest: m("a".repeat(64)) }),
    "will resume (was interrupted)",
  );
  assert.equal(
    status({ previous: "interrupted", manifest: m("b".repeat(64)) }),
    "will run (was interrupted, config changed; starts over)",
  );
  const help = await cli(["--help"]);
  assert.doesNotMatch(help.stdout, /stages\[0\]\.steps/);
  assert.match(help.stdout, /stages\.train\.training\.steps=100/);
});

Deno.test("main() validate works while a run holds the lock; a second run is refused with exit 2", async () => {
  const { dir, file, runDir } = await setup();
  await Deno.mkdir(runDir);
  await Deno.writeTextFile(join(runDir, LOCK_FILE), JSON.stringify({ pid: Deno.pid, started: "2024-01-01T00:00:00Z" }));
  const v = await cli([file, "validate", "--run-dir", runDir]);
  assert.equal(v.code, 0, v.stderr);
  const r = await cli([file, "--run-dir", runDir]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`^error: run dir .* is in use by process ${Deno.pid}\\b`));
  await Deno.remove(dir, { recursive: true });
});
