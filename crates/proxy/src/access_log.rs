//! The access log (`proxy.access_log`): one JSON object per line for every client connection,
//! written when it ends, as HAProxy's `tcplog` and PgBouncer's `log_disconnections` do.
//!
//! Fields (`null` when unknown, e.g. before the startup packet):
//! `start` (RFC 3339, UTC, milliseconds), `duration_ms`, `client` (address:port), `port`
//! (`rw`/`ro`, the listener), `tls`, `user`, `database`, `route` (`primary`, `replica`,
//! `fallback_primary`), `backend` (member name), `backend_addr`, `bytes_from_client`,
//! `bytes_to_client`, `outcome` (see [`Outcome`]), `sqlstate` (of the error that ended the
//! connection, the proxy's or the server's) and `error` (the proxy's own message; a server's
//! message is not logged, it may quote data).
//!
//! Invariants: no password and no query text is ever in a record (the startup packet's user and
//! database are the only client-supplied text); each record is written with one `write` on a
//! file opened for appending, so lines from concurrent sessions never interleave; connections that
//! closed before sending a whole startup packet without error (port probes) are not logged, as
//! HAProxy's `dontlognull`. [`AccessLog::reopen`] (SIGHUP) opens the path again, so logrotate can
//! move the file away.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::session::Port;
use crate::stats::Decision;

/// How a client connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client said goodbye (Terminate) or closed its connection.
    ClientClosed,
    /// The server closed the connection without an error.
    ServerClosed,
    /// The server ended the session with a FATAL error (authentication failed, no such
    /// database, terminated by an administrator...): see `sqlstate`.
    ServerError,
    /// A read-write session on a primary that lost the leader role, closed with 57P01.
    Fenced,
    /// No backend for it: no replica (without fallback), or no primary within the hold.
    Refused,
    /// The chosen backend could not be reached (or did not answer) within the hold.
    ConnectFailed,
    /// The proxy was stopping (SIGTERM/SIGINT): 57P01 for a session, 57P03 before one.
    ShutDown,
    /// The client or the server broke the protocol (08P01).
    ProtocolError,
    /// The client did not send its startup packet in time.
    Timeout,
    /// The TLS handshake failed.
    TlsFailed,
    /// A cancel request (forwarded or not); such connections carry no session.
    Cancel,
}

impl Outcome {
    /// The spelling in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::ClientClosed => "client_closed",
            Outcome::ServerClosed => "server_closed",
            Outcome::ServerError => "server_error",
            Outcome::Fenced => "fenced",
            Outcome::Refused => "refused",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::ShutDown => "shut_down",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Timeout => "timeout",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Cancel => "cancel",
        }
    }
}

/// One connection's line, filled in as the connection goes.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    /// When it was accepted (wall clock).
    pub start: jiff::Timestamp,
    /// How long it lasted.
    pub duration: Duration,
    /// The client's address.
    pub client: String,
    /// The listener it came in on.
    pub port: Port,
    /// Whether it negotiated TLS.
    pub tls: bool,
    /// `user` from the startup packet.
    pub user: Option<String>,
    /// `database` from the startup packet (the user name when absent, as PostgreSQL does).
    pub database: Option<String>,
    /// Where the routing sent it.
    pub route: Option<Decision>,
    /// The backend it was relayed to: member name and address.
    pub backend: Option<(String, String)>,
    /// Bytes relayed from the client to the server.
    pub bytes_from_client: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// SQLSTATE of the error that ended it.
    pub sqlstate: Option<String>,
    /// The proxy's own error message, when the proxy ended it.
    pub error: Option<String>,
}

impl AccessRecord {
    /// A record for a connection accepted now from `client` on `port`.
    pub fn new(client: &str, port: Port) -> AccessRecord {
        AccessRecord {
            start: jiff::Timestamp::now(),
            duration: Duration::ZERO,
            client: client.to_string(),
            port,
            tls: false,
            user: None,
            database: None,
            route: None,
            backend: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
            outcome: Outcome::ClientClosed,
            sqlstate: None,
            error: None,
        }
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_json(&self) -> String {
        let start = self.start.round(jiff::Unit::Millisecond).unwrap_or(self.start);
        serde_json::json!({
            "start": format!("{start:.3}"),
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "client": self.client,
            "port": self.port.as_str(),
            "tls": self.tls,
            "user": self.user,
            "database": self.database,
            "route": self.route.map(Decision::as_str),
            "backend": self.backend.as_ref().map(|(name, _)| name),
            "backend_addr": self.backend.as_ref().map(|(_, addr)| addr),
            "bytes_from_client": self.bytes_from_client,
            "bytes_to_client": self.bytes_to_client,
            "outcome": self.outcome.as_str(),
            "sqlstate": self.sqlstate,
            "error": self.error,
        })
        .to_string()
    }
}

/// The access log file, if one is configured.
#[derive(Debug, Default)]
pub struct AccessLog {
    file: Mutex<Option<(PathBuf, File)>>,
    /// A write failed and was reported; reported again only after a write succeeds.
    failing: AtomicBool,
}

impl AccessLog {
    /// Opens `path` for appending (created 0640 when missing); `None` logs nothing. On error the
    /// file in use stays in use.
    pub fn reopen(&self, path: Option<&Path>) -> std::io::Result<()> {
        let opened = match path {
            Some(p) => Some((p.to_path_buf(), open_append(p)?)),
            None => None,
        };
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = opened;
        self.failing.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Whether records are written.
    pub fn enabled(&self) -> bool {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Appends `record` as one line. A failed write is reported once in the proxy's log (a full
    /// disk must not stop the proxy), then again after the next success.
    pub fn write(&self, record: &AccessRecord) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Some((path, file)) = guard.as_mut() else { return };
        let mut line = record.to_json();
        line.push('\n');
        match file.write_all(line.as_bytes()) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!("writing the access log {}: {e}", path.display());
                }
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening the access log {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            start: "2026-12-04T17:50:25.123456Z".parse().unwrap(),
            duration: Duration::from_millis(1520),
            client: "10.0.0.9:51234".into(),
            port: Port::ReadOnly,
            tls: true,
            user: Some("app".into()),
            database: Some("shop".into()),
            route: Some(Decision::Replica),
            backend: Some(("pg2".into(), "10.0.0.2:5432".into())),
            bytes_from_client: 120,
            bytes_to_client: 4096,
            outcome: Outcome::ClientClosed,
            sqlstate: None,
            error: None,
        }
    }

    #[test]
    fn a_record_is_one_json_object_with_every_field() {
        let line = record().to_json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let want = serde_json::json!({
            "start": "2026-12-04T17:50:25.123Z", "duration_ms": 1520, "client": "10.0.0.9:51234",
            "port": "ro", "tls": true, "user": "app", "database": "shop", "route": "replica",
            "backend": "pg2", "backend_addr": "10.0.0.2:5432", "bytes_from_client": 120,
            "bytes_to_client": 4096, "outcome": "client_closed", "sqlstate": null, "error": null,
        });
        assert_eq!(v, want);
    }

    #[test]
    fn a_refusal_has_no_route_and_names_its_error() {
        let r = AccessRecord {
            route: None,
            backend: None,
            outcome: Outcome::Refused,
            sqlstate: Some("57P03".into()),
            error: Some("no primary available (held 5 s)".into()),
            ..record()
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!((v["outcome"].as_str(), v["sqlstate"].as_str()), (Some("refused"), Some("57P03")));
        assert!(v["backend"].is_null() && v["route"].is_null());
        // Odd characters in client-supplied names stay inside their JSON string.
        let r = AccessRecord { user: Some("a\"b\n{".into()), ..record() };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["user"], "a\"b\n{");
    }

    #[test]
    fn lines_are_appended_and_the_file_is_reopened_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        let log = AccessLog::default();
        assert!(!log.enabled());
        log.write(&record());
        log.reopen(Some(&path)).unwrap();
        log.write(&record());
        log.write(&record());
        std::fs::rename(&path, dir.path().join("access.json.1")).unwrap();
        log.reopen(Some(&path)).unwrap();
        log.write(&record());
        let old = std::fs::read_to_string(dir.path().join("access.json.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        assert!(log.reopen(Some(&dir.path().join("no/such/dir/a.json"))).is_err());
        assert!(log.enabled(), "a failed reopen keeps the file in use");
        log.reopen(None).unwrap();
        assert!(!log.enabled());
    }
}
