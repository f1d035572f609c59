//! The workload: clients writing unique rows through `rampart proxy`, and a probe writing to
//! every node directly. Every acknowledged write is logged with when it was sent and answered
//! (seconds on the test's monotonic clock), which server committed it (its port) and on which
//! timeline, and its WAL position.
//!
//! A write that fails or times out is not acknowledged and is never held against the cluster
//! (it may or may not have committed); only acknowledged writes are checked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support;

/// The table every write goes to.
pub const TABLE_DDL: &str = "CREATE TABLE chaos (client int NOT NULL, seq bigint NOT NULL, PRIMARY KEY (client, seq))";

/// One insert, returning who committed it: the server's port, its WAL insert timeline (only a
/// primary can answer `pg_current_wal_insert_lsn()`) and position.
const INSERT: &str = "INSERT INTO chaos (client, seq) VALUES ($1, $2) \
     RETURNING inet_server_port(), \
     ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int, \
     (pg_current_wal_insert_lsn() - '0/0')::bigint";

/// Client ids of the direct probe: `PROBE_BASE + node index`.
pub const PROBE_BASE: i32 = 100;

/// An acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub client: i32,
    pub seq: i64,
    /// Seconds since the run's start when the statement was sent and when the answer came.
    pub sent: f64,
    pub recv: f64,
    /// `inet_server_port()` of the server that committed it.
    pub port: u16,
    pub timeline: i32,
    pub lsn: i64,
}

impl Ack {
    pub fn is_probe(&self) -> bool {
        self.client >= PROBE_BASE
    }
}

/// Where a writer sends its statements.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// The running writers and probes.
pub struct Workload {
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// `clients` writers through `proxy` (ids 1..=clients, a write every `pace`), and one
    /// probe per node in `nodes` (ids `PROBE_BASE + i`, a write every 100 ms).
    pub fn start(t0: Instant, proxy: Target, clients: usize, pace: Duration, nodes: &[Target]) -> Workload {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 1..=clients as i32 {
            let w = Writer { t0, target: proxy.clone(), client: c, pace, timeout: Duration::from_secs(5) };
            tasks.push(tokio::spawn(w.run(acks.clone(), failures.clone(), stop.clone())));
        }
        for (i, node) in nodes.iter().enumerate() {
            let w = Writer {
                t0,
                target: node.clone(),
                client: PROBE_BASE + i as i32,
                pace: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
            };
            tasks.push(tokio::spawn(w.run(acks.clone(), Arc::new(AtomicU64::new(0)), stop.clone())));
        }
        Workload { acks, failures, stop, tasks }
    }

    /// Every acknowledged write so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Writes through the proxy that failed or timed out.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Stops every writer and returns every acknowledged write.
    pub async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

struct Writer {
    t0: Instant,
    target: Target,
    client: i32,
    pace: Duration,
    timeout: Duration,
}

impl Writer {
    async fn run(self, acks: Arc<Mutex<Vec<Ack>>>, failures: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
        let mut db: Option<Client> = None;
        let mut seq = 0i64;
        while !stop.load(Ordering::Relaxed) {
            if db.is_none() {
                let c = support::client::connect_at(
                    &self.target.host,
                    self.target.port,
                    support::SUPERUSER,
                    support::SUPERUSER_PASSWORD,
                );
                db = tokio::time::timeout(self.timeout, c).await.ok().and_then(Result::ok);
                if db.is_none() {
                    tokio::time::sleep(self.pace.max(Duration::from_millis(100))).await;
                    continue;
                }
            }
            seq += 1;
            let sent = self.t0.elapsed().as_secs_f64();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.client, &seq];
            let answer = tokio::time::timeout(self.timeout, db.as_ref().unwrap().query_one(INSERT, &params));
            match answer.await {
                Ok(Ok(row)) => {
                    let recv = self.t0.elapsed().as_secs_f64();
                    let port: i32 = row.get(0);
                    acks.lock().unwrap().push(Ack {
                        client: self.client,
                        seq,
                        sent,
                        recv,
                        port: port as u16,
                        timeline: row.get(1),
                        lsn: row.get(2),
                    });
                }
                _ => {
                    // Not acknowledged: failed, or no answer in time (maybe committed later,
                    // maybe never). Start over on a new connection.
                    failures.fetch_add(1, Ordering::Relaxed);
                    db = None;
                }
            }
            tokio::time::sleep(self.pace).await;
        }
    }
}
