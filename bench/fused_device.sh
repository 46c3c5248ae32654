#!/usr/bin/env bash
# GPU-machine call for the fused sparse FFN op (lte_dec_sparse_ffn) and lookahead decoding:
# a bounded smoke run of the op's agreement test first (a kernel that hangs must not eat the
# call), then bench/issue9_device.sh with the fused benches and decode rows, or, when the smoke
# run fails, only the rows that do not use the fused op. Carry [".device"] (see issue9_device.sh).
set -uo pipefail
OUT=${OUT:-/tmp/fused_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
mkdir -p build
xz -d -c .device/liblte_cuda.so.xz >build/liblte_cuda.so && cp .device/*.buildid .device/liblte_cpu.so build/
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
timeout 120 deno test -A --no-check tests/gpu/dec_sparse_ffn_test.ts >"$OUT/smoke.log" 2>&1
rc=$?
echo "smoke (tests/gpu/dec_sparse_ffn_test.ts) rc=$rc" | tee "$OUT/summary.txt"
sed 's/\x1b\[[0-9;]*m//g' "$OUT/smoke.log" | grep -E "worst|ok|FAILED|error|Error" | head -12 | tee -a "$OUT/summary.txt"
BASE=dense,dense_sync,sparse50,sparse90,gen_dense,gen_dense_nola,gen_dense_sync
FUSED=sparse50_fused,sparse50_fused_sync,sparse50_fused_nopdl,sparse50_fused_smem200,sparse50_fused_smem72
FUSED=$FUSED,sparse90_fused,sparse90_fused_sync,sparse90_fused_nopdl,sparse90_fused_smem200,sparse90_fused_smem72
FUSED=$FUSED,gen_sparse50_fused,gen_sparse90_fused,dense_batch4,sparse90_batch4_fused,sparse90_batch4_kernels
export OUT
if [ $rc = 0 ] && [ -n "${NCU:-}" ]; then
  # where the fused FFN kernel's time goes (each kernel alone, 50 % then 90 % active, no PDL)
  timeout 200 ncu --clock-control none --graph-profiling node -k regex:sffn_ --launch-skip 16 --launch-count 4 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats deno run -A --no-check bench/fused_ffn_bench.ts --quick --iters 2 \
    >"$OUT/ncu_fused.txt" 2>&1
  echo "ncu rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "sffn_|Duration|DRAM Throughput|Memory Throughput|Stall|Warp Cycles Per Issued|Issued Warp|Achieved Occupancy|Registers Per|Shared Memory Config" \
    "$OUT/ncu_fused.txt" | head -60 >>"$OUT/summary.txt"
  if command -v cuobjdump >/dev/null; then
    cuobjdump -sass build/liblte_cuda.so 2>/dev/null | awk '/Function : .*sffn_ffn_kernelI6__halfLi1ELi2E/{p=1} p{print} p&&/EXIT/{n++} p&&/\.L_x_[0-9]+:$/&&n>3{exit}' | head -3000 >"$OUT/sass_ffn.txt"
  fi
fi
if [ $rc = 0 ]; then
  TESTS=${TESTS:-"engine args"} SKIP=${SKIP:-"sffn gemv torch"} DECODE_ONLY=${DECODE_ONLY:-$BASE,$FUSED} \
    DECODE_TIMEOUT=${DECODE_TIMEOUT:-300} bash bench/issue9_device.sh
else
  TESTS="args" SKIP="fused sffn gemv torch lte" DECODE_ONLY=$BASE DECODE_TIMEOUT=150 bash bench/issue9_device.sh
fi
