/**
 * bench/expert_reuse.ts: the reuse statistics of consecutive tokens' expert sets (masks in,
 * numbers out), on hand-made masks whose answers are worked out in the comments.
 */
import nodeAssert from "node:assert/strict";
import { addReuseCounts, lagReuse, layerReuse, reuseStats } from "../bench/expert_reuse.ts";

/** A T x E 0/1 mask from each token's set of active experts. */
function mask(E: number, sets: number[][]): Uint8Array {
  const m = new Uint8Array(sets.length * E);
  sets.forEach((s, t) => s.forEach((e) => (m[t * E + e] = 1)));
  return m;
}

const close = (got: number, want: number, what: string) =>
  nodeAssert.ok(Math.abs(got - want) < 1e-12, `${what}: got ${got}, want ${want}`);

// E = 4. Window 1: {0,1,2,3}, {0}, {0,1}. Window 2: {3}, {3}.
// Pairs (t >= 1, inside a window): w1 t1 A={0} prev {0,1,2,3}: 1 shared; w1 t2 A={0,1} prev {0}: 1;
// w2 t1 A={3} prev {3}: 1. reuse = 3 / (1 + 2 + 1) = 3/4.
//   Off by one (dividing by |A_{t-1}|): 3 / (4+1+1) = 1/2. Pairs crossing windows (w1 t2 -> w2 t0,
//   0 shared of 1): 3/5. Including t = 0 in the denominator: 3/9.
// Rates over 5 tokens: e0 3/5, e1 2/5, e2 1/5, e3 3/5; a = 9/20 = 0.45;
// chance = Σp² / Σp = (9+4+1+9)/25 / (9/5) = 23/45 (!= a).
// prev1: prefetched 4+1+1 = 6, wasted 3 (w1 t1: {1,2,3}) -> 1/2; prefetch 6/12.
// prev2: w1 t1 P = A0 (t=1: only one previous), hit 1, 4 fetched; w1 t2 P = A1 ∪ A0 = {0,1,2,3},
//   hit 2, 4 fetched; w2 t1 P = {3}, hit 1, 1 fetched -> covered 4/4, wasted 5/9, prefetch 9/12.
// hot: k = round(0.45 * 4) = 2, set {0, 3} (3 firings each; e1 has 2): w1 t1 hit 1 (e0), w1 t2 hit
//   1 (e0), w2 t1 hit 1 (e3) -> covered 3/4, wasted (6-3)/6 = 1/2, prefetch 1/2.
const E = 4;
const windows = [mask(E, [[0, 1, 2, 3], [0], [0, 1]]), mask(E, [[3], [3]])];

Deno.test("expert_reuse: reuse is |A_t ∩ A_t-1| / |A_t| inside windows; chance from per-expert rates", () => {
  const r = layerReuse(windows, E);
  const s = reuseStats(r.counts);
  nodeAssert.equal(s.tokens, 5);
  nodeAssert.equal(s.pairs, 3);
  close(s.active, 0.45, "a");
  close(s.chance_plain, 0.45, "chance_plain");
  close(s.reuse, 3 / 4, "reuse");
  close(s.chance, 23 / 45, "chance (per-expert)");
  nodeAssert.deepEqual(r.rates, [3 / 5, 2 / 5, 1 / 5, 3 / 5]);
  // prev1 covers exactly the reuse.
  close(s.prev1.covered, 3 / 4, "prev1 covered");
  close(s.prev1.wasted, 1 / 2, "prev1 wasted");
  close(s.prev1.prefetch, 1 / 2, "prev1 prefetch");
  close(s.prev2.covered, 1, "prev2 covered");
  close(s.prev2.wasted, 5 / 9, "prev2 wasted");
  close(s.prev2.prefetch, 3 / 4, "prev2 prefetch");
  nodeAssert.deepEqual(r.hotSet, [0, 3]);
  close(s.hot.covered, 3 / 4, "hot covered");
  close(s.hot.wasted, 1 / 2, "hot wasted");
  close(s.hot.prefetch, 1 / 2, "hot prefetch");
});

Deno.test("expert_reuse: the same set every token reuses everything, chance 1 while a = 1/2", () => {
  // E = 4, {1,2} on at all 5 tokens (windows of 3 and 2): 3 pairs, 2 shared each.
  const same = [mask(E, [[1, 2], [1, 2], [1, 2]]), mask(E, [[1, 2], [1, 2]])];
  const r = layerReuse(same, E);
  const s = reuseStats(r.counts);
  close(s.active, 0.5, "a");
  close(s.reuse, 1, "reuse");
  close(s.chance, 1, "chance: p = (0, 1, 1, 0) -> 2/2");
  close(s.prev1.wasted, 0, "prev1 wasted");
  close(s.prev2.wasted, 0, "prev2 wasted");
  nodeAssert.deepEqual(r.hotSet, [1, 2]);
  close(s.hot.covered, 1, "hot covered");
  close(s.hot.wasted, 0, "hot wasted");

  // Pooled with the first layer: counts add. reuse (3 + 6) / (4 + 6); a (9 + 10) / 40;
  // chance (23/25 + 2) / (9/5 + 2) = 73/95; prev2 wasted (5 + 0) / (9 + 6).
  const all = reuseStats(addReuseCounts([layerReuse(windows, E).counts, r.counts]), 2);
  nodeAssert.equal(all.tokens, 5);
  nodeAssert.equal(all.pairs, 3);
  close(all.reuse, 9 / 10, "pooled reuse");
  close(all.active, 19 / 40, "pooled a");
  close(all.chance, 73 / 95, "pooled chance");
  close(all.prev2.wasted, 5 / 15, "pooled prev2 wasted");
  close(all.prev2.prefetch, 15 / 24, "pooled prev2 prefetch");
});

Deno.test("expert_reuse: one-token windows have no pairs; a bad mask length throws", () => {
  const s = reuseStats(layerReuse([mask(E, [[0]]), mask(E, [[0, 1]])], E).counts);
  nodeAssert.equal(s.pairs, 0);
  close(s.active, 3 / 8, "a");
  nodeAssert.ok(Number.isNaN(s.reuse));
  nodeAssert.throws(() => layerReuse([new Uint8Array(5)], E), RangeError);
});

Deno.test("expert_reuse: the static set at every size, a given ranking, and reuse at lag d", () => {
  // Firing counts at t >= 1 (w1 t1, t2; w2 t1): e0 2, e1 1, e2 0, e3 1; 3 pairs, Σ|A_t| = 4.
  // Default order (counts over all tokens 3, 2, 1, 3): [0, 3, 1, 2]; k = 1..4 adds hits 2, 1, 1, 0.
  const r = layerReuse(windows, E);
  nodeAssert.deepEqual(r.order, [0, 3, 1, 2]);
  nodeAssert.deepEqual(r.hotCurve, [
    { prefetched: 0, hit: 0 },
    { prefetched: 3, hit: 2 },
    { prefetched: 6, hit: 3 },
    { prefetched: 9, hit: 4 },
    { prefetched: 12, hit: 4 },
  ]);
  nodeAssert.deepEqual(r.counts.hot, r.hotCurve[2]);
  // Ranked by a given score (e2 first, then e1) at k = 2: hits 0 + 1 of 6 prefetched.
  const g = layerReuse(windows, E, { rank: [0, 1, 2, 0], k: 2 });
  nodeAssert.deepEqual(g.hotSet, [2, 1]);
  close(reuseStats(g.counts).hot.covered, 1 / 4, "ranked hot covered");
  close(reuseStats(g.counts).hot.wasted, 5 / 6, "ranked hot wasted");
  // Lag 1 is the reuse (3/4); lag 2 only w1 t2: {0,1} vs {0,1,2,3} -> 2/2; lag 3: no such pair.
  const lags = lagReuse(windows, E, 3);
  close(lags[0]!, 3 / 4, "lag 1");
  close(lags[1]!, 1, "lag 2");
  nodeAssert.ok(Number.isNaN(lags[2]!));
});
