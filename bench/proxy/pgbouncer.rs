//! PgBouncer, the pooler bench/proxy.rs sets `rampart proxy` against: Debian's package
//! (`/usr/sbin/pgbouncer`, `RAMPART_PGBOUNCER_BIN` overrides), one process per pool mode, in the
//! foreground as a child of the bench and stopped by its PID when the handle is dropped.
//!
//! What it keeps: PgBouncer runs as the PostgreSQL OS user when the bench is root (it refuses to
//! run as root), with every file it needs in the cluster directory; it logs no connections, like
//! `rampart proxy` without `access_log`, so that neither pays for a log line per `-C` connection;
//! and it gets the same `auth_file` and `auth_type` as the transaction-mode rampart, so that both
//! authenticate the same clients the same way.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{run_as, LoggedChild};

/// The first PgBouncer release that keeps protocol-level prepared statements across the servers
/// of a transaction-mode pool (`max_prepared_statements`).
const PREPARED_SINCE: (u32, u32) = (1, 21);

pub fn bin() -> PathBuf {
    crate::common::env_path("RAMPART_PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
}

/// `PgBouncer 1.18.0`, the first line of `pgbouncer --version`.
pub fn version() -> Result<String, String> {
    let out = Command::new(bin())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {} --version: {e} (scripts/setup.sh installs it)", bin().display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).ok_or_else(|| {
        format!("{} --version printed nothing: {}", bin().display(), String::from_utf8_lossy(&out.stderr).trim())
    })
}

/// Whether the PgBouncer of `version` (as [`version`] prints it) knows `max_prepared_statements`.
pub fn supports_prepared(version: &str) -> bool {
    let number = version.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = number.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= PREPARED_SINCE
}

/// How one PgBouncer is set up.
pub struct Settings<'a> {
    /// Names its files, `<name>.ini` and `<name>.log`.
    pub name: &'a str,
    /// `session` or `transaction`.
    pub pool_mode: &'a str,
    pub pool_size: usize,
    pub max_client_conn: usize,
    /// PgBouncer's userlist: `"user" "password"` lines.
    pub auth_file: &'a Path,
    /// Whether to set `max_prepared_statements` (see [`supports_prepared`]).
    pub prepared: bool,
    /// The open-files limit it starts with (soft and hard).
    pub nofile: u64,
}

/// `pgbouncer.ini` for `s`: database `postgres` is the primary's on `primary_port`.
fn ini(s: &Settings, port: u16, primary_port: u16) -> String {
    let prepared = if s.prepared { "max_prepared_statements = 100\n" } else { "" };
    format!(
        "; Written by bench/proxy.rs.\n\
         [databases]\n\
         postgres = host=127.0.0.1 port={primary_port} dbname=postgres\n\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {}\n\
         pool_mode = {}\n\
         default_pool_size = {}\n\
         max_client_conn = {}\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         {prepared}",
        s.auth_file.display(),
        s.pool_mode,
        s.pool_size,
        s.max_client_conn,
    )
}

/// One running PgBouncer.
pub struct PgBouncer {
    proc: LoggedChild,
    pub port: u16,
}

impl PgBouncer {
    /// Writes `<dir>/<name>.ini` and starts PgBouncer on a free port in front of the primary on
    /// `primary_port`, through `sh` so that it starts with `ulimit -n` [`Settings::nofile`];
    /// waits until it listens.
    pub fn start(dir: &Path, s: &Settings, primary_port: u16) -> Result<PgBouncer, String> {
        let port = crate::support::free_port();
        let config = dir.join(format!("{}.ini", s.name));
        std::fs::write(&config, ini(s, port, primary_port))
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("ulimit -n {} && exec \"$0\" \"$@\"", s.nofile)).arg(bin()).arg(&config);
        if let Some((uid, gid)) = run_as().switch_to {
            cmd.uid(uid).gid(gid);
        }
        let mut proc = LoggedChild::spawn(s.name, cmd, &dir.join(format!("{}.log", s.name)));
        if !proc.wait_listening(port, Duration::from_secs(10)) {
            let log = crate::support::tail_file(proc.log_path(), 20);
            return Err(format!("{} does not listen on {port}; its log:\n{log}", s.name));
        }
        Ok(PgBouncer { proc, port })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}
