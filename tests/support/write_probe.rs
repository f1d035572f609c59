//! A probe that writes to every node directly, round after round, so a story can check
//! afterwards that no two nodes ever accepted writes in the same round and when each one last
//! did. It needs a table `probe (node int, n bigint)` on the cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::cluster::Cluster;

/// Which nodes acknowledged a write in one round, and when the round started.
#[derive(Debug, Clone)]
pub struct Round {
    pub at: Instant,
    pub accepted: Vec<usize>,
}

/// The running probe; [`WriteProbe::finish`] stops it.
pub struct WriteProbe {
    rounds: Arc<Mutex<Vec<Round>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteProbe {
    /// Writes to every node of `c` directly, a round every `every`, until finished; keeps one
    /// connection per node and reconnects after failures (connect and write bounded by 1 s).
    /// Nodes are reached at their own address, so the probe works in namespaces too.
    pub fn start(c: &Cluster, every: Duration) -> WriteProbe {
        let nodes: Vec<(String, u16)> = (0..c.len()).map(|i| (c.addr(i).to_string(), c.pg_port(i))).collect();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rounds.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut conns: Vec<Option<Client>> = nodes.iter().map(|_| None).collect();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let at = Instant::now();
                let mut accepted = Vec::new();
                for (i, (host, port)) in nodes.iter().enumerate() {
                    n += 1;
                    if conns[i].is_none() {
                        let connect =
                            super::client::connect_at(host, *port, super::SUPERUSER, super::SUPERUSER_PASSWORD);
                        conns[i] =
                            tokio::time::timeout(Duration::from_secs(1), connect).await.ok().and_then(Result::ok);
                    }
                    let Some(db) = &conns[i] else { continue };
                    let q = format!("INSERT INTO probe VALUES ({i}, {n})");
                    match tokio::time::timeout(Duration::from_secs(1), db.batch_execute(&q)).await {
                        Ok(Ok(())) => accepted.push(i),
                        _ => conns[i] = None,
                    }
                }
                r.lock().unwrap().push(Round { at, accepted });
                tokio::time::sleep(every).await;
            }
        });
        WriteProbe { rounds, stop, task }
    }

    /// The rounds so far.
    pub fn rounds(&self) -> Vec<Round> {
        self.rounds.lock().unwrap().clone()
    }

    /// Stops the probe and returns every round.
    pub async fn finish(self) -> Vec<Round> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let rounds = self.rounds.lock().unwrap().clone();
        rounds
    }
}

/// Fails the test if two nodes accepted writes in the same round.
pub fn never_two_writable(rounds: &[Round]) {
    for r in rounds {
        assert!(r.accepted.len() <= 1, "two nodes accepted writes in the same round: {r:?}");
    }
}

/// The start of the last round in which `node` accepted a write.
pub fn last_accept(rounds: &[Round], node: usize) -> Option<Instant> {
    rounds.iter().filter(|r| r.accepted.contains(&node)).map(|r| r.at).max()
}
