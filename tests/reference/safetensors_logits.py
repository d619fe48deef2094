#!/usr/bin/python3
"""GPT-2 logits from a Hugging Face-named safetensors file, in PyTorch.

Usage: safetensors_logits.py MODEL.safetensors TOKENS.bin B T OUT.bin
Loads MODEL with the `safetensors` package (what Hugging Face tools use), takes n_head from its
__metadata__, runs GPT-2 (pre-LN, learned positions, GELU tanh, LayerNorm eps 1e-5, Conv1D
projections y = x @ W + b with W stored (in, out), output tied to wte) on the (B, T) int32
little-endian tokens, and writes the (B, T, vocab) logits as little-endian float32. Written
independently of Loom from the tensor names and shapes alone, in float64.
Exit code 3: the safetensors package is missing.
"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

try:
    from safetensors import safe_open
    from safetensors.torch import load_file
except ImportError:
    sys.stderr.write("safetensors_logits.py: error: the Python package `safetensors` is not installed for "
                     "%s; run scripts/setup.sh (it installs it from PyPI with pip)\n" % sys.executable)
    sys.exit(3)


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def main():
    if len(sys.argv) != 6:
        sys.stderr.write(__doc__)
        sys.exit(2)
    path, tokens_path, B, T, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    n_head = int(meta["n_head"])
    w = {k: v.double() for k, v in load_file(path).items()}
    n_layer = 0
    while "h.%d.ln_1.weight" % n_layer in w:
        n_layer += 1
    tokens = torch.from_numpy(np.fromfile(tokens_path, dtype="<i4").astype(np.int64)).reshape(B, T)

    C = w["wte.weight"].shape[1]
    hs = C // n_head
    x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layer):
        p = "h.%d." % i
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = gelu_tanh(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"])
    logits = x @ w["wte.weight"].t()
    logits.float().numpy().astype("<f4").tofile(out_path)


if __name__ == "__main__":
    main()
