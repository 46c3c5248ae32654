import { readFileSync } from "node:fs";

/**
 * Error type shared by every tokenizer. `file` is the file (or "<spec>" for an inline spec) the problem was found
 * in, `key` is the JSON key path inside it (e.g. `model.merges[12]`) or the spec field; either may be empty when it
 * does not apply (e.g. an out-of-range id passed to decode()).
 */
export class TokenizerError extends Error {
  override name = "TokenizerError";
  readonly file: string;
  readonly key: string;

  constructor(file: string, key: string, message: string, options?: { cause?: unknown }) {
    const where = [file, key].filter((s) => s.length > 0);
    super(where.length > 0 ? `${file ? `${file}: ` : ""}${key ? `${key} ` : ""}${message}` : message, options);
    this.file = file;
    this.key = key;
  }
}

/** Pretty-print a value inside an error message: strings quoted, long values cut. */
export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Validates ids[i] (an integer in [0, vocabSize)) and returns it. */
export function checkId(ids: ArrayLike<number>, i: number, vocabSize: number, where: string, key?: string): number {
  const id = ids[i]!;
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new TokenizerError(where, key ?? `ids[${i}]`, `= ${id} is not a token id (vocabulary has ${vocabSize} ids)`);
  }
  return id;
}

export function requireId(id: number | undefined, which: "bos" | "eos", where: string): number {
  if (id === undefined) {
    throw new TokenizerError(
      where,
      which === "bos" ? "addBos" : "addEos",
      `was requested but this tokenizer has no ${which.toUpperCase()} token`,
    );
  }
  return id;
}

/** Reads a UTF-8 text file; a missing or unreadable file becomes a TokenizerError naming it. */
export function readTextFile(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why = code === "ENOENT"
      ? "file not found"
      : code === "EISDIR"
      ? "is a directory"
      : String((e as Error).message ?? e);
    throw new TokenizerError(file, "", `cannot read ${what}: ${why}`, { cause: e });
  }
}

/** Reads and parses a JSON file; errors name the file (and, for syntax errors, the parser's position). */
export function readJsonFile(file: string, what: string): unknown {
  const text = readTextFile(file, what);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(file, "", `is not valid JSON (${what}): ${(e as Error).message}`, { cause: e });
  }
}
