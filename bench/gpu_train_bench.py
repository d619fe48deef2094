#!/usr/bin/python3
"""Loom vs PyTorch on one GPU: GPT-2 and Llama training throughput and MFU.

For each case runs build/bench/bench_gpu_train (Loom, bf16 with fp32 master
weights) and bench/torch_train.py --device cuda (nanoGPT's recipe: bf16
autocast, scaled_dot_product_attention, torch.compile, fused AdamW) one after
the other on the same GPU, each in its own process, and prints a markdown
table: tokens/s, ms/step, MFU against --peak-tflops (989: H100/H200 SXM dense
bf16), peak memory, and Loom's speed as a ratio of PyTorch's.
MFU counts 6N + 12*L*T*C FLOPs per token (N without wpe, or for a Llama without
its norm gains; docs/metrics.md). --dry-run prints the commands and runs nothing.
"""
import argparse
import datetime
import json
import os
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
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--python", default="/usr/bin/python3", help="python whose torch has CUDA")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args()
    cases = parse_cases(a.cases)
    loom = os.path.join(ROOT, "build", "bench", "bench_gpu_train")
    common = ["--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup),
              "--peak-tflops", str(a.peak_tflops)]
    commands = [(name, batch, [loom, "--model", name, "--batch", batch] + common,
                 [a.python, os.path.join(ROOT, "bench", "torch_train.py"), "--device", "cuda"] + MODELS[name] +
                 ["--batch", batch] + common) for name, batch in cases]
    if a.dry_run:
        for _, _, ours, theirs in commands:
            print(" ".join(ours))
            if not a.skip_torch:
                print(" ".join(theirs))
        return
    if not os.path.exists(loom):
        sys.exit("gpu_train_bench.py: %s is missing: build with LOOM_CUDA=ON (scripts/build.sh)" % loom)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    import torch
    print("### %s — %s, torch %s, %d timed steps after %d warm-up, seq %d\n" %
          (datetime.date.today(), gpu, torch.__version__, a.steps, a.warmup, a.seq))
    print("| model | batch | impl | tokens/s | ms/step | MFU | peak GiB | Loom / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, batch, ours_cmd, theirs_cmd in commands:
        ours = run_json(ours_cmd, 3600)
        theirs = {"error": "skipped"} if a.skip_torch else run_json(theirs_cmd, 3600)
        ratio = ("%.2fx" % (ours["tokens_per_s"] / theirs["tokens_per_s"])
                 if "error" not in ours and "error" not in theirs else "")
        for r in (ours, theirs):
            impl = "Loom" if r is ours else "PyTorch"
            if "error" in r:
                print("| %s | %s | %s | failed: %s | | | | |" % (name, batch, impl, r["error"]))
                continue
            print("| %s | %s | %s | %.0f | %.1f | %.1f%% | %.1f | %s |" % (
                name, batch, impl, r["tokens_per_s"], r["ms_per_step"], 100 * r["mfu"],
                r.get("peak_gib", 0), ratio if r is ours else ""))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
