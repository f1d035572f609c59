//! The failover benchmark: `cargo bench --bench failover`, the first half of `make bench`.
//!
//! It PRINTS numbers and asserts nothing about speed. Everything runs through the e2e harness in
//! `tests/support/` (real etcd, real PostgreSQL 15, real agents on loopback ports, run as the
//! `postgres` OS user when started as root, every process stopped by PID), with the `rampart`
//! binary Cargo built for this bench, i.e. with the bench profile (= release). The writing client,
//! the health waits and the table are shared with `bench/switchover.rs` through `bench/common/`.
//!
//! For each timing, ttl/loop_wait/retry_timeout = 10/1/3 and then 30/10/10 (Patroni's defaults):
//! * **bootstrap**: from starting the three agents of a fresh cluster to one leader (DCS leader key,
//!   PostgreSQL read-write) plus two replicas whose WAL receiver is streaming, checked with SQL; the
//!   moment the agents' REST APIs say the same is printed too;
//! * **crash failover**: the leader's agent and postmaster are SIGKILLed together;
//! * **clean stop**: the leader's agent gets SIGTERM.
//!
//! During the faults a client inserts one row every 20 ms through a libpq-style multi-host
//! connection string (`host=h1,h2,h3 port=p1,p2,p3 target_session_attrs=read-write`) and, after any
//! error, reconnects with the same string and goes on. Per fault it reports:
//! * the **write-unavailability window**: the longest pause between two successful inserts from
//!   the last success before the fault to the first success on another node after it (for a crash
//!   this is simply "last insert before → first insert after"; on a clean stop the old primary may
//!   still accept a few inserts after SIGTERM, which is not unavailability);
//! * the number of **failed insert attempts** in that stretch (connection attempts included);
//! * the time from the fault until the **DCS leader key names another node** (polled every 20 ms
//!   through `rampart_dcs`, the agents' own etcd client).
//!
//! After each fault the old node's agent is restarted and the bench waits for a healthy cluster
//! again before the next run. On the 30/10/10 cluster (loop_wait 10, Patroni's default) it also
//! measures the **idle footprint** of each agent before any client connects: VmRSS and VmHWM from
//! `/proc/<pid>/status`, and CPU as utime+stime from `/proc/<pid>/stat` over an idle period, as a
//! percentage of one core.
//!
//! The final table puts each number next to the target: crash window at most ttl + 1 s,
//! clean-stop window at most 2 s, agent under 15 MB resident (MB = 10^6 bytes) and under 0.2 % of a
//! core when idle.
//!
//! Environment: `RAMPART_BENCH_QUICK=1` runs each fault once and measures 20 idle seconds instead
//! of 60 (the full run does 5 + 5 faults at 10/1/3 and 3 + 3 at 30/10/10, about 6 minutes). The
//! harness variables apply (`RAMPART_KEEP_TEST_DIRS=1`, `RAMPART_AGENT_RUST_LOG`, ...).
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::procfs::{self, kb_to_mb};
use common::{Row, Timing, Unit, Writer, FAST, HEALTHY_TIMEOUT, PATRONI_DEFAULTS, POLL};
use support::cluster::Cluster;
use tokio::runtime::Runtime;

/// Issue targets.
const CLEAN_STOP_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_BYTES: f64 = 15e6;
const CPU_TARGET_PCT: f64 = 0.2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Crash,
    CleanStop,
}

impl Fault {
    fn label(&self) -> &'static str {
        match self {
            Fault::Crash => "crash failover",
            Fault::CleanStop => "clean stop",
        }
    }

    fn target(&self, t: Timing) -> Duration {
        match self {
            Fault::Crash => Duration::from_secs(t.ttl + 1),
            Fault::CleanStop => CLEAN_STOP_TARGET,
        }
    }
}

/// How many runs of what; see the module documentation.
struct Plan {
    quick: bool,
    fast_crash: usize,
    fast_clean: usize,
    slow_crash: usize,
    slow_clean: usize,
    /// Pause after bootstrap before the idle measurement starts.
    settle: Duration,
    idle: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        if common::quick() {
            Plan {
                quick: true,
                fast_crash: 1,
                fast_clean: 1,
                slow_crash: 1,
                slow_clean: 1,
                settle: Duration::from_secs(5),
                idle: Duration::from_secs(20),
            }
        } else {
            Plan {
                quick: false,
                fast_crash: 5,
                fast_clean: 5,
                slow_crash: 3,
                slow_clean: 3,
                settle: Duration::from_secs(15),
                idle: Duration::from_secs(60),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Clone, Debug)]
struct Sample {
    /// `None`: writes did not resume on another node within the observation limit.
    window: Option<Duration>,
    failed: usize,
    dcs_leader: Option<Duration>,
    /// When the fault was injected.
    at: Instant,
}

struct FaultSeries {
    timing: Timing,
    fault: Fault,
    planned: usize,
    samples: Vec<Sample>,
}

struct AgentFootprint {
    name: String,
    rss_kb: u64,
    hwm_kb: u64,
    cpu_pct: f64,
    children_cpu_pct: f64,
}

struct Idle {
    timing: Timing,
    period: Duration,
    agents: Vec<AgentFootprint>,
}

#[derive(Default)]
struct Results {
    bootstraps: Vec<common::Bootstrap>,
    faults: Vec<FaultSeries>,
    idle: Option<Idle>,
}

// ---------------------------------------------------------------------------------------------
// The measurements.

/// Footprint of each agent over `period` while nothing but the agents' own loops runs.
fn measure_idle(c: &Cluster, timing: Timing, period: Duration) -> Idle {
    let tck = procfs::clock_ticks_per_sec();
    let pids: Vec<u32> = (0..c.len()).map(|i| c.agent(i).pid()).collect();
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|&p| procfs::cpu_ticks(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(period);
    let elapsed = t0.elapsed().as_secs_f64();
    let agents = pids
        .iter()
        .zip(before)
        .enumerate()
        .map(|(i, (&pid, before))| {
            let after = procfs::cpu_ticks(pid);
            let (own, children) = match (before, after) {
                (Some(b), Some(a)) => (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)),
                _ => (0, 0),
            };
            AgentFootprint {
                name: c.name(i).to_owned(),
                rss_kb: procfs::status_kb(pid, "VmRSS").unwrap_or(0),
                hwm_kb: procfs::status_kb(pid, "VmHWM").unwrap_or(0),
                cpu_pct: own as f64 / tck / elapsed * 100.0,
                children_cpu_pct: children as f64 / tck / elapsed * 100.0,
            }
        })
        .collect();
    Idle { timing, period: t0.elapsed(), agents }
}

/// Runs one fault against the current leader `old` and watches until the DCS names another node
/// and the client wrote on another node (or the observation limit passed).
fn run_fault(c: &mut Cluster, w: &Writer, old: usize, fault: Fault, timing: Timing, run: &str) -> Sample {
    let old_name = c.name(old).to_owned();
    let old_port = c.pg_port(old);
    // The client must be writing to this leader right now.
    if !w.wait_writing_to(old_port) {
        println!("[bench] {run}: the client is not writing to the leader {old_name}; skipped");
        return Sample { window: None, failed: 0, dcs_leader: None, at: Instant::now() };
    }
    std::thread::sleep(Duration::from_secs(1));
    let log_marks = common::log_marks(c);

    let t0 = Instant::now();
    match fault {
        Fault::Crash => common::crash(c, old),
        Fault::CleanStop => c.agent(old).sigterm(),
    }
    let limit = Duration::from_secs(timing.ttl + 60);
    let mut dcs_at = None;
    let mut new_name = None;
    let mut resumed = false;
    while t0.elapsed() < limit && (dcs_at.is_none() || !resumed) {
        if dcs_at.is_none() {
            if let Some(l) = c.dcs().leader().filter(|l| *l != old_name) {
                dcs_at = Some(t0.elapsed());
                new_name = Some(l);
            }
        }
        resumed = resumed || w.succeeded_elsewhere_since(t0, old_port);
        std::thread::sleep(POLL);
    }
    // A few more attempts, so that the log holds the first success for sure.
    std::thread::sleep(Duration::from_millis(300));
    let common::Analysis { window, failed, errors } =
        common::analyse(&w.attempts_since(t0 - Duration::from_secs(10)), t0, old_port);

    let secs = |d: Option<Duration>| common::fmt_secs(d, "none");
    println!(
        "[bench] {run}: {old_name} -> {}: window {}, {failed} failed insert attempts, DCS names new leader after {}",
        new_name.as_deref().unwrap_or("?"),
        secs(window),
        secs(dcs_at),
    );
    common::print_errors(&errors);
    let target = fault.target(timing);
    if window.is_none_or(|w| w > target) {
        common::print_logs_since(c, &log_marks, target, "the fault", false);
    }
    Sample { window, failed, dcs_leader: dcs_at, at: t0 }
}

/// Brings node `old` back after a fault injected at `t0` (its agent restarted) and waits for a
/// healthy cluster.
fn recover(rt: &Runtime, c: &mut Cluster, old: usize, fault: Fault, t0: Instant) -> bool {
    if fault == Fault::CleanStop {
        match c.agent_mut(old).wait_exit(Duration::from_secs(90)) {
            Some(status) => println!(
                "[bench]   old leader's agent exited {:.2} s after SIGTERM ({status}); PostgreSQL running: {}",
                t0.elapsed().as_secs_f64(),
                c.agent(old).postmaster_running()
            ),
            None => println!("[bench]   old leader's agent did not exit within 90 s of SIGTERM (killing it)"),
        }
    }
    let t1 = Instant::now();
    c.start_agent(old);
    match common::wait_healthy(rt, c, HEALTHY_TIMEOUT) {
        Some(l) => {
            println!(
                "[bench]   {} rejoined; cluster healthy again {:.1} s after its agent restarted (leader {})",
                c.name(old),
                t1.elapsed().as_secs_f64(),
                c.name(l)
            );
            true
        }
        None => {
            println!("[bench]   the cluster did not become healthy again within {HEALTHY_TIMEOUT:?}; logs on stderr");
            c.dump_logs();
            false
        }
    }
}

/// One cluster with `timing`: bootstrap, optionally the idle footprint, then the faults.
fn suite(
    rt: &Runtime,
    timing: Timing,
    crashes: usize,
    cleans: usize,
    idle: Option<(Duration, Duration)>,
    res: &mut Results,
) {
    println!("\n[bench] ===== cluster with ttl/loop_wait/retry_timeout = {} =====", timing.label());
    let (mut c, boot) = common::bootstrap(rt, timing);
    common::print_bootstrap(&boot);
    let ok = boot.by_sql.is_some();
    res.bootstraps.push(boot);
    let mut series: Vec<FaultSeries> = [(Fault::Crash, crashes), (Fault::CleanStop, cleans)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(fault, planned)| FaultSeries { timing, fault, planned, samples: Vec::new() })
        .collect();
    if !ok {
        println!("[bench] the cluster did not bootstrap; logs on stderr");
        c.dump_logs();
        res.faults.extend(series);
        return;
    }

    if let Some((settle, period)) = idle {
        println!(
            "[bench] idle footprint: settling {} s, then measuring {} s with no client",
            settle.as_secs(),
            period.as_secs()
        );
        std::thread::sleep(settle);
        let m = measure_idle(&c, timing, period);
        for a in &m.agents {
            println!(
                "[bench]   {}: VmRSS {:.1} MB, VmHWM {:.1} MB, CPU {:.3} % of a core (its children: {:.3} %)",
                a.name,
                kb_to_mb(a.rss_kb),
                kb_to_mb(a.hwm_kb),
                a.cpu_pct,
                a.children_cpu_pct
            );
        }
        res.idle = Some(m);
    }

    let Some(leader) = common::wait_healthy(rt, &c, HEALTHY_TIMEOUT) else {
        println!("[bench] the cluster is not healthy; logs on stderr");
        c.dump_logs();
        res.faults.extend(series);
        return;
    };
    let writer = match common::start_writer(rt, &c, leader) {
        Ok(w) => w,
        Err(e) => {
            println!("[bench] creating the table on the leader failed: {e}");
            res.faults.extend(series);
            return;
        }
    };

    'series: for s in &mut series {
        for k in 1..=s.planned {
            let Some(leader) = common::wait_healthy(rt, &c, HEALTHY_TIMEOUT) else {
                println!("[bench] the cluster is not healthy; remaining runs skipped");
                break 'series;
            };
            let run = format!("{} ({}) run {k}/{}", s.fault.label(), timing.label(), s.planned);
            let sample = run_fault(&mut c, &writer, leader, s.fault, timing, &run);
            let at = sample.at;
            s.samples.push(sample);
            if !recover(rt, &mut c, leader, s.fault, at) {
                break 'series;
            }
        }
    }
    writer.stop(rt);
    let footprint: Vec<String> = (0..c.len())
        .map(|i| {
            let pid = c.agent(i).pid();
            format!(
                "{} VmRSS {:.1} MB / VmHWM {:.1} MB",
                c.name(i),
                kb_to_mb(procfs::status_kb(pid, "VmRSS").unwrap_or(0)),
                kb_to_mb(procfs::status_kb(pid, "VmHWM").unwrap_or(0))
            )
        })
        .collect();
    println!("[bench] agents at the end (some restarted by the runs): {}", footprint.join("; "));
    res.faults.extend(series);
}

// ---------------------------------------------------------------------------------------------
// The table.

fn table(res: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in &res.faults {
        let t = s.timing.label();
        let windows: Vec<f64> = s.samples.iter().filter_map(|x| x.window).map(|d| d.as_secs_f64()).collect();
        let not_run = s.planned - s.samples.len();
        rows.push(Row::secs_at_most(
            format!("{} ({t}): write-unavailability window", s.fault.label()),
            windows,
            s.samples.iter().filter(|x| x.window.is_none()).count() + not_run,
            s.fault.target(s.timing),
        ));
        rows.push(Row {
            what: format!("{} ({t}): failed insert attempts", s.fault.label()),
            values: s.samples.iter().filter(|x| x.window.is_some()).map(|x| x.failed as f64).collect(),
            missing: 0,
            unit: Unit::Count,
            target: None,
        });
        let dcs: Vec<f64> = s.samples.iter().filter_map(|x| x.dcs_leader).map(|d| d.as_secs_f64()).collect();
        rows.push(Row {
            what: format!("{} ({t}): DCS names the new leader after", s.fault.label()),
            missing: s.samples.len() - dcs.len() + not_run,
            values: dcs,
            unit: Unit::Secs,
            target: None,
        });
    }
    for b in &res.bootstraps {
        rows.push(Row {
            what: format!("bootstrap ({}): leader + 2 streaming replicas", b.timing.label()),
            values: b.by_sql.map(|d| d.as_secs_f64()).into_iter().collect(),
            missing: usize::from(b.by_sql.is_none()),
            unit: Unit::Secs,
            target: None,
        });
    }
    if let Some(idle) = &res.idle {
        let t = format!("idle, loop_wait {}", idle.timing.loop_wait);
        let mb = RSS_TARGET_BYTES / 1e6;
        rows.push(Row {
            what: format!("agent VmRSS ({t}), 3 agents"),
            values: idle.agents.iter().map(|a| kb_to_mb(a.rss_kb)).collect(),
            missing: 0,
            unit: Unit::Mb,
            target: Some((mb, false, format!("< {mb:.0} MB"))),
        });
        rows.push(Row {
            what: format!("agent VmHWM, peak resident ({t}), 3 agents"),
            values: idle.agents.iter().map(|a| kb_to_mb(a.hwm_kb)).collect(),
            missing: 0,
            unit: Unit::Mb,
            target: Some((mb, false, format!("< {mb:.0} MB"))),
        });
        rows.push(Row {
            what: format!("agent CPU ({t}, {} s), % of one core", idle.period.as_secs()),
            values: idle.agents.iter().map(|a| a.cpu_pct).collect(),
            missing: 0,
            unit: Unit::Pct,
            target: Some((CPU_TARGET_PCT, false, format!("< {CPU_TARGET_PCT} %"))),
        });
        rows.push(Row {
            what: format!("  CPU of the agents' child processes ({t}), % of one core"),
            values: idle.agents.iter().map(|a| a.children_cpu_pct).collect(),
            missing: 0,
            unit: Unit::Pct,
            target: None,
        });
    }
    rows
}

fn main() {
    if !common::bench_requested("failover") {
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    common::print_preamble("failover", plan.quick);
    println!(
        "[bench] {} CPUs; runs: crash x{} + clean stop x{} at {}, crash x{} + clean stop x{} at {}, idle {} s",
        common::cpus(),
        plan.fast_crash,
        plan.fast_clean,
        FAST.label(),
        plan.slow_crash,
        plan.slow_clean,
        PATRONI_DEFAULTS.label(),
        plan.idle.as_secs()
    );
    let rt = common::runtime();
    let mut res = Results::default();
    suite(&rt, FAST, plan.fast_crash, plan.fast_clean, None, &mut res);
    suite(&rt, PATRONI_DEFAULTS, plan.slow_crash, plan.slow_clean, Some((plan.settle, plan.idle)), &mut res);

    common::print_results(
        started,
        "timings are ttl/loop_wait/retry_timeout; values are min / median / max over the runs (or agents)",
        &table(&res),
    );
}
