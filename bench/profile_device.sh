#!/usr/bin/env bash
# Where the decode step's time goes, in ONE GPU-machine call (carry [".device"], as issue9_device.sh).
# Nsight Compute, each kernel alone (ncu serializes: no PDL overlap, so the sum of the kernels
# against the step's device time is the overlap plus the gaps):
#   step  the kernels of a few decode steps of the 7B-shaped model (bench/decode_bench.ts row
#         PROFILE_ROW, default dense), after the prefill and warm-up steps: per kernel its duration
#         and DRAM throughput;
#   ffn   the fused sparse FFN op's kernels at 50 % and 10 % active (bench/fused_ffn_bench.ts);
#   mma   the tensor-core GEMVs at 7B shapes, one launch each (bench/gemv_bench.ts --mma --case
#         --rows --variant): memory workload (L2 <-> SM bytes against DRAM bytes: does a sector
#         cross twice?), warp stalls, occupancy and registers, for gate/up and down at 16 rows,
#         gate/up at 8 and the union's down at 8 (ts_mma2_kernel, ts_mma_kernel) (ninth session: what bounds them
#         at 1.3-3.1 TB/s where cuBLAS streams 3.2-4.0; not yet run).
# step: PROFILE_ROW (a decode_bench row), PROFILE_KERNELS (ncu's kernel regex), PROFILE_TAG (suffix of ncu_step*.txt),
# PROFILE_TIMEOUT (seconds, default 240).
# PROFILE_ONLY="step ffn" picks parts (default "step ffn"; "mma" on request). Results: $OUT/*.txt (keep the files few: a call returns 8).
set -uo pipefail
OUT=${OUT:-/tmp/profile_out}
mkdir -p "$OUT"
source scripts/device_unpack.sh >/dev/null 2>&1
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8 NO_COLOR=1
PARTS=${PROFILE_ONLY:-step ffn}
SEC="--section SpeedOfLight --section LaunchStats --section Occupancy"
if [[ " $PARTS " == *" step "* ]]; then
  # ~5 kernels per layer: skip the model's init kernels, the prefill and the first steps
  timeout ${PROFILE_TIMEOUT:-240} ncu --clock-control none --graph-profiling node -k regex:"${PROFILE_KERNELS:-gemv_kernel|gemv_mma|ts_mma|flash|attention|sample|linear|norm|sffn}" \
    --launch-skip ${PROFILE_SKIP:-600} --launch-count ${PROFILE_COUNT:-24} $SEC \
    deno run -A --no-check bench/decode_bench.ts --reps 1 --new 24 --only "${PROFILE_ROW:-dense}" >"$OUT/ncu_step${PROFILE_TAG:-}.txt" 2>&1
  echo "ncu step ${PROFILE_ROW:-dense} rc=$?" | tee -a "$OUT/profile.txt"
  python3 - "$OUT/ncu_step${PROFILE_TAG:-}.txt" <<'PY' | tee -a "$OUT/profile.txt"
import re, sys
rows = []  # one per kernel: its metrics attach to it whatever their order inside its sections
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s+(?:void )?(\S.*?)\s+\((\d+), (\d+), (\d+)\)x\((\d+), (\d+), (\d+)\)", line)
    if m:
        rows.append({"name": m.group(1).split("(")[0].replace("unnamed>::", "")[:60], "grid": m.group(2)})
        continue
    m = re.match(r"\s+(Duration|DRAM Throughput)\s+(\S+)\s+([\d.,]+)", line)
    if m and rows:
        v = float(m.group(3).replace(",", ""))
        rows[-1][m.group(1)] = v * 1000 if m.group(1) == "Duration" and m.group(2) == "ms" else v
for r in rows:
    print(f"{r['name']:60s} grid {r['grid']:>5s} {r.get('Duration', float('nan')):8.2f} us  DRAM {r.get('DRAM Throughput', float('nan')):.2f} %")
print(f"sum {sum(r.get('Duration', 0) for r in rows):.1f} us over {len(rows)} kernels")
PY
fi
if [[ " $PARTS " == *" mma "* ]]; then
  for spec in "gate/up swiglu:16:gu16" "down K=11008 acc:16:down16" "gate/up swiglu:8:gu8" "t_sparse 50%:8:ts8" \
    "t_sparse 50%:8:ts8v1:mma v3 ts1"; do
    IFS=: read -r name rows tag variant <<<"$spec"
    # gemv_bench's graph replays 8 calls (3 warm-up replays first): skip into the timed replays
    timeout 120 ncu --clock-control none --graph-profiling node -k regex:"gemv_mma_kernel|ts_mma2?_kernel" \
      --launch-skip 40 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section Occupancy --section LaunchStats \
      deno run -A --no-check bench/gemv_bench.ts --mma --iters 2 --case "$name" --rows "$rows" --variant "${variant:-mma v3}" \
      >"$OUT/ncu_mma_$tag.txt" 2>&1
    echo "ncu mma $tag rc=$?" | tee -a "$OUT/profile.txt"
  done
fi
if [[ " $PARTS " == *" ffn "* ]]; then
  for act in 0.5 0.1; do
    timeout 120 ncu --clock-control none --graph-profiling node -k regex:sffn_ --launch-skip 8 --launch-count 2 \
      --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy \
      deno run -A --no-check bench/fused_ffn_bench.ts --quick --iters 1 --only "fused pdl" --active $act \
      >"$OUT/ncu_ffn_$act.txt" 2>&1
    echo "ncu ffn $act rc=$?" | tee -a "$OUT/profile.txt"
  done
fi
