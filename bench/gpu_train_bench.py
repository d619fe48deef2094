#!/usr/bin/python3
"""Loom vs PyTorch on one GPU: GPT-2 training throughput and MFU.

For each case runs build/bench/bench_gpu_train (Loom, bf16 with fp32 master
weights) and bench/torch_train.py --device cuda (nanoGPT's recipe: bf16
autocast, scaled_dot_product_attention, torch.compile, fused AdamW) one after
the other on the same GPU, each in its own process, and prints a markdown
table: tokens/s, ms/step, MFU against --peak-tflops (989: H100/H200 SXM dense
bf16), peak memory, and Loom's speed as a ratio of PyTorch's.
MFU counts 6N + 12*L*T*C FLOPs per token (N without wpe; docs/metrics.md).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # n_layer, n_head, n_embd
    "124m": (12, 12, 768),
    "350m": (24, 16, 1024),
    "774m": (36, 20, 1280),
    "1.5b": (48, 25, 1600),
}


def run_json(cmd, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="124m:16,1.5b:8", help="model:batch,... (seq 1024)")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--skip-torch", action="store_true")
    a = ap.parse_args()
    loom = os.path.join(ROOT, "build", "bench", "bench_gpu_train")
    if not os.path.exists(loom):
        sys.exit("gpu_train_bench.py: %s is missing: build with LOOM_CUDA=ON (scripts/build.sh)" % loom)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    import torch
    print("### %s — %s, torch %s, %d timed steps after %d warm-up, seq %d\n" %
          (datetime.date.today(), gpu, torch.__version__, a.steps, a.warmup, a.seq))
    print("| model | batch | impl | tokens/s | ms/step | MFU | peak GiB | Loom / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        name, batch = case.split(":")
        L, NH, C = MODELS[name]
        common = ["--steps", str(a.steps), "--warmup", str(a.warmup), "--peak-tflops", str(a.peak_tflops)]
        ours = run_json([loom, "--model", name, "--batch", batch, "--seq", str(a.seq)] + common, 3600)
        theirs = {"error": "skipped"} if a.skip_torch else run_json(
            ["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_train.py"), "--device", "cuda",
             "--n-layer", str(L), "--n-head", str(NH), "--n-embd", str(C), "--vocab", "50257",
             "--seq", str(a.seq), "--batch", batch] + common, 3600)
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
