#!/usr/bin/env python3
"""scripts/emergence.py on a two-rung ladder of a few steps, two seeds each: the tables, the fit and
the plot are written, a second run trains nothing again, and bad arguments are one sentence and
exit 2.

  emergence_test.py LOOM WORK_DIR
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "emergence.py")


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}")
        sys.exit(1)


def run(loom, out, *extra):
    command = [sys.executable, SCRIPT, "--loom", loom, "--out", out, "--threads", "1",
               "--sizes", "1x2x16:0.003,1x2x24:0.003", "--seeds", "2", "--set", "train.steps=20", "--set", "optimizer.warmup_steps=5",
               "--set", "train.eval_every=10", "--set", "data.addition.digits=2", *extra]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main():
    loom, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    out = os.path.join(work, "ladder")

    # The fit recovers an exact power law.
    spec = importlib.util.spec_from_file_location("emergence", SCRIPT)
    emergence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emergence)
    a, b, r2 = emergence.power_law_fit([1e3, 1e4, 1e5], [5 * 1e3 ** -0.25, 5 * 1e4 ** -0.25, 5 * 1e5 ** -0.25])
    check(abs(a - 5) < 1e-9 and abs(b + 0.25) < 1e-12 and abs(r2 - 1) < 1e-12, f"fit gave {a} {b} {r2}")

    first = run(loom, out)
    check(first.returncode == 0, "the ladder runs\n" + first.stdout)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    rungs = results["rungs"]
    check([r["rung"] for r in rungs] == ["L1-H2-C16", "L1-H2-C24"], f"rungs {rungs}")
    for r in rungs:
        # 1- and 2-digit problems: 8 tokens per sequence, 64 sequences x 20 steps.
        check(r["parameters"] == emergence.gpt2_parameters(1, r["n_embd"], 12, 8), f"parameters of {r}")
        check(r["tokens"] == 20 * 64 * 8, f"tokens of {r}")
        check(math.isclose(r["compute"], r["flops_per_token"] * r["tokens"]), f"compute of {r}")
        check([run["seed"] for run in r["seeds"]] == [1337, 1338], f"seeds of {r}")
        check(all(run["val_loss"] > 0 and run["train_seconds"] > 0 for run in r["seeds"]), f"runs of {r}")
        check(math.isclose(r["val_loss"], sum(run["val_loss"] for run in r["seeds"]) / 2), f"mean loss of {r}")
        check(sorted(r["accuracy_by_digits"]) == ["1", "2"], f"lengths of {r}")
        for d, a in r["accuracy_by_digits"].items():
            values = [run["accuracy_by_digits"][d] for run in r["seeds"]]
            check(a["min"] == min(values) and a["max"] == max(values) and math.isclose(a["mean"], sum(values) / 2),
                  f"accuracy of {d} digits in {r}")
        check(os.path.exists(os.path.join(out, r["rung"], "seed-1338", "model.loom")), f"seed directories of {r}")
    # Seeds differ: another initialisation and data order.
    check(rungs[0]["seeds"][0]["val_loss"] != rungs[0]["seeds"][1]["val_loss"], "two seeds, two runs")
    fit = results["power_law"]
    points = [(r["compute"], run["val_loss"]) for r in rungs for run in r["seeds"]]
    a, b, _ = emergence.power_law_fit([c for c, _ in points], [l for _, l in points])
    check(math.isclose(fit["a"], a) and math.isclose(fit["b"], b) and fit["points"] == 4, f"fit {fit}")
    with open(os.path.join(out, "emergence.png"), "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", "emergence.png is a PNG")
    with open(os.path.join(out, "results.tsv")) as f:
        rows = [line for line in f if not line.startswith("#")]
    check(len(rows) == 2 and len(rows[0].split("\t")) == 3 + 3 * 2, f"results.tsv {rows}")

    # Finished rungs are not trained again.
    second = run(loom, out)
    check(second.returncode == 0 and "== " not in second.stdout, "a rerun trains nothing\n" + second.stdout)
    check(json.load(open(os.path.join(out, "results.json")))["rungs"][0]["seeds"][0]["train_seconds"] is None,
          "rerun time")

    bad = run(loom, os.path.join(work, "bad"), "--sizes", "1x3x16:0.003,1x2x16:0.003")
    check(bad.returncode == 2 and "heads dividing the width" in bad.stdout, "bad --sizes\n" + bad.stdout)
    seeded = run(loom, os.path.join(work, "bad"), "--set", "train.seed=5")
    check(seeded.returncode == 2 and "--seeds N" in seeded.stdout, "--set train.seed\n" + seeded.stdout)
    missing = subprocess.run([sys.executable, SCRIPT, "--loom", os.path.join(work, "no-loom")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(missing.returncode == 2 and "is not an executable" in missing.stdout, "missing loom\n" + missing.stdout)
    print("emergence_test.py: passed")


if __name__ == "__main__":
    main()
