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

/** The sub-schema at `path` under `schema`, through objects, records and arrays. */
export function schemaAt(schema: z.ZodType, path: KeyPath): z.ZodType | undefined {
  let s: any = schema;
  for (const seg of path) {
    const u = unwrap(s);
    const t = u?.def?.type;
    if (t === "object") s = u.def.shape[seg] ?? (isOpenCatchall(u.def.catchall) ? u.def.catchall : undefined);
    else if (t === "record") s = u.def.valueType;
    else if (t === "array") s = u.def.element;
    else return undefined;
    if (!s) return undefined;
  }
  return s;
}

export function isOpenCatchall(catchall: any): boolean {
  return catchall !== undefined && catchall?.def?.type !== "never";
}

/**
 * Keys in `value` that the schema does not declare, at every level of nested objects (a
 * `z.object()` would silently strip them; a `z.looseObject()`/`catchall` opts out).
 */
export function findUnknownKeys(
  schema: unknown,
  value: unknown,
  path: KeyPath,
  out: { path: KeyPath; key: string; allowed: string[] }[],
  extraAllowed: string[] = [],
): void {
  const s = unwrap(schema);
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
