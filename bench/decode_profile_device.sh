#!/usr/bin/env bash
# GPU machine: per-kernel durations of one decode step (Nsight Compute, each graph node alone)
# next to the step's wall time, for dense and sparse 50%. Output under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/prof_out}
mkdir -p "$OUT"
export LTE_REQUIRE_CUDA=1 OMP_NUM_THREADS=8
for cfg in "0" "0.5"; do
  deno run -A --no-check bench/decode_profile.ts --sparse $cfg --steps 60 2>&1 | tail -1
done
# one step = ~200 kernels; skip weight fill + prefill + warm steps, keep ~2 steps
for cfg in "0" "0.5"; do
  timeout 240 ncu --clock-control none --graph-profiling node --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    --launch-skip 1400 --launch-count 500 --csv \
    deno run -A --no-check bench/decode_profile.ts --sparse $cfg --steps 12 >"$OUT/ncu_$cfg.csv" 2>"$OUT/ncu_$cfg.err"
  echo "ncu $cfg rc=$?"
  python3 - "$OUT/ncu_$cfg.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("no rows"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); mi = h.index("Metric Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit"); ii = h.index("ID")
per = collections.defaultdict(dict)
for r in rows[1:]:
    per[int(r[ii])][r[mi]] = (float(r[vi].replace(",", "")), r[ui]); per[int(r[ii])]["name"] = r[ki].split("(")[0][:60]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
for k, d in per.items():
    t, u = d.get("gpu__time_duration.sum", (0, "ns")); t *= {"ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}.get(u, 1e-3)
    b, bu = d.get("dram__bytes_read.sum", (0, "byte")); b *= {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(bu, 1)
    a = agg[d["name"]]; a[0] += 1; a[1] += t; a[2] += b
tot = sum(a[1] for a in agg.values())
print(f"kernels {len(per)}  sum {tot:.1f} us")
for n, (c, t, b) in sorted(agg.items(), key=lambda x: -x[1][1]):
    print(f"  {n:60s} n={c:4d} total={t:9.1f}us mean={t/c:7.2f}us  {b/max(t,1e-9)/1e6:7.0f} GB/s")
PY
done
