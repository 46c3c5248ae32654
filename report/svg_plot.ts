/**
 * Dependency-free SVG line/scatter plots (loss curves, sparsity against quality or latency) and
 * grouped bar plots (a decode step's shares) for run reports and benchmarks. Output is a standalone
 * SVG any browser or image viewer opens.
 *
 * @example
 * ```ts
 * import { linePlot } from "./svg_plot.ts";
 * const svg = linePlot({ title: "loss", xLabel: "step", yLabel: "loss",
 *   series: [{ name: "train", points: [[1, 3.2], [2, 2.9]] }] });
 * ```
 * @module
 */

/** One curve. */
export interface Series {
  name: string;
  points: [number, number][];
  /** Draw markers: only markers (`true`), or markers on the line (`"with-line"`). */
  markers?: boolean | "with-line";
}

/** Plot options. */
export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
  /** Logarithmic y axis (all y must be > 0). */
  logY?: boolean;
}

const COLORS = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#17becf",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Ticks of a log axis given in log10 units: 1, 2 and 5 times the powers of ten inside [lo, hi]. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
    for (const m of [1, 2, 5]) {
      const t = k + Math.log10(m);
      if (t >= lo - 1e-9 && t <= hi + 1e-9) out.push(t);
    }
  }
  return out.length >= 2 ? out : niceTicks(lo, hi);
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

type Margins = { l: number; r: number; t: number; b: number };

/** The SVG opening, its white background and the title. */
function head(W: number, H: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
}

/** The plot area's frame and the rotated y label. */
function frame(W: number, H: number, m: Margins, yLabel: string): string[] {
  return [
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#333"/>`,
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  ];
}

/** The legend's width (its longest name at ~6.6 px per character) and its light box, top right, so
 * curves or bars beneath it do not cross its text. */
function legendBox(names: string[], W: number, m: Margins): { width: number; box: string[] } {
  const width = 30 + 6.6 * Math.max(0, ...names.map((n) => n.length));
  const box = names.length
    ? [
      `<rect x="${W - m.r - width - 6}" y="${m.t + 2}" width="${width + 4}" height="${
        names.length * 16 + 6
      }" fill="white" fill-opacity="0.85"/>`,
    ]
    : [];
  return { width, box };
}

/** Renders the series as an SVG document. */
export function linePlot(o: PlotOptions): string {
  const W = o.width ?? 720, H = o.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 55 };
  const pts = o.series.flatMap((s) => s.points).filter(([x, y]) =>
    Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)
  );
  const ty = (y: number) => (o.logY ? Math.log10(y) : y);
  let [x0, x1] = pts.length ? [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))] : [0, 1];
  let [y0, y1] = pts.length ? [Math.min(...pts.map((p) => ty(p[1]))), Math.max(...pts.map((p) => ty(p[1])))] : [0, 1];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) (y0 -= 0.5), (y1 += 0.5);
  const pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((ty(y) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts = head(W, H, o.title);
  // Axes and grid.
  for (const t of niceTicks(x0, x1)) {
    const x = sx(t);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${H - m.b}" stroke="#eee"/>`);
    parts.push(`<text x="${x}" y="${H - m.b + 16}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of o.logY ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    const y = H - m.b - ((t - y0) / (y1 - y0)) * (H - m.t - m.b);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${fmt(o.logY ? Math.pow(10, t) : t)}</text>`);
  }
  parts.push(...frame(W, H, m, o.yLabel));
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  // Series, then the legend
  const { width: legendW, box: legend } = legendBox(o.series.map((s) => s.name), W, m);
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const ps = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0));
    if (s.markers !== true && ps.length > 1) {
      const d = ps.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
      parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    }
    if (s.markers || ps.length <= 1) {
      for (const [x, y] of ps) {
        parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3.5" fill="${color}"/>`);
      }
    }
    const ly = m.t + 14 + i * 16;
    legend.push(
      `<line x1="${W - m.r - legendW}" y1="${ly - 4}" x2="${W - m.r - legendW + 20}" y2="${
        ly - 4
      }" stroke="${color}" stroke-width="3"/>`,
    );
    legend.push(`<text x="${W - m.r - legendW + 25}" y="${ly}">${esc(s.name)}</text>`);
  });
  parts.push(...legend);
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}

/** Grouped bars: one group per category, one bar per series in each group (NaN: no bar). */
export interface BarOptions {
  title: string;
  yLabel: string;
  categories: string[];
  series: { name: string; values: number[] }[];
  width?: number;
  height?: number;
}

/** Renders grouped bars (y from 0) with each bar's value above it, as an SVG document. */
export function barPlot(o: BarOptions): string {
  const W = o.width ?? 720, H = o.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 55 };
  const vals = o.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const y1 = Math.max(1e-9, ...vals) * 1.12;
  const sy = (y: number) => H - m.b - (y / y1) * (H - m.t - m.b);
  const gw = (W - m.l - m.r) / Math.max(1, o.categories.length);
  const bw = (gw * 0.8) / Math.max(1, o.series.length);
  const parts = head(W, H, o.title);
  for (const t of niceTicks(0, y1)) {
    const y = sy(t);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${W - m.r}" y2="${y}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  parts.push(...frame(W, H, m, o.yLabel));
  o.categories.forEach((c, i) => {
    const gx = m.l + i * gw;
    parts.push(`<text x="${gx + gw / 2}" y="${H - m.b + 18}" text-anchor="middle">${esc(c)}</text>`);
    o.series.forEach((s, j) => {
      const v = s.values[i];
      if (v === undefined || !Number.isFinite(v)) return;
      const x = gx + gw * 0.1 + j * bw, y = sy(Math.max(0, v));
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw * 0.92).toFixed(1)}" height="${
          (H - m.b - y).toFixed(1)
        }" fill="${COLORS[j % COLORS.length]}"/>`,
      );
      parts.push(
        `<text x="${(x + bw * 0.46).toFixed(1)}" y="${(y - 3).toFixed(1)}" text-anchor="middle" font-size="10">${
          fmt(Number(v.toPrecision(3)))
        }</text>`,
      );
    });
  });
  const { width: legendW, box } = legendBox(o.series.map((s) => s.name), W, m);
  parts.push(...box);
  o.series.forEach((s, j) => {
    const ly = m.t + 14 + j * 16;
    parts.push(
      `<rect x="${W - m.r - legendW}" y="${ly - 9}" width="18" height="10" fill="${COLORS[j % COLORS.length]}"/>`,
    );
    parts.push(`<text x="${W - m.r - legendW + 25}" y="${ly}">${esc(s.name)}</text>`);
  });
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}
