/**
 * bench/plot_decode.ts: the series its plots are drawn from (speed-up, byte bound with the K/V bytes
 * both paths read, positions against step time), on small hand-made result files.
 */
import assert from "node:assert/strict";
import { contextSeries, type DecodeResult, kvBytes, speedupSeries, TARGETS } from "../bench/plot_decode.ts";

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
  const long = file(3960, { dense: { device_ms_per_step: 4.1 }, sparse90: { device_ms_per_step: 2.7 } });
  const short = file(16, { dense: { device_ms_per_step: 3.6 }, sparse50: { device_ms_per_step: 2.8 } });
  const s = contextSeries([long, short]);
  assert.deepEqual(s.map((x) => [x.name, x.points]), [
    ["dense", [[25, 3.6], [3969, 4.1]]],
    ["sparse ~50 %", [[25, 2.8]]],
    ["sparse ~90 %", [[3969, 2.7]]],
  ]);
});
