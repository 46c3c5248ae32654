#!/usr/bin/env bash
# One GPU-machine call (~5 min on the H200) for the 8-bit KV cache (kvDtype i8): its GPU agreement
# tests (tests/gpu/engine_test.ts: the i8 ops in every flash variant, the CUDA engine against the CPU engine's i8
# cache) and the argument checks, then the 7B decode at ~4k positions (batch 1, dense and ~90 % sparse) and at batch 8
# after 2k-token prompts, each against the f16 cache in the same run; then the attention op alone
# (bench/attention_bench.ts). Results in $OUT/r.tgz.
# Carries the native library built here:
#   xz -T4 -c build/liblte_cuda.so > .device/liblte_cuda.so.xz && cp build/*.buildid build/liblte_cpu.so .device/
# then run it with carry [".device"]:  bash bench/kv_i8_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/kv_i8_out}
R=$OUT/r  # every result file goes here, tarred at the end: the device tool returns only a few files
mkdir -p "$R"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 NO_COLOR=1 OMP_NUM_THREADS=4
t0=$(date +%s)
strip() { sed 's/\x1b\[[0-9;]*m//g' | grep -vE "^\s+at |^$"; }
( timeout 200 deno test -A --no-check tests/gpu/engine_test.ts 2>&1 | strip > "$R/t_engine.txt" ) &
( timeout 200 deno test -A --no-check tests/gpu/arg_checks_test.ts 2>&1 | strip > "$R/t_args.txt" ) &
wait
for f in "$R"/t_*.txt; do echo "$(basename "$f"): $(grep -E "^(ok|FAILED) \|" "$f" | tail -1)"; grep -E "FAILED|=> |AssertionError" "$f" | head -8; done
grep -E "i8" "$OUT/engine_agreement.json" 2>/dev/null | sort -t: -k2 -g | tail -6
echo "== tests ($(($(date +%s) - t0)) s)"
run() { # tag, args...
  local tag=$1; shift
  timeout 170 deno run -A --no-check bench/decode_bench.ts --reps 3 "$@" --out "$R/$tag.json" >"$R/$tag.log" 2>&1
  echo "== $tag rc=$? ($(($(date +%s) - t0)) s)"
  grep -E "^(dense|sparse)" "$R/$tag.log"
}
run p3960 --prompt 3960 --only dense,dense_kv_i8,sparse90,sparse90_kv_i8
run b8p2048 --prompt 2048 --only dense_batch8,dense_batch8_kv_i8
run p16 --prompt 16 --only dense,dense_kv_i8
timeout 100 deno run -A --no-check bench/attention_bench.ts --ctx 256,1024,4000 --rows 1,8 --out "$R/attention.json" \
  2>&1 | tee "$R/attention.log" | grep -E "^rows"
echo "== attention op alone ($(($(date +%s) - t0)) s)"
tar -czf "$OUT/r.tgz" -C "$OUT" r && rm -rf "$R"
