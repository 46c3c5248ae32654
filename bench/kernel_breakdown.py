#!/usr/bin/env python3
"""Per-kernel time of a CUDA trace exported by `nsys stats -r cuda_gpu_trace -f csv` (GPU machine).

For each kernel name: launches, median and total duration; for each consecutive pair of kernels
(in start order) the median gap from the end of one to the start of the next (negative = they
overlapped, as with programmatic dependent launch). Kernels are grouped into "steps" by nothing:
the medians are over the whole trace, so run it on a trace of one steady configuration.

    python3 bench/kernel_breakdown.py trace.csv [--top 25] > breakdown.txt
"""
import csv
import statistics
import sys


def short(name: str) -> str:
    name = name.split("(")[0]
    for pre in ("void ", "lte::", "(anonymous namespace)::"):
        name = name.replace(pre, "")
    return name[:70]


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("no rows")
        return
    keys = rows[0].keys()
    k_start = next(k for k in keys if k.startswith("Start"))
    k_dur = next(k for k in keys if k.startswith("Duration"))
    k_name = next(k for k in keys if k == "Name")
    ks = []
    for r in rows:
        n = r[k_name]
        if not n or n.startswith("[CUDA mem"):
            continue
        ks.append((int(float(r[k_start])), int(float(r[k_dur])), short(n)))
    ks.sort()
    by = {}
    for _, d, n in ks:
        by.setdefault(n, []).append(d)
    total = sum(sum(v) for v in by.values())
    print(f"{len(ks)} kernels, {total / 1e6:.3f} ms of kernel time")
    print(f"{'kernel':72s} {'n':>6s} {'median us':>10s} {'total %':>8s}")
    for n, v in sorted(by.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"{n:72s} {len(v):6d} {statistics.median(v) / 1e3:10.2f} {100 * sum(v) / total:8.1f}")
    gaps = {}
    for (s0, d0, n0), (s1, _, n1) in zip(ks, ks[1:]):
        gaps.setdefault((n0, n1), []).append(s1 - (s0 + d0))
    print(f"\n{'gap: previous -> next':100s} {'n':>6s} {'median us':>10s}")
    for (a, b), v in sorted(gaps.items(), key=lambda kv: -len(kv[1]))[:top]:
        print(f"{(a[:48] + ' -> ' + b[:48]):100s} {len(v):6d} {statistics.median(v) / 1e3:10.2f}")
    span = (ks[-1][0] + ks[-1][1] - ks[0][0]) / 1e6
    print(f"\nspan {span:.3f} ms, busy {100 * total / 1e6 / span:.1f} %")


if __name__ == "__main__":
    main()
