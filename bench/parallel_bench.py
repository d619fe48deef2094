#!/usr/bin/python3
"""Loom's parallel layouts side by side: GPT-2 124M (seq 64), one run on this machine.

Runs build/bench/bench_parallel under mpirun for each layout, the same global batch (8
sequences per step) and the same number of cores in use (processes x threads = 2), and prints a
markdown table: global tokens/s, ms/step, the share of a step that rank(s) spent blocked in
tensor-, data- and pipeline-parallel communication, and the bytes each group moved per step.
The pipeline layout runs its 8 sequences as 8 micro-batches of one through 1F1B; its
communication share includes the time a stage waits for its neighbour (the bubble).
Usage: bench/parallel_bench.py [--steps N] [--mpirun mpirun]
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["--n-layer", "12", "--n-head", "12", "--n-embd", "768", "--vocab", "50257", "--seq", "64"]
GLOBAL_BATCH = 8
LAYOUTS = [  # (label, processes, threads, extra flags)
    ("1x1x1", 1, 2, []),
    ("tp=2", 2, 1, ["--tp", "2"]),
    ("tp=2, sequence parallel", 2, 1, ["--tp", "2", "--sequence-parallel"]),
    ("dp=2", 2, 1, ["--dp", "2"]),
    ("pp=2 (8 micro-batches)", 2, 1, ["--pp", "2", "--micro-batches", "8"]),
    ("pp=2 interleaved, 2 chunks (8 micro-batches)", 2, 1,
     ["--pp", "2", "--micro-batches", "8", "--virtual-stages", "2"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/bench/bench_parallel"))
    args = ap.parse_args()
    if not os.path.exists(args.bench):
        sys.exit("parallel_bench.py: %s is missing; build first (scripts/build.sh)" % args.bench)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    rows = []
    for label, procs, threads, extra in LAYOUTS:
        dp = int(extra[extra.index("--dp") + 1]) if "--dp" in extra else 1
        micro = int(extra[extra.index("--micro-batches") + 1]) if "--micro-batches" in extra else 1
        # --bind-to none: Open MPI would pin a lone process, and both its threads, to one core.
        cmd = [args.mpirun, "--oversubscribe", "--bind-to", "none", "-np", str(procs), args.bench] + MODEL + [
            "--batch", str(GLOBAL_BATCH // dp // micro), "--threads", str(threads),
            "--steps", str(args.steps), "--warmup", "1"] + extra
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit("parallel_bench.py: %s failed:\n%s" % (label, out.stderr))
        r = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
        rows.append((label, procs, threads, r))
    print("%s | GPT-2 124M, seq 64, %d sequences per step | %d timed steps" % (
        datetime.date.today().isoformat(), GLOBAL_BATCH, args.steps))
    print()
    print("| layout | processes x threads | tokens/s | ms/step | TP comm share | DP comm share | PP comm share | TP MiB/step | DP MiB/step | PP MiB/step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, procs, threads, r in rows:
        step_s = r["ms_per_step"] / 1e3
        print("| %s | %d x %d | %.0f | %.0f | %.1f%% | %.1f%% | %.1f%% | %.1f | %.1f | %.1f |" % (
            label, procs, threads, r["tokens_per_s"], r["ms_per_step"],
            100 * r["tp_comm_s_per_step"] / step_s, 100 * r["dp_comm_s_per_step"] / step_s,
            100 * r["pp_comm_s_per_step"] / step_s, r["tp_bytes_per_step"] / 2**20,
            r["dp_bytes_per_step"] / 2**20, r["pp_bytes_per_step"] / 2**20))


if __name__ == "__main__":
    main()
