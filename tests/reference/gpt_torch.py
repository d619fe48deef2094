#!/usr/bin/python3
"""PyTorch reference for Loom's GPT-2 correctness test.

Usage: gpt_torch.py DIR
Reads DIR/{config.txt,tensors.txt,params/*.bin,tokens.bin,targets.bin,lrs.bin}
(written by the C++ test) and writes DIR/out/{logits.bin,loss.bin,grads/,
grad_norm.bin,step_losses.bin,final_params/}. All data is little-endian
float32 / int32, C order. Model: GPT-2 pre-LN, learned positions, tied
embeddings, no dropout, GELU(tanh), LayerNorm eps 1e-5, AdamW + grad clip.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

INT_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "max_T", "B", "T",
            "accum", "steps", "threads")
FLOAT_KEYS = ("beta1", "beta2", "eps", "weight_decay", "grad_clip")


def die(msg):
    sys.stderr.write("gpt_torch.py: error: %s\n" % msg)
    sys.exit(1)


def read_bin(path, dtype, shape):
    if not os.path.isfile(path):
        die("missing file %s" % path)
    a = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))
    n = int(np.prod(shape))
    if a.size != n:
        die("%s: expected %d elements for shape %s, found %d" % (path, n, tuple(shape), a.size))
    return a.reshape(shape).astype(dtype)


def write_bin(path, t):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t.detach().cpu().contiguous().numpy().astype("<f4").tofile(path)


def read_config(d):
    path = os.path.join(d, "config.txt")
    if not os.path.isfile(path):
        die("missing file %s" % path)
    cfg = {}
    with open(path) as f:
        for ln in f:
            parts = ln.split()
            if len(parts) >= 2:
                cfg[parts[0]] = parts[1]
    out = {}
    for k in INT_KEYS + FLOAT_KEYS:
        if k not in cfg:
            die("config.txt: missing key '%s'" % k)
        try:
            out[k] = int(float(cfg[k])) if k in INT_KEYS else float(cfg[k])
        except ValueError:
            die("config.txt: bad value for '%s': %r" % (k, cfg[k]))
    if out["n_embd"] % out["n_head"] != 0:
        die("n_embd %d not divisible by n_head %d" % (out["n_embd"], out["n_head"]))
    if out["T"] > out["max_T"]:
        die("T %d > max_T %d" % (out["T"], out["max_T"]))
    return out


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


def load_params(d, c):
    path = os.path.join(d, "tensors.txt")
    if not os.path.isfile(path):
        die("missing file %s" % path)
    exp = expected_shapes(c)
    params = {}
    with open(path) as f:
        for ln in f:
            parts = ln.split()
            if not parts:
                continue
            name, shape = parts[0], tuple(int(x) for x in parts[1:])
            if name not in exp:
                die("tensors.txt: unknown parameter '%s'" % name)
            if shape != exp[name]:
                die("tensors.txt: %s has shape %s, expected %s" % (name, shape, exp[name]))
            a = read_bin(os.path.join(d, "params", name + ".bin"), np.float32, shape)
            params[name] = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    missing = [n for n in exp if n not in params]
    if missing:
        die("tensors.txt: missing parameters: %s" % ", ".join(missing))
    return params


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
    torch.set_num_threads(max(1, c["threads"]))
    torch.use_deterministic_algorithms(True)
    P = load_params(d, c)
    S, A, B, T, V = c["steps"], c["accum"], c["B"], c["T"], c["vocab_size"]
    shape = (S, A, B, T)
    tokens = torch.from_numpy(read_bin(os.path.join(d, "tokens.bin"), np.int32, shape).astype(np.int64))
    targets = torch.from_numpy(read_bin(os.path.join(d, "targets.bin"), np.int32, shape).astype(np.int64))
    lrs = read_bin(os.path.join(d, "lrs.bin"), np.float32, (S,))
    if tokens.min() < 0 or tokens.max() >= V:
        die("tokens.bin: token ids out of range [0, %d)" % V)
    if targets.min() < -1 or targets.max() >= V:
        die("targets.bin: target ids out of range [-1, %d)" % V)

    out = os.path.join(d, "out")
    os.makedirs(out, exist_ok=True)
    names = list(P.keys())
    decay = [P[n] for n in names if P[n].dim() >= 2]
    no_decay = [P[n] for n in names if P[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=float(lrs[0]) if S > 0 else 0.0,
                            betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    step_losses = []
    for s in range(S):
        opt.zero_grad(set_to_none=True)
        micro = []
        for a in range(A):
            logits = forward(P, c, tokens[s, a])
            loss = F.cross_entropy(logits.view(-1, V), targets[s, a].reshape(-1), ignore_index=-1)
            if s == 0 and a == 0:
                write_bin(os.path.join(out, "logits.bin"), logits)
                write_bin(os.path.join(out, "loss.bin"), loss.reshape(1))
            (loss / A).backward()
            micro.append(loss.item())
        step_losses.append(sum(micro) / A)
        if s == 0:
            for n in names:
                write_bin(os.path.join(out, "grads", n + ".bin"), P[n].grad)
            norm = torch.sqrt(sum((P[n].grad.double() ** 2).sum() for n in names))
            write_bin(os.path.join(out, "grad_norm.bin"), norm.float().reshape(1))
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_([P[n] for n in names], c["grad_clip"])
        for g in opt.param_groups:
            g["lr"] = float(lrs[s])
        opt.step()
    write_bin(os.path.join(out, "step_losses.bin"), torch.tensor(step_losses, dtype=torch.float32))
    for n in names:
        write_bin(os.path.join(out, "final_params", n + ".bin"), P[n])
    print("gpt_torch.py: wrote %s (steps=%d, first loss %.6f)" %
          (out, S, step_losses[0] if S else float("nan")))


if __name__ == "__main__":
    main()
