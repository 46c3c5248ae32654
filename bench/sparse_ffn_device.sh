#!/usr/bin/env bash
# One GPU-machine call for the sparse FFN kernels (issue 9): build, CPU<->CUDA agreement test,
# benchmark (with the PyTorch peers unless BENCH_ARGS says otherwise). Logs and JSON under $OUT.
#
# Here first:  bash ../shared/tools/device-prep.sh && bash scripts/device_pack.sh &&
#              git archive HEAD cuda ffi > .device/kernels_native_head.tar
# Then run it with carry [".device"]:  bash bench/sparse_ffn_device.sh
# The working tree that travels holds everyone's work in progress: when the native build fails,
# the script retries with the committed native sources and symbol table (the tar above).
set -uo pipefail
OUT=${OUT:-/tmp/sffn_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
if ! deno run -A --no-check cuda/build.ts --require-cuda >"$OUT/build.log" 2>&1; then
  tail -15 "$OUT/build.log"
  echo "== full build failed; retrying with the committed native sources (.device/kernels_native_head.tar)"
  rm -rf cuda/cpu cuda/cuda cuda/include && tar -xf .device/kernels_native_head.tar &&
    deno run -A --no-check cuda/build.ts --require-cuda >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
tail -2 "$OUT/build.log"
echo "== build $(($(date +%s) - t0)) s"
LTE_SFFN_AGREEMENT_REPORT="$OUT/agreement.json" deno test -A --no-check tests/gpu/sparse_ffn_test.ts >"$OUT/test.log" 2>&1
echo "== tests rc=$? ($(($(date +%s) - t0)) s)"
grep -E "\.\.\. |passed|failed" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -20
grep -A12 "ERRORS" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | head -40
deno run -A --no-check bench/sparse_ffn_bench.ts ${BENCH_ARGS:---torch} --json "$OUT/sparse_ffn_h200.json" 2>&1 |
  sed 's/\x1b\[[0-9;]*m//g' >"$OUT/bench.log"
echo "== bench rc=$? ($(($(date +%s) - t0)) s)"
grep -v "^  pdl=" "$OUT/bench.log" | tail -60
