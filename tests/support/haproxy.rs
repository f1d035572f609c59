//! Debian's HAProxy (`/usr/sbin/haproxy`, `RAMPART_HAPROXY_BIN` overrides) run in the foreground
//! as a child of the test, stopped by its PID when the handle is dropped.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{pid_file_for, write_pid_file};

pub fn haproxy_bin() -> PathBuf {
    std::env::var_os("RAMPART_HAPROXY_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/sbin/haproxy".into())
}

/// One `haproxy -f <config> -db` process (as the test's own user), its output appended to a log.
#[derive(Debug)]
pub struct Haproxy {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
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
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let _ = writeln!(log_file, "=== harness: starting haproxy -f {} ===", config.display());
        let child = Command::new(haproxy_bin())
            .arg("-f")
            .arg(config)
            // Foreground, no daemon, no master-worker: the PID we hold is the proxy itself.
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", haproxy_bin().display()));
        write_pid_file(&pid_file_for(log), child.id());
        Haproxy { child: Some(child), config: config.to_path_buf(), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until `127.0.0.1:port` (one of the config's `bind` ports) accepts TCP connections.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        super::wait_until(timeout, Duration::from_millis(50), || {
            self.is_running() && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    }

    /// SIGKILLs the process by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- haproxy log {} -----\n{}",
                self.log.display(),
                super::tail_file(&self.log, super::log_tail_lines())
            );
        }
        self.stop();
    }
}
