//! The parts of a local Rampart cluster, in one place for everything that starts one on this
//! machine: `rampart demo`, the e2e harness (`tests/support`), the etcd tests of `crates/dcs` and
//! the benches (through the harness).
//!
//! What every user gets the same way, so that the conventions hold everywhere:
//! * servers listen on loopback ports picked by [`free_port`] (below the ephemeral range);
//! * etcd is started by [`etcd::Etcd`] (or its command line, [`etcd::EtcdConfig::command`]) and
//!   stopped by its PID, never by name, also when the caller panics;
//! * every process started for a test has its PID next to its log (`*.harness-pid`) and every
//!   test directory a `.harness-owner` file ([`dir::TestDir`]), which is what
//!   `scripts/reap-test-procs.sh` reads after a killed test;
//! * PostgreSQL refuses root: as root, agents run as `postgres` ([`user::run_as`]) in
//!   directories that user owns ([`dir::make_agent_dir`]);
//! * an agent's Patroni-format YAML comes from [`config::NodeConfig`];
//! * the DCS is read through `rampart_dcs` ([`dcs::Reader`]), not with hand-made etcd requests.
//!
//! Test-only crates stay out: the release binary links this crate for `rampart demo`.

pub mod config;
pub mod dcs;
pub mod dir;
pub mod etcd;
pub mod pid;
pub mod ports;
pub mod user;
pub mod wait;

pub use ports::{free_port, random_u64};
pub use wait::{wait_until, wait_until_async};

/// Whether the environment variable `name` is set to something other than empty, `0` or `false`.
pub fn env_flag(name: &str) -> bool {
    match std::env::var(name) {
        Ok(v) => !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"),
        Err(_) => false,
    }
}

/// Whether `RAMPART_KEEP_TEST_DIRS` asks to keep test directories.
pub fn keep_test_dirs() -> bool {
    env_flag("RAMPART_KEEP_TEST_DIRS")
}

/// The last `lines` lines of a file, or a note saying why there are none.
pub fn tail_file(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
