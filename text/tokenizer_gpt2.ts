/**
 * OpenAI GPT-2 byte-level BPE, loaded from the original encoder.json (token -> id) and vocab.bpe (merges, best
 * first) files.
 *
 * encode: split out "<|endoftext|>" -> pre-tokenize with the GPT-2 regex -> per pre-token: UTF-8 bytes -> the
 * byte-level character ids -> BPE merges (cached per pre-token). decode: concatenate each token's bytes and
 * decode them as UTF-8, so decode(encode(s)) === s for any well-formed string.
 */

import type { DecodeOptions, EncodeOptions, Gpt2Spec, Tokenizer } from "./types.ts";
import { checkId, readJsonFile, readTextFile, requireId, show, TokenizerError } from "./_errors.ts";
import { bpeMerge, MergeTable, utf8Bytes, WordCache } from "./_bpe.ts";
import { BYTE_TO_CHAR, byteLevelToBytes, GPT2_PATTERN, utf8Decode } from "./_byte_level.ts";
import { SpecialSplitter } from "./_special.ts";

export const GPT2_EOT = "<|endoftext|>";

export class Gpt2Tokenizer implements Tokenizer {
  readonly kind = "gpt2-bpe" as const;
  readonly vocabSize: number;
  /** GPT-2 uses <|endoftext|> both to start and to end documents. */
  readonly bosId?: number;
  readonly eosId?: number;

  private readonly idToToken: string[];
  private readonly idToBytes: Uint8Array[];
  private readonly byteIds: Int32Array;
  private readonly merges: MergeTable;
  private readonly cache = new WordCache();
  private readonly splitter: SpecialSplitter;
  private readonly specialIds = new Set<number>();

  static fromFiles(encoderFile: string, mergesFile: string, spec: Gpt2Spec): Gpt2Tokenizer {
    const encoder = readJsonFile(encoderFile, "GPT-2 encoder.json");
    const merges = readTextFile(mergesFile, "GPT-2 vocab.bpe");
    return new Gpt2Tokenizer(encoder, merges, spec, encoderFile, mergesFile);
  }

  constructor(
    encoder: unknown,
    mergesText: string,
    private readonly spec: Gpt2Spec,
    encoderFile = "encoder.json",
    mergesFile = "vocab.bpe",
  ) {
    if (typeof encoder !== "object" || encoder === null || Array.isArray(encoder)) {
      throw new TokenizerError(encoderFile, "", "must be a JSON object mapping token strings to ids");
    }
    const vocab = new Map<string, number>();
    const idToToken: string[] = [];
    for (const [tok, id] of Object.entries(encoder)) {
      if (!Number.isInteger(id) || (id as number) < 0) {
        throw new TokenizerError(encoderFile, show(tok), `has id ${show(id)}; ids must be non-negative integers`);
      }
      if (idToToken[id as number] !== undefined) {
        throw new TokenizerError(encoderFile, show(tok), `reuses id ${id} (already ${show(idToToken[id as number])})`);
      }
      vocab.set(tok, id as number);
      idToToken[id as number] = tok;
    }
    this.vocabSize = idToToken.length;
    for (let i = 0; i < idToToken.length; i++) {
      if (idToToken[i] === undefined) throw new TokenizerError(encoderFile, "", `has no token with id ${i}`);
    }
    this.idToToken = idToToken;

    this.byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      const id = vocab.get(BYTE_TO_CHAR[b]!);
      if (id === undefined) {
        throw new TokenizerError(
          encoderFile,
          show(BYTE_TO_CHAR[b]),
          `is missing: a byte-level vocabulary needs all 256 byte tokens (byte ${b})`,
        );
      }
      this.byteIds[b] = id;
    }

    const lines = mergesText.split("\n");
    this.merges = new MergeTable(lines.length);
    let rank = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.replace(/\r$/, "");
      if (line.length === 0 || (i === 0 && line.startsWith("#version"))) continue;
      const parts = line.split(" ");
      const key = `line ${i + 1}`;
      if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
        throw new TokenizerError(
          mergesFile,
          key,
          `${show(line)} is not a merge (expected two tokens separated by one space)`,
        );
      }
      const [a, b] = parts as [string, string];
      const ia = vocab.get(a), ib = vocab.get(b), ir = vocab.get(a + b);
      if (ia === undefined || ib === undefined || ir === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : a + b;
        throw new TokenizerError(
          mergesFile,
          key,
          `merge ${show(line)} uses ${show(missing)}, which is not in ${encoderFile}`,
        );
      }
      this.merges.add(ia, ib, rank++, ir);
    }

    this.idToBytes = idToToken.map((t) => {
      const bytes: number[] = [];
      byteLevelToBytes(t, bytes);
      return Uint8Array.from(bytes);
    });

    const eot = vocab.get(GPT2_EOT);
    if (eot !== undefined) {
      this.bosId = eot;
      this.eosId = eot;
      this.specialIds.add(eot);
      this.idToBytes[eot] = Uint8Array.from(utf8Bytes(GPT2_EOT));
    }
    this.splitter = new SpecialSplitter(eot === undefined ? [] : [{ content: GPT2_EOT, id: eot, special: true }]);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos) out.push(requireId(this.bosId, "bos", "gpt2"));
    for (const piece of this.splitter.split(text, opts.allowSpecial ?? true)) {
      if (typeof piece === "number") {
        out.push(piece);
        continue;
      }
      GPT2_PATTERN.lastIndex = 0;
      for (let m = GPT2_PATTERN.exec(piece); m !== null; m = GPT2_PATTERN.exec(piece)) {
        const ids = this.encodeWord(m[0]);
        for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
      }
    }
    if (opts.addEos) out.push(requireId(this.eosId, "eos", "gpt2"));
    return out;
  }

  /** BPE for one pre-token (cached). */
  private encodeWord(word: string): number[] {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      const bytes = utf8Bytes(word);
      for (let i = 0; i < bytes.length; i++) bytes[i] = this.byteIds[bytes[i]!]!;
      ids = bpeMerge(this.merges, bytes);
      this.cache.set(word, ids);
    }
    return ids;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    let total = 0;
    for (let i = 0; i < ids.length; i++) total += this.idToBytes[checkId(ids, i, this.vocabSize, "gpt2")]!.length;
    const buf = new Uint8Array(total);
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (opts.skipSpecial && this.specialIds.has(id)) continue;
      const b = this.idToBytes[id]!;
      buf.set(b, n);
      n += b.length;
    }
    return utf8Decode(buf.subarray(0, n));
  }

  tokenToString(id: number): string {
    return this.idToToken[checkId([id], 0, this.vocabSize, "gpt2", "id")]!;
  }

  toJSON(): Gpt2Spec {
    return { ...this.spec };
  }
}
