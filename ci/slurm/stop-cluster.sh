#!/usr/bin/env bash
# Stop the SLURM daemons ci/slurm/start-cluster.sh started (by their pid files); munge stays.
set -uo pipefail
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    fi
done
exit 0
