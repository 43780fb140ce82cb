#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for tests/test_slurm.py (Debian / Ubuntu, as root).
#
#   tests/slurm/cluster.sh install       # apt-get install slurm-wlm munge (when missing)
#   tests/slurm/cluster.sh start STATE   # write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh stop          # cancel every job, stop the daemons this script started,
#                                        # remove the slurm.conf it wrote
#
# slurm.conf has to live at /etc/slurm/slurm.conf: the jobs' own `srun` calls read it from there.
# Daemon logs, pid files and spool folders go to STATE. Exit codes: 0 fine, 1 failure, 2 not root / no apt,
# 3 a slurm.conf that this script did not write is in the way, 75 packages could not be downloaded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf=/etc/slurm/slurm.conf
marker="# dirbench-test-cluster"

die() {
    echo "cluster.sh: $2" >&2
    exit "$1"
}

installed() {
    command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged
} >/dev/null 2>&1

install() {
    if installed; then
        echo "slurm-wlm and munge are already installed"
        return
    fi
    [ "$(id -u)" = 0 ] || die 2 "installing slurm-wlm needs root"
    command -v apt-get >/dev/null || die 2 "installing slurm-wlm needs apt-get"
    local log start
    log="$(mktemp)"
    start=$(date +%s%N)
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update may exit 0 with only warnings when offline; the install then finds no package.
    if ! apt-get update >"$log" 2>&1 \
        || ! apt-get install -y --no-install-recommends slurm-wlm munge >>"$log" 2>&1; then
        tail -n 5 "$log" >&2
        if grep -qE "Failed to fetch|Unable to fetch|Could not resolve|Temporary failure|Unable to locate" "$log"; then
            die 75 "could not download slurm-wlm / munge (no network or no package lists)"
        fi
        die 1 "apt-get install slurm-wlm munge failed"
    fi
    echo "installed slurm-wlm and munge in $((($(date +%s%N) - start) / 1000000)) ms"
}

# The pids recorded at start, one "name pid" per line.
pids_file() { echo "$1/started.pids"; }

record() { # name pidfile state: note the pid a daemon wrote once it is up
    local i
    for ((i = 0; i < 100; i++)); do
        [ -s "$2" ] && break
        sleep 0.1
    done
    [ -s "$2" ] || die 1 "$1 wrote no pid file $2"
    echo "$1 $(cat "$2")" >>"$(pids_file "$3")"
}

wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

stop() {
    [ -f "$conf" ] || return 0
    grep -q "^$marker" "$conf" || die 3 "$conf was not written by this script; leaving it alone"
    local state i
    state="$(sed -n 's/^StateSaveLocation=\(.*\)\/slurmctld$/\1/p' "$conf")"
    if scontrol ping >/dev/null 2>&1; then
        # Jobs first (SIGTERM, then SIGKILL after KillWait), or their slurmstepd outlive slurmd.
        squeue -h -o %i | xargs -r scancel || true
        for ((i = 0; i < 400; i++)); do
            [ -z "$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    local name pid
    if [ -f "$(pids_file "$state")" ]; then
        while read -r name pid; do
            # `scontrol shutdown` stopped slurmctld and slurmd; munged needs its own signal.
            [ "$name" = munged ] && { kill -TERM "$pid" 2>/dev/null || true; }
            wait_gone "$pid" 15 && continue
            echo "cluster.sh: $name ($pid) still running; sending SIGTERM" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
        done < <(tac "$(pids_file "$state")")
        rm -f "$(pids_file "$state")"
    fi
    rm -f "$conf"
}

start() {
    local state
    [ $# -eq 1 ] || die 1 "usage: cluster.sh start STATE_DIR"
    [ "$(id -u)" = 0 ] || die 2 "starting the test cluster needs root"
    installed || die 1 "slurm-wlm / munge are not installed (cluster.sh install)"
    if [ -f "$conf" ]; then
        grep -q "^$marker" "$conf" || die 3 "$conf exists and was not written by this script; not touching it"
        stop # a cluster left over from an earlier, interrupted run
    fi
    mkdir -p "$1"
    state="$(cd "$1" && pwd)"
    mkdir -p "$state/slurmctld" "$state/slurmd"
    : >"$(pids_file "$state")"

    # The node as slurmd sees it: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105".
    local hw cpus memory
    hw="$(slurmd -C | head -n 1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [ -n "$cpus" ] && [ -n "$memory" ] || die 1 "cannot read CPUs / RealMemory from 'slurmd -C': $hw"
    mkdir -p /etc/slurm
    sed -e "s|@STATE@|$state|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY@|$memory|g" \
        "$here/slurm.conf.in" >"$conf.tmp"
    mv "$conf.tmp" "$conf"

    # munge: the key (Debian's postinst usually made one) and the daemon, unless one already runs.
    if ! munge -n </dev/null >/dev/null 2>&1; then
        if [ ! -s /etc/munge/munge.key ]; then
            mkdir -p /etc/munge
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
            chown munge:munge /etc/munge/munge.key
            chmod 400 /etc/munge/munge.key
        fi
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged
        record munged /run/munge/munged.pid "$state"
    fi
    munge -n </dev/null | unmunge >/dev/null || die 1 "munge does not work"

    # -c: start from an empty job state; -N: this host is "localhost" in slurm.conf.
    slurmctld -c || die 1 "slurmctld did not start: $(tail -n 5 "$state/slurmctld.log")"
    record slurmctld "$state/slurmctld.pid" "$state"
    slurmd -N localhost || die 1 "slurmd did not start: $(tail -n 5 "$state/slurmd.log")"
    record slurmd "$state/slurmd.pid" "$state"

    local i node=""
    for ((i = 0; i < 600; i++)); do
        node="$(sinfo -h -n localhost -o %T 2>/dev/null || true)"
        [ "$node" = idle ] && break
        sleep 0.1
    done
    if [ "$node" != idle ]; then
        sinfo -N -l >&2 || true
        tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
        die 1 "node localhost is '${node:-unknown}', not idle, after 60 s"
    fi
    echo "SLURM is up: node localhost ($cpus CPUs, $memory MB), partition debug, state in $state"
}

case "${1:-}" in
install) install ;;
start) shift && start "$@" ;;
stop) stop ;;
*) die 1 "usage: cluster.sh install | start STATE_DIR | stop" ;;
esac
