/**
 * The token data a stage reads: its `data:` config (stages/_schemas.ts `DataSchema`) opened as a
 * `TokenDataset`, from a prepared token file or from a corpus tokenized here (and cached under a key
 * of the tokenizer). One place for the stages (fine-tune, group, router-train / adapt, eval) and the
 * benches that read a stage's data the way the stage does.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { TokenDataset } from "../text/dataset.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import type { DataConfig } from "./_schemas.ts";

/** sha256 over a tokenizer's files (names and contents, by name): keys the token cache by content. */
export function tokenizerFilesKey(files: Record<string, Uint8Array | string>): string {
  const h = createHash("sha256");
  for (const name of Object.keys(files).sort()) h.update(name).update("\0").update(files[name]!).update("\0");
  return h.digest("hex");
}

/** How `openTokenData` resolves and tokenizes. */
export interface TokenDataOptions {
  /** What relative paths (`tokens_file`, `corpus.files`) are resolved against: the config's folder. */
  baseDir: string;
  tokenizer: Tokenizer;
  /** Identifies the tokenizer in the token cache's key (`tokenizerFilesKey`); optional. */
  tokenizerKey?: string;
  /** The pipeline's seed (the corpus's train / validation split). */
  seed: number;
  /** The token cache's folder (default `<repo>/.cache/tokens`); false: no cache. */
  cacheDir?: string | false;
  log?: (msg: string) => void;
}

/** `d` as a TokenDataset: its token file, else its corpus tokenized with `o.tokenizer`. */
export function openTokenData(d: DataConfig, o: TokenDataOptions): TokenDataset {
  if (d.tokens_file) {
    return TokenDataset.fromCacheFile(resolve(o.baseDir, d.tokens_file), { padId: o.tokenizer.eosId ?? 0 });
  }
  return TokenDataset.fromCorpus({
    spec: d.corpus!,
    baseDir: o.baseDir,
    tokenizer: o.tokenizer,
    tokenizerKey: o.tokenizerKey,
    valFraction: d.val_fraction,
    seed: o.seed,
    addBos: d.add_bos,
    cacheDir: o.cacheDir,
    log: o.log,
  });
}
