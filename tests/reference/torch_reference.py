"""What the PyTorch reference scripts (gpt_torch.py, llama_torch.py) share: reading the weights,
batches and learning rates tests/reference/torch_reference.h writes, and the training run whose
logits, loss, gradients, step losses and final weights it compares with Loom's.

DIR/config.txt holds "key value" lines; DIR/tensors.txt "name dim..." lines with DIR/params/NAME.bin;
DIR/{tokens,targets}.bin (steps, accum, B, T) int32 and DIR/lrs.bin (steps) float32. Writes
DIR/out/{logits.bin,loss.bin,grads/,grad_norm.bin,step_losses.bin,final_params/}. All data
little-endian, C order.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

COMMON_INT_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "max_T", "B", "T", "accum", "steps", "threads")
COMMON_FLOAT_KEYS = ("beta1", "beta2", "eps", "weight_decay", "grad_clip")

_script = os.path.basename(sys.argv[0])


def die(msg):
    sys.stderr.write("%s: error: %s\n" % (_script, msg))
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


def read_config(d, int_keys=(), float_keys=()):
    """The common keys and the script's own, as ints and floats."""
    path = os.path.join(d, "config.txt")
    if not os.path.isfile(path):
        die("missing file %s" % path)
    cfg = {}
    with open(path) as f:
        for ln in f:
            parts = ln.split()
            if len(parts) >= 2:
                cfg[parts[0]] = parts[1]
    ints = COMMON_INT_KEYS + tuple(int_keys)
    out = {}
    for k in ints + COMMON_FLOAT_KEYS + tuple(float_keys):
        if k not in cfg:
            die("config.txt: missing key '%s'" % k)
        try:
            out[k] = int(float(cfg[k])) if k in ints else float(cfg[k])
        except ValueError:
            die("config.txt: bad value for '%s': %r" % (k, cfg[k]))
    if out["n_embd"] % out["n_head"] != 0:
        die("n_embd %d not divisible by n_head %d" % (out["n_embd"], out["n_head"]))
    if out["T"] > out["max_T"]:
        die("T %d > max_T %d" % (out["T"], out["max_T"]))
    return out


def load_params(d, expected):
    """DIR's tensors, each of the shape `expected` (name -> shape) gives it, all of them."""
    path = os.path.join(d, "tensors.txt")
    if not os.path.isfile(path):
        die("missing file %s" % path)
    params = {}
    with open(path) as f:
        for ln in f:
            parts = ln.split()
            if not parts:
                continue
            name, shape = parts[0], tuple(int(x) for x in parts[1:])
            if name not in expected:
                die("tensors.txt: unknown parameter '%s'" % name)
            if shape != expected[name]:
                die("tensors.txt: %s has shape %s, expected %s" % (name, shape, expected[name]))
            a = read_bin(os.path.join(d, "params", name + ".bin"), np.float32, shape)
            params[name] = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    missing = [n for n in expected if n not in params]
    if missing:
        die("tensors.txt: missing parameters: %s" % ", ".join(missing))
    return params


def train(d, c, P, forward, first_logits=None):
    """The run the test compares: `steps` AdamW steps of `accum` micro-batches (weight decay on
    matrices only, clipping), forward(P, c, idx) -> logits. first_logits(idx, logits) is called
    with the first micro-batch's (for further checks)."""
    torch.set_num_threads(max(1, c["threads"]))
    torch.use_deterministic_algorithms(True)
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
                if first_logits is not None:
                    first_logits(tokens[s, a], logits.detach())
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
    print("%s: wrote %s (steps=%d, first loss %.6f)" % (_script, out, S, step_losses[0] if S else float("nan")))
