/**
 * Each op's share of a batch-1 decode step (issue 9), from `decode_bench.ts` result files with the
 * diagnostic "skip" rows (LTE_DEC_DIAG_SKIP_LINEAR / _ATTN / _SFFN leave one op out of the captured
 * step; its share = the step minus the step without it, per layer, boundaries included), beside the
 * FFN's byte time (the weight bytes it must read at the H200's copy bandwidth, anchors §5).
 *
 *   deno run -A bench/plot_step_shares.ts --out docs/results/step_shares_h200.svg FILE.json [FILE.json ...]
 *
 * Both rows of a difference come from the same file (one device call); a later file fills only what
 * the earlier ones lack. Prints the table it draws.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { barPlot } from "../report/svg_plot.ts";
import { plotArgs, readResult } from "./_plot_cli.ts";
import type { DecodeResult, DecodeRow } from "./plot_decode.ts";

/** anchors §5: the H200's device-to-device copy rate, TB/s. */
export const COPY_TB_S = 4.27;

/** The step configurations (result-file keys) and their labels. */
export const BASES: [string, string][] = [
  ["dense", "dense"],
  ["sparse50", "sparse ~50 %"],
  ["sparse90", "sparse ~90 %"],
  ["sparse1e", "~1 expert of 344"],
];
/** The ops (skip-row suffixes) whose shares are drawn. */
const OPS = ["ffn", "qkv", "o", "attn"] as const;
type Op = typeof OPS[number];

/** us per layer of each op (NaN: not measured) and of the FFN's weight bytes, per base. */
export interface Shares {
  base: string;
  label: string;
  us: Record<Op, number>;
  ffn_bytes_us: number;
}

/** The shares of every base that some file has, from the files in order. */
export function stepShares(files: DecodeResult[]): Shares[] {
  const out: Shares[] = [];
  for (const [base, label] of BASES) {
    const us: Record<Op, number> = { ffn: NaN, qkv: NaN, o: NaN, attn: NaN };
    let ffnBytes = NaN;
    for (const f of files) {
      const rows = f as unknown as Record<string, DecodeRow | undefined>;
      const b = rows[base]?.device_ms_per_step;
      if (b === undefined) continue;
      const c = f.config as unknown as { n_layer: number; d_model: number; d_ff: number };
      const share = (...skips: string[]) => {
        let sum = 0;
        for (const k of skips) {
          const s = rows[`${base}_skip_${k}`]?.device_ms_per_step;
          if (s === undefined) return NaN;
          sum += b - s;
        }
        return (sum * 1000) / c.n_layer;
      };
      const take = (op: Op, v: number) => {
        if (Number.isNaN(us[op]) && Number.isFinite(v)) us[op] = v;
      };
      take("ffn", base === "dense" ? share("gateup", "down") : share("sffn"));
      take("qkv", share("qkv"));
      take("o", share("o"));
      take("attn", share("attn"));
      if (Number.isNaN(ffnBytes)) {
        // f16 weights, experts of 32 (the bench's); the sparse block reads the f32 router and the
        // active experts' 3 rows
        const dense = 3 * c.d_model * c.d_ff * 2;
        const af = rows[base]?.active_fraction;
        const S = 32, E = c.d_ff / S;
        ffnBytes = base === "dense" || af == null ? dense : E * c.d_model * 4 + af * dense;
        ffnBytes = ffnBytes / (COPY_TB_S * 1e6);
      }
    }
    if (OPS.some((op) => Number.isFinite(us[op]))) out.push({ base, label, us, ffn_bytes_us: ffnBytes });
  }
  return out;
}

if (import.meta.main) {
  const { out: outFile, files } = plotArgs("plot_step_shares", Deno.args, "FILE.svg");
  if (files.length < 1) throw new Error("plot_step_shares: give decode_bench.ts result files with skip rows");
  const results = files.map((f) => readResult("plot_step_shares", f) as unknown as DecodeResult);
  const shares = stepShares(results);
  if (!shares.length) throw new Error("plot_step_shares: no file has a base row with skip rows");
  const names: [Op | "bytes", string][] = [
    ["ffn", "FFN (gate/up + down, or the sparse block) in the step"],
    ["bytes", `FFN weight bytes at ${COPY_TB_S} TB/s`],
    ["qkv", "QKV in the step"],
    ["o", "O projection in the step"],
    ["attn", "attention in the step"],
  ];
  const build = results[0]!.device?.build_id?.slice(0, 8) ?? "?";
  writeFileSync(
    outFile,
    barPlot({
      title: `Each op's share of a 7B-shape decode step, fp16, batch 1, H200 (build ${build})`,
      yLabel: "us per layer (step minus the step without the op)",
      categories: shares.map((s) => s.label),
      series: names.map(([k, name]) => ({
        name,
        values: shares.map((s) => k === "bytes" ? s.ffn_bytes_us : s.us[k]),
      })),
      width: 900,
      height: 480,
    }),
  );
  console.log(["config", ...names.map(([k]) => k)].join(" | "));
  for (const s of shares) {
    console.log(
      [s.label, ...names.map(([k]) => (k === "bytes" ? s.ffn_bytes_us : s.us[k]).toFixed(1))].join(" | "),
    );
  }
  console.log(`plot_step_shares: wrote ${outFile}`);
}
