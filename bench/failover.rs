//! The failover benchmark: `make bench`, i.e. `cargo bench --bench failover`.
//!
//! It PRINTS numbers and asserts nothing about speed. Everything runs through the e2e harness in
//! `tests/support/` (real etcd, real PostgreSQL 15, real agents on loopback ports, run as the
//! `postgres` OS user when started as root, every process stopped by PID), with the `rampart`
//! binary Cargo built for this bench, i.e. with the bench profile (= release).
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
//!   through etcd's JSON gateway).
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

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::cluster::{Cluster, ClusterOptions};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

/// How often the client inserts a row.
const INSERT_EVERY: Duration = Duration::from_millis(20);
/// An insert attempt (connecting included) that has not finished by then counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the DCS leader key and the writer's log are looked at during a fault.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait for a (re-)bootstrapped or recovered cluster to be healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// Issue targets.
const CLEAN_STOP_TARGET: Duration = Duration::from_secs(2);
const RSS_TARGET_BYTES: f64 = 15e6;
const CPU_TARGET_PCT: f64 = 0.2;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    ttl: u64,
    loop_wait: u64,
    retry_timeout: u64,
}

impl Timing {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.ttl, self.loop_wait, self.retry_timeout)
    }
}

const FAST: Timing = Timing { ttl: 10, loop_wait: 1, retry_timeout: 3 };
const PATRONI_DEFAULTS: Timing = Timing { ttl: 30, loop_wait: 10, retry_timeout: 10 };

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
        if support::env_flag("RAMPART_BENCH_QUICK") {
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
// The writing client.

/// One insert attempt: when it finished and either the port of the server that took the row
/// (`inet_server_port()`) or the error.
#[derive(Clone, Debug)]
struct Attempt {
    at: Instant,
    result: Result<u16, String>,
}

/// A task inserting a row every [`INSERT_EVERY`] through a multi-host, read-write connection.
struct Writer {
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// `host=127.0.0.1,... port=p1,... target_session_attrs=read-write ...`
fn multi_host_conninfo(ports: &[u16]) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    format!(
        "host={hosts} port={ports} user={} password={} dbname=postgres target_session_attrs=read-write \
         connect_timeout=2 application_name=rampart-bench",
        support::SUPERUSER,
        support::SUPERUSER_PASSWORD
    )
}

impl Writer {
    fn start(rt: &Runtime, ports: &[u16]) -> Writer {
        let conninfo = multi_host_conninfo(ports);
        let config: tokio_postgres::Config = conninfo.parse().expect("multi-host connection string");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(write_loop(config, log.clone(), stop.clone()));
        Writer { log, stop, task }
    }

    fn attempts_since(&self, since: Instant) -> Vec<Attempt> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let start = log.partition_point(|a| a.at < since);
        log[start..].to_vec()
    }

    /// When the last successful insert finished and on which server port.
    fn last_success(&self) -> Option<(Instant, u16)> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().rev().find_map(|a| a.result.as_ref().ok().map(|p| (a.at, *p)))
    }

    /// Whether an insert finished after `since` on a server other than `port`.
    fn succeeded_elsewhere_since(&self, since: Instant, port: u16) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().rev().take_while(|a| a.at > since).any(|a| matches!(a.result, Ok(p) if p != port))
    }

    fn stop(self, rt: &Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task;
        if rt.block_on(async { tokio::time::timeout(ATTEMPT_TIMEOUT * 2, task).await }).is_err() {
            eprintln!("[bench] the writer did not stop in time");
        }
    }
}

async fn write_loop(config: tokio_postgres::Config, log: Arc<Mutex<Vec<Attempt>>>, stop: Arc<AtomicBool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(INSERT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, insert_one(&mut client, &config)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        if result.is_err() {
            // Reconnect with the same multi-host string next time.
            client = None;
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(Attempt { at: Instant::now(), result });
    }
}

async fn insert_one(
    client: &mut Option<tokio_postgres::Client>,
    config: &tokio_postgres::Config,
) -> Result<u16, String> {
    let db = match client {
        Some(db) => db,
        None => {
            let (db, connection) = config.connect(NoTls).await.map_err(|e| format!("connect: {}", chain(&e)))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client.insert(db)
        }
    };
    let row = db
        .query_one("INSERT INTO bench_writes DEFAULT VALUES RETURNING inet_server_port()", &[])
        .await
        .map_err(|e| format!("insert: {}", chain(&e)))?;
    let port: i32 = row.get(0);
    u16::try_from(port).map_err(|_| format!("odd server port {port}"))
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Observing the cluster.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The value of the DCS leader key, read through etcd's JSON gateway (`POST /v3/kv/range`): a
/// millisecond HTTP request rather than an `etcdctl` process per poll.
fn dcs_leader(c: &Cluster) -> Option<String> {
    let key = format!("{}leader", c.dcs_prefix());
    let body = format!("{{\"key\":\"{}\"}}", base64_encode(key.as_bytes()));
    let response = support::client::http_request_with_timeout(
        c.etcd().client_port(),
        "POST",
        "/v3/kv/range",
        Some(&body),
        Duration::from_secs(1),
    )
    .ok()?;
    let json = response.json()?;
    let value = json["kvs"].get(0)?["value"].as_str()?;
    let name = String::from_utf8(base64_decode(value)?).ok()?;
    (!name.is_empty()).then_some(name)
}

fn dcs_leader_index(c: &Cluster) -> Option<usize> {
    dcs_leader(c).and_then(|n| c.index_of(&n))
}

/// `pg_is_in_recovery()` and the WAL receiver's status of the server on `port`, by SQL.
async fn pg_role(port: u16) -> Option<(bool, Option<String>)> {
    let db = support::connect_superuser(port).await.ok()?;
    let row = db
        .query_one("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1)", &[])
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

/// The leader's index if the DCS names a leader whose PostgreSQL is read-write and every other
/// node's PostgreSQL is in recovery with a streaming WAL receiver.
fn healthy_by_sql(rt: &Runtime, c: &Cluster) -> Option<usize> {
    let leader = dcs_leader_index(c)?;
    rt.block_on(async {
        for i in 0..c.len() {
            let (in_recovery, receiver) = pg_role(c.pg_port(i)).await?;
            let ok = if i == leader { !in_recovery } else { in_recovery && receiver.as_deref() == Some("streaming") };
            if !ok {
                return None;
            }
        }
        Some(leader)
    })
}

/// Waits until the cluster is healthy by SQL and by the agents' REST APIs (the harness'
/// definition: leader answers `/primary` 200, the others report streaming); returns the leader.
fn wait_healthy(rt: &Runtime, c: &Cluster, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let sql = support::wait_until(timeout, Duration::from_millis(100), || healthy_by_sql(rt, c).is_some());
    if !sql {
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    support::health::wait_healthy(c, left)
}

// ---------------------------------------------------------------------------------------------
// /proc.

/// `key:` of `/proc/<pid>/status` in kB, e.g. `VmRSS`.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// (utime + stime, cutime + cstime) of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14 to 17.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some((field(14)? + field(15)?, field(16)? + field(17)?))
}

fn clock_ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
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

struct Bootstrap {
    timing: Timing,
    by_sql: Option<Duration>,
    by_api: Option<Duration>,
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
    bootstraps: Vec<Bootstrap>,
    faults: Vec<FaultSeries>,
    idle: Option<Idle>,
}

// ---------------------------------------------------------------------------------------------
// The measurements.

/// Starts etcd and writes the configs, then times the three agents from their start to a healthy
/// cluster.
fn bootstrap(rt: &Runtime, timing: Timing) -> (Cluster, Bootstrap) {
    let mut c = Cluster::start(
        3,
        ClusterOptions {
            ttl: timing.ttl,
            loop_wait: timing.loop_wait,
            retry_timeout: timing.retry_timeout,
            start_agents: false,
            ..ClusterOptions::default()
        },
    );
    let t0 = Instant::now();
    for i in 0..c.len() {
        c.start_agent(i);
    }
    let sql_ok = support::wait_until(HEALTHY_TIMEOUT, Duration::from_millis(50), || healthy_by_sql(rt, &c).is_some());
    let by_sql = sql_ok.then(|| t0.elapsed());
    let by_api = if sql_ok {
        support::wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
            support::health::wait_healthy(&c, Duration::ZERO).is_some()
        })
        .then(|| t0.elapsed())
    } else {
        None
    };
    (c, Bootstrap { timing, by_sql, by_api })
}

/// Footprint of each agent over `period` while nothing but the agents' own loops runs.
fn measure_idle(c: &Cluster, timing: Timing, period: Duration) -> Idle {
    let tck = clock_ticks_per_sec();
    let pids: Vec<u32> = (0..c.len()).map(|i| c.agent(i).pid()).collect();
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(period);
    let elapsed = t0.elapsed().as_secs_f64();
    let agents = pids
        .iter()
        .zip(before)
        .enumerate()
        .map(|(i, (&pid, before))| {
            let after = cpu_ticks(pid);
            let (own, children) = match (before, after) {
                (Some(b), Some(a)) => (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)),
                _ => (0, 0),
            };
            AgentFootprint {
                name: c.name(i).to_owned(),
                rss_kb: proc_status_kb(pid, "VmRSS").unwrap_or(0),
                hwm_kb: proc_status_kb(pid, "VmHWM").unwrap_or(0),
                cpu_pct: own as f64 / tck / elapsed * 100.0,
                children_cpu_pct: children as f64 / tck / elapsed * 100.0,
            }
        })
        .collect();
    Idle { timing, period: t0.elapsed(), agents }
}

/// SIGKILLs the agent and the postmaster of node `i` back to back, then reaps the agent.
fn crash(c: &mut Cluster, i: usize) {
    let agent_pid = c.agent(i).pid();
    let postmaster = c.agent(i).postmaster_pid().filter(|&p| support::process::is_alive(p));
    support::process::signal(agent_pid, Signal::SIGKILL);
    if let Some(pm) = postmaster {
        support::process::signal(pm, Signal::SIGKILL);
    }
    c.kill_agent(i);
    if let Some(pm) = postmaster {
        support::process::wait_gone(pm, Duration::from_secs(5));
    }
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Up to `max_lines` lines of `path` from byte `from` on.
fn log_from(path: &std::path::Path, from: u64, max_lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines.iter().take(max_lines).copied().collect::<Vec<_>>().join("\n");
    if lines.len() > max_lines {
        out.push_str(&format!("\n... ({} more lines)", lines.len() - max_lines));
    }
    out
}

/// What the writer saw around a fault at `fault`, on a leader serving on `old_port`:
/// (window, failed attempts, the errors by message).
fn analyse(attempts: &[Attempt], fault: Instant, old_port: u16) -> (Option<Duration>, usize, BTreeMap<String, usize>) {
    let mut errors = BTreeMap::new();
    let first_new = attempts.iter().position(|a| a.at > fault && matches!(a.result, Ok(p) if p != old_port));
    let last_before =
        attempts.iter().take(first_new.unwrap_or(attempts.len())).rposition(|a| a.at <= fault && a.result.is_ok());
    let Some(last_before) = last_before else { return (None, 0, errors) };
    let end = first_new.unwrap_or(attempts.len().saturating_sub(1));
    let mut previous = attempts[last_before].at;
    let mut worst = Duration::ZERO;
    let mut failed = 0;
    for a in attempts.iter().take(end + 1).skip(last_before + 1) {
        match &a.result {
            Ok(_) => {
                worst = worst.max(a.at - previous);
                previous = a.at;
            }
            Err(e) => {
                failed += 1;
                let short: String = e.chars().take(110).collect();
                *errors.entry(short).or_insert(0) += 1;
            }
        }
    }
    (first_new.map(|_| worst), failed, errors)
}

/// Runs one fault against the current leader `old` and watches until the DCS names another node
/// and the client wrote on another node (or the observation limit passed).
fn run_fault(c: &mut Cluster, w: &Writer, old: usize, fault: Fault, timing: Timing, run: &str) -> Sample {
    let old_name = c.name(old).to_owned();
    let old_port = c.pg_port(old);
    // The client must be writing to this leader right now.
    let writing = support::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        w.last_success().is_some_and(|(at, port)| port == old_port && at.elapsed() < Duration::from_millis(200))
    });
    if !writing {
        println!("[bench] {run}: the client is not writing to the leader {old_name}; skipped");
        return Sample { window: None, failed: 0, dcs_leader: None, at: Instant::now() };
    }
    std::thread::sleep(Duration::from_secs(1));
    let log_marks: Vec<u64> = (0..c.len()).map(|i| log_len(c.log_path(i))).collect();

    let t0 = Instant::now();
    match fault {
        Fault::Crash => crash(c, old),
        Fault::CleanStop => c.agent(old).sigterm(),
    }
    let limit = Duration::from_secs(timing.ttl + 60);
    let mut dcs_at = None;
    let mut new_name = None;
    let mut resumed = false;
    while t0.elapsed() < limit && (dcs_at.is_none() || !resumed) {
        if dcs_at.is_none() {
            if let Some(l) = dcs_leader(c).filter(|l| *l != old_name) {
                dcs_at = Some(t0.elapsed());
                new_name = Some(l);
            }
        }
        resumed = resumed || w.succeeded_elsewhere_since(t0, old_port);
        std::thread::sleep(POLL);
    }
    // A few more attempts, so that the log holds the first success for sure.
    std::thread::sleep(Duration::from_millis(300));
    let (window, failed, errors) = analyse(&w.attempts_since(t0 - Duration::from_secs(10)), t0, old_port);

    let secs = |d: Option<Duration>| d.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| "none".into());
    println!(
        "[bench] {run}: {old_name} -> {}: window {}, {failed} failed insert attempts, DCS names new leader after {}",
        new_name.as_deref().unwrap_or("?"),
        secs(window),
        secs(dcs_at),
    );
    for (e, n) in &errors {
        println!("[bench]     {n:>5} x {e}");
    }
    let target = fault.target(timing);
    if window.is_none_or(|w| w > target) {
        println!("[bench]   target {} missed; agent log lines written since the fault:", secs(Some(target)));
        for (i, mark) in log_marks.iter().enumerate() {
            println!("[bench]   ----- {} ({}) -----", c.name(i), c.log_path(i).display());
            println!("{}", log_from(c.log_path(i), *mark, 40));
        }
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
    match wait_healthy(rt, c, HEALTHY_TIMEOUT) {
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
    let (mut c, boot) = bootstrap(rt, timing);
    let fmt = |d: Option<Duration>| d.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| "never".into());
    println!(
        "[bench] bootstrap: leader + 2 streaming replicas after {} by SQL, {} by the agents' REST APIs",
        fmt(boot.by_sql),
        fmt(boot.by_api)
    );
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

    let Some(leader) = wait_healthy(rt, &c, HEALTHY_TIMEOUT) else {
        println!("[bench] the cluster is not healthy; logs on stderr");
        c.dump_logs();
        res.faults.extend(series);
        return;
    };
    let created = rt.block_on(async {
        let db = support::connect_superuser(c.pg_port(leader)).await?;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_writes \
             (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
    });
    if let Err(e) = created {
        println!("[bench] creating the table on the leader failed: {e}");
        res.faults.extend(series);
        return;
    }
    let ports: Vec<u16> = (0..c.len()).map(|i| c.pg_port(i)).collect();
    println!("[bench] client: one INSERT every {INSERT_EVERY:?} through `{}`", multi_host_conninfo(&ports));
    let writer = Writer::start(rt, &ports);

    'series: for s in &mut series {
        for k in 1..=s.planned {
            let Some(leader) = wait_healthy(rt, &c, HEALTHY_TIMEOUT) else {
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
                kb_to_mb(proc_status_kb(pid, "VmRSS").unwrap_or(0)),
                kb_to_mb(proc_status_kb(pid, "VmHWM").unwrap_or(0))
            )
        })
        .collect();
    println!("[bench] agents at the end (some restarted by the runs): {}", footprint.join("; "));
    res.faults.extend(series);
}

// ---------------------------------------------------------------------------------------------
// The table.

fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

/// (min, median, max) of `values`.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some((v[0], median, v[n - 1]))
}

#[derive(Clone, Copy)]
enum Unit {
    Secs,
    Count,
    Mb,
    Pct,
}

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Secs => format!("{v:.2} s"),
        Unit::Count => format!("{v:.0}"),
        Unit::Mb => format!("{v:.1} MB"),
        Unit::Pct => format!("{v:.3} %"),
    }
}

/// One line of the table: min/median/max of `values` against `target` (an upper bound).
/// `missing` counts runs that produced no value (e.g. writes never resumed), which misses any target.
struct Row {
    what: String,
    values: Vec<f64>,
    missing: usize,
    unit: Unit,
    /// (bound, inclusive, printed form)
    target: Option<(f64, bool, String)>,
}

impl Row {
    /// The line, with the measurement's name padded to `width`.
    fn render(&self, width: usize) -> String {
        let n = self.values.len() + self.missing;
        let numbers = match spread(&self.values) {
            Some((lo, mid, hi)) => {
                format!("{} / {} / {}", fmt_value(lo, self.unit), fmt_value(mid, self.unit), fmt_value(hi, self.unit))
            }
            None => "no value".to_string(),
        };
        let missing = if self.missing > 0 { format!(" ({} without a value)", self.missing) } else { String::new() };
        let (target, verdict) = match &self.target {
            None => ("-".to_string(), "-".to_string()),
            Some((bound, inclusive, text)) => {
                let met = self.missing == 0
                    && !self.values.is_empty()
                    && self.values.iter().all(|&v| if *inclusive { v <= *bound } else { v < *bound });
                (text.clone(), if met { "OK" } else { "MISSED" }.to_string())
            }
        };
        format!("{:<width$}  {:>2}  {:<34} {:<10} {}", self.what, n, format!("{numbers}{missing}"), target, verdict)
    }
}

fn table(res: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in &res.faults {
        let t = s.timing.label();
        let target = s.fault.target(s.timing).as_secs_f64();
        let windows: Vec<f64> = s.samples.iter().filter_map(|x| x.window).map(|d| d.as_secs_f64()).collect();
        let not_run = s.planned - s.samples.len();
        rows.push(Row {
            what: format!("{} ({t}): write-unavailability window", s.fault.label()),
            values: windows,
            missing: s.samples.iter().filter(|x| x.window.is_none()).count() + not_run,
            unit: Unit::Secs,
            target: Some((target, true, format!("<= {target:.0} s"))),
        });
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
    if !std::env::args().skip(1).any(|a| a == "--bench") {
        println!("bench/failover: run it with `cargo bench --bench failover` or `make bench`; nothing to do here.");
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    let bin = support::rampart_bin();
    let optimised = !cfg!(debug_assertions) && bin.components().any(|c| c.as_os_str() == "release");
    println!("[bench] Rampart failover benchmark ({} mode)", if plan.quick { "quick" } else { "full" });
    println!(
        "[bench] agent binary: {} ({})",
        bin.display(),
        if optimised {
            "bench profile = release: optimised, no debug assertions"
        } else {
            "WARNING: not a release build; the numbers do not describe the product"
        }
    );
    println!(
        "[bench] {} CPUs; runs: crash x{} + clean stop x{} at {}, crash x{} + clean stop x{} at {}, idle {} s",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        plan.fast_crash,
        plan.fast_clean,
        FAST.label(),
        plan.slow_crash,
        plan.slow_clean,
        PATRONI_DEFAULTS.label(),
        plan.idle.as_secs()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let mut res = Results::default();
    suite(&rt, FAST, plan.fast_crash, plan.fast_clean, None, &mut res);
    suite(&rt, PATRONI_DEFAULTS, plan.slow_crash, plan.slow_clean, Some((plan.settle, plan.idle)), &mut res);

    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    println!("timings are ttl/loop_wait/retry_timeout; values are min / median / max over the runs (or agents)");
    let rows = table(&res);
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    println!("{:<width$}  {:>2}  {:<34} {:<10} result", "measurement", "n", "min / median / max", "target");
    for row in &rows {
        println!("{}", row.render(width));
    }
}
