//! The fault-injection suite, in the spirit of Jepsen: a three-node cluster in synchronous mode,
//! each node on a host of its own (network namespaces) with a member of a three-member etcd
//! beside its PostgreSQL (seed 003), the proxy on another, clients writing through `rampart
//! proxy` and a probe writing to every node directly, while seeded faults hit it: processes
//! killed and frozen, links cut both ways and one way, etcd members killed (the raft leader, the
//! one beside the leader), cut off, slowed, etcd's quorum lost, all of etcd down, a disk full,
//! back-to-back failovers, a switchover during a fault. After each fault the cluster must
//! converge; over the whole run no acknowledged write may be lost and no two primaries may
//! accept writes (see `checks.rs` for what exactly is checked).
//!
//! * `short_profile` runs in `make test`: each important fault family once (9 faults).
//! * `long_profile` (ignored; `make chaos`) runs `RAMPART_CHAOS_FAULTS` (default 200) faults of
//!   every kind in `RAMPART_CHAOS_MODE` (`quorum` default, `on`, `off`).
//!
//! `RAMPART_CHAOS_TTL=5` runs either at ttl 5 (loop_wait 1, retry_timeout 2) instead of 10.
//!
//! `RAMPART_CHAOS_SEED` repeats a run's schedule; a run prints its seed and schedule first.

#[path = "../support/mod.rs"]
mod support;

mod checks;
mod cluster;
mod run;
mod schedule;
mod workload;

use cluster::{Mode, Timing};
use run::Options;
use schedule::Kind;

fn seed() -> u64 {
    std::env::var("RAMPART_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| support::random_u64() % 1_000_000)
}

fn assert_clean(report: &run::Report) {
    assert!(
        report.violations.is_empty(),
        "{} violation(s); repeat with RAMPART_CHAOS_SEED={}\n{}",
        report.violations.len(),
        report.seed,
        report.schedule
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_profile() {
    let report = run::run(Options {
        mode: Mode::Quorum,
        timing: Timing::from_env(),
        seed: seed(),
        kinds: Kind::SHORT.to_vec(),
        faults: Kind::SHORT.len(),
    })
    .await;
    assert_eq!(report.results.len(), report.schedule.faults.len(), "every scheduled fault ran");
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by `make chaos`"]
async fn long_profile() {
    let mode = std::env::var("RAMPART_CHAOS_MODE")
        .ok()
        .map(|m| Mode::parse(&m).unwrap_or_else(|| panic!("RAMPART_CHAOS_MODE={m}: expected quorum, on or off")))
        .unwrap_or(Mode::Quorum);
    let faults = std::env::var("RAMPART_CHAOS_FAULTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let timing = Timing::from_env();
    let report = run::run(Options { mode, timing, seed: seed(), kinds: Kind::ALL.to_vec(), faults }).await;
    assert_clean(&report);
}
