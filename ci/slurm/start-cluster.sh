#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages: munge, slurmctld, slurmd.
# Idempotent: installs what is missing (apt, as root), writes /etc/slurm/slurm.conf for this
# host, starts the daemons that are not running and waits until the node takes jobs.
#
# Two partitions on the one node, named as in profiles/slurm/config.yaml: `cpu`, and `gpu`
# with one stand-in GPU (a gres backed by /dev/null: SLURM schedules it and sets
# CUDA_VISIBLE_DEVICES, torch finds no CUDA device and runs on the CPU), so the profile's
# partitions and `gres: gpu:1` are submitted as written. No accounting database
# (slurmdbd + MariaDB): snakemake-executor-plugin-slurm queries job states with `squeue`
# when told to (slurm-status-command: squeue) and MinJobAge keeps finished jobs visible to it.
#
# Stop it with ci/slurm/stop-cluster.sh.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "start-cluster.sh: needs root (it installs packages and starts daemons)" >&2
    exit 1
fi

packages=(munge slurmctld slurmd slurm-client)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

host=$(hostname -s)
cpus=$(nproc)
# Leave 1 GiB of the machine's memory to everything that is not a job.
memory_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf.new <<CONF
# Written by repotune's ci/slurm/start-cluster.sh: a one-node test cluster.
ClusterName=repotune
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in a container: track job processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores and memory are consumable: a job's --mem is checked against the node's RealMemory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay in squeue for 5 minutes: the executor plugin needs >= 3 status intervals.
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=${host} CPUs=${cpus} RealMemory=${memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} MaxTime=INFINITE State=UP
CONF
echo "NodeName=${host} Name=gpu File=/dev/null" > /etc/slurm/gres.conf
# A changed configuration (another host name, more memory) needs the daemons restarted.
if ! cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf; then
    mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
    "$(dirname "$0")/stop-cluster.sh"
    sleep 2
else
    rm /etc/slurm/slurm.conf.new
fi

if ! pgrep -x munged >/dev/null; then
    rm -f /run/munge/munged.pid
    chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o '%t' 2>/dev/null || true)
    case "$state" in
        idle* | mix* | alloc*) echo "SLURM up: node $host ($cpus CPUs, $memory_mb MB, 1 stand-in GPU), partitions cpu and gpu"; exit 0 ;;
        down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "start-cluster.sh: node $host did not become idle; see /var/log/slurm/" >&2
exit 1
