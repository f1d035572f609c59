#!/usr/bin/env bash
# `make fresh-check`: proves that a new user's path works on a machine that has nothing but Debian
# 12 and a Rust toolchain, so that a missing install step shows up here before a user finds it.
#
# Phase "demo", in a clean Debian 12 root (debootstrap, minbase) with only the host's Rust toolchain
# bind-mounted read-only: the README's first commands as a new user runs them (scripts/setup.sh,
# the release build, `rampart demo`), then `rampart list` and a SQL query on the leader, then
# Ctrl-C (SIGINT) and a check that the demo exited and left no process behind.
# Phase "deb", in a second clean root: `apt-get install ./rampart_*.deb` (its dependencies must come
# from Debian's archive), then the binary, the man pages, the completions and the systemd units
# (checked with `systemd-analyze verify`) are where they belong.
#
# Of the host, a root gets only resolv.conf, the host's CA bundle as an extra local CA (this
# machine's network may intercept TLS; the root's own ca-certificates must still be installed by
# setup.sh for cargo to trust anything), PIP_CERT when the host sets it, and the toolchain.
#
# Each root is made from a pristine tarball of a debootstrap run, cached under $CACHE (made on the
# first run, ~1 min); everything mounted in a root is unmounted, every process started in it is
# stopped by its PID and the root is removed on exit, whatever happened. Needs root.
#
# Usage: scripts/fresh-check.sh [demo|deb|all]   (default all; "deb" and "all" need a .deb in
# target/debian/, built by `make deb`; `make fresh-check` builds it first.)
# Environment: FRESH_CHECK_MIRROR (default: the Debian mirror of this host's apt sources),
# FRESH_CHECK_CACHE (default /var/cache/rampart-fresh-check), FRESH_CHECK_KEEP=1 keeps the roots
# (still unmounted) for inspection, FRESH_CHECK_DEB (the .deb to install).
set -euo pipefail

PHASES=${1:-all}
case $PHASES in demo | deb | all) ;; *)
    echo "usage: $0 [demo|deb|all]" >&2
    exit 2
    ;;
esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
CACHE=${FRESH_CHECK_CACHE:-/var/cache/rampart-fresh-check}
TARBALL=$CACHE/$SUITE-minbase.tar.gz
RUSTUP_HOME_HOST=${RUSTUP_HOME:-/root/.rustup}
CARGO_BIN_HOST=$(dirname "$(command -v cargo 2>/dev/null || echo /root/.cargo/bin/cargo)")

say() { echo "fresh-check: $*"; }
die() {
    echo "fresh-check: ERROR: $*" >&2
    exit 1
}

((EUID == 0)) || die "needs root (debootstrap, chroot and mounts)"
[[ -x $RUSTUP_HOME_HOST/toolchains/$(ls "$RUSTUP_HOME_HOST/toolchains" 2>/dev/null | head -n 1)/bin/cargo ]] ||
    die "no Rust toolchain under $RUSTUP_HOME_HOST (set RUSTUP_HOME)"
[[ -x $CARGO_BIN_HOST/cargo ]] || die "cargo not found on PATH"

# --- results: one line per step, printed as the summary ---------------------------------------
SUMMARY=()
FAILED=0
now() { date +%s.%N; }
# record STATUS NAME START: appends "STATUS  NAME  (12.3 s)" to the summary.
record() {
    local secs
    secs=$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    SUMMARY+=("$(printf '%-4s  %-58s %7s s' "$1" "$2" "$secs")")
    [[ $1 == PASS ]] || FAILED=1
}
print_summary() {
    echo
    echo "==================== fresh-check summary ===================="
    local l
    for l in "${SUMMARY[@]}"; do echo "  $l"; done
    if ((FAILED == 0)) && ((${#SUMMARY[@]} > 0)); then
        echo "fresh-check: PASS"
    else
        echo "fresh-check: FAIL"
    fi
}

# --- the mirror: the same Debian mirror as this host's apt sources ----------------------------
debian_mirror() {
    if [[ -n ${FRESH_CHECK_MIRROR:-} ]]; then
        echo "$FRESH_CHECK_MIRROR"
        return
    fi
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # one-line format: "deb [opts] URI SUITE ..."; deb822: "URIs: URI"
        uri=$(awk '
            /^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }
            /^URIs:/ { print $2; exit }' "$f" | grep -E '/debian/?$' | head -n 1 || true)
        if [[ -n $uri ]]; then
            echo "${uri%/}"
            return
        fi
    done
    die "no Debian mirror found in /etc/apt/sources.list*; set FRESH_CHECK_MIRROR"
}
MIRROR=$(debian_mirror)
HOST_CA=
[[ -s /etc/ssl/certs/ca-certificates.crt ]] && HOST_CA=/etc/ssl/certs/ca-certificates.crt

# --- roots: made from the cached pristine tarball, torn down on exit --------------------------
ROOTS=()

# Processes whose root directory is $1 (i.e. running inside that chroot), one PID per line.
procs_in_root() {
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [[ $r == "$1" ]] && echo "${p#/proc/}"
    done
    return 0
}

teardown_root() {
    local r=$1 pids m
    # Anything still running in the root was started by this script (through chroot): stop it by PID.
    pids=$(procs_in_root "$r")
    if [[ -n $pids ]]; then
        say "stopping processes left in $r: $(echo $pids)"
        kill -TERM $pids 2>/dev/null || true
        sleep 2
        pids=$(procs_in_root "$r")
        [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    # Unmount deepest first; lazily if something still holds a mount.
    for m in $(awk -v r="$r" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    if awk -v r="$r" '$5 == r || index($5, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        say "WARNING: mounts remain under $r; not removing it"
        return
    fi
    if [[ -n ${FRESH_CHECK_KEEP:-} ]]; then
        say "kept $r (FRESH_CHECK_KEEP)"
    else
        rm -rf --one-file-system -- "$r"
    fi
}

cleanup() {
    local rc=$? r
    for r in "${ROOTS[@]}"; do teardown_root "$r"; done
    print_summary
    ((rc != 0 || FAILED != 0)) && exit 1
    exit 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ensure_tarball() {
    [[ -s $TARBALL ]] && return
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
            die "apt-get install debootstrap failed"
    }
    mkdir -p "$CACHE"
    local tmp
    tmp=$(mktemp -d /var/tmp/rampart-debootstrap.XXXXXX)
    ROOTS+=("$tmp")
    say "debootstrap --variant=minbase $SUITE from $MIRROR (cached afterwards in $TARBALL)"
    if ! debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    # mktemp made the directory 0700, and tar records "." with that mode: a root that only root
    # may enter, where the postgres user cannot even run /bin/sh.
    chmod 755 "$tmp"
    tar -C "$tmp" --numeric-owner -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
}

# mount_private ARGS... DEST: mount, then make the mount private so nothing mounted below it
# propagates back to the host (a bind of a shared mount would otherwise join its peer group).
mount_private() {
    mount "$@" || die "mount $* failed"
    mount --make-private "${@: -1}" || die "mount --make-private ${*: -1} failed"
}

# new_root NAME: sets NEW_ROOT to a fresh copy of the pristine root with proc, sys, dev, dev/pts, a tmpfs on
# /dev/shm, resolv.conf, apt sources for $MIRROR and the host's Rust toolchain (read-only).
new_root() {
    local r
    r=$(mktemp -d "/var/tmp/rampart-fresh-$1.XXXXXX")
    ROOTS+=("$r")
    NEW_ROOT=$r
    tar -C "$r" --numeric-owner -xzf "$TARBALL" || die "unpacking $TARBALL failed"
    # A tarball cached by an older run may carry "." as 0700 (see ensure_tarball): a root must be
    # open to every user, as / is.
    chmod 755 "$r"
    mount_private -t proc proc "$r/proc"
    mount_private -t sysfs -o ro sysfs "$r/sys"
    mount_private --bind /dev "$r/dev"
    mount_private --bind /dev/pts "$r/dev/pts"
    mount_private -t tmpfs -o mode=1777,size=1g shm "$r/dev/shm"
    mkdir -p "$r/root/.rustup" "$r/root/.cargo/bin"
    mount_private --bind "$RUSTUP_HOME_HOST" "$r/root/.rustup"
    mount -o remount,bind,ro "$r/root/.rustup"
    mount_private --bind "$CARGO_BIN_HOST" "$r/root/.cargo/bin"
    mount -o remount,bind,ro "$r/root/.cargo/bin"
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
    # This host's network may intercept TLS with a CA of its own (then its trust store holds that
    # CA): offer the host's CA bundle to the root as a local CA, which update-ca-certificates adds
    # to the root's trust store only once setup.sh has installed ca-certificates.
    if [[ -n $HOST_CA ]]; then
        mkdir -p "$r/usr/local/share/ca-certificates"
        cp "$HOST_CA" "$r/usr/local/share/ca-certificates/fresh-check-host-network.crt"
    fi
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" >"$r/etc/apt/sources.list"
    # A chroot runs no init: keep package scripts from starting services (PostgreSQL's default
    # cluster) in it, as Debian's own chroot tools do. The demo starts its own PostgreSQL.
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
}

# in_root ROOT COMMAND: runs COMMAND with bash inside ROOT as root, with a new user's environment.
ROOT_ENV=(/usr/bin/env -i HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
# pip trusts its own CA list, not the system's: where this host points it at the system's store
# (TLS interception, see HOST_CA), the root's pip gets the same setting.
[[ -n ${PIP_CERT:-} ]] && ROOT_ENV+=(PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
in_root() {
    chroot "$1" "${ROOT_ENV[@]}" bash -euo pipefail -c "$2"
}

# Whether PID runs (a child that exited stays a zombie until waited for: that counts as gone).
alive() {
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}

# step NAME ROOT COMMAND: runs COMMAND in ROOT, logs to $LOGDIR, records PASS/FAIL with its time.
step() {
    local name=$1 t0 log
    t0=$(now)
    log=$LOGDIR/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-' | tr -s '-').log
    say "$name ..."
    if in_root "$2" "$3" >"$log" 2>&1; then
        record PASS "$name" "$t0"
    else
        record FAIL "$name" "$t0"
        say "FAILED: $name; last lines of $log:"
        tail -n 40 "$log" | sed 's/^/    /'
        return 1
    fi
}

LOGDIR=$(mktemp -d /tmp/rampart-fresh-check-logs.XXXXXX)
say "logs in $LOGDIR; mirror $MIRROR"

t0=$(now)
ensure_tarball
record PASS "pristine Debian 12 root (debootstrap tarball $(basename "$TARBALL"))" "$t0"

# --- phase 1: setup, build and the demo's smoke path -----------------------------------------
phase_demo() {
    local r t0 pid log out healthy=
    t0=$(now)
    new_root demo
    r=$NEW_ROOT
    # The committed HEAD, as a user gets it from a clone.
    mkdir -p "$r/root/rampart"
    git -C "$REPO" archive --format=tar HEAD | tar -C "$r/root/rampart" -xf - || die "copying the repository failed"
    record PASS "demo root: unpacked, mounted, repo HEAD $(git -C "$REPO" rev-parse --short HEAD) copied" "$t0"

    step "bash scripts/setup.sh" "$r" 'cd /root/rampart && bash scripts/setup.sh' || return 1
    step "setup.sh again (only checks)" "$r" \
        'cd /root/rampart && out=$(bash scripts/setup.sh) && echo "$out" && grep -q "everything is already installed" <<<"$out"' ||
        return 1
    step "cargo build --release (make release)" "$r" 'cd /root/rampart && make release' || return 1

    # `rampart demo` in the background, with job control on so that it does not ignore SIGINT (a
    # plain `&` job would); chroot, env and bash exec each other, so $! ends up being the demo.
    t0=$(now)
    log=$LOGDIR/demo.log
    say "rampart demo ..."
    set -m
    chroot "$r" "${ROOT_ENV[@]}" bash -c 'cd /root/rampart && exec target/release/rampart demo' >"$log" 2>&1 &
    pid=$!
    set +m
    for _ in $(seq 1 600); do
        if grep -q '^cluster healthy after' "$log"; then
            healthy=1
            break
        fi
        alive "$pid" || break
        sleep 0.5
    done
    if [[ -z $healthy ]]; then
        record FAIL "rampart demo: cluster healthy" "$t0"
        say "the demo did not report a healthy cluster; its output:"
        sed 's/^/    /' "$log" | tail -n 40
        return 1
    fi
    record PASS "rampart demo: $(grep -m1 '^cluster healthy after' "$log")" "$t0"

    # What the demo printed: how to list the cluster and reach the leader.
    local list_cmd leader_host leader_port password
    list_cmd=$(sed -n 's/^Try: \(.* list -c .*\)$/\1/p' "$log" | head -n 1)
    read -r leader_host leader_port < <(sed -n 's/.*current leader: *psql -h \([^ ]*\) -p \([0-9]*\).*/\1 \2/p' "$log" | head -n 1)
    password=$(sed -n 's/.*the password of user postgres is \([^)]*\)).*/\1/p' "$log" | head -n 1)

    step "rampart list: a Leader and 2 streaming replicas" "$r" "
        out=\$($list_cmd)
        echo \"\$out\"
        [[ \$(grep -c 'Leader' <<<\"\$out\") -eq 1 ]]
        [[ \$(grep -c 'streaming' <<<\"\$out\") -eq 2 ]]" || true

    step "psql to the leader $leader_host:$leader_port: a write on the primary" "$r" "
        export PGPASSWORD='$password' PGCONNECT_TIMEOUT=10
        q() { psql -X -v ON_ERROR_STOP=1 -h '$leader_host' -p '$leader_port' -U postgres -d postgres -Atc \"\$1\"; }
        q 'CREATE TABLE fresh_check(v text)'
        q \"INSERT INTO fresh_check VALUES ('written on a fresh root')\"
        out=\$(q 'SELECT pg_is_in_recovery(), v FROM fresh_check')
        echo \"\$out\"
        [[ \$out == 'f|written on a fresh root' ]]" || true

    # Ctrl-C: the demo stops its agents (and their PostgreSQL), then etcd, and exits.
    t0=$(now)
    kill -INT "$pid"
    local rc=running
    for _ in $(seq 1 240); do
        if ! alive "$pid"; then
            rc=0
            wait "$pid" || rc=$?
            break
        fi
        sleep 0.5
    done
    if [[ $rc == 0 ]]; then
        record PASS "SIGINT: the demo exited (status 0)" "$t0"
    else
        record FAIL "SIGINT: the demo exited (status: $rc)" "$t0"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
    t0=$(now)
    local left
    left=$(procs_in_root "$r")
    if [[ -z $left ]]; then
        record PASS "no process left in the root (postgres, etcd, agents)" "$t0"
    else
        record FAIL "processes left in the root: $(echo $left)" "$t0"
        ps -o pid,user,args -p "$(echo $left | tr ' ' ,)" | sed 's/^/    /'
    fi
    say "demo output (first lines):"
    head -n 12 "$log" | sed 's/^/    /'
}

# --- phase 2: the Debian package on a clean root ---------------------------------------------
phase_deb() {
    local deb r t0
    deb=${FRESH_CHECK_DEB:-$(ls -t "$REPO"/target/debian/rampart_*.deb 2>/dev/null | head -n 1 || true)}
    [[ -n $deb && -f $deb ]] || {
        t0=$(now)
        record FAIL "a .deb in target/debian (run make deb)" "$t0"
        return 1
    }
    t0=$(now)
    new_root deb
    r=$NEW_ROOT
    cp "$deb" "$r/root/"
    record PASS "deb root: unpacked, mounted, $(basename "$deb") copied" "$t0"
    local name
    name=$(basename "$deb")
    step "apt-get install ./$name (dependencies from Debian)" "$r" "
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        cd /root && apt-get install -y -q ./$name
        dpkg-query -W rampart" || return 1
    step "rampart --version" "$r" "
        out=\$(rampart --version); echo \"\$out\"
        [[ \$out == 'rampart $(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')' ]]" || true
    step "apt-get install man-db systemd bash-completion zsh fish (for the checks)" "$r" "
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends man-db systemd bash-completion zsh fish" || return 1
    step "man rampart, man rampart-agent render" "$r" "
        for p in rampart rampart-agent rampart-proxy rampart-list; do
            out=\$(MANWIDTH=80 man -P cat \$p 2>&1); echo \"\$out\" | head -n 8
            grep -q '^NAME' <<<\"\$out\"
            grep -Eq \"^ +\$p +- \" <<<\"\$out\"  # NAME line (man justifies: spaces vary)
        done" || true
    # Each shell finds the script where it looks for completions by itself, and completes a verb.
    step "completions: bash, zsh and fish find them and complete 'rampart li'" "$r" "
        ls -l /usr/share/bash-completion/completions/rampart /usr/share/zsh/vendor-completions/_rampart \\
            /usr/share/fish/vendor_completions.d/rampart.fish
        out=\$(bash -c 'source /usr/share/bash-completion/bash_completion; __load_completion rampart;
            COMP_WORDS=(rampart li); COMP_CWORD=1; COMP_LINE=\"rampart li\"; COMP_POINT=10;
            \$(complete -p rampart | sed -n \"s/.*-F \\([^ ]*\\) .*/\\1/p\") rampart li rampart; echo \${COMPREPLY[*]}')
        echo \"bash: \$out\"; [[ \$out == *list* ]]
        out=\$(zsh -fc 'autoload -U compinit && compinit -u -d /tmp/zcompdump && echo \$_comps[rampart]')
        echo \"zsh: rampart is completed by \$out\"; [[ \$out == _rampart ]]
        out=\$(HOME=/tmp fish -c 'complete -C \"rampart li\"')
        echo \"fish: \$out\"; grep -q '^list' <<<\"\$out\"" || true
    step "examples, /etc/rampart (root, 0755), rampart user" "$r" "
        ls -l /usr/share/doc/rampart/examples
        test -s /usr/share/doc/rampart/examples/member.yml
        test -s /usr/share/doc/rampart/examples/proxy.yml
        rampart check-config /usr/share/doc/rampart/examples/member.yml
        [[ \$(stat -c '%U %a' /etc/rampart) == 'root 755' ]]
        getent passwd rampart" || true
    step "units in /lib/systemd/system; systemd-analyze verify" "$r" "
        ls -l /lib/systemd/system/rampart@.service /lib/systemd/system/rampart-proxy@.service
        out=\$(systemd-analyze verify rampart@node1.service rampart-proxy@app.service 2>&1) || { echo \"\$out\"; exit 1; }
        echo \"\$out\"
        ! grep -i rampart <<<\"\$out\"" || true
    step "apt-get purge rampart" "$r" "
        export DEBIAN_FRONTEND=noninteractive
        apt-get purge -y -q rampart
        ! test -e /usr/bin/rampart
        ! test -e /lib/systemd/system/rampart@.service
        ! test -e /etc/rampart" || true
}

case $PHASES in
demo) phase_demo || true ;;
deb) phase_deb || true ;;
all)
    phase_demo || true
    phase_deb || true
    ;;
esac
