//! Processes by PID (re-exported from the kit: [`rampart_kit::pid`], [`rampart_kit::user`]) and
//! [`LoggedChild`], a server a test started with its output in a log.
//!
//! Nothing here ever looks a process up by name: the harness only signals PIDs it started itself
//! (or that PostgreSQL recorded in a `postmaster.pid` inside one of our test directories).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use rampart_kit::pid::*;
pub use rampart_kit::user::*;

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
