#!/usr/bin/env bash
# One GPU-machine call (~7 min on the H200) for the issue-9 plots: batch-1 decode of the 7B shape after
# prompts of 16 / 1,024 / 2,048 / 3,960 tokens (dense, sparse ~50 %, sparse ~90 %), one decode_bench.ts
# JSON per prompt length, and the fused FFN op at every activity (fused_ffn_bench.ts); then
# bench/plot_decode.ts's two plots (speed-up against activity, step time against context) and
# bench/plot_ffn.ts's FFN block against sparsity (with docs/results/sparse_ffn_h200.json's peers);
# the 16-token run also has the skip rows, for bench/plot_step_shares.ts's shares of the step.
# Carries the native library built here:
#   xz -T4 -c build/liblte_cuda.so > .device/liblte_cuda.so.xz && cp build/*.buildid build/liblte_cpu.so .device/
# then run it with carry [".device"]:  bash bench/plots_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/plots_out}
R=$OUT/r  # every result file goes here, tarred at the end: the device tool returns only a few files
mkdir -p "$R"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 NO_COLOR=1 OMP_NUM_THREADS=4
t0=$(date +%s)
files=()
SKIPS=sparse1e,sparse1e_skip_sffn,dense_skip_qkv,dense_skip_o,dense_skip_gateup,dense_skip_down,dense_skip_attn
SKIPS=$SKIPS,sparse50_skip_sffn,sparse50_skip_qkv,sparse50_skip_o,sparse50_skip_attn
SKIPS=$SKIPS,sparse90_skip_sffn,sparse90_skip_qkv,sparse90_skip_o,sparse90_skip_attn
for p in 16 1024 2048 3960; do
  rows=dense,sparse50,sparse90
  [ "$p" = 16 ] && rows=$rows,$SKIPS
  timeout 150 deno run -A --no-check bench/decode_bench.ts --reps 3 --prompt "$p" --only "$rows" \
    --out "$R/decode_p$p.json" >"$R/bench_p$p.log" 2>&1
  echo "== prompt $p rc=$? ($(($(date +%s) - t0)) s)"
  grep -E "^(dense|sparse)" "$R/bench_p$p.log"
  [ -f "$R/decode_p$p.json" ] && files+=("$R/decode_p$p.json")
done
deno run -A --no-check bench/plot_decode.ts --out "$OUT/decode_h200" "${files[@]}"
[ -f "$R/decode_p16.json" ] && deno run -A --no-check bench/plot_step_shares.ts --out "$OUT/step_shares_h200.svg" "$R/decode_p16.json"
timeout 200 deno run -A --no-check bench/fused_ffn_bench.ts --only "fused pdl,dense gemv pdl" --out "$R/fused_ffn.json" \
  >"$R/fused_ffn.log" 2>&1
echo "== fused FFN sweep rc=$? ($(($(date +%s) - t0)) s)"
deno run -A --no-check bench/plot_ffn.ts --out "$OUT/ffn_block_h200.svg" docs/results/sparse_ffn_h200.json "$R/fused_ffn.json"
tar -czf "$OUT/r.tgz" -C "$OUT" r && rm -rf "$R"
