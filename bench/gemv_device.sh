#!/usr/bin/env bash
# One GPU-machine call for the decode GEMVs (issue 9, task GEMV). Builds NOTHING: run it from the
# repo root after
#   source scripts/device_unpack.sh && deno run -A --no-check cuda/build.ts --require-cuda
# Then:  bash bench/gemv_device.sh        (about 3-4 minutes; logs and JSON under $OUT)
#   1. tests/gpu/gemv_test.ts   every branch of the persistent kernels vs the CPU reference, under
#                               LTE_DEC_GEMV=new/auto/old and the tuning variants, PDL, graph replay
#   2. tests/gpu/engine_test.ts the engine-level CPU<->CUDA agreement (default = new kernels)
#   3. bench/gemv_bench.ts      each 7B-shape GEMV alone (graph of 8 distinct weight copies),
#                               old vs new vs tuning variants, us and TB/s
#   4. bench/decode_profile.ts  end-to-end ms/token, dense and sparse 0.5 (engine's own kernels),
#                               LTE_DEC_GEMV=old vs new
# The summary table is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/gemv_out}
mkdir -p "$OUT"
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader |
  tee "$OUT/gpu.txt"
t0=$(date +%s)
strip() { sed 's/\x1b\[[0-9;]*m//g'; }

timeout 120 deno test -A --no-check tests/gpu/gemv_test.ts >"$OUT/gemv_test.log" 2>&1
echo "== gemv_test rc=$? ($(($(date +%s) - t0)) s)"
strip <"$OUT/gemv_test.log" | grep -E "^gemv|ok \||FAILED|passed|failed|GEMV_AGREEMENT" | tail -8
strip <"$OUT/gemv_test.log" | grep -A12 "ERRORS" | head -30

if [ "${SKIP_ENGINE_TEST:-0}" != 1 ]; then
  timeout 200 deno test -A --no-check tests/gpu/engine_test.ts >"$OUT/engine_test.log" 2>&1
  echo "== engine_test rc=$? ($(($(date +%s) - t0)) s)"
  strip <"$OUT/engine_test.log" | grep -E "passed|failed|ENGINE_AGREEMENT" | tail -4
  strip <"$OUT/engine_test.log" | grep -A12 "ERRORS" | head -30
fi

timeout 150 deno run -A --no-check bench/gemv_bench.ts ${GEMV_BENCH_ARGS:-} --out "$OUT/gemv_bench.json" \
  >"$OUT/gemv_bench.log" 2>&1
echo "== gemv_bench rc=$? ($(($(date +%s) - t0)) s)"

: >"$OUT/e2e.txt"
for cfg in "--sparse 0" "--sparse 0.5 --kernels 0"; do
  for v in old new; do
    line=$(LTE_DEC_GEMV=$v timeout 90 deno run -A --no-check bench/decode_profile.ts $cfg --steps 40 2>&1 | tail -1)
    echo "LTE_DEC_GEMV=$v $line" | tee -a "$OUT/e2e.txt"
  done
done
echo "== e2e done ($(($(date +%s) - t0)) s)"

echo
strip <"$OUT/gemv_bench.log" | sed -n '/=== GEMV bench/,$p'
echo "--- end to end (bench/decode_profile.ts, 7B shape, f16, batch 1, 36 timed steps) ---"
cat "$OUT/e2e.txt"
