/**
 * Grouping benchmark at LLaMA-2-7B FFN shape: random gate weights of `layers` x d_ff 11008 x
 * d_model 4096, balanced k-means into 344 experts of 32 per layer, timed per layer and in total.
 *
 *   deno run -A bench/group_bench.ts [--device cpu|cuda] [--layers 32] [--d-ff 11008] [--d-model 4096]
 *       [--expert-size 32] [--iterations 25] [--threads N] [--method kmeans|random] [--json out.json]
 *
 * The weights are made on the device: two N(0, 1) base matrices are drawn once on the host, and
 * layer l is `a_l·A[p_l] + b_l·B[q_l]` (random row gathers, a² + b² = 1), so every layer is a
 * different Gaussian matrix without drawing 45M normals per layer on the host. Unstructured
 * Gaussian rows are a fixed point of k-means after one or two rounds; `--latent s` adds to each
 * row one of d_ff/expert_size latent N(0, s²) vectors (chosen unevenly), so rows share directions
 * as trained gate weights do and k-means runs more rounds (s = 0.5: cosine 0.2 within a latent). The grouping is the
 * group stage's code path (lte/grouping.ts groupLayers with the worker-thread assigner).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import { getBackend, resolveDevice } from "../ffi/backend.ts";
import { groupLayers, inlineAssigner, type LayerGrouping, WorkerAssigner } from "../lte/grouping.ts";
import { add, embedding, noGrad, Rng, scale, scope, Tensor } from "../tensor/mod.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    device: { type: "string", default: "auto" },
    layers: { type: "string" },
    "d-ff": { type: "string", default: "11008" },
    "d-model": { type: "string", default: "4096" },
    "expert-size": { type: "string", default: "32" },
    iterations: { type: "string", default: "25" },
    threads: { type: "string" },
    method: { type: "string", default: "kmeans" },
    seed: { type: "string", default: "0" },
    latent: { type: "string", default: "0" },
    json: { type: "string" },
  },
});
const device = resolveDevice(a.device as "cpu" | "cuda" | "auto");
const L = Number(a.layers ?? (device === "cuda" ? 32 : 2));
const F = Number(a["d-ff"]), D = Number(a["d-model"]), size = Number(a["expert-size"]);
const iterations = Number(a.iterations), seed = Number(a.seed);
const method = a.method as "kmeans" | "random";
const latent = Number(a.latent);
const cores = navigator.hardwareConcurrency ?? 2;
const threads = Number(a.threads ?? Math.max(1, Math.min(L, cores - 1)));
const be = getBackend(device);
if (device === "cuda") be.setAllowTf32(false);

const t0 = performance.now();
const rng = new Rng(seed);
const bases = [rng.normals(F * D), rng.normals(F * D)].map((h) => Tensor.fromArray(h, [F, D], { device }).keep());
const latents = Tensor.fromArray(rng.normals((F / size) * D, latent), [F / size, D], { device }).keep();
const genMs0 = performance.now() - t0;
let genMs = genMs0;

/** Layer l's random gate weights (F x D) on the host, mixed on the device. */
function layerWeights(l: number): { data: Float32Array; n: number; d: number } {
  const t = performance.now();
  const r = new Rng(seed * 1000 + l + 1);
  const perm = (): Int32Array => Int32Array.from(r.shuffle(Array.from({ length: F }, (_, i) => i)));
  const th = r.uniform() * Math.PI / 2;
  const data = scope(() =>
    noGrad(() => {
      const x = embedding(Tensor.fromArray(perm(), [F], { device }), bases[0]!);
      const y = embedding(Tensor.fromArray(perm(), [F], { device }), bases[1]!);
      const w = add(scale(x, Math.cos(th)), scale(y, Math.sin(th)));
      if (latent === 0) return w.toArray() as Float32Array;
      // Uneven cluster sizes: latent index = floor(K·u²).
      const z = Int32Array.from({ length: F }, () => Math.floor((F / size) * r.uniform() ** 2));
      return add(w, embedding(Tensor.fromArray(z, [F], { device }), latents)).toArray() as Float32Array;
    })
  );
  genMs += performance.now() - t;
  return { data, n: F, d: D };
}

const assigner = threads > 1 ? new WorkerAssigner(threads) : inlineAssigner();
console.log(
  `group bench: ${L} layers x ${F} neurons x ${D} dims -> ${F / size} experts of ${size}, ${method}, ` +
    `${device} (${JSON.stringify(be.deviceInfo())}), ${assigner.threads} assignment threads, ${cores} cores`,
);
const tg = performance.now();
let layers: LayerGrouping[];
try {
  layers = await groupLayers(L, layerWeights, {
    method,
    expertSize: size,
    seed,
    iterations,
    device,
    assigner,
    concurrency: assigner.threads,
    onLayer: (r) =>
      console.log(
        `layer ${r.layer}: ${(r.ms / 1000).toFixed(2)} s (assign ${(r.assignMs / 1000).toFixed(2)} s), ` +
          `${r.iterations} it, ${r.bids} bids, cosine ${r.intraCosine.toFixed(4)} vs random ${
            r.randomIntraCosine.toFixed(4)
          }`,
      ),
  });
} finally {
  assigner.close();
}
const groupS = (performance.now() - tg) / 1000;
const totalS = (performance.now() - t0) / 1000;
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const result = {
  bench: "group",
  device,
  device_info: be.deviceInfo(),
  cores,
  threads: assigner.threads,
  shape: { layers: L, d_ff: F, d_model: D, expert_size: size, experts_per_layer: F / size },
  method,
  latent,
  iterations_max: iterations,
  seed,
  total_s: totalS,
  grouping_s: groupS,
  weight_generation_s: genMs / 1000,
  per_layer_s_mean: mean(layers.map((r) => r.ms / 1000)),
  per_layer_wall_s: groupS / L,
  mean_intra_cosine: mean(layers.map((r) => r.intraCosine)),
  random_intra_cosine: mean(layers.map((r) => r.randomIntraCosine)),
  per_layer: layers.map((r) => ({
    layer: r.layer,
    s: r.ms / 1000,
    assign_s: r.assignMs / 1000,
    iterations: r.iterations,
    bids: r.bids,
    inertia: r.inertia,
    intra_cosine: r.intraCosine,
    random_intra_cosine: r.randomIntraCosine,
  })),
  note: "per-layer s overlap: layers run concurrently (one per assignment thread); grouping_s is the wall time",
};
console.log(
  `total ${totalS.toFixed(1)} s (grouping ${groupS.toFixed(1)} s wall, ${(groupS / L).toFixed(2)} s/layer; ` +
    `weights ${(genMs / 1000).toFixed(1)} s); cosine ${result.mean_intra_cosine.toFixed(4)} vs random ${
      result.random_intra_cosine.toFixed(4)
    }`,
);
if (a.json) writeFileSync(a.json, JSON.stringify(result, null, 2) + "\n");
for (const b of [...bases, latents]) b.dispose();
