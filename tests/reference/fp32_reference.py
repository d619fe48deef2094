#!/usr/bin/python3
"""Bitwise fp32 reference results of `loom train`, recorded once and checked ever after.

A refactor of the model, the backend or the optimizer must not change a single bit of the fp32 CPU
results (issue "one model, two backends"): this script trains configs/tiny.pbtxt (4 blocks) for a
few steps in several parallel layouts at one thread per rank, and records, per layout, every
step's loss and gradient norm (as written to metrics.jsonl: shortest round-trip decimals, so
exact) and a SHA-256 of every final weight tensor (exported to safetensors, read with numpy).

  fp32_reference.py LOOM MPIEXEC WORKDIR check    compare with fp32_reference.json (the test)
  fp32_reference.py LOOM MPIEXEC WORKDIR record   rewrite fp32_reference.json (say why in the commit)

Exit status 0: every layout matched; 1: a difference, each printed with layout, step or tensor.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
REFERENCE = os.path.join(HERE, "fp32_reference.json")

COMMON = [
    "--fresh", "--set", "model.n_layer=4", "--set", "train.steps=8", "--set", "optimizer.warmup_steps=2",
    "--set", "train.micro_batch_size=8", "--set", "train.grad_accum_steps=2", "--set", "train.log_every=1",
    "--set", "train.eval_every=0", "--set", "train.samples=0", "--set", "train.threads=1",
    "--set", "train.device=DEVICE_CPU",
]

# name -> (processes, extra flags)
LAYOUTS = {
    "one_rank": (1, []),
    "one_rank_recompute_full": (1, ["--set", "train.recompute=RECOMPUTE_FULL"]),
    "tp2_sequence_parallel": (2, ["--set", "parallel.tp=2", "--set", "parallel.sequence_parallel=true"]),
    "dp2_zero1_selective": (2, ["--set", "parallel.dp=2", "--set", "train.recompute=RECOMPUTE_SELECTIVE"]),
    "pp2_interleaved": (2, ["--set", "parallel.pp=2", "--set", "parallel.virtual_stages=2",
                            "--set", "parallel.pp_layers=1,1,1,1"]),
    "tp2_pp2": (4, ["--set", "parallel.tp=2", "--set", "parallel.pp=2"]),
}


def run_layout(loom, mpiexec, workdir, name, processes, extra):
    out = os.path.join(workdir, name)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [loom, "train", os.path.join(SOURCE, "configs", "tiny.pbtxt")] + COMMON + extra + \
          ["--set", f"train.out_dir={out}"]
    if processes > 1:
        cmd = [mpiexec, "--oversubscribe", "-np", str(processes)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name}: loom train exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    train = [r for r in records if r.get("kind") == "train"]
    exported = os.path.join(workdir, name + ".safetensors")
    done = subprocess.run([loom, "ckpt", "export", out, exported], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name}: loom ckpt export exited {done.returncode}\n{done.stderr}")
    weights = {k: hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()
               for k, v in sorted(load_file(exported).items())}
    return {"losses": [r["loss"] for r in train], "grad_norms": [r["grad_norm"] for r in train],
            "weights_sha256": weights}


def main():
    if len(sys.argv) != 5 or sys.argv[4] not in ("check", "record"):
        sys.exit(__doc__)
    loom, mpiexec, workdir, mode = sys.argv[1:]
    os.makedirs(workdir, exist_ok=True)
    got = {name: run_layout(loom, mpiexec, workdir, name, *spec) for name, spec in LAYOUTS.items()}
    if mode == "record":
        with open(REFERENCE + ".tmp", "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(REFERENCE + ".tmp", REFERENCE)
        print(f"recorded {len(got)} layouts in {REFERENCE}")
        return 0
    want = json.load(open(REFERENCE))
    failures = []
    for name in LAYOUTS:
        g, w = got[name], want.get(name)
        if w is None:
            failures.append(f"{name}: no reference recorded")
            continue
        for key in ("losses", "grad_norms"):
            if len(g[key]) != len(w[key]):
                failures.append(f"{name}: {len(g[key])} {key}, reference has {len(w[key])}")
            for step, (a, b) in enumerate(zip(g[key], w[key]), start=1):
                if a != b:
                    failures.append(f"{name}: step {step} {key[:-1]} {a!r}, reference {b!r}")
        for tensor, digest in w["weights_sha256"].items():
            if g["weights_sha256"].get(tensor) != digest:
                failures.append(f"{name}: final {tensor} differs from the reference")
        for tensor in g["weights_sha256"].keys() - w["weights_sha256"].keys():
            failures.append(f"{name}: tensor {tensor} is not in the reference")
    for line in failures:
        print(line)
    print(f"{len(LAYOUTS)} layouts, {len(failures)} differences from the fp32 reference")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
