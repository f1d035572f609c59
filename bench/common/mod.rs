//! What the benchmarks under `bench/` share: the timings, the writing client and what is computed
//! from its log, the cluster health waits, the crash of a node, the agents' log excerpts, the
//! results table, the preamble every bench prints, and `/proc` readings ([`procfs`]).
//!
//! Each bench target is its own crate and includes this file with
//! `#[path = "common/mod.rs"] mod common;` next to `#[path = "../tests/support/mod.rs"] mod support;`
//! (this module reaches the harness as `crate::support`). Not every bench uses every item, hence
//! the module-wide `allow` below.

#![allow(dead_code)]

pub mod etcd_metrics;
pub mod procfs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

use crate::support;
use crate::support::cluster::{Cluster, ClusterOptions};

/// How often the client inserts a row.
pub const INSERT_EVERY: Duration = Duration::from_millis(20);
/// An insert attempt (connecting included) that has not finished by then counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the DCS leader key and the writer's log are looked at during a run.
pub const POLL: Duration = Duration::from_millis(20);
/// Longest wait for a (re-)bootstrapped or recovered cluster to be healthy.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// How many lines of each agent's log are printed when a run misses its target.
pub const LOG_LINES_ON_MISS: usize = 40;

/// `RAMPART_BENCH_QUICK=1`: each bench does the least that still prints every number.
pub fn quick() -> bool {
    support::env_flag("RAMPART_BENCH_QUICK")
}

/// The path in the environment variable `name` (a program the bench runs), else `default`.
pub fn env_path(name: &str, default: &str) -> std::path::PathBuf {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from).unwrap_or_else(|| default.into())
}

/// The positive whole number in the environment variable `name`, else `default` (with a note
/// when it is set to something else).
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            println!("[bench] ignoring {name}={v:?}: not a positive whole number");
            default
        }),
        _ => default,
    }
}

// ---------------------------------------------------------------------------------------------
// Timings.

pub use crate::support::timing::Timing;

/// ttl/loop_wait/retry_timeout 10/1/3.
pub const FAST: Timing = Timing { ttl: 10, loop_wait: 1, retry_timeout: 3 };
/// ttl/loop_wait/retry_timeout 30/10/10, Patroni's defaults.
pub const PATRONI_DEFAULTS: Timing = Timing { ttl: 30, loop_wait: 10, retry_timeout: 10 };

// ---------------------------------------------------------------------------------------------
// The preamble.

/// Whether the bench was started by `cargo bench` (which passes `--bench`); under
/// `cargo test --benches` it prints a note naming how to run bench `name` and returns false.
pub fn bench_requested(name: &str) -> bool {
    if std::env::args().skip(1).any(|a| a == "--bench") {
        return true;
    }
    println!("bench/{name}: run it with `cargo bench --bench {name}` or `make bench`; nothing to do here.");
    false
}

/// The first lines of a bench: its name and mode, and which agent binary it measures (with a
/// warning when that is not a release build).
pub fn print_preamble(what: &str, quick: bool) {
    let bin = support::rampart_bin();
    let optimised = !cfg!(debug_assertions) && bin.components().any(|c| c.as_os_str() == "release");
    println!("[bench] Rampart {what} benchmark ({} mode)", if quick { "quick" } else { "full" });
    println!(
        "[bench] agent binary: {} ({})",
        bin.display(),
        if optimised {
            "bench profile = release: optimised, no debug assertions"
        } else {
            "WARNING: not a release build; the numbers do not describe the product"
        }
    );
}

/// Number of CPUs, for the run-plan line.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

/// The runtime the client and the SQL probes run on.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// `1.23 s`, or `missing` for `None`.
pub fn fmt_secs(d: Option<Duration>, missing: &str) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| missing.into())
}

// ---------------------------------------------------------------------------------------------
// The pgbench benches' set-up (bench/proxy.rs, bench/rw_split.rs).

/// Writes the poolers' userlist (PgBouncer's format, which `proxy.auth_file` reads too): the
/// harness superuser and its password, readable by the PostgreSQL OS user the poolers run as.
pub fn write_auth_file(path: &std::path::Path) -> Result<(), String> {
    let line = format!("\"{}\" \"{}\"\n", support::SUPERUSER, support::SUPERUSER_PASSWORD);
    std::fs::write(path, line).map_err(|e| format!("writing {}: {e}", path.display()))?;
    support::process::chown_to_agent_user(path).map_err(|e| format!("chown {}: {e}", path.display()))
}

/// `SHOW <name>` on the server on `port`.
pub fn show(rt: &Runtime, port: u16, name: &str) -> Result<String, String> {
    rt.block_on(async {
        let db = support::connect_superuser(port).await.map_err(|e| format!("connect: {e}"))?;
        let row = db.query_one(&format!("SHOW {name}"), &[]).await.map_err(|e| format!("SHOW {name}: {e}"))?;
        Ok(row.get(0))
    })
}

/// Prints `SHOW <name>` on the server on `port` for each of `names`.
pub fn print_settings(rt: &Runtime, port: u16, names: &[&str]) {
    for name in names {
        let value = show(rt, port, name).unwrap_or_else(|e| format!("? ({e})"));
        println!("[bench]   {name} = {value}");
    }
}

/// Prints a warning when the DCS leader is no longer node `leader` of `c`: `consequence` says
/// what that may have done to the runs.
pub fn warn_if_leader_moved(c: &Cluster, leader: usize, consequence: &str) {
    let leader_now = c.dcs().leader();
    if leader_now.as_deref() != Some(c.name(leader)) {
        println!("[bench] WARNING: the DCS leader is now {leader_now:?}, not {}: {consequence}", c.name(leader));
    }
}

/// After the tables are loaded: a CHECKPOINT on the primary, then waits (at most `limit`) until
/// every replica has replayed up to the primary's WAL position, so that replaying the load and
/// writing it out do not compete with the first measured runs. Returns how long it took.
pub fn settle(rt: &Runtime, primary_port: u16, limit: Duration) -> Result<Duration, String> {
    rt.block_on(async {
        let t0 = std::time::Instant::now();
        let db = support::connect_superuser(primary_port).await.map_err(|e| format!("connect: {e}"))?;
        db.batch_execute("CHECKPOINT").await.map_err(|e| format!("CHECKPOINT: {e}"))?;
        let lsn: String = db
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| format!("pg_current_wal_lsn: {e}"))?
            .get(0);
        let behind = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn IS NULL OR replay_lsn < '{lsn}'::pg_lsn"
        );
        loop {
            let n: i64 = db.query_one(&behind, &[]).await.map_err(|e| format!("pg_stat_replication: {e}"))?.get(0);
            if n == 0 {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                return Err(format!("{n} replica(s) still behind {lsn} after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The writing client.

/// One insert attempt: when it finished and either the port of the server that took the row
/// (`inet_server_port()`) or the error.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Instant,
    pub result: Result<u16, String>,
}

/// A task inserting a row every [`INSERT_EVERY`] through a multi-host, read-write connection
/// ([`Writer::start`]) or any other ([`Writer::start_with`]).
pub struct Writer {
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    attempt_timeout: Duration,
}

/// `host=127.0.0.1,... port=p1,... target_session_attrs=read-write ...`
pub fn multi_host_conninfo(ports: &[u16]) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    format!(
        "host={hosts} port={ports} user={} password={} dbname=postgres target_session_attrs=read-write \
         connect_timeout=2 application_name=rampart-bench",
        support::SUPERUSER,
        support::SUPERUSER_PASSWORD
    )
}

/// Creates the client's table on the leader `leader`, prints the client's connection string and
/// starts the client on every node of `c`.
pub fn start_writer(rt: &Runtime, c: &Cluster, leader: usize) -> Result<Writer, tokio_postgres::Error> {
    rt.block_on(async {
        let db = support::connect_superuser(c.pg_port(leader)).await?;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_writes \
             (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
    })?;
    let ports: Vec<u16> = (0..c.len()).map(|i| c.pg_port(i)).collect();
    // The password is the harness' own, but a bench's output is pasted into reports: keep it out.
    let shown = multi_host_conninfo(&ports).replace(support::SUPERUSER_PASSWORD, "***");
    println!("[bench] client: one INSERT every {INSERT_EVERY:?} through `{shown}`");
    Ok(Writer::start(rt, &ports))
}

impl Writer {
    pub fn start(rt: &Runtime, ports: &[u16]) -> Writer {
        let conninfo = multi_host_conninfo(ports);
        let config: tokio_postgres::Config = conninfo.parse().expect("multi-host connection string");
        Writer::start_with(rt, config, ATTEMPT_TIMEOUT)
    }

    /// A writer connecting with `config`, an attempt failing after `attempt_timeout`. Through a
    /// proxy that holds new clients while there is no primary, the timeout must outlast the hold,
    /// or the client would give up on connections the proxy is about to serve.
    pub fn start_with(rt: &Runtime, config: tokio_postgres::Config, attempt_timeout: Duration) -> Writer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(write_loop(config, log.clone(), stop.clone(), attempt_timeout));
        Writer { log, stop, task, attempt_timeout }
    }

    pub fn attempts_since(&self, since: Instant) -> Vec<Attempt> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let start = log.partition_point(|a| a.at < since);
        log[start..].to_vec()
    }

    /// When the last successful insert finished and on which server port.
    pub fn last_success(&self) -> Option<(Instant, u16)> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().rev().find_map(|a| a.result.as_ref().ok().map(|p| (a.at, *p)))
    }

    /// Whether an insert finished after `since` on a server other than `port`.
    pub fn succeeded_elsewhere_since(&self, since: Instant, port: u16) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().rev().take_while(|a| a.at > since).any(|a| matches!(a.result, Ok(p) if p != port))
    }

    /// Waits up to 30 s until the client's last insert, less than 200 ms ago, went to the server
    /// on `port`; false if it never did.
    pub fn wait_writing_to(&self, port: u16) -> bool {
        support::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            self.last_success().is_some_and(|(at, p)| p == port && at.elapsed() < Duration::from_millis(200))
        })
    }

    pub fn stop(self, rt: &Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task;
        let wait = self.attempt_timeout * 2;
        if rt.block_on(async { tokio::time::timeout(wait, task).await }).is_err() {
            eprintln!("[bench] the writer did not stop in time");
        }
    }
}

async fn write_loop(
    config: tokio_postgres::Config,
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    attempt_timeout: Duration,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(INSERT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let result = match tokio::time::timeout(attempt_timeout, insert_one(&mut client, &config)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {attempt_timeout:?}")),
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
pub fn chain(e: &dyn std::error::Error) -> String {
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

/// What the writer saw around one event, from [`analyse`].
pub struct Analysis {
    /// The write-unavailability window; `None` when writes did not resume on another server (or
    /// none succeeded before the event).
    pub window: Option<Duration>,
    /// Failed insert attempts (connection attempts included) within the window.
    pub failed: usize,
    /// Those failures by message (the first 110 characters).
    pub errors: BTreeMap<String, usize>,
}

/// What the writer saw around an event at `event` (a fault, a switchover request) on a leader
/// serving on `old_port`. The window is the longest pause between two successful inserts from the
/// last success before `event` to the first success on another server after it: the old primary
/// may still accept a few inserts after `event`, which is not unavailability.
pub fn analyse(attempts: &[Attempt], event: Instant, old_port: u16) -> Analysis {
    let mut errors = BTreeMap::new();
    let first_new = attempts.iter().position(|a| a.at > event && matches!(a.result, Ok(p) if p != old_port));
    let last_before =
        attempts.iter().take(first_new.unwrap_or(attempts.len())).rposition(|a| a.at <= event && a.result.is_ok());
    let Some(last_before) = last_before else { return Analysis { window: None, failed: 0, errors } };
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
    Analysis { window: first_new.map(|_| worst), failed, errors }
}

/// Prints the client's errors of one run as counted by [`analyse`], one line per message.
pub fn print_errors(errors: &BTreeMap<String, usize>) {
    for (e, n) in errors {
        println!("[bench]     {n:>5} x {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Observing the cluster.

/// The node the DCS leader key names, read through `rampart_dcs` ([`Cluster::dcs`]).
pub fn dcs_leader_index(c: &Cluster) -> Option<usize> {
    c.dcs().leader().and_then(|n| c.index_of(&n))
}

/// What SQL says about one server.
struct PgState {
    in_recovery: bool,
    /// `pg_stat_wal_receiver.status`, if a WAL receiver runs.
    receiver: Option<String>,
    /// A primary's current WAL timeline, a replica's `received_tli`.
    timeline: Option<i64>,
}

/// [`PgState`] of the server on `port`.
async fn pg_state(port: u16) -> Option<PgState> {
    let db = support::connect_superuser(port).await.ok()?;
    // A primary's timeline is the first 8 hex digits of its current WAL file name (its checkpoint
    // may still name the previous one right after a promotion).
    let row = db
        .query_one(
            "SELECT pg_is_in_recovery(), r.status, \
                    CASE WHEN pg_is_in_recovery() THEN r.received_tli::bigint \
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint \
                    END \
             FROM (SELECT 1) AS one \
             LEFT JOIN (SELECT status, received_tli FROM pg_stat_wal_receiver LIMIT 1) AS r ON true",
            &[],
        )
        .await
        .ok()?;
    Some(PgState { in_recovery: row.get(0), receiver: row.get(1), timeline: row.get(2) })
}

/// The leader's index and timeline if the DCS names a leader whose PostgreSQL is read-write and
/// every other node's PostgreSQL is in recovery with a streaming WAL receiver, all of them on the
/// leader's timeline when `same_timeline`.
fn healthy_by_sql(rt: &Runtime, c: &Cluster, same_timeline: bool) -> Option<(usize, i64)> {
    let leader = dcs_leader_index(c)?;
    rt.block_on(async {
        let primary = pg_state(c.pg_port(leader)).await?;
        let timeline = primary.timeline?;
        if primary.in_recovery {
            return None;
        }
        for i in (0..c.len()).filter(|&i| i != leader) {
            let s = pg_state(c.pg_port(i)).await?;
            let ok = s.in_recovery
                && s.receiver.as_deref() == Some("streaming")
                && (!same_timeline || s.timeline == Some(timeline));
            if !ok {
                return None;
            }
        }
        Some((leader, timeline))
    })
}

/// Waits until the cluster is healthy by SQL and by the agents' REST APIs (the harness'
/// definition: leader answers `/primary` 200, the others report streaming); returns the leader.
pub fn wait_healthy(rt: &Runtime, c: &Cluster, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    let sql = support::wait_until(timeout, Duration::from_millis(100), || healthy_by_sql(rt, c, false).is_some());
    if !sql {
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    support::health::wait_healthy(c, left)
}

/// A cluster found healthy on one timeline by [`wait_healthy_on_one_timeline`].
pub struct OneTimeline {
    pub leader: usize,
    pub timeline: u64,
    /// When SQL saw it: the DCS leader read-write, the others streaming on its timeline.
    pub by_sql: Instant,
    /// When the agents' REST APIs said the same (the leader answering `/primary` 200, the others
    /// `role` replica, `state` running, `replication_state` streaming on that `timeline`).
    pub by_api: Instant,
}

/// [`wait_healthy`], and every replica streams on the leader's timeline, by SQL
/// (`pg_stat_wal_receiver.received_tli`) and then by its REST API (`timeline` of `GET /patroni`).
pub fn wait_healthy_on_one_timeline(rt: &Runtime, c: &Cluster, timeout: Duration) -> Option<OneTimeline> {
    let deadline = Instant::now() + timeout;
    let mut found = None;
    support::wait_until(timeout, Duration::from_millis(50), || {
        found = healthy_by_sql(rt, c, true);
        found.is_some()
    });
    let (leader, timeline) = found?;
    let by_sql = Instant::now();
    let timeline = u64::try_from(timeline).ok()?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    let by_api = support::wait_until(left, Duration::from_millis(50), || {
        support::health::wait_healthy(c, Duration::ZERO) == Some(leader)
            && (0..c.len())
                .filter(|&i| i != leader)
                .all(|i| support::health::is_streaming_replica(c, i, Some(timeline)))
    });
    by_api.then(|| OneTimeline { leader, timeline, by_sql, by_api: Instant::now() })
}

/// From starting etcd and three agents (`start_agents: false`, then each started by hand) to a
/// healthy cluster.
pub struct Bootstrap {
    pub timing: Timing,
    /// Until SQL sees one primary named by the DCS and two streaming replicas.
    pub by_sql: Option<Duration>,
    /// Until the agents' REST APIs say the same.
    pub by_api: Option<Duration>,
}

/// Starts etcd and writes the configs, then times the three agents from their start to a healthy
/// cluster.
pub fn bootstrap(rt: &Runtime, timing: Timing) -> (Cluster, Bootstrap) {
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
    let sql_ok =
        support::wait_until(HEALTHY_TIMEOUT, Duration::from_millis(50), || healthy_by_sql(rt, &c, false).is_some());
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

/// A three-node cluster with `timing` and the PostgreSQL `parameters` (name, YAML scalar) on
/// every node, once it is healthy on one timeline; `None` (logs dumped) when it never is.
pub fn healthy_cluster(rt: &Runtime, timing: Timing, parameters: &[(&str, &str)]) -> Option<(Cluster, OneTimeline)> {
    let parameters: Vec<(String, String)> = parameters.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let options = ClusterOptions {
        ttl: timing.ttl,
        loop_wait: timing.loop_wait,
        retry_timeout: timing.retry_timeout,
        ..ClusterOptions::default()
    }
    .tweak(move |_, mut config| {
        for (name, value) in &parameters {
            config = config.parameter(name, value);
        }
        config
    });
    let c = Cluster::start(3, options);
    match wait_healthy_on_one_timeline(rt, &c, HEALTHY_TIMEOUT) {
        Some(h) => Some((c, h)),
        None => {
            println!("[bench] the cluster did not become healthy within {HEALTHY_TIMEOUT:?}; logs on stderr");
            c.dump_logs();
            None
        }
    }
}

/// SIGKILLs the agent and the postmaster of node `i` back to back, then reaps the agent: a
/// machine crash as far as the cluster can tell.
pub fn crash(c: &mut Cluster, i: usize) {
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

/// The bootstrap line of a suite.
pub fn print_bootstrap(boot: &Bootstrap) {
    println!(
        "[bench] bootstrap: leader + 2 streaming replicas after {} by SQL, {} by the agents' REST APIs",
        fmt_secs(boot.by_sql, "never"),
        fmt_secs(boot.by_api, "never")
    );
}

// ---------------------------------------------------------------------------------------------
// The agents' logs.

/// Where each agent's log ends now, for [`print_logs_since`].
pub fn log_marks(c: &Cluster) -> Vec<u64> {
    (0..c.len()).map(|i| log_len(c.log_path(i))).collect()
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Up to `max_lines` lines of `path` from byte `from` on. With `fold_repeats`, a line whose
/// message (what follows the timestamp) repeats the previous line's counts once, followed by a
/// note saying how often and until when it was repeated.
fn log_from(path: &std::path::Path, from: u64, max_lines: usize, fold_repeats: bool) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<String> = if fold_repeats { fold(text.lines()) } else { text.lines().map(str::to_owned).collect() };
    let mut out = lines.iter().take(max_lines).cloned().collect::<Vec<_>>().join("\n");
    if lines.len() > max_lines {
        out.push_str(&format!("\n... ({} more lines)", lines.len() - max_lines));
    }
    out
}

/// `lines` with each run of lines carrying the same message (the text after the first space, i.e.
/// after the timestamp) shortened to its first line plus `... (repeated N more times, last at T)`.
fn fold<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    fn message(line: &str) -> &str {
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    }
    let mut out = Vec::new();
    let mut repeats: Option<(usize, &str)> = None;
    let mut previous: Option<&str> = None;
    let flush = |out: &mut Vec<String>, repeats: &mut Option<(usize, &str)>| {
        if let Some((n, last)) = repeats.take() {
            let at = last.split_once(' ').map_or("", |(t, _)| t);
            out.push(format!("... (repeated {n} more times, last at {at})"));
        }
    };
    for line in lines {
        if previous.is_some_and(|p| message(p) == message(line)) {
            repeats = Some((repeats.map_or(0, |(n, _)| n) + 1, line));
            continue;
        }
        flush(&mut out, &mut repeats);
        out.push(line.to_owned());
        previous = Some(line);
    }
    flush(&mut out, &mut repeats);
    out
}

/// Prints, for a run that missed `target`, what each agent logged since `marks` (from
/// [`log_marks`]), up to [`LOG_LINES_ON_MISS`] lines each, runs of one repeated message folded
/// into one line and a note when `fold_repeats`; `since` names the event.
pub fn print_logs_since(c: &Cluster, marks: &[u64], target: Duration, since: &str, fold_repeats: bool) {
    println!("[bench]   target {} missed; agent log lines written since {since}:", fmt_secs(Some(target), "none"));
    for (i, mark) in marks.iter().enumerate() {
        println!("[bench]   ----- {} ({}) -----", c.name(i), c.log_path(i).display());
        println!("{}", log_from(c.log_path(i), *mark, LOG_LINES_ON_MISS, fold_repeats));
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

/// The median of `values`, `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    spread(values).map(|(_, m, _)| m)
}

/// (min, median, max) of `values`.
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
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
pub enum Unit {
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
pub struct Row {
    pub what: String,
    pub values: Vec<f64>,
    pub missing: usize,
    pub unit: Unit,
    /// (bound, inclusive, printed form)
    pub target: Option<(f64, bool, String)>,
}

impl Row {
    /// A row with an inclusive target of `target` seconds, printed `<= N s`.
    pub fn secs_at_most(what: String, values: Vec<f64>, missing: usize, target: Duration) -> Row {
        let bound = target.as_secs_f64();
        Row { what, values, missing, unit: Unit::Secs, target: Some((bound, true, format!("<= {bound:.0} s"))) }
    }

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

/// The final block: a heading with the total time since `started`, `note` (what the values are),
/// then the table of `rows`.
pub fn print_results(started: Instant, note: &str, rows: &[Row]) {
    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    println!("{note}");
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    println!("{:<width$}  {:>2}  {:<34} {:<10} result", "measurement", "n", "min / median / max", "target");
    for row in rows {
        println!("{}", row.render(width));
    }
}
