//! The read endpoints' only input: an immutable [`NodeSnapshot`] the agent publishes through a
//! `tokio::sync::watch` channel (shared with the handlers through [`crate::ApiContext`]).
//!
//! Invariant kept here: the API never blocks the HA loop. A request copies the current snapshot
//! out of the channel (holding the channel's read lock only for that copy) and decides on the
//! copy; it never waits for the agent and never writes anything back through it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_core::PgState;
use rampart_core::{Cluster, Tags};

/// One walsender as shown under `replication` in `/patroni`
/// (`pg_stat_get_wal_senders()` joined with `pg_stat_activity`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReplicationConn {
    /// Role used by the standby to connect.
    pub usename: String,
    /// The standby's `application_name` (Patroni sets it to the member name).
    pub application_name: String,
    /// Client address; `None` for Unix-socket connections.
    pub client_addr: Option<String>,
    /// Walsender state (`streaming`, `catchup`, ...).
    pub state: rampart_core::WalsenderState,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: rampart_core::WalsenderSync,
    /// Priority in `synchronous_standby_names`.
    pub sync_priority: i32,
}

/// Everything the REST API shows or decides on, as last published by the agent.
///
/// The virtual address as this member's host has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipState {
    /// The address.
    pub address: String,
    /// Whether this host has it.
    pub held: bool,
    /// Times it was taken or given up since the agent started.
    pub changes: u64,
}

/// `Default` describes a node that knows nothing yet: not leader, PostgreSQL not running,
/// no DCS view; every health check answers 503 for it.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    /// Cluster name (`scope`).
    pub scope: String,
    /// This member's name.
    pub name: String,
    /// Version reported under `patroni.version` (the Patroni version we are compatible with).
    pub api_version: String,

    /// PostgreSQL state in Patroni's wording: `running`, `stopped`, `starting`, `crashed`,
    /// `creating replica`, `initializing new cluster`, `running custom bootstrap script`,
    /// `restarting`, ...
    pub state: rampart_core::PgState,
    /// `primary`, `replica` or `uninitialized`.
    pub role: rampart_core::Role,
    /// `pg_is_in_recovery()` at the last probe.
    pub in_recovery: bool,
    /// Current timeline (0 when unknown).
    pub timeline: u32,
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub xlog_flush: u64,
    /// Replica: `pg_last_wal_receive_lsn()` (0 when unknown).
    pub xlog_received: u64,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub xlog_replayed: u64,
    /// Replica: `pg_last_xact_replay_timestamp()`, as text.
    pub replayed_timestamp: Option<String>,
    /// Replica: `pg_is_wal_replay_paused()`.
    pub wal_replay_paused: bool,
    /// Replica: replay is paused for insufficient hot-standby settings (see
    /// [`rampart_core::hot_standby::replay_blocked`]): it serves stale data and cannot be
    /// promoted until restarted, so it is no read-only route and no candidate.
    pub replay_blocked: bool,
    /// Replica: `streaming` or `in archive recovery`; `None` on a primary.
    pub replication_state: Option<String>,
    /// `pg_postmaster_start_time()`, as text.
    pub postmaster_start_time: Option<String>,
    /// `server_version_num` (e.g. 160004); 0 when unknown.
    pub server_version: u32,
    /// Connected standbys (on a primary or a cascading replica).
    pub replication: Vec<ReplicationConn>,
    /// Database system identifier (`pg_controldata`), empty when unknown.
    pub database_system_identifier: String,

    /// Effective tags of this member.
    pub tags: Tags,
    /// A changed parameter waits for a restart.
    pub pending_restart: bool,
    /// Which parameters wait: name, running value, value after a restart (Patroni's
    /// `pending_restart_reason`).
    pub pending_restart_reason: Vec<(String, String, String)>,
    /// This member keeps out of leader races for now (its `pre_promote` refused a promotion).
    pub failover_backoff: bool,
    /// `watchdog.mode: required` and the watchdog cannot be used: this member may not lead.
    pub watchdog_failed: bool,
    /// Maintenance mode is on.
    pub paused: bool,
    /// The virtual address (`vip`), when configured.
    pub vip: Option<VipState>,
    /// `failsafe_mode` is on in the dynamic configuration in force (kept through DCS outages).
    pub failsafe_mode: bool,
    /// The DCS `failsafe` key as last read (kept through DCS outages, as Patroni's
    /// `dcs.failsafe`): what `GET /failsafe` shows. `None` while the key is absent or unreadable.
    pub failsafe_topology: Option<rampart_core::failsafe::Topology>,
    /// Failsafe mode is active: the leader runs on its members' promises (the DCS is
    /// unreachable), or, on a replica, a primary's `POST /failsafe` binds this member.
    pub failsafe_active: bool,

    /// The node holds the leader lock until this instant (last successful lock write + ttl);
    /// `None` when it does not hold the lock.
    pub leader_until: Option<Instant>,
    /// Unix time (seconds) of the last successful DCS contact.
    pub dcs_last_seen: Option<u64>,
    /// When the last HA cycle completed; `None` until the first one has. The agent should set it
    /// to its start time at startup so that `/liveness` gives it a full grace period.
    pub last_loop: Option<Instant>,
    /// Leader lease length.
    pub ttl: Duration,
    /// Pause between HA cycles.
    pub loop_wait: Duration,
    /// Default bound for `/readiness` lag, in bytes.
    pub maximum_lag_on_failover: u64,
    /// The leader's WAL position from the DCS `status` key (what replica lag is measured against).
    pub cluster_optime: u64,
    /// The last DCS snapshot; `None` means there is no valid DCS view (not read yet, or the DCS
    /// is currently unreachable).
    pub cluster: Option<Arc<Cluster>>,
    /// Nobody holds the leader lock.
    pub cluster_unlocked: bool,
}

/// `synchronous_mode`, as the HA core reads it.
pub use rampart_core::SyncMode;

/// `synchronous_mode` from the cluster's dynamic config (off without one).
pub fn sync_mode(cluster: &Cluster) -> SyncMode {
    cluster.config.as_ref().map(|c| c.sync_mode()).unwrap_or_default()
}

impl NodeSnapshot {
    /// Whether the node holds the leader lock at `now`.
    pub fn holds_lock(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|until| until > now)
    }

    /// Whether PostgreSQL is in Patroni's `running` state.
    pub fn is_running(&self) -> bool {
        self.state == PgState::Running
    }

    /// Whether this node is a synchronous standby (`synchronous_mode: on`, listed in `sync`).
    /// `false` without a DCS view.
    pub fn is_sync_standby(&self) -> bool {
        self.cluster.as_deref().is_some_and(|c| sync_mode(c) == SyncMode::On && c.listed_in_sync_key(&self.name))
    }

    /// Whether this node is a quorum standby (`synchronous_mode: quorum`, listed in `sync`).
    pub fn is_quorum_standby(&self) -> bool {
        self.cluster.as_deref().is_some_and(|c| sync_mode(c) == SyncMode::Quorum && c.listed_in_sync_key(&self.name))
    }

    /// Replica lag in bytes as Patroni's `?lag=` filter measures it:
    /// `max(leader position from the DCS, received) - replayed`.
    pub fn replay_lag(&self) -> u64 {
        self.cluster_optime.max(self.xlog_received).saturating_sub(self.xlog_replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::model::SyncState;
    use rampart_core::DynamicConfig;

    fn cluster_with(mode: serde_json::Value, csv: &str) -> Cluster {
        let cfg: DynamicConfig = serde_json::from_value(serde_json::json!({ "synchronous_mode": mode })).unwrap();
        Cluster {
            config: Some(cfg),
            leader: Some(rampart_core::model::Leader { name: "p".into(), lease: 1, mod_revision: 1 }),
            sync: Some(SyncState { leader: Some("p".into()), sync_standby: Some(csv.into()), quorum: None }),
            ..Default::default()
        }
    }

    #[test]
    fn sync_mode_spellings() {
        use serde_json::json;
        assert_eq!(sync_mode(&cluster_with(json!(true), "")), SyncMode::On);
        assert_eq!(sync_mode(&cluster_with(json!("on"), "")), SyncMode::On);
        assert_eq!(sync_mode(&cluster_with(json!("Quorum"), "")), SyncMode::Quorum);
        assert_eq!(sync_mode(&cluster_with(json!(false), "")), SyncMode::Off);
        assert_eq!(sync_mode(&Cluster::default()), SyncMode::Off);
    }

    #[test]
    fn lock_is_held_strictly_before_its_deadline() {
        let now = Instant::now();
        let s = NodeSnapshot { leader_until: Some(now), ..Default::default() };
        assert!(!s.holds_lock(now));
        assert!(s.holds_lock(now - Duration::from_millis(1)));
        assert!(!NodeSnapshot::default().holds_lock(now));
    }

    #[test]
    fn replay_lag_uses_the_furthest_known_leader_position() {
        let s = NodeSnapshot { cluster_optime: 100, xlog_received: 150, xlog_replayed: 90, ..Default::default() };
        assert_eq!(s.replay_lag(), 60);
        let s = NodeSnapshot { cluster_optime: 100, xlog_received: 0, xlog_replayed: 120, ..Default::default() };
        assert_eq!(s.replay_lag(), 0);
    }
}
