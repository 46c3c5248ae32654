/**
 * The stage registry: stage types by name. Stage modules call {@linkcode registerStage} when they are
 * imported (see `stages/mod.ts`); the config loader looks `type:` keys up with {@linkcode getStage}.
 *
 * @module
 */
import type { StageDefinition } from "../pipeline/stage.ts";

const registry = new Map<string, StageDefinition>();
const TYPE_RE = /^[a-z][a-z0-9-]*$/;
const RESERVED_KEYS = ["name", "type"];

/**
 * Register a stage type so YAML files can use it as `type: <def.type>`.
 *
 * @throws {TypeError} If the type name is not `[a-z][a-z0-9-]*`, is already registered, or the
 * schema declares `name` or `type` (those keys belong to the pipeline).
 *
 * @example
 * ```ts
 * registerStage({ type: "noop", description: "Does nothing", schema: z.strictObject({}),
 *   inputs: () => [], run: async () => ({}) });
 * ```
 */
export function registerStage<C>(def: StageDefinition<C>): void {
  if (typeof def.type !== "string" || !TYPE_RE.test(def.type)) {
    throw new TypeError(`Cannot register stage type ${JSON.stringify(def.type)}: expected a name matching ${TYPE_RE}`);
  }
  if (registry.has(def.type)) throw new TypeError(`Cannot register stage type "${def.type}": already registered`);
  const shape = (def.schema as any)?.def?.shape ?? (def.schema as any)?.def?.innerType?.def?.shape;
  for (const k of RESERVED_KEYS) {
    if (shape && k in shape) {
      throw new TypeError(`Cannot register stage type "${def.type}": its schema declares the reserved key "${k}"`);
    }
  }
  registry.set(def.type, def as StageDefinition);
}

/** The stage type registered under `type`, or undefined. */
export function getStage(type: string): StageDefinition | undefined {
  return registry.get(type);
}

/** All registered stage types, sorted by type name. */
export function listStages(): StageDefinition[] {
  return [...registry.values()].sort((a, b) => a.type.localeCompare(b.type));
}
