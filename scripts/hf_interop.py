"""Checks checkpoint compatibility with Hugging Face transformers, both ways (GPU machine).

1. transformers builds small random GPT-2 and LLaMA (GQA) models, saves them with
   save_pretrained (safetensors); LTE Pipeline loads them (scripts/hf_logits.ts load) and its
   logits are compared with PyTorch's.
2. LTE Pipeline initialises models and saves them (scripts/hf_logits.ts save); transformers loads
   them with from_pretrained and its logits are compared with ours.
Prints the max absolute logit difference per case and exits non-zero above 1e-3.

    python3 scripts/hf_interop.py OUT_DIR [device]
"""
import json, os, subprocess, sys
import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, AutoModelForCausalLM

out = sys.argv[1]
device = sys.argv[2] if len(sys.argv) > 2 else "auto"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
V = 101
ids = torch.randint(0, V, (2, 13))
ids_path = os.path.join(out, "ids.json")
json.dump(ids.tolist(), open(ids_path, "w"))

def deno(*args):
    r = subprocess.run(["deno", "run", "-A", "scripts/hf_logits.ts", *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"deno {args[0]} failed")
    return r.stdout

def ours(path, shape):
    return np.fromfile(path, dtype="<f4").reshape(shape)

results = {}
torch.backends.cuda.matmul.allow_tf32 = False
cases = {
    "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                         resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)),
    "llama": LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                          rms_norm_eps=1e-6, tie_word_embeddings=False)),
}
for name, model in cases.items():
    model.eval()
    d = os.path.join(out, f"hf_{name}")
    model.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        ref = model(ids).logits.float().numpy()
    deno("load", d, ids_path, os.path.join(out, f"hf_{name}.bin"), device)
    got = ours(os.path.join(out, f"hf_{name}.bin"), ref.shape)
    results[f"hf->lte {name}"] = float(np.abs(got - ref).max())

for name in ["gpt2", "llama"]:
    d = os.path.join(out, f"lte_{name}")
    deno("save", name, d, ids_path, os.path.join(out, f"lte_{name}.bin"), device)
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        ref = model(ids).logits.float().numpy()
    got = ours(os.path.join(out, f"lte_{name}.bin"), ref.shape)
    results[f"lte->hf {name}"] = float(np.abs(got - ref).max())

for k, v in results.items():
    print(f"{k:16s} max |logit diff| = {v:.3e}")
json.dump(results, open(os.path.join(out, "hf_interop.json"), "w"), indent=2)
sys.exit(0 if all(v < 1e-3 for v in results.values()) else 1)
