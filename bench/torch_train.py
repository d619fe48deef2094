#!/usr/bin/python3
"""PyTorch peer of Loom's training benchmarks (bench_train on CPU, bench_gpu_train on a GPU).

Trains a nanoGPT-style GPT-2 (pre-LN, tied embeddings, no dropout), or with
--family llama a Llama (bench/torch_llama.py), on random tokens, with the best
each torch version offers unless told otherwise:
F.scaled_dot_product_attention where it exists (torch >= 2.0; the masked softmax
written out before), AdamW with fused=True where it runs on the device (CPU:
torch >= 2.4), else foreach=True. On the CPU (default):
fp32, eager unless --compile. With --device cuda: what nanoGPT does on a GPU:
bf16 autocast with fp32 weights, TF32 matmuls, torch.compile (unless
--no-compile). Prints ONE JSON line:
{"impl":"pytorch","tokens_per_s":...,"ms_per_step":...,"loss_first":...,"loss_last":...,
 "torch":..., "attention":..., "adamw":..., "compiled":..., "threads":..., "blas":...,
 "mm_gflops":...}
loss_first / loss_last are the losses of the first and last timed steps; mm_gflops
(CPU) is torch.mm's best rate on --mm-size square fp32 matrices, timed after the
steps in the same process.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_llama import Llama


class Block(nn.Module):
    def __init__(self, C, NH, T, sdpa):
        super().__init__()
        self.NH = NH
        self.sdpa = sdpa
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
        if self.sdpa:
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
    def __init__(self, L, NH, C, V, T, sdpa):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, NH, T, sdpa) for _ in range(L)])
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


def make_adamw(model, device, want):
    """AdamW with nanoGPT's groups; want: "auto" (fused where it runs, else foreach), "fused",
    "foreach" or "plain". Returns (optimizer, the kind used)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    kinds = ["fused", "foreach", "plain"] if want == "auto" else [want]
    for kind in kinds:
        extra = {} if kind == "plain" else {kind: True}
        try:
            # one step on a scratch tensor: some versions refuse a kind only when it runs
            probe = torch.zeros(2, device=device, requires_grad=True)
            probe.grad = torch.ones_like(probe)
            torch.optim.AdamW([probe], lr=3e-4, **extra).step()
            return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **extra), kind
        except (TypeError, RuntimeError, ValueError) as e:
            if want != "auto":
                sys.exit("torch_train.py: AdamW(%s=True) does not run here: %s" % (kind, e))
    raise AssertionError("plain AdamW always runs")


def blas_in_use():
    """Which BLAS serves torch's fp32 matmuls: MKL when torch was built with it (linked in, so
    not a file of its own), else the OpenBLAS build the dynamic loader mapped (openblas-openmp
    shares torch's OpenMP pool; openblas-pthread starts a second pool that fights it)."""
    if "Math Kernel Library" in torch.__config__.show():
        return "mkl"
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libopenblas" in line})
    return ",".join(os.path.basename(os.path.dirname(p)) for p in paths) or "unknown"


def mm_gflops(n, repeats=5):
    """torch.mm's best rate on n x n fp32 matrices (A @ B^T, as bench_sgemm times OpenBLAS)."""
    a, b = torch.full((n, n), 0.5), torch.full((n, n), 0.25)
    torch.mm(a, b.t())  # warms caches and threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b.t())
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    ap.add_argument("--n-kv-head", type=int, help="llama: key/value heads (default: n-head)")
    ap.add_argument("--intermediate", type=int, help="llama: SwiGLU hidden units (default: 8C/3 rounded up to 256)")
    ap.add_argument("--untied", action="store_true", help="llama: an output projection of its own")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (torch.compile compiles in them)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the model (default: on cuda, off on the cpu)")
    ap.add_argument("--attention", choices=["auto", "sdpa", "manual"], default="auto",
                    help="auto: scaled_dot_product_attention where torch has it")
    ap.add_argument("--adamw", choices=["auto", "fused", "foreach", "plain"], default="auto")
    ap.add_argument("--mm-size", type=int, default=2048, help="cpu: torch.mm rate on this square size; 0: skip")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="cuda: for the MFU field")
    a = ap.parse_args()
    n_kv_head = a.n_kv_head or a.n_head
    hidden = a.intermediate or (8 * a.n_embd // 3 + 255) // 256 * 256
    if a.n_embd % a.n_head or a.n_head % n_kv_head or a.steps < 1 or a.warmup < 0:
        sys.exit("torch_train.py: need n_embd %% n_head == 0, n_head %% n_kv_head == 0, steps >= 1, warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1234)
    cuda = a.device == "cuda"
    compiled = cuda if a.compile is None else a.compile
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    if a.attention == "sdpa" and not has_sdpa:
        sys.exit("torch_train.py: torch %s has no scaled_dot_product_attention" % torch.__version__)
    sdpa = has_sdpa and a.attention != "manual"
    if a.family == "llama":
        model = Llama(a.n_layer, a.n_head, n_kv_head, a.n_embd, hidden, a.vocab, a.seq, sdpa,
                      tied=not a.untied).to(a.device)
    else:
        model = GPT(a.n_layer, a.n_head, a.n_embd, a.vocab, a.seq, sdpa).to(a.device)
    opt, adamw = make_adamw(model, a.device, a.adamw)
    forward = model
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if compiled:
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
    n_params = sum(p.numel() for p in model.parameters())
    result = {"impl": "pytorch",
              "family": a.family,
              "params": n_params,
              "tokens_per_s": a.steps * a.batch * a.seq / dt,
              "ms_per_step": 1000.0 * dt / a.steps,
              "loss_first": losses[a.warmup],
              "loss_last": losses[-1],
              "torch": torch.__version__,
              "attention": "sdpa" if sdpa else "manual",
              "adamw": adamw,
              "compiled": compiled,
              "threads": torch.get_num_threads(),
              "blas": blas_in_use()}
    if not cuda and a.mm_size > 0:
        result["mm_gflops"] = mm_gflops(a.mm_size)
    if cuda:
        # model_flops_per_token (launch/metrics.cpp): lookups and norm gains are not matmuls
        n = n_params - (model.lookup_parameters() if a.family == "llama" else model.wpe.weight.numel())
        flops_per_token = 6 * n + 12 * a.n_layer * a.n_embd * a.seq
        result["mfu"] = result["tokens_per_s"] * flops_per_token / (a.peak_tflops * 1e12)
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
