#!/usr/bin/env bash
# From text files to a trained model, end to end: `loom prepare` on Loom's own docs, then
# `loom train` on one process and on 4 ranks (dp=2 x pp=2, the same global batch) must print the
# same training and validation losses (4 decimals, within 2e-4), and `loom generate` must continue
# a prompt through the dataset's tokenizer.
# usage: token_training_test.sh LOOM MPIEXEC SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 src=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
docs=(); for f in "$src"/docs/*.md; do docs+=(--input "$f"); done  # the text, not the images
"$loom" prepare "${docs[@]}" --documents blank-line --vocab-size 400 --val-fraction 0.1 \
  --threads 2 --out "$work/data"
common=(train "$src/configs/text.pbtxt" --set data.tokens.source.0.path="$work/data"
        --set data.tokens.seq_len=32 --set model.n_layer=2 --set train.steps=20 --set optimizer.warmup_steps=5 --set train.log_every=5
        --set train.eval_every=10 --set data.tokens.eval_batches=2 --set train.threads=1
        --set train.samples=1 --set data.tokens.sample_tokens=8)
"$loom" "${common[@]}" --set train.micro_batch_size=4 --set train.out_dir="$work/one" > "$work/one.log"
"$mpiexec" --oversubscribe -np 4 "$loom" "${common[@]}" --set parallel.dp=2 --set parallel.pp=2 \
  --set train.micro_batch_size=2 --set train.out_dir="$work/four" > "$work/four.log"
losses() { grep -oE "(loss|validation loss) [0-9.]+" "$1" | awk '{print $NF}'; }
paste <(losses "$work/one.log") <(losses "$work/four.log") > "$work/pairs"
[ "$(wc -l < "$work/pairs")" -eq 6 ] || { echo "FAIL: expected 4 training and 2 validation losses"; cat "$work/one.log" "$work/four.log"; exit 1; }
awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-4 || NF != 2) { print "FAIL: losses differ:", $0; bad = 1 } }
     END { exit bad }' "$work/pairs"
out=$("$loom" generate --model "$work/one/model.loom" --prompt "The model" --max-new-tokens 5)
case "$out" in "The model"*) ;; *) echo "FAIL: generate printed: $out"; exit 1 ;; esac
echo "PASS: $(wc -l < "$work/pairs") losses equal on 1 and 4 ranks; generate: $out"
