/**
 * Decode speed of a REAL LTE model (the output folder of the `adapt` stage: an HF folder plus
 * lte.json and routers.safetensors), dense vs sparse (hard routers, only the active experts'
 * weights read), batch 1: a 16-token prompt from the model's own tokenizer, then `--new` greedy
 * steps, median of `--reps` runs. Prints microseconds per token end to end and device time per
 * step (steps launched back to back, Engine.timeSteps), the speedup, the measured FFN sparsity
 * and how many greedy tokens the sparse model shares with the dense one.
 *
 *   deno run -A bench/lte_model_decode.ts <adapt-model-folder> [--device cuda] [--dtype f16]
 *        [--new 128] [--reps 5] [--out file.json]
 *
 * @module
 */
import { Engine, type EngineOptions, GREEDY } from "../engine/mod.ts";
import { backendAvailable, getBackend } from "../ffi/backend.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const dir = args.find((a, i) => !a.startsWith("--") && (i === 0 || !args[i - 1]!.startsWith("--")));
if (!dir) {
  console.error("usage: deno run -A bench/lte_model_decode.ts <adapt-model-folder> [--device cuda] [--dtype f16]");
  Deno.exit(2);
}
const device = flag("--device", "cuda") as "cuda" | "cpu";
const dtype = flag("--dtype", device === "cuda" ? "f16" : "f32") as "f32" | "f16" | "bf16";
const NEW = Number(flag("--new", "128"));
const REPS = Number(flag("--reps", "5"));
if (!backendAvailable(device)) {
  console.log(`lte_model_decode: no ${device} backend here; skipped`);
  Deno.exit(0);
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

interface Run {
  us_per_token: number;
  tok_s: number;
  device_us_per_step: number;
  active_fraction: number | null;
  tokens: number[];
}

async function measure(sparse: boolean, extra: Partial<EngineOptions> = {}): Promise<Run> {
  const probe = await Engine.load(dir!, { device, dtype, sparse, maxBatch: 1, maxContext: 8 });
  const ctx = Math.min(probe.config.max_seq, 16 + NEW + 8);
  probe.dispose();
  const opts: EngineOptions = { device, dtype, sparse, maxBatch: 1, maxContext: ctx, ...extra };
  const eng = await Engine.load(dir!, opts);
  try {
    const prompt = eng.tokenizer.encode("The history of the city begins with a small settlement on the river", {
      addBos: eng.tokenizer.bosId !== undefined,
    }).slice(0, 16);
    const n = Math.min(NEW, ctx - prompt.length - 1);
    const times: number[] = [];
    let tokens: number[] = [];
    let act = 0, actN = 0;
    for (let rep = 0; rep <= REPS; rep++) {
      const slot = eng.allocSlot()!;
      const first = await eng.prefill(slot, prompt, GREEDY);
      const toks = [first.token];
      const t0 = performance.now();
      for (let i = 0; i < n - 1; i++) {
        const r = await eng.step([slot], [GREEDY]);
        toks.push(r.tokens[0]!);
        if (eng.expertsPerLayer) {
          for (const c of r.activeExperts[0]!) act += c / eng.expertsPerLayer, actN++;
        }
      }
      const ms = performance.now() - t0;
      eng.freeSlot(slot);
      if (rep === 0) continue;
      times.push((ms * 1000) / (n - 1));
      tokens = toks;
    }
    const slot = eng.allocSlot()!;
    await eng.prefill(slot, prompt, GREEDY);
    const dev = await eng.timeSteps([slot], [GREEDY], n - 1);
    eng.freeSlot(slot);
    const us = median(times);
    return {
      us_per_token: us,
      tok_s: 1e6 / us,
      device_us_per_step: dev * 1000,
      active_fraction: actN ? act / actN : null,
      tokens,
    };
  } finally {
    eng.dispose();
  }
}

const dense = await measure(false);
const sparse = await measure(true);
// the fused sparse FFN op (lte_dec_sparse_ffn: 2 launches per layer instead of 4)
const fused = await measure(true, { fusedFfn: true });
const same = dense.tokens.findIndex((t, i) => t !== sparse.tokens[i]);
const result = {
  model: dir,
  device: getBackend(device).deviceInfo(),
  dtype,
  new_tokens: NEW,
  reps: REPS,
  dense,
  sparse,
  speedup_end_to_end: dense.us_per_token / sparse.us_per_token,
  speedup_device: dense.device_us_per_step / sparse.device_us_per_step,
  sparse_fused: fused,
  speedup_fused_end_to_end: dense.us_per_token / fused.us_per_token,
  speedup_fused_device: dense.device_us_per_step / fused.device_us_per_step,
  fused_tokens_equal_sparse: fused.tokens.every((t, i) => t === sparse.tokens[i]),
  greedy_tokens_equal_prefix: same < 0 ? dense.tokens.length : same,
};
const f = (r: Run) =>
  `${r.us_per_token.toFixed(1)} us/token (${r.tok_s.toFixed(0)} tok/s), device ${
    r.device_us_per_step.toFixed(1)
  } us/step` +
  (r.active_fraction !== null ? `, FFN active ${(100 * r.active_fraction).toFixed(1)}%` : "");
console.log(`real LTE model ${dir} on ${device} ${dtype}, batch 1, ${NEW} new tokens, median of ${REPS}`);
console.log(`  dense : ${f(dense)}`);
console.log(`  sparse: ${f(sparse)}`);
console.log(
  `  sparse, fused FFN op: ${f(fused)}; ${result.speedup_fused_end_to_end.toFixed(2)}x end to end, ` +
    `${
      result.speedup_fused_device.toFixed(2)
    }x device; tokens equal the sparse run: ${result.fused_tokens_equal_sparse}`,
);
console.log(
  `  speedup ${result.speedup_end_to_end.toFixed(2)}x end to end, ${result.speedup_device.toFixed(2)}x device; ` +
    `greedy tokens equal for the first ${result.greedy_tokens_equal_prefix} of ${dense.tokens.length}`,
);
const out = flag("--out", "");
if (out) Deno.writeTextFileSync(out, JSON.stringify(result, null, 2) + "\n");
