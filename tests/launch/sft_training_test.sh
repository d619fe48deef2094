#!/usr/bin/env bash
# Supervised fine-tuning end to end: `loom prepare --format chat` on a small chat JSONL (one bad
# line, skipped and counted) with a ChatML tokenizer (tests/reference/sft_reference.py), a base
# model trained for a few steps, then `loom train --init-from` it: the masked validation loss is
# finite and falls; a checkpoint and a Hugging Face export of the base model start the same run
# as its model file; a run stopped half-way and run again without the flag resumes to the same
# losses as the run that was not stopped; on 4 ranks (tp=2 x dp=2 and pp=2 x dp=2, the same
# global batch) the losses are the one process's, and a Llama's on tp=2 x pp=2; bf16 runs;
# --init-from where checkpoints are, or with a model of another shape, is refused with exit code
# 2 and one line.
# usage: sft_training_test.sh LOOM MPIEXEC PYTHON SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 python=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
"$python" "$src/tests/reference/sft_reference.py" make "$work/ref" > /dev/null
"$python" - "$work/chat.jsonl" <<'EOF'
import json, random, sys
rng = random.Random(3)
words = ["copyright", "license", "free", "software", "the", "terms", "of", "permission", "granted", "notice"]
with open(sys.argv[1], "w") as f:
    for i in range(240):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        answer = " ".join(reversed(question.split()))
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "Reverse the words."})
        f.write(json.dumps({"messages": messages}) + "\n")
        if i == 17:
            f.write('{"messages": [{"role": "narrator", "content": "x"}]}\n')
EOF
"$loom" prepare --input "$work/chat.jsonl" --format chat --tokenizer "$work/ref/chatml/tokenizer.json" \
  --val-fraction 0.1 --on-bad-example skip --out "$work/data" > "$work/prepare.log"
grep -q "skipped 1 bad example; the first: $work/chat.jsonl:19: message 0 has the role \"narrator\"" "$work/prepare.log" ||
  { echo "FAIL: prepare did not report the bad line"; cat "$work/prepare.log"; exit 1; }
grep -q "chat template: the tokenizer's (ChatML)" "$work/prepare.log" || { echo "FAIL: no template line"; cat "$work/prepare.log"; exit 1; }

common=(train "$src/configs/text.pbtxt" --set data.tokens.source.0.path="$work/data"
        --set data.tokens.seq_len=64 --set model.n_layer=2 --set model.n_embd=64 --set model.n_head=2
        --set optimizer.warmup_steps=2 --set train.log_every=4 --set train.micro_batch_size=4
        --set data.tokens.eval_batches=2 --set train.threads=1 --set train.samples=0)
"$loom" "${common[@]}" --set train.steps=4 --set train.eval_every=4 --set train.out_dir="$work/base" > "$work/base.log"
tune=("${common[@]}" --set train.steps=16 --set train.eval_every=8)
"$loom" "${tune[@]}" --set train.out_dir="$work/tuned" --init-from "$work/base/model.loom" > "$work/tuned.log"
grep -q "initialised from $work/base/model.loom: weights only; fresh optimizer and schedule, step 0" "$work/tuned.log" ||
  { echo "FAIL: no --init-from line"; cat "$work/tuned.log"; exit 1; }
grep -q "^packing: .* examples into .* rows of 64 positions" "$work/tuned.log" ||
  { echo "FAIL: no packing line"; cat "$work/tuned.log"; exit 1; }
val=$(grep -oE "validation loss [0-9.]+" "$work/tuned.log" | awk '{print $3}')
[ "$(echo "$val" | wc -l)" -eq 2 ] || { echo "FAIL: expected 2 validation losses"; cat "$work/tuned.log"; exit 1; }
echo "$val" | awk 'NR == 1 { first = $1 } NR == 2 { if (!(first > 0 && $1 > 0 && $1 < first)) { print "FAIL: validation loss", first, "->", $1; exit 1 } }'

# loom eval scores the val split as training reads it (whole examples packed with document
# masking, the answers' tokens only): the fine-tuned model's loss is below the base model's.
for m in base tuned; do
  "$loom" eval "$work/$m/model.loom" --loss "$work/data:val" --threads 1 --json "$work/eval-$m.json" > "$work/eval-$m.log"
done
"$python" - "$work/eval-base.json" "$work/eval-tuned.json" <<'PY' || { cat "$work"/eval-*.log; exit 1; }
import json, sys
base, tuned = (json.load(open(p))["tasks"][0] for p in sys.argv[1:])
assert base["tokens"] == tuned["tokens"] > 0, (base, tuned)
assert 0 < tuned["loss"] < base["loss"], ("loom eval: no improvement", base, tuned)
PY

# Stopped at step 8, then run again without --init-from: it resumes to the same losses.
"$loom" "${tune[@]}" --set train.out_dir="$work/resumed" --init-from "$work/base/model.loom" \
  --stop-after-steps 8 > "$work/first.log"
set +e
"$loom" "${tune[@]}" --set train.out_dir="$work/resumed" --init-from "$work/base/model.loom" > "$work/refused.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] && grep -q "init-from starts a new run, but .* holds 1 checkpoint of an earlier run" "$work/refused.log" ||
  { echo "FAIL: --init-from over checkpoints: exit $code"; cat "$work/refused.log"; exit 1; }
"$loom" "${tune[@]}" --set train.out_dir="$work/resumed" > "$work/second.log"
losses() { grep -oE "(loss|validation loss) [0-9.]+" "$@" | awk '{print $NF}'; }
diff <(losses "$work/tuned.log") <(cat <(losses "$work/first.log") <(losses "$work/second.log")) ||
  { echo "FAIL: the resumed run's losses differ"; cat "$work/tuned.log" "$work/first.log" "$work/second.log"; exit 1; }

# The base run's last checkpoint and its Hugging Face export hold the model file's weights: the
# same losses.
"$loom" ckpt export "$work/base/model.loom" "$work/base-hf" > /dev/null
for from in "$work/base/checkpoints/step-00000004" "$work/base-hf"; do
  name=$(basename "$from")
  "$loom" "${tune[@]}" --set train.out_dir="$work/from-$name" --init-from "$from" > "$work/from-$name.log"
  diff <(losses "$work/tuned.log") <(losses "$work/from-$name.log") ||
    { echo "FAIL: --init-from $from gave other losses"; cat "$work/from-$name.log"; exit 1; }
done

# Every layout takes its shards of the model: tp=2 x dp=2 and pp=2 x dp=2 give the one
# process's losses.
for layout in tp pp; do
  "$mpiexec" --oversubscribe -np 4 "$loom" "${tune[@]}" --set parallel.$layout=2 --set parallel.dp=2 \
    --set train.micro_batch_size=2 --set train.out_dir="$work/$layout" --init-from "$work/base/model.loom" \
    > "$work/$layout.log"
  paste <(losses "$work/tuned.log") <(losses "$work/$layout.log") > "$work/pairs"
  [ "$(wc -l < "$work/pairs")" -eq 6 ] || { echo "FAIL: expected 6 losses"; cat "$work/$layout.log"; exit 1; }
  awk -v layout=$layout '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-4 || NF != 2) { print "FAIL: losses differ,", layout "=2 x dp=2:", $0; bad = 1 } }
       END { exit bad }' "$work/pairs"
done
# A Llama (grouped key/value heads, untied head) the same way, on tp=2 x pp=2.
llama=("${common[@]}" --set model.family=FAMILY_LLAMA --set model.n_head=4 --set model.n_kv_head=2
       --set model.intermediate_size=128 --set model.tie_embeddings=false)
"$loom" "${llama[@]}" --set train.steps=4 --set train.eval_every=4 --set train.out_dir="$work/llama-base" > "$work/llama-base.log"
"$loom" "${llama[@]}" --set train.steps=8 --set train.eval_every=8 --set train.out_dir="$work/llama-one" \
  --init-from "$work/llama-base/model.loom" > "$work/llama-one.log"
"$mpiexec" --oversubscribe -np 4 "$loom" "${llama[@]}" --set train.steps=8 --set train.eval_every=8 --set parallel.tp=2 \
  --set parallel.pp=2 --set train.out_dir="$work/llama-four" --init-from "$work/llama-base/model.loom" > "$work/llama-four.log"
paste <(losses "$work/llama-one.log") <(losses "$work/llama-four.log") > "$work/pairs"
[ "$(wc -l < "$work/pairs")" -eq 3 ] || { echo "FAIL: expected 3 Llama losses"; cat "$work/llama-four.log"; exit 1; }
awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 2e-4 || NF != 2) { print "FAIL: Llama losses differ on tp=2 x pp=2:", $0; bad = 1 } }
     END { exit bad }' "$work/pairs"
# A Llama's positions have no weights: it fine-tunes at a shorter seq_len than it was trained at;
# a GPT-2's learned positions do not allow it.
"$loom" "${llama[@]}" --set train.steps=2 --set train.eval_every=2 --set model.seq_len=32 --set data.tokens.seq_len=32 \
  --set train.out_dir="$work/llama-short" --init-from "$work/llama-base/model.loom" > "$work/llama-short.log"
grep -q "saved $work/llama-short/model.loom" "$work/llama-short.log" || { echo "FAIL: Llama seq_len"; cat "$work/llama-short.log"; exit 1; }
set +e
"$loom" "${tune[@]}" --set model.seq_len=32 --set data.tokens.seq_len=32 --set train.out_dir="$work/gpt-short" \
  --init-from "$work/base/model.loom" > "$work/gpt-short.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] && grep -q "model.seq_len: checkpoint 64, config 32" "$work/gpt-short.log" ||
  { echo "FAIL: GPT-2 seq_len: exit $code"; cat "$work/gpt-short.log"; exit 1; }
"$loom" "${tune[@]}" --set train.precision=PRECISION_BF16 --set train.out_dir="$work/bf16" \
  --init-from "$work/base/model.loom" > "$work/bf16.log"
grep -qE "validation loss [0-9]+\.[0-9]+" "$work/bf16.log" || { echo "FAIL: bf16"; cat "$work/bf16.log"; exit 1; }

set +e
"$loom" "${tune[@]}" --set train.out_dir="$work/other" --set model.n_layer=3 --init-from "$work/base/model.loom" \
  > "$work/shape.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] && grep -q "model.n_layer: checkpoint 2, config 3" "$work/shape.log" ||
  { echo "FAIL: another shape: exit $code"; cat "$work/shape.log"; exit 1; }
echo "PASS: validation loss $(echo $val | tr '\n' ' '); resumed run equal; refusals named"
