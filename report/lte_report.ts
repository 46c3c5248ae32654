/**
 * The LTE evaluation report: `report.json`'s types, the markdown table and `report.html`, one
 * self-contained page (inline SVG from report/svg_plot.ts and a small bar chart, inline CSS, no
 * scripts, no network references).
 *
 * Sections: the comparison table (mean ± spread over seeds, Δ vs the matched-training control,
 * the bar checks), quality vs sparsity for LTE and every baseline, per-layer sparsity, the router
 * score histogram, union sparsity vs batch size, η → sparsity calibration and target vs measured
 * sparsity, greedy samples, and the run's config hash, git revision, hardware and stage wall times.
 *
 * @module
 */
import { linePlot, type Series } from "./svg_plot.ts";

/** One evaluated (model, policy) pair. */
export interface ReportEntry {
  /** Unique id, e.g. `adapt@target_sparsity=0.5` or `oracle@target_sparsity=0.5`. */
  id: string;
  /** "lte", "dense", "control" or a baseline name. */
  method: string;
  stage: string;
  /** Sweep values of the LTE model (baselines: of the LTE model they are matched to). */
  variant: Record<string, unknown>;
  seed: number | null;
  target_sparsity: number | null;
  eta: number | null;
  /** For baselines: the LTE entry whose per-layer budget they use. */
  matched_to?: string;
  quality: { val_loss: number; val_ppl: number; tokens: number; accuracy?: number; rouge_l?: number };
  sparsity: {
    per_layer: number[];
    overall: number;
    active_units: number[];
    union: { batch: number; sparsity: number | null }[];
    tokens: number;
  } | null;
  flops: { attention: number; ffn: number; router: number; total: number; dense: number };
  histogram?: { lo: number; hi: number; counts: number[]; mass_near_ends: number };
  /** LTE: what router-train reported (final η, global router-logit offset, landed sparsity after stage 1). */
  stage1?: { eta_final: unknown; logit_offset: unknown; sparsity: unknown } | null;
  samples: { prompt: string; output: string }[];
  wall_s: number;
}

/** report.json. */
export interface LteReport {
  format: "lte-pipeline/eval-report@1";
  title: string;
  created: string;
  pipeline: string;
  stage: string;
  config_hash: string;
  git: unknown;
  hardware: Record<string, unknown>;
  data: { kind: string; seq_len: number; val_tokens: number; batches: number; batch_size: number; examples: number };
  model: Record<string, unknown>;
  entries: ReportEntry[];
  stage_times: { stage: string; type: string; duration_s: number | null; status: string }[];
  eval_wall_s: number;
}

/** One row of the aggregated table: entries of one method at one sweep point, over seeds. */
export interface AggregateRow {
  method: string;
  key: string;
  ids: string[];
  n: number;
  sparsity: { mean: number; std: number } | null;
  target: number | null;
  quality: { mean: number; std: number };
  ppl: { mean: number; std: number };
  loss: { mean: number; std: number };
  gflops: number;
  delta_vs_control: number | null;
}

const METHOD_ORDER = ["lte", "oracle", "predictor", "magnitude", "random", "control", "dense"];
const METHOD_LABEL: Record<string, string> = {
  lte: "LTE",
  oracle: "oracle top-k",
  predictor: "predictor top-k",
  magnitude: "magnitude threshold",
  random: "random routers",
  control: "dense control",
  dense: "dense (fine-tuned)",
};

function meanStd(xs: number[]): { mean: number; std: number } {
  const v = xs.filter(Number.isFinite);
  if (!v.length) return { mean: NaN, std: NaN };
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return { mean: m, std: Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length) };
}

/**
 * The sweep point of an entry without its seed (entries with the same key are seeds of one point):
 * the target sparsity when known (so a seed sweep at one target, made by another stage, joins the
 * target sweep's point), plus the other swept values.
 */
export function pointKey(e: ReportEntry): string {
  const v = Object.entries(e.variant).filter(([k]) => k !== "seed" && k !== "target_sparsity")
    .sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => `${k}=${x}`);
  if (e.target_sparsity !== null) v.unshift(`target=${e.target_sparsity}`);
  return v.join(",");
}

/** The primary quality metric of the report's data kind and whether higher is better. */
export function primaryMetric(r: LteReport): { name: string; higher: boolean; of: (e: ReportEntry) => number } {
  if (r.data.kind === "label") return { name: "accuracy", higher: true, of: (e) => e.quality.accuracy ?? NaN };
  if (r.data.kind === "prompt_completion") {
    return {
      name: "ROUGE-L",
      higher: true,
      of: (e) => e.quality.rouge_l ?? NaN,
    };
  }
  return { name: "val ppl", higher: false, of: (e) => e.quality.val_ppl };
}

/** Aggregates entries over seeds: one row per (method, sweep point). */
export function aggregate(r: LteReport): AggregateRow[] {
  const pm = primaryMetric(r);
  const control = r.entries.find((e) => e.method === "control");
  const groups = new Map<string, ReportEntry[]>();
  for (const e of r.entries) {
    const k = `${e.method}\u0000${e.sparsity ? pointKey(e) : ""}`;
    groups.set(k, [...(groups.get(k) ?? []), e]);
  }
  const rows: AggregateRow[] = [];
  for (const [k, es] of groups) {
    const method = k.split("\u0000")[0]!;
    const q = meanStd(es.map(pm.of));
    const ppl = meanStd(es.map((e) => e.quality.val_ppl));
    rows.push({
      method,
      key: k.split("\u0000")[1]!,
      ids: es.map((e) => e.id),
      n: es.length,
      sparsity: es[0]!.sparsity ? meanStd(es.map((e) => e.sparsity!.overall)) : null,
      target: es[0]!.target_sparsity,
      quality: q,
      ppl,
      loss: meanStd(es.map((e) => e.quality.val_loss)),
      gflops: meanStd(es.map((e) => e.flops.total)).mean,
      delta_vs_control: control ? ppl.mean / control.quality.val_ppl - 1 : null,
    });
  }
  const rank = (m: string) => (METHOD_ORDER.indexOf(m) + 1 || 99);
  // Dense rows first, then one block per sweep point (by target, else by sparsity), LTE first.
  const order = (x: AggregateRow) => (x.sparsity ? x.target ?? x.sparsity.mean : -1);
  rows.sort((a, b) => order(a) - order(b) || a.key.localeCompare(b.key) || rank(a.method) - rank(b.method));
  return rows;
}

/** Bar checks of issue 8, per LTE sweep point. */
export interface BarCheck {
  point: string;
  sparsity: number;
  target: number | null;
  target_ok: boolean | null;
  delta_vs_control: number | null;
  /** Allowed Δppl vs the control at this sparsity (3% near 50%, 10% near 75%), null elsewhere. */
  allowed_delta: number | null;
  ppl_ok: boolean | null;
  beats: Record<string, boolean>;
}

/** Evaluates the bars for every LTE sweep point (means over seeds). */
export function barChecks(r: LteReport): BarCheck[] {
  const rows = aggregate(r);
  const pm = primaryMetric(r);
  const better = (a: number, b: number) => (pm.higher ? a > b : a < b);
  return rows.filter((x) => x.method === "lte").map((l) => {
    const s = l.sparsity!.mean;
    const allowed = Math.abs(s - 0.5) <= 0.05 + 1e-9 ? 0.03 : Math.abs(s - 0.75) <= 0.05 + 1e-9 ? 0.10 : null;
    const beats: Record<string, boolean> = {};
    for (const b of rows.filter((x) => x.key === l.key && x.method !== "lte" && x.sparsity)) {
      beats[b.method] = better(l.quality.mean, b.quality.mean);
    }
    return {
      point: l.key || "(single)",
      sparsity: s,
      target: l.target,
      target_ok: l.target === null ? null : Math.abs(s - l.target) <= 0.02,
      delta_vs_control: l.delta_vs_control,
      allowed_delta: allowed,
      ppl_ok: allowed === null || l.delta_vs_control === null ? null : l.delta_vs_control <= allowed,
      beats,
    };
  });
}

function f(x: number | null | undefined, d = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d);
}

/** 4 significant digits (GFLOPs of tiny models are small). */
function g(x: number): string {
  return Number.isFinite(x) ? (x >= 1 ? x.toFixed(3) : x.toPrecision(4)) : "–";
}

function pm(m: { mean: number; std: number }, n: number, d = 3): string {
  return n > 1 ? `${f(m.mean, d)} ± ${f(m.std, d)}` : f(m.mean, d);
}

// The table's first quality column: the primary metric, or the validation loss when that is perplexity
// (perplexity has its own column).
function firstCol(p: { name: string }): string {
  return p.name === "val ppl" ? "val loss" : p.name;
}
function firstVal(p: { name: string }, x: AggregateRow): { mean: number; std: number } {
  return p.name === "val ppl" ? x.loss : x.quality;
}

function okText(c: BarCheck, no: string): string {
  if (c.allowed_delta === null) return "";
  const verdict = c.ppl_ok === null ? "no control run" : c.ppl_ok ? "yes" : no;
  return ` (bar ≤ ${100 * c.allowed_delta}%: ${verdict})`;
}

/** The comparison table in markdown. */
export function renderMarkdownTable(r: LteReport): string {
  const p = primaryMetric(r);
  const lines = [
    `| method | sweep point | n | FFN sparsity | target | ${firstCol(p)} | val ppl | Δppl vs control | GFLOPs/token |`,
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const x of aggregate(r)) {
    lines.push(
      `| ${METHOD_LABEL[x.method] ?? x.method} | ${x.key || "–"} | ${x.n} | ${
        x.sparsity ? pm(x.sparsity, x.n) : "0 (dense)"
      } | ${f(x.target, 2)} | ${pm(firstVal(p, x), x.n)} | ${pm(x.ppl, x.n, 2)} | ${
        x.delta_vs_control === null ? "–" : `${(100 * x.delta_vs_control).toFixed(1)}%`
      } | ${g(x.gflops)} |`,
    );
  }
  const checks = barChecks(r);
  if (checks.length) {
    lines.push("", "| LTE point | sparsity | target ±2 pts | Δppl vs control (bar) | beats |", "|---|---|---|---|---|");
    for (const c of checks) {
      lines.push(
        `| ${c.point} | ${f(c.sparsity)} | ${c.target_ok === null ? "–" : c.target_ok ? "yes" : "NO"} | ${
          c.delta_vs_control === null ? "–" : `${(100 * c.delta_vs_control).toFixed(1)}%`
        }${okText(c, "NO")} | ${
          Object.entries(c.beats).map(([k, v]) => `${k} ${v ? "yes" : "NO"}`).join(", ") || "–"
        } |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** A small bar chart (histogram) as inline SVG. */
export function barChart(o: { title: string; xLabel: string; counts: number[]; lo: number; hi: number }): string {
  const W = 720, H = 300, m = { l: 60, r: 20, t: 36, b: 48 };
  const total = o.counts.reduce((a, b) => a + b, 0) || 1;
  const frac = o.counts.map((c) => c / total);
  const max = Math.max(...frac, 1e-9);
  const bw = (W - m.l - m.r) / o.counts.length;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`,
  ];
  frac.forEach((v, i) => {
    const h = (v / max) * (H - m.t - m.b);
    parts.push(
      `<rect x="${(m.l + i * bw + 1).toFixed(1)}" y="${(H - m.b - h).toFixed(1)}" width="${
        Math.max(1, bw - 2).toFixed(1)
      }" height="${h.toFixed(1)}" fill="#1f77b4"/>`,
    );
  });
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#333"/>`,
  );
  for (let k = 0; k <= 4; k++) {
    const x = m.l + (k / 4) * (W - m.l - m.r);
    parts.push(
      `<text x="${x}" y="${H - m.b + 16}" text-anchor="middle">${(o.lo + (k / 4) * (o.hi - o.lo)).toFixed(2)}</text>`,
    );
  }
  parts.push(`<text x="${m.l - 6}" y="${m.t + 4}" text-anchor="end">${(100 * max).toFixed(1)}%</text>`);
  parts.push(`<text x="${m.l - 6}" y="${H - m.b}" text-anchor="end">0</text>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push("</svg>");
  return parts.join("\n");
}

/** Strips the XML prolog-free SVG of the `xmlns` URL so the page holds no http(s) reference. */
function inline(svg: string): string {
  return svg.replace(/ xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, "");
}

function hardware(h: Record<string, unknown>): string {
  const info = (h.device_info ?? {}) as Record<string, unknown>;
  const parts = [
    `${h.device}`,
    info.name ? String(info.name) : "",
    info.memory_total ? `${(Number(info.memory_total) / 2 ** 30).toFixed(0)} GiB device memory` : "",
    h.cpu_model ? String(h.cpu_model) : "",
    h.cpus ? `${h.cpus} CPUs` : "",
    typeof h.mem_gb === "number" ? `${h.mem_gb.toFixed(0)} GiB RAM` : "",
  ];
  return parts.filter(Boolean).join(" · ");
}

/** The self-contained HTML page. */
export function renderLteReport(r: LteReport): string {
  const p = primaryMetric(r);
  const rows = aggregate(r);
  const figs: string[] = [];
  // Quality vs sparsity, one series per method (means over seeds; spread in the table).
  const series: Series[] = [];
  for (const method of METHOD_ORDER) {
    const pts = rows.filter((x) => x.method === method && x.sparsity).map((x) =>
      [x.sparsity!.mean, x.quality.mean] as [number, number]
    ).sort((a, b) => a[0] - b[0]);
    if (pts.length) series.push({ name: method, points: pts, markers: "with-line" });
  }
  const xs = series.flatMap((s) => s.points.map((q) => q[0]));
  // One horizontal line: the matched-training control, else the dense model (the plot has 6 colours).
  const flat = rows.find((x) => x.method === "control") ?? rows.find((x) => x.method === "dense");
  if (flat && xs.length) {
    series.push({ name: `${flat.method} (dense)`, points: [[0, flat.quality.mean], [1, flat.quality.mean]] });
  }
  if (series.length) {
    figs.push(
      `<h2>Quality vs FFN sparsity</h2><p>Baselines use each LTE model's own per-layer expert budget (matched sparsity); dense models are horizontal lines.</p>` +
        inline(linePlot({
          title: `${p.name} vs FFN sparsity`,
          xLabel: "FFN neuron sparsity",
          yLabel: p.name,
          series,
          logY: !p.higher,
        })),
    );
  }
  const ltes = r.entries.filter((e) => e.method === "lte");
  if (ltes.length) {
    figs.push(
      `<h2>Per-layer sparsity (LTE)</h2>` +
        inline(linePlot({
          title: "FFN sparsity by layer",
          xLabel: "layer",
          yLabel: "sparsity",
          series: ltes.slice(0, 6).map((e) => ({
            name: e.id,
            points: e.sparsity!.per_layer.map((s, i) => [i, s] as [number, number]),
            markers: "with-line",
          })),
        })),
    );
    const h = ltes.find((e) => e.histogram)?.histogram;
    if (h) {
      figs.push(
        `<h2>Router score histogram</h2><p>${esc(ltes[0]!.id)}: all layers, validation tokens. ${
          (100 * h.mass_near_ends).toFixed(1)
        }% of scores lie within 0.1 of 0 or 1 (${h.mass_near_ends > 0.8 ? "bimodal" : "not clearly bimodal"}).</p>` +
          inline(barChart({ title: "sigmoid router scores", xLabel: "score", counts: h.counts, lo: h.lo, hi: h.hi })),
      );
    }
  }
  const unionSeries: Series[] = [];
  for (const e of r.entries.filter((x) => x.sparsity && (x.method === "lte" || x.matched_to === ltes[0]?.id))) {
    const pts = e.sparsity!.union.filter((u) => u.sparsity !== null).map((u) =>
      [u.batch, u.sparsity!] as [number, number]
    );
    if (pts.length) unionSeries.push({ name: e.method === "lte" ? e.id : e.method, points: pts, markers: "with-line" });
  }
  if (unionSeries.length) {
    figs.push(
      `<h2>Union sparsity vs batch size</h2><p>1 − |∪ active units| / units over decode-like batches (B sequences at one position).</p>` +
        inline(linePlot({
          title: "union sparsity",
          xLabel: "batch size",
          yLabel: "union sparsity",
          series: unionSeries.slice(0, 6),
        })),
    );
  }
  const etaPts = ltes.filter((e) => e.eta !== null).map((e) => [e.eta!, e.sparsity!.overall] as [number, number]);
  const tgtPts = ltes.filter((e) => e.target_sparsity !== null).map((e) =>
    [e.target_sparsity!, e.sparsity!.overall] as [number, number]
  );
  if (etaPts.length || tgtPts.length) {
    let html = `<h2>η → sparsity calibration</h2><p>What stage 1 ended with (η, the controller's global ` +
      `router-logit offset, the sparsity it landed on) and the sparsity measured here after stage 2.</p>` +
      `<table><tr><th>LTE model</th><th>target</th><th>final η</th><th>logit offset</th>` +
      `<th>sparsity after stage 1</th><th>sparsity (eval)</th><th>|eval − target|</th></tr>` +
      ltes.map((e) => {
        const n = (v: unknown, d = 3) => (typeof v === "number" ? f(v, d) : "–");
        const miss = e.target_sparsity === null ? null : Math.abs(e.sparsity!.overall - e.target_sparsity);
        return `<tr><td>${esc(e.id)}</td><td>${f(e.target_sparsity, 2)}</td><td>${
          n(e.stage1?.eta_final ?? e.eta)
        }</td>` +
          `<td>${n(e.stage1?.logit_offset)}</td><td>${n(e.stage1?.sparsity)}</td><td>${f(e.sparsity!.overall)}</td>` +
          `<td>${miss === null ? "–" : `${(100 * miss).toFixed(1)} pts`}</td></tr>`;
      }).join("\n") + `</table>`;
    if (new Set(etaPts.map((q) => q[0])).size > 1) {
      html += inline(linePlot({
        title: "final η vs measured sparsity",
        xLabel: "η (efficiency-loss weight)",
        yLabel: "FFN sparsity",
        series: [{ name: "LTE models", points: etaPts.sort((a, b) => a[0] - b[0]), markers: true }],
      }));
    }
    if (tgtPts.length) {
      html += inline(linePlot({
        title: "target vs measured sparsity",
        xLabel: "target sparsity",
        yLabel: "measured FFN sparsity",
        series: [
          { name: "LTE models", points: tgtPts.sort((a, b) => a[0] - b[0]), markers: true },
          { name: "measured = target", points: [[0, 0], [1, 1]] },
        ],
      }));
    }
    figs.push(html);
  }
  // Samples.
  const sampleRows = r.entries.filter((e) => e.samples.length && (!e.matched_to || e.matched_to === ltes[0]?.id));
  const prompts = sampleRows[0]?.samples.map((s) => s.prompt) ?? [];
  let samples = "";
  prompts.forEach((prompt, i) => {
    samples += `<h3>Prompt: <code>${esc(prompt)}</code></h3><table><tr><th>model</th><th>greedy continuation</th></tr>`;
    for (const e of sampleRows) {
      samples += `<tr><td>${esc(e.id)}</td><td class="sample">${
        esc(JSON.stringify(e.samples[i]?.output ?? ""))
      }</td></tr>`;
    }
    samples += "</table>";
  });
  const checks = barChecks(r);
  const tableRows = rows.map((x) =>
    `<tr${x.method === "lte" ? ' class="lte"' : ""}><td>${esc(METHOD_LABEL[x.method] ?? x.method)}</td><td>${
      esc(x.key || "–")
    }</td><td>${x.n}</td><td>${x.sparsity ? pm(x.sparsity, x.n) : "0 (dense)"}</td><td>${f(x.target, 2)}</td><td>${
      pm(firstVal(p, x), x.n)
    }</td><td>${pm(x.ppl, x.n, 2)}</td><td>${
      x.delta_vs_control === null ? "–" : (100 * x.delta_vs_control).toFixed(1) + "%"
    }</td><td>${g(x.gflops)}</td></tr>`
  ).join("\n");
  const checkRows = checks.map((c) =>
    `<tr><td>${esc(c.point)}</td><td>${f(c.sparsity)}</td><td>${
      c.target === null ? "–" : `${f(c.target, 2)}: ${c.target_ok ? "yes" : "<b>no</b>"}`
    }</td><td>${c.delta_vs_control === null ? "–" : (100 * c.delta_vs_control).toFixed(1) + "%"}${
      okText(c, "<b>no</b>")
    }</td><td>${
      Object.entries(c.beats).map(([k, v]) => `${esc(k)}: ${v ? "yes" : "<b>no</b>"}`).join(", ") || "–"
    }</td></tr>`
  ).join("\n");
  const times = r.stage_times.map((t) =>
    `<tr><td>${esc(t.stage)}</td><td>${esc(t.type)}</td><td>${f(t.duration_s, 1)}</td><td>${esc(t.status)}</td></tr>`
  ).join("\n");
  const git = gitLine(r.git);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>
body{font-family:sans-serif;max-width:1100px;margin:24px auto;padding:0 12px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top;white-space:nowrap}
tr.lte td{font-weight:bold;background:#eef5ff}
th{background:#f3f3f3} code{background:#f6f6f6;padding:0 3px} td.sample{font-family:monospace;white-space:pre-wrap}
td.wrap{white-space:normal}
svg{max-width:100%;height:auto;display:block;margin:6px 0 14px}
.meta td:first-child{font-weight:bold}
</style></head><body>
<h1>${esc(r.title)}</h1>
<table class="meta">
<tr><td>pipeline / stage</td><td>${esc(r.pipeline)} / ${esc(r.stage)}</td></tr>
<tr><td>created</td><td>${esc(r.created)}</td></tr>
<tr><td>config hash</td><td><code>${esc(r.config_hash)}</code></td></tr>
<tr><td>git revision</td><td><code>${esc(git)}</code></td></tr>
<tr><td>hardware</td><td>${esc(hardware(r.hardware))}</td></tr>
<tr><td>model</td><td>${esc(keyValues(r.model))}</td></tr>
<tr><td>data</td><td>${esc(keyValues(r.data))}</td></tr>
<tr><td>eval wall time</td><td>${f(r.eval_wall_s, 1)} s</td></tr>
</table>
<h2>Comparison at matched sparsity</h2>
<p>Primary metric: <b>${esc(p.name)}</b> (${
    p.higher ? "higher" : "lower"
  } is better). Mean ± spread (population std) over seeds where several ran. GFLOPs per token in 2^30 units, router included (lte-spec §6).
Baselines run on the grouped dense model at each LTE model's own per-layer expert budget: oracle top-k = MoEfication's
ground-truth selection (true expert activation norms); predictor top-k = a Deja Vu-style linear predictor fit on the
model's activations; magnitude threshold = CATS/TEAL-style per-neuron threshold calibrated per layer; random routers +
top-k. The dense control was fine-tuned as many steps as LTE's two stages, on the same data.</p>
<table><tr><th>method</th><th>sweep point</th><th>n</th><th>FFN sparsity</th><th>target</th><th>${
    esc(firstCol(p))
  }</th><th>val ppl</th><th>Δppl vs control</th><th>GFLOPs/token</th></tr>
${tableRows}</table>
${
    checks.length
      ? `<h2>Bar checks</h2><table><tr><th>LTE point</th><th>sparsity</th><th>target ±2 pts</th><th>Δppl vs control</th><th>beats baseline</th></tr>\n${checkRows}</table>`
      : ""
  }
${figs.join("\n")}
<h2>Greedy samples</h2>
${samples || "<p>none</p>"}
<h2>Stage wall times</h2>
<table><tr><th>stage</th><th>type</th><th>seconds</th><th>status</th></tr>
${times}</table>
</body></html>
`;
}

/** `revision` (plus "+ uncommitted changes" when dirty) from the run's env.json git record. */
function gitLine(g: unknown): string {
  if (g && typeof g === "object") {
    const { revision, dirty } = g as { revision?: unknown; dirty?: unknown };
    if (typeof revision === "string") return revision + (dirty ? " + uncommitted changes" : "");
    return JSON.stringify(g);
  }
  return String(g ?? "unknown");
}

/** A flat record as "key value · key value" for the header table (nested values as JSON). */
function keyValues(o: unknown): string {
  if (!o || typeof o !== "object") return String(o ?? "–");
  return Object.entries(o as Record<string, unknown>)
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join(" · ");
}
