//! Processes by PID: who we run as, /proc inspection, signals, PID files.
//!
//! Nothing here ever looks a process up by name: the harness only signals PIDs it started itself
//! (or that PostgreSQL recorded in a `postmaster.pid` inside one of our test directories).

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

/// The OS user the agent (and therefore PostgreSQL) runs as.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// `Some(uid, gid)` when we are root and must switch to the `postgres` user.
    pub switch_to: Option<(u32, u32)>,
    pub user: String,
    pub home: PathBuf,
}

/// `postgres` when running as root (uid/gid looked up once), otherwise the current user.
pub fn run_as() -> &'static RunAs {
    static RUN_AS: OnceLock<RunAs> = OnceLock::new();
    RUN_AS.get_or_init(|| {
        if nix::unistd::geteuid().is_root() {
            let u = User::from_name("postgres")
                .expect("looking up the postgres user")
                .expect("there is no `postgres` OS user; run scripts/setup.sh (it installs postgresql-15)");
            RunAs { switch_to: Some((u.uid.as_raw(), u.gid.as_raw())), user: u.name, home: u.dir }
        } else {
            let uid = nix::unistd::getuid();
            let u = User::from_uid(uid).ok().flatten();
            RunAs {
                switch_to: None,
                user: u.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| uid.to_string()),
                home: u.map(|u| u.dir).unwrap_or_else(|| PathBuf::from("/tmp")),
            }
        }
    })
}

/// Gives `path` to the agent's user when we run as root; a no-op otherwise.
pub fn chown_to_agent_user(path: &Path) -> std::io::Result<()> {
    match run_as().switch_to {
        Some((uid, gid)) => chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Whether the agent's user can execute `path` judging by permission bits (the file and the search
/// permission of every ancestor directory; ACLs are ignored). Always true when not switching user.
pub fn agent_user_can_execute(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, gid)) = run_as().switch_to else { return true };
    let allows = |p: &Path, bits: u32| -> bool {
        let Ok(m) = std::fs::metadata(p) else { return false };
        let mode = m.mode();
        let granted = if m.uid() == uid {
            (mode >> 6) & 7
        } else if m.gid() == gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        granted & bits == bits
    };
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    // r+x on the file itself (a script must also be readable), x on every directory above it.
    allows(&path, 0o5) && path.ancestors().skip(1).all(|dir| allows(dir, 0o1))
}

/// Fields of `/proc/<pid>/stat` after the `(comm)` field: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True when `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match stat_fields(pid) {
        Some(f) => f.first().map(|s| s != "Z" && s != "X").unwrap_or(false),
        None => false,
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Parent PID of `pid`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The file name of the executable of `pid` (` (deleted)` suffix stripped).
pub fn exe_name(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    Some(name.trim_end_matches(" (deleted)").to_owned())
}

/// All descendants of `pid` (children, grandchildren, ...), from one scan of `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(pp) = parent_pid(p) {
                    children.entry(pp).or_default().push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}

/// Sends `sig` to `pid`; false when the process does not exist (or cannot be signalled).
pub fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).map(|p| kill(Pid::from_raw(p), sig).is_ok()).unwrap_or(false)
}

/// Polls until `pid` is gone (or a zombie); true if it went away within `timeout`.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    super::wait_until(timeout, Duration::from_millis(20), || !is_alive(pid))
}

/// The postmaster PID recorded in `<data_dir>/postmaster.pid` (first line), if any.
pub fn read_postmaster_pid(data_dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    s.lines().next()?.trim().parse().ok()
}

/// Stops the postmaster recorded in `data_dir` if it is still running: SIGQUIT (immediate
/// shutdown, which also stops its children), then SIGKILL after `grace`.
/// Only signals the PID if its executable is `postgres`, so a recycled PID is left alone.
/// Returns the PID that was stopped.
pub fn stop_postmaster(data_dir: &Path, grace: Duration) -> Option<u32> {
    let pid = read_postmaster_pid(data_dir)?;
    if !is_alive(pid) || exe_name(pid).as_deref() != Some("postgres") {
        return None;
    }
    signal(pid, Signal::SIGQUIT);
    if !wait_gone(pid, grace) {
        signal(pid, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(5));
    }
    Some(pid)
}

/// Records `pid` for `scripts/reap-test-procs.sh`: `<pid> <start time>`.
pub fn write_pid_file(path: &Path, pid: u32) {
    let line = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    let _ = std::fs::write(path, line);
}

/// `<file>.harness-pid` next to `file`.
pub fn pid_file_for(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".harness-pid");
    file.with_file_name(name)
}

/// A server a test started (HAProxy, `rampart proxy`, ...), its output appended to a log. It is
/// SIGKILLed by PID and reaped on drop, and its log is printed first when the test is failing.
#[derive(Debug)]
pub struct LoggedChild {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl LoggedChild {
    /// Writes a banner to `log`, starts `cmd` with stdin closed and stdout/stderr appended to
    /// `log`, and records its PID next to the log for `scripts/reap-test-procs.sh`.
    pub fn spawn(name: &str, mut cmd: std::process::Command, log: &Path) -> LoggedChild {
        use std::io::Write;
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let _ = writeln!(log_file, "=== harness: starting {name}: {cmd:?} ===");
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        write_pid_file(&pid_file_for(log), child.id());
        LoggedChild { name: name.to_string(), child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until `127.0.0.1:port` accepts TCP connections (while the process runs).
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        super::wait_until(timeout, Duration::from_millis(50), || {
            self.is_running() && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    }

    /// Waits up to `timeout` for the process to exit by itself and reaps it: its exit status, or
    /// `None` if it still runs (it is then left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        super::wait_until(timeout, Duration::from_millis(20), || {
            status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGKILLs the process by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log {} -----\n{}",
                self.name,
                self.log.display(),
                super::tail_file(&self.log, super::log_tail_lines())
            );
        }
        self.stop();
    }
}

/// Makes `cmd` start inside the network namespace `netns` (a file such as
/// `/var/run/netns/<name>`), then, when `user` is given, switch to that uid/gid with no
/// supplementary groups. Needs root.
///
/// Both happen in the child between fork and exec, so the PID the caller gets is the program's
/// own (the harness signals it by that PID). `Command::uid` cannot be used together with this:
/// std switches user before `pre_exec` hooks run, and an unprivileged process may not enter a
/// namespace.
pub fn start_in_netns(cmd: &mut std::process::Command, netns: &Path, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    let ns =
        std::fs::File::open(netns).unwrap_or_else(|e| panic!("opening network namespace {}: {e}", netns.display()));
    // SAFETY: the hook only makes system calls (setns, setgroups, setgid, setuid); it allocates
    // nothing and takes no lock, as code between fork and exec must.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            if let Some((uid, gid)) = user {
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).map_err(std::io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}
