//! What the REST API's write side asks of the agent: the [`Backend`] trait.
//!
//! The API crate decides nothing about HA. Switchover and failover requests become the DCS
//! `failover` key (the HA loops of the members act on it, exactly as when `patronictl` writes it);
//! configuration changes become compare-and-swap writes of the `config` key; restart, reinitialize
//! and reload are handed to the local agent's loop, which decides whether and when they run.
//!
//! Invariant: every write goes through this trait, so the API never holds a DCS client or
//! touches PostgreSQL itself, and a test can drive the endpoints with a fake backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use rampart_core::model::Failover;
use rampart_core::Cluster;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Backend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Filters and options of `POST /restart` (Patroni's body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartRequest {
    /// Restart only if a parameter change waits for a restart.
    pub restart_pending: bool,
    /// Restart only if this node has this role (`primary`/`master`, `replica`).
    pub role: Option<String>,
    /// Restart only if the running server version is lower than this (`server_version_num` form).
    pub postgres_version: Option<u32>,
    /// Give up on the restart after this many seconds.
    pub timeout_secs: Option<u64>,
}

/// A restart to run later (`POST /restart` with `schedule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledRestart {
    /// When, as unix milliseconds.
    pub at_unix_ms: i64,
    /// The same text the request carried (ISO 8601), for display.
    pub schedule: String,
    /// Its filters.
    pub request: RestartRequest,
}

/// An operation the local agent's loop performs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalRequest {
    /// Restart PostgreSQL now (filters already checked by the API against the snapshot, and
    /// checked again by the agent).
    Restart(RestartRequest),
    /// Keep this restart and run it at its time.
    ScheduleRestart(ScheduledRestart),
    /// Forget the scheduled restart.
    CancelScheduledRestart,
    /// Wipe the data directory and clone again from the leader (or any healthy member unless
    /// `from_leader`); refused on the leader.
    Reinitialize {
        /// Cancel a running job (e.g. a clone) to do it.
        force: bool,
        /// Clone from the leader only.
        from_leader: bool,
    },
    /// Re-read the local configuration file and reload PostgreSQL.
    Reload,
}

/// The agent's answer to a [`LocalRequest`]: a status code and Patroni's message text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status (e.g. 200 restarted, 202 scheduled/accepted, 409 conflict, 503 failed).
    pub status: u16,
    /// Body text, e.g. `restarted successfully`.
    pub message: String,
}

/// The agent side of the write endpoints.
pub trait Backend: Send + Sync + 'static {
    /// A fresh, consistent read of the cluster from the DCS.
    fn read_cluster(&self) -> BoxFuture<'_, Result<Cluster, String>>;

    /// Writes the `failover` key (a switchover or failover request).
    fn set_failover(&self, failover: Failover) -> BoxFuture<'_, Result<(), String>>;

    /// Clears the `failover` key (writes `{}`).
    fn clear_failover(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Writes the `config` key; with `expected_revision`, only if it is still at that revision
    /// (`Ok(false)` when the compare failed).
    fn write_config(&self, json: String, expected_revision: Option<i64>) -> BoxFuture<'_, Result<bool, String>>;

    /// Checks the `postgresql.parameters` of a configuration about to be written against the
    /// local PostgreSQL's own settings (`postgres --describe-config`): the remarks to log (e.g.
    /// an unknown name), or why PostgreSQL would refuse a value, naming the parameter.
    fn check_parameters(&self, parameters: &BTreeMap<String, serde_json::Value>) -> Result<Vec<String>, String>;

    /// Hands a request to the local agent's loop and waits for its answer.
    fn local(&self, request: LocalRequest) -> BoxFuture<'_, LocalReply>;

    /// Records a primary's `POST /failsafe` this member accepted: for `ttl` from now it must not
    /// race for the lock. Must not wait for the HA loop (the primary gives up after 2 s).
    fn failsafe_ping(&self, ping: FailsafePing) -> BoxFuture<'_, ()>;
}

/// The body of `POST /failsafe` (Patroni's `check_failsafe_topology`): who the primary is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailsafePing {
    /// The primary's member name.
    pub name: String,
    /// Its PostgreSQL connection URL.
    pub conn_url: String,
    /// Its REST API URL.
    pub api_url: String,
    /// Its replication slots and their positions (replicas advance theirs to them while the DCS
    /// is away).
    pub slots: std::collections::BTreeMap<String, u64>,
}
