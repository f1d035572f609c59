//! Story: whose `pg_hba.conf` is it? As in Patroni, the operator's, unless `postgresql.pg_hba`
//! says otherwise.
//!
//! 1. A new cluster's leader runs with initdb's rules and `bootstrap.pg_hba` appended after them,
//!    once; its replica runs with the copy pg_basebackup brought.
//! 2. The operator adds a rule by hand (rejecting the role `blocked`) and reloads: the rule holds,
//!    and still holds after a restart through the REST API: the agent never rewrites the file.
//! 3. `postgresql.pg_hba` set in the dynamic configuration: every member writes the file from it
//!    and reloads within a few cycles, and `blocked` logs in again.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, wait_healthy};

const BLOCKED: &str = "blocked";
const BLOCKED_PASSWORD: &str = "blocked-pw";

/// Whether `blocked` can log in over TCP on member `i`; the server's refusal when not.
async fn blocked_logs_in(c: &Cluster, i: usize) -> Result<(), String> {
    match support::connect(c.pg_port(i), BLOCKED, BLOCKED_PASSWORD).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())),
    }
}

fn hba(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.data_dir(i).join("pg_hba.conf")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_hba_conf_is_the_operators_unless_postgresql_pg_hba_is_set() {
    let c = Cluster::start(2, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let replica = 1 - leader;
    assert!(
        support::wait_until(Duration::from_secs(90), Duration::from_millis(200), || is_streaming_replica(
            &c, replica, None
        )),
        "the replica streams"
    );

    // 1. initdb's rules, then bootstrap.pg_hba once; the replica has the leader's copy.
    let leader_hba = hba(&c, leader);
    let (initdb_part, appended) =
        leader_hba.split_once("# bootstrap.pg_hba").unwrap_or_else(|| panic!("nothing appended:\n{leader_hba}"));
    assert!(initdb_part.contains("# TYPE  DATABASE"), "initdb's file comes first:\n{leader_hba}");
    let rule = format!("host replication {} 127.0.0.1/32 scram-sha-256", support::REPLICATION_USER);
    assert!(appended.contains(&rule), "bootstrap.pg_hba appended:\n{leader_hba}");
    assert_eq!(leader_hba.matches(&rule).count(), 1, "appended once:\n{leader_hba}");
    assert_eq!(hba(&c, replica), leader_hba, "the clone brought the leader's file");

    // 2. The operator's own rule, added by hand, holds across a reload and a restart.
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute(&format!("CREATE ROLE {BLOCKED} LOGIN PASSWORD '{BLOCKED_PASSWORD}'")).await.unwrap();
    blocked_logs_in(&c, leader).await.expect("blocked logs in before the rule");
    let reject = format!("host all {BLOCKED} 127.0.0.1/32 reject\n");
    std::fs::write(c.data_dir(leader).join("pg_hba.conf"), format!("{reject}{leader_hba}")).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let refused = blocked_logs_in(&c, leader).await.expect_err("the operator's rule rejects blocked");
    assert!(refused.contains("pg_hba.conf rejects connection"), "{refused}");

    let restart = support::client::http_request(c.api_port(leader), "POST", "/restart", Some("{}")).unwrap();
    assert_eq!(restart.status, 200, "{}", restart.body);
    let back = support::wait_until_async(Duration::from_secs(60), Duration::from_millis(200), || async {
        support::connect_superuser(c.pg_port(leader)).await.is_ok()
    })
    .await;
    assert!(back, "the leader answers after its restart");
    assert!(hba(&c, leader).starts_with(&reject), "the agent left the operator's file alone:\n{}", hba(&c, leader));
    let refused = blocked_logs_in(&c, leader).await.expect_err("the rule still rejects blocked after the restart");
    assert!(refused.contains("pg_hba.conf rejects connection"), "{refused}");

    // 3. postgresql.pg_hba in the dynamic configuration: every member writes it and reloads.
    let managed = serde_json::json!({"postgresql": {"pg_hba": [
        "local all all trust",
        rule,
        "host all all 127.0.0.1/32 scram-sha-256",
    ]}});
    let patch =
        support::client::http_request(c.api_port(leader), "PATCH", "/config", Some(&managed.to_string())).unwrap();
    assert_eq!(patch.status, 200, "{}", patch.body);
    for i in [leader, replica] {
        let admitted = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(200), || async {
            blocked_logs_in(&c, i).await.is_ok()
        })
        .await;
        assert!(admitted, "member {i} wrote postgresql.pg_hba and reloaded:\n{}", hba(&c, i));
        let text = hba(&c, i);
        assert!(text.starts_with("# Managed by Rampart from postgresql.pg_hba"), "{text}");
        assert!(!text.contains("reject"), "{text}");
    }
}
