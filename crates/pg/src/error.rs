//! The one error type of this crate.
//!
//! Invariant: every variant names what failed (a file, a tool, a query) so the agent's log line is
//! actionable on its own, and no variant ever carries a password. Errors of statements that hold
//! secrets are built by [`crate::sql`] from the SQLSTATE alone (see [`PgError::SecretQuery`]).

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// What went wrong while managing PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation, e.g. "writing".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program's path.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tool (initdb, pg_basebackup, pg_rewind, pg_controldata) exited unsuccessfully.
    #[error("{tool} failed ({status}): {output_tail}")]
    ToolFailed {
        /// Tool name.
        tool: &'static str,
        /// How it ended ("exit status 1", "signal 9").
        status: String,
        /// Last lines of what it printed.
        output_tail: String,
    },
    /// pg_rewind exited unsuccessfully before its point of no return: the data directory is as
    /// it was (apart from the crash recovery pg_rewind runs first), so it may be tried again.
    #[error("pg_rewind failed ({status}) before changing the data directory: {output_tail}")]
    RewindUntouched {
        /// How it ended.
        status: String,
        /// Last lines of what it printed.
        output_tail: String,
    },
    /// The settings cannot be turned into a working configuration.
    #[error("invalid PostgreSQL settings: {0}")]
    Settings(String),
    /// The data directory is not in the state the operation needs.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A postmaster is already running on the data directory.
    #[error("a postmaster (pid {pid}) is already running on {data_dir}")]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The postmaster exited before it accepted connections.
    #[error("PostgreSQL exited during startup ({status}); log tail:\n{log_tail}")]
    StartFailed {
        /// How it ended.
        status: String,
        /// Last lines of its log.
        log_tail: String,
    },
    /// The postmaster is running but did not accept connections in time. It is left running.
    #[error("PostgreSQL (pid {pid}) did not accept connections within {timeout:?}; log tail:\n{log_tail}")]
    StartTimeout {
        /// The postmaster's pid.
        pid: u32,
        /// The limit.
        timeout: Duration,
        /// Last lines of its log.
        log_tail: String,
    },
    /// The postmaster survived even SIGKILL for a while.
    #[error("PostgreSQL (pid {pid}) did not exit, even after SIGKILL")]
    StopFailed {
        /// The postmaster's pid.
        pid: u32,
    },
    /// A signal could not be sent.
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The target.
        pid: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Connecting to the local server failed.
    #[error("connecting to PostgreSQL at {target}: {detail}")]
    Connect {
        /// Host or socket directory and port.
        target: String,
        /// The cause, flattened.
        detail: String,
    },
    /// A query failed.
    #[error("{what}: {detail}")]
    Query {
        /// What the query was for.
        what: &'static str,
        /// The server's message or the client's cause, flattened.
        detail: String,
    },
    /// A statement that carries a secret failed; only the SQLSTATE is reported because server
    /// messages may quote the statement.
    #[error("{what} failed (SQLSTATE {sqlstate}); details withheld because the statement holds a password")]
    SecretQuery {
        /// What the statement was for (names the role, never the password).
        what: String,
        /// SQLSTATE code, or "connection" when no server error was received.
        sqlstate: String,
    },
    /// A query did not answer in time; the connection was dropped.
    #[error("{what}: no answer within {timeout:?}")]
    QueryTimeout {
        /// What the query was for.
        what: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The server answered something this crate cannot interpret.
    #[error("{what}: unexpected answer: {detail}")]
    Unexpected {
        /// What the query or file was for.
        what: &'static str,
        /// What was odd.
        detail: String,
    },
    /// A timeline history file could not be read or parsed.
    #[error("timeline history file {path}: {reason}")]
    History {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl PgError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> PgError {
        PgError::Io { what, path: path.into(), source }
    }
}
