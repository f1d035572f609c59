//! The postmaster: start it, adopt it, watch it, stop it.
//!
//! Invariants:
//! * PostgreSQL never inherits the agent's ambient capabilities (see [`Postmaster::start`]);
//! * PostgreSQL runs in its own process group (`process_group(0)`), with stdin closed and its
//!   output appended to a log file, never to a pipe of ours: signals aimed at the agent (Ctrl-C,
//!   systemd's SIGTERM to the agent) do not reach it, and it never blocks on a reader that is gone;
//! * dropping a [`Postmaster`] never stops PostgreSQL: the agent may restart and [`adopt`] it;
//! * a postmaster we spawned is reaped by a task of ours (no zombies), and that task records how
//!   it ended; whether the exit was requested through [`stop`] is remembered, so the caller can
//!   tell a stop from a crash;
//! * a pid is only believed while `/proc` shows the same process (same start time, not a zombie)
//!   and `postmaster.pid` names it, so a recycled pid is never mistaken for PostgreSQL;
//! * signals go to the postmaster's pid only (it shuts its children down itself); only the
//!   SIGKILL escalation also hits its children, found through `/proc` before the postmaster dies
//!   (each child has its own session, so a process group signal would miss them), so no orphaned
//!   backend keeps the shared memory and blocks the next start.
//!
//! [`adopt`]: Postmaster::adopt
//! [`stop`]: Postmaster::stop

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rampart_core::{StartRole, StopMode};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::configure::write_config;
use crate::error::{PgError, Result};
use crate::pidfile::read_pidfile;
use crate::settings::PgSettings;

/// libpq environment variables that must not leak into the server's own connections
/// (walreceiver, archive and restore commands).
const LIBPQ_ENV: &[&str] = &[
    "PGPASSWORD",
    "PGPASSFILE",
    "PGUSER",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGSERVICE",
    "PGSSLMODE",
    "PGOPTIONS",
];

/// How often exits of adopted postmasters (not our children) and start progress are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for the process to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How a postmaster we tracked ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastExit {
    /// Its pid.
    pub pid: u32,
    /// It exited after [`Postmaster::stop`] signalled it (a stop, not a crash).
    pub requested: bool,
    /// How it ended ("exit code 0", "killed by SIGKILL", or unknown for an adopted process).
    pub how: String,
}

/// What [`Postmaster`] knows about its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostmasterState {
    /// No postmaster is tracked.
    NotRunning {
        /// The last tracked postmaster's end, if there was one.
        last_exit: Option<LastExit>,
    },
    /// A postmaster is tracked and was alive when last checked.
    Running {
        /// Its pid.
        pid: u32,
        /// Taken over from `postmaster.pid` rather than spawned by us.
        adopted: bool,
    },
}

/// The result of [`Postmaster::stop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing was running.
    NotRunning,
    /// It stopped in the requested mode.
    Stopped,
    /// It did not stop in time and was killed with SIGKILL.
    Killed,
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    pid: u32,
    /// `/proc/<pid>/stat` start time, to detect pid reuse.
    start_ticks: Option<u64>,
    adopted: bool,
    stop_requested: bool,
}

#[derive(Debug)]
struct Inner {
    tracked: Option<Tracked>,
    last_exit: Option<LastExit>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    state: watch::Sender<PostmasterState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the two fields inconsistent in a way that
        // matters more than losing track of the process, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn track(&self, t: Tracked) {
        let mut inner = self.lock();
        inner.tracked = Some(t);
        self.state.send_replace(PostmasterState::Running { pid: t.pid, adopted: t.adopted });
    }

    /// Records the end of `pid` if it is still the tracked process.
    fn exited(&self, pid: u32, how: String) {
        let mut inner = self.lock();
        let Some(t) = inner.tracked.filter(|t| t.pid == pid) else { return };
        let exit = LastExit { pid, requested: t.stop_requested, how };
        if exit.requested {
            tracing::info!(pid, how = %exit.how, "postgres exited after a stop request");
        } else {
            tracing::warn!(pid, how = %exit.how, "postgres exited on its own");
        }
        inner.tracked = None;
        inner.last_exit = Some(exit.clone());
        self.state.send_replace(PostmasterState::NotRunning { last_exit: Some(exit) });
    }
}

/// The postmaster of one data directory. Cheap to clone; clones share the tracking.
#[derive(Clone, Debug)]
pub struct Postmaster {
    data_dir: PathBuf,
    shared: Arc<Shared>,
}

impl Postmaster {
    /// Tracks nothing yet; call [`Postmaster::adopt`] to take over a running server.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let (state, _) = watch::channel(PostmasterState::NotRunning { last_exit: None });
        Postmaster {
            data_dir: data_dir.into(),
            shared: Arc::new(Shared { inner: Mutex::new(Inner { tracked: None, last_exit: None }), state }),
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The tracked postmaster's pid, if any (alive or not yet noticed dead).
    pub fn pid(&self) -> Option<u32> {
        self.shared.lock().tracked.map(|t| t.pid)
    }

    /// The current state.
    pub fn state(&self) -> PostmasterState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every start and exit (the exit of a postmaster we spawned is
    /// noticed at once; an adopted one within a tenth of a second).
    pub fn subscribe(&self) -> watch::Receiver<PostmasterState> {
        self.shared.state.subscribe()
    }

    /// How the last tracked postmaster ended, if one did.
    pub fn last_exit(&self) -> Option<LastExit> {
        self.shared.lock().last_exit.clone()
    }

    /// Whether the tracked postmaster is alive: the same process (same pid and start time, so a
    /// reused pid does not count) still exists and is not a zombie. Deliberately not tied to
    /// `postmaster.pid`: a server whose data directory was deleted under it still runs and still
    /// answers clients, and fencing decisions must see it as alive.
    pub fn is_alive(&self) -> bool {
        let Some(t) = self.shared.lock().tracked else { return false };
        process_alive(t.pid, t.start_ticks)
    }

    /// Waits until no postmaster is tracked any more and returns how the last one ended.
    /// Returns at once when nothing is tracked.
    pub async fn wait_exit(&self) -> Option<LastExit> {
        let mut rx = self.subscribe();
        loop {
            if let PostmasterState::NotRunning { last_exit } = &*rx.borrow_and_update() {
                return last_exit.clone();
            }
            if rx.changed().await.is_err() {
                return self.last_exit();
            }
        }
    }

    /// Takes over a postmaster already running on the data directory (found through
    /// `postmaster.pid`), e.g. after the agent restarted. Returns its pid, or `None` when none
    /// runs. Must be called inside a Tokio runtime: a task polls for its exit.
    pub fn adopt(&self) -> Option<u32> {
        if let Some(t) = self.shared.lock().tracked {
            if process_alive(t.pid, t.start_ticks) {
                return Some(t.pid);
            }
        }
        let pf = read_pidfile(&self.data_dir)?;
        if !process_alive(pf.pid, None) || !looks_like_postmaster(pf.pid) {
            return None;
        }
        let start_ticks = proc_stat(pf.pid).map(|s| s.start_ticks);
        self.shared.track(Tracked { pid: pf.pid, start_ticks, adopted: true, stop_requested: false });
        tracing::info!(pid = pf.pid, data_dir = %self.data_dir.display(), "adopted running postgres");
        let shared = Arc::clone(&self.shared);
        let pid = pf.pid;
        tokio::spawn(async move {
            loop {
                sleep(POLL).await;
                let still_tracked = shared.lock().tracked.is_some_and(|t| t.pid == pid);
                if !still_tracked {
                    return;
                }
                if !process_alive(pid, start_ticks) {
                    shared.exited(pid, "exited (adopted, so its exit status is unknown)".into());
                    return;
                }
            }
        });
        Some(pf.pid)
    }

    /// Writes the configuration for `role`, starts `postgres -D <data_dir>` and waits until it
    /// accepts connections (`postmaster.pid` says "ready" or "standby").
    ///
    /// Fails with [`PgError::StartFailed`] (and the log's tail) if it exits meanwhile, and with
    /// [`PgError::StartTimeout`] after [`PgSettings::start_timeout`], in which case it is left
    /// running and tracked (it may still be replaying WAL). Must be called inside a Tokio runtime.
    pub async fn start(&self, settings: &PgSettings, role: &StartRole) -> Result<()> {
        if settings.data_dir != self.data_dir {
            return Err(PgError::Settings(format!(
                "settings name data directory {} but this postmaster manages {}",
                settings.data_dir.display(),
                self.data_dir.display()
            )));
        }
        if let Some(pid) = self.adopt() {
            return Err(PgError::AlreadyRunning { pid, data_dir: self.data_dir.clone() });
        }
        clear_zombie_lock(&self.data_dir);
        write_config(settings, role)?;

        let log_path = settings.log_file();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| PgError::io("opening log file", &log_path, e))?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(|e| PgError::io("opening log file", &log_path, e))?;
        let program = settings.program("postgres");
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        // libpq variables inherited from whoever started the agent would reach the walreceiver
        // and override `primary_conninfo` (PGPASSWORD beats its passfile): start with none.
        for var in LIBPQ_ENV {
            cmd.env_remove(var);
        }
        // The agent may run with ambient capabilities (CAP_NET_ADMIN and CAP_NET_RAW, to move a
        // virtual address); PostgreSQL, which runs what superusers ask (`COPY ... PROGRAM`),
        // must not inherit them.
        // SAFETY: one prctl system call between fork and exec, allocating nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::prctl(nix::libc::PR_CAP_AMBIENT, nix::libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| PgError::Spawn { program: program.clone(), source })?;
        let Some(pid) = child.id() else {
            return Err(PgError::StartFailed {
                status: "exited at once".into(),
                log_tail: log_tail(&log_path, log_offset),
            });
        };
        let start_ticks = proc_stat(pid).map(|s| s.start_ticks);
        self.shared.track(Tracked { pid, start_ticks, adopted: false, stop_requested: false });
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("unknown (waiting for it failed: {e})"),
            };
            shared.exited(pid, how);
        });
        tracing::info!(pid, role = %role, log = %log_path.display(), "started postgres");

        let deadline = Instant::now() + settings.start_timeout;
        let mut rx = self.subscribe();
        loop {
            let running = matches!(&*rx.borrow_and_update(), PostmasterState::Running { pid: p, .. } if *p == pid);
            if !running {
                let status = match self.last_exit() {
                    Some(e) if e.pid == pid => e.how,
                    _ => "exited".into(),
                };
                return Err(PgError::StartFailed { status, log_tail: log_tail(&log_path, log_offset) });
            }
            let ready = read_pidfile(&self.data_dir)
                .is_some_and(|p| p.pid == pid && p.status.as_ref().is_some_and(|s| s.accepts_connections()));
            if ready {
                tracing::info!(pid, "postgres accepts connections");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PgError::StartTimeout {
                    pid,
                    timeout: settings.start_timeout,
                    log_tail: log_tail(&log_path, log_offset),
                });
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = sleep(POLL) => {}
            }
        }
    }

    /// Stops the postmaster: SIGINT (fast) or SIGQUIT (immediate) to its pid, then waits for it
    /// to exit; after `timeout` it and its children get SIGKILL. Adopts a running postmaster first
    /// if none is tracked. The exit is recorded as requested.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        let Some(pid) = self.adopt() else { return Ok(StopOutcome::NotRunning) };
        {
            let mut inner = self.shared.lock();
            if let Some(t) = inner.tracked.as_mut().filter(|t| t.pid == pid) {
                t.stop_requested = true;
            }
        }
        let (signal, name) = match mode {
            StopMode::Fast => (Signal::SIGINT, "SIGINT"),
            StopMode::Immediate => (Signal::SIGQUIT, "SIGQUIT"),
        };
        tracing::info!(pid, mode = ?mode, "stopping postgres");
        match kill(Pid::from_raw(pid as i32), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => return Err(PgError::Signal { signal: name, pid: pid as i32, source }),
        }
        if self.wait_gone(pid, timeout).await {
            if read_pidfile(&self.data_dir).is_some_and(|p| p.pid == pid) {
                tracing::warn!(pid, "postgres exited but left postmaster.pid behind");
            }
            return Ok(StopOutcome::Stopped);
        }
        tracing::warn!(pid, ?timeout, "postgres did not stop in time; sending SIGKILL");
        kill_with_children(pid)?;
        if self.wait_gone(pid, KILL_GRACE).await {
            Ok(StopOutcome::Killed)
        } else {
            Err(PgError::StopFailed { pid })
        }
    }

    /// Waits until `pid` is no longer the tracked, running postmaster.
    async fn wait_gone(&self, pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            let running = matches!(&*rx.borrow_and_update(), PostmasterState::Running { pid: p, .. } if *p == pid);
            if !running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = sleep(POLL) => {}
            }
        }
    }
}

/// SIGKILL to `pid` and then to its children, listed before it dies (afterwards they would be
/// re-parented and indistinguishable). A child forked in between notices the postmaster's death
/// and exits on its own.
fn kill_with_children(pid: u32) -> Result<()> {
    let children = children_of(pid);
    match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(source) => return Err(PgError::Signal { signal: "SIGKILL", pid: pid as i32, source }),
    }
    for child in children {
        let _ = kill(Pid::from_raw(child as i32), Signal::SIGKILL);
    }
    Ok(())
}

/// Pids whose parent is `pid`, from `/proc`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|child| proc_stat(*child).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`: the command name is in parentheses and may itself contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 of the file, ppid field 4, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, ppid, start_ticks })
}

pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_proc_stat(&t))
}

/// Whether `pid` exists, is not a zombie, and (when known) is the same process as before.
pub(crate) fn process_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match kill(Pid::from_raw(pid as i32), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    match proc_stat(pid) {
        Some(s) => s.state != 'Z' && s.state != 'X' && start_ticks.is_none_or(|t| t == s.start_ticks),
        // No /proc (or it vanished meanwhile): trust kill(2).
        None => true,
    }
}

/// Removes `postmaster.pid` when the PID it names is a zombie: a postmaster that died (killed, or
/// crashed) and that its parent has not reaped yet. PostgreSQL refuses to start while that PID
/// "exists" (`kill(pid, 0)` succeeds on a zombie), and only the parent can reap it: an orphaned
/// postmaster (its agent restarted and adopted it, then it died) belongs to PID 1, and in a
/// container without a reaping init that can take a long time or never happen. The file is
/// left alone in every other case; PostgreSQL still checks its shared memory for surviving
/// backends of the dead postmaster before it starts.
/// The same holds for the lock file of its Unix socket (`<socket dir>/.s.PGSQL.<port>.lock`,
/// found from the lines of `postmaster.pid`), which PostgreSQL checks the same way.
pub fn clear_zombie_lock(data_dir: &Path) {
    let Some(pf) = read_pidfile(data_dir) else { return };
    if proc_stat(pf.pid).is_none_or(|s| s.state != 'Z') {
        return;
    }
    let mut locks = Vec::new();
    if let (Some(dirs), Some(port)) = (&pf.socket_dir, pf.port) {
        for dir in dirs.split(',').map(str::trim).filter(|d| d.starts_with('/')) {
            locks.push(Path::new(dir).join(format!(".s.PGSQL.{port}.lock")));
        }
    }
    // The data directory's file last: while it exists, this is retried at the next start.
    locks.push(data_dir.join(crate::pidfile::PIDFILE));
    for path in locks {
        let names_zombie = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            == Some(pf.pid);
        if !names_zombie {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::warn!(
                pid = pf.pid,
                path = %path.display(),
                "removed a lock file of a dead postmaster its parent has not reaped (a zombie)"
            ),
            Err(e) => tracing::warn!(path = %path.display(), "could not remove a zombie postmaster's lock file: {e}"),
        }
    }
}

/// Whether `pid` runs the `postgres` (or `postmaster`) program.
fn looks_like_postmaster(pid: u32) -> bool {
    let is_pg = |name: &str| name == "postgres" || name == "postmaster";
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        return exe.file_name().is_some_and(|n| is_pg(&n.to_string_lossy()));
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            is_pg(argv0.rsplit('/').next().unwrap_or_default().split_whitespace().next().unwrap_or_default())
        }
        Err(_) => false,
    }
}

/// "exit code N" or "killed by SIGNAME".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => "ended".into(),
    }
}

/// The last lines the server wrote to its log since `offset` (at most 4 KiB, 30 lines).
fn log_tail(path: &Path, offset: u64) -> String {
    const MAX_BYTES: u64 = 4096;
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let from = offset.max(len.saturating_sub(MAX_BYTES)).min(len);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => last_lines(&text, 30),
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_zombies_lock_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(crate::pidfile::PIDFILE);
        // A live process (this test) keeps its lock file.
        std::fs::write(&lock, format!("{}\n{}\n", std::process::id(), dir.path().display())).unwrap();
        clear_zombie_lock(dir.path());
        assert!(lock.exists());
        // A child that exited and was not waited for is a zombie of this process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let became_zombie = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            proc_stat(pid).is_some_and(|s| s.state == 'Z')
        });
        assert!(became_zombie);
        let socket_lock = dir.path().join(".s.PGSQL.5499.lock");
        std::fs::write(&socket_lock, format!("{pid}\n")).unwrap();
        let lines = format!("{pid}\n{d}\n1700000000\n5499\n{d}\n*\n", d = dir.path().display());
        std::fs::write(&lock, lines).unwrap();
        clear_zombie_lock(dir.path());
        assert!(!lock.exists(), "the zombie's lock file is gone");
        assert!(!socket_lock.exists(), "and so is its socket's");
        child.wait().unwrap();
    }

    #[test]
    fn proc_stat_parsing() {
        let line = "11181 (postgres) S 1 11181 11181 0 -1 4194560 2154 0 0 0 0 0 0 0 20 0 1 0 9871234 226983936 7000 18446744073709551615";
        assert_eq!(parse_proc_stat(line), Some(ProcStat { state: 'S', ppid: 1, start_ticks: 9871234 }));
        let odd = "7 (a) b (c)) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        assert_eq!(parse_proc_stat(odd), Some(ProcStat { state: 'Z', ppid: 1, start_ticks: 42 }));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_pid_reuse_is_detected() {
        let me = std::process::id();
        let ticks = proc_stat(me).unwrap().start_ticks;
        assert!(process_alive(me, Some(ticks)));
        assert!(!process_alive(me, Some(ticks + 1)));
        assert!(!process_alive(0, None));
        assert!(!looks_like_postmaster(me));
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children_of(me).contains(&child.id()));
        kill_with_children(child.id()).unwrap();
        assert_eq!(describe_exit(child.wait().unwrap()), "killed by SIGKILL");
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit code 0");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "killed by SIGKILL");
    }

    #[test]
    fn tails() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "old run\nnew 1\nnew 2\n").unwrap();
        assert_eq!(log_tail(&p, 8), "new 1\nnew 2");
        assert!(log_tail(&d.path().join("none"), 0).contains("unreadable"));
    }

    /// A data directory and a bin directory whose `postgres` is a shell script running `body`
    /// (with `$2` the data directory), so lifecycle paths can be tested without PostgreSQL.
    fn fake_postgres(body: &str) -> (tempfile::TempDir, PgSettings) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (bin, data) = (d.path().join("bin"), d.path().join("data"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let script = bin.join("postgres");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = PgSettings::new("fake", &data);
        s.bin_dir = bin;
        s.start_timeout = Duration::from_millis(500);
        (d, s)
    }

    const WRITE_PIDFILE: &str = r#"printf '%s\n%s\n0\n5432\n\n\n\n%s\n' $$ "$2" "$STATUS" > "$2/postmaster.pid""#;

    #[tokio::test]
    async fn stubborn_postmaster_is_killed_after_the_timeout() {
        let (_d, s) =
            fake_postgres(&format!("trap '' INT QUIT\nSTATUS=ready\n{WRITE_PIDFILE}\nwhile :; do sleep 0.05; done"));
        let pm = Postmaster::new(&s.data_dir);
        pm.start(&s, &StartRole::Primary).await.unwrap();
        assert!(pm.is_alive());
        assert!(s.log_file().starts_with(s.data_dir.parent().unwrap()));
        assert!(matches!(pm.start(&s, &StartRole::Primary).await, Err(PgError::AlreadyRunning { .. })));
        let outcome = pm.stop(StopMode::Fast, Duration::from_millis(300)).await.unwrap();
        assert_eq!(outcome, StopOutcome::Killed);
        let exit = pm.last_exit().unwrap();
        assert!(exit.requested);
        assert_eq!(exit.how, "killed by SIGKILL");
        assert!(!pm.is_alive());
    }

    #[tokio::test]
    async fn exit_during_startup_reports_the_log_tail() {
        let (_d, s) = fake_postgres("echo 'FATAL:  could not bind: boom' >&2\nexit 1");
        let pm = Postmaster::new(&s.data_dir);
        match pm.start(&s, &StartRole::Primary).await {
            Err(PgError::StartFailed { status, log_tail }) => {
                assert_eq!(status, "exit code 1");
                assert!(log_tail.contains("boom"), "{log_tail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!pm.last_exit().unwrap().requested);
        // A second failed start reports only its own output.
        let err = pm.start(&s, &StartRole::Primary).await.unwrap_err().to_string();
        assert_eq!(err.matches("boom").count(), 1, "{err}");
    }

    #[tokio::test]
    async fn slow_start_times_out_but_keeps_running() {
        let (_d, s) = fake_postgres(&format!("STATUS=starting\n{WRITE_PIDFILE}\nexec sleep 30"));
        let pm = Postmaster::new(&s.data_dir);
        assert!(matches!(
            pm.start(&s, &StartRole::Replica { upstream: None }).await,
            Err(PgError::StartTimeout { .. })
        ));
        assert!(pm.is_alive());
        assert!(s.data_dir.join("standby.signal").exists());
        // SIGINT ends `sleep` at once.
        assert_eq!(pm.stop(StopMode::Fast, Duration::from_secs(5)).await.unwrap(), StopOutcome::Stopped);
        assert_eq!(pm.wait_exit().await.unwrap().how, "killed by SIGINT");
    }

    #[tokio::test]
    async fn nothing_to_stop_or_wait_for() {
        let d = tempfile::tempdir().unwrap();
        let pm = Postmaster::new(d.path());
        assert!(!pm.is_alive());
        assert_eq!(pm.adopt(), None);
        assert_eq!(pm.wait_exit().await, None);
        assert_eq!(pm.stop(StopMode::Fast, Duration::from_secs(1)).await.unwrap(), StopOutcome::NotRunning);
        // A stale postmaster.pid naming a process that is not PostgreSQL is not adopted.
        std::fs::write(d.path().join("postmaster.pid"), format!("{}\n{}\n", std::process::id(), d.path().display()))
            .unwrap();
        assert_eq!(pm.adopt(), None);
    }
}
