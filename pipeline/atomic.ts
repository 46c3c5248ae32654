/**
 * Crash-safe file writes and stable config hashing, used by the runner and by stages.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { dirname } from "node:path";
import { fsyncDir, tempPathFor } from "../io/atomic.ts";

/**
 * Write `data` to `path` so that readers see either the old file or the complete new one, never a
 * torn write: the data goes to a temporary file in the same folder (same file system), which is
 * fsynced and then renamed over `path`. The temporary file is removed if anything fails.
 *
 * @param path Destination file; its folder must exist.
 * @param data Text (written as UTF-8) or bytes.
 *
 * @example
 * ```ts
 * await writeFileAtomic(`${ctx.dir}/experts.json`, JSON.stringify(groups));
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = tempPathFor(path);
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  fsyncDir(dirname(path)); // make the rename itself durable
}

/**
 * Synchronous {@linkcode writeFileAtomic}, for the few places that cannot await (a signal handler
 * about to exit the process). The shared implementation of `io/atomic.ts`.
 */
export { writeFileAtomicSync } from "../io/atomic.ts";

/**
 * {@linkcode writeFileAtomic} for a JSON value: pretty-printed with two spaces and a final newline.
 *
 * @param path Destination file; its folder must exist.
 * @param value Any JSON-serialisable value.
 */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

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
