//! Story: the leader loses etcd. It cannot renew its lease, so it must stop taking writes before
//! that lease can expire — and at no moment may two nodes accept writes. A probe writes to every
//! node directly, round after round, and the rounds are checked afterwards.
//!
//! Two ways to lose etcd: killed (connections are refused at once) and frozen with SIGSTOP
//! (requests hang, so only the agent's own deadlines can save it).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use tokio_postgres::Client;

const TTL: Duration = Duration::from_secs(10);

/// One probe round: which nodes acknowledged a write, and when the round started.
#[derive(Debug, Clone)]
struct Round {
    at: Instant,
    accepted: Vec<usize>,
}

/// Writes to every node directly, every 100 ms, until told to stop; keeps one connection per node
/// and reconnects after failures.
fn start_probe(
    c: &Cluster,
) -> (Arc<Mutex<Vec<Round>>>, Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<()>) {
    let ports: Vec<u16> = (0..c.len()).map(|i| c.pg_port(i)).collect();
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r, s) = (rounds.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut conns: Vec<Option<Client>> = ports.iter().map(|_| None).collect();
        let mut n = 0u64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let at = Instant::now();
            let mut accepted = Vec::new();
            for (i, port) in ports.iter().enumerate() {
                n += 1;
                if conns[i].is_none() {
                    conns[i] = tokio::time::timeout(Duration::from_secs(1), support::connect_superuser(*port))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let Some(db) = &conns[i] else { continue };
                let q = format!("INSERT INTO probe VALUES ({i}, {n})");
                match tokio::time::timeout(Duration::from_secs(1), db.batch_execute(&q)).await {
                    Ok(Ok(())) => accepted.push(i),
                    _ => conns[i] = None,
                }
            }
            r.lock().unwrap().push(Round { at, accepted });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (rounds, stop, task)
}

/// Never two writable nodes in one round; returns the last round in which `node` accepted.
fn check_rounds(rounds: &[Round]) {
    for r in rounds {
        assert!(r.accepted.len() <= 1, "two nodes accepted writes in the same round: {r:?}");
    }
}

fn last_accept(rounds: &[Round], node: usize) -> Option<Instant> {
    rounds.iter().filter(|r| r.accepted.contains(&node)).map(|r| r.at).max()
}

async fn lose_etcd_and_check(freeze: bool) {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute("CREATE TABLE probe (node int, n bigint)").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (rounds, stop, task) = start_probe(&c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    if freeze {
        c.etcd_mut().freeze();
    } else {
        c.etcd_mut().stop();
    }

    // Through the lease and beyond: the leader must have stopped accepting writes before its lease
    // (renewed at the latest just before the cut) could expire, and nobody else may take over
    // without etcd.
    tokio::time::sleep(TTL + Duration::from_secs(5)).await;
    {
        let r = rounds.lock().unwrap();
        check_rounds(&r);
        let last = last_accept(&r, leader).expect("the leader accepted writes before the cut");
        let stopped_after = last.saturating_duration_since(cut);
        println!(
            "leader's last accepted write {stopped_after:?} after etcd was {}",
            if freeze { "frozen" } else { "stopped" }
        );
        assert!(last < cut + TTL, "the leader still accepted writes {stopped_after:?} after the cut (ttl {TTL:?})");
        for i in (0..3).filter(|&i| i != leader) {
            assert_eq!(last_accept(&r, i), None, "node {i} accepted writes while etcd was unreachable");
        }
    }

    // etcd comes back: exactly one writable primary again.
    if freeze {
        c.etcd_mut().thaw();
    } else {
        c.etcd_mut().start_again();
    }
    let recovered = support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        rounds.lock().unwrap().last().is_some_and(|r| r.accepted.len() == 1)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.unwrap();
    assert!(recovered, "no node accepts writes after etcd came back");
    let r = rounds.lock().unwrap();
    check_rounds(&r);
    let new = r.last().unwrap().accepted[0];
    println!("after etcd returned, node {new} accepts writes (the old leader was {leader})");
    assert!(
        wait_healthy(&c, Duration::from_secs(90)).is_some(),
        "the cluster converges: one leader, two streaming replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stops_writes_before_its_lease_expires_when_etcd_is_stopped() {
    lose_etcd_and_check(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stops_writes_before_its_lease_expires_when_etcd_hangs() {
    lose_etcd_and_check(true).await;
}
