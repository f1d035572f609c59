//! Story: three agents start at once against an empty etcd. One wins the initialize race and runs
//! initdb; the other two clone it and stream from it through their own replication slots. A row
//! written on the leader shows up on both replicas, and the tools operators already use
//! (`patronictl list`, the REST health checks) see the cluster as Patroni would show it.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_become_one_leader_and_two_streaming_replicas() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // Each replica streams through a slot named after it, on the leader.
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    let slots: Vec<(String, bool)> = db
        .query("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want: Vec<(String, bool)> = replicas.iter().map(|&i| (c.name(i).to_string(), true)).collect();
    want.sort();
    assert!(
        support::wait_until_async(Duration::from_secs(20), Duration::from_millis(250), || async {
            let rows = db.query("SELECT slot_name, active FROM pg_replication_slots ORDER BY 1", &[]).await.unwrap();
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1))).collect::<Vec<_>>() == want
        })
        .await,
        "slots on the leader: {slots:?}, wanted {want:?}"
    );

    // A row written on the leader is read on both replicas.
    db.batch_execute("CREATE TABLE story (id int PRIMARY KEY, what text); INSERT INTO story VALUES (1, 'hello')")
        .await
        .unwrap();
    for &r in &replicas {
        let replica = support::connect_superuser(c.pg_port(r)).await.unwrap();
        let seen = support::wait_until_async(Duration::from_secs(20), Duration::from_millis(100), || async {
            replica
                .query_opt("SELECT what FROM story WHERE id = 1", &[])
                .await
                .ok()
                .flatten()
                .map(|row| row.get::<_, String>(0))
                == Some("hello".to_string())
        })
        .await;
        assert!(seen, "row not replicated to {}", c.name(r));
        assert!(support::query_one_bool(&replica, "SELECT pg_is_in_recovery()").await.unwrap());
    }

    // HAProxy-style health checks: only the leader is primary, both others are replicas.
    assert_eq!(c.nodes_answering("/primary", 200), vec![leader]);
    assert_eq!(c.nodes_answering("/replica", 200), replicas);
    assert_eq!(support::http_status(c.api_port(leader), "OPTIONS", "/"), 200, "HAProxy's default OPTIONS / check");
    assert_eq!(support::http_status(c.api_port(replicas[0]), "OPTIONS", "/"), 503);

    // `rampart list -f json`: one Leader, two streaming Replicas on timeline 1.
    let out = c.rampart(["list", "-c", c.config_path(0).to_str().unwrap(), "-f", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["Cluster"], "postgres");
        assert_eq!(row["TL"], 1);
        if row["Member"] == c.name(leader) {
            assert_eq!((row["Role"].as_str(), row["State"].as_str()), (Some("Leader"), Some("running")));
        } else {
            assert_eq!((row["Role"].as_str(), row["State"].as_str()), (Some("Replica"), Some("streaming")));
            assert_eq!((&row["Receive Lag"], &row["Replay Lag"]), (&serde_json::json!(0), &serde_json::json!(0)));
        }
    }

    // Patroni's own patronictl, reading our etcd keys, sees the same cluster.
    let out = c.patronictl(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "patronictl failed: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        assert!(text.contains(c.name(i)), "patronictl list lacks {}:\n{text}", c.name(i));
    }
    assert_eq!(text.matches("| Leader ").count(), 1, "{text}");
    assert_eq!(text.matches("| Replica ").count(), 2, "{text}");
    assert_eq!(text.matches("streaming").count(), 2, "{text}");
}
