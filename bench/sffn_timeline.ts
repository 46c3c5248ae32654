/**
 * Summarises the fused sparse FFN op's timeline records (LTE_DEC_SFFN_TRACE=1, printed by the
 * native library as "sffn tl" lines; `bench/fused_ffn_bench.ts --trace` makes them): for each traced
 * configuration, when each phase of the route kernel and of the two-phase FFN kernel starts and ends
 * across the grid, in microseconds from the launch pair's first route block, averaged over the launch
 * pairs that follow another one (the first of a dump has no predecessor).
 *
 *   deno run -A bench/sffn_timeline.ts trace.log [--json out.json]
 *
 * Record line: `sffn tl <pair> <R|F> <block> <sm> <neurons> <ns x 10> <cycles since mark 0 x 9>`
 * (cuda/cuda/decode_sffn.cuh, TlRec). A mark's time = its block's %globaltimer at mark 0 plus its
 * clock64 delta at the launch's ns-per-cycle (the globaltimer may tick coarsely; clock64 is per SM).
 *
 * @module
 */

interface Block {
  kind: "R" | "F";
  block: number;
  sm: number;
  neurons: number;
  ns: number[]; // mark i in ns (absolute), NaN when not reached
}
interface Dump {
  label: string;
  pairs: Map<number, Block[]>;
}

/** Route marks: 0 start, 1 after the PDL wait, 2 x' done, 3 end. FFN marks: 0 start, 1 after the
 *  wait, 2 union done, 3 warp 0's phase 1 done, 4 every warp's phase 1 done, 5 h formed, 6 thread
 *  0's phase 2 done, 7 its atomics issued, 8 every thread's atomics issued. */
export const ROUTE_MARKS = ["start", "wait", "x'", "end"];
export const FFN_MARKS = ["start", "wait", "union", "ph1 w0", "ph1 all", "h", "ph2 t0", "out t0", "end"];

export function parseTimeline(text: string): Dump[] {
  const labels = text.split("\n").filter((l) => l.startsWith("trace:")).map((l) => l.slice(6).trim());
  const dumps: Dump[] = [];
  let prevPair = -1;
  const raw: { pair: number; kind: "R" | "F"; f: number[] }[][] = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^sffn tl (\d+) ([RF]) (.*)$/);
    if (!m) continue;
    const pair = Number(m[1]);
    if (raw.length === 0 || pair < prevPair) raw.push([]); // pairs ascend within a dump
    prevPair = pair;
    raw[raw.length - 1]!.push({ pair, kind: m[2] as "R" | "F", f: m[3]!.trim().split(/\s+/).map(Number) });
  }
  raw.forEach((recs, d) => {
    // ns per cycle over the dump: blocks whose last mark is > 2 us after their start
    const ratios: number[] = [];
    for (const { f } of recs) {
      const ns = f.slice(3, 13), cyc = f.slice(13, 22);
      for (let i = 9; i >= 1; i--) {
        if (ns[i]! > 0 && cyc[i - 1]! > 0) {
          if (ns[i]! - ns[0]! > 2000) ratios.push((ns[i]! - ns[0]!) / cyc[i - 1]!);
          break;
        }
      }
    }
    ratios.sort((a, b) => a - b);
    const nsPerCycle = ratios.length ? ratios[ratios.length >> 1]! : 1 / 1.98;
    const pairs = new Map<number, Block[]>();
    for (const { pair, kind, f } of recs) {
      const [block, sm, neurons] = [f[0]!, f[1]!, f[2]!];
      const g0 = f[3]!;
      const cyc = f.slice(13, 22);
      const ns = [g0, ...cyc.map((c) => (c >= 0 ? g0 + c * nsPerCycle : NaN))];
      if (!pairs.has(pair)) pairs.set(pair, []);
      pairs.get(pair)!.push({ kind, block, sm, neurons, ns });
    }
    dumps.push({ label: labels[d] ?? `dump ${d}`, pairs });
  });
  return dumps;
}

const q = (v: number[], p: number) => {
  const s = v.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN;
};

export interface PhaseRow {
  kernel: "route" | "ffn";
  mark: string;
  min: number;
  median: number;
  max: number;
}
export interface Summary {
  label: string;
  pairs: number;
  period_us: number;
  prev_ffn_end_us: number;
  route_blocks: number;
  route_sms: number;
  ffn_blocks: number;
  ffn_blocks_on_route_sms: number;
  rows: PhaseRow[];
}

/** Mean over the dump's pairs 1.. of each mark's min / median / max, in us from the pair's first
 *  route block start. */
export function summarise(d: Dump): Summary {
  const acc = new Map<string, number[][]>();
  const add = (key: string, v: number[]) => {
    if (!acc.has(key)) acc.set(key, [[], [], []]);
    const a = acc.get(key)!;
    a[0]!.push(v[0]!);
    a[1]!.push(v[1]!);
    a[2]!.push(v[2]!);
  };
  const periods: number[] = [], prevEnds: number[] = [];
  let routeBlocks = 0, routeSms = 0, ffnBlocks = 0, shared = 0, n = 0;
  const ffnEnd = (bs: Block[]) =>
    Math.max(...bs.filter((b) => b.kind === "F").map((b) => b.ns[8] ?? NaN).filter(Number.isFinite));
  for (const [pair, blocks] of [...d.pairs].sort((a, b) => a[0] - b[0])) {
    const prev = d.pairs.get(pair - 1);
    if (!prev) continue;
    const R = blocks.filter((b) => b.kind === "R"), F = blocks.filter((b) => b.kind === "F");
    if (!R.length) continue;
    const t0 = Math.min(...R.map((b) => b.ns[0]!));
    const us = (v: number) => (v - t0) / 1000;
    R[0]!.ns.slice(0, ROUTE_MARKS.length).forEach((_, i) => {
      const v = R.map((b) => us(b.ns[i]!));
      add(`route|${ROUTE_MARKS[i]}`, [q(v, 0), q(v, 0.5), q(v, 1)]);
    });
    FFN_MARKS.forEach((_, i) => {
      const v = F.map((b) => us(b.ns[i] ?? NaN));
      add(`ffn|${FFN_MARKS[i]}`, [q(v, 0), q(v, 0.5), q(v, 1)]);
    });
    const pe = ffnEnd(prev);
    prevEnds.push(us(pe));
    periods.push((ffnEnd(blocks) - pe) / 1000);
    const rsm = new Set(R.map((b) => b.sm));
    routeBlocks += R.length;
    routeSms += rsm.size;
    ffnBlocks += F.length;
    shared += F.filter((b) => rsm.has(b.sm)).length;
    n++;
  }
  const mean = (v: number[]) =>
    v.filter(Number.isFinite).reduce((a, b) => a + b, 0) / Math.max(1, v.filter(Number.isFinite).length);
  const rows: PhaseRow[] = [...acc].map(([key, [mi, me, ma]]) => {
    const [kernel, mark] = key.split("|") as ["route" | "ffn", string];
    return { kernel, mark, min: mean(mi!), median: mean(me!), max: mean(ma!) };
  });
  return {
    label: d.label,
    pairs: n,
    period_us: mean(periods),
    prev_ffn_end_us: mean(prevEnds),
    route_blocks: routeBlocks / Math.max(1, n),
    route_sms: routeSms / Math.max(1, n),
    ffn_blocks: ffnBlocks / Math.max(1, n),
    ffn_blocks_on_route_sms: shared / Math.max(1, n),
    rows,
  };
}

export function formatSummary(s: Summary): string {
  const f = (v: number) => (Number.isFinite(v) ? v.toFixed(2).padStart(7) : "      -");
  const lines = [
    `${s.label}: ${s.pairs} pairs, period ${s.period_us.toFixed(2)} us (previous FFN kernel's last block ended at ${
      s.prev_ffn_end_us.toFixed(2)
    } us); route ${s.route_blocks.toFixed(0)} blocks on ${s.route_sms.toFixed(0)} SMs, FFN ${
      s.ffn_blocks.toFixed(0)
    } blocks (${s.ffn_blocks_on_route_sms.toFixed(0)} on the route's SMs)`,
    `  kernel mark        min  median     max   (us from the pair's first route block start)`,
    ...s.rows.map((r) => `  ${r.kernel.padEnd(6)} ${r.mark.padEnd(8)} ${f(r.min)} ${f(r.median)} ${f(r.max)}`),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file) {
    console.error("usage: deno run -A bench/sffn_timeline.ts trace.log [--json out.json]");
    Deno.exit(2);
  }
  const dumps = parseTimeline(Deno.readTextFileSync(file));
  if (!dumps.length) {
    console.error(`sffn_timeline: no "sffn tl" records in ${file}`);
    Deno.exit(1);
  }
  const sums = dumps.map(summarise);
  for (const s of sums) console.log(formatSummary(s) + "\n");
  const j = Deno.args.indexOf("--json");
  if (j >= 0) Deno.writeTextFileSync(Deno.args[j + 1]!, JSON.stringify(sums, null, 1));
}
