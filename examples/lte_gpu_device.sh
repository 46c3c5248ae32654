#!/usr/bin/env bash
# Runs examples/lte_gpu.yaml on the GPU machine (after `source scripts/device_unpack.sh` and
# `deno task build --require-cuda`) and packs what it produced into $OUT: the pipeline log, the GPU
# name, and one tarball with every small file of the run directory (stage.json, results.json,
# reports, plots, lte.json, metrics.jsonl, log.txt; no checkpoints, no optimizer state).
#   bash examples/lte_gpu_device.sh [overrides...]      (LTE_GPU_LIMIT_S: time limit, default 420 s)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/lte_gpu_out}
mkdir -p "$out"
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/gpu.txt" 2>&1
timeout "${LTE_GPU_LIMIT_S:-420}" deno run -A cli.ts examples/lte_gpu.yaml "$@" >"$out/pipeline.log" 2>&1
echo "pipeline rc=$? wall_s=$(($(date +%s) - t0))" >>"$out/pipeline.log"
if [ -d runs/lte-gpu ]; then
  (cd runs/lte-gpu && find . -type f \( -name '*.json' -o -name '*.md' -o -name '*.html' -o -name '*.svg' \
    -o -name '*.jsonl' -o -name '*.txt' -o -name '*.yaml' \) -not -path '*/state/*' -not -name 'tokenizer.json' \
    -not -path '*/.*' | tar -czf "$out/lte_gpu_run.tgz" -T -)
fi
ls -la "$out"
