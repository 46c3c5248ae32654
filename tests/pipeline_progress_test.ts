/** Progress lines (terminal and plain) and complete console writes. */
import assert from "node:assert/strict";
import { createProgress, formatDuration, formatNumber, formatProgressLine } from "../pipeline/progress.ts";
import { writeAllSync } from "../pipeline/_io.ts";

function fakeClock(start = 0) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

Deno.test("createProgress() prints plain lines at most every 5 s and at the end when not a terminal", () => {
  const out: string[] = [];
  const logged: string[] = [];
  const clock = fakeClock();
  const bar = createProgress({ total: 100, label: "train", unit: "step" }, {
    write: (t) => void out.push(t),
    isTerminal: false,
    now: clock.now,
    onLine: (l) => void logged.push(l),
    width: 10,
  });
  for (let s = 1; s <= 100; s++) {
    clock.advance(200); // 5 steps/s
    bar.update(s, { loss: 3.21 - s / 100, "tok/s": 5200 });
  }
  bar.done();
  bar.done(); // idempotent
  // 100 steps × 0.2 s = 20 s: lines at 0.2, 5.2, 10.2 and 15.2 s, then the final line.
  assert.equal(out.length, 5);
  assert.ok(out.every((l) => l.endsWith("\n") && !l.includes("\r")));
  assert.equal(out[0], "train [..........] 1/100 1% loss 3.2 tok/s 5.2k 5 step/s ETA 20s\n");
  assert.equal(out[1], "train [###.......] 26/100 26% loss 2.95 tok/s 5.2k 5 step/s ETA 15s\n");
  assert.equal(out[4], "train [##########] 100/100 100% loss 2.21 tok/s 5.2k 5 step/s\n");
  assert.deepEqual(logged, out.map((l) => l.trimEnd()));
});

Deno.test("createProgress() redraws one line on a terminal", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const bar = createProgress({ total: 4, label: "eval" }, {
    write: (t) => void out.push(t),
    isTerminal: true,
    now: clock.now,
  });
  for (let s = 1; s <= 4; s++) {
    clock.advance(1000);
    bar.update(s);
  }
  bar.done();
  assert.ok(out.every((l) => l.startsWith("\r") && l.includes("\x1b[K")));
  assert.ok(out.slice(0, -1).every((l) => !l.includes("\n")));
  assert.ok(out.at(-1)!.endsWith("\n"));
  assert.match(out[1]!, /eval \[##########\.{10}\] 2\/4 50% 1 it\/s ETA 2s/);
});

Deno.test("formatProgressLine() shows counter, fields, rate and ETA", () => {
  assert.equal(
    formatProgressLine({
      label: "train",
      step: 120,
      total: 500,
      fields: { loss: 3.21, "tok/s": 5200 },
      rate: 0.5,
      width: 10,
    }),
    "train [##........] 120/500 24% loss 3.21 tok/s 5.2k 0.5 it/s ETA 12m40s",
  );
  assert.equal(formatNumber(0.012345), "0.0123");
  assert.equal(formatNumber(512), "512");
  assert.equal(formatNumber(1_250_000), "1.25M");
  assert.equal(formatDuration(72), "1m12s");
  assert.equal(formatDuration(7300), "2h01m");
});

Deno.test("createProgress() measures the rate from the first update, not from step 0 (resume)", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const bar = createProgress({ total: 1000, label: "train", unit: "step" }, {
    write: (t) => void out.push(t),
    isTerminal: false,
    now: clock.now,
    plainIntervalMs: 0,
    width: 10,
  });
  clock.advance(1000); // loading the checkpoint
  bar.update(501); // resumed at step 500: one step done since creation
  for (let s = 502; s <= 510; s++) {
    clock.advance(200);
    bar.update(s);
  }
  // Not 501 steps in 1 s: one step in 1 s, then 5 step/s from the updates.
  assert.match(out[0]!, / 1 step\/s ETA 8m19s\n$/);
  assert.match(out.at(-1)!, / 5 step\/s ETA 1m38s\n$/);
});

Deno.test("writeAllSync() writes every byte even when writeSync writes only part", () => {
  const got: number[] = [];
  const partial = { writeSync: (p: Uint8Array) => (got.push(...p.subarray(0, 3)), Math.min(3, p.length)) };
  writeAllSync(partial, "hello, world — ✓");
  assert.equal(new TextDecoder().decode(new Uint8Array(got)), "hello, world — ✓");
});
