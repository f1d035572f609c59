//! Story: a member tagged `nostream` (Patroni 4) never streams: it replays only what
//! `restore_command` brings from the WAL archive, and the leader keeps no replication slot for it.
//! Then, in maintenance mode, the operator stops its PostgreSQL with `pg_ctl stop -m immediate`:
//! the member shows `stopped` (as Patroni shows it, not `crashed`), nothing restarts it, and
//! `patronictl restart` starts it again, as Patroni's restart does.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::cluster::{Cluster, ClusterOptions};

/// A WAL archive shared by the members, as Patroni's acceptance suite sets one up.
fn archive_settings(cfg: support::NodeConfig) -> support::NodeConfig {
    let archive = cfg.node_dir.parent().unwrap().join("archive").display().to_string();
    let mut cfg = cfg;
    cfg.dcs_parameters.push(("archive_mode".into(), "'on'".into()));
    cfg.dcs_parameters.push((
        "archive_command".into(),
        format!("'mkdir -p {archive} && test ! -f {archive}/%f && cp %p {archive}/%f'"),
    ));
    cfg.dcs_parameters.push(("restore_command".into(), format!("'cp {archive}/%f %p'")));
    cfg
}

async fn rows(port: u16, sql: &str) -> Vec<String> {
    match support::connect_superuser(port).await {
        Ok(db) => match db.query(sql, &[]).await {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// Writes `word` on the leader and closes the WAL segment so that it reaches the archive; waits
/// until the nostream member has replayed it.
async fn replays_from_archive(c: &Cluster, leader: usize, member: usize, word: &str) -> bool {
    // Two statements: in one implicit transaction the switch would come before the commit.
    support::client::sql(c.pg_port(leader), &format!("INSERT INTO words VALUES ('{word}')")).await;
    support::client::sql(c.pg_port(leader), "SELECT pg_switch_wal()").await;
    support::wait_until_async(Duration::from_secs(60), Duration::from_millis(500), || async {
        rows(c.pg_port(member), "SELECT w FROM words").await.contains(&word.to_string())
    })
    .await
}

fn member_state(c: &Cluster, i: usize) -> Option<String> {
    let v = c.etcd().get(&format!("{}members/{}", c.dcs_prefix(), c.name(i)))?;
    serde_json::from_str::<serde_json::Value>(&v).ok()?["state"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nostream_member_replays_from_the_archive_and_restarts_in_maintenance_mode() {
    let opts = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|i, cfg| {
        if i == 1 {
            archive_settings(cfg).tag("nostream", "true")
        } else {
            archive_settings(cfg)
        }
    });
    let mut c = Cluster::start(2, opts);
    let leader = c.wait_for_single_primary(Duration::from_secs(90)).await.expect("a primary");
    assert_eq!(leader, 0, "node0 bootstraps");
    support::client::sql(c.pg_port(0), "CREATE TABLE words (w text)").await;

    // node1 is a replica in archive recovery, with nothing streaming and no slot on the leader.
    let in_archive = support::wait_until(Duration::from_secs(90), Duration::from_millis(250), || {
        support::health::status(&c, 1).is_some_and(|s| {
            s["role"] == "replica" && s["state"] == "running" && s["replication_state"] == "in archive recovery"
        })
    });
    assert!(in_archive, "node1 in archive recovery: {:?}", support::health::status(&c, 1));
    assert!(replays_from_archive(&c, 0, 1, "first").await, "node1 replays the archive");
    assert_eq!(
        rows(c.pg_port(0), "SELECT application_name::text FROM pg_stat_replication").await,
        Vec::<String>::new()
    );
    assert_eq!(rows(c.pg_port(0), "SELECT slot_name::text FROM pg_replication_slots").await, Vec::<String>::new());
    assert_eq!(rows(c.pg_port(1), "SELECT status::text FROM pg_stat_wal_receiver").await, Vec::<String>::new());

    // Maintenance mode; the operator stops node1's PostgreSQL the hard way.
    let r = support::http_request(c.api_port(0), "PATCH", "/config", Some(r#"{"pause": true}"#)).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        support::health::status(&c, 1).is_some_and(|s| s["pause"] == true)
    }));
    let pid = c.agent(1).postmaster_pid().expect("node1's postmaster");
    assert!(c.agent(1).signal_postmaster(Signal::SIGQUIT), "pg_ctl stop -m immediate sends SIGQUIT");
    assert!(support::wait_until(Duration::from_secs(30), Duration::from_millis(100), || !support::process::is_alive(
        pid
    )));
    let stopped = support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        member_state(&c, 1).as_deref() == Some("stopped")
    });
    assert!(stopped, "members/node1 state is {:?}, Patroni shows stopped", member_state(&c, 1));
    assert_eq!(support::http_status(c.api_port(1), "GET", "/replica"), 503);

    // patronictl restart starts it again; it replays from the archive as before.
    let out = c.patronictl(&["restart", "postgres", "node1", "--force"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("patronictl restart:\n{text}");
    assert!(out.status.success(), "{text}");
    assert!(replays_from_archive(&c, 0, 1, "second").await, "node1 runs and replays again");
    assert_eq!(member_state(&c, 1).as_deref(), Some("running"));
    assert!(c.agent_mut(1).is_running(), "the agent ran throughout");
}
