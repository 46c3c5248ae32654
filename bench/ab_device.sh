#!/usr/bin/env bash
# A/B of two native CUDA builds in ONE GPU-machine call (carry [".device"]): A = .device/liblte_cuda.so.xz
# (the checkout's build; built here, ~1 min, when absent: the carry limit may not hold both), B =
# .device/liblte_cuda_b.so.xz (another commit's build, same ABI). Rounds
# alternate A, B, A, B so drift of the machine hits both; each round runs the FFN-block bench
# (--quick, the named variant) and decode rows (bench/decode_bench.ts --reps 1). Cross-call numbers
# on these machines differed by up to 10 % for unchanged kernels: compare builds only this way.
#   AB_VARIANT="fused pdl" AB_ROWS=dense,sparse50_fused,sparse90_fused AB_ROUNDS=2 bash bench/ab_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/ab_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
mkdir -p build
cp .device/*.buildid .device/liblte_cpu.so build/
if [ -f .device/liblte_cuda.so.xz ]; then
  cp build/liblte_cuda.so "$OUT/libA.so" # unpacked by device_unpack.sh
else
  # a warm machine keeps build/ from the last call (maybe B, with A's build id): build from scratch
  rm -f build/liblte_cuda.so build/liblte_cuda.so.buildid
  timeout 300 deno run -A --no-check cuda/build.ts --require-cuda >"$OUT/buildA.log" 2>&1 || { tail -20 "$OUT/buildA.log"; exit 1; }
  cp build/liblte_cuda.so "$OUT/libA.so"
fi
xz -d -c .device/liblte_cuda_b.so.xz >"$OUT/libB.so"
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
for round in $(seq 1 "${AB_ROUNDS:-2}"); do
  for v in A B; do
    cp "$OUT/lib$v.so" build/liblte_cuda.so
    # B's build id is not the hash of this checkout's sources: allow it
    if [ $v = B ]; then export LTE_ALLOW_STALE=1; else unset LTE_ALLOW_STALE; fi
    echo "== round $round build $v" | tee -a "$OUT/ab.txt"
    timeout 60 deno run -A --no-check bench/fused_ffn_bench.ts --quick --only "${AB_VARIANT:-fused pdl}" \
      2>&1 | grep -E "^  R=" | tee -a "$OUT/ab.txt"
    timeout 120 deno run -A --no-check bench/decode_bench.ts --reps 1 --only "${AB_ROWS:-dense,sparse50_fused,sparse90_fused}" \
      2>&1 | grep -E "tok/s" | head -8 | tee -a "$OUT/ab.txt"
  done
done
unset LTE_ALLOW_STALE
cp "$OUT/libA.so" build/liblte_cuda.so # the checkout's build stays for later commands of the call
rm -f "$OUT/libA.so" "$OUT/libB.so"
