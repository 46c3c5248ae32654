#!/usr/bin/env bash
# GPU-machine call: where the fused sparse FFN op's time goes. The op's agreement test first (a
# kernel that hangs must not eat the call), then the FFN-block bench with timeline records
# (LTE_DEC_SFFN_TRACE, summarised by bench/sffn_timeline.ts) and the decode rows named in
# DECODE_ONLY. Carry [".device"] (prepared as bench/issue9_device.sh says).
set -uo pipefail
OUT=${OUT:-/tmp/timeline_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
say "gpu: $(nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader 2>&1)"
# the op's agreement test, and (EXTRA_TESTS) other GPU tests in parallel with it
for f in ${EXTRA_TESTS:-}; do
  (timeout 240 deno test -A --no-check "$f" >"$OUT/$(basename "$f" .ts).log" 2>&1; echo "$f rc=$?" >"$OUT/$(basename "$f" .ts).rc") &
done
timeout 150 deno test -A --no-check tests/gpu/dec_sparse_ffn_test.ts >"$OUT/smoke.log" 2>&1
rc=$?
wait
say "smoke (tests/gpu/dec_sparse_ffn_test.ts) rc=$rc"
strip <"$OUT/smoke.log" | grep -E "worst|^ok|FAILED|rror" | head -12 | tee -a "$OUT/summary.txt"
for f in ${EXTRA_TESTS:-}; do
  n=$(basename "$f" .ts)
  say "$(cat "$OUT/$n.rc") $(strip <"$OUT/$n.log" | grep -E '^(ok|FAILED) \|' | tail -1)"
  strip <"$OUT/$n.log" | grep -A12 "ERRORS" | head -30 | tee -a "$OUT/summary.txt"
done
[ $rc = 0 ] || exit 1
timeout 150 deno run -A --no-check bench/fused_ffn_bench.ts --quick --only "${FFN_ONLY:-fused pdl,dense gemv pdl}" \
  --trace --out "$OUT/fused_ffn_bench.json" >"$OUT/fused.log" 2>&1
say "fused bench rc=$?"
grep -v "^sffn tl" "$OUT/fused.log" | strip | sed -n '/^FFN block/,$p' | tee -a "$OUT/summary.txt"
grep -v "^sffn tl" "$OUT/fused.log" | strip | grep -E "FAILED|rror" | head -5 | tee -a "$OUT/summary.txt"
deno run -A --no-check bench/sffn_timeline.ts "$OUT/fused.log" --json "$OUT/timeline.json" | tee -a "$OUT/summary.txt"
xz -T4 "$OUT/fused.log"
if [ -n "${DECODE_ONLY:-}" ]; then
  timeout "${DECODE_TIMEOUT:-240}" deno run -A --no-check bench/decode_bench.ts --reps 3 --only "$DECODE_ONLY" \
    --out "$OUT/decode_bench.json" >"$OUT/decode.log" 2>&1
  say "decode bench rc=$?"
  strip <"$OUT/decode.log" | grep -E "tok/s|FAILED" | tail -24 | tee -a "$OUT/summary.txt"
fi
# at most 8 files come back from a device call: the logs in one archive
cd "$OUT" && tar -czf logs.tgz --remove-files ./*.log ./*.log.xz ./*.rc engine_agreement.json 2>/dev/null
ls "$OUT"
