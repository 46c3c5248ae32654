/** models/lte_artifacts.ts: lte.json and routers.safetensors round trips and every kind of bad file. */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { resolveModelConfig, toHfConfig } from "../models/config.ts";
import {
  LTE_FORMAT,
  LteArtifactError,
  type LteMeta,
  readLteMeta,
  readRouters,
  routerBiasName,
  routerWeightName,
  writeLteMeta,
  writeRouters,
} from "../models/lte_artifacts.ts";
import { writeSafetensors } from "../models/safetensors.ts";

const cfg = resolveModelConfig({ family: "llama", vocab_size: 50, n_layer: 2, d_model: 16, n_head: 2, d_ff: 64 });

function meta(over: Partial<LteMeta> = {}): LteMeta {
  const perm = (seed: number) => Array.from({ length: 64 }, (_, i) => (i * 5 + seed) % 64); // 5 is coprime to 64
  return {
    format: LTE_FORMAT,
    expert_size: 16,
    n_layer: 2,
    d_ff: 64,
    d_model: 16,
    experts_per_layer: 4,
    tau: 0.5,
    permutation: [perm(1), perm(3)],
    grouping: { method: "kmeans", seed: 0, mean_intra_cosine: 0.4, random_intra_cosine: 0.1 },
    routers: null,
    method: "lte",
    provenance: [{ stage: "group", type: "group", hash: "abc", time: "2026-12-01T00:00:00Z" }],
    ...over,
  };
}

function folder(): string {
  const dir = Deno.makeTempDirSync();
  writeFileSync(join(dir, "config.json"), JSON.stringify(toHfConfig(cfg)));
  return dir;
}

function routerArrays(bias: boolean): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  for (let i = 0; i < 2; i++) {
    m.set(routerWeightName(i), Float32Array.from({ length: 4 * 16 }, (_, j) => i + j / 100));
    if (bias) m.set(routerBiasName(i), Float32Array.from({ length: 4 }, (_, j) => -j));
  }
  return m;
}

Deno.test("readLteMeta() is null for a dense folder; writeLteMeta() + readLteMeta() round-trip, extra keys kept", () => {
  const dir = folder();
  try {
    assert.equal(readLteMeta(dir), null);
    const m = { ...meta(), future_key: { a: 1 } };
    writeLteMeta(dir, m);
    assert.deepEqual(readLteMeta(dir), m);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("writeRouters() + readRouters() round-trip with and without bias", () => {
  for (const bias of [false, true]) {
    const dir = folder();
    try {
      writeLteMeta(dir, meta());
      const file = writeRouters(dir, routerArrays(bias));
      const m = meta({ routers: { file, bias, init: "centroid", trained_by: "router-train" } });
      writeLteMeta(dir, m);
      const back = readRouters(dir, readLteMeta(dir)!);
      assert.deepEqual(back, routerArrays(bias));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
});

function expectError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LteArtifactError, `expected LteArtifactError, got ${e}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message "${e.message}" lacks "${p}"`);
    return true;
  });
}

Deno.test("readLteMeta() names the file and key of every bad field", () => {
  const dir = folder();
  const file = join(dir, "lte.json");
  const write = (obj: unknown) => writeFileSync(file, JSON.stringify(obj));
  try {
    writeFileSync(file, "{not json");
    expectError(() => readLteMeta(dir), "lte.json", "invalid JSON");
    write({ ...meta(), format: "other@2" });
    expectError(() => readLteMeta(dir), "lte.json", `"format"`);
    write({ ...meta(), expert_size: 24 });
    expectError(() => readLteMeta(dir), `"expert_size"`, "does not divide d_ff 64");
    write({ ...meta(), experts_per_layer: 5 });
    expectError(() => readLteMeta(dir), `"experts_per_layer"`);
    write({ ...meta(), tau: 1 });
    expectError(() => readLteMeta(dir), `"tau"`);
    // Disagreement with config.json: layer count, d_ff (expert count), d_model.
    write({ ...meta(), n_layer: 3, permutation: [...meta().permutation, meta().permutation[0]] });
    expectError(() => readLteMeta(dir), `"n_layer"`, "num_hidden_layers = 2");
    write({ ...meta(), d_ff: 128, experts_per_layer: 8 });
    expectError(() => readLteMeta(dir), `"d_ff"`, "intermediate_size = 64");
    write({ ...meta(), d_model: 32 });
    expectError(() => readLteMeta(dir), `"d_model"`, "hidden_size = 16");
    const dup = meta();
    dup.permutation[1]![5] = dup.permutation[1]![6]!;
    write(dup);
    expectError(() => readLteMeta(dir), `"permutation[1]"`, "not a permutation");
    write({ ...meta(), permutation: [meta().permutation[0]] });
    expectError(() => readLteMeta(dir), `"permutation"`);
    write({ ...meta(), grouping: { ...meta().grouping, method: "metis" } });
    expectError(() => readLteMeta(dir), `"grouping.method"`);
    write({ ...meta(), routers: { file: "../x.safetensors", bias: false, init: "x", trained_by: "y" } });
    expectError(() => readLteMeta(dir), `"routers.file"`);
    write({ ...meta(), provenance: [{ stage: "g" }] });
    expectError(() => readLteMeta(dir), `"provenance[0].type"`);
    // writeLteMeta refuses the same things before writing.
    writeLteMeta(dir, meta());
    expectError(() => writeLteMeta(dir, meta({ d_model: 8 })), `"d_model"`);
    assert.deepEqual(readLteMeta(dir), meta());
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("readRouters() refuses missing files, missing or extra tensors and wrong shapes, naming the file", () => {
  const dir = folder();
  const rfile = join(dir, "routers.safetensors");
  try {
    expectError(() => readRouters(dir, meta()), "lte.json", `"routers"`, "router-train");
    const m = meta({ routers: { file: "routers.safetensors", bias: false, init: "x", trained_by: "router-train" } });
    writeLteMeta(dir, m);
    expectError(() => readRouters(dir, m), "routers.safetensors", "not found");
    const t = (shape: number[]) => ({
      dtype: "F32" as const,
      shape,
      data: new Float32Array(shape[0]! * (shape[1] ?? 1)),
    });
    writeSafetensors(rfile, { [routerWeightName(0)]: t([4, 16]) });
    expectError(() => readRouters(dir, m), "routers.safetensors", "missing tensor layers.1.router.weight");
    writeSafetensors(rfile, { [routerWeightName(0)]: t([4, 16]), [routerWeightName(1)]: t([5, 16]) });
    expectError(() => readRouters(dir, m), "layers.1.router.weight has shape [5, 16], expected [4, 16]");
    writeSafetensors(rfile, {
      [routerWeightName(0)]: t([4, 16]),
      [routerWeightName(1)]: t([4, 16]),
      [routerBiasName(1)]: t([4]),
    });
    expectError(() => readRouters(dir, m), "unexpected tensors layers.1.router.bias");
    // bias: true in lte.json but no bias tensors
    const mb = { ...m, routers: { ...m.routers!, bias: true } };
    expectError(() => readRouters(dir, mb), "missing tensor layers.0.router.bias");
    // writeRouters checks lengths and completeness
    const bad = routerArrays(false);
    bad.set(routerWeightName(1), new Float32Array(3));
    expectError(() => writeRouters(dir, bad), "layers.1.router.weight has 3 values");
    const partial = routerArrays(false);
    partial.delete(routerWeightName(1));
    expectError(() => writeRouters(dir, partial), "missing tensor layers.1.router.weight");
    assert.ok(readFileSync(rfile).length > 0);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
