//! Hot-standby-critical settings (`max_connections` and the like) across the cluster, as an
//! operator meets them: a standby must never run below the primary whose WAL it replays, or
//! PostgreSQL pauses its replay ("insufficient parameter settings") or refuses to start it.
//! * raising `max_connections` with `edit-config` and switching over twice (the second time to
//!   the member restarted with the new value, whose promotion announces it to the WAL) leaves
//!   every replica replaying: each one's `pg_get_wal_replay_pause_state()` is `not paused` and a
//!   table written on the leader reaches it; each switchover reports, and exits 0 for, the member
//!   that really leads. The member left on the old value is held in maintenance mode for a
//!   while, to see it unhealthy until restarted: not `streaming` in `/patroni` or `list`, 503 on
//!   `/replica`, refused as a switchover candidate;
//! * a replica whose configuration asks for less than its control file records starts with the
//!   control file's value (said in its log, flagged as a pending restart, as Patroni does) and
//!   replays.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::client::query_text;
use support::cluster::{Cluster, ClusterOptions};
use support::ctl::{ctl, expect_ok, list_rows, pending_restart, row};
use support::health::wait_healthy;

/// Switches over to `cand` with `rampart switchover` and checks that it says so, succeeds, and
/// that `cand` really leads: it holds the lock and answers `/primary`.
fn switch_over_to(c: &Cluster, cfg: &Path, cand: usize) {
    let out = expect_ok("switchover", &ctl(cfg, &["switchover", "--candidate", c.name(cand), "--force"]));
    assert!(out.contains(&format!("Successfully switched over to \"{}\"", c.name(cand))), "{out}");
    assert_eq!(c.leader_name().as_deref(), Some(c.name(cand)), "who holds the lock after:\n{out}");
    assert_eq!(support::http_status(c.api_port(cand), "GET", "/primary"), 200, "{out}");
}

/// Writes table `table` on the leader and waits until every other member replays it: its replay
/// is not paused and the row is there.
async fn every_replica_replays(c: &Cluster, leader: usize, table: &str) {
    support::client::sql(c.pg_port(leader), &format!("CREATE TABLE {table} AS SELECT 1 AS id")).await;
    for i in (0..c.len()).filter(|&i| i != leader) {
        let port = c.pg_port(i);
        let replays =
            |s: &(Option<String>, Option<String>)| s.0.as_deref() == Some("not paused") && s.1.as_deref() == Some("1");
        let give_up = Instant::now() + Duration::from_secs(90);
        let seen = loop {
            let seen = (
                query_text(port, "pg_catalog.pg_get_wal_replay_pause_state()").await,
                query_text(port, &format!("SELECT count(*) FROM {table}")).await,
            );
            if replays(&seen) || Instant::now() >= give_up {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            replays(&seen),
            "{} does not replay {table} (pause state, rows: {seen:?}); its /patroni: {:?}",
            c.name(i),
            support::health::status(c, i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_max_connections_and_switching_over_twice_leaves_every_replica_replaying() {
    let c = Cluster::start(3, ClusterOptions::default());
    let first = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    let cfg = c.config_path(0).to_path_buf();

    expect_ok("edit-config", &ctl(&cfg, &["edit-config", "-p", "max_connections=150", "--force"]));
    let pending = support::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        list_rows(&cfg).is_some_and(|rows| rows.len() == 3 && rows.iter().all(pending_restart))
    });
    assert!(pending, "every member waits for a restart to apply max_connections = 150");

    // The old leader restarts as a replica with 150; the new one keeps running 100.
    let second = (0..3).find(|&i| i != first).unwrap();
    switch_over_to(&c, &cfg, second);
    every_replica_replays(&c, second, "after_first").await;

    // Back to the member that runs 150: its promotion tells the WAL, and the member still on 100
    // must be brought up to it rather than left paused. In maintenance mode nobody restarts it,
    // so what it looks like meanwhile can be seen: not streaming, no replica route, no candidate.
    expect_ok("pause", &ctl(&cfg, &["pause", "--wait"]));
    switch_over_to(&c, &cfg, first);
    let third = (0..3).find(|&i| i != first && i != second).unwrap();
    let blocked = support::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        support::health::status(&c, third).is_some_and(|s| s["replay_blocked"] == true)
    });
    assert!(
        blocked,
        "{} stays paused for insufficient settings: {:?}",
        c.name(third),
        support::health::status(&c, third)
    );
    let s = support::health::status(&c, third).unwrap();
    assert_eq!((s["xlog"]["paused"].as_bool(), s.get("replication_state")), (Some(true), None), "{s}");
    assert_eq!(support::http_status(c.api_port(third), "GET", "/replica"), 503);
    let rows = list_rows(&cfg).unwrap_or_default();
    assert!(row(&rows, c.name(third)).is_some_and(|r| r["State"] != "streaming"), "{rows:?}");
    let refused = ctl(&cfg, &["switchover", "--candidate", c.name(third), "--force"]);
    assert!(!refused.status.success(), "a switchover to it is refused: {}", support::ctl::stdout(&refused));
    assert_eq!(c.leader_name().as_deref(), Some(c.name(first)));

    // Out of maintenance mode it is restarted with the primary's value and replays.
    expect_ok("resume", &ctl(&cfg, &["resume", "--wait"]));
    every_replica_replays(&c, first, "after_second").await;
    for i in (0..3).filter(|&i| i != first) {
        let running = query_text(c.pg_port(i), "current_setting('max_connections')").await;
        assert!(running.and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 150), "{}", c.name(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_configured_below_its_control_file_starts_with_the_control_file_values() {
    let c = Cluster::start(
        2,
        ClusterOptions::default().tweak(|_, mut n| {
            n.dcs_parameters.push(("max_connections".into(), "150".into()));
            n
        }),
    );
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and a streaming replica");
    let replica = 1 - leader;

    // Stopped, and configured below what its control file (the primary's 150) records.
    let mut c = c;
    assert!(c.stop_agent(replica, Duration::from_secs(60)), "the replica's agent stops");
    let lower = c.node(replica).config.clone().parameter("max_connections", "100");
    lower.write(c.config_path(replica)).unwrap();
    c.start_agent(replica);

    every_replica_replays(&c, leader, "after_restart").await;
    assert_eq!(query_text(c.pg_port(replica), "current_setting('max_connections')").await.as_deref(), Some("150"));
    let log = std::fs::read_to_string(c.log_path(replica)).unwrap_or_default();
    assert!(
        log.contains("max_connections value in pg_controldata: 150, in the global configuration: 100."),
        "the agent says why it runs 150:\n{}",
        support::tail_file(c.log_path(replica), 30)
    );
    let rows = list_rows(c.config_path(0)).unwrap_or_default();
    assert!(row(&rows, c.name(replica)).is_some_and(pending_restart), "as in Patroni, a pending restart: {rows:?}");
}
