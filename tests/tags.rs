//! Stories about member tags: cascading replication (`replicatefrom`), a member that must never
//! lead (`nofailover`), and one kept out of read load balancing (`noloadbalance`).

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, wait_healthy};

async fn walsenders(port: u16) -> Vec<String> {
    let db = support::connect_superuser(port).await.unwrap();
    let rows = db.query("SELECT application_name FROM pg_stat_replication ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn slots(port: u16) -> Vec<String> {
    let db = support::connect_superuser(port).await.unwrap();
    let rows = db.query("SELECT slot_name FROM pg_replication_slots ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Where a slot holds WAL from (`restart_lsn`, in bytes; 0 when it holds none).
async fn slot_position(port: u16, slot: &str) -> i64 {
    let db = support::connect_superuser(port).await.unwrap();
    let row = db
        .query_one(
            "SELECT COALESCE(pg_catalog.pg_wal_lsn_diff(restart_lsn, '0/0'), 0)::bigint \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_shape_replication_leadership_and_load_balancing() {
    // node0 starts first and bootstraps; node2 streams from node1, not from the leader; node1 may
    // never lead; node2 takes no read traffic.
    let opts = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|i, cfg| match i {
        1 => cfg.tag("nofailover", "true"),
        2 => cfg.tag("replicatefrom", "node1").tag("noloadbalance", "true"),
        _ => cfg,
    });
    let mut c = Cluster::start(3, opts);
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");

    // Cascading: the leader streams to node1 only, node1 streams to node2, each through a slot.
    assert!(
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
            walsenders(c.pg_port(0)).await == ["node1"] && walsenders(c.pg_port(1)).await == ["node2"]
        })
        .await,
        "leader sends to {:?}, node1 sends to {:?}",
        walsenders(c.pg_port(0)).await,
        walsenders(c.pg_port(1)).await
    );
    // As in Patroni 4 (member_slots_ttl > 0): the leader keeps a slot for every member, node2's
    // too although node2 streams from node1, so that a failover finds it; node1, which may never
    // lead, keeps only the slot of the member streaming from it.
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(250), || async {
            slots(c.pg_port(0)).await == ["node1", "node2"] && slots(c.pg_port(1)).await == ["node2"]
        })
        .await,
        "slots: leader {:?}, node1 {:?}",
        slots(c.pg_port(0)).await,
        slots(c.pg_port(1)).await
    );
    // node2's slot on the leader is idle, and follows where node2 says it is rather than holding
    // WAL back for ever: after a write it moves past where it was.
    let before = slot_position(c.pg_port(0), "node2").await;
    let leader = support::connect_superuser(c.pg_port(0)).await.unwrap();
    leader.batch_execute("CREATE TABLE moved_on AS SELECT 1 AS x; SELECT pg_catalog.pg_switch_wal()").await.unwrap();
    assert!(
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(500), || async {
            slot_position(c.pg_port(0), "node2").await > before
        })
        .await,
        "node2's slot on the leader stayed at {before}"
    );

    // noloadbalance: node2 is a healthy replica but says no to read traffic.
    assert_eq!(c.nodes_answering("/replica", 200), vec![1]);
    assert_eq!(support::http_status(c.api_port(2), "GET", "/health"), 200);

    // nofailover: when the leader crashes, node1 (most advanced, streaming from it) never takes
    // over; node2 does, and node1 then follows it.
    c.kill_agent(0);
    c.kill_postgres(0);
    assert!(
        support::wait_until(Duration::from_secs(40), Duration::from_millis(200), || c.leader_index() == Some(2)),
        "node2 took over (leader: {:?})",
        c.leader_name()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.primaries_by_sql().await, vec![2]);
    assert!(support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || is_streaming_replica(
        &c,
        1,
        Some(2)
    )));
}
