#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests of the submitit launcher.
#
#   scripts/slurm_local.sh install   # apt-get install slurm-wlm + munge (Debian/Ubuntu), if missing
#   scripts/slurm_local.sh start     # install if needed, write the config, start munged,
#                                    # slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_local.sh status    # exit 0 if the node answers and is idle/mixed/allocated
#   scripts/slurm_local.sh stop      # stop the daemons this script started (by their pid files)
#   scripts/slurm_local.sh env       # prints `export SLURM_CONF=...` for sbatch/squeue/sinfo
#
# Everything (config, munge key and socket, state, logs, pid files) lives in one private
# folder, $RPB_SLURM_DIR (default /tmp/rpb-slurm); /etc/slurm and /etc/munge are not used,
# so clients need SLURM_CONF=$RPB_SLURM_DIR/slurm.conf (the `env` command prints it).
# Needs root (apt-get, and slurmd launches the jobs). No systemd: the daemons are started
# directly. No cgroups: proctrack/linuxproc, task/none, no memory enforcement.
# The cluster: one node (this host, CPUs = nproc, RealMemory <= 4096 MB), one partition
# `debug`; finished jobs are listed in $RPB_SLURM_DIR/log/jobcomp.txt (no slurmdbd, so no sacct).
# Every command is idempotent; `start` on a running cluster only checks it.
set -euo pipefail

DIR=${RPB_SLURM_DIR:-/tmp/rpb-slurm}
CTLD_PORT=${RPB_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
NODE=$(hostname -s)
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (apt-get install, slurmd); running as $(id -un)"; }

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
  && command -v munged >/dev/null && command -v sbatch >/dev/null; }

cmd_install() {
  if installed; then
    log "slurm-wlm and munge are installed ($(slurmctld -V 2>/dev/null || echo '?'))"
    return 0
  fi
  need_root
  command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge by hand"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  local policy # not `apt-cache ... | grep -q`: with pipefail, grep's early exit fails the pipe
  policy=$(apt-cache policy slurm-wlm 2>/dev/null || true)
  if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
    log "apt-get update (no slurm-wlm candidate in the package lists)"
    apt-get update -qq >"$DIR/apt.log" 2>&1 || { tail -5 "$DIR/apt.log" >&2; die "apt-get update failed"; }
  fi
  log "apt-get install slurm-wlm munge"
  # policy-rc.d in containers refuses to start services: fine, we start them ourselves.
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 slurm-wlm munge >"$DIR/apt.log" 2>&1 \
    || { tail -5 "$DIR/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $DIR/apt.log)"; }
  installed || die "slurm-wlm installed but slurmctld/slurmd/munged/sbatch not found"
  log "installed in $((SECONDS - t0)) s ($(slurmctld -V))"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1 || true; }

cmd_status() {
  local ok=0 name
  for name in munged slurmctld slurmd; do
    if pid_alive "$DIR/$name.pid"; then log "$name running (pid $(cat "$DIR/$name.pid"))"
    else log "$name not running"; ok=1; fi
  done
  [ $ok -eq 0 ] || return 1
  local state
  state=$(node_state)
  log "node $NODE: ${state:-no answer} (SLURM_CONF=$CONF)"
  case $state in idle* | mix* | alloc* | comp*) return 0 ;; *) return 1 ;; esac
}

write_config() {
  local cpus mem_mb
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) # GNU nproc obeys OMP_NUM_THREADS
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024) - 512}' /proc/meminfo)
  [ "$mem_mb" -gt 4096 ] && mem_mb=4096
  mkdir -p "$DIR"/{munge,state,spool,log}
  chmod 755 "$DIR"
  chmod 711 "$DIR/munge" # clients reach the socket; the key itself is 0400
  cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster, no cgroups, no accounting.
ClusterName=rpb-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  log "wrote $CONF (node $NODE, CPUs=$cpus, RealMemory=${mem_mb} MB, partition debug)"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.5
  done
  log "$what after $((SECONDS - t_start)) s"
}

munge_ok() { munge -n --socket="$SOCKET" 2>/dev/null | unmunge --socket="$SOCKET" >/dev/null 2>&1; }
node_idle() { case $(node_state) in idle*) return 0 ;; *) return 1 ;; esac; }

cmd_start() {
  mkdir -p "$DIR"
  cmd_install
  need_root
  if cmd_status 2>/dev/null; then
    log "already running and idle: export SLURM_CONF=$CONF"
    return 0
  fi
  cmd_stop >/dev/null 2>&1 || true  # half-started leftovers of an earlier start
  t_start=$SECONDS
  rm -rf "$DIR/state" "$DIR/spool" "$DIR/log"
  write_config
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
  munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    || { tail -5 "$DIR/log/munged.log" >&2 2>/dev/null; die "munged did not start"; }
  wait_for 20 "munged answers" munge_ok || die "munged does not answer (log: $DIR/log/munged.log)"
  slurmctld -c -f "$CONF" \
    || { tail -5 "$DIR/log/slurmctld.log" >&2 2>/dev/null; die "slurmctld did not start"; }
  slurmd -f "$CONF" -N "$NODE" \
    || { tail -5 "$DIR/log/slurmd.log" >&2 2>/dev/null; die "slurmd did not start"; }
  if ! wait_for 90 "node $NODE idle" node_idle; then
    sinfo -N -l >&2 || true
    tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    die "node $NODE not idle within 90 s (logs: $DIR/log)"
  fi
  log "started in $((SECONDS - t_start)) s: export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid NAME: TERM the pid of its pid file, wait, then KILL
  local file=$DIR/$1.pid pid i
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
  log "stopped $1 (pid $pid)"
}

cmd_stop() {
  [ -d "$DIR" ] || { log "nothing to stop ($DIR absent)"; return 0; }
  # scancel first: jobs of this cluster must not outlive it.
  if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"; then
    timeout 10 scancel --partition=debug --user="$(id -un)" 2>/dev/null || true
    local i
    for i in $(seq 1 30); do
      [ -z "$(timeout 5 squeue -h -p debug -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged
}

case ${1:-} in
  install) mkdir -p "$DIR"; cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
