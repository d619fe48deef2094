#!/usr/bin/env bash
# Data users already have, and data that proves itself, through `loom train`:
#   - a Megatron-LM dataset (written by the independent Python writer) trains in place, with a
#     validation split held out by val_fraction, and gives the same losses as the Loom shards
#     `loom prepare` converts it to;
#   - a token shard with one flipped byte is refused before the first step, on one process and on
#     2 ranks (no rank waits for another; the message, printed once, names the shard and says to
#     prepare it again).
# usage: data_sources_test.sh LOOM MPIEXEC PYTHON SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 python=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; cat "$f"; done; exit 1; }

# 300 documents of a small language (token t + 1 mostly follows t), each ending with 255.
"$python" - "$work/spec.json" <<'PY'
import json, random, sys
random.seed(1)
docs = []
for _ in range(300):
    sequence = [random.randrange(250)]
    for _ in range(random.randint(5, 80)):
        sequence.append((sequence[-1] + 1) % 250 if random.random() < 0.8 else random.randrange(250))
    docs.append([sequence + [255]])
json.dump({"dtype": "uint16", "documents": docs}, open(sys.argv[1], "w"))
PY
"$python" "$src/tests/reference/megatron_indexed_writer.py" "$work/spec.json" "$work/web_text_document"

common=(train "$src/configs/text.pbtxt" --set data.tokens.seq_len=32 --set model.n_layer=2 --set train.steps=12
        --set optimizer.warmup_steps=4
        --set train.log_every=4 --set train.threads=1 --set train.micro_batch_size=4 --set train.samples=0)
losses() { grep -oE "\| loss [0-9.]+" "$1" | awk '{print $NF}'; }

"$loom" "${common[@]}" --set data.tokens.source.0.path="$work/web_text_document" \
  --set data.tokens.source.0.val_fraction=0.1 --set train.eval_every=6 --set data.tokens.eval_batches=2 \
  --set train.out_dir="$work/held_out" > "$work/held_out.log" 2>&1 || fail "training on the Megatron dataset"
grep -qF "data: Megatron dataset (uint16, 300 documents) $work/web_text_document:" "$work/held_out.log" ||
  fail "no data line for the Megatron dataset"
grep -qF "vocab 256," "$work/held_out.log" || fail "the vocabulary is not the largest id + 1"
[ "$(grep -c "validation loss" "$work/held_out.log")" -eq 2 ] || fail "expected 2 validation losses"

# The same documents in place and converted, no validation: the same losses.
"$loom" "${common[@]}" --set data.tokens.source.0.path="$work/web_text_document.bin" --set train.eval_every=0 \
  --set data.tokens.eval_batches=0 --set train.out_dir="$work/in_place" > "$work/in_place.log" 2>&1 ||
  fail "training on the .bin"
"$loom" prepare --input "$work/web_text_document" --val-fraction 0 --out "$work/converted" > "$work/prepare.log" 2>&1 ||
  fail "loom prepare on the Megatron dataset"
grep -qF "converted 300 documents" "$work/prepare.log" || fail "prepare's summary"
"$loom" "${common[@]}" --set data.tokens.source.0.path="$work/converted" --set train.eval_every=0 \
  --set data.tokens.eval_batches=0 --set train.out_dir="$work/converted_run" > "$work/converted.log" 2>&1 ||
  fail "training on the converted shards"
grep -qE "data: token shards .*; [0-9.]+ [KM]iB of shards verified in [0-9.]+ s;" "$work/converted.log" ||
  fail "the shards were not verified before the first step"
[ "$(losses "$work/in_place.log" | wc -l)" -eq 3 ] || fail "expected 3 losses"
[ "$(losses "$work/in_place.log")" = "$(losses "$work/converted.log")" ] || fail "in place and converted differ"

# One token byte flipped: refused before the first step, on 1 process and on 2 ranks.
cp -r "$work/converted" "$work/flipped"
"$python" -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[64 + 10] ^= 1; open(sys.argv[1], 'wb').write(b)" \
  "$work/flipped/train-00000.tok"
expected="error: token shard $work/flipped/train-00000.tok is corrupt: its tokens, byte offsets 64 to "
tail="do not match the checksum at byte offset 40; prepare the dataset again with loom prepare"
rc=0
"$loom" "${common[@]}" --set data.tokens.source.0.path="$work/flipped" --set train.out_dir="$work/flip1" \
  > "$work/flip1.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "1 process: exit $rc, expected 2"
rc=0
timeout 120 "$mpiexec" --oversubscribe -np 2 "$loom" "${common[@]}" --set parallel.dp=2 \
  --set train.micro_batch_size=2 --set data.tokens.source.0.path="$work/flipped" --set train.out_dir="$work/flip2" \
  > "$work/flip2.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "2 ranks: exit $rc (124: a rank hung)"
for log in flip1 flip2; do
  [ "$(grep -cF "$expected" "$work/$log.log")" -eq 1 ] || fail "$log: the message is not printed once"
  grep -qF "$tail" "$work/$log.log" || fail "$log: the message does not say what to do"
  ! grep -q "| loss" "$work/$log.log" || fail "$log: a step ran on a corrupt shard"
done
# Sources that cannot train: one sentence each, exit 2.
expect_error() {  # expect_error NEEDLE ARGS...
  local needle=$1 rc=0
  shift
  "$loom" "$@" --set train.out_dir="$work/error_run" > "$work/error.log" 2>&1 || rc=$?
  { [ "$rc" -eq 2 ] && grep -qF -- "$needle" "$work/error.log"; } || fail "expected exit 2 and '$needle' from: $*"
}
expect_error "data.tokens.source 0 path $work/nothing is neither a dataset directory from \`loom prepare\` nor a Megatron dataset" \
  "${common[@]}" --set data.tokens.source.0.path="$work/nothing"
expect_error "sets val_fraction, which applies to Megatron datasets" \
  "${common[@]}" --set data.tokens.source.0.path="$work/converted" --set data.tokens.source.0.val_fraction=0.1
head -c 1000 "$work/web_text_document.bin" > "$work/cut_text_document.bin"
cp "$work/web_text_document.idx" "$work/cut_text_document.idx"
expect_error "past the end of $work/cut_text_document.bin which is 1000 bytes: a truncated .bin" \
  "${common[@]}" --set data.tokens.source.0.path="$work/cut_text_document"
expect_error "Megatron data file $work/web_text_document.bin holds token id" \
  "${common[@]}" --set data.tokens.source.0.path="$work/web_text_document" --set model.vocab_size=100
echo "PASS: Megatron dataset trained in place (= converted shards); a flipped byte stopped 1 and 2 ranks"
