#!/bin/sh
# sh slurm/local_cluster.sh start|stop|status — a one-node Slurm (munge + slurmctld + slurmd) on this
# machine, as root: what CI and the end-to-end tests run against. Not for a real cluster.
#
# Debian's slurm-wlm and munge must be installed (.ci/run installs them). The settings that matter:
# proctrack/linuxproc and task/none (no cgroups in a container), SlurmUser=root, no accounting
# (sacct fails; submitit and our status command do not need it), AuthInfo=cred_expire=10 so a
# requeued job may start again after 10 s instead of the default 120 s, and sched_interval=1 so it does
# start then: no event schedules it (no job is submitted or ends meanwhile; the backfill pass runs only
# after one), and with the default full pass every 60 s requeued jobs waited 18-38 s, not 11 s. A pass
# over a one-node queue costs nothing.
set -eu

action=${1:-start}
conf_dir=/etc/slurm
state_dir=/var/spool/slurm-lab
log_dir=/var/log/slurm-lab

running() {
    # scontrol ping answers at once; sinfo against a configured controller that is down waits ~9 s to give up
    scontrol ping >/dev/null 2>&1 && timeout 10 sinfo -h -o %T 2>/dev/null | grep -q -E "idle|mix|alloc"
}

write_config() {
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$conf_dir" "$state_dir/ctld" "$state_dir/d" "$log_dir"
    cat >"$conf_dir/slurm.conf.tmp" <<EOF
ClusterName=lab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MaxArraySize=1001
KillWait=10
MinJobAge=600
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/d
SlurmctldPidFile=/run/slurmctld-lab.pid
SlurmdPidFile=/run/slurmd-lab.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf_dir/slurm.conf.tmp" "$conf_dir/slurm.conf"
}

start() {
    if running; then
        echo "slurm: already running"
        return 0
    fi
    [ "$(id -u)" = 0 ] || { echo "slurm: must run as root" >&2; exit 1; }
    command -v slurmctld >/dev/null && command -v munged >/dev/null || {
        echo "slurm: slurm-wlm and munge are not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
    write_config
    [ -s /etc/munge/munge.key ] || mungekey -c -f
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 60); do
        if running; then
            echo "slurm: one node up ($(sinfo -h -o '%N %c CPUs %T'))"
            return 0
        fi
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "slurm: did not come up; see $log_dir" >&2
    tail -n 20 "$log_dir"/*.log >&2 || true
    exit 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
}

case $action in
    start) start ;;
    stop) stop ;;
    status) if running; then sinfo; else echo "slurm: not running"; exit 1; fi ;;
    *) echo "usage: sh slurm/local_cluster.sh start|stop|status" >&2; exit 2 ;;
esac
