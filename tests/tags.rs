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
    // A slot node2 used before it switched to cascading is dropped on the leader once inactive.
    // node1, a replica, keeps node2's slot (node2 streams through it) and one for node0, so that
    // node0 finds its slot should node1 ever lead.
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(250), || async {
            slots(c.pg_port(0)).await == ["node1"] && slots(c.pg_port(1)).await == ["node0", "node2"]
        })
        .await,
        "slots: leader {:?}, node1 {:?}",
        slots(c.pg_port(0)).await,
        slots(c.pg_port(1)).await
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
