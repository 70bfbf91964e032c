#!/usr/bin/env bash
# Stop the SLURM daemons ci/slurm/start-cluster.sh started (by their pid files); munge stays.
# The packages stay too: with scontrol installed and no controller, every Snakemake start waits
# ~10 s in the SLURM plugin; `apt-get remove slurmctld slurmd slurm-client` ends that.
set -uo pipefail
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    fi
done
exit 0
