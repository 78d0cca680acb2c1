#!/usr/bin/env bash
# A real Slurm on this one machine, for the cluster tests and for trying recipes/slurm/train.slurm:
# Debian's slurm-wlm (slurmctld + slurmd, 22.05 on bookworm) and munge, installed with apt-get when
# missing, configured in a private folder (no /etc/slurm edits) with one partition `local`.
#
# Usage: bash recipes/slurm/local_cluster.sh install|up|down|status [--nodes N] [--dir DIR]
#   install    apt-get install slurm-wlm munge when missing (root); without root a note, exit 0
#   up         install when missing (root + apt-get), then start munged, slurmctld and N slurmd
#   down       stop the daemons this script started (by their pid files) and nothing else
#   status     sinfo of the cluster
#   --nodes N  slurmd daemons on this host (default 1); N > 1 needs a Slurm built with
#              --enable-multiple-slurmd, which `up` checks and refuses with the reason otherwise
#   --dir DIR  state, logs and slurm.conf (default /tmp/imageedit-slurm; $LOCAL_SLURM_DIR)
# Then: export SLURM_CONF=DIR/slurm.conf (printed by `up`) and sbatch as usual. Exit code 3: this machine
# cannot run it (not root, no apt-get, install failed), with the reason on stderr.
set -euo pipefail

usage() { sed -n '/^# Usage:/,/^# Then:/p' "$0" | sed 's/^# \{0,1\}//'; }
ACTION="${1:-}"
[[ -n "$ACTION" ]] && shift
NODES=1
DIR="${LOCAL_SLURM_DIR:-/tmp/imageedit-slurm}"
CTLD_PORT="${LOCAL_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${LOCAL_SLURM_SLURMD_PORT:-16818}"
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
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi  # one is running already
  [[ -f /etc/munge/munge.key ]] || cannot "no /etc/munge/munge.key (the munge package creates it)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file="/run/munge/munged.pid" || cannot "munged did not start"
  else
    /usr/sbin/munged --force || cannot "munged did not start"
  fi
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
    slurmctld -f "$CONF" || cannot "slurmctld did not start (see $DIR/slurmctld.log)"
  fi
  for node in $(node_names); do
    if ! alive "$DIR/slurmd-$node.pid"; then
      mkdir -p "$DIR/spool/$node"
      if [[ "$NODES" == 1 ]]; then slurmd -f "$CONF"; else slurmd -f "$CONF" -N "$node"; fi \
        || cannot "slurmd $node did not start (see $DIR/slurmd-$node.log)"
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
    cannot "only $idle of $NODES slurmd node(s) became idle in 60 s (see $DIR/*.log)"
  fi
  echo "local Slurm up: $NODES node(s), partition local; export SLURM_CONF=$CONF"
}

down() {
  local pid
  for f in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid"; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
  done
  echo "local Slurm down (munged left running: other users of this host may rely on it)"
}

case "$ACTION" in
  install) mkdir -p "$DIR"; (install) || echo "note: the Slurm tests will skip" >&2 ;;
  up) up ;;
  down) down ;;
  status) sinfo -N -l ;;
  -h|--help|"") usage ;;
  *) echo "error: unknown action $ACTION" >&2; usage >&2; exit 2 ;;
esac
