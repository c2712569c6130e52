#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine for the tests marked `slurm` (CI runs this as root).
#
# Needs root and Debian's slurm-wlm and munge packages; installs them with apt-get when missing.
# Writes /etc/slurm/slurm.conf for this host and its CPUs, unless a slurm.conf not written by this
# script is there already (a real cluster's: then nothing is touched and the script fails).
# Idempotent: daemons already running are left alone. Prints "slurm: ready" when a job can run.
set -euo pipefail

say() { echo "slurm: $*" >&2; }
if [ "$(id -u)" != 0 ]; then say "needs root (to run munged, slurmctld and slurmd)"; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

MARK="# written by txl tests/slurm/start.sh"
CONF=/etc/slurm/slurm.conf
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  say "$CONF exists and was not written by this script; leaving it alone"; exit 1
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
HOST=$(hostname -s)
CPUS=$(nproc)
OLD=$(cat "$CONF" 2>/dev/null || true)
cat > "$CONF" <<CONF
$MARK
ClusterName=txl
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
# a cancelled job is killed soon after its SIGTERM, a requeued one starts again after 10 s (cred_expire, 120 by
# default), and finished jobs stay visible to squeue for 10 minutes
AuthInfo=cred_expire=10
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

if [ ! -s /etc/munge/munge.key ]; then
  (command -v mungekey >/dev/null && mungekey --create --force) || \
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
if [ "$OLD" != "$(cat "$CONF")" ] && pgrep -x slurmctld >/dev/null; then  # a changed config: restart
  say "slurm.conf changed; restarting slurmctld and slurmd"
  pkill -x slurmd || true; pkill -x slurmctld || true; sleep 2
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    say "ready ($HOST, $CPUS CPUs)"; exit 0
  fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
say "the node did not become idle; see /var/log/slurm/slurmctld.log and slurmd.log"; exit 1
