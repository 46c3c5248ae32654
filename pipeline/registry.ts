/**
 * The stage registry: stage types by name. Stage modules (in `stages/`) call {@linkcode registerStage}
 * when they are imported; the config loader looks `type:` keys up with {@linkcode getStage}. It lives
 * in `pipeline/` so that the pipeline never imports `stages/`: stages register themselves into it,
 * and the program's entry point (`cli.ts`) imports `stages/mod.ts` to register them all.
 *
 * @module
 */
import { RESERVED_STAGE_KEYS, type StageDefinition } from "./stage.ts";

const registry = new Map<string, StageDefinition>();
const TYPE_RE = /^[a-z][a-z0-9-]*$/;

/**
 * Register a stage type so YAML files can use it as `type: <def.type>`. Registering the same
 * definition object again does nothing (a module imported twice, a test file re-run).
 *
 * @throws {TypeError} If the type name is not `[a-z][a-z0-9-]*`, another definition is registered
 * under it, the schema declares `name`, `type` or `sweep` (those keys belong to the pipeline),
 * `version` is not a string, `fingerprint` is not a function, or `cache`/`gathers` have other values
 * than `false`/`true`.
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
  const known = registry.get(def.type);
  if (known === def) return;
  if (known) throw new TypeError(`Cannot register stage type "${def.type}": already registered`);
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
  if (def.cache !== undefined && def.cache !== false) {
    throw new TypeError(`Cannot register stage type "${def.type}": cache must be false or absent`);
  }
  if (def.gathers !== undefined && def.gathers !== true) {
    throw new TypeError(`Cannot register stage type "${def.type}": gathers must be true or absent`);
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
