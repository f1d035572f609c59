//! Day-to-day operations through Patroni's REST API: maintenance mode, changing PostgreSQL
//! parameters cluster-wide (and restarting where a parameter needs it), restarting one member,
//! re-cloning a replica whose data directory was lost.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, status, wait_healthy};

fn request(c: &Cluster, i: usize, method: &str, path: &str, body: &str) -> (u16, String) {
    let r =
        support::client::http_request_with_timeout(c.api_port(i), method, path, Some(body), Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.body)
}

async fn show(port: u16, setting: &str) -> Option<String> {
    let db = support::connect_superuser(port).await.ok()?;
    db.query_one(&format!("SHOW {setting}"), &[]).await.ok().map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_cluster_does_not_replace_a_dead_leader_until_resumed() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let (status_code, text) = request(&c, old, "PATCH", "/config", r#"{"pause": true}"#);
    assert_eq!(status_code, 200, "{text}");
    assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        (0..3).all(|i| status(&c, i).is_some_and(|s| s["pause"] == true))
    }));

    // A switchover to a named candidate still works in maintenance mode.
    let cand = (0..3).find(|&i| i != old).unwrap();
    let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, c.name(old), c.name(cand));
    let (status_code, text) = request(&c, old, "POST", "/switchover", &body);
    assert_eq!(status_code, 200, "{text}");
    assert_eq!(c.leader_index(), Some(cand));
    let old = cand;

    c.kill_agent(old);
    c.kill_postgres(old);
    // Well past the lease: nobody takes over in maintenance mode.
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(c.leader_index(), None, "no leader while paused");
    assert!(c.primaries_by_sql().await.is_empty(), "nobody was promoted");

    let survivor = (0..3).find(|&i| i != old).unwrap();
    let (status_code, text) = request(&c, survivor, "PATCH", "/config", r#"{"pause": null}"#);
    assert_eq!(status_code, 200, "{text}");
    let new = c.wait_for_leader(Duration::from_secs(30)).expect("a leader after resume");
    assert_ne!(new, old);
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(15)).await, Some(new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_change_everywhere_and_restart_only_where_pending() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");

    // A reloadable parameter reaches every member without a restart.
    let (code, text) =
        request(&c, leader, "PATCH", "/config", r#"{"postgresql": {"parameters": {"work_mem": "7MB"}}}"#);
    assert_eq!(code, 200, "{text}");
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(250), || async {
            let mut all = true;
            for i in 0..3 {
                all &= show(c.pg_port(i), "work_mem").await.as_deref() == Some("7MB");
            }
            all
        })
        .await,
        "work_mem applied on every member"
    );

    // One that needs a restart is reported as pending everywhere ...
    let (code, text) =
        request(&c, leader, "PATCH", "/config", r#"{"postgresql": {"parameters": {"max_connections": 120}}}"#);
    assert_eq!(code, 200, "{text}");
    assert!(support::wait_until(Duration::from_secs(15), Duration::from_millis(250), || {
        (0..3).all(|i| status(&c, i).is_some_and(|s| s["pending_restart"] == true))
    }));
    let out = c.rampart(["list", "-c", c.config_path(0).to_str().unwrap(), "-f", "json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pending restart"), "list shows it");

    // ... until each member is restarted with restart_pending.
    for i in 0..3 {
        let (code, text) = request(&c, i, "POST", "/restart", r#"{"restart_pending": true}"#);
        assert_eq!(code, 200, "restart of {}: {text}", c.name(i));
    }
    for i in 0..3 {
        assert_eq!(show(c.pg_port(i), "max_connections").await.as_deref(), Some("120"));
        assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            status(&c, i).is_some_and(|s| s.get("pending_restart").is_none_or(|p| p != true))
        }));
    }
    // Nothing pending any more: a pending-only restart is refused.
    let (code, _) = request(&c, 0, "POST", "/restart", r#"{"restart_pending": true}"#);
    assert_eq!(code, 503);
    assert_eq!(c.leader_index(), Some(leader), "restarts did not move the leader");
    assert!(wait_healthy(&c, Duration::from_secs(30)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_replica_is_left_alone_until_an_operator_reinitializes_it() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let (code, text) = request(&c, leader, "POST", "/reinitialize", "{}");
    assert_eq!((code, text.contains("I am the leader")), (503, true), "{text}");
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute("CREATE TABLE story (id int); INSERT INTO story VALUES (42)").await.unwrap();

    // The replica's host crashes and comes back with a broken data directory (no control file).
    c.kill_agent(victim);
    c.kill_postgres(victim);
    std::fs::remove_file(c.data_dir(victim).join("global/pg_control")).unwrap();
    c.start_agent(victim);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.data_dir(victim).join("base").is_dir(), "the agent did not wipe a directory it cannot read");
    let log = std::fs::read_to_string(c.log_path(victim)).unwrap();
    assert!(log.contains("not usable"), "the agent says why it does nothing");

    let (code, text) = request(&c, victim, "POST", "/reinitialize", "{}");
    assert_eq!(code, 200, "{text}");
    assert!(
        support::wait_until(Duration::from_secs(90), Duration::from_millis(250), || is_streaming_replica(
            &c, victim, None
        )),
        "the reinitialized replica streams again"
    );
    let r = support::connect_superuser(c.pg_port(victim)).await.unwrap();
    let n: i32 = r.query_one("SELECT id FROM story", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_whose_data_directory_was_deleted_under_it_is_stopped_and_cloned_again() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let old_pm = c.agent(victim).postmaster_pid().expect("postmaster");
    // Delete it while PostgreSQL runs (retrying: the server keeps creating files meanwhile).
    let data = c.data_dir(victim).to_path_buf();
    assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        std::fs::remove_dir_all(&data).is_ok() || !data.exists()
    }));
    assert!(support::process::wait_gone(old_pm, Duration::from_secs(15)), "the agent stopped the orphaned server");
    assert!(
        support::wait_until(Duration::from_secs(90), Duration::from_millis(250), || is_streaming_replica(
            &c, victim, None
        )),
        "the replica was cloned again and streams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_edit_config_changes_parameters_on_a_rampart_cluster() {
    let c = Cluster::start(3, ClusterOptions::default());
    wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let out = c.patronictl(&["edit-config", "-p", "work_mem=9MB", "--force"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "patronictl edit-config: {text}");
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(250), || async {
            let mut all = true;
            for i in 0..3 {
                all &= show(c.pg_port(i), "work_mem").await.as_deref() == Some("9MB");
            }
            all
        })
        .await,
        "work_mem set by patronictl reaches every member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_without_a_candidate_hands_over_to_a_healthy_replica() {
    let c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let (code, text) = request(&c, old, "POST", "/switchover", &format!(r#"{{"leader": "{}"}}"#, c.name(old)));
    assert_eq!(code, 200, "{text}");
    let new = c.leader_index().expect("a leader");
    assert_ne!(new, old);
    assert!(support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        (0..3).filter(|&i| i != new).all(|i| is_streaming_replica(&c, i, Some(2)))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_ttl_reaches_every_members_lease_and_metrics_follow_the_roles() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");

    // Dashboards: /metrics with Patroni's names on a real agent.
    let metrics = |i: usize| support::client::http_request(c.api_port(i), "GET", "/metrics", None).unwrap().body;
    let m = metrics(leader);
    assert!(m.contains(&format!("patroni_primary{{scope=\"postgres\",name=\"{}\"}} 1", c.name(leader))), "{m}");
    let r = (0..3).find(|&i| i != leader).unwrap();
    assert!(metrics(r).contains(&format!("patroni_replica{{scope=\"postgres\",name=\"{}\"}} 1", c.name(r))));

    // ttl changed in the DCS: every member moves its key to a lease with the new TTL.
    let (code, text) = request(&c, leader, "PATCH", "/config", r#"{"ttl": 14}"#);
    assert_eq!(code, 200, "{text}");
    let granted_ttls = || -> Vec<i64> {
        (0..3)
            .filter_map(|i| {
                let key = format!("{}members/{}", c.dcs_prefix(), c.name(i));
                let out = c.etcd().etcdctl(&["get", &key, "-w", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let lease = v["kvs"][0]["lease"].as_i64()?;
                let out = c.etcd().etcdctl(&["lease", "timetolive", &format!("{lease:x}"), "-w", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                v["granted-ttl"].as_i64()
            })
            .collect()
    };
    assert!(
        support::wait_until(Duration::from_secs(15), Duration::from_millis(300), || granted_ttls() == vec![14, 14, 14]),
        "member leases: {:?}",
        granted_ttls()
    );
}
