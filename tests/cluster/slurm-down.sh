#!/usr/bin/env bash
# Stop the test cluster that slurm-up.sh started, daemon by daemon, through the
# PID files the daemons wrote (no systemctl). Packages, configuration, the
# accounting database and the job history stay; the next slurm-up.sh reuses them.
#
#   slurm-down.sh              stop slurmd, slurmctld, slurmdbd, MariaDB and munged
#   slurm-down.sh --slurm-only stop the SLURM daemons only (MariaDB and munge stay up)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-down.sh: must run as root" >&2
    exit 1
fi

stop() { # stop NAME PIDFILE
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm-down: stopping $name (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $name did not stop in 30 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
if [ "${1:-}" != "--slurm-only" ]; then
    stop mariadbd /run/mysqld/mysqld.pid
    stop munged /run/munge/munged.pid
fi
