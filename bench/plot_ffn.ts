/**
 * Plot of the sparse FFN block benchmarks (issue 9): time per block against FFN sparsity at batch 1,
 * from the result files only.
 *
 *   deno run -A bench/plot_ffn.ts --out docs/results/ffn_block_h200.svg \
 *     docs/results/sparse_ffn_h200.json [docs/results/fused_ffn_h200.json]
 *
 * The first file is `sparse_ffn_bench.ts --torch`'s (every sparsity: our kernels, cuBLAS dense in a
 * graph, the byte ideal, PyTorch dense / naive gather / a contiguous slice); the optional second is
 * `fused_ffn_bench.ts`'s (the fused op, at the activities it ran), drawn as its own curve. Issue 9's
 * targets are the markers. Each curve's name says which file (date or build) it comes from.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { linePlot, type Series } from "../report/svg_plot.ts";
import { plotArgs, readResult } from "./_plot_cli.ts";

/** `sparse_ffn_bench.ts` result rows (batch, sparsity, us; ideal_us on ours). */
interface FfnRow {
  variant: string;
  batch: number;
  sparsity: number;
  us: number;
  ideal_us?: number;
}

/** The parts of `sparse_ffn_bench.ts --torch`'s result file the plot reads. */
export interface SparseFfnResult {
  date?: string;
  rows: FfnRow[];
  torch?: { rows: FfnRow[] };
}

/** The parts of `fused_ffn_bench.ts`'s result file the plot reads. */
export interface FusedFfnResult {
  device?: { build_id?: string };
  results: { rows: number; active: number; variant: string; us: number }[];
}

/** Issue 9's FFN-block targets at batch 1: (sparsity, us). */
export const FFN_TARGETS: [number, number][] = [[0.5, 38], [0.9, 14]];

const curve = (rows: FfnRow[], variant: string): [number, number][] =>
  rows.filter((r) => r.batch === 1 && r.variant === variant)
    .map((r): [number, number] => [r.sparsity, r.us])
    .sort((a, b) => a[0] - b[0]);

/** The curves: ours, cuBLAS dense, byte ideal, PyTorch's, the fused op (when given), the targets. */
export function ffnSeries(sparse: SparseFfnResult, fused?: FusedFfnResult, fusedVariant = "fused pdl"): Series[] {
  const when = sparse.date ? ` (${sparse.date.slice(0, 10)})` : "";
  const out: Series[] = [];
  const ours = curve(sparse.rows, "ours_atomic");
  if (ours.length) out.push({ name: `ours, two kernels${when}`, points: ours, markers: "with-line" });
  if (fused) {
    const pts = fused.results.filter((r) => r.rows === 1 && r.variant === fusedVariant)
      .map((r): [number, number] => [1 - r.active, r.us])
      .sort((a, b) => a[0] - b[0]);
    const build = fused.device?.build_id ? ` (${fused.device.build_id.slice(0, 8)})` : "";
    if (pts.length) out.push({ name: `ours, fused op${build}`, points: pts, markers: "with-line" });
  }
  // the byte ideal of the sparse rows (bytes read / measured copy bandwidth), same at every variant
  const ideal = sparse.rows.filter((r) => r.batch === 1 && r.variant === "ours_atomic" && r.ideal_us !== undefined)
    .map((r): [number, number] => [r.sparsity, r.ideal_us!])
    .sort((a, b) => a[0] - b[0]);
  if (ideal.length) out.push({ name: "byte ideal", points: ideal });
  const flat = (variant: string, name: string, rows: FfnRow[]) => {
    const c = curve(rows, variant);
    if (c.length === 1 && ideal.length) {
      out.push({ name, points: [[ideal[0]![0], c[0]![1]], [ideal[ideal.length - 1]![0], c[0]![1]]] });
    }
  };
  flat("cublas_dense_graph", "cuBLAS dense GEMVs, graph", sparse.rows);
  const torch = sparse.torch?.rows ?? [];
  flat("torch_dense_graph", "PyTorch dense, graph", torch);
  const torchCurves: [string, string][] = [
    ["torch_gather_graph", "PyTorch gather, graph"],
    ["torch_slice_graph", "PyTorch contiguous slice, graph"],
  ];
  for (const [variant, name] of torchCurves) {
    const c = curve(torch, variant);
    if (c.length) out.push({ name, points: c, markers: "with-line" });
  }
  out.push({ name: "issue 9 targets", points: FFN_TARGETS, markers: true });
  return out;
}

if (import.meta.main) {
  const { out: outFile, files } = plotArgs("plot_ffn", Deno.args, "FILE.svg");
  if (files.length < 1 || files.length > 2) {
    throw new Error("plot_ffn: give sparse_ffn_bench.ts's result file, then optionally fused_ffn_bench.ts's");
  }
  const sparse = readResult("plot_ffn", files[0]!) as unknown as SparseFfnResult;
  if (!Array.isArray(sparse.rows)) throw new Error(`plot_ffn: ${files[0]}: no rows (not a sparse_ffn_bench.ts result)`);
  const fused = files[1] ? readResult("plot_ffn", files[1]) as unknown as FusedFfnResult : undefined;
  if (fused && !Array.isArray(fused.results)) {
    throw new Error(`plot_ffn: ${files[1]}: no results (not a fused_ffn_bench.ts result)`);
  }
  writeFileSync(
    outFile,
    linePlot({
      title: "Sparse FFN block, LLaMA-2-7B shape, fp16, batch 1 (H200)",
      xLabel: "FFN sparsity (fraction of experts inactive)",
      yLabel: "us per FFN block",
      series: ffnSeries(sparse, fused),
      width: 820,
      height: 460,
      logY: true, // PyTorch's gather is 10x the targets at low sparsity
    }),
  );
  console.log(`plot_ffn: wrote ${outFile}`);
}
