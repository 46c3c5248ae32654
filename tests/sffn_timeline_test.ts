/**
 * bench/sffn_timeline.ts: the timeline records of the fused sparse FFN op (LTE_DEC_SFFN_TRACE) are
 * split into one dump per traced configuration, converted to microseconds with the clock rate the
 * records themselves imply, and summarised per phase.
 */
import nodeAssert from "node:assert/strict";
import { formatSummary, parseTimeline, summarise } from "../bench/sffn_timeline.ts";

/** A synthetic dump: `pairs` launch pairs 20 us apart, 2 route blocks (marks 1 us apart) and 3 FFN
 *  blocks (start 0.5 us after the route, marks 1 us apart), clock64 at 2 cycles per ns. */
function dump(base: number, pairs: number, ffnShift = 0): string[] {
  const lines: string[] = [];
  const rec = (pair: number, kind: string, block: number, sm: number, g0: number, marks: number) => {
    const cyc = Array.from({ length: 9 }, (_, i) => (i < marks ? 2000 * (i + 1) : -1));
    const ns = [g0, ...cyc.map((c) => (c >= 0 ? g0 + c / 2 : 0))];
    lines.push(`sffn tl ${pair} ${kind} ${block} ${sm} 7 ${ns.join(" ")} ${cyc.join(" ")}`);
  };
  for (let p = 0; p < pairs; p++) {
    const t0 = base + p * 20000;
    for (let b = 0; b < 2; b++) rec(p, "R", b, b, t0 + b * 100, 3);
    for (let b = 0; b < 3; b++) rec(p, "F", b, b + 1, t0 + 500 + ffnShift, 8);
  }
  return lines;
}

Deno.test("sffn_timeline: one summary per traced configuration, phases in us from the route start", () => {
  const log = [
    "trace: active 50% A",
    "some other output",
    ...dump(1_000_000, 3),
    "trace: active 10% B",
    ...dump(9_000_000, 4, 1000),
  ].join("\n");
  const dumps = parseTimeline(log);
  nodeAssert.equal(dumps.length, 2);
  nodeAssert.deepEqual(dumps.map((d) => d.label), ["active 50% A", "active 10% B"]);
  const [a, b] = dumps.map(summarise);
  // pairs after the first of each dump
  nodeAssert.equal(a!.pairs, 2);
  nodeAssert.equal(b!.pairs, 3);
  nodeAssert.ok(Math.abs(a!.period_us - 20) < 1e-9);
  const mark = (s: typeof a, kernel: string, m: string) => s!.rows.find((r) => r.kernel === kernel && r.mark === m)!;
  // route: first block at 0, second at 0.1 us; mark 3 (end) 3 us later
  nodeAssert.equal(mark(a, "route", "start").min, 0);
  nodeAssert.ok(Math.abs(mark(a, "route", "end").max - 3.1) < 1e-9);
  // FFN: start 0.5 us (1.5 in B), "end" = mark 8 = 8 us after its start
  nodeAssert.ok(Math.abs(mark(a, "ffn", "start").median - 0.5) < 1e-9);
  nodeAssert.ok(Math.abs(mark(b, "ffn", "start").median - 1.5) < 1e-9);
  nodeAssert.ok(Math.abs(mark(a, "ffn", "end").max - 8.5) < 1e-9);
  // the previous pair's FFN ended 20 - 8.5 us before this route start
  nodeAssert.ok(Math.abs(a!.prev_ffn_end_us - (8.5 - 20)) < 1e-9);
  nodeAssert.equal(a!.route_sms, 2);
  nodeAssert.equal(a!.ffn_blocks_on_route_sms, 1); // FFN blocks on SMs 1..3, route on 0..1
  nodeAssert.match(formatSummary(a!), /active 50% A: 2 pairs, period 20\.00 us/);
});

Deno.test("sffn_timeline: a log without records gives no dumps", () => {
  nodeAssert.deepEqual(parseTimeline("trace: active 50% A\nnothing here\n"), []);
});
