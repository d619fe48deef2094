#!/usr/bin/env bash
# The batch scripts of launch/slurm/ on a real Slurm cluster (one node on 127.0.0.1, started by
# tests/launch/slurm_cluster.sh in a temporary directory). For each of train_srun.sbatch and
# train_mpirun.sbatch, a 4-rank training (tp=2 x pp=2) is submitted with sbatch and, once it has
# made some steps, sent SIGUSR1 the way the script's --signal line has Slurm send it before the
# time limit. Checked: the training stops after a step, saves a checkpoint and exits 75; the
# script requeues the job; the job runs again (Restarts=1, SLURM_RESTART_COUNT=1), resumes from
# that checkpoint and finishes; and every step's loss, learning rate and gradient norm in the
# job's log, before and after the stop, equal those of the same training run straight through
# under mpirun. Then a job cancelled with scancel: it saves and exits 75, and is not requeued.
# usage: slurm_test.sh LOOM MPIEXEC SOURCE_DIR WORK_DIR
set -euo pipefail
loom=$1 mpiexec=$2 src=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root, to run slurmd"; exit 77
fi

# The cluster lives in a short temporary path (socket paths are limited to 108 bytes); its logs
# are copied to WORK_DIR at the end. The watchdog (--owner) stops it even if this script is killed.
cluster=$(mktemp -d "${TMPDIR:-/tmp}/loom-slurm.XXXXXX")
finish() {
  "$src/tests/launch/slurm_cluster.sh" stop "$cluster"
  cp -r "$cluster/log" "$work/cluster-log" 2> /dev/null || true
  rm -rf "$cluster"
}
trap finish EXIT
started=$SECONDS
export_line=$("$src/tests/launch/slurm_cluster.sh" start "$cluster" --owner $$) || fail "the cluster did not start"
eval "$export_line"
echo "cluster up in $((SECONDS - started)) s"
# Open MPI's session directories (and PMIx's) go to this test's own temporary directory, which
# the jobs inherit: another copy of this test on the machine has the same job ids.
export TMPDIR=$cluster/tmp

steps=100
train_args=(--set parallel.tp=2 --set parallel.pp=2 --set model.n_layer=2 --set train.steps=$steps
            --set train.log_every=1 --set train.eval_every=0 --set train.threads=1
            --set train.micro_batch_size=16 --set train.grad_accum_steps=2 --set checkpoint.every=0
            --set train.samples=2)
"$mpiexec" --oversubscribe -np 4 "$loom" train "${train_args[@]}" --set train.out_dir="$work/reference" \
  > "$work/reference.log" || { cat "$work/reference.log"; fail "reference run failed"; }
grep -q "^step   $steps/$steps" "$work/reference.log" || fail "reference run did not finish"

# The "step N/STEPS | loss | lr | grad norm" fields of every step line.
step_fields() { grep -E "^step +[0-9]+/$steps " "$1" | cut -d'|' -f1-4; }

job_field() { scontrol show job "$1" | grep -oE "(^| )$2=[^ ]*" | cut -d= -f2; }

wait_for() {  # SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
  local limit=$1 what=$2
  shift 2
  for _ in $(seq $((limit * 4))); do
    "$@" && return 0
    sleep 0.25
  done
  fail "no $what after $limit s"
}

job_state_is() { [ "$(job_field "$1" JobState)" = "$2" ]; }
# Back in the queue and held (see below).
job_requeued() { job_state_is "$1" PENDING && [ "$(job_field "$1" Reason)" = BeginTime ]; }

# VARIANT (srun or mpirun) SCANCEL_OPTION [SBATCH_OPTION...]: submit, signal, requeue, check.
requeue_test() {
  local variant=$1 signal_option=$2 log="$work/$1.out" out="$work/$1"
  shift 2
  local job t0=$SECONDS
  job=$(LOOM=$loom MPIRUN=$mpiexec sbatch --parsable --chdir="$work" --output="$log" "$@" \
          "$src/launch/slurm/train_$variant.sbatch" "${train_args[@]}" --set train.out_dir="$out")
  wait_for 60 "step 20 in $log" grep -qsE "^step +20/$steps " "$log"
  # What --signal=USR1@120 (srun) or --signal=B:USR1@120 (mpirun) has Slurm do.
  scancel --signal=USR1 $signal_option "$job"

  # A requeued job waits (Reason=BeginTime) for the credential lifetime plus 1 s before it can run
  # again: 121 s on a default Slurm, 11 s on the test cluster (cred_expire=10). Starting it
  # earlier by hand (scontrol update StartTime=now) makes its step launch fail, and srun exit 0.
  wait_for 60 "requeue of job $job" job_requeued "$job"
  [ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: Restarts=$(job_field "$job" Restarts), expected 1"
  local stop_line checkpoint
  stop_line=$(grep -E "^stopping: SIGUSR1 on rank [0-9]+: finished step [0-9]+ of $steps, checkpoint .* committed; exit 75" "$log") \
    || { cat "$log"; fail "$variant: no stop message"; }
  checkpoint=$(sed -E 's/.*checkpoint (.*) committed.*/\1/' <<< "$stop_line")
  [ -f "$checkpoint/manifest.pb" ] || fail "$variant: $checkpoint/manifest.pb is missing"
  grep -q "exit 75): requeueing job $job" "$log" || { cat "$log"; fail "$variant: the script did not requeue"; }

  wait_for 120 "end of job $job" job_state_is "$job" COMPLETED
  [ "$(job_field "$job" ExitCode)" = 0:0 ] || fail "job $job: ExitCode=$(job_field "$job" ExitCode)"
  grep -q "^job $job, run 2, " "$log" || { cat "$log"; fail "$variant: the second run did not see SLURM_RESTART_COUNT=1"; }
  grep -q "^resumed from $checkpoint: step " "$log" || { cat "$log"; fail "$variant: did not resume from $checkpoint"; }
  grep -q "^step   $steps/$steps " "$log" || { cat "$log"; fail "$variant: did not finish"; }
  diff <(step_fields "$work/reference.log") <(step_fields "$log") > "$work/$variant.diff" \
    || { cat "$work/$variant.diff"; fail "$variant: steps differ from the straight run"; }
  echo "$variant: ${stop_line%%,*}, $(basename "$checkpoint"); requeued, resumed and finished; all $steps steps equal ($((SECONDS - t0)) s)"
}

# scancel: the ranks get SIGTERM, save and exit 75, and the script does not requeue the job.
cancel_test() {
  local log="$work/cancel.out" job t0=$SECONDS
  job=$(LOOM=$loom sbatch --parsable --chdir="$work" --output="$log" \
          "$src/launch/slurm/train_srun.sbatch" "${train_args[@]}" --set train.out_dir="$work/cancel")
  wait_for 60 "step 20 in $log" grep -qsE "^step +20/$steps " "$log"
  scancel "$job"
  wait_for 60 "end of job $job" job_state_is "$job" CANCELLED
  grep -qE "^stopping: SIGTERM on rank [0-9]+: finished step [0-9]+ of $steps, checkpoint .* committed; exit 75" "$log" \
    || { cat "$log"; fail "cancel: no stop message"; }
  grep -q "Slurm is ending the job (JobState=COMPLETING Reason=None): not requeued" "$log" \
    || { cat "$log"; fail "cancel: the script did not say it leaves the job cancelled"; }
  [ "$(job_field "$job" Restarts)" = 0 ] || fail "cancel: job $job was requeued"
  [ "$(job_field "$job" ExitCode)" = 75:0 ] || fail "cancel: job $job: ExitCode=$(job_field "$job" ExitCode), expected 75:0"
  echo "cancel: saved on SIGTERM, exit 75, not requeued ($((SECONDS - t0)) s)"
}

requeue_test srun ""
# ... and LOOM_TIME_BUDGET=auto: an 8-minute job gives each run what is left of it less 3 minutes.
LOOM_TIME_BUDGET=auto requeue_test mpirun --batch --time=8
budgets=$(grep -oE "^time budget of this run: [0-9]+s" "$work/mpirun.out" | grep -oE "[0-9]+" | tr '\n' ' ')
for budget in $budgets; do
  [ "$budget" -gt 200 ] && [ "$budget" -le 300 ] || fail "mpirun: time budgets $budgets, expected 2 in (200, 300]"
done
[ "$(wc -w <<< "$budgets")" -eq 2 ] || fail "mpirun: time budgets '$budgets', expected one per run"
cancel_test
echo "PASS: srun and mpirun batch scripts stop on SIGUSR1, requeue, resume and match the straight run; scancel stops without requeue ($SECONDS s)"
