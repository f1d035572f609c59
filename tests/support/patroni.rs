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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::agent::{agent_user_command, POSTMASTER_GRACE};
use super::process::{descendants, is_alive, read_postmaster_pid, signal, stop_postmaster, wait_gone, LoggedChild};

/// `patroni` from the venv `scripts/setup.sh` creates, if it is there.
pub fn patroni_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/opt/rampart-venv/bin/patroni");
    p.exists().then_some(p)
}

/// Handle on one `patroni <config>` process: a [`LoggedChild`] (its log, its PID file, its log
/// printed when the test fails) that also stops what Patroni started.
#[derive(Debug)]
pub struct Patroni {
    proc: LoggedChild,
    pid: u32,
    data_dir: PathBuf,
    /// Set once the processes were stopped (by [`Patroni::stop`], [`Patroni::crash`] or drop).
    done: bool,
}

impl Patroni {
    /// Starts Patroni for member `name` with `config`, its output appended to `log`; `data_dir`
    /// is the config's `postgresql.data_dir` (to find `postmaster.pid`).
    pub fn start(name: &str, config: &Path, log: &Path, data_dir: &Path) -> Patroni {
        let bin = patroni_bin().expect("/opt/rampart-venv/bin/patroni is missing: run scripts/setup.sh");
        let workdir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("/"));
        // Python buffers a redirected stdout: unbuffered, the log is current when it is printed.
        let mut cmd = agent_user_command(&bin, workdir, &[("PYTHONUNBUFFERED", "1")]);
        cmd.arg(config).stdin(Stdio::null());
        let proc = LoggedChild::spawn(&format!("Patroni {name}"), cmd, log);
        let _ = super::process::chown_to_agent_user(log);
        let pid = proc.pid().expect("just started");
        Patroni { proc, pid, data_dir: data_dir.to_path_buf(), done: false }
    }

    /// Patroni for node `i` of `c`, from the node's own file, its output in `patroni.out` beside
    /// it (start the cluster with `start_agents: false`).
    pub fn start_node(c: &super::cluster::Cluster, i: usize) -> Patroni {
        let log = c.node(i).config.node_dir.join("patroni.out");
        Patroni::start(c.name(i), c.config_path(i), &log, c.data_dir(i))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Whether the Patroni process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// An orderly stop, as `systemctl stop patroni` does: SIGTERM, upon which Patroni stops
    /// PostgreSQL (releasing the leader key if it held it). Waits up to `timeout` for it to exit;
    /// true if it did. If it did not, it is killed like on drop.
    pub fn stop(&mut self, timeout: Duration) -> bool {
        signal(self.pid, Signal::SIGTERM);
        let exited = self.proc.wait_exit(timeout).is_some();
        self.kill_all();
        exited
    }

    /// A crashed machine: Patroni, what it started and its postmaster SIGKILLed together (the
    /// postmaster's children notice and exit). Returns the postmaster's PID, if there was one.
    pub fn crash(&mut self) -> Option<u32> {
        self.done = true;
        let postmaster = read_postmaster_pid(&self.data_dir).filter(|&p| is_alive(p));
        // Listed before Patroni dies: its orphans would no longer be its descendants.
        let tree = descendants(self.pid);
        self.proc.stop();
        for p in tree.into_iter().chain(postmaster) {
            signal(p, Signal::SIGKILL);
        }
        if let Some(pm) = postmaster {
            wait_gone(pm, Duration::from_secs(5));
        }
        postmaster
    }

    /// Stops Patroni (SIGSTOP first so it starts nothing new, then SIGKILL with its descendants:
    /// pg_basebackup, pg_rewind...), then the postmaster named in `postmaster.pid`, which Patroni
    /// starts in a session of its own. Runs once.
    fn kill_all(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if self.proc.is_running() {
            signal(self.pid, Signal::SIGSTOP);
            let tree = descendants(self.pid);
            self.proc.stop();
            for p in tree {
                signal(p, Signal::SIGKILL);
            }
        }
        self.proc.stop();
        stop_postmaster(&self.data_dir, POSTMASTER_GRACE);
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // The log is printed by the LoggedChild's own drop, after this.
        self.kill_all();
    }
}
