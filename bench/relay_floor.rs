//! What relaying costs the relay itself, user and system time apart: `cargo bench --bench
//! relay_floor`. It PRINTS numbers and asserts nothing.
//!
//! Why: issue 16 asks rampart's machine CPU per transaction to be at most PgBouncer's. The
//! kernel's part of relaying (the same `recvfrom`, `sendto` and `epoll_wait` calls, the same TCP
//! segments) is alike for both, so what can tell them apart is the relay's user-space time per
//! message. This bench puts beside PgBouncer and rampart in transaction mode the least a tokio
//! relay does (`tokio-floor`): one current-thread runtime, two tasks per client (one per
//! direction), each reading into its own buffer and writing all of it on, with nothing parsed,
//! pooled or tracked ([`floor`]). Its user time is what tokio's readiness, wake-up and task
//! machinery costs before any protocol work; what rampart costs above it is its own.
//!
//! Set-up: the e2e harness' three-node cluster (PostgreSQL tuned as in bench/proxy.rs), `pgbench
//! -i -s 16` on the primary, then PgBouncer (Debian's, transaction mode, 20 server connections,
//! SCRAM against an `auth_file`), `rampart proxy` set up alike, and the floor relay (this bench's
//! own binary started again with `--floor-relay`), all in front of the primary. Every round runs
//! each workload through the three in turn: pgbench `-S -c 16 -j 2` and the TPC-B-like script
//! `-c 16 -j 2`, each at a fixed rate (`-R`, the same load on every relay, below what any of them
//! can take on two cores) and unthrottled (where a relay's own time per message decides how fast
//! the single-threaded ones go). Per run it reads the relay process' user and system CPU time
//! (`/proc/<pid>/stat`, clock ticks) and the whole machine's busy time, per transaction. The
//! floor relay gives each client its own backend and lets PostgreSQL authenticate it; with 16
//! clients on pools of 20 the poolers do the same after their first transactions.
//!
//! Environment: `RAMPART_BENCH_SECS` (default 10), `RAMPART_BENCH_ROUNDS` (default 3);
//! `RAMPART_BENCH_QUICK=1` makes them 4 s and 1 round. With the defaults about 8 minutes.

#[path = "common/mod.rs"]
mod common;
#[path = "proxy/pgbench.rs"]
#[allow(dead_code)]
mod pgbench;
#[path = "proxy/pgbouncer.rs"]
mod pgbouncer;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{median, procfs, FAST};
use pgbench::SCALE;
use pgbouncer::PgBouncer;
use support::process::LoggedChild;
use support::proxy::Proxy;

/// The argument that makes this binary the floor relay: `--floor-relay <port> <upstream port>`.
const FLOOR_ARG: &str = "--floor-relay";
/// Server connections per pool, as in bench/proxy.rs.
const POOL_SIZE: usize = 20;

/// One workload: pgbench options besides connection, duration and database.
struct Workload {
    name: &'static str,
    args: &'static [&'static str],
}

const WORKLOADS: [Workload; 4] = [
    Workload { name: "select-only at 8,000 tps", args: &["-S", "-c", "16", "-j", "2", "-R", "8000"] },
    Workload { name: "TPC-B-like at 1,200 tps", args: &["-c", "16", "-j", "2", "-R", "1200"] },
    Workload { name: "select-only unthrottled", args: &["-S", "-c", "16", "-j", "2"] },
    Workload { name: "TPC-B-like unthrottled", args: &["-c", "16", "-j", "2"] },
];

/// One relay under measurement.
struct Relay {
    name: &'static str,
    port: u16,
    pid: u32,
}

/// One run's figures, per transaction in microseconds.
#[derive(Clone, Copy)]
struct Costs {
    tps: f64,
    user: f64,
    system: f64,
    machine: f64,
}

/// The least a tokio relay does: two tasks per client, bytes read and written on, nothing parsed.
mod floor {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Copies one direction until either side ends.
    async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    }

    async fn relay(client: TcpStream, upstream: u16) {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let up = tokio::spawn(pump(cr, sw));
        pump(sr, cw).await;
        up.abort();
    }

    /// Serves `127.0.0.1:port` until killed.
    pub fn serve(port: u16, upstream: u16) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            loop {
                let (client, _) = listener.accept().await?;
                tokio::spawn(relay(client, upstream));
            }
        })
    }
}

/// `(user, system)` clock ticks of `pid`.
fn ticks(pid: u32) -> Option<(u64, u64)> {
    procfs::times_ticks(pid).map(|[user, system, ..]| (user, system))
}

/// Runs `w` through `r` for `secs`; prints and returns its figures.
fn measure(dir: &std::path::Path, w: &Workload, r: &Relay, secs: u64, tag: &str) -> Option<Costs> {
    let before = (ticks(r.pid), procfs::machine_cpu_ticks());
    let args: Vec<String> = w.args.iter().map(|a| a.to_string()).collect();
    let outcome = pgbench::run_for(r.port, args, secs, dir, tag);
    let after = (ticks(r.pid), procfs::machine_cpu_ticks());
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            println!("[bench]   {:<26} {:<14} FAILED: {e}", w.name, r.name);
            return None;
        }
    };
    let n = o.transactions.filter(|&n| n > 0)? as f64;
    let us = |ticks: u64| ticks as f64 / procfs::clock_ticks_per_sec() * 1e6 / n;
    let ((Some((u0, s0)), Some((m0, _))), (Some((u1, s1)), Some((m1, _)))) = (before, after) else { return None };
    let c = Costs { tps: o.tps, user: us(u1 - u0), system: us(s1 - s0), machine: us(m1 - m0) };
    println!(
        "[bench]   {:<26} {:<14} {:>9.1} tps; relay user {:>5.2} + system {:>6.2} us/tx; machine {:>6.1} us/tx",
        w.name, r.name, c.tps, c.user, c.system, c.machine
    );
    Some(c)
}

/// Median of one figure over the runs.
fn med(runs: &[Costs], f: impl Fn(&Costs) -> f64) -> Option<f64> {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

fn print_results(relays: &[Relay], runs: &[Vec<Vec<Costs>>]) {
    println!(
        "{:<26} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload", "relay", "TPS", "user", "system", "relay", "machine"
    );
    println!("{:<26} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}", "", "", "", "us/tx", "us/tx", "us/tx", "us/tx");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        for (r, relay) in relays.iter().enumerate() {
            let rs = &runs[w][r];
            let cell = |v: Option<f64>, p: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.p$}"));
            println!(
                "{:<26} {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
                workload.name,
                relay.name,
                cell(med(rs, |c| c.tps), 0),
                cell(med(rs, |c| c.user), 2),
                cell(med(rs, |c| c.system), 2),
                cell(med(rs, |c| c.user + c.system), 2),
                cell(med(rs, |c| c.machine), 1),
            );
        }
    }
    println!("\nUser time per transaction over PgBouncer's (median):");
    for (w, workload) in WORKLOADS.iter().enumerate() {
        let user = |r: usize| med(&runs[w][r], |c| c.user);
        let over = |r: usize| match (user(r), user(0)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!("  {:<26} {}: {}, {}: {}", workload.name, relays[1].name, over(1), relays[2].name, over(2));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == FLOOR_ARG) {
        let port = |i: usize| args.get(at + i).and_then(|p| p.parse::<u16>().ok());
        let (Some(port), Some(upstream)) = (port(1), port(2)) else {
            eprintln!("usage: {FLOOR_ARG} <port> <upstream port>");
            std::process::exit(2);
        };
        if let Err(e) = floor::serve(port, upstream) {
            eprintln!("floor relay on port {port}: {e}");
            std::process::exit(1);
        }
        return;
    }
    if !common::bench_requested("relay_floor") {
        return;
    }
    let quick = common::quick();
    let secs = common::env_number("RAMPART_BENCH_SECS", if quick { 4 } else { 10 });
    let rounds = common::env_number("RAMPART_BENCH_ROUNDS", if quick { 1 } else { 3 }) as usize;
    common::print_preamble("relay floor", quick);
    println!(
        "[bench] {} CPUs; {rounds} round(s) of {} workloads x (pgbouncer-txn, rampart-txn, tokio-floor), {secs} s each",
        common::cpus(),
        WORKLOADS.len()
    );
    let rt = common::runtime();
    let Some((c, healthy)) = common::healthy_cluster(&rt, FAST, &pgbench::pg_parameters("200")) else { return };
    let primary_port = c.pg_port(healthy.leader);
    if !pgbench::prepare(&rt, primary_port, SCALE, c.dir()) {
        return;
    }
    let auth_file = c.dir().join("userlist.txt");
    if let Err(e) = common::write_auth_file(&auth_file) {
        println!("[bench] {e}; stopping");
        return;
    }
    let version = match pgbouncer::version() {
        Ok(v) => v,
        Err(e) => {
            println!("[bench] {e}; stopping");
            return;
        }
    };
    let settings = pgbouncer::Settings {
        name: "pgbouncer-txn",
        pool_mode: "transaction",
        pool_size: POOL_SIZE,
        max_client_conn: 1000,
        auth_file: &auth_file,
        prepared: pgbouncer::supports_prepared(&version),
        nofile: 4096,
    };
    // Declared after the cluster: stopped (by PID) before it.
    let bouncer = match PgBouncer::start(c.dir(), &settings, primary_port) {
        Ok(b) => b,
        Err(e) => {
            println!("[bench] starting PgBouncer: {e}; stopping");
            return;
        }
    };
    let rampart = Proxy::start_named(
        &c,
        "proxy-txn",
        &format!(
            "  pool_mode: transaction\n  default_pool_size: {POOL_SIZE}\n  auth_type: scram-sha-256\n  auth_file: {}\n",
            auth_file.display()
        ),
    );
    let floor_port = support::free_port();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            println!("[bench] this bench's own path: {e}; stopping");
            return;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args([FLOOR_ARG, &floor_port.to_string(), &primary_port.to_string()]);
    let mut floor = LoggedChild::spawn("tokio-floor", cmd, &c.dir().join("tokio-floor.log"));
    if !floor.wait_listening(floor_port, Duration::from_secs(10)) {
        println!("[bench] the floor relay does not listen on {floor_port}; stopping");
        return;
    }
    let relays: Vec<Relay> = [
        ("pgbouncer-txn", bouncer.port, bouncer.pid()),
        ("rampart-txn", rampart.rw_port, rampart.pid()),
        ("tokio-floor", floor_port, floor.pid()),
    ]
    .into_iter()
    .filter_map(|(name, port, pid)| Some(Relay { name, port, pid: pid? }))
    .collect();
    if relays.len() < 3 {
        println!("[bench] a relay is not running; stopping");
        return;
    }
    for r in &relays {
        pgbench::warm_up(r.name, r.port, pgbench::WARM_UP_SECS, c.dir());
    }
    let mut runs: Vec<Vec<Vec<Costs>>> = (0..WORKLOADS.len()).map(|_| vec![Vec::new(); relays.len()]).collect();
    for round in 1..=rounds {
        println!("\n[bench] ===== round {round}/{rounds} =====");
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for (r, relay) in relays.iter().enumerate() {
                let tag = format!("floor-r{round}-w{w}-{}", relay.name);
                if let Some(costs) = measure(c.dir(), workload, relay, secs, &tag) {
                    runs[w][r].push(costs);
                }
            }
        }
    }
    println!("\n[bench] ===== results: medians over {rounds} round(s) of {secs} s =====");
    print_results(&relays, &runs);
    drop(floor);
    drop(rampart);
    drop(bouncer);
}
