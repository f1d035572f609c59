//! Story: a replica that fell too far behind catches up from the WAL archive
//! (`postgresql.recovery_conf`), then streams again.
//!
//! 1. A two-member cluster archives its WAL (`archive_mode`, `archive_command` in the dynamic
//!    parameters); it keeps no replication slot (`use_slots: false`) and no extra WAL
//!    (`wal_keep_size: 0`). The replica's own file says how to read the archive:
//!    `postgresql.recovery_conf.restore_command`, as seed 002 does with pgBackRest.
//! 2. The replica is stopped. The leader writes and switches WAL segments with checkpoints until
//!    the segment the replica needs next is gone from the leader's `pg_wal`.
//! 3. The replica is started: it restores the missing segments from the archive (its log says
//!    "restored log file"), has every row, and then streams from the leader again.
//!
//! Second story: the archive keeps every WAL segment across a crash failover, even those the
//! crashed leader had not archived.
//!
//! 1. The leader's archive refuses for a while (its `archive_command` fails): segments pile up
//!    `.ready` on the leader while the replica receives them.
//! 2. The leader crashes; the replica takes over on timeline 2 and archives from there.
//! 3. The operator mends the old leader's archive and starts it: before pg_rewind it archives what
//!    it had left (`archived a WAL segment left unarchived`), then it streams from the new leader.
//!    The archive then has the old timeline's segments up to the switch, the history file, and
//!    the new timeline's: no gap.

mod support;

use std::time::Duration;

use support::client::{query_text, sql};
use support::cluster::{Cluster, ClusterOptions};
use support::wal::{keep_little_wal, recycle_past, redo_segment, segment_id};

/// A member's archiving: to `archive`, while `<node dir>/archive-ok` exists (the test removes it
/// to make the archive refuse).
fn archiving(cfg: support::NodeConfig, archive: &str) -> support::NodeConfig {
    let gate = cfg.node_dir.join("archive-ok");
    std::fs::create_dir_all(&cfg.node_dir).unwrap();
    std::fs::write(&gate, "").unwrap();
    cfg.parameter("archive_mode", "'on'").parameter(
        "archive_command",
        &format!("'test -f {} && mkdir -p {archive} && test ! -f {archive}/%f && cp %p {archive}/%f'", gate.display()),
    )
}

/// Segment numbers (timeline, log * 256 + seg) of the full segments in `archive`, and whether
/// `name` is there.
fn archived(archive: &std::path::Path) -> (Vec<(u32, u64)>, Vec<String>) {
    let names: Vec<String> = std::fs::read_dir(archive)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    let mut segments: Vec<(u32, u64)> = names
        .iter()
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|n| segment_id(n))
        .collect();
    segments.sort();
    (segments, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_leaders_wal_catches_up_from_the_archive_and_streams_again() {
    let opts = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|i, cfg| {
        let archive = cfg.node_dir.parent().unwrap().join("archive").display().to_string();
        let mut cfg = cfg;
        for (k, v) in [
            ("archive_mode", "'on'".to_string()),
            ("archive_command", format!("'mkdir -p {archive} && test ! -f {archive}/%f && cp %p {archive}/%f'")),
        ] {
            cfg.dcs_parameters.push((k.into(), v));
        }
        keep_little_wal(&mut cfg);
        if i == 1 {
            cfg = cfg.pg_setting("recovery_conf", &format!("{{restore_command: 'cp {archive}/%f %p'}}"));
        }
        cfg
    });
    let mut c = Cluster::start(2, opts);
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(90)).await, Some(0), "node0 bootstraps");
    let (leader, replica) = (c.pg_port(0), c.pg_port(1));
    sql(leader, "CREATE TABLE events (n int)").await;
    sql(leader, "INSERT INTO events VALUES (0)").await;
    let streaming = support::wait_until_async(Duration::from_secs(90), Duration::from_millis(250), || async {
        query_text(replica, "SELECT count(*)::text FROM events").await.as_deref() == Some("1")
    })
    .await;
    assert!(streaming, "node1 replicates the first row");

    // node1 stops; the leader moves on until the WAL node1 needs is gone from its pg_wal.
    assert!(c.stop_agent(1, Duration::from_secs(60)), "node1's agent stops");
    let needed = redo_segment(c.data_dir(1));
    recycle_past(leader, &needed, |n| format!("INSERT INTO events SELECT {n} FROM generate_series(1, 1000)")).await;

    // node1 comes back: from the archive first, then streaming.
    c.start_agent(1);
    let caught_up = support::wait_until_async(Duration::from_secs(120), Duration::from_millis(500), || async {
        query_text(replica, "SELECT count(*)::text FROM events").await.as_deref() == Some("12001")
    })
    .await;
    if !caught_up {
        c.dump_logs();
    }
    assert!(caught_up, "node1 has every row: {:?}", query_text(replica, "SELECT count(*)::text FROM events").await);
    let log = std::fs::read_to_string(c.data_dir(1).with_file_name("node1-postgres.log")).unwrap_or_default();
    assert!(log.contains("restored log file"), "node1 read the archive; its log:\n{log}");
    let streams = support::wait_until_async(Duration::from_secs(60), Duration::from_millis(500), || async {
        query_text(replica, "SELECT status FROM pg_stat_wal_receiver").await.as_deref() == Some("streaming")
            && query_text(leader, "SELECT string_agg(application_name, ',') FROM pg_stat_replication").await.as_deref()
                == Some("node1")
    })
    .await;
    assert!(streams, "node1 streams from the leader again");
    sql(leader, "INSERT INTO events VALUES (-1)").await;
    let live = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        query_text(replica, "SELECT count(*)::text FROM events WHERE n = -1").await.as_deref() == Some("1")
    })
    .await;
    assert!(live, "a new row reaches node1 by streaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_has_every_segment_across_a_crash_failover_with_the_archiver_behind() {
    let opts = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|_, cfg| {
        let archive = cfg.node_dir.parent().unwrap().join("archive").display().to_string();
        archiving(cfg, &archive)
    });
    let mut c = Cluster::start(2, opts);
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(90)).await, Some(0), "node0 bootstraps");
    let archive = c.dir().join("archive");
    let (old, new) = (c.pg_port(0), c.pg_port(1));
    sql(old, "CREATE TABLE events (n int)").await;
    let replicated =
        |n: usize| async move { query_text(new, "SELECT count(*)::text FROM events").await == Some(n.to_string()) };

    // The old leader's archive refuses; three segments wait there while node1 receives them.
    std::fs::remove_file(c.node(0).config.node_dir.join("archive-ok")).unwrap();
    for n in 1..=3 {
        sql(old, &format!("INSERT INTO events VALUES ({n})")).await;
        sql(old, "SELECT pg_switch_wal()").await;
    }
    sql(old, "INSERT INTO events VALUES (4)").await;
    let waiting = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        query_text(old, "SELECT (failed_count > 0)::text FROM pg_stat_archiver").await.as_deref() == Some("true")
    })
    .await;
    assert!(waiting, "node0's archiver fails");
    let all_there =
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || replicated(4)).await;
    assert!(all_there, "node1 received every row");
    let (before, _) = archived(&archive);

    // node0 crashes; node1 takes over on timeline 2.
    c.kill_agent(0);
    c.kill_postgres(0).expect("node0's postmaster");
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(60)).await, Some(1), "node1 takes over");
    sql(new, "INSERT INTO events VALUES (5)").await;
    sql(new, "SELECT pg_switch_wal()").await;
    let history = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let (segments, names) = archived(&archive);
        names.iter().any(|n| n == "00000002.history") && segments.iter().any(|(tl, _)| *tl == 2)
    });
    assert!(history, "node1 archives the new timeline's history and WAL: {:?}", archived(&archive).1);
    let (after_failover, _) = archived(&archive);
    let switch = after_failover.iter().find(|(tl, _)| *tl == 2).map(|(_, s)| *s).expect("a timeline 2 segment");
    let last_old = before.iter().filter(|(tl, _)| *tl == 1).map(|(_, s)| *s).max().unwrap_or(0);
    assert!(last_old + 1 < switch, "a gap before the switch: last archived {last_old}, switch at {switch}");

    // The operator mends node0's archive and starts it: it archives what it had left, rejoins.
    std::fs::write(c.node(0).config.node_dir.join("archive-ok"), "").unwrap();
    c.start_agent(0);
    let rejoined = support::wait_until_async(Duration::from_secs(90), Duration::from_millis(500), || async {
        query_text(new, "SELECT string_agg(application_name, ',') FROM pg_stat_replication").await.as_deref()
            == Some("node0")
    })
    .await;
    if !rejoined {
        c.dump_logs();
    }
    assert!(rejoined, "node0 streams from node1");
    let (segments, names) = archived(&archive);
    let first = segments.iter().find(|(tl, _)| *tl == 1).map(|(_, s)| *s).expect("timeline 1 segments");
    let missing: Vec<u64> = (first..switch).filter(|s| !segments.contains(&(1, *s))).collect();
    assert!(missing.is_empty(), "timeline 1 segments {missing:?} are missing from the archive: {names:?}");
    assert!(names.iter().any(|n| n == "00000002.history"));
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(log.contains("archived a WAL segment left unarchived"), "node0 archived its leftovers first");
}
