//! rampart-pg against real PostgreSQL 15: initdb, primary start, probe, roles, slots,
//! pg_basebackup, a streaming replica, promotion, pg_rewind of the diverged old primary, crash
//! detection, and fast and immediate stops with the control file states they leave.
//!
//! PostgreSQL refuses to run as root. When the test runs as root (as in CI), it hands its temporary
//! directory to the `postgres` OS user and re-runs itself, this test only, as that user, then
//! asserts on the child's exit status. Every postmaster started is recorded and, whatever happens,
//! killed by pid at the end (SIGQUIT, then SIGKILL to it and its children).

use rampart_core::slots::{reconcile, SlotKind, SlotSteps, SlotTargets};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, geteuid, Pid, User};
use rampart_core::observe::ClusterState;
use rampart_core::WalsenderSync;
use rampart_core::{DataDir, PgProcess, StartRole, StopMode, Upstream};
use rampart_pg::{
    basebackup, controldata, initdb, observe_local, read_history, rewind, Credentials, ExtraUser, LocalConnect,
    PgSettings, Postmaster, Probe, RewindOutcome, Sql, StopOutcome,
};

const TEST_NAME: &str = "primary_replica_promote_rewind";
const ROOT_ENV: &str = "RAMPART_PG_TEST_ROOT";

/// Postmaster pids started by this process, killed on the way out.
static STARTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[test]
fn primary_replica_promote_rewind() {
    let bin = rampart_pg::settings::default_bin_dir();
    if !bin.join("postgres").is_file() {
        eprintln!("skipping: no PostgreSQL programs in {}", bin.display());
        return;
    }
    if let Some(root) = std::env::var_os(ROOT_ENV) {
        // We are the re-executed child, running as postgres.
        let _reaper = Reaper(PathBuf::from(root.clone()));
        run_scenario(Path::new(&root), &bin);
        return;
    }
    let tmp = tempfile::Builder::new().prefix("rampart-pg-test-").tempdir().unwrap();
    if !geteuid().is_root() {
        let _reaper = Reaper(tmp.path().to_path_buf());
        run_scenario(tmp.path(), &bin);
        return;
    }
    let user = User::from_name("postgres").unwrap().expect("running as root needs a `postgres` OS user");
    chown(tmp.path(), Some(user.uid), Some(user.gid)).unwrap();
    // std drops root's supplementary groups when it switches uid.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROOT_ENV, tmp.path())
        .env("HOME", tmp.path())
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .status()
        .unwrap();
    // If the child died without cleaning up, the postmasters are still named in their pid files.
    drop(Reaper(tmp.path().to_path_buf()));
    assert!(status.success(), "the scenario, run as the postgres user, failed: {status}");
}

fn run_scenario(root: &Path, bin: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(scenario(root, bin));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn settings(root: &Path, bin: &Path, name: &str, port: u16) -> PgSettings {
    let mut s = PgSettings::new(name, root.join(name));
    s.bin_dir = bin.to_path_buf();
    s.listen_hosts = vec!["127.0.0.1".into()];
    s.port = port;
    s.connect_port = port;
    s.local = LocalConnect::Socket(root.join("sock"));
    // Quotes, colons, backslashes and spaces exercise every escaping layer.
    s.superuser = Credentials::new("postgres", "su'per:se\\cret");
    s.replication = Credentials::new("replicator", "re:pl'pa ss");
    s.rewind = Some(Credentials::new("rewinder", "rw\\pw"));
    s.pgpass = root.join(format!("{name}.pgpass"));
    for (k, v) in [("shared_buffers", "16MB"), ("max_connections", "20"), ("fsync", "off"), ("wal_keep_size", "64MB")] {
        s.parameters.insert(k.into(), v.into());
    }
    s.start_timeout = Duration::from_secs(90);
    s.query_timeout = Duration::from_secs(10);
    s
}

fn upstream(s: &PgSettings) -> Upstream {
    Upstream { name: s.name.clone(), host: "127.0.0.1".into(), port: s.port }
}

fn record(pm: &Postmaster) {
    STARTED.lock().unwrap().push(pm.pid().expect("a started postmaster has a pid"));
}

async fn control(s: &PgSettings) -> rampart_core::observe::ControlData {
    match controldata(&s.bin_dir, &s.data_dir).await {
        DataDir::Initialized(c) => c,
        other => panic!("{}: expected an initialized data directory, got {other:?}", s.name),
    }
}

/// Probes until `ok` holds (a replica needs a moment to connect and stream).
async fn probe_until(sql: &Sql, what: &str, ok: impl Fn(&Probe) -> bool) -> Probe {
    let mut last = None;
    for _ in 0..300 {
        match sql.probe().await {
            Ok(p) if ok(&p) => return p,
            Ok(p) => last = Some(format!("{p:?}")),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}; last probe: {}", last.unwrap_or_default());
}

async fn connect(s: &PgSettings, user: &str, password: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(s.port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in over TCP to {}: {e:?}", s.name));
    tokio::spawn(conn);
    client
}

/// The bundled `pg15_settings.tsv` (units, ranges and enum values `--describe-config` does not
/// print) is what this PostgreSQL 15 says in `pg_settings`.
async fn pg15_settings_table_matches_the_server(s: &PgSettings) {
    let db = connect(s, "postgres", s.superuser.password.as_deref().unwrap()).await;
    let rows = db
        .query(
            "SELECT name, vartype, context, coalesce(unit, ''), coalesce(min_val, ''), coalesce(max_val, ''), \
             coalesce(array_to_string(enumvals, '|'), '') FROM pg_settings ORDER BY lower(name)",
            &[],
        )
        .await
        .unwrap();
    let live: Vec<String> =
        rows.iter().map(|r| (0..7).map(|i| r.get::<_, String>(i)).collect::<Vec<_>>().join("\t")).collect();
    let bundled: Vec<&str> =
        rampart_pg::guc::PG15_SETTINGS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(bundled, live, "crates/pg/src/guc/pg15_settings.tsv differs from this server's pg_settings");
}

async fn scenario(root: &Path, bin: &Path) {
    std::fs::create_dir_all(root.join("sock")).unwrap();
    let a = settings(root, bin, "pg-a", free_port());
    let mut b = settings(root, bin, "pg-b", free_port());
    while b.port == a.port {
        b.port = free_port();
    }
    let timeout = Duration::from_secs(60);

    // Bootstrap the first member.
    assert_eq!(controldata(bin, &a.data_dir).await, DataDir::Empty);
    let args: Vec<String> = ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--data-checksums", "--no-sync"]
        .map(String::from)
        .into();
    initdb(&a, &args).await.unwrap();
    let ctl = control(&a).await;
    assert_eq!((ctl.state, ctl.timeline), (ClusterState::ShutDown, 1));

    let pm_a = Postmaster::new(&a.data_dir);
    pm_a.start(&a, &StartRole::Primary).await.unwrap();
    record(&pm_a);
    assert!(pm_a.is_alive());
    assert!(a.data_dir.join("postgresql.base.conf").is_file());
    assert!(!a.data_dir.join("standby.signal").exists());
    let sql_a = Sql::new(&a);
    let p = sql_a.probe().await.unwrap();
    assert!(!p.in_recovery);
    assert_eq!(p.timeline, 1);
    assert_eq!(p.system_identifier, ctl.sysid);
    assert!(p.flush_lsn.is_some() && p.server_version_num >= 150000, "{p:?}");
    assert_eq!(p.upstream, None);
    if p.server_version_num / 10000 == 15 {
        pg15_settings_table_matches_the_server(&a).await;
    }
    let (local, _) = observe_local(&a, &pm_a, &sql_a).await;
    assert!(local.process.is_primary(), "{local:?}");

    // Roles: created, then updated on a second run; their passwords work over SCRAM.
    let extra =
        [ExtraUser { name: "app".into(), password: Some("app'pw\\x".into()), options: vec!["createdb".into()] }];
    sql_a.create_roles(&a, &extra).await.unwrap();
    sql_a.create_roles(&a, &extra).await.unwrap();
    connect(&a, "app", "app'pw\\x").await;
    connect(&a, "postgres", "su'per:se\\cret").await;
    let admin = connect(&a, "rewinder", "rw\\pw").await;
    let can: bool = admin
        .query_one(
            "SELECT has_function_privilege('pg_read_binary_file(text, bigint, bigint, boolean)', 'execute')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(can);

    // Slots: the replica's is created, a stale one a leader once published is dropped, one made
    // by hand is left alone.
    let su = connect(&a, "postgres", "su'per:se\\cret").await;
    su.batch_execute(
        "SELECT pg_create_physical_replication_slot('stale'); SELECT pg_create_physical_replication_slot('by_hand')",
    )
    .await
    .unwrap();
    let targets = SlotTargets {
        primary: true,
        wanted: [("pg_b".to_string(), SlotKind::Physical)].into(),
        managed: ["stale".to_string()].into(),
        ..Default::default()
    };
    let steps = reconcile(&targets, &sql_a.list_slots().await.unwrap(), None);
    let report = sql_a.apply_slot_steps(&steps).await;
    assert_eq!(report.done, vec!["dropped stale".to_string(), "created pg_b (physical)".to_string()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let names: Vec<String> = sql_a.list_slots().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["by_hand".to_string(), "pg_b".to_string()]);
    assert_eq!(reconcile(&targets, &sql_a.list_slots().await.unwrap(), None), Default::default());

    // Clone and stream.
    basebackup(&b, &upstream(&a)).await.unwrap();
    assert_eq!(control(&b).await.sysid, ctl.sysid);
    let pm_b = Postmaster::new(&b.data_dir);
    pm_b.start(&b, &StartRole::Replica { upstream: Some(upstream(&a)) }).await.unwrap();
    record(&pm_b);
    assert!(b.data_dir.join("standby.signal").exists());
    let sql_b = Sql::new(&b);
    let p = probe_until(&sql_b, "pg-b streaming from pg-a", |p| p.streaming).await;
    assert!(p.in_recovery);
    assert_eq!(p.timeline, 1);
    assert_eq!(p.upstream, Some(("127.0.0.1".to_string(), a.port)));
    let pa = probe_until(&sql_a, "pg-a to list pg-b", |p| !p.replication.is_empty()).await;
    assert_eq!(pa.replication[0].application_name.as_deref(), Some("pg-b"));
    // The primary's probe lists its slots beside its flush position (what `status` publishes);
    // a replica's probe lists none.
    let listed: Vec<&str> = pa.slots.iter().flatten().map(|s| s.name.as_str()).collect();
    assert_eq!(listed, ["by_hand", "pg_b"]);
    assert_eq!(p.slots, None);
    assert_eq!(pa.replication[0].usename.as_deref(), Some("replicator"));
    assert_eq!(pa.synchronous_standby_names, "");
    // The flush position shows once the standby has sent its first feedback.
    probe_until(&sql_a, "pg-b's first feedback", |p| p.replication.first().is_some_and(|r| r.flush_lsn.is_some()))
        .await;
    // Synchronous replication: the probe shows the setting in force and how the primary judges
    // the standby under it.
    su.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (\"pg-b\")'").await.unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    assert!(sql_a.wait_for_synchronous_standby_names("ANY 1 (\"pg-b\")", Duration::from_secs(5)).await.unwrap());
    let pa = probe_until(&sql_a, "pg-a to judge pg-b a quorum standby", |p| {
        p.replication.first().is_some_and(|r| r.sync_state.as_deref() == Some("quorum"))
    })
    .await;
    assert_eq!(pa.to_core().walsenders[0].sync_state, WalsenderSync::Quorum);
    assert_eq!(pa.to_core().synchronous_standby_names, "ANY 1 (\"pg-b\")");
    su.batch_execute("ALTER SYSTEM RESET synchronous_standby_names").await.unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    assert!(sql_a.wait_for_synchronous_standby_names("", Duration::from_secs(5)).await.unwrap());
    su.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();
    let target = sql_a.probe().await.unwrap().flush_lsn.unwrap();
    probe_until(&sql_b, "pg-b to replay pg-a's write", |p| p.replayed_lsn.is_some_and(|r| r >= target)).await;
    let (local, _) = observe_local(&b, &pm_b, &sql_b).await;
    assert!(matches!(local.process, PgProcess::Running(ref r) if r.in_recovery && r.streaming), "{local:?}");

    // A second handle adopts the running replica.
    let adopted = Postmaster::new(&b.data_dir);
    assert_eq!(adopted.adopt(), pm_b.pid());
    assert!(adopted.is_alive());

    // Promote pg-b while pg-a still takes writes, so pg-a diverges.
    sql_b.promote().await.unwrap();
    let p = sql_b.probe().await.unwrap();
    assert!(!p.in_recovery);
    assert_eq!(p.timeline, 2);
    let history = read_history(&b.data_dir, 2).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].timeline, 1);
    assert!(history[0].lsn.0 > 0);
    assert_eq!(control(&b).await.timeline, 2, "promote() checkpoints, so the control file shows the new timeline");
    // The agent rewrites a promoted replica's file as a primary's and reloads: PostgreSQL flags the
    // dropped recovery_target_timeline as pending a restart, which asks for nothing.
    rampart_pg::write_config(&b, &StartRole::Primary).unwrap();
    sql_b.reload().await.unwrap();
    let su_b = connect(&b, "postgres", "su'per:se\\cret").await;
    let flagged = "SELECT count(*) FROM pg_settings WHERE pending_restart AND name = 'recovery_target_timeline'";
    let mut seen = false;
    for _ in 0..100 {
        seen = su_b.query_one(flagged, &[]).await.unwrap().get::<_, i64>(0) == 1;
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "PostgreSQL never flagged the dropped recovery_target_timeline");
    assert_eq!(sql_b.pending_restart().await.unwrap(), vec![], "the role's recovery settings ask for nothing");
    // A parameter that does need a restart is reported with its running and its next value,
    // as Patroni's pending_restart_reason.
    let mut changed = b.clone();
    changed.parameters.insert("max_files_per_process".into(), "900".into());
    rampart_pg::write_config(&changed, &StartRole::Primary).unwrap();
    sql_b.reload().await.unwrap();
    let mut pending = vec![];
    for _ in 0..100 {
        pending = sql_b.pending_restart().await.unwrap();
        if !pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let want = rampart_pg::PendingRestart {
        name: "max_files_per_process".into(),
        old_value: "1000".into(),
        new_value: "900".into(),
    };
    assert_eq!(pending, vec![want]);
    rampart_pg::write_config(&b, &StartRole::Primary).unwrap();
    sql_b.reload().await.unwrap();
    drop(su_b);
    su.batch_execute("INSERT INTO t SELECT generate_series(1, 1000); CHECKPOINT").await.unwrap();
    drop(su);

    // Immediate stop: a crashed-looking primary, but a requested exit.
    sql_a.disconnect().await;
    assert_eq!(pm_a.stop(StopMode::Immediate, timeout).await.unwrap(), StopOutcome::Stopped);
    assert!(!pm_a.is_alive());
    assert!(pm_a.last_exit().unwrap().requested);
    assert_eq!(control(&a).await.state, ClusterState::InProduction);
    let (local, _) = observe_local(&a, &pm_a, &sql_a).await;
    assert_eq!(local.process, PgProcess::Stopped);

    // Rewind the old primary onto pg-b's timeline and let it follow.
    let create = SlotSteps { create: vec![("pg_a".into(), SlotKind::Physical)], ..Default::default() };
    assert_eq!(sql_b.apply_slot_steps(&create).await.done, vec!["created pg_a (physical)".to_string()]);
    assert_eq!(rewind(&a, &upstream(&b)).await.unwrap(), RewindOutcome::Rewound);
    pm_a.start(&a, &StartRole::Replica { upstream: Some(upstream(&b)) }).await.unwrap();
    record(&pm_a);
    let p = probe_until(&sql_a, "pg-a streaming from pg-b on timeline 2", |p| p.streaming && p.timeline == 2).await;
    assert_eq!(p.upstream, Some(("127.0.0.1".to_string(), b.port)));

    // A crash (SIGKILL of the postmaster alone) is noticed and not mistaken for a stop.
    let pid = pm_a.pid().unwrap();
    let orphans = children(pid);
    assert!(!orphans.is_empty());
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), pm_a.wait_exit()).await.unwrap().unwrap();
    assert_eq!((exit.pid, exit.requested, exit.how.as_str()), (pid, false, "killed by SIGKILL"));
    let (local, _) = observe_local(&a, &pm_a, &sql_a).await;
    assert_eq!(local.process, PgProcess::Crashed);
    // Its children (each in a session of its own) would exit on their own soon; do not wait.
    for child in orphans {
        let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
    }
    assert_eq!(control(&a).await.state, ClusterState::InArchiveRecovery);

    // Restart after the crash (stale postmaster.pid), then fast stops of both.
    pm_a.start(&a, &StartRole::Replica { upstream: Some(upstream(&b)) }).await.unwrap();
    record(&pm_a);
    probe_until(&sql_a, "pg-a streaming again", |p| p.streaming).await;
    sql_a.disconnect().await;
    assert_eq!(pm_a.stop(StopMode::Fast, timeout).await.unwrap(), StopOutcome::Stopped);
    assert_eq!(control(&a).await.state, ClusterState::ShutDownInRecovery);
    sql_b.disconnect().await;
    assert_eq!(pm_b.stop(StopMode::Fast, timeout).await.unwrap(), StopOutcome::Stopped);
    assert!(pm_b.last_exit().unwrap().requested);
    assert!(!b.data_dir.join("postmaster.pid").exists());
    assert_eq!(control(&b).await.state, ClusterState::ShutDown);
    // The adopted handle noticed too, by polling.
    let exit = tokio::time::timeout(Duration::from_secs(5), adopted.wait_exit()).await.unwrap();
    assert!(exit.is_some());
    assert_eq!(pm_b.stop(StopMode::Fast, timeout).await.unwrap(), StopOutcome::NotRunning);
}

/// On drop, kills every postmaster this test may have left: those recorded in [`STARTED`] and
/// those named by a `postmaster.pid` under the root, if they still run the postgres program.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let mut pids: Vec<u32> = STARTED.lock().map(|v| v.clone()).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path().join("postmaster.pid")) {
                    if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                        pids.push(pid);
                    }
                }
            }
        }
        for pid in pids {
            if !is_postgres(pid) {
                continue;
            }
            eprintln!("reaper: stopping leftover postmaster {pid}");
            let p = Pid::from_raw(pid as i32);
            let kids = children(pid);
            let _ = kill(p, Signal::SIGQUIT);
            for _ in 0..50 {
                if !is_postgres(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = kill(p, Signal::SIGKILL);
            for kid in kids {
                let _ = kill(Pid::from_raw(kid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let ppid_of = |child: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|c| ppid_of(*c) == Some(pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is a live (non-zombie) process running the postgres program.
fn is_postgres(pid: u32) -> bool {
    let exe_ok =
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.file_name().is_some_and(|n| n == "postgres"));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true);
    exe_ok && !zombie
}
