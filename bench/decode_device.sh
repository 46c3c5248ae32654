#!/usr/bin/env bash
# One GPU-machine call for the decode engine (issue 9): build, CPU<->CUDA agreement of the decode
# kernels and engine (tests/gpu/engine_test.ts), end-to-end decode benchmark (bench/decode_bench.ts)
# and the PyTorch / HF-eager peer (bench/torch_decode.py). Logs and JSON under $OUT.
#
# Here first:  bash ../shared/tools/device-prep.sh && bash scripts/device_pack.sh &&
#              git archive HEAD cuda ffi > .device/engine_native_head.tar
# Then run it with carry [".device"]:  bash bench/decode_device.sh
# The working tree that travels holds everyone's work in progress: when the native build fails,
# the script retries with the committed native sources and symbol table (the tar above).
set -uo pipefail
OUT=${OUT:-/tmp/decode_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
if ! deno run -A --no-check cuda/build.ts --require-cuda >"$OUT/build.log" 2>&1; then
  tail -15 "$OUT/build.log"
  echo "== full build failed; retrying with the committed native sources (.device/engine_native_head.tar)"
  rm -rf cuda/cpu cuda/cuda cuda/include && tar -xf .device/engine_native_head.tar &&
    deno run -A --no-check cuda/build.ts --require-cuda >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
tail -2 "$OUT/build.log"
echo "== build $(($(date +%s) - t0)) s"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  deno test -A --no-check tests/gpu/engine_test.ts >"$OUT/test.log" 2>&1
  echo "== tests rc=$? ($(($(date +%s) - t0)) s)"
  grep -E "\.\.\. |passed|failed|ENGINE_AGREEMENT" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -12
  grep -A14 "ERRORS" "$OUT/test.log" | sed 's/\x1b\[[0-9;]*m//g' | head -40
fi
deno run -A --no-check bench/decode_bench.ts ${BENCH_ARGS:-} --out "$OUT/decode_h200.json" >"$OUT/bench.log" 2>&1
echo "== bench rc=$? ($(($(date +%s) - t0)) s)"
sed 's/\x1b\[[0-9;]*m//g' "$OUT/bench.log" | tail -22
if [ "${SKIP_TORCH:-0}" != 1 ]; then
  timeout 100 python3 bench/torch_decode.py --new 32 --reps 2 --out "$OUT/torch_decode.json" >"$OUT/torch.log" 2>&1
  echo "== torch rc=$? ($(($(date +%s) - t0)) s)"
  tail -4 "$OUT/torch.log"
fi
