/** A tiny 2-layer transformer of each family trains on the CPU backend. */
import assert from "node:assert/strict";
import { tinyLossCurve } from "./_tiny_train.ts";

for (const family of ["gpt2", "llama"] as const) {
  Deno.test(`tiny 2-layer ${family} trains on cpu: loss falls below half its start in 60 steps`, () => {
    const losses = tinyLossCurve(family, "cpu", 60);
    assert.ok(Math.abs(losses[0]! - Math.log(37)) < 0.3, `initial loss ${losses[0]} should be near ln(37)`);
    const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(last < losses[0]! * 0.5, `loss ${losses[0]} -> ${last}`);
  });
  Deno.test(`tiny ${family} training is deterministic for a seed`, () => {
    assert.deepEqual(tinyLossCurve(family, "cpu", 5), tinyLossCurve(family, "cpu", 5));
  });
}
