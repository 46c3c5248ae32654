/**
 * The part of the decoding engine (`engine/mod.ts`, pinned in the work plan) that the server uses.
 * The server is written against this structural type, so `Engine` satisfies it without an import
 * cycle and without serve/ depending on engine internals; `serve/load.ts` loads the real engine.
 *
 * @module
 */
import type { Tokenizer } from "../text/tokenizer.ts";

/** Per-request sampling; temperature 0 means greedy. Mirrors `engine/mod.ts` `SamplingParams`. */
export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

/** Engine construction options. Mirrors `engine/mod.ts` `EngineOptions`. */
export interface EngineOptions {
  device: "cpu" | "cuda";
  dtype: "f32" | "f16" | "bf16";
  sparse: boolean;
  maxBatch: number;
  maxContext: number;
}

/** One batched decode step: the next token of every slot, and per slot the active experts per layer. */
export interface StepResult {
  tokens: number[];
  /** Per slot: per layer active expert count; `[]` for a dense model. */
  activeExperts: number[][];
}

/** What the scheduler and the HTTP layer need from the engine. */
export interface ServeEngine {
  readonly tokenizer: Tokenizer;
  readonly contextSize: number;
  readonly maxBatch: number;
  readonly nLayer: number;
  /** Experts per FFN layer; null for a dense model. */
  readonly expertsPerLayer: number | null;
  readonly modelName: string;
  allocSlot(): number | null;
  freeSlot(slot: number): void;
  prefill(slot: number, ids: number[], sampling: SamplingParams): Promise<{ token: number; activeExperts: number[] }>;
  step(slots: number[], sampling: SamplingParams[]): Promise<StepResult>;
  dispose(): void;
}
