//! Story: pgBackRest in the cluster's life, as seed 002 runs it, with the repository in a local
//! directory and in S3-compatible object storage (moto's server, over HTTPS, path-style).
//!
//! 1. Two members start with their WAL archived through pgBackRest: `archive_mode: on` and
//!    `archive_command: pgbackrest ... archive-push %p` in the bootstrap's dynamic parameters.
//!    The operator creates the stanza on the leader, `pgbackrest check` passes, and a full backup
//!    of the leader lands in the repository.
//! 2. A third member's `create_replica_methods` is `[pgbackrest, basebackup]`, its `pgbackrest`
//!    method seed 002's `pgbackrest ... --delta --link-all restore` (`keep_data`, `no_params`,
//!    `no_leader`). It is started while the leader takes writes. The agent's log says pgBackRest
//!    made it and pgBackRest's log has the restore into its data directory; it then streams from
//!    the leader (the leader's `pg_stat_replication`, its own `pg_stat_wal_receiver`) and has
//!    every row written after the backup.
//! 3. The repository breaks: the object store is stopped, or the directory can no longer be read.
//!    A fourth member with the same methods is started: pgBackRest's restore fails, the agent's
//!    log says why in pgBackRest's own words (connection refused, permission denied), and
//!    `basebackup` makes the member from the leader; it streams and has every row too.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::is_streaming_replica;
use support::pgbackrest::{BackupType, Repo};
use support::s3::S3Server;

/// Where the repository is kept.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Path,
    S3,
}

/// Inserts a row into `story` on the leader every 20 ms until stopped; the id of the last row
/// committed is kept.
struct Writer {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(port: u16) -> Writer {
        let db = support::connect_superuser(port).await.expect("connect to the leader");
        let (stop, last) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI64::new(0)));
        let (s, l) = (stop.clone(), last.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let row = db.query_one("INSERT INTO story (phase) VALUES ('after the backup') RETURNING id", &[]).await;
                l.store(i64::from(row.expect("the leader takes the write").get::<_, i32>(0)), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer { stop, last, task }
    }

    fn last(&self) -> i64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Stops writing; the id of the last row written.
    async fn finish(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer ran");
        self.last.load(Ordering::Relaxed)
    }
}

/// Waits until node `i` of `c` has replayed the row `id` of `story`.
async fn wait_for_row(c: &Cluster, i: usize, id: i64) -> bool {
    let port = c.pg_port(i);
    support::wait_until_async(Duration::from_secs(60), Duration::from_millis(200), || async move {
        support::client::query_text(port, &format!("SELECT count(*) FROM story WHERE id = {id}")).await.as_deref()
            == Some("1")
    })
    .await
}

/// Starts member `i` while the leader (node 0) takes writes, waits until it streams and stops
/// writing: the id of the last row written.
async fn start_while_the_leader_writes(c: &mut Cluster, i: usize) -> i64 {
    let writer = Writer::start(c.pg_port(0)).await;
    let first = writer.last();
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(20), || writer.last() > first + 10),
        "the leader takes writes"
    );
    c.start_agent(i);
    let streams =
        support::wait_until(Duration::from_secs(240), Duration::from_millis(200), || is_streaming_replica(c, i, None));
    assert!(streams, "node{i} streams from the leader");
    writer.finish().await
}

async fn story(store: Store) {
    let started = Instant::now();
    let mut c = Cluster::start(4, ClusterOptions { start_agents: false, ..Default::default() });
    let mut s3 = (store == Store::S3).then(|| S3Server::start(&support::dir::make_agent_dir(&c.dir().join("s3"))));
    let repo_dir = c.dir().join("pgbackrest");
    let repo = match &s3 {
        Some(s3) => Repo::on_s3(&repo_dir, "pg-ha-cluster", s3, "pg-backup"),
        None => Repo::on_path(&repo_dir, "pg-ha-cluster"),
    };
    for i in 0..4 {
        let mut config = c.node(i).config.clone();
        repo.archive_into(&mut config);
        if i >= 2 {
            config.pg_settings.push(("create_replica_methods".into(), "[pgbackrest, basebackup]".into()));
            config.pg_settings.push(("pgbackrest".into(), repo.replica_method()));
        }
        config.write(c.config_path(i)).unwrap();
        c.node_mut(i).agent_env = Repo::agent_env(&config);
    }

    // 1. Two members archiving through pgBackRest; stanza, check, a full backup.
    c.start_agent(0);
    assert_eq!(c.wait_for_leader(Duration::from_secs(60)), Some(0), "the first member bootstraps and leads");
    c.start_agent(1);
    assert!(
        support::wait_until(Duration::from_secs(120), Duration::from_millis(200), || is_streaming_replica(&c, 1, None)),
        "the second member streams from the leader"
    );
    let leader = c.node(0).config.clone();
    assert_eq!(
        support::client::query_text(leader.pg_port, "current_setting('archive_mode')").await.as_deref(),
        Some("on"),
        "archiving is on, from the dynamic configuration"
    );
    support::client::sql(
        leader.pg_port,
        "CREATE TABLE story (id serial PRIMARY KEY, phase text NOT NULL);
         INSERT INTO story (phase) SELECT 'before the backup' FROM generate_series(1, 100)",
    )
    .await;
    repo.stanza_create(&leader);
    let check = repo.check(&leader);
    assert!(check.status.success(), "pgbackrest check passes: {}", String::from_utf8_lossy(&check.stderr));
    repo.backup(&leader, BackupType::Full);
    let info = repo.info();
    assert_eq!(info["status"]["message"], "ok", "{info}");
    let backups = info["backup"].as_array().cloned().unwrap_or_default();
    assert_eq!(backups.len(), 1, "{info}");
    assert_eq!(backups[0]["type"], "full", "{info}");
    eprintln!("[story] {store:?}: stanza, check and a full backup after {:?}", started.elapsed());

    // 2. A member restored from the repository while the leader takes writes.
    let last = start_while_the_leader_writes(&mut c, 2).await;
    eprintln!("[story] {store:?}: the restored member streams after {:?}", started.elapsed());
    let log = std::fs::read_to_string(c.log_path(2)).unwrap();
    assert!(log.contains("replica has been created using pgbackrest"), "the agent says pgBackRest made it");
    assert!(!log.contains("Error creating replica"), "no method failed");
    let restore_log = repo.command_log("restore");
    assert!(
        restore_log.contains("restore command end: completed successfully")
            && restore_log.contains(&c.data_dir(2).display().to_string()),
        "pgBackRest's log has the restore into the member's data directory:\n{restore_log}"
    );
    let replication = support::client::query_text(
        leader.pg_port,
        &format!("SELECT state FROM pg_stat_replication WHERE application_name = '{}'", c.name(2)),
    )
    .await;
    assert_eq!(replication.as_deref(), Some("streaming"), "the leader streams to the restored member");
    let receiver = support::client::query_text(
        c.pg_port(2),
        "SELECT status || ' from port ' || sender_port FROM pg_stat_wal_receiver",
    )
    .await;
    assert_eq!(receiver, Some(format!("streaming from port {}", leader.pg_port)), "it receives WAL from the leader");
    assert!(wait_for_row(&c, 2, last).await, "the restored member has the last row written ({last})");
    let after =
        support::client::query_text(c.pg_port(2), "SELECT count(*) FROM story WHERE phase = 'after the backup'")
            .await
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
    assert_eq!(after, last - 100, "every row written after the backup reached it");

    // 3. With the repository broken, the next method, basebackup, makes the member.
    let why = match s3.as_mut() {
        Some(s3) => {
            s3.stop();
            "Connection refused"
        }
        None => {
            repo.make_unreadable();
            "Permission denied"
        }
    };
    let last = start_while_the_leader_writes(&mut c, 3).await;
    eprintln!("[story] {store:?}: the member made by basebackup streams after {:?}", started.elapsed());
    let log = std::fs::read_to_string(c.log_path(3)).unwrap();
    let failure = log
        .lines()
        .find(|l| l.contains("Error creating replica using method pgbackrest"))
        .expect("the agent logs that the pgbackrest method failed");
    assert!(failure.contains("exited with exit status: 75"), "and how: {failure}");
    let said =
        log.lines().skip_while(|l| !l.contains("Error creating replica")).take(12).collect::<Vec<_>>().join("\n");
    assert!(
        said.contains("ERROR: [075]: no backup set found to restore") && said.contains(why),
        "the agent's log says why, in pgBackRest's words ({why}):\n{said}"
    );
    assert!(log.contains("replica has been created using basebackup"), "basebackup made the member");
    assert!(wait_for_row(&c, 3, last).await, "the member made by basebackup has the last row written ({last})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_restored_from_a_repository_on_a_path_and_basebackup_steps_in_when_it_breaks() {
    story(Store::Path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_restored_from_a_repository_in_s3_and_basebackup_steps_in_when_it_breaks() {
    story(Store::S3).await;
}
