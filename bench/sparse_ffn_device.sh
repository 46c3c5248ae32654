#!/usr/bin/env bash
# One GPU-machine call for the sparse FFN kernels (issue 9): CPU<->CUDA agreement test, then the
# benchmark (with the PyTorch peers unless BENCH_ARGS says otherwise). Builds nothing: run it from
# the repo root after
#   source scripts/device_unpack.sh && deno run -A --no-check cuda/build.ts --require-cuda
# Logs and JSON under $OUT; the short table is printed last. ~3 minutes on the H200.
set -uo pipefail
OUT=${OUT:-/tmp/sffn_out}
mkdir -p "$OUT"
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1
unset LTE_SFFN_GU_SPLIT LTE_SFFN_L2PF LTE_SFFN_DOWN_CL LTE_SFFN_GU_PERSIST LTE_SFFN_ROUTE_V2 LTE_SFFN_DOWN_INPLACE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
LTE_SFFN_AGREEMENT_REPORT="$OUT/agreement.json" timeout 150 deno test -A --no-check tests/gpu/sparse_ffn_test.ts >"$OUT/test.log" 2>&1
echo "== tests rc=$? ($(($(date +%s) - t0)) s)"
grep -E "\.\.\. |passed|failed" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -v "\.\.\. ok" | tail -20
grep -E "passed|failed" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
grep -A12 "ERRORS" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | head -40
timeout 200 deno run -A --no-check bench/sparse_ffn_bench.ts ${BENCH_ARGS:---torch} --json "$OUT/sparse_ffn_h200.json" 2>&1 |
  sed 's/\x1b\[[0-9;]*m//g' >"$OUT/bench.log"
echo "== bench rc=$? ($(($(date +%s) - t0)) s)"
grep -E "^(tuning .* failed|kernel split|best:|copy bandwidth|ours_f32|ours_dense)" "$OUT/bench.log" | head -20
grep -A60 "^| B |" "$OUT/bench.log"
