"""The Llama family as a PyTorch nn.Module, for bench/torch_train.py --family llama.

The math of Hugging Face's LlamaForCausalLM, as tests/reference/llama_torch.py checks Loom
against it: RMSNorm computed in float32, rotary positions in the rotate-half convention (no Llama 3
frequency scaling: it changes the constants, not the work), grouped-query attention with each
key/value head repeated for its group of query heads, a SwiGLU MLP down(silu(gate(x)) * up(x)),
no biases, the output projection tied to the token embedding unless untied. q, k, v are one
Linear and gate, up another, as Loom fuses them.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    """(B, NKV, T, HS) -> (B, NKV * groups, T, HS): key/value head j serves query heads j*G .. j*G+G-1."""
    if groups == 1:
        return x
    B, NKV, T, HS = x.shape
    return x[:, :, None].expand(B, NKV, groups, T, HS).reshape(B, NKV * groups, T, HS)


class LlamaBlock(nn.Module):
    def __init__(self, C, NH, NKV, hidden, T, eps, sdpa):
        super().__init__()
        self.NH, self.NKV, self.HS, self.sdpa = NH, NKV, C // NH, sdpa
        self.input_norm = RMSNorm(C, eps)
        self.qkv_proj = nn.Linear(C, (NH + 2 * NKV) * self.HS, bias=False)
        self.o_proj = nn.Linear(NH * self.HS, C, bias=False)
        self.post_attention_norm = RMSNorm(C, eps)
        self.gate_up_proj = nn.Linear(C, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, C, bias=False)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)

    def attn(self, x, cos, sin):
        B, T, _ = x.shape
        NH, NKV, HS = self.NH, self.NKV, self.HS
        q, k, v = self.qkv_proj(x).split([NH * HS, NKV * HS, NKV * HS], dim=2)
        q = q.view(B, T, NH, HS).transpose(1, 2)
        k = k.view(B, T, NKV, HS).transpose(1, 2)
        v = v.view(B, T, NKV, HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, NH // NKV), repeat_kv(v, NH // NKV)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
            y = F.softmax(att.masked_fill(self.mask[:T, :T], float("-inf")), dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, NH * HS))

    def forward(self, x, cos, sin):
        x = x + self.attn(self.input_norm(x), cos, sin)
        gate, up = self.gate_up_proj(self.post_attention_norm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, L, NH, NKV, C, hidden, V, T, sdpa, rope_theta=10000.0, eps=1e-5, tied=True):
        super().__init__()
        HS = C // NH
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList([LlamaBlock(C, NH, NKV, hidden, T, eps, sdpa) for _ in range(L)])
        self.norm = RMSNorm(C, eps)
        self.lm_head = None if tied else nn.Linear(C, V, bias=False)
        inv_freq = 1.0 / (rope_theta ** (torch.arange(0, HS, 2).float() / HS))
        freqs = torch.outer(torch.arange(T).float(), inv_freq)  # (T, HS/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos()[None, None], persistent=False)  # (1, 1, T, HS)
        self.register_buffer("sin", emb.sin()[None, None], persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def lookup_parameters(self):
        """Parameters that are looked up or scaled, not multiplied (left out of model FLOPs):
        the norms' gains, and the input embedding when the output projection has its own."""
        n = sum(p.numel() for name, p in self.named_parameters() if "norm" in name)
        return n + (self.embed_tokens.weight.numel() if self.lm_head is not None else 0)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:, :, :T], self.sin[:, :, :T]
        for b in self.layers:
            x = b(x, cos, sin)
        x = self.norm(x)
        logits = self.lm_head(x) if self.lm_head is not None else F.linear(x, self.embed_tokens.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
