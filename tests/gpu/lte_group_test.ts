/**
 * Grouping on CUDA (GEMMs through cuBLAS) against the CPU backend: planted balanced clusters are
 * recovered on both; on unstructured data both labellings are exactly balanced and their
 * inertias agree closely (the GEMM rounding differs, so labels may differ by near-ties).
 *
 * Runs only where the CUDA library and a GPU are available; LTE_REQUIRE_CUDA=1 makes a missing GPU
 * a failure.
 */
import assert from "node:assert/strict";
import { backendAvailable, getBackend } from "../../ffi/backend.ts";
import { balancedKmeans, groupLayer, normalizeRows } from "../../lte/grouping.ts";
import { Rng } from "../../tensor/mod.ts";

const required = Deno.env.get("LTE_REQUIRE_CUDA") === "1";
const haveCuda = backendAvailable("cuda");
if (required && !haveCuda) {
  Deno.test("CUDA backend is available", () => {
    getBackend("cuda");
  });
}

function balanced(labels: Int32Array, K: number, size: number): boolean {
  const c = new Int32Array(K);
  for (const l of labels) c[l]!++;
  return c.every((v) => v === size);
}

Deno.test({
  name: "grouping on CUDA: planted clusters recovered, balanced, inertia matches the CPU backend",
  ignore: !haveCuda,
  fn: async () => {
    const rng = new Rng(2);
    const K = 24, size = 32, d = 256, n = K * size;
    const centres = rng.normals(K * d);
    const x = new Float32Array(n * d);
    const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
    const truth = new Int32Array(n);
    for (let p = 0; p < n; p++) {
      const i = order[p]!, c = Math.floor(p / size);
      truth[i] = c;
      for (let k = 0; k < d; k++) x[i * d + k] = centres[c * d + k]! + 0.1 * rng.normal();
    }
    const g = await groupLayer(0, Float32Array.from(x), n, d, {
      method: "kmeans",
      expertSize: size,
      seed: 0,
      iterations: 20,
      device: "cuda",
    });
    // Same partition as planted: each expert holds members of one planted cluster.
    for (let e = 0; e < K; e++) {
      const members = new Set<number>();
      for (let i = 0; i < n; i++) if (g.labels[i] === e) members.add(truth[i]!);
      assert.equal(members.size, 1, `expert ${e} mixes planted clusters ${[...members]}`);
    }
    assert.ok(g.intraCosine > 0.9 && g.randomIntraCosine < 0.1, `${g.intraCosine} vs ${g.randomIntraCosine}`);

    const y = normalizeRows(new Rng(9).normals(4096 * 128), 4096, 128);
    const opts = { size: 32, seed: 1, iterations: 10 };
    const onCuda = await balancedKmeans(y, 4096, 128, { ...opts, device: "cuda" });
    const onCpu = await balancedKmeans(y, 4096, 128, { ...opts, device: "cpu" });
    assert.ok(balanced(onCuda.labels, 128, 32) && balanced(onCpu.labels, 128, 32));
    assert.ok(
      Math.abs(onCuda.inertia - onCpu.inertia) < 1e-3 * onCpu.inertia,
      `inertia cuda ${onCuda.inertia} vs cpu ${onCpu.inertia}`,
    );
  },
});
