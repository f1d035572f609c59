//! Processes by PID: /proc inspection, signals, PID files, and stopping a postmaster.
//!
//! Nothing here ever looks a process up by name: callers only signal PIDs they started themselves
//! (or that PostgreSQL recorded in a `postmaster.pid` inside one of their directories). The PID
//! file format, `<pid> <start time>`, is the one `scripts/reap-test-procs.sh` reads: the start
//! time tells a recorded process from a later one that reuses its PID.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Fields of `/proc/<pid>/stat` after the `(comm)` field: index 0 is field 3 (state).
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
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
    crate::wait_until(timeout, Duration::from_millis(20), || !is_alive(pid))
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

/// Whether the thread whose `/proc/<pid>/task/<tid>` directory is `task` is stopped (state `T`)
/// or gone: a SIGSTOP has taken effect on it.
pub fn task_stopped(task: &Path) -> bool {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_none_or(|state| state == "T")
}
