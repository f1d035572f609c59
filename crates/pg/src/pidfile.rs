//! Parser for `postmaster.pid`, the lock file a running postmaster keeps in its data directory.
//!
//! Invariant: the file is read, never written, by this crate: PostgreSQL owns it, and a stale file
//! is evidence (of a crash) rather than clutter. The one exception is
//! [`crate::process::clear_zombie_lock`]: a file naming a zombie, which PostgreSQL itself would
//! take for a live postmaster forever.
//!
//! Lines (PostgreSQL 10+): pid, data directory, start time (epoch), port, socket directory,
//! listen address, shared memory key, status. The status is padded to a fixed width and, like the
//! lines after the data directory, may be missing while the postmaster is still starting.

use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const PIDFILE: &str = "postmaster.pid";

/// The postmaster's own status line, as `pg_ctl -w` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PmStatus {
    /// "starting": recovering or not yet consistent.
    Starting,
    /// "stopping": shutting down.
    Stopping,
    /// "ready": accepting connections as a primary (or after recovery).
    Ready,
    /// "standby": accepting read-only connections as a hot standby.
    Standby,
    /// Anything else.
    Other(String),
}

impl PmStatus {
    /// Whether the server accepts connections.
    pub fn accepts_connections(&self) -> bool {
        matches!(self, PmStatus::Ready | PmStatus::Standby)
    }
}

/// The contents of `postmaster.pid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidFile {
    /// The postmaster's pid.
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Start time, seconds since the epoch.
    pub start_epoch: Option<i64>,
    /// Port.
    pub port: Option<u16>,
    /// First Unix socket directory, if any.
    pub socket_dir: Option<String>,
    /// First listen address, if any.
    pub listen_address: Option<String>,
    /// Status line.
    pub status: Option<PmStatus>,
}

/// Parses the file; `None` when even the pid line is missing or malformed.
pub fn parse_pidfile(text: &str) -> Option<PidFile> {
    let lines: Vec<&str> = text.lines().collect();
    let pid: u32 = lines.first()?.trim().parse().ok().filter(|p| *p > 0)?;
    let line = |i: usize| lines.get(i).map(|l| l.trim()).filter(|l| !l.is_empty());
    Some(PidFile {
        pid,
        data_dir: PathBuf::from(line(1).unwrap_or_default()),
        start_epoch: line(2).and_then(|v| v.parse().ok()),
        port: line(3).and_then(|v| v.parse().ok()),
        socket_dir: line(4).map(str::to_string),
        listen_address: line(5).map(str::to_string),
        status: line(7).map(|s| match s {
            "starting" => PmStatus::Starting,
            "stopping" => PmStatus::Stopping,
            "ready" => PmStatus::Ready,
            "standby" => PmStatus::Standby,
            other => PmStatus::Other(other.to_string()),
        }),
    })
}

/// Reads `<data_dir>/postmaster.pid`; `None` when it is absent or unreadable.
pub fn read_pidfile(data_dir: &Path) -> Option<PidFile> {
    std::fs::read_to_string(data_dir.join(PIDFILE)).ok().and_then(|t| parse_pidfile(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a PostgreSQL 15 primary (`cat postmaster.pid`).
    const READY: &str =
        "11181\n/tmp/cdsample/d\n1795264302\n54999\n/tmp/cdsample\nlocalhost\n 10011363         4\nready   \n";

    #[test]
    fn parses_a_running_postmaster() {
        let p = parse_pidfile(READY).unwrap();
        assert_eq!(p.pid, 11181);
        assert_eq!(p.data_dir, PathBuf::from("/tmp/cdsample/d"));
        assert_eq!(p.start_epoch, Some(1795264302));
        assert_eq!(p.port, Some(54999));
        assert_eq!(p.socket_dir.as_deref(), Some("/tmp/cdsample"));
        assert_eq!(p.listen_address.as_deref(), Some("localhost"));
        assert_eq!(p.status, Some(PmStatus::Ready));
        assert!(p.status.unwrap().accepts_connections());
    }

    #[test]
    fn partial_and_broken_files() {
        let early = parse_pidfile("42\n/d\n").unwrap();
        assert_eq!((early.pid, early.status), (42, None));
        assert_eq!(parse_pidfile(&READY.replace("ready   ", "standby ")).unwrap().status, Some(PmStatus::Standby));
        assert!(!PmStatus::Starting.accepts_connections());
        assert_eq!(parse_pidfile(""), None);
        assert_eq!(parse_pidfile("0\n"), None);
        assert_eq!(parse_pidfile("abc\n/d\n"), None);
    }
}
