/**
 * The stage registry: stage types by name. Stage modules call {@linkcode registerStage} when they are
 * imported (see `stages/mod.ts`); the config loader looks `type:` keys up with {@linkcode getStage}.
 *
 * @module
 */
import { RESERVED_STAGE_KEYS, type StageDefinition } from "../pipeline/stage.ts";

const registry = new Map<string, StageDefinition>();
const TYPE_RE = /^[a-z][a-z0-9-]*$/;

/**
 * Register a stage type so YAML files can use it as `type: <def.type>`.
 *
 * @throws {TypeError} If the type name is not `[a-z][a-z0-9-]*`, is already registered, the
 * schema declares `name` or `type` (those keys belong to the pipeline), `version` is not a string,
 * or `fingerprint` is not a function.
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
  for (const k of RESERVED_STAGE_KEYS) {
    if (shape && k in shape) {
      throw new TypeError(`Cannot register stage type "${def.type}": its schema declares the reserved key "${k}"`);
    }
  }
  if (def.version !== undefined && typeof def.version !== "string") {
    throw new TypeError(`Cannot register stage type "${def.type}": version must be a string`);
  }
  if (def.fingerprint !== undefined && typeof def.fingerprint !== "function") {
    throw new TypeError(`Cannot register stage type "${def.type}": fingerprint must be a function`);
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
