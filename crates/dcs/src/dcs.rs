//! The `Dcs` trait: every DCS operation the agent performs, independent of the backend.
//!
//! Invariants every implementation keeps:
//! * each call returns by its `deadline` (an error if the store did not answer in time);
//! * the leader lock is only ever written through compare-and-swap, so two members can never
//!   both believe a write made them leader;
//! * a node's member key and its leader key share one lease, so a node that stops refreshing
//!   loses both after `ttl`;
//! * values are byte-compatible with Patroni's (plain member name for `leader`, plain system
//!   identifier for `initialize`, compact JSON elsewhere).
//!
//! Methods return `impl Future + Send` rather than using `async fn`, so generic callers can spawn
//! the futures without boxing.

use std::future::Future;

use rampart_core::failsafe::Topology;
use rampart_core::model::{Failover, HistoryEntry, Status, SyncState};
use rampart_core::{Cluster, MemberData};
use tokio::time::Instant;

use crate::error::DcsError;
use crate::lease::KeptAlive;

/// Result of a DCS operation.
pub type DcsResult<T> = Result<T, DcsError>;

/// The distributed configuration store, seen from one member of one cluster.
pub trait Dcs: Send + Sync {
    /// This member's name.
    fn member_name(&self) -> &str;

    /// A deadline one default operation timeout from now, for callers without a cycle budget.
    fn op_deadline(&self) -> Instant;

    /// One consistent (linearizable) read of the whole cluster prefix.
    fn read_cluster(&self, deadline: Instant) -> impl Future<Output = DcsResult<Cluster>> + Send;

    /// Keeps this node's lease alive with one keep-alive round trip, granting a new lease if the
    /// old one expired (or the TTL changed). Returns the lease in force, when the keep-alive was
    /// sent, and the store revision the answering member had reached.
    fn refresh_lease(&self, deadline: Instant) -> impl Future<Output = DcsResult<KeptAlive>> + Send;

    /// The cluster as a watch-fed copy shows it, if there is one and it is current as of `kept`,
    /// the caller's keep-alive of this cycle (waiting up to `wait` for the watch to confirm it);
    /// `None` when the caller must read. Whether a decision may rest on it is
    /// [`rampart_core::cached_view`]'s rule.
    fn cached_cluster(
        &self,
        kept: &KeptAlive,
        wait: std::time::Duration,
    ) -> impl Future<Output = Option<Cluster>> + Send;

    /// Changes the lease TTL (the dynamic `ttl`); a new lease is granted on next use.
    fn set_ttl(&self, secs: u64);

    /// Publishes `members/<name>` attached to the lease (as Patroni's etcd3 backend does, so a
    /// replica's key lives as long as it keeps its lease alive); nothing is sent when the key
    /// already holds that content on that lease.
    fn touch_member(&self, data: &MemberData, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Removes `members/<name>`.
    fn delete_member(&self, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Creates `initialize` with `value` if it does not exist: the bootstrap race. True if won.
    fn try_initialize(&self, value: &str, deadline: Instant) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Writes the system identifier into `initialize` unconditionally (after a bootstrap).
    fn set_initialize(&self, sysid: &str, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Deletes `initialize` (a failed bootstrap gives the race back).
    fn cancel_initialize(&self, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Refreshes the lease, then creates `leader` = my name on it if no one holds the lock.
    /// True if this node holds the lock afterwards (a lock already holding my name counts, and
    /// is moved to my current lease).
    fn acquire_leader(&self, deadline: Instant) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Re-asserts the lock: rewritten on my current lease if it is mine, recreated if it
    /// vanished, left alone if someone else holds it. `Some(t)` if I hold it, on a lease kept
    /// alive by a request sent at `t` (the lock lasts at least a ttl from `t`), `None` if not.
    /// When the lock is already mine on a lease kept alive this cycle, nothing is sent.
    fn renew_leader(&self, deadline: Instant) -> impl Future<Output = DcsResult<Option<Instant>>> + Send;

    /// Deletes `leader` if it is mine. True if it was deleted by this call.
    fn release_leader(&self, deadline: Instant) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Writes the leader's `status` key.
    fn write_status(&self, status: &Status, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Writes the `failsafe` key (`failsafe_mode`: the topology of all known members).
    fn write_failsafe(&self, topology: &Topology, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Writes the `history` key.
    fn write_history(&self, history: &[HistoryEntry], deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Writes the `backup` key (`rampart backup`'s last run).
    fn write_backup(
        &self,
        report: &rampart_core::backup::BackupReport,
        deadline: Instant,
    ) -> impl Future<Output = DcsResult<()>> + Send;

    /// Creates `config` if it does not exist. True if created.
    fn set_config_if_absent(&self, json: &str, deadline: Instant) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Writes `config`; with `expected_mod_revision`, only if the key is still at that revision.
    /// False if the compare failed.
    fn set_config(
        &self,
        json: &str,
        expected_mod_revision: Option<i64>,
        deadline: Instant,
    ) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Requests a switchover or failover.
    fn set_failover(&self, failover: &Failover, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Clears the request (writes `{}`, as Patroni does).
    fn clear_failover(&self, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;

    /// Writes the `sync` key if its modification revision is still `expected_revision` (0: only
    /// if it does not exist). False if the compare failed: another writer changed it, and the
    /// caller must not act as if its value were in place.
    fn write_sync(
        &self,
        state: &SyncState,
        expected_revision: i64,
        deadline: Instant,
    ) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Deletes the `sync` key if its modification revision is still `expected_revision`. False if
    /// the compare failed.
    fn delete_sync(&self, expected_revision: i64, deadline: Instant) -> impl Future<Output = DcsResult<bool>> + Send;

    /// Deletes every key of the cluster.
    fn delete_cluster(&self, deadline: Instant) -> impl Future<Output = DcsResult<()>> + Send;
}
