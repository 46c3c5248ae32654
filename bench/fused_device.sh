#!/usr/bin/env bash
# GPU-machine call for the fused sparse FFN op (lte_dec_sparse_ffn) and lookahead decoding:
# a bounded smoke run of the op's agreement test first (a kernel that hangs must not eat the
# call), then bench/issue9_device.sh with the fused benches and decode rows, or, when the smoke
# run fails, only the rows that do not use the fused op. Carry [".device"] (see issue9_device.sh).
set -uo pipefail
OUT=${OUT:-/tmp/fused_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
timeout 150 deno test -A --no-check tests/gpu/dec_sparse_ffn_test.ts >"$OUT/smoke.log" 2>&1
rc=$?
echo "smoke (tests/gpu/dec_sparse_ffn_test.ts) rc=$rc" | tee "$OUT/summary.txt"
sed 's/\x1b\[[0-9;]*m//g' "$OUT/smoke.log" | grep -E "worst|ok|FAILED|error|Error" | head -12 | tee -a "$OUT/summary.txt"
BASE=dense,dense_sync,sparse50,sparse90,gen_dense,gen_dense_nola,gen_dense_sync
FUSED=sparse50_fused,sparse50_fused_sync,sparse50_fused_nopdl,sparse50_fused_smem200,sparse50_fused_smem72
FUSED=$FUSED,sparse90_fused,sparse90_fused_sync,sparse90_fused_nopdl,sparse90_fused_smem200,sparse90_fused_smem72
FUSED=$FUSED,gen_sparse50_fused,gen_sparse90_fused,dense_batch4,sparse90_batch4_fused,sparse90_batch4_kernels
export OUT
if [ $rc = 0 ]; then
  # phase times of the two-phase kernel at 2 and 1 blocks per SM (3 blocks printf them), outside a graph
  timeout 60 deno run -A --no-check bench/fused_ffn_bench.ts --quick --only "fused pdl" --iters 2 --trace \
    >"$OUT/trace.log" 2>&1
  grep -E "^trace|sffn trace" "$OUT/trace.log" | head -40 >>"$OUT/summary.txt"
fi
if [ $rc = 0 ] && [ -n "${NCU:-}" ]; then
  # where a fused FFN kernel's time goes (each kernel alone: ncu serializes), 50 % then 10 % active
  for act in 0.5 0.1; do
    timeout 120 ncu --clock-control none --graph-profiling node -k regex:sffn_ --launch-skip 8 --launch-count 2 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      --section Occupancy --section LaunchStats deno run -A --no-check bench/fused_ffn_bench.ts --quick --iters 1 \
      --only "${NCU_VARIANT:-fused pdl}" --active $act >"$OUT/ncu_fused_$act.txt" 2>&1
    echo "ncu $act rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "sffn_|Duration|DRAM Throughput|Memory Throughput|Stall|Warp Cycles Per Issued|Issued Warp|Achieved Occupancy|Registers Per|Local Memory Spilling Requests  " \
      "$OUT/ncu_fused_$act.txt" | head -30 >>"$OUT/summary.txt"
  done
fi
if [ $rc = 0 ]; then
  TESTS=${TESTS:-"engine args"} SKIP=${SKIP:-"sffn gemv torch"} DECODE_ONLY=${DECODE_ONLY:-$BASE,$FUSED} \
    DECODE_TIMEOUT=${DECODE_TIMEOUT:-300} bash bench/issue9_device.sh
else
  TESTS="args" SKIP="fused sffn gemv torch lte" DECODE_ONLY=$BASE DECODE_TIMEOUT=150 bash bench/issue9_device.sh
fi
