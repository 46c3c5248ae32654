/**
 * The same tiny 2-layer transformer, same seed, trained on CPU and on CUDA: the loss curves must
 * match. Tolerance: |cuda - cpu| <= 1e-3 * cpu at every one of 40 steps (f32, TF32 off). Per-op
 * differences are ~1e-6 relative; AdamW amplifies them slowly, and after 40 steps the curves
 * agree to ~1e-5, so 1e-3 is generous yet catches any kernel that is wrong (which shows in the
 * first step or makes the curves drift apart by percent).
 */
import assert from "node:assert/strict";
import { backendAvailable } from "../../ffi/backend.ts";
import { tinyLossCurve } from "../_tiny_train.ts";

const haveCuda = backendAvailable("cuda");
for (const family of ["gpt2", "llama"] as const) {
  Deno.test({
    name: `tiny 2-layer ${family}: cuda loss curve matches cpu within 1e-3 relative over 40 steps`,
    ignore: !haveCuda,
    fn() {
      const cpu = tinyLossCurve(family, "cpu", 40);
      const gpu = tinyLossCurve(family, "cuda", 40);
      let worst = 0;
      for (let i = 0; i < cpu.length; i++) {
        const rel = Math.abs(gpu[i]! - cpu[i]!) / cpu[i]!;
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-3, `step ${i}: cuda ${gpu[i]} vs cpu ${cpu[i]}`);
      }
      console.log(
        `${family}: loss ${cpu[0]!.toFixed(4)} -> ${cpu.at(-1)!.toFixed(4)} (cpu), ${
          gpu.at(-1)!.toFixed(4)
        } (cuda); worst relative difference ${worst.toExponential(2)}`,
      );
    },
  });
}
