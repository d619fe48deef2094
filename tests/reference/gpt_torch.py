#!/usr/bin/python3
"""PyTorch reference for Loom's GPT-2 correctness test.

Usage: gpt_torch.py DIR
Reads and writes DIR as torch_reference.py says (written and read by
tests/reference/torch_reference.h). Model: GPT-2 pre-LN, learned positions, tied
embeddings, no dropout, GELU(tanh), LayerNorm eps 1e-5, AdamW + grad clip.
"""
import math
import sys

import torch
import torch.nn.functional as F

from torch_reference import die, load_params, read_config, train

def expected_shapes(c):
    C, V = c["n_embd"], c["vocab_size"]
    s = {"wte": (V, C), "wpe": (c["max_T"], C)}
    for i in range(c["n_layer"]):
        p = "h.%d." % i
        s.update({p + "ln_1.weight": (C,), p + "ln_1.bias": (C,),
                  p + "attn.c_attn.weight": (3 * C, C), p + "attn.c_attn.bias": (3 * C,),
                  p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
                  p + "ln_2.weight": (C,), p + "ln_2.bias": (C,),
                  p + "mlp.c_fc.weight": (4 * C, C), p + "mlp.c_fc.bias": (4 * C,),
                  p + "mlp.c_proj.weight": (C, 4 * C), p + "mlp.c_proj.bias": (C,)})
    s["ln_f.weight"] = (C,)
    s["ln_f.bias"] = (C,)
    return s


def forward(P, c, idx):
    """idx: (B, T) int64 -> logits (B, T, V)."""
    B, T = idx.shape
    C, NH = c["n_embd"], c["n_head"]
    HS = C // NH
    x = P["wte"][idx] + P["wpe"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(c["n_layer"]):
        p = "h.%d." % i
        h = F.layer_norm(x, (C,), P[p + "ln_1.weight"], P[p + "ln_1.bias"], 1e-5)
        qkv = F.linear(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])
        q, k, v = qkv.split(C, dim=2)
        q, k, v = [t.view(B, T, NH, HS).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + F.linear(y, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), P[p + "ln_2.weight"], P[p + "ln_2.bias"], 1e-5)
        h = F.gelu(F.linear(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"]), approximate="tanh")
        x = x + F.linear(h, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
    return F.linear(x, P["wte"])


def main():
    if len(sys.argv) != 2:
        die("usage: gpt_torch.py DIR")
    d = sys.argv[1]
    c = read_config(d)
    train(d, c, load_params(d, expected_shapes(c)), forward)


if __name__ == "__main__":
    main()
