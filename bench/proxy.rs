//! The proxy throughput benchmark: `cargo bench --bench proxy`, part of `make bench`.
//!
//! It PRINTS numbers and asserts nothing. Through the e2e harness in `tests/support/` it starts a
//! three-node cluster (etcd, PostgreSQL 15, agents at ttl/loop_wait/retry_timeout 10/1/3), then
//! `rampart proxy` (node 0's configuration plus a `proxy` section) and HAProxy relaying plain TCP
//! to the primary, and loads the primary with `pgbench` three ways: directly, through the
//! proxy's read-write port, and through HAProxy. The `rampart` binary is the one Cargo built for
//! this bench (bench profile = release).
//!
//! The tables are created once, `pgbench -i -s 16` on the primary, followed by a CHECKPOINT and
//! a wait until the replicas have replayed them (so that neither competes with the first runs).
//! Then, in each round, every workload runs against direct, rampart and haproxy in turn
//! (interleaved, so that a slow spell of the machine hits all three rather than one), all on the
//! read-write path to the primary:
//! * `select-only`: `pgbench -S -c 16 -j 2`, and the same with `-M extended`;
//! * `TPC-B-like`: `pgbench -c 16 -j 2` (pgbench's default script);
//! * `churn (-S -C)`: `pgbench -S -C -c 8 -j 2`, a new connection for every transaction.
//!
//! Figures are pgbench's `tps = ...` line: without the initial connection time, or with `-C`
//! including the reconnections. The table gives the median TPS over the rounds (min and max
//! beside it) and its ratio to the direct median; a verdict line per workload checks rampart
//! against its targets: ahead of HAProxy, and for the long-lived-connection workloads at least
//! 0.75 of direct. Then it prints what each proxy cost: the whole machine's busy CPU time per
//! transaction on each path (from `/proc/stat` and pgbench's transaction count), which shows what
//! the extra hop costs in a way that a slow spell of a shared machine hardly moves; the proxy's
//! own CPU time during its runs as a share of one core; and its resident memory (VmRSS, VmHWM) at
//! the end.
//!
//! PostgreSQL is tuned so that the TPC-B-like runs are bound by CPU and the wire rather than by
//! fsync, which would hide what a proxy costs: `synchronous_commit = off`, `shared_buffers =
//! 512MB` (the scale-16 database fits), `max_wal_size = 2GB` (no checkpoint forced by WAL volume
//! during a run). `max_connections` stays at PostgreSQL's 100, far above the 16 clients. Every
//! pgbench connects as the harness' superuser with `PGPASSWORD` and `sslmode=disable` (the same
//! startup exchange on every target).
//!
//! Environment: `RAMPART_BENCH_SECS` (seconds per run, default 6) and `RAMPART_BENCH_ROUNDS`
//! (default 5: more short rounds make a steadier median than few long ones);
//! `RAMPART_BENCH_QUICK=1` makes the defaults 5 s and 1 round. With the defaults a run takes
//! about 7 minutes (4 workloads x 3 targets x 5 rounds x 6 s, plus set-up), quick about 1.5. The
//! harness variables apply (`RAMPART_KEEP_TEST_DIRS=1` keeps pgbench's output files, ...). On a small machine pgbench, PostgreSQL and the proxy share the cores, so the
//! figures are noisy.
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "proxy/pgbench.rs"]
mod pgbench;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "proxy/targets.rs"]
mod targets;

use std::time::{Duration, Instant};

use common::procfs::{self, kb_to_mb};
use common::FAST;
use pgbench::{Workload, WORKLOADS};
use targets::{Proxies, Target};

/// rampart's target against the direct path, for workloads with [`Workload::ratio_target`].
pub const DIRECT_RATIO_TARGET: f64 = 0.75;
/// `pgbench -i -s`: 1.6 million accounts, about 250 MB. At least the 16 clients, as pgbench's
/// documentation asks: with fewer branches than clients the TPC-B-like runs mostly measure
/// contention for the branch rows, where every extra microsecond a proxy adds to a statement
/// lengthens the time a row lock is held.
const SCALE: u32 = 16;
/// Not counted: each target is loaded this long first, which also shows pgbench works through it.
const WARM_UP_SECS: u64 = 2;
const PG_PARAMETERS: [(&str, &str); 3] =
    [("synchronous_commit", "'off'"), ("shared_buffers", "'512MB'"), ("max_wal_size", "'2GB'")];

struct Plan {
    quick: bool,
    secs: u64,
    rounds: usize,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = common::quick();
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v.trim().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                    println!("[bench] ignoring {name}={v:?}: not a positive whole number");
                    default
                }),
                _ => default,
            }
        };
        let secs = number("RAMPART_BENCH_SECS", if quick { 5 } else { 6 });
        let rounds = number("RAMPART_BENCH_ROUNDS", if quick { 1 } else { 5 }) as usize;
        Plan { quick, secs, rounds }
    }
}

/// A proxy's CPU time during its own runs.
#[derive(Default, Clone, Copy)]
struct Load {
    cpu_secs: f64,
    wall_secs: f64,
}

/// The whole machine's CPU during one run.
#[derive(Clone, Copy)]
struct MachineCpu {
    /// Busy CPU time per transaction, in microseconds.
    us_per_tx: f64,
    /// Busy share of all the CPUs' time, 0 to 1.
    busy: f64,
}

/// Everything measured: `tps[workload][target]` holds one value per successful run, and so does
/// `cpu[workload][target]` when `/proc/stat` and pgbench's transaction count were read.
struct Results {
    tps: Vec<Vec<Vec<f64>>>,
    cpu: Vec<Vec<Vec<MachineCpu>>>,
    notes: Vec<String>,
    failures: usize,
    load: [Load; 3],
}

/// Runs `workload` against `target`, adding to `res`; prints the outcome.
fn measure(c_dir: &std::path::Path, plan: &Plan, w: usize, t: usize, target: Target, round: usize, res: &mut Results) {
    let workload = &WORKLOADS[w];
    let tag = format!("r{round}-w{w}-{}", target.name);
    let cpu_before = target.pid.and_then(procfs::cpu_secs);
    let machine_before = procfs::machine_cpu_ticks();
    let t0 = Instant::now();
    let outcome = pgbench::run(target.port, workload, plan.secs, c_dir, &tag);
    let wall = t0.elapsed().as_secs_f64();
    let transactions = outcome.as_ref().ok().and_then(|o| o.transactions).filter(|&n| n > 0);
    let machine = match (machine_before, procfs::machine_cpu_ticks(), transactions) {
        (Some((b0, a0)), Some((b1, a1)), Some(n)) if a1 > a0 => Some(MachineCpu {
            us_per_tx: (b1 - b0) as f64 / procfs::clock_ticks_per_sec() * 1e6 / n as f64,
            busy: (b1 - b0) as f64 / (a1 - a0) as f64,
        }),
        _ => None,
    };
    if let (Some(pid), Some(before)) = (target.pid, cpu_before) {
        if let Some(after) = procfs::cpu_secs(pid) {
            res.load[t].cpu_secs += after - before;
            res.load[t].wall_secs += wall;
        }
    }
    match outcome {
        Ok(o) => {
            let cpu = machine.map(|m| format!("; machine CPU {:.0} us/tx, {:.0} % busy", m.us_per_tx, m.busy * 100.0));
            println!(
                "[bench]   {:<24} {:<8} {:>10.1} tps ({}{})",
                workload.name,
                target.name,
                o.tps,
                o.note,
                cpu.unwrap_or_default()
            );
            res.cpu[w][t].extend(machine);
            if !res.notes.contains(&o.note) {
                res.notes.push(o.note);
            }
            res.tps[w][t].push(o.tps);
        }
        Err(e) => {
            println!("[bench]   {:<24} {:<8} FAILED: {e}", workload.name, target.name);
            res.failures += 1;
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn print_table(res: &Results, targets: &[Target; 3]) {
    println!("{:<24} {:<8} {:>12} {:>9}  {:<24} runs", "workload", "target", "median TPS", "/ direct", "min .. max");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let direct = median(&res.tps[w][0]);
        for (t, target) in targets.iter().enumerate() {
            let values = &res.tps[w][t];
            let (med, spread) = match median(values) {
                Some(m) => {
                    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (format!("{m:.1}"), format!("{lo:.1} .. {hi:.1}"))
                }
                None => ("no value".into(), "-".into()),
            };
            let ratio = match (median(values), direct) {
                (Some(m), Some(d)) if d > 0.0 => format!("{:.2}", m / d),
                _ => "-".into(),
            };
            println!("{:<24} {:<8} {med:>12} {ratio:>9}  {spread:<24} {}", workload.name, target.name, values.len());
        }
    }
}

/// One line per workload: rampart against HAProxy and, where it applies, against direct.
fn print_verdicts(res: &Results) {
    let verdict = |ok: bool| if ok { "OK" } else { "MISSED" };
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let [direct, rampart, haproxy] = [0, 1, 2].map(|t| median(&res.tps[w][t]));
        let Some(rampart) = rampart else {
            println!("[bench] verdict {}: no rampart figure: MISSED", workload.name);
            continue;
        };
        let mut parts = Vec::new();
        match haproxy {
            Some(h) if h > 0.0 => {
                let r = rampart / h;
                parts.push(format!("rampart/haproxy {r:.3} (target > 1): {}", verdict(r > 1.0)));
            }
            _ => parts.push("no haproxy figure".into()),
        }
        if workload.ratio_target {
            match direct {
                Some(d) if d > 0.0 => {
                    let r = rampart / d;
                    parts.push(format!(
                        "rampart/direct {r:.3} (target >= {DIRECT_RATIO_TARGET}): {}",
                        verdict(r >= DIRECT_RATIO_TARGET)
                    ));
                }
                _ => parts.push("no direct figure".into()),
            }
        }
        println!("[bench] verdict {}: {}", workload.name, parts.join("; "));
    }
}

/// Per workload, the whole machine's busy CPU time per transaction on each path (medians), and
/// what each proxy adds to it. On a machine whose CPUs are all busy, direct/proxy of these is the
/// TPS ratio the proxy's own cost explains; unlike TPS it hardly moves when the machine has a
/// slow spell, since both the time and the transactions shrink.
fn print_cpu_per_transaction(res: &Results, targets: &[Target; 3]) {
    println!("[bench] machine CPU per transaction (busy CPU time of all processes / transactions; median):");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let us = |t: usize| median(&res.cpu[w][t].iter().map(|m| m.us_per_tx).collect::<Vec<_>>());
        let busy = |t: usize| median(&res.cpu[w][t].iter().map(|m| m.busy).collect::<Vec<_>>());
        let Some(direct) = us(0) else {
            println!("[bench]   {:<24} no figure", workload.name);
            continue;
        };
        let mut parts = vec![format!("direct {direct:.1} us ({:.0} % busy)", busy(0).unwrap_or(0.0) * 100.0)];
        for (t, target) in targets.iter().enumerate().skip(1) {
            if let Some(v) = us(t) {
                parts.push(format!(
                    "{} {v:.1} us (+{:.1}; direct/{} {:.2}; {:.0} % busy)",
                    target.name,
                    v - direct,
                    target.name,
                    direct / v,
                    busy(t).unwrap_or(0.0) * 100.0
                ));
            }
        }
        println!("[bench]   {:<24} {}", workload.name, parts.join("; "));
    }
}

/// CPU during its runs and memory now, for each proxy.
fn print_costs(res: &Results, targets: &[Target; 3]) {
    for (t, target) in targets.iter().enumerate() {
        let Some(pid) = target.pid else { continue };
        let load = res.load[t];
        let share =
            if load.wall_secs > 0.0 { format!("{:.0} %", load.cpu_secs / load.wall_secs * 100.0) } else { "-".into() };
        let mb = |key: &str| procfs::status_kb(pid, key).map(|kb| format!("{:.1} MB", kb_to_mb(kb)));
        println!(
            "[bench] {} (pid {pid}): CPU {:.1} s during its {:.0} s of runs = {share} of one core; \
             {:.1} s CPU since start; VmRSS {}, VmHWM {}",
            target.name,
            load.cpu_secs,
            load.wall_secs,
            procfs::cpu_secs(pid).unwrap_or(0.0),
            mb("VmRSS").unwrap_or_else(|| "?".into()),
            mb("VmHWM").unwrap_or_else(|| "?".into()),
        );
    }
}

fn main() {
    if !common::bench_requested("proxy") {
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    common::print_preamble("proxy throughput", plan.quick);
    println!(
        "[bench] {} CPUs; {} round(s) of {} workloads x (direct, rampart, haproxy), {} s each; pgbench {}",
        common::cpus(),
        plan.rounds,
        WORKLOADS.len(),
        plan.secs,
        pgbench::bin().display()
    );
    let rt = common::runtime();
    let Some((c, healthy)) = common::healthy_cluster(&rt, FAST, &PG_PARAMETERS) else { return };
    let leader = healthy.leader;
    let primary_port = c.pg_port(leader);
    println!("[bench] cluster {} healthy; leader {} on port {primary_port}", FAST.label(), c.name(leader));
    for name in ["max_connections", "shared_buffers", "synchronous_commit", "max_wal_size"] {
        let value = targets::show(&rt, primary_port, name).unwrap_or_else(|e| format!("? ({e})"));
        println!("[bench]   {name} = {value}");
    }
    // Declared after the cluster: stopped (by PID) before it.
    let proxies = Proxies::start(&c, leader);
    let targets = proxies.targets(primary_port);
    for t in &targets {
        if let Err(e) = targets::check_route(&rt, t.port, primary_port) {
            println!("[bench] {} on port {}: {e}; stopping", t.name, t.port);
            return;
        }
    }
    println!(
        "[bench] targets: direct :{primary_port}, rampart proxy :{}, haproxy (TCP) :{}; each reaches the primary",
        targets[1].port, targets[2].port
    );

    match pgbench::init(primary_port, SCALE, c.dir()) {
        Ok(d) => println!("[bench] pgbench -i -s {SCALE} on the primary: {:.1} s", d.as_secs_f64()),
        Err(e) => {
            println!("[bench] {e}; stopping");
            return;
        }
    }
    match targets::settle(&rt, primary_port, Duration::from_secs(120)) {
        Ok(d) => println!("[bench] CHECKPOINT, replicas caught up: {:.1} s", d.as_secs_f64()),
        Err(e) => println!("[bench] settling: {e} (measuring anyway)"),
    }
    let warm = Workload { name: "warm-up", args: &["-S", "-c", "4", "-j", "2"], ratio_target: false };
    for t in &targets {
        match pgbench::run(t.port, &warm, WARM_UP_SECS, c.dir(), &format!("warm-{}", t.name)) {
            Ok(o) => println!("[bench] warm-up {} s through {}: {:.0} tps (not counted)", WARM_UP_SECS, t.name, o.tps),
            Err(e) => println!("[bench] warm-up through {} FAILED: {e}", t.name),
        }
    }

    let mut res = Results {
        tps: vec![vec![Vec::new(); targets.len()]; WORKLOADS.len()],
        cpu: vec![vec![Vec::new(); targets.len()]; WORKLOADS.len()],
        notes: Vec::new(),
        failures: 0,
        load: [Load::default(); 3],
    };
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

    let leader_now = c.dcs().leader();
    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    if leader_now.as_deref() != Some(c.name(leader)) {
        println!(
            "[bench] WARNING: the DCS leader is now {leader_now:?}, not {}: runs may have hit a replica",
            c.name(leader)
        );
    }
    println!(
        "{} round(s) of {} s; TPS as pgbench reports it ({}); {} failed run(s); {} CPUs, shared with pgbench and PostgreSQL",
        plan.rounds,
        plan.secs,
        res.notes.join("; "),
        res.failures,
        common::cpus()
    );
    print_table(&res, &targets);
    print_verdicts(&res);
    print_cpu_per_transaction(&res, &targets);
    print_costs(&res, &targets);
    drop(proxies);
}
