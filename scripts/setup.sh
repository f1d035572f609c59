#!/usr/bin/env bash
# Installs what building, testing and demonstrating Rampart needs on Debian 12, and nothing when
# it is all there already (then it only checks, in about a second). Safe to run any number of times.
#
#   * Debian packages: PostgreSQL 15, etcd, protoc with its well-known types, HAProxy, PgBouncer, Pgpool-II, pgBackRest, Chromium (headless, for
#     the e2e test of the proxy's admin page), network and process tools, make, a C compiler, CA
#     certificates, nroff, libclang (bindgen, for pg_query; apt-get update runs only when
#     something is missing);
#   * the `postgres` OS user (the tests run the agent, hence PostgreSQL, as that user);
#   * a Python venv at /opt/rampart-venv with Patroni, whose patronictl is used to check that
#     Rampart is compatible with it (/opt/rampart-venv/bin/patronictl), and psycopg 3, asyncpg
#     and SQLAlchemy, the clients the e2e tests of the pooling and splitting proxy run through it,
#     and moto's S3 server, where the pgBackRest tests keep a repository.
#
# Prints one line per thing it installs. Exits non-zero, saying what failed, if anything fails.
# Environment: RAMPART_VENV (default /opt/rampart-venv), RAMPART_SKIP_VENV=1 skips the venv.
set -euo pipefail

VENV=${RAMPART_VENV:-/opt/rampart-venv}
# What pip installs into the venv: pairs of a requirement and the module that shows it is there
# (for a pinned requirement, at that version). Only the missing ones are installed.
PIP_PACKAGES=(
    'patroni[etcd3]' patroni
    'psycopg2-binary' psycopg2
    'psycopg[binary]==3.3.9' psycopg
    'asyncpg==0.32.0' asyncpg
    'SQLAlchemy==2.1.9' sqlalchemy
    # moto's S3 server (with boto3): the S3-compatible object storage the pgBackRest e2e tests
    # keep a repository in, as seed 002 keeps its backups in object storage.
    'moto[server]==5.2.6' moto.server
)
PACKAGES=(
    postgresql-15
    etcd-server
    etcd-client
    protobuf-compiler
    # protoc's well-known types (google/protobuf/descriptor.proto): etcd-client's build imports
    # them, and protobuf-compiler alone (without recommends) leaves them out.
    libprotobuf-dev
    haproxy
    pgbouncer
    # Pgpool-II: bench/rw_split compares the proxy's read/write splitting with its load balancing.
    pgpool2
    # pgBackRest (2.45 on Debian 12): WAL archiving, backups and replicas restored from a backup
    # repository in the e2e tests of backups and disaster recovery.
    pgbackrest
    chromium
    iproute2
    iptables
    procps
    make
    curl
    openssl
    # cargo (crates.io) and pip (PyPI) fetch over HTTPS: a minimal Debian has no CA certificates.
    ca-certificates
    # nroff, which the unit test of the generated man pages renders them with.
    groff-base
    # ring (TLS) and the other -sys crates compile C.
    gcc
    libc6-dev
    # pg_query (the proxy's SQL classifier, PostgreSQL's own parser) generates its bindings with
    # bindgen, which loads libclang at build time.
    libclang-dev
)

say() { echo "setup: $*"; }
die() {
    echo "setup: ERROR: $*" >&2
    exit 1
}

SUDO=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        NEED_ROOT=1
    fi
fi
as_root() {
    if [[ -n ${NEED_ROOT:-} ]]; then
        die "this step needs root and sudo is not available: $*"
    fi
    "${SUDO[@]}" "$@"
}

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }
# Whether apt knows a package that can be installed (a real one, not a purely virtual name).
available() { [[ -n $(apt-cache madison "$1" 2>/dev/null) ]]; }

# The requirements of PIP_PACKAGES the venv lacks, one a line: all of them without a usable venv.
venv_missing() {
    local out i
    if [[ -x $VENV/bin/patronictl ]] && out=$("$VENV/bin/python" - "${PIP_PACKAGES[@]}" 2>/dev/null <<'EOF'
import importlib, importlib.metadata, sys
pairs = sys.argv[1:]
for req, module in zip(pairs[::2], pairs[1::2]):
    name, _, version = req.partition('==')
    try:
        importlib.import_module(module)
        if version and importlib.metadata.version(name.split('[')[0]) != version:
            raise ImportError(req)
    except Exception:
        print(req)
EOF
    ); then
        [[ -z $out ]] || printf '%s\n' "$out"
    else
        for ((i = 0; i < ${#PIP_PACKAGES[@]}; i += 2)); do printf '%s\n' "${PIP_PACKAGES[i]}"; done
    fi
}
system_python_has_venv() {
    [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 ||
    die "this script is for Debian 12 (dpkg/apt-get not found)"

# --- Debian packages -------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
want_venv=
pip_missing=()
if [[ -z ${RAMPART_SKIP_VENV:-} ]]; then
    mapfile -t pip_missing < <(venv_missing)
fi
if ((${#pip_missing[@]} > 0)); then
    want_venv=1
    if ! system_python_has_venv && ! installed python3-venv; then
        missing+=(python3-venv)
    fi
fi
# PostgreSQL's contrib modules are part of postgresql-15 on Debian 12; older and newer layouts
# have a separate postgresql-contrib-15, installed when apt knows it.
contrib_missing() { ! installed postgresql-contrib-15 && available postgresql-contrib-15; }
if contrib_missing; then
    missing+=(postgresql-contrib-15)
fi

if ((${#missing[@]} > 0)); then
    apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    export DEBIAN_FRONTEND=noninteractive
    say "missing Debian packages: ${missing[*]}; running apt-get update"
    as_root apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null ||
        die "apt-get update failed (is a Debian mirror reachable?)"
    if [[ ! " ${missing[*]} " =~ " postgresql-contrib-15 " ]] && contrib_missing; then
        missing+=(postgresql-contrib-15)
    fi
    for p in "${missing[@]}"; do
        available "$p" || die "apt has no package $p (is this Debian 12 with the main component enabled?)"
    done
    log=$(mktemp /tmp/rampart-setup-apt.XXXXXX)
    if ! as_root apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "apt-get install ${missing[*]} failed (full log: $log)"
    fi
    rm -f "$log"
    for p in "${missing[@]}"; do
        installed "$p" || die "$p is still not installed after apt-get install"
        say "installed $p ($(dpkg-query -W -f='${Version}' "$p"))"
    done
fi

for tool in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres /usr/bin/etcd /usr/bin/etcdctl \
    /usr/bin/chromium; do
    [[ -x $tool ]] || die "$tool is missing although its package is installed"
done

# --- the postgres OS user --------------------------------------------------------------------
if ! getent passwd postgres >/dev/null; then
    # The postgresql-common package normally creates it; do what it does.
    getent group postgres >/dev/null || as_root groupadd --system postgres || die "groupadd postgres failed"
    as_root useradd --system --gid postgres --home-dir /var/lib/postgresql --create-home \
        --shell /bin/bash --comment "PostgreSQL administrator" postgres || die "useradd postgres failed"
    say "created OS user postgres"
fi

# --- Patroni, psycopg 3 and asyncpg in a venv (patronictl checks, proxy client tests) ----------
if [[ -n $want_venv ]]; then
    python=/usr/bin/python3
    system_python_has_venv || die "$python cannot create virtual environments (python3-venv missing?)"
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        as_root rm -rf -- "$VENV"
        as_root "$python" -m venv "$VENV" || die "creating the venv $VENV failed"
        say "created Python venv $VENV"
    fi
    # A venv just created lacks them all.
    mapfile -t pip_missing < <(venv_missing)
    log=$(mktemp /tmp/rampart-setup-pip.XXXXXX)
    if ! as_root "$VENV/bin/pip" install --disable-pip-version-check --no-input -q "${pip_missing[@]}" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "pip install ${pip_missing[*]} into $VENV failed (full log: $log)"
    fi
    rm -f "$log"
    still=$(venv_missing)
    [[ -z $still ]] || die "still missing from $VENV after pip install: ${still//$'\n'/ }"
    for req in "${pip_missing[@]}"; do
        case $req in
        patroni*) say "installed $req into $VENV ($("$VENV/bin/patronictl" version 2>/dev/null | head -n 1))" ;;
        *) say "installed $req into $VENV" ;;
        esac
    done
fi

# --- Rust toolchain (not installed here: CI and developers bring their own) ------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"

if ((${#missing[@]} == 0)) && [[ -z $want_venv ]]; then
    say "everything is already installed"
fi
