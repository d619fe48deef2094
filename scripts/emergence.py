#!/usr/bin/env python3
"""The emergence experiment: does multi-digit addition appear suddenly as models grow?

Trains a ladder of GPT sizes on the same addition task (operands of several lengths, mixed) with
the same token budget, each size with several seeds, evaluates each model's held-out exact match
per operand length and its held-out loss, and draws

  accuracy against parameters       one line per operand length (log x), mean and min-max of the seeds
  accuracy against training compute the same against model FLOPs
  held-out loss against compute     every run, the means, and the least-squares power law
                                    loss = a * C^b over every run

into OUT/emergence.png, with every number in OUT/results.json, OUT/results.tsv and OUT/runs.tsv.
docs/emergence.md shows a run and what it means.

  scripts/emergence.py [--loom build/loom] [--out runs/emergence] [--ladder small|large]
                       [--sizes LxHxC:LR,...] [--seeds N] [--threads N] [--set FIELD=VALUE ...]

The small ladder (the default) is six GPTs from 3.8k to 0.8M parameters (211x) on 1- to
5-digit addition, 2000 steps of 64 problems each, 3 seeds (train.seed 1337, 1338, 1339): about
8 minutes on two idle CPU cores. The large ladder goes to GPT-2-small widths and is meant for
GPUs (each run is one `loom train`; put `mpirun -np N` in front with --loom-prefix for a layout).

Each run is a `loom train` in OUT/<rung>/seed-<seed>; a run that finished is not trained again,
and an interrupted one resumes from its checkpoint, so the script can be stopped and rerun. Only
the plot and the tables are rewritten. Exit 2 with one sentence on bad arguments.
"""

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (n_layer, n_head, n_embd, lr): the learning rate falls with the width (about 0.1 / n_embd,
# at most 3e-3), the common rule for Adam on transformers of fixed depth-to-width shape.
LADDERS = {
    "small": [(1, 2, 16, 3e-3), (1, 2, 24, 3e-3), (2, 2, 32, 3e-3), (2, 4, 48, 2e-3), (3, 4, 80, 1.25e-3),
              (4, 4, 128, 8e-4)],
    # Head sizes 32 and 64: what the CUDA attention takes.
    "large": [(2, 2, 64, 1.5e-3), (4, 4, 128, 8e-4), (4, 8, 256, 4e-4), (6, 6, 384, 3e-4), (8, 8, 512, 2.5e-4),
              (12, 12, 768, 1.5e-4)],
}


def fail(message):
    print(f"emergence.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_sizes(text):
    """'1x2x16:0.003,2x4x48:0.002' -> [(1, 2, 16, 0.003), (2, 4, 48, 0.002)]."""
    sizes = []
    for item in text.split(","):
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+):([0-9.eE+-]+)", item.strip())
        if not m:
            fail(f"--sizes item '{item}' is not LAYERSxHEADSxWIDTH:LR, e.g. 2x4x48:0.002")
        n_layer, n_head, n_embd, lr = int(m[1]), int(m[2]), int(m[3]), float(m[4])
        if min(n_layer, n_head, n_embd) <= 0 or n_embd % n_head != 0 or not lr > 0:
            fail(f"--sizes item '{item}' needs positive sizes, heads dividing the width and lr > 0")
        sizes.append((n_layer, n_head, n_embd, lr))
    return sizes


def rung_name(size):
    n_layer, n_head, n_embd, _ = size
    return f"L{n_layer}-H{n_head}-C{n_embd}"


def finished(run_dir):
    """The final evaluation record of a finished run, or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(os.path.join(run_dir, "model.loom")) or not os.path.exists(path):
        return None
    last_eval, steps = None, None
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "train":
                steps = record.get("steps")
            if record.get("kind") == "eval":
                last_eval = record
    if last_eval is None or steps is None or last_eval["step"] != steps:
        return None
    return last_eval


def header_numbers(text):
    """Parameters and model FLOPs per token from `loom train`'s header lines."""
    params = re.search(r": ([0-9.]+)([kMB]?) parameters", text)
    flops = re.search(r"metrics: ([0-9.e+]+) model FLOPs per token", text)
    if not params or not flops:
        return None
    scale = {"": 1, "k": 1e3, "M": 1e6, "B": 1e9}[params[2]]
    return float(params[1]) * scale, float(flops[1])


def gpt2_parameters(n_layer, n_embd, vocab, seq_len):
    """Exact parameter count of Loom's GPT-2 (tied head): embeddings, blocks, final LayerNorm."""
    block = 12 * n_embd * n_embd + 13 * n_embd
    return vocab * n_embd + seq_len * n_embd + n_layer * block + 2 * n_embd


def power_law_fit(xs, ys):
    """Least squares of log y = log a + b log x: returns a, b and R^2 in log space."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    n = len(lx)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((x - mx) ** 2 for x in lx)
    sxy = sum((x - mx) * (y - my) for x, y in zip(lx, ly))
    b = sxy / sxx
    log_a = my - b * mx
    ss_res = sum((y - (log_a + b * x)) ** 2 for x, y in zip(lx, ly))
    ss_tot = sum((y - my) ** 2 for y in ly)
    return math.exp(log_a), b, 1 - ss_res / ss_tot if ss_tot > 0 else 1.0


def train_rung(args, size, seed, run_dir):
    n_layer, n_head, n_embd, lr = size
    command = shlex.split(args.loom_prefix) + [args.loom, "train", args.config,
                                                "--set", f"model.n_layer={n_layer}",
                                                "--set", f"model.n_head={n_head}",
                                                "--set", f"model.n_embd={n_embd}",
                                                "--set", f"optimizer.lr={lr}",
                                                "--set", f"train.seed={seed}",
                                                "--set", f"train.threads={args.threads}",
                                                "--set", f"train.out_dir={run_dir}"]
    for s in args.set:
        command += ["--set", s]
    print(f"== {rung_name(size)} seed {seed}: {' '.join(shlex.quote(c) for c in command)}", flush=True)
    start = time.time()
    with open(os.path.join(run_dir, "train.log"), "a") as log:
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log.write(process.stdout)
    for line in process.stdout.splitlines():
        if line.startswith(("loom train:", "eval", "layout:", "data:")) or "error" in line:
            print("   " + line, flush=True)
    if process.returncode != 0:
        fail(f"loom train of rung {rung_name(size)} seed {seed} exited {process.returncode}; its output is in "
             f"{os.path.join(run_dir, 'train.log')}")
    return time.time() - start


def write_plot(out, digits, fit, seeds):
    data = os.path.join(out, "results.tsv")
    runs = os.path.join(out, "runs.tsv")
    script = os.path.join(out, "emergence.gp")
    png = os.path.join(out, "emergence.png")
    a, b, r2 = fit
    # results.tsv: 1 parameters, 2 compute, 3 mean val_loss, then mean, min and max accuracy of
    # each operand length; runs.tsv: compute and val_loss of every run.
    over = f"mean of {seeds} seeds, bars: min to max" if seeds > 1 else "one seed"
    lines = [
        "set terminal pngcairo size 1800,560 enhanced font 'Sans,11' linewidth 1.5",
        f"set output '{png}'",
        "set multiplot layout 1,3 title 'Addition exact match and held-out loss over a ladder of model sizes "
        f"(same token budget; {over})'",
        "set logscale x",
        "set format x '10^{%L}'",
        "set key top left",
        "set grid",
        "set yrange [0:105]",
        "set ylabel 'held-out exact match (%)'",
        "set xlabel 'parameters'",
    ]
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4"]

    def accuracy_plot(x_column):
        parts = []
        for i, d in enumerate(digits):
            m = 4 + 3 * i
            style = "yerrorlines" if seeds > 1 else "linespoints"
            using = f"{x_column}:(100*${m}):(100*${m + 1}):(100*${m + 2})" if seeds > 1 else f"{x_column}:(100*${m})"
            parts.append(f"'{data}' using {using} with {style} pt 7 lc rgb '{colours[i % len(colours)]}' "
                         f"title '{d} digit{'s' if d > 1 else ''}'")
        return "plot " + ", \\\n     ".join(parts)

    lines.append(accuracy_plot(1))
    lines += ["set xlabel 'training compute (model FLOPs)'", accuracy_plot(2)]
    lines += [
        "set autoscale y",
        "set logscale y",
        "set format y '%g'",
        "set ylabel 'held-out loss of the answers (nats)'",
        "set key top right",
        f"fit_a = {a!r}",
        f"fit_b = {b!r}",
        f"plot '{runs}' using 1:2 with points pt 6 ps 1.2 lc rgb '#1f78b4' title 'each run', \\\n"
        f"     '{data}' using 2:3 with points pt 7 ps 1.4 lc rgb '#08306b' title 'mean', \\\n"
        f"     fit_a * x**fit_b with lines lc rgb '#e31a1c' dt 2 title sprintf('%.3g C^{{%.3f}}  (R^2 %.3f)', "
        f"fit_a, fit_b, {r2!r})",
        "unset multiplot",
    ]
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["gnuplot", script], check=True)
    return png


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loom", default=os.path.join(ROOT, "build", "loom"))
    parser.add_argument("--loom-prefix", default="", help="put before loom, e.g. 'mpirun -np 4'")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "emergence.pbtxt"))
    parser.add_argument("--out", default="runs/emergence")
    parser.add_argument("--ladder", choices=sorted(LADDERS), default="small")
    parser.add_argument("--sizes", help="the ladder instead: LAYERSxHEADSxWIDTH:LR,...")
    parser.add_argument("--threads", type=int, default=0, help="train.threads of every rung (0: every core)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each rung, train.seed 1337, 1338, ...")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE for every rung's loom train")
    args = parser.parse_args()

    if not os.access(args.loom, os.X_OK):
        fail(f"--loom {args.loom} is not an executable; build Loom first (scripts/build.sh) or point --loom at it")
    if not os.path.isfile(args.config):
        fail(f"--config {args.config} is not a file")
    sizes = parse_sizes(args.sizes) if args.sizes else LADDERS[args.ladder]
    if len(sizes) < 2:
        fail("a ladder needs at least two sizes to fit and draw")
    os.makedirs(args.out, exist_ok=True)

    if any(s.startswith("train.seed=") for s in args.set):
        fail("set the seeds with --seeds N (train.seed 1337, 1338, ...), not --set train.seed")
    if args.seeds < 1:
        fail(f"--seeds is {args.seeds} but must be at least 1")
    seeds = [1337 + k for k in range(args.seeds)]

    rows = []
    for size in sizes:
        runs = [train_or_read(args, size, seed) for seed in seeds]
        first = runs[0]
        digits = sorted(int(d) for d in first["accuracy_by_digits"])
        accuracy = {}
        for d in digits:
            values = [r["accuracy_by_digits"][str(d)] for r in runs]
            accuracy[str(d)] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
        losses = [r["val_loss"] for r in runs]
        rows.append({
            "rung": rung_name(size), "n_layer": size[0], "n_head": size[1], "n_embd": size[2], "lr": size[3],
            "parameters": first["parameters"], "flops_per_token": first["flops_per_token"], "tokens": first["tokens"],
            "compute": first["compute"], "val_loss": sum(losses) / len(losses), "accuracy_by_digits": accuracy,
            "seeds": runs,
        })
        acc = " ".join(f"{d}d {100 * accuracy[str(d)]['mean']:5.1f}%" for d in digits)
        print(f"   {rung_name(size):14s} {first['parameters']:>9,d} parameters  loss {rows[-1]['val_loss']:.4f}  "
              f"{acc}  (mean of {len(seeds)} seed{'s' if len(seeds) > 1 else ''})", flush=True)

    digits = sorted(int(d) for d in rows[0]["accuracy_by_digits"])
    points = [(r["compute"], run["val_loss"]) for r in rows for run in r["seeds"]]
    fit = power_law_fit([c for c, _ in points], [l for _, l in points])
    with open(os.path.join(args.out, "results.tsv"), "w") as f:
        f.write("# parameters\tcompute\tval_loss (mean)\t" +
                "\t".join(f"accuracy_{d}d mean\tmin\tmax" for d in digits) + "\n")
        for r in rows:
            cells = [r["parameters"], r["compute"], r["val_loss"]]
            for d in digits:
                a = r["accuracy_by_digits"][str(d)]
                cells += [a["mean"], a["min"], a["max"]]
            f.write("\t".join(str(v) for v in cells) + "\n")
    with open(os.path.join(args.out, "runs.tsv"), "w") as f:
        f.write("# compute\tval_loss (one line per rung and seed)\n")
        for c, l in points:
            f.write(f"{c}\t{l}\n")
    summary = {"config": os.path.relpath(args.config), "ladder": args.sizes or args.ladder, "set": args.set,
               "seeds": seeds, "rungs": rows,
               "power_law": {"a": fit[0], "b": fit[1], "r2_log": fit[2], "points": len(points),
                             "form": "val_loss = a * compute^b, over every rung and seed"}}
    tmp = os.path.join(args.out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(args.out, "results.json"))
    png = write_plot(args.out, digits, fit, len(seeds))
    span = rows[-1]["parameters"] / rows[0]["parameters"]
    print(f"power law: held-out loss = {fit[0]:.4g} * C^{fit[1]:.4f} (R^2 {fit[2]:.3f} in log space, {len(points)} runs)")
    print(f"wrote {png} and {os.path.join(args.out, 'results.json')}: {len(rows)} sizes spanning {span:.0f}x, "
          f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} each")


def train_or_read(args, size, seed):
    """One rung at one seed: trained unless its run finished, then its numbers."""
    name = f"{rung_name(size)}/seed-{seed}"
    run_dir = os.path.abspath(os.path.join(args.out, name))
    os.makedirs(run_dir, exist_ok=True)
    seconds = None
    if finished(run_dir) is None:
        seconds = train_rung(args, size, seed, run_dir)
    final = finished(run_dir)
    if final is None:
        fail(f"run {name} ended without a final evaluation; see {run_dir}/train.log")
    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    numbers = header_numbers(log)
    if numbers is None:
        fail(f"no parameter count and FLOPs per token in {run_dir}/train.log")
    params_rounded, flops_per_token = numbers
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        train_records = [r for r in map(json.loads, f) if r.get("kind") == "train"]
    steps = train_records[-1]["steps"]
    seq = re.search(r"vocab (\d+), seq (\d+)", log)
    batch = re.search(r"batch (\d+) x (\d+) replicas x (\d+) accumulation", log)
    vocab, seq_len = int(seq[1]), int(seq[2])
    tokens = steps * int(batch[1]) * int(batch[2]) * int(batch[3]) * seq_len
    params = gpt2_parameters(size[0], size[2], vocab, seq_len)
    if abs(params - params_rounded) > 0.001 * params + 100:
        fail(f"run {name}: Loom counts {params_rounded:.0f} parameters, the formula {params}")
    digits = sorted(int(k[len("accuracy_"):-1]) for k in final if re.fullmatch(r"accuracy_\d+d", k))
    return {"seed": seed, "parameters": params, "flops_per_token": flops_per_token, "tokens": tokens,
            "compute": flops_per_token * tokens, "val_loss": final["val_loss"], "accuracy": final["accuracy"],
            "accuracy_by_digits": {str(d): final[f"accuracy_{d}d"] for d in digits}, "train_seconds": seconds}


if __name__ == "__main__":
    main()
