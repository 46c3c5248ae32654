/**
 * Token datasets for language-model training: tokenize a corpus, split train/validation,
 * cache the token streams on disk, and serve deterministic, resumable batches.
 *
 * **Split rule.** With `>= 20` documents (DOC_SPLIT_MIN_DOCS) the split is by document: a document
 * goes to validation when `hashUnit("<seed>:<id>") < val_fraction` (if that leaves either side empty
 * while 0 < val_fraction < 1, the document with the lowest/highest score is moved). With fewer
 * documents (e.g. Moby Dick, one file) every document's token stream (EOS included) is cut at
 * `floor((1 - val_fraction) * length)`: the head goes to train, the tail to validation; the seed then
 * does not matter.
 *
 * **Token streams.** Each document is `encode(text)` (or `encode(prompt) ++ encode(completion)`),
 * optionally preceded by BOS (`addBos`), followed by EOS when the tokenizer has one; documents are
 * concatenated. Special-token text inside documents (e.g. a literal `<|endoftext|>`) is encoded as
 * plain text (`allowSpecial: false`). A loss mask marks tokens that count as targets (prompt tokens do not); it is
 * omitted when every token counts.
 *
 * **Packing.** With sequence length T, sequence k is stream tokens `[k*T, k*T + T + 1)`:
 * inputs = the first T, targets = the last T (so every token is a target exactly once). A target
 * that is masked or beyond the stream (padding) is IGNORE_INDEX (-100); padding inputs are EOS
 * (or 0). Train uses only full sequences (unless there is not even one); validation covers the
 * whole split, padding the last sequence.
 *
 * **Order.** Training batches draw sequences from an endless stream made of one permutation of
 * all train sequences per epoch (permutation = f(seed, epoch)); batch `s` is positions
 * `[s*B, (s+1)*B)` of that stream, so batch s is a pure function of (seed, B, T, s) and
 * `startStep` resumes exactly.
 *
 * **Cache.** `.cache/tokens/<key>.tok` (key = sha256 of corpus file contents and sizes, tokenizer
 * fingerprint, split parameters, format version). Layout (little-endian), 64-byte header:
 * `magic "LTETOK01" | u32 version | u32 vocab_size | u8 dtype_bytes (2: u16 when vocab <= 65535,
 * else 4: u32) | u8 flags (1 = has mask) | u8 split_mode (0 document, 1 token) | u8 0 |
 * u32 num_docs | u64 train_tokens | u64 val_tokens | u64 token_count | 16 bytes key` then train
 * tokens, val tokens, and (if flagged) train mask bytes, val mask bytes. File contents are hashed
 * rather than mtimes used, so a copied data directory still hits.
 *
 * @module
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import {
  type CorpusFile,
  type CorpusSpec,
  type Document,
  readDocuments,
  REPO_ROOT,
  resolveCorpusFiles,
} from "./corpus.ts";
import { hashUnit, permutation, sha256Hex } from "./_rng.ts";
import { writeFileAtomicSync } from "../io/atomic.ts";

export type { CorpusSpec, Document } from "./corpus.ts";

/** The structural shape of text/tokenizer.ts's Tokenizer that this module needs. */
export interface TokenizerLike {
  vocabSize: number;
  bosId?: number;
  eosId?: number;
  encode(text: string, opts?: { addBos?: boolean; addEos?: boolean; allowSpecial?: boolean }): number[];
  decode(ids: ArrayLike<number>): string;
}

/** Target value that the loss ignores. */
export const IGNORE_INDEX = -100;
/** At or above this many documents the split is by document, below it by token range. */
export const DOC_SPLIT_MIN_DOCS = 20;
/** Token cache format version. */
export const CACHE_VERSION = 1;
export const CACHE_MAGIC = "LTETOK01";
const HEADER_BYTES = 64;

/** A token stream; `mask[i] = 1` when token i counts as a target (null: all count). */
export interface TokenStream {
  tokens: Uint16Array | Uint32Array;
  mask: Uint8Array | null;
}

export type SplitMode = "document" | "token";

/** Result of tokenizing and splitting a corpus. */
export interface TokenizedCorpus {
  vocabSize: number;
  mode: SplitMode;
  numDocs: number;
  train: TokenStream;
  val: TokenStream;
}

function tokenArray(n: number, vocabSize: number): Uint16Array | Uint32Array {
  return vocabSize <= 65535 ? new Uint16Array(n) : new Uint32Array(n);
}

/** Tokens of one document and, for prompt/completion documents, the mask (0 on BOS and prompt). */
export function tokenizeDocument(
  doc: Document,
  tok: TokenizerLike,
  opts: { addBos?: boolean } = {},
): { tokens: number[]; mask: number[] | null } {
  const head = opts.addBos && tok.bosId !== undefined ? [tok.bosId] : [];
  const tail = tok.eosId !== undefined ? [tok.eosId] : [];
  if (doc.bytes) {
    // Raw bytes (encoding: bytes): ids 0..255 are the bytes themselves, only for the bytes tokenizer.
    if ((tok as { kind?: string }).kind !== "bytes") {
      throw new RangeError(`${doc.id}: data.corpus.encoding: bytes needs the bytes tokenizer`);
    }
    const tokens = [...head];
    for (let i = 0; i < doc.text.length; i++) tokens.push(doc.text.charCodeAt(i));
    tokens.push(...tail);
    return { tokens, mask: head.length > 0 ? tokens.map((_, i) => (i < head.length ? 0 : 1)) : null };
  }
  if (doc.prompt !== undefined && doc.completion !== undefined) {
    const p = tok.encode(doc.prompt, { addBos: false, addEos: false, allowSpecial: false });
    const c = tok.encode(doc.completion, { addBos: false, addEos: false, allowSpecial: false });
    const tokens = [...head, ...p, ...c, ...tail];
    const mask = tokens.map((_, i) => (i < head.length + p.length ? 0 : 1));
    return { tokens, mask };
  }
  const tokens = [...head, ...tok.encode(doc.text, { addBos: false, addEos: false, allowSpecial: false }), ...tail];
  // A leading BOS is never a useful target.
  return { tokens, mask: head.length > 0 ? tokens.map((_, i) => (i < head.length ? 0 : 1)) : null };
}

/** The validation score of a document id for a seed: in [0, 1); validation when < val_fraction. */
export function docSplitScore(id: string, seed: number): number {
  return hashUnit(`${seed}:${id}`);
}

/** Which documents go to validation (document-level split), by index. */
export function documentSplit(ids: string[], valFraction: number, seed: number): boolean[] {
  const scores = ids.map((id) => docSplitScore(id, seed));
  const isVal = scores.map((s) => s < valFraction);
  if (valFraction > 0 && valFraction < 1 && ids.length >= 2) {
    let lo = 0, hi = 0;
    scores.forEach((s, i) => {
      if (s < scores[lo]!) lo = i;
      if (s > scores[hi]!) hi = i;
    });
    if (!isVal.includes(true)) isVal[lo] = true;
    if (!isVal.includes(false)) isVal[hi] = false;
  }
  return isVal;
}

function checkFraction(valFraction: number): void {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(`val_fraction must be in [0, 1), got ${valFraction}`);
  }
}

/** Tokenizes documents and splits them by the module's rule (see the module doc). */
export function tokenizeCorpus(
  documents: Document[],
  tok: TokenizerLike,
  opts: { valFraction: number; seed: number; addBos?: boolean },
): TokenizedCorpus {
  checkFraction(opts.valFraction);
  const V = tok.vocabSize;
  const mode: SplitMode = documents.length >= DOC_SPLIT_MIN_DOCS ? "document" : "token";
  const isVal = mode === "document" ? documentSplit(documents.map((d) => d.id), opts.valFraction, opts.seed) : [];
  const parts: { train: number[][]; trainMask: (number[] | null)[]; val: number[][]; valMask: (number[] | null)[] } = {
    train: [],
    trainMask: [],
    val: [],
    valMask: [],
  };
  documents.forEach((doc, i) => {
    const { tokens, mask } = tokenizeDocument(doc, tok, { addBos: opts.addBos });
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new RangeError(`${doc.id}: tokenizer produced id ${t} outside [0, ${V})`);
      }
    }
    if (mode === "document") {
      (isVal[i] ? parts.val : parts.train).push(tokens);
      (isVal[i] ? parts.valMask : parts.trainMask).push(mask);
    } else {
      const cut = Math.floor((1 - opts.valFraction) * tokens.length);
      parts.train.push(tokens.slice(0, cut));
      parts.trainMask.push(mask ? mask.slice(0, cut) : null);
      parts.val.push(tokens.slice(cut));
      parts.valMask.push(mask ? mask.slice(cut) : null);
    }
  });
  const join = (chunks: number[][], masks: (number[] | null)[]): TokenStream => {
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const tokens = tokenArray(n, V);
    const anyMask = masks.some((m) => m !== null && m.includes(0));
    const mask = anyMask ? new Uint8Array(n).fill(1) : null;
    let o = 0;
    chunks.forEach((c, i) => {
      tokens.set(c, o);
      const m = masks[i];
      if (mask && m) mask.set(m, o);
      o += c.length;
    });
    return { tokens, mask };
  };
  return {
    vocabSize: V,
    mode,
    numDocs: documents.length,
    train: join(parts.train, parts.trainMask),
    val: join(parts.val, parts.valMask),
  };
}

// ---------------------------------------------------------------------------------------------
// Packing and batches

/** Number of T-token sequences of a stream: full ones only, or all with the last padded. */
export function sequenceCount(n: number, seqLen: number, pad: boolean): number {
  if (n < 2) return 0;
  return pad ? Math.ceil((n - 1) / seqLen) : Math.floor((n - 1) / seqLen);
}

/** Writes sequence k of `stream` into row `row` of inputs/targets (B*T row-major); returns counted targets. */
export function packSequence(
  stream: TokenStream,
  k: number,
  seqLen: number,
  inputs: Int32Array,
  targets: Int32Array,
  row: number,
  padId: number,
): number {
  const { tokens, mask } = stream;
  const n = tokens.length;
  const start = k * seqLen;
  const o = row * seqLen;
  let counted = 0;
  for (let j = 0; j < seqLen; j++) {
    const i = start + j;
    inputs[o + j] = i < n ? tokens[i]! : padId;
    const t = i + 1;
    if (t < n && (mask === null || mask[t] === 1)) {
      targets[o + j] = tokens[t]!;
      counted++;
    } else targets[o + j] = IGNORE_INDEX;
  }
  return counted;
}

/** One batch: B*T row-major int32 inputs and targets; `tokens` = number of targets that count. */
export interface Batch {
  inputs: Int32Array;
  targets: Int32Array;
  tokens: number;
  /** Global step index of this batch (training) or batch index (validation). */
  step: number;
  /** Epoch of the batch's first row (training). */
  epoch: number;
  /** Rows that hold data (validation's last batch may be partly padding). */
  rows: number;
}

export interface BatchOptions {
  batchSize: number;
  seqLen: number;
  seed?: number;
  /** Default true: a fresh permutation per epoch. false: sequences in order every epoch. */
  shuffle?: boolean;
  /** First step to yield (resume): the batches are identical to those a run from 0 yields at that step. */
  startStep?: number;
  /** Stop after this many batches (default: endless unless `epochs`). */
  steps?: number;
  /** Stop when `epochs` passes over the train sequences are done (a final partial batch is dropped). */
  epochs?: number;
}

/** Summary information about how a dataset was built. */
export interface DatasetInfo {
  mode: SplitMode;
  numDocs: number;
  cachePath?: string;
  cacheHit?: boolean;
  /** The corpus files it was made from (ids as in error messages), when known. */
  sources?: string[];
}

/** Train/validation token streams with deterministic batch iterators. */
export class TokenDataset {
  readonly vocabSize: number;
  readonly train: TokenStream;
  readonly val: TokenStream;
  readonly padId: number;
  info: DatasetInfo;
  private permCache: { key: string; perm: Uint32Array } | undefined;

  constructor(opts: { vocabSize: number; train: TokenStream; val: TokenStream; padId?: number; info?: DatasetInfo }) {
    this.vocabSize = opts.vocabSize;
    this.train = opts.train;
    this.val = opts.val;
    this.padId = opts.padId ?? 0;
    this.info = opts.info ?? { mode: "token", numDocs: 0 };
  }

  /** Builds from a tokenized corpus (`tokenizeCorpus` or a cache file). */
  static fromTokenized(t: TokenizedCorpus, opts: { padId?: number; info?: Partial<DatasetInfo> } = {}): TokenDataset {
    return new TokenDataset({
      vocabSize: t.vocabSize,
      train: t.train,
      val: t.val,
      padId: opts.padId,
      info: { mode: t.mode, numDocs: t.numDocs, ...opts.info },
    });
  }

  /**
   * Loads a corpus spec, tokenizes and splits it, through the token cache (see the module doc):
   * a valid cache file is used as is; a missing, stale or corrupt one is rebuilt (logged).
   */
  static fromCorpus(opts: FromCorpusOptions): TokenDataset {
    const { data, path, hit, sources } = loadOrBuildTokens(opts);
    return TokenDataset.fromTokenized(data, {
      padId: opts.tokenizer.eosId ?? 0,
      info: { cachePath: path, cacheHit: hit, sources },
    });
  }

  /** Loads a cache file written by `writeTokenCache` (e.g. by scripts/prepare_data.ts). */
  static fromCacheFile(path: string, opts: { padId?: number } = {}): TokenDataset {
    const r = readTokenCache(path);
    if (!r.ok) throw new Error(`${path}: not a usable token file: ${r.reason}`);
    return TokenDataset.fromTokenized(r.data, { padId: opts.padId, info: { cachePath: path, cacheHit: true } });
  }

  /** Train tokens / validation tokens. */
  get trainTokens(): number {
    return this.train.tokens.length;
  }
  get valTokens(): number {
    return this.val.tokens.length;
  }

  /**
   * Refuses a dataset too small to train and validate on at sequence length `seqLen`: the train
   * split needs `seqLen + 1` tokens (one full sequence) and the validation split 2 (one target), or
   * the run would "complete" with a NaN validation loss.
   *
   * @throws {RangeError} Naming the corpus files (or token file) and the sizes.
   */
  requireSequences(seqLen: number): void {
    if (this.trainTokens >= seqLen + 1 && this.valTokens >= 2) return;
    const src = this.info.sources?.length
      ? `corpus ${this.info.sources.slice(0, 5).join(", ")}${this.info.sources.length > 5 ? ", ..." : ""}`
      : this.info.cachePath ?? "the corpus";
    throw new RangeError(
      `data: ${src} is too short: ${this.trainTokens} train + ${this.valTokens} validation tokens, but one ` +
        `training sequence needs data.seq_len + 1 = ${seqLen + 1} tokens and validation at least 2; ` +
        `use a longer corpus, a smaller data.seq_len, or a larger data.val_fraction`,
    );
  }

  /** Sequences per epoch of a split at sequence length T. */
  numSequences(split: "train" | "val", seqLen: number): number {
    if (split === "val") return sequenceCount(this.val.tokens.length, seqLen, true);
    const n = this.train.tokens.length;
    return sequenceCount(n, seqLen, false) || sequenceCount(n, seqLen, true);
  }

  private epochPerm(n: number, seed: number, epoch: number, shuffle: boolean): Uint32Array | null {
    if (!shuffle) return null;
    const key = `lte-shuffle:${seed}:${epoch}:${n}`;
    if (this.permCache?.key !== key) this.permCache = { key, perm: permutation(n, key) };
    return this.permCache.perm;
  }

  /** Deterministic training batches (see the module doc); resumable with `startStep`. */
  *batches(opts: BatchOptions): Generator<Batch> {
    const { batchSize: B, seqLen: T } = opts;
    if (!(Number.isInteger(B) && B > 0 && Number.isInteger(T) && T > 0)) {
      throw new RangeError(`batchSize and seqLen must be positive integers`);
    }
    const seed = opts.seed ?? 0, shuffle = opts.shuffle ?? true;
    const n = this.numSequences("train", T);
    if (n === 0) {
      throw new RangeError(`train split has ${this.train.tokens.length} tokens: not enough for one sequence`);
    }
    const end = opts.epochs !== undefined ? Math.floor((opts.epochs * n) / B) : Infinity;
    let step = opts.startStep ?? 0;
    const stop = opts.steps !== undefined ? Math.min(end, step + opts.steps) : end;
    for (; step < stop; step++) {
      const inputs = new Int32Array(B * T), targets = new Int32Array(B * T);
      let tokens = 0;
      const first = step * B;
      for (let r = 0; r < B; r++) {
        const pos = first + r;
        const epoch = Math.floor(pos / n);
        const perm = this.epochPerm(n, seed, epoch, shuffle);
        const k = perm ? perm[pos % n]! : pos % n;
        tokens += packSequence(this.train, k, T, inputs, targets, r, this.padId);
      }
      yield { inputs, targets, tokens, step, epoch: Math.floor(first / n), rows: B };
    }
  }

  /** The whole validation split once, in order; the last batch is padded with ignored rows. */
  *valBatches(opts: { batchSize: number; seqLen: number }): Generator<Batch> {
    const { batchSize: B, seqLen: T } = opts;
    const n = this.numSequences("val", T);
    for (let b = 0; b * B < n; b++) {
      const inputs = new Int32Array(B * T).fill(this.padId), targets = new Int32Array(B * T).fill(IGNORE_INDEX);
      let tokens = 0, rows = 0;
      for (let r = 0; r < B && b * B + r < n; r++, rows++) {
        tokens += packSequence(this.val, b * B + r, T, inputs, targets, r, this.padId);
      }
      yield { inputs, targets, tokens, step: b, epoch: 0, rows };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Token cache

/** Options of `TokenDataset.fromCorpus`. */
export interface FromCorpusOptions {
  spec: CorpusSpec;
  /** Directory that relative paths in `spec.files` are resolved against (the config file's). */
  baseDir: string;
  tokenizer: TokenizerLike;
  /** A string that identifies the tokenizer (name + vocab hash); mixed with a probe fingerprint. */
  tokenizerKey?: string;
  valFraction: number;
  seed?: number;
  addBos?: boolean;
  /** Default `<repo>/.cache/tokens`; `false` disables the cache. */
  cacheDir?: string | false;
  log?: (msg: string) => void;
}

const PROBE = "The quick brown fox jumps over the lazy dog. 0123456789 \n\t  Ünïcödé 中文 🙂 <|endoftext|> it's";

/** A fingerprint of a tokenizer: vocab size, special ids, the encoding of a probe text, and `key`. */
export function tokenizerFingerprint(tok: TokenizerLike, key?: string): string {
  return sha256Hex(
    JSON.stringify({
      key: key ?? null,
      vocabSize: tok.vocabSize,
      bos: tok.bosId ?? null,
      eos: tok.eosId ?? null,
      probe: tok.encode(PROBE, { addBos: false, addEos: false, allowSpecial: false }),
    }),
  );
}

/** The cache key of a corpus + tokenizer + split parameters (hex sha256). */
export function tokenCacheKey(
  corpus: { files: CorpusFile[] },
  contents: Map<string, Uint8Array> | undefined,
  opts: FromCorpusOptions,
): string {
  const files = corpus.files.map((f) => {
    const bytes = contents?.get(f.path);
    return { id: f.id, format: f.format, size: bytes?.length ?? -1, sha256: bytes ? sha256Hex(bytes) : null };
  });
  return sha256Hex(JSON.stringify({
    v: CACHE_VERSION,
    files,
    jsonl_fields: opts.spec.jsonl_fields ?? null,
    tokenizer: tokenizerFingerprint(opts.tokenizer, opts.tokenizerKey),
    valFraction: opts.valFraction,
    seed: opts.seed ?? 0,
    addBos: opts.addBos ?? false,
    docSplitMin: DOC_SPLIT_MIN_DOCS,
    ...(opts.spec.encoding === "bytes" ? { encoding: "bytes" } : {}), // (absent: earlier keys stay valid)
  }));
}

/** Default cache directory: `<repo>/.cache/tokens`. */
export const DEFAULT_CACHE_DIR: string = join(REPO_ROOT, ".cache", "tokens");

function readBytes(path: string): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const buf = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, buf, done, Math.min(size - done, 1 << 30), done);
      if (n <= 0) throw new Error(`short read at ${done} of ${size} bytes`);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

function loadOrBuildTokens(
  opts: FromCorpusOptions,
): { data: TokenizedCorpus; path?: string; hit: boolean; sources: string[] } {
  const log = opts.log ?? ((m: string) => console.error(m));
  checkFraction(opts.valFraction);
  const files = resolveCorpusFiles(opts.spec, opts.baseDir);
  // Each file is read once: its bytes key the cache, and are parsed only on a miss.
  const build = (contents?: Map<string, Uint8Array>, missPath?: string) => {
    const documents = readDocuments(files, opts.spec, contents);
    if (missPath) {
      log(`token cache: miss; tokenizing ${documents.length} documents from ${files.length} files -> ${missPath}`);
    }
    return tokenizeCorpus(documents, opts.tokenizer, {
      valFraction: opts.valFraction,
      seed: opts.seed ?? 0,
      addBos: opts.addBos,
    });
  };
  const sources = files.map((f) => f.id);
  if (opts.cacheDir === false) return { data: build(), hit: false, sources };
  const contents = new Map(files.map((f) => [f.path, readBytes(f.path)]));
  const key = tokenCacheKey({ files }, contents, opts);
  const dir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
  const path = join(dir, `${key.slice(0, 32)}.tok`);
  const r = readTokenCache(path, { key, vocabSize: opts.tokenizer.vocabSize });
  if (r.ok) {
    log(`token cache: hit ${path} (${r.data.train.tokens.length} train + ${r.data.val.tokens.length} val tokens)`);
    return { data: r.data, path, hit: true, sources };
  }
  if (r.reason !== "missing") log(`token cache: ${path} is unusable (${r.reason}); rebuilding`);
  const data = build(contents, r.reason === "missing" ? path : undefined);
  try {
    mkdirSync(dir, { recursive: true });
    writeTokenCache(path, data, key);
  } catch (e) {
    log(`token cache: could not write ${path} (${(e as Error).message}); continuing without a cache`);
  }
  return { data, path, hit: false, sources };
}

/** Writes a token file atomically (temp file in the same directory, fsync, rename). */
export function writeTokenCache(path: string, data: TokenizedCorpus, key = ""): void {
  const V = data.vocabSize;
  const bytesPer = V <= 65535 ? 2 : 4;
  const conv = (t: Uint16Array | Uint32Array) => {
    const a = bytesPer === 2
      ? (t instanceof Uint16Array ? t : Uint16Array.from(t))
      : (t instanceof Uint32Array ? t : Uint32Array.from(t));
    return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  };
  const hasMask = data.train.mask !== null || data.val.mask !== null;
  const nTrain = data.train.tokens.length, nVal = data.val.tokens.length;
  const header = new Uint8Array(HEADER_BYTES);
  const dv = new DataView(header.buffer);
  header.set(new TextEncoder().encode(CACHE_MAGIC), 0);
  dv.setUint32(8, CACHE_VERSION, true);
  dv.setUint32(12, V, true);
  header[16] = bytesPer;
  header[17] = hasMask ? 1 : 0;
  header[18] = data.mode === "document" ? 0 : 1;
  dv.setUint32(20, data.numDocs, true);
  dv.setBigUint64(24, BigInt(nTrain), true);
  dv.setBigUint64(32, BigInt(nVal), true);
  dv.setBigUint64(40, BigInt(nTrain + nVal), true);
  if (key) header.set(hexBytes(key).subarray(0, 16), 48);
  const chunks = [header, conv(data.train.tokens), conv(data.val.tokens)];
  if (hasMask) {
    chunks.push(data.train.mask ?? new Uint8Array(nTrain).fill(1), data.val.mask ?? new Uint8Array(nVal).fill(1));
  }
  writeFileAtomicSync(path, chunks);
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(Math.floor(hex.length / 2));
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Reads and validates a token file; never throws: `{ok: false, reason}` on any problem ("missing" if absent). */
export function readTokenCache(
  path: string,
  expect: { key?: string; vocabSize?: number } = {},
): { ok: true; data: TokenizedCorpus } | { ok: false; reason: string } {
  let buf: Uint8Array;
  try {
    buf = readBytes(path);
  } catch (e) {
    return {
      ok: false,
      reason: (e as { code?: string }).code === "ENOENT" ? "missing" : `unreadable: ${(e as Error).message}`,
    };
  }
  try {
    if (buf.length < HEADER_BYTES) {
      return { ok: false, reason: `file is ${buf.length} bytes, shorter than the ${HEADER_BYTES}-byte header` };
    }
    const magic = new TextDecoder().decode(buf.subarray(0, 8));
    if (magic !== CACHE_MAGIC) return { ok: false, reason: `bad magic ${JSON.stringify(magic)}` };
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const version = dv.getUint32(8, true);
    if (version !== CACHE_VERSION) return { ok: false, reason: `version ${version}, expected ${CACHE_VERSION}` };
    const V = dv.getUint32(12, true);
    if (expect.vocabSize !== undefined && V !== expect.vocabSize) {
      return { ok: false, reason: `vocab size ${V}, expected ${expect.vocabSize}` };
    }
    const bytesPer = buf[16]!, flags = buf[17]!, modeByte = buf[18]!;
    if (bytesPer !== (V <= 65535 ? 2 : 4)) {
      return { ok: false, reason: `dtype of ${bytesPer} bytes does not match vocab size ${V}` };
    }
    if (flags > 1 || modeByte > 1) return { ok: false, reason: `bad flags ${flags} / split mode ${modeByte}` };
    const numDocs = dv.getUint32(20, true);
    const nTrain = Number(dv.getBigUint64(24, true)),
      nVal = Number(dv.getBigUint64(32, true)),
      total = Number(dv.getBigUint64(40, true));
    if (nTrain + nVal !== total) return { ok: false, reason: `token counts ${nTrain} + ${nVal} != ${total}` };
    if (expect.key !== undefined) {
      const want = hexBytes(expect.key).subarray(0, 16), got = buf.subarray(48, 64);
      if (!want.every((b, i) => b === got[i])) {
        return { ok: false, reason: "key mismatch (different corpus, tokenizer or split)" };
      }
    }
    const hasMask = flags === 1;
    const expected = HEADER_BYTES + total * bytesPer + (hasMask ? total : 0);
    if (buf.length !== expected) {
      return { ok: false, reason: `size ${buf.length} bytes, expected ${expected} for ${total} tokens` };
    }
    const ab = buf.buffer as ArrayBuffer; // readBytes allocates a fresh buffer: offset 0, aligned
    const Arr = bytesPer === 2 ? Uint16Array : Uint32Array;
    const train = new Arr(ab, HEADER_BYTES, nTrain);
    const val = new Arr(ab, HEADER_BYTES + nTrain * bytesPer, nVal);
    for (const arr of [train, val]) {
      for (let i = 0; i < arr.length; i++) {
        if (arr[i]! >= V) return { ok: false, reason: `token ${arr[i]} at ${i} is outside the vocabulary (${V})` };
      }
    }
    let trainMask: Uint8Array | null = null, valMask: Uint8Array | null = null;
    if (hasMask) {
      const o = HEADER_BYTES + total * bytesPer;
      trainMask = new Uint8Array(ab, o, nTrain);
      valMask = new Uint8Array(ab, o + nTrain, nVal);
      for (const m of [trainMask, valMask]) {
        for (let i = 0; i < m.length; i++) {
          if (m[i]! > 1) return { ok: false, reason: `mask byte ${m[i]} is not 0/1` };
        }
      }
    }
    return {
      ok: true,
      data: {
        vocabSize: V,
        mode: modeByte === 0 ? "document" : "token",
        numDocs,
        train: { tokens: train, mask: trainMask },
        val: { tokens: val, mask: valMask },
      },
    };
  } catch (e) {
    return { ok: false, reason: `unreadable: ${(e as Error).message}` };
  }
}

// ---------------------------------------------------------------------------------------------
// Baselines

/**
 * Perplexity of a unigram model fit on `train` with add-one (Laplace) smoothing, on `val`:
 * p(t) = (count(t) + 1) / (N + V); returns exp(mean over val of -ln p(t)).
 */
export function unigramPerplexity(train: ArrayLike<number>, val: ArrayLike<number>, vocabSize: number): number {
  if (val.length === 0) throw new RangeError("unigramPerplexity: empty validation tokens");
  const counts = new Float64Array(vocabSize);
  for (let i = 0; i < train.length; i++) {
    const t = train[i]!;
    if (!(t >= 0 && t < vocabSize)) {
      throw new RangeError(`unigramPerplexity: train token ${t} outside [0, ${vocabSize})`);
    }
    counts[t] = counts[t]! + 1;
  }
  const denom = Math.log(train.length + vocabSize);
  let nll = 0;
  for (let i = 0; i < val.length; i++) {
    const t = val[i]!;
    if (!(t >= 0 && t < vocabSize)) throw new RangeError(`unigramPerplexity: val token ${t} outside [0, ${vocabSize})`);
    nll += denom - Math.log(counts[t]! + 1);
  }
  return Math.exp(nll / val.length);
}
