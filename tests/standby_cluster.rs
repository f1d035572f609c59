//! Story: a second data centre kept as a standby cluster, and a planned move of the primary role
//! from one data centre to the other, as Patroni users do it with `standby_cluster`,
//! `demote-cluster` and `promote-cluster`.
//!
//! 1. Cluster `dc1` (one member) runs as usual and keeps a permanent physical slot `dc2` for the
//!    other data centre. Rows are written.
//! 2. Cluster `dc2` (two members) starts with `standby_cluster` (dc1's host and port,
//!    `primary_slot_name: dc2`) in its `bootstrap.dcs`. Its first member copies dc1 and becomes the
//!    standby leader, streaming from dc1 through the slot; the second member copies the standby
//!    leader and cascades from it. `rampart list` shows a Standby Leader; the REST API answers
//!    `/standby-leader` and `/leader` with 200 and `/primary` with 503; no dc2 member takes a
//!    write; dc1's rows, old and new, reach both. A switchover (`rampart switchover`) hands the
//!    standby leader's role to the other member; the former one cascades from it.
//! 3. The standby leader crashes (agent and PostgreSQL killed): the other dc2 member takes the lock
//!    and becomes the standby leader, read-only still, following dc1 through the same slot: rows
//!    written in dc1 afterwards reach it.
//! 4. The planned move: `rampart demote-cluster` on dc1, pointing at dc2's standby leader: dc1's
//!    leader restarts as a standby leader, keeping its lock, read-only. Then `rampart
//!    promote-cluster` on dc2: its standby leader is promoted, writable on a new timeline, and
//!    dc1 follows it there: a row written in dc2 reaches dc1. No row was lost on the way.

//!
//! Second story: a standby cluster fed by the other cluster's WAL archive alone (no connection to
//! its primary, as a DR site that only reaches the backup storage).
//!
//! 1. `dc1` archives its WAL; an operator took a base backup of it.
//! 2. `dc3`'s `standby_cluster` has only a `restore_command` (dc1's archive) and
//!    `create_replica_methods: [restore]`, a custom method (`no_leader`) that copies the base
//!    backup. Its member is bootstrapped with that method, becomes the standby leader, has no
//!    `primary_conninfo`, replays what dc1 archives (rows written in dc1 reach it once their
//!    segment is archived) and takes no write.
//! 3. Patroni's own `patronictl promote-cluster` makes dc3 run on its own: its member is writable,
//!    on a new timeline, with every row dc1 archived.

mod support;

use std::process::Output;
use std::time::Duration;

use support::client::{is_in_recovery, query_text, sql};
use support::cluster::{Cluster, ClusterOptions};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The number of rows in `story` on the server at `port` (`None` while it does not answer).
async fn rows(port: u16) -> Option<i64> {
    query_text(port, "SELECT count(*)::text FROM story").await.and_then(|t| t.parse().ok())
}

/// Waits until the server at `port` has `n` rows in `story`.
async fn wait_rows(port: u16, n: i64, timeout: Duration) -> bool {
    support::wait_until_async(timeout, Duration::from_millis(250), || async move { rows(port).await == Some(n) }).await
}

/// Waits until the member key of `c`'s leader shows `role`; returns the leader's index.
fn wait_leader_role(c: &Cluster, role: &str, timeout: Duration) -> Option<usize> {
    let mut found = None;
    support::wait_until(timeout, Duration::from_millis(250), || {
        found = c
            .leader_index()
            .filter(|&i| support::client::get_json(c.api_port(i), "/patroni").is_some_and(|v| v["role"] == role));
        found.is_some()
    });
    found
}

/// Waits until member `i` holds `c`'s lock and its key shows it as the standby leader (the logs
/// are printed when it does not).
fn becomes_standby_leader(c: &Cluster, i: usize, timeout: Duration) -> bool {
    let done = support::wait_until(timeout, Duration::from_millis(250), || {
        c.leader_index() == Some(i)
            && support::client::get_json(c.api_port(i), "/patroni").is_some_and(|v| v["role"] == "standby_leader")
    });
    if !done {
        c.dump_logs();
    }
    done
}

/// Waits until the server at `port` answers in recovery.
async fn wait_in_recovery(port: u16, timeout: Duration) -> bool {
    support::wait_until_async(timeout, Duration::from_millis(250), || async move {
        is_in_recovery(port).await == Some(true)
    })
    .await
}

/// Whether a write on the server at `port` is refused as in a read-only transaction.
async fn refuses_writes(port: u16) -> bool {
    let Ok(db) = support::connect_superuser(port).await else { return false };
    match db.execute("INSERT INTO story (phase) VALUES ('must not be written')", &[]).await {
        Ok(_) => false,
        Err(e) => e.as_db_error().is_some_and(|d| d.message().contains("read-only transaction")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_follows_the_other_data_centre_fails_over_inside_and_takes_over_when_asked() {
    // 1. dc1, with a slot kept for dc2.
    let dc1 = Cluster::start(
        1,
        ClusterOptions { scope: "dc1".into(), ..Default::default() }.tweak(|_, mut cfg| {
            cfg.dcs_yaml.push_str("    slots:\n      dc2:\n        type: physical\n");
            cfg
        }),
    );
    assert_eq!(dc1.wait_for_single_primary(Duration::from_secs(90)).await, Some(0), "dc1 leads");
    let p1 = dc1.pg_port(0);
    sql(p1, "CREATE TABLE story (id serial PRIMARY KEY, phase text)").await;
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 before dc2' FROM generate_series(1, 100)").await;

    // 2. dc2, a standby cluster of dc1.
    let mut dc2 = Cluster::start(
        2,
        ClusterOptions { scope: "dc2".into(), stagger: Duration::from_millis(3000), ..Default::default() }.tweak(
            move |_, mut cfg| {
                cfg.dcs_yaml.push_str(&format!(
                    "    standby_cluster:\n      host: 127.0.0.1\n      port: {p1}\n      primary_slot_name: dc2\n"
                ));
                cfg
            },
        ),
    );
    let Some(sl) = wait_leader_role(&dc2, "standby_leader", Duration::from_secs(120)) else {
        dc2.dump_logs();
        panic!("dc2 has no standby leader");
    };
    let other = 1 - sl;
    let (sl_port, other_port) = (dc2.pg_port(sl), dc2.pg_port(other));
    assert!(wait_rows(sl_port, 100, Duration::from_secs(60)).await, "dc1's rows reach the standby leader");
    assert!(wait_rows(other_port, 100, Duration::from_secs(90)).await, "and the member cascading from it");
    assert_eq!(is_in_recovery(sl_port).await, Some(true), "the standby leader stays in recovery");
    assert!(refuses_writes(sl_port).await && refuses_writes(other_port).await, "no dc2 member takes a write");
    assert_eq!(
        query_text(p1, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'dc2'").await.as_deref(),
        Some("true"),
        "the standby leader streams from dc1 through the slot kept for it"
    );
    let upstream_port = query_text(other_port, "SELECT sender_port::text FROM pg_stat_wal_receiver").await;
    assert_eq!(upstream_port, Some(sl_port.to_string()), "the other dc2 member cascades from the standby leader");
    let status = |path: &str| support::client::http_status(dc2.api_port(sl), "GET", path);
    assert_eq!((status("/standby-leader"), status("/leader"), status("/primary")), (200, 200, 503));
    assert_eq!(support::client::http_status(dc2.api_port(other), "GET", "/replica"), 200);
    let list = dc2.rampart(["list", "-c", &dc2.config_path(0).display().to_string()]);
    assert!(text(&list).contains("Standby Leader"), "{}", text(&list));
    // A switchover inside dc2 hands the standby leader's role to the other member.
    let switchover = dc2.rampart([
        "switchover",
        "-c",
        &dc2.config_path(sl).display().to_string(),
        "--leader",
        dc2.name(sl),
        "--candidate",
        dc2.name(other),
        "--force",
    ]);
    assert!(switchover.status.success(), "{}", text(&switchover));
    assert!(becomes_standby_leader(&dc2, other, Duration::from_secs(60)), "the candidate is the standby leader now");
    let (sl, other) = (other, sl);
    let (sl_port, other_port) = (other_port, sl_port);
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 while dc2 follows' FROM generate_series(1, 50)").await;
    assert!(
        wait_rows(other_port, 150, Duration::from_secs(60)).await,
        "new rows reach dc2 through its new standby leader"
    );
    let upstream_port = query_text(other_port, "SELECT sender_port::text FROM pg_stat_wal_receiver").await;
    assert_eq!(upstream_port, Some(sl_port.to_string()), "the former standby leader cascades from the new one");
    assert!(refuses_writes(sl_port).await && refuses_writes(other_port).await, "still no write in dc2");

    // 3. The standby leader crashes: the other member takes over as the standby leader.
    dc2.kill_agent(sl);
    dc2.kill_postgres(sl);
    assert!(becomes_standby_leader(&dc2, other, Duration::from_secs(90)), "the other dc2 member took over");
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 after the dc2 failover' FROM generate_series(1, 50)").await;
    assert!(wait_rows(other_port, 200, Duration::from_secs(60)).await, "the new standby leader follows dc1");
    assert!(refuses_writes(other_port).await, "and stays read-only");
    let sender = query_text(other_port, "SELECT sender_port::text FROM pg_stat_wal_receiver").await;
    assert_eq!(sender, Some(p1.to_string()), "straight from dc1");

    // 4. The planned move: dc1 becomes a standby of dc2, then dc2 runs on its own.
    let demote = dc1.rampart([
        "demote-cluster",
        "-c",
        &dc1.config_path(0).display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &other_port.to_string(),
        "--force",
    ]);
    if !demote.status.success() {
        dc1.dump_logs();
    }
    assert!(demote.status.success(), "{}", text(&demote));
    assert!(text(&demote).contains("cluster is successfully demoted"), "{}", text(&demote));
    assert!(wait_in_recovery(p1, Duration::from_secs(30)).await, "dc1's leader runs in recovery");
    assert!(refuses_writes(p1).await, "dc1 takes no more writes");
    let promote = dc2.rampart(["promote-cluster", "-c", &dc2.config_path(other).display().to_string(), "--force"]);
    if !promote.status.success() {
        dc2.dump_logs();
    }
    assert!(promote.status.success(), "{}", text(&promote));
    assert!(text(&promote).contains("cluster is successfully promoted"), "{}", text(&promote));
    assert_eq!(dc2.wait_for_single_primary(Duration::from_secs(60)).await, Some(other), "dc2 runs on its own");
    assert_eq!(
        query_text(other_port, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").await.as_deref(),
        Some("00000002"),
        "on a new timeline"
    );
    sql(other_port, "INSERT INTO story (phase) VALUES ('dc2 after the move')").await;
    let followed = wait_rows(p1, 201, Duration::from_secs(60)).await;
    if !followed {
        dc1.dump_logs();
    }
    assert!(followed, "dc1 follows dc2 onto its timeline: {:?} rows", rows(p1).await);
    assert_eq!(
        query_text(p1, "SELECT string_agg(phase || ':' || n, ', ' ORDER BY phase) FROM (SELECT phase, count(*) n FROM story GROUP BY phase) s")
            .await
            .as_deref(),
        Some("dc1 after the dc2 failover:50, dc1 before dc2:100, dc1 while dc2 follows:50, dc2 after the move:1"),
        "no row lost on the way"
    );
    dc1.assert_no_password_in_logs();
    dc2.assert_no_password_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_fed_by_the_archive_alone_replays_what_the_other_cluster_archives() {
    // 1. dc1 archives its WAL; a base backup of it.
    let dc1 = Cluster::start(
        1,
        ClusterOptions { scope: "dc1".into(), ..Default::default() }.tweak(|_, cfg| {
            let archive = cfg.node_dir.parent().unwrap().join("archive").display().to_string();
            cfg.parameter("archive_mode", "'on'").parameter(
                "archive_command",
                &format!("'mkdir -p {archive} && test ! -f {archive}/%f && cp %p {archive}/%f'"),
            )
        }),
    );
    assert_eq!(dc1.wait_for_single_primary(Duration::from_secs(90)).await, Some(0), "dc1 leads");
    let p1 = dc1.pg_port(0);
    sql(p1, "CREATE TABLE story (id serial PRIMARY KEY, phase text)").await;
    sql(p1, "INSERT INTO story (phase) SELECT 'before the backup' FROM generate_series(1, 100)").await;
    let backup = dc1.dir().join("base");
    assert!(support::base_backup::take(p1, &backup), "a base backup of dc1");

    // 2. dc3 follows dc1's archive only.
    let restore = support::base_backup::restore_script(dc1.dir(), &backup);
    let archive = dc1.dir().join("archive").display().to_string();
    let dc3 = Cluster::start(
        1,
        ClusterOptions { scope: "dc3".into(), ..Default::default() }.tweak(move |_, mut cfg| {
            cfg.dcs_yaml.push_str(&format!(
                "    standby_cluster:\n      restore_command: 'cp {archive}/%f %p'\n      create_replica_methods: \
                 [restore]\n"
            ));
            cfg.pg_settings.push(("create_replica_methods".into(), "[restore, basebackup]".into()));
            cfg.pg_settings.push(("restore".into(), format!("{{command: '{restore}', no_leader: true}}")));
            cfg
        }),
    );
    if wait_leader_role(&dc3, "standby_leader", Duration::from_secs(90)).is_none() {
        dc3.dump_logs();
        panic!("dc3 has no standby leader");
    }
    let p3 = dc3.pg_port(0);
    let log = std::fs::read_to_string(dc3.log_path(0)).unwrap_or_default();
    assert!(log.contains("replica has been created using restore"), "made with the section's method");
    assert!(wait_in_recovery(p3, Duration::from_secs(30)).await, "the standby leader runs in recovery");
    assert_eq!(
        query_text(p3, "SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'").await.as_deref(),
        Some(""),
        "it connects to no primary"
    );
    sql(p1, "INSERT INTO story (phase) SELECT 'after the backup' FROM generate_series(1, 50)").await;
    sql(p1, "SELECT pg_switch_wal()").await;
    let replayed = wait_rows(p3, 150, Duration::from_secs(60)).await;
    if !replayed {
        dc3.dump_logs();
    }
    assert!(replayed, "rows archived by dc1 reach dc3: {:?}", rows(p3).await);
    assert!(refuses_writes(p3).await, "dc3 takes no write");
    assert_eq!(support::client::http_status(dc3.api_port(0), "GET", "/standby-leader"), 200);

    // 3. patronictl promotes it.
    let promote = support::patronictl(dc3.config_path(0), &["promote-cluster", "dc3", "--force"]);
    if !promote.status.success() {
        dc3.dump_logs();
    }
    assert!(text(&promote).contains("cluster is successfully promoted"), "{}", text(&promote));
    assert_eq!(dc3.wait_for_single_primary(Duration::from_secs(60)).await, Some(0), "dc3 runs on its own");
    sql(p3, "INSERT INTO story (phase) VALUES ('dc3 on its own')").await;
    assert_eq!(rows(p3).await, Some(151));
    assert_eq!(
        query_text(p3, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").await.as_deref(),
        Some("00000002"),
        "on a new timeline"
    );
}
