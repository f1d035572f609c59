//! `rampart proxy -c <file>` run as a child of the test, stopped by its PID when the handle is
//! dropped. Its configuration is node 0's plus a `proxy` section on free ports.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cluster::Cluster;
use super::process::{pid_file_for, write_pid_file};

/// One running `rampart proxy`.
#[derive(Debug)]
pub struct Proxy {
    child: Option<Child>,
    /// Read-write port on 127.0.0.1.
    pub rw_port: u16,
    /// Read-only port on 127.0.0.1.
    pub ro_port: u16,
    config: PathBuf,
    log: PathBuf,
}

impl Proxy {
    /// Starts a proxy for `c` with `extra` appended to its `proxy` section (indented lines such
    /// as `"  hold_timeout: 5\n"`), and waits until both ports accept connections.
    pub fn start(c: &Cluster, extra: &str) -> Proxy {
        let rw_port = super::free_port();
        let ro_port = super::free_port();
        let mut cfg = c.node(0).config.clone();
        cfg.extra_yaml
            .push_str(&format!("proxy:\n  listen: 127.0.0.1:{rw_port}\n  listen_ro: 127.0.0.1:{ro_port}\n{extra}"));
        let config = c.dir().join("proxy.yml");
        std::fs::write(&config, cfg.to_yaml()).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = c.dir().join("proxy.log");
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let _ = writeln!(log_file, "=== harness: starting rampart proxy -c {} ===", config.display());
        let child = Command::new(super::rampart_bin())
            .arg("proxy")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", std::env::var("RAMPART_AGENT_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning rampart proxy: {e}"));
        write_pid_file(&pid_file_for(&log), child.id());
        let mut p = Proxy { child: Some(child), rw_port, ro_port, config, log };
        for port in [rw_port, ro_port] {
            assert!(p.wait_listening(port, Duration::from_secs(10)), "rampart proxy does not listen on {port}");
        }
        p
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn wait_listening(&mut self, port: u16, timeout: Duration) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        super::wait_until(timeout, Duration::from_millis(50), || {
            self.is_running() && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    }

    /// SIGKILLs the proxy by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- proxy log {} -----\n{}",
                self.log.display(),
                super::tail_file(&self.log, super::log_tail_lines())
            );
        }
        self.stop();
    }
}
