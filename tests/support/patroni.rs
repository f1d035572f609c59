//! A real Patroni member (`/opt/rampart-venv/bin/patroni <config>`, Patroni 4 from PyPI, installed
//! by `scripts/setup.sh`), for stories where Patroni and Rampart members share one cluster.
//!
//! It runs as the agent's OS user (`postgres` when the test runs as root) with the environment
//! [`super::agent::agent_user_command`] gives `rampart agent`, from the very same [`super::NodeConfig`]
//! file, because a member moved from Patroni to Rampart keeps its file. Its output, which is also
//! the output of the PostgreSQL it starts (the postmaster inherits Patroni's stderr), is appended
//! to a log beside the file, printed when the test fails.
//!
//! Invariant kept: every process is stopped by PID. Patroni's PID is recorded next to its log
//! (`*.harness-pid`) and PostgreSQL's in `postmaster.pid`, which `scripts/reap-test-procs.sh`
//! reads after a killed test; on drop the handle kills Patroni and what it started, then the
//! postmaster. Patroni starts PostgreSQL in a session of its own, so it would outlive Patroni.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::agent::{agent_user_command, POSTMASTER_GRACE};
use super::process::{
    descendants, is_alive, pid_file_for, read_postmaster_pid, signal, stop_postmaster, wait_gone, write_pid_file,
};

/// `patroni` from the venv `scripts/setup.sh` creates, if it is there.
pub fn patroni_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/opt/rampart-venv/bin/patroni");
    p.exists().then_some(p)
}

/// Handle on one `patroni <config>` process.
#[derive(Debug)]
pub struct Patroni {
    name: String,
    child: Child,
    log: PathBuf,
    data_dir: PathBuf,
    /// Set once the processes were stopped (by [`Patroni::stop`], [`Patroni::crash`] or drop).
    done: bool,
}

impl Patroni {
    /// Starts Patroni for member `name` with `config`, its output appended to `log`; `data_dir`
    /// is the config's `postgresql.data_dir` (to find `postmaster.pid`).
    pub fn start(name: &str, config: &Path, log: &Path, data_dir: &Path) -> Patroni {
        let bin = patroni_bin().expect("/opt/rampart-venv/bin/patroni is missing: run scripts/setup.sh");
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let _ = writeln!(log_file, "=== harness: starting {} {} ===", bin.display(), config.display());
        let _ = super::process::chown_to_agent_user(log);
        let workdir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
        // Python buffers a redirected stdout: unbuffered, the log is current when it is printed.
        let mut cmd = agent_user_command(&bin, workdir, &[("PYTHONUNBUFFERED", "1")]);
        cmd.arg(config).stdin(Stdio::null()).stdout(log_file.try_clone().expect("clone log handle")).stderr(log_file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {} {}: {e}", bin.display(), config.display()));
        write_pid_file(&pid_file_for(log), child.id());
        Patroni { name: name.to_string(), child, log: log.to_path_buf(), data_dir: data_dir.to_path_buf(), done: false }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the Patroni process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An orderly stop, as `systemctl stop patroni` does: SIGTERM, upon which Patroni stops
    /// PostgreSQL (releasing the leader key if it held it). Waits up to `timeout` for it to exit;
    /// true if it did. If it did not, it is killed like on drop.
    pub fn stop(&mut self, timeout: Duration) -> bool {
        signal(self.pid(), Signal::SIGTERM);
        let exited = super::wait_until(timeout, Duration::from_millis(50), || !self.is_running());
        self.kill_all();
        exited
    }

    /// A crashed machine: Patroni and its postmaster SIGKILLed together (the postmaster's
    /// children notice and exit). Returns the postmaster's PID, if there was one.
    pub fn crash(&mut self) -> Option<u32> {
        self.done = true;
        let postmaster = read_postmaster_pid(&self.data_dir).filter(|&p| is_alive(p));
        let _ = self.child.kill();
        if let Some(pm) = postmaster {
            signal(pm, Signal::SIGKILL);
        }
        let _ = self.child.wait();
        self.kill_descendants();
        if let Some(pm) = postmaster {
            wait_gone(pm, Duration::from_secs(5));
        }
        postmaster
    }

    /// Kills whatever Patroni had started and still runs (pg_basebackup, pg_rewind, ...), except
    /// the postmaster, which is not its descendant.
    fn kill_descendants(&self) {
        for p in descendants(self.pid()) {
            signal(p, Signal::SIGKILL);
        }
    }

    /// Stops Patroni (SIGSTOP first so it starts nothing new, then SIGKILL with its descendants),
    /// then the postmaster named in `postmaster.pid`. Runs once.
    fn kill_all(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.is_running() {
            signal(self.pid(), Signal::SIGSTOP);
            let tree = descendants(self.pid());
            let _ = self.child.kill();
            for p in tree {
                signal(p, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
        stop_postmaster(&self.data_dir, POSTMASTER_GRACE);
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- Patroni {} log {} -----\n{}",
                self.name,
                self.log.display(),
                super::tail_file(&self.log, super::log_tail_lines())
            );
        }
        self.kill_all();
    }
}
