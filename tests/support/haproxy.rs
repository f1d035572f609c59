//! Debian's HAProxy (`/usr/sbin/haproxy`, `RAMPART_HAPROXY_BIN` overrides) run in the foreground
//! as a child of the test, stopped by its PID when the handle is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::LoggedChild;

pub fn haproxy_bin() -> PathBuf {
    std::env::var_os("RAMPART_HAPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/sbin/haproxy".into())
}

/// One `haproxy -f <config> -db` process (as the test's own user), its output appended to a log.
#[derive(Debug)]
pub struct Haproxy {
    proc: LoggedChild,
    config: PathBuf,
}

impl Haproxy {
    /// Checks `config` with `haproxy -c` (panicking with HAProxy's complaint if it is refused),
    /// then starts HAProxy in the foreground with stdout and stderr appended to `log`.
    /// Does not wait for it to listen: see [`Haproxy::wait_listening`].
    pub fn start(config: &Path, log: &Path) -> Haproxy {
        let check =
            Command::new(haproxy_bin()).arg("-c").arg("-f").arg(config).stdin(Stdio::null()).output().unwrap_or_else(
                |e| panic!("running {}: {e} (run scripts/setup.sh to install haproxy)", haproxy_bin().display()),
            );
        assert!(
            check.status.success(),
            "haproxy refuses {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut cmd = Command::new(haproxy_bin());
        // Foreground, no daemon, no master-worker: the PID we hold is the proxy itself.
        cmd.arg("-f").arg(config).arg("-db");
        Haproxy { proc: LoggedChild::spawn("haproxy", cmd, log), config: config.to_path_buf() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits until `127.0.0.1:port` (one of the config's `bind` ports) accepts TCP connections.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> bool {
        self.proc.wait_listening(port, timeout)
    }

    /// SIGKILLs the process by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}
