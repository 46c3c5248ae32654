/**
 * Splitting input text around added/special tokens (e.g. "<|endoftext|>", "<s>") before pre-tokenization and
 * BPE, the way HF tokenizers' AddedVocabulary does: leftmost-longest match, optional single_word / lstrip / rstrip.
 */

export interface AddedToken {
  content: string;
  id: number;
  special: boolean;
  /** Also swallow whitespace on the left / right of the token. */
  lstrip?: boolean;
  rstrip?: boolean;
  /** Only match when not glued to a letter/digit on either side. */
  singleWord?: boolean;
}

/** A piece of the input: either plain text to tokenize, or an added token's id. */
export type Piece = string | number;

const WORD_CHAR = /[\p{L}\p{N}_]/u;
const SPACE = /\s/u;

export class SpecialSplitter {
  private readonly all: RegExp | null;
  private readonly nonSpecial: RegExp | null;
  private readonly byContent: Map<string, AddedToken>;

  constructor(readonly tokens: readonly AddedToken[]) {
    this.byContent = new Map(tokens.filter((t) => t.content.length > 0).map((t) => [t.content, t]));
    this.all = build([...this.byContent.values()]);
    this.nonSpecial = build([...this.byContent.values()].filter((t) => !t.special));
  }

  /**
   * Splits `text` into plain-text pieces and token ids. With allowSpecial false, only non-special added tokens
   * are recognised; special ones (like "<|endoftext|>") are then tokenized as ordinary text.
   */
  split(text: string, allowSpecial = true): Piece[] {
    const re = allowSpecial ? this.all : this.nonSpecial;
    if (re === null) return text.length > 0 ? [text] : [];
    const out: Piece[] = [];
    let last = 0; // end of the previous match (start of pending plain text)
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const tok = this.byContent.get(m[0])!;
      let start = m.index;
      let end = start + m[0].length;
      if (tok.singleWord) {
        const before = start > 0 ? text[start - 1]! : "";
        const after = end < text.length ? text[end]! : "";
        if ((before && WORD_CHAR.test(before)) || (after && WORD_CHAR.test(after))) {
          re.lastIndex = start + 1;
          continue;
        }
      }
      if (tok.lstrip) { while (start > last && SPACE.test(text[start - 1]!)) start--; }
      if (tok.rstrip) { while (end < text.length && SPACE.test(text[end]!)) end++; }
      if (start > last) out.push(text.slice(last, start));
      out.push(tok.id);
      last = end;
      re.lastIndex = end;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }
}

function build(tokens: AddedToken[]): RegExp | null {
  if (tokens.length === 0) return null;
  const alts = tokens.map((t) => t.content).sort((a, b) => b.length - a.length).map(escapeRegExp);
  return new RegExp(alts.join("|"), "gu");
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
}
