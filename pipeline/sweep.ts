/**
 * Sweeps: `sweep: { "<dotted.key.path>": [v1, v2, ...], ... }` on a stage expands it into one stage
 * per combination (cartesian product, keys in YAML order), named `<name>@<k>=<v>[,<k2>=<v2>]` where
 * `<k>` is the last segment of the dotted path. The key `seed` overrides the pipeline seed for the
 * variant (and the stages that fan out along it). The config loader (config.ts) does the expansion
 * and the fan-out of downstream stages; these are its pure helpers.
 *
 * @module
 */

/** One variant's values, by shortened key (`{ lr: 0.001, seed: 1 }`), in naming order. */
export type VariantValues = Record<string, unknown>;

/** One combination of a stage's own `sweep:`. */
export interface SweepCombo {
  /** Values by shortened key. */
  values: VariantValues;
  /** What to set in the stage item: dotted key path (as split segments) and value. */
  assignments: { path: string[]; value: unknown; key: string; index: number }[];
  /** The `seed` value, when swept. */
  seed?: number;
}

/** A problem with a `sweep:` mapping; `key`/`index` locate it inside the mapping. */
export interface SweepProblem {
  key?: string;
  index?: number;
  message: string;
}

/** Largest number of variants one stage may expand into. */
export const MAX_VARIANTS = 256;

const SAFE_VALUE = /^[A-Za-z0-9_.+-]+$/;

/** A value as it appears in a variant name, or undefined when it is not path-safe. */
export function formatValue(v: unknown): string | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "string" && SAFE_VALUE.test(v) && v.length <= 40) return v;
  return undefined;
}

/** `train@lr=0.001,seed=1` for base `train` and values `{lr: 0.001, seed: 1}`. */
export function variantName(base: string, values: VariantValues): string {
  const parts = Object.entries(values).map(([k, v]) => `${k}=${formatValue(v)}`);
  return parts.length === 0 ? base : `${base}@${parts.join(",")}`;
}

/**
 * The combinations of a `sweep:` mapping, or the problems that prevent them: not a mapping, a value
 * that is not a non-empty list, values that are not path-safe scalars or that repeat, two keys that
 * shorten to the same name, an invalid `seed`, or too many variants. Key paths are checked against
 * the stage schema by the caller (`isKnownPath`).
 */
export function sweepCombos(
  sweep: unknown,
  isKnownPath: (path: string[]) => string | undefined,
): { combos: SweepCombo[]; problems: SweepProblem[] } {
  const problems: SweepProblem[] = [];
  if (sweep === null || typeof sweep !== "object" || Array.isArray(sweep)) {
    return { combos: [], problems: [{ message: "sweep must be a mapping of key paths to lists of values" }] };
  }
  const entries = Object.entries(sweep as Record<string, unknown>);
  if (entries.length === 0) problems.push({ message: "sweep is empty: give at least one key path and its values" });
  const short = new Map<string, string>();
  const axes: { key: string; path: string[]; short: string; values: unknown[] }[] = [];
  for (const [key, values] of entries) {
    const path = key.split(".");
    if (path.some((s) => s === "")) {
      problems.push({ key, message: `malformed key path "${key}": expected keys joined by dots` });
      continue;
    }
    if (key !== "seed") {
      const why = isKnownPath(path);
      if (why !== undefined) {
        problems.push({ key, message: why });
        continue;
      }
    }
    const s = path[path.length - 1]!;
    const other = short.get(s);
    if (other !== undefined) {
      problems.push({ key, message: `sweep keys "${other}" and "${key}" both shorten to "${s}" in variant names` });
      continue;
    }
    short.set(s, key);
    if (!Array.isArray(values) || values.length === 0) {
      problems.push({
        key,
        message: Array.isArray(values)
          ? `sweep "${key}" has an empty list: give at least one value`
          : `sweep "${key}" must be a list of values, e.g. [0.001, 0.003]`,
      });
      continue;
    }
    const seen = new Map<string, number>();
    values.forEach((v, i) => {
      const f = formatValue(v);
      if (f === undefined) {
        problems.push({
          key,
          index: i,
          message: `sweep "${key}" value ${JSON.stringify(v)} cannot be part of a stage name: use numbers, ` +
            `booleans or strings of letters, digits, . _ + -`,
        });
      } else if (seen.has(f)) {
        problems.push({ key, index: i, message: `sweep "${key}" repeats the value ${f} (item ${seen.get(f)})` });
      } else seen.set(f, i);
      if (key === "seed" && !(Number.isInteger(v) && (v as number) >= 0)) {
        problems.push({
          key,
          index: i,
          message: `sweep "seed" values must be non-negative integers, got ${JSON.stringify(v)}`,
        });
      }
    });
    axes.push({ key, path, short: s, values });
  }
  const total = axes.reduce((n, a) => n * a.values.length, 1);
  if (total > MAX_VARIANTS) {
    problems.push({ message: `sweep makes ${total} variants; at most ${MAX_VARIANTS} per stage` });
  }
  if (problems.length > 0) return { combos: [], problems };
  let combos: SweepCombo[] = [{ values: {}, assignments: [] }];
  for (const a of axes) {
    const next: SweepCombo[] = [];
    for (const c of combos) {
      for (const [index, v] of a.values.entries()) {
        const combo: SweepCombo = {
          values: { ...c.values, [a.short]: v },
          assignments: a.key === "seed"
            ? c.assignments
            : [...c.assignments, { path: a.path, value: v, key: a.key, index }],
        };
        const seed = a.key === "seed" ? v as number : c.seed;
        if (seed !== undefined) combo.seed = seed;
        next.push(combo);
      }
    }
    combos = next;
  }
  return { combos, problems };
}

/** A deep copy of `item` with `value` set at `path`, creating mappings along the way. */
export function setPath(item: Record<string, unknown>, path: string[], value: unknown): void {
  let o: Record<string, unknown> = item;
  for (const seg of path.slice(0, -1)) {
    const next = o[seg];
    if (next === null || typeof next !== "object" || Array.isArray(next)) o[seg] = {};
    o = o[seg] as Record<string, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

/** `value` with every string equal to a key of `renames` replaced by its value (a deep copy). */
export function renameRefs(value: unknown, renames: Map<string, string>): unknown {
  if (typeof value === "string") return renames.get(value) ?? value;
  if (Array.isArray(value)) return value.map((v) => renameRefs(v, renames));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renameRefs(v, renames)]));
  }
  return value;
}

/** An expanded stage as downstream stages see it: its name and the variant values it carries. */
export interface Expanded {
  name: string;
  values: VariantValues;
  seed?: number;
}

/**
 * The variants a downstream stage fans out into from its swept inputs: the natural join of the
 * inputs' variant lists (variants that agree on every key they share). Each result says which
 * variant of each input it consumes.
 */
export function joinVariants(
  inputs: { base: string; variants: Expanded[] }[],
): { values: VariantValues; seed?: number; pick: Map<string, string> }[] {
  let rows: { values: VariantValues; seed?: number; pick: Map<string, string> }[] = [{ values: {}, pick: new Map() }];
  for (const inp of inputs) {
    const next: typeof rows = [];
    for (const r of rows) {
      for (const v of inp.variants) {
        const agree = Object.entries(v.values).every(([k, x]) => !(k in r.values) || r.values[k] === x);
        if (!agree) continue;
        const row: (typeof rows)[number] = {
          values: { ...r.values, ...v.values },
          pick: new Map([...r.pick, [inp.base, v.name]]),
        };
        const seed = v.seed ?? r.seed;
        if (seed !== undefined) row.seed = seed;
        next.push(row);
      }
    }
    rows = next;
  }
  return rows;
}
