#!/usr/bin/python3
"""PyTorch peer of Loom's training benchmarks (bench_train on CPU, bench_gpu_train on a GPU).

Trains a nanoGPT-style GPT-2 (pre-LN, tied embeddings, no dropout) on random
tokens. On the CPU (default): fp32, attention written out. With --device cuda:
what nanoGPT does on a GPU: bf16 autocast with fp32 weights, TF32 matmuls,
F.scaled_dot_product_attention (flash attention), torch.compile and fused
AdamW. Prints ONE JSON line:
{"impl":"pytorch","tokens_per_s":...,"ms_per_step":...,"loss_first":...,"loss_last":...}
loss_first / loss_last are the losses of the first and last timed steps.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH, T):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)

    def attn(self, x):
        B, T, C = x.shape
        HS = C // self.NH
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = [t.view(B, T, self.NH, HS).transpose(1, 2) for t in (q, k, v)]
        if x.is_cuda:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        att = F.softmax(att.masked_fill(self.mask[:T, :T], float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.attn_proj(y)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, T):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, NH, T) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        for n, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif n.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:T]
        for b in self.h:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied lm_head
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="cuda: skip torch.compile")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="cuda: for the MFU field")
    a = ap.parse_args()
    if a.n_embd % a.n_head or a.steps < 1 or a.warmup < 0:
        sys.exit("torch_train.py: need n_embd %% n_head == 0, steps >= 1, warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1234)
    cuda = a.device == "cuda"
    model = GPT(a.n_layer, a.n_head, a.n_embd, a.vocab, a.seq).to(a.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if cuda else {}))
    forward = model
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if not a.no_compile:
            forward = torch.compile(model)
    g = torch.Generator().manual_seed(42)
    # a fixed pool of random batches, cycled (data loading is not what we time)
    pool = []
    for _ in range(4):
        d = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
        pool.append((d[:, :-1].contiguous().to(a.device), d[:, 1:].contiguous().to(a.device)))
    losses, t0 = [], None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = pool[step % len(pool)]
        with torch.autocast(device_type=a.device, dtype=torch.bfloat16, enabled=cuda):
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # syncs every step, as Loom's step does when it reports the loss
    dt = time.perf_counter() - t0
    result = {"impl": "pytorch",
              "tokens_per_s": a.steps * a.batch * a.seq / dt,
              "ms_per_step": 1000.0 * dt / a.steps,
              "loss_first": losses[a.warmup],
              "loss_last": losses[-1]}
    if cuda:
        n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
        flops_per_token = 6 * n + 12 * a.n_layer * a.n_embd * a.seq
        result["mfu"] = result["tokens_per_s"] * flops_per_token / (a.peak_tflops * 1e12)
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
