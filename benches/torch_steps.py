#!/usr/bin/env python3
"""PyTorch's training step on this machine's CPU for `wgtrain bench`'s three step workloads (the
same shapes, losses and optimizers as src/bench.rs), as the reference the bench prints ratios
to. Median of 10 steps after 2 warm-up steps, every CPU core PyTorch is given.

Needs torch (`pip install torch numpy`; the PyPI wheel is large); prints nothing useful without.
Prints one line per workload: "torch w-mlp: 12.345 ms/step".
"""
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch is not installed: pip install torch")


class Block(nn.Module):
    """GPT-2's pre-LN block: causal multi-head attention with a packed qkv, a GELU (tanh) MLP of
    four times the width."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab, context, layers, heads, d):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        # the LM head tied to the token embedding, as wgtrain's GPT
        return self.ln_f(x) @ self.wte.weight.t()


def time_steps(model, opt, batch, loss_fn, warmup=2, steps=10):
    def step():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e3


def w_mlp():
    model = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
    x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return time_steps(model, opt, (x, y), lambda m, b: F.cross_entropy(m(b[0]), b[1]))


def w_gpt(context, layers, heads, d, batch):
    model = Gpt(256, context, layers, heads, d)
    x = torch.randint(0, 256, (batch, context))
    y = torch.randint(0, 256, (batch, context))
    # AdamW's defaults on both sides (betas 0.9, 0.999, weight decay 0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = lambda m, b: F.cross_entropy(m(b[0]).view(-1, 256), b[1].view(-1))
    return time_steps(model, opt, (x, y), loss)


if __name__ == "__main__":
    torch.manual_seed(0)
    for name, run in [
        ("w-mlp", w_mlp),
        ("w-gpt", lambda: w_gpt(128, 4, 4, 256, 8)),
        ("w-gpt-s", lambda: w_gpt(64, 4, 4, 128, 12)),
    ]:
        print(f"torch {name}: {run():.3f} ms/step", flush=True)
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
