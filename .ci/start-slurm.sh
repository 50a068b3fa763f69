#!/usr/bin/env bash
# A real single-node Slurm for the tests: munge, slurmdbd (accounting in the running MariaDB, so that
# sacct answers), slurmctld and slurmd on this host, one `gpu` GRES on a stand-in device file.
# Idempotent: installs what is missing (Debian packages, as root), writes the configs, starts what is
# not running, and waits until the node is idle. Usage: bash .ci/start-slurm.sh
set -euo pipefail

host=$(hostname -s)
log() { echo "start-slurm: $*"; }

missing=()
command -v munged >/dev/null || missing+=(munge)
command -v slurmctld >/dev/null || missing+=(slurm-wlm)
command -v slurmdbd >/dev/null || missing+=(slurmdbd)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -- munge: the authentication every Slurm daemon and command uses --------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  start-stop-daemon --start --oknodo --chuid munge --exec /usr/sbin/munged -- --force
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi

# -- configuration -----------------------------------------------------------------------------------------
mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
real_mem=$((mem_kb / 1024 * 9 / 10))   # a little under MemTotal, or slurmd marks the node invalid
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf.new <<EOF
# Written by likeness/.ci/start-slurm.sh: a single-node cluster for the workflow's Slurm test.
ClusterName=likeness
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# sacct shows the GPU a job was given (AllocTRES gres/gpu=1).
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for a while; sacct keeps them for good.
MinJobAge=300
KillWait=5
NodeName=${host} CPUs=${cpus} RealMemory=${real_mem} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
# A GPU Slurm counts but that does not exist: without File= slurmd reports 0 GPUs and the node is INVAL.
cat > /etc/slurm/gres.conf.new <<EOF
AutoDetect=off
NodeName=${host} Name=gpu File=/dev/null Count=1
EOF
cat > /etc/slurm/slurmdbd.conf.new <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=root
StorageLoc=slurm_acct_db
EOF
changed=0
for name in slurm.conf gres.conf slurmdbd.conf; do
  if ! cmp -s "/etc/slurm/${name}.new" "/etc/slurm/${name}"; then
    mv "/etc/slurm/${name}.new" "/etc/slurm/${name}"
    changed=1
  else
    rm "/etc/slurm/${name}.new"
  fi
done
chmod 600 /etc/slurm/slurmdbd.conf

# -- daemons -----------------------------------------------------------------------------------------------
# Each daemon writes its pid file under /run/slurm: the check and the restart use that pid only.
pidof_daemon() { cat "/run/slurm/$1.pid" 2>/dev/null || true; }
running() {
  local pid
  pid=$(pidof_daemon "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}
if [ "$changed" = 1 ]; then
  # New configuration: restart whatever runs with the old one.
  for daemon in slurmd slurmctld slurmdbd; do
    if running "$daemon"; then
      log "restarting $daemon (configuration changed)"
      kill "$(pidof_daemon "$daemon")" 2>/dev/null || true
      for _ in $(seq 1 40); do running "$daemon" || break; sleep 0.25; done
    fi
  done
fi
if ! (echo > /dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  echo "start-slurm: slurmdbd needs the MariaDB server on 127.0.0.1:3306" >&2
  exit 1
fi
if ! running slurmdbd; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
  for _ in $(seq 1 60); do (echo > /dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.5; done
fi
if ! running slurmctld; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
  for _ in $(seq 1 60); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
# The cluster must be known to the accounting database (slurmctld registers it; make sure).
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx likeness; then
  sacctmgr -i add cluster likeness >/dev/null 2>&1 || true
fi
if ! running slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd
fi

state=""
for _ in $(seq 1 60); do
  state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n1)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|inval*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated) log "node ${host} is ${state}; sacct: $(sacct -n -X -S now-1minute >/dev/null 2>&1 && echo ok || echo unavailable)" ;;
  *) echo "start-slurm: node ${host} is '${state}' (see /var/log/slurm/)" >&2; exit 1 ;;
esac
