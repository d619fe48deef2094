#!/usr/bin/python3
"""Loom vs PyTorch on one GPU: GPT-2 and Llama training throughput and MFU.

For each case runs build/bench/bench_gpu_train (Loom, bf16 with fp32 master
weights) and bench/torch_train.py --device cuda (nanoGPT's recipe: bf16
autocast, scaled_dot_product_attention, torch.compile, fused AdamW) one after
the other on the same GPU, each in its own process, --repeats times with the
order alternating, and prints a markdown table: the median and min-max of
tokens/s and ms/step, MFU against --peak-tflops (989: H100/H200 SXM dense
bf16), peak memory, and Loom's speed as a ratio of PyTorch's (the median of the
per-repeat ratios).
MFU counts 6N + 12*L*T*C FLOPs per token (N without wpe, or for a Llama without
its norm gains; docs/metrics.md). --dry-run prints the commands and runs nothing.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench_gpu_train --model NAME builds the same shapes; these flags give them to torch_train.py.
GPT2 = ["--vocab", "50257"]
MODELS = {
    "124m": ["--n-layer", "12", "--n-head", "12", "--n-embd", "768"] + GPT2,
    "350m": ["--n-layer", "24", "--n-head", "16", "--n-embd", "1024"] + GPT2,
    "774m": ["--n-layer", "36", "--n-head", "20", "--n-embd", "1280"] + GPT2,
    "1.5b": ["--n-layer", "48", "--n-head", "25", "--n-embd", "1600"] + GPT2,
    # configs/smollm-135m.pbtxt and configs/llama3-1b.pbtxt (tied embeddings, SwiGLU, GQA); the
    # peer leaves out Llama 3's rotary frequency scaling, which changes constants, not work
    "smollm-135m": ["--family", "llama", "--n-layer", "30", "--n-head", "9", "--n-kv-head", "3",
                    "--n-embd", "576", "--intermediate", "1536", "--vocab", "49152"],
    "llama3-1b": ["--family", "llama", "--n-layer", "16", "--n-head", "32", "--n-kv-head", "8",
                  "--n-embd", "2048", "--intermediate", "8192", "--vocab", "128256"],
}


def parse_cases(text):
    """'model:batch,...' -> [(model, batch)]; exits with one sentence on a bad entry."""
    cases = []
    for case in text.split(","):
        name, _, batch = case.partition(":")
        if name not in MODELS or not batch.isdigit() or int(batch) < 1:
            sys.exit("gpu_train_bench.py: --cases entry %r must be MODEL:BATCH with MODEL one of %s "
                     "and BATCH a positive integer" % (case, ", ".join(MODELS)))
        cases.append((name, batch))
    return cases


def run_json(cmd, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="124m:16,1.5b:8,smollm-135m:16,llama3-1b:8",
                    help="model:batch,... with model one of " + ", ".join(MODELS))
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--python", default="/usr/bin/python3", help="python whose torch has CUDA")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args()
    cases = parse_cases(a.cases)
    if a.repeats < 1:
        sys.exit("gpu_train_bench.py: --repeats must be >= 1")
    loom = os.path.join(ROOT, "build", "bench", "bench_gpu_train")
    common = ["--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup),
              "--peak-tflops", str(a.peak_tflops)]
    commands = [(name, batch, [loom, "--model", name, "--batch", batch] + common,
                 [a.python, os.path.join(ROOT, "bench", "torch_train.py"), "--device", "cuda"] + MODELS[name] +
                 ["--batch", batch] + common) for name, batch in cases]
    if a.dry_run:
        for r in range(a.repeats):
            for _, _, ours, theirs in commands:
                for cmd in order_of(r, ours, theirs, a.skip_torch):
                    print(" ".join(cmd))
        return
    if not os.path.exists(loom):
        sys.exit("gpu_train_bench.py: %s is missing: build with LOOM_CUDA=ON (scripts/build.sh)" % loom)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    runs = {(name, batch): {"Loom": [], "PyTorch": []} for name, batch, _, _ in commands}
    for r in range(a.repeats):
        for name, batch, ours, theirs in commands:
            for cmd in order_of(r, ours, theirs, a.skip_torch):
                runs[(name, batch)]["Loom" if cmd is ours else "PyTorch"].append(run_json(cmd, 3600))
    torch_version = subprocess.run([a.python, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    print("### %s — %s, torch %s, %d timed steps after %d warm-up, seq %d, %d interleaved repeats\n" %
          (datetime.date.today(), gpu, torch_version, a.steps, a.warmup, a.seq, a.repeats))
    print("Medians over the repeats, (min-max) after each; Loom / PyTorch: the median of the per-repeat ratios.\n")
    print("| model | batch | impl | tokens/s | ms/step | MFU | peak GiB | Loom / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, batch), by_impl in runs.items():
        pairs = [(o["tokens_per_s"], t["tokens_per_s"]) for o, t in zip(by_impl["Loom"], by_impl["PyTorch"])
                 if "error" not in o and "error" not in t]
        ratio = spread([o / t for o, t in pairs], "%.2f") + "x" if pairs else ""
        for impl, rs in by_impl.items():
            ok = [r for r in rs if "error" not in r]
            if not ok:
                print("| %s | %s | %s | failed: %s | | | | |" % (name, batch, impl, rs[0]["error"] if rs else "skipped"))
                continue
            print("| %s | %s | %s | %s | %s | %.1f%% | %.1f | %s |" % (
                name, batch, impl, spread([r["tokens_per_s"] for r in ok], "%.0f"),
                spread([r["ms_per_step"] for r in ok], "%.1f"), 100 * statistics.median(r["mfu"] for r in ok),
                max(r.get("peak_gib", 0) for r in ok), ratio if impl == "Loom" else ""))
        sys.stdout.flush()


def order_of(repeat, ours, theirs, skip_torch):
    """The commands of one case in one repeat: Loom first in even repeats, PyTorch first in odd."""
    if skip_torch:
        return [ours]
    return [ours, theirs] if repeat % 2 == 0 else [theirs, ours]


def spread(values, fmt):
    """'median (min-max)' of values, each written with fmt."""
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(values), min(values), max(values))


if __name__ == "__main__":
    main()
