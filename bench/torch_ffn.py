"""PyTorch peers of bench/sparse_ffn_bench.ts, run in the same device call (issue 9).

One LLaMA-2-7B FFN block (d 4096, d_ff 11008 = 344 experts of 32, fp16), L layers with distinct
weights (default 8, far beyond the L2), timed like the TS bench: CUDA events around `inner`
back-to-back runs, median over samples, divided by L.

  torch_dense_eager    F.linear gate, up, silu*mul, F.linear down (cuBLAS), eager launches
  torch_dense_graph    the same captured in one torch.cuda.CUDAGraph
  torch_gather_graph   naive gather: W.index_select(0, idx) for gate/up rows and down^T rows of the
                       active experts, then matmuls (graph-captured; the copies are the cost)
  torch_gather_eager   the same, eager
  torch_slice_graph    a contiguous slice W[:k] (a view): what a perfect gather could get from cuBLAS
Usage: python3 bench/torch_ffn.py --json out.json [--layers 8] [--quick]
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--json", required=True)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--quick", action="store_true")
a = p.parse_args()

C, N, S = 4096, 344, 32
FF = N * S
L = a.layers
REPS, INNER, WARM = (10, 2, 3) if a.quick else (40, 4, 5)
dev = torch.device("cuda")
torch.manual_seed(0)
dt = torch.float16

gate = [torch.randn(FF, C, device=dev, dtype=dt) * 0.02 for _ in range(L)]
up = [torch.randn(FF, C, device=dev, dtype=dt) * 0.02 for _ in range(L)]
down = [torch.randn(C, FF, device=dev, dtype=dt) * 0.02 for _ in range(L)]  # HF layout (C, FF)
down_t = [d.t().contiguous() for d in down]  # (FF, C): rows per neuron, for the gather
x_all = torch.randn(16, C, device=dev, dtype=dt)


def time_fn(fn, graph):
    """Median µs per layer over REPS samples of INNER runs (fn runs all L layers)."""
    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        run = g.replay
    else:
        run = fn
    for _ in range(WARM):
        run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(REPS):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(INNER):
            run()
        e1.record()
        e1.synchronize()
        samples.append(e0.elapsed_time(e1) * 1000 / INNER / L)
    samples.sort()
    return samples


rows = []


def record(variant, batch, sparsity, samples):
    m = statistics.median(samples)
    rows.append({"variant": variant, "batch": batch, "sparsity": sparsity, "us": round(m, 2),
                 "us_p10": round(samples[len(samples) // 10], 2), "us_p90": round(samples[(9 * len(samples)) // 10], 2)})
    print(f"{variant:22s} B={batch:<2d} s={sparsity:.2f} {m:8.1f} us", flush=True)


# copy bandwidth (read + write), 1 GiB
src = torch.empty(1 << 29, device=dev, dtype=dt).normal_()
dst = torch.empty_like(src)
cs = []
for i in range(23):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    dst.copy_(src)
    e1.record()
    e1.synchronize()
    if i >= 3:
        cs.append(e0.elapsed_time(e1))
copy_tb_s = 2 * (1 << 30) / (statistics.median(cs) * 1e-3) / 1e12
del src, dst
print(f"torch copy bandwidth {copy_tb_s:.3f} TB/s", flush=True)


def dense(batch):
    x = x_all[:batch]

    def fn():
        for l in range(L):
            h = F.silu(F.linear(x, gate[l])) * F.linear(x, up[l])
            F.linear(h, down[l])
    return fn


def gather(batch, idx):
    x = x_all[:batch]

    def fn():
        for l in range(L):
            i = idx[l]
            g = x @ gate[l].index_select(0, i).t()
            u = x @ up[l].index_select(0, i).t()
            h = F.silu(g) * u
            h @ down_t[l].index_select(0, i)
    return fn


def sliced(batch, k):
    x = x_all[:batch]

    def fn():
        for l in range(L):
            h = F.silu(F.linear(x, gate[l][:k])) * F.linear(x, up[l][:k])
            F.linear(h, down[l][:, :k])
    return fn


gen = torch.Generator(device="cpu").manual_seed(1)
for batch in ([1, 4] if a.quick else [1, 2, 4, 8, 16]):
    record("torch_dense_eager", batch, 0.0, time_fn(dense(batch), False))
    record("torch_dense_graph", batch, 0.0, time_fn(dense(batch), True))
    sps = [0.0, 0.25, 0.5, 0.75, 0.9] if batch == 1 else [0.5, 0.9]
    for sp in sps:
        k_exp = round((1 - sp) * N)
        if batch > 1:  # union of independent per-token masks, as in the TS bench
            idx = []
            for _ in range(L):
                m = torch.zeros(N, dtype=torch.bool)
                for _ in range(batch):
                    m[torch.randperm(N, generator=gen)[:k_exp]] = True
                e = m.nonzero().flatten()
                idx.append(e)
        else:
            idx = [torch.randperm(N, generator=gen)[:k_exp].sort().values for _ in range(L)]
        nidx = [((e[:, None] * S) + torch.arange(S)[None, :]).flatten().to(dev) for e in idx]
        union = sum(len(e) for e in idx) / L / N
        record("torch_gather_graph", batch, sp, time_fn(gather(batch, nidx), True))
        if batch == 1:
            record("torch_gather_eager", batch, sp, time_fn(gather(batch, nidx), False))
            record("torch_slice_graph", batch, sp, time_fn(sliced(batch, k_exp * S), True))
        rows[-1]["union_fraction"] = round(union, 3)

out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "copy_bandwidth_tb_s": round(copy_tb_s, 3),
       "layers_per_graph": L, "method": f"{REPS} samples x {INNER} runs after {WARM} warm-up, CUDA events, median / L",
       "rows": rows}
with open(a.json, "w") as f:
    json.dump(out, f, indent=1)
