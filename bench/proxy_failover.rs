//! The proxy failover benchmark: `cargo bench --bench proxy_failover`, part of `make bench`.
//!
//! It PRINTS numbers and asserts nothing. It measures what clients of `rampart proxy`'s
//! read-write port see when the leader goes away, on a three-node cluster at
//! ttl/loop_wait/retry_timeout 10/1/3 run through the e2e harness in `tests/support/` (real etcd,
//! PostgreSQL 15 and agents, with the `rampart` binary Cargo built for this bench), the proxy
//! started as in the e2e tests (node 0's configuration plus a `proxy` section, `hold_timeout` 30).
//! Two faults, each on the current leader, alternating:
//! * **crash failover**: the leader's agent and postmaster are SIGKILLed together, as in
//!   bench/failover.rs; afterwards the old node's agent is restarted and rejoins;
//! * **switchover**: `POST /switchover` to the leader's REST API naming the next node, as in
//!   bench/switchover.rs.
//!
//! Two clients run throughout, both through the proxy (single host, no `target_session_attrs`,
//! since routing is the proxy's job):
//! * the **writer** of bench/common/ inserts one row every 20 ms on one connection and reconnects
//!   after any error. Per fault: the **write-unavailability window** (the longest pause between
//!   two successful inserts from the last one before the fault to the first one on the new
//!   primary) and the writer's **errors** in that stretch. An attempt counts as failed only after
//!   `hold_timeout` + 10 s, so that being held is not mistaken for an error;
//! * the **new-connection client** (bench/proxy_failover/probe.rs) opens a fresh connection every
//!   50 ms and runs one INSERT on it. Per fault: of the connections it started between the fault
//!   and the writer's first insert on the new primary, how many **failed** (the target is none: the
//!   proxy holds them until there is a primary) and the **longest** one took (from its start to
//!   the INSERT's answer).
//!
//! Targets: crash window at most ttl + 1 s, switchover window at most 1 s, no failed new
//! connection. PostgreSQL runs with `max_connections` 500: a crash holds some 200 new connections
//! (one every 50 ms for ttl seconds) that all reach the new primary at once.
//!
//! A second part then replaces that proxy with a **transaction-mode** one (`pool_mode:
//! transaction`, `default_pool_size` 20, the superuser's password in an `auth_file`, the superuser
//! as `auth_user`; bench/proxy_failover/load.rs) and runs, per fault, `pgbench -n -M prepared
//! -c 16 -j 2 --max-tries=1` (TPC-B script, `pgbench -i -s 1`) through it with per-transaction logs
//! (`-l --log-prefix <cluster dir>/pgbench-log-<run>`), the fault 4 s after its first logged
//! transactions: a **switchover** (`-T 30`) and a **crash** (`-T 45`: SIGKILL of the leader's agent
//! and postmaster, the old node's agent restarted once the DCS names a new leader, so it rejoins
//! while pgbench runs). Per fault: transactions processed, failed transactions, aborted clients
//! (pgbench's `client N aborted` lines), the **longest transaction** (the highest latency in the
//! logs, which includes any wait for the new primary) and how many transactions finished after
//! the fault, then a verdict line per fault. Targets: a switchover fails no transaction and aborts
//! no client; a crash aborts only clients that had a transaction in flight on the old primary (at
//! most the 16), the others carry on.
//!
//! Full run of 5 December 2026 on a shared 2-core host (load average 8 to 14 from other work):
//! part 1, crash windows 11.18 / 11.57 / 12.04 s (min / median / max), switchover windows 0.68 /
//! 0.71 / 1.11 s, one failed new connection over the three switchovers; part 2, switchover: 0 failed
//! transactions and 0 aborted clients in each of 3 runs, longest transaction 0.89 / 1.04 / 1.14 s
//! (the one that waited for the new primary), 14460 / 16599 / 17560 transactions processed; crash:
//! 16 of 16 clients aborted in each run (TPC-B keeps every client in a transaction nearly always,
//! so all had one in flight; none was left to carry on and pgbench ended at the crash), 0 failed.
//! README.md's Benchmarks section has the table. A quick run later that day
//! (`RAMPART_BENCH_QUICK=1`), after the crash run got its pause between transactions: part 1,
//! crash window 10.33 s, switchover 0.38 s, no failed new connection; part 2, switchover 0 failed
//! and 0 aborted (longest transaction 0.82 s); crash 0 failed, 12 of 16 clients aborted (TPC-B at
//! scale 1 queues every client on one branch row, so most are inside a transaction) and the other
//! 4 carried on on the new primary (5606 transactions after the crash, the longest 9.69 s: the
//! wait for it).
//!
//! Environment: `RAMPART_BENCH_QUICK=1` runs each fault of each part once instead of 3 times. The
//! harness variables apply (`RAMPART_KEEP_TEST_DIRS=1`, ...).
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "proxy_failover/load.rs"]
mod load;
// Shared with bench/proxy.rs, whose workloads this bench does not run.
#[allow(dead_code)]
#[path = "proxy/pgbench.rs"]
mod pgbench;
#[path = "proxy_failover/probe.rs"]
mod probe;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::procfs::{self, kb_to_mb};
use common::{Row, Timing, Unit, Writer, FAST, HEALTHY_TIMEOUT, POLL};
use probe::{Gap, Prober, PROBE_EVERY};
use support::cluster::Cluster;
use support::proxy::Proxy;
use tokio::runtime::Runtime;

const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// A client attempt through the proxy fails only after this: a held client is not an error.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(HOLD_TIMEOUT.as_secs() + 10);
const SWITCHOVER_TARGET: Duration = Duration::from_secs(1);
/// Read timeout of the switchover call.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Crash,
    Switchover,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Crash => "crash failover",
            Fault::Switchover => "switchover",
        }
    }

    fn target(self, t: Timing) -> Duration {
        match self {
            Fault::Crash => Duration::from_secs(t.ttl + 1),
            Fault::Switchover => SWITCHOVER_TARGET,
        }
    }
}

/// One fault as the two clients saw it.
struct Sample {
    fault: Fault,
    /// `None`: writes did not resume on another node within the observation limit.
    window: Option<Duration>,
    writer_errors: usize,
    gap: Gap,
}

/// The writer's and the new-connection client's connection settings: the proxy's read-write port.
fn proxy_config(port: u16, application_name: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(support::SUPERUSER)
        .password(support::SUPERUSER_PASSWORD)
        .dbname("postgres")
        .application_name(application_name)
        .connect_timeout(Duration::from_secs(2));
    config
}

/// Injects `fault` on the leader `old` and watches until the writer wrote on another node (or the
/// observation limit passed); then collects what both clients saw.
fn run_fault(c: &mut Cluster, w: &Writer, p: &Prober, old: usize, fault: Fault, run: &str) -> Option<Sample> {
    let old_name = c.name(old).to_owned();
    let old_port = c.pg_port(old);
    if !w.wait_writing_to(old_port) {
        println!("[bench] {run}: the writer is not writing to the leader {old_name} through the proxy; skipped");
        return None;
    }
    std::thread::sleep(Duration::from_secs(1));

    let t0 = Instant::now();
    let call = match fault {
        Fault::Crash => {
            common::crash(c, old);
            None
        }
        Fault::Switchover => {
            let cand = (old + 1) % c.len();
            let body = format!(r#"{{"leader": "{old_name}", "candidate": "{}"}}"#, c.name(cand));
            let api_port = c.api_port(old);
            Some(std::thread::spawn(move || {
                support::client::http_request_with_timeout(api_port, "POST", "/switchover", Some(&body), ANSWER_TIMEOUT)
            }))
        }
    };
    let limit = Duration::from_secs(FAST.ttl + 60);
    support::wait_until(limit, POLL, || w.succeeded_elsewhere_since(t0, old_port));
    // A few more attempts, so that the log holds the first success for sure.
    std::thread::sleep(Duration::from_millis(300));
    let attempts = w.attempts_since(t0 - Duration::from_secs(10));
    let common::Analysis { window, failed, errors } = common::analyse(&attempts, t0, old_port);
    let resumed = attempts.iter().find(|a| a.at > t0 && matches!(a.result, Ok(p) if p != old_port)).map(|a| a.at);
    let gap = p.gap(t0, resumed.unwrap_or_else(Instant::now), ATTEMPT_TIMEOUT + Duration::from_secs(5));
    let answer = call.map(|h| match h.join() {
        Ok(Ok(r)) => format!("; POST /switchover: {} {:?}", r.status, r.body.trim()),
        Ok(Err(e)) => format!("; POST /switchover: no answer ({e})"),
        Err(_) => "; POST /switchover: the call's thread panicked".into(),
    });

    let new_leader = attempts
        .iter()
        .filter(|a| a.at > t0)
        .find_map(|a| a.result.as_ref().ok().filter(|&&p| p != old_port))
        .and_then(|&p| (0..c.len()).find(|&i| c.pg_port(i) == p))
        .map_or("?", |i| c.name(i));
    println!(
        "[bench] {run}: {old_name} -> {new_leader}: window {}, {failed} writer errors; new connections started \
         in the gap: {}, {} failed{}, longest took {}{}",
        common::fmt_secs(window, "none"),
        gap.started,
        gap.failed,
        if gap.unfinished > 0 { format!(" ({} without an answer)", gap.unfinished) } else { String::new() },
        common::fmt_secs(gap.longest_ok, "-"),
        answer.unwrap_or_default(),
    );
    if !errors.is_empty() {
        println!("[bench]   writer errors:");
        common::print_errors(&errors);
    }
    if !gap.errors.is_empty() {
        println!("[bench]   new-connection errors:");
        common::print_errors(&gap.errors);
    }
    Some(Sample { fault, window, writer_errors: failed, gap })
}

/// Brings the cluster back to health after `fault` on `old`: a crashed node's agent is restarted
/// (it rejoins as a replica). Returns the leader.
fn recover(rt: &Runtime, c: &mut Cluster, old: usize, fault: Fault) -> Option<usize> {
    if fault == Fault::Crash {
        c.start_agent(old);
    }
    healthy_again(rt, c)
}

/// Waits for the cluster to be healthy on one timeline and says so (or dumps the logs); returns
/// the leader.
fn healthy_again(rt: &Runtime, c: &Cluster) -> Option<usize> {
    let healthy = common::wait_healthy_on_one_timeline(rt, c, HEALTHY_TIMEOUT);
    match &healthy {
        Some(h) => println!("[bench]   healthy again: leader {} on timeline {}", c.name(h.leader), h.timeline),
        None => {
            println!("[bench]   the cluster did not become healthy within {HEALTHY_TIMEOUT:?}; logs on stderr");
            c.dump_logs();
        }
    }
    healthy.map(|h| h.leader)
}

/// The memory and CPU time of `proxy` (named `what`) at the end of a part.
fn print_proxy_usage(proxy: &Proxy, what: &str) {
    if let Some(pid) = proxy.pid() {
        println!(
            "[bench] {what} (pid {pid}) at the end: VmRSS {:.1} MB, VmHWM {:.1} MB, CPU {:.1} s since start",
            kb_to_mb(procfs::status_kb(pid, "VmRSS").unwrap_or(0)),
            kb_to_mb(procfs::status_kb(pid, "VmHWM").unwrap_or(0)),
            procfs::cpu_secs(pid).unwrap_or(0.0)
        );
    }
}

fn rows(samples: &[Sample], planned: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for fault in [Fault::Crash, Fault::Switchover] {
        let s: Vec<&Sample> = samples.iter().filter(|x| x.fault == fault).collect();
        let name = format!("{} ({}) via proxy", fault.label(), FAST.label());
        let missing = planned - s.len();
        let windows: Vec<f64> = s.iter().filter_map(|x| x.window).map(|d| d.as_secs_f64()).collect();
        let no_window = s.iter().filter(|x| x.window.is_none()).count();
        rows.push(Row::secs_at_most(
            format!("{name}: write-unavailability window"),
            windows,
            no_window + missing,
            fault.target(FAST),
        ));
        let counts = |f: fn(&Sample) -> usize| s.iter().map(|&x| f(x) as f64).collect::<Vec<f64>>();
        rows.push(Row {
            what: format!("{name}: writer errors"),
            values: counts(|x| x.writer_errors),
            missing,
            unit: Unit::Count,
            target: None,
        });
        rows.push(Row {
            what: format!("{name}: new connections started in the gap"),
            values: counts(|x| x.gap.started),
            missing,
            unit: Unit::Count,
            target: None,
        });
        rows.push(Row {
            what: format!("{name}: new connections failed"),
            values: counts(|x| x.gap.failed),
            missing,
            unit: Unit::Count,
            target: Some((0.0, true, "0".into())),
        });
        rows.push(Row {
            what: format!("{name}: longest new connection (held)"),
            values: s.iter().filter_map(|x| x.gap.longest_ok).map(|d| d.as_secs_f64()).collect(),
            missing: s.iter().filter(|x| x.gap.longest_ok.is_none()).count() + missing,
            unit: Unit::Secs,
            target: None,
        });
    }
    rows
}

fn main() {
    if !common::bench_requested("proxy_failover") {
        return;
    }
    let quick = common::quick();
    let per_fault = if quick { 1 } else { 3 };
    let started = Instant::now();
    common::print_preamble("proxy failover", quick);
    println!(
        "[bench] {} CPUs; runs: crash failover and switchover through the proxy, x{per_fault} each, alternating, at {}",
        common::cpus(),
        FAST.label()
    );
    let rt = common::runtime();
    // The new-connection client gets its own threads: SCRAM for a burst of released clients
    // would otherwise delay the writer's own reconnection and inflate its window.
    let probe_rt = common::runtime();
    let Some((mut c, healthy)) = common::healthy_cluster(&rt, FAST, &[("max_connections", "500")]) else { return };
    let mut proxy = Proxy::start(&c, &format!("  hold_timeout: {}\n", HOLD_TIMEOUT.as_secs()));
    let created = rt.block_on(async {
        let db = support::connect_superuser(proxy.rw_port).await?;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_writes \
             (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
    });
    if let Err(e) = created {
        println!("[bench] creating the table through the proxy failed: {e}");
        return;
    }
    println!(
        "[bench] leader {}; proxy read-write port {} (hold_timeout {} s); writer: one INSERT every {:?}; \
         new-connection client: one connection + INSERT every {PROBE_EVERY:?}; client attempts time out after {:?}",
        c.name(healthy.leader),
        proxy.rw_port,
        HOLD_TIMEOUT.as_secs(),
        common::INSERT_EVERY,
        ATTEMPT_TIMEOUT
    );
    let writer = Writer::start_with(&rt, proxy_config(proxy.rw_port, "rampart-bench"), ATTEMPT_TIMEOUT);
    let prober = Prober::start(&probe_rt, proxy_config(proxy.rw_port, "rampart-bench-probe"), ATTEMPT_TIMEOUT);

    let mut samples = Vec::new();
    let mut leader = Some(healthy.leader);
    'runs: for k in 1..=per_fault {
        for fault in [Fault::Crash, Fault::Switchover] {
            let Some(old) = leader else { break 'runs };
            let run = format!("{} ({}) via proxy, run {k}/{per_fault}", fault.label(), FAST.label());
            if let Some(s) = run_fault(&mut c, &writer, &prober, old, fault, &run) {
                samples.push(s);
            }
            leader = recover(&rt, &mut c, old, fault);
        }
    }
    writer.stop(&rt);
    prober.stop(&probe_rt);
    print_proxy_usage(&proxy, "rampart proxy");
    common::print_results(
        started,
        "through the proxy's read-write port; values are min / median / max over the runs; \
         \"the gap\" = from the fault to the writer's first insert on the new primary",
        &rows(&samples, per_fault),
    );
    proxy.stop();
    let Some(leader) = leader else { return };
    pooled_part(&rt, &mut c, leader, per_fault);
}

/// The second part (bench/proxy_failover/load.rs): pgbench through a transaction-mode proxy, which
/// replaces the first part's (whose configuration and log are kept as `proxy-session.*`).
fn pooled_part(rt: &Runtime, c: &mut Cluster, mut leader: usize, per_fault: usize) {
    let started = Instant::now();
    for ext in ["yml", "log"] {
        let _ = std::fs::rename(c.dir().join(format!("proxy.{ext}")), c.dir().join(format!("proxy-session.{ext}")));
    }
    println!(
        "\n[bench] ===== part 2: pgbench -M prepared -c {} -j 2 --max-tries=1 (TPC-B, -s 1) through a transaction-mode \
         proxy (pool size {}), switchover and crash x{per_fault} each, alternating =====",
        load::CLIENTS,
        load::POOL_SIZE
    );
    match load::init(c, leader) {
        Ok(took) => println!("[bench] pgbench -i on the leader {}: {:.1} s", c.name(leader), took.as_secs_f64()),
        Err(e) => {
            println!("[bench] pgbench -i on the leader {} failed: {e}", c.name(leader));
            return;
        }
    }
    let mut proxy = load::start_pool_proxy(c, HOLD_TIMEOUT);
    println!(
        "[bench] transaction-mode proxy: read-write port {}, hold_timeout {} s; the fault {:?} after pgbench's \
         first logged transactions",
        proxy.rw_port,
        HOLD_TIMEOUT.as_secs(),
        load::FAULT_AFTER
    );
    let mut samples = Vec::new();
    'runs: for k in 1..=per_fault {
        for fault in [load::LoadFault::Switchover, load::LoadFault::Crash] {
            let run = format!("{} ({}) pgbench via pool, run {k}/{per_fault}", fault.label(), FAST.label());
            let (sample, next) = load::run_fault(rt, c, proxy.rw_port, leader, fault, &run, k);
            samples.extend(sample);
            match next {
                Some(l) => leader = l,
                None => break 'runs,
            }
        }
    }
    print_proxy_usage(&proxy, "transaction-mode rampart proxy");
    proxy.stop();
    common::print_results(
        started,
        "pgbench through the transaction-mode proxy; values are min / median / max over the runs; longest \
         transaction = the highest latency in pgbench's per-transaction logs",
        &load::rows(&samples, per_fault),
    );
    load::print_verdicts(&samples, per_fault);
}
