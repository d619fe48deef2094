#!/usr/bin/env bash
# `loom eval` on 4 ranks scores as on one: a small model trained on Loom's own docs (`loom prepare`,
# `loom train`), then its loss on the val split, a multiple-choice file of English text (the
# tokenizer's split of context and " " + choice) and an exact-match file, on 1 rank and on 4 ranks
# as tp=2 x pp=2, as pp=2 interleaved x dp=2, and as dp=4: every number of the JSON within 1e-6
# relative of one rank's. A bad file under mpirun: exit 2, one message, no JSON.
# usage: eval_mpirun_test.sh LOOM MPIEXEC PYTHON SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 python=$3 src=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
docs=(); for f in "$src"/docs/*.md; do docs+=(--input "$f"); done  # the text, not the images
"$loom" prepare "${docs[@]}" --documents blank-line --vocab-size 400 --val-fraction 0.1 \
  --threads 2 --out "$work/data" > /dev/null
"$loom" train "$src/configs/text.pbtxt" --set data.tokens.source.0.path="$work/data" \
  --set data.tokens.seq_len=32 --set model.n_layer=4 --set train.steps=20 --set optimizer.warmup_steps=5 \
  --set train.eval_every=0 --set train.threads=1 --set train.samples=0 --set train.micro_batch_size=4 \
  --set train.out_dir="$work/run" > "$work/train.log"
cat > "$work/mc.jsonl" <<'EOF'
{"context": "The model is trained on", "choices": ["token shards", "a banana", "the moon and the stars"], "gold": 0}
{"query": "Every rank of the job", "endings": ["reads the same config", "sleeps"], "label": "0"}
{"context": "A checkpoint can be resumed in ", "choices": ["any layout", "no way at all"], "gold": 0}
{"context": "", "choices": ["Loom", "Banana"], "gold": 0}
{"context": "The loss is", "choices": ["printed", "eaten", "sung", "hidden"], "gold": 0}
EOF
cat > "$work/em.jsonl" <<'EOF'
{"prompt": "The model", "answer": "is"}
{"prompt": "Loom trains", "answer": "a"}
{"prompt": "The checkpoint", "answer": "is written"}
EOF
tasks=(eval "$work/run/model.loom" --loss "$work/data:val" --limit 40 --multiple-choice "$work/mc.jsonl"
       --exact-match "$work/em.jsonl" --batch-size 3 --threads 1)
"$loom" "${tasks[@]}" --json "$work/one.json" > "$work/one.log"
layouts=("--set parallel.tp=2 --set parallel.pp=2" "--set parallel.pp=2 --set parallel.virtual_stages=2" "")
for i in 0 1 2; do
  # shellcheck disable=SC2086
  "$mpiexec" --oversubscribe -np 4 "$loom" "${tasks[@]}" ${layouts[$i]} --json "$work/four$i.json" > "$work/four$i.log"
  "$python" - "$work/one.json" "$work/four$i.json" <<'EOF'
import json, sys
one, four = (json.load(open(p)) for p in sys.argv[1:3])
assert len(one["tasks"]) == len(four["tasks"]) == 3, (one, four)
for a, b in zip(one["tasks"], four["tasks"]):
    for key, value in a.items():
        if isinstance(value, (int, float)):
            assert abs(value - b[key]) <= 1e-6 * max(1.0, abs(value)), (a["task"], key, value, b[key])
EOF
done
grep -q "layout tp=2 pp=2 dp=1" "$work/four0.log" && grep -q "layout tp=1 pp=2 dp=2" "$work/four1.log" &&
  grep -q "layout tp=1 pp=1 dp=4" "$work/four2.log" || { echo "FAIL: layouts"; cat "$work"/four*.log; exit 1; }
printf '%s\n' '{"context": "a", "choices": ["b", "c"], "gold": 0}' '{"context": "a", "choices": ["b", "c"], "gold": 2}' \
  > "$work/bad.jsonl"
status=0
"$mpiexec" --oversubscribe -np 4 "$loom" eval "$work/run/model.loom" --multiple-choice "$work/bad.jsonl" \
  --set parallel.tp=2 --json "$work/bad.json" > "$work/bad.log" 2>&1 || status=$?
[ "$status" -eq 2 ] || { echo "FAIL: exit $status for a bad file"; cat "$work/bad.log"; exit 1; }
[ "$(grep -c "bad.jsonl:2: the gold index 2 is out of range" "$work/bad.log")" -eq 1 ] ||
  { echo "FAIL: the message"; cat "$work/bad.log"; exit 1; }
[ ! -e "$work/bad.json" ] || { echo "FAIL: bad.json was written"; exit 1; }
echo "PASS: loss, multiple choice and exact match equal on 1 rank and on 4 (tp2 x pp2, interleaved pp2 x dp2, dp4)"
cat "$work/one.log"
