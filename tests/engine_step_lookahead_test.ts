/**
 * `step()` lookahead (engine option `lookahead`, CPU backend): step() launches the next step for
 * the same slots before it waits for this one, as the server's batch loop calls it. A scripted
 * scheduler (tests/_step_lookahead_script.ts: steady batches, a batch that shrinks and grows again,
 * a slot freed and reused, a prefill between two steps of the same batch, reordered slots, changed
 * sampling, a slot running into the end of the context) must see exactly the tokens, experts,
 * positions and errors of the plain path; timeSteps and lastLogits must stay consistent with a
 * step in flight.
 */
import nodeAssert from "node:assert/strict";
import { Engine, type EngineOptions, GREEDY } from "../engine/mod.ts";
import { batchLoopScript as script } from "./_step_lookahead_script.ts";
import { initArrays, tinyLlamaConfig } from "./_tiny_llama.ts";
import { loadTokenizer } from "../text/tokenizer.ts";

Deno.env.set("OMP_NUM_THREADS", Deno.env.get("OMP_NUM_THREADS") ?? "1");

const tokenizer = loadTokenizer({ type: "bytes" });
const CPU: EngineOptions = { device: "cpu", dtype: "f32", sparse: false, maxBatch: 3, maxContext: 24 };
const config = tinyLlamaConfig();
const arrays = initArrays(config, 11);
Deno.test("step() lookahead: a scripted batch loop sees exactly the plain path", async () => {
  const on = Engine.fromArrays(config, arrays, { ...CPU, lookahead: true }, { tokenizer });
  const off = Engine.fromArrays(config, arrays, { ...CPU, lookahead: false }, { tokenizer });
  try {
    const want = await script(off);
    const got = await script(on);
    nodeAssert.deepStrictEqual(got, want);
    // the script reached the end of the context (else the last check above proves nothing)
    nodeAssert.ok(want.some((e) => Array.isArray(e) && e[1] === "error" && String(e[2]).includes("is full")));
  } finally {
    on.dispose();
    off.dispose();
  }
});

Deno.test("step() lookahead: timeSteps undoes the step in flight; lastLogits refuses", async () => {
  const on = Engine.fromArrays(config, arrays, { ...CPU, lookahead: true }, { tokenizer });
  const off = Engine.fromArrays(config, arrays, { ...CPU, lookahead: false }, { tokenizer });
  try {
    const run = async (eng: Engine) => {
      const s = eng.allocSlot()!;
      await eng.prefill(s, [1, 2, 3], GREEDY);
      const t = [(await eng.step([s], [GREEDY])).tokens[0]];
      return { s, t };
    };
    const r1 = await run(on), r0 = await run(off);
    nodeAssert.deepStrictEqual(r1.t, r0.t);
    await nodeAssert.rejects(on.lastLogits(1), /lookahead/);
    // the step `on` has in flight is undone for timeSteps: both time 3 steps from the same place
    await on.timeSteps([r1.s], [GREEDY], 3);
    await off.timeSteps([r0.s], [GREEDY], 3);
    nodeAssert.equal(on.position(r1.s), off.position(r0.s));
    const n1 = await on.step([r1.s], [GREEDY]), n0 = await off.step([r0.s], [GREEDY]);
    nodeAssert.deepStrictEqual(n1.tokens, n0.tokens);
  } finally {
    on.dispose();
    off.dispose();
  }
});
