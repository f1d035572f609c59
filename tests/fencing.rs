//! Story: the leader loses etcd. It cannot renew its lease, so it must stop taking writes before
//! that lease can expire — and at no moment may two nodes accept writes. A probe writes to every
//! node directly, round after round, and the rounds are checked afterwards.
//!
//! Two ways to lose etcd: killed (connections are refused at once) and frozen with SIGSTOP
//! (requests hang, so only the agent's own deadlines can save it); with a three-member etcd
//! (`RAMPART_ETCD_MEMBERS=3`) every member is killed or frozen.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::write_probe::{last_accept, never_two_writable, WriteProbe};

const TTL: Duration = Duration::from_secs(10);

async fn lose_etcd_and_check(freeze: bool) {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute("CREATE TABLE probe (node int, n bigint)").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let probe = WriteProbe::start(&c, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    if freeze {
        c.freeze_etcd();
    } else {
        c.stop_etcd();
    }

    // Through the lease and beyond: the leader must have stopped accepting writes before its lease
    // (renewed at the latest just before the cut) could expire, and nobody else may take over
    // without etcd.
    tokio::time::sleep(TTL + Duration::from_secs(5)).await;
    {
        let r = probe.rounds();
        never_two_writable(&r);
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
        c.thaw_etcd();
    } else {
        c.start_etcd_again();
    }
    let recovered = support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        probe.rounds().last().is_some_and(|r| r.accepted.len() == 1)
    });
    let r = probe.finish().await;
    assert!(recovered, "no node accepts writes after etcd came back");
    never_two_writable(&r);
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
