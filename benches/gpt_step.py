"""PyTorch reference: throughput of one GPT training step, for side-by-side comparison.

The model matches a nanoGPT-style decoder (pre-LayerNorm, learned positions, GELU MLP 4x,
tied embeddings, no dropout), trained with AdamW on random tokens. Run it on the same machine,
back to back with the lab's own benchmark, and compare ratios, not absolute times.

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
    /tmp/torch-venv/bin/python benches/gpt_step.py --d-model 384 --n-layers 6 --n-heads 6 \
        --batch 64 --seq-len 32 --vocab 54 --steps 10

Add `--device cuda` on a GPU machine. Prints one JSON line: median ms per step and tokens/s.
"""
import argparse, json, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--d-model", type=int, default=128)
p.add_argument("--n-layers", type=int, default=2)
p.add_argument("--n-heads", type=int, default=4)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--seq-len", type=int, default=32)
p.add_argument("--vocab", type=int, default=54)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--threads", type=int, default=0, help="0 = PyTorch's default")
p.add_argument("--device", default="cpu", help="cpu or cuda")
p.add_argument("--compile", action="store_true", help="torch.compile the model (more warm-up steps)")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(0)
D, H, V, T = a.d_model, a.n_heads, a.vocab, a.seq_len


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = [z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v)]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, D))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(Block() for _ in range(a.n_layers))
        self.ln = nn.LayerNorm(D)

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.ln(h) @ self.tok.weight.T


dev = torch.device(a.device)
model = Gpt().to(dev)
warmup = 2
if a.compile:
    model, warmup = torch.compile(model), 5  # the first calls compile
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
times = []
for step in range(a.steps + warmup):
    x = torch.randint(0, V, (a.batch, T), device=dev)
    y = torch.randint(0, V, (a.batch, T), device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    if step >= warmup:
        times.append(time.perf_counter() - start)
ms = statistics.median(times) * 1e3
params = sum(p.numel() for p in model.parameters())
print(json.dumps({"impl": f"torch-{torch.__version__}-{a.device}" + ("-compile" if a.compile else ""), "d_model": D, "n_layers": a.n_layers,
                  "batch": a.batch, "seq_len": T, "params": params, "ms_per_step": round(ms, 2),
                  "tokens_per_s": round(a.batch * T / ms * 1e3)}))
