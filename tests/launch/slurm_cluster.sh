#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1 that lives entirely inside one directory: its own munge
# key, socket and daemon, its own slurm.conf on free ports, state, spool, logs and pid files. It
# uses no /etc path and no default port, so it runs beside a system-wide Slurm or munge without
# touching them. For tests of the batch scripts in launch/slurm/ (and for trying them by hand).
#
# usage: slurm_cluster.sh start DIR [--cpus N] [--owner PID]
#            start (DIR must be absent or empty), wait until the node is idle, and print the
#            line that exports SLURM_CONF for the client commands (sbatch, squeue, scontrol)
#        slurm_cluster.sh stop DIR
#            cancel every job, stop every process the cluster started
#
# The node declares N CPUs (default 8) whatever the machine has, so that a 4-task job runs on a
# 2-core box: tasks share the cores, which is fine for CPU tests. With --owner, a watchdog stops
# the cluster once process PID has exited, so that a test killed on timeout leaves no daemons.
# Needs root (slurmd starts job steps as the submitting user) and the Debian packages slurmctld,
# slurmd, slurm-client and munge (scripts/setup.sh).
set -euo pipefail

usage() { echo "usage: slurm_cluster.sh start DIR [--cpus N] [--owner PID] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$(realpath -m "$2")
conf="$dir/slurm.conf"
# The node has the machine's name: mpirun (Open MPI) starts its ranks on a node of another name
# through `srun orted`, as it would on a remote node, instead of starting them itself.
node=$(hostname -s)
partition=loom

# Processes of this cluster: the daemons carry LOOM_SLURM_CLUSTER=DIR in their environment, job
# processes this SLURM_CONF and a SLURM_JOB_ID; slurmstepd (which starts with a clean
# environment) is known by its log file in DIR. Builtins only but for slurmstepd: this reads every
# process's environment.
cluster_pids() {
  local proc pid entries entry cmd marked conf_seen job_seen
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] || continue
    mapfile -t -d '' entries 2> /dev/null < "$proc/environ" || continue
    marked=0 conf_seen=0 job_seen=0
    for entry in "${entries[@]}"; do
      case $entry in
        "LOOM_SLURM_CLUSTER=$dir") marked=1 ;;
        "SLURM_CONF=$conf") conf_seen=1 ;;
        SLURM_JOB_ID=*) job_seen=1 ;;
      esac
    done
    cmd=""
    read -r -d '' cmd 2> /dev/null < "$proc/cmdline" || true
    if [ $marked = 1 ] || [ $((conf_seen + job_seen)) = 2 ] ||
       { [[ $cmd == slurmstepd* ]] && [ -n "$(find "$proc/fd" -lname "$dir/*" -print -quit 2> /dev/null)" ]; }; then
      echo "$pid"
    fi
  done
}

stop_cluster() {
  [ -f "$conf" ] || return 0
  # Cancel the jobs first so that slurmd's step daemons end their tasks themselves.
  if [ -f "$dir/pids/slurmctld.pid" ]; then
    SLURM_CONF=$conf timeout 5 scancel --partition=$partition --quiet 2> /dev/null || true
    for _ in $(seq 20); do
      [ -z "$(SLURM_CONF=$conf timeout 5 squeue --noheader --partition=$partition 2> /dev/null)" ] && break
      sleep 0.25
    done
  fi
  local pid name
  for name in slurmctld slurmd munged watchdog; do
    pid=$(cat "$dir/pids/$name.pid" 2> /dev/null) || continue
    [ "$pid" != $$ ] && kill "$pid" 2> /dev/null || true
  done
  # Whatever is left (a step daemon, a job's processes, a daemon that ignored SIGTERM) is killed.
  for _ in $(seq 20); do
    [ -z "$(cluster_pids)" ] && break
    sleep 0.25
  done
  for pid in $(cluster_pids); do kill -9 "$pid" 2> /dev/null || true; done
  rm -f "$dir"/pids/*.pid
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_cluster() {
  local cpus=8 owner=""
  while [ $# -gt 0 ]; do
    case $1 in
      --cpus) [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || usage; cpus=$2; shift 2 ;;
      --owner) [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || usage; owner=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_cluster.sh: needs root, to let slurmd start job steps" >&2; exit 1
  fi
  local tool
  for tool in munged slurmctld slurmd sbatch scontrol sinfo; do
    command -v $tool > /dev/null || { echo "slurm_cluster.sh: $tool not found; run scripts/setup.sh" >&2; exit 1; }
  done
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "slurm_cluster.sh: $dir is not empty; give a new directory" >&2; exit 2
  fi
  # munged insists on a socket directory that everyone may enter, and a key only its owner reads.
  mkdir -p "$dir"/{munge,munge-key,state,spool,log,pids,tmp}
  chmod 755 "$dir" "$dir/munge"
  chmod 700 "$dir/munge-key"
  trap 'echo "slurm_cluster.sh: start failed; logs in $dir/log" >&2; stop_cluster' ERR
  export LOOM_SLURM_CLUSTER=$dir

  # munge: a fresh key, and a socket that only this cluster's slurm.conf names.
  dd if=/dev/urandom of="$dir/munge-key/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge-key/munge.key"
  munged --key-file="$dir/munge-key/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/pids/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge-key/munged.seed"

  cat > "$conf" <<EOF
# Written by slurm_cluster.sh: a one-node test cluster on 127.0.0.1, everything under $dir.
ClusterName=loom-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a job step credential's lifetime, 120 s by default. Slurm holds a requeued job
# that long (plus 1 s), while slurmd still rejects the old run's revoked credentials: a test
# cluster waits 11 s instead.
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
TmpFS=$dir/tmp
SlurmctldPidFile=$dir/pids/slurmctld.pid
SlurmdPidFile=$dir/pids/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
PlugStackConfig=$dir/plugstack.conf
# No cgroups: processes are tracked through /proc, tasks are not bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Look at pending jobs every second, not every 60 (and backfill every 30) s: a requeued job
# starts as soon as its hold ends.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobRequeue=1
ReturnToService=2
# The node's CPUs below are what this file says, not what the machine has.
SlurmdParameters=config_overrides
# A finished job's record is kept 30 s (default 300).
MinJobAge=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  : > "$dir/plugstack.conf"

  slurmctld -f "$conf"
  slurmd -f "$conf" -N "$node"

  # Idle: registered, configured and not drained.
  local state=""
  for _ in $(seq 120); do
    state=$(SLURM_CONF=$conf sinfo --noheader --nodes=$node --format=%T 2> /dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.25
  done
  if [ "$state" != idle ]; then
    echo "slurm_cluster.sh: node $node is '${state:-unreachable}', not idle, after 30 s; logs in $dir/log" >&2
    false
  fi
  trap - ERR

  # The watchdog: stops the cluster once its owner is gone (or exits after a `stop`).
  if [ -n "$owner" ]; then
    local watch='while kill -0 "$1" 2> /dev/null && [ -f "$2/pids/slurmctld.pid" ]; do sleep 1; done
                 exec "$3" stop "$2"'
    nohup setsid env -u LOOM_SLURM_CLUSTER bash -c "$watch" watchdog "$owner" "$dir" "$(realpath "$0")" \
      > "$dir/log/watchdog.log" 2>&1 &
    echo $! > "$dir/pids/watchdog.pid"
  fi
  echo "export SLURM_CONF=$conf"
}

case $action in
  start) shift 2; start_cluster "$@" ;;
  stop)  [ $# -eq 2 ] || usage; stop_cluster ;;
  *) usage ;;
esac
