#!/usr/bin/env bash
# Checkpoint and resume through `loom train` itself, on token shards (so the loader's position is
# part of what is resumed):
#   1. exact resume: 20 steps straight vs 10 steps, exit, --resume auto, 10 more: the step-20
#      checkpoints' shard files are byte-identical (weights, Adam moments, same layout);
#   2. resharding: 10 steps on 4 ranks as tp=2 x pp=2, then --resume auto on 4 ranks as dp=4: the
#      losses of steps 15 and 20 equal the straight one-process run's (printed to 4 decimals);
#   3. integrity: the newest checkpoint corrupted -> --resume auto warns, falls back to the
#      previous one and finishes; naming the corrupt one explicitly -> exit 2 naming the tensor;
#   4. a config with another model shape -> exit 2 listing the differences;
#   5. which checkpoint `loom train` resumes: after a crash between a commit and the move of
#      `latest`, the newer commit, saying so; after a run resumed from an older checkpoint saved,
#      its save (the newest), not the highest step.
# usage: resume_test.sh LOOM MPIEXEC SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 src=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
docs=(); for f in "$src"/docs/*.md; do docs+=(--input "$f"); done  # the text, not the images
"$loom" prepare "${docs[@]}" --documents blank-line --vocab-size 400 --val-fraction 0.1 \
  --threads 2 --out "$work/data" > /dev/null
common=(train "$src/configs/text.pbtxt" --set data.tokens.source.0.path="$work/data"
        --set data.tokens.seq_len=16 --set model.n_layer=2 --set model.n_embd=32 --set model.n_head=4
        --set train.steps=20 --set optimizer.warmup_steps=5 --set train.log_every=5 --set train.eval_every=0 --set train.threads=1
        --set train.samples=0 --set train.micro_batch_size=4 --set train.grad_accum_steps=2
        --set checkpoint.every=10)

# 1. Exact resume on one process.
"$loom" "${common[@]}" --set train.out_dir="$work/straight" > "$work/straight.log"
"$loom" "${common[@]}" --set train.out_dir="$work/stopped" --stop-after-steps 10 > "$work/stop.log"
grep -q "stopped after step 10 of 20" "$work/stop.log" || fail "no stop message"; 
[ ! -e "$work/stopped/model.loom" ] || fail "a stopped run wrote the final model file"
"$loom" "${common[@]}" --set train.out_dir="$work/stopped" --resume auto > "$work/resume.log"
grep -q "resumed from $work/stopped/checkpoints/step-00000010: step 10" "$work/resume.log" || { cat "$work/resume.log"; fail "did not resume"; }
cmp "$work/straight/checkpoints/step-00000020/rank-00000.shard" "$work/stopped/checkpoints/step-00000020/rank-00000.shard" \
  || fail "resumed run's step-20 checkpoint differs from the straight run's"
diff <(grep -E "^step +(15|20)/" "$work/straight.log" | cut -d'|' -f1-4) \
     <(grep -E "^step +(15|20)/" "$work/resume.log" | cut -d'|' -f1-4) || fail "losses differ after resume"

# 2. Saved under tp=2 x pp=2, resumed under dp=4 (the same global batch of 4 x 2 accumulation).
"$mpiexec" --oversubscribe -np 4 "$loom" "${common[@]}" --set parallel.tp=2 --set parallel.pp=2 \
  --set train.out_dir="$work/reshard" --stop-after-steps 10 > "$work/tp2pp2.log"
"$mpiexec" --oversubscribe -np 4 "$loom" "${common[@]}" --set parallel.dp=4 --set train.micro_batch_size=1 \
  --set train.out_dir="$work/reshard" --resume auto > "$work/dp4.log"
grep -q "saved under tp=2 x pp=2 x dp=1" "$work/dp4.log" || { cat "$work/dp4.log"; fail "dp=4 did not resume the tp=2 x pp=2 checkpoint"; }
diff <(grep -E "^step +(15|20)/" "$work/straight.log" | cut -d'|' -f1-2) \
     <(grep -E "^step +(15|20)/" "$work/dp4.log" | cut -d'|' -f1-2) || fail "losses after resharding differ"

# 3. Corrupt the newest checkpoint: auto falls back, an explicit path is an error.
shard="$work/stopped/checkpoints/step-00000020/rank-00000.shard"
printf '\xff\xff\xff\xff' | dd of="$shard" bs=1 seek=4096 conv=notrunc status=none
"$loom" "${common[@]}" --set train.out_dir="$work/stopped" --set train.steps=20 --resume auto > "$work/fallback.log" 2>&1 \
  || { cat "$work/fallback.log"; fail "fallback run failed"; }
grep -q "warning: checkpoint $work/stopped/checkpoints/step-00000020 is unusable" "$work/fallback.log" || { cat "$work/fallback.log"; fail "no warning"; }
grep -q "resumed from $work/stopped/checkpoints/step-00000010" "$work/fallback.log" || fail "did not fall back to step 10"
grep -q "^step    20/20" "$work/fallback.log" || fail "fallback run did not finish"
printf '\xff\xff\xff\xff' | dd of="$work/stopped/checkpoints/step-00000020/rank-00000.shard" bs=1 seek=4096 conv=notrunc status=none
set +e
"$loom" "${common[@]}" --set train.out_dir="$work/x" --resume "$work/stopped/checkpoints/step-00000020" > "$work/explicit.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] || { cat "$work/explicit.log"; fail "explicit corrupt checkpoint: exit $code, expected 2"; }
grep -q "rank-00000.shard is corrupt: tensor \"" "$work/explicit.log" || { cat "$work/explicit.log"; fail "error does not name file and tensor"; }

# 4. Another model shape.
set +e
"$loom" "${common[@]}" --set train.out_dir="$work/straight" --set model.n_layer=3 --resume auto > "$work/shape.log" 2>&1
code=$?
set -e
[ $code -eq 2 ] || { cat "$work/shape.log"; fail "shape mismatch: exit $code, expected 2"; }
grep -q "was saved from a different model: model.n_layer: checkpoint 2, config 3" "$work/shape.log" || { cat "$work/shape.log"; fail "differences not listed"; }

# 5. `latest` lagging behind the newest commit, then a run resumed from an older checkpoint.
ckpts="$work/straight/checkpoints"
echo step-00000010 > "$ckpts/latest"
"$loom" "${common[@]}" --set train.out_dir="$work/straight" --set train.steps=25 > "$work/lagging.log" 2>&1 \
  || { cat "$work/lagging.log"; fail "resume with a lagging latest pointer failed"; }
grep -q "warning: $ckpts/latest names step-00000010 but step-00000020 was committed after it" "$work/lagging.log" \
  || { cat "$work/lagging.log"; fail "no warning about the lagging latest pointer"; }
grep -q "resumed from $ckpts/step-00000020: step 20" "$work/lagging.log" || { cat "$work/lagging.log"; fail "did not resume step 20"; }
"$loom" "${common[@]}" --set train.out_dir="$work/straight" --set train.steps=15 --resume "$ckpts/step-00000010" \
  > "$work/old.log" 2>&1 || { cat "$work/old.log"; fail "resuming step 10 explicitly failed"; }
"$loom" "${common[@]}" --set train.out_dir="$work/straight" --set train.steps=17 > "$work/after_old.log" 2>&1 \
  || { cat "$work/after_old.log"; fail "resume after the run from an older checkpoint failed"; }
grep -q "resumed from $ckpts/step-00000015: step 15" "$work/after_old.log" || { cat "$work/after_old.log"; fail "did not resume the newest save"; }
! grep -q "latest" "$work/after_old.log" || { cat "$work/after_old.log"; fail "unexpected warning about latest"; }
echo "PASS: exact resume, tp2xpp2 -> dp4 resharding, corrupt fallback, shape mismatch and the choice of checkpoint through loom train"
