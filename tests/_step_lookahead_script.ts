/**
 * A scripted batch loop over `Engine.step()` (as serve/scheduler.ts drives it) for the step()
 * lookahead tests on the CPU (tests/engine_step_lookahead_test.ts) and CUDA
 * (tests/gpu/engine_test.ts): steady batches, a batch that shrinks and grows again, a slot freed
 * with a step in flight and reused, a prefill between two steps of the same batch, reordered
 * slots, changed sampling, and a slot running into the end of a 24-position context (the engine
 * needs maxBatch >= 3, maxContext 24, a 256-token vocabulary).
 */
import { type Engine, GREEDY, type SamplingParams } from "../engine/mod.ts";

const SEEDED: SamplingParams = { temperature: 0.9, topK: 20, topP: 0.95, seed: 7 };

/** Runs the script on one engine; returns everything a caller can observe, in order. */
export async function batchLoopScript(eng: Engine): Promise<unknown[]> {
  const log: unknown[] = [];
  const obs = async (what: string, fn: () => Promise<unknown>) => {
    try {
      log.push([what, await fn()]);
    } catch (e) {
      log.push([what, "error", (e as Error).message]);
    }
  };
  const a = eng.allocSlot()!, b = eng.allocSlot()!;
  await obs("prefill a", () => eng.prefill(a, [5, 6, 7, 8], GREEDY));
  await obs("prefill b", () => eng.prefill(b, [40, 41], SEEDED));
  const step = (slots: number[], sps: SamplingParams[]) =>
    obs(`step ${slots}`, async () => ({ ...(await eng.step(slots, sps)), pos: slots.map((s) => eng.position(s)) }));
  for (let i = 0; i < 4; i++) await step([a, b], [GREEDY, SEEDED]); // steady batch
  for (let i = 0; i < 2; i++) await step([a], [GREEDY]); // b waits (its next token is already decoded)
  log.push(["pos b while waiting", eng.position(b)]);
  for (let i = 0; i < 2; i++) await step([a, b], [GREEDY, SEEDED]); // b back
  eng.freeSlot(a); // a finishes with a step in flight; its slot is reused
  const c = eng.allocSlot()!;
  await obs("prefill c", () => eng.prefill(c, [100, 101, 102], GREEDY));
  for (let i = 0; i < 3; i++) await step([b, c], [SEEDED, GREEDY]);
  for (let i = 0; i < 2; i++) await step([c, b], [GREEDY, SEEDED]); // reordered
  // another sequence's prefill between two steps of the same batch rewrites the io rows
  const d = eng.allocSlot()!;
  await obs("prefill d", () => eng.prefill(d, [7, 7, 7], GREEDY));
  for (let i = 0; i < 2; i++) await step([c, b], [GREEDY, SEEDED]);
  eng.freeSlot(d);
  await step([c, b], [GREEDY, { ...SEEDED, temperature: 0.5 }]); // sampling changed
  // c runs into the end of the context (24 positions): the same step fails the same way
  for (let i = 0; i < 18; i++) await step([c], [GREEDY]);
  log.push(["pos", eng.position(b), eng.position(c)]);
  return log;
}
