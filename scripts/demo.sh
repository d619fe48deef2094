#!/usr/bin/env bash
# The README's first command: set up, build, train the demo GPT on 3-digit addition on 4 processes
# (tp=2 x pp=2), interrupted once by a signal and resumed from its checkpoint, draw its metrics,
# ask it two sums; then go from a folder of text files to a trained model in two commands
# (loom prepare, loom train). Arguments are passed to the addition run's `loom train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "building (the first time takes a few minutes)..."
mkdir -p build
if ! scripts/build.sh > build/build.log 2>&1; then
  tail -n 40 build/build.log
  echo "demo: the build failed; the full log is build/build.log" >&2
  exit 1
fi
# 1. Addition on 4 processes, tensor parallel 2 x pipeline parallel 2. At step 600 the script
# sends SIGUSR1 to mpirun, as Slurm does before a time limit or a preemption: every rank finishes
# the step, the checkpoint is saved, loom exits 75 ("resume me"), and the script starts it again
# with --resume auto, as a batch script's requeue would (launch/slurm/, docs/operations.md).
if [ "$(id -u)" -eq 0 ]; then
  # Open MPI refuses root unless told twice; a container's root is the usual case.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
interrupt_at=600
run=(build/loom train configs/addition.pbtxt --set parallel.tp=2 --set parallel.pp=2
     --set train.micro_batch_size=32 --set train.grad_accum_steps=2 --set train.threads=1
     --set checkpoint.every=500 --set train.out_dir=runs/addition "$@")
mkdir -p runs
log=runs/addition-first-run.log
echo
echo "$ mpirun -np 4 ${run[*]} --fresh"
# The log is emptied here, before either process starts: were it created by mpirun's redirection,
# tail could start first, find no file and give up (the first run would go unshown), or show an
# earlier demo's log before mpirun truncates it.
: > "$log"
# --fresh: the demo starts over even where an earlier demo left its run (by default loom train
# would resume it).
mpirun -q --oversubscribe -np 4 "${run[@]}" --fresh >> "$log" 2>&1 &
pid=$!
tail -n +1 -f "$log" --pid=$pid &
shown=$!
until grep -q "^step  *$interrupt_at/" "$log" || ! kill -0 $pid 2>/dev/null; do sleep 0.2; done
echo "demo: sending SIGUSR1 to mpirun (what Slurm sends before a time limit)"
kill -USR1 $pid 2>/dev/null || true
set +e
wait $pid
code=$?
set -e
wait $shown || true
if [ $code -eq 75 ]; then
  echo
  echo "demo: the run saved a checkpoint and exited 75; resuming it"
  echo "$ mpirun -np 4 ${run[*]} --resume auto"
  mpirun -q --oversubscribe -np 4 "${run[@]}" --resume auto
elif [ $code -ne 0 ]; then
  echo "demo: the training run failed (exit $code); its output is in $log" >&2
  exit $code
fi
echo
echo "$ build/loom plot runs/addition/metrics.jsonl --out runs/addition/loss.png"
build/loom plot runs/addition/metrics.jsonl --out runs/addition/loss.png
echo
echo "$ build/loom generate --prompt \"123+456=\""
build/loom generate --prompt "123+456="
echo "$ build/loom generate --prompt \"999+999=\""
build/loom generate --prompt "999+999="

# From text files to a model: the licence texts every Debian system ships, one document per
# blank-line-separated paragraph, a 1024-piece tokenizer trained on them, then a small GPT.
echo
echo "$ build/loom prepare --input /usr/share/common-licenses --documents blank-line --vocab-size 1024 --out runs/demo-text/data --force"
build/loom prepare --input /usr/share/common-licenses --documents blank-line --vocab-size 1024 \
  --val-fraction 0.05 --out runs/demo-text/data --force
echo
echo "$ build/loom train configs/text.pbtxt --set data.tokens.source.0.path=runs/demo-text/data ..."
build/loom train configs/text.pbtxt --fresh --set data.tokens.source.0.path=runs/demo-text/data \
  --set data.tokens.seq_len=64 --set model.n_layer=2 --set train.steps=150 --set train.eval_every=50 --set train.log_every=50 \
  --set data.tokens.sample_prompt="This License" --set train.out_dir=runs/demo-text
