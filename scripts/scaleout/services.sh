#!/usr/bin/env bash
# Start or stop, on 127.0.0.1 only, the engines `nox -s scaleout` runs sah on: a single-node
# SLURM (munge, slurmctld, slurmd), a PostgreSQL server with a fresh database and an MLflow
# tracking server with proxied artifacts. Everything lives in one state folder; nothing
# system-wide is started or changed apart from installing Debian's packages.
#   services.sh up <state dir>     (writes <state dir>/env for the checker)
#   services.sh down <state dir>   (stops what `up` started, by the pids it recorded)
set -euo pipefail

STATE=${2:?usage: services.sh up|down <state dir>}
PIDS=$STATE/pids

say() { printf '[scaleout %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for the command $1 to succeed.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      say "timed out waiting for: $1"
      return 1
    fi
    sleep 1
  done
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
}

start_munge() {
  mkdir -p "$STATE/munge"
  chmod 700 "$STATE/munge"
  dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$STATE/munge/munge.key"
  munged --force --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  cat "$STATE/munge/munged.pid" >>"$PIDS"
  wait_for "munge --socket=$STATE/munge/munge.socket -n </dev/null | unmunge --socket=$STATE/munge/munge.socket" 30
  say "munged up"
}

start_slurm() {
  local node ctld_port slurmd_port
  # This machine as slurmd sees it (CPUs, sockets, cores, threads, memory), named localhost.
  node=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1/')
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  mkdir -p "$STATE/slurm/ctld" "$STATE/slurm/d"
  cat >"$STATE/slurm/slurm.conf" <<CONF
ClusterName=sahscaleout
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/slurm/ctld
SlurmdSpoolDir=$STATE/slurm/d
SlurmctldPidFile=$STATE/slurm/slurmctld.pid
SlurmdPidFile=$STATE/slurm/slurmd.pid
SlurmctldLogFile=$STATE/slurm/slurmctld.log
SlurmdLogFile=$STATE/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
$node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$STATE/slurm/slurm.conf
  slurmctld -f "$SLURM_CONF"
  wait_for "test -s $STATE/slurm/slurmctld.pid && scontrol ping | grep -q UP" 60
  cat "$STATE/slurm/slurmctld.pid" >>"$PIDS"
  slurmd -f "$SLURM_CONF" -N localhost
  wait_for "test -s $STATE/slurm/slurmd.pid" 30
  cat "$STATE/slurm/slurmd.pid" >>"$PIDS"
  wait_for "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'" 90
  say "SLURM up: $(sinfo -h -N -o '%N %c CPUs %m MB %T')"
}

start_postgres() {
  local bin port
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  port=$(free_port)
  mkdir -p "$STATE/pg/data" "$STATE/pg/socket"
  chown -R postgres:postgres "$STATE/pg"
  chmod 755 "$STATE"  # the postgres user must reach its folders
  runuser -u postgres -- "$bin/initdb" -D "$STATE/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $STATE/pg/socket" start >/dev/null
  head -n 1 "$STATE/pg/data/postmaster.pid" >>"$PIDS"
  runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres sah_scaleout
  echo "export SAH_SCALEOUT_PG=postgresql://postgres@127.0.0.1:$port/sah_scaleout" >>"$STATE/env"
  say "PostgreSQL up on 127.0.0.1:$port, database sah_scaleout"
}

start_mlflow() {
  local port
  port=$(free_port)
  mkdir -p "$STATE/mlflow/artifacts"
  # setsid: the server and its workers form one process group, stopped together.
  setsid mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$STATE/mlflow/server.db" \
    --artifacts-destination "$STATE/mlflow/artifacts" >"$STATE/mlflow/server.log" 2>&1 &
  echo "-$!" >>"$PIDS"
  wait_for "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:$port/health\", timeout=2)'" 120
  {
    echo "export SAH_SCALEOUT_MLFLOW=http://127.0.0.1:$port"
    echo "export SAH_SCALEOUT_MLFLOW_ARTIFACTS=$STATE/mlflow/artifacts"
  } >>"$STATE/env"
  say "MLflow server up on http://127.0.0.1:$port, artifacts in $STATE/mlflow/artifacts"
}

up() {
  mkdir -p "$STATE"
  : >"$PIDS"
  : >"$STATE/env"
  install_packages
  start_munge
  start_slurm
  echo "export SLURM_CONF=$STATE/slurm/slurm.conf" >>"$STATE/env"
  start_postgres
  start_mlflow
}

# slurmstepd processes of this cluster (they detach from slurmd): those holding a socket in
# this cluster's spool folder.
step_pids() {
  local inodes pid fd
  inodes=$(awk -v dir="$STATE/slurm/d/" 'index($8, dir) == 1 { print "socket:[" $7 "]" }' /proc/net/unix)
  [[ -n $inodes ]] || return 0
  for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    for fd in /proc/"$pid"/fd/*; do
      if grep -qxF -- "$(readlink "$fd" 2>/dev/null)" <<<"$inodes"; then
        echo "$pid"
        break
      fi
    done
  done
}

descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

# Stops, newest first, each process (or process group, "-pid") that `up` recorded, and every
# process they started (the MLflow server's workers and job consumer).
down() {
  [[ -f $PIDS ]] || return 0
  if [[ -f $STATE/pg/data/postmaster.pid ]]; then
    runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl" \
      -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [[ -f $STATE/slurm/slurm.conf ]]; then
    SLURM_CONF=$STATE/slurm/slurm.conf scancel --full --quiet --user=root 2>/dev/null || true
    # Let job steps finish their clean-up while slurmd, slurmctld and munge still answer.
    for _ in $(seq 30); do
      [[ -n $(SLURM_CONF=$STATE/slurm/slurm.conf squeue -h 2>/dev/null) || -n $(step_pids) ]] ||
        break
      sleep 1
    done
  fi
  local targets=() entry pid
  mapfile -t targets < <(step_pids)
  while read -r entry; do
    [[ -n $entry ]] || continue
    targets+=("$entry")
    mapfile -t -O "${#targets[@]}" targets < <(descendants "${entry#-}")
  done < <(tac "$PIDS")
  for pid in "${targets[@]}"; do kill -TERM -- "$pid" 2>/dev/null || true; done
  for _ in $(seq 10); do
    local alive=0
    for pid in "${targets[@]}"; do kill -0 -- "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 1
  done
  for pid in "${targets[@]}"; do kill -KILL -- "$pid" 2>/dev/null || true; done
  : >"$PIDS"
  say "stopped everything started in $STATE"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: services.sh up|down <state dir>" >&2; exit 2 ;;
esac
