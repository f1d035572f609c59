//! `rampart proxy -c <file>` run as a child of the test, stopped by its PID when the handle is
//! dropped. Its configuration is what an application host would have: node 0's cluster (`scope`,
//! `namespace`, `etcd3`) and a `proxy` section on free ports, no member sections.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cluster::Cluster;
use super::process::LoggedChild;

/// One running `rampart proxy`.
#[derive(Debug)]
pub struct Proxy {
    proc: LoggedChild,
    /// Read-write port on 127.0.0.1.
    pub rw_port: u16,
    /// Read-only port on 127.0.0.1.
    pub ro_port: u16,
    /// Admin HTTP port on 127.0.0.1 (`proxy.listen_admin`), when started with one.
    pub admin_port: Option<u16>,
    config: PathBuf,
}

impl Proxy {
    /// Starts a proxy for `c` with `extra` appended to its `proxy` section (indented lines such
    /// as `"  hold_timeout: 5\n"`), and waits until both ports accept connections.
    pub fn start(c: &Cluster, extra: &str) -> Proxy {
        Proxy::launch(c, extra, false)
    }

    /// [`Proxy::start`] with an admin HTTP port as well (`proxy.listen_admin`, in
    /// [`Proxy::admin_port`]), waiting until it accepts connections too.
    pub fn start_with_admin(c: &Cluster, extra: &str) -> Proxy {
        Proxy::launch(c, extra, true)
    }

    fn launch(c: &Cluster, extra: &str, admin: bool) -> Proxy {
        let rw_port = super::free_port();
        let ro_port = super::free_port();
        let admin_port = admin.then(super::free_port);
        let mut section = format!("proxy:\n  listen: 127.0.0.1:{rw_port}\n  listen_ro: 127.0.0.1:{ro_port}\n");
        if let Some(port) = admin_port {
            section.push_str(&format!("  listen_admin: 127.0.0.1:{port}\n"));
        }
        let text = format!("{}{section}{extra}", c.node(0).config.patronictl_yaml());
        let config = c.dir().join("proxy.yml");
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut cmd = Command::new(super::rampart_bin());
        cmd.arg("proxy")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", std::env::var("RAMPART_AGENT_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1");
        let proc = LoggedChild::spawn("rampart proxy", cmd, &c.dir().join("proxy.log"));
        let mut p = Proxy { proc, rw_port, ro_port, admin_port, config };
        for port in [rw_port, ro_port].into_iter().chain(admin_port) {
            assert!(p.proc.wait_listening(port, Duration::from_secs(10)), "rampart proxy does not listen on {port}");
        }
        p
    }

    /// The proxy's PID while it runs (the benches read its memory and CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// SIGKILLs the proxy by PID and reaps it; a no-op when already stopped.
    pub fn stop(&mut self) {
        self.proc.stop();
    }
}
