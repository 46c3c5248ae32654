/**
 * bench/plot_decode.ts and bench/plot_ffn.ts: the series their plots are drawn from (speed-up, byte
 * bound with the K/V bytes both paths read, positions against step time; FFN block time against
 * sparsity), on small hand-made result files.
 */
import assert from "node:assert/strict";
import { contextSeries, type DecodeResult, kvBytes, speedupSeries, TARGETS } from "../bench/plot_decode.ts";
import { FFN_TARGETS, ffnSeries } from "../bench/plot_ffn.ts";

const config = { n_layer: 2, n_head: 4, n_kv_head: 2, d_model: 64 };
const file = (prompt: number, rows: Record<string, unknown>): DecodeResult => ({
  prompt_tokens: prompt,
  new_tokens: 9,
  config,
  device: { build_id: "0123456789abcdef", name: "GPU" },
  ...rows,
});

Deno.test("plot_decode: K/V bytes from the row, else from the config (f16, average position)", () => {
  const r = file(100, {});
  // 2 layers x (K, V) x 2 kv heads x head size 16 x 2 bytes x (100 + 4) positions
  assert.equal(kvBytes(r, {}), 2 * 2 * 2 * 16 * 2 * 104);
  assert.equal(kvBytes(r, { kv_bytes_per_step: 7 }), 7);
});

Deno.test("plot_decode: speed-up and byte bound per file; files without sparse rows add no curve", () => {
  const r = file(16, {
    dense: { device_ms_per_step: 4, bytes_per_token: 1000, kv_bytes_per_step: 200 },
    sparse50: { device_ms_per_step: 3.2, bytes_per_token: 600, active_fraction: 0.5, kv_bytes_per_step: 200 },
    sparse90: { device_ms_per_step: 2, bytes_per_token: 250, active_fraction: 0.1, kv_bytes_per_step: 200 },
  });
  const denseOnly = file(4000, { dense: { device_ms_per_step: 5, bytes_per_token: 1000 } });
  const s = speedupSeries([r, denseOnly]);
  assert.deepEqual(s.map((x) => x.name), [
    "measured, prompt 16 (01234567)",
    "byte bound, prompt 16 (01234567)",
    "issue 9 targets (16-token prompt)",
  ]);
  assert.deepEqual(s[0]!.points, [[1, 1], [0.5, 1.25], [0.1, 2]]);
  // (1000 + 200) / (600 + 200) and (1000 + 200) / (250 + 200)
  assert.deepEqual(s[1]!.points, [[1, 1], [0.5, 1.5], [0.1, 1200 / 450]]);
  assert.deepEqual(s[2]!.points, TARGETS);
});

Deno.test("plot_decode: step time against the last step's positions, sorted, per row kind", () => {
  const long = file(3960, {
    dense: { device_ms_per_step: 4.1 },
    sparse90: { device_ms_per_step: 2.7 },
    dense_kv_i8: { device_ms_per_step: 3.8 },
  });
  const short = file(16, { dense: { device_ms_per_step: 3.6 }, sparse50: { device_ms_per_step: 2.8 } });
  const s = contextSeries([long, short]);
  assert.deepEqual(s.map((x) => [x.name, x.points]), [
    ["dense", [[25, 3.6], [3969, 4.1]]],
    ["sparse ~50 %", [[25, 2.8]]],
    ["sparse ~90 %", [[3969, 2.7]]],
    ["dense, 8-bit KV cache", [[3969, 3.8]]],
  ]);
});

Deno.test("plot_ffn: ours, the fused op (activity -> sparsity), byte ideal, flat dense lines, PyTorch, targets", () => {
  const rows = [
    { variant: "ours_atomic", batch: 1, sparsity: 0.5, us: 50, ideal_us: 33 },
    { variant: "ours_atomic", batch: 1, sparsity: 0, us: 84, ideal_us: 66 },
    { variant: "ours_atomic", batch: 8, sparsity: 0.5, us: 99, ideal_us: 33 }, // not batch 1: left out
    { variant: "cublas_dense_graph", batch: 1, sparsity: 0, us: 76 },
  ];
  const torch = { rows: [{ variant: "torch_gather_graph", batch: 1, sparsity: 0.5, us: 123 }] };
  const fused = {
    device: { build_id: "2269aa7ee24eab1e" },
    results: [
      { rows: 1, active: 0.1, variant: "fused pdl", us: 17.5 },
      { rows: 1, active: 0.5, variant: "fused pdl", us: 41.4 },
      { rows: 1, active: 0.5, variant: "fused", us: 43.7 },
    ],
  };
  const s = ffnSeries({ date: "2026-12-01T23:35:09Z", rows, torch }, fused);
  const byName = Object.fromEntries(s.map((x) => [x.name, x.points]));
  assert.deepEqual(byName["ours, two kernels (2026-12-01)"], [[0, 84], [0.5, 50]]);
  assert.deepEqual(byName["ours, fused op (2269aa7e)"], [[0.5, 41.4], [0.9, 17.5]]);
  assert.deepEqual(byName["byte ideal"], [[0, 66], [0.5, 33]]);
  assert.deepEqual(byName["cuBLAS dense GEMVs, graph"], [[0, 76], [0.5, 76]]);
  assert.deepEqual(byName["PyTorch gather, graph"], [[0.5, 123]]);
  assert.deepEqual(byName["issue 9 targets"], FFN_TARGETS);
  assert.equal(byName["PyTorch dense, graph"], undefined); // not in this file: no curve
});
