/**
 * Decode engine on the CPU backend (f32): KV-cache decoding against the full-sequence forward of
 * DecoderLM (logits and greedy tokens, GPT-2 and LLaMA with GQA), determinism, seeded sampling,
 * stop sequences, bad input, and sparse (LTE hard routing) decoding against the dense model with
 * the same hard mask applied through DecoderLM's FFN hook.
 */
import nodeAssert from "node:assert/strict";

function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}
function assertEquals(a: unknown, b: unknown, msg?: string): void {
  nodeAssert.deepStrictEqual(a, b, msg);
}
// deno-lint-ignore no-explicit-any
type ErrorClass = new (...args: any[]) => Error;
function assertThrows(fn: () => unknown, cls: ErrorClass, includes: string): void {
  nodeAssert.throws(fn, (e: unknown) => e instanceof cls && (e as Error).message.includes(includes));
}
async function assertRejects(fn: () => Promise<unknown>, cls: ErrorClass, includes: string): Promise<void> {
  await nodeAssert.rejects(fn, (e: unknown) => e instanceof cls && (e as Error).message.includes(includes));
}
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine, EngineError, type EngineOptions, GREEDY } from "../engine/mod.ts";
import { saveCheckpoint } from "../models/checkpoint.ts";
import { type ModelConfig, resolveModelConfig } from "../models/config.ts";
import { DecoderLM } from "../models/decoder.ts";
import { routerBiasName, routerWeightName, writeLteMeta, writeRouters } from "../models/lte_artifacts.ts";
import { expertScale, linear, noGrad, Rng, scope, Tensor, threshold } from "../tensor/mod.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { tinyLlamaConfig } from "./_tiny_llama.ts";

Deno.env.set("OMP_NUM_THREADS", Deno.env.get("OMP_NUM_THREADS") ?? "1");

const tokenizer = loadTokenizer({ type: "bytes" });
const CPU: EngineOptions = { device: "cpu", dtype: "f32", sparse: false, maxBatch: 3, maxContext: 48 };

const llamaConfig = tinyLlamaConfig;
function gpt2Config(): ModelConfig {
  return resolveModelConfig({
    family: "gpt2",
    vocab_size: 256,
    n_layer: 2,
    d_model: 64,
    n_head: 4,
    d_ff: 256,
    max_seq: 64,
    init_std: 0.08,
  });
}

/** Full-sequence logits of the last position. */
function lastLogits(model: DecoderLM, ids: number[]): Float32Array {
  return noGrad(() =>
    scope(() => {
      const t = Tensor.fromArray(Int32Array.from(ids), [1, ids.length]);
      const all = model.forward(t).toArray() as Float32Array;
      return all.slice((ids.length - 1) * model.config.vocab_size);
    })
  );
}

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

async function checkAgainstForward(config: ModelConfig): Promise<void> {
  const model = DecoderLM.init(config, { device: "cpu", seed: 3 });
  const eng = Engine.fromArrays(config, model.toArrays(), CPU, { tokenizer });
  try {
    const prompt = [5, 77, 130, 9, 200, 31, 64];
    const slot = eng.allocSlot()!;
    const other = eng.allocSlot()!; // a second sequence decoded in the same batch
    const ids = [...prompt];
    const otherIds = [1, 2, 3];
    let r = await eng.prefill(slot, ids, GREEDY);
    let ref = lastLogits(model, ids);
    let got = await eng.lastLogits(1);
    assert(maxRelDiff(got, ref) < 1e-4, `prefill logits differ: ${maxRelDiff(got, ref)}`);
    assertEquals(r.token, argmax(ref));
    const r2 = await eng.prefill(other, otherIds, GREEDY);
    assertEquals(r2.token, argmax(lastLogits(model, otherIds)));
    ids.push(r.token);
    otherIds.push(r2.token);
    for (let i = 0; i < 6; i++) {
      const s = await eng.step([slot, other], [GREEDY, GREEDY]);
      const all = await eng.lastLogits(2);
      ref = lastLogits(model, ids);
      got = all.slice(0, config.vocab_size);
      assert(maxRelDiff(got, ref) < 1e-4, `step ${i} logits differ: ${maxRelDiff(got, ref)}`);
      const refOther = lastLogits(model, otherIds);
      assert(maxRelDiff(all.slice(config.vocab_size), refOther) < 1e-4, `step ${i}, second slot`);
      assertEquals(s.tokens, [argmax(ref), argmax(refOther)]);
      assertEquals(s.activeExperts, [[], []]);
      ids.push(s.tokens[0]!);
      otherIds.push(s.tokens[1]!);
    }
    assertEquals(eng.position(slot), ids.length - 1);
    r = await eng.prefill(slot, prompt, GREEDY); // a slot can be re-prefilled (cache overwritten)
    assertEquals(r.token, ids[prompt.length]);
  } finally {
    eng.dispose();
    model.dispose();
  }
}

Deno.test("engine: LLaMA (GQA) KV-cache decoding matches the full-sequence forward", async () => {
  await checkAgainstForward(llamaConfig());
});

Deno.test("engine: GPT-2 KV-cache decoding matches the full-sequence forward", async () => {
  await checkAgainstForward(gpt2Config());
});

async function collect(eng: Engine, prompt: string | number[], opts: Parameters<Engine["generate"]>[1]) {
  const ids: number[] = [];
  let text = "";
  for await (const t of eng.generate(prompt, opts)) {
    ids.push(t.id);
    text += t.text;
  }
  return { ids, text };
}

Deno.test("engine: greedy is deterministic, seeded sampling reproducible, top-k 1 is greedy", async () => {
  const config = llamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 4 });
  const eng = Engine.fromArrays(config, model.toArrays(), CPU, { tokenizer });
  model.dispose();
  try {
    const a = await collect(eng, "Hello", { maxTokens: 10 });
    const b = await collect(eng, "Hello", { maxTokens: 10 });
    assertEquals(a.ids.length, 10);
    assertEquals(a.ids, b.ids);
    const sp = { maxTokens: 12, temperature: 1.5, topK: 40, topP: 0.95, seed: 7 };
    const s1 = await collect(eng, "Hello", sp);
    const s2 = await collect(eng, "Hello", sp);
    assertEquals(s1.ids, s2.ids);
    const s3 = await collect(eng, "Hello", { ...sp, seed: 8 });
    const s4 = await collect(eng, "Hello", { ...sp, seed: 9 });
    assert(s1.ids.join() !== s3.ids.join() || s1.ids.join() !== s4.ids.join(), "seeds change the samples");
    const k1 = await collect(eng, "Hello", { maxTokens: 10, temperature: 1, topK: 1, seed: 3 });
    assertEquals(k1.ids, a.ids);
    const p0 = await collect(eng, "Hello", { maxTokens: 10, temperature: 0.7, topP: 1e-6, seed: 3 });
    assertEquals(p0.ids, a.ids);
  } finally {
    eng.dispose();
  }
});

Deno.test("engine: timeSteps runs n steps on the device and lands where n single steps land", async () => {
  const config = llamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 4 });
  const eng = Engine.fromArrays(config, model.toArrays(), CPU, { tokenizer });
  model.dispose();
  try {
    const prompt = [5, 9, 2, 7];
    const a = eng.allocSlot()!;
    await eng.prefill(a, prompt, GREEDY);
    let last = -1;
    for (let i = 0; i < 6; i++) last = (await eng.step([a], [GREEDY])).tokens[0]!;
    const posA = eng.position(a);
    eng.freeSlot(a);
    const b = eng.allocSlot()!;
    await eng.prefill(b, prompt, GREEDY);
    const ms = await eng.timeSteps([b], [GREEDY], 6);
    assert(ms > 0 && Number.isFinite(ms), `ms per step ${ms}`);
    assertEquals(eng.position(b), posA);
    // the next step feeds the last token of the six: same continuation as the single steps
    const next = (await eng.step([b], [GREEDY])).tokens[0]!;
    const c = eng.allocSlot()!;
    await eng.prefill(c, prompt, GREEDY);
    let ref = -1;
    for (let i = 0; i < 7; i++) ref = (await eng.step([c], [GREEDY])).tokens[0]!;
    assert(last >= 0);
    assertEquals(next, ref);
    assertThrows(() => eng.timeSteps([b], [GREEDY], 0), EngineError, "n 0");
  } finally {
    eng.dispose();
  }
});

Deno.test("engine: syncRead (blocking token reads) decodes the same tokens as the default", async () => {
  const config = llamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 4 });
  const arrays = model.toArrays();
  model.dispose();
  const a = Engine.fromArrays(config, arrays, CPU, { tokenizer });
  const b = Engine.fromArrays(config, arrays, { ...CPU, syncRead: true }, { tokenizer });
  try {
    const sp = { maxTokens: 12, temperature: 0.9, topK: 20, seed: 5 };
    assertEquals((await collect(b, "Hello", sp)).ids, (await collect(a, "Hello", sp)).ids);
  } finally {
    a.dispose();
    b.dispose();
  }
});

Deno.test("engine: stop sequences end generation before the stop text; maxTokens caps it", async () => {
  const config = llamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 5 });
  const eng = Engine.fromArrays(config, model.toArrays(), CPU, { tokenizer });
  model.dispose();
  try {
    const ids = [72, 105, 32];
    const full = await collect(eng, ids, { maxTokens: 16 });
    assertEquals(full.ids.length, 16);
    assertEquals(full.text, tokenizer.decode(full.ids, { skipSpecial: true }));
    // stop at the text of generated tokens 6..7
    const stop = tokenizer.decode(full.ids.slice(6, 8));
    const cut = full.text.indexOf(stop);
    const stopped = await collect(eng, ids, { maxTokens: 16, stop: [stop, "\u0000never"] });
    assertEquals(stopped.text, full.text.slice(0, cut));
    assert(stopped.ids.length <= 8);
    const three = await collect(eng, ids, { maxTokens: 3 });
    assertEquals(three.ids, full.ids.slice(0, 3));
  } finally {
    eng.dispose();
  }
});

Deno.test("engine: bad input is an EngineError and the other slots keep decoding", async () => {
  const config = llamaConfig();
  const model = DecoderLM.init(config, { device: "cpu", seed: 6 });
  const arrays = model.toArrays();
  model.dispose();
  assertThrows(
    () => Engine.fromArrays(config, arrays, { ...CPU, dtype: "f64" as "f32" }, { tokenizer }),
    EngineError,
    "dtype",
  );
  assertThrows(
    () => Engine.fromArrays(config, arrays, { ...CPU, maxContext: 65 }, { tokenizer }),
    EngineError,
    "maxContext",
  );
  assertThrows(
    () => Engine.fromArrays(config, arrays, { ...CPU, sparse: true }, { tokenizer }),
    EngineError,
    "routers",
  );
  const badRouters = new Map<string, Float32Array>();
  for (let i = 0; i < config.n_layer; i++) badRouters.set(routerWeightName(i), new Float32Array(7 * config.d_model));
  assertThrows(
    () =>
      Engine.fromArrays(config, arrays, { ...CPU, sparse: true }, {
        tokenizer,
        routers: { expertSize: 32, tau: 0.5, arrays: badRouters },
      }),
    EngineError,
    "do not match",
  );
  const eng = Engine.fromArrays(config, arrays, { ...CPU, maxBatch: 2, maxContext: 12 }, { tokenizer });
  try {
    const a = eng.allocSlot()!;
    const first = await eng.prefill(a, [1, 2, 3], GREEDY);
    const ref = await collect(eng, [1, 2, 3], { maxTokens: 1 }).catch((e) => e);
    assertEquals((ref as { ids: number[] }).ids, [first.token]);
    const b = eng.allocSlot()!;
    assertEquals(eng.allocSlot(), null);
    await assertRejects(() => collect(eng, [1], { maxTokens: 2 }), EngineError, "slots are in use");
    assertThrows(() => eng.prefill(b, Array(12).fill(1), GREEDY), EngineError, "context holds 12");
    assertThrows(() => eng.prefill(b, [1, 999], GREEDY), EngineError, "outside the vocabulary");
    assertThrows(() => eng.step([a, b, 0], [GREEDY, GREEDY, GREEDY]), EngineError, "maxBatch 2");
    assertThrows(() => eng.step([b], [GREEDY]), EngineError, "prefill first");
    assertThrows(() => eng.step([a], [{ ...GREEDY, topP: 0 }]), EngineError, "topP");
    assertThrows(() => eng.step([7], [GREEDY]), EngineError, "not an allocated slot");
    // slot a is untouched by all of that: it continues exactly like an undisturbed run
    const s = await eng.step([a], [GREEDY]);
    const check = Engine.fromArrays(config, arrays, { ...CPU, maxBatch: 1, maxContext: 12 }, { tokenizer });
    try {
      const c = check.allocSlot()!;
      await check.prefill(c, [1, 2, 3], GREEDY);
      assertEquals((await check.step([c], [GREEDY])).tokens, s.tokens);
    } finally {
      check.dispose();
    }
    // a full context is reported, not overrun
    for (let i = eng.position(a); i < 12; i++) await eng.step([a], [GREEDY]);
    assertThrows(() => eng.step([a], [GREEDY]), EngineError, "is full");
  } finally {
    eng.dispose();
  }
});

function tauLogit(tau: number): number {
  return Math.log(tau / (1 - tau));
}

Deno.test("engine: sparse greedy decoding (LTE folder, hard routers) equals the dense model with the same hard mask", async () => {
  const config = llamaConfig();
  const S = 32, E = config.d_ff / S, tau = 0.55;
  const model = DecoderLM.init(config, { device: "cpu", seed: 8 });
  const rng = new Rng(11);
  const routers = new Map<string, Float32Array>();
  for (let i = 0; i < config.n_layer; i++) {
    routers.set(routerWeightName(i), rng.normals(E * config.d_model, 0.15));
    routers.set(routerBiasName(i), rng.normals(E, 0.5));
  }
  const dir = mkdtempSync(join(tmpdir(), "lte-engine-"));
  try {
    saveCheckpoint(join(dir, "m"), model, { files: { "lte_tokenizer.json": JSON.stringify({ type: "bytes" }) } });
    const mdir = join(dir, "m");
    const meta = {
      format: "lte-pipeline/lte@1" as const,
      expert_size: S,
      n_layer: config.n_layer,
      d_ff: config.d_ff,
      d_model: config.d_model,
      experts_per_layer: E,
      tau,
      permutation: Array.from({ length: config.n_layer }, () => Array.from({ length: config.d_ff }, (_, i) => i)),
      grouping: { method: "random" as const, seed: 0, mean_intra_cosine: 0, random_intra_cosine: 0 },
      routers: { file: "routers.safetensors", bias: true, init: "normal", trained_by: "test" },
      method: "lte",
      provenance: [],
    };
    writeLteMeta(mdir, meta);
    writeRouters(mdir, routers, meta);
    const eng = await Engine.load(mdir, { ...CPU, sparse: true });
    assertEquals(eng.expertsPerLayer, E);
    // reference: dense DecoderLM with the hard mask of the same routers on the FFN input
    const rw = [...Array(config.n_layer).keys()].map((i) => ({
      w: Tensor.fromArray(routers.get(routerWeightName(i))!, [E, config.d_model]).keep(),
      b: Tensor.fromArray(routers.get(routerBiasName(i))!, [E]).keep(),
    }));
    const masks: number[][] = [];
    model.ffnRouting = (layer, h, a) => {
      const m = threshold(linear(h, rw[layer]!.w, rw[layer]!.b), tauLogit(tau));
      const arr = m.toArray() as Float32Array;
      const last = arr.slice(arr.length - E);
      masks[layer] = [last.reduce((x, y) => x + y, 0)];
      return expertScale(a, m, S);
    };
    try {
      const ids = [3, 141, 59, 26, 53];
      const slot = eng.allocSlot()!;
      let r = await eng.prefill(slot, ids, GREEDY);
      let seenInactive = false;
      for (let i = 0; i < 8; i++) {
        const ref = lastLogits(model, ids);
        assertEquals(r.token, argmax(ref), `token ${i}`);
        assertEquals(r.activeExperts, masks.map((m) => m[0]!), `active experts at token ${i}`);
        if (r.activeExperts.some((n) => n < E)) seenInactive = true;
        const got = await eng.lastLogits(1);
        assert(maxRelDiff(got, ref) < 1e-4, `logits at token ${i}: ${maxRelDiff(got, ref)}`);
        ids.push(r.token);
        const s = await eng.step([slot], [GREEDY]);
        r = { token: s.tokens[0]!, activeExperts: s.activeExperts[0]! };
      }
      assert(seenInactive, "the routers switched some experts off");
      // the same folder loaded dense ignores the routers
      const dense = await Engine.load(mdir, CPU);
      try {
        assertEquals(dense.expertsPerLayer, null);
      } finally {
        dense.dispose();
      }
    } finally {
      for (const t of rw) {
        t.w.dispose();
        t.b.dispose();
      }
      eng.dispose();
    }
    // a routers file that does not match lte.json is refused with the file named
    writeFileSync(join(mdir, "routers.safetensors"), "not a safetensors file");
    await assertRejects(() => Engine.load(mdir, { ...CPU, sparse: true }), EngineError, "routers.safetensors");
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The LLaMA test model (seed 8) with random routers over experts of 32 drawn from `routerSeed`. */
function sparseLlama(routerSeed: number) {
  const config = llamaConfig();
  const S = 32, E = config.d_ff / S;
  const model = DecoderLM.init(config, { device: "cpu", seed: 8 });
  const arrays = model.toArrays();
  model.dispose();
  const rng = new Rng(routerSeed);
  const routers = new Map<string, Float32Array>();
  for (let i = 0; i < config.n_layer; i++) {
    routers.set(routerWeightName(i), rng.normals(E * config.d_model, 0.15));
    routers.set(routerBiasName(i), rng.normals(E, 0.5));
  }
  return { config, S, E, arrays, routers };
}

Deno.test("engine: the fused sparse FFN op, KERNELS' path and the engine's own masked GEMVs decode alike", async () => {
  const { config, S, E, arrays, routers } = sparseLlama(11);
  const runs: { tokens: number[]; active: number[][]; logits: number[] }[] = [];
  const paths = [{ fusedFfn: true }, { fusedFfn: false, ffnKernels: false }, { ffnKernels: true }];
  for (const path of paths) {
    const eng = Engine.fromArrays(config, arrays, { ...CPU, sparse: true, ...path }, {
      tokenizer,
      routers: { expertSize: S, tau: 0.5, arrays: routers },
    });
    try {
      const a = eng.allocSlot()!, b = eng.allocSlot()!;
      const ra = await eng.prefill(a, [3, 141, 59, 26], GREEDY), rb = await eng.prefill(b, [9, 9], GREEDY);
      const run = {
        tokens: [ra.token, rb.token],
        active: [ra.activeExperts, rb.activeExperts],
        logits: [] as number[],
      };
      for (let i = 0; i < 5; i++) {
        const st = await eng.step([a, b], [GREEDY, GREEDY]);
        run.tokens.push(...st.tokens);
        run.active.push(...st.activeExperts);
      }
      run.logits = Array.from(await eng.lastLogits(2));
      runs.push(run);
    } finally {
      eng.dispose();
    }
  }
  // the fused op equals the older op chain bit for bit (same sums in the same order on the CPU)
  assertEquals(runs[1], runs[0]);
  // KERNELS' path sums in another order: same tokens and expert counts
  assertEquals({ ...runs[2]!, logits: [] }, { ...runs[0]!, logits: [] });
  assert(runs[0]!.active.flat().some((n) => n < E), "some experts are off");
});

// The running fraction of active experts per token behind the path of batched sparse CUDA steps
// (Engine.expectedUnion; twelfth session): 0.5 before any count, then an exponential average
// (first value, then 0.9 / 0.1) of every token's per-layer counts as the engine reads them back.
Deno.test("engine: expectedUnion follows the running fraction of active experts per token", async () => {
  const { config, S, E, arrays, routers } = sparseLlama(12);
  const eng = Engine.fromArrays(config, arrays, { ...CPU, sparse: true }, {
    tokenizer,
    routers: { expertSize: S, tau: 0.5, arrays: routers },
  });
  try {
    assertEquals(eng.expectedUnion(1), 0.5);
    assertEquals(eng.expectedUnion(4), 1 - 0.5 ** 4);
    let a: number | null = null;
    const fold = (counts: number[]) => {
      const f = counts.reduce((u, v) => u + v, 0) / (config.n_layer * E);
      a = a === null ? f : 0.9 * a + 0.1 * f;
    };
    const s1 = eng.allocSlot()!, s2 = eng.allocSlot()!;
    fold((await eng.prefill(s1, [3, 141, 59, 26], GREEDY)).activeExperts);
    fold((await eng.prefill(s2, [9, 9], GREEDY)).activeExperts);
    for (let i = 0; i < 4; i++) (await eng.step([s1, s2], [GREEDY, GREEDY])).activeExperts.forEach(fold);
    const want = a!;
    assert(want > 0 && want < 1, `the routers leave some experts on and some off: ${want}`);
    for (const rows of [1, 4, 8, 16]) {
      const got = eng.expectedUnion(rows), exp = 1 - (1 - want) ** rows;
      assert(Math.abs(got - exp) < 1e-12, `${rows} rows: ${got} vs ${exp}`);
    }
  } finally {
    eng.dispose();
  }
});
