#!/usr/bin/env bash
# Where the decode step's time goes, in ONE GPU-machine call (carry [".device"], as issue9_device.sh):
#   1. Nsight Systems timelines (graph nodes traced) of the FFN-block bench (--quick: batch 1 at 50 %
#      and 10 %) and of decode steps (dense and the fused sparse op at 50 % / 90 %, each WITHOUT PDL so
#      a kernel's duration is its own work), summarized per kernel by bench/kernel_breakdown.py;
#   2. Nsight Compute of the fused op's kernels (SpeedOfLight, warp states, memory, occupancy).
# PROFILE_ONLY="nsys ncu" picks parts. Results: $OUT/*.txt.
set -uo pipefail
OUT=${OUT:-/tmp/profile_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
mkdir -p build
xz -d -c .device/liblte_cuda.so.xz >build/liblte_cuda.so && cp .device/*.buildid .device/liblte_cpu.so build/
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
PARTS=${PROFILE_ONLY:-nsys ncu}
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${NSYS:-none}; ncu: $(command -v ncu || echo none)" | tee "$OUT/summary.txt"
trace() { # name command...
  local n=$1
  shift
  timeout 240 "$NSYS" profile -q -t cuda --cuda-graph-trace=node -o "$OUT/$n" -f true "$@" >"$OUT/$n.log" 2>&1
  timeout 120 "$NSYS" stats -q -r cuda_gpu_trace -f csv -o "$OUT/$n" "$OUT/$n.nsys-rep" >/dev/null 2>&1
  python3 bench/kernel_breakdown.py "$OUT/${n}_cuda_gpu_trace.csv" >"$OUT/$n.txt" 2>&1
  rm -f "$OUT/$n.nsys-rep" "$OUT/$n.sqlite" "$OUT/${n}_cuda_gpu_trace.csv"
  echo "== $n" >>"$OUT/summary.txt"
  head -30 "$OUT/$n.txt" >>"$OUT/summary.txt"
}
if [[ " $PARTS " == *" nsys "* && -n "$NSYS" ]]; then
  trace ffn_block deno run -A --no-check bench/fused_ffn_bench.ts --quick --iters 5
  for row in ${PROFILE_ROWS:-dense_no_pdl sparse50_fused_nopdl sparse90_fused_nopdl}; do
    trace "step_$row" deno run -A --no-check bench/decode_bench.ts --reps 1 --only "$row"
  done
fi
if [[ " $PARTS " == *" ncu "* ]]; then
  timeout 200 ncu --clock-control none --graph-profiling node -k regex:sffn_ --launch-skip 16 --launch-count 4 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats deno run -A --no-check bench/fused_ffn_bench.ts --quick --iters 2 \
    >"$OUT/ncu_fused.txt" 2>&1
  echo "ncu rc=$?" >>"$OUT/summary.txt"
fi
