/**
 * GPT-2 byte-level helpers: the reversible byte <-> printable-character table (`bytes_to_unicode` in OpenAI's
 * encoder.py) and the GPT-2 pre-tokenization regex.
 */

/**
 * BYTE_TO_CHAR[b] is the character GPT-2 uses for byte b: printable Latin-1 bytes map to themselves, the other 68
 * bytes (control chars, space, 0x7f-0xa0, 0xad) map to U+0100 + k in byte order (so space -> "Ġ", "\n" -> "Ċ").
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : 256 + extra++));
  return table;
})();

/** CHAR_TO_BYTE.get(c) inverts BYTE_TO_CHAR. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** The GPT-2 pre-tokenizer: contractions, letter runs, number runs, other runs (each with an optional leading
 * space), then whitespace (a trailing run of whitespace leaves its last char to prefix the next word). */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Splits text into GPT-2 pre-tokens. */
export function gpt2Split(text: string): string[] {
  return text.match(GPT2_PATTERN) ?? [];
}

/** Maps a string of byte-level characters back to bytes; characters outside the table contribute their UTF-8. */
export function byteLevelToBytes(s: string, out: number[]): void {
  for (const ch of s) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else for (const x of new TextEncoder().encode(ch)) out.push(x);
  }
}

const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Lossy UTF-8 decode (invalid sequences become U+FFFD); keeps a leading BOM, unlike the default TextDecoder. */
export function utf8Decode(bytes: ArrayLike<number>): string {
  return decoder.decode(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));
}
