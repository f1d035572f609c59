//! Story: a new cluster starts from a backup, recovered to a point in time (`bootstrap.method`
//! with `recovery_conf`), as seed 002 bootstraps from pgBackRest.
//!
//! 1. A first cluster archives its WAL. Rows are written, a base backup is taken, more rows are
//!    written, the time is noted, and then rows that must not come back are written and archived.
//! 2. A second cluster's `bootstrap.method: restore` copies the base backup into the data
//!    directory; its `recovery_conf` names the archive (`restore_command`) and the noted time
//!    (`recovery_target_time`, without `recovery_target_action`: Rampart promotes at the target).
//! 3. The second cluster's member leads, writable on a new timeline, with every row written before
//!    the target and none after; no recovery file or target setting is left behind.

mod support;

use std::time::Duration;

use support::client::{query_text, sql};
use support::cluster::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_bootstrapped_from_a_backup_recovers_to_the_point_in_time() {
    // The first cluster, archiving.
    let source = Cluster::start(
        1,
        ClusterOptions::default().tweak(|_, cfg| {
            let archive = cfg.node_dir.parent().unwrap().join("archive").display().to_string();
            cfg.parameter("archive_mode", "'on'").parameter(
                "archive_command",
                &format!("'mkdir -p {archive} && test ! -f {archive}/%f && cp %p {archive}/%f'"),
            )
        }),
    );
    assert_eq!(source.wait_for_single_primary(Duration::from_secs(90)).await, Some(0));
    let port = source.pg_port(0);
    sql(port, "CREATE TABLE events (n int, what text)").await;
    sql(port, "INSERT INTO events SELECT g, 'before the backup' FROM generate_series(1, 100) g").await;

    let backup = source.dir().join("base");
    assert!(support::base_backup::take(port, &backup), "pg_basebackup copies the first cluster");

    sql(port, "INSERT INTO events SELECT g, 'after the backup' FROM generate_series(101, 150) g").await;
    let target = query_text(port, "SELECT now()::text").await.expect("the target time");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sql(port, "INSERT INTO events SELECT g, 'after the target' FROM generate_series(151, 200) g").await;
    // The segment the switch completes holds the rows after the target: wait for it in the archive.
    let switched = query_text(port, "SELECT pg_walfile_name(pg_switch_wal())").await.expect("the switched segment");
    let archive = source.dir().join("archive");
    let archived =
        support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || archive.join(&switched).is_file());
    assert!(archived, "{switched} reaches the archive");

    // The second cluster starts from the backup, to the target.
    let restore = support::base_backup::restore_script(source.dir(), &backup);
    let (archive_dir, at) = (archive.display().to_string(), target.clone());
    let restored = Cluster::start(
        1,
        ClusterOptions { scope: "restored".into(), ..Default::default() }.tweak(move |_, mut cfg| {
            cfg.bootstrap_yaml = format!(
                "  method: restore\n  restore:\n    command: {restore}\n    recovery_conf:\n      \
                 restore_command: 'cp {archive_dir}/%f %p'\n      recovery_target_time: '{at}'\n"
            );
            cfg
        }),
    );
    let leads = restored.wait_for_single_primary(Duration::from_secs(120)).await;
    if leads != Some(0) {
        restored.dump_logs();
    }
    assert_eq!(leads, Some(0), "the restored member leads, writable");
    let r = restored.pg_port(0);
    assert_eq!(
        query_text(r, "SELECT string_agg(what || ':' || count, ', ' ORDER BY what) FROM (SELECT what, count(*) FROM events GROUP BY what) s")
            .await
            .as_deref(),
        Some("after the backup:50, before the backup:100"),
        "every row written before {target}, none after"
    );
    sql(r, "INSERT INTO events VALUES (201, 'written after the restore')").await;
    assert_eq!(query_text(r, "SELECT count(*)::text FROM events").await.as_deref(), Some("151"));
    assert_eq!(
        query_text(r, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").await.as_deref(),
        Some("00000002"),
        "a new timeline"
    );
    let data = restored.data_dir(0);
    assert!(!data.join("recovery.signal").exists() && !data.join("standby.signal").exists());
    // The first start's settings give way to the normal ones at the agent's next cycle.
    let conf = || std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    let rewritten = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        !conf().contains("recovery_target")
    });
    assert!(rewritten, "the target is not left in postgresql.conf:\n{}", conf());
}
