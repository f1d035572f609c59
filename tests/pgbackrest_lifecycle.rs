//! Story: a cluster's WAL archive and backups kept by pgBackRest (Debian's 2.45), as seed 002
//! runs them, with the repository in a local directory: the archive serves a replica that fell
//! behind, survives a crash failover without a gap, and new clusters start from it at a point
//! in time.
//!
//! Every member's configuration is the same: `archive_command: pgbackrest ... archive-push %p`
//! in the bootstrap's dynamic parameters, `postgresql.recovery_conf.restore_command: pgbackrest
//! ... archive-get %f "%p"`, no replication slots (`use_slots: false`) and no extra WAL kept
//! (`wal_keep_size: 0`). Each member's own data directory, port and socket directory reach
//! pgBackRest as `PGBACKREST_PG1_*` in its agent's environment, as a per-host
//! `/etc/pgbackrest.conf` would give them.
//!
//! 1. Two members start; the operator creates the stanza on the leader. Cron fires the same line
//!    on both members: `rampart backup --role leader -- pgbackrest ... --type=full backup`. The
//!    leader runs it (a full backup lands in the repository), the replica says who does and
//!    exits 0; `rampart list` and every member's `/metrics` show the success.
//! 2. The replica is stopped. The leader writes and switches WAL segments with checkpoints until
//!    the segment the replica needs next is gone from its `pg_wal`. The replica is started: it
//!    restores the missing segments through `pgbackrest archive-get` (its log says "restored log
//!    file"), has every row, and streams from the leader again.
//! 3. The repository cannot be read for a while (a broken mount): the leader's `archive-push`
//!    fails and its finished segments wait `.ready` while the replica receives them. The leader
//!    crashes (its agent and its postmaster are killed) and the repository is mended: the
//!    replica takes over on timeline 2, and `pgbackrest check` passes on the new primary. The
//!    archive has `00000002.history`, timeline 1's last segment, cut short, as `.partial`, but
//!    not the segments the old leader could not push. The old leader is started: before its
//!    rewind it pushes them with its `archive_command` (its agent's log names each), then
//!    streams from the new leader. The archive now has every segment of timeline 1 from before
//!    the backup up to the switch, and timeline 2's from the switch on: no gap.
//! 4. The new primary writes rows, the time is noted, rows that must not come back are written
//!    and archived. Two new clusters start from the repository at that time, one after the other
//!    (5 and 6); each replays the backup and the archive across the timeline switch, stops at the
//!    target (its log: "starting point-in-time recovery to <target>", "recovery stopping before
//!    commit") and leads, writable, on timeline 3, with every row written before the target
//!    (those written while the repository could not be read among them: they reached the archive
//!    with the old leader's leftovers) and none after.
//! 5. As seed 002 bootstraps: `bootstrap.method: pgbackrest` runs its `boot_pgbackrest.sh`
//!    (`--scope`, `--datadir`), a plain `pgbackrest ... --link-all restore`, and the method's
//!    `recovery_conf` has the archive (`restore_command: pgbackrest ... archive-get`), the
//!    `latest` timeline and the noted `recovery_target_time`. The `restore_command` pgBackRest
//!    wrote into `postgresql.auto.conf` is removed at the first start (the agent's log says so),
//!    and the target leaves `postgresql.conf` once the cluster runs.
//! 6. With pgBackRest's own point-in-time restore: the command is `pgbackrest ... --type=time
//!    --target=<noted time> --target-action=promote restore` with `keep_existing_recovery_conf`,
//!    so its `recovery.signal` and the `restore_command` and target it wrote into
//!    `postgresql.auto.conf` drive the first start; they are gone from there once the cluster
//!    runs.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::client::{query_text, sql};
use support::cluster::{Cluster, ClusterOptions};
use support::health::is_streaming_replica;
use support::pgbackrest::{yaml_quoted, Repo};
use support::wal::{keep_little_wal, recycle_past, redo_segment, segment_id, segment_number};

const STANZA: &str = "pg-ha-cluster";

/// The crontab line on member `i`: `rampart backup -c <its file> --role leader -- pgbackrest ...
/// --type=full backup`, run as the agent's OS user with the member's pgBackRest environment.
fn cron_backup(c: &Cluster, i: usize, repo: &Repo) -> (i32, String) {
    let mut args: Vec<String> =
        vec!["backup".into(), "-c".into(), c.config_path(i).display().to_string(), "--role".into(), "leader".into()];
    args.push("--".into());
    args.extend(repo.command().split_whitespace().map(str::to_string));
    args.extend(["--type=full".to_string(), "backup".to_string()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let env = Repo::agent_env(&c.node(i).config);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = support::agent::run_to_exit(&support::rampart_bin(), &args, c.dir(), &env, Duration::from_secs(300));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let r = support::http_request(c.api_port(i), "GET", "/metrics", None).ok()?;
    r.body.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// What the stanza's WAL archive holds (`pgbackrest repo-ls --recurse archive/<stanza>/15-1`):
/// full segments as (timeline, number), `.partial` segments alike, and the other file names
/// (history files).
#[derive(Debug, Default)]
struct Archive {
    segments: BTreeSet<(u32, u64)>,
    partial: BTreeSet<(u32, u64)>,
    others: BTreeSet<String>,
}

impl Archive {
    fn read(repo: &Repo) -> Archive {
        let listing = repo.run_ok(None, &["repo-ls", "--recurse", &format!("archive/{STANZA}/15-1")]);
        let mut a = Archive::default();
        for path in listing.lines() {
            let name = path.rsplit('/').next().unwrap_or(path);
            let wal = name.len() >= 24 && name[..24].bytes().all(|b| b.is_ascii_hexdigit());
            if !wal {
                a.others.insert(name.to_string());
                continue;
            }
            let id = segment_id(name);
            // A segment is stored as `<name>-<sha1>[.gz]`, a partial one as `<name>.partial-<sha1>[.gz]`.
            match &name[24..] {
                rest if rest.starts_with(".partial") => a.partial.insert(id),
                rest if rest.starts_with('-') => a.segments.insert(id),
                _ => a.others.insert(name.to_string()),
            };
        }
        a
    }

    fn on(&self, timeline: u32) -> Vec<u64> {
        self.segments.iter().filter(|(tl, _)| *tl == timeline).map(|(_, s)| *s).collect()
    }
}

/// Waits until the server at `port` has archived `segment` (or a later one of its timeline).
async fn wait_archived(port: u16, segment: &str) -> bool {
    let segment = segment.to_string();
    support::wait_until_async(Duration::from_secs(60), Duration::from_millis(250), || {
        let segment = segment.clone();
        async move {
            query_text(port, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                .await
                .is_some_and(|last| last.len() >= 24 && last[..24] >= *segment)
        }
    })
    .await
}

/// The rows of `story` on the server at `port`, counted by phase: `phase:count, ...`.
async fn phases(port: u16) -> Option<String> {
    query_text(
        port,
        "SELECT string_agg(phase || ':' || n, ', ' ORDER BY phase) FROM (SELECT phase, count(*) n FROM story GROUP BY phase) s",
    )
    .await
}

/// The timeline of the WAL the server at `port` writes now, as the first 8 digits of its file.
async fn wal_timeline(port: u16) -> Option<String> {
    query_text(port, "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").await
}

/// A one-member cluster `scope` bootstrapped from `repo` by `bootstrap` (the lines under
/// `bootstrap:`), checked to lead, writable, on timeline 3 with the rows `expected` (what
/// [`phases`] says), having replayed the source's timeline 2 from the archive and stopped at
/// `target`; no signal file is left.
async fn restore_from(repo: &Repo, scope: &str, bootstrap: &str, target: &str, expected: &str) -> Cluster {
    let bootstrap = bootstrap.to_string();
    let mut restored = Cluster::start(
        1,
        ClusterOptions { scope: scope.into(), start_agents: false, ..Default::default() }.tweak(move |_, mut cfg| {
            cfg.bootstrap_yaml = bootstrap.clone();
            cfg
        }),
    );
    restored.node_mut(0).agent_env = Repo::agent_env(&restored.node(0).config);
    restored.start_agent(0);
    let leads = restored.wait_for_single_primary(Duration::from_secs(120)).await;
    assert_eq!(leads, Some(0), "{scope}: the restored member leads, writable");
    assert_eq!(restored.wait_for_leader(Duration::from_secs(30)), Some(0), "{scope}: it holds the leader key");
    let r = restored.pg_port(0);
    assert_eq!(phases(r).await.as_deref(), Some(expected), "{scope}: every row written before {target}, none after");
    assert_eq!(wal_timeline(r).await.as_deref(), Some("00000003"), "{scope}: a new timeline, after the source's two");
    let log = std::fs::read_to_string(restored.data_dir(0).with_file_name("node0-postgres.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("starting point-in-time recovery to {target}"))
            && log.contains("restored log file \"00000002")
            && log.contains("recovery stopping before commit of transaction"),
        "{scope}: it replayed the source's timeline 2 from the archive and stopped at the target; its log:\n{log}"
    );
    let restore_log = repo.command_log("restore");
    assert!(
        restore_log.contains("restore command begin")
            && restore_log.contains(&restored.data_dir(0).display().to_string()),
        "{scope}: pgBackRest restored into its data directory:\n{restore_log}"
    );
    sql(r, "INSERT INTO story (phase) VALUES ('5 written after the restore')").await;
    let data = restored.data_dir(0);
    assert!(!data.join("recovery.signal").exists() && !data.join("standby.signal").exists(), "{scope}");
    restored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbackrest_keeps_the_archive_and_backups_through_the_clusters_life() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[story] {what} after {:?}", started.elapsed());
    let mut c = Cluster::start(2, ClusterOptions { start_agents: false, ..Default::default() });
    let repo = Repo::on_path(&c.dir().join("pgbackrest"), STANZA);
    for i in 0..2 {
        let mut config = c.node(i).config.clone();
        repo.archive_into(&mut config);
        keep_little_wal(&mut config);
        config
            .pg_settings
            .push(("recovery_conf".into(), format!("{{restore_command: {}}}", yaml_quoted(&repo.restore_command()))));
        config.write(c.config_path(i)).unwrap();
        c.node_mut(i).agent_env = Repo::agent_env(&config);
    }

    // 1. Two members; the stanza; cron's backup line on both runs on the leader only.
    c.start_agent(0);
    assert_eq!(c.wait_for_leader(Duration::from_secs(60)), Some(0), "node0 bootstraps and leads");
    c.start_agent(1);
    assert!(
        support::wait_until(Duration::from_secs(120), Duration::from_millis(200), || is_streaming_replica(&c, 1, None)),
        "node1 streams from the leader"
    );
    let (leader, replica) = (c.pg_port(0), c.pg_port(1));
    sql(
        leader,
        "CREATE TABLE story (id serial PRIMARY KEY, phase text NOT NULL);
         INSERT INTO story (phase) SELECT '1 before the backup' FROM generate_series(1, 100)",
    )
    .await;
    repo.stanza_create(&c.node(0).config);
    let outputs: Vec<(i32, String)> = (0..2).map(|i| cron_backup(&c, i, &repo)).collect();
    for (i, (code, text)) in outputs.iter().enumerate() {
        assert_eq!(*code, 0, "rampart backup on node{i}: {text}");
    }
    assert!(
        outputs[0].1.contains("backup: running pgbackrest on node0 (leader)") && outputs[0].1.contains("succeeded"),
        "the leader ran pgBackRest: {}",
        outputs[0].1
    );
    assert!(
        outputs[1].1.contains("not running it on node1 (role leader): node0 runs it"),
        "the replica leaves it to the leader: {}",
        outputs[1].1
    );
    let info = repo.info();
    let backups = info["backup"].as_array().cloned().unwrap_or_default();
    assert_eq!(backups.len(), 1, "one backup in the repository: {info}");
    assert_eq!(backups[0]["type"], "full", "{info}");
    assert_eq!(info["status"]["message"], "ok", "{info}");
    let list = c.rampart(["list", "-c", &c.config_path(1).display().to_string()]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains(" Last backup: succeeded on node0 (leader, pgbackrest)"), "{list}");
    let seen = support::wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        (0..2).all(|i| {
            metric(&c, i, "rampart_backup_last_succeeded") == Some(1.0)
                && metric(&c, i, "rampart_backup_last_exit_code") == Some(0.0)
                && metric(&c, i, "rampart_backup_last_success_time").is_some_and(|t| t > 0.0)
        })
    });
    assert!(seen, "every member's /metrics shows the backup succeeded");
    step("stanza and a full backup by cron on the leader");

    // 2. node1 stops; the leader moves on until the WAL node1 needs is gone from its pg_wal.
    assert!(c.stop_agent(1, Duration::from_secs(60)), "node1's agent stops");
    let needed = redo_segment(c.data_dir(1));
    recycle_past(leader, &needed, |n| {
        format!("INSERT INTO story (phase) SELECT '2 while node1 was away' FROM generate_series(1, {n})")
    })
    .await;
    c.start_agent(1);
    let want = phases(leader).await;
    let caught_up = support::wait_until_async(Duration::from_secs(120), Duration::from_millis(500), || async {
        phases(replica).await == want
    })
    .await;
    assert!(caught_up, "node1 has every row: {:?}, the leader {want:?}", phases(replica).await);
    let log = std::fs::read_to_string(c.data_dir(1).with_file_name("node1-postgres.log")).unwrap_or_default();
    // Segments after the one it needed first were never in its pg_wal: only the archive had them.
    let restored: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restored log file \"").nth(1)?.get(..24))
        .filter(|s| *s > needed.as_str())
        .collect();
    assert!(!restored.is_empty(), "node1 restored segments after {needed} from the archive; its log:\n{log}");
    assert_eq!(
        query_text(replica, "current_setting('restore_command')").await,
        Some(repo.restore_command()),
        "the archive node1 restores from is pgBackRest's"
    );
    let streams = support::wait_until_async(Duration::from_secs(60), Duration::from_millis(500), || async {
        query_text(replica, "SELECT status FROM pg_stat_wal_receiver").await.as_deref() == Some("streaming")
            && query_text(leader, "SELECT string_agg(application_name || ' ' || state, ',') FROM pg_stat_replication")
                .await
                .as_deref()
                == Some("node1 streaming")
    })
    .await;
    assert!(streams, "node1 streams from the leader again");
    sql(leader, "INSERT INTO story (phase) VALUES ('2 streamed')").await;
    let live = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        query_text(replica, "SELECT count(*) FROM story WHERE phase = '2 streamed'").await.as_deref() == Some("1")
    })
    .await;
    assert!(live, "a new row reaches node1 by streaming");
    step("node1 caught up from the archive and streams");

    // 3. The repository cannot be read for a while: the leader's finished segments wait `.ready`.
    repo.make_unreadable();
    let mut refused = Vec::new();
    for n in 1..=3 {
        sql(
            leader,
            &format!("INSERT INTO story (phase) SELECT '3 while the archive refused' FROM generate_series(1, {n})"),
        )
        .await;
        refused.push(query_text(leader, "pg_walfile_name(pg_switch_wal())").await.expect("a switched segment"));
    }
    sql(leader, "INSERT INTO story (phase) SELECT '3 before the crash' FROM generate_series(1, 50)").await;
    let failing = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        query_text(leader, "SELECT last_failed_wal FROM pg_stat_archiver").await.is_some()
    })
    .await;
    assert!(failing, "node0's archive-push fails");
    let want = phases(leader).await;
    let received = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(200), || async {
        phases(replica).await == want
    })
    .await;
    assert!(received, "node1 received every row before the crash");

    // node0 crashes; the repository is mended; node1 takes over on timeline 2.
    c.kill_agent(0);
    c.kill_postgres(0).expect("node0's postmaster");
    repo.make_readable();
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(60)).await, Some(1), "node1 takes over");
    assert_eq!(c.wait_for_leader(Duration::from_secs(30)), Some(1), "node1 holds the leader key");
    let new = replica;
    assert_eq!(wal_timeline(new).await.as_deref(), Some("00000002"), "node1 writes timeline 2");
    sql(new, "INSERT INTO story (phase) SELECT '3 after the failover' FROM generate_series(1, 20)").await;
    let new_cfg = c.node(1).config.clone();
    let check = repo.run(Some(&new_cfg), &["--log-level-console=info", "check"]);
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "pgbackrest check passes on the new primary: {said}");
    assert!(
        said.contains("check command end: completed successfully")
            && said.lines().any(|l| l.contains("WAL segment 00000002") && l.contains("successfully archived")),
        "check archived a timeline 2 segment: {said}"
    );
    // Where timeline 2 starts, from node1's own history file.
    let history = std::fs::read_to_string(c.data_dir(1).join("pg_wal/00000002.history")).expect("00000002.history");
    let switch_lsn = history.split_whitespace().nth(1).expect("a switch point in the history file").to_string();
    let (hi, lo) = switch_lsn.split_once('/').expect("an LSN");
    let switch = ((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) >> 24;
    let archive = Archive::read(&repo);
    assert!(
        refused.iter().all(|s| !archive.segments.contains(&(1, segment_number(s)))),
        "the segments node0 could not archive ({refused:?}) are not in the archive yet: {archive:?}"
    );
    assert!(
        archive.partial.contains(&(1, switch)) || archive.segments.contains(&(1, switch)),
        "timeline 1's last segment, cut short at {switch_lsn}, is archived: {archive:?}"
    );
    assert!(archive.others.contains("00000002.history"), "the history file is archived: {archive:?}");
    step("crash failover with the archive behind; check passes on the new primary");

    // node0 comes back: it archives what it had left, then follows node1.
    c.start_agent(0);
    let rejoined = support::wait_until_async(Duration::from_secs(90), Duration::from_millis(500), || async {
        query_text(new, "SELECT string_agg(application_name || ' ' || state, ',') FROM pg_stat_replication")
            .await
            .as_deref()
            == Some("node0 streaming")
    })
    .await;
    assert!(rejoined, "node0 streams from node1");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    let leftovers: Vec<&str> =
        log.lines().filter(|l| l.contains("archived a WAL segment left unarchived before the rewind")).collect();
    assert!(
        refused.iter().all(|s| leftovers.iter().any(|l| l.contains(&format!("segment={s}")))),
        "node0 pushed the segments it had left ({refused:?}) with pgbackrest archive-push: {leftovers:#?}"
    );
    let archive = Archive::read(&repo);
    let old = archive.on(1);
    let first = *old.first().expect("timeline 1 segments in the archive");
    let backup_start = backups[0]["archive"]["start"].as_str().map(segment_number).expect("the backup's first WAL");
    assert!(first <= backup_start, "the archive starts at or before the backup: {archive:?}");
    let missing: Vec<u64> = (first..switch).filter(|s| !archive.segments.contains(&(1, *s))).collect();
    assert!(
        missing.is_empty(),
        "timeline 1 segments {missing:?} are missing before the switch at {switch}: {archive:?}"
    );
    let new_segments = archive.on(2);
    assert_eq!(new_segments.first(), Some(&switch), "timeline 2 is archived from the switch on: {archive:?}");
    let last_new = *new_segments.last().unwrap();
    assert_eq!(new_segments, (switch..=last_new).collect::<Vec<_>>(), "no gap in timeline 2: {archive:?}");
    step("node0 rejoined; the archive has no gap across the timeline switch");

    // 4. Rows before a noted time, rows after it, archived; two new clusters restored to that time.
    sql(new, "INSERT INTO story (phase) SELECT '4 before the target' FROM generate_series(1, 30)").await;
    let target = query_text(new, "now()").await.expect("the target time");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sql(new, "INSERT INTO story (phase) SELECT '4 after the target' FROM generate_series(1, 40)").await;
    let switched = query_text(new, "pg_walfile_name(pg_switch_wal())").await.expect("the switched segment");
    assert!(wait_archived(new, &switched).await, "node1 archives {switched}, with the rows after the target");
    let before_target = phases(new).await.expect("the source's rows");

    let expected = before_target.replace(", 4 after the target:40", "");
    assert_ne!(expected, before_target, "the source has rows after the target: {before_target}");

    // 5. As seed 002 bootstraps: its boot_pgbackrest.sh (`--scope`, `--datadir`) runs a plain
    // `pgbackrest restore`, and the method's `recovery_conf` names the archive and the target.
    let script = c.dir().join("boot_pgbackrest.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nfor a in \"$@\"; do case \"$a\" in --datadir=*) DATA_DIR=\"${{a#--datadir=}}\" ;; esac; done\n\
             mkdir -p -m 700 \"$DATA_DIR\"\nexec {} \"--pg1-path=$DATA_DIR\" --link-all restore\n",
            repo.command()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seed_like = format!(
        "  method: pgbackrest\n  pgbackrest:\n    command: {}\n    keep_existing_recovery_conf: false\n    \
         recovery_conf:\n      recovery_target_timeline: latest\n      restore_command: {}\n      \
         recovery_target_time: '{target}'\n",
        script.display(),
        yaml_quoted(&repo.restore_command())
    );
    let restored = restore_from(&repo, "restored-by-recovery-conf", &seed_like, &target, &expected).await;
    let agent_log = std::fs::read_to_string(restored.log_path(0)).unwrap_or_default();
    assert!(
        agent_log.contains("removing recovery settings another tool left there"),
        "the restore_command pgBackRest left in postgresql.auto.conf gave way to recovery_conf:\n{agent_log}"
    );
    let conf = || std::fs::read_to_string(restored.data_dir(0).join("postgresql.conf")).unwrap_or_default();
    let rewritten = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        !conf().contains("recovery_target_time")
    });
    assert!(rewritten, "the target is not left in postgresql.conf:\n{}", conf());
    drop(restored);
    step("a cluster restored to the point in time with recovery_conf");

    // 6. pgBackRest's own point-in-time restore, its recovery settings kept for the first start.
    let restore = format!(
        "mkdir -p -m 700 \"$PGBACKREST_PG1_PATH\" && {} --type=time \"--target={target}\" --target-action=promote restore",
        repo.command()
    );
    let kept = format!(
        "  method: pgbackrest\n  pgbackrest:\n    command: {}\n    keep_existing_recovery_conf: true\n    no_params: true\n",
        yaml_quoted(&restore)
    );
    let restored = restore_from(&repo, "restored-by-pgbackrest", &kept, &target, &expected).await;
    let data = restored.data_dir(0).to_path_buf();
    let auto_conf = || std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
    let cleaned = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        let text = auto_conf();
        !text.contains("recovery_target") && !text.contains("restore_command")
    });
    assert!(cleaned, "pgBackRest's recovery settings are gone once the agent configures the server:\n{}", auto_conf());
    step("a cluster restored to the point in time by pgBackRest's --type=time");
}
