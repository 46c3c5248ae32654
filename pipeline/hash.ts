/**
 * Stable config hashing: canonical JSON (keys sorted at every level) and its SHA-256, the basis of
 * every stage's cache hash.
 *
 * @module
 */
import { createHash } from "node:crypto";

/**
 * JSON with object keys sorted at every level and no whitespace, so that equal values always give
 * equal strings (the basis of {@linkcode hashConfig}). `undefined` object entries are dropped, as
 * `JSON.stringify` does.
 *
 * @throws {TypeError} For values JSON cannot represent faithfully: NaN, Infinity, bigint, functions.
 *
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [true, null] }); // '{"a":[true,null],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value, "$"));
}

function sortKeys(v: unknown, path: string): unknown {
  if (v === null || typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError(`Cannot hash non-finite number at ${path}: ${v}`);
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => sortKeys(x === undefined ? null : x, `${path}[${i}]`));
  if (typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x, `${path}.${k}`);
    }
    return out;
  }
  throw new TypeError(`Cannot hash value of type ${typeof v} at ${path}`);
}

/**
 * The SHA-256 (lowercase hex) of {@linkcode canonicalJson}(value). Stages can use it to tag their
 * artifacts with the config that produced them.
 */
export function hashConfig(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}
