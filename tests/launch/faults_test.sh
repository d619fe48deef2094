#!/usr/bin/env bash
# A run survives what happens to runs on clusters (docs/operations.md), each fault injected on
# purpose through LOOM_FAULT (launch/fault_injection.h) into `loom train` on 4 ranks as
# tp=2 x pp=2:
#   1. a signal on one rank (and SIGUSR1 sent to mpirun from outside): every rank stops after the
#      same step, the checkpoint is committed, exit 75; --resume auto then ends with the weights
#      of an uninterrupted run, bit for bit;
#   2. --time-budget: saved and exit 75 before the budget ends;
#   3. a NaN step is skipped and logged; three in a row roll back to the last checkpoint and the
#      run still ends with the uninterrupted weights; a fault that comes back stops the run
#      with exit 2 after guard.max_rollbacks;
#   4. a rank that stops answering: every other rank gives up within the timeout naming it, the
#      job exits non-zero, no process is left;
#   5. kill -9 of a random rank at a random step, and of a random rank halfway through writing
#      its checkpoint shard: the job exits non-zero at once; the restarted job resumes from the
#      last committed checkpoint and ends with the uninterrupted weights, bit for bit;
#   6. a checkpoint directory that cannot be created: every rank exits 2 with one sentence.
# The random rank and step come from a seed printed first (LOOM_FAULT_SEED=N reproduces a run).
# usage: faults_test.sh LOOM MPIEXEC WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
seed=${LOOM_FAULT_SEED:-$(( $(date +%s) % 100000 ))}
echo "faults_test: seed $seed (rerun with LOOM_FAULT_SEED=$seed)"
RANDOM=$seed
fail() { echo "FAIL: $*"; exit 1; }
steps=60
common=(train --set model.n_layer=2 --set model.n_embd=32 --set train.steps=$steps --set optimizer.warmup_steps=10 --set train.log_every=5
        --set train.eval_every=0 --set train.samples=0 --set train.threads=1 --set train.micro_batch_size=16
        --set train.grad_accum_steps=2 --set parallel.tp=2 --set parallel.pp=2 --set checkpoint.every=10
        --set checkpoint.keep_last=0)
run4() { "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" "$@"; }
# Runs the command, recording its exit code in $rc and its duration in whole seconds in $took.
timed() { local start=$SECONDS; set +e; "$@"; rc=$?; set -e; took=$((SECONDS - start)); }
# The run's final weights, Adam moments included, equal the uninterrupted run's, file by file.
same_as_straight() {
  for r in 0 1 2 3; do
    cmp -s "$work/straight/checkpoints/step-000000$steps/rank-0000$r.shard" "$1/checkpoints/step-000000$steps/rank-0000$r.shard" \
      || fail "$1: rank $r's final checkpoint differs from the uninterrupted run's"
  done
}
# No process of this run is left (matched by its own output directory, so that other tests'
# ranks running beside this one do not count).
no_leftovers() {
  sleep 1
  if pgrep -f "out_dir=$work/$1( |$)" > /dev/null; then pgrep -af "out_dir=$work/$1( |$)"; fail "$1 left loom processes behind"; fi
}

run4 --set train.out_dir="$work/straight" > "$work/straight.log" 2>&1 || { cat "$work/straight.log"; fail "the straight run failed"; }

# 1. A signal on one rank at a random step: all stop after that step.
step=$((11 + RANDOM % 40)) rank=$((RANDOM % 4))
timed env LOOM_FAULT="signal@$step:$rank" "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" \
  --set train.out_dir="$work/signal" > "$work/signal.log" 2>&1
[ "$rc" = 75 ] || { cat "$work/signal.log"; fail "signal: exit $rc, expected 75"; }
grep -q "stopping: SIGUSR1 on rank $rank: finished step $step of $steps, checkpoint $work/signal/checkpoints/step-$(printf %08d "$step") committed" \
  "$work/signal.log" || { cat "$work/signal.log"; fail "signal: no stop message naming rank $rank and step $step"; }
run4 --set train.out_dir="$work/signal" --resume auto > "$work/signal2.log" 2>&1 || fail "signal: the resumed run failed"
grep -q "resumed from $work/signal/checkpoints/step-$(printf %08d "$step"): step $step" "$work/signal2.log" || fail "signal: did not resume from step $step"
same_as_straight "$work/signal"
echo "ok: SIGUSR1 on rank $rank in step $step: stopped, saved, exit 75, resumed to the same weights"

# ... and SIGUSR1 sent to mpirun from outside (what a batch script's trap does), mid-run.
"$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" --set train.steps=100000 \
  --set train.out_dir="$work/outside" > "$work/outside.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "^step    10/" "$work/outside.log" && break; sleep 0.2; done
kill -USR1 $pid
timed wait $pid
[ "$rc" = 75 ] || { cat "$work/outside.log"; fail "SIGUSR1 to mpirun: exit $rc, expected 75"; }
grep -q "stopping: SIGUSR1 on rank" "$work/outside.log" || fail "SIGUSR1 to mpirun: no stop message"
echo "ok: SIGUSR1 to mpirun: every rank stopped, saved, exit 75"

# 2. The time budget.
timed run4 --set train.steps=100000 --set train.out_dir="$work/budget" --time-budget 3s > "$work/budget.log" 2>&1
[ "$rc" = 75 ] || { cat "$work/budget.log"; fail "time budget: exit $rc, expected 75"; }
grep -q "stopping: the time budget (--time-budget) on rank 0" "$work/budget.log" || fail "time budget: no stop message"
[ "$took" -le 10 ] || fail "time budget of 3 s: the run took $took s"
echo "ok: --time-budget 3s: saved and exit 75 after $took s"

# 3. NaN: one step skipped; three in a row rolled back; a persistent fault stops the run.
step=$((11 + RANDOM % 40))
LOOM_FAULT="nan@$step" run4 --set train.out_dir="$work/nan1" > "$work/nan1.log" 2>&1 || { cat "$work/nan1.log"; fail "nan: the run failed"; }
grep -q "guard: step $step: loss nan, gradient norm nan: update skipped (1 in a row" "$work/nan1.log" || { cat "$work/nan1.log"; fail "nan: step $step not reported as skipped"; }
grep -q "step    $steps/$steps | loss" "$work/nan1.log" || fail "nan: the run did not finish"
rank=$((RANDOM % 4))
LOOM_FAULT="nan@$step:$rank,nan@$((step + 1)):$rank,nan@$((step + 2)):$rank" run4 --set train.out_dir="$work/nan3" > "$work/nan3.log" 2>&1 \
  || { cat "$work/nan3.log"; fail "nan x3: the run failed"; }
grep -q "guard: 3 non-finite steps in a row: rolled back to $work/nan3/checkpoints/step-$(printf %08d $(((step - 1) / 10 * 10))) (step $(((step - 1) / 10 * 10))), rollback 1 of at most 3" \
  "$work/nan3.log" || { cat "$work/nan3.log"; fail "nan x3: no rollback to the checkpoint before step $step"; }
same_as_straight "$work/nan3"
faults=""
for s in $(seq 11 30); do faults+="nan@$s,"; done
timed env LOOM_FAULT="$faults" "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" --set guard.max_rollbacks=1 \
  --set train.out_dir="$work/nan_many" > "$work/nan_many.log" 2>&1
[ "$rc" = 2 ] || { cat "$work/nan_many.log"; fail "a persistent NaN: exit $rc, expected 2"; }
grep -q "error: the loss or gradient norm is still not finite at step .* after 1 rollbacks" "$work/nan_many.log" \
  || { cat "$work/nan_many.log"; fail "a persistent NaN: no clear error"; }
echo "ok: NaN at step $step skipped; 3 in a row on rank $rank rolled back to the same final weights; a persistent one stops the run"

# 4. A rank that stops answering.
step=$((11 + RANDOM % 40)) rank=$((RANDOM % 4))
timed env LOOM_FAULT="hang@$step:$rank" "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" \
  --set guard.collective_timeout_s=3 --set train.out_dir="$work/hang" > "$work/hang.log" 2>&1
[ "$rc" != 0 ] || fail "hang: exit 0"
grep -q "gave up waiting: .* timed out after 3000 ms: world rank(s) $rank never arrived" "$work/hang.log" \
  || { cat "$work/hang.log"; fail "hang: no rank named rank $rank"; }
[ "$took" -le 20 ] || fail "hang: the job took $took s to end with a 3 s timeout"
no_leftovers hang
echo "ok: rank $rank silent from step $step: the job ended after $took s naming it and the operation"

# 5. kill -9 at a random step, then during a checkpoint write.
step=$((21 + RANDOM % 30)) rank=$((RANDOM % 4))  # after two checkpoints
timed env LOOM_FAULT="kill@$step:$rank" "$mpiexec" --oversubscribe -np 4 "$loom" "${common[@]}" \
  --set train.out_dir="$work/kill" > "$work/kill.log" 2>&1
[ "$rc" != 0 ] || fail "kill: exit 0"
[ "$took" -le 15 ] || fail "kill: the job took $took s to end"
no_leftovers kill
# The newest committed checkpoint: the one before step $step, or the one before that when the
# kill came before rank 0 had committed it (the writer works in the background).
committed=$(ls "$work/kill/checkpoints" | grep -E '^step-[0-9]+$' | sort | tail -n 1)
before=$(((step - 1) / 10 * 10))
[ "$committed" = "step-$(printf %08d $before)" ] || [ "$committed" = "step-$(printf %08d $((before - 10)))" ] \
  || fail "kill at step $step: the newest committed checkpoint is $committed"
run4 --set train.out_dir="$work/kill" --resume auto > "$work/kill2.log" 2>&1 || { cat "$work/kill2.log"; fail "kill: the restart failed"; }
grep -q "resumed from $work/kill/checkpoints/$committed" "$work/kill2.log" \
  || { cat "$work/kill2.log"; fail "kill: did not resume from $committed, the newest committed checkpoint"; }
same_as_straight "$work/kill"
echo "ok: kill -9 of rank $rank at step $step: exit $rc after $took s; resumed from $committed, the same final weights"

step=$(( (3 + RANDOM % 3) * 10 )) rank=$((RANDOM % 4))
timed env LOOM_FAULT="kill-in-save@$step:$rank" "$mpiexec" --oversubscribe -np 4 "$loom" "${common[@]}" \
  --set train.out_dir="$work/killsave" > "$work/killsave.log" 2>&1
[ "$rc" != 0 ] || fail "kill in save: exit 0"
[ ! -e "$work/killsave/checkpoints/step-$(printf %08d "$step")" ] || fail "kill in save: the half-written step-$step checkpoint was committed"
no_leftovers killsave
# The previous checkpoint was on disk on every rank, but rank 0 may not have committed it yet.
committed=$(ls "$work/killsave/checkpoints" | grep -E '^step-[0-9]+$' | sort | tail -n 1)
[ "$committed" = "step-$(printf %08d $((step - 10)))" ] || [ "$committed" = "step-$(printf %08d $((step - 20)))" ] \
  || fail "kill in save at step $step: the newest committed checkpoint is $committed"
run4 --set train.out_dir="$work/killsave" --resume auto > "$work/killsave2.log" 2>&1 || { cat "$work/killsave2.log"; fail "kill in save: the restart failed"; }
grep -q "resumed from $work/killsave/checkpoints/$committed" "$work/killsave2.log" \
  || { cat "$work/killsave2.log"; fail "kill in save: did not resume from $committed"; }
same_as_straight "$work/killsave"
echo "ok: kill -9 of rank $rank halfway through its step-$step shard: resumed from $committed, same weights"

# 6. A checkpoint directory that cannot be written (under a file): found before the first step
#    (loom train makes its directories at start); every rank stops with rank 0's sentence within
#    seconds, none waits for the collective timeout.
touch "$work/a-file"
timed "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" --set checkpoint.dir="$work/a-file/checkpoints" \
  --set checkpoint.commit_timeout_s=2 --set train.out_dir="$work/nosave" > "$work/nosave.log" 2>&1
[ "$rc" = 2 ] || { cat "$work/nosave.log"; fail "unwritable checkpoint: exit $rc, expected 2"; }
grep -q "error: cannot write into $work/a-file/checkpoints (Not a directory)" "$work/nosave.log" \
  || { cat "$work/nosave.log"; fail "unwritable checkpoint: no clear error"; }
[ "$took" -le 15 ] || fail "unwritable checkpoint: the job took $took s to stop"
no_leftovers nosave
echo "ok: an unwritable checkpoint directory: every rank stopped after $took s with one error"

# 6b. A save that fails on one rank mid-run (its shard write fails halfway, as on a full disk):
#     every rank stops with that rank's sentence within seconds, none waits for the timeout.
timed env LOOM_FAULT="fail-save@20:$rank" "$mpiexec" -q --oversubscribe -np 4 "$loom" "${common[@]}" \
  --set checkpoint.commit_timeout_s=60 --set train.out_dir="$work/failsave" > "$work/failsave.log" 2>&1
[ "$rc" = 2 ] || { cat "$work/failsave.log"; fail "failed save on rank $rank: exit $rc, expected 2"; }
grep -q "error: .*writing the step 20 checkpoint shard failed: an injected disk error" "$work/failsave.log" \
  || { cat "$work/failsave.log"; fail "failed save on rank $rank: no clear error"; }
[ "$(grep -c "injected disk error" "$work/failsave.log")" = 1 ] || { cat "$work/failsave.log"; fail "failed save: the error is not printed once"; }
[ "$took" -le 30 ] || fail "failed save on rank $rank: the job took $took s to stop"
no_leftovers failsave
echo "ok: rank $rank's step-20 shard write failed: every rank stopped after $took s with one error"
