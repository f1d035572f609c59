//! Story: a second data centre kept as a standby cluster, following the first one through
//! failovers on both sides, and a planned move of the primary role from one data centre to the
//! other, as Patroni users do it with `standby_cluster`, `demote-cluster` and `promote-cluster`.
//!
//! 1. Cluster `dc1` (two members) runs as usual and keeps a permanent physical slot `dc2` for the
//!    other data centre; HAProxy in front of it sends connections to whichever member answers
//!    `GET /primary` (as seed 000 does). Rows are written.
//! 2. Cluster `dc2` (three members) starts with `standby_cluster` (HAProxy's address,
//!    `primary_slot_name: dc2`) in its `bootstrap.dcs`. Its first member copies dc1 and becomes the
//!    standby leader, streaming from dc1 through the slot; the others copy the standby leader and
//!    cascade from it. `rampart list` shows a Standby Leader; the REST API answers
//!    `/standby-leader` and `/leader` with 200 and `/primary` with 503; no dc2 member takes a
//!    write; dc1's rows reach all three. A switchover (`rampart switchover`) hands the standby
//!    leader's role to another member; the former one cascades from it.
//! 3. The standby leader crashes (agent and PostgreSQL killed): another dc2 member takes the lock
//!    and becomes the standby leader, read-only still, following dc1 through the same slot.
//! 4. dc1's primary crashes: its replica takes over on timeline 2, HAProxy sends the standby
//!    leader's stream there, and rows written on dc1's new primary reach dc2.
//! 5. The planned move: `rampart demote-cluster` on dc1, pointing at dc2's standby leader: dc1's
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
use support::haproxy::Haproxy;

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

/// Waits until one of `members` holds `c`'s lock and its key shows it as the standby leader;
/// returns which (the logs are printed when none does).
fn standby_leader_among(c: &Cluster, members: &[usize], timeout: Duration) -> Option<usize> {
    let mut found = None;
    support::wait_until(timeout, Duration::from_millis(250), || {
        found = c.leader_index().filter(|i| members.contains(i)).filter(|&i| {
            support::client::get_json(c.api_port(i), "/patroni").is_some_and(|v| v["role"] == "standby_leader")
        });
        found.is_some()
    });
    if found.is_none() {
        c.dump_logs();
    }
    found
}

/// HAProxy in front of `c` (TCP, checked by `GET /primary` on each member's REST API, as seed
/// 000's configuration but checking every second), listening on `port`.
fn haproxy_for(c: &Cluster, port: u16) -> Haproxy {
    let mut cfg = format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    timeout client 30m\n    timeout connect 4s\n    \
         timeout server 30m\n    timeout check 2s\n\nlisten postgres\n    bind 127.0.0.1:{port}\n    option httpchk GET \
         /primary\n    http-check expect status 200\n    default-server inter 1s fall 2 rise 1 on-marked-down \
         shutdown-sessions\n"
    );
    for i in 0..c.len() {
        cfg.push_str(&format!("    server pg{i} 127.0.0.1:{} check port {}\n", c.pg_port(i), c.api_port(i)));
    }
    let path = c.dir().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut h = Haproxy::start(&path, &c.dir().join("haproxy.log"));
    assert!(h.wait_listening(port, Duration::from_secs(10)), "haproxy listens on {port}");
    h
}

/// The port the server at `port` receives WAL from.
async fn sender_port(port: u16) -> Option<String> {
    query_text(port, "SELECT sender_port::text FROM pg_stat_wal_receiver").await
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
async fn a_standby_cluster_follows_the_other_data_centre_through_failovers_on_both_sides_and_takes_over() {
    // 1. dc1, with a slot kept for dc2, behind HAProxy.
    let mut dc1 = Cluster::start(
        2,
        ClusterOptions { scope: "dc1".into(), stagger: Duration::from_millis(1500), ..Default::default() }.tweak(
            |_, mut cfg| {
                cfg.dcs_yaml.push_str("    slots:\n      dc2:\n        type: physical\n");
                cfg
            },
        ),
    );
    let l1 = dc1.wait_for_single_primary(Duration::from_secs(90)).await.expect("dc1 leads");
    let r1 = 1 - l1;
    let (p1, hp) = (dc1.pg_port(l1), support::free_port());
    let _haproxy = haproxy_for(&dc1, hp);
    // HAProxy takes every server for up until its first checks: wait until it has marked the
    // replica down (five new connections in a row land on the primary) before dc2 connects.
    let (mut in_a_row, until) = (0, std::time::Instant::now() + Duration::from_secs(30));
    while in_a_row < 5 && std::time::Instant::now() < until {
        in_a_row = if is_in_recovery(hp).await == Some(false) { in_a_row + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = in_a_row >= 5;
    assert!(settled, "HAProxy sends connections to dc1's primary only");
    sql(p1, "CREATE TABLE story (id serial PRIMARY KEY, phase text)").await;
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 before dc2' FROM generate_series(1, 100)").await;

    // 2. dc2, a standby cluster of dc1 through HAProxy.
    let mut dc2 = Cluster::start(
        3,
        ClusterOptions { scope: "dc2".into(), stagger: Duration::from_millis(3000), ..Default::default() }.tweak(
            move |_, mut cfg| {
                cfg.dcs_yaml.push_str(&format!(
                    "    standby_cluster:\n      host: 127.0.0.1\n      port: {hp}\n      primary_slot_name: dc2\n"
                ));
                cfg
            },
        ),
    );
    let sl = standby_leader_among(&dc2, &[0, 1, 2], Duration::from_secs(120)).expect("dc2 has a standby leader");
    let sl_port = dc2.pg_port(sl);
    for i in 0..3 {
        let port = dc2.pg_port(i);
        if !wait_rows(port, 100, Duration::from_secs(90)).await {
            dc1.dump_logs();
            dc2.dump_logs();
            panic!("dc1's rows do not reach dc2's {}", dc2.name(i));
        }
        assert!(refuses_writes(port).await, "{} takes no write", dc2.name(i));
        if i != sl {
            assert_eq!(sender_port(port).await, Some(sl_port.to_string()), "{} cascades", dc2.name(i));
        }
    }
    assert_eq!(is_in_recovery(sl_port).await, Some(true), "the standby leader stays in recovery");
    assert_eq!(sender_port(sl_port).await, Some(hp.to_string()), "the standby leader streams through HAProxy");
    assert_eq!(
        query_text(p1, "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'dc2'").await.as_deref(),
        Some("true"),
        "through the slot dc1 keeps for it"
    );
    let status = |path: &str| support::client::http_status(dc2.api_port(sl), "GET", path);
    assert_eq!((status("/standby-leader"), status("/leader"), status("/primary")), (200, 200, 503));
    let replica = (sl + 1) % 3;
    assert_eq!(support::client::http_status(dc2.api_port(replica), "GET", "/replica"), 200);
    let list = dc2.rampart(["list", "-c", &dc2.config_path(0).display().to_string()]);
    assert!(text(&list).contains("Standby Leader"), "{}", text(&list));

    // A switchover inside dc2 hands the standby leader's role to another member.
    let switchover = dc2.rampart([
        "switchover",
        "-c",
        &dc2.config_path(sl).display().to_string(),
        "--leader",
        dc2.name(sl),
        "--candidate",
        dc2.name(replica),
        "--force",
    ]);
    assert!(switchover.status.success(), "{}", text(&switchover));
    assert_eq!(standby_leader_among(&dc2, &[replica], Duration::from_secs(60)), Some(replica), "switched over");
    let (former, sl) = (sl, replica);
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 while dc2 follows' FROM generate_series(1, 50)").await;
    for i in 0..3 {
        assert!(wait_rows(dc2.pg_port(i), 150, Duration::from_secs(60)).await, "new rows reach {}", dc2.name(i));
    }
    assert_eq!(sender_port(dc2.pg_port(former)).await, Some(dc2.pg_port(sl).to_string()), "the former cascades");

    // 3. The standby leader crashes: another member takes over as the standby leader.
    dc2.kill_agent(sl);
    dc2.kill_postgres(sl);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != sl).collect();
    let sl = standby_leader_among(&dc2, &survivors, Duration::from_secs(90)).expect("another dc2 member took over");
    let sl_port = dc2.pg_port(sl);
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 after the dc2 failover' FROM generate_series(1, 50)").await;
    for &i in &survivors {
        assert!(wait_rows(dc2.pg_port(i), 200, Duration::from_secs(60)).await, "{} follows", dc2.name(i));
    }
    assert!(refuses_writes(sl_port).await, "the new standby leader stays read-only");
    assert_eq!(sender_port(sl_port).await, Some(hp.to_string()), "it streams from dc1 through HAProxy");

    // 4. dc1's primary crashes once its replica has every row: dc2 follows dc1's new primary.
    assert!(wait_rows(dc1.pg_port(r1), 200, Duration::from_secs(30)).await, "dc1's replica is caught up");
    dc1.kill_agent(l1);
    dc1.kill_postgres(l1);
    assert_eq!(dc1.wait_for_single_primary(Duration::from_secs(90)).await, Some(r1), "dc1 failed over");
    let p1 = dc1.pg_port(r1);
    let routed = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async move {
        is_in_recovery(hp).await == Some(false)
    })
    .await;
    assert!(routed, "HAProxy sends connections to dc1's new primary");
    sql(p1, "INSERT INTO story (phase) SELECT 'dc1 after its failover' FROM generate_series(1, 50)").await;
    for &i in &survivors {
        let followed = wait_rows(dc2.pg_port(i), 250, Duration::from_secs(60)).await;
        if !followed {
            dc2.dump_logs();
        }
        assert!(followed, "{} follows dc1 onto its new timeline: {:?}", dc2.name(i), rows(dc2.pg_port(i)).await);
    }

    // 5. The planned move: dc1 becomes a standby of dc2, then dc2 runs on its own.
    let demote = dc1.rampart([
        "demote-cluster",
        "-c",
        &dc1.config_path(r1).display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &sl_port.to_string(),
        "--force",
    ]);
    if !demote.status.success() {
        dc1.dump_logs();
    }
    assert!(text(&demote).contains("cluster is successfully demoted"), "{}", text(&demote));
    assert!(wait_in_recovery(p1, Duration::from_secs(30)).await, "dc1's leader runs in recovery");
    assert!(refuses_writes(p1).await, "dc1 takes no more writes");
    let promote = dc2.rampart(["promote-cluster", "-c", &dc2.config_path(sl).display().to_string(), "--force"]);
    if !promote.status.success() {
        dc2.dump_logs();
    }
    assert!(text(&promote).contains("cluster is successfully promoted"), "{}", text(&promote));
    assert_eq!(dc2.wait_for_single_primary(Duration::from_secs(60)).await, Some(sl), "dc2 runs on its own");
    assert_eq!(
        query_text(sl_port, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").await.as_deref(),
        Some("00000003"),
        "on a new timeline, after dc1's own"
    );
    sql(sl_port, "INSERT INTO story (phase) VALUES ('dc2 after the move')").await;
    let followed = wait_rows(p1, 251, Duration::from_secs(60)).await;
    if !followed {
        dc1.dump_logs();
    }
    assert!(followed, "dc1 follows dc2 onto its timeline: {:?} rows", rows(p1).await);
    assert_eq!(
        query_text(p1, "SELECT string_agg(phase || ':' || n, ', ' ORDER BY phase) FROM (SELECT phase, count(*) n FROM story GROUP BY phase) s")
            .await
            .as_deref(),
        Some(
            "dc1 after its failover:50, dc1 after the dc2 failover:50, dc1 before dc2:100, dc1 while dc2 follows:50, \
             dc2 after the move:1"
        ),
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
    assert_eq!(standby_leader_among(&dc3, &[0], Duration::from_secs(90)), Some(0), "dc3 has a standby leader");
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
