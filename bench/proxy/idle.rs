//! The idle-client footprint of a pooler (bench/proxy.rs): many clients logged in through it
//! and idle, and its resident memory while it holds them.
//!
//! Each client is a tokio-postgres session of the harness' superuser (password, SCRAM through the
//! pooler) whose connection task is kept until the end, so that every socket stays open and
//! logged in; a few log in at a time, since logging in costs the pooler a SCRAM exchange. Every
//! client is closed (by dropping it) before [`hold`] returns, and the bench waits until the
//! pooler has seen them go, whatever happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::common::procfs;
use crate::support;

/// Logins under way at once.
const CONCURRENT_LOGINS: usize = 32;
/// One login's limit: a pooler busy with other logins answers late, not never.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the clients sit idle before the pooler's memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// What [`hold`] saw.
pub struct Footprint {
    pub wanted: usize,
    /// Clients logged in and idle when the memory was read.
    pub held: usize,
    /// Logins that failed, and the first error.
    pub failed: usize,
    pub first_error: Option<String>,
    /// From the first login to the last.
    pub login_secs: f64,
    /// Whether a query on the last client logged in was answered while all were held.
    pub serves: Result<(), String>,
    /// The pooler's VmRSS before the first login, while it held the clients, and after they left
    /// (kB); its VmHWM while it held them.
    pub rss_before_kb: Option<u64>,
    pub rss_kb: Option<u64>,
    pub hwm_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
}

/// Logs `wanted` idle clients in through `port` (served by process `pid`), reads the pooler's
/// memory while they are held, then closes them all.
pub fn hold(rt: &Runtime, port: u16, pid: u32, wanted: usize) -> Footprint {
    let rss_before_kb = procfs::status_kb(pid, "VmRSS");
    let t0 = Instant::now();
    let (clients, failed, first_error) = rt.block_on(log_in(port, wanted));
    let login_secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let serves = match clients.last() {
        Some((client, _)) => rt.block_on(async {
            match tokio::time::timeout(LOGIN_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(crate::common::chain(&e)),
                Err(_) => Err(format!("no answer within {LOGIN_TIMEOUT:?}")),
            }
        }),
        None => Err("no client logged in".into()),
    };
    let (rss_kb, hwm_kb) = (procfs::status_kb(pid, "VmRSS"), procfs::status_kb(pid, "VmHWM"));
    let held = clients.iter().filter(|(_, task)| !task.is_finished()).count();
    close(rt, clients);
    // The pooler frees a client's memory once it has read the end of its socket.
    std::thread::sleep(SETTLE);
    Footprint {
        wanted,
        held,
        failed,
        first_error,
        login_secs,
        serves,
        rss_before_kb,
        rss_kb,
        hwm_kb,
        rss_after_kb: procfs::status_kb(pid, "VmRSS"),
    }
}

type Held = (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>);

/// `wanted` logins through `port`, [`CONCURRENT_LOGINS`] at a time: the clients that logged in,
/// how many did not and the first error.
async fn log_in(port: u16, wanted: usize) -> (Vec<Held>, usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(CONCURRENT_LOGINS));
    let mut logins = JoinSet::new();
    for _ in 0..wanted {
        let permits = permits.clone();
        logins.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            match tokio::time::timeout(LOGIN_TIMEOUT, support::proxy::connect_watched(port, "postgres")).await {
                Ok(Ok(held)) => Ok(held),
                Ok(Err(e)) => Err(crate::common::chain(&e)),
                Err(_) => Err(format!("no login within {LOGIN_TIMEOUT:?}")),
            }
        });
    }
    let (mut clients, mut failed, mut first_error) = (Vec::with_capacity(wanted), 0, None);
    while let Some(done) = logins.join_next().await {
        match done.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(held) => clients.push(held),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    (clients, failed, first_error)
}

/// Drops every client (tokio-postgres then says Terminate and closes the socket) and waits, at
/// most a minute, until their connection tasks have ended.
fn close(rt: &Runtime, clients: Vec<Held>) {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(client, task)| {
            drop(client);
            task
        })
        .collect();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                println!("[bench] idle clients: some connections were still closing after a minute");
                return;
            }
        }
    });
}
