/**
 * The part of the decoding engine (`engine/mod.ts`) that the server uses. The scheduler and the
 * HTTP layer are written against this narrow view, so what serve/ relies on is visible in one
 * place; `serve/app.ts` loads the real `Engine`.
 *
 * @module
 */
import type { Engine } from "../engine/mod.ts";

export type { EngineOptions, SamplingParams, StepResult } from "../engine/mod.ts";

/** What the scheduler and the HTTP layer need from the engine. */
export type ServeEngine = Pick<
  Engine,
  | "tokenizer"
  | "contextSize"
  | "maxBatch"
  | "nLayer"
  | "expertsPerLayer"
  | "modelName"
  | "allocSlot"
  | "freeSlot"
  | "prefill"
  | "step"
  | "dispose"
>;
