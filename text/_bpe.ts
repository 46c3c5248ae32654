/**
 * Core byte-pair-encoding machinery shared by the GPT-2 and tokenizer.json tokenizers.
 *
 * - `MergeTable`: an open-addressing hash table from a pair of token ids (left, right) to (rank, merged id),
 *   stored in Int32Arrays. Lookups hash two small ints, so they are much cheaper than Map<string, number>
 *   lookups on concatenated strings, and the table needs no per-entry objects.
 * - `bpeMerge`: applies merges to a word given as its initial symbol ids, always merging the lowest-ranked adjacent
 *   pair first and, among equal ranks, the leftmost one (the order used by OpenAI's encoder.py and by HF tokenizers).
 *   Short words use a simple rescan loop; long words (a whole un-pretokenized line of text, say) use a linked list
 *   plus a binary heap so the cost stays O(n log n).
 */

const EMPTY = -1;

export class MergeTable {
  private readonly mask: number;
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly ranks: Int32Array;
  private readonly results: Int32Array;
  private count = 0;

  constructor(capacityHint: number) {
    let cap = 16;
    while (cap < capacityHint * 2) cap *= 2;
    this.mask = cap - 1;
    this.left = new Int32Array(cap).fill(EMPTY);
    this.right = new Int32Array(cap);
    this.ranks = new Int32Array(cap);
    this.results = new Int32Array(cap);
  }

  get size(): number {
    return this.count;
  }

  private slot(a: number, b: number): number {
    // Mix both ids (multiplicative hashing); the table is at most half full so probe chains stay short.
    let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b);
    h ^= h >>> 15;
    let i = h & this.mask;
    while (this.left[i] !== EMPTY && (this.left[i] !== a || this.right[i] !== b)) i = (i + 1) & this.mask;
    return i;
  }

  /** Adds a merge; returns false (and keeps the earlier, better-ranked entry) if the pair was already present. */
  add(a: number, b: number, rank: number, result: number): boolean {
    const i = this.slot(a, b);
    if (this.left[i] !== EMPTY) return false;
    if ((this.count + 1) * 2 > this.mask + 1) throw new Error("MergeTable: capacity exceeded");
    this.left[i] = a;
    this.right[i] = b;
    this.ranks[i] = rank;
    this.results[i] = result;
    this.count++;
    return true;
  }

  /** Rank of merging (a, b), or -1 if there is no such merge. */
  rank(a: number, b: number): number {
    const i = this.slot(a, b);
    return this.left[i] === EMPTY ? -1 : this.ranks[i]!;
  }

  /** Id produced by merging (a, b); only meaningful when rank(a, b) >= 0. */
  result(a: number, b: number): number {
    return this.results[this.slot(a, b)]!;
  }
}

/** Words with at most this many initial symbols use the simple O(n^2) loop. */
const SMALL_WORD = 48;

/** Applies BPE merges to `ids` (the word's initial symbols). Returns a new array; `ids` is not modified. */
export function bpeMerge(table: MergeTable, ids: ArrayLike<number>): number[] {
  return ids.length <= SMALL_WORD ? mergeSmall(table, ids) : mergeLarge(table, ids);
}

function mergeSmall(table: MergeTable, ids: ArrayLike<number>): number[] {
  const sym = Array.from(ids);
  // ranks[i] = rank of (sym[i], sym[i+1]); kept up to date so each round is one scan for the minimum.
  const ranks: number[] = new Array(Math.max(sym.length - 1, 0));
  for (let i = 0; i + 1 < sym.length; i++) ranks[i] = table.rank(sym[i]!, sym[i + 1]!);
  while (sym.length > 1) {
    let best = -1;
    let bestRank = 0x7fffffff;
    for (let i = 0; i < ranks.length; i++) {
      const r = ranks[i]!;
      if (r >= 0 && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) break;
    sym[best] = table.result(sym[best]!, sym[best + 1]!);
    sym.splice(best + 1, 1);
    ranks.splice(best, 1);
    if (best > 0) ranks[best - 1] = table.rank(sym[best - 1]!, sym[best]!);
    if (best + 1 < sym.length) ranks[best] = table.rank(sym[best]!, sym[best + 1]!);
  }
  return sym;
}

/**
 * Heap-based merge for long words. Symbols live in a doubly linked list over positions 0..n-1; a merged symbol
 * keeps the position of its left part. Heap entries are (rank, position) packed into one double
 * (rank * 2^26 + position), so the heap orders by rank, then leftmost position, matching mergeSmall. Stale entries
 * are skipped on pop by re-checking that the pair at that position still has the same rank.
 */
function mergeLarge(table: MergeTable, ids: ArrayLike<number>): number[] {
  const n = ids.length;
  if (n >= 1 << 26) throw new Error(`bpeMerge: word of ${n} symbols is too long`);
  const sym = Int32Array.from(ids as ArrayLike<number>);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const SCALE = 1 << 26;
  const heap: number[] = [];
  const push = (v: number) => {
    let i = heap.length;
    heap.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p]! <= v) break;
      heap[i] = heap[p]!;
      i = p;
    }
    heap[i] = v;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      const len = heap.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= len) break;
        const r = l + 1;
        const c = r < len && heap[r]! < heap[l]! ? r : l;
        if (heap[c]! >= last) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  };
  const consider = (i: number) => {
    const j = next[i]!;
    if (j < 0) return;
    const r = table.rank(sym[i]!, sym[j]!);
    if (r >= 0) push(r * SCALE + i);
  };
  for (let i = 0; i + 1 < n; i++) consider(i);
  while (heap.length > 0) {
    const v = pop();
    const rank = Math.floor(v / SCALE);
    const i = v - rank * SCALE;
    const j = next[i]!;
    if (sym[i]! < 0 || j < 0 || table.rank(sym[i]!, sym[j]!) !== rank) continue; // stale
    sym[i] = table.result(sym[i]!, sym[j]!);
    sym[j] = -1; // dead
    const k = next[j]!;
    next[i] = k;
    if (k >= 0) prev[k] = i;
    if (prev[i]! >= 0) consider(prev[i]!);
    consider(i);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(sym[i]!);
  return out;
}

/** A bounded per-word cache: cleared wholesale when full (cheap, and hot words come back immediately). */
export class WordCache {
  private map = new Map<string, number[]>();
  constructor(private readonly limit = 200_000) {}
  get(word: string): number[] | undefined {
    return this.map.get(word);
  }
  set(word: string, ids: number[]): void {
    if (this.map.size >= this.limit) this.map.clear();
    this.map.set(word, ids);
  }
}

/** Encodes a string to UTF-8 bytes (lone surrogates become U+FFFD, as TextEncoder does). */
export function utf8Bytes(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out.push(c);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return out;
}
