"""PyTorch / Hugging Face eager peer for bench/decode_bench.ts (GPU machine, same device call).

A LLaMA-2-7B-shaped LlamaForCausalLM with RANDOM fp16 weights created on the device, batch 1, a
16-token prompt, greedy `generate` with the dynamic cache (HF eager, no compile): the baseline
anchors.md quotes (15.4 tok/s on this H200). Also a plain fp16 GEMV chain in a CUDA graph
(torch.matmul per projection, 32 layers + head), i.e. what cuBLAS reaches for one decode step's
weight reads without attention or sampling: a bandwidth reference for our kernels, at batch 1 and
(--batches) at the batched decode's row counts (cuBLAS picks its tensor-core kernels there).

    python3 bench/torch_decode.py [--new 32] [--reps 2] [--batches 1,4,8,16] [--out file.json]
"""
import argparse
import json
import statistics
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--new", type=int, default=32)
p.add_argument("--reps", type=int, default=2)
p.add_argument("--out", default="")
p.add_argument("--no-hf", action="store_true", help="skip the HF eager generate peer")
p.add_argument("--batches", default="1", help="rows of the GEMV chain, e.g. 1,4,8,16 (the batched decode peers)")
args = p.parse_args()

res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "new_tokens": args.new, "prompt_tokens": 16}

# ---- cuBLAS GEMV chain in a CUDA graph (weights of one LLaMA-2-7B decode step, fp16)
d, f, L, V = 4096, 11008, 32, 32000
torch.manual_seed(0)
with torch.no_grad():
    mats = []
    for _ in range(L):
        mats += [torch.randn(3 * d, d, device="cuda", dtype=torch.float16) * 0.02,
                 torch.randn(d, d, device="cuda", dtype=torch.float16) * 0.02,
                 torch.randn(2 * f, d, device="cuda", dtype=torch.float16) * 0.02,
                 torch.randn(d, f, device="cuda", dtype=torch.float16) * 0.02]
    head = torch.randn(V, d, device="cuda", dtype=torch.float16) * 0.02
    nbytes = sum(m.numel() for m in mats) * 2 + head.numel() * 2

    def graph_seconds(fn, replays):
        """Median seconds per replay of fn captured as a CUDA graph (warmed up on a side stream)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        times = []
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(replays):
                g.replay()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / replays)
        return statistics.median(times)

    def timed_chain(b):
        x = torch.randn(b, d, device="cuda", dtype=torch.float16)

        def chain():
            h = x
            for i in range(L):
                qkv = h @ mats[4 * i].t()
                h = h + qkv[:, :d] @ mats[4 * i + 1].t()
                gu = h @ mats[4 * i + 2].t()
                h = h + (torch.nn.functional.silu(gu[:, :f]) * gu[:, f:]) @ mats[4 * i + 3].t()
            return h @ head.t()

        return graph_seconds(chain, 50)

    # each projection alone at each batch (8 distinct weight copies per graph, beyond the L2)
    shapes = {"qkv": (3 * d, d), "o": (d, d), "gate/up": (2 * f, d), "down": (d, f), "head": (V, d)}
    res["cublas_ops"] = []
    for b in [int(v) for v in args.batches.split(",")]:
        for name, (n_out, k_in) in shapes.items():
            ws = [torch.randn(n_out, k_in, device="cuda", dtype=torch.float16) * 0.02 for _ in range(8)]
            xb = torch.randn(b, k_in, device="cuda", dtype=torch.float16)

            def calls():
                for w in ws:
                    xb @ w.t()

            us = graph_seconds(calls, 10) / len(ws) * 1e6
            res["cublas_ops"].append({"op": name, "batch": b, "us": us, "tb_s": n_out * k_in * 2 / us / 1e6})
            print(f"cuBLAS {name} batch {b}: {us:.2f} us {n_out * k_in * 2 / us / 1e6:.2f} TB/s")
            del ws
        torch.cuda.empty_cache()

    for b in [int(v) for v in args.batches.split(",")]:
        step = timed_chain(b)
        key = "cublas_gemv_chain_graph" if b == 1 else f"cublas_gemv_chain_graph_batch{b}"
        res[key] = {"batch": b, "ms_per_step": step * 1e3, "tok_s": b / step, "gb_s": nbytes / step / 1e9,
                    "bytes": nbytes}
        print(f"cuBLAS fp16 GEMV chain (graph), batch {b}: {step * 1e3:.3f} ms/step = {b / step:.1f} tok/s, "
              f"{nbytes / step / 1e9:.0f} GB/s")
    del mats, head
    torch.cuda.empty_cache()

# ---- HF eager generate
try:
    if args.no_hf:
        raise RuntimeError("skipped (--no-hf)")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=f, num_hidden_layers=L, num_attention_heads=32,
                      num_key_value_heads=32, max_position_embeddings=4096)
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    ids = torch.randint(0, V, (1, 16), device="cuda")
    rates = []
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        for _ in range(args.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False)
            torch.cuda.synchronize()
            rates.append(args.new / (time.perf_counter() - t0))
    res["hf_eager_generate"] = {"tok_s": statistics.median(rates), "runs": rates}
    print(f"HF eager generate (fp16, dynamic cache): {statistics.median(rates):.1f} tok/s")
except Exception as e:  # noqa: BLE001 - report, do not hide
    res["hf_eager_generate"] = {"error": repr(e)}
    print("HF eager generate failed:", repr(e))

if args.out:
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2)
