/**
 * Plots of `decode_bench.ts` results (issue 9): what people compare, as pictures beside the numbers.
 *
 *   deno run -A bench/plot_decode.ts --out docs/results/decode_h200 FILE.json [FILE.json ...]
 *
 * writes two standalone SVGs from the given result files (nothing is typed in by hand):
 * - `<out>_speedup.svg`: batch-1 speed-up over dense (device time per step) against the FFN's active
 *   fraction, one curve per file (its prompt length and build), with the byte bound of the same file
 *   (dense bytes / sparse bytes per token, the bench's own byte counts) and issue 9's targets;
 * - `<out>_context.svg`: batch-1 device ms per step against the cached positions at the last step
 *   (prompt + new tokens), for the dense and sparse rows each file has.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { linePlot, type Series } from "../report/svg_plot.ts";
import { plotArgs, readResult } from "./_plot_cli.ts";

/** One row of a decode_bench.ts result file (the fields the plots use). */
export interface DecodeRow {
  device_ms_per_step?: number;
  bytes_per_token?: number;
  /** K and V bytes per step (files from the sixteenth session on; else computed from the config) */
  kv_bytes_per_step?: number;
  active_fraction?: number | null;
}

/** A decode_bench.ts result file: its header fields and its rows by variant key. */
export interface DecodeResult {
  prompt_tokens: number;
  new_tokens: number;
  config?: { n_layer: number; n_head: number; n_kv_head: number; d_model: number };
  device?: { build_id?: string; name?: string };
  [key: string]: unknown;
}

/** Issue 9's batch-1 targets: speed-up over dense at ~50 % and ~90 % FFN sparsity. */
export const TARGETS: [number, number][] = [[0.5, 1.4], [0.1, 2.1]];

const row = (r: DecodeResult, key: string): DecodeRow | undefined => {
  const v = r[key];
  return v && typeof v === "object" && typeof (v as DecodeRow).device_ms_per_step === "number"
    ? (v as DecodeRow)
    : undefined;
};

const label = (r: DecodeResult) =>
  `prompt ${r.prompt_tokens}${r.device?.build_id ? ` (${r.device.build_id.slice(0, 8)})` : ""}`;

/**
 * K and V bytes a batch-1 step reads on average: the row's own count, else from the config for an
 * f16 cache (the bench's engines are f16), PROMPT + i positions at step i.
 */
export function kvBytes(r: DecodeResult, row: DecodeRow): number {
  if (typeof row.kv_bytes_per_step === "number") return row.kv_bytes_per_step;
  const c = r.config;
  if (!c) return 0;
  return c.n_layer * 2 * c.n_kv_head * (c.d_model / c.n_head) * 2 * (r.prompt_tokens + (r.new_tokens - 1) / 2);
}

/**
 * Speed-up over dense against the active fraction: per file the measured points (1 for dense, then
 * sparse50 / sparse90 at their measured activity) and the byte bound at the same activities:
 * (dense weights + K/V) / (sparse weights + K/V), the K and V being the same for both.
 */
export function speedupSeries(results: DecodeResult[]): Series[] {
  const out: Series[] = [];
  for (const r of results) {
    const dense = row(r, "dense");
    if (!dense?.device_ms_per_step || !dense.bytes_per_token) continue;
    const measured: [number, number][] = [[1, 1]], bound: [number, number][] = [[1, 1]];
    for (const key of ["sparse50", "sparse90"]) {
      const s = row(r, key);
      if (!s?.device_ms_per_step || s.active_fraction == null) continue;
      measured.push([s.active_fraction, dense.device_ms_per_step / s.device_ms_per_step]);
      const kv = kvBytes(r, dense);
      if (s.bytes_per_token) bound.push([s.active_fraction, (dense.bytes_per_token + kv) / (s.bytes_per_token + kv)]);
    }
    if (measured.length < 2) continue;
    out.push({ name: `measured, ${label(r)}`, points: measured, markers: "with-line" });
    if (bound.length === measured.length) out.push({ name: `byte bound, ${label(r)}`, points: bound });
  }
  out.push({ name: "issue 9 targets (16-token prompt)", points: TARGETS, markers: true });
  return out;
}

/** Device ms per step against the positions cached at the last step, per row kind, across files. */
export function contextSeries(results: DecodeResult[]): Series[] {
  const kinds: [string, string][] = [
    ["dense", "dense"],
    ["sparse50", "sparse ~50 %"],
    ["sparse90", "sparse ~90 %"],
    ["dense_kv_i8", "dense, 8-bit KV cache"],
    ["sparse90_kv_i8", "sparse ~90 %, 8-bit KV cache"],
  ];
  const out: Series[] = [];
  for (const [key, name] of kinds) {
    const points = results
      .map((r): [number, number] | null => {
        const s = row(r, key);
        return s?.device_ms_per_step ? [r.prompt_tokens + r.new_tokens, s.device_ms_per_step] : null;
      })
      .filter((p): p is [number, number] => p !== null)
      .sort((a, b) => a[0] - b[0]);
    if (points.length) out.push({ name, points, markers: "with-line" });
  }
  return out;
}

if (import.meta.main) {
  const { out: prefix, files } = plotArgs("plot_decode", Deno.args, "PREFIX (e.g. docs/results/decode_h200)");
  if (!files.length) throw new Error("plot_decode: give one or more decode_bench.ts result files");
  const results = files.map((f) => {
    const r = readResult("plot_decode", f) as unknown as DecodeResult;
    if (typeof r.prompt_tokens !== "number" || typeof r.new_tokens !== "number") {
      throw new Error(`plot_decode: ${f}: no prompt_tokens / new_tokens (not a decode_bench.ts result)`);
    }
    return r;
  });
  const gpu = results[0]?.device?.name ?? "GPU";
  const model = "LLaMA-2-7B shape, random fp16, batch 1";
  writeFileSync(
    `${prefix}_speedup.svg`,
    linePlot({
      title: `Sparse decode speed-up over dense (${gpu}, ${model})`,
      xLabel: "FFN active fraction",
      yLabel: "speed-up (device time per step)",
      series: speedupSeries(results),
    }),
  );
  writeFileSync(
    `${prefix}_context.svg`,
    linePlot({
      title: `Decode step against context length (${gpu}, ${model})`,
      xLabel: "cached positions at the last step",
      yLabel: "device ms per step",
      series: contextSeries(results),
    }),
  );
  console.log(`plot_decode: wrote ${prefix}_speedup.svg and ${prefix}_context.svg from ${results.length} file(s)`);
}
