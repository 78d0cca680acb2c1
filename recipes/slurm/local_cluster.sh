#!/usr/bin/env bash
# A real Slurm on this one machine, for the cluster tests and for trying recipes/slurm/train.slurm:
# Debian's slurm-wlm (slurmctld + slurmd, 22.05 on bookworm) and munge, installed with apt-get when
# missing, configured in a private folder (no /etc/slurm edits) with one partition `local`.
#
# Usage: bash recipes/slurm/local_cluster.sh install|up|down|status [--nodes N] [--dir DIR]
#   install    apt-get install slurm-wlm munge when missing (root); without root a note, exit 0
#   up         install when missing (root + apt-get), then start munged, slurmctld and N slurmd
#   down       cancel the cluster's jobs (their steps end), stop the daemons this script started (by
#              their pid files: slurmd, slurmctld, and munged when `up` started it), then SIGKILL any
#              process left of a job of this cluster (a job step whose slurmd died first)
#   status     sinfo of the cluster
#   --nodes N  slurmd daemons on this host (default 1); N > 1 needs a Slurm built with
#              --enable-multiple-slurmd, which `up` checks and refuses with the reason otherwise
#   --dir DIR  state, logs and slurm.conf (default /tmp/imageedit-slurm; $LOCAL_SLURM_DIR)
# Ports: $LOCAL_SLURM_CTLD_PORT (default 16817) and $LOCAL_SLURM_SLURMD_PORT (16818; node i of N > 1 uses
# it + i). Job ids start at $LOCAL_SLURM_FIRST_JOB_ID (default: from the clock), so a new cluster's job
# logs (`%x-%j.out` in the submit folder, appended) never land in an old cluster's log.
# Then: export SLURM_CONF=DIR/slurm.conf (printed by `up`) and sbatch as usual. Exit code 3: this machine
# cannot run it (not root, no apt-get, install failed), with the reason on stderr; 1: a daemon failed.
set -euo pipefail

usage() { sed -n '/^# Usage:/,/^# Then:/p' "$0" | sed 's/^# \{0,1\}//'; }
ACTION="${1:-}"
[[ -n "$ACTION" ]] && shift
NODES=1
DIR="${LOCAL_SLURM_DIR:-/tmp/imageedit-slurm}"
CTLD_PORT="${LOCAL_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${LOCAL_SLURM_SLURMD_PORT:-16818}"
FIRST_JOB_ID="${LOCAL_SLURM_FIRST_JOB_ID:-$(( $(date +%s) % 50000000 + 1000 ))}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

cannot() { echo "local Slurm: cannot run here: $*" >&2; exit 3; }
failed() { echo "local Slurm: $*" >&2; down >&2 || true; exit 1; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null; then
    return
  fi
  [[ "$(id -u)" == 0 ]] || cannot "slurm-wlm/munge are not installed and this is not root (apt-get needs root)"
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and there is no apt-get"
  echo "local Slurm: installing Debian's slurm-wlm and munge (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q slurm-wlm munge; } >"$DIR/apt.log" 2>&1 \
    || cannot "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
}

# A running daemon of ours: its pid file names a live process.
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  # one is running already (ours from an earlier `up` of this folder, or the host's): use it
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  rm -f "$DIR/munged.pid"
  [[ -f /etc/munge/munge.key ]] || cannot "no /etc/munge/munge.key (the munge package creates it)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file="/run/munge/munged.pid" || failed "munged did not start"
  else
    /usr/sbin/munged --force || failed "munged did not start"
  fi
  # ours to stop in `down`
  cp /run/munge/munged.pid "$DIR/munged.pid" 2>/dev/null || true
}

write_conf() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  mkdir -p "$DIR/state" "$DIR/spool"
  local nodes_line
  if [[ "$NODES" == 1 ]]; then
    nodes_line="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
  else
    # several slurmd on one host: distinct node names and ports (Slurm's multiple-slurmd mode)
    nodes_line="NodeName=node[1-$NODES] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + 1))-$((SLURMD_PORT + NODES)) CPUs=$cpus RealMemory=$mem State=UNKNOWN"
  fi
  cat >"$CONF" <<EOF
# written by recipes/slurm/local_cluster.sh: a one-host Slurm for tests
ClusterName=imageedit
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
# no cgroup hierarchy to manage in a container: processes are tracked by their parent chain
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
FirstJobId=$FIRST_JOB_ID
JobRequeue=1
# a killed step's processes get SIGTERM, then SIGKILL after this many seconds
KillWait=30
$nodes_line
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

node_names() {
  if [[ "$NODES" == 1 ]]; then hostname -s; else for i in $(seq 1 "$NODES"); do echo "node$i"; done; fi
}

up() {
  mkdir -p "$DIR"
  install
  start_munge
  if ! alive "$DIR/slurmctld.pid"; then
    write_conf
    slurmctld -f "$CONF" || failed "slurmctld did not start (see $DIR/slurmctld.log)"
  fi
  for node in $(node_names); do
    if ! alive "$DIR/slurmd-$node.pid"; then
      mkdir -p "$DIR/spool/$node"
      if [[ "$NODES" == 1 ]]; then slurmd -f "$CONF"; else slurmd -f "$CONF" -N "$node"; fi \
        || failed "slurmd $node did not start (see $DIR/slurmd-$node.log)"
    fi
  done
  # poll (no fixed sleep) until every node is idle
  local deadline=$((SECONDS + 60)) idle=0
  while ((SECONDS < deadline)); do
    idle="$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)"
    ((idle >= NODES)) && break
    sleep 1
  done
  if ((idle < NODES)); then
    sinfo -N -l >&2 || true
    tail -5 "$DIR/slurmctld.log" >&2 || true
    failed "only $idle of $NODES slurmd node(s) became idle in 60 s (see $DIR/*.log)"
  fi
  echo "local Slurm up: $NODES node(s), partition local; export SLURM_CONF=$CONF"
}

# Stop a process by pid: SIGTERM, up to 10 s (polled), then SIGKILL.
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Processes of this cluster's jobs (slurmstepd and the steps' tasks: their environment names our
# SLURM_CONF, and tasks also a job id), never this script's own ancestors or descendants.
job_processes() {
  local mine=" $$ " pid ppid environ
  pid=$$
  while ppid="$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" && ((ppid > 1)); do
    mine+="$ppid "
    pid="$ppid"
  done
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    [[ "$mine" == *" $pid "* ]] && continue
    ppid="$(awk '{print $4}' "$proc/stat" 2>/dev/null)" || continue
    ((ppid == $$)) && continue  # our own subshells
    environ="$(tr '\0' '\n' 2>/dev/null <"$proc/environ")" || continue
    grep -qxF "SLURM_CONF=$CONF" <<<"$environ" || continue
    if grep -q '^SLURM_JOB_ID=' <<<"$environ" \
      || [[ "$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" == slurmstepd* ]]; then
      echo "$pid"
    fi
  done
}

down() {
  local pid left
  if alive "$DIR/slurmctld.pid"; then
    # cancel every job first: slurmd ends their steps (Ray nodes, trainers) while it is still up
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)) && [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; do sleep 1; done
  fi
  for f in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid"; do
    [[ -f "$f" ]] || continue
    stop_pid "$(cat "$f")"
    rm -f "$f"
  done
  # a step whose slurmd went first (killed, crashed) outlives it: nothing of our jobs may stay
  left="$(job_processes)"
  if [[ -n "$left" ]]; then
    echo "local Slurm: killing $(echo "$left" | wc -l) process(es) left of its jobs" >&2
    kill -KILL $left 2>/dev/null || true
  fi
  if [[ -f "$DIR/munged.pid" ]]; then
    stop_pid "$(cat "$DIR/munged.pid")"
    rm -f "$DIR/munged.pid"
  fi
  echo "local Slurm down"
}

case "$ACTION" in
  install) mkdir -p "$DIR"; (install) || echo "note: the Slurm tests will skip" >&2 ;;
  up) up ;;
  down) down ;;
  status) sinfo -N -l ;;
  -h|--help|"") usage ;;
  *) echo "error: unknown action $ACTION" >&2; usage >&2; exit 2 ;;
esac
