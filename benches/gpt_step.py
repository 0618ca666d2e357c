"""PyTorch reference: throughput of one training step, for side-by-side comparison.

The model matches a nanoGPT-style decoder (pre-LayerNorm, learned positions, GELU MLP 4x,
tied embeddings, no dropout), trained with AdamW on random tokens. Run it on the same machine,
back to back with the lab's own benchmark, and compare ratios, not absolute times
(`benches/vs_torch.py` does both and prints the table).

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
    /tmp/torch-venv/bin/python benches/gpt_step.py --d-model 384 --n-layers 6 --n-heads 6 \
        --batch 64 --seq-len 32 --vocab 54 --steps 10

`--objective` adds the extra work of the lab's planners, as `trainer/src/objective/` computes it:
`bst` (a second, backward GPT over the reversed sequence and an end marker; the text head
[f; b] + SwiGLU, RMSNorm, one unembedding per half, on every official star-graph pair from
`--prefix-len`) and `next-lat` (NTP plus a transition MLP rolled out `--horizon` steps, with a
SmoothL1 latent loss and a KL to the frozen unembedding). Like the lab, it computes only the
positions the loss reads: NTP's and BST's last block from the prompt's last token on, BST's
backward encoder up to the deepest suffix a pair reads, NextLat's KL of rollout step i from i
positions before the prompt's last token (`--whole-rows`: every position, the step both ran
before 2026-12-06, and NextLat's before 2026-12-07). `--flops` counts the step's
floating-point operations (torch.utils.flop_counter: the matrix products and attention) and
times a large square product to give the cores' peak and the step's floor at that peak.

`--autocast-bf16` runs the forward under `torch.autocast` in bf16 (the backward follows its
dtypes), PyTorch's own mixed precision, to compare with the lab's bf16 products. Add
`--device cuda` on a GPU machine. Prints one JSON line: median ms per step, tokens/s and
sequences/s (and the FLOP count and floor with `--flops`).
"""
import argparse, contextlib, json, statistics, time
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
p.add_argument("--objective", default="ntp", choices=["ntp", "bst", "next-lat"])
p.add_argument("--prefix-len", type=int, default=1, help="prompt tokens (BST's pairs start at its last)")
p.add_argument("--horizon", type=int, default=3, help="NextLat's rollout steps D")
p.add_argument("--min-gap", type=int, default=2, help="BST's smallest gap k")
p.add_argument("--whole-rows", action="store_true",
               help="compute every position, as the lab did before 2026-12-06: the last block over the "
                    "prompt too (NTP, BST's forward encoder) and BST's backward encoder over the whole "
                    "reversed row, rather than only the positions the loss reads")
p.add_argument("--flops", action="store_true", help="count the step's FLOPs and time the peak")
p.add_argument("--autocast-bf16", action="store_true",
               help="run the forward under torch.autocast with bf16 (PyTorch's mixed precision; on CPUs "
                    "with AMX its products run on the tiles), the like-for-like of the lab's bf16 products")
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

    def forward(self, x, start=0):
        """The block's output at positions start.. (keys and values over all), as the lab's
        `Block::forward_from`: queries, attention, projection and MLP on those rows alone."""
        b, t, _ = x.shape
        h, tq = self.ln1(x), t - start
        if start == 0:
            q, k, v = self.qkv(h).split(D, dim=2)
        else:
            q = F.linear(h[:, start:], self.qkv.weight[:D], self.qkv.bias[:D])
            k, v = F.linear(h, self.qkv.weight[D:], self.qkv.bias[D:]).split(D, dim=2)
        q = q.reshape(b, tq, H, D // H).transpose(1, 2)
        k, v = [z.reshape(b, t, H, D // H).transpose(1, 2) for z in (k, v)]
        if start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i sits at position start + i
            mask = torch.ones(tq, t, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x[:, start:] + self.proj(y.transpose(1, 2).reshape(b, tq, D))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self, max_len):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(max_len, D)
        self.blocks = nn.ModuleList(Block() for _ in range(a.n_layers))
        self.ln = nn.LayerNorm(D)

    def hidden(self, x, start=0):
        """Final hidden states of positions start.. (the lab's `Gpt::forward_from`)."""
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks[:-1]:
            h = block(h)
        return self.ln(self.blocks[-1](h, start))

    def forward(self, x):
        return self.hidden(x) @ self.tok.weight.T


class BeliefHead(nn.Module):
    """models/src/belief.rs: x = [f; b], x + SwiGLU(x), RMSNorm, one unembedding per half."""

    def __init__(self):
        super().__init__()
        hidden = max(1, round(8 * 2 * D / 3 / 128)) * 128
        self.gate, self.up = nn.Linear(2 * D, hidden, bias=False), nn.Linear(2 * D, hidden, bias=False)
        self.down = nn.Linear(hidden, 2 * D, bias=False)
        self.norm = nn.RMSNorm(2 * D)
        self.lm_head = nn.Linear(D, V, bias=False)

    def forward(self, f, b):
        x = torch.cat([f, b], dim=-1)
        x = self.norm(x + self.down(F.silu(self.gate(x)) * self.up(x)))
        return self.lm_head(x[..., :D]), self.lm_head(x[..., D:])


class Transition(nn.Module):
    """trainer/src/objective/next_lat.rs: h + MLP(LayerNorm([e; h])), 2d -> d -> d -> d."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(2 * D)
        self.fc1, self.fc2, self.fc3 = nn.Linear(2 * D, D), nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, h, e):
        x = self.norm(torch.cat([e, h], dim=-1))
        return h + self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class Objective(nn.Module):
    def __init__(self):
        super().__init__()
        self.gpt = Gpt(T)
        if a.objective == "bst":
            self.backward_gpt, self.head = Gpt(T + 2), BeliefHead()
            # The official star-graph pairs (t, j = t + k) of a full row of T + 1 tokens.
            L = T + 1
            pairs = [(t, j) for t in range(max(a.prefix_len - 1, 0), L - 1) for j in range(t + a.min_gap, L + 1)]
            self.register_buffer("pt", torch.tensor([t for t, _ in pairs]), persistent=False)
            self.register_buffer("pj", torch.tensor([j for _, j in pairs]), persistent=False)
        if a.objective == "next-lat":
            self.transition = Transition()

    def forward(self, rows):
        x, y = rows[:, :-1], rows[:, 1:]
        if a.objective == "bst":
            end = torch.full((rows.shape[0], 1), V - 1, dtype=rows.dtype, device=rows.device)
            # b_j sits at L - j; the encoder is causal, so it reads no deeper than the deepest
            # pair needs (the lab's bst.rs does the same; --whole-rows reads it all).
            reversed_rows = torch.cat([end, rows.flip(1)], dim=1)
            if not a.whole_rows:
                reversed_rows = reversed_rows[:, : rows.shape[1] - int(self.pj.min()) + 1]
            back = self.backward_gpt.hidden(reversed_rows)
            start = 0 if a.whole_rows else int(self.pt.min())  # the pairs' prefixes start there
            f = self.gpt.hidden(x, start)[:, self.pt - start]
            b = back[:, rows.shape[1] - self.pj]
            nxt, prv = self.head(f, b)
            return (F.cross_entropy(nxt.reshape(-1, V), rows[:, self.pt + 1].reshape(-1))
                    + F.cross_entropy(prv.reshape(-1, V), rows[:, self.pj - 1].reshape(-1))) / 2
        # NTP's loss reads the targets only, from the prompt's last token on, so its last block
        # skips the positions before (as the lab's ntp.rs); NextLat's latents need them all.
        start = 0 if a.whole_rows or a.objective == "next-lat" else max(a.prefix_len - 1, 0)
        h = self.gpt.hidden(x, start)
        logits = h @ self.gpt.tok.weight.T
        loss = F.cross_entropy(logits.reshape(-1, V), y[:, start:].reshape(-1))
        if a.objective == "next-lat":
            target, teacher = h.detach(), F.softmax(logits.detach(), -1)
            w = self.gpt.tok.weight.detach()
            pred, extra = h, 0.0
            for i in range(1, min(a.horizon, T - 1) + 1):
                pred = self.transition(pred[:, : T - i], self.gpt.tok(x[:, i:]))
                latent = F.smooth_l1_loss(pred, target[:, i:])
                # The KL is read where position s + i is a target, so from s = prefix - 1 - i
                # on (the lab's next_lat.rs skips the rows before; --whole-rows keeps them).
                s = 0 if a.whole_rows else max(a.prefix_len - 1 - i, 0)
                log_s = F.log_softmax(pred[:, s:] @ w.T, -1)
                kl = F.kl_div(log_s, teacher[:, i + s:], reduction="none").sum(-1).mean()
                extra = extra + (latent + kl) / a.horizon
            loss = loss + extra
        return loss


dev = torch.device(a.device)
model = Objective().to(dev)
warmup = 2
if a.compile:
    model, warmup = torch.compile(model), 5  # the first calls compile
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)


precision = torch.autocast(dev.type, dtype=torch.bfloat16) if a.autocast_bf16 else contextlib.nullcontext()


def step():
    rows = torch.randint(0, V - 1, (a.batch, T + 1), device=dev)
    with precision:
        loss = model(rows)
    opt.zero_grad()
    loss.backward()
    opt.step()


times = []
for i in range(a.steps + warmup):
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    if i >= warmup:
        times.append(time.perf_counter() - start)
ms = statistics.median(times) * 1e3
params = sum(p.numel() for p in model.parameters())
out = {"impl": f"torch-{torch.__version__}-{a.device}" + ("-compile" if a.compile else "")
               + ("-autocast-bf16" if a.autocast_bf16 else ""),
       "objective": a.objective, "d_model": D, "n_layers": a.n_layers, "batch": a.batch, "seq_len": T,
       "params": params, "ms_per_step": round(ms, 2), "tokens_per_s": round(a.batch * T / ms * 1e3),
       "seqs_per_s": round(a.batch / ms * 1e3)}
if a.flops:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    # The cores' peak: the best of many large square products (what the step's GEMMs could reach;
    # the best, not the median, since a drifting machine only ever makes a product slower).
    n = 1024 if dev.type == "cpu" else 8192
    m1, m2 = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    best = float("inf")
    for _ in range(20):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(m1, m2)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    peak = 2 * n**3 / best
    out |= {"gflop_per_step": round(counter.get_total_flops() / 1e9, 3), "peak_gflops": round(peak / 1e9, 1),
            "floor_ms": round(counter.get_total_flops() / peak * 1e3, 2)}
print(json.dumps(out))
