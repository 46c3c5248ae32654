/**
 * bench/plot_decode.ts, bench/plot_ffn.ts and bench/plot_step_shares.ts: the series their plots are
 * drawn from (speed-up, byte bound with the K/V bytes both paths read, positions against step time;
 * FFN block time against sparsity; each op's share of a step), on small hand-made result files.
 */
import assert from "node:assert/strict";
import { contextSeries, type DecodeResult, kvBytes, speedupSeries, TARGETS } from "../bench/plot_decode.ts";
import { FFN_TARGETS, ffnSeries } from "../bench/plot_ffn.ts";
import { COPY_TB_S, stepShares } from "../bench/plot_step_shares.ts";
import { barPlot } from "../report/svg_plot.ts";

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

Deno.test("plot_step_shares: step minus skip row per layer, from one file; a later file fills only gaps", () => {
  const cfg = { n_layer: 2, n_head: 4, n_kv_head: 4, d_model: 64, d_ff: 256 } as unknown as DecodeResult["config"];
  const a = file(16, {
    dense: { device_ms_per_step: 1 },
    dense_skip_gateup: { device_ms_per_step: 0.6 },
    dense_skip_down: { device_ms_per_step: 0.8 },
    dense_skip_qkv: { device_ms_per_step: 0.9 },
    sparse90: { device_ms_per_step: 0.7, active_fraction: 0.1 },
    sparse90_skip_sffn: { device_ms_per_step: 0.5 },
  });
  const b = file(16, {
    dense: { device_ms_per_step: 2 }, // another call: its own base
    dense_skip_qkv: { device_ms_per_step: 1 }, // dense QKV came from the first file: ignored
    dense_skip_o: { device_ms_per_step: 1.9 },
  });
  a.config = b.config = cfg;
  const s = stepShares([a, b]);
  assert.deepEqual(s.map((x) => x.base), ["dense", "sparse90"]);
  const near = (x: number, y: number) => assert.ok(Math.abs(x - y) < 1e-9, `${x} vs ${y}`);
  // (1 - 0.6) + (1 - 0.8) ms over 2 layers = 300 us per layer
  near(s[0]!.us.ffn, 300);
  near(s[0]!.us.qkv, 50);
  near(s[0]!.us.o, 50); // from the second file: (2 - 1.9) / 2
  assert.ok(Number.isNaN(s[0]!.us.attn));
  near(s[1]!.us.ffn, 100);
  // bytes: dense 3 x 64 x 256 x 2; sparse: f32 router (256 / 32 experts) + 10 % of the dense bytes
  near(s[0]!.ffn_bytes_us, (3 * 64 * 256 * 2) / (COPY_TB_S * 1e6));
  near(s[1]!.ffn_bytes_us, (8 * 64 * 4 + 0.1 * 3 * 64 * 256 * 2) / (COPY_TB_S * 1e6));
});

Deno.test("barPlot: one bar per finite value, with its label; NaN draws nothing", () => {
  const svg = barPlot({
    title: "t",
    yLabel: "y",
    categories: ["a", "b"],
    series: [{ name: "s1", values: [1, NaN] }, { name: "s2", values: [2, 3] }],
  });
  // 3 bars + 2 legend swatches (the background and the frame are the other rects)
  const bars = [...svg.matchAll(/<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="[\d.]+" fill="#/g)];
  assert.equal(bars.length, 3 + 2);
  for (const v of [">1<", ">2<", ">3<"]) assert.ok(svg.includes(v), v);
  assert.ok(svg.includes(">s1<") && svg.includes(">s2<"));
});
