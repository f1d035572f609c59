//! Many clusters on one etcd: `cargo bench --bench many_clusters`, part of `make bench`.
//!
//! Production etcds serve dozens of clusters. This bench starts one three-member etcd on
//! loopback and `RAMPART_MANY_CLUSTERS` (default 10) clusters of three real members each on it,
//! each under a scope of its own, at ttl 20 / loop_wait 1 / retry_timeout 4 (loop_wait 1, and the
//! lowest ttl Patroni accepts, so that both tools run with the same settings). Then, for
//! `RAMPART_MANY_MINUTES` (default 10; 3 in quick mode):
//! * the first fifth is idle and counted: etcd's own received-message counters per agent per
//!   second and per loop ([`common::etcd_metrics`]), and each agent's CPU;
//! * from 30 % to 60 % of the run etcd is slowed: all its members stopped (SIGSTOP) for 150 ms
//!   of every 200 ms, for minutes, far longer than retry_timeout (this kernel has no netem);
//! * from the end of the idle window on, every member's `GET /patroni` is polled every 2 s.
//!
//! A failover is never due in this run, so every promotion is a false one: they are counted as
//! timeline increases between the start and the end (and leader changes, polls without a
//! primary, polls with two). The same run is then made with every member run by Patroni 4 (the
//! venv `scripts/setup.sh` makes, `patroni[etcd3]`) on a fresh etcd of its own. It PRINTS numbers
//! and asserts nothing. The targets: no false failover; at most Patroni's requests per
//! agent per loop, a fifth of them as the stretch.
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd_metrics::{self, Counts};
use common::{procfs, Timing, HEALTHY_TIMEOUT};
use support::cluster::{Cluster, ClusterOptions, SharedEtcd};
use support::patroni::{patroni_bin, Patroni};

/// loop_wait 1 at the lowest ttl Patroni accepts.
const TIMING: Timing = Timing { ttl: 20, loop_wait: 1, retry_timeout: 4 };
const MEMBERS: usize = 3;
/// How often every member's REST API is asked for its role and timeline.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long a poll waits for one member's answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// etcd slowed: every member stopped this long ...
const FROZEN: Duration = Duration::from_millis(150);
/// ... of every this long.
const SLOW_PERIOD: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    Rampart,
    Patroni,
}

/// One cluster of the run, with the Patroni processes that run it when Patroni does.
struct Member {
    // Declared first, so dropped first: Patroni stops before the cluster's files go.
    patroni: Vec<Patroni>,
    cluster: Cluster,
    /// Leader index and timeline when the run started.
    start: (usize, u64),
}

/// What one tool's run measured.
struct Row {
    tool: Tool,
    clusters: usize,
    /// etcd messages per agent per second during the idle window, by method.
    idle_per_agent: Counts,
    /// CPU seconds per minute of one agent process (average) during the idle window.
    cpu_per_minute: Option<f64>,
    watch: Watch,
    /// Clusters not healthy (one primary, streaming replicas) a minute after the run.
    unhealthy_after: usize,
}

impl Row {
    fn idle_total(&self) -> f64 {
        self.idle_per_agent.values().sum()
    }
}

/// What the polls saw, over all clusters.
#[derive(Default)]
struct Watch {
    /// Sum over clusters of (last timeline seen - timeline at the start): promotions.
    timeline_increases: u64,
    /// Polls in which a cluster's only primary was another member than at the previous poll.
    leader_changes: usize,
    /// Cluster polls without any member answering as a running primary.
    without_primary: usize,
    /// Cluster polls with two members answering as running primaries.
    two_primaries: usize,
    /// Cluster polls in all.
    polls: usize,
}

fn main() {
    if !common::bench_requested("many_clusters") {
        return;
    }
    let quick = common::quick();
    common::print_preamble("many clusters on one etcd", quick);
    let clusters = common::env_number("RAMPART_MANY_CLUSTERS", 10) as usize;
    let minutes = common::env_number("RAMPART_MANY_MINUTES", if quick { 3 } else { 10 });
    let run = Duration::from_secs(minutes * 60);
    println!(
        "[many_clusters] {clusters} clusters of {MEMBERS} on one 3-member etcd at {}, {minutes} min each tool; \
         idle count over the first fifth, etcd slowed ({} ms stopped of every {} ms) from 30 % to 60 %; {} CPUs",
        TIMING.label(),
        FROZEN.as_millis(),
        SLOW_PERIOD.as_millis(),
        common::cpus()
    );
    let mut rows = Vec::new();
    for tool in [Tool::Rampart, Tool::Patroni] {
        if tool == Tool::Patroni && patroni_bin().is_none() {
            println!("[many_clusters] Patroni: no /opt/rampart-venv/bin/patroni, skipped");
            continue;
        }
        if let Some(row) = measure(tool, clusters, run) {
            rows.push(row);
        }
    }
    print_table(&rows, run);
}

fn measure(tool: Tool, count: usize, run: Duration) -> Option<Row> {
    println!("\n[many_clusters] {tool:?}: starting a 3-member etcd and {count} clusters");
    let etcd = SharedEtcd::start(3);
    let mut clusters: Vec<Member> = Vec::new();
    for k in 0..count {
        match start_cluster(tool, k, &etcd) {
            Some(member) => clusters.push(member),
            None => {
                println!("[many_clusters] {tool:?}: cluster {k} not healthy within {HEALTHY_TIMEOUT:?}; no row");
                return None;
            }
        }
    }
    println!("[many_clusters] {tool:?}: {} clusters healthy; settling", clusters.len());
    // Two cycles and more for the last writes of the start (member keys, status, slots).
    std::thread::sleep(Duration::from_secs(10));
    let started = Instant::now();

    // The idle window: nothing but the agents talks to etcd or to the agents.
    let idle = run / 5;
    let pids = agent_pids(&clusters);
    let cpu_before: Vec<Option<f64>> = pids.iter().map(|&p| procfs::cpu_secs(p)).collect();
    let before = etcd_metrics::received(etcd.members())?;
    std::thread::sleep(idle);
    let after = etcd_metrics::received(etcd.members())?;
    let cpu_after: Vec<Option<f64>> = pids.iter().map(|&p| procfs::cpu_secs(p)).collect();
    let agents = clusters.len() * MEMBERS;
    let idle_per_agent = etcd_metrics::rate_per_agent(&before, &after, agents, idle);
    let cpu_used: Vec<f64> = cpu_before.iter().zip(&cpu_after).filter_map(|(b, a)| Some((*a)? - (*b)?)).collect();
    let cpu_per_minute = (!cpu_used.is_empty())
        .then(|| cpu_used.iter().sum::<f64>() / cpu_used.len() as f64 / idle.as_secs_f64() * 60.0);
    println!(
        "[many_clusters] {tool:?}: idle {:.3} etcd messages per agent per second over {idle:?}",
        idle_per_agent.values().sum::<f64>()
    );

    // The rest: polls, and etcd slowed from 30 % to 60 % of the run.
    let mut watch = Watch::default();
    let mut last_primary: Vec<Option<usize>> = clusters.iter().map(|m| Some(m.start.0)).collect();
    let mut last_timeline: Vec<u64> = clusters.iter().map(|m| m.start.1).collect();
    let mut slowdown: Option<Slowdown> = None;
    let mut slowed_for = Duration::ZERO;
    while started.elapsed() < run {
        let at = started.elapsed();
        let slow_due = at >= run * 3 / 10 && at < run * 6 / 10;
        match (slow_due, slowdown.is_some()) {
            (true, false) => {
                println!("[many_clusters] {tool:?}: etcd slowed at {at:.0?}");
                slowdown = Some(Slowdown::start(etcd.clone()));
            }
            (false, true) => {
                slowed_for = slowdown.take().map(Slowdown::stop).unwrap_or_default();
                println!("[many_clusters] {tool:?}: etcd back to speed at {at:.0?} after {slowed_for:.0?}");
            }
            _ => {}
        }
        let poll_started = Instant::now();
        for (k, member) in clusters.iter().enumerate() {
            let seen = poll(&member.cluster);
            watch.polls += 1;
            match seen.primaries.as_slice() {
                [] => watch.without_primary += 1,
                [one] => {
                    if last_primary[k].is_some_and(|p| p != *one) {
                        watch.leader_changes += 1;
                        println!("[many_clusters] {tool:?}: cluster {k}: node{one} is primary now at {at:.0?}");
                    }
                    last_primary[k] = Some(*one);
                }
                _ => watch.two_primaries += 1,
            }
            if let Some(t) = seen.timeline.filter(|&t| t > last_timeline[k]) {
                println!("[many_clusters] {tool:?}: cluster {k}: timeline {t} at {at:.0?} (was {})", last_timeline[k]);
                last_timeline[k] = t;
            }
        }
        std::thread::sleep(POLL_EVERY.saturating_sub(poll_started.elapsed()));
    }
    if let Some(s) = slowdown.take() {
        slowed_for = s.stop();
    }
    println!("[many_clusters] {tool:?}: etcd was slowed for {slowed_for:.0?} in all");
    watch.timeline_increases = clusters.iter().zip(&last_timeline).map(|(m, t)| t - m.start.1).sum();
    let unhealthy_after = clusters
        .iter()
        .filter(|m| support::health::wait_healthy(&m.cluster, Duration::from_secs(60)).is_none())
        .count();
    let row = Row { tool, clusters: clusters.len(), idle_per_agent, cpu_per_minute, watch, unhealthy_after };
    drop(clusters);
    Some(row)
}

/// Cluster `k` (scope `many<k>`) on `etcd`, run by `tool`, once healthy.
fn start_cluster(tool: Tool, k: usize, etcd: &Arc<SharedEtcd>) -> Option<Member> {
    let options = ClusterOptions {
        scope: format!("many{k}"),
        ttl: TIMING.ttl,
        loop_wait: TIMING.loop_wait,
        retry_timeout: TIMING.retry_timeout,
        start_agents: tool == Tool::Rampart,
        shared_etcd: Some(etcd.clone()),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(MEMBERS, options);
    let patroni: Vec<Patroni> = if tool == Tool::Patroni {
        (0..MEMBERS).map(|i| Patroni::start_node(&cluster, i)).collect()
    } else {
        Vec::new()
    };
    let leader = support::health::wait_healthy(&cluster, HEALTHY_TIMEOUT)?;
    let timeline = support::health::timeline(&cluster, leader)?;
    println!("[many_clusters] {tool:?}: cluster {k} healthy, leader node{leader} on timeline {timeline}");
    Some(Member { patroni, cluster, start: (leader, timeline) })
}

/// The agent processes (`rampart agent` or `patroni`), whose CPU is counted.
fn agent_pids(clusters: &[Member]) -> Vec<u32> {
    clusters
        .iter()
        .flat_map(|m| {
            if m.patroni.is_empty() {
                (0..m.cluster.len()).map(|i| m.cluster.agent(i).pid()).collect::<Vec<_>>()
            } else {
                m.patroni.iter().map(Patroni::pid).collect()
            }
        })
        .collect()
}

/// One look at a cluster through its members' REST APIs.
struct Seen {
    /// Members answering as a running primary.
    primaries: Vec<usize>,
    /// The highest timeline a member reported.
    timeline: Option<u64>,
}

fn poll(c: &Cluster) -> Seen {
    let mut seen = Seen { primaries: Vec::new(), timeline: None };
    for i in 0..c.len() {
        let Ok(r) = c.http_with_timeout(i, "GET", "/patroni", None, POLL_TIMEOUT) else { continue };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&r.body) else { continue };
        if matches!(status["role"].as_str(), Some("primary" | "master")) && status["state"] == "running" {
            seen.primaries.push(i);
        }
        if let Some(t) = status["timeline"].as_u64() {
            seen.timeline = Some(seen.timeline.map_or(t, |s: u64| s.max(t)));
        }
    }
    seen
}

/// etcd slowed: a thread stops every member for [`FROZEN`] of every [`SLOW_PERIOD`] until
/// stopped; the members always run again when it ends, also when the bench panics.
struct Slowdown {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    since: Instant,
}

impl Slowdown {
    fn start(etcd: Arc<SharedEtcd>) -> Slowdown {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Every member runs again when this ends, also if a freeze panics (a member died).
            let _thaw = ThawOnDrop(&etcd);
            while !flag.load(Ordering::Relaxed) {
                etcd.members().iter().for_each(|m| m.freeze());
                std::thread::sleep(FROZEN);
                etcd.members().iter().for_each(|m| m.thaw());
                std::thread::sleep(SLOW_PERIOD.saturating_sub(FROZEN));
            }
        });
        Slowdown { stop, thread: Some(thread), since: Instant::now() }
    }

    /// Ends the slowdown; returns how long it lasted.
    fn stop(mut self) -> Duration {
        self.end();
        self.since.elapsed()
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                println!("[many_clusters] the slowdown ended early: an etcd member could not be stopped (see above)");
            }
        }
    }
}

/// Thaws every member of an etcd when dropped.
struct ThawOnDrop<'a>(&'a SharedEtcd);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        self.0.members().iter().for_each(|m| m.thaw());
    }
}

impl Drop for Slowdown {
    fn drop(&mut self) {
        self.end();
    }
}

fn print_table(rows: &[Row], run: Duration) {
    let methods = etcd_metrics::methods(rows.iter().map(|r| &r.idle_per_agent));
    println!(
        "\n== many clusters on one 3-member etcd at {}, {:?} per tool (etcd slowed from 30 % to 60 %) ==",
        TIMING.label(),
        run
    );
    println!("idle etcd messages per agent (grpc_server_msg_received_total summed over the members), CPU per agent:");
    print!("{:<8} {:>8} {:>10} {:>9} {:>13}", "tool", "agents", "req/s", "per loop", "CPU s/min");
    for m in &methods {
        print!(" {m:>14}");
    }
    println!();
    for r in rows {
        let cpu = r.cpu_per_minute.map_or("-".to_string(), |c| format!("{c:.3}"));
        print!(
            "{:<8} {:>8} {:>10.3} {:>9.3} {:>13}",
            format!("{:?}", r.tool),
            r.clusters * MEMBERS,
            r.idle_total(),
            r.idle_total() * TIMING.loop_wait as f64,
            cpu
        );
        for m in &methods {
            print!(" {:>14.3}", r.idle_per_agent.get(m).copied().unwrap_or(0.0));
        }
        println!();
    }
    println!("\nno failover is due in this run: every promotion is a false one");
    println!(
        "{:<8} {:>9} {:>16} {:>14} {:>16} {:>14} {:>15}",
        "tool", "clusters", "false failovers", "leader moves", "no primary", "two primaries", "unhealthy after"
    );
    for r in rows {
        println!(
            "{:<8} {:>9} {:>16} {:>14} {:>16} {:>14} {:>15}",
            format!("{:?}", r.tool),
            r.clusters,
            r.watch.timeline_increases,
            r.watch.leader_changes,
            format!("{} of {}", r.watch.without_primary, r.watch.polls),
            r.watch.two_primaries,
            r.unhealthy_after
        );
    }
    let of = |tool| rows.iter().find(|r| r.tool == tool).map(Row::idle_total);
    if let (Some(ours), Some(theirs)) = (of(Tool::Rampart), of(Tool::Patroni)) {
        let (ours, theirs) = (ours * TIMING.loop_wait as f64, theirs * TIMING.loop_wait as f64);
        println!(
            "\nRampart {ours:.3} etcd messages per agent per loop against Patroni's {theirs:.3}: {:.2}x \
             (target at most 1x, stretch 0.2x)",
            ours / theirs
        );
    }
}
