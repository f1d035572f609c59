#!/usr/bin/env bash
# Stops what end-to-end tests left behind when they were killed before their clean-up ran
# (a test timeout, Ctrl-C), and removes their directories.
#
# Only directories /tmp/rampart-test-* whose owning test process is gone are touched. In them,
# only PIDs the harness recorded itself are signalled:
#   *.harness-pid    "<pid> <start time>" of an agent or etcd: SIGKILL, if that very process
#                    (same PID and same start time) still runs;
#   postmaster.pid   PostgreSQL's own record: SIGQUIT then SIGKILL, if the PID is a `postgres`
#                    whose working directory is that data directory.
# Nothing is ever looked up or killed by name. Directories holding a .harness-keep file (kept by
# RAMPART_KEEP_TEST_DIRS) are not removed, nor is anything when RAMPART_KEEP_TEST_DIRS=1 is set.
set -uo pipefail
shopt -s nullglob

# Start time (field 22 of /proc/<pid>/stat) of a running, non-zombie process; fails otherwise.
start_time() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    [[ $1 != Z && $1 != X ]] || return 1
    echo "${20}"
}

is_pid() { [[ $1 =~ ^[0-9]+$ ]] && (( $1 > 1 )); }

keep=${RAMPART_KEEP_TEST_DIRS:-}
[[ $keep == 0 || ${keep,,} == false ]] && keep=
reaped=0

for dir in /tmp/rampart-test-*/; do
    dir=${dir%/}
    owner_file=$dir/.harness-owner
    if [[ -f $owner_file ]]; then
        read -r owner owner_start _ <"$owner_file" || true
        if is_pid "${owner:-}" && [[ $(start_time "$owner") == "${owner_start:-}" ]]; then
            continue  # its test is still running
        fi
    elif [[ -n $(find "$dir" -maxdepth 0 -mmin -1 2>/dev/null) ]]; then
        continue  # just created; the owner file is about to be written
    fi

    # Agents and etcd first, so that no agent restarts the PostgreSQL we stop next.
    while IFS= read -r -d '' pid_file; do
        read -r pid pid_start _ <"$pid_file" || true
        if is_pid "${pid:-}" && [[ ${pid_start:-0} != 0 && $(start_time "$pid") == "$pid_start" ]]; then
            kill -KILL "$pid" 2>/dev/null && echo "reaped process $pid recorded in $pid_file"
            reaped=$((reaped + 1))
        fi
    done < <(find "$dir" -maxdepth 4 -name '*.harness-pid' -print0 2>/dev/null)

    while IFS= read -r -d '' pm_file; do
        data_dir=$(dirname "$pm_file")
        pid=$(head -n 1 "$pm_file" 2>/dev/null)
        is_pid "${pid:-}" || continue
        start_time "$pid" >/dev/null || continue
        [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */postgres ]] || continue
        [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$(readlink -f "$data_dir")" ]] || continue
        # A chaos fault may have left it frozen (SIGSTOP): SIGQUIT only acts once it runs again.
        kill -CONT "$pid" 2>/dev/null
        kill -QUIT "$pid" 2>/dev/null
        for _ in $(seq 50); do start_time "$pid" >/dev/null || break; sleep 0.1; done
        start_time "$pid" >/dev/null && kill -KILL "$pid" 2>/dev/null
        echo "reaped postmaster $pid of $data_dir"
        reaped=$((reaped + 1))
    done < <(find "$dir" -maxdepth 4 -name postmaster.pid -print0 2>/dev/null)

    # The network namespaces, bridges and tmpfs disks of tests with several hosts, as they
    # recorded them (tests/support/netns.rs, tests/chaos/cluster.rs): only those names, nothing looked up.
    removing=
    [[ -z $keep && ! -e $dir/.harness-keep ]] && removing=1
    if [[ -f $dir/.harness-netns ]]; then
        while read -r what name; do
            case $what in
                netns) ip netns del "$name" 2>/dev/null && echo "removed network namespace $name" ;;
                link) ip link del "$name" 2>/dev/null && echo "removed link $name" ;;
                mount) [[ -n $removing ]] && umount -l "$name" 2>/dev/null && echo "unmounted $name" ;;
            esac
        done <"$dir/.harness-netns"
    fi

    if [[ -n $removing ]]; then
        rm -rf -- "$dir" && echo "removed leftover test directory $dir"
    fi
done

(( reaped == 0 )) || echo "reap-test-procs: stopped $reaped leftover process(es)"
exit 0
