/**
 * Where a decode step's time goes (GPU machine): builds a LLaMA-2-7B-shaped engine with random
 * fp16 weights, prefills 16 tokens, then runs `--steps` greedy steps and prints ms per token.
 * Meant to be run under Nsight Compute (`ncu --graph-profiling node ...`, see
 * bench/decode_profile_device.sh) to get each kernel's duration; without ncu it is a quick
 * tokens/s probe.  deno run -A bench/decode_profile.ts [--sparse 0.5] [--steps 40] [--kernels 0|1]
 *
 * @module
 */
import { Engine, type EngineOptions, GREEDY } from "../engine/mod.ts";
import { resolveModelConfig } from "../models/config.ts";
import { loadTokenizer } from "../text/tokenizer.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const sparseFrac = Number(flag("--sparse", "0"));
const steps = Number(flag("--steps", "40"));
const kernels = flag("--kernels", "1") === "1";
const config = resolveModelConfig({
  family: "llama",
  vocab_size: 32000,
  n_layer: Number(flag("--layers", "32")),
  d_model: 4096,
  n_head: 32,
  d_ff: 11008,
  max_seq: 4096,
});
const opts: EngineOptions = {
  device: "cuda",
  dtype: "f16",
  sparse: sparseFrac > 0,
  maxBatch: 2,
  maxContext: 16 + steps + 8,
  ...(sparseFrac > 0 ? { ffnKernels: kernels } : {}),
};
const eng = Engine.random(config, opts, {
  seed: 1,
  tokenizer: loadTokenizer({ type: "bytes" }),
  activeFraction: sparseFrac > 0 ? 1 - sparseFrac : 0.5,
});
const slot = eng.allocSlot()!;
await eng.prefill(slot, Array.from({ length: 16 }, (_, j) => (j * 31) % 32000), GREEDY);
for (let i = 0; i < 4; i++) await eng.step([slot], [GREEDY]);
const t0 = performance.now();
for (let i = 0; i < steps - 4; i++) await eng.step([slot], [GREEDY]);
const ms = (performance.now() - t0) / (steps - 4);
console.log(
  `decode_profile sparse=${sparseFrac} kernels=${kernels} layers=${config.n_layer}: ${ms.toFixed(3)} ms/token ` +
    `(${(1000 / ms).toFixed(1)} tok/s)`,
);
const slot2 = eng.allocSlot() ?? slot;
if (slot2 !== slot) await eng.prefill(slot2, Array.from({ length: 16 }, (_, j) => (j * 7) % 32000), GREEDY);
else eng.freeSlot(slot);
const dev = slot2 === slot ? null : await eng.timeSteps([slot2], [GREEDY], steps - 8);
if (dev !== null) console.log(`  device time per step (steps back to back, no host turnaround): ${dev.toFixed(3)} ms`);
eng.dispose();
