#!/usr/bin/env bash
# Bring up a one-node SLURM test cluster on this machine (Debian/Ubuntu, as root,
# without systemd): munge, MariaDB, slurmdbd, slurmctld and slurmd, started by hand,
# each with a PID file under /run that slurm-down.sh uses to stop it.
#
# Idempotent: packages already installed are not reinstalled, daemons already
# running are left alone, the accounting entries are created only when missing.
#
# The node is this machine (`slurmd -C`), in partition `debug` (the default), with
# one fake GPU (`Gres=gpu:1`, File=/dev/null) so that jobs requesting `--gpus=1`
# schedule. Accounting goes through slurmdbd (Snakemake's SLURM plugin polls
# `sacct`). Cluster `cambench`, account `cambench`, user root.
#
# Environment: SLURM_TEST_MEM_MB (the node's RealMemory, default 90% of what
# `slurmd -C` reports), SLURM_TEST_ACCOUNT (default cambench).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-up.sh: must run as root" >&2
    exit 1
fi

CLUSTER=cambench
ACCOUNT=${SLURM_TEST_ACCOUNT:-cambench}
PARTITION=debug
DB_PASS=cambench-slurmdbd
NODE=$(hostname -s)
CONF=/etc/slurm
RUN=/run/slurm
LOG=/var/log/slurm

log() { echo "slurm-up: $*"; }

# A daemon is running when its PID file names a live process.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq 1 $((limit * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "slurm-up.sh: timed out after ${limit}s waiting for $what" >&2
    for f in "$LOG"/*.log /var/log/munge/munged.log /var/log/mysql/error.log; do
        [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    return 1
}

# --- packages -------------------------------------------------------------------
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d: without systemd, keep the packages' init scripts from starting daemons
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    rm -f /usr/sbin/policy-rc.d
fi

# --- munge ----------------------------------------------------------------------
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating the munge key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid; then
    log "starting munged"
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged --force
fi
wait_for 20 "munge" sh -c 'munge -n | unmunge'

# --- MariaDB --------------------------------------------------------------------
install -d -o mysql -g mysql -m 0755 /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    log "initializing the MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! running /run/mysqld/mysqld.pid; then
    log "starting mariadbd"
    rm -f /run/mysqld/mysqld.pid
    setsid mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
        --socket=/run/mysqld/mysqld.sock >/var/log/mysql-cambench.log 2>&1 </dev/null &
fi
wait_for 60 "MariaDB" mariadb -e "SELECT 1"
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- SLURM configuration --------------------------------------------------------
install -d -m 0755 "$CONF" "$RUN" "$LOG" /var/lib/slurm/slurmctld /var/spool/slurmd

# this machine as the node, as slurmd sees it, with a little memory held back
node_line=$(slurmd -C | head -n 1)
real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
mem=${SLURM_TEST_MEM_MB:-$((real_mem * 9 / 10))}
node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$NODE/" -e "s/RealMemory=[0-9]*/RealMemory=$mem/" <<<"$node_line")

cat >"$CONF/slurm.conf.new" <<EOF
# Written by tests/cluster/slurm-up.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# keep finished jobs visible to squeue for a while (sacct has them forever)
MinJobAge=300
InactiveLimit=0
KillWait=10
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
# Snakemake's plugin puts the rule name in the job comment: keep it in sacct
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
$node_line Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$CONF/gres.conf.new" <<EOF
# A fake GPU, so that jobs asking for --gpus=1 schedule on this test node.
NodeName=$NODE Name=gpu File=/dev/null
EOF
cat >"$CONF/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
changed=0
for f in slurm.conf gres.conf slurmdbd.conf; do
    if cmp -s "$CONF/$f.new" "$CONF/$f"; then
        rm "$CONF/$f.new"
    else
        mv "$CONF/$f.new" "$CONF/$f"
        changed=1
    fi
done
chmod 0600 "$CONF/slurmdbd.conf"
chmod 0644 "$CONF/slurm.conf" "$CONF/gres.conf"
if [ "$changed" -eq 1 ] && { running "$RUN/slurmctld.pid" || running "$RUN/slurmd.pid"; }; then
    log "configuration changed: restarting the SLURM daemons"
    "$(dirname "$0")/slurm-down.sh" --slurm-only
fi

# --- daemons ----------------------------------------------------------------------
if ! running "$RUN/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd
fi
wait_for 60 "slurmdbd" sacctmgr -n list cluster

sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="cambench tests" organization=cambench >/dev/null
sacctmgr -n -P list assoc user=root account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx root ||
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null

if ! running "$RUN/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld
fi
wait_for 60 "slurmctld" scontrol ping
if ! running "$RUN/slurmd.pid"; then
    log "starting slurmd"
    slurmd
fi

node_ready() {
    local state
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null)
    case "$state" in
    idle | mixed | allocated) return 0 ;;
    *drain* | *down* | *fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}
wait_for 60 "node $NODE to become idle" node_ready
wait_for 30 "sacct" sacct -n -X --starttime=now-1hour
log "ready: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, node $NODE"
sinfo
