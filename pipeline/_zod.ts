/** Zod schema introspection and issue wording for the config validator (internal). */
import type { z } from "zod";
import { didYouMean } from "./_suggest.ts";

/** A key path into the config, e.g. `["stages", 0, "optimizer", "lr"]`. */
export type KeyPath = (string | number)[];

export function isPlainObject(v: unknown): v is Record<string, any> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function plural(n: unknown, word: string): string {
  return Number(n) === 1 ? word : `${word}s`;
}

/** A YAML reader's description of a value: `string "fast"`, `number 3`, `a mapping`, `null`. */
export function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (typeof v === "string") return `string ${JSON.stringify(v)}`;
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${v}`;
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return typeof v;
}

const TYPE_NAMES: Record<string, string> = { object: "mapping", array: "list", int: "integer", record: "mapping" };

export function describeIssue(
  issue: z.core.$ZodIssue,
  value: unknown,
  present: boolean,
  key: string | number | undefined,
): { message: string; expected?: string } {
  const received = describe(value);
  const withReceived = (expected: string, hint = "") => ({
    message: `expected ${expected}, received ${received}${hint}`,
    expected,
  });
  switch (issue.code) {
    case "invalid_type": {
      const expected = TYPE_NAMES[issue.expected] ?? issue.expected;
      if (!present) return { message: `missing required key "${key}": expected ${expected}`, expected };
      if (issue.expected === "int" && typeof value === "number") return withReceived("integer");
      return withReceived(expected);
    }
    case "invalid_value": {
      const values = issue.values.map((x) => JSON.stringify(x));
      const strings = issue.values.filter((x): x is string => typeof x === "string");
      const hint = typeof value === "string" ? didYouMean(value, strings) : "";
      return withReceived(values.length === 1 ? values[0]! : `one of ${values.join(" | ")}`, hint);
    }
    case "too_small": {
      const op = issue.inclusive === false ? ">" : ">=";
      if (issue.origin === "array") return withReceived(`at least ${issue.minimum} ${plural(issue.minimum, "item")}`);
      if (issue.origin === "string") return withReceived(`a string of at least ${issue.minimum} characters`);
      return withReceived(`${issue.origin} ${op} ${issue.minimum}`);
    }
    case "too_big": {
      const op = issue.inclusive === false ? "<" : "<=";
      if (issue.origin === "array") return withReceived(`at most ${issue.maximum} ${plural(issue.maximum, "item")}`);
      if (issue.origin === "string") return withReceived(`a string of at most ${issue.maximum} characters`);
      return withReceived(`${issue.origin} ${op} ${issue.maximum}`);
    }
    case "invalid_format":
      return withReceived(
        issue.format === "regex" && "pattern" in issue ? `string matching ${issue.pattern}` : issue.format,
      );
    case "not_multiple_of":
      return withReceived(`a multiple of ${issue.divisor}`);
    case "invalid_union": {
      // A discriminated union whose discriminator (issue.path's last key) matches no option.
      const { options, discriminator } = issue as { options?: unknown[]; discriminator?: string };
      if (discriminator !== undefined && Array.isArray(options) && options.length > 0) {
        const values = options.map((x) => JSON.stringify(x));
        const expected = values.length === 1 ? values[0]! : `one of ${values.join(" | ")}`;
        if (!present) return { message: `missing required key "${key}": expected ${expected}`, expected };
        const strings = options.filter((x): x is string => typeof x === "string");
        return withReceived(expected, typeof value === "string" ? didYouMean(value, strings) : "");
      }
      return { message: issue.message.replace(/^Invalid input: /, "") };
    }
    default:
      return { message: issue.message.replace(/^Invalid input: /, "") };
  }
}

/** Unwrap default/optional/nullable/pipe/lazy wrappers down to the schema that holds structure. */
export function unwrap(schema: any): any {
  for (let i = 0; i < 20 && schema; i++) {
    const def = schema.def ?? schema._zod?.def;
    if (!def) return schema;
    switch (def.type) {
      case "default":
      case "prefault":
      case "optional":
      case "nullable":
      case "nonoptional":
      case "readonly":
      case "catch":
        schema = def.innerType;
        break;
      case "pipe":
        schema = def.in;
        break;
      case "lazy":
        schema = def.getter();
        break;
      default:
        return schema;
    }
  }
  return schema;
}

/**
 * The option of a union schema that governs `value`: for a discriminated union, the option whose
 * discriminator literal equals the value's; for a plain union, the option that accepts the value,
 * else the only option of the value's kind (mapping or list). Undefined when none fits.
 */
export function unionOption(union: any, value: unknown): any {
  const def = union?.def;
  const options: any[] = Array.isArray(def?.options) ? def.options : [];
  if (typeof def?.discriminator === "string") {
    if (!isPlainObject(value)) return undefined;
    const tag = value[def.discriminator];
    return options.find((o) => (o?._zod?.propValues?.[def.discriminator] as Set<unknown> | undefined)?.has(tag));
  }
  const accepting = options.find((o) => o?.safeParse?.(value).success);
  if (accepting) return accepting;
  const kind = isPlainObject(value) ? ["object", "record"] : Array.isArray(value) ? ["array"] : [];
  const sameKind = options.filter((o) => kind.includes(unwrap(o)?.def?.type));
  return sameKind.length === 1 ? sameKind[0] : undefined;
}

/** {@linkcode unwrap}, then resolve unions to the option that governs `value` (see {@linkcode unionOption}). */
function resolveSchema(schema: any, value: unknown): any {
  let s = unwrap(schema);
  for (let i = 0; i < 20 && s?.def?.type === "union"; i++) s = unwrap(unionOption(s, value));
  return s;
}

/**
 * The sub-schema at `path` under `schema`, through objects, records, arrays, tuples and unions. `value` is
 * the document at `schema` (when known): it picks the option of a union on the way (a
 * discriminated union's option by the value's discriminator).
 */
export function schemaAt(schema: z.ZodType, path: KeyPath, value?: unknown): z.ZodType | undefined {
  let s: any = schema;
  let v: any = value;
  for (const seg of path) {
    const u = resolveSchema(s, v);
    const t = u?.def?.type;
    if (t === "object") s = u.def.shape[seg] ?? (isOpenCatchall(u.def.catchall) ? u.def.catchall : undefined);
    else if (t === "record") s = u.def.valueType;
    else if (t === "array") s = u.def.element;
    else if (t === "tuple") s = u.def.items[seg as number] ?? u.def.rest;
    else return undefined;
    if (!s) return undefined;
    v = v !== null && typeof v === "object" ? v[seg] : undefined;
  }
  return s;
}

/** Keys of the object schema that governs `value` under `schema` (through wrappers and unions), if any. */
export function objectKeysAt(schema: unknown, value: unknown): string[] | undefined {
  const s = resolveSchema(schema, value);
  return s?.def?.type === "object" ? Object.keys(s.def.shape) : undefined;
}

export function isOpenCatchall(catchall: any): boolean {
  return catchall !== undefined && catchall?.def?.type !== "never";
}

/**
 * Keys in `value` that the schema does not declare, at every level of nested objects (a
 * `z.object()` would silently strip them; a `z.looseObject()`/`catchall` opts out). Unions are
 * checked against the option that governs the value (a discriminated union's by its discriminator).
 */
export function findUnknownKeys(
  schema: unknown,
  value: unknown,
  path: KeyPath,
  out: { path: KeyPath; key: string; allowed: string[] }[],
  extraAllowed: string[] = [],
): void {
  const s = resolveSchema(schema, value);
  const t = s?.def?.type;
  if (t === "object" && isPlainObject(value)) {
    const shape = s.def.shape as Record<string, unknown>;
    const allowed = [...extraAllowed, ...Object.keys(shape)];
    for (const [k, v] of Object.entries(value)) {
      if (Object.hasOwn(shape, k)) findUnknownKeys(shape[k], v, [...path, k], out);
      else if (!extraAllowed.includes(k) && !isOpenCatchall(s.def.catchall)) {
        out.push({ path: [...path, k], key: k, allowed });
      }
    }
  } else if (t === "array" && Array.isArray(value)) {
    value.forEach((v, i) => findUnknownKeys(s.def.element, v, [...path, i], out));
  } else if (t === "record" && isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) findUnknownKeys(s.def.valueType, v, [...path, k], out);
  }
}
