#!/usr/bin/python3
"""Loom vs PyTorch training benchmark driver (CPU).

Runs, each as its own process with the same model, data, steps and thread count:
  loom              build/bench/bench_train
  torch-debian      bench/torch_train.py under Debian's python3-torch (1.13; kept for history)
  torch-eager       bench/torch_train.py under the peer venv's PyTorch 2.x (bench/setup_peers.sh)
  torch-compile     the same with torch.compile: the peer that counts
and build/bench/bench_sgemm, OpenBLAS's fp32 rate on one square shape with the same threads, the
ceiling that model FLOP/s are stated against. The runs are interleaved: each repeat runs sgemm,
then every implementation of every case, the order rotated from one repeat to the next, so a
busy minute on a shared machine falls on all of them. Reported per implementation: the median
over repeats and the min-max spread of tokens/s, ms/step, peak RSS (ru_maxrss of the child, from
os.wait4), model GFLOP/s and its fraction of the run's median sgemm rate, and Loom's speed over
it: the median and spread of the per-repeat ratios (each from runs minutes apart at most), and
the machine's load average after each run (other work on a shared machine shows there).
Every child gets OMP_NUM_THREADS=threads, and its own thread flag; a torch child also reports
which BLAS it loaded, so a peer on OpenBLAS's pthread build (two thread pools) shows in the table.
Exits 2 if the Loom executable is missing.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "a": dict(n_layer=4, n_embd=256, n_head=4, vocab=8192, seq=256, batch=8, steps=10),
    "b": dict(n_layer=12, n_embd=768, n_head=12, vocab=50257, seq=64, batch=4, steps=5),
    # a small Llama: grouped-query attention (3 query heads per key/value head), SwiGLU, tied
    "llama": dict(family="llama", n_layer=6, n_embd=384, n_head=6, n_kv_head=2, intermediate=1024,
                  vocab=8192, seq=256, batch=8, steps=5),
}
IMPLS = ["loom", "torch-debian", "torch-eager", "torch-compile"]


def n_params(c):
    """Total parameter count, a tied embedding counted once.
    GPT-2: wte V*C + wpe T*C + per layer (ln_1 2C, c_attn 3C^2+3C, attn c_proj C^2+C,
    ln_2 2C, c_fc 4C^2+4C, mlp c_proj 4C^2+C) = 12C^2+13C, + ln_f 2C.
    Llama (tied): embed_tokens V*C + per layer (two RMSNorm gains 2C, qkv (NH+2NKV)*HS*C,
    o_proj C^2, gate_up 2F*C, down F*C) + norm C."""
    C, L = c["n_embd"], c["n_layer"]
    if c.get("family") == "llama":
        HS = C // c["n_head"]
        qkv = (c["n_head"] + 2 * c["n_kv_head"]) * HS * C
        return c["vocab"] * C + L * (2 * C + qkv + C * C + 3 * c["intermediate"] * C) + C
    return c["vocab"] * C + c["seq"] * C + L * (12 * C * C + 13 * C) + 2 * C


def flops_per_token(c):
    # Training FLOPs per token, as model_flops_per_token (launch/metrics.cpp) counts them for MFU:
    #   6 * (N - lookups) + 12 * L * C * T
    # 6 per matmul weight: forward (2) + backward (4); N counts the tied embedding once (it is
    # the lm_head matmul) and leaves out the lookups: GPT-2's wpe T*C, Llama's norm gains
    # (2L+1)*C. 12*L*C*T: attention's q@k^T and att@v (2*2*C*T per token per layer forward, x3
    # with the backward), no causal discount.
    C, T, L = c["n_embd"], c["seq"], c["n_layer"]
    lookups = (2 * L + 1) * C if c.get("family") == "llama" else T * C
    return 6 * (n_params(c) - lookups) + 12 * L * C * T


def case_flags(c):
    """The model's flags, the same for bench_train and torch_train.py."""
    flags = ["--n-layer", c["n_layer"], "--n-head", c["n_head"], "--n-embd", c["n_embd"],
             "--vocab", c["vocab"], "--seq", c["seq"], "--batch", c["batch"]]
    if c.get("family") == "llama":
        flags += ["--family", "llama", "--n-kv-head", c["n_kv_head"], "--intermediate", c["intermediate"]]
    return [str(f) for f in flags]


def run_child(cmd, env):
    """Run cmd, return (parsed JSON dict from its stdout, peak RSS MiB)."""
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
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
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def spread(values, fmt):
    """'median (min-max)' of values, each written with fmt."""
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(values), min(values), max(values))


def commands(a, loom):
    """The command of each implementation that can run here; a note for each that cannot."""
    torch_train = os.path.join(ROOT, "bench/torch_train.py")
    cmds, notes = {"loom": [loom]}, []
    if os.access(a.debian_python, os.X_OK):
        cmds["torch-debian"] = [a.debian_python, torch_train, "--no-compile"]
    else:
        notes.append("no %s: torch-debian left out" % a.debian_python)
    if os.access(a.python, os.X_OK):
        cmds["torch-eager"] = [a.python, torch_train, "--no-compile"]
        cmds["torch-compile"] = [a.python, torch_train, "--compile"]
    else:
        notes.append("no %s: run bench/setup_peers.sh for torch-eager and torch-compile" % a.python)
    return {k: v for k, v in cmds.items() if k in a.impls}, notes


def main():
    ap = argparse.ArgumentParser(description="Loom vs PyTorch training benchmark (CPU)")
    ap.add_argument("--case", choices=list(CASES) + ["all"], default="all")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, help="timed steps (default: 10 for a, 5 for b)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (torch.compile compiles in them)")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ",".join(IMPLS))
    ap.add_argument("--loom-bench", default=os.path.join(ROOT, "build/bench/bench_train"))
    ap.add_argument("--sgemm-bench", default=os.path.join(ROOT, "build/bench/bench_sgemm"))
    ap.add_argument("--sgemm-size", type=int, default=2048, help="M = N = K of the sgemm ceiling")
    ap.add_argument("--debian-python", default="/usr/bin/python3", help="python with Debian's torch 1.13")
    ap.add_argument("--python", default=os.path.join(ROOT, "build/peers-venv/bin/python"),
                    help="python with the current PyTorch (bench/setup_peers.sh makes it)")
    a = ap.parse_args()
    a.impls = a.impls.split(",")
    if a.repeats < 1 or a.threads < 1 or any(i not in IMPLS for i in a.impls):
        sys.exit("train_bench.py: need --repeats >= 1, --threads >= 1, --impls from " + ",".join(IMPLS))

    loom = os.path.abspath(a.loom_bench)
    if not os.access(loom, os.X_OK):
        print("Loom benchmark executable %s is missing (build it first, or pass --loom-bench)." % loom)
        sys.exit(2)
    if not os.access(a.sgemm_bench, os.X_OK):
        sys.exit("train_bench.py: %s is missing: build the bench_sgemm target" % a.sgemm_bench)
    cmds, notes = commands(a, loom)
    for n in notes:
        print("note: " + n, file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    cases = list(CASES) if a.case == "all" else [a.case]
    impls = [i for i in IMPLS if i in cmds]

    sgemm, loads, runs = [], [], {(c, i): [] for c in cases for i in impls}
    for r in range(a.repeats):
        print("round %d of %d" % (r + 1, a.repeats), file=sys.stderr, flush=True)
        j, _ = run_child([a.sgemm_bench, "--threads", str(a.threads), "--size", str(a.sgemm_size)], env)
        sgemm.append(j["gflops"])
        for name in cases:
            c = CASES[name]
            steps = a.steps if a.steps is not None else c["steps"]
            flags = case_flags(c) + [str(f) for f in ["--steps", steps, "--warmup", a.warmup, "--threads", a.threads]]
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for impl in order:
                runs[(name, impl)].append(run_child(cmds[impl] + flags, env))
                loads.append(os.getloadavg()[0])

    peak = statistics.median(sgemm)
    print("%s | %s | %d threads | %d interleaved repeats | sgemm %d^3 (OpenBLAS, bench_sgemm) %s GFLOP/s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpu_model(), a.threads, a.repeats,
        a.sgemm_size, spread(sgemm, "%.1f")))
    print("load average (1 min) after each run: %s, on %d CPUs" % (spread(loads, "%.1f"), os.cpu_count()))
    for impl in impls:
        if impl != "loom":
            j = runs[(cases[0], impl)][0][0]
            print("%s: torch %s, attention %s, AdamW %s, BLAS %s, torch.mm %d^3 %s GFLOP/s" % (
                impl, j["torch"], j["attention"], j["adamw"], j["blas"], a.sgemm_size,
                spread([j["mm_gflops"] for c in cases for j, _ in runs[(c, impl)]], "%.1f")))
    print()
    print("Medians over the repeats, (min-max) after each; Loom / impl: the median of the per-repeat ratios.")
    print()
    print("| case | impl | tokens/s | ms/step | peak RSS MiB | model GFLOP/s | fraction of sgemm | Loom / impl tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in cases:
        fpt = flops_per_token(CASES[name])
        loom_tps = [j["tokens_per_s"] for j, _ in runs[(name, "loom")]] if "loom" in impls else None
        for impl in impls:
            rs = runs[(name, impl)]
            tps = [j["tokens_per_s"] for j, _ in rs]
            ratio = spread([l / t for l, t in zip(loom_tps, tps)], "%.2f") if loom_tps and impl != "loom" else ""
            print("| %s | %s | %s | %s | %s | %.1f | %.2f | %s |" % (
                name, impl, spread(tps, "%.0f"), spread([j["ms_per_step"] for j, _ in rs], "%.0f"),
                spread([rss for _, rss in rs], "%.0f"), fpt * statistics.median(tps) / 1e9,
                fpt * statistics.median(tps) / 1e9 / peak, ratio))
    print()
    for name in cases:
        for impl in impls:
            rs = runs[(name, impl)]
            print("case %s %s: loss %.3f -> %.3f (first repeat)" % (
                name, impl, rs[0][0].get("loss_first", float("nan")), rs[0][0].get("loss_last", float("nan"))))


if __name__ == "__main__":
    main()
