#!/usr/bin/python3
"""Loom vs PyTorch training benchmark driver.

Runs the Loom bench executable (build/bench/bench_train) and bench/torch_train.py
with the same model/data/thread settings, each as its own subprocess, records
each child's peak RSS (ru_maxrss from os.wait4) and its JSON line, runs
build/bench/bench_sgemm for the machine's sgemm rate, and prints a markdown
table. Exits 2 if the Loom executable is missing.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "a": dict(n_layer=4, n_embd=256, n_head=4, vocab=8192, seq=256, batch=8, steps=10),
    "b": dict(n_layer=12, n_embd=768, n_head=12, vocab=50257, seq=64, batch=4, steps=5),
}


def n_params(c):
    """Total parameter count, tied wte counted once.
    wte V*C + wpe T*C + per layer (ln_1 2C, c_attn 3C^2+3C, attn c_proj C^2+C,
    ln_2 2C, c_fc 4C^2+4C, mlp c_proj 4C^2+C) = 12C^2+13C, + ln_f 2C."""
    C, L = c["n_embd"], c["n_layer"]
    return c["vocab"] * C + c["seq"] * C + L * (12 * C * C + 13 * C) + 2 * C


def flops_per_token(c):
    # Training FLOPs per token (PaLM/nanoGPT convention):
    #   flops_per_token = 6*N + 12*L*C*T
    # 6*N: forward (2N) + backward (4N) of every weight matmul; N counts the tied
    # wte once (it is the lm_head matmul; the embedding lookup itself is free).
    # 12*L*C*T: attention scores q@k^T and att@v (2*2*C*T per token per layer
    # forward, x3 for forward+backward), no causal discount.
    return 6 * n_params(c) + 12 * c["n_layer"] * c["n_embd"] * c["seq"]


def run_child(cmd):
    """Run cmd, return (parsed JSON dict from its stdout, peak RSS MiB)."""
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    out = p.stdout.read()
    p.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if p.returncode != 0:
        sys.exit("train_bench.py: %s exited with status %d" % (cmd[0], p.returncode))
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), ru.ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux
            except ValueError:
                pass
    sys.exit("train_bench.py: no JSON line in the output of %s:\n%s" % (cmd[0], out))


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description="Loom vs PyTorch training benchmark")
    ap.add_argument("--case", choices=["a", "b", "all"], default="all")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, help="timed steps (default: 10 for a, 5 for b)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--loom-bench", default=os.path.join(ROOT, "build/bench/bench_train"))
    ap.add_argument("--sgemm-bench", default=os.path.join(ROOT, "build/bench/bench_sgemm"))
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="python with torch for bench/torch_train.py")
    a = ap.parse_args()

    loom = os.path.abspath(a.loom_bench)
    if not os.access(loom, os.X_OK):
        print("Loom benchmark executable %s is missing (build it first, or pass --loom-bench)." % loom)
        sys.exit(2)
    torch_ver = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True).stdout.strip() or "unknown"

    sgemm = None
    if os.access(a.sgemm_bench, os.X_OK):
        sgemm, _ = run_child([a.sgemm_bench, "--threads", str(a.threads)])
    else:
        print("note: %s missing, no sgemm rate" % a.sgemm_bench, file=sys.stderr)
    peak = sgemm["gflops"] if sgemm else None

    rows = []
    for name in (["a", "b"] if a.case == "all" else [a.case]):
        c = CASES[name]
        steps = a.steps if a.steps is not None else c["steps"]
        flags = ["--n-layer", c["n_layer"], "--n-head", c["n_head"], "--n-embd", c["n_embd"],
                 "--vocab", c["vocab"], "--seq", c["seq"], "--batch", c["batch"],
                 "--steps", steps, "--warmup", a.warmup, "--threads", a.threads]
        flags = [str(f) for f in flags]
        res = {}
        for impl, cmd in (("loom", [loom]),
                          ("pytorch", [a.python, os.path.join(ROOT, "bench/torch_train.py")])):
            j, rss = run_child(cmd + flags)
            gfs = flops_per_token(c) * j["tokens_per_s"] / 1e9
            res[impl] = (j, rss)
            rows.append("| %s | %s | %.0f | %.1f | %.0f | %.2f | %s |" % (
                name, impl, j["tokens_per_s"], j["ms_per_step"], rss, gfs,
                "%.2f" % (gfs / peak) if peak else "n/a"))
            print("  %s %s: loss %.4f -> %.4f" % (name, impl, j.get("loss_first", float("nan")),
                                                 j.get("loss_last", float("nan"))), file=sys.stderr)
        (lj, lr), (pj, pr) = res["loom"], res["pytorch"]
        rows.append("| %s | loom/pytorch | %.2fx | %.2fx | %.2fx | | |" % (
            name, lj["tokens_per_s"] / pj["tokens_per_s"], lj["ms_per_step"] / pj["ms_per_step"], lr / pr))

    print("%s | %s | %d threads | torch %s | sgemm %s GFLOP/s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpu_model(), a.threads, torch_ver,
        "%.1f" % peak if peak else "n/a"))
    print()
    print("| case | impl | tokens/s | ms/step | peak RSS MiB | model GFLOP/s | fraction of sgemm |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
