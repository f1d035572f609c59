//! PostgreSQL's command-line tools: pg_controldata, initdb, pg_basebackup, pg_rewind, and the
//! data directory wipe that goes with a failed clone.
//!
//! Invariants:
//! * passwords reach the tools through a 0600 file or the environment, never the command line
//!   (which every local user can read in `/proc`), and never appear in errors;
//! * a tool runs in its own process group; if the future running it is dropped (the job was
//!   cancelled) the whole group is killed, so no helper outlives the agent's interest in it;
//! * pg_basebackup only writes into an empty data directory, and empties it again on failure or
//!   cancellation, so a half copy is never mistaken for a cluster;
//! * nothing here wipes a directory a live postmaster is using.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rampart_core::{DataDir, Upstream};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::conf::conninfo;
use crate::controldata::{classify, is_empty_dir};
use crate::error::{PgError, Result};
use crate::pidfile::read_pidfile;
use crate::process::{describe_exit, last_lines, process_alive};
use crate::settings::PgSettings;

/// Lines of a tool's output kept in errors.
const TAIL_LINES: usize = 20;

/// What pg_rewind did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The target was rewound to the source's timeline.
    Rewound,
    /// The target had not diverged ("no rewind required").
    NotRequired,
}

/// Classifies the data directory: [`DataDir::Empty`] when missing or empty,
/// [`DataDir::Initialized`] from `pg_controldata` (run with `LANG=C`), else [`DataDir::Invalid`]
/// with the reason.
pub async fn controldata(bin_dir: &Path, data_dir: &Path) -> DataDir {
    let empty = is_empty_dir(data_dir);
    let output = if matches!(empty, Ok(false)) {
        if data_dir.join("global").join("pg_control").is_file() {
            let program = bin_dir.join("pg_controldata");
            let mut cmd = Command::new(&program);
            cmd.arg("-D").arg(data_dir).env("LANG", "C").env("LC_ALL", "C");
            match run(cmd, "pg_controldata").await {
                Ok(out) => Ok(out.stdout),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Err("not empty, but has no global/pg_control".to_string())
        }
    } else {
        Err(String::new())
    };
    classify(empty, || output)
}

/// Runs initdb into `settings.data_dir` as the configured superuser. When the superuser has a
/// password it is passed through a temporary 0600 file (`--pwfile`) that is removed afterwards.
/// `extra_args` go last (e.g. `--auth=scram-sha-256`, `--encoding=UTF8`, `--data-checksums`).
pub async fn initdb(settings: &PgSettings, extra_args: &[String]) -> Result<()> {
    let program = settings.program("initdb");
    let mut cmd = Command::new(&program);
    cmd.arg(format!("--pgdata={}", settings.data_dir.display()))
        .arg(format!("--username={}", settings.superuser.username));
    // Kept alive until initdb has finished; dropping it removes the file.
    let mut pwfile = None;
    if let Some(password) = &settings.superuser.password {
        let f = write_secret_file(password)?;
        cmd.arg(format!("--pwfile={}", f.path().display()));
        pwfile = Some(f);
    }
    cmd.args(extra_args);
    let result = run(cmd, "initdb").await;
    drop(pwfile);
    result.map(|_| ())
}

/// Clones `from` into `settings.data_dir` with `pg_basebackup -X stream -c fast` (then
/// `postgresql.basebackup`'s options) as the replication role (password through `PGPASSWORD`). The data directory must be missing or
/// empty; on failure, or if this future is dropped, pg_basebackup is killed and whatever it wrote
/// is removed (the directory itself is kept).
pub async fn basebackup(settings: &PgSettings, from: &Upstream) -> Result<()> {
    let dir = &settings.data_dir;
    match is_empty_dir(dir) {
        Ok(true) => {}
        Ok(false) => {
            return Err(PgError::DataDir { path: dir.clone(), reason: "not empty; refusing to clone into it".into() })
        }
        Err(e) => return Err(PgError::io("listing", dir, e)),
    }
    let program = settings.program("pg_basebackup");
    let mut cmd = Command::new(&program);
    cmd.arg("-D")
        .arg(dir)
        .args(["-X", "stream", "-c", "fast", "--no-password"])
        .arg("-h")
        .arg(&from.host)
        .arg("-p")
        .arg(from.port.to_string())
        .arg("-U")
        .arg(&settings.replication.username)
        .args(&settings.basebackup_args)
        .env("PGAPPNAME", &settings.name)
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "30");
    set_password(&mut cmd, settings.replication.password.as_deref());
    let service = set_libpq_options(&mut cmd, &settings.replication)?;
    // If anything below fails or the future is dropped, this empties the directory again.
    let mut cleanup = WipeOnDrop { dir: Some(dir.clone()) };
    tracing::info!(from = %from.name, host = %from.host, port = from.port, "cloning with pg_basebackup");
    run(cmd, "pg_basebackup").await?;
    drop(service);
    cleanup.dir = None;
    Ok(())
}

/// Rewinds `settings.data_dir` to the timeline of `from` with pg_rewind, connecting as the rewind
/// role (or the superuser) to the `postgres` database, password through `PGPASSWORD`.
/// PostgreSQL must be stopped; PostgreSQL 13+'s pg_rewind runs crash recovery itself when the
/// target was not shut down cleanly. Segments the target had not archived are archived first, and
/// with a `restore_command` pg_rewind fetches missing WAL from the archive ([`crate::archive`]). "No rewind required" counts as success. On failure the error
/// carries the tail of pg_rewind's output.
pub async fn rewind(settings: &PgSettings, from: &Upstream) -> Result<RewindOutcome> {
    let creds = settings.rewind_credentials();
    let port = from.port.to_string();
    let source = conninfo(&[
        ("host", &from.host),
        ("port", &port),
        ("user", &creds.username),
        ("dbname", "postgres"),
        ("connect_timeout", "30"),
        ("application_name", &settings.name),
    ]);
    // pg_rewind starts the target in single-user mode when it was not shut down cleanly, which a
    // zombie's lock file would block, and which refuses to run with a standby.signal ("standby
    // mode is not supported by single-user servers"), left by an attempt to start it as a
    // replica. The next start as a replica writes the signal file again (Patroni removes it
    // before rewinding too).
    crate::process::clear_zombie_lock(&settings.data_dir);
    for signal in [crate::configure::STANDBY_SIGNAL, "recovery.signal"] {
        let path = settings.data_dir.join(signal);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed before pg_rewind"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io("removing before pg_rewind", &path, e)),
        }
    }
    // What the archiver had not sent yet would be lost with this pg_wal (see `archive`).
    crate::archive::archive_ready_segments(settings).await;
    let program = settings.program("pg_rewind");
    let mut cmd = Command::new(&program);
    cmd.arg(format!("--target-pgdata={}", settings.data_dir.display()))
        .arg(format!("--source-server={source}"))
        // With --progress it says when it reaches its point of no return (see below).
        .arg("--progress")
        // Its messages are recognised in English.
        .env("LC_ALL", "C");
    if let Some(restore) = crate::archive::restore_command(settings) {
        // pg_rewind reads restore_command from the target's postgresql.conf (`postgres -C`),
        // where a primary's file has it only when it is among the parameters.
        let mut with = settings.clone();
        with.parameters.retain(|k, _| !k.eq_ignore_ascii_case("restore_command"));
        with.parameters.insert("restore_command".into(), restore.to_string());
        crate::configure::write_config(&with, &rampart_core::StartRole::Primary)?;
        cmd.arg("--restore-target-wal");
    }
    set_password(&mut cmd, creds.password.as_deref());
    let service = set_libpq_options(&mut cmd, creds)?;
    tracing::info!(from = %from.name, host = %from.host, port = from.port, "running pg_rewind");
    let (status, out) = run_to_end(cmd, "pg_rewind").await?;
    drop(service);
    rewind_outcome(status, &out)
}

/// What pg_rewind printed (with `--progress`) just before its point of no return, the first
/// change to the target's files: "need to copy N MB (total source directory size is M MB)".
const REWIND_POINT_OF_NO_RETURN: &str = "need to copy ";

fn rewind_outcome(status: ExitStatus, out: &Output) -> Result<RewindOutcome> {
    if status.success() {
        return Ok(if out.contains("no rewind required") {
            RewindOutcome::NotRequired
        } else {
            RewindOutcome::Rewound
        });
    }
    let (status, output_tail) = (describe_exit(status), out.tail());
    if out.contains(REWIND_POINT_OF_NO_RETURN) {
        Err(PgError::ToolFailed { tool: "pg_rewind", status, output_tail })
    } else {
        Err(PgError::RewindUntouched { status, output_tail })
    }
}

/// Removes everything inside the data directory but keeps the directory (its ownership and mode
/// may have been set up by an administrator). Refuses while a postmaster runs on it.
pub async fn wipe_data_dir(data_dir: &Path) -> Result<()> {
    if let Some(pf) = read_pidfile(data_dir) {
        if process_alive(pf.pid, None) {
            return Err(PgError::AlreadyRunning { pid: pf.pid, data_dir: data_dir.to_path_buf() });
        }
    }
    let dir = data_dir.to_path_buf();
    tracing::warn!(data_dir = %dir.display(), "wiping data directory");
    tokio::task::spawn_blocking(move || wipe_contents(&dir))
        .await
        .map_err(|e| PgError::io("wiping", data_dir, std::io::Error::other(e.to_string())))?
}

/// After a failed bootstrap: renames the data directory to `<data_dir>.failed` (replacing an
/// older one), as Patroni does, so what the failed attempt left can be inspected. When it cannot
/// be renamed (its parent is not writable), its contents are removed instead, so the next start
/// finds it empty. Refused while a postmaster runs in it.
pub async fn move_data_dir_aside(data_dir: &Path) -> Result<()> {
    if let Some(pf) = read_pidfile(data_dir) {
        if process_alive(pf.pid, None) {
            return Err(PgError::AlreadyRunning { pid: pf.pid, data_dir: data_dir.to_path_buf() });
        }
    }
    if !data_dir.exists() {
        return Ok(());
    }
    let mut failed = data_dir.as_os_str().to_owned();
    failed.push(".failed");
    let failed = std::path::PathBuf::from(failed);
    let (from, to) = (data_dir.to_path_buf(), failed.clone());
    let moved = tokio::task::spawn_blocking(move || {
        if to.exists() {
            std::fs::remove_dir_all(&to)?;
        }
        std::fs::rename(&from, &to)
    })
    .await
    .map_err(|e| PgError::io("renaming", data_dir, std::io::Error::other(e.to_string())))?;
    match moved {
        Ok(()) => {
            tracing::info!("renaming data directory to {}", failed.display());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not rename data directory {} to {}", data_dir.display(), failed.display());
            wipe_data_dir(data_dir).await
        }
    }
}

fn wipe_contents(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PgError::io("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| PgError::io("listing", dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = if is_dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io("removing", path, e)),
        }
    }
    Ok(())
}

/// Empties a directory when dropped while armed (pg_basebackup failed or was cancelled). By the
/// time it runs, the tool's process group has been killed and reaped by [`GroupGuard`].
struct WipeOnDrop {
    dir: Option<PathBuf>,
}

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            tracing::warn!(data_dir = %dir.display(), "removing the incomplete clone");
            if let Err(e) = wipe_contents(&dir) {
                tracing::error!(error = %e, "could not remove the incomplete clone");
            }
        }
    }
}

/// What a tool printed.
struct Output {
    stdout: String,
    stderr: String,
}

/// Runs a tool to completion in its own process group with stdin closed, capturing its output.
/// A non-zero exit becomes [`PgError::ToolFailed`] with the output's tail.
async fn run(cmd: Command, tool: &'static str) -> Result<Output> {
    let (status, out) = run_to_end(cmd, tool).await?;
    if status.success() {
        return Ok(out);
    }
    Err(PgError::ToolFailed { tool, status: describe_exit(status), output_tail: out.tail() })
}

/// Lines of an operator's script's stderr kept in [`ScriptEnd::stderr_tail`]: enough for
/// pgBackRest's error with the warnings and hints that explain it.
pub const SCRIPT_TAIL_LINES: usize = 10;

/// How an operator's script ended, with the last lines it wrote to its stderr, which is where
/// tools such as pgBackRest say why they failed.
#[derive(Debug)]
pub struct ScriptEnd {
    /// How it exited.
    pub status: ExitStatus,
    /// At most [`SCRIPT_TAIL_LINES`] lines, blank ones left out; empty if it wrote nothing.
    pub stderr_tail: String,
}

impl ScriptEnd {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `", saying: <its last stderr lines>"`, or nothing if it wrote nothing on stderr: appended
    /// to a sentence telling how the script ended.
    pub fn saying(&self) -> String {
        match self.stderr_tail.is_empty() {
            true => String::new(),
            false => format!(", saying: {}", self.stderr_tail),
        }
    }
}

/// Runs an operator's script (a replica creation method, a bootstrap script) to its end in its
/// own process group, its stdout going where the agent's goes and its stderr copied there line
/// by line, the last lines kept for the error that reports a failure. Dropping the future (a
/// cancelled job) kills the whole group, so nothing the script started outlives the job: a shell
/// that forks its command instead of exec'ing it would otherwise leave that command running.
/// Once the script has exited, its stderr is read for at most half a second more (something
/// it started in the background may hold the pipe open).
pub async fn run_script(mut cmd: Command) -> std::io::Result<ScriptEnd> {
    use tokio::io::AsyncBufReadExt;
    cmd.stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut guard = GroupGuard::new(cmd.spawn()?);
    let mut stderr = guard.child.stderr.take().map(tokio::io::BufReader::new);
    let mut tail = Tail::new(SCRIPT_TAIL_LINES);
    let mut line = Vec::new();
    let status = loop {
        let Some(reader) = stderr.as_mut() else { break guard.child.wait().await? };
        tokio::select! {
            read = reader.read_until(b'\n', &mut line) => match read {
                Ok(n) if n > 0 => relay(&mut line, &mut tail),
                _ => stderr = None,
            },
            status = guard.child.wait() => break status?,
        }
    };
    guard.finished = true;
    if let Some(mut reader) = stderr {
        let rest = async {
            while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                relay(&mut line, &mut tail);
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), rest).await;
        if !line.is_empty() {
            relay(&mut line, &mut tail);
        }
    }
    Ok(ScriptEnd { status, stderr_tail: tail.text() })
}

/// Copies one line of a script's stderr to the agent's own and keeps it in `tail`.
fn relay(line: &mut Vec<u8>, tail: &mut Tail) {
    use std::io::Write;
    let text = String::from_utf8_lossy(line);
    // Not eprintln!, which panics when the agent's stderr is closed.
    let _ = writeln!(std::io::stderr(), "{}", text.trim_end_matches(['\n', '\r']));
    tail.push(&text);
    line.clear();
}

/// The last `n` non-blank lines of a stream, each cut to [`Tail::LINE_CHARS`] characters.
#[derive(Debug)]
struct Tail {
    n: usize,
    lines: std::collections::VecDeque<String>,
}

impl Tail {
    const LINE_CHARS: usize = 1000;

    fn new(n: usize) -> Tail {
        Tail { n, lines: std::collections::VecDeque::with_capacity(n) }
    }

    fn push(&mut self, line: &str) {
        let line = line.trim_end();
        if line.trim().is_empty() || self.n == 0 {
            return;
        }
        if self.lines.len() == self.n {
            self.lines.pop_front();
        }
        let mut kept: String = line.chars().take(Self::LINE_CHARS).collect();
        if kept.len() < line.len() {
            kept.push_str("...");
        }
        self.lines.push_back(kept);
    }

    fn text(&self) -> String {
        self.lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

/// Runs a tool to completion (as [`run`]) and returns how it ended with all it printed.
async fn run_to_end(mut cmd: Command, tool: &'static str) -> Result<(ExitStatus, Output)> {
    let program = PathBuf::from(cmd.as_std().get_program());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| PgError::Spawn { program, source })?;
    let mut guard = GroupGuard::new(child);
    let (status, stdout, stderr) = guard.wait_with_output().await.map_err(|e| PgError::io("waiting for", tool, e))?;
    guard.finished = true;
    Ok((status, Output { stdout, stderr }))
}

impl Output {
    /// The last lines of what a failed tool printed (its stderr, or stdout when that is empty).
    fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr };
        last_lines(text, TAIL_LINES)
    }

    fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle) || self.stderr.contains(needle)
    }
}

/// Owns a tool's process; if dropped before the tool finished, kills its whole process group and
/// waits (briefly, synchronously) until the leader is reaped, so cleanup that follows does not
/// race with a tool still writing.
struct GroupGuard {
    child: Child,
    finished: bool,
}

impl GroupGuard {
    fn new(child: Child) -> Self {
        GroupGuard { child, finished: false }
    }

    async fn wait_with_output(&mut self) -> std::io::Result<(ExitStatus, String, String)> {
        let mut out = self.child.stdout.take();
        let mut err = self.child.stderr.take();
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(s) = out.as_mut() {
                s.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(s) = err.as_mut() {
                s.read_to_end(&mut buf).await?;
            }
            Ok::<_, std::io::Error>(buf)
        };
        let (o, e, status) = tokio::join!(read_out, read_err, self.child.wait());
        Ok((status?, String::from_utf8_lossy(&o?).into_owned(), String::from_utf8_lossy(&e?).into_owned()))
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(pid) = self.child.id() {
            tracing::warn!(pid, "killing cancelled tool and its process group");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// Sets `PGPASSWORD` for a tool (or removes an inherited one when there is no password).
fn set_password(cmd: &mut Command, password: Option<&str>) {
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
}

/// The libpq environment variable of each parameter of [`crate::Credentials::options`] but
/// `sslpassword`, which has none.
const LIBPQ_ENV: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("gssencmode", "PGGSSENCMODE"),
    ("channel_binding", "PGCHANNELBINDING"),
];

/// Gives a libpq program (pg_basebackup, pg_rewind) the role's connection parameters through its
/// environment, not its command line, which every user can read in `ps`. `sslpassword` has no
/// environment variable: it goes into a temporary 0600 service file (`PGSERVICEFILE`), returned
/// so that it lives until the program has ended.
fn set_libpq_options(cmd: &mut Command, creds: &crate::Credentials) -> Result<Option<tempfile::NamedTempFile>> {
    for (name, var) in LIBPQ_ENV {
        match creds.option(name) {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let Some(phrase) = creds.option("sslpassword") else {
        cmd.env_remove("PGSERVICE");
        return Ok(None);
    };
    let file = write_secret_file(&format!("[rampart]\nsslpassword={phrase}"))?;
    cmd.env("PGSERVICEFILE", file.path()).env("PGSERVICE", "rampart");
    Ok(Some(file))
}

/// A temporary file holding `secret`, readable only by us.
fn write_secret_file(secret: &str) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix("rampart-pw-")
        .tempfile()
        .map_err(|e| PgError::io("creating", std::env::temp_dir(), e))?;
    // tempfile creates files with mode 0600 on Unix.
    f.write_all(secret.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.flush())
        .map_err(|e| PgError::io("writing", f.path(), e))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_tail_keeps_the_last_non_blank_lines_cut_to_length() {
        let mut t = Tail::new(3);
        assert_eq!(t.text(), "");
        for line in ["one\n", "\n", "two\r\n", "   \n", "three", "four\n"] {
            t.push(line);
        }
        assert_eq!(t.text(), "two\nthree\nfour");
        let mut t = Tail::new(2);
        t.push(&"x".repeat(Tail::LINE_CHARS + 5));
        assert_eq!(t.text(), format!("{}...", "x".repeat(Tail::LINE_CHARS)));
    }

    #[tokio::test]
    async fn a_script_tells_how_it_ended_and_what_it_said_last_on_stderr() {
        let script = |body: &str| {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(body);
            c
        };
        let end =
            run_script(script("echo out; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \"line $i\" >&2; done; exit 75"))
                .await
                .unwrap();
        assert_eq!(end.status.code(), Some(75));
        let lines: Vec<&str> = end.stderr_tail.lines().collect();
        assert_eq!(lines.len(), SCRIPT_TAIL_LINES);
        assert_eq!((lines[0], lines[SCRIPT_TAIL_LINES - 1]), ("line 3", "line 12"), "only stderr, its last lines");
        assert!(end.saying().starts_with(", saying: line 3\n"));

        let end = run_script(script("true")).await.unwrap();
        assert!(end.success() && end.stderr_tail.is_empty() && end.saying().is_empty());

        // Something left running in the background with the pipe open does not hold it up.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let started = std::time::Instant::now();
        let end = run_script(script(&format!("echo why >&2; sleep 30 & echo $! > {}; exit 3", pid_file.display())))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!((end.status.code(), end.stderr_tail.as_str()), (Some(3), "why"));
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }

    #[test]
    fn a_rewind_that_failed_before_copying_left_the_target_untouched() {
        use std::os::unix::process::ExitStatusExt;
        let out = |stderr: &str| Output { stdout: String::new(), stderr: stderr.into() };
        let failed = ExitStatus::from_raw(1 << 8);
        let early = out("pg_rewind: executing \"postgres\" for target server to complete crash recovery\n\
             FATAL:  could not write lock file \"postmaster.pid\": No space left on device\n\
             pg_rewind: error: postgres single-user mode in target cluster failed\n");
        let e = rewind_outcome(failed, &early).unwrap_err();
        assert!(matches!(e, PgError::RewindUntouched { .. }), "{e}");
        assert!(e.to_string().contains("before changing the data directory") && e.to_string().contains("No space"));
        let late = out("pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n\
             pg_rewind: reading source file list\npg_rewind: need to copy 51 MB (total source directory size is 70 MB)\n\
             pg_rewind: error: could not write file: No space left on device\n");
        assert!(
            matches!(rewind_outcome(failed, &late), Err(PgError::ToolFailed { .. })),
            "past the point of no return"
        );
        let ok = ExitStatus::from_raw(0);
        assert_eq!(rewind_outcome(ok, &out("pg_rewind: no rewind required\n")).unwrap(), RewindOutcome::NotRequired);
        assert_eq!(rewind_outcome(ok, &late).unwrap(), RewindOutcome::Rewound);
    }

    #[tokio::test]
    async fn controldata_of_missing_empty_and_foreign_dirs() {
        let d = tempfile::tempdir().unwrap();
        let bin = Path::new("/nonexistent");
        assert_eq!(controldata(bin, &d.path().join("missing")).await, DataDir::Empty);
        assert_eq!(controldata(bin, d.path()).await, DataDir::Empty);
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        assert!(matches!(controldata(bin, d.path()).await, DataDir::Invalid(r) if r.contains("pg_control")));
    }

    #[tokio::test]
    async fn wipe_keeps_the_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("base/1")).unwrap();
        std::fs::write(d.path().join("base/1/x"), "x").unwrap();
        std::fs::write(d.path().join("PG_VERSION"), "15").unwrap();
        wipe_data_dir(d.path()).await.unwrap();
        assert!(d.path().is_dir());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn failing_tool_reports_its_output_tail() {
        let cmd = {
            let mut c = Command::new("sh");
            c.args(["-c", "echo one >&2; echo two >&2; exit 3"]);
            c
        };
        let err = run(cmd, "initdb").await.err().unwrap().to_string();
        assert_eq!(err, "initdb failed (exit code 3): one\ntwo");
    }

    #[tokio::test]
    async fn dropping_a_running_tool_kills_its_group() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let mut cmd = Command::new("sh");
        // The grandchild (sleep) must die with the group too.
        cmd.arg("-c").arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let fut = run(cmd, "pg_basebackup");
        let timed_out = tokio::time::timeout(Duration::from_millis(500), fut).await.is_err();
        assert!(timed_out);
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let mut dead = false;
        for _ in 0..100 {
            if !process_alive(grandchild, None) {
                dead = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dead, "grandchild {grandchild} survived");
    }

    #[test]
    fn secret_file_is_private() {
        let f = write_secret_file("pw").unwrap();
        assert_eq!(std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "pw\n");
    }

    /// Settings whose `pg_basebackup` is a script that records its arguments and password,
    /// writes into the target directory, then runs `tail`.
    fn fake_basebackup(tail: &str) -> (tempfile::TempDir, PgSettings, Upstream) {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("pg_basebackup");
        let (args, pw) = (d.path().join("args"), d.path().join("pw"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nprintf '%s' \"$PGPASSWORD\" > {}\nmkdir -p \"$2/base\"\necho 15 > \"$2/PG_VERSION\"\n{tail}\n",
                args.display(),
                pw.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = PgSettings::new("n1", d.path().join("data"));
        s.bin_dir = bin;
        s.replication = crate::settings::Credentials::new("repl", "t0p secret");
        let up = Upstream { name: "n2".into(), host: "10.0.0.2".into(), port: 5433 };
        (d, s, up)
    }

    #[tokio::test]
    async fn failed_clone_is_removed_and_password_stays_off_the_command_line() {
        let (d, s, up) = fake_basebackup("echo 'pg_basebackup: error: connection refused' >&2; exit 1");
        let err = basebackup(&s, &up).await.unwrap_err().to_string();
        assert_eq!(err, "pg_basebackup failed (exit code 1): pg_basebackup: error: connection refused");
        assert!(s.data_dir.is_dir());
        assert_eq!(std::fs::read_dir(&s.data_dir).unwrap().count(), 0);
        let args = std::fs::read_to_string(d.path().join("args")).unwrap();
        assert!(args.contains("10.0.0.2\n") && args.contains("5433\n") && args.contains("repl\n"), "{args}");
        assert!(!args.contains("secret"));
        assert_eq!(std::fs::read_to_string(d.path().join("pw")).unwrap(), "t0p secret");
    }

    #[tokio::test]
    async fn cancelled_clone_is_killed_and_removed() {
        let (_d, s, up) = fake_basebackup("exec sleep 30");
        let cancelled = tokio::time::timeout(Duration::from_millis(500), basebackup(&s, &up)).await.is_err();
        assert!(cancelled);
        assert_eq!(std::fs::read_dir(&s.data_dir).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn successful_clone_is_kept() {
        let (_d, s, up) = fake_basebackup("exit 0");
        basebackup(&s, &up).await.unwrap();
        assert!(s.data_dir.join("PG_VERSION").is_file());
    }

    #[tokio::test]
    async fn basebackup_refuses_a_non_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("PG_VERSION"), "15").unwrap();
        let s = PgSettings::new("n1", d.path());
        let up = Upstream { name: "n2".into(), host: "127.0.0.1".into(), port: 1 };
        assert!(matches!(basebackup(&s, &up).await, Err(PgError::DataDir { .. })));
        assert!(d.path().join("PG_VERSION").exists());
    }
}
