//! Story: `failsafe_mode`. With it on, a leader cut off from etcd asks every member, each cycle,
//! whether it may go on (`POST /failsafe`); while all of them say "Accepted" it keeps taking
//! writes long past its lease, and no replica takes over. When one member cannot answer, the
//! leader stops taking writes at once (Patroni's rule), well before its lease could have expired.
//!
//! A probe writes to every node directly, every 200 ms; at no moment may two nodes accept writes.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::write_probe::{last_accept, never_two_writable, WriteProbe};

const TTL: Duration = Duration::from_secs(10);

/// A healthy three-node cluster with `failsafe_mode` switched on through `PATCH /config`, a probe
/// table, and the leader's index.
async fn cluster_in_failsafe_mode() -> (Cluster, usize) {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let r = support::http_request(c.api_port(leader), "PATCH", "/config", Some(r#"{"failsafe_mode": true}"#)).unwrap();
    assert_eq!(r.status, 200, "PATCH /config: {r:?}");
    // Every member sees the mode; the leader writes the topology in its next cycle.
    let seen = support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        (0..3).all(|i| support::get_json(c.api_port(i), "/config").is_some_and(|v| v["failsafe_mode"] == true))
    });
    assert!(seen, "failsafe_mode is on everywhere");
    // The leader writes the topology; every member shows it on GET /failsafe, as Patroni does:
    // 200 with the key's member name -> REST API URL map.
    let topology: serde_json::Value = (0..3)
        .map(|i| {
            (c.name(i).to_string(), serde_json::Value::from(format!("http://127.0.0.1:{}/patroni", c.api_port(i))))
        })
        .collect();
    let shown = support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        (0..3).all(|i| {
            support::http_request(c.api_port(i), "GET", "/failsafe", None)
                .is_ok_and(|r| r.status == 200 && r.json().as_ref() == Some(&topology))
        })
    });
    assert!(shown, "GET /failsafe shows {topology} on every member");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute("CREATE TABLE probe (node int, n bigint)").await.unwrap();
    (c, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_member_answering_the_leader_outlives_an_etcd_outage() {
    let (mut c, leader) = cluster_in_failsafe_mode().await;
    let probe = WriteProbe::start(&c, Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    c.etcd_mut().stop();

    // Failsafe mode begins with the first cycle that cannot read etcd (Patroni's suite allows
    // 12 s at ttl 20, loop_wait 2, retry_timeout 3; here ttl 10, loop_wait 1, retry_timeout 3).
    let active = support::wait_until(TTL, Duration::from_millis(100), || {
        support::http_request(c.api_port(leader), "GET", "/primary", None)
            .is_ok_and(|r| r.body.contains("\"failsafe_mode_is_active\":true"))
    });
    println!("failsafe_mode_is_active on /primary {:?} after etcd was stopped (found: {active})", cut.elapsed());
    // Well past the lease: the leader still takes writes, nobody else does.
    tokio::time::sleep((cut + TTL + Duration::from_secs(6)).saturating_duration_since(Instant::now())).await;
    let rounds = probe.rounds();
    never_two_writable(&rounds);
    let last = last_accept(&rounds, leader).expect("the leader accepted writes");
    println!("leader's last accepted write so far: {:?} after etcd was stopped (ttl {TTL:?})", last - cut);
    assert!(
        last >= cut + TTL + Duration::from_secs(5),
        "the leader stopped taking writes {:?} after the cut",
        last - cut
    );
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(last_accept(&rounds, i), None, "node {i} accepted writes during the outage");
    }
    let status = support::get_json(c.api_port(leader), "/patroni").expect("/patroni");
    assert_eq!(status["failsafe_mode_is_active"], true, "{status}");
    assert_eq!(status["role"], "primary");

    // etcd is back: the same leader goes on, the cluster is healthy again.
    let back = Instant::now();
    c.etcd_mut().start_again();
    let again = wait_healthy(&c, Duration::from_secs(60));
    println!("healthy again {:?} after etcd came back", back.elapsed());
    assert_eq!(again, Some(leader), "the same leader continues");
    let rounds = probe.finish().await;
    never_two_writable(&rounds);
    assert!(rounds.last().is_some_and(|r| r.accepted == vec![leader]), "the leader takes writes");
    // The flag is the leader's own report, dropped at its first cycle that reaches etcd, which
    // can come a moment after the cluster already looks healthy from etcd.
    let mut status = serde_json::Value::Null;
    let over = support::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        status = support::get_json(c.api_port(leader), "/patroni").unwrap_or_default();
        status.get("role").is_some() && status.get("failsafe_mode_is_active").is_none()
    });
    assert!(over, "failsafe is over once etcd answers: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_member_silent_the_leader_stops_before_its_lease_expires() {
    let (mut c, leader) = cluster_in_failsafe_mode().await;
    let probe = WriteProbe::start(&c, Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let silent = (0..3).find(|&i| i != leader).unwrap();
    c.kill_agent(silent);
    let cut = Instant::now();
    c.etcd_mut().stop();

    tokio::time::sleep(TTL + Duration::from_secs(5)).await;
    let rounds = probe.finish().await;
    never_two_writable(&rounds);
    let last = last_accept(&rounds, leader).expect("the leader accepted writes before the cut");
    println!(
        "with {} silent, the leader's last accepted write was {:?} after etcd was stopped",
        c.name(silent),
        last - cut
    );
    assert!(last < cut + TTL, "the leader still took writes {:?} after the cut (ttl {TTL:?})", last - cut);
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(last_accept(&rounds, i), None, "node {i} accepted writes during the outage");
    }
    // Demoted, the former leader serves reads again, following nobody until etcd is back.
    let mut read_only = false;
    for _ in 0..20 {
        read_only = support::client::is_in_recovery(c.pg_port(leader)).await == Some(true);
        if read_only {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(read_only, "the demoted leader runs read-only while etcd is away");
}
