//! The "new connections during the gap" client of bench/proxy_failover.rs: every
//! [`PROBE_EVERY`] it opens a fresh connection to the proxy's read-write port, without waiting for
//! the previous ones, runs one INSERT and disconnects. While there is no primary the proxy should
//! hold these clients rather than fail them; what each one saw is logged by when it started, so a
//! run can ask what happened to those that started within its gap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use crate::common;

/// How often a new connection is opened.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);

/// One new connection: when it started and finished, and the server port that took its row or
/// the error.
struct Probe {
    started: Instant,
    finished: Instant,
    result: Result<u16, String>,
}

#[derive(Default)]
struct Log {
    /// Start of every probe launched, in order.
    launched: Vec<Instant>,
    /// Every probe that finished (in the order they finished).
    done: Vec<Probe>,
}

/// The running client; see the module documentation.
pub struct Prober {
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    attempt_timeout: Duration,
}

/// What happened to the probes started within one stretch of time.
pub struct Gap {
    pub started: usize,
    /// Those that got an error, or no answer within the attempt timeout.
    pub failed: usize,
    /// Those still running when the summary gave up waiting (counted in `failed` too).
    pub unfinished: usize,
    /// The longest time from start to the INSERT's answer among those that succeeded: how long
    /// the proxy held a client, plus one connection and one INSERT.
    pub longest_ok: Option<Duration>,
    /// Failures by message (the first 110 characters).
    pub errors: BTreeMap<String, usize>,
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

impl Prober {
    /// Starts probing with `config` on `rt`; a probe that has no answer after `attempt_timeout`
    /// counts as failed.
    pub fn start(rt: &Runtime, config: tokio_postgres::Config, attempt_timeout: Duration) -> Prober {
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(probe_loop(config, log.clone(), stop.clone(), attempt_timeout));
        Prober { log, stop, task, attempt_timeout }
    }

    /// The probes started in `from..=to`, once all of them finished or `wait` has passed.
    pub fn gap(&self, from: Instant, to: Instant, wait: Duration) -> Gap {
        let in_range = |t: Instant| t >= from && t <= to;
        let started = lock(&self.log).launched.iter().filter(|&&t| in_range(t)).count();
        crate::support::wait_until(wait, Duration::from_millis(50), || {
            lock(&self.log).done.iter().filter(|p| in_range(p.started)).count() >= started
        });
        let log = lock(&self.log);
        let mut gap = Gap { started, failed: 0, unfinished: 0, longest_ok: None, errors: BTreeMap::new() };
        let mut finished = 0;
        for p in log.done.iter().filter(|p| in_range(p.started)) {
            finished += 1;
            match &p.result {
                Ok(_) => gap.longest_ok = gap.longest_ok.max(Some(p.finished - p.started)),
                Err(e) => {
                    gap.failed += 1;
                    *gap.errors.entry(e.chars().take(110).collect()).or_insert(0) += 1;
                }
            }
        }
        gap.unfinished = started.saturating_sub(finished);
        gap.failed += gap.unfinished;
        gap
    }

    /// Stops launching probes and waits for those in flight.
    pub fn stop(self, rt: &Runtime) {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task;
        let wait = self.attempt_timeout + Duration::from_secs(5);
        if rt.block_on(async { tokio::time::timeout(wait, task).await }).is_err() {
            eprintln!("[bench] the new-connection client did not stop in time");
        }
    }
}

async fn probe_loop(config: tokio_postgres::Config, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>, timeout: Duration) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    // A late tick launches one probe, not a burst to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut running = JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        while running.try_join_next().is_some() {}
        let started = Instant::now();
        lock(&log).launched.push(started);
        let (config, log) = (config.clone(), log.clone());
        running.spawn(async move {
            let result = match tokio::time::timeout(timeout, insert_once(&config)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            lock(&log).done.push(Probe { started, finished: Instant::now(), result });
        });
    }
    while running.join_next().await.is_some() {}
}

/// Connects, inserts one row, returns the port of the server that took it; the connection closes
/// when the client is dropped on return.
async fn insert_once(config: &tokio_postgres::Config) -> Result<u16, String> {
    let (db, connection) = config.connect(NoTls).await.map_err(|e| format!("connect: {}", common::chain(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let row = db
        .query_one("INSERT INTO bench_writes DEFAULT VALUES RETURNING inet_server_port()", &[])
        .await
        .map_err(|e| format!("insert: {}", common::chain(&e)))?;
    let port: i32 = row.get(0);
    u16::try_from(port).map_err(|_| format!("odd server port {port}"))
}
