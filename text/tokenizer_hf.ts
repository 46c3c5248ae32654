/**
 * HF tokenizers `tokenizer.json` files with a BPE model: SentencePiece-style ones (LLaMA-2: ▁ normalizer,
 * byte_fallback) and byte-level ones (GPT-2 / RoBERTa style: ByteLevel pre-tokenizer + decoder).
 *
 * encode(text): split out added tokens (`added_tokens`, e.g. "<s>") -> per remaining section: normalizer ->
 * pre_tokenizer -> per word: BPE model (chars -> ids, byte fallback / unk, merges; cached per word) -> optional
 * BOS/EOS from the post_processor. decode(ids): ids -> token strings -> decoder chain (e.g. Replace ▁→" ",
 * ByteFallback, Fuse, Strip) -> concatenated.
 *
 * Supported components (anything else is a TokenizerError naming the file and JSON key):
 *   model:          BPE (vocab; merges as "a b" strings or [a, b] pairs; unk_token, fuse_unk, byte_fallback,
 *                   ignore_merges)
 *   normalizer:     Sequence, Prepend, Replace (String or Regex), NFC, NFD, NFKC, NFKD, Lowercase, Strip
 *   pre_tokenizer:  ByteLevel, Metaspace, Split (Isolated/Removed/MergedWithPrevious/MergedWithNext), Sequence
 *   post_processor: TemplateProcessing, ByteLevel (no-op for ids), Sequence
 *   decoder:        Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace
 * BOS/EOS: from tokenizer_config.json next to tokenizer.json (bos_token / eos_token) when present, else from the
 * TemplateProcessing template, else from well-known names ("<s>", "</s>", "<|endoftext|>", ...).
 *
 * Speed: when no merge can produce a token with "▁" right after another character (true for SentencePiece BPE,
 * where pieces only start with ▁), a word is BPE'd in independent "▁…" segments, which gives the same result as
 * BPE over the whole word but can be cached per segment. (LLaMA-2's file has no pre_tokenizer, so without this
 * every input section would be one huge word.)
 */

import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import type { DecodeOptions, EncodeOptions, HfSpec, Tokenizer } from "./types.ts";
import { checkId, readJsonFile, requireId, show, TokenizerError } from "./_errors.ts";
import { bpeMerge, MergeTable, utf8Bytes, WordCache } from "./_bpe.ts";
import { BYTE_TO_CHAR, byteLevelToBytes, GPT2_PATTERN, utf8Decode } from "./_byte_level.ts";
import { type AddedToken, SpecialSplitter } from "./_special.ts";

type Normalizer = (s: string) => string;
/** Splits a normalized section into words. `first`: the section starts at the beginning of the input. */
type PreTokenizer = (s: string, first: boolean) => string[];
type Decoder = (tokens: string[]) => string[];

type Obj = Record<string, unknown>;

const BOS_NAMES = ["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
const EOS_NAMES = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];
/** Words longer than this are not cached (they are rarely repeated and would bloat the cache). */
const MAX_CACHED_WORD = 256;
/** Splits a word before every "▁" that follows a non-"▁" character. */
const METASPACE_SEGMENTS = /▁+[^▁]*|[^▁]+/gu;

/** Reads typed values out of parsed JSON, with errors that name the file and key path. */
class JsonReader {
  constructor(readonly file: string) {}

  fail(key: string, message: string): never {
    throw new TokenizerError(this.file, key, message);
  }
  obj(v: unknown, key: string): Obj {
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(key, `must be an object, got ${show(v)}`);
    return v as Obj;
  }
  arr(v: unknown, key: string): unknown[] {
    if (!Array.isArray(v)) this.fail(key, `must be an array, got ${show(v)}`);
    return v;
  }
  str(v: unknown, key: string): string {
    if (typeof v !== "string") this.fail(key, `must be a string, got ${show(v)}`);
    return v;
  }
  optStr(v: unknown, key: string): string | undefined {
    return v === undefined || v === null ? undefined : this.str(v, key);
  }
  bool(v: unknown, key: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.fail(key, `must be true or false, got ${show(v)}`);
    return v;
  }
  int(v: unknown, key: string): number {
    if (!Number.isInteger(v) || (v as number) < 0) this.fail(key, `must be a non-negative integer, got ${show(v)}`);
    return v as number;
  }
  type(o: Obj, key: string, supported: readonly string[]): string {
    const t = o.type;
    if (typeof t !== "string") this.fail(`${key}.type`, `must be a string, got ${show(t)}`);
    if (!supported.includes(t)) {
      this.fail(`${key}.type`, `${show(t)} is not supported (supported: ${supported.join(", ")})`);
    }
    return t;
  }
  /** A `{ "String": "…" }` pattern (returned as the literal string) or `{ "Regex": "…" }` (as a global RegExp). */
  pattern(v: unknown, key: string): string | RegExp {
    const p = this.obj(v, key);
    if (typeof p.String === "string") {
      if (p.String.length === 0) this.fail(`${key}.String`, "must not be empty");
      return p.String;
    }
    if (typeof p.Regex === "string") {
      try {
        return new RegExp(p.Regex, "gu");
      } catch (e) {
        this.fail(
          `${key}.Regex`,
          `${show(p.Regex)} is not a regular expression JavaScript understands: ${(e as Error).message}`,
        );
      }
    }
    this.fail(key, `must be {"String": "..."} or {"Regex": "..."}, got ${show(v)}`);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
}

/** Replaces every match of `pattern` with the literal text `content` (never a "$1"-style template). */
function replaceAll(s: string, pattern: string | RegExp, content: string): string {
  return typeof pattern === "string" ? s.split(pattern).join(content) : s.replace(pattern, () => content);
}

export class HfBpeTokenizer implements Tokenizer {
  readonly kind = "hf-bpe" as const;
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;

  private readonly vocab = new Map<string, number>();
  private readonly idToToken: (string | undefined)[] = [];
  private readonly specialIds = new Set<number>();
  private readonly merges: MergeTable;
  private readonly unkId?: number;
  private readonly fuseUnk: boolean;
  private readonly ignoreMerges: boolean;
  /** byteIds[b] = id of "<0xHH>", or -1; null when byte_fallback is off. */
  private readonly byteIds: Int32Array | null;
  private readonly segmentAtMetaspace: boolean;
  private readonly normalize: Normalizer;
  private readonly preTokenize: PreTokenizer;
  private readonly decoder: Decoder;
  private readonly prefixIds: number[] = [];
  private readonly suffixIds: number[] = [];
  private readonly splitter: SpecialSplitter;
  private readonly cache = new WordCache();
  /** charIds[c] = 1 + vocab id of the BMP character c, -1 if absent, 0 if not looked up yet. */
  private readonly charIds = new Int32Array(0x10000);

  static fromFile(file: string, spec: HfSpec): HfBpeTokenizer {
    const json = readJsonFile(file, "HF tokenizer.json");
    const configFile = join(dirname(file), "tokenizer_config.json");
    const config = existsSync(configFile) ? readJsonFile(configFile, "HF tokenizer_config.json") : undefined;
    return new HfBpeTokenizer(json, spec, file, config, configFile);
  }

  /** `json`: a parsed tokenizer.json; `config`: an optional parsed tokenizer_config.json (for bos/eos names). */
  constructor(
    json: unknown,
    private readonly spec: HfSpec,
    readonly file = "tokenizer.json",
    config?: unknown,
    configFile = "tokenizer_config.json",
  ) {
    const J: JsonReader = new JsonReader(file);
    const root = J.obj(json, "(top level)");

    // ---- model ----
    const model = J.obj(root.model, "model");
    if (model.type !== undefined) J.type(model, "model", ["BPE"]);
    for (const k of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (model[k] !== undefined && model[k] !== null && model[k] !== "") {
        J.fail(`model.${k}`, `${show(model[k])} is not supported (only null)`);
      }
    }
    if (model.dropout !== undefined && model.dropout !== null && model.dropout !== 0) {
      J.fail("model.dropout", `${show(model.dropout)} is not supported (BPE dropout is for training; use null)`);
    }
    const vocab = J.obj(model.vocab, "model.vocab");
    for (const [tok, idv] of Object.entries(vocab)) {
      const id = J.int(idv, `model.vocab[${show(tok)}]`);
      this.vocab.set(tok, id);
      this.idToToken[id] = tok;
    }
    const mergeList = J.arr(model.merges, "model.merges");
    this.merges = new MergeTable(mergeList.length);
    mergeList.forEach((m, i) => {
      const key = `model.merges[${i}]`;
      let a: string, b: string;
      if (typeof m === "string") {
        const parts = m.split(" ");
        if (parts.length !== 2) J.fail(key, `${show(m)} is not a merge (expected "left right")`);
        [a, b] = parts as [string, string];
      } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
        [a, b] = m as [string, string];
      } else {
        J.fail(key, `${show(m)} is not a merge (expected "left right" or ["left", "right"])`);
      }
      const ia = this.vocab.get(a), ib = this.vocab.get(b), ir = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined || ir === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : a + b;
        J.fail(key, `merges into ${show(a + b)} but ${show(missing)} is not in model.vocab`);
      }
      this.merges.add(ia, ib, i, ir);
    });
    const unk = J.optStr(model.unk_token, "model.unk_token");
    if (unk !== undefined) {
      this.unkId = this.vocab.get(unk);
      if (this.unkId === undefined) J.fail("model.unk_token", `${show(unk)} is not in model.vocab`);
    }
    this.fuseUnk = J.bool(model.fuse_unk, "model.fuse_unk", false);
    this.ignoreMerges = J.bool(model.ignore_merges, "model.ignore_merges", false);
    if (J.bool(model.byte_fallback, "model.byte_fallback", false)) {
      this.byteIds = new Int32Array(256);
      for (let b = 0; b < 256; b++) {
        this.byteIds[b] = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`) ?? -1;
      }
    } else {
      this.byteIds = null;
    }
    this.segmentAtMetaspace = this.vocab.has("▁") &&
      !mergeList.some((m) => /[^▁]▁/u.test(typeof m === "string" ? m.replace(" ", "") : (m as string[]).join("")));

    // ---- added tokens ----
    const added: AddedToken[] = [];
    J.arr(root.added_tokens ?? [], "added_tokens").forEach((t, i) => {
      const key = `added_tokens[${i}]`;
      const o = J.obj(t, key);
      const tok: AddedToken = {
        id: J.int(o.id, `${key}.id`),
        content: J.str(o.content, `${key}.content`),
        special: J.bool(o.special, `${key}.special`, false),
        lstrip: J.bool(o.lstrip, `${key}.lstrip`, false),
        rstrip: J.bool(o.rstrip, `${key}.rstrip`, false),
        singleWord: J.bool(o.single_word, `${key}.single_word`, false),
      };
      if (tok.content.length === 0) J.fail(`${key}.content`, "must not be empty");
      const existing = this.idToToken[tok.id];
      if (existing !== undefined && existing !== tok.content) {
        J.fail(`${key}.id`, `${tok.id} is already ${show(existing)} in model.vocab`);
      }
      this.idToToken[tok.id] = tok.content;
      this.vocab.set(tok.content, tok.id);
      if (tok.special) this.specialIds.add(tok.id);
      added.push(tok);
    });
    this.splitter = new SpecialSplitter(added);
    this.vocabSize = this.idToToken.length;

    // ---- pipeline components ----
    this.normalize = this.parseNormalizer(J, root.normalizer, "normalizer");
    this.preTokenize = this.parsePreTokenizer(J, root.pre_tokenizer, "pre_tokenizer");
    this.decoder = this.parseDecoder(J, root.decoder, "decoder");
    this.parsePostProcessor(J, root.post_processor, "post_processor");

    // ---- BOS / EOS ----
    const C: JsonReader = new JsonReader(configFile);
    const cfg = config === undefined ? {} : C.obj(config, "(top level)");
    const fromConfig = (k: string): number | undefined => {
      const v = cfg[k];
      if (v === undefined || v === null) return undefined;
      const name = typeof v === "object" ? C.str((v as Obj).content, `${k}.content`) : C.str(v, k);
      const id = this.vocab.get(name);
      if (id === undefined) C.fail(k, `${show(name)} is not a token of ${file}`);
      return id;
    };
    const byName = (names: string[]) => names.map((n) => this.vocab.get(n)).find((id) => id !== undefined);
    this.bosId = fromConfig("bos_token") ?? this.prefixIds[0] ?? byName(BOS_NAMES);
    this.eosId = fromConfig("eos_token") ?? this.suffixIds[this.suffixIds.length - 1] ?? byName(EOS_NAMES);
  }

  // ---------------------------------------------------------------- parsing

  private parseNormalizer(J: JsonReader, v: unknown, key: string): Normalizer {
    if (v === undefined || v === null) return (s) => s;
    const o = J.obj(v, key);
    const t = J.type(o, key, ["Sequence", "Prepend", "Replace", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip"]);
    switch (t) {
      case "Sequence": {
        const parts = J.arr(o.normalizers, `${key}.normalizers`).map((n, i) =>
          this.parseNormalizer(J, n, `${key}.normalizers[${i}]`)
        );
        return (s) => parts.reduce((acc, f) => f(acc), s);
      }
      case "Prepend": {
        const p = J.str(o.prepend, `${key}.prepend`);
        return (s) => (s.length > 0 ? p + s : s);
      }
      case "Replace": {
        const re = J.pattern(o.pattern, `${key}.pattern`);
        const content = J.str(o.content, `${key}.content`);
        return (s) => replaceAll(s, re, content);
      }
      case "NFC":
      case "NFD":
      case "NFKC":
      case "NFKD":
        return (s) => s.normalize(t);
      case "Lowercase":
        return (s) => s.toLowerCase();
      case "Strip": {
        const left = J.bool(o.strip_left, `${key}.strip_left`, true);
        const right = J.bool(o.strip_right, `${key}.strip_right`, true);
        return (s) => (left && right ? s.trim() : left ? s.trimStart() : right ? s.trimEnd() : s);
      }
    }
    throw new Error("unreachable");
  }

  private parsePreTokenizer(J: JsonReader, v: unknown, key: string): PreTokenizer {
    if (v === undefined || v === null) return (s) => [s];
    const o = J.obj(v, key);
    const t = J.type(o, key, ["ByteLevel", "Metaspace", "Split", "Sequence"]);
    switch (t) {
      case "Sequence": {
        const parts = J.arr(o.pretokenizers, `${key}.pretokenizers`).map((p, i) =>
          this.parsePreTokenizer(J, p, `${key}.pretokenizers[${i}]`)
        );
        return (s, first) => {
          let words = [s];
          for (const f of parts) words = words.flatMap((w, i) => f(w, first && i === 0));
          return words;
        };
      }
      case "ByteLevel": {
        const prefix = J.bool(o.add_prefix_space, `${key}.add_prefix_space`, true);
        const useRegex = J.bool(o.use_regex, `${key}.use_regex`, true);
        return (s) => {
          if (prefix && !s.startsWith(" ")) s = " " + s;
          const words = useRegex ? (s.match(GPT2_PATTERN) ?? []) : [s];
          return words.map(toByteLevel);
        };
      }
      case "Metaspace": {
        const rep = J.str(o.replacement ?? "▁", `${key}.replacement`);
        const scheme = metaspaceScheme(J, o, key);
        const split = J.bool(o.split, `${key}.split`, true);
        return (s, first) => {
          s = s.replaceAll(" ", rep);
          if ((scheme === "always" || (scheme === "first" && first)) && !s.startsWith(rep)) s = rep + s;
          return split ? splitPieces(s, new RegExp(escapeRegExp(rep), "gu"), "MergedWithNext") : [s];
        };
      }
      case "Split": {
        const p = J.pattern(o.pattern, `${key}.pattern`);
        const re = typeof p === "string" ? new RegExp(escapeRegExp(p), "gu") : p;
        const behavior = J.str(o.behavior, `${key}.behavior`);
        const ok = ["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"];
        if (!ok.includes(behavior)) {
          J.fail(`${key}.behavior`, `${show(behavior)} is not supported (supported: ${ok.join(", ")})`);
        }
        if (J.bool(o.invert, `${key}.invert`, false)) J.fail(`${key}.invert`, "true is not supported");
        return (s) => splitPieces(s, re, behavior);
      }
    }
    throw new Error("unreachable");
  }

  private parseDecoder(J: JsonReader, v: unknown, key: string): Decoder {
    // Without a decoder, HF joins tokens with spaces.
    if (v === undefined || v === null) return (tokens) => [tokens.join(" ")];
    const o = J.obj(v, key);
    const t = J.type(o, key, ["Sequence", "Replace", "ByteFallback", "Fuse", "Strip", "ByteLevel", "Metaspace"]);
    switch (t) {
      case "Sequence": {
        const parts = J.arr(o.decoders, `${key}.decoders`).map((d, i) =>
          this.parseDecoder(J, d, `${key}.decoders[${i}]`)
        );
        return (tokens) => parts.reduce((acc, f) => f(acc), tokens);
      }
      case "Replace": {
        const re = J.pattern(o.pattern, `${key}.pattern`);
        const content = J.str(o.content, `${key}.content`);
        return (tokens) => tokens.map((tok) => replaceAll(tok, re, content));
      }
      case "ByteFallback":
        return byteFallbackDecode;
      case "Fuse":
        return (tokens) => [tokens.join("")];
      case "Strip": {
        const content = J.str(o.content, `${key}.content`);
        const start = J.int(o.start ?? 0, `${key}.start`);
        const stop = J.int(o.stop ?? 0, `${key}.stop`);
        return (tokens) => tokens.map((tok) => stripChars(tok, content, start, stop));
      }
      case "ByteLevel":
        return (tokens) => {
          const bytes: number[] = [];
          for (const tok of tokens) byteLevelToBytes(tok, bytes);
          return [utf8Decode(bytes)];
        };
      case "Metaspace": {
        const rep = J.str(o.replacement ?? "▁", `${key}.replacement`);
        const scheme = metaspaceScheme(J, o, key);
        return (tokens) =>
          tokens.map((tok, i) => {
            const s = tok.replaceAll(rep, " ");
            return i === 0 && scheme !== "never" && s.startsWith(" ") ? s.slice(1) : s;
          });
      }
    }
    throw new Error("unreachable");
  }

  private parsePostProcessor(J: JsonReader, v: unknown, key: string): void {
    if (v === undefined || v === null) return;
    const o = J.obj(v, key);
    const t = J.type(o, key, ["TemplateProcessing", "ByteLevel", "Sequence"]);
    if (t === "Sequence") {
      J.arr(o.processors, `${key}.processors`).forEach((p, i) =>
        this.parsePostProcessor(J, p, `${key}.processors[${i}]`)
      );
      return;
    }
    if (t === "ByteLevel") return; // only adjusts offsets
    const specials = J.obj(o.special_tokens ?? {}, `${key}.special_tokens`);
    let seenSequence = false;
    J.arr(o.single, `${key}.single`).forEach((item, i) => {
      const ik = `${key}.single[${i}]`;
      const it = J.obj(item, ik);
      if (it.Sequence !== undefined) {
        seenSequence = true;
        return;
      }
      const st = J.obj(it.SpecialToken, `${ik}.SpecialToken`);
      const name = J.str(st.id, `${ik}.SpecialToken.id`);
      let ids: number[];
      if (specials[name] !== undefined) {
        const sk = `${key}.special_tokens[${show(name)}]`;
        ids = J.arr(J.obj(specials[name], sk).ids, `${sk}.ids`).map((x, j) => J.int(x, `${sk}.ids[${j}]`));
      } else {
        const id = this.vocab.get(name);
        if (id === undefined) {
          J.fail(`${ik}.SpecialToken.id`, `${show(name)} is neither in ${key}.special_tokens nor in the vocabulary`);
        }
        ids = [id];
      }
      for (const id of ids) {
        if (this.idToToken[id] === undefined) {
          J.fail(`${ik}.SpecialToken.id`, `${show(name)} maps to id ${id}, which has no token`);
        }
      }
      (seenSequence ? this.suffixIds : this.prefixIds).push(...ids);
    });
  }

  // ---------------------------------------------------------------- encode / decode

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos) {
      if (this.prefixIds.length > 0) out.push(...this.prefixIds);
      else out.push(requireId(this.bosId, "bos", this.file));
    }
    const pieces = this.splitter.split(text, opts.allowSpecial ?? true);
    for (let p = 0; p < pieces.length; p++) {
      const piece = pieces[p]!;
      if (typeof piece === "number") {
        out.push(piece);
        continue;
      }
      for (const word of this.preTokenize(this.normalize(piece), p === 0)) {
        if (word.length === 0) continue;
        if (this.segmentAtMetaspace && word.length > 1) {
          METASPACE_SEGMENTS.lastIndex = 0;
          for (let m = METASPACE_SEGMENTS.exec(word); m !== null; m = METASPACE_SEGMENTS.exec(word)) {
            this.encodeWord(m[0], out);
          }
        } else {
          this.encodeWord(word, out);
        }
      }
    }
    if (opts.addEos) {
      if (this.suffixIds.length > 0) out.push(...this.suffixIds);
      else out.push(requireId(this.eosId, "eos", this.file));
    }
    return out;
  }

  /** Appends the BPE ids of one word (cached when short). */
  private encodeWord(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      ids = this.bpeWord(word);
      if (word.length <= MAX_CACHED_WORD) this.cache.set(word, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
  }

  private bpeWord(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const symbols: number[] = [];
    let lastWasUnk = false;
    for (let i = 0; i < word.length; i++) {
      const c = word.charCodeAt(i);
      const surrogatePair = c >= 0xd800 && c <= 0xdbff && i + 1 < word.length &&
        (word.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
      let id: number | undefined;
      let ch: string;
      if (surrogatePair) {
        ch = word.slice(i, i + 2);
        i++;
        id = this.vocab.get(ch);
      } else {
        // BMP characters: memoised per code unit (-1 = not in the vocabulary, 0 in the table = not looked up yet)
        const known = this.charIds[c]!;
        if (known !== 0) id = known > 0 ? known - 1 : undefined;
        else {
          id = this.vocab.get(String.fromCharCode(c));
          this.charIds[c] = id === undefined ? -1 : id + 1;
        }
        ch = id === undefined ? String.fromCharCode(c) : "";
      }
      if (id !== undefined) {
        symbols.push(id);
        lastWasUnk = false;
        continue;
      }
      if (this.byteIds !== null) {
        const ids = utf8Bytes(ch).map((b) => this.byteIds![b]!);
        if (ids.every((x) => x >= 0)) {
          symbols.push(...ids);
          lastWasUnk = false;
          continue;
        }
      }
      if (this.unkId === undefined) {
        throw new TokenizerError(
          this.file,
          "model.unk_token",
          `is not set and byte_fallback is off, so ${show(ch)} (U+${
            ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")
          }), which is not in model.vocab, cannot be encoded`,
        );
      }
      if (!(this.fuseUnk && lastWasUnk)) symbols.push(this.unkId);
      lastWasUnk = true;
    }
    return bpeMerge(this.merges, symbols);
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = checkId(ids, i, this.vocabSize, this.file);
      const tok = this.idToToken[id];
      if (tok === undefined) {
        throw new TokenizerError(this.file, `ids[${i}]`, `= ${id} has no token (a gap in the vocabulary)`);
      }
      if (opts.skipSpecial && this.specialIds.has(id)) continue;
      tokens.push(tok);
    }
    return this.decoder(tokens).join("");
  }

  tokenToString(id: number): string {
    const tok = this.idToToken[checkId([id], 0, this.vocabSize, this.file, "id")];
    if (tok === undefined) throw new TokenizerError(this.file, "id", `= ${id} has no token (a gap in the vocabulary)`);
    return tok;
  }

  /** Token id of a vocabulary string (e.g. "<s>", "▁Hello"), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  toJSON(): HfSpec {
    return { ...this.spec };
  }
}

// ---------------------------------------------------------------- helpers

function metaspaceScheme(J: JsonReader, o: Obj, key: string): "always" | "first" | "never" {
  if (o.prepend_scheme !== undefined && o.prepend_scheme !== null) {
    const s = J.str(o.prepend_scheme, `${key}.prepend_scheme`);
    if (s !== "always" && s !== "first" && s !== "never") {
      J.fail(`${key}.prepend_scheme`, `${show(s)} is not supported (supported: always, first, never)`);
    }
    return s;
  }
  return J.bool(o.add_prefix_space, `${key}.add_prefix_space`, true) ? "always" : "never";
}

function toByteLevel(word: string): string {
  let s = "";
  for (const b of utf8Bytes(word)) s += BYTE_TO_CHAR[b]!;
  return s;
}

/** Splits `s` around the matches of global regex `re`, the way HF's SplitDelimiterBehavior does. */
function splitPieces(s: string, re: RegExp, behavior: string): string[] {
  const out: string[] = [];
  let last = 0;
  let carry = ""; // MergedWithNext: the delimiter waiting for the next piece
  re.lastIndex = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    const before = s.slice(last, m.index);
    switch (behavior) {
      case "Isolated":
        if (before) out.push(before);
        out.push(m[0]);
        break;
      case "Removed":
        if (before) out.push(before);
        break;
      case "MergedWithPrevious":
        out.push(before + m[0]);
        break;
      case "MergedWithNext":
        if (carry + before) out.push(carry + before);
        carry = m[0];
        break;
    }
    last = m.index + m[0].length;
  }
  const rest = carry + s.slice(last);
  if (rest) out.push(rest);
  return out;
}

const FATAL_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/** HF ByteFallback decoder: runs of "<0xHH>" tokens become the text they encode, or one U+FFFD per byte if that
 * is not valid UTF-8. */
function byteFallbackDecode(tokens: string[]): string[] {
  const out: string[] = [];
  let bytes: number[] = [];
  const flush = () => {
    if (bytes.length === 0) return;
    try {
      out.push(FATAL_UTF8.decode(Uint8Array.from(bytes)));
    } catch {
      for (let i = 0; i < bytes.length; i++) out.push("\uFFFD");
    }
    bytes = [];
  };
  for (const tok of tokens) {
    const m = BYTE_TOKEN.exec(tok);
    if (m !== null) {
      bytes.push(parseInt(m[1]!, 16));
      continue;
    }
    flush();
    out.push(tok);
  }
  flush();
  return out;
}

/** HF Strip decoder: removes up to `start` leading and `stop` trailing occurrences of the character `content`. */
function stripChars(tok: string, content: string, start: number, stop: number): string {
  let a = 0, b = tok.length;
  for (let i = 0; i < start && tok.startsWith(content, a); i++) a += content.length;
  for (let i = 0; i < stop && b - content.length >= a && tok.startsWith(content, b - content.length); i++) {
    b -= content.length;
  }
  return tok.slice(a, b);
}
