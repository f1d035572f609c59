//! End-to-end test harness shared by the scenario tests under `tests/`.
//!
//! Every integration test file is its own crate and pulls this module in with `mod support;`.
//! Not every test uses every helper, hence the crate-wide `allow` below. What a local cluster is
//! made of (ports, etcd, directories, PID files, the node configuration, the DCS reader) lives in
//! the `rampart-kit` crate, shared with `rampart demo` and the DCS tests; its modules appear here
//! under their old names (`support::etcd`, `support::config`, ...).
//!
//! What the harness guarantees:
//! * everything listens on 127.0.0.1 only, on ports chosen by [`free_port`], except in tests with
//!   several hosts ([`netns`]): there each host has its address on a private bridge;
//! * every file lives in a [`TestDir`] under `/tmp`, owned by the `postgres` OS user when the
//!   test runs as root (PostgreSQL refuses to run as root, so the agent runs as `postgres`);
//! * every process the harness starts is stopped by its PID when its handle is dropped (etcd,
//!   the agent and the postmaster recorded in `postmaster.pid`), never by name;
//! * each process' PID is also written next to its log (`*.harness-pid`), so that
//!   `scripts/reap-test-procs.sh` can stop what a killed test process left behind.
//!
//! Environment variables:
//! * `RAMPART_ETCD_MEMBERS=3` gives every [`Cluster`] a three-member etcd (default 1);
//! * `RAMPART_KEEP_TEST_DIRS=1` keeps test directories (and prints their paths);
//! * `RAMPART_AGENT_RUST_LOG` overrides the agents' `RUST_LOG` (default `info`);
//! * `RAMPART_LOG_TAIL` is the number of lines [`Cluster::dump_logs`] prints per file (default 60);
//! * `RAMPART_PG_BIN_DIR` overrides the PostgreSQL binary directory
//!   (default `/usr/lib/postgresql/15/bin`);
//! * `RAMPART_ETCD_BIN` / `RAMPART_ETCDCTL_BIN` override `/usr/bin/etcd` and `/usr/bin/etcdctl`;
//! * `RAMPART_HAPROXY_BIN` overrides `/usr/sbin/haproxy`.

#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod base_backup;
pub mod browser;
pub mod client;
pub mod cluster;
pub mod ctl;
pub mod haproxy;
pub mod health;
pub mod netns;
pub mod patroni;
pub mod pgbackrest;
pub mod process;
pub mod proxy;
pub mod python;
pub mod s3;
pub mod timing;
pub mod wal;
pub mod write_probe;

use std::path::PathBuf;

pub use rampart_kit::{config, dir, etcd, ports};

pub use agent::Agent;
pub use client::{
    connect, connect_superuser, get_json, http_request, http_status, is_in_recovery, query_one_bool, HttpResponse,
};
pub use cluster::{Cluster, ClusterOptions, Node};
pub use config::NodeConfig;
pub use dir::TestDir;
pub use etcd::Etcd;
pub use ports::{free_port, random_u64};
pub use process::{run_as, RunAs};
pub use rampart_kit::config::{pg_bin_dir, REPLICATION_PASSWORD, REPLICATION_USER, SUPERUSER, SUPERUSER_PASSWORD};
pub use rampart_kit::{env_flag, keep_test_dirs, tail_file, wait_until, wait_until_async};

/// The `rampart` binary Cargo built for this integration test, or `RAMPART_TEST_BIN` when set
/// (`make chaos` runs a copy, so a rebuild during a long run does not change the agents it starts).
pub fn rampart_bin() -> PathBuf {
    match std::env::var_os("RAMPART_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_rampart")),
    }
}

/// `patronictl` from the venv `scripts/setup.sh` creates, if it is there.
pub fn patronictl_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/opt/rampart-venv/bin/patronictl");
    p.exists().then_some(p)
}

/// Runs `patronictl -c <config> <args>` from the venv `scripts/setup.sh` creates.
pub fn patronictl(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let bin = patronictl_bin().expect("/opt/rampart-venv/bin/patronictl is missing: run scripts/setup.sh");
    std::process::Command::new(&bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// Runs the `rampart` binary Cargo built for this test with `args` (e.g. `["list", "-c", ...]`).
pub fn rampart<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(rampart_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", rampart_bin().display()))
}

/// Number of log lines to print per file when dumping logs (`RAMPART_LOG_TAIL`, default 60).
pub fn log_tail_lines() -> usize {
    std::env::var("RAMPART_LOG_TAIL").ok().and_then(|v| v.parse().ok()).unwrap_or(60)
}
