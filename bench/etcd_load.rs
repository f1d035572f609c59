//! The etcd load benchmark: `cargo bench --bench etcd_load`, part of `make bench`.
//!
//! How much an idle cluster costs the etcd it shares with other clusters, counted by etcd itself:
//! the sum over its three members of `grpc_server_msg_received_total` (every unary request, and
//! every message on a stream: a lease keep-alive, a watch creation, a progress request), per
//! agent per second, broken down by gRPC method. It PRINTS numbers and asserts nothing.
//!
//! For each timing (ttl/loop_wait/retry_timeout 30/10/10, Patroni's defaults, and 20/2/4, the
//! fastest Patroni accepts) it starts a three-member etcd and three members run by `rampart
//! agent`, waits until one leader and two streaming replicas, lets them settle for two cycles and
//! then counts for the window; then the same with three members run by Patroni 4 (from the venv
//! `scripts/setup.sh` makes, `patroni[etcd3]`) on a fresh etcd of their own. Without the venv the
//! Patroni rows say so.
//!
//! Environment: `RAMPART_BENCH_QUICK=1` counts for 30 s instead of 120 s.
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::etcd_metrics::{self, Counts};
use common::{Timing, HEALTHY_TIMEOUT, PATRONI_DEFAULTS};
use support::cluster::{Cluster, ClusterOptions};
use support::patroni::{patroni_bin, Patroni};

/// The fastest timing Patroni accepts (its ttl floor is 20).
const PATRONI_FASTEST: Timing = Timing { ttl: 20, loop_wait: 2, retry_timeout: 4 };
const MEMBERS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    Rampart,
    Patroni,
}

/// One measured row.
struct Row {
    tool: Tool,
    timing: Timing,
    /// Messages per agent per second, by method.
    per_agent_per_sec: Counts,
    /// Writes to the cluster's keys during the window, by key (member keys counted together).
    writes: BTreeMap<String, usize>,
}

impl Row {
    fn total(&self) -> f64 {
        self.per_agent_per_sec.values().sum()
    }
}

fn main() {
    if !common::bench_requested("etcd_load") {
        return;
    }
    common::print_preamble("etcd load", common::quick());
    let window = if common::quick() { Duration::from_secs(30) } else { Duration::from_secs(120) };
    let mut rows = Vec::new();
    for timing in [PATRONI_DEFAULTS, PATRONI_FASTEST] {
        for tool in [Tool::Rampart, Tool::Patroni] {
            if tool == Tool::Patroni && patroni_bin().is_none() {
                println!("[etcd_load] {tool:?} {}: no /opt/rampart-venv/bin/patroni, skipped", timing.label());
                continue;
            }
            if let Some(row) = measure(tool, timing, window) {
                rows.push(row);
            }
        }
    }
    print_table(&rows, window);
}

/// Starts a cluster run by `tool` on a three-member etcd of its own, and counts.
fn measure(tool: Tool, timing: Timing, window: Duration) -> Option<Row> {
    println!("\n[etcd_load] {tool:?} at {}: starting", timing.label());
    let options = ClusterOptions {
        ttl: timing.ttl,
        loop_wait: timing.loop_wait,
        retry_timeout: timing.retry_timeout,
        etcd_members: 3,
        start_agents: tool == Tool::Rampart,
        ..ClusterOptions::default()
    };
    let c = Cluster::start(MEMBERS, options);
    // Declared after the cluster, so dropped first: Patroni stops before its etcd does.
    let patroni: Vec<Patroni> =
        if tool == Tool::Patroni { (0..MEMBERS).map(|i| Patroni::start_node(&c, i)).collect() } else { Vec::new() };
    if support::health::wait_healthy(&c, HEALTHY_TIMEOUT).is_none() {
        println!("[etcd_load] {tool:?} at {}: no healthy cluster within {HEALTHY_TIMEOUT:?}, no row", timing.label());
        return None;
    }
    // Two cycles for the last writes of the start (member keys, status, slots) to settle.
    std::thread::sleep(Duration::from_secs(2 * timing.loop_wait).max(Duration::from_secs(10)));
    let writes = WriteCounter::start(&c);
    // Its watch is created before counting starts.
    std::thread::sleep(Duration::from_secs(1));
    let before = etcd_metrics::received(c.etcd_members())?;
    std::thread::sleep(window);
    let after = etcd_metrics::received(c.etcd_members())?;
    let writes = writes.finish();
    let per_agent_per_sec = etcd_metrics::rate_per_agent(&before, &after, MEMBERS, window);
    let row = Row { tool, timing, per_agent_per_sec, writes };
    println!("[etcd_load] {tool:?} at {}: {:.3} messages per agent per second", timing.label(), row.total());
    drop(patroni);
    Some(row)
}

/// `etcdctl watch --prefix /` for the window: which keys were written (its own requests go to
/// the first member and are counted there too, as one watch creation).
struct WriteCounter {
    child: std::process::Child,
}

impl WriteCounter {
    fn start(c: &Cluster) -> WriteCounter {
        let etcd = c.etcd_members().next().expect("an etcd member");
        let child = std::process::Command::new(rampart_kit::etcd::etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.endpoint()))
            .args(["watch", "--prefix", "/"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        WriteCounter { child }
    }

    /// Stops the watch (by its PID) and counts what it printed: `PUT`/`DELETE`, the key, the
    /// value, one line each.
    fn finish(mut self) -> BTreeMap<String, usize> {
        let _ = self.child.kill();
        let out = self.child.wait_with_output().map(|o| o.stdout).unwrap_or_default();
        let text = String::from_utf8_lossy(&out);
        let mut lines = text.lines();
        let mut writes = BTreeMap::new();
        while let Some(line) = lines.next() {
            if line == "PUT" || line == "DELETE" {
                let Some(key) = lines.next() else { break };
                let kind = key.split('/').filter(|p| !p.is_empty()).skip(2).collect::<Vec<_>>();
                let kind = match kind.as_slice() {
                    ["members", _] => "members/*".to_string(),
                    other => other.join("/"),
                };
                *writes.entry(format!("{} {kind}", line.to_lowercase())).or_insert(0) += 1;
            }
        }
        writes
    }
}

fn print_table(rows: &[Row], window: Duration) {
    let methods = etcd_metrics::methods(rows.iter().map(|r| &r.per_agent_per_sec));
    println!("\n== etcd requests per agent, idle cluster of {MEMBERS} on a 3-member etcd, counted over {window:?} ==");
    println!("(grpc_server_msg_received_total summed over the etcd members: unary requests and stream messages)");
    print!("{:<8} {:<9} {:>10} {:>10}", "tool", "timing", "req/s", "per cycle");
    for m in &methods {
        print!(" {:>14}", m);
    }
    println!();
    for r in rows {
        let per_cycle = r.total() * r.timing.loop_wait as f64;
        print!("{:<8} {:<9} {:>10.3} {:>10.2}", format!("{:?}", r.tool), r.timing.label(), r.total(), per_cycle);
        for m in &methods {
            print!(" {:>14.3}", r.per_agent_per_sec.get(m).copied().unwrap_or(0.0));
        }
        println!();
    }
    println!("\nwrites to the cluster's keys during the window (all members together):");
    for r in rows {
        let list: Vec<String> = r.writes.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let list = if list.is_empty() { "none".to_string() } else { list.join(", ") };
        println!("  {:<8} {:<9} {list}", format!("{:?}", r.tool), r.timing.label());
    }
    for timing in [PATRONI_DEFAULTS, PATRONI_FASTEST] {
        let of = |tool| rows.iter().find(|r| r.tool == tool && r.timing == timing).map(Row::total);
        if let (Some(ours), Some(theirs)) = (of(Tool::Rampart), of(Tool::Patroni)) {
            println!(
                "{}: Rampart {ours:.3} req/s per agent against Patroni's {theirs:.3} ({:.2}x)",
                timing.label(),
                ours / theirs
            );
        }
    }
}
