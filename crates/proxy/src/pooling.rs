//! What a pooling proxy needs to know, read once from the configuration (and again on a reload):
//! the pool mode, the pools' limits (with per-database overrides), how clients authenticate (a
//! fixed method or `pg_hba`-style rules), where users' secrets come from (an `auth_file`, an
//! `auth_query` run as `auth_user`), and the bounds on clients.
//!
//! Invariant: every question (which mode, which limits, which method for this connection) is
//! answered here, so sessions, the admin console and a reload agree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::auth_file::AuthFile;
use crate::hba::{self, Decision, Hba, Method};
use crate::pool::Limits;

pub use rampart_config::PoolMode;

/// How a client authenticates to the proxy.
#[derive(Clone, Debug)]
pub enum Rules {
    /// The same method for everyone (`auth_type`).
    Method(Method),
    /// `pg_hba.conf`-style rules (`auth_type: hba`, `auth_hba_file`).
    Hba(Hba),
}

/// Per-database overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseOverride {
    /// Its pools' limits.
    pub limits: Limits,
    /// Its pool mode.
    pub mode: PoolMode,
}

/// The pooling settings in force.
#[derive(Clone, Debug)]
pub struct Pooling {
    /// The default pool mode.
    pub mode: PoolMode,
    /// The default pool limits.
    pub limits: Limits,
    /// Per-database overrides (resolved over the defaults).
    pub databases: HashMap<String, DatabaseOverride>,
    /// How clients authenticate.
    pub rules: Rules,
    /// Users' secrets from the `auth_file` (empty without one).
    pub auth_file: AuthFile,
    /// The user `auth_query` runs as, if any.
    pub auth_user: Option<String>,
    /// The query that reads a user's secret (`$1`: the user name).
    pub auth_query: String,
    /// The most client connections (`max_client_conn`).
    pub max_client_conn: usize,
    /// A client idle inside a transaction longer than this is disconnected.
    pub idle_transaction_timeout: Option<Duration>,
    /// Users allowed every admin console command.
    pub admin_users: Vec<String>,
    /// Users allowed the admin console's `SHOW` commands.
    pub stats_users: Vec<String>,
    /// How long in-flight transactions on a primary being switched over may take.
    pub drain_timeout: Duration,
    /// Run on a server connection a session-mode client leaves, before another client gets it
    /// (`server_reset_query`; `None`: nothing).
    pub reset_query: Option<String>,
}

impl Default for Pooling {
    fn default() -> Self {
        Pooling {
            mode: PoolMode::Session,
            limits: Limits::default(),
            databases: HashMap::new(),
            rules: Rules::Method(Method::ScramSha256),
            auth_file: AuthFile::default(),
            auth_user: None,
            auth_query: crate::auth_query::DEFAULT.to_string(),
            max_client_conn: 100,
            idle_transaction_timeout: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            drain_timeout: Duration::from_secs(5),
            reset_query: Some("DISCARD ALL".to_string()),
        }
    }
}

impl Pooling {
    /// The pool mode of `database`.
    pub fn mode_for(&self, database: &str) -> PoolMode {
        self.databases.get(database).map_or(self.mode, |d| d.mode)
    }

    /// Whether the proxy authenticates clients itself (an `auth_file` or an `auth_user`): then a
    /// session-mode database pools its server connections across sessions, as PgBouncer's
    /// session mode does; without, each session is relayed to a server connection of its own and
    /// PostgreSQL authenticates it.
    pub fn authenticates(&self) -> bool {
        !self.auth_file.is_empty() || self.auth_user.is_some()
    }

    /// Whether `database`'s clients are served from a pool ([`crate::txn`]): in transaction mode,
    /// or in session mode when the proxy authenticates clients.
    pub fn pooled(&self, database: &str) -> bool {
        self.mode_for(database) == PoolMode::Transaction || self.authenticates()
    }

    /// The pool limits of `database`.
    pub fn limits_for(&self, database: &str) -> Limits {
        self.databases.get(database).map_or(self.limits, |d| d.limits)
    }

    /// Whether any database is pooled by transaction.
    pub fn any_transaction(&self) -> bool {
        self.mode == PoolMode::Transaction || self.databases.values().any(|d| d.mode == PoolMode::Transaction)
    }

    /// How `c` authenticates.
    pub fn decide(&self, c: &hba::Connection<'_>) -> Decision {
        match &self.rules {
            Rules::Method(m) => Decision { method: *m, line: None },
            Rules::Hba(h) => h.decide(c),
        }
    }
}

/// What the admin console paused (PAUSE, until RESUME).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paused {
    /// Every database.
    pub all: bool,
    /// These databases.
    pub databases: std::collections::BTreeSet<String>,
}

impl Paused {
    /// Whether clients of `database` must wait.
    pub fn holds(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }
}

/// The pooled clients connected now (`max_client_conn`).
#[derive(Debug, Default)]
pub struct ClientCount(AtomicUsize);

/// Counts one client while it lives.
#[derive(Debug)]
pub struct Counted<'a>(&'a ClientCount);

impl ClientCount {
    /// Counts a client in until the guard drops.
    pub fn enter(&self) -> Counted<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self)
    }

    /// Clients counted now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_answer_for_their_database_only() {
        let mut p = Pooling { mode: PoolMode::Transaction, ..Pooling::default() };
        let small = Limits { size: 2, ..Limits::default() };
        p.databases.insert("reports".into(), DatabaseOverride { limits: small, mode: PoolMode::Session });
        assert_eq!((p.mode_for("app"), p.limits_for("app").size), (PoolMode::Transaction, 20));
        assert_eq!((p.mode_for("reports"), p.limits_for("reports").size), (PoolMode::Session, 2));
        assert!(p.any_transaction());
        assert!(!Pooling::default().any_transaction());
    }
}
