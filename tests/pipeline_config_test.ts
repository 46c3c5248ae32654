/**
 * Config parsing and validation: every problem reported at once, each with its key path, stage,
 * expected vs received, and the exact YAML line:col (or the override it came from).
 */
import assert from "node:assert/strict";
import { z } from "zod";
import {
  ConfigError,
  type ConfigIssue,
  ConfigSyntaxError,
  formatIssue,
  parseConfig,
  resolvedConfigYaml,
} from "../pipeline/config.ts";
import { registerStage } from "../pipeline/registry.ts";
import { TokenizerSchema } from "../stages/_schemas.ts";

// Two small real stage types, registered through the public plugin point.
registerStage({
  type: "cfg-train",
  description: "Config-test training stage",
  schema: z.strictObject({
    steps: z.number().int().positive().default(100),
    optimizer: z.strictObject({
      lr: z.number().positive(),
      betas: z.array(z.number()).default([0.9, 0.999]),
    }),
    schedule: z.enum(["constant", "cosine"]).default("cosine"),
    tag: z.string().optional(),
  }),
  inputs: () => [],
  run: () => Promise.resolve({}),
});
registerStage({
  type: "cfg-eval",
  description: "Config-test eval stage",
  schema: z.strictObject({ from: z.string(), batches: z.number().int().default(4) }),
  inputs: (c: { from: string }) => [c.from],
  run: () => Promise.resolve({}),
});

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.issues;
  }
  assert.fail("expected a ConfigError");
}

const GOOD = `name: quick
seed: 1
stages:
  - name: train
    type: cfg-train
    optimizer:
      lr: 0.001
  - name: eval
    type: cfg-eval
    from: train
`;

Deno.test("parseConfig() applies defaults and resolves stages in file order", () => {
  const c = parseConfig(GOOD, { file: "q.yaml" });
  assert.deepEqual(c.settings, { name: "quick", seed: 1, device: "cpu", run_dir: "runs/quick" });
  assert.deepEqual(c.stages.map((s) => [s.name, s.type, s.inputs]), [["train", "cfg-train", []], ["eval", "cfg-eval", [
    "train",
  ]]]);
  assert.deepEqual(c.stages[0]!.config, {
    steps: 100,
    optimizer: { lr: 0.001, betas: [0.9, 0.999] },
    schedule: "cosine",
  });
  const yaml = resolvedConfigYaml(c);
  assert.match(yaml, /steps: 100/);
  assert.match(yaml, /run_dir: runs\/quick/);
  assert.deepEqual(parseConfig(yaml).stages[0]!.config, c.stages[0]!.config);
});

Deno.test("parseConfig() reports every error with file:line:col", () => {
  const text = `name: Quick Start
seed: -1
devise: gpu
stages:
  - name: train
    type: cfg-train
    steps: many
    optimizer:
      lr: fast
  - name: train
    type: cfg-eval
    from: later
  - name: later
    type: cfg-train
    optimizer: {}
`;
  const issues = issuesOf(() => parseConfig(text, { file: "examples/x.yaml" }));
  const lines = issues.map(formatIssue);
  assert.deepEqual(lines, [
    `examples/x.yaml:1:7 name: expected string matching /^[a-z0-9_-]+$/, received string "Quick Start"`,
    `examples/x.yaml:2:7 seed: expected number >= 0, received number -1`,
    `examples/x.yaml:3:1 devise: unknown key "devise" (did you mean "device"?)`,
    `examples/x.yaml:7:12 stages[0].steps (stage train): expected number, received string "many"`,
    `examples/x.yaml:9:11 stages[0].optimizer.lr (stage train): expected number, received string "fast"`,
    `examples/x.yaml:10:11 stages[1].name (stage train): duplicate stage name "train" (first used by stages[0], line 5)`,
    `examples/x.yaml:12:11 stages[1].from (stage train): stage "train" consumes "later", which runs later: stages run in file order, so move "later" above "train"`,
    `examples/x.yaml:15:16 stages[2].optimizer.lr (stage later): missing required key "lr": expected number`,
  ]);
  const lr = issues.find((i) => i.path === "stages[0].optimizer.lr")!;
  assert.equal(lr.stage, "train");
  assert.equal(lr.expected, "number");
  assert.equal(lr.received, 'string "fast"');
  assert.equal(lr.file, "examples/x.yaml");
  assert.equal(lr.line, 9);
  assert.equal(lr.col, 11);
});

Deno.test("parseConfig() suggests the closest key for unknown keys at every level", () => {
  const text = `name: q
stages:
  - name: train
    type: cfg-train
    stpes: 5
    optimizer:
      lr: 0.1
      beta: [0.9, 0.99]
    zzz: 1
`;
  const issues = issuesOf(() => parseConfig(text, { file: "k.yaml" }));
  assert.deepEqual(issues.map((i) => [i.location, i.path, i.message]), [
    ["k.yaml:5:5", "stages[0].stpes", 'unknown key "stpes" (did you mean "steps"?)'],
    ["k.yaml:8:7", "stages[0].optimizer.beta", 'unknown key "beta" (did you mean "betas"?)'],
    [
      "k.yaml:9:5",
      "stages[0].zzz",
      'unknown key "zzz"; allowed keys: name, type, sweep, steps, optimizer, schedule, tag',
    ],
  ]);
});

Deno.test("parseConfig() reports wrong types with expected and received", () => {
  const text = `name: q
device: gpu
stages:
  - name: train
    type: cfg-train
    steps: 2.5
    schedule: cosin
    optimizer: 3
`;
  const issues = issuesOf(() => parseConfig(text));
  assert.deepEqual(issues.map((i) => [i.path, i.expected, i.received]), [
    ["device", 'one of "cpu" | "cuda" | "auto"', 'string "gpu"'],
    ["stages[0].steps", "integer", "number 2.5"],
    ["stages[0].schedule", 'one of "constant" | "cosine"', 'string "cosin"'],
    ["stages[0].optimizer", "mapping", "number 3"],
  ]);
  assert.match(issues[2]!.message, /\(did you mean "cosine"\?\)$/);
});

Deno.test("parseConfig() rejects an unknown stage type, listing registered types", () => {
  const issues = issuesOf(() =>
    parseConfig("name: q\nstages:\n  - name: a\n    type: cfg-trian\n", { file: "t.yaml" })
  );
  assert.equal(issues.length, 1);
  assert.equal(issues[0]!.location, "t.yaml:4:11");
  assert.match(
    issues[0]!.message,
    /^unknown stage type "cfg-trian" \(did you mean "cfg-train"\?\); registered types: .*cfg-eval, cfg-train/,
  );
});

Deno.test("parseConfig() rejects references to unknown stages with a suggestion", () => {
  const text = GOOD.replace("from: train", "from: trian");
  const issues = issuesOf(() => parseConfig(text, { file: "r.yaml" }));
  assert.deepEqual(issues.map(formatIssue), [
    `r.yaml:10:11 stages[1].from (stage eval): stage "eval" consumes "trian", which is not a stage in this pipeline (did you mean "train"?)`,
  ]);
});

Deno.test("parseConfig() requires name and at least one stage, pointing at the parent map", () => {
  const issues = issuesOf(() => parseConfig("seed: 0\nstages: []\n", { file: "e.yaml" }));
  assert.deepEqual(issues.map(formatIssue), [
    'e.yaml:1:1 name: missing required key "name": expected string',
    "e.yaml:2:9 stages: expected at least 1 item, received a list",
  ]);
  assert.equal(
    issuesOf(() => parseConfig("- a\n- b\n"))[0]!.message,
    "expected a mapping of pipeline keys (name, stages, ...) at the top level",
  );
});

Deno.test("parseConfig() reports malformed YAML as a ConfigSyntaxError with its location", () => {
  const text = "name: q\nstages:\n  - name: a\n    type: [cfg-train\n  - name: b\n";
  assert.throws(() => parseConfig(text, { file: "bad.yaml" }), (err: unknown) => {
    assert.ok(err instanceof ConfigSyntaxError);
    assert.ok(err instanceof SyntaxError);
    assert.equal(err.file, "bad.yaml");
    assert.equal(err.line, 5);
    assert.equal(typeof err.col, "number");
    assert.match(err.message, /^Malformed YAML: bad\.yaml:5:\d+ /);
    return true;
  });
  assert.throws(() => parseConfig("name: a\nname: b\n", { file: "dup.yaml" }), /dup\.yaml:2:1 Map keys must be unique/);
});

Deno.test("parseConfig() applies typed overrides by stage name, index and top-level key", () => {
  const c = parseConfig(GOOD, {
    overrides: [
      "stages.train.optimizer.lr=3e-4",
      "stages[1].batches=8",
      "seed=7",
      "device=cuda",
      "stages.train.tag=123",
    ],
  });
  assert.equal(c.settings.seed, 7);
  assert.equal(c.settings.device, "cuda");
  const train = c.stages[0]!.config as any;
  assert.equal(train.optimizer.lr, 0.0003);
  assert.equal(train.tag, "123", "a number-looking value stays a string where the schema wants a string");
  assert.equal((c.stages[1]!.config as any).batches, 8);
  assert.deepEqual(c.overrides.length, 5);
  const list = parseConfig(GOOD, { overrides: ["stages.train.optimizer.betas=[0.8, 0.9]"] });
  assert.deepEqual((list.stages[0]!.config as any).optimizer.betas, [0.8, 0.9]);
});

Deno.test("parseConfig() locates override errors at the override", () => {
  const issues = issuesOf(() =>
    parseConfig(GOOD, {
      file: "q.yaml",
      overrides: [
        "seed=1",
        "stages.train.optimizer.lr=abc",
        "stages.train.optimzer.lr=1",
        "stages.trian.steps=3",
        "nonsense",
        "stages.eval.from=nowhere",
      ],
    })
  );
  assert.deepEqual(issues.map(formatIssue), [
    `override #2 'stages.train.optimizer.lr=abc' stages[0].optimizer.lr (stage train): expected number, received string "abc"`,
    `override #3 'stages.train.optimzer.lr=1' stages[0].optimzer (stage train): unknown key "optimzer" (did you mean "optimizer"?)`,
    `override #4 'stages.trian.steps=3': no stage named "trian" (did you mean "train"?); stages: train, eval`,
    "override #5 'nonsense': expected key.path=value",
    `override #6 'stages.eval.from=nowhere' stages[1].from (stage eval): stage "eval" consumes "nowhere", which is not a stage in this pipeline`,
  ]);
  assert.equal(issues[0]!.override, 2);
  assert.equal(issues[0]!.line, undefined);
});

Deno.test("ConfigError message lists every issue like a compiler", () => {
  assert.throws(
    () => parseConfig("name: q\nsed: 1\nstages:\n  - {name: a, type: cfg-eval}\n", { file: "m.yaml" }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        [
          "Invalid pipeline config m.yaml: 2 errors",
          'm.yaml:2:1 sed: unknown key "sed" (did you mean "seed"?)',
          'm.yaml:4:5 stages[0].from (stage a): missing required key "from": expected string',
        ].join("\n"),
      );
      return true;
    },
  );
});

// A stage with the fine-tune stage's tokenizer block (a z.discriminatedUnion) and a tuple.
registerStage({
  type: "cfg-union",
  description: "Config-test stage with a discriminated union",
  schema: z.strictObject({
    tokenizer: TokenizerSchema.optional(),
    pair: z.tuple([z.strictObject({ lr: z.number() })]).optional(),
  }),
  inputs: () => [],
  run: () => Promise.resolve({}),
});

const TOK = (tok: string) => `name: q\nstages:\n  - name: train\n    type: cfg-union\n    tokenizer: ${tok}\n`;

Deno.test("parseConfig() reports unknown keys inside a discriminated union by the matching option", () => {
  // Used to crash: "Cannot read properties of undefined (reading 'inputs')".
  assert.deepEqual(
    issuesOf(() => parseConfig(TOK("{ type: bytes, eos_tok: x }"), { file: "u.yaml" })).map(formatIssue),
    [
      'u.yaml:5:31 stages[0].tokenizer.eos_tok (stage train): unknown key "eos_tok"; allowed keys: type, specialTokens, bos, eos',
    ],
  );
  assert.deepEqual(issuesOf(() => parseConfig(TOK("{ type: bytes, eoss: x }"))).map((i) => i.message), [
    'unknown key "eoss" (did you mean "eos"?)',
  ]);
  // eos belongs to the bytes option, not to gpt2.
  assert.deepEqual(issuesOf(() => parseConfig(TOK("{ type: gpt2, eos: x }"))).map((i) => i.message), [
    'unknown key "eos"; allowed keys: type, encoder, merges',
  ]);
  assert.deepEqual(parseConfig(TOK("{ type: bytes, eos: x }")).stages[0]!.config, {
    tokenizer: { type: "bytes", eos: "x" },
  });
});

Deno.test("parseConfig() words an invalid discriminator like the other errors", () => {
  const bpe = issuesOf(() => parseConfig(TOK("{ type: bpe }"), { file: "d.yaml" }));
  assert.deepEqual(bpe.map(formatIssue), [
    'd.yaml:5:24 stages[0].tokenizer.type (stage train): expected one of "bytes" | "gpt2" | "hf", received string "bpe"',
  ]);
  assert.equal(bpe[0]!.expected, 'one of "bytes" | "gpt2" | "hf"');
  assert.equal(bpe[0]!.received, 'string "bpe"');
  assert.equal(
    issuesOf(() => parseConfig(TOK("{ type: bytez }")))[0]!.message,
    'expected one of "bytes" | "gpt2" | "hf", received string "bytez" (did you mean "bytes"?)',
  );
  assert.equal(
    issuesOf(() => parseConfig(TOK("{ eos: x }")))[0]!.message,
    'missing required key "type": expected one of "bytes" | "gpt2" | "hf"',
  );
});

Deno.test("parseConfig() types overrides under a union by the matching option", () => {
  const bytes = parseConfig(TOK("{ type: bytes }"), { overrides: ["stages.train.tokenizer.eos=3"] });
  assert.deepEqual((bytes.stages[0]!.config as any).tokenizer, { type: "bytes", eos: "3" });
  const gpt2 = parseConfig(TOK("{ type: gpt2 }"), { overrides: ["stages.train.tokenizer.encoder=123"] });
  assert.deepEqual((gpt2.stages[0]!.config as any).tokenizer, { type: "gpt2", encoder: "123" });
  assert.deepEqual(
    issuesOf(() => parseConfig(TOK("{ type: gpt2 }"), { overrides: ["stages.train.tokenizer.eos=3"] })).map(
      formatIssue,
    ),
    [`override #1 'stages.train.tokenizer.eos=3' stages[0].tokenizer.eos (stage train): unknown key "eos"; allowed keys: type, encoder, merges`],
  );
  // Tuples are typed too.
  const pair = parseConfig(TOK("{ type: bytes }") + "    pair: [{ lr: 1 }]\n", {
    overrides: ["stages[0].pair[0].lr=2"],
  });
  assert.deepEqual((pair.stages[0]!.config as any).pair, [{ lr: 2 }]);
});

Deno.test("parseConfig() keeps zod's unknown-key issue where the key walk does not reach, never crashing", () => {
  // findUnknownKeys does not descend into tuples; zod's unrecognized_keys issue is reported instead.
  const issues = issuesOf(() =>
    parseConfig(TOK("{ type: bytes }") + "    pair: [{ lr: 1, lrr: 2 }]\n", { file: "t.yaml" })
  );
  assert.deepEqual(issues.map(formatIssue), [
    't.yaml:6:21 stages[0].pair[0].lrr (stage train): unknown key "lrr" (did you mean "lr"?)',
  ]);
});

Deno.test("registerStage() rejects a schema that declares a reserved key", () => {
  assert.throws(
    () =>
      registerStage({
        type: "cfg-reserved",
        description: "",
        schema: z.strictObject({ type: z.string() }),
        inputs: () => [],
        run: () => Promise.resolve({}),
      }),
    /declares the reserved key "type"/,
  );
});
