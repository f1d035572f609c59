//! The proxy throughput benchmark: `cargo bench --bench proxy`, part of `make bench`.
//!
//! It PRINTS numbers and asserts nothing. Through the e2e harness in `tests/support/` it starts a
//! three-node cluster (etcd, PostgreSQL 15, agents at ttl/loop_wait/retry_timeout 10/1/3), then
//! five relays in front of the primary ([`targets`]): `rampart proxy` in session mode (pooling
//! across sessions: it authenticates clients with the same `auth_file` as PgBouncer) and in
//! transaction mode (two processes, node 0's configuration plus a `proxy` section), Debian's
//! PgBouncer in session mode and in transaction mode (two processes), and HAProxy relaying plain
//! TCP. The transaction-mode poolers each keep a pool of 20 server connections and log clients in
//! themselves, with SCRAM against the same `auth_file` (PgBouncer's userlist format, holding the
//! harness superuser's password). The `rampart` binary is the one Cargo built for this bench
//! (bench profile = release).
//!
//! The tables are created once, `pgbench -i -s 16` on the primary, followed by a CHECKPOINT and
//! a wait until the replicas have replayed them (so that neither competes with the first runs).
//! Then, in each round, every workload runs against direct, rampart, pgbouncer, haproxy,
//! rampart-txn and pgbouncer-txn in turn (interleaved, so that a slow spell of the machine hits
//! all of them rather than one), all on the read-write path to the primary:
//! * `select-only`: `pgbench -S -c 16 -j 2`, and the same with `-M prepared` (named prepared
//!   statements, which a transaction-mode pooler must carry from server to server);
//! * `TPC-B-like`: `pgbench -c 16 -j 2` (pgbench's default script);
//! * `churn (-S -C) c8`: `pgbench -S -C -c 8 -j 2`, a new connection for every transaction;
//! * `select-only c200`: `pgbench -S -c 200 -j 2`, 200 clients on the transaction-mode poolers'
//!   20 server connections (and on 200 backends through the others); it runs 6 s longer than the
//!   others, since pgbench's `-T` counts the 200 logins (its TPS does not, the machine CPU does).
//!
//! Figures are pgbench's `tps = ...` line: without the initial connection time, or with `-C`
//! including the reconnections. A run that pgbench ends with an error (a client aborted, e.g. a
//! pooler that loses prepared statements) counts as failed, and the table says so with
//! pgbench's own error line. The table gives, per workload and target, the median TPS over the
//! rounds (min and max beside it), its ratio to the direct median, and the whole machine's busy
//! CPU time per transaction (from `/proc/stat` and pgbench's transaction count; median), which
//! shows what each hop costs in a way that a slow spell of a shared machine hardly moves, and each
//! relay's own CPU time per transaction (`relay`: the relay process and its children, from
//! `/proc/<pid>/stat`), which the kernel's background work on a small host does not move at all
//! (shown beside the verdicts, not judged). Then a
//! verdict line per rampart target and workload against issue 16's targets: rampart's machine CPU
//! per transaction at most PgBouncer's in the same pool mode; for churn and c200 a ratio to
//! direct at least PgBouncer's; and for rampart in session mode, as before, ahead of HAProxy and,
//! for the long-lived-connection workloads, at least 0.75 of direct. Each is judged round by
//! round (rampart's figure over the other's in the same round, [`runs::Paired`]): met when it holds
//! in every round, missed when it fails in every round, and "within the spread" otherwise, with
//! the median and range of the per-round ratios; the medians over the run stand beside it. Each
//! relay's own CPU time during its runs (as a share of one core) and its resident memory follow.
//!
//! Last, the idle-client footprint ([`idle`]): 10,000 clients log in through rampart-txn and stay
//! idle, the bench reads its VmRSS and VmHWM (target: at most 200 MB), closes them, and does the
//! same with pgbouncer-txn. The bench raises its own open-files limit to the hard limit first (its
//! children inherit it; PgBouncer gets it through `ulimit -n`, rampart raises its own).
//!
//! PostgreSQL is tuned so that the TPC-B-like runs are bound by CPU and the wire rather than by
//! fsync, which would hide what a proxy costs: `synchronous_commit = off`, `shared_buffers =
//! 512MB` (the scale-16 database fits), `max_wal_size = 2GB` (no checkpoint forced by WAL volume
//! during a run). `max_connections = 800`: direct and HAProxy give each of the c200 clients a
//! backend, and both session-mode poolers keep their 200 server connections idle after such a run
//! (their `server_idle_timeout`), each transaction-mode pooler its 20. Every pgbench connects as the harness' superuser with
//! `PGPASSWORD` and `sslmode=disable` (the same startup exchange on every target).
//!
//! Environment: `RAMPART_BENCH_SECS` (seconds per run, default 6), `RAMPART_BENCH_ROUNDS`
//! (default 4: more short rounds make a steadier median than few long ones) and
//! `RAMPART_BENCH_IDLE_CLIENTS` (default 10,000); `RAMPART_BENCH_QUICK=1` makes the defaults 5 s,
//! 1 round and 1,000 idle clients. With the defaults a run takes about 16 minutes (5 workloads x
//! 6 targets x 4 rounds x 6 s, c200 6 s more, plus pgbench's vacuum before each run, the set-up and
//! the 20,000 logins), quick about 4. Figures of a run are in README.md (Benchmarks). The harness variables apply (`RAMPART_KEEP_TEST_DIRS=1` keeps pgbench's output files, ...).
//! On a small machine pgbench, PostgreSQL and the proxies share the cores, so the figures are
//! noisy.
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "proxy/idle.rs"]
mod idle;
#[path = "proxy/pgbench.rs"]
mod pgbench;
#[path = "proxy/pgbouncer.rs"]
mod pgbouncer;
#[path = "proxy/report.rs"]
mod report;
#[path = "proxy/runs.rs"]
mod runs;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "proxy/targets.rs"]
mod targets;

use std::time::Instant;

use common::FAST;
use pgbench::{SCALE, WARM_UP_SECS, WORKLOADS};
use targets::{Kind, Proxies, Target};

/// rampart's target against the direct path, for workloads with [`Workload::ratio_target`].
pub const DIRECT_RATIO_TARGET: f64 = 0.75;
/// rampart-txn's target for its resident memory while it holds the idle clients, in MB.
pub const IDLE_TARGET_MB: f64 = 200.0;
/// PostgreSQL's `max_connections`: room for 200 clients on the relays that give each a backend.
const MAX_CONNECTIONS: &str = "800";
/// The highest open-files limit handed to PgBouncer (Linux's default `fs.nr_open`).
const NOFILE_CAP: u64 = 1 << 20;

struct Plan {
    quick: bool,
    secs: u64,
    rounds: usize,
    idle_clients: usize,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = common::quick();
        let number = common::env_number;
        let secs = number("RAMPART_BENCH_SECS", if quick { 5 } else { 6 });
        let rounds = number("RAMPART_BENCH_ROUNDS", if quick { 1 } else { 4 }) as usize;
        let idle_clients = number("RAMPART_BENCH_IDLE_CLIENTS", if quick { 1_000 } else { 10_000 }) as usize;
        Plan { quick, secs, rounds, idle_clients }
    }
}

/// Everything measured; see [`runs::Runs`].
pub type Results = runs::Runs;

/// Runs `workload` against `target`, adding to `res`; prints the outcome.
fn measure(c_dir: &std::path::Path, plan: &Plan, w: usize, t: usize, target: Target, round: usize, res: &mut Results) {
    let workload = &WORKLOADS[w];
    let tag = format!("r{round}-w{w}-{}", target.name);
    let slot = runs::Slot { w, t, workload: workload.name, target: target.name, pid: target.pid, round, tag: &tag };
    res.measure(&slot, || pgbench::run(target.port, workload, plan.secs, c_dir, &tag));
}

/// Raises this process' open-files limit to its hard limit, for the idle clients; its children
/// inherit it. Returns the limit now in force.
fn raise_open_files() -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| format!("setrlimit to {hard}: {e}"))?;
    }
    Ok(hard)
}

fn main() {
    if !common::bench_requested("proxy") {
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    common::print_preamble("proxy throughput", plan.quick);
    let nofile = match raise_open_files() {
        Ok(n) => n,
        Err(e) => {
            println!("[bench] raising the open-files limit: {e}; stopping");
            return;
        }
    };
    println!(
        "[bench] {} CPUs; {} round(s) of {} workloads x (direct, rampart, pgbouncer, haproxy, rampart-txn, \
         pgbouncer-txn), {} s each; then {} idle clients; pgbench {}; open files {nofile}",
        common::cpus(),
        plan.rounds,
        WORKLOADS.len(),
        plan.secs,
        plan.idle_clients,
        pgbench::bin().display()
    );
    let rt = common::runtime();
    let Some((c, healthy)) = common::healthy_cluster(&rt, FAST, &pgbench::pg_parameters(MAX_CONNECTIONS)) else {
        return;
    };
    let leader = healthy.leader;
    let primary_port = c.pg_port(leader);
    println!("[bench] cluster {} healthy; leader {} on port {primary_port}", FAST.label(), c.name(leader));
    common::print_settings(
        &rt,
        primary_port,
        &["max_connections", "shared_buffers", "synchronous_commit", "max_wal_size"],
    );
    // Declared after the cluster: stopped (by PID) before it.
    let proxies = match Proxies::start(&c, leader, nofile.min(NOFILE_CAP)) {
        Ok(p) => p,
        Err(e) => {
            println!("[bench] starting the relays: {e}; stopping");
            return;
        }
    };
    let targets = proxies.targets(primary_port);
    for t in &targets {
        if let Err(e) = targets::check_route(&rt, t.port, primary_port) {
            println!("[bench] {} on port {}: {e}; stopping", t.name, t.port);
            return;
        }
    }
    let ports: Vec<String> = targets.iter().map(|t| format!("{} :{}", t.name, t.port)).collect();
    println!("[bench] targets: {}; each reaches the primary", ports.join(", "));
    println!(
        "[bench] {}: {}",
        proxies.pgbouncer_version,
        if pgbouncer::supports_prepared(&proxies.pgbouncer_version) {
            "max_prepared_statements = 100"
        } else {
            "no prepared-statement support in transaction mode (it came with 1.21)"
        }
    );

    if !pgbench::prepare(&rt, primary_port, SCALE, c.dir()) {
        return;
    }
    for t in &targets {
        pgbench::warm_up(t.name, t.port, WARM_UP_SECS, c.dir());
    }

    let mut res = Results::new(WORKLOADS.len(), targets.len());
    'rounds: for round in 1..=plan.rounds {
        println!("\n[bench] ===== round {round}/{} =====", plan.rounds);
        for w in 0..WORKLOADS.len() {
            for (t, target) in targets.iter().enumerate() {
                let failures = res.failures;
                measure(c.dir(), &plan, w, t, *target, round, &mut res);
                // A failed run may mean the primary itself is gone; then every further run would
                // fail too, those through the proxy only after its hold timeout.
                if res.failures > failures {
                    if let Err(e) = targets::check_route(&rt, primary_port, primary_port) {
                        println!("[bench] the primary does not answer ({e}); remaining runs skipped");
                        break 'rounds;
                    }
                }
            }
        }
    }
    let costs = report::Costs::now(&res, &targets);

    println!("\n[bench] ===== idle clients =====");
    let idle: Vec<(Target, idle::Footprint)> = targets
        .iter()
        .filter(|t| matches!(t.kind, Kind::RampartTxn | Kind::PgBouncerTxn))
        .filter_map(|t| {
            let pid = t.pid?;
            println!("[bench] {} idle clients through {} ...", plan.idle_clients, t.name);
            let f = idle::hold(&rt, t.port, pid, plan.idle_clients);
            report::print_footprint(t, &f);
            Some((*t, f))
        })
        .collect();

    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    common::warn_if_leader_moved(&c, leader, "runs may have hit a replica");
    res.print_summary(plan.rounds, plan.secs);
    report::print_table(&res, &targets);
    report::print_failures(&res, &targets);
    report::print_verdicts(&res, &targets, &idle);
    costs.print();
    report::print_footprints(&idle);
    drop(proxies);
}
