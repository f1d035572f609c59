//! The replica-creation benchmark: `cargo bench --bench clone` (issue 18).
//!
//! It PRINTS numbers and asserts nothing about speed. Like the other benches it runs real etcd,
//! PostgreSQL 15 and agents through the e2e harness in `tests/support/`, with the `rampart` binary
//! Cargo built for this bench (bench profile = release), and pgBackRest (`/usr/bin/pgbackrest`)
//! with a repository in a local directory, through the harness' [`support::pgbackrest::Repo`].
//!
//! Seed 002 makes new replicas from the pgBackRest repository (`create_replica_methods:
//! [pgbackrest, basebackup]`, `pgbackrest ... --delta --link-all restore`) rather than copying the
//! leader. This bench shows what that buys. A leader is started with its WAL archived through
//! pgBackRest (every member also has seed 002's `recovery_conf.restore_command`, `pgbackrest ...
//! archive-get`, and `member_slots_ttl: 0` so that the slots of removed members go) and about 1 GB
//! of tables (`pgbench -i -s 70`). Once its archiver has caught up, the leader's own cost without
//! a new member is measured for 10 s, idle and under the load below. Then, round after round, a
//! full backup of the leader is taken into the repository (its cost printed apart: a fresh backup
//! per round keeps the WAL each restore replays about the same) and new members join the running
//! cluster, each a fresh member on an empty data directory, stopped and removed once measured:
//! * `basebackup`: `create_replica_methods: [basebackup]`, i.e. pg_basebackup from the leader;
//! * `pgbackrest`: `[pgbackrest, basebackup]`, a restore from the repository, then streaming;
//! * the same two again while `pgbench -c 4 -j 2` (TPC-B-like) writes on the leader.
//!
//! Per row it prints: the time from starting the new member's agent until its REST API says it is
//! a replica, running and streaming; the CPU seconds the leader's PostgreSQL spent in that time
//! (the postmaster and every child, the walsenders and backends that came and went included:
//! utime+stime+cutime+cstime of the postmaster and its living descendants, before and after);
//! the bytes those processes read from storage (`read_bytes` of `/proc/<pid>/io`, summed the same
//! way) and through read(2) (`rchar`, page-cache hits included); the new member's CPU seconds
//! (its agent and what it ran: pg_basebackup or pgBackRest, then its PostgreSQL); and how busy the
//! whole machine was (`/proc/stat`), since other work on it shows in every figure. Under load the
//! leader's figures leave out its backends serving pgbench (found in `pg_stat_activity`), whose
//! CPU time is printed with pgbench's throughput during the clone instead. For a restore it also
//! prints how much WAL the leader had written since the backup (what the member replays from the
//! archive). The table gives, per case, the median of each figure over the rounds.
//!
//! Before each row the leader is checkpointed and the files of its data directory and of the
//! repository are dropped from the page cache (`posix_fadvise(DONTNEED)` on each file, nothing
//! else on the machine), so that a leader whose database does not fit in memory is what is
//! measured; otherwise both methods would read from memory and the disk column would say nothing.
//! PostgreSQL's own shared buffers (128 MB, the default) are not emptied.
//!
//! Which method made each member is read from its agent's log (`replica has been created using
//! ...`) and printed, so that a silent fallback to basebackup cannot pass for a restore.
//!
//! Environment: `RAMPART_BENCH_SCALE` (default 70, about 1 GB) is pgbench's scale,
//! `RAMPART_BENCH_ROUNDS` (default 3) the number of rounds; `RAMPART_BENCH_QUICK=1` does one
//! round at scale 10 without the cases under load (under a minute). The full run takes about 5
//! minutes on 2 cores. The harness variables apply (`RAMPART_KEEP_TEST_DIRS=1`, ...).
//!
//! Under `cargo test --benches` (no `--bench` argument) it prints a note and does nothing.

#[path = "common/mod.rs"]
mod common;
#[path = "proxy/pgbench.rs"]
#[allow(dead_code)]
mod pgbench;
#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::procfs::{self, TreeUse};
use support::cluster::{Cluster, ClusterOptions};
use support::health::is_streaming_replica;
use support::pgbackrest::{BackupType, Repo};
use tokio::runtime::Runtime;

/// pgbench's scale by default: 70 x 100,000 accounts, about 1 GB of tables and indexes.
const DEFAULT_SCALE: u64 = 70;
const QUICK_SCALE: u64 = 10;
/// How many times each case runs by default.
const DEFAULT_ROUNDS: u64 = 3;
/// The longest a new member may take to stream before its row is given up.
const CLONE_LIMIT: Duration = Duration::from_secs(600);
/// How long the write load runs before the new member is started.
const LOAD_WARM_UP: Duration = Duration::from_secs(3);
/// The longest wait for the leader's archiver to catch up.
const ARCHIVE_LIMIT: Duration = Duration::from_secs(180);
/// The leader without a new member is watched this long, idle and under load, so that its own
/// background cost can be told apart.
const IDLE_PERIOD: Duration = Duration::from_secs(10);

/// The replica creation methods of one row.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    Basebackup,
    Pgbackrest,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Basebackup => "basebackup",
            Method::Pgbackrest => "pgbackrest",
        }
    }

    fn create_replica_methods(self) -> &'static str {
        match self {
            Method::Basebackup => "[basebackup]",
            Method::Pgbackrest => "[pgbackrest, basebackup]",
        }
    }
}

/// One new member: how it is made and whether the leader takes writes meanwhile.
#[derive(Clone, Copy, PartialEq)]
struct Case {
    method: Method,
    under_load: bool,
}

/// What one row measured.
struct Joined {
    case: Case,
    /// From the agent's start until its REST API said streaming; `None` if it never did.
    to_streaming: Option<Duration>,
    /// What the leader's PostgreSQL used meanwhile, without the backends serving pgbench.
    leader: TreeUse,
    /// What the backends serving pgbench used meanwhile (rows under load).
    load_backends: Option<TreeUse>,
    /// How much WAL the leader had written since the last backup when the member started.
    wal_since_backup: Option<u64>,
    /// What the new member's agent, what it ran and its PostgreSQL used.
    member_cpu_secs: f64,
    /// Busy share of all CPUs of the machine meanwhile, in percent.
    machine_busy_pct: Option<f64>,
    /// The method the agent's log says made the member.
    made_by: Option<String>,
    /// Transactions pgbench committed meanwhile (rows under load).
    load_tps: Option<f64>,
}

/// The full backup taken before the rows.
struct Backup {
    wall: Duration,
    /// pgBackRest's own processes (reaped children of this bench, from `getrusage`).
    pgbackrest_cpu_secs: f64,
    pgbackrest_read_bytes: u64,
    leader: TreeUse,
    repo_bytes: u64,
    /// The leader's WAL position once the backup had ended.
    lsn: Option<String>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The files below `dir` (symbolic links not followed), depth first.
fn files_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            files_below(&entry.path(), out);
        } else if kind.is_file() && !kind.is_symlink() && !kind.is_fifo() {
            out.push(entry.path());
        }
    }
}

/// The summed sizes of the files below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    files_below(dir, &mut files);
    files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}

/// Drops the clean pages of every file below `dirs` from the page cache; how many files.
fn evict(dirs: &[&Path]) -> usize {
    let mut files = Vec::new();
    for dir in dirs {
        files_below(dir, &mut files);
    }
    files
        .iter()
        .filter(|f| {
            std::fs::File::open(f).is_ok_and(|file| {
                nix::fcntl::posix_fadvise(&file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED).is_ok()
            })
        })
        .count()
}

/// CPU seconds and blocks read (as bytes) of this process' reaped children so far.
fn children_usage() -> (f64, u64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.user_time()) + secs(u.system_time()), u64::try_from(u.block_reads()).unwrap_or(0) * 512)
        }
        Err(_) => (0.0, 0),
    }
}

/// The single SQL value of `query` on the server on `port`, as text.
fn query(rt: &Runtime, port: u16, query: &str) -> Option<String> {
    rt.block_on(support::client::query_text(port, query))
}

/// `CHECKPOINT` on the server on `port`.
fn checkpoint(rt: &Runtime, port: u16) {
    rt.block_on(async {
        match support::connect_superuser(port).await {
            Ok(db) => {
                if let Err(e) = db.batch_execute("CHECKPOINT").await {
                    println!("[bench] CHECKPOINT failed: {e}");
                }
            }
            Err(e) => println!("[bench] connecting for a CHECKPOINT failed: {e}"),
        }
    });
}

/// A pgbench run writing on the leader until [`Load::stop`].
struct Load {
    child: Child,
    /// The PIDs of the leader's backends serving it, once known ([`Load::find_backends`]).
    backends: Vec<u32>,
}

impl Load {
    /// `pgbench -c 4 -j 2` (TPC-B-like) against `port`, its output in `dir`.
    fn start(port: u16, dir: &Path) -> Result<Load, String> {
        let file = |name: &str| {
            std::fs::File::create(dir.join(name)).map_err(|e| format!("creating {}: {e}", dir.join(name).display()))
        };
        let mut cmd = pgbench::command(port);
        cmd.args(["-c", "4", "-j", "2", "-T", "3600", "postgres"])
            .stdout(Stdio::from(file("pgbench-load.out")?))
            .stderr(Stdio::from(file("pgbench-load.err")?));
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", pgbench::bin().display()))?;
        Ok(Load { child, backends: Vec::new() })
    }

    /// Reads the PIDs of the leader's backends serving pgbench from `pg_stat_activity`.
    fn find_backends(&mut self, rt: &Runtime, port: u16) {
        let pids = query(
            rt,
            port,
            "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name = 'pgbench'",
        );
        self.backends = pids.unwrap_or_default().split(',').filter_map(|p| p.trim().parse().ok()).collect();
    }

    /// What its backends have used so far.
    fn backends_use(&self) -> TreeUse {
        procfs::tree_use(&self.backends)
    }

    /// Kills pgbench by its PID and reaps it.
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of rows of `pgbench_history`, i.e. the TPC-B-like transactions so far.
fn transactions(rt: &Runtime, port: u16) -> Option<f64> {
    query(rt, port, "SELECT count(*) FROM pgbench_history")?.parse().ok()
}

/// The method the agent log at `path` says made the replica.
fn made_by(path: &Path) -> Option<String> {
    let log = std::fs::read_to_string(path).ok()?;
    let line = log.lines().rev().find(|l| l.contains("replica has been created using"))?;
    line.rsplit("replica has been created using").next().map(|m| m.trim().to_owned())
}

/// Writes the configurations: every member archives its WAL through `repo` and recovers from it
/// besides streaming (`recovery_conf.restore_command`), node 0 bootstraps, node `i > 0` is made by
/// `cases[i - 1]`.
fn configure(c: &mut Cluster, repo: &Repo, cases: &[Case]) {
    for i in 0..c.len() {
        let mut config = c.node(i).config.clone().parameter("max_wal_size", "'4GB'");
        config.dcs_parameters.push(("archive_mode".into(), "on".into()));
        config
            .dcs_parameters
            .push(("archive_command".into(), support::pgbackrest::yaml_quoted(&repo.archive_command())));
        let restore_command = support::pgbackrest::yaml_quoted(&repo.restore_command());
        config.pg_settings.push(("recovery_conf".into(), format!("{{restore_command: {restore_command}}}")));
        if i > 0 {
            let methods = cases[i - 1].method.create_replica_methods();
            config.pg_settings.push(("create_replica_methods".into(), methods.into()));
            config.pg_settings.push(("pgbackrest".into(), repo.replica_method()));
        }
        // The leader drops the slots of the members measured and removed (they would otherwise be
        // kept for 30 minutes, and max_replication_slots is 10).
        config.dcs_yaml = "    member_slots_ttl: 0\n".into();
        config.write(c.config_path(i)).unwrap_or_else(|e| panic!("writing {}: {e}", c.config_path(i).display()));
        c.node_mut(i).agent_env = Repo::agent_env(&config);
    }
}

/// Starts the leader, creates the stanza and loads the leader with pgbench's tables; the
/// database's size.
fn prepare_leader(rt: &Runtime, c: &mut Cluster, repo: &Repo, scale: u64) -> Option<u64> {
    c.start_agent(0);
    let leads = support::wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
        c.leader_index() == Some(0) && support::http_status(c.api_port(0), "GET", "/primary") == 200
    });
    if !leads {
        println!("[bench] the first member did not become the leader; logs on stderr");
        c.dump_logs();
        return None;
    }
    // The stanza first, so that the WAL pgbench -i writes is archived as it comes.
    repo.stanza_create(&c.node(0).config);
    let scale = u32::try_from(scale).unwrap_or(u32::MAX);
    if !pgbench::prepare(rt, c.pg_port(0), scale, c.dir()) {
        return None;
    }
    let port = c.pg_port(0);
    let size = query(rt, port, "pg_database_size('postgres')").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    println!(
        "[bench] database `postgres`: {} (pg_database_size); data directory {}",
        mb(size),
        mb(dir_bytes(c.data_dir(0)))
    );
    Some(size)
}

/// Waits (at most [`ARCHIVE_LIMIT`]) until the leader on `port` has archived the WAL it has
/// written so far, so that what `pgbench -i` wrote is not archived while the backup or a row is
/// measured. Switches to a new WAL file first.
fn wait_archived(rt: &Runtime, port: u16) {
    let t0 = Instant::now();
    let Some(file) = query(rt, port, "pg_walfile_name(pg_switch_wal())") else {
        println!("[bench] pg_switch_wal failed; not waiting for the archiver");
        return;
    };
    let done = support::wait_until(ARCHIVE_LIMIT, Duration::from_millis(200), || {
        query(rt, port, "SELECT last_archived_wal FROM pg_stat_archiver").is_some_and(|last| last >= file)
    });
    let archiver =
        query(rt, port, "SELECT format('%s archived, %s failed', archived_count, failed_count) FROM pg_stat_archiver");
    println!(
        "[bench] archiving the WAL up to {file}: {} ({})",
        if done { format!("{:.1} s", t0.elapsed().as_secs_f64()) } else { format!("not done after {ARCHIVE_LIMIT:?}") },
        archiver.unwrap_or_default()
    );
}

/// A full backup of the leader with the cost of each side.
fn full_backup(rt: &Runtime, c: &Cluster, repo: &Repo) -> Backup {
    let leader = c.node(0).config.clone();
    let pm = c.agent(0).postmaster_pid().unwrap_or(0);
    evict(&[c.data_dir(0), &repo_path(repo)]);
    let (cpu0, read0) = children_usage();
    let before = procfs::tree_use(&[pm]);
    let t0 = Instant::now();
    repo.backup(&leader, BackupType::Full);
    let wall = t0.elapsed();
    let after = procfs::tree_use(&[pm]);
    let (cpu1, read1) = children_usage();
    Backup {
        wall,
        pgbackrest_cpu_secs: cpu1 - cpu0,
        pgbackrest_read_bytes: read1.saturating_sub(read0),
        leader: after.since(&before),
        repo_bytes: dir_bytes(&repo_path(repo)),
        lsn: query(rt, c.pg_port(0), "pg_current_wal_lsn()"),
    }
}

/// Prints what [`full_backup`] measured.
fn print_backup(b: &Backup) {
    println!(
        "[bench] full backup into the repository: {:.1} s; pgBackRest {:.2} CPU s, {} read from storage; \
         leader's PostgreSQL {:.2} CPU s, {} read; repository now {}",
        b.wall.as_secs_f64(),
        b.pgbackrest_cpu_secs,
        mb(b.pgbackrest_read_bytes),
        b.leader.cpu_secs,
        mb(b.leader.read_bytes),
        mb(b.repo_bytes)
    );
}

fn repo_path(repo: &Repo) -> std::path::PathBuf {
    match repo.storage() {
        support::pgbackrest::Storage::Path(p) => p.clone(),
        support::pgbackrest::Storage::S3 { .. } => unreachable!("the bench's repository is on a path"),
    }
}

/// `pgbench -c 4` on the leader when `under_load`, running for [`LOAD_WARM_UP`] already and its
/// backends found; `None` otherwise or when it does not start (said).
fn start_load(rt: &Runtime, c: &Cluster, under_load: bool) -> Option<Load> {
    if !under_load {
        return None;
    }
    match Load::start(c.pg_port(0), c.dir()) {
        Ok(mut l) => {
            std::thread::sleep(LOAD_WARM_UP);
            l.find_backends(rt, c.pg_port(0));
            Some(l)
        }
        Err(e) => {
            println!("[bench] {e}; going on without load");
            None
        }
    }
}

/// The leader's PostgreSQL from [`LeaderWatch::start`] to [`LeaderWatch::finish`].
struct LeaderWatch {
    pm: u32,
    leader: TreeUse,
    backends: Option<TreeUse>,
}

impl LeaderWatch {
    fn start(c: &Cluster, load: Option<&Load>) -> LeaderWatch {
        let pm = c.agent(0).postmaster_pid().unwrap_or(0);
        LeaderWatch { pm, leader: procfs::tree_use(&[pm]), backends: load.map(Load::backends_use) }
    }

    /// What the leader used without its backends serving `load`, and what those used.
    fn finish(&self, load: Option<&Load>) -> (TreeUse, Option<TreeUse>) {
        let leader = procfs::tree_use(&[self.pm]).since(&self.leader);
        let backends = match (self.backends, load) {
            (Some(before), Some(l)) => Some(l.backends_use().since(&before)),
            _ => None,
        };
        // A difference of two differences, so `since` again.
        (leader.since(&backends.unwrap_or_default()), backends)
    }
}

/// What the leader's PostgreSQL uses in [`IDLE_PERIOD`] without a new member: idle, or under
/// `pgbench -c 4` (its backends serving pgbench left out).
fn baseline(rt: &Runtime, c: &Cluster, under_load: bool) -> TreeUse {
    let load = start_load(rt, c, under_load);
    let watch = LeaderWatch::start(c, load.as_ref());
    std::thread::sleep(IDLE_PERIOD);
    let (leader, _) = watch.finish(load.as_ref());
    if let Some(l) = load {
        l.stop();
    }
    leader
}

/// Adds member `i`, made as `case` says, and measures until it streams; then stops it and
/// removes its data directory.
fn add_member(rt: &Runtime, c: &mut Cluster, repo: &Repo, i: usize, case: Case, backup_lsn: Option<&str>) -> Joined {
    let leader_port = c.pg_port(0);
    let load = start_load(rt, c, case.under_load);
    checkpoint(rt, leader_port);
    let evicted = evict(&[c.data_dir(0), &repo_path(repo)]);
    println!(
        "[bench] {} (leader {}): {evicted} files of the leader and the repository dropped from the page cache; \
         load average {}",
        case.method.label(),
        if case.under_load { "under pgbench -c 4" } else { "idle" },
        load_average()
    );

    let wal_since_backup = backup_lsn.and_then(|lsn| {
        query(rt, leader_port, &format!("pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')::bigint"))?.parse().ok()
    });
    let tx0 = load.as_ref().and_then(|_| transactions(rt, leader_port));
    let machine0 = procfs::machine_cpu_ticks();
    let watch = LeaderWatch::start(c, load.as_ref());
    let t0 = Instant::now();
    c.start_agent(i);
    let streams = support::wait_until(CLONE_LIMIT, Duration::from_millis(100), || is_streaming_replica(c, i, None));
    let elapsed = t0.elapsed();
    let (leader, load_backends) = watch.finish(load.as_ref());
    let machine1 = procfs::machine_cpu_ticks();
    let tx1 = load.as_ref().and_then(|_| transactions(rt, leader_port));
    let member_roots: Vec<u32> = [Some(c.agent(i).pid()), c.agent(i).postmaster_pid()].into_iter().flatten().collect();
    let member = procfs::tree_use(&member_roots);
    if let Some(l) = load {
        l.stop();
    }
    let machine_busy_pct = match (machine0, machine1) {
        (Some((b0, a0)), Some((b1, a1))) if a1 > a0 => Some((b1 - b0) as f64 * 100.0 / (a1 - a0) as f64),
        _ => None,
    };
    let load_tps = match (tx0, tx1) {
        (Some(a), Some(b)) => Some((b - a) / elapsed.as_secs_f64()),
        _ => None,
    };
    let row = Joined {
        case,
        to_streaming: streams.then_some(elapsed),
        leader,
        load_backends,
        wal_since_backup,
        member_cpu_secs: member.cpu_secs,
        machine_busy_pct,
        made_by: made_by(c.log_path(i)),
        load_tps,
    };
    println!(
        "[bench]   {} streams after {}; made by {}; leader {:.2} CPU s, {} read from storage; member {:.2} CPU s",
        c.name(i),
        common::fmt_secs(row.to_streaming, "never"),
        row.made_by.as_deref().unwrap_or("? (no `replica has been created` line)"),
        row.leader.cpu_secs,
        mb(row.leader.read_bytes),
        row.member_cpu_secs
    );
    let expected = case.method.label();
    if row.made_by.as_deref() != Some(expected) {
        println!("[bench]   WARNING: expected {expected} to make the member; its agent log on stderr");
        c.dump_logs();
    }
    c.agent_mut(i).kill_all();
    if let Err(e) = std::fs::remove_dir_all(c.data_dir(i)) {
        println!("[bench]   removing {}: {e}", c.data_dir(i).display());
    }
    row
}

/// The median of `f` over `runs` (those that have a value), formatted by `fmt`; `-` without any.
fn median_of(runs: &[&Joined], f: impl Fn(&Joined) -> Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    let values: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
    common::median(&values).map(fmt).unwrap_or_else(|| "-".into())
}

/// One line per case, each figure the median over its runs (the time until streaming with its
/// spread).
fn print_table(cases: &[Case], rows: &[Joined]) {
    let header = [
        "new member made by",
        "leader load",
        "n",
        "WAL since backup",
        "until streaming (min-max)",
        "leader CPU",
        "leader read (disk)",
        "leader read()",
        "member CPU",
        "machine busy",
    ];
    let mut lines = vec![header.map(str::to_owned).to_vec()];
    for case in cases {
        let runs: Vec<&Joined> = rows.iter().filter(|r| r.case == *case).collect();
        let times: Vec<f64> = runs.iter().filter_map(|r| r.to_streaming).map(|d| d.as_secs_f64()).collect();
        let spread = match (times.iter().copied().reduce(f64::min), times.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) => format!(" ({lo:.1}-{hi:.1})"),
            _ => String::new(),
        };
        let missing = runs.len() - times.len();
        let never = if missing > 0 { format!(", {missing} never") } else { String::new() };
        let load = if case.under_load {
            let tps = median_of(&runs, |r| r.load_tps, |v| format!("{v:.0} tps"));
            let cpu = median_of(&runs, |r| r.load_backends.map(|u| u.cpu_secs), |v| format!("{v:.1} CPU s"));
            format!("pgbench: {tps}, {cpu}")
        } else {
            "idle".to_string()
        };
        lines.push(vec![
            format!("{} {}", case.method.label(), case.method.create_replica_methods()),
            load,
            runs.len().to_string(),
            if case.method == Method::Pgbackrest {
                median_of(&runs, |r| r.wal_since_backup.map(|b| b as f64), |v| mb(v as u64))
            } else {
                "-".into()
            },
            format!(
                "{}{spread}{never}",
                median_of(&runs, |r| r.to_streaming.map(|d| d.as_secs_f64()), |v| format!("{v:.2} s"))
            ),
            median_of(&runs, |r| Some(r.leader.cpu_secs), |v| format!("{v:.2} s")),
            median_of(&runs, |r| Some(r.leader.read_bytes as f64), |v| mb(v as u64)),
            median_of(&runs, |r| Some(r.leader.rchar as f64), |v| mb(v as u64)),
            median_of(&runs, |r| Some(r.member_cpu_secs), |v| format!("{v:.2} s")),
            median_of(&runs, |r| r.machine_busy_pct, |v| format!("{v:.0} %")),
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|k| lines.iter().map(|l| l[k].len()).max().unwrap_or(0)).collect();
    for line in &lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn main() {
    if !common::bench_requested("clone") {
        return;
    }
    let quick = common::quick();
    let scale = if quick { QUICK_SCALE } else { common::env_number("RAMPART_BENCH_SCALE", DEFAULT_SCALE) };
    let rounds = if quick { 1 } else { common::env_number("RAMPART_BENCH_ROUNDS", DEFAULT_ROUNDS) } as usize;
    let started = Instant::now();
    common::print_preamble("replica creation (clone)", quick);
    let mut cases = vec![
        Case { method: Method::Basebackup, under_load: false },
        Case { method: Method::Pgbackrest, under_load: false },
    ];
    if !quick {
        cases.push(Case { method: Method::Basebackup, under_load: true });
        cases.push(Case { method: Method::Pgbackrest, under_load: true });
    }
    // Round after round of the cases, each run a member of its own.
    let runs: Vec<Case> = (0..rounds).flat_map(|_| cases.iter().copied()).collect();
    println!(
        "[bench] machine: {} CPUs, load average {} (1, 5, 15 min); pgbench -i -s {scale}; {rounds} round(s) of {} \
         new members",
        common::cpus(),
        load_average(),
        cases.len()
    );
    let rt = common::runtime();
    let mut c = Cluster::start(1 + runs.len(), ClusterOptions { start_agents: false, ..ClusterOptions::default() });
    let repo = Repo::on_path(&c.dir().join("pgbackrest"), "pg-ha-cluster");
    configure(&mut c, &repo, &runs);
    let Some(db_size) = prepare_leader(&rt, &mut c, &repo, scale) else { return };
    wait_archived(&rt, c.pg_port(0));
    checkpoint(&rt, c.pg_port(0));
    let idle = baseline(&rt, &c, false);
    println!(
        "[bench] idle leader, no new member: its PostgreSQL ({} processes) used {:.2} CPU s and read {} in {} s",
        idle.processes,
        idle.cpu_secs,
        mb(idle.read_bytes),
        IDLE_PERIOD.as_secs()
    );
    let loaded = (!quick).then(|| baseline(&rt, &c, true));
    if let Some(l) = &loaded {
        println!(
            "[bench] leader under pgbench -c 4, no new member: its PostgreSQL without pgbench's backends used \
             {:.2} CPU s and read {} in {} s",
            l.cpu_secs,
            mb(l.read_bytes),
            IDLE_PERIOD.as_secs()
        );
    }

    let mut rows = Vec::new();
    let mut backups = Vec::new();
    for (k, case) in runs.iter().enumerate() {
        if k % cases.len() == 0 {
            // A fresh backup for each round, so that every restore replays about as much WAL.
            println!("[bench] ----- round {} of {rounds} -----", k / cases.len() + 1);
            checkpoint(&rt, c.pg_port(0));
            let backup = full_backup(&rt, &c, &repo);
            print_backup(&backup);
            backups.push(backup);
        }
        let lsn = backups.last().and_then(|b| b.lsn.clone());
        rows.push(add_member(&rt, &mut c, &repo, k + 1, *case, lsn.as_deref()));
    }

    println!("\n[bench] ===== results ({:.0} s in all) =====", started.elapsed().as_secs_f64());
    println!(
        "[bench] machine: {} CPUs, load average {} now; database {} (pgbench -i -s {scale})",
        common::cpus(),
        load_average(),
        mb(db_size)
    );
    let backup_median =
        |f: &dyn Fn(&Backup) -> f64| common::median(&backups.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    println!(
        "full backup before each round (median of {}): {:.1} s, pgBackRest {:.2} CPU s and {} read from storage \
         (the leader's data directory), leader's PostgreSQL {:.2} CPU s; repository {} at the end",
        backups.len(),
        backup_median(&|b| b.wall.as_secs_f64()),
        backup_median(&|b| b.pgbackrest_cpu_secs),
        mb(backup_median(&|b| b.pgbackrest_read_bytes as f64) as u64),
        backup_median(&|b| b.leader.cpu_secs),
        mb(backups.last().map_or(0, |b| b.repo_bytes))
    );
    let loaded_note = loaded
        .map(|l| format!(", under pgbench -c 4 without its backends {:.2} CPU s and {}", l.cpu_secs, mb(l.read_bytes)))
        .unwrap_or_default();
    println!(
        "until streaming: from the new member's agent start to its REST API saying streaming. Leader CPU, read \
         (disk) and read(): the leader's PostgreSQL meanwhile, under load without its backends serving pgbench \
         (whose CPU is in the load column); with no new member it uses per {} s idle {:.2} CPU s{loaded_note}. \
         WAL since backup: written after the restored backup, replayed from the archive. Member CPU: its agent, \
         pg_basebackup or pgBackRest, and its PostgreSQL. Medians over the runs",
        IDLE_PERIOD.as_secs(),
        idle.cpu_secs,
    );
    print_table(&cases, &rows);
}
